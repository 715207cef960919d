#!/usr/bin/env bash
# test/memcheck.sh [--tap [test/t/FILE.pl ...]]: the test suite with every
# PostgreSQL server process under valgrind memcheck, against the sandbox on
# loopback (also "make memcheck"; "make memcheck-tap TAP='test/t/013*.pl'").
#   (no argument)  the pg_regress suite (REGRESS in the Makefile)
#   --tap [FILES]  TAP tests (default: every test/t/*.pl).  They start their
#                  servers with pg_ctl found on PATH: the private mirror's
#                  postgres becomes a script that runs the real binary (kept
#                  beside it as postgres.real, where PostgreSQL still finds
#                  the mirror's lib and share) under valgrind; initdb's
#                  bootstrap and "postgres -V/-C" run without it.
# Builds the extension like test/run.sh (at -O0 so that reports name exact
# lines; ENKASH_MEMCHECK_COPT= builds the release flags instead) and
# installs it into a private mirror of the PostgreSQL installation (or
# system-wide, like test/run.sh, with ENKASH_MEMCHECK_INSTALL=system; not
# with --tap), then reads the valgrind logs and reports the errors and leaks
# whose stack passes through enkash code (enkash.so, src/*.c).
#
# Ends with "memcheck: N errors in enkash code" (N distinct reports: memory
# errors plus definite leaks) and exits 1 when N > 0, 2 when the run itself
# failed, 0 otherwise.  Diffs in the regression output and failed TAP tests
# are shown but do not decide the exit status: each server process runs
# 10-50x slower under valgrind, so tests that depend on timing
# (statement_timeout, a second session racing the first, a deadline for a
# worker) may fail.
#
# Environment:
#   ENKASH_MEMCHECK_LOGS=DIR   where the valgrind logs go (default: a new
#                              /tmp/enkash-memcheck.XXXXXX, kept afterwards)
#   ENKASH_MEMCHECK_COPT=FLAGS compiler flags for the extension (default -O0)
#   ENKASH_MEMCHECK_INSTALL=system  install system-wide, as test/run.sh does,
#                              instead of into the private mirror (default
#                              private: runs of test/run.sh or test/demo.sh
#                              from other trees at the same time then neither
#                              disturb this one nor are disturbed by it)
#   ENKASH_VALGRIND_OPTS=OPTS  extra valgrind options (e.g. --gen-suppressions=all)
#   ENKASH_KEEP=1              keep the work directory, as for test/run.sh
#   ENKASH_REGRESS="setup X"   only these pg_regress tests, as for test/run.sh
#
# Runtime on 2 cores: about 1 minute for 9 tests, 3-4 minutes for 15 (the
# suite takes ~20x longer than without valgrind): the whole pg_regress suite
# about 5 minutes, 013_hostile.pl about 7.  Needs root (or sudo) like
# run.sh, for the packages (and the system-wide install).
#
# ENKASH_PG=18 runs it against the PostgreSQL 18 that test/pg-build.sh builds
# with assertions and USE_VALGRIND (built on first use): memcheck then sees
# palloc chunks inside memory contexts too, so an overrun or a use after
# pfree of palloc'd memory is reported.  Debian's PostgreSQL 15 (the
# default) is not built that way: there memcheck knows malloc'd blocks only
# (libcurl, OpenSSL, the credentials, the response buffer) and
# uninitialised values.
set -uo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# The PostgreSQL under valgrind: ENKASH_PG (one version; default 15).
PG_MAJOR=${ENKASH_PG:-$PG_MAJOR}

mode=regress
tap_files=()
case "${1:-}" in
--tap)
	mode=tap
	shift
	tap_files=("$@")
	;;
"") ;;
*)
	echo "usage: $0 [--tap [test/t/FILE.pl ...]]" >&2
	exit 2
	;;
esac

# lib.sh's die, with the verdict line and exit status 2 (the run failed).
die() {
	printf 'error: %s\n' "$*" >&2
	echo "memcheck: could not run: $*"
	exit 2
}
# A server process that exits with this code is a crash to the postmaster,
# which then restarts them all: a memory error shows in the regression diffs
# too.  Leaks do not set it (--errors-for-leak-kinds=none): PostgreSQL itself
# leaks a few strdup'd settings in the postmaster, which every child inherits
# and reports at exit; leaks are judged from the logs below instead.
VALGRIND_EXITCODE=128

