/*-------------------------------------------------------------------------
 *
 * main.c
 *	  enkash-sandbox: command line, HTTP server (libmicrohttpd, one thread
 *	  per connection so injected latency on one connection does not stall
 *	  others), request collection, routing, reply sending and logging.
 *
 *-------------------------------------------------------------------------
 */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "partner.h"
#include "sandbox.h"

/* requests bigger than this are refused; nothing legitimate comes close */
#define MAX_BODY (16 * 1024 * 1024)

SandboxConfig cfg = {
	.listen = "127.0.0.1",
	.port = 0,
	SANDBOX_PARTNER_FIELDS,
	.token_ttl = 86399,
};

pthread_mutex_t sandbox_lock = PTHREAD_MUTEX_INITIALIZER;
atomic_bool sandbox_shutdown = false;

/* ---- small helpers used everywhere ---- */

void *
sb_malloc(size_t n)
{
	void	   *p = malloc(n ? n : 1);

	if (p == NULL)
	{
		fprintf(stderr, "enkash-sandbox: out of memory\n");
		abort();
	}
	return p;
}

void *
sb_realloc(void *p, size_t n)
{
	p = realloc(p, n ? n : 1);
	if (p == NULL)
	{
		fprintf(stderr, "enkash-sandbox: out of memory\n");
		abort();
	}
	return p;
}

char *
sb_strdup(const char *s)
{
	size_t		n = strlen(s ? s : "") + 1;
	char	   *d = sb_malloc(n);

	memcpy(d, s ? s : "", n);
	return d;
}

void
grow_array(void **arr, int *cap, int need, size_t elsize)
{
	if (need <= *cap)
		return;
	*cap = (*cap == 0) ? 16 : *cap;
	while (*cap < need)
		*cap *= 2;
	*arr = sb_realloc(*arr, (size_t) *cap * elsize);
}

double
monotonic_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

int64_t
wall_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* sleep in slices so a shutdown is not held up by injected latency */
void
sandbox_sleep_ms(long ms)
{
	while (ms > 0 && !sandbox_shutdown)
	{
		long		slice = ms > 50 ? 50 : ms;
		struct timespec ts = {slice / 1000, (slice % 1000) * 1000000L};

		nanosleep(&ts, NULL);
		ms -= slice;
	}
}

void
reply_json(SandboxReply *rep, int status, json_t *obj)
{
	rep->kind = REPLY_NORMAL;
	rep->status = status;
	rep->body = json_dumps(obj, SANDBOX_JSON_FLAGS);
	rep->len = rep->body ? strlen(rep->body) : 0;
	rep->content_type = "application/json";
	json_decref(obj);
}

/* plain JSON {"code":S,"message":"..."}, the shape gateways answer errors in */
void
reply_error(SandboxReply *rep, int status, const char *fmt,...)
{
	char		msg[512];
	va_list		ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	reply_json(rep, status, json_pack("{s:i, s:s}", "code", status, "message", msg));
}

/* ---- HTTP plumbing ---- */

typedef struct DripState
{
	char	   *data;
	size_t		len;
} DripState;

static ssize_t
drip_reader(void *cls, uint64_t pos, char *buf, size_t max)
{
	DripState  *ds = cls;

	if (pos >= ds->len)
		return MHD_CONTENT_READER_END_OF_STREAM;
	sandbox_sleep_ms(200);
	if (sandbox_shutdown || max < 1)
		return MHD_CONTENT_READER_END_WITH_ERROR;
	buf[0] = ds->data[pos];
	return 1;
}

static void
drip_free(void *cls)
{
	DripState  *ds = cls;

	free(ds->data);
	free(ds);
}

static enum MHD_Result
send_reply(SandboxRequest *req, SandboxReply *rep)
{
	struct MHD_Response *resp;
	enum MHD_Result ret;

	if (rep->kind == REPLY_DROP)
	{
		free(rep->body);
		req->status = 0;
		return MHD_NO;			/* MHD closes the socket, client hears nothing */
	}
	if (rep->kind == REPLY_DRIP)
	{
		DripState  *ds = sb_malloc(sizeof(DripState));

		ds->data = rep->body;
		ds->len = rep->len;
		resp = MHD_create_response_from_callback(ds->len, 1, drip_reader, ds,
												 drip_free);
	}
	else if (rep->kind == REPLY_REDIRECT)
	{
		free(rep->body);
		resp = MHD_create_response_from_buffer(0, "", MHD_RESPMEM_PERSISTENT);
		MHD_add_response_header(resp, "Location", rep->location);
		rep->status = 302;
	}
	else
		resp = MHD_create_response_from_buffer(rep->len, rep->body ? rep->body : "",
											   rep->body ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT);
	if (resp == NULL)
		return MHD_NO;
	if (rep->content_type && rep->kind != REPLY_REDIRECT)
		MHD_add_response_header(resp, "Content-Type", rep->content_type);
	if (rep->retry_after >= 0)
	{
		char		buf[32];

		snprintf(buf, sizeof(buf), "%d", rep->retry_after);
		MHD_add_response_header(resp, "Retry-After", buf);
	}
	req->status = rep->status;
	ret = MHD_queue_response(req->conn, rep->status, resp);
	MHD_destroy_response(resp);
	return ret;
}

