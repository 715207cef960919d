# A backend killed with SIGKILL while its load is in flight: the server
# restarts, the key (claimed before sending) is found in flight and marked
# unknown, and the next call asks EnKash before sending: one credit, whether
# the killed request landed or not.  The same for an immediate server stop.
use strict;
use warnings;
use lib $ENV{ENKASH_TAP_LIB};
use EnkashTest;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);

my $node = enkash_node('crash', conf => "enkash.unknown_grace_ms = 500\nrestart_after_crash = on\n");
sandbox('POST', '/__sandbox/reset', '{}');
# A token first (a restart loses it), so that the slow requests below are
# the loads themselves.
sub warm
{
	$node->safe_psql('postgres', "SELECT enkash_get_card_account('CASANDBOX1')");
}

sub key_state
{
	return $node->safe_psql('postgres',
		"SELECT state FROM enkash.idempotency_keys WHERE key = '$_[0]'");
}

# Starts a load in the background and waits until it is in flight.
sub start_load
{
	my ($ref) = @_;
	my ($out, $err) = ('', '');
	my $h = IPC::Run::start(
		[ 'psql', '-X', '-d', $node->connstr('postgres'), '-c',
		  "SELECT enkash_load_balance('CASANDBOX1', 'EKCSANDBOX1', 25, '$ref')" ],
		'>', \$out, '2>', \$err);
	for (1 .. 100)
	{
		last if key_state($ref) eq 'in_flight';
		usleep(100_000);
	}
	usleep(300_000);
	return $h;
}

sub load_once_more
{
	my ($ref) = @_;
	sleep 1;    # past enkash.unknown_grace_ms
	for (1 .. 30)
	{
		my ($ret, $out, $err) = $node->psql('postgres',
			"SELECT enkash_load_balance('CASANDBOX1', 'EKCSANDBOX1', 25, '$ref')");
		return 1 if $ret == 0;
		# the worker may still be starting after the restart
		die "unexpected: $err" unless $err =~ /not running|could not be recorded|too soon/;
		sleep 1;
	}
	return 0;
}

# 1. SIGKILL of the backend; the slow request lands afterwards.
warm();
sandbox('POST', '/__sandbox/faults', '{"latency_ms": 2000}');
my $h = start_load('CRASH-1');
is(key_state('CRASH-1'), 'in_flight', 'the key is claimed before the request leaves');
my $pid = $node->safe_psql('postgres',
	"SELECT pid FROM pg_stat_activity WHERE query LIKE '%CRASH-1%' AND pid <> pg_backend_pid()");
kill 'KILL', $pid;
$h->finish;
$node->poll_query_until('postgres', 'SELECT true') or die "server did not come back";
sleep 2;    # the killed request lands at the sandbox
sandbox('POST', '/__sandbox/faults', '{"clear": true}');
$node->poll_query_until('postgres',
	"SELECT state = 'unknown' FROM enkash.idempotency_keys WHERE key = 'CRASH-1'")
  or die "key not marked unknown";
is(key_state('CRASH-1'), 'unknown', 'after the crash the key is unknown');
ok(load_once_more('CRASH-1'), 'the next call succeeds');
is(key_state('CRASH-1'), 'succeeded', 'and the key is succeeded');
is(credits('CRASH-1'), 1, 'one credit: the load was not sent again');

# 2. SIGKILL of the backend; the request never landed (dropped unread).
warm();
sandbox('POST', '/__sandbox/faults', '{"latency_ms": 2000, "drop": {"count": 1, "after_apply": false}}');
$h = start_load('CRASH-2');
$pid = $node->safe_psql('postgres',
	"SELECT pid FROM pg_stat_activity WHERE query LIKE '%CRASH-2%' AND pid <> pg_backend_pid()");
kill 'KILL', $pid;
$h->finish;
$node->poll_query_until('postgres', 'SELECT true') or die "server did not come back";
sleep 2;
sandbox('POST', '/__sandbox/faults', '{"clear": true}');
$node->poll_query_until('postgres',
	"SELECT state = 'unknown' FROM enkash.idempotency_keys WHERE key = 'CRASH-2'")
  or die "key not marked unknown";
is(credits('CRASH-2'), 0, 'the killed request did not land');
ok(load_once_more('CRASH-2'), 'the next call succeeds');
is(credits('CRASH-2'), 1, 'one credit: sent once after EnKash said it had none');

# 3. An immediate server stop while a load is in flight.
warm();
sandbox('POST', '/__sandbox/faults', '{"latency_ms": 2000}');
$h = start_load('CRASH-3');
$node->stop('immediate');
$h->finish;
sleep 2;
sandbox('POST', '/__sandbox/faults', '{"clear": true}');
$node->start;
$node->poll_query_until('postgres',
	"SELECT state = 'unknown' FROM enkash.idempotency_keys WHERE key = 'CRASH-3'")
  or die "key not marked unknown";
ok(load_once_more('CRASH-3'), 'after the restart the call succeeds');
is(credits('CRASH-3'), 1, 'one credit after an immediate restart');

# The audit log kept a row for every request that left.
is($node->safe_psql('postgres',
	"SELECT string_agg(idempotency_key || ':' || outcome, ',' ORDER BY id) FROM enkash.audit_log "
	  . "WHERE idempotency_key LIKE 'CRASH-%' AND endpoint = 'load_balance'"),
	'CRASH-1:sent,CRASH-1:unknown,CRASH-2:sent,CRASH-2:unknown,CRASH-2:sent,CRASH-2:ok,CRASH-3:sent,CRASH-3:unknown',
	'a "sent" row per request that left (CRASH-2 twice), each answered: "unknown" for those the crash cut off');

$node->stop;
done_testing();
