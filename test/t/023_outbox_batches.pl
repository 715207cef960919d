# The sender claims the keys of a batch, and records their outcomes, with
# one statement per kind of row.  One batch mixes new keys with a key used
# before (a replay), the same key for a different request, a key queued
# twice, a load EnKash declines, and a row whose outcome cannot be written
# (a trigger refuses it, so the batch statement fails and the sender goes
# one row at a time): every other row is final with the right state, and
# EnKash has exactly one credit per reference.  After a restart the refused
# row is reconciled with EnKash, not sent again.
use strict;
use warnings;
use lib $ENV{ENKASH_TAP_LIB};
use EnkashTest;
use PostgreSQL::Test::Utils;
use Test::More;

my $url = start_private_sandbox();
my $node = enkash_node('batches', sandbox_url => $url, conf => <<'CONF');
enkash.max_concurrency = 32
enkash.unknown_grace_ms = 300
enkash.retry_base_ms = 50
enkash.retry_max_ms = 500
enkash.max_attempts = 20
CONF


sub states
{
	return $node->safe_psql('postgres',
		"SELECT string_agg(idempotency_key || '=' || state || coalesce(':' || last_sqlstate, ''), ' ' "
		  . "ORDER BY id) FROM enkash.requests WHERE idempotency_key !~ '^BATCH-new-' AND id > 1");
}

# A key used before, by a queued call.
$node->safe_psql('postgres', "SELECT enkash_get_card_account('CASANDBOX1')");   # a token
$node->safe_psql('postgres', "SELECT enkash_load_balance_async('CASANDBOX1', 'EKCSANDBOX1', 1, 'BATCH-replay')");
$node->poll_query_until('postgres',
	"SELECT state = 'succeeded' FROM enkash.requests WHERE idempotency_key = 'BATCH-replay'")
  or die 'the first load did not succeed';

# The outcome of BATCH-bad cannot be written: the batch's UPDATE of the
# keys fails, and so does that row alone.
$node->safe_psql('postgres', q{
	CREATE FUNCTION public.refuse_bad() RETURNS trigger LANGUAGE plpgsql AS $$
	BEGIN
		IF NEW.key = 'BATCH-bad' AND NEW.state <> 'in_flight' THEN
			RAISE EXCEPTION 'refused for the test';
		END IF;
		RETURN NEW;
	END $$;
	CREATE TRIGGER refuse_bad BEFORE UPDATE ON enkash.idempotency_keys
		FOR EACH ROW EXECUTE FUNCTION public.refuse_bad();
});

# All in flight at once (32 may be), all answered together: one claim, one
# batch of outcomes.
sandbox($url, 'POST', '/__sandbox/faults', '{"latency_ms": 300}');
my $sent_before = loads_sent($url);
$node->safe_psql('postgres', q{
	BEGIN;
	SELECT enkash_load_balance_async('CASANDBOX1', 'EKCSANDBOX1', 1, 'BATCH-new-' || g)
	FROM generate_series(1, 10) g;
	SELECT enkash_load_balance_async('CASANDBOX1', 'EKCSANDBOX1', 1, 'BATCH-replay');
	SELECT enkash_load_balance_async('CASANDBOX1', 'EKCSANDBOX1', 2, 'BATCH-replay');
	SELECT enkash_load_balance_async('CASANDBOX1', 'EKCSANDBOX1', 1, 'BATCH-dup');
	SELECT enkash_load_balance_async('CASANDBOX1', 'EKCSANDBOX1', 1, 'BATCH-dup');
	SELECT enkash_load_balance_async('CASANDBOX1', 'EKCNOSUCHCARD', 1, 'BATCH-declined');
	SELECT enkash_load_balance_async('CASANDBOX1', 'EKCSANDBOX1', 1, 'BATCH-bad');
	SELECT enkash_load_balance_async('CASANDBOX1', 'EKCSANDBOX1', 1, 'BATCH-new-' || g)
	FROM generate_series(11, 20) g;
	COMMIT;
});
$node->poll_query_until('postgres',
	"SELECT count(*) = 0 FROM enkash.requests WHERE idempotency_key LIKE 'BATCH-%' "
	  . "AND idempotency_key <> 'BATCH-bad' AND state NOT IN ('succeeded', 'failed', 'dead')")
  or diag(states());

is($node->safe_psql('postgres',
	"SELECT count(*) FROM enkash.requests WHERE idempotency_key LIKE 'BATCH-new-%' AND state = 'succeeded'"),
	'20', 'the new keys of the batch succeeded');
is(states(),
	'BATCH-replay=succeeded BATCH-replay=failed:NK007 BATCH-dup=succeeded BATCH-dup=succeeded '
	  . 'BATCH-declined=failed:NK001 BATCH-bad=sending',
	'replay, reused key, key queued twice, decline: each final as the ordinary path decides; '
	  . 'the row whose outcome could not be written is still sending');
is($node->safe_psql('postgres',
	"SELECT string_agg(key || '=' || state, ' ' ORDER BY key) FROM enkash.idempotency_keys "
	  . "WHERE key IN ('BATCH-replay', 'BATCH-dup', 'BATCH-declined', 'BATCH-bad')"),
	'BATCH-bad=in_flight BATCH-declined=failed BATCH-dup=succeeded BATCH-replay=succeeded',
	'the keys, one per reference');
is($node->safe_psql('postgres',
	"SELECT count(*) FROM enkash.idempotency_keys k WHERE k.key LIKE 'BATCH-new-%' AND k.state = 'succeeded' "
	  . "AND (SELECT count(*) FROM enkash.audit_log a WHERE a.key_id = k.id AND a.outcome = 'ok' "
	  . "     AND a.http_status = 200 AND a.response IS NOT NULL) = 1"),
	'20', 'each new key has its one audit row, with the answer');
is(loads_sent($url) - $sent_before, 23,
	'sent: the 20 new loads, the key queued twice once, the declined one and the refused one');

# A restart: the refused row was in flight for a sender that is gone, so it
# is unknown, and EnKash is asked before anything is resent.
$node->safe_psql('postgres', 'DROP TRIGGER refuse_bad ON enkash.idempotency_keys');
sandbox($url, 'POST', '/__sandbox/faults', '{"clear": true}');
$node->restart;
$node->poll_query_until('postgres',
	"SELECT state = 'succeeded' FROM enkash.requests WHERE idempotency_key = 'BATCH-bad'")
  or diag(states());
is(loads_sent($url) - $sent_before, 23, 'the refused row was reconciled, not sent again');

my $count = credits_by_prefix($url, 'BATCH-');
is(scalar(keys %$count), 23, 'every reference credited at EnKash (the replayed one by the first call)');
is(join(' ', grep { $count->{$_} != 1 } sort keys %$count), '', 'each exactly once');
ok(!exists $count->{'BATCH-declined'}, 'the declined load credited nothing');
is($node->safe_psql('postgres',
	"SELECT count(*) FROM enkash.requests WHERE idempotency_key LIKE 'BATCH-%' "
	  . "AND state NOT IN ('succeeded', 'failed')"),
	'0', 'every row final');

$node->stop;
done_testing();
