-- Silver: the parser's rejection reasons, refresh, deduplication, late
-- events, partitions, touched days and users, replay, history, quality.
CREATE EXTENSION clickstream;
SET clickstream.refresh_batch_size = 1000;

-- every rejection reason, from a crafted payload
CREATE TEMP TABLE cases (n int, payload bytea);
INSERT INTO cases VALUES
 (1,  NULL),
 (2,  '\xc328'::bytea),
 (3,  convert_to('{"event_id":"a","event_type":"page_view","user_id":"u","ts":"2026-01-15T10:00:00Z"', 'UTF8')),
 (4,  convert_to('{"event_id":"a",}', 'UTF8')),
 (5,  convert_to('[1,2]', 'UTF8')),
 (6,  convert_to('"page_view"', 'UTF8')),
 (7,  convert_to('{"event_type":"page_view","user_id":"u","ts":"2026-01-15T10:00:00Z"}', 'UTF8')),
 (8,  convert_to('{"event_id":"","event_type":"page_view","user_id":"u","ts":"2026-01-15T10:00:00Z"}', 'UTF8')),
 (9,  convert_to('{"event_id":"a","event_type":"page_view","user_id":null,"ts":"2026-01-15T10:00:00Z"}', 'UTF8')),
 (10, convert_to('{"event_id":"a","event_type":"page_view","user_id":{"id":1},"ts":"2026-01-15T10:00:00Z"}', 'UTF8')),
 (11, convert_to('{"event_id":"a","event_type":"page_view","user_id":"u","ts":true}', 'UTF8')),
 (12, convert_to('{"event_id":"a","event_type":"page_view","user_id":"u","ts":"2026-01-15T10:00:00Z","price":"12.50 EUR"}', 'UTF8')),
 (13, convert_to('{"event_id":"a","event_type":"page_view","user_id":"u","ts":"2026-01-15T10:00:00Z","quantity":1.5}', 'UTF8')),
 (14, convert_to('{"event_id":"a","event_type":"page_view","user_id":"u","ts":"2026-01-15T10:00:00Z","price":-3.5}', 'UTF8')),
 (15, convert_to('{"event_id":"a","event_type":"page_view","user_id":"u","ts":"2026-01-15T10:00:00Z","quantity":0}', 'UTF8')),
 (16, convert_to('{"event_id":"a","event_type":"page_view","user_id":"u","ts":"2026-13-45T25:61:00Z"}', 'UTF8')),
 (17, convert_to('{"event_id":"a","event_type":"page_view","user_id":"u","ts":"2026-01-15T10:00:00"}', 'UTF8')),
 (18, convert_to('{"event_id":"a","event_type":"page_view","user_id":"u","ts":"yesterday"}', 'UTF8')),
 (19, convert_to('{"event_id":"a","event_type":"page_view","user_id":"u","ts":"2999-01-01T00:00:00Z"}', 'UTF8')),
 (20, convert_to('{"event_id":"a","event_type":"purchase","user_id":"u","ts":"2026-01-15T10:00:00Z","price":5}', 'UTF8')),
 (21, convert_to('{"event_id":"a","event_type":"page_view","user_id":"u","ts":"2026-01-15T10:00:00Z","x":1e99999}', 'UTF8')),
 (22, convert_to('{"event_id":"a","event_type":"page_view","user_id":"u","ts":"2026-01-15T10:00:00Z","x":"\u0000"}', 'UTF8')),
 (23, convert_to('{"event_id":"a","event_type":"page_view","user_id":"u","ts":"2026-01-15T10:00:00Z","x":"\ud800"}', 'UTF8')),
 (24, convert_to('{"event_id":"' || repeat('x', 600) || '","event_type":"page_view","user_id":"u","ts":"2026-01-15T10:00:00Z"}', 'UTF8')),
 (25, convert_to('{"event_id":"a","event_type":"page_view","user_id":"u","ts":"2026-01-15T10:00:00Z"} x', 'UTF8')),
 (26, convert_to(repeat('[', 100) || repeat(']', 100), 'UTF8')),
 (27, convert_to('', 'UTF8')),
 (28, convert_to('{"event_id":"a","event_type":"page_view","user_id":"u","ts":-99999999999999999}', 'UTF8')),
 (29, convert_to('{"event_id":"a","event_type":"page_view","user_id":"u","ts":"2026-01-15T10:00:00Z","price":-1e-400}', 'UTF8')),
 (30, convert_to('{"event_id":"a","event_type":"page_view","user_id":"u","ts":"2026-01-15T10:00:00Z","price":1000000000000000.01}', 'UTF8')),
 (31, convert_to('{"event_id":"a","event_type":"page_view","user_id":"u","ts":"2026-01-15T10:00:00Z","quantity":1.0000000000000000001}', 'UTF8')),
 (32, convert_to('{"event_id":"a","event_type":"page_view","user_id":"u","ts":"0001-01-01T00:00:00+05:00"}', 'UTF8')),
 (33, convert_to('{"event_id":"a","event_type":"page_view","user_id":"u","ts":"' || repeat('é', 60) || '"}', 'UTF8')),
 (34, convert_to('{"event_id":"a","event_type":"page_view","user_id":"u","ts":"2026-01-15T10:00:00+05:"}', 'UTF8')),
 (35, convert_to('{"event_id":"a","event_type":"page_view","user_id":"u","ts":"2026-01-15T10:00:00Z","x":"' || repeat('x', 17000000) || '"}', 'UTF8'));
