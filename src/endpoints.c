/*-------------------------------------------------------------------------
 *
 * endpoints.c
 *	  The table of EnKash endpoints (see ../../shared/enkash-api.md, section 5).
 *
 * Field order here is the order of members in the JSON body.  Keep rows in
 * the contract's order.  This file is data: behaviour belongs in api.c.
 *
 *-------------------------------------------------------------------------
 */
#include "endpoints.h"

static const char *const load_types[] = {
	"ALLOCATE_FUND", "LOAD_MONEY", "SALE", "REPAYMENT", "RECOVERY", "REFUND",
	"REVERSAL", "CREDIT", "FEE", NULL
};

static const EnkashField load_balance_fields[] = {
	{"company_id", "companyId", EF_TEXT, EF_REQUIRED | EF_ID | EF_COMPANY},
	{"card_account_id", "cardAccountId", EF_TEXT, EF_REQUIRED | EF_ID},
	{"enkash_card_id", "enKashCardId", EF_TEXT, EF_REQUIRED | EF_ID},
	{"created_by", "createdBy", EF_TEXT, EF_REQUIRED},
	{"amount", "amount", EF_AMOUNT, EF_REQUIRED},
	{"description", "description", EF_TEXT, 0},
	{"type", "type", EF_TEXT, EF_REQUIRED, load_types},
	{"transaction_code", "transactionCode", EF_TEXT, EF_REQUIRED | EF_ID},
	{"unique_reference_number", "uniqueReferenceNumber", EF_TEXT, EF_REQUIRED | EF_ID},
	{"remarks", "remarks", EF_TEXT, 0},
	{NULL}
};

static const EnkashField get_card_account_fields[] = {
	{"company_id", "companyId", EF_TEXT, EF_REQUIRED | EF_ID | EF_COMPANY},
	{"card_account_id", "cardAccountId", EF_TEXT, EF_REQUIRED | EF_ID},
	{NULL}
};

const EnkashEndpoint enkash_endpoints[] = {
	{"enkash_load_balance", "load_balance", "the card load", "/balance",
	ENKASH_MONEY, "\"transactionType\":\"CR\"", load_balance_fields},
	{"enkash_get_card_account", "get_card_account", "the card account look-up",
	"/cardAccount/get", ENKASH_READ, NULL, get_card_account_fields},
	{NULL}
};

const EnkashEndpoint *
enkash_endpoint_by_function(const char *function)
{
	for (const EnkashEndpoint *ep = enkash_endpoints; ep->function; ep++)
		if (strcmp(ep->function, function) == 0)
			return ep;
	return NULL;
}

const EnkashEndpoint *
enkash_endpoint_by_name(const char *name)
{
	for (const EnkashEndpoint *ep = enkash_endpoints; ep->function; ep++)
		if (strcmp(ep->name, name) == 0)
			return ep;
	return NULL;
}
