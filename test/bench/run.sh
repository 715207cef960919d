#!/usr/bin/env bash
# test/bench/run.sh (`make bench`): the enkash benchmark suite.
#
# Starts its own PostgreSQL and sandbox on loopback (test/lib.sh), then
# measures, in the same run:
#   - the baseline: test/bench/rawclient (libcurl + the extension's envelope
#     code, no PostgreSQL), 1 and 8 clients;
#   - enkash_get_card_account and enkash_load_balance from 1 and 8 pgbench
#     sessions, each BENCH_RUNS times, interleaved with the baseline;
#   - references beside them: the look-up's answer returned as jsonb by a
#     plain statement, a load's durable records written in SQL by the
#     session itself, and the raw client's exchange as a bare C function
#     called from SQL (test/bench/bare: a look-up's floor, and with the
#     records in SQL the straightforward load);
#   - token calls when 100 sessions connect at once after a restart;
#   - CPU per read call in the calling backend (perf stat task-clock, or
#     /proc/PID/stat), a perf profile, and instructions per call (callgrind);
#   - TCP connections opened for 10,000 calls from 8 sessions;
#   - the RSS of one backend making 100,000 calls.
# After every benchmark the sandbox's request counters are compared with the
# number of calls the benchmark believes it made.  Prints a table and writes
# it to a CSV.  Nothing asserts on time: exits non-zero only when something
# broke (a failed call, a count that does not match).
#
# Settings (environment):
#   BENCH_SECONDS=10        length of each throughput run
#   BENCH_RUNS=3            runs per throughput row (median, min, max)
#   BENCH_SESSIONS="1 8"    session counts for the throughput rows
#   BENCH_CONNECT_SESSIONS=100  sessions connecting at once after a restart
#   BENCH_CONN_CALLS=10000  calls in the connection-count run (8 sessions)
#   BENCH_CPU_CALLS=20000   calls measured for CPU per call
#   BENCH_PROFILE_CALLS=10000  calls under perf record (0 = no profile)
#   BENCH_MEMORY_CALLS=100000  calls by one backend for the RSS figure
#   BENCH_MEMORY_MAX_SECONDS=240  stop the memory run after this long
#   BENCH_CALLGRIND=auto    1/0: instructions per call under callgrind
#                           (restarts the server under valgrind; auto = if
#                           valgrind is installed)
#   BENCH_PGBENCH_OPTS=     extra pgbench options, e.g. "-M prepared"
#   BENCH_LATENCY_MS=0      latency the sandbox adds to every API and token
#                           call (the targets are for 0; try 20 for a WAN)
#   BENCH_MONEY_LATENCY_MS=20  the raw, read and load rows are run again at 8
#                           sessions against this much latency (0: not)
#   BENCH_REFERENCES=1      0: no reference rows (answer, records, bare calls)
#   BENCH_LEDGER=rows       hollow: the enkash worker writes no rows but keeps
#                           its hand-offs and flushed commits
#                           (test/bench/hollow-ledger.patch on the work copy):
#                           a load's floor with its two hand-offs; only with
#                           BENCH_ONLY=money, no reference rows, no key checked
#   BENCH_ONLY=             "money": only the throughput rows (raw, read, load);
#                           "outbox": only the outbox runs (no throughput,
#                           CPU, memory, token or callgrind runs)
#   BENCH_OUTBOX_RUNS=1     repetitions of the two 10,000-load outbox runs
#                           (median, min, max)
#   BENCH_OUTBOX_PERF=0     1: perf record of the sender during each
#                           outbox run (the last one without latency is shown)
#   BENCH_CSV=PATH          default test/bench/results/bench-DATE.csv
#   ENKASH_KEEP=1           keep the work directory (logs, pgbench logs)
set -uo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

BENCH_SECONDS=${BENCH_SECONDS:-10}
BENCH_RUNS=${BENCH_RUNS:-3}
BENCH_SESSIONS=${BENCH_SESSIONS:-"1 8"}
BENCH_CONNECT_SESSIONS=${BENCH_CONNECT_SESSIONS:-100}
BENCH_CONN_CALLS=${BENCH_CONN_CALLS:-10000}
BENCH_CONN_SESSIONS=${BENCH_CONN_SESSIONS:-8}
BENCH_CPU_CALLS=${BENCH_CPU_CALLS:-20000}
BENCH_PROFILE_CALLS=${BENCH_PROFILE_CALLS:-10000}
BENCH_MEMORY_CALLS=${BENCH_MEMORY_CALLS:-100000}
BENCH_MEMORY_MAX_SECONDS=${BENCH_MEMORY_MAX_SECONDS:-240}
BENCH_CALLGRIND=${BENCH_CALLGRIND:-auto}
BENCH_PGBENCH_OPTS=${BENCH_PGBENCH_OPTS:-}
BENCH_LATENCY_MS=${BENCH_LATENCY_MS:-0}
BENCH_OUTBOX_LOADS=${BENCH_OUTBOX_LOADS:-10000}
BENCH_OUTBOX_LATENCY_MS=${BENCH_OUTBOX_LATENCY_MS:-20}
BENCH_OUTBOX_CONCURRENCY=${BENCH_OUTBOX_CONCURRENCY:-64}
BENCH_OUTBOX_MEMORY_LOADS=${BENCH_OUTBOX_MEMORY_LOADS:-100000}
BENCH_OUTBOX_RUNS=${BENCH_OUTBOX_RUNS:-1}
BENCH_OUTBOX_PERF=${BENCH_OUTBOX_PERF:-0}
BENCH_ONLY=${BENCH_ONLY:-}
BENCH_MONEY_LATENCY_MS=${BENCH_MONEY_LATENCY_MS:-20}
BENCH_REFERENCES=${BENCH_REFERENCES:-1}
BENCH_LEDGER=${BENCH_LEDGER:-rows}
case "$BENCH_LEDGER" in
	rows) ;;
	hollow)
		[ "${BENCH_ONLY:-}" = money ] || die "BENCH_LEDGER=hollow needs BENCH_ONLY=money: the other runs read the rows"
		BENCH_REFERENCES=0		# their scripts are made of the warm-up's rows
		WORK_PATCH="$ENKASH_ROOT/test/bench/hollow-ledger.patch" ;;
	*) die "BENCH_LEDGER=$BENCH_LEDGER: only \"rows\" and \"hollow\" are known" ;;
esac
hollow() { [ "$BENCH_LEDGER" = hollow ]; }
# Rows of 8 sessions against BENCH_MONEY_LATENCY_MS of latency, beside the others.
LATENCY_ROWS=
[ "$BENCH_MONEY_LATENCY_MS" -gt 0 ] && [ "$BENCH_LATENCY_MS" = 0 ] && LATENCY_ROWS="8+${BENCH_MONEY_LATENCY_MS}ms"
case "$BENCH_ONLY" in
	"" | outbox | money) ;;
	*) die "BENCH_ONLY=$BENCH_ONLY: only \"outbox\" and \"money\" are known" ;;
esac
# everything: the whole suite; else only the runs BENCH_ONLY names
everything() { [ -z "$BENCH_ONLY" ]; }
throughput_runs() { everything || [ "$BENCH_ONLY" = money ]; }
outbox_runs() { everything || [ "$BENCH_ONLY" = outbox ]; }
everything || BENCH_CALLGRIND=0
PROFILE_TEXT=
BENCH_CSV=${BENCH_CSV:-$ENKASH_ROOT/test/bench/results/bench-$(date +%Y%m%d-%H%M%S).csv}

READ_PATH=/api/v0/partner/enKashCard/cardAccount/get
LOAD_PATH=/api/v0/partner/enKashCard/balance
TOKEN_PATH=/oauth/token
ACCOUNT=CASANDBOX1
CARD=EKCSANDBOX1

BENCH_STARTED=$(date +%s)
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
PROBLEMS=()

# A broken benchmark: said loudly now, repeated at the end, exit status 1.
problem() {
	PROBLEMS+=("$*")
	printf '\n!!!!! %s\n\n' "$*" >&2
}

# --- setup -------------------------------------------------------------------

ensure_packages
# Optional: without perf, CPU comes from /proc; without valgrind, no callgrind.
(ensure_packages linux-perf) || log "linux-perf could not be installed: CPU times from /proc, no perf profile"
case "$BENCH_CALLGRIND" in
	1 | yes | on) (ensure_packages valgrind) || log "valgrind could not be installed: no callgrind figures" ;;
esac
prepare_work_copy
log "work directory: $WORK${ENKASH_KEEP:+ (kept: ENKASH_KEEP is set)}"
PGDATA="$WORK/pgdata"
BENCH_DIR="$WORK/bench"
stop_all() {
	as_user pg_ctl -D "$PGDATA" -m fast -t 60 stop >/dev/null 2>&1 || true
	cleanup_work
}
trap stop_all EXIT
build_and_install
# With ENKASH_INSTALL=system, another run (test/run.sh) installing its own
# build meanwhile would change what a restarted server loads.
SO_INSTALLED="$PG_BINDIR/../lib/enkash.so"
SO_SUM=$(sha256sum <"$WORK/tree/enkash.so" | cut -d' ' -f1)
check_installed_so() {   # when
	local now
	now=$(sha256sum <"$SO_INSTALLED" 2>/dev/null | cut -d' ' -f1)
	if [ "$now" != "$SO_SUM" ]; then
		SO_WARNING="the installed enkash.so is not this run's build ($1): another run installed its own; figures from server restarts after that measure that build"
		printf '\n!!!!! WARNING: %s\n\n' "$SO_WARNING" >&2
	fi
}
SO_WARNING=
log "building the baseline client and the bare SQL call"
as_user make -s -C "$WORK/tree/test/bench" >/dev/null || die "rawclient build failed"
RAWCLIENT="$WORK/tree/test/bench/rawclient"
install_bare_call
as_user mkdir -p "$BENCH_DIR"
start_sandbox

log "starting a throwaway PostgreSQL"
# Autovacuum's CPU is logged, so that it can be told from the backends'.
init_throwaway_pg "enkash.database = 'postgres'" "max_connections = 150" \
	"log_autovacuum_min_duration = 0"

pg_start() {
	as_user pg_ctl -D "$PGDATA" -l "$WORK/postgres.log" -w -t 120 start >/dev/null \
		|| die "PostgreSQL did not start: $(tail -20 "$WORK/postgres.log")"
}
pg_stop() {
	as_user pg_ctl -D "$PGDATA" -m fast -w -t 120 stop >/dev/null
}
pg_start

PSQL=(psql -X -q -A -t -v ON_ERROR_STOP=1 -h "$WORK" -p "$PGPORT" -U postgres -d postgres)
PGBENCH=(pgbench -n -h "$WORK" -p "$PGPORT" -U postgres)
sql() { as_user "${PSQL[@]}" -c "$1"; }

sql "CREATE EXTENSION enkash" || die "CREATE EXTENSION enkash failed"
sql "$BARE_CALL_SQL" || die "could not create bench_bare_call"

# --- the sandbox's counters ---------------------------------------------------

