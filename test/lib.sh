# test/lib.sh: shared by test/run.sh, test/demo.sh and test/bench: installs
# what is missing, builds in a private copy owned by an unprivileged user
# (PostgreSQL refuses to run as root), starts the sandbox, cleans up.
# Source it; it defines functions and sets no traps of its own.

ENKASH_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# The PostgreSQL under test: PG_MAJOR; PG_SYSBIN its bin directory (found
# by pg_sysbin when unset).  Debian 12 ships 15 as packages; other versions
# are built from source by test/pg-build.sh.
DEBIAN_PG=15
PG_MAJOR=${PG_MAJOR:-$DEBIAN_PG}
PG_SYSBIN=${PG_SYSBIN:-}
APT_PACKAGES="build-essential pkg-config postgresql-$DEBIAN_PG postgresql-server-dev-$DEBIAN_PG
  libcurl4-openssl-dev libssl-dev libmicrohttpd-dev libjansson-dev curl openssl jq
  perl libipc-run-perl util-linux postgresql-$DEBIAN_PG-cron nginx-light
  clang libclang-rt-14-dev"

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# Runs a command as root (directly, or through sudo for a developer).
as_root() {
	if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

# Installs the Debian packages that are not there yet.
ensure_packages() {
	local missing=() p
	for p in $APT_PACKAGES "$@"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
	done
	[ ${#missing[@]} -eq 0 ] && return 0
	log "installing ${missing[*]}"
	as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
	as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
		"${missing[@]}" >/dev/null || die "apt-get install failed"
}

# The unprivileged user that owns the work copy and runs the servers.
RUN_USER=$(id -un)
[ "$(id -u)" = 0 ] && RUN_USER=postgres

as_user() {
	if [ "$(id -un)" = "$RUN_USER" ]; then
		env HOME="$WORK" "$@"
	else
		runuser -u "$RUN_USER" -- env HOME="$WORK" PATH="$PATH" "$@"
	fi
}

# The bin directory of PostgreSQL VERSION: Debian's for 15, else the one
# test/pg-build.sh built (and builds when missing).  Exits 2 (after its
# "skipped" line) when that version's source cannot be had.
pg_sysbin() {   # version
	local prefix
	if [ "$1" = "$DEBIAN_PG" ]; then
		echo "/usr/lib/postgresql/$1/bin"
		return 0
	fi
	prefix=$(bash "$ENKASH_ROOT/test/pg-build.sh" "$1") || return $?
	echo "$prefix/bin"
}

# Copies the tree to a fresh directory owned by RUN_USER, so that a
# root-owned (or unreadable) clone works, and builds there.
prepare_work_copy() {
	if [ -z "$PG_SYSBIN" ]; then
		PG_SYSBIN=$(pg_sysbin "$PG_MAJOR") || die "PostgreSQL $PG_MAJOR is not available"
	fi
	export PG_MAJOR PG_SYSBIN
	export PATH="$PG_SYSBIN:$PATH"
	WORK=$(mktemp -d /tmp/enkash.XXXXXX)
	chmod 755 "$WORK"
	mkdir "$WORK/tree"
	tar -C "$ENKASH_ROOT" --exclude=.git --exclude='*.o' --exclude='*.so' \
		--exclude='*.bc' --exclude=tmp_check --exclude=results \
		--exclude=test/tmp -cf - . | tar -C "$WORK/tree" -xf -
	# a bench's variant of the code (test/bench/hollow-ledger.patch)
	if [ -n "${WORK_PATCH:-}" ]; then
		patch -s -p1 -d "$WORK/tree" <"$WORK_PATCH" || die "$WORK_PATCH no longer applies"
	fi
	chown -R "$RUN_USER" "$WORK"
	export WORK
}

# Builds the extension and the sandbox in the work copy and installs the
# extension into a private mirror of the PostgreSQL installation: copies of
# postgres, pg_ctl and initdb in $WORK/pginst/<bindir>, everything else a
# symlink to the system's.  PostgreSQL finds its lib and share directories
# relative to its binary, so servers started from the mirror's bindir (first
# on PATH afterwards; PG_BINDIR names it) load the enkash built here, and
# runs from other trees at the same time neither disturb this one nor are
# disturbed by it.  ENKASH_INSTALL=system installs system-wide instead.
build_and_install() {
	local sysbin=$PG_SYSBIN
	log "building the extension and the sandbox"
	as_user make -s -C "$WORK/tree" PG_CONFIG="$sysbin/pg_config" >/dev/null \
		|| die "build failed"
	as_user make -s -C "$WORK/tree/test/sandbox" >/dev/null || die "sandbox build failed"
	PG_BINDIR=$sysbin
	if [ "${ENKASH_INSTALL:-private}" = system ]; then
		log "installing the extension into PostgreSQL $PG_MAJOR"
		as_root make -s -C "$WORK/tree" install PG_CONFIG="$sysbin/pg_config" >/dev/null \
			|| die "make install failed"
		export PG_BINDIR
		return 0
	fi
	log "installing the extension into a private mirror of PostgreSQL $PG_MAJOR"
	install_mirror "$WORK/tree" "$WORK/pginst"
	PG_BINDIR="$WORK/pginst$sysbin"
	export PG_BINDIR PATH="$PG_BINDIR:$PATH"
}

# The mirror described above, in inst, with the enkash built in tree.
install_mirror() {   # tree inst
	local sysbin=$PG_SYSBIN tree=$1 inst=$2 pkglib sharedir f
	pkglib=$("$sysbin/pg_config" --pkglibdir)
	sharedir=$("$sysbin/pg_config" --sharedir)
	as_user mkdir -p "$inst$sysbin" "$inst$pkglib" "$inst$sharedir/extension"
	for f in "$sysbin"/*; do
		case "${f##*/}" in
		postgres | pg_ctl | initdb) as_user cp "$f" "$inst$sysbin/" ;;
		*) as_user ln -s "$f" "$inst$sysbin/" ;;
		esac
	done
	for f in "$pkglib"/* "$sharedir"/* "$sharedir"/extension/*; do
		case "$f" in
		"$sharedir/extension" | */enkash.* | */enkash--*) continue ;;
		esac
		as_user ln -s "$f" "$inst${f%/*}/"
	done
	as_user make -s -C "$tree" install DESTDIR="$inst" PG_CONFIG="$sysbin/pg_config" >/dev/null \
		|| die "make install DESTDIR=$inst failed"
}

