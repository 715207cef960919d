/*-------------------------------------------------------------------------
 *
 * endpoints.c
 *	  The table of EnKash endpoints, as EnKash's pages document them.
 *
 * One row per endpoint; its fields in JSON order; the page each row follows
 * (docs.enkash.com/<page>), or NULL where nothing is published.  The SQL declarations in
 * the install script name their arguments after the fields' arg names, and
 * api.c matches the two.  This file is data plus the path overrides for
 * paths we inferred (enkash.endpoint_paths).
 *
 *-------------------------------------------------------------------------
 */
#include "endpoints.h"

#include "enkash.h"
#include "fmgr.h"
#include "funcapi.h"
#include "utils/builtins.h"

/* Enumerations from the contract */
static const char *const account_types[] = {
	"RELOADABLE_GPR", "CORPORATE", "GIFT", "MEAL", "FUEL", "VIRTUAL_ACCOUNT",
	"INVOICE_DISCOUNTING", "EMPLOYEE_REWARDS", "CHANNEL_INCENTIVE",
	"ENKASH_COIN", "PETTY_CASH", "FREEDOM_REWARDS", "PAYOUT", "E_RUPI_VOUCHER",
	NULL
};
static const char *const load_types[] = {
	"ALLOCATE_FUND", "LOAD_MONEY", "SALE", "REPAYMENT", "RECOVERY", "REFUND",
	"REVERSAL", "CREDIT", "FEE", NULL
};
static const char *const otp_actions[] = {"TRANSACTION_OTP", NULL};
static const char *const otp_media[] = {"MOBILE", "MFA", NULL};
static const char *const block_codes[] = {"L", "UL", "BL", "AP", NULL};
static const char *const txn_types[] = {"CR", "DR", NULL};

/* Shorthands for the fields most endpoints share */
#define COMPANY {"company_id", "companyId", EF_TEXT, EF_REQUIRED | EF_COMPANY, EV_ID}
#define ACCOUNT {"card_account_id", "cardAccountId", EF_TEXT, EF_REQUIRED, EV_ID}
#define CARD {"enkash_card_id", "enKashCardId", EF_TEXT, EF_REQUIRED, EV_ID}
#define OPTIONAL_CARD {"enkash_card_id", "enKashCardId", EF_TEXT, 0, EV_ID}
#define OTP_FIELDS(otp_required_flags) \
	{"otp_medium", "otpMedium", EF_TEXT, EF_REQUIRED, EV_ANY, otp_media}, \
	{"otp_request_id", "otpRequestId", EF_TEXT, 0, EV_ID}, \
	{"otp", "otp", EF_TEXT, EF_SECRET}, \
	{"mfa_code", "mfaCode", EF_TEXT, EF_SECRET}, \
	{"otp_required", "otpRequired", EF_BOOL, otp_required_flags}
#define IDEMPOTENCY_KEY {"idempotency_key", NULL, EF_TEXT, EF_REQUIRED | EF_KEY, EV_ID}
#define END {NULL}

static const EnkashField create_card_account_fields[] = {
	COMPANY,
	{"company_name", "companyName", EF_TEXT, EF_REQUIRED},
	{"user_id", "userId", EF_TEXT, 0, EV_ID},
	{"plan_master_id", "planMasterId", EF_TEXT, EF_REQUIRED, EV_ID},
	{"email", "email", EF_TEXT, EF_REQUIRED},
	{"mobile", "mobile", EF_TEXT, EF_REQUIRED},
	{"account_title", "accountTitle", EF_TEXT, EF_REQUIRED},
	{"account_type", "accountType", EF_TEXT, EF_REQUIRED, EV_ANY, account_types},
	IDEMPOTENCY_KEY,
	END
};

#define DELIVERY_FIELDS(required) \
	{"delivery_address", "deliveryAddress", EF_TEXT, required}, \
	{"delivery_address2", "deliveryAddress2", EF_TEXT, 0}, \
	{"delivery_city", "deliveryCity", EF_TEXT, required}, \
	{"delivery_state", "deliveryState", EF_TEXT, required}, \
	{"delivery_country", "deliveryCountry", EF_TEXT, 0}, \
	{"delivery_pincode", "deliveryPincode", EF_TEXT, required}

/*
 * Prepaid and gift cards differ only in middleName and loadAmount's rule.
 * email, mobile and firstName are optional; email and mobile have the
 * patterns the pages give; gender is free text (the example is "M").
 */
