# TLS against real server software: Debian's nginx, with a CA and server
# certificates made here by the openssl command, in front of the sandbox.
#  - a CA the extension was not given: refused (08001, not XX000), nothing
#    reaches EnKash;
#  - enkash.ca_file = the test CA: works, through nginx;
#  - a certificate for another host name: refused, nothing reaches EnKash;
#  - plain http:// to a host other than loopback: refused when set, before
#    any connection can be made.
use strict;
use warnings;
use lib $ENV{ENKASH_TAP_LIB};
use EnkashTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $nginx_bin = -x '/usr/sbin/nginx' ? '/usr/sbin/nginx' : 'nginx';
if (system("$nginx_bin -v >/dev/null 2>&1") != 0)
{
	# Real server software is what this test checks: no nginx is a failure, not a skip.
	BAIL_OUT('nginx is not installed (apt-get install nginx-light)');
}

my $sandbox_url = $ENV{SANDBOX_URL};
my $dir = PostgreSQL::Test::Utils::tempdir('tls');

# --- certificates -----------------------------------------------------------
sub openssl
{
	my @args = @_;
	my ($out, $err);
	IPC::Run::run([ 'openssl', @args ], '<', \undef, '>', \$out, '2>', \$err)
	  or die "openssl @args failed: $err";
	return $out;
}

sub write_file
{
	my ($path, $text) = @_;
	open my $fh, '>', $path or die "$path: $!";
	print $fh $text;
	close $fh;
}

openssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-sha256', '-days', '2',
	'-subj', '/CN=enkash TAP test CA', '-keyout', "$dir/ca.key", '-out', "$dir/ca.crt",
	'-addext', 'basicConstraints=critical,CA:TRUE',
	'-addext', 'keyUsage=critical,keyCertSign,cRLSign');

# A server certificate signed by the test CA, for the given subjectAltName.
sub server_cert
{
	my ($name, $cn, $san) = @_;
	openssl('req', '-new', '-newkey', 'rsa:2048', '-nodes', '-sha256',
		'-subj', "/CN=$cn", '-keyout', "$dir/$name.key", '-out', "$dir/$name.csr");
	write_file("$dir/$name.ext", <<"EXT");
basicConstraints = CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = $san
EXT
	openssl('x509', '-req', '-in', "$dir/$name.csr", '-CA', "$dir/ca.crt",
		'-CAkey', "$dir/ca.key", '-CAcreateserial', '-days', '2', '-sha256',
		'-extfile', "$dir/$name.ext", '-out', "$dir/$name.crt");
}
server_cert('good', 'localhost', 'IP:127.0.0.1, IP:::1, DNS:localhost');
server_cert('wrong', 'wrong.example', 'DNS:wrong.example');
like(openssl('x509', '-in', "$dir/good.crt", '-noout', '-ext', 'subjectAltName'),
	qr/IP Address:127\.0\.0\.1/, 'server certificate names 127.0.0.1');
like(openssl('verify', '-CAfile', "$dir/ca.crt", "$dir/wrong.crt"),
	qr/OK/, 'the wrong-name certificate is signed by the test CA too');

# --- nginx: its own config, pid, logs and temp dirs in the test's directory -
my $good_port = PostgreSQL::Test::Cluster::get_free_port();
my $wrong_port = PostgreSQL::Test::Cluster::get_free_port();
mkdir "$dir/nginx";
mkdir "$dir/nginx/$_" for qw(body proxy fastcgi uwsgi scgi);
my $proxy = <<"PROXY";
        location / {
            proxy_pass $sandbox_url;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
        }
PROXY
write_file("$dir/nginx/nginx.conf", <<"CONF");
daemon off;
worker_processes 1;
pid $dir/nginx/nginx.pid;
error_log $dir/nginx/error.log info;
events { worker_connections 64; }
http {
    access_log $dir/nginx/access.log;
    client_body_temp_path $dir/nginx/body;
    proxy_temp_path $dir/nginx/proxy;
    fastcgi_temp_path $dir/nginx/fastcgi;
    uwsgi_temp_path $dir/nginx/uwsgi;
    scgi_temp_path $dir/nginx/scgi;
    client_max_body_size 4m;
    server {
        listen 127.0.0.1:$good_port ssl;
        ssl_certificate $dir/good.crt;
        ssl_certificate_key $dir/good.key;
$proxy    }
    server {
        listen 127.0.0.1:$wrong_port ssl;
        ssl_certificate $dir/wrong.crt;
        ssl_certificate_key $dir/wrong.key;
$proxy    }
}
CONF
my $nginx = IPC::Run::start(
	[ $nginx_bin, '-p', "$dir/nginx", '-c', "$dir/nginx/nginx.conf", '-e', "$dir/nginx/error.log" ],
	'<', \undef, '>', "$dir/nginx/stdout.log", '2>', "$dir/nginx/stderr.log");
