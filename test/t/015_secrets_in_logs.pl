# Secrets under loud logging (SECURITY.md, section 2).
#
# A server logging everything (log_statement = all, log_min_messages = debug1,
# log_min_error_statement = debug1, log_error_verbosity = verbose, parameters
# logged whole on error) calls every function of the extension successfully,
# the secret-bearing ones included (card details with PAN and CVV, a PIN set,
# OTP-gated calls, token refreshes), then forces an error on every function:
# bad input, a secret of the wrong shape, EnKash declining, failing, dropping
# the connection and answering unreadably (also with a card number inside the
# unreadable answer), a refused password.  Afterwards the server log,
# pg_stat_activity, pg_settings and every table of every schema hold none of:
# the password, the client id and secret, a wrong password tried, any bearer
# or refresh token the sandbox issued, the PAN, expiry, CVV, PIN block or OTPs.
#
# The secrets are made inside the server (the OTP fetched from the sandbox by
# a server-side helper, the PIN block derived by md5), so they are never in
# the SQL text that log_statement writes: what enkash itself logs and stores
# is what is tested (the README says to keep secrets out of SQL text).
use strict;
use warnings;
use lib $ENV{ENKASH_TAP_LIB};
use EnkashTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Digest::MD5 qw(md5_hex);

my $sandbox_url = $ENV{SANDBOX_URL};
my $node = enkash_node('secrets_in_logs', utf8 => 1, conf => <<'CONF');
log_statement = all
log_min_messages = debug1
log_min_error_statement = debug1
log_error_verbosity = verbose
log_parameter_max_length = -1
log_parameter_max_length_on_error = -1
log_connections = on
log_disconnections = on
enkash.unknown_grace_ms = 200
enkash.approval_threshold = 1000
CONF
install_try_sql($node);
sandbox('POST', '/__sandbox/reset', '{}');
sandbox('POST', '/__sandbox/faults', '{"clear": true}');
END { local $?; eval { sandbox('POST', '/__sandbox/faults', '{"clear": true}') }; }

sub arm
{
	my $r = sandbox('POST', '/__sandbox/faults', $_[0]);
	die "could not arm $_[0]: $r" unless $r =~ /"ok"\s*:\s*true/;
}

# Server-side helpers: the OTP the sandbox sent "by SMS", and a PIN block.
my $pin = uc substr(md5_hex('enkash-015-pin'), 0, 16);
$node->safe_psql('postgres', <<"SQL");
CREATE SCHEMA t;
CREATE FUNCTION t.sh(cmd text) RETURNS text LANGUAGE plpgsql AS \$\$
DECLARE result text;
BEGIN
    CREATE TEMP TABLE IF NOT EXISTS sh_output (n serial, line text);
    TRUNCATE sh_output;
    EXECUTE format(\$c\$COPY sh_output (line) FROM PROGRAM %L
                      WITH (FORMAT csv, DELIMITER E'\\x01', QUOTE E'\\x02')\$c\$, cmd);
    SELECT string_agg(line, E'\\n' ORDER BY n) INTO result FROM sh_output;
    TRUNCATE sh_output;
    RETURN result;
END \$\$;
CREATE FUNCTION t.otp(otp_request_id text) RETURNS text LANGUAGE sql AS \$\$
    SELECT (t.sh('curl -sS --max-time 60 $sandbox_url/__sandbox/otp?otpRequestId=' || otp_request_id)::jsonb)->>'otp'
\$\$;
CREATE FUNCTION t.pin() RETURNS text LANGUAGE sql AS \$\$
    SELECT upper(substr(md5('enkash-015-pin'), 1, 16))
\$\$;
-- OTP requests made, so that the test can ask the sandbox for every OTP.
CREATE TABLE t.otp_requests (id text);
CREATE FUNCTION t.new_otp(card text) RETURNS text LANGUAGE sql AS \$\$
    INSERT INTO t.otp_requests SELECT enkash_generate_card_otp('CASANDBOX1', card) #>> '{}' RETURNING id
\$\$;
SQL
is($node->safe_psql('postgres', 'SELECT t.pin()'), $pin, 'the PIN block is derived in the server');

sub sql { return $node->safe_psql('postgres', $_[0]); }

