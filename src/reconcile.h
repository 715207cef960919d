/*-------------------------------------------------------------------------
 *
 * reconcile.h
 *	  Asking EnKash whether a load of unknown outcome happened.
 *
 *-------------------------------------------------------------------------
 */
#ifndef ENKASH_RECONCILE_H
#define ENKASH_RECONCILE_H

#include "enkash.h"

typedef enum LookupVerdict
{
	LOOKUP_FOUND,				/* EnKash has it: reference, amount and card */
	LOOKUP_ABSENT,				/* EnKash positively has no such transaction */
	LOOKUP_UNSURE				/* EnKash's answer settles nothing */
} LookupVerdict;

extern LookupVerdict enkash_find_load(const char *json, size_t len, const char *key,
									  Jsonb **found, char **why);

#endif							/* ENKASH_RECONCILE_H */
