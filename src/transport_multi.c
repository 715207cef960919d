/*-------------------------------------------------------------------------
 *
 * transport_multi.c
 *	  The outbox sender's transfers: up to enkash.max_concurrency at once on
 *	  one multi handle, sharing one connection cache, driven through
 *	  libcurl's socket API (transport.c says why, and the rules for
 *	  callbacks).
 *
 *-------------------------------------------------------------------------
 */
#include "transport_internal.h"

#include <sys/epoll.h>
#include <time.h>

#include "miscadmin.h"
#include "pgstat.h"
#include "storage/fd.h"
#include "storage/latch.h"
#include "utils/memutils.h"
#include "utils/wait_event.h"

/* The outbox sender's transfers, all on one multi handle. */
static CURLM *out_multi = NULL;
static Transfer *out_xfers = NULL;
static int	out_count = 0;
static int	out_running = 0;

/*
 * What libcurl's socket API asks of us: the sockets to watch (out_epoll,
 * itself watched with the latch and postmaster death through out_wait) and
 * when to call it back with no socket ready (out_timer_at, monotonic ms, -1
 * for never).  The callbacks cannot ereport: a failure is kept in
 * out_watch_errno and raised once libcurl has returned.
 */
static int	out_epoll = -1;
static WaitEventSet *out_wait = NULL;
static int64 out_timer_at = -1;
static int	out_watch_errno = 0;

/* ---------------------------------------------------------------------
 * Many at once (the outbox sender)
 * ---------------------------------------------------------------------
 */

static int64
monotonic_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* libcurl's socket callback: watch fd for what it asks, or stop watching. */
static int
watch_socket(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
	struct epoll_event ev;

	if (what == CURL_POLL_REMOVE)
	{
		/* fails only if libcurl closed it first, which removed it already */
		(void) epoll_ctl(out_epoll, EPOLL_CTL_DEL, fd, NULL);
		return 0;
	}
	memset(&ev, 0, sizeof(ev));
	ev.events = ((what & CURL_POLL_IN) ? EPOLLIN : 0) |
		((what & CURL_POLL_OUT) ? EPOLLOUT : 0);
	ev.data.fd = fd;

	/*
	 * socketp is NULL until we mark the socket as in the set; libcurl
	 * forgets the mark with CURL_POLL_REMOVE.  Either way, a descriptor
	 * closed and reused behind our back is handled by trying the other.
	 */
	if (socketp == NULL)
	{
		if (epoll_ctl(out_epoll, EPOLL_CTL_ADD, fd, &ev) != 0 &&
			(errno != EEXIST || epoll_ctl(out_epoll, EPOLL_CTL_MOD, fd, &ev) != 0))
		{
			out_watch_errno = errno;
			return -1;
		}
		curl_multi_assign(out_multi, fd, &out_epoll);
	}
	else if (epoll_ctl(out_epoll, EPOLL_CTL_MOD, fd, &ev) != 0 &&
			 (errno != ENOENT || epoll_ctl(out_epoll, EPOLL_CTL_ADD, fd, &ev) != 0))
	{
		out_watch_errno = errno;
		return -1;
	}
	return 0;
}

/* libcurl's timer callback: call back in timeout_ms, or never (-1). */
static int
set_timer(CURLM *m, long timeout_ms, void *userp)
{
	out_timer_at = timeout_ms < 0 ? -1 : monotonic_ms() + timeout_ms;
	return 0;
}

/* The multi handle of the sender, its epoll set and its wait event set. */
static void
setup_out_multi(void)
{
	if (out_epoll < 0)
	{
		ReserveExternalFD();
		out_epoll = epoll_create1(EPOLL_CLOEXEC);
		if (out_epoll < 0)
			ereport(ERROR,
					(errcode_for_socket_access(),
					 errmsg("could not create an epoll set: %m")));
	}
	if (out_wait == NULL)
	{
		out_wait = enkash_long_lived_wait_set(3);
		AddWaitEventToSet(out_wait, WL_LATCH_SET, PGINVALID_SOCKET, MyLatch, NULL);
		AddWaitEventToSet(out_wait, WL_EXIT_ON_PM_DEATH, PGINVALID_SOCKET, NULL, NULL);
		AddWaitEventToSet(out_wait, WL_SOCKET_READABLE, out_epoll, NULL, NULL);
	}
	if (out_xfers == NULL &&
		(out_xfers = calloc(ENKASH_MAX_CONCURRENCY, sizeof(Transfer))) == NULL)
		out_of_memory();
	if ((out_multi = curl_multi_init()) == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("could not create an HTTP client for EnKash")));
	curl_multi_setopt(out_multi, CURLMOPT_SOCKETFUNCTION, watch_socket);
	curl_multi_setopt(out_multi, CURLMOPT_TIMERFUNCTION, set_timer);
}

/*
 * Lets libcurl act on fd (CURL_SOCKET_TIMEOUT: on its timers) and raises
 * what its callbacks could not.
 */
static void
out_act(curl_socket_t fd, int events)
{
	int			still;
	CURLMcode	rc = curl_multi_socket_action(out_multi, fd, events, &still);

	if (out_watch_errno != 0)
	{
		errno = out_watch_errno;
		out_watch_errno = 0;
		ereport(ERROR,
				(errcode_for_socket_access(),
				 errmsg("could not watch a connection to EnKash: %m")));
	}
	if (rc != CURLM_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("libcurl failed while calling EnKash: %s",
						curl_multi_strerror(rc))));
}

