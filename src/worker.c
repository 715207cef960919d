/*-------------------------------------------------------------------------
 *
 * worker.c
 *	  The enkash background workers: a launcher and the worker it starts.
 *
 * The launcher connects to no database.  It waits for the database named by
 * enkash.database to exist, starts "enkash worker" in it, and starts it
 * again if it stops; so a missing or dropped database is a log line, not a
 * crash loop.  The worker records calls (ledger_worker.c) and keeps the tables
 * tidy; the sender (outbox_sender.c) sends queued requests, many at once on one
 * curl multi handle.  All stop promptly on SIGTERM and reread settings on
 * SIGHUP.
 *
 *-------------------------------------------------------------------------
 */
#include "enkash.h"

#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/pg_database.h"
#include "catalog/namespace.h"
#include "catalog/objectaccess.h"
#include "commands/dbcommands.h"
#include "enkash_spi.h"
#include "installed.h"
#include "ledger.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "tcop/tcopprot.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/wait_event.h"

PGDLLEXPORT void enkash_launcher_main(Datum arg);

static object_access_hook_type prev_object_access_hook = NULL;

/*
 * DROP DATABASE of the workers' database: the launcher stops them and
 * stays away for a while, so that the drop does not find them connected.
 */
typedef struct LauncherShared
{
	LWLock	   *lock;
	Latch	   *launcher_latch;
	Oid			dropping_dboid; /* DROP DATABASE under way: stand aside */
	TimestampTz dropping_until;
} LauncherShared;

static LauncherShared *launcher = NULL;

static void
launcher_shmem_first(void *ptr)
{
	LauncherShared *first = ptr;

	memset(first, 0, sizeof(*first));
	first->lock = enkash_lock(ENKASH_LOCK_LAUNCHER);
}

const EnkashSharedPart enkash_launcher_part = {
	"enkash launcher", sizeof(LauncherShared), launcher_shmem_first, (void **) &launcher
};

static void
note_drop(Oid dboid)
{
	Latch	   *latch = NULL;

	if (launcher == NULL || dboid != enkash_ledger_worker_database())
		return;
	LWLockAcquire(launcher->lock, LW_EXCLUSIVE);
	launcher->dropping_dboid = dboid;
	launcher->dropping_until = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), 10000);
	latch = launcher->launcher_latch;
	LWLockRelease(launcher->lock);
	if (latch)
		SetLatch(latch);
}

/* The database being dropped, if the launcher should stay away from it. */
static Oid
dropping(void)
{
	Oid			dboid = InvalidOid;

	LWLockAcquire(launcher->lock, LW_SHARED);
	if (GetCurrentTimestamp() < launcher->dropping_until)
		dboid = launcher->dropping_dboid;
	LWLockRelease(launcher->lock);
	return dboid;
}

/* Notices DROP DATABASE of the workers' database before it checks for users. */
static void
enkash_object_access(ObjectAccessType access, Oid classId, Oid objectId,
					 int subId, void *arg)
{
	if (prev_object_access_hook)
		prev_object_access_hook(access, classId, objectId, subId, arg);
	if (access == OAT_DROP && classId == DatabaseRelationId)
		note_drop(objectId);
}
PGDLLEXPORT void enkash_worker_main(Datum arg);

/* How often the launcher looks for the database, and the worker tidies up. */
#define LAUNCHER_NAP_MS 1000
#define HOUSEKEEPING_MS 60000
/* finished queued requests deleted per transaction */
#define QUEUE_PURGE_ROWS 5000

/* A background worker of this library: its type (also its name) and entry point. */
static void
describe_worker(BackgroundWorker *worker, const char *type, const char *function,
				int restart_time)
{
	memset(worker, 0, sizeof(*worker));
	snprintf(worker->bgw_name, BGW_MAXLEN, "%s", type);
	snprintf(worker->bgw_type, BGW_MAXLEN, "%s", type);
	snprintf(worker->bgw_library_name, BGW_MAXLEN, "enkash");
	snprintf(worker->bgw_function_name, BGW_MAXLEN, "%s", function);
	worker->bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker->bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker->bgw_restart_time = restart_time;
}

void
enkash_register_launcher(void)
{
	BackgroundWorker worker;

	prev_object_access_hook = object_access_hook;
	object_access_hook = enkash_object_access;

	describe_worker(&worker, "enkash launcher", "enkash_launcher_main", 5);
	RegisterBackgroundWorker(&worker);
}

