/*-------------------------------------------------------------------------
 *
 * ledger.c
 *	  Idempotency keys and the audit log, through the worker.
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
#include "enkash.h"

#include "access/xact.h"
#include "catalog/namespace.h"
#include "commands/dbcommands.h"
#include "executor/spi.h"
#include "ledger.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "stoppoint.h"
#include "storage/condition_variable.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/proc.h"
#include "storage/procarray.h"
#include "storage/shmem.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/wait_event.h"

#define LEDGER_SLOTS 256
#define LEDGER_DATA 16384

/* Waiting for a worker that is not there ends after this long. */
#define WORKER_ABSENT_LIMIT_MS 10000

/* How long a look-up waits for a free slot for its audit row. */
#define AUDIT_SLOT_WAIT_MS 1000

typedef enum SlotState
{
	SLOT_FREE,
	SLOT_FILLING,
	SLOT_SUBMITTED,
	SLOT_DONE,
	SLOT_ABANDONED
} SlotState;

typedef enum LedgerOp
{
	OP_CLAIM,					/* claim a key; for a new key also the send */
	OP_SENDING,					/* record a send for a key being reconciled */
	OP_FINISH,					/* record the outcome of a key and its send */
	OP_AUDIT					/* one audit row (look-ups, tokens) */
} LedgerOp;

/* Text fields of a slot, stored one after another in data[]. */
typedef enum SlotField
{
	F_ENDPOINT, F_KEY, F_FINGERPRINT, F_ROLE, F_REQUEST, F_RESPONSE,
	F_OUTCOME, F_CODE, F_MESSAGE, F_SQLSTATE,
	F_PAYLOAD, F_ERR_SQLSTATE, F_ERR_MESSAGE, F_ERR_DETAIL,
	NUM_FIELDS
} SlotField;

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

/*
 * An exact field is at most a key's length in bytes, and the fields that
 * may be cut leave room for one of each exact field: those always fit.
 */
#define SLOT_EXACT_MAX (ENKASH_MAX_ID_CHARS * MAX_MULTIBYTE_CHAR_LEN)
#define SLOT_EXACT_RESERVE (NUM_FIELDS * (SLOT_EXACT_MAX + 1))
#define SLOT_CUT_LIMIT (LEDGER_DATA - SLOT_EXACT_RESERVE)
StaticAssertDecl(SLOT_CUT_LIMIT > LEDGER_DATA / 2, "JSON of half a slot must fit");

typedef struct LedgerSlot
{
	SlotState	state;
	LedgerOp	op;
	bool		reply;			/* the backend waits for the answer */
	uint64		seq;			/* submission order */
	int			pid;			/* submitting backend */
	Latch	   *waiter;			/* its latch, set when the answer is in */
	int64		key_id;
	int64		audit_id;
	int			attempt;		/* the key's attempt: fences OP_FINISH */
	int			call_ms;		/* OP_CLAIM: the longest the call can take */
	int			key_state;		/* LedgerState, for OP_FINISH */
	int			http_status;
	double		latency_ms;
	int			verdict;		/* answer: LedgerVerdict */
	bool		processed;		/* the worker has carried out the op */
	bool		undone;			/* ... and undone an abandoned claim */
	int			used;			/* bytes of data[] in use */
	int			off[NUM_FIELDS];	/* offset in data[], -1 for NULL */
	bool		binary[NUM_FIELDS]; /* a jsonb datum, not text */
	bool		mask_response;	/* F_RESPONSE is to be masked by the worker */
	char		data[LEDGER_DATA] pg_attribute_aligned(MAXIMUM_ALIGNOF);
} LedgerSlot;

typedef struct LedgerShared
{
	LWLock	   *lock;
	uint64		next_seq;
	int			worker_pid;
	Oid			worker_dboid;
	Latch	   *worker_latch;
	bool		swept;			/* in_flight keys of a past life made unknown */
	int			slots_used;		/* slots[] beyond this were never taken */
	Latch	   *launcher_latch;
	Oid			dropping_dboid; /* DROP DATABASE under way: stand aside */
	TimestampTz dropping_until;
	ConditionVariable freed;	/* a slot became free */
	ConditionVariable outbox;	/* a transaction that queued requests committed */
	LedgerSlot	slots[LEDGER_SLOTS];
} LedgerShared;

static LedgerShared *ledger = NULL;

/* This backend's slot while it fills it or waits for its answer. */
static LedgerSlot *held_slot = NULL;

Size
enkash_ledger_shmem_size(void)
{
	return MAXALIGN(sizeof(LedgerShared));
}

void
enkash_ledger_shmem_init(void)
{
	bool		found;

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	ledger = ShmemInitStruct("enkash ledger", sizeof(LedgerShared), &found);
	if (!found)
	{
		memset(ledger, 0, offsetof(LedgerShared, slots));
		ledger->lock = &(GetNamedLWLockTranche("enkash"))[1].lock;
		ledger->next_seq = 1;
		ConditionVariableInit(&ledger->freed);
		ConditionVariableInit(&ledger->outbox);
		for (int i = 0; i < LEDGER_SLOTS; i++)
			ledger->slots[i].state = SLOT_FREE;
	}
	LWLockRelease(AddinShmemInitLock);
}

/* ---------------------------------------------------------------------
 * Slot contents
 * ---------------------------------------------------------------------
 */

static void
slot_reset_fields(LedgerSlot *slot)
{
	slot->used = 0;
	for (int i = 0; i < NUM_FIELDS; i++)
	{
		slot->off[i] = -1;
		slot->binary[i] = false;
	}
	slot->mask_response = false;
}

#define SIZE_NOTE_MAX 64

/* What is stored instead of JSON too large to keep: a note of its size. */
static const char *
size_note(char *note, size_t bytes)
{
	snprintf(note, SIZE_NOTE_MAX, "{\"truncated\": true, \"bytes\": %zu}", bytes);
	return note;
}

/*
 * A field that cannot be stored whole is refused: the slot is given back
 * if this backend was filling it, and nothing is recorded or sent.
 */
pg_attribute_noreturn()
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
static void
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
static void
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

static const char *
slot_get(LedgerSlot *slot, SlotField field)
{
	return slot->off[field] < 0 ? NULL : slot->data + slot->off[field];
}

static void
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
static LedgerSlot *
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
									PG_WAIT_EXTENSION);
	}
}

static void
slot_submit(LedgerSlot *slot)
{
	Latch	   *latch;

	LWLockAcquire(ledger->lock, LW_EXCLUSIVE);
	slot->seq = ledger->next_seq++;
	slot->state = SLOT_SUBMITTED;
	latch = ledger->worker_latch;
	LWLockRelease(ledger->lock);
	if (!slot->reply)
		held_slot = NULL;		/* the worker frees it */
	if (latch)
		SetLatch(latch);
}

/* Frees a slot; what a look-up's answer left in it is wiped first. */
static void
slot_free(LedgerSlot *slot)
{
	if (slot->mask_response)
		explicit_bzero(slot->data, slot->used);
	slot->used = 0;
	slot->mask_response = false;
	slot->state = SLOT_FREE;
}

static void
slot_release(LedgerSlot *slot)
{
	LWLockAcquire(ledger->lock, LW_EXCLUSIVE);
	slot_free(slot);
	LWLockRelease(ledger->lock);
	held_slot = NULL;
	ConditionVariableSignal(&ledger->freed);
}

static bool needs_undo(const LedgerSlot *slot);

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
static bool
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
							 1000, PG_WAIT_EXTENSION);
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

/* Money is recorded in the worker's database; calls elsewhere are refused. */
static void
check_database(void)
{
	Oid			dboid;

	LWLockAcquire(ledger->lock, LW_SHARED);
	dboid = ledger->worker_dboid;
	LWLockRelease(ledger->lock);
	if (!OidIsValid(dboid))
		dboid = get_database_oid(enkash_database, true);
	if (dboid != MyDatabaseId)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("enkash records money calls in database \"%s\"; this is database \"%s\"",
						enkash_database, get_database_name(MyDatabaseId)),
				 errhint("Call money functions in database \"%s\", or set enkash.database and restart.",
						 enkash_database)));
}

pg_attribute_noreturn()
static void
worker_unavailable(void)
{
	ereport(ERROR,
			(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
			 errmsg("the enkash worker is not running, so the call could not be recorded; nothing was sent"),
			 errhint("Check the server log for \"enkash worker\" and that database \"%s\" exists and has the extension.",
					 enkash_database)));
}

pg_attribute_noreturn()
static void
worker_unavailable_after(const char *endpoint)
{
	ereport(ERROR,
			(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
			 errmsg("the enkash worker is not running, so the %s call could not be recorded", endpoint),
			 errdetail("EnKash answered, but its answer is withheld until it can be recorded.")));
}

/*
 * The calling role's name, kept: a finish may be recorded from an error's
 * PG_CATCH, where the catalog is better left unread, and its claim has
 * looked the name up already.  The session's role (SET ROLE included), not
 * the current user: inside a SECURITY DEFINER function (enkash_transactions,
 * enkash_sync_transactions) that is the function's owner, not who called.
 */
static const char *
calling_role(void)
{
	static Oid	role = InvalidOid;
	static char name[NAMEDATALEN];

	if (GetOuterUserId() != role)
	{
		strlcpy(name, GetUserNameFromId(GetOuterUserId(), false), sizeof(name));
		role = GetOuterUserId();
	}
	return name;
}

static char *
copy_or_null(const char *s)
{
	return s ? pstrdup(s) : NULL;
}

/*
 * The longest a claimed call can go on before its request has surely left
 * and been answered, by this process's settings: two exchanges (a look-up
 * and the send when reconciling, or a send and its one retry after a
 * refused token), each made of a rate-limit wait, a wait for another
 * process's token fetch, a token fetch and the POST, every one bounded by
 * the connect and total timeouts.  Until then a live owner is trusted.
 */
