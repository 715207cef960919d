#!/usr/bin/env bash
# test/demo.sh: the enkash demo.  Builds and installs the extension, starts a
# throwaway PostgreSQL and the EnKash sandbox on loopback, runs a small payroll
# through SQL (test/demo.sql), shows what EnKash saw, and tears it all down.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

begin_throwaway_run

log "starting a throwaway PostgreSQL"
init_throwaway_pg
as_user pg_ctl -D "$PGDATA" -l "$WORK/postgres.log" -w start >/dev/null

as_user psql -X -h "$WORK" -p "$PGPORT" -U postgres -d postgres \
	-v ON_ERROR_STOP=1 -f "$WORK/tree/test/demo.sql"

echo
echo "== 10. What EnKash (the sandbox) recorded: one credit per reference"
curl -sS "$SANDBOX_URL/__sandbox/ledger"
echo
