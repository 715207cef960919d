/*-------------------------------------------------------------------------
 *
 * outbox_internal.h
 *	  What the sender's files share: a claimed row, and the statements over
 *	  enkash.requests (outbox_rows.c).  Only outbox*.c include it.
 *
 *-------------------------------------------------------------------------
 */
#ifndef ENKASH_OUTBOX_INTERNAL_H
#define ENKASH_OUTBOX_INTERNAL_H

#include "enkash.h"

#include "endpoints.h"
#include "enkash_spi.h"
#include "ledger.h"

/* Not exported from the library: no other module can bind to these names. */
#pragma GCC visibility push(hidden)

/* A claimed row, from its claim to its recorded outcome. */
typedef struct QueuedCall
{
	int64		id;
	char	   *endpoint;
	char	   *body;
	char	   *key;
	int			attempts;
	int			max_attempts;
	int			retry_after;	/* seconds EnKash asked us to wait, if any */

	/* sent on the multi handle (else: the ordinary path, one at a time) */
	const EnkashEndpoint *ep;
	int64		key_id;			/* enkash.idempotency_keys.id, 0 if no key */
	int			key_attempt;	/* its attempt, which fences its outcome */
	int64		audit_id;
	bool		look_first;		/* a new load looked up at EnKash before it is sent */
	uint64		token_generation;
	ErrorData  *start_error;	/* failed before the request could leave */
	MemoryContext cxt;			/* this call's memory */
	struct QueuedCall *next;
} QueuedCall;

/* A row's outcome as plan_outcome takes it (plan_outcomes: an array of each). */
#define OUTCOME_COLUMNS 8
extern const Oid outcome_types[OUTCOME_COLUMNS];

extern MemoryContext sender_cxt;
extern QueuedCall *claimed_multi;
extern QueuedCall *claimed_ordinary;

extern bool outbox_installed(void);
extern void commit_work(void);
extern void log_and_abort(MemoryContext cxt);
extern void outcome_args(const QueuedCall *call, Jsonb *response, ErrorData *error,
						 bool request_left, const EnkashHttpResult *http,
						 Datum *values, char *nulls);
extern void record_outcome(const QueuedCall *call, Jsonb *response, ErrorData *error,
						   bool request_left, const EnkashHttpResult *http);
extern void write_outcomes(EnkashColumns *rows);
extern void release_orphans(void);
extern void claim_rows(int room, const char *role);
extern void forget_call(QueuedCall *call);
extern void forget_calls(QueuedCall *calls);
extern int	put_back_calls(QueuedCall *ready);

/* outbox.c */
extern void enkash_outbox_sleep(long timeout_ms);

#pragma GCC visibility pop

#endif							/* ENKASH_OUTBOX_INTERNAL_H */
