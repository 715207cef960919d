#!/usr/bin/env bash
# test/bench/run.sh (`make bench`): the enkash benchmark suite.
#
# Starts its own PostgreSQL and sandbox on loopback (test/lib.sh), then
# measures, in the same run:
#   - the baseline: test/bench/rawclient (libcurl + the extension's envelope
#     code, no PostgreSQL), 1 and 8 clients;
#   - enkash_get_card_account and enkash_load_balance from 1 and 8 pgbench
#     sessions, each BENCH_RUNS times, interleaved with the baseline;
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
BENCH_CSV=${BENCH_CSV:-$ENKASH_ROOT/test/bench/results/bench-$(date +%Y%m%d-%H%M%S).csv}

READ_PATH=/api/v0/partner/enKashCard/cardAccount/get
LOAD_PATH=/api/v0/partner/enKashCard/balance
TOKEN_PATH=/oauth/token
ACCOUNT=CASANDBOX1
CARD=EKCSANDBOX1

BENCH_STARTED=$(date +%s)
PROBLEMS=()

# A broken benchmark: said loudly now, repeated at the end, exit status 1.
problem() {
	PROBLEMS+=("$*")
	printf '\n!!!!! %s\n\n' "$*" >&2
}

# --- setup -------------------------------------------------------------------

extra_packages=(linux-perf)
case "$BENCH_CALLGRIND" in
	1 | yes | on) extra_packages+=(valgrind) ;;
esac
ensure_packages "${extra_packages[@]}"
prepare_work_copy
PGDATA="$WORK/pgdata"
BENCH_DIR="$WORK/bench"
stop_all() {
	as_user pg_ctl -D "$PGDATA" -m fast -t 60 stop >/dev/null 2>&1 || true
	cleanup_work
}
trap stop_all EXIT
build_and_install
log "building the baseline client"
as_user make -s -C "$WORK/tree/test/bench" >/dev/null || die "rawclient build failed"
RAWCLIENT="$WORK/tree/test/bench/rawclient"
as_user mkdir -p "$BENCH_DIR"
start_sandbox

log "starting a throwaway PostgreSQL"
PGPORT=$(free_port)
as_user initdb -D "$PGDATA" -A trust -U postgres >/dev/null || die "initdb failed"
write_credentials "$WORK/credentials.conf"
{
	enkash_settings "$WORK/credentials.conf"
	echo "enkash.database = 'postgres'"
	echo "max_connections = 150"
	echo "listen_addresses = ''"
	echo "unix_socket_directories = '$WORK'"
	echo "port = $PGPORT"
} | as_user sh -c "cat >> '$PGDATA/postgresql.conf'"

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

# --- the sandbox's counters ---------------------------------------------------

