/*-------------------------------------------------------------------------
 *
 * outbox_rows.c
 *	  The sender's statements over enkash.requests: claiming due rows (and
 *	  the keys of new money calls), writing outcomes one row or many at a
 *	  time, the retry policy that decides a row's next state, and rows left
 *	  behind by a sender that stopped.
 *
 *-------------------------------------------------------------------------
 */
#include "outbox_internal.h"
#include "effect.h"
#include "installed.h"
#include "live.h"
#include "timeline.h"

#include "access/xact.h"
#include "catalog/pg_language.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_type.h"
#include "common/pg_prng.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "parser/parse_func.h"
#include "postmaster/interrupt.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/syscache.h"

MemoryContext sender_cxt = NULL;
static SPIPlanPtr plan_claim = NULL;
static SPIPlanPtr plan_outcome = NULL;
static SPIPlanPtr plan_outcomes = NULL;

const Oid outcome_types[OUTCOME_COLUMNS] = {
	INT8OID, TEXTOID, JSONBOID, TEXTOID, TEXTOID, FLOAT8OID, INT4OID, FLOAT8OID
};

bool
outbox_installed(void)
{
	return enkash_installed() && enkash_live_here();
}

/* Commits the sender's own transaction (enkash_spi_begin). */
void
commit_work(void)
{
	/* claims and outcomes of money: on disk before a request leaves */
	enkash_durable_commit();
	enkash_spi_commit(false);
}

/* Where the outcome goes: the same for one row ($1 ...) and many (u.*). */
#define OUTCOME_SET(id, state, response, sqlstate, error, wait, http_status, latency_ms) \
	"UPDATE enkash.requests r SET state = " state ", response = coalesce(" response ", r.response), " \
	"  last_sqlstate = " sqlstate ", last_error = " error ", sender_pid = NULL, updated_at = now(), " \
	"  next_attempt_at = now() + make_interval(secs => " wait "), " \
	"  http_status = " http_status ", latency_ms = " latency_ms ", " \
	"  finished_at = CASE WHEN " state " IN ('succeeded', 'failed', 'dead') THEN now() END, " \
	"  errors = CASE WHEN " sqlstate " IS NULL THEN r.errors ELSE r.errors || jsonb_build_array(" \
	"    jsonb_build_object('attempt', r.attempts, 'at', now(), 'sqlstate', " sqlstate ", " \
	"                       'error', " error ")) END "

/*
 * The claim: the body of the SQL function enkash.claim_requests(max_rows,
 * due_by), prepared as the sender's own statement.  One definition (the
 * function stays for tests and people), without a function call and a
 * tuplestore between the UPDATE and the sender on every claim.
 */
static SPIPlanPtr
prepare_claim(void)
{
	Oid			types[2] = {INT4OID, TIMESTAMPTZOID};
	Oid			fn;
	HeapTuple	tuple;
	bool		isnull;
	char	   *body;

	fn = LookupFuncName(list_make2(makeString("enkash"), makeString("claim_requests")),
						lengthof(types), types, false);
	tuple = SearchSysCache1(PROCOID, ObjectIdGetDatum(fn));
	if (!HeapTupleIsValid(tuple))
		elog(ERROR, "cache lookup failed for function %u", fn);
	if (((Form_pg_proc) GETSTRUCT(tuple))->prolang != SQLlanguageId)
		elog(ERROR, "enkash.claim_requests is not a SQL function");
	body = TextDatumGetCString(SysCacheGetAttr(PROCOID, tuple, Anum_pg_proc_prosrc,
											  &isnull));
	ReleaseSysCache(tuple);
	return enkash_keep_generic_plan(body, lengthof(types), types);
}

/* The outcomes of a batch, one array per column (ids, states, ...). */
static SPIPlanPtr
prepare_outcomes(void)
{
	return enkash_prepare_columns(
		OUTCOME_SET("u.id", "u.state", "u.response", "u.sqlstate", "u.error", "u.wait",
					"u.http_status", "u.latency_ms")
		"FROM unnest($1, $2, $3, $4, $5, $6, $7, $8) "
		"  AS u(id, state, response, sqlstate, error, wait, http_status, latency_ms) "
		"WHERE r.id = u.id", outcome_types, OUTCOME_COLUMNS);
}

