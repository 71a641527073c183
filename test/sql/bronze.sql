-- Bronze layer: objects, documentation, dead-letter rules and status views.
CREATE EXTENSION clickstream;

-- the extension lives in its own schema and cannot be moved
SELECT extname, extrelocatable, nspname
FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
WHERE extname = 'clickstream';

-- bronze is UNLOGGED and so are the positions; watermarks and dead letters are logged
SELECT relname, relpersistence
FROM pg_class
WHERE relnamespace = 'clickstream'::regnamespace AND relkind IN ('r', 'v')
ORDER BY relname;

-- every object of the extension carries a comment
SELECT pg_describe_object(classid, objid, objsubid) AS undocumented
FROM pg_depend d
WHERE d.refclassid = 'pg_extension'::regclass
  AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'clickstream')
  AND d.deptype = 'e'
  AND obj_description(objid, (SELECT relname FROM pg_class WHERE oid = classid)::name) IS NULL
  AND classid <> 'pg_type'::regclass
ORDER BY 1;

-- so does every column of every table and view (Metabase shows them)
SELECT c.relname, a.attname
FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
WHERE c.relnamespace = 'clickstream'::regnamespace AND c.relkind IN ('r', 'p', 'v') AND NOT c.relispartition
  AND a.attnum > 0 AND NOT a.attisdropped
  AND col_description(c.oid, a.attnum) IS NULL
ORDER BY 1, 2;

-- bronze accepts any bytes, any key, no headers, a tombstone
INSERT INTO clickstream.bronze (kafka_topic, kafka_partition, kafka_offset, kafka_key, payload)
VALUES ('t', 0, 0, '\xff00'::bytea, '\xc328ff'::bytea),
       ('t', 0, 1, NULL, NULL);
SELECT kafka_offset, kafka_key, payload, header_keys IS NULL AS no_headers,
       ingested_at IS NOT NULL AS stamped
FROM clickstream.bronze ORDER BY kafka_offset;
TRUNCATE clickstream.bronze;

-- dead letters: one per message and stage, a re-read adds nothing
INSERT INTO clickstream.dead_letters (stage, reason, kafka_topic, kafka_partition, kafka_offset)
VALUES ('ingest', 'message_too_large', 't', 0, 5);
INSERT INTO clickstream.dead_letters (stage, reason, kafka_topic, kafka_partition, kafka_offset)
VALUES ('ingest', 'message_too_large', 't', 0, 5)
ON CONFLICT (kafka_topic, kafka_partition, kafka_offset, stage) DO NOTHING;
\set VERBOSITY terse
INSERT INTO clickstream.dead_letters (stage, reason) VALUES ('elsewhere', 'x');
\set VERBOSITY default
SELECT stage, reason, count(*) FROM clickstream.dead_letters GROUP BY 1, 2;
DELETE FROM clickstream.dead_letters;

-- status: a stored position without a running consumer still shows up (its
-- lag is unknown without a high watermark from the broker: NULL, not 0)
INSERT INTO clickstream.ingest_positions (topic, partition, next_offset) VALUES ('t', 3, 42);
INSERT INTO clickstream.watermarks (topic, partition, durable_offset) VALUES ('t', 3, 40);
SELECT topic, partition, committed_offset, durable_offset, lag, messages_per_sec
FROM clickstream.status;
DELETE FROM clickstream.ingest_positions;
DELETE FROM clickstream.watermarks;

-- one worker slot per clickstream.consumers (its state is tested by TAP)
SELECT count(*) AS workers FROM clickstream.workers;

-- settings: kafka_options is for superusers only, everything is documented
SELECT name, context, short_desc IS NOT NULL AS described
FROM pg_settings WHERE name LIKE 'clickstream.%' ORDER BY name;
CREATE ROLE cs_reader;
SET ROLE cs_reader;
SHOW clickstream.kafka_options;
SHOW clickstream.topic;
RESET ROLE;
DROP ROLE cs_reader;

-- a setting the extension does not define is refused (prefix is reserved)
SET clickstream.no_such_setting = 1;

DROP EXTENSION clickstream;
