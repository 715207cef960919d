/*-------------------------------------------------------------------------
 *
 * outbox_sender.c
 *	  The transactional outbox, sending side: the enkash sender sends the
 *	  rows of enkash.requests after COMMIT, exactly once, with retries.
 *
 * A row of enkash.requests commits with the caller's transaction or not at
 * all, so a rolled-back payroll row never sends anything.
 *
 * The enkash sender, one background worker, sends them concurrently: it
 * claims due rows with the body of enkash.claim_requests (FOR UPDATE SKIP
 * LOCKED, so no two claimers hold a row) and, in the same transaction, the
 * idempotency key of each new money call with its "sent" audit row; only
 * after that commits does anything leave, on one curl multi handle with at
 * most enkash.max_concurrency transfers in flight and connections reused.
 * Outcomes are written as transfers finish (gathered for a few ms), many
 * to a commit, together with the next claims; keys, audit rows and queued
 * rows each with one statement for the batch (unnest of arrays), one row
 * at a time if that fails.  A row whose key was used before (a replay, a
 * mismatch, an unknown outcome to reconcile with EnKash) takes the
 * ordinary synchronous money path instead, one at a time.  Transient
 * failures are retried with capped exponential backoff and jitter; rows
 * that exhaust enkash.max_attempts end "dead" with their error history.
 *
 * Never blindly resent: a transfer that fails after its request may have
 * left makes the key and the row unknown, and libcurl may not re-send a
 * money body on its own (transport.c).  A sender that dies leaves rows
 * "sending" and keys in flight; they count as unknown afterwards.  One told
 * to stop (SIGTERM) first puts back the rows it has not sent and records
 * the answers it already has.
 *
 *
 *-------------------------------------------------------------------------
 */
#include "outbox_internal.h"

#include "access/xact.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "stoppoint.h"
#include "storage/ipc.h"
#include "tcop/tcopprot.h"
#include "utils/guc.h"
#include "utils/memutils.h"

PGDLLEXPORT void enkash_sender_main(Datum arg);

/* How often the sender looks for due rows while transfers are in flight. */
#define CLAIM_POLL_MS 100
/*
 * Finished transfers are recorded together once 1/GATHER_FRACTION of
 * enkash.max_concurrency have finished, none is left in flight, or the
 * first has waited GATHER_MS.
 */
#define GATHER_FRACTION 4
#define GATHER_MS 5
/*
 * Beyond the free places, this many more rows (1/RESERVE_FRACTION of
 * enkash.max_concurrency) are claimed, their keys committed, and held
 * ready: a transfer that finishes is replaced at once, not after its
 * outcome has been recorded and the next rows claimed.
 */
#define RESERVE_FRACTION 4
/* How often rows left "sending" by a sender that died are looked for. */
#define ORPHAN_CHECK_MS 5000

/* Sends one claimed row through the ordinary path and records what happened. */
static void
send_call(QueuedCall *call)
{
	MemoryContext cxt = CurrentMemoryContext;
	const EnkashEndpoint *ep = enkash_endpoint_by_name(call->endpoint);
	/* the answer and the error live as long as the call (forget_call) */
	Jsonb	   *volatile response = NULL;
	ErrorData  *volatile edata = NULL;
	const EnkashHttpResult *http;
	bool		request_left;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PG_TRY();
	{
		Jsonb	   *payload;

		if (ep == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_OBJECT),
					 errmsg("unknown EnKash endpoint \"%s\"", call->endpoint)));
		payload = enkash_send(ep, call->body, strlen(call->body), call->key);
		payload = enkash_mask(payload);
		response = (Jsonb *) MemoryContextAlloc(call->cxt, VARSIZE(payload));
		memcpy(response, payload, VARSIZE(payload));
		CommitTransactionCommand();
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(call->cxt);
		edata = CopyErrorData();
		FlushErrorState();
		AbortCurrentTransaction();
	}
	PG_END_TRY();
	MemoryContextSwitchTo(cxt);

	http = enkash_send_reached(&request_left);
	call->retry_after = http ? http->retry_after : 0;
	record_outcome(call, response, edata, request_left, http);
}

/*
 * The outcome of a finished (or failed to start) transfer: its key and
 * audit row into batch, its row into outcomes; written by record_all.
 */