/* Starts "enkash worker" (role 0) or "enkash sender" (role 1) in dboid. */
static bool
start_worker(Oid dboid, int role, BackgroundWorkerHandle **handle)
{
	BackgroundWorker worker;

	/* (never restarted by the postmaster: the launcher does it) */
	describe_worker(&worker, role == 0 ? "enkash worker" : "enkash sender",
					role == 0 ? "enkash_worker_main" : "enkash_sender_main",
					BGW_NEVER_RESTART);
	worker.bgw_main_arg = ObjectIdGetDatum(dboid);
	memcpy(worker.bgw_extra, &role, sizeof(role));
	worker.bgw_notify_pid = MyProcPid;
	return RegisterDynamicBackgroundWorker(&worker, handle);
}

/*
 * The start of the worker and the sender: signals (sigterm for SIGTERM),
 * the connection to their database (arg), and a search_path of their own:
 * their SQL runs as a superuser, so ALTER DATABASE/ROLE ... SET
 * search_path is ignored.
 */
void
enkash_connect_worker(Datum arg, pqsigfunc sigterm)
{
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, sigterm);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnectionByOid(DatumGetObjectId(arg), InvalidOid, 0);
	SetConfigOption("search_path", ENKASH_SAFE_SEARCH_PATH, PGC_SUSET, PGC_S_OVERRIDE);
}

/*
 * The OID of enkash.database, or InvalidOid.  The launcher has no database,
 * so it scans the shared catalog pg_database directly (no index, no
 * relcache for pg_class), as the autovacuum launcher does.
 */
static Oid
database_oid(void)
{
	Oid			dboid = InvalidOid;
	Relation	rel;
	TableScanDesc scan;
	HeapTuple	tuple;

	StartTransactionCommand();
	(void) GetTransactionSnapshot();
	rel = table_open(DatabaseRelationId, AccessShareLock);
	scan = table_beginscan_catalog(rel, 0, NULL);
	while ((tuple = heap_getnext(scan, ForwardScanDirection)) != NULL)
	{
		Form_pg_database db = (Form_pg_database) GETSTRUCT(tuple);

		if (strcmp(NameStr(db->datname), enkash_database) == 0 && db->datallowconn)
		{
			dboid = db->oid;
			break;
		}
	}
	table_endscan(scan);
	table_close(rel, AccessShareLock);
	CommitTransactionCommand();
	return dboid;
}

/* The worker and the sender, as the launcher keeps them running. */
#define MAX_CHILDREN 2

void
enkash_launcher_main(Datum arg)
{
	BackgroundWorkerHandle *children[MAX_CHILDREN] = {0};
	bool		said_missing = false;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnection(NULL, NULL, 0);
	LWLockAcquire(launcher->lock, LW_EXCLUSIVE);
	launcher->launcher_latch = MyLatch;
	LWLockRelease(launcher->lock);

	for (;;)
	{
		int			wanted = MAX_CHILDREN;
		Oid			dboid = InvalidOid;
		bool		looked = false;

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}

		/* Someone is dropping our database: leave it, and stay away a while. */
		if (OidIsValid(dropping()))
		{
			bool		stopped = false;

			for (int role = 0; role < MAX_CHILDREN; role++)
				if (children[role])
				{
					TerminateBackgroundWorker(children[role]);
					pfree(children[role]);
					children[role] = NULL;
					stopped = true;
				}
			if (stopped)
				ereport(LOG,
						(errmsg("enkash launcher: database \"%s\" is being dropped; the enkash worker and senders stop",
								enkash_database)));
			(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
							 LAUNCHER_NAP_MS, enkash_wait_event(ENKASH_WAIT_LAUNCHER));
			ResetLatch(MyLatch);
			continue;
		}

		for (int role = 0; role < wanted; role++)
		{
			pid_t		pid;

			if (children[role] != NULL &&
				GetBackgroundWorkerPid(children[role], &pid) != BGWH_STOPPED)
				continue;
			if (children[role])
			{
				pfree(children[role]);
				children[role] = NULL;
			}
			if (!looked)
			{
				dboid = database_oid();
				looked = true;
			}
			if (!OidIsValid(dboid))
			{
				if (!said_missing)
					ereport(LOG,
							(errmsg("enkash launcher: database \"%s\" does not exist; waiting for it",
									enkash_database),
							 errhint("Create it, or set enkash.database to the database that has the enkash extension.")));
				said_missing = true;
				break;
			}
			said_missing = false;
			if (!start_worker(dboid, role, &children[role]))
			{
				ereport(WARNING,
						(errmsg("enkash launcher: could not start %s",
								role == 0 ? "the enkash worker" : "the enkash sender"),
						 errhint("Raise max_worker_processes.")));
				break;
			}
		}

		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 LAUNCHER_NAP_MS, enkash_wait_event(ENKASH_WAIT_LAUNCHER));
		ResetLatch(MyLatch);
	}
}

/*
 * Deletes finished keys older than enkash.key_retention_days.  A load's
 * reference number stays in enkash.expired_keys: a load made again with it
 * is looked up at EnKash before it is sent (ledger_sql.c, the claims).
 */
