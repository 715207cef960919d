/*-------------------------------------------------------------------------
 *
 * mask.c
 *	  Removes card secrets and credentials from JSON before it is stored.
 *
 * Everything written to enkash's tables (audit log, idempotency outcomes)
 * goes through enkash_mask first.  Members named after a secret are
 * replaced by "[removed]" (names are matched word by word, see below); a
 * card number becomes first 6 / last 4; and any
 * string that looks like a card number (13 to 19 digits) is masked wherever
 * it appears, even inside free text, so a secret under an unexpected name
 * is caught as well.
 *
 *-------------------------------------------------------------------------
 */
#include "enkash.h"

#include "common/hashfn.h"
#include "utils/jsonb.h"

/*
 * Member names are matched by their words, so that every spelling of a
 * secret is caught (cvc, CVV2, cardPin, pin_block, newPIN, otpCode,
 * mfa_code, cardNumber, card_no) while words that merely contain one are not
 * (pincode, spinner, otpRequestId, pinSet): a name is split at '_', '-',
 * '.', white space and camelCase humps, and matches when it ends with one of
 * these word sequences (case-insensitively).
 */
#define MAX_WORDS 3

typedef struct NameEnding
{
	const char *words[MAX_WORDS + 1];	/* NULL-terminated */
} NameEnding;

/* Members whose values are never kept. */
static const NameEnding removed_endings[] = {
	{{"cvv"}}, {{"cvv2"}}, {{"cvc"}}, {{"cvc2"}}, {{"security", "code"}},
	{{"pin"}}, {{"pin", "block"}}, {{"otp"}}, {{"otp", "code"}},
	{{"otp", "value"}}, {{"mfa"}}, {{"mfa", "code"}}, {{"password"}},
	{{"passwd"}}, {{"secret"}}, {{"token"}}, {{"expiry"}}, {{"expiry", "date"}},
	{{NULL}}
};

/* Members holding a full card number, kept as first 6 / last 4. */
static const NameEnding card_number_endings[] = {
	{{"pan"}}, {{"card", "number"}}, {{"card", "no"}}, {{"card", "num"}},
	{{NULL}}
};

#define MAX_NAME_WORDS 16

typedef struct Word
{
	const char *start;
	int			len;
} Word;

static bool
is_separator(char c)
{
	return c == '_' || c == '-' || c == '.' || c == ' ' || c == '\t';
}

#define IS_UPPER(c) ((c) >= 'A' && (c) <= 'Z')
#define IS_LOWER(c) ((c) >= 'a' && (c) <= 'z')

/*
 * Splits a member name into words; returns how many (the last
 * MAX_NAME_WORDS of a longer name).  "cardPINBlock" is card, PIN, Block.
 */
static int
split_words(const char *name, int len, Word *words)
{
	int			n = 0;
	int			i = 0;

	while (i < len)
	{
		int			start;

		while (i < len && is_separator(name[i]))
			i++;
		if (i >= len)
			break;
		start = i++;
		while (i < len && !is_separator(name[i]))
		{
			/* a hump: "cardPin" at 'P', "PINBlock" at 'B' */
			if (IS_UPPER(name[i]) &&
				(IS_LOWER(name[i - 1]) ||
				 (i + 1 < len && IS_UPPER(name[i - 1]) && IS_LOWER(name[i + 1]))))
				break;
			i++;
		}
		if (n == MAX_NAME_WORDS)
		{
			memmove(words, words + 1, sizeof(Word) * (MAX_NAME_WORDS - 1));
			n--;
		}
		words[n].start = name + start;
		words[n].len = i - start;
		n++;
	}
	return n;
}

static bool
name_ends_with(const Word *words, int n, const NameEnding *list)
{
	for (const NameEnding *e = list; e->words[0]; e++)
	{
		int			k = 0;
		bool		match = true;

		while (e->words[k])
			k++;
		if (k > n)
			continue;
		for (int j = 0; j < k && match; j++)
		{
			const Word *w = &words[n - k + j];

			match = w->len == (int) strlen(e->words[j]) &&
				pg_strncasecmp(w->start, e->words[j], w->len) == 0;
		}
		if (match)
			return true;
	}
	return false;
}

typedef enum MemberKind
{
	MEMBER_KEPT,
	MEMBER_REMOVED,				/* its value is never kept */
	MEMBER_CARD_NUMBER			/* kept as first 6 / last 4 */
} MemberKind;

static MemberKind
classify_member(const char *name, int len)
{
	Word		words[MAX_NAME_WORDS];
	int			n = split_words(name, len, words);

	if (name_ends_with(words, n, removed_endings))
		return MEMBER_REMOVED;
	if (name_ends_with(words, n, card_number_endings))
		return MEMBER_CARD_NUMBER;
	return MEMBER_KEPT;
}

