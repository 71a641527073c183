/*-------------------------------------------------------------------------
 *
 * clickstream.h
 *	  Declarations shared by the modules of the clickstream extension.
 *
 * Modules, one file each:
 *	  clickstream.c       _PG_init: preload check, each module's Init
 *	  guc.c               every clickstream.* setting
 *	  status.c            shared-memory statistics and their SQL functions
 *	  worker.c            the ingestion background worker's main loop
 *	  kafka.c             the Kafka consumer (the only file seeing librdkafka)
 *	  bronze.c            batches: COPY into bronze, positions, dead letters
 *	  lockwait.c          what a write waited on when its lock_timeout expired
 *	  copy.c              binary COPY into a table from tuples in memory
 *	  isolate.c           writing in halves to set refused rows aside
 *	  json.c              the strict JSON scanner of the event parser
 *	  aliases.c           the parser's name maps: field and event type
 *	                      aliases, the fields of derived event ids
 *	  silver.c            the event parser and validator of the refresh
 *	  sha256.c            SHA-256, for the event ids silver derives
 *	  refresh.c           a refresh step's rows: taken, parsed, deduplicated
 *	  writer.c            bulk writes of them into event_ids, events, touched
 *	  sessionize.c        clickstream.sessionize(): events to sessions
 *	  funnel_agg.c        funnel_agg, funnel_steps and the pass of a funnel
 *	  funnel_breakdown.c  funnel_breakdown: the funnel per key
 *	  retention.c         the retention aggregate
 *	  marts.c             sorted sets of text for the gold marts
 *	  drop.c              DROP EXTENSION: the event trigger removing the cron job
 *
 * Headers: this one (what several modules share), compat.h (every
 * PostgreSQL version shim), util.h (text in byte order, an interval's
 * length), json.h (json.c's scanner, for silver.c), silver.h (the event
 * format's fields and name maps, for silver.c and aliases.c) and funnel.h
 * (what the funnel aggregates share).  The design is described in docs/design.md.
 *
 *-------------------------------------------------------------------------
 */
#ifndef CLICKSTREAM_H
#define CLICKSTREAM_H

#include "postgres.h"

#include "access/htup.h"
#include "access/tupdesc.h"
#include "datatype/timestamp.h"
#include "lib/stringinfo.h"
#include "nodes/pg_list.h"
#include "utils/relcache.h"

#include "compat.h"

#define CLICKSTREAM_SCHEMA "clickstream"
#define CLICKSTREAM_MAX_CONSUMERS 64
#define CLICKSTREAM_ERROR_LEN 256
#define CLICKSTREAM_TOPIC_LEN 256

/* guc.c: the settings C code reads */
typedef enum
{
	START_OFFSET_EARLIEST,
	START_OFFSET_LATEST
}			StartOffset;

typedef enum
{
	TS_WITHOUT_ZONE_REJECT,
	TS_WITHOUT_ZONE_UTC,
	TS_WITHOUT_ZONE_LOCAL
}			TimestampWithoutZone;

typedef enum
{
	EPOCH_UNIT_MS,
	EPOCH_UNIT_S,
	EPOCH_UNIT_US
}			EpochUnit;

extern char *cs_database;
extern char *cs_brokers;
extern char *cs_topic;
extern char *cs_group_id;
extern char *cs_kafka_options;
extern char *cs_kafka_options_file;
extern int	cs_consumers;
extern int	cs_start_offset;
extern bool cs_enabled;
extern int	cs_batch_size;
extern int	cs_batch_timeout;
extern int	cs_batch_max_kb;
extern int	cs_max_message_bytes;
extern int	cs_fetch_buffer_kb;
extern int	cs_max_partitions;
extern char *cs_timezone;
extern double cs_high_value_threshold;
extern int	cs_max_clock_skew;
extern int	cs_timestamp_without_zone;
extern int	cs_epoch_unit;
extern bool cs_require_order_id;

extern void GucInit(void);

/* aliases.c: the check and assign hooks of the name-mapping settings */
extern bool AliasesCheckFields(const char *value, void **extra);
extern void AliasesAssignFields(void *extra);
extern bool AliasesCheckEventTypes(const char *value, void **extra);
extern void AliasesAssignEventTypes(void *extra);
extern bool AliasesCheckIdFields(const char *value, void **extra);
extern void AliasesAssignIdFields(void *extra);

/* status.c */
typedef enum
{
	WORKER_STOPPED = 0,
	WORKER_STARTING,
	WORKER_WAITING_FOR_EXTENSION,
	WORKER_DISABLED,
	WORKER_CONNECTING,
	WORKER_CONSUMING,
	WORKER_BROKER_DOWN,
	WORKER_BLOCKED
}			WorkerState;

extern void StatusInit(void);
extern void StatusWorkerStart(int consumer);
extern void StatusSetDatabaseMissing(int consumer, bool missing);
extern bool StatusDatabaseMissing(int consumer);
extern void StatusWorkerSetState(int consumer, WorkerState state);
extern void StatusWorkerError(int consumer, int partition, const char *fmt,...) pg_attribute_printf(3, 4);
extern void StatusPartitionAssigned(int consumer, const char *topic, int partition,
									int64 next_offset);
