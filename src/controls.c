/*-------------------------------------------------------------------------
 *
 * controls.c
 *	  Finance controls on what leaves the server: the pause switch
 *	  (enkash.sending), dry runs (enkash.dry_run), spending limits
 *	  (enkash.limits) and the approval threshold (enkash.approval_threshold).
 *
 * A synchronous call is checked in enkash_send before anything else;
 * a load's limits are checked again, under a lock per matching limit held
 * until its key is claimed (committed by the worker), so that two sessions
 * that each fit but not together cannot both pass.  A queued call is
 * checked as it is queued, under the same locks held to the end of the
 * queueing transaction, and stored in the state it earns.
 *
 *-------------------------------------------------------------------------
 */
#include "enkash.h"

#include "access/table.h"
#include "catalog/namespace.h"
#include "common/hashfn.h"
#include "catalog/pg_class.h"
#include "catalog/pg_type.h"
#include "endpoints.h"
#include "enkash_spi.h"
#include "ledger.h"
#include "miscadmin.h"
#include "storage/bufmgr.h"
#include "storage/lock.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"

/* A load's facts that limits and approval look at. */
typedef struct LoadFacts
{
	char	   *card_account;
	char	   *card;
	char	   *amount;			/* numeric's text */
	double		rupees;
} LoadFacts;

/* Session locks held from the check to the key's claim (synchronous loads). */
#define MAX_HELD_LOCKS 64
static LOCKTAG held[MAX_HELD_LOCKS];
static int	nheld = 0;

/* A limit's lock: one per limit and card (or account) it counts. */
#define LIMIT_LOCK_SPACE 0x454B	/* "EK": apart from users' advisory locks */

/*
 * Whether a call made here is checked: the enkash sender's calls were
 * checked as they were queued (and it claims nothing while paused).
 */
static bool
checked_here(void)
{
	return !enkash_is_background_worker();
}

static bool
changes_something(const EnkashEndpoint *ep)
{
	return checked_here() && (ep->kind == ENKASH_MONEY || ep->kind == ENKASH_WRITE ||
							  ep->kind == ENKASH_SECRET_IN);
}

static bool
is_load(const EnkashEndpoint *ep)
{
	return strcmp(ep->name, "load_balance") == 0;
}

static void
load_facts(Jsonb *body, LoadFacts *facts)
{
	char	   *account = enkash_json_scalar(body, "cardAccountId");
	char	   *card = enkash_json_scalar(body, "enKashCardId");
	char	   *amount = enkash_json_scalar(body, "amount");

	facts->card_account = account ? account : "";
	facts->card = card ? card : "";
	facts->amount = amount ? amount : "0";
	facts->rupees = strtod(facts->amount, NULL);
}

static bool
needs_approval(const LoadFacts *facts)
{
	return enkash_approval_threshold > 0 && facts->rupees >= enkash_approval_threshold;
}

static Oid
limits_relid(void)
{
	return get_relname_relid("limits", get_namespace_oid("enkash", true));
}

/*
 * Runs fn with the rights of enkash.limits' owner (enkash_as_role): callers
 * hold no right on enkash.*.
 */
void
enkash_as_owner(void (*fn) (void *arg), void *arg)
{
	Oid			limits = limits_relid();
	HeapTuple	tuple;
	Oid			owner;

	if (!OidIsValid(limits))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("the enkash extension is not installed in this database")));
	tuple = SearchSysCache1(RELOID, ObjectIdGetDatum(limits));
	if (!HeapTupleIsValid(tuple))
		elog(ERROR, "cache lookup failed for relation %u", limits);
	owner = ((Form_pg_class) GETSTRUCT(tuple))->relowner;
	ReleaseSysCache(tuple);
	enkash_as_role(owner, fn, arg);
}

/* One limit check: in, the load; out, the first limit it would break. */
typedef struct LimitCheck
{
	const LoadFacts *facts;
	const char *key;
	bool		lock;			/* take each matching limit's lock */
	bool		session_lock;	/* ... until enkash_limits_leave, not the end of the transaction */
	MemoryContext result_cxt;	/* where broken is allocated */
	char	   *broken;			/* NULL, or which limit and the total so far */
} LimitCheck;