# --- every function, successfully ---------------------------------------------
my %done;
sub ok_call
{
	my ($fn, $sql, $want) = @_;
	my $got = sql($sql);
	if (defined $want) { like($got, $want, "$fn works") }
	else { ok(length $got, "$fn works") }
	$done{$fn} = 1;
	return $got;
}

ok_call('enkash_get_card_account', q{SELECT enkash_get_card_account('CASANDBOX1') ->> 'cardAccountId'}, qr/^CASANDBOX1$/);
ok_call('enkash_get_card', q{SELECT enkash_get_card('CASANDBOX1', 'EKCSANDBOX1') -> 'data' -> 0 ->> 'enKashCardId'}, qr/^EKCSANDBOX1$/);
ok_call('enkash_get_card_controls', q{SELECT enkash_get_card_controls('CASANDBOX1', 'EKCSANDBOX1') IS NOT NULL}, qr/^t$/);
ok_call('enkash_load_balance', q{SELECT enkash_load_balance('CASANDBOX1', 'EKCSANDBOX1', 10, 'LOG-1') IS NOT NULL}, qr/^t$/);
ok_call('enkash_get_transaction', q{SELECT enkash_get_transaction('CASANDBOX1', 'LOG-1', 'EKCSANDBOX1') IS NOT NULL}, qr/^t$/);
ok_call('enkash_transactions', q{SELECT count(*) FROM enkash_transactions('CASANDBOX1')}, qr/^[1-9]/);
ok_call('enkash.transaction_pages', q{SELECT count(*) FROM enkash.transaction_pages('CASANDBOX1', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)}, qr/^[1-9]/);
ok_call('enkash_sync_transactions', q{SELECT enkash_sync_transactions('CASANDBOX1')}, qr/^[1-9]/);
# The sender's claim; zero rows, so that nothing is taken from the sender.
ok_call('enkash.claim_requests', q{SELECT count(*) FROM enkash.claim_requests(0)}, qr/^0$/);
ok_call('enkash.answer_time', q{SELECT enkash.answer_time('Jan 23, 2025 4:38:36 PM') = '2025-01-23 11:08:36+00'}, qr/^t$/);
my $id = ok_call('enkash_load_balance_async', q{SELECT enkash_load_balance_async('CASANDBOX1', 'EKCSANDBOX1', 5, 'LOG-2')}, qr/^\d+$/);
ok_call('enkash_wait', qq{SELECT enkash_wait($id) ->> 'state'}, qr/^succeeded$/);
$id = ok_call('enkash_enqueue', q{SELECT enkash_enqueue('get_card_account', '{"companyId": "CEKSANDBOX1", "cardAccountId": "CASANDBOX1"}')}, qr/^\d+$/);
is(sql(qq{SELECT enkash_wait($id) ->> 'state'}), 'succeeded', 'the enqueued call was sent');
ok_call('enkash_retry', qq{SELECT enkash_retry($id) IS NULL}, qr/^t$/);
ok_call('enkash_create_card_account', q{SELECT enkash_create_card_account('Acme', 'PMSANDBOX1', 'Meals', 'MEAL', 'fin@acme.in', '9876543210', 'LOG-CA') ->> 'cardAccountId'}, qr/^CA/);
my $card = ok_call('enkash_create_prepaid_card', q{SELECT enkash_create_prepaid_card('CASANDBOX1', 'Ravi', 'Kumar', 'ravi@acme.in', '9876500001', 'LOG-PC', load_amount => 100) ->> 'enKashCardId'}, qr/^EKC/);
ok_call('enkash_create_gift_card', q{SELECT enkash_create_gift_card('CAGIFT1', 'Lata', 'Shah', 'lata@acme.in', '9876500002', 750, 'LOG-GC') IS NOT NULL}, qr/^t$/);
ok_call('enkash_order_physical_card', q{SELECT enkash_order_physical_card('CASANDBOX1', 'EKCSANDBOX1', '12 MG Road', 'Bengaluru', 'Karnataka', '560001', 'LOG-PO') #>> '{}'}, qr/^PCO/);
ok_call('enkash_set_card_controls', q{SELECT enkash_set_card_controls('CASANDBOX1', ARRAY['EKCSANDBOX1'], atm_allowed => true) IS NOT NULL}, qr/^t$/);
ok_call('enkash_generate_card_otp', q{SELECT t.new_otp('EKCSANDBOX1')}, qr/^OTPREQ/);
# OTP-gated: block with an OTP, then unblock.
ok_call('enkash_block_card', qq{SELECT enkash_block_card('CASANDBOX1', '$card', 'L', reason => 'Lost',
	otp_required => true, otp_medium => 'MOBILE', otp_request_id => o, otp => t.otp(o)) IS NOT NULL
	FROM t.new_otp('$card') o}, qr/^t$/);
ok_call('enkash_request_card_replacement', qq{SELECT enkash_request_card_replacement('$card', 'LOG-RC', card_account_id => 'CASANDBOX1') #>> '{}'}, qr/^EKC/);
ok_call('enkash_set_card_pin', q{SELECT enkash_set_card_pin('CASANDBOX1', 'EKCSANDBOX1', t.pin()) IS NOT NULL}, qr/^t$/);
my $details = ok_call('enkash_view_card_details', q{SELECT v->>'cardNumber', v->>'cvv', v->>'expiry'
	FROM t.new_otp('EKCSANDBOX2') o, enkash_view_card_details('CASANDBOX1', 'EKCSANDBOX2', o, t.otp(o)) v},
	qr/^\d{16}\|\d{3}\|/);
my ($pan, $cvv, $expiry) = split /\|/, $details;
ok_call('enkash_call', q{SELECT enkash_call('get_card_account', '{"companyId": "CEKSANDBOX1", "cardAccountId": "CASANDBOX1"}') ->> 'cardAccountId'}, qr/^CASANDBOX1$/);
ok_call('enkash_endpoints', q{SELECT count(*) FROM enkash_endpoints()}, qr/^1\d$/);
ok_call('enkash_token_status', q{SELECT valid FROM enkash_token_status()}, qr/^t$/);
ok_call('enkash_check', q{SELECT string_agg(status, ',') FROM enkash_check('CASANDBOX1')}, qr/^(ok|warning)(,(ok|warning))+$/);
ok_call('enkash_token_calls', q{SELECT enkash_token_calls()}, qr/^\d+$/);
ok_call('enkash_reset_credentials', q{SELECT enkash_reset_credentials()}, qr/^f$/);
# Token refresh (refresh grant), then a refused refresh (password grant again).
sandbox('POST', '/__sandbox/expire-tokens', '{}');
is(sql(q{SELECT enkash_get_card('CASANDBOX1') IS NOT NULL}), 't', 'a call after the token expired refreshes it');
sandbox('POST', '/__sandbox/expire-tokens', '{"refresh": true}');
is(sql(q{SELECT enkash_get_card('CASANDBOX1') IS NOT NULL}), 't', 'a call after the refresh token died gets a new one');
cmp_ok(sandbox_json('GET', '/__sandbox/requests', 'refresh_token'), '>', 0, 'a refresh grant was used');
# The payroll trigger.
sql(q{CREATE TABLE payroll (run_id text, employee_id text, card_account_id text, enkash_card_id text, allowance numeric);
	CREATE TRIGGER load AFTER INSERT ON payroll FOR EACH ROW
	    EXECUTE FUNCTION enkash_load_balance_trigger('card_account_id', 'enkash_card_id', 'allowance', 'run_id', 'employee_id');
	INSERT INTO payroll VALUES ('LOG', 'E1', 'CASANDBOX1', 'EKCSANDBOX1', 3)});
is(sql(q{SELECT enkash_wait(max(id)) ->> 'state' FROM enkash.requests WHERE idempotency_key = '6:public/7:payroll/3:LOG/2:E1'}),
	'succeeded', 'enkash_load_balance_trigger works');
$done{enkash_load_balance_trigger} = 1;
# Controls: a load held by a limit and released; loads over the approval
# threshold queued by a clerk, one approved, one rejected (each state change
# a person must see is announced by enkash.notify_state).
sql(q{CREATE ROLE clerk SUPERUSER});
sql(q{INSERT INTO enkash.limits (scope, target, period, max_count) VALUES ('card', 'EKCSANDBOX2', '1 day', 0)});
my $held = sql(q{SELECT enkash_load_balance_async('CASANDBOX1', 'EKCSANDBOX2', 4, 'LOG-HELD')});
is(sql(qq{SELECT state FROM enkash.requests WHERE id = $held}), 'held', 'a load over a limit is held');
$done{'enkash.notify_state'} = 1;
sql(q{DELETE FROM enkash.limits});
ok_call('enkash_release', qq{SELECT enkash_release($held)}, qr/^t$/);
is(sql(qq{SELECT enkash_wait($held) ->> 'state'}), 'succeeded', 'the released load was sent');
my $approved = sql(q{SET ROLE clerk; SELECT enkash_load_balance_async('CASANDBOX1', 'EKCSANDBOX1', 1500, 'LOG-APPROVED')});
my $rejected = sql(q{SET ROLE clerk; SELECT enkash_load_balance_async('CASANDBOX1', 'EKCSANDBOX1', 1500, 'LOG-REJECTED')});
ok_call('enkash_approve', qq{SELECT enkash_approve($approved)}, qr/^t$/);
is(sql(qq{SELECT enkash_wait($approved) ->> 'state'}), 'succeeded', 'the approved load was sent');
ok_call('enkash_reject', qq{SELECT enkash_reject($rejected, 'not in this run')}, qr/^t$/);
# Reconciliation, health, retention.
ok_call('enkash_reconcile', q{SELECT count(*) FROM enkash_reconcile('CASANDBOX1', now() - interval '1 day', now() + interval '1 day', '0')}, qr/^[1-9]/);
ok_call('enkash_reconcile_store', q{SELECT enkash_reconcile_store('CASANDBOX1', now() - interval '1 day', now() + interval '1 day', '0')}, qr/^\d+$/);
ok_call('enkash_reconciliation_resolve', q{SELECT coalesce(enkash_reconciliation_resolve(min(id), 'checked'), true) FROM enkash.reconciliation}, qr/^t$/);
ok_call('enkash_token_health', q{SELECT valid FROM enkash_token_health()}, qr/^t$/);
ok_call('enkash_is_live', q{SELECT enkash_is_live()}, qr/^t$/);
ok_call('enkash_confirm_live', q{SELECT enkash_confirm_live()}, qr/^f$/);
my $archive = tmp_file('audit-015.csv');
ok_call('enkash_archive_audit', qq{SELECT rows FROM enkash_archive_audit(now() - interval '10 years', '$archive')}, qr/^0$/);
# The audit log's guards have one job, refusing a change: done below.
$done{$_} = 1 for qw(enkash.audit_log_append_only enkash.audit_log_archived_only);

my @functions = split /\n/, sql(q{SELECT CASE WHEN n.nspname = 'public' THEN '' ELSE n.nspname || '.' END || p.proname
	FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
	JOIN pg_depend d ON d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e'
	JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'enkash' ORDER BY 1});
ok($done{$_}, "$_ was called successfully") for @functions;

# --- an error on every function -----------------------------------------------
my $wrong_password = 'wrong-pw-' . md5_hex("015$$" . time);
my $wrong_file = tmp_file('wrong-password.conf');
{
	my $old = umask 077;
	open my $fh, '>', $wrong_file or die "$wrong_file: $!";
	print $fh "client_id = sandbox-client\nclient_secret = sandbox-secret-1\n"
	  . "username = 9999999999\npassword = $wrong_password\n";
	close $fh;
	umask $old;
}

my %failed;
sub err_call
{
	my ($fn, $sql, $want, $label) = @_;
	# A top-level statement, so that the server logs the error and the
	# statement (try_sql would catch it before it is logged).
	my ($rc, $out, $r) = $node->psql('postgres', "\\set VERBOSITY verbose\n$sql;");
	my ($state) = $r =~ /ERROR:\s+([0-9A-Z]{5}):/;
	$state //= 'ok';
	like($state, $want, ($label // $fn) . " fails with $state");
	isnt($state, 'XX000', "$fn: not an internal error");
	$failed{$fn} = 1;
	return $r;
}

my @errors;
# Bad input, and secrets EnKash refuses (it alone says what a PIN block or
# an OTP must look like): neither quoted in the log.
push @errors, err_call('enkash_set_card_pin', q{SELECT enkash_set_card_pin('CASANDBOX1', 'EKCNOSUCH', t.pin())}, qr/^NK001$/, 'a PIN for an unknown card');
push @errors, err_call('enkash_view_card_details', q{SELECT enkash_view_card_details('CASANDBOX1', 'EKCSANDBOX2', o, 'X' || t.otp(o)) FROM t.new_otp('EKCSANDBOX2') o}, qr/^NK001$/, 'an OTP that is not digits');
push @errors, err_call('enkash_block_card', q{SELECT enkash_block_card('CASANDBOX1', 'EKCSANDBOX2', 'L', otp_required => true, otp_request_id => o, otp => t.otp(o) || '1234') FROM t.new_otp('EKCSANDBOX2') o}, qr/^NK001$/, 'an OTP too long');
push @errors, err_call('enkash_enqueue', q{SELECT enkash_enqueue('set_card_pin', jsonb_build_object('companyId', 'CEKSANDBOX1', 'cardAccountId', 'CASANDBOX1', 'enKashCardId', 'EKCSANDBOX1', 'pinBlock', t.pin()))}, qr/^0A000$/, 'queueing a PIN');
push @errors, err_call('enkash_load_balance', q{SELECT enkash_load_balance('CASANDBOX1', 'EKCSANDBOX1', -1, 'LOG-BAD')}, qr/^22023$/);
push @errors, err_call('enkash_load_balance_async', q{SELECT enkash_load_balance_async('CASANDBOX1', 'EKCSANDBOX1', 10.001, 'LOG-BAD')}, qr/^22023$/);
push @errors, err_call('enkash_create_card_account', q{SELECT enkash_create_card_account('Acme', 'PMSANDBOX1', 'Cards', 'CREDIT', 'a@b.in', '9876543210', 'LOG-BAD')}, qr/^22023$/);
push @errors, err_call('enkash_create_prepaid_card', q{SELECT enkash_create_prepaid_card('CASANDBOX1', 'Ravi', 'Kumar', 'ravi@acme.in', '98765', 'LOG-BAD')}, qr/^22023$/);
push @errors, err_call('enkash_create_gift_card', q{SELECT enkash_create_gift_card('CAGIFT1', 'Ravi', 'Kumar', 'ravi@acme.in', '9876500001', NULL, 'LOG-BAD')}, qr/^22004$/);
push @errors, err_call('enkash_order_physical_card', q{SELECT enkash_order_physical_card('CASANDBOX1', 'EKCSANDBOX1', '12 MG Road', 'Bengaluru', 'Karnataka', NULL, 'LOG-BAD')}, qr/^22004$/);
push @errors, err_call('enkash_set_card_controls', q{SELECT enkash_set_card_controls('CASANDBOX1', ARRAY[]::text[])}, qr/^2202E$/);
push @errors, err_call('enkash_generate_card_otp', q{SELECT enkash_generate_card_otp('CASANDBOX1', 'EKCSANDBOX1', 'NO_SUCH_ACTION')}, qr/^22023$/);
push @errors, err_call('enkash_request_card_replacement', q{SELECT enkash_request_card_replacement('EKCSANDBOX1', 'LOG-BAD', otp_medium => 'PIGEON')}, qr/^22023$/);
push @errors, err_call('enkash_get_card_account', q{SELECT enkash_get_card_account('CA"X')}, qr/^22023$/);
push @errors, err_call('enkash_get_card', q{SELECT enkash_get_card('CASANDBOX1', 'EKC"X')}, qr/^22023$/);
push @errors, err_call('enkash_get_card_controls', q{SELECT enkash_get_card_controls('CASANDBOX1', NULL)}, qr/^22004$/);
push @errors, err_call('enkash_get_transaction', q{SELECT enkash_get_transaction('CASANDBOX1', NULL, 'EKCSANDBOX1')}, qr/^22004$/);
push @errors, err_call('enkash_transactions', q{SELECT * FROM enkash_transactions('CASANDBOX1', amount_from => 10, amount_to => 1)}, qr/^22023$/);
push @errors, err_call('enkash.transaction_pages', q{SELECT * FROM enkash.transaction_pages(NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)}, qr/^22004$/);
push @errors, err_call('enkash_sync_transactions', q{SELECT enkash_sync_transactions('CA"X')}, qr/^22023$/);
push @errors, err_call('enkash.claim_requests', q{SELECT count(*) FROM enkash.claim_requests(-1)}, qr/^2201W$/);
push @errors, err_call('enkash.answer_time', q{SELECT enkash.answer_time('not a time')}, qr/^22007$/);
push @errors, err_call('enkash_call', q{SELECT enkash_call('no_such_endpoint', '{}')}, qr/^42704$/);
push @errors, err_call('enkash_wait', q{SELECT enkash_wait(-1)}, qr/^P0002$/);
push @errors, err_call('enkash_load_balance_trigger', q{SELECT enkash_load_balance_trigger()}, qr/^0A000$/);
push @errors, err_call('enkash.audit_log_append_only',
	q{UPDATE enkash.audit_log SET outcome = outcome WHERE id = (SELECT max(id) FROM enkash.audit_log)}, qr/^42501$/);
push @errors, err_call('enkash.audit_log_archived_only',
	q{DELETE FROM enkash.audit_log WHERE id = (SELECT max(id) FROM enkash.audit_log)}, qr/^42501$/);
push @errors, err_call('enkash_approve', q{SELECT enkash_approve(-1)}, qr/^P0002$/);
push @errors, err_call('enkash_reject', q{SELECT enkash_reject(-1, 'no such load')}, qr/^P0002$/);
push @errors, err_call('enkash_release', q{SELECT enkash_release(-1)}, qr/^P0002$/);
push @errors, err_call('enkash_reconcile', q{SELECT * FROM enkash_reconcile('CASANDBOX1', now(), now() - interval '1 day')}, qr/^22023$/);
push @errors, err_call('enkash_reconcile_store', q{SELECT enkash_reconcile_store(NULL, now() - interval '1 day', now())}, qr/^22004$/);
push @errors, err_call('enkash_archive_audit', q{SELECT enkash_archive_audit(now(), 'relative.csv')}, qr/^22023$/);
# Nothing to fail on: no arguments to get wrong (enkash_retry and
# enkash_reconciliation_resolve of any id answer NULL when there is nothing
# to do; enkash_confirm_live refuses only on a standby; enkash.notify_state
# only announces).
$failed{$_} = 'cannot fail'
  for qw(enkash_check enkash_endpoints enkash_token_status enkash_token_calls enkash_retry enkash_reset_credentials
  enkash_token_health enkash_is_live enkash_confirm_live enkash_reconciliation_resolve enkash.notify_state);

# EnKash declining, failing, dropping, answering unreadably, with secrets in flight.
my $otp_request;
arm('{"business_error": {"count": 1, "message": "PIN could not be set"}}');
push @errors, err_call('enkash_set_card_pin', q{SELECT enkash_set_card_pin('CASANDBOX1', 'EKCSANDBOX1', t.pin())}, qr/^NK001$/, 'EnKash declines a PIN');
arm('{"response": {"mode": "malformed", "count": 1}}');
push @errors, err_call('enkash_set_card_pin', q{SELECT enkash_set_card_pin('CASANDBOX1', 'EKCSANDBOX1', t.pin())}, qr/^NK005$/, 'an unreadable answer to a PIN');
push @errors, err_call('enkash_view_card_details', q{SELECT enkash_view_card_details('CASANDBOX1', 'EKCSANDBOX2', o, '000000') FROM t.new_otp('EKCSANDBOX2') o}, qr/^NK\d{3}$/, 'a wrong OTP');
my %mode_sqlstate = (no_code => 'NK055', truncated => 'NK051', wrong_key => 'NK053');
for my $mode (qw(no_code truncated wrong_key))
{
	# The OTP request is made first: the fault is for the card details call.
	$otp_request = sql(q{SELECT t.new_otp('EKCSANDBOX2')});
	arm(qq({"response": {"mode": "$mode", "count": 1}}));
	push @errors, err_call('enkash_view_card_details',
		qq{SELECT enkash_view_card_details('CASANDBOX1', 'EKCSANDBOX2', '$otp_request', t.otp('$otp_request'))},
		qr/^$mode_sqlstate{$mode}$/, "card details answered with $mode (the card number inside)");
}
$otp_request = sql(q{SELECT t.new_otp('EKCSANDBOX2')});
arm('{"fail": {"status": 500, "count": 1}}');
push @errors, err_call('enkash_block_card', qq{SELECT enkash_block_card('CASANDBOX1', 'EKCSANDBOX2', 'L', otp_required => true, otp_request_id => '$otp_request', otp => t.otp('$otp_request'))},
	qr/^NK004$/, 'EnKash fails an OTP-gated block');
arm('{"drop": {"count": 1, "after_apply": true}}');
push @errors, err_call('enkash_load_balance', q{SELECT enkash_load_balance('CASANDBOX1', 'EKCSANDBOX1', 10, 'LOG-DROP')}, qr/^NK006$/, 'a dropped load');
$otp_request = sql(q{SELECT t.new_otp('EKCSANDBOX2')});
arm('{"response": {"mode": "no_code", "count": 1}}');
push @errors, err_call('enkash_call', qq{SELECT enkash_call('view_card_details', jsonb_build_object('companyId', 'CEKSANDBOX1', 'cardAccountId', 'CASANDBOX1', 'enKashCardId', 'EKCSANDBOX2', 'otpRequestId', '$otp_request', 'otp', t.otp('$otp_request')))},
	qr/^NK055$/, 'a raw card details call answered without a code');
arm('{"business_error": {"count": 1}}');
push @errors, err_call('enkash_call', q{SELECT enkash_call('set_card_pin', jsonb_build_object('companyId', 'CEKSANDBOX1', 'cardAccountId', 'CASANDBOX1', 'enKashCardId', 'EKCSANDBOX1', 'pinBlock', t.pin()))},
	qr/^NK001$/, 'a raw PIN call declined');
# A refused password (the shared token must be renewed for it to be used).
sandbox('POST', '/__sandbox/expire-tokens', '{"refresh": true}');
push @errors, err_call('enkash_get_card_account', "SET enkash.credentials_file = '$wrong_file'; SELECT enkash_get_card_account('CASANDBOX1')",
	qr/^(NK002|08001)$/, 'a wrong password');
sandbox('POST', '/__sandbox/faults', '{"clear": true}');
is(sql(q{SELECT enkash_get_card_account('CASANDBOX1') ->> 'cardAccountId'}), 'CASANDBOX1', 'the right password works again');
ok($failed{$_}, "$_ was made to fail" . ($failed{$_} eq 'cannot fail' ? ' (it cannot)' : '')) for @functions;

# --- the search -----------------------------------------------------------------
my $tokens = sandbox('GET', '/__sandbox/tokens');
my @tokens = $tokens =~ /"([^"]{16,})"/g;
cmp_ok(scalar(@tokens), '>=', 6, scalar(@tokens) . ' access and refresh tokens were issued');
# Every OTP the sandbox issued during the test, fetched from it one by one.
my @otps;
for my $otp_request (split /\n/, sql(q{SELECT DISTINCT id FROM t.otp_requests WHERE id IS NOT NULL}))
{
	my $otp = sandbox('GET', "/__sandbox/otp?otpRequestId=$otp_request");
	push @otps, $1 if $otp =~ /"otp"\s*:\s*"(\d+)"/;
}
cmp_ok(scalar(@otps), '>=', 5, scalar(@otps) . ' OTPs were issued and used');

my %secrets = (
	'password' => qr/\Qsandbox-password\E/,
	'wrong password' => qr/\Q$wrong_password\E/,
	'client secret' => qr/\Qsandbox-secret-1\E/,
	'PIN block' => qr/\Q$pin\E/i,
	'card number' => qr/\Q$pan\E/,
	'card number (spaced)' => qr/\Q@{[ join ' ', unpack '(A4)*', $pan ]}\E/,
	'CVV' => qr/cvv\W{1,6}\Q$cvv\E\b/i,
	'expiry' => qr/expiry\W{1,6}\Q$expiry\E/i,
	(map { ("token $_" => qr/\Q$tokens[$_]\E/) } 0 .. $#tokens),
	(map { ("OTP $_" => qr/(?<![\d.])\Q$otps[$_]\E(?!\d)/) } 0 .. $#otps));

like($pan, qr/^\d{16}$/, 'the card number is known to the test');
like($cvv, qr/^\d{3}$/, 'the CVV is known to the test');
# Each pattern finds its secret as a leak would show it (JSON, or quoted in text).
my $leak = qq({"cardNumber": "$pan", "cvv": "$cvv", "expiry": "$expiry", "pinBlock": "$pin", "otp": "$otps[0]"} )
  . join(' ', @tokens) . " password=sandbox-password secret 'sandbox-secret-1' $wrong_password "
  . join(' ', map { "otp $_," } @otps) . join(' ', unpack '(A4)*', $pan);
like($leak, $secrets{$_}, "the pattern for $_ finds it") for sort keys %secrets;

# The server log (written by every backend and worker, at debug1).
my $log = slurp_file($node->logfile);
cmp_ok(length($log), '>', 100_000, 'the server log is loud (' . length($log) . ' bytes)');
like($log, qr/enkash_view_card_details/, 'statements are logged');
like($log, qr/ERROR:  NK05[0-9]: [^\n]*\n(?:[^\n]*\n){0,5}[^\n]*STATEMENT:  SELECT enkash_view_card_details/, 'enkash errors are logged with their statement');
like($log, qr/ERROR:  22023: /, 'input errors are logged');
# The clear text of each planted secret value is found when present: the
# search itself works (the PIN block is in the log as the md5 seed, not the value).
like($log, qr/enkash-015-pin/, 'the search finds what is in the log');

# pg_stat_activity, pg_settings (as a superuser sees them: all of them).
my $activity = sql(q{SELECT string_agg(coalesce(query, ''), E'\n') FROM pg_stat_activity WHERE pid <> pg_backend_pid()});
my $settings = sql(q{SELECT string_agg(name || '=' || coalesce(setting, '') || ' ' || coalesce(reset_val, '') || ' ' || coalesce(boot_val, ''), E'\n') FROM pg_settings});
like($settings, qr/enkash\.credentials_file=/, 'pg_settings is read whole');

# Every table of every schema (the catalogs included), as text.
sql(q{CREATE FUNCTION t.tables_holding(needles text[]) RETURNS SETOF text LANGUAGE plpgsql AS $$
DECLARE rel regclass; needle text; hits bigint;
BEGIN
    FOR rel IN SELECT c.oid::regclass FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
               WHERE c.relkind IN ('r', 'm', 'p') AND n.nspname NOT LIKE 'pg_temp%' AND n.nspname NOT LIKE 'pg_toast%'
    LOOP
        FOREACH needle IN ARRAY needles LOOP
            EXECUTE format('SELECT count(*) FROM %s x WHERE x::text ~* %L', rel, needle) INTO hits;
            IF hits > 0 THEN RETURN NEXT rel::text || ' holds ' || needle; END IF;
        END LOOP;
    END LOOP;
END $$});
my $table_count = sql(q{SELECT count(*) FROM pg_class WHERE relkind IN ('r', 'm', 'p')});
cmp_ok($table_count, '>', 60, "$table_count tables are searched");

# Regular expressions the server understands (ARE), one per secret.
my %pg_needle = (
	'password' => 'sandbox-password', 'wrong password' => $wrong_password,
	'client secret' => 'sandbox-secret-1', 'PIN block' => $pin, 'card number' => $pan,
	'CVV' => "cvv\\W{1,6}$cvv\\M", 'expiry' => "expiry\\W{1,6}$expiry",
	(map { ("token $_" => quotemeta_are($tokens[$_])) } 0 .. $#tokens),
	(map { ("OTP $_" => "\"$otps[$_]\"") } 0 .. $#otps));
sub quotemeta_are { return $_[0] =~ s/([^A-Za-z0-9_])/\\$1/gr; }
my $array = 'ARRAY[' . join(', ', map { my $v = $_ =~ s/'/''/gr; "'$v'" } values %pg_needle) . ']';
my $in_tables = sql("SELECT string_agg(h, E'\\n') FROM t.tables_holding($array) h");
# The search works: the card number, written into a table, is found.
sql("CREATE TABLE t.canary AS SELECT '$pan'::text AS pan");
like(sql("SELECT string_agg(h, ',') FROM t.tables_holding(ARRAY['$pan']) h"), qr/t\.canary/, 'the table search finds a planted card number');
sql('DROP TABLE t.canary');

for my $name (sort keys %secrets)
{
	my $re = $secrets{$name};
	my @where;
	push @where, 'server log' if $log =~ $re;
	push @where, 'pg_stat_activity' if $activity =~ $re;
	push @where, 'pg_settings' if $settings =~ $re;
	is(join(', ', @where), '', "no $name in the server log, pg_stat_activity or pg_settings")
	  or diag(join "\n", grep { $_ =~ $re } split /\n/, $log);
}
is($in_tables, '', 'no secret in any table');

# Errors quote no secret either (they were returned to the client).
my $all_errors = join "\n", @errors;
for my $name (sort keys %secrets)
{
	unlike($all_errors, $secrets{$name}, "no $name in an error message");
}

done_testing();