static void route_api(SandboxRequest *req, SandboxReply *rep);

static void
route(SandboxRequest *req, SandboxReply *rep)
{
	if (strncmp(req->path, "/__sandbox/", 11) == 0)
	{
		control_handle(req, rep);
		return;
	}

	control_note_request(req);
	control_request_begin();
	route_api(req, rep);
	control_request_end();
}

/* token and API requests: everything but the control API */
static void
route_api(SandboxRequest *req, SandboxReply *rep)
{
	if (req->body_too_big)
	{
		reply_error(rep, 413, "Request body too large");
		return;
	}
	if (strcmp(req->path, "/oauth/token") == 0)
	{
		long		latency;

		pthread_mutex_lock(&sandbox_lock);
		latency = faults_latency(req->path);
		pthread_mutex_unlock(&sandbox_lock);
		sandbox_sleep_ms(latency);
		if (strcmp(req->method, "POST") != 0)
			reply_error(rep, 405, "Method not allowed");
		else
			auth_token_endpoint(req, rep);
		return;
	}
	if (strncmp(req->path, "/api/", 5) == 0)
	{
		api_handle(req, rep);
		return;
	}
	reply_error(rep, 404, "Not found");
}

static enum MHD_Result
access_handler(void *cls, struct MHD_Connection *conn, const char *url,
			   const char *method, const char *version,
			   const char *upload_data, size_t *upload_data_size,
			   void **con_cls)
{
	SandboxRequest *req = *con_cls;
	SandboxReply rep;

	(void) cls;
	(void) version;
	if (req == NULL)
	{
		req = sb_malloc(sizeof(SandboxRequest));
		memset(req, 0, sizeof(*req));
		req->conn = conn;
		req->method = sb_strdup(method);
		req->path = sb_strdup(url);
		req->body = sb_malloc(1);
		req->body[0] = '\0';
		req->start = monotonic_now();
		*con_cls = req;
		return MHD_YES;
	}
	if (*upload_data_size > 0)
	{
		if (req->body_len + *upload_data_size > MAX_BODY)
			req->body_too_big = true;
		else
		{
			req->body = sb_realloc(req->body, req->body_len + *upload_data_size + 1);
			memcpy(req->body + req->body_len, upload_data, *upload_data_size);
			req->body_len += *upload_data_size;
			req->body[req->body_len] = '\0';
		}
		*upload_data_size = 0;
		return MHD_YES;
	}

	memset(&rep, 0, sizeof(rep));
	rep.retry_after = -1;
	route(req, &rep);
	return send_reply(req, &rep);
}

static void
request_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
				  enum MHD_RequestTerminationCode toe)
{
	SandboxRequest *req = *con_cls;

	(void) cls;
	(void) conn;
	(void) toe;
	if (req == NULL)
		return;
	/* never log bodies, headers or query strings: they may carry secrets */
	if (!cfg.quiet)
	{
		char		status[16];

		if (req->status == 0)
			snprintf(status, sizeof(status), "dropped");
		else
			snprintf(status, sizeof(status), "%d", req->status);
		fprintf(stderr, "%s %s %s %.1fms\n", req->method, req->path, status,
				(monotonic_now() - req->start) * 1000.0);
	}
	free(req->method);
	free(req->path);
	free(req->body);
	free(req);
	*con_cls = NULL;
}

static void
connection_notify(void *cls, struct MHD_Connection *conn, void **socket_ctx,
				  enum MHD_ConnectionNotificationCode toe)
{
	(void) cls;
	(void) conn;
	(void) socket_ctx;
	if (toe == MHD_CONNECTION_NOTIFY_STARTED)
		control_note_connection();
}

