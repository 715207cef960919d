/*-------------------------------------------------------------------------
 *
 * envelope.c
 *	  AES-128-ECB + PKCS#7 + Base64, as EnKash's payload encryption requires.
 *
 * ECB leaks equal blocks; that is the partner protocol, not our choice, and
 * TLS is what protects the wire.  This file must stay free of PostgreSQL
 * headers and of allocation: it is linked into the fuzzing harness and the
 * benchmark client as well as the extension.
 *
 *-------------------------------------------------------------------------
 */
#include "envelope.h"

#include <string.h>

#include <openssl/evp.h>
#include <openssl/sha.h>

#define AES_BLOCK 16

static const char b64_alphabet[] =
"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* Value of each byte as a Base64 digit; X (bit 7 set) when it is not one. */
#define X 0x80
static const unsigned char b64_value[256] = {
	X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X,
	X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X,
	X, X, X, X, X, X, X, X, X, X, X, 62, X, X, X, 63,
	52, 53, 54, 55, 56, 57, 58, 59, 60, 61, X, X, X, X, X, X,
	X, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14,
	15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, X, X, X, X, X,
	X, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40,
	41, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51, X, X, X, X, X,
	X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X,
	X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X,
	X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X,
	X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X,
	X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X,
	X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X,
	X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X,
	X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X,
};
#undef X

size_t
envelope_base64_encode(const unsigned char *in, size_t len, char *out)
{
	size_t		o = 0;
	size_t		i;

	for (i = 0; i + 2 < len; i += 3)
	{
		unsigned int v = (in[i] << 16) | (in[i + 1] << 8) | in[i + 2];

		out[o++] = b64_alphabet[(v >> 18) & 63];
		out[o++] = b64_alphabet[(v >> 12) & 63];
		out[o++] = b64_alphabet[(v >> 6) & 63];
		out[o++] = b64_alphabet[v & 63];
	}
	if (i < len)
	{
		unsigned int v = in[i] << 16;

		if (i + 1 < len)
			v |= in[i + 1] << 8;
		out[o++] = b64_alphabet[(v >> 18) & 63];
		out[o++] = b64_alphabet[(v >> 12) & 63];
		out[o++] = (i + 1 < len) ? b64_alphabet[(v >> 6) & 63] : '=';
		out[o++] = '=';
	}
	out[o] = '\0';
	return o;
}

/*
 * Strict decoding: a length that is a multiple of four, padding only at the
 * end, and the unused low bits of a padded last group zero, so that a body
 * opens only from the one canonical spelling of its ciphertext.  Anything
 * looser would let a corrupted body reach the cipher.  Reads each group
 * before writing its bytes, so out may be in.
 */
static bool
base64_decode(const char *in, size_t len, unsigned char *out, size_t *out_len)
{
	const unsigned char *s = (const unsigned char *) in;
	size_t		o = 0;
	size_t		pad = 0;
	size_t		full;
	unsigned int bad = 0;

	if (len == 0 || len % 4 != 0)
		return false;
	if (in[len - 1] == '=')
		pad = (in[len - 2] == '=') ? 2 : 1;
	full = pad ? len - 4 : len;

	for (size_t i = 0; i < full; i += 4)
	{
		unsigned int a = b64_value[s[i]];
		unsigned int b = b64_value[s[i + 1]];
		unsigned int c = b64_value[s[i + 2]];
		unsigned int d = b64_value[s[i + 3]];
		unsigned int v = (a << 18) | (b << 12) | (c << 6) | d;

		bad |= a | b | c | d;
		out[o++] = (unsigned char) (v >> 16);
		out[o++] = (unsigned char) (v >> 8);
		out[o++] = (unsigned char) v;
	}
	if (bad & 0x80)
		return false;

	if (pad)
	{
		unsigned int a = b64_value[s[full]];
		unsigned int b = b64_value[s[full + 1]];
		unsigned int c = (pad == 1) ? b64_value[s[full + 2]] : 0;

		if ((a | b | c) & 0x80)
			return false;
		if ((pad == 2 && (b & 15)) || (pad == 1 && (c & 3)))
			return false;
		out[o++] = (unsigned char) ((a << 2) | (b >> 4));
		if (pad == 1)
			out[o++] = (unsigned char) ((b << 4) | (c >> 2));
	}
	*out_len = o;
	return true;
}

