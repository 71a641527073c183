/*-------------------------------------------------------------------------
 *
 * funnel_agg.c
 *	  The funnel aggregates clickstream.funnel_agg (how many steps of a
 *	  chain an attempt completed) and clickstream.funnel_steps (the same,
 *	  with the timestamps of the reported attempt's steps), and the pass
 *	  that evaluates a funnel, which funnel_breakdown.c runs per key.
 *
 * The semantics are defined once, in docs/sessions-and-funnels.md
 * ("Funnels"), and repeated in the COMMENTs of the aggregates.  In short:
 * rows are taken in timestamp order (ties in a fixed order of the conditions
 * they match); an attempt starts at every row matching step 1 and advances
 * greedily, at the first row that matches its next step within the window;
 * the modes end an attempt (strict_order, strict_deduplication) or restrict
 * which rows advance it (strict_increase, strict_once); an exclusion event
 * sends an attempt back to the step before the exclusion's range.  The
 * result is the furthest step any attempt reached.
 *
 * Design.  The transition function keeps only the rows that match a step or
 * an exclusion (under strict_order every row, since any row can interrupt),
 * as a timestamp and a bitmask of the conditions: 16 bytes per row for up to
 * 64 conditions.  Nothing is evaluated until the final function, which
 * sorts the rows (skipped when they came in order) and runs one pass over
 * them.  So the result does not depend on the input order, combining two
 * states is a concatenation (a merge when both are sorted), and a state
 * serializes to a compact bytea for parallel aggregation (validated on the
 * way back: no bytea can make the final pass misbehave).  The conditions
 * arrive as one boolean array (VARIADIC) or, through funnel_agg's
 * fixed-arity overloads (1 to 8 conditions), as arguments: the same state.
 *
 * The pass (FunnelRunRow) does not simulate each attempt separately: two
 * attempts at the same step react identically to every later row except for
 * the window, so only the one that started last is kept per step (two per
 * step under strict_increase, where the time of the last move matters too).
 * That makes the pass O(rows x active steps), independent of how many
 * attempts overlap, and exact: test/sql/funnel.sql compares it with a
 * per-attempt reference implementation on random data.
 *
 *-------------------------------------------------------------------------
 */
#include "clickstream.h"

#include "access/htup_details.h"
#include "catalog/pg_type.h"
#include "common/int.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "nodes/primnodes.h"
#include "port/pg_bitutils.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "funnel.h"
#include "util.h"

PG_FUNCTION_INFO_V1(clickstream_funnel_transfn);
PG_FUNCTION_INFO_V1(clickstream_funnel_transfn_args);
PG_FUNCTION_INFO_V1(clickstream_funnel_transfn_options_args);
PG_FUNCTION_INFO_V1(clickstream_funnel_combine);
PG_FUNCTION_INFO_V1(clickstream_funnel_serialize);
PG_FUNCTION_INFO_V1(clickstream_funnel_deserialize);
PG_FUNCTION_INFO_V1(clickstream_funnel_final);
PG_FUNCTION_INFO_V1(clickstream_funnel_steps_final);

/* Modes, as bits of FunnelSpec.modes and of the serialized state. */
#define FUNNEL_STRICT_ORDER		0x01
#define FUNNEL_STRICT_DEDUP		0x02
#define FUNNEL_STRICT_INCREASE	0x04
#define FUNNEL_STRICT_ONCE		0x08
#define FUNNEL_ALL_MODES		0x0F

/* First word of a serialized state, and the version of its layout. */
#define FUNNEL_SERIAL_MAGIC		0x314C4E46	/* "FNL1" */

/* Witness arena size below which it is never compacted. */
#define FUNNEL_MIN_COMPACT_NODES 65536

/*
 * A new state and its first rows are one allocation of this size (a power
 * of two, as the allocator rounds up anyway): one cache miss less per row
 * than a separate array, and one allocation per group.
 */
#define FUNNEL_STATE_BYTES		128

/* One attempt of the final pass, as kept for the step it has reached. */
typedef struct FunnelAttempt
{
	int64		start_pos;		/* position of its step-1 row: later wins */
	int64		start_ts;
	int32		path;			/* witness node of its last step, or -1 */
} FunnelAttempt;

/* An attempt that moved during the current row, waiting to be placed. */
typedef struct FunnelMove
{
	int32		level;
	bool		advanced;		/* false: sent back by an exclusion */
	FunnelAttempt attempt;
} FunnelMove;

/* A witness node: the timestamp of one step, and the step before it. */
typedef struct FunnelNode
{
	int64		ts;
	int32		parent;
} FunnelNode;

/* Funnels up to this many steps run their final pass without palloc. */
#define FUNNEL_PASS_INLINE_STEPS 63

/* The final pass over the sorted rows. */
typedef struct FunnelPass
{
	const FunnelSpec *spec;
	int			nsteps;
	bool		cascade;		/* one row may advance several steps */
	int			lwords;			/* words of the level bitsets */
	FunnelAttempt *old;			/* per level: last move before cur_ts */
	FunnelAttempt *fresh;		/* per level: last move at cur_ts
								 * (strict_increase only) */
	uint64	   *old_active;
	uint64	   *fresh_active;
	FunnelMove *moves;
	int			nmoves;
	int64		cur_ts;
	bool		have_ts;
	int			best;			/* furthest step reached */
	/* the reported attempt (funnel_steps only) */
	bool		witness;
	FunnelNode *nodes;
	int32		nnodes;
	int32		maxnodes;
	int64	   *best_ts;		/* its step timestamps, [nsteps] */
	/* the arrays above for small funnels (not initialized) */
	FunnelAttempt old_buf[FUNNEL_PASS_INLINE_STEPS + 1];
	FunnelAttempt fresh_buf[FUNNEL_PASS_INLINE_STEPS + 1];
	uint64		active_buf[2];
	FunnelMove	moves_buf[2 * FUNNEL_PASS_INLINE_STEPS + 2];
} FunnelPass;

/* Serialized state header; the exclusions and the rows follow it. */
typedef struct FunnelSerialHeader
{
	uint32		magic;
	uint32		modes;
	int32		nsteps;
	int32		nexcl;
	int64		window;
	int64		nrows;
} FunnelSerialHeader;

