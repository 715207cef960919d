# The extension's version changing under running sessions and workers: a
# session that has made calls, and the enkash worker, notice at once when
# another session moves the extension away from the library's version
# (ALTER EXTENSION ... UPDATE TO, to a version whose scripts the test
# provides), and work again when it comes back.  A process remembers that
# the extension is current until pg_extension changes (src/installed.c).
# Look-ups' audit rows still waiting for the worker when the version
# changes are written once it is back, not dropped.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use lib $ENV{ENKASH_TAP_LIB};
use EnkashTest;

my $node = enkash_node('version');
my $current = $node->safe_psql('postgres', "SELECT extversion FROM pg_extension WHERE extname = 'enkash'");
my $other_version = "$current.9";
# the server's own share directory (the test's private installation)
my $extdir = $node->safe_psql('postgres', "SELECT setting FROM pg_config WHERE name = 'SHAREDIR'") . '/extension';
my @scripts = ("$extdir/enkash--$current--$other_version.sql", "$extdir/enkash--$other_version--$current.sql");
PostgreSQL::Test::Utils::append_to_file($_, "-- no change\n") for @scripts;

# The enkash worker is stopped (SIGSTOP) while the first two look-ups are
# made and the version changes, so that their audit rows are still waiting
# when it goes on and finds the extension of another version.
my $worker = $node->safe_psql('postgres',
	"SELECT pid FROM pg_stat_activity WHERE backend_type = 'enkash worker'");
my $other = $node->connstr('postgres');
my $look_up = "SELECT enkash_get_card('CASANDBOX1', 'EKCSANDBOX1') IS NOT NULL AS ok;";
my $log_start = -s $node->logfile;
my ($ret, $out, $err) = $node->psql('postgres', qq{\\set VERBOSITY verbose
\\! kill -STOP $worker
$look_up
$look_up
\\! psql -X -q -d "$other" -c "ALTER EXTENSION enkash UPDATE TO '$other_version'"
\\! kill -CONT $worker
$look_up
SELECT pg_sleep(2);
\\! psql -X -q -d "$other" -c "ALTER EXTENSION enkash UPDATE TO '$current'"
$look_up
}, on_error_stop => 0);
unlink @scripts;

is($out, "t\nt\n\nt", 'the calls before the change and after the change back work');
my @refused = $err =~ /ERROR:  NK012: the enkash extension must be updated before it can be used/g;
is(scalar @refused, 1, 'the call made while the extension was another version is refused');
like($err, qr/version \Q$other_version\E; the server runs the enkash library of version \Q$current\E\./,
	'the refusal names both versions');
like(slurp_file($node->logfile, $log_start),
	qr/enkash sender waits: the enkash extension in database "postgres" is version \Q$other_version\E,/,
	'the enkash sender noticed the change too');
ok($node->poll_query_until('postgres',
	"SELECT count(*) = 3 FROM enkash.audit_log WHERE endpoint = 'get_card'"),
	'every look-up that was made has its audit row, written once the version is back');
$node->stop;
done_testing();
