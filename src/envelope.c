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

/* Value of a Base64 digit, or -1. */
static inline int
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
 * end.  Anything looser would let a corrupted body reach the cipher.
 */
static bool
base64_decode(const char *in, size_t len, unsigned char *out, size_t *out_len)
{
	size_t		o = 0;
	size_t		pad = 0;

	if (len == 0 || len % 4 != 0)
		return false;
	if (in[len - 1] == '=')
		pad++;
	if (in[len - 2] == '=')
		pad++;

	for (size_t i = 0; i < len; i += 4)
	{
		int			d[4];
		bool		last = (i + 4 == len);

		for (int k = 0; k < 4; k++)
		{
			if (last && k >= 4 - (int) pad)
				d[k] = 0;
			else if ((d[k] = b64_value((unsigned char) in[i + k])) < 0)
				return false;
		}
		/* the unused low bits of a padded last group must be zero */
		if (last && ((pad == 2 && (d[1] & 15)) || (pad == 1 && (d[2] & 3))))
			return false;
		out[o++] = (unsigned char) ((d[0] << 2) | (d[1] >> 4));
		if (!last || pad < 2)
			out[o++] = (unsigned char) ((d[1] << 4) | (d[2] >> 2));
		if (!last || pad < 1)
			out[o++] = (unsigned char) ((d[2] << 6) | d[3]);
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
	}
	return "unknown envelope error";
}
