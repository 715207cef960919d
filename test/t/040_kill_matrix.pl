# The kill matrix: for each step of a money call between "key claimed" and
# "outcome recorded", and each step of the sender's batch, a process is held
# at that exact step (a test-only stop point, src/stoppoint.h, in the copy
# of enkash that test/run.sh builds with ENKASH_STOP_POINTS=1; "on the
# wire", the request is held at EnKash by a second of latency) and killed:
# the calling backend (pg_terminate_backend or SIGKILL), the enkash worker
# (pg_terminate_backend or SIGKILL), the enkash sender (the same) or the
# postmaster (immediate stop).  Then the system recovers as a user would
# make it: the caller calls again with the same reference; a queued load
# is left to the sender.  Each cell is a load with a fresh reference, and
# must end with exactly one credit at EnKash, its key succeeded, every load
# EnKash received matched by a "sent" audit row, and every "sent" row
# answered.
use strict;
use warnings;
use lib $ENV{ENKASH_TAP_LIB};
use EnkashTest;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep time);

plan skip_all => 'no enkash built with stop points (ENKASH_STOP_INSTALL): run through test/run.sh'
  unless $ENV{ENKASH_STOP_INSTALL};

my $url = start_private_sandbox();
my $node = enkash_node('kill_matrix', sandbox_url => $url,
	install_path => $ENV{ENKASH_STOP_INSTALL}, conf => <<'CONF');
restart_after_crash = on
enkash.unknown_grace_ms = 200
enkash.stale_claim_ms = 2000
enkash.retry_base_ms = 100
enkash.retry_max_ms = 500
CONF
my $pgdata = $node->data_dir;

sub sql { return $node->safe_psql('postgres', $_[0]) }

# Waits (up to $secs) for a query to return 't'.
sub wait_for
{
	my ($query, $secs) = @_;
	my $until = time + $secs;
	while (time < $until)
	{
		my ($rc, $out) = $node->psql('postgres', $query);
		return 1 if $rc == 0 && $out eq 't';
		usleep(100_000);
	}
	return 0;
}

# The server is up with its worker and sender running.
sub wait_ready
{
	return wait_for("SELECT count(*) = 2 FROM pg_stat_activity "
		  . "WHERE backend_type IN ('enkash worker', 'enkash sender')", 30);
}

sub arm
{
	unlink "$pgdata/enkash_stopped";
	PostgreSQL::Test::Utils::append_to_file("$pgdata/enkash_stop_point.new", "$_[0]\n");
	rename "$pgdata/enkash_stop_point.new", "$pgdata/enkash_stop_point" or die "arm: $!";
}

sub disarm
{
	unlink "$pgdata/enkash_stop_point", "$pgdata/enkash_stopped";
}

# The pid of the process held at the armed point, or undef.
sub wait_stopped
{
	for (1 .. 150)
	{
		if (-s "$pgdata/enkash_stopped")
		{
			my ($name, $pid) = split ' ', slurp_file("$pgdata/enkash_stopped");
			return $pid;
		}
		usleep(100_000);
	}
	return undef;
}

# "on-the-wire" is the step with no stop point: the request is at EnKash,
# which takes 3 s to make the load (the sandbox's latency), and the process
# that sent it ($who: the session or the sender) is killed then.  The call
# made again at once must wait enkash.unknown_grace_ms (5 s for these
# cells, longer than EnKash takes) before it asks EnKash.
sub on_the_wire
{
	my ($who, $ref) = @_;
	for (1 .. 100)
	{
		last if sandbox_json($url, 'GET', '/__sandbox/requests', 'in_flight') > 0;
		usleep(50_000);
	}
	return $who eq 'sender'
	  ? sql("SELECT pid FROM pg_stat_activity WHERE backend_type = 'enkash sender'")
	  : sql("SELECT pid FROM pg_stat_activity WHERE backend_type = 'client backend' "
		  . "AND query LIKE '%$ref%' AND pid <> pg_backend_pid()");
}

