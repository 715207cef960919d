# Hostile answers and hostile input.
#
# 1. Every broken-answer mode of the sandbox (POST /__sandbox/faults
#    {"response": {"mode": M}}), for a look-up and for a load: a clear error
#    with a SQLSTATE of its own (never XX000), the backend lives on (same pid,
#    next call works), the load's key is 'unknown' (EnKash applied it before
#    answering badly) with an audit row saying so, and retrying the key after
#    the grace period asks EnKash instead of crediting twice.
# 2. Hostile values from SQL (quotes, backslashes, control characters,
#    JSON-looking text, huge strings, non-UTF-8 bytes): refused, or sent
#    escaped exactly, checked by decrypting the body the sandbox received with
#    the openssl command; never a changed amount or an extra field.
# 3. Answers in plain JSON (enkash.encrypt = off, a sandbox with
#    --no-encrypt): the same reading path and SQLSTATEs without the wrapper.
use strict;
use warnings;
use lib $ENV{ENKASH_TAP_LIB};
use EnkashTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use JSON::PP;
use Digest::SHA qw(sha256_hex);

my $sandbox_url = $ENV{SANDBOX_URL};
my $credentials = $ENV{ENKASH_CREDENTIALS};

# UTF8 (the default initdb here would be SQL_ASCII, which a real
# installation is not), so that Unicode can be sent.
my $node = enkash_node('hostile', utf8 => 1, conf => "enkash.unknown_grace_ms = 200\n");
install_try_sql($node);

sandbox('POST', '/__sandbox/reset', '{}');
sandbox('POST', '/__sandbox/faults', '{"clear": true}');
# A token first: the faults below are for API answers.
is($node->safe_psql('postgres', q{SELECT enkash_get_card_account('CASANDBOX1') ->> 'cardAccountId'}),
	'CASANDBOX1', 'a first call works');
my $started = $node->safe_psql('postgres', 'SELECT pg_postmaster_start_time()');

# Leave no fault armed on the shared sandbox, whatever happens here.
END { local $?; eval { sandbox('POST', '/__sandbox/faults', '{"clear": true}') }; }

sub arm
{
	my ($mode) = @_;
	my $r = sandbox('POST', '/__sandbox/faults', qq({"response": {"mode": "$mode", "count": 1}}));
	die "could not arm $mode: $r" unless $r =~ /"ok"\s*:\s*true/;
}

sub ledger_count
{
	return sandbox_json('GET', "/__sandbox/ledger?reference=$_[0]", 'count');
}

sub api_requests { return sandbox_json('GET', '/__sandbox/requests', 'total'); }

# --- 1. hostile answers -------------------------------------------------------
my %expect_state = (    # each mode its own SQLSTATE (see SECURITY.md, section 5)
	malformed   => 'NK005',    # not JSON
	truncated   => 'NK051',    # ends early
	wrong_key   => 'NK053',    # does not decrypt
	bad_base64  => 'NK052',    # not Base64
	bad_padding => 'NK053',    # does not decrypt (a wrong key looks the same)
	deep_json   => 'NK054',    # nested too deeply
	no_code     => 'NK055',    # no status code
	huge        => 'NK056',    # larger than enkash.max_response_kb
	drip        => 'NK006',    # no answer in time
	redirect    => 'NK057',    # not followed; EnKash may have acted
	huge_number => 'NK005',);  # valid JSON, but a number numeric cannot hold
my %message_re = (
	malformed   => qr/could not be read.*\| The body is not JSON \(HTTP status 200\)/,
	truncated   => qr/is incomplete.*\| The body ends inside the encrypted wrapper/,
	wrong_key   => qr/could not be decrypted.*\| The body does not decrypt/,
	bad_base64  => qr/could not be decrypted.*\| The encrypted body is not valid Base64/,
	bad_padding => qr/could not be decrypted.*\| The body does not decrypt/,
	deep_json   => qr/could not be read.*\| The body nests arrays or objects more than 64 levels deep/,
	no_code     => qr/has no status code.*\| The answer has neither "code" nor "response_code"/,
	huge        => qr/larger than enkash\.max_response_kb/,
	drip        => qr/no answer from EnKash.*may have been processed.*\| No answer within enkash\.timeout_ms/,
	redirect    => qr/HTTP status 302/,
	huge_number => qr/could not be read.*\| The body holds a number too large to store/,);
