/*-------------------------------------------------------------------------
 *
 * enkash.h
 *	  Declarations shared by the backend side of the enkash extension.
 *
 * Each .c file owns one concern; this header is the only place where they
 * meet.  Nothing here may expose a secret to SQL: credentials, tokens and
 * card data stay in C memory.
 *
 *-------------------------------------------------------------------------
 */
#ifndef ENKASH_H
#define ENKASH_H

#include "postgres.h"

#include "compat.h"
#include "wait_events.h"

#include "fmgr.h"
#include "lib/stringinfo.h"
#include "storage/lwlock.h"
#include "utils/jsonb.h"
#include "utils/timestamp.h"

/*
 * SQLSTATEs of our own, class "NK" (a class beginning I-Z, outside the SQL
 * standard's range), for answers that came from EnKash (or did
 * not come).  Input errors and cancellations use PostgreSQL's own codes.
 */
#define ERRCODE_ENKASH_REJECTED			MAKE_SQLSTATE('N','K','0','0','1')	/* code 1 */
#define ERRCODE_ENKASH_AUTH_FAILED		MAKE_SQLSTATE('N','K','0','0','2')	/* 401, 403, grant refused */
#define ERRCODE_ENKASH_BAD_REQUEST		MAKE_SQLSTATE('N','K','0','0','3')	/* other 4xx */
#define ERRCODE_ENKASH_UNAVAILABLE		MAKE_SQLSTATE('N','K','0','0','4')	/* 5xx, 429 */
#define ERRCODE_ENKASH_BAD_RESPONSE		MAKE_SQLSTATE('N','K','0','0','5')	/* unreadable */
#define ERRCODE_ENKASH_OUTCOME_UNKNOWN	MAKE_SQLSTATE('N','K','0','0','6')	/* sent, no answer */
#define ERRCODE_ENKASH_KEY_REUSED		MAKE_SQLSTATE('N','K','0','0','7')	/* same key, other request */
#define ERRCODE_ENKASH_CREDENTIALS_REFUSED	MAKE_SQLSTATE('N','K','0','0','8')	/* not tried again */
#define ERRCODE_ENKASH_PAUSED			MAKE_SQLSTATE('N','K','0','0','9')	/* enkash.sending is off */
#define ERRCODE_ENKASH_LIMIT			MAKE_SQLSTATE('N','K','0','1','0')	/* over a spending limit */
#define ERRCODE_ENKASH_NEEDS_APPROVAL	MAKE_SQLSTATE('N','K','0','1','1')	/* at/above the threshold */
#define ERRCODE_ENKASH_NEEDS_UPDATE		MAKE_SQLSTATE('N','K','0','1','2')	/* extension older than library */
#define ERRCODE_ENKASH_NOT_LIVE			MAKE_SQLSTATE('N','K','0','1','3')	/* a copy, not confirmed live */

/*
 * An answer came but cannot be used, one code per way it is broken (NK005
 * covers "not JSON" and answers of the wrong shape).  For a money call every
 * one of them means the request reached EnKash: the outcome is unknown.
 */
#define ERRCODE_ENKASH_ANSWER_TRUNCATED	MAKE_SQLSTATE('N','K','0','5','1')	/* ends early */
#define ERRCODE_ENKASH_ANSWER_NOT_BASE64	MAKE_SQLSTATE('N','K','0','5','2')
#define ERRCODE_ENKASH_ANSWER_UNDECRYPTABLE	MAKE_SQLSTATE('N','K','0','5','3')	/* wrong key, padding */
#define ERRCODE_ENKASH_ANSWER_TOO_DEEP	MAKE_SQLSTATE('N','K','0','5','4')	/* JSON nesting */
#define ERRCODE_ENKASH_ANSWER_NO_CODE	MAKE_SQLSTATE('N','K','0','5','5')	/* no status code */
#define ERRCODE_ENKASH_ANSWER_TOO_LARGE	MAKE_SQLSTATE('N','K','0','5','6')	/* enkash.max_response_kb */
#define ERRCODE_ENKASH_ANSWER_REDIRECT	MAKE_SQLSTATE('N','K','0','5','7')	/* 1xx/3xx, not followed */

