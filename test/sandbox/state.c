/*-------------------------------------------------------------------------
 *
 * state.c
 *	  The sandbox's in-memory EnKash model: seed data, ids, card numbers,
 *	  money and time formatting, transactions, the load ledger and OTPs.
 *
 * All functions here expect the caller to hold sandbox_lock.
 *
 *-------------------------------------------------------------------------
 */
#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/rand.h>
#include <openssl/sha.h>

#include "state.h"

State		st;

/* survives resets, so ids are never reused within one process */
static uint64_t id_seq;

/* ---- ids ---- */

/*
 * prefix + 6 base-36 digits of a sequence + 4 random characters: unique,
 * uppercase alphanumeric, and sorting by id sorts by creation.
 */
void
new_id(const char *prefix, char *buf, size_t len)
{
	static const char alnum[] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";
	char		seq[7];
	char		rnd[5];
	unsigned char r[4];
	uint64_t	n = ++id_seq;
	int			i;

	for (i = 5; i >= 0; i--)
	{
		seq[i] = alnum[n % 36];
		n /= 36;
	}
	seq[6] = '\0';
	RAND_bytes(r, sizeof(r));
	for (i = 0; i < 4; i++)
		rnd[i] = alnum[r[i] % 36];
	rnd[4] = '\0';
	snprintf(buf, len, "%s%s%s", prefix, seq, rnd);
}

/* ---- money and time ---- */

/* whole rupees print as integers, the rest with up to two decimals */
json_t *
json_money(int64_t paise)
{
	if (paise % 100 == 0)
		return json_integer(paise / 100);
	return json_real((double) paise / 100.0);
}

char *
money_str(int64_t paise, char *buf, size_t buflen)
{
	const char *sign = paise < 0 ? "-" : "";
	int64_t		a = paise < 0 ? -paise : paise;

	snprintf(buf, buflen, "%s%lld.%02lld", sign, (long long) (a / 100),
			 (long long) (a % 100));
	return buf;
}

/* amounts above this are refused; it keeps doubles exact to the paisa */
#define MAX_PAISE ((int64_t) 1000000000000000)

/*
 * A JSON number with at most two decimals, converted to paise.  A double
 * written with two decimals parses to exactly (double) paise / 100, so any
 * value that does not is "10.000000001" or similar and is refused.
 */
bool
json_to_paise(json_t *v, int64_t *paise)
{
	if (json_is_integer(v))
	{
		json_int_t	i = json_integer_value(v);

		if (i > MAX_PAISE / 100 || i < -MAX_PAISE / 100)
			return false;
		*paise = (int64_t) i * 100;
		return true;
	}
	if (json_is_real(v))
	{
		double		d = json_real_value(v);
		long long	p;

		if (!isfinite(d) || fabs(d) * 100.0 > (double) MAX_PAISE)
			return false;
		p = llround(d * 100.0);
		if ((double) p / 100.0 != d)
			return false;
		*paise = p;
		return true;
	}
	return false;
}

#define IST_OFFSET_S (5 * 3600 + 30 * 60)

/* As EnKash's answers write times: "Jan 23, 2025 4:38:36 PM", IST, no offset. */
void
format_ist(int64_t ms, char *buf, size_t buflen)
{
	static const char *const months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
	"Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
	time_t		t = (time_t) (ms / 1000) + IST_OFFSET_S;
	struct tm	tm;
	int			hour12;

	gmtime_r(&t, &tm);
	hour12 = tm.tm_hour % 12 == 0 ? 12 : tm.tm_hour % 12;
	snprintf(buf, buflen, "%s %d, %d %d:%02d:%02d %s", months[tm.tm_mon],
			 tm.tm_mday, tm.tm_year + 1900, hour12, tm.tm_min, tm.tm_sec,
			 tm.tm_hour < 12 ? "AM" : "PM");
}

