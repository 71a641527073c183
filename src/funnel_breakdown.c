/*-------------------------------------------------------------------------
 *
 * funnel_breakdown.c
 *	  The aggregate clickstream.funnel_breakdown: funnel_agg's result for
 *	  each key (a product, a campaign, ...) of a group; and
 *	  funnel_breakdown_continue, the same for a group that continues one
 *	  whose result is known (a session extended by new events).
 *
 * The semantics are in docs/sessions-and-funnels.md ("Funnels").  The state
 * keeps each kept row's timestamp, mask and key number, and the distinct
 * keys (with the smallest label of each); the final function runs the
 * funnel_agg pass (funnel_agg.c) once per key over that key's rows and the
 * rows without a key (minus their step 1).  funnel_breakdown_continue seeds
 * the state with the earlier result: one row per step each key reached, at
 * the earlier group's end (funnel_event_types() gives each step its own
 * event type, so a row matching one step stands for an event of its type).
 *
 *-------------------------------------------------------------------------
 */
#include "clickstream.h"

#include "common/hashfn.h"
#include "common/int.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/numeric.h"
#include "utils/timestamp.h"

#include "funnel.h"
#include "util.h"

PG_FUNCTION_INFO_V1(clickstream_funnel_breakdown_transfn);
PG_FUNCTION_INFO_V1(clickstream_funnel_breakdown_continue_transfn);
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
 * Register a key (and its label, which may be NULL) in the state; returns
 * its number.  The smallest label seen is kept.
 */
static int32
BreakdownKeyLabel(BreakdownState *state, MemoryContext cxt, text *key, text *label)
{
	int32		keyno = BreakdownKeyNumber(state, cxt, key);
	BreakdownKey *k = &state->keys[keyno];

	if (state->labelled && label != NULL &&
		(k->label == NULL || UtilTextCompare(label, k->label) < 0))
	{
		if (k->label)
			pfree(k->label);
		k->label = MemoryContextAlloc(cxt, VARSIZE_ANY(label));
		memcpy(k->label, label, VARSIZE_ANY(label));
	}
	return keyno;
}

/*
 * Seed a new state with a group's earlier result prior (funnel_breakdown's
 * jsonb): every key of it, its label, and one row per step it reached, at
 * prior_end, each matching that step only.
 */
static void
BreakdownSeed(BreakdownState *state, MemoryContext cxt, Jsonb *prior, TimestampTz prior_end)
{
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken tok;
	int			nwords = state->spec->nwords;
	uint64		maskbuf[FUNNEL_MAX_CONDITIONS / 64];

	if (!JB_ROOT_IS_OBJECT(prior))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("funnel_breakdown_continue's prior must be a jsonb object")));
	it = JsonbIteratorInit(&prior->root);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		text	   *key;
		text	   *label = NULL;
		JsonbValue	lv;
		int64		level;
		int32		keyno;

		if (tok != WJB_KEY)
			continue;
		key = cstring_to_text_with_len(v.val.string.val, v.val.string.len);
		tok = JsonbIteratorNext(&it, &v, true);
		/* [level, label] with a label, level without */
		if (state->labelled && tok == WJB_VALUE && v.type == jbvBinary)
		{
			JsonbIterator *ai = JsonbIteratorInit((JsonbContainer *) v.val.binary.data);
			int			n = 0;

			lv.type = jbvNull;
			while ((tok = JsonbIteratorNext(&ai, &v, true)) != WJB_DONE)
			{
				if (tok != WJB_ELEM)
					continue;
				if (n == 0)
					lv = v;
				else if (n == 1 && v.type == jbvString)
					label = cstring_to_text_with_len(v.val.string.val, v.val.string.len);
				n++;
			}
		}
		else
			lv = v;
		if (lv.type != jbvNumeric)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("funnel_breakdown_continue's prior has no level for key \"%s\"",
							text_to_cstring(key)),
					 errhint("prior must be a result of funnel_breakdown of the same form (with a label or without).")));
		level = DatumGetInt64(DirectFunctionCall1(numeric_int8, NumericGetDatum(lv.val.numeric)));
		if (level < 0 || level > state->spec->nsteps)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("funnel_breakdown_continue's prior gives key \"%s\" level %lld of a %d-step funnel",
							text_to_cstring(key), (long long) level, state->spec->nsteps)));
		keyno = BreakdownKeyLabel(state, cxt, key, label);
		for (int64 k = 0; k < level; k++)
		{
			memset(maskbuf, 0, sizeof(uint64) * nwords);
			maskbuf[k >> 6] = UINT64CONST(1) << (k & 63);
			BreakdownAppend(state, cxt, prior_end, maskbuf, keyno);
		}
		pfree(key);
		if (label)
			pfree(label);
	}
}

