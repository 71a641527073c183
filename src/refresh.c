/*-------------------------------------------------------------------------
 *
 * refresh.c
 *	  The rows of one refresh step: taken out of their source, parsed,
 *	  deduplicated and handed to the writer.
 *
 * clickstream.promote_rows() is the body of a refresh step and of a
 * dead-letter replay; the plpgsql around it (clickstream.refresh_step and
 * clickstream.replay_dead_letters) chooses the rows, moves the watermarks in
 * the same transaction and records the run.  The refresh is described in
 * docs/design.md ("The refresh").  One call:
 *
 *	  1. runs the source's DELETE ... RETURNING through SPI into a
 *	     DestReceiver that parses each row as it arrives (silver.c): no
 *	     staging table.  A rejected row keeps its bytes for dead_letters; a
 *	     valid one becomes its clickstream.events heap tuple at once;
 *	  2. keeps, per event_id, the first delivery (Kafka timestamp, then
 *	     partition and offset), sorting short key prefixes rather than rows;
 *	  3. writes event_ids in id order, which also tells the ids promoted
 *	     before (writer.c); creates the partitions of the days left; writes
 *	     events by day, user and time (and the same tuples to the session's
 *	     pg_temp.clickstream_step_events, for gold; those a trigger may have
 *	     changed are read back from silver), touched (one row per
 *	     day and user), and the rejected rows to dead_letters with one INSERT ... SELECT
 *	     FROM unnest() per chunk.  No per-row SPI.
 *
 * No other writer of event_ids runs meanwhile (refresh steps and
 * replay_dead_letters lock clickstream.refresh_history IN EXCLUSIVE MODE
 * first); its unique index stays the safety net.
 *
 * A row-level error while writing (a data or constraint error, RAISE in a
 * trigger, a value an index cannot hold) aborts the call; the caller then
 * runs the step again with isolate, which keeps every payload, looks the
 * ids up first, and writes by halves in subtransactions until the refused
 * rows are alone (isolate.c).  Those go to dead_letters as
 * rejected_by_silver; every other row is promoted.
 *
 * Memory: a step's rows stay in memory until written, so it grows with
 * clickstream.refresh_batch_size (about 0.5 kB per typical event) and with
 * the payload bytes, which clickstream.refresh_batch_bytes caps (the
 * source the caller builds takes at most that much, clickstream.refresh_step).
 *
 *-------------------------------------------------------------------------
 */
#include "clickstream.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "executor/tuptable.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "port/pg_bswap.h"
#include "tcop/dest.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/date.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "util.h"

PG_FUNCTION_INFO_V1(clickstream_promote_rows);
PG_FUNCTION_INFO_V1(clickstream_in_transaction_block);

/* Dead letters are inserted in chunks of at most this many rows or bytes. */
#define REFRESH_DEAD_CHUNK_ROWS 10000
#define REFRESH_DEAD_CHUNK_BYTES (64 * 1024 * 1024)

/* A row for dead_letters. */
typedef struct RefreshDead
{
	text	   *reason;
	text	   *detail;
	text	   *topic;
	int32		partition;
	int64		offset;
	TimestampTz kafka_ts;
	bool		kafka_ts_null;
	bytea	   *key;			/* NULL when none */
	bytea	   *payload;		/* NULL for a tombstone */
} RefreshDead;

/*
 * Sort entries: the leading bytes of a key as a big-endian integer (zero
 * padded; text holds no zero byte, so integer order is byte order, as in the
 * C collation), so that most comparisons never touch the event itself.
 */
typedef struct RefreshById
{
	uint64		id1;			/* event_id bytes 0-7 */
	uint64		id2;			/* event_id bytes 8-15 */
	RefreshEvent *ev;
} RefreshById;

typedef struct RefreshByDay
{
	int32		day;
	uint64		user;			/* user_id bytes 0-7 */
	TimestampTz ts;
	RefreshEvent *ev;
} RefreshByDay;

/* Everything one call keeps. */
typedef struct RefreshStep
{
	MemoryContext cxt;			/* arrays and dead letters */
	MemoryContext rows;			/* events: append-only */
	MemoryContext rowcxt;		/* one row's parse, reset after each */
	int64		run;
	bool		isolate;
	SilverRow  *row;
	RefreshEvent **events;
	int64		nevents;
	int64		maxevents;
	RefreshDead **dead;
	int64		ndead;
	int64		maxdead;
	int64		rows_read;
	int64		duplicates;		/* within the step */
	int64		rejected;		/* by the parser or the write */
} RefreshStep;

