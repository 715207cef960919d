# EnkashTest.pm: helpers for the enkash TAP tests: a PostgreSQL node that
# preloads enkash and points at the sandbox started by test/run.sh, and
# small calls to the sandbox's control API.
package EnkashTest;

use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Exporter 'import';

our @EXPORT = qw(enkash_node sandbox sandbox_json);

my $sandbox_url = $ENV{SANDBOX_URL} or die "SANDBOX_URL is not set: run through test/run.sh";
my $credentials = $ENV{ENKASH_CREDENTIALS} or die "ENKASH_CREDENTIALS is not set";

# A started node with the extension created in database "postgres".
sub enkash_node
{
	my ($name, %extra) = @_;
	my $node = PostgreSQL::Test::Cluster->new($name);
	$node->init;
	$node->append_conf('postgresql.conf', <<"CONF");
shared_preload_libraries = 'enkash'
enkash.base_url = '$sandbox_url/api/v0/partner/enKashCard'
enkash.token_url = '$sandbox_url/oauth/token'
enkash.partner_id = 'CRSANDBOX1'
enkash.company_id = 'CEKSANDBOX1'
enkash.credentials_file = '$credentials'
CONF
	$node->append_conf('postgresql.conf', $extra{conf}) if $extra{conf};
	$node->start;
	$node->safe_psql('postgres', 'CREATE EXTENSION enkash');
	return $node;
}

# Raw call to the control API; returns the body.
sub sandbox
{
	my ($method, $path, $body) = @_;
	my @cmd = ('curl', '-sS', '--max-time', '60', '-X', $method);
	push @cmd, ('-H', 'content-type: application/json', '--data-binary', $body)
	  if defined $body;
	push @cmd, "$sandbox_url$path";
	my ($stdout, $stderr);
	IPC::Run::run(\@cmd, '>', \$stdout, '2>', \$stderr)
	  or die "curl failed: $stderr";
	return $stdout;
}

# A number out of a control API answer, by a simple "key":number match.
sub sandbox_json
{
	my ($method, $path, $key) = @_;
	my $body = sandbox($method, $path);
	return $body =~ /"\Q$key\E"\s*:\s*(\d+)/ ? $1 : 0;
}

1;
