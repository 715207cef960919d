/*-------------------------------------------------------------------------
 *
 * wire.h
 *	  The benchmark's bare EnKash exchange, shared by the raw client and the
 *	  bare SQL call (bare.c): a token, the request's headers, an answer
 *	  opened.  Plain C, libcurl and the extension's envelope code; errors are
 *	  returned as text, never raised.
 *
 *-------------------------------------------------------------------------
 */
#ifndef ENKASH_BENCH_WIRE_H
#define ENKASH_BENCH_WIRE_H

#include <stddef.h>

#include <curl/curl.h>

#include "envelope.h"

/* A growing malloc'd buffer that libcurl writes an answer into. */
typedef struct WireBuffer
{
	char	   *data;
	size_t		len;
	size_t		cap;
} WireBuffer;

/* A partner's credentials; wire_sandbox_credentials are the sandbox's (test/sandbox/partner.h). */
typedef struct WireCredentials
{
	const char *client_id;
	const char *client_secret;
	const char *username;
	const char *password;
	const char *company_id;
	const char *partner_id;
} WireCredentials;

extern const WireCredentials wire_sandbox_credentials;

/* CURLOPT_WRITEFUNCTION into a WireBuffer (userdata); keeps it NUL-ended. */
extern size_t wire_collect(char *data, size_t size, size_t nmemb, void *userdata);

/* A POST with these headers, its answer into *answer: the options every exchange shares. */
extern void wire_prepare(CURL *curl, struct curl_slist *headers, WireBuffer *answer,
						 const char *user_agent);

/* The password grant: NULL and *token (malloc'd), or why not. */
extern const char *wire_token(const WireCredentials *cred, const char *token_url, char **token);

/* The API call's headers, as the extension's src/request.c sends them. */
extern struct curl_slist *wire_headers(const WireCredentials *cred, const char *token);

/* {"request":"<base64>"} decrypted into *plain (grown as needed): NULL, or why not. */
extern const char *wire_open(EnvelopeCipher *cipher, const WireBuffer *body,
							 char **plain, size_t *plain_cap, size_t *plain_len);

#endif							/* ENKASH_BENCH_WIRE_H */