static void
record_sent(QueuedCall *call, const EnkashHttpResult *http, LedgerBatch *batch,
			EnkashColumns *outcomes)
{
	ErrorData  *error = call->start_error;
	Jsonb	   *response = NULL;
	size_t		len = strlen(call->body);
	Datum		values[OUTCOME_COLUMNS];
	char		nulls[OUTCOME_COLUMNS];

	if (error)
		enkash_finish_unsent(call->ep, call->body, len, call->key, call->key_id,
							 call->key_attempt, call->audit_id, error, batch);
	else
		response = enkash_finish_sent(call->ep, call->body, len, call->key,
									  call->key_id, call->key_attempt, call->audit_id, http,
									  call->token_generation, batch, &error);
	outcome_args(call, response, error, call->start_error == NULL,
				 call->start_error ? NULL : http, values, nulls);
	enkash_columns_add(outcomes, values, nulls);
}

/* A finished transfer, between enkash_multi_done and its recorded outcome. */
typedef struct Finished
{
	QueuedCall *call;
	EnkashHttpResult http;
} Finished;

/*
 * Records the outcomes of finished transfers in the current transaction
 * (SPI connected): keys, audit rows and queued rows, each kind with one
 * statement for them all (one row at a time if that fails).
 */
static void
record_all(Finished *done, int ndone, const char *role)
{
	LedgerBatch *batch = enkash_ledger_batch(role, ndone);
	EnkashColumns outcomes;

	enkash_columns_init(&outcomes, outcome_types, OUTCOME_COLUMNS, ndone);
	for (int i = 0; i < ndone; i++)
		record_sent(done[i].call, &done[i].http, batch, &outcomes);
	enkash_ledger_write(batch);
	write_outcomes(&outcomes);
}

/* Records one outcome in a transaction of its own, after a failed batch. */
static void
record_alone(Finished *done)
{
	MemoryContext cxt = CurrentMemoryContext;

	PG_TRY();
	{
		enkash_spi_begin(NULL);
		record_all(done, 1, GetUserNameFromId(GetUserId(), false));
		commit_work();
	}
	PG_CATCH();
	{
		/* its row stays "sending": unknown once this sender is gone */
		log_and_abort(cxt);
	}
	PG_END_TRY();
}

/*
 * Records the outcomes of finished transfers and claims up to room new
 * rows, in one transaction; the claimed calls are left in claimed_multi
 * (to start) and claimed_ordinary.  If that transaction fails, the
 * outcomes are written one per transaction, and nothing is claimed.
 */
static void
record_and_claim(Finished *done, int ndone, int room)
{
	MemoryContext cxt = CurrentMemoryContext;

	PG_TRY();
	{
		char	   *role;

		enkash_spi_begin(NULL);
		role = GetUserNameFromId(GetUserId(), false);
		if (ndone > 0)
			record_all(done, ndone, role);
		if (room > 0 && outbox_installed())
			claim_rows(room, role);
		ENKASH_STOP_POINT(ndone > 0 ? "sender-record-before-commit" : NULL);
		ENKASH_STOP_POINT(claimed_multi ? "sender-claim-before-commit" : NULL);
		commit_work();
		ENKASH_STOP_POINT(ndone > 0 ? "sender-recorded" : NULL);
	}
	PG_CATCH();
	{
		log_and_abort(cxt);
		/* the claims were rolled back with it */
		forget_calls(claimed_multi);
		forget_calls(claimed_ordinary);
		claimed_multi = claimed_ordinary = NULL;
		for (int i = 0; i < ndone; i++)
			record_alone(&done[i]);
	}
	PG_END_TRY();
	MemoryContextSwitchTo(cxt);
	for (int i = 0; i < ndone; i++)
		forget_call(done[i].call);
}

/* Puts a claimed call on the wire (the key, if any, is committed). */
static void
start_call(QueuedCall *call)
{
	EnkashWireRequest wire;
	char		bearer[ENKASH_BEARER_MAX];
	const char *headers[ENKASH_API_HEADERS];

	enkash_prepare_request(call->ep, call->body, strlen(call->body), &wire);
	call->token_generation = enkash_api_headers(headers, bearer, wire.partner_header);
	PG_TRY();
	{
		/* Only look-ups may be re-sent by libcurl after a dead connection. */
		if (!enkash_multi_start(ENKASH_MAX_CONCURRENCY, wire.url, headers, lengthof(headers),
								wire.body, wire.body_len, call->ep->kind == ENKASH_READ, call))
			elog(ERROR, "no free transfer for a queued request");
	}
	PG_FINALLY();
	{
		explicit_bzero(bearer, sizeof(bearer));
	}
	PG_END_TRY();
}

