/*-------------------------------------------------------------------------
 *
 * mask.c
 *	  Removes card secrets and credentials from JSON before it is stored.
 *
 * Everything written to enkash's tables (audit log, idempotency outcomes)
 * goes through enkash_mask first.  Members named after a secret are
 * replaced by "[removed]"; a card number becomes first 6 / last 4; and any
 * string that looks like a card number (13 to 19 digits) is masked wherever
 * it appears, even inside free text, so a secret under an unexpected name
 * is caught as well.
 *
 *-------------------------------------------------------------------------
 */
#include "enkash.h"

#include "utils/jsonb.h"

/* Members whose values are never kept, compared case-insensitively. */
static const char *const removed_members[] = {
	"cvv", "cvv2", "pin", "pinBlock", "otp", "mfaCode", "password",
	"client_secret", "clientSecret", "access_token", "refresh_token",
	"accessToken", "refreshToken", "token", "expiry", "expiryDate",
	"encryption_secret", NULL
};

/* Members holding a full card number, kept as first 6 / last 4. */
static const char *const card_number_members[] = {
	"cardNumber", "pan", "cardNo", NULL
};

static bool
member_in(const char *name, int len, const char *const *list)
{
	for (const char *const *m = list; *m; m++)
		if ((int) strlen(*m) == len && pg_strncasecmp(name, *m, len) == 0)
			return true;
	return false;
}

/* Writes a card number's digits as first 6, X's, last 4. */
static void
append_masked_digits(StringInfo out, const char *digits, int n)
{
	appendBinaryStringInfo(out, digits, 6);
	for (int i = 6; i < n - 4; i++)
		appendStringInfoChar(out, 'X');
	appendBinaryStringInfo(out, digits + n - 4, 4);
}

/*
 * Masks every card number inside a string: a run of 13 to 19 digits,
 * possibly split by spaces or dashes ("4111 1111 1111 1111"), wherever it
 * stands, so that one typed into a description is caught too.  With
 * whole, the string is a card number member: all of it is masked.
 */
static bool
mask_card_numbers(JsonbValue *v, bool whole)
{
	const char *s = v->val.string.val;
	int			len = v->val.string.len;
	char	   *digits = palloc(len + 1);
	StringInfoData out;
	bool		changed = false;
	int			i = 0;

	initStringInfo(&out);
	while (i < len)
	{
		int			start = i;
		int			end = i;
		int			n = 0;

		if (!(s[i] >= '0' && s[i] <= '9'))
		{
			appendStringInfoChar(&out, s[i++]);
			continue;
		}
		/* the run: digits, with single spaces or dashes between them */
		while (end < len && ((s[end] >= '0' && s[end] <= '9') ||
							 ((s[end] == ' ' || s[end] == '-') && end + 1 < len &&
							  s[end + 1] >= '0' && s[end + 1] <= '9')))
		{
			if (s[end] >= '0' && s[end] <= '9')
				digits[n++] = s[end];
			end++;
		}
		if (n >= 13 && n <= 19)
		{
			append_masked_digits(&out, digits, n);
			changed = true;
		}
		else
			appendBinaryStringInfo(&out, s + start, end - start);
		i = end;
	}
	if (whole && !changed)
	{
		resetStringInfo(&out);
		appendStringInfoString(&out, "[removed]");
		changed = true;
	}
	if (changed)
	{
		v->val.string.val = out.data;
		v->val.string.len = out.len;
	}
	return changed;
}

static void
set_removed(JsonbValue *v)
{
	v->type = jbvString;
	v->val.string.val = "[removed]";
	v->val.string.len = 9;
}

/* The masked copy of a JSON document. */
Jsonb *
enkash_mask(Jsonb *json)
{
	JsonbParseState *state = NULL;
	JsonbIterator *it = JsonbIteratorInit(&json->root);
	JsonbValue	v;
	JsonbIteratorToken token;
	JsonbValue *result = NULL;
	bool		remove_next = false;
	bool		card_next = false;

	while ((token = JsonbIteratorNext(&it, &v, false)) != WJB_DONE)
	{
		if (token == WJB_KEY)
		{
			remove_next = member_in(v.val.string.val, v.val.string.len,
									removed_members);
			card_next = member_in(v.val.string.val, v.val.string.len,
								  card_number_members);
			result = pushJsonbValue(&state, token, &v);
			continue;
		}

		if (token == WJB_VALUE || token == WJB_ELEM)
		{
			if (remove_next && token == WJB_VALUE)
				set_removed(&v);
			else if (v.type == jbvString)
				mask_card_numbers(&v, card_next && token == WJB_VALUE);
			remove_next = card_next = false;
			result = pushJsonbValue(&state, token, &v);
			continue;
		}

		/*
		 * Opening a container under a removed member: skip the container
		 * and store the marker instead.
		 */
		if ((token == WJB_BEGIN_OBJECT || token == WJB_BEGIN_ARRAY) && remove_next)
		{
			int			depth = 1;
			JsonbValue	marker;

			while (depth > 0 && (token = JsonbIteratorNext(&it, &v, false)) != WJB_DONE)
			{
				if (token == WJB_BEGIN_OBJECT || token == WJB_BEGIN_ARRAY)
					depth++;
				else if (token == WJB_END_OBJECT || token == WJB_END_ARRAY)
					depth--;
			}
			set_removed(&marker);
			result = pushJsonbValue(&state, WJB_VALUE, &marker);
			remove_next = card_next = false;
			continue;
		}
		remove_next = card_next = false;
		/* Only a raw scalar's pseudo-array needs its value passed on. */
		result = pushJsonbValue(&state, token,
								(token == WJB_BEGIN_ARRAY && v.val.array.rawScalar) ? &v : NULL);
	}
	return JsonbValueToJsonb(result);
}

/* Whether "name" (in quotes, any case) occurs in the text. */
static bool
mentions_member(const char *json, size_t len, const char *name)
{
	size_t		n = strlen(name);

	for (const char *p = memchr(json, '"', len); p && p + n + 1 < json + len;
		 p = memchr(p + 1, '"', json + len - p - 1))
		if (pg_strncasecmp(p + 1, name, n) == 0 && p[n + 1] == '"')
			return true;
	return false;
}

/*
 * Whether masking could change the text: a secret member name, or 13 or
 * more digits in a run of digits, spaces and dashes.  Most requests have
 * neither, and are stored without being parsed again.
 */
static bool
may_hold_secrets(const char *json, size_t len)
{
	int			digits = 0;

	for (size_t i = 0; i < len; i++)
	{
		if (json[i] >= '0' && json[i] <= '9')
		{
			if (++digits >= 13)
				return true;
		}
		else if (json[i] != ' ' && json[i] != '-')
			digits = 0;
	}
	for (const char *const *m = removed_members; *m; m++)
		if (mentions_member(json, len, *m))
			return true;
	for (const char *const *m = card_number_members; *m; m++)
		if (mentions_member(json, len, *m))
			return true;
	return false;
}

/* Masks JSON text; text that is not JSON is not stored at all. */
char *
enkash_mask_text(const char *json, size_t len)
{
	Jsonb	   *parsed = enkash_parse_json_or_null(json, len);

	if (parsed == NULL)
		return NULL;
	parsed = enkash_mask(parsed);
	return JsonbToCString(NULL, &parsed->root, VARSIZE(parsed));
}

/*
 * Masks JSON that enkash built itself (a request body), skipping the parse
 * when nothing in it could be a secret.
 */
char *
enkash_mask_request(const char *json, size_t len)
{
	if (!may_hold_secrets(json, len))
		return pnstrdup(json, len);
	return enkash_mask_text(json, len);
}