int
enkash_longest_call_ms(void)
{
	int64		ms = (int64) 2 * 5 * ((int64) enkash_connect_timeout_ms + enkash_timeout_ms);

	return (int) Min(ms, INT_MAX);
}

/*
 * The current transaction's commit is to be flushed (and reach synchronous
 * standbys) before anything goes on, whatever synchronous_commit the server,
 * database or role says: a claim that a crash could undo after its request
 * left would let the call be sent twice.  remote_apply is kept.
 */
void
enkash_durable_commit(void)
{
	if (synchronous_commit < SYNCHRONOUS_COMMIT_REMOTE_FLUSH)
		(void) set_config_option("synchronous_commit", "on", PGC_SUSET, PGC_S_SESSION,
								 GUC_ACTION_LOCAL, true, 0, false);
}

void
enkash_ledger_claim(const char *endpoint, const char *key,
					const char *fingerprint, const char *request,
					LedgerClaim *claim)
{
	LedgerSlot *slot;

	enkash_require_preload();
	check_database();

	slot = slot_acquire(OP_CLAIM, true, -1);
	if (slot == NULL)
		worker_unavailable();
	slot_put(slot, F_ENDPOINT, endpoint, false);
	slot_put(slot, F_KEY, key, false);
	slot_put(slot, F_FINGERPRINT, fingerprint, false);
	slot_put(slot, F_ROLE, calling_role(), false);
	slot_put(slot, F_REQUEST, request, true);
	slot->call_ms = enkash_longest_call_ms();
	slot_submit(slot);
	if (!slot_wait(slot))
		worker_unavailable();

	memset(claim, 0, sizeof(*claim));
	claim->verdict = (LedgerVerdict) slot->verdict;
	claim->key_id = slot->key_id;
	claim->attempt = slot->attempt;
	claim->audit_id = slot->audit_id;
	strlcpy(claim->sqlstate, slot_get(slot, F_ERR_SQLSTATE) ?
			slot_get(slot, F_ERR_SQLSTATE) : "", sizeof(claim->sqlstate));
	claim->payload = copy_or_null(slot_get(slot, F_PAYLOAD));
	claim->message = copy_or_null(slot_get(slot, F_ERR_MESSAGE));
	claim->detail = copy_or_null(slot_get(slot, F_ERR_DETAIL));
	slot_release(slot);
}

/* Records that a reconciled key is being sent after all; returns the audit id. */
int64
enkash_ledger_sending(int64 key_id, const char *endpoint, const char *key,
					  const char *request)
{
	LedgerSlot *slot = slot_acquire(OP_SENDING, true, -1);
	int64		audit_id;
	int			verdict;

	if (slot == NULL)
		worker_unavailable();
	slot->key_id = key_id;
	slot_put(slot, F_ENDPOINT, endpoint, false);
	slot_put(slot, F_KEY, key, false);
	slot_put(slot, F_ROLE, calling_role(), false);
	slot_put(slot, F_REQUEST, request, true);
	slot_submit(slot);
	if (!slot_wait(slot))
		worker_unavailable();
	audit_id = slot->audit_id;
	verdict = slot->verdict;
	slot_release(slot);
	if (verdict != LEDGER_CLAIMED)
		worker_unavailable();
	return audit_id;
}

/*
 * An outcome that came after another attempt had taken the key over: its
 * owner was presumed gone (ended, or past the longest its call could take).
 */
static void
superseded_warning(const char *key)
{
	ereport(WARNING,
			(errmsg("the outcome of key \"%s\" came after another attempt had taken the key over; it was not recorded on the key",
					key ? key : "?"),
			 errdetail("The answer is in enkash.audit_log as \"superseded\"; the key keeps the later attempt's record."),
			 errhint("Compare the two in enkash.audit_log; EnKash's record of the reference number decides.")));
}

/*
 * Records the outcome of a key and of its send.  With wait, returns once it
 * is committed (or warns that the worker is away: the key then stays
 * in_flight, and so is treated as unknown later: safe, if slower).  The
 * outcome is recorded on the key only if attempt is still the key's
 * attempt: an owner that was taken over keeps its answer to the audit log.
 */
void
enkash_ledger_finish(int64 key_id, int attempt, int64 audit_id, LedgerState state,
					 const char *payload, const char *err_sqlstate,
					 const char *err_message, const char *err_detail,
					 const LedgerExchange *exchange, bool wait)
{
	LedgerSlot *slot = slot_acquire(OP_FINISH, wait, -1);

	if (slot == NULL)
	{
		ereport(WARNING,
				(errmsg("the enkash worker is away; the outcome of key \"%s\" was not recorded",
						exchange->key ? exchange->key : "?"),
				 errdetail("The key stays in flight and will count as unknown: EnKash is asked before it is sent again.")));
		return;
	}
	slot->key_id = key_id;
	slot->attempt = attempt;
	slot->audit_id = audit_id;
	slot->key_state = state;
	slot_put(slot, F_ROLE, calling_role(), false);
	slot_put_exchange(slot, exchange);
	slot_put(slot, F_PAYLOAD, payload, true);
	slot_put(slot, F_ERR_SQLSTATE, err_sqlstate, false);
	slot_put(slot, F_ERR_MESSAGE, err_message, false);
	slot_put(slot, F_ERR_DETAIL, err_detail, false);
	slot_submit(slot);
	if (!wait)
		return;
	if (!slot_wait(slot))
	{
		ereport(WARNING,
				(errmsg("the enkash worker did not confirm the outcome of key \"%s\"",
						exchange->key ? exchange->key : "?"),
				 errdetail("The outcome will be recorded when the worker returns; until then the key counts as unknown.")));
		return;
	}
	if (slot->verdict == LEDGER_ERROR)
	{
		char	   *reason = pstrdup(slot_get(slot, F_ERR_MESSAGE) ?
									 slot_get(slot, F_ERR_MESSAGE) : "The worker gave no reason.");
		bool		lost = slot_get(slot, F_ERR_SQLSTATE) &&
			strcmp(slot_get(slot, F_ERR_SQLSTATE),
				   unpack_sql_state(ERRCODE_ENKASH_OUTCOME_UNKNOWN)) == 0;

		slot_release(slot);
		/*
		 * A success whose key is gone is not one the caller may rely on: the
		 * same key would be claimed afresh.  (A failure's own error goes on.)
		 */
		ereport(lost && state == LEDGER_SUCCEEDED ? ERROR : WARNING,
				(errcode(ERRCODE_ENKASH_OUTCOME_UNKNOWN),
				 errmsg("the outcome of key \"%s\" could not be recorded in enkash.idempotency_keys",
						exchange->key ? exchange->key : "?"),
				 errdetail("%s; EnKash's answer is in enkash.audit_log.", reason),
				 errhint("Treat the outcome as unknown: check with EnKash (enkash_transactions) before using the key again.")));
		return;
	}
	else if (slot->verdict == LEDGER_SUPERSEDED)
		superseded_warning(exchange->key);
	slot_release(slot);
}

/*
 * An audit row for a call that needs no key.  Look-ups and tokens do not
 * wait for it; secret-bearing calls do (wait), so that their record exists
 * before the caller has the card data.
 */
void
enkash_ledger_audit(const LedgerExchange *exchange, bool wait)
{
	LedgerSlot *slot;

	if (ledger == NULL)
		return;
	/*
	 * A look-up does not wait for its row to be committed, only, when every
	 * slot is taken, briefly for one to free up: the worker then sets the
	 * pace rather than losing rows.  Past that, it says so and goes on.
	 */
	slot = slot_acquire(OP_AUDIT, wait, wait ? -1 : AUDIT_SLOT_WAIT_MS);
	if (slot == NULL && wait)
		worker_unavailable_after(exchange->endpoint);
	if (slot == NULL)
	{
		ereport(LOG,
				(errmsg("enkash: the worker is behind; an audit row for %s was not recorded",
						exchange->endpoint)));
		return;
	}
	slot_put(slot, F_ROLE, calling_role(), false);
	slot_put_exchange(slot, exchange);
	slot_submit(slot);
	if (wait)
	{
		if (!slot_wait(slot))
			worker_unavailable_after(exchange->endpoint);
		slot_release(slot);
	}
}

/*
 * DROP DATABASE of the workers' database: the launcher stops them and
 * stays away for a while, so that the drop does not find them connected.
 */
void
enkash_ledger_note_drop(Oid dboid)
{
	Latch	   *latch = NULL;

	if (ledger == NULL)
		return;
	LWLockAcquire(ledger->lock, LW_EXCLUSIVE);
	if (dboid == ledger->worker_dboid)
	{
		ledger->dropping_dboid = dboid;
		ledger->dropping_until = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), 10000);
		latch = ledger->launcher_latch;
	}
	LWLockRelease(ledger->lock);
	if (latch)
		SetLatch(latch);
}

/* The database being dropped, if the launcher should stay away from it. */
Oid
enkash_ledger_dropping(void)
{
	Oid			dboid = InvalidOid;

	LWLockAcquire(ledger->lock, LW_SHARED);
	if (GetCurrentTimestamp() < ledger->dropping_until)
		dboid = ledger->dropping_dboid;
	LWLockRelease(ledger->lock);
	return dboid;
}

void
enkash_ledger_attach_launcher(void)
{
	LWLockAcquire(ledger->lock, LW_EXCLUSIVE);
	ledger->launcher_latch = MyLatch;
	LWLockRelease(ledger->lock);
}

/* The senders sleep here between queued requests. */
void
enkash_outbox_wake(void)
{
	if (ledger)
		ConditionVariableBroadcast(&ledger->outbox);
}

void
enkash_outbox_sleep(long timeout_ms)
{
	ConditionVariablePrepareToSleep(&ledger->outbox);
	ConditionVariableTimedSleep(&ledger->outbox, timeout_ms, PG_WAIT_EXTENSION);
	ConditionVariableCancelSleep();
}