sandbox_reset() {   # [latency_ms]
	local latency=${1:-$BENCH_LATENCY_MS}
	curl -sSf -X POST "$SANDBOX_URL/__sandbox/reset" >/dev/null || die "sandbox reset failed"
	if [ "$latency" -gt 0 ]; then
		curl -sSf -X POST -H 'Content-Type: application/json' -d "{\"latency_ms\": $latency}" \
			"$SANDBOX_URL/__sandbox/faults" >/dev/null || die "could not set the sandbox's latency"
	fi
}
# Prints the /__sandbox/requests answer.
sandbox_requests() {
	curl -sSf "$SANDBOX_URL/__sandbox/requests" || die "sandbox /__sandbox/requests failed"
}
# path_count JSON PATH
path_count() {
	jq -r --arg p "$2" '.paths[$p] // 0' <<<"$1"
}

# Compares what the sandbox answered with what a benchmark believes it made:
# check_counts LABEL API_PATH API_CALLS TOKEN_CALLS
# TOKEN_CALLS "-" means "do not check".  Sets LAST_REQUESTS.
check_counts() {
	local label=$1 path=$2 want=$3 want_token=$4 got total tokens other
	LAST_REQUESTS=$(sandbox_requests)
	got=$(path_count "$LAST_REQUESTS" "$path")
	tokens=$(path_count "$LAST_REQUESTS" "$TOKEN_PATH")
	total=$(jq -r '.total' <<<"$LAST_REQUESTS")
	other=$((total - got - tokens))
	if [ "$got" != "$want" ]; then
		problem "COUNT MISMATCH in $label: the benchmark made $want calls, the sandbox answered $got on $path"
	fi
	if [ "$want_token" != "-" ] && [ "$tokens" != "$want_token" ]; then
		problem "COUNT MISMATCH in $label: expected $want_token token calls, the sandbox answered $tokens"
	fi
	if [ "$other" -ne 0 ]; then
		problem "COUNT MISMATCH in $label: $other unexpected requests to other paths: $(jq -c .paths <<<"$LAST_REQUESTS")"
	fi
}

# The server log's "worker is behind" notes (audit rows not recorded).
audit_drops() {
	grep -c 'audit row for .* was not recorded' "$WORK/postgres.log" 2>/dev/null || true
}

# Waits until the worker has written every audit row, then prints the
# number of get_card_account rows above id $1.
audit_rows_after() {
	local before=$1 n prev=-1 i
	for i in $(seq 1 100); do
		n=$(sql "SELECT count(*) FROM enkash.audit_log WHERE id > $before AND endpoint = 'get_card_account'")
		[ "$n" = "$prev" ] && break
		prev=$n
		sleep 0.3
	done
	echo "$n"
}
audit_max_id() { sql "SELECT coalesce(max(id), 0) FROM enkash.audit_log"; }

# --- CPU accounting: who spends the CPU of a call -------------------------------
# Every process's utime+stime from /proc: the benchmark client (this shell's
# reaped children: pgbench or rawclient), the client backends (they have
# exited by then: the postmaster's cutime+cstime), the enkash background
# workers, the other PostgreSQL processes, and the sandbox.