static void
purge_keys(void)
{
	char	   *sql = psprintf("WITH gone AS ("
							   "  DELETE FROM enkash.idempotency_keys "
							   "  WHERE state IN ('succeeded', 'failed') "
							   "  AND finished_at < now() - interval '%d days' "
							   "  RETURNING endpoint, key), "
							   "kept AS ("
							   "  INSERT INTO enkash.expired_keys (endpoint, key) "
							   "  SELECT endpoint, key FROM gone WHERE endpoint = 'load_balance' "
							   "  ON CONFLICT (endpoint, key) DO UPDATE SET expired_at = excluded.expired_at) "
							   "SELECT count(*) FROM gone",
							   enkash_key_retention_days);
	bool		isnull;
	int64		purged;

	if (SPI_execute(sql, false, 0) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "could not purge enkash.idempotency_keys");
	purged = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1,
										 &isnull));
	if (purged > 0)
		ereport(LOG,
				(errmsg("enkash worker: purged %lld finished idempotency keys older than %d days",
						(long long) purged, enkash_key_retention_days)));
}

/*
 * Deletes one batch of finished queued requests older than
 * enkash.queue_retention_days (0: kept), in a transaction of its own; true
 * if the batch was full, so more may be due.  One batch at a time, the
 * worker's ledger work in between: sessions' money calls wait on it.
 */
static bool
purge_queue_batch(void)
{
	uint64		deleted = 0;

	if (enkash_queue_retention_days <= 0)
		return false;
	enkash_spi_begin("enkash: purging finished queued requests");
	if (enkash_installed())
	{
		char	   *sql = psprintf("DELETE FROM enkash.requests WHERE id IN ("
								   "  SELECT id FROM enkash.requests "
								   "  WHERE state IN ('succeeded', 'failed', 'dead') "
								   "  AND coalesce(finished_at, updated_at) < now() - interval '%d days' "
								   "  LIMIT %d)",
								   enkash_queue_retention_days, QUEUE_PURGE_ROWS);

		if (SPI_execute(sql, false, 0) != SPI_OK_DELETE)
			elog(ERROR, "could not purge enkash.requests");
		deleted = SPI_processed;
	}
	enkash_spi_commit(true);
	if (deleted > 0)
		ereport(LOG,
				(errmsg("enkash worker: purged %llu finished queued requests older than %d days",
						(unsigned long long) deleted, enkash_queue_retention_days)));
	return deleted == QUEUE_PURGE_ROWS;
}

static void
purge_keys_now(void)
{
	enkash_spi_begin("enkash: purging finished keys");
	if (enkash_installed())
		purge_keys();
	enkash_spi_commit(true);
}

void
enkash_worker_main(Datum arg)
{
	static TimestampTz last_housekeeping = 0;
	static bool queue_purge_due = false;

	enkash_connect_worker(arg, die);
	enkash_ledger_attach_worker();
	ereport(LOG, (errmsg("enkash worker started in database \"%s\"", enkash_database)));

	for (;;)
	{
		volatile bool busy = false;
		volatile LedgerRound round = LEDGER_IDLE;

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
		ResetLatch(MyLatch);

		/* An error here is logged and the loop goes on: no crash loop. */
		PG_TRY();
		{
			round = enkash_ledger_process();
			busy = (round == LEDGER_DID_WORK);
			if (TimestampDifferenceExceeds(last_housekeeping, GetCurrentTimestamp(),
										   HOUSEKEEPING_MS))
			{
				last_housekeeping = GetCurrentTimestamp();
				purge_keys_now();
				queue_purge_due = true;
			}
			/* a full batch: the next one after the ledger's next round */
			if (queue_purge_due)
			{
				queue_purge_due = false;	/* an error waits for the next minute */
				queue_purge_due = purge_queue_batch();
			}
			busy = busy || queue_purge_due;
		}
		PG_CATCH();
		{
			EmitErrorReport();
			AbortCurrentTransaction();
			FlushErrorState();
			enkash_ledger_batch_failed();
			MemoryContextSwitchTo(TopMemoryContext);
			busy = false;
			round = LEDGER_IDLE;
		}
		PG_END_TRY();

		/*
		 * Its writes in the statistics (at most once a second): without
		 * them autovacuum would not see the dead rows it leaves.
		 */
		pgstat_report_stat(false);
		if (busy)
			continue;
		if (round == LEDGER_GATHERING)
			(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
							 LEDGER_GATHER_MS, enkash_wait_event(ENKASH_WAIT_WORKER_GATHER));
		else
			(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
							 1000, enkash_wait_event(ENKASH_WAIT_WORKER_IDLE));
	}
}
