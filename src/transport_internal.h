/*-------------------------------------------------------------------------
 *
 * transport_internal.h
 *	  One transfer on a libcurl easy handle, shared by the one-at-a-time
 *	  path (transport.c) and the sender's multi handle (transport_multi.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef ENKASH_TRANSPORT_INTERNAL_H
#define ENKASH_TRANSPORT_INTERNAL_H

#include "enkash.h"

#include <curl/curl.h>

/* Not exported from the library: no other module can bind to these names. */
#pragma GCC visibility push(hidden)

/*
 * One easy handle and what its callbacks fill.  Everything a callback
 * touches lives here, in malloc'd memory.
 */
typedef struct Transfer
{
	CURL	   *easy;
	struct curl_slist *headers;
	char		error[CURL_ERROR_SIZE]; /* libcurl's own words on a failure */

	/*
	 * The request body, copied, and whether libcurl may send it again by
	 * itself: it silently re-sends a request whose reused connection died
	 * before any answer, though the server may well have acted on it;
	 * allow_send (transport.c) stops that unless may_resend.
	 */
	char	   *upload;
	size_t		upload_cap;
	size_t		upload_len;
	bool		may_resend;
	int			sends;			/* times libcurl set out to send it */
	long		timeout_ms;		/* CURLOPT_TIMEOUT_MS of this request */

	/* The response body, grown with realloc, reused across calls. */
	char	   *body;
	size_t		body_cap;
	size_t		body_len;
	size_t		body_limit;
	bool		body_overflow;

	/* outbox transfers */
	bool		running;
	bool		done;
	CURLcode	code;
	void	   *owner;
} Transfer;

enkash_noreturn extern void out_of_memory(void);
extern void transfer_init(Transfer *t);
extern void transfer_prepare(Transfer *t, const char *url, const char *const *headers,
							 int nheaders, const char *body, size_t len, bool may_resend,
							 long timeout_ms, long connect_timeout_ms);
extern void transfer_release_headers(Transfer *t);
extern void transfer_result(Transfer *t, CURLcode code, EnkashHttpResult *result);

#pragma GCC visibility pop

#endif							/* ENKASH_TRANSPORT_INTERNAL_H */
