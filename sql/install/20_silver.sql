-- Silver: parsed, validated, deduplicated events, partitioned by day, and
-- the refresh step that builds them from bronze.
--
-- clickstream.refresh() (90_orchestration.sql) repeats one step until bronze
-- is drained.  A step is
-- one transaction: it takes, per partition, the bronze rows between the
-- durable watermark and the stored position (up to a row and a byte cap; a
-- catch-up takes them from a map of bronze read once), deletes them from bronze,
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
'Parse and validate one event payload (the event format of docs/events.md). Never raises an error for bad data: returns a rejection reason and detail instead. Depends on the silver settings (clickstream.timezone, high_value_threshold, max_clock_skew, field_aliases, event_type_aliases, timestamp_without_zone, epoch_unit, event_id_fields, require_order_id) and the transaction start time.';

-- Shipped rows ----------------------------------------------------------------

-- The configuration tables hold rows the extension ships (builtin) next to
-- the user's.  pg_dump saves the user's rows and the shipped rows someone
-- modified, not the others (the restore's CREATE EXTENSION makes them
-- again).  For a dump to restore exactly what such a table held: a shipped
-- row someone edits is marked modified (and so is dumped); a row inserted
-- with the key of an unmodified shipped row replaces it, as a modified
-- version of it (as restoring a dump does); a shipped row cannot be deleted
-- (a restore would bring it back).  An update script that changes shipped
-- rows disables the trigger around it.
CREATE FUNCTION clickstream.keep_shipped_rows()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	replaced integer;
	shipped boolean;
BEGIN
	IF TG_OP = 'INSERT' THEN
		IF NEW.modified OR NOT NEW.builtin THEN
			EXECUTE format('DELETE FROM %I.%I t WHERE t.builtin AND NOT t.modified AND t.%I = ($1).%I',
						   TG_TABLE_SCHEMA, TG_TABLE_NAME, TG_ARGV[0], TG_ARGV[0])
			USING NEW;
			GET DIAGNOSTICS replaced = ROW_COUNT;
			IF replaced > 0 THEN
				NEW.builtin := true;
				NEW.modified := true;
			END IF;
		END IF;
		RETURN NEW;
	ELSIF TG_OP = 'UPDATE' THEN
		NEW.builtin := OLD.builtin;
		NEW.modified := OLD.builtin;
		RETURN NEW;
	ELSIF TG_OP = 'DELETE' THEN
		-- the replacement of a shipped row by the INSERT above goes through
		IF OLD.builtin AND pg_trigger_depth() = 1 THEN
			RAISE EXCEPTION 'cannot delete % % of %.%: the extension ships it', TG_ARGV[0],
				quote_literal(to_jsonb(OLD) ->> TG_ARGV[0]), TG_TABLE_SCHEMA, TG_TABLE_NAME
				USING DETAIL = 'A restore would bring it back: a dump does not hold the shipped rows.',
					  HINT = TG_ARGV[1];
		END IF;
		RETURN OLD;
	ELSE
		-- TRUNCATE
		EXECUTE format('SELECT EXISTS (SELECT 1 FROM %I.%I t WHERE t.builtin)', TG_TABLE_SCHEMA, TG_TABLE_NAME)
		INTO shipped;
		IF shipped THEN
			RAISE EXCEPTION 'cannot truncate %.%: it holds rows the extension ships', TG_TABLE_SCHEMA, TG_TABLE_NAME
				USING DETAIL = 'A restore would bring them back: a dump does not hold the shipped rows.',
					  HINT = 'Delete the rows of yours: DELETE ... WHERE NOT builtin.';
		END IF;
		RETURN NULL;
	END IF;
END
$$;

COMMENT ON FUNCTION clickstream.keep_shipped_rows() IS
'Trigger function of the configuration tables with shipped rows (event_types, quality_checks), so that a dump restores them exactly: an edited shipped row is marked modified (pg_dump saves it); an inserted row with the key of an unmodified shipped row (argument 1 names the key column) replaces it as a modified shipped row, as restoring a dump does; builtin cannot be changed; deleting or truncating shipped rows is refused with a hint (argument 2), since a restore would bring them back.';