#define CARD_HOLDER_HEAD \
	COMPANY, \
	ACCOUNT, \
	{"user_id", "userId", EF_TEXT, 0, EV_ID}, \
	{"email", "email", EF_TEXT, 0, EV_EMAIL}, \
	{"mobile", "mobile", EF_TEXT, 0, EV_MOBILE}, \
	{"title", "title", EF_TEXT, 0}, \
	{"first_name", "firstName", EF_TEXT, 0}

#define CARD_HOLDER_TAIL(load_flags) \
	{"last_name", "lastName", EF_TEXT, EF_REQUIRED}, \
	{"gender", "gender", EF_TEXT, 0}, \
	{"address", "address", EF_TEXT, 0}, \
	{"address2", "address2", EF_TEXT, 0}, \
	{"city", "city", EF_TEXT, 0}, \
	{"state", "state", EF_TEXT, 0}, \
	{"country", "country", EF_TEXT, 0}, \
	{"pincode", "pincode", EF_TEXT, 0}, \
	{"primary_enkash_card", "primaryEnKashCard", EF_BOOL, 0}, \
	{"physical_card", "physicalCard", EF_BOOL, 0}, \
	{"load_amount", "loadAmount", EF_AMOUNT, load_flags}, \
	{"remarks", "remarks", EF_TEXT, 0}, \
	{"physical_delivery_address_flag", "physicalDeliveryAddressFlag", EF_BOOL, 0}, \
	DELIVERY_FIELDS(0), \
	{"pan_number", "documents", EF_PAN_DOCUMENT, 0}, \
	{"documents", "documents", EF_DOCUMENTS, 0}, \
	{"special_date", "specialDate", EF_DATE, 0}

static const EnkashField create_prepaid_card_fields[] = {
	CARD_HOLDER_HEAD,
	CARD_HOLDER_TAIL(0),
	IDEMPOTENCY_KEY,
	END
};

static const EnkashField create_gift_card_fields[] = {
	CARD_HOLDER_HEAD,
	{"middle_name", "middleName", EF_TEXT, 0},
	CARD_HOLDER_TAIL(EF_REQUIRED),
	IDEMPOTENCY_KEY,
	END
};

static const EnkashField set_card_pin_fields[] = {
	COMPANY, ACCOUNT, CARD,
	{"pin_block", "pinBlock", EF_TEXT, EF_REQUIRED | EF_SECRET},
	{"otp_required", "otpRequired", EF_BOOL, EF_REQUIRED},
	END
};

static const EnkashField load_balance_fields[] = {
	COMPANY, ACCOUNT, CARD,
	{"created_by", "createdBy", EF_TEXT, EF_REQUIRED},
	{"amount", "amount", EF_AMOUNT, EF_REQUIRED},
	{"description", "description", EF_TEXT, 0},
	{"type", "type", EF_TEXT, EF_REQUIRED, EV_ANY, load_types},
	{"transaction_code", "transactionCode", EF_TEXT, EF_REQUIRED, EV_ID},
	{"unique_reference_number", "uniqueReferenceNumber", EF_TEXT, EF_REQUIRED | EF_KEY, EV_ID},
	{"remarks", "remarks", EF_TEXT, 0},
	END
};

static const EnkashField get_card_account_fields[] = {
	COMPANY, ACCOUNT, END
};

static const EnkashField generate_card_otp_fields[] = {
	{"card_otp_action", "cardOtpAction", EF_TEXT, EF_REQUIRED, EV_ANY, otp_actions},
	ACCOUNT, CARD, END
};

static const EnkashField view_card_details_fields[] = {
	COMPANY, ACCOUNT, CARD,
	{"otp_request_id", "otpRequestId", EF_TEXT, EF_REQUIRED, EV_ID},
	{"otp", "otp", EF_TEXT, EF_REQUIRED | EF_SECRET},
	END
};

