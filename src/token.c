/*-------------------------------------------------------------------------
 *
 * token.c
 *	  The OAuth bearer token, shared by every backend through shared memory.
 *
 * One backend at a time fetches a token ("single flight"): the others sleep
 * on a condition variable, interruptibly, and take the result.  No lock is
 * held during the HTTP call.  A fetcher that dies or errors clears its claim
 * on the way out (and a claim older than the timeouts is taken over), so a
 * failure cannot wedge the others.
 *
 * The token itself never leaves C: it is not a setting, not logged, not
 * returned to SQL.
 *
 * EnKash locks the partner account after three refused password grants in
 * a row.  Once it refuses the credentials, no grant is tried again, by any
 * backend, until the credentials change (the file is re-read as usual) or
 * an administrator calls enkash_reset_credentials(): shared memory keeps a
 * salted fingerprint of the refused credentials, never the credentials.
 *
 *-------------------------------------------------------------------------
 */
#include "enkash.h"

#include <curl/curl.h>

#include "envelope.h"
#include "ledger.h"
#include "access/htup_details.h"
#include "commands/async.h"
#include "common/cryptohash.h"
#include "common/sha2.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/condition_variable.h"
#include "storage/latch.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/builtins.h"
#include "utils/wait_event.h"

#define TOKEN_MAX 2048

/*
 * Replace a token this long before EnKash would expire it (a tenth of its
 * lifetime when that is shorter), so that no call carries a token that
 * expires in flight.
 */
#define EXPIRY_MARGIN_SECS 30

/*
 * The token endpoint's own timeouts, whatever the caller's enkash.timeout_ms:
 * they bound a fetch, after which another backend may take it over, and
 * that bound must not be a session's choice.
 */
#define TOKEN_TIMEOUT_MS 15000
#define TOKEN_CONNECT_TIMEOUT_MS 5000
#define FETCH_STALE_MS (TOKEN_TIMEOUT_MS + 5000)

typedef struct EnkashTokenShared
{
	LWLock	   *lock;
	ConditionVariable changed;	/* a fetch finished, well or badly */
	bool		fetching;
	int			fetcher_pid;
	TimestampTz fetch_started;
	uint64		generation;		/* bumps with every token stored */
	uint64		fetch_count;	/* finished fetch attempts */
	TimestampTz obtained_at;
	TimestampTz expires_at;
	TimestampTz refresh_at;		/* expires_at less the margin */
	char		access_token[TOKEN_MAX];
	char		refresh_token[TOKEN_MAX];
	uint64		token_calls;	/* HTTP calls to the token endpoint */
	char		last_error[256];
	TimestampTz last_error_at;
	/* credentials EnKash refused: not tried again (see the top of the file) */
	bool		refused;
	uint8		refused_fingerprint[PG_SHA256_DIGEST_LENGTH];
	TimestampTz refused_at;
	uint8		salt[16];
} EnkashTokenShared;

static EnkashTokenShared *shared = NULL;

static void
token_shmem_first(void *ptr)
{
	EnkashTokenShared *first = ptr;

	memset(first, 0, sizeof(*first));
	first->lock = enkash_lock(ENKASH_LOCK_TOKEN);
	ConditionVariableInit(&first->changed);
	if (!pg_strong_random(first->salt, sizeof(first->salt)))
		ereport(FATAL,
				(errmsg("enkash: could not generate random numbers")));
}

const EnkashSharedPart enkash_token_part = {
	"enkash token", sizeof(EnkashTokenShared), token_shmem_first, (void **) &shared
};

static bool
token_valid(TimestampTz now)
{
	return shared->access_token[0] != '\0' &&
		now < shared->refresh_at;
}

