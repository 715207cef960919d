#!/usr/bin/env bash
# test/run.sh: every enkash test (pg_regress, TAP), on a throwaway PostgreSQL
# and the sandbox, both on loopback.  Installs missing Debian packages first.
# Ends with one line "N passed, N failed" and exits non-zero on any failure.
# ENKASH_KEEP=1 keeps the work directory for inspection.
# For a quicker look at a few tests (what CI runs is always everything):
#   ENKASH_UNIT=0                skips the unit tests, sandbox checks and fuzzing
#   ENKASH_REGRESS="setup outbox" runs these pg_regress tests only ("" none)
#   ENKASH_ISOLATION="outbox_claims" runs these isolation specs only ("" none)
#   ENKASH_TAP="test/t/013*.pl"  runs these TAP files only ("" none)
#   ENKASH_PACKAGING=0           skips META.json, the .deb and installcheck checks
# The PostgreSQL versions (ENKASH_PG="15 17 18" by default; ENKASH_PG=15 for
# one): 15 from Debian's packages, the others built from source by
# test/pg-build.sh on first use and cached (18 with assertions, for
# valgrind); a version whose source cannot be had is skipped with a line
# saying so.  Each version runs regress, isolation and TAP; the unit tests,
# sandbox checks and fuzzing run once, with the first.  A line per version,
# then the closing line counts them all.  ENKASH_TAP_OTHERS narrows TAP on
# the versions after the first (e.g. to the version-dependent files).
set -uo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# --- the matrix: this script once per PostgreSQL version ---------------------
if [ -z "${ENKASH_PG_ONE:-}" ]; then
	total_passed=0
	total_failed=0
	summary=()
	unit=${ENKASH_UNIT:-1}
	packaging=${ENKASH_PACKAGING:-1}    # once, with the first version, as the unit tests
	tap=${ENKASH_TAP-test/t/*.pl}
	digests=$(mktemp -d /tmp/enkash-failed.XXXXXX)
	for version in ${ENKASH_PG:-15 17 18}; do
		sysbin=$(pg_sysbin "$version")
		case $? in
		0) ;;
		2) summary+=("PostgreSQL $version: skipped, its source could not be had (see the line above)")
		   continue ;;
		*) summary+=("PostgreSQL $version: 0 passed, 1 failed (it could not be built)")
		   total_failed=$((total_failed + 1))
		   continue ;;
		esac
		log "PostgreSQL $version ($sysbin)"
		out=$(mktemp /tmp/enkash-run.XXXXXX)
		ENKASH_PG_ONE=1 ENKASH_FAILED_DIGEST="$digests/$version" \
			PG_MAJOR=$version PG_SYSBIN=$sysbin ENKASH_UNIT=$unit \
			ENKASH_PACKAGING=$packaging ENKASH_TAP=$tap bash "${BASH_SOURCE[0]}" | tee "$out"
		unit=0
		packaging=0
		tap=${ENKASH_TAP_OTHERS-$tap}
		line=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$out" | tail -1)
		rm -f "$out"
		if [ -z "$line" ]; then
			line="0 passed, 1 failed"
			summary+=("PostgreSQL $version: 0 passed, 1 failed (the run ended early)")
		else
			summary+=("PostgreSQL $version: $line")
		fi
		total_passed=$((total_passed + ${line%% passed*}))
		line=${line#* passed, }
		total_failed=$((total_failed + ${line%% failed*}))
	done
	# What failed, again at the end, where a truncated log still shows it
	for digest in "$digests"/*; do
		[ -s "$digest" ] || continue
		echo "==> what failed on PostgreSQL $(basename "$digest")"
		head -150 "$digest"
	done
	rm -rf "$digests"
	printf '%s\n' "${summary[@]}"
	echo "$total_passed passed, $total_failed failed"
	[ "$total_failed" -eq 0 ]
	exit
fi

ensure_packages
prepare_work_copy
trap cleanup_work EXIT
build_and_install
start_sandbox

passed=0
failed=0
count() {   # passed failed
	passed=$((passed + $1))
	failed=$((failed + $2))
}
# A short account of each failure, for the matrix's closing lines
digest=${ENKASH_FAILED_DIGEST:-/dev/null}
: >"$digest"
failed_digest() {   # title (the details on stdin)
	{ echo "--- $1"; cat; } >>"$digest"
}

# Runs a tool that ends with "name: N passed, M failed" and counts its results.
run_counted() {   # label command...
	local out rc line
	out=$("${@:2}" 2>&1)
	rc=$?
	printf '%s\n' "$out" | tail -20 >&2
	line=$(printf '%s\n' "$out" | grep -E "^$1: [0-9]+ passed, [0-9]+ failed" | tail -1)
	local p=0 f=1
	if [ -n "$line" ]; then
		p=$(echo "$line" | sed -E 's/.*: ([0-9]+) passed, ([0-9]+) failed.*/\1/')
		f=$(echo "$line" | sed -E 's/.*: ([0-9]+) passed, ([0-9]+) failed.*/\2/')
		[ "$rc" -ne 0 ] && [ "$f" -eq 0 ] && f=1
	fi
	[ "$f" -gt 0 ] && printf '%s\n' "$out" | tail -20 | failed_digest "$1"
	count "$p" "$f"
}

