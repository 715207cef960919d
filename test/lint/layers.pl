#!/usr/bin/perl
# test/lint/layers.pl FILE...: dependencies in src/ point one way.  Every
# file has a layer (the table below, lowest first); a file may include the
# headers of its own layer and those below, never one above.  A private
# header (*_internal.h, fields.h) is included only by the files of its
# module.  A file missing from the table fails, so that a new file gets a
# layer.  One check per file; ends with "layers: N passed, M failed".
use strict;
use warnings;
use File::Basename;

# layer => the modules in it (a module: a .c file and its .h, by name)
my @layers = (
	[ 'base',       qw(compat envelope stoppoint wait_events) ],
	[ 'foundation', qw(enkash_h settings enkash_spi spi endpoints json_member mask credentials timeline live installed) ],
	[ 'wire',       qw(transport transport_internal transport_multi response ratelimit effect) ],
	[ 'stores',     qw(ledger ledger_internal ledger_slots ledger_sql ledger_many ledger_batch ledger_worker) ],
	[ 'calls',      qw(token request fields api pages reconcile money check
					   outbox outbox_internal outbox_rows outbox_sender
					   controls approval) ],
	[ 'processes',  qw(worker enkash) ],
);

# private header => the files that may include it
my %private = (
	'ledger_internal.h'    => qr/^ledger/,
	'outbox_internal.h'    => qr/^outbox/,
	'transport_internal.h' => qr/^transport/,
	'fields.h'             => qr/^(fields|api)\.c$/,
);

my %layer_of;
for my $i (0 .. $#layers)
{
	my ($name, @modules) = @{ $layers[$i] };
	$layer_of{$_} = $i for @modules;
}

# enkash.h declares what the modules share; enkash.c is the start-up
sub module_of
{
	my ($file) = @_;
	return 'enkash_h' if $file eq 'enkash.h';
	return $file =~ s/\.[ch]$//r;
}

my ($passed, $failed) = (0, 0);
for my $path (@ARGV)
{
	my $file = basename($path);
	my $mine = $layer_of{ module_of($file) };
	my @bad;

	if (!defined $mine)
	{
		push @bad, "not in the table of layers in test/lint/layers.pl";
	}
	else
	{
		open(my $fh, '<', $path) or die "$path: $!";
		while (my $line = <$fh>)
		{
			next unless $line =~ /^\s*#\s*include\s+"([^"]+)"/;
			my $header = $1;
			my $theirs = $layer_of{ module_of($header) };
			next unless defined $theirs;    # PostgreSQL's own
			push @bad, "$.: includes $header (layer $layers[$theirs][0]) from layer $layers[$mine][0]"
			  if $theirs > $mine;
			push @bad, "$.: includes $header, private to its module"
			  if $private{$header} && $file !~ $private{$header} && $file ne $header;
		}
		close($fh);
	}
	if (@bad)
	{
		$failed++;
		print "$path:\n";
		print "    $_\n" for @bad;
	}
	else
	{
		$passed++;
	}
}
print "layers: $passed passed, $failed failed\n";
exit($failed ? 1 : 0);