my $run = $$ . '-' . time();
my %seen;

for my $mode (qw(malformed truncated wrong_key bad_base64 bad_padding deep_json no_code huge drip redirect
	huge_number))
{
	my $set = $mode eq 'drip' ? 'SET enkash.timeout_ms = 1000;' : '';

	# A look-up.
	arm($mode);
	my $out = $node->safe_psql('postgres', <<"SQL");
$set
SELECT pg_backend_pid();
SELECT try_sql(\$q\$SELECT enkash_get_card_account('CASANDBOX1')\$q\$);
SELECT pg_backend_pid();
SELECT enkash_get_card_account('CASANDBOX1') ->> 'cardAccountId';
SQL
	my ($pid1, $err, $pid2, $next) = split /\n/, $out, 4;
	my ($state) = split / \| /, $err;
	$seen{$mode} = $state;
	note("$mode, look-up: $err");
	isnt($state, 'XX000', "$mode: not XX000");
	is($state, $expect_state{$mode}, "$mode: look-up refused with $expect_state{$mode}");
	like($err, $message_re{$mode}, "$mode: the message says what went wrong");
	unlike($err, qr/[^\x20-\x7e]/, "$mode: the message holds no raw bytes of the answer");
	ok(length($err) < 1000, "$mode: the message is short");
	is($pid2, $pid1, "$mode: the backend survived");
	is($next, 'CASANDBOX1', "$mode: the next call in the same session works");

	# A load: EnKash applied it, then answered badly.
	my $ref = "HOSTILE-$mode-$run";
	arm($mode);
	$err = $node->safe_psql('postgres',
		"$set SELECT try_sql(\$q\$SELECT enkash_load_balance('CASANDBOX1', 'EKCSANDBOX1', 2.50, '$ref')\$q\$)");
	note("$mode, load: $err");
	($state) = split / \| /, $err;
	is($state, $expect_state{$mode}, "$mode: load refused with $expect_state{$mode}");
	is(ledger_count($ref), 1, "$mode: (the sandbox credited the load before answering)");
	{
		is($node->safe_psql('postgres',
			"SELECT state FROM enkash.idempotency_keys WHERE key = '$ref'"),
			'unknown', "$mode: the key is unknown");
		is($node->safe_psql('postgres',
			"SELECT outcome || ',' || sqlstate FROM enkash.audit_log WHERE idempotency_key = '$ref' "
			  . "AND endpoint = 'load_balance' ORDER BY id DESC LIMIT 1"),
			"unknown,$expect_state{$mode}", "$mode: the audit row says unknown, with the SQLSTATE");
	}

	# The same key again, after enkash.unknown_grace_ms: EnKash is asked, nothing re-sent.
	select(undef, undef, undef, 0.4);
	my ($ret, $stdout, $stderr) = $node->psql('postgres',
		"SELECT enkash_load_balance('CASANDBOX1', 'EKCSANDBOX1', 2.50, '$ref') IS NOT NULL");
	is($stdout, 't', "$mode: retrying the key succeeds");
	is(ledger_count($ref), 1, "$mode: ... without a second credit");
	is($node->safe_psql('postgres', "SELECT state FROM enkash.idempotency_keys WHERE key = '$ref'"),
		'succeeded', "$mode: ... and the key is succeeded");
}
note(join(', ', map { "$_ => $seen{$_}" } sort keys %seen));

# Not broken: the wrapper with every '/' of its Base64 written '\/' (valid JSON,
# as some encoders write it) is not the plain byte-scanned form, and is read
# through the JSON parser.
arm('escaped_slash');
is($node->safe_psql('postgres', q{SELECT enkash_get_card_account('CASANDBOX1') ->> 'cardAccountId'}),
	'CASANDBOX1', 'an encrypted answer whose Base64 is spelled with \/ escapes is read');

