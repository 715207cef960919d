/*-------------------------------------------------------------------------
 *
 * transport.c
 *	  HTTP POST over libcurl, one connection cache per backend.
 *
 * One easy handle and one multi handle live for the whole backend so that
 * TCP and TLS connections are reused between calls.  The transfer is driven
 * by our own loop rather than curl_easy_perform() so that cancellation,
 * statement_timeout and termination are noticed within a tenth of a second
 * and handled outside libcurl: never ereport from inside a curl callback
 * (a longjmp through libcurl corrupts it), and never palloc there either.
 *
 *-------------------------------------------------------------------------
 */
#include "enkash.h"

#include <curl/curl.h>

#include "miscadmin.h"
#include "pgstat.h"
#include "utils/wait_event.h"

/* How often the transfer loop looks at interrupts while waiting. */
#define POLL_INTERVAL_MS 100

/* Retry-After (seconds) of the last answer, for the outbox's backoff. */
int			enkash_last_retry_after = 0;

static CURLM *multi = NULL;
static CURL *easy = NULL;
static char curl_error[CURL_ERROR_SIZE];	/* libcurl's own words on a failure */

/* The response body, reused across calls; grown with realloc, not palloc. */
static char *body_buf = NULL;
static size_t body_cap = 0;
static size_t body_len = 0;
static size_t body_limit = 0;
static bool body_overflow = false;

/*
 * The request body when it must never be re-sent: handed to libcurl through
 * a read callback that cannot seek.  libcurl silently re-sends a request
 * whose reused connection died before any answer (the server may well have
 * acted on it); rewinding is the step it needs for that, so refusing to
 * rewind turns that blind re-send into an error we can report as unknown.
 */
static const char *upload_data = NULL;
static size_t upload_len = 0;
static size_t upload_pos = 0;

static size_t
supply_body(char *buffer, size_t size, size_t nitems, void *userdata)
{
	size_t		n = Min(size * nitems, upload_len - upload_pos);

	memcpy(buffer, upload_data + upload_pos, n);
	upload_pos += n;
	return n;
}

static int
refuse_rewind(void *userdata, curl_off_t offset, int origin)
{
	return CURL_SEEKFUNC_CANTSEEK;
}

static size_t
collect_body(char *data, size_t size, size_t nmemb, void *userdata)
{
	size_t		n = size * nmemb;

	if (body_len + n > body_limit)
	{
		body_overflow = true;
		return 0;				/* makes libcurl stop with CURLE_WRITE_ERROR */
	}
	if (body_len + n + 1 > body_cap)
	{
		size_t		cap = Max(body_cap * 2, body_len + n + 1);
		char	   *grown = realloc(body_buf, cap);

		if (grown == NULL)
			return 0;
		body_buf = grown;
		body_cap = cap;
	}
	memcpy(body_buf + body_len, data, n);
	body_len += n;
	return n;
}

static void
setup_handles(void)
{
	if (easy != NULL)
		return;
	multi = curl_multi_init();
	easy = curl_easy_init();
	if (multi == NULL || easy == NULL)
	{
		if (easy)
			curl_easy_cleanup(easy);
		if (multi)
			curl_multi_cleanup(multi);
		easy = NULL;
		multi = NULL;
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("could not create an HTTP client for EnKash")));
	}

	/* Settings that never change for this backend. */
	curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, curl_error);
	curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, collect_body);
	curl_easy_setopt(easy, CURLOPT_READFUNCTION, supply_body);
	curl_easy_setopt(easy, CURLOPT_SEEKFUNCTION, refuse_rewind);
	curl_easy_setopt(easy, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(easy, CURLOPT_SSL_VERIFYPEER, 1L);
	curl_easy_setopt(easy, CURLOPT_SSL_VERIFYHOST, 2L);
	curl_easy_setopt(easy, CURLOPT_TCP_KEEPALIVE, 1L);
	curl_easy_setopt(easy, CURLOPT_TCP_NODELAY, 1L);
	curl_easy_setopt(easy, CURLOPT_POST, 1L);
	curl_easy_setopt(easy, CURLOPT_USERAGENT, "enkash-postgresql/0.1");
}

/*
 * Failures that happen before a single byte of the request can have reached
 * EnKash; everything else may have been acted upon.
 */
static bool
failed_before_sending(CURLcode code)
{
	switch (code)
	{
		case CURLE_UNSUPPORTED_PROTOCOL:
		case CURLE_URL_MALFORMAT:
		case CURLE_COULDNT_RESOLVE_PROXY:
		case CURLE_COULDNT_RESOLVE_HOST:
		case CURLE_COULDNT_CONNECT:
		case CURLE_SSL_CONNECT_ERROR:
		case CURLE_PEER_FAILED_VERIFICATION:
		case CURLE_SSL_CACERT_BADFILE:
		case CURLE_SSL_CERTPROBLEM:
		case CURLE_SSL_CIPHER:
		case CURLE_SSL_ENGINE_NOTFOUND:
		case CURLE_SSL_ENGINE_SETFAILED:
			return true;
		default:
			return false;
	}
}

