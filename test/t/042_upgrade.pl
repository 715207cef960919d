# ALTER EXTENSION enkash UPDATE from 0.1, as a DBA does it: enkash 0.1's
# library and script make keys (one left unknown), audit rows and queued
# requests; the server is restarted on 0.2's library and the extension
# updated.  Then the database's enkash objects are what a fresh 0.2 install
# has (pg_dump), grants included, and the 0.1 records keep working: the
# unknown key is reconciled with one credit, the queued loads are sent.
use strict;
use warnings;
use lib $ENV{ENKASH_TAP_LIB};
use EnkashTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

plan skip_all => 'enkash 0.1 was not built (no git history of it in this clone; see test/lib.sh)'
  unless $ENV{ENKASH_OLD_INSTALL};

sandbox('POST', '/__sandbox/reset', '{}');
sandbox('POST', '/__sandbox/faults', '{"clear": true}');

# --- enkash 0.1 --------------------------------------------------------------
my $node = enkash_node('upgrade', install_path => $ENV{ENKASH_OLD_INSTALL},
	conf => "enkash.unknown_grace_ms = 1000\nenkash.retry_base_ms = 200\nenkash.retry_max_ms = 1000\n");
is($node->safe_psql('postgres', "SELECT extversion FROM pg_extension WHERE extname = 'enkash'"),
	'0.1', 'enkash 0.1 is installed');

# Grants on a function 0.2 drops and creates again, and on one it keeps.
my $grants = q{
	CREATE ROLE upgrade_reader;
	GRANT USAGE ON SCHEMA enkash TO upgrade_reader;
	GRANT SELECT ON enkash.money_movements TO upgrade_reader;
	GRANT EXECUTE ON FUNCTION enkash_get_card, enkash_load_balance TO upgrade_reader;
};
$node->safe_psql('postgres', $grants);

$node->safe_psql('postgres',
	"SELECT enkash_load_balance('CASANDBOX1', 'EKCSANDBOX1', 10, 'UPGRADE-OK')");

# EnKash credits the load and the answer is lost: the key is unknown.
sandbox('POST', '/__sandbox/faults', '{"drop": {"count": 1, "after_apply": true}}');
my ($ret, $out, $err) = $node->psql('postgres',
	"SELECT enkash_load_balance('CASANDBOX1', 'EKCSANDBOX1', 20, 'UPGRADE-UNKNOWN')");
like($err, qr/no answer from EnKash for the card load/, 'under 0.1 a dropped answer leaves the outcome unknown');
sandbox('POST', '/__sandbox/faults', '{"clear": true}');
is(credits('UPGRADE-UNKNOWN'), 1, 'EnKash credited the load whose answer was lost');

# EnKash declines a load: the key is failed, with the SQLSTATE 0.1 raised.
sandbox('POST', '/__sandbox/faults', '{"business_error": {"count": 1, "message": "Insufficient balance"}}');
($ret, $out, $err) = $node->psql('postgres',
	"\\set VERBOSITY verbose\nSELECT enkash_load_balance('CASANDBOX1', 'EKCSANDBOX1', 30, 'UPGRADE-DECLINED')");
like($err, qr/ERROR:  EK001: /, 'under 0.1 a declined load raises class EK');

# Queued loads that cannot leave yet (EnKash unreachable: nothing sent).
$node->safe_psql('postgres',
	"ALTER SYSTEM SET enkash.base_url = 'http://127.0.0.1:1/api/v0/partner/enKashCard'");
$node->restart;
$node->safe_psql('postgres',
	"SELECT enkash_load_balance_async('CASANDBOX1', 'EKCSANDBOX1', 5, 'UPGRADE-Q' || n) FROM generate_series(1, 3) n");
$node->poll_query_until('postgres',
	"SELECT count(*) = 3 FROM enkash.requests WHERE state = 'pending' AND attempts >= 1")
  or die 'the queued loads were not tried';
$node->poll_query_until('postgres',
	"SELECT count(*) > 0 FROM enkash.audit_log WHERE idempotency_key = 'UPGRADE-UNKNOWN'")
  or die 'no audit row for the unknown load';
is($node->safe_psql('postgres',
	"SELECT string_agg(key || ':' || state, ',' ORDER BY key) FROM enkash.idempotency_keys"),
	'UPGRADE-DECLINED:failed,UPGRADE-OK:succeeded,UPGRADE-UNKNOWN:unknown', 'the keys 0.1 made');