# The maximum is a setting: raised, the 20 MiB answer is accepted.
arm('huge');
is($node->safe_psql('postgres',
	q{SET enkash.max_response_kb = 40960; SELECT length(enkash_get_card_account('CASANDBOX1') #>> '{}')}),
	20 * 1024 * 1024, 'with enkash.max_response_kb raised, the 20 MiB answer is read');
# Lowered, an ordinary answer is too large; and an ordinary role cannot change it.
like($node->safe_psql('postgres',
	q{SET enkash.max_response_kb = 1; SELECT try_sql($q$SELECT enkash_transactions('CASANDBOX1')$q$)}),
	qr/^(ok|NK056 \| .*larger than enkash\.max_response_kb \(1 kB\))/, 'a lowered maximum applies');
$node->safe_psql('postgres', 'CREATE ROLE hostile_nobody LOGIN');
my ($ret, $stdout, $stderr) = $node->psql('postgres',
	"SET ROLE hostile_nobody; SET enkash.max_response_kb = 1048576;");
like($stderr, qr/permission denied to set parameter "enkash\.max_response_kb"/,
	'an ordinary role cannot raise enkash.max_response_kb');

is($node->safe_psql('postgres', 'SELECT pg_postmaster_start_time()'), $started,
	'the server never restarted (no backend crashed)');
unlike(slurp_file($node->logfile), qr/terminated by signal|server process .* was terminated/,
	'no server process was terminated by a signal');

# --- 2. hostile input ---------------------------------------------------------
sandbox('POST', '/__sandbox/faults', '{"clear": true}');

my $secret;
{
	my $c = slurp_file($credentials);
	($secret) = $c =~ /^\s*encryption_secret\s*=\s*(\S+)/m;
	($secret) = $c =~ /^\s*client_secret\s*=\s*(\S+)/m unless defined $secret;
}
my $key_hex = substr(sha256_hex($secret), 0, 32);

# The body of the newest load the sandbox received, decrypted by openssl.
sub last_load_plaintext
{
	my $last = decode_json(sandbox('GET', '/__sandbox/last-request?path=/api/v0/partner/enKashCard/balance'));
	my $b64 = decode_json($last->{body})->{request};
	my ($plain, $err);
	IPC::Run::run([ 'openssl', 'enc', '-d', '-aes-128-ecb', '-K', $key_hex, '-base64', '-A' ],
		'<', \$b64, '>', \$plain, '2>', \$err)
	  or die "openssl enc -d failed: $err";
	return $plain;
}

# Top-level member names of a flat JSON object, in order, duplicates kept.
sub top_level_keys
{
	my ($json) = @_;
	my @keys;
	my $str = qr/"(?:[^"\\]|\\.)*"/s;
	return undef unless $json =~ /\G\s*\{/gc;
	while ($json =~ /\G\s*($str)\s*:\s*(?:$str|[-+0-9.eE]+|true|false|null)\s*([,}])/gc)
	{
		push @keys, JSON::PP->new->allow_nonref->decode($1);
		last if $2 eq '}';
	}
	return undef unless $json =~ /\G\s*\z/gc;
	return \@keys;
}

my @load_keys = sort qw(amount cardAccountId companyId createdBy description enKashCardId
  transactionCode transactionType type uniqueReferenceNumber);

my $n = 0;
my @cases = (
	# [ name, SQL expression for description, expected text (undef: any refusal is fine) ]
	[ 'quotes and backslashes', q{'quote " backslash \ slash / {"amount":1e9}'},
		'quote " backslash \ slash / {"amount":1e9}' ],
	[ 'a JSON object as text', q{'{"amount":1e9}'}, '{"amount":1e9}' ],
	[ 'a field injection', q{'","amount":1e9,"extra":"x'}, '","amount":1e9,"extra":"x' ],
	[ 'an injection closing the object', q~'"}, "amount": 1e9, "x": {"'~, '"}, "amount": 1e9, "x": {"' ],
	[ 'escape sequences as text', q{'\u0000 \n \" \\\\ %s %n $1'}, '\u0000 \n \" \\\\ %s %n $1' ],
	[ 'every control character', q{(SELECT string_agg(chr(i), '') FROM generate_series(1, 31) i) || chr(127)},
		join('', map { chr } 1 .. 31, 127) ],
	[ 'Unicode, line separators, BOM', q{'₹ é ' || chr(8232) || chr(8233) || ' 😀 ' || chr(65279)},
		"\x{20b9} \x{e9} \x{2028}\x{2029} \x{1f600} \x{feff}" ],
	[ '1000 characters', q{repeat('"', 999) || '\\'}, ('"' x 999) . '\\' ],
);

for my $case (@cases)
{
	my ($name, $sql, $expected) = @$case;
	my $ref = 'INPUT-' . ++$n . "-$run";
	my $r = $node->safe_psql('postgres',
		"SELECT try_sql(format(\$q\$SELECT enkash_load_balance('CASANDBOX1', 'EKCSANDBOX1', 10.50, %L, "
		  . "description => %L, remarks => %L)\$q\$, '$ref', $sql, $sql))");
	is($r, 'ok', "$name: accepted");
	my $plain = last_load_plaintext();
	my $keys = top_level_keys($plain);
	ok($keys, "$name: the body is one flat JSON object") or diag($plain);
	is_deeply([ sort @{ $keys // [] } ], [ sort(@load_keys, 'remarks') ],
		"$name: exactly the load's fields, each once");
	my $body = JSON::PP->new->utf8->decode($plain);
	is($body->{description}, $expected, "$name: description arrives exactly");
	is($body->{remarks}, $expected, "$name: remarks arrive exactly");
	like($plain, qr/"amount":10\.5[,}]/, "$name: the amount is 10.5, as a JSON number");
	is($body->{uniqueReferenceNumber}, $ref, "$name: the reference is ours");
	is(sandbox('GET', "/__sandbox/ledger?reference=$ref") =~ /"amount":"([^"]*)"/ ? $1 : '',
		'10.50', "$name: EnKash credited 10.50");
}

