/*-------------------------------------------------------------------------
 *
 * wire.c
 *	  The benchmark's bare EnKash exchange (wire.h).
 *
 *-------------------------------------------------------------------------
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE				/* explicit_bzero */
#endif
#include "wire.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "partner.h"

const WireCredentials wire_sandbox_credentials = {
	SANDBOX_PARTNER_FIELDS,
};

size_t
wire_collect(char *data, size_t size, size_t nmemb, void *userdata)
{
	WireBuffer *b = userdata;
	size_t		n = size * nmemb;

	if (b->len + n + 1 > b->cap)
	{
		size_t		cap = b->cap ? b->cap * 2 : 4096;
		char	   *grown;

		while (cap < b->len + n + 1)
			cap *= 2;
		grown = realloc(b->data, cap);
		if (grown == NULL)
			return 0;
		b->data = grown;
		b->cap = cap;
	}
	memcpy(b->data + b->len, data, n);
	b->len += n;
	b->data[b->len] = '\0';
	return n;
}

void
wire_prepare(CURL *curl, struct curl_slist *headers, WireBuffer *answer, const char *user_agent)
{
	curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
	curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, wire_collect);
	curl_easy_setopt(curl, CURLOPT_WRITEDATA, answer);
	curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(curl, CURLOPT_TCP_KEEPALIVE, 1L);
	curl_easy_setopt(curl, CURLOPT_TCP_NODELAY, 1L);
	curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, 30000L);
	curl_easy_setopt(curl, CURLOPT_USERAGENT, user_agent);
	curl_easy_setopt(curl, CURLOPT_POST, 1L);
}

/* Appends name=urlencoded(value) to a form body; false if it did not fit. */
static bool
form_field(CURL *curl, char *form, size_t cap, const char *name, const char *value)
{
	char	   *escaped = curl_easy_escape(curl, value, 0);
	size_t		used = strlen(form);
	int			n;

	if (escaped == NULL)
		return false;
	n = snprintf(form + used, cap - used, "%s%s=%s", used ? "&" : "", name, escaped);
	curl_free(escaped);
	return n >= 0 && (size_t) n < cap - used;
}

const char *
wire_token(const WireCredentials *cred, const char *token_url, char **token)
{
	CURL	   *curl = curl_easy_init();
	char		userpass[512];
	char		basic[1024] = "Authorization: Basic ";
	char		form[2048] = "";
	struct curl_slist *headers = NULL;
	WireBuffer	body = {0};
	long		status = 0;
	json_t	   *json = NULL;
	const char *value;
	const char *why = NULL;

	*token = NULL;
	if (curl == NULL)
		return "curl_easy_init failed";
	snprintf(userpass, sizeof(userpass), "%s:%s", cred->client_id, cred->client_secret);
	if (4 * ((strlen(userpass) + 2) / 3) + strlen(basic) + 1 > sizeof(basic))
		why = "client id and secret too long";
	else if (!form_field(curl, form, sizeof(form), "grant_type", "password") ||
			 !form_field(curl, form, sizeof(form), "username", cred->username) ||
			 !form_field(curl, form, sizeof(form), "password", cred->password) ||
			 !form_field(curl, form, sizeof(form), "clientId", cred->company_id))
		why = "token form too long";
	if (why == NULL)
	{
		envelope_base64_encode((const unsigned char *) userpass, strlen(userpass),
							   basic + strlen(basic));
		headers = curl_slist_append(headers, basic);
		headers = curl_slist_append(headers, "Content-Type: application/x-www-form-urlencoded");
		headers = curl_slist_append(headers, "Accept: application/json");
		headers = curl_slist_append(headers, "Expect:");
		wire_prepare(curl, headers, &body, "enkash-bench/0.1");
		curl_easy_setopt(curl, CURLOPT_URL, token_url);
		curl_easy_setopt(curl, CURLOPT_POSTFIELDS, form);
		if (curl_easy_perform(curl) != CURLE_OK)
			why = "token request failed";
		else if (curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status), status != 200)
			why = "token request did not answer HTTP 200";
		else if ((json = json_loadb(body.data, body.len, 0, NULL)) == NULL ||
				 (value = json_string_value(json_object_get(json, "access_token"))) == NULL)
			why = "token answer has no access_token";
		else if ((*token = strdup(value)) == NULL)
			why = "out of memory";
	}
	if (json)
		json_decref(json);
	explicit_bzero(userpass, sizeof(userpass));
	explicit_bzero(basic, sizeof(basic));
	explicit_bzero(form, sizeof(form));
	curl_slist_free_all(headers);
	curl_easy_cleanup(curl);
	free(body.data);
	return why;
}

struct curl_slist *
wire_headers(const WireCredentials *cred, const char *token)
{
	char		bearer[2200];
	char		partner[256];
	struct curl_slist *headers = NULL;

	snprintf(bearer, sizeof(bearer), "authorization: Bearer %s", token);
	snprintf(partner, sizeof(partner), "partnerId: %s", cred->partner_id);
	headers = curl_slist_append(headers, bearer);
	headers = curl_slist_append(headers, partner);
	headers = curl_slist_append(headers, "Content-Type: application/json");
	headers = curl_slist_append(headers, "Accept: application/json");
	headers = curl_slist_append(headers, "Expect:");
	explicit_bzero(bearer, sizeof(bearer));
	return headers;
}

const char *
wire_open(EnvelopeCipher *cipher, const WireBuffer *body,
		  char **plain, size_t *plain_cap, size_t *plain_len)
{
	const char *b64;
	size_t		b64_len;
	size_t		need;

	if (envelope_unwrap(body->data, body->len, &b64, &b64_len) != ENVELOPE_OK)
		return "answer is not {\"request\":\"<base64>\"}";
	need = envelope_open_bound(b64_len);
	if (need > *plain_cap)
	{
		free(*plain);
		*plain = malloc(need);
		*plain_cap = *plain ? need : 0;
		if (*plain == NULL)
			return "out of memory";
	}
	if (envelope_open(cipher, b64, b64_len, *plain, plain_len) != ENVELOPE_OK)
		return "answer does not decrypt";
	return NULL;
}