sub grace
{
	sql("ALTER SYSTEM SET enkash.unknown_grace_ms = $_[0]");
	sql("SELECT pg_reload_conf()");
}

sub start_holding
{
	my ($point) = @_;
	if ($point eq 'on-the-wire')
	{
		grace(5000);
		sandbox($url, 'POST', '/__sandbox/faults', '{"latency_ms": 3000}');
	}
	else
	{
		arm($point);
	}
}

# The pid of the process held at $point, or undef.
sub held_at
{
	my ($point, $who, $ref) = @_;
	return on_the_wire($who, $ref) || undef if $point eq 'on-the-wire';
	return wait_stopped();
}

sub gone
{
	return wait_for("SELECT NOT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = $_[0])", 20);
}

# Kills as told: the held process with SIGTERM or SIGKILL, the calling
# backend (the held worker then goes on), or the postmaster.
sub kill_as
{
	my ($how, $held, $ref) = @_;
	if ($how eq 'terminate')
	{
		sql("SELECT pg_terminate_backend($held)");
		gone($held);
	}
	elsif ($how eq 'kill9')
	{
		kill 'KILL', $held;
		usleep(500_000);    # the postmaster sees it and restarts
	}
	elsif ($how eq 'caller')
	{
		my $caller = sql("SELECT pid FROM pg_stat_activity WHERE backend_type = 'client backend' "
			  . "AND query LIKE '%$ref%' AND pid <> pg_backend_pid()");
		sql("SELECT pg_terminate_backend($caller)") if $caller;
		gone($caller) if $caller;
	}
	elsif ($how eq 'immediate')
	{
		$node->stop('immediate');
	}
	disarm();
	sandbox($url, 'POST', '/__sandbox/faults', '{"clear": true}');
	$node->start if $how eq 'immediate';
}

# Calls the load again until it returns (or 20 s pass); the last error.
sub call_again
{
	my ($ref) = @_;
	my $err = '';
	my $until = time + 20;
	while (time < $until)
	{
		my ($rc, $out);
		($rc, $out, $err) = $node->psql('postgres',
			"SELECT enkash_load_balance('CASANDBOX1', 'EKCSANDBOX1', 10, '$ref')");
		return '' if $rc == 0;
		usleep(300_000);
	}
	return $err || 'no answer';
}

# What a user checks afterwards.
sub check_cell
{
	my ($cell, $ref, $before) = @_;
	# every request EnKash still holds has landed
	for (1 .. 100)
	{
		last if sandbox_json($url, 'GET', '/__sandbox/requests', 'in_flight') == 0;
		usleep(100_000);
	}
	my $received = loads_sent($url) - $before;
	is(credits($url, $ref), 1, "$cell: exactly one credit");
	my ($state, $sent, $unanswered) = split /\|/, sql(<<"SQL");
SELECT (SELECT state FROM enkash.idempotency_keys WHERE key = '$ref'),
       count(*),
       count(*) FILTER (WHERE NOT EXISTS
           (SELECT 1 FROM enkash.audit_log a WHERE a.sent_id = s.id))
FROM enkash.audit_log s
WHERE s.idempotency_key = '$ref' AND s.endpoint = 'load_balance' AND s.outcome = 'sent'
SQL
	is($state, 'succeeded', "$cell: the key is succeeded");
	ok($received <= $sent,
		"$cell: every load EnKash received has a \"sent\" audit row ($received received, $sent rows)");
	is($unanswered, 0, "$cell: every \"sent\" audit row is answered")
	  or diag(sql("SELECT id, sent_id, outcome, message, at FROM enkash.audit_log "
			  . "WHERE idempotency_key = '$ref' ORDER BY id"));
}

my $n = 0;

