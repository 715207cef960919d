/*-------------------------------------------------------------------------
 *
 * sandbox.h
 *	  Shared declarations of enkash-sandbox, the local stand-in for the
 *	  EnKash Prepaid Card API that the enkash extension's tests, benchmarks
 *	  and demo talk to.
 *
 * Everything that touches mutable state (cards, ledger, tokens, counters,
 * faults) runs under the single global sandbox_lock; the server is a test
 * tool, so simplicity beats throughput.
 *
 *-------------------------------------------------------------------------
 */
#ifndef SANDBOX_H
#define SANDBOX_H

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include <microhttpd.h>

#define AES_KEY_LEN 16

/* every JSON we emit uses this, so amounts print as 10.01 and not 10.0099... */
#define SANDBOX_JSON_FLAGS (JSON_COMPACT | JSON_REAL_PRECISION(15))

/* command line settings */
typedef struct SandboxConfig
{
	const char *listen;
	int			port;
	const char *port_file;
	const char *client_id;
	const char *client_secret;
	const char *username;
	const char *password;
	const char *company_id;
	const char *partner_id;
	const char *encryption_secret;
	long		token_ttl;
	bool		no_encrypt;
	const char *tls_cert;
	const char *tls_key;
	bool		quiet;
	unsigned char key[AES_KEY_LEN];	/* derived from encryption_secret */
} SandboxConfig;

extern SandboxConfig cfg;
extern pthread_mutex_t sandbox_lock;
extern atomic_bool sandbox_shutdown;	/* set once, read by sleepers */

/* one HTTP request, as collected by main.c */
typedef struct SandboxRequest
{
	struct MHD_Connection *conn;
	char	   *method;
	char	   *path;			/* without query string */
	char	   *body;			/* NUL terminated for convenience */
	size_t		body_len;
	bool		body_too_big;
	double		start;			/* monotonic seconds */
	int			status;			/* for the log line; 0 = dropped */
} SandboxRequest;

typedef enum ReplyKind
{
	REPLY_NORMAL,
	REPLY_DROP,					/* close the connection without answering */
	REPLY_DRIP,					/* send body one byte every 200 ms */
	REPLY_REDIRECT				/* 302 to a dead address */
} ReplyKind;

/* what a handler wants sent back; body is malloc'd and owned by the reply */
typedef struct SandboxReply
{
	ReplyKind	kind;
	int			status;
	char	   *body;
	size_t		len;
	const char *content_type;
	int			retry_after;	/* < 0: no Retry-After header */
	const char *location;
} SandboxReply;

/* main.c */
extern double monotonic_now(void);
extern int64_t wall_ms(void);
extern void sandbox_sleep_ms(long ms);
extern void reply_json(SandboxReply *rep, int status, json_t *obj);
extern void reply_error(SandboxReply *rep, int status, const char *fmt,...)
			__attribute__((format(printf, 3, 4)));
extern char *sb_strdup(const char *s);
extern void *sb_malloc(size_t n);
extern void *sb_realloc(void *p, size_t n);
extern void grow_array(void **arr, int *cap, int need, size_t elsize);

/* envelope.c */
extern void envelope_derive_key(const char *secret, unsigned char key[AES_KEY_LEN]);
extern char *b64_encode(const unsigned char *in, size_t len);
extern unsigned char *b64_decode(const char *in, size_t len, size_t *outlen);
extern unsigned char *aes_ecb_encrypt(const unsigned char *key,
									  const unsigned char *in, size_t len,
									  bool pad, size_t *outlen);
extern unsigned char *aes_ecb_decrypt(const unsigned char *key,
									  const unsigned char *in, size_t len,
									  size_t *outlen);
extern char *envelope_seal(const unsigned char *key, const char *plain,
						   size_t len, size_t *outlen);
extern json_t *envelope_open(const unsigned char *key, const char *body,
							 size_t len);
extern int	envelope_selftest(const char *file);

/* auth.c */
extern void random_hex(char *out, int nbytes);
extern void auth_token_endpoint(SandboxRequest *req, SandboxReply *rep);
extern bool auth_check_bearer(const char *authorization);
extern void auth_expire_all(bool refresh_too);
extern json_t *auth_tokens_json(void);
extern json_t *auth_lock_json(void);
extern void auth_unlock(bool counters_too);

