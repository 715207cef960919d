/*-------------------------------------------------------------------------
 *
 * ledger.c
 *	  Idempotency keys and the audit log, through the worker.
 *
 * A backend fills a slot in shared memory (claim a key, record a send,
 * record an outcome, or an audit row), wakes the worker and, for money,
 * waits until the worker has committed it.  The worker takes every slot
 * that is ready, writes them in one transaction (one subtransaction each,
 * so that one bad slot does not sink the rest) and commits: many sessions
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
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/condition_variable.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/proc.h"
#include "storage/procarray.h"
#include "storage/shmem.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/wait_event.h"

#define LEDGER_SLOTS 256
#define LEDGER_DATA 16384

/* Waiting for a worker that is not there ends after this long. */
#define WORKER_ABSENT_LIMIT_MS 10000

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

typedef struct LedgerSlot
{
	SlotState	state;
	LedgerOp	op;
	bool		reply;			/* the backend waits for the answer */
	uint64		seq;			/* submission order */
	int			pid;			/* submitting backend */
	int64		key_id;
	int64		audit_id;
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
	Latch	   *launcher_latch;
	Oid			dropping_dboid; /* DROP DATABASE under way: stand aside */
	TimestampTz dropping_until;
	ConditionVariable done;		/* a batch was processed */
	ConditionVariable freed;	/* a slot became free */
	ConditionVariable outbox;	/* a transaction that queued requests committed */
	LedgerSlot	slots[LEDGER_SLOTS];
} LedgerShared;

static LedgerShared *ledger = NULL;

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
		ConditionVariableInit(&ledger->done);
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

/*
 * Stores a text field.  JSON that does not fit is replaced by a note of its
 * size (half a document is worse than none); other text is cut.
 */
static void
slot_put(LedgerSlot *slot, SlotField field, const char *value, bool is_json)
{
	size_t		len;
	size_t		room;

	if (value == NULL)
	{
		slot->off[field] = -1;
		return;
	}
	len = strlen(value);
	room = LEDGER_DATA - slot->used - 1;
	if (len > room || (is_json && len > LEDGER_DATA / 2))
	{
		if (is_json)
		{
			char		note[64];

			snprintf(note, sizeof(note), "{\"truncated\": true, \"bytes\": %zu}", len);
			value = note;
			len = strlen(note);
			if (len > room)
				return;
			memcpy(slot->data + slot->used, value, len + 1);
			slot->off[field] = slot->used;
			slot->used += len + 1;
			return;
		}
		len = room;
	}
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
	if (size > LEDGER_DATA / 2 || start + size > LEDGER_DATA)
	{
		char		note[64];

		snprintf(note, sizeof(note), "{\"truncated\": true, \"bytes\": %zu}", size);
		slot_put(slot, field, note, true);
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

/*
 * Takes a free slot, waiting for one if all are busy; NULL if none frees
 * up because the worker is away, or at once if the caller cannot wait.
 */
static LedgerSlot *
slot_acquire(LedgerOp op, bool reply, bool can_wait)
{
	TimestampTz started = GetCurrentTimestamp();

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
				slot->key_id = slot->audit_id = 0;
				slot->verdict = LEDGER_ERROR;
				slot->processed = slot->undone = false;
				slot->seq = 0;
				slot_reset_fields(slot);
				LWLockRelease(ledger->lock);
				ConditionVariableCancelSleep();
				return slot;
			}
		}
		LWLockRelease(ledger->lock);
		if (!can_wait ||
			(!worker_alive() &&
			 TimestampDifferenceExceeds(started, GetCurrentTimestamp(),
										WORKER_ABSENT_LIMIT_MS)))
		{
			ConditionVariableCancelSleep();
			return NULL;
		}
		ConditionVariableTimedSleep(&ledger->freed, 1000, PG_WAIT_EXTENSION);
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
	if (latch)
		SetLatch(latch);
}

static void
slot_release(LedgerSlot *slot)
{
	LWLockAcquire(ledger->lock, LW_EXCLUSIVE);
	slot->state = SLOT_FREE;
	LWLockRelease(ledger->lock);
	ConditionVariableSignal(&ledger->freed);
}

