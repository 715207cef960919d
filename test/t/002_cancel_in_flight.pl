# pg_cancel_backend and pg_terminate_backend stop a call that is waiting on
# EnKash within about a second, and the backend stays healthy afterwards.
use strict;
use warnings;
use lib $ENV{ENKASH_TAP_LIB};
use EnkashTest;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

my $node = enkash_node('cancel');
sandbox('POST', '/__sandbox/reset', '{}');
$node->safe_psql('postgres', "SELECT enkash_get_card_account('CASANDBOX1')");
sandbox('POST', '/__sandbox/faults', '{"latency_ms": 10000}');

# Starts a call in another session; returns (harness, pid of its backend).
sub start_slow_call
{
	my ($stdout, $stderr) = ('', '');
	my $h = IPC::Run::start(
		[ 'psql', '-X', '-d', $node->connstr('postgres'), '-c',
		  "SELECT pg_backend_pid(), enkash_get_card_account('CASANDBOX1')" ],
		'>', \$stdout, '2>', \$stderr);
	my $pid;
	for (1 .. 100)
	{
		$pid = $node->safe_psql('postgres',
			"SELECT pid FROM pg_stat_activity WHERE query LIKE '%enkash_get_card_account%' AND pid <> pg_backend_pid() AND state = 'active'");
		last if $pid;
		usleep(100_000);
	}
	usleep(300_000);    # let the request reach the sandbox
	return ($h, $pid, \$stderr);
}

my ($h, $pid, $stderr) = start_slow_call();
ok($pid, 'the call is in flight');
is($node->safe_psql('postgres',
	"SELECT wait_event_type FROM pg_stat_activity WHERE pid = $pid"),
	'Extension', 'it reports a wait event while waiting on EnKash');
my $t0 = time;
$node->safe_psql('postgres', "SELECT pg_cancel_backend($pid)");
$h->finish;
my $elapsed = time - $t0;
like($$stderr, qr/canceling statement due to user request/, 'pg_cancel_backend cancels it');
cmp_ok($elapsed, '<', 3, "cancelled promptly (${elapsed}s against a 10 s answer)");

($h, $pid, $stderr) = start_slow_call();
$t0 = time;
$node->safe_psql('postgres', "SELECT pg_terminate_backend($pid)");
$h->finish;
$elapsed = time - $t0;
like($$stderr, qr/terminating connection due to administrator command/, 'pg_terminate_backend ends it');
cmp_ok($elapsed, '<', 3, "terminated promptly (${elapsed}s)");

sandbox('POST', '/__sandbox/faults', '{"clear": true}');
is($node->safe_psql('postgres', "SELECT enkash_get_card_account('CASANDBOX1')->>'cardAccountId'"),
	'CASANDBOX1', 'calls work after the interruptions');

$node->stop;
done_testing();
