/*-------------------------------------------------------------------------
 *
 * response.c
 *	  EnKash's answer -> the payload as jsonb, or an error a person can act on.
 *
 * Accepts the encrypted {"request": ...} wrapper and a plain JSON envelope,
 * and both spellings of the status ({"code","message"} and
 * {"response_code","response_message"}).  Every failure gets a SQLSTATE of
 * class NK (never XX000), one per way an answer can be broken, EnKash's
 * message in errmsg, and the EnKash code and HTTP status in errdetail.  The
 * body is untrusted: it is never quoted whole in a message, and nothing in
 * it may make the parser throw or recurse without bound.
 *
 * An answer is read once: the wrapper is found by a byte scan (envelope.c),
 * the Base64 decoded and decrypted into one buffer, and the JSON inside
 * parsed straight into jsonb in a single pass after a byte scan has bounded
 * its nesting.
 *
 *-------------------------------------------------------------------------
 */
#include "enkash.h"

#include "common/jsonapi.h"
#include "envelope.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/numeric.h"

/* EnKash's messages are quoted in errmsg up to this many bytes. */
#define MAX_MESSAGE_BYTES 300

/*
 * Nesting enkash_parse_json_or_null allows (request bodies, stored payloads,
 * token answers): more than any of them needs, little enough for the stack.
 */
#define TRUSTED_JSON_MAX_DEPTH 1000

/* The longest number accepted in an answer, and its largest exponent. */
#define MAX_NUMBER_CHARS 1000
#define MAX_NUMBER_EXPONENT_DIGITS 3

/* The ways an answer can be broken; each has its own SQLSTATE. */
typedef enum AnswerFault
{
	ANSWER_OK,
	ANSWER_NOT_JSON,			/* also: JSON of the wrong shape */
	ANSWER_NOT_TEXT,			/* not UTF-8 (decrypted: the wrong key) */
	ANSWER_TRUNCATED,
	ANSWER_NOT_BASE64,
	ANSWER_UNDECRYPTABLE,
	ANSWER_TOO_DEEP,
	ANSWER_NO_CODE,
	ANSWER_TOO_LARGE
} AnswerFault;

/* The detail for text that is not JSON (the decrypted text says so). */
static const char body_not_json[] = "The body is not JSON";

/* What went wrong, for the error: the fault and a sentence of detail. */
typedef struct AnswerProblem
{
	AnswerFault fault;
	const char *why;
} AnswerProblem;

/* jsonb under construction, as jsonb_in builds it, plus what went wrong. */
typedef struct JsonbBuild
{
	JsonbParseState *state;
	JsonbValue *result;
	AnswerProblem problem;
} JsonbBuild;

static void
build_fail(JsonbBuild *b, AnswerFault fault, const char *why)
{
	if (b->problem.fault == ANSWER_OK)
	{
		b->problem.fault = fault;
		b->problem.why = why;
	}
}

static void
build_push(JsonbBuild *b, JsonbIteratorToken token, JsonbValue *v)
{
	b->result = pushJsonbValue(&b->state, token, v);
}

static JSON_ACTION_RESULT
build_object_start(void *state)
{
	build_push(state, WJB_BEGIN_OBJECT, NULL);
	JSON_ACTION_DONE;
}

static JSON_ACTION_RESULT
build_object_end(void *state)
{
	build_push(state, WJB_END_OBJECT, NULL);
	JSON_ACTION_DONE;
}

static JSON_ACTION_RESULT
build_array_start(void *state)
{
	build_push(state, WJB_BEGIN_ARRAY, NULL);
	JSON_ACTION_DONE;
}

static JSON_ACTION_RESULT
build_array_end(void *state)
{
	build_push(state, WJB_END_ARRAY, NULL);
	JSON_ACTION_DONE;
}

/* A string jsonb can hold; an empty one stands in for one it cannot. */
static void
build_string(JsonbBuild *b, JsonbValue *v, char *s)
{
	size_t		len = strlen(s);

	if (len > JENTRY_OFFLENMASK)
	{
		build_fail(b, ANSWER_TOO_LARGE, "The body holds a string too long to store");
		len = 0;
	}
	v->type = jbvString;
	v->val.string.val = s;
	v->val.string.len = (int) len;
}

static JSON_ACTION_RESULT
build_key(void *state, char *fname, bool isnull)
{
	JsonbBuild *b = state;
	JsonbValue	v;

	build_string(b, &v, fname);
	build_push(b, WJB_KEY, &v);
	JSON_ACTION_DONE;
}

/*
 * numeric_in throws for exponents and lengths numeric cannot hold; JSON
 * allows any, so the ones it could refuse are turned down first.
 */