/* --- settings.c: every enkash.* setting ----------------------------------- */
extern void enkash_define_settings(void);
extern char *enkash_base_url;
extern char *enkash_token_url;
extern char *enkash_partner_id;
extern char *enkash_company_id;
extern char *enkash_credentials_file;
extern bool enkash_encrypt;
extern char *enkash_ca_file;
extern int	enkash_timeout_ms;
extern int	enkash_connect_timeout_ms;
extern char *enkash_database;
extern int	enkash_max_amount;
extern int	enkash_max_response_kb;
extern char *enkash_endpoint_paths;
extern int	enkash_page_size;
extern char *enkash_paging_fields;
extern char *enkash_lookup_not_found_codes;
extern int	enkash_key_retention_days;
extern int	enkash_queue_retention_days;
extern int	enkash_unknown_grace_ms;
extern int	enkash_check_after_failover;
extern int	enkash_stale_claim_ms;
extern int	enkash_max_concurrency;
extern int	enkash_max_attempts;
extern int	enkash_retry_base_ms;
extern int	enkash_retry_max_ms;
extern double enkash_token_refresh_fraction;
extern double enkash_rate_limit;
extern bool enkash_sending;
extern bool enkash_dry_run;
extern int	enkash_approval_threshold;

/*
 * The search_path under which enkash runs its own SQL (SPI) with rights other
 * than the caller's: nothing planted in another schema can be picked up, and
 * pg_temp comes last (so a temporary object never shadows pg_catalog).
 */
#define ENKASH_SAFE_SEARCH_PATH "pg_catalog, pg_temp"

/* --- enkash.c: start-up, shared memory ----------------------------------- */
extern bool enkash_preloaded;

/* The LWLocks of tranche "enkash", one per shared structure. */
typedef enum EnkashLock
{
	ENKASH_LOCK_TOKEN,
	ENKASH_LOCK_LEDGER,
	ENKASH_LOCK_RATE_LIMIT,
	ENKASH_LOCK_LAUNCHER,
	ENKASH_NUM_LOCKS
} EnkashLock;
extern LWLock *enkash_lock(EnkashLock which);

/* A module's structure in shared memory: made at start-up (enkash.c). */
typedef struct EnkashSharedPart
{
	const char *name;
	Size		size;
	void		(*first) (void *ptr);	/* fills it, in the first process */
	void	  **ptr;			/* where the module keeps its address */
} EnkashSharedPart;
extern void enkash_register_launcher(void);
extern void enkash_connect_worker(Datum arg, pqsigfunc sigterm);
extern const struct EnkashSharedPart enkash_launcher_part;
extern const struct EnkashSharedPart enkash_outbox_part;
extern void enkash_require_preload(void);
extern void enkash_require_current(void);	/* installed.c */
extern const char *enkash_require_setting(const char *name, const char *value);
extern const char *enkash_server_setting(const char *name);

/* --- credentials.c: the secrets file ------------------------------------ */
typedef struct EnkashCredentials
{
	char	   *client_id;
	char	   *client_secret;
	char	   *username;
	char	   *password;
	char	   *encryption_secret;	/* client_secret unless given */
	char	   *company_id;		/* the token request's clientId, if given */
	uint64		version;		/* bumps each time the file is re-read */
} EnkashCredentials;

extern const EnkashCredentials *enkash_credentials(void);

/* --- transport.c: HTTP over libcurl ---------------------------------------- */
typedef enum EnkashHttpOutcome
{
	ENKASH_HTTP_OK,				/* a complete HTTP response arrived */
	ENKASH_HTTP_NOT_SENT,		/* failed before the request could leave */
	ENKASH_HTTP_MAYBE_SENT,		/* failed after connecting: EnKash may have acted */
	ENKASH_HTTP_TOO_LARGE		/* the response exceeded enkash.max_response_kb */
} EnkashHttpOutcome;