static char *
read_file(const char *path)
{
	FILE	   *f = fopen(path, "rb");
	char	   *buf;
	long		n;

	if (f == NULL)
		return NULL;
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	fseek(f, 0, SEEK_SET);
	buf = sb_malloc(n + 1);
	if (n < 0 || fread(buf, 1, n, f) != (size_t) n)
	{
		fclose(f);
		free(buf);
		return NULL;
	}
	buf[n] = '\0';
	fclose(f);
	return buf;
}

static int
write_port_file(const char *path, int port)
{
	size_t		n = strlen(path) + 32;
	char	   *tmp = sb_malloc(n);
	FILE	   *f;

	/* write then rename, so a reader never sees a half written number */
	snprintf(tmp, n, "%s.tmp.%d", path, (int) getpid());
	f = fopen(tmp, "w");
	if (f == NULL || fprintf(f, "%d\n", port) < 0 || fclose(f) != 0 ||
		rename(tmp, path) != 0)
	{
		fprintf(stderr, "enkash-sandbox: cannot write port file %s: %s\n",
				path, strerror(errno));
		free(tmp);
		return -1;
	}
	free(tmp);
	return 0;
}

static void
usage(FILE *out)
{
	fprintf(out,
			"usage: enkash-sandbox [options]\n"
			"  --listen ADDR             127.0.0.1 (default) or ::1\n"
			"  --port N                  0 = kernel picks (default 0)\n"
			"  --port-file PATH          write the bound port there once listening\n"
			"  --client-id ID            default sandbox-client\n"
			"  --client-secret S         default sandbox-secret-1\n"
			"  --username U              default 9999999999\n"
			"  --password P              default sandbox-password\n"
			"  --company-id C            default CEKSANDBOX1\n"
			"  --partner-id P            default CRSANDBOX1\n"
			"  --encryption-secret S     default: the client secret\n"
			"  --token-ttl SECONDS       default 86399\n"
			"  --no-encrypt              plain JSON requests and responses\n"
			"  --tls-cert FILE --tls-key FILE   serve HTTPS\n"
			"  --quiet                   no request log on stderr\n"
			"  --selftest-vectors FILE   check the envelope against test vectors and exit\n");
}