/* ---------------------------------------------------------------------
 * Worker side
 * ---------------------------------------------------------------------
 */

static void
worker_detach(int code, Datum arg)
{
	LWLockAcquire(ledger->lock, LW_EXCLUSIVE);
	if (ledger->worker_pid == MyProcPid)
	{
		ledger->worker_pid = 0;
		ledger->worker_latch = NULL;
		ledger->worker_dboid = InvalidOid;
	}
	LWLockRelease(ledger->lock);
}

void
enkash_ledger_attach_worker(void)
{
	LWLockAcquire(ledger->lock, LW_EXCLUSIVE);
	ledger->worker_pid = MyProcPid;
	ledger->worker_latch = MyLatch;
	ledger->worker_dboid = MyDatabaseId;
	LWLockRelease(ledger->lock);
	before_shmem_exit(worker_detach, (Datum) 0);
}

/* Prepared statements, kept for the worker's life. */
static SPIPlanPtr plan_claim_insert;
static SPIPlanPtr plan_claim_select;
static SPIPlanPtr plan_claim_retake;
static SPIPlanPtr plan_claim_unknown;
static SPIPlanPtr plan_audit_sent;
static SPIPlanPtr plan_finish_key;
static SPIPlanPtr plan_release_key;
static SPIPlanPtr plan_answer_lost;
static SPIPlanPtr plan_audit;
static SPIPlanPtr plan_audits;
/* ... and the outbox sender's, many rows to a statement */
static SPIPlanPtr plan_claim_inserts;
static SPIPlanPtr plan_audits_sent;
static SPIPlanPtr plan_finish_keys;
static SPIPlanPtr plan_release_keys;

/* The columns of plan_claim_inserts and plan_audits_sent. */
static const Oid claim_types[] = {TEXTOID, TEXTOID, TEXTOID, JSONBOID, TEXTOID, INT4OID, FLOAT8OID};
static const Oid sent_types[] = {TEXTOID, TEXTOID, TEXTOID, JSONBOID, INT8OID};

/* The columns of an audit row as plan_audit takes them, in order. */
#define AUDIT_COLUMNS 13
StaticAssertDecl(AUDIT_COLUMNS <= ENKASH_COLUMNS_MAX, "audit rows are written as columns");
#define AUDIT_COLUMN_NAMES \
	"role, endpoint, idempotency_key, key_id, sent_id, request, outcome, " \
	"http_status, enkash_code, message, sqlstate, latency_ms, response"
static const Oid audit_types[AUDIT_COLUMNS] = {
	TEXTOID, TEXTOID, TEXTOID, INT8OID, INT8OID, JSONBOID, TEXTOID, INT4OID,
	TEXTOID, TEXTOID, TEXTOID, FLOAT8OID, JSONBOID
};

/* A statement prepared and kept for the process's life. */
static SPIPlanPtr
keep_plan(const char *sql, int nargs, const Oid *types, int options)
{
	SPIPlanPtr	plan = SPI_prepare_cursor(sql, nargs, (Oid *) types, options);

	if (plan == NULL || SPI_keepplan(plan) != 0)
		elog(ERROR, "%s could not prepare \"%s\": %s",
			 MyBgworkerEntry ? MyBgworkerEntry->bgw_type : "enkash", sql,
			 SPI_result_code_string(SPI_result));
	return plan;
}

SPIPlanPtr
enkash_keep_plan(const char *sql, int nargs, const Oid *types)
{
	return keep_plan(sql, nargs, types, 0);
}

/* ---------------------------------------------------------------------
 * Many rows to a statement: one array argument per column
 * ---------------------------------------------------------------------
 */

/*
 * The statements the workers run for many rows at a time (the claim, the
 * batches) have generic plans, made once rather than at every execution
 * (planning was most of a small batch's cost).  A generic plan knows
 * neither the arrays' length nor the tables' size, and one made while a
 * table was small joins by scanning all of it, and keeps doing so as it
 * grows.  Plans may be remade at any execution, so these statements always
 * run with whole-table scans and hash and merge joins ruled out
 * (enkash_execute_pinned): then rows are reached by index, which is right
 * at any size.
 */
SPIPlanPtr
enkash_keep_generic_plan(const char *sql, int nargs, const Oid *types)
{
	return keep_plan(sql, nargs, types, CURSOR_OPT_GENERIC_PLAN);
}

