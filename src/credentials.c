/*-------------------------------------------------------------------------
 *
 * credentials.c
 *	  Reads the secrets file named by enkash.credentials_file.
 *
 * The file is checked the way PostgreSQL checks ssl_key_file, only stricter:
 * a regular file owned by the server's OS user that no group or other user
 * may read, and not a symbolic link; the checks are made on the open file,
 * so the file read is the file checked.  Values
 * live in malloc'd memory that is wiped when the file is re-read, and they
 * must never appear in an error message: errors name keys and line numbers,
 * never values.
 *
 * Format: "key = value" lines (client_id, client_secret, username,
 * password, and optionally encryption_secret and company_id); '#' starts a comment (at the start of a line,
 * or after white space in an unquoted value); values may be quoted with ' or "
 * to keep white space or '#'.
 *
 *-------------------------------------------------------------------------
 */
#include "enkash.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "storage/fd.h"

/* Bounds on the file: it holds a few short lines. */
#define MAX_FILE_SIZE (64 * 1024)
#define MAX_LINE_LENGTH 4096

static EnkashCredentials current;
static EnkashCredentials fresh;	/* being read; static so PG_CATCH can wipe it */
static char *loaded_path = NULL;
static struct stat loaded_stat;

static void
wipe_value(char **value)
{
	if (*value)
	{
		explicit_bzero(*value, strlen(*value));
		free(*value);
		*value = NULL;
	}
}

static void
wipe_credentials(EnkashCredentials *creds)
{
	wipe_value(&creds->client_id);
	wipe_value(&creds->client_secret);
	wipe_value(&creds->username);
	wipe_value(&creds->password);
	wipe_value(&creds->encryption_secret);
	wipe_value(&creds->company_id);
}

enkash_noreturn
static void
file_error(const char *path, int line, const char *detail)
{
	ereport(ERROR,
			(errcode(ERRCODE_CONFIG_FILE_ERROR),
			 line > 0 ?
			 errmsg("invalid enkash credentials file \"%s\", line %d", path, line) :
			 errmsg("invalid enkash credentials file \"%s\"", path),
			 errdetail_internal("%s", detail),
			 errhint("The file holds key = value lines with client_id, client_secret, username, password and optionally encryption_secret and company_id.")));
}

static char **
slot_for_key(EnkashCredentials *creds, const char *key)
{
	if (strcmp(key, "client_id") == 0)
		return &creds->client_id;
	if (strcmp(key, "client_secret") == 0)
		return &creds->client_secret;
	if (strcmp(key, "username") == 0)
		return &creds->username;
	if (strcmp(key, "password") == 0)
		return &creds->password;
	if (strcmp(key, "encryption_secret") == 0)
		return &creds->encryption_secret;
	if (strcmp(key, "company_id") == 0)
		return &creds->company_id;
	return NULL;
}

/* Splits one line into key and value in place; false for blank/comment. */
static bool
parse_line(char *line, char **key, char **value, const char **why)
{
	char	   *p = line;
	char	   *end;

	while (*p == ' ' || *p == '\t')
		p++;
	if (*p == '\0' || *p == '#')
		return false;

	*key = p;
	while (*p && *p != '=' && *p != ' ' && *p != '\t')
		p++;
	end = p;
	while (*p == ' ' || *p == '\t')
		p++;
	if (*p != '=')
	{
		*why = "Expected \"key = value\".";
		return true;
	}
	*end = '\0';
	p++;
	while (*p == ' ' || *p == '\t')
		p++;

	if (*p == '"' || *p == '\'')
	{
		char		quote = *p++;
		char	   *close = strchr(p, quote);
		char	   *rest;

		if (close == NULL)
		{
			*why = "A quoted value is not closed.";
			return true;
		}
		*close = '\0';
		*value = p;
		rest = close + 1;
		while (*rest == ' ' || *rest == '\t')
			rest++;
		if (*rest != '\0' && *rest != '#')
			*why = "Unexpected text after a quoted value.";
		return true;
	}

	*value = p;
	for (end = p; *end; end++)
	{
		if (*end == '#' && end > p && (end[-1] == ' ' || end[-1] == '\t'))
			break;
	}
	while (end > p && (end[-1] == ' ' || end[-1] == '\t'))
		end--;
	*end = '\0';
	return true;
}

static void
check_file_security(const char *path, const struct stat *st)
{
	if (!S_ISREG(st->st_mode))
		file_error(path, 0, "It is not a regular file.");
	/*
	 * Stricter than ssl_key_file, which also takes a root-owned file readable
	 * by the server's group: these secrets move money, so the file is the
	 * server user's alone (and a group or another owner is a mistake worth
	 * a clear message rather than a later "permission denied").
	 */
	if (st->st_uid != geteuid())
		file_error(path, 0, "It must be owned by the database server's operating system user.");
	if (st->st_mode & (S_IRWXG | S_IRWXO))
		file_error(path, 0, "Its permissions let other users read it; it must have permissions u=rw (0600) or less.");
}

/*
 * The whole file, read from an open descriptor: O_NOFOLLOW refuses a
 * symbolic link, and fstat checks the very file that is read.
 */
