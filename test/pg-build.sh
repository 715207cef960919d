#!/bin/bash
# test/pg-build.sh VERSION: builds PostgreSQL VERSION (17, 18) from the
# official source tarball in Debian's archive and installs it under
# /var/cache/enkash-pg/<flavour> (ENKASH_PG_CACHE overrides the directory),
# where a later run finds it and does not build again.
#
#   18  -> /var/cache/enkash-pg/18-cassert: --enable-cassert --enable-debug and
#          -DUSE_VALGRIND, as PostgreSQL's own developers test (assertions on;
#          valgrind sees palloc'd memory, for make memcheck)
#   17  -> /var/cache/enkash-pg/17: a plain build
#
# The source comes through a private apt configuration (deb-src lines for
# trixie and sid, the archive the system already uses), so the system's own
# package lists stay as they are; the tarball is checked against the .dsc's
# SHA-256 before it is unpacked; when the archive lists a version its pool
# no longer serves, a pinned release is taken from the pool instead and
# checked against its pinned SHA-256 (pinned_release).  Besides the server: the contrib modules the
# tests use (dblink, pg_walinspect; pg_cron is not part of PostgreSQL's
# source, and the tests that need it skip when it is absent), the TAP test modules
# (PostgreSQL::Test::Cluster) and pg_regress/pg_isolation_regress.
#
# Prints the installation directory on stdout when it is there.  When the
# source cannot be had (neither the listed version nor a pinned one), prints
# one "skipped" line on stderr and exits 2; any other failure exits 1.
# Runs as root (or through sudo); the build itself runs as an unprivileged
# user when started as root.
set -euo pipefail

VERSION=${1:?usage: test/pg-build.sh VERSION}
CACHE=${ENKASH_PG_CACHE:-/var/cache/enkash-pg}
case "$VERSION" in
18) FLAVOUR=18-cassert
    CONFIGURE_EXTRA=(--enable-cassert --enable-debug)
    CPPFLAGS_EXTRA="-DUSE_VALGRIND" ;;
17) FLAVOUR=17
    CONFIGURE_EXTRA=()
    CPPFLAGS_EXTRA="" ;;
*) echo "test/pg-build.sh: version $VERSION is not built here (15 comes from Debian's packages)" >&2
   exit 1 ;;
esac
PREFIX="$CACHE/$FLAVOUR"
CONTRIB="dblink pg_walinspect"

say() { printf '==> %s\n' "$*" >&2; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

if [ -e "$PREFIX/.enkash-built" ]; then
	echo "$PREFIX"
	exit 0
fi

as_root mkdir -p "$CACHE"
# One build of a version at a time, across concurrent runs.
{ exec 9>"$CACHE/.lock-$FLAVOUR"; } 2>/dev/null || exec 9>/dev/null
flock 9 2>/dev/null || true
if [ -e "$PREFIX/.enkash-built" ]; then
	echo "$PREFIX"
	exit 0
fi

# A version whose source could not be had is tried again after a day, not
# on every run (reading the archive's source lists takes a while); removing
# the marker tries it now.
UNAVAILABLE="$CACHE/.unavailable-$VERSION"
skip() {
	printf 'skipped: PostgreSQL %s: %s\n' "$VERSION" "$*" >&2
	printf '%s\n' "$*" | as_root tee "$UNAVAILABLE" >/dev/null
	exit 2
}
if [ -n "$(find "$UNAVAILABLE" -mmin -1440 2>/dev/null)" ]; then
	printf 'skipped: PostgreSQL %s: %s (tried %s; tried again a day later, or now if %s is removed)\n' \
		"$VERSION" "$(head -1 "$UNAVAILABLE")" "$(date -u -r "$UNAVAILABLE" '+%F %R UTC')" "$UNAVAILABLE" >&2
	exit 2
fi

missing=()
for p in bison flex build-essential libssl-dev libreadline-dev zlib1g-dev \
	dpkg-dev libipc-run-perl curl; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	say "installing ${missing[*]}"
	as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
	as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
		--no-install-recommends "${missing[@]}" >/dev/null
fi

BUILD_USER=$(id -un)
[ "$(id -u)" = 0 ] && BUILD_USER=postgres
id "$BUILD_USER" >/dev/null 2>&1 || as_root useradd --system --no-create-home "$BUILD_USER"
as_build() {
	if [ "$(id -un)" = "$BUILD_USER" ]; then "$@"; else runuser -u "$BUILD_USER" -- "$@"; fi
}

D=$(mktemp -d /tmp/enkash-pg-build.XXXXXX)
as_root rm -f "$UNAVAILABLE"
trap 'as_root rm -rf "$D"' EXIT
chmod 755 "$D"
mkdir -p "$D/lists/partial" "$D/cache/archives/partial" "$D/src"

# The archive apt already uses, read from the system's own sources.
URI=""
if [ -r /etc/apt/sources.list.d/debian.sources ]; then
	URI=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources)
fi
if [ -z "$URI" ] && [ -r /etc/apt/sources.list ]; then
	URI=$(awk '$1 == "deb" {for (i = 2; i <= NF; i++) if ($i ~ /^https?:/) {print $i; exit}}' \
		/etc/apt/sources.list)
fi
URI=${URI:-http://deb.debian.org/debian}
for suite in trixie sid; do
	printf 'deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] %s %s main\n' \
		"$URI" "$suite"
done >"$D/src.list"
APT=(-o "Dir::Etc::sourcelist=$D/src.list" -o Dir::Etc::sourceparts=- \
	-o "Dir::State::Lists=$D/lists" -o "Dir::Cache=$D/cache" -o APT::Sandbox::User=root)


# A release of each version, pinned by the SHA-256 of its tarball as its
# .dsc in the archive gives it (the .dsc's signature checked with
# debian-keyring when pinned): taken from the archive's pool when the version
# the source lists name is not served (a mirror behind its own lists).
pinned_release() {
	case "$VERSION" in
	17) echo "17.11 dd27f2b3c59e73ed14aa3324901242bf69a032a6347805f274e6260322d42979" ;;
	*) return 1 ;;
	esac
}

