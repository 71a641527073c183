/*-------------------------------------------------------------------------
 *
 * bronze.c
 *	  Batches of Kafka messages and their transaction: the bulk write into
 *	  clickstream.bronze, the positions stored with it, and dead letters.
 *
 * A batch is kept as a stream of binary COPY tuples, built as messages
 * arrive (librdkafka's buffers are released at once).  Writing it runs the
 * COPY machinery on them (copy.c), so multi-insert buffering, indexes,
 * constraints and triggers a user adds to bronze all behave as for COPY.
 * No row-by-row SPI on this path.
 *
 * One transaction per batch holds:
 *	  1. the position rows of the batch's partitions, locked and compared
 *	     with what this consumer expects (another consumer that took over a
 *	     partition after a rebalance has moved it: those rows are not
 *	     written, and the caller re-seeks);
 *	  2. the COPY of the rows, inside a subtransaction.  If a row is refused
 *	     (a data or constraint error), the range is split in halves and
 *	     retried until the refused rows are isolated (isolate.c); they go to
 *	     dead_letters and every other row is written.  Errors that are not
 *	     about a row (disk full, ...) are re-thrown: the worker exits, and
 *	     nothing of the batch is committed;
 *	  3. dead letters (oversize messages, Kafka message errors);
 *	  4. the new positions (ingest_positions, UNLOGGED like bronze) and, at
 *	     a partition's first batch, its durable watermark.
 *
 * Every lock of that transaction is waited for at most lock_timeout (1 s).
 * When one is not granted, the transaction is rolled back whole, what the
 * attempt added to the batch is undone, and BronzeBatchWrite() returns
 * BRONZE_WRITE_BLOCKED: the worker retries the same batch (worker.c).
 *
 *-------------------------------------------------------------------------
 */
#include "clickstream.h"

#include "access/table.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "libpq/pqformat.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "pgstat.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

/* One message of the batch. */
typedef struct BronzeRow
{
	int32		partition;
	int64		offset;
	int64		timestamp_ms;
	int			start;			/* of its COPY tuple in data */
	int			len;
	int			key_pos;		/* in data; -1 when NULL */
	int			key_len;
	int			payload_pos;	/* in data; -1 when NULL */
	int			payload_len;
} BronzeRow;

/* A message that goes to dead_letters instead of bronze. */
typedef struct BronzeDead
{
	int32		partition;
	int64		offset;
	int64		timestamp_ms;
	bytea	   *key;
	bytea	   *payload;
	int64		payload_bytes;
	bool		truncated;
	const char *reason;
	char	   *detail;
} BronzeDead;

/* A partition of the batch. */
typedef struct BronzePart
{
	int32		partition;
	int64		first_offset;
	int64		next_offset;
	int64		messages;
	int64		bytes;
	bool		stale;
	bool		behind;			/* Kafka served offsets below the stored position */
	int64		stored;
} BronzePart;

struct BronzeBatch
{
	MemoryContext cxt;			/* everything below, reset per batch */
	StringInfoData data;		/* binary COPY tuples, back to back */
	BronzeRow  *rows;
	int			nrows;
	int			rows_cap;
	BronzeDead *dead;
	int			ndead;
	int			dead_cap;
	BronzePart *parts;
	int			nparts;
	int			parts_cap;
	int			last_part;		/* index of the last message's partition */
	bool		any_stale;		/* set by BronzeFence */
	Size		bytes;
};

/* The rows of a batch one COPY serves. */
typedef struct BronzeCopyRange
{
	BronzeBatch *batch;
	int			row;			/* next row to serve */
	int			end;			/* one past the last row */
} BronzeCopyRange;

/* The target of a batch's write. */
typedef struct BronzeWrite
{
	Relation	rel;
	BronzeBatch *batch;
} BronzeWrite;

/*
 * Per partition: the position this consumer expects to find stored, and
 * the offset it resumed from (position or watermark) while no position row
 * exists yet.
 */
static int64 *expected = NULL;
static int64 *resumed = NULL;
static int	expected_cap = 0;
#define EXPECT_NONE (-1)		/* no stored row */
#define EXPECT_UNKNOWN (-2)		/* partition never assigned here */

static SPIPlanPtr reserve_plan = NULL;
static SPIPlanPtr unreserve_plan = NULL;
static SPIPlanPtr lock_plan = NULL;
static SPIPlanPtr position_plan = NULL;
static SPIPlanPtr watermark_plan = NULL;
static SPIPlanPtr dead_plan = NULL;
static SPIPlanPtr load_plan = NULL;

/* Longest wait for one lock of a write; then it is retried (worker.c). */
#define BRONZE_LOCK_TIMEOUT "1s"
static char blocked_context[256] = "";

/* Create an empty batch in a context of its own under parent. */
BronzeBatch *
BronzeBatchCreate(MemoryContext parent)
{
	BronzeBatch *batch = MemoryContextAllocZero(parent, sizeof(BronzeBatch));

	batch->cxt = AllocSetContextCreate(parent, "clickstream batch",
									   ALLOCSET_DEFAULT_SIZES);
	BronzeBatchReset(batch);
	return batch;
}

