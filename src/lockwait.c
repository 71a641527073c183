/*-------------------------------------------------------------------------
 *
 * lockwait.c
 *	  What the worker's write waited on when its lock_timeout expired: the
 *	  lock and the processes holding it, for the workers view.
 *
 * The write runs with a short lock_timeout (bronze.c); when it expires,
 * PostgreSQL has already left the lock's wait queue, and the error says only
 * "canceling statement due to lock timeout".  So while a write runs, a
 * timer samples every LOCKWAIT_SAMPLE_MS which lock this backend is waiting
 * for (MyProc->waitLock, set by the lock manager while it sleeps).  The
 * handler runs in signal context and only copies the lock's tag and mode:
 * no allocation, no lock, no PostgreSQL function.  A wait that lasts as long
 * as lock_timeout is sampled several times, so the last sample is the lock
 * that timed out.  Afterwards LockWaitDescribe() names it (relation, row,
 * transaction or advisory lock) and the processes whose granted locks
 * conflict with it (the lock manager's own conflict check).
 *
 *-------------------------------------------------------------------------
 */
#include "clickstream.h"

#include <signal.h>

#include "access/xact.h"
#include "miscadmin.h"
#include "storage/lock.h"
#include "storage/proc.h"
#include "storage/sinvaladt.h"
#include "utils/lsyscache.h"
#include "utils/timeout.h"
#include "utils/timestamp.h"

#define LOCKWAIT_SAMPLE_MS 200

static TimeoutId sample_timeout = MAX_TIMEOUTS;
static volatile sig_atomic_t sampled = false;
static LOCKTAG sampled_tag;
static LOCKMODE sampled_mode;

/* Timer handler (signal context): remember the lock this backend waits for. */
static void
LockWaitSample(void)
{
	LOCK	   *lock = MyProc->waitLock;

	if (lock != NULL)
	{
		sampled_tag = lock->tag;
		sampled_mode = MyProc->waitLockMode;
		sampled = true;
	}
}

/* Start sampling this backend's lock waits (before a write). */
void
LockWaitStart(void)
{
	if (sample_timeout == MAX_TIMEOUTS)
		sample_timeout = RegisterTimeout(USER_TIMEOUT, LockWaitSample);
	sampled = false;
	enable_timeout_every(sample_timeout,
						 TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
													 LOCKWAIT_SAMPLE_MS),
						 LOCKWAIT_SAMPLE_MS);
}

/* Stop sampling (after the write). */
void
LockWaitStop(void)
{
	if (sample_timeout != MAX_TIMEOUTS)
		disable_timeout(sample_timeout, false);
}

/* Append "schema.name" of a relation of this database, or its OID. */
static void
LockWaitRelation(StringInfo s, Oid dbid, Oid relid)
{
	char	   *name = (dbid == MyDatabaseId) ? get_rel_name(relid) : NULL;

	if (name != NULL)
	{
		char	   *nsp = get_namespace_name(get_rel_namespace(relid));

		appendStringInfo(s, "%s.%s", nsp ? nsp : "?", name);
	}
	else
		appendStringInfo(s, "relation %u of database %u", relid, dbid);
}

/*
 * Describe the lock the write last waited for and who holds it, into buf
 * (at most len bytes), for example "RowShareLock on relation
 * clickstream.ingest_positions held by pid 1234".  context: the error
 * context of the lock timeout (which row a transaction wait was for, shown
 * for such a wait only), or NULL.  Runs its own short transaction for the
 * names: call it with none open.
 */
void
LockWaitDescribe(char *buf, size_t len, const char *context)
{
	StringInfoData s;
	LOCKTAG		tag;
	LOCKMODE	mode;
	VirtualTransactionId *holders;
	int			nholders = 0;
	int			shown = 0;

	if (!sampled)
	{
		strlcpy(buf, "a lock (its holder was not seen)", len);
		return;
	}
	tag = sampled_tag;
	mode = sampled_mode;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	initStringInfo(&s);
	appendStringInfo(&s, "%s on ", GetLockmodeName(tag.locktag_lockmethodid, mode));
	switch ((LockTagType) tag.locktag_type)
	{
		case LOCKTAG_RELATION:
			appendStringInfoString(&s, "relation ");
			LockWaitRelation(&s, tag.locktag_field1, tag.locktag_field2);
			break;
		case LOCKTAG_TUPLE:
			appendStringInfo(&s, "row (%u,%u) of ", tag.locktag_field3,
							 (unsigned int) tag.locktag_field4);
			LockWaitRelation(&s, tag.locktag_field1, tag.locktag_field2);
			break;
		case LOCKTAG_TRANSACTION:
			/* a row lock: the wait is for the transaction that holds it */
			appendStringInfo(&s, "transaction %u (a row lock)", tag.locktag_field1);
			break;
		case LOCKTAG_ADVISORY:
			appendStringInfo(&s, "advisory lock (%u, %u)", tag.locktag_field2,
							 tag.locktag_field3);
			break;
		default:
			appendStringInfo(&s, "a lock of type %d", (int) tag.locktag_type);
			break;
	}

	holders = GetLockConflicts(&tag, mode, &nholders);
	for (int i = 0; i < nholders; i++)
	{
		PGPROC	   *proc = BackendIdGetProc(holders[i].backendId);

		appendStringInfoString(&s, shown == 0 ? " held by " : ", ");
		if (proc != NULL && proc->pid != 0)
			appendStringInfo(&s, "pid %d", proc->pid);
		else
			appendStringInfoString(&s, "a prepared transaction");
		shown++;
	}
	if (shown == 0)
		appendStringInfoString(&s, " (no holder now: waiting behind other waiters, or just released)");
	/* for a row lock, the context says which row ("while locking tuple") */
	if (tag.locktag_type == LOCKTAG_TRANSACTION && context != NULL &&
		context[0] != '\0')
	{
		int			n = strcspn(context, "\n");

		appendStringInfo(&s, " (%.*s)", n, context);
	}
	strlcpy(buf, s.data, len);
	CommitTransactionCommand();
}
