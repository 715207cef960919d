/*-------------------------------------------------------------------------
 *
 * ledger.c
 *	  The backend side of the ledger: claim a key, record a send, its
 *	  outcome, or an audit row, each through a slot (ledger_slots.c) that
 *	  the worker writes (ledger_worker.c).
 *
 *-------------------------------------------------------------------------
 */
#include "ledger_internal.h"

#include "commands/dbcommands.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/guc.h"

/* How long a look-up waits for a free slot for its audit row. */
#define AUDIT_SLOT_WAIT_MS 1000

/* Money is recorded in the worker's database; calls elsewhere are refused. */
static void
check_database(void)
{
	Oid			dboid = enkash_ledger_worker_database();

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

enkash_noreturn
static void
worker_unavailable(void)
{
	ereport(ERROR,
			(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
			 errmsg("the enkash worker is not running, so the call could not be recorded; nothing was sent"),
			 errhint("Check the server log for \"enkash worker\" and that database \"%s\" exists and has the extension.",
					 enkash_database)));
}

enkash_noreturn
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

char *
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
					const char *fingerprint, const Jsonb *request,
					bool look_first, LedgerClaim *claim)
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
	slot_put_jsonb(slot, F_REQUEST, request);
	slot->call_ms = enkash_longest_call_ms();
	slot->look_first = look_first;
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
					  const Jsonb *request)
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
	slot_put_jsonb(slot, F_REQUEST, request);
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
void
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
					 const Jsonb *payload, const char *err_sqlstate,
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
	slot_put_jsonb(slot, F_PAYLOAD, payload);
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
