/*-------------------------------------------------------------------------
 *
 * transport.c
 *	  HTTP POST over libcurl, one call at a time (SQL functions, tokens);
 *	  the outbox sender's many at once are in transport_multi.c.
 *
 * A backend has one easy handle on one multi handle for its whole life, so
 * that TCP and TLS connections are reused between calls.  The transfer is
 * driven by our own loop rather than curl_easy_perform() so that
 * cancellation, statement_timeout and termination are noticed within a
 * tenth of a second and handled outside libcurl.  The outbox sender adds a
 * second multi handle with up to enkash.max_concurrency easy handles in
 * flight at once, sharing one connection cache, driven through libcurl's
 * socket API: an epoll set holds the sockets libcurl asks us to watch, so
 * that a wake-up costs work only for the transfers whose sockets are ready
 * (curl_multi_perform walks every transfer each time).
 *
 * Never ereport from inside a curl callback (a longjmp through libcurl
 * corrupts it), and never palloc there either: the buffers callbacks touch
 * are malloc'd.  Our copies of a request (body, header lines: a password
 * form, a Basic or bearer header, card data) are wiped once it is done.
 *
 * The caller waits for enkash.rate_limit before a call: only it knows when
 * "the request may have left" begins.
 *
 *-------------------------------------------------------------------------
 */
#include "transport_internal.h"

#include "miscadmin.h"
#include "pgstat.h"
#include "storage/latch.h"
#include "utils/memutils.h"
#include "utils/wait_event.h"

/* How often the transfer loop looks at interrupts while waiting. */
#define POLL_INTERVAL_MS 100

/* The synchronous path of this backend. */
static CURLM *multi = NULL;
static Transfer sync_xfer;

/*
 * libcurl calls this each time it is about to send the request.  A second
 * time is libcurl re-sending on its own, after a reused connection died
 * with no answer: EnKash may already have acted on the first.  A request
 * that must never be re-sent is stopped there (CURLE_ABORTED_BY_CALLBACK),
 * and its outcome is unknown.
 */
static int
allow_send(void *userdata, char *remote_ip, char *local_ip, int remote_port, int local_port)
{
	Transfer   *t = userdata;

	t->sends++;
	return (t->sends > 1 && !t->may_resend) ? CURL_PREREQFUNC_ABORT : CURL_PREREQFUNC_OK;
}

static size_t
collect_body(char *data, size_t size, size_t nmemb, void *userdata)
{
	Transfer   *t = userdata;
	size_t		n = size * nmemb;

	if (t->body_len + n > t->body_limit)
	{
		t->body_overflow = true;
		return 0;				/* makes libcurl stop with CURLE_WRITE_ERROR */
	}
	if (t->body_len + n + 1 > t->body_cap)
	{
		size_t		cap = Max(t->body_cap * 2, t->body_len + n + 1);
		char	   *grown = realloc(t->body, cap);

		if (grown == NULL)
			return 0;
		t->body = grown;
		t->body_cap = cap;
	}
	memcpy(t->body + t->body_len, data, n);
	t->body_len += n;
	return n;
}

void
out_of_memory(void)
{
	ereport(ERROR,
			(errcode(ERRCODE_OUT_OF_MEMORY),
			 errmsg("out of memory")));
}

