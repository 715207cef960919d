# Privileges (SECURITY.md, section 1).
#
# 1. A role that was granted nothing tries every function of the extension
#    (found in pg_depend, called with plausible arguments built from its
#    signature), every table, view and sequence of schema enkash (also after
#    being given USAGE on the schema), SET of every enkash.* setting and SHOW
#    of every one: 42501 everywhere (SET of a reload/restart setting: 55P02),
#    SHOW gives the value of harmless settings only, no shown value holds a
#    secret, and the sandbox sees no request.
# 2. The four grant levels of the README, applied from README.md itself (the
#    cluster block once, the database block in two databases): read looks up
#    but cannot move money; operate moves money (synchronously and queued)
#    but cannot use enkash_call, the audit log, keys or settings; admin can;
#    approve reads the queue and approves or rejects, nothing else.
#    Every refusal is 42501 and reaches nothing.
use strict;
use warnings;
use lib $ENV{ENKASH_TAP_LIB};
use EnkashTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = enkash_clean_node('privileges');
is($node->safe_psql('postgres', q{SELECT enkash_get_card_account('CASANDBOX1') ->> 'cardAccountId'}),
	'CASANDBOX1', 'a superuser can call EnKash');

sub api_requests { return sandbox_json('GET', '/__sandbox/requests', 'total'); }

