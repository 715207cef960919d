/*-------------------------------------------------------------------------
 *
 * settings.c
 *	  Every enkash.* setting, its checks, and how the code reads them.
 *
 * Settings that decide where requests go, which secrets are used or how TLS
 * is checked are superuser-only, to set and to see, so that an ordinary role
 * can neither point the extension at its own host to collect the bearer
 * token nor learn where the credentials file is.  Secrets are never
 * settings: they come from the file named by enkash.credentials_file.
 *
 *-------------------------------------------------------------------------
 */
#include "enkash.h"

#include "endpoints.h"

#include <curl/curl.h>

#include "utils/guc.h"
#include "utils/guc_tables.h"

char	   *enkash_base_url = NULL;
char	   *enkash_token_url = NULL;
char	   *enkash_partner_id = NULL;
char	   *enkash_company_id = NULL;
char	   *enkash_credentials_file = NULL;
bool		enkash_encrypt = true;
char	   *enkash_ca_file = NULL;
int			enkash_timeout_ms = 30000;
int			enkash_connect_timeout_ms = 5000;
char	   *enkash_database = NULL;
int			enkash_max_amount = 10000000;
int			enkash_max_response_kb = 1024;
char	   *enkash_endpoint_paths = NULL;
int			enkash_page_size = 100;
char	   *enkash_paging_fields = NULL;
char	   *enkash_lookup_not_found_codes = NULL;
int			enkash_key_retention_days = 7;
int			enkash_queue_retention_days = 30;
int			enkash_unknown_grace_ms = 30000;
int			enkash_check_after_failover = 1440;
int			enkash_stale_claim_ms = 120000;
int			enkash_max_concurrency = 2;
int			enkash_max_attempts = 8;
int			enkash_retry_base_ms = 1000;
int			enkash_retry_max_ms = 300000;
double		enkash_token_refresh_fraction = 0.8;
double		enkash_rate_limit = 0;
bool		enkash_sending = true;
bool		enkash_dry_run = false;
int			enkash_approval_threshold = 0;

/* "code[:message][;...]": every entry names a code */
static bool
check_lookup_not_found_codes(char **newval, void **extra, GucSource source)
{
	const char *p = *newval;

	while (p && *p)
	{
		const char *end = strchr(p, ';');
		size_t		len = end ? (size_t) (end - p) : strlen(p);
		size_t		code_len = strcspn(p, ":;");

		while (code_len > 0 && p[code_len - 1] == ' ')
			code_len--;
		while (code_len > 0 && *p == ' ')
			p++, code_len--, len--;
		if (code_len == 0 || code_len > 16 || memchr(p, ' ', code_len))
		{
			GUC_check_errdetail("Each entry is an EnKash code, optionally followed by :message; entries are separated by ';'.");
			return false;
		}
		p = end ? end + 1 : p + len;
	}
	return true;
}

/*
 * A URL must be https://, except plain http:// to a loopback host, which is
 * how the tests reach the local sandbox.  libcurl's own parser decides what
 * the host is, so that what we check is what libcurl will connect to.
 */
