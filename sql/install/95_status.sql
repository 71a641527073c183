-- Status: one view over ingestion (shared memory and positions) and the
-- silver refresh (watermarks and refresh_history), and the dead letters
-- counted per day and reason without their payloads (what a pipeline-health
-- panel shows).

\echo Use "CREATE EXTENSION clickstream" to load this file. \quit

CREATE VIEW clickstream.status AS
WITH known AS (
	SELECT topic, partition FROM clickstream.ingest_positions
	UNION
	SELECT topic, partition FROM clickstream.watermarks
	UNION
	SELECT topic, partition FROM clickstream.worker_partitions()
)
SELECT
	k.topic,
	k.partition,
	w.consumer,
	coalesce(p.next_offset, wm.durable_offset) AS committed_offset,
	wm.durable_offset,
	w.high_watermark,
	-- NULL, not 0, when the broker has not reported the end of the partition
	-- since the server started (worker disabled or stopped, broker
	-- unreachable), or when the position is past that end as the broker
	-- reported it after the last batch (a sample taken before it may be
	-- behind by that batch)
	CASE WHEN w.high_watermark IS NULL THEN NULL
		WHEN w.high_watermark >= coalesce(p.next_offset, wm.durable_offset, w.next_offset)
		THEN w.high_watermark - coalesce(p.next_offset, wm.durable_offset, w.next_offset)
		WHEN w.high_watermark_at > greatest(w.last_batch_at, p.updated_at, '-infinity') THEN NULL
		ELSE 0 END AS lag,
	coalesce(w.messages_per_sec, 0) AS messages_per_sec,
	coalesce(w.bytes_per_sec, 0) AS bytes_per_sec,
	coalesce(w.last_batch_at, p.updated_at) AS last_batch_at,
	w.last_error,
	w.last_error_at,
	greatest(coalesce(p.next_offset, wm.durable_offset) - wm.durable_offset, 0) AS silver_backlog,
	(SELECT now() - max(h.finished_at) FROM clickstream.refresh_history h
	 WHERE h.status = 'succeeded' AND h.kind = 'refresh') AS refresh_age,
	wm.first_offset,
	w.high_watermark_at
FROM known k
LEFT JOIN clickstream.ingest_positions p USING (topic, partition)
LEFT JOIN clickstream.watermarks wm USING (topic, partition)
LEFT JOIN clickstream.worker_partitions() w USING (topic, partition);

COMMENT ON VIEW clickstream.status IS
'Pipeline status, one row per partition: committed position (stored with the bronze rows), durable watermark (covered by silver), high watermark, lag, messages and bytes per second over the last minute, last batch time, last error, messages waiting in bronze for silver, the age of the last successful clickstream.refresh(), the first offset the pipeline read (above 0: Kafka had deleted older messages before the partition was first read; the lag does not count them), and when the broker last reported the high watermark.';
COMMENT ON COLUMN clickstream.status.topic IS 'Kafka topic.';
COMMENT ON COLUMN clickstream.status.partition IS 'Kafka partition.';
COMMENT ON COLUMN clickstream.status.consumer IS 'Worker the partition is assigned to now; NULL when none is.';
COMMENT ON COLUMN clickstream.status.committed_offset IS 'Next offset to consume, stored with the bronze rows (clickstream.ingest_positions).';
COMMENT ON COLUMN clickstream.status.durable_offset IS 'Durable watermark: every message below it is in silver or dead_letters (clickstream.watermarks).';
COMMENT ON COLUMN clickstream.status.high_watermark IS 'Offset after the last message of the partition, as the broker last reported it (asked every 2 seconds by the worker, whether or not it writes; see high_watermark_at).';
COMMENT ON COLUMN clickstream.status.lag IS 'Messages in Kafka not yet ingested: high_watermark - committed_offset; as old as high_watermark_at. NULL when it is not known: no high watermark since the server started (the worker is disabled or stopped, or the broker unreachable: see clickstream.workers), or the committed position is past the high watermark (the topic was recreated, or the broker lost messages: last_error says so).';
COMMENT ON COLUMN clickstream.status.messages_per_sec IS 'Messages ingested per second over the last minute.';
COMMENT ON COLUMN clickstream.status.bytes_per_sec IS 'Payload bytes ingested per second over the last minute.';
COMMENT ON COLUMN clickstream.status.last_batch_at IS 'Commit time of the last batch of the partition.';
COMMENT ON COLUMN clickstream.status.last_error IS 'Last error of the worker on this partition, if any.';
COMMENT ON COLUMN clickstream.status.last_error_at IS 'When that error happened.';
COMMENT ON COLUMN clickstream.status.silver_backlog IS 'Messages waiting in bronze for the refresh: committed_offset - durable_offset.';
COMMENT ON COLUMN clickstream.status.refresh_age IS 'Time since the last successful clickstream.refresh() finished.';
COMMENT ON COLUMN clickstream.status.first_offset IS 'The first offset the pipeline read from the partition; above 0, Kafka had deleted the older messages (retention, compaction) before the partition was first read, and the lag does not count them.';
COMMENT ON COLUMN clickstream.status.high_watermark_at IS 'When the broker last reported high_watermark (the worker asks every 2 seconds); older than a few seconds, the high watermark and the lag are stale (broker unreachable, worker stopped). NULL when never asked since server start.';

-- What a dashboard may know of dead letters: how many, why and when; not
-- their payloads or keys (clickstream.dead_letters is not for dashboards).
CREATE VIEW clickstream.dead_letters_daily AS
SELECT clickstream.local_day(d.created_at) AS day,
	   d.stage,
	   d.reason,
	   count(*) AS messages,
	   coalesce(sum(d.payload_bytes), 0) AS payload_bytes,
	   min(d.created_at) AS first_at,
	   max(d.created_at) AS last_at
FROM clickstream.dead_letters d
GROUP BY 1, 2, 3;

COMMENT ON VIEW clickstream.dead_letters_daily IS
'Dead letters per day (clickstream.timezone, by the time they were rejected), stage and reason, without payloads or keys: what the pipeline-health panels read. Computed when read; its cost follows the number of dead letters.';
COMMENT ON COLUMN clickstream.dead_letters_daily.day IS 'Day the messages were rejected, in clickstream.timezone.';
COMMENT ON COLUMN clickstream.dead_letters_daily.stage IS 'ingest (the Kafka worker) or silver (parsing and validation).';
COMMENT ON COLUMN clickstream.dead_letters_daily.reason IS 'Machine-readable reason (see docs/events.md, Dead letters).';
COMMENT ON COLUMN clickstream.dead_letters_daily.messages IS 'Dead letters of that day, stage and reason.';
COMMENT ON COLUMN clickstream.dead_letters_daily.payload_bytes IS 'Their original payload sizes, summed.';
COMMENT ON COLUMN clickstream.dead_letters_daily.first_at IS 'When the first of them was rejected.';
COMMENT ON COLUMN clickstream.dead_letters_daily.last_at IS 'When the last of them was rejected.';
