# Hostile roles: no grant level gains anything through the extension.
#
# The README's three levels (enkash_read, enkash_operate, enkash_admin) and a
# role with PUBLIC's rights only each log in and plant, in pg_temp and in a
# schema of their own put first on their search_path: an enum type with
# casts to json, jsonb and text whose functions try to become superuser, join
# enkash_admin and pg_write_server_files, create a superuser, and write,
# change or empty the extension's tables; functions and operators named
# like those the extension's SQL uses; a table with the payroll trigger, a
# column of the planted type, a column default and a trigger of their own.
# Then they call every SECURITY DEFINER path: the payroll trigger, the queued
# load, enkash_transactions, enkash_sync_transactions, enkash_wait,
# enkash_retry, enkash_reconcile, enkash_reconcile_store and
# enkash_reconciliation_resolve (with arguments of the planted type).  Nothing is gained: no
# role is superuser, no membership is added, no role is created, and the
# extension's tables hold only what the functions write.
#
# Also: the payroll trigger needs the inserting role's own rights (42501 with
# a hint otherwise); its reference numbers name the schema and table and do
# not collide however the columns split; one that is too long is refused;
# the audit log and the outbox record the calling role, not the extension's
# owner; a function of the operator's in a WHERE on enkash.money_movements
# sees none of the rows the view filters out.
use strict;
use warnings;
use lib $ENV{ENKASH_TAP_LIB};
use EnkashTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = enkash_clean_node('hostile_roles');
sub sq { return $node->safe_psql('postgres', $_[0]); }

my $readme = slurp_file("$ENV{ENKASH_TAP_LIB}/../../README.md");
my ($section) = $readme =~ /^### Privileges\n(.*?)^## /ms;
my ($cluster_sql, $database_sql) = $section =~ /```sql\n(.*?)```/gs;
sq($cluster_sql);
sq($database_sql);
sq(q{
	CREATE ROLE nobody LOGIN;
	CREATE ROLE reader LOGIN IN ROLE enkash_read;
	CREATE ROLE operator LOGIN IN ROLE enkash_operate;
	CREATE ROLE administrator LOGIN IN ROLE enkash_admin;
	GRANT CREATE ON SCHEMA public TO PUBLIC;         -- as before PostgreSQL 15
	GRANT CREATE ON DATABASE postgres TO PUBLIC;
});
my @roles = qw(nobody reader operator administrator);

# Something for the hostile code to damage: a synced transaction, a load.
sq(q{SELECT enkash_load_balance('CASANDBOX1', 'EKCSANDBOX1', 1, 'HOSTILE-BASE')});
sq(q{SELECT enkash_sync_transactions('CASANDBOX1', now() - interval '10 years')});
my $dead = sq(q{INSERT INTO enkash.requests (endpoint, body, state)
	VALUES ('get_card', '{}', 'failed') RETURNING id});

sub memberships
{
	return sq(qq{SELECT coalesce(string_agg(m.roleid::regrole::text, ',' ORDER BY 1), '')
		FROM pg_auth_members m WHERE m.member = '$_[0]'::regrole});
}
my %member_before = map { ($_ => memberships($_)) } @roles;
sub tables_state
{
	return sq(q{SELECT (SELECT count(*) > 0 FROM enkash.transactions) || ' '
		|| (SELECT count(*) FROM enkash.idempotency_keys WHERE state = 'failed') || ' '
		|| (SELECT min(id) FROM enkash.audit_log) || ' '
		|| (SELECT count(*) FROM enkash.requests WHERE idempotency_key LIKE 'HOSTILE-PLANTED%'
		       OR body ? 'hostile')});
}
my $tables_before = tables_state();
like($tables_before, qr/^true 0 1 0$/, 'the tables hold a transaction, keys and audit rows');

