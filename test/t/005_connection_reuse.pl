# One backend keeps one connection to EnKash: many calls, one TCP connection.
use strict;
use warnings;
use lib $ENV{ENKASH_TAP_LIB};
use EnkashTest;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = enkash_node('reuse');
sandbox('POST', '/__sandbox/reset', '{}');
$node->safe_psql('postgres', "SELECT enkash_get_card_account('CASANDBOX1')");

# Each control call below opens a connection of its own, hence the "- 1".
my $before = sandbox_json('GET', '/__sandbox/requests', 'connections');
my $calls = $node->safe_psql('postgres',
	"SELECT count(enkash_get_card_account('CASANDBOX1')) FROM generate_series(1, 50)");
my $after = sandbox_json('GET', '/__sandbox/requests', 'connections');
is($calls, 50, 'fifty calls from one session');
is($after - $before - 1, 1, 'they used one TCP connection');

$node->stop;
done_testing();
