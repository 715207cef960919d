# The worker purges finished keys older than enkash.key_retention_days, and
# never an unknown or in-flight one; audit rows are kept.
use strict;
use warnings;
use lib $ENV{ENKASH_TAP_LIB};
use EnkashTest;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = enkash_node('retention', conf => "enkash.key_retention_days = 3\n");
$node->safe_psql('postgres', q{
	INSERT INTO enkash.idempotency_keys (endpoint, key, fingerprint, state, role, finished_at, updated_at)
	VALUES ('load_balance', 'OLD-OK', 'f', 'succeeded', 'x', now() - interval '4 days', now() - interval '4 days'),
	       ('load_balance', 'OLD-FAILED', 'f', 'failed', 'x', now() - interval '4 days', now() - interval '4 days'),
	       ('load_balance', 'RECENT-OK', 'f', 'succeeded', 'x', now() - interval '2 days', now() - interval '2 days'),
	       ('load_balance', 'OLD-UNKNOWN', 'f', 'unknown', 'x', NULL, now() - interval '40 days');
	INSERT INTO enkash.audit_log (endpoint, idempotency_key, outcome, at)
	VALUES ('load_balance', 'OLD-OK', 'ok', now() - interval '4 days');
});

# The worker tidies up when it starts, then every minute.
$node->restart;
$node->poll_query_until('postgres',
	"SELECT count(*) = 0 FROM enkash.idempotency_keys WHERE key LIKE 'OLD-%' AND state <> 'unknown'")
  or die "old keys not purged";
is($node->safe_psql('postgres',
	'SELECT string_agg(key, \',\' ORDER BY key) FROM enkash.idempotency_keys'),
	'OLD-UNKNOWN,RECENT-OK', 'finished keys past retention purged; unknown and recent kept');
is($node->safe_psql('postgres', "SELECT count(*) FROM enkash.audit_log WHERE idempotency_key = 'OLD-OK'"),
	'1', 'audit rows are kept');
like(slurp_file($node->logfile), qr/purged 2 finished idempotency keys older than 3 days/,
	'the purge is logged');
$node->stop;
done_testing();