/* Is bit i set in a mask? */
static inline bool
FunnelBit(const uint64 *mask, int i)
{
	return (mask[i >> 6] >> (i & 63)) & 1;
}

/* Rows of one mask word, for the specialized sort. */
typedef struct FunnelRow1
{
	uint64		ts;
	uint64		mask;
} FunnelRow1;

/* FunnelRowCompare for one-word rows. */
static inline int
FunnelRow1Compare(const FunnelRow1 *a, const FunnelRow1 *b)
{
	return FunnelRowCompare(&a->ts, &b->ts, 1);
}

#define ST_SORT funnel_sort_rows1
#define ST_ELEMENT_TYPE FunnelRow1
#define ST_COMPARE(a, b) FunnelRow1Compare(a, b)
#define ST_SCOPE static
#define ST_DEFINE
#include "lib/sort_template.h"

/* qsort_arg comparator for rows of any width (arg: the number of words). */
static int
FunnelRowCompareArg(const void *a, const void *b, void *arg)
{
	return FunnelRowCompare(a, b, *(int *) arg);
}

/* Are two specs the same funnel? */
bool
FunnelSpecEqual(const FunnelSpec *a, const FunnelSpec *b)
{
	if (a == b)
		return true;
	return a->window == b->window && a->nsteps == b->nsteps &&
		a->nexcl == b->nexcl && a->modes == b->modes &&
		memcmp(a->excl, b->excl, sizeof(int32) * 2 * a->nexcl) == 0;
}

/* Raise the error for arguments that change within a group. */
void
FunnelMismatch(void)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("funnel arguments differ between rows of one group"),
			 errdetail("The window, the options and the number of conditions must be the same on every row of a group."),
			 errhint("Use constants, or group by the column that sets them.")));
}

/* Read an unsigned step number at *p of the options; advances *p. */
static int
FunnelParseNumber(const char **p, const char *item)
{
	long		v = 0;
	const char *s = *p;

	while (*s == ' ' || *s == '\t')
		s++;
	if (*s < '0' || *s > '9')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid funnel option \"%s\"", item),
				 errhint("Write an exclusion as exclude(from_step, to_step), e.g. exclude(2, 3).")));
	while (*s >= '0' && *s <= '9')
	{
		v = v * 10 + (*s - '0');
		if (v > FUNNEL_MAX_CONDITIONS)
			v = FUNNEL_MAX_CONDITIONS + 1;
		s++;
	}
	while (*s == ' ' || *s == '\t')
		s++;
	*p = s;
	return (int) v;
}

/*
 * Build the spec of a call: parse the window, the options and the number of
 * conditions, with an error for anything invalid.  Allocates in cxt.
 */
static FunnelSpec *
FunnelSpecBuild(MemoryContext cxt, const Interval *window, const char *options,
				int nconds)
{
	FunnelSpec *spec;
	uint32		modes = 0;
	int			nexcl = 0;
	int32		excl[2 * FUNNEL_MAX_CONDITIONS];
	int64		w;
	const char *p = options ? options : "";

	w = UtilIntervalUsec(window, "funnel window",
						 "Months have no fixed length: write the window in days, e.g. '30 days'.");
	if (w < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("funnel window must not be negative")));

	/* options: a comma-separated list of modes and exclusions */
	for (;;)
	{
		char		item[64];
		int			len = 0;
		const char *start;

		while (*p == ' ' || *p == '\t' || *p == '\n')
			p++;
		if (*p == '\0')
			break;
		start = p;
		while ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || *p == '_')
		{
			if (len < (int) sizeof(item) - 1)
				item[len++] = pg_ascii_tolower((unsigned char) *p);
			p++;
		}
		item[len] = '\0';
		if (len == 0)
		{
			/* quote what is there, up to the next comma */
			while (*p && *p != ',')
				p++;
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid funnel option \"%.*s\"", (int) (p - start), start),
					 errhint("Valid options are strict_order, strict_deduplication, strict_increase, strict_once and exclude(from_step, to_step), separated by commas.")));
		}
		while (*p == ' ' || *p == '\t')
			p++;

		if (strcmp(item, "strict_order") == 0)
			modes |= FUNNEL_STRICT_ORDER;
		else if (strcmp(item, "strict_deduplication") == 0)
			modes |= FUNNEL_STRICT_DEDUP;
		else if (strcmp(item, "strict_increase") == 0)
			modes |= FUNNEL_STRICT_INCREASE;
		else if (strcmp(item, "strict_once") == 0)
			modes |= FUNNEL_STRICT_ONCE;
		else if (strcmp(item, "exclude") == 0)
		{
			int			from = 0,
						to = 0;

			if (nexcl >= FUNNEL_MAX_CONDITIONS)
				ereport(ERROR,
						(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
						 errmsg("too many funnel exclusions")));
			if (*p == '(')
			{
				p++;
				from = FunnelParseNumber(&p, "exclude");
				if (*p != ',')
					ereport(ERROR,
							(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
							 errmsg("invalid funnel option \"exclude\""),
							 errhint("Write an exclusion as exclude(from_step, to_step), e.g. exclude(2, 3).")));
				p++;
				to = FunnelParseNumber(&p, "exclude");
				if (*p != ')')
					ereport(ERROR,
							(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
							 errmsg("invalid funnel option \"exclude\""),
							 errhint("Write an exclusion as exclude(from_step, to_step), e.g. exclude(2, 3).")));
				p++;
				if (from < 1 || to <= from)
					ereport(ERROR,
							(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
							 errmsg("invalid funnel exclusion exclude(%d, %d)", from, to),
							 errdetail("The steps of an exclusion must satisfy 1 <= from_step < to_step <= number of steps.")));
			}
			/* plain "exclude": the whole funnel, resolved below */
			excl[2 * nexcl] = from;
			excl[2 * nexcl + 1] = to;
			nexcl++;
		}
		else if (strcmp(item, "strict") == 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid funnel option \"strict\""),
					 errhint("Did you mean strict_deduplication or strict_order?")));
		else
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid funnel option \"%s\"", item),
					 errhint("Valid options are strict_order, strict_deduplication, strict_increase, strict_once and exclude(from_step, to_step), separated by commas.")));

		while (*p == ' ' || *p == '\t' || *p == '\n')
			p++;
		if (*p == ',')
			p++;
		else if (*p != '\0')
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid funnel options \"%s\"", options),
					 errhint("Separate the options with commas.")));
	}

	if (nconds > FUNNEL_MAX_CONDITIONS)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("a funnel has at most %d conditions (steps and exclusions), got %d",
						FUNNEL_MAX_CONDITIONS, nconds)));
	if (nconds - nexcl < 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("a funnel needs at least one step"),
				 nexcl > 0 ?
				 errdetail("Got %d conditions, and the options declare %d exclusions; the exclusion conditions come after the steps.",
						   nconds, nexcl) :
				 errdetail("The condition array is empty.")));

	spec = MemoryContextAllocZero(cxt, FunnelSpecSize(nexcl));
	spec->window = w;
	spec->nsteps = nconds - nexcl;
	spec->nexcl = nexcl;
	spec->nwords = (nconds + 63) / 64;
	spec->modes = modes;
	for (int e = 0; e < nexcl; e++)
	{
		int			from = excl[2 * e],
					to = excl[2 * e + 1];

		if (from == 0)
		{
			/* plain "exclude": from step 1 to the last step */
			from = 1;
			to = spec->nsteps;
			if (to < 2)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("a funnel exclusion needs at least two steps")));
		}
		else if (to > spec->nsteps)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid funnel exclusion exclude(%d, %d)", from, to),
					 errdetail("The funnel has %d steps.", spec->nsteps)));
		spec->excl[2 * e] = from;
		spec->excl[2 * e + 1] = to;
	}
	return spec;
}