/* Forget the batch's content and release its memory. */
void
BronzeBatchReset(BronzeBatch *batch)
{
	MemoryContext old;

	MemoryContextReset(batch->cxt);
	old = MemoryContextSwitchTo(batch->cxt);
	initStringInfo(&batch->data);
	batch->rows_cap = 1024;
	batch->rows = palloc(sizeof(BronzeRow) * batch->rows_cap);
	batch->nrows = 0;
	batch->dead_cap = 16;
	batch->dead = palloc(sizeof(BronzeDead) * batch->dead_cap);
	batch->ndead = 0;
	batch->parts_cap = 16;
	batch->parts = palloc(sizeof(BronzePart) * batch->parts_cap);
	batch->nparts = 0;
	batch->last_part = 0;
	batch->any_stale = false;
	batch->bytes = 0;
	MemoryContextSwitchTo(old);
}

/* Number of messages in the batch, dead letters included. */
int
BronzeBatchRows(BronzeBatch *batch)
{
	return batch->nrows + batch->ndead;
}

/* Bytes held by the batch: its encoded rows, and what dead letters keep. */
Size
BronzeBatchBytes(BronzeBatch *batch)
{
	return batch->bytes + batch->data.len;
}

/* Does the batch hold no message at all? */
bool
BronzeBatchIsEmpty(BronzeBatch *batch)
{
	return batch->nparts == 0;
}

/* Account a message in its partition's entry. */
static void
BronzeBatchCountPart(BronzeBatch *batch, const KafkaMessage *msg)
{
	BronzePart *part = NULL;

	/* messages come in runs from one partition: try the last one first */
	if (batch->nparts > 0 && batch->parts[batch->last_part].partition == msg->partition)
		part = &batch->parts[batch->last_part];
	for (int i = 0; part == NULL && i < batch->nparts; i++)
		if (batch->parts[i].partition == msg->partition)
		{
			part = &batch->parts[i];
			batch->last_part = i;
		}
	if (part == NULL)
	{
		if (batch->nparts == batch->parts_cap)
		{
			batch->parts_cap *= 2;
			batch->parts = repalloc(batch->parts, sizeof(BronzePart) * batch->parts_cap);
		}
		batch->last_part = batch->nparts;
		part = &batch->parts[batch->nparts++];
		memset(part, 0, sizeof(BronzePart));
		part->partition = msg->partition;
		part->first_offset = msg->offset;
		part->next_offset = msg->offset + 1;
	}
	part->first_offset = Min(part->first_offset, msg->offset);
	part->next_offset = Max(part->next_offset, msg->offset + 1);
	part->messages++;
	part->bytes += msg->payload_len;
}

/* Copy len bytes into a new bytea in the current memory context. */
static bytea *
BronzeBytea(const char *data, size_t len)
{
	bytea	   *b = palloc(VARHDRSZ + len);

	SET_VARSIZE(b, VARHDRSZ + len);
	memcpy(VARDATA(b), data, len);
	return b;
}

/* Queue a message for dead_letters (in the batch's memory context). */
static void
BronzeBatchAddDead(BronzeBatch *batch, int32 partition, int64 offset,
				   int64 timestamp_ms, const char *key, size_t key_len,
				   const char *payload, size_t payload_len,
				   const char *reason, char *detail)
{
	BronzeDead *d;
	size_t		keep = Min(payload_len, (size_t) cs_max_message_bytes);

	if (batch->ndead == batch->dead_cap)
	{
		batch->dead_cap *= 2;
		batch->dead = repalloc(batch->dead, sizeof(BronzeDead) * batch->dead_cap);
	}
	d = &batch->dead[batch->ndead++];
	d->partition = partition;
	d->offset = offset;
	d->timestamp_ms = timestamp_ms;
	d->key = key ? BronzeBytea(key, key_len) : NULL;
	d->payload = payload ? BronzeBytea(payload, keep) : NULL;
	d->payload_bytes = payload ? payload_len : 0;
	batch->bytes += keep + key_len;
	d->truncated = payload && keep < payload_len;
	d->reason = reason;
	d->detail = detail;
}

/* Append a binary COPY field: length, then bytes (NULL when data is NULL). */
static inline void
BronzeField(StringInfo s, const char *data, size_t len)
{
	if (data == NULL)
	{
		pq_sendint32(s, -1);
		return;
	}
	pq_sendint32(s, (int32) len);
	appendBinaryStringInfoNT(s, data, len);
}

/* Append a one-dimensional array field of text or bytea elements. */
static void
BronzeArrayField(StringInfo s, Oid elemtype, int n, const char **elems,
				 const size_t *lens)
{
	int32		total = 20;
	bool		hasnull = false;

	for (int i = 0; i < n; i++)
	{
		total += 4 + (elems[i] ? (int32) lens[i] : 0);
		hasnull |= (elems[i] == NULL);
	}
	pq_sendint32(s, total);
	pq_sendint32(s, 1);			/* ndim */
	pq_sendint32(s, hasnull ? 1 : 0);
	pq_sendint32(s, elemtype);
	pq_sendint32(s, n);			/* dimension */
	pq_sendint32(s, 1);			/* lower bound */
	for (int i = 0; i < n; i++)
		BronzeField(s, elems[i], elems[i] ? lens[i] : 0);
}

