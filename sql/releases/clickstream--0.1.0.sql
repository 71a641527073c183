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
'Per partition, the next Kafka offset to consume: written in the same transaction as the bronze rows it covers, and UNLOGGED like bronze so that a crash forgets both together.';
COMMENT ON COLUMN clickstream.ingest_positions.topic IS 'Kafka topic.';
COMMENT ON COLUMN clickstream.ingest_positions.partition IS 'Kafka partition.';
COMMENT ON COLUMN clickstream.ingest_positions.next_offset IS 'Offset of the next message to consume; every offset below it is in bronze, in dead_letters, or below the watermark.';
COMMENT ON COLUMN clickstream.ingest_positions.updated_at IS 'Commit time of the batch that last moved this position.';

CREATE TABLE clickstream.watermarks (
	topic text NOT NULL,
	partition integer NOT NULL,
	durable_offset bigint NOT NULL,
	updated_at timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (topic, partition)
);

COMMENT ON TABLE clickstream.watermarks IS
'Per partition, the durable watermark: every message below durable_offset is durably processed (logged tables). The worker never resumes below it; after crash recovery empties bronze it resumes exactly from it. Created at the first batch of a partition; advanced only by the step that makes rows durable (silver), in the same transaction as those rows.';
COMMENT ON COLUMN clickstream.watermarks.topic IS 'Kafka topic.';
COMMENT ON COLUMN clickstream.watermarks.partition IS 'Kafka partition.';
COMMENT ON COLUMN clickstream.watermarks.durable_offset IS 'Every message below this offset is durably processed; resume never goes below it.';
COMMENT ON COLUMN clickstream.watermarks.updated_at IS 'Commit time of the transaction that last moved this watermark.';

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
	OUT last_error_at timestamptz)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'clickstream_worker_partitions'
LANGUAGE C STRICT VOLATILE PARALLEL RESTRICTED;

COMMENT ON FUNCTION clickstream.worker_partitions() IS
'One row per partition a consumer worker has been assigned since server start, from shared memory: position, high watermark, totals, rates over the last minute, last batch and last error.';

CREATE FUNCTION clickstream.worker_states(
	OUT consumer integer,
	OUT pid integer,
	OUT state text,
	OUT assigned_partitions integer,
	OUT batches bigint,
	OUT last_batch_at timestamptz,
	OUT last_error text,
	OUT last_error_at timestamptz,
	OUT started_at timestamptz)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'clickstream_worker_states'
LANGUAGE C STRICT VOLATILE PARALLEL RESTRICTED;

COMMENT ON FUNCTION clickstream.worker_states() IS
'One row per ingestion worker (clickstream.consumers of them), from shared memory: pid, state (starting, waiting_for_extension, disabled, connecting, consuming, broker_down, stopped), assignment size and last error.';

CREATE VIEW clickstream.workers AS
	SELECT * FROM clickstream.worker_states();

COMMENT ON VIEW clickstream.workers IS
'Ingestion workers: one row per consumer process with its state and last error.';
-- Silver: parsed, validated, deduplicated events, partitioned by day, and
-- the refresh that builds them from bronze.
--
-- clickstream.refresh() repeats one step until bronze is drained.  A step is
-- one transaction: it takes, per partition, the bronze rows between the
-- durable watermark and the stored position, deletes them from bronze,
-- parses them and writes valid new events to clickstream.events, rejected
-- ones to clickstream.dead_letters and what it touched to
-- clickstream.touched (all in C: clickstream.promote_rows, src/refresh.c and
-- src/writer.c), and moves the watermark to the position it read.  So the
-- watermark moves exactly with the rows it covers.

\echo Use "CREATE EXTENSION clickstream" to load this file. \quit

-- The parser ------------------------------------------------------------

CREATE TYPE clickstream.parsed_event AS (
	reason text,
	detail text,
	event_id text COLLATE "C",
	event_type text,
	user_id text COLLATE "C",
	ts timestamptz,
	event_date date,
	event_hour smallint,
	product_id text,
	category text,
	price numeric,
	quantity integer,
	order_id text,
	page_url text,
	referrer text,
	utm_source text,
	utm_medium text,
	utm_campaign text,
	device text,
	country text,
	is_high_value boolean,
	revenue numeric,
	attrs jsonb
);

COMMENT ON TYPE clickstream.parsed_event IS
'Result of clickstream.parse_event: either reason/detail (the payload is rejected, every other field NULL) or the typed event (reason NULL).';

CREATE FUNCTION clickstream.parse_event(payload bytea)
RETURNS clickstream.parsed_event
AS 'MODULE_PATHNAME', 'clickstream_parse_event'
LANGUAGE C STABLE PARALLEL SAFE;

COMMENT ON FUNCTION clickstream.parse_event(bytea) IS
'Parse and validate one event payload (see the README''s event format). Never raises an error for bad data: returns a rejection reason and detail instead. Depends on clickstream.timezone, clickstream.high_value_threshold, clickstream.max_clock_skew and the transaction start time.';

-- Accepted event types (a data-quality check, not a filter) ---------------

CREATE TABLE clickstream.event_types (
	event_type text PRIMARY KEY,
	description text NOT NULL DEFAULT '',
	builtin boolean NOT NULL DEFAULT false
);

COMMENT ON TABLE clickstream.event_types IS
'Event types the shop emits. Silver accepts any event_type; clickstream.check_quality() reports events whose type is not listed here. Add your own rows.';
COMMENT ON COLUMN clickstream.event_types.event_type IS 'Value of the event_type field.';
COMMENT ON COLUMN clickstream.event_types.description IS 'What the event means.';
COMMENT ON COLUMN clickstream.event_types.builtin IS 'True for the rows the extension ships (not dumped by pg_dump).';

INSERT INTO clickstream.event_types (event_type, description, builtin) VALUES
	('page_view', 'A page was displayed.', true),
	('add_to_cart', 'A product was added to the cart.', true),
	('remove_from_cart', 'A product was removed from the cart.', true),
	('begin_checkout', 'The checkout was started.', true),
	('purchase', 'An order was placed (carries order_id, price, quantity).', true);

SELECT pg_catalog.pg_extension_config_dump('clickstream.event_types', 'WHERE NOT builtin');

-- Silver tables -----------------------------------------------------------

CREATE TABLE clickstream.events (
	event_id text COLLATE "C" NOT NULL,
	event_type text NOT NULL,
	user_id text COLLATE "C" NOT NULL,
	ts timestamptz NOT NULL,
	event_date date NOT NULL,
	event_hour smallint NOT NULL,
	product_id text,
	category text,
	price numeric,
	quantity integer,
	order_id text,
	page_url text,
	referrer text,
	utm_source text,
	utm_medium text,
	utm_campaign text,
	device text,
	country text,
	is_high_value boolean NOT NULL,
	revenue numeric,
	attrs jsonb,
	kafka_topic text NOT NULL,
	kafka_partition integer NOT NULL,
	kafka_offset bigint NOT NULL,
	run_id bigint NOT NULL
) PARTITION BY RANGE (event_date);

CREATE INDEX events_user_ts ON clickstream.events (user_id, ts);

COMMENT ON TABLE clickstream.events IS
'Silver: one row per distinct event_id, typed and validated, partitioned by event_date (one partition per day, events_YYYYMMDD, created as needed). Built by clickstream.refresh().';
COMMENT ON COLUMN clickstream.events.event_id IS 'Unique event id (deduplicated through clickstream.event_ids: the first delivery wins). Identifiers use the C collation: byte order, fast, and the same on every server.';
COMMENT ON COLUMN clickstream.events.event_type IS 'page_view, add_to_cart, remove_from_cart, begin_checkout, purchase, or a type of your own.';
COMMENT ON COLUMN clickstream.events.user_id IS 'User the event belongs to (the Kafka key).';
COMMENT ON COLUMN clickstream.events.ts IS 'Event time from the payload (ISO-8601 with zone or epoch milliseconds), microsecond precision.';
COMMENT ON COLUMN clickstream.events.event_date IS 'Day of ts in clickstream.timezone; the partition key.';
COMMENT ON COLUMN clickstream.events.event_hour IS 'Hour of day (0-23) of ts in clickstream.timezone.';
COMMENT ON COLUMN clickstream.events.product_id IS 'Product, when the event is about one.';
COMMENT ON COLUMN clickstream.events.category IS 'Product category.';
COMMENT ON COLUMN clickstream.events.price IS 'Unit price (>= 0), exactly as sent.';
COMMENT ON COLUMN clickstream.events.quantity IS 'Quantity (>= 1).';
COMMENT ON COLUMN clickstream.events.order_id IS 'Order id; always present on purchases.';
COMMENT ON COLUMN clickstream.events.page_url IS 'URL of the page.';
COMMENT ON COLUMN clickstream.events.referrer IS 'Referring URL.';
COMMENT ON COLUMN clickstream.events.utm_source IS 'Campaign source.';
COMMENT ON COLUMN clickstream.events.utm_medium IS 'Campaign medium.';
COMMENT ON COLUMN clickstream.events.utm_campaign IS 'Campaign name.';
COMMENT ON COLUMN clickstream.events.device IS 'Device class (desktop, mobile, tablet, ...).';
COMMENT ON COLUMN clickstream.events.country IS 'Country code.';
COMMENT ON COLUMN clickstream.events.is_high_value IS 'price > clickstream.high_value_threshold at promotion time (false without a price).';
COMMENT ON COLUMN clickstream.events.revenue IS 'For purchases price x quantity (quantity 1 when absent; NULL without a price); 0 for other events.';
COMMENT ON COLUMN clickstream.events.attrs IS 'Every key of the payload that is not part of the event format; NULL when there is none.';
COMMENT ON COLUMN clickstream.events.kafka_topic IS 'Lineage: topic of the message.';
COMMENT ON COLUMN clickstream.events.kafka_partition IS 'Lineage: partition of the message.';
COMMENT ON COLUMN clickstream.events.kafka_offset IS 'Lineage: offset of the message.';
COMMENT ON COLUMN clickstream.events.run_id IS 'clickstream.refresh_history run that promoted the event.';

CREATE TABLE clickstream.event_ids (
	event_id text COLLATE "C" PRIMARY KEY,
	event_date date NOT NULL
);

COMMENT ON TABLE clickstream.event_ids IS
'Every event_id ever promoted to silver, with the day (partition) that holds it: the global deduplication index (a unique index on the partitioned table would have to include the day). Kept when old partitions are dropped, so late duplicates of dropped days stay out.';
COMMENT ON COLUMN clickstream.event_ids.event_id IS 'The event id.';
COMMENT ON COLUMN clickstream.event_ids.event_date IS 'event_date of the event, i.e. its partition of clickstream.events.';

CREATE TABLE clickstream.refresh_history (
	run_id bigserial PRIMARY KEY,
	kind text NOT NULL DEFAULT 'refresh' CHECK (kind IN ('refresh', 'replay')),
	started_at timestamptz NOT NULL DEFAULT clock_timestamp(),
	finished_at timestamptz,
	duration interval GENERATED ALWAYS AS (finished_at - started_at) STORED,
	status text NOT NULL DEFAULT 'running'
		CHECK (status IN ('running', 'succeeded', 'failed', 'interrupted')),
	steps integer NOT NULL DEFAULT 0,
	rows_read bigint NOT NULL DEFAULT 0,
	rows_promoted bigint NOT NULL DEFAULT 0,
	rows_duplicate bigint NOT NULL DEFAULT 0,
	rows_rejected bigint NOT NULL DEFAULT 0,
	partitions_created integer NOT NULL DEFAULT 0,
	sessions_written bigint NOT NULL DEFAULT 0,
	gold_time interval NOT NULL DEFAULT '0',
	error text,
	pid integer NOT NULL DEFAULT pg_backend_pid()
);

CREATE INDEX refresh_history_finished ON clickstream.refresh_history (finished_at);

COMMENT ON TABLE clickstream.refresh_history IS
'One row per clickstream.refresh() run (or dead-letter replay): when, how long, rows promoted, duplicates, rejected, and the error of a failed run. Kept for clickstream.history_retention.';
COMMENT ON SEQUENCE clickstream.refresh_history_run_id_seq IS 'Numbers refresh runs.';
COMMENT ON COLUMN clickstream.refresh_history.run_id IS 'Run number; clickstream.events.run_id and clickstream.touched.run_id refer to it.';
COMMENT ON COLUMN clickstream.refresh_history.kind IS 'refresh (clickstream.refresh) or replay (clickstream.replay_dead_letters).';
COMMENT ON COLUMN clickstream.refresh_history.started_at IS 'Start of the run.';
COMMENT ON COLUMN clickstream.refresh_history.finished_at IS 'End of the run; NULL while running or when the server stopped during it.';
COMMENT ON COLUMN clickstream.refresh_history.duration IS 'finished_at - started_at.';
COMMENT ON COLUMN clickstream.refresh_history.status IS 'running, succeeded, failed (see error; the failed step was rolled back), or interrupted (the server or session stopped during the run).';
COMMENT ON COLUMN clickstream.refresh_history.steps IS 'Committed steps (transactions); each promotes at most clickstream.refresh_batch_size rows.';
COMMENT ON COLUMN clickstream.refresh_history.rows_read IS 'Bronze rows taken (promoted + duplicate + rejected).';
COMMENT ON COLUMN clickstream.refresh_history.rows_promoted IS 'New events written to clickstream.events.';
COMMENT ON COLUMN clickstream.refresh_history.rows_duplicate IS 'Valid events whose event_id was already in silver (or earlier in the same step).';
COMMENT ON COLUMN clickstream.refresh_history.rows_rejected IS 'Rows sent to clickstream.dead_letters by validation.';
COMMENT ON COLUMN clickstream.refresh_history.partitions_created IS 'Daily partitions of clickstream.events created by the run.';
COMMENT ON COLUMN clickstream.refresh_history.sessions_written IS 'Sessions written to clickstream.sessions (recomputed or new).';
COMMENT ON COLUMN clickstream.refresh_history.gold_time IS 'Part of the duration spent bringing gold (clickstream.sessions) up to date, in the same transactions as the silver steps.';
COMMENT ON COLUMN clickstream.refresh_history.error IS 'Error of a failed run (message, detail and context).';
COMMENT ON COLUMN clickstream.refresh_history.pid IS 'Backend that ran it.';

CREATE TABLE clickstream.touched (
	touch_id bigserial PRIMARY KEY,
	run_id bigint NOT NULL,
	event_date date NOT NULL,
	user_id text COLLATE "C" NOT NULL,
	first_ts timestamptz NOT NULL,
	last_ts timestamptz NOT NULL,
	events integer NOT NULL
);