# Refused before sending: too long, or not a valid id; nothing reaches EnKash.
my @refused = (
	[ 'description of 1001 characters', q{description => repeat('x', 1001)}, '22001' ],
	[ 'description of 1 MB of quotes and backslashes', q{description => repeat('"\\', 524288)}, '22001' ],
	[ 'remarks of 1 MB', q{remarks => repeat('{"amount":1e9}', 74899)}, '22001' ],
	[ 'created_by of 1001 characters', q{created_by => repeat('x', 1001)}, '22001' ],
);
for my $case (@refused)
{
	my ($name, $args, $want) = @$case;
	my $ref = 'INPUT-' . ++$n . "-$run";
	my $before = api_requests();
	my $r = $node->safe_psql('postgres',
		"SELECT try_sql(\$q\$SELECT enkash_load_balance('CASANDBOX1', 'EKCSANDBOX1', 10.50, '$ref', $args)\$q\$)");
	like($r, qr/^\Q$want\E \| /, "$name: refused with $want");
	is(api_requests(), $before, "$name: nothing sent");
	is(ledger_count($ref), 0, "$name: nothing credited");
}

# Hostile ids and reference numbers: refused, or sent exactly.
for my $case (
	[ 'reference number', q~'CASANDBOX1', 'EKCSANDBOX1', 10.50, 'REF-"},"amount":1e9,"x":{"'~ ],
	[ 'reference number of 1 MB', q{'CASANDBOX1', 'EKCSANDBOX1', 10.50, repeat('R', 1048576)} ],
	[ 'reference number with a newline', qq{'CASANDBOX1', 'EKCSANDBOX1', 10.50, E'REF\\n1'} ],
	[ 'card id', q{'CASANDBOX1', 'EKCSANDBOX1","amount":1e9,"x":"', 10.50, 'REF-CARD-INJECT'} ],
	[ 'card account id', q{'CASANDBOX1\\"', 'EKCSANDBOX1', 10.50, 'REF-ACCOUNT-INJECT'} ],)
{
	my ($name, $args) = @$case;
	my $before = api_requests();
	my $r = $node->safe_psql('postgres',
		"SELECT try_sql(\$q\$SELECT enkash_load_balance($args)\$q\$)");
	note("hostile $name: " . substr($r, 0, 200));
	if ($r eq 'ok')
	{
		my $plain = last_load_plaintext();
		is_deeply([ sort @{ top_level_keys($plain) // [] } ], \@load_keys,
			"hostile $name: sent with exactly the load's fields");
		like($plain, qr/"amount":10\.5[,}]/, "hostile $name: amount unchanged");
	}
	else
	{
		like($r, qr/^(22023|22001) \| /, "hostile $name: refused as invalid input");
		is(api_requests(), $before, "hostile $name: nothing sent");
	}
}

# Amounts that are not amounts.
for my $amount ('1e9', '10.001', 'NaN', '-1', '0', 'Infinity')
{
	my $before = api_requests();
	my $r = $node->safe_psql('postgres',
		"SELECT try_sql(\$q\$SELECT enkash_load_balance('CASANDBOX1', 'EKCSANDBOX1', '$amount'::numeric, 'AMT-$amount-$run')\$q\$)");
	like($r, qr/^(22023|22003) \| /, "amount $amount: refused");
	is(api_requests(), $before, "amount $amount: nothing sent");
}

# Invalid UTF-8 cannot reach a UTF8 database's text...
like($node->safe_psql('postgres',
	q{SELECT try_sql($q$SELECT enkash_load_balance('CASANDBOX1', 'EKCSANDBOX1', 1, 'UTF8-1', description => convert_from('\xff'::bytea, 'UTF8'))$q$)}),
	qr/^22021 \| /, 'invalid UTF-8 is refused by PostgreSQL in a UTF8 database (22021)');
# ... but a SQL_ASCII database holds any bytes: they must not go out as invalid JSON text.
$node->safe_psql('postgres',
	"CREATE DATABASE ascii ENCODING 'SQL_ASCII' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0");
$node->safe_psql('ascii', 'CREATE EXTENSION enkash');
$node->safe_psql('ascii', <<'SQL');
CREATE FUNCTION try_sql(q text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE st text; msg text;
BEGIN
    EXECUTE q;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT;
    RETURN st || ' | ' || msg;
END $$;
SQL
my $before = api_requests();
my $r = $node->safe_psql('ascii',
	q{SELECT try_sql($q$SELECT enkash_block_card('CASANDBOX1', 'EKCSANDBOX2', 'L', reason => E'bad \\xff\\xfe bytes')$q$)});
note("non-UTF-8 reason from a SQL_ASCII database: $r");
# Refused before sending: JSON on the wire must be UTF-8 (src/fields.c to_utf8).
like($r, qr/^22021 \| reason is not valid UTF-8/, 'non-UTF-8 text from a SQL_ASCII database: 22021');
is(api_requests(), $before, '... and nothing is sent');

is($node->safe_psql('postgres', 'SELECT pg_postmaster_start_time()'), $started,
	'the server never restarted');

$node->stop;

# --- 3. answers in plain JSON (enkash.encrypt = off) --------------------------
# The same reading path without the wrapper: a sandbox answering plain JSON.
my $plain_url = start_private_sandbox('--no-encrypt');
my $plain = enkash_node('plain', sandbox_url => $plain_url, conf => "enkash.encrypt = off\n");
install_try_sql($plain);
is($plain->safe_psql('postgres', q{SELECT enkash_get_card_account('CASANDBOX1') ->> 'cardAccountId'}),
	'CASANDBOX1', 'encryption off: a look-up works');
is($plain->safe_psql('postgres',
	q{SELECT try_sql($q$SELECT enkash_load_balance('CASANDBOX1', 'EKCSANDBOX1', 3, 'PLAIN-1')$q$)}),
	'ok', 'encryption off: a load works');
is(sandbox_json($plain_url, 'GET', '/__sandbox/ledger?reference=PLAIN-1', 'count'), 1,
	'encryption off: ... credited once');
like($plain->safe_psql('postgres',
	q{SELECT try_sql($q$SELECT enkash_get_card_account('CANOSUCHACCOUNT')$q$)}),
	qr/^NK001 \| EnKash declined/, 'encryption off: a decline is NK001');
for my $case ([ malformed => 'NK005' ], [ truncated => 'NK051' ], [ deep_json => 'NK054' ],
	[ no_code => 'NK055' ], [ huge_number => 'NK005' ])
{
	my ($mode, $want) = @$case;
	sandbox($plain_url, 'POST', '/__sandbox/faults', qq({"response": {"mode": "$mode", "count": 1}}));
	my $err = $plain->safe_psql('postgres',
		q{SELECT try_sql($q$SELECT enkash_get_card_account('CASANDBOX1')$q$)});
	note("encryption off, $mode: $err");
	like($err, qr/^\Q$want\E \| /, "encryption off, $mode: $want");
}
$plain->stop;
done_testing();
