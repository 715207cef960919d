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

my $load_path = '/api/v0/partner/enKashCard/balance';
my $ref = 'KILLED-1';
my $load = "SELECT enkash_load_balance('CASANDBOX1', 'EKCSANDBOX1', 9, '$ref') #>> '{}'";
sub loads_sent
{
	my $requests = sandbox($url, 'GET', '/__sandbox/requests');
	return $requests =~ /"\Q$load_path\E"\s*:\s*(\d+)/ ? $1 : 0;
}
sub credits
{
	my $ledger = sandbox($url, 'GET', "/__sandbox/ledger?reference=$_[0]");
	return $ledger =~ /"count"\s*:\s*(\d+)/ ? $1 : 0;
}

$node->safe_psql('postgres', "SELECT enkash_get_card_account('CASANDBOX1')");   # a token

# The worker's commit of this key waits for an advisory lock the test holds
# (a deferred trigger runs at commit, after the batch was processed).
$node->safe_psql('postgres', <<'SQL');
CREATE FUNCTION public.hold_commit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	IF NEW.key LIKE 'KILLED-%' THEN
		PERFORM pg_catalog.pg_advisory_xact_lock(4242);
	END IF;
	RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER hold_commit AFTER INSERT ON enkash.idempotency_keys
	DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION public.hold_commit();
SQL

my ($hout, $herr) = ('', '');
my $holder = IPC::Run::start(
	[ 'psql', '-X', '-At', '-d', $node->connstr('postgres') . ' application_name=holder',
	  '-c', 'SELECT pg_advisory_lock(4242), pg_sleep(300)' ],
	'>', \$hout, '2>', \$herr);
$node->poll_query_until('postgres',
	"SELECT count(*) = 1 FROM pg_locks WHERE locktype = 'advisory' AND objid = 4242 AND granted")
  or die 'the holder did not take its lock';

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
$node->safe_psql('postgres',
	"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'holder'");
$holder->finish;

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

is(credits($ref), 1, 'EnKash credited the reference exactly once');
is($node->safe_psql('postgres', "SELECT state FROM enkash.idempotency_keys WHERE key = '$ref'"),
	'succeeded', 'the key is succeeded');
my $sent_rows = $node->safe_psql('postgres',
	"SELECT count(*) FROM enkash.audit_log WHERE idempotency_key = '$ref' AND outcome = 'sent'");
is($sent_rows, loads_sent(), 'every load request sent has its "sent" audit row');
is($node->safe_psql('postgres',
	"SELECT count(*) FROM enkash.audit_log s WHERE s.idempotency_key = '$ref' AND s.outcome = 'sent' "
	  . "AND NOT EXISTS (SELECT FROM enkash.audit_log a WHERE a.sent_id = s.id)"),
	0, 'and every one is answered');

$node->stop;
done_testing();
