# DROP DATABASE of the workers' database is not blocked by them: they stand
# aside, and come back when the database does.  On a hot standby money calls
# refuse with 25006 and the workers idle; after promotion they start.
use strict;
use warnings;
use lib $ENV{ENKASH_TAP_LIB};
use EnkashTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = enkash_node('dropdb', conf => "enkash.database = 'payroll'\n", allows_streaming => 1);
$node->safe_psql('postgres', 'CREATE DATABASE payroll');
$node->safe_psql('payroll', 'CREATE EXTENSION enkash');
$node->poll_query_until('postgres',
	"SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'enkash worker' AND datname = 'payroll'")
  or die 'worker did not start';

my ($ret, $out, $err) = $node->psql('postgres', 'DROP DATABASE payroll');
is($ret, 0, 'DROP DATABASE succeeds with the enkash worker connected to it') or diag($err);
like(slurp_file($node->logfile), qr/database "payroll" is being dropped; the enkash worker and senders stop/,
	'the launcher says why the worker stopped');

$node->safe_psql('postgres', 'CREATE DATABASE payroll');
$node->safe_psql('payroll', 'CREATE EXTENSION enkash');
$node->poll_query_until('postgres',
	"SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'enkash worker' AND datname = 'payroll'")
  or die 'worker did not come back';
sandbox('POST', '/__sandbox/reset', '{}');
is($node->safe_psql('payroll',
	"SELECT enkash_load_balance('CASANDBOX1', 'EKCSANDBOX1', 5, 'DROPDB-1') IS NOT NULL"),
	't', 'money calls work again in the recreated database');

# A standby of it.
$node->backup('b');
my $standby = PostgreSQL::Test::Cluster->new('standby');
$standby->init_from_backup($node, 'b', has_streaming => 1);
$standby->start;
$node->wait_for_catchup($standby);
($ret, $out, $err) = $standby->psql('payroll',
	"SELECT enkash_load_balance('CASANDBOX1', 'EKCSANDBOX1', 5, 'STANDBY-1')");
like($err, qr/money calls cannot be made on a standby server/, 'a money call on the standby is refused');
is($standby->safe_psql('payroll',
	"SELECT count(*) FROM pg_stat_activity WHERE backend_type IN ('enkash worker', 'enkash sender')"),
	'0', 'no enkash worker runs on the standby');
is($standby->safe_psql('payroll', "SELECT enkash_get_card_account('CASANDBOX1')->>'cardAccountId'"),
	'CASANDBOX1', 'look-ups work on the standby');

$node->stop;
$standby->promote;
$standby->poll_query_until('postgres',
	"SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'enkash worker'")
  or die 'worker did not start after promotion';
is($standby->safe_psql('payroll',
	"SELECT enkash_load_balance('CASANDBOX1', 'EKCSANDBOX1', 5, 'STANDBY-1') IS NOT NULL"),
	't', 'after promotion money calls work');
$standby->stop;
done_testing();