# --- unit tests and the sandbox's own checks (openssl enc, curl) -------------
if [ "${ENKASH_UNIT:-1}" != 0 ]; then
log "unit tests"
run_counted envelope as_user make -s -C "$WORK/tree/test/unit" check
run_counted pg_try perl "$WORK/tree/test/lint/pg_try.pl" "$WORK/tree"/src/*.c
run_counted layers perl "$WORK/tree/test/lint/layers.pl" "$WORK/tree"/src/*.c "$WORK/tree"/src/*.h
run_counted log-catalogue perl "$WORK/tree/test/lint/log_catalogue.pl" "$WORK/tree/README.md" "$WORK/tree"/src/*.c
# the bench's hollow ledger (test/bench/README.md) still applies to the worker
run_counted bench-patch sh -c "patch --dry-run -s -p1 -d '$WORK/tree' <'$WORK/tree/test/bench/hollow-ledger.patch' &&
	echo 'bench-patch: 1 passed, 0 failed'"
log "sandbox self-test and smoke test"
run_counted sandbox-vectors sh -c "'$WORK/tree/test/sandbox/enkash-sandbox' --selftest-vectors '$WORK/tree/test/vectors/envelope.json' | sed -E 's/^selftest: ([0-9]+) vectors, ([0-9]+) failed/sandbox-vectors: \\1 passed, \\2 failed/'"
run_counted smoke as_user env SANDBOX_BIN="$WORK/tree/test/sandbox/enkash-sandbox" \
	bash "$WORK/tree/test/sandbox/smoke.sh"

log "fuzzing the envelope and answer reading (30 s) and replaying their corpora"
run_counted fuzz as_user bash "$WORK/tree/test/fuzz/run.sh" 30
fi

# --- pg_regress -------------------------------------------------------------
conf="$WORK/tree/test/tmp/regress.conf"
as_user mkdir -p "$WORK/tree/test/tmp"
write_credentials "$WORK/credentials.conf"
write_credentials "$WORK/wrong-secret.conf" "not-the-partner-secret"
# Broken credentials files for the configuration test.
as_user cp "$WORK/credentials.conf" "$WORK/world-readable.conf"
as_user chmod 644 "$WORK/world-readable.conf"
as_user cp "$WORK/credentials.conf" "$WORK/group-readable.conf"
as_user chmod 640 "$WORK/group-readable.conf"
# Owned by root (not the server's user), mode 600: refused for its owner.
as_root install -o root -g root -m 600 "$WORK/credentials.conf" "$WORK/root-owned.conf"
printf 'client_id = x\nclient_secret = y\nusername = z\n' | as_user sh -c "umask 077; cat > '$WORK/incomplete.conf'"
printf 'client_id = x\npassword\n' | as_user sh -c "umask 077; cat > '$WORK/malformed.conf'"
as_user ln -s "$WORK/credentials.conf" "$WORK/symlink.conf"
printf 'client_id = x\nclient_secret = c2VjcmV0LXNw\n  bGl0LWxpbmU=\nusername = z\npassword = w\n' |
	as_user sh -c "umask 077; cat > '$WORK/unknown-key.conf'"
# The partner's password gone wrong, for the lockout test.
as_user sh -c "umask 077; sed 's/^password = .*/password = not-the-partner-password/' '$WORK/credentials.conf' > '$WORK/wrong-password.conf'"
{
	enkash_settings "$WORK/credentials.conf"
	cat <<EOF2
enkash.database = 'contrib_regression'
enkash.unknown_grace_ms = 1000
enkash.retry_base_ms = 100
enkash.retry_max_ms = 1000
enkash.max_attempts = 3
enkash_test.sandbox_url = '$SANDBOX_URL'
enkash_test.work_dir = '$WORK'
log_min_messages = warning
EOF2
} | as_user sh -c "cat > '$conf'"

# pg_regress, then the isolation specs (pg_isolation_regress): both print
# "test NAME ... ok", counted together.
regress_only=()
[ -n "${ENKASH_REGRESS+set}" ] && regress_only+=(REGRESS="$ENKASH_REGRESS")
[ -n "${ENKASH_ISOLATION+set}" ] && regress_only+=(ISOLATION="$ENKASH_ISOLATION")
if [ -n "${ENKASH_REGRESS-all}${ENKASH_ISOLATION-all}" ]; then
log "pg_regress and isolation specs"
as_user make -C "$WORK/tree" installcheck PG_CONFIG="$PG_SYSBIN/pg_config" \
	EXTRA_REGRESS_OPTS="--bindir=$PG_BINDIR" "${regress_only[@]}" >"$WORK/regress.log" 2>&1
