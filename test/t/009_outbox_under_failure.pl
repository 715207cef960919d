# 1,000 payroll rows committed in one transaction while EnKash fails some
# calls with HTTP 500 and drops some connections after reading them: every
# row ends succeeded, and EnKash has exactly one credit per reference.  Then
# a sender killed mid-batch and an immediate server restart mid-batch: no
# row lost, no reference credited twice.
use strict;
use warnings;
use lib $ENV{ENKASH_TAP_LIB};
use EnkashTest;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = enkash_node('outbox', conf => <<'CONF');
enkash.max_concurrency = 4
enkash.unknown_grace_ms = 300
enkash.retry_base_ms = 50
enkash.retry_max_ms = 500
enkash.max_attempts = 20
restart_after_crash = on
max_worker_processes = 16
CONF
sandbox('POST', '/__sandbox/reset', '{}');
$node->safe_psql('postgres', q{
	CREATE TABLE payroll (run_id text, employee_id int, card_account_id text,
	                      enkash_card_id text, allowance numeric);
	CREATE TRIGGER load_cards AFTER INSERT ON payroll FOR EACH ROW
	    EXECUTE FUNCTION enkash_load_balance_trigger('card_account_id', 'enkash_card_id',
	                                                 'allowance', 'run_id', 'employee_id');
});

sub ledger_check
{
	my ($prefix, $rows) = @_;
	my $ledger = sandbox('GET', '/__sandbox/ledger');
	my %count;
	while ($ledger =~ /"reference":"(\Q$prefix\E[^"]*)","count":(\d+)/g)
	{
		$count{$1} = $2;
	}
	my @twice = grep { $count{$_} != 1 } keys %count;
	is(scalar(keys %count), $rows, "$rows references credited at EnKash");
	is(scalar(@twice), 0, 'none of them more than once') or diag("@twice[0..9]");
}

sub wait_all_final
{
	my ($run) = @_;
	$node->poll_query_until('postgres',
		"SELECT count(*) = 0 FROM enkash.requests WHERE idempotency_key LIKE '6:public/7:payroll/1:$run/%' "
		  . "AND state NOT IN ('succeeded', 'failed', 'dead')", 't')
	  or diag($node->safe_psql('postgres',
		"SELECT state, count(*) FROM enkash.requests GROUP BY state"));
}

# 1. Failures and drops (after the request was read: some were credited).
sandbox('POST', '/__sandbox/faults',
	'{"fail": {"status": 500, "count": 100}, "drop": {"count": 50, "after_apply": true}}');
$node->safe_psql('postgres', q{
	INSERT INTO payroll SELECT 'A', g, 'CASANDBOX1', 'EKCSANDBOX1', 1 FROM generate_series(1, 1000) g;
});
wait_all_final('A');
sandbox('POST', '/__sandbox/faults', '{"clear": true}');
is($node->safe_psql('postgres',
	"SELECT string_agg(state || ':' || n, ',') FROM (SELECT state, count(*) n FROM enkash.requests "
	  . "WHERE idempotency_key LIKE '6:public/7:payroll/1:A/%' GROUP BY state) s"),
	'succeeded:1000', 'every queued row succeeded');
ledger_check('6:public/7:payroll/1:A/', 1000);
ok($node->safe_psql('postgres',
	"SELECT count(*) FROM enkash.requests WHERE idempotency_key LIKE '6:public/7:payroll/1:A/%' AND attempts > 1") > 0,
	'some rows needed retries');

# 2. A sender killed mid-batch, then an immediate restart mid-batch.
sandbox('POST', '/__sandbox/faults', '{"latency_ms": 20}');
$node->safe_psql('postgres', q{
	INSERT INTO payroll SELECT 'B', g, 'CASANDBOX1', 'EKCSANDBOX1', 1 FROM generate_series(1, 300) g;
});
$node->poll_query_until('postgres',
	"SELECT count(*) > 30 FROM enkash.requests WHERE idempotency_key LIKE '6:public/7:payroll/1:B/%' AND state = 'succeeded'")
  or die 'batch did not start';
my $sender = $node->safe_psql('postgres',
	"SELECT pid FROM pg_stat_activity WHERE backend_type = 'enkash sender' LIMIT 1");
kill 'KILL', $sender;
$node->poll_query_until('postgres', 'SELECT true') or die 'server did not come back';
$node->poll_query_until('postgres',
	"SELECT count(*) > 150 FROM enkash.requests WHERE idempotency_key LIKE '6:public/7:payroll/1:B/%' AND state = 'succeeded'")
  or die 'batch did not go on';
$node->stop('immediate');
$node->start;
sandbox('POST', '/__sandbox/faults', '{"clear": true}');
wait_all_final('B');
is($node->safe_psql('postgres',
	"SELECT count(*) FROM enkash.requests WHERE idempotency_key LIKE '6:public/7:payroll/1:B/%' AND state = 'succeeded'"),
	'300', 'no queued row lost across a killed sender and an immediate restart');
ledger_check('6:public/7:payroll/1:B/', 300);

$node->stop;
done_testing();