bool
envelope_init(EnvelopeCipher *cipher, const char *secret, size_t secret_len)
{
	unsigned char digest[SHA256_DIGEST_LENGTH];

	memset(cipher, 0, sizeof(*cipher));
	if (SHA256((const unsigned char *) secret, secret_len, digest) == NULL)
		return false;
	memcpy(cipher->key, digest, sizeof(cipher->key));
	OPENSSL_cleanse(digest, sizeof(digest));

	cipher->encrypt_ctx = EVP_CIPHER_CTX_new();
	cipher->decrypt_ctx = EVP_CIPHER_CTX_new();
	if (cipher->encrypt_ctx == NULL || cipher->decrypt_ctx == NULL ||
		EVP_EncryptInit_ex(cipher->encrypt_ctx, EVP_aes_128_ecb(), NULL,
						   cipher->key, NULL) != 1 ||
		EVP_DecryptInit_ex(cipher->decrypt_ctx, EVP_aes_128_ecb(), NULL,
						   cipher->key, NULL) != 1)
	{
		envelope_free(cipher);
		return false;
	}
	return true;
}

void
envelope_free(EnvelopeCipher *cipher)
{
	EVP_CIPHER_CTX_free(cipher->encrypt_ctx);
	EVP_CIPHER_CTX_free(cipher->decrypt_ctx);
	OPENSSL_cleanse(cipher, sizeof(*cipher));
}

size_t
envelope_seal_bound(size_t plain_len)
{
	size_t		cipher_len = (plain_len / AES_BLOCK + 1) * AES_BLOCK;

	/* Base64 of the ciphertext, the ciphertext itself as scratch, a NUL */
	return 4 * (cipher_len / 3 + 1) + cipher_len + 1;
}

EnvelopeStatus
envelope_seal(EnvelopeCipher *cipher, const char *plain, size_t plain_len,
			  char *out, size_t *out_len)
{
	EVP_CIPHER_CTX *ctx = cipher->encrypt_ctx;
	size_t		b64_room = envelope_seal_bound(plain_len) -
		((plain_len / AES_BLOCK + 1) * AES_BLOCK);
	unsigned char *scratch = (unsigned char *) out + b64_room;
	int			n1,
				n2;

	/* Re-arm with the key schedule already set up in envelope_init(). */
	if (EVP_EncryptInit_ex(ctx, NULL, NULL, NULL, NULL) != 1 ||
		EVP_EncryptUpdate(ctx, scratch, &n1, (const unsigned char *) plain,
						  (int) plain_len) != 1 ||
		EVP_EncryptFinal_ex(ctx, scratch + n1, &n2) != 1)
		return ENVELOPE_CRYPTO_FAILED;

	/* Encoding runs front to back, never overtaking the scratch area. */
	*out_len = envelope_base64_encode(scratch, (size_t) (n1 + n2), out);
	return ENVELOPE_OK;
}

size_t
envelope_open_bound(size_t b64_len)
{
	return b64_len / 4 * 3 + AES_BLOCK + 1;
}

EnvelopeStatus
envelope_open(EnvelopeCipher *cipher, const char *b64, size_t b64_len,
			  char *out, size_t *out_len)
{
	EVP_CIPHER_CTX *ctx = cipher->decrypt_ctx;
	unsigned char *buf = (unsigned char *) out;
	size_t		cipher_len;
	int			n1,
				n2;

	if (!base64_decode(b64, b64_len, buf, &cipher_len))
		return ENVELOPE_BAD_BASE64;
	if (cipher_len == 0 || cipher_len % AES_BLOCK != 0)
		return ENVELOPE_BAD_LENGTH;

	/* In-place decryption is allowed by OpenSSL for block ciphers. */
	if (EVP_DecryptInit_ex(ctx, NULL, NULL, NULL, NULL) != 1 ||
		EVP_DecryptUpdate(ctx, buf, &n1, buf, (int) cipher_len) != 1)
		return ENVELOPE_CRYPTO_FAILED;
	if (EVP_DecryptFinal_ex(ctx, buf + n1, &n2) != 1)
		return ENVELOPE_BAD_PADDING;

	*out_len = (size_t) (n1 + n2);
	out[*out_len] = '\0';
	return ENVELOPE_OK;
}

