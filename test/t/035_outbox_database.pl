# The enkash sender sends the queue of enkash.database only.  CREATE
# EXTENSION in another database warns, and queueing there is refused in the
# caller's transaction instead of waiting forever; in enkash.database a
# queued load is sent.
use strict;
use warnings;
use lib $ENV{ENKASH_TAP_LIB};
use EnkashTest;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = enkash_clean_node('otherdb');
$node->safe_psql('postgres', 'CREATE DATABASE branch');
my ($ret, $out, $err) = $node->psql('branch', 'CREATE EXTENSION enkash');
is($ret, 0, 'CREATE EXTENSION in another database succeeds');
like($err, qr/WARNING:.*enkash\.database is "postgres"/, 'with a warning naming enkash.database');
install_try_sql($node, 'branch');

is($node->safe_psql('branch',
	"SELECT try_sql(\$\$SELECT enkash_load_balance_async('CASANDBOX1', 'EKCSANDBOX1', 1, 'OTHERDB-1')\$\$)"),
	'55000 | cannot queue EnKash requests in database "branch" | '
	  . 'The enkash sender sends only the requests queued in database "postgres" (enkash.database).',
	'a load queued in another database is refused');
is($node->safe_psql('branch',
	"SELECT try_sql(\$\$SELECT enkash_enqueue('get_card_account', "
	  . "'{\"companyId\": \"CEKSANDBOX1\", \"cardAccountId\": \"CASANDBOX1\"}')\$\$)"),
	'55000 | cannot queue EnKash requests in database "branch" | '
	  . 'The enkash sender sends only the requests queued in database "postgres" (enkash.database).',
	'a raw request queued in another database is refused');
is($node->safe_psql('branch', 'SELECT count(*) FROM enkash.requests'), '0', 'nothing was queued there');

my $id = $node->safe_psql('postgres',
	"SELECT enkash_load_balance_async('CASANDBOX1', 'EKCSANDBOX1', 1, 'OTHERDB-2')");
is($node->safe_psql('postgres', "SELECT enkash_wait($id, '20 seconds')->>'state'"),
	'succeeded', 'in enkash.database a queued load is sent');

done_testing();