/* Gives up on a slot: the worker will process it and free it. */
static void
slot_abandon(LedgerSlot *slot)
{
	bool		done;

	LWLockAcquire(ledger->lock, LW_EXCLUSIVE);
	done = (slot->state == SLOT_DONE);
	if (!done)
		slot->state = SLOT_ABANDONED;
	LWLockRelease(ledger->lock);
	if (done)
		slot_release(slot);
}

/*
 * Waits until the worker has committed the slot.  Returns false if the
 * worker has been away for too long; the slot is then abandoned to it.
 * An interrupt (cancel, timeout) abandons the slot and propagates.
 */
static bool
slot_wait(LedgerSlot *slot)
{
	volatile TimestampTz absent_since = 0;

	PG_TRY();
	{
		ConditionVariablePrepareToSleep(&ledger->done);
		for (;;)
		{
			SlotState	state;

			LWLockAcquire(ledger->lock, LW_SHARED);
			state = slot->state;
			LWLockRelease(ledger->lock);
			if (state == SLOT_DONE)
				break;

			if (!worker_alive())
			{
				TimestampTz now = GetCurrentTimestamp();

				if (absent_since == 0)
					absent_since = now;
				else if (TimestampDifferenceExceeds(absent_since, now,
													WORKER_ABSENT_LIMIT_MS))
				{
					ConditionVariableCancelSleep();
					slot_abandon(slot);
					return false;
				}
			}
			else
				absent_since = 0;
			ConditionVariableTimedSleep(&ledger->done, 1000, PG_WAIT_EXTENSION);
		}
		ConditionVariableCancelSleep();
	}
	PG_CATCH();
	{
		slot_abandon(slot);
		PG_RE_THROW();
	}
	PG_END_TRY();
	return true;
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

static char *
copy_or_null(const char *s)
{
	return s ? pstrdup(s) : NULL;
}

void
enkash_ledger_claim(const char *endpoint, const char *key,
					const char *fingerprint, const char *request,
					LedgerClaim *claim)
{
	LedgerSlot *slot;

	enkash_require_preload();
	check_database();

	slot = slot_acquire(OP_CLAIM, true, true);
	if (slot == NULL)
		worker_unavailable();
	slot_put(slot, F_ENDPOINT, endpoint, false);
	slot_put(slot, F_KEY, key, false);
	slot_put(slot, F_FINGERPRINT, fingerprint, false);
	slot_put(slot, F_ROLE, GetUserNameFromId(GetUserId(), false), false);
	slot_put(slot, F_REQUEST, request, true);
	slot_submit(slot);
	if (!slot_wait(slot))
		worker_unavailable();

	memset(claim, 0, sizeof(*claim));
	claim->verdict = (LedgerVerdict) slot->verdict;
	claim->key_id = slot->key_id;
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
	LedgerSlot *slot = slot_acquire(OP_SENDING, true, true);
	int64		audit_id;
	int			verdict;

	if (slot == NULL)
		worker_unavailable();
	slot->key_id = key_id;
	slot_put(slot, F_ENDPOINT, endpoint, false);
	slot_put(slot, F_KEY, key, false);
	slot_put(slot, F_ROLE, GetUserNameFromId(GetUserId(), false), false);
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
 * Records the outcome of a key and of its send.  With wait, returns once it
 * is committed (or warns that the worker is away: the key then stays
 * in_flight, and so is treated as unknown later: safe, if slower).
 */
void
enkash_ledger_finish(int64 key_id, int64 audit_id, LedgerState state,
					 const char *payload, const char *err_sqlstate,
					 const char *err_message, const char *err_detail,
					 const LedgerExchange *exchange, bool wait)
{
	LedgerSlot *slot = slot_acquire(OP_FINISH, wait, true);

	if (slot == NULL)
	{
		ereport(WARNING,
				(errmsg("the enkash worker is away; the outcome of key \"%s\" was not recorded",
						exchange->key ? exchange->key : "?"),
				 errdetail("The key stays in flight and will count as unknown: EnKash is asked before it is sent again.")));
		return;
	}
	slot->key_id = key_id;
	slot->audit_id = audit_id;
	slot->key_state = state;
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
	/* Look-ups never wait on the audit log: with no slot free, say so. */
	slot = slot_acquire(OP_AUDIT, wait, wait);
	if (slot == NULL && wait)
		worker_unavailable_after(exchange->endpoint);
	if (slot == NULL)
	{
		ereport(LOG,
				(errmsg("enkash: the worker is behind; an audit row for %s was not recorded",
						exchange->endpoint)));
		return;
	}
	slot_put(slot, F_ROLE, GetUserNameFromId(GetUserId(), false), false);
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
static SPIPlanPtr plan_audit_sent;
static SPIPlanPtr plan_finish_key;
static SPIPlanPtr plan_release_key;
static SPIPlanPtr plan_finish_audit;
static SPIPlanPtr plan_audit;
static SPIPlanPtr plan_audits;

/* The columns of an audit row as plan_audit takes them, in order. */
#define AUDIT_COLUMNS 11
static const Oid audit_types[AUDIT_COLUMNS] = {
	TEXTOID, TEXTOID, TEXTOID, JSONBOID, TEXTOID, INT4OID, TEXTOID,
	TEXTOID, TEXTOID, FLOAT8OID, JSONBOID
};

static SPIPlanPtr
prepare(const char *sql, int nargs, Oid *types)
{
	SPIPlanPtr	plan = SPI_prepare(sql, nargs, types);

	if (plan == NULL || SPI_keepplan(plan) != 0)
		elog(ERROR, "enkash worker could not prepare \"%s\": %s", sql,
			 SPI_result_code_string(SPI_result));
	return plan;
}

static void
prepare_plans(void)
{
	Oid			t6[] = {TEXTOID, TEXTOID, TEXTOID, JSONBOID, TEXTOID, INT4OID};
	Oid			t4[] = {TEXTOID, TEXTOID, FLOAT8OID, FLOAT8OID};
	Oid			t2b[] = {INT8OID, INT4OID};
	Oid			t5[] = {TEXTOID, TEXTOID, TEXTOID, JSONBOID, INT8OID};
	Oid			tf[] = {INT8OID, TEXTOID, JSONBOID, TEXTOID, TEXTOID, TEXTOID, INT4OID};
	Oid			t1[] = {INT8OID};
	Oid			ta[] = {INT8OID, TEXTOID, INT4OID, TEXTOID, TEXTOID, TEXTOID,
	FLOAT8OID, JSONBOID};
	Oid			tarrays[AUDIT_COLUMNS];

	for (int c = 0; c < AUDIT_COLUMNS; c++)
		tarrays[c] = get_array_type(audit_types[c]);

	if (plan_audit)
		return;
	plan_claim_insert = prepare(
		"INSERT INTO enkash.idempotency_keys AS k "
		"  (endpoint, key, fingerprint, request, role, owner_pid, state) "
		"VALUES ($1, $2, $3, $4, $5, $6, 'in_flight') "
		"ON CONFLICT (endpoint, key) DO NOTHING RETURNING id", 6, t6);
	plan_claim_select = prepare(
		"SELECT id, fingerprint, state, outcome::text, error_sqlstate, error_message, "
		"       error_detail, owner_pid, "
		"       updated_at < now() - make_interval(secs => $3) AS stale, "
		"       updated_at < now() - make_interval(secs => $4) AS grace_over "
		"FROM enkash.idempotency_keys WHERE endpoint = $1 AND key = $2 FOR UPDATE", 4, t4);
	plan_claim_retake = prepare(
		"UPDATE enkash.idempotency_keys SET state = 'in_flight', owner_pid = $2, "
		"  attempts = attempts + 1, updated_at = now() WHERE id = $1", 2, t2b);
	plan_audit_sent = prepare(
		"INSERT INTO enkash.audit_log (role, endpoint, idempotency_key, request, outcome, key_id) "
		"VALUES ($1, $2, $3, $4, 'sent', $5) RETURNING id", 5, t5);
	plan_finish_key = prepare(
		"UPDATE enkash.idempotency_keys SET state = $2, outcome = $3, error_sqlstate = $4, "
		"  error_message = $5, error_detail = $6, http_status = $7, owner_pid = NULL, "
		"  updated_at = now(), finished_at = CASE WHEN $2 IN ('succeeded', 'failed') "
		"  THEN now() END WHERE id = $1", 7, tf);
	plan_release_key = prepare(
		"DELETE FROM enkash.idempotency_keys WHERE id = $1", 1, t1);
	plan_finish_audit = prepare(
		"UPDATE enkash.audit_log SET outcome = $2, http_status = $3, enkash_code = $4, "
		"  message = $5, sqlstate = $6, latency_ms = $7, response = $8 WHERE id = $1", 8, ta);
	plan_audit = prepare(
		"INSERT INTO enkash.audit_log (role, endpoint, idempotency_key, request, outcome, "
		"  http_status, enkash_code, message, sqlstate, latency_ms, response) "
		"VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)", AUDIT_COLUMNS,
		(Oid *) audit_types);
	plan_audits = prepare(
		"INSERT INTO enkash.audit_log (role, endpoint, idempotency_key, request, outcome, "
		"  http_status, enkash_code, message, sqlstate, latency_ms, response) "
		"SELECT * FROM unnest($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
		AUDIT_COLUMNS, tarrays);
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
 * The seven outcome columns of an audit row, in the order both statements
 * take them: outcome, http_status, enkash_code, message, sqlstate,
 * latency_ms, response.
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

/* The audit row of a send; request is the slot's request as jsonb. */
static int64
insert_sent_audit(LedgerSlot *slot, int64 key_id, Datum request, char request_null)
{
	Datum		v[5];
	char		n[5];
	bool		isnull;

	v[0] = text_arg(slot_get(slot, F_ROLE), n, 0);
	v[1] = text_arg(slot_get(slot, F_ENDPOINT), n, 1);
	v[2] = text_arg(slot_get(slot, F_KEY), n, 2);
	v[3] = request;
	n[3] = request_null;
	v[4] = Int64GetDatum(key_id);
	n[4] = ' ';
	if (SPI_execute_plan(plan_audit_sent, v, n, false, 1) != SPI_OK_INSERT_RETURNING)
		elog(ERROR, "could not record the send in enkash.audit_log");
	return DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc,
									   1, &isnull));
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
	Datum		v[6];
	char		n[6];
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

	if (SPI_execute_plan(plan_claim_insert, v, n, false, 1) != SPI_OK_INSERT_RETURNING)
		elog(ERROR, "could not claim the key in enkash.idempotency_keys");
	if (SPI_processed == 1)
	{
		slot->key_id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
												   SPI_tuptable->tupdesc, 1, &isnull));
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
	slot_reset_fields(slot);	/* the inputs are done with; answers go here */

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

		/* Still being sent by a live session: wait for it to finish. */
		if (owner && BackendPidGetProc(atoi(owner)) != NULL && !stale)
		{
			slot->verdict = LEDGER_IN_FLIGHT;
			return;
		}
	}

	/* Unknown only just now: EnKash may still be processing the request. */
	if (strcmp(state, "unknown") == 0 &&
		!DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc,
									10, &isnull)))
	{
		slot->verdict = LEDGER_TOO_SOON;
		return;
	}

	/* unknown, or in flight for a session that is gone: ask EnKash first */
	v[0] = Int64GetDatum(slot->key_id);
	v[1] = Int32GetDatum(slot->pid);
	n[0] = n[1] = ' ';
	if (SPI_execute_plan(plan_claim_retake, v, n, false, 1) != SPI_OK_UPDATE)
		elog(ERROR, "could not retake the key in enkash.idempotency_keys");
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