-- Accepted event types (a data-quality check, not a filter) ---------------

CREATE TABLE clickstream.event_types (
	event_type text PRIMARY KEY,
	description text NOT NULL DEFAULT '',
	builtin boolean NOT NULL DEFAULT false,
	modified boolean NOT NULL DEFAULT false
);

COMMENT ON TABLE clickstream.event_types IS
'Event types the shop emits. Silver accepts any event_type (after mapping the aliases of clickstream.event_type_aliases to their canonical type); clickstream.check_quality() reports events whose type is not listed here. Add your own rows.';
COMMENT ON COLUMN clickstream.event_types.event_type IS 'Value of the event_type field.';
COMMENT ON COLUMN clickstream.event_types.description IS 'What the event means.';
COMMENT ON COLUMN clickstream.event_types.builtin IS 'True for the types the extension ships (they cannot be deleted); pg_dump saves them only when modified, the restore''s CREATE EXTENSION makes the others.';
COMMENT ON COLUMN clickstream.event_types.modified IS 'True for a shipped type that was edited (or replaced by an INSERT of the same type): pg_dump saves it.';

INSERT INTO clickstream.event_types (event_type, description, builtin) VALUES
	('page_view', 'A page was displayed.', true),
	('add_to_cart', 'A product was added to the cart.', true),
	('remove_from_cart', 'A product was removed from the cart.', true),
	('begin_checkout', 'The checkout was started.', true),
	('purchase', 'An order was placed (carries order_id, price, quantity).', true);

SELECT pg_catalog.pg_extension_config_dump('clickstream.event_types', 'WHERE NOT builtin OR modified');

CREATE TRIGGER event_types_shipped
BEFORE INSERT OR UPDATE OR DELETE ON clickstream.event_types
FOR EACH ROW EXECUTE FUNCTION clickstream.keep_shipped_rows('event_type',
	'A listed type that never arrives costs nothing: only events of unlisted types are reported.');
CREATE TRIGGER event_types_shipped_truncate
BEFORE TRUNCATE ON clickstream.event_types
FOR EACH STATEMENT EXECUTE FUNCTION clickstream.keep_shipped_rows();

COMMENT ON TRIGGER event_types_shipped ON clickstream.event_types IS
'Keeps a dump exact: an edited shipped type is marked modified, an inserted type replaces the unmodified shipped one of the same name, a shipped type cannot be deleted (clickstream.keep_shipped_rows).';
COMMENT ON TRIGGER event_types_shipped_truncate ON clickstream.event_types IS
'Refuses TRUNCATE while shipped types are there (a restore would bring them back).';

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

-- No index on events itself: each day partition gets its own indexes from
-- clickstream.create_partitions().  An index of the partitioned table would
-- be an extension member that ATTACH PARTITION copies onto every partition,
-- and pg_dump, which dumps the partitions (they are not members) with their
-- indexes, would then make the restore create each of them twice.

