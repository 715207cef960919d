/*-------------------------------------------------------------------------
 *
 * check.c
 *	  enkash_check(): the go-live check, one row per thing that must hold
 *	  before the first real call.
 *
 * Each check runs in its own subtransaction, so one that fails with an
 * error becomes a "failed" row and the others still run; a cancel is never
 * swallowed.  The whole check makes at most one token call and one read
 * call.  A row's detail says what to do; it never carries a secret (the
 * errors it reports are enkash's own, which never do either).
 *
 *-------------------------------------------------------------------------
 */
#include "enkash.h"

#include <sys/stat.h>

#include "access/xact.h"
#include "endpoints.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/json.h"
#include "utils/resowner.h"

/* A card account id no partner has: EnKash's "not found" for it proves a round trip. */
#define PROBE_CARD_ACCOUNT "ENKASHCHECKPROBE"

typedef enum CheckStatus
{
	CHECK_OK,
	CHECK_WARNING,
	CHECK_FAILED
} CheckStatus;

static const char *const status_names[] = {"ok", "warning", "failed"};

typedef struct CheckState
{
	const char *card_account_id;	/* NULL: probe with PROBE_CARD_ACCOUNT */
	bool		have_token;
	bool		round_trip_done;	/* EnKash answered over the configured URL */
	char	   *round_trip_error;	/* why not, when it was tried */
} CheckState;

typedef struct CheckResult
{
	CheckStatus status;
	char	   *detail;
} CheckResult;

typedef void (*CheckFunction) (CheckState *state, CheckResult *result);

static void
set_result(CheckResult *result, CheckStatus status, const char *fmt,...)
pg_attribute_printf(3, 4);

static void
set_result(CheckResult *result, CheckStatus status, const char *fmt,...)
{
	StringInfoData buf;

	initStringInfo(&buf);
	for (;;)
	{
		va_list		args;
		int			needed;

		va_start(args, fmt);
		needed = appendStringInfoVA(&buf, fmt, args);
		va_end(args);
		if (needed == 0)
			break;
		enlargeStringInfo(&buf, needed);
	}
	result->status = status;
	result->detail = buf.data;
}

static void
check_preloaded(CheckState *state, CheckResult *result)
{
	if (enkash_preloaded)
		set_result(result, CHECK_OK, "enkash is in shared_preload_libraries");
	else
		set_result(result, CHECK_FAILED,
				   "enkash is not in shared_preload_libraries: add it in postgresql.conf and restart the server");
}

static bool
is_http_url(const char *url)
{
	return url && (strncmp(url, "https://", 8) == 0 || strncmp(url, "http://", 7) == 0);
}

static void
check_settings(CheckState *state, CheckResult *result)
{
	static const struct
	{
		const char *name;
		char	  **value;
		bool		url;
	}			required[] = {
		{"enkash.base_url", &enkash_base_url, true},
		{"enkash.token_url", &enkash_token_url, true},
		{"enkash.partner_id", &enkash_partner_id, false},
		{"enkash.credentials_file", &enkash_credentials_file, false},
	};
	StringInfoData missing;

	initStringInfo(&missing);
	for (int i = 0; i < lengthof(required); i++)
	{
		const char *value = *required[i].value;

		if (value == NULL || value[0] == '\0')
			appendStringInfo(&missing, "%s%s is not set", missing.len ? "; " : "",
							 required[i].name);
		else if (required[i].url && !is_http_url(value))
			appendStringInfo(&missing, "%s%s is not an http(s) URL", missing.len ? "; " : "",
							 required[i].name);
	}
	if (missing.len > 0)
		set_result(result, CHECK_FAILED, "%s: set it in postgresql.conf and reload", missing.data);
	else if (enkash_company_id == NULL || enkash_company_id[0] == '\0')
		set_result(result, CHECK_WARNING,
				   "enkash.company_id is not set: every call must pass company_id");
	else
		set_result(result, CHECK_OK, "base_url %s, partner and company set", enkash_base_url);
}

static void
check_credentials_file(CheckState *state, CheckResult *result)
{
	struct stat st;

	(void) enkash_credentials();	/* errors out, saying why, unless usable */

	if (stat(enkash_credentials_file, &st) != 0)
		set_result(result, CHECK_FAILED, "could not stat \"%s\": %m", enkash_credentials_file);
	else
		set_result(result, CHECK_OK,
				   "\"%s\" has mode %04o, is owned by the server's user and holds client_id, client_secret, username and password",
				   enkash_credentials_file, (unsigned) (st.st_mode & 07777));
}

