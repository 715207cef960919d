/*-------------------------------------------------------------------------
 *
 * endpoints.c
 *	  The API call pipeline (latency and fault injection, bearer and
 *	  partnerId checks, envelope decryption and encryption, broken response
 *	  modes) and the handlers of every Prepaid Card endpoint of the
 *	  contract, section 5.
 *
 * Handlers run under sandbox_lock and build either an envelope (HTTP 200,
 * code 0 or response_code 1) or a plain JSON error with another status.
 *
 *-------------------------------------------------------------------------
 */
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "state.h"

#define API_PREFIX "/api/v0/partner/enKashCard"

typedef struct Ctx
{
	json_t	   *in;				/* the decrypted request object */
	int			status;
	json_t	   *out;			/* set once: first error wins */
} Ctx;

/* ---- result helpers ---- */

static void
ok(Ctx *c, json_t *payload)
{
	if (c->out)
	{
		json_decref(payload);
		return;
	}
	c->out = json_pack("{s:i, s:s, s:o}", "code", 0, "message", "Success",
					   "payload", payload ? payload : json_null());
}

static void
ok_string(Ctx *c, const char *s)
{
	ok(c, json_string(s));
}

/* business failure: HTTP 200, the response_code spelling */
static void
fail(Ctx *c, const char *fmt,...)
	__attribute__((format(printf, 2, 3)));

static void
fail(Ctx *c, const char *fmt,...)
{
	char		msg[512];
	va_list		ap;

	if (c->out)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	c->out = json_pack("{s:i, s:s, s:n}", "response_code", 1,
					   "response_message", msg, "payload");
}

static void
http_error(Ctx *c, int status, const char *msg)
{
	if (c->out)
		return;
	c->status = status;
	c->out = json_pack("{s:i, s:s}", "code", status, "message", msg);
}

static bool
absent(json_t *v)
{
	return v == NULL || json_is_null(v) ||
		(json_is_string(v) && json_string_length(v) == 0);
}

/* a required string field; NULL (with c->out set) if missing or not a string */
static const char *
req_str(Ctx *c, const char *name)
{
	json_t	   *v = json_object_get(c->in, name);

	if (c->out)
		return NULL;
	if (absent(v))
	{
		fail(c, "%s is required", name);
		return NULL;
	}
	if (!json_is_string(v))
	{
		fail(c, "Invalid %s", name);
		return NULL;
	}
	return json_string_value(v);
}

/* an optional string field; NULL if absent, sets c->out if not a string */
static const char *
opt_str(Ctx *c, const char *name)
{
	json_t	   *v = json_object_get(c->in, name);

	if (c->out || absent(v))
		return NULL;
	if (!json_is_string(v))
	{
		fail(c, "Invalid %s", name);
		return NULL;
	}
	return json_string_value(v);
}

/* a required field of any JSON type */
static json_t *
req_any(Ctx *c, const char *name)
{
	json_t	   *v = json_object_get(c->in, name);

	if (c->out)
		return NULL;
	if (absent(v))
	{
		fail(c, "%s is required", name);
		return NULL;
	}
	return v;
}

static bool
company_ok(Ctx *c, const char *company)
{
	if (c->out)
		return false;
	if (company && strcmp(company, cfg.company_id) != 0)
	{
		http_error(c, 412, "Invalid company id");
		return false;
	}
	return true;
}

/* companyId where an endpoint does not require it: checked if sent */
static bool
optional_company_ok(Ctx *c)
{
	return company_ok(c, opt_str(c, "companyId"));
}

static int
account_or_fail(Ctx *c, const char *id)
{
	int			acc;

	if (c->out)
		return -1;
	acc = find_account(id);
	if (acc < 0 || strcmp(st.accounts[acc].company_id, cfg.company_id) != 0)
	{
		fail(c, "Card account not found");
		return -1;
	}
	return acc;
}

static int
card_in_account(Ctx *c, const char *id, int acc)
{
	int			card;

	if (c->out)
		return -1;
	card = find_card(id);
	if (card < 0 || st.cards[card].account != acc)
	{
		fail(c, "Card not found");
		return -1;
	}
	return card;
}

static bool
ten_digits(const char *s)
{
	int			i;

	for (i = 0; i < 10; i++)
		if (s[i] < '0' || s[i] > '9')
			return false;
	return s[10] == '\0';
}

static bool
in_list(const char *s, const char *const *list)
{
	for (; *list; list++)
		if (strcmp(s, *list) == 0)
			return true;
	return false;
}

/* otpRequired handling shared by /replaceCard and /block */
static bool
otp_check(Ctx *c, int card)
{
	json_t	   *req = json_object_get(c->in, "otpRequired");
	const char *id;
	const char *otp;

	if (c->out)
		return false;
	if (req != NULL && !json_is_null(req) && !json_is_boolean(req))
	{
		fail(c, "Invalid otpRequired");
		return false;
	}
	if (!json_is_true(req))
		return true;
	id = req_str(c, "otpRequestId");
	otp = req_str(c, "otp");
	if (c->out)
		return false;
	if (!otp_consume(id, otp, card))
	{
		fail(c, "Invalid OTP");
		return false;
	}
	return true;
}

/* ---- 1. /cardAccount/create ---- */

static const char *const account_types[] = {
	"RELOADABLE_GPR", "CORPORATE", "GIFT", "MEAL", "FUEL", "VIRTUAL_ACCOUNT",
	"INVOICE_DISCOUNTING", "EMPLOYEE_REWARDS", "CHANNEL_INCENTIVE",
	"ENKASH_COIN", "PETTY_CASH", "FREEDOM_REWARDS", "PAYOUT", "E_RUPI_VOUCHER",
	NULL
};

static void
h_account_create(Ctx *c)
{
	const char *company = req_str(c, "companyId");
	const char *name = req_str(c, "companyName");
	const char *plan = req_str(c, "planMasterId");
	const char *email = req_str(c, "email");
	const char *mobile = req_str(c, "mobile");
	const char *title = req_str(c, "accountTitle");
	const char *type = req_str(c, "accountType");
	char		id[32];
	int			acc;

	if (!company_ok(c, company))
		return;
	if (!in_list(type, account_types))
	{
		fail(c, "Invalid accountType");
		return;
	}
	if (!ten_digits(mobile))
	{
		fail(c, "Invalid mobile");
		return;
	}
	new_id("CA", id, sizeof(id));
	acc = add_account(id, company, name, plan, email, mobile, title, type);
	/* EnKash reports a new account as empty; the sandbox funds it anyway */
	ok(c, json_pack("{s:s, s:s, s:s, s:i}",
					"cardAccountId", st.accounts[acc].id,
					"companyId", company,
					"accountType", type,
					"availableBalance", 0));
}

