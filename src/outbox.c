/*-------------------------------------------------------------------------
 *
 * outbox.c
 *	  The transactional outbox: enqueue in the caller's transaction, send
 *	  after COMMIT from the enkash senders, exactly once, with retries.
 *
 * A row of enkash.requests commits with the caller's transaction or not at
 * all, so a rolled-back payroll row never sends anything.  The senders are
 * background workers; each claims one due row at a time with FOR UPDATE
 * SKIP LOCKED (no two senders hold a row), sends it through the same money
 * path as a synchronous call (idempotency key claimed first, unknown
 * outcomes reconciled with EnKash before any resend), and commits the
 * outcome.  Transient failures are retried with capped exponential backoff
 * and jitter; rows that exhaust enkash.max_attempts end "dead" with their
 * error history.
 *
 *-------------------------------------------------------------------------
 */
#include "enkash.h"

#include "access/xact.h"
#include "catalog/namespace.h"
#include "common/pg_prng.h"
#include "endpoints.h"
#include "executor/spi.h"
#include "ledger.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"

PGDLLEXPORT void enkash_sender_main(Datum arg);

/* ---------------------------------------------------------------------
 * Enqueueing (in the caller's backend and transaction)
 * ---------------------------------------------------------------------
 */

static bool enqueued_in_xact = false;

/* Wakes the senders when a transaction that enqueued commits, not before. */
static void
outbox_xact_callback(XactEvent event, void *arg)
{
	if (event == XACT_EVENT_COMMIT && enqueued_in_xact)
		enkash_outbox_wake();
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_ABORT)
		enqueued_in_xact = false;
}

static int64
enqueue(const EnkashEndpoint *ep, const char *body, const char *key)
{
	static bool callback_registered = false;
	Oid			types[4] = {TEXTOID, JSONBOID, TEXTOID, TEXTOID};
	Datum		values[4];
	char		nulls[4] = {' ', ' ', ' ', ' '};
	int64		id;
	bool		isnull;

	enkash_require_preload();
	if (ep->kind == ENKASH_SECRET_IN || ep->kind == ENKASH_SECRET_OUT)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("%s cannot be queued", ep->label),
				 errdetail("A queued request is stored in enkash.requests, and card secrets are never stored.")));
	if (ep->kind == ENKASH_MONEY && key == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("a queued %s needs an idempotency key", ep->label)));
	if (!OidIsValid(get_relname_relid("requests", get_namespace_oid("enkash", true))))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("the enkash extension is not installed in this database")));

	values[0] = CStringGetTextDatum(ep->name);
	values[1] = DirectFunctionCall1(jsonb_in, CStringGetDatum(body));
	values[2] = key ? CStringGetTextDatum(key) : (Datum) 0;
	nulls[2] = key ? ' ' : 'n';
	values[3] = CStringGetTextDatum(GetUserNameFromId(GetUserId(), false));

	SPI_connect();
	if (SPI_execute_with_args("INSERT INTO enkash.requests "
							  "  (endpoint, body, idempotency_key, created_by, max_attempts) "
							  "VALUES ($1, $2, $3, $4, current_setting('enkash.max_attempts')::int) "
							  "RETURNING id", 4, types, values, nulls, false, 1)
		!= SPI_OK_INSERT_RETURNING)
		elog(ERROR, "could not insert into enkash.requests");
	id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc,
									 1, &isnull));
	SPI_finish();

	if (!callback_registered)
	{
		RegisterXactCallback(outbox_xact_callback, NULL);
		callback_registered = true;
	}
	enqueued_in_xact = true;
	return id;
}

PG_FUNCTION_INFO_V1(enkash_endpoint_call_async);

/* The C body of the typed ..._async functions: build, check, enqueue. */
Datum
enkash_endpoint_call_async(PG_FUNCTION_ARGS)
{
	const EnkashEndpoint *ep;
	StringInfoData body;
	char	   *key;

	initStringInfo(&body);
	enkash_build_body(fcinfo, &body, &ep, &key);
	PG_RETURN_INT64(enqueue(ep, body.data, key));
}

PG_FUNCTION_INFO_V1(enkash_enqueue);

/*
 * enkash_enqueue(endpoint, body, idempotency_key): a raw queued call.  For
 * a money endpoint whose key is in the body (a load's reference number),
 * the two must agree.
 */
Datum
enkash_enqueue(PG_FUNCTION_ARGS)
{
	Jsonb	   *body;
	const EnkashEndpoint *ep = enkash_raw_call_args(fcinfo, &body);
	char	   *key = PG_ARGISNULL(2) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(2));
	char	   *body_key = enkash_raw_money_key(ep, body);

	if (ep->paged)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("endpoint \"%s\" cannot be queued", ep->name)));
	if (key && body_key && strcmp(key, body_key) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("idempotency_key must equal the key in the body")));
	PG_RETURN_INT64(enqueue(ep, JsonbToCString(NULL, &body->root, VARSIZE(body)),
							body_key ? body_key : key));
}