CLK_TCK=$(getconf CLK_TCK)
proc_ticks() {   # pid -> "self children" ticks
	sed -E 's/^.*\) //' "/proc/$1/stat" 2>/dev/null | awk '{ print $12 + $13, $14 + $15 }'
}
postmaster_pid() { head -1 "$PGDATA/postmaster.pid"; }
# The sandbox process: SANDBOX_PID may be a subshell or runuser above it.
sandbox_pid() {
	local p=$SANDBOX_PID i
	for i in 1 2 3 4; do
		[ "$(cat "/proc/$p/comm" 2>/dev/null)" = enkash-sandbox ] && break
		p=$(pgrep -P "$p" | head -1)
		[ -n "$p" ] || break
	done
	echo "${p:-$SANDBOX_PID}"
}
# Sums the CPU ticks of the enkash workers ("enkash ..." process titles).
worker_ticks() {
	local pm p sum=0 t
	pm=$(postmaster_pid)
	for p in $(pgrep -P "$pm"); do
		case "$(tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null)" in
			*enkash*) t=$(proc_ticks "$p" | cut -d' ' -f1); sum=$((sum + ${t:-0})) ;;
		esac
	done
	echo "$sum"
}
# Waits until the client backends have exited and the workers are idle.
settle() {
	local pm i w prev=-1
	pm=$(postmaster_pid)
	for i in $(seq 1 100); do
		pgrep -P "$pm" -f 'postgres: [^ ]+ [^ ]+ \[local\]' >/dev/null || break
		sleep 0.05
	done
	for i in $(seq 1 100); do
		w=$(worker_ticks)
		[ "$w" = "$prev" ] && break
		prev=$w
		sleep 0.3
	done
}
# The CPU this shell's reaped children have used so far, in µs, in CHILD_US;
# builtins only, so that measuring does not add processes of its own.
child_cpu() {
	local l1 l2 u sy
	times >"$BENCH_DIR/times.txt"
	{ read -r l1; read -r l2; } <"$BENCH_DIR/times.txt"
	read -r u sy <<<"$l2"
	_us "$u"
	CHILD_US=$_US
	_us "$sy"
	CHILD_US=$((CHILD_US + _US))
}
_us() {   # 1m2.345s -> µs in _US
	local m=${1%%m*} sec=${1#*m} whole frac
	sec=${sec%s}
	whole=${sec%.*}
	frac=${sec#*.}000000
	_US=$(( (10#$m * 60 + 10#$whole) * 1000000 + 10#${frac:0:6} ))
}
# Autovacuum's CPU so far (s), from its log lines.
autovacuum_cpu() {
	awk '/automatic (vacuum|analyze) of table/ { av = 1 }
		av && /system usage: CPU: user: / {
			match($0, /user: [0-9.]+ s, system: [0-9.]+ s/)
			split(substr($0, RSTART, RLENGTH), f, " ")
			sum += f[2] + f[5]; av = 0
		}
		END { printf "%.3f", sum + 0 }' "$WORK/postgres.log" 2>/dev/null || echo 0
}
# Sets the variable named $1 to "backends workers other sandbox autovacuum" (s).
cpu_snapshot() {
	local pm p backends workers=0 other=0 t title sandbox
	pm=$(postmaster_pid)
	backends=$(proc_ticks "$pm" | cut -d' ' -f2)
	for p in $(pgrep -P "$pm"); do
		t=$(proc_ticks "$p" | cut -d' ' -f1)
		title=$(tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null)
		case "$title" in
			*enkash*) workers=$((workers + ${t:-0})) ;;
			*) other=$((other + ${t:-0})) ;;
		esac
	done
	sandbox=$(proc_ticks "$(sandbox_pid)" | cut -d' ' -f1)
	printf -v "$1" '%s %s %s %s %s' \
		"$(awk -v t="$backends" -v hz="$CLK_TCK" 'BEGIN { print t / hz }')" \
		"$(awk -v t="$workers" -v hz="$CLK_TCK" 'BEGIN { print t / hz }')" \
		"$(awk -v t="$other" -v hz="$CLK_TCK" 'BEGIN { print t / hz }')" \
		"$(awk -v t="${sandbox:-0}" -v hz="$CLK_TCK" 'BEGIN { print t / hz }')" \
		"$(autovacuum_cpu)"
}
# Records µs per call by process for op:sessions; sets CPU_LINE.  The
# postmaster's reaped children include autovacuum workers: their logged CPU
# is moved from the backends to its own column.
declare -A CPU_CLIENT CPU_BACKEND CPU_WORKER CPU_AUTOVAC CPU_OTHER CPU_SANDBOX
cpu_record() {   # key calls client_us "before" "after"
	local k=$1 n=$2 line c be w o sb av
	line=$(awk -v n="$n" -v cl="$3" -v a="$4" -v b="$5" 'BEGIN {
		split(a, x, " "); split(b, y, " ")
		for (i = 1; i <= 5; i++) d[i] = (n > 0 ? (y[i] - x[i]) * 1e6 / n : 0)
		printf "%.1f %.1f %.1f %.1f %.1f %.1f", (n > 0 ? cl / n : 0), d[1] - d[5], d[2], d[3], d[4], d[5]
	}')
	read -r c be w o sb av <<<"$line"
	CPU_CLIENT[$k]="${CPU_CLIENT[$k]:-} $c"
	CPU_BACKEND[$k]="${CPU_BACKEND[$k]:-} $be"
	CPU_WORKER[$k]="${CPU_WORKER[$k]:-} $w"
	CPU_AUTOVAC[$k]="${CPU_AUTOVAC[$k]:-} $av"
	CPU_OTHER[$k]="${CPU_OTHER[$k]:-} $o"
	CPU_SANDBOX[$k]="${CPU_SANDBOX[$k]:-} $sb"
	CPU_LINE="CPU us/call: client $c, backend $be, enkash workers $w, autovacuum $av, other postgres $o, sandbox $sb"
}

# --- statistics ----------------------------------------------------------------

# median/min/max of numbers on the command line
stat_of() {   # median|min|max numbers...
	local what=$1
	shift
	printf '%s\n' "$@" | sort -g | awk -v w="$what" '
		{ v[NR] = $1 }
		END {
			if (NR == 0) { print "nan"; exit }
			if (w == "min") print v[1];
			else if (w == "max") print v[NR];
			else if (NR % 2) print v[(NR + 1) / 2];
			else print (v[NR / 2] + v[NR / 2 + 1]) / 2;
		}'
}
# nearest-rank percentile of a file of sorted numbers
percentile_of() {   # file p
	awk -v p="$2" '{ v[NR] = $1 } END {
		if (NR == 0) { print "nan"; exit }
		r = int(p / 100 * NR); if (r < p / 100 * NR) r++; if (r < 1) r = 1;
		print v[r] }' "$1"
}
fmt() { awk -v x="$1" -v f="$2" 'BEGIN { if (x == "" || x == "nan") print "-"; else printf f, x }'; }

# Results: per "op:sessions", space-separated values, one per run.
declare -A TPS P50 P99 NOTE AUDIT_CALLS AUDIT_MISSING ZERO_NOTE
add_result() {   # op sessions calls_per_s p50_us p99_us
	local k="$1:$2"
	TPS[$k]="${TPS[$k]:-} $3"
	P50[$k]="${P50[$k]:-} $4"
	P99[$k]="${P99[$k]:-} $5"
}

# --- the runs --------------------------------------------------------------------

# A row's sessions: N, or N+Lms for N sessions against L ms of sandbox latency.
clients_of() { echo "${1%%+*}"; }
latency_of() { case "$1" in *+*ms) local l=${1#*+}; echo "${l%ms}" ;; *) echo "$BENCH_LATENCY_MS" ;; esac; }

# The baseline: rawclient with CLIENTS clients for BENCH_SECONDS.
run_raw() {   # sessions run
	local s=$1 r=$2 out line calls warm c0 c1
	sandbox_reset "$(latency_of "$s")"
	settle
	cpu_snapshot c0
	child_cpu
	local cl0=$CHILD_US
	out=$(as_user "$RAWCLIENT" --base-url "$SANDBOX_URL/api/v0/partner/enKashCard" \
		--token-url "$SANDBOX_URL$TOKEN_PATH" --clients "$(clients_of "$s")" --seconds "$BENCH_SECONDS" 2>&1)
	local rc=$?
	child_cpu
	local cl=$((CHILD_US - cl0))
	cpu_snapshot c1
	line=$(grep '^rawclient clients=' <<<"$out")
	[ "$rc" -eq 0 ] && [ -n "$line" ] || problem "rawclient ($s clients, run $r) failed: $out"
	[ -n "$line" ] || return
	kv() { sed -nE "s/.* $1=([^ ]+).*/\1/p" <<<"$line"; }
	calls=$(kv calls)
	warm=$(kv warmup)
	check_counts "rawclient, $s clients, run $r" "$READ_PATH" $((calls + warm)) 1
	add_result raw "$s" "$(kv calls_per_s)" "$(kv p50_us)" "$(kv p99_us)"
	RAW_CPU[$s]="${RAW_CPU[$s]:-} $(kv cpu_us_per_call)"
	cpu_record "raw:$s" $((calls + warm)) "$cl" "$c0" "$c1"
	printf '    raw    %2s sessions run %s: %8.1f calls/s  p50 %6.0f us  p99 %6.0f us  (%s calls, %s connections)\n        %s\n' \
		"$s" "$r" "$(kv calls_per_s)" "$(kv p50_us)" "$(kv p99_us)" "$calls" "$(kv connections)" "$CPU_LINE" >&2
}
declare -A RAW_CPU

# pgbench with a script; sets PG_PROCESSED, PG_TPS, PG_P50, PG_P99.
# run_pgbench LABEL DIR SESSIONS SCRIPT pgbench-args...
run_pgbench() {
	local label=$1 dir=$2 s=$3 script=$4 rc failed
	shift 4
	as_user mkdir -p "$dir"
	child_cpu
	local cl0=$CHILD_US
	(cd "$dir" && as_user "${PGBENCH[@]}" -f "$script" -c "$s" -j "$s" -l --log-prefix="$dir/log" \
		$BENCH_PGBENCH_OPTS "$@" postgres) >"$dir/pgbench.out" 2>&1
	rc=$?
	child_cpu
	PG_CLIENT_US=$((CHILD_US - cl0))
	PG_PROCESSED=$(sed -nE 's/^number of transactions actually processed: ([0-9]+).*/\1/p' "$dir/pgbench.out")
	PG_PROCESSED=${PG_PROCESSED:-0}
	failed=$(sed -nE 's/^number of failed transactions: ([0-9]+).*/\1/p' "$dir/pgbench.out")
	PG_TPS=$(sed -nE 's/^tps = ([0-9.]+) \(without initial connection time\).*/\1/p' "$dir/pgbench.out")
	if [ "$rc" -ne 0 ] || [ "${failed:-0}" != 0 ] || grep -q 'aborted' "$dir/pgbench.out"; then
		problem "pgbench failed in $label (exit $rc): $(grep -E 'ERROR|aborted|error' "$dir/pgbench.out" | head -5)"
	fi
	cat "$dir"/log.* 2>/dev/null | awk '$3 ~ /^[0-9]+$/ { print $3 }' | sort -n >"$dir/latency.txt"
	PG_P50=$(percentile_of "$dir/latency.txt" 50)
	PG_P99=$(percentile_of "$dir/latency.txt" 99)
	local logged zeros
	logged=$(wc -l <"$dir/latency.txt")
	zeros=$(awk '$1 == 0' "$dir/latency.txt" | wc -l)
	PG_ZERO_NOTE=
	if [ "$logged" -gt 0 ] && [ $((zeros * 100)) -gt "$logged" ]; then
		PG_ZERO_NOTE="$((zeros * 100 / logged))% of pgbench's logged latencies are 0 (its clock is read lazily): p50/p99 unreliable"
	fi
	[ "$logged" -eq "$PG_PROCESSED" ] || problem "$label: pgbench reports $PG_PROCESSED transactions but logged $logged"
}

# EnKash's side: one credit per call; ours: one succeeded key per call
# under key-pattern, if given.
check_credits() {   # label [key-pattern]
	local credits keys
	credits=$(curl -sSf "$SANDBOX_URL/__sandbox/ledger" | jq -r '.total_count')
	[ "$credits" = "$PG_PROCESSED" ] || problem "COUNT MISMATCH in $1: $PG_PROCESSED calls, $credits credits in the sandbox"
	[ $# -gt 1 ] || return 0
	keys=$(sql "SELECT count(*) FROM enkash.idempotency_keys WHERE endpoint = 'load_balance' AND key LIKE '$2' AND state = 'succeeded'")
	[ "$keys" = "$PG_PROCESSED" ] || problem "COUNT MISMATCH in $1: $PG_PROCESSED calls, $keys succeeded idempotency keys"
}

RUN_TAG=$(date +%s)
run_sql_bench() {   # read|load sessions run
	local op=$1 s=$2 r=$3 dir="$BENCH_DIR/$1-$2-$3" audit0 drops0 rows tag c0 c1 n
	n=$(clients_of "$s")
	sandbox_reset "$(latency_of "$s")"
	audit0=$(audit_max_id)
	drops0=$(audit_drops)
	tag="$RUN_TAG$r${s//[^0-9]/0}"
	settle
	cpu_snapshot c0
	if [ "$op" = read ]; then
		run_pgbench "$op, $s sessions, run $r" "$dir" "$n" "$WORK/tree/test/bench/read.sql" -T "$BENCH_SECONDS"
	elif [ "$op" = select1 ]; then
		run_pgbench "$op, $s sessions, run $r" "$dir" "$n" "$WORK/tree/test/bench/select1.sql" -T "$BENCH_SECONDS"
	elif [ "$op" = answer ] || [ "$op" = records ] || [ "${op#bare_}" != "$op" ]; then
		run_pgbench "$op, $s sessions, run $r" "$dir" "$n" "$WORK/$op.sql" -T "$BENCH_SECONDS" -D "run=$tag"
	else
		run_pgbench "$op, $s sessions, run $r" "$dir" "$n" "$WORK/tree/test/bench/load.sql" -T "$BENCH_SECONDS" -D "run=$tag"
	fi
	settle
	cpu_snapshot c1
	cpu_record "$op:$s" "$PG_PROCESSED" "$PG_CLIENT_US" "$c0" "$c1"
	if [ "$op" = select1 ] || [ "$op" = answer ] || [ "$op" = records ]; then
		check_counts "$op, $s sessions, run $r" "$READ_PATH" 0 0
	elif [ "$op" = bare_read ]; then
		# each session's backend gets its own token
		check_counts "bare SQL look-up, $s sessions, run $r" "$READ_PATH" "$PG_PROCESSED" "$n"
	elif [ "$op" = bare_load ]; then
		check_counts "bare SQL load, $s sessions, run $r" "$LOAD_PATH" "$PG_PROCESSED" "$n"
		check_credits "bare SQL load, $s sessions, run $r"
	elif [ "$op" = bare_records ]; then
		check_counts "bare SQL load with records, $s sessions, run $r" "$LOAD_PATH" "$PG_PROCESSED" "$n"
		check_credits "bare SQL load with records, $s sessions, run $r" "G-$tag-%"
	elif [ "$op" = read ]; then
		check_counts "enkash_get_card_account, $s sessions, run $r" "$READ_PATH" "$PG_PROCESSED" 0
		rows=$(audit_rows_after "$audit0")
		AUDIT_CALLS["read:$s"]=$(( ${AUDIT_CALLS["read:$s"]:-0} + PG_PROCESSED ))
		if [ "$rows" != "$PG_PROCESSED" ]; then
			AUDIT_MISSING["read:$s"]=$(( ${AUDIT_MISSING["read:$s"]:-0} + PG_PROCESSED - rows ))
			log "note: $PG_PROCESSED reads, $rows audit rows (the worker dropped $(( $(audit_drops) - drops0 )))"
		fi
	else
		check_counts "enkash_load_balance, $s sessions, run $r" "$LOAD_PATH" "$PG_PROCESSED" 0
		if hollow; then
			check_credits "loads (no rows), $s sessions, run $r"
		else
			check_credits "loads, $s sessions, run $r" "B-$tag-%"
		fi
	fi
	add_result "$op" "$s" "$PG_TPS" "$PG_P50" "$PG_P99"
	[ -n "$PG_ZERO_NOTE" ] && ZERO_NOTE["$op:$s"]="$PG_ZERO_NOTE"
	printf '    %-6s %2s sessions run %s: %8.1f calls/s  p50 %6.0f us  p99 %6.0f us  (%s calls)\n        %s\n' \
		"$op" "$s" "$r" "$PG_TPS" "$PG_P50" "$PG_P99" "$PG_PROCESSED" "$CPU_LINE" >&2
}

# Throughput (BENCH_ONLY=outbox skips to the outbox runs).
if throughput_runs; then

log "warm-up: one look-up and one load"
sandbox_reset
sql "SELECT enkash_get_card_account('$ACCOUNT') ->> 'cardAccountId'" >/dev/null || die "a look-up failed"
sql "SELECT enkash_load_balance('$ACCOUNT', '$CARD', 1, 'B-warmup-$RUN_TAG')" >/dev/null || die "a load failed"
LAST_REQUESTS=$(sandbox_requests)
[ "$(path_count "$LAST_REQUESTS" "$READ_PATH")" = 1 ] && [ "$(path_count "$LAST_REQUESTS" "$LOAD_PATH")" = 1 ] \
	|| problem "COUNT MISMATCH in the warm-up: one look-up and one load made, the sandbox saw $(jq -c .paths <<<"$LAST_REQUESTS")"

# Two references, in the same run, for what a call's SQL side could cost
# with the HTTP exchange left to the raw client's row (no enkash code runs):
#   answer: one statement returning the look-up's answer as jsonb, nothing
#     written: no look-up made from SQL costs less, so raw + answer is the
#     look-up's floor;
#   records: a load's durable records written by the session itself, the
#     straightforward way: the key and its "sent" row committed, then the
#     outcome and the answer's row committed and the answer returned (two
#     statements, two commits that wait for the WAL, as the money-safety
#     rules ask), under keys F-<run>-<client>-<n>, with the warm-up's rows
#     as the worker wrote them.
# And two made with the bare SQL call (bench_bare_call, test/bench/bare),
# which makes the raw client's exchange from a C function and returns the
# answer's payload as jsonb, and does nothing else:
#   bare_read: the look-up's request, one call a statement: the floor of a
#     look-up made from SQL, measured rather than added up;
#   bare_load: the load's exchange alone, the warm-up's body under the
#     reference H-<run>-<client>-<n>: a load's floor without its records;
#   bare_records: the records statements above with the load's request sent
#     by the bare call in the second (reference and key G-<run>-<client>-<n>):
#     a load made from SQL the straightforward way.
write_reference_scripts() {
	local answer key answered load_request
	answer=$(sql "SELECT quote_literal(enkash_get_card_account('$ACCOUNT')::text)") || die "a look-up failed"
	key=$(sql "SELECT format('%L, %L::jsonb, %L', fingerprint, request, role) FROM enkash.idempotency_keys WHERE key = 'B-warmup-$RUN_TAG' AND state = 'succeeded'")
	answered=$(sql "SELECT format('%L, %L, %L, %L::jsonb, %L::jsonb', a.enkash_code, a.message, a.latency_ms, a.response, k.outcome) FROM enkash.audit_log a JOIN enkash.idempotency_keys k ON k.id = a.key_id WHERE k.key = 'B-warmup-$RUN_TAG' AND a.outcome = 'ok'")
	load_request=$(sql "SELECT quote_literal(request) FROM enkash.idempotency_keys WHERE key = 'B-warmup-$RUN_TAG'")
	[ -n "$key" ] && [ -n "$answered" ] || die "the warm-up load's key and audit rows are not all there"
	cat >"$WORK/answer.sql" <<-SCRIPT
	-- pgbench script (written by run.sh): a look-up's answer as jsonb.
	SELECT $answer::jsonb;
	SCRIPT
	cat >"$WORK/bare_read.sql" <<-SCRIPT
	-- pgbench script (written by run.sh): the look-up's exchange as a bare SQL call.
	SELECT $(bare_call /cardAccount/get "$BARE_LOOKUP_BODY");
	SCRIPT
	local bare_load
	bare_load=$(bare_call /balance "jsonb_set($load_request::jsonb, '{uniqueReferenceNumber}', to_jsonb(@REF@))::text")
	local href="'H-' || :run::text || '-' || :client_id::text || '-' || :r::text"
	cat >"$WORK/bare_load.sql" <<-SCRIPT
	-- pgbench script (written by run.sh): a load's exchange alone as a bare SQL call.
	\set r random(1, 9000000000000000000)
	SELECT ${bare_load//@REF@/$href};
	SCRIPT
	records_script "$WORK/records.sql" F "VALUES ($answered)"
	records_script "$WORK/bare_records.sql" G "SELECT '0', 'Success', NULL, x, x FROM $bare_load AS x"
}
# A load's records by the session, under keys PREFIX-<run>-<client>-<n>; the
# answer (code, message, latency_ms, response, payload) comes from SOURCE,
# where @REF@ stands for the key.
records_script() {   # file prefix source
	local ref="'$2-' || :run::text || '-' || :client_id::text || '-' || :r::text"
	cat >"$1" <<-SCRIPT
	-- pgbench script (written by run.sh): a load's records, by the session.
	\set r random(1, 9000000000000000000)
	WITH c(fingerprint, request, role) AS (VALUES ($key)), k AS (INSERT INTO enkash.idempotency_keys (endpoint, key, fingerprint, request, role, owner_pid, state, owner_deadline) SELECT 'load_balance', $ref, fingerprint, jsonb_set(request, '{uniqueReferenceNumber}', to_jsonb($ref)), role, pg_backend_pid(), 'in_flight', now() + interval '1 minute' FROM c RETURNING id, key, request, role) INSERT INTO enkash.audit_log (role, endpoint, idempotency_key, request, outcome, key_id) SELECT role, 'load_balance', key, request, 'sent', id FROM k;
	WITH c(code, message, latency_ms, response, payload) AS (${3//@REF@/$ref}), f AS (UPDATE enkash.idempotency_keys SET state = 'succeeded', outcome = c.payload, http_status = 200, owner_pid = NULL, owner_deadline = NULL, updated_at = now(), finished_at = now() FROM c WHERE endpoint = 'load_balance' AND key = $ref RETURNING id, key, role, outcome), a AS (INSERT INTO enkash.audit_log (role, endpoint, idempotency_key, key_id, outcome, http_status, enkash_code, message, latency_ms, response) SELECT f.role, 'load_balance', f.key, f.id, 'ok', 200, c.code, c.message, c.latency_ms::float8, c.response FROM f, c) SELECT outcome FROM f;
	SCRIPT
}
[ "$BENCH_REFERENCES" = 1 ] && write_reference_scripts

log "throughput: $BENCH_RUNS runs of ${BENCH_SECONDS}s each; sessions: $BENCH_SESSIONS"
for r in $(seq 1 "$BENCH_RUNS"); do
	for s in $BENCH_SESSIONS; do
		run_raw "$s" "$r"
		[ "$r" = 1 ] && run_sql_bench select1 "$s" "$r"
		run_sql_bench read "$s" "$r"
		run_sql_bench load "$s" "$r"
		[ "$BENCH_REFERENCES" = 1 ] || continue
		for op in answer records bare_read bare_load bare_records; do
			run_sql_bench "$op" "$s" "$r"
		done
	done
	# the money rows again with a network's latency (BENCH_MONEY_LATENCY_MS)
	for s in $LATENCY_ROWS; do
		run_raw "$s" "$r"
		run_sql_bench read "$s" "$r"
		run_sql_bench load "$s" "$r"
	done
done

fi   # throughput_runs

# Everything but the throughput and the outbox runs.
if everything; then

# --- connections: 10,000 calls from 8 sessions --------------------------------------

log "connections: $BENCH_CONN_CALLS look-ups from $BENCH_CONN_SESSIONS new sessions"
sandbox_reset
per_session=$(( (BENCH_CONN_CALLS + BENCH_CONN_SESSIONS - 1) / BENCH_CONN_SESSIONS ))
run_pgbench "connections" "$BENCH_DIR/connections" "$BENCH_CONN_SESSIONS" \
	"$WORK/tree/test/bench/read.sql" -t "$per_session"
check_counts "connections run" "$READ_PATH" "$PG_PROCESSED" 0
# The connection that asks /__sandbox/requests counts itself, and so does
# the one that sets the latency after a reset.
CONN_API=$(( $(jq -r '.connections' <<<"$LAST_REQUESTS") - 1 - (BENCH_LATENCY_MS > 0 ? 1 : 0) ))
CONN_CALLS=$PG_PROCESSED
printf '    %s calls from %s sessions opened %s TCP connections\n' "$CONN_CALLS" "$BENCH_CONN_SESSIONS" "$CONN_API" >&2

# --- CPU per read call in the calling backend ----------------------------------------

PERF_OK=0
if command -v perf >/dev/null && perf stat -e task-clock -x, -o /dev/null true >/dev/null 2>&1; then
	PERF_OK=1
fi
# Seconds of CPU (utime + stime) in a /proc/PID/stat file.
proc_cpu() {
	sed -E 's/^.*\) //' "$1" | awk -v hz="$CLK_TCK" '{ printf "%.6f", ($12 + $13) / hz }'
}

# One psql session (as root, so that perf may attach) that warms up, then
# makes N calls between procwatch start and stop.
measure_session() {   # dir calls action-before action-after
	local dir=$1 n=$2
	mkdir -p "$dir"
	chmod 777 "$dir"
	cat >"$dir/session.sql" <<EOF2
SELECT pg_backend_pid() AS pid \gset
\setenv BENCH_PID :pid
SELECT count(enkash_get_card_account('$ACCOUNT')) FROM generate_series(1, 500);
\! sh $WORK/tree/test/bench/procwatch.sh $3 $dir
SELECT count(enkash_get_card_account('$ACCOUNT')) FROM generate_series(1, $n);
\! sh $WORK/tree/test/bench/procwatch.sh $4 $dir
EOF2
	env BENCH_PERF="$PERF_OK" "${PSQL[@]}" -f "$dir/session.sql" >"$dir/psql.out" 2>&1 \
		|| problem "the CPU measuring session failed: $(tail -5 "$dir/psql.out")"
}

log "CPU per look-up in the calling backend ($BENCH_CPU_CALLS calls in one statement)"
sandbox_reset
measure_session "$BENCH_DIR/cpu" "$BENCH_CPU_CALLS" start stop
check_counts "CPU run" "$READ_PATH" $((BENCH_CPU_CALLS + 500)) 0
CPU_WALL=$(awk '{ print $1 }' "$BENCH_DIR/cpu/time.stop" "$BENCH_DIR/cpu/time.start" | paste -sd' ' | awk '{ print $1 - $2 }')
CPU_PROC_US=$(awk -v a="$(proc_cpu "$BENCH_DIR/cpu/stat.start")" -v b="$(proc_cpu "$BENCH_DIR/cpu/stat.stop")" \
	-v n="$BENCH_CPU_CALLS" 'BEGIN { printf "%.1f", (b - a) * 1e6 / n }')
CPU_PERF_US=
if [ "$PERF_OK" = 1 ] && [ -s "$BENCH_DIR/cpu/perf-stat.txt" ]; then
	CPU_PERF_US=$(awk -F, -v n="$BENCH_CPU_CALLS" '$3 ~ /task-clock/ { printf "%.1f", $1 * 1000 / n }' "$BENCH_DIR/cpu/perf-stat.txt")
fi
CPU_METHOD="perf stat task-clock"
CPU_US=$CPU_PERF_US
if [ -z "$CPU_US" ]; then
	CPU_METHOD="/proc/PID/stat utime+stime"
	CPU_US=$CPU_PROC_US
fi
CPU_RATE=$(awk -v w="$CPU_WALL" -v n="$BENCH_CPU_CALLS" 'BEGIN { printf "%.1f", n / w }')
printf '    %s us of backend CPU per call (%s; /proc says %s us); %s calls/s in one statement\n' \
	"$CPU_US" "$CPU_METHOD" "$CPU_PROC_US" "$CPU_RATE" >&2

PROFILE_TEXT=
if [ "$PERF_OK" = 1 ] && [ "$BENCH_PROFILE_CALLS" -gt 0 ]; then
	log "profile: perf record of $BENCH_PROFILE_CALLS look-ups"
	sandbox_reset
	measure_session "$BENCH_DIR/profile" "$BENCH_PROFILE_CALLS" record unrecord
	check_counts "profile run" "$READ_PATH" $((BENCH_PROFILE_CALLS + 500)) 0
	if [ -s "$BENCH_DIR/profile/perf.data" ]; then
		# Symbols from this run's build even if another run replaced the
		# installed file meanwhile; the cache lives in the work directory.
		mkdir -p "$BENCH_DIR/profile/home"
		HOME="$BENCH_DIR/profile/home" perf buildid-cache -a "$WORK/tree/enkash.so" >/dev/null 2>&1
		prof() { HOME="$BENCH_DIR/profile/home" perf report -i "$BENCH_DIR/profile/perf.data" --stdio "$@" 2>/dev/null | grep -E '^ +[0-9]'; }
		prof --no-children -g none --sort dso -F overhead,dso >"$BENCH_DIR/profile/dso.txt"
		prof --no-children -g none -F overhead,dso,sym --percent-limit 0.8 | head -25 >"$BENCH_DIR/profile/self.txt"
		prof --children -g none --sort sym -F overhead_children,overhead,sym --percent-limit 1 >"$BENCH_DIR/profile/children.txt"
		PROFILE_TEXT=1
	fi
fi

# --- memory: one backend, many calls ---------------------------------------------------

log "memory: one backend making up to $BENCH_MEMORY_CALLS look-ups (at most ${BENCH_MEMORY_MAX_SECONDS}s)"
sandbox_reset
chunk=$(( BENCH_MEMORY_CALLS / 10 ))
[ "$chunk" -lt 1 ] && chunk=1
mem_out=$(sql "
DO \$\$
DECLARE
	done_calls bigint := 0;
	started timestamptz := clock_timestamp();
	status text;
BEGIN
	PERFORM count(enkash_get_card_account('$ACCOUNT')) FROM generate_series(1, 100);
	status := pg_read_file('/proc/self/status');
	RAISE NOTICE 'mem calls=0 rss_kb=% anon_kb=%',
		substring(status from 'VmRSS:\s+(\d+)'), substring(status from 'RssAnon:\s+(\d+)');
	WHILE done_calls < $BENCH_MEMORY_CALLS
		AND clock_timestamp() - started < interval '$BENCH_MEMORY_MAX_SECONDS seconds'
	LOOP
		PERFORM count(enkash_get_card_account('$ACCOUNT'))
		FROM generate_series(1, least($chunk, $BENCH_MEMORY_CALLS - done_calls));
		done_calls := done_calls + least($chunk, $BENCH_MEMORY_CALLS - done_calls);
		status := pg_read_file('/proc/self/status');
		RAISE NOTICE 'mem calls=% rss_kb=% anon_kb=% seconds=%', done_calls,
			substring(status from 'VmRSS:\s+(\d+)'), substring(status from 'RssAnon:\s+(\d+)'),
			round(extract(epoch from clock_timestamp() - started)::numeric, 1);
	END LOOP;
END
\$\$" 2>&1)
mem_lines=$(grep -oE 'mem calls=.*' <<<"$mem_out")
[ -n "$mem_lines" ] || problem "the memory run failed: $mem_out"
MEM_CALLS=$(tail -1 <<<"$mem_lines" | sed -nE 's/.*calls=([0-9]+).*/\1/p')
MEM_RSS0=$(head -1 <<<"$mem_lines" | sed -nE 's/.*rss_kb=([0-9]+).*/\1/p')
MEM_ANON0=$(head -1 <<<"$mem_lines" | sed -nE 's/.*anon_kb=([0-9]+).*/\1/p')
MEM_RSS1=$(tail -1 <<<"$mem_lines" | sed -nE 's/.*rss_kb=([0-9]+).*/\1/p')
MEM_ANON1=$(tail -1 <<<"$mem_lines" | sed -nE 's/.*anon_kb=([0-9]+).*/\1/p')
MEM_SECONDS=$(tail -1 <<<"$mem_lines" | sed -nE 's/.*seconds=([0-9.]+).*/\1/p')
# Growth after the first fifth of the calls (libraries and caches warm by then).
mem_mid=$(sed -n 3p <<<"$mem_lines")
MEM_MID_CALLS=$(sed -nE 's/.*calls=([0-9]+).*/\1/p' <<<"$mem_mid")
MEM_MID_RSS=$(sed -nE 's/.*rss_kb=([0-9]+).*/\1/p' <<<"$mem_mid")
check_counts "memory run" "$READ_PATH" $(( ${MEM_CALLS:-0} + 100 )) 0
printf '%s\n' "$mem_lines" | sed 's/^mem /    /' >&2

# --- 100 sessions connecting at once after a restart -------------------------------------

log "token: $BENCH_CONNECT_SESSIONS sessions connecting at once, each making one call, after a restart"
check_installed_so "before the restart for the token test"
pg_stop || die "PostgreSQL did not stop"
pg_start
sandbox_reset
run_pgbench "$BENCH_CONNECT_SESSIONS sessions at once" "$BENCH_DIR/connect" "$BENCH_CONNECT_SESSIONS" \
	"$WORK/tree/test/bench/read.sql" -C -t 1
check_counts "$BENCH_CONNECT_SESSIONS sessions at once" "$READ_PATH" "$PG_PROCESSED" -
[ "$PG_PROCESSED" = "$BENCH_CONNECT_SESSIONS" ] || problem "only $PG_PROCESSED of $BENCH_CONNECT_SESSIONS sessions made their call"
TOKEN_CALLS=$(path_count "$LAST_REQUESTS" "$TOKEN_PATH")
TOKEN_CALLS_PG=$(sql "SELECT enkash_token_calls()")
CONNECT_P50=$PG_P50
CONNECT_P99=$PG_P99
printf '    %s sessions, %s calls: %s token calls at the sandbox (enkash_token_calls() = %s)\n' \
	"$BENCH_CONNECT_SESSIONS" "$PG_PROCESSED" "$TOKEN_CALLS" "$TOKEN_CALLS_PG" >&2

fi   # everything

# --- the outbox: queued loads sent by the enkash sender ---------------------------------------

# One run: queue N loads in one transaction, time from its COMMIT until every
# row is final, sampling the sender's memory meanwhile.  Sets OB_SECONDS,
# OB_RSS_PEAK, OB_ANON_FIRST (RssAnon after the first tenth), OB_ANON_LAST.
outbox_run() {   # tag loads latency_ms
	local tag=$1 n=$2 latency=$3 pid t0 t1 left anon rss status
	curl -sSf -X POST "$SANDBOX_URL/__sandbox/reset" >/dev/null || die "sandbox reset failed"
	curl -sSf -X POST -H 'Content-Type: application/json' -d "{\"latency_ms\": $latency}" \
		"$SANDBOX_URL/__sandbox/faults" >/dev/null || die "could not set the sandbox's latency"
	pid=$(sql "SELECT pid FROM pg_stat_activity WHERE backend_type = 'enkash sender'")
	[ -n "$pid" ] || { problem "no enkash sender running"; return; }
	local cpu0 cpu1 stats0 stats1
	stats0=$(sql "SELECT n_tup_upd || ' ' || n_tup_hot_upd FROM pg_stat_user_tables WHERE relid = 'enkash.idempotency_keys'::regclass")
	sql "SELECT count(enkash_load_balance_async('$ACCOUNT', '$CARD', 1, 'OB-$RUN_TAG-$tag-' || g))
	     FROM generate_series(1, $n) g" >/dev/null
	cpu0=$(proc_ticks "$pid" | cut -d' ' -f1)
	t0=$(date +%s.%N)
	OB_RSS_PEAK=0 OB_ANON_FIRST= OB_ANON_LAST=0
	local tenth=$((n / 10)) next_note=$((n - n / 10)) perf_pid=
	if [ "$BENCH_OUTBOX_PERF" = 1 ] && [ "$PERF_OK" = 1 ]; then
		perf record -q -e cpu-clock --call-graph dwarf -p "$pid" -o "$BENCH_DIR/sender-$tag.perf.data" >/dev/null 2>&1 &
		perf_pid=$!
	fi
	while :; do
		# (the benchmark's rows are the only ones in the queue)
		left=$(sql "SELECT count(*) FROM enkash.requests WHERE state IN ('pending', 'sending', 'unknown')")
		status=$(cat "/proc/$pid/status" 2>/dev/null)
		rss=$(awk '/^VmRSS:/ { print $2 }' <<<"$status")
		anon=$(awk '/^RssAnon:/ { print $2 }' <<<"$status")
		[ "${rss:-0}" -gt "$OB_RSS_PEAK" ] && OB_RSS_PEAK=$rss
		[ -z "$OB_ANON_FIRST" ] && [ "$left" -le $((n * 9 / 10)) ] && OB_ANON_FIRST=$anon
		OB_ANON_LAST=${anon:-$OB_ANON_LAST}
		# the long run: progress by tenths, to see a slowdown (bloat) as it comes
		if [ "$n" -ge 50000 ] && [ "$left" -le "$next_note" ] && [ "$left" -gt 0 ]; then
			printf '    %6d left after %6.1f s; sender RssAnon %s kB; enkash.requests: %s\n' "$left" \
				"$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { print b - a }')" "$anon" \
				"$(sql "SELECT format('%s dead tuples, %s autovacuums, %s vacuums', n_dead_tup, autovacuum_count, vacuum_count) FROM pg_stat_user_tables WHERE relid = 'enkash.requests'::regclass")" >&2
			while [ "$next_note" -ge "$left" ]; do next_note=$((next_note - tenth)); done
		fi
		[ "$left" = 0 ] && break
		sleep 0.25
	done
	t1=$(date +%s.%N)
	cpu1=$(proc_ticks "$pid" | cut -d' ' -f1)
	# CPU of the sender per load: what bounds the rate on a small machine
	OB_CPU_US=$(awk -v a="$cpu0" -v b="$cpu1" -v hz="$CLK_TCK" -v n="$n" 'BEGIN { printf "%.0f", (b - a) * 1e6 / hz / n }')
	sleep 0.6   # (statistics are flushed at most every 500 ms)
	stats1=$(sql "SELECT n_tup_upd || ' ' || n_tup_hot_upd FROM pg_stat_user_tables WHERE relid = 'enkash.idempotency_keys'::regclass")
	OB_HOT=$(awk -v a="$stats0" -v b="$stats1" 'BEGIN { split(a, x, " "); split(b, y, " "); u = y[1] - x[1]; printf "%d of %d", y[2] - x[2], u }')
	if [ -n "$perf_pid" ]; then
		kill -INT "$perf_pid" 2>/dev/null
		wait "$perf_pid" 2>/dev/null
		[ "$latency" = 0 ] && OB_PERF_DATA="$BENCH_DIR/sender-$tag.perf.data"
	fi
	OB_SECONDS=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')
	# EnKash's side: one credit per reference, and one request per load.
	local ledger once requests
	ledger=$(curl -sSf "$SANDBOX_URL/__sandbox/ledger") || die "sandbox ledger failed"
	once=$(jq --arg p "OB-$RUN_TAG-$tag-" '[.credits[] | select(.reference | startswith($p)) | select(.count == 1)] | length' <<<"$ledger")
	requests=$(sandbox_requests)
	[ "$once" = "$n" ] || problem "outbox $tag: $once of $n references credited exactly once"
	[ "$(path_count "$requests" "$LOAD_PATH")" = "$n" ] \
		|| problem "outbox $tag: $n loads queued, the sandbox saw $(path_count "$requests" "$LOAD_PATH") load requests"
	[ "$(sql "SELECT count(*) FROM enkash.requests WHERE idempotency_key LIKE 'OB-$RUN_TAG-$tag-%' AND state = 'succeeded'")" = "$n" ] \
		|| problem "outbox $tag: not every queued load succeeded"
	OB_MAX_IN_FLIGHT=$(jq -r '.max_in_flight' <<<"$requests")
	OB_CONNECTIONS=$(jq -r '.connections' <<<"$requests")
	log "outbox $tag: $n loads in ${OB_SECONDS}s; sender VmRSS peak ${OB_RSS_PEAK} kB, RssAnon ${OB_ANON_FIRST:-?} -> $OB_ANON_LAST kB; max in flight $OB_MAX_IN_FLIGHT; sender CPU $OB_CPU_US us per load; HOT updates of keys $OB_HOT"
}

if outbox_runs; then
log "outbox: $BENCH_OUTBOX_RUNS x ($BENCH_OUTBOX_LOADS queued loads at $BENCH_OUTBOX_LATENCY_MS ms latency, then with none), enkash.max_concurrency = $BENCH_OUTBOX_CONCURRENCY"
[ -n "${PERF_OK:-}" ] || { PERF_OK=0; command -v perf >/dev/null && perf stat -e task-clock -x, -o /dev/null true >/dev/null 2>&1 && PERF_OK=1; }
OB_LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
sql "ALTER SYSTEM SET enkash.max_concurrency = $BENCH_OUTBOX_CONCURRENCY" >/dev/null
sql "SELECT pg_reload_conf()" >/dev/null
sleep 1
sql "SELECT enkash_get_card_account('$ACCOUNT')" >/dev/null   # a token first
OB_LAT_ALL= OB_FAST_ALL= OB_LAT_RSS=0 OB_LAT_INFLIGHT= OB_PERF_DATA=
for r in $(seq 1 "$BENCH_OUTBOX_RUNS"); do
	outbox_run "latency$r" "$BENCH_OUTBOX_LOADS" "$BENCH_OUTBOX_LATENCY_MS"
	OB_LAT_ALL+=" $OB_SECONDS"
	[ "$OB_RSS_PEAK" -gt "$OB_LAT_RSS" ] && OB_LAT_RSS=$OB_RSS_PEAK
	OB_LAT_INFLIGHT+="${OB_LAT_INFLIGHT:+ }$OB_MAX_IN_FLIGHT"
	outbox_run "fast$r" "$BENCH_OUTBOX_LOADS" 0
	OB_FAST_ALL+=" $OB_SECONDS"
done
OB_LAT_SECONDS=$(stat_of median $OB_LAT_ALL)
OB_FAST_SECONDS=$(stat_of median $OB_FAST_ALL)
OB_IDEAL=$(awk -v n="$BENCH_OUTBOX_LOADS" -v l="$BENCH_OUTBOX_LATENCY_MS" -v c="$BENCH_OUTBOX_CONCURRENCY" \
	'BEGIN { printf "%.2f", n * l / 1000 / c }')
if [ "$BENCH_OUTBOX_MEMORY_LOADS" -gt 0 ]; then
	log "outbox: $BENCH_OUTBOX_MEMORY_LOADS queued loads, no latency, for the sender's memory"
	outbox_run memory "$BENCH_OUTBOX_MEMORY_LOADS" 0
	OB_MEM_SECONDS=$OB_SECONDS
	OB_MEM_ANON_FIRST=$OB_ANON_FIRST
	OB_MEM_ANON_LAST=$OB_ANON_LAST
	OB_MEM_RSS=$OB_RSS_PEAK
fi
sql "ALTER SYSTEM RESET enkash.max_concurrency" >/dev/null
sql "SELECT pg_reload_conf()" >/dev/null
fi   # outbox_runs

# --- instructions per call under callgrind ---------------------------------------------------

CG_IR=
CG_IR_RAW=
CG_IR_LOAD=
if [ "$BENCH_CALLGRIND" = auto ]; then
	command -v valgrind >/dev/null && BENCH_CALLGRIND=1 || BENCH_CALLGRIND=0
fi
case "$BENCH_CALLGRIND" in 1 | yes | on) BENCH_CALLGRIND=1 ;; *) BENCH_CALLGRIND=0 ;; esac
if [ "$BENCH_CALLGRIND" = 1 ]; then
	log "callgrind: restarting the server under valgrind; instructions per look-up"
	cg="$BENCH_DIR/callgrind"
	as_user mkdir -p "$cg"
	check_installed_so "before the restart under callgrind"
	# The baseline first: the raw client in one process, 100 and 1100 calls.
	sandbox_reset
	for n in 100 1100; do
		as_user valgrind --tool=callgrind --callgrind-out-file="$cg/raw.$n" "$RAWCLIENT" --no-fork --calls "$n" \
			--base-url "$SANDBOX_URL/api/v0/partner/enKashCard" --token-url "$SANDBOX_URL$TOKEN_PATH" \
			>"$cg/raw.$n.log" 2>&1 || problem "rawclient under callgrind failed: $(tail -3 "$cg/raw.$n.log")"
	done
	check_counts "rawclient under callgrind" "$READ_PATH" $((100 + 1100 + 20)) 2
	raw_total() { callgrind_annotate --auto=no "$cg/raw.$1" 2>/dev/null | sed -nE 's/^ *([0-9,]+) .*PROGRAM TOTALS.*/\1/p' | tr -d ,; }
	a=$(raw_total 100)
	b=$(raw_total 1100)
	[ -n "$a" ] && [ -n "$b" ] && CG_IR_RAW=$(( (b - a) / 1000 ))
	pg_stop || die "PostgreSQL did not stop"
	as_user sh -c "exec valgrind --tool=callgrind --callgrind-out-file='$cg/callgrind.out.%p' \
		--dump-instr=no --collect-jumps=no postgres -D '$PGDATA' >'$cg/postgres.log' 2>&1" &
	cg_postmaster=$!
	for i in $(seq 1 240); do
		as_user pg_isready -q -h "$WORK" -p "$PGPORT" && break
		sleep 0.5
	done
	# Pairs of sessions, few and many calls: the difference is the calls' own
	# cost, without connection start-up, the first call and exit.  Three
	# shapes: many calls in one statement (the extension alone), one call
	# per statement (what pgbench does), and SELECT 1 per statement (the
	# PostgreSQL floor).
	CG_FEW=50
	CG_MANY=1050
	CG_STMT_FEW=20
	CG_STMT_MANY=320
	cg_loop() {   # calls -> prints the backend pid
		as_user "${PSQL[@]}" -c "SELECT pg_backend_pid(), count(enkash_get_card_account('$ACCOUNT')) FROM generate_series(1, $1)" \
			| cut -d'|' -f1
	}
	cg_statements() {   # statement count -> prints the backend pid
		{
			echo "SELECT pg_backend_pid();"
			for i in $(seq 1 "$1"); do echo "$2"; done
		} >"$cg/statements.sql"
		chmod 644 "$cg/statements.sql"
		as_user "${PSQL[@]}" -f "$cg/statements.sql" >"$cg/statements.out" 2>&1
		head -1 "$cg/statements.out"
	}
	sandbox_reset
	cg_loop 1 >/dev/null   # the first call of the server (token, connection)
	cg_pid_few=$(cg_loop "$CG_FEW")
	cg_pid_many=$(cg_loop "$CG_MANY")
	cg_pid_stmt_few=$(cg_statements "$CG_STMT_FEW" "SELECT enkash_get_card_account('$ACCOUNT');")
	cg_pid_stmt_many=$(cg_statements "$CG_STMT_MANY" "SELECT enkash_get_card_account('$ACCOUNT');")
	cg_pid_null_few=$(cg_statements "$CG_STMT_FEW" "SELECT 1;")
	cg_pid_null_many=$(cg_statements "$CG_STMT_MANY" "SELECT 1;")
	cg_pid_bare_few=$(cg_statements "$CG_STMT_FEW" "SELECT $(bare_call /cardAccount/get "$BARE_LOOKUP_BODY");")
	cg_pid_bare_many=$(cg_statements "$CG_STMT_MANY" "SELECT $(bare_call /cardAccount/get "$BARE_LOOKUP_BODY");")
	check_counts "callgrind run" "$READ_PATH" $((1 + CG_FEW + CG_MANY + 2 * (CG_STMT_FEW + CG_STMT_MANY))) -
	# Loads, in one statement, each under a new key.
	CG_LOAD_FEW=10
	CG_LOAD_MANY=110
	cg_loads() {   # count tag -> prints the backend pid
		as_user "${PSQL[@]}" -c "SELECT pg_backend_pid(), count(enkash_load_balance('$ACCOUNT', '$CARD', 1, 'CG-$RUN_TAG-$2-' || i)) FROM generate_series(1, $1) i" \
			| cut -d'|' -f1
	}
	cg_pid_load_few=$(cg_loads "$CG_LOAD_FEW" few)
	cg_pid_load_many=$(cg_loads "$CG_LOAD_MANY" many)
	LAST_REQUESTS=$(sandbox_requests)
	[ "$(path_count "$LAST_REQUESTS" "$LOAD_PATH")" = $((CG_LOAD_FEW + CG_LOAD_MANY)) ] \
		|| problem "COUNT MISMATCH in callgrind loads: $((CG_LOAD_FEW + CG_LOAD_MANY)) made, the sandbox saw $(path_count "$LAST_REQUESTS" "$LOAD_PATH")"
	as_user pg_ctl -D "$PGDATA" -m fast -w -t 300 stop >/dev/null
	wait "$cg_postmaster"
	cg_total() {   # pid
		[ -s "$cg/callgrind.out.$1" ] || return
		callgrind_annotate --auto=no "$cg/callgrind.out.$1" 2>/dev/null \
			| sed -nE 's/^ *([0-9,]+) .*PROGRAM TOTALS.*/\1/p' | tr -d ,
	}
	cg_per_call() {   # pid_few pid_many calls_between -> instructions per call
		local a b
		a=$(cg_total "$1")
		b=$(cg_total "$2")
		[ -n "$a" ] && [ -n "$b" ] && echo $(( (b - a) / $3 ))
	}
	cg_functions() {   # file yes|no -> "Ir<TAB>function (object)"
		callgrind_annotate --auto=no --threshold=100 --inclusive="$2" "$1" 2>/dev/null | awk '
			/^ *[0-9,]+ \(/ && !/PROGRAM TOTALS/ {
				ir = $1; gsub(",", "", ir)
				line = $0; sub(/^ *[0-9,]+ \([^)]*\) +/, "", line)
				obj = ""
				if (match(line, / \[[^]]*\]$/)) {
					obj = substr(line, RSTART + 2, RLENGTH - 3); line = substr(line, 1, RSTART - 1)
				}
				if (obj == "") next
				n = split(obj, parts, "/"); obj = parts[n]
				fn = line; sub(/^.*:/, "", fn)
				print ir "\t" fn " (" obj ")"
			}'
	}
	cg_diff() {   # pid_few pid_many calls_between yes|no -> per call, by function
		awk -F'\t' -v d="$3" '
			NR == FNR { few[$2] += $1; next }
			{ many[$2] += $1 }
			END { for (k in many) { v = (many[k] - few[k]) / d; if (v >= 1) printf "%8.0f\t%s\n", v, k } }' \
			<(cg_functions "$cg/callgrind.out.$1" "$4") \
			<(cg_functions "$cg/callgrind.out.$2" "$4") | sort -rn
	}
	CG_IR=$(cg_per_call "$cg_pid_few" "$cg_pid_many" $((CG_MANY - CG_FEW)))
	CG_IR_STMT=$(cg_per_call "$cg_pid_stmt_few" "$cg_pid_stmt_many" $((CG_STMT_MANY - CG_STMT_FEW)))
	CG_IR_NULL=$(cg_per_call "$cg_pid_null_few" "$cg_pid_null_many" $((CG_STMT_MANY - CG_STMT_FEW)))
	CG_IR_BARE=$(cg_per_call "$cg_pid_bare_few" "$cg_pid_bare_many" $((CG_STMT_MANY - CG_STMT_FEW)))
	CG_IR_LOAD=$(cg_per_call "$cg_pid_load_few" "$cg_pid_load_many" $((CG_LOAD_MANY - CG_LOAD_FEW)))
	if [ -n "$CG_IR" ] && [ -n "$CG_IR_STMT" ]; then
		printf '    instructions per look-up in the backend: %s in one statement, %s as one statement each (SELECT 1: %s); raw client: %s\n' \
			"$CG_IR" "$CG_IR_STMT" "${CG_IR_NULL:-?}" "${CG_IR_RAW:-?}" >&2
		cg_diff "$cg_pid_few" "$cg_pid_many" $((CG_MANY - CG_FEW)) no >"$cg/self-per-call.txt"
		cg_diff "$cg_pid_few" "$cg_pid_many" $((CG_MANY - CG_FEW)) yes >"$cg/inclusive-per-call.txt"
		cg_diff "$cg_pid_stmt_few" "$cg_pid_stmt_many" $((CG_STMT_MANY - CG_STMT_FEW)) yes >"$cg/inclusive-per-statement.txt"
		cg_diff "$cg_pid_stmt_few" "$cg_pid_stmt_many" $((CG_STMT_MANY - CG_STMT_FEW)) no >"$cg/self-per-statement.txt"
		[ -n "$CG_IR_LOAD" ] && cg_diff "$cg_pid_load_few" "$cg_pid_load_many" $((CG_LOAD_MANY - CG_LOAD_FEW)) yes >"$cg/inclusive-per-load.txt"
		# What a call costs more as its own statement, by function (self).
		awk -F'\t' 'NR == FNR { loop[$2] = $1; next }
			{ d = $1 - loop[$2]; if (d >= 200) printf "%8.0f\t%s\n", d, $2 }' \
			"$cg/self-per-call.txt" "$cg/self-per-statement.txt" | sort -rn >"$cg/statement-extra.txt"
	else
		CG_IR=
		problem "callgrind produced no totals; see $cg"
	fi
fi

# --- the table -------------------------------------------------------------------------

# Notes per row: audit rows the worker did not record, pgbench's zero latencies.
for k in "${!AUDIT_CALLS[@]}"; do
	if [ "${AUDIT_MISSING[$k]:-0}" -gt 0 ] && ! hollow; then
		NOTE[$k]="audit rows not recorded (worker behind): ${AUDIT_MISSING[$k]} of ${AUDIT_CALLS[$k]} calls over the runs"
	fi
done
for k in "${!ZERO_NOTE[@]}"; do
	NOTE[$k]="${NOTE[$k]:+${NOTE[$k]}; }${ZERO_NOTE[$k]} (last run)"
done

mkdir -p "$(dirname "$BENCH_CSV")"
echo "operation,sessions,runs,calls_per_s_median,calls_per_s_min,calls_per_s_max,p50_us,p99_us,ratio,ratio_meaning,target,value,unit,note" >"$BENCH_CSV"
# One CSV line; every field quoted.
csv() {
	local f line=
	for f in "$@"; do
		line+="${line:+,}\"${f//\"/\"\"}\""
	done
	echo "$line" >>"$BENCH_CSV"
}

name_of() {
	case "$1" in
		raw) echo "raw client (baseline)" ;;
		select1) echo "SELECT 1 (no call)" ;;
		read) echo "enkash_get_card_account" ;;
		load) if hollow; then echo "load, no rows (hollow)"; else echo "enkash_load_balance"; fi ;;
		answer) echo "SELECT answer::jsonb" ;;
		records) echo "load's records in SQL" ;;
		bare_read) echo "bare SQL look-up" ;;
		bare_load) echo "bare SQL load" ;;
		bare_records) echo "bare SQL load + records" ;;
	esac
}

