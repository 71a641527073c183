-- Bronze: raw Kafka messages, their positions and the durable watermark.
--
-- The ingestion worker (src/worker.c) appends every message of its batch to
-- clickstream.bronze and moves clickstream.ingest_positions forward in the
-- same transaction.  Both are UNLOGGED: crash recovery empties them together,
-- and the worker then resumes from clickstream.watermarks, which is logged and
-- only ever advanced by the step that has made rows durable (silver).

\echo Use "CREATE EXTENSION clickstream" to load this file. \quit

CREATE UNLOGGED TABLE clickstream.bronze (
	kafka_topic text NOT NULL,
	kafka_partition integer NOT NULL,
	kafka_offset bigint NOT NULL,
	kafka_timestamp timestamptz,
	kafka_key bytea,
	header_keys text[],
	header_values bytea[],
	payload bytea,
	ingested_at timestamptz NOT NULL DEFAULT now()
) WITH (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 100000,
		autovacuum_vacuum_insert_scale_factor = 0, autovacuum_vacuum_insert_threshold = 1000000);

COMMENT ON TABLE clickstream.bronze IS
'Raw Kafka messages exactly as consumed: one row per message, bytes untouched. UNLOGGED: emptied by crash recovery, after which the worker re-reads from clickstream.watermarks.';
COMMENT ON COLUMN clickstream.bronze.kafka_topic IS 'Topic the message was read from.';
COMMENT ON COLUMN clickstream.bronze.kafka_partition IS 'Kafka partition of the message.';
COMMENT ON COLUMN clickstream.bronze.kafka_offset IS 'Kafka offset of the message within its partition; (topic, partition, offset) is unique.';
COMMENT ON COLUMN clickstream.bronze.kafka_timestamp IS 'Kafka message timestamp (create or log-append time); NULL when the broker gave none.';
COMMENT ON COLUMN clickstream.bronze.kafka_key IS 'Message key bytes; NULL for a message without a key.';
COMMENT ON COLUMN clickstream.bronze.header_keys IS 'Header names in wire order; NULL when the message has no headers.';
COMMENT ON COLUMN clickstream.bronze.header_values IS 'Header values, parallel to header_keys; an element is NULL for a header without a value.';
COMMENT ON COLUMN clickstream.bronze.payload IS 'Message value bytes, untouched (no JSON or UTF-8 check here); NULL for a tombstone.';
COMMENT ON COLUMN clickstream.bronze.ingested_at IS 'Time the batch holding this row was written.';

CREATE UNLOGGED TABLE clickstream.ingest_positions (
	topic text NOT NULL,
	partition integer NOT NULL,
	next_offset bigint NOT NULL,
	updated_at timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (topic, partition)
);

COMMENT ON TABLE clickstream.ingest_positions IS
'Per partition, the next Kafka offset to consume: written in the same transaction as the bronze rows it covers, and UNLOGGED like bronze so that a crash forgets both together. The worker locks a batch''s rows (FOR UPDATE) to serialize the writers of a partition; only the owner can, row locks needing UPDATE.';
COMMENT ON COLUMN clickstream.ingest_positions.topic IS 'Kafka topic.';
COMMENT ON COLUMN clickstream.ingest_positions.partition IS 'Kafka partition.';
COMMENT ON COLUMN clickstream.ingest_positions.next_offset IS 'Offset of the next message to consume; every offset below it is in bronze, in dead_letters, or below the watermark. -1 (none stored) only inside a worker''s transaction, as the placeholder it locks before a partition''s first batch; never committed.';
COMMENT ON COLUMN clickstream.ingest_positions.updated_at IS 'Commit time of the batch that last moved this position.';

CREATE TABLE clickstream.watermarks (
	topic text NOT NULL,
	partition integer NOT NULL,
	durable_offset bigint NOT NULL,
	updated_at timestamptz NOT NULL DEFAULT now(),
	first_offset bigint,
	PRIMARY KEY (topic, partition)
);

COMMENT ON TABLE clickstream.watermarks IS
'Per partition, the durable watermark: every message below durable_offset is durably processed (logged tables). The worker never resumes below it; after crash recovery empties bronze it resumes exactly from it. Created at the first batch of a partition; advanced only by the step that makes rows durable (silver), in the same transaction as those rows.';
COMMENT ON COLUMN clickstream.watermarks.topic IS 'Kafka topic.';
COMMENT ON COLUMN clickstream.watermarks.partition IS 'Kafka partition.';
COMMENT ON COLUMN clickstream.watermarks.durable_offset IS 'Every message below this offset is durably processed; resume never goes below it.';
COMMENT ON COLUMN clickstream.watermarks.updated_at IS 'Commit time of the transaction that last moved this watermark.';
COMMENT ON COLUMN clickstream.watermarks.first_offset IS 'First offset the worker read from the partition, where the pipeline''s copy of it begins (set by its first batch; NULL for a watermark a user inserted). Above 0 with start_offset = earliest: Kafka had deleted the older messages (retention, compaction) before the partition was first read.';

CREATE TABLE clickstream.dead_letters (
	id bigserial PRIMARY KEY,
	stage text NOT NULL CHECK (stage IN ('ingest', 'silver')),
	reason text NOT NULL,
	detail text,
	kafka_topic text,
	kafka_partition integer,
	kafka_offset bigint,
	kafka_timestamp timestamptz,
	kafka_key bytea,
	payload bytea,
	payload_bytes integer,
	payload_truncated boolean NOT NULL DEFAULT false,
	created_at timestamptz NOT NULL DEFAULT now()
);

COMMENT ON SEQUENCE clickstream.dead_letters_id_seq IS 'Numbers clickstream.dead_letters rows in arrival order.';

