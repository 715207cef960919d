/*-------------------------------------------------------------------------
 *
 * envelope.c
 *	  The EnKash payload envelope: AES-128-ECB with PKCS#7 padding, key =
 *	  first 16 bytes of SHA-256(secret), standard Base64, wrapped as
 *	  {"request":"<base64>"} in both directions.  Also the self test that
 *	  checks us against the openssl-made vectors in vectors/envelope.json.
 *
 *-------------------------------------------------------------------------
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/sha.h>

#include "sandbox.h"

static const char b64_alphabet[] =
	"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

void
envelope_derive_key(const char *secret, unsigned char key[AES_KEY_LEN])
{
	unsigned char digest[SHA256_DIGEST_LENGTH];

	SHA256((const unsigned char *) secret, strlen(secret), digest);
	memcpy(key, digest, AES_KEY_LEN);
}

char *
b64_encode(const unsigned char *in, size_t len)
{
	char	   *out = sb_malloc((len + 2) / 3 * 4 + 1);
	char	   *p = out;
	size_t		i;

	for (i = 0; i + 2 < len; i += 3)
	{
		uint32_t	v = (in[i] << 16) | (in[i + 1] << 8) | in[i + 2];

		*p++ = b64_alphabet[(v >> 18) & 63];
		*p++ = b64_alphabet[(v >> 12) & 63];
		*p++ = b64_alphabet[(v >> 6) & 63];
		*p++ = b64_alphabet[v & 63];
	}
	if (i < len)
	{
		uint32_t	v = in[i] << 16;

		if (i + 1 < len)
			v |= in[i + 1] << 8;
		*p++ = b64_alphabet[(v >> 18) & 63];
		*p++ = b64_alphabet[(v >> 12) & 63];
		*p++ = (i + 1 < len) ? b64_alphabet[(v >> 6) & 63] : '=';
		*p++ = '=';
	}
	*p = '\0';
	return out;
}

static int
b64_value(unsigned char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

/*
 * Strict decoder, like Java's Base64.getDecoder(): padded, no whitespace.
 * Being strict here is the point: clients must send what EnKash accepts.
 */
unsigned char *
b64_decode(const char *in, size_t len, size_t *outlen)
{
	unsigned char *out;
	size_t		o = 0;
	size_t		i;

	if (len == 0 || len % 4 != 0)
		return NULL;
	out = sb_malloc(len / 4 * 3 + 1);
	for (i = 0; i < len; i += 4)
	{
		int			v[4];
		int			k;
		int			pad = 0;

		for (k = 0; k < 4; k++)
		{
			unsigned char c = in[i + k];

			if (c == '=' && i + 4 == len && k >= 2)
			{
				v[k] = 0;
				pad++;
			}
			else if (pad > 0 || (v[k] = b64_value(c)) < 0)
			{
				free(out);
				return NULL;
			}
		}
		out[o++] = (v[0] << 2) | (v[1] >> 4);
		if (pad < 2)
			out[o++] = ((v[1] & 15) << 4) | (v[2] >> 2);
		if (pad < 1)
			out[o++] = ((v[2] & 3) << 6) | v[3];
	}
	*outlen = o;
	return out;
}

/* pad=false is only used to forge a body with broken padding */
unsigned char *
aes_ecb_encrypt(const unsigned char *key, const unsigned char *in, size_t len,
				bool pad, size_t *outlen)
{
	EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
	unsigned char *out = sb_malloc(len + 32);
	int			n1 = 0;
	int			n2 = 0;

	if (ctx == NULL ||
		EVP_EncryptInit_ex(ctx, EVP_aes_128_ecb(), NULL, key, NULL) != 1 ||
		EVP_CIPHER_CTX_set_padding(ctx, pad ? 1 : 0) != 1 ||
		EVP_EncryptUpdate(ctx, out, &n1, in, (int) len) != 1 ||
		EVP_EncryptFinal_ex(ctx, out + n1, &n2) != 1)
	{
		EVP_CIPHER_CTX_free(ctx);
		free(out);
		return NULL;
	}
	EVP_CIPHER_CTX_free(ctx);
	*outlen = (size_t) n1 + n2;
	return out;
}

/* returns NUL terminated plaintext, or NULL on bad length or bad padding */
unsigned char *
aes_ecb_decrypt(const unsigned char *key, const unsigned char *in, size_t len,
				size_t *outlen)
{
	EVP_CIPHER_CTX *ctx;
	unsigned char *out;
	int			n1 = 0;
	int			n2 = 0;

	if (len == 0 || len % 16 != 0 || len > INT32_MAX / 2)
		return NULL;
	ctx = EVP_CIPHER_CTX_new();
	out = sb_malloc(len + 32);
	if (ctx == NULL ||
		EVP_DecryptInit_ex(ctx, EVP_aes_128_ecb(), NULL, key, NULL) != 1 ||
		EVP_DecryptUpdate(ctx, out, &n1, in, (int) len) != 1 ||
		EVP_DecryptFinal_ex(ctx, out + n1, &n2) != 1)
	{
		EVP_CIPHER_CTX_free(ctx);
		free(out);
		return NULL;
	}
	EVP_CIPHER_CTX_free(ctx);
	*outlen = (size_t) n1 + n2;
	out[*outlen] = '\0';
	return out;
}

