# Search-path hijacking (SECURITY.md, section 1).
#
# A role that may queue loads and run the admin functions plants functions,
# operators, an aggregate and types named like everything the SQL of the
# SECURITY DEFINER functions and the C code's SPI queries uses (now, lower,
# jsonb_build_object, pg_sleep(numeric), to_jsonb, make_interval, count(*),
# =, ||, ?, ->>, <=, +, -, the types text, jsonb, timestamptz, ...), plus
# overloads of the extension's own function names, in a schema of its own put
# first in its search_path and in public; and temporary tables named like the
# extension's.  Every planted object bumps a sequence (which no rollback
# undoes) when it runs.  Then it calls every SECURITY DEFINER function, the
# payroll trigger and the queued path, under several search_path orders
# (pg_catalog implicit, explicit last, pg_temp first): nothing planted runs
# and the results are right.  Last, the database's own search_path is set to
# the planted schema (what a database owner can do) and the server restarted:
# the enkash worker and senders, which run SQL as a superuser, ignore it.
use strict;
use warnings;
use lib $ENV{ENKASH_TAP_LIB};
use EnkashTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = enkash_clean_node('hijack');
is($node->safe_psql('postgres', q{SELECT enkash_get_card_account('CASANDBOX1') ->> 'cardAccountId'}),
	'CASANDBOX1', 'a first call works');

$node->safe_psql('postgres', q{
	CREATE ROLE mallory LOGIN;
	GRANT CREATE ON SCHEMA public TO mallory;       -- as before PostgreSQL 15
	GRANT USAGE ON SCHEMA enkash TO mallory;
	GRANT EXECUTE ON FUNCTION enkash_transactions, enkash_wait, enkash_retry,
	    enkash_sync_transactions, enkash_load_balance_trigger, enkash_load_balance_async,
	    enkash_load_balance, enkash_enqueue TO mallory;
	CREATE SCHEMA evil AUTHORIZATION mallory;
});

# Everything below is planted by mallory, in evil and in public.
my $plant = <<'SQL';
SET ROLE mallory;
CREATE SEQUENCE evil.hits;
CREATE TABLE evil.hit_log (what text, by_role text, at timestamptz DEFAULT pg_catalog.clock_timestamp());
GRANT USAGE ON SCHEMA evil TO PUBLIC;
GRANT USAGE, UPDATE ON SEQUENCE evil.hits TO PUBLIC;
GRANT INSERT ON evil.hit_log TO PUBLIC;
CREATE FUNCTION evil.hit(what text) RETURNS boolean LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM pg_catalog.nextval('evil.hits');
    INSERT INTO evil.hit_log (what, by_role) VALUES (what, current_user);
    RAISE WARNING 'planted % ran as %', what, current_user;
    RETURN true;
END $$;
GRANT EXECUTE ON FUNCTION evil.hit(text) TO PUBLIC;

DO $do$
DECLARE
    s text;