static void
check_token(CheckState *state, CheckResult *result)
{
	char		bearer[ENKASH_BEARER_MAX];

	(void) enkash_token_renew(bearer, sizeof(bearer));
	explicit_bzero(bearer, sizeof(bearer));
	state->have_token = true;
	set_result(result, CHECK_OK, "EnKash's token endpoint accepted the credentials and issued a new token (shared by all sessions)");
}

/*
 * Runs fn(arg) in a subtransaction; its error, copied, is the result (NULL
 * when none).  A cancel or anything worse than ERROR goes up unchanged.
 */
static ErrorData *
try_in_subtransaction(void (*fn) (void *), void *arg)
{
	MemoryContext cxt = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	ErrorData  *volatile edata = NULL;

	BeginInternalSubTransaction(NULL);
	PG_TRY();
	{
		fn(arg);
		ReleaseCurrentSubTransaction();
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		if (edata->sqlerrcode == ERRCODE_QUERY_CANCELED || edata->elevel > ERROR)
			PG_RE_THROW();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
	}
	PG_END_TRY();
	MemoryContextSwitchTo(cxt);
	CurrentResourceOwner = owner;
	return edata;
}

static void
send_probe(void *arg)
{
	StringInfo	body = (StringInfo) arg;

	(void) enkash_send(enkash_endpoint_by_name("get_card_account"), body->data, body->len, NULL);
}

static void
check_round_trip(CheckState *state, CheckResult *result)
{
	const char *account = state->card_account_id ? state->card_account_id : PROBE_CARD_ACCOUNT;
	StringInfoData body;
	ErrorData  *edata = NULL;

	if (!state->have_token)
	{
		set_result(result, CHECK_FAILED, "not tried: no token (see the token row)");
		return;
	}
	if (enkash_company_id == NULL || enkash_company_id[0] == '\0')
	{
		set_result(result, CHECK_WARNING, "not tried: enkash.company_id is not set");
		return;
	}

	initStringInfo(&body);
	appendStringInfoString(&body, "{\"companyId\": ");
	escape_json(&body, enkash_company_id);
	appendStringInfoString(&body, ", \"cardAccountId\": ");
	escape_json(&body, account);
	appendStringInfoChar(&body, '}');

	/* The call's own error is the result; anything else goes up to run_check. */
	edata = try_in_subtransaction(send_probe, &body);

	if (edata == NULL)
	{
		state->round_trip_done = true;
		set_result(result, CHECK_OK, "card account \"%s\" read from EnKash (encrypted request and answer)",
				   account);
	}
	else if (edata->sqlerrcode == ERRCODE_ENKASH_REJECTED)
	{
		/* EnKash decrypted the request and answered in its envelope: the round trip works. */
		state->round_trip_done = true;
		if (state->card_account_id)
			set_result(result, CHECK_WARNING, "EnKash answered but declined card account \"%s\": %s%s%s",
					   account, edata->message, edata->detail ? " " : "",
					   edata->detail ? edata->detail : "");
		else
			set_result(result, CHECK_OK,
					   "EnKash decrypted the request and answered (it declined the probe account, as it should); pass a card account id to read a real one");
	}
	else
	{
		state->round_trip_error = edata->message;
		set_result(result, CHECK_FAILED, "%s%s%s", edata->message,
				   edata->detail ? ": " : "", edata->detail ? edata->detail : "");
	}
}

static void
check_tls(CheckState *state, CheckResult *result)
{
	if (enkash_base_url == NULL || strncmp(enkash_base_url, "https://", 8) != 0)
		set_result(result, CHECK_WARNING,
				   "enkash.base_url is not https: requests are not protected by TLS (EnKash's service is https only)");
	else if (enkash_ca_file && enkash_ca_file[0] && access(enkash_ca_file, R_OK) != 0)
		set_result(result, CHECK_FAILED, "enkash.ca_file \"%s\" cannot be read: %m", enkash_ca_file);
	else if (state->round_trip_done)
		set_result(result, CHECK_OK, "EnKash's certificate and host name were verified%s",
				   enkash_ca_file && enkash_ca_file[0] ? " (system CAs and enkash.ca_file)" : " (system CAs)");
	else
		set_result(result, CHECK_FAILED, "no verified TLS connection was made%s%s",
				   state->round_trip_error ? ": " : " (see the round_trip row)",
				   state->round_trip_error ? state->round_trip_error : "");
}

