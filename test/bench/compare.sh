#!/bin/bash
# test/bench/compare.sh OLD [NEW]: CPU per call of two versions of the
# extension, measured in one run with the two interleaved (old, new, old,
# new, ...) so that drift in the machine's load hits both alike.
#
# OLD and NEW are git revisions (NEW defaults to HEAD).  Each is exported
# with `git archive` and given this tree's test/ directory, so the harness,
# the sandbox and the raw client are the same for both and only src/ and the
# SQL differ.  Every round runs test/bench/run.sh once per version with
# BENCH_ONLY=money BENCH_RUNS=1 BENCH_REFERENCES=0 (raw client, SELECT 1,
# look-up and load at BENCH_SESSIONS, default 8, for BENCH_SECONDS each, no
# added latency, no reference rows) and
# keeps its CSV.  Prints, per version, the "CPU per call by process" totals
# of every round and their median, and the ratio to the raw client of the
# same run.
#
#   BENCH_COMPARE_ROUNDS=3   rounds (each version once per round)
#   BENCH_COMPARE_LATENCY_MS=0  also the rows at 8 sessions against this much
#                            sandbox latency (run.sh's BENCH_MONEY_LATENCY_MS),
#                            compared by their calls/s ratios: a look-up's to
#                            the raw client's, a load's to a read's
#   BENCH_SECONDS, BENCH_SESSIONS as for run.sh
#
# About 1.5 minutes per version and round with the defaults; run it on an
# otherwise idle machine.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
OLD=${1:?usage: test/bench/compare.sh OLD [NEW]}
NEW=${2:-HEAD}
ROUNDS=${BENCH_COMPARE_ROUNDS:-3}
LATENCY=${BENCH_COMPARE_LATENCY_MS:-0}
export BENCH_SESSIONS=${BENCH_SESSIONS:-8}
export BENCH_SECONDS=${BENCH_SECONDS:-10}

OUT=$ROOT/test/bench/results/compare-$(date +%Y%m%d-%H%M%S)
mkdir -p "$OUT"
DIR=$(mktemp -d /tmp/enkash-compare.XXXXXX)
trap 'rm -rf "$DIR"' EXIT
chmod 755 "$DIR"

git() { command git -c safe.directory="$ROOT" -C "$ROOT" "$@"; }
for side in old new; do
	rev=$OLD
	[ "$side" = new ] && rev=$NEW
	git rev-parse --verify -q "$rev^{commit}" >/dev/null || {
		echo "test/bench/compare.sh: $rev is not a commit" >&2
		exit 1
	}
	mkdir "$DIR/$side"
	git archive "$rev" | tar -C "$DIR/$side" -xf -
	rm -rf "$DIR/$side/test"
	tar -C "$ROOT" --exclude=results --exclude=tmp -cf - test | tar -C "$DIR/$side" -xf -
	echo "$side: $(git log -1 --format='%h %s' "$rev")" | tee -a "$OUT/versions.txt"
done

for r in $(seq 1 "$ROUNDS"); do
	for side in old new; do
		echo "==> round $r of $ROUNDS: $side" >&2
		BENCH_ONLY=money BENCH_RUNS=1 BENCH_MONEY_LATENCY_MS="$LATENCY" BENCH_REFERENCES=0 \
			BENCH_CSV="$OUT/$side-$r.csv" \
			bash "$DIR/$side/test/bench/run.sh" >"$OUT/$side-$r.txt" 2>&1 || {
			echo "test/bench/compare.sh: the $side run of round $r failed; see $OUT/$side-$r.txt" >&2
			exit 1
		}
	done
done

# "CPU per call: <operation>","<sessions>",...,"<total>","us","<by process>"
awk -F'","' -v rounds="$ROUNDS" -v sessions="$BENCH_SESSIONS" -v latency="$LATENCY" '
function median(list,    n, a, i, j, t) {
	n = split(list, a, " ")
	for (i = 1; i <= n; i++)
		for (j = i + 1; j <= n; j++)
			if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
	return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
}
FNR == 1 { split(FILENAME, p, "/"); file = p[length(p)]; side = file; sub(/-.*/, "", side) }
$2 ~ /^8\+[0-9]+ms$/ && $9 != "" && $1 !~ /^"raw/ {
	op = substr($1, 2)
	rate[side, op] = rate[side, op] " " $9
}
$1 ~ /^"CPU per call: / {
	op = $1; sub(/^"CPU per call: /, "", op)
	total[side, op, $2] = total[side, op, $2] " " $12
	if (op ~ /^raw/) raw[file, $2] = $12
	else ratio[side, op, $2] = ratio[side, op, $2] " " $12 / raw[file, $2]
}
END {
	split(sessions, ss, " ")
	printf "%-5s %-26s %8s  %-30s %8s  %s\n", "", "operation", "sessions", "total CPU us per call, by round", "median", "ratio to raw (median)"
	for (k = 1; k <= length(ss); k++)
		for (o = 1; o <= 3; o++) {
			op = o == 1 ? "raw client (baseline)" : o == 2 ? "enkash_get_card_account" : "enkash_load_balance"
			for (s = 1; s <= 2; s++) {
				side = s == 1 ? "old" : "new"
				printf "%-5s %-26s %8s  %-30s %8.1f  %s\n", side, op, ss[k], total[side, op, ss[k]],
					median(total[side, op, ss[k]]),
					o == 1 ? "1" : sprintf("%.2f", median(ratio[side, op, ss[k]]))
			}
		}
	if (latency == 0)
		exit
	printf "\n%-5s %-26s %8s  %-30s %8s\n", "", "operation", "sessions", "calls/s ratio, by round", "median"
	for (o = 2; o <= 3; o++) {
		op = o == 2 ? "enkash_get_card_account" : "enkash_load_balance"
		for (s = 1; s <= 2; s++) {
			side = s == 1 ? "old" : "new"
			printf "%-5s %-26s %8s  %-30s %8.2f  %s\n", side, op, "8+" latency "ms", rate[side, op],
				median(rate[side, op]), o == 2 ? "of raw" : "x a read"
		}
	}
}' "$OUT"/old-*.csv "$OUT"/new-*.csv | tee "$OUT/summary.txt"
echo "(the runs' own output and CSVs: $OUT)"