echo
if [ "$BENCH_LATENCY_MS" -gt 0 ]; then
	echo "enkash benchmark: $(nproc) cores, PostgreSQL $PG_MAJOR, sandbox on loopback adding $BENCH_LATENCY_MS ms to every call"
else
	echo "enkash benchmark: $(nproc) cores, PostgreSQL $PG_MAJOR, sandbox on loopback with no added latency"
fi
echo "load average when the benchmark started: $LOAD_BEFORE (other work on the machine skews calls/s and CPU times; callgrind counts do not drift)"
if throughput_runs; then
	echo "throughput: $BENCH_RUNS runs of ${BENCH_SECONDS}s per row; calls/s median (min-max); latency per call p50/p99 (median of runs)"
	echo
	# The rate targets: a look-up's calls/s against the raw client's, with
	# no latency and with 20 ms of it; a load's against a read's at 20 ms
	# (with none, a load's target is its CPU, in the multiples table).
	rate_target() {   # read|load sessions
		case "$1:$(latency_of "$2"):${2%%+*}" in
			read:0:1) echo ">= 0.70" ;;
			read:0:8) echo ">= 0.45" ;;
			read:20:8) echo ">= 0.95" ;;
			load:20:8) echo "<= 1.10" ;;
		esac
	}
	printf '%-24s %8s  %-26s %9s %9s  %-24s %s\n' operation sessions "calls/s med (min-max)" "p50 us" "p99 us" ratio target
	printf '%-24s %8s  %-26s %9s %9s  %-24s %s\n' ------------------------ -------- -------------------------- --------- --------- ------------------------ ----------
	for s in $BENCH_SESSIONS $LATENCY_ROWS; do
		for op in raw select1 read load; do
			k="$op:$s"
			[ -n "${TPS[$k]:-}" ] || continue
			med=$(stat_of median ${TPS[$k]})
			min=$(stat_of min ${TPS[$k]})
			max=$(stat_of max ${TPS[$k]})
			p50=$(stat_of median ${P50[$k]})
			p99=$(stat_of median ${P99[$k]})
			ratio= meaning= target= shown=
			case "$op" in
				raw) ratio=1; meaning="baseline"; shown="1.00 (baseline)" ;;
				select1) meaning="control: PostgreSQL and pgbench without a call"; shown="(control)" ;;
				read)
					rawmed=$(stat_of median ${TPS[raw:$s]:-})
					ratio=$(awk -v a="$med" -v b="$rawmed" 'BEGIN { if (b > 0) printf "%.2f", a / b }')
					meaning="calls/s as a fraction of the raw client's"
					target=$(rate_target read "$s")
					shown="$ratio of raw"
					;;
				load)
					readmed=$(stat_of median ${TPS[read:$s]:-})
					ratio=$(awk -v a="$readmed" -v b="$med" 'BEGIN { if (b > 0) printf "%.2f", a / b }')
					meaning="cost of a load in units of a read (read calls/s / load calls/s)"
					target=$(rate_target load "$s")
					shown="${ratio}x a read"
					;;
			esac
			runs=$(wc -w <<<"${TPS[$k]}")
			verdict=$(awk -v r="$ratio" -v t="$target" 'BEGIN {
				if (r == "" || t !~ /^(>=|<=) /) exit
				split(t, f, " ")
				ok = (f[1] == ">=") ? (r + 0 >= f[2] + 0) : (r + 0 <= f[2] + 0)
				print ok ? "met" : "missed" }')
			printf '%-24s %8s  %-26s %9s %9s  %-24s %s\n' "$(name_of "$op")" "$s" \
				"$(fmt "$med" %.0f) ($(fmt "$min" %.0f)-$(fmt "$max" %.0f))" \
				"$(fmt "$p50" %.0f)" "$(fmt "$p99" %.0f)" "$shown" "$target${verdict:+ $verdict}"
			csv "$(name_of "$op")" "$s" "$runs" "$(fmt "$med" %.1f)" "$(fmt "$min" %.1f)" "$(fmt "$max" %.1f)" \
				"$(fmt "$p50" %.0f)" "$(fmt "$p99" %.0f)" "$ratio" "$meaning" "$target" "" "" "${NOTE[$k]:-}"
		done
	done
	
	echo
	echo "CPU per call by process, us (median of runs); 'ceiling' = $(nproc) cores / total: the calls/s that CPU alone allows"
	printf '%-24s %8s %8s %8s %8s %8s %8s %8s %8s %9s\n' operation sessions client backend workers autovac "other pg" sandbox total ceiling
	printf '%-24s %8s %8s %8s %8s %8s %8s %8s %8s %9s\n' ------------------------ -------- -------- -------- -------- -------- -------- -------- -------- ---------
	declare -A CPU_TOTAL
	for s in $BENCH_SESSIONS $LATENCY_ROWS; do
		for op in raw select1 read load answer records bare_read bare_load bare_records; do
			k="$op:$s"
			[ -n "${CPU_CLIENT[$k]:-}" ] || continue
			c=$(stat_of median ${CPU_CLIENT[$k]})
			be=$(stat_of median ${CPU_BACKEND[$k]})
			w=$(stat_of median ${CPU_WORKER[$k]})
			av=$(stat_of median ${CPU_AUTOVAC[$k]})
			o=$(stat_of median ${CPU_OTHER[$k]})
			sb=$(stat_of median ${CPU_SANDBOX[$k]})
			tot=$(awk -v a="$c" -v b="$be" -v c2="$w" -v d="$o" -v e="$sb" -v f="$av" 'BEGIN { printf "%.1f", a + b + c2 + d + e + f }')
			CPU_TOTAL[$k]=$tot
			ceil=$(awk -v t="$tot" -v n="$(nproc)" 'BEGIN { if (t > 0) printf "%.0f", n * 1e6 / t }')
			printf '%-24s %8s %8.1f %8.1f %8.1f %8.1f %8.1f %8.1f %8.1f %9s\n' "$(name_of "$op")" "$s" "$c" "$be" "$w" "$av" "$o" "$sb" "$tot" "$ceil"
			csv "CPU per call: $(name_of "$op")" "$s" "$BENCH_RUNS" "" "" "" "" "" "" "" "" "$tot" "us" \
				"client $c; backend $be; enkash workers $w; autovacuum $av; other postgres $o; sandbox $sb; ceiling $ceil calls/s"
		done
	done

	echo
	echo "total CPU per call as a multiple of the raw client's, beside what it would be with the SQL side"
	echo "replaced by a reference row (no enkash code): the look-up by SELECT answer::jsonb (its floor),"
	echo "the load by its records written in SQL by the session; and beside the same call made with"
	echo "the bare SQL call (the raw client's exchange in a C function: the look-up alone, the load with"
	echo "its records in SQL), measured at its own rate"
	printf '%-24s %8s %10s %10s %14s %12s %10s %8s  %s\n' call sessions "enkash us" "enkash x" "raw + ref us" "raw + ref x" "bare us" "bare x" target
	for s in $BENCH_SESSIONS; do
		for op in read:answer:bare_read load:records:bare_records; do
			IFS=: read -r call ref_op bare_op <<<"$op"
			ours=${CPU_TOTAL[$call:$s]:-} raw=${CPU_TOTAL[raw:$s]:-} ref=${CPU_TOTAL[$ref_op:$s]:-}
			bare=${CPU_TOTAL[$bare_op:$s]:-}
			[ -n "$raw" ] && [ -n "$ours" ] || continue
			target=$(case "$call:$s" in read:8) echo "<= 2.0" ;; load:8) echo "<= 4.0" ;; esac)
			awk -v s="$s" -v name="$(name_of "$call")" -v raw="$raw" -v ref="$ref" -v us="$ours" -v bare="$bare" -v t="$target" 'BEGIN {
				r = (ref == "") ? "-" : sprintf("%.1f", raw + ref); rx = (ref == "") ? "-" : sprintf("%.2f", (raw + ref) / raw)
				b = (bare == "") ? "-" : sprintf("%.1f", bare); bx = (bare == "") ? "-" : sprintf("%.2f", bare / raw)
				printf "%-24s %8s %10.1f %10.2f %14s %12s %10s %8s  %s\n", name, s, us, us / raw, r, rx, b, bx, t }'
			csv "multiple of the raw client: $(name_of "$call")" "$s" "$BENCH_RUNS" "" "" "" "" "" \
				"$(awk -v a="$ours" -v b="$raw" 'BEGIN { printf "%.2f", a / b }')" \
				"total CPU per call / the raw client's" "$target" "$ours" "us" \
				"raw + reference $(awk -v a="$raw" -v b="$ref" 'BEGIN { printf (b == "") ? "-" : "%.1f", a + b }') us; bare SQL call ${bare:--} us"
		done
	done