CREATE INDEX touched_run ON clickstream.touched (run_id);

COMMENT ON TABLE clickstream.touched IS
'What each refresh run changed in silver, for incremental gold: one row per (run step, day, user) with the time range and number of new events. Late events show up under their own day. Kept for clickstream.history_retention.';
COMMENT ON COLUMN clickstream.touched.touch_id IS 'Order of the rows: gold applies the rows above its watermark (clickstream.gold_state.touch_id).';
COMMENT ON SEQUENCE clickstream.touched_touch_id_seq IS 'Numbers clickstream.touched rows.';
COMMENT ON COLUMN clickstream.touched.run_id IS 'clickstream.refresh_history run.';
COMMENT ON COLUMN clickstream.touched.event_date IS 'Day (clickstream.timezone) of the new events.';
COMMENT ON COLUMN clickstream.touched.user_id IS 'User of the new events.';
COMMENT ON COLUMN clickstream.touched.first_ts IS 'Earliest ts among them.';
COMMENT ON COLUMN clickstream.touched.last_ts IS 'Latest ts among them.';
COMMENT ON COLUMN clickstream.touched.events IS 'How many new events.';

CREATE FUNCTION clickstream.touched_days(since_run bigint DEFAULT 0)
RETURNS TABLE (event_date date, users bigint, events bigint)
LANGUAGE sql STABLE
AS $$
	SELECT t.event_date, count(DISTINCT t.user_id), sum(t.events)
	FROM clickstream.touched t
	WHERE t.run_id > since_run
	GROUP BY t.event_date
	ORDER BY t.event_date
$$;

COMMENT ON FUNCTION clickstream.touched_days(bigint) IS
'Days that received new silver events in runs after since_run, with the number of users and events: what a daily gold table must recompute.';

-- Daily partitions ----------------------------------------------------------

CREATE FUNCTION clickstream.create_partitions(days date[])
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	d date;
	part text;
	created integer := 0;
BEGIN
	FOREACH d IN ARRAY days LOOP
		CONTINUE WHEN d IS NULL;
		IF d < date '0001-01-01' OR d > date '9999-12-31' THEN
			RAISE EXCEPTION 'no partition of clickstream.events for %: days must be in years 1 to 9999', d;
		END IF;
		part := 'events_' || to_char(d, 'YYYYMMDD');
		CONTINUE WHEN to_regclass(format('clickstream.%I', part)) IS NOT NULL;
		-- CREATE + ATTACH takes only SHARE UPDATE EXCLUSIVE on the parent
		-- (CREATE ... PARTITION OF would block readers of clickstream.events
		-- until the refresh commits); the range CHECK spares ATTACH its
		-- scan; ATTACH wants the CHECK constraints a user added to events.
		EXECUTE format('CREATE TABLE clickstream.%I (LIKE clickstream.events INCLUDING DEFAULTS INCLUDING CONSTRAINTS, '
					   'CONSTRAINT %I CHECK (event_date >= %L AND event_date < %L))',
					   part, part || '_range', d, d + 1);
		EXECUTE format('ALTER TABLE clickstream.events ATTACH PARTITION clickstream.%I '
					   'FOR VALUES FROM (%L) TO (%L)', part, d, d + 1);
		EXECUTE format('ALTER TABLE clickstream.%I DROP CONSTRAINT %I', part, part || '_range');
		EXECUTE format('COMMENT ON TABLE clickstream.%I IS %L', part,
					   format('Silver events of %s (clickstream.timezone).', d));
		created := created + 1;
	END LOOP;
	RETURN created;
END
$$;

COMMENT ON FUNCTION clickstream.create_partitions(date[]) IS
'Create the daily partitions events_YYYYMMDD of clickstream.events that do not exist yet; returns how many were created. refresh() calls it for today and tomorrow, and for every other day it is about to write, far past and future included.';

-- The refresh ---------------------------------------------------------------

-- Per-session scratch table of a step; emptied at every commit.
CREATE FUNCTION clickstream.refresh_scratch()
RETURNS void
LANGUAGE plpgsql
AS $$
BEGIN
	IF to_regclass('pg_temp.clickstream_limits') IS NULL THEN
		CREATE TEMP TABLE clickstream_limits (
			topic text NOT NULL,
			partition integer NOT NULL,
			lo bigint NOT NULL,
			hi bigint NOT NULL
		) ON COMMIT DELETE ROWS;
	END IF;
END
$$;

COMMENT ON FUNCTION clickstream.refresh_scratch() IS
'Internal: create the session''s temporary table clickstream_limits (the offset ranges of a refresh step; ON COMMIT DELETE ROWS).';

-- Promote the rows that a DELETE ... RETURNING statement takes out of their
-- source (bronze for refresh, dead_letters for replay), in C (src/refresh.c):
-- each row is parsed as it comes; rejected ones go to dead_letters; per
-- event_id the first delivery (Kafka timestamp, then partition and offset)
-- is kept unless event_ids has the id already; the days' partitions are
-- created; event_ids (sorted by id), events (sorted by user and time: index
-- locality, and silver clustered by user) and touched are written by COPY.
CREATE FUNCTION clickstream.promote_rows(run bigint, source text,
	only_reason text DEFAULT NULL, since timestamptz DEFAULT NULL, ids bigint[] DEFAULT NULL,
	isolate boolean DEFAULT false, failed boolean DEFAULT false,
	OUT rows_read bigint, OUT rows_promoted bigint, OUT rows_duplicate bigint,
	OUT rows_rejected bigint, OUT partitions_created integer)
AS 'MODULE_PATHNAME', 'clickstream_promote_rows'
LANGUAGE C VOLATILE;

COMMENT ON FUNCTION clickstream.promote_rows(bigint, text, text, timestamptz, bigint[], boolean, boolean) IS
'Internal: promote the rows returned by source, a DELETE ... RETURNING kafka_topic, kafka_partition, kafka_offset, kafka_timestamp, kafka_key, payload ($1..$3 are only_reason, since, ids): parse, dead-letter the rejected, deduplicate, create the days'' partitions, write event_ids, events and touched under run. A row-level error of the write is raised, unless isolate: then every payload is kept and rows are written by halves in subtransactions until the refused ones are alone, which go to dead_letters as rejected_by_silver. failed: the whole write is known to fail (start with the halves).';

CREATE FUNCTION clickstream.refresh_step(run bigint, max_rows bigint,
	OUT rows_read bigint, OUT rows_promoted bigint, OUT rows_duplicate bigint,
	OUT rows_rejected bigint, OUT partitions_created integer, OUT more boolean)
LANGUAGE plpgsql
AS $$
DECLARE
	backlog numeric;
	isolate boolean := false;
	source text := $src$
			DELETE FROM clickstream.bronze b
			USING pg_temp.clickstream_limits l
			WHERE b.kafka_topic = l.topic AND b.kafka_partition = l.partition
				AND b.kafka_offset < l.hi
			RETURNING b.kafka_topic, b.kafka_partition, b.kafka_offset, b.kafka_timestamp,
					  b.kafka_key, b.payload
		$src$;
BEGIN
	PERFORM clickstream.refresh_scratch();
	DELETE FROM pg_temp.clickstream_limits;

	-- Per partition, the rows between the watermark and the stored
	-- position.  Every row below a stored position is committed, so later
	-- statements see all of them whatever the worker does meanwhile.
	INSERT INTO pg_temp.clickstream_limits (topic, partition, lo, hi)
	SELECT p.topic, p.partition, coalesce(w.durable_offset, 0), p.next_offset
	FROM clickstream.ingest_positions p
	LEFT JOIN clickstream.watermarks w USING (topic, partition)
	WHERE p.next_offset > coalesce(w.durable_offset, 0);

	ANALYZE pg_temp.clickstream_limits;	-- a hash join with bronze, not a sort of it
	SELECT coalesce(sum(l.hi - l.lo), 0) INTO backlog FROM pg_temp.clickstream_limits l;
	more := backlog > max_rows;
	IF more THEN
		-- take the same share of every partition's backlog
		UPDATE pg_temp.clickstream_limits l
		SET hi = l.lo + ceil((l.hi - l.lo) * max_rows / backlog)::bigint;
	END IF;

	BEGIN
		SELECT p.rows_read, p.rows_promoted, p.rows_duplicate, p.rows_rejected, p.partitions_created
		INTO rows_read, rows_promoted, rows_duplicate, rows_rejected, partitions_created
		FROM clickstream.promote_rows(run, source) p;
	EXCEPTION WHEN data_exception OR integrity_constraint_violation OR program_limit_exceeded
			OR plpgsql_error THEN
		isolate := true;	-- a row the write refuses; everything above is undone
	END;
	IF isolate THEN
		-- again, keeping every payload, and find the refused rows
		SELECT p.rows_read, p.rows_promoted, p.rows_duplicate, p.rows_rejected, p.partitions_created
		INTO rows_read, rows_promoted, rows_duplicate, rows_rejected, partitions_created
		FROM clickstream.promote_rows(run, source, isolate => true, failed => true) p;
	END IF;

	-- Last, so that the row locks are held only for the commit.
	INSERT INTO clickstream.watermarks AS w (topic, partition, durable_offset)
	SELECT l.topic, l.partition, l.hi FROM pg_temp.clickstream_limits l
	ON CONFLICT (topic, partition) DO UPDATE
	SET durable_offset = EXCLUDED.durable_offset, updated_at = now()
	WHERE w.durable_offset < EXCLUDED.durable_offset;
END
$$;

COMMENT ON FUNCTION clickstream.refresh_step(bigint, bigint) IS
'Internal: one refresh step (run inside clickstream.refresh): move at most max_rows bronze rows below the stored positions to silver or dead_letters and advance the watermarks to match, in the caller''s transaction.';

CREATE PROCEDURE clickstream.refresh(max_steps integer DEFAULT NULL)
LANGUAGE plpgsql
AS $$
DECLARE
	run bigint;
	step record;
	steps integer := 0;
	failed boolean := false;
	more boolean := true;
	msg text;
	det text;
	ctx text;
	code text;
	holder integer;
	batch bigint := current_setting('clickstream.refresh_batch_size')::bigint;
	today date;
	gold record;
	gold_started timestamptz;
BEGIN
	IF max_steps IS NOT NULL AND max_steps < 1 THEN
		RAISE EXCEPTION 'max_steps must be at least 1, not %', max_steps;
	END IF;
	-- Fails at once inside a transaction block, before anything is locked.
	COMMIT;
	IF NOT pg_try_advisory_lock(hashtext('clickstream.refresh'), 0) THEN
		SELECT l.pid INTO holder FROM pg_locks l
		WHERE l.locktype = 'advisory' AND l.granted AND l.database = (
				SELECT oid FROM pg_database WHERE datname = current_database())
			AND l.classid::bigint = (hashtext('clickstream.refresh')::bigint & 4294967295)
			AND l.objid = 0 AND l.objsubid = 2
		LIMIT 1;
		RAISE NOTICE 'clickstream.refresh() is already running (pid %), skipping this call', holder;
		RETURN;
	END IF;

	BEGIN
		-- Holding the lock, no other run can be in progress.
		UPDATE clickstream.refresh_history
		SET status = 'interrupted', finished_at = clock_timestamp()
		WHERE status = 'running';
		INSERT INTO clickstream.refresh_history (kind) VALUES ('refresh') RETURNING run_id INTO run;
		-- today's and tomorrow's partitions exist before their events arrive
		today := (now() AT TIME ZONE current_setting('clickstream.timezone'))::date;
		PERFORM clickstream.create_partitions(ARRAY[today, today + 1]);
	EXCEPTION WHEN OTHERS THEN
		PERFORM pg_advisory_unlock(hashtext('clickstream.refresh'), 0);
		RAISE;
	END;
	COMMIT;

	WHILE more AND NOT failed LOOP
		-- a silver step and gold brought up to date with it: one transaction
		BEGIN
			step := clickstream.refresh_step(run, batch);
			gold_started := clock_timestamp();
			gold := clickstream.refresh_sessions();
			steps := steps + 1;
			more := step.more AND steps < coalesce(max_steps, steps + 1);
			UPDATE clickstream.refresh_history h
			SET steps = h.steps + 1,
				rows_read = h.rows_read + step.rows_read,
				rows_promoted = h.rows_promoted + step.rows_promoted,
				rows_duplicate = h.rows_duplicate + step.rows_duplicate,
				rows_rejected = h.rows_rejected + step.rows_rejected,
				partitions_created = h.partitions_created + step.partitions_created,
				sessions_written = h.sessions_written + gold.sessions_written,
				gold_time = h.gold_time + (clock_timestamp() - gold_started)
			WHERE h.run_id = run;
		EXCEPTION WHEN OTHERS OR query_canceled THEN
			-- a cancel or statement_timeout too: record it and let go of the
			-- lock before re-raising
			GET STACKED DIAGNOSTICS msg = MESSAGE_TEXT, det = PG_EXCEPTION_DETAIL,
				ctx = PG_EXCEPTION_CONTEXT, code = RETURNED_SQLSTATE;
			failed := true;
			UPDATE clickstream.refresh_history
			SET status = 'failed', finished_at = clock_timestamp(),
				error = msg || coalesce(E'\nDETAIL: ' || nullif(det, ''), '') ||
					coalesce(E'\nCONTEXT: ' || nullif(ctx, ''), '')
			WHERE run_id = run;
		END;
		COMMIT;
	END LOOP;

	IF NOT failed THEN
		UPDATE clickstream.refresh_history
		SET status = 'succeeded', finished_at = clock_timestamp()
		WHERE run_id = run;
		PERFORM clickstream.prune_history();
		COMMIT;
	END IF;
	PERFORM pg_advisory_unlock(hashtext('clickstream.refresh'), 0);
	IF failed THEN
		RAISE EXCEPTION 'clickstream.refresh() run % failed: %', run, msg
			USING ERRCODE = code,
				  HINT = 'The failed step was rolled back and its rows stay in bronze; the next run retries them. See clickstream.refresh_history.';
	END IF;
END
$$;

COMMENT ON PROCEDURE clickstream.refresh(integer) IS
'Build silver from bronze and gold from silver: repeat steps of at most clickstream.refresh_batch_size rows, each one transaction that also brings clickstream.sessions up to date, until bronze is drained or max_steps is reached. Only one runs at a time (the second returns at once with a NOTICE). A failing step is rolled back, recorded in refresh_history and re-raised; its rows are retried by the next run. Must be called outside a transaction block (it commits).';