ensure_packages valgrind

# The logs outlive the work directory.  A directory named by the caller must
# be new or empty: it is handed to the server's user for the run.
if [ -n "${ENKASH_MEMCHECK_LOGS:-}" ]; then
	[ -z "$(ls -A "$ENKASH_MEMCHECK_LOGS" 2>/dev/null)" ] ||
		die "ENKASH_MEMCHECK_LOGS=$ENKASH_MEMCHECK_LOGS is not empty"
	mkdir -p "$ENKASH_MEMCHECK_LOGS" || die "cannot create $ENKASH_MEMCHECK_LOGS"
	LOGS=$(cd "$ENKASH_MEMCHECK_LOGS" && pwd)
else
	LOGS=$(mktemp -d /tmp/enkash-memcheck.XXXXXX) || die "mktemp failed"
fi
chown "$RUN_USER" "$LOGS"
chmod 755 "$LOGS"

PG_SYSBIN=$(pg_sysbin "$PG_MAJOR") || die "PostgreSQL $PG_MAJOR is not available"
PG_BIN=$PG_SYSBIN
prepare_work_copy

# Servers we started, by pid (the wrapper below records them): stopped on
# exit even if pg_regress was interrupted.
stop_servers() {
	local pid i
	[ -f "$LOGS/server.pids" ] || return 0
	for pid in $(cat "$LOGS/server.pids"); do
		kill -0 "$pid" 2>/dev/null || continue
		kill -QUIT "$pid" 2>/dev/null		# immediate shutdown
		for i in $(seq 1 100); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.2
		done
		if kill -0 "$pid" 2>/dev/null; then
			pkill -KILL -P "$pid" 2>/dev/null
			kill -KILL "$pid" 2>/dev/null
		fi
	done
}
REGRESS_PID=
cleanup() {
	if [ -n "$REGRESS_PID" ] && kill -0 "$REGRESS_PID" 2>/dev/null; then
		kill -TERM "$REGRESS_PID" 2>/dev/null	# runuser passes it on to make
	fi
	stop_servers
	cleanup_work
	chown -R "$(id -u)" "$LOGS" 2>/dev/null
}
trap cleanup EXIT
trap 'echo "memcheck: interrupted"; exit 130' INT TERM

export COPT="${ENKASH_MEMCHECK_COPT--O0}"	# PGXS appends $(COPT) to CFLAGS
case "${ENKASH_MEMCHECK_INSTALL:-private}" in
system | private) ENKASH_INSTALL=${ENKASH_MEMCHECK_INSTALL:-private} build_and_install ;;
*) die "ENKASH_MEMCHECK_INSTALL must be system or private" ;;
esac
SERVER_BIN="$PG_BINDIR/postgres"
inst_prefix=${PG_BINDIR%"$PG_SYSBIN"}	# empty when system-wide
SERVER_PKGLIB="$inst_prefix$(pg_config --pkglibdir)"
SERVER_SHARE="$inst_prefix$(pg_config --sharedir)"
unset COPT
[ "$mode" = tap ] && [ -z "$inst_prefix" ] &&
	die "--tap needs the private install (ENKASH_MEMCHECK_INSTALL=private)"
start_sandbox

vg_opts=(
	--tool=memcheck --leak-check=full --trace-children=yes
	--track-origins=yes --read-var-info=yes
	--error-exitcode=$VALGRIND_EXITCODE
	--errors-for-leak-kinds=none
	--suppressions="$WORK/tree/test/valgrind.supp"
	--trace-children-skip='/bin/*,/usr/bin/*,/usr/local/bin/*,/sbin/*,/usr/sbin/*'
	--num-callers=40 --fullpath-after=
	--error-markers=VALGRINDERROR-BEGIN,VALGRINDERROR-END
	--log-file="$LOGS/valgrind.%p.log"
)
# write_wrapper SCRIPT REAL: a "postgres" that runs REAL under valgrind,
# except for what only asks or bootstraps (-V, -C, --boot, --single,
# --describe-config): initdb and pg_ctl's checks stay fast.
write_wrapper() {
	{
		echo '#!/bin/sh'
		echo 'for a in "$@"; do'
		echo '	case "$a" in'
		printf -- '	-V | --version | -C | --boot | --single | --describe-config) exec %q "$@" ;;\n' "$2"
		echo '	esac'
		echo 'done'
		echo "echo \$\$ >> '$LOGS/server.pids'"
		printf 'exec valgrind'
		printf " %q" "${vg_opts[@]}" ${ENKASH_VALGRIND_OPTS:-}
		printf ' %q "$@"\n' "$2"
	} | as_user sh -c "cat > '$1'"
	as_user chmod 755 "$1"
}