/* The running background workers, by type; the snapshot is refreshed first. */
static int64
count_backends(const char *where)
{
	int64		n;
	bool		isnull;

	pgstat_clear_snapshot();
	SPI_connect();
	if (SPI_execute(psprintf("SELECT count(*) FROM pg_catalog.pg_stat_activity WHERE %s", where),
					true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read pg_stat_activity");
	n = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	SPI_finish();
	return n;
}

static void
check_background_workers(CheckState *state, CheckResult *result)
{
	static const char *const types[] = {"enkash launcher", "enkash worker", "enkash sender"};
	StringInfoData missing;

	initStringInfo(&missing);
	for (int i = 0; i < lengthof(types); i++)
		if (count_backends(psprintf("backend_type = '%s'", types[i])) == 0)
			appendStringInfo(&missing, "%s%s", missing.len ? ", " : "", types[i]);

	if (missing.len == 0)
		set_result(result, CHECK_OK, "launcher, worker and sender running in database \"%s\"",
				   enkash_database);
	else
		set_result(result, CHECK_FAILED,
				   "not running: %s; they run in enkash.database (\"%s\"), which must exist, accept connections and have the extension; see the server log",
				   missing.data, enkash_database);
}

static void
check_worker_slots(CheckState *state, CheckResult *result)
{
	/*
	 * Background workers are the processes that are none of these (the last
	 * three: PostgreSQL 17 and 18's, which take no worker slot either).
	 */
	int64		running = count_backends(
		"backend_type NOT IN ('client backend', 'autovacuum launcher', 'autovacuum worker', "
		"'background writer', 'checkpointer', 'walwriter', 'walsender', 'walreceiver', "
		"'startup', 'archiver', 'standalone backend', 'logger', "
		"'walsummarizer', 'slotsync worker', 'io worker')");
	int64		headroom = (int64) max_worker_processes - running;

	if (headroom >= 2)
		set_result(result, CHECK_OK,
				   "max_worker_processes = %d, %lld background workers running: room for %lld more",
				   max_worker_processes, (long long) running, (long long) headroom);
	else
		set_result(result, CHECK_WARNING,
				   "max_worker_processes = %d, %lld background workers running: raise max_worker_processes so a restarted enkash worker or sender finds a slot",
				   max_worker_processes, (long long) running);
}

static const struct
{
	const char *name;
	CheckFunction run;
}			checks[] = {
	{"preloaded", check_preloaded},
	{"settings", check_settings},
	{"credentials_file", check_credentials_file},
	{"token", check_token},
	{"round_trip", check_round_trip},
	{"tls", check_tls},
	{"background_workers", check_background_workers},
	{"worker_slots", check_worker_slots},
};

/* Runs one check; its error, if any, becomes its failed row. */
typedef struct CheckCall
{
	CheckFunction run;
	CheckState *state;
	CheckResult *result;
} CheckCall;

static void
call_check(void *arg)
{
	CheckCall  *call = (CheckCall *) arg;

	call->run(call->state, call->result);
}

static void
run_check(CheckFunction run, CheckState *state, CheckResult *result)
{
	CheckCall	call = {run, state, result};
	ErrorData  *edata = try_in_subtransaction(call_check, &call);

	if (edata)
		set_result(result, CHECK_FAILED, "%s%s%s", edata->message,
				   edata->detail ? ": " : "", edata->detail ? edata->detail : "");
}

PG_FUNCTION_INFO_V1(enkash_check);

/* enkash_check(card_account_id): one row per check, in the order they build on each other. */
Datum
enkash_check(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	CheckState	state = {0};

	InitMaterializedSRF(fcinfo, 0);
	if (!PG_ARGISNULL(0))
		state.card_account_id = text_to_cstring(PG_GETARG_TEXT_PP(0));

	for (int i = 0; i < lengthof(checks); i++)
	{
		CheckResult result = {CHECK_FAILED, NULL};
		Datum		values[3];
		bool		nulls[3] = {0};

		/* Without the preload nothing else can be tried. */
		if (i > 0 && !enkash_preloaded)
			set_result(&result, CHECK_FAILED, "not tried: enkash is not preloaded");
		else
			run_check(checks[i].run, &state, &result);
		values[0] = CStringGetTextDatum(checks[i].name);
		values[1] = CStringGetTextDatum(status_names[result.status]);
		values[2] = CStringGetTextDatum(result.detail);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}
