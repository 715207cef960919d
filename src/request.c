/*-------------------------------------------------------------------------
 *
 * request.c
 *	  One authenticated, encrypted call to an EnKash endpoint.
 *
 * Seals the body, attaches the bearer token and partner id, retries once
 * with a fresh token when EnKash says the token is no longer valid (HTTP
 * 401), and hands the answer to response.c.  The bearer header is built on
 * the stack and wiped; it is never logged or returned.
 *
 *-------------------------------------------------------------------------
 */
#include "enkash.h"

#include "endpoints.h"
#include "envelope.h"
#include "ledger.h"
#include "live.h"

/* The cipher for the current credentials, kept to avoid per-call setup. */
static EnvelopeCipher cipher;
static uint64 cipher_version = 0;

/*
 * How far the current enkash_send got: whether anything may have reached
 * EnKash, and the last HTTP answer's outcome, status, time and Retry-After
 * (no body).
 */
static bool send_left = false;
static EnkashHttpResult send_http;

EnvelopeCipher *
enkash_cipher(void)
{
	const EnkashCredentials *creds = enkash_credentials();

	if (cipher_version != creds->version)
	{
		if (cipher_version != 0)
			envelope_free(&cipher);
		cipher_version = 0;
		if (!envelope_init(&cipher, creds->encryption_secret,
						   strlen(creds->encryption_secret)))
			ereport(ERROR,
					(errcode(ERRCODE_EXTERNAL_ROUTINE_EXCEPTION),
					 errmsg("could not set up the EnKash payload cipher")));
		cipher_version = creds->version;
	}
	return &cipher;
}

/* {"request":"<base64 of the AES ciphertext>"}, palloc'd. */
char *
enkash_seal_body(const char *json, size_t len, size_t *out_len)
{
	static const char head[] = "{\"request\":\"";
	static const char tail[] = "\"}";
	EnvelopeCipher *c = enkash_cipher();
	char	   *out = palloc(sizeof(head) - 1 + envelope_seal_bound(len) + sizeof(tail));
	size_t		b64_len;

	memcpy(out, head, sizeof(head) - 1);
	if (envelope_seal(c, json, len, out + sizeof(head) - 1, &b64_len) != ENVELOPE_OK)
		ereport(ERROR,
				(errcode(ERRCODE_EXTERNAL_ROUTINE_EXCEPTION),
				 errmsg("could not encrypt the request to EnKash")));
	memcpy(out + sizeof(head) - 1 + b64_len, tail, sizeof(tail));
	*out_len = sizeof(head) - 1 + b64_len + sizeof(tail) - 1;
	return out;
}

/*
 * The headers of an authenticated API call, the bearer header written into
 * the caller's buffer (ENKASH_BEARER_MAX bytes, to be wiped after the call).
 * Returns the token's generation, for enkash_token_invalidate.
 */
uint64
enkash_api_headers(const char **headers, char *bearer, const char *partner_header)
{
	uint64		generation;

	strcpy(bearer, "authorization: Bearer ");
	generation = enkash_token_get(bearer + strlen(bearer),
								  ENKASH_BEARER_MAX - strlen(bearer));
	headers[0] = bearer;
	headers[1] = partner_header;
	headers[2] = "Content-Type: application/json";
	headers[3] = "Accept: application/json";
	headers[4] = "Expect:";		/* no 100-continue round trip */
	return generation;
}

/* One POST with the current token; returns the token's generation. */
static uint64
post_with_token(const char *url, const char *partner_header, const char *body,
				size_t body_len, bool may_resend, EnkashHttpResult *http,
				volatile bool *request_left)
{
	char		bearer[ENKASH_BEARER_MAX];
	uint64		generation;
	const char *headers[ENKASH_API_HEADERS];

	generation = enkash_api_headers(headers, bearer, partner_header);

	PG_TRY();
	{
		/* the request leaves only after its turn under enkash.rate_limit */
		enkash_rate_limit_wait();
		*request_left = send_left = true;
		enkash_http_post(url, headers, lengthof(headers), body, body_len,
						 may_resend, http);
	}
	PG_FINALLY();
	{
		explicit_bzero(bearer, sizeof(bearer));
	}
	PG_END_TRY();
	return generation;
}

/*
 * URL, partner header and (sealed) body of a call to an endpoint: the same
 * for a synchronous call and the sender's; only the bearer is added later.
 */
void
enkash_prepare_request(const EnkashEndpoint *ep, const char *json, size_t len,
					   EnkashWireRequest *wire)
{
	const char *base_url = enkash_require_setting("enkash.base_url", enkash_base_url);
	const char *partner_id = enkash_require_setting("enkash.partner_id", enkash_partner_id);

	wire->url = psprintf("%s%s", base_url, enkash_endpoint_path(ep));
	wire->partner_header = psprintf("partnerId: %s", partner_id);
	wire->body = json;
	wire->body_len = len;
	if (enkash_encrypt)
		wire->body = enkash_seal_body(json, len, &wire->body_len);
}

/*
 * One authenticated, encrypted POST to an endpoint, with one retry on a
 * refused token.  Raises when no HTTP answer came back; *request_left tells
 * the caller whether anything may have reached EnKash by then.
 */
