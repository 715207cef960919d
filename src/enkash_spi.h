/*-------------------------------------------------------------------------
 *
 * enkash_spi.h
 *	  SPI helpers of the workers' own transactions (spi.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef ENKASH_SPI_H
#define ENKASH_SPI_H

#include "postgres.h"

#include "executor/spi.h"

extern void enkash_spi_begin(const char *activity);
extern void enkash_spi_commit(bool idle);

/*
 * Statements over many rows: one array argument per column ($1 ... $n, as
 * unnest($1, ...) takes them), filled one row at a time.
 */
#define ENKASH_COLUMNS_MAX 13
typedef struct EnkashColumns
{
	const Oid  *types;			/* element types */
	int			ncols;
	int			count;			/* rows */
	int			size;
	Datum	   *values[ENKASH_COLUMNS_MAX];
	bool	   *nulls[ENKASH_COLUMNS_MAX];
} EnkashColumns;
extern SPIPlanPtr enkash_keep_plan(const char *sql, int nargs, const Oid *types);
extern SPIPlanPtr enkash_keep_generic_plan(const char *sql, int nargs, const Oid *types);
extern int	enkash_execute_pinned(SPIPlanPtr plan, Datum *args, const char *nulls);
extern Datum enkash_int8_array(const int64 *values, int n);
extern SPIPlanPtr enkash_prepare_columns(const char *sql, const Oid *types, int ncols);
extern void enkash_columns_init(EnkashColumns *cols, const Oid *types, int ncols, int size);
extern void enkash_columns_add(EnkashColumns *cols, const Datum *v, const char *n);
extern void enkash_columns_row(const EnkashColumns *cols, int i, Datum *v, char *n);
extern int	enkash_columns_run(const EnkashColumns *cols, SPIPlanPtr plan);
extern void enkash_columns_execute(const EnkashColumns *cols, SPIPlanPtr plan, int rc);
extern bool enkash_try_together(void (*fn) (void *arg), void *arg);
extern void enkash_as_role(Oid role, void (*fn) (void *arg), void *arg);

#endif							/* ENKASH_SPI_H */