/* Creates the easy handle of a transfer, with the settings that never change. */
void
transfer_init(Transfer *t)
{
	if (t->easy != NULL)
		return;
	t->easy = curl_easy_init();
	if (t->easy == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("could not create an HTTP client for EnKash")));
	curl_easy_setopt(t->easy, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(t->easy, CURLOPT_ERRORBUFFER, t->error);
	curl_easy_setopt(t->easy, CURLOPT_WRITEFUNCTION, collect_body);
	curl_easy_setopt(t->easy, CURLOPT_WRITEDATA, t);
	/* without it a money call could be re-sent (libcurl 7.80 and later have it) */
	if (curl_easy_setopt(t->easy, CURLOPT_PREREQFUNCTION, allow_send) != CURLE_OK ||
		curl_easy_setopt(t->easy, CURLOPT_PREREQDATA, t) != CURLE_OK)
	{
		curl_easy_cleanup(t->easy);
		t->easy = NULL;
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("the libcurl in use (%s) is too old for enkash", curl_version()),
				 errhint("enkash needs libcurl 7.80 or later.")));
	}
	curl_easy_setopt(t->easy, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(t->easy, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(t->easy, CURLOPT_SSL_VERIFYPEER, 1L);
	curl_easy_setopt(t->easy, CURLOPT_SSL_VERIFYHOST, 2L);
	curl_easy_setopt(t->easy, CURLOPT_TCP_KEEPALIVE, 1L);
	curl_easy_setopt(t->easy, CURLOPT_TCP_NODELAY, 1L);
	curl_easy_setopt(t->easy, CURLOPT_POST, 1L);
	curl_easy_setopt(t->easy, CURLOPT_USERAGENT, "enkash-postgresql/" ENKASH_VERSION);
}

/*
 * Sets up one POST on a transfer: headers, a copy of the body (sent in the
 * same packet as the headers), timeouts.  Unless may_resend, libcurl is
 * kept from re-sending the request on its own.
 */
void
transfer_prepare(Transfer *t, const char *url, const char *const *headers,
				 int nheaders, const char *body, size_t len, bool may_resend,
				 long timeout_ms, long connect_timeout_ms)
{
	struct curl_slist *list = NULL;

	for (int i = 0; i < nheaders; i++)
	{
		struct curl_slist *grown = curl_slist_append(list, headers[i]);

		if (grown == NULL)
		{
			curl_slist_free_all(list);
			out_of_memory();
		}
		list = grown;
	}
	if (len + 1 > t->upload_cap)
	{
		char	   *grown = realloc(t->upload, len + 1);

		if (grown == NULL)
		{
			curl_slist_free_all(list);
			out_of_memory();
		}
		t->upload = grown;
		t->upload_cap = len + 1;
	}
	memcpy(t->upload, body, len);
	t->upload[len] = '\0';
	t->upload_len = len;
	t->may_resend = may_resend;
	t->sends = 0;
	t->headers = list;
	t->error[0] = '\0';
	t->body_len = 0;
	t->body_overflow = false;
	t->body_limit = (size_t) enkash_max_response_kb * 1024;
	t->timeout_ms = timeout_ms;

	curl_easy_setopt(t->easy, CURLOPT_URL, url);
	curl_easy_setopt(t->easy, CURLOPT_HTTPHEADER, list);
	curl_easy_setopt(t->easy, CURLOPT_POSTFIELDS, t->upload);
	curl_easy_setopt(t->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t) len);
	curl_easy_setopt(t->easy, CURLOPT_TIMEOUT_MS, timeout_ms);
	curl_easy_setopt(t->easy, CURLOPT_CONNECTTIMEOUT_MS, connect_timeout_ms);
	curl_easy_setopt(t->easy, CURLOPT_CAINFO,
					 (enkash_ca_file && enkash_ca_file[0]) ? enkash_ca_file : NULL);
}

/*
 * Drops the headers of a finished or abandoned transfer, and wipes them and
 * the copy of its body: they may hold credentials, a token or card data.
 */
void
transfer_release_headers(Transfer *t)
{
	/* libcurl keeps a pointer to the list until it is told otherwise */
	if (t->easy)
		curl_easy_setopt(t->easy, CURLOPT_HTTPHEADER, NULL);
	for (struct curl_slist *h = t->headers; h != NULL; h = h->next)
		explicit_bzero(h->data, strlen(h->data));
	curl_slist_free_all(t->headers);
	t->headers = NULL;
	if (t->upload)
		explicit_bzero(t->upload, t->upload_cap);
}

/* Failures of making a connection, before any request goes on it. */
static bool
connecting_failed(CURLcode code)
{
	return code == CURLE_COULDNT_RESOLVE_PROXY || code == CURLE_COULDNT_RESOLVE_HOST ||
		code == CURLE_COULDNT_CONNECT || code == CURLE_SSL_CONNECT_ERROR ||
		code == CURLE_PEER_FAILED_VERIFICATION;
}