END { local $?; $nginx->kill_kill if $nginx; }

my $good = "https://127.0.0.1:$good_port";
my $wrong = "https://127.0.0.1:$wrong_port";
my $up = 0;
for (1 .. 100)
{
	my ($o, $e);
	IPC::Run::run([ 'curl', '-sS', '--max-time', '5', '--cacert', "$dir/ca.crt",
			"$good/__sandbox/health" ], '>', \$o, '2>', \$e);
	if (($o // '') =~ /"ok"\s*:\s*true/) { $up = 1; last; }
	select(undef, undef, undef, 0.1);
}
ok($up, 'nginx answers over TLS with the test CA (curl --cacert)')
  or BAIL_OUT('nginx did not start: '
	  . slurp_file("$dir/nginx/error.log") . slurp_file("$dir/nginx/stderr.log"));

# --- PostgreSQL pointed at nginx --------------------------------------------
my $node = enkash_node('tls', conf => <<"CONF");
enkash.base_url = '$good/api/v0/partner/enKashCard'
enkash.token_url = '$good/oauth/token'
enkash.connect_timeout_ms = 5000
enkash.timeout_ms = 10000
CONF
sandbox('POST', '/__sandbox/reset', '{}');
install_try_sql($node);

sub reload_with
{
	my ($settings) = @_;
	$node->safe_psql('postgres', join('', map { "ALTER SYSTEM SET $_;\n" } @$settings)
		  . 'SELECT pg_reload_conf();');
	# A new session reads the file; wait until the postmaster has, too.
	select(undef, undef, undef, 0.3);
}

sub api_requests { return sandbox_json('GET', '/__sandbox/requests', 'total'); }

my $call = q{SELECT try_sql($$SELECT enkash_get_card_account('CASANDBOX1')$$)};

# 1. No enkash.ca_file: the test CA is not trusted.
my $before = api_requests();
my $r = $node->safe_psql('postgres', $call);
note("no ca_file: $r");
my ($state, $msg, $detail) = split / \| /, $r, 3;
is($state, '08001', 'CA not given: refused with SQLSTATE 08001 (not XX000)');
like($msg, qr/could not reach EnKash/, '... "could not reach EnKash"');
like($detail, qr/certificate/i, '... the detail mentions the certificate');
like($detail, qr/not sent/, '... and says the request was not sent');
is(api_requests(), $before, '... nothing reached the sandbox');

# 2. enkash.ca_file = the test CA: works, through nginx.
reload_with([ "enkash.ca_file = '$dir/ca.crt'" ]);
is($node->safe_psql('postgres', 'SHOW enkash.ca_file'), "$dir/ca.crt", 'ca_file set');
my $access_before = -s "$dir/nginx/access.log" // 0;
$before = api_requests();
is($node->safe_psql('postgres',
	q{SELECT enkash_get_card_account('CASANDBOX1') ->> 'cardAccountId'}),
	'CASANDBOX1', 'with enkash.ca_file = the test CA the call works over TLS');
ok(api_requests() > $before, '... and reached the sandbox');
my $access = slurp_file("$dir/nginx/access.log");
like($access, qr{"POST /oauth/token HTTP/1\.1" 200}, '... the token call went through nginx');
like($access, qr{"POST /api/v0/partner/enKashCard/cardAccount/get HTTP/1\.1" 200},
	'... and so did the API call');
ok((-s "$dir/nginx/access.log") > $access_before, 'nginx logged the exchange');

# A money call too, end to end over TLS.
is($node->safe_psql('postgres',
	q{SELECT enkash_load_balance('CASANDBOX1', 'EKCSANDBOX1', 1.25, 'TLS-LOAD-1') IS NOT NULL}),
	't', 'a load over TLS succeeds');
is(sandbox_json('GET', '/__sandbox/ledger?reference=TLS-LOAD-1', 'count'), 1,
	'... and is credited once');

# 3. A certificate for another host name, from the trusted CA: refused.
reload_with([ "enkash.base_url = '$wrong/api/v0/partner/enKashCard'",
	"enkash.token_url = '$wrong/oauth/token'" ]);
$before = api_requests();
$r = $node->safe_psql('postgres', $call);
note("wrong host name: $r");
($state, $msg, $detail) = split / \| /, $r, 3;
is($state, '08001', 'certificate for the wrong host name: refused with 08001');
like($msg, qr/could not reach EnKash/, '... "could not reach EnKash"');
like($detail, qr/certificate/i, '... the detail mentions the certificate');
is(api_requests(), $before, '... nothing reached the sandbox');
# Also for a money call: the key is released, nothing was sent.
$r = $node->safe_psql('postgres',
	q{SELECT try_sql($$SELECT enkash_load_balance('CASANDBOX1', 'EKCSANDBOX1', 1, 'TLS-WRONG-1')$$)});
like($r, qr/^08001 \| /, 'a load to the wrong host name: 08001');
is($node->safe_psql('postgres',
	q{SELECT count(*) FROM enkash.idempotency_keys WHERE key = 'TLS-WRONG-1'}),
	'0', '... its key is released (nothing was sent)');
is(sandbox_json('GET', '/__sandbox/ledger?reference=TLS-WRONG-1', 'count'), 0,
	'... and nothing credited');
is(api_requests(), $before, '... nothing reached the sandbox');

# 3b. Through localhost (the name in the good certificate) with the right CA: works.
reload_with([ "enkash.base_url = 'https://localhost:$good_port/api/v0/partner/enKashCard'",
	"enkash.token_url = 'https://localhost:$good_port/oauth/token'" ]);
is($node->safe_psql('postgres',
	q{SELECT enkash_get_card_account('CASANDBOX1') ->> 'cardAccountId'}),
	'CASANDBOX1', 'https://localhost with the DNS:localhost certificate works');

# 4. Plain http:// to a host other than loopback: refused when set.
reload_with([ "enkash.base_url = '$good/api/v0/partner/enKashCard'",
	"enkash.token_url = '$good/oauth/token'" ]);
$before = api_requests();
my $connections = sandbox_json('GET', '/__sandbox/requests', 'connections');
for my $url ('http://10.0.0.1/api/v0/partner/enKashCard', 'HTTP://10.0.0.1/api/v0/partner/enKashCard',
	'http://127.0.0.1.nip.io/api/v0/partner/enKashCard', 'http://[::ffff:10.0.0.1]/x',
	'http://user:secret@127.0.0.1/x', 'ftp://127.0.0.1/x', 'file:///etc/passwd',
	'not a url')
{
	for my $setting ('enkash.base_url', 'enkash.token_url')
	{
		my ($ret, $out, $err) = $node->psql('postgres',
			"\\set VERBOSITY verbose\nSET $setting = '$url';\nSELECT 'set';");
		isnt($ret, 0, "SET $setting = '$url' is refused");
		like($err, qr/ERROR:  22023: invalid value for parameter "\Q$setting\E"/,
			'... as an invalid value (22023)');
	}
}
my ($ret, $out, $err) = $node->psql('postgres',
	"ALTER SYSTEM SET enkash.base_url = 'http://10.0.0.1/api/v0/partner/enKashCard'");
like($err, qr/invalid value for parameter "enkash\.base_url"/,
	'ALTER SYSTEM with a non-loopback http:// URL is refused too');
# The session that tried goes on using the configured URL, over TLS.
$r = $node->safe_psql('postgres',
	q{DO $$ BEGIN SET enkash.base_url = 'http://10.0.0.1/api/v0/partner/enKashCard';
	  EXCEPTION WHEN invalid_parameter_value THEN NULL; END $$;
	  SELECT current_setting('enkash.base_url')});
is($r, "$good/api/v0/partner/enKashCard", 'after the refusal the setting is unchanged');
is(api_requests(), $before, 'no refused URL led to a request');
# Only the two control calls made here connected to the sandbox.
is(sandbox_json('GET', '/__sandbox/requests', 'connections') - $connections, 2,
	'... nor to a connection to the sandbox');

# Loopback plain http stays allowed (it is how the other tests work).
($ret, $out, $err) = $node->psql('postgres',
	"SET enkash.base_url = 'http://127.0.0.1:9/x'; SET enkash.base_url = 'http://localhost:9/x'; SET enkash.base_url = 'http://[::1]:9/x'; SELECT 'ok'");
is($out, 'ok', 'http:// to 127.0.0.1, localhost and [::1] is accepted');

# Settings are the superuser's: an ordinary role can neither point the
# extension elsewhere nor trust another CA.
$node->safe_psql('postgres', 'CREATE ROLE tls_nobody LOGIN');
for my $setting ('enkash.base_url', 'enkash.token_url', 'enkash.ca_file')
{
	($ret, $out, $err) = $node->psql('postgres',
		"\\set VERBOSITY verbose\nSET ROLE tls_nobody;\nSET $setting = '$good/x';");
	like($err, qr/ERROR:  42501: permission denied to set parameter "\Q$setting\E"/,
		"an ordinary role cannot SET $setting (42501)");
}

# nginx did not fail (no crit/emerg in its log).
unlike(slurp_file("$dir/nginx/error.log"), qr/\[(emerg|crit)\]/, 'nginx logged no critical error');

$node->stop;
done_testing();