/* Create an empty state with room for capacity rows, in cxt. */
FunnelState *
FunnelStateCreate(MemoryContext cxt, const FunnelSpec *spec, int64 capacity)
{
	Size		rowbytes = sizeof(uint64) * (1 + spec->nwords);
	Size		inline_rows = (FUNNEL_STATE_BYTES - offsetof(FunnelState, inline_rows)) / rowbytes;
	FunnelState *state;

	if ((Size) capacity <= inline_rows)
		capacity = inline_rows;
	if (capacity > 0 && (Size) capacity <= (MaxAllocSize / 2) / rowbytes)
	{
		state = MemoryContextAlloc(cxt, offsetof(FunnelState, inline_rows) +
								   (Size) capacity * rowbytes);
		state->rows = state->inline_rows;
	}
	else
	{
		capacity = Max(capacity, 1);
		state = MemoryContextAlloc(cxt, offsetof(FunnelState, inline_rows));
		state->rows = MemoryContextAllocHuge(cxt, (Size) capacity * rowbytes);
	}
	state->spec = spec;
	state->nrows = 0;
	state->maxrows = capacity;
	state->sorted = true;
	return state;
}

/* Make room for n more rows (in the state's own memory context). */
void
FunnelStateReserve(FunnelState *state, int64 n)
{
	int64		need = state->nrows + n;
	Size		rowbytes = sizeof(uint64) * (1 + state->spec->nwords);
	int64		newmax;

	if (need <= state->maxrows)
		return;
	if (need > (int64) (MaxAllocHugeSize / rowbytes) / 2)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("funnel group too large: %lld matching rows", (long long) need)));
	newmax = Max(Max(state->maxrows * 2, need), 16);
	if (state->rows == state->inline_rows)
	{
		uint64	   *rows = MemoryContextAllocHuge(GetMemoryChunkContext(state),
												  (Size) newmax * rowbytes);

		memcpy(rows, state->rows, (Size) state->nrows * rowbytes);
		state->rows = rows;
	}
	else
		state->rows = repalloc_huge(state->rows, (Size) newmax * rowbytes);
	state->maxrows = newmax;
}

/* Merge b's rows into a's, both sorted; a stays sorted. */
static void
FunnelStateMerge(FunnelState *a, const FunnelState *b)
{
	int			nwords = a->spec->nwords;
	Size		rowbytes = sizeof(uint64) * (1 + nwords);
	int64		n = a->nrows + b->nrows;
	uint64	   *out;
	const uint64 *x = a->rows,
			   *y = b->rows;
	const uint64 *xend = a->rows + a->nrows * (1 + nwords);
	const uint64 *yend = b->rows + b->nrows * (1 + nwords);
	uint64	   *o;

	if (n > (int64) (MaxAllocHugeSize / rowbytes) / 2)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("funnel group too large: %lld matching rows", (long long) n)));
	out = MemoryContextAllocHuge(GetMemoryChunkContext(a),
								 (Size) Max(n, 16) * rowbytes);
	o = out;
	while (x < xend && y < yend)
	{
		/* ties: a's row first, as a stable merge */
		const uint64 *src = FunnelRowCompare(y, x, nwords) < 0 ? y : x;

		memcpy(o, src, rowbytes);
		o += 1 + nwords;
		if (src == x)
			x += 1 + nwords;
		else
			y += 1 + nwords;
	}
	memcpy(o, x, (char *) xend - (char *) x);
	o += xend - x;
	memcpy(o, y, (char *) yend - (char *) y);
	if (a->rows != a->inline_rows)
		pfree(a->rows);
	a->rows = out;
	a->nrows = n;
	a->maxrows = Max(n, 16);
}

/* Sort the rows in place, unless they already are. */
void
FunnelStateSort(FunnelState *state)
{
	int			nwords = state->spec->nwords;

	if (state->sorted)
		return;
	if (nwords == 1)
		funnel_sort_rows1((FunnelRow1 *) state->rows, state->nrows);
	else
		qsort_arg(state->rows, state->nrows, sizeof(uint64) * (1 + nwords),
				  FunnelRowCompareArg, &nwords);
	state->sorted = true;
}

/* Free a state and its rows. */
void
FunnelStateFree(FunnelState *state)
{
	if (state->rows != state->inline_rows)
		pfree(state->rows);
	pfree(state);
}

/* Are the window and the options of this aggregate call constants? */
static bool
FunnelArgsConstant(FunctionCallInfo fcinfo, bool has_options)
{
	Aggref	   *aggref = AggGetAggref(fcinfo);
	TargetEntry *tle;

	/* args: ts, window, [options,] conditions (then any ORDER BY columns) */
	if (aggref == NULL || list_length(aggref->args) < (has_options ? 4 : 3))
		return false;
	tle = list_nth_node(TargetEntry, aggref->args, 1);
	if (!IsA(tle->expr, Const))
		return false;
	if (has_options)
	{
		tle = list_nth_node(TargetEntry, aggref->args, 2);
		if (!IsA(tle->expr, Const))
			return false;
	}
	return true;
}