/* Runs a plan of enkash_keep_generic_plan with its shape pinned; the SPI result code. */
int
enkash_execute_pinned(SPIPlanPtr plan, Datum *args, const char *nulls)
{
	int			level = NewGUCNestLevel();
	int			rc;

	/* an error undoes these with the (sub)transaction */
	(void) set_config_option("enable_seqscan", "off", PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	(void) set_config_option("enable_hashjoin", "off", PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	(void) set_config_option("enable_mergejoin", "off", PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	rc = SPI_execute_plan(plan, args, nulls, false, 0);
	AtEOXact_GUC(true, level);
	return rc;
}

/* A statement taking one array of each of types[] ($1 ... $ncols). */
SPIPlanPtr
enkash_prepare_columns(const char *sql, const Oid *types, int ncols)
{
	Oid			arrays[ENKASH_COLUMNS_MAX];

	Assert(ncols <= ENKASH_COLUMNS_MAX);
	for (int c = 0; c < ncols; c++)
		arrays[c] = get_array_type(types[c]);
	return enkash_keep_generic_plan(sql, ncols, arrays);
}

void
enkash_columns_init(EnkashColumns *cols, const Oid *types, int ncols, int size)
{
	Assert(ncols <= ENKASH_COLUMNS_MAX);
	cols->types = types;
	cols->ncols = ncols;
	cols->count = 0;
	cols->size = Max(size, 1);
	for (int c = 0; c < ncols; c++)
	{
		cols->values[c] = palloc(sizeof(Datum) * cols->size);
		cols->nulls[c] = palloc(sizeof(bool) * cols->size);
	}
}

/* Adds a row, given as SPI arguments (nulls: 'n' or ' '). */
void
enkash_columns_add(EnkashColumns *cols, const Datum *v, const char *n)
{
	if (cols->count == cols->size)
	{
		cols->size *= 2;
		for (int c = 0; c < cols->ncols; c++)
		{
			cols->values[c] = repalloc(cols->values[c], sizeof(Datum) * cols->size);
			cols->nulls[c] = repalloc(cols->nulls[c], sizeof(bool) * cols->size);
		}
	}
	for (int c = 0; c < cols->ncols; c++)
	{
		cols->values[c][cols->count] = v[c];
		cols->nulls[c][cols->count] = (n[c] == 'n');
	}
	cols->count++;
}

/* Row i as SPI arguments again, for a statement that takes one row. */
void
enkash_columns_row(const EnkashColumns *cols, int i, Datum *v, char *n)
{
	for (int c = 0; c < cols->ncols; c++)
	{
		v[c] = cols->values[c][i];
		n[c] = cols->nulls[c][i] ? 'n' : ' ';
	}
}

/* Runs plan (from enkash_prepare_columns) over the rows; the SPI result code. */
int
enkash_columns_run(const EnkashColumns *cols, SPIPlanPtr plan)
{
	Datum		args[ENKASH_COLUMNS_MAX];
	int			dims[1] = {cols->count};
	int			lbs[1] = {1};

	for (int c = 0; c < cols->ncols; c++)
	{
		int16		typlen;
		bool		typbyval;
		char		typalign;

		get_typlenbyvalalign(cols->types[c], &typlen, &typbyval, &typalign);
		args[c] = PointerGetDatum(construct_md_array(cols->values[c], cols->nulls[c], 1,
													 dims, lbs, cols->types[c],
													 typlen, typbyval, typalign));
	}
	return enkash_execute_pinned(plan, args, NULL);
}

/* The same, and an error unless it returns rc and touches every row given once. */
void
enkash_columns_execute(const EnkashColumns *cols, SPIPlanPtr plan, int rc)
{
	if (enkash_columns_run(cols, plan) != rc || SPI_processed != (uint64) cols->count)
		elog(ERROR, "a statement over %d rows did not write them all (%llu)",
			 cols->count, (unsigned long long) SPI_processed);
}

/*
 * Runs fn(arg) in a subtransaction of the current transaction (SPI
 * connected).  False if it failed: it is rolled back and its error
 * forgotten, for the caller to go one row at a time, which isolates the
 * culprit.  Back in the caller's memory context and resource owner.
 */
bool
enkash_try_together(void (*fn) (void *arg), void *arg)
{
	MemoryContext cxt = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	volatile bool ok = true;

	BeginInternalSubTransaction(NULL);
	PG_TRY();
	{
		fn(arg);
		ReleaseCurrentSubTransaction();
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		ereport(DEBUG1,
				(errmsg("%s: a statement over many rows failed, going one row at a time: %s",
						MyBgworkerEntry ? MyBgworkerEntry->bgw_type : "enkash",
						edata->message)));
		FreeErrorData(edata);
		ok = false;
	}
	PG_END_TRY();
	MemoryContextSwitchTo(cxt);
	CurrentResourceOwner = owner;
	return ok;
}

static void
prepare_plans(void)
{
	Oid			t7[] = {TEXTOID, TEXTOID, TEXTOID, JSONBOID, TEXTOID, INT4OID, FLOAT8OID};
	Oid			t4[] = {TEXTOID, TEXTOID, FLOAT8OID, FLOAT8OID};
	Oid			t3b[] = {INT8OID, INT4OID, FLOAT8OID};
	Oid			t5[] = {TEXTOID, TEXTOID, TEXTOID, JSONBOID, INT8OID};
	Oid			tf[] = {INT8OID, TEXTOID, JSONBOID, TEXTOID, TEXTOID, TEXTOID, INT4OID, INT4OID};
	Oid			t1[] = {INT8OID};
	Oid			t2r[] = {INT8OID, INT4OID};
	Oid			tl[] = {INT8ARRAYOID, TEXTARRAYOID, TEXTOID};

	if (plan_release_keys)		/* the last one prepared below */
		return;
	plan_claim_insert = enkash_keep_plan(
		"INSERT INTO enkash.idempotency_keys AS k "
		"  (endpoint, key, fingerprint, request, role, owner_pid, state, owner_deadline) "
		"VALUES ($1, $2, $3, $4, $5, $6, 'in_flight', now() + make_interval(secs => $7)) "
		"ON CONFLICT (endpoint, key) DO NOTHING RETURNING id, attempts", 7, t7);
	/* stale: past the owner's deadline, and at least enkash.stale_claim_ms old */
	plan_claim_select = enkash_keep_plan(
		"SELECT id, fingerprint, state, outcome::text, error_sqlstate, error_message, "
		"       error_detail, owner_pid, "
		"       greatest(owner_deadline, updated_at + make_interval(secs => $3)) < now() AS stale, "
		"       updated_at < now() - make_interval(secs => $4) AS grace_over "
		"FROM enkash.idempotency_keys WHERE endpoint = $1 AND key = $2 FOR UPDATE", 4, t4);
	plan_claim_retake = enkash_keep_plan(
		"UPDATE enkash.idempotency_keys SET state = 'in_flight', owner_pid = $2, "
		"  attempts = attempts + 1, updated_at = now(), "
		"  owner_deadline = now() + make_interval(secs => $3) "
		"WHERE id = $1 RETURNING attempts", 3, t3b);
	/* the grace is counted from here; the attempt stays its owner's */
	plan_claim_unknown = enkash_keep_plan(
		"UPDATE enkash.idempotency_keys SET state = 'unknown', owner_pid = NULL, "
		"  owner_deadline = NULL, updated_at = now() WHERE id = $1", 1, t1);
	plan_audit_sent = enkash_keep_plan(
		"INSERT INTO enkash.audit_log (role, endpoint, idempotency_key, request, outcome, key_id) "
		"VALUES ($1, $2, $3, $4, 'sent', $5) RETURNING id", 5, t5);
	plan_finish_key = enkash_keep_plan(
		"UPDATE enkash.idempotency_keys SET state = $2, outcome = $3, error_sqlstate = $4, "
		"  error_message = $5, error_detail = $6, http_status = $7, owner_pid = NULL, "
		"  owner_deadline = NULL, updated_at = now(), "
		"  finished_at = CASE WHEN $2 IN ('succeeded', 'failed') THEN now() END "
		"WHERE id = $1 AND attempts = $8", 8, tf);
	plan_release_key = enkash_keep_plan(
		"DELETE FROM enkash.idempotency_keys WHERE id = $1 AND attempts = $2", 2, t2r);
	/* (by idempotency_key: the audit log's index; a key has few rows) */
	plan_answer_lost = enkash_keep_plan(
		"INSERT INTO enkash.audit_log (" AUDIT_COLUMN_NAMES ") "
		"SELECT s.role, s.endpoint, s.idempotency_key, s.key_id, s.id, NULL, 'unknown', "
		"       NULL, NULL, $3, 'EK006', NULL, NULL "
		"FROM unnest($1, $2) AS k(id, key) "
		"JOIN enkash.audit_log s ON s.idempotency_key = k.key AND s.key_id = k.id "
		"WHERE s.outcome = 'sent' AND NOT EXISTS "
		"  (SELECT FROM enkash.audit_log a "
		"   WHERE a.idempotency_key = s.idempotency_key AND a.sent_id = s.id)",
		3, tl);
	plan_audit = enkash_keep_plan(
		"INSERT INTO enkash.audit_log (" AUDIT_COLUMN_NAMES ") "
		"VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)", AUDIT_COLUMNS,
		(Oid *) audit_types);
	plan_audits = enkash_prepare_columns(
		"INSERT INTO enkash.audit_log (" AUDIT_COLUMN_NAMES ") "
		"SELECT * FROM unnest($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
		audit_types, AUDIT_COLUMNS);

	/* the outbox sender's batches: the statements above, many rows each */
	plan_claim_inserts = enkash_prepare_columns(
		"INSERT INTO enkash.idempotency_keys AS k "
		"  (endpoint, key, fingerprint, request, role, owner_pid, state, owner_deadline) "
		"SELECT e, k, f, r, o, p, 'in_flight', now() + make_interval(secs => d) "
		"FROM unnest($1, $2, $3, $4, $5, $6, $7) AS u(e, k, f, r, o, p, d) "
		"ON CONFLICT (endpoint, key) DO NOTHING RETURNING id, endpoint, key",
		claim_types, lengthof(claim_types));
	plan_audits_sent = enkash_prepare_columns(
		"INSERT INTO enkash.audit_log (role, endpoint, idempotency_key, request, key_id, outcome) "
		"SELECT *, 'sent' FROM unnest($1, $2, $3, $4, $5) RETURNING id, key_id",
		sent_types, lengthof(sent_types));
	plan_finish_keys = enkash_prepare_columns(
		"UPDATE enkash.idempotency_keys k SET state = u.state, outcome = u.outcome, "
		"  error_sqlstate = u.sqlstate, error_message = u.message, error_detail = u.detail, "
		"  http_status = u.http_status, owner_pid = NULL, owner_deadline = NULL, "
		"  updated_at = now(), "
		"  finished_at = CASE WHEN u.state IN ('succeeded', 'failed') THEN now() END "
		"FROM unnest($1, $2, $3, $4, $5, $6, $7, $8) "
		"  AS u(id, state, outcome, sqlstate, message, detail, http_status, attempt) "
		"WHERE k.id = u.id AND k.attempts = u.attempt", tf, lengthof(tf));
	plan_release_keys = enkash_prepare_columns(
		"DELETE FROM enkash.idempotency_keys k USING unnest($1, $2) AS u(id, attempt) "
		"WHERE k.id = u.id AND k.attempts = u.attempt", t2r, lengthof(t2r));
}

static Datum
text_arg(const char *s, char *nulls, int i)
{
	nulls[i] = s ? ' ' : 'n';
	return s ? CStringGetTextDatum(s) : (Datum) 0;
}

/* A JSON field of the slot as a jsonb argument, parsed only if it is text. */
static Datum
jsonb_field_arg(LedgerSlot *slot, SlotField field, char *nulls, int i)
{
	const char *stored = slot_get(slot, field);

	nulls[i] = stored ? ' ' : 'n';
	if (stored == NULL)
		return (Datum) 0;
	if (slot->binary[field])
	{
		char	   *copy = palloc(VARSIZE(stored));

		memcpy(copy, stored, VARSIZE(stored));
		return PointerGetDatum(copy);
	}
	return DirectFunctionCall1(jsonb_in, CStringGetDatum(stored));
}

/*
 * The seven outcome columns of an audit row, the last of plan_audit's:
 * outcome, http_status, enkash_code, message, sqlstate, latency_ms,
 * response.
 */
static void
put_exchange_args(LedgerSlot *slot, Datum *v, char *n)
{
	v[0] = text_arg(slot_get(slot, F_OUTCOME), n, 0);
	v[1] = Int32GetDatum(slot->http_status);
	n[1] = slot->http_status ? ' ' : 'n';
	v[2] = text_arg(slot_get(slot, F_CODE), n, 2);
	v[3] = text_arg(slot_get(slot, F_MESSAGE), n, 3);
	v[4] = text_arg(slot_get(slot, F_SQLSTATE), n, 4);
	v[5] = Float8GetDatum(slot->latency_ms);
	n[5] = ' ';
	v[6] = jsonb_field_arg(slot, F_RESPONSE, n, 6);
	if (slot->mask_response && n[6] != 'n')
		v[6] = JsonbPGetDatum(enkash_mask(DatumGetJsonbP(v[6])));
}

/*
 * The audit row of a slot, as plan_audit takes it: an exchange with no key
 * (AUDIT), or the answer to a money call's request (FINISH), which names
 * its "sent" row and its key and leaves the request to the "sent" row.
 */
static void
audit_args(LedgerSlot *slot, Datum *v, char *n)
{
	bool		answer = slot->op == OP_FINISH;

	v[0] = text_arg(slot_get(slot, F_ROLE), n, 0);
	v[1] = text_arg(slot_get(slot, F_ENDPOINT), n, 1);
	v[2] = text_arg(slot_get(slot, F_KEY), n, 2);
	v[3] = Int64GetDatum(slot->key_id);
	n[3] = answer && slot->key_id != 0 ? ' ' : 'n';
	v[4] = Int64GetDatum(slot->audit_id);
	n[4] = answer ? ' ' : 'n';
	if (answer)
	{
		v[5] = (Datum) 0;
		n[5] = 'n';
	}
	else
		v[5] = jsonb_field_arg(slot, F_REQUEST, n, 5);
	put_exchange_args(slot, v + 6, n + 6);
}

static void
insert_audit(LedgerSlot *slot)
{
	Datum		v[AUDIT_COLUMNS];
	char		n[AUDIT_COLUMNS];

	audit_args(slot, v, n);
	if (SPI_execute_plan(plan_audit, v, n, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "could not write to enkash.audit_log");
}

/* An int8[] of values, for statements over many rows. */
Datum
enkash_int8_array(const int64 *values, int n)
{
	Datum	   *d = palloc(sizeof(Datum) * Max(n, 1));

	for (int i = 0; i < n; i++)
		d[i] = Int64GetDatum(values[i]);
	return PointerGetDatum(construct_array(d, n, INT8OID, sizeof(int64),
										   FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
}

/* A text[] of values. */
static Datum
text_array(Datum *values, int n)
{
	return PointerGetDatum(construct_array(values, n, TEXTOID, -1, false, TYPALIGN_INT));
}

/*
 * Requests whose answers were lost (the session or the server ended while
 * they were on the wire) get an "unknown" answer row, so that every "sent"
 * row is answered.  ids, keys: the keys' ids and texts, as arrays.
 */
static void
answer_lost(Datum ids, Datum keys, const char *why)
{
	Datum		v[3] = {ids, keys, CStringGetTextDatum(why)};

	if (SPI_execute_plan(plan_answer_lost, v, NULL, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "could not write to enkash.audit_log");
}

/* The "sent" audit row of a key; request is the masked request as jsonb. */
static int64
insert_sent(const char *role, const char *endpoint, const char *key,
			Datum request, char request_null, int64 key_id)
{
	Datum		v[5];
	char		n[5];
	bool		isnull;

	v[0] = text_arg(role, n, 0);
	v[1] = text_arg(endpoint, n, 1);
	v[2] = text_arg(key, n, 2);
	v[3] = request;
	n[3] = request_null;
	v[4] = Int64GetDatum(key_id);
	n[4] = ' ';
	if (SPI_execute_plan(plan_audit_sent, v, n, false, 1) != SPI_OK_INSERT_RETURNING)
		elog(ERROR, "could not record the send in enkash.audit_log");
	return DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc,
									   1, &isnull));
}

/* The audit row of a send; request is the slot's request as jsonb. */
static int64
insert_sent_audit(LedgerSlot *slot, int64 key_id, Datum request, char request_null)
{
	return insert_sent(slot_get(slot, F_ROLE), slot_get(slot, F_ENDPOINT),
					   slot_get(slot, F_KEY), request, request_null, key_id);
}

/*
 * Drops a slot's fields but those that name the call (endpoint, key, role),
 * which an undo of its claim records with it.
 */
static void
slot_keep_names(LedgerSlot *slot)
{
	char	   *endpoint = copy_or_null(slot_get(slot, F_ENDPOINT));
	char	   *key = copy_or_null(slot_get(slot, F_KEY));
	char	   *role = copy_or_null(slot_get(slot, F_ROLE));

	slot_reset_fields(slot);
	slot_put(slot, F_ENDPOINT, endpoint, false);
	slot_put(slot, F_KEY, key, false);
	slot_put(slot, F_ROLE, role, false);
}

/* Stores a text answer field from column col of the current SPI row. */
static void
answer_from_column(LedgerSlot *slot, SlotField field, int col)
{
	char	   *value = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, col);

	slot_put(slot, field, value, field == F_PAYLOAD);
}

static void
process_claim(LedgerSlot *slot)
{
	Datum		v[7];
	char		n[7];
	bool		isnull;
	char	   *state;
	char	   *fingerprint;

	v[0] = text_arg(slot_get(slot, F_ENDPOINT), n, 0);
	v[1] = text_arg(slot_get(slot, F_KEY), n, 1);
	v[2] = text_arg(slot_get(slot, F_FINGERPRINT), n, 2);
	v[3] = jsonb_field_arg(slot, F_REQUEST, n, 3);
	v[4] = text_arg(slot_get(slot, F_ROLE), n, 4);
	v[5] = Int32GetDatum(slot->pid);
	n[5] = ' ';
	v[6] = Float8GetDatum(slot->call_ms / 1000.0);
	n[6] = ' ';

	if (SPI_execute_plan(plan_claim_insert, v, n, false, 1) != SPI_OK_INSERT_RETURNING)
		elog(ERROR, "could not claim the key in enkash.idempotency_keys");
	if (SPI_processed == 1)
	{
		slot->key_id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
												   SPI_tuptable->tupdesc, 1, &isnull));
		slot->attempt = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0],
													SPI_tuptable->tupdesc, 2, &isnull));
		slot->audit_id = insert_sent_audit(slot, slot->key_id, v[3], n[3]);
		slot->verdict = LEDGER_CLAIMED;
		return;
	}

	/* The key exists: decide from its row, locked against other claims. */
	v[2] = Float8GetDatum(enkash_stale_claim_ms / 1000.0);
	v[3] = Float8GetDatum(enkash_unknown_grace_ms / 1000.0);
	n[2] = n[3] = ' ';
	if (SPI_execute_plan(plan_claim_select, v, n, false, 1) != SPI_OK_SELECT ||
		SPI_processed != 1)
		elog(ERROR, "could not read the key in enkash.idempotency_keys");
	slot->key_id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
											   SPI_tuptable->tupdesc, 1, &isnull));
	fingerprint = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2);
	state = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3);

	/* The same key for a different request is refused, whatever its state. */
	if (strcmp(fingerprint, slot_get(slot, F_FINGERPRINT)) != 0)
	{
		slot_reset_fields(slot);
		slot->verdict = LEDGER_MISMATCH;
		return;
	}
	slot_keep_names(slot);		/* the rest of the inputs is done with; answers go here */

	if (strcmp(state, "succeeded") == 0)
	{
		answer_from_column(slot, F_PAYLOAD, 4);
		slot->verdict = LEDGER_REPLAY_SUCCESS;
		return;
	}
	if (strcmp(state, "failed") == 0)
	{
		answer_from_column(slot, F_ERR_SQLSTATE, 5);
		answer_from_column(slot, F_ERR_MESSAGE, 6);
		answer_from_column(slot, F_ERR_DETAIL, 7);
		slot->verdict = LEDGER_REPLAY_FAILURE;
		return;
	}
	if (strcmp(state, "in_flight") == 0)
	{
		char	   *owner = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 8);
		bool		stale = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0],
													   SPI_tuptable->tupdesc, 9, &isnull));

		bool		alive = owner && BackendPidGetProc(atoi(owner)) != NULL;

		/* Still being sent by a live session: wait for it to finish. */
		if (alive && !stale)
		{
			slot->verdict = LEDGER_IN_FLIGHT;
			return;
		}

		/*
		 * Its owner is gone, or past the longest its call could take; but
		 * EnKash may still be processing the request, and would not know
		 * it yet.  The key is unknown from now, asked about after the grace.
		 */
		answer_lost(enkash_int8_array(&slot->key_id, 1), text_array(&v[1], 1), alive ?
					"this call was in flight for longer than it could take; the outcome is unknown" :
					"the session sending this call ended before its answer was recorded; the outcome is unknown");
		v[0] = Int64GetDatum(slot->key_id);
		n[0] = ' ';
		if (SPI_execute_plan(plan_claim_unknown, v, n, false, 1) != SPI_OK_UPDATE)
			elog(ERROR, "could not mark the key unknown in enkash.idempotency_keys");
		slot->verdict = LEDGER_TOO_SOON;
		return;
	}

	/* Unknown only just now: EnKash may still be processing the request. */
	if (strcmp(state, "unknown") == 0 &&
		!DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc,
									10, &isnull)))
	{
		slot->verdict = LEDGER_TOO_SOON;
		return;
	}

	/* unknown past the grace: ask EnKash first */
	v[0] = Int64GetDatum(slot->key_id);
	v[1] = Int32GetDatum(slot->pid);
	v[2] = Float8GetDatum(slot->call_ms / 1000.0);
	n[0] = n[1] = n[2] = ' ';
	if (SPI_execute_plan(plan_claim_retake, v, n, false, 1) != SPI_OK_UPDATE_RETURNING ||
		SPI_processed != 1)
		elog(ERROR, "could not retake the key in enkash.idempotency_keys");
	slot->attempt = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0],
												SPI_tuptable->tupdesc, 1, &isnull));
	slot->verdict = LEDGER_RECONCILE;
}