CREATE FUNCTION clickstream.prune_history()
RETURNS void
LANGUAGE plpgsql
AS $$
DECLARE
	horizon timestamptz := now() - current_setting('clickstream.history_retention')::interval;
	oldest_kept bigint;
BEGIN
	SELECT min(run_id) INTO oldest_kept FROM clickstream.refresh_history
	WHERE finished_at IS NULL OR finished_at >= horizon;
	-- never the rows gold has not applied yet
	DELETE FROM clickstream.touched WHERE run_id < coalesce(oldest_kept,
		(SELECT max(run_id) + 1 FROM clickstream.refresh_history))
		AND touch_id <= (SELECT g.touch_id FROM clickstream.gold_state g);
	DELETE FROM clickstream.refresh_history WHERE finished_at < horizon;
	DELETE FROM clickstream.quality_results WHERE checked_at < horizon;
END
$$;

COMMENT ON FUNCTION clickstream.prune_history() IS
'Internal: delete refresh_history, touched and quality_results rows older than clickstream.history_retention (called by refresh).';

-- Replaying dead letters ----------------------------------------------------

CREATE FUNCTION clickstream.replay_dead_letters(only_reason text DEFAULT NULL,
	since timestamptz DEFAULT NULL, ids bigint[] DEFAULT NULL,
	OUT run_id bigint, OUT replayed bigint, OUT promoted bigint,
	OUT duplicates bigint, OUT still_rejected bigint)
LANGUAGE plpgsql
AS $$
DECLARE
	r record;
BEGIN
	-- never alongside a refresh: wait for it
	PERFORM pg_advisory_xact_lock(hashtext('clickstream.refresh'), 0);
	INSERT INTO clickstream.refresh_history (kind) VALUES ('replay')
	RETURNING refresh_history.run_id INTO run_id;

	SELECT * INTO r FROM clickstream.promote_rows(run_id, $src$
			DELETE FROM clickstream.dead_letters d
			WHERE d.payload IS NOT NULL AND NOT d.payload_truncated
				AND d.kafka_topic IS NOT NULL AND d.kafka_partition IS NOT NULL
				AND d.kafka_offset IS NOT NULL
				AND d.reason NOT IN ('message_too_large', 'offsets_skipped')
				AND ($1 IS NULL OR d.reason = $1)
				AND ($2 IS NULL OR d.created_at >= $2)
				AND ($3 IS NULL OR d.id = ANY ($3))
			RETURNING d.kafka_topic, d.kafka_partition, d.kafka_offset, d.kafka_timestamp,
					  d.kafka_key, d.payload
		$src$, only_reason, since, ids, isolate => true);
	replayed := r.rows_read;
	-- gold follows in the same transaction
	PERFORM clickstream.refresh_sessions();
	promoted := r.rows_promoted;
	duplicates := r.rows_duplicate;
	still_rejected := r.rows_rejected;
	UPDATE clickstream.refresh_history h
	SET status = 'succeeded', finished_at = clock_timestamp(), steps = 1,
		rows_read = replayed, rows_promoted = promoted, rows_duplicate = duplicates,
		rows_rejected = still_rejected, partitions_created = r.partitions_created
	WHERE h.run_id = replay_dead_letters.run_id;
END
$$;

COMMENT ON FUNCTION clickstream.replay_dead_letters(text, timestamptz, bigint[]) IS
'Run dead letters (optionally only one reason, only those created since a time, or only the given ids) through the silver parser again, after a fix of the payloads (UPDATE dead_letters SET payload = ...) or of a setting: valid ones are promoted (deduplicated), the rest go back to dead_letters with their new reason. Truncated and skipped-offset rows cannot be replayed. Recorded in refresh_history as kind replay.';