# What every planted object runs: each attempt on its own, errors swallowed,
# so that whatever is allowed happens and whatever is not is not noticed.
sub plant
{
	my ($role) = @_;
	my $attempts = join ",\n", map { "'$_'" } map { s/'/''/gr } (
		"ALTER ROLE $role SUPERUSER",
		"GRANT enkash_admin TO $role",
		"GRANT pg_write_server_files TO $role",
		"CREATE ROLE ${role}_made SUPERUSER LOGIN",
		"INSERT INTO enkash.requests (endpoint, body, idempotency_key) VALUES ('load_balance', '{\"hostile\": 1}', 'HOSTILE-PLANTED-$role')",
		"UPDATE enkash.idempotency_keys SET state = 'failed'",
		"UPDATE enkash.requests SET body = '{\"hostile\": 1}'",
		"DELETE FROM enkash.audit_log",
		"DELETE FROM enkash.transactions");
	return <<"SQL";
SET search_path = pg_temp, mine, public;
CREATE SCHEMA IF NOT EXISTS mine;
CREATE FUNCTION mine.hostile() RETURNS boolean LANGUAGE plpgsql AS \$h\$
DECLARE s text;
BEGIN
    FOREACH s IN ARRAY ARRAY[$attempts] LOOP
        BEGIN EXECUTE s; EXCEPTION WHEN OTHERS THEN NULL; END;
    END LOOP;
    RETURN true;
END \$h\$;
CREATE TYPE pg_temp.ev AS ENUM ('CASANDBOX1', 'EKCSANDBOX1');
CREATE FUNCTION pg_temp.ev_json(pg_temp.ev) RETURNS json LANGUAGE sql
    AS \$\$ SELECT CASE WHEN mine.hostile() THEN pg_catalog.to_json(\$1::text) END \$\$;
CREATE FUNCTION pg_temp.ev_jsonb(pg_temp.ev) RETURNS jsonb LANGUAGE sql
    AS \$\$ SELECT CASE WHEN mine.hostile() THEN pg_catalog.to_jsonb(\$1::text) END \$\$;
CREATE FUNCTION pg_temp.ev_text(pg_temp.ev) RETURNS text LANGUAGE sql
    AS \$\$ SELECT CASE WHEN mine.hostile() THEN pg_catalog.textin(pg_catalog.enum_out(\$1)) END \$\$;
CREATE CAST (pg_temp.ev AS json) WITH FUNCTION pg_temp.ev_json(pg_temp.ev);
CREATE CAST (pg_temp.ev AS jsonb) WITH FUNCTION pg_temp.ev_jsonb(pg_temp.ev);
CREATE CAST (pg_temp.ev AS text) WITH FUNCTION pg_temp.ev_text(pg_temp.ev) AS IMPLICIT;
DO \$d\$
DECLARE s text;
BEGIN
    FOREACH s IN ARRAY ARRAY['mine', 'pg_temp'] LOOP
        EXECUTE pg_catalog.format(\$f\$
        CREATE FUNCTION %1\$I.now() RETURNS timestamptz LANGUAGE sql
            AS \$\$ SELECT CASE WHEN mine.hostile() THEN pg_catalog.now() END \$\$;
        CREATE FUNCTION %1\$I.to_jsonb(anyelement) RETURNS jsonb LANGUAGE sql
            AS \$\$ SELECT CASE WHEN mine.hostile() THEN pg_catalog.to_jsonb(\$1) END \$\$;
        CREATE FUNCTION %1\$I.tc(text, text) RETURNS text LANGUAGE sql
            AS \$\$ SELECT CASE WHEN mine.hostile() THEN pg_catalog.textcat(\$1, \$2) END \$\$;
        CREATE OPERATOR %1\$I.|| (LEFTARG = text, RIGHTARG = text, FUNCTION = %1\$I.tc);
        CREATE FUNCTION %1\$I.ft(jsonb, text) RETURNS text LANGUAGE sql
            AS \$\$ SELECT CASE WHEN mine.hostile() THEN pg_catalog.jsonb_object_field_text(\$1, \$2) END \$\$;
        CREATE OPERATOR %1\$I.->> (LEFTARG = jsonb, RIGHTARG = text, FUNCTION = %1\$I.ft);
        CREATE FUNCTION %1\$I.ev_eq_text(pg_temp.ev, text) RETURNS boolean LANGUAGE sql
            AS \$\$ SELECT mine.hostile() AND \$1::text = \$2 \$\$;
        CREATE OPERATOR %1\$I.= (LEFTARG = pg_temp.ev, RIGHTARG = text, FUNCTION = %1\$I.ev_eq_text);
        \$f\$, s);
    END LOOP;
END \$d\$;
CREATE TABLE pay (run_id text, employee_id text, card_account_id pg_temp.ev,
                  enkash_card_id pg_temp.ev, amount numeric,
                  planted boolean DEFAULT mine.hostile());
CREATE FUNCTION mine.own_trigger() RETURNS trigger LANGUAGE plpgsql
    AS \$t\$ BEGIN PERFORM mine.hostile(); RETURN NEW; END \$t\$;
CREATE TRIGGER a_own BEFORE INSERT ON pay FOR EACH ROW EXECUTE FUNCTION mine.own_trigger();
SQL
}

