#!/usr/bin/env bash
# test/bench/instructions.sh: instructions per call in the calling backend,
# under callgrind, in about two minutes: a look-up and a load, each as the
# difference of two sessions (few and many calls in one statement), with the
# top functions (inclusive) per call; beside the look-up one per statement,
# the bare SQL call (test/bench/bare: the raw client's exchange as a C
# function, a look-up's floor) and SELECT 1.  For iterating on the extension's CPU
# cost; `make bench` gives the whole picture.  Instruction counts do not
# drift with machine load, so runs are comparable on a busy machine.
#   INSTR_CALLS=500   look-ups in the "many" session (the "few" one makes 50)
#   INSTR_LOADS=100   loads in the "many" session (the "few" one makes 10)
#   INSTR_STATEMENTS=300  look-ups, one per statement, in the "many" session
#                     (the "few" one makes 20), and as many SELECT 1
#   INSTR_TOP=25      functions listed per operation
set -uo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

INSTR_CALLS=${INSTR_CALLS:-500}
INSTR_LOADS=${INSTR_LOADS:-100}
INSTR_STATEMENTS=${INSTR_STATEMENTS:-300}
INSTR_TOP=${INSTR_TOP:-25}
ACCOUNT=CASANDBOX1
CARD=EKCSANDBOX1

begin_throwaway_run valgrind
install_bare_call
cg="$WORK/callgrind"

init_throwaway_pg "enkash.database = 'postgres'"
as_user mkdir -p "$cg"
as_user sh -c "exec valgrind --tool=callgrind --callgrind-out-file='$cg/callgrind.out.%p' \
	--dump-instr=no --collect-jumps=no '$PG_BINDIR/postgres' -D '$PGDATA' >'$cg/postgres.log' 2>&1" &
postmaster=$!
for i in $(seq 1 240); do
	as_user pg_isready -q -h "$WORK" -p "$PGPORT" && break
	sleep 0.5
done
PSQL=(psql -X -q -A -t -v ON_ERROR_STOP=1 -h "$WORK" -p "$PGPORT" -U postgres -d postgres)
as_user "${PSQL[@]}" -c "CREATE EXTENSION enkash" || die "CREATE EXTENSION failed"
as_user "${PSQL[@]}" -c "$BARE_CALL_SQL" || die "could not create bench_bare_call"

session() {   # SQL with :n for the count, n -> prints the backend pid
	as_user "${PSQL[@]}" -c "SELECT pg_backend_pid(), count(${1//:n/$2}) FROM generate_series(1, $2) i" \
		| cut -d'|' -f1
}
read_sql="enkash_get_card_account('$ACCOUNT')"
statements() {   # SQL, n -> prints the backend pid; n statements, output read and dropped
	{ echo "SELECT pg_backend_pid();"; for _ in $(seq 1 "$2"); do echo "SELECT $1;"; done; } |
		as_user "${PSQL[@]}" | sed -n 1p
}
load_sql="enkash_load_balance('$ACCOUNT', '$CARD', 1, 'I-' || :n || '-' || i)"
session "$read_sql" 1 >/dev/null	# the server's first call: token, connection
r_few=$(session "$read_sql" 50)
r_many=$(session "$read_sql" "$INSTR_CALLS")
s_few=$(statements "$read_sql" 20)
s_many=$(statements "$read_sql" "$INSTR_STATEMENTS")
bare_sql=$(bare_call /cardAccount/get "$BARE_LOOKUP_BODY")
b_few=$(statements "$bare_sql" 20)
b_many=$(statements "$bare_sql" "$INSTR_STATEMENTS")
one_few=$(statements 1 20)
one_many=$(statements 1 "$INSTR_STATEMENTS")
l_few=$(session "$load_sql" 10)
l_many=$(session "$load_sql" "$INSTR_LOADS")
as_user pg_ctl -D "$PGDATA" -m fast -w -t 300 stop >/dev/null
wait "$postmaster"

total() { callgrind_annotate --auto=no "$cg/callgrind.out.$1" 2>/dev/null |
	sed -nE 's/^ *([0-9,]+) .*PROGRAM TOTALS.*/\1/p' | tr -d ,; }
functions() {   # pid -> "Ir<TAB>function", inclusive
	callgrind_annotate --auto=no --threshold=100 --inclusive=yes "$cg/callgrind.out.$1" 2>/dev/null |
		awk '/^ *[0-9,]+ \(/ && !/PROGRAM TOTALS/ {
			ir = $1; gsub(",", "", ir); line = $0
			sub(/^ *[0-9,]+ \([^)]*\) +/, "", line); sub(/ \[[^]]*\]$/, "", line)
			sub(/^.*:/, "", line); print ir "\t" line }'
}
report() {   # label pid_few pid_many calls_between
	local a b
	a=$(total "$2")
	b=$(total "$3")
	[ -n "$a" ] && [ -n "$b" ] || { echo "$1: no callgrind totals (see $cg)"; return; }
	echo "$1: $(( (b - a) / $4 )) instructions per call"
	# Below the call itself: functions under 99.5% of it, unnamed ones left out.
	awk -F'\t' -v d="$4" -v all=$(( (b - a) / $4 )) 'NR == FNR { few[$2] += $1; next } { many[$2] += $1 }
		END { for (k in many) { v = (many[k] - few[k]) / d
			if (v >= 500 && v < 0.995 * all && k !~ /^0x/) printf "%9.0f  %s\n", v, k } }' \
		<(functions "$2") <(functions "$3") | sort -rn | head -"$INSTR_TOP"
}
report "look-up" "$r_few" "$r_many" $((INSTR_CALLS - 50))
report "look-up, one per statement" "$s_few" "$s_many" $((INSTR_STATEMENTS - 20))
report "bare SQL look-up, one per statement" "$b_few" "$b_many" $((INSTR_STATEMENTS - 20))
report "SELECT 1, one per statement" "$one_few" "$one_many" $((INSTR_STATEMENTS - 20))
report "load" "$l_few" "$l_many" $((INSTR_LOADS - 10))