/*
 * Starts the calls, in a transaction (a token may have to be fetched).  A
 * call that cannot start is kept in *failed with its error, to be recorded
 * with the next outcomes.
 */
static void
start_calls(QueuedCall *calls, QueuedCall **failed)
{
	MemoryContext cxt = CurrentMemoryContext;
	QueuedCall *volatile next = calls;

	while (next)
	{
		SetCurrentStatementStartTimestamp();
		StartTransactionCommand();
		PG_TRY();
		{
			for (; next; next = next->next)
				start_call(next);
			CommitTransactionCommand();
		}
		PG_CATCH();
		{
			QueuedCall *call = next;

			MemoryContextSwitchTo(call->cxt);
			call->start_error = CopyErrorData();
			FlushErrorState();
			AbortCurrentTransaction();
			next = call->next;
			call->next = *failed;
			*failed = call;
		}
		PG_END_TRY();
		MemoryContextSwitchTo(cxt);
	}
}

/* The sender keeps the token fresh and tidies after crashes. */
static void
tidy(TimestampTz *last_orphan_check)
{
	PG_TRY();
	{
		StartTransactionCommand();
		enkash_token_alert_refusal();
		CommitTransactionCommand();
		StartTransactionCommand();
		enkash_token_refresh_if_due();
		CommitTransactionCommand();
		if (TimestampDifferenceExceeds(*last_orphan_check, GetCurrentTimestamp(),
									   ORPHAN_CHECK_MS))
		{
			release_orphans();
			*last_orphan_check = GetCurrentTimestamp();
		}
	}
	PG_CATCH();
	{
		log_and_abort(CurrentMemoryContext);
	}
	PG_END_TRY();
}

/* A call that needs the ordinary path's decisions (replay, reconcile, ...). */
static void
send_ordinary(QueuedCall *call)
{
	pgstat_report_activity(STATE_RUNNING, "enkash: sending a queued request");
	PG_TRY();
	{
		send_call(call);
	}
	PG_CATCH();
	{
		log_and_abort(CurrentMemoryContext);
	}
	PG_END_TRY();
}

/* Appends the list calls to *list; how many it appended. */
static int
append_calls(QueuedCall **list, QueuedCall *calls)
{
	int			count = 0;

	while (*list)
		list = &(*list)->next;
	*list = calls;
	for (; calls; calls = calls->next)
		count++;
	return count;
}

/* Takes up to n calls off the front of *list (*count of them). */
static QueuedCall *
take_calls(QueuedCall **list, int *count, int n)
{
	QueuedCall *taken = NULL;
	QueuedCall **tail = &taken;

	while (n-- > 0 && *list)
	{
		QueuedCall *call = *list;

		*list = call->next;
		call->next = NULL;
		*tail = call;
		tail = &call->next;
		(*count)--;
	}
	return taken;
}

/* Places for transfers, running or finished and not yet recorded. */
static int
free_transfers(void)
{
	return ENKASH_MAX_CONCURRENCY - enkash_multi_running();
}

/*
 * Starts up to n of the calls held ready, as free transfers allow; none
 * once the sender is told to stop: they are put back instead.
 */
static void
start_ready(QueuedCall **ready, int *nready, int n, QueuedCall **failed)
{
	if (!ShutdownRequestPending)
		start_calls(take_calls(ready, nready, Min(n, free_transfers())), failed);
}

/*
 * Moves finished transfers (up to take in all) and calls that could not
 * start into done[*ndone ...], keeping transfer_ms, the moving average of
 * how long transfers take.  Returns how many came from the multi handle.
 */