# The benchmarks' bare SQL call (test/bench/bare), built in the work copy
# and installed where build_and_install put the extension; BARE_CALL_SQL
# creates its function.
install_bare_call() {
	local bare="$WORK/tree/test/bench/bare"
	as_user make -s -C "$bare" PG_CONFIG="$PG_SYSBIN/pg_config" >/dev/null || die "test/bench/bare build failed"
	if [ "${ENKASH_INSTALL:-private}" = system ]; then
		as_root make -s -C "$bare" install PG_CONFIG="$PG_SYSBIN/pg_config" >/dev/null
	else
		as_user make -s -C "$bare" install DESTDIR="$WORK/pginst" PG_CONFIG="$PG_SYSBIN/pg_config" >/dev/null
	fi || die "test/bench/bare install failed"
}
BARE_CALL_SQL="CREATE FUNCTION bench_bare_call(text, text, text) RETURNS jsonb
	AS 'enkash_bench_bare' LANGUAGE C STRICT"
# The bare call of an API path with a request (an SQL text expression).
bare_call() {   # path request-sql
	echo "bench_bare_call('$SANDBOX_URL/oauth/token', '$SANDBOX_URL/api/v0/partner/enKashCard$1', $2)"
}
# The look-up's request, as enkash_get_card_account sends it.
BARE_LOOKUP_BODY="'{\"cardAccountId\":\"CASANDBOX1\",\"companyId\":\"CEKSANDBOX1\"}'"

# A second private mirror whose enkash has the test-only stop points
# (src/stoppoint.h), for the kill matrix alone: ENKASH_STOP_INSTALL names
# its installation directory (PostgreSQL::Test::Cluster's install_path).
install_stop_points() {
	local sysbin=$PG_SYSBIN
	log "building and installing a copy of the extension with stop points"
	as_user mkdir "$WORK/tree-stop"
	as_user tar -C "$WORK/tree" --exclude='*.o' --exclude='*.so' --exclude=test -cf - . \
		| as_user tar -C "$WORK/tree-stop" -xf -
	as_user make -s -C "$WORK/tree-stop" ENKASH_STOP_POINTS=1 PG_CONFIG="$sysbin/pg_config" >/dev/null \
		|| die "build with stop points failed"
	install_mirror "$WORK/tree-stop" "$WORK/pginst-stop"
	ENKASH_STOP_INSTALL="$WORK/pginst-stop${sysbin%/bin}"
	export ENKASH_STOP_INSTALL
}

