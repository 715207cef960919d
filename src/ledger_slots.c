/*-------------------------------------------------------------------------
 *
 * ledger_slots.c
 *	  The slots in shared memory through which backends hand the worker
 *	  their keys and audit rows, and the wait for its answer.
 *
 * A backend fills a slot in shared memory (claim a key, record a send,
 * record an outcome, or an audit row), wakes the worker and, for money,
 * waits until the worker has committed it (its own latch is set then).
 * The worker takes every slot that is ready and writes them in one
 * transaction: new keys with one statement, outcomes and audit rows with
 * one per kind of row, the rest one at a time, each in a subtransaction (if
 * a statement over many rows fails, its slots go one at a time too, so that
 * one bad slot does not sink the rest); then it commits: many sessions
 * share one commit.  The rows therefore outlive the caller's transaction,
 * cancellation or death, which is what money needs.
 *
 * A slot is owned by its backend while FILLING and after DONE, and by the
 * worker while SUBMITTED.  A backend that stops waiting (cancelled) marks it
 * ABANDONED; the worker then processes it anyway and frees it, and undoes a
 * claim that can no longer be followed by a send.
 *
 *-------------------------------------------------------------------------
 */
#include "ledger_internal.h"

#include "miscadmin.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/proc.h"
#include "storage/shmem.h"
#include "utils/timestamp.h"
#include "utils/wait_event.h"

/* Waiting for a worker that is not there ends after this long. */
#define WORKER_ABSENT_LIMIT_MS 10000

/*
 * Which fields are kept whole or not at all (a key cut short would be
 * another key); the others may be cut (text) or noted (JSON).
 */
static const struct
{
	const char *name;
	bool		exact;
}			slot_fields[NUM_FIELDS] = {
	[F_ENDPOINT] = {"endpoint", true},
	[F_KEY] = {"idempotency key", true},
	[F_FINGERPRINT] = {"fingerprint", true},
	[F_ROLE] = {"role", true},
	[F_REQUEST] = {"request", false},
	[F_RESPONSE] = {"response", false},
	[F_OUTCOME] = {"outcome", true},
	[F_CODE] = {"EnKash code", false},
	[F_MESSAGE] = {"message", false},
	[F_SQLSTATE] = {"SQLSTATE", true},
	[F_PAYLOAD] = {"payload", false},
	[F_ERR_SQLSTATE] = {"error SQLSTATE", true},
	[F_ERR_MESSAGE] = {"error message", false},
	[F_ERR_DETAIL] = {"error detail", false},
};

LedgerShared *ledger = NULL;

/* This backend's slot while it fills it or waits for its answer. */
static LedgerSlot *held_slot = NULL;

static void
ledger_shmem_first(void *ptr)
{
	LedgerShared *first = ptr;

	memset(first, 0, offsetof(LedgerShared, slots));
	first->lock = enkash_lock(ENKASH_LOCK_LEDGER);
	first->next_seq = 1;
	ConditionVariableInit(&first->freed);
	for (int i = 0; i < LEDGER_SLOTS; i++)
	{
		first->slots[i].state = SLOT_FREE;
		first->slots[i].used = 0;
	}
}

const EnkashSharedPart enkash_ledger_part = {
	"enkash ledger", sizeof(LedgerShared), ledger_shmem_first, (void **) &ledger
};

/* ---------------------------------------------------------------------
 * Slot contents
 * ---------------------------------------------------------------------
 */

/* Empties a slot, wiping what it held. */
void
slot_reset_fields(LedgerSlot *slot)
{
	explicit_bzero(slot->data, slot->used);
	slot->used = 0;
	for (int i = 0; i < NUM_FIELDS; i++)
	{
		slot->off[i] = -1;
		slot->binary[i] = false;
	}
	slot->mask_response = false;
}

/* What is stored instead of JSON too large to keep: a note of its size. */
const char *
size_note(char *note, size_t bytes)
{
	snprintf(note, SIZE_NOTE_MAX, "{\"truncated\": true, \"bytes\": %zu}", bytes);
	return note;
}

/*
 * A field that cannot be stored whole is refused: the slot is given back
 * if this backend was filling it, and nothing is recorded or sent.
 */
enkash_noreturn
static void
slot_refuse(LedgerSlot *slot, SlotField field, size_t len)
{
	if (slot == held_slot)
	{
		LWLockAcquire(ledger->lock, LW_EXCLUSIVE);
		slot->state = SLOT_FREE;
		LWLockRelease(ledger->lock);
		held_slot = NULL;
		ConditionVariableSignal(&ledger->freed);
	}
	ereport(ERROR,
			(errcode(ERRCODE_STRING_DATA_RIGHT_TRUNCATION),
			 errmsg("the %s is too long to be recorded; nothing was sent", slot_fields[field].name),
			 errdetail("It has %zu bytes; at most %d can be recorded.", len, SLOT_EXACT_MAX)));
}

/*
 * Stores a text field.  An exact field that does not fit is an error; JSON
 * that does not fit is replaced by a note of its size (half a document is
 * worse than none); other text is cut at a character boundary.  Nothing is
 * ever written past the slot's data.
 */
