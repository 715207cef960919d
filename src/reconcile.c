/*-------------------------------------------------------------------------
 *
 * reconcile.c
 *	  Did EnKash make the load whose outcome is unknown?  Only a positive
 *	  answer either way counts.
 *
 * Get Transaction Details (/transaction/all, by the pgReferenceNumber the
 * load sent as uniqueReferenceNumber) is asked with what the docs require:
 * companyId, cardAccountId, enKashCardId and the reference.
 *
 *   found:   a transaction with that reference, the load's amount and card;
 *   absent:  code 0 with a whole list (either shape, every page) that holds
 *            no such reference, or a decline listed in
 *            enkash.lookup_not_found_codes;
 *   unsure:  anything else: another decline, a shape we cannot read, a
 *            list we cannot tell is whole, the reference with another
 *            amount or card.  The load is neither recorded nor resent.
 *
 *-------------------------------------------------------------------------
 */
#include "enkash.h"

#include "endpoints.h"
#include "reconcile.h"
#include "access/xact.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/numeric.h"
#include "utils/resowner.h"

/* A look-up listing longer than this many pages is not read to the end. */
#define MAX_LOOKUP_PAGES 1000

/* The body members the look-up repeats from the load, all required. */
static const char *const lookup_members[] = {"companyId", "cardAccountId", "enKashCardId"};

/* What one look-up call brought back. */
typedef struct LookupAnswer
{
	Jsonb	   *payload;		/* code 0: the payload; else NULL */
	char	   *code;			/* a decline: EnKash's code and message */
	char	   *message;
} LookupAnswer;

/* Is this decline one that enkash.lookup_not_found_codes calls "not found"? */
static bool
declared_not_found(const char *code, const char *message)
{
	char	   *list = pstrdup(enkash_lookup_not_found_codes ? enkash_lookup_not_found_codes : "");
	char	   *save = NULL;

	for (char *entry = strtok_r(list, ";", &save); entry; entry = strtok_r(NULL, ";", &save))
	{
		char	   *colon = strchr(entry, ':');
		char	   *text = colon ? colon + 1 : NULL;

		if (colon)
			*colon = '\0';
		while (*entry == ' ')
			entry++;
		for (char *e = entry + strlen(entry); e > entry && e[-1] == ' ';)
			*--e = '\0';
		if (strcmp(entry, code) != 0)
			continue;
		if (text == NULL)
			return true;
		while (*text == ' ')
			text++;
		for (char *e = text + strlen(text); e > text && e[-1] == ' ';)
			*--e = '\0';
		if (message && pg_strcasecmp(text, message) == 0)
			return true;
	}
	return false;
}

/*
 * One look-up call, in a subtransaction so that a decline can be caught
 * and ended cleanly.  Any other error goes on to the caller.
 */
static LookupAnswer
ask(const EnkashEndpoint *lookup, const StringInfo body)
{
	MemoryContext cxt = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	EnkashAnswer answer = {0};
	LookupAnswer result = {0};
	Jsonb	   *volatile payload = NULL;

	BeginInternalSubTransaction(NULL);
	PG_TRY();
	{
		payload = enkash_send_answered(lookup, body->data, body->len, NULL, &answer);
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = owner;
	}
	PG_CATCH();
	{
		ErrorData  *edata = enkash_current_error(cxt);

		/* the answer was read in the subtransaction's memory: copy it out first */
		if (edata->sqlerrcode == ERRCODE_ENKASH_REJECTED && answer.code)
		{
			result.code = pstrdup(answer.code);
			result.message = answer.message ? pstrdup(answer.message) : NULL;
		}
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = owner;
		if (result.code == NULL)
			ReThrowError(edata);
		FlushErrorState();
	}
	PG_END_TRY();
	if (payload)
		result.payload = (Jsonb *) DatumGetPointer(datumCopy(PointerGetDatum(payload), false, -1));
	return result;
}

/* Equal JSON numbers, the amount as EnKash wrote it and as the load sent it. */
static bool
same_amount(const JsonbValue *a, const JsonbValue *b)
{
	return a->type == jbvNumeric && b->type == jbvNumeric &&
		DatumGetInt32(DirectFunctionCall2(numeric_cmp,
										  NumericGetDatum(a->val.numeric),
										  NumericGetDatum(b->val.numeric))) == 0;
}

/*
 * A transaction of the list: is it the load?  LOOKUP_FOUND if reference,
 * amount and card match; LOOKUP_UNSURE (with *why) if only the reference
 * does; LOOKUP_ABSENT if it is another transaction.
 */