/*
 * One row of either aggregate: its arguments from "first" on are ts,
 * window, key, [label,] steps.  Registers the row's key (and label) and
 * keeps the row if it matches a step (a row without a key: a step after the
 * first).  A new state is seeded with prior, if not NULL.
 */
static BreakdownState *
BreakdownTransition(FunctionCallInfo fcinfo, BreakdownState *state, int first,
					bool labelled, Jsonb *prior, TimestampTz prior_end)
{
	MemoryContext aggcxt;
	int			condarg = first + (labelled ? 4 : 3);
	const FunnelSpec *spec;
	ArrayType  *conds;
	int			nconds;
	uint64		maskbuf[FUNNEL_MAX_CONDITIONS / 64];
	bool		any;
	int32		keyno = -1;

	if (!AggCheckCallContext(fcinfo, &aggcxt))
		elog(ERROR, "funnel_breakdown transition function called in non-aggregate context");
	if (PG_ARGISNULL(first + 1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("funnel window must not be NULL")));
	conds = FunnelConditions(fcinfo, condarg, &nconds);

	/* the spec: cached per call site, rebuilt when the arguments change */
	spec = FunnelSpecCached(fcinfo, PG_GETARG_INTERVAL_P(first + 1), NULL, nconds);

	if (state == NULL)
	{
		state = MemoryContextAllocZero(aggcxt, sizeof(BreakdownState));
		state->spec = spec;
		state->labelled = labelled;
		state->last = -1;
		if (prior != NULL)
			BreakdownSeed(state, aggcxt, prior, prior_end);
	}
	else if (state->spec != spec && !FunnelSpecEqual(state->spec, spec))
		FunnelMismatch();

	/* a row without a timestamp is ignored */
	if (PG_ARGISNULL(first))
		return state;

	if (!PG_ARGISNULL(first + 2))
		keyno = BreakdownKeyLabel(state, aggcxt, PG_GETARG_TEXT_PP(first + 2),
								  labelled && !PG_ARGISNULL(first + 3) ?
								  PG_GETARG_TEXT_PP(first + 3) : NULL);

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
		BreakdownAppend(state, aggcxt, PG_GETARG_TIMESTAMPTZ(first), maskbuf, keyno);
	return state;
}

/*
 * clickstream.funnel_breakdown_transfn(state, ts, window, key, [label,]
 * steps): funnel_breakdown's transition.
 */
Datum
clickstream_funnel_breakdown_transfn(PG_FUNCTION_ARGS)
{
	BreakdownState *state = PG_ARGISNULL(0) ? NULL : (BreakdownState *) PG_GETARG_POINTER(0);

	PG_RETURN_POINTER(BreakdownTransition(fcinfo, state, 1, PG_NARGS() == 6, NULL, 0));
}

/*
 * clickstream.funnel_breakdown_continue_transfn(state, prior, prior_end, ts,
 * window, key, [label,] steps): funnel_breakdown_continue's transition (the
 * first row of a group seeds its state with prior).
 */
Datum
clickstream_funnel_breakdown_continue_transfn(PG_FUNCTION_ARGS)
{
	BreakdownState *state = PG_ARGISNULL(0) ? NULL : (BreakdownState *) PG_GETARG_POINTER(0);
	Jsonb	   *prior = NULL;

	if (state == NULL && !PG_ARGISNULL(1))
	{
		if (PG_ARGISNULL(2))
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("funnel_breakdown_continue's prior_end must not be NULL when prior is not")));
		prior = PG_GETARG_JSONB_P(1);
	}
	PG_RETURN_POINTER(BreakdownTransition(fcinfo, state, 3, PG_NARGS() == 8, prior,
										  prior ? PG_GETARG_TIMESTAMPTZ(2) : 0));
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