static void
process_sending(LedgerSlot *slot)
{
	char		request_null;
	Datum		request = jsonb_field_arg(slot, F_REQUEST, &request_null, 0);

	slot->audit_id = insert_sent_audit(slot, slot->key_id, request, request_null);
	slot->verdict = LEDGER_CLAIMED;
}

static const char *const state_names[] = {"succeeded", "failed", "unknown", "released"};

/* The arguments of plan_finish_key (and, as arrays, plan_finish_keys). */
static void
finish_key_args(LedgerSlot *slot, Datum *v, char *n)
{
	v[0] = Int64GetDatum(slot->key_id);
	n[0] = ' ';
	v[1] = text_arg(state_names[slot->key_state], n, 1);
	v[2] = jsonb_field_arg(slot, F_PAYLOAD, n, 2);
	v[3] = text_arg(slot_get(slot, F_ERR_SQLSTATE), n, 3);
	v[4] = text_arg(slot_get(slot, F_ERR_MESSAGE), n, 4);
	v[5] = text_arg(slot_get(slot, F_ERR_DETAIL), n, 5);
	v[6] = Int32GetDatum(slot->http_status);
	n[6] = slot->http_status ? ' ' : 'n';
	v[7] = Int32GetDatum(slot->attempt);
	n[7] = ' ';
}

/*
 * The key was taken over by a later attempt: the outcome goes to the audit
 * log only, as "superseded", saying what it was.
 */
static void
supersede(LedgerSlot *slot)
{
	const char *outcome = slot_get(slot, F_OUTCOME);

	slot_put(slot, F_MESSAGE,
			 psprintf("answered \"%s\" after a later attempt had taken the key over; the key keeps that attempt's record",
					  outcome ? outcome : "?"), false);
	slot_put(slot, F_OUTCOME, "superseded", false);
	slot->verdict = LEDGER_SUPERSEDED;
	/* a backend waiting for the answer warns its caller; else the log */
	if (!slot->reply)
		superseded_warning(slot_get(slot, F_KEY));
}

/*
 * The key's outcome (or its release), if the key is still this attempt's,
 * and the answer's audit row.
 */