/* ---- 2/3. create prepaid or gift card (the bare prefix) ---- */

static void
h_card_create(Ctx *c)
{
	const char *company = req_str(c, "companyId");
	const char *acc_id = req_str(c, "cardAccountId");
	/* email, mobile and firstName are optional (api-13438387) */
	const char *email = opt_str(c, "email");
	const char *mobile = opt_str(c, "mobile");
	const char *first = opt_str(c, "firstName");
	const char *last = req_str(c, "lastName");
	const char *user_id = opt_str(c, "userId");
	const char *client_ref = opt_str(c, "clientReferenceId");
	json_t	   *load = json_object_get(c->in, "loadAmount");
	json_t	   *primary = json_object_get(c->in, "primaryEnKashCard");
	json_t	   *physical = json_object_get(c->in, "physicalCard");
	int64_t		amount = 0;
	int			acc;
	int			card;
	bool		gift;

	if (!company_ok(c, company))
		return;
	(void) opt_str(c, "gender");	/* free text: the example is "M" */
	if (mobile && !ten_digits(mobile))
	{
		fail(c, "Invalid mobile");
		return;
	}
	acc = account_or_fail(c, acc_id);
	if (acc < 0)
		return;
	gift = strcmp(st.accounts[acc].type, "GIFT") == 0;
	if (gift && absent(load))
	{
		fail(c, "loadAmount is required");
		return;
	}
	if (!absent(load) && (!json_to_paise(load, &amount) || amount < 0 ||
						  (gift && amount == 0)))
	{
		fail(c, "Invalid loadAmount");
		return;
	}
	if (st.accounts[acc].available < amount)
	{
		fail(c, "Insufficient balance in card account");
		return;
	}

	card = add_card(NULL, acc, user_id, first ? first : "", last,
					email ? email : "", mobile ? mobile : "", gift);
	if (json_is_true(primary))
		st.accounts[acc].primary_card = card;
	st.cards[card].physical = json_is_true(physical);
	if (amount > 0)
	{
		st.accounts[acc].available -= amount;
		st.cards[card].balance += amount;
		add_txn(card, true, amount, client_ref,
				gift ? "Gift card load" : "Initial card load", "LOAD_MONEY",
				NULL, NULL, "ADMIN");
	}
	ok(c, json_pack("{s:s, s:s, s:s, s:{s:s}, s:o}",
					"enKashCardId", st.cards[card].id,
					"cardAccountId", st.accounts[acc].id,
					"maskedNumber", st.cards[card].masked,
					"cardStatus", "label", card_status_label(st.cards[card].status),
					"otbBalance", json_money(st.cards[card].balance)));
}

/* ---- 4. /setPin ---- */

static void
h_set_pin(Ctx *c)
{
	const char *company = req_str(c, "companyId");
	const char *acc_id = req_str(c, "cardAccountId");
	const char *card_id = req_str(c, "enKashCardId");
	int			card;

	/*
	 * the pin block is checked for presence only and never kept; a string
	 * on api-8990358, a number (9078) in its example: both are taken
	 */
	json_t	   *pin = req_any(c, "pinBlock");

	if (pin && !json_is_string(pin) && !json_is_integer(pin))
	{
		fail(c, "Invalid pinBlock");
		return;
	}
	if (!company_ok(c, company))
		return;
	card = card_in_account(c, card_id, account_or_fail(c, acc_id));
	if (card < 0)
		return;
	if (st.cards[card].status == CARD_BLOCKED || st.cards[card].status == CARD_REPLACED)
	{
		fail(c, "Card is blocked");
		return;
	}
	st.cards[card].pin_set = true;
	ok_string(c, "Success");
}

/* ---- 5. /balance (Load Card Balance) ---- */

static const char *const load_types[] = {
	"ALLOCATE_FUND", "LOAD_MONEY", "SALE", "REPAYMENT", "RECOVERY", "REFUND",
	"REVERSAL", "CREDIT", "FEE", NULL
};

static void
h_balance(Ctx *c)
{
	const char *company = req_str(c, "companyId");
	const char *acc_id = req_str(c, "cardAccountId");
	const char *card_id = req_str(c, "enKashCardId");
	const char *created_by = req_str(c, "createdBy");
	json_t	   *amount_v = req_any(c, "amount");
	const char *txn_type = req_str(c, "transactionType");
	const char *description = opt_str(c, "description");
	const char *type = req_str(c, "type");
	const char *txn_code = req_str(c, "transactionCode");
	const char *reference = req_str(c, "uniqueReferenceNumber");
	int64_t		amount;
	int			acc;
	int			card;
	Card	   *cd;

	(void) created_by;
	(void) txn_code;
	if (!company_ok(c, company))
		return;
	if (strcmp(txn_type, "CR") != 0)
	{
		fail(c, "DR not allowed");
		return;
	}
	if (!json_to_paise(amount_v, &amount) || amount <= 0)
	{
		fail(c, "Invalid amount");
		return;
	}
	if (!in_list(type, load_types))
	{
		fail(c, "Invalid type");
		return;
	}
	acc = account_or_fail(c, acc_id);
	card = card_in_account(c, card_id, acc);
	if (card < 0)
		return;
	cd = &st.cards[card];
	if (cd->status != CARD_ACTIVE)
	{
		fail(c, "Card is blocked");
		return;
	}
	if (cd->gift)
	{
		fail(c, "Load balance is not allowed for gift cards");
		return;
	}
	if (st.accounts[acc].available < amount)
	{
		fail(c, "Insufficient balance in card account");
		return;
	}

	/* every accepted load is credited, repeated references included */
	st.accounts[acc].available -= amount;
	cd->balance += amount;
	add_txn(card, true, amount, reference,
			description ? description : "Funds allocated from Parent Account",
			type, NULL, NULL, "ADMIN");
	ledger_credit(reference, amount);
	ok_string(c, "Funds allocated from Parent Account to Card by Admin successful");
}

/* ---- 6. /cardAccount/get ---- */