/* Kafka milliseconds since 1970 to PostgreSQL microseconds since 2000. */
static inline int64
BronzeTimestamp(int64 ms)
{
	return ms * 1000 - ((int64) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * USECS_PER_DAY);
}

/*
 * Add one consumed message: a bronze row, or a dead letter when it is too
 * large, reported as an error by Kafka, or carries a header name that is
 * not valid in the database encoding.
 */
void
BronzeBatchAdd(BronzeBatch *batch, const char *topic, const KafkaMessage *msg)
{
	MemoryContext old = MemoryContextSwitchTo(batch->cxt);
	StringInfo	s = &batch->data;
	BronzeRow  *row;

	BronzeBatchCountPart(batch, msg);

	if (msg->error != NULL)
	{
		BronzeBatchAddDead(batch, msg->partition, msg->offset, msg->timestamp_ms,
						   msg->key, msg->key_len, msg->payload, msg->payload_len,
						   "kafka_error", pstrdup(msg->error));
		MemoryContextSwitchTo(old);
		return;
	}
	if (msg->payload != NULL && msg->payload_len > (size_t) cs_max_message_bytes)
	{
		BronzeBatchAddDead(batch, msg->partition, msg->offset, msg->timestamp_ms,
						   msg->key, msg->key_len, msg->payload, msg->payload_len,
						   "message_too_large",
						   psprintf("payload of %zu bytes exceeds clickstream.max_message_bytes (%d)",
									msg->payload_len, cs_max_message_bytes));
		MemoryContextSwitchTo(old);
		return;
	}
	for (int i = 0; i < msg->nheaders; i++)
	{
		if (!pg_verify_mbstr(GetDatabaseEncoding(), msg->header_keys[i],
							 strlen(msg->header_keys[i]), true))
		{
			BronzeBatchAddDead(batch, msg->partition, msg->offset, msg->timestamp_ms,
							   msg->key, msg->key_len, msg->payload, msg->payload_len,
							   "invalid_header",
							   psprintf("header %d has a name that is not valid %s",
										i + 1, GetDatabaseEncodingName()));
			MemoryContextSwitchTo(old);
			return;
		}
	}

	if (batch->nrows == batch->rows_cap)
	{
		batch->rows_cap *= 2;
		batch->rows = repalloc(batch->rows, sizeof(BronzeRow) * batch->rows_cap);
	}
	row = &batch->rows[batch->nrows++];
	row->partition = msg->partition;
	row->offset = msg->offset;
	row->timestamp_ms = msg->timestamp_ms;
	row->start = s->len;

	/* the columns of bronze, ingested_at excepted (it defaults to now()) */
	pq_sendint16(s, 8);
	BronzeField(s, topic, strlen(topic));
	pq_sendint32(s, 4);
	pq_sendint32(s, msg->partition);
	pq_sendint32(s, 8);
	pq_sendint64(s, msg->offset);
	if (msg->timestamp_ms >= 0)
	{
		pq_sendint32(s, 8);
		pq_sendint64(s, BronzeTimestamp(msg->timestamp_ms));
	}
	else
		pq_sendint32(s, -1);
	row->key_pos = msg->key ? s->len + 4 : -1;
	row->key_len = msg->key_len;
	BronzeField(s, msg->key, msg->key_len);
	if (msg->nheaders > 0)
	{
		size_t	   *lens = palloc(sizeof(size_t) * msg->nheaders);

		for (int i = 0; i < msg->nheaders; i++)
			lens[i] = strlen(msg->header_keys[i]);
		BronzeArrayField(s, TEXTOID, msg->nheaders, msg->header_keys, lens);
		BronzeArrayField(s, BYTEAOID, msg->nheaders, msg->header_values,
						 msg->header_lens);
		pfree(lens);
	}
	else
	{
		pq_sendint32(s, -1);
		pq_sendint32(s, -1);
	}
	row->payload_pos = msg->payload ? s->len + 4 : -1;
	row->payload_len = msg->payload_len;
	BronzeField(s, msg->payload, msg->payload_len);
	row->len = s->len - row->start;

	MemoryContextSwitchTo(old);
}

/* Is the row's partition excluded from this write (stale)? */
static bool
BronzeRowSkipped(BronzeBatch *batch, const BronzeRow *row)
{
	if (!batch->any_stale)
		return false;
	for (int i = 0; i < batch->nparts; i++)
		if (batch->parts[i].partition == row->partition)
			return batch->parts[i].stale;
	return false;
}

/* CopyNextTuple of a batch: its next row to write in [row, end). */
static bool
BronzeCopyNext(void *arg, const char **data, int *len)
{
	BronzeCopyRange *range = arg;
	BronzeBatch *batch = range->batch;
	BronzeRow  *row;

	while (range->row < range->end &&
		   BronzeRowSkipped(batch, &batch->rows[range->row]))
		range->row++;
	if (range->row >= range->end)
		return false;
	row = &batch->rows[range->row++];
	*data = batch->data.data + row->start;
	*len = row->len;
	return true;
}