-- Internal functions are not for direct use.
REVOKE ALL ON FUNCTION clickstream.promote_rows(bigint, text, text, timestamptz, bigint[], boolean, boolean) FROM PUBLIC;
REVOKE ALL ON FUNCTION clickstream.refresh_step(bigint, bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION clickstream.refresh_scratch() FROM PUBLIC;

-- Scheduling with pg_cron -----------------------------------------------------

CREATE FUNCTION clickstream.schedule(every interval DEFAULT '1 minute')
RETURNS bigint
LANGUAGE plpgsql
AS $$
DECLARE
	exact numeric := extract(epoch FROM every) / 60;
	minutes integer;
	spec text;
	job bigint;
BEGIN
	IF to_regnamespace('cron') IS NULL THEN
		RAISE EXCEPTION 'pg_cron is not installed in database %', current_database()
			USING HINT = 'Install postgresql-15-cron, add pg_cron to shared_preload_libraries, set cron.database_name to this database, restart, and run CREATE EXTENSION pg_cron here.';
	END IF;
	IF exact < 1 OR exact <> trunc(exact) OR exact > 1440 THEN
		RAISE EXCEPTION 'cannot schedule clickstream.refresh() every %', every
			USING HINT = 'pg_cron 1.4 schedules by the minute: use a whole number of minutes (1 minute is the default and the shortest), at most 1 day.';
	END IF;
	minutes := exact::integer;
	IF minutes = 1 THEN
		spec := '* * * * *';
	ELSIF minutes < 60 AND 60 % minutes = 0 THEN
		spec := format('*/%s * * * *', minutes);
	ELSIF minutes % 60 = 0 AND minutes < 1440 AND 24 % (minutes / 60) = 0 THEN
		spec := format('0 */%s * * *', minutes / 60);
	ELSIF minutes = 1440 THEN
		spec := '0 0 * * *';
	ELSE
		RAISE EXCEPTION 'cannot schedule clickstream.refresh() every %', every
			USING HINT = 'Use a divisor of an hour (1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30 minutes), of a day (1, 2, 3, 4, 6, 8, 12 hours), or 1 day; or call cron.schedule yourself.';
	END IF;
	-- a named job: scheduling again updates it instead of adding one
	EXECUTE 'SELECT cron.schedule($1, $2, $3)'
	INTO job USING 'clickstream-refresh', spec, 'CALL clickstream.refresh()';
	RETURN job;
END
$$;

COMMENT ON FUNCTION clickstream.schedule(interval) IS
'Register CALL clickstream.refresh() with pg_cron as job clickstream-refresh, every given interval (default and minimum 1 minute: pg_cron 1.4 schedules by the minute). Idempotent: calling it again updates the one job. Returns the cron job id.';

CREATE FUNCTION clickstream.unschedule()
RETURNS boolean
LANGUAGE plpgsql
AS $$
DECLARE
	found_job boolean;
BEGIN
	IF to_regnamespace('cron') IS NULL THEN
		RETURN false;
	END IF;
	EXECUTE 'SELECT EXISTS (SELECT 1 FROM cron.job WHERE jobname = $1 AND username = current_user)'
	INTO found_job USING 'clickstream-refresh';
	IF found_job THEN
		EXECUTE 'SELECT cron.unschedule($1)' USING 'clickstream-refresh';
	END IF;
	RETURN found_job;
END
$$;

COMMENT ON FUNCTION clickstream.unschedule() IS
'Remove the pg_cron job clickstream-refresh; returns false when there was none.';
-- Data quality: declared checks over silver (and gold as it comes) and the
-- history of their results; what dbt tests did in the old stacks.

\echo Use "CREATE EXTENSION clickstream" to load this file. \quit

CREATE TABLE clickstream.quality_checks (
	name text PRIMARY KEY,
	layer text NOT NULL CHECK (layer IN ('bronze', 'silver', 'gold', 'pipeline')),
	severity text NOT NULL DEFAULT 'error' CHECK (severity IN ('error', 'warning')),
	description text NOT NULL,
	query text NOT NULL,
	enabled boolean NOT NULL DEFAULT true,
	builtin boolean NOT NULL DEFAULT false
);

COMMENT ON TABLE clickstream.quality_checks IS
'Declared data-quality checks run by clickstream.check_quality(). query returns one number, the count of failing rows; $1 is the since date passed to check_quality (NULL: all days), for checks that can be restricted by event_date. Add your own rows.';
COMMENT ON COLUMN clickstream.quality_checks.name IS 'Check name.';
COMMENT ON COLUMN clickstream.quality_checks.layer IS 'Layer checked: bronze, silver, gold or pipeline (offsets and bookkeeping).';
COMMENT ON COLUMN clickstream.quality_checks.severity IS 'error or warning; both are recorded, check_quality() raises a WARNING for failed error checks.';
COMMENT ON COLUMN clickstream.quality_checks.description IS 'What a failure means.';
COMMENT ON COLUMN clickstream.quality_checks.query IS 'SQL returning the number of failing rows (0 = pass); $1 is the since date (may be NULL).';
COMMENT ON COLUMN clickstream.quality_checks.enabled IS 'false skips the check.';
COMMENT ON COLUMN clickstream.quality_checks.builtin IS 'True for the checks the extension ships (not dumped by pg_dump).';

INSERT INTO clickstream.quality_checks (name, layer, severity, description, query, builtin) VALUES
('events_not_null', 'silver', 'error',
 'Required silver columns are never NULL.',
 $q$SELECT count(*) FROM clickstream.events
    WHERE ($1::date IS NULL OR event_date >= $1::date)
      AND (event_id IS NULL OR event_type IS NULL OR user_id IS NULL OR ts IS NULL
           OR event_date IS NULL OR event_hour IS NULL OR is_high_value IS NULL
           OR event_id = '' OR event_type = '' OR user_id = '')$q$, true),
('events_unique_event_id', 'silver', 'error',
 'No event_id appears twice in silver.',
 $q$SELECT count(*) FROM (SELECT event_id FROM clickstream.events
    WHERE ($1::date IS NULL OR event_date >= $1::date)
    GROUP BY event_id HAVING count(*) > 1) d$q$, true),
('events_accepted_event_types', 'silver', 'warning',
 'Every event_type is listed in clickstream.event_types.',
 $q$SELECT count(*) FROM clickstream.events e
    WHERE ($1::date IS NULL OR e.event_date >= $1::date)
      AND NOT EXISTS (SELECT 1 FROM clickstream.event_types t WHERE t.event_type = e.event_type)$q$, true),
('purchases_have_order_and_price', 'silver', 'error',
 'Every purchase has an order_id and a price.',
 $q$SELECT count(*) FROM clickstream.events
    WHERE ($1::date IS NULL OR event_date >= $1::date)
      AND event_type = 'purchase' AND (order_id IS NULL OR order_id = '' OR price IS NULL)$q$, true),
('events_valid_values', 'silver', 'error',
 'Prices are not negative, quantities are at least 1, revenue is price x quantity on purchases and 0 elsewhere.',
 $q$SELECT count(*) FROM clickstream.events
    WHERE ($1::date IS NULL OR event_date >= $1::date)
      AND (price < 0 OR quantity < 1
           OR (event_type = 'purchase' AND revenue IS DISTINCT FROM price * coalesce(quantity, 1))
           OR (event_type <> 'purchase' AND revenue IS DISTINCT FROM 0))$q$, true),
('events_date_matches_timezone', 'silver', 'warning',
 'event_date and event_hour agree with ts in the current clickstream.timezone (a failure means the setting changed since those rows were promoted).',
 $q$SELECT count(*) FROM clickstream.events
    WHERE ($1::date IS NULL OR event_date >= $1::date)
      AND ((ts AT TIME ZONE current_setting('clickstream.timezone'))::date <> event_date
           OR extract(hour FROM ts AT TIME ZONE current_setting('clickstream.timezone')) <> event_hour)$q$, true),
('event_ids_match_events', 'silver', 'error',
 'clickstream.event_ids and clickstream.events hold the same event ids on the same days.',
 $q$SELECT (SELECT count(*) FROM clickstream.event_ids i
            WHERE ($1::date IS NULL OR i.event_date >= $1::date)
              AND NOT EXISTS (SELECT 1 FROM clickstream.events e
                              WHERE e.event_date = i.event_date AND e.event_id = i.event_id))
         + (SELECT count(*) FROM clickstream.events e
            WHERE ($1::date IS NULL OR e.event_date >= $1::date)
              AND NOT EXISTS (SELECT 1 FROM clickstream.event_ids i
                              WHERE i.event_id = e.event_id AND i.event_date = e.event_date))$q$, true),
('events_have_runs', 'pipeline', 'warning',
 'Every touched row refers to a refresh run that exists (runs are pruned after clickstream.history_retention).',
 $q$SELECT count(*) FROM clickstream.touched t
    WHERE NOT EXISTS (SELECT 1 FROM clickstream.refresh_history h WHERE h.run_id = t.run_id)$q$, true),
('watermark_not_ahead_of_position', 'pipeline', 'error',
 'The durable watermark of a partition is never ahead of its stored ingest position.',
 $q$SELECT count(*) FROM clickstream.watermarks w
    JOIN clickstream.ingest_positions p USING (topic, partition)
    WHERE w.durable_offset > p.next_offset$q$, true),
('bronze_below_watermark', 'bronze', 'error',
 'Bronze holds no message below the durable watermark (those are in silver or dead_letters already).',
 $q$SELECT count(*) FROM clickstream.bronze b
    JOIN clickstream.watermarks w ON w.topic = b.kafka_topic AND w.partition = b.kafka_partition
    WHERE b.kafka_offset < w.durable_offset$q$, true);

SELECT pg_catalog.pg_extension_config_dump('clickstream.quality_checks', 'WHERE NOT builtin');

CREATE TABLE clickstream.quality_results (
	id bigserial PRIMARY KEY,
	checked_at timestamptz NOT NULL DEFAULT now(),
	check_name text NOT NULL,
	layer text NOT NULL,
	severity text NOT NULL,
	failures bigint,
	passed boolean NOT NULL,
	since date,
	duration interval NOT NULL,
	error text
);

CREATE INDEX quality_results_checked ON clickstream.quality_results (checked_at);

COMMENT ON TABLE clickstream.quality_results IS
'History of clickstream.check_quality() results: one row per check per call. Kept for clickstream.history_retention.';
COMMENT ON SEQUENCE clickstream.quality_results_id_seq IS 'Numbers quality results.';
COMMENT ON COLUMN clickstream.quality_results.id IS 'Result number.';
COMMENT ON COLUMN clickstream.quality_results.checked_at IS 'Start of the check_quality() call (the same for every check of one call).';
COMMENT ON COLUMN clickstream.quality_results.check_name IS 'clickstream.quality_checks.name.';
COMMENT ON COLUMN clickstream.quality_results.layer IS 'Layer of the check.';
COMMENT ON COLUMN clickstream.quality_results.severity IS 'Severity of the check.';
COMMENT ON COLUMN clickstream.quality_results.failures IS 'Failing rows; NULL when the check itself failed (see error).';
COMMENT ON COLUMN clickstream.quality_results.passed IS 'failures = 0.';
COMMENT ON COLUMN clickstream.quality_results.since IS 'The since date the checks were restricted to (NULL: all days).';
COMMENT ON COLUMN clickstream.quality_results.duration IS 'How long the check ran.';
COMMENT ON COLUMN clickstream.quality_results.error IS 'Error raised by the check query, if any.';

CREATE FUNCTION clickstream.check_quality(since date DEFAULT NULL)
RETURNS SETOF clickstream.quality_results
LANGUAGE plpgsql
AS $$
DECLARE
	c record;
	n bigint;
	err text;
	started timestamptz;
	res clickstream.quality_results;
BEGIN
	FOR c IN SELECT * FROM clickstream.quality_checks WHERE enabled ORDER BY layer, name LOOP
		started := clock_timestamp();
		n := NULL;
		err := NULL;
		BEGIN
			EXECUTE c.query INTO n USING since;
		EXCEPTION WHEN OTHERS THEN
			GET STACKED DIAGNOSTICS err = MESSAGE_TEXT;
		END;
		INSERT INTO clickstream.quality_results
			(check_name, layer, severity, failures, passed, since, duration, error)
		VALUES (c.name, c.layer, c.severity, n, err IS NULL AND coalesce(n, 0) = 0, since,
				clock_timestamp() - started, err)
		RETURNING * INTO res;
		IF NOT res.passed AND c.severity = 'error' THEN
			RAISE WARNING 'clickstream quality check % failed: %', c.name,
				coalesce(err, n || ' failing rows')
				USING HINT = c.description;
		END IF;
		RETURN NEXT res;
	END LOOP;
END
$$;

COMMENT ON FUNCTION clickstream.check_quality(date) IS
'Run every enabled check of clickstream.quality_checks (restricted to event_date >= since where the check allows it), record each result in clickstream.quality_results and return them; a failed error-severity check also raises a WARNING.';
-- Gold: sessions.  clickstream.sessionize() (C) assigns events to sessions;
-- clickstream.sessions holds one row per session of silver and is kept equal
-- to a full recomputation by clickstream.refresh(), incrementally.
--
-- In every silver step's transaction, refresh_sessions() reads the touched
-- rows above the gold watermark (gold_state.touch_id): per user, the range of
-- new event times.  It recomputes that user's sessions from the latest session that
-- starts before the first new event (its start stays a start: nothing before
-- it changed) up to the first later session that starts after a gap longer
-- than the timeout (or after midnight with that option) even counting the new
-- events: from there on nothing can change.  Those sessions are replaced by
-- the recomputed ones, and the watermark moves, in one transaction.

\echo Use "CREATE EXTENSION clickstream" to load this file. \quit

-- sessionize ------------------------------------------------------------------

CREATE FUNCTION clickstream.sessionize(
	events text,
	timeout interval DEFAULT current_setting('clickstream.session_timeout')::interval,
	max_duration interval DEFAULT current_setting('clickstream.session_max_duration')::interval,
	split_at_midnight boolean DEFAULT current_setting('clickstream.session_split_at_midnight')::boolean,
	split_on_campaign boolean DEFAULT current_setting('clickstream.session_split_on_campaign')::boolean)
RETURNS TABLE (user_id text, event_id text, ts timestamptz, session_id uuid,
	session_index integer, session_start timestamptz, session_end timestamptz,
	event_index bigint, session_events bigint)
AS 'MODULE_PATHNAME', 'clickstream_sessionize'
LANGUAGE C VOLATILE ROWS 100000;

COMMENT ON FUNCTION clickstream.sessionize(text, interval, interval, boolean, boolean) IS
'Assign every row of the events query to a session of its user, without sorting all rows: the query must return columns named user_id and ts (timestamptz); event_id (tie-break and join key), utm_source and utm_campaign are used when present; other columns are ignored. Per user, in (ts, event_id) order, a new session starts after a gap longer than timeout, when an event is more than max_duration after the session''s first event, optionally at midnight in clickstream.timezone and when an event carries another campaign than the session''s first event. Rows with a NULL user_id or ts come back with NULL session columns. Memory follows work_mem (batches spill to temporary files). Defaults come from the clickstream.session_* settings.';

CREATE FUNCTION clickstream.sessions_of(
	events text,
	timeout interval DEFAULT current_setting('clickstream.session_timeout')::interval,
	max_duration interval DEFAULT current_setting('clickstream.session_max_duration')::interval,
	split_at_midnight boolean DEFAULT current_setting('clickstream.session_split_at_midnight')::boolean,
	split_on_campaign boolean DEFAULT current_setting('clickstream.session_split_on_campaign')::boolean)
RETURNS TABLE (user_id text, session_id uuid, session_index integer,
	session_start timestamptz, session_end timestamptz, events bigint,
	first_event_id text, last_event_id text)
AS 'MODULE_PATHNAME', 'clickstream_sessions_of'
LANGUAGE C VOLATILE ROWS 20000;

COMMENT ON FUNCTION clickstream.sessions_of(text, interval, interval, boolean, boolean) IS
'The sessions of the events query, one row per session (user, id, number, start, end, events, first and last event_id): the same sessions as clickstream.sessionize() with the same arguments. Rows with a NULL user_id or ts belong to no session and are only counted in a NOTICE.';

-- The sessions table ------------------------------------------------------------

CREATE TABLE clickstream.sessions (
	session_id uuid PRIMARY KEY,
	user_id text COLLATE "C" NOT NULL,
	session_start timestamptz NOT NULL,
	session_end timestamptz NOT NULL,
	duration interval GENERATED ALWAYS AS (session_end - session_start) STORED,
	session_date date NOT NULL,
	first_event_id text COLLATE "C" NOT NULL,
	last_event_id text COLLATE "C" NOT NULL,
	events integer NOT NULL,
	page_views integer NOT NULL,
	add_to_carts integer NOT NULL,
	checkouts integer NOT NULL,
	purchases integer NOT NULL,
	revenue numeric NOT NULL,
	converted boolean NOT NULL,
	landing_page text,
	exit_page text,
	utm_source text,
	utm_campaign text,
	device text,
	country text,
	funnel_level integer NOT NULL,
	category_funnel jsonb NOT NULL,
	product_funnel jsonb NOT NULL
);

CREATE INDEX sessions_user_start ON clickstream.sessions (user_id, session_start, first_event_id);
CREATE INDEX sessions_date ON clickstream.sessions (session_date);

COMMENT ON TABLE clickstream.sessions IS
'Gold: one row per session of silver (clickstream.events), by the clickstream.session_* rules; kept equal to a full recomputation (clickstream.session_rows(''clickstream.events'')) by clickstream.refresh(). An event belongs to the session of its user with (session_start, first_event_id) <= (ts, event_id) <= (session_end, last_event_id): see clickstream.event_sessions.';
COMMENT ON COLUMN clickstream.sessions.session_id IS 'Deterministic id: a version-8 UUID holding a 128-bit hash of user_id, session_start and first_event_id, the same as clickstream.sessionize() gives.';
COMMENT ON COLUMN clickstream.sessions.user_id IS 'User.';
COMMENT ON COLUMN clickstream.sessions.session_start IS 'ts of the first event.';
COMMENT ON COLUMN clickstream.sessions.session_end IS 'ts of the last event.';
COMMENT ON COLUMN clickstream.sessions.duration IS 'session_end - session_start (0 for a single event).';
COMMENT ON COLUMN clickstream.sessions.session_date IS 'Day of session_start in clickstream.timezone.';
COMMENT ON COLUMN clickstream.sessions.first_event_id IS 'event_id of the first event (the landing).';
COMMENT ON COLUMN clickstream.sessions.last_event_id IS 'event_id of the last event (the exit).';
COMMENT ON COLUMN clickstream.sessions.events IS 'Number of events.';
COMMENT ON COLUMN clickstream.sessions.page_views IS 'Number of page_view events.';
COMMENT ON COLUMN clickstream.sessions.add_to_carts IS 'Number of add_to_cart events.';
COMMENT ON COLUMN clickstream.sessions.checkouts IS 'Number of begin_checkout events.';
COMMENT ON COLUMN clickstream.sessions.purchases IS 'Number of purchase events.';
COMMENT ON COLUMN clickstream.sessions.revenue IS 'Sum of the revenue of its events (purchases without a price count 0).';
COMMENT ON COLUMN clickstream.sessions.converted IS 'Whether the session has a purchase.';
COMMENT ON COLUMN clickstream.sessions.landing_page IS 'page_url of the first event.';
COMMENT ON COLUMN clickstream.sessions.exit_page IS 'page_url of the last event.';
COMMENT ON COLUMN clickstream.sessions.utm_source IS 'First touch: utm_source of the first event.';
COMMENT ON COLUMN clickstream.sessions.utm_campaign IS 'First touch: utm_campaign of the first event.';
COMMENT ON COLUMN clickstream.sessions.device IS 'device of the first event.';
COMMENT ON COLUMN clickstream.sessions.country IS 'country of the first event.';
COMMENT ON COLUMN clickstream.sessions.funnel_level IS 'Furthest step of the funnel (clickstream.funnel_definition) the session reached: clickstream.funnel_agg over its events, with the session as the window.';
COMMENT ON COLUMN clickstream.sessions.category_funnel IS 'Per product category of its events, the furthest funnel step reached with that category: {"category": level}. Step 1 needs an event of the category; later steps take an event of the category or one without a category, such as begin_checkout (clickstream.funnel_breakdown).';
COMMENT ON COLUMN clickstream.sessions.product_funnel IS 'Per product of its events, the furthest funnel step reached with that product, and the product''s category (the smallest its events carry, null when none): {"product_id": [level, "category"]}. Step 1 needs an event of the product; later steps take an event of the product or one without a product (clickstream.funnel_breakdown).';

CREATE TABLE clickstream.gold_state (
	singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
	touch_id bigint NOT NULL DEFAULT 0,
	session_rules jsonb,
	timezone_changed boolean NOT NULL DEFAULT false,
	interest_rules jsonb,
	updated_at timestamptz
);
INSERT INTO clickstream.gold_state DEFAULT VALUES;

COMMENT ON TABLE clickstream.gold_state IS
'Where gold stands (one row): the clickstream.touched rows applied so far and the session rules clickstream.sessions was built with.';
COMMENT ON COLUMN clickstream.gold_state.singleton IS 'Always true: the table has one row.';
COMMENT ON COLUMN clickstream.gold_state.touch_id IS 'Gold watermark: touched rows up to this touch_id are reflected in gold.';
COMMENT ON COLUMN clickstream.gold_state.session_rules IS 'clickstream.gold_rules() (session rules, time zone, funnel steps) when sessions was last brought up to date; a change makes the next refresh rebuild sessions and the funnel tables.';
COMMENT ON COLUMN clickstream.gold_state.timezone_changed IS 'clickstream.timezone changed at some point: silver then holds event_date values derived in different zones, and gold looks for a user''s events two days around their times instead of on the exact days.';
COMMENT ON COLUMN clickstream.gold_state.interest_rules IS 'clickstream.interest_rules() when clickstream.high_interest_low_conversion was last built; a change makes the next refresh rebuild it.';
COMMENT ON COLUMN clickstream.gold_state.updated_at IS 'When gold was last brought up to date.';

CREATE FUNCTION clickstream.session_rules()
RETURNS jsonb
LANGUAGE sql STABLE
AS $$
	SELECT jsonb_build_object(
		'timeout_s', extract(epoch FROM current_setting('clickstream.session_timeout')::interval),
		'max_duration_s', extract(epoch FROM current_setting('clickstream.session_max_duration')::interval),
		'split_at_midnight', current_setting('clickstream.session_split_at_midnight')::boolean,
		'split_on_campaign', current_setting('clickstream.session_split_on_campaign')::boolean,
		'timezone', current_setting('clickstream.timezone'))
$$;

COMMENT ON FUNCTION clickstream.session_rules() IS
'The settings clickstream.sessions depends on (session rules and time zone), as one value.';

-- Sessions of a set of events -------------------------------------------------

-- JIT is off: sessionize()'s row estimate makes the plan look costly, and
-- compiling it took seconds for a few thousand events.  Merge joins are off:
-- the join on event_id is always best hashed (two sorts of every event by
-- event_id made it 1.6x slower on 250 000 events).
CREATE FUNCTION clickstream.session_rows(source regclass)
RETURNS TABLE (session_id uuid, user_id text, session_start timestamptz,
	session_end timestamptz, session_date date, first_event_id text, last_event_id text,
	events integer, page_views integer, add_to_carts integer, checkouts integer,
	purchases integer, revenue numeric, converted boolean, landing_page text,
	exit_page text, utm_source text, utm_campaign text, device text, country text,
	funnel_level integer, category_funnel jsonb, product_funnel jsonb)
LANGUAGE plpgsql
AS $$
DECLARE
	events text := format('SELECT user_id, ts, event_id, utm_source, utm_campaign FROM %s', source);
	-- the funnel: the session is its window (no event of a session is more
	-- than session_max_duration after its start)
	win interval := current_setting('clickstream.session_max_duration')::interval;
	steps text[] := clickstream.funnel_event_types();
	conditions text;
BEGIN
	-- step k: an event of the step's type
	SELECT string_agg(format('e.event_type = %L', t), ', ' ORDER BY o)
	INTO conditions
	FROM unnest(steps) WITH ORDINALITY AS u(t, o);
	RETURN QUERY EXECUTE format($q$
		SELECT z.session_id, min(z.user_id), min(z.session_start), min(z.session_end),
			   (min(z.session_start) AT TIME ZONE current_setting('clickstream.timezone'))::date,
			   min(z.event_id) FILTER (WHERE z.event_index = 1),
			   min(z.event_id) FILTER (WHERE z.event_index = z.session_events),
			   count(*)::integer,
			   count(*) FILTER (WHERE e.event_type = 'page_view')::integer,
			   count(*) FILTER (WHERE e.event_type = 'add_to_cart')::integer,
			   count(*) FILTER (WHERE e.event_type = 'begin_checkout')::integer,
			   count(*) FILTER (WHERE e.event_type = 'purchase')::integer,
			   coalesce(sum(e.revenue), 0),
			   bool_or(e.event_type = 'purchase'),
			   min(e.page_url) FILTER (WHERE z.event_index = 1),
			   min(e.page_url) FILTER (WHERE z.event_index = z.session_events),
			   min(e.utm_source) FILTER (WHERE z.event_index = 1),
			   min(e.utm_campaign) FILTER (WHERE z.event_index = 1),
			   min(e.device) FILTER (WHERE z.event_index = 1),
			   min(e.country) FILTER (WHERE z.event_index = 1),
			   clickstream.funnel_agg(e.ts, %3$L::interval, %4$s),
			   -- per category and per product: an event of it makes step 1
			   -- of its funnel, later steps take its events or those without
			   -- one (a checkout carries no product)
			   coalesce(clickstream.funnel_breakdown(e.ts, %3$L::interval, e.category, %4$s), '{}'),
			   coalesce(clickstream.funnel_breakdown(e.ts, %3$L::interval, e.product_id,
													 e.category, %4$s), '{}')
		FROM clickstream.sessionize(%1$L) z
		JOIN %2$s e ON e.event_id = z.event_id COLLATE "C"
		GROUP BY z.session_id
	$q$, events, source, win, conditions);
END
$$ SET jit = off SET enable_mergejoin = off;

COMMENT ON FUNCTION clickstream.session_rows(regclass) IS
'Sessions (rows of clickstream.sessions) of all events of a table or view with the columns of clickstream.events (unique event_id), by the clickstream.session_* rules and the funnel of clickstream.funnel_definition. session_rows(''clickstream.events'') is the full recomputation clickstream.sessions always equals.';

CREATE VIEW clickstream.event_sessions AS
SELECT e.event_id, e.user_id, e.ts, s.session_id, s.session_start
FROM clickstream.events e
CROSS JOIN LATERAL (
	SELECT s.session_id, s.session_start
	FROM clickstream.sessions s
	WHERE s.user_id = e.user_id
		AND (s.session_start, s.first_event_id) <= (e.ts, e.event_id)
	ORDER BY s.session_start DESC, s.first_event_id DESC
	LIMIT 1
) s;

COMMENT ON VIEW clickstream.event_sessions IS
'Every silver event with its session: the session of its user that starts last at or before it, in (ts, event_id) order. Filter it (by user, day, session) rather than reading it whole: each row is an index probe into clickstream.sessions.';

-- Incremental maintenance -------------------------------------------------------

-- Rebuild the sessions from all of silver (the rules changed, or first use).
CREATE FUNCTION clickstream.rebuild_sessions()
RETURNS bigint
LANGUAGE plpgsql
AS $$
DECLARE
	written bigint;
BEGIN
	PERFORM pg_advisory_xact_lock(hashtext('clickstream.refresh'), 0);
	LOCK TABLE clickstream.funnel_definition IN SHARE MODE;
	PERFORM 1 FROM clickstream.gold_state FOR UPDATE;
	DELETE FROM clickstream.sessions;
	INSERT INTO clickstream.sessions (session_id, user_id, session_start, session_end,
		session_date, first_event_id, last_event_id, events, page_views, add_to_carts,
		checkouts, purchases, revenue, converted, landing_page, exit_page, utm_source,
		utm_campaign, device, country, funnel_level, category_funnel, product_funnel)
	SELECT * FROM clickstream.session_rows('clickstream.events');
	GET DIAGNOSTICS written = ROW_COUNT;
	PERFORM clickstream.rebuild_funnels();
	UPDATE clickstream.gold_state g
	SET touch_id = (SELECT coalesce(max(t.touch_id), 0) FROM clickstream.touched t),
		timezone_changed = g.timezone_changed OR coalesce((g.session_rules ->> 'timezone')
			<> current_setting('clickstream.timezone'), false),
		session_rules = clickstream.gold_rules(), updated_at = now();
	RETURN written;
END
$$ SET work_mem = '256MB' SET jit = off;

COMMENT ON FUNCTION clickstream.rebuild_sessions() IS
'Recompute clickstream.sessions from all of silver, and the funnel tables from it, and move the gold watermark to the latest touched row. clickstream.refresh() does it by itself when the session rules (clickstream.session_*, clickstream.timezone) or clickstream.funnel_definition changed; returns the number of sessions.';

-- Per-call scratch tables; emptied at every commit.
CREATE FUNCTION clickstream.gold_scratch()
RETURNS void
LANGUAGE plpgsql
AS $$
BEGIN
	IF to_regclass('pg_temp.clickstream_dirty') IS NULL THEN
		CREATE TEMP TABLE clickstream_dirty (
			user_id text COLLATE "C" NOT NULL,
			from_ts timestamptz NOT NULL,
			from_id text COLLATE "C" NOT NULL,
			to_ts timestamptz NOT NULL,
			to_id text COLLATE "C" NOT NULL,
			lo_date date NOT NULL,
			hi_date date NOT NULL
		) ON COMMIT DELETE ROWS;
	END IF;
	-- a copy of silver's columns: made again if they changed since (a column
	-- added to clickstream.events while this session lives)
	IF (SELECT array_agg(format_type(atttypid, atttypmod) ORDER BY attnum) FROM pg_attribute
		WHERE attrelid = to_regclass('pg_temp.clickstream_affected') AND attnum > 0 AND NOT attisdropped)
	   IS DISTINCT FROM
	   (SELECT array_agg(format_type(atttypid, atttypmod) ORDER BY attnum) FROM pg_attribute
		WHERE attrelid = 'clickstream.events'::regclass AND attnum > 0 AND NOT attisdropped) THEN
		IF to_regclass('pg_temp.clickstream_affected') IS NOT NULL THEN
			DROP TABLE pg_temp.clickstream_affected;
		END IF;
		CREATE TEMP TABLE clickstream_affected (LIKE clickstream.events) ON COMMIT DELETE ROWS;
	END IF;
	IF to_regclass('pg_temp.clickstream_session_delta') IS NULL THEN
		CREATE TEMP TABLE clickstream_session_delta (
			sign integer NOT NULL,
			session_date date NOT NULL,
			funnel_level integer NOT NULL,
			category_funnel jsonb NOT NULL,
			product_funnel jsonb NOT NULL
		) ON COMMIT DELETE ROWS;
	END IF;
	IF to_regclass('pg_temp.clickstream_funnel_delta') IS NULL THEN
		CREATE TEMP TABLE clickstream_funnel_delta (
			kind text NOT NULL,
			day date NOT NULL,
			key text NOT NULL,
			category text NOT NULL,
			level integer NOT NULL,
			sessions bigint NOT NULL
		) ON COMMIT DELETE ROWS;
	END IF;