/* Build the spec of new arguments and cache it in fn_extra. */
FunnelArgCache *
FunnelArgCacheUpdate(FunctionCallInfo fcinfo, FunnelArgCache *cache,
					 const Interval *window, text *options, int nconds)
{
	MemoryContext fncxt = fcinfo->flinfo->fn_mcxt;
	char	   *opts = options ? text_to_cstring(options) : NULL;
	FunnelSpec *spec = FunnelSpecBuild(fncxt, window, opts, nconds);

	if (cache == NULL)
		cache = MemoryContextAllocZero(fncxt, sizeof(FunnelArgCache));
	else if (cache->options)
		pfree(cache->options);
	cache->window = *window;
	cache->nconds = nconds;
	cache->has_options = options != NULL;
	cache->options = NULL;
	if (options)
	{
		Size		len = VARSIZE_ANY(options);

		cache->options = MemoryContextAlloc(fncxt, len);
		memcpy(cache->options, options, len);
	}
	cache->spec = spec;
	cache->constant = FunnelArgsConstant(fcinfo, options != NULL);
	fcinfo->flinfo->fn_extra = cache;
	return cache;
}

/* The conditions argument condarg, checked; sets *nconds. */
ArrayType *
FunnelConditions(FunctionCallInfo fcinfo, int condarg, int *nconds)
{
	ArrayType  *conds;

	if (PG_ARGISNULL(condarg))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("funnel conditions must not be a NULL array")));
	conds = PG_GETARG_ARRAYTYPE_P(condarg);
	if (ARR_NDIM(conds) > 1)
		ereport(ERROR,
				(errcode(ERRCODE_ARRAY_SUBSCRIPT_ERROR),
				 errmsg("funnel conditions must be a one-dimensional array")));
	if (ARR_ELEMTYPE(conds) != BOOLOID)
		elog(ERROR, "funnel conditions must be a boolean array");
	*nconds = ARR_NDIM(conds) == 1 ? ARR_DIMS(conds)[0] : 0;
	return conds;
}

/*
 * Set mask (nwords words) from a boolean array of nconds conditions, a NULL
 * element counting as false; returns whether any bit is set.
 */
bool
FunnelConditionMask(ArrayType *conds, int nconds, uint64 *mask, int nwords)
{
	const bool *flags = (const bool *) ARR_DATA_PTR(conds);
	bits8	   *nulls = ARR_NULLBITMAP(conds);
	bool		any = false;

	memset(mask, 0, sizeof(uint64) * nwords);
	if (nulls == NULL)
	{
		for (int i = 0; i < nconds; i++)
			if (flags[i])
				mask[i >> 6] |= UINT64CONST(1) << (i & 63);
	}
	else
	{
		/* NULL elements take no room in the data area */
		int			k = 0;

		for (int i = 0; i < nconds; i++)
			if (nulls[i >> 3] & (1 << (i & 7)))
			{
				if (flags[k++])
					mask[i >> 6] |= UINT64CONST(1) << (i & 63);
			}
	}
	for (int w = 0; w < nwords; w++)
		any |= mask[w] != 0;
	return any;
}

/*
 * Set mask (nwords words) from the boolean arguments condarg .. nargs - 1, a
 * NULL counting as false; returns whether any bit is set.
 */
static bool
FunnelArgumentMask(FunctionCallInfo fcinfo, int condarg, uint64 *mask, int nwords)
{
	bool		any = false;

	memset(mask, 0, sizeof(uint64) * nwords);
	for (int i = 0; condarg + i < PG_NARGS(); i++)
		if (!PG_ARGISNULL(condarg + i) && PG_GETARG_BOOL(condarg + i))
		{
			mask[i >> 6] |= UINT64CONST(1) << (i & 63);
			any = true;
		}
	return any;
}

/*
 * The transition of funnel_agg and funnel_steps: keep the row if it matches
 * a condition (or always under strict_order).  The conditions are one
 * boolean array (VARIADIC), or each an argument (the fixed-arity overloads,
 * which spare the executor building an array for every row).
 */
static Datum
FunnelTransition(FunctionCallInfo fcinfo, bool has_options, bool conds_as_args)
{
	MemoryContext aggcxt;
	FunnelState *state = PG_ARGISNULL(0) ? NULL : (FunnelState *) PG_GETARG_POINTER(0);
	int			condarg = has_options ? 4 : 3;
	FunnelArgCache *cache;
	Interval   *window;
	text	   *options = NULL;
	ArrayType  *conds = NULL;
	int			nconds;
	const FunnelSpec *spec;
	uint64		maskbuf[FUNNEL_MAX_CONDITIONS / 64];
	bool		any;

	if (!AggCheckCallContext(fcinfo, &aggcxt))
		elog(ERROR, "clickstream_funnel_transfn called in non-aggregate context");

	if (PG_ARGISNULL(2))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("funnel window must not be NULL")));
	if (has_options && PG_ARGISNULL(3))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("funnel options must not be NULL"),
				 errhint("Pass '' for no options.")));
	if (conds_as_args)
		nconds = PG_NARGS() - condarg;
	else
		conds = FunnelConditions(fcinfo, condarg, &nconds);

	/* the spec of these arguments: the cached one unless they changed */
	cache = (FunnelArgCache *) fcinfo->flinfo->fn_extra;
	if (cache != NULL && cache->constant && cache->nconds == nconds)
		spec = cache->spec;
	else
	{
		window = PG_GETARG_INTERVAL_P(2);
		if (has_options)
			options = PG_GETARG_TEXT_PP(3);
		spec = FunnelSpecCached(fcinfo, window, options, nconds);
	}

	if (state == NULL)
		state = FunnelStateCreate(aggcxt, spec, 0);
	else if (state->spec != spec)
	{
		if (!FunnelSpecEqual(state->spec, spec))
			FunnelMismatch();
	}

	/* a row without a timestamp is ignored */
	if (PG_ARGISNULL(1))
		PG_RETURN_POINTER(state);

	if (conds_as_args)
		any = FunnelArgumentMask(fcinfo, condarg, maskbuf, spec->nwords);
	else
		any = FunnelConditionMask(conds, nconds, maskbuf, spec->nwords);
	if (any || (spec->modes & FUNNEL_STRICT_ORDER))
		FunnelStateAppend(state, PG_GETARG_TIMESTAMPTZ(1), maskbuf);

	PG_RETURN_POINTER(state);
}

