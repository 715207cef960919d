# Failover to an asynchronous standby that had not received everything: loads
# the old primary sent, whose keys never reached the standby, are unknown to
# the new primary.  For enkash.check_after_failover after its timeline began,
# the new primary looks every new load up at EnKash before sending it: a
# caller's retry and a queued row both find EnKash's credit and are not sent
# again; a load EnKash does not have is sent once.  A lost load nobody
# retries is found by the README's reconciliation query.  With the check
# off, a retry is credited a second time: the danger the check is for.
use strict;
use warnings;
use lib $ENV{ENKASH_TAP_LIB};
use EnkashTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $url = start_private_sandbox();
my $primary = enkash_node('primary', sandbox_url => $url, allows_streaming => 1, conf => <<'CONF');
enkash.unknown_grace_ms = 500
enkash.retry_base_ms = 50
CONF
my $standby = enkash_standby($primary, 'standby');

my $load = sub {
	my ($node, $ref) = @_;
	return $node->psql('postgres',
		"SELECT enkash_load_balance('CASANDBOX1', 'EKCSANDBOX1', 10, '$ref')");
};
my $lookups = sub {
	my $requests = sandbox($url, 'GET', '/__sandbox/requests');
	return $requests =~ m{"/api/v0/partner/enKashCard/transaction/all"\s*:\s*(\d+)} ? $1 : 0;
};

# A queued load the standby receives, due later (an administrator's hold).
$primary->safe_psql('postgres', q{
	SELECT enkash_load_balance_async('CASANDBOX1', 'EKCSANDBOX1', 10, 'AF-Q-1');
	UPDATE enkash.requests SET next_attempt_at = now() + interval '1 hour'
	 WHERE idempotency_key = 'AF-Q-1'});
$primary->wait_for_catchup('standby');

# The standby falls behind; what the primary does now never reaches it.
$standby->stop('fast');
is($load->($primary, $_), 0, "$_ loaded on the old primary") for qw(AF-S-1 AF-S-2 AF-S-3);
$primary->safe_psql('postgres',
	"UPDATE enkash.requests SET next_attempt_at = now() WHERE idempotency_key = 'AF-Q-1'");
ok($primary->poll_query_until('postgres',
	"SELECT state = 'succeeded' FROM enkash.requests WHERE idempotency_key = 'AF-Q-1'"),
	'the queued load was sent by the old primary');
is(credits($url, $_), 1, "$_ credited once before the failover") for qw(AF-S-1 AF-S-2 AF-S-3 AF-Q-1);

# The old primary dies; the standby, which never heard of those loads, is promoted.
$primary->stop('immediate');
$standby->start;
promote_and_wait($standby);
is($standby->safe_psql('postgres',
	"SELECT count(*) FROM enkash.idempotency_keys WHERE key LIKE 'AF-S-%'"),
	'0', 'the new primary has no key of the loads made after the standby fell behind');

# A caller retries AF-S-1: EnKash is asked first and has it.
my $asked = $lookups->();
my ($rc, $out, $err) = $standby->psql('postgres',
	"SELECT enkash_load_balance('CASANDBOX1', 'EKCSANDBOX1', 10, 'AF-S-1')->>'pgReferenceNumber'");
is($rc, 0, 'the retry on the new primary returns');
like($err, qr/EnKash already has the load with reference "AF-S-1"; it was not sent again/,
	'it says EnKash already had the load');
cmp_ok($lookups->(), '>', $asked, 'EnKash was asked before anything was sent');
is(credits($url, 'AF-S-1'), 1, 'AF-S-1 is not credited a second time');
is($standby->safe_psql('postgres',
	"SELECT state FROM enkash.idempotency_keys WHERE key = 'AF-S-1'"),
	'succeeded', 'and its key is recorded as succeeded');
# The queued row the old primary had sent is due again on the new one.
$standby->safe_psql('postgres',
	"UPDATE enkash.requests SET next_attempt_at = now() WHERE idempotency_key = 'AF-Q-1'");
ok($standby->poll_query_until('postgres',
	"SELECT state = 'succeeded' FROM enkash.requests WHERE idempotency_key = 'AF-Q-1'"),
	'the queued row ends succeeded on the new primary');
is(credits($url, 'AF-Q-1'), 1, 'AF-Q-1 is not credited a second time');

# A load EnKash has never seen is looked up, then sent once.
is($load->($standby, 'AF-N-1'), 0, 'a new load on the new primary works');
is(credits($url, 'AF-N-1'), 1, 'and is credited once');

# AF-S-2, which nobody retries, is found by reconciliation.
my $reconciled = $standby->safe_psql('postgres', q{
	SELECT coalesce(m.reference_number, t.reference_number) || ':' || coalesce(m.state, '-') || ':' ||
	       CASE WHEN m.state = 'succeeded' AND t.amount = m.amount THEN 'ok' ELSE 'CHECK' END
	FROM (SELECT * FROM enkash.money_movements WHERE card_account_id = 'CASANDBOX1') m
	FULL JOIN (SELECT * FROM enkash_transactions('CASANDBOX1', card_transaction_type => 'CR')
	           WHERE reference_number LIKE 'AF-%') t
	       ON t.reference_number = m.reference_number
	WHERE coalesce(m.reference_number, t.reference_number) LIKE 'AF-%'
	ORDER BY 1});
like($reconciled, qr/^AF-S-2:-:CHECK$/m, 'reconciliation names the credit the new primary never heard of');
like($reconciled, qr/^AF-S-1:succeeded:ok$/m, 'and the one it found by asking as ok');

# With the check off, a retry of a lost load is sent and credited again.
$standby->append_conf('postgresql.conf', "enkash.check_after_failover = 0\n");
$standby->reload;
is($load->($standby, 'AF-S-3'), 0, 'with the check off, the retry of AF-S-3 is sent');
is(credits($url, 'AF-S-3'), 2, 'and EnKash credits it a second time');

$standby->stop;
done_testing();