const char *
envelope_status_text(EnvelopeStatus status)
{
	switch (status)
	{
		case ENVELOPE_OK:
			return "ok";
		case ENVELOPE_BAD_BASE64:
			return "The body is not valid Base64";
		case ENVELOPE_BAD_LENGTH:
			return "The ciphertext is not a whole number of AES blocks";
		case ENVELOPE_BAD_PADDING:
			return "The body does not decrypt with the configured encryption secret";
		case ENVELOPE_CRYPTO_FAILED:
			return "OpenSSL could not run the cipher";
		case ENVELOPE_NOT_WRAPPED:
			return "The body is not an encrypted wrapper";
		case ENVELOPE_TRUNCATED:
			return "The body ends inside the encrypted wrapper";
	}
	return "unknown envelope error";
}

static inline const char *
skip_json_space(const char *p, const char *end)
{
	while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
		p++;
	return p;
}

/*
 * Matches the literal lit at *p; false when the body differs.  When the body
 * ends first, sets *ended and moves *p to the end.
 */
static bool
match_literal(const char **p, const char *end, const char *lit, size_t n,
			  bool *ended)
{
	size_t		have = (size_t) (end - *p);

	if (memcmp(*p, lit, have < n ? have : n) != 0)
		return false;
	if (have < n)
	{
		*ended = true;
		*p = end;
		return false;
	}
	*p += n;
	return true;
}

EnvelopeStatus
envelope_unwrap(const char *body, size_t len, const char **b64, size_t *b64_len)
{
	static const char key[] = "\"request\"";
	const char *end = body + len;
	const char *p = skip_json_space(body, end);
	const char *text;
	bool		ended = false;

	if (p == end)
		return ENVELOPE_NOT_WRAPPED;	/* empty: for the JSON parser to judge */
	if (!match_literal(&p, end, "{", 1, &ended))
		return ENVELOPE_NOT_WRAPPED;
	p = skip_json_space(p, end);
	if (!match_literal(&p, end, key, sizeof(key) - 1, &ended))
		return ended ? ENVELOPE_TRUNCATED : ENVELOPE_NOT_WRAPPED;
	p = skip_json_space(p, end);
	if (!match_literal(&p, end, ":", 1, &ended))
		return ended ? ENVELOPE_TRUNCATED : ENVELOPE_NOT_WRAPPED;
	p = skip_json_space(p, end);
	if (!match_literal(&p, end, "\"", 1, &ended))
		return ended ? ENVELOPE_TRUNCATED : ENVELOPE_NOT_WRAPPED;

	text = p;
	p = memchr(text, '"', (size_t) (end - text));
	if (p == NULL)
		return ENVELOPE_TRUNCATED;
	/* an escape, even \/, is the JSON parser's business */
	if (memchr(text, '\\', (size_t) (p - text)) != NULL)
		return ENVELOPE_NOT_WRAPPED;
	*b64 = text;
	*b64_len = (size_t) (p - text);

	p = skip_json_space(p + 1, end);
	if (!match_literal(&p, end, "}", 1, &ended))
		return ended ? ENVELOPE_TRUNCATED : ENVELOPE_NOT_WRAPPED;
	if (skip_json_space(p, end) != end)
		return ENVELOPE_NOT_WRAPPED;
	return ENVELOPE_OK;
}

/*
 * The end of the string whose text starts at s: its closing quote, the
 * first one after an even run of backslashes (pairs of them are escaped
 * backslashes, an odd one escapes the quote), or end.
 */
static const char *
string_end(const char *s, const char *end)
{
	const char *q = s;

	while ((q = memchr(q, '"', (size_t) (end - q))) != NULL)
	{
		const char *b = q;

		while (b > s && b[-1] == '\\')
			b--;
		if ((q - b) % 2 == 0)
			return q;
		q++;
	}
	return end;
}

int
envelope_json_depth(const char *json, size_t len, int limit)
{
	const char *p = json;
	const char *end = json + len;
	int			depth = 0;
	int			deepest = 0;

	while (p < end)
	{
		switch (*p++)
		{
			case '"':
				p = string_end(p, end);
				if (p < end)
					p++;
				break;
			case '[':
			case '{':
				if (++depth > deepest && (deepest = depth) > limit)
					return deepest;
				break;
			case ']':
			case '}':
				depth--;
				break;
		}
	}
	return deepest;
}
