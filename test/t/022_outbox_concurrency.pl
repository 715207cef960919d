# One enkash sender sends queued requests concurrently: with EnKash taking
# 200 ms per call and enkash.max_concurrency = 16, 64 queued loads are in
# flight up to 16 at a time (the sandbox's max_in_flight), on at most 16
# connections that the next batch reuses, and finish in a fraction of the
# time one at a time would take.  Exactly one credit per reference.  A
# reload to enkash.max_concurrency = 4 takes effect without a restart.
use strict;
use warnings;
use lib $ENV{ENKASH_TAP_LIB};
use EnkashTest;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);

my $url = start_private_sandbox();
my $node = enkash_node('concurrency', sandbox_url => $url, conf => <<'CONF');
enkash.max_concurrency = 16
CONF

is($node->safe_psql('postgres',
	"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'enkash sender'"),
	'1', 'one sender process');

# A token first, so that the batches below are the loads alone.
$node->safe_psql('postgres', "SELECT enkash_get_card_account('CASANDBOX1')");
sandbox($url, 'POST', '/__sandbox/reset', '{}');
sandbox($url, 'POST', '/__sandbox/faults', '{"latency_ms": 200}');

sub batch
{
	my ($tag) = @_;
	my $started = time;
	$node->safe_psql('postgres',
		"SELECT count(enkash_load_balance_async('CASANDBOX1', 'EKCSANDBOX1', 1, '$tag-' || g)) "
		  . "FROM generate_series(1, 64) g");
	$node->poll_query_until('postgres',
		"SELECT count(*) = 64 FROM enkash.requests WHERE idempotency_key LIKE '$tag-%' AND state = 'succeeded'")
	  or diag($node->safe_psql('postgres', 'SELECT state, count(*) FROM enkash.requests GROUP BY state'));
	return time - $started;
}

my $seconds = batch('CONC-A');
my $requests = sandbox($url, 'GET', '/__sandbox/requests');
my ($max_in_flight) = $requests =~ /"max_in_flight":(\d+)/;
my ($connections) = $requests =~ /"connections":(\d+)/;
note("64 loads at 200 ms each, concurrency 16: ${seconds}s, max_in_flight $max_in_flight, connections $connections");
cmp_ok($max_in_flight, '>', 8, 'the sandbox saw many requests at once from one sender');
cmp_ok($max_in_flight, '<=', 16, 'never more than enkash.max_concurrency');
cmp_ok($seconds, '<', 64 * 0.2 / 2, 'far quicker than one at a time');
# the control calls of this test open connections of their own
cmp_ok($connections, '<=', 16 + 3, 'at most one connection per transfer in flight');

sandbox($url, 'POST', '/__sandbox/reset', '{}');    # (faults too)
sandbox($url, 'POST', '/__sandbox/faults', '{"latency_ms": 200}');
batch('CONC-B');
$requests = sandbox($url, 'GET', '/__sandbox/requests');
($connections) = $requests =~ /"connections":(\d+)/;
($max_in_flight) = $requests =~ /"max_in_flight":(\d+)/;
cmp_ok($max_in_flight, '>', 8, 'the second batch is concurrent too');
cmp_ok($connections, '<=', 2, 'and reuses the connections of the first');

# EnKash's side: one credit per reference of the second batch (the ledger
# was reset in between), and the first batch's keys all succeeded.
my $ledger = sandbox($url, 'GET', '/__sandbox/ledger');
my %count;
$count{$1} = $2 while $ledger =~ /"reference":"(CONC-B-[^"]*)","count":(\d+)/g;
is(scalar(keys %count), 64, '64 references credited');
is(scalar(grep { $count{$_} != 1 } keys %count), 0, 'each exactly once');
is($node->safe_psql('postgres',
	"SELECT count(*) FROM enkash.idempotency_keys WHERE key LIKE 'CONC-%' AND state = 'succeeded'"),
	'128', 'every key succeeded');
is($node->safe_psql('postgres',
	"SELECT count(*) FROM enkash.requests WHERE idempotency_key LIKE 'CONC-%' "
	  . "AND (http_status IS DISTINCT FROM 200 OR latency_ms < 150)"),
	'0', 'each row records its HTTP status and latency');

# enkash.max_concurrency follows a reload (SIGHUP), without a restart.
$node->safe_psql('postgres', 'ALTER SYSTEM SET enkash.max_concurrency = 4; SELECT pg_reload_conf()');
$node->poll_query_until('postgres', "SELECT current_setting('enkash.max_concurrency') = '4'")
  or die 'the reload did not take';
sleep 2;    # the sender reads it at the top of its loop (it wakes at least once a second)
sandbox($url, 'POST', '/__sandbox/reset', '{}');
sandbox($url, 'POST', '/__sandbox/faults', '{"latency_ms": 200}');
batch('CONC-C');
($max_in_flight) = sandbox($url, 'GET', '/__sandbox/requests') =~ /"max_in_flight":(\d+)/;
is($max_in_flight, 4, 'after a reload to 4 the sender keeps exactly 4 in flight');

$node->stop;
done_testing();