typedef struct EnkashHttpResult
{
	EnkashHttpOutcome outcome;
	long		status;			/* HTTP status when outcome is OK */
	const char *body;			/* NUL-terminated; valid until the next call */
	size_t		body_len;
	char		error[256];		/* libcurl's explanation when not OK */
	double		seconds;		/* wall time of the exchange */
	int			retry_after;	/* the answer's Retry-After, seconds (0: none) */
} EnkashHttpResult;

extern void enkash_http_post(const char *url, const char *const *headers,
							 int nheaders, const char *body, size_t body_len,
							 bool may_resend, EnkashHttpResult *result);
extern void enkash_http_post_timed(const char *url, const char *const *headers,
								   int nheaders, const char *body, size_t body_len,
								   bool may_resend, long timeout_ms,
								   long connect_timeout_ms, EnkashHttpResult *result);

/* The outbox sender's concurrent transfers (one multi handle, reused connections). */
#define ENKASH_MAX_CONCURRENCY 256
extern bool enkash_multi_start(int max, const char *url, const char *const *headers,
							   int nheaders, const char *body, size_t body_len,
							   bool may_resend, void *owner);
extern int	enkash_multi_running(void);
extern void enkash_multi_wait(long timeout_ms);
extern bool enkash_multi_done(void **owner, EnkashHttpResult *result);
extern void enkash_multi_release(void);
enkash_noreturn extern void enkash_http_raise(const char *what,
											   const EnkashHttpResult *result);

/* --- token.c: the OAuth token shared by all backends --------------------- */
extern const struct EnkashSharedPart enkash_token_part;
extern uint64 enkash_token_get(char *bearer, size_t bearer_size);
extern void enkash_token_invalidate(uint64 generation);
extern uint64 enkash_token_renew(char *bearer, size_t bearer_size);
extern void enkash_token_refresh_if_due(void);
extern void enkash_token_alert_refusal(void);

/* --- ratelimit.c: enkash.rate_limit across the server --------------------- */
extern const struct EnkashSharedPart enkash_rate_limit_part;
extern void enkash_rate_limit_wait(void);

/* --- envelope glue (crypto itself is in envelope.c, PostgreSQL-free) ------ */
struct EnvelopeCipher;
extern struct EnvelopeCipher *enkash_cipher(void);
extern char *enkash_seal_body(const char *json, size_t len, size_t *out_len);

/* --- response.c: EnKash's envelope to jsonb or an error ------------------ */
/* What EnKash said, besides the payload: for the audit log. */
typedef struct EnkashAnswer
{
	Jsonb	   *envelope;		/* decrypted {code, message, payload} */
	char	   *code;
	char	   *message;
} EnkashAnswer;

extern Jsonb *enkash_parse_response(const char *endpoint_name,
									const EnkashHttpResult *http,
									EnkashAnswer *answer);
extern Jsonb *enkash_parse_json_or_null(const char *text, size_t len);

/* --- json_member.c: one member of a JSON object ---------------------------- */
extern bool enkash_json_member(Jsonb *json, const char *key, JsonbValue *out);
extern char *enkash_json_string(Jsonb *json, const char *key);
extern char *enkash_json_scalar(Jsonb *json, const char *key);
extern Jsonb *enkash_body_jsonb(const char *json, size_t len);
extern bool enkash_json_int8(Jsonb *json, const char *key, int64 *out);

/* --- mask.c: secrets out of anything stored ------------------------------ */
extern Jsonb *enkash_mask(Jsonb *json);
extern Jsonb *enkash_mask_text(const char *json, size_t len);
extern char *enkash_mask_request(const char *json, size_t len);
extern Jsonb *enkash_mask_body(const char *json, size_t len, Jsonb *body);

/* --- request.c / api.c / pages.c ---------------------------------------- */
typedef struct EnkashEndpoint EnkashEndpoint;
extern Jsonb *enkash_send(const EnkashEndpoint *endpoint, const char *json,
						  size_t len, const char *key);
