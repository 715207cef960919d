# A sender told to stop (a fast shutdown) puts back the rows it claimed and
# had not sent, and waits a few seconds for the answers of its transfers in
# flight: after the restart nothing needs checking with EnKash, every row
# succeeds on its first counted attempt, and each reference is credited
# once.  Transfers whose answers take longer than that are left "sending",
# checked with EnKash after the restart, and not sent again.
use strict;
use warnings;
use lib $ENV{ENKASH_TAP_LIB};
use EnkashTest;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);

my $url = start_private_sandbox();
# 4 places and 1 row held ready (a quarter of max_concurrency)
my $node = enkash_node('sender_stop', sandbox_url => $url, conf => <<'CONF');
enkash.max_concurrency = 4
enkash.unknown_grace_ms = 8000
CONF

my $load_path = '/api/v0/partner/enKashCard/balance';
my $lookup_path = '/api/v0/partner/enKashCard/transaction/all';

sub sent_to
{
	my ($path) = @_;
	my $requests = sandbox($url, 'GET', '/__sandbox/requests');
	return $requests =~ /"\Q$path\E"\s*:\s*(\d+)/ ? $1 : 0;
}

sub credits
{
	my ($prefix) = @_;
	my $ledger = sandbox($url, 'GET', '/__sandbox/ledger');
	my %count;
	$count{$1} = $2 while $ledger =~ /"reference":"(\Q$prefix\E[^"]*)","count":(\d+)/g;
	return \%count;
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

# 12 loads, 1 s each: 4 in flight and 1 held ready when the stop comes.
sandbox($url, 'POST', '/__sandbox/faults', '{"latency_ms": 1000}');
my $loads_before = sent_to($load_path);
enqueue('STOP', 12);
$node->poll_query_until('postgres',
	"SELECT count(*) = 5 FROM enkash.requests WHERE idempotency_key LIKE 'STOP-%' AND state = 'sending'")
  or die 'the sender did not claim 4 + 1 rows';
my $t0 = time;
$node->stop('fast');
my $stop_seconds = time - $t0;
note(sprintf('the fast stop took %.1f s', $stop_seconds));
cmp_ok($stop_seconds, '<', 30, 'the stop did not hang');

my $log = slurp_file($node->logfile);
like($log, qr/enkash sender: stopping; 1 queued requests it had not sent yet are back in the queue/,
	'the row held ready was put back');
unlike($log, qr/still waiting for EnKash's answer/, 'no transfer was left without its answer');
is(sent_to($load_path) - $loads_before, 4, 'the 4 transfers in flight were all that had left');

$node->start;
wait_all_succeeded('STOP', 12);
$log = slurp_file($node->logfile);
unlike($log, qr/were being sent by a sender that stopped/, 'after the restart no row was left "sending"');
is(sent_to($lookup_path), 0, 'nothing was checked with EnKash');
is($node->safe_psql('postgres',
	"SELECT string_agg(DISTINCT attempts::text, ' ') FROM enkash.requests WHERE idempotency_key LIKE 'STOP-%'"),
	'1', 'every row succeeded on its first counted attempt');
my $count = credits('STOP-');
is(scalar(keys %$count), 12, 'every reference was credited');
is(join(' ', grep { $count->{$_} != 1 } sort keys %$count), '', 'each exactly once');
is(sent_to($load_path) - $loads_before, 12, 'one load request per reference');
is($node->safe_psql('postgres',
	"SELECT count(*) FROM enkash.audit_log WHERE idempotency_key LIKE 'STOP-%' AND sqlstate = '57P01' AND outcome = 'failed'"),
	'1', 'the audit log says which load was put back unsent');

# Answers slower than the wait: those transfers stay "sending", are checked
# with EnKash after the restart, and are not sent again.
sandbox($url, 'POST', '/__sandbox/faults', '{"latency_ms": 6000}');
$loads_before = sent_to($load_path);
enqueue('SLOW', 4);
$node->poll_query_until('postgres',
	"SELECT count(*) = 4 FROM enkash.requests WHERE idempotency_key LIKE 'SLOW-%' AND state = 'sending'")
  or die 'the sender did not claim the slow rows';
$node->stop('fast');
like(slurp_file($node->logfile), qr/enkash sender: stopping with 4 requests still waiting for EnKash's answer/,
	'the sender said which transfers it left without an answer');
sandbox($url, 'POST', '/__sandbox/faults', '{"clear": true}');
$node->start;
wait_all_succeeded('SLOW', 4);
like(slurp_file($node->logfile), qr/4 queued requests were being sent by a sender that stopped/,
	'after the restart they were found "sending"');
is(sent_to($lookup_path), 4, 'and each was checked with EnKash');
is(sent_to($load_path) - $loads_before, 4, 'not sent again');
$count = credits('SLOW-');
is(join(' ', map { "$_=$count->{$_}" } sort keys %$count), 'SLOW-1=1 SLOW-2=1 SLOW-3=1 SLOW-4=1',
	'each credited once');

$node->stop;
done_testing();
