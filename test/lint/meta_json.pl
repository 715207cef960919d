#!/usr/bin/perl
# test/lint/meta_json.pl ROOT: META.json is a valid PGXN distribution
# document (meta-spec 1.0.0: the rules of the PGXN meta spec's JSON schema,
# https://pgxn.org/meta/v1/distribution.schema.json, checked here without a
# schema library), and the version it, debian/changelog and CHANGELOG.md
# give is enkash.control's default_version (0.2 is 0.2.0 in SemVer).
# Also checks that documents breaking those rules are refused.
# Ends "meta_json: N passed, M failed".
use strict;
use warnings;
use JSON::PP;

my $root = shift // '.';
my ($passed, $failed) = (0, 0);
sub check {
	my ($ok, $what) = @_;
	if ($ok) { $passed++ } else { $failed++; print "not ok: $what\n" }
}
sub slurp { my $f = shift; open(my $h, '<', $f) or return undef; local $/; my $t = <$h>; return $t }

my $semver = qr/(?:0|[1-9]\d*)\.(?:0|[1-9]\d*)\.(?:0|[1-9]\d*)
	(?:-(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*)?
	(?:\+[0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*)?/x;
my $range_one = qr/(?:(?:[=!]=|[<>]=?)\s*)?(?:$semver|0)/;
my @licenses = qw(agpl_3 apache_1_1 apache_2_0 artistic_1 artistic_2 bsd freebsd gfdl_1_2
	gfdl_1_3 gpl_1 gpl_2 gpl_3 lgpl_2_1 lgpl_3_0 mit mozilla_1_0 mozilla_1_1 openssl perl_5
	postgresql qpl_1_0 ssleay sun zlib open_source restricted unrestricted unknown);

sub is_str { my $v = shift; defined $v && !ref $v && length $v >= (shift // 1) }
sub is_obj { ref $_[0] eq 'HASH' }
sub is_term { is_str($_[0], 2) && $_[0] !~ m{[/\\\s[:cntrl:]]} }
sub is_path { is_str($_[0], 2) && $_[0] !~ m{^/|\\|(^|/)\.\.(/|$)} }
sub is_version { is_str($_[0]) && $_[0] =~ /^$semver$/ }
sub is_range { my $v = shift; (defined $v && !ref $v && $v eq '0') || (is_str($v) && $v =~ /^$range_one(?:,\s*$range_one)*$/) }
sub is_uri { is_str($_[0]) && $_[0] =~ m{^[a-z][a-z0-9+.-]*:\S+$}i }
sub custom { $_[0] =~ /^[xX]_./ }
sub list_of {   # value, item check, may be a single item
	my ($v, $item, $single) = @_;
	return $item->($v) if $single && !ref $v;
	my %seen;
	ref $v eq 'ARRAY' && @$v && !grep { !$item->($_) || $seen{$_}++ } @$v;
}
sub keys_ok {   # object, { key => check }, required keys...
	my ($o, $known, @required) = @_;
	is_obj($o) or return 0;
	for my $k (keys %$o) { next if custom($k); ($known->{$k} // return 0)->($o->{$k}) or return 0 }
	!grep { !exists $o->{$_} } @required;
}
sub any_of { my ($o, @k) = @_; grep { exists $o->{$_} } @k }

my %phase_keys = map { my $r = $_; ($r => sub {
	my $o = shift; is_obj($o) && %$o && !grep { !is_term($_) || !is_range($o->{$_}) } keys %$o }) }
	qw(requires recommends suggests conflicts);
my %top = (
	name => \&is_term,
	version => \&is_version,
	abstract => \&is_str,
	description => \&is_str,
	generated_by => \&is_str,
	maintainer => sub { list_of($_[0], \&is_str, 1) },
	license => sub {
		my $v = shift; my %ok = map { $_ => 1 } @licenses;
		is_obj($v) ? (%$v && !grep { !is_uri($_) } values %$v) : list_of($v, sub { $ok{$_[0]} }, 1) },
	provides => sub {
		my $v = shift;
		is_obj($v) && %$v && !grep { !is_term($_) || !keys_ok($v->{$_}, {
			file => \&is_path, version => \&is_version, abstract => \&is_str,
			docfile => \&is_path, docpath => \&is_str }, qw(file version)) } keys %$v },
	prereqs => sub {
		my $v = shift;
		keys_ok($v, { map { my $p = $_; ($p => sub { keys_ok($_[0], \%phase_keys)
			&& any_of($_[0], keys %phase_keys) }) } qw(configure build test runtime develop) }) },
	no_index => sub {
		my $v = shift; my $files = sub { list_of($_[0], \&is_path, 1) };
		keys_ok($v, { file => $files, directory => $files }) && any_of($v, qw(file directory)) },
	tags => sub { list_of($_[0], sub { is_str($_[0], 2) && length $_[0] < 256 && $_[0] !~ m{[/\\[:cntrl:]]} }) },
	release_status => sub { is_str($_[0]) && $_[0] =~ /^(stable|testing|unstable)$/ },
	resources => sub {
		my $v = shift;
		keys_ok($v, {
			homepage => \&is_uri,
			bugtracker => sub { keys_ok($_[0], { web => \&is_uri, mailto => sub { is_str($_[0]) && $_[0] =~ /^[^@\s]+@[^@\s]+$/ } })
				&& any_of($_[0], qw(web mailto)) },
			repository => sub { keys_ok($_[0], { url => \&is_uri, web => \&is_uri, type => sub { is_str($_[0]) && $_[0] =~ /^[a-z]+$/ } })
				&& (exists $_[0]{web} || (exists $_[0]{url} && exists $_[0]{type})) },
		}) && any_of($v, qw(homepage bugtracker repository)) },
	'meta-spec' => sub { keys_ok($_[0], {
		version => sub { is_str($_[0]) && $_[0] =~ /^1\.0\.\d+$/ },
		url => sub { is_str($_[0]) && $_[0] =~ m{^https?://pgxn\.org/meta/spec\.txt$} } }, 'version') },
);
sub valid { keys_ok($_[0], \%top, qw(name version abstract maintainer license provides meta-spec)) }

my $text = slurp("$root/META.json");
my $meta = eval { JSON::PP->new->decode($text // '') };
check($meta, "META.json is JSON");
$meta //= {};
check(valid($meta), 'META.json follows the PGXN meta spec 1.0.0');
for my $k (sort keys %$meta) {
	next if custom($k);
	check($top{$k} && $top{$k}->($meta->{$k}), "META.json's \"$k\" is valid");
}

# The version lives in enkash.control; everything else must say the same.
my ($control) = (slurp("$root/enkash.control") // '') =~ /^default_version\s*=\s*'([^']*)'/m;
check(defined $control, "enkash.control has a default_version");
$control //= '?';
my $sem = $control =~ /^\d+\.\d+$/ ? "$control.0" : $control;
check(($meta->{version} // '') eq $sem, "META.json's version is $sem (enkash.control: $control)");
for my $ext (sort keys %{ $meta->{provides} // {} }) {
	my $p = $meta->{provides}{$ext};
	check(($p->{version} // '') eq $sem, "provides.$ext.version is $sem");
	check(-f "$root/$p->{file}", "provides.$ext.file $p->{file} exists") if $p->{file};
	check(-f "$root/$p->{docfile}", "provides.$ext.docfile $p->{docfile} exists") if $p->{docfile};
}
my ($deb) = (slurp("$root/debian/changelog") // '') =~ /^\S+ \(([^)-]+)/;
check(($deb // '') eq $control, "debian/changelog's version is $control");
check((slurp("$root/CHANGELOG.md") // '') =~ /^## \Q$control\E$/m, "CHANGELOG.md has a section for $control");

# The checks refuse what the spec refuses.
my @broken = (
	['no license', sub { delete $_[0]{license} }],
	['a license not in the list', sub { $_[0]{license} = 'postgres' }],
	['a two-part version', sub { $_[0]{version} = '0.2' }],
	['meta-spec 2.0.0', sub { $_[0]{'meta-spec'}{version} = '2.0.0' }],
	['an unknown key', sub { $_[0]{homepage} = 'https://example.org' }],
	['a name with a slash', sub { $_[0]{name} = 'en/kash' }],
	['a provided extension without a file', sub { delete $_[0]{provides}{enkash}{file} }],
	['a prereq that is not a version range', sub { $_[0]{prereqs}{runtime}{requires}{PostgreSQL} = 'fifteen' }],
	['an unknown release status', sub { $_[0]{release_status} = 'beta' }],
);
for my $b (@broken) {
	my $copy = JSON::PP->new->decode($text // '{}');
	$b->[1]->($copy);
	check(!valid($copy), "refused: $b->[0]");
}
print "meta_json: $passed passed, $failed failed\n";
exit($failed ? 1 : 0);