fi
echo
printf '%-66s %14s  %s\n' measurement value target
printf '%-66s %14s  %s\n' ------------------------------------------------------------------ -------------- ----------
row() {   # label value unit target note
	local verdict=
	case "$4" in
		"<= "* | ">= "* | [0-9]*)
			verdict=$(awk -v v="$2" -v t="$4" 'BEGIN {
				if (v !~ /^[0-9.]+$/) exit
				n = split(t, f, " ")
				if (n == 1) ok = (v + 0 == f[1] + 0)
				else ok = (f[1] == ">=") ? (v + 0 >= f[2] + 0) : (v + 0 <= f[2] + 0)
				print ok ? "met" : "missed" }') ;;
	esac
	printf '%-66s %14s  %s\n' "$1" "$2 $3" "$4${verdict:+ $verdict}"
	[ -n "${5:-}" ] && printf '    %s\n' "$5"
	csv "$1" "" "" "" "" "" "" "" "" "" "$4" "$2" "$3" "${5:-}"
}
if everything; then
	row "token calls, $BENCH_CONNECT_SESSIONS sessions connecting at once after a restart" "$TOKEN_CALLS" calls "1" \
		"enkash_token_calls() = $TOKEN_CALLS_PG; latency p50 $(fmt "$CONNECT_P50" %.0f) us p99 $(fmt "$CONNECT_P99" %.0f) us incl. connecting"
	row "backend CPU per look-up ($CPU_METHOD)" "$CPU_US" "us" "<= 60" \
		"$BENCH_CPU_CALLS calls in one statement at $CPU_RATE calls/s; /proc utime+stime: $CPU_PROC_US us"
	raw1cpu=$(stat_of median ${RAW_CPU[1]:-})
	[ "$raw1cpu" != nan ] && row "raw client CPU per call (for comparison; getrusage)" "$(fmt "$raw1cpu" %.1f)" "us" "" \
		"libcurl + envelope + answer check + kernel; 1 client"
	[ -n "$CG_IR_RAW" ] && row "raw client instructions per call (callgrind)" "$CG_IR_RAW" "instr" "" \
		"difference of 1100 and 100 calls, one process"
	[ -n "$CG_IR" ] && row "backend instructions per look-up, in one statement (callgrind)" "$CG_IR" "instr" "" \
		"difference of $CG_MANY and $CG_FEW calls in one statement"
	[ -n "$CG_IR" ] && row "backend instructions per look-up, one per statement (callgrind)" "$CG_IR_STMT" "instr" "" \
		"difference of $CG_STMT_MANY and $CG_STMT_FEW statements; SELECT 1 statements: ${CG_IR_NULL:-?} each"
	[ -n "${CG_IR_BARE:-}" ] && row "backend instructions per bare SQL look-up, one per statement (callgrind)" "$CG_IR_BARE" "instr" "" \
		"the raw client's exchange as a C function (test/bench/bare): a look-up's floor"
	[ -n "$CG_IR_LOAD" ] && row "backend instructions per load, in one statement (callgrind)" "$CG_IR_LOAD" "instr" "" \
		"difference of $CG_LOAD_MANY and $CG_LOAD_FEW loads; the worker's share is not included"
	row "TCP connections for $CONN_CALLS look-ups from $BENCH_CONN_SESSIONS sessions" "$CONN_API" "conns" "<= $BENCH_CONN_SESSIONS" \
		"sandbox /__sandbox/requests connections minus the control calls"
	row "backend RSS before $MEM_CALLS look-ups (after 100)" "${MEM_RSS0:-?}" "kB" "" "RssAnon ${MEM_ANON0:-?} kB"
	row "backend RSS after $MEM_CALLS look-ups" "${MEM_RSS1:-?}" "kB" "flat" \
		"RssAnon ${MEM_ANON1:-?} kB; ${MEM_SECONDS:-?} s; $(( ${MEM_RSS1:-0} - ${MEM_MID_RSS:-0} )) kB more than after ${MEM_MID_CALLS:-?} calls"
	[ "${MEM_CALLS:-0}" -lt "$BENCH_MEMORY_CALLS" ] && echo "   (the memory run stopped after $MEM_CALLS of $BENCH_MEMORY_CALLS calls: BENCH_MEMORY_MAX_SECONDS)"
	