static SPIPlanPtr plan_matching = NULL;
static SPIPlanPtr plan_total = NULL;

static void
take_limit_lock(int32 limit_id, const char *subject, bool session_lock)
{
	LOCKTAG		tag;

	SET_LOCKTAG_ADVISORY(tag, MyDatabaseId, (uint32) limit_id,
						 hash_bytes((const unsigned char *) subject, strlen(subject)),
						 LIMIT_LOCK_SPACE);
	if (session_lock && nheld >= MAX_HELD_LOCKS)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("a load matches more than %d spending limits", MAX_HELD_LOCKS)));
	(void) LockAcquire(&tag, ExclusiveLock, session_lock, false);
	if (session_lock)
		held[nheld++] = tag;
}

static void
check_limits(void *arg)
{
	LimitCheck *check = arg;
	const LoadFacts *f = check->facts;
	Oid			match_types[2] = {TEXTOID, TEXTOID};
	Oid			total_types[4] = {INTERVALOID, TEXTOID, TEXTOID, TEXTOID};
	Datum		args[4];
	SPITupleTable *limits;
	uint64		nlimits;

	if (plan_matching == NULL)
		plan_matching = enkash_keep_plan(
			"SELECT l.id, l.scope, l.period, l.max_amount, l.max_count, "
			"       CASE l.scope WHEN 'card' THEN $2 WHEN 'card_account' THEN $1 ELSE '' END, "
			"       l.target "
			"FROM enkash.limits l "
			"WHERE l.scope = 'all' "
			"   OR (l.scope = 'card' AND COALESCE(l.target, $2) = $2) "
			"   OR (l.scope = 'card_account' AND COALESCE(l.target, $1) = $1) "
			"ORDER BY l.id", 2, match_types);
	if (plan_total == NULL)
		plan_total = enkash_keep_plan(
			"SELECT COALESCE(pg_catalog.sum(amount), 0)::pg_catalog.text, "
			"       pg_catalog.count(*) FROM ("
			"  SELECT k.key, (k.request->>'amount')::pg_catalog.numeric AS amount "
			"  FROM enkash.idempotency_keys k "
			"  WHERE k.endpoint = 'load_balance' "
			"    AND k.state IN ('in_flight', 'succeeded', 'unknown') "
			"    AND k.created_at > pg_catalog.now() - $1 AND k.key <> $4 "
			"    AND ($2 = 'all' OR ($2 = 'card' AND k.request->>'enKashCardId' = $3) "
			"         OR ($2 = 'card_account' AND k.request->>'cardAccountId' = $3)) "
			"  UNION "
			"  SELECT r.idempotency_key, (r.body->>'amount')::pg_catalog.numeric "
			"  FROM enkash.requests r "
			"  WHERE r.endpoint = 'load_balance' "
			"    AND r.state IN ('pending', 'sending', 'unknown', 'awaiting_approval') "
			"    AND r.created_at > pg_catalog.now() - $1 "
			"    AND r.idempotency_key IS DISTINCT FROM $4 "
			"    AND ($2 = 'all' OR ($2 = 'card' AND r.body->>'enKashCardId' = $3) "
			"         OR ($2 = 'card_account' AND r.body->>'cardAccountId' = $3))"
			") loads", 4, total_types);

	args[0] = CStringGetTextDatum(f->card_account);
	args[1] = CStringGetTextDatum(f->card);
	if (SPI_execute_plan(plan_matching, args, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read enkash.limits");
	limits = SPI_tuptable;
	nlimits = SPI_processed;

	for (uint64 i = 0; i < nlimits && check->broken == NULL; i++)
	{
		HeapTuple	row = limits->vals[i];
		TupleDesc	desc = limits->tupdesc;
		bool		isnull;
		int32		id = DatumGetInt32(SPI_getbinval(row, desc, 1, &isnull));
		char	   *max_amount = SPI_getvalue(row, desc, 4);
		char	   *max_count = SPI_getvalue(row, desc, 5);
		char	   *subject = SPI_getvalue(row, desc, 6);
		char	   *total;
		int64		count;

		if (check->lock)
			take_limit_lock(id, subject, check->session_lock);
		args[0] = SPI_getbinval(row, desc, 3, &isnull);
		args[1] = SPI_getbinval(row, desc, 2, &isnull);
		args[2] = CStringGetTextDatum(subject);
		args[3] = CStringGetTextDatum(check->key ? check->key : "");
		/* the latest snapshot, also in a REPEATABLE READ transaction: what others committed */
		if (SPI_execute_snapshot(plan_total, args, NULL, GetLatestSnapshot(), InvalidSnapshot,
								 false, false, 1) != SPI_OK_SELECT ||
			SPI_processed != 1)
			elog(ERROR, "could not count the loads of a spending limit");
		total = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
		count = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
											SPI_tuptable->tupdesc, 2, &isnull));
		if ((max_amount && strtod(total, NULL) + f->rupees > strtod(max_amount, NULL)) ||
			(max_count && count + 1 > strtoll(max_count, NULL, 10)))
		{
			/* in the caller's context: SPI_finish frees SPI's */
			MemoryContext spi_cxt = MemoryContextSwitchTo(check->result_cxt);
			char	   *target = SPI_getvalue(row, desc, 7);
			StringInfoData broken;

			initStringInfo(&broken);
			appendStringInfo(&broken, "limit %d (%s %s, ", id, SPI_getvalue(row, desc, 2),
							 target ? target : "each");
			if (max_amount)
				appendStringInfo(&broken, "%s rupees%s", max_amount, max_count ? " and " : "");
			if (max_count)
				appendStringInfo(&broken, "%s loads", max_count);
			appendStringInfo(&broken, " per %s): %s rupees in %lld loads so far, this load %s",
							 SPI_getvalue(row, desc, 3), total, (long long) count, f->amount);
			check->broken = broken.data;
			MemoryContextSwitchTo(spi_cxt);
		}
		SPI_freetuptable(SPI_tuptable);
	}
}

