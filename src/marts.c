/*-------------------------------------------------------------------------
 *
 * marts.c
 *	  Sorted sets of text for the gold marts: clickstream.text_set_union()
 *	  and clickstream.text_set_minus().
 *
 * The marts count distinct users per day and page, and per day and
 * category.  Rather than one index entry per (day, key, user), every row of
 * clickstream.user_days keeps the pages and categories of that user and day
 * as a sorted array without duplicates (byte order: the C collation).  A
 * refresh step merges in what its events bring (text_set_union) and counts
 * a user once more for each key that is new to the set (text_set_minus):
 * one row update per user and day, whatever the number of keys, and a
 * linear merge of two sorted arrays, no sort.
 *
 * The functions check that their inputs are sorted and free of duplicates,
 * and refuse NULL elements: a wrong array would make the counts wrong
 * silently.
 *
 *-------------------------------------------------------------------------
 */
#include "clickstream.h"

#include "catalog/pg_type.h"
#include "fmgr.h"
#include "utils/array.h"
#include "util.h"

PG_FUNCTION_INFO_V1(clickstream_text_set_union);
PG_FUNCTION_INFO_V1(clickstream_text_set_minus);

/* A one-dimensional text array's elements; errors for NULLs or disorder. */
static Datum *
MartsSetElements(ArrayType *array, const char *name, int *n)
{
	Datum	   *elems;
	bool	   *nulls;

	if (ARR_NDIM(array) > 1)
		ereport(ERROR,
				(errcode(ERRCODE_ARRAY_SUBSCRIPT_ERROR),
				 errmsg("%s must be a one-dimensional array", name)));
	deconstruct_array(array, TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, n);
	for (int i = 0; i < *n; i++)
	{
		if (nulls[i])
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("%s must not contain NULL elements", name)));
		if (i > 0 && UtilTextCompare((struct varlena *) DatumGetPointer(elems[i - 1]),
									 (struct varlena *) DatumGetPointer(elems[i])) >= 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("%s must be sorted in byte order without duplicates", name),
					 errhint("Build it with array_agg(DISTINCT x COLLATE \"C\" ORDER BY x COLLATE \"C\").")));
	}
	return elems;
}

/* The text array of elems[0..n). */
static Datum
MartsSetResult(Datum *elems, int n)
{
	return PointerGetDatum(construct_array(elems, n, TEXTOID, -1, false, TYPALIGN_INT));
}

/* Merge two sorted sets of text: every element of either, once, sorted. */
Datum
clickstream_text_set_union(PG_FUNCTION_ARGS)
{
	int			na;
	int			nb;
	Datum	   *a = MartsSetElements(PG_GETARG_ARRAYTYPE_P(0), "the first set", &na);
	Datum	   *b = MartsSetElements(PG_GETARG_ARRAYTYPE_P(1), "the second set", &nb);
	Datum	   *out = palloc((na + nb + 1) * sizeof(Datum));
	int			i = 0;
	int			j = 0;
	int			k = 0;

	while (i < na || j < nb)
	{
		int			c;

		if (i == na)
			c = 1;
		else if (j == nb)
			c = -1;
		else
			c = UtilTextCompare((struct varlena *) DatumGetPointer(a[i]),
								(struct varlena *) DatumGetPointer(b[j]));
		if (c <= 0)
			out[k++] = a[i++];
		else
			out[k++] = b[j++];
		if (c == 0)
			j++;
	}
	PG_RETURN_DATUM(MartsSetResult(out, k));
}

/* The elements of the first sorted set of text that the second lacks. */
Datum
clickstream_text_set_minus(PG_FUNCTION_ARGS)
{
	int			na;
	int			nb;
	Datum	   *a = MartsSetElements(PG_GETARG_ARRAYTYPE_P(0), "the first set", &na);
	Datum	   *b = MartsSetElements(PG_GETARG_ARRAYTYPE_P(1), "the second set", &nb);
	Datum	   *out = palloc((na + 1) * sizeof(Datum));
	int			j = 0;
	int			k = 0;

	for (int i = 0; i < na; i++)
	{
		int			c = 1;

		while (j < nb &&
			   (c = UtilTextCompare((struct varlena *) DatumGetPointer(a[i]),
									(struct varlena *) DatumGetPointer(b[j]))) > 0)
			j++;
		if (j == nb || c != 0)
			out[k++] = a[i];
	}
	PG_RETURN_DATUM(MartsSetResult(out, k));
}