/* A step's events in the order they are written, for isolate.c. */
typedef struct RefreshIsolate
{
	RefreshStep *step;
	RefreshEvent **by_day;
} RefreshIsolate;

/* The DestReceiver that takes the source's rows. */
typedef struct RefreshReceiver
{
	DestReceiver pub;
	RefreshStep *step;
} RefreshReceiver;

/* Parsed columns in the order of events' first columns (WriterEventsDesc). */
static const int events_parsed[] = {
	SILVER_COL_EVENT_ID, SILVER_COL_EVENT_TYPE, SILVER_COL_USER_ID,
	SILVER_COL_TS, SILVER_COL_EVENT_DATE, SILVER_COL_EVENT_HOUR,
	SILVER_COL_PRODUCT_ID, SILVER_COL_CATEGORY, SILVER_COL_PRICE,
	SILVER_COL_QUANTITY, SILVER_COL_ORDER_ID, SILVER_COL_PAGE_URL,
	SILVER_COL_REFERRER, SILVER_COL_UTM_SOURCE, SILVER_COL_UTM_MEDIUM,
	SILVER_COL_UTM_CAMPAIGN, SILVER_COL_DEVICE, SILVER_COL_COUNTRY,
	SILVER_COL_IS_HIGH_VALUE, SILVER_COL_REVENUE, SILVER_COL_ATTRS,
};

/* ... followed by kafka_topic, kafka_partition, kafka_offset, run_id. */
#define EVENTS_TOPIC_ATTNUM (lengthof(events_parsed) + 1)
StaticAssertDecl(lengthof(events_parsed) + 4 == WRITER_EVENT_COLUMNS,
				 "events_parsed must match the events columns");

/* Types of the source's RETURNING columns. */
static const Oid source_types[] = {
	TEXTOID, INT4OID, INT8OID, TIMESTAMPTZOID, BYTEAOID, BYTEAOID
};

/* Grow a pointer array (huge allocations: a step may hold millions). */
static void
RefreshGrow(MemoryContext cxt, void ***array, int64 *max)
{
	int64		n = *max == 0 ? 1024 : *max * 2;

	if (*array == NULL)
		*array = MemoryContextAllocHuge(cxt, n * sizeof(void *));
	else
		*array = repalloc_huge(*array, n * sizeof(void *));
	*max = n;
}

/* Keep a row for dead_letters (copies everything into the step). */
static void
RefreshKeepDead(RefreshStep *step, text *reason, text *detail, text *topic,
				int32 partition, int64 offset, bool kafka_ts_null, TimestampTz kafka_ts,
				bytea *key, bytea *payload)
{
	MemoryContext old = MemoryContextSwitchTo(step->cxt);
	RefreshDead *d = palloc(sizeof(RefreshDead));

	d->reason = DatumGetTextPCopy(PointerGetDatum(reason));
	d->detail = detail ? DatumGetTextPCopy(PointerGetDatum(detail)) : NULL;
	d->topic = DatumGetTextPCopy(PointerGetDatum(topic));
	d->partition = partition;
	d->offset = offset;
	d->kafka_ts_null = kafka_ts_null;
	d->kafka_ts = kafka_ts;
	d->key = key ? DatumGetByteaPCopy(PointerGetDatum(key)) : NULL;
	d->payload = payload ? DatumGetByteaPCopy(PointerGetDatum(payload)) : NULL;
	if (step->ndead == step->maxdead)
		RefreshGrow(step->cxt, (void ***) &step->dead, &step->maxdead);
	step->dead[step->ndead++] = d;
	MemoryContextSwitchTo(old);
}

/* Where attribute attnum of an event's tuple lies (a varlena). */
static uint32
RefreshTextOffset(HeapTuple tuple, int attnum)
{
	bool		isnull;
	Datum		d = heap_getattr(tuple, attnum, WriterEventsDesc(), &isnull);

	Assert(!isnull);
	return (char *) DatumGetPointer(d) - (char *) tuple->t_data;
}

/* The Kafka topic of an event (rarely needed: not kept apart). */
static struct varlena *
RefreshEventTopic(const RefreshEvent *ev)
{
	return RefreshEventText(ev, RefreshTextOffset(ev->tuple, EVENTS_TOPIC_ATTNUM));
}