static bool
digits(const char **s, int n, int *out)
{
	int			v = 0;
	int			i;

	for (i = 0; i < n; i++)
	{
		if (!isdigit((unsigned char) (*s)[i]))
			return false;
		v = v * 10 + ((*s)[i] - '0');
	}
	*s += n;
	*out = v;
	return true;
}

/*
 * ISO-8601: YYYY-MM-DD[THH:MM[:SS[.fff]]][Z|+HH:MM|-HH:MM].  Without an
 * offset the time is IST, EnKash's zone.  A bare date means the start of
 * that day, or its last millisecond if end_of_day (for "to" bounds).
 */
bool
parse_iso8601(const char *s, bool end_of_day, int64_t *ms)
{
	struct tm	tm;
	int			y,
				mo,
				d,
				h = 0,
				mi = 0,
				sec = 0,
				frac = 0;
	int			offset = IST_OFFSET_S;
	bool		date_only = true;
	time_t		t;

	memset(&tm, 0, sizeof(tm));
	if (!digits(&s, 4, &y) || *s++ != '-' || !digits(&s, 2, &mo) ||
		*s++ != '-' || !digits(&s, 2, &d))
		return false;
	if (*s == 'T' || *s == ' ')
	{
		s++;
		date_only = false;
		if (!digits(&s, 2, &h) || *s++ != ':' || !digits(&s, 2, &mi))
			return false;
		if (*s == ':')
		{
			s++;
			if (!digits(&s, 2, &sec))
				return false;
			if (*s == '.')
			{
				int			scale = 100;

				s++;
				if (!isdigit((unsigned char) *s))
					return false;
				while (isdigit((unsigned char) *s))
				{
					frac += (*s - '0') * scale;
					scale /= 10;
					s++;
				}
			}
		}
		if (*s == 'Z')
		{
			offset = 0;
			s++;
		}
		else if (*s == '+' || *s == '-')
		{
			int			sign = (*s == '-') ? -1 : 1;
			int			oh,
						om = 0;

			s++;
			if (!digits(&s, 2, &oh))
				return false;
			if (*s == ':')
				s++;
			if (isdigit((unsigned char) *s) && !digits(&s, 2, &om))
				return false;
			offset = sign * (oh * 3600 + om * 60);
		}
	}
	if (*s != '\0' || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 ||
		mi > 59 || sec > 60)
		return false;
	tm.tm_year = y - 1900;
	tm.tm_mon = mo - 1;
	tm.tm_mday = d;
	tm.tm_hour = h;
	tm.tm_min = mi;
	tm.tm_sec = sec;
	t = timegm(&tm) - offset;
	*ms = (int64_t) t * 1000 + frac;
	if (date_only && end_of_day)
		*ms += 86400 * 1000 - 1;
	return true;
}

/* ---- accounts and cards ---- */

int
find_account(const char *id)
{
	int			i;

	for (i = 0; id && i < st.naccounts; i++)
		if (strcmp(st.accounts[i].id, id) == 0)
			return i;
	return -1;
}

int
find_card(const char *id)
{
	int			i;

	for (i = 0; id && i < st.ncards; i++)
		if (strcmp(st.cards[i].id, id) == 0)
			return i;
	return -1;
}

int
add_account(const char *id, const char *company_id, const char *company_name,
			const char *plan_master_id, const char *email, const char *mobile,
			const char *title, const char *type)
{
	Account    *a;

	grow_array((void **) &st.accounts, &st.accounts_cap, st.naccounts + 1,
			   sizeof(Account));
	a = &st.accounts[st.naccounts];
	a->id = sb_strdup(id);
	a->company_id = sb_strdup(company_id);
	a->company_name = sb_strdup(company_name);
	a->plan_master_id = sb_strdup(plan_master_id);
	a->email = sb_strdup(email);
	a->mobile = sb_strdup(mobile);
	a->title = sb_strdup(title);
	a->type = sb_strdup(type);
	a->available = NEW_ACCOUNT_FUNDS;
	a->credit_limit = NEW_ACCOUNT_FUNDS;
	a->primary_card = -1;
	return st.naccounts++;
}

