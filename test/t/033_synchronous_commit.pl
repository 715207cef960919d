# The claim of a money call is on disk before its request leaves, even with
# synchronous_commit = off in postgresql.conf and for the database (and a
# WAL writer that flushes only every 10 s): when the request reaches
# EnKash, every bit of WAL written so far (the claim and its "sent" audit
# row are the last) has been flushed.  The same for a load sent by the
# outbox sender.  Then an immediate stop right after the request arrived
# keeps the key.
use strict;
use warnings;
use lib $ENV{ENKASH_TAP_LIB};
use EnkashTest;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);

my $url = start_private_sandbox();
my $node = enkash_node('sync_commit', sandbox_url => $url, conf => <<'CONF');
wal_writer_delay = 10s
autovacuum = off
enkash.unknown_grace_ms = 500
CONF
$node->safe_psql('postgres', 'ALTER SYSTEM SET synchronous_commit = off');
$node->safe_psql('postgres', 'ALTER DATABASE postgres SET synchronous_commit = off');
$node->restart;
is($node->safe_psql('postgres', 'SHOW synchronous_commit'), 'off', 'synchronous_commit is off');

my $load_path = '/api/v0/partner/enKashCard/balance';
sub loads_sent
{
	my $requests = sandbox($url, 'GET', '/__sandbox/requests');
	return $requests =~ /"\Q$load_path\E"\s*:\s*(\d+)/ ? $1 : 0;
}

# Waits until the next load reaches the sandbox; returns how many bytes of
# WAL were not yet flushed at that moment (a page header at most, if all is).
sub unflushed_when_load_arrives
{
	my ($sent) = @_;
	for (1 .. 200)
	{
		last if loads_sent() > $sent;
		usleep(20_000);
	}
	die 'the load did not reach the sandbox' unless loads_sent() > $sent;
	return $node->safe_psql('postgres',
		'SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), pg_current_wal_flush_lsn())');
}

$node->safe_psql('postgres', "SELECT enkash_get_card_account('CASANDBOX1')");   # a token
sleep 11;    # the WAL writer's last flush is behind us: the next is 10 s away

# 1. A load from a session.
sandbox($url, 'POST', '/__sandbox/faults', '{"latency_ms": 3000}');
my ($out, $err) = ('', '');
my $h = IPC::Run::start(
	[ 'psql', '-X', '-At', '-d', $node->connstr('postgres'), '-c',
	  "SELECT enkash_load_balance('CASANDBOX1', 'EKCSANDBOX1', 7, 'SYNC-1')" ],
	'>', \$out, '2>', \$err);
cmp_ok(unflushed_when_load_arrives(0), '<=', 40,
	'when the load reaches EnKash, its claim is flushed');
$h->finish;
is($node->safe_psql('postgres', "SELECT state FROM enkash.idempotency_keys WHERE key = 'SYNC-1'"),
	'succeeded', 'the load succeeded');

# 2. A load queued for the outbox sender.
sleep 11;
$node->safe_psql('postgres',
	"SELECT enkash_load_balance_async('CASANDBOX1', 'EKCSANDBOX1', 7, 'SYNC-2')");
cmp_ok(unflushed_when_load_arrives(1), '<=', 40,
	'when the queued load reaches EnKash, its claim is flushed');

# An immediate stop now: the key (claimed before the request left) survives.
$node->stop('immediate');
$node->start;
is($node->safe_psql('postgres', "SELECT count(*) FROM enkash.idempotency_keys WHERE key = 'SYNC-2'"),
	1, 'after an immediate stop the queued load\'s key is there');

sandbox($url, 'POST', '/__sandbox/faults', '{"clear": true}');
sleep 4;    # the load lands at the sandbox
is($node->poll_query_until('postgres',
	"SELECT state = 'succeeded' FROM enkash.requests WHERE idempotency_key = 'SYNC-2'"),
	1, 'the queued load ends succeeded, checked with EnKash');
is(sandbox_json($url, 'GET', '/__sandbox/ledger?reference=SYNC-2', 'count'), 1, 'one credit for SYNC-2');
is(sandbox_json($url, 'GET', '/__sandbox/ledger?reference=SYNC-1', 'count'), 1, 'one credit for SYNC-1');

$node->stop;
done_testing();