static char *
slurp_credentials_file(const char *path, struct stat *st)
{
	int			fd = OpenTransientFile(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	char	   *volatile text = NULL;
	ssize_t		got = 0;

	if (fd < 0)
	{
		int			save_errno = errno;

		/* say what is wrong with a file we may not open, not just EACCES */
		if (lstat(path, st) == 0 && S_ISREG(st->st_mode))
			check_file_security(path, st);
		errno = save_errno;
		ereport(ERROR,
				(errcode(ERRCODE_CONFIG_FILE_ERROR),
				 errmsg("could not open enkash credentials file \"%s\": %m", path),
				 save_errno == ELOOP ?
				 errdetail("It is a symbolic link; name the file itself in enkash.credentials_file.") : 0));
	}
	if (fstat(fd, st) != 0)
	{
		int			save_errno = errno;

		CloseTransientFile(fd);
		errno = save_errno;
		ereport(ERROR,
				(errcode(ERRCODE_CONFIG_FILE_ERROR),
				 errmsg("could not read enkash credentials file \"%s\": %m", path)));
	}
	PG_TRY();
	{
		check_file_security(path, st);
		if (st->st_size > MAX_FILE_SIZE)
			file_error(path, 0, "The file is larger than 64 kB.");
		text = palloc(st->st_size + 1);
		while (got < st->st_size)
		{
			ssize_t		n = read(fd, text + got, st->st_size - got);

			if (n < 0 && errno == EINTR)
				continue;
			if (n < 0)
				ereport(ERROR,
						(errcode_for_file_access(),
						 errmsg("could not read enkash credentials file \"%s\": %m", path)));
			if (n == 0)
				break;
			got += n;
		}
		text[got] = '\0';
	}
	PG_FINALLY();
	{
		CloseTransientFile(fd);
	}
	PG_END_TRY();
	return text;
}

static void
read_credentials_file(const char *path)
{
	struct stat st;
	/* read in PG_CATCH: volatile, so that no stale copy is used there */
	char	   *volatile text = slurp_credentials_file(path, &st);
	volatile size_t text_len = st.st_size;
	char	   *line = text;
	int			lineno = 0;

	memset(&fresh, 0, sizeof(fresh));
	PG_TRY();
	{
		while (*line != '\0')
		{
			char	   *next = strchr(line, '\n');
			char	   *key = NULL;
			char	   *value = NULL;
			const char *why = NULL;
			char	  **slot;

			lineno++;
			if (next)
				*next++ = '\0';
			else
				next = line + strlen(line);
			if (strlen(line) >= MAX_LINE_LENGTH)
				file_error(path, lineno, "The line is too long.");
			line[strcspn(line, "\r")] = '\0';
			if (parse_line(line, &key, &value, &why))
			{
				if (why)
					file_error(path, lineno, why);
				slot = slot_for_key(&fresh, key);
				/* never echo it: a wrapped secret can look like a key */
				if (slot == NULL)
					file_error(path, lineno, "The key is not one of client_id, client_secret, username, password, encryption_secret, company_id.");
				if (*slot)
					file_error(path, lineno,
							   psprintf("Key \"%s\" is given twice.", key));
				if ((*slot = strdup(value)) == NULL)
					ereport(ERROR,
							(errcode(ERRCODE_OUT_OF_MEMORY),
							 errmsg("out of memory")));
			}
			line = next;
		}

		if (!fresh.client_id || !fresh.client_secret ||
			!fresh.username || !fresh.password)
			file_error(path, 0, psprintf("Key \"%s\" is missing.",
										 !fresh.client_id ? "client_id" :
										 !fresh.client_secret ? "client_secret" :
										 !fresh.username ? "username" : "password"));
		if (!fresh.encryption_secret &&
			(fresh.encryption_secret = strdup(fresh.client_secret)) == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_OUT_OF_MEMORY),
					 errmsg("out of memory")));
	}
	PG_CATCH();
	{
		explicit_bzero(text, text_len);
		wipe_credentials(&fresh);
		PG_RE_THROW();
	}
	PG_END_TRY();
	explicit_bzero(text, text_len);
	pfree(text);

	fresh.version = current.version + 1;
	wipe_credentials(&current);
	current = fresh;
	memset(&fresh, 0, sizeof(fresh));
	free(loaded_path);
	loaded_path = strdup(path);
	loaded_stat = st;
}

/*
 * The credentials, re-read whenever the setting or the file changes (so a
 * rotated password needs no restart).  The file is looked at once a second
 * at most: a stat() per call showed in profiles.
 */
const EnkashCredentials *
enkash_credentials(void)
{
	static TimestampTz last_check = 0;
	const char *path = enkash_require_setting("enkash.credentials_file",
											  enkash_credentials_file);
	struct stat st;
	TimestampTz now = GetCurrentTimestamp();

	if (loaded_path != NULL && strcmp(loaded_path, path) == 0 &&
		!TimestampDifferenceExceeds(last_check, now, 1000))
		return &current;
	last_check = now;

	/* lstat: a symbolic link differs from what was read, and is refused */
	if (lstat(path, &st) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_CONFIG_FILE_ERROR),
				 errmsg("could not read enkash credentials file \"%s\": %m", path),
				 errhint("Check enkash.credentials_file in postgresql.conf.")));

	if (loaded_path == NULL || strcmp(loaded_path, path) != 0 ||
		st.st_ino != loaded_stat.st_ino || st.st_dev != loaded_stat.st_dev ||
		st.st_size != loaded_stat.st_size ||
		st.st_mtim.tv_sec != loaded_stat.st_mtim.tv_sec ||
		st.st_mtim.tv_nsec != loaded_stat.st_mtim.tv_nsec ||
		st.st_mode != loaded_stat.st_mode || st.st_uid != loaded_stat.st_uid)
		read_credentials_file(path);

	return &current;
}