END
$$;

COMMENT ON FUNCTION clickstream.gold_scratch() IS
'Internal: create the session''s scratch tables of clickstream.refresh_sessions() (pg_temp.clickstream_dirty, pg_temp.clickstream_affected, pg_temp.clickstream_session_delta, pg_temp.clickstream_funnel_delta).';

CREATE FUNCTION clickstream.refresh_sessions(OUT users bigint, OUT sessions_removed bigint,
	OUT sessions_written bigint, OUT rebuilt boolean)
LANGUAGE plpgsql
AS $$
DECLARE
	gold record;
	hi bigint;
	rules jsonb;
	timeout interval := current_setting('clickstream.session_timeout')::interval;
	midnight boolean := current_setting('clickstream.session_split_at_midnight')::boolean;
	tz text := current_setting('clickstream.timezone');
	margin integer;
	one_day date;
BEGIN
	users := 0;
	sessions_removed := 0;
	sessions_written := 0;
	rebuilt := false;
	-- one writer of gold at a time (refresh holds this lock already); the
	-- funnel stays as read until the step commits
	PERFORM pg_advisory_xact_lock(hashtext('clickstream.refresh'), 0);
	LOCK TABLE clickstream.funnel_definition IN SHARE MODE;
	rules := clickstream.gold_rules();
	SELECT * INTO gold FROM clickstream.gold_state FOR UPDATE;
	IF gold.session_rules IS DISTINCT FROM rules THEN
		IF gold.session_rules IS NOT NULL THEN
			RAISE NOTICE 'clickstream: the session rules or the funnel changed, rebuilding clickstream.sessions and the funnel tables'
				USING DETAIL = format('from %s to %s', gold.session_rules, rules);
		END IF;
		SELECT count(*) INTO sessions_removed FROM clickstream.sessions;
		sessions_written := clickstream.rebuild_sessions();
		rebuilt := true;
		RETURN;
	END IF;
	IF gold.interest_rules IS DISTINCT FROM clickstream.interest_rules() THEN
		PERFORM clickstream.interest_update(NULL);
	END IF;
	SELECT coalesce(max(t.touch_id), 0) INTO hi FROM clickstream.touched t;
	IF hi <= gold.touch_id THEN
		RETURN;
	END IF;

	-- event_date is the day of ts in the zone of its promotion: exact unless
	-- the zone ever changed
	margin := CASE WHEN gold.timezone_changed THEN 2 ELSE 0 END;
	PERFORM clickstream.gold_scratch();
	DELETE FROM pg_temp.clickstream_dirty;
	DELETE FROM pg_temp.clickstream_affected;

	-- Per user: recompute from the latest session that starts before the
	-- first new event, unless that one ended long enough before it (a gap
	-- over the timeout, or a midnight with that option: the new events start
	-- a session of their own whatever came before), in which case from that
	-- event; up to the first later session that starts after a gap (or a
	-- midnight) that the new events cannot close, or to the end.
	INSERT INTO pg_temp.clickstream_dirty
	SELECT t.user_id, f.from_ts, f.from_id,
		   coalesce(n.session_start, 'infinity'), coalesce(n.first_event_id, ''),
		   (f.from_ts AT TIME ZONE tz)::date - margin,
		   (greatest(coalesce(n.session_start, l.session_end), t.last_ts) AT TIME ZONE tz)::date + margin
	FROM (
		SELECT x.user_id, min(x.first_ts) AS first_ts, max(x.last_ts) AS last_ts
		FROM clickstream.touched x
		WHERE x.touch_id > gold.touch_id AND x.touch_id <= hi
		GROUP BY x.user_id
	) t
	LEFT JOIN LATERAL (
		SELECT s.session_start, s.session_end, s.first_event_id
		FROM clickstream.sessions s
		WHERE s.user_id = t.user_id AND s.session_start < t.first_ts
		ORDER BY s.session_start DESC, s.first_event_id DESC
		LIMIT 1
	) p ON true
	CROSS JOIN LATERAL (
		SELECT p.session_start IS NULL
			   OR t.first_ts - p.session_end > timeout
			   OR (midnight AND (p.session_end AT TIME ZONE tz)::date
								<> (t.first_ts AT TIME ZONE tz)::date) AS fresh
	) c
	CROSS JOIN LATERAL (
		SELECT CASE WHEN c.fresh THEN t.first_ts ELSE p.session_start END AS from_ts,
			   CASE WHEN c.fresh THEN '' ELSE p.first_event_id END AS from_id
	) f
	LEFT JOIN LATERAL (
		SELECT x.session_start, x.first_event_id
		FROM (
			SELECT s.session_start, s.first_event_id,
				   greatest(lag(s.session_end) OVER w, t.last_ts) AS before_start
			FROM clickstream.sessions s
			WHERE s.user_id = t.user_id AND s.session_start >= f.from_ts
			WINDOW w AS (ORDER BY s.session_start, s.first_event_id)
		) x
		WHERE x.session_start > t.last_ts
			AND (x.session_start - x.before_start > timeout
				 OR (midnight AND (x.session_start AT TIME ZONE tz)::date
									<> (x.before_start AT TIME ZONE tz)::date))
		ORDER BY x.session_start, x.first_event_id
		LIMIT 1
	) n ON true
	LEFT JOIN LATERAL (
		SELECT s.session_end
		FROM clickstream.sessions s
		WHERE s.user_id = t.user_id
		ORDER BY s.session_start DESC, s.first_event_id DESC
		LIMIT 1
	) l ON true;
	GET DIAGNOSTICS users = ROW_COUNT;
	ANALYZE pg_temp.clickstream_dirty;

	-- Their events, one daily partition at a time, by index probes per user
	-- (LATERAL: never a scan of a whole day for a few users).
	FOR one_day IN
		SELECT DISTINCT g::date
		FROM pg_temp.clickstream_dirty d, generate_series(d.lo_date, d.hi_date, '1 day') g
		ORDER BY 1
	LOOP
		INSERT INTO pg_temp.clickstream_affected
		SELECT e.*
		FROM pg_temp.clickstream_dirty d
		CROSS JOIN LATERAL (
			SELECT e.*
			FROM clickstream.events e
			WHERE e.event_date = one_day
				AND e.user_id = d.user_id
				AND e.ts >= d.from_ts AND e.ts <= d.to_ts
				AND (e.ts, e.event_id) >= (d.from_ts, d.from_id)
				AND (e.ts, e.event_id) < (d.to_ts, d.to_id)
		) e
		WHERE one_day BETWEEN d.lo_date AND d.hi_date;
	END LOOP;
	ANALYZE pg_temp.clickstream_affected;

	-- the sessions replaced, found by index probes per user; what they and
	-- their replacements count in the funnels goes to the delta
	DELETE FROM pg_temp.clickstream_session_delta;
	WITH gone AS (
	DELETE FROM clickstream.sessions s
	WHERE s.ctid = ANY (ARRAY(
		SELECT x.ctid
		FROM pg_temp.clickstream_dirty d
		CROSS JOIN LATERAL (
			SELECT s2.ctid
			FROM clickstream.sessions s2
			WHERE s2.user_id = d.user_id
				AND s2.session_start >= d.from_ts AND s2.session_start <= d.to_ts
				AND (s2.session_start, s2.first_event_id) >= (d.from_ts, d.from_id)
				AND (s2.session_start, s2.first_event_id) < (d.to_ts, d.to_id)
		) x))
	RETURNING s.session_date, s.funnel_level, s.category_funnel, s.product_funnel)
	INSERT INTO pg_temp.clickstream_session_delta
	SELECT -1, g.* FROM gone g;
	GET DIAGNOSTICS sessions_removed = ROW_COUNT;

	WITH added AS (
	INSERT INTO clickstream.sessions (session_id, user_id, session_start, session_end,
		session_date, first_event_id, last_event_id, events, page_views, add_to_carts,
		checkouts, purchases, revenue, converted, landing_page, exit_page, utm_source,
		utm_campaign, device, country, funnel_level, category_funnel, product_funnel)
	SELECT * FROM clickstream.session_rows('pg_temp.clickstream_affected')
	RETURNING session_date, funnel_level, category_funnel, product_funnel)
	INSERT INTO pg_temp.clickstream_session_delta
	SELECT 1, a.* FROM added a;
	GET DIAGNOSTICS sessions_written = ROW_COUNT;
	PERFORM clickstream.apply_funnel_delta();

	UPDATE clickstream.gold_state SET touch_id = hi, updated_at = now();