fi

rate() { awk -v n="$1" -v s="$2" 'BEGIN { if (s > 0) printf "%.0f", n / s }'; }
if outbox_runs; then
ob_range() { [ "$BENCH_OUTBOX_RUNS" -gt 1 ] && echo " (median of $BENCH_OUTBOX_RUNS runs: $(stat_of min $1)-$(stat_of max $1) s)"; }
row "outbox: $BENCH_OUTBOX_LOADS queued loads at ${BENCH_OUTBOX_LATENCY_MS} ms, concurrency $BENCH_OUTBOX_CONCURRENCY: wall time" \
	"$OB_LAT_SECONDS" "s" "<= $(awk -v b="$OB_IDEAL" 'BEGIN { printf "%.2f", 1.5 * b }')" \
	"ideal $OB_IDEAL s ($(awk -v a="$OB_LAT_SECONDS" -v b="$OB_IDEAL" 'BEGIN { if (b > 0) printf "%.2f", a / b }')x; target <= 1.5x)$(ob_range "$OB_LAT_ALL"); $(rate "$BENCH_OUTBOX_LOADS" "$OB_LAT_SECONDS") loads/s; sandbox max in flight $OB_LAT_INFLIGHT; sender VmRSS peak $OB_LAT_RSS kB"
row "outbox: queued loads per second, no latency" "$(rate "$BENCH_OUTBOX_LOADS" "$OB_FAST_SECONDS")" "loads/s" ">= 2000" \
	"$BENCH_OUTBOX_LOADS loads in $OB_FAST_SECONDS s$(ob_range "$OB_FAST_ALL"); load average before the outbox runs $OB_LOAD_BEFORE"
