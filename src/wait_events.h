/*
 * wait_events.h: what an enkash process waits for, as pg_stat_activity's
 * wait_event shows it (type Extension).  From PostgreSQL 17 on each has its
 * own name (the README's Operations section lists them); before 17 all show
 * as "Extension".
 */
#ifndef ENKASH_WAIT_EVENTS_H
#define ENKASH_WAIT_EVENTS_H

typedef enum EnkashWait
{
	ENKASH_WAIT_CALL,			/* a session waits for EnKash's answer */
	ENKASH_WAIT_SENDER_CALLS,	/* the sender waits for EnKash's answers */
	ENKASH_WAIT_OUTBOX_QUEUE,	/* the sender waits for queued requests */
	ENKASH_WAIT_LEDGER_SLOT,	/* a session waits for room in the worker's queue */
	ENKASH_WAIT_LEDGER_WORKER,	/* a session waits for the worker's answer */
	ENKASH_WAIT_RATE_LIMIT,		/* a call waits for its turn (enkash.rate_limit) */
	ENKASH_WAIT_TOKEN,			/* a call waits for another process's token fetch */
	ENKASH_WAIT_LAUNCHER,		/* the launcher between its rounds */
	ENKASH_WAIT_WORKER_IDLE,	/* the enkash worker with nothing to do */
	ENKASH_WAIT_WORKER_GATHER,	/* the enkash worker lets look-ups' audit rows gather */
	ENKASH_WAIT_STOP_POINT,		/* held at a test stop point (test builds only) */
	ENKASH_WAIT_COUNT
} EnkashWait;

/* The wait event to report for which (registered on first use). */
extern uint32 enkash_wait_event(EnkashWait which);

#endif							/* ENKASH_WAIT_EVENTS_H */