/* clickstream.funnel_transfn(state, ts, window, [options,] conditions[]). */
Datum
clickstream_funnel_transfn(PG_FUNCTION_ARGS)
{
	return FunnelTransition(fcinfo, PG_NARGS() == 5, false);
}

/* clickstream.funnel_transfn(state, ts, window, condition, ...). */
Datum
clickstream_funnel_transfn_args(PG_FUNCTION_ARGS)
{
	return FunnelTransition(fcinfo, false, true);
}

/* clickstream.funnel_transfn(state, ts, window, options, condition, ...). */
Datum
clickstream_funnel_transfn_options_args(PG_FUNCTION_ARGS)
{
	return FunnelTransition(fcinfo, true, true);
}

/* clickstream.funnel_combine(a, b): a with b's rows appended. */
Datum
clickstream_funnel_combine(PG_FUNCTION_ARGS)
{
	MemoryContext aggcxt;
	FunnelState *a = PG_ARGISNULL(0) ? NULL : (FunnelState *) PG_GETARG_POINTER(0);
	FunnelState *b = PG_ARGISNULL(1) ? NULL : (FunnelState *) PG_GETARG_POINTER(1);
	int64		stride;
	bool		b_sorted;
	bool		b_ours;

	if (!AggCheckCallContext(fcinfo, &aggcxt))
		elog(ERROR, "clickstream_funnel_combine called in non-aggregate context");

	if (b == NULL)
	{
		if (a == NULL)
			PG_RETURN_NULL();
		PG_RETURN_POINTER(a);
	}
	stride = 1 + b->spec->nwords;
	b_ours = GetMemoryChunkContext(b) == aggcxt;
	if (a == NULL)
	{
		/* adopt b if our deserialize made it here, else copy it */
		if (b_ours)
			PG_RETURN_POINTER(b);
		a = FunnelStateCreate(aggcxt, b->spec, b->nrows);
		memcpy(a->rows, b->rows, (Size) b->nrows * stride * sizeof(uint64));
		a->nrows = b->nrows;
		a->sorted = b->sorted;
		PG_RETURN_POINTER(a);
	}
	if (!FunnelSpecEqual(a->spec, b->spec))
		FunnelMismatch();
	if (b->nrows == 0)
		PG_RETURN_POINTER(a);

	b_sorted = b->sorted;
	if (a->sorted && b_sorted && a->nrows > 0 &&
		FunnelRowCompare(a->rows + (a->nrows - 1) * stride, b->rows,
						 a->spec->nwords) > 0)
		FunnelStateMerge(a, b);		/* two sorted runs: stay sorted */
	else
	{
		/* appended: still sorted if both were (then b follows a) */
		FunnelStateReserve(a, b->nrows);
		memcpy(a->rows + a->nrows * stride, b->rows,
			   (Size) b->nrows * stride * sizeof(uint64));
		a->nrows += b->nrows;
		a->sorted = a->sorted && b_sorted;
	}
	if (b_ours)
		FunnelStateFree(b);		/* a deserialized state, used by nothing else */
	PG_RETURN_POINTER(a);
}

/* clickstream.funnel_serialize(state): the state as a compact bytea. */
Datum
clickstream_funnel_serialize(PG_FUNCTION_ARGS)
{
	FunnelState *state = (FunnelState *) PG_GETARG_POINTER(0);
	const FunnelSpec *spec = state->spec;
	Size		rowbytes = sizeof(uint64) * (1 + spec->nwords);
	Size		exclbytes = sizeof(int32) * 2 * spec->nexcl;
	Size		size;
	bytea	   *out;
	char	   *p;
	FunnelSerialHeader hdr;

	if ((Size) state->nrows > (MaxAllocSize - VARHDRSZ - sizeof(hdr) - exclbytes) / rowbytes)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("funnel state too large to pass between parallel workers: %lld rows",
						(long long) state->nrows),
				 errhint("Run this query without parallelism: SET max_parallel_workers_per_gather = 0.")));

	size = VARHDRSZ + sizeof(hdr) + exclbytes + (Size) state->nrows * rowbytes;
	out = palloc(size);
	SET_VARSIZE(out, size);
	hdr.magic = FUNNEL_SERIAL_MAGIC;
	hdr.modes = spec->modes | (state->sorted ? 0x100 : 0);
	hdr.nsteps = spec->nsteps;
	hdr.nexcl = spec->nexcl;
	hdr.window = spec->window;
	hdr.nrows = state->nrows;
	p = VARDATA(out);
	memcpy(p, &hdr, sizeof(hdr));
	p += sizeof(hdr);
	memcpy(p, spec->excl, exclbytes);
	p += exclbytes;
	memcpy(p, state->rows, (Size) state->nrows * rowbytes);
	PG_RETURN_BYTEA_P(out);
}

/* Raise the error for a serialized state that does not parse. */
static void
FunnelBadSerial(const char *detail)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_BINARY_REPRESENTATION),
			 errmsg("invalid serialized funnel state"),
			 errdetail_internal("%s", detail)));
}

/*
 * clickstream.funnel_deserialize(bytea, internal): the state back, after
 * checking every field, so that no bytea can make the final pass misbehave.
 */