static void
process_finish(LedgerSlot *slot)
{
	Datum		v[8];
	char		n[8];

	if (slot->key_id != 0)
	{
		if (slot->key_state == LEDGER_RELEASED)
		{
			v[0] = Int64GetDatum(slot->key_id);
			n[0] = ' ';
			if (SPI_execute_plan(plan_release_key, v, n, false, 0) != SPI_OK_DELETE)
				elog(ERROR, "could not release the key");
		}
		else
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
			if (SPI_execute_plan(plan_finish_key, v, n, false, 0) != SPI_OK_UPDATE)
				elog(ERROR, "could not record the outcome of the key");
		}
	}
	if (slot->audit_id != 0)
	{
		v[0] = Int64GetDatum(slot->audit_id);
		n[0] = ' ';
		put_exchange_args(slot, v + 1, n + 1);
		if (SPI_execute_plan(plan_finish_audit, v, n, false, 0) != SPI_OK_UPDATE)
			elog(ERROR, "could not record the outcome in enkash.audit_log");
	}
	slot->verdict = LEDGER_CLAIMED;
}

/* The audit row of an OP_AUDIT slot, as plan_audit takes it. */
static void
audit_args(LedgerSlot *slot, Datum *v, char *n)
{
	v[0] = text_arg(slot_get(slot, F_ROLE), n, 0);
	v[1] = text_arg(slot_get(slot, F_ENDPOINT), n, 1);
	v[2] = text_arg(slot_get(slot, F_KEY), n, 2);
	v[3] = jsonb_field_arg(slot, F_REQUEST, n, 3);
	put_exchange_args(slot, v + 4, n + 4);
}

