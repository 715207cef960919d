# Maker-checker: with enkash.approval_threshold 10,000, a 50,000 load queued
# by payroll_clerk waits awaiting_approval and is not sent; payroll_clerk
# cannot approve it (even holding enkash_approve); finance_controller
# approves it: one credit, and the audit log names both.  A synchronous load
# at the threshold is refused with NK011; a rejected load is never sent.
use strict;
use warnings;
use lib $ENV{ENKASH_TAP_LIB};
use EnkashTest;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = enkash_node('approval', conf => "enkash.approval_threshold = 10000\n");
sandbox('POST', '/__sandbox/reset', '{}');
$node->safe_psql('postgres', q{
	CREATE ROLE enkash_read NOLOGIN;
	CREATE ROLE enkash_operate NOLOGIN IN ROLE enkash_read;
	CREATE ROLE enkash_approve NOLOGIN IN ROLE enkash_read;
	GRANT USAGE ON SCHEMA enkash TO enkash_read;
	GRANT EXECUTE ON FUNCTION enkash_load_balance, enkash_load_balance_async TO enkash_operate;
	GRANT EXECUTE ON FUNCTION enkash_approve, enkash_reject TO enkash_approve;
	GRANT SELECT ON enkash.queue TO enkash_approve, enkash_operate;
	GRANT SELECT ON enkash.requests TO enkash_approve;
	CREATE ROLE payroll_clerk IN ROLE enkash_operate, enkash_approve;
	CREATE ROLE finance_controller IN ROLE enkash_approve;
});

my ($rc, $out, $err) = $node->psql('postgres', q{SET ROLE payroll_clerk;
	SELECT enkash_load_balance('CASANDBOX1', 'EKCSANDBOX1', 10000, 'APPR-SYNC')},
	extra_params => [ '-v', 'VERBOSITY=verbose' ]);
like($err, qr/NK011.*needs a second person's approval.*HINT:.*enkash_load_balance_async/s,
	'a synchronous load at the threshold is refused with NK011 and a hint to queue it');

my $id = $node->safe_psql('postgres', q{SET ROLE payroll_clerk;
	SELECT enkash_load_balance_async('CASANDBOX1', 'EKCSANDBOX1', 50000, 'APPR-1')});
my $small = $node->safe_psql('postgres', q{SET ROLE payroll_clerk;
	SELECT enkash_load_balance_async('CASANDBOX1', 'EKCSANDBOX1', 500, 'APPR-SMALL')});
is($node->safe_psql('postgres', "SELECT state FROM enkash.requests WHERE id = $id"),
	'awaiting_approval', 'the 50,000 load awaits approval');
$node->poll_query_until('postgres', "SELECT state = 'succeeded' FROM enkash.requests WHERE id = $small");
is(credits('APPR-1'), 0, 'it is not sent (a load below the threshold was)');

($rc, $out, $err) = $node->psql('postgres', "SET ROLE payroll_clerk; SELECT enkash_approve($id)");
like($err, qr/"payroll_clerk" queued request $id and cannot also approve/, 'its maker cannot approve it');
is($node->safe_psql('postgres', "SELECT state FROM enkash.requests WHERE id = $id"),
	'awaiting_approval', '... and it still waits');

is($node->safe_psql('postgres', q{SET ROLE finance_controller;
	SELECT count(enkash_approve(id)) FROM enkash.requests WHERE state = 'awaiting_approval'}),
	'1', 'finance_controller approves the run in one statement');
$node->poll_query_until('postgres', "SELECT state = 'succeeded' FROM enkash.requests WHERE id = $id")
  or diag($node->safe_psql('postgres', "SELECT * FROM enkash.requests WHERE id = $id"));
is(credits('APPR-1'), 1, 'approved: one credit');
is($node->safe_psql('postgres', qq{
	SELECT role || ' ' || (message ~ 'queued by payroll_clerk at .* approved by finance_controller at ')
	FROM enkash.audit_log WHERE outcome = 'approved' AND idempotency_key = 'APPR-1'}),
	'finance_controller true', 'the audit log names maker and checker, with times');
is($node->safe_psql('postgres', "SELECT decided_by FROM enkash.requests WHERE id = $id"),
	'finance_controller', 'the row names its checker');

my $no = $node->safe_psql('postgres', q{SET ROLE payroll_clerk;
	SELECT enkash_load_balance_async('CASANDBOX1', 'EKCSANDBOX1', 20000, 'APPR-2')});
$node->safe_psql('postgres', "SET ROLE finance_controller; SELECT enkash_reject($no, 'not in this month''s budget')");
is($node->safe_psql('postgres', "SELECT state, last_error FROM enkash.requests WHERE id = $no"),
	"rejected|not in this month's budget", 'a rejected load is rejected with the reason');
sleep 2;
is(credits('APPR-2'), 0, 'and never sent');

done_testing();