static const EnkashField set_card_controls_fields[] = {
	COMPANY, ACCOUNT,
	{"enkash_card_ids", "enKashCardIds", EF_TEXT_ARRAY, EF_REQUIRED, EV_ID},
	{"pos_allowed", "posAllowed", EF_BOOL, 0},
	{"online_allowed", "onlineAllowed", EF_BOOL, 0},
	{"atm_allowed", "atmAllowed", EF_BOOL, 0},
	{"international_allowed", "internationalAllowed", EF_BOOL, 0},
	{"contactless_allowed", "contactlessAllowed", EF_BOOL, 0},
	/* JsonNullable limits: a number sets, null (clear_limits) clears */
	{"per_txn_limit", "perTxnLimit", EF_AMOUNT, EF_ZERO_OK | EF_NULLABLE},
	{"dtd", "dtd", EF_AMOUNT, EF_ZERO_OK | EF_NULLABLE},
	{"mtd", "mtd", EF_AMOUNT, EF_ZERO_OK | EF_NULLABLE},
	{"ytd", "ytd", EF_AMOUNT, EF_ZERO_OK | EF_NULLABLE},
	{"dtd_count", "dtdCount", EF_COUNT, EF_NULLABLE},
	{"mtd_count", "mtdCount", EF_COUNT, EF_NULLABLE},
	{"ytd_count", "ytdCount", EF_COUNT, EF_NULLABLE},
	{"pos_daily_limit", "posDailyLimit", EF_AMOUNT, EF_ZERO_OK | EF_NULLABLE},
	{"pos_daily_limit_count", "posDailyLimitCount", EF_COUNT, EF_NULLABLE},
	{"ecom_daily_limit", "ecomDailyLimit", EF_AMOUNT, EF_ZERO_OK | EF_NULLABLE},
	{"ecom_daily_limit_count", "ecomDailyLimitCount", EF_COUNT, EF_NULLABLE},
	{"contact_less_daily_limit", "contactLessDailyLimit", EF_AMOUNT, EF_ZERO_OK | EF_NULLABLE},
	{"contact_less_daily_limit_count", "contactLessDailyLimitCount", EF_COUNT, EF_NULLABLE},
	{"admin_user", "adminUser", EF_BOOL, 0},
	{"clear_limits", NULL, EF_TEXT_ARRAY, EF_CLEARS},
	/* the auto-load settings, whose member names the pages leave out */
	{"extra_members", NULL, EF_MEMBERS, 0},
	END
};

static const EnkashField get_card_controls_fields[] = {
	COMPANY, ACCOUNT, CARD, END
};

static const EnkashField request_card_replacement_fields[] = {
	CARD,
	{"card_account_id", "cardAccountId", EF_TEXT, 0, EV_ID},
	OTP_FIELDS(0),				/* otpRequired: only Block Card's page has it */
	IDEMPOTENCY_KEY,
	END
};

static const EnkashField block_card_fields[] = {
	COMPANY, ACCOUNT, CARD,
	{"block_code", "blockCode", EF_TEXT, EF_REQUIRED, EV_ANY, block_codes},
	{"reason", "reason", EF_TEXT, 0},
	{"created_by", "createdBy", EF_TEXT, EF_REQUIRED},
	OTP_FIELDS(EF_REQUIRED),
	END
};

static const EnkashField order_physical_card_fields[] = {
	COMPANY, ACCOUNT, CARD,
	DELIVERY_FIELDS(EF_REQUIRED),
	IDEMPOTENCY_KEY,
	END
};

/* Without enKashCardId: every card of the account, {recordsCount, data}. */
static const EnkashField get_card_fields[] = {
	COMPANY, ACCOUNT, OPTIONAL_CARD, END
};

static const EnkashField get_transaction_fields[] = {
	COMPANY, ACCOUNT, CARD,			/* enKashCardId required [doc: api-13551023] */
	{"pg_reference_number", "pgReferenceNumber", EF_TEXT, EF_REQUIRED, EV_ID},
	END
};

static const EnkashField transactions_fields[] = {
	COMPANY, ACCOUNT, OPTIONAL_CARD,
	{"status", "status", EF_TEXT, 0, EV_ID},
	{"card_transaction_type", "cardTransactionType", EF_TEXT, 0, EV_ANY, txn_types},
	{"amount_from", "amountFrom", EF_AMOUNT, EF_ZERO_OK | EF_RANGE_START},
	{"amount_to", "amountTo", EF_AMOUNT, EF_ZERO_OK},
	{"txn_date_from", "txnDateFrom", EF_TIMESTAMP, EF_RANGE_START},
	{"txn_date_to", "txnDateTo", EF_TIMESTAMP, 0},
	{"enkash_transaction_ids", "enKashTransactionIds", EF_TEXT_ARRAY, 0, EV_ID},
	{"pg_reference_numbers", "pgReferenceNumbers", EF_TEXT_ARRAY, 0, EV_ID},
	END
};

#define PREFIX_PATH ""