/* Appends "name=value" to a form body, URL-encoding the value. */
static void
append_form_field(StringInfo form, const char *name, const char *value)
{
	char	   *escaped = curl_easy_escape(NULL, value, 0);

	if (escaped == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory")));
	if (form->len > 0)
		appendStringInfoChar(form, '&');
	appendStringInfo(form, "%s=%s", name, escaped);
	explicit_bzero(escaped, strlen(escaped));
	curl_free(escaped);
}

static void
record_failure(const char *message)
{
	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	strlcpy(shared->last_error, message, sizeof(shared->last_error));
	shared->last_error_at = GetCurrentTimestamp();
	LWLockRelease(shared->lock);
}

/* The audit row of a token call: the grant type, never the form or token. */
static void
audit_token_call(bool use_refresh, const EnkashHttpResult *http)
{
	LedgerExchange x = {0};

	x.endpoint = "token";
	x.request = use_refresh ? "{\"grant_type\": \"refresh_token\"}" :
		"{\"grant_type\": \"password\"}";
	if (http->outcome == ENKASH_HTTP_OK)
	{
		x.http_status = (int) http->status;
		x.response = enkash_mask_text(http->body, http->body_len);
		x.outcome = http->status == 200 ? "ok" : "failed";
	}
	else
	{
		x.outcome = "error";
		x.message = http->error;
	}
	x.latency_ms = http->seconds * 1000.0;
	enkash_ledger_audit(&x, false);
}

/*
 * The clientId of a password grant: the credentials file's company_id, or
 * enkash.company_id as the server sets it; a session's own value would let
 * any caller decide which account the partner's password is tried on.
 */
static const char *
grant_company_id(const EnkashCredentials *creds)
{
	const char *company = creds->company_id ? creds->company_id :
		enkash_server_setting("enkash.company_id");

	if (company == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("enkash is not configured: no company id for the token request"),
				 errhint("Add company_id to the file named by enkash.credentials_file, or set enkash.company_id in postgresql.conf.")));
	return company;
}

/* A salted digest of what a password grant sends, to recognise a refused set. */
static void
credentials_fingerprint(const EnkashCredentials *creds,
						uint8 digest[PG_SHA256_DIGEST_LENGTH])
{
	const char *parts[5];
	pg_cryptohash_ctx *ctx = pg_cryptohash_create(PG_SHA256);
	bool		ok;

	parts[0] = creds->client_id;
	parts[1] = creds->client_secret;
	parts[2] = creds->username;
	parts[3] = creds->password;
	parts[4] = grant_company_id(creds);
	ok = ctx != NULL && pg_cryptohash_init(ctx) == 0 &&
		pg_cryptohash_update(ctx, shared->salt, sizeof(shared->salt)) == 0;
	for (int i = 0; ok && i < lengthof(parts); i++)
		ok = pg_cryptohash_update(ctx, (const uint8 *) parts[i],
								  strlen(parts[i]) + 1) == 0;
	ok = ok && pg_cryptohash_final(ctx, digest, PG_SHA256_DIGEST_LENGTH) == 0;
	pg_cryptohash_free(ctx);
	if (!ok)
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not compute a digest of the enkash credentials")));
}

enkash_noreturn
static void
raise_refused(TimestampTz at, const char *reason)
{
	ereport(ERROR,
			(errcode(ERRCODE_ENKASH_CREDENTIALS_REFUSED),
			 errmsg("EnKash refused the partner credentials; no new attempt is made"),
			 errdetail("EnKash refused them at %s (%s) and locks the partner account after 3 refused attempts in a row, so nothing was sent.",
					   timestamptz_to_str(at), reason),
			 errhint("Correct the file named by enkash.credentials_file (it is re-read within a second), or, once EnKash confirms the credentials, have an administrator call enkash_reset_credentials().")));
}

/*
 * NOTIFY enkash once per refusal of the credentials.  The enkash sender
 * calls it in a transaction of its own: the session that saw the refusal
 * rolls back with its error, and its notification with it.
 */
void
enkash_token_alert_refusal(void)
{
	static TimestampTz alerted = 0;
	TimestampTz at;

	LWLockAcquire(shared->lock, LW_SHARED);
	at = shared->refused ? shared->refused_at : 0;
	LWLockRelease(shared->lock);
	if (at == 0 || at == alerted)
		return;
	Async_Notify("enkash",
				 psprintf("{\"event\" : \"credentials_refused\", \"id\" : null, \"at\" : \"%s\"}",
						  timestamptz_to_str(at)));
	alerted = at;
}

