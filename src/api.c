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
#include "fmgr.h"
#include "mb/pg_wchar.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/lsyscache.h"
#include "utils/numeric.h"
#include "utils/syscache.h"

/* Longest text value we pass on; EnKash's own limits are lower. */
#define MAX_TEXT_CHARS 1000
#define MAX_ID_CHARS 64

/* What a call needs to know about its SQL function, cached in fn_extra. */
typedef struct CallPlan
{
	const EnkashEndpoint *endpoint;
	int			nfields;
	int		   *argno;			/* per field: argument position, or -1 */
} CallPlan;

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
		case EF_INT:
			return INT4OID;
		case EF_TEXT_ARRAY:
			return TEXTARRAYOID;
	}
	return InvalidOid;
}

/*
 * Matches the SQL function's arguments to the endpoint's fields once per
 * FmgrInfo.  A mismatch is a bug in the install script, hence elog.
 */
static CallPlan *
build_plan(FmgrInfo *flinfo)
{
	HeapTuple	tuple;
	Form_pg_proc proc;
	Datum		names_datum;
	bool		isnull;
	Datum	   *names = NULL;
	int			nnames = 0;
	CallPlan   *plan;
	const EnkashEndpoint *ep;

	tuple = SearchSysCache1(PROCOID, ObjectIdGetDatum(flinfo->fn_oid));
	if (!HeapTupleIsValid(tuple))
		elog(ERROR, "cache lookup failed for function %u", flinfo->fn_oid);
	proc = (Form_pg_proc) GETSTRUCT(tuple);

	ep = enkash_endpoint_by_function(NameStr(proc->proname));
	if (ep == NULL)
		elog(ERROR, "function \"%s\" is not an EnKash endpoint",
			 NameStr(proc->proname));

	names_datum = SysCacheGetAttr(PROCOID, tuple, Anum_pg_proc_proargnames,
								  &isnull);
	if (!isnull)
		deconstruct_array(DatumGetArrayTypeP(names_datum), TEXTOID, -1, false,
						  TYPALIGN_INT, &names, NULL, &nnames);

	plan = MemoryContextAllocZero(flinfo->fn_mcxt, sizeof(CallPlan));
	plan->endpoint = ep;
	while (ep->fields[plan->nfields].arg)
		plan->nfields++;
	plan->argno = MemoryContextAlloc(flinfo->fn_mcxt,
									 sizeof(int) * plan->nfields);

	for (int f = 0; f < plan->nfields; f++)
	{
		const EnkashField *field = &ep->fields[f];

		plan->argno[f] = -1;
		for (int a = 0; a < nnames && a < proc->pronargs; a++)
		{
			if (strcmp(TextDatumGetCString(names[a]), field->arg) != 0)
				continue;
			if (proc->proargtypes.values[a] != field_type_oid(field->type))
				elog(ERROR, "argument \"%s\" of %s has the wrong type",
					 field->arg, ep->function);
			plan->argno[f] = a;
		}
	}
	for (int a = 0; a < proc->pronargs; a++)
	{
		bool		known = false;

		for (int f = 0; f < plan->nfields; f++)
			known |= (plan->argno[f] == a);
		if (!known)
			elog(ERROR, "argument %d of %s matches no field of the endpoint",
				 a + 1, ep->function);
	}

	ReleaseSysCache(tuple);
	return plan;
}

pg_attribute_noreturn()
static void
invalid_value(const EnkashField *field, const char *problem, const char *hint)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("%s %s", field->arg, problem),
			 hint ? errhint("%s", hint) : 0));
}

static void
check_text(const EnkashField *field, const char *value)
{
	int			chars = pg_mbstrlen(value);

	if (field->flags & EF_ID)
	{
		if (value[0] == '\0')
			invalid_value(field, "must not be empty", NULL);
		if (chars > MAX_ID_CHARS)
			invalid_value(field, "is too long to be an EnKash identifier", NULL);
		for (const char *p = value; *p; p++)
			if (!(isalnum((unsigned char) *p) || *p == '-' || *p == '_' ||
				  *p == '.' || *p == '/' || *p == ':'))
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("%s contains a character not allowed in an EnKash identifier",
								field->arg),
						 errhint("Identifiers use letters, digits and - _ . / : only.")));
	}
	else if (field->flags & EF_REQUIRED)
	{
		const char *p = value;

		while (*p == ' ' || *p == '\t')
			p++;
		if (*p == '\0')
			invalid_value(field, "must not be empty", NULL);
	}
	if (chars > MAX_TEXT_CHARS)
		ereport(ERROR,
				(errcode(ERRCODE_STRING_DATA_RIGHT_TRUNCATION),
				 errmsg("%s is too long", field->arg),
				 errdetail("It has %d characters; at most %d are sent to EnKash.",
						   chars, MAX_TEXT_CHARS)));

	if (field->choices)
	{
		StringInfoData allowed;

		for (const char *const *c = field->choices; *c; c++)
			if (strcmp(*c, value) == 0)
				return;
		initStringInfo(&allowed);
		for (const char *const *c = field->choices; *c; c++)
			appendStringInfo(&allowed, "%s%s", c == field->choices ? "" : ", ", *c);
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid %s: \"%s\"", field->arg, value),
				 errhint("Use one of: %s.", allowed.data)));
	}
}