SELECT n, (p).reason, (p).detail, convert_to((p).detail, 'UTF8') IS NOT NULL AS utf8_detail
FROM (SELECT n, clickstream.parse_event(payload) AS p FROM cases) s ORDER BY n;

-- accepted forms: zones, fractions, epoch milliseconds (number or digits),
-- escapes, nulls of optional fields, unknown keys kept in attrs
SELECT e.reason, e.event_id, e.user_id, to_char(e.ts AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') AS ts_utc, e.event_date, e.event_hour, e.price,
	   e.quantity, e.is_high_value, e.revenue, e.page_url, e.attrs
FROM (VALUES
 ('{"event_id":"e1","event_type":"page_view","user_id":"u1","ts":"2026-01-15T23:30:00.123456789+02:00","page_url":"/a\"b\\c\u00e9\ud83d\ude00","product_id":null}'),
 ('{"event_id":"e2","event_type":"purchase","user_id":"u1","ts":1768519800250,"price":600.10,"quantity":3,"order_id":"o1"}'),
 ('{"event_id":"e3","event_type":"purchase","user_id":"u1","ts":"1768519800250","price":2,"order_id":"o2","coupon":"X","nested":{"a":[1,2,{"b":null}]}}'),
 (' { "event_id" : "e4" , "event_type" : "add_to_cart" , "user_id" : "u2" , "ts" : "2026-01-15 10:00Z" , "quantity" : 2.0 } '),
 ('{"event_\u0069d":"e5","event_type":"page_view","user_id":"u2","ts":"2026-01-15t10:00:00,5-0530"}'),
 ('{"event_id":"e6","event_type":"page_view","user_id":"u2","ts":1768519800250.001,"quantity":2.00}'),
 ('{"event_id":"e7","event_type":"page_view","user_id":"u2","ts":1768519800250.0009,"price":500.00}'),
 ('{"event_id":"e8","event_type":"page_view","user_id":"u2","ts":"2026-01-15T10:00:00+0530","price":500.01}')
) v(j), LATERAL clickstream.parse_event(convert_to(v.j, 'UTF8')) e;

-- the time zone decides event_date and event_hour (a server setting)
SELECT name, context FROM pg_settings WHERE name IN ('clickstream.timezone', 'clickstream.max_clock_skew',
	'clickstream.high_value_threshold', 'clickstream.refresh_batch_size', 'clickstream.history_retention')
ORDER BY name;

-- refresh: bronze rows below the stored position become silver or dead letters
CREATE FUNCTION feed(t text, part int, first_offset bigint, payloads text[]) RETURNS void
LANGUAGE sql AS $$
	INSERT INTO clickstream.bronze (kafka_topic, kafka_partition, kafka_offset, payload)
	SELECT t, part, first_offset + o - 1, convert_to(p, 'UTF8')
	FROM unnest(payloads) WITH ORDINALITY AS u(p, o);
	INSERT INTO clickstream.watermarks (topic, partition, durable_offset)
	VALUES (t, part, first_offset) ON CONFLICT DO NOTHING;
	INSERT INTO clickstream.ingest_positions (topic, partition, next_offset)
	VALUES (t, part, first_offset + cardinality(payloads))
	ON CONFLICT (topic, partition) DO UPDATE SET next_offset = EXCLUDED.next_offset;
$$;
CREATE FUNCTION ev(id text, typ text, usr text, ts text, extra text DEFAULT '') RETURNS text
LANGUAGE sql AS $$
	SELECT format('{"event_id":"%s","event_type":"%s","user_id":"%s","ts":"%s"%s}', id, typ, usr, ts, extra)
$$;

SELECT feed('t', 0, 0, ARRAY[
	ev('a1', 'page_view', 'u1', '2026-01-15T10:00:00Z'),
	ev('a2', 'add_to_cart', 'u1', '2026-01-15T10:01:00Z', ',"product_id":"p1","price":10,"quantity":2'),
	ev('a3', 'purchase', 'u1', '2026-01-15T10:02:00Z', ',"product_id":"p1","price":10,"quantity":2,"order_id":"o1"'),
	ev('a1', 'page_view', 'u1', '2026-01-15T10:00:00Z'),
	'not json',
	ev('a4', 'purchase', 'u2', '2026-01-15T11:00:00Z')]);
SELECT feed('t', 1, 100, ARRAY[
	ev('b1', 'page_view', 'u3', '2026-01-16T00:30:00+01:00'),
	ev('a2', 'add_to_cart', 'u1', '2026-01-15T10:01:00Z', ',"product_id":"p1","price":10,"quantity":2')]);
CALL clickstream.refresh();
SELECT event_id, event_type, user_id, ts, event_date, revenue, kafka_partition, kafka_offset
FROM clickstream.events ORDER BY event_id;
SELECT stage, reason, kafka_partition, kafka_offset, convert_from(payload, 'UTF8') AS payload
FROM clickstream.dead_letters ORDER BY kafka_partition, kafka_offset;
SELECT count(*) AS bronze_left FROM clickstream.bronze;
SELECT topic, partition, durable_offset FROM clickstream.watermarks ORDER BY 1, 2;
SELECT run_id, kind, status, steps, rows_read, rows_promoted, rows_duplicate, rows_rejected,
	   partitions_created, error, duration >= '0'::interval AS timed
FROM clickstream.refresh_history ORDER BY run_id;

-- dedup across refreshes; a late event lands in its own (new) day and is touched
SELECT feed('t', 0, 6, ARRAY[
	ev('a3', 'purchase', 'u1', '2026-01-15T10:02:00Z', ',"product_id":"p1","price":10,"quantity":2,"order_id":"o1"'),
	ev('late1', 'page_view', 'u4', '2025-12-24T08:00:00Z'),
	ev('c1', 'page_view', 'u1', '2026-01-15T12:00:00Z'),
	ev('old', 'page_view', 'u5', '1999-12-31T23:59:59Z')]);
CALL clickstream.refresh();
SELECT count(*) AS events, count(DISTINCT event_id) AS distinct_ids FROM clickstream.events;
SELECT tableoid::regclass::text AS partition, count(*) FROM clickstream.events GROUP BY 1 ORDER BY 1;
SELECT run_id, event_date, user_id, first_ts, last_ts, events
FROM clickstream.touched ORDER BY run_id, event_date, user_id;
SELECT * FROM clickstream.touched_days(1);
SELECT run_id, status, rows_read, rows_promoted, rows_duplicate, rows_rejected, partitions_created
FROM clickstream.refresh_history ORDER BY run_id;

-- nothing to do: a run with no rows
CALL clickstream.refresh();
SELECT run_id, status, steps, rows_read FROM clickstream.refresh_history ORDER BY run_id DESC LIMIT 1;

-- steps: a backlog larger than refresh_batch_size is taken in several transactions
SELECT feed('t', 2, 0, array_agg(ev('s' || i, 'page_view', 'u' || (i % 7), '2026-01-17T10:00:00Z')))
FROM generate_series(1, 2500) i;
CALL clickstream.refresh();
SELECT status, steps, rows_read, rows_promoted FROM clickstream.refresh_history ORDER BY run_id DESC LIMIT 1;
SELECT durable_offset FROM clickstream.watermarks WHERE topic = 't' AND partition = 2;

-- a row that the write refuses (here: a trigger on events) is isolated into
-- dead_letters as rejected_by_silver; the rest of the step is promoted
CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	IF NEW.event_id = 'boom' THEN RAISE EXCEPTION 'refused by a test trigger'; END IF;
	IF NEW.event_id = 'stall' THEN
		RAISE EXCEPTION 'the step cannot go on' USING ERRCODE = 'object_not_in_prerequisite_state';
	END IF;
	RETURN NEW;
END $$;
CREATE TRIGGER refuse BEFORE INSERT ON clickstream.events FOR EACH ROW EXECUTE FUNCTION refuse();
SELECT feed('t', 0, 10, ARRAY[ev('boom', 'page_view', 'u1', '2026-01-15T13:00:00Z'),
							  ev('ok1', 'page_view', 'u1', '2026-01-15T13:01:00Z')]);
CALL clickstream.refresh();
SELECT status, rows_read, rows_promoted, rows_rejected
FROM clickstream.refresh_history ORDER BY run_id DESC LIMIT 1;
SELECT reason, detail, kafka_offset, convert_from(payload, 'UTF8') LIKE '%"boom"%' AS has_payload
FROM clickstream.dead_letters WHERE reason = 'rejected_by_silver';
-- replaying it while the trigger still refuses it keeps it, payload and all
SELECT replayed, promoted, still_rejected
FROM clickstream.replay_dead_letters(only_reason => 'rejected_by_silver');
SELECT reason, convert_from(payload, 'UTF8') LIKE '%"boom"%' AS has_payload
FROM clickstream.dead_letters WHERE reason = 'rejected_by_silver';

-- an error that is not about a row fails the step: rolled back fully,
-- recorded, re-raised, and retried by the next run
SELECT feed('t', 0, 12, ARRAY[ev('stall', 'page_view', 'u1', '2026-01-15T13:02:00Z'),
							  ev('ok2', 'page_view', 'u1', '2026-01-15T13:03:00Z')]);
CALL clickstream.refresh();
SELECT status, steps, rows_read, split_part(error, E'\n', 1) AS error
FROM clickstream.refresh_history ORDER BY run_id DESC LIMIT 1;
SELECT count(*) AS still_in_bronze FROM clickstream.bronze;
SELECT durable_offset FROM clickstream.watermarks WHERE topic = 't' AND partition = 0;
DROP TRIGGER refuse ON clickstream.events;
CALL clickstream.refresh();
SELECT status, rows_promoted FROM clickstream.refresh_history ORDER BY run_id DESC LIMIT 1;
SELECT count(*) AS still_in_bronze FROM clickstream.bronze;

-- replay: fix a dead letter's payload and run it through silver again
UPDATE clickstream.dead_letters
SET payload = convert_to(ev('a4', 'purchase', 'u2', '2026-01-15T11:00:00Z', ',"order_id":"o9","price":1'), 'UTF8')
WHERE reason = 'purchase_without_order';
SELECT replayed, promoted, duplicates, still_rejected
FROM clickstream.replay_dead_letters(only_reason => 'purchase_without_order');
SELECT event_id, order_id, revenue FROM clickstream.events WHERE event_id = 'a4';
SELECT reason, count(*) FROM clickstream.dead_letters GROUP BY 1 ORDER BY 1;
SELECT replayed, still_rejected FROM clickstream.replay_dead_letters(only_reason => 'invalid_json');
SELECT reason, count(*) FROM clickstream.dead_letters GROUP BY 1 ORDER BY 1;

-- quality checks all pass on what refresh built; a broken row is caught
SELECT check_name, layer, severity, failures, passed FROM clickstream.check_quality();
INSERT INTO clickstream.events (event_id, event_type, user_id, ts, event_date, event_hour,
	is_high_value, kafka_topic, kafka_partition, kafka_offset, run_id)
VALUES ('a1', 'teleport', 'u1', '2026-01-15T10:00:00Z', '2026-01-15', 10, false, 't', 0, 999, 0);
SELECT check_name, failures, passed FROM clickstream.check_quality('2026-01-01')
WHERE NOT passed;
SELECT count(*) AS results FROM clickstream.quality_results;

-- status shows the silver backlog and the age of the last successful refresh
SELECT topic, partition, committed_offset, durable_offset, silver_backlog,
	   refresh_age < '1 hour' AS refreshed_recently
FROM clickstream.status ORDER BY 1, 2;

-- scheduling needs pg_cron in this database; the error says how
SELECT clickstream.schedule();
SELECT clickstream.unschedule();

-- the direct write path (no trigger): a CHECK constraint and an index a
-- user adds are enforced; the rows they refuse are isolated as before
ALTER TABLE clickstream.events ADD CONSTRAINT no_forbidden CHECK (event_type <> 'forbidden');
CREATE INDEX events_page_url ON clickstream.events (page_url);
SELECT feed('t', 3, 0, ARRAY[
	ev('f1', 'forbidden', 'u1', '2026-01-15T14:00:00Z'),
	ev('big1', 'page_view', 'u1', '2026-01-15T14:01:00Z',
	   ',"page_url":"' || (SELECT string_agg(md5(i::text), '') FROM generate_series(1, 100) i) || '"'),
	ev('d1', 'page_view', 'u1', '2026-01-15T14:02:00Z'),
	ev('d2', 'page_view', 'u6', '2026-01-16T14:03:00Z')]);
CALL clickstream.refresh();
SELECT status, rows_read, rows_promoted, rows_duplicate, rows_rejected
FROM clickstream.refresh_history ORDER BY run_id DESC LIMIT 1;
SELECT kafka_offset, split_part(detail, ' (', 1) AS detail
FROM clickstream.dead_letters WHERE kafka_partition = 3 ORDER BY kafka_offset;
SELECT event_id FROM clickstream.events WHERE event_id IN ('f1', 'big1', 'd1', 'd2') ORDER BY 1;
SELECT event_id FROM clickstream.event_ids WHERE event_id IN ('f1', 'big1', 'd1', 'd2') ORDER BY 1;
ALTER TABLE clickstream.events DROP CONSTRAINT no_forbidden;
DROP INDEX clickstream.events_page_url;

-- a trigger on one partition only: its day's rows go through COPY (and fire
-- it), the other days' rows are written directly.  The refresh runs with
-- search_path pg_catalog, pg_temp: a trigger names its tables by schema.
CREATE TABLE fired (event_id text);
CREATE FUNCTION log_event() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	INSERT INTO public.fired VALUES (NEW.event_id);
	RETURN NEW;