# A load made by a session, held at $point, killed $how.
sub sync_cell
{
	my ($point, $how) = @_;
	my $ref = sprintf('KILL-%02d', ++$n);
	my $cell = "$point x $how ($ref)";
	wait_ready() or die "$cell: the server is not ready";
	sql("SELECT enkash_get_card_account('CASANDBOX1')");    # a token, audited
	my $before = loads_sent($url);
	start_holding($point);
	my ($out, $err) = ('', '');
	my $h = IPC::Run::start(
		[ 'psql', '-X', '-d', $node->connstr('postgres'), '-c',
		  "SELECT enkash_load_balance('CASANDBOX1', 'EKCSANDBOX1', 10, '$ref')" ],
		'>', \$out, '2>', \$err, IPC::Run::timeout(60));
	my $held = held_at($point, 'session', $ref);
	if (!defined $held)
	{
		kill_as('none', 0, $ref);
		fail("$cell: the stop point was reached");
		$h->kill_kill;
		return;
	}
	kill_as($how, $held, $ref);
	eval { $h->finish };
	$h->kill_kill if $@;
	wait_ready() or die "$cell: the server did not come back";
	my $again = call_again($ref);
	is($again, '', "$cell: the same load called again returns");
	grace(200) if $point eq 'on-the-wire';
	check_cell($cell, $ref, $before);
}

# A queued load, the sender held at $point, killed $how.
sub async_cell
{
	my ($point, $how) = @_;
	my $ref = sprintf('KILL-%02d', ++$n);
	my $cell = "$point x $how ($ref)";
	wait_ready() or die "$cell: the server is not ready";
	sql("SELECT enkash_get_card_account('CASANDBOX1')");
	my $before = loads_sent($url);
	start_holding($point);
	my $id = sql("SELECT enkash_load_balance_async('CASANDBOX1', 'EKCSANDBOX1', 10, '$ref')");
	my $held = held_at($point, 'sender', $ref);
	if (!defined $held)
	{
		kill_as('none', 0, $ref);
		fail("$cell: the stop point was reached");
		return;
	}
	kill_as($how, $held, $ref);
	wait_ready() or die "$cell: the server did not come back";
	ok(wait_for("SELECT state IN ('succeeded', 'failed', 'dead') FROM enkash.requests WHERE id = $id", 30),
		"$cell: the queued load is final");
	grace(200) if $point eq 'on-the-wire';
	is(sql("SELECT state FROM enkash.requests WHERE id = $id"), 'succeeded',
		"$cell: the queued load succeeded");
	check_cell($cell, $ref, $before);
}

my @backend_points = qw(money-claimed on-the-wire money-answered money-recorded);
my @worker_points = qw(worker-claim-before-commit worker-claim-committed
  worker-finish-before-commit worker-finish-committed);
my @sender_points = qw(sender-claim-before-commit sender-claim-committed on-the-wire sender-answered
  sender-record-before-commit sender-recorded);

for my $point (@backend_points)
{
	sync_cell($point, $_) for qw(terminate kill9 immediate);
}
for my $point (@worker_points)
{
	sync_cell($point, $_) for qw(terminate kill9 caller immediate);
}
for my $point (@sender_points)
{
	async_cell($point, $_) for qw(terminate kill9 immediate);
}

# Over the whole matrix: no reference credited twice, none unrecorded.
my $ledger = sandbox($url, 'GET', '/__sandbox/ledger');
my @doubled = $ledger =~ /"reference":"(KILL-\d+)","count":(?:[2-9]|\d\d+)/g;
is(scalar(@doubled), 0, 'the matrix: 0 references credited more than once')
  or diag("doubled: @doubled");
my $received = loads_sent($url);
my $sent = sql("SELECT count(*) FROM enkash.audit_log "
	  . "WHERE idempotency_key LIKE 'KILL-%' AND endpoint = 'load_balance' AND outcome = 'sent'");
ok($received <= $sent, 'the matrix: 0 loads received without a "sent" audit row')
  or diag("$received loads received, $sent \"sent\" audit rows");

$node->stop;
done_testing();
