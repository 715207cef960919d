# A copy of a server (pg_basebackup, started elsewhere with the same
# settings and credentials) sends nothing until an administrator confirms
# it is the live server: its queue is held (rows pending, no attempts
# counted), money and write calls are refused with NK013, look-ups work.
# Once confirmed it sends the queue, each load exactly once.  The original
# server, live since CREATE EXTENSION, never needs confirming.
use strict;
use warnings;
use lib $ENV{ENKASH_TAP_LIB};
use EnkashTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

# EnKash unreachable from the primary while the payroll is queued.
my $primary = enkash_node('live', allows_streaming => 1, conf => <<'CONF');
enkash.base_url = 'http://127.0.0.1:9/api/v0/partner/enKashCard'
enkash.token_url = 'http://127.0.0.1:9/oauth/token'
enkash.max_attempts = 1000
enkash.retry_base_ms = 50
enkash.retry_max_ms = 200
CONF
install_try_sql($primary);
$primary->safe_psql('postgres', q{
	SELECT count(enkash_load_balance_async('CASANDBOX1', 'EKCSANDBOX1', 1, 'COPY-' || g))
	FROM generate_series(1, 200) g});
is($primary->safe_psql('postgres',
	"SELECT count(*) FROM enkash.requests WHERE state NOT IN ('succeeded', 'failed', 'dead') AND idempotency_key LIKE 'COPY-%'"),
	'200', 'the primary holds 200 loads not sent');

# The copy: a base backup started on another port, EnKash reachable.
$primary->backup('copy.base');
my $copy = PostgreSQL::Test::Cluster->new('copy');
$copy->init_from_backup($primary, 'copy.base');
my $copy_url = start_private_sandbox();
$copy->append_conf('postgresql.conf', <<"CONF");
enkash.base_url = '$copy_url/api/v0/partner/enKashCard'
enkash.token_url = '$copy_url/oauth/token'
CONF
$copy->start;
# The rows are due (retried every 200 ms at most): the sender meets them and waits.
ok(wait_for_log($copy, qr/enkash sender waits: this server is a copy not confirmed as the live enkash server/),
	'the copy\'s sender says that it waits');
my $attempts_before = $copy->safe_psql('postgres',
	"SELECT sum(attempts) FROM enkash.requests WHERE idempotency_key LIKE 'COPY-%'");

like($copy->safe_psql('postgres',
	"SELECT try_sql(\$\$SELECT enkash_load_balance('CASANDBOX1', 'EKCSANDBOX1', 5, 'COPY-SYNC-1')\$\$)"),
	qr/^NK013 \| .*not the live server/, 'a money call on the copy is refused with NK013');
like($copy->safe_psql('postgres',
	"SELECT try_sql(\$\$SELECT enkash_block_card('CASANDBOX1', 'EKCSANDBOX1', 'L')\$\$)"),
	qr/^NK013 /, 'a write call on the copy is refused with NK013');
is($copy->safe_psql('postgres', "SELECT enkash_get_card_account('CASANDBOX1')->>'cardAccountId'"),
	'CASANDBOX1', 'a look-up works on the copy');
is(sandbox_json($copy_url, 'GET', '/__sandbox/requests', 'total'), 2,
	'only the look-up and its token call reached EnKash from the copy');
is(loads_sent($copy_url), 0, 'no load was sent from the copy');
is($copy->safe_psql('postgres', q{
	SELECT count(*) || ' ' || sum(attempts) FROM enkash.requests
	WHERE idempotency_key LIKE 'COPY-%' AND state NOT IN ('succeeded', 'failed', 'dead')}),
	"200 $attempts_before", 'the copy\'s 200 rows stay queued, no attempt counted');
my @waits = (slurp_file($copy->logfile) =~ /enkash sender waits: this server is a copy/g);
is(scalar(@waits), 1, 'the sender logged once that it waits');

# Confirmed, the copy sends its queue, each load once.
is($copy->safe_psql('postgres', 'SELECT enkash_confirm_live()'), 't', 'an administrator confirms the copy');
$copy->poll_query_until('postgres', q{
	SELECT count(*) = 200 FROM enkash.requests WHERE idempotency_key LIKE 'COPY-%' AND state = 'succeeded'})
  or die 'the confirmed copy did not send its queue';
my $credits = credits_by_prefix($copy_url, 'COPY-');
is(scalar(keys %$credits), 200, 'all 200 loads were credited');
is(scalar(grep { $_ != 1 } values %$credits), 0, 'each exactly once');
is($copy->safe_psql('postgres',
	"SELECT try_sql(\$\$SELECT enkash_load_balance('CASANDBOX1', 'EKCSANDBOX1', 5, 'COPY-SYNC-2')\$\$)"),
	'ok', 'money calls work on the confirmed copy');

# The original server needs no confirmation.
$primary->append_conf('postgresql.conf', <<"CONF");
enkash.base_url = '$ENV{SANDBOX_URL}/api/v0/partner/enKashCard'
enkash.token_url = '$ENV{SANDBOX_URL}/oauth/token'
CONF
$primary->reload;
is($primary->safe_psql('postgres',
	"SELECT try_sql(\$\$SELECT enkash_load_balance('CASANDBOX1', 'EKCSANDBOX1', 5, 'LIVE-SYNC-1')\$\$)"),
	'ok', 'the original server makes money calls without being confirmed');

$copy->stop;
$primary->stop;
done_testing();

sub wait_for_log
{
	my ($node, $re) = @_;
	for (1 .. 600)
	{
		return 1 if slurp_file($node->logfile) =~ $re;
		select(undef, undef, undef, 0.1);
	}
	return 0;
}
