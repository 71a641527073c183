/*-------------------------------------------------------------------------
 *
 * writer.c
 *	  Bulk writes of a refresh step into event_ids, events and touched:
 *	  straight through the table AM when nothing else must see the rows,
 *	  through COPY otherwise; and the step's new events into the session's
 *	  pg_temp.clickstream_step_events, which gold reads in the same
 *	  transaction (sql/install/70_marts.sql).
 *
 * The direct path does for these rows what COPY FROM does for a table
 * without triggers (src/backend/commands/copyfrom.c), minus the input
 * parsing, since the rows are heap tuples already: each row is routed to its
 * day's partition, checked (NOT NULL and CHECK constraints), written a page
 * at a time by table_multi_insert, and indexed by ExecInsertIndexTuples, so
 * an index a user adds is maintained and a unique or exclusion violation is
 * raised as usual.  It is taken when no trigger is involved (foreign keys
 * are triggers too), no partition is foreign, no column is generated, and
 * each table and partition has exactly the columns the refresh writes, in
 * order.  Otherwise the rows are sent as binary COPY through the COPY
 * machinery (copy.c, as for the worker's bronze batches), which fires
 * triggers and fills other columns' defaults.  A BEFORE trigger may change
 * or skip those rows, so gold's copy of them is read back from silver by
 * the keys they were written with (event_date, user_id, ts, event_id); a
 * trigger that changed a key fails the write (a row error: the step is
 * redone by halves and that event is refused).  Rows of a partition
 * without triggers that still takes COPY (a foreign one, one whose columns
 * are in another order) are written as they are, and not read back.
 *
 * Deduplication against history happens while event_ids is written: the
 * primary key is checked as the entry is inserted (UNIQUE_CHECK_PARTIAL, as
 * for a deferred constraint), so a new id costs one index descent instead of
 * a lookup and an insert.  A reported conflict is confirmed by an MVCC
 * lookup; the new row is deleted again and the event is a duplicate.  An id
 * that another transaction is inserting at that moment fails the step (the
 * next run retries it).  When event_ids is not plain (a trigger, a second
 * index), the ids are looked up first and written by COPY.
 *
 * Row-level security on these tables is refused, as COPY FROM refuses it.
 *
 *-------------------------------------------------------------------------
 */
#include "clickstream.h"

#include "access/genam.h"
#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/dependency.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "commands/sequence.h"
#include "executor/execPartition.h"
#include "executor/executor.h"
#include "executor/spi.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "parser/parse_relation.h"
#include "port/pg_bswap.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/date.h"
#include "utils/fmgroids.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/numeric.h"
#include "utils/rel.h"
#include "utils/rls.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

/* Rows per table_multi_insert call. */
#define WRITER_BATCH 1000

/* A column the refresh writes, and its type. */
typedef struct WriterColumn
{
	const char *name;
	Oid			type;
} WriterColumn;

/* clickstream.events, in order: the layout of RefreshEvent.tuple. */
static const WriterColumn events_columns[WRITER_EVENT_COLUMNS] = {
	{"event_id", TEXTOID}, {"event_type", TEXTOID}, {"user_id", TEXTOID},
	{"ts", TIMESTAMPTZOID}, {"event_date", DATEOID}, {"event_hour", INT2OID},
	{"product_id", TEXTOID}, {"category", TEXTOID}, {"price", NUMERICOID},
	{"quantity", INT4OID}, {"order_id", TEXTOID}, {"page_url", TEXTOID},
	{"referrer", TEXTOID}, {"utm_source", TEXTOID}, {"utm_medium", TEXTOID},
	{"utm_campaign", TEXTOID}, {"device", TEXTOID}, {"country", TEXTOID},
	{"is_high_value", BOOLOID}, {"revenue", NUMERICOID}, {"attrs", JSONBOID},
	{"kafka_topic", TEXTOID}, {"kafka_partition", INT4OID},
	{"kafka_offset", INT8OID}, {"run_id", INT8OID},
};

/* clickstream.event_ids. */
static const WriterColumn ids_columns[] = {
	{"event_id", TEXTOID}, {"event_date", DATEOID},
};

/*
 * clickstream.touched: its touch_id (a serial: gold's watermark), then the
 * columns written.  COPY writes the latter and lets the default number it.
 */
static const WriterColumn touched_layout[] = {
	{"touch_id", INT8OID},
	{"run_id", INT8OID}, {"event_date", DATEOID}, {"user_id", TEXTOID},
	{"first_ts", TIMESTAMPTZOID}, {"last_ts", TIMESTAMPTZOID}, {"events", INT4OID},
};
#define touched_columns (touched_layout + 1)
#define TOUCHED_COLUMNS (lengthof(touched_layout) - 1)

/* Executor state of one direct write. */
typedef struct WriterState
{
	Relation	rel;
	EState	   *estate;
	ResultRelInfo *root;
	ModifyTableState *mtstate;
	PartitionTupleRouting *proute;
	BulkInsertState bistate;
	CommandId	cid;
	TupleTableSlot *slots[WRITER_BATCH];
	int			nslots;
} WriterState;

