/*-------------------------------------------------------------------------
 *
 * isolate.c
 *	  Writing a range of rows so that the rows the write refuses are found
 *	  and set aside, and every other row is written.
 *
 * The bulk writes of the extension (a bronze batch, bronze.c; a refresh step
 * run with isolate, refresh.c) write many rows in one statement.  When one
 * of them is refused (a data or constraint error, RAISE in a trigger, a
 * value an index cannot hold), the range is written again in halves, each in
 * a subtransaction, until the refused rows are alone; the caller is told
 * each of them with its error, and the other rows stay written.  An error
 * that is not about a row (out of disk, a lock timeout, ...) is re-thrown.
 *
 * A range with k refused rows among n costs about 2k log2(n) attempts.
 *
 *-------------------------------------------------------------------------
 */
#include "clickstream.h"

#include "access/xact.h"
#include "utils/memutils.h"
#include "utils/resowner.h"

/*
 * Is this error about the rows being written (so that writing in halves can
 * isolate it)?  The same classes as the EXCEPTION clause around
 * promote_rows in clickstream.refresh_step.
 */
bool
IsolateIsRowError(int sqlerrcode)
{
	int			class = ERRCODE_TO_CATEGORY(sqlerrcode);

	return class == ERRCODE_DATA_EXCEPTION ||
		class == ERRCODE_INTEGRITY_CONSTRAINT_VIOLATION ||
		class == ERRCODE_PROGRAM_LIMIT_EXCEEDED ||
		class == ERRCODE_TO_CATEGORY(ERRCODE_RAISE_EXCEPTION);
}

/*
 * Write rows [lo, hi) in a subtransaction; returns NULL when that worked,
 * else the error (in w->errcxt), the subtransaction rolled back.
 */
static ErrorData *
IsolateAttempt(const IsolateWriter *w, int64 lo, int64 hi)
{
	MemoryContext cxt = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	MemoryContext attempt;
	ErrorData  *volatile edata = NULL;

	/* what the write allocates lives in a context freed on either path */
	attempt = AllocSetContextCreate(cxt, "clickstream write attempt",
									ALLOCSET_DEFAULT_SIZES);
	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(attempt);
	PG_TRY();
	{
		w->write(w->arg, lo, hi);
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = owner;
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(w->errcxt);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = owner;
	}
	PG_END_TRY();
	MemoryContextDelete(attempt);
	return edata;
}

/*
 * Write rows [lo, hi) through w; when the write refuses a row, write the
 * range in halves until each refused row is alone, and pass it to
 * w->refused.  failed: the whole range is known to fail, start with its
 * halves (a single row is tried anyway, for its error message).
 */
void
IsolateWrite(const IsolateWriter *w, int64 lo, int64 hi, bool failed)
{
	int64		mid;

	if (lo >= hi)
		return;
	if (w->has_rows != NULL && !w->has_rows(w->arg, lo, hi))
		return;
	if (!failed || hi - lo == 1)
	{
		ErrorData  *edata = IsolateAttempt(w, lo, hi);

		if (edata == NULL)
			return;
		if (!IsolateIsRowError(edata->sqlerrcode))
			ReThrowError(edata);
		if (hi - lo == 1)
		{
			w->refused(w->arg, lo, edata);
			return;
		}
	}
	mid = lo + (hi - lo) / 2;
	IsolateWrite(w, lo, mid, false);
	IsolateWrite(w, mid, hi, false);
}