static void
h_account_get(Ctx *c)
{
	const char *company = req_str(c, "companyId");
	const char *acc_id = req_str(c, "cardAccountId");
	int			acc;
	Account    *a;
	int64_t		cards = 0;
	int64_t		used;
	int			i;

	if (!company_ok(c, company))
		return;
	acc = account_or_fail(c, acc_id);
	if (acc < 0)
		return;
	a = &st.accounts[acc];
	for (i = 0; i < st.ncards; i++)
		if (st.cards[i].account == acc)
			cards += st.cards[i].balance;
	used = a->credit_limit - a->available;
	if (used < 0)
		used = 0;
	ok(c, json_pack("{s:s, s:s, s:s, s:s, s:s, s:o, s:o, s:o, s:o, s:o, s:o}",
					"cardAccountId", a->id,
					"companyId", a->company_id,
					"companyName", a->company_name,
					"accountType", a->type,
					"planMasterId", a->plan_master_id,
					"creditLimit", json_money(a->credit_limit),
					"dynamicLimit", json_money(a->available),
					"usedCreditLimit", json_money(used),
					"availableBalance", json_money(a->available),
					"availableCardBalance", json_money(cards),
					"primaryEnKashCard",
					a->primary_card >= 0 ? card_brief_json(a->primary_card) : json_null()));
}

/* ---- 7. /otp ---- */

static void
h_otp(Ctx *c)
{
	const char *action = req_str(c, "cardOtpAction");
	const char *acc_id = req_str(c, "cardAccountId");
	const char *card_id = req_str(c, "enKashCardId");
	int			card;

	if (!optional_company_ok(c))
		return;
	if (strcmp(action, "TRANSACTION_OTP") != 0)
	{
		fail(c, "Invalid cardOtpAction");
		return;
	}
	card = card_in_account(c, card_id, account_or_fail(c, acc_id));
	if (card < 0)
		return;
	ok_string(c, otp_issue(card));
}

/* ---- 8. /view: the one place PAN and CVV ever leave the sandbox ---- */

static void
h_view(Ctx *c)
{
	const char *company = req_str(c, "companyId");
	const char *acc_id = req_str(c, "cardAccountId");
	const char *card_id = req_str(c, "enKashCardId");
	const char *otp_id = req_str(c, "otpRequestId");
	json_t	   *otp_v = req_any(c, "otp");
	char		otp[32];
	int			card;
	Card	   *cd;

	if (!company_ok(c, company))
		return;
	if (json_is_string(otp_v))
		snprintf(otp, sizeof(otp), "%s", json_string_value(otp_v));
	else if (json_is_integer(otp_v))
		snprintf(otp, sizeof(otp), "%06lld", (long long) json_integer_value(otp_v));
	else
	{
		fail(c, "Invalid OTP");
		return;
	}
	card = card_in_account(c, card_id, account_or_fail(c, acc_id));
	if (card < 0)
		return;
	if (!otp_consume(otp_id, otp, card))
	{
		fail(c, "Invalid OTP");
		return;
	}
	cd = &st.cards[card];
	ok(c, json_pack("{s:s, s:s, s:s, s:s}",
					"cardNumber", cd->pan,
					"expiry", cd->expiry,
					"cvv", cd->cvv,
					"cardHolderName", cd->holder));
}

/* ---- 9/10. velocity rules ---- */

static const char *const rule_bools[] = {
	"posAllowed", "onlineAllowed", "atmAllowed", "internationalAllowed",
	"contactlessAllowed", NULL
};
static const char *const rule_amounts[] = {
	"perTxnLimit", "dtd", "mtd", "ytd", "posDailyLimit", "ecomDailyLimit",
	"contactLessDailyLimit", NULL
};
static const char *const rule_counts[] = {
	"dtdCount", "mtdCount", "ytdCount", "posDailyLimitCount",
	"ecomDailyLimitCount", "contactLessDailyLimitCount", NULL
};

/* A limit: a JSON number, or one in a string (api-26008463 sends "1220"). */
static bool
limit_to_paise(json_t *v, int64_t *out)
{
	json_t	   *inner;
	bool		ok;

	if (!json_is_string(v))
		return json_to_paise(v, out);
	inner = json_loads(json_string_value(v), JSON_DECODE_ANY, NULL);
	ok = inner && json_is_number(inner) && json_to_paise(inner, out);
	json_decref(inner);
	return ok;
}

/* A count: a JSON integer, or a string of digits (api-26008463 sends "1"). */
static bool
count_value(json_t *v, json_int_t *out)
{
	const char *s;
	char	   *end;

	if (json_is_integer(v))
	{
		*out = json_integer_value(v);
		return *out >= 0;
	}
	if (!json_is_string(v) || !isdigit((unsigned char) *(s = json_string_value(v))))
		return false;
	*out = strtoll(s, &end, 10);
	return *end == '\0';
}

static json_t *
rule_defaults(void)
{
	return json_pack("{s:b, s:b, s:b, s:b, s:b,"
					 " s:i, s:i, s:i, s:i, s:i, s:i, s:i,"
					 " s:i, s:i, s:i, s:i, s:i, s:i}",
					 "posAllowed", 1, "onlineAllowed", 1, "atmAllowed", 0,
					 "internationalAllowed", 0, "contactlessAllowed", 1,
					 "perTxnLimit", 100000, "dtd", 100000, "mtd", 1000000,
					 "ytd", 10000000, "posDailyLimit", 100000,
					 "ecomDailyLimit", 100000, "contactLessDailyLimit", 5000,
					 "dtdCount", 50, "mtdCount", 500, "ytdCount", 5000,
					 "posDailyLimitCount", 20, "ecomDailyLimitCount", 20,
					 "contactLessDailyLimitCount", 10);
}

