/*-------------------------------------------------------------------------
 *
 * funnel_breakdown.c
 *	  The aggregate clickstream.funnel_breakdown: funnel_agg's result for
 *	  each key (a product, a campaign, ...) of a group.
 *
 * The semantics are in docs/sessions-and-funnels.md ("Funnels").  The state
 * keeps each kept row's timestamp, mask and key number, and the distinct
 * keys (with the smallest label of each); the final function runs the
 * funnel_agg pass (funnel_agg.c) once per key over that key's rows and the
 * rows without a key (minus their step 1).
 *
 *-------------------------------------------------------------------------
 */
#include "clickstream.h"

#include "common/hashfn.h"
#include "common/int.h"
#include "miscadmin.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/numeric.h"
#include "utils/timestamp.h"

#include "funnel.h"
#include "util.h"

PG_FUNCTION_INFO_V1(clickstream_funnel_breakdown_transfn);
PG_FUNCTION_INFO_V1(clickstream_funnel_breakdown_final);

/* A key of a group: its text, the smallest label seen with it, its hash. */
typedef struct BreakdownKey
{
	text	   *key;
	text	   *label;			/* smallest label seen, or NULL */
	uint32		hash;
} BreakdownKey;

/* The state: the kept rows, and the distinct keys they carry. */
typedef struct BreakdownState
{
	const FunnelSpec *spec;
	bool		labelled;		/* values are [level, label] */
	int64		nrows;
	int64		maxrows;
	int64	   *ts;
	uint64	   *masks;			/* nwords per row */
	int32	   *keyno;			/* -1: no key */
	int32		nkeys;
	int32		maxkeys;
	BreakdownKey *keys;
	int32	   *slots;			/* open addressing over keys, or NULL */
	int32		nslots;
	int32		last;			/* key of the previous keyed row, or -1 */
} BreakdownState;

/* Keys up to this many are found by a linear scan, more by hashing. */
#define BREAKDOWN_LINEAR_KEYS 16

/* Rebuild the hash slots of a state for its keys (2 slots per key or more). */
static void
BreakdownRehash(BreakdownState *state, MemoryContext cxt)
{
	int32		nslots = 64;

	while (nslots < 2 * state->maxkeys)
		nslots *= 2;
	if (state->slots)
		pfree(state->slots);
	state->slots = MemoryContextAlloc(cxt, sizeof(int32) * nslots);
	memset(state->slots, -1, sizeof(int32) * nslots);
	state->nslots = nslots;
	for (int32 k = 0; k < state->nkeys; k++)
	{
		int32		i = state->keys[k].hash & (nslots - 1);

		while (state->slots[i] >= 0)
			i = (i + 1) & (nslots - 1);
		state->slots[i] = k;
	}
}

/* The number of key in the state, added (a copy, in cxt) if new. */
static int32
BreakdownKeyNumber(BreakdownState *state, MemoryContext cxt, text *key)
{
	uint32		hash = 0;
	int32		k;
	int32		slot = -1;

	if (state->last >= 0 && UtilTextEqual(state->keys[state->last].key, key))
		return state->last;
	if (state->slots == NULL)
	{
		for (k = 0; k < state->nkeys; k++)
			if (UtilTextEqual(state->keys[k].key, key))
				return state->last = k;
	}
	else
	{
		hash = hash_bytes((const unsigned char *) VARDATA_ANY(key), VARSIZE_ANY_EXHDR(key));
		for (slot = hash & (state->nslots - 1); state->slots[slot] >= 0;
			 slot = (slot + 1) & (state->nslots - 1))
		{
			k = state->slots[slot];
			if (state->keys[k].hash == hash && UtilTextEqual(state->keys[k].key, key))
				return state->last = k;
		}
	}

	/* a new key */
	if (state->nkeys >= state->maxkeys)
	{
		if (state->maxkeys >= PG_INT32_MAX / 4)
			ereport(ERROR,
					(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
					 errmsg("funnel_breakdown group has too many keys")));
		state->maxkeys = state->maxkeys == 0 ? 4 : state->maxkeys * 2;
		state->keys = state->keys == NULL ?
			MemoryContextAlloc(cxt, sizeof(BreakdownKey) * state->maxkeys) :
			repalloc(state->keys, sizeof(BreakdownKey) * state->maxkeys);
	}
	k = state->nkeys++;
	state->keys[k].key = MemoryContextAlloc(cxt, VARSIZE_ANY(key));
	memcpy(state->keys[k].key, key, VARSIZE_ANY(key));
	state->keys[k].label = NULL;
	if (state->slots == NULL && state->nkeys > BREAKDOWN_LINEAR_KEYS)
	{
		for (int32 j = 0; j < state->nkeys; j++)
			state->keys[j].hash = hash_bytes((const unsigned char *) VARDATA_ANY(state->keys[j].key),
											 VARSIZE_ANY_EXHDR(state->keys[j].key));
		BreakdownRehash(state, cxt);
	}
	else if (state->slots != NULL)
	{
		state->keys[k].hash = hash;
		if (2 * state->nkeys > state->nslots)
			BreakdownRehash(state, cxt);
		else
			state->slots[slot] = k;
	}
	return state->last = k;
}