/* IsolateWriter.write: COPY the rows [lo, hi) of the batch into bronze. */
static void
BronzeCopyRows(void *arg, int64 lo, int64 hi)
{
	BronzeWrite *bw = arg;
	BronzeCopyRange range = {bw->batch, (int) lo, (int) hi};
	List	   *columns = NIL;
	static const char *const names[] = {
		"kafka_topic", "kafka_partition", "kafka_offset", "kafka_timestamp",
		"kafka_key", "header_keys", "header_values", "payload"
	};

	for (int i = 0; i < lengthof(names); i++)
		columns = lappend(columns, makeString(pstrdup(names[i])));
	(void) CopyFromMemory(bw->rel, columns, BronzeCopyNext, &range);
}

/* IsolateWriter.has_rows: does [lo, hi) hold a row that is to be written? */
static bool
BronzeRangeHasRows(void *arg, int64 lo, int64 hi)
{
	BronzeBatch *batch = ((BronzeWrite *) arg)->batch;

	for (int64 i = lo; i < hi; i++)
		if (!BronzeRowSkipped(batch, &batch->rows[i]))
			return true;
	return false;
}

/* IsolateWriter.refused: bronze refused row i alone; dead-letter it. */
static void
BronzeRowRefused(void *arg, int64 i, ErrorData *edata)
{
	BronzeBatch *batch = ((BronzeWrite *) arg)->batch;
	BronzeRow  *row = &batch->rows[i];
	MemoryContext old = MemoryContextSwitchTo(batch->cxt);

	ereport(WARNING,
			(errmsg("clickstream: bronze refused message at partition %d offset " INT64_FORMAT ": %s",
					row->partition, row->offset, edata->message),
			 errdetail("The message is kept in clickstream.dead_letters; the rest of the batch is written.")));
	BronzeBatchAddDead(batch, row->partition, row->offset, row->timestamp_ms,
					   row->key_pos >= 0 ? batch->data.data + row->key_pos : NULL,
					   row->key_len,
					   row->payload_pos >= 0 ? batch->data.data + row->payload_pos : NULL,
					   row->payload_len,
					   "rejected_by_bronze", pstrdup(edata->message));
	MemoryContextSwitchTo(old);
}

/*
 * Write the batch's rows into bronze, each COPY in a subtransaction; the
 * rows bronze refuses are isolated and dead-lettered (isolate.c).
 */
static void
BronzeWriteRows(Relation rel, BronzeBatch *batch)
{
	BronzeWrite bw = {rel, batch};
	IsolateWriter w;

	w.write = BronzeCopyRows;
	w.refused = BronzeRowRefused;
	w.has_rows = BronzeRangeHasRows;
	w.arg = &bw;
	w.errcxt = batch->cxt;
	IsolateWrite(&w, 0, batch->nrows, false);
}

/* Prepare and keep a plan, once per process. */
static SPIPlanPtr
BronzePlan(SPIPlanPtr *plan, const char *sql, int nargs, Oid *argtypes)
{
	if (*plan == NULL)
	{
		SPIPlanPtr	p = SPI_prepare(sql, nargs, argtypes);

		if (p == NULL)
			elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
		SPI_keepplan(p);
		*plan = p;
	}
	return *plan;
}

/* Build an int4[] or int8[] datum from n values. */
static Datum
BronzeIntArray(const void *values, int n, Oid type)
{
	Datum	   *d = palloc(sizeof(Datum) * Max(n, 1));

	for (int i = 0; i < n; i++)
		d[i] = (type == INT4OID) ? Int32GetDatum(((const int32 *) values)[i])
			: Int64GetDatum(((const int64 *) values)[i]);
	if (type == INT4OID)
		return PointerGetDatum(construct_array(d, n, INT4OID, 4, true, TYPALIGN_INT));
	return PointerGetDatum(construct_array(d, n, INT8OID, 8, FLOAT8PASSBYVAL,
										   TYPALIGN_DOUBLE));
}

/* Grow the expected-position map so that partition fits, and return its slot. */
static int64 *
BronzeExpectedSlot(int32 partition)
{
	if (partition >= expected_cap)
	{
		int			cap = Max(partition + 1, Max(64, expected_cap * 2));

		expected = expected ? repalloc(expected, sizeof(int64) * cap)
			: MemoryContextAlloc(TopMemoryContext, sizeof(int64) * cap);
		resumed = resumed ? repalloc(resumed, sizeof(int64) * cap)
			: MemoryContextAlloc(TopMemoryContext, sizeof(int64) * cap);
		for (int i = expected_cap; i < cap; i++)
		{
			expected[i] = EXPECT_UNKNOWN;
			resumed[i] = -1;
		}
		expected_cap = cap;
	}
	return &expected[partition];
}

/* Record the position this consumer expects to find stored for partition. */
void
BronzeSetExpected(int32 partition, int64 next_offset)
{
	*BronzeExpectedSlot(partition) = next_offset;
}

