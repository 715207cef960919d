# A queued card block whose outcome is unknown (EnKash applied it, the
# answer was lost) is never sent again: a write without an idempotency key
# cannot be checked with EnKash, so it ends dead with the unknown-outcome
# error, for a person to check.
use strict;
use warnings;
use lib $ENV{ENKASH_TAP_LIB};
use EnkashTest;
use PostgreSQL::Test::Utils;
use Test::More;

my $url = start_private_sandbox();
my $node = enkash_node('write_unknown', sandbox_url => $url, conf => <<'CONF');
enkash.max_concurrency = 4
enkash.unknown_grace_ms = 300
enkash.retry_base_ms = 50
enkash.retry_max_ms = 200
enkash.max_attempts = 3
CONF

sub sent_to
{
	my ($path) = @_;
	my $requests = sandbox($url, 'GET', '/__sandbox/requests');
	return $requests =~ m{"/api/v0/partner/enKashCard\Q$path\E"\s*:\s*(\d+)} ? $1 : 0;
}

# A card block whose answer is lost after EnKash applied it.
sandbox($url, 'POST', '/__sandbox/faults', '{"drop": {"count": 1, "after_apply": true}}');
my $id = $node->safe_psql('postgres', q{
	SELECT enkash_enqueue('block_card',
	    '{"companyId": "CEKSANDBOX1", "cardAccountId": "CASANDBOX1", "enKashCardId": "EKCSANDBOX2",
	      "blockCode": "L", "createdBy": "test"}')
});
ok($node->poll_query_until('postgres',
	"SELECT state IN ('succeeded', 'failed', 'dead') FROM enkash.requests WHERE id = $id"),
	'the queued block is final');
sleep(2);    # well past unknown_grace_ms and the retry backoff
is($node->safe_psql('postgres',
	"SELECT state || ' ' || last_sqlstate FROM enkash.requests WHERE id = $id"),
	'dead NK006', 'the block with an unknown outcome is dead, its error recorded');
is(sent_to('/block'), 1, 'the block was sent once, never again');

done_testing();