END
$$ SET work_mem = '256MB' SET jit = off;

COMMENT ON FUNCTION clickstream.refresh_sessions() IS
'Internal (run by clickstream.refresh() in every silver step''s transaction, and by replay_dead_letters): bring clickstream.sessions up to date with the touched rows above the gold watermark, recomputing only the affected sessions of the affected users, and add what those sessions count to the funnel tables; rebuilds it all when the session rules or the funnel changed, and high_interest_low_conversion when its thresholds did.';

REVOKE ALL ON FUNCTION clickstream.gold_scratch() FROM PUBLIC;
REVOKE ALL ON FUNCTION clickstream.refresh_sessions() FROM PUBLIC;
REVOKE ALL ON FUNCTION clickstream.rebuild_sessions() FROM PUBLIC;

-- Quality checks of gold ----------------------------------------------------------

INSERT INTO clickstream.quality_checks (name, layer, severity, description, query, builtin) VALUES
('sessions_cover_events', 'gold', 'error',
 'Every silver event is counted in exactly one session of its user: per user, the number of events in silver and the sum of sessions.events agree.',
 $q$SELECT count(*) FROM (
        SELECT user_id, count(*) AS n FROM clickstream.events GROUP BY user_id) e
    FULL JOIN (
        SELECT user_id, sum(events) AS n FROM clickstream.sessions GROUP BY user_id) s
    USING (user_id)
    WHERE e.n IS DISTINCT FROM s.n$q$, true),
('sessions_do_not_overlap', 'gold', 'error',
 'The sessions of a user do not overlap: each starts after the previous one ends, in (ts, event_id) order.',
 $q$SELECT count(*) FROM (
        SELECT session_start, first_event_id,
               lag(session_end) OVER w AS prev_end, lag(last_event_id) OVER w AS prev_last
        FROM clickstream.sessions
        WHERE ($1::date IS NULL OR session_date >= $1::date - 1)
        WINDOW w AS (PARTITION BY user_id ORDER BY session_start, first_event_id)) x
    WHERE (prev_end, prev_last) >= (session_start, first_event_id)$q$, true),
('sessions_consistent', 'gold', 'error',
 'Session rows are consistent: at least one event, counts by type within the total, converted exactly when there is a purchase, start not after end.',
 $q$SELECT count(*) FROM clickstream.sessions
    WHERE ($1::date IS NULL OR session_date >= $1::date)
      AND (events < 1 OR page_views + add_to_carts + checkouts + purchases > events
           OR converted <> (purchases > 0) OR session_start > session_end
           OR (events = 1 AND first_event_id <> last_event_id))$q$, true),
('gold_up_to_date', 'pipeline', 'warning',
 'Gold has applied every touched row (a refresh that failed in its gold step leaves some behind until the next run).',
 $q$SELECT count(*) FROM clickstream.touched
    WHERE touch_id > (SELECT touch_id FROM clickstream.gold_state)$q$, true);