static void
process_audit(LedgerSlot *slot)
{
	Datum		v[AUDIT_COLUMNS];
	char		n[AUDIT_COLUMNS];

	audit_args(slot, v, n);
	if (SPI_execute_plan(plan_audit, v, n, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "could not write to enkash.audit_log");
	slot->verdict = LEDGER_CLAIMED;
}

/*
 * The audit rows of many slots in one statement, one array per column:
 * look-ups come in crowds, and one INSERT costs far less than one each.
 */
static void
insert_audits(LedgerSlot **slots, int count)
{
	Datum		args[AUDIT_COLUMNS];
	Datum	   *values[AUDIT_COLUMNS];
	bool	   *nulls[AUDIT_COLUMNS];
	int			dims[1] = {count};
	int			lbs[1] = {1};

	for (int c = 0; c < AUDIT_COLUMNS; c++)
	{
		values[c] = palloc(sizeof(Datum) * count);
		nulls[c] = palloc(sizeof(bool) * count);
	}
	for (int i = 0; i < count; i++)
	{
		Datum		v[AUDIT_COLUMNS];
		char		n[AUDIT_COLUMNS];

		audit_args(slots[i], v, n);
		for (int c = 0; c < AUDIT_COLUMNS; c++)
		{
			values[c][i] = v[c];
			nulls[c][i] = (n[c] == 'n');
		}
	}
	for (int c = 0; c < AUDIT_COLUMNS; c++)
	{
		int16		typlen;
		bool		typbyval;
		char		typalign;

		get_typlenbyvalalign(audit_types[c], &typlen, &typbyval, &typalign);
		args[c] = PointerGetDatum(construct_md_array(values[c], nulls[c], 1, dims, lbs,
													 audit_types[c], typlen,
													 typbyval, typalign));
	}
	if (SPI_execute_plan(plan_audits, args, NULL, false, 0) != SPI_OK_INSERT ||
		SPI_processed != count)
		elog(ERROR, "could not write to enkash.audit_log");
	for (int i = 0; i < count; i++)
	{
		slots[i]->verdict = LEDGER_CLAIMED;
		slots[i]->processed = true;
	}
}

/*
 * Writes the batch's audit rows together, in one subtransaction.  If that
 * fails they are left to the one-by-one path, which isolates the culprit.
 */
static void
process_audits_together(LedgerSlot **batch, int count, MemoryContext outer)
{
	LedgerSlot *audits[LEDGER_SLOTS];
	int			naudits = 0;
	ResourceOwner owner = CurrentResourceOwner;

	for (int i = 0; i < count; i++)
		if (batch[i]->op == OP_AUDIT && !batch[i]->processed)
			audits[naudits++] = batch[i];
	if (naudits < 2)
		return;

	BeginInternalSubTransaction(NULL);
	PG_TRY();
	{
		insert_audits(audits, naudits);
		ReleaseCurrentSubTransaction();
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(outer);
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		for (int i = 0; i < naudits; i++)
			audits[i]->processed = false;
	}
	PG_END_TRY();
	MemoryContextSwitchTo(outer);
	CurrentResourceOwner = owner;
}

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
	slot->pid = MyProcPid;
	slot->key_id = slot->audit_id = 0;
	slot_reset_fields(slot);
	prepare_plans();
	return slot;
}

