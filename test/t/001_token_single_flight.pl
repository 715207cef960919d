# 100 sessions that connect at once and each make one call share one token:
# the token endpoint is called exactly once.
use strict;
use warnings;
use lib $ENV{ENKASH_TAP_LIB};
use EnkashTest;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = enkash_node('single_flight', conf => "max_connections = 130\n");
$node->safe_psql('postgres', 'GRANT EXECUTE ON FUNCTION enkash_get_card_account(text, text) TO PUBLIC');

sandbox('POST', '/__sandbox/reset', '{}');
# Slow the token endpoint down so that all sessions ask while it is in flight.
sandbox('POST', '/__sandbox/faults', '{"latency_ms": 300}');
my $before = sandbox_json('GET', '/__sandbox/requests', '/oauth/token');

$node->pgbench(
	'--no-vacuum --client=100 --jobs=4 --transactions=1 --connect',
	0,
	[qr{actually processed: 100/100}],
	[qr{^$}],
	'100 sessions each make one call',
	{ '001_call' => q{SELECT enkash_get_card_account('CASANDBOX1');} });

sandbox('POST', '/__sandbox/faults', '{"clear": true}');
my $after = sandbox_json('GET', '/__sandbox/requests', '/oauth/token');
is($after - $before, 1, 'one token call served all 100 sessions');

my $api = sandbox_json('GET', '/__sandbox/requests', '/api/v0/partner/enKashCard/cardAccount/get');
cmp_ok($api, '>=', 100, 'every session reached EnKash');

is($node->safe_psql('postgres', 'SELECT enkash_token_calls()'), '1',
	'the server counted one token call');

$node->stop;
done_testing();
