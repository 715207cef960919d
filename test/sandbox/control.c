/*-------------------------------------------------------------------------
 *
 * control.c
 *	  The test-only control API under /__sandbox/ (plain JSON, no auth, no
 *	  encryption): health, ledger, request counters, the last request per
 *	  path, OTP lookup, injected spends, token expiry, reset and faults.
 *
 * Control calls are neither counted nor recorded, and faults never apply
 * to them.
 *
 *-------------------------------------------------------------------------
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "state.h"

Faults		faults = {.fail_retry_after = -1};

typedef struct PathCount
{
	char	   *path;
	long		count;
} PathCount;

typedef struct LastRequest
{
	char	   *path;
	char	   *body;
	size_t		len;
	char	   *content_type;
	char	   *partner_id;
} LastRequest;

static long total_requests;
static long connections;
static long in_flight;			/* requests being handled right now */
static long max_in_flight;		/* the most at once since the reset */
static long grants_password;
static long grants_refresh;
static PathCount *paths;
static int	npaths;
static int	paths_cap;
static LastRequest *lasts;
static int	nlasts;
static int	lasts_cap;

void
faults_clear(void)
{
	free(faults.biz_message);
	memset(&faults, 0, sizeof(faults));
	faults.fail_retry_after = -1;
	api_pending_clear();
}

static bool
path_matches(const char *sel, const char *path)
{
	static const char prefix[] = "/api/v0/partner/enKashCard";

	return strcmp(sel, path) == 0 ||
		(strncmp(path, prefix, sizeof(prefix) - 1) == 0 &&
		 strcmp(path + sizeof(prefix) - 1, sel) == 0);
}

/* caller holds sandbox_lock: does this call take the fault? */
bool
fault_take(FaultSel *sel, const char *path)
{
	if (sel->count <= 0)
		return false;
	if (sel->path[0] && (path == NULL || !path_matches(sel->path, path)))
		return false;
	if (sel->skip > 0)
	{
		sel->skip--;
		return false;
	}
	sel->count--;
	return true;
}

/* caller holds sandbox_lock: the latency injected before a call on path */
long
faults_latency(const char *path)
{
	long		ms = faults.latency_ms;

	for (int i = 0; i < faults.npath_latency; i++)
		if (path_matches(faults.path_latency[i].path, path))
			ms += faults.path_latency[i].ms;
	return ms;
}

void
control_reset_counters(void)
{
	int			i;

	for (i = 0; i < npaths; i++)
		free(paths[i].path);
	for (i = 0; i < nlasts; i++)
	{
		free(lasts[i].path);
		free(lasts[i].body);
		free(lasts[i].content_type);
		free(lasts[i].partner_id);
	}
	free(paths);
	free(lasts);
	paths = NULL;
	lasts = NULL;
	npaths = paths_cap = nlasts = lasts_cap = 0;
	total_requests = connections = grants_password = grants_refresh = 0;
	max_in_flight = in_flight;
}

/* Brackets the handling of a non-control request, for max_in_flight. */
void
control_request_begin(void)
{
	pthread_mutex_lock(&sandbox_lock);
	in_flight++;
	if (in_flight > max_in_flight)
		max_in_flight = in_flight;
	pthread_mutex_unlock(&sandbox_lock);
}

void
control_request_end(void)
{
	pthread_mutex_lock(&sandbox_lock);
	in_flight--;
	pthread_mutex_unlock(&sandbox_lock);
}

void
control_note_connection(void)
{
	pthread_mutex_lock(&sandbox_lock);
	connections++;
	pthread_mutex_unlock(&sandbox_lock);
}

/* caller holds sandbox_lock; counts successful grants only */
void
control_note_grant(const char *grant_type)
{
	if (strcmp(grant_type, "password") == 0)
		grants_password++;
	else if (strcmp(grant_type, "refresh_token") == 0)
		grants_refresh++;
}

static char *
dup_or_null(const char *s)
{
	return s ? sb_strdup(s) : NULL;
}

