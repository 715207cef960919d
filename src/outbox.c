/*-------------------------------------------------------------------------
 *
 * outbox.c
 *	  The transactional outbox, queueing side: a request queued from SQL is
 *	  a row of enkash.requests, in the caller's transaction; the enkash
 *	  sender sends it after COMMIT (outbox_sender.c).
 *
 *-------------------------------------------------------------------------
 */
#include "enkash.h"

#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "catalog/pg_type.h"
#include "commands/dbcommands.h"
#include "endpoints.h"
#include "enkash_spi.h"
#include "miscadmin.h"
#include "outbox_internal.h"
#include "storage/condition_variable.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/syscache.h"
#include "utils/wait_event.h"

/* ---------------------------------------------------------------------
 * Enqueueing (in the caller's backend and transaction)
 * ---------------------------------------------------------------------
 */

/* The senders sleep on this between queued requests. */
typedef struct OutboxShared
{
	ConditionVariable queued;	/* a transaction that queued requests committed */
} OutboxShared;

static OutboxShared *outbox_shared = NULL;

static void
outbox_shmem_first(void *ptr)
{
	OutboxShared *first = ptr;

	ConditionVariableInit(&first->queued);
}

const EnkashSharedPart enkash_outbox_part = {
	"enkash outbox", sizeof(OutboxShared), outbox_shmem_first, (void **) &outbox_shared
};

static void
enkash_outbox_wake(void)
{
	if (outbox_shared)
		ConditionVariableBroadcast(&outbox_shared->queued);
}

/* The sender's sleep until a transaction queues requests, or timeout_ms. */
void
enkash_outbox_sleep(long timeout_ms)
{
	ConditionVariablePrepareToSleep(&outbox_shared->queued);
	ConditionVariableTimedSleep(&outbox_shared->queued, timeout_ms,
								enkash_wait_event(ENKASH_WAIT_OUTBOX_QUEUE));
	ConditionVariableCancelSleep();
}

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
	Oid			types[6] = {TEXTOID, JSONBOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID};
	Datum		values[6];
	char		nulls[6] = {' ', ' ', ' ', ' ', ' ', ' '};
	char	   *reason;
	int64		id;
	bool		isnull;
	Oid			requests;
	Oid			save_userid;
	int			save_sec_context;
	int			save_nestlevel;

	enkash_require_preload();
	enkash_require_current();
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
			"  (endpoint, body, idempotency_key, created_by, max_attempts, state, last_error) "
			"VALUES ($1, $2, $3, $4, "
			"        pg_catalog.current_setting('enkash.max_attempts')::pg_catalog.int4, $5, $6) "
			"RETURNING id", 6, types);
	/* dry run, spending limits, approval (controls.c) */
	values[4] = CStringGetTextDatum(enkash_controls_queue_state(ep, DatumGetJsonbP(values[1]),
																key, &reason));
	values[5] = reason ? CStringGetTextDatum(reason) : (Datum) 0;
	nulls[5] = reason ? ' ' : 'n';
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