void
slot_put(LedgerSlot *slot, SlotField field, const char *value, bool is_json)
{
	char		note[SIZE_NOTE_MAX];
	bool		exact = slot_fields[field].exact;
	int			room = (exact ? LEDGER_DATA : SLOT_CUT_LIMIT) - slot->used - 1;
	size_t		len;

	slot->off[field] = -1;
	if (value == NULL)
		return;
	len = strlen(value);
	if (exact)
	{
		if (len > SLOT_EXACT_MAX || room < 0 || len > (size_t) room)
			slot_refuse(slot, field, len);
	}
	else if (room < 0)
		return;
	else if (is_json && (len > (size_t) room || len > LEDGER_DATA / 2))
	{
		value = size_note(note, len);
		len = strlen(note);
		if (len > (size_t) room)
			return;
	}
	else if (len > (size_t) room)
		len = pg_mbcliplen(value, len, room);
	memcpy(slot->data + slot->used, value, len);
	slot->data[slot->used + len] = '\0';
	slot->off[field] = slot->used;
	slot->used += len + 1;
}

/*
 * Stores a jsonb datum as it is, so that the worker need not parse it
 * again; one that does not fit becomes the note of its size, as text.
 */
void
slot_put_jsonb(LedgerSlot *slot, SlotField field, const Jsonb *value)
{
	int			start = MAXALIGN(slot->used);
	Size		size;

	if (value == NULL)
	{
		slot->off[field] = -1;
		return;
	}
	size = VARSIZE(value);
	if (size > LEDGER_DATA / 2 || start + size > SLOT_CUT_LIMIT)
	{
		char		note[SIZE_NOTE_MAX];

		slot_put(slot, field, size_note(note, size), true);
		return;
	}
	memcpy(slot->data + start, value, size);
	slot->off[field] = start;
	slot->binary[field] = true;
	slot->used = start + size;
}

const char *
slot_get(LedgerSlot *slot, SlotField field)
{
	return slot->off[field] < 0 ? NULL : slot->data + slot->off[field];
}

void
slot_put_exchange(LedgerSlot *slot, const LedgerExchange *x)
{
	slot_put(slot, F_ENDPOINT, x->endpoint, false);
	slot_put(slot, F_KEY, x->key, false);
	slot_put(slot, F_OUTCOME, x->outcome, false);
	slot_put(slot, F_CODE, x->enkash_code, false);
	slot_put(slot, F_MESSAGE, x->message, false);
	slot_put(slot, F_SQLSTATE, x->sqlstate, false);
	slot_put(slot, F_REQUEST, x->request, true);
	slot_put_jsonb(slot, F_RESPONSE, x->response);
	slot->mask_response = x->mask_response;
	slot->http_status = x->http_status;
	slot->latency_ms = x->latency_ms;
}

/* ---------------------------------------------------------------------
 * Backend side
 * ---------------------------------------------------------------------
 */

static bool
worker_alive(void)
{
	bool		alive;

	LWLockAcquire(ledger->lock, LW_SHARED);
	alive = ledger->worker_pid != 0;
	LWLockRelease(ledger->lock);
	return alive;
}

static void slot_abandon(LedgerSlot *slot);

/*
 * A backend that exits (FATAL, terminated) while it fills or waits for a
 * slot gives it up, as a cancel does: otherwise the slot would stay taken
 * for the server's life.
 */
static void
slot_exit(int code, Datum arg)
{
	if (held_slot == NULL)
		return;
	if (LWLockHeldByMe(ledger->lock))
		LWLockRelease(ledger->lock);
	slot_abandon(held_slot);
}

/*
 * Takes a free slot, waiting for one if all are busy; NULL if none frees
 * up because the worker is away, or within max_wait_ms (-1: no limit but
 * the worker's absence).
 */
LedgerSlot *
slot_acquire(LedgerOp op, bool reply, int max_wait_ms)
{
	static bool exit_callback = false;
	TimestampTz started = GetCurrentTimestamp();

	/* (not before_shmem_exit: this may run inside PG_ENSURE_ERROR_CLEANUP) */
	if (!exit_callback)
	{
		on_shmem_exit(slot_exit, (Datum) 0);
		exit_callback = true;
	}
	/* one an error left behind while it was being filled */
	if (held_slot != NULL)
		slot_abandon(held_slot);
	ConditionVariablePrepareToSleep(&ledger->freed);
	for (;;)
	{
		LWLockAcquire(ledger->lock, LW_EXCLUSIVE);
		for (int i = 0; i < LEDGER_SLOTS; i++)
		{
			LedgerSlot *slot = &ledger->slots[i];

			if (slot->state == SLOT_FREE)
			{
				slot->state = SLOT_FILLING;
				slot->op = op;
				slot->reply = reply;
				slot->pid = MyProcPid;
				slot->waiter = MyLatch;
				ledger->slots_used = Max(ledger->slots_used, i + 1);
				slot->key_id = slot->audit_id = 0;
				slot->verdict = LEDGER_ERROR;
				slot->processed = slot->undone = false;
				slot->seq = 0;
				slot_reset_fields(slot);
				held_slot = slot;
				LWLockRelease(ledger->lock);
				ConditionVariableCancelSleep();
				return slot;
			}
		}
		LWLockRelease(ledger->lock);
		if ((max_wait_ms >= 0 &&
			 TimestampDifferenceExceeds(started, GetCurrentTimestamp(), max_wait_ms)) ||
			(!worker_alive() &&
			 TimestampDifferenceExceeds(started, GetCurrentTimestamp(),
										WORKER_ABSENT_LIMIT_MS)))
		{
			ConditionVariableCancelSleep();
			return NULL;
		}
		ConditionVariableTimedSleep(&ledger->freed,
									max_wait_ms >= 0 ? Max(max_wait_ms, 1) : 1000,
									enkash_wait_event(ENKASH_WAIT_LEDGER_SLOT));
	}
}