static void
h_velocity_set(Ctx *c)
{
	const char *company = req_str(c, "companyId");
	const char *acc_id = req_str(c, "cardAccountId");
	json_t	   *ids = req_any(c, "enKashCardIds");
	json_t	   *patch;
	json_t	   *v;
	size_t		i;
	int			acc;
	int			k;

	v = json_object_get(c->in, "adminUser");
	if (v && !json_is_null(v) && !json_is_boolean(v))
	{
		/* a boolean at EnKash: Jackson refuses a string with a 400 */
		http_error(c, 400, "adminUser must be a boolean");
		return;
	}
	if (!company_ok(c, company))
		return;
	if (!json_is_array(ids) || json_array_size(ids) < 1 || json_array_size(ids) > 100)
	{
		fail(c, "enKashCardIds must hold 1 to 100 card ids");
		return;
	}
	acc = account_or_fail(c, acc_id);
	if (acc < 0)
		return;
	json_array_foreach(ids, i, v)
	{
		if (!json_is_string(v))
		{
			fail(c, "Invalid enKashCardIds");
			return;
		}
		if (card_in_account(c, json_string_value(v), acc) < 0)
			return;
	}

	/* validate every given rule field before changing any card */
	patch = json_object();
	for (k = 0; rule_bools[k]; k++)
	{
		v = json_object_get(c->in, rule_bools[k]);
		if (v == NULL || json_is_null(v))
			continue;
		if (!json_is_boolean(v))
		{
			json_decref(patch);
		{
			fail(c, "Invalid %s", rule_bools[k]);
			return;
		}
		}
		json_object_set(patch, rule_bools[k], v);
	}
	for (k = 0; rule_amounts[k]; k++)
	{
		int64_t		p;

		v = json_object_get(c->in, rule_amounts[k]);
		if (v == NULL)
			continue;
		if (json_is_null(v))
		{
			/* JsonNullable: null clears the limit */
			json_object_set_new(patch, rule_amounts[k], json_null());
			continue;
		}
		if (!limit_to_paise(v, &p) || p < 0)
		{
			json_decref(patch);
		{
			fail(c, "Invalid %s", rule_amounts[k]);
			return;
		}
		}
		json_object_set_new(patch, rule_amounts[k], json_money(p));
	}
	for (k = 0; rule_counts[k]; k++)
	{
		json_int_t	n;

		v = json_object_get(c->in, rule_counts[k]);
		if (v == NULL)
			continue;
		if (json_is_null(v))
		{
			json_object_set_new(patch, rule_counts[k], json_null());
			continue;
		}
		if (!count_value(v, &n))
		{
			json_decref(patch);
			fail(c, "Invalid %s", rule_counts[k]);
			return;
		}
		json_object_set_new(patch, rule_counts[k], json_integer(n));
	}

	json_array_foreach(ids, i, v)
	{
		Card	   *cd = &st.cards[find_card(json_string_value(v))];

		if (cd->velocity == NULL)
			cd->velocity = rule_defaults();
		json_object_update(cd->velocity, patch);
	}
	json_decref(patch);
	ok_string(c, "Success");
}

static void
h_velocity_get(Ctx *c)
{
	const char *company = req_str(c, "companyId");
	const char *acc_id = req_str(c, "cardAccountId");
	const char *card_id = req_str(c, "enKashCardId");
	int			card;
	json_t	   *rule;

	if (!company_ok(c, company))
		return;
	card = card_in_account(c, card_id, account_or_fail(c, acc_id));
	if (card < 0)
		return;
	rule = st.cards[card].velocity ? json_deep_copy(st.cards[card].velocity)
		: rule_defaults();
	json_object_set_new(rule, "enKashCardId", json_string(st.cards[card].id));
	json_object_set_new(rule, "cardAccountId", json_string(st.accounts[st.cards[card].account].id));
	ok(c, rule);
}

/* ---- 11. /replaceCard ---- */

static void
h_replace(Ctx *c)
{
	const char *card_id = req_str(c, "enKashCardId");
	const char *medium = req_str(c, "otpMedium");
	json_t	   *otp_required = json_object_get(c->in, "otpRequired");
	const char *acc_id = opt_str(c, "cardAccountId");
	static const char *const media[] = {"MOBILE", "MFA", NULL};
	int			old;
	int			fresh;
	int			acc;
	char	   *first;

	if (!optional_company_ok(c))
		return;
	if (!in_list(medium, media))
	{
		fail(c, "Invalid otpMedium");
		return;
	}
	/* not on Request Card Replacement's page: optional, a boolean if given */
	if (otp_required && !json_is_null(otp_required) && !json_is_boolean(otp_required))
	{
		fail(c, "Invalid otpRequired");
		return;
	}
	old = find_card(card_id);
	if (old < 0 || (acc_id && strcmp(st.accounts[st.cards[old].account].id, acc_id) != 0))
	{
		fail(c, "Card not found");
		return;
	}
	if (st.cards[old].status == CARD_REPLACED)
	{
		fail(c, "Card is already replaced");
		return;
	}
	if (!otp_check(c, old))
		return;

	/* the new card carries holder, user, balance, rules and primacy */
	acc = st.cards[old].account;
	first = sb_strdup(st.cards[old].holder);
	fresh = add_card(NULL, acc, st.cards[old].user_id, first, "",
					 st.cards[old].email, st.cards[old].mobile, st.cards[old].gift);
	free(first);
	free(st.cards[fresh].holder);
	st.cards[fresh].holder = sb_strdup(st.cards[old].holder);
	st.cards[fresh].balance = st.cards[old].balance;
	st.cards[old].balance = 0;
	if (st.cards[old].velocity)
		st.cards[fresh].velocity = json_deep_copy(st.cards[old].velocity);
	if (st.accounts[acc].primary_card == old)
		st.accounts[acc].primary_card = fresh;
	st.cards[old].status = CARD_REPLACED;
	ok_string(c, st.cards[fresh].id);
}

/* ---- 12. /block ---- */

static void
h_block(Ctx *c)
{
	const char *company = req_str(c, "companyId");
	const char *acc_id = req_str(c, "cardAccountId");
	const char *card_id = req_str(c, "enKashCardId");
	const char *code = req_str(c, "blockCode");
	const char *created_by = req_str(c, "createdBy");
	const char *medium = req_str(c, "otpMedium");	/* required (api-13438390) */
	static const char *const media[] = {"MOBILE", "MFA", NULL};
	int			card;
	Card	   *cd;

	(void) created_by;
	(void) opt_str(c, "reason");
	if (!company_ok(c, company))
		return;
	if (!in_list(medium, media))
	{
		fail(c, "Invalid otpMedium");
		return;
	}
	if (strcmp(code, "L") != 0 && strcmp(code, "UL") != 0 &&
		strcmp(code, "BL") != 0 && strcmp(code, "AP") != 0)
	{
		fail(c, "Invalid blockCode");
		return;
	}
	card = card_in_account(c, card_id, account_or_fail(c, acc_id));
	if (card < 0)
		return;
	if (st.cards[card].status == CARD_REPLACED)
	{
		fail(c, "Card is replaced");
		return;
	}
	if (st.cards[card].status == CARD_BLOCKED)
	{
		fail(c, "Card is permanently blocked");
		return;
	}
	if (!otp_check(c, card))
		return;
	cd = &st.cards[card];
	if (strcmp(code, "L") == 0)
		cd->status = CARD_LOCKED;
	else if (strcmp(code, "UL") == 0)
		cd->status = CARD_ACTIVE;
	else if (strcmp(code, "BL") == 0)
		cd->status = CARD_BLOCKED;
	else
		cd->status = CARD_ACTIVATION_IN_PROGRESS;
	ok_string(c, "Success");
}

