# The enkash worker ended after it has processed a load's claim but before
# its batch commits (pg_terminate_backend while its commit waits on a lock):
# the claim is rolled back, and the load must not leave without a durable
# key.  The restarted worker claims it afresh; the load is sent once, the
# same call again is a replay, and EnKash credits the reference exactly
# once, with an audit record for every request sent.
use strict;
use warnings;
use lib $ENV{ENKASH_TAP_LIB};
use EnkashTest;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);

my $url = start_private_sandbox();
my $node = enkash_node('killed_mid_batch', sandbox_url => $url);

my $ref = 'KILLED-1';
my $load = "SELECT enkash_load_balance('CASANDBOX1', 'EKCSANDBOX1', 9, '$ref') #>> '{}'";

$node->safe_psql('postgres', "SELECT enkash_get_card_account('CASANDBOX1')");   # a token

# The worker's commit of this key waits for an advisory lock the test holds
# (a deferred trigger runs at commit, after the batch was processed).
my $holder = hold_worker_commits($node, 'KILLED-%');

my ($stdout, $stderr) = ('', '');
my $first = IPC::Run::start([ 'psql', '-X', '-At', '-d', $node->connstr('postgres'), '-c', $load ],
	'>', \$stdout, '2>', \$stderr);
$node->poll_query_until('postgres',
	"SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'enkash worker' "
	  . "AND wait_event_type = 'Lock'")
  or die 'the worker did not wait at its commit';

my $old_worker = $node->safe_psql('postgres',
	"SELECT pid FROM pg_stat_activity WHERE backend_type = 'enkash worker'");
$node->safe_psql('postgres', "SELECT pg_terminate_backend($old_worker)");
$node->poll_query_until('postgres',
	"SELECT count(*) = 0 FROM pg_stat_activity WHERE pid = $old_worker")
  or die 'the worker did not end';
release_worker_commits($node, $holder);

$first->finish;
note "first call: $stdout $stderr";

# The same call again, until it has a final answer (it may find the first
# call still in flight).
my ($rc, $out, $err);
for my $try (1 .. 30)
{
	($rc, $out, $err) = $node->psql('postgres', $load);
	last if $rc == 0;
	usleep(500_000);
}
is($rc, 0, 'the same load again succeeds') or diag $err;
($rc, $out, $err) = $node->psql('postgres', $load);
is($rc, 0, 'and once more');

is(credits($url, $ref), 1, 'EnKash credited the reference exactly once');
is($node->safe_psql('postgres', "SELECT state FROM enkash.idempotency_keys WHERE key = '$ref'"),
	'succeeded', 'the key is succeeded');
my $sent_rows = $node->safe_psql('postgres',
	"SELECT count(*) FROM enkash.audit_log WHERE idempotency_key = '$ref' AND outcome = 'sent'");
is($sent_rows, loads_sent($url), 'every load request sent has its "sent" audit row');
is($node->safe_psql('postgres',
	"SELECT count(*) FROM enkash.audit_log s WHERE s.idempotency_key = '$ref' AND s.outcome = 'sent' "
	  . "AND NOT EXISTS (SELECT FROM enkash.audit_log a WHERE a.sent_id = s.id)"),
	0, 'and every one is answered');

$node->stop;
done_testing();
