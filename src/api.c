/*-------------------------------------------------------------------------
 *
 * api.c
 *	  The SQL-callable endpoint functions: arguments -> JSON body -> call.
 *
 * Every endpoint function in the install script is bound to the one C entry
 * point enkash_endpoint_call; the function's own name picks its row in the
 * endpoint table and its argument names pick the fields.  All validation
 * happens while building the body, so bad input is rejected before anything
 * is sent.
 *
 *-------------------------------------------------------------------------
 */
#include "enkash.h"

#include "access/htup_details.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_type.h"
#include "endpoints.h"
#include "fields.h"
#include "fmgr.h"
#include "mb/pg_wchar.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/memutils.h"
#include "utils/json.h"
#include "utils/lsyscache.h"
#include "utils/date.h"
#include "utils/datetime.h"
#include "utils/numeric.h"
#include "utils/timestamp.h"
#include "utils/syscache.h"

/*
 * What a call needs to know about its SQL function: cached in fn_extra for
 * the statement, and by function OID for the life of the backend (until
 * pg_proc changes), so that a call per statement costs no catalog look-up.
 */
typedef struct CallPlan
{
	Oid			fn_oid;			/* hash key */
	const EnkashEndpoint *endpoint;
	int			nfields;
	int		   *argno;			/* per field: argument position, or -1 */
} CallPlan;

static HTAB *call_plans = NULL;
static MemoryContext call_plans_cxt = NULL;

/* A function was created, replaced or dropped: forget every plan. */
static void
forget_call_plans(Datum arg, int cacheid, uint32 hashvalue)
{
	if (call_plans_cxt)
		MemoryContextReset(call_plans_cxt);
	call_plans = NULL;
}

static Oid
field_type_oid(EnkashFieldType type)
{
	switch (type)
	{
		case EF_TEXT:
			return TEXTOID;
		case EF_AMOUNT:
			return NUMERICOID;
		case EF_BOOL:
			return BOOLOID;
		case EF_COUNT:
			return INT4OID;
		case EF_TEXT_ARRAY:
			return TEXTARRAYOID;
		case EF_DATE:
			return DATEOID;
		case EF_TIMESTAMP:
			return TIMESTAMPTZOID;
		case EF_PAN_DOCUMENT:
			return TEXTOID;
		case EF_DOCUMENTS:
		case EF_MEMBERS:
			return JSONBOID;
	}
	return InvalidOid;
}

/*
 * Matches the SQL function's arguments to the endpoint's fields, into plan
 * (allocated in cxt).  A mismatch means a function bound to our C entry
 * point that does not fit its endpoint.
 */
static void
build_plan(FmgrInfo *flinfo, CallPlan *plan, MemoryContext cxt)
{
	HeapTuple	tuple;
	Form_pg_proc proc;
	Datum		names_datum;
	bool		isnull;
	Datum	   *names = NULL;
	int			nnames = 0;
	const EnkashEndpoint *ep;

	tuple = SearchSysCache1(PROCOID, ObjectIdGetDatum(flinfo->fn_oid));
	if (!HeapTupleIsValid(tuple))
		elog(ERROR, "cache lookup failed for function %u", flinfo->fn_oid);
	proc = (Form_pg_proc) GETSTRUCT(tuple);

	ep = enkash_endpoint_by_function(NameStr(proc->proname));
	if (ep == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_FUNCTION_DEFINITION),
				 errmsg("function \"%s\" is not an EnKash endpoint",
						NameStr(proc->proname)),
				 errhint("Functions bound to enkash_endpoint_call are named after an endpoint: see enkash_endpoints().")));

	names_datum = SysCacheGetAttr(PROCOID, tuple, Anum_pg_proc_proargnames,
								  &isnull);
	if (!isnull)
		deconstruct_array(DatumGetArrayTypeP(names_datum), TEXTOID, -1, false,
						  TYPALIGN_INT, &names, NULL, &nnames);

	plan->endpoint = ep;
	plan->nfields = 0;
	while (ep->fields[plan->nfields].arg)
		plan->nfields++;
	plan->argno = MemoryContextAlloc(cxt, sizeof(int) * plan->nfields);

	for (int f = 0; f < plan->nfields; f++)
	{
		const EnkashField *field = &ep->fields[f];

		plan->argno[f] = -1;
		for (int a = 0; a < nnames && a < proc->pronargs; a++)
		{
			if (strcmp(TextDatumGetCString(names[a]), field->arg) != 0)
				continue;
			if (proc->proargtypes.values[a] != field_type_oid(field->type))
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_FUNCTION_DEFINITION),
						 errmsg("argument \"%s\" of %s has the wrong type",
								field->arg, ep->function)));
			plan->argno[f] = a;
		}
	}
	for (int a = 0; a < proc->pronargs; a++)
	{
		bool		known = false;

		for (int f = 0; f < plan->nfields; f++)
			known |= (plan->argno[f] == a);
		if (!known)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_FUNCTION_DEFINITION),
					 errmsg("argument %d of %s matches no field of the endpoint",
							a + 1, ep->function)));
	}

	ReleaseSysCache(tuple);
}

