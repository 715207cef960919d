/*-------------------------------------------------------------------------
 *
 * bare.c
 *	  The benchmark's floor of a call made from SQL: the raw client's
 *	  exchange (test/bench/wire.c, the extension's envelope code) in a C
 *	  function that returns the answer's payload as jsonb, as
 *	  enkash_get_card_account() does.  Nothing else: no settings, checks of
 *	  the arguments, keys, audit rows, masking, rate limit or cancellation.
 *	  Built and installed only by test/bench/run.sh, never with the
 *	  extension.
 *
 *	  bench_bare_call(token_url text, url text, request text) RETURNS jsonb
 *	  seals request (JSON text), POSTs it to url over this backend's one
 *	  kept-alive connection (a token from token_url on the first call, the
 *	  sandbox's test partner) and opens the answer: its "payload" if its
 *	  code is 0, else an error.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "wire.h"

PG_MODULE_MAGIC;

PG_FUNCTION_INFO_V1(bench_bare_call);

/* This backend's exchange, made on its first call and kept. */
static CURL *curl;
static struct curl_slist *headers;
static EnvelopeCipher cipher;
static WireBuffer answer;
static char *plain;
static size_t plain_cap;

static void
fail(const char *why, long status)
{
	ereport(ERROR,
			(errcode(ERRCODE_EXTERNAL_ROUTINE_EXCEPTION),
			 errmsg("bench_bare_call: %s", why),
			 status ? errdetail("HTTP status %ld.", status) : 0));
}

static void
setup(const char *token_url)
{
	const WireCredentials *cred = &wire_sandbox_credentials;
	char	   *token;
	const char *why;
	CURL	   *handle;

	if ((why = wire_token(cred, token_url, &token)) != NULL)
		fail(why, 0);
	headers = wire_headers(cred, token);
	explicit_bzero(token, strlen(token));
	free(token);
	if (headers == NULL || (handle = curl_easy_init()) == NULL)
		fail("could not set up libcurl", 0);
	if (!envelope_init(&cipher, cred->client_secret, strlen(cred->client_secret)))
	{
		curl_easy_cleanup(handle);
		fail("could not set up the cipher", 0);
	}
	wire_prepare(handle, headers, &answer, "enkash-bench-bare/0.1");
	curl = handle;				/* set up: kept for the backend's life */
}

/* The answer's code (a number or a string) is 0. */
static bool
code_is_zero(Jsonb *json)
{
	JsonbValue	v;

	if (getKeyJsonValueFromContainer(&json->root, "code", 4, &v) == NULL)
		return false;
	if (v.type == jbvString)
		return v.val.string.len == 1 && v.val.string.val[0] == '0';
	return v.type == jbvNumeric &&
		DatumGetBool(DirectFunctionCall2(numeric_eq, NumericGetDatum(v.val.numeric),
										 NumericGetDatum(int64_to_numeric(0))));
}

Datum
bench_bare_call(PG_FUNCTION_ARGS)
{
	char	   *url = text_to_cstring(PG_GETARG_TEXT_PP(1));
	text	   *request = PG_GETARG_TEXT_PP(2);
	size_t		request_len = VARSIZE_ANY_EXHDR(request);
	char	   *sealed = palloc(envelope_seal_bound(request_len));
	size_t		sealed_len;
	char	   *wrapped;
	long		status = 0;
	size_t		plain_len;
	const char *why;
	Jsonb	   *json;
	JsonbValue	payload;

	if (curl == NULL)
		setup(text_to_cstring(PG_GETARG_TEXT_PP(0)));
	if (envelope_seal(&cipher, VARDATA_ANY(request), request_len, sealed, &sealed_len) != ENVELOPE_OK)
		fail("could not encrypt the request", 0);
	wrapped = psprintf("{\"request\":\"%s\"}", sealed);
	curl_easy_setopt(curl, CURLOPT_URL, url);
	curl_easy_setopt(curl, CURLOPT_POSTFIELDS, wrapped);
	curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE, (long) strlen(wrapped));
	answer.len = 0;
	if (curl_easy_perform(curl) != CURLE_OK)
		fail("the request failed", 0);
	curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
	if (status != 200)
		fail("EnKash did not answer 200", status);
	if ((why = wire_open(&cipher, &answer, &plain, &plain_cap, &plain_len)) != NULL)
		fail(why, status);
	json = DatumGetJsonbP(DirectFunctionCall1(jsonb_in,
											  CStringGetDatum(pnstrdup(plain, plain_len))));
	if (!JB_ROOT_IS_OBJECT(json) || !code_is_zero(json))
		fail("EnKash's code is not 0", status);
	if (getKeyJsonValueFromContainer(&json->root, "payload", 7, &payload) == NULL)
		payload.type = jbvNull;
	PG_RETURN_JSONB_P(JsonbValueToJsonb(&payload));
}