/* plaintext JSON -> {"request":"<base64>"} */
char *
envelope_seal(const unsigned char *key, const char *plain, size_t len,
			  size_t *outlen)
{
	size_t		clen;
	unsigned char *cipher = aes_ecb_encrypt(key, (const unsigned char *) plain,
											len, true, &clen);
	char	   *b64;
	char	   *out;
	size_t		blen;

	if (cipher == NULL)
		return NULL;
	b64 = b64_encode(cipher, clen);
	free(cipher);
	blen = strlen(b64);
	out = sb_malloc(blen + 16);
	*outlen = (size_t) snprintf(out, blen + 16, "{\"request\":\"%s\"}", b64);
	free(b64);
	return out;
}

/*
 * {"request":"<base64>"} -> the decrypted JSON value, or NULL if any step
 * fails (not JSON, no "request" string, bad base64, bad padding, not JSON).
 */
json_t *
envelope_open(const unsigned char *key, const char *body, size_t len)
{
	json_t	   *wrapper = json_loadb(body, len, 0, NULL);
	json_t	   *req;
	const char *b64;
	unsigned char *cipher;
	unsigned char *plain;
	size_t		clen;
	size_t		plen;
	json_t	   *result;

	if (wrapper == NULL)
		return NULL;
	req = json_object_get(wrapper, "request");
	if (!json_is_string(req))
	{
		json_decref(wrapper);
		return NULL;
	}
	b64 = json_string_value(req);
	cipher = b64_decode(b64, json_string_length(req), &clen);
	json_decref(wrapper);
	if (cipher == NULL)
		return NULL;
	plain = aes_ecb_decrypt(key, cipher, clen, &plen);
	free(cipher);
	if (plain == NULL)
		return NULL;
	result = json_loadb((const char *) plain, plen, 0, NULL);
	free(plain);
	return result;
}

static void
hex_of(const unsigned char *in, size_t len, char *out)
{
	size_t		i;

	for (i = 0; i < len; i++)
		sprintf(out + 2 * i, "%02x", in[i]);
}

/*
 * --selftest-vectors FILE: check key derivation, encryption, decryption and
 * unwrapping against every vector; returns the process exit code.
 */
int
envelope_selftest(const char *file)
{
	json_error_t err;
	json_t	   *vectors = json_load_file(file, 0, &err);
	size_t		i;
	json_t	   *v;
	int			failures = 0;

	if (!json_is_array(vectors))
	{
		fprintf(stderr, "selftest: cannot read %s: %s\n", file, err.text);
		return 2;
	}
	json_array_foreach(vectors, i, v)
	{
		const char *secret = json_string_value(json_object_get(v, "secret"));
		const char *key_hex = json_string_value(json_object_get(v, "key_hex"));
		const char *plain = json_string_value(json_object_get(v, "plaintext"));
		const char *expect = json_string_value(json_object_get(v, "ciphertext_base64"));
		const char *wrapped = json_string_value(json_object_get(v, "wrapped"));
		unsigned char key[AES_KEY_LEN];
		char		hex[2 * AES_KEY_LEN + 1];
		unsigned char *cipher;
		size_t		clen;
		char	   *b64 = NULL;
		json_t	   *opened;
		json_t	   *want;
		bool		ok = true;

		if (!secret || !key_hex || !plain || !expect || !wrapped)
		{
			fprintf(stderr, "selftest: vector %zu incomplete\n", i);
			failures++;
			continue;
		}
		envelope_derive_key(secret, key);
		hex_of(key, AES_KEY_LEN, hex);
		if (strcmp(hex, key_hex) != 0)
		{
			fprintf(stderr, "selftest: vector %zu: key %s, want %s\n", i, hex, key_hex);
			ok = false;
		}
		cipher = aes_ecb_encrypt(key, (const unsigned char *) plain,
								 strlen(plain), true, &clen);
		if (cipher)
			b64 = b64_encode(cipher, clen);
		if (b64 == NULL || strcmp(b64, expect) != 0)
		{
			fprintf(stderr, "selftest: vector %zu: ciphertext differs\n", i);
			ok = false;
		}
		free(cipher);
		free(b64);

		/* the vector's ciphertext must decrypt to the plaintext byte for byte */
		cipher = b64_decode(expect, strlen(expect), &clen);
		{
			size_t		plen = 0;
			unsigned char *back = cipher ? aes_ecb_decrypt(key, cipher, clen, &plen) : NULL;

			if (back == NULL || plen != strlen(plain) || memcmp(back, plain, plen) != 0)
			{
				fprintf(stderr, "selftest: vector %zu: decryption differs\n", i);
				ok = false;
			}
			free(back);
		}
		free(cipher);

		/* decrypting the wrapped form must give back the same JSON */
		opened = envelope_open(key, wrapped, strlen(wrapped));
		want = json_loads(plain, 0, NULL);
		if (opened == NULL || want == NULL || !json_equal(opened, want))
		{
			fprintf(stderr, "selftest: vector %zu: unwrap differs\n", i);
			ok = false;
		}
		json_decref(opened);
		json_decref(want);
		if (!ok)
			failures++;
	}
	printf("selftest: %zu vectors, %d failed\n", json_array_size(vectors), failures);
	json_decref(vectors);
	return failures ? 1 : 0;
}
