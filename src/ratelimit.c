/*-------------------------------------------------------------------------
 *
 * ratelimit.c
 *	  enkash.rate_limit: one token bucket in shared memory for the whole
 *	  server, so that backends and workers together stay under EnKash's
 *	  limits.
 *
 *-------------------------------------------------------------------------
 */
#include "enkash.h"

#include "miscadmin.h"
#include "storage/latch.h"
#include "storage/shmem.h"
#include "utils/wait_event.h"

typedef struct RateLimitShared
{
	LWLock	   *lock;
	double		bucket;			/* requests that may go now */
	TimestampTz bucket_at;		/* when bucket was last filled */
} RateLimitShared;

static RateLimitShared *shared = NULL;

static void
rate_limit_shmem_first(void *ptr)
{
	RateLimitShared *first = ptr;

	memset(first, 0, sizeof(*first));
	first->lock = enkash_lock(ENKASH_LOCK_RATE_LIMIT);
}

const EnkashSharedPart enkash_rate_limit_part = {
	"enkash rate limit", sizeof(RateLimitShared), rate_limit_shmem_first, (void **) &shared
};

/*
 * Waits for a slot under enkash.rate_limit (requests per second across the
 * server: backends and workers share one bucket, a second's worth deep).
 * No longer than enkash.timeout_ms: a claimed call must be over within the
 * deadline its claim was given (enkash_longest_call_ms), and a request
 * that has not left can be given up safely.
 */
void
enkash_rate_limit_wait(void)
{
	TimestampTz started = GetCurrentTimestamp();

	for (;;)
	{
		double		rate = enkash_rate_limit;
		double		wait_s = 0;
		TimestampTz now;

		if (rate <= 0 || shared == NULL)
			return;
		now = GetCurrentTimestamp();
		LWLockAcquire(shared->lock, LW_EXCLUSIVE);
		if (shared->bucket_at == 0)
			shared->bucket = rate;
		else
			shared->bucket = Min(rate, shared->bucket +
								 (now - shared->bucket_at) / 1000000.0 * rate);
		shared->bucket_at = now;
		if (shared->bucket >= 1)
			shared->bucket -= 1;
		else
			wait_s = (1 - shared->bucket) / rate;
		LWLockRelease(shared->lock);
		if (wait_s <= 0)
			return;
		/* a turn that would come after the deadline is refused now */
		if (TimestampDifferenceExceeds(started, now + (TimestampTz) (wait_s * 1000000),
									   enkash_timeout_ms))
			ereport(ERROR,
					(errcode(ERRCODE_ENKASH_UNAVAILABLE),
					 errmsg("the call waited longer than enkash.timeout_ms for its turn under enkash.rate_limit; nothing was sent"),
					 errdetail("enkash.rate_limit allows %g requests a second across the server.", rate),
					 errhint("Call again later, or raise enkash.rate_limit.")));
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 Max(1, (long) (wait_s * 1000)),
						 enkash_wait_event(ENKASH_WAIT_RATE_LIMIT));
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
}
