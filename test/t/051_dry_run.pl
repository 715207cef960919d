# Dry runs: a payroll of 500 rows inserted through its trigger with
# enkash.dry_run on is stored as 500 dry_run rows, with the run's total,
# and sends nothing; a synchronous load in a dry run returns the request,
# leaves a dry_run audit row and claims no key.  The same payroll for real:
# 500 credits.
use strict;
use warnings;
use lib $ENV{ENKASH_TAP_LIB};
use EnkashTest;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = enkash_node('dry_run', conf => "enkash.max_concurrency = 4\n");
sandbox('POST', '/__sandbox/reset', '{}');
$node->safe_psql('postgres', q{
	CREATE TABLE payroll (run_id text, employee_id int, card_account_id text,
	                      enkash_card_id text, allowance numeric);
	CREATE TRIGGER load_cards AFTER INSERT ON payroll FOR EACH ROW
	    EXECUTE FUNCTION enkash_load_balance_trigger('card_account_id', 'enkash_card_id',
	                                                 'allowance', 'run_id', 'employee_id');
});
my $payroll = q{INSERT INTO payroll
	SELECT 'DRY', g, 'CASANDBOX1', 'EKCSANDBOX1', 100 + g FROM generate_series(1, 500) g};
my $total = 500 * 100 + 500 * 501 / 2;

$node->safe_psql('postgres', "BEGIN; SET LOCAL enkash.dry_run = on; $payroll; COMMIT;");
is($node->safe_psql('postgres', q{
	SELECT count(*) || ' ' || sum((body->>'amount')::numeric)
	FROM enkash.requests WHERE state = 'dry_run'}),
	"500 $total", '500 dry_run rows with the run\'s total');
is($node->safe_psql('postgres', "SELECT requests, amount FROM enkash.queue WHERE state = 'dry_run'"),
	"500|$total", 'enkash.queue shows them with their total');

my $answer = $node->safe_psql('postgres', q{
	SET enkash.dry_run = on;
	SELECT enkash_load_balance('CASANDBOX1', 'EKCSANDBOX1', 42, 'DRY-SYNC-1')});
like($answer, qr/"dry_run": true/, 'a synchronous load in a dry run says so');
like($answer, qr/"uniqueReferenceNumber": "DRY-SYNC-1"/, '... and returns the request');
is($node->safe_psql('postgres', q{
	SELECT count(*) FROM enkash.audit_log
	WHERE outcome = 'dry_run' AND idempotency_key = 'DRY-SYNC-1' AND request->>'amount' = '42'}),
	'1', 'its audit row records the request as dry_run');
is($node->safe_psql('postgres',
	"SELECT count(*) FROM enkash.idempotency_keys WHERE key LIKE '%DRY%'"),
	'0', 'no key was claimed');
sleep 2;
is(loads_sent(), 0, 'nothing reached EnKash');

# for real
$node->safe_psql('postgres', "DELETE FROM payroll; $payroll");
$node->poll_query_until('postgres',
	"SELECT count(*) = 500 FROM enkash.requests WHERE state = 'succeeded'")
  or diag($node->safe_psql('postgres', 'SELECT state, count(*) FROM enkash.requests GROUP BY 1'));
my $credits = credits_by_prefix('6:public/7:payroll/3:DRY/');
is(scalar(keys %$credits), 500, 'for real: 500 loads credited');
is(scalar(grep { $_ != 1 } values %$credits), 0, 'each exactly once');
is($node->safe_psql('postgres', "SELECT count(*) FROM enkash.requests WHERE state = 'dry_run'"),
	'500', 'the rehearsal\'s rows stay, never sent');

done_testing();
