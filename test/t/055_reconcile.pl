# Reconciliation: enkash_reconcile judges every reference of a window (our
# loads against EnKash's credits, every page of the listing read), and
# enkash_reconcile_store keeps exactly the mismatches and announces each
# with NOTIFY enkash, and records every run, which enkash.health shows.  Bad
# input is refused before anything is sent.
use strict;
use warnings;
use lib $ENV{ENKASH_TAP_LIB};
use EnkashTest;
use PostgreSQL::Test::Utils;
use Test::More;

my $url = start_private_sandbox();
# Two transactions a page: the listing of a window takes several pages.
my $node = enkash_node('reconcile', sandbox_url => $url, conf => <<'CONF');
enkash.page_size = 2
CONF
install_try_sql($node);

sub requests_total
{
	return sandbox_json($url, 'GET', '/__sandbox/requests', 'total');
}

sub listings
{
	my $requests = sandbox($url, 'GET', '/__sandbox/requests');
	return $requests =~ m{"/api/v0/partner/enKashCard/transaction/all"\s*:\s*(\d+)} ? $1 : 0;
}

# A credit at EnKash that enkash did not ask for.
sub seed_credit
{
	my ($reference, $amount) = @_;
	my $answer = sandbox($url, 'POST', '/__sandbox/credit', qq({
		"companyId": "CEKSANDBOX1", "cardAccountId": "CASANDBOX1", "enKashCardId": "EKCSANDBOX1",
		"amount": $amount, "uniqueReferenceNumber": "$reference", "transactionType": "CR",
		"type": "ALLOCATE_FUND", "transactionCode": "ALLOCATION", "createdBy": "elsewhere"}));
	like($answer, qr/"code":\s*0/, "EnKash credits $amount under $reference on its own");
}

sub load
{
	my ($reference, $amount) = @_;
	return $node->safe_psql('postgres', qq{
		SELECT try_sql(\$\$SELECT enkash_load_balance('CASANDBOX1', 'EKCSANDBOX1', $amount, '$reference')\$\$)});
}

# The next load is answered with success and never credited.
sub lose_next_load
{
	like(sandbox($url, 'POST', '/__sandbox/faults', '{"processing": {"mode": "lose", "ms": 0, "count": 1, "path": "/balance"}}'),
		qr/"ok":\s*true/, 'EnKash will lose the next load');
}

# reference => verdict over a window
sub verdicts
{
	my ($since, $settle) = @_;
	my $rows = $node->safe_psql('postgres', qq{
		SELECT reference || ' ' || verdict FROM enkash_reconcile('CASANDBOX1', '$since', clock_timestamp(), '$settle')
		ORDER BY reference});
	return { map { split / / } split /\n/, $rows };
}

sub health
{
	return $node->safe_psql('postgres', "SELECT $_[0] FROM enkash.health");
}

# Bad input: refused, nothing sent (not even a token call).
my $before = requests_total();
like($node->safe_psql('postgres', q{SELECT try_sql($$SELECT * FROM enkash_reconcile(NULL, now() - interval '1 day', now())$$)}),
	qr/^22004 \| reconciliation needs a card account/, 'a NULL card account is refused');
like($node->safe_psql('postgres', q{SELECT try_sql($$SELECT * FROM enkash_reconcile('CASANDBOX1', now(), now() - interval '1 day')$$)}),
	qr/^22023 \| the reconciliation window is not a window/, 'a window ending before it begins is refused');
like($node->safe_psql('postgres', q{SELECT try_sql($$SELECT enkash_reconcile_store('CASANDBOX1', NULL, now())$$)}),
	qr/^22004 /, 'the store refuses a NULL window too');
is(requests_total(), $before, 'nothing was sent for bad input');
is(health(q{concat_ws(' ', last_reconciliation_at IS NULL, last_reconciliation_mismatches IS NULL, open_mismatches)}),
	't t 0', 'no run yet (a refused one leaves no trace): no last reconciliation, nothing open');