static bool
number_fits(const char *token)
{
	const char *e = strpbrk(token, "eE");

	if (strlen(token) > MAX_NUMBER_CHARS)
		return false;
	if (e == NULL)
		return true;
	e++;
	if (*e == '+' || *e == '-')
		e++;
	while (*e == '0')
		e++;
	return strlen(e) <= MAX_NUMBER_EXPONENT_DIGITS;
}

/*
 * A plain decimal number (no exponent, at most 18 digits, as nearly all of
 * EnKash's are) made without numeric_in's text parsing, which costs about
 * 1,000 instructions a number; the same value and scale.  NULL for others.
 */
static Numeric
plain_decimal(const char *token)
{
	const char *p = token + (*token == '-');
	int64		value = 0;
	int			digits = 0;
	int			scale = -1;

	for (; *p; p++)
	{
		if (*p >= '0' && *p <= '9')
		{
			if (++digits > 18)
				return NULL;
			value = value * 10 + (*p - '0');
			if (scale >= 0)
				scale++;
		}
		else if (*p == '.' && scale < 0)
			scale = 0;
		else
			return NULL;
	}
	if (digits == 0)
		return NULL;
	return int64_div_fast_to_numeric(*token == '-' ? -value : value, Max(scale, 0));
}

static JSON_ACTION_RESULT
build_scalar(void *state, char *token, JsonTokenType type)
{
	JsonbBuild *b = state;
	JsonbValue	v;

	switch (type)
	{
		case JSON_TOKEN_STRING:
			build_string(b, &v, token);
			break;
		case JSON_TOKEN_NUMBER:
			if (!number_fits(token))
			{
				build_fail(b, ANSWER_NOT_JSON, "The body holds a number too large to store");
				token = "0";
			}
			v.type = jbvNumeric;
			v.val.numeric = plain_decimal(token);
			if (v.val.numeric == NULL)
				v.val.numeric = DatumGetNumeric(DirectFunctionCall3(numeric_in,
																	CStringGetDatum(token),
																	ObjectIdGetDatum(InvalidOid),
																	Int32GetDatum(-1)));
			break;
		case JSON_TOKEN_TRUE:
		case JSON_TOKEN_FALSE:
			v.type = jbvBool;
			v.val.boolean = (type == JSON_TOKEN_TRUE);
			break;
		default:
			v.type = jbvNull;
			break;
	}

	if (b->state == NULL)
	{
		/* a document that is one scalar: jsonb keeps it as a raw scalar */
		JsonbValue	array;

		array.type = jbvArray;
		array.val.array.rawScalar = true;
		array.val.array.nElems = 1;
		build_push(b, WJB_BEGIN_ARRAY, &array);
		build_push(b, WJB_ELEM, &v);
		build_push(b, WJB_END_ARRAY, NULL);
	}
	else
		build_push(b, b->state->contVal.type == jbvArray ? WJB_ELEM : WJB_VALUE, &v);
	JSON_ACTION_DONE;
}

/* A parse that failed because the text stopped, not because it is wrong. */
static bool
ends_early(JsonParseErrorType error, const JsonLexContext *lex)
{
	return error == JSON_EXPECTED_MORE ||
		(error == JSON_INVALID_TOKEN && lex->token_start != NULL &&
		 *lex->token_start == '"' &&
		 lex->token_terminator == lex->input + lex->input_length);
}

/*
 * Untrusted JSON text to jsonb in one pass, or NULL with *problem set.
 * Nothing in the text makes it throw: it is checked to be UTF-8 and nested
 * at most max_depth deep before the parser sees it, and numbers and strings
 * jsonb cannot hold are turned down.
 */
