-- Status: one view over ingestion (shared memory and positions) and the
-- silver refresh (watermarks and refresh_history).

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
	greatest(w.high_watermark - coalesce(p.next_offset, wm.durable_offset, w.next_offset), 0) AS lag,
	coalesce(w.messages_per_sec, 0) AS messages_per_sec,
	coalesce(w.bytes_per_sec, 0) AS bytes_per_sec,
	coalesce(w.last_batch_at, p.updated_at) AS last_batch_at,
	w.last_error,
	w.last_error_at,
	greatest(coalesce(p.next_offset, wm.durable_offset) - wm.durable_offset, 0) AS silver_backlog,
	(SELECT now() - max(h.finished_at) FROM clickstream.refresh_history h
	 WHERE h.status = 'succeeded' AND h.kind = 'refresh') AS refresh_age,
	wm.first_offset
FROM known k
LEFT JOIN clickstream.ingest_positions p USING (topic, partition)
LEFT JOIN clickstream.watermarks wm USING (topic, partition)
LEFT JOIN clickstream.worker_partitions() w USING (topic, partition);

COMMENT ON VIEW clickstream.status IS
'Pipeline status, one row per partition: committed position (stored with the bronze rows), durable watermark (covered by silver), high watermark, lag, messages and bytes per second over the last minute, last batch time, last error, messages waiting in bronze for silver, the age of the last successful clickstream.refresh(), and the first offset the pipeline read (above 0: Kafka had deleted older messages before the partition was first read; the lag does not count them).';
