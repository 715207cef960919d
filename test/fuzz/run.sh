#!/usr/bin/env bash
# test/fuzz/run.sh [seconds]: builds the libFuzzer harnesses (clang
# -fsanitize=fuzzer,address,undefined) and runs each for its share of the
# given time (default 60 s, split evenly) from its checked-in seed corpus:
#   envelope  fuzz_envelope.c over src/envelope.c's cipher and Base64
#             (corpus/)
#   response  fuzz_response.c over reading an answer: envelope_unwrap,
#             envelope_open, the nesting scan and PostgreSQL's own JSON parser
#             (the frontend pg_parse_json in libpgcommon.a), checked against
#             each other (corpus-response/, then corpus/)
# FUZZ_HARNESSES="response" picks some.  Prints, per harness and in total,
# "fuzz: N executions, N crashes" (then "fuzz: N passed, N failed", one per
# harness, the form test/run.sh counts) and exits 1 if anything crashed.
#
# The corpora are first replayed as a regression test (every file in them,
# the inputs of past crashes included, must pass).  New inputs found while
# fuzzing go to a scratch directory, not into the checked-in corpus; a crash
# is saved as $FUZZ_OUT/<harness>-crash-<sha1> (copy it into the corpus once
# the bug is fixed), and fuzzing goes on with the rest of the time.
#
# Environment: FUZZ_OUT=DIR (kept; default a new /tmp/enkash-fuzz.XXXXXX,
# removed at the end unless something failed),
# FUZZ_JOBS=N parallel fuzzing processes (default 1), CC (default clang),
# FUZZ_CFLAGS extra flags.
# Needs clang, libclang-rt-14-dev and postgresql-server-dev-15 (Debian 12);
# installs them when missing.
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
seconds=${1:-60}
jobs=${FUZZ_JOBS:-1}
CC=${CC:-clang}

case "$seconds" in ''|*[!0-9]*) echo "usage: $0 [seconds]" >&2; exit 2 ;; esac

