# The worker records many sessions' claims and outcomes together: one
# statement per kind of row, one commit for the lot.  Eight sessions make
# synchronous loads at once under keys that collide across sessions: the
# same request again (a replay, or "in flight" while another session sends
# it) and the same key with another amount (EK007).  The outcome of a few
# keys cannot be written (a trigger refuses it), so batches that hold one
# fail and the worker goes one slot at a time; the caller is warned and the
# key stays in flight.  EnKash has at most one credit per reference, exactly
# one for every key that succeeded, and no load request beyond those.
use strict;
use warnings;
use lib $ENV{ENKASH_TAP_LIB};
use EnkashTest;
use PostgreSQL::Test::Utils;
use Test::More;

my $url = start_private_sandbox();
my $node = enkash_node('worker_batches', sandbox_url => $url, conf => <<'CONF');
log_min_messages = debug1
CONF

my $load_path = '/api/v0/partner/enKashCard/balance';

$node->safe_psql('postgres', q{
	CREATE FUNCTION public.refuse_bad() RETURNS trigger LANGUAGE plpgsql AS $$
	BEGIN
		IF NEW.key LIKE 'WB-bad-%' AND NEW.state <> 'in_flight' THEN
			RAISE EXCEPTION 'the outcome of % is refused', NEW.key;
		END IF;
		RETURN NEW;
	END $$;
	CREATE TRIGGER refuse_bad BEFORE UPDATE ON enkash.idempotency_keys
		FOR EACH ROW EXECUTE FUNCTION public.refuse_bad();
	CREATE TABLE public.outcomes (reference text, amount int, sqlstate text);
	-- One load; its SQLSTATE is kept, errors included.
	CREATE FUNCTION public.try_load(k int, a int) RETURNS void LANGUAGE plpgsql AS $$
	DECLARE
		ref text := CASE WHEN k % 15 = 0 THEN 'WB-bad-' ELSE 'WB-' END || k;
		amount int := CASE WHEN a = 8 THEN 2 ELSE 1 END;
	BEGIN
		BEGIN
			PERFORM enkash_load_balance('CASANDBOX1', 'EKCSANDBOX1', amount, ref);
			INSERT INTO public.outcomes VALUES (ref, amount, '00000');
		EXCEPTION WHEN OTHERS THEN
			INSERT INTO public.outcomes VALUES (ref, amount, SQLSTATE);
		END;
	END $$;
});
$node->safe_psql('postgres', "SELECT enkash_get_card_account('CASANDBOX1')");   # a token

$node->pgbench(
	'--no-vacuum --client=8 --jobs=8 --transactions=40',
	0, [qr/processed: 320\/320/], [qr//],
	'eight sessions load under colliding keys',
	{
		'024_loads' => q{
\set k random(1, 60)
\set a random(1, 8)
SELECT public.try_load(:k, :a);
}
	});

# What each call got: success (a send or a replay), in flight, EK007.
my $states = $node->safe_psql('postgres',
	"SELECT string_agg(DISTINCT sqlstate, ' ' ORDER BY sqlstate) FROM public.outcomes");
like($states, qr/^(?:00000|55P03|EK007)(?: (?:00000|55P03|EK007))*$/,
	"every call succeeded, was refused as in flight or as a different request ($states)");
is($node->safe_psql('postgres', 'SELECT count(*) FROM public.outcomes'), '320', 'every call was made');

my $ledger = sandbox($url, 'GET', '/__sandbox/ledger');
my %credits;
$credits{$1} = $2 while $ledger =~ /"reference":"(WB-[^"]*)","count":(\d+)/g;
my @twice = grep { $credits{$_} != 1 } sort keys %credits;
is("@twice", '', 'no reference was credited more than once');

my $requests = sandbox($url, 'GET', '/__sandbox/requests');
my $sent = $requests =~ /"\Q$load_path\E"\s*:\s*(\d+)/ ? $1 : 0;
is($sent, scalar(keys %credits), 'one load request per credited reference, none sent twice');

my %succeeded = map { $_ => 1 } split /\n/, $node->safe_psql('postgres',
	"SELECT key FROM enkash.idempotency_keys WHERE key LIKE 'WB-%' AND state = 'succeeded'");
my @good_credited = grep { !/^WB-bad-/ } sort keys %credits;
is(join(' ', sort keys %succeeded), join(' ', @good_credited),
	'the keys that succeeded are exactly the good references EnKash credited');
ok(scalar(@good_credited) > 20, scalar(@good_credited) . ' good references were loaded');

is($node->safe_psql('postgres',
	"SELECT count(*) FROM enkash.idempotency_keys k WHERE key LIKE 'WB-%' AND state = 'succeeded' "
	  . "AND NOT EXISTS (SELECT FROM enkash.audit_log a WHERE a.key_id = k.id AND a.outcome = 'ok')"),
	'0', 'every key that succeeded has its audit row with the answer');

my $bad = $node->safe_psql('postgres',
	"SELECT string_agg(DISTINCT state, ' ') FROM enkash.idempotency_keys WHERE key LIKE 'WB-bad-%'");
is($bad, 'in_flight', 'keys whose outcome could not be written stay in flight (later: unknown)');
my @bad_credited = grep { /^WB-bad-/ } keys %credits;
ok(@bad_credited >= 1, 'the refused keys were sent (' . scalar(@bad_credited) . ')');

my $log = slurp_file($node->logfile);
like($log, qr/WARNING:  the outcome of key "WB-bad-\d+" could not be recorded/,
	'the caller is warned that the outcome was not recorded');
like($log, qr/enkash worker: a statement over many rows failed, going one row at a time/,
	'a batch with a refused outcome was written one slot at a time');
unlike($log, qr/enkash worker could not record a call: (?!the outcome of WB-bad-)/,
	'no other slot failed');

$node->stop;
done_testing();