/* Keep a valid event: its events tuple and sort keys. */
static void
RefreshKeepEvent(RefreshStep *step, TupleTableSlot *slot, bytea *payload)
{
	SilverRow  *row = step->row;
	Datum		values[WRITER_EVENT_COLUMNS];
	bool		nulls[WRITER_EVENT_COLUMNS];
	MemoryContext old;
	RefreshEvent *ev;
	int			i;

	for (i = 0; i < lengthof(events_parsed); i++)
	{
		values[i] = row->values[events_parsed[i]];
		nulls[i] = row->nulls[events_parsed[i]];
	}
	values[i] = PointerGetDatum(DatumGetTextPP(slot->tts_values[0]));	/* detoasted */
	values[i + 1] = slot->tts_values[1];
	values[i + 2] = slot->tts_values[2];
	values[i + 3] = Int64GetDatum(step->run);
	nulls[i] = nulls[i + 1] = nulls[i + 2] = nulls[i + 3] = false;

	old = MemoryContextSwitchTo(step->rows);
	ev = palloc(sizeof(RefreshEvent));
	ev->tuple = heap_form_tuple(WriterEventsDesc(), values, nulls);
	ev->id_off = RefreshTextOffset(ev->tuple, 1);
	ev->user_off = RefreshTextOffset(ev->tuple, 3);
	ev->event_date = DatumGetDateADT(row->values[SILVER_COL_EVENT_DATE]);
	ev->ts = DatumGetTimestampTz(row->values[SILVER_COL_TS]);
	ev->kafka_ts_null = slot->tts_isnull[3];
	ev->kafka_ts = slot->tts_isnull[3] ? 0 : DatumGetTimestampTz(slot->tts_values[3]);
	ev->partition = DatumGetInt32(slot->tts_values[1]);
	ev->offset = DatumGetInt64(slot->tts_values[2]);
	ev->duplicate = false;
	ev->refused = false;
	ev->copied = false;
	ev->triggered = false;
	ev->skipped = false;
	ev->key = NULL;
	ev->payload = NULL;
	if (step->isolate)
	{
		/* a refused row goes to dead_letters with its bytes */
		if (!slot->tts_isnull[4])
			ev->key = DatumGetByteaPCopy(slot->tts_values[4]);
		ev->payload = DatumGetByteaPCopy(PointerGetDatum(payload));
	}
	MemoryContextSwitchTo(old);

	if (step->nevents == step->maxevents)
		RefreshGrow(step->cxt, (void ***) &step->events, &step->maxevents);
	step->events[step->nevents++] = ev;
}

/* Check the source's RETURNING columns. */
static void
RefreshReceiverStartup(DestReceiver *self, int operation, TupleDesc typeinfo)
{
	bool		ok = typeinfo->natts == lengthof(source_types);

	for (int i = 0; ok && i < typeinfo->natts; i++)
		ok = TupleDescAttr(typeinfo, i)->atttypid == source_types[i];
	if (!ok)
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("the source of clickstream.promote_rows must return kafka_topic text, kafka_partition integer, kafka_offset bigint, kafka_timestamp timestamptz, kafka_key bytea, payload bytea")));
}

/* Parse one row of the source as it arrives, and keep what it becomes. */
static bool
RefreshReceiveSlot(TupleTableSlot *slot, DestReceiver *self)
{
	RefreshStep *step = ((RefreshReceiver *) self)->step;
	MemoryContext old;
	bytea	   *payload = NULL;

	slot_getallattrs(slot);
	if (slot->tts_isnull[0] || slot->tts_isnull[1] || slot->tts_isnull[2])
		ereport(ERROR,
				(errcode(ERRCODE_NOT_NULL_VIOLATION),
				 errmsg("a row to promote has no Kafka topic, partition or offset")));
	step->rows_read++;

	old = MemoryContextSwitchTo(step->rowcxt);
	if (!slot->tts_isnull[5])
		payload = DatumGetByteaPP(slot->tts_values[5]);
	SilverParseMessage(step->row, payload ? VARDATA_ANY(payload) : NULL,
					   payload ? VARSIZE_ANY_EXHDR(payload) : 0);
	if (!step->row->nulls[SILVER_COL_REASON])
	{
		RefreshKeepDead(step, DatumGetTextPP(step->row->values[SILVER_COL_REASON]),
						DatumGetTextPP(step->row->values[SILVER_COL_DETAIL]),
						DatumGetTextPP(slot->tts_values[0]),
						DatumGetInt32(slot->tts_values[1]), DatumGetInt64(slot->tts_values[2]),
						slot->tts_isnull[3],
						slot->tts_isnull[3] ? 0 : DatumGetTimestampTz(slot->tts_values[3]),
						slot->tts_isnull[4] ? NULL : DatumGetByteaPP(slot->tts_values[4]),
						payload);
		step->rejected++;
	}
	else
		RefreshKeepEvent(step, slot, payload);
	MemoryContextSwitchTo(old);
	MemoryContextReset(step->rowcxt);
	return true;
}