/* What a COPY reads. */
typedef enum
{
	WRITER_COPY_EVENTS,			/* items are RefreshEvent */
	WRITER_COPY_IDS,			/* items are RefreshEvent: (event_id, day) */
	WRITER_COPY_TOUCHED			/* items are RefreshTouched */
} WriterCopyKind;

/* The items one COPY writes, and the buffer their tuples are built in. */
typedef struct WriterCopyItems
{
	WriterCopyKind kind;
	void	  **items;
	int64		next;
	int64		end;
	int64		run;
	StringInfo	buf;
} WriterCopyItems;

/* The buffer COPY tuples are built in (in TopMemoryContext, reused). */
static StringInfoData copy_buf;

/* The tuple descriptor of RefreshEvent.tuple (events' columns, in order). */
TupleDesc
WriterEventsDesc(void)
{
	static TupleDesc desc = NULL;

	if (desc == NULL)
	{
		MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);
		TupleDesc	d = CreateTemplateTupleDesc(WRITER_EVENT_COLUMNS);

		for (int i = 0; i < WRITER_EVENT_COLUMNS; i++)
			TupleDescInitEntry(d, i + 1, events_columns[i].name, events_columns[i].type, -1, 0);
		MemoryContextSwitchTo(old);
		desc = d;
	}
	return desc;
}

/* Open a table of the extension as INSERT would, checking privileges. */
static Relation
WriterOpen(const char *name, bool probe)
{
	Relation	rel = table_openrv(makeRangeVar(CLICKSTREAM_SCHEMA, (char *) name, -1),
								   RowExclusiveLock);
	AclMode		modes[2] = {ACL_INSERT, ACL_SELECT};

	for (int i = 0; i < (probe ? 2 : 1); i++)
	{
		AclResult	acl = pg_class_aclcheck(RelationGetRelid(rel), GetUserId(), modes[i]);

		if (acl != ACLCHECK_OK)
			aclcheck_error(acl, get_relkind_objtype(rel->rd_rel->relkind),
						   RelationGetRelationName(rel));
	}
	if (check_enable_rls(RelationGetRelid(rel), InvalidOid, false) == RLS_ENABLED)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("clickstream.refresh() does not support row-level security on %s",
						RelationGetRelationName(rel)),
				 errhint("Run it as the table owner or a role with BYPASSRLS.")));
	return rel;
}

/* Does rel have exactly these columns, in this order? */
static bool
WriterSameLayout(Relation rel, const WriterColumn *columns, int n)
{
	TupleDesc	desc = RelationGetDescr(rel);

	if (desc->natts != n)
		return false;
	for (int i = 0; i < n; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);

		if (att->attisdropped || att->atttypid != columns[i].type ||
			strcmp(NameStr(att->attname), columns[i].name) != 0)
			return false;
	}
	return true;
}

/* Can rows go straight into this table (nothing else must see them)? */
static bool
WriterPlain(ResultRelInfo *rri)
{
	Relation	rel = rri->ri_RelationDesc;
	TupleConstr *constr = RelationGetDescr(rel)->constr;

	return rri->ri_TrigDesc == NULL && rri->ri_FdwRoutine == NULL &&
		(rel->rd_rel->relkind == RELKIND_RELATION ||
		 rel->rd_rel->relkind == RELKIND_PARTITIONED_TABLE) &&
		!(constr && constr->has_generated_stored);
}

/* Set up the executor state of a direct write into rel. */
static void
WriterStart(WriterState *w, Relation rel)
{
	ParseState *pstate = make_parsestate(NULL);

	memset(w, 0, sizeof(*w));
	w->rel = rel;
	addRangeTableEntryForRelation(pstate, rel, RowExclusiveLock, NULL, false, false);
	w->estate = CreateExecutorState();
	ClickstreamInitRangeTable(w->estate, pstate);
	w->root = makeNode(ResultRelInfo);
	ExecInitResultRelation(w->estate, w->root, 1);
	CheckValidResultRel(w->root, CMD_INSERT);
	ExecOpenIndices(w->root, false);

	/* what tuple routing expects of an INSERT's plan state */
	w->mtstate = makeNode(ModifyTableState);
	w->mtstate->ps.plan = NULL;
	w->mtstate->ps.state = w->estate;
	w->mtstate->operation = CMD_INSERT;
	w->mtstate->mt_nrels = 1;
	w->mtstate->resultRelInfo = w->root;
	w->mtstate->rootResultRelInfo = w->root;
	if (rel->rd_rel->relkind == RELKIND_PARTITIONED_TABLE)
		w->proute = ExecSetupPartitionTupleRouting(w->estate, rel);

	w->bistate = GetBulkInsertState();
	w->cid = GetCurrentCommandId(true);
	w->estate->es_output_cid = w->cid;
	for (int i = 0; i < WRITER_BATCH; i++)
		w->slots[i] = ExecInitExtraTupleSlot(w->estate, RelationGetDescr(rel), &TTSOpsHeapTuple);
	free_parsestate(pstate);
}