extern void StatusPartitionProgress(int consumer, const char *topic, int partition,
									int64 next_offset, int64 messages, int64 bytes,
									TimestampTz batch_time);
extern void StatusPartitionWatermark(const char *topic, int partition, int64 high,
									 TimestampTz answered_at);
extern void StatusWorkerSetBlocked(int consumer, const char *waiting_for,
								   TimestampTz since);
extern WorkerState StatusWorkerSetUnblocked(int consumer);
extern void StatusWorkerTick(int consumer, int nassigned);

/* worker.c */
extern void WorkerRegister(void);
extern PGDLLEXPORT void ClickstreamWorkerMain(Datum main_arg);

/*
 * kafka.c: one consumed message, as seen by the rest of the extension.
 * Pointers stay valid until the next KafkaPoll().
 */
typedef struct KafkaMessage
{
	int32		partition;
	int64		offset;
	int64		timestamp_ms;	/* -1 when the broker gave none */
	const char *key;			/* NULL when there is no key */
	size_t		key_len;
	const char *payload;		/* NULL for a tombstone */
	size_t		payload_len;
	int			nheaders;
	const char **header_keys;
	const char **header_values; /* element NULL for a header without value */
	size_t	   *header_lens;
	const char *error;			/* set when Kafka reported this message as an
								 * error */
} KafkaMessage;

/* One partition's next offset, as assigned or committed. */
typedef struct KafkaPosition
{
	int32		partition;
	int64		offset;			/* next offset to read; -1 when none stored */
} KafkaPosition;

/* Callbacks kafka.c runs from inside KafkaPoll(), in the worker's thread. */
typedef void (*KafkaAssignHook) (KafkaPosition *positions, int n);
typedef void (*KafkaRevokeHook) (void);

extern bool KafkaOpen(int consumer, KafkaAssignHook on_assign,
					  KafkaRevokeHook on_revoke);
extern bool KafkaIsOpen(void);
extern bool KafkaInRebalance(void);
extern bool KafkaOptionsFileChanged(void);
extern bool KafkaPoll(int timeout_ms, KafkaMessage *msg);
extern void KafkaCommit(const KafkaPosition *positions, int n);
extern void KafkaSeek(int32 partition, int64 offset);
extern void KafkaSeekBeginning(int32 partition);
extern int64 KafkaHighWatermark(int32 partition);
extern void KafkaPauseAll(bool pause);
extern bool KafkaQueryHighWatermarks(const int32 *partitions, int n, int64 *highs,
									 int timeout_ms);
extern bool KafkaBrokersDown(void);
extern void KafkaCheckBrokers(void);
extern int	KafkaAssignment(const int32 **partitions);
extern void KafkaClose(void);

/* bronze.c */
typedef struct BronzeBatch BronzeBatch;

/* Per-partition result of a flush, for the Kafka commit and statistics. */
typedef struct BronzePartitionResult
{
	int32		partition;
	int64		next_offset;
	int64		messages;
	int64		bytes;
	bool		stale;			/* another consumer had moved the position */
	bool		behind;			/* or Kafka served offsets below it */
	int64		first_offset;	/* the batch's first message */
	int64		stored_offset;	/* the position found when stale */
} BronzePartitionResult;

extern BronzeBatch *BronzeBatchCreate(MemoryContext parent);
extern void BronzeBatchAdd(BronzeBatch *batch, const char *topic,
						   const KafkaMessage *msg);
extern int	BronzeBatchRows(BronzeBatch *batch);
extern Size BronzeBatchBytes(BronzeBatch *batch);
extern bool BronzeBatchIsEmpty(BronzeBatch *batch);
extern void BronzeBatchReset(BronzeBatch *batch);
extern int	BronzeBatchWrite(BronzeBatch *batch, const char *topic,
							 BronzePartitionResult **results);
extern void BronzeSetExpected(int32 partition, int64 next_offset);
extern void BronzeLoadPositions(const char *topic, KafkaPosition *positions, int n);
extern bool BronzeExtensionExists(void);
extern const char *BronzeBlockedContext(void);

/* BronzeBatchWrite(): a lock the write needs was not granted in time. */
#define BRONZE_WRITE_BLOCKED (-2)

/* lockwait.c */
extern void LockWaitStart(void);
extern void LockWaitStop(void);
extern void LockWaitDescribe(char *buf, size_t len, const char *context);

/*
 * copy.c: binary COPY from memory.  A CopyNextTuple hands out the next tuple,
 * in binary COPY tuple format, as *data and *len (valid until it is called
 * again), or returns false when there is none left.
 */
typedef bool (*CopyNextTuple) (void *arg, const char **data, int *len);

extern uint64 CopyFromMemory(Relation rel, List *attnames, CopyNextTuple next,
							 void *arg);

/*
 * isolate.c: a write that sets the rows it refuses aside.  write writes rows
 * [lo, hi) of the caller's set; refused is told of a row refused on its own,
 * with the error (it runs in the memory context IsolateWrite was called in);
 * has_rows, when not NULL, says whether [lo, hi) holds anything to write.
 */
