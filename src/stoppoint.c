/*-------------------------------------------------------------------------
 *
 * stoppoint.c
 *	  Test-only stop points (stoppoint.h); built only with
 *	  ENKASH_STOP_POINTS=1.
 *
 * A test arms one by writing its name into the file enkash_stop_point in
 * the data directory.  The first process to reach that point takes the
 * file (a rename: only one process can), writes "name pid" into
 * enkash_stopped, and waits there until it is killed (SIGKILL, SIGQUIT,
 * a backend's SIGTERM at its CHECK_FOR_INTERRUPTS) or the test removes
 * enkash_stopped to let it go on.  A background worker that handles
 * SIGTERM itself (the sender) goes on at once when told to stop.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <unistd.h>

#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/interrupt.h"
#include "stoppoint.h"
#include "wait_events.h"
#include "storage/latch.h"

#define ARMED_FILE "enkash_stop_point"
#define TAKEN_FILE "enkash_stop_point.taken"
#define STOPPED_FILE "enkash_stopped"

/* Whether the armed point is this one. */
static bool
armed_here(const char *name)
{
	char		armed[128];
	size_t		n;
	FILE	   *f = fopen(ARMED_FILE, "r");

	if (f == NULL)
		return false;
	n = fread(armed, 1, sizeof(armed) - 1, f);
	fclose(f);
	while (n > 0 && (armed[n - 1] == '\n' || armed[n - 1] == ' '))
		n--;
	armed[n] = '\0';
	return strcmp(armed, name) == 0;
}

/* Says where this process stopped: written whole, then renamed into place. */
static void
report_stopped(const char *name)
{
	char		tmp[64];
	FILE	   *f;

	snprintf(tmp, sizeof(tmp), "%s.%d", STOPPED_FILE, MyProcPid);
	f = fopen(tmp, "w");
	if (f == NULL)
		return;
	fprintf(f, "%s %d\n", name, MyProcPid);
	fclose(f);
	(void) rename(tmp, STOPPED_FILE);
}

void
enkash_stop_point(const char *name)
{
	if (name == NULL || !armed_here(name) || rename(ARMED_FILE, TAKEN_FILE) != 0)
		return;
	report_stopped(name);
	ereport(LOG,
			(errmsg("enkash stop point \"%s\" reached by process %d", name, MyProcPid)));
	while (access(STOPPED_FILE, F_OK) == 0 && !ShutdownRequestPending)
	{
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 100, enkash_wait_event(ENKASH_WAIT_STOP_POINT));
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
	/* a wake-up meant for the process while it stood here */
	SetLatch(MyLatch);
}