/* Raises NK008 if EnKash has refused exactly these credentials. */
static void
check_not_refused(const uint8 *fingerprint)
{
	TimestampTz at;
	char		reason[256];

	LWLockAcquire(shared->lock, LW_SHARED);
	if (!shared->refused ||
		memcmp(shared->refused_fingerprint, fingerprint, PG_SHA256_DIGEST_LENGTH) != 0)
	{
		LWLockRelease(shared->lock);
		return;
	}
	at = shared->refused_at;
	strlcpy(reason, shared->last_error, sizeof(reason));
	LWLockRelease(shared->lock);
	raise_refused(at, reason[0] ? reason : "no reason given");
}

/* Restarts the stale-claim clock of our fetch (before each grant). */
static void
fetch_alive(void)
{
	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	if (shared->fetching && shared->fetcher_pid == MyProcPid)
		shared->fetch_started = GetCurrentTimestamp();
	LWLockRelease(shared->lock);
}

/*
 * One grant against the token endpoint.  Returns true and stores the token
 * in shared memory on success; on an authentication refusal returns false
 * (the caller may fall back to another grant); raises on anything else.
 */
static bool
request_token(const EnkashCredentials *creds, const uint8 *fingerprint,
			  bool use_refresh, const char *refresh_token)
{
	const char *url = enkash_require_setting("enkash.token_url", enkash_token_url);
	StringInfoData form;
	StringInfoData basic;
	const char *headers[3];
	EnkashHttpResult http;
	Jsonb	   *json;
	char	   *access;
	char	   *refresh;
	char	   *expires_in;
	char	   *pair;
	char	   *b64;
	long		lifetime;

	initStringInfo(&form);
	if (use_refresh)
	{
		append_form_field(&form, "grant_type", "refresh_token");
		append_form_field(&form, "refresh_token", refresh_token);
	}
	else
	{
		append_form_field(&form, "grant_type", "password");
		append_form_field(&form, "username", creds->username);
		append_form_field(&form, "password", creds->password);
		append_form_field(&form, "clientId", grant_company_id(creds));
	}

	pair = psprintf("%s:%s", creds->client_id, creds->client_secret);
	b64 = palloc(4 * (strlen(pair) / 3 + 1) + 1);
	envelope_base64_encode((unsigned char *) pair, strlen(pair), b64);
	initStringInfo(&basic);
	appendStringInfo(&basic, "Authorization: Basic %s", b64);
	explicit_bzero(pair, strlen(pair));
	explicit_bzero(b64, strlen(b64));

	headers[0] = basic.data;
	headers[1] = "Content-Type: application/x-www-form-urlencoded";
	headers[2] = "Accept: application/json";

	PG_TRY();
	{
		enkash_rate_limit_wait();
		fetch_alive();
		enkash_http_post_timed(url, headers, lengthof(headers), form.data, form.len,
							   true, TOKEN_TIMEOUT_MS, TOKEN_CONNECT_TIMEOUT_MS,
							   &http);
	}
	PG_FINALLY();
	{
		explicit_bzero(form.data, form.len);
		explicit_bzero(basic.data, basic.len);
	}
	PG_END_TRY();

	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	shared->token_calls++;
	LWLockRelease(shared->lock);

	audit_token_call(use_refresh, &http);
	if (http.outcome != ENKASH_HTTP_OK)
		enkash_http_raise("a new access token", &http);

	json = enkash_parse_json_or_null(http.body, http.body_len);
	if (http.status == 400 || http.status == 401)
	{
		char	   *description = enkash_json_scalar(json, "error_description");

		record_failure(psprintf("HTTP %ld: %s", http.status,
								description ? description : "refused"));
		if (use_refresh)
			return false;
		/* Not tried again: a second and third refusal would lock the account. */
		LWLockAcquire(shared->lock, LW_EXCLUSIVE);
		shared->refused = true;
		memcpy(shared->refused_fingerprint, fingerprint, PG_SHA256_DIGEST_LENGTH);
		shared->refused_at = GetCurrentTimestamp();
		shared->refresh_token[0] = '\0';
		LWLockRelease(shared->lock);
		ereport(ERROR,
				(errcode(ERRCODE_ENKASH_AUTH_FAILED),
				 errmsg("EnKash refused the partner credentials"),
				 errdetail("The token endpoint answered HTTP %ld: %s. No new attempt is made until the credentials change.",
						   http.status, description ? description : "no reason given"),
				 errhint("Check username, password, client_id, client_secret and company_id in the file named by enkash.credentials_file (or enkash.company_id in postgresql.conf).")));
	}
	if (http.status != 200)
	{
		record_failure(psprintf("HTTP %ld", http.status));
		ereport(ERROR,
				(errcode(http.status >= 500 || http.status == 429 ?
						 ERRCODE_ENKASH_UNAVAILABLE : ERRCODE_ENKASH_AUTH_FAILED),
				 errmsg("EnKash's token endpoint failed"),
				 errdetail("HTTP status %ld.", http.status)));
	}

	access = enkash_json_scalar(json, "access_token");
	refresh = enkash_json_scalar(json, "refresh_token");
	expires_in = enkash_json_scalar(json, "expires_in");
	lifetime = expires_in ? strtol(expires_in, NULL, 10) : 0;
	lifetime = Min(lifetime, 366L * 24 * 3600);	/* no overflow below */
	if (access == NULL || access[0] == '\0' || strlen(access) >= TOKEN_MAX ||
		(refresh && strlen(refresh) >= TOKEN_MAX) || lifetime <= 0)
	{
		record_failure("malformed token response");
		ereport(ERROR,
				(errcode(ERRCODE_ENKASH_BAD_RESPONSE),
				 errmsg("EnKash's token endpoint answered with an unusable token"),
				 errdetail("The response lacks access_token or a positive expires_in.")));
	}

	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	strlcpy(shared->access_token, access, TOKEN_MAX);
	strlcpy(shared->refresh_token, refresh ? refresh : "", TOKEN_MAX);
	shared->obtained_at = GetCurrentTimestamp();
	shared->expires_at = TimestampTzPlusMilliseconds(shared->obtained_at,
													 lifetime * 1000);
	shared->refresh_at = TimestampTzPlusMilliseconds(shared->expires_at,
													 -Min(EXPIRY_MARGIN_SECS * 1000,
														  lifetime * 100));
	shared->generation++;
	shared->last_error[0] = '\0';
	shared->refused = false;
	LWLockRelease(shared->lock);

	explicit_bzero(access, strlen(access));
	if (refresh)
		explicit_bzero(refresh, strlen(refresh));
	return true;
}