/* Release what WriterStart set up. */
static void
WriterFinish(WriterState *w)
{
	FreeBulkInsertState(w->bistate);
	ExecResetTupleTable(w->estate->es_tupleTable, false);
	if (w->proute)
		ExecCleanupTupleRouting(w->mtstate, w->proute);
	ExecCloseResultRelations(w->estate);
	ExecCloseRangeTableRelations(w->estate);
	FreeExecutorState(w->estate);
}

/* Check the next buffered row (stored in w->slots[w->nslots]) and keep it. */
static void
WriterBuffer(WriterState *w, ResultRelInfo *rri)
{
	TupleTableSlot *slot = w->slots[w->nslots];

	slot->tts_tableOid = RelationGetRelid(rri->ri_RelationDesc);
	if (RelationGetDescr(rri->ri_RelationDesc)->constr)
	{
		ExecConstraints(rri, slot, w->estate);
		ResetPerTupleExprContext(w->estate);
	}
	w->nslots++;
}

/* Write the buffered rows into rri's table and its indexes. */
static void
WriterFlush(WriterState *w, ResultRelInfo *rri)
{
	if (w->nslots == 0)
		return;
	table_multi_insert(rri->ri_RelationDesc, w->slots, w->nslots, w->cid, 0, w->bistate);
	for (int i = 0; i < w->nslots; i++)
	{
		if (rri->ri_NumIndices > 0)
		{
			List	   *recheck = ClickstreamInsertIndexTuples(rri, w->slots[i], w->estate);

			Assert(recheck == NIL);
			list_free(recheck);
			ResetPerTupleExprContext(w->estate);
		}
		ExecClearTuple(w->slots[i]);
	}
	w->nslots = 0;
}

/* Store one virtual row in the next free slot. */
static TupleTableSlot *
WriterNextSlot(WriterState *w)
{
	TupleTableSlot *slot = w->slots[w->nslots];

	ExecClearTuple(slot);
	memset(slot->tts_isnull, 0, slot->tts_tupleDescriptor->natts * sizeof(bool));
	return slot;
}

/* Append a 16-bit integer in network order. */
static inline void
WriterPutInt16(StringInfo buf, int16 v)
{
	uint16		n = pg_hton16((uint16) v);

	appendBinaryStringInfoNT(buf, (char *) &n, sizeof(n));
}

/* Append a 32-bit integer in network order. */
static inline void
WriterPutInt32(StringInfo buf, int32 v)
{
	uint32		n = pg_hton32((uint32) v);

	appendBinaryStringInfoNT(buf, (char *) &n, sizeof(n));
}

/* Append a 64-bit integer in network order. */
static inline void
WriterPutInt64(StringInfo buf, int64 v)
{
	uint64		n = pg_hton64((uint64) v);

	appendBinaryStringInfoNT(buf, (char *) &n, sizeof(n));
}

/* Append one binary COPY field of the given type (isnull: -1). */
static void
WriterPutDatum(StringInfo buf, Oid type, Datum value, bool isnull)
{
	if (isnull)
	{
		WriterPutInt32(buf, -1);
		return;
	}
	switch (type)
	{
		case TEXTOID:
			WriterPutInt32(buf, VARSIZE_ANY_EXHDR(DatumGetPointer(value)));
			appendBinaryStringInfoNT(buf, VARDATA_ANY(DatumGetPointer(value)),
									 VARSIZE_ANY_EXHDR(DatumGetPointer(value)));
			break;
		case TIMESTAMPTZOID:
		case INT8OID:
			WriterPutInt32(buf, 8);
			WriterPutInt64(buf, DatumGetInt64(value));
			break;
		case DATEOID:
		case INT4OID:
			WriterPutInt32(buf, 4);
			WriterPutInt32(buf, DatumGetInt32(value));
			break;
		case INT2OID:
			WriterPutInt32(buf, 2);
			WriterPutInt16(buf, DatumGetInt16(value));
			break;
		case BOOLOID:
			WriterPutInt32(buf, 1);
			appendStringInfoCharMacro(buf, DatumGetBool(value) ? 1 : 0);
			break;
		case NUMERICOID:
		case JSONBOID:
			{
				bytea	   *sent = DatumGetByteaPP(type == NUMERICOID ?
												   DirectFunctionCall1(numeric_send, value) :
												   DirectFunctionCall1(jsonb_send, value));

				WriterPutInt32(buf, VARSIZE_ANY_EXHDR(sent));
				appendBinaryStringInfoNT(buf, VARDATA_ANY(sent), VARSIZE_ANY_EXHDR(sent));
				pfree(sent);
				break;
			}
		default:
			elog(ERROR, "clickstream: no binary COPY writer for type %u", type);
	}
}

