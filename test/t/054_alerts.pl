# Alerts: a session listening on channel "enkash" receives a JSON payload
# (event, row id) when a queued load is held by a limit, awaits approval,
# goes dead or its outcome is unknown, and when EnKash refuses the partner
# credentials (the session that saw it rolls back with its error: the
# sender sends it).
use strict;
use warnings;
use lib $ENV{ENKASH_TAP_LIB};
use EnkashTest;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = enkash_node('alerts', conf => <<'CONF');
enkash.approval_threshold = 10000
enkash.max_attempts = 2
enkash.retry_base_ms = 100
enkash.unknown_grace_ms = 500
CONF
sandbox('POST', '/__sandbox/reset', '{}');
$node->safe_psql('postgres', q{
	INSERT INTO enkash.limits (scope, target, period, max_count) VALUES ('card', 'EKCHELD', '1 day', 0)});

my ($out, $err) = ('', '');
my $in = "LISTEN enkash;\nSELECT 'listening';\n";
my $listener = IPC::Run::start(
	[ 'psql', '-X', '-At', '-d', $node->connstr('postgres') ],
	'<', \$in, '>', \$out, '2>', \$err, IPC::Run::timeout(120));
$listener->pump until $out =~ /listening/;

my $held = $node->safe_psql('postgres',
	"SELECT enkash_load_balance_async('CASANDBOX1', 'EKCHELD', 10, 'ALERT-HELD')");
my $waiting = $node->safe_psql('postgres',
	"SELECT enkash_load_balance_async('CASANDBOX1', 'EKCSANDBOX1', 50000, 'ALERT-APPROVE')");
sandbox('POST', '/__sandbox/faults', '{"fail": {"status": 500, "count": 2, "path": "/balance"}}');
my $dead = $node->safe_psql('postgres',
	"SELECT enkash_load_balance_async('CASANDBOX1', 'EKCSANDBOX1', 10, 'ALERT-DEAD')");
$node->poll_query_until('postgres', "SELECT state = 'dead' FROM enkash.requests WHERE id = $dead")
  or diag($node->safe_psql('postgres', "SELECT * FROM enkash.requests WHERE id = $dead"));
# credited, the answer lost on the way back: unknown until EnKash is asked
sandbox('POST', '/__sandbox/faults', '{"drop": {"path": "/balance", "count": 1, "after_apply": true}}');
my $unknown = $node->safe_psql('postgres',
	"SELECT enkash_load_balance_async('CASANDBOX1', 'EKCSANDBOX1', 10, 'ALERT-UNKNOWN')");
$node->poll_query_until('postgres',
	"SELECT state = 'succeeded' FROM enkash.requests WHERE id = $unknown")
  or diag($node->safe_psql('postgres', "SELECT * FROM enkash.requests WHERE id = $unknown"));
is(credits('ALERT-UNKNOWN'), 1, 'the load whose answer was lost: credited once');

# psql shows notifications after a command: ask it for one more
$in .= "SELECT 'done';\n";
$listener->pump until $out =~ /done/;
$in .= "\\q\n";
$listener->finish;

like($out, qr/payload "\{"event" : "held", "id" : $held\}"/, 'held by a limit: alert received');
like($out, qr/payload "\{"event" : "awaiting_approval", "id" : $waiting\}"/, 'awaiting approval: alert received');
like($out, qr/payload "\{"event" : "dead", "id" : $dead\}"/, 'dead: alert received');
like($out, qr/payload "\{"event" : "unknown", "id" : $unknown\}"/, 'unknown: alert received');

# credentials refused, on a sandbox of its own (refusals count toward its lockout)
my $url = start_private_sandbox();
my $file = tmp_file('alerts-credentials.conf');
open(my $fh, '>', $file) or die "could not write $file: $!";
print $fh "client_id = sandbox-client\nclient_secret = sandbox-secret-1\n",
  "username = 9999999999\npassword = not-the-password\n";
close $fh;
chmod 0600, $file;
my $refusing = enkash_node('alerts_refused', sandbox_url => $url,
	conf => "enkash.credentials_file = '$file'\n");
($out, $err) = ('', '');
$in = "LISTEN enkash;\nSELECT 'listening';\n";
$listener = IPC::Run::start(
	[ 'psql', '-X', '-At', '-d', $refusing->connstr('postgres') ],
	'<', \$in, '>', \$out, '2>', \$err, IPC::Run::timeout(120));
$listener->pump until $out =~ /listening/;
my ($rc, $o, $e) = $refusing->psql('postgres', "SELECT enkash_get_card_account('CASANDBOX1')",
	extra_params => [ '-v', 'VERBOSITY=verbose' ]);
like($e, qr/NK00[28]/, 'the call failed: the credentials were refused');
$in .= "SELECT pg_sleep(3);\nSELECT 'done';\n";
$listener->pump until $out =~ /done/;
$in .= "\\q\n";
$listener->finish;
like($out, qr/payload "\{"event" : "credentials_refused", "id" : null, "at" : "[^"]+"\}"/,
	'credentials refused: alert received');

done_testing();