extern const EnkashHttpResult *enkash_send_reached(bool *left);
extern Jsonb *enkash_send_answered(const EnkashEndpoint *endpoint, const char *json,
								   size_t len, const char *key,
								   EnkashAnswer *answer);

/* A listing's items, in either shape EnKash answers (pages.c). */
typedef struct EnkashList
{
	JsonbContainer *items;		/* the array */
	int64		total_records;	/* recordsCount or totalElements; -1 if absent */
	int64		total_pages;	/* totalPages; -1 if absent */
} EnkashList;
extern bool enkash_list_of(Jsonb *payload, EnkashList *list);
#define ENKASH_API_HEADERS 5
/* Longest EnKash identifier, idempotency keys included (characters). */
#define ENKASH_MAX_ID_CHARS 64
extern void enkash_check_key(const char *key);
#define ENKASH_BEARER_MAX 2100
extern uint64 enkash_api_headers(const char **headers, char *bearer,
								 const char *partner_header);
/* A call as it goes on the wire, but for the bearer (added at sending). */
typedef struct EnkashWireRequest
{
	char	   *url;
	char	   *partner_header;	/* "partnerId: ..." */
	const char *body;			/* sealed when enkash.encrypt is on */
	size_t		body_len;
} EnkashWireRequest;
extern void enkash_prepare_request(const EnkashEndpoint *endpoint, const char *json,
								   size_t len, EnkashWireRequest *wire);
extern void enkash_exchange(const EnkashEndpoint *endpoint, const char *json,
							size_t len, EnkashHttpResult *http,
							volatile bool *request_left);

struct LedgerExchange;
extern void enkash_describe_exchange(struct LedgerExchange *x,
									 const EnkashEndpoint *endpoint,
									 const char *key, const char *masked_request,
									 const EnkashHttpResult *http,
									 const EnkashAnswer *answer);
extern ErrorData *enkash_current_error(MemoryContext cxt);

/* --- money.c: exactly-once money calls ------------------------------------ */
struct LedgerBatch;
extern Jsonb *enkash_send_money(const EnkashEndpoint *endpoint,
								const char *json, size_t len, Jsonb *body,
								const char *key);
extern Jsonb *enkash_finish_sent(const EnkashEndpoint *endpoint, const char *json,
								 size_t len, const char *key, int64 key_id,
								 int key_attempt, int64 audit_id,
								 const EnkashHttpResult *http,
								 uint64 token_generation, struct LedgerBatch *batch,
								 ErrorData **error);
extern void enkash_finish_unsent(const EnkashEndpoint *endpoint, const char *json,
								 size_t len, const char *key, int64 key_id,
								 int key_attempt, int64 audit_id, ErrorData *edata,
								 struct LedgerBatch *batch);
extern char *enkash_request_fingerprint(const EnkashEndpoint *endpoint,
										const char *json, size_t len);
extern void enkash_build_body(FunctionCallInfo fcinfo, StringInfo body,
							  const EnkashEndpoint **endpoint, char **key);
extern const EnkashEndpoint *enkash_raw_call_args(FunctionCallInfo fcinfo,
												  Jsonb **body);
extern char *enkash_raw_money_key(const EnkashEndpoint *endpoint, Jsonb *body);

/* --- controls.c: the pause switch, dry runs, spending limits, approval ---- */
extern Jsonb *enkash_controls_before_send(const EnkashEndpoint *endpoint,
										  const char *json, size_t len,
										  Jsonb *body, const char *key);
extern void enkash_limits_enter(const EnkashEndpoint *endpoint, Jsonb *body,
								const char *key);
extern void enkash_limits_leave(void);
extern void enkash_as_owner(void (*fn) (void *arg), void *arg);
extern const char *enkash_controls_queue_state(const EnkashEndpoint *endpoint,
											   Jsonb *body, const char *key,
											   char **reason);

#endif							/* ENKASH_H */
