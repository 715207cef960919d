/*
 * wait_events.c: the names under which enkash's waits appear in
 * pg_stat_activity.  Each name is registered with the server the first time
 * a process waits on it (WaitEventExtensionNew hands every process the same
 * number for the same name) and remembered for the process's life.
 */
#include "postgres.h"

#include "compat.h"
#include "wait_events.h"

#include "utils/wait_event.h"

static const char *const wait_event_names[ENKASH_WAIT_COUNT] = {
	[ENKASH_WAIT_CALL] = "EnkashCall",
	[ENKASH_WAIT_SENDER_CALLS] = "EnkashSenderCalls",
	[ENKASH_WAIT_OUTBOX_QUEUE] = "EnkashOutboxQueue",
	[ENKASH_WAIT_LEDGER_SLOT] = "EnkashLedgerSlot",
	[ENKASH_WAIT_LEDGER_WORKER] = "EnkashLedgerWorker",
	[ENKASH_WAIT_RATE_LIMIT] = "EnkashRateLimit",
	[ENKASH_WAIT_TOKEN] = "EnkashToken",
	[ENKASH_WAIT_LAUNCHER] = "EnkashLauncher",
	[ENKASH_WAIT_WORKER_IDLE] = "EnkashWorkerIdle",
	[ENKASH_WAIT_WORKER_GATHER] = "EnkashWorkerGather",
	[ENKASH_WAIT_STOP_POINT] = "EnkashStopPoint",
};

uint32
enkash_wait_event(EnkashWait which)
{
#ifdef ENKASH_NAMED_WAIT_EVENTS
	static uint32 registered[ENKASH_WAIT_COUNT];

	Assert(which >= 0 && which < ENKASH_WAIT_COUNT);
	if (registered[which] == 0)
		registered[which] = WaitEventExtensionNew(wait_event_names[which]);
	return registered[which];
#else
	(void) wait_event_names;
	return PG_WAIT_EXTENSION;
#endif
}