/* The page of each row: docs.enkash.com/<docs>; NULL where none is published. */
const EnkashEndpoint enkash_endpoints[] = {
	{"enkash_create_card_account", "create_card_account", "the card account creation",
	"/cardAccount/create", ENKASH_MONEY, NULL, create_card_account_fields, "api-8990350"},
	{"enkash_create_prepaid_card", "create_prepaid_card", "the prepaid card creation",
	PREFIX_PATH, ENKASH_MONEY, NULL, create_prepaid_card_fields, "api-13438387"},
	{"enkash_create_gift_card", "create_gift_card", "the gift card creation",
	PREFIX_PATH, ENKASH_MONEY, NULL, create_gift_card_fields, "api-13012983"},
	{"enkash_set_card_pin", "set_card_pin", "setting the card PIN",
	"/setPin", ENKASH_SECRET_IN, NULL, set_card_pin_fields, "api-8990358"},
	{"enkash_load_balance", "load_balance", "the card load",
	"/balance", ENKASH_MONEY, "\"transactionType\":\"CR\"", load_balance_fields, "api-13438388"},
	{"enkash_get_card_account", "get_card_account", "the card account look-up",
	"/cardAccount/get", ENKASH_READ, NULL, get_card_account_fields, "api-8990349"},
	{"enkash_generate_card_otp", "generate_card_otp", "the card OTP request",
	"/otp", ENKASH_WRITE, NULL, generate_card_otp_fields, "api-12877368"},
	{"enkash_view_card_details", "view_card_details", "viewing the card details",
	"/view", ENKASH_SECRET_OUT, NULL, view_card_details_fields, NULL, true},
	{"enkash_set_card_controls", "set_card_controls", "setting the card controls",
	"/velocity/rule", ENKASH_WRITE, NULL, set_card_controls_fields, "api-13013003"},
	{"enkash_get_card_controls", "get_card_controls", "the card controls look-up",
	"/velocity/rule/get", ENKASH_READ, NULL, get_card_controls_fields, "api-13013004"},
	{"enkash_request_card_replacement", "request_card_replacement", "the card replacement",
	"/replaceCard", ENKASH_MONEY, NULL, request_card_replacement_fields, "api-13438389"},
	{"enkash_block_card", "block_card", "the card block",
	"/block", ENKASH_WRITE, NULL, block_card_fields, "api-13438390"},
	{"enkash_order_physical_card", "order_physical_card", "the physical card order",
	"/physicalCard/order", ENKASH_MONEY, NULL, order_physical_card_fields, NULL, true},
	{"enkash_get_card", "get_card", "the card look-up",
	"/search", ENKASH_READ, NULL, get_card_fields, "api-24480521"},
	{"enkash_get_transaction", "get_transaction", "the transaction look-up",
	"/transaction/all", ENKASH_READ, NULL, get_transaction_fields, "api-13551023"},
	{"transaction_pages", "transactions", "the transaction listing",
	"/transaction/all", ENKASH_READ, NULL, transactions_fields, "api-13551023", true, true},
	{NULL}
};