my $audit = $node->safe_psql('postgres', 'SELECT count(*) FROM enkash.audit_log');
# EnKash reachable again from the next start.
$node->safe_psql('postgres', 'ALTER SYSTEM RESET enkash.base_url');
$node->stop;

# --- the 0.2 library, then ALTER EXTENSION UPDATE ----------------------------
delete $node->{_install_path};    # this run's own installation, first on PATH
my $log_start = -s $node->logfile;
$node->start;

# Between the restart and the update the library waits for the update: each
# background worker says so once, SQL calls are refused at once, nothing is
# recorded or sent.
$node->wait_for_log(qr/enkash worker waits: the enkash extension in database "postgres" is version 0\.1, the library is version 0\.2/, $log_start);
$node->wait_for_log(qr/enkash sender waits: the enkash extension/, $log_start);
for my $call (
	[ 'a money call', "SELECT enkash_load_balance('CASANDBOX1', 'EKCSANDBOX1', 7, 'UPGRADE-WINDOW')" ],
	[ 'a queued load', "SELECT enkash_load_balance_async('CASANDBOX1', 'EKCSANDBOX1', 7, 'UPGRADE-WINDOW-Q')" ],
	[ 'a look-up', "SELECT enkash_get_card('CASANDBOX1', 'EKCSANDBOX1')" ])
{
	my ($label, $sql) = @$call;
	my $t0 = time;
	my ($r, $o, $e) = $node->psql('postgres', "\\set VERBOSITY verbose\nSET statement_timeout = '60s';\n$sql");
	like($e, qr/ERROR:  NK012: the enkash extension must be updated before it can be used/, "$label before the update is refused");
	like($e, qr/HINT:  ALTER EXTENSION enkash UPDATE/, "$label: the hint names the update");
	ok(time - $t0 < 20, "$label: refused at once");
}
sleep 3;    # the workers' loops go round a few times
is($node->safe_psql('postgres',
	"SELECT count(*) FROM enkash.idempotency_keys WHERE key LIKE 'UPGRADE-WINDOW%'"), '0',
	'no key was recorded for the refused calls');
is($node->safe_psql('postgres', "SELECT string_agg(DISTINCT state, ',') FROM enkash.requests"),
	'pending', 'the queued loads stay queued');
is($node->safe_psql('postgres', 'SELECT count(*) FROM enkash.requests'), '3', 'nothing more was queued');
is(loads_sent(), 3, 'nothing reached EnKash before the update');
my $window = substr(slurp_file($node->logfile), $log_start);
is(scalar(() = $window =~ /enkash worker waits:/g), 1, 'the worker said once that it waits');
is(scalar(() = $window =~ /enkash sender waits:/g), 1, 'the sender said once that it waits');
unlike($window, qr/does not exist|terminated by signal|exited with exit code/,
	'no background worker failed on the 0.1 tables');

$node->safe_psql('postgres', 'ALTER EXTENSION enkash UPDATE');
is($node->safe_psql('postgres', "SELECT extversion FROM pg_extension WHERE extname = 'enkash'"),
	'0.2', 'updated to 0.2');
is($node->safe_psql('postgres', 'SELECT count(*) >= ' . $audit . ' FROM enkash.audit_log'), 't',
	'every audit row is kept');