/* Releases the single-flight claim; runs on success, error and exit. */
static void
end_fetch(int code, Datum arg)
{
	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	if (shared->fetching && shared->fetcher_pid == MyProcPid)
	{
		shared->fetching = false;
		shared->fetch_count++;
	}
	LWLockRelease(shared->lock);
	ConditionVariableBroadcast(&shared->changed);
}

/* Fetches a token as the single fetcher: refresh grant first if we have one. */
static void
fetch_token(void)
{
	char		refresh[TOKEN_MAX];

	PG_ENSURE_ERROR_CLEANUP(end_fetch, (Datum) 0);
	{
		const EnkashCredentials *creds = enkash_credentials();
		uint8		fingerprint[PG_SHA256_DIGEST_LENGTH];

		credentials_fingerprint(creds, fingerprint);
		check_not_refused(fingerprint);
		LWLockAcquire(shared->lock, LW_SHARED);
		strlcpy(refresh, shared->refresh_token, sizeof(refresh));
		LWLockRelease(shared->lock);
		/* A refused refresh falls back to one password grant, no more. */
		if (refresh[0] == '\0' ||
			!request_token(creds, fingerprint, true, refresh))
			request_token(creds, fingerprint, false, NULL);
	}
	PG_END_ENSURE_ERROR_CLEANUP(end_fetch, (Datum) 0);
	explicit_bzero(refresh, sizeof(refresh));
	end_fetch(0, (Datum) 0);
}

