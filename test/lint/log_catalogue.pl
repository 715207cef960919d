#!/usr/bin/perl
# test/lint/log_catalogue.pl README.md FILE...: every LOG and WARNING message
# the extension writes (ereport at level LOG or WARNING in src/) is in the
# README's table "What the server log says", word for word as its format
# string.  One check per message; ends with "log-catalogue: N passed, M failed".
use strict;
use warnings;

my ($readme, @sources) = @ARGV;
open(my $fh, '<', $readme) or die "$readme: $!";
my $text = do { local $/; <$fh> };
close($fh);
my ($table) = $text =~ /^### What the server log says\n(.*?)(?=^#)/ms
  or die "$readme has no section \"What the server log says\"\n";

my ($passed, $failed) = (0, 0);
for my $path (@sources)
{
	open(my $src, '<', $path) or die "$path: $!";
	my $code = do { local $/; <$src> };
	close($src);
	# ereport(LOG, (errmsg("..." / ereport(x ? ERROR : WARNING, (errmsg("..."
	while ($code =~ /ereport\s*\(([^;]*?\b(?:LOG|WARNING)\b[^(;]*?),\s*\(\s*errmsg\w*\s*\(\s*"((?:[^"\\]|\\.)*)"/g)
	{
		my $message = $2 =~ s/\\"/"/gr;
		if (index($table, "`$message`") >= 0)
		{
			$passed++;
		}
		else
		{
			$failed++;
			print "$path: LOG/WARNING message missing from README \"What the server log says\": $message\n";
		}
	}
}
print "log-catalogue: $passed passed, $failed failed\n";
exit($failed ? 1 : 0);
