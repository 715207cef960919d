# The worker records many sessions' claims and outcomes together: one
# statement per kind of row, one commit for the lot.  Eight sessions make
# synchronous loads at once under keys that collide across sessions: the
# same request again (a replay, or "in flight" while another session sends
# it) and the same key with another amount (NK007).  The outcome of a few
# keys cannot be written (a trigger refuses it); the caller is warned and
# the key stays in flight.  EnKash has at most one credit per reference,
# exactly one for every key that succeeded, and no load request beyond those.
# Then, with the worker held on a lock, a refused outcome and a good one are
# made to wait in the same batch: the worker goes one slot at a time and
# records the good one.
use strict;
use warnings;
use lib $ENV{ENKASH_TAP_LIB};
use EnkashTest;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);

my $url = start_private_sandbox();
my $node = enkash_node('worker_batches', sandbox_url => $url, conf => <<'CONF');
log_min_messages = debug1
CONF


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
	CREATE TABLE public.outcomes (reference text, amount int, sqlstate text, message text);
	-- One load; its SQLSTATE is kept, errors included.
	CREATE FUNCTION public.try_load(k int, a int) RETURNS void LANGUAGE plpgsql AS $$
	DECLARE
		ref text := CASE WHEN k % 15 = 0 THEN 'WB-bad-' ELSE 'WB-' END || k;
		amount int := CASE WHEN a = 8 THEN 2 ELSE 1 END;
	BEGIN
		BEGIN
			PERFORM enkash_load_balance('CASANDBOX1', 'EKCSANDBOX1', amount, ref);
			INSERT INTO public.outcomes VALUES (ref, amount, '00000', NULL);
		EXCEPTION WHEN OTHERS THEN
			INSERT INTO public.outcomes VALUES (ref, amount, SQLSTATE, SQLERRM);
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

# What each call got: success (a send or a replay), in flight, NK007; a
# refused key's later call may also find its record refused (55000).
my $states = $node->safe_psql('postgres',
	"SELECT string_agg(DISTINCT sqlstate, ' ' ORDER BY sqlstate) FROM public.outcomes "
	  . "WHERE reference NOT LIKE 'WB-bad-%'");
like($states, qr/^(?:00000|55P03|NK007)(?: (?:00000|55P03|NK007))*$/,
	"every call succeeded, was refused as in flight or as a different request ($states)");
$states = $node->safe_psql('postgres',
	"SELECT string_agg(DISTINCT sqlstate, ' ' ORDER BY sqlstate) FROM public.outcomes "
	  . "WHERE reference LIKE 'WB-bad-%'");
like($states, qr/^(?:00000|55000|55P03|NK007)(?: (?:00000|55000|55P03|NK007))*$/,
	"a refused key's calls also could not be recorded at worst ($states)");
my $unrecorded = $node->safe_psql('postgres',
	"SELECT string_agg(DISTINCT reference || ': ' || message, E'\n') FROM public.outcomes WHERE sqlstate = '55000'");
diag($unrecorded) if $unrecorded ne '';
is($node->safe_psql('postgres', 'SELECT count(*) FROM public.outcomes'), '320', 'every call was made');

my %credits = %{ credits_by_prefix($url, 'WB-') };
my @twice = grep { $credits{$_} != 1 } sort keys %credits;
is("@twice", '', 'no reference was credited more than once');

is(loads_sent($url), scalar(keys %credits), 'one load request per credited reference, none sent twice')
  or diag(sandbox($url, 'GET', '/__sandbox/requests'), "\n", sandbox($url, 'GET', '/__sandbox/ledger'));

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

# A batch that holds a refused outcome and a good one.  A key's claim can
# be made to wait on an advisory lock that a session here holds; while the
# worker waits on it, two loads that were claimed before come back from
# EnKash and their outcomes queue up behind it, to be written together.
$node->safe_psql('postgres', q{
	CREATE FUNCTION public.gate() RETURNS trigger LANGUAGE plpgsql AS $$
	BEGIN
		PERFORM pg_advisory_xact_lock(4242);
		RETURN NEW;
	END $$;
	CREATE TRIGGER gate BEFORE INSERT ON enkash.idempotency_keys
		FOR EACH ROW WHEN (NEW.key = 'GATE') EXECUTE FUNCTION public.gate();
});