/*
 * Claims a key that has never been used, with its "sent" audit row, in the
 * caller's transaction (SPI connected).  False, with nothing written, if
 * the key exists, or before the worker has marked a past life's in-flight
 * keys unknown: such a call takes the ordinary path.
 */
bool
enkash_ledger_claim_new(const char *endpoint, const char *key,
						const char *fingerprint, const char *request,
						const char *role, int64 *key_id, int64 *audit_id)
{
	LedgerSlot *slot;
	Datum		v[6];
	char		n[6];
	bool		isnull;
	bool		swept;

	LWLockAcquire(ledger->lock, LW_SHARED);
	swept = ledger->swept;
	LWLockRelease(ledger->lock);
	if (!swept)
		return false;

	slot = local_slot(OP_CLAIM);
	slot_put(slot, F_ENDPOINT, endpoint, false);
	slot_put(slot, F_KEY, key, false);
	slot_put(slot, F_ROLE, role, false);
	slot_put(slot, F_REQUEST, request, true);
	v[0] = text_arg(endpoint, n, 0);
	v[1] = text_arg(key, n, 1);
	v[2] = text_arg(fingerprint, n, 2);
	v[3] = jsonb_field_arg(slot, F_REQUEST, n, 3);
	v[4] = text_arg(role, n, 4);
	v[5] = Int32GetDatum(MyProcPid);
	n[5] = ' ';
	if (SPI_execute_plan(plan_claim_insert, v, n, false, 1) != SPI_OK_INSERT_RETURNING)
		elog(ERROR, "could not claim the key in enkash.idempotency_keys");
	if (SPI_processed != 1)
	{
		pfree(slot);
		return false;
	}
	*key_id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
										  SPI_tuptable->tupdesc, 1, &isnull));
	*audit_id = insert_sent_audit(slot, *key_id, v[3], n[3]);
	pfree(slot);
	return true;
}