/* qsort comparator of int64 values. */
static int
BreakdownInt64Compare(const void *a, const void *b)
{
	int64		x = *(const int64 *) a,
				y = *(const int64 *) b;

	return (x > y) - (x < y);
}

/* Append one row (growing the arrays in cxt). */
static void
BreakdownAppend(BreakdownState *state, MemoryContext cxt, int64 ts,
				const uint64 *mask, int32 keyno)
{
	int			nwords = state->spec->nwords;

	if (state->nrows >= state->maxrows)
	{
		int64		newmax = Max(state->maxrows * 2, 16);

		if ((Size) newmax > MaxAllocHugeSize / (sizeof(uint64) * nwords))
			ereport(ERROR,
					(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
					 errmsg("funnel group too large: %lld matching rows", (long long) newmax)));
		if (state->ts == NULL)
		{
			state->ts = MemoryContextAllocHuge(cxt, sizeof(int64) * newmax);
			state->masks = MemoryContextAllocHuge(cxt, sizeof(uint64) * nwords * newmax);
			state->keyno = MemoryContextAllocHuge(cxt, sizeof(int32) * newmax);
		}
		else
		{
			state->ts = repalloc_huge(state->ts, sizeof(int64) * newmax);
			state->masks = repalloc_huge(state->masks, sizeof(uint64) * nwords * newmax);
			state->keyno = repalloc_huge(state->keyno, sizeof(int32) * newmax);
		}
		state->maxrows = newmax;
	}
	state->ts[state->nrows] = ts;
	memcpy(state->masks + state->nrows * nwords, mask, sizeof(uint64) * nwords);
	state->keyno[state->nrows] = keyno;
	state->nrows++;
}

/*
 * clickstream.funnel_breakdown_transfn(state, ts, window, key, [label,]
 * steps): register the row's key (and label); keep the row if it matches a
 * step (a row without a key: a step after the first).
 */
Datum
clickstream_funnel_breakdown_transfn(PG_FUNCTION_ARGS)
{
	MemoryContext aggcxt;
	BreakdownState *state = PG_ARGISNULL(0) ? NULL : (BreakdownState *) PG_GETARG_POINTER(0);
	bool		labelled = PG_NARGS() == 6;
	int			condarg = labelled ? 5 : 4;
	const FunnelSpec *spec;
	ArrayType  *conds;
	int			nconds;
	uint64		maskbuf[FUNNEL_MAX_CONDITIONS / 64];
	bool		any;
	int32		keyno = -1;

	if (!AggCheckCallContext(fcinfo, &aggcxt))
		elog(ERROR, "clickstream_funnel_breakdown_transfn called in non-aggregate context");
	if (PG_ARGISNULL(2))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("funnel window must not be NULL")));
	conds = FunnelConditions(fcinfo, condarg, &nconds);

	/* the spec: cached per call site, rebuilt when the arguments change */
	spec = FunnelSpecCached(fcinfo, PG_GETARG_INTERVAL_P(2), NULL, nconds);

	if (state == NULL)
	{
		state = MemoryContextAllocZero(aggcxt, sizeof(BreakdownState));
		state->spec = spec;
		state->labelled = labelled;
		state->last = -1;
	}
	else if (state->spec != spec && !FunnelSpecEqual(state->spec, spec))
		FunnelMismatch();

	/* a row without a timestamp is ignored */
	if (PG_ARGISNULL(1))
		PG_RETURN_POINTER(state);

	if (!PG_ARGISNULL(3))
	{
		keyno = BreakdownKeyNumber(state, aggcxt, PG_GETARG_TEXT_PP(3));
		if (labelled && !PG_ARGISNULL(4))
		{
			BreakdownKey *key = &state->keys[keyno];
			text	   *label = PG_GETARG_TEXT_PP(4);

			if (key->label == NULL || UtilTextCompare(label, key->label) < 0)
			{
				if (key->label)
					pfree(key->label);
				key->label = MemoryContextAlloc(aggcxt, VARSIZE_ANY(label));
				memcpy(key->label, label, VARSIZE_ANY(label));
			}
		}
	}

	any = FunnelConditionMask(conds, nconds, maskbuf, state->spec->nwords);
	if (keyno < 0)
	{
		/* without a key, a row never makes step 1 */
		maskbuf[0] &= ~UINT64CONST(1);
		any = false;
		for (int w = 0; w < state->spec->nwords; w++)
			any |= maskbuf[w] != 0;
	}
	if (any)
		BreakdownAppend(state, aggcxt, PG_GETARG_TIMESTAMPTZ(1), maskbuf, keyno);
	PG_RETURN_POINTER(state);
}

/*
 * clickstream.funnel_breakdown_final(state): {"key": level} (or
 * {"key": [level, label]}) for every key of the group.
 */