static void
process_finish(LedgerSlot *slot)
{
	Datum		v[8];
	char		n[8];

	slot->verdict = LEDGER_CLAIMED;
	if (slot->key_id != 0)
	{
		if (slot->key_state == LEDGER_RELEASED)
		{
			v[0] = Int64GetDatum(slot->key_id);
			v[1] = Int32GetDatum(slot->attempt);
			n[0] = n[1] = ' ';
			if (SPI_execute_plan(plan_release_key, v, n, false, 0) != SPI_OK_DELETE)
				elog(ERROR, "could not release the key");
		}
		else
		{
			finish_key_args(slot, v, n);
			if (SPI_execute_plan(plan_finish_key, v, n, false, 0) != SPI_OK_UPDATE)
				elog(ERROR, "could not record the outcome of the key");
		}
		if (SPI_processed == 0)
			supersede(slot);
	}
	if (slot->audit_id != 0)
		insert_audit(slot);
}

static void
process_audit(LedgerSlot *slot)
{
	insert_audit(slot);
	slot->verdict = LEDGER_CLAIMED;
}

/* Slots whose rows are written together. */
typedef struct SlotBatch
{
	LedgerSlot **slots;
	int			count;
} SlotBatch;

/* ---------------------------------------------------------------------
 * The outbox sender writes its own rows, many to a commit
 * ---------------------------------------------------------------------
 */

/* A slot in local memory, for running the worker's statements here. */
static LedgerSlot *
local_slot(LedgerOp op)
{
	LedgerSlot *slot = palloc(sizeof(LedgerSlot));

	slot->op = op;
	slot->reply = false;
	slot->pid = MyProcPid;
	slot->key_id = slot->audit_id = 0;
	slot->attempt = 0;
	slot_reset_fields(slot);
	prepare_plans();
	return slot;
}

/* A JSON text as a stored jsonb argument: slot_put's rule for size, then parsed. */
static Datum
json_arg(const char *json, char *nulls, int i)
{
	char		note[SIZE_NOTE_MAX];

	nulls[i] = json ? ' ' : 'n';
	if (json == NULL)
		return (Datum) 0;
	if (strlen(json) > LEDGER_DATA / 2)
		json = size_note(note, strlen(json));
	return DirectFunctionCall1(jsonb_in, CStringGetDatum(json));
}

/* Whether the worker has marked a past life's in-flight keys unknown. */
static bool
keys_swept(void)
{
	bool		swept;

	LWLockAcquire(ledger->lock, LW_SHARED);
	swept = ledger->swept;
	LWLockRelease(ledger->lock);
	return swept;
}

/*
 * A key to claim if it is new, from the sender's batch or from a slot: the
 * columns of plan_claim_insert, and what the claim gave.
 */
typedef struct NewKey
{
	const char *endpoint;
	const char *key;
	const char *fingerprint;
	const char *role;
	int			pid;			/* owner_pid: the process that sends it */
	double		call_secs;		/* the longest its call can take */
	Datum		request;		/* masked, jsonb */
	char		request_null;
	bool		claimed;		/* out: claimed, with its "sent" audit row */
	int64		key_id;
	int64		audit_id;
} NewKey;

/* The columns of plan_claim_insert (and plan_claim_inserts) for k. */
static void
new_key_args(const NewKey *k, Datum *v, char *n)
{
	v[0] = text_arg(k->endpoint, n, 0);
	v[1] = text_arg(k->key, n, 1);
	v[2] = text_arg(k->fingerprint, n, 2);
	v[3] = k->request;
	n[3] = k->request_null;
	v[4] = text_arg(k->role, n, 4);
	v[5] = Int32GetDatum(k->pid);
	n[5] = ' ';
	v[6] = Float8GetDatum(k->call_secs);
	n[6] = ' ';
}

/* Claims one new key with its "sent" audit row; false if the key exists. */
static bool
claim_new_key(NewKey *k)
{
	Datum		v[7];
	char		n[7];
	bool		isnull;

	new_key_args(k, v, n);
	if (SPI_execute_plan(plan_claim_insert, v, n, false, 1) != SPI_OK_INSERT_RETURNING)
		elog(ERROR, "could not claim the key in enkash.idempotency_keys");
	if (SPI_processed != 1)
		return false;
	k->key_id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
											SPI_tuptable->tupdesc, 1, &isnull));
	k->audit_id = insert_sent(k->role, k->endpoint, k->key, k->request,
							  k->request_null, k->key_id);
	k->claimed = true;
	return true;
}

typedef struct NewKeys
{
	NewKey	  **keys;
	int			count;
} NewKeys;

/*
 * The keys of a batch with two statements: one INSERT of every key (those
 * that exist are skipped by ON CONFLICT DO NOTHING), one of the audit rows
 * of those claimed.  Nothing of it stays if it fails (a subtransaction).
 */
static void
claim_new_keys_together(void *arg)
{
	NewKeys    *batch = arg;
	EnkashColumns keys;
	EnkashColumns sent;
	SPITupleTable *rows;
	uint64		nrows;
	bool		isnull;

	enkash_columns_init(&keys, claim_types, lengthof(claim_types), batch->count);
	for (int i = 0; i < batch->count; i++)
	{
		Datum		v[7];
		char		n[7];

		new_key_args(batch->keys[i], v, n);
		enkash_columns_add(&keys, v, n);
	}
	if (enkash_columns_run(&keys, plan_claim_inserts) != SPI_OK_INSERT_RETURNING)
		elog(ERROR, "could not claim the keys in enkash.idempotency_keys");
	rows = SPI_tuptable;
	nrows = SPI_processed;

	/* the claimed ones: (endpoint, key) is unique within the batch */
	enkash_columns_init(&sent, sent_types, lengthof(sent_types), nrows);
	for (uint64 r = 0; r < nrows; r++)
	{
		char	   *endpoint = SPI_getvalue(rows->vals[r], rows->tupdesc, 2);
		char	   *key = SPI_getvalue(rows->vals[r], rows->tupdesc, 3);
		NewKey	   *k = NULL;
		int			i;
		Datum		v[5];
		char		n[5];

		for (i = 0; i < batch->count; i++)
			if (!batch->keys[i]->claimed && strcmp(batch->keys[i]->key, key) == 0 &&
				strcmp(batch->keys[i]->endpoint, endpoint) == 0)
				break;
		if (i == batch->count)
			elog(ERROR, "claimed key \"%s\" is not in the batch", key);
		k = batch->keys[i];
		k->key_id = DatumGetInt64(SPI_getbinval(rows->vals[r], rows->tupdesc, 1, &isnull));
		k->claimed = true;
		v[0] = text_arg(k->role, n, 0);
		v[1] = text_arg(k->endpoint, n, 1);
		v[2] = text_arg(k->key, n, 2);
		v[3] = k->request;
		n[3] = k->request_null;
		v[4] = Int64GetDatum(k->key_id);
		n[4] = ' ';
		enkash_columns_add(&sent, v, n);
	}
	if (sent.count == 0)
		return;
	enkash_columns_execute(&sent, plan_audits_sent, SPI_OK_INSERT_RETURNING);
	for (uint64 r = 0; r < SPI_processed; r++)
	{
		int64		key_id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[r],
														 SPI_tuptable->tupdesc, 2, &isnull));

		for (int i = 0; i < batch->count; i++)
			if (batch->keys[i]->claimed && batch->keys[i]->key_id == key_id)
				batch->keys[i]->audit_id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[r],
																	   SPI_tuptable->tupdesc,
																	   1, &isnull));
	}
}

/*
 * Claims the keys that are new, each with its "sent" audit row (SPI
 * connected), with two statements for the lot; false if they failed (and
 * left nothing).  A key that exists, or appears earlier in the list, is
 * left unclaimed for the caller's ordinary path, as are all before the
 * worker has marked a past life's in-flight keys unknown.  distinct gets
 * the keys that were tried.
 */
static bool
claim_new_keys_together_or_not(NewKey *keys, int count, NewKeys *distinct)
{
	distinct->keys = palloc(sizeof(NewKey *) * Max(count, 1));
	distinct->count = 0;
	for (int i = 0; i < count; i++)
		keys[i].claimed = false;
	if (count == 0 || !keys_swept())
		return true;
	prepare_plans();
	for (int i = 0; i < count; i++)
	{
		bool		repeated = false;

		for (int j = 0; j < i && !repeated; j++)
			repeated = strcmp(keys[j].key, keys[i].key) == 0 &&
				strcmp(keys[j].endpoint, keys[i].endpoint) == 0;
		if (!repeated)
			distinct->keys[distinct->count++] = &keys[i];
	}
	if (distinct->count < 2)
		return false;
	if (enkash_try_together(claim_new_keys_together, distinct))
		return true;
	for (int i = 0; i < count; i++)
		keys[i].claimed = false;
	return false;
}

/*
 * The outbox sender's new keys, claimed in its own transaction: a key
 * claimed gets claimed, key_id and audit_id set; the others take the
 * ordinary path.
 */
void
enkash_ledger_claim_new_keys(LedgerNewKey *keys, int count, const char *role)
{
	NewKey	   *rows = palloc0(sizeof(NewKey) * Max(count, 1));
	NewKeys		distinct;

	for (int i = 0; i < count; i++)
	{
		rows[i].endpoint = keys[i].endpoint;
		rows[i].key = keys[i].key;
		rows[i].fingerprint = keys[i].fingerprint;
		rows[i].role = role;
		rows[i].pid = MyProcPid;
		rows[i].call_secs = enkash_longest_call_ms() / 1000.0;
		rows[i].request = json_arg(keys[i].request, &rows[i].request_null, 0);
	}
	if (!claim_new_keys_together_or_not(rows, count, &distinct))
	{
		/* one at a time, which isolates a culprit */
		for (int i = 0; i < distinct.count; i++)
			(void) claim_new_key(distinct.keys[i]);
	}
	for (int i = 0; i < count; i++)
	{
		keys[i].claimed = rows[i].claimed;
		keys[i].key_id = rows[i].key_id;
		keys[i].attempt = rows[i].claimed ? 1 : 0; /* a new key's first attempt */
		keys[i].audit_id = rows[i].audit_id;
	}
	pfree(rows);
}

