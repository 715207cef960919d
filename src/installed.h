/*-------------------------------------------------------------------------
 *
 * installed.h
 *	  Whether the extension in this database is the library's version.
 *
 *-------------------------------------------------------------------------
 */
#ifndef ENKASH_INSTALLED_H
#define ENKASH_INSTALLED_H

/* The extension in this database against the library (ENKASH_VERSION). */
typedef enum EnkashInstalled
{
	ENKASH_ABSENT,
	ENKASH_OUTDATED,			/* ALTER EXTENSION enkash UPDATE is due */
	ENKASH_CURRENT
} EnkashInstalled;

extern void enkash_installed_init(void);
extern EnkashInstalled enkash_extension_state(char **version);
extern bool enkash_installed(void);

#endif
