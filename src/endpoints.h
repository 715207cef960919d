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
	EF_INT,						/* SQL integer, JSON number */
	EF_TEXT_ARRAY				/* SQL text[], JSON array of strings */
} EnkashFieldType;

/* Field flags */
#define EF_REQUIRED		0x01	/* NULL is an error */
#define EF_ID			0x02	/* an EnKash identifier: short, no spaces */
#define EF_COMPANY		0x04	/* NULL means the enkash.company_id setting */

typedef struct EnkashField
{
	const char *arg;			/* SQL argument name */
	const char *json;			/* JSON member name */
	EnkashFieldType type;
	int			flags;
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
};

typedef struct EnkashEndpoint EnkashEndpoint;

extern const EnkashEndpoint enkash_endpoints[];
extern const EnkashEndpoint *enkash_endpoint_by_function(const char *function);
extern const EnkashEndpoint *enkash_endpoint_by_name(const char *name);

#endif							/* ENKASH_ENDPOINTS_H */
