/*-------------------------------------------------------------------------
 *
 * clickstream.h
 *	  Declarations shared by the modules of the clickstream extension.
 *
 * Modules, one file each:
 *	  clickstream.c  _PG_init: preload check, calls each module's Init
 *	  guc.c          every clickstream.* setting
 *	  status.c       shared-memory statistics and the SQL functions over them
 *	  worker.c       the ingestion background worker's main loop
 *	  kafka.c        the Kafka consumer (the only file that sees librdkafka)
 *	  bronze.c       batches: bulk COPY into bronze, positions, dead letters
 *	  silver.c       the event parser and validator behind clickstream.refresh()
 *	  sessionize.c   clickstream.sessionize(): events to sessions, per user
 *	  funnel.c       funnel_agg, funnel_steps and retention aggregates
 *
 *-------------------------------------------------------------------------
 */
#ifndef CLICKSTREAM_H
#define CLICKSTREAM_H

#include "postgres.h"

#include "datatype/timestamp.h"
#include "lib/stringinfo.h"

#include "compat.h"

#define CLICKSTREAM_SCHEMA "clickstream"
#define CLICKSTREAM_MAX_CONSUMERS 64
#define CLICKSTREAM_ERROR_LEN 256
#define CLICKSTREAM_TOPIC_LEN 256

/* guc.c */
typedef enum
{
	START_OFFSET_EARLIEST,
	START_OFFSET_LATEST
}			StartOffset;

extern char *cs_database;
extern char *cs_brokers;
extern char *cs_topic;
extern char *cs_group_id;
extern char *cs_kafka_options;
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
extern int	cs_refresh_batch_size;
extern int	cs_history_retention;
extern int	cs_session_timeout;
extern int	cs_session_max_duration;
extern bool cs_session_split_at_midnight;
extern bool cs_session_split_on_campaign;

extern void GucInit(void);

/* status.c */
typedef enum
{
	WORKER_STOPPED = 0,
	WORKER_STARTING,
	WORKER_WAITING_FOR_EXTENSION,
	WORKER_DISABLED,
	WORKER_CONNECTING,
	WORKER_CONSUMING,
	WORKER_BROKER_DOWN
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
extern void StatusPartitionWatermark(const char *topic, int partition, int64 high);
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
extern bool KafkaPoll(int timeout_ms, KafkaMessage *msg);
extern void KafkaCommit(const KafkaPosition *positions, int n);
extern void KafkaSeek(int32 partition, int64 offset);
extern int64 KafkaHighWatermark(int32 partition);
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

#endif							/* CLICKSTREAM_H */
