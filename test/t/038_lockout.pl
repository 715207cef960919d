# EnKash locks the partner account after 3 refused password grants in a row.
# With a wrong password, 50 calls from 8 sessions and the sender draining
# queued loads make at most one password grant: the rest fail at once with
# NK008 and the account stays unlocked.  Fixing the credentials file is
# enough (no restart); enkash_reset_credentials() allows one more attempt and
# is for administrators only.
use strict;
use warnings;
use lib $ENV{ENKASH_TAP_LIB};
use EnkashTest;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);

my $url = start_private_sandbox();
my $file = tmp_file('lockout-credentials.conf');

sub write_credentials
{
	my ($password) = @_;
	open(my $fh, '>', $file) or die "could not write $file: $!";
	print $fh "client_id = sandbox-client\nclient_secret = sandbox-secret-1\n",
	  "username = 9999999999\npassword = $password\n";
	close $fh;
	chmod 0600, $file;
	# the file is looked at once a second at most
	sleep 2;
}

sub auth { sandbox_json($url, 'GET', '/__sandbox/requests', $_[0]) }

write_credentials('not-the-password');
my $node = enkash_node('lockout', sandbox_url => $url, conf => <<"CONF");
enkash.credentials_file = '$file'
enkash.retry_base_ms = 100
enkash.retry_max_ms = 500
enkash.max_attempts = 1000
max_connections = 40
CONF
install_try_sql($node);

# The sender's queued loads, then 50 calls from 8 sessions.
$node->safe_psql('postgres',
	"SELECT enkash_load_balance_async('CASANDBOX1', 'EKCSANDBOX1', 1, 'lockout-' || g) "
	  . "FROM generate_series(1, 5) g");
$node->pgbench(
	'--no-vacuum --client=8 --jobs=2 --transactions=7',
	0,
	[qr{actually processed: 56/56}],
	[qr{^$}],
	'56 calls from 8 sessions with a wrong password',
	{ '038_call' =>
		  q{SELECT try_sql($$SELECT enkash_get_card_account('CASANDBOX1')$$);} });
sleep 2;						# the sender keeps retrying meanwhile

cmp_ok(auth('failed_password'), '<=', 1, 'at most one password grant was refused');
like(sandbox($url, 'GET', '/__sandbox/requests'), qr/"account_locked":\s*false/,
	'the partner account is not locked');
like($node->safe_psql('postgres',
		q{SELECT try_sql($$SELECT enkash_get_card_account('CASANDBOX1')$$)}),
	qr/^NK008 \| EnKash refused the partner credentials; no new attempt is made/,
	'a call fails at once with NK008, saying why nothing was tried');

# Fixing the file is enough: calls and the queued loads go through.
write_credentials('sandbox-password');
is($node->safe_psql('postgres',
		q{SELECT try_sql($$SELECT enkash_get_card_account('CASANDBOX1')$$)}),
	'ok', 'after the file is fixed a call succeeds without a restart');
ok($node->poll_query_until('postgres',
		"SELECT count(*) = 5 FROM enkash.requests WHERE state = 'succeeded'"),
	'the queued loads are sent');
for my $g (1 .. 5)
{
	is(sandbox_json($url, 'GET', "/__sandbox/ledger?reference=lockout-$g", 'count'),
		1, "load lockout-$g credited exactly once");
}

# Refused again (a changed password at EnKash, say): one grant, then NK008.
write_credentials('rotated-elsewhere');
sandbox($url, 'POST', '/__sandbox/expire-tokens', '{"refresh": true}');
my $failed = auth('failed_password');
like($node->safe_psql('postgres',
		q{SELECT try_sql($$SELECT enkash_get_card_account('CASANDBOX1')$$)}),
	qr/^NK002 /, 'the first call is refused by EnKash');
like($node->safe_psql('postgres',
		q{SELECT try_sql($$SELECT enkash_get_card_account('CASANDBOX1')$$)}),
	qr/^NK008 /, 'the next fails at once');
is(auth('failed_password'), $failed + 1, 'one refused password grant');

# Only administrators may allow another attempt.
$node->safe_psql('postgres', 'CREATE ROLE clerk LOGIN');
my ($ret, $out, $err) = $node->psql('postgres',
	'SELECT enkash_reset_credentials()', extra_params => [ '-U', 'clerk' ]);
like($err, qr/permission denied for function enkash_reset_credentials/,
	'an ordinary role cannot reset the credentials lock');
$node->safe_psql('postgres', 'SELECT enkash_reset_credentials()');
like($node->safe_psql('postgres',
		q{SELECT try_sql($$SELECT enkash_get_card_account('CASANDBOX1')$$)}),
	qr/^NK002 /, 'after the reset one more attempt reaches EnKash');
is(auth('failed_password'), $failed + 2, 'exactly one more password grant');
like(sandbox($url, 'GET', '/__sandbox/requests'), qr/"account_locked":\s*false/,
	'the partner account is still not locked');

$node->stop;
done_testing();
