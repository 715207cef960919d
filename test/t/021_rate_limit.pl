# enkash.rate_limit caps requests per second across the whole server: with a
# limit of 5/s, 20 calls from two sessions take at least 3 seconds (5 at once,
# then 5 a second), and none fails.  A call waits no longer than its
# enkash.timeout_ms for its turn: then it fails with nothing sent, and a
# load's key is released, not left unknown.
use strict;
use warnings;
use lib $ENV{ENKASH_TAP_LIB};
use EnkashTest;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);

my $node = enkash_node('ratelimit', conf => "enkash.rate_limit = 5\n");
$node->safe_psql('postgres', "SELECT enkash_get_card_account('CASANDBOX1')");
sleep 2;    # a full bucket
my $t0 = time;
my (@h, @out);
for my $s (0 .. 1)
{
	$out[$s] = '';
	push @h, IPC::Run::start(
		[ 'psql', '-X', '-At', '-d', $node->connstr('postgres'), '-c',
		  "SELECT count(enkash_get_card_account('CASANDBOX1')) FROM generate_series(1, 10)" ],
		'>', \$out[$s], '2>&1');
}
$_->finish for @h;
my $elapsed = time - $t0;
like($_, qr/^10$/m, 'a session made its 10 calls') for @out;
cmp_ok($elapsed, '>=', 2.8, sprintf('20 calls at 5/s took %.1f s', $elapsed));

# 5 calls drain the bucket; the next load would wait about 200 ms.
sandbox('POST', '/__sandbox/reset', '{}');
my $load_path = '/api/v0/partner/enKashCard/balance';
my ($rc, $out, $err) = $node->psql('postgres',
	"SELECT count(enkash_get_card_account('CASANDBOX1')) FROM generate_series(1, 5); "
	  . "SET enkash.timeout_ms = 100; "
	  . "SELECT enkash_load_balance('CASANDBOX1', 'EKCSANDBOX1', 7, 'RATE-1')");
like($err, qr/waited longer than enkash.timeout_ms for its turn under enkash.rate_limit; nothing was sent/,
	'a call that would wait past its timeout fails');
is(sandbox_json('GET', '/__sandbox/requests', $load_path), 0, 'no load was sent');
is($node->safe_psql('postgres', "SELECT count(*) FROM enkash.idempotency_keys WHERE key = 'RATE-1'"),
	0, 'its key was released');
$node->stop;
done_testing();