/*
 * The kinds of the names seen so far, by hash: the same few member names
 * and ids come in every call, and splitting them into words each time costs
 * more than the rest of masking.  Direct-mapped; a clash just recomputes.
 */
#define KIND_CACHE_SIZE 256
#define KIND_CACHE_NAME 48

typedef struct KindCacheEntry
{
	uint8		len;			/* 0: empty */
	uint8		kind;
	char		name[KIND_CACHE_NAME];
} KindCacheEntry;

static KindCacheEntry kind_cache[KIND_CACHE_SIZE];

static MemberKind
member_kind(const char *name, int len)
{
	KindCacheEntry *e;

	if (len <= 0 || len > KIND_CACHE_NAME)
		return classify_member(name, len);
	e = &kind_cache[hash_bytes((const unsigned char *) name, len) % KIND_CACHE_SIZE];
	if (e->len != len || memcmp(e->name, name, len) != 0)
	{
		e->kind = (uint8) classify_member(name, len);
		memcpy(e->name, name, len);
		e->len = (uint8) len;
	}
	return (MemberKind) e->kind;
}

/* Whether a member of this name is removed or masked. */
static bool
names_masked_member(const char *name, int len)
{
	return member_kind(name, len) != MEMBER_KEPT;
}

/* Writes a card number's digits as first 6, X's, last 4. */
static void
append_masked_digits(StringInfo out, const char *digits, int n)
{
	appendBinaryStringInfo(out, digits, 6);
	for (int i = 6; i < n - 4; i++)
		appendStringInfoChar(out, 'X');
	appendBinaryStringInfo(out, digits + n - 4, 4);
}

/*
 * The run of digits starting at s[i] (a digit), with single spaces or dashes
 * between them ("4111 1111 1111 1111"): returns its end and counts its
 * digits in *n, copying them to digits when given.
 */
static int
digit_run(const char *s, int len, int i, char *digits, int *n)
{
	*n = 0;
	while (i < len && ((s[i] >= '0' && s[i] <= '9') ||
					   ((s[i] == ' ' || s[i] == '-') && i + 1 < len &&
						s[i + 1] >= '0' && s[i + 1] <= '9')))
	{
		if (s[i] >= '0' && s[i] <= '9')
		{
			if (digits)
				digits[*n] = s[i];
			(*n)++;
		}
		i++;
	}
	return i;
}

#define IS_CARD_NUMBER_LENGTH(n) ((n) >= 13 && (n) <= 19)

/* Whether a string holds something that looks like a card number. */
static bool
has_card_number(const char *s, int len)
{
	int			i = 0;

	while (i < len)
	{
		int			n;

		if (!(s[i] >= '0' && s[i] <= '9'))
		{
			i++;
			continue;
		}
		i = digit_run(s, len, i, NULL, &n);
		if (IS_CARD_NUMBER_LENGTH(n))
			return true;
	}
	return false;
}

/*
 * Masks every card number inside a string, wherever it stands, so that one
 * typed into a description is caught too.  With whole, the string is a
 * card number member: all of it is masked.
 */
static bool
mask_card_numbers(JsonbValue *v, bool whole)
{
	const char *s = v->val.string.val;
	int			len = v->val.string.len;
	char	   *digits;
	StringInfoData out;
	bool		changed = false;
	int			i = 0;

	if (!whole && !has_card_number(s, len))
		return false;			/* most strings: kept as they are, not copied */
	digits = palloc(len + 1);
	initStringInfo(&out);
	while (i < len)
	{
		int			start = i;
		int			n;

		if (!(s[i] >= '0' && s[i] <= '9'))
		{
			while (i < len && !(s[i] >= '0' && s[i] <= '9'))
				i++;
			appendBinaryStringInfo(&out, s + start, i - start);
			continue;
		}
		i = digit_run(s, len, i, digits, &n);
		if (IS_CARD_NUMBER_LENGTH(n))
		{
			append_masked_digits(&out, digits, n);
			changed = true;
		}
		else
			appendBinaryStringInfo(&out, s + start, i - start);
	}
	if (whole && !changed)
	{
		resetStringInfo(&out);
		appendStringInfoString(&out, "[removed]");
		changed = true;
	}
	if (changed)
	{
		v->val.string.val = out.data;
		v->val.string.len = out.len;
	}
	return changed;
}

static void
set_removed(JsonbValue *v)
{
	v->type = jbvString;
	v->val.string.val = "[removed]";
	v->val.string.len = 9;
}

/*
 * Whether masking would change a document: a member named after a secret
 * or a card number, or a string holding a card number.  A read-only walk,
 * much cheaper than rebuilding the document, which most answers do not need.
 */