/*
 * A finance person's words for why transfer t failed.  A connection failing
 * after libcurl set out to send (t->sends) was one made for a re-send.
 */
static void
describe_failure(CURLcode code, const Transfer *t, EnkashHttpResult *result)
{
	const char *why;

	switch (code)
	{
		case CURLE_GOT_NOTHING:
		case CURLE_ABORTED_BY_CALLBACK: /* allow_send: no re-send after one */
		case CURLE_RECV_ERROR:
		case CURLE_SEND_ERROR:
		case CURLE_PARTIAL_FILE:
			why = "The connection closed before EnKash answered";
			break;
		case CURLE_OPERATION_TIMEDOUT:
			if (t->timeout_ms == enkash_timeout_ms)
				snprintf(result->error, sizeof(result->error),
						 "No answer within enkash.timeout_ms (%d ms)", enkash_timeout_ms);
			else
				snprintf(result->error, sizeof(result->error),
						 "No answer within %ld ms", t->timeout_ms);
			return;
		case CURLE_PEER_FAILED_VERIFICATION:
		case CURLE_SSL_CONNECT_ERROR:
		case CURLE_SSL_CACERT_BADFILE:
		case CURLE_SSL_CERTPROBLEM:
			/* libcurl's own words say which certificate check failed */
			why = t->error[0] ? t->error : curl_easy_strerror(code);
			break;
		default:
			why = curl_easy_strerror(code);
			break;
	}
	if (t->sends > 0 && connecting_failed(code))
		snprintf(result->error, sizeof(result->error),
				 "The connection closed before EnKash answered, and a new one could not be made (%s)",
				 why);
	else
		strlcpy(result->error, why, sizeof(result->error));
}

/*
 * What a finished transfer amounts to: a response, or a failure that says
 * whether EnKash may have seen the request.
 */
void
transfer_result(Transfer *t, CURLcode code, EnkashHttpResult *result)
{
	double		seconds = 0;

	memset(result, 0, sizeof(*result));
	curl_easy_getinfo(t->easy, CURLINFO_TOTAL_TIME, &seconds);
	result->seconds = seconds;

	if (code == CURLE_OK)
	{
		curl_off_t	after = 0;

		result->outcome = ENKASH_HTTP_OK;
		curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &result->status);
		curl_easy_getinfo(t->easy, CURLINFO_RETRY_AFTER, &after);
		result->retry_after = (int) Min(after, 86400);
		if (t->body == NULL && (t->body = malloc(1)) != NULL)
			t->body_cap = 1;
		if (t->body == NULL)
			out_of_memory();
		t->body[t->body_len] = '\0';
		result->body = t->body;
		result->body_len = t->body_len;
		return;
	}

	if (t->body_overflow)
		result->outcome = ENKASH_HTTP_TOO_LARGE;
	else
	{
		long		header_bytes = 0;

		/*
		 * libcurl never came to send it (no connection, a certificate
		 * refused, a connect timeout), or it may have reached EnKash: also
		 * when a re-send was what failed, as the first went out.
		 */
		curl_easy_getinfo(t->easy, CURLINFO_REQUEST_SIZE, &header_bytes);
		result->outcome = (t->sends > 0 || header_bytes > 0) ?
			ENKASH_HTTP_MAYBE_SENT : ENKASH_HTTP_NOT_SENT;
	}
	describe_failure(code, t, result);
}

/* ---------------------------------------------------------------------
 * One call at a time (SQL functions, token fetches)
 * ---------------------------------------------------------------------
 */

static void
setup_sync(void)
{
	if (multi == NULL && (multi = curl_multi_init()) == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("could not create an HTTP client for EnKash")));
	transfer_init(&sync_xfer);
}