/* ---- 13. /physicalCard/order ---- */

static void
h_physical(Ctx *c)
{
	const char *company = req_str(c, "companyId");
	const char *acc_id = req_str(c, "cardAccountId");
	const char *card_id = req_str(c, "enKashCardId");
	char		order[32];
	int			card;

	if (!company_ok(c, company))
		return;
	card = card_in_account(c, card_id, account_or_fail(c, acc_id));
	if (card < 0)
		return;
	if (st.cards[card].status == CARD_BLOCKED || st.cards[card].status == CARD_REPLACED)
	{
		fail(c, "Card is blocked");
		return;
	}
	if (st.cards[card].physical)
	{
		fail(c, "Physical card already ordered");
		return;
	}
	st.cards[card].physical = true;
	new_id("PCO", order, sizeof(order));
	ok_string(c, order);
}

/* ---- 14. /search ---- */

static void
h_search(Ctx *c)
{
	const char *company = req_str(c, "companyId");
	const char *acc_id = req_str(c, "cardAccountId");
	const char *card_id = opt_str(c, "enKashCardId");
	int			acc;
	int			card;
	json_t	   *data;

	if (!company_ok(c, company))
		return;
	acc = find_account(acc_id);
	if (acc < 0)
	{
		fail(c, "Card not found");
		return;
	}
	/* {recordsCount, data}: the card asked for, or every card of the account */
	data = json_array();
	if (card_id)
	{
		card = find_card(card_id);
		if (card < 0 || st.cards[card].account != acc)
		{
			json_decref(data);
			fail(c, "Card not found");
			return;
		}
		json_array_append_new(data, card_json(card));
	}
	else
		for (card = 0; card < st.ncards; card++)
			if (st.cards[card].account == acc)
				json_array_append_new(data, card_json(card));
	ok(c, json_pack("{s:I, s:o}", "recordsCount", (json_int_t) json_array_size(data),
					"data", data));
}

/* ---- 15/16. /transaction/all ---- */

static int
txn_cmp(const void *a, const void *b)
{
	const Txn  *x = &st.txns[*(const int *) a];
	const Txn  *y = &st.txns[*(const int *) b];

	if (x->when_ms != y->when_ms)
		return x->when_ms < y->when_ms ? -1 : 1;
	return strcmp(x->id, y->id);
}

/* an optional array of strings; false (and c->out set) if malformed */
static bool
opt_str_array(Ctx *c, const char *name, json_t **out)
{
	json_t	   *v = json_object_get(c->in, name);
	json_t	   *e;
	size_t		i;

	*out = NULL;
	if (c->out)
		return false;
	if (v == NULL || json_is_null(v))
		return true;
	if (!json_is_array(v))
	{
		fail(c, "Invalid %s", name);
		return false;
	}
	json_array_foreach(v, i, e)
	{
		if (!json_is_string(e))
		{
			fail(c, "Invalid %s", name);
			return false;
		}
	}
	if (json_array_size(v) > 0)
		*out = v;
	return true;
}

static bool
str_in_array(const char *s, json_t *arr)
{
	json_t	   *e;
	size_t		i;

	json_array_foreach(arr, i, e)
		if (s && strcmp(json_string_value(e), s) == 0)
		return true;
	return false;
}

static bool
opt_amount(Ctx *c, const char *name, int64_t *out, bool *given)
{
	json_t	   *v = json_object_get(c->in, name);

	*given = false;
	if (c->out)
		return false;
	if (v == NULL || json_is_null(v))
		return true;
	if (!json_to_paise(v, out))
	{
		fail(c, "Invalid %s", name);
		return false;
	}
	*given = true;
	return true;
}

static bool
opt_date(Ctx *c, const char *name, bool end_of_day, int64_t *out, bool *given)
{
	const char *s = opt_str(c, name);

	*given = false;
	if (c->out)
		return false;
	if (s == NULL)
		return true;
	if (!parse_iso8601(s, end_of_day, out))
	{
		fail(c, "Invalid %s", name);
		return false;
	}
	*given = true;
	return true;
}

static bool
opt_int(Ctx *c, const char *name, json_int_t dflt, json_int_t *out)
{
	json_t	   *v = json_object_get(c->in, name);

	*out = dflt;
	if (c->out)
		return false;
	if (v == NULL || json_is_null(v))
		return true;
	if (!json_is_integer(v))
	{
		fail(c, "Invalid %s", name);
		return false;
	}
	*out = json_integer_value(v);
	return true;
}

/* a transaction of another reference, as a list of "others" holds */
static json_t *
other_txn(int card, const char *ref, const char *prefix)
{
	char		other[FAULT_PATH_LEN + 16];

	snprintf(other, sizeof(other), "%s%.*s", prefix, FAULT_PATH_LEN, ref);
	return json_pack("{s:s, s:s, s:o, s:s, s:s, s:s}",
					 "enKashCardTransactionId", "EKTXNOTHER0000",
					 "enkashCardId", card >= 0 ? st.cards[card].id : "EKCOTHER0000",
					 "principalAmount", json_money(100),
					 "pgReferenceNumber", other,
					 "cardTransactionType", "CR",
					 "status", "SUCCESS");
}

/*
 * Get Transaction Details: by default the one list shape EnKash documents,
 * {recordsCount, data}, holding the match or nothing; the "lookup" fault
 * answers in every other shape a client must survive.
 */
