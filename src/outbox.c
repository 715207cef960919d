/*-------------------------------------------------------------------------
 *
 * outbox.c
 *	  The transactional outbox: enqueue in the caller's transaction, send
 *	  after COMMIT from the enkash senders, exactly once, with retries.
 *
 * A row of enkash.requests commits with the caller's transaction or not at
 * all, so a rolled-back payroll row never sends anything.
 *
 * The enkash sender, one background worker, sends them concurrently: it
 * claims due rows with the body of enkash.claim_requests (FOR UPDATE SKIP
 * LOCKED, so no two claimers hold a row) and, in the same transaction, the
 * idempotency key of each new money call with its "sent" audit row; only
 * after that commits does anything leave, on one curl multi handle with at
 * most enkash.max_concurrency transfers in flight and connections reused.
 * Outcomes are written as transfers finish (gathered for a few ms), many
 * to a commit, together with the next claims; keys, audit rows and queued
 * rows each with one statement for the batch (unnest of arrays), one row
 * at a time if that fails.  A row whose key was used before (a replay, a
 * mismatch, an unknown outcome to reconcile with EnKash) takes the
 * ordinary synchronous money path instead, one at a time.  Transient
 * failures are retried with capped exponential backoff and jitter; rows
 * that exhaust enkash.max_attempts end "dead" with their error history.
 *
 * Never blindly resent: a transfer that fails after its request may have
 * left makes the key and the row unknown, and libcurl may not re-send a
 * money body on its own (transport.c).  A sender that dies leaves rows
 * "sending" and keys in flight; they count as unknown afterwards.  One told
 * to stop (SIGTERM) first puts back the rows it has not sent and records
 * the answers it already has.
 *
 *-------------------------------------------------------------------------
 */
#include "enkash.h"

#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "catalog/pg_language.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_type.h"
#include "commands/dbcommands.h"
#include "common/pg_prng.h"
#include "endpoints.h"
#include "executor/spi.h"
#include "enkash_spi.h"
#include "ledger.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "parser/parse_func.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "stoppoint.h"
#include "storage/ipc.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"

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

static SPIPlanPtr plan_enqueue = NULL;

static Oid
rel_owner(Oid relid)
{
	HeapTuple	tuple = SearchSysCache1(RELOID, ObjectIdGetDatum(relid));
	Oid			owner;

	if (!HeapTupleIsValid(tuple))
		elog(ERROR, "cache lookup failed for relation %u", relid);
	owner = ((Form_pg_class) GETSTRUCT(tuple))->relowner;
	ReleaseSysCache(tuple);
	return owner;
}

/*
 * A queued body is stored until it is sent, so it may carry no secret: no
 * member that any endpoint's table marks secret (OTP, MFA code, PIN block).
 */
static void
refuse_secrets(const EnkashEndpoint *ep, Jsonb *body)
{
	for (const EnkashEndpoint *e = enkash_endpoints; e->function; e++)
		for (const EnkashField *f = e->fields; f->arg; f++)
		{
			JsonbValue	v;

			if ((f->flags & EF_SECRET) && f->json &&
				getKeyJsonValueFromContainer(&body->root, f->json, strlen(f->json), &v) &&
				v.type != jbvNull)
				ereport(ERROR,
						(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
						 errmsg("%s cannot be queued with \"%s\" in its body", ep->label, f->json),
						 errdetail("A queued request is stored in enkash.requests until it is sent, and one-time passwords, MFA codes and PIN blocks are never stored."),
						 errhint("Call %s() instead: it sends the request at once.", ep->function)));
		}
}

