/*-------------------------------------------------------------------------
 *
 * money.c
 *	  Money calls happen exactly once.
 *
 * Every money call carries an idempotency key.  Before anything is sent the
 * key is claimed durably (ledger.c); after the answer its outcome is stored
 * durably, before the function returns.  The same key with the same request
 * gets the stored outcome back with no HTTP; with a different request, an
 * error.  When the outcome of an earlier attempt is unknown (timeout,
 * dropped connection, cancel, crash), EnKash is asked first (Get Transaction
 * Details by reference number, reconcile.c), and only a load it positively
 * has not seen is sent again.  Nothing here ever re-sends blindly.
 *
 *-------------------------------------------------------------------------
 */
#include "enkash.h"

#include <openssl/sha.h>

#include "endpoints.h"
#include "ledger.h"
#include "effect.h"
#include "reconcile.h"
#include "timeline.h"
#include "stoppoint.h"
#include "access/xact.h"
#include "access/xlog.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/resowner.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"


/*
 * sha256(endpoint name, NUL, body) in hex: what "the same request" means.
 * The body is jsonb's text of it (keys in jsonb's order, its spacing), so
 * that a call made from SQL and one queued as jsonb compare by content.
 */
static char *
fingerprint_of_canonical(const EnkashEndpoint *ep, const char *json, size_t len)
{
	SHA256_CTX	ctx;
	unsigned char digest[SHA256_DIGEST_LENGTH];
	char	   *hex = palloc(2 * SHA256_DIGEST_LENGTH + 1);

	SHA256_Init(&ctx);
	SHA256_Update(&ctx, ep->name, strlen(ep->name) + 1);
	SHA256_Update(&ctx, json, len);
	SHA256_Final(digest, &ctx);
	hex[hex_encode((const char *) digest, SHA256_DIGEST_LENGTH, hex)] = '\0';
	return hex;
}

/* What an error raised while sending means for the key. */
static LedgerState
state_after_error(int sqlerrcode, bool request_left, const EnkashHttpResult *http)
{
	switch (enkash_error_effect(sqlerrcode, request_left, http))
	{
		case ENKASH_NOT_APPLIED:
		case ENKASH_NOT_APPLIED_FINAL:
			return LEDGER_RELEASED;
		case ENKASH_DECLINED:
			return LEDGER_FAILED;
		case ENKASH_MAYBE_APPLIED:
			break;
	}
	return LEDGER_UNKNOWN;
}

static const char *
audit_outcome(LedgerState state)
{
	switch (state)
	{
		case LEDGER_SUCCEEDED:
			return "ok";
		case LEDGER_FAILED:
			return "declined";
		case LEDGER_UNKNOWN:
			return "unknown";
		case LEDGER_RELEASED:
			return "failed";
	}
	return "error";
}

/*
 * Records the outcome of a claimed call's exchange: through the worker
 * (batch NULL: committed before we return), or, for the outbox sender, in
 * its batch, written in its own transaction.  An exchange with no key (not money) gets
 * its audit row only, with the masked request; a key's answer row has none (its
 * "sent" row holds it).
 */
static Jsonb *
record_exchange(const EnkashEndpoint *ep, const char *json, size_t len, const char *key,
				int64 key_id, int attempt, int64 audit_id,
				const EnkashHttpResult *http, const EnkashAnswer *answer,
				Jsonb *payload, ErrorData *edata, bool request_left,
				LedgerBatch *batch)
{
	LedgerExchange x;
	LedgerState state = LEDGER_SUCCEEDED;
	Jsonb	   *masked = NULL;

	enkash_describe_exchange(&x, ep, key,
							 key_id || audit_id ? NULL : enkash_mask_request(json, len),
							 http && http->outcome == ENKASH_HTTP_OK ? http : NULL,
							 edata ? NULL : answer);
	if (edata)
	{
		state = state_after_error(edata->sqlerrcode, request_left, http);
		x.outcome = key_id ? audit_outcome(state) : "error";
		x.sqlstate = unpack_sql_state(edata->sqlerrcode);
		x.message = edata->message;
	}
	else
	{
		masked = enkash_mask(payload);
		x.outcome = "ok";
	}
	if (batch == NULL)
		enkash_ledger_finish(key_id, attempt, audit_id, state, masked,
							 state == LEDGER_FAILED ? x.sqlstate : NULL,
							 state == LEDGER_FAILED ? edata->message : NULL,
							 state == LEDGER_FAILED ? edata->detail : NULL,
							 &x, true);
	else
		enkash_ledger_finish_later(batch, key_id, attempt, audit_id, state, masked,
								   state == LEDGER_FAILED ? x.sqlstate : NULL,
								   state == LEDGER_FAILED ? edata->message : NULL,
								   state == LEDGER_FAILED ? edata->detail : NULL, &x);
	return masked;
}