/* A finance person's words for why a transfer failed. */
static void
describe_failure(CURLcode code, EnkashHttpResult *result)
{
	const char *why;

	switch (code)
	{
		case CURLE_GOT_NOTHING:
		case CURLE_SEND_FAIL_REWIND:
		case CURLE_RECV_ERROR:
		case CURLE_SEND_ERROR:
		case CURLE_PARTIAL_FILE:
			why = "The connection closed before EnKash answered";
			break;
		case CURLE_OPERATION_TIMEDOUT:
			snprintf(result->error, sizeof(result->error),
					 "No answer within enkash.timeout_ms (%d ms)", enkash_timeout_ms);
			return;
		case CURLE_PEER_FAILED_VERIFICATION:
		case CURLE_SSL_CONNECT_ERROR:
		case CURLE_SSL_CACERT_BADFILE:
		case CURLE_SSL_CERTPROBLEM:
			/* libcurl's own words say which certificate check failed */
			why = curl_error[0] ? curl_error : curl_easy_strerror(code);
			break;
		default:
			why = curl_easy_strerror(code);
			break;
	}
	strlcpy(result->error, why, sizeof(result->error));
}

/* Drives the transfer; returns the libcurl result of the easy handle. */
static CURLcode
run_transfer(void)
{
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

			pgstat_report_wait_start(PG_WAIT_EXTENSION);
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
 * may_resend, libcurl is kept from re-sending the body on its own.
 */
void
enkash_http_post(const char *url, const char *const *headers, int nheaders,
				 const char *body, size_t len, bool may_resend,
				 EnkashHttpResult *result)
{
	struct curl_slist *volatile header_list = NULL;
	volatile CURLcode code;
	double		seconds = 0;

	enkash_rate_limit_wait();
	setup_handles();
	curl_error[0] = '\0';
	memset(result, 0, sizeof(*result));
	enkash_last_retry_after = 0;

	for (int i = 0; i < nheaders; i++)
	{
		struct curl_slist *grown = curl_slist_append(header_list, headers[i]);

		if (grown == NULL)
		{
			curl_slist_free_all(header_list);
			ereport(ERROR,
					(errcode(ERRCODE_OUT_OF_MEMORY),
					 errmsg("out of memory")));
		}
		header_list = grown;
	}

	body_len = 0;
	body_overflow = false;
	body_limit = (size_t) enkash_max_response_kb * 1024;

	curl_easy_setopt(easy, CURLOPT_URL, url);
	curl_easy_setopt(easy, CURLOPT_HTTPHEADER, header_list);
	upload_data = body;
	upload_len = len;
	upload_pos = 0;
	curl_easy_setopt(easy, CURLOPT_POSTFIELDS, may_resend ? body : NULL);
	curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t) len);
	curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, (long) enkash_timeout_ms);
	curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT_MS,
					 (long) enkash_connect_timeout_ms);
	curl_easy_setopt(easy, CURLOPT_CAINFO,
					 (enkash_ca_file && enkash_ca_file[0]) ? enkash_ca_file : NULL);

	PG_TRY();
	{
		code = run_transfer();
	}
	PG_FINALLY();
	{
		/* libcurl keeps pointers to both until the next call. */
		curl_easy_setopt(easy, CURLOPT_HTTPHEADER, NULL);
		curl_slist_free_all(header_list);
		upload_data = NULL;
	}
	PG_END_TRY();

	curl_easy_getinfo(easy, CURLINFO_TOTAL_TIME, &seconds);
	result->seconds = seconds;

	if (code == CURLE_OK)
	{
		result->outcome = ENKASH_HTTP_OK;
		curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &result->status);
		{
			curl_off_t	retry_after = 0;

			curl_easy_getinfo(easy, CURLINFO_RETRY_AFTER, &retry_after);
			enkash_last_retry_after = (int) Min(retry_after, 86400);
		}
		if (body_buf == NULL && (body_buf = malloc(1)) != NULL)
			body_cap = 1;
		if (body_buf == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_OUT_OF_MEMORY),
					 errmsg("out of memory")));
		body_buf[body_len] = '\0';
		result->body = body_buf;
		result->body_len = body_len;
		return;
	}

	if (body_overflow)
		result->outcome = ENKASH_HTTP_TOO_LARGE;
	else if (failed_before_sending(code))
		result->outcome = ENKASH_HTTP_NOT_SENT;
	else
	{
		long		header_bytes = 0;

		/* Neither headers nor body left: e.g. a connect timeout. */
		curl_easy_getinfo(easy, CURLINFO_REQUEST_SIZE, &header_bytes);
		result->outcome = (header_bytes > 0 || upload_pos > 0) ?
			ENKASH_HTTP_MAYBE_SENT : ENKASH_HTTP_NOT_SENT;
	}
	describe_failure(code, result);
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