# The tarball apt fetched, checked against the .dsc that came with it.
listed_tarball() {
	local dsc want got
	dsc=$(ls "$D"/src/postgresql-"$VERSION"_*.dsc 2>/dev/null | head -1)
	[ -n "$dsc" ] || skip "no .dsc came with the source"
	TARBALL=$(ls "$D"/src/postgresql-"$VERSION"_*.orig.tar.* 2>/dev/null | grep -v '\.asc$' | head -1)
	[ -n "$TARBALL" ] || skip "no upstream tarball came with the source"
	want=$(awk -v f="${TARBALL##*/}" '
		/^Checksums-Sha256:/ {in_sha = 1; next}
		/^[^ ]/ {in_sha = 0}
		in_sha && $3 == f {print $1}' "$dsc")
	got=$(sha256sum "$TARBALL" | awk '{print $1}')
	if [ -z "$want" ] || [ "$want" != "$got" ]; then
		echo "test/pg-build.sh: ${TARBALL##*/} does not match the SHA-256 in ${dsc##*/}" >&2
		exit 1
	fi
	say "${TARBALL##*/}: SHA-256 matches ${dsc##*/}"
}

# The pinned release's tarball from the pool, checked against its pin.
pinned_tarball() {   # why the listed one could not be had
	local release sha got
	read -r release sha < <(pinned_release) || skip "$1"
	say "$1; taking the pinned PostgreSQL $release instead"
	TARBALL="$D/src/postgresql-${VERSION}_$release.orig.tar.bz2"
	curl -sSf -m 900 -o "$TARBALL" "$URI/pool/main/p/postgresql-$VERSION/${TARBALL##*/}" \
		|| skip "$1, and the pinned $release could not be downloaded either"
	got=$(sha256sum "$TARBALL" | awk '{print $1}')
	if [ "$got" != "$sha" ]; then
		echo "test/pg-build.sh: ${TARBALL##*/} does not match its pinned SHA-256" >&2
		exit 1
	fi
	say "${TARBALL##*/}: SHA-256 matches the pin"
}

say "fetching the source of PostgreSQL $VERSION from Debian's archive"
apt-get "${APT[@]}" update -qq >/dev/null 2>"$D/apt.err" \
	|| skip "the archive's source lists could not be read ($(tail -1 "$D/apt.err"))"
if (cd "$D/src" && apt-get "${APT[@]}" source --download-only -qq "postgresql-$VERSION") \
	>"$D/apt.out" 2>&1; then
	listed_tarball
else
	pinned_tarball "its source could not be downloaded ($(grep -m1 -E 'E:|Err' "$D/apt.out" || tail -1 "$D/apt.out"))"
fi

chown -R "$BUILD_USER" "$D"
as_build tar -C "$D" -xf "$TARBALL"
SRC=$(find "$D" -maxdepth 1 -type d -name 'postgresql-*' | head -1)
[ -n "$SRC" ] || { echo "test/pg-build.sh: the tarball has no postgresql-* directory" >&2; exit 1; }

# Built into a staging directory, moved into place whole: a half-built
# installation is never mistaken for a finished one.
STAGE="$CACHE/.stage-$FLAVOUR"
as_root rm -rf "$STAGE"
as_root mkdir -p "$STAGE"
as_root chown "$BUILD_USER" "$STAGE"
say "building PostgreSQL $VERSION ($FLAVOUR) in $SRC; log in $D/build.log"
(
	cd "$SRC"
	as_build env CPPFLAGS="$CPPFLAGS_EXTRA" ./configure --prefix="$PREFIX" \
		--without-icu --with-openssl --enable-tap-tests "${CONFIGURE_EXTRA[@]}"
	as_build make -j2 -s
	as_build make -s install DESTDIR="$STAGE"
	for m in $CONTRIB; do
		as_build make -s -C "contrib/$m"
		as_build make -s -C "contrib/$m" install DESTDIR="$STAGE"
	done
	# PostgreSQL::Test::Cluster & co., pg_regress and the isolation tester
	as_build make -s -C src/test/perl install DESTDIR="$STAGE"
	as_build make -s -C src/test/regress install-exec DESTDIR="$STAGE" 2>/dev/null || true
	as_build make -s -C src/test/isolation all
	as_build make -s -C src/test/isolation install DESTDIR="$STAGE" 2>/dev/null || true
	inst_pgxs=$STAGE$PREFIX/lib/postgresql/pgxs/src/test
	as_build mkdir -p "$inst_pgxs/regress" "$inst_pgxs/isolation"
	as_build cp src/test/regress/pg_regress "$inst_pgxs/regress/"
	as_build cp src/test/isolation/pg_isolation_regress src/test/isolation/isolationtester \
		"$inst_pgxs/isolation/"
) >"$D/build.log" 2>&1 || {
	tail -40 "$D/build.log" >&2
	echo "test/pg-build.sh: building PostgreSQL $VERSION failed" >&2
	trap - EXIT
	echo "test/pg-build.sh: the source and the log stay in $D" >&2
	exit 1
}

as_root rm -rf "$PREFIX"
as_root mv "$STAGE$PREFIX" "$PREFIX"
as_root rm -rf "$STAGE"
as_root chown -R root:root "$PREFIX"
as_root touch "$PREFIX/.enkash-built"
say "PostgreSQL $VERSION installed in $PREFIX"
echo "$PREFIX"