static int
collect_done(Finished *done, int *ndone, int take, QueuedCall **failed,
			 double *transfer_ms)
{
	void	   *owner;
	int			finished = 0;

	while (*ndone < take && enkash_multi_done(&owner, &done[*ndone].http))
	{
		done[*ndone].call = owner;
		done[*ndone].call->retry_after = done[*ndone].http.retry_after;
		*transfer_ms += (done[*ndone].http.seconds * 1000.0 - *transfer_ms) / 16;
		(*ndone)++;
		finished++;
	}
	ENKASH_STOP_POINT(finished > 0 ? "sender-answered" : NULL);
	while (*failed && *ndone < ENKASH_MAX_CONCURRENCY)
	{
		done[*ndone].call = *failed;
		memset(&done[*ndone].http, 0, sizeof(EnkashHttpResult));
		*failed = (*failed)->next;
		(*ndone)++;
	}
	return finished;
}

/* The same in a transaction of its own; if that fails, they stay "sending". */
static void
put_back(QueuedCall *ready)
{
	MemoryContext cxt = CurrentMemoryContext;

	if (ready == NULL)
		return;
	PG_TRY();
	{
		int			n;

		enkash_spi_begin(NULL);
		n = put_back_calls(ready);
		commit_work();
		ereport(LOG,
				(errmsg("enkash sender: stopping; %d queued requests it had not sent yet are back in the queue",
						n)));
	}
	PG_CATCH();
	{
		/* checked with EnKash after the restart, as after a crash */
		log_and_abort(cxt);
	}
	PG_END_TRY();
	MemoryContextSwitchTo(cxt);
}

/*
 * Told to stop: puts back what was not sent and records the answers that
 * have already come, without waiting for any (a fast shutdown must not wait
 * on EnKash).  Transfers still out stay "sending" and are checked with
 * EnKash after the restart, as after a crash.
 */
static void
stop_sending(QueuedCall *ready, QueuedCall *failed, Finished *done, int ndone)
{
	double		transfer_ms = 0;

	put_back(ready);
	enkash_multi_wait(0);
	(void) collect_done(done, &ndone, ENKASH_MAX_CONCURRENCY, &failed, &transfer_ms);
	if (ndone > 0)
	{
		record_and_claim(done, ndone, 0);
		enkash_multi_release();
	}
	if (enkash_multi_running() > 0)
		ereport(LOG,
				(errmsg("enkash sender: stopping with %d requests still waiting for EnKash's answer; they will count as unknown, and a load is checked with EnKash before any resend",
						enkash_multi_running())));
}

/*
 * What SIGTERM does.  The sender stops at the top of its loop, through
 * stop_sending, so that no row it claimed and did not send is lost; a call
 * of its own in progress (a token, a row on the ordinary path) is cancelled
 * first, as a backend's would be.  Asleep with nothing in hand, it ends at
 * once.
 */
typedef enum SenderStop
{
	STOP_AT_TOP,
	STOP_CANCELLING,
	STOP_NOW
} SenderStop;

static volatile sig_atomic_t on_sigterm = STOP_AT_TOP;

static void
sender_sigterm(SIGNAL_ARGS)
{
	if (on_sigterm == STOP_NOW)
	{
		die(postgres_signal_arg);
		return;
	}
	if (on_sigterm == STOP_CANCELLING)
	{
		QueryCancelPending = true;
		InterruptPending = true;
	}
	SignalHandlerForShutdownRequest(postgres_signal_arg);
}

/* Between calls of its own: a cancel meant for the one that ended goes. */
static void
calls_of_own_done(void)
{
	on_sigterm = STOP_AT_TOP;
	QueryCancelPending = false;
}

