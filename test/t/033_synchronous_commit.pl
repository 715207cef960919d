# The claim of a money call is on disk before its request leaves, even with
# synchronous_commit = off in postgresql.conf and for the database, and a
# WAL writer that flushes only every 10 s: when the request reaches EnKash,
# the WAL is flushed past the claim's commit record (pg_walinspect finds
# it); an immediate stop right then keeps the key, and the next call
# checks with EnKash instead of sending again.  For a load from a session
# and for one sent by the outbox sender.  One credit each.
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
$node->safe_psql('postgres', 'CREATE EXTENSION pg_walinspect');
my $wal_start = $node->safe_psql('postgres', 'SELECT pg_current_wal_insert_lsn()');


# Waits until the load of reference ref reaches the sandbox, notes how far
# the WAL is flushed then and the claim's transaction, then stops the
# server at once and starts it again.  Returns whether the claim's commit
# record (its transaction's, or its parent's: the worker claims in a
# subtransaction) lies within what was flushed.
sub crash_when_load_arrives
{
	my ($sent, $ref) = @_;
	for (1 .. 500)
	{
		last if loads_sent($url) > $sent;
		usleep(20_000);
	}
	die 'the load did not reach the sandbox' unless loads_sent($url) > $sent;
	my ($flushed, $xid) = split /\|/, $node->safe_psql('postgres',
		"SELECT pg_current_wal_flush_lsn(), "
		  . "(SELECT xmin FROM enkash.idempotency_keys WHERE key = '$ref')");
	$node->stop('immediate');
	$node->start;
	note "claim $ref: transaction $xid, WAL flushed to $flushed when the request arrived";
	return 'no claim' if ($xid // '') eq '';
	return $node->safe_psql('postgres',
		"SELECT bool_and(end_lsn <= '$flushed') FROM pg_get_wal_records_info('$wal_start', "
		  . "pg_current_wal_flush_lsn()) WHERE resource_manager = 'Transaction' "
		  . "AND record_type = 'COMMIT' AND (xid = '$xid' OR description ~ 'subxacts:[ 0-9]* $xid([^0-9]|\$)')");
}

sub load_after_restart
{
	my ($ref) = @_;
	for (1 .. 30)
	{
		my ($rc, $out, $err) = $node->psql('postgres',
			"SELECT enkash_load_balance('CASANDBOX1', 'EKCSANDBOX1', 7, '$ref')");
		return $err if $rc == 0;
		die "unexpected: $err" unless $err =~ /not running|could not be recorded|too soon/;
		sleep 1;
	}
	return 'no success';
}

$node->safe_psql('postgres', "SELECT enkash_get_card_account('CASANDBOX1')");   # a token
sandbox($url, 'POST', '/__sandbox/faults', '{"latency_ms": 2000}');

# 1. A load from a session.
my ($out, $err) = ('', '');
my $h = IPC::Run::start(
	[ 'psql', '-X', '-At', '-d', $node->connstr('postgres'), '-c',
	  "SELECT enkash_load_balance('CASANDBOX1', 'EKCSANDBOX1', 7, 'SYNC-1')" ],
	'>', \$out, '2>', \$err);
is(crash_when_load_arrives(0, 'SYNC-1'), 't',
	'when the load reached EnKash, its claim\'s commit was flushed');
$h->finish;
is($node->safe_psql('postgres', "SELECT count(*) FROM enkash.idempotency_keys WHERE key = 'SYNC-1'"),
	1, 'after an immediate stop the session\'s key is there');
sleep 3;    # the load lands at the sandbox
like(load_after_restart('SYNC-1'), qr/EnKash already has the load with reference "SYNC-1"; it was not sent again/,
	'the next call asks EnKash and sends nothing');
is(credits($url, 'SYNC-1'), 1, 'one credit for SYNC-1');

# 2. A load queued for the outbox sender.
$node->safe_psql('postgres',
	"SELECT enkash_load_balance_async('CASANDBOX1', 'EKCSANDBOX1', 7, 'SYNC-2')");
is(crash_when_load_arrives(1, 'SYNC-2'), 't',
	'when the queued load reached EnKash, its claim\'s commit was flushed');
is($node->safe_psql('postgres', "SELECT count(*) FROM enkash.idempotency_keys WHERE key = 'SYNC-2'"),
	1, 'after an immediate stop the queued load\'s key is there');
sandbox($url, 'POST', '/__sandbox/faults', '{"clear": true}');
sleep 3;
ok($node->poll_query_until('postgres',
	"SELECT state = 'succeeded' FROM enkash.requests WHERE idempotency_key = 'SYNC-2'"),
	'the queued load ends succeeded, checked with EnKash');
is(credits($url, 'SYNC-2'), 1, 'one credit for SYNC-2');
is(loads_sent($url), 2, 'one load request per reference');

$node->stop;
done_testing();