/* Runs libcurl's timer if it is due (new transfers start this way). */
static void
out_timer_if_due(void)
{
	if (out_timer_at >= 0 && monotonic_ms() >= out_timer_at)
	{
		out_timer_at = -1;		/* the callback may set it again */
		out_act(CURL_SOCKET_TIMEOUT, 0);
	}
}

/*
 * Starts a POST that runs alongside the others; owner comes back with its
 * result from enkash_multi_done.  Returns false if max transfers are
 * already running.
 */
bool
enkash_multi_start(int max, const char *url, const char *const *headers,
				   int nheaders, const char *body, size_t len, bool may_resend,
				   void *owner)
{
	Transfer   *t = NULL;

	if (out_multi == NULL)
		setup_out_multi();
	max = Min(max, ENKASH_MAX_CONCURRENCY);
	/* connections kept for reuse: one per transfer that may run at once */
	curl_multi_setopt(out_multi, CURLMOPT_MAXCONNECTS, (long) max);

	for (int i = 0; i < max; i++)
		if (!out_xfers[i].running && !out_xfers[i].done)
		{
			t = &out_xfers[i];
			out_count = Max(out_count, i + 1);
			break;
		}
	if (t == NULL)
		return false;

	enkash_rate_limit_wait();
	transfer_init(t);
	curl_easy_setopt(t->easy, CURLOPT_PRIVATE, (char *) t);
	transfer_prepare(t, url, headers, nheaders, body, len, may_resend,
					 enkash_timeout_ms, enkash_connect_timeout_ms);
	if (curl_multi_add_handle(out_multi, t->easy) != CURLM_OK)
	{
		transfer_release_headers(t);
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("libcurl could not start a call to EnKash")));
	}
	t->owner = owner;
	t->running = true;
	out_running++;
	return true;
}

/* Transfers started and not yet handed back by enkash_multi_done. */
int
enkash_multi_running(void)
{
	return out_running;
}

/* Marks the transfers libcurl says are finished. */
static void
collect_finished(void)
{
	CURLMsg    *msg;
	int			queued;

	while ((msg = curl_multi_info_read(out_multi, &queued)) != NULL)
	{
		Transfer   *t = NULL;

		if (msg->msg != CURLMSG_DONE)
			continue;
		curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **) &t);
		t->code = msg->data.result;
		/* the connection stays in the multi handle's cache for reuse */
		curl_multi_remove_handle(out_multi, t->easy);
		transfer_release_headers(t);
		t->running = false;
		t->done = true;
	}
}

/* True if a finished transfer waits to be handed back. */
static bool
out_any_done(void)
{
	for (int i = 0; i < out_count; i++)
		if (out_xfers[i].done && out_xfers[i].owner != NULL)
			return true;
	return false;
}

/*
 * Moves the transfers along, waiting up to timeout_ms for one to finish.
 * A latch set (a signal: SIGTERM, SIGHUP) ends the wait early; interrupts
 * are the caller's to check.
 */
void
enkash_multi_wait(long timeout_ms)
{
	struct epoll_event ready[64];
	WaitEvent	event;
	int			n;

	if (out_multi == NULL)
		return;
	out_timer_if_due();
	collect_finished();
	if (out_any_done())
		return;

	if (out_timer_at >= 0)
		timeout_ms = Min(timeout_ms, Max(out_timer_at - monotonic_ms(), 0));
	if (WaitEventSetWait(out_wait, timeout_ms, &event, 1,
						 enkash_wait_event(ENKASH_WAIT_SENDER_CALLS)) > 0 &&
		(event.events & WL_LATCH_SET))
		ResetLatch(MyLatch);

	/* Only the sockets that are ready; lengthof(ready) at a time. */
	do
	{
		n = epoll_wait(out_epoll, ready, lengthof(ready), 0);
		if (n < 0 && errno != EINTR)
			ereport(ERROR,
					(errcode_for_socket_access(),
					 errmsg("could not wait for EnKash: %m")));
		for (int i = 0; i < n; i++)
		{
			uint32		ev = ready[i].events;

			out_act(ready[i].data.fd,
					((ev & EPOLLIN) ? CURL_CSELECT_IN : 0) |
					((ev & EPOLLOUT) ? CURL_CSELECT_OUT : 0) |
					((ev & (EPOLLERR | EPOLLHUP)) ? CURL_CSELECT_ERR : 0));
		}
	} while (n == lengthof(ready));
	out_timer_if_due();
	collect_finished();
}

/*
 * Hands back one finished transfer: its owner and result (the body stays
 * valid until enkash_multi_release).  False when none has finished.
 */
bool
enkash_multi_done(void **owner, EnkashHttpResult *result)
{
	for (int i = 0; i < out_count; i++)
	{
		Transfer   *t = &out_xfers[i];

		if (!t->done || t->owner == NULL)
			continue;
		transfer_result(t, t->code, result);
		*owner = t->owner;
		t->owner = NULL;		/* handed back; the slot is freed by release */
		return true;
	}
	return false;
}

/* Frees the slots of the transfers handed back, for new ones. */
void
enkash_multi_release(void)
{
	for (int i = 0; i < out_count; i++)
		if (out_xfers[i].done && out_xfers[i].owner == NULL)
		{
			out_xfers[i].done = false;
			out_running--;
		}
}
