# A claim of a live session is trusted for as long as its call can take
# by that session's timeouts, even past enkash.stale_claim_ms: a second
# call with the key meanwhile is refused as in flight and sends nothing.
# The first session gets its answer; one credit.  (A session hung past
# that deadline is overtaken: 032_fencing.pl.)
use strict;
use warnings;
use lib $ENV{ENKASH_TAP_LIB};
use EnkashTest;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);

my $url = start_private_sandbox();
my $node = enkash_node('stale_claim', sandbox_url => $url, conf => <<'CONF');
enkash.stale_claim_ms = 1000
CONF

my $load = "SELECT enkash_load_balance('CASANDBOX1', 'EKCSANDBOX1', 7, 'STALE-1') #>> '{}'";
sub key_state
{
	return $node->safe_psql('postgres', "SELECT state FROM enkash.idempotency_keys WHERE key = 'STALE-1'");
}

$node->safe_psql('postgres', "SELECT enkash_get_card_account('CASANDBOX1')");   # a token

# The first session's load takes 6 s at EnKash.
sandbox($url, 'POST', '/__sandbox/faults', '{"latency_ms": 6000}');
my ($stdout, $stderr) = ('', '');
my $first = IPC::Run::start([ 'psql', '-X', '-At', '-d', $node->connstr('postgres'), '-c', $load ],
	'>', \$stdout, '2>', \$stderr);
$node->poll_query_until('postgres',
	"SELECT state = 'in_flight' FROM enkash.idempotency_keys WHERE key = 'STALE-1'")
  or die 'the first load was not claimed';

# Past enkash.stale_claim_ms, but within the first session's timeouts, the
# same call is still refused as in flight.
usleep(1_500_000);
my ($rc, $out, $err) = $node->psql('postgres', $load);
like($err, qr/is being sent by another session right now/,
	'past enkash.stale_claim_ms a live session within its timeouts still holds the key');
$first->finish;
like($stdout, qr/successful/, 'the first session got its answer');

is(loads_sent($url), 1, 'one load request in all');
is(credits($url, 'STALE-1'), 1, 'one credit');
is(key_state(), 'succeeded', 'the key is succeeded');
is($node->safe_psql('postgres',
	"SELECT string_agg(outcome || coalesce(':' || sqlstate, ''), ' ' ORDER BY id) FROM enkash.audit_log "
	  . "WHERE idempotency_key = 'STALE-1' AND endpoint = 'load_balance'"),
	'sent ok', 'the audit log: the request and its answer');

$node->stop;
done_testing();