BEGIN
    FOREACH s IN ARRAY ARRAY['evil', 'public'] LOOP
        EXECUTE pg_catalog.format($f$
        CREATE FUNCTION %1$I.now() RETURNS timestamptz LANGUAGE sql VOLATILE
            AS $$ SELECT CASE WHEN evil.hit('now') THEN pg_catalog.now() END $$;
        CREATE FUNCTION %1$I.clock_timestamp() RETURNS timestamptz LANGUAGE sql VOLATILE
            AS $$ SELECT CASE WHEN evil.hit('clock_timestamp') THEN pg_catalog.clock_timestamp() END $$;
        CREATE FUNCTION %1$I.lower(text) RETURNS text LANGUAGE sql VOLATILE
            AS $$ SELECT CASE WHEN evil.hit('lower') THEN pg_catalog.lower($1) END $$;
        CREATE FUNCTION %1$I.upper(text) RETURNS text LANGUAGE sql VOLATILE
            AS $$ SELECT CASE WHEN evil.hit('upper') THEN pg_catalog.upper($1) END $$;
        CREATE FUNCTION %1$I.current_setting(text) RETURNS text LANGUAGE sql VOLATILE
            AS $$ SELECT CASE WHEN evil.hit('current_setting') THEN pg_catalog.current_setting($1) END $$;
        CREATE FUNCTION %1$I.pg_sleep(numeric) RETURNS void LANGUAGE sql VOLATILE
            AS $$ SELECT evil.hit('pg_sleep(numeric)'); SELECT pg_catalog.pg_sleep($1::float8) $$;
        CREATE FUNCTION %1$I.to_jsonb(anyelement) RETURNS jsonb LANGUAGE sql VOLATILE
            AS $$ SELECT CASE WHEN evil.hit('to_jsonb') THEN pg_catalog.to_jsonb($1) END $$;
        CREATE FUNCTION %1$I.make_interval(secs numeric) RETURNS interval LANGUAGE sql VOLATILE
            AS $$ SELECT CASE WHEN evil.hit('make_interval') THEN pg_catalog.make_interval(secs => $1::float8) END $$;
        CREATE FUNCTION %1$I.jsonb_build_object(text, bigint, text, text, text, integer, text, jsonb,
                                               text, text, text, text) RETURNS jsonb LANGUAGE sql VOLATILE
            AS $$ SELECT CASE WHEN evil.hit('jsonb_build_object') THEN '{"state": "hijacked"}'::pg_catalog.jsonb END $$;
        CREATE FUNCTION %1$I.jsonb_build_array(jsonb) RETURNS jsonb LANGUAGE sql VOLATILE
            AS $$ SELECT CASE WHEN evil.hit('jsonb_build_array') THEN pg_catalog.jsonb_build_array($1) END $$;
        CREATE FUNCTION %1$I.count_step(bigint) RETURNS bigint LANGUAGE sql VOLATILE
            AS $$ SELECT CASE WHEN evil.hit('count(*)') THEN $1 OPERATOR(pg_catalog.+) 1000 END $$;
        CREATE AGGREGATE %1$I.count(*) (SFUNC = %1$I.count_step, STYPE = bigint, INITCOND = '0');
        CREATE FUNCTION %1$I.texteq(text, text) RETURNS boolean LANGUAGE sql VOLATILE
            AS $$ SELECT evil.hit('=(text,text)') AND pg_catalog.texteq($1, $2) $$;
        CREATE OPERATOR %1$I.= (LEFTARG = text, RIGHTARG = text, FUNCTION = %1$I.texteq);
        CREATE FUNCTION %1$I.int8eq(bigint, bigint) RETURNS boolean LANGUAGE sql VOLATILE
            AS $$ SELECT evil.hit('=(bigint,bigint)') AND pg_catalog.int8eq($1, $2) $$;
        CREATE OPERATOR %1$I.= (LEFTARG = bigint, RIGHTARG = bigint, FUNCTION = %1$I.int8eq);
        CREATE FUNCTION %1$I.textcat(text, text) RETURNS text LANGUAGE sql VOLATILE
            AS $$ SELECT CASE WHEN evil.hit('||') THEN pg_catalog.textcat($1, $2) END $$;
        CREATE OPERATOR %1$I.|| (LEFTARG = text, RIGHTARG = text, FUNCTION = %1$I.textcat);
        CREATE FUNCTION %1$I.jsonb_exists(jsonb, text) RETURNS boolean LANGUAGE sql VOLATILE
            AS $$ SELECT evil.hit('?') AND pg_catalog.jsonb_exists($1, $2) $$;
        CREATE OPERATOR %1$I.? (LEFTARG = jsonb, RIGHTARG = text, FUNCTION = %1$I.jsonb_exists);
        CREATE FUNCTION %1$I.jsonb_field_text(jsonb, text) RETURNS text LANGUAGE sql VOLATILE
            AS $$ SELECT CASE WHEN evil.hit('->>') THEN pg_catalog.jsonb_object_field_text($1, $2) END $$;
        CREATE OPERATOR %1$I.->> (LEFTARG = jsonb, RIGHTARG = text, FUNCTION = %1$I.jsonb_field_text);
        CREATE FUNCTION %1$I.jsonb_field(jsonb, text) RETURNS jsonb LANGUAGE sql VOLATILE
            AS $$ SELECT CASE WHEN evil.hit('->') THEN pg_catalog.jsonb_object_field($1, $2) END $$;
        CREATE OPERATOR %1$I.-> (LEFTARG = jsonb, RIGHTARG = text, FUNCTION = %1$I.jsonb_field);
        CREATE FUNCTION %1$I.tsle(timestamptz, timestamptz) RETURNS boolean LANGUAGE sql VOLATILE
            AS $$ SELECT evil.hit('<=(timestamptz)') AND pg_catalog.timestamptz_le($1, $2) $$;
        CREATE OPERATOR %1$I.<= (LEFTARG = timestamptz, RIGHTARG = timestamptz, FUNCTION = %1$I.tsle);
        CREATE FUNCTION %1$I.tsge(timestamptz, timestamptz) RETURNS boolean LANGUAGE sql VOLATILE
            AS $$ SELECT evil.hit('>=(timestamptz)') AND pg_catalog.timestamptz_ge($1, $2) $$;
        CREATE OPERATOR %1$I.>= (LEFTARG = timestamptz, RIGHTARG = timestamptz, FUNCTION = %1$I.tsge);
        CREATE FUNCTION %1$I.tslt(timestamptz, timestamptz) RETURNS boolean LANGUAGE sql VOLATILE
            AS $$ SELECT evil.hit('<(timestamptz)') AND pg_catalog.timestamptz_lt($1, $2) $$;
        CREATE OPERATOR %1$I.< (LEFTARG = timestamptz, RIGHTARG = timestamptz, FUNCTION = %1$I.tslt);
        CREATE FUNCTION %1$I.tsmi(timestamptz, interval) RETURNS timestamptz LANGUAGE sql VOLATILE
            AS $$ SELECT CASE WHEN evil.hit('-(timestamptz,interval)') THEN pg_catalog.timestamptz_mi_interval($1, $2) END $$;
        CREATE OPERATOR %1$I.- (LEFTARG = timestamptz, RIGHTARG = interval, FUNCTION = %1$I.tsmi);
        CREATE FUNCTION %1$I.tspl(timestamptz, interval) RETURNS timestamptz LANGUAGE sql VOLATILE
            AS $$ SELECT CASE WHEN evil.hit('+(timestamptz,interval)') THEN pg_catalog.timestamptz_pl_interval($1, $2) END $$;
        CREATE OPERATOR %1$I.+ (LEFTARG = timestamptz, RIGHTARG = interval, FUNCTION = %1$I.tspl);
        CREATE FUNCTION %1$I.checked() RETURNS boolean LANGUAGE sql VOLATILE AS $$ SELECT evil.hit('type') $$;
        $f$, s);
    END LOOP;
    -- Types named like built-in ones (a domain whose check runs a planted function).
    CREATE DOMAIN evil.text AS pg_catalog.text CHECK (evil.checked());
    CREATE DOMAIN evil.jsonb AS pg_catalog.jsonb CHECK (evil.checked());
    CREATE DOMAIN evil.timestamptz AS pg_catalog.timestamptz CHECK (evil.checked());
    CREATE DOMAIN evil.int4 AS pg_catalog.int4 CHECK (evil.checked());
    CREATE DOMAIN evil.int8 AS pg_catalog.int8 CHECK (evil.checked());
    CREATE DOMAIN evil.bool AS pg_catalog.bool CHECK (evil.checked());
