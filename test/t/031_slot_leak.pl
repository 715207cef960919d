# Sessions ended (FATAL, pg_terminate_backend) while they wait for the enkash
# worker give their shared-memory slots back: after 300 of them, more than
# there are slots, money calls still go through, and none of the ended
# sessions' loads was sent or left claimed.  A raw call whose idempotency key
# is longer than any EnKash identifier (20,000 characters) is refused before
# anything is recorded or sent, and the server goes on.
use strict;
use warnings;
use lib $ENV{ENKASH_TAP_LIB};
use EnkashTest;
use PostgreSQL::Test::Utils;
use Test::More;

my $url = start_private_sandbox();
my $node = enkash_node('slot_leak', sandbox_url => $url, conf => <<'CONF');
max_connections = 60
CONF


$node->safe_psql('postgres', "SELECT enkash_get_card_account('CASANDBOX1')");   # a token

# --- a key too long for any slot ---------------------------------------------
my $long = 'K' x 20000;
my ($rc, $out, $err) = $node->psql('postgres',
	"SELECT enkash_call('load_balance', jsonb_build_object('companyId', 'CEKSANDBOX1', "
	  . "'cardAccountId', 'CASANDBOX1', 'enKashCardId', 'EKCSANDBOX1', 'createdBy', 'test', "
	  . "'amount', 5, 'type', 'CREDIT', 'transactionCode', 'TC1', 'uniqueReferenceNumber', '$long'))",
	extra_params => [ '-v', 'VERBOSITY=verbose' ]);
like($err, qr/ERROR:  22001: the idempotency key is too long: at most 64 characters/,
	'enkash_call with a 20,000-character key is refused with 22001');
($rc, $out, $err) = $node->psql('postgres',
	"SELECT enkash_enqueue('load_balance', jsonb_build_object('uniqueReferenceNumber', '$long'), '$long')",
	extra_params => [ '-v', 'VERBOSITY=verbose' ]);
like($err, qr/ERROR:  22001: the idempotency key is too long/, 'so is enkash_enqueue');
is($node->safe_psql('postgres', 'SELECT 1'), '1', 'the server goes on');
is(loads_sent($url), 0, 'nothing was sent');
is($node->safe_psql('postgres',
	"SELECT count(*) FROM enkash.idempotency_keys WHERE length(key) > 64"), 0, 'nothing was claimed');

# --- 300 sessions ended while waiting ------------------------------------------
# The worker's commit of these keys waits for an advisory lock the test holds,
# so that the sessions wait for their slots' answers when they are ended.
my $holder = hold_worker_commits($node, 'LEAK-%');

my $ended = 0;
for my $round (1 .. 12)
{
	my @sessions;
	for my $i (1 .. 25)
	{
		my ($o, $e) = ('', '');
		push @sessions, IPC::Run::start(
			[ 'psql', '-X', '-At', '-d', $node->connstr('postgres') . ' application_name=leak',
			  '-c', "SELECT enkash_load_balance('CASANDBOX1', 'EKCSANDBOX1', 1, 'LEAK-$round-$i')" ],
			'>', \$o, '2>', \$e);
	}
	$node->poll_query_until('postgres',
		"SELECT count(*) = 25 FROM pg_stat_activity WHERE application_name = 'leak' "
		  . "AND wait_event_type = 'Extension'")
	  or die "round $round: the sessions did not wait";
	$node->safe_psql('postgres',
		"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'leak'");
	$node->poll_query_until('postgres',
		"SELECT count(*) = 0 FROM pg_stat_activity WHERE application_name = 'leak'")
	  or die "round $round: the sessions did not end";
	$_->finish for @sessions;
	$ended += 25;
}
is($ended, 300, '300 sessions ended while waiting for the worker');

release_worker_commits($node, $holder);

($rc, $out, $err) = $node->psql('postgres',
	"SET statement_timeout = '30s'; "
	  . "SELECT enkash_load_balance('CASANDBOX1', 'EKCSANDBOX1', 2, 'AFTER-LEAK') #>> '{status}'");
is($rc, 0, 'a load afterwards goes through') or diag $err;
($rc, $out, $err) = $node->psql('postgres',
	"SET statement_timeout = '30s'; SELECT count(*) FROM "
	  . "generate_series(1, 5) g, enkash_load_balance('CASANDBOX1', 'EKCSANDBOX1', 1, 'AFTER-' || g)");
is($out, '5', 'and so do five more');
is(loads_sent($url), 6, 'only those were sent: none of the ended sessions\' loads');
$node->poll_query_until('postgres',
	"SELECT count(*) = 0 FROM enkash.idempotency_keys WHERE key LIKE 'LEAK-%'")
  or diag 'LEAK keys left: ' . $node->safe_psql('postgres',
	"SELECT state, count(*) FROM enkash.idempotency_keys WHERE key LIKE 'LEAK-%' GROUP BY 1");
is($node->safe_psql('postgres',
	"SELECT count(*) FROM enkash.idempotency_keys WHERE key LIKE 'LEAK-%'"),
	0, 'and none of their claims is left: each was undone');

$node->stop;
done_testing();