static Jsonb *
parse_json(const char *text, size_t len, int max_depth, AnswerProblem *problem)
{
	char	   *server_text = (char *) text;
	JsonLexContext *lex;
	JsonSemAction sem = {0};
	JsonbBuild	build = {0};
	JsonParseErrorType error;

	problem->fault = ANSWER_OK;
	problem->why = NULL;
	if (len == 0)
	{
		problem->fault = ANSWER_TRUNCATED;
		problem->why = "The body is empty";
		return NULL;
	}
	if (len > MaxAllocSize)
	{
		problem->fault = ANSWER_TOO_LARGE;
		problem->why = "The body is too large to parse";
		return NULL;
	}
	if (!pg_verify_mbstr(PG_UTF8, text, (int) len, true))
	{
		problem->fault = ANSWER_NOT_TEXT;
		problem->why = "The body is not UTF-8 text";
		return NULL;
	}
	if (envelope_json_depth(text, len, max_depth) > max_depth)
	{
		problem->fault = ANSWER_TOO_DEEP;
		problem->why = psprintf("The body nests arrays or objects more than %d levels deep",
								max_depth);
		return NULL;
	}

	if (GetDatabaseEncoding() != PG_UTF8)
	{
		server_text = pg_any_to_server(text, (int) len, PG_UTF8);
		len = strlen(server_text);
	}
	lex = enkash_json_lexer(server_text, (int) len, GetDatabaseEncoding(), true);
	sem.semstate = &build;
	sem.object_start = build_object_start;
	sem.object_end = build_object_end;
	sem.array_start = build_array_start;
	sem.array_end = build_array_end;
	sem.object_field_start = build_key;
	sem.scalar = build_scalar;

	error = pg_parse_json(lex, &sem);
	if (error != JSON_SUCCESS)
	{
		problem->fault = ends_early(error, lex) ? ANSWER_TRUNCATED : ANSWER_NOT_JSON;
		problem->why = problem->fault == ANSWER_TRUNCATED ?
			"The body ends before its JSON is complete" : body_not_json;
		return NULL;
	}
	if (build.problem.fault != ANSWER_OK)
	{
		*problem = build.problem;
		return NULL;
	}
	return JsonbValueToJsonb(build.result);
}

/*
 * Parses JSON text into jsonb; NULL when it is not valid JSON (or not valid
 * UTF-8, or absurdly nested).  Never throws for bad text.
 */
Jsonb *
enkash_parse_json_or_null(const char *text, size_t len)
{
	AnswerProblem problem;

	if (text == NULL)
		return NULL;
	return parse_json(text, len, TRUSTED_JSON_MAX_DEPTH, &problem);
}

/* A short printable rendering of a scalar member, or NULL. */
static char *
member_text(Jsonb *json, const char *key)
{
	char	   *s = enkash_json_scalar(json, key);

	if (s == NULL)
		return NULL;
	if (strlen(s) > MAX_MESSAGE_BYTES)
		s[pg_mbcliplen(s, strlen(s), MAX_MESSAGE_BYTES)] = '\0';
	return s;
}

/* Raises the error for an answer that came but cannot be used. */
enkash_noreturn
static void
bad_response(const char *what, const EnkashHttpResult *http,
			 const AnswerProblem *problem)
{
	int			sqlstate;
	const char *message;
	const char *hint = "If EnKash may have acted on it, check the outcome before trying again.";

	switch (problem->fault)
	{
		case ANSWER_TRUNCATED:
			sqlstate = ERRCODE_ENKASH_ANSWER_TRUNCATED;
			message = "EnKash's answer for %s is incomplete";
			break;
		case ANSWER_NOT_BASE64:
			sqlstate = ERRCODE_ENKASH_ANSWER_NOT_BASE64;
			message = "EnKash's answer for %s could not be decrypted";
			break;
		case ANSWER_UNDECRYPTABLE:
			sqlstate = ERRCODE_ENKASH_ANSWER_UNDECRYPTABLE;
			message = "EnKash's answer for %s could not be decrypted";
			hint = "Check encryption_secret in the file named by enkash.credentials_file.";
			break;
		case ANSWER_TOO_DEEP:
			sqlstate = ERRCODE_ENKASH_ANSWER_TOO_DEEP;
			message = "EnKash's answer for %s could not be read";
			break;
		case ANSWER_NO_CODE:
			sqlstate = ERRCODE_ENKASH_ANSWER_NO_CODE;
			message = "EnKash's answer for %s has no status code";
			break;
		case ANSWER_TOO_LARGE:
			sqlstate = ERRCODE_ENKASH_ANSWER_TOO_LARGE;
			message = "EnKash's answer for %s is too large";
			break;
		default:
			sqlstate = ERRCODE_ENKASH_BAD_RESPONSE;
			message = "EnKash's answer for %s could not be read";
			break;
	}
	ereport(ERROR,
			(errcode(sqlstate),
			 errmsg(message, what),
			 errdetail("%s (HTTP status %ld).", problem->why, http->status),
			 errhint("%s", hint)));
}

