/*-------------------------------------------------------------------------
 *
 * drop.c
 *	  What DROP EXTENSION clickstream must remove outside the extension: the
 *	  pg_cron job clickstream.schedule() registered.
 *
 * The job lives in pg_cron's table, not in the extension, so dropping the
 * extension would leave it behind to fail every minute.  An event trigger
 * on ddl_command_start (a member of the extension) sees the DROP before it
 * runs: an sql_drop trigger would not do, since it is dropped by the very
 * command it should react to and so never fires for it.  Only a C function
 * can tell which extension or schema a DROP names: it reads the parse tree.
 * The job is removed in the DROP's transaction, so a DROP that fails keeps
 * it.
 *
 *-------------------------------------------------------------------------
 */
#include "clickstream.h"

#include "commands/event_trigger.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "nodes/parsenodes.h"
#include "utils/builtins.h"

PG_FUNCTION_INFO_V1(clickstream_drop_cleanup);

/* Whether a DROP statement names the extension or its schema. */
static bool
DropNamesClickstream(DropStmt *stmt)
{
	ListCell   *lc;

	if (stmt->removeType != OBJECT_EXTENSION && stmt->removeType != OBJECT_SCHEMA)
		return false;
	foreach(lc, stmt->objects)
	{
		Node	   *name = (Node *) lfirst(lc);

		/* both DROP EXTENSION and DROP SCHEMA name plain identifiers */
		if (IsA(name, String) && strcmp(strVal(name), "clickstream") == 0)
			return true;
	}
	return false;
}

/*
 * clickstream.drop_cleanup(): event trigger function (ddl_command_start of
 * DROP EXTENSION and DROP SCHEMA); when the statement drops clickstream,
 * unschedule this database's clickstream-refresh jobs of pg_cron.
 */
Datum
clickstream_drop_cleanup(PG_FUNCTION_ARGS)
{
	EventTriggerData *trigdata;
	bool		has_cron;
	bool		isnull;

	if (!CALLED_AS_EVENT_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("clickstream.drop_cleanup() must be called as an event trigger")));
	trigdata = (EventTriggerData *) fcinfo->context;
	if (!IsA(trigdata->parsetree, DropStmt) ||
		!DropNamesClickstream((DropStmt *) trigdata->parsetree))
		PG_RETURN_VOID();

	SPI_connect();
	if (SPI_execute("SELECT pg_catalog.to_regclass('cron.job') IS NOT NULL", true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not look for pg_cron's job table");
	has_cron = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	if (has_cron)
	{
		if (SPI_execute("SELECT cron.unschedule(j.jobid) FROM cron.job j "
						"WHERE j.jobname = 'clickstream-refresh' "
						"AND j.database = pg_catalog.current_database()",
						false, 0) != SPI_OK_SELECT)
			elog(ERROR, "could not unschedule the clickstream-refresh job");
		if (SPI_processed > 0)
			ereport(NOTICE,
					(errmsg("clickstream: removed the pg_cron job clickstream-refresh")));
	}
	SPI_finish();
	PG_RETURN_VOID();
}
