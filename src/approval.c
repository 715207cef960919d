/*-------------------------------------------------------------------------
 *
 * approval.c
 *	  Decisions on queued loads a control stopped: a checker's approval or
 *	  rejection of a load awaiting approval (maker-checker), and an
 *	  administrator's release of a load held by a spending limit.
 *
 * The checker is the session's role (SET ROLE included), never the role
 * that queued the load; each decision is one audit row naming the maker,
 * the checker and both times.
 *
 *-------------------------------------------------------------------------
 */
#include "enkash.h"

#include "catalog/pg_type.h"
#include "enkash_spi.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"

typedef enum Decision
{
	DECIDE_APPROVE,
	DECIDE_REJECT,
	DECIDE_RELEASE
} Decision;

/* What each decision takes and leaves: a table instead of three functions. */
static const struct
{
	const char *from;			/* the state it applies to */
	const char *outcome;		/* its audit row's outcome */
	const char *verb;
}			decisions[] = {
	[DECIDE_APPROVE] = {"awaiting_approval", "approved", "approved"},
	[DECIDE_REJECT] = {"awaiting_approval", "rejected", "rejected"},
	[DECIDE_RELEASE] = {"held", "released", "released"},
};

typedef struct DecisionArgs
{
	int64		id;
	Decision	decision;
	const char *checker;
	const char *reason;
} DecisionArgs;

static void
decide(void *arg)
{
	DecisionArgs *d = arg;
	Oid			select_types[1] = {INT8OID};
	Oid			update_types[4] = {INT8OID, TEXTOID, TEXTOID, TEXTOID};
	Datum		values[4];
	char		nulls[4] = {' ', ' ', ' ', ' '};
	char	   *state;
	char	   *maker;
	char	   *to;
	char	   *sql;

	values[0] = Int64GetDatum(d->id);
	if (SPI_execute_with_args("SELECT state, created_by, (body->>'amount')::pg_catalog.numeric "
							  "       >= pg_catalog.current_setting('enkash.approval_threshold')::pg_catalog.numeric "
							  "   AND pg_catalog.current_setting('enkash.approval_threshold') <> '0' "
							  "FROM enkash.requests WHERE id = $1 FOR UPDATE",
							  1, select_types, values, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read enkash.requests");
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_NO_DATA_FOUND),
				 errmsg("there is no queued request %lld", (long long) d->id)));
	state = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
	maker = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2);
	if (strcmp(state, decisions[d->decision].from) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("queued request %lld is %s, not %s, so it cannot be %s",
						(long long) d->id, state, decisions[d->decision].from,
						decisions[d->decision].verb)));
	if (d->decision != DECIDE_RELEASE && strcmp(maker, d->checker) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("role \"%s\" queued request %lld and cannot also approve or reject it",
						d->checker, (long long) d->id),
				 errdetail("A load awaiting approval is decided by a second person (maker-checker)."),
				 errhint("Ask another holder of enkash_approve.")));

	/* a released load at or above the threshold still needs its approval */
	if (d->decision == DECIDE_REJECT)
		to = "rejected";
	else if (d->decision == DECIDE_RELEASE &&
			 strcmp(SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3), "t") == 0)
		to = "awaiting_approval";
	else
		to = "pending";

	values[1] = CStringGetTextDatum(to);
	values[2] = CStringGetTextDatum(d->checker);
	values[3] = d->reason ? CStringGetTextDatum(d->reason) : (Datum) 0;
	nulls[3] = d->reason ? ' ' : 'n';
	sql = psprintf("WITH decided AS ("
				   "  UPDATE enkash.requests SET state = $2, decided_by = $3, "
				   "         decided_at = pg_catalog.now(), updated_at = pg_catalog.now(), "
				   "         next_attempt_at = pg_catalog.now(), last_error = $4, "
				   "         finished_at = CASE WHEN $2 = 'rejected' THEN pg_catalog.now() END "
				   "  WHERE id = $1 RETURNING *) "
				   "INSERT INTO enkash.audit_log "
				   "  (role, endpoint, idempotency_key, outcome, message, request) "
				   "SELECT $3, endpoint, idempotency_key, '%s', "
				   "       pg_catalog.format('request %%s queued by %%s at %%s; %s by %%s at %%s%%s', "
				   "                         id, created_by, created_at, $3, decided_at, "
				   "                         ': ' || $4), body "
				   "FROM decided",
				   decisions[d->decision].outcome, decisions[d->decision].verb);
	if (SPI_execute_with_args(sql, 4, update_types, values, nulls, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "could not record the decision on queued request %lld", (long long) d->id);
}

static bool
run_decision(FunctionCallInfo fcinfo, Decision decision)
{
	DecisionArgs d;
	Oid			approver = get_role_oid("enkash_approve", true);
	int			nargs = decision == DECIDE_REJECT ? 2 : 1;

	enkash_require_current();
	if (decision != DECIDE_RELEASE && !superuser() &&
		(!OidIsValid(approver) || !has_privs_of_role(GetOuterUserId(), approver)))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("only a holder of enkash_approve may approve or reject loads"),
				 errhint("GRANT enkash_approve to the checker (see the README's Privileges).")));
	for (int i = 0; i < nargs; i++)
		if (PG_ARGISNULL(i))
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("%s must not be null", i == 0 ? "id" : "reason"),
					 i == 1 ? errhint("Say why the load is rejected: it is kept with the row and in the audit log.") : 0));
	d.id = PG_GETARG_INT64(0);
	d.decision = decision;
	d.checker = GetUserNameFromId(GetOuterUserId(), false);
	d.reason = nargs == 2 ? text_to_cstring(PG_GETARG_TEXT_PP(1)) : NULL;
	enkash_as_owner(decide, &d);
	return true;
}

PG_FUNCTION_INFO_V1(enkash_approve);
Datum
enkash_approve(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(run_decision(fcinfo, DECIDE_APPROVE));
}

PG_FUNCTION_INFO_V1(enkash_reject);
Datum
enkash_reject(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(run_decision(fcinfo, DECIDE_REJECT));
}

PG_FUNCTION_INFO_V1(enkash_release);
Datum
enkash_release(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(run_decision(fcinfo, DECIDE_RELEASE));
}