sandbox_reset() {
	curl -sSf -X POST "$SANDBOX_URL/__sandbox/reset" >/dev/null || die "sandbox reset failed"
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
declare -A TPS P50 P99 NOTE
add_result() {   # op sessions calls_per_s p50_us p99_us
	local k="$1:$2"
	TPS[$k]="${TPS[$k]:-} $3"
	P50[$k]="${P50[$k]:-} $4"
	P99[$k]="${P99[$k]:-} $5"
}

# --- the runs --------------------------------------------------------------------

# The baseline: rawclient with CLIENTS clients for BENCH_SECONDS.
run_raw() {   # sessions run
	local s=$1 r=$2 out line calls warm
	sandbox_reset
	out=$(as_user "$RAWCLIENT" --base-url "$SANDBOX_URL/api/v0/partner/enKashCard" \
		--token-url "$SANDBOX_URL$TOKEN_PATH" --clients "$s" --seconds "$BENCH_SECONDS" 2>&1)
	local rc=$?
	line=$(grep '^rawclient clients=' <<<"$out")
	[ "$rc" -eq 0 ] && [ -n "$line" ] || problem "rawclient ($s clients, run $r) failed: $out"
	[ -n "$line" ] || return
	kv() { sed -nE "s/.* $1=([^ ]+).*/\1/p" <<<"$line"; }
	calls=$(kv calls)
	warm=$(kv warmup)
	check_counts "rawclient, $s clients, run $r" "$READ_PATH" $((calls + warm)) 1
	add_result raw "$s" "$(kv calls_per_s)" "$(kv p50_us)" "$(kv p99_us)"
	RAW_CPU[$s]="${RAW_CPU[$s]:-} $(kv cpu_us_per_call)"
	printf '    raw    %2s sessions run %s: %8.1f calls/s  p50 %6.0f us  p99 %6.0f us  (client CPU %s us/call, %s connections)\n' \
		"$s" "$r" "$(kv calls_per_s)" "$(kv p50_us)" "$(kv p99_us)" "$(kv cpu_us_per_call)" "$(kv connections)" >&2
}
declare -A RAW_CPU

# pgbench with a script; sets PG_PROCESSED, PG_TPS, PG_P50, PG_P99.
# run_pgbench LABEL DIR SESSIONS SCRIPT pgbench-args...
run_pgbench() {
	local label=$1 dir=$2 s=$3 script=$4 rc failed
	shift 4
	as_user mkdir -p "$dir"
	(cd "$dir" && as_user "${PGBENCH[@]}" -f "$script" -c "$s" -j "$s" -l --log-prefix="$dir/log" \
		$BENCH_PGBENCH_OPTS "$@" postgres) >"$dir/pgbench.out" 2>&1
	rc=$?
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
	local logged
	logged=$(wc -l <"$dir/latency.txt")
	[ "$logged" -eq "$PG_PROCESSED" ] || problem "$label: pgbench reports $PG_PROCESSED transactions but logged $logged"
}

RUN_TAG=$(date +%s)
run_sql_bench() {   # read|load sessions run
	local op=$1 s=$2 r=$3 dir="$BENCH_DIR/$1-$2-$3" audit0 drops0 rows tag
	sandbox_reset
	audit0=$(audit_max_id)
	drops0=$(audit_drops)
	tag="$RUN_TAG$r$s"
	if [ "$op" = read ]; then
		run_pgbench "$op, $s sessions, run $r" "$dir" "$s" "$WORK/tree/test/bench/read.sql" -T "$BENCH_SECONDS"
		check_counts "enkash_get_card_account, $s sessions, run $r" "$READ_PATH" "$PG_PROCESSED" 0
		rows=$(audit_rows_after "$audit0")
		if [ "$rows" != "$PG_PROCESSED" ]; then
			NOTE["read:$s"]="audit rows: $rows of $PG_PROCESSED calls (worker behind: $(( $(audit_drops) - drops0 )) not recorded)"
			log "note: $PG_PROCESSED reads, $rows audit rows (the worker dropped $(( $(audit_drops) - drops0 )))"
		fi
	else
		run_pgbench "$op, $s sessions, run $r" "$dir" "$s" "$WORK/tree/test/bench/load.sql" -T "$BENCH_SECONDS" -D "run=$tag"
		check_counts "enkash_load_balance, $s sessions, run $r" "$LOAD_PATH" "$PG_PROCESSED" 0
		# EnKash's side: one credit per call; ours: one succeeded key per call.
		local credits keys
		credits=$(curl -sSf "$SANDBOX_URL/__sandbox/ledger" | jq -r '.total_count')
		keys=$(sql "SELECT count(*) FROM enkash.idempotency_keys WHERE endpoint = 'load_balance' AND key LIKE 'B-$tag-%' AND state = 'succeeded'")
		[ "$credits" = "$PG_PROCESSED" ] || problem "COUNT MISMATCH in loads, $s sessions, run $r: $PG_PROCESSED calls, $credits credits in the sandbox"
		[ "$keys" = "$PG_PROCESSED" ] || problem "COUNT MISMATCH in loads, $s sessions, run $r: $PG_PROCESSED calls, $keys succeeded idempotency keys"
		# Let the worker finish the audit rows before the next run.
		audit_rows_after "$audit0" >/dev/null
	fi
	add_result "$op" "$s" "$PG_TPS" "$PG_P50" "$PG_P99"
	printf '    %-6s %2s sessions run %s: %8.1f calls/s  p50 %6.0f us  p99 %6.0f us  (%s calls)\n' \
		"$op" "$s" "$r" "$PG_TPS" "$PG_P50" "$PG_P99" "$PG_PROCESSED" >&2
}

log "warm-up: one look-up and one load"
sandbox_reset
sql "SELECT enkash_get_card_account('$ACCOUNT') ->> 'cardAccountId'" >/dev/null || die "a look-up failed"
sql "SELECT enkash_load_balance('$ACCOUNT', '$CARD', 1, 'B-warmup-$RUN_TAG')" >/dev/null || die "a load failed"
check_counts "warm-up" "$READ_PATH" 1 -

log "throughput: $BENCH_RUNS runs of ${BENCH_SECONDS}s each; sessions: $BENCH_SESSIONS"
for r in $(seq 1 "$BENCH_RUNS"); do
	for s in $BENCH_SESSIONS; do
		run_raw "$s" "$r"
		run_sql_bench read "$s" "$r"
		run_sql_bench load "$s" "$r"
	done
done

# --- connections: 10,000 calls from 8 sessions --------------------------------------

log "connections: $BENCH_CONN_CALLS look-ups from $BENCH_CONN_SESSIONS new sessions"
sandbox_reset
per_session=$(( (BENCH_CONN_CALLS + BENCH_CONN_SESSIONS - 1) / BENCH_CONN_SESSIONS ))
run_pgbench "connections" "$BENCH_DIR/connections" "$BENCH_CONN_SESSIONS" \
	"$WORK/tree/test/bench/read.sql" -t "$per_session"
check_counts "connections run" "$READ_PATH" "$PG_PROCESSED" 0
# The connection that asks /__sandbox/requests counts itself.
CONN_API=$(( $(jq -r '.connections' <<<"$LAST_REQUESTS") - 1 ))
CONN_CALLS=$PG_PROCESSED
printf '    %s calls from %s sessions opened %s TCP connections\n' "$CONN_CALLS" "$BENCH_CONN_SESSIONS" "$CONN_API" >&2

# --- CPU per read call in the calling backend ----------------------------------------

PERF_OK=0
if command -v perf >/dev/null && perf stat -e task-clock -x, -o /dev/null true >/dev/null 2>&1; then
	PERF_OK=1
fi
CLK_TCK=$(getconf CLK_TCK)
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
		perf report -i "$BENCH_DIR/profile/perf.data" --no-children --sort dso,symbol --stdio \
			--percent-limit 0.7 2>/dev/null | grep -vE '^#|^$' | grep -E '^ +[0-9]' | head -30 \
			>"$BENCH_DIR/profile/self.txt"
		perf report -i "$BENCH_DIR/profile/perf.data" --children --sort symbol --stdio \
			--percent-limit 2 -g none 2>/dev/null | grep -vE '^#|^$' | grep -E '^ +[0-9]' | head -40 \
			>"$BENCH_DIR/profile/children.txt"
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
check_counts "memory run" "$READ_PATH" $(( ${MEM_CALLS:-0} + 100 )) 0
printf '%s\n' "$mem_lines" | sed 's/^mem /    /' >&2

# --- 100 sessions connecting at once after a restart -------------------------------------

log "token: $BENCH_CONNECT_SESSIONS sessions connecting at once, each making one call, after a restart"
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

# --- instructions per call under callgrind ---------------------------------------------------

CG_IR=
if [ "$BENCH_CALLGRIND" = auto ]; then
	command -v valgrind >/dev/null && BENCH_CALLGRIND=1 || BENCH_CALLGRIND=0
fi
case "$BENCH_CALLGRIND" in 1 | yes | on) BENCH_CALLGRIND=1 ;; *) BENCH_CALLGRIND=0 ;; esac
if [ "$BENCH_CALLGRIND" = 1 ]; then
	log "callgrind: restarting the server under valgrind; instructions per look-up"
	cg="$BENCH_DIR/callgrind"
	as_user mkdir -p "$cg"
	pg_stop || die "PostgreSQL did not stop"
	as_user sh -c "exec valgrind --tool=callgrind --callgrind-out-file='$cg/callgrind.out.%p' \
		--dump-instr=no --collect-jumps=no postgres -D '$PGDATA' >'$cg/postgres.log' 2>&1" &
	cg_postmaster=$!
	for i in $(seq 1 240); do
		as_user pg_isready -q -h "$WORK" -p "$PGPORT" && break
		sleep 0.5
	done
	# Two sessions, CG_FEW and CG_MANY calls: the difference is the calls'
	# own cost, without connection start-up, the first call and exit.
	CG_FEW=50
	CG_MANY=1050
	cg_session() {   # calls -> prints the backend pid
		as_user "${PSQL[@]}" -c "SELECT pg_backend_pid(), count(enkash_get_card_account('$ACCOUNT')) FROM generate_series(1, $1)" \
			| cut -d'|' -f1
	}
	sandbox_reset
	cg_pid_few=$(cg_session 1)   # the first call of the server (token, connection)
	cg_pid_few=$(cg_session "$CG_FEW")
	cg_pid_many=$(cg_session "$CG_MANY")
	check_counts "callgrind run" "$READ_PATH" $((1 + CG_FEW + CG_MANY)) -
	as_user pg_ctl -D "$PGDATA" -m fast -w -t 300 stop >/dev/null
	wait "$cg_postmaster"
	cg_total() {   # pid
		[ -s "$cg/callgrind.out.$1" ] || return
		callgrind_annotate "$cg/callgrind.out.$1" 2>/dev/null | sed -nE 's/^ *([0-9,]+) .*PROGRAM TOTALS.*/\1/p' | tr -d ,
	}
	ir_few=$(cg_total "$cg_pid_few")
	ir_many=$(cg_total "$cg_pid_many")
	if [ -n "$ir_few" ] && [ -n "$ir_many" ]; then
		CG_IR=$(( (ir_many - ir_few) / (CG_MANY - CG_FEW) ))
		printf '    %s instructions per look-up in the backend (callgrind)\n' "$CG_IR" >&2
		callgrind_annotate --inclusive=yes "$cg/callgrind.out.$cg_pid_many" 2>/dev/null \
			| grep -E '^ *[0-9,]+ ' | head -45 >"$cg/inclusive.txt"
		callgrind_annotate --inclusive=no "$cg/callgrind.out.$cg_pid_many" 2>/dev/null \
			| grep -E '^ *[0-9,]+ ' | head -30 >"$cg/self.txt"
	else
		problem "callgrind produced no totals (pids $cg_pid_few, $cg_pid_many); see $cg"
	fi