/*
 * Card numbers are derived from the card id, so a card keeps its PAN across
 * resets and test runs: 652150 + 9 digits + Luhn check digit.
 */
static void
derive_card_secrets(Card *c)
{
	unsigned char h[SHA256_DIGEST_LENGTH];
	char		input[128];
	int			sum = 0;
	int			i;

	snprintf(input, sizeof(input), "pan:%s", c->id);
	SHA256((const unsigned char *) input, strlen(input), h);
	memcpy(c->pan, "652150", 6);
	for (i = 0; i < 9; i++)
		c->pan[6 + i] = '0' + h[i] % 10;
	for (i = 0; i < 15; i++)
	{
		/* Luhn: double every second digit from the right of the full PAN */
		int			dgt = c->pan[14 - i] - '0';

		if (i % 2 == 0)
		{
			dgt *= 2;
			if (dgt > 9)
				dgt -= 9;
		}
		sum += dgt;
	}
	c->pan[15] = '0' + (10 - sum % 10) % 10;
	c->pan[16] = '\0';
	snprintf(c->expiry, sizeof(c->expiry), "%02d/%02d", 1 + h[10] % 12,
			 30 + h[11] % 5);
	snprintf(c->cvv, sizeof(c->cvv), "%03d", (h[12] << 8 | h[13]) % 1000);
	snprintf(c->masked, sizeof(c->masked), "652150XXXXXX%s", c->pan + 12);

	/* the token must not reveal the PAN, so hash under another label */
	snprintf(input, sizeof(input), "token:%s", c->id);
	SHA256((const unsigned char *) input, strlen(input), h);
	memcpy(c->token, "TKN", 3);
	for (i = 0; i < 12; i++)
		sprintf(c->token + 3 + 2 * i, "%02X", h[i]);
}

int
add_card(const char *id, int account, const char *user_id, const char *first,
		 const char *last, const char *email, const char *mobile, bool gift)
{
	Card	   *c;
	char		idbuf[32];
	char		holder[512];

	grow_array((void **) &st.cards, &st.cards_cap, st.ncards + 1, sizeof(Card));
	c = &st.cards[st.ncards];
	memset(c, 0, sizeof(*c));
	if (id == NULL)
	{
		new_id("EKC", idbuf, sizeof(idbuf));
		id = idbuf;
	}
	c->id = sb_strdup(id);
	if (user_id == NULL)
	{
		new_id("EKU", idbuf, sizeof(idbuf));
		user_id = idbuf;
	}
	c->user_id = sb_strdup(user_id);
	snprintf(holder, sizeof(holder), "%s %s", first, last);
	c->holder = sb_strdup(holder);
	c->email = sb_strdup(email);
	c->mobile = sb_strdup(mobile);
	c->account = account;
	c->status = CARD_ACTIVE;
	c->gift = gift;
	derive_card_secrets(c);
	if (st.accounts[account].primary_card < 0)
		st.accounts[account].primary_card = st.ncards;
	return st.ncards++;
}

const char *
card_status_label(CardStatus s)
{
	switch (s)
	{
		case CARD_ACTIVE:
			return "ACTIVE";
		case CARD_LOCKED:
			return "LOCKED";
		case CARD_BLOCKED:
			return "BLOCKED";
		case CARD_ACTIVATION_IN_PROGRESS:
			return "ACTIVATION_IN_PROGRESS";
		case CARD_REPLACED:
			return "REPLACED";
	}
	return "UNKNOWN";
}

/* the primaryEnKashCard shape; never the PAN */
json_t *
card_brief_json(int card)
{
	Card	   *c = &st.cards[card];

	return json_pack("{s:s, s:s, s:s, s:s, s:s}",
					 "enKashCardId", c->id,
					 "userId", c->user_id,
					 "cardAccountId", st.accounts[c->account].id,
					 "token", c->token,
					 "maskedNumber", c->masked);
}