/* Only the sender of enkash.database sends: a row queued elsewhere would wait forever. */
static void
require_sender_database(void)
{
	char	   *here = get_database_name(MyDatabaseId);

	if (here == NULL || strcmp(here, enkash_database) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("cannot queue EnKash requests in database \"%s\"", here ? here : "?"),
				 errdetail("The enkash sender sends only the requests queued in database \"%s\" (enkash.database).",
						   enkash_database),
				 errhint("Queue them in database \"%s\", or set enkash.database to this database and restart.",
						 enkash_database)));
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
	Oid			requests;
	Oid			save_userid;
	int			save_sec_context;
	int			save_nestlevel;

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
	enkash_check_key(key);
	values[1] = DirectFunctionCall1(jsonb_in, CStringGetDatum(body));
	refuse_secrets(ep, DatumGetJsonbP(values[1]));
	require_sender_database();
	requests = get_relname_relid("requests", get_namespace_oid("enkash", true));
	if (!OidIsValid(requests))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("the enkash extension is not installed in this database")));

	values[0] = CStringGetTextDatum(ep->name);
	values[2] = key ? CStringGetTextDatum(key) : (Datum) 0;
	nulls[2] = key ? ' ' : 'n';
	/* Who queued it: the session's role, not a SECURITY DEFINER's owner. */
	values[3] = CStringGetTextDatum(GetUserNameFromId(GetOuterUserId(), false));

	/*
	 * EXECUTE on the function is the whole grant: the row is written with the
	 * rights of the table's owner (callers get no privilege on enkash.*,
	 * which would let them queue any body), under a pinned search_path so
	 * that nothing the caller planted can run with those rights.  An error
	 * restores both, as it does for a SECURITY DEFINER function.
	 */
	GetUserIdAndSecContext(&save_userid, &save_sec_context);
	SetUserIdAndSecContext(rel_owner(requests),
						   save_sec_context | SECURITY_LOCAL_USERID_CHANGE |
						   SECURITY_RESTRICTED_OPERATION);
	save_nestlevel = NewGUCNestLevel();
	(void) set_config_option("search_path", ENKASH_SAFE_SEARCH_PATH, PGC_USERSET,
							 PGC_S_SESSION, GUC_ACTION_SAVE, true, 0, false);

	SPI_connect();
	/* Kept for the backend's life: a payroll trigger queues row after row. */
	if (plan_enqueue == NULL)
		plan_enqueue = enkash_keep_plan(
			"INSERT INTO enkash.requests "
			"  (endpoint, body, idempotency_key, created_by, max_attempts) "
			"VALUES ($1, $2, $3, $4, "
			"        pg_catalog.current_setting('enkash.max_attempts')::pg_catalog.int4) "
			"RETURNING id", 4, types);
	if (SPI_execute_plan(plan_enqueue, values, nulls, false, 1) != SPI_OK_INSERT_RETURNING)
		elog(ERROR, "could not insert into enkash.requests");
	id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc,
									 1, &isnull));
	SPI_finish();

	AtEOXact_GUC(false, save_nestlevel);
	SetUserIdAndSecContext(save_userid, save_sec_context);

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
 * Sending (in the enkash sender)
 * ---------------------------------------------------------------------
 */

/* How often the sender looks for due rows while transfers are in flight. */
#define CLAIM_POLL_MS 100
/*
 * Finished transfers are recorded together once 1/GATHER_FRACTION of
 * enkash.max_concurrency have finished, none is left in flight, or the
 * first has waited GATHER_MS.
 */
#define GATHER_FRACTION 4
#define GATHER_MS 5
/*
 * Beyond the free places, this many more rows (1/RESERVE_FRACTION of
 * enkash.max_concurrency) are claimed, their keys committed, and held
 * ready: a transfer that finishes is replaced at once, not after its
 * outcome has been recorded and the next rows claimed.
 */
#define RESERVE_FRACTION 4
/* How often rows left "sending" by a sender that died are looked for. */
#define ORPHAN_CHECK_MS 5000

