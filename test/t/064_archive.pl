# Retention: a year of audit rows is archived to a CSV file and exactly the
# exported rows are removed (count and checksum of the file's rows match the
# removed ones); a failed export removes nothing, and nothing else removes
# audit rows.  The worker deletes finished queued requests past
# enkash.queue_retention_days and keeps the others.  A load replayed after
# its key expired is looked up at EnKash and not credited twice.
use strict;
use warnings;
use lib $ENV{ENKASH_TAP_LIB};
use EnkashTest;
use PostgreSQL::Test::Utils;
use Test::More;

sandbox('POST', '/__sandbox/reset', '{}');
sandbox('POST', '/__sandbox/faults', '{"clear": true}');
my $node = enkash_node('archive', conf => <<'CONF');
enkash.key_retention_days = 3
enkash.queue_retention_days = 5
enkash.unknown_grace_ms = 500
enkash.retry_base_ms = 100
CONF

# --- archiving the audit log -------------------------------------------------

# A year of synthetic exchanges, an "answer" row naming its "sent" row.
$node->safe_psql('postgres', q{
	INSERT INTO enkash.audit_log (at, role, endpoint, idempotency_key, outcome, http_status,
	                              latency_ms, request, response)
	SELECT now() - make_interval(hours => h), 'payroll', 'load_balance', 'AR-' || h,
	       'sent', NULL, NULL, jsonb_build_object('amount', h, 'note', 'a "quoted", text'), NULL
	FROM generate_series(1, 365 * 24, 3) h;
	INSERT INTO enkash.audit_log (at, role, endpoint, idempotency_key, sent_id, outcome,
	                              http_status, latency_ms, response)
	SELECT s.at + interval '1 second', s.role, s.endpoint, s.idempotency_key, s.id, 'ok', 200,
	       12.5 + s.id / 7.0, '{"responseCode": "200"}'
	FROM enkash.audit_log s WHERE s.idempotency_key LIKE 'AR-%';
});
my $cutoff = "date_trunc('month', now()) - interval '6 months'";
my $summary = sub {
	my ($table, $where) = @_;
	return $node->safe_psql('postgres',
		"SELECT count(*) || ':' || coalesce(sum(hashtextextended(t::text, 0)), 0) FROM $table t WHERE $where");
};
my $old = $summary->('enkash.audit_log', "at < $cutoff");
my $recent = $summary->('enkash.audit_log', "at >= $cutoff");
like($old, qr/^[1-9]\d*:/, "there are rows older than the cutoff ($old)");

# Nothing but archiving removes audit rows.
my ($rc, $out, $err) = $node->psql('postgres', "DELETE FROM enkash.audit_log WHERE at < $cutoff");
like($err, qr/enkash.audit_log rows are removed only by archiving them/, 'a plain DELETE is refused');
($rc, $out, $err) = $node->psql('postgres', 'TRUNCATE enkash.audit_log');
like($err, qr/removed only by archiving them/, 'TRUNCATE is refused');
($rc, $out, $err) = $node->psql('postgres', "UPDATE enkash.audit_log SET outcome = 'ok'");
like($err, qr/append-only/, 'an UPDATE is refused');

# A failed export removes nothing.
($rc, $out, $err) = $node->psql('postgres',
	"SELECT enkash_archive_audit($cutoff, '/nonexistent-enkash-dir/audit.csv')");
isnt($rc, 0, 'archiving to an unwritable path fails');
like($err, qr/could not open file/, 'with the file error');
is($summary->('enkash.audit_log', "at < $cutoff"), $old, 'and every old row is still there');
is($node->safe_psql('postgres', 'SELECT count(*) FROM enkash.audit_archives'), '0',
	'no archive is recorded');
($rc, $out, $err) = $node->psql('postgres',
	"\\set VERBOSITY verbose\nSELECT enkash_archive_audit($cutoff, 'relative.csv')");
like($err, qr/22023: archiving needs a date and an absolute path/, 'a relative path is refused');

# Archiving exports, then removes exactly the exported rows.
my $file = $node->basedir . '/audit-archive.csv';
my $archived = $node->safe_psql('postgres',
	"SELECT rows || ':' || checksum FROM enkash_archive_audit($cutoff, '$file')");
is($archived, $old, 'the archive record counts and checksums the old rows');
ok(-s $file, 'the file is written');
is($node->safe_psql('postgres', "SELECT count(*) FROM enkash.audit_log WHERE at < $cutoff"), '0',
	'no row older than the cutoff is left');
is($summary->('enkash.audit_log', "at >= $cutoff"), $recent, 'the recent rows are untouched');
my $reloaded = $node->safe_psql('postgres', qq{
	CREATE TEMP TABLE back (LIKE enkash.audit_log);
	COPY back FROM '$file' WITH (FORMAT csv, HEADER);
	SELECT count(*) || ':' || coalesce(sum(hashtextextended(t::text, 0)), 0) FROM back t});
is($reloaded, $old, "the file's rows are exactly the removed ones (count and checksum)");
is($node->safe_psql('postgres', q{
	SELECT count(*) FROM enkash.audit_log a
	WHERE a.sent_id IS NOT NULL AND NOT EXISTS (SELECT FROM enkash.audit_log s WHERE s.id = a.sent_id)}),
	'0', 'every answer left still finds its "sent" row');

