/*
 * live.c: whether this server is the live one, the only one that sends.
 *
 * A base backup or a point-in-time restore started on another host with
 * the same settings and credentials would send the queue a second time.
 * enkash.live_server, one row copied with everything else, names the live
 * server by what a copy cannot take along: its cluster, host, port and
 * data directory.  A copy finds another server named there and waits (no
 * money or write call, nothing sent from the queue) until an administrator
 * runs enkash_confirm_live() on it.  A standby that received WAL from its
 * primary by streaming and was then promoted takes the row over by itself:
 * that is a failover.  CREATE EXTENSION names the server it runs on.
 */
#include "postgres.h"

#include <unistd.h>

#include "access/xlog.h"
#include "catalog/pg_authid.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "postmaster/bgworker.h"
#include "postmaster/postmaster.h"
#include "replication/walreceiver.h"
#include "storage/spin.h"
#include "utils/builtins.h"

#include "enkash.h"
#include "enkash_spi.h"
#include "live.h"

#define IDENTITY_COLUMNS 5

/* The server's identity: what a copy of its data directory cannot inherit. */
typedef struct ServerIdentity
{
	char		system_identifier[32];
	char		host[256];
	int			port;
	const char *data_directory;
} ServerIdentity;

/* Once live, a process stays so: nothing makes a live server a copy. */
static bool live_known = false;

static bool live_or_taken_over(bool may_take_over);

static void
own_identity(ServerIdentity *id)
{
	snprintf(id->system_identifier, sizeof(id->system_identifier), UINT64_FORMAT,
			 GetSystemIdentifier());
	if (gethostname(id->host, sizeof(id->host)) != 0)
		strlcpy(id->host, "unknown", sizeof(id->host));
	id->host[sizeof(id->host) - 1] = '\0';
	id->port = PostPortNumber;
	id->data_directory = DataDir;
}

/*
 * Whether this server's WAL receiver heard from a primary since the server
 * started: a streaming standby's did, a restored copy's never ran.
 */
static bool
streamed_from_primary(void)
{
	TimestampTz last;

	if (WalRcv == NULL)
		return false;
	SpinLockAcquire(&WalRcv->mutex);
	last = WalRcv->lastMsgReceiptTime;
	SpinLockRelease(&WalRcv->mutex);
	return last != 0;
}