/* The endpoint of a SQL function; "..._async" names the queued variant. */
const EnkashEndpoint *
enkash_endpoint_by_function(const char *function)
{
	size_t		len = strlen(function);

	if (len > 6 && strcmp(function + len - 6, "_async") == 0)
		len -= 6;
	for (const EnkashEndpoint *ep = enkash_endpoints; ep->function; ep++)
		if (strlen(ep->function) == len && strncmp(ep->function, function, len) == 0)
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

/*
 * enkash.endpoint_paths overrides inferred paths: "name=/path, name=/path".
 * Checked when set, so a typo fails at SET or reload rather than at a call.
 */
bool
enkash_check_endpoint_paths(char **newval, void **extra, GucSource source)
{
	char	   *list = pstrdup(*newval ? *newval : "");
	char	   *save = NULL;

	for (char *item = strtok_r(list, ",", &save); item;
		 item = strtok_r(NULL, ",", &save))
	{
		char	   *eq = strchr(item, '=');
		char	   *name = item;
		char	   *path;
		const EnkashEndpoint *ep;

		while (*name == ' ')
			name++;
		if (eq == NULL)
		{
			GUC_check_errdetail("Each entry must be name=/path.");
			return false;
		}
		*eq = '\0';
		path = eq + 1;
		while (*path == ' ')
			path++;
		for (char *end = eq - 1; end >= name && *end == ' '; end--)
			*end = '\0';
		for (char *end = path + strlen(path) - 1; end >= path && *end == ' '; end--)
			*end = '\0';
		ep = enkash_endpoint_by_name(name);
		if (ep == NULL || !ep->inferred_path)
		{
			GUC_check_errdetail("\"%s\" is not an endpoint whose path can be overridden.", name);
			return false;
		}
		if (path[0] != '/' || strstr(path, "..") || strpbrk(path, "?#%@ \\"))
		{
			GUC_check_errdetail("The path for \"%s\" must start with / and hold no query, fragment or \"..\".", name);
			return false;
		}
	}
	return true;
}

/* The path of an endpoint, as overridden by enkash.endpoint_paths. */
/*
 * Whether EnKash can be asked if a call at endpoint happened: a load is
 * found by its reference (reconcile.c); no other call has a look-up by key.
 */
bool
enkash_endpoint_reconciles(const EnkashEndpoint *endpoint)
{
	return strcmp(endpoint->name, "load_balance") == 0;
}

const char *
enkash_endpoint_path(const EnkashEndpoint *ep)
{
	const char *setting = enkash_endpoint_paths;
	size_t		name_len = strlen(ep->name);

	if (!ep->inferred_path || setting == NULL || setting[0] == '\0')
		return ep->path;

	for (const char *p = setting; *p;)
	{
		const char *end = strchr(p, ',');
		const char *eq;

		if (end == NULL)
			end = p + strlen(p);
		while (p < end && *p == ' ')
			p++;
		eq = memchr(p, '=', end - p);
		if (eq && (size_t) (eq - p) >= name_len &&
			strncmp(p, ep->name, name_len) == 0)
		{
			const char *rest = p + name_len;

			while (rest < eq && *rest == ' ')
				rest++;
			if (rest == eq)
			{
				const char *path = eq + 1;
				const char *path_end = end;

				while (*path == ' ')
					path++;
				while (path_end > path && path_end[-1] == ' ')
					path_end--;
				return pnstrdup(path, path_end - path);
			}
		}
		p = *end ? end + 1 : end;
	}
	return ep->path;
}

static const char *
kind_name(EnkashKind kind)
{
	switch (kind)
	{
		case ENKASH_READ:
			return "read";
		case ENKASH_WRITE:
			return "write";
		case ENKASH_MONEY:
			return "money";
		case ENKASH_SECRET_IN:
			return "secret in";
		case ENKASH_SECRET_OUT:
			return "secret out";
	}
	return "?";
}

PG_FUNCTION_INFO_V1(enkash_endpoints_list);

/* enkash_endpoints(): the table above, for people (and the README). */
Datum
enkash_endpoints_list(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;

	InitMaterializedSRF(fcinfo, 0);
	for (const EnkashEndpoint *ep = enkash_endpoints; ep->function; ep++)
	{
		Datum		values[8];
		bool		nulls[8] = {0};
		StringInfoData fields;
		StringInfoData secrets;

		initStringInfo(&fields);
		initStringInfo(&secrets);
		for (const EnkashField *f = ep->fields; f->arg; f++)
		{
			bool		seen = false;

			/* a member two arguments can give (pan_number, documents) once */
			for (const EnkashField *g = ep->fields; g < f; g++)
				seen |= (f->json && g->json && strcmp(f->json, g->json) == 0);
			if (f->json == NULL || seen)
				continue;
			appendStringInfo(&fields, "%s%s%s", fields.len ? ", " : "", f->json,
							 (f->flags & EF_REQUIRED) && !(f->flags & EF_COMPANY) ? "" : "?");
			if (f->flags & EF_SECRET)
				appendStringInfo(&secrets, "%s%s", secrets.len ? ", " : "", f->json);
		}
		values[0] = CStringGetTextDatum(strcmp(ep->function, "transaction_pages") == 0 ?
										"enkash_transactions" : ep->function);
		values[1] = CStringGetTextDatum(ep->name);
		values[2] = CStringGetTextDatum(enkash_endpoint_path(ep));
		values[3] = CStringGetTextDatum(kind_name(ep->kind));
		values[4] = CStringGetTextDatum(fields.data);
		if (secrets.len)
			values[5] = CStringGetTextDatum(secrets.data);
		else
			nulls[5] = true;
		if (ep->docs)
			values[6] = CStringGetTextDatum(ep->docs);
		else
			nulls[6] = true;
		/* "doc": path and fields as published; "inferred": our reading */
		values[7] = CStringGetTextDatum(ep->docs && !ep->inferred_path ?
										"doc" : "inferred");
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}
