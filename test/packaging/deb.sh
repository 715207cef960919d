#!/usr/bin/env bash
# test/packaging/deb.sh: the Debian package as a DBA installs it.  Builds
# postgresql-15-enkash with `make deb`, installs it into the system's
# PostgreSQL 15 (dpkg -i, as root), starts a throwaway cluster from the
# system's binaries (not test/run.sh's private mirror, which never sees
# packaged files: it skips enkash.* when it links the system's directories)
# preloading enkash and pointed at the sandbox, creates the extension and
# makes one load, then removes the package (dpkg -r).  Enkash files that were
# there before (a system-wide `make install`) are put back, on failure too.
# Run by test/run.sh (needs WORK, SANDBOX_URL); ends "deb: N passed, M failed".
set -uo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

PKG="postgresql-$PG_MAJOR-enkash"
SYSBIN="/usr/lib/postgresql/$PG_MAJOR/bin"
D="$WORK/deb-test"
passed=0
failed=0
check() {   # description command...
	if "${@:2}" >>"$D/log" 2>&1; then
		passed=$((passed + 1))
	else
		failed=$((failed + 1))
		echo "not ok: $1" >&2
	fi
}
finish() {
	echo "deb: $passed passed, $failed failed"
	exit $((failed > 0))
}

if [ "$(id -u)" != 0 ] && ! sudo -n true 2>/dev/null; then
	echo "the package test needs root (dpkg -i): skipped" >&2
	finish
fi

as_user mkdir -p "$D/saved"
# One package test on the machine at a time (engineers share it).
exec 9>/tmp/enkash-deb-test.lock
flock 9
if dpkg-query -W -f='${Status}' "$PKG" 2>/dev/null | grep -q 'ok installed'; then
	echo "$PKG is installed on this machine: the package test would remove it, skipped" >&2
	finish
fi

# Enkash files outside any package, kept aside while the package is in.
PKGLIB=$("$SYSBIN/pg_config" --pkglibdir)
EXTDIR=$("$SYSBIN/pg_config" --sharedir)/extension
saved=()
for f in "$PKGLIB"/enkash.so "$EXTDIR"/enkash.control "$EXTDIR"/enkash--*.sql; do
	[ -e "$f" ] || continue
	as_root mv "$f" "$D/saved/$(echo "${f#/}" | tr / %)"
	saved+=("$f")
done

restore() {
	as_user pg_ctl -D "$D/pgdata" -m immediate stop >/dev/null 2>&1
	as_root dpkg -r "$PKG" >>"$D/log" 2>&1
	local f
	for f in "${saved[@]}"; do
		as_root mv "$D/saved/$(echo "${f#/}" | tr / %)" "$f"
	done
}
trap restore EXIT
trap 'exit 1' INT TERM

dpkg_retry() {   # dpkg arguments: waits out another engineer's apt or dpkg
	local i out
	for i in $(seq 1 20); do
		out=$(as_root dpkg "$@" 2>&1) && return 0
		printf '%s\n' "$out"
		printf '%s\n' "$out" | grep -q 'lock' || return 1
		sleep 3
	done
	return 1
}

ensure_packages debhelper dpkg-dev postgresql-server-dev-all
version=$(sed -n "s/^default_version *= *'\(.*\)'/\1/p" "$WORK/tree/enkash.control")
deb="$WORK/tree/build-deb/${PKG}_${version}_amd64.deb"
: >"$D/log"
check "make deb builds $deb" as_user make -s -C "$WORK/tree" deb
check "the package's version is enkash.control's $version" \
	test "$(dpkg-deb -f "$deb" Version 2>/dev/null)" = "$version"
check "dpkg -i installs it" dpkg_retry -i "$deb"
check "the library belongs to $PKG" sh -c "dpkg -S '$PKGLIB/enkash.so' | grep -q '^$PKG:'"
check "the control file belongs to $PKG" sh -c "dpkg -S '$EXTDIR/enkash.control' | grep -q '^$PKG:'"

# A cluster of the system's PostgreSQL, run by the unprivileged user.
port=$(free_port)
as_user "$SYSBIN/initdb" -D "$D/pgdata" -A trust -U postgres >>"$D/log" 2>&1
write_credentials "$D/credentials.conf"
{
	enkash_settings "$D/credentials.conf"
	echo "listen_addresses = ''"
	echo "unix_socket_directories = '$D'"
	echo "port = $port"
} | as_user sh -c "cat >> '$D/pgdata/postgresql.conf'"
check "the packaged library preloads" \
	as_user "$SYSBIN/pg_ctl" -D "$D/pgdata" -l "$D/postgres.log" -w start
psql_d() { as_user "$SYSBIN/psql" -X -A -t -q -v ON_ERROR_STOP=1 -h "$D" -p "$port" -U postgres -d postgres "$@"; }
check "CREATE EXTENSION enkash" psql_d -c "CREATE EXTENSION enkash"
check "the installed version is $version" \
	test "$(psql_d -c "SELECT extversion FROM pg_extension WHERE extname = 'enkash'")" = "$version"
key="DEB-$$-$RANDOM"
check "a load through the packaged extension succeeds" \
	psql_d -c "SELECT enkash_load_balance('CASANDBOX1', 'EKCSANDBOX1', 10, '$key')"
check "EnKash credited it once" sh -c \
	"curl -sS '$SANDBOX_URL/__sandbox/ledger?reference=$key' | grep -q '\"count\":1'"
as_user "$SYSBIN/pg_ctl" -D "$D/pgdata" -m fast stop >>"$D/log" 2>&1

check "dpkg -r removes it" dpkg_retry -r "$PKG"
check "no packaged file is left" sh -c "! dpkg-query -L '$PKG' 2>/dev/null | grep -q enkash"
check "the library is gone" test ! -e "$PKGLIB/enkash.so"
[ "$failed" -gt 0 ] && tail -30 "$D/log" "$D/postgres.log" >&2 2>/dev/null
finish