/* Names this server in enkash.live_server; made_live_by says who or what. */
static void
record_identity(const ServerIdentity *id, const char *made_live_by)
{
	Oid			types[IDENTITY_COLUMNS] = {TEXTOID, TEXTOID, INT4OID, TEXTOID, TEXTOID};
	Datum		values[IDENTITY_COLUMNS];

	values[0] = CStringGetTextDatum(id->system_identifier);
	values[1] = CStringGetTextDatum(id->host);
	values[2] = Int32GetDatum(id->port);
	values[3] = CStringGetTextDatum(id->data_directory);
	values[4] = CStringGetTextDatum(made_live_by);
	if (SPI_execute_with_args(
							  "INSERT INTO enkash.live_server AS l (one_row, system_identifier, host, "
							  "port, data_directory, made_live_by) VALUES (true, $1, $2, $3, $4, $5) "
							  "ON CONFLICT (one_row) DO UPDATE SET system_identifier = $1, host = $2, "
							  "port = $3, data_directory = $4, made_live_by = $5",
							  IDENTITY_COLUMNS, types, values, NULL, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "enkash could not record the live server");
}

/*
 * Whether this server may send.  A standby sends nothing anyway (money.c
 * refuses, the workers do not run), so only a server out of recovery is
 * asked.  Runs in the caller's transaction.  A background worker that
 * waits says so once.
 */
bool
enkash_live_here(void)
{
	return live_or_taken_over(true);
}

/* What enkash.live_server says of this server (read_live_row). */
typedef struct LiveCheck
{
	ServerIdentity self;
	bool		may_take_over;
	MemoryContext result_cxt;	/* where named is allocated */
	bool		live;
	bool		same_cluster;
	char	   *named;			/* the server the row names, or NULL */
} LiveCheck;

/*
 * Reads enkash.live_server and, for a promoted streaming standby, takes it
 * over.  Statements are fully qualified; run by enkash_as_role.
 */
static void
read_live_row(void *arg)
{
	LiveCheck  *check = (LiveCheck *) arg;
	const ServerIdentity *self = &check->self;

	if (SPI_execute("SELECT system_identifier, host, port::pg_catalog.text, data_directory "
					"FROM enkash.live_server", true, 1) == SPI_OK_SELECT &&
		SPI_processed == 1)
	{
		HeapTuple	row = SPI_tuptable->vals[0];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		char	   *sysid = SPI_getvalue(row, desc, 1);
		char	   *host = SPI_getvalue(row, desc, 2);
		char	   *port = SPI_getvalue(row, desc, 3);
		char	   *dir = SPI_getvalue(row, desc, 4);
		MemoryContext spi_cxt;

		check->same_cluster = strcmp(sysid, self->system_identifier) == 0;
		check->live = check->same_cluster && strcmp(host, self->host) == 0 &&
			atoi(port) == self->port && strcmp(dir, self->data_directory) == 0;
		spi_cxt = MemoryContextSwitchTo(check->result_cxt);
		check->named = psprintf("host \"%s\", port %s, data directory \"%s\"",
								host, port, dir);
		MemoryContextSwitchTo(spi_cxt);
	}
	if (!check->live && check->may_take_over && check->same_cluster &&
		streamed_from_primary())
	{
		record_identity(self, "promotion");
		ereport(LOG,
				(errmsg("enkash: this server was promoted from a streaming standby and is now the live server"),
				 errdetail("It takes over from the server at %s.", check->named)));
		check->live = true;
	}
}

static bool
live_or_taken_over(bool may_take_over)
{
	static bool said = false;
	LiveCheck	check = {0};

	if (live_known || RecoveryInProgress())
		return true;
	own_identity(&check.self);
	check.may_take_over = may_take_over;
	check.result_cxt = CurrentMemoryContext;
	/* the bootstrap superuser's rights: a role making a money call has none on the table */
	enkash_as_role(BOOTSTRAP_SUPERUSERID, read_live_row, &check);

	if (check.live)
		live_known = true;
	else if (MyBgworkerEntry && may_take_over && !said)
		ereport(LOG,
				(errmsg("%s waits: this server is a copy not confirmed as the live enkash server",
						MyBgworkerEntry->bgw_type),
				 errdetail("enkash.live_server names the server at %s; nothing is sent from here.",
						   check.named ? check.named : "no server"),
				 errhint("If this server is now the live one, run SELECT enkash_confirm_live(); on it.")));
	if (may_take_over)
		said = !check.live;
	return check.live;
}

/* Refuses ep's call on a server that is not the live one: nothing is sent. */
void
enkash_require_live(const EnkashEndpoint *ep)
{
	if (!enkash_live_here())
		ereport(ERROR,
				(errcode(ERRCODE_ENKASH_NOT_LIVE),
				 errmsg("%s was refused: this server is a restored or cloned copy, not the live server", ep->label),
				 errdetail("Another server sends to EnKash with these credentials (see enkash.live_server). Nothing was sent."),
				 errhint("If this server is now the live one, an administrator runs SELECT enkash_confirm_live(); on it.")));
}

PG_FUNCTION_INFO_V1(enkash_confirm_live);

/* An administrator's confirmation (name_this_server). */
typedef struct ConfirmLive
{
	ServerIdentity self;
	const char *confirmer;
	bool		had_row;		/* false at CREATE EXTENSION */
} ConfirmLive;

static void
name_this_server(void *arg)
{
	ConfirmLive *confirm = (ConfirmLive *) arg;

	confirm->had_row = SPI_execute("SELECT 1 FROM enkash.live_server", true, 1) == SPI_OK_SELECT &&
		SPI_processed > 0;
	record_identity(&confirm->self, confirm->confirmer);
}

/*
 * enkash_confirm_live(): an administrator names this server the live one.
 * True if it was not before.
 */
Datum
enkash_confirm_live(PG_FUNCTION_ARGS)
{
	ConfirmLive confirm;
	bool		was_live;

	if (RecoveryInProgress())
		ereport(ERROR,
				(errcode(ERRCODE_READ_ONLY_SQL_TRANSACTION),
				 errmsg("a standby cannot be confirmed as the live server"),
				 errhint("Promote it first.")));
	was_live = enkash_live_here();
	own_identity(&confirm.self);
	confirm.confirmer = GetUserNameFromId(GetUserId(), false);
	enkash_as_role(BOOTSTRAP_SUPERUSERID, name_this_server, &confirm);
	live_known = true;
	if (!was_live && confirm.had_row)	/* not at CREATE EXTENSION */
		ereport(LOG,
				(errmsg("enkash: %s confirmed this server as the live server; its queue will be sent",
						confirm.confirmer)));
	PG_RETURN_BOOL(!was_live);
}

PG_FUNCTION_INFO_V1(enkash_is_live);

/* enkash_is_live(): for enkash.health; false on a copy that waits. */
Datum
enkash_is_live(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(live_or_taken_over(false));
}
