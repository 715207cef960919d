# EnkashTest.pm: helpers for the enkash TAP tests: a PostgreSQL node that
# preloads enkash and points at the sandbox started by test/run.sh, and
# small calls to the sandbox's control API.
package EnkashTest;

use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Exporter 'import';
use File::Spec;

our @EXPORT = qw(enkash_node sandbox sandbox_json start_private_sandbox install_try_sql
  enkash_clean_node hold_worker_commits release_worker_commits loads_sent credits
  credits_by_prefix enkash_standby promote_and_wait tmp_file);

# Cluster's psql and poll_query_until give psql its SQL on standard input.
# While a server restarts after a crash it refuses connections at once, and
# psql can exit before that input is written: IPC::Run then dies with
# "Broken pipe", ending the test script.  An input of at most PIPE_BUF bytes
# is written in one atomic write, so that error means psql read none of it
# and nothing ran: it is a failed attempt, made again.
use constant PIPE_BUF => 4096;
use bytes ();
for my $name (qw(psql poll_query_until))
{
	my $original = PostgreSQL::Test::Cluster->can($name);
	no strict 'refs';
	no warnings 'redefine';
	*{"PostgreSQL::Test::Cluster::$name"} = sub {
		my $sql = $_[2] // '';
		my $want_list = wantarray;    # the caller's, not the eval's
		for my $attempt (1 .. 100)
		{
			my @result;
			my $done = eval {
				@result = $want_list ? $original->(@_) : scalar($original->(@_));
				1;
			};
			return $want_list ? @result : $result[0] if $done;
			die $@ unless $@ =~ /Broken pipe/ && bytes::length($sql) <= PIPE_BUF;
			Test::More::note("psql exited before reading its input; made again: $sql");
			select(undef, undef, undef, 0.1);
		}
		die "psql exited before reading its input 100 times: $sql";
	};
}

my $sandbox_url = $ENV{SANDBOX_URL} or die "SANDBOX_URL is not set: run through test/run.sh";
my $credentials = $ENV{ENKASH_CREDENTIALS} or die "ENKASH_CREDENTIALS is not set";

# An absolute path in the test's temporary directory (a server would
# resolve a relative one from its data directory).
sub tmp_file
{
	my ($name) = @_;
	return File::Spec->rel2abs("${PostgreSQL::Test::Utils::tmp_check}/$name");
}

# Starts another sandbox with the given flags (e.g. a short token lifetime);
# returns its URL.  It is stopped when the test script ends.
my @private_sandboxes;
sub start_private_sandbox
{
	my @flags = @_;
	my $portfile = tmp_file("sandbox.$$.port");
	unlink $portfile;
	my $h = IPC::Run::start(
		[ $ENV{ENKASH_SANDBOX_BIN}, '--port', '0', '--port-file', $portfile, '--quiet', @flags ],
		'>', '/dev/null', '2>', '/dev/null');
	push @private_sandboxes, $h;
	for (1 .. 100)
	{
		last if -s $portfile;
		select(undef, undef, undef, 0.1);
	}
	my $port = PostgreSQL::Test::Utils::slurp_file($portfile);
	chomp $port;
	return "http://127.0.0.1:$port";
}

END
{
	$_->kill_kill for @private_sandboxes;
}