static bool
needs_masking(Jsonb *json)
{
	JsonbIterator *it = JsonbIteratorInit(&json->root);
	JsonbValue	v;
	JsonbIteratorToken token;

	while ((token = JsonbIteratorNext(&it, &v, false)) != WJB_DONE)
	{
		if (token == WJB_KEY)
		{
			if (names_masked_member(v.val.string.val, v.val.string.len))
				return true;
		}
		else if ((token == WJB_VALUE || token == WJB_ELEM) && v.type == jbvString &&
				 has_card_number(v.val.string.val, v.val.string.len))
			return true;
	}
	return false;
}

/* The masked copy of a JSON document (the document itself if nothing is masked). */
Jsonb *
enkash_mask(Jsonb *json)
{
	JsonbParseState *state = NULL;
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken token;
	JsonbValue *result = NULL;
	bool		remove_next = false;
	bool		card_next = false;

	if (!needs_masking(json))
		return json;
	it = JsonbIteratorInit(&json->root);

	while ((token = JsonbIteratorNext(&it, &v, false)) != WJB_DONE)
	{
		if (token == WJB_KEY)
		{
			MemberKind	kind = member_kind(v.val.string.val, v.val.string.len);

			remove_next = (kind == MEMBER_REMOVED);
			card_next = (kind == MEMBER_CARD_NUMBER);
			result = pushJsonbValue(&state, token, &v);
			continue;
		}

		if (token == WJB_VALUE || token == WJB_ELEM)
		{
			if (remove_next && token == WJB_VALUE)
				set_removed(&v);
			else if (v.type == jbvString)
				mask_card_numbers(&v, card_next && token == WJB_VALUE);
			remove_next = card_next = false;
			result = pushJsonbValue(&state, token, &v);
			continue;
		}

		/*
		 * Opening a container under a removed member: skip the container
		 * and store the marker instead.
		 */
		if ((token == WJB_BEGIN_OBJECT || token == WJB_BEGIN_ARRAY) && remove_next)
		{
			int			depth = 1;
			JsonbValue	marker;

			while (depth > 0 && (token = JsonbIteratorNext(&it, &v, false)) != WJB_DONE)
			{
				if (token == WJB_BEGIN_OBJECT || token == WJB_BEGIN_ARRAY)
					depth++;
				else if (token == WJB_END_OBJECT || token == WJB_END_ARRAY)
					depth--;
			}
			set_removed(&marker);
			result = pushJsonbValue(&state, WJB_VALUE, &marker);
			remove_next = card_next = false;
			continue;
		}
		remove_next = card_next = false;
		/* Only a raw scalar's pseudo-array needs its value passed on. */
		result = pushJsonbValue(&state, token,
								(token == WJB_BEGIN_ARRAY && v.val.array.rawScalar) ? &v : NULL);
	}
	return JsonbValueToJsonb(result);
}

/*
 * Whether masking could change the text: a string naming a secret member
 * (as a key or anywhere else), or 13 or more digits in a run of digits,
 * spaces and dashes.  One pass over the text; most requests have neither,
 * and are stored without being parsed again.
 */
static bool
may_hold_secrets(const char *json, size_t len)
{
	int			digits = 0;

	for (size_t i = 0; i < len; i++)
	{
		char		c = json[i];

		if (c >= '0' && c <= '9')
		{
			if (++digits >= 13)
				return true;
			continue;
		}
		if (c != ' ' && c != '-')
			digits = 0;
		if (c == '"')
		{
			size_t		start = ++i;

			/* to the closing quote; digits inside strings count as well */
			for (; i < len && json[i] != '"'; i++)
			{
				if (json[i] >= '0' && json[i] <= '9')
				{
					if (++digits >= 13)
						return true;
				}
				else if (json[i] != ' ' && json[i] != '-')
					digits = 0;
				if (json[i] == '\\')
					i++;
			}
			if (i - start <= 64 && names_masked_member(json + start, (int) (i - start)))
				return true;
			digits = 0;
		}
	}
	return false;
}

/* Masks JSON text; text that is not JSON is not stored at all (NULL). */
Jsonb *
enkash_mask_text(const char *json, size_t len)
{
	Jsonb	   *parsed = enkash_parse_json_or_null(json, len);

	return parsed ? enkash_mask(parsed) : NULL;
}

/*
 * Masks JSON that enkash built itself (a request body), skipping the parse
 * when nothing in it could be a secret.
 */
char *
enkash_mask_request(const char *json, size_t len)
{
	Jsonb	   *masked;

	if (!may_hold_secrets(json, len))
		return pnstrdup(json, len);
	masked = enkash_mask_text(json, len);
	return masked ? JsonbToCString(NULL, &masked->root, VARSIZE(masked)) : NULL;
}

/* The same for a body already parsed: the body itself when nothing in it could be a secret. */
Jsonb *
enkash_mask_body(const char *json, size_t len, Jsonb *body)
{
	return may_hold_secrets(json, len) ? enkash_mask(body) : body;
}