# enkash 0.1 as released (the commit below), built from this clone's git
# history into a third private mirror, for the upgrade test:
# ENKASH_OLD_INSTALL names its installation directory.  Without git or that
# commit (a tarball of the tree) it stays empty and the test says it skipped.
ENKASH_V01_COMMIT=c1a489fcd3784cabdc0ea8bd3c510fc49ecf27b1
install_old_version() {
	local sysbin=$PG_SYSBIN
	ENKASH_OLD_INSTALL=
	export ENKASH_OLD_INSTALL
	git -c safe.directory="$ENKASH_ROOT" -C "$ENKASH_ROOT" cat-file -e "$ENKASH_V01_COMMIT^{commit}" 2>/dev/null || {
		log "enkash 0.1 (commit $ENKASH_V01_COMMIT) is not in this clone's history: the upgrade test skips"
		return 0
	}
	log "building and installing enkash 0.1 for the upgrade test"
	as_user mkdir "$WORK/tree-0.1"
	git -c safe.directory="$ENKASH_ROOT" -C "$ENKASH_ROOT" archive "$ENKASH_V01_COMMIT" | as_user tar -C "$WORK/tree-0.1" -xf - \
		|| die "git archive $ENKASH_V01_COMMIT failed"
	if ! as_user make -s -C "$WORK/tree-0.1" PG_CONFIG="$sysbin/pg_config" >/dev/null 2>&1; then
		# 0.1 was written for PostgreSQL 15 alone
		[ "$PG_MAJOR" = "$DEBIAN_PG" ] && die "build of enkash 0.1 failed"
		log "enkash 0.1 does not build against PostgreSQL $PG_MAJOR: the upgrade test skips"
		return 0
	fi
	install_mirror "$WORK/tree-0.1" "$WORK/pginst-0.1"
	ENKASH_OLD_INSTALL="$WORK/pginst-0.1${sysbin%/bin}"
}

# Test credentials, matching the sandbox's defaults.  These are not secrets.
write_credentials() {   # file [encryption_secret]
	as_user sh -c "umask 077; cat > '$1'" <<EOF2
# enkash credentials (sandbox test values)
client_id = sandbox-client
client_secret = sandbox-secret-1
username = 9999999999
password = sandbox-password
${2:+encryption_secret = $2}
EOF2
}

SANDBOX_PID=
start_sandbox() {   # extra sandbox flags...
	local portfile="$WORK/sandbox.port" i
	rm -f "$portfile"
	as_user "$WORK/tree/test/sandbox/enkash-sandbox" --port 0 --port-file "$portfile" \
		--quiet "$@" >"$WORK/sandbox.log" 2>&1 &
	SANDBOX_PID=$!
	for i in $(seq 1 100); do
		[ -s "$portfile" ] && break
		sleep 0.1
	done
	[ -s "$portfile" ] || die "the sandbox did not start: $(cat "$WORK/sandbox.log")"
	SANDBOX_PORT=$(cat "$portfile")
	SANDBOX_URL="http://127.0.0.1:$SANDBOX_PORT"
	export SANDBOX_PORT SANDBOX_URL
}

stop_sandbox() {
	[ -n "$SANDBOX_PID" ] || return 0
	pkill -TERM -P "$SANDBOX_PID" 2>/dev/null
	kill "$SANDBOX_PID" 2>/dev/null
	wait "$SANDBOX_PID" 2>/dev/null || true	# killed on purpose: not a failure
	SANDBOX_PID=
}

# postgresql.conf lines that point the extension at the sandbox.
enkash_settings() {   # credentials_file
	cat <<EOF2
shared_preload_libraries = 'enkash'
enkash.base_url = '$SANDBOX_URL/api/v0/partner/enKashCard'
enkash.token_url = '$SANDBOX_URL/oauth/token'
enkash.partner_id = 'CRSANDBOX1'
enkash.company_id = 'CEKSANDBOX1'
enkash.credentials_file = '$1'
EOF2
}

# The start of a script around a throwaway server: packages, the work copy,
# the build and its private install, the sandbox; on exit the server (if one
# was started in $PGDATA) is stopped and everything cleaned up.
begin_throwaway_run() {   # [extra packages...]
	ensure_packages "$@"
	prepare_work_copy
	PGDATA="$WORK/pgdata"
	trap end_throwaway_run EXIT
	build_and_install
	start_sandbox
}

end_throwaway_run() {
	as_user pg_ctl -D "$PGDATA" -m fast stop >/dev/null 2>&1 || true
	cleanup_work
}

# Creates a throwaway PostgreSQL in $WORK/pgdata (not started) on a free
# loopback port (PGPORT), socket in $WORK, preloading enkash and pointed at
# the sandbox with test credentials; arguments are more postgresql.conf lines.
init_throwaway_pg() {   # [conf_line...]
	PGDATA="$WORK/pgdata"
	PGPORT=$(free_port)
	as_user initdb -D "$PGDATA" -A trust -U postgres >/dev/null || die "initdb failed"
	write_credentials "$WORK/credentials.conf"
	{
		enkash_settings "$WORK/credentials.conf"
		echo "listen_addresses = ''"
		echo "unix_socket_directories = '$WORK'"
		echo "port = $PGPORT"
		[ $# -eq 0 ] || printf '%s\n' "$@"
	} | as_user sh -c "cat >> '$PGDATA/postgresql.conf'"
}

# A free TCP port on loopback.
free_port() {
	local p
	for p in $(shuf -i 20000-60000 -n 50); do
		(exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return 0; }
	done
	die "no free port found"
}

cleanup_work() {
	stop_sandbox
	[ -n "${WORK:-}" ] && [ -z "${ENKASH_KEEP:-}" ] && rm -rf "$WORK"
}