/*
 * Outcomes of calls sent by the outbox sender, written in its transaction
 * (SPI connected) by enkash_ledger_write: FINISH (or AUDIT, for a call with
 * no key) as the worker does it, but many rows to a statement.
 */
struct LedgerBatch
{
	const char *role;
	LedgerSlot **slots;
	int			count;
	int			size;
};

LedgerBatch *
enkash_ledger_batch(const char *role, int size)
{
	LedgerBatch *batch = palloc(sizeof(LedgerBatch));

	batch->role = pstrdup(role);
	batch->size = Max(size, 1);
	batch->slots = palloc(sizeof(LedgerSlot *) * batch->size);
	batch->count = 0;
	return batch;
}

/* Queues the outcome of a key and its send (key_id 0: an audit row of its own). */
void
enkash_ledger_finish_later(LedgerBatch *batch, int64 key_id, int attempt, int64 audit_id,
						   LedgerState state, const char *payload,
						   const char *err_sqlstate, const char *err_message,
						   const char *err_detail, const LedgerExchange *exchange)
{
	LedgerSlot *slot = local_slot(key_id || audit_id ? OP_FINISH : OP_AUDIT);

	slot->key_id = key_id;
	slot->attempt = attempt;
	slot->audit_id = audit_id;
	slot->key_state = state;
	slot_put(slot, F_ROLE, batch->role, false);
	slot_put_exchange(slot, exchange);
	slot_put(slot, F_PAYLOAD, payload, true);
	slot_put(slot, F_ERR_SQLSTATE, err_sqlstate, false);
	slot_put(slot, F_ERR_MESSAGE, err_message, false);
	slot_put(slot, F_ERR_DETAIL, err_detail, false);
	if (batch->count == batch->size)
	{
		batch->size *= 2;
		batch->slots = repalloc(batch->slots, sizeof(LedgerSlot *) * batch->size);
	}
	batch->slots[batch->count++] = slot;
}

/*
 * The outcomes of FINISH slots and the rows of AUDIT slots with three
 * statements: keys released, keys finished, audit rows (answers to money
 * calls and look-ups alike).  Look-ups come in crowds, and one statement
 * costs far less than one a row.
 */
static void
write_together(void *arg)
{
	SlotBatch  *batch = arg;
	Oid			release_types[] = {INT8OID, INT4OID};
	Oid			key_types[] = {INT8OID, TEXTOID, JSONBOID, TEXTOID, TEXTOID, TEXTOID, INT4OID, INT4OID};
	EnkashColumns released;
	EnkashColumns keys;
	EnkashColumns audits;

	enkash_columns_init(&released, release_types, lengthof(release_types), batch->count);
	enkash_columns_init(&keys, key_types, lengthof(key_types), batch->count);
	enkash_columns_init(&audits, audit_types, AUDIT_COLUMNS, batch->count);
	for (int i = 0; i < batch->count; i++)
	{
		LedgerSlot *slot = batch->slots[i];
		Datum		v[AUDIT_COLUMNS];
		char		n[AUDIT_COLUMNS];

		if (slot->op == OP_AUDIT)
		{
			audit_args(slot, v, n);
			enkash_columns_add(&audits, v, n);
			continue;
		}
		if (slot->key_id != 0 && slot->key_state == LEDGER_RELEASED)
		{
			v[0] = Int64GetDatum(slot->key_id);
			v[1] = Int32GetDatum(slot->attempt);
			enkash_columns_add(&released, v, "  ");
		}
		else if (slot->key_id != 0)
		{
			finish_key_args(slot, v, n);
			enkash_columns_add(&keys, v, n);
		}
		if (slot->audit_id != 0)
		{
			audit_args(slot, v, n);
			enkash_columns_add(&audits, v, n);
		}
	}
	if (released.count > 0)
		enkash_columns_execute(&released, plan_release_keys, SPI_OK_DELETE);
	if (keys.count > 0)
		enkash_columns_execute(&keys, plan_finish_keys, SPI_OK_UPDATE);
	if (audits.count > 0)
		enkash_columns_execute(&audits, plan_audits, SPI_OK_INSERT);
}

/* Writes the queued outcomes: together, or one at a time if that fails. */
void
enkash_ledger_write(LedgerBatch *batch)
{
	if (batch->count == 0)
		return;
	prepare_plans();
	if (batch->count == 1 ||
		!enkash_try_together(write_together, &(SlotBatch) {batch->slots, batch->count}))
	{
		for (int i = 0; i < batch->count; i++)
		{
			if (batch->slots[i]->op == OP_FINISH)
				process_finish(batch->slots[i]);
			else
				process_audit(batch->slots[i]);
		}
	}
	for (int i = 0; i < batch->count; i++)
		pfree(batch->slots[i]);
	batch->count = 0;
}

/* ---------------------------------------------------------------------
 * The worker's batch: like slots together, the rest one at a time
 * ---------------------------------------------------------------------
 */

/*
 * Writes the batch's outcomes and audit rows together.  If that fails they
 * are left to the one-by-one path, which isolates the culprit.  First, as
 * in submission order: an outcome was submitted after its key's claim,
 * which an earlier batch committed.
 */
static void
process_writes_together(LedgerSlot **batch, int count)
{
	LedgerSlot *writes[LEDGER_SLOTS];
	SlotBatch	together = {writes, 0};

	for (int i = 0; i < count; i++)
		if ((batch[i]->op == OP_FINISH || batch[i]->op == OP_AUDIT) &&
			!batch[i]->processed)
			writes[together.count++] = batch[i];
	if (together.count < 2 || !enkash_try_together(write_together, &together))
		return;
	for (int i = 0; i < together.count; i++)
	{
		writes[i]->verdict = LEDGER_CLAIMED;
		writes[i]->processed = true;
	}
}

/*
 * Claims the batch's new keys together.  Keys that exist (replays,
 * mismatches, keys in flight, reconciliation) and abandoned claims are left
 * to process_claim, one at a time in submission order.
 */
static void
process_claims_together(LedgerSlot **batch, const bool *abandoned, int count)
{
	LedgerSlot *claims[LEDGER_SLOTS];
	NewKey		keys[LEDGER_SLOTS];
	NewKeys		distinct;
	int			nkeys = 0;

	for (int i = 0; i < count; i++)
	{
		LedgerSlot *slot = batch[i];
		NewKey	   *k = &keys[nkeys];

		if (slot->op != OP_CLAIM || slot->processed || abandoned[i])
			continue;
		k->endpoint = slot_get(slot, F_ENDPOINT);
		k->key = slot_get(slot, F_KEY);
		k->fingerprint = slot_get(slot, F_FINGERPRINT);
		k->role = slot_get(slot, F_ROLE);
		k->pid = slot->pid;
		k->call_secs = slot->call_ms / 1000.0;
		k->request = jsonb_field_arg(slot, F_REQUEST, &k->request_null, 0);
		claims[nkeys++] = slot;
	}
	if (nkeys < 2 || !claim_new_keys_together_or_not(keys, nkeys, &distinct))
		return;					/* one at a time, in their subtransactions */
	for (int i = 0; i < nkeys; i++)
	{
		if (!keys[i].claimed)
			continue;
		claims[i]->key_id = keys[i].key_id;
		claims[i]->attempt = 1; /* a new key's first attempt */
		claims[i]->audit_id = keys[i].audit_id;
		claims[i]->verdict = LEDGER_CLAIMED;
		claims[i]->processed = true;
	}
}

/* A claim whose backend left before hearing the answer is undone. */
static void
undo_abandoned_claim(LedgerSlot *slot)
{
	LedgerExchange none = {0};

	if (slot->op != OP_CLAIM || (slot->verdict != LEDGER_CLAIMED &&
								 slot->verdict != LEDGER_RECONCILE))
		return;
	none.outcome = "abandoned";
	slot->op = OP_FINISH;		/* its audit row answers the claim's "sent" row */
	slot->key_state = (slot->verdict == LEDGER_CLAIMED) ? LEDGER_RELEASED : LEDGER_UNKNOWN;
	slot_keep_names(slot);
	none.endpoint = slot_get(slot, F_ENDPOINT);
	none.key = slot_get(slot, F_KEY);
	slot_put_exchange(slot, &none);
	process_finish(slot);
}

static void
process_slot(LedgerSlot *slot, bool abandoned)
{
	if (slot->processed)
	{
		if (abandoned && !slot->undone)
		{
			undo_abandoned_claim(slot);
			slot->undone = true;
		}
		return;
	}
	switch (slot->op)
	{
		case OP_CLAIM:
			process_claim(slot);
			break;
		case OP_SENDING:
			process_sending(slot);
			break;
		case OP_FINISH:
			process_finish(slot);
			break;
		case OP_AUDIT:
			process_audit(slot);
			break;
	}
	slot->processed = true;
	if (abandoned)
	{
		undo_abandoned_claim(slot);
		slot->undone = true;
	}
}

/* A claim that was answered but whose backend left: undo it next time. */
static bool
needs_undo(const LedgerSlot *slot)
{
	return slot->op == OP_CLAIM && slot->processed && !slot->undone &&
		(slot->verdict == LEDGER_CLAIMED || slot->verdict == LEDGER_RECONCILE);
}

/*
 * The worker's private copies of a batch's slots.  It works on these and
 * publishes them to the shared slots only once the batch has committed: a
 * worker that dies before that leaves its slots as they were submitted, to
 * be processed afresh, and no backend hears of a key that does not exist.
 */
static MemoryContext batch_cxt = NULL;
static LedgerSlot *batch_copies[LEDGER_SLOTS];
static int	batch_ncopies = 0;