Datum
clickstream_funnel_breakdown_final(PG_FUNCTION_ARGS)
{
	BreakdownState *state = PG_ARGISNULL(0) ? NULL : (BreakdownState *) PG_GETARG_POINTER(0);
	JsonbParseState *parse = NULL;
	JsonbValue *result;
	int			nwords;
	int64		stride;
	FunnelState *keyless;
	int64	   *start;			/* per key: its first row in order[] */
	int64	   *order;			/* keyed rows, grouped by key */

	if (state == NULL)
		PG_RETURN_NULL();
	nwords = state->spec->nwords;
	stride = 1 + nwords;

	/*
	 * The rows without a key, sorted; the keyed rows grouped by key (a
	 * counting sort).
	 */
	start = palloc0(sizeof(int64) * (state->nkeys + 1));
	for (int64 i = 0; i < state->nrows; i++)
		if (state->keyno[i] >= 0)
			start[state->keyno[i] + 1]++;
	for (int32 k = 0; k < state->nkeys; k++)
		start[k + 1] += start[k];
	order = palloc(sizeof(int64) * Max(start[state->nkeys], 1));
	keyless = FunnelStateCreate(CurrentMemoryContext, state->spec,
								state->nrows - start[state->nkeys]);
	{
		int64	   *next = palloc(sizeof(int64) * Max(state->nkeys, 1));

		memcpy(next, start, sizeof(int64) * state->nkeys);
		for (int64 i = 0; i < state->nrows; i++)
		{
			if (state->keyno[i] >= 0)
				order[next[state->keyno[i]]++] = i;
			else
				FunnelStateAppend(keyless, state->ts[i], state->masks + i * nwords);
		}
		pfree(next);
	}
	FunnelStateSort(keyless);

	pushJsonbValue(&parse, WJB_BEGIN_OBJECT, NULL);
	for (int32 k = 0; k < state->nkeys; k++)
	{
		BreakdownKey *key = &state->keys[k];
		JsonbValue	v;
		int			level = 0;
		int64		nkeyed = start[k + 1] - start[k];
		int64	   *starts = palloc(sizeof(int64) * Max(nkeyed, 1));
		int64		nstarts = 0;
		FunnelState *rows;

		/*
		 * Only the keyless rows within the window after one of the key's
		 * step-1 rows can matter (nothing else does in the default mode): the
		 * pass over a key costs its rows and those, not the whole group.
		 */
		for (int64 j = start[k]; j < start[k + 1]; j++)
			if (state->masks[order[j] * nwords] & 1)
				starts[nstarts++] = state->ts[order[j]];
		if (nstarts > 0)
		{
			int64		from = 0;

			qsort(starts, nstarts, sizeof(int64), BreakdownInt64Compare);
			rows = FunnelStateCreate(CurrentMemoryContext, state->spec, nkeyed);
			for (int64 j = start[k]; j < start[k + 1]; j++)
				FunnelStateAppend(rows, state->ts[order[j]], state->masks + order[j] * nwords);
			for (int64 m = 0; m < nstarts;)
			{
				int64		lo = starts[m],
							until,
							hi;

				/* one span: step-1 rows whose windows overlap */
				if (pg_add_s64_overflow(starts[m], state->spec->window, &until))
					until = PG_INT64_MAX;
				for (m++; m < nstarts && starts[m] <= until; m++)
					if (pg_add_s64_overflow(starts[m], state->spec->window, &until))
						until = PG_INT64_MAX;
				/* its keyless rows (after those of the previous span) */
				hi = keyless->nrows;
				while (from < hi)
				{
					int64		mid = from + (hi - from) / 2;

					if ((int64) keyless->rows[mid * stride] < lo)
						from = mid + 1;
					else
						hi = mid;
				}
				for (; from < keyless->nrows && (int64) keyless->rows[from * stride] <= until; from++)
					FunnelStateAppend(rows, (int64) keyless->rows[from * stride],
									  keyless->rows + from * stride + 1);
			}
			level = FunnelStateLevel(rows);
			FunnelStateFree(rows);
		}
		pfree(starts);

		v.type = jbvString;
		v.val.string.val = VARDATA_ANY(key->key);
		v.val.string.len = VARSIZE_ANY_EXHDR(key->key);
		pushJsonbValue(&parse, WJB_KEY, &v);
		if (state->labelled)
			pushJsonbValue(&parse, WJB_BEGIN_ARRAY, NULL);
		v.type = jbvNumeric;
		v.val.numeric = int64_to_numeric(level);
		pushJsonbValue(&parse, state->labelled ? WJB_ELEM : WJB_VALUE, &v);
		if (state->labelled)
		{
			if (key->label)
			{
				v.type = jbvString;
				v.val.string.val = VARDATA_ANY(key->label);
				v.val.string.len = VARSIZE_ANY_EXHDR(key->label);
			}
			else
				v.type = jbvNull;
			pushJsonbValue(&parse, WJB_ELEM, &v);
			pushJsonbValue(&parse, WJB_END_ARRAY, NULL);
		}
		if ((k & 1023) == 1023)
			CHECK_FOR_INTERRUPTS();
	}
	result = pushJsonbValue(&parse, WJB_END_OBJECT, NULL);
	pfree(start);
	pfree(order);
	FunnelStateFree(keyless);
	PG_RETURN_POINTER(JsonbValueToJsonb(result));
}