# Each hostile session: plant, then one SECURITY DEFINER path.
my %paths = (
	trigger => q{
		CREATE TRIGGER load AFTER INSERT ON pay FOR EACH ROW
		    EXECUTE FUNCTION public.enkash_load_balance_trigger('card_account_id', 'enkash_card_id',
		                                                        'amount', 'run_id', 'employee_id');
		INSERT INTO pay VALUES ('HOSTILE', '%ROLE%', 'CASANDBOX1', 'EKCSANDBOX1', 1);},
	queued => q{SELECT public.enkash_load_balance_async('CASANDBOX1'::pg_temp.ev,
		'EKCSANDBOX1'::pg_temp.ev, 1, 'HOSTILE-Q-%ROLE%');},
	transactions => q{SELECT count(*) FROM public.enkash_transactions('CASANDBOX1'::pg_temp.ev)
		WHERE card_id = 'EKCSANDBOX1'::pg_temp.ev;},
	sync => q{SELECT public.enkash_sync_transactions('CASANDBOX1'::pg_temp.ev);},
	wait => qq{SELECT public.enkash_wait($dead, '0 s');},
	retry => qq{SELECT public.enkash_retry($dead);},
	reconcile => q{SELECT count(*) FROM public.enkash_reconcile('CASANDBOX1'::pg_temp.ev,
		now() - interval '1 day', now()) WHERE reference = 'HOSTILE-BASE'::pg_temp.ev;},
	reconcile_store => q{SELECT public.enkash_reconcile_store('CASANDBOX1'::pg_temp.ev,
		now() - interval '1 day', now());},
	resolve => q{SELECT public.enkash_reconciliation_resolve(1, 'HOSTILE'::pg_temp.ev);});

for my $role (@roles)
{
	for my $path (sort keys %paths)
	{
		my $sql = plant($role) . ($paths{$path} =~ s/%ROLE%/$role/gr);
		my ($rc, $out, $err) = (0, '', '');
		$node->psql('postgres', $sql, stdout => \$out, stderr => \$err,
			extra_params => [ '-U', $role ]);
		is(sq(qq{SELECT rolsuper::text FROM pg_roles WHERE rolname = '$role'}), 'false',
			"$role, $path: not superuser");
		is(memberships($role), $member_before{$role}, "$role, $path: no membership gained");
		is(sq(qq{SELECT count(*) FROM pg_roles WHERE rolname = '${role}_made'}), '0',
			"$role, $path: no role created");
		is(tables_state(), $tables_before, "$role, $path: the extension's tables are untouched");
		# Undo what a hole would have let through, so the next path starts clean.
		sq(qq{ALTER ROLE $role NOSUPERUSER; DROP ROLE IF EXISTS ${role}_made;
			DROP SCHEMA IF EXISTS mine CASCADE; DROP TABLE IF EXISTS pay});
		for my $gained (qw(enkash_admin pg_write_server_files))
		{
			sq("REVOKE $gained FROM $role") if memberships($role) ne $member_before{$role}
			  && $member_before{$role} !~ /\b$gained\b/;
		}
		$tables_before = tables_state();
	}
}

# The hostile payroll row of a role that may load was loaded, as that role.
$node->poll_query_until('postgres',
	q{SELECT count(*) = 0 FROM enkash.requests WHERE state NOT IN ('succeeded', 'failed', 'dead')})
  or die 'queued loads did not finish';
for my $role (qw(operator administrator))
{
	is(sq(qq{SELECT created_by FROM enkash.requests WHERE body->>'uniqueReferenceNumber' LIKE '%HOSTILE%$role%'
		ORDER BY id LIMIT 1}), $role, "$role: the payroll row was queued as $role");
}

# --- the trigger needs the inserting role's rights ------------------------------
sq(q{
	CREATE TABLE payroll (run_id text, employee_id text, card_account_id text,
	                      enkash_card_id text, allowance numeric);
	CREATE TRIGGER load AFTER INSERT ON payroll FOR EACH ROW
	    EXECUTE FUNCTION enkash_load_balance_trigger('card_account_id', 'enkash_card_id',
	                                                 'allowance', 'run_id', 'employee_id');
	GRANT INSERT ON payroll TO nobody, reader, operator;
	CREATE SCHEMA hr;
	CREATE TABLE hr.payroll (LIKE public.payroll);
	CREATE TRIGGER load AFTER INSERT ON hr.payroll FOR EACH ROW
	    EXECUTE FUNCTION enkash_load_balance_trigger('card_account_id', 'enkash_card_id',
	                                                 'allowance', 'run_id', 'employee_id');
	GRANT USAGE ON SCHEMA hr TO operator;
	GRANT INSERT ON hr.payroll TO operator;
});
for my $role (qw(nobody reader))
{
	my $r = sq(qq{SET ROLE $role; SELECT try_sql(\$\$INSERT INTO payroll VALUES ('R', '$role', 'CASANDBOX1', 'EKCSANDBOX1', 1)\$\$)});
	like($r, qr/^42501 \| .*enkash_operate/, "$role: a payroll insert is refused (42501) and names enkash_operate");
}
my ($rc, $out, $err) = $node->psql('postgres',
	q{SET ROLE reader; INSERT INTO payroll VALUES ('R', 'x', 'CASANDBOX1', 'EKCSANDBOX1', 1)});