/*
 * Sends a claimed money call and records its outcome, committed before we
 * return or the error goes on: a retry right after sees the final state.
 */
static Jsonb *
send_claimed(const EnkashEndpoint *ep, const char *json, size_t len,
			 const char *key, int64 key_id, int attempt, int64 audit_id)
{
	MemoryContext cxt = CurrentMemoryContext;
	EnkashHttpResult http = {0};
	EnkashAnswer answer = {0};
	volatile bool request_left = false;
	Jsonb	   *payload;

	PG_TRY();
	{
		enkash_exchange(ep, json, len, &http, &request_left);
		payload = enkash_parse_response(ep->label, &http, &answer);
		ENKASH_STOP_POINT("money-answered");
	}
	PG_CATCH();
	{
		ErrorData  *edata = enkash_current_error(cxt);

		(void) record_exchange(ep, json, len, key, key_id, attempt, audit_id, &http,
							   NULL, NULL, edata, request_left, NULL);
		PG_RE_THROW();
	}
	PG_END_TRY();

	(void) record_exchange(ep, json, len, key, key_id, attempt, audit_id, &http,
						   &answer, payload, NULL, true, NULL);
	ENKASH_STOP_POINT("money-recorded");
	return payload;
}

/*
 * The outbox sender's half of send_claimed: the request went out on the
 * sender's multi handle (key claimed by enkash_ledger_claim_new, or no key
 * for a call that is not money) and this is what came back.  The outcome
 * goes into batch, for enkash_ledger_write in the caller's transaction.  Returns the payload as stored
 * (masked), or NULL with *error set to what a synchronous call would have
 * raised.
 */
Jsonb *
enkash_finish_sent(const EnkashEndpoint *ep, const char *json, size_t len,
				   const char *key, int64 key_id, int key_attempt, int64 audit_id,
				   const EnkashHttpResult *http, uint64 token_generation,
				   LedgerBatch *batch, ErrorData **error)
{
	MemoryContext cxt = CurrentMemoryContext;
	EnkashAnswer answer = {0};
	Jsonb	   *volatile payload = NULL;
	ErrorData  *volatile edata = NULL;

	/* Parsing touches nothing that needs a subtransaction to undo. */
	PG_TRY();
	{
		if (http->outcome != ENKASH_HTTP_OK)
			enkash_http_raise(ep->label, http);
		/* a token EnKash no longer honours: the next attempt gets a new one */
		if (http->status == 401)
			enkash_token_invalidate(token_generation);
		payload = enkash_parse_response(ep->label, http, &answer);
	}
	PG_CATCH();
	{
		edata = enkash_current_error(cxt);
		FlushErrorState();
	}
	PG_END_TRY();

	*error = edata;
	return record_exchange(ep, json, len, key, key_id, key_attempt, audit_id, http,
						   &answer, payload, edata, true, batch);
}

/* The same for a call that failed before its request could leave. */
void
enkash_finish_unsent(const EnkashEndpoint *ep, const char *json, size_t len,
					 const char *key, int64 key_id, int key_attempt, int64 audit_id,
					 ErrorData *edata, LedgerBatch *batch)
{
	(void) record_exchange(ep, json, len, key, key_id, key_attempt, audit_id, NULL,
						   NULL, NULL, edata, false, batch);
}

/* The fingerprint of a body built as text: jsonb's text of it is hashed. */
static char *
fingerprint(const EnkashEndpoint *ep, Jsonb *body, size_t len)
{
	char	   *canonical = JsonbToCString(NULL, &body->root, len);

	return fingerprint_of_canonical(ep, canonical, strlen(canonical));
}