static bool
check_url(char **newval, void **extra, GucSource source)
{
	CURLU	   *url;
	char	   *scheme = NULL;
	char	   *host = NULL;
	char	   *user = NULL;
	bool		ok = false;

	if (*newval == NULL || (*newval)[0] == '\0')
		return true;			/* unset: the call reports what is missing */

	url = curl_url();
	if (url == NULL)
		return false;
	if (curl_url_set(url, CURLUPART_URL, *newval, 0) != CURLUE_OK ||
		curl_url_get(url, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
		curl_url_get(url, CURLUPART_HOST, &host, 0) != CURLUE_OK)
	{
		GUC_check_errdetail("The value is not a valid URL.");
		goto done;
	}
	if (curl_url_get(url, CURLUPART_USER, &user, 0) == CURLUE_OK)
	{
		GUC_check_errdetail("The URL must not contain a user name or password.");
		goto done;
	}
	if (strcmp(scheme, "https") == 0)
		ok = true;
	else if (strcmp(scheme, "http") == 0 &&
			 (strcmp(host, "127.0.0.1") == 0 || strcmp(host, "localhost") == 0 ||
			  strcmp(host, "[::1]") == 0))
		ok = true;
	else
		GUC_check_errdetail("Only https:// URLs are allowed, and http:// only for a loopback host (127.0.0.1, ::1, localhost).");

done:
	curl_free(scheme);
	curl_free(host);
	curl_free(user);
	curl_url_cleanup(url);
	return ok;
}

/* The path of every EnKash Prepaid Card endpoint begins with this. */
#define ENKASH_API_PREFIX "/api/v0/partner/enKashCard"

/*
 * enkash.base_url: a URL as check_url takes it; the host alone
 * ("https://pay.enkash.in") stands for the API under ENKASH_API_PREFIX.
 */
static bool
check_base_url(char **newval, void **extra, GucSource source)
{
	CURLU	   *url;
	char	   *path = NULL;
	char	   *query = NULL;
	char	   *fragment = NULL;
	bool		host_only;
	size_t		len;

	if (*newval == NULL || (*newval)[0] == '\0')
		return true;			/* unset: the call reports what is missing */
	if (!check_url(newval, extra, source))
		return false;
	url = curl_url();
	if (url == NULL)
		return false;
	host_only = curl_url_set(url, CURLUPART_URL, *newval, 0) == CURLUE_OK &&
		curl_url_get(url, CURLUPART_PATH, &path, 0) == CURLUE_OK &&
		(path[0] == '\0' || strcmp(path, "/") == 0) &&
		curl_url_get(url, CURLUPART_QUERY, &query, 0) != CURLUE_OK &&
		curl_url_get(url, CURLUPART_FRAGMENT, &fragment, 0) != CURLUE_OK;
	curl_free(path);
	curl_free(query);
	curl_free(fragment);
	curl_url_cleanup(url);
	if (host_only)
	{
		char	   *full;

		len = strlen(*newval);
		if ((*newval)[len - 1] == '/')
			len--;
		/* the GUC machinery frees it: allocated its way */
		full = enkash_guc_malloc(len + sizeof(ENKASH_API_PREFIX));
		if (full == NULL)
			return false;
		memcpy(full, *newval, len);
		strcpy(full + len, ENKASH_API_PREFIX);
		enkash_guc_free(*newval);
		*newval = full;
	}
	return true;
}

/* "page,size": two JSON member names. */
static bool
check_paging_fields(char **newval, void **extra, GucSource source)
{
	const char *comma = strchr(*newval, ',');

	if (comma == NULL || comma == *newval || comma[1] == '\0' || strchr(comma + 1, ','))
	{
		GUC_check_errdetail("Give the two member names separated by a comma, e.g. \"page,size\".");
		return false;
	}
	for (const char *p = *newval; *p; p++)
		if (!(isalnum((unsigned char) *p) || *p == '_' || *p == ','))
		{
			GUC_check_errdetail("Member names use letters, digits and underscores only.");
			return false;
		}
	return true;
}

/* The integer settings, in the order they are defined. */
static const struct
{
	const char *name;
	const char *short_desc;
	const char *long_desc;
	int		   *value;
	int			boot;
	int			min;
	int			max;
	GucContext	context;
	int			flags;
}			int_settings[] = {
	{"enkash.timeout_ms",
		"Longest time one EnKash call may take.",
		NULL,
		&enkash_timeout_ms, 30000, 100, 600000, PGC_USERSET, GUC_UNIT_MS},
	{"enkash.connect_timeout_ms",
		"Longest time to establish a connection to EnKash.",
		NULL,
		&enkash_connect_timeout_ms, 5000, 100, 600000, PGC_USERSET, GUC_UNIT_MS},
	{"enkash.max_amount",
		"Largest amount, in rupees, accepted for one load.",
		"Guards against a misplaced decimal point or a unit mix-up.",
		&enkash_max_amount, 10000000, 1, INT_MAX, PGC_SUSET, 0},
	{"enkash.approval_threshold",
		"Loads of this amount (rupees) or more wait for a checker's approval (0: none do).",
		"A second person, holding enkash_approve, approves each such load (maker-checker).",
		&enkash_approval_threshold, 0, 0, INT_MAX, PGC_SIGHUP, 0},
	{"enkash.max_response_kb",
		"Largest EnKash response accepted.",
		NULL,
		&enkash_max_response_kb, 1024, 1, 1024 * 1024, PGC_SUSET, GUC_UNIT_KB},
	{"enkash.page_size",
		"Transactions asked for per page by enkash_transactions().",
		NULL,
		&enkash_page_size, 100, 1, 1000, PGC_USERSET, 0},
	{"enkash.key_retention_days",
		"Days that finished idempotency keys are kept before the worker purges them.",
		"Keys whose outcome is unknown are never purged.",
		&enkash_key_retention_days, 7, 1, 3650, PGC_SIGHUP, 0},
	{"enkash.queue_retention_days",
		"Days that finished queued requests (succeeded, failed, dead) are kept before the worker deletes them.",
		"0 keeps them. Requests still pending, sending or unknown are never deleted.",
		&enkash_queue_retention_days, 30, 0, 3650, PGC_SIGHUP, 0},
	{"enkash.unknown_grace_ms",
		"How long after an attempt became unknown EnKash is asked about it.",
		"Before that, EnKash may still be processing the request, so a retry is refused rather than risk a double send.",
		&enkash_unknown_grace_ms, 30000, 0, 3600000, PGC_SIGHUP, GUC_UNIT_MS},
	{"enkash.check_after_failover",
		"How long after a promotion or a restore every new load is looked up at EnKash before it is sent.",
		"A server promoted from an asynchronous standby, or restored to an earlier point, may not know of loads its predecessor sent. 0 turns the check off.",
		&enkash_check_after_failover, 1440, 0, 525600, PGC_SIGHUP, GUC_UNIT_MIN},
	{"enkash.stale_claim_ms",
		"Least age at which an in-flight key of a live session counts as unknown.",
		"The session is also trusted for the longest its call can take by its own timeouts; past both, the key is unknown and EnKash is asked after enkash.unknown_grace_ms.",
		&enkash_stale_claim_ms, 120000, 1000, INT_MAX, PGC_SIGHUP, GUC_UNIT_MS},
	{"enkash.max_concurrency",
		"Queued requests the enkash sender has in flight at once.",
		NULL,
		&enkash_max_concurrency, 2, 1, ENKASH_MAX_CONCURRENCY, PGC_SIGHUP, 0},
	{"enkash.max_attempts",
		"Attempts after which a queued request is given up as dead.",
		NULL,
		&enkash_max_attempts, 8, 1, 1000, PGC_SIGHUP, 0},
	{"enkash.retry_base_ms",
		"First retry delay of a queued request; it doubles with each attempt.",
		NULL,
		&enkash_retry_base_ms, 1000, 1, 3600000, PGC_SIGHUP, GUC_UNIT_MS},
	{"enkash.retry_max_ms",
		"Longest delay between attempts of a queued request.",
		NULL,
		&enkash_retry_max_ms, 300000, 1, 86400000, PGC_SIGHUP, GUC_UNIT_MS},
};

/* The string settings, in the order they are defined. */
static const struct
{
	const char *name;
	const char *short_desc;
	const char *long_desc;
	char	  **value;
	const char *boot;
	GucContext	context;
	int			flags;
	GucStringCheckHook check;
}			string_settings[] = {
	{"enkash.base_url",
		"Base URL of the EnKash card API: the host alone, or up to and including /enKashCard.",
		NULL,
		&enkash_base_url, "", PGC_SUSET, GUC_SUPERUSER_ONLY, check_base_url},
	{"enkash.token_url",
		"URL of EnKash's OAuth token endpoint.",
		NULL,
		&enkash_token_url, "", PGC_SUSET, GUC_SUPERUSER_ONLY, check_url},
	{"enkash.partner_id",
		"Partner id (CR...) sent in the partnerId header.",
		NULL,
		&enkash_partner_id, "", PGC_SUSET, GUC_SUPERUSER_ONLY, NULL},
	{"enkash.company_id",
		"Default companyId (CEK...) for calls that do not name one.",
		"The token request's clientId is the credentials file's company_id, or this setting as postgresql.conf or a superuser gives it; never a session's own value.",
		&enkash_company_id, "", PGC_USERSET, 0, NULL},
	{"enkash.credentials_file",
		"File holding client_id, client_secret, username, password and encryption_secret.",
		"Must be owned by the server's OS user and not readable by others.",
		&enkash_credentials_file, "", PGC_SUSET, GUC_SUPERUSER_ONLY, NULL},
	{"enkash.ca_file",
		"Extra CA certificates (PEM) trusted for EnKash's TLS.",
		NULL,
		&enkash_ca_file, "", PGC_SUSET, GUC_SUPERUSER_ONLY, NULL},
	{"enkash.database",
		"Database the enkash background worker connects to.",
		NULL,
		&enkash_database, "postgres", PGC_POSTMASTER, GUC_SUPERUSER_ONLY, NULL},
	{"enkash.endpoint_paths",
		"Overrides for endpoint paths inferred from EnKash's documentation.",
		"A list of name=/path, e.g. view_card_details=/card/view.",
		&enkash_endpoint_paths, "", PGC_SUSET, GUC_SUPERUSER_ONLY, enkash_check_endpoint_paths},
	{"enkash.paging_fields",
		"Names of the page-number and page-size members of a listing request.",
		"Inferred from EnKash's documentation as \"page,size\"; change if a partner account differs.",
		&enkash_paging_fields, "page,size", PGC_SUSET, 0, check_paging_fields},
	{"enkash.lookup_not_found_codes",
		"EnKash answers to Get Transaction Details that mean \"no such transaction\".",
		"A list of code or code:message separated by ';', e.g. 1:Transaction not found. " "Only these let an unknown load be sent again; EnKash's documentation names none.",
		&enkash_lookup_not_found_codes, "", PGC_SIGHUP, 0, check_lookup_not_found_codes},
};

void
enkash_define_settings(void)
{
	for (int i = 0; i < lengthof(string_settings); i++)
		DefineCustomStringVariable(string_settings[i].name, string_settings[i].short_desc,
								   string_settings[i].long_desc, string_settings[i].value,
								   string_settings[i].boot, string_settings[i].context,
								   string_settings[i].flags, string_settings[i].check, NULL, NULL);
	for (int i = 0; i < lengthof(int_settings); i++)
		DefineCustomIntVariable(int_settings[i].name, int_settings[i].short_desc,
								int_settings[i].long_desc, int_settings[i].value,
								int_settings[i].boot, int_settings[i].min, int_settings[i].max,
								int_settings[i].context, int_settings[i].flags, NULL, NULL, NULL);
	DefineCustomBoolVariable("enkash.encrypt",
							 "Encrypt request bodies with the partner's AES envelope.",
							 NULL, &enkash_encrypt, true,
							 PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomBoolVariable("enkash.sending",
							 "Send money and card changes to EnKash (off: the pause switch).",
							 "Off, such calls are refused and queued ones wait; look-ups go on.",
							 &enkash_sending, true,
							 PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomBoolVariable("enkash.dry_run",
							 "Rehearse money and card changes: check them, record them, send nothing.",
							 NULL, &enkash_dry_run, false,
							 PGC_USERSET, 0, NULL, NULL, NULL);
	DefineCustomRealVariable("enkash.token_refresh_fraction",
							 "Fraction of a token's lifetime after which a sender replaces it.",
							 NULL, &enkash_token_refresh_fraction, 0.8, 0.1, 0.95,
							 PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomRealVariable("enkash.rate_limit",
							 "Most requests per second to EnKash from the whole server (0: no limit).",
							 "Backends and workers share one budget, so a month-end run does not trip EnKash's limits.",
							 &enkash_rate_limit, 0, 0, 100000,
							 PGC_SIGHUP, 0, NULL, NULL, NULL);

	MarkGUCPrefixReserved("enkash");
}

/* Returns a setting's value, or raises an error naming what to configure. */
const char *
enkash_require_setting(const char *name, const char *value)
{
	if (value == NULL || value[0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("enkash is not configured: \"%s\" is not set", name),
				 errhint("Set %s in postgresql.conf (see the enkash README) and reload.", name)));
	return value;
}

/*
 * A string setting's value as the server gives it (postgresql.conf, the
 * command line, ALTER SYSTEM, or ALTER ROLE ALL by a superuser), never a
 * value a session chose for itself (SET, connection options, ALTER ROLE or
 * DATABASE SET).  NULL when unset or overridden below the server level.
 */
const char *
enkash_server_setting(const char *name)
{
	int			n;
	struct config_generic **vars = enkash_guc_variables(&n);

	for (int i = 0; i < n; i++)
	{
		struct config_string *var = (struct config_string *) vars[i];

		if (vars[i]->vartype != PGC_STRING || strcmp(vars[i]->name, name) != 0)
			continue;
		if (vars[i]->reset_source > PGC_S_GLOBAL || var->reset_val == NULL ||
			var->reset_val[0] == '\0')
			return NULL;
		return var->reset_val;
	}
	return NULL;
}
