/*-------------------------------------------------------------------------
 *
 * response.c
 *	  EnKash's answer -> the payload as jsonb, or an error a person can act on.
 *
 * Accepts the encrypted {"request": ...} wrapper and a plain JSON envelope,
 * and both spellings of the status ({"code","message"} and
 * {"response_code","response_message"}).  Every failure gets a SQLSTATE of
 * class EK (never XX000), EnKash's message in errmsg, and the EnKash code and
 * HTTP status in errdetail.  The body is untrusted: it is validated before
 * jsonb sees it, and never quoted whole in a message.
 *
 *-------------------------------------------------------------------------
 */
#include "enkash.h"

#include "common/jsonapi.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"

/* EnKash's messages are quoted in errmsg up to this many bytes. */
#define MAX_MESSAGE_BYTES 300

/*
 * Parses untrusted JSON text into jsonb; NULL when it is not valid JSON (or
 * not valid UTF-8).  Validation runs first so that jsonb_in cannot throw.
 */
Jsonb *
enkash_parse_json_or_null(const char *text, size_t len)
{
	char	   *server_text;
	JsonLexContext *lex;

	if (text == NULL || len == 0 || memchr(text, '\0', len) != NULL ||
		!pg_verify_mbstr(PG_UTF8, text, (int) len, true))
		return NULL;

	server_text = pg_any_to_server(text, (int) len, PG_UTF8);
	lex = makeJsonLexContextCstringLen(server_text, strlen(server_text),
									   GetDatabaseEncoding(), true);
	if (pg_parse_json(lex, &nullSemAction) != JSON_SUCCESS)
		return NULL;

	return DatumGetJsonbP(DirectFunctionCall1(jsonb_in,
											  CStringGetDatum(server_text)));
}

static bool
member(Jsonb *json, const char *key, JsonbValue *out)
{
	return JB_ROOT_IS_OBJECT(json) &&
		getKeyJsonValueFromContainer(&json->root, key, strlen(key), out) != NULL;
}

/* A short printable rendering of a scalar member, or NULL. */
static char *
member_text(Jsonb *json, const char *key)
{
	JsonbValue	v;
	char	   *s;

	if (json == NULL || !member(json, key, &v))
		return NULL;
	if (v.type == jbvString)
		s = pnstrdup(v.val.string.val, v.val.string.len);
	else if (v.type == jbvNumeric)
		s = DatumGetCString(DirectFunctionCall1(numeric_out,
												NumericGetDatum(v.val.numeric)));
	else
		return NULL;
	if (strlen(s) > MAX_MESSAGE_BYTES)
		s[pg_mbcliplen(s, strlen(s), MAX_MESSAGE_BYTES)] = '\0';
	return s;
}

pg_attribute_noreturn()
static void
bad_response(const char *what, const EnkashHttpResult *http, const char *why)
{
	ereport(ERROR,
			(errcode(ERRCODE_ENKASH_BAD_RESPONSE),
			 errmsg("EnKash's answer for %s could not be read", what),
			 errdetail("%s (HTTP status %ld).", why, http->status),
			 errhint("If EnKash may have acted on it, check the outcome before trying again.")));
}