/* Nothing to release: the step owns what was kept. */
static void
RefreshReceiverShutdown(DestReceiver *self)
{
}

/* The receiver lives on the caller's stack; nothing to free. */
static void
RefreshReceiverDestroy(DestReceiver *self)
{
}

/*
 * Run the source (a DELETE ... RETURNING, $1..$3 = only_reason, since, ids)
 * and parse every row it returns.
 */
static void
RefreshTake(RefreshStep *step, const char *source, Datum *params, bool *nulls)
{
	Oid			types[3] = {TEXTOID, TIMESTAMPTZOID, INT8ARRAYOID};
	RefreshReceiver receiver;
	SPIExecuteOptions options;
	ParamListInfo paramli;
	SPIPlanPtr	plan;
	int			rc;

	plan = SPI_prepare(source, lengthof(types), types);
	if (plan == NULL)
		elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));

	paramli = makeParamList(lengthof(types));
	for (int i = 0; i < lengthof(types); i++)
	{
		paramli->params[i].value = params[i];
		paramli->params[i].isnull = nulls[i];
		paramli->params[i].pflags = PARAM_FLAG_CONST;
		paramli->params[i].ptype = types[i];
	}

	memset(&receiver, 0, sizeof(receiver));
	receiver.pub.receiveSlot = RefreshReceiveSlot;
	receiver.pub.rStartup = RefreshReceiverStartup;
	receiver.pub.rShutdown = RefreshReceiverShutdown;
	receiver.pub.rDestroy = RefreshReceiverDestroy;
	receiver.pub.mydest = DestNone;
	receiver.step = step;

	memset(&options, 0, sizeof(options));
	options.params = paramli;
	options.read_only = false;
	options.dest = (DestReceiver *) &receiver;
	rc = SPI_execute_plan_extended(plan, &options);
	if (rc != SPI_OK_DELETE_RETURNING)
		elog(ERROR, "the source of clickstream.promote_rows must be a DELETE ... RETURNING, not %s",
			 SPI_result_code_string(rc));
	SPI_freeplan(plan);
}

/* Bytes skip.. of a varlena, zero padded to 8, as a big-endian integer. */
static inline uint64
RefreshPrefix(const struct varlena *v, int skip)
{
	int			len = VARSIZE_ANY_EXHDR(v) - skip;
	uint64		n = 0;

	if (len > 0)
		memcpy(&n, VARDATA_ANY(v) + skip, Min(len, (int) sizeof(n)));
	return pg_ntoh64(n);
}

/* Order by event_id, then delivery (Kafka timestamp, partition, offset). */
static int
RefreshCompareDelivery(const RefreshEvent *a, const RefreshEvent *b)
{
	int			c = UtilTextCompare(RefreshEventText(a, a->id_off),
									RefreshEventText(b, b->id_off));

	if (c != 0)
		return c;
	/* NULL timestamps last, as in ORDER BY ... ASC */
	if (a->kafka_ts_null != b->kafka_ts_null)
		return a->kafka_ts_null ? 1 : -1;
	if (a->kafka_ts != b->kafka_ts)
		return a->kafka_ts < b->kafka_ts ? -1 : 1;
	if (a->partition != b->partition)
		return a->partition < b->partition ? -1 : 1;
	if (a->offset != b->offset)
		return a->offset < b->offset ? -1 : 1;
	return UtilTextCompare(RefreshEventTopic(a), RefreshEventTopic(b));
}

/* RefreshCompareDelivery, on the id prefixes first. */
static inline int
RefreshCompareById(const RefreshById *a, const RefreshById *b)
{
	if (a->id1 != b->id1)
		return a->id1 < b->id1 ? -1 : 1;
	if (a->id2 != b->id2)
		return a->id2 < b->id2 ? -1 : 1;
	return RefreshCompareDelivery(a->ev, b->ev);
}