/* the /search and create-card shape; never the PAN or CVV */
json_t *
card_json(int card)
{
	Card	   *c = &st.cards[card];
	Account    *a = &st.accounts[c->account];
	json_t	   *j = card_brief_json(card);

	json_object_set_new(j, "cardStatus",
						json_pack("{s:s}", "label", card_status_label(c->status)));
	json_object_set_new(j, "otbBalance", json_money(c->balance));
	json_object_set_new(j, "cardHolderName", json_string(c->holder));
	json_object_set_new(j, "email", json_string(c->email));
	json_object_set_new(j, "mobile", json_string(c->mobile));
	json_object_set_new(j, "companyId", json_string(a->company_id));
	json_object_set_new(j, "cardType", json_string(c->gift ? "GIFT" : "PREPAID"));
	json_object_set_new(j, "primaryEnKashCard", json_boolean(a->primary_card == card));
	json_object_set_new(j, "physicalCard", json_boolean(c->physical));
	json_object_set_new(j, "pinSet", json_boolean(c->pin_set));
	return j;
}

/* ---- transactions and ledger ---- */

int
add_txn(int card, bool credit, int64_t amount, const char *reference,
		const char *description, const char *type, const char *merchant,
		const char *mcc, const char *channel)
{
	Txn		   *t;
	char		idbuf[32];
	unsigned char r[6];
	int			i;

	grow_array((void **) &st.txns, &st.txns_cap, st.ntxns + 1, sizeof(Txn));
	t = &st.txns[st.ntxns];
	new_id("EKTXN", idbuf, sizeof(idbuf));
	t->id = sb_strdup(idbuf);
	t->card = card;
	t->credit = credit;
	t->amount = amount;
	t->balance_after = st.cards[card].balance;
	t->reference = reference ? sb_strdup(reference) : NULL;
	t->description = description ? sb_strdup(description) : NULL;
	t->type = sb_strdup(type);
	t->merchant = merchant ? sb_strdup(merchant) : NULL;
	t->mcc = mcc ? sb_strdup(mcc) : NULL;
	t->channel = sb_strdup(channel);
	RAND_bytes(r, sizeof(r));
	for (i = 0; i < 6; i++)
		sprintf(t->rrn + 2 * i, "%02d", r[i] % 100);
	t->when_ms = wall_ms();
	return st.ntxns++;
}

static json_t *
json_string_or_null(const char *s)
{
	return s ? json_string(s) : json_null();
}

json_t *
txn_json(int txn)
{
	Txn		   *t = &st.txns[txn];
	Card	   *c = &st.cards[t->card];
	Account    *a = &st.accounts[c->account];
	char		when[64];

	format_ist(t->when_ms, when, sizeof(when));
	return json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:o, s:o, s:o, s:o,"
					 " s:s, s:s, s:s, s:s, s:s, s:s,"
					 " s:{s:o, s:o, s:s, s:s, s:s, s:i}}",
					 "enKashCardTransactionId", t->id,
					 "maskedCard", c->masked,
					 "enkashCardId", c->id,
					 "cardAccountId", a->id,
					 "userId", c->user_id,
					 "cardHolderName", c->holder,
					 "companyId", a->company_id,
					 "principalAmount", json_money(t->amount),
					 "balance", json_money(t->balance_after),
					 "pgReferenceNumber", json_string_or_null(t->reference),
					 "description", json_string_or_null(t->description),
					 "currency", "INR",
					 "cardTransactionType", t->credit ? "CR" : "DR",
					 "status", "SUCCESS",
					 "type", t->type,
					 "createdOn", when,
					 "txnDate", when,
					 "txnDetails",
					 "merchantName", json_string_or_null(t->merchant),
					 "mcc", json_string_or_null(t->mcc),
					 "channel", t->channel,
					 "retrievalRefNo", t->rrn,
					 "network", "RUPAY",
					 "transactionFees", 0);
}

/* FNV-1a: references are short, and a test's run of 100,000 loads stays cheap */
static uint32_t
reference_hash(const char *s)
{
	uint32_t	h = 2166136261u;

	for (; *s; s++)
		h = (h ^ (unsigned char) *s) * 16777619u;
	return h;
}