/* Raises for a non-2xx HTTP status, with whatever message EnKash gave. */
pg_attribute_noreturn()
static void
http_failure(const char *what, const EnkashHttpResult *http, Jsonb *envelope)
{
	char	   *message = NULL;
	char	   *code = NULL;
	int			sqlstate;
	const char *hint = NULL;

	if (envelope)
	{
		message = member_text(envelope, "message");
		if (!message)
			message = member_text(envelope, "response_message");
		if (!message)
			message = member_text(envelope, "error_description");
		code = member_text(envelope, "code");
		if (!code)
			code = member_text(envelope, "response_code");
	}

	/* A redirect or other oddity is not followed; EnKash may have acted. */
	if (http->status < 400)
		ereport(ERROR,
				(errcode(ERRCODE_ENKASH_BAD_RESPONSE),
				 errmsg("EnKash's answer for %s could not be used", what),
				 errdetail("HTTP status %ld; redirects are not followed.", http->status),
				 errhint("If EnKash may have acted on it, check the outcome before trying again.")));

	if (http->status == 401 || http->status == 403)
	{
		sqlstate = ERRCODE_ENKASH_AUTH_FAILED;
		hint = "Check enkash.partner_id and the partner credentials, and that these APIs are enabled for the partner.";
	}
	else if (http->status == 429 || http->status >= 500)
	{
		sqlstate = ERRCODE_ENKASH_UNAVAILABLE;
		hint = "EnKash is unavailable or busy; try again later.";
	}
	else if (http->status == 422)
	{
		sqlstate = ERRCODE_ENKASH_BAD_REQUEST;
		hint = "EnKash could not decrypt or read the request: check encryption_secret in the credentials file and enkash.encrypt.";
	}
	else if (http->status == 412)
	{
		sqlstate = ERRCODE_ENKASH_BAD_REQUEST;
		hint = "Check company_id or enkash.company_id.";
	}
	else
		sqlstate = ERRCODE_ENKASH_BAD_REQUEST;

	ereport(ERROR,
			(errcode(sqlstate),
			 errmsg("EnKash refused %s: %s", what,
					message ? message : "no reason given"),
			 code ? errdetail("EnKash code %s, HTTP status %ld.", code, http->status) :
			 errdetail("HTTP status %ld.", http->status),
			 hint ? errhint("%s", hint) : 0));
}

Jsonb *
enkash_parse_response(const char *what, const EnkashHttpResult *http,
					  EnkashAnswer *answer)
{
	Jsonb	   *outer = enkash_parse_json_or_null(http->body, http->body_len);
	Jsonb	   *envelope = outer;
	JsonbValue	v;
	char	   *code;
	char	   *message;

	/* Unwrap {"request": "<base64>"}; gateways may answer plain JSON. */
	if (outer && member(outer, "request", &v))
	{
		const char *why = NULL;
		size_t		plain_len;
		char	   *plain;

		if (v.type != jbvString)
			bad_response(what, http, "The encrypted body is not a string");
		plain = enkash_open_body(v.val.string.val, v.val.string.len,
								 &plain_len, &why);
		if (plain == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_ENKASH_BAD_RESPONSE),
					 errmsg("EnKash's answer for %s could not be decrypted", what),
					 errdetail("%s (HTTP status %ld).", why, http->status),
					 errhint("Check encryption_secret in the file named by enkash.credentials_file.")));
		envelope = enkash_parse_json_or_null(plain, plain_len);
		if (envelope == NULL)
			bad_response(what, http, "The decrypted body is not JSON");
	}

	if (http->status < 200 || http->status > 299)
		http_failure(what, http, envelope);
	if (envelope == NULL)
		bad_response(what, http, "The body is not JSON");
	if (!JB_ROOT_IS_OBJECT(envelope))
		bad_response(what, http, "The body is not a JSON object");

	code = member_text(envelope, "code");
	if (code == NULL)
		code = member_text(envelope, "response_code");
	message = member_text(envelope, "message");
	if (message == NULL)
		message = member_text(envelope, "response_message");
	if (code == NULL)
		bad_response(what, http, "The answer has no status code");

	if (strcmp(code, "0") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_ENKASH_REJECTED),
				 errmsg("EnKash declined %s: %s", what,
						message ? message : "no reason given"),
				 errdetail("EnKash code %s, HTTP status %ld.", code, http->status)));

	if (answer)
	{
		answer->envelope = envelope;
		answer->code = code;
		answer->message = message;
	}
	if (!member(envelope, "payload", &v))
		v.type = jbvNull;
	return JsonbValueToJsonb(&v);
}
