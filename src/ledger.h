/*-------------------------------------------------------------------------
 *
 * ledger.h
 *	  Idempotency keys and the audit log, written by the enkash worker.
 *
 * PostgreSQL has no autonomous transactions, so a backend never writes these
 * rows itself: it hands them to the worker through shared memory and (for
 * money) waits until the worker has committed them.  They therefore survive
 * the caller's rollback, cancellation or death.
 *
 *-------------------------------------------------------------------------
 */
#ifndef ENKASH_LEDGER_H
#define ENKASH_LEDGER_H

#include "postgres.h"

#include "utils/jsonb.h"

/* What the worker said about a claimed key. */
typedef enum LedgerVerdict
{
	LEDGER_CLAIMED,				/* new key: send it */
	LEDGER_RECONCILE,			/* outcome unknown: ask EnKash before sending */
	LEDGER_REPLAY_SUCCESS,		/* done before: here is the stored payload */
	LEDGER_REPLAY_FAILURE,		/* declined before: here is the stored error */
	LEDGER_MISMATCH,			/* the key was used for a different request */
	LEDGER_IN_FLIGHT,			/* another session is sending it right now */
	LEDGER_TOO_SOON,			/* unknown, but EnKash may still be at it */
	LEDGER_SUPERSEDED,			/* (finish) a later attempt owns the key */
	LEDGER_ERROR				/* the worker could not record it */
} LedgerVerdict;

typedef struct LedgerClaim
{
	LedgerVerdict verdict;
	int64		key_id;			/* enkash.idempotency_keys.id */
	int			attempt;		/* its attempts: fences the outcome */
	int64		audit_id;		/* enkash.audit_log.id of the send, if any */
	char		sqlstate[6];	/* stored failure, or the worker's error */
	char	   *payload;		/* stored payload (REPLAY_SUCCESS) */
	char	   *message;
	char	   *detail;
} LedgerClaim;

/* The final state of a key, as FINISH records it. */
typedef enum LedgerState
{
	LEDGER_SUCCEEDED,
	LEDGER_FAILED,				/* EnKash declined: replays raise it again */
	LEDGER_UNKNOWN,				/* may or may not have happened */
	LEDGER_RELEASED				/* nothing happened: the key is free again */
} LedgerState;

/*
 * One HTTP exchange, for the audit log; all of it already masked but a
 * look-up's answer, which the worker masks (off the caller's clock).
 */
typedef struct LedgerExchange
{
	const char *endpoint;
	const char *key;			/* idempotency key, or NULL */
	const char *request;		/* masked JSON, or NULL */
	const Jsonb *response;		/* masked answer, or NULL */
	bool		mask_response;	/* ... not masked yet: the worker masks it */
	const char *outcome;		/* ok, declined, failed, unknown, error */
	int			http_status;	/* 0 when no response */
	const char *enkash_code;
	const char *message;
	const char *sqlstate;
	double		latency_ms;
} LedgerExchange;

extern const struct EnkashSharedPart enkash_ledger_part;

/* Backend side */
extern void enkash_ledger_claim(const char *endpoint, const char *key,
								const char *fingerprint, const Jsonb *request,
								bool look_first, LedgerClaim *claim);
extern int64 enkash_ledger_sending(int64 key_id, const char *endpoint,
								   const char *key, const Jsonb *request);
extern void enkash_ledger_finish(int64 key_id, int attempt, int64 audit_id, LedgerState state,
								 const Jsonb *payload, const char *err_sqlstate,
								 const char *err_message, const char *err_detail,
								 const LedgerExchange *exchange, bool wait);
extern void enkash_ledger_audit(const LedgerExchange *exchange, bool wait);
extern int	enkash_longest_call_ms(void);
extern void enkash_durable_commit(void);

extern Oid	enkash_ledger_worker_database(void);

/* The outbox sender, in its own transaction, many rows to a statement */
typedef struct LedgerNewKey
{
	const char *endpoint;
	const char *key;
	const char *fingerprint;
	const char *request;		/* masked JSON */
	bool		claimed;		/* out: claimed here, with its "sent" audit row */
	int64		key_id;
	int			attempt;
	int64		audit_id;
} LedgerNewKey;
extern void enkash_ledger_claim_new_keys(LedgerNewKey *keys, int count, const char *role);

typedef struct LedgerBatch LedgerBatch;
extern LedgerBatch *enkash_ledger_batch(const char *role, int size);
extern void enkash_ledger_finish_later(LedgerBatch *batch, int64 key_id, int attempt, int64 audit_id,
									   LedgerState state, const Jsonb *payload,
									   const char *err_sqlstate, const char *err_message,
									   const char *err_detail, const LedgerExchange *exchange);
extern void enkash_ledger_write(LedgerBatch *batch);

/* Worker side */
extern void enkash_ledger_attach_worker(void);

/*
 * What a round of the worker did.  Look-ups' audit rows, which nobody waits
 * for, are let gather for LEDGER_GATHER_MS (or until LEDGER_GATHER_SLOTS
 * are waiting, or a slot someone waits for arrives) so that many share a
 * transaction: the worker then waits that long and goes round again.
 */
typedef enum LedgerRound
{
	LEDGER_IDLE,				/* nothing to do */
	LEDGER_DID_WORK,
	LEDGER_GATHERING			/* look-ups' audit rows wait for company */
} LedgerRound;
#define LEDGER_GATHER_MS 5
extern LedgerRound enkash_ledger_process(void);
extern void enkash_ledger_batch_failed(void);

#endif							/* ENKASH_LEDGER_H */