END $do$;

-- Overloads of the extension's own names in its schema (public), matching
-- the named arguments the trigger and enkash_sync_transactions use.
CREATE FUNCTION public.enkash_load_balance_async(card_account_id text, enkash_card_id text,
        amount numeric, unique_reference_number text, description text, created_by text)
    RETURNS bigint LANGUAGE sql VOLATILE
    AS $$ SELECT evil.hit('enkash_load_balance_async overload'); SELECT -1::bigint $$;
CREATE FUNCTION public.enkash_transactions(card_account_id text, txn_date_from timestamptz, company_id text)
    RETURNS TABLE (transaction_id text, card_id text, txn_date timestamptz, amount numeric, cr_dr text,
                   transaction_status text, transaction_type text, description text,
                   reference_number text, balance_after numeric, merchant_name text, mcc text,
                   channel text)
    LANGUAGE sql VOLATILE
    AS $$ SELECT 'EVIL' || evil.hit('enkash_transactions overload')::text, NULL::text, now(), 1e9, 'CR'::text,
                 NULL::text, NULL::text, NULL::text, NULL::text, NULL::numeric, NULL::text, NULL::text, NULL::text $$;
SQL
$node->safe_psql('postgres', $plant);

sub hits { return $node->safe_psql('postgres', 'SELECT last_value FROM evil.hits'); }
sub hit_log { return $node->safe_psql('postgres', q{SELECT string_agg(DISTINCT what, ', ') FROM evil.hit_log}); }