/*
 * Records the outcome of a key and its send (key_id 0: an audit row of its
 * own), in the caller's transaction: FINISH (or AUDIT) as the worker does it.
 */
void
enkash_ledger_finish_here(int64 key_id, int64 audit_id, LedgerState state,
						  const char *payload, const char *err_sqlstate,
						  const char *err_message, const char *err_detail,
						  const char *role, const LedgerExchange *exchange)
{
	LedgerSlot *slot = local_slot(key_id || audit_id ? OP_FINISH : OP_AUDIT);

	slot->key_id = key_id;
	slot->audit_id = audit_id;
	slot->key_state = state;
	slot_put(slot, F_ROLE, role, false);
	slot_put_exchange(slot, exchange);
	slot_put(slot, F_PAYLOAD, payload, true);
	slot_put(slot, F_ERR_SQLSTATE, err_sqlstate, false);
	slot_put(slot, F_ERR_MESSAGE, err_message, false);
	slot_put(slot, F_ERR_DETAIL, err_detail, false);
	if (slot->op == OP_FINISH)
		process_finish(slot);
	else
		process_audit(slot);
	pfree(slot);
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
	slot->key_state = (slot->verdict == LEDGER_CLAIMED) ? LEDGER_RELEASED : LEDGER_UNKNOWN;
	slot_reset_fields(slot);
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
needs_undo(LedgerSlot *slot)
{
	return slot->op == OP_CLAIM && slot->processed && !slot->undone &&
		(slot->verdict == LEDGER_CLAIMED || slot->verdict == LEDGER_RECONCILE);
}

/* The batch's transaction failed: its slots are to be processed again. */
void
enkash_ledger_batch_failed(void)
{
	LWLockAcquire(ledger->lock, LW_EXCLUSIVE);
	for (int i = 0; i < LEDGER_SLOTS; i++)
		if (ledger->slots[i].state == SLOT_SUBMITTED ||
			ledger->slots[i].state == SLOT_ABANDONED)
			ledger->slots[i].processed = ledger->slots[i].undone = false;
	LWLockRelease(ledger->lock);
}

/* Marks keys that were in flight when the server last stopped as unknown. */
static void
sweep_in_flight(void)
{
	int			rc = SPI_execute("UPDATE enkash.idempotency_keys SET state = 'unknown', "
								 "owner_pid = NULL, updated_at = now() "
								 "WHERE state = 'in_flight'", false, 0);

	if (rc != SPI_OK_UPDATE)
		elog(ERROR, "could not mark in-flight keys unknown");
	if (SPI_processed > 0)
		ereport(LOG,
				(errmsg("enkash worker: %llu idempotency keys were in flight when the server stopped; they are now \"unknown\" and will be checked with EnKash before any resend",
						(unsigned long long) SPI_processed)));
}

static int
seq_order(const void *a, const void *b)
{
	const LedgerSlot *x = *(LedgerSlot *const *) a;
	const LedgerSlot *y = *(LedgerSlot *const *) b;

	return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/*
 * Processes every submitted slot in one transaction.  Returns true if there
 * was anything to do.  Runs in the worker, outside any transaction.
 */
bool
enkash_ledger_process(void)
{
	LedgerSlot *batch[LEDGER_SLOTS];
	bool		abandoned[LEDGER_SLOTS];
	int			count = 0;
	bool		installed;
	bool		need_sweep;
	MemoryContext outer = CurrentMemoryContext;

	LWLockAcquire(ledger->lock, LW_SHARED);
	for (int i = 0; i < LEDGER_SLOTS; i++)
		if (ledger->slots[i].state == SLOT_SUBMITTED ||
			ledger->slots[i].state == SLOT_ABANDONED)
			batch[count++] = &ledger->slots[i];
	need_sweep = !ledger->swept;
	LWLockRelease(ledger->lock);

	if (count == 0 && !need_sweep)
		return false;
	qsort(batch, count, sizeof(LedgerSlot *), seq_order);

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
		{
			sweep_in_flight();
			LWLockAcquire(ledger->lock, LW_EXCLUSIVE);
			ledger->swept = true;
			LWLockRelease(ledger->lock);
		}
	}

	if (installed)
		process_audits_together(batch, count, outer);

	for (int i = 0; i < count; i++)
	{
		LedgerSlot *slot = batch[i];
		ResourceOwner owner = CurrentResourceOwner;

		LWLockAcquire(ledger->lock, LW_SHARED);
		abandoned[i] = (slot->state == SLOT_ABANDONED);
		LWLockRelease(ledger->lock);

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

	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	pgstat_report_activity(STATE_IDLE, NULL);

	/* Committed: answer the waiting backends, free the rest. */
	LWLockAcquire(ledger->lock, LW_EXCLUSIVE);
	for (int i = 0; i < count; i++)
	{
		LedgerSlot *slot = batch[i];

		if (slot->state == SLOT_ABANDONED && needs_undo(slot))
			continue;			/* abandoned mid-batch: undone in the next one */
		if (slot->state == SLOT_ABANDONED || !slot->reply)
			slot->state = SLOT_FREE;
		else
			slot->state = SLOT_DONE;
	}
	LWLockRelease(ledger->lock);
	ConditionVariableBroadcast(&ledger->done);
	ConditionVariableBroadcast(&ledger->freed);
	return count > 0;
}
