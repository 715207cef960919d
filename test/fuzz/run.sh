#!/usr/bin/env bash
# test/fuzz/run.sh [seconds]: builds the libFuzzer harness over src/envelope.c
# (clang -fsanitize=fuzzer,address,undefined) and runs it for the given time
# (default 60 s) from the checked-in seed corpus (test/fuzz/corpus/).
# Prints "fuzz: N executions, N crashes" (then "fuzz-envelope: 1 passed, 0
# failed", the form test/run.sh counts) and exits 1 if anything crashed.
#
# The corpus is first replayed as a regression test (every file in it, the
# inputs of past crashes included, must pass).  New inputs found while
# fuzzing go to a scratch directory, not into the checked-in corpus; a crash
# is saved as $FUZZ_OUT/crash-<sha1> (copy it into test/fuzz/corpus/ once the
# bug is fixed), and fuzzing goes on with the rest of the time.
#
# Environment: FUZZ_OUT=DIR (default a new /tmp/enkash-fuzz.XXXXXX, kept),
# FUZZ_JOBS=N parallel fuzzing processes (default 1), CC (default clang),
# FUZZ_CFLAGS extra flags (e.g. -DCHECK_CANONICAL).
# Needs clang and libclang-rt-14-dev (Debian 12); installs them when missing.
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
seconds=${1:-60}
jobs=${FUZZ_JOBS:-1}
CC=${CC:-clang}

case "$seconds" in ''|*[!0-9]*) echo "usage: $0 [seconds]" >&2; exit 2 ;; esac

if ! command -v "$CC" >/dev/null ||
   ! ls /usr/lib/llvm-*/lib/clang/*/lib/linux/libclang_rt.fuzzer-x86_64.a >/dev/null 2>&1; then
	. "$root/test/lib.sh"
	APT_PACKAGES=""
	ensure_packages clang libclang-rt-14-dev libssl-dev pkg-config
fi

out=${FUZZ_OUT:-$(mktemp -d /tmp/enkash-fuzz.XXXXXX)}
mkdir -p "$out/new"
bin="$out/fuzz_envelope"

echo "fuzz: building $bin" >&2
# shellcheck disable=SC2086
"$CC" -g -O1 -fno-omit-frame-pointer -fsanitize=fuzzer,address,undefined \
	-fno-sanitize-recover=undefined ${FUZZ_CFLAGS:-} -I"$root/src" \
	-o "$bin" "$here/fuzz_envelope.c" "$root/src/envelope.c" \
	$(pkg-config --libs libcrypto 2>/dev/null || echo -lcrypto) || {
	echo "fuzz: build failed"
	exit 2
}

# 1. Regression: every checked-in input, once.
n_seeds=$(find "$here/corpus" -type f | wc -l)
if ! "$bin" -runs=0 -artifact_prefix="$out/regression-" "$here/corpus" >"$out/regression.log" 2>&1; then
	tail -30 "$out/regression.log" >&2
	echo "fuzz: the checked-in corpus fails (see $out/regression.log)"
	echo "fuzz: 0 executions, 1 crashes"
	exit 1
fi
echo "fuzz: corpus of $n_seeds inputs replayed without a failure" >&2

# 2. Fuzzing for the time given; restarted after a crash until time is up.
execs=0
crashes=0
deadline=$(( $(date +%s) + seconds ))
round=0
while :; do
	left=$(( deadline - $(date +%s) ))
	[ "$left" -gt 0 ] || break
	round=$((round + 1))
	log="$out/fuzz.$round.log"
	if [ "$jobs" -gt 1 ]; then
		# -fork keeps going after a crash by itself.
		"$bin" -fork="$jobs" -ignore_crashes=1 -max_total_time="$left" -print_final_stats=1 \
			-max_len=65536 -artifact_prefix="$out/" "$out/new" "$here/corpus" >"$log" 2>&1
	else
		"$bin" -max_total_time="$left" -print_final_stats=1 -max_len=65536 \
			-artifact_prefix="$out/" "$out/new" "$here/corpus" >"$log" 2>&1
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
	grep -E 'ERROR: (AddressSanitizer|libFuzzer|UndefinedBehaviorSanitizer)|fuzz_envelope: ' "$log" | head -3 >&2
done

crashes=$(find "$out" -maxdepth 1 -type f \( -name 'crash-*' -o -name 'leak-*' -o -name 'timeout-*' -o -name 'oom-*' \) | wc -l)
for f in "$out"/crash-* "$out"/leak-* "$out"/timeout-* "$out"/oom-*; do
	[ -f "$f" ] && echo "fuzz: artifact $f" >&2
done
echo "fuzz: logs and new corpus entries in $out" >&2
echo "fuzz: $execs executions, $crashes crashes"
# The form test/run.sh's run_counted reads.
echo "fuzz-envelope: $(( crashes == 0 ? 1 : 0 )) passed, $(( crashes == 0 ? 0 : 1 )) failed"
[ "$crashes" -eq 0 ]
