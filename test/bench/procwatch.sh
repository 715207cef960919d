#!/bin/sh
# test/bench/procwatch.sh: run from psql (\setenv BENCH_PID :pid, then
# \! sh procwatch.sh ACTION DIR) to measure the psql session's own backend
# while it makes calls:
#   start DIR    notes /proc/PID/stat, the time, and attaches `perf stat -e
#                task-clock` (when BENCH_PERF=1)
#   stop DIR     the same at the end; perf writes DIR/perf-stat.txt
#   record DIR   attaches `perf record` (call graphs) instead
#   unrecord DIR stops it; the profile is DIR/perf.data
# psql's \! does no variable interpolation, hence the environment variable.
set -u
action=$1
dir=$2
pid=${BENCH_PID:?BENCH_PID not set}

stop_perf() {   # pidfile
	[ -s "$1" ] || return 0
	p=$(cat "$1")
	kill -INT "$p" 2>/dev/null
	i=0
	while kill -0 "$p" 2>/dev/null && [ $i -lt 100 ]; do
		sleep 0.1
		i=$((i + 1))
	done
	rm -f "$1"
}

start_perf() {   # pidfile perf-args...
	pidfile=$1
	shift
	perf "$@" -p "$pid" </dev/null >"$dir/perf.out" 2>&1 &
	echo $! >"$pidfile"
	# perf needs a moment to attach; the counts start when it has.
	sleep 0.5
}

case "$action" in
	start)
		[ "${BENCH_PERF:-0}" = 1 ] && start_perf "$dir/perf-stat.pid" stat -e task-clock -x, -o "$dir/perf-stat.txt"
		cat "/proc/$pid/stat" >"$dir/stat.start"
		date +%s.%N >"$dir/time.start"
		;;
	stop)
		date +%s.%N >"$dir/time.stop"
		cat "/proc/$pid/stat" >"$dir/stat.stop"
		stop_perf "$dir/perf-stat.pid"
		;;
	record)
		start_perf "$dir/perf-record.pid" record -e cpu-clock -F 4000 -g -o "$dir/perf.data"
		;;
	unrecord)
		stop_perf "$dir/perf-record.pid"
		;;
	*)
		echo "procwatch.sh: unknown action $action" >&2
		exit 2
		;;
esac