static LookupVerdict
check_item(Jsonb *txn, Jsonb *load, const char *key, char **why)
{
	char	   *ref;
	char	   *card;
	JsonbValue	amount;
	JsonbValue	sent;

	if (!JB_ROOT_IS_OBJECT(txn))
	{
		*why = "EnKash's list holds an item that is not a transaction.";
		return LOOKUP_UNSURE;
	}
	ref = enkash_json_string(txn, "pgReferenceNumber");
	if (ref == NULL)
	{
		*why = "EnKash's list holds a transaction without a reference number.";
		return LOOKUP_UNSURE;
	}
	if (strcmp(ref, key) != 0)
		return LOOKUP_ABSENT;

	card = enkash_json_string(txn, "enkashCardId");
	if (card == NULL)
		card = enkash_json_string(txn, "enKashCardId");
	if ((enkash_json_member(txn, "principalAmount", &amount) || enkash_json_member(txn, "amount", &amount)) &&
		enkash_json_member(load, "amount", &sent) && same_amount(&amount, &sent) &&
		card && strcmp(card, enkash_json_string(load, "enKashCardId")) == 0)
		return LOOKUP_FOUND;
	*why = psprintf("EnKash has a transaction with reference \"%s\", but its amount or card is not the load's.",
					key);
	return LOOKUP_UNSURE;
}

/*
 * Asks EnKash about the load (json, the request as sent) with reference key.
 * *found is the transaction when found; *why says, when unsure, what
 * EnKash's answer left open.
 */
LookupVerdict
enkash_find_load(const char *json, size_t len, const char *key,
				 Jsonb **found, char **why)
{
	const EnkashEndpoint *lookup = enkash_endpoint_by_name("get_transaction");
	Jsonb	   *load = enkash_parse_json_or_null(json, len);
	StringInfoData base;
	StringInfoData q;
	int64		seen = 0;
	int			page_size = 0;
	/* "page,size" (checked when set): the member names of the paging */
	const char *size_field = strchr(enkash_paging_fields, ',') + 1;

	*found = NULL;
	*why = NULL;
	initStringInfo(&base);
	appendStringInfoChar(&base, '{');
	for (int i = 0; i < lengthof(lookup_members); i++)
	{
		char	   *value = enkash_json_string(load, lookup_members[i]);

		if (value == NULL)
		{
			*why = psprintf("The load has no %s to ask EnKash with.", lookup_members[i]);
			return LOOKUP_UNSURE;
		}
		escape_json(&base, lookup_members[i]);
		appendStringInfoChar(&base, ':');
		escape_json(&base, value);
		appendStringInfoChar(&base, ',');
	}
	escape_json(&base, "pgReferenceNumber");
	appendStringInfoChar(&base, ':');
	escape_json(&base, key);
	initStringInfo(&q);

	for (int page = 0; page < MAX_LOOKUP_PAGES; page++)
	{
		LookupAnswer a;
		EnkashList	list;
		JsonbIterator *it;
		JsonbValue	v;
		JsonbIteratorToken token;
		Jsonb	   *txn;
		int			items = 0;

		resetStringInfo(&q);
		appendBinaryStringInfo(&q, base.data, base.len);
		/* the first look-up as documented; further pages as the listing asks */
		if (page > 0)
			appendStringInfo(&q, ",\"%.*s\":%d,\"%s\":%d",
							 (int) (size_field - enkash_paging_fields - 1), enkash_paging_fields,
							 page, size_field, page_size);
		appendStringInfoChar(&q, '}');

		a = ask(lookup, &q);
		if (a.payload == NULL)
		{
			if (declared_not_found(a.code, a.message))
				return LOOKUP_ABSENT;
			*why = psprintf("EnKash declined the look-up (code %s: %s), which does not say it has no such transaction.",
							a.code, a.message ? a.message : "no reason given");
			return LOOKUP_UNSURE;
		}

		if (!enkash_list_of(a.payload, &list))
		{
			/* one bare transaction: it settles it only if it is the load */
			if (enkash_json_member(a.payload, "pgReferenceNumber", &v))
			{
				if (check_item(a.payload, load, key, why) == LOOKUP_FOUND)
				{
					*found = a.payload;
					return LOOKUP_FOUND;
				}
				if (*why == NULL)
					*why = "EnKash answered with a single transaction of another reference.";
				return LOOKUP_UNSURE;
			}
			*why = "EnKash's answer is neither a list of transactions nor a transaction.";
			return LOOKUP_UNSURE;
		}

		it = JsonbIteratorInit(list.items);
		while ((token = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
		{
			if (token != WJB_ELEM)
				continue;
			items++;
			txn = JsonbValueToJsonb(&v);
			switch (check_item(txn, load, key, why))
			{
				case LOOKUP_FOUND:
					*found = txn;
					return LOOKUP_FOUND;
				case LOOKUP_UNSURE:
					return LOOKUP_UNSURE;
				case LOOKUP_ABSENT:
					break;
			}
		}
		seen += items;
		if (page == 0)
			page_size = items;

		/* Absent only when the list says it is whole. */
		if ((list.total_records >= 0 && seen >= list.total_records) ||
			(list.total_records < 0 && list.total_pages >= 0 && page + 1 >= list.total_pages))
			return LOOKUP_ABSENT;
		if (list.total_records < 0 && list.total_pages < 0)
		{
			*why = "EnKash's list does not say how many transactions there are.";
			return LOOKUP_UNSURE;
		}
		if (items == 0)
		{
			*why = "EnKash's list ended before the number of transactions it announced.";
			return LOOKUP_UNSURE;
		}
		CHECK_FOR_INTERRUPTS();
	}
	*why = psprintf("EnKash's list goes on past %d pages.", MAX_LOOKUP_PAGES);
	return LOOKUP_UNSURE;
}