/* Build the binary COPY tuple of one item into c->buf. */
static void
WriterCopyTuple(WriterCopyItems *c, void *item)
{
	StringInfo	buf = c->buf;

	resetStringInfo(buf);
	if (c->kind == WRITER_COPY_EVENTS)
	{
		RefreshEvent *ev = item;
		Datum		values[WRITER_EVENT_COLUMNS];
		bool		nulls[WRITER_EVENT_COLUMNS];

		heap_deform_tuple(ev->tuple, WriterEventsDesc(), values, nulls);
		WriterPutInt16(buf, WRITER_EVENT_COLUMNS);
		for (int i = 0; i < WRITER_EVENT_COLUMNS; i++)
			WriterPutDatum(buf, events_columns[i].type, values[i], nulls[i]);
	}
	else if (c->kind == WRITER_COPY_IDS)
	{
		RefreshEvent *ev = item;

		WriterPutInt16(buf, lengthof(ids_columns));
		WriterPutDatum(buf, TEXTOID, PointerGetDatum(RefreshEventText(ev, ev->id_off)), false);
		WriterPutDatum(buf, DATEOID, DateADTGetDatum(ev->event_date), false);
	}
	else
	{
		RefreshTouched *t = item;
		RefreshEvent *ev = t->first;

		WriterPutInt16(buf, TOUCHED_COLUMNS);
		WriterPutDatum(buf, INT8OID, Int64GetDatum(c->run), false);
		WriterPutDatum(buf, DATEOID, DateADTGetDatum(ev->event_date), false);
		WriterPutDatum(buf, TEXTOID, PointerGetDatum(RefreshEventText(ev, ev->user_off)), false);
		WriterPutDatum(buf, TIMESTAMPTZOID, TimestampTzGetDatum(t->first_ts), false);
		WriterPutDatum(buf, TIMESTAMPTZOID, TimestampTzGetDatum(t->last_ts), false);
		WriterPutDatum(buf, INT4OID, Int32GetDatum(t->events), false);
	}
}

/* CopyNextTuple of WriterCopy: the tuple of the next item. */
static bool
WriterCopyNext(void *arg, const char **data, int *len)
{
	WriterCopyItems *c = arg;

	if (c->next >= c->end)
		return false;
	WriterCopyTuple(c, c->items[c->next++]);
	*data = c->buf->data;
	*len = c->buf->len;
	return true;
}

/*
 * COPY items[0..n) into the named columns of rel; returns the rows written.
 * The text values are in the database encoding already: the receive
 * functions are told so (they would convert from the client encoding
 * otherwise).
 */
static uint64
WriterCopy(Relation rel, const WriterColumn *columns, int ncolumns, WriterCopyKind kind,
		   void **items, int64 n, int64 run)
{
	List	   *names = NIL;
	WriterCopyItems c;
	int			client_encoding = pg_get_client_encoding();
	uint64		written = 0;

	if (n == 0)
		return 0;
	for (int i = 0; i < ncolumns; i++)
		names = lappend(names, makeString(pstrdup(columns[i].name)));
	if (copy_buf.data == NULL)
	{
		MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);

		initStringInfo(&copy_buf);
		MemoryContextSwitchTo(old);
	}
	c.kind = kind;
	c.items = items;
	c.next = 0;
	c.end = n;
	c.run = run;
	c.buf = &copy_buf;

	SetClientEncoding(GetDatabaseEncoding());
	PG_TRY();
	{
		written = CopyFromMemory(rel, names, WriterCopyNext, &c);
	}
	PG_FINALLY();
	{
		SetClientEncoding(client_encoding);
	}
	PG_END_TRY();
	CommandCounterIncrement();
	return written;
}

/* The events of events[0..n) that are not duplicates; *kept of them. */
static RefreshEvent **
WriterNew(RefreshEvent **events, int64 n, int64 *kept)
{
	RefreshEvent **out = MemoryContextAllocHuge(CurrentMemoryContext,
												Max(n, 1) * sizeof(RefreshEvent *));
	int64		k = 0;

	for (int64 i = 0; i < n; i++)
		if (!events[i]->duplicate)
			out[k++] = events[i];
	*kept = k;
	return out;
}

/* Check that event_ids' primary key is (event_id) and open it. */
static Relation
WriterIdsIndex(Relation ids)
{
	Oid			pkoid = RelationGetPrimaryKeyIndex(ids);
	Relation	index;

	if (!OidIsValid(pkoid))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("clickstream.event_ids has no primary key")));
	index = index_open(pkoid, RowExclusiveLock);
	if (index->rd_index->indnkeyatts != 1 ||
		index->rd_index->indkey.values[0] != get_attnum(RelationGetRelid(ids), "event_id"))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("the primary key of clickstream.event_ids must be (event_id)")));
	return index;
}

/*
 * Is the id in event_ids, in a row other than ours, for a snapshot taken
 * now?  (It sees every committed id, and this transaction's.)
 */
