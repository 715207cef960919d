# With 5-second tokens, a sender replaces the token at 80% of its lifetime:
# 30 seconds of calls make about 6 refresh calls and no call is refused or
# waits for a token.
use strict;
use warnings;
use lib $ENV{ENKASH_TAP_LIB};
use EnkashTest;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

my $url = start_private_sandbox('--token-ttl', '5');
my $node = enkash_node('refresh', sandbox_url => $url);

my ($calls, $failures) = (0, 0);
my $end = time + 30;
while (time < $end)
{
	my ($ret) = $node->psql('postgres', "SELECT enkash_get_card_account('CASANDBOX1')");
	$calls++;
	$failures++ if $ret != 0;
	usleep(200_000);
}
my $refreshes = sandbox_json($url, 'GET', '/__sandbox/requests', 'refresh_token');
is($failures, 0, "no call failed ($calls calls)");
cmp_ok($refreshes, '>=', 4, "the token was refreshed ahead of expiry ($refreshes refresh grants)");
cmp_ok($refreshes, '<=', 12, 'and not much more often than needed');
is(sandbox_json($url, 'GET', '/__sandbox/requests', 'password'), 1,
	'one password grant in all');
like($node->safe_psql('postgres', 'SELECT valid, last_error IS NULL FROM enkash_token_status()'),
	qr/^t\|t$/, 'enkash_token_status() reports a valid token and no error');
$node->stop;
done_testing();