/* Drops the copies, wiping what they held (answers may have moved "used" back). */
static void
batch_discard(void)
{
	for (int i = 0; i < batch_ncopies; i++)
		explicit_bzero(batch_copies[i]->data, LEDGER_DATA);
	batch_ncopies = 0;
	if (batch_cxt)
		MemoryContextReset(batch_cxt);
}

/* A submitted slot as the worker works on it (under the lock). */
static LedgerSlot *
batch_copy(const LedgerSlot *slot)
{
	LedgerSlot *copy;

	if (batch_cxt == NULL)
		batch_cxt = AllocSetContextCreate(TopMemoryContext, "enkash ledger batch",
										  ALLOCSET_DEFAULT_SIZES);
	copy = MemoryContextAlloc(batch_cxt, sizeof(LedgerSlot));
	memcpy(copy, slot, offsetof(LedgerSlot, data) + slot->used);
	batch_copies[batch_ncopies++] = copy;
	return copy;
}

/* The committed answer of a copy, into its shared slot (under the lock). */
static void
slot_publish(LedgerSlot *slot, const LedgerSlot *copy)
{
	slot->attempt = copy->attempt;
	slot->key_id = copy->key_id;
	slot->audit_id = copy->audit_id;
	slot->verdict = copy->verdict;
	slot->processed = copy->processed;
	slot->undone = copy->undone;
	if (slot->mask_response)
		explicit_bzero(slot->data, slot->used);
	memcpy(slot->off, copy->off, sizeof(slot->off));
	memcpy(slot->binary, copy->binary, sizeof(slot->binary));
	slot->mask_response = copy->mask_response;
	memcpy(slot->data, copy->data, copy->used);
	slot->used = copy->used;
}

/* The batch's transaction failed: its slots are processed again, afresh. */
void
enkash_ledger_batch_failed(void)
{
	batch_discard();
}

/*
 * Marks keys that were in flight when the server last stopped as unknown,
 * and answers their requests "unknown" in the audit log.
 */
static void
sweep_in_flight(void)
{
	int64	   *ids;
	Datum	   *keys;
	uint64		n;
	int			rc = SPI_execute("UPDATE enkash.idempotency_keys SET state = 'unknown', "
								 "owner_pid = NULL, owner_deadline = NULL, updated_at = now() "
								 "WHERE state = 'in_flight' RETURNING id, key", false, 0);

	if (rc != SPI_OK_UPDATE_RETURNING)
		elog(ERROR, "could not mark in-flight keys unknown");
	n = SPI_processed;
	if (n == 0)
		return;
	ids = palloc(sizeof(int64) * n);
	keys = palloc(sizeof(Datum) * n);
	for (uint64 i = 0; i < n; i++)
	{
		bool		isnull;

		ids[i] = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc,
											 1, &isnull));
		keys[i] = SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2, &isnull);
	}
	answer_lost(enkash_int8_array(ids, n), text_array(keys, n),
				"the server stopped while this call was on its way; the outcome is unknown");
	ereport(LOG,
			(errmsg("enkash worker: %llu idempotency keys were in flight when the server stopped; they are now \"unknown\" and will be checked with EnKash before any resend",
					(unsigned long long) n)));
}

/* Whether anything in the batch is money, or waited for: then the commit is flushed. */
static bool
batch_needs_flush(LedgerSlot **batch, int count)
{
	for (int i = 0; i < count; i++)
		if (batch[i]->op != OP_AUDIT || batch[i]->reply)
			return true;
	return false;
}

static int
seq_order(const void *a, const void *b)
{
	const LedgerSlot *x = *(LedgerSlot *const *) a;
	const LedgerSlot *y = *(LedgerSlot *const *) b;

	return x->seq < y->seq ? -1 : x->seq > y->seq;
}

#ifdef ENKASH_STOP_POINTS
/* The stop point for a batch holding a session's claim, or its outcome. */
static const char *
batch_stop_point(LedgerSlot **batch, int count, bool committed)
{
	for (int i = 0; i < count; i++)
		if (batch[i]->op == OP_CLAIM)
			return committed ? "worker-claim-committed" : "worker-claim-before-commit";
	for (int i = 0; i < count; i++)
		if (batch[i]->op == OP_FINISH)
			return committed ? "worker-finish-committed" : "worker-finish-before-commit";
	return NULL;
}
#endif

/*
 * Processes every submitted slot in one transaction.  Returns true if there
 * was anything to do.  Runs in the worker, outside any transaction.
 */
bool
enkash_ledger_process(void)
{
	LedgerSlot *shared[LEDGER_SLOTS];
	LedgerSlot *batch[LEDGER_SLOTS];	/* private copies of shared[] */
	bool		abandoned[LEDGER_SLOTS];
	Latch	   *waiters[LEDGER_SLOTS];
	int			count = 0;
	bool		installed;
	bool		need_sweep;
	MemoryContext outer = CurrentMemoryContext;

	batch_discard();
	LWLockAcquire(ledger->lock, LW_SHARED);
	for (int i = 0; i < ledger->slots_used; i++)
		if (ledger->slots[i].state == SLOT_SUBMITTED ||
			ledger->slots[i].state == SLOT_ABANDONED)
			shared[count++] = &ledger->slots[i];
	need_sweep = !ledger->swept;
	LWLockRelease(ledger->lock);

	if (count == 0 && !need_sweep)
		return false;
	qsort(shared, count, sizeof(LedgerSlot *), seq_order);

	/* The backends leave a submitted slot alone but to abandon it. */
	LWLockAcquire(ledger->lock, LW_SHARED);
	for (int i = 0; i < count; i++)
		batch[i] = batch_copy(shared[i]);
	LWLockRelease(ledger->lock);

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	SPI_connect();
	PushActiveSnapshot(GetTransactionSnapshot());
	pgstat_report_activity(STATE_RUNNING, "enkash: recording calls");

	installed = OidIsValid(get_namespace_oid("enkash", true)) &&
		OidIsValid(get_relname_relid("idempotency_keys",
									 get_namespace_oid("enkash", true)));
	if (installed)
	{
		prepare_plans();
		if (need_sweep)
			sweep_in_flight();
	}

	if (installed)
	{
		LWLockAcquire(ledger->lock, LW_SHARED);
		for (int i = 0; i < count; i++)
			abandoned[i] = (shared[i]->state == SLOT_ABANDONED);
		LWLockRelease(ledger->lock);
		process_writes_together(batch, count);
		process_claims_together(batch, abandoned, count);
	}

	for (int i = 0; i < count; i++)
	{
		LedgerSlot *slot = batch[i];
		ResourceOwner owner = CurrentResourceOwner;

		LWLockAcquire(ledger->lock, LW_SHARED);
		abandoned[i] = (shared[i]->state == SLOT_ABANDONED);
		LWLockRelease(ledger->lock);
		if (installed && slot->processed && (!abandoned[i] || slot->undone))
			continue;			/* done together, nothing to undo */

		if (!installed)
		{
			slot_reset_fields(slot);
			slot->processed = true;
			slot->verdict = LEDGER_ERROR;
			slot_put(slot, F_ERR_SQLSTATE, "55000", false);
			slot_put(slot, F_ERR_MESSAGE, psprintf("the enkash extension is not installed in database \"%s\"",
												   get_database_name(MyDatabaseId)), false);
			continue;
		}

		BeginInternalSubTransaction(NULL);
		PG_TRY();
		{
			process_slot(slot, abandoned[i]);
			ReleaseCurrentSubTransaction();
		}
		PG_CATCH();
		{
			ErrorData  *edata;

			MemoryContextSwitchTo(outer);
			edata = CopyErrorData();
			FlushErrorState();
			RollbackAndReleaseCurrentSubTransaction();
			ereport(WARNING,
					(errmsg("enkash worker could not record a call: %s", edata->message)));
			slot_reset_fields(slot);
			slot->processed = true;
			slot->verdict = LEDGER_ERROR;
			slot_put(slot, F_ERR_SQLSTATE, unpack_sql_state(edata->sqlerrcode), false);
			slot_put(slot, F_ERR_MESSAGE, edata->message, false);
			FreeErrorData(edata);
		}
		PG_END_TRY();
		MemoryContextSwitchTo(outer);
		CurrentResourceOwner = owner;
	}

	/*
	 * Look-ups' audit rows alone need no flush of the WAL before the worker
	 * goes on: nobody waits for them (SET LOCAL synchronous_commit = off).
	 */
	if (batch_needs_flush(batch, count) || need_sweep)
		enkash_durable_commit();
	else
		(void) set_config_option("synchronous_commit", "off", PGC_SUSET, PGC_S_SESSION,
								 GUC_ACTION_LOCAL, true, 0, false);
	ENKASH_STOP_POINT(batch_stop_point(batch, count, false));
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	pgstat_report_activity(STATE_IDLE, NULL);
	ENKASH_STOP_POINT(batch_stop_point(batch, count, true));

	/* Committed: publish the answers, wake the waiting backends, free the rest. */
	LWLockAcquire(ledger->lock, LW_EXCLUSIVE);
	if (installed && need_sweep)
		ledger->swept = true;
	for (int i = 0; i < count; i++)
	{
		LedgerSlot *slot = shared[i];

		waiters[i] = NULL;
		if (slot->state == SLOT_ABANDONED && needs_undo(batch[i]))
			slot_publish(slot, batch[i]);	/* abandoned mid-batch: undone in the next one */
		else if (slot->state == SLOT_ABANDONED || !slot->reply)
			slot_free(slot);
		else
		{
			slot_publish(slot, batch[i]);
			slot->state = SLOT_DONE;
			waiters[i] = slot->waiter;
		}
	}
	LWLockRelease(ledger->lock);
	batch_discard();
	for (int i = 0; i < count; i++)
		if (waiters[i])
			SetLatch(waiters[i]);
	ConditionVariableBroadcast(&ledger->freed);
	return count > 0;
}
