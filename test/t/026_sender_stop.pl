# A sender told to stop (a fast shutdown) stops at once, without waiting
# for EnKash's answers: the row it claimed and held ready, not sent, goes
# back to the queue (its key released, the attempt not counted) and is sent
# at once after the restart; the transfers that were in flight are left
# "sending", checked with EnKash after the restart, and not sent again.
# Each reference is credited once.  pg_terminate_backend of the sender
# alone does the same, and the launcher starts another.
use strict;
use warnings;
use lib $ENV{ENKASH_TAP_LIB};
use EnkashTest;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

my $url = start_private_sandbox();
# 4 places and 1 row held ready (a quarter of max_concurrency).  An unknown
# outcome is checked once EnKash has surely finished (latency 3 s).
my $node = enkash_node('sender_stop', sandbox_url => $url, conf => <<'CONF');
enkash.max_concurrency = 4
enkash.unknown_grace_ms = 4000
CONF

my $load_path = '/api/v0/partner/enKashCard/balance';
my $lookup_path = '/api/v0/partner/enKashCard/transaction/all';

sub sent_to
{
	my ($path) = @_;
	my $requests = sandbox($url, 'GET', '/__sandbox/requests');
	return $requests =~ /"\Q$path\E"\s*:\s*(\d+)/ ? $1 : 0;
}

# "sent" audit rows of these keys with no answer row naming them.
sub unanswered
{
	my ($prefix) = @_;
	return $node->safe_psql('postgres',
		"SELECT count(*) FROM enkash.audit_log s WHERE s.idempotency_key LIKE '$prefix%' "
		  . "AND s.outcome = 'sent' AND NOT EXISTS (SELECT FROM enkash.audit_log a WHERE a.sent_id = s.id)");
}

sub enqueue
{
	my ($prefix, $n) = @_;
	$node->safe_psql('postgres',
		"SELECT count(enkash_load_balance_async('CASANDBOX1', 'EKCSANDBOX1', 1, '$prefix-' || g)) "
		  . "FROM generate_series(1, $n) g");
}

sub wait_all_succeeded
{
	my ($prefix, $n) = @_;
	$node->poll_query_until('postgres',
		"SELECT count(*) = $n FROM enkash.requests WHERE idempotency_key LIKE '$prefix-%' AND state = 'succeeded'")
	  or diag($node->safe_psql('postgres',
		"SELECT string_agg(idempotency_key || '=' || state, ' ') FROM enkash.requests"));
}

$node->safe_psql('postgres', "SELECT enkash_get_card_account('CASANDBOX1')");   # a token

# 12 loads, 3 s each: 4 in flight and 1 held ready when the stop comes.
sandbox($url, 'POST', '/__sandbox/faults', '{"latency_ms": 3000}');
my $loads_before = sent_to($load_path);
enqueue('STOP', 12);
$node->poll_query_until('postgres',
	"SELECT count(*) = 5 FROM enkash.requests WHERE idempotency_key LIKE 'STOP-%' AND state = 'sending'")
  or die 'the sender did not claim 4 + 1 rows';
$node->stop('fast');

my $log = slurp_file($node->logfile);
like($log, qr/enkash sender: stopping; 1 queued requests it had not sent yet are back in the queue/,
	'the row held ready was put back');
like($log, qr/enkash sender: stopping with 4 requests still waiting for EnKash's answer/,
	'the sender did not wait for the 4 transfers in flight');

$node->start;
wait_all_succeeded('STOP', 12);
like(slurp_file($node->logfile), qr/4 queued requests were being sent by a sender that stopped/,
	'after the restart the 4 were found "sending"');
is(sent_to($lookup_path), 4, 'and each was checked with EnKash');
is(sent_to($load_path) - $loads_before, 12, 'one load request per reference: none sent twice');
my $count = credits_by_prefix($url, 'STOP-');
is(scalar(keys %$count), 12, 'every reference was credited');
is(join(' ', grep { $count->{$_} != 1 } sort keys %$count), '', 'each exactly once');
is(unanswered('STOP-'), '0', 'every request that left has an answer row ("unknown" for the 4 cut off)');
is($node->safe_psql('postgres', q{
	SELECT string_agg(r.attempts::text, ' ')
	FROM enkash.requests r JOIN enkash.audit_log a ON a.idempotency_key = r.idempotency_key
	WHERE r.idempotency_key LIKE 'STOP-%' AND a.sqlstate = '57P01' AND a.outcome = 'failed'}),
	'1', 'the audit log shows the load put back unsent, whose attempt was not counted');