[ "$BENCH_OUTBOX_MEMORY_LOADS" -gt 0 ] && row "outbox: sender RssAnon over $BENCH_OUTBOX_MEMORY_LOADS loads (after the first tenth -> end)" \
	"${OB_MEM_ANON_FIRST:-?}->${OB_MEM_ANON_LAST:-?}" "kB" "flat" \
	"$(rate "$BENCH_OUTBOX_MEMORY_LOADS" "$OB_MEM_SECONDS") loads/s over $OB_MEM_SECONDS s; VmRSS peak $OB_MEM_RSS kB"
fi   # outbox_runs

for k in "${!NOTE[@]}"; do
	echo "note ($k): ${NOTE[$k]}"
done

if [ -n "$PROFILE_TEXT" ]; then
	echo
	echo "perf profile of the calling backend, $BENCH_PROFILE_CALLS look-ups in one statement (cpu-clock samples):"
	echo "  by object:"
	sort -rn "$BENCH_DIR/profile/dso.txt" | sed 's/^ */    /'
	echo "  by function (self):"
	sed 's/^ */    /' "$BENCH_DIR/profile/self.txt"
	echo "  inclusive (children, self), the extension's read path:"
	grep -E '\] (enkash_|envelope_|current_cipher|post_with_token|run_transfer|curl_multi_p|curl_easy_setopt|jsonb_in$|pg_parse_json$|JsonbToCString|__send$|__recv|__poll$|__GI___fstatat64|GetUserNameFromId|slot_)' \
		"$BENCH_DIR/profile/children.txt" | head -30 | sed 's/^ */    /'
