/*
 * compat.h: every difference between the PostgreSQL major versions enkash
 * builds against (15 through 18), so that the rest of the code reads the
 * same on all of them.  Nothing else in src/ tests PG_VERSION_NUM.
 */
#ifndef ENKASH_COMPAT_H
#define ENKASH_COMPAT_H

#include "postgres.h"

/*
 * A function that never returns: written before the declaration.  18 has
 * pg_noreturn (C11 _Noreturn), which must come first; before 18 the GCC
 * attribute behind pg_attribute_noreturn() may stand there too.
 */
#if PG_VERSION_NUM >= 180000
#define enkash_noreturn pg_noreturn
#else
#define enkash_noreturn pg_attribute_noreturn()
#endif

/*
 * The module's magic block: 18 also records the name and version that
 * pg_get_loaded_modules() shows.
 */
#ifdef PG_MODULE_MAGIC_EXT
#define ENKASH_MODULE_MAGIC PG_MODULE_MAGIC_EXT(.name = "enkash", .version = ENKASH_VERSION)
#else
#define ENKASH_MODULE_MAGIC PG_MODULE_MAGIC
#endif

/*
 * JSON parser callbacks return JsonParseErrorType from 16 on (void before):
 * declare them JSON_ACTION_RESULT and end them with JSON_ACTION_DONE.
 */
#if PG_VERSION_NUM >= 160000
#define JSON_ACTION_RESULT JsonParseErrorType
#define JSON_ACTION_DONE return JSON_SUCCESS
#else
#define JSON_ACTION_RESULT void
#define JSON_ACTION_DONE return
#endif

/* 17 lets the caller supply the lexer; NULL has it palloc'd, as before. */
#if PG_VERSION_NUM >= 170000
#define enkash_json_lexer(json, len, encoding, need_escapes) \
	makeJsonLexContextCstringLen(NULL, (json), (len), (encoding), (need_escapes))
#else
#define enkash_json_lexer(json, len, encoding, need_escapes) \
	makeJsonLexContextCstringLen((json), (len), (encoding), (need_escapes))
#endif

/*
 * A wait event set that lives as long as the process: 17 takes a resource
 * owner (NULL: none, kept in TopMemoryContext), before 17 a memory context.
 */
#if PG_VERSION_NUM >= 170000
#define enkash_long_lived_wait_set(nevents) CreateWaitEventSet(NULL, (nevents))
#else
#define enkash_long_lived_wait_set(nevents) CreateWaitEventSet(TopMemoryContext, (nevents))
#endif

/*
 * A string a GUC check hook hands back as the setting's new value: from 16
 * on the GUC machinery allocates (and frees) them with guc_malloc/guc_free,
 * before 16 with malloc/free.
 */
#if PG_VERSION_NUM >= 160000
#define enkash_guc_malloc(size) guc_malloc(LOG, (size))
#define enkash_guc_free(ptr) guc_free(ptr)
#else
#define enkash_guc_malloc(size) malloc(size)
#define enkash_guc_free(ptr) free(ptr)
#endif

/* Whether this process is a background worker: 17 on have only the macro. */
#if PG_VERSION_NUM >= 170000
#define enkash_is_background_worker() AmBackgroundWorkerProcess()
#else
#define enkash_is_background_worker() IsBackgroundWorker
#endif

/* All the GUC variables: 16 returns their count through an argument. */
#if PG_VERSION_NUM >= 160000
#define enkash_guc_variables(count) get_guc_variables(count)
#else
#define enkash_guc_variables(count) \
	(*(count) = GetNumConfigOptions(), get_guc_variables())
#endif

/* Wait events with names of their own (WaitEventExtensionNew): 17 on. */
#if PG_VERSION_NUM >= 170000
#define ENKASH_NAMED_WAIT_EVENTS 1
#endif

#endif							/* ENKASH_COMPAT_H */