/*
 * Whether enkash.limits may hold a row: false when its file has no block,
 * so that no limit exists, committed or not, and the check (a statement
 * under the owner's rights) is skipped.  A table whose rows were deleted
 * keeps its blocks until VACUUM truncates them: checked as usual.
 */
static bool
limits_may_exist(void)
{
	Oid			relid = limits_relid();
	Relation	rel;
	bool		blocks;

	if (!OidIsValid(relid))
		return true;			/* the check says the extension is missing */
	rel = table_open(relid, AccessShareLock);
	blocks = RelationGetNumberOfBlocks(rel) > 0;
	table_close(rel, NoLock);
	return blocks;
}

static char *
broken_limit(const LoadFacts *facts, const char *key, bool lock, bool session_lock)
{
	LimitCheck	check = {facts, key, lock, session_lock, CurrentMemoryContext, NULL};

	if (limits_may_exist())
		enkash_as_owner(check_limits, &check);
	return check.broken;
}

static void
refuse_over_limit(const EnkashEndpoint *ep, const char *broken)
{
	ereport(ERROR,
			(errcode(ERRCODE_ENKASH_LIMIT),
			 errmsg("%s would go over a spending limit, so it was not sent", ep->label),
			 errdetail("%s.", broken),
			 errhint("An administrator can raise the limit in enkash.limits.")));
}

/*
 * A synchronous call, before anything else: refused while paused; a
 * rehearsal in a dry run (checked, audited, the request returned, nothing
 * sent); a load at or above the approval threshold refused.  Returns the
 * dry run's answer, or NULL when the call goes ahead.
 */
