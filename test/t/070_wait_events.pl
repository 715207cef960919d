# From PostgreSQL 17 on, pg_stat_activity names what an enkash process waits
# for: a session waiting on EnKash's answer shows wait event "EnkashCall",
# the launcher between its rounds "EnkashLauncher".  Before 17 an extension's
# waits can have no name of their own (all show as "Extension"), so the test
# has nothing to check there.
use strict;
use warnings;
use lib $ENV{ENKASH_TAP_LIB};
use EnkashTest;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);

my $node = enkash_node('wait_events');
my $version = $node->safe_psql('postgres', 'SHOW server_version_num');
if ($version < 170000)
{
	my $release = $node->safe_psql('postgres', 'SHOW server_version');
	$node->stop;
	plan skip_all => "PostgreSQL $release: named wait events for extensions (WaitEventExtensionNew) came in 17";
}

ok($node->poll_query_until('postgres',
	"SELECT count(*) > 0 FROM pg_stat_activity WHERE wait_event = 'EnkashLauncher'"),
	'the launcher waits under EnkashLauncher');

sandbox('POST', '/__sandbox/reset', '{}');
$node->safe_psql('postgres', "SELECT enkash_get_card_account('CASANDBOX1')");
sandbox('POST', '/__sandbox/faults', '{"latency_ms": 5000}');
my ($stdout, $stderr) = ('', '');
my $h = IPC::Run::start(
	[ 'psql', '-X', '-d', $node->connstr('postgres'), '-c',
	  "SELECT enkash_get_card_account('CASANDBOX1')->>'cardAccountId'" ],
	'>', \$stdout, '2>', \$stderr);
my $seen = '';
for (1 .. 40)
{
	$seen = $node->safe_psql('postgres',
		"SELECT wait_event_type || ' ' || wait_event FROM pg_stat_activity WHERE query LIKE '%enkash_get_card_account%' AND pid <> pg_backend_pid() AND state = 'active'");
	last if $seen eq 'Extension EnkashCall';
	usleep(100_000);
}
is($seen, 'Extension EnkashCall', 'a session waiting on EnKash shows wait event EnkashCall');
$h->finish;
like($stdout, qr/CASANDBOX1/, 'the call then completes');
sandbox('POST', '/__sandbox/faults', '{"clear": true}');

$node->stop;
done_testing();
