/*
 * fuzz_response.c
 *	  libFuzzer harness for reading EnKash's answers: the PostgreSQL-free
 *	  steps of src/response.c (envelope_unwrap, envelope_open and the nesting
 *	  scan envelope_json_depth from src/envelope.c) and the JSON parse that
 *	  follows them, with PostgreSQL's own parser (the frontend build of
 *	  pg_parse_json in Debian's libpgcommon.a, the same code as the server's
 *	  minus its stack-depth check).  Built by test/fuzz/run.sh with
 *	  clang -fsanitize=fuzzer,address,undefined.
 *
 * Every input is used two ways, and PostgreSQL's parser is the judge:
 *	 1. as an HTTP body: envelope_unwrap() must find the Base64 text exactly
 *		when the body is a JSON object whose only member is "request", a
 *		string without escapes, and that text must be the member's value
 *		(or hold a raw control character, which the Base64 decoder must
 *		refuse); "truncated" only for bodies that are not JSON.  Found text is opened
 *		(the key is fixed) and what opens is parsed like an answer.
 *	 2. as the plaintext of an answer: sealed, wrapped with whitespace taken
 *		from the input, unwrapped, opened, compared byte for byte, parsed.
 * Parsing: envelope_json_depth() must never report less nesting than the
 * parser reaches (it is what keeps the server's recursive parser within its
 * stack); the parse runs only when the scan allows it, as in the server.
 * Inputs are copied into buffers of exactly their size, so ASan sees any
 * read past the end.  A violated property abort()s, which libFuzzer reports
 * as a crash.
 *
 * palloc() and friends are defined here, replacing libpgcommon's malloc
 * wrappers: like the server's memory context, everything the parser
 * allocated is freed after each input (on an error the frontend parser
 * drops the token at hand, which the server frees with its context).
 */
#include "postgres_fe.h"

#include <stdint.h>

#include "common/jsonapi.h"
#include "mb/pg_wchar.h"

#include "envelope.h"

#define FUZZ_SECRET "sandbox-secret-1"

/* The deepest nesting the differential depth check parses. */
#define PARSE_DEPTH_LIMIT 2000

static EnvelopeCipher cipher;
static bool ready = false;

/* --- a memory context: every palloc'd chunk, freed after each input --- */
typedef struct Chunk
{
	struct Chunk *prev;
	struct Chunk *next;
	size_t		size;
	max_align_t align[];
} Chunk;

static Chunk *chunks = NULL;

static void fail(const char *what);

static void *
chunk_alloc(size_t size, bool zero)
{
	Chunk	   *c = zero ? calloc(1, sizeof(Chunk) + size) : malloc(sizeof(Chunk) + size);

	if (c == NULL)
		fail("out of memory");
	c->size = size;
	c->prev = NULL;
	c->next = chunks;
	if (chunks)
		chunks->prev = c;
	chunks = c;
	return c->align;
}

static Chunk *
chunk_of(void *p)
{
	return (Chunk *) ((char *) p - offsetof(Chunk, align));
}

void *
palloc(Size size)
{
	return chunk_alloc(size, false);
}

void *
palloc0(Size size)
{
	return chunk_alloc(size, true);
}

void
pfree(void *p)
{
	Chunk	   *c = chunk_of(p);

	if (c->prev)
		c->prev->next = c->next;
	else
		chunks = c->next;
	if (c->next)
		c->next->prev = c->prev;
	free(c);
}

void *
repalloc(void *p, Size size)
{
	void	   *q = palloc(size);
	Chunk	   *c = chunk_of(p);

	memcpy(q, p, c->size < size ? c->size : size);
	pfree(p);
	return q;
}

char *
pstrdup(const char *s)
{
	size_t		n = strlen(s);
	char	   *d = palloc(n + 1);

	memcpy(d, s, n + 1);
	return d;
}

static void
reset_context(void)
{
	while (chunks)
		pfree(chunks->align);
}

static void
fail(const char *what)
{
	fprintf(stderr, "fuzz_response: %s\n", what);
	abort();
}

static void *
xmalloc(size_t n)
{
	void	   *p = malloc(n ? n : 1);

	if (p == NULL)
		fail("out of memory");
	return p;
}

/* What the parser saw: depth reached, and the top-level members. */
typedef struct Seen
{
	int			depth;
	int			deepest;
	int			top_members;
	bool		top_is_object;
	bool		request_is_string;
	char	   *request_value;	/* de-escaped, palloc'd */
	size_t		request_len;
	bool		in_request;		/* the next scalar is the "request" value */
} Seen;