/* The slot of reference in the ledger's hash: its entry, or the empty slot for it. */
static int *
ledger_slot(const char *reference)
{
	uint32_t	mask = (uint32_t) st.nslots - 1;
	uint32_t	i = reference_hash(reference) & mask;

	while (st.ledger_slots[i] != 0 &&
		   strcmp(st.ledger[st.ledger_slots[i] - 1].reference, reference) != 0)
		i = (i + 1) & mask;
	return &st.ledger_slots[i];
}

static int
ledger_find(const char *reference)
{
	return st.nslots == 0 ? -1 : *ledger_slot(reference) - 1;
}

void
ledger_credit(const char *reference, int64_t amount)
{
	LedgerEntry *e;
	int			i = ledger_find(reference);

	if (i >= 0)
	{
		st.ledger[i].count++;
		st.ledger[i].amount += amount;
		return;
	}
	if (2 * (st.nledger + 1) > st.nslots)
	{
		/* grow the hash and put every reference back in */
		free(st.ledger_slots);
		st.nslots = st.nslots ? st.nslots * 2 : 64;
		st.ledger_slots = sb_malloc(sizeof(int) * st.nslots);
		memset(st.ledger_slots, 0, sizeof(int) * st.nslots);
		for (i = 0; i < st.nledger; i++)
			*ledger_slot(st.ledger[i].reference) = i + 1;
	}
	grow_array((void **) &st.ledger, &st.ledger_cap, st.nledger + 1,
			   sizeof(LedgerEntry));
	e = &st.ledger[st.nledger++];
	e->reference = sb_strdup(reference);
	e->count = 1;
	e->amount = amount;
	*ledger_slot(reference) = st.nledger;
}

/* the /__sandbox/ledger answer, for one reference or all of them */
json_t *
ledger_json(const char *reference)
{
	char		buf[40];
	json_t	   *list;
	int64_t		total = 0;
	int64_t		total_amount = 0;
	int			i;

	if (reference)
	{
		i = ledger_find(reference);
		if (i >= 0)
			return json_pack("{s:s, s:I, s:s}", "reference", reference,
							 "count", (json_int_t) st.ledger[i].count,
							 "amount", money_str(st.ledger[i].amount, buf, sizeof(buf)));
		return json_pack("{s:s, s:i, s:s}", "reference", reference,
						 "count", 0, "amount", "0.00");
	}
	list = json_array();
	for (i = 0; i < st.nledger; i++)
	{
		json_array_append_new(list,
							  json_pack("{s:s, s:I, s:s}",
										"reference", st.ledger[i].reference,
										"count", (json_int_t) st.ledger[i].count,
										"amount", money_str(st.ledger[i].amount, buf, sizeof(buf))));
		total += st.ledger[i].count;
		total_amount += st.ledger[i].amount;
	}
	return json_pack("{s:o, s:I, s:s}", "credits", list,
					 "total_count", (json_int_t) total,
					 "total_amount", money_str(total_amount, buf, sizeof(buf)));
}

/* ---- OTPs ---- */

const char *
otp_issue(int card)
{
	Otp		   *o;
	char		idbuf[32];
	unsigned char r[4];

	grow_array((void **) &st.otps, &st.otps_cap, st.notps + 1, sizeof(Otp));
	o = &st.otps[st.notps];
	new_id("OTPREQ", idbuf, sizeof(idbuf));
	o->id = sb_strdup(idbuf);
	RAND_bytes(r, sizeof(r));
	snprintf(o->otp, sizeof(o->otp), "%06u",
			 (unsigned) ((r[0] << 24 | r[1] << 16 | r[2] << 8 | r[3]) % 1000000u));
	o->card = card;
	o->used = false;
	st.notps++;
	return o->id;
}