/* ---------------------------------------------------------------------
 * Sending (in an enkash sender)
 * ---------------------------------------------------------------------
 */

typedef struct QueuedCall
{
	int64		id;
	char	   *endpoint;
	char	   *body;
	char	   *key;
	int			attempts;
	int			max_attempts;
	int			retry_after;	/* seconds EnKash asked us to wait, if any */
} QueuedCall;

static bool
outbox_installed(void)
{
	return OidIsValid(get_relname_relid("requests", get_namespace_oid("enkash", true)));
}

/* Claims the next due row for this sender; false if there is none. */
static bool
claim_next(QueuedCall *call, MemoryContext keep)
{
	bool		found = false;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	SPI_connect();
	PushActiveSnapshot(GetTransactionSnapshot());
	if (outbox_installed())
	{
		Oid			types[1] = {INT4OID};
		Datum		values[1] = {Int32GetDatum(MyProcPid)};

		if (SPI_execute_with_args(
				"UPDATE enkash.requests SET state = 'sending', attempts = attempts + 1, "
				"  sender_pid = $1, updated_at = now() "
				"WHERE id = (SELECT id FROM enkash.requests "
				"            WHERE state IN ('pending', 'unknown') AND next_attempt_at <= now() "
				"            ORDER BY next_attempt_at, id LIMIT 1 FOR UPDATE SKIP LOCKED) "
				"RETURNING id, endpoint, body::text, idempotency_key, attempts, max_attempts",
				1, types, values, NULL, false, 1) != SPI_OK_UPDATE_RETURNING)
			elog(ERROR, "could not claim a row of enkash.requests");
		if (SPI_processed == 1)
		{
			HeapTuple	tuple = SPI_tuptable->vals[0];
			TupleDesc	desc = SPI_tuptable->tupdesc;
			MemoryContext old = MemoryContextSwitchTo(keep);
			bool		isnull;

			call->id = DatumGetInt64(SPI_getbinval(tuple, desc, 1, &isnull));
			call->endpoint = SPI_getvalue(tuple, desc, 2);
			call->body = SPI_getvalue(tuple, desc, 3);
			call->key = SPI_getvalue(tuple, desc, 4);
			call->attempts = DatumGetInt32(SPI_getbinval(tuple, desc, 5, &isnull));
			call->max_attempts = DatumGetInt32(SPI_getbinval(tuple, desc, 6, &isnull));
			MemoryContextSwitchTo(old);
			found = true;
		}
	}
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	return found;
}

/* What an error means for a queued row. */
static const char *
state_after(int sqlerrcode, bool last_attempt)
{
	char		class0 = PGUNSIXBIT(sqlerrcode);
	char		class1 = PGUNSIXBIT(sqlerrcode >> 6);

	/* Final: EnKash declined, or the request itself is wrong. */
	if (sqlerrcode == ERRCODE_ENKASH_REJECTED ||
		sqlerrcode == MAKE_SQLSTATE('E', 'K', '0', '0', '7') ||
		(class0 == '2' && class1 == '2') ||
		sqlerrcode == ERRCODE_FEATURE_NOT_SUPPORTED ||
		sqlerrcode == ERRCODE_UNDEFINED_OBJECT)
		return "failed";
	if (last_attempt)
		return "dead";
	/* May have happened: the key is unknown, and is checked before a resend. */
	if (sqlerrcode == ERRCODE_ENKASH_OUTCOME_UNKNOWN ||
		enkash_answer_unreadable(sqlerrcode) ||
		sqlerrcode == ERRCODE_ENKASH_UNAVAILABLE ||
		sqlerrcode == ERRCODE_QUERY_CANCELED)
		return "unknown";
	return "pending";
}

/* Capped exponential backoff with jitter (half to all of the step). */
static double
backoff_seconds(int attempts)
{
	double		step = enkash_retry_base_ms / 1000.0;

	for (int i = 1; i < attempts && step < enkash_retry_max_ms / 1000.0; i++)
		step *= 2;
	step = Min(step, enkash_retry_max_ms / 1000.0);
	return step * (0.5 + 0.5 * pg_prng_double(&pg_global_prng_state));
}