static void
lookup_answer(Ctx *c, int acc, int card, const char *ref, json_int_t page)
{
	LookupMode mode = LOOKUP_RECORDS;
	const char *msg;
	json_t	   *list = json_array();
	json_t	   *t;
	int			found = -1;

	if (fault_take(&faults.lookup, NULL))
		mode = faults.lookup_mode;
	msg = faults.lookup_message[0] ? faults.lookup_message : NULL;
	for (int i = 0; i < st.ntxns && found < 0; i++)
	{
		Txn		   *x = &st.txns[i];

		if (st.cards[x->card].account == acc && (card < 0 || x->card == card) &&
			x->reference && strcmp(x->reference, ref) == 0)
			found = i;
	}

	switch (mode)
	{
		case LOOKUP_DECLINE:
			json_decref(list);
			fail(c, "%s", msg ? msg : "Unable to process the request, please try again later");
			return;
		case LOOKUP_NOT_FOUND:
			json_decref(list);
			fail(c, "%s", msg ? msg : "Transaction not found");
			return;
		case LOOKUP_SINGLE:
			json_decref(list);
			if (found < 0)
				fail(c, "Transaction not found");
			else
				ok(c, txn_json(found));
			return;
		case LOOKUP_UNREADABLE:
			json_decref(list);
			ok(c, json_pack("{s:s, s:s}", "status", "PROCESSING", "pgReferenceNumber", ref));
			return;
		case LOOKUP_EMPTY:
			break;
		case LOOKUP_OTHERS:
			json_array_append_new(list, other_txn(card, ref, "OTHER-"));
			json_array_append_new(list, other_txn(card, ref, "X"));
			break;
		case LOOKUP_PAGED:
			json_array_append_new(list, other_txn(card, ref, "OTHER-"));
			if (found >= 0)
				json_array_append_new(list, txn_json(found));
			t = json_array();
			if (page >= 0 && page < (json_int_t) json_array_size(list))
				json_array_append(t, json_array_get(list, page));
			ok(c, json_pack("{s:I, s:o}", "recordsCount", (json_int_t) json_array_size(list),
							"data", t));
			json_decref(list);
			return;
		case LOOKUP_WRONG_AMOUNT:
		case LOOKUP_WRONG_CARD:
		case LOOKUP_RECORDS:
		case LOOKUP_CONTENT:
			if (found < 0)
				break;
			t = txn_json(found);
			if (mode == LOOKUP_WRONG_AMOUNT)
				json_object_set_new(t, "principalAmount",
									json_money(st.txns[found].amount + 100));
			if (mode == LOOKUP_WRONG_CARD)
				json_object_set_new(t, "enkashCardId", json_string("EKCOTHER0000"));
			json_array_append_new(list, t);
			break;
	}
	if (mode == LOOKUP_CONTENT)
		ok(c, json_pack("{s:o, s:I, s:i}", "content", list, "totalElements",
						(json_int_t) json_array_size(list), "totalPages", 1));
	else
		ok(c, json_pack("{s:I, s:o}", "recordsCount", (json_int_t) json_array_size(list),
						"data", list));
}

static void
h_transactions(Ctx *c)
{
	const char *company = req_str(c, "companyId");
	const char *acc_id = req_str(c, "cardAccountId");
	const char *card_id = opt_str(c, "enKashCardId");
	json_t	   *pgref = json_object_get(c->in, "pgReferenceNumber");
	const char *status = opt_str(c, "status");
	const char *ctype = opt_str(c, "cardTransactionType");
	json_t	   *ids;
	json_t	   *refs;
	int64_t		amount_from = 0,
				amount_to = 0,
				date_from = 0,
				date_to = 0;
	bool		has_af,
				has_at,
				has_df,
				has_dt;
	json_int_t	page,
				size;
	int			acc;
	int			card = -1;
	int		   *match;
	int			nmatch = 0;
	int			i;
	json_t	   *content;
	int64_t		total_pages;

	if (!company_ok(c, company))
		return;
	acc = account_or_fail(c, acc_id);
	if (acc < 0)
		return;
	if (card_id && (card = card_in_account(c, card_id, acc)) < 0)
		return;

	/* one transaction by the reference sent on the load */
	if (pgref != NULL && !json_is_null(pgref))
	{
		if (card_id == NULL)
		{
			fail(c, "enKashCardId is required");
			return;
		}
		if (!json_is_string(pgref))
		{
			fail(c, "Invalid pgReferenceNumber");
			return;
		}
		if (!opt_int(c, "page", 0, &page))
			return;
		lookup_answer(c, acc, card, json_string_value(pgref), page);
		return;
	}

	if (!opt_str_array(c, "enKashTransactionIds", &ids) ||
		!opt_str_array(c, "pgReferenceNumbers", &refs) ||
		!opt_amount(c, "amountFrom", &amount_from, &has_af) ||
		!opt_amount(c, "amountTo", &amount_to, &has_at) ||
		!opt_date(c, "txnDateFrom", false, &date_from, &has_df) ||
		!opt_date(c, "txnDateTo", true, &date_to, &has_dt) ||
		!opt_int(c, "page", 0, &page) ||
		!opt_int(c, "size", 20, &size))
		return;
	if (c->out)
		return;
	if (ctype && strcmp(ctype, "CR") != 0 && strcmp(ctype, "DR") != 0)
	{
		fail(c, "Invalid cardTransactionType");
		return;
	}
	if (page < 0)
	{
		fail(c, "Invalid page");
		return;
	}
	if (size < 1)
	{
		fail(c, "Invalid size");
		return;
	}
	if (size > 100)
		size = 100;

	match = sb_malloc(sizeof(int) * (st.ntxns + 1));
	for (i = 0; i < st.ntxns; i++)
	{
		Txn		   *t = &st.txns[i];

		if (st.cards[t->card].account != acc)
			continue;
		if (card >= 0 && t->card != card)
			continue;
		if (status && strcmp(status, "SUCCESS") != 0)
			continue;
		if (ctype && strcmp(ctype, t->credit ? "CR" : "DR") != 0)
			continue;
		if ((has_af && t->amount < amount_from) || (has_at && t->amount > amount_to))
			continue;
		if ((has_df && t->when_ms < date_from) || (has_dt && t->when_ms > date_to))
			continue;
		if (ids && !str_in_array(t->id, ids))
			continue;
		if (refs && !str_in_array(t->reference, refs))
			continue;
		match[nmatch++] = i;
	}
	qsort(match, nmatch, sizeof(int), txn_cmp);

	content = json_array();
	for (i = 0; i < size; i++)
	{
		int64_t		k = page * size + i;

		if (k >= nmatch)
			break;
		json_array_append_new(content, txn_json(match[k]));
	}
	free(match);
	total_pages = (nmatch + size - 1) / size;
	if (faults.list_records)
	{
		ok(c, json_pack("{s:i, s:o}", "recordsCount", nmatch, "data", content));
		return;
	}
	ok(c, json_pack("{s:o, s:i, s:I, s:I, s:I}",
					"content", content,
					"totalElements", nmatch,
					"totalPages", (json_int_t) total_pages,
					"page", page,
					"size", size));
}

