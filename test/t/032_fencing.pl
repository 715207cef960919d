# A key whose owner can no longer be trusted to finish it (a session that
# was terminated, or one hung past the longest its call can take) is not
# asked about at once: EnKash may still be processing the first request,
# and would answer "not found".  It becomes unknown, and is checked with
# EnKash only after enkash.unknown_grace_ms.  An owner that was overtaken
# and answers late does not overwrite the new owner's record: its answer is
# audited as "superseded" with a warning.  One credit per reference.
use strict;
use warnings;
use lib $ENV{ENKASH_TAP_LIB};
use EnkashTest;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);

my $url = start_private_sandbox();
my $node = enkash_node('fencing', sandbox_url => $url, conf => <<'CONF');
enkash.stale_claim_ms = 1000
enkash.unknown_grace_ms = 5000
CONF
install_try_sql($node);

sub load { "SELECT enkash_load_balance('CASANDBOX1', 'EKCSANDBOX1', 7, '$_[0]')" }
sub key_state
{
	return $node->safe_psql('postgres', "SELECT state FROM enkash.idempotency_keys WHERE key = '$_[0]'");
}
sub faults { sandbox($url, 'POST', '/__sandbox/faults', $_[0]) }

# Starts a load in another session; returns its handle, pid and stderr
# once its request has reached EnKash.
sub start_load
{
	my ($ref, $settings) = @_;
	my ($out, $err) = ('', '');
	my $sent = loads_sent($url);
	my $h = IPC::Run::start(
		[ 'psql', '-X', '-At', '-d', $node->connstr('postgres'), '-c', ($settings // '') . load($ref) ],
		'>', \$out, '2>', \$err);
	my $pid = '';
	for (1 .. 400)
	{
		$pid = $node->safe_psql('postgres',
			"SELECT pid FROM pg_stat_activity WHERE query LIKE '%$ref%' AND pid <> pg_backend_pid()");
		last if $pid ne '';
		usleep(20_000);
	}
	die "the load $ref did not start" if $pid eq '';
	for (1 .. 1000)
	{
		last if loads_sent($url) > $sent;
		usleep(20_000);
	}
	die "the load $ref did not reach the sandbox" unless loads_sent($url) > $sent;
	return ($h, $pid, \$err);
}

$node->safe_psql('postgres', "SELECT enkash_get_card_account('CASANDBOX1')");   # a token

# 1. The owner is terminated while its load takes 4 s at EnKash.  Look-ups
# are quick, so a look-up made at once would not find the load yet.
faults('{"latency_ms": 4000}');
my ($h, $pid) = start_load('FENCE-DEAD');
faults('{"clear": true}');
is(key_state('FENCE-DEAD'), 'in_flight', 'the key is claimed before the request leaves');
$node->safe_psql('postgres', "SELECT pg_terminate_backend($pid)");
$h->finish;
$node->poll_query_until('postgres',
	"SELECT NOT EXISTS (SELECT FROM pg_stat_activity WHERE pid = $pid)")
  or die 'the owner did not end';

like($node->safe_psql('postgres', 'SELECT try_sql($$' . load('FENCE-DEAD') . '$$)'),
	qr/^55P03 \| .*is unknown, and it is too soon to ask EnKash/,
	'a call right after the owner died is refused: too soon to ask EnKash');
is(key_state('FENCE-DEAD'), 'unknown', 'the dead owner\'s key is unknown');
is(loads_sent($url), 1, 'nothing was sent again');

sleep 6;    # past enkash.unknown_grace_ms, and the first load has landed
my ($rc, $out, $err) = $node->psql('postgres', load('FENCE-DEAD'));
is($rc, 0, 'past the grace the call succeeds');
like($err, qr/EnKash already has the load with reference "FENCE-DEAD"; it was not sent again/,
	'because EnKash was asked and had the load');
is(loads_sent($url), 1, 'one load request in all');
is(credits($url, 'FENCE-DEAD'), 1, 'one credit for FENCE-DEAD');
is(key_state('FENCE-DEAD'), 'succeeded', 'the key is succeeded');

# 2. An owner hangs (SIGSTOP) after its request left, well past the longest
# its call can take (its timeouts are short).  EnKash credits the load and
# drops the connection, so the owner, once it resumes, can only say
# "unknown".
faults('{"latency_ms": 1500, "drop": {"count": 1, "after_apply": true}}');
my $stderr;
($h, $pid, $stderr) = start_load('FENCE-LATE',
	'SET enkash.timeout_ms = 2000; SET enkash.connect_timeout_ms = 200; ');
kill 'STOP', $pid;
is(key_state('FENCE-LATE'), 'in_flight', 'the hung owner holds the key');

# Within the longest its call can take, the owner is trusted.
like($node->safe_psql('postgres', 'SELECT try_sql($$' . load('FENCE-LATE') . '$$)'),
	qr/^55P03 \| .*is being sent by another session right now/,
	'past enkash.stale_claim_ms but within the owner\'s timeouts: in flight');

# Past it, the key is unknown, and EnKash is asked only after the grace.
my $stale = 0;
for (1 .. 100)
{
	my $r = $node->safe_psql('postgres', 'SELECT try_sql($$' . load('FENCE-LATE') . '$$)');
	if ($r !~ /being sent by another session/)
	{
		like($r, qr/^55P03 \| .*too soon to ask EnKash/, 'a hung owner\'s key is first refused: too soon');
		$stale = 1;
		last;
	}
	usleep(500_000);
}
ok($stale, 'the hung owner\'s claim went stale');
is(key_state('FENCE-LATE'), 'unknown', 'the hung owner\'s key is unknown');
sleep 6;
($rc, $out, $err) = $node->psql('postgres', load('FENCE-LATE'));
is($rc, 0, 'past the grace the call succeeds');
like($err, qr/EnKash already has the load with reference "FENCE-LATE"; it was not sent again/,
	'because EnKash was asked and had the load');
is(key_state('FENCE-LATE'), 'succeeded', 'the new owner recorded success');

# The old owner resumes and records its "unknown": it must not overwrite.
kill 'CONT', $pid;
$h->finish;
like($$stderr, qr/WARNING:  the outcome of key "FENCE-LATE" came after another attempt had taken the key over/,
	'the late owner is warned that its outcome was superseded');
is(key_state('FENCE-LATE'), 'succeeded', 'the late owner did not overwrite the key');
is($node->safe_psql('postgres',
	"SELECT count(*) FROM enkash.audit_log WHERE idempotency_key = 'FENCE-LATE' AND outcome = 'superseded'"),
	1, 'the late answer is audited as superseded');
is(credits($url, 'FENCE-LATE'), 1, 'one credit for FENCE-LATE');
is(loads_sent($url), 2, 'two load requests in all, one per reference');

$node->stop;
done_testing();