Datum
clickstream_funnel_deserialize(PG_FUNCTION_ARGS)
{
	bytea	   *in = PG_GETARG_BYTEA_PP(0);
	const char *p = VARDATA_ANY(in);
	Size		len = VARSIZE_ANY_EXHDR(in);
	FunnelSerialHeader hdr;
	int32		excl[2 * FUNNEL_MAX_CONDITIONS];
	FunnelSpec *spec;
	const FunnelSpec *cached;
	FunnelState *state;
	Size		rowbytes;
	int			nwords;
	int			nconds;
	uint64		lastmask;
	MemoryContext aggcxt;

	if (len < sizeof(hdr))
		FunnelBadSerial("too short");
	memcpy(&hdr, p, sizeof(hdr));
	p += sizeof(hdr);
	len -= sizeof(hdr);
	if (hdr.magic != FUNNEL_SERIAL_MAGIC)
		FunnelBadSerial("wrong magic number");
	if ((hdr.modes & ~(FUNNEL_ALL_MODES | 0x100)) != 0)
		FunnelBadSerial("unknown mode bits");
	if (hdr.nsteps < 1 || hdr.nexcl < 0 ||
		hdr.nsteps > FUNNEL_MAX_CONDITIONS ||
		hdr.nexcl > FUNNEL_MAX_CONDITIONS - hdr.nsteps)
		FunnelBadSerial("bad number of conditions");
	if (hdr.window < 0)
		FunnelBadSerial("negative window");
	if (len < sizeof(int32) * 2 * hdr.nexcl)
		FunnelBadSerial("truncated exclusions");
	memcpy(excl, p, sizeof(int32) * 2 * hdr.nexcl);
	p += sizeof(int32) * 2 * hdr.nexcl;
	len -= sizeof(int32) * 2 * hdr.nexcl;
	for (int e = 0; e < hdr.nexcl; e++)
		if (excl[2 * e] < 1 || excl[2 * e + 1] <= excl[2 * e] ||
			excl[2 * e + 1] > hdr.nsteps)
			FunnelBadSerial("bad exclusion range");
	nconds = hdr.nsteps + hdr.nexcl;
	nwords = (nconds + 63) / 64;
	rowbytes = sizeof(uint64) * (1 + nwords);
	if (hdr.nrows < 0 || (Size) hdr.nrows != len / rowbytes || len % rowbytes != 0)
		FunnelBadSerial("row data does not match the row count");

	/* one spec per distinct funnel, cached for the whole query */
	spec = palloc(FunnelSpecSize(hdr.nexcl));
	spec->window = hdr.window;
	spec->nsteps = hdr.nsteps;
	spec->nexcl = hdr.nexcl;
	spec->nwords = nwords;
	spec->modes = hdr.modes & FUNNEL_ALL_MODES;
	memcpy(spec->excl, excl, sizeof(int32) * 2 * hdr.nexcl);
	cached = (const FunnelSpec *) fcinfo->flinfo->fn_extra;
	if (cached == NULL || !FunnelSpecEqual(cached, spec))
	{
		FunnelSpec *copy = MemoryContextAlloc(fcinfo->flinfo->fn_mcxt,
											  FunnelSpecSize(hdr.nexcl));

		memcpy(copy, spec, FunnelSpecSize(hdr.nexcl));
		fcinfo->flinfo->fn_extra = copy;
		cached = copy;
	}
	pfree(spec);

	/*
	 * Build it in the aggregate's memory, so that the combine function can
	 * adopt it instead of copying (and free it once absorbed).
	 */
	if (!AggCheckCallContext(fcinfo, &aggcxt))
		aggcxt = CurrentMemoryContext;
	state = FunnelStateCreate(aggcxt, cached, hdr.nrows);
	state->nrows = hdr.nrows;
	memcpy(state->rows, p, len);

	/* no condition bit beyond the last one; recheck the order ourselves */
	lastmask = (nconds % 64) == 0 ? ~UINT64CONST(0) :
		(UINT64CONST(1) << (nconds % 64)) - 1;
	state->sorted = true;
	for (int64 i = 0; i < hdr.nrows; i++)
	{
		const uint64 *row = state->rows + i * (1 + nwords);

		if ((row[nwords] & ~lastmask) != 0)
			FunnelBadSerial("condition bits beyond the last condition");
		if (i > 0 && state->sorted &&
			FunnelRowCompare(row - (1 + nwords), row, nwords) > 0)
			state->sorted = false;
	}
	PG_RETURN_POINTER(state);
}

/* Add a witness node; the caller made room (FunnelPassReserve). */
static inline int32
FunnelNodeAdd(FunnelPass *pass, int64 ts, int32 parent)
{
	Assert(pass->nnodes < pass->maxnodes);
	pass->nodes[pass->nnodes].ts = ts;
	pass->nodes[pass->nnodes].parent = parent;
	return pass->nnodes++;
}

/*
 * Make room for n more witness nodes: drop the nodes no live attempt uses
 * (copying each live path), then grow if that did not free enough.
 */
static void
FunnelPassReserve(FunnelPass *pass, int64 n)
{
	int			nsteps = pass->nsteps;
	FunnelNode *nodes;
	int64		need;
	int32		count = 0;
	int32	   *chain;

	if (pass->nnodes + n <= pass->maxnodes)
		return;

	if (pass->nnodes >= FUNNEL_MIN_COMPACT_NODES)
	{
		nodes = palloc_extended(sizeof(FunnelNode) * pass->maxnodes, MCXT_ALLOC_HUGE);
		chain = palloc(sizeof(int32) * (nsteps + 1));
		for (int slot = 0; slot < 2; slot++)
		{
			FunnelAttempt *level = slot == 0 ? pass->old : pass->fresh;
			uint64	   *active = slot == 0 ? pass->old_active : pass->fresh_active;

			if (level == NULL)
				continue;
			for (int m = 1; m <= nsteps; m++)
			{
				int			len = 0;
				int32		parent = -1;

				if (!((active[m >> 6] >> (m & 63)) & 1))
					continue;
				for (int32 k = level[m].path; k >= 0; k = pass->nodes[k].parent)
					chain[len++] = k;
				while (len > 0)
				{
					nodes[count].ts = pass->nodes[chain[--len]].ts;
					nodes[count].parent = parent;
					parent = count++;
				}
				level[m].path = parent;
			}
		}
		pfree(chain);
		pfree(pass->nodes);
		pass->nodes = nodes;
		pass->nnodes = count;
		if (pass->nnodes + n <= pass->maxnodes / 2)
			return;
	}

	need = Max((int64) pass->maxnodes * 2, pass->nnodes + n);
	if (need > PG_INT32_MAX)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("funnel witness too large")));
	pass->nodes = repalloc_huge(pass->nodes, sizeof(FunnelNode) * need);
	pass->maxnodes = (int32) need;
}