fi

# --- the table -------------------------------------------------------------------------

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
		read) echo "enkash_get_card_account" ;;
		load) echo "enkash_load_balance" ;;
	esac
}

echo
echo "enkash benchmark: $(nproc) cores, PostgreSQL $PG_MAJOR, sandbox on loopback with no added latency"
echo "throughput: $BENCH_RUNS runs of ${BENCH_SECONDS}s per row; calls/s median (min-max); latency per call p50/p99 (median of runs)"
echo
printf '%-24s %8s  %-26s %9s %9s  %-24s %s\n' operation sessions "calls/s med (min-max)" "p50 us" "p99 us" ratio target
printf '%-24s %8s  %-26s %9s %9s  %-24s %s\n' ------------------------ -------- -------------------------- --------- --------- ------------------------ ----------
for s in $BENCH_SESSIONS; do
	for op in raw read load; do
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
			read)
				rawmed=$(stat_of median ${TPS[raw:$s]:-})
				ratio=$(awk -v a="$med" -v b="$rawmed" 'BEGIN { if (b > 0) printf "%.2f", a / b }')
				meaning="calls/s as a fraction of the raw client's"
				target=">= 0.80"
				shown="$ratio of raw"
				;;
			load)
				readmed=$(stat_of median ${TPS[read:$s]:-})
				ratio=$(awk -v a="$readmed" -v b="$med" 'BEGIN { if (b > 0) printf "%.2f", a / b }')
				meaning="cost of a load in units of a read (read calls/s / load calls/s)"
				target=$([ "$s" = 8 ] && echo "<= 1.25" || echo "(<= 1.25 at 8)")
				shown="${ratio}x a read"
				;;
		esac
		printf '%-24s %8s  %-26s %9s %9s  %-24s %s\n' "$(name_of "$op")" "$s" \
			"$(fmt "$med" %.0f) ($(fmt "$min" %.0f)-$(fmt "$max" %.0f))" \
			"$(fmt "$p50" %.0f)" "$(fmt "$p99" %.0f)" "$shown" "$target"
		csv "$(name_of "$op")" "$s" "$BENCH_RUNS" "$(fmt "$med" %.1f)" "$(fmt "$min" %.1f)" "$(fmt "$max" %.1f)" \
			"$(fmt "$p50" %.0f)" "$(fmt "$p99" %.0f)" "$ratio" "$meaning" "$target" "" "" "${NOTE[$k]:-}"
	done