COMMENT ON TABLE clickstream.events IS
'Silver: one row per distinct event_id, typed and validated, partitioned by event_date (one partition per day, events_YYYYMMDD, created as needed with its indexes by clickstream.create_partitions). Built by clickstream.refresh().';
COMMENT ON COLUMN clickstream.events.event_id IS 'Unique event id (deduplicated through clickstream.event_ids: the first delivery wins), or derived from clickstream.event_id_fields when the event had none (32 hex digits). Identifiers use the C collation: byte order, fast, and the same on every server.';
COMMENT ON COLUMN clickstream.events.event_type IS 'page_view, add_to_cart, remove_from_cart, begin_checkout, purchase, or a type of your own; the canonical type when the producer sent an alias (clickstream.event_type_aliases).';
COMMENT ON COLUMN clickstream.events.user_id IS 'User the event belongs to (the Kafka key); an integer id is stored as its decimal digits.';
COMMENT ON COLUMN clickstream.events.ts IS 'Event time from the payload (ISO-8601, or an epoch number in clickstream.epoch_unit), microsecond precision.';
COMMENT ON COLUMN clickstream.events.event_date IS 'Day of ts in clickstream.timezone; the partition key.';
COMMENT ON COLUMN clickstream.events.event_hour IS 'Hour of day (0-23) of ts in clickstream.timezone.';
COMMENT ON COLUMN clickstream.events.product_id IS 'Product, when the event is about one.';
COMMENT ON COLUMN clickstream.events.category IS 'Product category.';
COMMENT ON COLUMN clickstream.events.price IS 'Unit price (>= 0), exactly as sent.';
COMMENT ON COLUMN clickstream.events.quantity IS 'Quantity (>= 1).';
COMMENT ON COLUMN clickstream.events.order_id IS 'Order id; present on every purchase unless clickstream.require_order_id was off (a purchase without one is an order of its own in the marts: clickstream.order_key).';
COMMENT ON COLUMN clickstream.events.page_url IS 'URL of the page.';
COMMENT ON COLUMN clickstream.events.referrer IS 'Referring URL.';
COMMENT ON COLUMN clickstream.events.utm_source IS 'Campaign source.';
COMMENT ON COLUMN clickstream.events.utm_medium IS 'Campaign medium.';
COMMENT ON COLUMN clickstream.events.utm_campaign IS 'Campaign name.';
COMMENT ON COLUMN clickstream.events.device IS 'Device class (desktop, mobile, tablet, ...).';
COMMENT ON COLUMN clickstream.events.country IS 'Country code.';
COMMENT ON COLUMN clickstream.events.is_high_value IS 'price > clickstream.high_value_threshold at promotion time (false without a price).';
COMMENT ON COLUMN clickstream.events.revenue IS 'For purchases price x quantity (quantity 1 when absent; a purchase always has a price); 0 for other events.';
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
	pid integer NOT NULL DEFAULT pg_backend_pid(),
	marts_time interval NOT NULL DEFAULT '0',
	sessions_extended bigint NOT NULL DEFAULT 0,
	events_reread bigint NOT NULL DEFAULT 0
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
COMMENT ON COLUMN clickstream.refresh_history.steps IS 'Committed steps (transactions); each promotes at most clickstream.refresh_batch_size rows and clickstream.refresh_batch_bytes payload bytes (at least one row).';
COMMENT ON COLUMN clickstream.refresh_history.rows_read IS 'Bronze rows taken (promoted + duplicate + rejected).';
COMMENT ON COLUMN clickstream.refresh_history.rows_promoted IS 'New events written to clickstream.events.';
COMMENT ON COLUMN clickstream.refresh_history.rows_duplicate IS 'Valid events whose event_id was already in silver (or earlier in the same step).';
COMMENT ON COLUMN clickstream.refresh_history.rows_rejected IS 'Rows sent to clickstream.dead_letters by validation.';
COMMENT ON COLUMN clickstream.refresh_history.partitions_created IS 'Daily partitions of clickstream.events created by the run.';
COMMENT ON COLUMN clickstream.refresh_history.sessions_written IS 'Sessions written to clickstream.sessions (recomputed or new).';
COMMENT ON COLUMN clickstream.refresh_history.gold_time IS 'Part of the duration spent bringing gold (clickstream.sessions) up to date, in the same transactions as the silver steps.';
COMMENT ON COLUMN clickstream.refresh_history.marts_time IS 'Part of gold_time spent on the marts (daily_metrics, users, orders, ...).';
COMMENT ON COLUMN clickstream.refresh_history.sessions_extended IS 'Of sessions_written, the sessions extended from their stored row by events that continue them (the append path), without reading their events again.';
COMMENT ON COLUMN clickstream.refresh_history.events_reread IS 'Events read from clickstream.events to recompute the sessions the run replaced (the rest of sessions_written), their new events among them: the cost of late events and of sessions the append path cannot extend.';
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
SET search_path = pg_catalog, pg_temp
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
		-- a user's events in time order: what gold reads per affected user;
		-- what is recent, for the live views (70_marts.sql): a BRIN on time
		-- (the newest pages are unsummarized and always read) and the
		-- purchases by time
		EXECUTE format('CREATE INDEX %I ON clickstream.%I (user_id, ts)', part || '_user_ts', part);
		EXECUTE format('CREATE INDEX %I ON clickstream.%I USING brin (ts)', part || '_ts_brin', part);
		EXECUTE format('CREATE INDEX %I ON clickstream.%I (ts) WHERE event_type = ''purchase''',
					   part || '_purchase_ts', part);
		EXECUTE format('COMMENT ON TABLE clickstream.%I IS %L', part,
					   format('Silver events of %s (clickstream.timezone).', d));
		created := created + 1;
	END LOOP;
	RETURN created;