/* single use: a matching OTP is spent even if the caller then fails */
bool
otp_consume(const char *id, const char *otp, int card)
{
	int			i;

	for (i = 0; id && otp && i < st.notps; i++)
	{
		Otp		   *o = &st.otps[i];

		if (strcmp(o->id, id) != 0)
			continue;
		if (o->used || o->card != card || strcmp(o->otp, otp) != 0)
			return false;
		o->used = true;
		return true;
	}
	return false;
}

const char *
otp_lookup(const char *otp_request_id)
{
	int			i;

	for (i = 0; otp_request_id && i < st.notps; i++)
		if (strcmp(st.otps[i].id, otp_request_id) == 0)
			return st.otps[i].otp;
	return NULL;
}

/* ---- spends injected through the control API ---- */

int
sandbox_spend(const char *card_id, int64_t amount, const char *merchant,
			  const char *mcc, const char *reference, char *err, size_t errlen)
{
	int			card = find_card(card_id);
	Card	   *c;
	char		rrn_ref[40];

	if (card < 0)
	{
		snprintf(err, errlen, "Card not found");
		return 404;
	}
	c = &st.cards[card];
	if (c->status != CARD_ACTIVE)
	{
		snprintf(err, errlen, "Card is not active");
		return 409;
	}
	if (c->balance < amount)
	{
		snprintf(err, errlen, "Insufficient card balance");
		return 409;
	}
	c->balance -= amount;
	if (reference == NULL)
	{
		new_id("POS", rrn_ref, sizeof(rrn_ref));
		reference = rrn_ref;
	}
	add_txn(card, false, amount, reference, merchant, "SALE", merchant, mcc, "POS");
	return 200;
}

/* ---- reset ---- */

void
state_free(void)
{
	int			i;

	for (i = 0; i < st.naccounts; i++)
	{
		Account    *a = &st.accounts[i];

		free(a->id);
		free(a->company_id);
		free(a->company_name);
		free(a->plan_master_id);
		free(a->email);
		free(a->mobile);
		free(a->title);
		free(a->type);
	}
	for (i = 0; i < st.ncards; i++)
	{
		Card	   *c = &st.cards[i];

		free(c->id);
		free(c->user_id);
		free(c->holder);
		free(c->email);
		free(c->mobile);
		json_decref(c->velocity);
	}
	for (i = 0; i < st.ntxns; i++)
	{
		Txn		   *t = &st.txns[i];

		free(t->id);
		free(t->reference);
		free(t->description);
		free(t->type);
		free(t->merchant);
		free(t->mcc);
		free(t->channel);
	}
	for (i = 0; i < st.nledger; i++)
		free(st.ledger[i].reference);
	for (i = 0; i < st.notps; i++)
		free(st.otps[i].id);
	free(st.accounts);
	free(st.cards);
	free(st.txns);
	free(st.ledger);
	free(st.ledger_slots);
	free(st.otps);
	memset(&st, 0, sizeof(st));
}

/* back to the documented seed; caller holds sandbox_lock (or is single) */
void
state_reset(void)
{
	int			acc;
	int			card;

	state_free();
	acc = add_account("CASANDBOX1", cfg.company_id, "Sandbox Traders Pvt Ltd",
					  "PMSANDBOX1", "accounts@sandboxtraders.example",
					  "9999999999", "Sandbox Traders Corporate", "CORPORATE");
	add_card("EKCSANDBOX1", acc, "EKUSERSANDBOX1", "Asha", "Rao",
			 "asha.rao@sandboxtraders.example", "9876543210", false);
	add_card("EKCSANDBOX2", acc, "EKUSERSANDBOX2", "Vikram", "Iyer",
			 "vikram.iyer@sandboxtraders.example", "9876543211", false);

	acc = add_account("CAGIFT1", cfg.company_id, "Sandbox Traders Pvt Ltd",
					  "PMSANDBOX1", "accounts@sandboxtraders.example",
					  "9999999999", "Sandbox Traders Gifts", "GIFT");
	card = add_card("EKCGIFT1", acc, "EKUSERGIFT1", "Meera", "Nair",
					"meera.nair@sandboxtraders.example", "9876543212", true);
	st.cards[card].balance = 50000;
}