like($err, qr/HINT:.*GRANT enkash_operate/, 'the refusal hints at the grant');

# --- reference numbers -----------------------------------------------------------
sq(q{SET ROLE operator;
	INSERT INTO payroll VALUES ('2026-11', 'E001', 'CASANDBOX1', 'EKCSANDBOX1', 5),
	                           ('2026', '11-E001', 'CASANDBOX1', 'EKCSANDBOX1', 7);
	INSERT INTO hr.payroll VALUES ('2026-11', 'E001', 'CASANDBOX1', 'EKCSANDBOX1', 9);});
$node->poll_query_until('postgres',
	q{SELECT count(*) = 0 FROM enkash.requests WHERE state NOT IN ('succeeded', 'failed', 'dead')})
  or die 'payroll loads did not finish';
my @refs = split /\n/, sq(q{SELECT idempotency_key || ' ' || state || ' ' || (body->>'amount')
	FROM enkash.requests WHERE body->>'description' LIKE 'Payroll %' AND idempotency_key NOT LIKE '%HOSTILE%'
	ORDER BY id});
is(scalar(@refs), 3, 'three payroll rows, three queued loads');
my %distinct = map { ((split / /)[0] => 1) } @refs;
is(scalar(keys %distinct), 3, 'three distinct reference numbers: ' . join(', ', sort keys %distinct));
for my $r (@refs)
{
	my ($ref, $state) = split / /, $r;
	is($state, 'succeeded', "$ref loaded");
	is(credits($ref), 1, "$ref credited exactly once");
	like($ref, qr/public.*payroll|hr.*payroll/, "$ref names its schema and table");
}
like(sq(q{SET ROLE operator; SELECT try_sql($$INSERT INTO payroll VALUES (repeat('R', 40), 'E001', 'CASANDBOX1', 'EKCSANDBOX1', 1)$$)}),
	qr/^22001 \| .*reference number.*too long/, 'a reference number longer than EnKash takes is refused (22001)');

# --- views read with the owner's rights leak no row they filter out -------------
sq(q{INSERT INTO enkash.idempotency_keys (endpoint, key, fingerprint, state, role)
	VALUES ('create_card_account', 'HIDDEN-KEY', 'f', 'succeeded', 'postgres')});
sq(q{SET ROLE operator;
	SET enable_indexscan = off; SET enable_bitmapscan = off; SET enable_indexonlyscan = off;
	CREATE SCHEMA peek;
	CREATE TABLE peek.seen (v text);
	CREATE FUNCTION peek.leak(text) RETURNS boolean LANGUAGE plpgsql COST 0.000001
	    AS $$ BEGIN INSERT INTO peek.seen VALUES ($1); RETURN true; END $$;
	SELECT count(*) FROM enkash.money_movements WHERE peek.leak(reference_number);
	SELECT count(*) FROM enkash.queue WHERE peek.leak(state);});
is(sq(q{SELECT count(*) FROM peek.seen WHERE v = 'HIDDEN-KEY'}), '0',
	'operator: a cheap function of its own in a WHERE on enkash.money_movements sees no other endpoint\'s key');
cmp_ok(sq(q{SELECT count(*) FROM peek.seen}), '>', 0, 'the function did run on the rows shown');

# --- the calling role is recorded, not the extension's owner ---------------------
for my $role (qw(reader administrator))
{
	my $mark = sq(q{SELECT max(id) FROM enkash.audit_log});
	sq($role eq 'reader' ? q{SET ROLE reader; SELECT count(*) FROM enkash_transactions('CASANDBOX1')}
		: q{SET ROLE administrator; SELECT enkash_sync_transactions('CASANDBOX1')});
	$node->poll_query_until('postgres',
		qq{SELECT count(*) > 0 FROM enkash.audit_log WHERE id > $mark AND endpoint = 'transactions'})
	  or die 'no audit row';
	is(sq(qq{SELECT string_agg(DISTINCT role, ',') FROM enkash.audit_log
		WHERE id > $mark AND endpoint = 'transactions'}), $role,
		"$role: the audit log names $role for its transaction listing, not the extension's owner");
}
is(sq(q{SELECT string_agg(DISTINCT created_by, ',') FROM enkash.requests
	WHERE body->>'description' LIKE 'Payroll %' AND idempotency_key NOT LIKE '%HOSTILE%'}),
	'operator', 'the payroll loads record the inserting role');

done_testing();