done

echo
printf '%-58s %14s  %s\n' measurement value target
printf '%-58s %14s  %s\n' ---------------------------------------------------------- -------------- ----------
row() {   # label value unit target note
	printf '%-58s %14s  %s\n' "$1" "$2 $3" "$4"
	csv "$1" "" "" "" "" "" "" "" "" "" "$4" "$2" "$3" "${5:-}"
}
row "token calls, $BENCH_CONNECT_SESSIONS sessions connecting at once after a restart" "$TOKEN_CALLS" calls "1" \
	"enkash_token_calls() = $TOKEN_CALLS_PG; latency p50 $(fmt "$CONNECT_P50" %.0f) us p99 $(fmt "$CONNECT_P99" %.0f) us incl. connecting"
row "backend CPU per look-up ($CPU_METHOD)" "$CPU_US" "us" "<= 60" \
	"$BENCH_CPU_CALLS calls in one statement at $CPU_RATE calls/s; /proc utime+stime: $CPU_PROC_US us"
raw1cpu=$(stat_of median ${RAW_CPU[1]:-})
[ "$raw1cpu" != nan ] && row "raw client CPU per call (for comparison; getrusage)" "$(fmt "$raw1cpu" %.1f)" "us" "" \
	"libcurl + envelope + jansson + kernel; 1 client"
