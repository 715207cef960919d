/*
 * envelope_test.c
 *	  Checks src/envelope.c against vectors made with the openssl command
 *	  line (test/vectors/envelope.json, a copy of shared/vectors), and its
 *	  refusal of damaged ciphertexts; envelope_unwrap() and
 *	  envelope_json_depth() on hand-picked bodies.  Prints "envelope: N
 *	  passed, N failed".
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "envelope.h"

static int	passed = 0;
static int	failed = 0;

static void
check(int ok, const char *what, int vector)
{
	if (ok)
		passed++;
	else
	{
		failed++;
		fprintf(stderr, "FAIL: vector %d: %s\n", vector, what);
	}
}

static void
check_vector(json_t *v, int i)
{
	const char *secret = json_string_value(json_object_get(v, "secret"));
	const char *plain = json_string_value(json_object_get(v, "plaintext"));
	const char *b64 = json_string_value(json_object_get(v, "ciphertext_base64"));
	const char *key_hex = json_string_value(json_object_get(v, "key_hex"));
	EnvelopeCipher cipher;
	char		key_seen[33];
	char	   *sealed = malloc(envelope_seal_bound(strlen(plain)));
	char	   *opened = malloc(envelope_open_bound(strlen(b64)));
	size_t		len;

	check(envelope_init(&cipher, secret, strlen(secret)), "cipher set up", i);
	for (int k = 0; k < 16; k++)
		sprintf(key_seen + 2 * k, "%02x", cipher.key[k]);
	check(strcmp(key_seen, key_hex) == 0, "key = first 16 bytes of SHA-256(secret)", i);

	check(envelope_seal(&cipher, plain, strlen(plain), sealed, &len) == ENVELOPE_OK &&
		  len == strlen(b64) && strcmp(sealed, b64) == 0,
		  "encryption matches openssl enc byte for byte", i);
	/* Twice: the kept cipher context must give the same answer again. */
	check(envelope_seal(&cipher, plain, strlen(plain), sealed, &len) == ENVELOPE_OK &&
		  strcmp(sealed, b64) == 0, "a reused cipher context gives the same bytes", i);
	check(envelope_open(&cipher, b64, strlen(b64), opened, &len) == ENVELOPE_OK &&
		  len == strlen(plain) && memcmp(opened, plain, len) == 0,
		  "decryption of openssl's ciphertext gives the plaintext", i);

	/* Damage: not Base64, cut short, or the last block altered. */
	{
		char	   *bad = strdup(b64);
		size_t		n = strlen(bad);

		bad[0] = '*';
		check(envelope_open(&cipher, bad, n, opened, &len) == ENVELOPE_BAD_BASE64,
			  "a non-Base64 character is refused", i);
		strcpy(bad, b64);
		check(envelope_open(&cipher, bad, n - 4, opened, &len) != ENVELOPE_OK,
			  "a truncated ciphertext is refused", i);
		check(envelope_open(&cipher, bad, 0, opened, &len) == ENVELOPE_BAD_BASE64,
			  "an empty ciphertext is refused", i);
		check(envelope_open(&cipher, "QUJD", 4, opened, &len) == ENVELOPE_BAD_LENGTH,
			  "a ciphertext that is not whole blocks is refused", i);
		free(bad);
	}
	envelope_free(&cipher);

	{
		EnvelopeCipher wrong;
		int			st;

		envelope_init(&wrong, "not the secret", 14);
		st = envelope_open(&wrong, b64, strlen(b64), opened, &len);
		/* 1 in 256 wrong keys still yield valid padding: then not the text. */
		check(st == ENVELOPE_BAD_PADDING ||
			  (st == ENVELOPE_OK && (len != strlen(plain) || memcmp(opened, plain, len) != 0)),
			  "the wrong key does not give the plaintext", i);
		envelope_free(&wrong);
	}
	free(sealed);
	free(opened);
}

/* envelope_unwrap() on a body: the status, and the text when found. */
static void
check_unwrap(const char *body, EnvelopeStatus want, const char *want_text)
{
	const char *b64 = NULL;
	size_t		len = 0;
	EnvelopeStatus got = envelope_unwrap(body, strlen(body), &b64, &len);
	char		what[200];

	snprintf(what, sizeof(what), "unwrap %.60s: status %d, wanted %d", body, got, want);
	check(got == want, what, -1);
	if (got == ENVELOPE_OK && want_text)
	{
		snprintf(what, sizeof(what), "unwrap %.60s: the text", body);
		check(len == strlen(want_text) && memcmp(b64, want_text, len) == 0, what, -1);
	}
}

