# pg_cron runs enkash_sync_transactions on a schedule and the rows appear in
# enkash.transactions.
use strict;
use warnings;
use lib $ENV{ENKASH_TAP_LIB};
use EnkashTest;
use PostgreSQL::Test::Utils;
use Test::More;

# pg_cron is not part of PostgreSQL's source: a server built from it (test/pg-build.sh) has none.
my $pkglibdir = `pg_config --pkglibdir`;
chomp $pkglibdir;
plan skip_all => "pg_cron is not installed for this PostgreSQL (no $pkglibdir/pg_cron.so)"
  unless -e "$pkglibdir/pg_cron.so";

my $node = enkash_node('cron',
	conf => "cron.database_name = 'postgres'\ncron.use_background_workers = on\nmax_worker_processes = 16\n",
	preload => 'enkash,pg_cron');
$node->safe_psql('postgres', 'CREATE EXTENSION pg_cron');
sandbox('POST', '/__sandbox/reset', '{}');
$node->safe_psql('postgres', q{
	SELECT enkash_load_balance('CASANDBOX1', 'EKCSANDBOX1', 10 * g, 'CRON-' || g) FROM generate_series(1, 3) g;
	SELECT cron.schedule('enkash-sync', '* * * * *',
	                     $$SELECT enkash_sync_transactions('CASANDBOX1')$$);
});
# pg_cron runs jobs at the start of each minute.
$node->poll_query_until('postgres',
	"SELECT count(*) = 3 FROM enkash.transactions WHERE reference_number LIKE 'CRON-%'", 't')
  or diag($node->safe_psql('postgres', 'SELECT status, return_message FROM cron.job_run_details'));
is($node->safe_psql('postgres',
	"SELECT string_agg(reference_number || '=' || amount, ',' ORDER BY reference_number) FROM enkash.transactions WHERE reference_number LIKE 'CRON-%'"),
	'CRON-1=10,CRON-2=20,CRON-3=30', 'the scheduled sync brought the transactions in');
is($node->safe_psql('postgres', "SELECT status FROM cron.job_run_details ORDER BY runid DESC LIMIT 1"),
	'succeeded', 'the pg_cron run succeeded');
$node->stop;
done_testing();
