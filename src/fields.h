/*-------------------------------------------------------------------------
 *
 * fields.h
 *	  One argument of an endpoint function as its JSON member, checked
 *	  (fields.c), for the function's body (api.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef ENKASH_FIELDS_H
#define ENKASH_FIELDS_H

#include "enkash.h"

#include "endpoints.h"

/* Not exported from the library: no other module can bind to these names. */
#pragma GCC visibility push(hidden)

enkash_noreturn extern void invalid_value(const EnkashField *field, const char *problem,
										   const char *hint);
extern void check_range(const EnkashField *from, Datum from_value,
						const EnkashField *to, Datum to_value);
extern void append_field(StringInfo buf, const EnkashField *field, Datum value,
						 bool isnull);

#pragma GCC visibility pop

#endif							/* ENKASH_FIELDS_H */
