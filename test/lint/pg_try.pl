#!/usr/bin/perl
# test/lint/pg_try.pl FILE...: every PG_TRY block is left only through
# PG_END_TRY.  A return, a goto, or a break/continue of a loop outside the
# block skips the restoring of PG_exception_stack, and the next error in the
# process jumps into a finished stack frame and crashes.
# One check per PG_TRY block; ends with "pg_try: N passed, M failed".
use strict;
use warnings;

my ($passed, $failed) = (0, 0);
for my $file (@ARGV)
{
	open(my $fh, '<', $file) or die "$file: $!";
	my @lines = <$fh>;
	close($fh);
	for (my $i = 0; $i < @lines; $i++)
	{
		next unless $lines[$i] =~ /\bPG_TRY\s*\(\)/;
		my ($start, $depth, $in_loop, @bad) = ($i + 1, 1, 0);
		for ($i++; $i < @lines; $i++)
		{
			my $line = $lines[$i];
			$line =~ s{/\*.*?\*/}{}g;
			next if $line =~ m{^\s*(\*|/\*)};
			$depth++ if $line =~ /\bPG_TRY\s*\(\)/;
			last if $line =~ /\bPG_END_TRY\s*\(\)/ && --$depth == 0;
			# roughly: a break or continue after a loop or switch that the
			# same part of the block opened is taken to be that one's
			$in_loop = 0 if $line =~ /\bPG_(CATCH|FINALLY)\s*\(\)/;
			$in_loop = 1 if $line =~ /^\s*(for|while|do|switch)\b/;
			push @bad, ($i + 1) . ': ' . ($line =~ s/^\s+|\s+$//gr)
			  if $line =~ /\b(return|goto)\b/
			  || ($line =~ /\b(break|continue)\s*;/ && !$in_loop);
		}
		if (@bad)
		{
			$failed++;
			print "$file:$start: PG_TRY block left without PG_END_TRY at\n";
			print "    $_\n" for @bad;
		}
		else
		{
			$passed++;
		}
	}
}
print "pg_try: $passed passed, $failed failed\n";
exit($failed ? 1 : 0);
