/*-------------------------------------------------------------------------
 *
 * envelope.h
 *	  EnKash's payload envelope: AES-128-ECB with PKCS#7 padding under the
 *	  first 16 bytes of SHA-256(secret), carried as standard Base64.
 *
 * This interface is free of PostgreSQL so that the extension, the benchmark
 * baseline client and the fuzzing harness share one implementation.  It
 * never allocates: callers size the output with the *_bound() functions.
 *
 *-------------------------------------------------------------------------
 */
#ifndef ENKASH_ENVELOPE_H
#define ENKASH_ENVELOPE_H

#include <stdbool.h>
#include <stddef.h>

typedef enum EnvelopeStatus
{
	ENVELOPE_OK = 0,
	ENVELOPE_BAD_BASE64,		/* not canonical standard Base64 */
	ENVELOPE_BAD_LENGTH,		/* ciphertext not a whole number of blocks */
	ENVELOPE_BAD_PADDING,		/* wrong key, or a corrupted last block */
	ENVELOPE_CRYPTO_FAILED,		/* OpenSSL refused (out of memory, ...) */
	ENVELOPE_NOT_WRAPPED,		/* not exactly {"request":"..."}: plain JSON? */
	ENVELOPE_TRUNCATED			/* the body ends inside the wrapper */
} EnvelopeStatus;

/* Deepest JSON nesting accepted in an answer (EnKash's are 3-4 deep). */
#define ENVELOPE_MAX_JSON_DEPTH 64

typedef struct EnvelopeCipher
{
	unsigned char key[16];
	void	   *encrypt_ctx;	/* EVP_CIPHER_CTX, kept to avoid per-call setup */
	void	   *decrypt_ctx;
} EnvelopeCipher;

extern bool envelope_init(EnvelopeCipher *cipher, const char *secret,
						  size_t secret_len);
extern void envelope_free(EnvelopeCipher *cipher);

/* Encrypt then Base64: out needs envelope_seal_bound(len) bytes (NUL incl.). */
extern size_t envelope_seal_bound(size_t plain_len);
extern EnvelopeStatus envelope_seal(EnvelopeCipher *cipher, const char *plain,
									size_t plain_len, char *out,
									size_t *out_len);

/* Base64 then decrypt: out needs envelope_open_bound(len) bytes (NUL incl.). */
extern size_t envelope_open_bound(size_t b64_len);
extern EnvelopeStatus envelope_open(EnvelopeCipher *cipher, const char *b64,
									size_t b64_len, char *out,
									size_t *out_len);

extern const char *envelope_status_text(EnvelopeStatus status);

/*
 * Finds the Base64 text of an answer that is exactly {"request":"<text>"}
 * (JSON whitespace allowed around the tokens) by a byte scan, without
 * copying: *b64 points into body.  The text must hold no backslash; whether
 * it is Base64 (which has no quotes or control characters) is
 * envelope_open's business.
 * ENVELOPE_NOT_WRAPPED for any other body (it may be plain JSON, or a
 * wrapper spelled with escapes: a real JSON parser must decide),
 * ENVELOPE_TRUNCATED when the body ends before a wrapper it began.
 */
extern EnvelopeStatus envelope_unwrap(const char *body, size_t len,
									  const char **b64, size_t *b64_len);

/*
 * The deepest nesting of arrays and objects in JSON text, counted by a byte
 * scan that skips strings the way a JSON lexer does; stops counting once it
 * exceeds limit (and returns a value > limit).  A recursive parser that
 * stops at its first error never nests deeper than this, so checking it
 * first bounds the parser's stack, whatever the text.
 */
extern int	envelope_json_depth(const char *json, size_t len, int limit);

/* Standard Base64 with padding, no line breaks; used for Basic auth too. */
extern size_t envelope_base64_encode(const unsigned char *in, size_t len,
									 char *out);

#endif							/* ENKASH_ENVELOPE_H */
