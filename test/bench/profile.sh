#!/usr/bin/env bash
# test/bench/profile.sh: where the CPU of synchronous calls goes, by process,
# while pgbench makes them: the enkash worker's transactions per call (how
# well it batches), CPU per call of each kind of process from /proc, and a
# perf profile of one of them.  For iterating on the money path's cost:
# `make bench` gives the whole picture, this the why, in about a minute.
#   PROFILE_OP=load        load (new key each call) or read
#   PROFILE_SESSIONS=8     pgbench clients
#   PROFILE_SECONDS=8      length of the pgbench run
#   PROFILE_WHO=worker     perf target: worker (the enkash worker), backends
#                          (the pgbench sessions' backends), none
#   PROFILE_TOP=30         lines of the perf report
#   PROFILE_LATENCY_MS=0   latency the sandbox adds to every call
set -uo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

PROFILE_OP=${PROFILE_OP:-load}
PROFILE_SESSIONS=${PROFILE_SESSIONS:-8}
PROFILE_SECONDS=${PROFILE_SECONDS:-8}
PROFILE_WHO=${PROFILE_WHO:-worker}
PROFILE_TOP=${PROFILE_TOP:-30}
PROFILE_LATENCY_MS=${PROFILE_LATENCY_MS:-0}

begin_throwaway_run linux-perf
[ -n "${ENKASH_KEEP:-}" ] && log "work directory (kept): $WORK"
init_throwaway_pg "enkash.database = 'postgres'" "max_connections = 50"
as_user pg_ctl -D "$PGDATA" -l "$WORK/postgres.log" -w start >/dev/null || die "PostgreSQL did not start"
PSQL=(psql -X -q -A -t -v ON_ERROR_STOP=1 -h "$WORK" -p "$PGPORT" -U postgres -d postgres)
sql() { as_user "${PSQL[@]}" -c "$1"; }
sql "CREATE EXTENSION enkash" >/dev/null || die "CREATE EXTENSION failed"
if [ "$PROFILE_LATENCY_MS" -gt 0 ]; then
	curl -sSf -X POST -H 'Content-Type: application/json' -d "{\"latency_ms\": $PROFILE_LATENCY_MS}" \
		"$SANDBOX_URL/__sandbox/faults" >/dev/null || die "could not set the sandbox's latency"
fi
sql "SELECT enkash_get_card_account('CASANDBOX1')" >/dev/null || die "a look-up failed"   # token, connection

ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo 0; }
reaped_ticks() { awk '{ print $16 + $17 }' "/proc/$1/stat" 2>/dev/null || echo 0; }
# This run's processes only: other runs on the machine have their own.
postmaster=$(head -1 "$PGDATA/postmaster.pid")
worker=$(pgrep -P "$postmaster" -f '^postgres: enkash worker' | head -1)
sandbox=$SANDBOX_PID
while [ -n "$sandbox" ] && [ "$(cat "/proc/$sandbox/comm" 2>/dev/null)" != enkash-sandbox ]; do
	sandbox=$(pgrep -P "$sandbox" | head -1)
done
commits() { sql "SELECT xact_commit FROM pg_stat_database WHERE datname = 'postgres'"; }

script="$WORK/tree/test/bench/$PROFILE_OP.sql"
[ -f "$script" ] || die "no pgbench script for $PROFILE_OP"
c0=$(commits)
w0=$(ticks "$worker") s0=$(ticks "$sandbox") b0=$(reaped_ticks "$postmaster")
as_user pgbench -n -h "$WORK" -p "$PGPORT" -U postgres -f "$script" -D "run=$(date +%s)" \
	-c "$PROFILE_SESSIONS" -j "$PROFILE_SESSIONS" -T "$PROFILE_SECONDS" postgres >"$WORK/pgbench.out" 2>&1 &
bench=$!
sleep 1
case "$PROFILE_WHO" in
	worker) targets=$worker ;;
	backends) targets=$(pgrep -P "$postmaster" -f '^postgres: postgres postgres \[local\]' | paste -sd,) ;;
	*) targets= ;;
esac
if [ -n "$targets" ]; then
	perf record -q -g -o "$WORK/perf.data" -p "$targets" -- sleep $((PROFILE_SECONDS - 2)) >/dev/null 2>&1
fi
wait "$bench"
sleep 0.5   # the backends exit and are reaped: their CPU is the postmaster's children's
calls=$(sed -nE 's/^number of transactions actually processed: ([0-9]+).*/\1/p' "$WORK/pgbench.out")
w1=$(ticks "$worker") s1=$(ticks "$sandbox") b1=$(reaped_ticks "$postmaster")
c1=$(commits)
hz=$(getconf CLK_TCK)
per() { awk -v t="$1" -v n="$2" -v hz="$hz" 'BEGIN { if (n > 0) printf "%.0f", t * 1e6 / hz / n; else print "-" }'; }

echo "$PROFILE_OP, $PROFILE_SESSIONS sessions, ${PROFILE_SECONDS}s, sandbox latency ${PROFILE_LATENCY_MS} ms: $calls calls, $(sed -nE 's/^tps = ([0-9.]+) \(without.*/\1/p' "$WORK/pgbench.out") calls/s; load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "time per call: $(sed -nE 's/^latency average = ([0-9.]+) ms/\1/p' "$WORK/pgbench.out") ms in pgbench, of which the HTTP exchange $(sql "SELECT round(avg(latency_ms)::numeric, 3) FROM enkash.audit_log WHERE outcome NOT IN ('sent') AND endpoint <> 'token'") ms (audit_log.latency_ms, average)"
echo "worker transactions per call: $(awk -v c="$((c1 - c0 - calls))" -v n="$calls" 'BEGIN { if (n > 0) printf "%.2f", c / n }') (commits other than pgbench's)"
echo "CPU per call, us: backends $(per $((b1 - b0)) "$calls"), enkash worker $(per $((w1 - w0)) "$calls"), sandbox $(per $((s1 - s0)) "$calls")"
if [ -s "$WORK/perf.data" ]; then
	echo
	echo "perf, $PROFILE_WHO: inclusive share (children), top $PROFILE_TOP"
	perf report -i "$WORK/perf.data" --children --no-demangle --stdio --sort sym -g none 2>/dev/null |
		grep -E '^ +[0-9]' | head -"$PROFILE_TOP"
fi
