# enkash: PostgreSQL extension for the EnKash Prepaid Card API (PGXS build)

MODULE_big = enkash
EXTENSION = enkash
# The version is enkash.control's default_version; every install and upgrade
# script ships (enkash--0.1.sql, enkash--0.1--0.2.sql, ...).
EXTVERSION = $(shell sed -n "s/^default_version *= *'\(.*\)'/\1/p" enkash.control)
DATA = $(wildcard enkash--*.sql)
PGFILEDESC = "enkash - EnKash Prepaid Card API as SQL functions"

OBJS = \
	src/api.o \
	src/approval.o \
	src/check.o \
	src/controls.o \
	src/credentials.o \
	src/effect.o \
	src/endpoints.o \
	src/enkash.o \
	src/envelope.o \
	src/fields.o \
	src/json_member.o \
	src/ledger.o \
	src/ledger_batch.o \
	src/ledger_many.o \
	src/ledger_slots.o \
	src/ledger_sql.o \
	src/ledger_worker.o \
	src/live.o \
	src/mask.o \
	src/money.o \
	src/outbox.o \
	src/outbox_rows.o \
	src/outbox_sender.o \
	src/pages.o \
	src/ratelimit.o \
	src/reconcile.o \
	src/request.o \
	src/response.o \
	src/settings.o \
	src/spi.o \
	src/installed.o \
	src/timeline.o \
	src/token.o \
	src/transport.o \
	src/transport_multi.o \
	src/wait_events.o \
	src/worker.o

PG_CPPFLAGS = -I$(srcdir)/src $(shell pkg-config --cflags libcurl)
# The library refuses to work on an extension of another version (src/installed.c).
PG_CPPFLAGS += -DENKASH_VERSION='"$(EXTVERSION)"'
# Test-only stop points (src/stoppoint.h): make ENKASH_STOP_POINTS=1.
ifeq ($(ENKASH_STOP_POINTS),1)
OBJS += src/stoppoint.o
PG_CPPFLAGS += -DENKASH_STOP_POINTS
endif
PG_CFLAGS = -Wall -Wextra -Werror -Wno-unused-parameter -Wno-missing-field-initializers -Wno-sign-compare
SHLIB_LINK = $(shell pkg-config --libs libcurl) -lcrypto

# Regression tests run on a throwaway instance against the sandbox; the test
# runner (test/run.sh) writes the config and starts the sandbox first.
REGRESS = setup load_balance load_balance_bad_input load_balance_idempotency upstream_errors token_refresh configuration wrong_secret statement_timeout wire_format wire_bodies card_lifecycle card_functions transactions_paging card_secrets outbox reconciliation check endpoint_table mask_words secrets_at_rest
REGRESS_OPTS = --temp-instance=$(CURDIR)/tmp_check --temp-config=$(CURDIR)/test/tmp/regress.conf

# Isolation specs (test/isolation/specs): races between sessions and the
# sender.  Their own temporary instance, configured like the one above, in
# the database where the enkash worker and sender run (enkash.database).
ISOLATION = outbox_claims one_key_two_sessions
ISOLATION_OPTS = --temp-instance=$(CURDIR)/tmp_check_iso --temp-config=$(CURDIR)/test/tmp/regress.conf \
	--inputdir=$(srcdir)/test/isolation --outputdir=$(CURDIR)/output_iso

# Without test/tmp/regress.conf (which test/run.sh writes before it runs the
# suites above on throwaway instances and the sandbox), `make installcheck`
# runs like contrib's against the running server (PGHOST, PGPORT, PGUSER as
# for psql) set up as the README's Install says: server_check, what can be
# checked there without calling EnKash.
REGRESS_CONF ?= $(wildcard $(CURDIR)/test/tmp/regress.conf)
ifeq ($(REGRESS_CONF),)
REGRESS = server_check
REGRESS_OPTS =
ISOLATION =
endif

# No LLVM bitcode: nothing here is worth JIT-inlining, and it needs clang.
override with_llvm = no

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

# (after PGXS, which sets its own default)
ISOLATION_TESTDB = contrib_regression

EXTRA_CLEAN = src/stoppoint.o tmp_check results regression.diffs regression.out test/tmp tmp_check_iso output_iso build-deb

bench: ; bash test/bench/run.sh

# Memory errors: the pg_regress suite, or TAP tests (TAP='test/t/013*.pl';
# default all), with every server process under valgrind (test/memcheck.sh).
memcheck: ; bash test/memcheck.sh
memcheck-tap: ; bash test/memcheck.sh --tap $(TAP)
.PHONY: bench memcheck memcheck-tap

# Debian packages, postgresql-<major>-enkash_<version>_amd64.deb in build-deb/,
# for the PostgreSQL versions in debian/pgversions (debian/build-deb.sh).
deb: ; bash debian/build-deb.sh
.PHONY: deb
