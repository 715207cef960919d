/*-------------------------------------------------------------------------
 *
 * effect.c
 *	  Whether a call that failed may have taken effect at EnKash: the one
 *	  reading of an error that a key's state (money.c) and a queued row's
 *	  state (outbox_rows.c) are both derived from.
 *
 * Anything that cannot be read positively as "not applied" or "declined"
 * is "maybe": a money call is then looked up at EnKash before it goes
 * again, never simply resent.
 *
 *-------------------------------------------------------------------------
 */
#include "effect.h"

/* Whether an error says an answer came but could not be used. */
static bool
answer_unreadable(int sqlerrcode)
{
	switch (sqlerrcode)
	{
		case ERRCODE_ENKASH_BAD_RESPONSE:
		case ERRCODE_ENKASH_ANSWER_TRUNCATED:
		case ERRCODE_ENKASH_ANSWER_NOT_BASE64:
		case ERRCODE_ENKASH_ANSWER_UNDECRYPTABLE:
		case ERRCODE_ENKASH_ANSWER_TOO_DEEP:
		case ERRCODE_ENKASH_ANSWER_NO_CODE:
		case ERRCODE_ENKASH_ANSWER_TOO_LARGE:
		case ERRCODE_ENKASH_ANSWER_REDIRECT:
			return true;
	}
	return false;
}

/* Whether an error refused the request itself: sending it again cannot help. */
static bool
request_wrong(int sqlerrcode)
{
	return sqlerrcode == ERRCODE_ENKASH_KEY_REUSED ||
		(PGUNSIXBIT(sqlerrcode) == '2' && PGUNSIXBIT(sqlerrcode >> 6) == '2') ||
		sqlerrcode == ERRCODE_FEATURE_NOT_SUPPORTED ||
		sqlerrcode == ERRCODE_UNDEFINED_OBJECT;
}

/*
 * sqlerrcode: the error the call ended with; request_left: whether anything
 * may have reached EnKash by then; http: the HTTP answer, if one came.
 */
EnkashEffect
enkash_error_effect(int sqlerrcode, bool request_left, const EnkashHttpResult *http)
{
	int			status = http && http->outcome == ENKASH_HTTP_OK ? http->status : 0;

	/* an earlier attempt's outcome is unknown, whether or not this one left */
	if (sqlerrcode == ERRCODE_ENKASH_OUTCOME_UNKNOWN)
		return ENKASH_MAYBE_APPLIED;
	if (!request_left)
		return request_wrong(sqlerrcode) ? ENKASH_NOT_APPLIED_FINAL : ENKASH_NOT_APPLIED;
	if (answer_unreadable(sqlerrcode))
		return ENKASH_MAYBE_APPLIED;	/* an answer came: EnKash had the request */
	switch (sqlerrcode)
	{
		case ERRCODE_SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION:
			return ENKASH_NOT_APPLIED;	/* never connected */
		case ERRCODE_ENKASH_REJECTED:
			return ENKASH_DECLINED;
		case ERRCODE_ENKASH_AUTH_FAILED:
			return ENKASH_NOT_APPLIED;	/* refused at the door */
		case ERRCODE_ENKASH_BAD_REQUEST:
			/*
			 * A 4xx refused the request unread; but 409 "duplicate
			 * transaction" means an earlier one went through.
			 */
			return status >= 400 && status < 500 && status != 409 ?
				ENKASH_NOT_APPLIED : ENKASH_MAYBE_APPLIED;
		case ERRCODE_ENKASH_UNAVAILABLE:
			/* 429 is refused unread; a 5xx may have happened half-way */
			return status == 429 ? ENKASH_NOT_APPLIED : ENKASH_MAYBE_APPLIED;
		default:
			return ENKASH_MAYBE_APPLIED;	/* no answer, cancelled, anything else */
	}
}
