/*-------------------------------------------------------------------------
 *
 * ledger_batch.c
 *	  The outbox sender writes its own keys and outcomes, in its own
 *	  transaction and many rows to a statement.
 *
 *-------------------------------------------------------------------------
 */
#include "ledger_internal.h"

#include "miscadmin.h"
#include "utils/builtins.h"

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
	slot->used = 0;
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
						   LedgerState state, const Jsonb *payload,
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
	slot_put_jsonb(slot, F_PAYLOAD, payload);
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