static void
nest_in(void *state)
{
	Seen	   *s = state;

	if (++s->depth > s->deepest)
		s->deepest = s->depth;
}

static void
object_in(void *state)
{
	Seen	   *s = state;

	if (s->depth == 0)
		s->top_is_object = true;
	nest_in(state);
}

static void
nest_out(void *state)
{
	((Seen *) state)->depth--;
}

static void
field_start(void *state, char *fname, bool isnull)
{
	Seen	   *s = state;

	s->in_request = false;
	if (s->depth == 1)
	{
		s->top_members++;
		s->in_request = strcmp(fname, "request") == 0;
	}
	pfree(fname);				/* the parser hands it over */
}

static void
scalar(void *state, char *token, JsonTokenType type)
{
	Seen	   *s = state;

	if (s->in_request && s->depth == 1 && type == JSON_TOKEN_STRING)
	{
		if (s->request_value)
			pfree(s->request_value);
		s->request_is_string = true;
		s->request_value = token;
		s->request_len = strlen(token);
	}
	else if (token)
		pfree(token);			/* the parser hands it over */
	s->in_request = false;
}

/*
 * Parses text with PostgreSQL's parser after the depth scan, as the server
 * does; checks that the scan bounds the parser.  Returns whether it parsed.
 */
static bool
parse(const char *text, size_t len, Seen *seen)
{
	char	   *copy = xmalloc(len);
	int			scanned;
	JsonLexContext *lex;
	JsonSemAction sem = {0};
	JsonParseErrorType error;

	memset(seen, 0, sizeof(*seen));
	memcpy(copy, text, len);
	scanned = envelope_json_depth(copy, len, PARSE_DEPTH_LIMIT);
	if ((envelope_json_depth(copy, len, ENVELOPE_MAX_JSON_DEPTH) > ENVELOPE_MAX_JSON_DEPTH) !=
		(scanned > ENVELOPE_MAX_JSON_DEPTH))
		fail("the depth scan depends on its limit");
	if (scanned > PARSE_DEPTH_LIMIT)
	{
		free(copy);
		return false;			/* the server refuses it unparsed */
	}

	lex = makeJsonLexContextCstringLen(copy, (int) len, PG_UTF8, true);
	sem.semstate = seen;
	sem.object_start = object_in;
	sem.object_end = nest_out;
	sem.array_start = nest_in;
	sem.array_end = nest_out;
	sem.object_field_start = field_start;
	sem.scalar = scalar;
	error = pg_parse_json(lex, &sem);
	if (seen->deepest > scanned)
		fail("the parser nested deeper than the depth scan said");
	/* PostgreSQL 15 has no freeJsonLexContext() */
	if (lex->strval)
	{
		pfree(lex->strval->data);
		pfree(lex->strval);
	}
	pfree(lex);
	free(copy);
	return error == JSON_SUCCESS;
}

static void
forget(Seen *seen)
{
	if (seen->request_value)
		pfree(seen->request_value);
	seen->request_value = NULL;
}

/* envelope_open's verdict on b64 (exact-size copy). */
static EnvelopeStatus
open_status(const char *b64, size_t b64_len)
{
	char	   *in = xmalloc(b64_len);
	char	   *out = xmalloc(envelope_open_bound(b64_len));
	size_t		plain_len;
	EnvelopeStatus st;

	memcpy(in, b64, b64_len);
	st = envelope_open(&cipher, in, b64_len, out, &plain_len);
	free(in);
	free(out);
	return st;
}

/* Opens b64 (exact-size copy) and parses the plaintext like an answer. */
static void
open_and_parse(const char *b64, size_t b64_len, const char *expect, size_t expect_len)
{
	char	   *in = xmalloc(b64_len);
	size_t		bound = envelope_open_bound(b64_len);
	char	   *out = xmalloc(bound);
	size_t		plain_len;
	EnvelopeStatus st;
	Seen		seen;

	memcpy(in, b64, b64_len);
	st = envelope_open(&cipher, in, b64_len, out, &plain_len);
	free(in);
	if (expect && st != ENVELOPE_OK)
		fail("a sealed plaintext does not open");
	if (st == ENVELOPE_OK)
	{
		if (plain_len >= bound || out[plain_len] != '\0')
			fail("envelope_open wrote past its bound or no NUL");
		if (expect && (plain_len != expect_len || memcmp(out, expect, expect_len) != 0))
			fail("the round trip changed the plaintext");
		/* the server checks UTF-8 first; the parser assumes it */
		if (pg_encoding_verifymbstr(PG_UTF8, out, (int) plain_len) == (int) plain_len)
		{
			(void) parse(out, plain_len, &seen);
			forget(&seen);
		}
	}
	free(out);
}