static bool
WriterIdExists(Relation index, IndexScanDesc scan, TupleTableSlot *slot,
			   struct varlena *id, ItemPointer ours)
{
	ScanKeyData skey;
	bool		found = false;

	ScanKeyEntryInitialize(&skey, 0, 1, BTEqualStrategyNumber, InvalidOid,
						   index->rd_indcollation[0], F_TEXTEQ, PointerGetDatum(id));
	index_rescan(scan, &skey, 1, NULL, 0);
	while (index_getnext_slot(scan, ForwardScanDirection, slot))
	{
		if (ours == NULL || !ItemPointerEquals(&slot->tts_tid, ours))
		{
			found = true;
			break;
		}
	}
	return found;
}

/* A primary-key scan of event_ids with a snapshot taken now. */
static IndexScanDesc
WriterIdScan(Relation ids, Relation index, Snapshot *snapshot)
{
	CommandCounterIncrement();
	*snapshot = RegisterSnapshot(GetLatestSnapshot());
	return index_beginscan(ids, index, *snapshot, 1, 0);
}

/*
 * Mark the events whose id is in event_ids already (one lookup each);
 * returns how many.
 */
int64
WriterProbeIds(RefreshEvent **events, int64 n)
{
	Relation	ids;
	Relation	index;
	TupleTableSlot *slot;
	Snapshot	snapshot;
	IndexScanDesc scan;
	int64		found = 0;

	if (n == 0)
		return 0;
	ids = WriterOpen("event_ids", true);
	index = WriterIdsIndex(ids);
	slot = table_slot_create(ids, NULL);
	scan = WriterIdScan(ids, index, &snapshot);

	for (int64 i = 0; i < n; i++)
	{
		if ((i & 1023) == 0)
			CHECK_FOR_INTERRUPTS();
		if (!events[i]->duplicate &&
			WriterIdExists(index, scan, slot, RefreshEventText(events[i], events[i]->id_off), NULL))
		{
			events[i]->duplicate = true;
			found++;
		}
	}
	index_endscan(scan);
	UnregisterSnapshot(snapshot);
	ExecDropSingleTupleTableSlot(slot);
	index_close(index, NoLock);
	table_close(ids, NoLock);
	return found;
}

/*
 * Write the ids of events[0..n) (not duplicates) into event_ids, marking as
 * duplicates those that are there already; returns how many.
 */
int64
WriterIds(RefreshEvent **events, int64 n)
{
	Relation	ids;
	Relation	index;
	WriterState w;
	IndexInfo  *info;
	TupleTableSlot *found;
	Snapshot	snapshot = NULL;
	IndexScanDesc scan = NULL;
	int64		i = 0;
	int64		duplicates = 0;

	if (n == 0)
		return 0;
	ids = WriterOpen("event_ids", true);
	index = WriterIdsIndex(ids);
	WriterStart(&w, ids);
	if (!WriterSameLayout(ids, ids_columns, lengthof(ids_columns)) || !WriterPlain(w.root) ||
		w.root->ri_NumIndices != 1 ||
		RelationGetRelid(w.root->ri_IndexRelationDescs[0]) != RelationGetRelid(index))
	{
		/* not plain: look the ids up, then COPY the new ones */
		int64		kept;
		RefreshEvent **new;

		WriterFinish(&w);
		index_close(index, NoLock);
		duplicates = WriterProbeIds(events, n);
		new = WriterNew(events, n, &kept);
		(void) WriterCopy(ids, ids_columns, lengthof(ids_columns), WRITER_COPY_IDS,
						  (void **) new, kept, 0);
		pfree(new);
		table_close(ids, NoLock);
		return duplicates;
	}

	info = w.root->ri_IndexRelationInfo[0];
	found = table_slot_create(ids, NULL);
	while (i < n)
	{
		RefreshEvent *batch[WRITER_BATCH];
		bool		conflict[WRITER_BATCH];
		bool		any = false;
		int			k = 0;

		CHECK_FOR_INTERRUPTS();
		for (; i < n && k < WRITER_BATCH; i++)
		{
			TupleTableSlot *slot;

			if (i + REFRESH_PREFETCH_AHEAD < n)
				RefreshPrefetch(events[i + REFRESH_PREFETCH_AHEAD]);
			if (events[i]->duplicate)
				continue;
			slot = WriterNextSlot(&w);
			slot->tts_values[0] = PointerGetDatum(RefreshEventText(events[i], events[i]->id_off));
			slot->tts_values[1] = DateADTGetDatum(events[i]->event_date);
			ExecStoreVirtualTuple(slot);
			WriterBuffer(&w, w.root);
			batch[k++] = events[i];
		}
		if (k == 0)
			break;
		table_multi_insert(ids, w.slots, k, w.cid, 0, w.bistate);
		for (int j = 0; j < k; j++)
		{
			Datum		value = w.slots[j]->tts_values[0];
			bool		isnull = false;

			/* a possible duplicate is reported, not raised, as if deferred */
			conflict[j] = !index_insert(index, &value, &isnull, &w.slots[j]->tts_tid, ids,
										UNIQUE_CHECK_PARTIAL, false, info);
			any |= conflict[j];
		}
		if (any)
		{
			if (scan == NULL)
				scan = WriterIdScan(ids, index, &snapshot);
			else
			{
				/* see the rows just written, and any id committed since */
				index_endscan(scan);
				UnregisterSnapshot(snapshot);
				scan = WriterIdScan(ids, index, &snapshot);
			}
			for (int j = 0; j < k; j++)
			{
				if (!conflict[j])
					continue;
				if (!WriterIdExists(index, scan, found, RefreshEventText(batch[j], batch[j]->id_off),
									&w.slots[j]->tts_tid))
					ereport(ERROR,
							(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
							 errmsg("another transaction is writing event_id \"%s\" to clickstream.event_ids",
									text_to_cstring((text *) RefreshEventText(batch[j], batch[j]->id_off))),
							 errhint("clickstream.refresh() retries the step at its next run.")));
				batch[j]->duplicate = true;
				duplicates++;
				simple_heap_delete(ids, &w.slots[j]->tts_tid);
			}
		}
		for (int j = 0; j < k; j++)
			ExecClearTuple(w.slots[j]);
		w.nslots = 0;
	}
	if (scan != NULL)
	{
		index_endscan(scan);
		UnregisterSnapshot(snapshot);
	}
	ExecDropSingleTupleTableSlot(found);
	WriterFinish(&w);
	index_close(index, NoLock);
	table_close(ids, NoLock);
	CommandCounterIncrement();
	return duplicates;
}