/* count a non-control request and keep its raw body (never Authorization) */
void
control_note_request(SandboxRequest *req)
{
	const char *ct = MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND,
												 "Content-Type");
	const char *partner = MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND,
													  "partnerId");
	LastRequest *l = NULL;
	int			i;

	pthread_mutex_lock(&sandbox_lock);
	total_requests++;
	for (i = 0; i < npaths; i++)
		if (strcmp(paths[i].path, req->path) == 0)
			break;
	if (i == npaths)
	{
		grow_array((void **) &paths, &paths_cap, npaths + 1, sizeof(PathCount));
		paths[npaths].path = sb_strdup(req->path);
		paths[npaths].count = 0;
		npaths++;
	}
	paths[i].count++;

	for (i = 0; i < nlasts; i++)
		if (strcmp(lasts[i].path, req->path) == 0)
			l = &lasts[i];
	if (l == NULL)
	{
		grow_array((void **) &lasts, &lasts_cap, nlasts + 1, sizeof(LastRequest));
		l = &lasts[nlasts++];
		l->path = sb_strdup(req->path);
	}
	else
	{
		free(l->body);
		free(l->content_type);
		free(l->partner_id);
	}
	l->body = sb_malloc(req->body_len + 1);
	memcpy(l->body, req->body, req->body_len);
	l->body[req->body_len] = '\0';
	l->len = req->body_len;
	l->content_type = dup_or_null(ct);
	l->partner_id = dup_or_null(partner);
	pthread_mutex_unlock(&sandbox_lock);
}

static json_t *
string_or_null(const char *s)
{
	return s ? json_string(s) : json_null();
}

/* ---- faults ---- */

static const char *const mode_names[] = {
	"none", "malformed", "truncated", "wrong_key", "bad_base64", "bad_padding",
	"deep_json", "no_code", "huge", "drip", "redirect", "huge_number",
	"escaped_slash", NULL
};

static const char *const lookup_names[] = {
	"records", "content", "single", "empty", "others", "unreadable", "decline",
	"not_found", "wrong_amount", "wrong_card", "paged", NULL
};

static const char *const proc_names[] = {
	"none", "apply_later", "answer_later", "lose", NULL
};

static bool
get_count(json_t *obj, const char *key, int *out, char *err, size_t errlen)
{
	json_t	   *v = json_object_get(obj, key);

	if (!json_is_integer(v) || json_integer_value(v) < 0 ||
		json_integer_value(v) > 1000000000)
	{
		snprintf(err, errlen, "%s must be a non-negative integer", key);
		return false;
	}
	*out = (int) json_integer_value(v);
	return true;
}

/* count (required), skip and path (optional) of a fault */
static bool
get_sel(json_t *obj, FaultSel *sel, char *err, size_t errlen)
{
	json_t	   *v;

	memset(sel, 0, sizeof(*sel));
	if (!json_is_object(obj) || !get_count(obj, "count", &sel->count, err, errlen))
		return false;
	if (json_object_get(obj, "skip") && !get_count(obj, "skip", &sel->skip, err, errlen))
		return false;
	v = json_object_get(obj, "path");
	if (v && !json_is_null(v))
	{
		if (!json_is_string(v) || strlen(json_string_value(v)) >= FAULT_PATH_LEN)
		{
			snprintf(err, errlen, "path must be a string shorter than %d", FAULT_PATH_LEN);
			return false;
		}
		strcpy(sel->path, json_string_value(v));
	}
	return true;
}

/* index of name in names (from first), or -1 */
static int
name_index(const char *const *names, int first, const char *name)
{
	for (int i = first; name && names[i]; i++)
		if (strcmp(name, names[i]) == 0)
			return i;
	return -1;
}

static bool
fault_error(char *err, size_t errlen, const char *msg)
{
	snprintf(err, errlen, "%s", msg);
	return false;
}

