# A load whose kept-alive connection dies after EnKash acted on it, and
# which then cannot be re-sent because EnKash no longer takes connections:
# libcurl, left to itself, re-sends a request whose reused connection died
# without an answer, and the new connection's refusal must not read as "the
# request never left".  A relay between the server and the sandbox passes
# the load on, lets the sandbox credit it, then closes the connection
# without the answer and stops listening.  The load's outcome is unknown
# (NK006), its key stays (unknown, so that the same reference is checked
# with EnKash before anything is sent again), and EnKash credited it once.
use strict;
use warnings;
use lib $ENV{ENKASH_TAP_LIB};
use EnkashTest;
use PostgreSQL::Test::Utils;
use Test::More;
use IO::Select;
use IO::Socket::INET;
use POSIX ();

my $url = start_private_sandbox();
my ($sandbox_port) = $url =~ m{:(\d+)$};
my $cut_file = tmp_file('cut');

# The relay: one connection at a time, both ways, kept open for the client
# whatever the sandbox does with its side.  Once $cut_file exists,
# the next answer from the sandbox is dropped, with the connection and the
# listening socket.
my $listen = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0,
	Listen => 8, ReuseAddr => 1) or die "cannot listen: $!";
my $relay_port = $listen->sockport;
my $relay = fork() // die "fork: $!";
if ($relay == 0)
{
	eval {
		while (my $client = $listen->accept)
		{
			my $upstream = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
				PeerPort => $sandbox_port) or last;
			my $select = IO::Select->new($client, $upstream);
			my $cut = 0;
		  RELAY: while (1)
			{
				for my $from ($select->can_read)
				{
					my $n = sysread($from, my $bytes, 65536);
					if (!$n && $from == $upstream && !$cut)
					{
						# the sandbox closed its side: the next request gets
						# a new one, and the client's connection stays kept
						$select->remove($upstream);
						close $upstream;
						$upstream = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
							PeerPort => $sandbox_port) or last RELAY;
						$select->add($upstream);
						next;
					}
					last RELAY unless $n;
					if ($from == $client)
					{
						$cut = -e $cut_file;
						syswrite($upstream, $bytes);
					}
					elsif ($cut)
					{
						# no longer listening before the connection closes:
						# libcurl's new connection for a re-send is refused
						close $listen;
						close $client;
						POSIX::_exit(0);
					}
					else
					{
						syswrite($client, $bytes);
					}
				}
			}
			close $client;
			close $upstream;
		}
	};
	POSIX::_exit(0);
}
close $listen;    # only the relay listens

my $node = enkash_node('no_resend', sandbox_url => $url, conf => <<"CONF");
enkash.base_url = 'http://127.0.0.1:$relay_port/api/v0/partner/enKashCard'
CONF
install_try_sql($node);

# One session: a look-up opens the kept-alive connection, the load reuses it.
my $result = $node->safe_psql('postgres', <<"SQL");
SELECT enkash_get_card_account('CASANDBOX1') IS NOT NULL;
\\! touch $cut_file
SELECT try_sql(\$\$SELECT enkash_load_balance('CASANDBOX1', 'EKCSANDBOX1', 100, 'CUT-1')\$\$);
SQL
my ($warm, $load) = split /\n/, $result;
is($warm, 't', 'a look-up went through the relay');
like($load, qr/^NK006 \| no answer from EnKash for the card load; the request may have been processed \| The connection closed before EnKash answered, and a new one could not be made \(/,
	'the load whose connection died is unknown, not "not sent", and the detail says why');

is(credits($url, 'CUT-1'), 1, 'EnKash credited the reference once');
is(loads_sent($url), 1, 'one load request reached EnKash: libcurl did not send it again');
is($node->safe_psql('postgres', "SELECT state FROM enkash.idempotency_keys WHERE key = 'CUT-1'"),
	'unknown', 'its key stays, unknown, to be checked with EnKash before any resend');
is($node->safe_psql('postgres',
	"SELECT string_agg(outcome, ' ' ORDER BY id) FROM enkash.audit_log WHERE idempotency_key = 'CUT-1'"),
	'sent unknown', 'the audit log has the request and its answer, unknown');

kill "KILL", $relay;
waitpid($relay, 0);
$node->stop;
done_testing();