void
enkash_sender_main(Datum arg)
{
	TimestampTz last_orphan_check = 0;
	TimestampTz last_claim = 0;
	TimestampTz first_done = 0;
	QueuedCall *failed = NULL;
	QueuedCall *ready = NULL;	/* claimed ahead, not started yet */
	int			nready = 0;
	double		transfer_ms = 0;	/* how long transfers take, on average */
	Finished   *done;
	int			ndone = 0;		/* finished, not recorded yet */
	int			nfinished = 0;	/* ... of them from the multi handle */
	bool		slept = true;

	enkash_connect_worker(arg, sender_sigterm);
	sender_cxt = AllocSetContextCreate(TopMemoryContext, "enkash sender",
									   ALLOCSET_DEFAULT_SIZES);
	done = MemoryContextAlloc(sender_cxt, sizeof(Finished) * ENKASH_MAX_CONCURRENCY);

	for (;;)
	{
		QueuedCall *ordinary = NULL;
		QueuedCall *multi = NULL;
		bool		busy = false;
		bool		gathered;
		int			in_flight;
		int			room;
		int			reserve;
		int			take;
		TimestampTz now;

		CHECK_FOR_INTERRUPTS();
		if (ShutdownRequestPending)
		{
			stop_sending(ready, failed, done, ndone);
			proc_exit(0);
		}
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
		now = GetCurrentTimestamp();

		on_sigterm = STOP_CANCELLING;
		tidy(&last_orphan_check);
		calls_of_own_done();
		if (ShutdownRequestPending)
			continue;			/* nothing more is claimed or started */

		/*
		 * What finished, and what could not even start.  Transfers slower
		 * than two gatherings are taken a gather's worth at a time: those that
		 * finish together (they started together) are then recorded in a
		 * few short transactions, each followed by new transfers, rather
		 * than in one long one with their places idle until it ends.  Quick
		 * ones are all taken: fewer, larger transactions.
		 */
		take = transfer_ms > 2 * GATHER_MS ?
			Max(1, enkash_max_concurrency / GATHER_FRACTION) : ENKASH_MAX_CONCURRENCY;
		if (ndone == 0)
			first_done = now;
		nfinished += collect_done(done, &ndone, take, &failed, &transfer_ms);

		/*
		 * Outcomes are gathered for a few milliseconds while other transfers
		 * are still on their way, so that one transaction records (and
		 * claims) many rows: the statements cost about the same for 2 rows
		 * as for 20.
		 */
		in_flight = enkash_multi_running() - nfinished;
		/* paused (enkash.sending off): nothing is claimed or started */
		room = enkash_sending ? enkash_max_concurrency - in_flight : 0;
		if (ready && room > 0)
		{
			/* places freed: the calls held ready go at once */
			start_ready(&ready, &nready, room, &failed);
			in_flight = enkash_multi_running() - nfinished;
			room = enkash_max_concurrency - in_flight;
		}
		reserve = enkash_sending ? enkash_max_concurrency / RESERVE_FRACTION : 0;
		gathered = ndone >= Max(1, enkash_max_concurrency / GATHER_FRACTION) ||
			in_flight == 0 || TimestampDifferenceExceeds(first_done, now, GATHER_MS);
		if ((ndone > 0 && gathered) || slept ||
			(room + reserve > nready &&
			 TimestampDifferenceExceeds(last_claim, now, CLAIM_POLL_MS)))
		{
			record_and_claim(done, ndone, Max(room + reserve - nready, 0));
			ndone = nfinished = 0;
			enkash_multi_release();
			last_claim = now;
			multi = claimed_multi;
			ordinary = claimed_ordinary;
			claimed_multi = claimed_ordinary = NULL;
			busy = multi != NULL || ordinary != NULL;
			ENKASH_STOP_POINT(multi ? "sender-claim-committed" : NULL);
			/* as many as there are places; the rest are held ready */
			nready += append_calls(&ready, multi);
			room = enkash_sending ? enkash_max_concurrency - (enkash_multi_running() - nfinished) : 0;
			start_ready(&ready, &nready, room, &failed);
		}
		slept = false;
		/* its writes in the statistics, for autovacuum (at most once a second) */
		pgstat_report_stat(false);

		/* Calls that need the ordinary path's decisions, one at a time. */
		on_sigterm = STOP_CANCELLING;
		while (ordinary && !ShutdownRequestPending)
		{
			QueuedCall *call = ordinary;

			send_ordinary(call);
			ordinary = call->next;
			forget_call(call);
		}
		calls_of_own_done();
		/* told to stop before: those not sent are put back with the rest */
		nready += append_calls(&ready, ordinary);

		if (enkash_multi_running() > nfinished)
		{
			pgstat_report_activity(STATE_RUNNING, "enkash: sending queued requests");
			enkash_multi_wait(ndone > 0 ? GATHER_MS : CLAIM_POLL_MS);
		}
		else if (!busy && failed == NULL && ndone == 0)
		{
			pgstat_report_activity(STATE_IDLE, NULL);
			on_sigterm = ready ? STOP_AT_TOP : STOP_NOW;
			if (!ShutdownRequestPending)
				enkash_outbox_sleep(1000);
			on_sigterm = STOP_AT_TOP;
			slept = true;
		}
	}
}