/* ---- dispatch ---- */

typedef struct Endpoint
{
	const char *suffix;
	void		(*handler) (Ctx *c);
} Endpoint;

static const Endpoint endpoints[] = {
	{"", h_card_create},
	{"/cardAccount/create", h_account_create},
	{"/setPin", h_set_pin},
	{"/balance", h_balance},
	{"/cardAccount/get", h_account_get},
	{"/otp", h_otp},
	{"/view", h_view},
	{"/velocity/rule", h_velocity_set},
	{"/velocity/rule/get", h_velocity_get},
	{"/replaceCard", h_replace},
	{"/block", h_block},
	{"/physicalCard/order", h_physical},
	{"/search", h_search},
	{"/transaction/all", h_transactions},
	{NULL, NULL}
};

static const Endpoint *
find_endpoint(const char *path)
{
	const Endpoint *e;
	size_t		plen = strlen(API_PREFIX);

	if (strncmp(path, API_PREFIX, plen) != 0)
		return NULL;
	for (e = endpoints; e->suffix; e++)
		if (strcmp(path + plen, e->suffix) == 0)
			return e;
	return NULL;
}

/* ---- the pipeline ---- */

/* calls the "processing" fault applies later: answered already, effect due at due */
typedef struct Pending
{
	const Endpoint *ep;
	json_t	   *in;
	double		due;			/* monotonic seconds */
} Pending;

static Pending *pending;
static int	npending;
static int	pending_cap;

/*
 * caller holds sandbox_lock: a load (a /balance body, plain) applied as
 * /balance applies it, uncounted and unfaulted; returns the answer.
 */
json_t *
api_load(json_t *in)
{
	Ctx			ctx;

	memset(&ctx, 0, sizeof(ctx));
	ctx.in = in;
	ctx.status = 200;
	h_balance(&ctx);
	return ctx.out;
}

/* caller holds sandbox_lock: applies every deferred call that is due, in order */
void
api_apply_due(void)
{
	double		now = monotonic_now();
	int			kept = 0;

	for (int i = 0; i < npending; i++)
	{
		if (pending[i].due <= now)
		{
			Ctx			ctx;

			memset(&ctx, 0, sizeof(ctx));
			ctx.in = pending[i].in;
			ctx.status = 200;
			pending[i].ep->handler(&ctx);
			json_decref(ctx.out);
			json_decref(pending[i].in);
		}
		else
			pending[kept++] = pending[i];
	}
	npending = kept;
}

void
api_pending_clear(void)
{
	for (int i = 0; i < npending; i++)
		json_decref(pending[i].in);
	free(pending);
	pending = NULL;
	npending = pending_cap = 0;
}

/* serialise an envelope and encrypt it unless --no-encrypt */
static char *
seal_json(json_t *obj, const unsigned char *key, size_t *len)
{
	char	   *plain = json_dumps(obj, SANDBOX_JSON_FLAGS);
	char	   *sealed;

	if (plain == NULL)
		return NULL;
	if (cfg.no_encrypt)
	{
		*len = strlen(plain);
		return plain;
	}
	sealed = envelope_seal(key, plain, strlen(plain), len);
	free(plain);
	return sealed;
}

static void
reply_sealed(SandboxReply *rep, json_t *obj)
{
	rep->kind = REPLY_NORMAL;
	rep->status = 200;
	rep->content_type = "application/json";
	rep->body = seal_json(obj, cfg.key, &rep->len);
	json_decref(obj);
}

/* the "response" fault: the call was applied, the answer is broken */
static void
reply_broken(SandboxReply *rep, ResponseMode mode, json_t *envelope)
{
	size_t		len;
	char	   *s;

	rep->kind = REPLY_NORMAL;
	rep->status = 200;
	rep->content_type = "application/json";
	switch (mode)
	{
		case RESP_MALFORMED:
			rep->body = sb_strdup("<html><body>502 Bad Gateway</body></html> {");
			rep->len = strlen(rep->body);
			break;
		case RESP_TRUNCATED:
			rep->body = seal_json(envelope, cfg.key, &len);
			rep->len = len / 2;
			break;
		case RESP_WRONG_KEY:
			{
				unsigned char other[AES_KEY_LEN];

				envelope_derive_key("not-the-sandbox-secret", other);
				s = json_dumps(envelope, SANDBOX_JSON_FLAGS);
				rep->body = envelope_seal(other, s, strlen(s), &rep->len);
				free(s);
				break;
			}
		case RESP_BAD_BASE64:
			rep->body = sb_strdup("{\"request\":\"%%not*base64!!\"}");
			rep->len = strlen(rep->body);
			break;
		case RESP_BAD_PADDING:
			{
				/* zero fill to a block boundary: a last byte of 0 is never valid PKCS#7 */
				size_t		plen;
				size_t		padded;
				unsigned char *buf;
				unsigned char *cipher;
				char	   *b64;

				s = json_dumps(envelope, SANDBOX_JSON_FLAGS);
				plen = strlen(s);
				padded = (plen / 16 + 1) * 16;
				buf = calloc(1, padded);
				memcpy(buf, s, plen);
				cipher = aes_ecb_encrypt(cfg.key, buf, padded, false, &len);
				b64 = b64_encode(cipher, len);
				rep->len = strlen(b64) + 16;
				rep->body = sb_malloc(rep->len);
				rep->len = snprintf(rep->body, rep->len, "{\"request\":\"%s\"}", b64);
				free(s);
				free(buf);
				free(cipher);
				free(b64);
				break;
			}
		case RESP_DEEP_JSON:
			{
				const int	depth = 10000;

				rep->body = sb_malloc(2 * depth + 1);
				memset(rep->body, '[', depth);
				memset(rep->body + depth, ']', depth);
				rep->body[2 * depth] = '\0';
				rep->len = 2 * depth;
				break;
			}
		case RESP_NO_CODE:
			{
				json_t	   *copy = json_deep_copy(envelope);

				json_object_del(copy, "code");
				json_object_del(copy, "response_code");
				rep->body = seal_json(copy, cfg.key, &rep->len);
				json_decref(copy);
				break;
			}
		case RESP_HUGE:
			{
				const size_t n = 20 * 1024 * 1024;
				char	   *big = sb_malloc(n + 1);
				json_t	   *env;

				memset(big, 'x', n);
				big[n] = '\0';
				env = json_pack("{s:i, s:s, s:o}", "code", 0, "message", "Success",
								"payload", json_stringn_nocheck(big, n));
				free(big);
				rep->body = seal_json(env, cfg.key, &rep->len);
				json_decref(env);
				break;
			}
		case RESP_DRIP:
			rep->kind = REPLY_DRIP;
			rep->body = seal_json(envelope, cfg.key, &rep->len);
			break;
		case RESP_HUGE_NUMBER:
			{
				/* valid JSON that numeric cannot hold; jansson cannot write it */
				static const char text[] =
					"{\"code\":0,\"message\":\"Success\",\"payload\":{\"n\":1e999999}}";

				rep->body = cfg.no_encrypt ? sb_strdup(text) :
					envelope_seal(cfg.key, text, strlen(text), &rep->len);
				if (cfg.no_encrypt)
					rep->len = strlen(text);
				break;
			}
		case RESP_ESCAPED_SLASH:
			{
				/* the valid answer, each '/' written '\/' (valid JSON, as some encoders do) */
				char	   *sealed = seal_json(envelope, cfg.key, &len);
				size_t		o = 0;

				rep->body = sb_malloc(2 * len + 1);
				for (size_t i = 0; i < len; i++)
				{
					if (sealed[i] == '/')
						rep->body[o++] = '\\';
					rep->body[o++] = sealed[i];
				}
				rep->body[o] = '\0';
				rep->len = o;
				free(sealed);
				break;
			}
		case RESP_REDIRECT:
			rep->kind = REPLY_REDIRECT;
			rep->status = 302;
			rep->location = "http://127.0.0.2:9/";
			break;
		case RESP_NONE:
			rep->body = seal_json(envelope, cfg.key, &rep->len);
			break;
	}
	json_decref(envelope);
}