/* validate everything first, then apply, so a bad request changes nothing */
static bool
faults_apply(json_t *body, char *err, size_t errlen)
{
	Faults		f;
	json_t	   *v;
	json_t	   *sub;
	const char *biz = NULL;

	if (!json_is_object(body))
	{
		snprintf(err, errlen, "body must be a JSON object");
		return false;
	}
	f = faults;
	if (json_is_true(json_object_get(body, "clear")))
	{
		memset(&f, 0, sizeof(f));
		f.fail_retry_after = -1;
	}
	if ((v = json_object_get(body, "latency_ms")) != NULL)
	{
		if (!json_is_integer(v) || json_integer_value(v) < 0 ||
			json_integer_value(v) > 3600 * 1000)
		{
			snprintf(err, errlen, "latency_ms must be an integer 0..3600000");
			return false;
		}
		f.latency_ms = (long) json_integer_value(v);
	}
	if ((sub = json_object_get(body, "fail")) != NULL)
	{
		if (!get_sel(sub, &f.fail, err, errlen))
			return fault_error(err, errlen, "fail needs status and count");
		v = json_object_get(sub, "status");
		if (!json_is_integer(v) || json_integer_value(v) < 100 ||
			json_integer_value(v) > 599)
			return fault_error(err, errlen, "fail.status must be an HTTP status");
		f.fail_status = (int) json_integer_value(v);
		f.fail_retry_after = -1;
		v = json_object_get(sub, "retry_after");
		if (v && !json_is_null(v))
		{
			if (!json_is_integer(v) || json_integer_value(v) < 0)
				return fault_error(err, errlen, "fail.retry_after must be seconds");
			f.fail_retry_after = (int) json_integer_value(v);
		}
	}
	if ((sub = json_object_get(body, "business_error")) != NULL)
	{
		if (!get_sel(sub, &f.biz, err, errlen))
			return fault_error(err, errlen, "business_error needs count");
		v = json_object_get(sub, "message");
		if (v && !json_is_string(v))
			return fault_error(err, errlen, "business_error.message must be a string");
		biz = v ? json_string_value(v) : "Injected business error";
	}
	if ((sub = json_object_get(body, "drop")) != NULL)
	{
		if (!get_sel(sub, &f.drop, err, errlen))
			return fault_error(err, errlen, "drop needs count");
		f.drop_after_apply = json_is_true(json_object_get(sub, "after_apply"));
	}
	if ((sub = json_object_get(body, "response")) != NULL)
	{
		int			i;

		if (!get_sel(sub, &f.resp, err, errlen))
			return fault_error(err, errlen, "response needs mode and count");
		i = name_index(mode_names, 1, json_string_value(json_object_get(sub, "mode")));
		if (i < 0)
			return fault_error(err, errlen, "unknown response mode");
		f.resp_mode = (ResponseMode) i;
	}
	if ((sub = json_object_get(body, "lookup")) != NULL)
	{
		int			i;

		if (!get_sel(sub, &f.lookup, err, errlen))
			return fault_error(err, errlen, "lookup needs mode and count");
		i = name_index(lookup_names, 0, json_string_value(json_object_get(sub, "mode")));
		if (i < 0)
			return fault_error(err, errlen, "unknown lookup mode");
		f.lookup_mode = (LookupMode) i;
		v = json_object_get(sub, "message");
		if (v && (!json_is_string(v) || strlen(json_string_value(v)) >= FAULT_PATH_LEN))
			return fault_error(err, errlen, "lookup.message must be a short string");
		snprintf(f.lookup_message, sizeof(f.lookup_message), "%s",
				 v ? json_string_value(v) : "");
	}
	if ((sub = json_object_get(body, "processing")) != NULL)
	{
		int			i;

		if (!get_sel(sub, &f.proc, err, errlen))
			return fault_error(err, errlen, "processing needs mode, ms and count");
		i = name_index(proc_names, 1, json_string_value(json_object_get(sub, "mode")));
		v = json_object_get(sub, "ms");
		if (i < 0 || !json_is_integer(v) || json_integer_value(v) < 0 ||
			json_integer_value(v) > 3600 * 1000)
			return fault_error(err, errlen, "processing needs a mode and ms 0..3600000");
		f.proc_mode = (ProcessingMode) i;
		f.proc_ms = (long) json_integer_value(v);
	}
	if ((v = json_object_get(body, "list_shape")) != NULL)
	{
		const char *shape = json_string_value(v);

		if (shape == NULL || (strcmp(shape, "records") != 0 && strcmp(shape, "content") != 0))
			return fault_error(err, errlen, "list_shape is records or content");
		f.list_records = strcmp(shape, "records") == 0;
	}
	if ((sub = json_object_get(body, "path_latency")) != NULL)
	{
		const char *p;

		if (!json_is_object(sub) || json_object_size(sub) > MAX_PATH_LATENCY)
			return fault_error(err, errlen, "path_latency must be an object of at most 16 paths");
		f.npath_latency = 0;
		json_object_foreach(sub, p, v)
		{
			if (strlen(p) >= FAULT_PATH_LEN || !json_is_integer(v) ||
				json_integer_value(v) < 0 || json_integer_value(v) > 3600 * 1000)
				return fault_error(err, errlen, "path_latency maps paths to ms 0..3600000");
			strcpy(f.path_latency[f.npath_latency].path, p);
			f.path_latency[f.npath_latency++].ms = (long) json_integer_value(v);
		}
	}

	/* commit: the message string is the only owned member */
	if (biz)
		f.biz_message = sb_strdup(biz);
	else if (f.biz_message == faults.biz_message && f.biz_message)
		f.biz_message = sb_strdup(faults.biz_message);
	free(faults.biz_message);
	faults = f;
	return true;
}

