/*-------------------------------------------------------------------------
 *
 * ledger_worker.c
 *	  The worker's side of the ledger: every submitted slot in one
 *	  transaction, many to a statement where it can, and the sweep of keys a
 *	  past life left in flight.
 *
 *-------------------------------------------------------------------------
 */
#include "ledger_internal.h"

#include "access/xact.h"
#include "commands/dbcommands.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "installed.h"
#include "stoppoint.h"
#include "storage/ipc.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"

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
	ledger->gathering = false;
	LWLockRelease(ledger->lock);
	before_shmem_exit(worker_detach, (Datum) 0);
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

		if (slot->op != OP_CLAIM || slot->processed || abandoned[i] || slot->look_first)
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
bool
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
 * Their memory is kept for the worker's life (a slot is 16 kB: allocated
 * for each batch, they would fault their pages in each time); what a copy
 * holds lies below its "used" (slot_reset_fields wipes), wiped after.
 */
static LedgerSlot *batch_copies = NULL;	/* LEDGER_SLOTS of them, zeroed */
static int	batch_ncopies = 0;

/* Drops the copies, wiping what they held. */
static void
batch_discard(void)
{
	for (int i = 0; i < batch_ncopies; i++)
		explicit_bzero(batch_copies[i].data, batch_copies[i].used);
	batch_ncopies = 0;
}

/* A submitted slot as the worker works on it (under the lock). */
static LedgerSlot *
batch_copy(const LedgerSlot *slot)
{
	LedgerSlot *copy;

	if (batch_copies == NULL)
		batch_copies = MemoryContextAllocZero(TopMemoryContext,
											  sizeof(LedgerSlot) * LEDGER_SLOTS);
	copy = &batch_copies[batch_ncopies++];
	memcpy(copy, slot, offsetof(LedgerSlot, data) + slot->used);
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

/* Whether any slot of a batch was carried out (some may be kept for later). */
static bool
any_processed(LedgerSlot **batch, int count)
{
	for (int i = 0; i < count; i++)
		if (batch[i]->processed)
			return true;
	return false;
}

/* Whether the slots are only audit rows that nobody waits for. */
static bool
only_unwaited_audits(LedgerSlot **shared, int count)
{
	for (int i = 0; i < count; i++)
		if (shared[i]->state != SLOT_SUBMITTED || shared[i]->op != OP_AUDIT ||
			shared[i]->reply)
			return false;
	return true;
}

/*
 * Processes every submitted slot in one transaction, or first lets a few
 * look-ups' audit rows gather (LedgerRound).  Runs in the worker, outside
 * any transaction.
 */
LedgerRound
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
	LWLockAcquire(ledger->lock, LW_EXCLUSIVE);
	for (int i = 0; i < ledger->slots_used; i++)
		if (ledger->slots[i].state == SLOT_SUBMITTED ||
			ledger->slots[i].state == SLOT_ABANDONED)
			shared[count++] = &ledger->slots[i];
	need_sweep = !ledger->swept;
	if (!ledger->gathering && !need_sweep && count > 0 &&
		count < LEDGER_GATHER_SLOTS && only_unwaited_audits(shared, count))
	{
		ledger->gathering = true;
		ledger->gathered = count;
		LWLockRelease(ledger->lock);
		return LEDGER_GATHERING;
	}
	ledger->gathering = false;
	LWLockRelease(ledger->lock);

	if (count == 0 && !need_sweep)
		return LEDGER_IDLE;
	qsort(shared, count, sizeof(LedgerSlot *), seq_order);

	/* The backends leave a submitted slot alone but to abandon it. */
	LWLockAcquire(ledger->lock, LW_SHARED);
	for (int i = 0; i < count; i++)
		batch[i] = batch_copy(shared[i]);
	LWLockRelease(ledger->lock);

	enkash_spi_begin("enkash: recording calls");

	installed = enkash_installed();
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
			bool		outdated;

			/* a row nobody waits for is kept until it can be written */
			if (!slot->reply)
				continue;
			outdated = (enkash_extension_state(NULL) == ENKASH_OUTDATED);
			slot_reset_fields(slot);
			slot->processed = true;
			slot->verdict = LEDGER_ERROR;
			slot_put(slot, F_ERR_SQLSTATE, outdated ? "NK012" : "55000", false);
			slot_put(slot, F_ERR_MESSAGE,
					 psprintf(outdated ? "the enkash extension in database \"%s\" must be updated (ALTER EXTENSION enkash UPDATE)"
							  : "the enkash extension is not installed in database \"%s\"",
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
	enkash_spi_commit(true);
	ENKASH_STOP_POINT(batch_stop_point(batch, count, true));

	/* Committed: publish the answers, wake the waiting backends, free the rest. */
	LWLockAcquire(ledger->lock, LW_EXCLUSIVE);
	if (installed && need_sweep)
		ledger->swept = true;
	for (int i = 0; i < count; i++)
	{
		LedgerSlot *slot = shared[i];

		waiters[i] = NULL;
		if (!batch[i]->processed && slot->state == SLOT_SUBMITTED)
			continue;			/* kept for a later batch */
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
	return any_processed(batch, count) ? LEDGER_DID_WORK : LEDGER_IDLE;
}