/*
 * Lock the batch's position rows and mark the partitions whose stored
 * position is not the one this consumer expects as stale.
 */
static void
BronzeFence(BronzeBatch *batch, const char *topic)
{
	Oid			types[2] = {TEXTOID, INT4ARRAYOID};
	int32	   *parts = palloc(sizeof(int32) * batch->nparts);
	Datum		args[2];
	SPIPlanPtr	plan;
	int			nstale;

	for (int i = 0; i < batch->nparts; i++)
		parts[i] = batch->parts[i].partition;
	args[0] = CStringGetTextDatum(topic);
	args[1] = BronzeIntArray(parts, batch->nparts, INT4OID);

	/*
	 * Serialize the writers of a partition through its position row: row
	 * locks need UPDATE on the table, which only the extension's owner has,
	 * so no other role can hold them (an advisory lock, which any role can
	 * take, would let it stop the worker).  A partition without a row yet
	 * (first batch, or after crash recovery) first gets a placeholder,
	 * next_offset -1 (none stored): a consumer inserting the same row waits
	 * for this transaction and then finds it, so two consumers never both
	 * see no row.  Both statements go in partition order.  The locking SELECT
	 * takes a new snapshot, and FOR UPDATE returns the latest version of a
	 * row it waited for: what the previous holder committed.  A row deleted
	 * meanwhile (by hand) is inserted and locked again.
	 */
	for (int attempt = 0;; attempt++)
	{
		if (SPI_execute_plan(BronzePlan(&reserve_plan,
										"INSERT INTO clickstream.ingest_positions (topic, partition, next_offset) "
										"SELECT $1, s.p, -1 FROM (SELECT DISTINCT pg_catalog.unnest($2) AS p) s "
										"ORDER BY s.p ON CONFLICT (topic, partition) DO NOTHING",
										2, types),
							 args, NULL, false, 0) != SPI_OK_INSERT)
			elog(ERROR, "could not reserve the batch's rows of clickstream.ingest_positions");
		plan = BronzePlan(&lock_plan,
						  "SELECT partition, next_offset FROM clickstream.ingest_positions "
						  "WHERE topic = $1 AND partition = ANY ($2) ORDER BY partition FOR UPDATE",
						  2, types);
		if (SPI_execute_plan(plan, args, NULL, false, 0) != SPI_OK_SELECT)
			elog(ERROR, "could not lock clickstream.ingest_positions");
		if (SPI_processed >= (uint64) batch->nparts)
			break;
		if (attempt >= 10)
			elog(ERROR, "the rows of clickstream.ingest_positions keep disappearing");
	}

	for (int i = 0; i < batch->nparts; i++)
	{
		BronzePart *part = &batch->parts[i];
		int64		stored = EXPECT_NONE;
		int64		want = *BronzeExpectedSlot(part->partition);

		for (uint64 r = 0; r < SPI_processed; r++)
		{
			bool		isnull;
			int32		p = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[r],
														SPI_tuptable->tupdesc, 1, &isnull));

			if (p == part->partition)
				stored = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[r],
													 SPI_tuptable->tupdesc, 2, &isnull));
		}
		part->stored = stored;
		part->stale = (want == EXPECT_UNKNOWN || stored != want);
		part->behind = false;
		batch->any_stale |= part->stale;

		/*
		 * Kafka served offsets below the stored position (the position was
		 * out of range, e.g. the topic was recreated, and the consumer reset
		 * to the earliest offset): writing them would duplicate rows.
		 */
		if (!part->stale && stored >= 0 && part->first_offset < stored)
		{
			ereport(WARNING,
					(errmsg("clickstream: %s[%d]: Kafka served offset " INT64_FORMAT " below the stored position " INT64_FORMAT "; not writing it",
							topic, part->partition, part->first_offset, stored),
					 errdetail("The stored position may be beyond the end of the partition (topic recreated, broker replaced, unclean leader election). Nothing of this partition is written until Kafka serves the stored position."),
					 errhint("If the topic was recreated: set clickstream.enabled = off and reload, delete the topic's rows from clickstream.ingest_positions and clickstream.watermarks, then set it on again; consumption restarts at clickstream.start_offset.")));
			part->stale = true;
			part->behind = true;
			batch->any_stale = true;
		}

		/*
		 * Kafka did not deliver the offsets between the stored position (or,
		 * with no position row, the offset resumed from) and the batch:
		 * deleted by retention before they were read, compacted away, or
		 * transaction markers.  Leave a record of the range.
		 */
		if (stored < 0 && !part->stale)
			stored = resumed[part->partition];

		/*
		 * The partition's first batch ever, read from the earliest offset
		 * Kafka still has: above 0, the older messages were deleted (or
		 * compacted away) before the pipeline first read the partition.
		 * Nothing records them; the watermark row keeps the first offset
		 * read, which clickstream.status shows.
		 */
		if (!part->stale && stored < 0 && part->first_offset > 0 &&
			cs_start_offset == START_OFFSET_EARLIEST)
			ereport(WARNING,
					(errmsg("clickstream: %s[%d]: the first offset Kafka delivered is " INT64_FORMAT ", not 0: offsets 0 to " INT64_FORMAT " were gone before this partition was first read",
							topic, part->partition, part->first_offset, part->first_offset - 1),
					 errdetail("Kafka deleted them (retention, log compaction) before the pipeline subscribed; they are not in bronze, and the lag does not count them."),
					 errhint("clickstream.status shows first_offset. To keep them next time, start consuming before Kafka's retention deletes what producers write.")));
		if (!part->stale && stored >= 0 && part->first_offset > stored)
		{
			MemoryContext old = MemoryContextSwitchTo(batch->cxt);

			ereport(WARNING,
					(errmsg("clickstream: %s[%d]: offsets " INT64_FORMAT " to " INT64_FORMAT " were not delivered by Kafka",
							topic, part->partition, stored, part->first_offset - 1),
					 errdetail("They were deleted by retention before being read, compacted away, or are transaction markers; the range is recorded in clickstream.dead_letters.")));
			BronzeBatchAddDead(batch, part->partition, stored, -1, NULL, 0, NULL, 0,
							   "offsets_skipped",
							   psprintf("offsets " INT64_FORMAT " to " INT64_FORMAT " (" INT64_FORMAT " messages) were not delivered by Kafka",
										stored, part->first_offset - 1,
										part->first_offset - stored));
			MemoryContextSwitchTo(old);
		}
	}

	/*
	 * A placeholder of a partition this batch does not write goes again
	 * (rows are locked, so it is this transaction's own): it never commits.
	 */
	nstale = 0;
	for (int i = 0; i < batch->nparts; i++)
		if (batch->parts[i].stale && batch->parts[i].stored < 0)
			parts[nstale++] = batch->parts[i].partition;
	if (nstale > 0)
	{
		args[1] = BronzeIntArray(parts, nstale, INT4OID);
		if (SPI_execute_plan(BronzePlan(&unreserve_plan,
										"DELETE FROM clickstream.ingest_positions "
										"WHERE topic = $1 AND partition = ANY ($2) AND next_offset < 0",
										2, types),
							 args, NULL, false, 0) != SPI_OK_DELETE)
			elog(ERROR, "could not remove placeholders from clickstream.ingest_positions");
	}
	pfree(parts);
}

