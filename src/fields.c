/*-------------------------------------------------------------------------
 *
 * fields.c
 *	  One argument of an endpoint function as its JSON member: each type's
 *	  checks (digits, e-mail, amounts, dates, lengths) and its JSON form, so
 *	  that bad input is refused before anything is sent.
 *
 *-------------------------------------------------------------------------
 */
#include "fields.h"

#include "catalog/pg_type.h"
#include "mb/pg_wchar.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/lsyscache.h"
#include "utils/date.h"
#include "utils/datetime.h"
#include "utils/numeric.h"
#include "utils/timestamp.h"

/* Longest text value we pass on; EnKash's own limits are lower. */
#define MAX_TEXT_CHARS 1000
#define MAX_ARRAY_ITEMS 100

void
invalid_value(const EnkashField *field, const char *problem, const char *hint)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("%s %s", field->arg, problem),
			 hint ? errhint("%s", hint) : 0));
}

static bool
all_digits(const char *s, int min, int max)
{
	int			n = 0;

	for (; *s; s++, n++)
		if (!isdigit((unsigned char) *s))
			return false;
	return n >= min && n <= max;
}

static bool
looks_like_email(const char *s)
{
	const char *at = strchr(s, '@');
	const char *dot;

	if (at == NULL || at == s || strchr(at + 1, '@') || strlen(s) > 254)
		return false;
	for (const char *p = s; *p; p++)
		if (isspace((unsigned char) *p) || iscntrl((unsigned char) *p))
			return false;
	dot = strrchr(at + 1, '.');
	return dot && dot > at + 1 && dot[1] != '\0';
}

/* Checks a value against its field's format; says what is wrong or NULL. */
static const char *
format_problem(const EnkashField *field, const char *value)
{
	switch (field->format)
	{
		case EV_ANY:
			return NULL;
		case EV_ID:
			for (const char *p = value; *p; p++)
				if (!(isalnum((unsigned char) *p) || strchr("-_./:", *p)))
					return "contains a character not allowed in an EnKash identifier";
			return pg_mbstrlen(value) > ENKASH_MAX_ID_CHARS ?
				"is too long to be an EnKash identifier" : NULL;
		case EV_MOBILE:
			return all_digits(value, 10, 10) ? NULL : "must be 10 digits";
		case EV_EMAIL:
			return looks_like_email(value) ? NULL : "is not an e-mail address";
	}
	return NULL;
}

/*
 * An idempotency key, on every path that takes one (typed, raw, queued):
 * one EnKash would accept, refused before anything is recorded or sent.
 */
void
enkash_check_key(const char *key)
{
	if (key == NULL)
		return;
	if (pg_mbstrlen(key) > ENKASH_MAX_ID_CHARS)
		ereport(ERROR,
				(errcode(ERRCODE_STRING_DATA_RIGHT_TRUNCATION),
				 errmsg("the idempotency key is too long: at most %d characters", ENKASH_MAX_ID_CHARS),
				 errdetail("The key has %d characters; nothing was sent.", pg_mbstrlen(key)),
				 errhint("Use a shorter reference number or idempotency key.")));
}

static void
check_text(const EnkashField *field, const char *value)
{
	int			chars = pg_mbstrlen(value);
	const char *problem;
	const char *p = value;

	while (*p == ' ' || *p == '\t')
		p++;
	if (*p == '\0')
		invalid_value(field, "must not be empty", NULL);
	if (chars > MAX_TEXT_CHARS)
		ereport(ERROR,
				(errcode(ERRCODE_STRING_DATA_RIGHT_TRUNCATION),
				 errmsg("%s is too long", field->arg),
				 errdetail("It has %d characters; at most %d are sent to EnKash.",
						   chars, MAX_TEXT_CHARS)));

	/* Secrets are never quoted back, not even in an error. */
	if ((problem = format_problem(field, value)) != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s %s", field->arg, problem),
				 (field->flags & EF_SECRET) ? 0 :
				 errdetail("The value given was \"%s\".", value)));

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
	if (field->flags & EF_ZERO_OK)
	{
		if (digits[0] == '-')
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("%s must not be negative", field->arg),
					 errdetail("The amount given was %s.", digits)));
	}
	else if (digits[0] == '-' ||
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
	if (n < 1 || n > MAX_ARRAY_ITEMS)
		ereport(ERROR,
				(errcode(ERRCODE_ARRAY_SUBSCRIPT_ERROR),
				 errmsg("%s must list 1 to %d values", field->arg, MAX_ARRAY_ITEMS),
				 errdetail("It lists %d.", n)));
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

/* A date as EnKash writes it: "dd-MM-yyyy". */
static void
append_date(StringInfo buf, const EnkashField *field, Datum value)
{
	DateADT		date = DatumGetDateADT(value);
	int			year,
				month,
				day;

	if (DATE_NOT_FINITE(date))
		invalid_value(field, "must be a finite date", NULL);
	j2date(date + POSTGRES_EPOCH_JDATE, &year, &month, &day);
	appendStringInfo(buf, "\"%02d-%02d-%04d\"", day, month, year);
}

/* A moment as EnKash's pages write it: ISO-8601 in UTC, 2025-01-24T08:47:01.505Z. */
static void
append_timestamp(StringInfo buf, const EnkashField *field, Datum value)
{
	TimestampTz ts = DatumGetTimestampTz(value);
	struct pg_tm tm;
	fsec_t		fsec;

	if (TIMESTAMP_NOT_FINITE(ts))
		invalid_value(field, "must be a finite time", NULL);
	if (timestamp2tm(ts, NULL, &tm, &fsec, NULL, NULL) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_DATETIME_VALUE_OUT_OF_RANGE),
				 errmsg("%s is out of range", field->arg)));
	appendStringInfo(buf, "\"%04d-%02d-%02dT%02d:%02d:%02d.%03dZ\"",
					 tm.tm_year, tm.tm_mon, tm.tm_mday, tm.tm_hour, tm.tm_min,
					 tm.tm_sec, (int) (fsec / 1000));
}