static void
record_outcome(const QueuedCall *call, const char *state, const char *response,
			   const char *sqlstate, const char *message)
{
	Oid			types[6] = {INT8OID, TEXTOID, JSONBOID, TEXTOID, TEXTOID, FLOAT8OID};
	Datum		values[6];
	char		nulls[6] = {' ', ' ', ' ', ' ', ' ', ' '};

	values[0] = Int64GetDatum(call->id);
	values[1] = CStringGetTextDatum(state);
	values[2] = response ? DirectFunctionCall1(jsonb_in, CStringGetDatum(response)) : (Datum) 0;
	nulls[2] = response ? ' ' : 'n';
	values[3] = sqlstate ? CStringGetTextDatum(sqlstate) : (Datum) 0;
	nulls[3] = sqlstate ? ' ' : 'n';
	values[4] = message ? CStringGetTextDatum(message) : (Datum) 0;
	nulls[4] = message ? ' ' : 'n';
	/*
	 * "unknown" waits for EnKash to finish, as a synchronous retry would;
	 * and EnKash's Retry-After (429, 503) is honoured.
	 */
	values[5] = Float8GetDatum(Max(strcmp(state, "unknown") == 0 ?
								   Max(backoff_seconds(call->attempts),
									   enkash_unknown_grace_ms / 1000.0) :
								   backoff_seconds(call->attempts),
								   (double) call->retry_after));

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	SPI_connect();
	PushActiveSnapshot(GetTransactionSnapshot());
	if (SPI_execute_with_args(
			"UPDATE enkash.requests SET state = $2, response = coalesce($3, response), "
			"  last_sqlstate = $4, last_error = $5, sender_pid = NULL, updated_at = now(), "
			"  next_attempt_at = now() + make_interval(secs => $6), "
			"  finished_at = CASE WHEN $2 IN ('succeeded', 'failed', 'dead') THEN now() END, "
			"  errors = CASE WHEN $4 IS NULL THEN errors ELSE errors || jsonb_build_array("
			"    jsonb_build_object('attempt', attempts, 'at', now(), 'sqlstate', $4, 'error', $5)) END "
			"WHERE id = $1", 6, types, values, nulls, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "could not record the outcome in enkash.requests");
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
}

/* Sends one claimed row through the normal path and records what happened. */
static void
send_call(QueuedCall *call)
{
	MemoryContext cxt = CurrentMemoryContext;
	const EnkashEndpoint *ep = enkash_endpoint_by_name(call->endpoint);
	char	   *volatile response = NULL;
	ErrorData  *volatile edata = NULL;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PG_TRY();
	{
		Jsonb	   *payload;

		if (ep == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_OBJECT),
					 errmsg("unknown EnKash endpoint \"%s\"", call->endpoint)));
		payload = enkash_send(ep, call->body, strlen(call->body), call->key);
		payload = enkash_mask(payload);
		response = MemoryContextStrdup(cxt, JsonbToCString(NULL, &payload->root,
														   VARSIZE(payload)));
		CommitTransactionCommand();
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		AbortCurrentTransaction();
	}
	PG_END_TRY();
	MemoryContextSwitchTo(cxt);

	call->retry_after = enkash_last_retry_after;
	if (edata == NULL)
		record_outcome(call, "succeeded", response, NULL, NULL);
	else
		record_outcome(call, state_after(edata->sqlerrcode,
										 call->attempts >= call->max_attempts),
					   NULL, unpack_sql_state(edata->sqlerrcode), edata->message);
}

/* Rows left "sending" by a sender that is gone may have been sent. */
static void
release_orphans(void)
{
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	SPI_connect();
	PushActiveSnapshot(GetTransactionSnapshot());
	if (outbox_installed() &&
		SPI_execute("UPDATE enkash.requests SET state = 'unknown', sender_pid = NULL, "
					"  next_attempt_at = now(), updated_at = now() "
					"WHERE state = 'sending' AND NOT EXISTS "
					"  (SELECT 1 FROM pg_stat_activity a WHERE a.pid = sender_pid)",
					false, 0) == SPI_OK_UPDATE && SPI_processed > 0)
		ereport(LOG,
				(errmsg("enkash sender: %llu queued requests were being sent by a sender that stopped; they will be checked with EnKash before any resend",
						(unsigned long long) SPI_processed)));
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
}

void
enkash_sender_main(Datum arg)
{
	int			role;
	MemoryContext call_cxt;
	static TimestampTz last_orphan_check = 0;

	memcpy(&role, MyBgworkerEntry->bgw_extra, sizeof(role));
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnectionByOid(DatumGetObjectId(arg), InvalidOid, 0);
	call_cxt = AllocSetContextCreate(TopMemoryContext, "enkash sender call",
									 ALLOCSET_DEFAULT_SIZES);

	for (;;)
	{
		QueuedCall	call;
		volatile bool sent = false;

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}

		PG_TRY();
		{
			/* One sender keeps the token fresh and tidies after crashes. */
			if (role == 1)
			{
				StartTransactionCommand();
				enkash_token_refresh_if_due();
				CommitTransactionCommand();
				if (TimestampDifferenceExceeds(last_orphan_check, GetCurrentTimestamp(), 5000))
				{
					release_orphans();
					last_orphan_check = GetCurrentTimestamp();
				}
			}
			if (claim_next(&call, call_cxt))
			{
				pgstat_report_activity(STATE_RUNNING, "enkash: sending a queued request");
				send_call(&call);
				pgstat_report_activity(STATE_IDLE, NULL);
				sent = true;
			}
		}
		PG_CATCH();
		{
			EmitErrorReport();
			AbortCurrentTransaction();
			FlushErrorState();
		}
		PG_END_TRY();
		MemoryContextReset(call_cxt);

		if (!sent)
			enkash_outbox_sleep(1000);
	}
}
