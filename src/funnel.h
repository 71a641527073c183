/*-------------------------------------------------------------------------
 *
 * funnel.h
 *	  What the funnel aggregates share: a funnel's spec, the state of kept
 *	  rows, and the pass that evaluates them (funnel_agg.c), which
 *	  funnel_breakdown.c runs once per key.
 *
 *-------------------------------------------------------------------------
 */
#ifndef CLICKSTREAM_FUNNEL_H
#define CLICKSTREAM_FUNNEL_H

#include "datatype/timestamp.h"
#include "fmgr.h"
#include "utils/array.h"

#include "util.h"

/* Most conditions (steps + exclusions) one funnel accepts. */
#define FUNNEL_MAX_CONDITIONS 1024

/*
 * What a funnel is: the window, the steps, the exclusions and the modes.
 * Shared by every state of one aggregate call with the same arguments.
 */
typedef struct FunnelSpec
{
	int64		window;			/* microseconds, >= 0 */
	int32		nsteps;			/* >= 1 */
	int32		nexcl;			/* exclusions, after the steps */
	int32		nwords;			/* uint64 words of a row's condition mask */
	uint32		modes;			/* FUNNEL_STRICT_* (funnel_agg.c) */
	int32		excl[FLEXIBLE_ARRAY_MEMBER];	/* from, to per exclusion */
} FunnelSpec;

#define FunnelSpecSize(nexcl) \
	(offsetof(FunnelSpec, excl) + sizeof(int32) * 2 * (nexcl))

/*
 * The transition state: the kept rows, each a timestamp followed by nwords
 * mask words (bit i = condition i + 1: steps first, then exclusions).
 */
typedef struct FunnelState
{
	const FunnelSpec *spec;
	int64		nrows;
	int64		maxrows;
	bool		sorted;			/* rows are in FunnelRowCompare order */
	uint64	   *rows;			/* inline_rows until they outgrow it */
	uint64		inline_rows[FLEXIBLE_ARRAY_MEMBER];
} FunnelState;

/* The arguments the cached spec was built from (fn_extra of a transfn). */
typedef struct FunnelArgCache
{
	Interval	window;
	int32		nconds;
	bool		has_options;
	bool		constant;		/* window and options are constants */
	text	   *options;		/* a copy, or NULL */
	const FunnelSpec *spec;
} FunnelArgCache;

/* Compare two rows: timestamp, then the documented tie-break of the masks. */
static inline int
FunnelRowCompare(const uint64 *a, const uint64 *b, int nwords)
{
	int64		ta = (int64) a[0];
	int64		tb = (int64) b[0];

	if (ta != tb)
		return ta < tb ? -1 : 1;

	/*
	 * Equal timestamps: the row matching condition 1 first; if both or
	 * neither do, the one matching condition 2, and so on.  That is the
	 * lowest bit where the masks differ, set in the row that goes first.
	 */
	for (int w = 1; w <= nwords; w++)
	{
		uint64		d = a[w] ^ b[w];

		if (d != 0)
			return (a[w] & d & (~d + 1)) ? -1 : 1;
	}
	return 0;
}

/* funnel_agg.c */
extern FunnelState *FunnelStateCreate(MemoryContext cxt, const FunnelSpec *spec,
									  int64 capacity);
extern void FunnelStateReserve(FunnelState *state, int64 n);
extern void FunnelStateSort(FunnelState *state);
extern void FunnelStateFree(FunnelState *state);
extern int	FunnelStateLevel(FunnelState *state);
extern bool FunnelSpecEqual(const FunnelSpec *a, const FunnelSpec *b);
extern void FunnelMismatch(void);
extern FunnelArgCache *FunnelArgCacheUpdate(FunctionCallInfo fcinfo,
											FunnelArgCache *cache,
											const Interval *window,
											text *options, int nconds);
extern ArrayType *FunnelConditions(FunctionCallInfo fcinfo, int condarg,
								   int *nconds);
extern bool FunnelConditionMask(ArrayType *conds, int nconds, uint64 *mask,
								int nwords);

/* Append one row; keeps track of whether the rows are still in order. */
static inline void
FunnelStateAppend(FunnelState *state, int64 ts, const uint64 *mask)
{
	int			nwords = state->spec->nwords;
	int64		stride = 1 + nwords;
	uint64	   *row;

	if (state->nrows >= state->maxrows)
		FunnelStateReserve(state, 1);
	row = state->rows + state->nrows * stride;
	row[0] = (uint64) ts;
	memcpy(row + 1, mask, sizeof(uint64) * nwords);
	if (state->sorted && state->nrows > 0 &&
		FunnelRowCompare(row - stride, row, nwords) > 0)
		state->sorted = false;
	state->nrows++;
}

/* Were the cached spec's arguments these? */
static inline bool
FunnelArgCacheMatches(const FunnelArgCache *cache, const Interval *window,
					  text *options, int nconds)
{
	if (cache->nconds != nconds ||
		memcmp(&cache->window, window, sizeof(Interval)) != 0 ||
		cache->has_options != (options != NULL))
		return false;
	return options == NULL || UtilTextEqual(options, cache->options);
}

/*
 * The spec of these arguments: the one cached in fn_extra if they are the
 * ones it was built from, else a new one, cached.
 */
static inline const FunnelSpec *
FunnelSpecCached(FunctionCallInfo fcinfo, const Interval *window, text *options,
				 int nconds)
{
	FunnelArgCache *cache = (FunnelArgCache *) fcinfo->flinfo->fn_extra;

	if (cache == NULL || !FunnelArgCacheMatches(cache, window, options, nconds))
		cache = FunnelArgCacheUpdate(fcinfo, cache, window, options, nconds);
	return cache->spec;
}

#endif							/* CLICKSTREAM_FUNNEL_H */