# try_sql as a role: 'ok' or "SQLSTATE | message | detail".
sub try_as
{
	my ($role, $sql, $db) = @_;
	my $q = $sql =~ s/'/''/gr;
	return $node->safe_psql($db // 'postgres', "SET ROLE $role; SELECT try_sql('$q')");
}

sub sqlstate { return $_[0] eq 'ok' ? 'ok' : (split / \| /, $_[0])[0]; }

# The same for statements that cannot run inside a function (ALTER SYSTEM).
sub psql_state
{
	my ($role, $sql) = @_;
	$node->psql('postgres', "SET ROLE $role;\n\\set VERBOSITY verbose\n$sql;", stderr => \my $err);
	return $err =~ /ERROR:\s+([0-9A-Z]{5}):/ ? $1 : 'ok';
}

# --- plausible calls, from the catalog ----------------------------------------
my %text_arg = (
	card_account_id => 'CASANDBOX1', enkash_card_id => 'EKCSANDBOX1',
	unique_reference_number => 'PRIV-REF', idempotency_key => 'PRIV-KEY',
	company_name => 'Acme', plan_master_id => 'PMSANDBOX1', account_title => 'Meals',
	account_type => 'MEAL', email => 'a@example.com', mobile => '9876543210',
	first_name => 'Asha', last_name => 'Rao', delivery_address => '1 MG Road',
	delivery_city => 'Bengaluru', delivery_state => 'KA', delivery_pincode => '560001',
	block_code => 'L', pin_block => '04A1B2C3D4E5F6A7', otp_request_id => 'OTPREQ1',
	otp => '123456', pg_reference_number => 'PRIV-REF', endpoint => 'get_card_account');
my %type_arg = (
	numeric => '10', boolean => 'false', integer => '1', bigint => '1',
	date => 'current_date', 'timestamp with time zone' => 'now()',
	interval => q{'1 second'}, jsonb => q{'{"cardAccountId": "CASANDBOX1"}'::jsonb},
	'text[]' => q{ARRAY['EKCSANDBOX1']});

# name => [call, is_trigger]; every function that belongs to the extension.
my %functions;
for my $row (split /\n/, $node->safe_psql('postgres', q{
	SELECT p.oid::regprocedure, quote_ident(n.nspname) || '.' || quote_ident(p.proname),
	       p.prorettype = 'pg_catalog.trigger'::pg_catalog.regtype,
	       p.pronargs - p.pronargdefaults,
	       coalesce((SELECT string_agg(a.name || ':' || format_type(a.typ, NULL), ',' ORDER BY a.ord)
	                 FROM unnest(coalesce(p.proallargtypes, p.proargtypes::oid[]), p.proargnames,
	                             coalesce(p.proargmodes, array_fill('i'::"char", ARRAY[p.pronargs::int])))
	                      WITH ORDINALITY a(typ, name, mode, ord)
	                 WHERE a.mode IN ('i', 'b', 'v')), '')
	FROM pg_proc p
	JOIN pg_namespace n ON n.oid = p.pronamespace
	JOIN pg_depend d ON d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e'
	JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'enkash'
	ORDER BY 1::text}))
{
	my ($sig, $qualified, $trigger, $required, $args) = split /\|/, $row;
	my @args = grep { length } split /,/, $args;
	my @named;
	for my $a (@args[ 0 .. $required - 1 ])
	{
		my ($name, $type) = split /:/, $a, 2;
		my $v = exists $text_arg{$name} ? "'$text_arg{$name}'"
		  : $type eq 'text' ? 'NULL::text' : $type_arg{$type};
		die "no plausible value for $sig argument $name ($type)" unless defined $v;
		push @named, "$name => $v";
	}
	$functions{$sig} = [ "SELECT $qualified(" . join(', ', @named) . ')', $trigger eq 't' ];
}
cmp_ok(scalar(keys %functions), '>=', 25, scalar(keys %functions) . ' functions belong to the extension');
ok(exists $functions{$_}, "the walk includes $_") for (
	'enkash_load_balance(text,text,numeric,text,text,text,text,text,text,text)',
	'enkash_call(text,jsonb)', 'enkash.transaction_pages(text,text,text,text,numeric,numeric,timestamp with time zone,timestamp with time zone,text[],text[],text)',
	'enkash_load_balance_trigger()');

# Relations of schema enkash (and any other the extension owns).
my @relations = split /\n/, $node->safe_psql('postgres', q{
	SELECT c.oid::regclass::text || ' ' || c.relkind::text FROM pg_class c
	JOIN pg_namespace n ON n.oid = c.relnamespace
	WHERE c.relkind IN ('r', 'v', 'm', 'S', 'p', 'f')
	  AND (n.nspname = 'enkash' OR c.oid IN (SELECT objid FROM pg_depend
	       WHERE classid = 'pg_class'::regclass AND deptype = 'e'
	         AND refobjid = (SELECT oid FROM pg_extension WHERE extname = 'enkash')))
	ORDER BY 1});
cmp_ok(scalar(@relations), '>=', 10, scalar(@relations) . ' relations in schema enkash');

sub relation_statements
{
	my ($rel, $kind) = @_;
	return ("SELECT nextval('$rel')", "SELECT setval('$rel', 1)", "SELECT * FROM $rel")
	  if $kind eq 'S';
	my $col = $node->safe_psql('postgres',
		"SELECT quote_ident(attname) FROM pg_attribute WHERE attrelid = '$rel'::regclass AND attnum = 1");
	my @s = ("SELECT * FROM $rel LIMIT 1", "SELECT count(*) FROM $rel",
		"INSERT INTO $rel DEFAULT VALUES", "UPDATE $rel SET $col = $col",
		"DELETE FROM $rel");
	push @s, "TRUNCATE $rel" if $kind eq 'r';
	push @s, "SELECT * FROM $rel FOR UPDATE" if $kind eq 'r';
	return @s;
}

# The enkash.* settings, as a superuser sees them: name => [context, value].
my %settings = map { my ($n, $c, $v) = split /\|/; ($n => [ $c, $v ]) } split /\n/,
  $node->safe_psql('postgres',
	q{SELECT name, context, setting FROM pg_settings WHERE name LIKE 'enkash.%' ORDER BY name});
# Where requests go and where the secrets are: hidden from everyone but
# superusers (GUC_SUPERUSER_ONLY).  Every other setting is harmless to show.
my %hidden = map { ("enkash.$_" => 1) }
  qw(base_url token_url partner_id credentials_file ca_file database endpoint_paths);
ok(exists $settings{$_}, "$_ exists") for sort keys %hidden;
cmp_ok(scalar(keys %settings), '>=', 24, scalar(keys %settings) . ' enkash.* settings');

my @secrets = ('sandbox-password', 'sandbox-secret-1', 'sandbox-client');
my $tokens = sandbox('GET', '/__sandbox/tokens');
push @secrets, $tokens =~ /"([A-Za-z0-9._~+\/=-]{16,})"/g;
cmp_ok(scalar(@secrets), '>', 3, 'the sandbox issued tokens to look for');

# --- 1. a role that was granted nothing ---------------------------------------
$node->safe_psql('postgres', q{
	CREATE ROLE nobody LOGIN;
	CREATE ROLE schema_only LOGIN;
	GRANT USAGE ON SCHEMA enkash TO schema_only;
	CREATE TABLE pay (run_id text, employee_id text, card_account_id text,
	                  enkash_card_id text, amount numeric);
	ALTER TABLE pay OWNER TO nobody;
});

my $before = api_requests();
for my $sig (sort keys %functions)
{
	my ($call, $trigger) = @{ $functions{$sig} };
	for my $role (qw(nobody schema_only))
	{
		is(sqlstate(try_as($role, $call)), '42501', "$role: $sig refused");
	}
	next unless $trigger;
	is(sqlstate(try_as('nobody', q{CREATE TRIGGER load AFTER INSERT ON pay FOR EACH ROW
		EXECUTE FUNCTION } . ($sig =~ s/\(\)$//r)
		  . q{('card_account_id', 'enkash_card_id', 'amount', 'run_id')})),
		'42501', "nobody: CREATE TRIGGER with $sig refused");
}

for my $r (@relations)
{
	my ($rel, $kind) = split / /, $r;
	for my $stmt (relation_statements($rel, $kind))
	{
		is(sqlstate(try_as('nobody', $stmt)), '42501', "nobody: $stmt");
		# A view that cannot be written at all says so before the rights.
		like(sqlstate(try_as('schema_only', $stmt)),
			$kind eq 'v' && $stmt !~ /^SELECT/ ? qr/^(42501|55000)$/ : qr/^42501$/,
			"schema_only: $stmt");
	}
}

for my $name (sort keys %settings)
{
	my ($context, $value) = @{ $settings{$name} };
	my $literal = $value =~ s/'/''/gr;
	my $want = $context eq 'user' ? 'ok' : $context eq 'superuser' ? '42501' : '55P02';
	is(sqlstate(try_as('nobody', "SET $name = '$literal'")), $want, "nobody: SET $name ($context)");
	is(sqlstate(try_as('nobody', "SELECT set_config('$name', '$literal', false)")), $want,
		"nobody: set_config('$name') ($context)");
	is(psql_state('nobody', "ALTER SYSTEM SET $name = '$literal'"), '42501',
		"nobody: ALTER SYSTEM SET $name");
	is(sqlstate(try_as('nobody', "ALTER ROLE nobody SET $name = '$literal'")),
		$context eq 'user' ? 'ok' : '42501', "nobody: ALTER ROLE nobody SET $name ($context)")
	  if $context ne 'sighup' && $context ne 'postmaster';

	if ($hidden{$name})
	{
		is(sqlstate(try_as('nobody', "SHOW $name")), '42501', "nobody: SHOW $name refused");
		is(sqlstate(try_as('nobody', "SELECT current_setting('$name', true)")), '42501',
			"nobody: current_setting('$name') refused");
	}
	else
	{
		my $shown = $node->safe_psql('postgres', "SET ROLE nobody; SHOW $name");
		is($shown, $node->safe_psql('postgres', "SHOW $name"), "nobody: SHOW $name gives its value");
		unlike($shown, qr/\Q$_\E/, "nobody: $name shows no secret") for @secrets;
	}
}
$node->safe_psql('postgres', 'ALTER ROLE nobody RESET ALL');
# Evil values for the settings that steer traffic, each refused (and unchanged).
for my $stmt ("SET enkash.base_url = 'http://127.0.0.1:9/api/v0/partner/enKashCard'",
	"SET enkash.token_url = 'http://127.0.0.1:9/oauth/token'",
	"SET enkash.credentials_file = '/tmp/mine.conf'", "SET enkash.ca_file = '/tmp/mine.pem'",
	"SET enkash.encrypt = off", "SET enkash.max_amount = 2000000000",
	"SET enkash.endpoint_paths = 'load_balance=/elsewhere'")
{
	is(sqlstate(try_as('nobody', $stmt)), '42501', "nobody: $stmt");
}
my $visible = $node->safe_psql('postgres',
	q{SET ROLE nobody; SELECT string_agg(name || '=' || setting, ' ' ORDER BY name) FROM pg_settings WHERE name LIKE 'enkash.%'});
unlike($visible, qr/\Q$_=/, "nobody: pg_settings does not show $_") for sort keys %hidden;
unlike($visible, qr/\Q$_\E/, 'nobody: pg_settings shows no secret') for @secrets;
is(api_requests(), $before, 'nothing the ungranted roles tried reached the sandbox');

# The same calls as a superuser are not refused (the walk tried real calls).
for my $sig (sort keys %functions)
{
	my ($call, $trigger) = @{ $functions{$sig} };
	isnt(sqlstate($node->safe_psql('postgres', 'SELECT try_sql($q$' . $call . '$q$)')), '42501',
		"superuser: $sig not refused");
}
cmp_ok(api_requests(), '>', $before, 'the superuser\'s calls reached the sandbox');

# The superuser's queued calls are finished before anything is counted again.
$node->poll_query_until('postgres',
	q{SELECT count(*) = 0 FROM enkash.requests WHERE state NOT IN ('succeeded', 'failed', 'dead')})
  or die 'queued calls did not finish';
# The walk blocked and replaced cards: start again from the seed state.
sandbox('POST', '/__sandbox/reset', '{}');

# --- 2. the README's four grant levels ------------------------------------------
my $readme = slurp_file("$ENV{ENKASH_TAP_LIB}/../../README.md");
my ($section) = $readme =~ /^### Privileges\n(.*?)^## /ms;
my @blocks = $section =~ /```sql\n(.*?)```/gs;
is(scalar(@blocks), 2, 'the README has a cluster block and a database block');
my ($cluster_sql, $database_sql) = @blocks;
$node->safe_psql('postgres', $cluster_sql);
$node->safe_psql('postgres', $database_sql);
# A second database with the extension: only the database block again.
$node->safe_psql('postgres', 'CREATE DATABASE second');
$node->safe_psql('second', 'CREATE EXTENSION enkash');
install_try_sql($node, 'second');
$node->safe_psql('second', $database_sql);
is($node->psql('second', $cluster_sql), 3, 'the cluster block is once per cluster (fails again)');

$node->safe_psql('postgres', q{
	CREATE ROLE reader LOGIN IN ROLE enkash_read;
	CREATE ROLE operator LOGIN IN ROLE enkash_operate;
	CREATE ROLE administrator LOGIN IN ROLE enkash_admin;
	CREATE ROLE checker LOGIN IN ROLE enkash_approve;
	CREATE TABLE payroll (run_id text, employee_id text, card_account_id text,
	                      enkash_card_id text, allowance numeric);
	ALTER TABLE payroll OWNER TO operator;
});

# The lowest level allowed to call each function; not listed: nobody but
# superusers (internal helpers).
my %level = (
	(map { ($_ => 'read') } qw(enkash_get_card_account enkash_get_card enkash_get_card_controls
		  enkash_get_transaction enkash_transactions enkash_endpoints)),
	(map { ($_ => 'operate') } qw(enkash_load_balance enkash_create_card_account
		  enkash_create_prepaid_card enkash_create_gift_card enkash_request_card_replacement
		  enkash_order_physical_card enkash_block_card enkash_set_card_controls
		  enkash_generate_card_otp enkash_set_card_pin enkash_view_card_details
		  enkash_load_balance_async enkash_load_balance_trigger enkash_wait enkash_reconcile)),
	(map { ($_ => 'admin') } qw(enkash_call enkash_check enkash_enqueue enkash_retry enkash_sync_transactions
		  enkash_token_calls enkash_token_status enkash_reset_credentials enkash_reconcile_store
		  enkash_reconciliation_resolve enkash_release enkash_confirm_live enkash_is_live
		  enkash_token_health)),
	(map { ($_ => 'approve') } qw(enkash_approve enkash_reject)));
my %rank = (read => 1, operate => 2, admin => 3, superuser => 4);
my %role_of = (read => 'reader', operate => 'operator', admin => 'administrator',
	approve => 'checker');

# Whether a level has what another needs: approve is read and its own
# decisions, apart from operate and admin.
sub may
{
	my ($lvl, $need) = @_;
	return $lvl eq 'approve' if $need eq 'approve';
	return $need eq 'read' if $lvl eq 'approve';
	return $rank{$need} <= $rank{$lvl};
}

# Relations: the lowest level that may SELECT; nobody but superusers writes.
my %rel_level = ('enkash.transactions' => 'read', 'enkash.money_movements' => 'operate',
	'enkash.queue' => 'operate');
# ... and a level outside that chain that may read them too
my %rel_also = ('enkash.queue' => 'approve', 'enkash.requests' => 'approve');
# Relations a level may also write: the spending limits, by administrators
# (INSERT DEFAULT VALUES is then refused by a NOT NULL, 23502).
my %rel_writer = ('enkash.limits' => 'admin');

$before = api_requests();
for my $lvl (qw(read operate admin approve))
{
	my $role = $role_of{$lvl};
	for my $sig (sort keys %functions)
	{
		my ($name) = $sig =~ /^([\w.]+)\(/;
		my $need = $level{$name} // 'superuser';
		next if may($lvl, $need);
		is(sqlstate(try_as($role, $functions{$sig}[0])), '42501', "$lvl: $sig refused");
	}
	for my $r (@relations)
	{
		my ($rel, $kind) = split / /, $r;
		my $need = $kind eq 'S' ? 'superuser' : $rel_level{$rel} // 'admin';
		for my $stmt (relation_statements($rel, $kind))
		{
			my $reading = $stmt =~ /^SELECT (\*|count)/ && $stmt !~ /FOR UPDATE/;
			my $may_read = may($lvl, $need) || ($rel_also{$rel} && may($lvl, $rel_also{$rel}));
			my $want = $reading && $may_read ? qr/^ok$/
			  : $kind eq 'v' && !$reading ? qr/^(42501|55000)$/ : qr/^42501$/;
			$want = qr/^(ok|23502)$/
			  if $rel_writer{$rel} && may($lvl, $rel_writer{$rel}) && $stmt !~ /^TRUNCATE/;
			$want = qr/^ok$/
			  if $rel eq 'enkash.limits_id_seq' && may($lvl, 'admin') && $stmt =~ /nextval/;
			like(sqlstate(try_as($role, $stmt)), $want, "$lvl: $stmt");
		}
	}
	for my $s ('enkash.max_amount', 'enkash.max_response_kb', 'enkash.paging_fields')
	{
		my $v = $settings{$s}[1];
		is(sqlstate(try_as($role, "SET $s = '$v'")), $lvl eq 'admin' ? 'ok' : '42501', "$lvl: SET $s");
	}
	for my $s ('enkash.base_url', 'enkash.token_url', 'enkash.credentials_file', 'enkash.ca_file',
		'enkash.encrypt', 'enkash.partner_id', 'enkash.endpoint_paths')
	{
		is(sqlstate(try_as($role, "SET $s = '$settings{$s}[1]'")), '42501', "$lvl: SET $s");
		is(sqlstate(try_as($role, "SHOW $s")), '42501', "$lvl: SHOW $s") if $hidden{$s};
	}
}
is(sqlstate(try_as('reader', q{CREATE TRIGGER load AFTER INSERT ON payroll FOR EACH ROW
	EXECUTE FUNCTION enkash_load_balance_trigger('card_account_id', 'enkash_card_id', 'allowance', 'run_id')})),
	'42501', 'read: cannot attach the payroll trigger');
is(sqlstate(try_as('reader', q{SELECT enkash_get_card_account('CASANDBOX1')}, 'second')), 'ok',
	'read: a look-up works in the second database');
is(sqlstate(try_as('reader', q{SELECT enkash_load_balance('CASANDBOX1', 'EKCSANDBOX1', 1, 'PRIV-R2')}, 'second')),
	'42501', 'read: cannot move money in the second database');
is(api_requests(), $before + 1, 'no refused call reached the sandbox (one look-up did)');

# What each level may do, done.
is(try_as('reader', q{SELECT enkash_get_card_account('CASANDBOX1') ->> 'cardAccountId'}), 'ok',
	'read: enkash_get_card_account works');
is($node->safe_psql('postgres', q{SET ROLE reader; SELECT count(*) >= 0 FROM enkash_transactions('CASANDBOX1')}),
	't', 'read: enkash_transactions works');
is($node->safe_psql('postgres', q{SET ROLE operator;
	SELECT enkash_load_balance('CASANDBOX1', 'EKCSANDBOX1', 11.50, 'PRIV-OP-1') IS NOT NULL}),
	't', 'operate: enkash_load_balance works');
is(sandbox_json('GET', '/__sandbox/ledger?reference=PRIV-OP-1', 'count'), 1, 'operate: credited once');
my $queued = $node->safe_psql('postgres', q{SET ROLE operator;
	SELECT enkash_load_balance_async('CASANDBOX1', 'EKCSANDBOX1', 2, 'PRIV-OP-2')});
is($node->safe_psql('postgres', qq{SET ROLE operator; SELECT enkash_wait($queued, '30 s') ->> 'state'}),
	'succeeded', 'operate: a queued load (enkash_load_balance_async) is sent after COMMIT');
is($node->safe_psql('postgres', q{SET ROLE operator;
	CREATE TRIGGER load AFTER INSERT ON payroll FOR EACH ROW
	    EXECUTE FUNCTION enkash_load_balance_trigger('card_account_id', 'enkash_card_id', 'allowance', 'run_id', 'employee_id');
	INSERT INTO payroll VALUES ('PRIV', 'E1', 'CASANDBOX1', 'EKCSANDBOX2', 3);
	SELECT state FROM enkash.money_movements WHERE reference_number = 'PRIV-OP-1'}),
	'succeeded', 'operate: attaches the payroll trigger and reads enkash.money_movements');
is($node->safe_psql('postgres', q{SELECT enkash_wait(max(id), '30 s') ->> 'state' FROM enkash.requests}),
	'succeeded', 'operate: the payroll row was loaded');
is(sandbox_json('GET', '/__sandbox/ledger?reference=6:public/7:payroll/4:PRIV/2:E1', 'count'), 1, 'operate: the trigger credited once');
is($node->safe_psql('postgres', q{SELECT created_by FROM enkash.requests WHERE idempotency_key = 'PRIV-OP-2'}),
	'operator', 'operate: a queued row records who queued it');
is($node->safe_psql('postgres', q{SET ROLE administrator;
	SELECT enkash_call('get_card_account', '{"companyId": "CEKSANDBOX1", "cardAccountId": "CASANDBOX1"}') ->> 'cardAccountId'}),
	'CASANDBOX1', 'admin: enkash_call works');
is($node->safe_psql('postgres', q{SET ROLE administrator;
	SELECT count(*) > 0 FROM enkash.audit_log WHERE role = 'operator'}),
	't', 'admin: reads the audit log');
is(try_as('administrator', q{SET enkash.max_amount = 5}), 'ok', 'admin: sets enkash.max_amount');
is($node->safe_psql('postgres', q{SET ROLE operator;
	SELECT verdict FROM enkash_reconcile('CASANDBOX1', now() - interval '1 day', now(), '0')
	WHERE reference = 'PRIV-OP-1'}),
	'ok', 'operate: enkash_reconcile works');
is($node->safe_psql('postgres', q{SET ROLE administrator;
	SELECT enkash_reconcile_store('CASANDBOX1', now() - interval '1 day', now()) >= 0
	   AND (SELECT count(*) >= 0 FROM enkash.reconciliation)}),
	't', 'admin: enkash_reconcile_store works and enkash.reconciliation is readable');
is($node->safe_psql('postgres', q{SET ROLE administrator;
	SELECT (SELECT count(*) >= 1 FROM enkash.reconciliation_runs WHERE card_account_id = 'CASANDBOX1')
	       || ' ' || (SELECT last_reconciliation_at IS NOT NULL FROM enkash.health)}),
	'true true', 'admin: reads the run in enkash.reconciliation_runs and the last reconciliation in enkash.health');

done_testing();
