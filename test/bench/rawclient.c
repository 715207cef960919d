/*-------------------------------------------------------------------------
 *
 * rawclient.c
 *	  The benchmark's baseline: the wire's limit for one EnKash look-up.
 *
 * Gets a token with the password grant, then makes the same encrypted,
 * authenticated POST /cardAccount/get that enkash_get_card_account() makes,
 * over one kept-alive libcurl connection, in a tight loop, checking that
 * every answer decrypts to code 0.  The envelope code is the extension's own
 * (src/envelope.c), so the crypto is the same; only PostgreSQL is missing.
 * The token, the headers and opening an answer are wire.c's, which the bare
 * SQL call (bare/bare.c) makes the same exchange with from a backend.
 *
 * --clients K forks K copies, each with its own connection; they start
 * together after a short warm-up and their latencies are pooled.
 *
 * Prints one line of key=value pairs, for test/bench/run.sh:
 *   rawclient clients=K calls=N warmup=W seconds=S calls_per_s=X p50_us=..
 *   p99_us=.. cpu_us_per_call=.. user_us_per_call=.. connections=C failures=F
 * and exits non-zero if any call failed.
 *
 *-------------------------------------------------------------------------
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <jansson.h>

#include "envelope.h"
#include "wire.h"

/* Latencies kept per client; calls beyond this are counted, not timed. */
#define MAX_SAMPLES (4 * 1024 * 1024)

typedef struct Options
{
	const char *base_url;		/* up to and including /enKashCard */
	const char *token_url;
	WireCredentials cred;		/* default: the sandbox's */
	const char *encryption_secret;	/* default: cred.client_secret */
	const char *card_account_id;
	int			clients;
	long		calls;			/* per client; 0 = run for seconds */
	double		seconds;
	int			warmup;			/* untimed calls per client before the start */
	bool		no_fork;		/* one client, in this process (for profilers) */
	bool		parse_json;		/* check answers with jansson, not scans */
	bool		verbose;
} Options;

/* One client's results, in memory shared with the parent. */
typedef struct ClientResult
{
	long		calls;			/* timed calls */
	long		warmup_calls;
	long		failures;
	long		connects;		/* new connections libcurl made */
	double		started;		/* CLOCK_MONOTONIC seconds */
	double		finished;
	char		error[256];		/* the first failure */
	uint32_t	samples[MAX_SAMPLES];	/* latency, ns (capped at 4.29 s) */
} ClientResult;

static Options opt = {
	.card_account_id = "CASANDBOX1",
	.clients = 1,
	.calls = 0,
	.seconds = 5,
	.warmup = 10,
};

