/*-------------------------------------------------------------------------
 *
 * auth.c
 *	  The OAuth2 token endpoint (Spring style password and refresh_token
 *	  grants behind HTTP Basic client authentication) and the store of
 *	  issued access and refresh tokens.
 *
 * Issued tokens survive /__sandbox/reset on purpose: a test resets the
 * state between cases without forcing the client to log in again.
 *
 * Like EnKash, the partner account locks after three consecutive refused
 * password grants: a locked account refuses even the right password until
 * /__sandbox/unlock (or a reset).  Refused grants are counted by type.
 *
 *-------------------------------------------------------------------------
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/rand.h>

#include "sandbox.h"

typedef struct Token
{
	char		access[33];
	char		refresh[33];
	time_t		access_expires;
	bool		refresh_valid;
} Token;

static Token *tokens;
static int	ntokens;
static int	tokens_cap;

#define LOCK_AFTER_FAILURES 3

/* guarded by sandbox_lock */
static int	consecutive_failures;
static bool account_locked;
static long failed_password;
static long failed_refresh;

void
random_hex(char *out, int nbytes)
{
	unsigned char buf[64];
	int			i;

	if (nbytes > 64)
		nbytes = 64;
	if (RAND_bytes(buf, nbytes) != 1)
	{
		fprintf(stderr, "enkash-sandbox: RAND_bytes failed\n");
		abort();
	}
	for (i = 0; i < nbytes; i++)
		sprintf(out + 2 * i, "%02x", buf[i]);
	out[2 * nbytes] = '\0';
}

void
auth_free(void)
{
	free(tokens);
	tokens = NULL;
	ntokens = tokens_cap = 0;
}

/* caller holds sandbox_lock; with counters_too, the refused grants too */
void
auth_unlock(bool counters_too)
{
	consecutive_failures = 0;
	account_locked = false;
	if (counters_too)
		failed_password = failed_refresh = 0;
}

/* caller holds sandbox_lock */
json_t *
auth_lock_json(void)
{
	return json_pack("{s:I, s:I, s:b}",
					 "failed_password", (json_int_t) failed_password,
					 "failed_refresh_token", (json_int_t) failed_refresh,
					 "account_locked", account_locked);
}

/* Counts a refused grant; three password ones in a row lock the account. */
static void
note_refused(const char *grant)
{
	pthread_mutex_lock(&sandbox_lock);
	if (grant && strcmp(grant, "password") == 0)
	{
		failed_password++;
		if (++consecutive_failures >= LOCK_AFTER_FAILURES)
			account_locked = true;
	}
	else if (grant && strcmp(grant, "refresh_token") == 0)
		failed_refresh++;
	pthread_mutex_unlock(&sandbox_lock);
}

/* caller holds sandbox_lock */
/* Every token issued so far, so that tests can look for leaks of them. */
json_t *
auth_tokens_json(void)
{
	json_t	   *list = json_array();

	for (int i = 0; i < ntokens; i++)
	{
		json_array_append_new(list, json_string(tokens[i].access));
		json_array_append_new(list, json_string(tokens[i].refresh));
	}
	return json_pack("{s:o}", "tokens", list);
}

void
auth_expire_all(bool refresh_too)
{
	int			i;

	for (i = 0; i < ntokens; i++)
	{
		tokens[i].access_expires = 0;
		if (refresh_too)
			tokens[i].refresh_valid = false;
	}
}

/* caller holds sandbox_lock */
bool
auth_check_bearer(const char *authorization)
{
	const char *tok;
	time_t		now = time(NULL);
	int			i;

	if (authorization == NULL || strncasecmp(authorization, "Bearer ", 7) != 0)
		return false;
	tok = authorization + 7;
	while (*tok == ' ')
		tok++;
	for (i = 0; i < ntokens; i++)
	{
		if (strcmp(tokens[i].access, tok) == 0)
			return now < tokens[i].access_expires;
	}
	return false;
}

/* in-place application/x-www-form-urlencoded decoding */
static void
url_decode(char *s)
{
	char	   *o = s;

	for (; *s; s++)
	{
		if (*s == '+')
			*o++ = ' ';
		else if (*s == '%' && isxdigit((unsigned char) s[1]) &&
				 isxdigit((unsigned char) s[2]))
		{
			char		hex[3] = {s[1], s[2], 0};

			*o++ = (char) strtol(hex, NULL, 16);
			s += 2;
		}
		else
			*o++ = *s;
	}
	*o = '\0';
}

/* value of form field name in a decoded copy of body, or NULL; malloc'd */
static char *
form_value(const char *body, size_t len, const char *name)
{
	char	   *copy = sb_malloc(len + 1);
	char	   *save = NULL;
	char	   *pair;
	char	   *result = NULL;

	memcpy(copy, body, len);
	copy[len] = '\0';
	for (pair = strtok_r(copy, "&", &save); pair; pair = strtok_r(NULL, "&", &save))
	{
		char	   *eq = strchr(pair, '=');

		if (eq == NULL)
			continue;
		*eq = '\0';
		url_decode(pair);
		if (strcmp(pair, name) == 0)
		{
			url_decode(eq + 1);
			result = sb_strdup(eq + 1);
			break;
		}
	}
	free(copy);
	return result;
}