typedef struct IsolateWriter
{
	void		(*write) (void *arg, int64 lo, int64 hi);
	void		(*refused) (void *arg, int64 row, ErrorData *edata);
	bool		(*has_rows) (void *arg, int64 lo, int64 hi);
	void	   *arg;
	MemoryContext errcxt;		/* where the error of a refusal is copied */
} IsolateWriter;

extern bool IsolateIsRowError(int sqlerrcode);
extern void IsolateWrite(const IsolateWriter *w, int64 lo, int64 hi,
						 bool failed);

/* silver.c: the columns of clickstream.parsed_event, in order */
typedef enum SilverColumn
{
	SILVER_COL_REASON, SILVER_COL_DETAIL, SILVER_COL_EVENT_ID,
	SILVER_COL_EVENT_TYPE, SILVER_COL_USER_ID, SILVER_COL_TS,
	SILVER_COL_EVENT_DATE, SILVER_COL_EVENT_HOUR, SILVER_COL_PRODUCT_ID,
	SILVER_COL_CATEGORY, SILVER_COL_PRICE, SILVER_COL_QUANTITY,
	SILVER_COL_ORDER_ID, SILVER_COL_PAGE_URL, SILVER_COL_REFERRER,
	SILVER_COL_UTM_SOURCE, SILVER_COL_UTM_MEDIUM, SILVER_COL_UTM_CAMPAIGN,
	SILVER_COL_DEVICE, SILVER_COL_COUNTRY, SILVER_COL_IS_HIGH_VALUE,
	SILVER_COL_REVENUE, SILVER_COL_ATTRS, SILVER_NUM_COLS
}			SilverColumn;

/*
 * Result of parsing one payload: either reason and detail (every other
 * column NULL) or every event column (reason NULL).  Datums are allocated
 * in the memory context current during the parse.
 */
typedef struct SilverRow
{
	Datum		values[SILVER_NUM_COLS];
	bool		nulls[SILVER_NUM_COLS];
	StringInfoData scratch;
	StringInfoData attrs;		/* unknown members as JSON object text */
	StringInfoData idsrc;		/* the input of a derived event_id */
} SilverRow;

extern void SilverCheckDatabase(void);
extern SilverRow *SilverRowGet(void);
extern void SilverParseMessage(SilverRow *row, const char *data, int len);

/* sha256.c */
extern void Sha256Hash(const void *data, size_t len, uint8 *digest);

/* refresh.c and writer.c: a valid event of a refresh step */
typedef struct RefreshEvent
{
	HeapTuple	tuple;			/* its clickstream.events row */
	uint32		id_off;			/* event_id and user_id: their varlenas */
	uint32		user_off;		/* in tuple->t_data */
	int32		event_date;		/* a DateADT */
	TimestampTz ts;
	TimestampTz kafka_ts;
	int64		offset;
	int32		partition;
	bool		kafka_ts_null;
	bool		duplicate;		/* a later delivery, or its id is promoted */
	bool		refused;		/* the write refused it */
	bool		copied;			/* written through COPY */
	bool		triggered;		/* ... into a table with triggers */
	bool		skipped;		/* a trigger kept it out of silver */
	struct varlena *key;		/* the message's bytes, kept with isolate */
	struct varlena *payload;
} RefreshEvent;

/*
 * Start loading an event and its tuple into the CPU cache (a hint): loops
 * that visit events out of their memory order ask a few rows ahead.
 */
#define REFRESH_PREFETCH_AHEAD 8
#if defined(__GNUC__) || defined(__clang__)
#define RefreshPrefetch(ev) \
	do { \
		const char *p_ = (const char *) (ev); \
		for (int l_ = 0; l_ < 6; l_++) \
			__builtin_prefetch(p_ + 64 * l_); \
	} while (0)
#else
#define RefreshPrefetch(ev) ((void) 0)
#endif

/* A varlena of an event's tuple (event_id or user_id). */
#define RefreshEventText(ev, off) \
	((struct varlena *) ((char *) (ev)->tuple->t_data + (off)))

/* New events of one day and user in a step: a row of clickstream.touched. */
typedef struct RefreshTouched
{
	RefreshEvent *first;		/* gives the day and the user */
	TimestampTz first_ts;
	TimestampTz last_ts;
	int32		events;
} RefreshTouched;

/* refresh.c: an SPI array argument */
extern Datum RefreshArray(Datum *values, bool *nulls, int n, Oid type);

/* writer.c */
#define WRITER_EVENT_COLUMNS 25
extern TupleDesc WriterEventsDesc(void);
extern int64 WriterProbeIds(RefreshEvent **events, int64 n);
extern int64 WriterIds(RefreshEvent **events, int64 n);
extern int64 WriterEvents(RefreshEvent **events, int64 n);
extern int64 WriterStepEvents(RefreshEvent **events, int64 n, int64 written);
extern void WriterTouched(RefreshTouched *groups, int64 n, int64 run);

#endif							/* CLICKSTREAM_H */
