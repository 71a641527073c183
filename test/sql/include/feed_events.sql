-- feed_events(part, evs): the payloads evs appended to clickstream.bronze as
-- the next offsets of partition part of the topic named by the setting
-- regress.topic, with the position and watermark the worker would have
-- written.  Shared by the regression tests that feed the refresh (\i).
CREATE FUNCTION feed_events(part int, evs text[]) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
	t text := current_setting('regress.topic');
	first bigint;
BEGIN
	SELECT coalesce(max(next_offset), 0) INTO first FROM clickstream.ingest_positions
	WHERE topic = t AND partition = part;
	INSERT INTO clickstream.bronze (kafka_topic, kafka_partition, kafka_offset, payload)
	SELECT t, part, first + o - 1, convert_to(p, 'UTF8')
	FROM unnest(evs) WITH ORDINALITY AS u(p, o);
	INSERT INTO clickstream.watermarks (topic, partition, durable_offset)
	VALUES (t, part, first) ON CONFLICT DO NOTHING;
	INSERT INTO clickstream.ingest_positions (topic, partition, next_offset)
	VALUES (t, part, first + cardinality(evs))
	ON CONFLICT (topic, partition) DO UPDATE SET next_offset = EXCLUDED.next_offset;
END $$;
