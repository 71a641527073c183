/*-------------------------------------------------------------------------
 *
 * clickstream.c
 *	  Module entry point: refuses to load unless preloaded, then lets each
 *	  module define its settings, shared memory and background workers.
 *
 *-------------------------------------------------------------------------
 */
#include "clickstream.h"

#include "fmgr.h"
#include "miscadmin.h"

PG_MODULE_MAGIC;

void		_PG_init(void);

/* Set up the extension; only possible from shared_preload_libraries. */
void
_PG_init(void)
{
	if (IsBinaryUpgrade)
		return;

	if (!process_shared_preload_libraries_in_progress)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("clickstream can only be loaded via shared_preload_libraries"),
				 errhint("Add clickstream to shared_preload_libraries in postgresql.conf and restart the server.")));

	GucInit();
	StatusInit();
	WorkerRegister();
}
