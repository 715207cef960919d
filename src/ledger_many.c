/*-------------------------------------------------------------------------
 *
 * ledger_many.c
 *	  Statements over many rows: new keys claimed together, and outcomes and
 *	  audit rows written together, for the worker's batch and the sender's.
 *
 *-------------------------------------------------------------------------
 */
#include "ledger_internal.h"

#include "catalog/pg_type.h"

/* The columns of plan_claim_insert (plan_claim_new_insert, plan_claim_inserts) for k. */
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
bool
claim_new_key(NewKey *k)
{
	Datum		v[7];
	char		n[7];
	bool		isnull;

	new_key_args(k, v, n);
	if (SPI_execute_plan(plan_claim_new_insert, v, n, false, 1) != SPI_OK_INSERT_RETURNING)
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
bool
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
 * The outcomes of FINISH slots and the rows of AUDIT slots with three
 * statements: keys released, keys finished, audit rows (answers to money
 * calls and look-ups alike).  Look-ups come in crowds, and one statement
 * costs far less than one a row.
 */
void
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
