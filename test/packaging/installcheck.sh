#!/usr/bin/env bash
# test/packaging/installcheck.sh: `make installcheck` as a user runs it,
# against a running server set up as the README's Install says (preloading
# enkash, settings and credentials file, enkash.database left at postgres),
# here a throwaway one from test/run.sh's install pointed at the sandbox.
# Run by test/run.sh (needs WORK, PG_BINDIR, SANDBOX_URL); ends
# "installcheck: N passed, M failed".
set -uo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

D="$WORK/installcheck-test"
as_user mkdir -p "$D"
port=$(free_port)
as_user "$PG_BINDIR/initdb" -D "$D/pgdata" -A trust -U postgres >"$D/log" 2>&1
write_credentials "$D/credentials.conf"
{
	enkash_settings "$D/credentials.conf"
	echo "listen_addresses = ''"
	echo "unix_socket_directories = '$D'"
	echo "port = $port"
} | as_user sh -c "cat >> '$D/pgdata/postgresql.conf'"
trap 'as_user "$PG_BINDIR/pg_ctl" -D "$D/pgdata" -m immediate stop >/dev/null 2>&1' EXIT
as_user "$PG_BINDIR/pg_ctl" -D "$D/pgdata" -l "$D/postgres.log" -w start >>"$D/log" 2>&1 || {
	tail -20 "$D/postgres.log" >&2
	echo "installcheck: 0 passed, 1 failed"
	exit 1
}
# The workers start in enkash.database once the server is up.
for i in $(seq 1 50); do
	n=$(as_user "$PG_BINDIR/psql" -X -A -t -h "$D" -p "$port" -U postgres -d postgres -c \
		"SELECT count(DISTINCT backend_type) FROM pg_stat_activity WHERE backend_type LIKE 'enkash %'")
	[ "$n" = 3 ] && break
	sleep 0.2
done

# REGRESS_CONF= : as in a clean clone, whatever test/run.sh wrote in its copy.
as_user env PGHOST="$D" PGPORT="$port" PGUSER=postgres \
	make -C "$WORK/tree" installcheck REGRESS_CONF= PG_CONFIG="/usr/lib/postgresql/$PG_MAJOR/bin/pg_config" \
	EXTRA_REGRESS_OPTS="--bindir=$PG_BINDIR --outputdir=$D/out" >"$D/regress.log" 2>&1
rc=$?
grep -E '^(ok|not ok|test )' "$D/regress.log" >&2
ok=$(grep -cE '^ok |\.\.\. ok' "$D/regress.log")
bad=$(grep -cE '^not ok |\.\.\. (FAILED|failed)' "$D/regress.log")
if [ "$rc" -ne 0 ]; then
	[ "$bad" -eq 0 ] && bad=1
	tail -20 "$D/regress.log" >&2
	[ -f "$D/out/regression.diffs" ] && head -80 "$D/out/regression.diffs" >&2
fi
echo "installcheck: $ok passed, $bad failed"
[ "$bad" -eq 0 ]
