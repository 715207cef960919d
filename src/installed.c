/*-------------------------------------------------------------------------
 *
 * installed.c
 *	  Whether the extension is installed in this database at the version
 *	  this library was built for (ENKASH_VERSION, enkash.control's).
 *
 * Between a restart on a new library and ALTER EXTENSION enkash UPDATE the
 * tables are the old version's, which the library's statements do not fit:
 * SQL calls refuse and the workers wait.  A current version is remembered
 * until pg_extension changes, so that a call costs no catalog scan: CREATE,
 * ALTER and DROP EXTENSION invalidate pg_extension's relcache entry (an
 * object-access hook), and that invalidation reaches every backend of the
 * database at commit.
 *
 *-------------------------------------------------------------------------
 */
#include "enkash.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "catalog/indexing.h"
#include "catalog/objectaccess.h"
#include "catalog/pg_extension.h"
#include "commands/dbcommands.h"
#include "installed.h"
#include "miscadmin.h"
#include "postmaster/bgworker.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/inval.h"
#include "utils/rel.h"

static object_access_hook_type prev_object_access_hook = NULL;

/* ENKASH_CURRENT once seen, until pg_extension changes; otherwise unknown. */
static bool known_current = false;

static void
forget_state(Datum arg, Oid relid)
{
	if (relid == InvalidOid || relid == ExtensionRelationId)
		known_current = false;
}

/* An extension created, altered or dropped: every backend checks again. */
static void
extension_changed(ObjectAccessType access, Oid classId, Oid objectId,
				  int subId, void *arg)
{
	if (prev_object_access_hook)
		prev_object_access_hook(access, classId, objectId, subId, arg);
	if (classId == ExtensionRelationId &&
		(access == OAT_POST_CREATE || access == OAT_POST_ALTER || access == OAT_DROP))
	{
		known_current = false;
		CacheInvalidateRelcacheByRelid(ExtensionRelationId);
	}
}

/* From _PG_init: every process inherits the hook and the callback. */
void
enkash_installed_init(void)
{
	prev_object_access_hook = object_access_hook;
	object_access_hook = extension_changed;
	CacheRegisterRelcacheCallback(forget_state, (Datum) 0);
}

/*
 * The extension's state, read from pg_extension unless known to be current;
 * *version, if asked, gets the installed version (palloc'd) when it was read.
 */
EnkashInstalled
enkash_extension_state(char **version)
{
	Relation	rel;
	ScanKeyData key;
	SysScanDesc scan;
	HeapTuple	tuple;
	EnkashInstalled state = ENKASH_ABSENT;

	if (version)
		*version = NULL;
	if (known_current)
		return ENKASH_CURRENT;
	rel = table_open(ExtensionRelationId, AccessShareLock);
	ScanKeyInit(&key, Anum_pg_extension_extname, BTEqualStrategyNumber, F_NAMEEQ,
				CStringGetDatum("enkash"));
	scan = systable_beginscan(rel, ExtensionNameIndexId, true, NULL, 1, &key);
	tuple = systable_getnext(scan);
	if (HeapTupleIsValid(tuple))
	{
		bool		isnull;
		Datum		d = heap_getattr(tuple, Anum_pg_extension_extversion,
									 RelationGetDescr(rel), &isnull);
		char	   *installed = isnull ? pstrdup("") : TextDatumGetCString(d);

		state = strcmp(installed, ENKASH_VERSION) == 0 ? ENKASH_CURRENT : ENKASH_OUTDATED;
		if (version)
			*version = installed;
	}
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	known_current = (state == ENKASH_CURRENT);
	return state;
}

/*
 * For the background workers: whether they may use the extension's tables.
 * An extension of another version makes them wait, with one LOG line for
 * the DBA (again only after it was current in between).
 */
bool
enkash_installed(void)
{
	static bool said = false;
	char	   *version;
	EnkashInstalled state = enkash_extension_state(&version);

	if (state == ENKASH_OUTDATED && !said)
		ereport(LOG,
				(errmsg("%s waits: the enkash extension in database \"%s\" is version %s, the library is version %s",
						MyBgworkerEntry ? MyBgworkerEntry->bgw_type : "enkash",
						get_database_name(MyDatabaseId), version, ENKASH_VERSION),
				 errhint("Run ALTER EXTENSION enkash UPDATE in that database.")));
	said = (state == ENKASH_OUTDATED);
	return state == ENKASH_CURRENT;
}

/*
 * For SQL calls: refuses at once while the extension's version is not the
 * library's, before anything is recorded or sent.
 */
void
enkash_require_current(void)
{
	char	   *version;

	if (enkash_extension_state(&version) == ENKASH_OUTDATED)
		ereport(ERROR,
				(errcode(ERRCODE_ENKASH_NEEDS_UPDATE),
				 errmsg("the enkash extension must be updated before it can be used"),
				 errdetail("The extension in this database is version %s; the server runs the enkash library of version %s. Nothing was sent to EnKash.",
						   version, ENKASH_VERSION),
				 errhint("ALTER EXTENSION enkash UPDATE")));
}