/* Raises for a non-2xx HTTP status, with whatever message EnKash gave. */
enkash_noreturn
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
				(errcode(ERRCODE_ENKASH_ANSWER_REDIRECT),
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

/* Opens an encrypted body into a new buffer; NULL with *problem set. */
static char *
decrypt(const char *b64, size_t b64_len, size_t *plain_len, AnswerProblem *problem)
{
	char	   *plain = palloc(envelope_open_bound(b64_len));
	EnvelopeStatus status = envelope_open(enkash_cipher(), b64, b64_len,
										  plain, plain_len);

	if (status == ENVELOPE_OK)
		return plain;
	problem->fault = status == ENVELOPE_BAD_BASE64 ?
		ANSWER_NOT_BASE64 : ANSWER_UNDECRYPTABLE;
	problem->why = status == ENVELOPE_BAD_BASE64 ?
		"The encrypted body is not valid Base64" : envelope_status_text(status);
	pfree(plain);
	return NULL;
}

/* The decrypted envelope as jsonb; NULL with *problem set. */
static Jsonb *
open_wrapped(const char *b64, size_t b64_len, AnswerProblem *problem)
{
	size_t		plain_len;
	char	   *plain = decrypt(b64, b64_len, &plain_len, problem);
	Jsonb	   *envelope;

	if (plain == NULL)
		return NULL;
	envelope = parse_json(plain, plain_len, ENVELOPE_MAX_JSON_DEPTH, problem);
	if (envelope != NULL)
		return envelope;
	if (problem->fault == ANSWER_NOT_TEXT)
	{
		/* random bytes: a wrong key whose padding happened to check out */
		problem->fault = ANSWER_UNDECRYPTABLE;
		problem->why = "The body does not decrypt to text with the configured encryption secret";
	}
	else if (problem->why == body_not_json)
		problem->why = "The decrypted body is not JSON";
	return NULL;
}

/*
 * The answer's envelope ({code, message, payload}) as jsonb, decrypted if it
 * came in the {"request": "<base64>"} wrapper; NULL with *problem set.
 */
static Jsonb *
read_envelope(const EnkashHttpResult *http, AnswerProblem *problem)
{
	const char *b64;
	size_t		b64_len;
	Jsonb	   *json;
	JsonbValue	v;

	switch (envelope_unwrap(http->body, http->body_len, &b64, &b64_len))
	{
		case ENVELOPE_OK:
			return open_wrapped(b64, b64_len, problem);
		case ENVELOPE_TRUNCATED:
			problem->fault = ANSWER_TRUNCATED;
			problem->why = envelope_status_text(ENVELOPE_TRUNCATED);
			return NULL;
		default:
			break;
	}

	/* Plain JSON (gateways, encryption off), or a wrapper with escapes. */
	json = parse_json(http->body, http->body_len, ENVELOPE_MAX_JSON_DEPTH, problem);
	if (json == NULL)
	{
		if (problem->fault == ANSWER_NOT_TEXT)
			problem->fault = ANSWER_NOT_JSON;
		return NULL;
	}
	if (!enkash_json_member(json, "request", &v))
		return json;
	if (v.type != jbvString)
	{
		problem->fault = ANSWER_NOT_JSON;
		problem->why = "The encrypted body is not a string";
		return NULL;
	}
	return open_wrapped(v.val.string.val, v.val.string.len, problem);
}

Jsonb *
enkash_parse_response(const char *what, const EnkashHttpResult *http,
					  EnkashAnswer *answer)
{
	AnswerProblem problem;
	Jsonb	   *envelope = read_envelope(http, &problem);
	JsonbValue	v;
	char	   *code;
	char	   *message;

	/* A refusal is told by its status; a broken body only loses the reason. */
	if (http->status < 200 || http->status > 299)
		http_failure(what, http, envelope);
	if (envelope == NULL)
		bad_response(what, http, &problem);
	if (!JB_ROOT_IS_OBJECT(envelope))
	{
		problem.fault = ANSWER_NOT_JSON;
		problem.why = "The body is not a JSON object";
		bad_response(what, http, &problem);
	}

	code = member_text(envelope, "code");
	if (code == NULL)
		code = member_text(envelope, "response_code");
	message = member_text(envelope, "message");
	if (message == NULL)
		message = member_text(envelope, "response_message");
	if (code == NULL)
	{
		problem.fault = ANSWER_NO_CODE;
		problem.why = "The answer has neither \"code\" nor \"response_code\"";
		bad_response(what, http, &problem);
	}

	/* filled before a decline too: a caller may need to know which one */
	if (answer)
	{
		answer->envelope = envelope;
		answer->code = code;
		answer->message = message;
	}
	if (strcmp(code, "0") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_ENKASH_REJECTED),
				 errmsg("EnKash declined %s: %s", what,
						message ? message : "no reason given"),
				 errdetail("EnKash code %s, HTTP status %ld.", code, http->status)));
	if (!enkash_json_member(envelope, "payload", &v))
		v.type = jbvNull;
	return JsonbValueToJsonb(&v);
}