# Control: the plants are live for mallory's own unqualified SQL.
my $h0 = hits();
$node->safe_psql('postgres', q{SET ROLE mallory; SET search_path = evil, public, pg_catalog;
	SELECT lower('A'), now(), 'a' = 'b', '{"a": 1}'::pg_catalog.jsonb ->> 'a', pg_sleep(0.01),
	       (SELECT count(*) FROM pg_class)});
cmp_ok(hits(), '>', $h0 + 4, 'control: the planted objects run when mallory calls them herself');
$node->safe_psql('postgres', 'TRUNCATE evil.hit_log');
my $base = hits();

# Temporary tables named like the extension's, for the pg_temp-first path.
my $temp = q{CREATE TEMP TABLE requests (id bigint, state text, attempts int, response jsonb,
	    last_sqlstate text, last_error text);
	INSERT INTO requests VALUES (1, 'hijacked', 0, NULL, NULL, NULL);
	CREATE TEMP TABLE transactions (transaction_id text);
	CREATE TEMP TABLE idempotency_keys (key text);};

my %paths = (
	'planted first, pg_catalog implicit' => 'evil, public',
	'planted first, pg_catalog explicit last' => 'evil, public, pg_catalog',
	'pg_temp first' => 'pg_temp, evil, public, pg_catalog');
my $n = 0;
for my $label (sort keys %paths)
{
	$n++;
	my $sp = $paths{$label};
	my $as_mallory = "SET ROLE mallory; $temp SET search_path = $sp;";

	# The payroll trigger (the inserting role's rights) and the queued path (C, SPI).
	$node->safe_psql('postgres', qq{SET ROLE mallory; SET search_path = $sp;
		CREATE TABLE public.payroll_$n (run_id pg_catalog.text, employee_id pg_catalog.text,
		    card_account_id pg_catalog.text, enkash_card_id pg_catalog.text, allowance numeric);
		CREATE TRIGGER load AFTER INSERT ON public.payroll_$n FOR EACH ROW
		    EXECUTE FUNCTION public.enkash_load_balance_trigger('card_account_id', 'enkash_card_id',
		                                                       'allowance', 'run_id', 'employee_id')});
	$node->safe_psql('postgres', qq{$as_mallory
		INSERT INTO public.payroll_$n VALUES ('HIJ', 'E$n', 'CASANDBOX1', 'EKCSANDBOX1', 12.34)});
	my $queued = $node->safe_psql('postgres', qq{$as_mallory
		SELECT public.enkash_load_balance_async('CASANDBOX1', 'EKCSANDBOX2', 5.5, 'HIJ-ASYNC-$n')});
	my $enqueued = $node->safe_psql('postgres', qq{$as_mallory
		SELECT public.enkash_enqueue('get_card_account',
		    '{"companyId": "CEKSANDBOX1", "cardAccountId": "CASANDBOX1"}')});
	like($queued, qr/^\d+$/, "$label: a load is queued");

	# enkash_wait (SECURITY DEFINER): the queued rows, not the temp table.
	is($node->safe_psql('postgres', qq{$as_mallory
		SELECT public.enkash_wait($queued, '30 s') OPERATOR(pg_catalog.->>) 'state'}),
		'succeeded', "$label: enkash_wait sees the queued load succeed");
	is($node->safe_psql('postgres', qq{$as_mallory
		SELECT public.enkash_wait($enqueued, '30 s') OPERATOR(pg_catalog.->>) 'state'}),
		'succeeded', "$label: enkash_wait sees the enqueued look-up succeed");
	my $payroll_id = $node->safe_psql('postgres', qq{SET search_path = pg_catalog;
		SELECT id FROM enkash.requests WHERE idempotency_key = '6:public/9:payroll_$n/3:HIJ/2:E$n'});
	like($payroll_id, qr/^\d+$/, "$label: the payroll row was queued under its reference");
	is($node->safe_psql('postgres', qq{$as_mallory
		SELECT public.enkash_wait($payroll_id, '30 s') OPERATOR(pg_catalog.->>) 'state'}),
		'succeeded', "$label: the payroll row's load succeeded");
	is(credits("6:public/9:payroll_$n/3:HIJ/2:E$n"), 1, "$label: the payroll load was credited once");
	is(credits("HIJ-ASYNC-$n"), 1, "$label: the queued load was credited once");
	is($node->safe_psql('postgres', qq{SET search_path = pg_catalog;
		SELECT (body->>'amount') || ' ' || (body->>'enKashCardId') || ' ' || (body->>'description')
		FROM enkash.requests WHERE id = $payroll_id}),
		"12.34 EKCSANDBOX1 Payroll payroll_$n", "$label: the trigger queued the right body");

	# enkash_retry (SECURITY DEFINER): nothing dead, nothing done.
	is($node->safe_psql('postgres', qq{$as_mallory SELECT public.enkash_retry($queued) IS NULL}),
		't', "$label: enkash_retry of a live request does nothing");

	# enkash_transactions and enkash_sync_transactions (SECURITY DEFINER).
	is($node->safe_psql('postgres', qq{$as_mallory
		SELECT pg_catalog.count(*) OPERATOR(pg_catalog.||) ' ' OPERATOR(pg_catalog.||) pg_catalog.sum(amount)
		FROM public.enkash_transactions('CASANDBOX1', card_transaction_type => 'CR')
		WHERE reference_number OPERATOR(pg_catalog.=) '6:public/9:payroll_$n/3:HIJ/2:E$n'}),
		'1 12.34', "$label: enkash_transactions returns the credit");
	my $synced = $node->safe_psql('postgres', qq{$as_mallory
		SELECT public.enkash_sync_transactions('CASANDBOX1')});
	cmp_ok($synced, '>=', 2 * $n, "$label: enkash_sync_transactions upserts $synced rows");
	is($node->safe_psql('postgres', q{SET search_path = pg_catalog;
		SELECT count(*) FROM enkash.transactions WHERE transaction_id LIKE 'EVIL%' OR amount > 1000000}),
		'0', "$label: only EnKash's transactions were synced");

	is(hits(), $base, "$label: nothing planted ran") or diag('planted objects that ran: ' . hit_log());
}