/* Set up a pass over the rows of spec; witness: keep step timestamps. */
static void
FunnelPassInit(FunnelPass *pass, const FunnelSpec *spec, bool witness)
{
	int			nsteps = spec->nsteps;
	bool		small = nsteps <= FUNNEL_PASS_INLINE_STEPS;
	bool		increase = (spec->modes & FUNNEL_STRICT_INCREASE) != 0;

	/* not a memset of the whole struct: the buffers are large */
	pass->spec = spec;
	pass->nsteps = nsteps;
	pass->cascade = (spec->modes & (FUNNEL_STRICT_ONCE | FUNNEL_STRICT_INCREASE)) == 0;
	pass->lwords = (nsteps + 1 + 63) / 64;
	pass->nmoves = 0;
	pass->cur_ts = 0;
	pass->have_ts = false;
	pass->best = 0;
	if (small)
	{
		pass->old = pass->old_buf;
		pass->fresh = increase ? pass->fresh_buf : NULL;
		pass->old_active = &pass->active_buf[0];
		pass->fresh_active = increase ? &pass->active_buf[1] : NULL;
		pass->active_buf[0] = pass->active_buf[1] = 0;
		pass->moves = pass->moves_buf;
	}
	else
	{
		pass->old = palloc(sizeof(FunnelAttempt) * (nsteps + 1));
		pass->old_active = palloc0(sizeof(uint64) * pass->lwords);
		pass->fresh = NULL;
		pass->fresh_active = NULL;
		if (increase)
		{
			pass->fresh = palloc(sizeof(FunnelAttempt) * (nsteps + 1));
			pass->fresh_active = palloc0(sizeof(uint64) * pass->lwords);
		}
		/* at most every kept attempt moves, plus a new one */
		pass->moves = palloc(sizeof(FunnelMove) * (2 * nsteps + 2));
	}
	pass->witness = witness;
	pass->nodes = NULL;
	pass->nnodes = 0;
	pass->maxnodes = 0;
	pass->best_ts = NULL;
	if (witness)
	{
		pass->maxnodes = 1024;
		pass->nodes = palloc(sizeof(FunnelNode) * pass->maxnodes);
		pass->best_ts = palloc(sizeof(int64) * nsteps);
	}
}

/* Place a moved attempt at its level, keeping only attempts not beaten. */
static inline void
FunnelPassPlace(FunnelPass *pass, int level, const FunnelAttempt *a)
{
	FunnelAttempt *slot;
	uint64	   *active;
	uint64		bit = UINT64CONST(1) << (level & 63);
	int			w = level >> 6;

	if (pass->fresh != NULL)
	{
		/*
		 * strict_increase: it moved at cur_ts.  An attempt that moved
		 * earlier and started no earlier beats it.
		 */
		if ((pass->old_active[w] & bit) &&
			pass->old[level].start_pos >= a->start_pos)
			return;
		slot = pass->fresh;
		active = pass->fresh_active;
	}
	else
	{
		slot = pass->old;
		active = pass->old_active;
	}
	if ((active[w] & bit) && slot[level].start_pos >= a->start_pos)
		return;
	slot[level] = *a;
	active[w] |= bit;
}

/* strict_increase: the time moved on; fresh attempts become old ones. */
static void
FunnelPassAge(FunnelPass *pass)
{
	for (int w = 0; w < pass->lwords; w++)
	{
		uint64		bits = pass->fresh_active[w];

		while (bits)
		{
			int			m = w * 64 + pg_rightmost_one_pos64(bits);

			bits &= bits - 1;
			if (!((pass->old_active[w] >> (m & 63)) & 1) ||
				pass->fresh[m].start_pos > pass->old[m].start_pos)
				pass->old[m] = pass->fresh[m];
			pass->old_active[w] |= UINT64CONST(1) << (m & 63);
		}
		pass->fresh_active[w] = 0;
	}
}

/* Record a move of attempt a to level, extending its path by steps at ts. */
static inline void
FunnelPassMove(FunnelPass *pass, int from, int level, bool advanced,
			   const FunnelAttempt *a, int64 ts)
{
	FunnelMove *mv = &pass->moves[pass->nmoves++];

	mv->level = level;
	mv->advanced = advanced;
	mv->attempt = *a;
	if (pass->witness)
	{
		if (advanced)
			for (int k = from; k < level; k++)
				mv->attempt.path = FunnelNodeAdd(pass, ts, mv->attempt.path);
		else
			for (int k = from; k > level; k--)
				mv->attempt.path = pass->nodes[mv->attempt.path].parent;
	}
}

/* Index of the lowest bit set in [from, to) of a mask, or -1. */
static int
FunnelLowestBit(const uint64 *mask, int from, int to)
{
	for (int i = from; i < to;)
	{
		uint64		word = mask[i >> 6] >> (i & 63);

		if (word != 0)
		{
			int			b = i + pg_rightmost_one_pos64(word);

			return b < to ? b : -1;
		}
		i = (i | 63) + 1;
	}
	return -1;
}

/* The furthest step reachable from level m with one row of this mask. */
static inline int
FunnelPassReach(const FunnelPass *pass, const uint64 *mask, int m)
{
	int			k = m + 1;

	if (pass->cascade)
		while (k < pass->nsteps && FunnelBit(mask, k))
			k++;
	return k;
}

/*
 * Process one row (position pos in the sorted order) for every attempt:
 * advance, end, or send back; start a new attempt; update the best.
 */