# Archiving again removes nothing more.
is($node->safe_psql('postgres',
	"SELECT rows FROM enkash_archive_audit($cutoff, '" . $node->basedir . "/again.csv')"),
	'0', 'a second archiving of the same period has nothing to export');

# --- finished queued requests ------------------------------------------------

$node->safe_psql('postgres', q{
	INSERT INTO enkash.requests (endpoint, body, idempotency_key, state, finished_at, updated_at, next_attempt_at)
	VALUES ('load_balance', '{}', 'QR-OLD-OK', 'succeeded', now() - interval '6 days', now() - interval '6 days', now()),
	       ('load_balance', '{}', 'QR-OLD-FAILED', 'failed', now() - interval '6 days', now() - interval '6 days', now()),
	       ('load_balance', '{}', 'QR-OLD-DEAD', 'dead', now() - interval '9 days', now() - interval '9 days', now()),
	       ('load_balance', '{}', 'QR-RECENT-OK', 'succeeded', now() - interval '4 days', now() - interval '4 days', now()),
	       ('load_balance', '{}', 'QR-OLD-UNKNOWN', 'unknown', NULL, now() - interval '30 days', now() + interval '1 year'),
	       ('load_balance', '{}', 'QR-OLD-PENDING', 'pending', NULL, now() - interval '30 days', now() + interval '1 year');
});

# --- a load replayed after its key expired ----------------------------------

is($node->psql('postgres', "SELECT enkash_load_balance('CASANDBOX1', 'EKCSANDBOX1', 10, 'EXP-SYNC')"),
	0, 'a load is made');
$node->safe_psql('postgres',
	"SELECT enkash_load_balance_async('CASANDBOX1', 'EKCSANDBOX1', 10, 'EXP-QUEUED')");
ok($node->poll_query_until('postgres',
	"SELECT state = 'succeeded' FROM enkash.requests WHERE idempotency_key = 'EXP-QUEUED'"),
	'a queued load is sent');
is(credits($_), 1, "$_ is credited once") for qw(EXP-SYNC EXP-QUEUED);
# Their keys finished long ago (the request row too, for the queued one).
$node->safe_psql('postgres', q{
	UPDATE enkash.idempotency_keys SET finished_at = now() - interval '4 days'
	WHERE key IN ('EXP-SYNC', 'EXP-QUEUED')});

# The worker tidies up when it starts, then every minute.
$node->restart;
ok($node->poll_query_until('postgres',
	"SELECT count(*) = 0 FROM enkash.requests WHERE idempotency_key LIKE 'QR-OLD-%' AND state IN ('succeeded', 'failed', 'dead')"),
	'finished queued requests past the retention are deleted');
is($node->safe_psql('postgres',
	"SELECT string_agg(idempotency_key, ',' ORDER BY idempotency_key) FROM enkash.requests WHERE idempotency_key LIKE 'QR-%'"),
	'QR-OLD-PENDING,QR-OLD-UNKNOWN,QR-RECENT-OK', 'recent, pending and unknown ones are kept');
like(slurp_file($node->logfile), qr/purged 3 finished queued requests older than 5 days/,
	'the purge is logged');
ok($node->poll_query_until('postgres',
	"SELECT count(*) = 0 FROM enkash.idempotency_keys WHERE key LIKE 'EXP-%'"),
	'the expired keys are purged');
is($node->safe_psql('postgres',
	"SELECT string_agg(key, ',' ORDER BY key) FROM enkash.expired_keys"),
	'EXP-QUEUED,EXP-SYNC', 'their reference numbers are kept as expired');

my $lookups = sub {
	my $requests = sandbox('GET', '/__sandbox/requests');
	return $requests =~ m{"/api/v0/partner/enKashCard/transaction/all"\s*:\s*(\d+)} ? $1 : 0;
};
my $asked = $lookups->();
($rc, $out, $err) = $node->psql('postgres',
	"SELECT enkash_load_balance('CASANDBOX1', 'EKCSANDBOX1', 10, 'EXP-SYNC') IS NOT NULL");
is($rc, 0, 'the replay after the key expired returns');
like($err, qr/EnKash already has the load with reference "EXP-SYNC"; it was not sent again/,
	'it says EnKash already had the load');
cmp_ok($lookups->(), '>', $asked, 'EnKash was asked before anything was sent');
is(credits('EXP-SYNC'), 1, 'EXP-SYNC is not credited a second time');

$node->safe_psql('postgres',
	"SELECT enkash_load_balance_async('CASANDBOX1', 'EKCSANDBOX1', 10, 'EXP-QUEUED')");
ok($node->poll_query_until('postgres',
	"SELECT state = 'succeeded' FROM enkash.requests WHERE idempotency_key = 'EXP-QUEUED' ORDER BY id DESC LIMIT 1"),
	'the queued replay ends succeeded');
is(credits('EXP-QUEUED'), 1, 'EXP-QUEUED is not credited a second time');

# A reference number never used is sent as usual.
is($node->psql('postgres', "SELECT enkash_load_balance('CASANDBOX1', 'EKCSANDBOX1', 10, 'EXP-NEW')"),
	0, 'a new load works');
is(credits('EXP-NEW'), 1, 'and is credited once');
$node->stop;
done_testing();