/*
 * The plan of a function, from the backend's cache or built now, copied
 * into the FmgrInfo's context: an invalidation may empty the cache while
 * the statement still runs.
 */
static CallPlan *
call_plan(FmgrInfo *flinfo)
{
	CallPlan   *plan;
	CallPlan   *copy;
	bool		found;

	if (call_plans == NULL)
	{
		HASHCTL		ctl;

		if (call_plans_cxt == NULL)
		{
			call_plans_cxt = AllocSetContextCreate(TopMemoryContext,
												   "enkash call plans",
												   ALLOCSET_SMALL_SIZES);
			CacheRegisterSyscacheCallback(PROCOID, forget_call_plans, (Datum) 0);
		}
		ctl.keysize = sizeof(Oid);
		ctl.entrysize = sizeof(CallPlan);
		ctl.hcxt = call_plans_cxt;
		call_plans = hash_create("enkash call plans", 32, &ctl,
								 HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	}
	plan = hash_search(call_plans, &flinfo->fn_oid, HASH_ENTER, &found);
	if (!found)
	{
		PG_TRY();
		{
			build_plan(flinfo, plan, call_plans_cxt);
		}
		PG_CATCH();
		{
			hash_search(call_plans, &flinfo->fn_oid, HASH_REMOVE, NULL);
			PG_RE_THROW();
		}
		PG_END_TRY();
	}
	copy = MemoryContextAlloc(flinfo->fn_mcxt, sizeof(CallPlan));
	*copy = *plan;
	copy->argno = MemoryContextAlloc(flinfo->fn_mcxt, sizeof(int) * plan->nfields);
	memcpy(copy->argno, plan->argno, sizeof(int) * plan->nfields);
	return copy;
}

/*
 * Appends the members of a jsonb object (an EF_MEMBERS argument): each must
 * be a member the endpoint has no argument for, so none bypasses a check.
 */
static void
append_members(StringInfo buf, const EnkashEndpoint *ep,
			   const EnkashField *field, Jsonb *members)
{
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken tok;

	if (!JB_ROOT_IS_OBJECT(members) || JB_ROOT_IS_SCALAR(members))
		invalid_value(field, "must be a JSON object", NULL);
	it = JsonbIteratorInit(&members->root);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		char	   *key;

		if (tok != WJB_KEY)
			continue;
		key = pnstrdup(v.val.string.val, v.val.string.len);
		for (const EnkashField *f = ep->fields; f->arg; f++)
			if (f->json && strcmp(f->json, key) == 0)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("%s holds \"%s\", which has an argument of its own", field->arg, key),
						 errhint("Pass it as %s.", f->arg)));
		if (ep->fixed && strstr(ep->fixed, psprintf("\"%s\"", key)))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("%s holds \"%s\", which is always sent as it is", field->arg, key)));
		tok = JsonbIteratorNext(&it, &v, true);
		if (buf->len > 1)
			appendStringInfoChar(buf, ',');
		escape_json(buf, key);
		appendStringInfoChar(buf, ':');
		if (tok == WJB_VALUE && v.type != jbvBinary)
		{
			JsonbValue	scalar = v;
			Jsonb	   *j = JsonbValueToJsonb(&scalar);

			appendStringInfoString(buf, JsonbToCString(NULL, &j->root, VARSIZE(j)));
		}
		else
			appendStringInfoString(buf, JsonbToCString(NULL, v.val.binary.data, v.val.binary.len));
	}
}