[ -n "$CG_IR" ] && row "backend instructions per look-up (callgrind)" "$CG_IR" "instr" "" \
	"difference of $CG_MANY and $CG_FEW calls in one statement"
row "TCP connections for $CONN_CALLS look-ups from $BENCH_CONN_SESSIONS sessions" "$CONN_API" "conns" "<= $BENCH_CONN_SESSIONS" \
	"sandbox /__sandbox/requests connections minus the control call"
row "backend RSS before $MEM_CALLS look-ups (after 100)" "${MEM_RSS0:-?}" "kB" "" "RssAnon ${MEM_ANON0:-?} kB"
row "backend RSS after $MEM_CALLS look-ups" "${MEM_RSS1:-?}" "kB" "flat" \
	"RssAnon ${MEM_ANON1:-?} kB; ${MEM_SECONDS:-?} s"
[ "${MEM_CALLS:-0}" -lt "$BENCH_MEMORY_CALLS" ] && echo "   (the memory run stopped after $MEM_CALLS of $BENCH_MEMORY_CALLS calls: BENCH_MEMORY_MAX_SECONDS)"

for k in "${!NOTE[@]}"; do
	echo "note ($k): ${NOTE[$k]}"
done

if [ -n "$PROFILE_TEXT" ]; then
	echo
	echo "profile of the calling backend, $BENCH_PROFILE_CALLS look-ups (perf record -e cpu-clock; self time, top symbols):"
	sed 's/^/  /' "$BENCH_DIR/profile/self.txt"
	echo
	echo "inclusive (children) time, enkash and libcurl functions:"
	grep -E 'enkash|curl_|Curl_|envelope|jsonb|json|EVP|pg_parse|palloc' "$BENCH_DIR/profile/children.txt" | head -25 | sed 's/^/  /'
fi
if [ -n "$CG_IR" ] && [ -s "$BENCH_DIR/callgrind/self.txt" ]; then
	echo
	echo "callgrind, $CG_MANY look-ups in one backend (self instructions, top functions):"
	head -20 "$BENCH_DIR/callgrind/self.txt" | sed 's/^/  /'
fi

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
