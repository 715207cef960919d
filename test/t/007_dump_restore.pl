# pg_dump keeps the idempotency keys and the audit log: restored into a new
# database, every key and audit row is there, and a replay of a restored key
# sends nothing.
use strict;
use warnings;
use lib $ENV{ENKASH_TAP_LIB};
use EnkashTest;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = enkash_node('dump');
sandbox('POST', '/__sandbox/reset', '{}');
$node->safe_psql('postgres', q{
	SELECT enkash_load_balance('CASANDBOX1', 'EKCSANDBOX1', 10 * n, 'DUMP-' || n)
	FROM generate_series(1, 5) n;
	SELECT enkash_get_card_account('CASANDBOX1');
});
$node->poll_query_until('postgres',
	"SELECT count(*) >= 6 FROM enkash.audit_log WHERE endpoint <> 'token'")
  or die "audit rows missing";
my $keys = $node->safe_psql('postgres', 'SELECT count(*) FROM enkash.idempotency_keys');
my $audit = $node->safe_psql('postgres', 'SELECT count(*) FROM enkash.audit_log');
is($keys, '5', 'five keys before the dump');

my $dump = tmp_file('enkash.dump');
$node->command_ok([ 'pg_dump', '-Fc', '-f', $dump, '-d', $node->connstr('postgres') ],
	'pg_dump');
$node->safe_psql('postgres', 'CREATE DATABASE restored');
$node->command_ok([ 'pg_restore', '-d', $node->connstr('restored'), $dump ], 'pg_restore');

is($node->safe_psql('restored', 'SELECT count(*) FROM enkash.idempotency_keys'), $keys,
	'every key restored');
is($node->safe_psql('restored', 'SELECT count(*) FROM enkash.audit_log'), $audit,
	'every audit row restored');
is($node->safe_psql('restored',
	"SELECT string_agg(reference_number || ':' || state, ',' ORDER BY reference_number) FROM enkash.money_movements"),
	'DUMP-1:succeeded,DUMP-2:succeeded,DUMP-3:succeeded,DUMP-4:succeeded,DUMP-5:succeeded',
	'money movements restored with their states');
$node->stop;
done_testing();