regress_rc=$?
cat "$WORK/regress.log" | grep -E '^(ok|not ok|test |     |#)|tests (passed|failed)' >&2
# "test NAME ... ok" before PostgreSQL 16, "ok N - NAME" (TAP) from 16 on
ok=$(grep -cE '\.\.\. ok|^ok [0-9]+ ' "$WORK/regress.log")
bad=$(grep -cE '\.\.\. (FAILED|failed)|^not ok [0-9]+ ' "$WORK/regress.log")
if [ "$regress_rc" -ne 0 ] && [ "$bad" -eq 0 ]; then
	bad=1
	tail -20 "$WORK/regress.log" >&2
fi
for diffs in "$WORK/tree/regression.diffs" "$WORK/tree/output_iso/regression.diffs"; do
	if [ "$bad" -gt 0 ] && [ -f "$diffs" ]; then
		head -200 "$diffs" >&2
	fi
done
if [ "$bad" -gt 0 ]; then
	{ grep -E '\.\.\. (FAILED|failed)|^not ok [0-9]+ ' "$WORK/regress.log"
	  cat "$WORK/tree/regression.diffs" "$WORK/tree/output_iso/regression.diffs" 2>/dev/null | head -60
	} | failed_digest "pg_regress and isolation"
fi
count "$ok" "$bad"
fi

# --- TAP (PostgreSQL::Test::Cluster) -----------------------------------------
tap_files=${ENKASH_TAP-test/t/*.pl}
if [ -n "$tap_files" ]; then
log "TAP tests"
case " $(cd "$WORK/tree" && echo $tap_files) " in
*_kill_matrix.pl*) install_stop_points ;;
esac
case " $(cd "$WORK/tree" && echo $tap_files) " in
*_upgrade.pl*) install_old_version ;;
esac
pgxs=$(dirname "$("$PG_SYSBIN/pg_config" --pgxs)")/..
as_user mkdir -p "$WORK/tap"
# TESTDIR for 15 and 17, TESTDATADIR and TESTLOGDIR for 18: the same absolute directories
(cd "$WORK/tree" && as_user env TESTDIR="$WORK/tap" TESTDATADIR="$WORK/tap/tmp_check" \
	TESTLOGDIR="$WORK/tap/tmp_check/log" PG_REGRESS="$pgxs/test/regress/pg_regress" \
	PATH="$PG_BINDIR:$PATH" \
	SANDBOX_URL="$SANDBOX_URL" ENKASH_CREDENTIALS="$WORK/credentials.conf" \
	ENKASH_STOP_INSTALL="${ENKASH_STOP_INSTALL:-}" ENKASH_OLD_INSTALL="${ENKASH_OLD_INSTALL:-}" \
	ENKASH_TAP_LIB="$WORK/tree/test/t" ENKASH_SANDBOX_BIN="$WORK/tree/test/sandbox/enkash-sandbox" \
	prove -I "$pgxs/test/perl" $tap_files) >"$WORK/tap.log" 2>&1
tap_rc=$?
cat "$WORK/tap.log" >&2
tap_total=$(sed -n 's/^Files=[0-9]*, Tests=\([0-9]*\).*/\1/p' "$WORK/tap.log")
# prove's summary names each failed script: its failed checks, or 1 when it died
tap_failed=$(sed -n 's/^test\/t\/.* (Wstat: .* Failed: \([0-9]*\))$/\1/p' "$WORK/tap.log" |
	awk '{s += ($1 > 0 ? $1 : 1)} END {print s+0}')
tap_total=${tap_total:-0}
if [ "$tap_rc" -ne 0 ] && [ "$tap_failed" -eq 0 ]; then
	tap_failed=1    # prove itself failed
fi
[ "$tap_failed" -gt 0 ] && sed -n '/^Test Summary Report/,$p' "$WORK/tap.log" | failed_digest "TAP"
for script in $(sed -n 's/^\(test\/t\/[^ ]*\.pl\) *(Wstat.*/\1/p' "$WORK/tap.log"); do
	logs="$WORK/tap/tmp_check/log" name=$(basename "$script" .pl)
	{ grep -E 'not ok [0-9]|# +Failed test|# +at |# +got:|# +expected:' "$logs/regress_log_$name" | head -20
	  echo '(the end of its log)'; tail -30 "$logs/regress_log_$name"
	  for server in "$logs/${name}"_*.log; do
		[ -f "$server" ] && { echo "(the end of $(basename "$server"))"; tail -8 "$server"; }
	  done; } 2>/dev/null | failed_digest "$script"
done
count $((tap_total - tap_failed > 0 ? tap_total - tap_failed : 0)) "$tap_failed"
fi

# --- packaging: META.json, the Debian package, make installcheck ------------
# (ENKASH_PACKAGING=0 skips them; the package test needs root, as CI runs)
if [ "${ENKASH_PACKAGING:-1}" != 0 ]; then
log "packaging: META.json, the Debian package, make installcheck on a running server"
run_counted meta_json perl "$WORK/tree/test/lint/meta_json.pl" "$WORK/tree"
run_counted deb bash "$WORK/tree/test/packaging/deb.sh"
run_counted installcheck bash "$WORK/tree/test/packaging/installcheck.sh"
fi

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