END
$$;

COMMENT ON FUNCTION clickstream.create_partitions(date[]) IS
'Create the daily partitions events_YYYYMMDD of clickstream.events that do not exist yet, each with its indexes: (user_id, ts) for gold, a BRIN on ts and the purchases by ts for the live views; returns how many were created. refresh() calls it for today and tomorrow, and for every other day it is about to write, far past and future included.';

-- The refresh ---------------------------------------------------------------

-- The session's scratch tables (pg_temp.clickstream_*) are made by the
-- version of the extension that first needed them and kept for the
-- session; after ALTER EXTENSION UPDATE, or DROP and CREATE EXTENSION, in a
-- session that ran a refresh they may have an older layout (a column
-- sessions gained is missing from the copy of its rows).  Every function
-- that makes them (the *_scratch functions) and rebuild_gold() call this
-- first: it drops them all (but the catch-up map of a run in progress,
-- which refresh_step makes per run) when the extension's catalog row
-- changed since they were made, or when the session never called it.
CREATE FUNCTION clickstream.scratch_renew()
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	stamp text;
	t name;
BEGIN
	SELECT e.oid::text || '/' || e.xmin::text || '/' || e.extversion INTO stamp
	FROM pg_extension e WHERE e.extname = 'clickstream';
	IF current_setting('clickstream_scratch.made_by', true) IS NOT DISTINCT FROM stamp THEN
		RETURN;
	END IF;
	FOR t IN
		SELECT c.relname FROM pg_class c
		WHERE c.relnamespace = pg_my_temp_schema() AND c.relkind = 'r'
			AND c.relname LIKE 'clickstream\_%' AND c.relname NOT LIKE 'clickstream\_map%'
	LOOP
		EXECUTE format('DROP TABLE pg_temp.%I', t);
	END LOOP;
	PERFORM set_config('clickstream_scratch.made_by', stamp, false);
END
$$;

COMMENT ON FUNCTION clickstream.scratch_renew() IS
'Internal: drop the session''s scratch tables (pg_temp.clickstream_*, but the catch-up map of a run in progress) when the extension was updated or created again since the session made them (or the session never called this), so that they are made in the current layout. Called first by the functions that make them (refresh_scratch, funnel_scratch, gold_scratch, marts_scratch) and by rebuild_gold().';

-- Per-session scratch table of a step; emptied at every commit.
CREATE FUNCTION clickstream.refresh_scratch()
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	PERFORM clickstream.scratch_renew();
	IF to_regclass('pg_temp.clickstream_limits') IS NULL THEN
		CREATE TEMP TABLE clickstream_limits (
			topic text NOT NULL,
			partition integer NOT NULL,
			lo bigint NOT NULL,
			hi bigint NOT NULL
		) ON COMMIT DELETE ROWS;
	END IF;
	-- the events a step (or replay) wrote to silver, for gold: promote_rows
	-- writes them here too, in the layout of clickstream.events
	IF to_regclass('pg_temp.clickstream_step_events') IS NULL THEN
		CREATE TEMP TABLE clickstream_step_events (
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
		) ON COMMIT DELETE ROWS;
	END IF;
	-- (emptied at commit; two replays in one transaction: by hand)
	DELETE FROM pg_temp.clickstream_step_events;