static json_t *
sel_json(const FaultSel *sel)
{
	return json_pack("{s:i, s:i, s:s}", "count", sel->count, "skip", sel->skip,
					 "path", sel->path);
}

static json_t *
faults_json(void)
{
	json_t	   *j = json_object();
	json_t	   *pl = json_object();
	json_t	   *sub;

	for (int i = 0; i < faults.npath_latency; i++)
		json_object_set_new(pl, faults.path_latency[i].path,
							json_integer(faults.path_latency[i].ms));
	json_object_set_new(j, "latency_ms", json_integer(faults.latency_ms));
	json_object_set_new(j, "path_latency", pl);
	sub = sel_json(&faults.fail);
	json_object_set_new(sub, "status", json_integer(faults.fail_status));
	json_object_set_new(sub, "retry_after", json_integer(faults.fail_retry_after));
	json_object_set_new(j, "fail", sub);
	sub = sel_json(&faults.biz);
	json_object_set_new(sub, "message", string_or_null(faults.biz_message));
	json_object_set_new(j, "business_error", sub);
	sub = sel_json(&faults.drop);
	json_object_set_new(sub, "after_apply", json_boolean(faults.drop_after_apply));
	json_object_set_new(j, "drop", sub);
	sub = sel_json(&faults.resp);
	json_object_set_new(sub, "mode", json_string(mode_names[faults.resp_mode]));
	json_object_set_new(j, "response", sub);
	sub = sel_json(&faults.lookup);
	json_object_set_new(sub, "mode", json_string(lookup_names[faults.lookup_mode]));
	json_object_set_new(sub, "message", json_string(faults.lookup_message));
	json_object_set_new(j, "lookup", sub);
	sub = sel_json(&faults.proc);
	json_object_set_new(sub, "mode", json_string(proc_names[faults.proc_mode]));
	json_object_set_new(sub, "ms", json_integer(faults.proc_ms));
	json_object_set_new(j, "processing", sub);
	json_object_set_new(j, "list_shape", json_string(faults.list_records ? "records" : "content"));
	return j;
}

/* ---- the endpoints ---- */

static void
ok_reply(SandboxReply *rep)
{
	reply_json(rep, 200, json_pack("{s:b}", "ok", 1));
}

static void
bad_request(SandboxReply *rep, int status, const char *msg)
{
	reply_json(rep, status, json_pack("{s:b, s:s}", "ok", 0, "error", msg));
}

static json_t *
requests_json(void)
{
	json_t	   *p = json_object();
	int			i;

	for (i = 0; i < npaths; i++)
		json_object_set_new(p, paths[i].path, json_integer(paths[i].count));
	return json_pack("{s:I, s:I, s:I, s:I, s:o, s:{s:I, s:I}, s:o}",
					 "total", (json_int_t) total_requests,
					 "connections", (json_int_t) connections,
					 "in_flight", (json_int_t) in_flight,
					 "max_in_flight", (json_int_t) max_in_flight,
					 "paths", p,
					 "grants", "password", (json_int_t) grants_password,
					 "refresh_token", (json_int_t) grants_refresh,
					 "auth", auth_lock_json());
}

static json_t *
last_request_json(const char *path)
{
	int			i;

	for (i = 0; path && i < nlasts; i++)
	{
		LastRequest *l = &lasts[i];
		char	   *b64;
		json_t	   *body;
		json_t	   *j;

		if (strcmp(l->path, path) != 0)
			continue;
		/* bodies that are not UTF-8 come back as null; body_base64 always works */
		body = json_stringn(l->body, l->len);
		b64 = b64_encode((const unsigned char *) l->body, l->len);
		j = json_pack("{s:s, s:o, s:s, s:o, s:o}",
					  "path", l->path,
					  "body", body ? body : json_null(),
					  "body_base64", b64,
					  "content_type", string_or_null(l->content_type),
					  "partner_id", string_or_null(l->partner_id));
		free(b64);
		return j;
	}
	return NULL;
}

