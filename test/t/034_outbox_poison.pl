# A queued row that cannot even be claimed (its key is too long to be
# recorded) fails alone: the good rows queued with it are sent and credited
# once each, and the poison row, which no retry could mend, ends failed at
# its first attempt with its error.  A queued card block whose
# outcome is unknown (EnKash applied it, the answer was lost) is never sent
# again: it ends dead with the unknown-outcome error.
use strict;
use warnings;
use lib $ENV{ENKASH_TAP_LIB};
use EnkashTest;
use PostgreSQL::Test::Utils;
use Test::More;

my $url = start_private_sandbox();
my $node = enkash_node('poison', sandbox_url => $url, conf => <<'CONF');
enkash.max_concurrency = 4
enkash.unknown_grace_ms = 300
enkash.retry_base_ms = 50
enkash.retry_max_ms = 200
enkash.max_attempts = 3
CONF

# The poison row is queued first (as an older release could), the good
# ones after it: it heads every claim.
$node->safe_psql('postgres', q{
	INSERT INTO enkash.requests (endpoint, body, idempotency_key, max_attempts)
	SELECT 'load_balance',
	       jsonb_build_object('cardAccountId', 'CASANDBOX1', 'enKashCardId', 'EKCSANDBOX1',
	                          'amount', 1, 'uniqueReferenceNumber', k,
	                          'transactionType', 'CR', 'type', 'ALLOCATE_FUND',
	                          'transactionCode', 'ALLOCATION', 'createdBy', 'test'),
	       k, 3
	FROM (SELECT string_agg(md5(g::text), '') AS k FROM generate_series(1, 125) g) s;
	SELECT enkash_load_balance_async('CASANDBOX1', 'EKCSANDBOX1', 1, 'POISON-good-' || g)
	FROM generate_series(1, 5) g;
});
ok($node->poll_query_until('postgres',
	"SELECT count(*) = 6 FROM enkash.requests WHERE state IN ('succeeded', 'failed', 'dead')"),
	'every queued row is final')
  or diag($node->safe_psql('postgres',
	"SELECT state, attempts, left(last_error, 80) FROM enkash.requests ORDER BY id"));
is($node->safe_psql('postgres',
	"SELECT string_agg(state, ',') FROM enkash.requests WHERE idempotency_key LIKE 'POISON-good-%'"),
	join(',', ('succeeded') x 5), 'the good rows succeeded');
my $credits = credits_by_prefix($url, 'POISON-');
is(scalar(keys %$credits), 5, 'five references credited at EnKash');
is(scalar(grep { $credits->{$_} != 1 } keys %$credits), 0, 'each exactly once');
is($node->safe_psql('postgres',
	"SELECT state || ' ' || attempts || ' ' || jsonb_array_length(errors) || ' ' || last_sqlstate "
	  . "|| ' ' || (last_error IS NOT NULL) FROM enkash.requests WHERE length(idempotency_key) > 64"),
	'failed 1 1 22001 true', 'the poison row failed at once, its error recorded');

done_testing();
