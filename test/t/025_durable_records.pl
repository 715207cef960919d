# A load that has returned survives an immediate stop straight after it
# (no checkpoint, WAL buffers lost): its key is "succeeded" with its audit
# row, and the same call again replays it without a request.  The worker's
# commits of money rows are flushed before the backend is answered; the WAL
# writer is made slow (10 s) so that it cannot be what saved them: a money
# row whose commit is not flushed before its backend is answered fails
# this test.
use strict;
use warnings;
use lib $ENV{ENKASH_TAP_LIB};
use EnkashTest;
use PostgreSQL::Test::Utils;
use Test::More;

my $url = start_private_sandbox();
my $node = enkash_node('durable', sandbox_url => $url, conf => <<'CONF');
wal_writer_delay = 10000
CONF


$node->safe_psql('postgres', "SELECT enkash_get_card_account('CASANDBOX1')");   # a token

for my $round (1 .. 3)
{
	my $ref = "DURABLE-$round";
	my $before = loads_sent($url);
	$node->safe_psql('postgres',
		"SELECT enkash_load_balance('CASANDBOX1', 'EKCSANDBOX1', 3, '$ref')");
	$node->stop('immediate');
	$node->start;

	is($node->safe_psql('postgres',
		"SELECT state FROM enkash.idempotency_keys WHERE key = '$ref'"),
		'succeeded', "$ref: the outcome of the load outlived an immediate stop");
	is($node->safe_psql('postgres',
		"SELECT string_agg(outcome, ' ' ORDER BY id) FROM enkash.audit_log WHERE idempotency_key = '$ref'"),
		'sent ok', "$ref: so did its audit rows, the request's and the answer's");
	$node->safe_psql('postgres',
		"SELECT enkash_load_balance('CASANDBOX1', 'EKCSANDBOX1', 3, '$ref')");
	is(loads_sent($url) - $before, 1, "$ref: the same call again is a replay: one request in all");
	is(sandbox_json_count($ref), 1, "$ref: one credit");
}

sub sandbox_json_count
{
	my $ledger = sandbox($url, 'GET', "/__sandbox/ledger?reference=$_[0]");
	return $ledger =~ /"count"\s*:\s*(\d+)/ ? $1 : -1;
}

$node->stop;
done_testing();
