# A claim in flight for longer than enkash.stale_claim_ms counts as unknown
# even though its session is still alive (hung, say): the next call with
# the key asks EnKash first instead of being refused as "in flight", finds
# the load once EnKash has made it, and sends nothing.  The audit log
# answers the stale request "unknown", then with its real answer when it
# comes.  One credit.
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

my $load_path = '/api/v0/partner/enKashCard/balance';
my $load = "SELECT enkash_load_balance('CASANDBOX1', 'EKCSANDBOX1', 7, 'STALE-1') #>> '{}'";
sub loads_sent
{
	my $requests = sandbox($url, 'GET', '/__sandbox/requests');
	return $requests =~ /"\Q$load_path\E"\s*:\s*(\d+)/ ? $1 : 0;
}
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

# Within enkash.stale_claim_ms the same call is refused as in flight.
my ($rc, $out, $err) = $node->psql('postgres', $load);
like($err, qr/is being sent by another session right now/, 'at first, a second call is refused: in flight');

# Past it, the claim counts as unknown: EnKash is asked (the look-up waits
# its turn behind the load, 6 s too), has the load, and nothing is sent.
usleep(1_500_000);
($rc, $out, $err) = $node->psql('postgres', $load);
is($rc, 0, 'past enkash.stale_claim_ms the second call succeeds');
like($err, qr/EnKash already has the load with reference "STALE-1"; it was not sent again/,
	'because EnKash was asked and had the load');
$first->finish;
like($stdout, qr/successful/, 'the first session got its answer too');

is(loads_sent(), 1, 'one load request in all');
my $ledger = sandbox($url, 'GET', '/__sandbox/ledger');
my ($credits) = $ledger =~ /"reference":"STALE-1","count":(\d+)/;
is($credits, 1, 'one credit');
is(key_state(), 'succeeded', 'the key is succeeded');
is($node->safe_psql('postgres',
	"SELECT string_agg(outcome || coalesce(':' || sqlstate, ''), ' ' ORDER BY id) FROM enkash.audit_log "
	  . "WHERE idempotency_key = 'STALE-1' AND endpoint = 'load_balance'"),
	'sent unknown:EK006 ok', 'the audit log: the request, "unknown" when it went stale, then its answer');

$node->stop;
done_testing();