int
main(int argc, char **argv)
{
	static struct option opts[] = {
		{"listen", required_argument, NULL, 'l'},
		{"port", required_argument, NULL, 'p'},
		{"port-file", required_argument, NULL, 'f'},
		{"client-id", required_argument, NULL, 'c'},
		{"client-secret", required_argument, NULL, 's'},
		{"username", required_argument, NULL, 'u'},
		{"password", required_argument, NULL, 'w'},
		{"company-id", required_argument, NULL, 'C'},
		{"partner-id", required_argument, NULL, 'P'},
		{"encryption-secret", required_argument, NULL, 'e'},
		{"token-ttl", required_argument, NULL, 't'},
		{"no-encrypt", no_argument, NULL, 'n'},
		{"tls-cert", required_argument, NULL, 'T'},
		{"tls-key", required_argument, NULL, 'K'},
		{"quiet", no_argument, NULL, 'q'},
		{"selftest-vectors", required_argument, NULL, 'V'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0}
	};
	int			c;
	const char *selftest = NULL;
	char	   *cert = NULL;
	char	   *key = NULL;
	unsigned int flags;
	struct MHD_Daemon *daemon;
	const union MHD_DaemonInfo *info;
	struct sockaddr_in sin;
	struct sockaddr_in6 sin6;
	bool		v6;
	int			port;
	sigset_t	sigs;
	int			sig;
	char	   *end;

	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1)
	{
		switch (c)
		{
			case 'l':
				cfg.listen = optarg;
				break;
			case 'p':
				cfg.port = (int) strtol(optarg, &end, 10);
				if (*end || cfg.port < 0 || cfg.port > 65535)
				{
					fprintf(stderr, "enkash-sandbox: bad --port %s\n", optarg);
					return 2;
				}
				break;
			case 'f':
				cfg.port_file = optarg;
				break;
			case 'c':
				cfg.client_id = optarg;
				break;
			case 's':
				cfg.client_secret = optarg;
				break;
			case 'u':
				cfg.username = optarg;
				break;
			case 'w':
				cfg.password = optarg;
				break;
			case 'C':
				cfg.company_id = optarg;
				break;
			case 'P':
				cfg.partner_id = optarg;
				break;
			case 'e':
				cfg.encryption_secret = optarg;
				break;
			case 't':
				cfg.token_ttl = strtol(optarg, &end, 10);
				if (*end || cfg.token_ttl < 0)
				{
					fprintf(stderr, "enkash-sandbox: bad --token-ttl %s\n", optarg);
					return 2;
				}
				break;
			case 'n':
				cfg.no_encrypt = true;
				break;
			case 'T':
				cfg.tls_cert = optarg;
				break;
			case 'K':
				cfg.tls_key = optarg;
				break;
			case 'q':
				cfg.quiet = true;
				break;
			case 'V':
				selftest = optarg;
				break;
			case 'h':
				usage(stdout);
				return 0;
			default:
				usage(stderr);
				return 2;
		}
	}
	if (optind < argc)
	{
		usage(stderr);
		return 2;
	}
	if (selftest)
		return envelope_selftest(selftest);

	if (cfg.encryption_secret == NULL)
		cfg.encryption_secret = cfg.client_secret;
	envelope_derive_key(cfg.encryption_secret, cfg.key);

	if (strcmp(cfg.listen, "127.0.0.1") == 0 || strcmp(cfg.listen, "localhost") == 0)
		v6 = false;
	else if (strcmp(cfg.listen, "::1") == 0)
		v6 = true;
	else
	{
		fprintf(stderr, "enkash-sandbox: --listen must be 127.0.0.1 or ::1\n");
		return 2;
	}
	if ((cfg.tls_cert == NULL) != (cfg.tls_key == NULL))
	{
		fprintf(stderr, "enkash-sandbox: --tls-cert and --tls-key go together\n");
		return 2;
	}
	if (cfg.tls_cert)
	{
		cert = read_file(cfg.tls_cert);
		key = read_file(cfg.tls_key);
		if (cert == NULL || key == NULL)
		{
			fprintf(stderr, "enkash-sandbox: cannot read TLS certificate or key\n");
			return 2;
		}
	}

	state_reset();

	/*
	 * Block the signals before MHD starts its threads, so they inherit the
	 * mask and the main thread alone takes SIGTERM/SIGINT via sigwait.
	 */
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGINT);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);
	signal(SIGPIPE, SIG_IGN);

	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_port = htons(cfg.port);
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	memset(&sin6, 0, sizeof(sin6));
	sin6.sin6_family = AF_INET6;
	sin6.sin6_port = htons(cfg.port);
	sin6.sin6_addr = in6addr_loopback;

	flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD;
	if (!cfg.quiet)
		flags |= MHD_USE_ERROR_LOG;
	if (v6)
		flags |= MHD_USE_IPv6;
	if (cert)
		flags |= MHD_USE_TLS;

	daemon = MHD_start_daemon(flags, (uint16_t) cfg.port, NULL, NULL,
							  access_handler, NULL,
							  MHD_OPTION_SOCK_ADDR,
							  v6 ? (struct sockaddr *) &sin6 : (struct sockaddr *) &sin,
							  MHD_OPTION_NOTIFY_COMPLETED, request_completed, NULL,
							  MHD_OPTION_NOTIFY_CONNECTION, connection_notify, NULL,
							  MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int) 600,
							  cert ? MHD_OPTION_HTTPS_MEM_CERT : MHD_OPTION_END, cert,
							  MHD_OPTION_HTTPS_MEM_KEY, key,
							  MHD_OPTION_END);
	if (daemon == NULL)
	{
		fprintf(stderr, "enkash-sandbox: cannot start HTTP server on %s port %d\n",
				cfg.listen, cfg.port);
		return 1;
	}
	info = MHD_get_daemon_info(daemon, MHD_DAEMON_INFO_BIND_PORT);
	port = info ? info->port : cfg.port;
	if (cfg.port_file && write_port_file(cfg.port_file, port) != 0)
	{
		MHD_stop_daemon(daemon);
		return 1;
	}
	if (v6)
		printf("enkash-sandbox listening on [::1]:%d\n", port);
	else
		printf("enkash-sandbox listening on 127.0.0.1:%d\n", port);
	fflush(stdout);

	do
	{
		if (sigwait(&sigs, &sig) != 0)
			break;
	} while (sig != SIGTERM && sig != SIGINT);

	atomic_store(&sandbox_shutdown, true);
	MHD_stop_daemon(daemon);
	free(cert);
	free(key);
	/* free the heap so valgrind runs show real leaks only */
	pthread_mutex_lock(&sandbox_lock);
	state_free();
	auth_free();
	faults_clear();
	control_reset_counters();
	pthread_mutex_unlock(&sandbox_lock);
	return 0;
}
