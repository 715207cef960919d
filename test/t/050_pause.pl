# The pause switch: with enkash.sending off nothing that moves money reaches
# EnKash (synchronous loads refuse with NK009, queued ones wait pending with
# no attempt counted) while look-ups go on; on again, the queue drains:
# exactly one credit per queued load, none for the refused ones.
use strict;
use warnings;
use lib $ENV{ENKASH_TAP_LIB};
use EnkashTest;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = enkash_node('pause', conf => "enkash.max_concurrency = 4\n");
sandbox('POST', '/__sandbox/reset', '{}');

$node->safe_psql('postgres', 'ALTER SYSTEM SET enkash.sending = off; SELECT pg_reload_conf();');
$node->poll_query_until('postgres', "SELECT current_setting('enkash.sending') = 'off'")
  or die 'enkash.sending did not change';

$node->safe_psql('postgres', q{
	SELECT enkash_load_balance_async('CASANDBOX1', 'EKCSANDBOX1', 10, 'PAUSE-Q-' || g)
	FROM generate_series(1, 100) g});

my $refused = 0;
for my $i (1 .. 10)
{
	my ($rc, $out, $err) = $node->psql('postgres',
		"SELECT enkash_load_balance('CASANDBOX1', 'EKCSANDBOX1', 10, 'PAUSE-S-$i')",
		extra_params => [ '-v', 'VERBOSITY=verbose' ]);
	$refused++ if $rc != 0 && $err =~ /NK009/ && $err =~ /sending to EnKash is paused/;
}
is($refused, 10, 'the 10 synchronous loads are refused with NK009 and a clear message');

my $lookup = $node->safe_psql('postgres',
	"SELECT enkash_get_card_account('CASANDBOX1') IS NOT NULL");
is($lookup, 't', 'look-ups keep working while paused');

# the sender wakes on the commit and at least every second: give it time
sleep 3;
is(loads_sent(), 0, 'no load reached EnKash while paused');
is($node->safe_psql('postgres',
	"SELECT count(*) FILTER (WHERE state = 'pending' AND attempts = 0) FROM enkash.requests"),
	'100', 'the 100 queued loads wait pending, no attempt counted');
is($node->safe_psql('postgres',
	"SELECT count(*) FROM enkash.idempotency_keys WHERE key LIKE 'PAUSE-%'"),
	'0', 'no key was claimed');

$node->safe_psql('postgres', 'ALTER SYSTEM SET enkash.sending = on; SELECT pg_reload_conf();');
$node->poll_query_until('postgres',
	"SELECT count(*) = 100 FROM enkash.requests WHERE state = 'succeeded'")
  or diag($node->safe_psql('postgres', 'SELECT state, count(*) FROM enkash.requests GROUP BY 1'));

my $queued = credits_by_prefix('PAUSE-Q-');
is(scalar(keys %$queued), 100, 'on again: the 100 queued loads were credited');
is(scalar(grep { $_ != 1 } values %$queued), 0, 'each exactly once');
is(scalar(keys %{ credits_by_prefix('PAUSE-S-') }), 0, 'the refused synchronous loads never were');

done_testing();
