/*
 * timeline.c: whether this server's history may be shorter than EnKash's.
 *
 * A server promoted from an asynchronous standby, or restored to an earlier
 * point, may have lost keys its predecessor claimed and sent: a load's
 * reference may already be credited at EnKash although no key here says
 * so.  Both start a new WAL timeline, so for enkash.check_after_failover
 * after the current timeline began, a new load is looked up at EnKash
 * before it is sent (money.c, and the sender through the same path).
 */
#include "postgres.h"

#include <sys/stat.h>
#include <time.h>

#include "access/xlog.h"
#include "access/xlog_internal.h"

#include "enkash.h"
#include "endpoints.h"
#include "timeline.h"

/*
 * The first timeline is the cluster's own; a later one began at a
 * promotion or the end of a restore, when its history file was written.
 * A history file that cannot be read leaves the question open: look first.
 */
bool
enkash_timeline_is_new(void)
{
	char		path[MAXPGPATH];
	struct stat st;
	TimeLineID	tli;

	if (enkash_check_after_failover <= 0 || RecoveryInProgress())
		return false;
	tli = GetWALInsertionTimeLine();
	if (tli <= 1)
		return false;
	TLHistoryFilePath(path, tli);
	if (stat(path, &st) != 0)
		return true;
	return time(NULL) - st.st_mtime < (time_t) enkash_check_after_failover * 60;
}

/* Whether a new call at ep is to be looked up at EnKash before it is sent. */
bool
enkash_look_up_first(const EnkashEndpoint *ep)
{
	return enkash_endpoint_reconciles(ep) && enkash_timeline_is_new();
}