/* Refuses a range whose start lies after its end. */
void
check_range(const EnkashField *from, Datum from_value,
			const EnkashField *to, Datum to_value)
{
	bool		reversed;

	if (from->type == EF_AMOUNT)
		reversed = DatumGetInt32(DirectFunctionCall2(numeric_cmp, from_value,
													 to_value)) > 0;
	else
		reversed = DatumGetTimestampTz(from_value) > DatumGetTimestampTz(to_value);
	if (reversed)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s is after %s", from->arg, to->arg),
				 errhint("Give the start of the range first.")));
}

/* The text in UTF-8, as JSON on the wire must be; refused if it cannot be. */
static const char *
to_utf8(const EnkashField *field, const char *str)
{
	if (GetDatabaseEncoding() == PG_UTF8)
		return str;
	if (GetDatabaseEncoding() == PG_SQL_ASCII &&
		!pg_verify_mbstr(PG_UTF8, str, strlen(str), true))
		ereport(ERROR,
				(errcode(ERRCODE_CHARACTER_NOT_IN_REPERTOIRE),
				 errmsg("%s is not valid UTF-8", field->arg),
				 errhint("EnKash takes UTF-8 text; this database (SQL_ASCII) does not check it.")));
	return pg_server_to_any(str, strlen(str), PG_UTF8);
}

/* documents as given: an array of objects such as {"docType":"PAN","docNo":...}. */
static void
append_documents(StringInfo buf, const EnkashField *field, Jsonb *docs)
{
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken tok;

	if (!JB_ROOT_IS_ARRAY(docs) || JB_ROOT_IS_SCALAR(docs))
		invalid_value(field, "must be a JSON array of documents",
					  "For example '[{\"docType\": \"PAN\", \"docNo\": \"ABCDE1234F\"}]'.");
	it = JsonbIteratorInit(&docs->root);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
		if (tok == WJB_ELEM && v.type != jbvBinary)
			invalid_value(field, "must hold objects only",
						  "Each document is an object such as {\"docType\": \"PAN\", \"docNo\": \"ABCDE1234F\"}.");
	appendStringInfoString(buf, JsonbToCString(NULL, &docs->root, VARSIZE(docs)));
}

/* Appends one "member":value pair (with a leading comma when needed). */
void
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

	/* Members given as a jsonb object: appended after the loop. */
	if (field->type == EF_MEMBERS)
		return;

	/* A field that is not sent (an idempotency key) is only checked. */
	if (field->json == NULL)
	{
		check_text(field, TextDatumGetCString(value));
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
			escape_json(buf, to_utf8(field, str));
			break;
		case EF_AMOUNT:
			append_amount(buf, field, value);
			break;
		case EF_BOOL:
			appendStringInfoString(buf, DatumGetBool(value) ? "true" : "false");
			break;
		case EF_COUNT:
			if (DatumGetInt32(value) < 0)
				invalid_value(field, "must not be negative", NULL);
			appendStringInfo(buf, "%d", DatumGetInt32(value));
			break;
		case EF_TEXT_ARRAY:
			append_text_array(buf, field, value);
			break;
		case EF_DATE:
			append_date(buf, field, value);
			break;
		case EF_TIMESTAMP:
			append_timestamp(buf, field, value);
			break;
		case EF_PAN_DOCUMENT:
			str = TextDatumGetCString(value);
			check_text(field, str);
			appendStringInfoString(buf, "[{\"docType\":\"PAN\",\"docNo\":");
			escape_json(buf, str);
			appendStringInfoString(buf, "}]");
			break;
		case EF_DOCUMENTS:
			append_documents(buf, field, DatumGetJsonbP(value));
			break;
		case EF_MEMBERS:
			break;
	}
}