static void
check_depth(const char *json, int want)
{
	char		what[200];
	int			got = envelope_json_depth(json, strlen(json), 64);

	snprintf(what, sizeof(what), "depth of %.60s: %d, wanted %d", json, got, want);
	check(got == want, what, -1);
}

static void
check_scans(void)
{
	check_unwrap("{\"request\":\"QUJD\"}", ENVELOPE_OK, "QUJD");
	check_unwrap(" \r\n{ \"request\"\t:\n\"QUJD\" }\n", ENVELOPE_OK, "QUJD");
	check_unwrap("{\"request\":\"%%not base64\"}", ENVELOPE_OK, "%%not base64");
	check_unwrap("{\"request\":\"\"}", ENVELOPE_OK, "");
	check_unwrap("{\"request\":\"QU\\/D\"}", ENVELOPE_NOT_WRAPPED, NULL);	/* \/ */
	check_unwrap("{\"request\":\"QUJD\",\"x\":1}", ENVELOPE_NOT_WRAPPED, NULL);
	check_unwrap("{\"x\":1,\"request\":\"QUJD\"}", ENVELOPE_NOT_WRAPPED, NULL);
	check_unwrap("{\"request\":12}", ENVELOPE_NOT_WRAPPED, NULL);
	check_unwrap("{\"Request\":\"QUJD\"}", ENVELOPE_NOT_WRAPPED, NULL);
	check_unwrap("{\"request\":\"QUJD\"}}", ENVELOPE_NOT_WRAPPED, NULL);
	check_unwrap("[{\"request\":\"QUJD\"}]", ENVELOPE_NOT_WRAPPED, NULL);
	check_unwrap("{\"code\":0}", ENVELOPE_NOT_WRAPPED, NULL);
	check_unwrap("", ENVELOPE_NOT_WRAPPED, NULL);
	check_unwrap("   ", ENVELOPE_NOT_WRAPPED, NULL);
	check_unwrap("{", ENVELOPE_TRUNCATED, NULL);
	check_unwrap("{\"req", ENVELOPE_TRUNCATED, NULL);
	check_unwrap("{\"request\":", ENVELOPE_TRUNCATED, NULL);
	check_unwrap("{\"request\":\"QUJD", ENVELOPE_TRUNCATED, NULL);
	check_unwrap("{\"request\":\"QUJD\"", ENVELOPE_TRUNCATED, NULL);
	check_unwrap("{\"request\":\"QUJD\"  ", ENVELOPE_TRUNCATED, NULL);

	check_depth("", 0);
	check_depth("{\"a\":[1,{\"b\":[]}]}", 4);
	check_depth("\"[[[[\"", 0);
	check_depth("[\"\\\"[[[\"]", 1);		/* an escaped quote inside */
	check_depth("[\"\\\\\",[[]]]", 3);	/* an escaped backslash, then the end */
	check_depth("]]]][[", 0);	/* a parser stops at the first ] */
	{
		char		deep[10001];

		memset(deep, '[', 10000);
		deep[10000] = '\0';
		check_depth(deep, 65);	/* stops counting past the limit */
	}
}

int
main(int argc, char **argv)
{
	json_error_t error;
	json_t	   *vectors;
	size_t		i;
	json_t	   *v;

	if (argc != 2)
	{
		fprintf(stderr, "usage: %s envelope.json\n", argv[0]);
		return 2;
	}
	vectors = json_load_file(argv[1], 0, &error);
	if (!json_is_array(vectors) || json_array_size(vectors) == 0)
	{
		fprintf(stderr, "cannot read vectors from %s: %s\n", argv[1], error.text);
		printf("envelope: 0 passed, 1 failed\n");
		return 1;
	}
	json_array_foreach(vectors, i, v)
		check_vector(v, (int) i);
	check_scans();

	printf("envelope: %d passed, %d failed\n", passed, failed);
	return failed ? 1 : 0;
}
