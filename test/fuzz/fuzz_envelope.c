/*
 * fuzz_envelope.c
 *	  libFuzzer harness for src/envelope.c (EnKash's AES-128-ECB + PKCS#7 +
 *	  Base64 envelope), built with clang -fsanitize=fuzzer,address,undefined
 *	  by test/fuzz/run.sh.  One fixed key, the sandbox's default secret.
 *
 * Every input is used three ways:
 *	 1. as an untrusted Base64 body handed to envelope_open(), exactly as
 *		src/request.c does with EnKash's "request" member: the input is copied
 *		into a buffer of exactly its size (no NUL: ASan sees any over-read)
 *		and the output buffer is exactly envelope_open_bound() bytes (ASan
 *		sees any over-write).  A body that opens must re-seal to a body that
 *		opens to the same bytes;
 *	 2. as arbitrary ciphertext bytes: Base64-encoded by us, then opened, so
 *		that the PKCS#7 padding check and the block-length check are reached
 *		with random blocks rather than only with what survives Base64;
 *	 3. as a plaintext: sealed, checked to be strict padded Base64 of a whole
 *		number of blocks, opened again and compared byte for byte.
 * Any mismatch abort()s, which libFuzzer reports as a crash.
 * */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "envelope.h"

#define FUZZ_SECRET "sandbox-secret-1"

static EnvelopeCipher cipher;
static int	ready = 0;

static void
fail(const char *what)
{
	fprintf(stderr, "fuzz_envelope: %s\n", what);
	abort();
}

static void
set_up(void)
{
	if (ready)
		return;
	if (!envelope_init(&cipher, FUZZ_SECRET, strlen(FUZZ_SECRET)))
		fail("envelope_init failed");
	ready = 1;
}

static int
is_b64_char(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
		(c >= '0' && c <= '9') || c == '+' || c == '/';
}

/* Seals plain (exact-size copy) and returns the malloc'd Base64 text. */
static char *
seal_copy(const char *plain, size_t len, size_t *b64_len)
{
	size_t		bound = envelope_seal_bound(len);
	char	   *in = malloc(len ? len : 1);
	char	   *out = malloc(bound);
	EnvelopeStatus st;

	if (in == NULL || out == NULL)
		fail("out of memory");
	memcpy(in, plain, len);
	st = envelope_seal(&cipher, in, len, out, b64_len);
	free(in);
	if (st != ENVELOPE_OK)
		fail("envelope_seal refused a plaintext");
	if (*b64_len >= bound || out[*b64_len] != '\0')
		fail("envelope_seal wrote past its bound or no NUL");
	return out;
}

/* Opens b64 (exact-size copy); returns status, *plain malloc'd when OK. */
static EnvelopeStatus
open_copy(const char *b64, size_t len, char **plain, size_t *plain_len)
{
	size_t		bound = envelope_open_bound(len);
	char	   *in = malloc(len ? len : 1);
	char	   *out = malloc(bound);
	EnvelopeStatus st;

	if (in == NULL || out == NULL)
		fail("out of memory");
	memcpy(in, b64, len);
	*plain_len = (size_t) -1;
	st = envelope_open(&cipher, in, len, out, plain_len);
	free(in);
	if (st == ENVELOPE_OK)
	{
		if (*plain_len >= bound || out[*plain_len] != '\0')
			fail("envelope_open wrote past its bound or no NUL");
		*plain = out;
	}
	else
	{
		if (st != ENVELOPE_BAD_BASE64 && st != ENVELOPE_BAD_LENGTH &&
			st != ENVELOPE_BAD_PADDING && st != ENVELOPE_CRYPTO_FAILED)
			fail("envelope_open returned an unknown status");
		if (envelope_status_text(st) == NULL)
			fail("no text for a status");
		free(out);
		*plain = NULL;
	}
	return st;
}

/* 1. The input as an untrusted Base64 body. */
static void
as_body(const uint8_t *data, size_t size)
{
	char	   *plain;
	size_t		plain_len;

	if (open_copy((const char *) data, size, &plain, &plain_len) != ENVELOPE_OK)
		return;

	/* What opened was padded Base64 of whole blocks. */
	if (size % 4 != 0 || size < 24)
		fail("a body that is not whole Base64 quanta of >= 1 block opened");
	for (size_t i = 0; i < size; i++)
		if (!is_b64_char(data[i]) && !(data[i] == '=' && i + 2 >= size))
			fail("a body with a character outside Base64 opened");

	{
		size_t		b64_len;
		char	   *again = seal_copy(plain, plain_len, &b64_len);
		char	   *plain2;
		size_t		plain2_len;

		if (b64_len != size || memcmp(again, data, size) != 0)
			fail("a non-canonical Base64 body opened");
		if (open_copy(again, b64_len, &plain2, &plain2_len) != ENVELOPE_OK ||
			plain2_len != plain_len || memcmp(plain2, plain, plain_len) != 0)
			fail("re-sealed body does not open to the same plaintext");
		free(plain2);
		free(again);
	}
	free(plain);
}

/* 2. The input as ciphertext bytes. */
static void
as_ciphertext(const uint8_t *data, size_t size)
{
	char	   *b64 = malloc(4 * (size / 3 + 1) + 1);
	size_t		b64_len;
	char	   *plain;
	size_t		plain_len;
	EnvelopeStatus st;

	if (b64 == NULL)
		fail("out of memory");
	b64_len = envelope_base64_encode(data, size, b64);
	if (b64_len != 4 * ((size + 2) / 3) || b64[b64_len] != '\0')
		fail("envelope_base64_encode length");
	st = open_copy(b64, b64_len, &plain, &plain_len);
	if (size == 0 || size % 16 != 0)
	{
		if (st == ENVELOPE_OK)
			fail("ciphertext of a partial block opened");
		if (size != 0 && st != ENVELOPE_BAD_LENGTH)
			fail("partial block not reported as BAD_LENGTH");
	}
	else if (st == ENVELOPE_BAD_BASE64 || st == ENVELOPE_BAD_LENGTH)
		fail("our own Base64 of whole blocks refused as Base64/length");
	if (st == ENVELOPE_OK)
	{
		if (plain_len > size - 1 || plain_len < size - 16)
			fail("plaintext length not ciphertext minus 1..16 padding bytes");
		free(plain);
	}
	free(b64);
}

/* 3. The input as plaintext: seal, open, compare. */
static void
round_trip(const uint8_t *data, size_t size)
{
	size_t		b64_len;
	char	   *b64 = seal_copy((const char *) data, size, &b64_len);
	char	   *plain;
	size_t		plain_len;
	size_t		cipher_len = (size / 16 + 1) * 16;

	if (b64_len != 4 * ((cipher_len + 2) / 3))
		fail("sealed length is not Base64 of whole blocks");
	for (size_t i = 0; i < b64_len; i++)
		if (!is_b64_char((unsigned char) b64[i]) &&
			!(b64[i] == '=' && i + 2 >= b64_len))
			fail("sealed body is not Base64");
	if (open_copy(b64, b64_len, &plain, &plain_len) != ENVELOPE_OK)
		fail("a sealed body does not open");
	if (plain_len != size || memcmp(plain, data, size) != 0)
		fail("round trip changed the plaintext");
	free(plain);
	free(b64);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	set_up();
	as_body(data, size);
	as_ciphertext(data, size);
	round_trip(data, size);
	return 0;
}
