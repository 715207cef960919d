# Failover in the middle of a payroll, with a synchronous standby: 1,000
# queued loads and eight sessions making loads of their own, EnKash taking
# 20 ms a call; the primary is killed with SIGKILL mid-run and the standby
# promoted.  The new primary's workers finish the queue, and each load the
# sessions left unknown is called again.  Every reference EnKash credited is
# known to the new primary (the claim reached the standby before the request
# left), none is credited twice, and every load recorded on the new primary
# ends succeeded with exactly one credit.
use strict;
use warnings;
use lib $ENV{ENKASH_TAP_LIB};
use EnkashTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep time);

my $url = start_private_sandbox();
sandbox($url, 'POST', '/__sandbox/faults', '{"latency_ms": 20}');
# No look-up-first window after the promotion (enkash.check_after_failover):
# the synchronous standby alone must keep every load exactly once (063 shows
# the window at work after an asynchronous one).
my $primary = enkash_node('primary', sandbox_url => $url, allows_streaming => 1, conf => <<'CONF');
enkash.check_after_failover = 0
enkash.unknown_grace_ms = 500
enkash.retry_base_ms = 50
enkash.retry_max_ms = 500
CONF
my $standby = enkash_standby($primary, 'standby', synchronous => 1);

$primary->safe_psql('postgres', "SELECT enkash_get_card_account('CASANDBOX1')");    # a token

# The payroll: 1,000 queued loads, committed (so on the standby too).
$primary->safe_psql('postgres', q{
	SELECT count(enkash_load_balance_async('CASANDBOX1', 'EKCSANDBOX1', 1, 'FO-Q-' || g))
	FROM generate_series(1, 1000) g});

# Eight sessions making loads until the primary goes.
my ($bench_out, $bench_err) = ('', '');
my $script = tmp_file('failover_loads.sql');
open my $fh, '>', $script or die;
print $fh <<'SQL';
\set k random(1, 1000000000)
SELECT enkash_load_balance('CASANDBOX1', 'EKCSANDBOX1', 1, 'FO-S-' || :k);
SQL
close $fh;
my $bench = IPC::Run::start(
	[ 'pgbench', '--no-vacuum', '--client=8', '--jobs=8', '--time=60', '--file', $script,
	  '-d', $primary->connstr('postgres') ],
	'>', \$bench_out, '2>', \$bench_err);

# Mid-run: about 300 loads have reached EnKash, and sessions' loads are on
# the wire.
my $until = time + 60;
usleep(100_000) while loads_sent($url) < 300 && time < $until;
$primary->poll_query_until('postgres',
	"SELECT count(*) >= 2 FROM enkash.idempotency_keys WHERE key LIKE 'FO-S-%' AND state = 'in_flight'");
cmp_ok(loads_sent($url), '>=', 300, 'loads were reaching EnKash when the primary was killed');
# The whole primary at once: the postmaster and every process it started.
my $postmaster = $primary->{_pid};
kill 'STOP', $postmaster;
system('pkill', '-KILL', '-P', $postmaster);
kill 'KILL', $postmaster;
$primary->{_pid} = undef;    # gone: nothing to stop at the end
$bench->finish;

promote_and_wait($standby);

# The new primary finishes the queue.
ok($standby->poll_query_until('postgres',
	"SELECT count(*) = 0 FROM enkash.requests WHERE state NOT IN ('succeeded', 'failed', 'dead')"),
	'the new primary finished the queue');

# Each session's load left in flight or unknown is called again, as its
# caller would: EnKash is asked before anything is resent.
for (1 .. 20)
{
	my @open = split /\n/, $standby->safe_psql('postgres',
		"SELECT key FROM enkash.idempotency_keys WHERE key LIKE 'FO-S-%' "
		  . "AND state NOT IN ('succeeded', 'failed')");
	last unless @open;
	usleep(600_000);    # the grace
	$standby->psql('postgres', "SELECT enkash_load_balance('CASANDBOX1', 'EKCSANDBOX1', 1, '$_')")
	  for @open;
}
is($standby->safe_psql('postgres',
	"SELECT count(*) FROM enkash.idempotency_keys WHERE key LIKE 'FO-%' AND state <> 'succeeded'"),
	'0', 'every load recorded on the new primary ends succeeded');

my $credits = credits_by_prefix($url, 'FO-');
my %keys = map { $_ => 1 } split /\n/, $standby->safe_psql('postgres',
	"SELECT key FROM enkash.idempotency_keys WHERE key LIKE 'FO-%'");
is(join(' ', grep { $credits->{$_} > 1 } sort keys %$credits), '', 'no reference credited twice');
is(join(' ', grep { !$keys{$_} } sort keys %$credits), '',
	'every reference EnKash credited is known to the new primary');
is(join(' ', grep { ($credits->{$_} // 0) != 1 } sort keys %keys), '',
	'every load recorded on the new primary was credited exactly once');
is(scalar(grep { /^FO-Q-/ } keys %$credits), 1000, 'the whole payroll was credited');
cmp_ok(scalar(grep { /^FO-S-/ } keys %$credits), '>', 0, 'and the sessions\' loads');
is($standby->safe_psql('postgres',
	"SELECT count(*) FROM enkash.requests WHERE state = 'succeeded' AND idempotency_key LIKE 'FO-Q-%'"),
	'1000', 'every queued row succeeded');

$standby->stop;
done_testing();
