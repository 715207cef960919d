/*-------------------------------------------------------------------------
 *
 * ledger_internal.h
 *	  What the ledger's files share: the slots in shared memory, the
 *	  statements over them, and the batches of many rows.  Only ledger*.c
 *	  include it (test/lint/layers.pl).
 *
 *-------------------------------------------------------------------------
 */
#ifndef ENKASH_LEDGER_INTERNAL_H
#define ENKASH_LEDGER_INTERNAL_H

#include "enkash.h"

#include "enkash_spi.h"
#include "ledger.h"
#include "mb/pg_wchar.h"
#include "storage/condition_variable.h"
#include "storage/latch.h"
#include "storage/lwlock.h"

/* Not exported from the library: no other module can bind to these names. */
#pragma GCC visibility push(hidden)

#define LEDGER_SLOTS 256
/* The most look-ups' audit rows let gather: a quarter of the slots. */
#define LEDGER_GATHER_SLOTS (LEDGER_SLOTS / 4)
#define LEDGER_DATA 16384

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
	bool		look_first;		/* OP_CLAIM: a new key is asked about before sending */
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
	bool		gathering;		/* the worker lets look-ups' audit rows gather */
	int			gathered;		/* slots submitted meanwhile */
	int			slots_used;		/* slots[] beyond this were never taken */
	ConditionVariable freed;	/* a slot became free */
	LedgerSlot	slots[LEDGER_SLOTS];
} LedgerShared;

extern LedgerShared *ledger;

/* ledger_slots.c: slot contents and the queue */
extern void slot_reset_fields(LedgerSlot *slot);
#define SIZE_NOTE_MAX 64
extern const char *size_note(char *note, size_t bytes);
extern void slot_put(LedgerSlot *slot, SlotField field, const char *value, bool is_json);
extern void slot_put_jsonb(LedgerSlot *slot, SlotField field, const Jsonb *value);
extern const char *slot_get(LedgerSlot *slot, SlotField field);
extern void slot_put_exchange(LedgerSlot *slot, const LedgerExchange *x);
extern LedgerSlot *slot_acquire(LedgerOp op, bool reply, int max_wait_ms);
extern void slot_submit(LedgerSlot *slot);
extern void slot_free(LedgerSlot *slot);
extern void slot_release(LedgerSlot *slot);
extern bool slot_wait(LedgerSlot *slot);
extern bool keys_swept(void);

/* ledger.c: the backend API */
extern char *copy_or_null(const char *s);
extern void superseded_warning(const char *key);

/* ledger_sql.c: the statements, one row at a time */
extern SPIPlanPtr plan_claim_insert;
extern SPIPlanPtr plan_claim_new_insert;
extern SPIPlanPtr plan_audits;
extern SPIPlanPtr plan_claim_inserts;
extern SPIPlanPtr plan_audits_sent;
extern SPIPlanPtr plan_finish_keys;
extern SPIPlanPtr plan_release_keys;
extern const Oid claim_types[7];
extern const Oid sent_types[5];
/* The columns of an audit row as plan_audit takes them, in order. */
#define AUDIT_COLUMNS 13
StaticAssertDecl(AUDIT_COLUMNS <= ENKASH_COLUMNS_MAX, "audit rows are written as columns");
#define AUDIT_COLUMN_NAMES \
	"role, endpoint, idempotency_key, key_id, sent_id, request, outcome, " \
	"http_status, enkash_code, message, sqlstate, latency_ms, response"
extern const Oid audit_types[AUDIT_COLUMNS];
extern void prepare_plans(void);
extern Datum text_arg(const char *s, char *nulls, int i);
extern Datum jsonb_field_arg(LedgerSlot *slot, SlotField field, char *nulls, int i);
extern void audit_args(LedgerSlot *slot, Datum *v, char *n);
extern Datum text_array(Datum *values, int n);
extern void answer_lost(Datum ids, Datum keys, const char *why);
extern int64 insert_sent(const char *role, const char *endpoint, const char *key,
						 Datum request, char request_null, int64 key_id);
extern void slot_keep_names(LedgerSlot *slot);
extern void process_claim(LedgerSlot *slot);
extern void process_sending(LedgerSlot *slot);
extern void finish_key_args(LedgerSlot *slot, Datum *v, char *n);
extern void process_finish(LedgerSlot *slot);
extern void process_audit(LedgerSlot *slot);

/* ledger_many.c: statements over many rows */
/* Slots whose rows are written together. */
typedef struct SlotBatch
{
	LedgerSlot **slots;
	int			count;
} SlotBatch;

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

typedef struct NewKeys
{
	NewKey	  **keys;
	int			count;
} NewKeys;

extern bool claim_new_key(NewKey *k);
extern bool claim_new_keys_together_or_not(NewKey *keys, int count, NewKeys *distinct);
extern void write_together(void *arg);

/* ledger_worker.c */
extern bool needs_undo(const LedgerSlot *slot);

#pragma GCC visibility pop

#endif							/* ENKASH_LEDGER_INTERNAL_H */
