/*-------------------------------------------------------------------------
 *
 * enkash.c
 *	  Module entry point: libcurl, the settings (settings.c), the launcher,
 *	  each module's shared memory, and the preload check.
 *
 *-------------------------------------------------------------------------
 */
#include "enkash.h"

#include "installed.h"
#include "ledger.h"

#include <curl/curl.h>

#include "fmgr.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"

ENKASH_MODULE_MAGIC;

bool		enkash_preloaded = false;

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

void		_PG_init(void);

/* The LWLocks of tranche "enkash", one per shared structure (EnkashLock). */
LWLock *
enkash_lock(EnkashLock which)
{
	return &(GetNamedLWLockTranche("enkash"))[which].lock;
}

/* Each module's shared memory. */
static const EnkashSharedPart *const shared_parts[] = {
	&enkash_token_part,
	&enkash_rate_limit_part,
	&enkash_ledger_part,
	&enkash_outbox_part,
	&enkash_launcher_part,
};

static void
enkash_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	for (int i = 0; i < lengthof(shared_parts); i++)
		RequestAddinShmemSpace(MAXALIGN(shared_parts[i]->size));
	RequestNamedLWLockTranche("enkash", ENKASH_NUM_LOCKS);
}

static void
enkash_shmem_startup(void)
{
	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();
	/* each made once, by the first process, under AddinShmemInitLock */
	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	for (int i = 0; i < lengthof(shared_parts); i++)
	{
		const EnkashSharedPart *part = shared_parts[i];
		bool		found;

		*part->ptr = ShmemInitStruct(part->name, part->size, &found);
		if (!found)
			part->first(*part->ptr);
	}
	LWLockRelease(AddinShmemInitLock);
}

void
_PG_init(void)
{
	/*
	 * Without preloading there is no shared memory for the token; every
	 * function then refuses to run (see enkash_require_preload), and so does
	 * CREATE EXTENSION.  Settings are not defined either: a PGC_POSTMASTER
	 * one cannot be, once the server runs.
	 */
	if (!process_shared_preload_libraries_in_progress)
		return;
	enkash_preloaded = true;

	/* Done once in the postmaster so that backends inherit it; before the
	 * settings, whose URL checks use libcurl's parser. */
	if (curl_global_init(CURL_GLOBAL_ALL) != CURLE_OK)
		ereport(FATAL,
				(errmsg("enkash: could not initialize libcurl")));
	enkash_define_settings();
	enkash_installed_init();

	enkash_register_launcher();

	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = enkash_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = enkash_shmem_startup;
}

void
enkash_require_preload(void)
{
	if (!enkash_preloaded)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("enkash must be loaded via \"shared_preload_libraries\""),
				 errhint("Add enkash to shared_preload_libraries in postgresql.conf and restart the server.")));
}

PG_FUNCTION_INFO_V1(enkash_assert_preloaded);

/* Called by the install script so that CREATE EXTENSION fails early. */
Datum
enkash_assert_preloaded(PG_FUNCTION_ARGS)
{
	enkash_require_preload();
	PG_RETURN_VOID();
}