static void
invalid_token(SandboxReply *rep, const char *why)
{
	reply_json(rep, 401, json_pack("{s:s, s:s}", "error", "invalid_token",
								   "error_description", why));
}

/*
 * One call under /api/.  Order: latency, "fail" (before anything, like a
 * gateway would), routing, bearer and partnerId, decryption; then the
 * business_error, drop and response faults, which only count calls that
 * got this far, so a 401 and the client's retry do not eat them.
 */
void
api_handle(SandboxRequest *req, SandboxReply *rep)
{
	const Endpoint *ep;
	const char *authz;
	const char *partner;
	long		latency;
	int			fail_status = 0;
	int			retry_after = -1;
	bool		token_ok;
	json_t	   *in;
	Ctx			ctx;
	char	   *biz = NULL;
	bool		drop = false;
	bool		drop_after = false;
	ResponseMode mode = RESP_NONE;
	ProcessingMode proc = PROC_NONE;
	long		proc_ms = 0;

	pthread_mutex_lock(&sandbox_lock);
	latency = faults_latency(req->path);
	pthread_mutex_unlock(&sandbox_lock);
	sandbox_sleep_ms(latency);

	pthread_mutex_lock(&sandbox_lock);
	if (fault_take(&faults.fail, req->path))
	{
		fail_status = faults.fail_status;
		retry_after = faults.fail_retry_after;
	}
	pthread_mutex_unlock(&sandbox_lock);
	if (fail_status)
	{
		reply_error(rep, fail_status, "Injected failure");
		rep->retry_after = retry_after;
		return;
	}

	ep = find_endpoint(req->path);
	if (ep == NULL)
	{
		reply_error(rep, 404, "Not found");
		return;
	}
	if (strcmp(req->method, "POST") != 0)
	{
		reply_error(rep, 405, "Method not allowed");
		return;
	}

	authz = MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, "Authorization");
	partner = MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, "partnerId");
	pthread_mutex_lock(&sandbox_lock);
	token_ok = auth_check_bearer(authz);
	pthread_mutex_unlock(&sandbox_lock);
	if (!token_ok)
	{
		invalid_token(rep, "Invalid or expired access token");
		return;
	}
	if (partner == NULL || strcmp(partner, cfg.partner_id) != 0)
	{
		invalid_token(rep, "Invalid partnerId");
		return;
	}

	if (cfg.no_encrypt)
		in = json_loadb(req->body, req->body_len, 0, NULL);
	else
		in = envelope_open(cfg.key, req->body, req->body_len);
	if (!json_is_object(in))
	{
		json_decref(in);
		reply_error(rep, 422, cfg.no_encrypt ? "Invalid request" :
					"Invalid encrypted request");
		return;
	}

	memset(&ctx, 0, sizeof(ctx));
	ctx.in = in;
	ctx.status = 200;
	pthread_mutex_lock(&sandbox_lock);
	api_apply_due();
	if (fault_take(&faults.biz, req->path))
		biz = sb_strdup(faults.biz_message ? faults.biz_message : "Injected business error");
	else if (fault_take(&faults.drop, req->path))
	{
		drop = true;
		drop_after = faults.drop_after_apply;
	}
	else if (fault_take(&faults.resp, req->path))
		mode = faults.resp_mode;
	else if (fault_take(&faults.proc, req->path))
	{
		proc = faults.proc_mode;
		proc_ms = faults.proc_ms;
	}
	if (proc == PROC_LOSE)
		ok_string(&ctx, "Success");
	else if (proc == PROC_APPLY_LATER)
	{
		/* answered now; the effect lands once due, seen by the next call after */
		grow_array((void **) &pending, &pending_cap, npending + 1, sizeof(Pending));
		pending[npending].ep = ep;
		pending[npending].in = json_incref(in);
		pending[npending].due = monotonic_now() + proc_ms / 1000.0;
		npending++;
		ok_string(&ctx, "Success");
	}
	else if (biz == NULL && (!drop || drop_after))
		ep->handler(&ctx);
	pthread_mutex_unlock(&sandbox_lock);
	json_decref(in);
	if (proc == PROC_ANSWER_LATER)
		sandbox_sleep_ms(proc_ms);

	if (biz)
	{
		fail(&ctx, "%s", biz);
		free(biz);
		reply_sealed(rep, ctx.out);
		return;
	}
	if (drop)
	{
		json_decref(ctx.out);
		rep->kind = REPLY_DROP;
		return;
	}
	if (ctx.out == NULL)		/* cannot happen; be safe */
		fail(&ctx, "Internal sandbox error");
	if (ctx.status != 200)
		reply_json(rep, ctx.status, ctx.out);
	else if (mode != RESP_NONE)
		reply_broken(rep, mode, ctx.out);
	else
		reply_sealed(rep, ctx.out);
}