END $$;
CREATE TRIGGER log_event AFTER INSERT ON clickstream.events_20260116
	FOR EACH ROW EXECUTE FUNCTION log_event();
SELECT feed('t', 3, 4, ARRAY[
	ev('m1', 'page_view', 'u7', '2026-01-15T15:00:00Z'),
	ev('m2', 'page_view', 'u7', '2026-01-16T15:00:00Z'),
	ev('m3', 'page_view', 'u8', '2026-01-16T15:01:00Z')]);
CALL clickstream.refresh();
SELECT event_id, tableoid::regclass::text AS partition FROM clickstream.events
WHERE event_id IN ('m1', 'm2', 'm3') ORDER BY 1;
SELECT event_id FROM fired ORDER BY 1;
DROP TRIGGER log_event ON clickstream.events_20260116;

-- event_ids with a trigger: the ids are looked up first and written by
-- COPY; events with a row trigger go through COPY too.  COPY's text must
-- reach the tables intact whatever the client encoding.
CREATE FUNCTION pass() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	RETURN NEW;
END $$;
CREATE TRIGGER pass BEFORE INSERT ON clickstream.event_ids FOR EACH ROW EXECUTE FUNCTION pass();
CREATE TRIGGER pass BEFORE INSERT ON clickstream.events FOR EACH ROW EXECUTE FUNCTION pass();
SET client_encoding = 'LATIN1';
SELECT feed('t', 3, 7, ARRAY[
	ev('d1', 'page_view', 'u1', '2026-01-15T14:02:00Z'),
	ev('n' || chr(233), 'page_view', 'u' || chr(233), '2026-01-15T16:00:00Z',
	   ',"page_url":"/caf' || chr(233) || '"')]);