/*
 * The fingerprint of a queued call, for the outbox's key claims: json is
 * already jsonb's text (enkash.requests.body::text).
 */
char *
enkash_request_fingerprint(const EnkashEndpoint *ep, const char *json, size_t len)
{
	return fingerprint_of_canonical(ep, json, len);
}

/*
 * A key whose earlier attempt has an unknown outcome.  For a load, EnKash
 * is asked; a load it has seen is recorded as succeeded and not sent again.
 * Returns the stored outcome, or NULL when the call must be sent.
 */
static Jsonb *
reconcile(const EnkashEndpoint *ep, const char *json, size_t len,
		  const char *key, int64 key_id, int attempt)
{
	Jsonb	   *volatile found = NULL;
	volatile LookupVerdict verdict = LOOKUP_UNSURE;
	Jsonb	   *lookup_found = NULL;
	char	   *why = NULL;
	LedgerExchange x;

	if (!enkash_endpoint_reconciles(ep))
	{
		memset(&x, 0, sizeof(x));
		x.endpoint = ep->name;
		x.key = key;
		enkash_ledger_finish(key_id, attempt, 0, LEDGER_UNKNOWN, NULL, NULL, NULL, NULL,
							 &x, true);
		ereport(ERROR,
				(errcode(ERRCODE_ENKASH_OUTCOME_UNKNOWN),
				 errmsg("the outcome of an earlier attempt at %s with key \"%s\" is unknown; nothing was sent",
						ep->label, key),
				 errdetail("EnKash offers no look-up by key for this call, so it cannot be checked automatically."),
				 errhint("Find out from EnKash whether it happened, then use a new key, or have an administrator record the outcome in enkash.idempotency_keys.")));
	}

	PG_TRY();
	{
		verdict = enkash_find_load(json, len, key, &lookup_found, &why);
		found = lookup_found;
	}
	PG_CATCH();
	{
		/* Could not ask: the key stays unknown for the next attempt. */
		memset(&x, 0, sizeof(x));
		x.endpoint = ep->name;
		x.key = key;
		enkash_ledger_finish(key_id, attempt, 0, LEDGER_UNKNOWN, NULL, NULL, NULL, NULL, &x, true);
		PG_RE_THROW();
	}
	PG_END_TRY();

	if (verdict == LOOKUP_ABSENT)
		return NULL;
	if (verdict == LOOKUP_UNSURE)
	{
		memset(&x, 0, sizeof(x));
		x.endpoint = ep->name;
		x.key = key;
		enkash_ledger_finish(key_id, attempt, 0, LEDGER_UNKNOWN, NULL, NULL, NULL, NULL, &x, true);
		if (attempt == 1)		/* a new load, looked up first (timeline.c) */
			ereport(ERROR,
					(errcode(ERRCODE_ENKASH_OUTCOME_UNKNOWN),
					 errmsg("the load with reference \"%s\" could not be checked with EnKash, so it was not sent",
							key),
					 errdetail("%s", why),
					 errhint("This server became the primary, or was restored, less than enkash.check_after_failover ago, and may not know every load sent before: EnKash is asked first. Calling again asks again.")));
		ereport(ERROR,
				(errcode(ERRCODE_ENKASH_OUTCOME_UNKNOWN),
				 errmsg("the outcome of the load with reference \"%s\" is still unknown; it was not sent again",
						key),
				 errdetail("%s", why),
				 errhint("Check with EnKash whether the card was credited. Calling again asks EnKash again; an administrator can record the outcome in enkash.idempotency_keys.")));
	}

	memset(&x, 0, sizeof(x));
	x.endpoint = ep->name;
	x.key = key;
	enkash_ledger_finish(key_id, attempt, 0, LEDGER_SUCCEEDED, enkash_mask(found),
						 NULL, NULL, NULL, &x, true);
	ereport(NOTICE,
			(errmsg("EnKash already has the load with reference \"%s\"; it was not sent again", key)));
	return found;
}

