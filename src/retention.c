/*-------------------------------------------------------------------------
 *
 * retention.c
 *	  The aggregate clickstream.retention(c1, ..., cN): whether condition 1
 *	  held on some row of the group, and for each other condition whether it
 *	  held too, as ClickHouse's retention().
 *
 * The state is a bit string, one bit per condition, ORed row after row.
 * The semantics are in docs/sessions-and-funnels.md ("Funnels").
 *
 *-------------------------------------------------------------------------
 */
#include "clickstream.h"

#include "catalog/pg_type.h"
#include "utils/array.h"
#include "utils/varbit.h"

#include "funnel.h"

PG_FUNCTION_INFO_V1(clickstream_retention_transfn);
PG_FUNCTION_INFO_V1(clickstream_retention_final);

/*
 * clickstream.retention_transfn(state bit, conditions bool[]): OR the
 * row's conditions into the state (modified in place: it is the
 * aggregate's own copy).
 */
Datum
clickstream_retention_transfn(PG_FUNCTION_ARGS)
{
	MemoryContext aggcxt;
	VarBit	   *state;
	ArrayType  *conds;
	int			nconds;
	const bool *flags;
	bits8	   *nulls;
	bits8	   *bits;
	int			k = 0;

	if (!AggCheckCallContext(fcinfo, &aggcxt))
		elog(ERROR, "clickstream_retention_transfn called in non-aggregate context");
	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("retention conditions must not be a NULL array")));
	conds = PG_GETARG_ARRAYTYPE_P(1);
	if (ARR_NDIM(conds) > 1)
		ereport(ERROR,
				(errcode(ERRCODE_ARRAY_SUBSCRIPT_ERROR),
				 errmsg("retention conditions must be a one-dimensional array")));
	nconds = ARR_NDIM(conds) == 1 ? ARR_DIMS(conds)[0] : 0;
	if (nconds < 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("retention needs at least one condition")));
	if (nconds > FUNNEL_MAX_CONDITIONS)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("retention takes at most %d conditions, got %d",
						FUNNEL_MAX_CONDITIONS, nconds)));

	if (PG_ARGISNULL(0))
	{
		Size		size = VARBITTOTALLEN(nconds);

		/* the executor copies a new state into its own context */
		state = palloc0(size);
		SET_VARSIZE(state, size);
		VARBITLEN(state) = nconds;
	}
	else
	{
		state = (VarBit *) PG_GETARG_POINTER(0);
		if (VARBITLEN(state) != nconds)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("retention arguments differ between rows of one group"),
					 errdetail("The number of conditions must be the same on every row.")));
	}

	flags = (const bool *) ARR_DATA_PTR(conds);
	nulls = ARR_NULLBITMAP(conds);
	bits = VARBITS(state);
	for (int i = 0; i < nconds; i++)
	{
		if (nulls != NULL && !(nulls[i >> 3] & (1 << (i & 7))))
			continue;			/* NULL is false */
		if (flags[k++])
			bits[i >> 3] |= 0x80 >> (i & 7);
	}
	PG_RETURN_VARBIT_P(state);
}

/*
 * clickstream.retention_final(state): r[1] = condition 1 held on some row;
 * r[k] = condition 1 and condition k each held on some row.
 */
Datum
clickstream_retention_final(PG_FUNCTION_ARGS)
{
	VarBit	   *state;
	int			n;
	Datum	   *out;
	bits8	   *bits;
	bool		first;

	if (PG_ARGISNULL(0))
		PG_RETURN_NULL();
	state = PG_GETARG_VARBIT_P(0);
	n = VARBITLEN(state);
	bits = VARBITS(state);
	first = n > 0 && (bits[0] & 0x80) != 0;
	out = palloc(sizeof(Datum) * Max(n, 1));
	for (int i = 0; i < n; i++)
		out[i] = BoolGetDatum(first && (bits[i >> 3] & (0x80 >> (i & 7))) != 0);
	PG_RETURN_ARRAYTYPE_P(construct_array(out, n, BOOLOID, 1, true, TYPALIGN_CHAR));
}