# pg_terminate_backend of the sender alone: the same, and the launcher
# starts another sender, which sends the rest.
$loads_before = sent_to($load_path);
my $lookups_before = sent_to($lookup_path);
my $log_at = -s $node->logfile;
enqueue('TERM', 12);
$node->poll_query_until('postgres',
	"SELECT count(*) = 5 FROM enkash.requests WHERE idempotency_key LIKE 'TERM-%' AND state = 'sending'")
  or die 'the sender did not claim 4 + 1 rows';
my $sender_sql = "SELECT pid FROM pg_stat_activity WHERE backend_type = 'enkash sender'";
my $first = $node->safe_psql('postgres', $sender_sql);
$node->safe_psql('postgres', "SELECT pg_terminate_backend($first)");
wait_all_succeeded('TERM', 12);
my $second = $node->safe_psql('postgres', $sender_sql);
ok($second && $second != $first, 'another sender took over');
like(substr(slurp_file($node->logfile), $log_at),
	qr/enkash sender: stopping; 1 queued requests it had not sent yet are back in the queue/,
	'the terminated sender put its ready row back');
is(sent_to($lookup_path) - $lookups_before, 4, 'only the 4 on the wire were checked with EnKash');
is(sent_to($load_path) - $loads_before, 12, 'none was sent twice');
$count = credits_by_prefix($url, 'TERM-');
is(join(' ', grep { $count->{$_} != 1 } sort keys %$count), '', 'each reference credited once');
is(scalar(keys %$count), 12, 'all 12');
is(unanswered('TERM-'), '0', 'every request that left has an answer row');
is($node->safe_psql('postgres',
	"SELECT count(*) FROM enkash.audit_log WHERE idempotency_key LIKE 'TERM-%' AND outcome = 'unknown' "
	  . "AND message LIKE 'the session sending this call ended%'"),
	'4', 'the 4 cut off by the terminated sender are answered "unknown"');

# A fast shutdown while EnKash takes 30 s to answer: a session's load, a
# queued load on the wire, and a queued load whose key's outcome is unknown,
# being checked with EnKash on the ordinary path.  The server is down long
# before the answers, and the check cancelled to stop is no error.
sandbox($url, 'POST', '/__sandbox/faults', '{"latency_ms": 30000}');
$node->psql('postgres', "SET statement_timeout = '500ms'; "
	  . "SELECT enkash_load_balance('CASANDBOX1', 'EKCSANDBOX1', 1, 'SLOW-unknown')");
ok($node->poll_query_until('postgres',
	"SELECT state = 'unknown' FROM enkash.idempotency_keys WHERE key = 'SLOW-unknown'"),
	'a load timed out: its outcome is unknown');
usleep(4_100_000);    # enkash.unknown_grace_ms: it may be checked now
$lookups_before = sent_to($lookup_path);
$node->safe_psql('postgres',
	"SELECT enkash_load_balance_async('CASANDBOX1', 'EKCSANDBOX1', 1, 'SLOW-unknown'), "
	  . "enkash_load_balance_async('CASANDBOX1', 'EKCSANDBOX1', 1, 'SLOW-queued')");
my ($stdout, $stderr) = ('', '');
my $session = IPC::Run::start(
	[ 'psql', '-X', '-d', $node->connstr('postgres'), '-c',
	  "SELECT enkash_load_balance('CASANDBOX1', 'EKCSANDBOX1', 1, 'SLOW-sync')" ],
	'>', \$stdout, '2>', \$stderr);
$node->poll_query_until('postgres',
	"SELECT count(*) = 2 FROM enkash.idempotency_keys WHERE key IN ('SLOW-queued', 'SLOW-sync') AND state = 'in_flight'")
  or die 'the slow loads did not leave';
for (1 .. 100)
{
	last if sent_to($lookup_path) > $lookups_before;
	usleep(100_000);
}
is(sent_to($lookup_path), $lookups_before + 1, 'the unknown load is being checked with EnKash');
usleep(300_000);    # all on the wire
$log_at = -s $node->logfile;
my $t0 = time;
$node->stop('fast');
my $seconds = time - $t0;
$session->finish;
cmp_ok($seconds, '<', 8, sprintf('the fast shutdown took %.1f s against 30 s answers', $seconds));
like($stderr, qr/terminating connection due to administrator command/, 'the session was ended');
my $stop_log = substr(slurp_file($node->logfile), $log_at);
like($stop_log, qr/enkash sender: stopping with 1 requests still waiting for EnKash's answer/,
	'the sender left its transfer in flight');
unlike($stop_log, qr/ERROR:  canceling statement due to user request/,
	'the check it cancelled to stop is not logged as an error');

done_testing();
