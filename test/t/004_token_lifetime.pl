# A token is replaced before EnKash's lifetime for it runs out, with the
# refresh grant, so that no call is refused for an expired token.
use strict;
use warnings;
use lib $ENV{ENKASH_TAP_LIB};
use EnkashTest;
use PostgreSQL::Test::Utils;
use Test::More;

# Tokens live 3 seconds here; the extension replaces them 0.3 s early.
my $url = start_private_sandbox('--token-ttl', '3');
my $node = enkash_node('token_lifetime', sandbox_url => $url);

my $call = "SELECT enkash_get_card_account('CASANDBOX1')->>'cardAccountId'";
is($node->safe_psql('postgres', $call), 'CASANDBOX1', 'first call');
is(sandbox_json($url, 'GET', '/__sandbox/requests', 'password'), 1, 'one password grant');

sleep 4;
is($node->safe_psql('postgres', $call), 'CASANDBOX1', 'a call after the lifetime');
is(sandbox_json($url, 'GET', '/__sandbox/requests', 'refresh_token'), 1,
	'the token was replaced with the refresh grant');
is(sandbox_json($url, 'GET', '/__sandbox/requests', '/api/v0/partner/enKashCard/cardAccount/get'), 2,
	'no call was refused and retried: two calls, two requests');

$node->stop;
done_testing();