/* Order by day, user_id (the prefix first), ts, then event_id. */
static inline int
RefreshCompareByDay(const RefreshByDay *a, const RefreshByDay *b)
{
	if (a->day != b->day)
		return a->day < b->day ? -1 : 1;
	if (a->user != b->user)
		return a->user < b->user ? -1 : 1;
	/* a zero last byte: both ids are shorter than 8 bytes, hence equal */
	if ((a->user & 0xFF) != 0)
	{
		int			c = UtilTextCompare(RefreshEventText(a->ev, a->ev->user_off),
										RefreshEventText(b->ev, b->ev->user_off));

		if (c != 0)
			return c;
	}
	if (a->ts != b->ts)
		return a->ts < b->ts ? -1 : 1;
	return UtilTextCompare(RefreshEventText(a->ev, a->ev->id_off),
						   RefreshEventText(b->ev, b->ev->id_off));
}

#define ST_SORT RefreshSortById
#define ST_ELEMENT_TYPE RefreshById
#define ST_COMPARE(a, b) RefreshCompareById(a, b)
#define ST_SCOPE static
#define ST_CHECK_FOR_INTERRUPTS
#define ST_DEFINE
#include "lib/sort_template.h"

#define ST_SORT RefreshSortByDay
#define ST_ELEMENT_TYPE RefreshByDay
#define ST_COMPARE(a, b) RefreshCompareByDay(a, b)
#define ST_SCOPE static
#define ST_CHECK_FOR_INTERRUPTS
#define ST_DEFINE
#include "lib/sort_template.h"

/*
 * Find the first delivery of each event_id; the later ones are marked as
 * duplicates.  Returns the first deliveries in id order, *n of them.
 */
static RefreshEvent **
RefreshFirstDeliveries(RefreshStep *step, int64 *n)
{
	RefreshById *sorted;
	RefreshEvent **by_id;
	int64		k = 0;

	sorted = MemoryContextAllocHuge(CurrentMemoryContext,
									Max(step->nevents, 1) * sizeof(RefreshById));
	for (int64 i = 0; i < step->nevents; i++)
	{
		RefreshEvent *ev = step->events[i];
		struct varlena *id = RefreshEventText(ev, ev->id_off);

		sorted[i].id1 = RefreshPrefix(id, 0);
		sorted[i].id2 = RefreshPrefix(id, 8);
		sorted[i].ev = ev;
	}
	RefreshSortById(sorted, step->nevents);
	by_id = MemoryContextAllocHuge(CurrentMemoryContext,
								   Max(step->nevents, 1) * sizeof(RefreshEvent *));
	for (int64 i = 0; i < step->nevents; i++)
	{
		RefreshEvent *ev = sorted[i].ev;

		if (i > 0 && sorted[i].id1 == sorted[i - 1].id1 && sorted[i].id2 == sorted[i - 1].id2 &&
			UtilTextCompare(RefreshEventText(ev, ev->id_off),
							RefreshEventText(sorted[i - 1].ev, sorted[i - 1].ev->id_off)) == 0)
		{
			ev->duplicate = true;
			step->duplicates++;
		}
		else
			by_id[k++] = ev;
	}
	pfree(sorted);
	*n = k;
	return by_id;
}

/*
 * The events of the step not marked as duplicates, sorted by day, user and
 * time; *n of them.  The sort entries are kept in *sorted.
 */
static RefreshEvent **
RefreshSortedByDay(RefreshStep *step, RefreshByDay **sorted, int64 *n)
{
	RefreshByDay *s = MemoryContextAllocHuge(CurrentMemoryContext,
											 Max(step->nevents, 1) * sizeof(RefreshByDay));
	RefreshEvent **by_day;
	int64		k = 0;

	/* in arrival order: the events lie in memory in that order */
	for (int64 i = 0; i < step->nevents; i++)
	{
		RefreshEvent *ev = step->events[i];

		if (ev->duplicate)
			continue;
		s[k].day = ev->event_date;
		s[k].user = RefreshPrefix(RefreshEventText(ev, ev->user_off), 0);
		s[k].ts = ev->ts;
		s[k].ev = ev;
		k++;
	}
	RefreshSortByDay(s, k);
	by_day = MemoryContextAllocHuge(CurrentMemoryContext, Max(k, 1) * sizeof(RefreshEvent *));
	for (int64 i = 0; i < k; i++)
		by_day[i] = s[i].ev;
	*sorted = s;
	*n = k;
	return by_day;
}