pg_config=/usr/lib/postgresql/15/bin/pg_config
if ! command -v "$CC" >/dev/null ||
   ! ls /usr/lib/llvm-*/lib/clang/*/lib/linux/libclang_rt.fuzzer-x86_64.a >/dev/null 2>&1 ||
   ! [ -f "$("$pg_config" --pkglibdir 2>/dev/null)/libpgcommon.a" ]; then
	. "$root/test/lib.sh"
	APT_PACKAGES=""
	ensure_packages clang libclang-rt-14-dev libssl-dev pkg-config postgresql-server-dev-15
fi

out=${FUZZ_OUT:-$(mktemp -d /tmp/enkash-fuzz.XXXXXX)}
scratch=${FUZZ_OUT:+kept}	# a directory of our own goes when nothing crashed
mkdir -p "$out" || exit 2
harnesses=${FUZZ_HARNESSES:-envelope response}
n_harnesses=$(echo $harnesses | wc -w)
share=$(( seconds / n_harnesses ))
pglib=$("$pg_config" --pkglibdir)	# libpgcommon.a, libpgport.a (frontend builds)

# build NAME: the harness binary $out/fuzz_NAME
build() {
	local name=$1 extra=()
	[ "$name" = response ] &&
		extra=(-Wno-ignored-attributes -I"$("$pg_config" --includedir-server)"
			-L"$pglib" -lpgcommon -lpgport)
	echo "fuzz: building $out/fuzz_$name" >&2
	# shellcheck disable=SC2086
	"$CC" -g -O1 -fno-omit-frame-pointer -fsanitize=fuzzer,address,undefined \
		-fno-sanitize-recover=undefined ${FUZZ_CFLAGS:-} -I"$root/src" \
		-o "$out/fuzz_$name" "$here/fuzz_$name.c" "$root/src/envelope.c" \
		"${extra[@]}" $(pkg-config --libs libcrypto 2>/dev/null || echo -lcrypto)
}

# fuzz NAME SECONDS CORPUS...: replays the corpora, then fuzzes; prints
# "NAME: N executions, N crashes"; returns 1 if anything failed.
fuzz() {
	local name=$1 secs=$2 bin="$out/fuzz_$1" execs=0 crashes round=0 left log rc n f
	shift 2
	mkdir -p "$out/new-$name"
	# 1. Regression: every checked-in input, once.
	if ! "$bin" -runs=0 -artifact_prefix="$out/$name-regression-" "$@" >"$out/$name-regression.log" 2>&1; then
		tail -30 "$out/$name-regression.log" >&2
		echo "fuzz: $name: the checked-in corpus fails (see $out/$name-regression.log)" >&2
		echo "$name: 0 executions, 1 crashes"
		return 1
	fi
	echo "fuzz: $name: corpus of $(find "$@" -type f | wc -l) inputs replayed without a failure" >&2

	# 2. Fuzzing for the time given; restarted after a crash until time is up.
	local deadline=$(( $(date +%s) + secs ))
	while :; do
		left=$(( deadline - $(date +%s) ))
		[ "$left" -gt 0 ] || break
		round=$((round + 1))
		log="$out/$name.$round.log"
		if [ "$jobs" -gt 1 ]; then
			# -fork keeps going after a crash by itself.
			"$bin" -fork="$jobs" -ignore_crashes=1 -max_total_time="$left" -print_final_stats=1 \
				-max_len=65536 -artifact_prefix="$out/$name-" "$out/new-$name" "$@" >"$log" 2>&1
		else
			"$bin" -max_total_time="$left" -print_final_stats=1 -max_len=65536 \
				-artifact_prefix="$out/$name-" "$out/new-$name" "$@" >"$log" 2>&1
		fi
		rc=$?
		n=$(sed -n 's/^stat::number_of_executed_units: *\([0-9]*\).*/\1/p' "$log" | tail -1)
		if [ -z "$n" ]; then
			# No final stats (crash): take the last progress line.
			n=$(grep -oE '^#[0-9]+' "$log" | tail -1 | tr -d '#')
		fi
		execs=$(( execs + ${n:-0} ))
		[ "$rc" -eq 0 ] && [ "$jobs" -le 1 ] && break
		[ "$jobs" -gt 1 ] && break
		grep -E 'ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer|UndefinedBehaviorSanitizer)|fuzz_[a-z]*: ' "$log" | head -3 >&2
	done
	crashes=$(find "$out" -maxdepth 1 -type f \( -name "$name-crash-*" -o -name "$name-leak-*" \
		-o -name "$name-timeout-*" -o -name "$name-oom-*" \) | wc -l)
	for f in "$out/$name"-crash-* "$out/$name"-leak-* "$out/$name"-timeout-* "$out/$name"-oom-*; do
		[ -f "$f" ] && echo "fuzz: artifact $f" >&2
	done
	echo "$name: $execs executions, $crashes crashes"
	[ "$crashes" -eq 0 ]
}

total_execs=0
total_crashes=0
passed=0
failed=0
for h in $harnesses; do
	if ! build "$h"; then
		echo "fuzz: $h: build failed" >&2
		failed=$((failed + 1))
		continue
	fi
	corpora=("$here/corpus")
	[ "$h" = response ] && corpora=("$here/corpus-response" "$here/corpus")
	line=$(fuzz "$h" "$share" "${corpora[@]}")
	rc=$?
	echo "fuzz: $line"
	set -- $(echo "$line" | sed -E 's/.*: ([0-9]+) executions, ([0-9]+) crashes/\1 \2/')
	total_execs=$((total_execs + ${1:-0}))
	total_crashes=$((total_crashes + ${2:-0}))
	if [ "$rc" -eq 0 ]; then passed=$((passed + 1)); else failed=$((failed + 1)); fi
done

if [ -z "$scratch" ] && [ "$failed" -eq 0 ]; then
	rm -rf "$out"
else
	echo "fuzz: logs and new corpus entries in $out" >&2
fi
echo "fuzz: $total_execs executions, $total_crashes crashes"
# The form test/run.sh's run_counted reads.
echo "fuzz: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