/* A claimed row, from its claim to its recorded outcome. */
typedef struct QueuedCall
{
	int64		id;
	char	   *endpoint;
	char	   *body;
	char	   *key;
	int			attempts;
	int			max_attempts;
	int			retry_after;	/* seconds EnKash asked us to wait, if any */

	/* sent on the multi handle (else: the ordinary path, one at a time) */
	const EnkashEndpoint *ep;
	int64		key_id;			/* enkash.idempotency_keys.id, 0 if no key */
	int			key_attempt;	/* its attempt, which fences its outcome */
	int64		audit_id;
	uint64		token_generation;
	ErrorData  *start_error;	/* failed before the request could leave */
	MemoryContext cxt;			/* this call's memory */
	struct QueuedCall *next;
} QueuedCall;

static MemoryContext sender_cxt = NULL;
static SPIPlanPtr plan_claim = NULL;
static SPIPlanPtr plan_outcome = NULL;
static SPIPlanPtr plan_outcomes = NULL;

static void forget_call(QueuedCall *call);

/* A row's outcome as plan_outcome takes it (plan_outcomes: an array of each). */
#define OUTCOME_COLUMNS 8
static const Oid outcome_types[OUTCOME_COLUMNS] = {
	INT8OID, TEXTOID, JSONBOID, TEXTOID, TEXTOID, FLOAT8OID, INT4OID, FLOAT8OID
};