CREATE UNIQUE INDEX dead_letters_source_key
	ON clickstream.dead_letters (kafka_topic, kafka_partition, kafka_offset, stage);
CREATE INDEX dead_letters_reason_time
	ON clickstream.dead_letters (reason, created_at);

COMMENT ON TABLE clickstream.dead_letters IS
'Messages that could not be processed, with their Kafka coordinates and a reason; never silently dropped. One row per (topic, partition, offset, stage): a re-read after a crash does not add a second row.';
COMMENT ON COLUMN clickstream.dead_letters.id IS 'Surrogate key, in arrival order.';
COMMENT ON COLUMN clickstream.dead_letters.stage IS 'Where the message was rejected: ingest (the Kafka worker) or silver (parsing and validation).';
COMMENT ON COLUMN clickstream.dead_letters.reason IS 'Machine-readable reason, e.g. message_too_large, kafka_error, invalid_row.';
COMMENT ON COLUMN clickstream.dead_letters.detail IS 'Human-readable explanation (error text, sizes).';
COMMENT ON COLUMN clickstream.dead_letters.kafka_topic IS 'Topic of the rejected message.';
COMMENT ON COLUMN clickstream.dead_letters.kafka_partition IS 'Partition of the rejected message.';
COMMENT ON COLUMN clickstream.dead_letters.kafka_offset IS 'Offset of the rejected message.';
COMMENT ON COLUMN clickstream.dead_letters.kafka_timestamp IS 'Kafka timestamp of the rejected message.';
COMMENT ON COLUMN clickstream.dead_letters.kafka_key IS 'Key of the rejected message.';
COMMENT ON COLUMN clickstream.dead_letters.payload IS 'Payload bytes; for an oversize message only its first clickstream.max_message_bytes bytes (see payload_truncated).';
COMMENT ON COLUMN clickstream.dead_letters.payload_bytes IS 'Size of the original payload in bytes.';
COMMENT ON COLUMN clickstream.dead_letters.payload_truncated IS 'True when payload holds only a prefix of the original message.';
COMMENT ON COLUMN clickstream.dead_letters.created_at IS 'Time the message was rejected.';

-- Worker-side statistics live in shared memory; these functions read them.
CREATE FUNCTION clickstream.worker_partitions(
	OUT consumer integer,
	OUT topic text,
	OUT partition integer,
	OUT next_offset bigint,
	OUT high_watermark bigint,
	OUT messages bigint,
	OUT bytes bigint,
	OUT messages_per_sec double precision,
	OUT bytes_per_sec double precision,
	OUT last_batch_at timestamptz,
	OUT last_error text,
	OUT last_error_at timestamptz,
	OUT high_watermark_at timestamptz)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'clickstream_worker_partitions'
LANGUAGE C STRICT VOLATILE PARALLEL RESTRICTED;

COMMENT ON FUNCTION clickstream.worker_partitions() IS
'One row per partition a consumer worker has been assigned since server start, from shared memory: position, high watermark and when the broker reported it, totals, rates over the last minute, last batch and last error.';

CREATE FUNCTION clickstream.worker_states(
	OUT consumer integer,
	OUT pid integer,
	OUT state text,
	OUT assigned_partitions integer,
	OUT batches bigint,
	OUT last_batch_at timestamptz,
	OUT last_error text,
	OUT last_error_at timestamptz,
	OUT started_at timestamptz,
	OUT waiting_for text,
	OUT blocked_since timestamptz)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'clickstream_worker_states'
LANGUAGE C STRICT VOLATILE PARALLEL RESTRICTED;

COMMENT ON FUNCTION clickstream.worker_states() IS
'One row per ingestion worker (clickstream.consumers of them), from shared memory: pid, state (starting, waiting_for_extension, disabled, connecting, consuming, broker_down, blocked, stopped), assignment size, last error, and while blocked the lock it waits for and since when.';

CREATE VIEW clickstream.workers AS
	SELECT * FROM clickstream.worker_states();

COMMENT ON VIEW clickstream.workers IS
'Ingestion workers: one row per consumer process with its state and last error, and while it is blocked, what it waits for.';
COMMENT ON COLUMN clickstream.workers.consumer IS 'Worker number, 0 .. clickstream.consumers - 1.';
COMMENT ON COLUMN clickstream.workers.pid IS 'Process id of the worker; NULL when it is not running.';
COMMENT ON COLUMN clickstream.workers.state IS 'starting, waiting_for_extension, disabled, connecting, consuming, broker_down, blocked (a lock its write needs is held by another session: see waiting_for) or stopped.';
COMMENT ON COLUMN clickstream.workers.assigned_partitions IS 'Partitions the consumer group gives this worker now.';
COMMENT ON COLUMN clickstream.workers.batches IS 'Batches written since the worker started.';
COMMENT ON COLUMN clickstream.workers.last_batch_at IS 'Commit time of its last batch.';
COMMENT ON COLUMN clickstream.workers.last_error IS 'Its last error (Kafka or PostgreSQL), if any.';
COMMENT ON COLUMN clickstream.workers.last_error_at IS 'When that error happened.';
COMMENT ON COLUMN clickstream.workers.started_at IS 'When the worker process started.';
COMMENT ON COLUMN clickstream.workers.waiting_for IS 'While state = blocked: the lock its write waits for and the processes holding it, e.g. ''RowShareLock on relation clickstream.ingest_positions held by pid 1234''; NULL otherwise.';
COMMENT ON COLUMN clickstream.workers.blocked_since IS 'While state = blocked: when its write first failed to get that lock; NULL otherwise.';