/*
 * Write events[0..n), sorted by day, into clickstream.events (duplicates
 * left out).  The days' partitions exist.  Rows of a partition that is not
 * plain, or all rows when events itself is not, go through COPY: those are
 * marked copied (and triggered where a trigger may change them), and the
 * rows COPY wrote (its triggers may skip some) are returned.
 */
int64
WriterEvents(RefreshEvent **events, int64 n)
{
	Relation	rel = WriterOpen("events", false);
	WriterState w;
	RefreshEvent **copy = NULL;
	int64		ncopy = 0;
	int64		written = 0;
	ResultRelInfo *part = NULL;
	bool		plain;
	bool		direct = false;
	bool		triggers = false;

	if (n == 0)
	{
		table_close(rel, NoLock);
		return 0;
	}
	WriterStart(&w, rel);
	plain = WriterSameLayout(rel, events_columns, WRITER_EVENT_COLUMNS) && WriterPlain(w.root);

	for (int64 i = 0; i < n; i++)
	{
		RefreshEvent *ev = events[i];

		if ((i & 1023) == 0)
			CHECK_FOR_INTERRUPTS();
		if (i + REFRESH_PREFETCH_AHEAD < n)
			RefreshPrefetch(events[i + REFRESH_PREFETCH_AHEAD]);
		ev->copied = false;
		ev->triggered = false;
		ev->skipped = false;
		if (ev->duplicate)
			continue;
		if (part == NULL || ev->event_date != events[i - 1]->event_date)
		{
			/* a new day: its partition */
			if (part != NULL && direct)
			{
				WriterFlush(&w, part);
				ReleaseBulkInsertStatePin(w.bistate);
			}
			if (plain && w.proute != NULL)
			{
				ExecStoreHeapTuple(ev->tuple, w.slots[0], false);
				part = ExecFindPartition(w.mtstate, w.root, w.proute, w.slots[0], w.estate);
				ExecClearTuple(w.slots[0]);
				direct = WriterPlain(part) && ClickstreamRootToPartitionMap(part, w.estate) == NULL;
				triggers = part->ri_TrigDesc != NULL;
			}
			else
			{
				/* (routed by COPY: a partition's own triggers are unknown here) */
				part = w.root;
				direct = plain && rel->rd_rel->relkind == RELKIND_RELATION;
				triggers = part->ri_TrigDesc != NULL ||
					rel->rd_rel->relkind == RELKIND_PARTITIONED_TABLE;
			}
		}
		if (!direct)
		{
			if (copy == NULL)
				copy = MemoryContextAllocHuge(CurrentMemoryContext, n * sizeof(RefreshEvent *));
			ev->copied = true;
			ev->triggered = triggers;
			copy[ncopy++] = ev;
			continue;
		}
		ExecStoreHeapTuple(ev->tuple, w.slots[w.nslots], false);
		WriterBuffer(&w, part);
		if (w.nslots == WRITER_BATCH)
			WriterFlush(&w, part);
	}
	if (direct)
		WriterFlush(&w, part);
	WriterFinish(&w);
	if (ncopy > 0)
	{
		written = WriterCopy(rel, events_columns, WRITER_EVENT_COLUMNS, WRITER_COPY_EVENTS,
							 (void **) copy, ncopy, 0);
		pfree(copy);
	}
	table_close(rel, NoLock);
	CommandCounterIncrement();
	return written;
}