# Waits for the servers valgrind is still finishing, then stops any left.
# pg_ctl stop returns once postmaster.pid is gone, before valgrind's leak
# check in the postmaster has finished writing.
wait_servers() {
	local pid i
	if [ -f "$LOGS/server.pids" ]; then
		for pid in $(cat "$LOGS/server.pids"); do
			for i in $(seq 1 600); do
				kill -0 "$pid" 2>/dev/null || break
				sleep 0.5
			done
		done
	fi
	stop_servers
}

crash="terminated by signal\\|exited with exit code $VALGRIND_EXITCODE"
started=$(date +%s)
if [ "$mode" = regress ]; then
	# --- the same configuration as test/run.sh writes for pg_regress --------
	# Taken from test/run.sh at run time (from 'conf=...' to the line that
	# writes "$conf"), so that the two cannot drift apart: the credentials
	# files the tests expect and the temp-config.  Better still would be one
	# lib.sh function that both call.
	setup=$(sed -n '/^conf="\$WORK\/tree\/test\/tmp\/regress.conf"$/,/^} | as_user sh -c "cat > .\$conf."$/p' \
		"$WORK/tree/test/run.sh")
	# (The range must end where it should: never run the rest of run.sh.)
	[ "$(printf '%s\n' "$setup" | tail -n 1)" = "} | as_user sh -c \"cat > '\$conf'\"" ] ||
		die "could not find the pg_regress setup (conf=... to cat > \$conf) in test/run.sh"
	eval "$setup"
	[ -s "$conf" ] || die "test/run.sh's pg_regress setup wrote no $conf"

	# --- a bindir whose postgres runs under valgrind --------------------------
	# pg_regress starts "<bindir>/postgres" for its temp instance.  initdb,
	# psql and pg_ctl are symlinks: initdb resolves its own path and
	# bootstraps with the real postgres, which keeps the (slow,
	# extension-free) initdb out of valgrind.  Programs the server runs (COPY
	# FROM PROGRAM: sh, curl, openssl) are not traced.
	wrap="$WORK/valgrind-bin"
	as_user mkdir -p "$wrap"
	for p in initdb pg_ctl psql; do
		as_user ln -s "$PG_BIN/$p" "$wrap/$p"
	done
	write_wrapper "$wrap/postgres" "$SERVER_BIN"

	log "pg_regress with the server under valgrind memcheck (logs: $LOGS)"
	# In the background, so that a signal to this script is handled at once.
	regress_only=()
	[ -n "${ENKASH_REGRESS:-}" ] && regress_only+=(REGRESS="$ENKASH_REGRESS")
	as_user env PGCTLTIMEOUT=900 make -C "$WORK/tree" installcheck \
		PG_CONFIG="$PG_BIN/pg_config" EXTRA_REGRESS_OPTS="--bindir=$wrap" \
		"${regress_only[@]}" >"$WORK/regress.log" 2>&1 &
	REGRESS_PID=$!
	wait "$REGRESS_PID"
	regress_rc=$?
	REGRESS_PID=
	wait_servers
	log "pg_regress finished in $(( $(date +%s) - started )) s"

	cp "$WORK/regress.log" "$LOGS/regress.log"
	[ -f "$WORK/tree/regression.diffs" ] && cp "$WORK/tree/regression.diffs" "$LOGS/"
	[ -f "$WORK/tree/log/postmaster.log" ] && cp "$WORK/tree/log/postmaster.log" "$LOGS/"
	grep -E '^(ok|not ok|test |     )|tests (passed|failed)' "$WORK/regress.log" >&2
	ok=$(grep -cE '\.\.\. ok|^ok [0-9]+ ' "$WORK/regress.log")
	bad=$(grep -cE '\.\.\. (FAILED|failed)|^not ok [0-9]+ ' "$WORK/regress.log")
	if [ "$bad" -gt 0 ] && [ -f "$WORK/tree/regression.diffs" ]; then
		log "pg_regress under valgrind: $bad test(s) differ (timing tests may, under valgrind); first lines of the diffs:"
		head -60 "$WORK/tree/regression.diffs" >&2
	fi
	server_logs=("$LOGS/postmaster.log")
	suite_log="$WORK/regress.log"
