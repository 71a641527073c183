-- Catch-up: a backlog larger than one step is read from bronze once into a
-- map, and the steps take their rows from it (clickstream.refresh_step);
-- a step is capped by rows (refresh_batch_size) and by payload bytes
-- (refresh_batch_bytes).  Every row arrives exactly once, the watermarks
-- end at the positions, a row the write refuses is isolated, gold is exact.
CREATE EXTENSION clickstream;
SET clickstream.refresh_batch_size = 1000;
SELECT name, setting, unit, context FROM pg_settings
WHERE name IN ('clickstream.refresh_batch_size', 'clickstream.refresh_batch_bytes') ORDER BY name;

CREATE FUNCTION cu_feed(t text, part int, first_offset bigint, payloads text[], stride int DEFAULT 1)
RETURNS void LANGUAGE sql AS $$
	INSERT INTO clickstream.bronze (kafka_topic, kafka_partition, kafka_offset, payload)
	SELECT t, part, first_offset + (o - 1) * stride, convert_to(p, 'UTF8')
	FROM unnest(payloads) WITH ORDINALITY AS u(p, o);
	INSERT INTO clickstream.watermarks (topic, partition, durable_offset)
	VALUES (t, part, first_offset) ON CONFLICT DO NOTHING;
	INSERT INTO clickstream.ingest_positions (topic, partition, next_offset)
	VALUES (t, part, first_offset + (cardinality(payloads) - 1) * stride + 1)
	ON CONFLICT (topic, partition) DO UPDATE SET next_offset = EXCLUDED.next_offset;
$$;
CREATE FUNCTION cu_ev(id text, usr text, ts text, extra text DEFAULT '') RETURNS text
LANGUAGE sql AS $$
	SELECT format('{"event_id":"%s","event_type":"page_view","user_id":"%s","ts":"%s"%s}', id, usr, ts, extra)
$$;

-- a row that the write refuses, for the isolate path
CREATE FUNCTION cu_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	IF NEW.event_id = 'boom' THEN RAISE EXCEPTION 'refused by a test trigger'; END IF;
	RETURN NEW;
END $$;
CREATE TRIGGER cu_refuse BEFORE INSERT ON clickstream.events FOR EACH ROW EXECUTE FUNCTION cu_refuse();