/*
 * Read back from clickstream.events the triggered events of events[0..n)
 * into pg_temp.clickstream_step_events: by the keys they were written with,
 * so as the triggers left them; mark those no trigger let in skipped.
 * expected: how many of them COPY wrote.  Returns the number skipped.
 */
static int64
WriterReadBack(RefreshEvent **events, int64 n, int64 expected)
{
	static const char *sql =
		"WITH k AS (SELECT * FROM ROWS FROM (pg_catalog.unnest($1::pg_catalog.int8[]), "
		"      pg_catalog.unnest($2::pg_catalog.date[]), pg_catalog.unnest($3::pg_catalog.text[]), "
		"      pg_catalog.unnest($4::pg_catalog.timestamptz[]), "
		"      pg_catalog.unnest($5::pg_catalog.text[])) AS k(n, d, u, t, i)), "
		"found AS (INSERT INTO pg_temp.clickstream_step_events (%s) SELECT %s FROM k "
		"      JOIN clickstream.events e ON e.event_date OPERATOR(pg_catalog.=) k.d "
		"       AND e.user_id OPERATOR(pg_catalog.=) (k.u COLLATE pg_catalog.\"C\") "
		"       AND e.ts OPERATOR(pg_catalog.=) k.t "
		"       AND e.event_id OPERATOR(pg_catalog.=) (k.i COLLATE pg_catalog.\"C\") "
	/* the days, as constants: the partitions are pruned when planning */
		"       AND e.event_date OPERATOR(pg_catalog.=) ANY ($6::pg_catalog.date[]) "
		"      RETURNING event_id) "
		"SELECT k.n FROM k WHERE NOT EXISTS (SELECT FROM found f "
		"      WHERE f.event_id OPERATOR(pg_catalog.=) (k.i COLLATE pg_catalog.\"C\"))";
	Oid			types[6] = {INT8ARRAYOID, DATEARRAYOID, TEXTARRAYOID,
		TIMESTAMPTZARRAYOID, TEXTARRAYOID, DATEARRAYOID};
	Oid			elemtypes[6] = {INT8OID, DATEOID, TEXTOID, TIMESTAMPTZOID, TEXTOID, DATEOID};
	Datum	   *values[6];
	Datum		args[6];
	int64		m = 0;
	int64		ndays = 0;
	int64		missing;
	StringInfoData columns;
	StringInfoData selected;
	MemoryContext cxt = CurrentMemoryContext;

	for (int c = 0; c < 6; c++)
		values[c] = palloc(Max(n, 1) * sizeof(Datum));
	for (int64 i = 0; i < n; i++)
	{
		RefreshEvent *ev = events[i];

		if (!ev->triggered || ev->duplicate)
			continue;
		values[0][m] = Int64GetDatum(i);
		values[1][m] = DateADTGetDatum(ev->event_date);
		values[2][m] = PointerGetDatum(RefreshEventText(ev, ev->user_off));
		values[3][m] = TimestampTzGetDatum(ev->ts);
		values[4][m] = PointerGetDatum(RefreshEventText(ev, ev->id_off));
		/* (the events are sorted by day) */
		if (ndays == 0 || DatumGetDateADT(values[5][ndays - 1]) != ev->event_date)
			values[5][ndays++] = DateADTGetDatum(ev->event_date);
		m++;
	}
	if (m == 0)
		return 0;
	for (int c = 0; c < 6; c++)
		args[c] = RefreshArray(values[c], NULL, (int) (c == 5 ? ndays : m), elemtypes[c]);

	/* the extension's columns (a user's own columns of events stay out) */
	initStringInfo(&columns);
	initStringInfo(&selected);
	for (int c = 0; c < WRITER_EVENT_COLUMNS; c++)
	{
		appendStringInfo(&columns, "%s%s", c > 0 ? ", " : "", events_columns[c].name);
		appendStringInfo(&selected, "%se.%s", c > 0 ? ", " : "", events_columns[c].name);
	}
	if (SPI_execute_with_args(psprintf(sql, columns.data, selected.data), 6, types, args,
							  NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read back the events written through COPY");
	MemoryContextSwitchTo(cxt);
	missing = (int64) SPI_processed;

	/*
	 * Fewer found than written: a trigger moved some away from their keys.
	 * (More is possible: a trigger that inserts the row itself and skips
	 * it.  Found is what silver holds.)
	 */
	if (m - missing < expected)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_EXCEPTION),
				 errmsg_plural("a trigger on clickstream.events changed the event_id, user_id, ts or event_date of %lld event",
							   "a trigger on clickstream.events changed the event_id, user_id, ts or event_date of %lld events",
							   (unsigned long) (expected - (m - missing)),
							   (long long) (expected - (m - missing))),
				 errdetail("A refresh step finds the events it wrote by those keys, to bring sessions and marts up to date with them."),
				 errhint("Let the trigger change other columns only, or skip the event (RETURN NULL); normalise ids and times in the producer.")));
	for (uint64 r = 0; r < SPI_processed; r++)
	{
		bool		isnull;
		int64		i = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[r], SPI_tuptable->tupdesc,
												   1, &isnull));

		events[i]->skipped = true;
	}
	SPI_freetuptable(SPI_tuptable);
	return missing;
}