static void
prepare_plans(void)
{
	if (plan_outcomes)
		return;
	plan_claim = prepare_claim();
	plan_outcome = enkash_keep_generic_plan(
		OUTCOME_SET("$1", "$2", "$3", "$4", "$5", "$6", "$7", "$8")
		"WHERE r.id = $1", OUTCOME_COLUMNS, (Oid *) outcome_types);
	plan_outcomes = prepare_outcomes();
}

/*
 * In PG_CATCH: logs the error and ends the transaction, back in cxt.  The
 * cancel that SIGTERM makes to stop the sender is no error.
 */
void
log_and_abort(MemoryContext cxt)
{
	MemoryContextSwitchTo(cxt);
	if (!(ShutdownRequestPending && geterrcode() == ERRCODE_QUERY_CANCELED))
		EmitErrorReport();
	FlushErrorState();
	AbortCurrentTransaction();
}

/*
 * Whether a call whose outcome is unknown may go again: a money call's key
 * is checked with EnKash first, and a look-up changes nothing; any other
 * write might be applied twice.
 */
static bool
may_resend(const QueuedCall *call)
{
	return call->ep != NULL &&
		(call->ep->kind == ENKASH_READ || (call->ep->kind == ENKASH_MONEY && call->key != NULL));
}

/* What an error means for a queued row. */
static const char *
state_after(int sqlerrcode, bool request_left, const EnkashHttpResult *http,
			bool last_attempt, bool resendable)
{
	switch (enkash_error_effect(sqlerrcode, request_left, http))
	{
		case ENKASH_DECLINED:
		case ENKASH_NOT_APPLIED_FINAL:
			return "failed";
		case ENKASH_NOT_APPLIED:
			return last_attempt ? "dead" : "pending";
		case ENKASH_MAYBE_APPLIED:
			break;
	}
	/*
	 * May have happened: a key is looked up at EnKash before a resend; a
	 * write without a key is never resent (a person checks it).
	 */
	return resendable && !last_attempt ? "unknown" : "dead";
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

/*
 * A row's outcome as plan_outcome takes it.  error NULL: succeeded with
 * response; else the state follows from it, from whether the request left
 * and from the HTTP answer (NULL if none came).
 */
void
outcome_args(const QueuedCall *call, Jsonb *response, ErrorData *error,
			 bool request_left, const EnkashHttpResult *http,
			 Datum *values, char *nulls)
{
	const char *state = error ? state_after(error->sqlerrcode, request_left, http,
											call->attempts >= call->max_attempts,
											may_resend(call))
		: "succeeded";
	double		wait;

	/*
	 * "unknown" waits for EnKash to finish, as a synchronous retry would,
	 * as does a key refused as too soon to ask EnKash about (55P03); and
	 * EnKash's Retry-After (429, 503) is honoured.
	 */
	wait = backoff_seconds(call->attempts);
	if (strcmp(state, "unknown") == 0 ||
		(error && error->sqlerrcode == ERRCODE_LOCK_NOT_AVAILABLE))
		wait = Max(wait, enkash_unknown_grace_ms / 1000.0);
	wait = Max(wait, (double) call->retry_after);

	memset(nulls, ' ', OUTCOME_COLUMNS);
	values[0] = Int64GetDatum(call->id);
	values[1] = CStringGetTextDatum(state);
	values[2] = response ? JsonbPGetDatum(response) : (Datum) 0;
	nulls[2] = response ? ' ' : 'n';
	values[3] = error ? CStringGetTextDatum(unpack_sql_state(error->sqlerrcode)) : (Datum) 0;
	nulls[3] = error ? ' ' : 'n';
	values[4] = error && error->message ? CStringGetTextDatum(error->message) : (Datum) 0;
	nulls[4] = error && error->message ? ' ' : 'n';
	values[5] = Float8GetDatum(wait);
	values[6] = Int32GetDatum(http && http->outcome == ENKASH_HTTP_OK ? (int32) http->status : 0);
	nulls[6] = http && http->outcome == ENKASH_HTTP_OK ? ' ' : 'n';
	values[7] = Float8GetDatum(http ? http->seconds * 1000.0 : 0);
	nulls[7] = http ? ' ' : 'n';
}

/* Writes one row's outcome in the current transaction (SPI connected). */
static void
write_outcome_args(Datum *values, char *nulls)
{
	prepare_plans();
	if (enkash_execute_pinned(plan_outcome, values, nulls) != SPI_OK_UPDATE)
		elog(ERROR, "could not record the outcome in enkash.requests");
}

/* The same in a transaction of its own (the ordinary path). */
void
record_outcome(const QueuedCall *call, Jsonb *response, ErrorData *error,
			   bool request_left, const EnkashHttpResult *http)
{
	Datum		values[OUTCOME_COLUMNS];
	char		nulls[OUTCOME_COLUMNS];

	enkash_spi_begin(NULL);
	outcome_args(call, response, error, request_left, http, values, nulls);
	write_outcome_args(values, nulls);
	commit_work();
}

static void
write_outcomes_together(void *arg)
{
	enkash_columns_execute((EnkashColumns *) arg, plan_outcomes, SPI_OK_UPDATE);
}

/* Writes the outcomes gathered in rows: with one statement, or one at a time. */
void
write_outcomes(EnkashColumns *rows)
{
	prepare_plans();
	if (rows->count > 1 && enkash_try_together(write_outcomes_together, rows))
		return;
	for (int i = 0; i < rows->count; i++)
	{
		Datum		values[OUTCOME_COLUMNS];
		char		nulls[OUTCOME_COLUMNS];

		enkash_columns_row(rows, i, values, nulls);
		write_outcome_args(values, nulls);
	}
}

/*
 * Rows left "sending" by a sender that is gone may have been sent: unknown,
 * checked with EnKash before a resend; a write without a key cannot be
 * checked, so it is dead, with the error, never resent (may_resend).
 */
void
release_orphans(void)
{
	Oid			type = TEXTARRAYOID;
	Datum		reads;
	int			nreads = 0;
	Datum	   *names;

	enkash_spi_begin(NULL);
	for (const EnkashEndpoint *e = enkash_endpoints; e->function; e++)
		nreads++;
	names = palloc(sizeof(Datum) * nreads);
	nreads = 0;
	for (const EnkashEndpoint *e = enkash_endpoints; e->function; e++)
		if (e->kind == ENKASH_READ)
			names[nreads++] = CStringGetTextDatum(e->name);
	reads = PointerGetDatum(construct_array(names, nreads, TEXTOID, -1, false, TYPALIGN_INT));
	if (outbox_installed() &&
		SPI_execute_with_args(
			"UPDATE enkash.requests r SET state = CASE WHEN o.lost THEN 'dead' ELSE 'unknown' END, "
			"  sender_pid = NULL, next_attempt_at = now(), updated_at = now(), "
			"  finished_at = CASE WHEN o.lost THEN now() END, "
			"  last_sqlstate = CASE WHEN o.lost THEN 'NK006' ELSE r.last_sqlstate END, "
			"  last_error = CASE WHEN o.lost THEN o.error ELSE r.last_error END, "
			"  errors = CASE WHEN o.lost THEN r.errors || jsonb_build_array(jsonb_build_object("
			"    'attempt', r.attempts, 'at', now(), 'sqlstate', 'NK006', 'error', o.error)) "
			"    ELSE r.errors END "
			"FROM (SELECT q.id, q.idempotency_key IS NULL AND q.endpoint <> ALL ($1) AS lost, "
			"             'the enkash sender stopped while sending it: it may have happened, "
			"and it is not sent again' AS error "
			"      FROM enkash.requests q WHERE q.state = 'sending' AND NOT EXISTS "
			"        (SELECT 1 FROM pg_stat_activity a WHERE a.pid = q.sender_pid)) o "
			"WHERE r.id = o.id",
			1, &type, &reads, NULL, false, 0) == SPI_OK_UPDATE && SPI_processed > 0)
		ereport(LOG,
				(errmsg("enkash sender: %llu queued requests were being sent by a sender that stopped; they will be checked with EnKash before any resend",
						(unsigned long long) SPI_processed)));
	commit_work();
}

/* Calls claimed by the current transaction: for the multi handle, or not. */
QueuedCall *claimed_multi = NULL;
QueuedCall *claimed_ordinary = NULL;

/*
 * Claims keys in a subtransaction (SPI connected): NULL, or the error that
 * undid them all, copied into cxt.
 */
static ErrorData *
claim_keys_or_error(LedgerNewKey *keys, int nkeys, const char *role, MemoryContext cxt)
{
	MemoryContext old = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	ErrorData  *volatile error = NULL;

	BeginInternalSubTransaction(NULL);
	PG_TRY();
	{
		enkash_ledger_claim_new_keys(keys, nkeys, role);
		ReleaseCurrentSubTransaction();
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(cxt);
		error = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		for (int i = 0; i < nkeys; i++)
			keys[i].claimed = false;
	}
	PG_END_TRY();
	MemoryContextSwitchTo(old);
	CurrentResourceOwner = owner;
	return error;
}

/*
 * Claims up to room due rows, and for each new money call its key, in the
 * current transaction, onto claimed_multi and claimed_ordinary.  The keys
 * of the batch are claimed together (enkash_ledger_claim_new_keys); if that
 * fails, one at a time, so that a key that cannot be claimed (too long for
 * the ledger's index, say) fails its own row only: that row's outcome is
 * written at once, its attempt counted, and the others go on.
 */
void
claim_rows(int room, const char *role)
{
	Datum		args[2];
	SPITupleTable *rows;
	uint64		nrows;
	QueuedCall **calls;
	LedgerNewKey *keys;
	ErrorData **key_errors;
	ErrorData  *error;
	int			nkeys = 0;
	bool		look_first;
	int			col_id,
				col_endpoint,
				col_body,
				col_key,
				col_attempts,
				col_max_attempts;

	/* max_rows, and due_by as the function's default: now() */
	args[0] = Int32GetDatum(room);
	args[1] = TimestampTzGetDatum(GetCurrentTransactionStartTimestamp());
	prepare_plans();
	if (enkash_execute_pinned(plan_claim, args, NULL) != SPI_OK_UPDATE_RETURNING)
		elog(ERROR, "could not claim rows of enkash.requests");
	/* the key claims below run statements of their own */
	rows = SPI_tuptable;
	nrows = SPI_processed;
	if (nrows == 0)
		return;
	/* RETURNING r.*: the columns by name */
	col_id = SPI_fnumber(rows->tupdesc, "id");
	col_endpoint = SPI_fnumber(rows->tupdesc, "endpoint");
	col_body = SPI_fnumber(rows->tupdesc, "body");
	col_key = SPI_fnumber(rows->tupdesc, "idempotency_key");
	col_attempts = SPI_fnumber(rows->tupdesc, "attempts");
	col_max_attempts = SPI_fnumber(rows->tupdesc, "max_attempts");
	if (col_id <= 0 || col_endpoint <= 0 || col_body <= 0 || col_key <= 0 ||
		col_attempts <= 0 || col_max_attempts <= 0)
		elog(ERROR, "enkash.claim_requests does not return the columns of enkash.requests");
	/* a new load may have been sent by a predecessor: the ordinary path asks */
	look_first = enkash_timeline_is_new();
	calls = palloc(sizeof(QueuedCall *) * nrows);
	keys = palloc0(sizeof(LedgerNewKey) * nrows);
	key_errors = palloc0(sizeof(ErrorData *) * nrows);
	for (uint64 r = 0; r < nrows; r++)
	{
		HeapTuple	tuple = rows->vals[r];
		TupleDesc	desc = rows->tupdesc;
		MemoryContext cxt = AllocSetContextCreate(sender_cxt, "enkash queued call",
												  ALLOCSET_SMALL_SIZES);
		MemoryContext old = MemoryContextSwitchTo(cxt);
		QueuedCall *call = palloc0(sizeof(QueuedCall));
		bool		isnull;

		call->cxt = cxt;
		call->id = DatumGetInt64(SPI_getbinval(tuple, desc, col_id, &isnull));
		call->endpoint = SPI_getvalue(tuple, desc, col_endpoint);
		call->body = SPI_getvalue(tuple, desc, col_body);
		call->key = SPI_getvalue(tuple, desc, col_key);
		call->attempts = DatumGetInt32(SPI_getbinval(tuple, desc, col_attempts, &isnull));
		call->max_attempts = DatumGetInt32(SPI_getbinval(tuple, desc, col_max_attempts,
														 &isnull));
		call->ep = enkash_endpoint_by_name(call->endpoint);
		MemoryContextSwitchTo(old);
		calls[r] = call;

		call->look_first = look_first && call->ep != NULL &&
			enkash_endpoint_reconciles(call->ep);

		/* A new money call's key is claimed below; a look-up needs none. */
		if (call->ep != NULL && call->ep->kind == ENKASH_MONEY && call->key != NULL &&
			!call->look_first)
		{
			size_t		len = strlen(call->body);
			LedgerNewKey *k = &keys[nkeys++];

			k->endpoint = call->ep->name;
			k->key = call->key;
			k->fingerprint = enkash_request_fingerprint(call->ep, call->body, len);
			k->request = enkash_mask_request(call->body, len);
		}
	}
	if (nkeys > 0 &&
		(error = claim_keys_or_error(keys, nkeys, role, CurrentMemoryContext)) != NULL)
	{
		ereport(DEBUG1,
				(errmsg("enkash sender: claiming a batch of keys failed, claiming them one at a time: %s",
						error->message)));
		FreeErrorData(error);
		for (uint64 r = 0, i = 0; r < nrows; r++)
			if (calls[r]->ep != NULL && calls[r]->ep->kind == ENKASH_MONEY &&
				calls[r]->key != NULL && !calls[r]->look_first)
			{
				key_errors[i] = claim_keys_or_error(&keys[i], 1, role, calls[r]->cxt);
				i++;
			}
	}

	/*
	 * A money call whose key has never been used goes out at once; any
	 * other state of its key needs the ordinary path's decisions.
	 */
	nkeys = 0;
	for (uint64 r = 0; r < nrows; r++)
	{
		QueuedCall *call = calls[r];
		bool		on_multi;

		if (call->ep == NULL)
			on_multi = false;
		else if (call->ep->kind != ENKASH_MONEY)
			on_multi = true;
		else if (call->key == NULL || call->look_first)
			on_multi = false;
		else if ((error = key_errors[nkeys++]) != NULL)
		{
			/* nothing was sent: this attempt ends here, with its error */
			Datum		values[OUTCOME_COLUMNS];
			char		nulls[OUTCOME_COLUMNS];

			outcome_args(call, NULL, error, false, NULL, values, nulls);
			write_outcome_args(values, nulls);
			forget_call(call);
			continue;
		}
		else
		{
			LedgerNewKey *k = &keys[nkeys - 1];

			on_multi = k->claimed;
			call->key_id = k->key_id;
			call->key_attempt = k->attempt;
			call->audit_id = k->audit_id;
		}
		if (on_multi)
		{
			call->next = claimed_multi;
			claimed_multi = call;
		}
		else
		{
			call->next = claimed_ordinary;
			claimed_ordinary = call;
		}
	}
}

void
forget_call(QueuedCall *call)
{
	MemoryContextDelete(call->cxt);
}

void
forget_calls(QueuedCall *calls)
{
	while (calls)
	{
		QueuedCall *next = calls->next;

		forget_call(calls);
		calls = next;
	}
}
/*
 * The calls held ready never left: their keys are released (the audit log
 * says they were not sent) and their rows go back to the queue without
 * counting the attempt, to be sent at once after a restart rather than
 * checked with EnKash first.  Returns how many.
 */
int
put_back_calls(QueuedCall *ready)
{
	ErrorData  *stopped = palloc0(sizeof(ErrorData));
	int			nready = 0;
	int64	   *ids;
	Datum		arg;
	Oid			type = INT8ARRAYOID;
	LedgerBatch *batch;

	for (QueuedCall *call = ready; call; call = call->next)
		nready++;
	ids = palloc(sizeof(int64) * nready);
	stopped->sqlerrcode = ERRCODE_ADMIN_SHUTDOWN;
	stopped->message = "not sent: the enkash sender stopped first";
	batch = enkash_ledger_batch(GetUserNameFromId(GetUserId(), false), nready);
	nready = 0;
	for (QueuedCall *call = ready; call; call = call->next)
	{
		if (call->key_id != 0)
			enkash_finish_unsent(call->ep, call->body, strlen(call->body), call->key,
								 call->key_id, call->key_attempt, call->audit_id,
								 stopped, batch);
		ids[nready++] = call->id;
	}
	enkash_ledger_write(batch);
	arg = enkash_int8_array(ids, nready);
	if (SPI_execute_with_args("UPDATE enkash.requests SET state = 'pending', "
							  "  attempts = attempts - 1, sender_pid = NULL, "
							  "  next_attempt_at = now(), updated_at = now() "
							  "WHERE id = ANY ($1) AND state = 'sending'",
							  1, &type, &arg, NULL, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "could not put queued requests back");
	return nready;
}