/* 1. The input as an HTTP body. */
static void
as_body(const uint8_t *data, size_t size)
{
	char	   *body = xmalloc(size);
	const char *b64 = NULL;
	size_t		b64_len = 0;
	EnvelopeStatus st;
	Seen		seen;
	bool		parsed;
	bool		utf8;

	memcpy(body, data, size);
	st = envelope_unwrap(body, size, &b64, &b64_len);
	if (st != ENVELOPE_OK && st != ENVELOPE_NOT_WRAPPED && st != ENVELOPE_TRUNCATED)
		fail("envelope_unwrap returned an unknown status");

	utf8 = pg_encoding_verifymbstr(PG_UTF8, body, (int) size) == (int) size;
	memset(&seen, 0, sizeof(seen));
	parsed = utf8 && parse(body, size, &seen);

	if (st == ENVELOPE_OK)
	{
		if (b64 < body || b64 + b64_len > body + size)
			fail("the Base64 text is not inside the body");
		bool		control = false;

		for (size_t i = 0; i < b64_len; i++)
		{
			if (b64[i] == '"' || b64[i] == '\\')
				fail("the Base64 text holds a quote or backslash");
			control |= (unsigned char) b64[i] < 0x20;
		}
		/* JSON, if it is text: PostgreSQL must agree it is the wrapper */
		if (utf8 && parsed)
		{
			if (!seen.top_is_object || seen.top_members != 1 || !seen.request_is_string ||
				seen.request_len != b64_len || memcmp(seen.request_value, b64, b64_len) != 0)
				fail("unwrapped something other than the only member \"request\"");
		}
		else if (utf8 && !control)
			fail("unwrapped a body PostgreSQL's parser rejects");
		else if (control && open_status(b64, b64_len) != ENVELOPE_BAD_BASE64)
			fail("a text with a control character was not refused as Base64");
		open_and_parse(b64, b64_len, NULL, 0);
	}
	else if (st == ENVELOPE_TRUNCATED)
	{
		if (parsed)
			fail("valid JSON reported as a truncated wrapper");
	}
	else if (parsed && seen.top_is_object && seen.top_members == 1 &&
			 seen.request_is_string && memchr(body, '\\', size) == NULL)
		fail("a plain wrapper without escapes was not unwrapped");
	forget(&seen);
	free(body);
}

/* 2. The input as the plaintext of an answer. */
static void
as_plaintext(const uint8_t *data, size_t size)
{
	static const char *const spaces[] = {"", " ", "\n", "\t ", "\r\n"};
	size_t		sealed_bound = envelope_seal_bound(size);
	char	   *sealed = xmalloc(sealed_bound);
	size_t		sealed_len;
	size_t		body_cap = sealed_bound + 64;
	char	   *body = xmalloc(body_cap);
	const char *ws = spaces[(size ? data[0] : 0) % 5];
	int			body_len;
	const char *b64;
	size_t		b64_len;

	if (envelope_seal(&cipher, (const char *) data, size, sealed, &sealed_len) != ENVELOPE_OK)
		fail("envelope_seal refused a plaintext");
	body_len = snprintf(body, body_cap, "%s{%s\"request\"%s:%s\"%s\"%s}%s",
						ws, ws, ws, ws, sealed, ws, ws);
	if (envelope_unwrap(body, (size_t) body_len, &b64, &b64_len) != ENVELOPE_OK ||
		b64_len != sealed_len || memcmp(b64, sealed, sealed_len) != 0)
		fail("a wrapper we built does not unwrap to its Base64 text");
	/* cut before its closing brace, it is truncated once its { is in */
	{
		int			open = (int) (strchr(body, '{') - body);
		int			close = (int) (strrchr(body, '}') - body);

		for (int cut = 0; cut <= close; cut += 1 + cut / 4)
		{
			const char *b;
			size_t		bl;
			char	   *prefix = xmalloc((size_t) cut);

			memcpy(prefix, body, (size_t) cut);
			if (envelope_unwrap(prefix, (size_t) cut, &b, &bl) !=
				(cut > open ? ENVELOPE_TRUNCATED : ENVELOPE_NOT_WRAPPED))
				fail("a wrapper cut short is not reported as truncated");
			free(prefix);
		}
	}
	open_and_parse(b64, b64_len, (const char *) data, size);
	free(body);
	free(sealed);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (!ready)
	{
		if (!envelope_init(&cipher, FUZZ_SECRET, strlen(FUZZ_SECRET)))
			fail("envelope_init failed");
		ready = true;
	}
	as_body(data, size);
	as_plaintext(data, size);
	reset_context();
	return 0;
}