/*
 * Copies a valid bearer token into the caller's buffer, fetching one if
 * needed, and returns its generation (for enkash_token_invalidate).
 */
uint64
enkash_token_get(char *bearer, size_t bearer_size)
{
	uint64		waited_for = 0;
	bool		waiting = false;

	enkash_require_preload();

	for (;;)
	{
		TimestampTz now = GetCurrentTimestamp();
		bool		claim = false;

		LWLockAcquire(shared->lock, LW_SHARED);
		if (token_valid(now))
		{
			uint64		generation = shared->generation;

			strlcpy(bearer, shared->access_token, bearer_size);
			LWLockRelease(shared->lock);
			if (waiting)
				ConditionVariableCancelSleep();
			return generation;
		}
		LWLockRelease(shared->lock);

		LWLockAcquire(shared->lock, LW_EXCLUSIVE);
		if (!token_valid(now))
		{
			/* Someone else's attempt failed while we slept: report it. */
			if (waiting && shared->fetch_count != waited_for &&
				!shared->fetching && shared->last_error[0] != '\0')
			{
				char		error[256];
				bool		refused = shared->refused;
				TimestampTz refused_at = shared->refused_at;

				strlcpy(error, shared->last_error, sizeof(error));
				LWLockRelease(shared->lock);
				ConditionVariableCancelSleep();
				if (refused)
					raise_refused(refused_at, error);
				ereport(ERROR,
						(errcode(ERRCODE_ENKASH_AUTH_FAILED),
						 errmsg("could not obtain an EnKash access token"),
						 errdetail("Another session's attempt just failed: %s.", error)));
			}
			if (!shared->fetching ||
				TimestampDifferenceExceeds(shared->fetch_started, now, FETCH_STALE_MS))
			{
				shared->fetching = true;
				shared->fetcher_pid = MyProcPid;
				shared->fetch_started = now;
				claim = true;
			}
			else
				waited_for = shared->fetch_count;
		}
		LWLockRelease(shared->lock);

		if (claim)
		{
			if (waiting)
			{
				ConditionVariableCancelSleep();
				waiting = false;
			}
			fetch_token();
			continue;
		}

		if (!waiting)
		{
			ConditionVariablePrepareToSleep(&shared->changed);
			waiting = true;
			continue;			/* re-check before sleeping */
		}
		/* Timed, so that a fetcher that vanished is noticed. */
		ConditionVariableTimedSleep(&shared->changed, 100,
									enkash_wait_event(ENKASH_WAIT_TOKEN));
	}
}

/*
 * EnKash refused the token of this generation (HTTP 401): forget it, unless
 * another backend has already replaced it.
 */
void
enkash_token_invalidate(uint64 generation)
{
	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	if (shared->generation == generation)
		shared->refresh_at = 0;
	LWLockRelease(shared->lock);
}

/*
 * Fetches a new token now with the password grant, for the go-live check:
 * the credentials in the file are proven, not a token cached from earlier
 * ones.  The new token is the one every session then shares.
 */
uint64
enkash_token_renew(char *bearer, size_t bearer_size)
{
	enkash_require_preload();
	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	shared->refresh_at = 0;
	explicit_bzero(shared->refresh_token, sizeof(shared->refresh_token));
	LWLockRelease(shared->lock);
	return enkash_token_get(bearer, bearer_size);
}

PG_FUNCTION_INFO_V1(enkash_reset_credentials);

/*
 * enkash_reset_credentials(): lets the next call try the refused credentials
 * once more (after EnKash has confirmed or unlocked them).  True if a
 * refusal was forgotten.
 */
Datum
enkash_reset_credentials(PG_FUNCTION_ARGS)
{
	bool		was_refused;

	enkash_require_preload();
	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	was_refused = shared->refused;
	shared->refused = false;
	LWLockRelease(shared->lock);
	PG_RETURN_BOOL(was_refused);
}

PG_FUNCTION_INFO_V1(enkash_token_calls);