void
slot_submit(LedgerSlot *slot)
{
	Latch	   *latch;

	LWLockAcquire(ledger->lock, LW_EXCLUSIVE);
	slot->seq = ledger->next_seq++;
	slot->state = SLOT_SUBMITTED;
	latch = ledger->worker_latch;
	/* a gathering worker comes back for an audit row nobody waits for */
	if (ledger->gathering && slot->op == OP_AUDIT && !slot->reply &&
		++ledger->gathered < LEDGER_GATHER_SLOTS)
		latch = NULL;
	LWLockRelease(ledger->lock);
	if (!slot->reply)
		held_slot = NULL;		/* the worker frees it */
	if (latch)
		SetLatch(latch);
}

/* Frees a slot; what a look-up's answer left in it is wiped first. */
void
slot_free(LedgerSlot *slot)
{
	if (slot->mask_response)
		explicit_bzero(slot->data, slot->used);
	slot->used = 0;
	slot->mask_response = false;
	slot->state = SLOT_FREE;
}

void
slot_release(LedgerSlot *slot)
{
	LWLockAcquire(ledger->lock, LW_EXCLUSIVE);
	slot_free(slot);
	LWLockRelease(ledger->lock);
	held_slot = NULL;
	ConditionVariableSignal(&ledger->freed);
}

/*
 * Gives up on a slot: the worker will process it and free it.  A claim
 * answered but not heard (a cancel just as it came) goes back to the
 * worker too, which undoes it.
 */
static void
slot_abandon(LedgerSlot *slot)
{
	Latch	   *latch = NULL;
	bool		freed = false;

	LWLockAcquire(ledger->lock, LW_EXCLUSIVE);
	if (slot->state == SLOT_FILLING ||
		(slot->state == SLOT_DONE && !needs_undo(slot)))
	{
		slot_free(slot);
		freed = true;
	}
	else
	{
		slot->state = SLOT_ABANDONED;
		latch = ledger->worker_latch;
	}
	LWLockRelease(ledger->lock);
	held_slot = NULL;
	if (freed)
		ConditionVariableSignal(&ledger->freed);
	if (latch)
		SetLatch(latch);
}

/*
 * Waits until the worker has committed the slot.  Returns false if the
 * worker has been away for too long; the slot is then abandoned to it.
 * An interrupt (cancel, timeout) abandons the slot and propagates.  The
 * worker sets this backend's latch when its slot is done, so a commit
 * wakes only the backends it answers.
 */
bool
slot_wait(LedgerSlot *slot)
{
	volatile TimestampTz absent_since = 0;
	volatile bool done = false;

	PG_TRY();
	{
		for (;;)
		{
			SlotState	state;

			LWLockAcquire(ledger->lock, LW_SHARED);
			state = slot->state;
			LWLockRelease(ledger->lock);
			if (state == SLOT_DONE)
			{
				done = true;
				break;
			}

			if (!worker_alive())
			{
				TimestampTz now = GetCurrentTimestamp();

				if (absent_since == 0)
					absent_since = now;
				/* a process told to stop does not wait for a worker that is gone */
				if (ShutdownRequestPending ||
					TimestampDifferenceExceeds(absent_since, now, WORKER_ABSENT_LIMIT_MS))
					break;		/* given up; not "return": PG_END_TRY must run */
			}
			else
				absent_since = 0;
			(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
							 1000, enkash_wait_event(ENKASH_WAIT_LEDGER_WORKER));
			ResetLatch(MyLatch);
			CHECK_FOR_INTERRUPTS();
		}
	}
	PG_CATCH();
	{
		slot_abandon(slot);
		PG_RE_THROW();
	}
	PG_END_TRY();
	if (!done)
		slot_abandon(slot);
	return done;
}

/* The database the worker runs in, or InvalidOid while it is away. */
Oid
enkash_ledger_worker_database(void)
{
	Oid			dboid;

	LWLockAcquire(ledger->lock, LW_SHARED);
	dboid = ledger->worker_dboid;
	LWLockRelease(ledger->lock);
	return dboid;
}

/* Whether the worker has marked a past life's in-flight keys unknown. */
bool
keys_swept(void)
{
	bool		swept;

	LWLockAcquire(ledger->lock, LW_SHARED);
	swept = ledger->swept;
	LWLockRelease(ledger->lock);
	return swept;
}