/*
 * The limits to clear (sent as JSON null), from the endpoint's EF_CLEARS
 * argument: each must name one of its EF_NULLABLE fields.  NIL when none.
 */
static List *
limits_to_clear(FunctionCallInfo fcinfo, const CallPlan *plan)
{
	const EnkashEndpoint *ep = plan->endpoint;
	List	   *names = NIL;

	for (int f = 0; f < plan->nfields; f++)
	{
		const EnkashField *field = &ep->fields[f];
		int			a = plan->argno[f];
		Datum	   *elems;
		bool	   *nulls;
		int			n;

		if (!(field->flags & EF_CLEARS) || a < 0 || PG_ARGISNULL(a))
			continue;
		deconstruct_array(DatumGetArrayTypeP(PG_GETARG_DATUM(a)), TEXTOID, -1,
						  false, TYPALIGN_INT, &elems, &nulls, &n);
		for (int i = 0; i < n; i++)
		{
			char	   *name;
			bool		known = false;
			StringInfoData allowed;

			if (nulls[i])
				ereport(ERROR,
						(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
						 errmsg("%s must not contain NULL", field->arg)));
			name = TextDatumGetCString(elems[i]);
			initStringInfo(&allowed);
			for (const EnkashField *g = ep->fields; g->arg; g++)
			{
				if (!(g->flags & EF_NULLABLE))
					continue;
				known |= (strcmp(g->arg, name) == 0);
				appendStringInfo(&allowed, "%s%s", allowed.len ? ", " : "", g->arg);
			}
			if (!known)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("%s names \"%s\", which is not a limit that can be cleared",
								field->arg, name),
						 errhint("Name any of: %s.", allowed.data)));
			names = lappend(names, name);
		}
	}
	return names;
}

static bool
name_listed(List *names, const char *name)
{
	ListCell   *lc;

	foreach(lc, names)
		if (strcmp((const char *) lfirst(lc), name) == 0)
			return true;
	return false;
}

/*
 * Builds the JSON body of an endpoint call from the SQL function's
 * arguments, validating each; the endpoint is the function's own.
 */
void
enkash_build_body(FunctionCallInfo fcinfo, StringInfo body,
				  const EnkashEndpoint **endpoint, char **key)
{
	CallPlan   *plan = fcinfo->flinfo->fn_extra;
	const EnkashEndpoint *ep;
	List	   *clear;

	/*
	 * Before the arguments (an older version's function may not fit them);
	 * once per statement, with the plan.
	 */
	if (plan == NULL)
	{
		enkash_require_current();
		fcinfo->flinfo->fn_extra = plan = call_plan(fcinfo->flinfo);
	}
	ep = plan->endpoint;
	*key = NULL;
	clear = limits_to_clear(fcinfo, plan);

	appendStringInfoChar(body, '{');
	for (int f = 0; f < plan->nfields; f++)
	{
		const EnkashField *field = &ep->fields[f];
		int			a = plan->argno[f];
		bool		isnull = (a < 0 || PG_ARGISNULL(a));

		if (field->flags & EF_CLEARS)
			continue;
		/* A JsonNullable limit: null clears it, absent leaves it as it is. */
		if ((field->flags & EF_NULLABLE) && name_listed(clear, field->arg))
		{
			if (!isnull)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("%s is both set and listed to be cleared", field->arg),
						 errhint("Give a value to set the limit, or list it in clear_limits to remove it, not both.")));
			if (body->len > 1)
				appendStringInfoChar(body, ',');
			escape_json(body, field->json);
			appendStringInfoString(body, ":null");
			continue;
		}
		/* Two arguments for one member (pan_number, documents): one only. */
		for (int g = 0; g < f && !isnull && field->json; g++)
			if (ep->fields[g].json && strcmp(ep->fields[g].json, field->json) == 0 &&
				plan->argno[g] >= 0 && !PG_ARGISNULL(plan->argno[g]))
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("%s and %s both give \"%s\"", ep->fields[g].arg,
								field->arg, field->json),
						 errhint("Give one of them.")));
		append_field(body, field, isnull ? (Datum) 0 : PG_GETARG_DATUM(a),
					 isnull);
		if ((field->flags & EF_KEY) && !isnull)
			*key = TextDatumGetCString(PG_GETARG_DATUM(a));

		if ((field->flags & EF_RANGE_START) && !isnull)
		{
			int			b = plan->argno[f + 1];

			if (b >= 0 && !PG_ARGISNULL(b))
				check_range(field, PG_GETARG_DATUM(a), &ep->fields[f + 1],
							PG_GETARG_DATUM(b));
		}
	}
	for (int f = 0; f < plan->nfields; f++)
	{
		int			a = plan->argno[f];

		if (ep->fields[f].type == EF_MEMBERS && a >= 0 && !PG_ARGISNULL(a))
			append_members(body, ep, &ep->fields[f], PG_GETARG_JSONB_P(a));
	}
	if (ep->fixed)
	{
		if (body->len > 1)
			appendStringInfoChar(body, ',');
		appendStringInfoString(body, ep->fixed);
	}
	appendStringInfoChar(body, '}');
	*endpoint = ep;
}

