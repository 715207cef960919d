# Spending limits: a daily cap of 5,000 on a card, 8 sessions racing 40
# loads of 1,000 at it: exactly 5 credited, 35 refused with NK010 naming
# the limit, never 6.  A queued load over the cap is held with the reason;
# released after the cap is raised, it is credited once.
use strict;
use warnings;
use lib $ENV{ENKASH_TAP_LIB};
use EnkashTest;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = enkash_node('limits', conf => "max_connections = 40\n");
sandbox('POST', '/__sandbox/reset', '{}');
$node->safe_psql('postgres', q{
	INSERT INTO enkash.limits (scope, target, period, max_amount)
	VALUES ('card', 'EKCSANDBOX1', '1 day', 5000)});

# each session runs its five loads one statement at a time (psql reading
# its standard input goes on after an error)
my @runs;
for my $s (1 .. 8)
{
	my $sql = join('', map { "SELECT enkash_load_balance('CASANDBOX1', 'EKCSANDBOX1', 1000, 'LIM-$s-$_');\n" } 1 .. 5);
	my ($out, $err) = ('', '');
	my $h = IPC::Run::start(
		[ 'psql', '-X', '-At', '-v', 'VERBOSITY=verbose', '-d', $node->connstr('postgres') ],
		'<', \$sql, '>', \$out, '2>', \$err);
	push @runs, [ $h, \$out, \$err ];
}
my ($refused, $other) = (0, '');
for my $r (@runs)
{
	$r->[0]->finish;
	my $err = ${ $r->[2] };
	$refused++ while $err =~ /ERROR:  NK010/g;
	$other .= join("\n", grep { /ERROR/ && !/NK010/ } split /\n/, $err);
}
is($refused, 35, '35 of the 40 racing loads refused with NK010');
is($other, '', 'no other error');
my $credits = credits_by_prefix('LIM-');
is(scalar(keys %$credits), 5, 'exactly 5 loads of 1,000 credited under the 5,000 cap');
is(scalar(grep { $_ != 1 } values %$credits), 0, 'each once');
is($node->safe_psql('postgres',
	"SELECT count(*) FROM enkash.idempotency_keys WHERE key LIKE 'LIM-%'"),
	'5', 'the refused loads claimed no key');

my ($rc, $out, $err) = $node->psql('postgres',
	"SELECT enkash_load_balance('CASANDBOX1', 'EKCSANDBOX1', 1, 'LIM-X')",
	extra_params => [ '-v', 'VERBOSITY=verbose' ]);
like($err, qr/NK010.*spending limit.*DETAIL:.*limit 1 \(card EKCSANDBOX1, 5000 rupees per 1 day\): 5000 rupees in 5 loads so far/s,
	'the refusal names the limit and the total so far');

# queued: held, then released once the cap is raised
my $id = $node->safe_psql('postgres',
	"SELECT enkash_load_balance_async('CASANDBOX1', 'EKCSANDBOX1', 1000, 'LIMQ-1')");
is($node->safe_psql('postgres', "SELECT state, last_error ~ 'limit 1' FROM enkash.requests WHERE id = $id"),
	'held|t', 'a queued load over the cap is held with the reason');
sleep 2;
is(credits('LIMQ-1'), 0, 'a held load is not sent');
$node->safe_psql('postgres', "UPDATE enkash.limits SET max_amount = 6000; SELECT enkash_release($id)");
$node->poll_query_until('postgres', "SELECT state = 'succeeded' FROM enkash.requests WHERE id = $id")
  or diag($node->safe_psql('postgres', "SELECT * FROM enkash.requests WHERE id = $id"));
is(credits('LIMQ-1'), 1, 'released after the cap was raised: credited once');

done_testing();