/* Insert the batch's dead letters (one statement each: they are rare). */
static void
BronzeWriteDead(BronzeBatch *batch, const char *topic)
{
	Oid			types[10] = {TEXTOID, TEXTOID, TEXTOID, INT4OID, INT8OID,
	TIMESTAMPTZOID, BYTEAOID, BYTEAOID, INT4OID, BOOLOID};
	SPIPlanPtr	plan = BronzePlan(&dead_plan,
								  "INSERT INTO clickstream.dead_letters "
								  "(stage, reason, detail, kafka_topic, kafka_partition, kafka_offset, "
								  "kafka_timestamp, kafka_key, payload, payload_bytes, payload_truncated) "
								  "VALUES ('ingest', $1, $2, $3, $4, $5, $6, $7, $8, $9, $10) "
								  "ON CONFLICT (kafka_topic, kafka_partition, kafka_offset, stage) DO NOTHING",
								  10, types);

	for (int i = 0; i < batch->ndead; i++)
	{
		BronzeDead *d = &batch->dead[i];
		Datum		args[10];
		char		nulls[10];
		bool		skip = false;

		for (int j = 0; j < batch->nparts; j++)
			if (batch->parts[j].partition == d->partition)
				skip = batch->parts[j].stale;
		if (skip)
			continue;

		memset(nulls, ' ', sizeof(nulls));
		args[0] = CStringGetTextDatum(d->reason);
		args[1] = CStringGetTextDatum(d->detail);
		args[2] = CStringGetTextDatum(topic);
		args[3] = Int32GetDatum(d->partition);
		args[4] = Int64GetDatum(d->offset);
		args[5] = TimestampTzGetDatum(BronzeTimestamp(d->timestamp_ms));
		if (d->timestamp_ms < 0)
			nulls[5] = 'n';
		args[6] = PointerGetDatum(d->key);
		if (d->key == NULL)
			nulls[6] = 'n';
		args[7] = PointerGetDatum(d->payload);
		if (d->payload == NULL)
			nulls[7] = 'n';
		args[8] = Int32GetDatum((int32) Min(d->payload_bytes, PG_INT32_MAX));
		args[9] = BoolGetDatum(d->truncated);
		if (SPI_execute_plan(plan, args, nulls, false, 0) != SPI_OK_INSERT)
			elog(ERROR, "could not insert into clickstream.dead_letters");
	}
}

