-- The reader role: CREATE EXTENSION creates clickstream_reader when missing;
-- a login that is a member reads every dashboard object and nothing raw,
-- writes nothing, runs nothing that changes state; the role and its members
-- survive DROP EXTENSION and the grants come back with CREATE EXTENSION.
SET timezone = 'UTC';
SELECT current_user AS superuser \gset
SET client_min_messages = warning;	-- start without the extension and the role,
DROP EXTENSION IF EXISTS clickstream;	-- whatever earlier tests left (the schema
DROP SCHEMA IF EXISTS clickstream CASCADE;	-- is not the extension's: it stays)
DROP ROLE IF EXISTS clickstream_reader;
RESET client_min_messages;
CREATE EXTENSION clickstream;
SELECT rolname, rolcanlogin, rolsuper, rolinherit, rolcreaterole, rolcreatedb, rolbypassrls,
	   shobj_description(oid, 'pg_authid') IS NOT NULL AS documented
FROM pg_roles WHERE rolname = 'clickstream_reader';

-- A table or view of the extension is either granted to the reader (in
-- sql/install/97_reader.sql) or private, listed here.  A new mart that is in
-- neither list shows up below and fails this test.
CREATE TEMP TABLE private_objects (relname name PRIMARY KEY);
INSERT INTO private_objects VALUES
	('bronze'), ('ingest_positions'), ('watermarks'), ('dead_letters'),	-- raw messages, positions
	('events'), ('event_ids'), ('touched'), ('event_sessions'),			-- silver, read by the marts
	('gold_state'), ('user_days'),										-- the state of gold, per user
	('event_types'), ('quality_checks'), ('funnel_definition');			-- definitions
SELECT c.relname,
	   has_table_privilege('clickstream_reader', c.oid, 'SELECT') AS granted,
	   p.relname IS NOT NULL AS listed_private
FROM pg_class c
LEFT JOIN private_objects p USING (relname)
WHERE c.relnamespace = 'clickstream'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
	AND NOT c.relispartition
	AND has_table_privilege('clickstream_reader', c.oid, 'SELECT') = (p.relname IS NOT NULL)
ORDER BY 1;
-- the private list names only objects that exist
SELECT relname AS stale_private_entry FROM private_objects
WHERE to_regclass('clickstream.' || quote_ident(relname)) IS NULL;
-- how much is granted, for the record
SELECT count(*) AS readable_objects FROM pg_class c
WHERE c.relnamespace = 'clickstream'::regnamespace
	AND has_table_privilege('clickstream_reader', c.oid, 'SELECT');

-- Never more than SELECT: no writes anywhere, no sequences, no CREATE in the schema.
SELECT c.relname FROM pg_class c
WHERE c.relnamespace = 'clickstream'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
	AND has_table_privilege('clickstream_reader', c.oid, 'INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER');
SELECT c.relname FROM pg_class c
WHERE c.relnamespace = 'clickstream'::regnamespace AND c.relkind = 'S'
	AND CASE WHEN c.relkind = 'S' THEN has_sequence_privilege('clickstream_reader', c.oid, 'USAGE, SELECT, UPDATE') END;
SELECT has_schema_privilege('clickstream_reader', 'clickstream', 'USAGE') AS usage,
	   has_schema_privilege('clickstream_reader', 'clickstream', 'CREATE') AS create;
-- no readable relation carries a payload or a Kafka key
SELECT c.relname, a.attname FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
WHERE c.relnamespace = 'clickstream'::regnamespace AND a.attnum > 0 AND NOT a.attisdropped
	AND a.attname IN ('payload', 'kafka_key', 'header_values')
	AND has_table_privilege('clickstream_reader', c.oid, 'SELECT');

-- The volatile functions the reader may execute: each reads shared memory or
-- computes on its arguments (a function that changes state is volatile; a
-- new one must be revoked from PUBLIC, or listed here if it changes nothing).
SELECT p.oid::regprocedure AS unexpected_volatile_function
FROM pg_proc p
WHERE p.pronamespace = 'clickstream'::regnamespace AND p.provolatile = 'v'
	AND has_function_privilege('clickstream_reader', p.oid, 'EXECUTE')
	AND p.prorettype <> 'trigger'::regtype
	AND NOT EXISTS (SELECT 1 FROM pg_aggregate a
					WHERE p.oid IN (a.aggtransfn, a.aggfinalfn, a.aggcombinefn,
									a.aggserialfn, a.aggdeserialfn))
	AND p.proname NOT IN ('worker_partitions', 'worker_states',	-- shared memory
						  'sessionize', 'sessions_of', 'session_rows')	-- the caller's query or table
ORDER BY 1;

-- Some data, for the views that parse bronze on the fly and a new day of
-- silver: two events promoted, one waiting in bronze, one dead letter.
CREATE FUNCTION feed(part int, first bigint, evs text[]) RETURNS void LANGUAGE sql AS $$
	INSERT INTO clickstream.bronze (kafka_topic, kafka_partition, kafka_offset, payload)
	SELECT 'rt', part, first + o - 1, convert_to(p, 'UTF8') FROM unnest(evs) WITH ORDINALITY AS u(p, o);
	INSERT INTO clickstream.watermarks (topic, partition, durable_offset)
	VALUES ('rt', part, first) ON CONFLICT DO NOTHING;
	INSERT INTO clickstream.ingest_positions (topic, partition, next_offset)
	VALUES ('rt', part, first + cardinality(evs))
	ON CONFLICT (topic, partition) DO UPDATE SET next_offset = EXCLUDED.next_offset;
$$;
SELECT feed(0, 0, ARRAY[
	'{"event_id":"r1","user_id":"ann","ts":"2026-04-06T10:00:00Z","event_type":"page_view","page_url":"/"}',
	'{"event_id":"r2","user_id":"ann","ts":"2026-04-06T10:01:00Z","event_type":"purchase","order_id":"o1","price":5,"product_id":"p1"}',
	'not json']);
CALL clickstream.refresh();
SELECT feed(0, 3, ARRAY[format('{"event_id":"r3","user_id":"bob","ts":"%s","event_type":"page_view"}',
	to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'))]);

-- A dashboard login: a member of the role, nothing more.
CREATE ROLE cs_grafana LOGIN IN ROLE clickstream_reader;
\c - cs_grafana
SELECT current_user, session_user;
-- every dashboard object reads
SELECT day, events, orders, revenue FROM clickstream.daily_metrics;
SELECT count(*) FROM clickstream.hourly_metrics;
SELECT count(*) FROM clickstream.category_daily;
SELECT count(*) FROM clickstream.product_daily;
SELECT product_id, revenue FROM clickstream.products;
SELECT order_id, revenue FROM clickstream.orders;
SELECT user_id, orders FROM clickstream.users;
SELECT count(*) > 0 AS has_rows FROM clickstream.active_users;
SELECT count(*) FROM clickstream.cohort_retention;
SELECT count(*) FROM clickstream.traffic_daily;
SELECT count(*) FROM clickstream.audience_daily;
SELECT count(*) FROM clickstream.pages_daily;
SELECT user_id, events FROM clickstream.sessions;
SELECT count(*) FROM clickstream.daily_funnel;
SELECT count(*) FROM clickstream.funnel_by_category;
SELECT count(*) FROM clickstream.product_funnel;
SELECT count(*) FROM clickstream.high_interest_low_conversion;
SELECT sum(events) AS live_events FROM clickstream.live;
SELECT events_5m, users_5m, unpromoted FROM clickstream.live_summary;
SELECT topic, partition, committed_offset, durable_offset FROM clickstream.status;
SELECT count(*) AS workers FROM clickstream.workers;
SELECT kind, status, rows_promoted, rows_rejected FROM clickstream.refresh_history;
SELECT count(*) FROM clickstream.quality_results;
SELECT day = clickstream.local_day(now()) AS today, stage, reason, messages FROM clickstream.dead_letters_daily;
SELECT clickstream.label(NULL, '(not set)'), clickstream.rate(1, 3), clickstream.week_of('2026-04-08');
-- nothing raw
\set VERBOSITY terse
SELECT count(*) FROM clickstream.bronze;
SELECT payload FROM clickstream.dead_letters;
SELECT reason FROM clickstream.dead_letters;
SELECT count(*) FROM clickstream.events;
SELECT count(*) FROM clickstream.events_20260406;
SELECT count(*) FROM clickstream.event_ids;
SELECT count(*) FROM clickstream.user_days;
SELECT count(*) FROM clickstream.ingest_positions;
-- no writes
INSERT INTO clickstream.daily_metrics (day) VALUES ('2026-01-01');
UPDATE clickstream.sessions SET events = 0;
DELETE FROM clickstream.orders;
TRUNCATE clickstream.products;
UPDATE clickstream.funnel_definition SET name = 'x';
INSERT INTO clickstream.quality_checks (name, layer, description, query) VALUES ('x', 'silver', 'x', 'SELECT 0');
CREATE TABLE clickstream.mine (x int);
-- nothing that changes state
CALL clickstream.refresh();
SELECT * FROM clickstream.replay_dead_letters();
SELECT clickstream.rebuild_gold();
SELECT * FROM clickstream.refresh_gold();
SELECT clickstream.schedule();
SELECT clickstream.unschedule();
SELECT count(*) FROM clickstream.check_quality();
SELECT clickstream.create_partitions(ARRAY['2030-01-01'::date]);
SELECT clickstream.prune_history();
SELECT count(*) FROM clickstream.verify_gold();
\set VERBOSITY default
\c - :superuser

-- Silver for analysts is a deliberate grant of one's own: through the parent
-- it covers every day partition, those created later included.
CREATE ROLE cs_analyst;
GRANT USAGE ON SCHEMA clickstream TO cs_analyst;
GRANT SELECT ON clickstream.events TO cs_analyst;
CALL clickstream.refresh();	-- promotes bob's event of today: a new partition
SET ROLE cs_analyst;
SELECT user_id, event_type FROM clickstream.events ORDER BY ts;
RESET ROLE;
DROP OWNED BY cs_analyst;
DROP ROLE cs_analyst;

-- The role and its members survive DROP EXTENSION; the grants come back.
DROP EXTENSION clickstream;
SELECT r.rolname, m.rolname AS member
FROM pg_auth_members am JOIN pg_roles r ON r.oid = am.roleid JOIN pg_roles m ON m.oid = am.member
WHERE r.rolname = 'clickstream_reader';
CREATE EXTENSION clickstream;
\c - cs_grafana
SELECT count(*) FROM clickstream.daily_metrics;
SELECT count(*) FROM clickstream.status;
\set VERBOSITY terse
SELECT count(*) FROM clickstream.bronze;
\set VERBOSITY default
\c - :superuser
DROP EXTENSION clickstream;
DROP ROLE cs_grafana;
DROP FUNCTION feed(int, bigint, text[]);