# A clean window: ordinary loads and a declined one are all ok.
my $clean = $node->safe_psql('postgres', 'SELECT clock_timestamp()');
is(load("REC-CLEAN-$_", 10 * $_), 'ok', "ordinary load $_") for 1 .. 5;
like(load('REC-CLEAN-DECLINED', 9000000), qr/^NK001 /, 'a load EnKash declines');
my $listings = listings();
my $v = verdicts($clean, '0');
# five credits two a page: three pages, plus the declined load asked by reference
cmp_ok(listings() - $listings, '>=', 3, 'every page of the window was read');
is(scalar(keys %$v), 6, 'the clean window has a row per reference');
is_deeply([ sort values %$v ], [ ('ok') x 6 ], 'a clean window is all ok');

# The mismatches, and ordinary loads among them.
my $mixed = $node->safe_psql('postgres', 'SELECT clock_timestamp()');
is(load('REC-FINE-1', 10), 'ok', 'an ordinary load');
seed_credit('REC-GHOST', 70);
lose_next_load();
is(load('REC-LOST', 40), 'ok', 'a load EnKash answers with success and loses');
is(load('REC-TWICE', 50), 'ok', 'a load EnKash will credit twice');
seed_credit('REC-TWICE', 50);
lose_next_load();
is(load('REC-AMOUNT', 60), 'ok', 'a load EnKash credits with another amount');
seed_credit('REC-AMOUNT', 61);
sandbox($url, 'POST', '/__sandbox/faults', '{"drop": {"count": 1, "after_apply": true, "path": "/balance"}}');
like(load('REC-UNKNOWN', 30), qr/^NK006 /, 'a load credited whose answer was lost is unknown here');
is(load('REC-FINE-2', 20), 'ok', 'another ordinary load');
is(credits($url, 'REC-TWICE'), 2, 'the sandbox holds two credits for REC-TWICE');
is(credits($url, 'REC-LOST'), 0, 'and none for REC-LOST');

$v = verdicts($mixed, '0');
is_deeply($v, {
	'REC-FINE-1' => 'ok', 'REC-FINE-2' => 'ok', 'REC-UNKNOWN' => 'ok',
	'REC-GHOST' => 'unknown_here', 'REC-LOST' => 'missing_at_enkash',
	'REC-TWICE' => 'credited_twice', 'REC-AMOUNT' => 'amount_differs' },
	'each reference gets its verdict') or diag explain $v;
is($node->safe_psql('postgres', qq{
	SELECT our_state || ' ' || our_amount || ' ' || enkash_amount || ' ' || enkash_credits
	FROM enkash_reconcile('CASANDBOX1', '$mixed', clock_timestamp(), '0')
	WHERE reference IN ('REC-AMOUNT', 'REC-TWICE', 'REC-UNKNOWN') ORDER BY reference}),
	"succeeded 60 61 1\nsucceeded 50 100 2\nunknown 30 30 1",
	'amounts and credits as each side has them');
like($node->safe_psql('postgres', qq{
	SELECT note FROM enkash_reconcile('CASANDBOX1', '$mixed', clock_timestamp(), '0')
	WHERE reference = 'REC-UNKNOWN'}),
	qr/credited it; our record is still unknown/, 'an unknown load EnKash credited is ok, and says so');
is(verdicts($mixed, '1 hour')->{'REC-LOST'}, 'pending', 'a load finished just now is not judged missing yet');
is($node->safe_psql('postgres', qq{
	BEGIN;
	SELECT enkash_load_balance_async('CASANDBOX1', 'EKCSANDBOX1', 15, 'REC-QUEUED') IS NOT NULL;
	SELECT verdict || ' ' || our_state FROM enkash_reconcile('CASANDBOX1', '$mixed', clock_timestamp(), '0')
	WHERE reference = 'REC-QUEUED';
	ROLLBACK;}), "t\npending pending", 'a queued load is pending');

