# Without shared_preload_libraries, CREATE EXTENSION fails and says what to do.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('no_preload');
$node->init;
$node->start;
my ($ret, $stdout, $stderr) = $node->psql('postgres', 'CREATE EXTENSION enkash');
isnt($ret, 0, 'CREATE EXTENSION fails without preloading');
like($stderr, qr/enkash must be loaded via "shared_preload_libraries"/, 'the error says why');
like($stderr, qr/HINT:  Add enkash to shared_preload_libraries/, 'the hint says what to add');
is($node->safe_psql('postgres', "SELECT count(*) FROM pg_extension WHERE extname = 'enkash'"),
	'0', 'nothing was left behind');
$node->stop;
done_testing();