static void
FunnelRunRow(FunnelPass *pass, int64 pos, int64 ts, const uint64 *mask)
{
	const FunnelSpec *spec = pass->spec;
	int			nsteps = pass->nsteps;
	uint32		modes = spec->modes;
	uint64		window = (uint64) spec->window;
	int			dedup_level = 0;
	bool		has_excl = false;
	int			newbest = 0;

	if (pass->fresh != NULL && pass->have_ts && ts != pass->cur_ts)
		FunnelPassAge(pass);
	pass->cur_ts = ts;
	pass->have_ts = true;
	pass->nmoves = 0;

	if (pass->witness)
	{
		/* each attempt (and a new one) advances at most by the row's steps */
		int64		steps = 0,
					attempts = 1;

		for (int w = 0; w < spec->nwords; w++)
			steps += pg_popcount64(mask[w]);
		for (int w = 0; w < pass->lwords; w++)
			attempts += pg_popcount64(pass->old_active[w]) +
				(pass->fresh ? pg_popcount64(pass->fresh_active[w]) : 0);
		FunnelPassReserve(pass, attempts * Min(steps, nsteps));
	}

	/* strict_deduplication: the lowest step >= 2 this row matches */
	if (modes & FUNNEL_STRICT_DEDUP)
		dedup_level = FunnelLowestBit(mask, 1, nsteps) + 1;
	for (int e = 0; e < spec->nexcl && !has_excl; e++)
		has_excl = FunnelBit(mask, nsteps + e);

	for (int slot = 0; slot < 2; slot++)
	{
		FunnelAttempt *level = slot == 0 ? pass->old : pass->fresh;
		uint64	   *active = slot == 0 ? pass->old_active : pass->fresh_active;

		if (level == NULL)
			continue;
		for (int w = 0; w < pass->lwords; w++)
		{
			uint64		bits = active[w];

			while (bits)
			{
				int			m = w * 64 + pg_rightmost_one_pos64(bits);
				uint64		bit = bits & (~bits + 1);
				FunnelAttempt *a = &level[m];

				bits &= bits - 1;

				/* out of the window: it can never move again */
				if ((uint64) ts - (uint64) a->start_ts > window)
				{
					active[w] &= ~bit;
					continue;
				}
				/* advance (under strict_increase only if it moved earlier) */
				if (m < nsteps && FunnelBit(mask, m) && slot == 0)
				{
					FunnelPassMove(pass, m, FunnelPassReach(pass, mask, m), true, a, ts);
					active[w] &= ~bit;
					continue;
				}
				if ((modes & FUNNEL_STRICT_ORDER) ||
					(dedup_level > 0 && m >= dedup_level))
				{
					active[w] &= ~bit;
					continue;
				}
				if (has_excl)
				{
					int			target = m;

					for (int e = 0; e < spec->nexcl; e++)
						if (FunnelBit(mask, nsteps + e) &&
							spec->excl[2 * e] <= m && m < spec->excl[2 * e + 1])
							target = Min(target, spec->excl[2 * e] - 1);
					if (target < m)
					{
						active[w] &= ~bit;
						if (target >= 1)
							FunnelPassMove(pass, m, target, false, a, ts);
					}
				}
			}
		}
	}

	/* a new attempt */
	if (FunnelBit(mask, 0))
	{
		FunnelAttempt a;

		a.start_pos = pos;
		a.start_ts = ts;
		a.path = -1;
		FunnelPassMove(pass, 0, FunnelPassReach(pass, mask, 0), true, &a, ts);
	}

	for (int i = 0; i < pass->nmoves; i++)
	{
		FunnelMove *mv = &pass->moves[i];

		FunnelPassPlace(pass, mv->level, &mv->attempt);
		if (mv->advanced && mv->level > newbest)
			newbest = mv->level;
	}

	if (newbest > pass->best)
	{
		pass->best = newbest;
		if (pass->witness)
		{
			/* the attempt now kept at that step: it started last */
			const FunnelAttempt *a = pass->fresh ? &pass->fresh[newbest] : &pass->old[newbest];
			int			k = newbest;

			for (int32 n = a->path; n >= 0; n = pass->nodes[n].parent)
				pass->best_ts[--k] = pass->nodes[n].ts;
			Assert(k == 0);
		}
	}
}

/* Run the final pass over a state; returns the furthest step reached. */
static int
FunnelEvaluate(FunnelState *state, FunnelPass *pass, bool witness)
{
	const FunnelSpec *spec = state->spec;
	int64		stride = 1 + spec->nwords;

	FunnelStateSort(state);
	FunnelPassInit(pass, spec, witness);
	for (int64 i = 0; i < state->nrows && pass->best < spec->nsteps; i++)
	{
		const uint64 *row = state->rows + i * stride;

		if ((i & 0xFFFF) == 0)
			CHECK_FOR_INTERRUPTS();
		FunnelRunRow(pass, i, (int64) row[0], row + 1);
	}
	return pass->best;
}

/* The furthest step an attempt reached in the state's rows. */
int
FunnelStateLevel(FunnelState *state)
{
	FunnelPass	pass;

	return FunnelEvaluate(state, &pass, false);
}

/* clickstream.funnel_final(state): the furthest step reached. */
Datum
clickstream_funnel_final(PG_FUNCTION_ARGS)
{
	FunnelState *state = PG_ARGISNULL(0) ? NULL : (FunnelState *) PG_GETARG_POINTER(0);

	if (state == NULL)
		PG_RETURN_NULL();
	PG_RETURN_INT32(FunnelStateLevel(state));
}

/*
 * clickstream.funnel_steps_final(state): the furthest step reached, the
 * timestamps of the reported attempt's steps and the time between them.
 */
Datum
clickstream_funnel_steps_final(PG_FUNCTION_ARGS)
{
	FunnelState *state = PG_ARGISNULL(0) ? NULL : (FunnelState *) PG_GETARG_POINTER(0);
	FunnelPass	pass;
	TupleDesc	tupdesc;
	Datum		values[3];
	bool		isnull[3] = {false, false, false};
	Datum	   *ts;
	Datum	   *gaps;
	bool	   *gapnulls;
	int			dims[1];
	int			lbs[1] = {1};
	int			level;

	if (state == NULL)
		PG_RETURN_NULL();
	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	tupdesc = BlessTupleDesc(tupdesc);

	level = FunnelEvaluate(state, &pass, true);
	ts = palloc(sizeof(Datum) * Max(level, 1));
	gaps = palloc(sizeof(Datum) * Max(level, 1));
	gapnulls = palloc(sizeof(bool) * Max(level, 1));
	for (int k = 0; k < level; k++)
	{
		ts[k] = TimestampTzGetDatum(pass.best_ts[k]);
		gapnulls[k] = k == 0;
		gaps[k] = k == 0 ? (Datum) 0 :
			DirectFunctionCall2(timestamp_mi, ts[k], ts[k - 1]);
	}
	dims[0] = level;
	values[0] = Int32GetDatum(level);
	values[1] = PointerGetDatum(construct_md_array(ts, NULL, level > 0 ? 1 : 0, dims, lbs,
												   TIMESTAMPTZOID, sizeof(int64),
												   FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	values[2] = PointerGetDatum(construct_md_array(gaps, gapnulls, level > 0 ? 1 : 0, dims, lbs,
												   INTERVALOID, sizeof(Interval),
												   false, TYPALIGN_DOUBLE));
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, isnull)));
}
