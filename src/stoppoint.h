/*-------------------------------------------------------------------------
 *
 * stoppoint.h
 *	  Test-only stop points: a named step of a money call where the kill
 *	  matrix (test/t/040_kill_matrix.pl) holds a process in order to kill it.
 *
 * ENKASH_STOP_POINT(name) compiles to nothing unless the extension is
 * built with ENKASH_STOP_POINTS=1 (test/lib.sh builds such a copy for that
 * test alone).  A NULL name is no stop point: ENKASH_STOP_POINT(cond ?
 * "name" : NULL) stops only when cond holds.  See stoppoint.c.
 *
 *-------------------------------------------------------------------------
 */
#ifndef ENKASH_STOPPOINT_H
#define ENKASH_STOPPOINT_H

#ifdef ENKASH_STOP_POINTS
extern void enkash_stop_point(const char *name);
#define ENKASH_STOP_POINT(name) enkash_stop_point(name)
#else
#define ENKASH_STOP_POINT(name) ((void) 0)
#endif

#endif							/* ENKASH_STOPPOINT_H */
