/*-------------------------------------------------------------------------
 *
 * spi.c
 *	  SPI helpers for the workers' own transactions: one transaction with a
 *	  snapshot, statements kept for the process's life (generic and pinned
 *	  plans), statements over many rows (one array per column), a
 *	  subtransaction that may fail as a whole.
 *
 *-------------------------------------------------------------------------
 */
#include "enkash.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "commands/dbcommands.h"
#include "enkash_spi.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"

/*
 * Starts a transaction with SPI connected and a snapshot, for a process of
 * its own (the worker, the sender); activity, if given, for pg_stat_activity.
 */
void
enkash_spi_begin(const char *activity)
{
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	SPI_connect();
	PushActiveSnapshot(GetTransactionSnapshot());
	if (activity)
		pgstat_report_activity(STATE_RUNNING, activity);
}

/* Commits what enkash_spi_begin started; idle: report the process idle. */
void
enkash_spi_commit(bool idle)
{
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	if (idle)
		pgstat_report_activity(STATE_IDLE, NULL);
}

/* A statement prepared and kept for the process's life. */
static SPIPlanPtr
keep_plan(const char *sql, int nargs, const Oid *types, int options)
{
	SPIPlanPtr	plan = SPI_prepare_cursor(sql, nargs, (Oid *) types, options);

	if (plan == NULL || SPI_keepplan(plan) != 0)
		elog(ERROR, "%s could not prepare \"%s\": %s",
			 MyBgworkerEntry ? MyBgworkerEntry->bgw_type : "enkash", sql,
			 SPI_result_code_string(SPI_result));
	return plan;
}

SPIPlanPtr
enkash_keep_plan(const char *sql, int nargs, const Oid *types)
{
	return keep_plan(sql, nargs, types, 0);
}

/* ---------------------------------------------------------------------
 * Many rows to a statement: one array argument per column
 * ---------------------------------------------------------------------
 */

/*
 * The statements the workers run for many rows at a time (the claim, the
 * batches) have generic plans, made once rather than at every execution
 * (planning is most of a small batch's cost).  A generic plan knows
 * neither the arrays' length nor the tables' size, and one made while a
 * table was small joins by scanning all of it, and keeps doing so as it
 * grows.  Plans may be remade at any execution, so these statements always
 * run with whole-table scans and hash and merge joins ruled out
 * (enkash_execute_pinned): then rows are reached by index, which is right
 * at any size.
 */
SPIPlanPtr
enkash_keep_generic_plan(const char *sql, int nargs, const Oid *types)
{
	return keep_plan(sql, nargs, types, CURSOR_OPT_GENERIC_PLAN);
}