/* Create the partitions of the days of by_day[0..n); returns how many. */
static int
RefreshCreatePartitions(RefreshEvent **by_day, int64 n)
{
	Datum	   *days;
	int			ndays = 0;
	Datum		arg;
	Oid			argtype = DATEARRAYOID;
	bool		isnull;
	int			created;

	if (n == 0)
		return 0;
	days = MemoryContextAllocHuge(CurrentMemoryContext, n * sizeof(Datum));
	for (int64 i = 0; i < n; i++)
		if (i == 0 || by_day[i]->event_date != by_day[i - 1]->event_date)
			days[ndays++] = DateADTGetDatum(by_day[i]->event_date);
	arg = PointerGetDatum(construct_array(days, ndays, DATEOID, sizeof(DateADT), true,
										  TYPALIGN_INT));
	if (SPI_execute_with_args("SELECT clickstream.create_partitions($1)", 1, &argtype,
							  &arg, NULL, false, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "clickstream.create_partitions failed");
	created = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	pfree(days);
	return isnull ? 0 : created;
}

/* Build a one-dimensional array of the given type (NULL where nulls). */
Datum
RefreshArray(Datum *values, bool *nulls, int n, Oid type)
{
	int16		typlen;
	bool		typbyval;
	char		typalign;
	int			dims[1] = {n};
	int			lbs[1] = {1};

	get_typlenbyvalalign(type, &typlen, &typbyval, &typalign);
	return PointerGetDatum(construct_md_array(values, nulls, 1, dims, lbs, type,
											  typlen, typbyval, typalign));
}

/* Insert dead[0..n) into dead_letters, a chunk per statement. */
static void
RefreshWriteDead(RefreshDead **dead, int64 n)
{
	static const char *sql =
		"INSERT INTO clickstream.dead_letters "
		"(stage, reason, detail, kafka_topic, kafka_partition, kafka_offset, "
		" kafka_timestamp, kafka_key, payload, payload_bytes) "
		"SELECT 'silver', d.reason, d.detail, d.topic, d.part, d.off, d.ts, d.key, "
		"       d.payload, octet_length(d.payload) "
		"FROM unnest($1::text[], $2::text[], $3::text[], $4::int4[], $5::int8[], "
		"            $6::timestamptz[], $7::bytea[], $8::bytea[]) "
		"     AS d(reason, detail, topic, part, off, ts, key, payload) "
		"ON CONFLICT (kafka_topic, kafka_partition, kafka_offset, stage) DO NOTHING";
	Oid			types[8] = {TEXTARRAYOID, TEXTARRAYOID, TEXTARRAYOID, INT4ARRAYOID,
		INT8ARRAYOID, TIMESTAMPTZARRAYOID, BYTEAARRAYOID, BYTEAARRAYOID};
	Oid			elemtypes[8] = {TEXTOID, TEXTOID, TEXTOID, INT4OID, INT8OID,
		TIMESTAMPTZOID, BYTEAOID, BYTEAOID};
	int64		start = 0;

	while (start < n)
	{
		MemoryContext chunk = AllocSetContextCreate(CurrentMemoryContext,
													"clickstream dead letters",
													ALLOCSET_DEFAULT_SIZES);
		MemoryContext old = MemoryContextSwitchTo(chunk);
		int			rows = 0;
		Size		bytes = 0;
		Datum	   *values[8];
		bool	   *nulls[8];
		Datum		args[8];

		while (start + rows < n && rows < REFRESH_DEAD_CHUNK_ROWS &&
			   (rows == 0 || bytes < REFRESH_DEAD_CHUNK_BYTES))
		{
			RefreshDead *d = dead[start + rows];

			bytes += d->payload ? VARSIZE(d->payload) : 0;
			rows++;
		}
		for (int c = 0; c < 8; c++)
		{
			values[c] = palloc(rows * sizeof(Datum));
			nulls[c] = palloc0(rows * sizeof(bool));
		}
		for (int i = 0; i < rows; i++)
		{
			RefreshDead *d = dead[start + i];

			values[0][i] = PointerGetDatum(d->reason);
			values[1][i] = PointerGetDatum(d->detail);
			nulls[1][i] = d->detail == NULL;
			values[2][i] = PointerGetDatum(d->topic);
			values[3][i] = Int32GetDatum(d->partition);
			values[4][i] = Int64GetDatum(d->offset);
			values[5][i] = TimestampTzGetDatum(d->kafka_ts);
			nulls[5][i] = d->kafka_ts_null;
			values[6][i] = PointerGetDatum(d->key);
			nulls[6][i] = d->key == NULL;
			values[7][i] = PointerGetDatum(d->payload);
			nulls[7][i] = d->payload == NULL;
		}
		for (int c = 0; c < 8; c++)
			args[c] = RefreshArray(values[c], nulls[c], rows, elemtypes[c]);
		if (SPI_execute_with_args(sql, 8, types, args, NULL, false, 0) != SPI_OK_INSERT)
			elog(ERROR, "could not write clickstream.dead_letters");
		MemoryContextSwitchTo(old);
		MemoryContextDelete(chunk);
		start += rows;
	}
}

/* IsolateWriter.write: write the ids and events of by_day[lo..hi). */
static void
RefreshWriteRows(void *arg, int64 lo, int64 hi)
{
	RefreshIsolate *ri = arg;
	int64		written;

	WriterIds(ri->by_day + lo, hi - lo);
	written = WriterEvents(ri->by_day + lo, hi - lo);
	(void) WriterStepEvents(ri->by_day + lo, hi - lo, written);
}

/* IsolateWriter.refused: mark by_day[i] and keep it for dead_letters. */
static void
RefreshRowRefused(void *arg, int64 i, ErrorData *edata)
{
	RefreshIsolate *ri = arg;
	RefreshEvent *ev = ri->by_day[i];

	ev->refused = true;
	RefreshKeepDead(ri->step, cstring_to_text("rejected_by_silver"),
					cstring_to_text(edata->message),
					(text *) RefreshEventTopic(ev),
					ev->partition, ev->offset, ev->kafka_ts_null, ev->kafka_ts,
					(bytea *) ev->key, (bytea *) ev->payload);
	ri->step->rejected++;
}

/*
 * Write by_day[0..n) so that the rows the write refuses are isolated,
 * marked and kept for dead_letters (isolate.c).  failed: writing them all
 * at once is known to fail.
 */
static void
RefreshWriteIsolating(RefreshStep *step, RefreshEvent **by_day, int64 n, bool failed)
{
	RefreshIsolate ri = {step, by_day};
	IsolateWriter w;

	w.write = RefreshWriteRows;
	w.refused = RefreshRowRefused;
	w.has_rows = NULL;
	w.arg = &ri;
	w.errcxt = step->cxt;
	IsolateWrite(&w, 0, n, failed);
}

/*
 * Group the promoted events by day and user, from their sort entries (by
 * day, user and time); returns the groups, *ngroups of them.  check: the
 * write may have refused some (isolate).
 */
static RefreshTouched *
RefreshGroupTouched(RefreshByDay *sorted, int64 n, bool check, int64 *ngroups)
{
	RefreshTouched *groups = MemoryContextAllocHuge(CurrentMemoryContext,
													Max(n, 1) * sizeof(RefreshTouched));
	RefreshByDay *cur = NULL;
	int64		ng = 0;

	for (int64 i = 0; i < n; i++)
	{
		RefreshByDay *e = &sorted[i];

		if ((check && (e->ev->refused || e->ev->duplicate)) || e->ev->skipped)
			continue;
		if (cur == NULL || cur->day != e->day || cur->user != e->user ||
			((e->user & 0xFF) != 0 &&
			 UtilTextCompare(RefreshEventText(cur->ev, cur->ev->user_off),
							 RefreshEventText(e->ev, e->ev->user_off)) != 0))
		{
			cur = e;
			groups[ng].first = e->ev;
			groups[ng].first_ts = e->ts;
			groups[ng].events = 0;
			ng++;
		}
		groups[ng - 1].last_ts = e->ts;
		groups[ng - 1].events++;
	}
	*ngroups = ng;
	return groups;
}

/*
 * clickstream.promote_rows(run, source, only_reason, since, ids, isolate,
 * failed) RETURNS (rows_read, rows_promoted, rows_duplicate, rows_rejected,
 * partitions_created)
 *
 * Take the rows the source statement returns, and promote them: see the
 * head of this file.
 */
Datum
clickstream_promote_rows(PG_FUNCTION_ARGS)
{
	RefreshStep step;
	TupleDesc	tupdesc;
	char	   *source;
	Datum		params[3];
	bool		nulls[3];
	bool		failed;
	int64		n;
	int64		kept;
	int64		promoted = 0;
	int64		written;
	int64		duplicates;
	int64		ntouched;
	int			partitions;
	RefreshEvent **by_id;
	RefreshEvent **by_day;
	RefreshByDay *sorted;
	RefreshTouched *touched;
	Datum		result[5];
	bool		result_nulls[5] = {false, false, false, false, false};
	MemoryContext callcxt = CurrentMemoryContext;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1) || PG_ARGISNULL(5) || PG_ARGISNULL(6))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("run, source, isolate and failed must not be NULL")));
	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "clickstream.promote_rows must return a composite type");
	SilverCheckDatabase();

	memset(&step, 0, sizeof(step));
	step.run = PG_GETARG_INT64(0);
	source = text_to_cstring(PG_GETARG_TEXT_PP(1));
	for (int i = 0; i < 3; i++)
	{
		nulls[i] = PG_ARGISNULL(2 + i);
		params[i] = nulls[i] ? (Datum) 0 : PG_GETARG_DATUM(2 + i);
	}
	step.isolate = PG_GETARG_BOOL(5);
	failed = PG_GETARG_BOOL(6);
	step.cxt = AllocSetContextCreate(callcxt, "clickstream refresh step",
									 ALLOCSET_DEFAULT_SIZES);
	step.rows = GenerationContextCreate(step.cxt, "clickstream refresh rows",
										ALLOCSET_DEFAULT_SIZES);
	step.rowcxt = AllocSetContextCreate(step.cxt, "clickstream refresh row",
										ALLOCSET_DEFAULT_SIZES);
	step.row = SilverRowGet();
	(void) WriterEventsDesc();

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	MemoryContextSwitchTo(step.cxt);

	/* take and parse the rows; the first delivery of each id, in id order */
	RefreshTake(&step, source, params, nulls);
	MemoryContextSwitchTo(step.cxt);
	by_id = RefreshFirstDeliveries(&step, &n);

	if (!step.isolate)
	{
		/* event_ids tells the ids promoted before; then the new events */
		duplicates = step.duplicates + WriterIds(by_id, n);
		by_day = RefreshSortedByDay(&step, &sorted, &kept);
		partitions = RefreshCreatePartitions(by_day, kept);
		MemoryContextSwitchTo(step.cxt);
		written = WriterEvents(by_day, kept);
		promoted = kept - WriterStepEvents(by_day, kept, written);
		RefreshWriteDead(step.dead, step.ndead);
	}
	else
	{
		int64		parsed_dead = step.ndead;

		WriterProbeIds(by_id, n);
		by_day = RefreshSortedByDay(&step, &sorted, &kept);
		partitions = RefreshCreatePartitions(by_day, kept);
		MemoryContextSwitchTo(step.cxt);
		RefreshWriteDead(step.dead, parsed_dead);
		MemoryContextSwitchTo(step.cxt);
		RefreshWriteIsolating(&step, by_day, kept, failed);
		RefreshWriteDead(step.dead + parsed_dead, step.ndead - parsed_dead);
		duplicates = step.duplicates;
		for (int64 i = 0; i < n; i++)
		{
			if (by_id[i]->duplicate)
				duplicates++;
			else if (!by_id[i]->refused && !by_id[i]->skipped)
				promoted++;
		}
	}
	MemoryContextSwitchTo(step.cxt);

	/* what changed, per day and user */
	touched = RefreshGroupTouched(sorted, kept, step.isolate, &ntouched);
	WriterTouched(touched, ntouched, step.run);

	SPI_finish();
	MemoryContextSwitchTo(callcxt);

	result[0] = Int64GetDatum(step.rows_read);
	result[1] = Int64GetDatum(promoted);
	result[2] = Int64GetDatum(duplicates);
	result[3] = Int64GetDatum(step.rejected);
	result[4] = Int32GetDatum(partitions);
	MemoryContextDelete(step.cxt);
	tupdesc = BlessTupleDesc(tupdesc);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, result, result_nulls)));
}

/*
 * clickstream.in_transaction_block() RETURNS boolean
 *
 * Is the caller inside a transaction block (after BEGIN)?  refresh() asks
 * before its first COMMIT, to refuse with a hint.
 */
Datum
clickstream_in_transaction_block(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(IsTransactionBlock());
}