/*
 * Copy the events just written (events[0..n) less the duplicates) into the
 * session's pg_temp.clickstream_step_events, when it exists: what gold adds
 * to the marts in the same transaction.  A temporary table of exactly the
 * extension's columns: the rows are the events' own tuples, no index.
 * Those a trigger may have changed are read back from silver instead, as
 * the triggers left them; written: the rows COPY wrote (WriterEvents).
 * Returns the number of events a trigger skipped (marked skipped).
 */
int64
WriterStepEvents(RefreshEvent **events, int64 n, int64 written)
{
	Oid			relid;
	Relation	rel;
	WriterState w;
	int64		triggered = 0;

	relid = RangeVarGetRelid(makeRangeVar("pg_temp", "clickstream_step_events", -1),
							 NoLock, true);
	if (!OidIsValid(relid) || n == 0)
		return 0;
	rel = table_open(relid, RowExclusiveLock);
	if (!WriterSameLayout(rel, events_columns, WRITER_EVENT_COLUMNS))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("pg_temp.clickstream_step_events does not have the columns of clickstream.events"),
				 errhint("Drop the temporary table; clickstream.refresh_scratch() makes it again.")));
	WriterStart(&w, rel);
	for (int64 i = 0; i < n; i++)
	{
		if (events[i]->duplicate)
			continue;
		if (events[i]->triggered)
		{
			triggered++;
			continue;
		}
		/* (copied into a table without triggers: written as it is) */
		if (events[i]->copied)
			written--;
		ExecStoreHeapTuple(events[i]->tuple, w.slots[w.nslots], false);
		WriterBuffer(&w, w.root);
		if (w.nslots == WRITER_BATCH)
			WriterFlush(&w, w.root);
	}
	WriterFlush(&w, w.root);
	WriterFinish(&w);
	table_close(rel, NoLock);
	CommandCounterIncrement();
	if (triggered == 0)
		return 0;
	return WriterReadBack(events, n, written);
}

/* The sequence of touched.touch_id, when it is the only one the table owns. */
static Oid
WriterTouchSequence(Relation rel)
{
	List	   *seqs = getOwnedSequences(RelationGetRelid(rel));

	return list_length(seqs) == 1 ? linitial_oid(seqs) : InvalidOid;
}

/* Write the touched rows groups[0..n) of run. */
void
WriterTouched(RefreshTouched *groups, int64 n, int64 run)
{
	Relation	rel = WriterOpen("touched", false);
	WriterState w;
	Oid			touch_seq = InvalidOid;

	if (n == 0)
	{
		table_close(rel, NoLock);
		return;
	}
	WriterStart(&w, rel);
	if (!WriterSameLayout(rel, touched_layout, lengthof(touched_layout)) || !WriterPlain(w.root) ||
		(touch_seq = WriterTouchSequence(rel)) == InvalidOid)
	{
		RefreshTouched **items = MemoryContextAllocHuge(CurrentMemoryContext,
														n * sizeof(RefreshTouched *));

		WriterFinish(&w);
		for (int64 i = 0; i < n; i++)
			items[i] = &groups[i];
		(void) WriterCopy(rel, touched_columns, TOUCHED_COLUMNS, WRITER_COPY_TOUCHED,
						  (void **) items, n, run);
		pfree(items);
		table_close(rel, NoLock);
		return;
	}
	for (int64 i = 0; i < n; i++)
	{
		RefreshTouched *t = &groups[i];
		TupleTableSlot *slot = WriterNextSlot(&w);

		if ((i & 1023) == 0)
			CHECK_FOR_INTERRUPTS();
		slot->tts_values[0] = Int64GetDatum(nextval_internal(touch_seq, false));
		slot->tts_values[1] = Int64GetDatum(run);
		slot->tts_values[2] = DateADTGetDatum(t->first->event_date);
		slot->tts_values[3] = PointerGetDatum(RefreshEventText(t->first, t->first->user_off));
		slot->tts_values[4] = TimestampTzGetDatum(t->first_ts);
		slot->tts_values[5] = TimestampTzGetDatum(t->last_ts);
		slot->tts_values[6] = Int32GetDatum(t->events);
		ExecStoreVirtualTuple(slot);
		WriterBuffer(&w, w.root);
		if (w.nslots == WRITER_BATCH)
			WriterFlush(&w, w.root);
	}
	WriterFlush(&w, w.root);
	WriterFinish(&w);
	table_close(rel, NoLock);
	CommandCounterIncrement();
}