/* Drives the transfer; returns the libcurl result of the easy handle. */
static CURLcode
run_transfer(void)
{
	CURL	   *easy = sync_xfer.easy;
	volatile CURLcode result = CURLE_OK;
	volatile bool done = false;

	curl_multi_add_handle(multi, easy);
	PG_TRY();
	{
		while (!done)
		{
			int			running;
			int			queued;
			CURLMsg    *msg;

			if (curl_multi_perform(multi, &running) != CURLM_OK)
				ereport(ERROR,
						(errcode(ERRCODE_INTERNAL_ERROR),
						 errmsg("libcurl failed while calling EnKash")));
			while ((msg = curl_multi_info_read(multi, &queued)) != NULL)
			{
				if (msg->msg == CURLMSG_DONE && msg->easy_handle == easy)
				{
					result = msg->data.result;
					done = true;
				}
			}
			if (done)
				break;

			pgstat_report_wait_start(enkash_wait_event(ENKASH_WAIT_CALL));
			curl_multi_poll(multi, NULL, 0, POLL_INTERVAL_MS, NULL);
			pgstat_report_wait_end();

			/* Throws on cancel or timeout; PG_FINALLY drops the transfer. */
			CHECK_FOR_INTERRUPTS();
		}
	}
	PG_FINALLY();
	{
		/* Removing a handle mid-transfer aborts it and closes its socket. */
		curl_multi_remove_handle(multi, easy);
	}
	PG_END_TRY();

	return result;
}

/*
 * POST body to url.  The outcome says whether a response arrived and, if
 * not, whether EnKash may have seen the request: the difference between an
 * error that is safe to retry and one whose effect is unknown.  Unless
 * may_resend, libcurl is kept from re-sending the body on its own.  The
 * caller has waited its turn under enkash.rate_limit.
 */
void
enkash_http_post(const char *url, const char *const *headers, int nheaders,
				 const char *body, size_t len, bool may_resend,
				 EnkashHttpResult *result)
{
	enkash_http_post_timed(url, headers, nheaders, body, len, may_resend,
						   enkash_timeout_ms, enkash_connect_timeout_ms, result);
}

/* enkash_http_post with timeouts of the caller's choosing, not the settings'. */
void
enkash_http_post_timed(const char *url, const char *const *headers, int nheaders,
					   const char *body, size_t len, bool may_resend,
					   long timeout_ms, long connect_timeout_ms,
					   EnkashHttpResult *result)
{
	volatile CURLcode code;

	setup_sync();
	transfer_prepare(&sync_xfer, url, headers, nheaders, body, len, may_resend,
					 timeout_ms, connect_timeout_ms);

	PG_TRY();
	{
		code = run_transfer();
	}
	PG_FINALLY();
	{
		transfer_release_headers(&sync_xfer);
	}
	PG_END_TRY();

	transfer_result(&sync_xfer, code, result);
}

/* Raises the error for a transfer that produced no usable response. */
void
enkash_http_raise(const char *what, const EnkashHttpResult *result)
{
	switch (result->outcome)
	{
		case ENKASH_HTTP_NOT_SENT:
			ereport(ERROR,
					(errcode(ERRCODE_SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION),
					 errmsg("could not reach EnKash for %s", what),
					 errdetail("%s. The request was not sent.", result->error),
					 errhint("Check enkash.base_url, enkash.token_url, enkash.ca_file and the network; it is safe to try again.")));
			break;
		case ENKASH_HTTP_MAYBE_SENT:
			ereport(ERROR,
					(errcode(ERRCODE_ENKASH_OUTCOME_UNKNOWN),
					 errmsg("no answer from EnKash for %s; the request may have been processed", what),
					 errdetail("%s.", result->error),
					 errhint("Check the outcome with EnKash (for a load: enkash_get_transaction by reference number) before trying again.")));
			break;
		case ENKASH_HTTP_TOO_LARGE:
			ereport(ERROR,
					(errcode(ERRCODE_ENKASH_ANSWER_TOO_LARGE),
					 errmsg("EnKash's answer for %s is larger than enkash.max_response_kb (%d kB)",
							what, enkash_max_response_kb)));
			break;
		case ENKASH_HTTP_OK:
			break;
	}
	elog(ERROR, "enkash_http_raise called for a successful transfer");
}