# --- the workers: ALTER DATABASE ... SET search_path ------------------------------
$node->safe_psql('postgres', 'ALTER DATABASE postgres SET search_path = evil, public, pg_catalog');
$node->restart;
like($node->safe_psql('postgres', 'SHOW search_path'), qr/^evil, public, pg_catalog$/,
	'new sessions of the database start with the planted schema first');
$node->safe_psql('postgres', 'SET search_path = pg_catalog; TRUNCATE evil.hit_log');
$base = hits();
is($node->safe_psql('postgres', q{SET search_path = pg_catalog;
	SELECT public.enkash_load_balance('CASANDBOX1', 'EKCSANDBOX1', 7.25, 'HIJ-WORKER-1') IS NOT NULL}),
	't', 'a load after the restart works (the enkash worker records it)');
is($node->safe_psql('postgres', q{SET search_path = pg_catalog;
	SELECT public.enkash_load_balance('CASANDBOX1', 'EKCSANDBOX1', 7.25, 'HIJ-WORKER-1') IS NOT NULL}),
	't', 'its replay is answered from the key');
is(credits('HIJ-WORKER-1'), 1, 'credited once');
my $queued = $node->safe_psql('postgres', q{SET search_path = pg_catalog;
	SELECT public.enkash_load_balance_async('CASANDBOX1', 'EKCSANDBOX2', 1.75, 'HIJ-WORKER-2')});
is($node->safe_psql('postgres', qq{SET search_path = pg_catalog;
	SELECT public.enkash_wait($queued, '30 s') ->> 'state'}),
	'succeeded', 'a queued load is sent by a sender');
is(credits('HIJ-WORKER-2'), 1, 'credited once');
is($node->safe_psql('postgres', q{SET search_path = pg_catalog;
	SELECT state FROM enkash.idempotency_keys WHERE key = 'HIJ-WORKER-1'}),
	'succeeded', 'the key is recorded as succeeded');
is(hits(), $base, 'nothing planted ran in the enkash worker or senders')
  or diag('planted objects that ran: ' . hit_log());

done_testing();
