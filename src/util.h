/*-------------------------------------------------------------------------
 *
 * util.h
 *	  Small helpers over SQL values that several modules need: text in byte
 *	  order (the order of the C collation) and an interval's length.
 *
 * They are static inline, in a header rather than a .c file, because the
 * text comparisons sit in sort comparators and hash probes (refresh.c,
 * sessionize.c, funnel_breakdown.c) where a call into another file would
 * cost on every row; the interval check is two tests, used once per call.
 *
 *-------------------------------------------------------------------------
 */
#ifndef CLICKSTREAM_UTIL_H
#define CLICKSTREAM_UTIL_H

#include "common/int.h"
#include "datatype/timestamp.h"

/* Do two texts (or any varlenas) hold the same bytes? */
static inline bool
UtilTextEqual(const struct varlena *a, const struct varlena *b)
{
	Size		la = VARSIZE_ANY_EXHDR(a);

	return la == VARSIZE_ANY_EXHDR(b) &&
		memcmp(VARDATA_ANY(a), VARDATA_ANY(b), la) == 0;
}

/* Byte order of two texts (or any varlenas), as the C collation orders. */
static inline int
UtilTextCompare(const struct varlena *a, const struct varlena *b)
{
	Size		la = VARSIZE_ANY_EXHDR(a);
	Size		lb = VARSIZE_ANY_EXHDR(b);
	int			c = memcmp(VARDATA_ANY(a), VARDATA_ANY(b), Min(la, lb));

	if (c != 0)
		return c;
	return (la > lb) - (la < lb);
}

/*
 * An interval's length in microseconds.  Errors, naming the argument, when
 * it holds months (months_hint says what to write instead) or overflows.
 */
static inline int64
UtilIntervalUsec(const Interval *iv, const char *name, const char *months_hint)
{
	int64		usec;

	if (iv->month != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must not contain months or years", name),
				 errhint("%s", months_hint)));
	if (pg_mul_s64_overflow((int64) iv->day, USECS_PER_DAY, &usec) ||
		pg_add_s64_overflow(usec, iv->time, &usec))
		ereport(ERROR,
				(errcode(ERRCODE_DATETIME_VALUE_OUT_OF_RANGE),
				 errmsg("%s is out of range", name)));
	return usec;
}

#endif							/* CLICKSTREAM_UTIL_H */