Jsonb *
enkash_send_money(const EnkashEndpoint *ep, const char *json, size_t len, Jsonb *body,
				  const char *key)
{
	LedgerClaim claim;
	/* as the key and its "sent" row store it; the answer's audit row has none */
	Jsonb	   *request = enkash_mask_body(json, len, body);
	Jsonb	   *outcome;

	if (key == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("%s needs an idempotency key", ep->label)));
	enkash_check_key(key);
	/* A standby cannot record the key: money waits for the primary. */
	if (RecoveryInProgress())
		ereport(ERROR,
				(errcode(ERRCODE_READ_ONLY_SQL_TRANSACTION),
				 errmsg("money calls cannot be made on a standby server"),
				 errhint("Make %s on the primary; it cannot be recorded here.", ep->label)));

	/* a load's spending limits stay locked until its key's claim is committed */
	enkash_limits_enter(ep, body, key);
	PG_TRY();
	{
		enkash_ledger_claim(ep->name, key, fingerprint(ep, body, len), request,
							enkash_look_up_first(ep), &claim);
	}
	PG_FINALLY();
	{
		enkash_limits_leave();
	}
	PG_END_TRY();

	switch (claim.verdict)
	{
		case LEDGER_CLAIMED:
			ENKASH_STOP_POINT("money-claimed");
			return send_claimed(ep, json, len, key, claim.key_id, claim.attempt,
								claim.audit_id);

		case LEDGER_RECONCILE:
			outcome = reconcile(ep, json, len, key, claim.key_id, claim.attempt);
			if (outcome)
				return outcome;
			return send_claimed(ep, json, len, key, claim.key_id, claim.attempt,
								enkash_ledger_sending(claim.key_id, ep->name, key, request));

		case LEDGER_REPLAY_SUCCESS:
			ereport(NOTICE,
					(errmsg("%s with key \"%s\" was already done; returning its recorded outcome, nothing was sent",
							ep->label, key)));
			return enkash_parse_json_or_null(claim.payload, strlen(claim.payload));

		case LEDGER_REPLAY_FAILURE:
			ereport(ERROR,
					(errcode(claim.sqlstate[0] ?
							 MAKE_SQLSTATE(claim.sqlstate[0], claim.sqlstate[1],
										   claim.sqlstate[2], claim.sqlstate[3],
										   claim.sqlstate[4]) : ERRCODE_ENKASH_REJECTED),
					 errmsg("%s", claim.message ? claim.message : "EnKash declined this call earlier"),
					 claim.detail ? errdetail("%s", claim.detail) : 0,
					 errhint("This is the recorded outcome of an earlier call with key \"%s\"; nothing was sent. Use a new key for a new attempt.",
							 key)));
			break;

		case LEDGER_MISMATCH:
			ereport(ERROR,
					(errcode(ERRCODE_ENKASH_KEY_REUSED),
					 errmsg("key \"%s\" was already used for a different request", key),
					 errdetail("A key stands for one request; an earlier attempt at %s with this key had other values. Nothing was sent.",
							   ep->label),
					 errhint("Use a new key (for a load, a new unique_reference_number) for a new request.")));
			break;

		case LEDGER_TOO_SOON:
			ereport(ERROR,
					(errcode(ERRCODE_LOCK_NOT_AVAILABLE),
					 errmsg("the outcome of an earlier attempt at %s with key \"%s\" is unknown, and it is too soon to ask EnKash",
							ep->label, key),
					 errdetail("EnKash may still be processing it. Nothing was sent."),
					 errhint("Call again after enkash.unknown_grace_ms (%d ms): EnKash is asked first, and the call is sent only if EnKash never got it.",
							 enkash_unknown_grace_ms)));
			break;

		case LEDGER_IN_FLIGHT:
			ereport(ERROR,
					(errcode(ERRCODE_LOCK_NOT_AVAILABLE),
					 errmsg("%s with key \"%s\" is being sent by another session right now", ep->label, key),
					 errdetail("Nothing was sent by this call."),
					 errhint("Call again when it has finished to get its outcome.")));
			break;

		case LEDGER_SUPERSEDED:	/* (an outcome's verdict, never a claim's) */
		case LEDGER_ERROR:
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("%s could not be recorded, so it was not sent", ep->label),
					 errdetail("%s", claim.message ? claim.message : "The enkash worker failed.")));
			break;
	}
	pg_unreachable();
}