void
enkash_exchange(const EnkashEndpoint *ep, const char *json, size_t len,
				EnkashHttpResult *http, volatile bool *request_left)
{
	EnkashWireRequest wire;

	enkash_require_preload();
	enkash_prepare_request(ep, json, len, &wire);

	for (int attempt = 0;; attempt++)
	{
		/* Only look-ups may be re-sent by libcurl after a dead connection. */
		uint64		generation = post_with_token(wire.url, wire.partner_header,
												 wire.body, wire.body_len,
												 ep->kind == ENKASH_READ,
												 http, request_left);

		send_http.outcome = http->outcome;
		send_http.status = http->status;
		send_http.seconds = http->seconds;
		send_http.retry_after = http->retry_after;
		if (http->outcome != ENKASH_HTTP_OK)
			enkash_http_raise(ep->label, http);

		/* A token EnKash no longer honours: replace it and try once more. */
		if (http->status == 401 && attempt == 0)
		{
			enkash_token_invalidate(generation);
			continue;
		}
		break;
	}
}

/* The audit record of an exchange, masked (the request by the caller). */
void
enkash_describe_exchange(LedgerExchange *x, const EnkashEndpoint *ep,
						 const char *key, const char *masked_request,
						 const EnkashHttpResult *http, const EnkashAnswer *answer)
{
	memset(x, 0, sizeof(*x));
	x->endpoint = ep->name;
	x->key = key;
	x->request = masked_request;
	if (http)
	{
		x->http_status = (int) http->status;
		x->latency_ms = http->seconds * 1000.0;
	}
	if (answer && answer->envelope)
	{
		/* A look-up's answer goes to the caller anyway: the worker masks it. */
		x->mask_response = (ep->kind == ENKASH_READ);
		x->response = x->mask_response ? answer->envelope : enkash_mask(answer->envelope);
		x->enkash_code = answer->code;
		x->message = answer->message;
	}
}

/* The error being handled, copied out of the error context. */
ErrorData *
enkash_current_error(MemoryContext cxt)
{
	MemoryContextSwitchTo(cxt);
	return CopyErrorData();
}

/*
 * A call to an endpoint; money goes through money.c.  Look-ups and card
 * actions are audited without waiting for the row to be committed.
 */
Jsonb *
enkash_send(const EnkashEndpoint *ep, const char *json, size_t len,
			const char *key)
{
	EnkashAnswer answer = {0};
	/* a money call's body, parsed once for its controls and its key */
	Jsonb	   *body = ep->kind == ENKASH_MONEY ? enkash_body_jsonb(json, len) : NULL;
	Jsonb	   *rehearsal;

	send_left = false;
	memset(&send_http, 0, sizeof(send_http));
	rehearsal = enkash_controls_before_send(ep, json, len, body, key);
	if (rehearsal)
		return rehearsal;		/* a dry run: nothing sent */
	if (ep->kind != ENKASH_READ && ep->kind != ENKASH_SECRET_OUT)
		enkash_require_live(ep);
	if (ep->kind == ENKASH_MONEY)
		return enkash_send_money(ep, json, len, body, key);
	return enkash_send_answered(ep, json, len, key, &answer);
}

/*
 * How far the last enkash_send got, for what its error means (effect.c):
 * whether anything may have reached EnKash (a look-up made on a load's
 * behalf counts, so this errs towards "maybe"), and its last HTTP answer
 * (NULL if none came).
 */
const EnkashHttpResult *
enkash_send_reached(bool *left)
{
	*left = send_left;
	return send_http.outcome == ENKASH_HTTP_OK ? &send_http : NULL;
}

/*
 * A call that is not money, telling what EnKash said in *answer, also
 * when it declined (code and message set before the error is raised).
 */
Jsonb *
enkash_send_answered(const EnkashEndpoint *ep, const char *json, size_t len,
					 const char *key, EnkashAnswer *answer)
{
	MemoryContext cxt = CurrentMemoryContext;
	EnkashHttpResult http = {0};
	volatile bool request_left = false;
	Jsonb	   *payload;
	LedgerExchange x;

	Assert(ep->kind != ENKASH_MONEY);
	PG_TRY();
	{
		enkash_exchange(ep, json, len, &http, &request_left);
		payload = enkash_parse_response(ep->label, &http, answer);
	}
	PG_CATCH();
	{
		ErrorData  *edata = enkash_current_error(cxt);

		if (request_left)
		{
			enkash_describe_exchange(&x, ep, key, enkash_mask_request(json, len),
									 http.outcome == ENKASH_HTTP_OK ? &http : NULL, NULL);
			x.outcome = "error";
			x.sqlstate = unpack_sql_state(edata->sqlerrcode);
			x.message = edata->message;
			enkash_ledger_audit(&x, false);
		}
		PG_RE_THROW();
	}
	PG_END_TRY();

	enkash_describe_exchange(&x, ep, key, enkash_mask_request(json, len), &http, answer);
	x.outcome = "ok";
	enkash_ledger_audit(&x, ep->kind == ENKASH_SECRET_IN || ep->kind == ENKASH_SECRET_OUT);
	return payload;
}
