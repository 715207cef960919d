/*-------------------------------------------------------------------------
 *
 * effect.h
 *	  Whether a call that failed may have taken effect at EnKash.
 *
 *-------------------------------------------------------------------------
 */
#ifndef ENKASH_EFFECT_H
#define ENKASH_EFFECT_H

#include "enkash.h"

typedef enum EnkashEffect
{
	ENKASH_NOT_APPLIED,			/* nothing happened; the same call may go again */
	ENKASH_NOT_APPLIED_FINAL,	/* nothing happened; the same call would fail again */
	ENKASH_DECLINED,			/* EnKash answered no: final */
	ENKASH_MAYBE_APPLIED		/* may have happened: ask EnKash before any resend */
} EnkashEffect;

extern EnkashEffect enkash_error_effect(int sqlerrcode, bool request_left,
										const EnkashHttpResult *http);

#endif							/* ENKASH_EFFECT_H */