/*
 * Appends a money amount as a JSON number with at most two decimals, after
 * refusing anything that cannot be a deliberate amount of rupees.
 */
static void
append_amount(StringInfo buf, const EnkashField *field, Datum value)
{
	Numeric		num = DatumGetNumeric(value);
	char	   *digits;
	char	   *dot;
	char	   *end;

	if (numeric_is_nan(num) || numeric_is_inf(num))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must be a finite number of rupees", field->arg)));

	digits = DatumGetCString(DirectFunctionCall1(numeric_out, value));
	if (digits[0] == '-' ||
		!DatumGetBool(DirectFunctionCall2(numeric_gt, value,
										  NumericGetDatum(int64_to_numeric(0)))))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must be greater than zero", field->arg),
				 errdetail("The amount given was %s.", digits)));

	/* 10.50 is 10.5, and 10.00 is 10: trailing zeros are not precision. */
	dot = strchr(digits, '.');
	if (dot)
	{
		end = digits + strlen(digits);
		while (end > dot + 1 && end[-1] == '0')
			*--end = '\0';
		if (end == dot + 1)
			*dot = '\0';
		else if (end - dot - 1 > 2)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("%s has more than two decimal places", field->arg),
					 errdetail("The amount given was %s; EnKash takes rupees and paise only.",
							   DatumGetCString(DirectFunctionCall1(numeric_out, value))),
					 errhint("Round the amount, for example with round(amount, 2).")));
	}

	if (DatumGetBool(DirectFunctionCall2(numeric_gt, value,
										 NumericGetDatum(int64_to_numeric(enkash_max_amount)))))
		ereport(ERROR,
				(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
				 errmsg("%s %s is above the limit of %d rupees for one call",
						field->arg, digits, enkash_max_amount),
				 errhint("The limit guards against a misplaced decimal point; a superuser can change enkash.max_amount.")));

	appendStringInfoString(buf, digits);
}

static void
append_text_array(StringInfo buf, const EnkashField *field, Datum value)
{
	ArrayType  *array = DatumGetArrayTypeP(value);
	Datum	   *elems;
	bool	   *nulls;
	int			n;

	deconstruct_array(array, TEXTOID, -1, false, TYPALIGN_INT,
					  &elems, &nulls, &n);
	appendStringInfoChar(buf, '[');
	for (int i = 0; i < n; i++)
	{
		char	   *s;

		if (nulls[i])
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("%s must not contain NULL", field->arg)));
		s = TextDatumGetCString(elems[i]);
		check_text(field, s);
		if (i > 0)
			appendStringInfoChar(buf, ',');
		escape_json(buf, s);
	}
	appendStringInfoChar(buf, ']');
}

/* Appends one "member":value pair (with a leading comma when needed). */
static void
append_field(StringInfo buf, const EnkashField *field, Datum value,
			 bool isnull)
{
	const char *str = NULL;

	if (isnull && (field->flags & EF_COMPANY) &&
		enkash_company_id && enkash_company_id[0])
	{
		str = enkash_company_id;
		isnull = false;
	}
	if (isnull)
	{
		if (field->flags & EF_COMPANY)
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("company_id is not given and enkash.company_id is not set"),
					 errhint("Pass company_id => 'CEK...' or set enkash.company_id.")));
		if (field->flags & EF_REQUIRED)
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("%s must not be null", field->arg)));
		return;
	}

	if (buf->len > 1)
		appendStringInfoChar(buf, ',');
	escape_json(buf, field->json);
	appendStringInfoChar(buf, ':');

	switch (field->type)
	{
		case EF_TEXT:
			if (str == NULL)
				str = TextDatumGetCString(value);
			check_text(field, str);
			escape_json(buf, str);
			break;
		case EF_AMOUNT:
			append_amount(buf, field, value);
			break;
		case EF_BOOL:
			appendStringInfoString(buf, DatumGetBool(value) ? "true" : "false");
			break;
		case EF_INT:
			appendStringInfo(buf, "%d", DatumGetInt32(value));
			break;
		case EF_TEXT_ARRAY:
			append_text_array(buf, field, value);
			break;
	}
}

PG_FUNCTION_INFO_V1(enkash_endpoint_call);

/* The C body of every endpoint function in the install script. */
Datum
enkash_endpoint_call(PG_FUNCTION_ARGS)
{
	CallPlan   *plan = fcinfo->flinfo->fn_extra;
	const EnkashEndpoint *ep;
	StringInfoData body;

	if (plan == NULL)
		fcinfo->flinfo->fn_extra = plan = build_plan(fcinfo->flinfo);
	ep = plan->endpoint;

	initStringInfo(&body);
	appendStringInfoChar(&body, '{');
	for (int f = 0; f < plan->nfields; f++)
	{
		int			a = plan->argno[f];
		bool		isnull = (a < 0 || PG_ARGISNULL(a));

		append_field(&body, &ep->fields[f], isnull ? (Datum) 0 : PG_GETARG_DATUM(a),
					 isnull);
	}
	if (ep->fixed)
	{
		if (body.len > 1)
			appendStringInfoChar(&body, ',');
		appendStringInfoString(&body, ep->fixed);
	}
	appendStringInfoChar(&body, '}');

	PG_RETURN_JSONB_P(enkash_send(ep, body.data, body.len));
}