-- Funnels: clickstream.funnel_agg, its companion clickstream.funnel_steps
-- (with the timestamps of the steps), and clickstream.retention.
--
-- Semantics (the README's "Funnels" section says the same at length):
--
--   funnel_agg(ts, window, [options,] VARIADIC conditions) returns how many
--   consecutive steps of the chain some attempt completed.  The first
--   conditions are the steps; the last ones, one per exclude(...) option,
--   are exclusions.
--   * Rows are taken in ts order.  Rows with equal ts: a row matching
--     condition 1 comes first; if both or neither do, the one matching
--     condition 2, and so on (steps, then exclusions); rows matching
--     nothing come last.  So the input order never changes the result.
--   * Every row matching step 1 starts an attempt.  An attempt advances at
--     the first later row that matches its next step, if that row is at
--     most `window` after the attempt's step-1 row (inclusive).  A row that
--     also matches the steps after that one advances the attempt through
--     them too (not under strict_once or strict_increase).
--   * strict_order: the attempt ends at the first row that does not advance
--     it (any row counts, also one matching no condition).
--   * strict_deduplication: the attempt ends at a row that matches a step it
--     already reached (2 .. its current step) without advancing it.
--   * strict_increase: a row advances the attempt only if its ts is strictly
--     greater than that of the row that last moved the attempt.
--   * strict_once: a row advances an attempt by one step at most.
--   * exclude(a, b): a row matching the exclusion, while the attempt has
--     reached step a but not step b, sends the attempt back to step a - 1
--     (it must reach step a again after the exclusion; back to step 0 ends
--     it).  A row that advances the attempt is not an exclusion for it.
--     `exclude` alone is exclude(1, number of steps).
--   * The result is the furthest step any attempt reached (0 when no row
--     matches step 1).  NULL ts: the row is ignored.  NULL condition: false.
--     No input rows at all: NULL.
--   * funnel_steps reports the attempt that reached that step first (at the
--     earliest row); if several reached it at the same row, the one that
--     started last.

\echo Use "CREATE EXTENSION clickstream" to load this file. \quit

-- Support functions -------------------------------------------------------

CREATE FUNCTION clickstream.funnel_transfn(internal, timestamptz, interval, boolean[])
RETURNS internal
AS 'MODULE_PATHNAME', 'clickstream_funnel_transfn'
LANGUAGE C PARALLEL SAFE;

CREATE FUNCTION clickstream.funnel_transfn(internal, timestamptz, interval, text, boolean[])
RETURNS internal
AS 'MODULE_PATHNAME', 'clickstream_funnel_transfn'
LANGUAGE C PARALLEL SAFE;

CREATE FUNCTION clickstream.funnel_combine(internal, internal)
RETURNS internal
AS 'MODULE_PATHNAME', 'clickstream_funnel_combine'
LANGUAGE C PARALLEL SAFE;

CREATE FUNCTION clickstream.funnel_serialize(internal)
RETURNS bytea
AS 'MODULE_PATHNAME', 'clickstream_funnel_serialize'
LANGUAGE C STRICT PARALLEL SAFE;

CREATE FUNCTION clickstream.funnel_deserialize(bytea, internal)
RETURNS internal
AS 'MODULE_PATHNAME', 'clickstream_funnel_deserialize'
LANGUAGE C STRICT PARALLEL SAFE;

CREATE FUNCTION clickstream.funnel_final(internal)
RETURNS integer
AS 'MODULE_PATHNAME', 'clickstream_funnel_final'
LANGUAGE C PARALLEL SAFE;

CREATE TYPE clickstream.funnel_result AS (
	level integer,
	step_ts timestamptz[],
	time_to_convert interval[]
);

CREATE FUNCTION clickstream.funnel_steps_final(internal)
RETURNS clickstream.funnel_result
AS 'MODULE_PATHNAME', 'clickstream_funnel_steps_final'
LANGUAGE C PARALLEL SAFE;

COMMENT ON FUNCTION clickstream.funnel_transfn(internal, timestamptz, interval, boolean[]) IS
'Transition function of funnel_agg and funnel_steps: keeps the rows that match a condition (every row under strict_order) as a timestamp and a bitmask.';
COMMENT ON FUNCTION clickstream.funnel_transfn(internal, timestamptz, interval, text, boolean[]) IS
'Transition function of funnel_agg and funnel_steps with options: keeps the rows that match a condition (every row under strict_order) as a timestamp and a bitmask.';
COMMENT ON FUNCTION clickstream.funnel_combine(internal, internal) IS
'Combine function of funnel_agg and funnel_steps (parallel aggregation): concatenates the kept rows.';
COMMENT ON FUNCTION clickstream.funnel_serialize(internal) IS
'Serialize function of funnel_agg and funnel_steps: the state as a compact bytea (16 bytes per kept row for up to 64 conditions).';
COMMENT ON FUNCTION clickstream.funnel_deserialize(bytea, internal) IS
'Deserialize function of funnel_agg and funnel_steps; checks every field of the bytea.';
COMMENT ON FUNCTION clickstream.funnel_final(internal) IS
'Final function of funnel_agg: sorts the kept rows and returns the furthest step reached.';
COMMENT ON TYPE clickstream.funnel_result IS
'Result of funnel_steps: the furthest step reached, and for the reported attempt the timestamp of each step reached and the time since the previous step.';
COMMENT ON COLUMN clickstream.funnel_result.level IS
'The furthest step reached, as funnel_agg returns it (0: no row matched step 1).';
COMMENT ON COLUMN clickstream.funnel_result.step_ts IS
'step_ts[k]: timestamp of step k of the reported attempt, for k = 1 .. level.';
COMMENT ON COLUMN clickstream.funnel_result.time_to_convert IS
'time_to_convert[k] = step_ts[k] - step_ts[k - 1], for k = 2 .. level; time_to_convert[1] is NULL.';
COMMENT ON FUNCTION clickstream.funnel_steps_final(internal) IS
'Final function of funnel_steps: the furthest step reached, with the step timestamps of the attempt that reached it first.';

-- The aggregates ------------------------------------------------------------

CREATE AGGREGATE clickstream.funnel_agg(ts timestamptz, "window" interval, VARIADIC steps boolean[]) (
	SFUNC = clickstream.funnel_transfn,
	STYPE = internal,
	SSPACE = 256,
	FINALFUNC = clickstream.funnel_final,
	COMBINEFUNC = clickstream.funnel_combine,
	SERIALFUNC = clickstream.funnel_serialize,
	DESERIALFUNC = clickstream.funnel_deserialize,
	PARALLEL = SAFE
);

CREATE AGGREGATE clickstream.funnel_agg(ts timestamptz, "window" interval, options text, VARIADIC conditions boolean[]) (
	SFUNC = clickstream.funnel_transfn,
	STYPE = internal,
	SSPACE = 256,
	FINALFUNC = clickstream.funnel_final,
	COMBINEFUNC = clickstream.funnel_combine,
	SERIALFUNC = clickstream.funnel_serialize,
	DESERIALFUNC = clickstream.funnel_deserialize,
	PARALLEL = SAFE
);

CREATE AGGREGATE clickstream.funnel_steps(ts timestamptz, "window" interval, VARIADIC steps boolean[]) (
	SFUNC = clickstream.funnel_transfn,
	STYPE = internal,
	SSPACE = 256,
	FINALFUNC = clickstream.funnel_steps_final,
	COMBINEFUNC = clickstream.funnel_combine,
	SERIALFUNC = clickstream.funnel_serialize,
	DESERIALFUNC = clickstream.funnel_deserialize,
	PARALLEL = SAFE
);

CREATE AGGREGATE clickstream.funnel_steps(ts timestamptz, "window" interval, options text, VARIADIC conditions boolean[]) (
	SFUNC = clickstream.funnel_transfn,
	STYPE = internal,
	SSPACE = 256,
	FINALFUNC = clickstream.funnel_steps_final,
	COMBINEFUNC = clickstream.funnel_combine,
	SERIALFUNC = clickstream.funnel_serialize,
	DESERIALFUNC = clickstream.funnel_deserialize,
	PARALLEL = SAFE
);

COMMENT ON AGGREGATE clickstream.funnel_agg(timestamptz, interval, boolean[]) IS
'How many consecutive steps of the chain some attempt completed: rows in ts order (equal ts: rows matching earlier steps first), an attempt starts at each step-1 row and advances at the first row matching its next step at most window after its step-1 row. 0 when no row matches step 1; NULL ts rows are ignored, NULL conditions are false. See the README, "Funnels".';
COMMENT ON AGGREGATE clickstream.funnel_agg(timestamptz, interval, text, boolean[]) IS
'funnel_agg with options, comma-separated: strict_order (an attempt ends at the first row that does not advance it), strict_deduplication (it ends at a row repeating a step it reached), strict_increase (a row advances it only with a ts greater than its last move), strict_once (a row advances it one step at most), exclude(a, b) (the next condition after the steps is an exclusion: such a row between step a and step b sends the attempt back to step a - 1). See the README, "Funnels".';
COMMENT ON AGGREGATE clickstream.funnel_steps(timestamptz, interval, boolean[]) IS
'funnel_agg with the timestamps of the steps of the attempt that reached the furthest step first (if several at the same row, the one that started last), and the time between consecutive steps.';
COMMENT ON AGGREGATE clickstream.funnel_steps(timestamptz, interval, text, boolean[]) IS
'funnel_steps with the options of funnel_agg (strict_order, strict_deduplication, strict_increase, strict_once, exclude(a, b)).';

-- funnel_agg with 1 to 8 conditions written out: fixed-arity overloads.
-- PostgreSQL prefers a non-variadic match to a variadic one, so a call such
-- as funnel_agg(ts, '1 hour', a, b, c) takes these: the conditions arrive as
-- arguments, and the executor does not build an array for every row (~15 %
-- of the aggregate's time).  The same state, combine, serialize and final
-- functions as the VARIADIC forms: the same results, the same parallel plans.
DO $overloads$
DECLARE
	conds text;					-- boolean, boolean, ...
	named text;					-- c1 boolean, c2 boolean, ...
BEGIN
	FOR n IN 1 .. 8 LOOP
		conds := array_to_string(array_fill('boolean'::text, ARRAY[n]), ', ');
		named := (SELECT string_agg(format('c%s boolean', i), ', ' ORDER BY i)
				  FROM generate_series(1, n) i);
		EXECUTE format($f$
			CREATE FUNCTION clickstream.funnel_transfn(internal, timestamptz, interval, %1$s)
			RETURNS internal AS 'MODULE_PATHNAME', 'clickstream_funnel_transfn_args'
			LANGUAGE C PARALLEL SAFE;
			CREATE FUNCTION clickstream.funnel_transfn(internal, timestamptz, interval, text, %1$s)
			RETURNS internal AS 'MODULE_PATHNAME', 'clickstream_funnel_transfn_options_args'
			LANGUAGE C PARALLEL SAFE;
			COMMENT ON FUNCTION clickstream.funnel_transfn(internal, timestamptz, interval, %1$s) IS
			'Transition function of funnel_agg with %2$s condition(s) as arguments.';
			COMMENT ON FUNCTION clickstream.funnel_transfn(internal, timestamptz, interval, text, %1$s) IS
			'Transition function of funnel_agg with options and %2$s condition(s) as arguments.';
			CREATE AGGREGATE clickstream.funnel_agg(ts timestamptz, "window" interval, %3$s) (
				SFUNC = clickstream.funnel_transfn, STYPE = internal, SSPACE = 256,
				FINALFUNC = clickstream.funnel_final, COMBINEFUNC = clickstream.funnel_combine,
				SERIALFUNC = clickstream.funnel_serialize,
				DESERIALFUNC = clickstream.funnel_deserialize, PARALLEL = SAFE);
			CREATE AGGREGATE clickstream.funnel_agg(ts timestamptz, "window" interval, options text, %3$s) (
				SFUNC = clickstream.funnel_transfn, STYPE = internal, SSPACE = 256,
				FINALFUNC = clickstream.funnel_final, COMBINEFUNC = clickstream.funnel_combine,
				SERIALFUNC = clickstream.funnel_serialize,
				DESERIALFUNC = clickstream.funnel_deserialize, PARALLEL = SAFE);
			COMMENT ON AGGREGATE clickstream.funnel_agg(timestamptz, interval, %1$s) IS
			'funnel_agg(ts, window, VARIADIC steps) with %2$s condition(s) written out (the same result, without an array per row).';
			COMMENT ON AGGREGATE clickstream.funnel_agg(timestamptz, interval, text, %1$s) IS
			'funnel_agg(ts, window, options, VARIADIC conditions) with %2$s condition(s) written out (the same result, without an array per row).';
		$f$, conds, n, named);
	END LOOP;
END
$overloads$;

-- Breakdown ---------------------------------------------------------------

CREATE FUNCTION clickstream.funnel_breakdown_transfn(internal, timestamptz, interval, text, boolean[])
RETURNS internal
AS 'MODULE_PATHNAME', 'clickstream_funnel_breakdown_transfn'
LANGUAGE C PARALLEL SAFE;

CREATE FUNCTION clickstream.funnel_breakdown_transfn(internal, timestamptz, interval, text, text, boolean[])
RETURNS internal
AS 'MODULE_PATHNAME', 'clickstream_funnel_breakdown_transfn'
LANGUAGE C PARALLEL SAFE;

CREATE FUNCTION clickstream.funnel_breakdown_final(internal)
RETURNS jsonb
AS 'MODULE_PATHNAME', 'clickstream_funnel_breakdown_final'
LANGUAGE C PARALLEL SAFE;

CREATE AGGREGATE clickstream.funnel_breakdown(ts timestamptz, "window" interval, key text, VARIADIC steps boolean[]) (
	SFUNC = clickstream.funnel_breakdown_transfn,
	STYPE = internal,
	FINALFUNC = clickstream.funnel_breakdown_final,
	PARALLEL = SAFE
);

CREATE AGGREGATE clickstream.funnel_breakdown(ts timestamptz, "window" interval, key text, label text, VARIADIC steps boolean[]) (
	SFUNC = clickstream.funnel_breakdown_transfn,
	STYPE = internal,
	FINALFUNC = clickstream.funnel_breakdown_final,
	PARALLEL = SAFE
);

COMMENT ON FUNCTION clickstream.funnel_breakdown_transfn(internal, timestamptz, interval, text, boolean[]) IS
'Transition function of funnel_breakdown: registers the row''s key and keeps the row (timestamp, step bitmask, key) if it matches a step.';
COMMENT ON FUNCTION clickstream.funnel_breakdown_transfn(internal, timestamptz, interval, text, text, boolean[]) IS
'Transition function of funnel_breakdown with a label: also keeps the smallest label (byte order) of each key.';
COMMENT ON FUNCTION clickstream.funnel_breakdown_final(internal) IS
'Final function of funnel_breakdown: runs the funnel_agg pass per key over the key''s rows and the rows without a key.';
COMMENT ON AGGREGATE clickstream.funnel_breakdown(timestamptz, interval, text, boolean[]) IS
'The funnel per key, as jsonb {"key": level}: for each non-NULL key of the group, funnel_agg over the rows of that key and the rows with a NULL key, where a row with a NULL key never counts as step 1 (a checkout without a product moves every product''s funnel, it starts none). Keys of rows that match no step get level 0; NULL ts rows are ignored.';
COMMENT ON AGGREGATE clickstream.funnel_breakdown(timestamptz, interval, text, text, boolean[]) IS
'funnel_breakdown with a label per key: {"key": [level, label]}, label being the smallest (in byte order) non-NULL label on the key''s rows, or null.';

-- Retention ---------------------------------------------------------------

CREATE FUNCTION clickstream.retention_transfn(bit, boolean[])
RETURNS bit
AS 'MODULE_PATHNAME', 'clickstream_retention_transfn'
LANGUAGE C PARALLEL SAFE;

CREATE FUNCTION clickstream.retention_final(bit)
RETURNS boolean[]
AS 'MODULE_PATHNAME', 'clickstream_retention_final'
LANGUAGE C STRICT PARALLEL SAFE;

CREATE AGGREGATE clickstream.retention(VARIADIC conditions boolean[]) (
	SFUNC = clickstream.retention_transfn,
	STYPE = bit,
	FINALFUNC = clickstream.retention_final,
	COMBINEFUNC = pg_catalog.bitor,
	PARALLEL = SAFE
);

COMMENT ON FUNCTION clickstream.retention_transfn(bit, boolean[]) IS
'Transition function of retention: ORs the row''s conditions into a bit string.';
COMMENT ON FUNCTION clickstream.retention_final(bit) IS
'Final function of retention: r[1] = condition 1 held on some row, r[k] = condition 1 and condition k each held on some row.';
COMMENT ON AGGREGATE clickstream.retention(boolean[]) IS
'ClickHouse-style retention: r[1] is true when condition 1 held on some row of the group; r[k] when condition 1 and condition k each held on some row (not necessarily the same one). NULL conditions are false.';
-- Gold: funnels.  The funnel's steps live in one table,
-- clickstream.funnel_definition.  Every session row of clickstream.sessions
-- carries the furthest step it reached (clickstream.funnel_agg over its
-- events), per product category and per product too.  The daily tables are
-- sums over sessions by session_date:
--
--   clickstream.daily_funnel          (day, step)
--   clickstream.funnel_by_category    (day, category, step)
--   clickstream.product_funnel        (day, product_id, category, step)
--   clickstream.high_interest_low_conversion   (day, product_id, category)
--
-- refresh_sessions() records what every session it deletes or writes counted
-- (-1 / +1) in pg_temp.clickstream_session_delta; apply_funnel_delta() adds
-- those counts to the daily rows they belong to and recomputes the rates and
-- the high-interest list of just those rows.  Sums are exact, so the tables
-- always equal the same sums taken over a full recomputation of sessions.

\echo Use "CREATE EXTENSION clickstream" to load this file. \quit

-- The funnel ---------------------------------------------------------------------

CREATE TABLE clickstream.funnel_definition (
	step integer PRIMARY KEY CHECK (step BETWEEN 1 AND 64),
	name text NOT NULL CHECK (name <> ''),
	event_type text NOT NULL CHECK (event_type <> '')
);

INSERT INTO clickstream.funnel_definition VALUES
	(1, 'view', 'page_view'),
	(2, 'add to cart', 'add_to_cart'),
	(3, 'begin checkout', 'begin_checkout'),
	(4, 'purchase', 'purchase');

COMMENT ON TABLE clickstream.funnel_definition IS
'The funnel of the gold tables, one row per step (steps 1 .. n, no gaps, n <= 64, each step its own event type): a session reaches step k when its events hold events of the step types 1 .. k in that order, by ts (events with equal ts count in step order; clickstream.funnel_agg, the session as its window). Edit it to fit your event names; the next clickstream.refresh() rebuilds sessions and funnels.';
COMMENT ON COLUMN clickstream.funnel_definition.step IS 'Position in the funnel, 1 .. n without gaps.';
COMMENT ON COLUMN clickstream.funnel_definition.name IS 'Label of the step in the gold tables (step_name).';
COMMENT ON COLUMN clickstream.funnel_definition.event_type IS 'The event_type of silver events that make the step; one step per event type.';

-- The step event types in order; a plain error when the definition is unusable.
CREATE FUNCTION clickstream.funnel_event_types()
RETURNS text[]
LANGUAGE plpgsql STABLE
AS $$
DECLARE
	types text[];
	steps integer;
	last_step integer;
	repeated text;
BEGIN
	SELECT array_agg(event_type ORDER BY step), count(*), max(step)
	INTO types, steps, last_step
	FROM clickstream.funnel_definition;
	IF steps = 0 THEN
		RAISE EXCEPTION 'clickstream.funnel_definition has no steps'
			USING HINT = 'Insert the steps of your funnel, numbered 1 .. n, in the same transaction that deletes the old ones.';
	ELSIF last_step <> steps THEN
		RAISE EXCEPTION 'clickstream.funnel_definition must number its steps 1 .. n without gaps'
			USING DETAIL = format('It has %s steps, the last one numbered %s.', steps, last_step),
				  HINT = 'Renumber the steps (UPDATE clickstream.funnel_definition SET step = ...).';
	END IF;
	-- one event matching two consecutive steps would make both (funnel_agg
	-- lets a row advance an attempt through every step it matches)
	SELECT format('Event type %L is the type of steps %s.', event_type,
				  string_agg(step::text, ', ' ORDER BY step))
	INTO repeated
	FROM clickstream.funnel_definition
	GROUP BY event_type HAVING count(*) > 1
	ORDER BY min(step) LIMIT 1;
	IF repeated IS NOT NULL THEN
		RAISE EXCEPTION 'clickstream.funnel_definition gives two steps the same event type'
			USING DETAIL = repeated,
				  HINT = 'Give each step its own event type: one event of a type that two steps share would make both steps.';
	END IF;
	RETURN types;
END
$$;

COMMENT ON FUNCTION clickstream.funnel_event_types() IS
'The event types of the funnel steps of clickstream.funnel_definition, in step order; raises an error when the steps are not numbered 1 .. n or two steps have the same event type.';

-- Check the definition when a transaction that changed it commits (so that a
-- DELETE and an INSERT in one transaction may replace it).
CREATE FUNCTION clickstream.funnel_definition_check()
RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
	PERFORM clickstream.funnel_event_types();
	RETURN NULL;
END
$$;

CREATE CONSTRAINT TRIGGER funnel_definition_steps
AFTER INSERT OR UPDATE OR DELETE ON clickstream.funnel_definition
DEFERRABLE INITIALLY DEFERRED
FOR EACH ROW EXECUTE FUNCTION clickstream.funnel_definition_check();

COMMENT ON FUNCTION clickstream.funnel_definition_check() IS
'Trigger function: at commit of a change of clickstream.funnel_definition, refuses steps that are not numbered 1 .. n or that repeat an event type.';
COMMENT ON TRIGGER funnel_definition_steps ON clickstream.funnel_definition IS
'Refuses, at commit, a funnel whose steps are not numbered 1 .. n (or that has none), or whose steps repeat an event type.';

-- The rules gold follows: the session rules and the funnel.
CREATE FUNCTION clickstream.gold_rules()
RETURNS jsonb
LANGUAGE sql STABLE
AS $$
	SELECT clickstream.session_rules() || jsonb_build_object('funnel',
		(SELECT jsonb_agg(jsonb_build_array(f.step, f.name, f.event_type) ORDER BY f.step)
		 FROM clickstream.funnel_definition f))
$$;

COMMENT ON FUNCTION clickstream.gold_rules() IS
'What clickstream.sessions and the funnel tables are built by, as one value: clickstream.session_rules() and the steps of clickstream.funnel_definition. A change makes the next refresh rebuild them.';

-- The daily tables ------------------------------------------------------------------

CREATE TABLE clickstream.daily_funnel (
	day date NOT NULL,
	step integer NOT NULL,
	step_name text NOT NULL,
	sessions bigint NOT NULL,
	reached bigint NOT NULL,
	conversion_from_previous numeric,
	conversion_from_first numeric,
	conversion_overall numeric,
	PRIMARY KEY (day, step)
);

CREATE TABLE clickstream.funnel_by_category (
	day date NOT NULL,
	category text NOT NULL,
	step integer NOT NULL,
	step_name text NOT NULL,
	sessions bigint NOT NULL,
	reached bigint NOT NULL,
	conversion_from_previous numeric,
	conversion_from_first numeric,
	conversion_overall numeric,
	PRIMARY KEY (day, category, step)
);

CREATE TABLE clickstream.product_funnel (
	day date NOT NULL,
	product_id text NOT NULL,
	category text NOT NULL,
	step integer NOT NULL,
	step_name text NOT NULL,
	sessions bigint NOT NULL,
	reached bigint NOT NULL,
	conversion_from_previous numeric,
	conversion_from_first numeric,
	conversion_overall numeric,
	PRIMARY KEY (day, product_id, category, step)
);

CREATE TABLE clickstream.high_interest_low_conversion (
	day date NOT NULL,
	product_id text NOT NULL,
	category text NOT NULL,
	views bigint NOT NULL,
	carts bigint,
	purchases bigint NOT NULL,
	cart_rate numeric,
	conversion numeric NOT NULL,
	PRIMARY KEY (day, product_id, category)
);

COMMENT ON TABLE clickstream.daily_funnel IS
'Gold: the funnel of clickstream.funnel_definition per day (session_date: the day the session started, in clickstream.timezone), one row per day and step. Maintained by clickstream.refresh() from the sessions it changes; equal to the same counts over a full recomputation of sessions.';
COMMENT ON COLUMN clickstream.daily_funnel.sessions IS 'Sessions that started that day (the same in every step row of the day).';

COMMENT ON TABLE clickstream.funnel_by_category IS
'Gold: the funnel per product category and day. A session counts for each category its events carry; step 1 needs an event of the category, later steps take an event of the category or one without a category (begin_checkout carries none). Maintained by clickstream.refresh(), equal to a full recomputation.';
COMMENT ON COLUMN clickstream.funnel_by_category.category IS 'Product category.';
COMMENT ON COLUMN clickstream.funnel_by_category.sessions IS 'Sessions of the day with an event of the category.';

COMMENT ON TABLE clickstream.product_funnel IS
'Gold: the funnel per product and day, with the rule of clickstream.funnel_by_category (step 1 needs an event of the product, later steps take an event of the product or one without a product). The base of clickstream.high_interest_low_conversion. Maintained by clickstream.refresh(), equal to a full recomputation.';
COMMENT ON COLUMN clickstream.product_funnel.product_id IS 'Product.';
COMMENT ON COLUMN clickstream.product_funnel.category IS 'The category the product''s events carried in the session (the smallest, if several); '''' when none did.';
COMMENT ON COLUMN clickstream.product_funnel.sessions IS 'Sessions of the day with an event of the product.';

-- the columns the three funnel tables share
DO $$
DECLARE
	t text;
BEGIN
	FOREACH t IN ARRAY ARRAY['daily_funnel', 'funnel_by_category', 'product_funnel'] LOOP
		EXECUTE format('COMMENT ON COLUMN clickstream.%I.day IS %L', t,
			'Day the sessions started, in clickstream.timezone.');
		EXECUTE format('COMMENT ON COLUMN clickstream.%I.step IS %L', t,
			'Step of clickstream.funnel_definition.');
		EXECUTE format('COMMENT ON COLUMN clickstream.%I.step_name IS %L', t,
			'Its name.');
		EXECUTE format('COMMENT ON COLUMN clickstream.%I.reached IS %L', t,
			'Of the sessions counted, those that reached this step (with the category or the product, in funnel_by_category and product_funnel).');
		EXECUTE format('COMMENT ON COLUMN clickstream.%I.conversion_from_previous IS %L', t,
			'Step-to-step conversion: reached / reached of the previous step (for step 1: / sessions), 4 decimals; NULL when dividing by 0.');
		EXECUTE format('COMMENT ON COLUMN clickstream.%I.conversion_from_first IS %L', t,
			'reached / reached of step 1 (the funnel''s own conversion, as PostHog reports it), 4 decimals; NULL when dividing by 0.');
		EXECUTE format('COMMENT ON COLUMN clickstream.%I.conversion_overall IS %L', t,
			'Overall conversion: reached / sessions, 4 decimals (the last step''s is the session conversion rate).');
	END LOOP;
END
$$;

COMMENT ON TABLE clickstream.high_interest_low_conversion IS
'Gold: products that many sessions viewed or carted on a day, but few bought: views >= clickstream.interest_min_views or carts >= clickstream.interest_min_carts, and conversion <= clickstream.interest_max_conversion. Rows of clickstream.product_funnel; maintained by clickstream.refresh(), rebuilt when the thresholds change.';
COMMENT ON COLUMN clickstream.high_interest_low_conversion.day IS 'Day the sessions started, in clickstream.timezone.';
COMMENT ON COLUMN clickstream.high_interest_low_conversion.product_id IS 'Product.';
COMMENT ON COLUMN clickstream.high_interest_low_conversion.category IS 'Its category, as in clickstream.product_funnel.';
COMMENT ON COLUMN clickstream.high_interest_low_conversion.views IS 'Sessions that reached step 1 with the product (viewed it, with the default funnel).';
COMMENT ON COLUMN clickstream.high_interest_low_conversion.carts IS 'Sessions that reached step 2 with it (added it to the cart); NULL for a one-step funnel.';
COMMENT ON COLUMN clickstream.high_interest_low_conversion.purchases IS 'Sessions that reached the last step with it (bought it).';
COMMENT ON COLUMN clickstream.high_interest_low_conversion.cart_rate IS 'carts / views, 4 decimals.';
COMMENT ON COLUMN clickstream.high_interest_low_conversion.conversion IS 'purchases / views, 4 decimals.';

-- Maintenance -----------------------------------------------------------------------

-- The settings high_interest_low_conversion depends on, as one value.
CREATE FUNCTION clickstream.interest_rules()
RETURNS jsonb
LANGUAGE sql STABLE
AS $$
	SELECT jsonb_build_object(
		'min_views', current_setting('clickstream.interest_min_views')::bigint,
		'min_carts', current_setting('clickstream.interest_min_carts')::bigint,
		'max_conversion', current_setting('clickstream.interest_max_conversion')::numeric)
$$;

COMMENT ON FUNCTION clickstream.interest_rules() IS
'The thresholds clickstream.high_interest_low_conversion was built with (clickstream.interest_*), as one value.';

-- Add signed session counts to one funnel table.  deltas: a query returning
-- the key columns of the table, level (the step the sessions reached with
-- that key) and sign (how many sessions more, or fewer when negative).
CREATE FUNCTION clickstream.funnel_add(target regclass, keys text[], deltas text)
RETURNS void
LANGUAGE plpgsql
AS $$
DECLARE
	cols text := (SELECT string_agg(format('%I', k), ', ') FROM unnest(keys) k);
	d_cols text := (SELECT string_agg(format('d.%I', k), ', ') FROM unnest(keys) k);
	a_cols text := (SELECT string_agg(format('a.%I', k), ', ') FROM unnest(keys) k);
	same_key text := (SELECT string_agg(format('t.%1$I = a.%1$I', k), ' AND ') FROM unnest(keys) k);
BEGIN
	-- the new counts of every step of the keys touched, with their rates
	EXECUTE format($q$
		INSERT INTO %1$s AS t (%2$s, step, step_name, sessions, reached,
			conversion_from_previous, conversion_from_first, conversion_overall)
		SELECT %2$s, step, step_name, sessions, reached,
			   round(reached::numeric / nullif(coalesce(lag(reached) OVER w, sessions), 0), 4),
			   round(reached::numeric / nullif(first_value(reached) OVER w, 0), 4),
			   round(reached::numeric / nullif(sessions, 0), 4)
		FROM (
			SELECT %6$s, a.step, a.step_name,
				   coalesce(t.sessions, 0) + a.sessions AS sessions,
				   coalesce(t.reached, 0) + a.reached AS reached
			FROM (
				SELECT %3$s, f.step, f.name AS step_name, sum(d.sign) AS sessions,
					   coalesce(sum(d.sign) FILTER (WHERE d.level >= f.step), 0) AS reached
				FROM (%4$s) d
				CROSS JOIN clickstream.funnel_definition f
				GROUP BY %3$s, f.step, f.name
			) a
			LEFT JOIN %1$s t ON %5$s AND t.step = a.step
		) d
		WINDOW w AS (PARTITION BY %2$s ORDER BY step)
		ON CONFLICT (%2$s, step) DO UPDATE
		SET step_name = excluded.step_name,
			sessions = excluded.sessions,
			reached = excluded.reached,
			conversion_from_previous = excluded.conversion_from_previous,
			conversion_from_first = excluded.conversion_from_first,
			conversion_overall = excluded.conversion_overall
	$q$, target, cols, d_cols, deltas, same_key, a_cols);
	-- keys no session counts for any more
	EXECUTE format($q$
		DELETE FROM %1$s t
		USING (SELECT DISTINCT %2$s FROM (%3$s) d) a
		WHERE %4$s AND t.sessions = 0
	$q$, target, d_cols, deltas, same_key);
END
$$;

COMMENT ON FUNCTION clickstream.funnel_add(regclass, text[], text) IS
'Internal: add signed session counts (a query of key columns, level, sign) to a funnel table, with the rates of the keys touched, and drop the keys left without sessions.';

-- Recompute the high-interest rows of some (day, product_id, category) keys,
-- or of all when keys is NULL.
CREATE FUNCTION clickstream.interest_update(keys text)
RETURNS void
LANGUAGE plpgsql
AS $$
DECLARE
	last_step integer := (SELECT max(step) FROM clickstream.funnel_definition);
	rules jsonb := clickstream.interest_rules();
BEGIN
	IF keys IS NULL THEN
		DELETE FROM clickstream.high_interest_low_conversion;
		keys := 'SELECT DISTINCT day, product_id, category FROM clickstream.product_funnel';
	ELSE
		EXECUTE format($q$
			DELETE FROM clickstream.high_interest_low_conversion t
			USING (SELECT DISTINCT d.day, d.product_id, d.category FROM (%s) d) a
			WHERE t.day = a.day AND t.product_id = a.product_id AND t.category = a.category
		$q$, keys);
	END IF;
	EXECUTE format($q$
		INSERT INTO clickstream.high_interest_low_conversion
		SELECT x.day, x.product_id, x.category, x.views, x.carts, x.purchases,
			   round(x.carts::numeric / x.views, 4), round(x.purchases::numeric / x.views, 4)
		FROM (
			SELECT t.day, t.product_id, t.category,
				   max(t.reached) FILTER (WHERE t.step = 1) AS views,
				   max(t.reached) FILTER (WHERE t.step = 2) AS carts,
				   max(t.reached) FILTER (WHERE t.step = %2$s) AS purchases
			FROM (SELECT DISTINCT d.day, d.product_id, d.category FROM (%1$s) d) a
			JOIN clickstream.product_funnel t
				ON t.day = a.day AND t.product_id = a.product_id AND t.category = a.category
			GROUP BY t.day, t.product_id, t.category
		) x
		WHERE x.views > 0
			AND (x.views >= %3$s OR x.carts >= %4$s)
			AND x.purchases <= %5$s * x.views
	$q$, keys, last_step, rules ->> 'min_views', rules ->> 'min_carts', rules ->> 'max_conversion');
	UPDATE clickstream.gold_state SET interest_rules = rules;
END
$$;

COMMENT ON FUNCTION clickstream.interest_update(text) IS
'Internal: recompute the clickstream.high_interest_low_conversion rows of the (day, product_id, category) keys a query returns (all when NULL) from clickstream.product_funnel and the clickstream.interest_* thresholds.';

-- Apply pg_temp.clickstream_session_delta to every funnel table: first net
-- it per key and level (a session rewritten unchanged cancels out), then add
-- it to each table.
CREATE FUNCTION clickstream.apply_funnel_delta()
RETURNS void
LANGUAGE plpgsql
AS $$
BEGIN
	DELETE FROM pg_temp.clickstream_funnel_delta;
	INSERT INTO pg_temp.clickstream_funnel_delta
	SELECT x.kind, x.day, x.key, x.category, x.level, sum(x.sign)
	FROM (
		SELECT 'day' AS kind, d.session_date AS day, '' AS key, '' AS category,
			   d.funnel_level AS level, d.sign
		FROM pg_temp.clickstream_session_delta d
		UNION ALL
		SELECT 'category', d.session_date, c.key, c.key, c.value::integer, d.sign
		FROM pg_temp.clickstream_session_delta d, jsonb_each_text(d.category_funnel) c
		UNION ALL
		SELECT 'product', d.session_date, p.key, coalesce(p.value ->> 1, ''),
			   (p.value ->> 0)::integer, d.sign
		FROM pg_temp.clickstream_session_delta d, jsonb_each(d.product_funnel) p
	) x
	GROUP BY x.kind, x.day, x.key, x.category, x.level
	HAVING sum(x.sign) <> 0;
	DELETE FROM pg_temp.clickstream_session_delta;

	PERFORM clickstream.funnel_add('clickstream.daily_funnel', ARRAY['day'], $q$
		SELECT d.day, d.level, d.sessions AS sign
		FROM pg_temp.clickstream_funnel_delta d WHERE d.kind = 'day'$q$);
	PERFORM clickstream.funnel_add('clickstream.funnel_by_category', ARRAY['day', 'category'], $q$
		SELECT d.day, d.category, d.level, d.sessions AS sign
		FROM pg_temp.clickstream_funnel_delta d WHERE d.kind = 'category'$q$);
	PERFORM clickstream.funnel_add('clickstream.product_funnel', ARRAY['day', 'product_id', 'category'], $q$
		SELECT d.day, d.key AS product_id, d.category, d.level, d.sessions AS sign
		FROM pg_temp.clickstream_funnel_delta d WHERE d.kind = 'product'$q$);
	PERFORM clickstream.interest_update($q$
		SELECT d.day, d.key AS product_id, d.category
		FROM pg_temp.clickstream_funnel_delta d WHERE d.kind = 'product'$q$);
END
$$;

COMMENT ON FUNCTION clickstream.apply_funnel_delta() IS
'Internal (clickstream.refresh_sessions()): net what the sessions removed (-1) and written (+1) in this step counted, per day, key and level (pg_temp.clickstream_funnel_delta), add it to daily_funnel, funnel_by_category and product_funnel, and update high_interest_low_conversion for the products touched.';

-- Rebuild every funnel table from clickstream.sessions.
CREATE FUNCTION clickstream.rebuild_funnels()
RETURNS void
LANGUAGE plpgsql
AS $$
BEGIN
	PERFORM clickstream.gold_scratch();
	DELETE FROM clickstream.daily_funnel;
	DELETE FROM clickstream.funnel_by_category;
	DELETE FROM clickstream.product_funnel;
	DELETE FROM clickstream.high_interest_low_conversion;
	DELETE FROM pg_temp.clickstream_session_delta;
	INSERT INTO pg_temp.clickstream_session_delta
	SELECT 1, s.session_date, s.funnel_level, s.category_funnel, s.product_funnel
	FROM clickstream.sessions s;
	PERFORM clickstream.apply_funnel_delta();
END
$$;

COMMENT ON FUNCTION clickstream.rebuild_funnels() IS
'Internal (clickstream.rebuild_sessions()): rebuild daily_funnel, funnel_by_category, product_funnel and high_interest_low_conversion from clickstream.sessions.';

REVOKE ALL ON FUNCTION clickstream.funnel_add(regclass, text[], text) FROM PUBLIC;
REVOKE ALL ON FUNCTION clickstream.interest_update(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION clickstream.apply_funnel_delta() FROM PUBLIC;
REVOKE ALL ON FUNCTION clickstream.rebuild_funnels() FROM PUBLIC;

-- Quality check ----------------------------------------------------------------------

INSERT INTO clickstream.quality_checks (name, layer, severity, description, query, builtin) VALUES
('daily_funnel_matches_sessions', 'gold', 'error',
 'clickstream.daily_funnel holds, per day and step, the number of sessions of that day and of those that reached the step.',
 $q$SELECT count(*) FROM (
        SELECT s.session_date AS day, f.step, count(*) AS sessions,
               count(*) FILTER (WHERE s.funnel_level >= f.step) AS reached
        FROM clickstream.sessions s CROSS JOIN clickstream.funnel_definition f
        WHERE $1::date IS NULL OR s.session_date >= $1::date
        GROUP BY 1, 2) s
    FULL JOIN (
        SELECT day, step, sessions, reached FROM clickstream.daily_funnel
        WHERE $1::date IS NULL OR day >= $1::date) d
    USING (day, step)
    WHERE s.sessions IS DISTINCT FROM d.sessions OR s.reached IS DISTINCT FROM d.reached$q$, true);
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
	 WHERE h.status = 'succeeded' AND h.kind = 'refresh') AS refresh_age
FROM known k
LEFT JOIN clickstream.ingest_positions p USING (topic, partition)
LEFT JOIN clickstream.watermarks wm USING (topic, partition)
LEFT JOIN clickstream.worker_partitions() w USING (topic, partition);

COMMENT ON VIEW clickstream.status IS
'Pipeline status, one row per partition: committed position (stored with the bronze rows), durable watermark (covered by silver), high watermark, lag, messages and bytes per second over the last minute, last batch time, last error, messages waiting in bronze for silver, and the age of the last successful clickstream.refresh().';
