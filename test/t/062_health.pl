# enkash.health, one row for monitoring: the processes and their last
# activity, the queue, the token, whether this server is fenced and the
# last reconciliation (TAP 055 shows a run's mismatches).  It shows a sender
# that is gone, a dead row, and credentials EnKash refused (a wrong password,
# tried once: EnKash locks the account after three); the postgres_exporter
# query reads it.
use strict;
use warnings;
use lib $ENV{ENKASH_TAP_LIB};
use EnkashTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $url = start_private_sandbox();
my $file = tmp_file('health-credentials.conf');
my $right = slurp_file($ENV{ENKASH_CREDENTIALS});

sub write_credentials
{
	my ($text) = @_;
	open(my $fh, '>', $file) or die "could not write $file: $!";
	print $fh $text;
	close $fh;
	chmod 0600, $file;
	sleep 2;    # the file is looked at once a second at most
}

write_credentials($right);
my $node = enkash_node('health', sandbox_url => $url, conf => <<"CONF");
enkash.credentials_file = '$file'
enkash.max_attempts = 1
CONF
install_try_sql($node);

sub health { $node->safe_psql('postgres', "SELECT $_[0] FROM enkash.health") }

$node->poll_query_until('postgres', 'SELECT launcher_alive AND worker_alive AND sender_alive FROM enkash.health')
  or die 'the enkash processes did not start';
$node->safe_psql('postgres', "SELECT enkash_get_card_account('CASANDBOX1')");
is(health(q{concat_ws(' ', launcher_last_activity IS NOT NULL, worker_last_activity IS NOT NULL,
	sender_last_activity IS NOT NULL, queue_depth, dead, unknown, held, awaiting_approval,
	token_valid, token_expires_at > now(), credentials_refused, fenced)}),
	't t t 0 0 0 0 0 t t f f', 'a healthy server: processes up, nothing queued, a valid token, not fenced');
is(health(q{concat_ws(' ', last_reconciliation_at IS NULL, last_reconciliation_mismatches IS NULL, open_mismatches)}),
	't t 0', 'never reconciled: no last reconciliation, no open mismatch');

# The query of contrib/postgres_exporter.yml, as the exporter runs it.
my ($exporter_query) = slurp_file("$ENV{ENKASH_TAP_LIB}/../../contrib/postgres_exporter.yml")
  =~ /^  query: \|\n(.*?)^  \S/ms;
is($node->safe_psql('postgres', "SELECT reconciliation_age_seconds, last_reconciliation_mismatches, open_mismatches FROM ($exporter_query) q"),
	'-1|0|0', 'the postgres_exporter query runs: never reconciled');

# A dead row: one attempt allowed, and it fails.
sandbox($url, 'POST', '/__sandbox/faults', '{"fail": {"status": 503, "count": 1}}');
$node->safe_psql('postgres', "SELECT enkash_load_balance_async('CASANDBOX1', 'EKCSANDBOX1', 1, 'HEALTH-DEAD-1')");
$node->poll_query_until('postgres', 'SELECT dead = 1 FROM enkash.health')
  or die 'the row did not become dead';
is(health('queue_depth'), '0', 'a dead row is not in the queue depth');
is($node->safe_psql('postgres', "SELECT state FROM enkash.requests WHERE idempotency_key = 'HEALTH-DEAD-1'"),
	'dead', 'the view counts the dead row');

# The sender gone (its launcher held, so that it is not started again): the
# view says so, and the queued row waits, due.
my $launcher = $node->safe_psql('postgres', "SELECT pid FROM pg_stat_activity WHERE backend_type = 'enkash launcher'");
kill 'STOP', $launcher;
$node->safe_psql('postgres', "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE backend_type = 'enkash sender'");
$node->poll_query_until('postgres', 'SELECT NOT sender_alive FROM enkash.health')
  or die 'the view did not see the sender go';
$node->safe_psql('postgres', "SELECT enkash_load_balance_async('CASANDBOX1', 'EKCSANDBOX1', 1, 'HEALTH-WAIT-1')");
is(health(q{concat_ws(' ', launcher_alive, worker_alive, sender_alive, sender_last_activity IS NULL,
	queue_depth, oldest_due_at IS NOT NULL)}),
	't t f t 1 t', 'a stopped sender: not alive, one row due in the queue');
kill 'CONT', $launcher;
$node->poll_query_until('postgres', 'SELECT sender_alive AND queue_depth = 0 FROM enkash.health')
  or die 'the sender did not come back and send the row';
is(credits($url, 'HEALTH-WAIT-1'), 1, 'the waiting row was sent once the sender was back');

# Credentials refused: a wrong password, tried once.
(my $wrong = $right) =~ s/^(\s*password\s*=).*$/$1 not-the-password/m;
write_credentials($wrong);
sandbox($url, 'POST', '/__sandbox/expire-tokens', '{"refresh": true}');
like($node->safe_psql('postgres', q{SELECT try_sql($$SELECT enkash_get_card_account('CASANDBOX1')$$)}),
	qr/^NK00[28] /, 'a call with the wrong password is refused');
is(health(q{concat_ws(' ', token_valid, credentials_refused, token_last_error IS NOT NULL)}),
	'f t t', 'the view shows the refused credentials and the last error');
cmp_ok(sandbox_json($url, 'GET', '/__sandbox/requests', 'failed_password'), '<=', 1,
	'the wrong password was tried at most once');
unlike(health('token_last_error'), qr/not-the-password/, 'the password is not in the view');

$node->stop;
done_testing();