void
control_handle(SandboxRequest *req, SandboxReply *rep)
{
	const char *name = req->path + strlen("/__sandbox/");
	bool		get = strcmp(req->method, "GET") == 0;
	bool		post = strcmp(req->method, "POST") == 0;
	json_t	   *body = NULL;
	json_t	   *j;
	char		err[256];

	if (req->body_too_big)
	{
		bad_request(rep, 413, "body too large");
		return;
	}
	if (post && req->body_len > 0)
	{
		body = json_loadb(req->body, req->body_len, 0, NULL);
		if (body == NULL)
		{
			bad_request(rep, 400, "body is not JSON");
			return;
		}
	}

	pthread_mutex_lock(&sandbox_lock);
	api_apply_due();			/* what "processing" deferred is visible once due */
	if (get && strcmp(name, "health") == 0)
		ok_reply(rep);
	else if (get && strcmp(name, "ledger") == 0)
		reply_json(rep, 200, ledger_json(MHD_lookup_connection_value(req->conn,
																	 MHD_GET_ARGUMENT_KIND,
																	 "reference")));
	else if (get && strcmp(name, "requests") == 0)
		reply_json(rep, 200, requests_json());
	else if (get && strcmp(name, "last-request") == 0)
	{
		j = last_request_json(MHD_lookup_connection_value(req->conn,
														  MHD_GET_ARGUMENT_KIND,
														  "path"));
		if (j)
			reply_json(rep, 200, j);
		else
			bad_request(rep, 404, "no request seen at that path");
	}
	else if (get && strcmp(name, "otp") == 0)
	{
		const char *otp = otp_lookup(MHD_lookup_connection_value(req->conn,
																 MHD_GET_ARGUMENT_KIND,
																 "otpRequestId"));

		if (otp)
			reply_json(rep, 200, json_pack("{s:s}", "otp", otp));
		else
			bad_request(rep, 404, "unknown otpRequestId");
	}
	else if (get && strcmp(name, "faults") == 0)
		reply_json(rep, 200, faults_json());
	else if (get && strcmp(name, "tokens") == 0)
		reply_json(rep, 200, auth_tokens_json());
	else if (post && strcmp(name, "spend") == 0)
	{
		const char *card = json_string_value(json_object_get(body, "enKashCardId"));
		const char *merchant = json_string_value(json_object_get(body, "merchantName"));
		const char *mcc = json_string_value(json_object_get(body, "mcc"));
		const char *ref = json_string_value(json_object_get(body, "pgReferenceNumber"));
		int64_t		amount;
		int			status;

		if (card == NULL ||
			!json_to_paise(json_object_get(body, "amount"), &amount) || amount <= 0)
			bad_request(rep, 400, "enKashCardId and a positive amount are required");
		else if ((status = sandbox_spend(card, amount, merchant ? merchant : "Sandbox Merchant",
										 mcc ? mcc : "5999", ref, err, sizeof(err))) != 200)
			bad_request(rep, status, err);
		else
			ok_reply(rep);
	}
	else if (post && strcmp(name, "credit") == 0)
		reply_json(rep, 200, api_load(body));
	else if (post && strcmp(name, "expire-tokens") == 0)
	{
		auth_expire_all(json_is_true(json_object_get(body, "refresh")));
		ok_reply(rep);
	}
	else if (post && strcmp(name, "unlock") == 0)
	{
		auth_unlock(false);
		ok_reply(rep);
	}
	else if (post && strcmp(name, "reset") == 0)
	{
		auth_unlock(true);
		state_reset();
		control_reset_counters();
		faults_clear();
		ok_reply(rep);
	}
	else if (post && strcmp(name, "faults") == 0)
	{
		if (faults_apply(body, err, sizeof(err)))
			ok_reply(rep);
		else
			bad_request(rep, 400, err);
	}
	else
		bad_request(rep, 404, "unknown control endpoint or method");
	pthread_mutex_unlock(&sandbox_lock);
	json_decref(body);
}
