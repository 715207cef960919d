# pg_cron runs enkash_sync_transactions on a schedule and the rows appear in
# enkash.transactions; the README's reconciliation job stores a mismatch.
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
# A credit enkash never made, for the reconciliation job to find.
sandbox('POST', '/__sandbox/credit', '{"companyId": "CEKSANDBOX1", "cardAccountId": "CASANDBOX1",
	"enKashCardId": "EKCSANDBOX1", "amount": 5, "uniqueReferenceNumber": "GHOST-OF-CRON",
	"transactionType": "CR", "type": "ALLOCATE_FUND", "transactionCode": "ALLOCATION",
	"createdBy": "elsewhere"}');
$node->safe_psql('postgres', q{
	SELECT enkash_load_balance('CASANDBOX1', 'EKCSANDBOX1', 10 * g, 'CRON-' || g) FROM generate_series(1, 3) g;
	SELECT cron.schedule('enkash-sync', '* * * * *',
	                     $$SELECT enkash_sync_transactions('CASANDBOX1')$$);
	SELECT cron.schedule('enkash-reconcile', '* * * * *', $$
	    SELECT enkash_reconcile_store(a, now() - interval '1 day', now())
	    FROM unnest(ARRAY['CASANDBOX1']) AS a$$);
});
# pg_cron runs jobs at the start of each minute.
$node->poll_query_until('postgres',
	"SELECT count(*) = 3 FROM enkash.transactions WHERE reference_number LIKE 'CRON-%'", 't')
  or diag($node->safe_psql('postgres', 'SELECT status, return_message FROM cron.job_run_details'));
is($node->safe_psql('postgres',
	"SELECT string_agg(reference_number || '=' || amount, ',' ORDER BY reference_number) FROM enkash.transactions WHERE reference_number LIKE 'CRON-%'"),
	'CRON-1=10,CRON-2=20,CRON-3=30', 'the scheduled sync brought the transactions in');
$node->poll_query_until('postgres',
	"SELECT count(*) > 0 FROM enkash.reconciliation", 't')
  or diag($node->safe_psql('postgres', 'SELECT status, return_message FROM cron.job_run_details'));
is($node->safe_psql('postgres',
	"SELECT string_agg(reference || ' ' || verdict, ',') FROM enkash.reconciliation"),
	'GHOST-OF-CRON unknown_here', 'the scheduled reconciliation stored the one mismatch');
$node->poll_query_until('postgres',
	"SELECT count(*) = 0 FROM cron.job_run_details WHERE status NOT IN ('succeeded', 'failed')", 't');
is($node->safe_psql('postgres', "SELECT string_agg(DISTINCT status, ',') FROM cron.job_run_details"),
	'succeeded', 'the pg_cron runs succeeded');
$node->stop;
done_testing();