-- 5 500 rows in three partitions of two topics: partition 1 has offset gaps
-- (every third offset), a duplicate of a row of partition 0, a malformed
-- row; 'boom' sits in the middle of partition 0
SELECT cu_feed('a', 0, 0, array_agg(CASE WHEN i = 1500 THEN cu_ev('boom', 'u1', '2026-02-01T12:00:00Z')
									   ELSE cu_ev('a0-' || i, 'u' || (i % 37), to_char(timestamp '2026-02-01' + i * interval '1 minute', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')) END
								  ORDER BY i))
FROM generate_series(1, 3000) i;
SELECT cu_feed('a', 1, 100, array_agg(CASE WHEN i = 10 THEN cu_ev('a0-10', 'u10', '2026-02-01T00:10:00Z')
										WHEN i = 700 THEN 'not json'
										ELSE cu_ev('a1-' || i, 'v' || (i % 11), to_char(timestamp '2026-02-01' + i * interval '2 minute', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')) END
								   ORDER BY i), 3)
FROM generate_series(1, 1500) i;
SELECT cu_feed('b', 0, 0, array_agg(cu_ev('b0-' || i, 'w' || (i % 5), to_char(timestamp '2026-02-02' + i * interval '1 minute', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')) ORDER BY i))
FROM generate_series(1, 1000) i;
SELECT count(*) AS bronze_rows FROM clickstream.bronze;

CALL clickstream.refresh();
SELECT status, steps, rows_read, rows_promoted, rows_duplicate, rows_rejected
FROM clickstream.refresh_history ORDER BY run_id DESC LIMIT 1;
-- every row exactly once: silver (no duplicate id or position) + dead letters
SELECT count(*) AS events, count(DISTINCT event_id) AS ids,
	   count(DISTINCT (kafka_topic, kafka_partition, kafka_offset)) AS positions
FROM clickstream.events;
SELECT reason, kafka_topic, kafka_partition, kafka_offset FROM clickstream.dead_letters ORDER BY id LIMIT 5;
SELECT count(*) AS bronze_left FROM clickstream.bronze;
SELECT w.topic, w.partition, w.durable_offset, p.next_offset
FROM clickstream.watermarks w JOIN clickstream.ingest_positions p USING (topic, partition) ORDER BY 1, 2;
SELECT count(*) AS marts, bool_and(ok) AS all_ok FROM clickstream.verify_gold();
-- the map is gone with the run
SELECT to_regclass('pg_temp.clickstream_map') IS NULL AS map_dropped;

-- the byte cap: 31 rows of ~20 kB and one of ~100 kB with a cap of 64 kB:
-- three small rows a step, the large one alone
SET clickstream.refresh_batch_bytes = '64kB';
SELECT cu_feed('c', 0, 0, array_agg(cu_ev('c-' || i, 'x' || (i % 3), to_char(timestamp '2026-02-03' + i * interval '1 minute', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
	',"pad":"' || repeat('p', CASE WHEN i = 16 THEN 100000 ELSE 20000 END) || '"') ORDER BY i))
FROM generate_series(1, 31) i;
CALL clickstream.refresh();
SELECT status, steps, rows_read, rows_promoted FROM clickstream.refresh_history ORDER BY run_id DESC LIMIT 1;
SELECT count(*) AS events, count(DISTINCT event_id) AS ids FROM clickstream.events WHERE kafka_topic = 'c';
SELECT durable_offset FROM clickstream.watermarks WHERE topic = 'c';
RESET clickstream.refresh_batch_bytes;

-- a map outlives the step's commit; a rewritten bronze (VACUUM FULL) makes
-- the next step build a new one; rows deleted behind the map's back fail
-- the step (nothing moves) and the next run reads bronze again: the row
-- deleted by hand is a gap then
SELECT cu_feed('d', 0, 0, array_agg(cu_ev('d-' || i, 'y' || (i % 4), to_char(timestamp '2026-02-04' + i * interval '1 minute', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')) ORDER BY i))
FROM generate_series(1, 2500) i;
INSERT INTO clickstream.refresh_history (status) VALUES ('succeeded') RETURNING run_id AS manual_run \gset
-- as refresh() does: a step and gold in one transaction
CREATE FUNCTION cu_step(run bigint) RETURNS TABLE (rows_read bigint, more boolean) LANGUAGE plpgsql AS $$
BEGIN
	SELECT s.rows_read, s.more INTO rows_read, more
	FROM clickstream.refresh_step(run, 1000, 1000000) s;
	PERFORM clickstream.refresh_gold();
	RETURN NEXT;
END $$;
SELECT * FROM cu_step(:manual_run);
SELECT run = :manual_run AS this_run, next_seq, last_seq FROM pg_temp.clickstream_map_state;
VACUUM FULL clickstream.bronze;
SELECT * FROM cu_step(:manual_run);
SELECT run = :manual_run AS this_run, next_seq, last_seq FROM pg_temp.clickstream_map_state;
DELETE FROM clickstream.bronze WHERE kafka_topic = 'd' AND kafka_offset = 2400;
\set VERBOSITY terse
SELECT * FROM cu_step(:manual_run);
\set VERBOSITY default
SELECT durable_offset FROM clickstream.watermarks WHERE topic = 'd';
SELECT clickstream.refresh_map_drop();
CALL clickstream.refresh();
SELECT status, steps, rows_read FROM clickstream.refresh_history ORDER BY run_id DESC LIMIT 1;
SELECT count(*) AS events, count(DISTINCT event_id) AS ids FROM clickstream.events WHERE kafka_topic = 'd';
SELECT durable_offset FROM clickstream.watermarks WHERE topic = 'd';
SELECT count(*) AS marts, bool_and(ok) AS all_ok FROM clickstream.verify_gold();

-- a run stopped by max_steps drops its map too; the next run finishes
SELECT cu_feed('e', 0, 0, array_agg(cu_ev('e-' || i, 'z' || (i % 4), to_char(timestamp '2026-02-05' + i * interval '1 minute', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')) ORDER BY i))
FROM generate_series(1, 2500) i;
CALL clickstream.refresh(max_steps => 1);
SELECT to_regclass('pg_temp.clickstream_map') IS NULL AS map_dropped;
CALL clickstream.refresh();
SELECT status, steps, rows_read FROM clickstream.refresh_history ORDER BY run_id DESC LIMIT 2;
SELECT count(*) AS events, count(DISTINCT event_id) AS ids FROM clickstream.events WHERE kafka_topic = 'e';
SELECT count(*) AS bronze_left FROM clickstream.bronze;
SELECT count(*) AS marts, bool_and(ok) AS all_ok FROM clickstream.verify_gold();

DROP EXTENSION clickstream;
DROP FUNCTION cu_feed, cu_ev, cu_refuse, cu_step;