/* state.c */
extern void state_reset(void);
extern void state_free(void);
extern void auth_free(void);
extern json_t *json_money(int64_t paise);
extern char *money_str(int64_t paise, char *buf, size_t buflen);
extern bool json_to_paise(json_t *v, int64_t *paise);
extern void format_ist(int64_t ms, char *buf, size_t buflen);
extern bool parse_iso8601(const char *s, bool end_of_day, int64_t *ms);
extern int	sandbox_spend(const char *card_id, int64_t amount,
						  const char *merchant, const char *mcc,
						  const char *reference, char *err, size_t errlen);
extern json_t *ledger_json(const char *reference);
extern const char *otp_lookup(const char *otp_request_id);

/* endpoints.c */
extern void api_dispatch(const char *suffix, json_t *in, int *status,
						 json_t **out);
extern bool api_known_suffix(const char *suffix);
extern void api_apply_due(void);
extern json_t *api_load(json_t *in);
extern void api_pending_clear(void);

/* control.c */
typedef enum ResponseMode
{
	RESP_NONE = 0,
	RESP_MALFORMED,
	RESP_TRUNCATED,
	RESP_WRONG_KEY,
	RESP_BAD_BASE64,
	RESP_BAD_PADDING,
	RESP_DEEP_JSON,
	RESP_NO_CODE,
	RESP_HUGE,
	RESP_DRIP,
	RESP_REDIRECT,
	RESP_HUGE_NUMBER,
	RESP_ESCAPED_SLASH
} ResponseMode;

/*
 * Which calls a fault hits: after letting skip matching calls through, the
 * next count calls on path (an endpoint suffix such as "/balance" or a full
 * path; empty = every path).
 */
#define FAULT_PATH_LEN 128
typedef struct FaultSel
{
	int			count;
	int			skip;
	char		path[FAULT_PATH_LEN];
} FaultSel;

/* How a look-up by pgReferenceNumber on /transaction/all is answered. */
typedef enum LookupMode
{
	LOOKUP_RECORDS = 0,			/* {recordsCount, data:[the match]}: the default */
	LOOKUP_CONTENT,				/* {content:[the match], totalPages} */
	LOOKUP_SINGLE,				/* the bare transaction, or code 1 if none */
	LOOKUP_EMPTY,				/* code 0, an empty list, whatever happened */
	LOOKUP_OTHERS,				/* code 0, a list of other references only */
	LOOKUP_UNREADABLE,			/* code 0, a payload that is no list */
	LOOKUP_DECLINE,				/* code 1, "Unable to process, try later" */
	LOOKUP_NOT_FOUND,			/* code 1, "Transaction not found" */
	LOOKUP_WRONG_AMOUNT,		/* the match with its amount raised by 1.00 */
	LOOKUP_WRONG_CARD,			/* the match on another card */
	LOOKUP_PAGED				/* records, one a page: an other, then the match */
} LookupMode;

/* "processing": when a call's effect and its answer happen. */
typedef enum ProcessingMode
{
	PROC_NONE = 0,
	PROC_APPLY_LATER,			/* answered "Success" at once, applied ms later */
	PROC_ANSWER_LATER,			/* applied at once, answered ms later */
	PROC_LOSE					/* answered "Success", never applied */
} ProcessingMode;

#define MAX_PATH_LATENCY 16

typedef struct Faults
{
	long		latency_ms;
	int			npath_latency;
	struct
	{
		char		path[FAULT_PATH_LEN];
		long		ms;
	}			path_latency[MAX_PATH_LATENCY];
	int			fail_status;
	FaultSel	fail;
	int			fail_retry_after;
	FaultSel	biz;
	char	   *biz_message;
	FaultSel	drop;
	bool		drop_after_apply;
	ResponseMode resp_mode;
	FaultSel	resp;
	LookupMode	lookup_mode;
	FaultSel	lookup;
	char		lookup_message[FAULT_PATH_LEN];
	ProcessingMode proc_mode;
	long		proc_ms;
	FaultSel	proc;
	bool		list_records;	/* listings as {recordsCount, data}, not {content, totalPages} */
} Faults;

extern Faults faults;
extern void control_handle(SandboxRequest *req, SandboxReply *rep);
extern void control_note_request(SandboxRequest *req);
extern void control_note_connection(void);
extern void control_request_begin(void);
extern void control_request_end(void);
extern void control_note_grant(const char *grant_type);
extern void control_reset_counters(void);
extern void faults_clear(void);
extern bool fault_take(FaultSel *sel, const char *path);
extern long faults_latency(const char *path);

/* the API call pipeline lives in endpoints.c too */
extern void api_handle(SandboxRequest *req, SandboxReply *rep);

#endif							/* SANDBOX_H */