# (a) The same objects, definitions, comments and privileges as a fresh 0.2.
$node->safe_psql('postgres', 'CREATE DATABASE fresh');
$node->safe_psql('fresh', 'CREATE EXTENSION enkash');
$node->safe_psql('fresh', $grants =~ s/CREATE ROLE upgrade_reader;//r);

# --binary-upgrade makes pg_dump write every member of the extension (as
# pg_upgrade needs), with its initial and granted privileges.
sub schema
{
	my ($db) = @_;
	my ($stdout, $stderr);
	IPC::Run::run([ 'pg_dump', '--schema-only', '--binary-upgrade', '-d', $node->connstr($db) ], '>', \$stdout, '2>', \$stderr)
	  or die "pg_dump $db: $stderr";
	# Object ids differ between any two databases.
	$stdout =~ s/^SELECT pg_catalog\.binary_upgrade_set_next_\w+\(.*\n//mg;
	$stdout =~ s/^(SELECT pg_catalog\.binary_upgrade_create_empty_extension\(.*?)'\{[0-9,]+\}'/$1'{oids}'/mg;
	$stdout =~ s/^SET relfrozenxid = .*\n//mg;
	$stdout =~ s/^WHERE oid = '[0-9]+';\n//mg;
	# pg_dump's random key for psql
	$stdout =~ s/^\\(un)?restrict .*\n//mg;
	# Where the sequences stand is data.
	$stdout =~ s/^SELECT pg_catalog\.setval\(.*\n//mg;
	$stdout =~ s/^-- Name: .*\n//mg;
	# A column added by ALTER TABLE comes last: compare the columns as a set.
	$stdout =~ s{(CREATE TABLE enkash\.idempotency_keys \(\n)(.*?)(\n\);)}{
		$1 . join("\n", sort map { s/,$//r } split /\n/, $2) . $3}se;
	return $stdout;
}
my ($upgraded, $fresh) = (schema('postgres'), schema('fresh'));
ok($fresh =~ /enkash_check/ && $fresh =~ /owner_deadline/, 'the dump holds the extension\'s members');
is($upgraded, $fresh, 'pg_dump of the updated database equals a fresh 0.2 install\'s')
  or do {
	my $dir = ${PostgreSQL::Test::Utils::tmp_check};
	PostgreSQL::Test::Utils::append_to_file("$dir/upgraded.sql", $upgraded);
	PostgreSQL::Test::Utils::append_to_file("$dir/fresh.sql", $fresh);
	diag(scalar `diff -u $dir/fresh.sql $dir/upgraded.sql | head -80`);
  };

# (b) The 0.1 records work under 0.2, and so does the call refused before.
is($node->safe_psql('postgres',
	"SELECT enkash_load_balance('CASANDBOX1', 'EKCSANDBOX1', 7, 'UPGRADE-WINDOW') IS NOT NULL"),
	't', 'the call refused before the update works after it');
is($node->safe_psql('postgres',
	"SELECT enkash_load_balance('CASANDBOX1', 'EKCSANDBOX1', 20, 'UPGRADE-UNKNOWN') IS NOT NULL"),
	't', 'the 0.1 unknown load is reconciled under 0.2');
is($node->safe_psql('postgres',
	"SELECT state FROM enkash.idempotency_keys WHERE key = 'UPGRADE-UNKNOWN'"),
	'succeeded', 'its key succeeded');
$node->poll_query_until('postgres',
	"SELECT count(*) = 3 FROM enkash.requests WHERE state = 'succeeded'")
  or diag($node->safe_psql('postgres', 'SELECT state, last_error FROM enkash.requests'));
is($node->safe_psql('postgres', "SELECT count(*) FROM enkash.requests WHERE state = 'succeeded'"),
	'3', 'the loads queued under 0.1 are sent');
my $loads_before_replay = loads_sent();
($ret, $out, $err) = $node->psql('postgres',
	"\\set VERBOSITY verbose\nSELECT enkash_load_balance('CASANDBOX1', 'EKCSANDBOX1', 30, 'UPGRADE-DECLINED')");
like($err, qr/ERROR:  NK001: .*Insufficient balance/s, 'the load 0.1 saw declined replays its error in class NK');
is(loads_sent(), $loads_before_replay, 'the replay sent nothing');
is_deeply(credits_by_prefix('UPGRADE-'),
	{ 'UPGRADE-OK' => 1, 'UPGRADE-UNKNOWN' => 1, 'UPGRADE-Q1' => 1, 'UPGRADE-Q2' => 1,
	  'UPGRADE-Q3' => 1, 'UPGRADE-WINDOW' => 1 },
	'one credit per reference at EnKash');
is($node->safe_psql('postgres',
	"SELECT count(*) FROM enkash.audit_log s WHERE s.outcome = 'sent' AND NOT EXISTS
	   (SELECT 1 FROM enkash.audit_log a WHERE a.sent_id = s.id)"),
	'0', 'every sent audit row is answered');
is($node->safe_psql('postgres', q{SET ROLE upgrade_reader;
	SELECT count(*) FROM enkash.money_movements}), '7',
	'a role granted under 0.1 still reads the money movements');
$node->stop;
done_testing();
