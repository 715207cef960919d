/*-------------------------------------------------------------------------
 *
 * endpoints.h
 *	  The table of EnKash endpoints and of the fields each one takes.
 *
 * One row per endpoint drives request building, validation and (later)
 * masking; an endpoint's SQL function is declared in the install script with
 * arguments named after the fields' arg names.  Adding an endpoint is a row
 * here plus its CREATE FUNCTION, never a new C function.
 *
 *-------------------------------------------------------------------------
 */
#ifndef ENKASH_ENDPOINTS_H
#define ENKASH_ENDPOINTS_H

#include "postgres.h"

#include "utils/guc.h"

typedef enum EnkashKind
{
	ENKASH_READ,				/* looks something up */
	ENKASH_WRITE,				/* changes a card's settings */
	ENKASH_MONEY,				/* moves money or creates something billable */
	ENKASH_SECRET_IN,			/* carries a PIN or OTP to EnKash */
	ENKASH_SECRET_OUT			/* returns PAN or CVV */
} EnkashKind;

typedef enum EnkashFieldType
{
	EF_TEXT,					/* SQL text, JSON string */
	EF_AMOUNT,					/* SQL numeric, JSON number, rupees.paise */
	EF_BOOL,					/* SQL boolean, JSON true/false */
	EF_COUNT,					/* SQL integer >= 0, JSON number */
	EF_TEXT_ARRAY,				/* SQL text[] of 1 to 100, JSON array of strings */
	EF_DATE,					/* SQL date, JSON "dd-MM-yyyy" */
	EF_TIMESTAMP,				/* SQL timestamptz, JSON ISO-8601 in UTC */
	EF_PAN_DOCUMENT,			/* SQL text (a PAN tax id), JSON
								 * [{"docType":"PAN","docNo":...}] */
	EF_DOCUMENTS,				/* SQL jsonb, a JSON array of objects, as is */
	EF_MEMBERS					/* SQL jsonb object: members EnKash's pages
								 * name without a spelling, sent as given */
} EnkashFieldType;

/* What a text value must look like, beyond being non-empty. */
typedef enum EnkashFormat
{
	EV_ANY,
	EV_ID,						/* an EnKash identifier: letters, digits, -_./: */
	EV_MOBILE,					/* 10 digits */
	EV_EMAIL					/* local@domain.tld */
} EnkashFormat;

/* Field flags */
#define EF_REQUIRED		0x01	/* NULL is an error */
#define EF_COMPANY		0x02	/* NULL means the enkash.company_id setting */
#define EF_SECRET		0x04	/* PIN block, OTP, MFA code: never echoed or kept */
#define EF_ZERO_OK		0x08	/* an amount that may be 0 (a limit) */
#define EF_RANGE_START	0x10	/* the next field is the end of a range */
#define EF_KEY			0x20	/* the idempotency key of a money call; a
								 * field with no JSON name is not sent */
#define EF_NULLABLE		0x40	/* a JsonNullable limit: named in the
								 * endpoint's EF_CLEARS list, sent as null */
#define EF_CLEARS		0x80	/* a text[] of EF_NULLABLE arg names to send
								 * as null (clear); not sent itself */

typedef struct EnkashField
{
	const char *arg;			/* SQL argument name */
	const char *json;			/* JSON member name, or NULL: not sent */
	EnkashFieldType type;
	int			flags;
	EnkashFormat format;
	const char *const *choices; /* allowed values, NULL-terminated, or NULL */
} EnkashField;

struct EnkashEndpoint
{
	const char *function;		/* SQL function name */
	const char *name;			/* short name, for enkash_call */
	const char *label;			/* what it does, for messages */
	const char *path;			/* appended to enkash.base_url */
	EnkashKind	kind;
	const char *fixed;			/* JSON members always sent, or NULL */
	const EnkashField *fields;	/* terminated by a zeroed row */
	const char *docs;			/* EnKash's page (docs.enkash.com/...), or
								 * NULL: nothing published */
	bool		inferred_path;	/* path is our reading of the docs: overridable */
	bool		paged;			/* answers a page of "content"; see pages.c */
};

typedef struct EnkashEndpoint EnkashEndpoint;

extern const EnkashEndpoint enkash_endpoints[];
extern const EnkashEndpoint *enkash_endpoint_by_function(const char *function);
extern const EnkashEndpoint *enkash_endpoint_by_name(const char *name);
extern const char *enkash_endpoint_path(const EnkashEndpoint *endpoint);
extern bool enkash_endpoint_reconciles(const EnkashEndpoint *endpoint);
extern bool enkash_check_endpoint_paths(char **newval, void **extra,
										GucSource source);

#endif							/* ENKASH_ENDPOINTS_H */