END
$$;

COMMENT ON FUNCTION clickstream.refresh_scratch() IS
'Internal: create the session''s temporary tables of a refresh step: clickstream_limits (the offset ranges it takes) and clickstream_step_events (the events it wrote to silver, for gold); ON COMMIT DELETE ROWS.';

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

-- A catch-up (a backlog larger than one step) would scan all of bronze at
-- every step (bronze has no index, for ingest speed): the first step reads
-- bronze once into a map of the rows to take, in the order the steps take
-- them, and each step takes the next rows of the map by their ctid.  The
-- map lives in the refresh's session across the run's commits (ON COMMIT
-- PRESERVE ROWS), tagged with its run and bronze's relfilenode: a map of
-- another run, or of a bronze that was rewritten since (VACUUM FULL), is
-- dropped and built again.
CREATE FUNCTION clickstream.refresh_map_drop()
RETURNS void
LANGUAGE plpgsql
AS $$
BEGIN
	IF to_regclass('pg_temp.clickstream_map_state') IS NOT NULL THEN
		DROP TABLE pg_temp.clickstream_map_state;
	END IF;
	IF to_regclass('pg_temp.clickstream_map') IS NOT NULL THEN
		DROP TABLE pg_temp.clickstream_map;
	END IF;
	IF to_regclass('pg_temp.clickstream_map_parts') IS NOT NULL THEN
		DROP TABLE pg_temp.clickstream_map_parts;
	END IF;
END
$$;

COMMENT ON FUNCTION clickstream.refresh_map_drop() IS
'Internal: drop the session''s catch-up map of clickstream.refresh_step (temporary tables clickstream_map, clickstream_map_parts, clickstream_map_state), if any; refresh() calls it at the end of a run.';

-- Whether the rows that came while a step ran make another step worth it:
-- at least a tenth of a step (offsets between the watermarks and the stored
-- positions; gaps make it an upper bound).  Fewer wait for the next run, so
-- that a light stream does not keep a refresh taking tiny steps.
CREATE FUNCTION clickstream.refresh_more(max_rows bigint)
RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT coalesce(sum(p.next_offset - coalesce(w.durable_offset, 0)), 0) >= greatest(max_rows / 10, 1)
	FROM clickstream.ingest_positions p
	LEFT JOIN clickstream.watermarks w USING (topic, partition)
	WHERE p.next_offset > coalesce(w.durable_offset, 0)
$$;

COMMENT ON FUNCTION clickstream.refresh_more(bigint) IS
'Internal (clickstream.refresh, after each step): whether at least a tenth of max_rows (and at least one) bronze rows are waiting below the stored positions, so that the run takes another step for the rows that came while the last one ran.';