Jsonb *
enkash_controls_before_send(const EnkashEndpoint *ep, const char *json, size_t len,
							Jsonb *body, const char *key)
{
	LoadFacts	facts;
	char	   *request;
	LedgerExchange x;
	char	   *broken;

	if (!changes_something(ep))
		return NULL;
	if (is_load(ep))
		load_facts(body, &facts);
	if (!enkash_dry_run && !enkash_sending)
		ereport(ERROR,
				(errcode(ERRCODE_ENKASH_PAUSED),
				 errmsg("sending to EnKash is paused, so %s was not sent", ep->label),
				 errdetail("enkash.sending is off: no money moves and no card changes until it is on again. Nothing was recorded."),
				 errhint("Queue it instead (it is sent when sending resumes), or ask an administrator to turn enkash.sending on.")));
	if (is_load(ep) && needs_approval(&facts))
		ereport(ERROR,
				(errcode(ERRCODE_ENKASH_NEEDS_APPROVAL),
				 errmsg("a load of %s rupees needs a second person's approval, so it was not sent",
						facts.amount),
				 errdetail("Loads of %d rupees or more (enkash.approval_threshold) are sent only once a holder of enkash_approve other than you approves them.",
						   enkash_approval_threshold),
				 errhint("Queue it with enkash_load_balance_async; it waits in state awaiting_approval for enkash_approve(id).")));
	if (!enkash_dry_run)
		return NULL;

	if (is_load(ep) && (broken = broken_limit(&facts, key, false, false)) != NULL)
		refuse_over_limit(ep, broken);
	request = enkash_mask_request(json, len);
	memset(&x, 0, sizeof(x));
	x.endpoint = ep->name;
	x.key = key;
	x.request = request;
	x.outcome = "dry_run";
	enkash_ledger_audit(&x, true);
	{
		JsonbParseState *state = NULL;
		JsonbValue	k;
		JsonbValue	v;
		Jsonb	   *masked = enkash_body_jsonb(request, strlen(request));

		pushJsonbValue(&state, WJB_BEGIN_OBJECT, NULL);
		k.type = jbvString;
		k.val.string.val = "dry_run";
		k.val.string.len = 7;
		pushJsonbValue(&state, WJB_KEY, &k);
		v.type = jbvBool;
		v.val.boolean = true;
		pushJsonbValue(&state, WJB_VALUE, &v);
		k.val.string.val = "request";
		k.val.string.len = 7;
		pushJsonbValue(&state, WJB_KEY, &k);
		v.type = jbvBinary;
		v.val.binary.data = &masked->root;
		v.val.binary.len = VARSIZE(masked);
		pushJsonbValue(&state, WJB_VALUE, &v);
		return JsonbValueToJsonb(pushJsonbValue(&state, WJB_END_OBJECT, NULL));
	}
}

/*
 * A synchronous load's limits, checked under their locks, which are held
 * until enkash_limits_leave (after its key's claim has committed).
 */
void
enkash_limits_enter(const EnkashEndpoint *ep, Jsonb *body, const char *key)
{
	LoadFacts	facts;
	char	   *broken;

	if (!is_load(ep) || !checked_here())
		return;
	load_facts(body, &facts);
	PG_TRY();
	{
		broken = broken_limit(&facts, key, true, true);
	}
	PG_CATCH();
	{
		enkash_limits_leave();
		PG_RE_THROW();
	}
	PG_END_TRY();
	if (broken)
	{
		enkash_limits_leave();
		refuse_over_limit(ep, broken);
	}
}

void
enkash_limits_leave(void)
{
	while (nheld > 0)
		LockRelease(&held[--nheld], ExclusiveLock, true);
}

/*
 * The state a queued call is stored in: dry_run in a dry run (reason: what
 * would have happened), held over a limit, awaiting_approval at or above
 * the threshold, else pending.  Runs inside the queueing's SPI connection,
 * with the owner's rights; the limits' locks last to the end of the
 * transaction, so the rows it queues are counted by the next check.
 */
const char *
enkash_controls_queue_state(const EnkashEndpoint *ep, Jsonb *body, const char *key,
							char **reason)
{
	LoadFacts	facts;
	LimitCheck	check = {&facts, key, !enkash_dry_run, false, CurrentMemoryContext, NULL};
	const char *state = "pending";

	*reason = NULL;
	if (is_load(ep))
	{
		load_facts(body, &facts);
		if (limits_may_exist())
			check_limits(&check);
		if (check.broken)
		{
			state = "held";
			*reason = psprintf("over a spending limit: %s", check.broken);
		}
		else if (needs_approval(&facts))
		{
			state = "awaiting_approval";
			*reason = psprintf("loads of %d rupees or more wait for approval (enkash.approval_threshold)",
							   enkash_approval_threshold);
		}
	}
	if (enkash_dry_run)
	{
		if (*reason)
			*reason = psprintf("dry run; for real it would be %s: %s", state, *reason);
		return "dry_run";
	}
	return state;
}