static bool
basic_auth_ok(const char *header)
{
	const char *b64;
	unsigned char *raw;
	size_t		rawlen;
	size_t		idlen = strlen(cfg.client_id);
	size_t		secretlen = strlen(cfg.client_secret);
	bool		ok;

	if (header == NULL || strncasecmp(header, "Basic ", 6) != 0)
		return false;
	b64 = header + 6;
	while (*b64 == ' ')
		b64++;
	raw = b64_decode(b64, strlen(b64), &rawlen);
	if (raw == NULL)
		return false;
	ok = rawlen == idlen + 1 + secretlen &&
		memcmp(raw, cfg.client_id, idlen) == 0 &&
		raw[idlen] == ':' &&
		memcmp(raw + idlen + 1, cfg.client_secret, secretlen) == 0;
	free(raw);
	return ok;
}

static void
bad_credentials(SandboxReply *rep)
{
	reply_json(rep, 401, json_pack("{s:s, s:s}", "error", "invalid_grant",
								   "error_description", "Bad credentials"));
}

static void
invalid_request(SandboxReply *rep, const char *why)
{
	reply_json(rep, 400, json_pack("{s:s, s:s}", "error", "invalid_request",
								   "error_description", why));
}

static bool
is_form_content_type(const char *ct)
{
	static const char want[] = "application/x-www-form-urlencoded";

	if (ct == NULL || strncasecmp(ct, want, sizeof(want) - 1) != 0)
		return false;
	ct += sizeof(want) - 1;
	return *ct == '\0' || *ct == ';' || *ct == ' ';
}

/* POST /oauth/token */
void
auth_token_endpoint(SandboxRequest *req, SandboxReply *rep)
{
	const char *authz = MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND,
													"Authorization");
	const char *ct = MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND,
												 "Content-Type");
	char	   *grant = NULL;
	char	   *f1 = NULL;
	char	   *f2 = NULL;
	char	   *f3 = NULL;
	Token		t;
	bool		locked;

	if (!is_form_content_type(ct))
	{
		invalid_request(rep, "Content-Type must be application/x-www-form-urlencoded");
		return;
	}
	grant = form_value(req->body, req->body_len, "grant_type");
	if (!basic_auth_ok(authz))
	{
		note_refused(grant);
		bad_credentials(rep);
		goto done;
	}
	if (grant == NULL || grant[0] == '\0')
	{
		invalid_request(rep, "Missing grant type");
		goto done;
	}

	memset(&t, 0, sizeof(t));
	if (strcmp(grant, "password") == 0)
	{
		f1 = form_value(req->body, req->body_len, "username");
		f2 = form_value(req->body, req->body_len, "password");
		f3 = form_value(req->body, req->body_len, "clientId");
		if (f1 == NULL || f2 == NULL || f3 == NULL)
		{
			invalid_request(rep, "username, password and clientId are required");
			goto done;
		}
		pthread_mutex_lock(&sandbox_lock);
		locked = account_locked;
		pthread_mutex_unlock(&sandbox_lock);
		if (locked)
		{
			note_refused(grant);
			reply_json(rep, 401, json_pack("{s:s, s:s}", "error", "invalid_grant",
										   "error_description", "User account is locked"));
			goto done;
		}
		if (strcmp(f1, cfg.username) != 0 || strcmp(f2, cfg.password) != 0 ||
			strcmp(f3, cfg.company_id) != 0)
		{
			note_refused(grant);
			bad_credentials(rep);
			goto done;
		}
	}
	else if (strcmp(grant, "refresh_token") == 0)
	{
		bool		found = false;
		int			i;

		f1 = form_value(req->body, req->body_len, "refresh_token");
		if (f1 == NULL || f1[0] == '\0')
		{
			invalid_request(rep, "Missing refresh_token");
			goto done;
		}
		pthread_mutex_lock(&sandbox_lock);
		for (i = 0; i < ntokens; i++)
			if (tokens[i].refresh_valid && strcmp(tokens[i].refresh, f1) == 0)
				found = true;
		pthread_mutex_unlock(&sandbox_lock);
		if (!found)
		{
			note_refused(grant);
			bad_credentials(rep);
			goto done;
		}
	}
	else
	{
		invalid_request(rep, "Unsupported grant type");
		goto done;
	}

	random_hex(t.access, 16);
	random_hex(t.refresh, 16);
	t.access_expires = time(NULL) + cfg.token_ttl;
	t.refresh_valid = true;
	pthread_mutex_lock(&sandbox_lock);
	grow_array((void **) &tokens, &tokens_cap, ntokens + 1, sizeof(Token));
	tokens[ntokens++] = t;
	if (strcmp(grant, "password") == 0)
		consecutive_failures = 0;
	control_note_grant(grant);
	pthread_mutex_unlock(&sandbox_lock);

	reply_json(rep, 200, json_pack("{s:s, s:s, s:s, s:I, s:s}",
								   "access_token", t.access,
								   "token_type", "bearer",
								   "refresh_token", t.refresh,
								   "expires_in", (json_int_t) cfg.token_ttl,
								   "scope", "read write trust"));
done:
	free(grant);
	free(f1);
	free(f2);
	free(f3);
}