CREATE FUNCTION clickstream.refresh_step(run bigint, max_rows bigint, max_bytes bigint,
	OUT rows_read bigint, OUT rows_promoted bigint, OUT rows_duplicate bigint,
	OUT rows_rejected bigint, OUT partitions_created integer, OUT more boolean)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	backlog numeric;
	bronze_bytes numeric := 0;
	use_map boolean := false;
	have_map boolean := false;
	map record;
	take_from bigint;
	take_to bigint;
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

	-- The map of this run, when there is one and bronze was not rewritten.
	IF to_regclass('pg_temp.clickstream_map_state') IS NOT NULL THEN
		SELECT s.* INTO map FROM pg_temp.clickstream_map_state s;
		use_map := map.run = refresh_step.run
			AND map.filenode = pg_relation_filenode('clickstream.bronze');
		have_map := use_map;
		IF NOT use_map THEN
			PERFORM clickstream.refresh_map_drop();
		END IF;
	END IF;

	IF NOT use_map THEN
		DELETE FROM pg_temp.clickstream_limits;
		-- Per partition, the rows between the watermark and the stored
		-- position.  Every row below a stored position is committed, so
		-- later statements see all of them whatever the worker does
		-- meanwhile.
		INSERT INTO pg_temp.clickstream_limits (topic, partition, lo, hi)
		SELECT p.topic, p.partition, coalesce(w.durable_offset, 0), p.next_offset
		FROM clickstream.ingest_positions p
		LEFT JOIN clickstream.watermarks w USING (topic, partition)
		WHERE p.next_offset > coalesce(w.durable_offset, 0);

		ANALYZE pg_temp.clickstream_limits;	-- a hash join with bronze, not a sort of it
		SELECT coalesce(sum(l.hi - l.lo), 0) INTO backlog FROM pg_temp.clickstream_limits l;
		IF backlog > 0 AND backlog <= max_rows THEN
			-- every row of the backlog is in bronze: bronze's bytes bound
			-- the step's (octet_length does not detoast)
			SELECT coalesce(sum(octet_length(b.payload)), 0) + coalesce(sum(octet_length(b.kafka_key)), 0)
			INTO bronze_bytes FROM clickstream.bronze b;
		END IF;
		use_map := backlog > max_rows OR bronze_bytes > max_bytes;
	END IF;

	IF use_map AND NOT have_map THEN
		-- Read bronze once: the backlog's rows (those below the position,
		-- as the one-step path takes them), ordered so that every step
		-- takes the same share of each partition's offset range, and each
		-- partition's rows in offset order.
		CREATE TEMP TABLE clickstream_map_parts ON COMMIT PRESERVE ROWS AS
		SELECT row_number() OVER (ORDER BY l.topic, l.partition)::integer AS part,
			   l.topic, l.partition, l.lo, l.hi, 0::bigint AS last_seq
		FROM pg_temp.clickstream_limits l;
		ANALYZE pg_temp.clickstream_map_parts;
		CREATE TEMP TABLE clickstream_map ON COMMIT PRESERVE ROWS AS
		SELECT row_number() OVER (ORDER BY (b.kafka_offset - p.lo)::float8 / (p.hi - p.lo), p.part) AS seq,
			   b.ctid AS tid, p.part, b.kafka_offset,
			   coalesce(octet_length(b.payload), 0) + coalesce(octet_length(b.kafka_key), 0) AS bytes
		FROM clickstream.bronze b
		JOIN pg_temp.clickstream_map_parts p ON b.kafka_topic = p.topic
			AND b.kafka_partition = p.partition AND b.kafka_offset < p.hi;
		CREATE INDEX ON pg_temp.clickstream_map (seq);
		ANALYZE pg_temp.clickstream_map;
		UPDATE pg_temp.clickstream_map_parts p SET last_seq = m.last_seq
		FROM (SELECT m.part, max(m.seq) AS last_seq FROM pg_temp.clickstream_map m GROUP BY m.part) m
		WHERE m.part = p.part;
		CREATE TEMP TABLE clickstream_map_state ON COMMIT PRESERVE ROWS AS
		SELECT refresh_step.run AS run, 1::bigint AS next_seq,
			   (SELECT coalesce(max(p.last_seq), 0) FROM pg_temp.clickstream_map_parts p) AS last_seq,
			   pg_relation_filenode('clickstream.bronze') AS filenode;
		SELECT s.* INTO map FROM pg_temp.clickstream_map_state s;
	END IF;

	IF use_map THEN
		-- The next rows of the map, up to max_rows rows and max_bytes
		-- bytes, and at least one row.
		take_from := map.next_seq;
		SELECT max(x.seq) INTO take_to
		FROM (SELECT m.seq, sum(m.bytes) OVER (ORDER BY m.seq) AS total
			  FROM pg_temp.clickstream_map m
			  WHERE m.seq >= take_from AND m.seq < take_from + max_rows) x
		WHERE x.total <= max_bytes;
		take_to := least(greatest(take_to, take_from), map.last_seq);
		-- A TID scan of bronze; a row is taken only if it still is the
		-- map's (topic, partition, offset).
		source := format($src$
			DELETE FROM clickstream.bronze b
			WHERE b.ctid = ANY (ARRAY(SELECT m.tid FROM pg_temp.clickstream_map m
									  WHERE m.seq BETWEEN %1$s AND %2$s))
				AND (b.kafka_topic, b.kafka_partition, b.kafka_offset) IN (
					SELECT p.topic, p.partition, m.kafka_offset
					FROM pg_temp.clickstream_map m
					JOIN pg_temp.clickstream_map_parts p ON p.part = m.part
					WHERE m.seq BETWEEN %1$s AND %2$s)
			RETURNING b.kafka_topic, b.kafka_partition, b.kafka_offset, b.kafka_timestamp,
					  b.kafka_key, b.payload
		$src$, take_from, take_to);
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
	IF NOT use_map THEN
		INSERT INTO clickstream.watermarks AS w (topic, partition, durable_offset)
		SELECT l.topic, l.partition, l.hi FROM pg_temp.clickstream_limits l
		ON CONFLICT (topic, partition) DO UPDATE
		SET durable_offset = EXCLUDED.durable_offset, updated_at = now()
		WHERE w.durable_offset < EXCLUDED.durable_offset;
		more := false;
		RETURN;
	END IF;

	IF rows_read <> take_to - take_from + 1 THEN
		-- someone else deleted bronze rows: the watermarks cannot move
		RAISE EXCEPTION 'clickstream.refresh_step: % of the % bronze rows of the refresh map are gone',
			take_to - take_from + 1 - rows_read, take_to - take_from + 1
			USING HINT = 'Only the refresh may delete bronze rows; the next run reads bronze again.';
	END IF;
	-- A partition whose map rows are all taken moves to its position at the
	-- map's making (the offsets in between are not in bronze: gaps, or
	-- dead-lettered by the worker); another to its last offset taken.
	INSERT INTO clickstream.watermarks AS w (topic, partition, durable_offset)
	SELECT p.topic, p.partition, CASE WHEN p.last_seq <= take_to THEN p.hi ELSE t.last_offset + 1 END
	FROM pg_temp.clickstream_map_parts p
	LEFT JOIN (SELECT m.part, max(m.kafka_offset) AS last_offset
			   FROM pg_temp.clickstream_map m
			   WHERE m.seq BETWEEN take_from AND take_to GROUP BY m.part) t ON t.part = p.part
	WHERE p.last_seq <= take_to OR t.last_offset IS NOT NULL
	ON CONFLICT (topic, partition) DO UPDATE
	SET durable_offset = EXCLUDED.durable_offset, updated_at = now()
	WHERE w.durable_offset < EXCLUDED.durable_offset;

	IF take_to < map.last_seq THEN
		UPDATE pg_temp.clickstream_map_state SET next_seq = take_to + 1;
		more := true;
	ELSE
		-- used up: whether the rows that came meanwhile make another step
		-- worth it is refresh()'s to decide, once gold is done too
		PERFORM clickstream.refresh_map_drop();
		more := false;
	END IF;
END
$$;

COMMENT ON FUNCTION clickstream.refresh_step(bigint, bigint, bigint) IS
'Internal: one refresh step (run inside clickstream.refresh): move the bronze rows below the stored positions, at most max_rows rows and max_bytes payload and key bytes (at least one row), to silver or dead_letters and advance the watermarks to match, in the caller''s transaction. A backlog larger than one step is read from bronze once into a map (temporary tables of the session) that the run''s next steps take their rows from; more: whether that map has rows left.';

-- Internal functions are not for direct use.
REVOKE ALL ON FUNCTION clickstream.promote_rows(bigint, text, text, timestamptz, bigint[], boolean, boolean) FROM PUBLIC;
REVOKE ALL ON FUNCTION clickstream.refresh_step(bigint, bigint, bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION clickstream.refresh_map_drop() FROM PUBLIC;
REVOKE ALL ON FUNCTION clickstream.refresh_more(bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION clickstream.refresh_scratch() FROM PUBLIC;
REVOKE ALL ON FUNCTION clickstream.scratch_renew() FROM PUBLIC;