CALL clickstream.refresh();
SELECT status, rows_read, rows_promoted, rows_duplicate, rows_rejected
FROM clickstream.refresh_history ORDER BY run_id DESC LIMIT 1;
SELECT convert_to(event_id, 'UTF8') = '\x6ec3a9' AS id_intact,
	   convert_to(user_id, 'UTF8') = '\x75c3a9' AS user_intact,
	   convert_to(page_url, 'UTF8') = '\x2f636166c3a9' AS url_intact
FROM clickstream.events WHERE kafka_partition = 3 AND kafka_offset = 8;
SELECT count(*) AS ids FROM clickstream.event_ids WHERE convert_to(event_id, 'UTF8') = '\x6ec3a9';
RESET client_encoding;
DROP TRIGGER pass ON clickstream.event_ids;
DROP TRIGGER pass ON clickstream.events;
-- every promoted event has its id, once
SELECT count(*) AS events, count(DISTINCT e.event_id) AS distinct_ids, count(i.event_id) AS with_id
FROM clickstream.events e LEFT JOIN clickstream.event_ids i USING (event_id)
WHERE e.kafka_partition = 3;

-- refresh cannot run inside a transaction block (it commits)
BEGIN;
CALL clickstream.refresh();
ROLLBACK;

DROP EXTENSION clickstream;
