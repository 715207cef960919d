#!/usr/bin/env bash
# make deb: builds postgresql-<major>-enkash_<version>_amd64.deb for every
# PostgreSQL in debian/pgversions that is installed, with Debian's tooling
# (dpkg-buildpackage, pg_buildext), in a copy of the tree under build-deb/,
# so the packages land in build-deb/ and the tree stays clean.
# Installs the build dependencies first when they are missing.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/../test/lib.sh"
cd "$ENKASH_ROOT"

APT_PACKAGES=""    # only what building the package needs, not the test tools
ensure_packages debhelper dpkg-dev postgresql-server-dev-all libcurl4-openssl-dev libssl-dev pkg-config

version=$(sed -n "s/^default_version *= *'\(.*\)'/\1/p" enkash.control)
out="$ENKASH_ROOT/build-deb"
src="$out/enkash-$version"
rm -rf "$out"
mkdir -p "$src"
tar --exclude=.git --exclude=./build-deb --exclude='*.o' --exclude='*.so' --exclude='*.bc' \
	--exclude=./tmp_check --exclude=./tmp_check_iso --exclude=./results --exclude=./output_iso \
	--exclude=./test/tmp -cf - . | tar -C "$src" -xf -
(cd "$src" && dpkg-buildpackage --build=binary --no-sign) >"$out/build.log" 2>&1 || {
	tail -40 "$out/build.log" >&2
	die "dpkg-buildpackage failed (log: $out/build.log)"
}
rm -rf "$src"
ls "$out"/*.deb
