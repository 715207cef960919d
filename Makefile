# enkash: PostgreSQL extension for the EnKash Prepaid Card API (PGXS build)

MODULE_big = enkash
EXTENSION = enkash
DATA = enkash--0.1.sql
PGFILEDESC = "enkash - EnKash Prepaid Card API as SQL functions"

OBJS = \
	src/api.o \
	src/credentials.o \
	src/endpoints.o \
	src/enkash.o \
	src/envelope.o \
	src/ledger.o \
	src/mask.o \
	src/money.o \
	src/outbox.o \
	src/pages.o \
	src/request.o \
	src/response.o \
	src/token.o \
	src/transport.o \
	src/worker.o

PG_CPPFLAGS = -I$(srcdir)/src $(shell pkg-config --cflags libcurl)
PG_CFLAGS = -Wall -Wextra -Werror -Wno-unused-parameter -Wno-missing-field-initializers -Wno-sign-compare
SHLIB_LINK = $(shell pkg-config --libs libcurl) -lcrypto

# Regression tests run on a throwaway instance against the sandbox; the test
# runner (test/run.sh) writes the config and starts the sandbox first.
REGRESS = setup load_balance load_balance_bad_input load_balance_idempotency upstream_errors token_refresh configuration wrong_secret statement_timeout wire_format card_lifecycle card_functions transactions_paging card_secrets outbox reconciliation endpoint_table secrets_at_rest
REGRESS_OPTS = --temp-instance=$(CURDIR)/tmp_check --temp-config=$(CURDIR)/test/tmp/regress.conf

# No LLVM bitcode: nothing here is worth JIT-inlining, and it needs clang.
override with_llvm = no

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

EXTRA_CLEAN = tmp_check results regression.diffs regression.out test/tmp

bench: ; bash test/bench/run.sh

# Memory errors: the pg_regress suite, or TAP tests (TAP='test/t/013*.pl';
# default all), with every server process under valgrind (test/memcheck.sh).
memcheck: ; bash test/memcheck.sh
memcheck-tap: ; bash test/memcheck.sh --tap $(TAP)
.PHONY: bench memcheck memcheck-tap