static bool
outbox_installed(void)
{
	return OidIsValid(get_relname_relid("requests", get_namespace_oid("enkash", true)));
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

/* A transaction with SPI and a snapshot, for the sender's own statements. */
static void
begin_work(void)
{
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	SPI_connect();
	PushActiveSnapshot(GetTransactionSnapshot());
}

static void
commit_work(void)
{
	/* claims and outcomes of money: on disk before a request leaves */
	enkash_durable_commit();
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
}

/*
 * In PG_CATCH: logs the error and ends the transaction, back in cxt.  The
 * cancel that SIGTERM makes to stop the sender is no error.
 */
static void
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
state_after(int sqlerrcode, bool last_attempt, bool resendable)
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
	/*
	 * May have happened: the key is unknown, and is checked before a
	 * resend; a write without a key is never resent (a person checks it).
	 */
	if (sqlerrcode == ERRCODE_ENKASH_OUTCOME_UNKNOWN ||
		enkash_answer_unreadable(sqlerrcode) ||
		sqlerrcode == ERRCODE_ENKASH_UNAVAILABLE ||
		sqlerrcode == ERRCODE_QUERY_CANCELED)
		return resendable ? "unknown" : "dead";
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

/*
 * A row's outcome as plan_outcome takes it.  error NULL: succeeded with
 * response; else the state follows from it.
 */
static void
outcome_args(const QueuedCall *call, Jsonb *response, ErrorData *error,
			 const EnkashHttpResult *http, Datum *values, char *nulls)
{
	const char *state = error ? state_after(error->sqlerrcode,
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
static void
record_outcome(const QueuedCall *call, Jsonb *response, ErrorData *error,
			   const EnkashHttpResult *http)
{
	Datum		values[OUTCOME_COLUMNS];
	char		nulls[OUTCOME_COLUMNS];

	begin_work();
	outcome_args(call, response, error, http, values, nulls);
	write_outcome_args(values, nulls);
	commit_work();
}

static void
write_outcomes_together(void *arg)
{
	enkash_columns_execute((EnkashColumns *) arg, plan_outcomes, SPI_OK_UPDATE);
}

/* Writes the outcomes gathered in rows: with one statement, or one at a time. */
static void
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

/* Sends one claimed row through the ordinary path and records what happened. */
static void
send_call(QueuedCall *call)
{
	MemoryContext cxt = CurrentMemoryContext;
	const EnkashEndpoint *ep = enkash_endpoint_by_name(call->endpoint);
	/* the answer and the error live as long as the call (forget_call) */
	Jsonb	   *volatile response = NULL;
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
		response = (Jsonb *) MemoryContextAlloc(call->cxt, VARSIZE(payload));
		memcpy(response, payload, VARSIZE(payload));
		CommitTransactionCommand();
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(call->cxt);
		edata = CopyErrorData();
		FlushErrorState();
		AbortCurrentTransaction();
	}
	PG_END_TRY();
	MemoryContextSwitchTo(cxt);

	call->retry_after = enkash_last_retry_after;
	record_outcome(call, response, edata, NULL);
}

/*
 * Rows left "sending" by a sender that is gone may have been sent: unknown,
 * checked with EnKash before a resend; a write without a key cannot be
 * checked, so it is dead, with the error, never resent (may_resend).
 */
static void
release_orphans(void)
{
	Oid			type = TEXTARRAYOID;
	Datum		reads;
	int			nreads = 0;
	Datum	   *names;

	begin_work();
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
			"  last_sqlstate = CASE WHEN o.lost THEN 'EK006' ELSE r.last_sqlstate END, "
			"  last_error = CASE WHEN o.lost THEN o.error ELSE r.last_error END, "
			"  errors = CASE WHEN o.lost THEN r.errors || jsonb_build_array(jsonb_build_object("
			"    'attempt', r.attempts, 'at', now(), 'sqlstate', 'EK006', 'error', o.error)) "
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
static QueuedCall *claimed_multi = NULL;
static QueuedCall *claimed_ordinary = NULL;

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
static void
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

		/* A new money call's key is claimed below; a look-up needs none. */
		if (call->ep != NULL && call->ep->kind == ENKASH_MONEY && call->key != NULL)
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
				calls[r]->key != NULL)
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
		else if (call->key == NULL)
			on_multi = false;
		else if ((error = key_errors[nkeys++]) != NULL)
		{
			/* nothing was sent: this attempt ends here, with its error */
			Datum		values[OUTCOME_COLUMNS];
			char		nulls[OUTCOME_COLUMNS];

			outcome_args(call, NULL, error, NULL, values, nulls);
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

static void
forget_call(QueuedCall *call)
{
	MemoryContextDelete(call->cxt);
}

static void
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
 * The outcome of a finished (or failed to start) transfer: its key and
 * audit row into batch, its row into outcomes; written by record_all.
 */
static void
record_sent(QueuedCall *call, const EnkashHttpResult *http, LedgerBatch *batch,
			EnkashColumns *outcomes)
{
	ErrorData  *error = call->start_error;
	Jsonb	   *response = NULL;
	size_t		len = strlen(call->body);
	Datum		values[OUTCOME_COLUMNS];
	char		nulls[OUTCOME_COLUMNS];

	if (error)
		enkash_finish_unsent(call->ep, call->body, len, call->key, call->key_id,
							 call->key_attempt, call->audit_id, error, batch);
	else
		response = enkash_finish_sent(call->ep, call->body, len, call->key,
									  call->key_id, call->key_attempt, call->audit_id, http,
									  call->token_generation, batch, &error);
	outcome_args(call, response, error, call->start_error ? NULL : http, values, nulls);
	enkash_columns_add(outcomes, values, nulls);
}

/* A finished transfer, between enkash_multi_done and its recorded outcome. */
typedef struct Finished
{
	QueuedCall *call;
	EnkashHttpResult http;
} Finished;

/*
 * Records the outcomes of finished transfers in the current transaction
 * (SPI connected): keys, audit rows and queued rows, each kind with one
 * statement for them all (one row at a time if that fails).
 */
static void
record_all(Finished *done, int ndone, const char *role)
{
	LedgerBatch *batch = enkash_ledger_batch(role, ndone);
	EnkashColumns outcomes;

	enkash_columns_init(&outcomes, outcome_types, OUTCOME_COLUMNS, ndone);
	for (int i = 0; i < ndone; i++)
		record_sent(done[i].call, &done[i].http, batch, &outcomes);
	enkash_ledger_write(batch);
	write_outcomes(&outcomes);
}

/* Records one outcome in a transaction of its own, after a failed batch. */
static void
record_alone(Finished *done)
{
	MemoryContext cxt = CurrentMemoryContext;

	PG_TRY();
	{
		begin_work();
		record_all(done, 1, GetUserNameFromId(GetUserId(), false));
		commit_work();
	}
	PG_CATCH();
	{
		/* its row stays "sending": unknown once this sender is gone */
		log_and_abort(cxt);
	}
	PG_END_TRY();
}

/*
 * Records the outcomes of finished transfers and claims up to room new
 * rows, in one transaction; the claimed calls are left in claimed_multi
 * (to start) and claimed_ordinary.  If that transaction fails, the
 * outcomes are written one per transaction, and nothing is claimed.
 */
static void
record_and_claim(Finished *done, int ndone, int room)
{
	MemoryContext cxt = CurrentMemoryContext;

	PG_TRY();
	{
		char	   *role;

		begin_work();
		role = GetUserNameFromId(GetUserId(), false);
		if (ndone > 0)
			record_all(done, ndone, role);
		if (room > 0 && outbox_installed())
			claim_rows(room, role);
		ENKASH_STOP_POINT(ndone > 0 ? "sender-record-before-commit" : NULL);
		ENKASH_STOP_POINT(claimed_multi ? "sender-claim-before-commit" : NULL);
		commit_work();
		ENKASH_STOP_POINT(ndone > 0 ? "sender-recorded" : NULL);
	}
	PG_CATCH();
	{
		log_and_abort(cxt);
		/* the claims were rolled back with it */
		forget_calls(claimed_multi);
		forget_calls(claimed_ordinary);
		claimed_multi = claimed_ordinary = NULL;
		for (int i = 0; i < ndone; i++)
			record_alone(&done[i]);
	}
	PG_END_TRY();
	MemoryContextSwitchTo(cxt);
	for (int i = 0; i < ndone; i++)
		forget_call(done[i].call);
}

/* Puts a claimed call on the wire (the key, if any, is committed). */
static void
start_call(QueuedCall *call)
{
	const char *base_url = enkash_require_setting("enkash.base_url", enkash_base_url);
	const char *partner_id = enkash_require_setting("enkash.partner_id", enkash_partner_id);
	char	   *url = psprintf("%s%s", base_url, enkash_endpoint_path(call->ep));
	char	   *partner_header = psprintf("partnerId: %s", partner_id);
	char		bearer[ENKASH_BEARER_MAX];
	const char *headers[ENKASH_API_HEADERS];
	size_t		len = strlen(call->body);
	const char *body = call->body;

	if (enkash_encrypt)
		body = enkash_seal_body(call->body, len, &len);
	call->token_generation = enkash_api_headers(headers, bearer, partner_header);
	PG_TRY();
	{
		/* Only look-ups may be re-sent by libcurl after a dead connection. */
		if (!enkash_multi_start(ENKASH_MAX_CONCURRENCY, url, headers, lengthof(headers),
								body, len, call->ep->kind == ENKASH_READ, call))
			elog(ERROR, "no free transfer for a queued request");
	}
	PG_FINALLY();
	{
		explicit_bzero(bearer, sizeof(bearer));
	}
	PG_END_TRY();
}

/*
 * Starts the calls, in a transaction (a token may have to be fetched).  A
 * call that cannot start is kept in *failed with its error, to be recorded
 * with the next outcomes.
 */
static void
start_calls(QueuedCall *calls, QueuedCall **failed)
{
	MemoryContext cxt = CurrentMemoryContext;
	QueuedCall *volatile next = calls;

	while (next)
	{
		SetCurrentStatementStartTimestamp();
		StartTransactionCommand();
		PG_TRY();
		{
			for (; next; next = next->next)
				start_call(next);
			CommitTransactionCommand();
		}
		PG_CATCH();
		{
			QueuedCall *call = next;

			MemoryContextSwitchTo(call->cxt);
			call->start_error = CopyErrorData();
			FlushErrorState();
			AbortCurrentTransaction();
			next = call->next;
			call->next = *failed;
			*failed = call;
		}
		PG_END_TRY();
		MemoryContextSwitchTo(cxt);
	}
}

/* The sender keeps the token fresh and tidies after crashes. */
static void
tidy(TimestampTz *last_orphan_check)
{
	PG_TRY();
	{
		StartTransactionCommand();
		enkash_token_refresh_if_due();
		CommitTransactionCommand();
		if (TimestampDifferenceExceeds(*last_orphan_check, GetCurrentTimestamp(),
									   ORPHAN_CHECK_MS))
		{
			release_orphans();
			*last_orphan_check = GetCurrentTimestamp();
		}
	}
	PG_CATCH();
	{
		log_and_abort(CurrentMemoryContext);
	}
	PG_END_TRY();
}

/* A call that needs the ordinary path's decisions (replay, reconcile, ...). */
static void
send_ordinary(QueuedCall *call)
{
	pgstat_report_activity(STATE_RUNNING, "enkash: sending a queued request");
	PG_TRY();
	{
		send_call(call);
	}
	PG_CATCH();
	{
		log_and_abort(CurrentMemoryContext);
	}
	PG_END_TRY();
}

/* Appends the list calls to *list; how many it appended. */
static int
append_calls(QueuedCall **list, QueuedCall *calls)
{
	int			count = 0;

	while (*list)
		list = &(*list)->next;
	*list = calls;
	for (; calls; calls = calls->next)
		count++;
	return count;
}

/* Takes up to n calls off the front of *list (*count of them). */
static QueuedCall *
take_calls(QueuedCall **list, int *count, int n)
{
	QueuedCall *taken = NULL;
	QueuedCall **tail = &taken;

	while (n-- > 0 && *list)
	{
		QueuedCall *call = *list;

		*list = call->next;
		call->next = NULL;
		*tail = call;
		tail = &call->next;
		(*count)--;
	}
	return taken;
}

/* Places for transfers, running or finished and not yet recorded. */
static int
free_transfers(void)
{
	return ENKASH_MAX_CONCURRENCY - enkash_multi_running();
}

/*
 * Starts up to n of the calls held ready, as free transfers allow; none
 * once the sender is told to stop: they are put back instead.
 */
static void
start_ready(QueuedCall **ready, int *nready, int n, QueuedCall **failed)
{
	if (!ShutdownRequestPending)
		start_calls(take_calls(ready, nready, Min(n, free_transfers())), failed);
}

/*
 * Moves finished transfers (up to take in all) and calls that could not
 * start into done[*ndone ...], keeping transfer_ms, the moving average of
 * how long transfers take.  Returns how many came from the multi handle.
 */
static int
collect_done(Finished *done, int *ndone, int take, QueuedCall **failed,
			 double *transfer_ms)
{
	void	   *owner;
	int			retry_after;
	int			finished = 0;

	while (*ndone < take &&
		   enkash_multi_done(&owner, &done[*ndone].http, &retry_after))
	{
		done[*ndone].call = owner;
		done[*ndone].call->retry_after = retry_after;
		*transfer_ms += (done[*ndone].http.seconds * 1000.0 - *transfer_ms) / 16;
		(*ndone)++;
		finished++;
	}
	ENKASH_STOP_POINT(finished > 0 ? "sender-answered" : NULL);
	while (*failed && *ndone < ENKASH_MAX_CONCURRENCY)
	{
		done[*ndone].call = *failed;
		memset(&done[*ndone].http, 0, sizeof(EnkashHttpResult));
		*failed = (*failed)->next;
		(*ndone)++;
	}
	return finished;
}

/*
 * The calls held ready never left: their keys are released (the audit log
 * says they were not sent) and their rows go back to the queue without
 * counting the attempt, to be sent at once after a restart rather than
 * checked with EnKash first.  Returns how many.
 */
static int
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

/* The same in a transaction of its own; if that fails, they stay "sending". */
static void
put_back(QueuedCall *ready)
{
	MemoryContext cxt = CurrentMemoryContext;

	if (ready == NULL)
		return;
	PG_TRY();
	{
		int			n;

		begin_work();
		n = put_back_calls(ready);
		commit_work();
		ereport(LOG,
				(errmsg("enkash sender: stopping; %d queued requests it had not sent yet are back in the queue",
						n)));
	}
	PG_CATCH();
	{
		/* checked with EnKash after the restart, as after a crash */
		log_and_abort(cxt);
	}
	PG_END_TRY();
	MemoryContextSwitchTo(cxt);
}

/*
 * Told to stop: puts back what was not sent and records the answers that
 * have already come, without waiting for any (a fast shutdown must not wait
 * on EnKash).  Transfers still out stay "sending" and are checked with
 * EnKash after the restart, as after a crash.
 */
static void
stop_sending(QueuedCall *ready, QueuedCall *failed, Finished *done, int ndone)
{
	double		transfer_ms = 0;

	put_back(ready);
	enkash_multi_wait(0);
	(void) collect_done(done, &ndone, ENKASH_MAX_CONCURRENCY, &failed, &transfer_ms);
	if (ndone > 0)
	{
		record_and_claim(done, ndone, 0);
		enkash_multi_release();
	}
	if (enkash_multi_running() > 0)
		ereport(LOG,
				(errmsg("enkash sender: stopping with %d requests still waiting for EnKash's answer; they will count as unknown, and a load is checked with EnKash before any resend",
						enkash_multi_running())));
}

/*
 * What SIGTERM does.  The sender stops at the top of its loop, through
 * stop_sending, so that no row it claimed and did not send is lost; a call
 * of its own in progress (a token, a row on the ordinary path) is cancelled
 * first, as a backend's would be.  Asleep with nothing in hand, it ends at
 * once.
 */
typedef enum SenderStop
{
	STOP_AT_TOP,
	STOP_CANCELLING,
	STOP_NOW
} SenderStop;

static volatile sig_atomic_t on_sigterm = STOP_AT_TOP;

static void
sender_sigterm(SIGNAL_ARGS)
{
	if (on_sigterm == STOP_NOW)
	{
		die(postgres_signal_arg);
		return;
	}
	if (on_sigterm == STOP_CANCELLING)
	{
		QueryCancelPending = true;
		InterruptPending = true;
	}
	SignalHandlerForShutdownRequest(postgres_signal_arg);
}

/* Between calls of its own: a cancel meant for the one that ended goes. */
static void
calls_of_own_done(void)
{
	on_sigterm = STOP_AT_TOP;
	QueryCancelPending = false;
}

void
enkash_sender_main(Datum arg)
{
	TimestampTz last_orphan_check = 0;
	TimestampTz last_claim = 0;
	TimestampTz first_done = 0;
	QueuedCall *failed = NULL;
	QueuedCall *ready = NULL;	/* claimed ahead, not started yet */
	int			nready = 0;
	double		transfer_ms = 0;	/* how long transfers take, on average */
	Finished   *done;
	int			ndone = 0;		/* finished, not recorded yet */
	int			nfinished = 0;	/* ... of them from the multi handle */
	bool		slept = true;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, sender_sigterm);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnectionByOid(DatumGetObjectId(arg), InvalidOid, 0);
	/* Its SQL runs as a superuser: ignore ALTER DATABASE/ROLE ... SET search_path. */
	SetConfigOption("search_path", ENKASH_SAFE_SEARCH_PATH, PGC_SUSET, PGC_S_OVERRIDE);
	sender_cxt = AllocSetContextCreate(TopMemoryContext, "enkash sender",
									   ALLOCSET_DEFAULT_SIZES);
	done = MemoryContextAlloc(sender_cxt, sizeof(Finished) * ENKASH_MAX_CONCURRENCY);

	for (;;)
	{
		QueuedCall *ordinary = NULL;
		QueuedCall *multi = NULL;
		bool		busy = false;
		bool		gathered;
		int			in_flight;
		int			room;
		int			reserve;
		int			take;
		TimestampTz now;

		CHECK_FOR_INTERRUPTS();
		if (ShutdownRequestPending)
		{
			stop_sending(ready, failed, done, ndone);
			proc_exit(0);
		}
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
		now = GetCurrentTimestamp();

		on_sigterm = STOP_CANCELLING;
		tidy(&last_orphan_check);
		calls_of_own_done();
		if (ShutdownRequestPending)
			continue;			/* nothing more is claimed or started */

		/*
		 * What finished, and what could not even start.  Transfers slower
		 * than two gatherings are taken a gather's worth at a time: those that
		 * finish together (they started together) are then recorded in a
		 * few short transactions, each followed by new transfers, rather
		 * than in one long one with their places idle until it ends.  Quick
		 * ones are all taken: fewer, larger transactions.
		 */
		take = transfer_ms > 2 * GATHER_MS ?
			Max(1, enkash_max_concurrency / GATHER_FRACTION) : ENKASH_MAX_CONCURRENCY;
		if (ndone == 0)
			first_done = now;
		nfinished += collect_done(done, &ndone, take, &failed, &transfer_ms);

		/*
		 * Outcomes are gathered for a few milliseconds while other transfers
		 * are still on their way, so that one transaction records (and
		 * claims) many rows: the statements cost about the same for 2 rows
		 * as for 20.
		 */
		in_flight = enkash_multi_running() - nfinished;
		room = enkash_max_concurrency - in_flight;
		if (ready && room > 0)
		{
			/* places freed: the calls held ready go at once */
			start_ready(&ready, &nready, room, &failed);
			in_flight = enkash_multi_running() - nfinished;
			room = enkash_max_concurrency - in_flight;
		}
		reserve = enkash_max_concurrency / RESERVE_FRACTION;
		gathered = ndone >= Max(1, enkash_max_concurrency / GATHER_FRACTION) ||
			in_flight == 0 || TimestampDifferenceExceeds(first_done, now, GATHER_MS);
		if ((ndone > 0 && gathered) || slept ||
			(room + reserve > nready &&
			 TimestampDifferenceExceeds(last_claim, now, CLAIM_POLL_MS)))
		{
			record_and_claim(done, ndone, Max(room + reserve - nready, 0));
			ndone = nfinished = 0;
			enkash_multi_release();
			last_claim = now;
			multi = claimed_multi;
			ordinary = claimed_ordinary;
			claimed_multi = claimed_ordinary = NULL;
			busy = multi != NULL || ordinary != NULL;
			ENKASH_STOP_POINT(multi ? "sender-claim-committed" : NULL);
			/* as many as there are places; the rest are held ready */
			nready += append_calls(&ready, multi);
			room = enkash_max_concurrency - (enkash_multi_running() - nfinished);
			start_ready(&ready, &nready, room, &failed);
		}
		slept = false;
		/* its writes in the statistics, for autovacuum (at most once a second) */
		pgstat_report_stat(false);

		/* Calls that need the ordinary path's decisions, one at a time. */
		on_sigterm = STOP_CANCELLING;
		while (ordinary && !ShutdownRequestPending)
		{
			QueuedCall *call = ordinary;

			send_ordinary(call);
			ordinary = call->next;
			forget_call(call);
		}
		calls_of_own_done();
		/* told to stop before: those not sent are put back with the rest */
		nready += append_calls(&ready, ordinary);

		if (enkash_multi_running() > nfinished)
		{
			pgstat_report_activity(STATE_RUNNING, "enkash: sending queued requests");
			enkash_multi_wait(ndone > 0 ? GATHER_MS : CLAIM_POLL_MS);
		}
		else if (!busy && failed == NULL && ndone == 0)
		{
			pgstat_report_activity(STATE_IDLE, NULL);
			on_sigterm = ready ? STOP_AT_TOP : STOP_NOW;
			if (!ShutdownRequestPending)
				enkash_outbox_sleep(1000);
			on_sigterm = STOP_AT_TOP;
			slept = true;
		}
	}
}
