-- Backup: what pg_dump saves of the extension (97_backup.sql), the rows the
-- extension ships in its configuration tables, and the day partitions.
-- test/t/007_dump_restore.pl dumps and restores a running pipeline.
CREATE EXTENSION clickstream;

-- every table and sequence of the extension that holds state is saved by
-- pg_dump: left out are only the UNLOGGED bronze and positions (crash
-- recovery empties them too) and the partitioned events, whose day
-- partitions are ordinary tables pg_dump saves whole
SELECT c.oid::regclass AS not_saved, c.relkind, c.relpersistence
FROM pg_depend d
JOIN pg_class c ON c.oid = d.objid
WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_extension'::regclass
  AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'clickstream')
  AND d.deptype = 'e' AND c.relkind IN ('r', 'p', 'S')
  AND c.oid <> ALL ((SELECT e.extconfig FROM pg_extension e WHERE e.extname = 'clickstream')::oid[])
ORDER BY c.oid::regclass::text;

-- the configuration tables are saved without the rows the extension ships
SELECT c.oid::regclass AS saved, x.cond
FROM pg_extension e, unnest(e.extconfig, e.extcondition) AS x(cfg, cond)
JOIN pg_class c ON c.oid = x.cfg
WHERE e.extname = 'clickstream' AND x.cond <> ''
ORDER BY c.oid::regclass::text;

-- a day partition has its own indexes and no index comes from events (the
-- restore would create those twice)
SELECT clickstream.create_partitions(ARRAY[date '2026-03-01']);
SELECT count(*) AS indexes_of_events FROM pg_index WHERE indrelid = 'clickstream.events'::regclass;
SELECT pg_get_indexdef(indexrelid) FROM pg_index
WHERE indrelid = 'clickstream.events_20260301'::regclass
ORDER BY 1;
SELECT obj_description('clickstream.events_20260301'::regclass, 'pg_class');

-- Shipped rows: an edited one is marked modified (and is dumped) ...
UPDATE clickstream.quality_checks SET enabled = false WHERE name = 'events_have_runs';
UPDATE clickstream.quality_checks SET builtin = false WHERE name = 'events_not_null';
SELECT name, enabled, builtin, modified FROM clickstream.quality_checks
WHERE name IN ('events_have_runs', 'events_not_null') ORDER BY name;
-- ... one inserted with the key of a shipped row replaces it, as a modified
-- shipped row (a restore of an edited row does that) ...
INSERT INTO clickstream.event_types (event_type, description) VALUES ('purchase', 'An order.');
INSERT INTO clickstream.event_types (event_type, description) VALUES ('signup', 'A new account.');
SELECT * FROM clickstream.event_types WHERE event_type IN ('purchase', 'signup') ORDER BY 1;
-- ... and a shipped one cannot be deleted or truncated (it would come back)
\set VERBOSITY terse
DELETE FROM clickstream.quality_checks WHERE name = 'events_not_null';
DELETE FROM clickstream.event_types WHERE event_type = 'page_view';
DELETE FROM clickstream.event_types WHERE event_type = 'purchase';
TRUNCATE clickstream.quality_checks;
\set VERBOSITY default
-- the user's own rows come and go as usual
INSERT INTO clickstream.event_types (event_type) VALUES ('gone');
DELETE FROM clickstream.event_types WHERE event_type = 'gone';
SELECT count(*) AS event_types, count(*) FILTER (WHERE builtin) AS shipped,
	   count(*) FILTER (WHERE modified) AS modified
FROM clickstream.event_types;

-- The funnel is one whole: any change makes every step the user's ...
SELECT step, name, builtin FROM clickstream.funnel_definition ORDER BY step;
DELETE FROM clickstream.funnel_definition WHERE step = 4;
SELECT step, name, builtin FROM clickstream.funnel_definition ORDER BY step;

-- Restoring a dump: CREATE EXTENSION makes the shipped rows, then the saved
-- rows are loaded.  Done here by hand with what pg_dump would save.
CREATE TEMP TABLE saved_checks AS SELECT * FROM clickstream.quality_checks WHERE NOT builtin OR modified;
CREATE TEMP TABLE saved_types AS SELECT * FROM clickstream.event_types WHERE NOT builtin OR modified;
CREATE TEMP TABLE saved_funnel AS SELECT * FROM clickstream.funnel_definition WHERE NOT builtin;
CREATE TEMP TABLE saved_gold AS SELECT * FROM clickstream.gold_state;
UPDATE saved_gold SET touch_id = 42;
CREATE TEMP TABLE before AS
SELECT 'check' AS what, q.name AS key, q.enabled::text AS value FROM clickstream.quality_checks q
UNION ALL SELECT 'type', t.event_type, t.description FROM clickstream.event_types t
UNION ALL SELECT 'step', f.step::text, f.name || '/' || f.event_type FROM clickstream.funnel_definition f
UNION ALL SELECT 'flags', 'checks', string_agg(q.name || ':' || q.builtin || q.modified, ',' ORDER BY q.name)
	FROM clickstream.quality_checks q
UNION ALL SELECT 'flags', 'types', string_agg(t.event_type || ':' || t.builtin || t.modified, ',' ORDER BY t.event_type)
	FROM clickstream.event_types t;
DROP EXTENSION clickstream;
CREATE EXTENSION clickstream;
INSERT INTO clickstream.quality_checks SELECT * FROM saved_checks;
INSERT INTO clickstream.event_types SELECT * FROM saved_types;
INSERT INTO clickstream.funnel_definition SELECT * FROM saved_funnel;
INSERT INTO clickstream.gold_state SELECT * FROM saved_gold;
CREATE TEMP TABLE after AS
SELECT 'check' AS what, q.name AS key, q.enabled::text AS value FROM clickstream.quality_checks q
UNION ALL SELECT 'type', t.event_type, t.description FROM clickstream.event_types t
UNION ALL SELECT 'step', f.step::text, f.name || '/' || f.event_type FROM clickstream.funnel_definition f
UNION ALL SELECT 'flags', 'checks', string_agg(q.name || ':' || q.builtin || q.modified, ',' ORDER BY q.name)
	FROM clickstream.quality_checks q
UNION ALL SELECT 'flags', 'types', string_agg(t.event_type || ':' || t.builtin || t.modified, ',' ORDER BY t.event_type)
	FROM clickstream.event_types t;
SELECT (SELECT count(*) FROM (TABLE before EXCEPT ALL TABLE after) a) AS lost,
	   (SELECT count(*) FROM (TABLE after EXCEPT ALL TABLE before) b) AS extra,
	   (SELECT count(*) FROM before) AS rows;
SELECT count(*) AS gold_state_rows, max(touch_id) AS touch_id FROM clickstream.gold_state;

-- a funnel of the user's replaces the shipped one whole, whatever step comes first
DROP EXTENSION clickstream;
CREATE EXTENSION clickstream;
BEGIN;
INSERT INTO clickstream.funnel_definition VALUES (3, 'buy', 'purchase'), (1, 'look', 'page_view'),
	(2, 'pay', 'begin_checkout');
COMMIT;
SELECT step, name, event_type, builtin FROM clickstream.funnel_definition ORDER BY step;
-- adding a step to the shipped funnel keeps it, as the user's
DROP EXTENSION clickstream;
CREATE EXTENSION clickstream;
INSERT INTO clickstream.funnel_definition VALUES (5, 'review', 'review');
SELECT step, name, builtin FROM clickstream.funnel_definition ORDER BY step;

DROP EXTENSION clickstream;