/* Number of token-endpoint calls since server start (for tests, monitoring). */
Datum
enkash_token_calls(PG_FUNCTION_ARGS)
{
	int64		calls;

	enkash_require_preload();
	LWLockAcquire(shared->lock, LW_SHARED);
	calls = (int64) shared->token_calls;
	LWLockRelease(shared->lock);
	PG_RETURN_INT64(calls);
}

/*
 * Called by a sender: replaces the token once enkash.token_refresh_fraction
 * of its lifetime has passed, so that backends never wait for one.
 */
void
enkash_token_refresh_if_due(void)
{
	TimestampTz now = GetCurrentTimestamp();
	bool		due;

	if (enkash_base_url == NULL || enkash_base_url[0] == '\0' ||
		enkash_credentials_file == NULL || enkash_credentials_file[0] == '\0')
		return;
	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	due = shared->access_token[0] != '\0' && !shared->fetching && !shared->refused &&
		now >= shared->obtained_at +
		(TimestampTz) ((shared->expires_at - shared->obtained_at) * enkash_token_refresh_fraction);
	if (due)
	{
		shared->fetching = true;
		shared->fetcher_pid = MyProcPid;
		shared->fetch_started = now;
	}
	LWLockRelease(shared->lock);
	if (due)
		fetch_token();
}

/* What admins may know of the token, copied under its lock: never the token. */
typedef struct TokenView
{
	bool		have;
	bool		refused;
	TimestampTz obtained_at;
	TimestampTz expires_at;
	uint64		token_calls;
	char		last_error[256];
	TimestampTz last_error_at;
} TokenView;

static TupleDesc
token_view(FunctionCallInfo fcinfo, TokenView *v)
{
	TupleDesc	desc;

	enkash_require_preload();
	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	LWLockAcquire(shared->lock, LW_SHARED);
	v->have = shared->access_token[0] != '\0';
	v->refused = shared->refused;
	v->obtained_at = shared->obtained_at;
	v->expires_at = shared->expires_at;
	v->token_calls = shared->token_calls;
	strlcpy(v->last_error, shared->last_error, sizeof(v->last_error));
	v->last_error_at = shared->last_error_at;
	LWLockRelease(shared->lock);
	return desc;
}

PG_FUNCTION_INFO_V1(enkash_token_status);

/* enkash_token_status(): validity, age and expiry, calls made, the last error. */
Datum
enkash_token_status(PG_FUNCTION_ARGS)
{
	TokenView	v;
	TupleDesc	desc = token_view(fcinfo, &v);
	Datum		values[6];
	bool		nulls[6] = {0};

	values[0] = BoolGetDatum(v.have && GetCurrentTimestamp() < v.expires_at);
	values[1] = TimestampTzGetDatum(v.obtained_at);
	values[2] = TimestampTzGetDatum(v.expires_at);
	nulls[1] = nulls[2] = !v.have;
	values[3] = Int64GetDatum((int64) v.token_calls);
	values[4] = CStringGetTextDatum(v.last_error);
	values[5] = TimestampTzGetDatum(v.last_error_at);
	nulls[4] = nulls[5] = v.last_error[0] == '\0';
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(desc, values, nulls)));
}

PG_FUNCTION_INFO_V1(enkash_token_health);

/*
 * enkash_token_health(): for enkash.health, whether calls can get a token:
 * valid, expires at, the last error, and whether EnKash refused the
 * credentials (nothing is tried until the file changes).
 */
Datum
enkash_token_health(PG_FUNCTION_ARGS)
{
	TokenView	v;
	TupleDesc	desc = token_view(fcinfo, &v);
	Datum		values[4];
	bool		nulls[4] = {0};

	/* a token EnKash refused is not counted on, whatever its expiry */
	values[0] = BoolGetDatum(v.have && !v.refused && GetCurrentTimestamp() < v.expires_at);
	values[1] = TimestampTzGetDatum(v.expires_at);
	nulls[1] = !v.have;
	values[2] = CStringGetTextDatum(v.last_error);
	nulls[2] = v.last_error[0] == '\0';
	values[3] = BoolGetDatum(v.refused);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(desc, values, nulls)));
}