static void
die(const char *fmt,...)
{
	va_list		ap;

	fprintf(stderr, "rawclient: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(2);
}

static double
now_seconds(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Skips JSON whitespace. */
static const char *
skip_ws(const char *p, const char *end)
{
	while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
		p++;
	return p;
}

/*
 * The value of the top-level member "code" (or "response_code") of a JSON
 * object, by a scan that tracks strings and nesting; false if there is none
 * or it is not an integer.  Enough to check an answer without parsing it.
 */
static bool
top_level_code(const char *p, size_t len, long *code)
{
	const char *end = p + len;
	int			depth = 0;
	bool		expect_key = false;

	while (p < end)
	{
		char		c = *p;

		if (c == '"')
		{
			const char *s = ++p;

			while (p < end && *p != '"')
				p += (*p == '\\') ? 2 : 1;
			if (p >= end)
				return false;
			if (depth == 1 && expect_key)
			{
				size_t		n = p - s;

				p = skip_ws(p + 1, end);
				if (p < end && *p == ':' &&
					((n == 4 && memcmp(s, "code", 4) == 0) ||
					 (n == 13 && memcmp(s, "response_code", 13) == 0)))
				{
					char	   *after;

					p = skip_ws(p + 1, end);
					*code = strtol(p, &after, 10);
					return after != p && after < end &&
						(*after == ',' || *after == '}' || *after == ' ' ||
						 *after == '\n' || *after == '\r' || *after == '\t');
				}
				expect_key = false;
				continue;
			}
			p++;
			continue;
		}
		if (c == '{')
		{
			depth++;
			expect_key = true;
		}
		else if (c == '[')
			depth++;
		else if (c == '}' || c == ']')
			depth--;
		else if (c == ',' && depth == 1)
			expect_key = true;
		p++;
	}
	return false;
}

/*
 * Checks one answer: {"request":"<base64>"} that decrypts to an envelope
 * with code (or response_code) 0.  Returns NULL if fine, else why not.
 * With --parse-json both layers go through jansson instead of the scans
 * (slower: it shows what a full parse costs).
 */
static const char *
check_answer(EnvelopeCipher *cipher, const WireBuffer *body, char **plain, size_t *plain_cap)
{
	size_t		plain_len;
	long		code = -1;
	const char *why;

	if (opt.parse_json)
	{
		json_t	   *outer = json_loadb(body->data, body->len, 0, NULL);
		json_t	   *inner;
		json_t	   *c;
		const char *b64 = json_string_value(json_object_get(outer, "request"));
		size_t		need;

		if (b64 == NULL)
		{
			json_decref(outer);
			return "answer has no encrypted \"request\" member";
		}
		need = envelope_open_bound(strlen(b64));
		if (need > *plain_cap)
		{
			free(*plain);
			if ((*plain = malloc(need)) == NULL)
				die("out of memory");
			*plain_cap = need;
		}
		why = envelope_open(cipher, b64, strlen(b64), *plain, &plain_len) == ENVELOPE_OK ?
			NULL : "answer does not decrypt";
		json_decref(outer);
		if (why)
			return why;
		if ((inner = json_loadb(*plain, plain_len, 0, NULL)) == NULL)
			return "decrypted answer is not JSON";
		c = json_object_get(inner, "code");
		if (c == NULL)
			c = json_object_get(inner, "response_code");
		if (json_is_integer(c))
			code = json_integer_value(c);
		json_decref(inner);
	}
	else if ((why = wire_open(cipher, body, plain, plain_cap, &plain_len)) != NULL)
		return why;
	else if (!top_level_code(*plain, plain_len, &code))
		return "decrypted answer has no code";
	return code == 0 ? NULL : "EnKash code is not 0";
}

/* One client: warm up, wait for the start, loop, record. */
static void
run_client(ClientResult *res, const char *token, int start_fd)
{
	CURL	   *curl = curl_easy_init();
	EnvelopeCipher cipher;
	const char *secret = opt.encryption_secret ? opt.encryption_secret : opt.cred.client_secret;
	char		url[2048];
	char		json[512];
	size_t		json_len;
	char	   *sealed;
	char	   *request;
	size_t		request_cap;
	struct curl_slist *headers = wire_headers(&opt.cred, token);
	WireBuffer	body = {0};
	char	   *plain = NULL;
	size_t		plain_cap = 0;
	double		deadline = 0;
	char		go;

	if (curl == NULL)
		die("curl_easy_init failed");
	if (!envelope_init(&cipher, secret, strlen(secret)))
		die("envelope_init failed");

	snprintf(url, sizeof(url), "%s/cardAccount/get", opt.base_url);
	json_len = snprintf(json, sizeof(json), "{\"cardAccountId\":\"%s\",\"companyId\":\"%s\"}",
						opt.card_account_id, opt.cred.company_id);

	request_cap = envelope_seal_bound(json_len) + 32;
	request = malloc(request_cap);
	sealed = malloc(envelope_seal_bound(json_len));
	if (request == NULL || sealed == NULL)
		die("out of memory");

	wire_prepare(curl, headers, &body, "enkash-rawclient/0.1");
	curl_easy_setopt(curl, CURLOPT_URL, url);

	for (long i = 0;; i++)
	{
		bool		warm = i < opt.warmup;
		size_t		sealed_len;
		size_t		request_len;
		double		t0;
		double		t1;
		CURLcode	rc;
		long		status = 0;
		long		connects = 0;
		const char *why = NULL;

		if (i == opt.warmup)
		{
			/* Everyone starts when the parent closes the pipe. */
			if (start_fd >= 0 && read(start_fd, &go, 1) < 0 && errno != EINTR)
				die("start pipe: %s", strerror(errno));
			res->started = now_seconds();
			if (opt.calls == 0)
				deadline = res->started + opt.seconds;
		}
		if (!warm)
		{
			if (opt.calls > 0 ? res->calls >= opt.calls : now_seconds() >= deadline)
				break;
		}

		t0 = now_seconds();
		/* Seal every call, as the extension does. */
		if (envelope_seal(&cipher, json, json_len, sealed, &sealed_len) != ENVELOPE_OK)
			die("envelope_seal failed");
		request_len = snprintf(request, request_cap, "{\"request\":\"%s\"}", sealed);
		curl_easy_setopt(curl, CURLOPT_POSTFIELDS, request);
		curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE, (long) request_len);
		body.len = 0;
		rc = curl_easy_perform(curl);
		if (rc != CURLE_OK)
			why = curl_easy_strerror(rc);
		else
		{
			curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
			if (status != 200)
				why = "HTTP status is not 200";
			else
				why = check_answer(&cipher, &body, &plain, &plain_cap);
		}
		t1 = now_seconds();
		curl_easy_getinfo(curl, CURLINFO_NUM_CONNECTS, &connects);
		res->connects += connects;

		if (why != NULL)
		{
			if (res->failures++ == 0)
				snprintf(res->error, sizeof(res->error), "%s (HTTP %ld)", why, status);
			if (opt.verbose)
				fprintf(stderr, "rawclient: call failed: %s\n", why);
		}
		if (warm)
			res->warmup_calls++;
		else
		{
			double		ns = (t1 - t0) * 1e9;

			if (res->calls < MAX_SAMPLES)
				res->samples[res->calls] = ns > UINT32_MAX ? UINT32_MAX : (uint32_t) ns;
			res->calls++;
		}
	}
	res->finished = now_seconds();

	curl_slist_free_all(headers);
	curl_easy_cleanup(curl);
	envelope_free(&cipher);
	free(body.data);
	free(plain);
	free(request);
	free(sealed);
}

static int
cmp_u32(const void *a, const void *b)
{
	uint32_t	x = *(const uint32_t *) a;
	uint32_t	y = *(const uint32_t *) b;

	return (x > y) - (x < y);
}

/* The nearest-rank percentile of sorted samples, in µs. */
static double
percentile(const uint32_t *sorted, size_t n, double p)
{
	size_t		rank;

	if (n == 0)
		return 0;
	rank = (size_t) (p / 100.0 * n + 0.999999);
	if (rank < 1)
		rank = 1;
	if (rank > n)
		rank = n;
	return sorted[rank - 1] / 1000.0;
}

static void
usage(void)
{
	fprintf(stderr,
			"usage: rawclient --base-url URL --token-url URL [--clients K | --no-fork]\n"
			"                 [--calls N | --seconds S] [--warmup W] [--parse-json] [--verbose]\n"
			"                 [--client-id ID] [--client-secret S] [--username U]\n"
			"                 [--password P] [--encryption-secret S] [--company-id C]\n"
			"                 [--partner-id P] [--card-account-id A]\n"
			"Makes N (or S seconds of) encrypted /cardAccount/get calls per client over\n"
			"one kept-alive connection each; prints calls/s and latency percentiles.\n");
	exit(2);
}

int
main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{"base-url", required_argument, NULL, 'b'},
		{"token-url", required_argument, NULL, 't'},
		{"clients", required_argument, NULL, 'c'},
		{"calls", required_argument, NULL, 'n'},
		{"seconds", required_argument, NULL, 'T'},
		{"warmup", required_argument, NULL, 'w'},
		{"client-id", required_argument, NULL, 1},
		{"client-secret", required_argument, NULL, 2},
		{"username", required_argument, NULL, 3},
		{"password", required_argument, NULL, 4},
		{"encryption-secret", required_argument, NULL, 5},
		{"company-id", required_argument, NULL, 6},
		{"partner-id", required_argument, NULL, 7},
		{"card-account-id", required_argument, NULL, 8},
		{"no-fork", no_argument, NULL, 'F'},
		{"parse-json", no_argument, NULL, 'J'},
		{"verbose", no_argument, NULL, 'v'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0}
	};
	int			c;
	char	   *token;
	ClientResult *results;
	size_t		results_size;
	int			start_pipe[2];
	long		calls = 0;
	long		warmups = 0;
	long		failures = 0;
	long		connects = 0;
	double		started = 0;
	double		finished = 0;
	const char *first_error = NULL;
	uint32_t   *all;
	size_t		nall = 0;
	struct rusage ru;
	double		cpu;
	double		cpu_user;
	int			status;
	bool		child_failed = false;
	const char *why;

	opt.cred = wire_sandbox_credentials;
	while ((c = getopt_long(argc, argv, "b:t:c:n:T:w:vh", longopts, NULL)) != -1)
	{
		switch (c)
		{
			case 'b':
				opt.base_url = optarg;
				break;
			case 't':
				opt.token_url = optarg;
				break;
			case 'c':
				opt.clients = atoi(optarg);
				break;
			case 'n':
				opt.calls = atol(optarg);
				break;
			case 'T':
				opt.seconds = atof(optarg);
				break;
			case 'w':
				opt.warmup = atoi(optarg);
				break;
			case 1:
				opt.cred.client_id = optarg;
				break;
			case 2:
				opt.cred.client_secret = optarg;
				break;
			case 3:
				opt.cred.username = optarg;
				break;
			case 4:
				opt.cred.password = optarg;
				break;
			case 5:
				opt.encryption_secret = optarg;
				break;
			case 6:
				opt.cred.company_id = optarg;
				break;
			case 7:
				opt.cred.partner_id = optarg;
				break;
			case 8:
				opt.card_account_id = optarg;
				break;
			case 'F':
				opt.no_fork = true;
				break;
			case 'J':
				opt.parse_json = true;
				break;
			case 'v':
				opt.verbose = true;
				break;
			default:
				usage();
		}
	}
	if (opt.base_url == NULL || opt.token_url == NULL || opt.clients < 1 ||
		opt.clients > 1024 || opt.calls < 0 || opt.seconds <= 0 || opt.warmup < 0 ||
		(opt.no_fork && opt.clients != 1))
		usage();

	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
		die("curl_global_init failed");
	if ((why = wire_token(&opt.cred, opt.token_url, &token)) != NULL)
		die("%s", why);

	results_size = sizeof(ClientResult) * (size_t) opt.clients;
	results = mmap(NULL, results_size, PROT_READ | PROT_WRITE,
				   MAP_SHARED | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (results == MAP_FAILED)
		die("mmap: %s", strerror(errno));
	if (pipe(start_pipe) != 0)
		die("pipe: %s", strerror(errno));

	fflush(NULL);
	if (opt.no_fork)
	{
		close(start_pipe[0]);
		close(start_pipe[1]);
		run_client(&results[0], token, -1);
	}
	for (int i = 0; i < opt.clients && !opt.no_fork; i++)
	{
		pid_t		pid = fork();

		if (pid < 0)
			die("fork: %s", strerror(errno));
		if (pid == 0)
		{
			close(start_pipe[1]);
			run_client(&results[i], token, start_pipe[0]);
			_exit(results[i].failures > 0 ? 1 : 0);
		}
	}
	if (!opt.no_fork)
		close(start_pipe[0]);
	/* Let the clients warm up (token, connection), then start them all. */
	if (!opt.no_fork)
	{
		bool		ready = false;

		while (!ready)
		{
			ready = true;
			for (int i = 0; i < opt.clients; i++)
				if (results[i].warmup_calls < opt.warmup)
					ready = false;
			if (!ready)
				usleep(1000);
			/* A dead child never gets ready: don't wait forever. */
			if (waitpid(-1, &status, WNOHANG) > 0)
			{
				child_failed = true;
				break;
			}
		}
	}
	if (!opt.no_fork)
		close(start_pipe[1]);

	while (wait(&status) > 0)
		if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
			child_failed = true;
	getrusage(opt.no_fork ? RUSAGE_SELF : RUSAGE_CHILDREN, &ru);
	cpu_user = ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6;
	cpu = cpu_user + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;

	for (int i = 0; i < opt.clients; i++)
	{
		ClientResult *r = &results[i];

		calls += r->calls;
		warmups += r->warmup_calls;
		failures += r->failures;
		connects += r->connects;
		if (r->failures > 0 && first_error == NULL)
			first_error = r->error;
		if (started == 0 || r->started < started)
			started = r->started;
		if (r->finished > finished)
			finished = r->finished;
	}
	all = malloc(sizeof(uint32_t) * (calls > 0 ? calls : 1));
	if (all == NULL)
		die("out of memory");
	for (int i = 0; i < opt.clients; i++)
	{
		long		n = results[i].calls < MAX_SAMPLES ? results[i].calls : MAX_SAMPLES;

		memcpy(all + nall, results[i].samples, sizeof(uint32_t) * n);
		nall += n;
	}
	qsort(all, nall, sizeof(uint32_t), cmp_u32);

	printf("rawclient clients=%d calls=%ld warmup=%ld seconds=%.3f calls_per_s=%.1f "
		   "p50_us=%.1f p99_us=%.1f cpu_us_per_call=%.1f user_us_per_call=%.1f "
		   "connections=%ld failures=%ld\n",
		   opt.clients, calls, warmups, finished - started,
		   finished > started ? calls / (finished - started) : 0.0,
		   percentile(all, nall, 50), percentile(all, nall, 99),
		   calls + warmups > 0 ? cpu * 1e6 / (calls + warmups) : 0.0,
		   calls + warmups > 0 ? cpu_user * 1e6 / (calls + warmups) : 0.0,
		   connects, failures);
	if (first_error)
		fprintf(stderr, "rawclient: %ld calls failed; first: %s\n", failures, first_error);
	else if (child_failed)
		fprintf(stderr, "rawclient: a client process failed\n");

	explicit_bzero(token, strlen(token));
	free(token);
	free(all);
	munmap(results, results_size);
	curl_global_cleanup();
	return (failures > 0 || child_failed) ? 1 : 0;
}