fi
if [ -n "$CG_IR" ]; then
	cg_pattern='	(enkash_|envelope_|current_cipher|fingerprint|send_claimed|ConditionVariable|pg_cryptohash|post_with_token|run_transfer|curl_multi_perform|curl_multi_poll|curl_easy_setopt|jsonb_in|pg_parse_json|JsonbToCString|GetUserNameFromId|slot_|fmgr_info|SearchCatCache|SearchSysCache|SPI_|send|recv|poll|__fstatat64|stat64|__xstat|ExecInitExpr|pg_plan_queries|pg_analyze|exec_simple_query|jsonb_out|printtup)[^ ]* \('
	echo
	echo "callgrind: instructions per look-up by function ($CG_MANY minus $CG_FEW calls in one statement, per call):"
	echo "  self:"
	head -25 "$BENCH_DIR/callgrind/self-per-call.txt" | sed 's/^/    /'
	echo "  inclusive, the extension's read path:"
	grep -E "$cg_pattern" "$BENCH_DIR/callgrind/inclusive-per-call.txt" | head -30 | sed 's/^/    /'
	echo
	echo "callgrind: one call per statement ($CG_STMT_MANY minus $CG_STMT_FEW statements, per statement), inclusive:"
	grep -E "$cg_pattern" "$BENCH_DIR/callgrind/inclusive-per-statement.txt" | head -30 | sed 's/^/    /'
	echo "  self instructions a call costs more as its own statement than inside one statement:"
	head -20 "$BENCH_DIR/callgrind/statement-extra.txt" | sed 's/^/    /'
	if [ -s "$BENCH_DIR/callgrind/inclusive-per-load.txt" ]; then
		echo
		echo "callgrind: instructions per load in the calling backend ($CG_LOAD_MANY minus $CG_LOAD_FEW loads in one statement), inclusive:"
		grep -E "$cg_pattern" "$BENCH_DIR/callgrind/inclusive-per-load.txt" | head -30 | sed 's/^/    /'
	fi
fi
if [ -n "${OB_PERF_DATA:-}" ] && [ -s "$OB_PERF_DATA" ]; then
	echo
	echo "perf profile of the enkash sender, last outbox run without latency (cpu-clock samples, $OB_PERF_DATA):"
	mkdir -p "$BENCH_DIR/sender-home"
	HOME="$BENCH_DIR/sender-home" perf buildid-cache -a "$WORK/tree/enkash.so" >/dev/null 2>&1
	echo "  by function (self):"
	HOME="$BENCH_DIR/sender-home" perf report -i "$OB_PERF_DATA" --stdio --no-children -g none \
		-F overhead,dso,sym --percent-limit 1 2>/dev/null | grep -E '^ +[0-9]' | head -25 | sed 's/^ */    /'
	echo "  inclusive (children, self):"
	HOME="$BENCH_DIR/sender-home" perf report -i "$OB_PERF_DATA" --stdio --children -g none --sort sym \
		-F overhead_children,overhead,sym --percent-limit 2 2>/dev/null | grep -E '^ +[0-9]' | head -45 | sed 's/^ */    /'
fi
[ -n "$SO_WARNING" ] && { echo; echo "WARNING: $SO_WARNING"; }
echo
echo "CSV: $BENCH_CSV"
echo "took $(( $(date +%s) - BENCH_STARTED )) s"
if [ ${#PROBLEMS[@]} -gt 0 ]; then
	echo
	echo "THE BENCHMARK IS NOT TRUSTWORTHY: ${#PROBLEMS[@]} problem(s):"
	printf '  - %s\n' "${PROBLEMS[@]}"
	exit 1
fi
exit 0