else
	# --- TAP: the mirror's postgres runs under valgrind -----------------------
	# pg_ctl (a copy in the mirror's bindir, first on PATH) starts the
	# "postgres" in its own directory: that becomes the wrapper, and the real
	# binary stays in the same directory, so that it still finds the
	# mirror's lib (this tree's enkash.so) and share.
	as_user mv "$SERVER_BIN" "$SERVER_BIN.real" || die "cannot move $SERVER_BIN aside"
	write_wrapper "$SERVER_BIN" "$SERVER_BIN.real"
	write_credentials "$WORK/credentials.conf"
	[ ${#tap_files[@]} -gt 0 ] || tap_files=(test/t/*.pl)
	pgxs=$(dirname "$("$PG_BIN/pg_config" --pgxs)")/..
	as_user mkdir -p "$WORK/tap"
	log "TAP tests ${tap_files[*]} with every server under valgrind memcheck (logs: $LOGS)"
	# Timeouts of pg_ctl and of the test library's waits, for ~20x slower
	# servers.
	(cd "$WORK/tree" && as_user env TESTDIR="$WORK/tap" PG_REGRESS="$pgxs/test/regress/pg_regress" \
		PATH="$PG_BINDIR:$PATH" PGCTLTIMEOUT=900 PG_TEST_TIMEOUT_DEFAULT=900 \
		SANDBOX_URL="$SANDBOX_URL" ENKASH_CREDENTIALS="$WORK/credentials.conf" \
		ENKASH_TAP_LIB="$WORK/tree/test/t" ENKASH_SANDBOX_BIN="$WORK/tree/test/sandbox/enkash-sandbox" \
		prove -I "$pgxs/test/perl" "${tap_files[@]}") >"$WORK/tap.log" 2>&1 &
	REGRESS_PID=$!
	wait "$REGRESS_PID"
	regress_rc=$?
	REGRESS_PID=
	wait_servers
	log "TAP tests finished in $(( $(date +%s) - started )) s"

	cp "$WORK/tap.log" "$LOGS/tap.log"
	mkdir -p "$LOGS/tap-logs"
	cp "$WORK"/tap/tmp_check/log/* "$LOGS/tap-logs/" 2>/dev/null
	cat "$WORK/tap.log" >&2
	ok=$(sed -n 's/^Files=[0-9]*, Tests=\([0-9]*\).*/\1/p' "$WORK/tap.log")
	ok=${ok:-0}
	if [ "$regress_rc" -ne 0 ]; then
		log "TAP under valgrind: some tests failed (timing tests may, under valgrind); see $LOGS/tap-logs"
	fi
	server_logs=("$LOGS"/tap-logs/*.log)
	suite_log="$WORK/tap.log"
fi

if grep -q "$crash" "${server_logs[@]}" 2>/dev/null; then
	log "server processes crashed or exited with valgrind's error code ($VALGRIND_EXITCODE):"
	grep "$crash" "${server_logs[@]}" | head -10 >&2
fi

# With the system-wide install, another run that installs meanwhile
# (test/run.sh, test/demo.sh from another tree) changes what the servers
# load, and the results would not be about this tree.
changed=
cmp -s "$WORK/tree/enkash.so" "$SERVER_PKGLIB/enkash.so" || changed=enkash.so
for f in "$WORK"/tree/enkash*.sql "$WORK"/tree/enkash.control; do
	cmp -s "$f" "$SERVER_SHARE/extension/${f##*/}" || changed="$changed ${f##*/}"
done
if [ -n "$changed" ]; then
	echo "memcheck: another build of enkash was installed during this run ($changed);" \
		"run it again alone, or with ENKASH_MEMCHECK_INSTALL=private (logs: $LOGS)"
	exit 2
fi

nlogs=$(ls "$LOGS"/valgrind.*.log 2>/dev/null | wc -l)
if [ "$ok" -eq 0 ] || [ "$nlogs" -eq 0 ]; then
	tail -30 "$suite_log" >&2
	echo "memcheck: the suite did not run under valgrind (rc $regress_rc, $nlogs valgrind logs); see $LOGS"
	exit 2
fi

# --- the verdict: reports whose stack passes through enkash code ---------------
# A report is the text between valgrind's error markers.  It is ours when a
# frame is in enkash.so or in a source file of this tree's src/.
perl - "$WORK/tree/src/" "$LOGS" <<'PERL'
use strict;
use warnings;
my ($src, $dir) = @ARGV;
my (%seen, @order);
my %count = (errors => 0, definite => 0, possible => 0, other => 0, other_definite => 0);
for my $file (sort glob("$dir/valgrind.*.log")) {
	open(my $fh, '<', $file) or next;
	my ($in, @block);
	while (my $line = <$fh>) {
		next unless $line =~ s/^==\d+== ?//;
		if ($line =~ /^VALGRINDERROR-BEGIN/) { $in = 1; @block = (); next; }
		if ($line =~ /^VALGRINDERROR-END/) {
			$in = 0;
			my $what = $block[0] // '';
			my $ours = grep { /enkash\.so|\Q$src\E\w+\.c:\d+/ } @block;
			my $leak = $what =~ /are (definitely|indirectly|possibly) lost/ ? $1
				: $what =~ /are still reachable/ ? 'reachable' : '';
			next if $leak eq 'reachable';		# only with --show-leak-kinds=all
			if (!$ours) {
				$count{other}++ if $leak eq '';
				$count{other_definite}++ if $leak eq 'definitely';
				next;
			}
			next if $leak eq 'indirectly';
			my $kind = $leak eq 'definitely' ? 'definite' : $leak eq 'possibly' ? 'possible' : 'errors';
			$count{$kind}++;
			# The same report from many processes and call sites: key on the
			# kind, the top frame and our frames (PostgreSQL's frames below
			# them differ with the SQL that called us).
			my @frames = map { (my $f = $_) =~ s/^\s+(at|by) 0x[0-9A-F]+: //; $f }
				grep { /^\s+(at|by) 0x/ } @block;
			my @mine = grep { /enkash\.so|\Q$src\E/ } @frames;
			(my $head = $what) =~ s/[\d,]+ bytes in [\d,]+ blocks/N bytes/;
			$head =~ s/ in loss record.*//;
			my $key = join("\n", $head, $frames[0] // '', @mine[0 .. ($#mine < 5 ? $#mine : 5)]);
			if (!$seen{$key}) {
				push @order, $key;
				$seen{$key} = { kind => $kind, n => 0, file => $file, text => [@block] };
			}
			$seen{$key}{n}++;
			next;
		}
		push @block, $line if $in && $line =~ /\S/;
	}
	close($fh);
}
my @ours = grep { $seen{$_}{kind} ne 'possible' } @order;
my @maybe = grep { $seen{$_}{kind} eq 'possible' } @order;
my $i = 0;
for my $key (@ours, @maybe) {
	my $r = $seen{$key};
	$i++;
	printf "--- [%d] %s%s, %d time(s); first in %s\n", $i,
		$r->{kind} eq 'possible' ? '(possibly lost, not counted) ' : '',
		$r->{kind} eq 'errors' ? 'memory error' : "$r->{kind} leak", $r->{n}, $r->{file};
	my @t = @{$r->{text}};
	print map { "    $_" } @t[0 .. ($#t < 24 ? $#t : 24)];
}
printf "memcheck: %d memory error(s) and %d definite leak(s) in enkash code (%d distinct); "
	. "%d possibly-lost blocks; %d other errors and %d definite leaks outside enkash code\n",
	$count{errors}, $count{definite}, scalar(@ours), $count{possible}, $count{other}, $count{other_definite};
print "memcheck: valgrind logs in $dir\n";
print "memcheck: ", scalar(@ours), " errors in enkash code\n";
exit(@ours ? 1 : 0);
PERL
