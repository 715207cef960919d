/*-------------------------------------------------------------------------
 *
 * json_member.c
 *	  Reading one member of a JSON object: EnKash's answers, token answers,
 *	  listings and look-ups all read them the same way.
 *
 *-------------------------------------------------------------------------
 */
#include "enkash.h"

#include "utils/builtins.h"
#include "utils/numeric.h"

/* Member key of an object into *out; false if json is no object or lacks it. */
bool
enkash_json_member(Jsonb *json, const char *key, JsonbValue *out)
{
	return json != NULL && JB_ROOT_IS_OBJECT(json) &&
		getKeyJsonValueFromContainer(&json->root, key, strlen(key), out) != NULL;
}

/* A string member, or NULL. */
char *
enkash_json_string(Jsonb *json, const char *key)
{
	JsonbValue	v;

	if (enkash_json_member(json, key, &v) && v.type == jbvString)
		return pnstrdup(v.val.string.val, v.val.string.len);
	return NULL;
}

/* A string or number member as text, or NULL. */
char *
enkash_json_scalar(Jsonb *json, const char *key)
{
	JsonbValue	v;

	if (!enkash_json_member(json, key, &v))
		return NULL;
	if (v.type == jbvString)
		return pnstrdup(v.val.string.val, v.val.string.len);
	if (v.type == jbvNumeric)
		return DatumGetCString(DirectFunctionCall1(numeric_out,
												   NumericGetDatum(v.val.numeric)));
	return NULL;
}

/* A number member as int8; false if absent or not a number. */
bool
enkash_json_int8(Jsonb *json, const char *key, int64 *out)
{
	JsonbValue	v;

	if (!enkash_json_member(json, key, &v) || v.type != jbvNumeric)
		return false;
	*out = DatumGetInt64(DirectFunctionCall1(numeric_int8,
											 NumericGetDatum(v.val.numeric)));
	return true;
}

/*
 * A request body built here, as jsonb: what controls read and what a key's
 * fingerprint hashes (jsonb's text is the canonical form).
 */
Jsonb *
enkash_body_jsonb(const char *json, size_t len)
{
	return DatumGetJsonbP(DirectFunctionCall1(jsonb_in,
											  CStringGetDatum(pnstrdup(json, len))));
}