/* Store the new positions, and the first watermark of partitions without one. */
static void
BronzeWritePositions(BronzeBatch *batch, const char *topic)
{
	Oid			types[3] = {TEXTOID, INT4ARRAYOID, INT8ARRAYOID};
	int32	   *parts = palloc(sizeof(int32) * batch->nparts);
	int64	   *next = palloc(sizeof(int64) * batch->nparts);
	int64	   *first = palloc(sizeof(int64) * batch->nparts);
	int			n = 0;
	Datum		args[3];

	for (int i = 0; i < batch->nparts; i++)
	{
		if (batch->parts[i].stale)
			continue;
		parts[n] = batch->parts[i].partition;
		next[n] = batch->parts[i].next_offset;
		first[n] = batch->parts[i].first_offset;
		n++;
	}
	if (n == 0)
		return;

	args[0] = CStringGetTextDatum(topic);
	args[1] = BronzeIntArray(parts, n, INT4OID);
	args[2] = BronzeIntArray(next, n, INT8OID);
	if (SPI_execute_plan(BronzePlan(&position_plan,
									"INSERT INTO clickstream.ingest_positions AS p (topic, partition, next_offset) "
									"SELECT $1, u.partition, u.next_offset FROM unnest($2, $3) AS u(partition, next_offset) "
									"ON CONFLICT (topic, partition) DO UPDATE "
									"SET next_offset = EXCLUDED.next_offset, updated_at = now()",
									3, types),
						 args, NULL, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "could not store positions in clickstream.ingest_positions");

	/*
	 * A watermark row exists wherever a position row does (both are created
	 * by a partition's first batch), so only partitions that had no position
	 * need one.  Touching existing rows would make the worker wait for a
	 * running refresh, which updates them.
	 */
	n = 0;
	for (int i = 0; i < batch->nparts; i++)
	{
		if (batch->parts[i].stale || *BronzeExpectedSlot(batch->parts[i].partition) >= 0)
			continue;
		parts[n] = batch->parts[i].partition;
		first[n] = batch->parts[i].first_offset;
		n++;
	}
	if (n == 0)
		return;
	args[1] = BronzeIntArray(parts, n, INT4OID);
	args[2] = BronzeIntArray(first, n, INT8OID);
	if (SPI_execute_plan(BronzePlan(&watermark_plan,
									"INSERT INTO clickstream.watermarks (topic, partition, durable_offset, first_offset) "
									"SELECT $1, u.partition, u.first_offset, u.first_offset FROM unnest($2, $3) AS u(partition, first_offset) "
									"ON CONFLICT (topic, partition) DO NOTHING",
									3, types),
						 args, NULL, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "could not store watermarks in clickstream.watermarks");
}

/* Is the extension installed in this database (inside a transaction)? */
static bool
BronzeExtensionInstalled(void)
{
	return OidIsValid(get_extension_oid("clickstream", true));
}

/*
 * Start a transaction with SPI and a snapshot for the worker's own work.
 * Returns false, with no transaction left open, when the extension is gone.
 */
static bool
BronzeBegin(const char *activity)
{
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	if (!BronzeExtensionInstalled())
	{
		AbortCurrentTransaction();
		return false;
	}
	SPI_connect();
	PushActiveSnapshot(GetTransactionSnapshot());
	pgstat_report_activity(STATE_RUNNING, activity);
	/* deferred constraints a user adds to bronze must fire per attempt */
	if (SPI_execute("SET CONSTRAINTS ALL IMMEDIATE", false, 0) != SPI_OK_UTILITY)
		elog(ERROR, "could not make constraints immediate");
	return true;
}

/* Commit the transaction opened by BronzeBegin(). */
static void
BronzeEnd(void)
{
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	pgstat_report_stat(false);
	pgstat_report_activity(STATE_IDLE, NULL);
}

/* Is the extension installed?  Runs its own short transaction. */
bool
BronzeExtensionExists(void)
{
	bool		exists;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	exists = BronzeExtensionInstalled();
	CommitTransactionCommand();
	return exists;
}

/* The error context of the last write's lock timeout ("" if none). */
const char *
BronzeBlockedContext(void)
{
	return blocked_context;
}

/*
 * A write attempt failed.  If a lock it needed was not granted within
 * lock_timeout, roll the whole transaction back, undo what the attempt
 * added to the batch (dead letters of skipped offsets and refused rows,
 * found again by the next attempt) and return true: the caller retries with
 * the same batch.  Any other error: return false, to re-throw it.  Called
 * in PG_CATCH with the error pending.
 */
static bool
BronzeAttemptFailed(BronzeBatch *batch, int ndead, Size bytes)
{
	ErrorData  *edata;

	MemoryContextSwitchTo(batch->cxt);
	edata = CopyErrorData();
	if (edata->sqlerrcode != ERRCODE_LOCK_NOT_AVAILABLE)
	{
		FreeErrorData(edata);
		return false;
	}
	strlcpy(blocked_context, edata->context ? edata->context : "",
			sizeof(blocked_context));
	FreeErrorData(edata);
	FlushErrorState();
	AbortCurrentTransaction();
	pgstat_report_activity(STATE_IDLE, NULL);
	batch->ndead = ndead;
	batch->bytes = bytes;
	batch->any_stale = false;
	return true;
}

/*
 * Lock what the write needs, write the batch and commit.  Returns false,
 * with the transaction rolled back, when a lock was not granted in time.
 */
static bool
BronzeWriteAttempt(BronzeBatch *batch, const char *topic)
{
	Relation	rel;
	Oid			relid;
	int			ndead;
	Size		bytes;
	volatile bool blocked = false;

	ndead = batch->ndead;
	bytes = batch->bytes;
	PG_TRY();
	{
		BronzeFence(batch, topic);

		relid = RangeVarGetRelid(makeRangeVar(CLICKSTREAM_SCHEMA, "bronze", -1),
								 RowExclusiveLock, false);
		rel = table_open(relid, NoLock);
		BronzeWriteRows(rel, batch);
		table_close(rel, NoLock);

		BronzeWriteDead(batch, topic);
		BronzeWritePositions(batch, topic);

		BronzeEnd();
	}
	PG_CATCH();
	{
		if (!BronzeAttemptFailed(batch, ndead, bytes))
			PG_RE_THROW();
		blocked = true;
	}
	PG_END_TRY();
	return !blocked;
}

/*
 * Write the batch in one transaction.  Returns the number of partitions
 * with *results describing each (valid until the batch is reset), -1 when
 * the extension is gone (nothing written), or BRONZE_WRITE_BLOCKED when a
 * lock was not granted in time (nothing written; retry with the same batch).
 */
int
BronzeBatchWrite(BronzeBatch *batch, const char *topic,
				 BronzePartitionResult **results)
{
	BronzePartitionResult *res;
	int			nparts = batch->nparts;

	if (nparts == 0)
		return 0;

	if (!BronzeBegin("clickstream: writing a batch to bronze"))
		return -1;

	/*
	 * Every lock the write needs (position rows, bronze, dead_letters, ...)
	 * is waited for at most BRONZE_LOCK_TIMEOUT; see BronzeAttemptFailed.
	 */
	if (SPI_execute("SET LOCAL lock_timeout = '" BRONZE_LOCK_TIMEOUT "'", false, 0) != SPI_OK_UTILITY)
		elog(ERROR, "could not set lock_timeout");
	if (!BronzeWriteAttempt(batch, topic))
		return BRONZE_WRITE_BLOCKED;

	res = MemoryContextAlloc(batch->cxt, sizeof(BronzePartitionResult) * nparts);
	for (int i = 0; i < nparts; i++)
	{
		BronzePart *part = &batch->parts[i];

		res[i].partition = part->partition;
		res[i].next_offset = part->next_offset;
		res[i].messages = part->messages;
		res[i].bytes = part->bytes;
		res[i].stale = part->stale;
		res[i].behind = part->behind;
		res[i].first_offset = part->first_offset;
		res[i].stored_offset = part->stored;
		if (!part->stale)
		{
			BronzeSetExpected(part->partition, part->next_offset);
			resumed[part->partition] = -1;
		}
	}
	*results = res;
	return nparts;
}

/*
 * Look up where each partition resumes: the stored position, never below
 * the durable watermark; -1 when neither exists.  Also resets what this
 * consumer expects to find stored.  Runs its own transaction.
 */
void
BronzeLoadPositions(const char *topic, KafkaPosition *positions, int n)
{
	Oid			types[2] = {TEXTOID, INT4ARRAYOID};
	int32	   *parts = palloc(sizeof(int32) * Max(n, 1));
	Datum		args[2];

	for (int i = 0; i < n; i++)
	{
		parts[i] = positions[i].partition;
		positions[i].offset = -1;
		BronzeSetExpected(parts[i], EXPECT_NONE);
		resumed[parts[i]] = -1;
	}

	if (!BronzeBegin("clickstream: reading positions"))
	{
		pfree(parts);
		return;
	}
	args[0] = CStringGetTextDatum(topic);
	args[1] = BronzeIntArray(parts, n, INT4OID);
	if (SPI_execute_plan(BronzePlan(&load_plan,
									"SELECT q.partition, p.next_offset, w.durable_offset "
									"FROM unnest($2) AS q(partition) "
									"LEFT JOIN clickstream.ingest_positions p ON p.topic = $1 AND p.partition = q.partition "
									"LEFT JOIN clickstream.watermarks w ON w.topic = $1 AND w.partition = q.partition",
									2, types),
						 args, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read clickstream.ingest_positions");

	for (uint64 r = 0; r < SPI_processed; r++)
	{
		HeapTuple	tup = SPI_tuptable->vals[r];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		null_part,
					null_pos,
					null_wm;
		int32		p = DatumGetInt32(SPI_getbinval(tup, desc, 1, &null_part));
		int64		pos = DatumGetInt64(SPI_getbinval(tup, desc, 2, &null_pos));
		int64		wm = DatumGetInt64(SPI_getbinval(tup, desc, 3, &null_wm));

		for (int i = 0; i < n; i++)
		{
			if (positions[i].partition != p)
				continue;
			if (!null_pos)
				BronzeSetExpected(p, pos);
			if (!null_pos || !null_wm)
				positions[i].offset = Max(null_pos ? -1 : pos, null_wm ? -1 : wm);
			resumed[p] = positions[i].offset;
		}
	}
	BronzeEnd();
	pfree(parts);
}