# The store: exactly the mismatches, each announced to a listening session.
my $listener = $node->background_psql('postgres');
$listener->query_safe('LISTEN enkash');
is($node->safe_psql('postgres', qq{SELECT enkash_reconcile_store('CASANDBOX1', '$mixed', clock_timestamp(), '0')}),
	'4', 'the store keeps the four mismatches');
is($node->safe_psql('postgres', q{
	SELECT string_agg(reference || ' ' || verdict, ', ' ORDER BY reference)
	FROM enkash.reconciliation WHERE resolved_at IS NULL}),
	'REC-AMOUNT amount_differs, REC-GHOST unknown_here, REC-LOST missing_at_enkash, REC-TWICE credited_twice',
	'enkash.reconciliation holds exactly the mismatches');
is(health(q{concat_ws(' ', last_reconciliation_at IS NOT NULL, last_reconciliation_mismatches, open_mismatches)}),
	't 4 4', 'the health view: the run found four mismatches, four open');
my $heard = $listener->query_safe('SELECT 1');
my @payloads = $heard =~ /Asynchronous notification "enkash" with payload "(.*?)" received/g;
is(scalar(@payloads), 4, 'the listener heard one notification per mismatch');
my $ids = $node->safe_psql('postgres', 'SELECT string_agg(id::text, \',\' ORDER BY id) FROM enkash.reconciliation');
is(join(',', sort { $a <=> $b } map { /"id"\s*:\s*(\d+)/ ? $1 : 0 } @payloads), $ids,
	'each payload names its row');
ok((grep { /"event"\s*:\s*"reconciliation_mismatch"/ } @payloads) == 4, 'each payload is a reconciliation_mismatch event');
$listener->quit;

is($node->safe_psql('postgres', qq{SELECT enkash_reconcile_store('CASANDBOX1', '$mixed', clock_timestamp(), '0')}),
	'0', 'a second run stores no mismatch still open');
is(health(q{concat_ws(' ', last_reconciliation_mismatches, open_mismatches)}),
	'4 4', 'the health view: the second run found the four again, still four open');
my $mismatched_at = health('last_reconciliation_at');
is($node->safe_psql('postgres', qq{SELECT enkash_reconcile_store('CASANDBOX1', '$clean', '$mixed', '0')}),
	'0', 'a clean window stores nothing');
is($node->safe_psql('postgres', qq{
	SELECT string_agg(concat_ws(' ', card_account_id, since = '$mixed', until = '$mixed', mismatches, stored), ', ' ORDER BY id)
	FROM enkash.reconciliation_runs}),
	'CASANDBOX1 t f 4 4, CASANDBOX1 t f 4 0, CASANDBOX1 f t 0 0',
	'enkash.reconciliation_runs holds each run: its window, the mismatches it found and stored');
is(health(qq{concat_ws(' ', last_reconciliation_at > '$mismatched_at', last_reconciliation_mismatches, open_mismatches)}),
	't 0 4', 'the health view: a later clean run found nothing, the four stay open');

# A person closes a mismatch.
is($node->safe_psql('postgres', q{
	SELECT enkash_reconciliation_resolve(id, 'EnKash reversed it') FROM enkash.reconciliation
	WHERE reference = 'REC-TWICE'}), 't', 'a mismatch is resolved');
is($node->safe_psql('postgres', q{
	SELECT coalesce(enkash_reconciliation_resolve(id), false) FROM enkash.reconciliation
	WHERE reference = 'REC-TWICE'}), 'f', 'a resolved mismatch cannot be resolved again');
like($node->safe_psql('postgres', q{
	SELECT (resolved_at IS NOT NULL) || ' ' || note FROM enkash.reconciliation WHERE reference = 'REC-TWICE'}),
	qr{^true EnKash lists 2 credits .* / EnKash reversed it$}, 'it records when, and what was done');
is($node->safe_psql('postgres', q{SELECT count(*) FROM enkash.reconciliation WHERE resolved_at IS NULL}),
	'3', 'the others stay open');
is(health('open_mismatches'), '3', 'the health view counts the three still open');

done_testing();
