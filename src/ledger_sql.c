/*-------------------------------------------------------------------------
 *
 * ledger_sql.c
 *	  The worker's statements: keys claimed, sends, outcomes and audit rows,
 *	  one slot at a time (ledger_many.c has those over many rows).
 *
 *-------------------------------------------------------------------------
 */
#include "ledger_internal.h"

#include "catalog/pg_type.h"
#include "storage/procarray.h"
#include "utils/builtins.h"

/* Prepared statements, kept for the worker's life. */
SPIPlanPtr plan_claim_insert;
SPIPlanPtr plan_claim_new_insert;
static SPIPlanPtr plan_claim_select;
static SPIPlanPtr plan_claim_retake;
static SPIPlanPtr plan_claim_unknown;
static SPIPlanPtr plan_audit_sent;
static SPIPlanPtr plan_finish_key;
static SPIPlanPtr plan_release_key;
static SPIPlanPtr plan_answer_lost;
static SPIPlanPtr plan_audit;
SPIPlanPtr plan_audits;
/* ... and the outbox sender's, many rows to a statement */
SPIPlanPtr plan_claim_inserts;
SPIPlanPtr plan_audits_sent;
SPIPlanPtr plan_finish_keys;
SPIPlanPtr plan_release_keys;

/* The columns of plan_claim_inserts and plan_audits_sent. */
const Oid claim_types[] = {TEXTOID, TEXTOID, TEXTOID, JSONBOID, TEXTOID, INT4OID, FLOAT8OID};
const Oid sent_types[] = {TEXTOID, TEXTOID, TEXTOID, JSONBOID, INT8OID};

/* The types of AUDIT_COLUMN_NAMES, in order. */
const Oid audit_types[AUDIT_COLUMNS] = {
	TEXTOID, TEXTOID, TEXTOID, INT8OID, INT8OID, JSONBOID, TEXTOID, INT4OID,
	TEXTOID, TEXTOID, TEXTOID, FLOAT8OID, JSONBOID
};

/* Prepares them all, once. */
void
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
		"ON CONFLICT (endpoint, key) DO NOTHING RETURNING id, attempts, "
		"  EXISTS (SELECT FROM enkash.expired_keys x WHERE x.endpoint = $1 AND x.key = $2)",
		7, t7);
	/* a key never used: an expired one is left to the ordinary claim above */
	plan_claim_new_insert = enkash_keep_plan(
		"INSERT INTO enkash.idempotency_keys AS k "
		"  (endpoint, key, fingerprint, request, role, owner_pid, state, owner_deadline) "
		"SELECT $1, $2, $3, $4, $5, $6, 'in_flight', now() + make_interval(secs => $7) "
		"WHERE NOT EXISTS (SELECT FROM enkash.expired_keys x WHERE x.endpoint = $1 AND x.key = $2) "
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
		"       NULL, NULL, $3, 'NK006', NULL, NULL "
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
		"WHERE NOT EXISTS (SELECT FROM enkash.expired_keys x WHERE x.endpoint = u.e AND x.key = u.k) "
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

Datum
text_arg(const char *s, char *nulls, int i)
{
	nulls[i] = s ? ' ' : 'n';
	return s ? CStringGetTextDatum(s) : (Datum) 0;
}

/* A JSON field of the slot as a jsonb argument, parsed only if it is text. */
Datum
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
void
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

/* A text[] of values. */
Datum
text_array(Datum *values, int n)
{
	return PointerGetDatum(construct_array(values, n, TEXTOID, -1, false, TYPALIGN_INT));
}

/*
 * Requests whose answers were lost (the session or the server ended while
 * they were on the wire) get an "unknown" answer row, so that every "sent"
 * row is answered.  ids, keys: the keys' ids and texts, as arrays.
 */
void
answer_lost(Datum ids, Datum keys, const char *why)
{
	Datum		v[3] = {ids, keys, CStringGetTextDatum(why)};

	if (SPI_execute_plan(plan_answer_lost, v, NULL, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "could not write to enkash.audit_log");
}

/* The "sent" audit row of a key; request is the masked request as jsonb. */
int64
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
void
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

void
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
		/*
		 * To be looked up first (after a failover, or a reference number
		 * whose key expired): its "sent" row comes if it is sent after all.
		 */
		if (slot->look_first ||
			DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3,
									   &isnull)))
		{
			slot->verdict = LEDGER_RECONCILE;
			return;
		}
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

void
process_sending(LedgerSlot *slot)
{
	char		request_null;
	Datum		request = jsonb_field_arg(slot, F_REQUEST, &request_null, 0);

	slot->audit_id = insert_sent_audit(slot, slot->key_id, request, request_null);
	slot->verdict = LEDGER_CLAIMED;
}

static const char *const state_names[] = {"succeeded", "failed", "unknown", "released"};

/* The arguments of plan_finish_key (and, as arrays, plan_finish_keys). */
void
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
void
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

void
process_audit(LedgerSlot *slot)
{
	insert_audit(slot);
	slot->verdict = LEDGER_CLAIMED;
}
