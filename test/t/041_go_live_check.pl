# enkash_check(), the go-live check: green on a working setup, and each
# broken part (credentials file missing or readable by others, credentials
# refused, host unreachable, worker not running) its own failed row, with no
# secret in any detail.  A private sandbox, so that refused credentials touch
# no other test.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use lib $ENV{ENKASH_TAP_LIB};
use EnkashTest;

my $url = start_private_sandbox();
my $node = enkash_node('check', sandbox_url => $url);
my $dir = $node->basedir;

# name => status, and name => detail, of one run of the check.
sub check
{
	my $arg = shift // 'NULL';
	my (%status, %detail);
	for my $row (split /\n/, $node->safe_psql('postgres',
		"SELECT name || '|' || status || '|' || detail FROM enkash_check($arg)"))
	{
		my ($name, $status, $detail) = split /\|/, $row, 3;
		$status{$name} = $status;
		$detail{$name} = $detail;
	}
	return (\%status, \%detail);
}

sub failed_rows
{
	my ($status) = @_;
	return join(',', sort grep { $status->{$_} eq 'failed' } keys %$status);
}

sub reload_with
{
	my ($setting, $value) = @_;
	$node->safe_psql('postgres', "ALTER SYSTEM SET $setting = '$value'; SELECT pg_reload_conf()");
}

# The worker and sender start shortly after the server.
$node->poll_query_until('postgres', q{SELECT count(*) = 2 FROM pg_stat_activity
	WHERE backend_type IN ('enkash worker', 'enkash sender')})
  or die 'the enkash workers did not start';

my ($status, $detail) = check();
is(failed_rows($status), '', 'a working setup: no check fails');
is(scalar(keys %$status), 8, 'eight checks');
is($status->{$_}, 'ok', "$_ is ok")
  for qw(preloaded settings credentials_file token round_trip background_workers worker_slots);
is($status->{tls}, 'warning', 'plain http to the sandbox is a TLS warning');
($status, $detail) = check("'CASANDBOX1'");
like($detail->{round_trip}, qr/"CASANDBOX1" read from EnKash/, 'a real card account is read');

# Credentials file: missing; readable by others.
my $good = $ENV{ENKASH_CREDENTIALS};
my $secrets = slurp_file($good);
reload_with('enkash.credentials_file', "$dir/missing.conf");
($status, $detail) = check();
is($status->{credentials_file}, 'failed', 'a missing credentials file fails its row');
like($detail->{credentials_file}, qr/could not read .*missing\.conf/, '... saying which file');

open my $fh, '>', "$dir/open.conf" or die;
print $fh $secrets;
close $fh;
chmod 0644, "$dir/open.conf";
reload_with('enkash.credentials_file', "$dir/open.conf");
($status, $detail) = check();
is($status->{credentials_file}, 'failed', 'a world-readable credentials file fails its row');
like($detail->{credentials_file}, qr/0600/, '... saying what mode it needs');

# Credentials EnKash refuses: a wrong password, and the token expired.
(my $wrong = $secrets) =~ s/^password\s*=.*$/password = not-the-password/m;
open $fh, '>', "$dir/wrong.conf" or die;
print $fh $wrong;
close $fh;
chmod 0600, "$dir/wrong.conf";
reload_with('enkash.credentials_file', "$dir/wrong.conf");
sandbox($url, 'POST', '/__sandbox/expire-tokens', '{}');
my $grants_before = sandbox_json($url, 'GET', '/__sandbox/requests', '/oauth/token');
($status, $detail) = check();
is($status->{token}, 'failed', 'refused credentials fail the token row');
like($detail->{token}, qr/refused|rejected|credentials/i, '... saying EnKash refused them');
like($detail->{round_trip}, qr/not tried/, 'the round trip is not tried without a token');
cmp_ok(sandbox_json($url, 'GET', '/__sandbox/requests', '/oauth/token') - $grants_before,
	'<=', 2, 'at most one refresh and one password grant were tried');

# Every detail so far free of the secrets in the file.
my $all = $node->safe_psql('postgres', 'SELECT string_agg(detail, E\'\n\') FROM enkash_check()');
for my $line (split /\n/, $secrets)
{
	next unless $line =~ /^(client_secret|password|client_id)\s*=\s*(\S+)/;
	unlike($all, qr/\Q$2\E/, "no detail holds the $1");
}

# Back to good credentials, then EnKash unreachable (token expired).
reload_with('enkash.credentials_file', $good);
($status) = check();
is(failed_rows($status), '', 'good credentials again: green without a restart');
reload_with('enkash.token_url', 'http://127.0.0.1:1/oauth/token');
reload_with('enkash.base_url', 'http://127.0.0.1:1/api/v0/partner/enKashCard');
sandbox($url, 'POST', '/__sandbox/expire-tokens', '{}');
($status, $detail) = check();
is($status->{token}, 'failed', 'an unreachable token endpoint fails the token row');
like($detail->{token}, qr/connect|reach/i, '... saying it could not connect');
$node->safe_psql('postgres', 'ALTER SYSTEM RESET enkash.token_url');
$node->safe_psql('postgres', 'SELECT pg_reload_conf()');
($status, $detail) = check();
is($status->{round_trip}, 'failed', 'an unreachable API host fails the round trip row');
like($detail->{round_trip}, qr/could not reach EnKash/, '... saying so');
$node->safe_psql('postgres', 'ALTER SYSTEM RESET enkash.base_url');

# The worker not running: enkash.database names a database that does not exist.
$node->safe_psql('postgres', "ALTER SYSTEM SET enkash.database = 'no_such_database'");
$node->restart;
($status, $detail) = check();
is($status->{background_workers}, 'failed', 'no worker running fails the workers row');
like($detail->{background_workers}, qr/enkash worker, enkash sender.*no_such_database/,
	'... naming what is missing and where it should run');
is(failed_rows($status), 'background_workers', 'and only that row');

$node->stop;
done_testing();