# A started node with the extension created in database "postgres".
# Options: conf => extra postgresql.conf lines, sandbox_url => another sandbox,
# install_path => another installation (the one with stop points).
sub enkash_node
{
	my ($name, %extra) = @_;
	my $sandbox_url = $extra{sandbox_url} // $sandbox_url;
	my $preload = $extra{preload} // 'enkash';
	my $node = PostgreSQL::Test::Cluster->new($name,
		$extra{install_path} ? (install_path => $extra{install_path}) : ());
	$node->init(allows_streaming => $extra{allows_streaming} // 0,
		$extra{utf8} ? (extra => [ '--encoding=UTF8', '--locale=C' ]) : ());
	$node->append_conf('postgresql.conf', <<"CONF");
shared_preload_libraries = '$preload'
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

# A streaming standby of an enkash_node made with allows_streaming, from a
# new base backup.  synchronous => 1: the primary's commits wait for it.
sub enkash_standby
{
	my ($primary, $name, %opt) = @_;
	$primary->backup("$name.base");
	my $standby = PostgreSQL::Test::Cluster->new($name);
	$standby->init_from_backup($primary, "$name.base", has_streaming => 1);
	$standby->start;
	if ($opt{synchronous})
	{
		# Set once the standby streams: a commit before that would wait for it.
		$primary->append_conf('postgresql.conf',
			"synchronous_standby_names = '$name'\nsynchronous_commit = on\n");
		$primary->reload;
		$primary->poll_query_until('postgres',
			"SELECT sync_state = 'sync' FROM pg_stat_replication WHERE application_name = '$name'")
		  or die "$name did not become a synchronous standby";
	}
	return $standby;
}

# Promotes a standby and waits until its enkash worker and sender run.
sub promote_and_wait
{
	my ($standby) = @_;
	$standby->promote;
	$standby->poll_query_until('postgres',
		"SELECT count(*) = 2 FROM pg_stat_activity WHERE backend_type IN ('enkash worker', 'enkash sender')")
	  or die 'the enkash workers did not start on the promoted server';
}

# enkash_node with try_sql installed, against a reset sandbox with no faults.
sub enkash_clean_node
{
	my $node = enkash_node(@_);
	install_try_sql($node);
	sandbox('POST', '/__sandbox/reset', '{}');
	sandbox('POST', '/__sandbox/faults', '{"clear": true}');
	return $node;
}

# try_sql(q): runs q and returns 'ok' or "SQLSTATE | message | detail".
sub install_try_sql
{
	my ($node, $db) = @_;
	$node->safe_psql($db // 'postgres', <<'SQL');
CREATE FUNCTION try_sql(q text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE st text; msg text; det text;
BEGIN
    EXECUTE q;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, det = PG_EXCEPTION_DETAIL;
    RETURN st || ' | ' || msg || ' | ' || coalesce(det, '');
END $$;
SQL
}

# Raw call to the control API (of the shared sandbox, or of the one whose
# URL is given first); returns the body.
sub sandbox
{
	my $url = $_[0] =~ m{^http://} ? shift : $sandbox_url;
	my ($method, $path, $body) = @_;
	my @cmd = ('curl', '-sS', '--max-time', '60', '-X', $method);
	push @cmd, ('-H', 'content-type: application/json', '--data-binary', $body)
	  if defined $body;
	push @cmd, "$url$path";
	my ($stdout, $stderr);
	IPC::Run::run(\@cmd, '>', \$stdout, '2>', \$stderr)
	  or die "curl failed: $stderr";
	return $stdout;
}

# A number out of a control API answer, by a simple "key":number match.
sub sandbox_json
{
	my @url = $_[0] =~ m{^http://} ? (shift) : ();
	my ($method, $path, $key) = @_;
	my $body = sandbox(@url, $method, $path);
	return $body =~ /"\Q$key\E"\s*:\s*(\d+)/ ? $1 : 0;
}

# Makes the enkash worker's commit of keys LIKE $pattern wait on an
# advisory lock that a session of its own holds (a deferred trigger runs at
# commit, after the batch was processed), until release_worker_commits.
sub hold_worker_commits
{
	my ($node, $pattern) = @_;
	$node->safe_psql('postgres', <<"SQL");
CREATE FUNCTION public.hold_commit() RETURNS trigger LANGUAGE plpgsql AS \$\$
BEGIN
	IF NEW.key LIKE '$pattern' THEN
		PERFORM pg_catalog.pg_advisory_xact_lock(4242);
	END IF;
	RETURN NULL;
END \$\$;
CREATE CONSTRAINT TRIGGER hold_commit AFTER INSERT ON enkash.idempotency_keys
	DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION public.hold_commit();
SQL
	my ($out, $err) = ('', '');
	my $holder = IPC::Run::start(
		[ 'psql', '-X', '-At', '-d', $node->connstr('postgres') . ' application_name=holder',
		  '-c', 'SELECT pg_advisory_lock(4242), pg_sleep(600)' ],
		'>', \$out, '2>', \$err);
	$node->poll_query_until('postgres',
		"SELECT count(*) = 1 FROM pg_locks WHERE locktype = 'advisory' AND objid = 4242 AND granted")
	  or die 'the holder did not take its lock';
	return $holder;
}

# Lets the worker's held commits go on.
sub release_worker_commits
{
	my ($node, $holder) = @_;
	$node->safe_psql('postgres',
		"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'holder'");
	$holder->finish;
}

# Load requests a sandbox received (optionally its URL first).
sub loads_sent
{
	my $requests = sandbox(@_, 'GET', '/__sandbox/requests');
	return $requests =~ m{"/api/v0/partner/enKashCard/balance"\s*:\s*(\d+)} ? $1 : 0;
}

# Credits a sandbox made under one reference (optionally its URL first).
sub credits
{
	my @url = $_[0] =~ m{^http://} ? (shift) : ();
	return sandbox_json(@url, 'GET', "/__sandbox/ledger?reference=$_[0]", 'count');
}

# reference => credits, for the references starting with a prefix
# (optionally the sandbox's URL first).
sub credits_by_prefix
{
	my @url = $_[0] =~ m{^http://} ? (shift) : ();
	my $ledger = sandbox(@url, 'GET', '/__sandbox/ledger');
	my %count;
	$count{$1} = $2 while $ledger =~ /"reference":"(\Q$_[0]\E[^"]*)","count":(\d+)/g;
	return \%count;
}

1;