# Runs SQL in a session of its own, in the background.
sub start_session
{
	my ($sql) = @_;
	my %out = (stdout => '', stderr => '');
	my $h = IPC::Run::start(
		[ 'psql', '-X', '-At', '-d', $node->connstr('postgres'), '-c', $sql ],
		'>', \$out{stdout}, '2>', \$out{stderr});
	return ($h, \%out);
}

# Polls until the query returns 't' (at most 60 s).
sub wait_for
{
	my ($query, $what) = @_;
	for (1 .. 600)
	{
		return 1 if $node->safe_psql('postgres', $query) eq 't';
		usleep(100_000);
	}
	die "timed out waiting: $what";
}

my ($holder) = start_session(
	'SELECT pg_advisory_lock(4242), pg_backend_pid(), pg_sleep(600)');
wait_for("SELECT EXISTS (SELECT FROM pg_locks WHERE locktype = 'advisory' AND objid = 4242 AND granted)",
	'the lock is held');

sandbox($url, 'POST', '/__sandbox/faults', '{"latency_ms": 1500}');
my @pair = map { [ start_session(
	"SELECT enkash_load_balance('CASANDBOX1', 'EKCSANDBOX1', 1, '$_') #>> '{}'") ] }
  ('PAIR-good', 'WB-bad-pair');
wait_for("SELECT count(*) = 2 FROM enkash.idempotency_keys WHERE key IN ('PAIR-good', 'WB-bad-pair') AND state = 'in_flight'",
	'both loads are claimed');

my ($gated, $gated_out) = start_session(
	"SELECT enkash_load_balance('CASANDBOX1', 'EKCSANDBOX1', 1, 'GATE') #>> '{}'");
wait_for("SELECT EXISTS (SELECT FROM pg_locks WHERE locktype = 'advisory' AND objid = 4242 AND NOT granted)",
	'the worker waits on the lock');

# Both loads are credited after 1.5 s; their outcomes are then handed to
# the worker, which is still held.
for (1 .. 600)
{
	my $ledger_now = sandbox($url, 'GET', '/__sandbox/ledger');
	last if $ledger_now =~ /"PAIR-good"/ && $ledger_now =~ /"WB-bad-pair"/;
	usleep(100_000);
}
usleep(2_000_000);
$node->safe_psql('postgres',
	"SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND objid = 4242 AND granted");
$holder->finish;
$_->[0]->finish for @pair, [ $gated ];

like($pair[0][1]{stdout}, qr/successful/, 'the good load of the pair returned its answer');
like($pair[1][1]{stderr}, qr/WARNING:  the outcome of key "WB-bad-pair" could not be recorded/,
	'the refused one warned its caller');
is($node->safe_psql('postgres',
	"SELECT string_agg(key || '=' || state, ' ' ORDER BY key) FROM enkash.idempotency_keys WHERE key IN ('PAIR-good', 'WB-bad-pair', 'GATE')"),
	'GATE=succeeded PAIR-good=succeeded WB-bad-pair=in_flight',
	'the good outcome was recorded beside the refused one, and the held claim went on');
$log = slurp_file($node->logfile);
like($log, qr/enkash worker: a statement over many rows failed, going one row at a time: the outcome of WB-bad-pair is refused/,
	'the batch with the refused outcome was written one slot at a time');
unlike($log, qr/enkash worker could not record a call: (?!the outcome of WB-bad-)/,
	'no other slot failed');

# Look-ups' audit rows, which nobody waits for, are let gather and written
# together: a burst of look-ups in one session fills far fewer of the
# worker's transactions than it has rows (one each, if every look-up woke
# the worker, or if the worker wrote what it found at once).
sandbox($url, 'POST', '/__sandbox/faults', '{"latency_ms": 0}');
my $before = $node->safe_psql('postgres', 'SELECT coalesce(max(id), 0) FROM enkash.audit_log');
$node->safe_psql('postgres',
	"SELECT count(enkash_get_card_account('CASANDBOX1')) FROM generate_series(1, 300)");
my $burst_rows = "FROM enkash.audit_log WHERE id > $before AND endpoint <> 'token'";
wait_for("SELECT count(*) = 300 $burst_rows", "the burst's 300 audit rows");
my $transactions = $node->safe_psql('postgres', "SELECT count(DISTINCT xmin::text) $burst_rows");
cmp_ok(300 / $transactions, '>=', 3,
	"300 look-ups' audit rows were written in $transactions of the worker's transactions");

$node->stop;
done_testing();