/* Runs a plan of enkash_keep_generic_plan with its shape pinned; the SPI result code. */
int
enkash_execute_pinned(SPIPlanPtr plan, Datum *args, const char *nulls)
{
	int			level = NewGUCNestLevel();
	int			rc;

	/* an error undoes these with the (sub)transaction */
	(void) set_config_option("enable_seqscan", "off", PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	(void) set_config_option("enable_hashjoin", "off", PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	(void) set_config_option("enable_mergejoin", "off", PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	rc = SPI_execute_plan(plan, args, nulls, false, 0);
	AtEOXact_GUC(true, level);
	return rc;
}

/* A statement taking one array of each of types[] ($1 ... $ncols). */
SPIPlanPtr
enkash_prepare_columns(const char *sql, const Oid *types, int ncols)
{
	Oid			arrays[ENKASH_COLUMNS_MAX];

	Assert(ncols <= ENKASH_COLUMNS_MAX);
	for (int c = 0; c < ncols; c++)
		arrays[c] = get_array_type(types[c]);
	return enkash_keep_generic_plan(sql, ncols, arrays);
}

void
enkash_columns_init(EnkashColumns *cols, const Oid *types, int ncols, int size)
{
	Assert(ncols <= ENKASH_COLUMNS_MAX);
	cols->types = types;
	cols->ncols = ncols;
	cols->count = 0;
	cols->size = Max(size, 1);
	for (int c = 0; c < ncols; c++)
	{
		cols->values[c] = palloc(sizeof(Datum) * cols->size);
		cols->nulls[c] = palloc(sizeof(bool) * cols->size);
	}
}

/* Adds a row, given as SPI arguments (nulls: 'n' or ' '). */
void
enkash_columns_add(EnkashColumns *cols, const Datum *v, const char *n)
{
	if (cols->count == cols->size)
	{
		cols->size *= 2;
		for (int c = 0; c < cols->ncols; c++)
		{
			cols->values[c] = repalloc(cols->values[c], sizeof(Datum) * cols->size);
			cols->nulls[c] = repalloc(cols->nulls[c], sizeof(bool) * cols->size);
		}
	}
	for (int c = 0; c < cols->ncols; c++)
	{
		cols->values[c][cols->count] = v[c];
		cols->nulls[c][cols->count] = (n[c] == 'n');
	}
	cols->count++;
}

/* Row i as SPI arguments again, for a statement that takes one row. */
void
enkash_columns_row(const EnkashColumns *cols, int i, Datum *v, char *n)
{
	for (int c = 0; c < cols->ncols; c++)
	{
		v[c] = cols->values[c][i];
		n[c] = cols->nulls[c][i] ? 'n' : ' ';
	}
}

/* Runs plan (from enkash_prepare_columns) over the rows; the SPI result code. */
int
enkash_columns_run(const EnkashColumns *cols, SPIPlanPtr plan)
{
	Datum		args[ENKASH_COLUMNS_MAX];
	int			dims[1] = {cols->count};
	int			lbs[1] = {1};

	for (int c = 0; c < cols->ncols; c++)
	{
		int16		typlen;
		bool		typbyval;
		char		typalign;

		get_typlenbyvalalign(cols->types[c], &typlen, &typbyval, &typalign);
		args[c] = PointerGetDatum(construct_md_array(cols->values[c], cols->nulls[c], 1,
													 dims, lbs, cols->types[c],
													 typlen, typbyval, typalign));
	}
	return enkash_execute_pinned(plan, args, NULL);
}

/* The same, and an error unless it returns rc and touches every row given once. */
void
enkash_columns_execute(const EnkashColumns *cols, SPIPlanPtr plan, int rc)
{
	if (enkash_columns_run(cols, plan) != rc || SPI_processed != (uint64) cols->count)
		elog(ERROR, "a statement over %d rows did not write them all (%llu)",
			 cols->count, (unsigned long long) SPI_processed);
}

/*
 * Runs fn(arg) in a subtransaction of the current transaction (SPI
 * connected).  False if it failed: it is rolled back and its error
 * forgotten, for the caller to go one row at a time, which isolates the
 * culprit.  Back in the caller's memory context and resource owner.
 */
bool
enkash_try_together(void (*fn) (void *arg), void *arg)
{
	MemoryContext cxt = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	volatile bool ok = true;

	BeginInternalSubTransaction(NULL);
	PG_TRY();
	{
		fn(arg);
		ReleaseCurrentSubTransaction();
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		ereport(DEBUG1,
				(errmsg("%s: a statement over many rows failed, going one row at a time: %s",
						MyBgworkerEntry ? MyBgworkerEntry->bgw_type : "enkash",
						edata->message)));
		FreeErrorData(edata);
		ok = false;
	}
	PG_END_TRY();
	MemoryContextSwitchTo(cxt);
	CurrentResourceOwner = owner;
	return ok;
}

/* An int8[] of values, for statements over many rows. */
Datum
enkash_int8_array(const int64 *values, int n)
{
	Datum	   *d = palloc(sizeof(Datum) * Max(n, 1));

	for (int i = 0; i < n; i++)
		d[i] = Int64GetDatum(values[i]);
	return PointerGetDatum(construct_array(d, n, INT8OID, sizeof(int64),
										   FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
}

/*
 * Runs fn(arg) connected to SPI with role's rights, as a restricted
 * operation under a pinned search_path: the extension reads or writes its
 * own tables for a caller who holds no right on them.  An error undoes both
 * with the transaction.
 */
void
enkash_as_role(Oid role, void (*fn) (void *arg), void *arg)
{
	Oid			save_userid;
	int			save_sec_context;
	int			save_nestlevel;

	GetUserIdAndSecContext(&save_userid, &save_sec_context);
	SetUserIdAndSecContext(role, save_sec_context | SECURITY_LOCAL_USERID_CHANGE |
						   SECURITY_RESTRICTED_OPERATION);
	save_nestlevel = NewGUCNestLevel();
	(void) set_config_option("search_path", ENKASH_SAFE_SEARCH_PATH, PGC_USERSET,
							 PGC_S_SESSION, GUC_ACTION_SAVE, true, 0, false);
	SPI_connect();
	fn(arg);
	SPI_finish();
	AtEOXact_GUC(false, save_nestlevel);
	SetUserIdAndSecContext(save_userid, save_sec_context);
}