PG_FUNCTION_INFO_V1(enkash_endpoint_call);

/* The C body of every single-answer endpoint function in the install script. */
Datum
enkash_endpoint_call(PG_FUNCTION_ARGS)
{
	const EnkashEndpoint *ep;
	StringInfoData body;
	char	   *key;

	initStringInfo(&body);
	enkash_build_body(fcinfo, &body, &ep, &key);
	PG_RETURN_JSONB_P(enkash_send(ep, body.data, body.len, key));
}

/*
 * The idempotency key of a raw money call: the body's member that is the
 * key (uniqueReferenceNumber for a load).  Money endpoints whose key is not
 * part of the body cannot be called raw: their typed function takes one.
 */
char *
enkash_raw_money_key(const EnkashEndpoint *ep, Jsonb *body)
{
	if (ep->kind != ENKASH_MONEY)
		return NULL;
	for (const EnkashField *f = ep->fields; f->arg; f++)
	{
		JsonbValue	v;

		if (!(f->flags & EF_KEY) || f->json == NULL)
			continue;
		if (getKeyJsonValueFromContainer(&body->root, f->json, strlen(f->json), &v) &&
			v.type == jbvString && v.val.string.len > 0)
			return pnstrdup(v.val.string.val, v.val.string.len);
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("a raw call to endpoint \"%s\" needs \"%s\" in its body", ep->name, f->json),
				 errdetail("It is the idempotency key that keeps the call from happening twice.")));
	}
	return NULL;
}

/*
 * The endpoint and body of a raw call (enkash_call, enkash_enqueue): the
 * first two arguments, checked.
 */
const EnkashEndpoint *
enkash_raw_call_args(FunctionCallInfo fcinfo, Jsonb **body)
{
	char	   *name;
	const EnkashEndpoint *ep;

	enkash_require_current();
	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("endpoint and body must not be null")));
	name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	*body = PG_GETARG_JSONB_P(1);
	ep = enkash_endpoint_by_name(name);
	if (ep == NULL)
	{
		StringInfoData names;

		initStringInfo(&names);
		for (const EnkashEndpoint *e = enkash_endpoints; e->function; e++)
			appendStringInfo(&names, "%s%s", names.len ? ", " : "", e->name);
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("unknown EnKash endpoint \"%s\"", name),
				 errhint("Known endpoints: %s.", names.data)));
	}
	if (!JB_ROOT_IS_OBJECT(*body))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("body must be a JSON object")));
	return ep;
}

PG_FUNCTION_INFO_V1(enkash_call);

/*
 * enkash_call(endpoint, body): an administrator's raw call to a named
 * endpoint, with the same envelope, token, idempotency and error handling,
 * but none of the argument checks.
 */
Datum
enkash_call(PG_FUNCTION_ARGS)
{
	Jsonb	   *body;
	const EnkashEndpoint *ep = enkash_raw_call_args(fcinfo, &body);
	char	   *key = enkash_raw_money_key(ep, body);
	char	   *json;

	if (ep->kind == ENKASH_MONEY && key == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("endpoint \"%s\" cannot be called through enkash_call", ep->name),
				 errhint("Use %s(), which takes an idempotency_key.", ep->function)));
	json = JsonbToCString(NULL, &body->root, VARSIZE(body));
	PG_RETURN_JSONB_P(enkash_send(ep, json, strlen(json), key));
}
