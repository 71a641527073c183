-- Update of clickstream from 0.1.0 to 0.2.0.
--
-- What it changes in an installed 0.1.0 (the 0.2.0 install script is the
-- reference: test/t/008_update.pl compares the catalog of an updated
-- database with a fresh install):
--   * the gold marts and their sets, refresh_gold/rebuild_gold/verify_gold
--     and the live views are new; refresh_sessions() is gone (refresh_gold()
--     does its work);
--   * clickstream.sessions gains utm_medium (after utm_source) and
--     gold_state gains silver_partitions: both are re-created in the 0.2.0
--     layout (their rows copied over); gold is rebuilt from silver by the
--     first refresh after the update (the marts start empty), which
--     gold_state.session_rules = NULL asks for;
--   * the day partitions of clickstream.events get their own indexes
--     instead of the partitioned index events_user_ts (which a restore
--     created twice): the update builds them for every existing day;
--   * pg_dump saves every table that holds state; the shipped rows of
--     event_types, quality_checks and funnel_definition are marked so that
--     a dump restores them exactly (a shipped row already edited under
--     0.1.0 is recognised by comparison with what 0.1.0 shipped);
--   * DROP EXTENSION removes the pg_cron job (an event trigger).
-- The statements below follow the layers of sql/install in order.

\echo Use "ALTER EXTENSION clickstream UPDATE TO '0.2.0'" to load this file. \quit

-- Gone or replaced with another signature, result or layout ------------------

DROP VIEW clickstream.event_sessions;		-- re-created on the new sessions
DROP FUNCTION clickstream.refresh_sessions();
DROP FUNCTION clickstream.session_rows(regclass);	-- its rows carry utm_medium
-- each day partition gets indexes of its own (create_partitions below);
-- dropping the partitioned index drops the copies ATTACH made
DROP INDEX clickstream.events_user_ts;

-- 20_silver ---------------------------------------------------------------
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

-- event_types: modified marks a shipped type edited since (saved by pg_dump)
ALTER TABLE clickstream.event_types ADD COLUMN modified boolean NOT NULL DEFAULT false;
UPDATE clickstream.event_types t
SET modified = true
FROM (VALUES
	('page_view', 'A page was displayed.'),
	('add_to_cart', 'A product was added to the cart.'),
	('remove_from_cart', 'A product was removed from the cart.'),
	('begin_checkout', 'The checkout was started.'),
	('purchase', 'An order was placed (carries order_id, price, quantity).')) AS s(event_type, description)
WHERE t.builtin AND t.event_type = s.event_type AND t.description IS DISTINCT FROM s.description;

COMMENT ON COLUMN clickstream.event_types.builtin IS 'True for the types the extension ships (they cannot be deleted); pg_dump saves them only when modified, the restore''s CREATE EXTENSION makes the others.';

COMMENT ON COLUMN clickstream.event_types.modified IS 'True for a shipped type that was edited (or replaced by an INSERT of the same type): pg_dump saves it.';

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

-- No index on events itself: each day partition gets its own indexes from
-- clickstream.create_partitions().  An index of the partitioned table would
-- be an extension member that ATTACH PARTITION copies onto every partition,
-- and pg_dump, which dumps the partitions (they are not members) with their
-- indexes, would then make the restore create each of them twice.

COMMENT ON TABLE clickstream.events IS
'Silver: one row per distinct event_id, typed and validated, partitioned by event_date (one partition per day, events_YYYYMMDD, created as needed with its indexes by clickstream.create_partitions). Built by clickstream.refresh().';

-- Daily partitions ----------------------------------------------------------

CREATE OR REPLACE FUNCTION clickstream.create_partitions(days date[])
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

-- the indexes of the existing day partitions, as create_partitions makes them
DO $$
DECLARE
	part text;
BEGIN
	FOR part IN
		SELECT c.relname FROM pg_catalog.pg_inherits i
		JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid
		WHERE i.inhparent = 'clickstream.events'::regclass
		ORDER BY 1
	LOOP
		EXECUTE format('CREATE INDEX %I ON clickstream.%I (user_id, ts)', part || '_user_ts', part);
		EXECUTE format('CREATE INDEX %I ON clickstream.%I USING brin (ts)', part || '_ts_brin', part);
		EXECUTE format('CREATE INDEX %I ON clickstream.%I (ts) WHERE event_type = ''purchase''',
					   part || '_purchase_ts', part);
	END LOOP;
END
$$;

-- The refresh ---------------------------------------------------------------

-- Per-session scratch table of a step; emptied at every commit.
CREATE OR REPLACE FUNCTION clickstream.refresh_scratch()
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
END
$$;

COMMENT ON FUNCTION clickstream.refresh_scratch() IS
'Internal: create the session''s temporary tables of a refresh step: clickstream_limits (the offset ranges it takes) and clickstream_step_events (the events it wrote to silver, for gold); ON COMMIT DELETE ROWS.';

CREATE OR REPLACE FUNCTION clickstream.refresh_step(run bigint, max_rows bigint,
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

	INSERT INTO pg_temp.clickstream_step_events
	SELECT e.event_id, e.event_type, e.user_id, e.ts, e.event_date, e.event_hour, e.product_id, e.category, e.price, e.quantity, e.order_id, e.page_url, e.referrer, e.utm_source, e.utm_medium, e.utm_campaign, e.device, e.country, e.is_high_value, e.revenue, e.attrs, e.kafka_topic, e.kafka_partition, e.kafka_offset, e.run_id FROM clickstream.events e JOIN pg_temp.clickstream_limits l
		ON e.kafka_topic = l.topic AND e.kafka_partition = l.partition
	WHERE e.run_id = run AND e.kafka_offset >= l.lo AND e.kafka_offset < l.hi;  -- TEMPORARY

	-- Last, so that the row locks are held only for the commit.
	INSERT INTO clickstream.watermarks AS w (topic, partition, durable_offset)
	SELECT l.topic, l.partition, l.hi FROM pg_temp.clickstream_limits l
	ON CONFLICT (topic, partition) DO UPDATE
	SET durable_offset = EXCLUDED.durable_offset, updated_at = now()
	WHERE w.durable_offset < EXCLUDED.durable_offset;
END
$$;

-- 30_quality --------------------------------------------------------------
-- quality_checks: modified marks a shipped check edited since (saved by
-- pg_dump); a shipped check is recognised by the md5 of what 0.1.0 shipped
ALTER TABLE clickstream.quality_checks ADD COLUMN modified boolean NOT NULL DEFAULT false;
UPDATE clickstream.quality_checks q
SET modified = true
WHERE q.builtin
	AND md5(q.layer || chr(31) || q.severity || chr(31) || q.description || chr(31) || q.query
			|| chr(31) || q.enabled) IS DISTINCT FROM (
		SELECT s.md5 FROM (VALUES
			('bronze_below_watermark', 'c1c06db89b775a848d19729229ac07a6'),
			('daily_funnel_matches_sessions', '53fbe67baad50cf2cc03a88da69df26a'),
			('event_ids_match_events', '49917ea3613b1de9a574d5a2621497ea'),
			('events_accepted_event_types', '5d982316d75dcf607f7c834d0463a5b6'),
			('events_date_matches_timezone', '52ee2f51f8900c75641944d7d1ecf8d9'),
			('events_have_runs', '510f6e0d5783f27a3c405e910ea41afb'),
			('events_not_null', '87adcfc77e781a271f5b3748e45fc9fb'),
			('events_unique_event_id', '491201c93a2bcc1e9c606de43c7373d8'),
			('events_valid_values', '53e1ffc97ae11de7b88c3d4059e58dd7'),
			('gold_up_to_date', '01c9d919acf094ba0c1b99db93dd64a7'),
			('purchases_have_order_and_price', '302bd472a07cba5eabfcbd99b818ac03'),
			('sessions_consistent', '251d39a3bd2da380e2a4ad2253a24764'),
			('sessions_cover_events', '7b8dc4a847ecaa68f43da1ad061bdeb7'),
			('sessions_do_not_overlap', 'c14df2e9b077a18bcd3c9734442f9320'),
			('watermark_not_ahead_of_position', '0ac9d9339eea7a879f7907645ef2ccf6')) AS s(name, md5)
		WHERE s.name = q.name);

COMMENT ON COLUMN clickstream.quality_checks.builtin IS 'True for the checks the extension ships (they cannot be deleted: set enabled = false); pg_dump saves them only when modified, the restore''s CREATE EXTENSION makes the others.';

COMMENT ON COLUMN clickstream.quality_checks.modified IS 'True for a shipped check that was edited (enabled = false, say) or replaced by an INSERT of the same name: pg_dump saves it.';

SELECT pg_catalog.pg_extension_config_dump('clickstream.quality_checks', 'WHERE NOT builtin OR modified');

CREATE TRIGGER quality_checks_shipped
BEFORE INSERT OR UPDATE OR DELETE ON clickstream.quality_checks
FOR EACH ROW EXECUTE FUNCTION clickstream.keep_shipped_rows('name',
	'Disable it instead: UPDATE clickstream.quality_checks SET enabled = false WHERE name = ...');

CREATE TRIGGER quality_checks_shipped_truncate
BEFORE TRUNCATE ON clickstream.quality_checks
FOR EACH STATEMENT EXECUTE FUNCTION clickstream.keep_shipped_rows();

COMMENT ON TRIGGER quality_checks_shipped ON clickstream.quality_checks IS
'Keeps a dump exact: an edited shipped check (enabled = false, say) is marked modified, an inserted check replaces the unmodified shipped one of the same name, a shipped check cannot be deleted (clickstream.keep_shipped_rows).';

COMMENT ON TRIGGER quality_checks_shipped_truncate ON clickstream.quality_checks IS
'Refuses TRUNCATE while shipped checks are there (a restore would bring them back).';

-- 40_funnel ---------------------------------------------------------------
-- funnel_definition: builtin while the funnel is the shipped one, untouched
ALTER TABLE clickstream.funnel_definition ADD COLUMN builtin boolean NOT NULL DEFAULT false;
UPDATE clickstream.funnel_definition
SET builtin = true
WHERE (SELECT array_agg(ROW(f.step, f.name, f.event_type)::text ORDER BY f.step)
	   FROM clickstream.funnel_definition f)
	= ARRAY[ROW(1, 'view', 'page_view')::text, ROW(2, 'add to cart', 'add_to_cart')::text,
			ROW(3, 'begin checkout', 'begin_checkout')::text, ROW(4, 'purchase', 'purchase')::text];

SELECT pg_catalog.pg_extension_config_dump('clickstream.funnel_definition', 'WHERE NOT builtin');

COMMENT ON COLUMN clickstream.funnel_definition.builtin IS 'True while the funnel is the one the extension ships, untouched (not dumped by pg_dump: the restore''s CREATE EXTENSION makes it); any change to the funnel makes every step yours (false).';

-- The funnel is one whole: pg_dump saves it only once it is the user's (the
-- restore's CREATE EXTENSION makes the shipped one), so any change makes
-- every step the user's, and a step inserted where the shipped funnel has
-- one replaces the shipped funnel whole (what restoring a dump does).
CREATE FUNCTION clickstream.funnel_definition_shipped()
RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
	IF TG_LEVEL = 'ROW' THEN
		IF NOT NEW.builtin AND EXISTS (SELECT 1 FROM clickstream.funnel_definition f
									   WHERE f.builtin AND f.step = NEW.step) THEN
			DELETE FROM clickstream.funnel_definition f WHERE f.builtin;
		END IF;
		RETURN NEW;
	END IF;
	IF EXISTS (SELECT 1 FROM clickstream.funnel_definition f WHERE f.builtin) THEN
		UPDATE clickstream.funnel_definition f SET builtin = false WHERE f.builtin;
	END IF;
	RETURN NULL;
END
$$;

CREATE TRIGGER funnel_definition_shipped_step
BEFORE INSERT ON clickstream.funnel_definition
FOR EACH ROW EXECUTE FUNCTION clickstream.funnel_definition_shipped();

CREATE TRIGGER funnel_definition_shipped
AFTER INSERT OR UPDATE OR DELETE ON clickstream.funnel_definition
FOR EACH STATEMENT EXECUTE FUNCTION clickstream.funnel_definition_shipped();

COMMENT ON FUNCTION clickstream.funnel_definition_shipped() IS
'Trigger function of clickstream.funnel_definition that keeps a dump exact: a step inserted where the shipped funnel has one replaces the shipped funnel whole (as restoring a dump does); after any other change every step is the user''s (builtin = false), so that pg_dump saves the whole funnel.';

COMMENT ON TRIGGER funnel_definition_shipped_step ON clickstream.funnel_definition IS
'A step inserted where the shipped funnel has one replaces the shipped funnel whole (clickstream.funnel_definition_shipped).';

COMMENT ON TRIGGER funnel_definition_shipped ON clickstream.funnel_definition IS
'After any change, every step is the user''s and is dumped (clickstream.funnel_definition_shipped).';

-- 50_sessions -------------------------------------------------------------
-- sessions: re-created in the 0.2.0 layout (utm_medium after utm_source);
-- its rows are kept until the first refresh rebuilds gold
ALTER TABLE clickstream.sessions RENAME TO sessions_0_1_0;
ALTER INDEX clickstream.sessions_pkey RENAME TO sessions_0_1_0_pkey;
ALTER INDEX clickstream.sessions_user_start RENAME TO sessions_0_1_0_user_start;
ALTER INDEX clickstream.sessions_date RENAME TO sessions_0_1_0_date;

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
	utm_medium text,
	utm_campaign text,
	device text,
	country text,
	funnel_level integer NOT NULL,
	category_funnel jsonb NOT NULL,
	product_funnel jsonb NOT NULL
);

INSERT INTO clickstream.sessions (session_id, user_id, session_start, session_end, session_date,
	first_event_id, last_event_id, events, page_views, add_to_carts, checkouts, purchases, revenue,
	converted, landing_page, exit_page, utm_source, utm_campaign, device, country, funnel_level,
	category_funnel, product_funnel)
SELECT session_id, user_id, session_start, session_end, session_date, first_event_id,
	last_event_id, events, page_views, add_to_carts, checkouts, purchases, revenue, converted,
	landing_page, exit_page, utm_source, utm_campaign, device, country, funnel_level,
	category_funnel, product_funnel
FROM clickstream.sessions_0_1_0;
DROP TABLE clickstream.sessions_0_1_0;

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

COMMENT ON COLUMN clickstream.sessions.utm_medium IS 'First touch: utm_medium of the first event.';

COMMENT ON COLUMN clickstream.sessions.utm_campaign IS 'First touch: utm_campaign of the first event.';

COMMENT ON COLUMN clickstream.sessions.device IS 'device of the first event.';

COMMENT ON COLUMN clickstream.sessions.country IS 'country of the first event.';

COMMENT ON COLUMN clickstream.sessions.funnel_level IS 'Furthest step of the funnel (clickstream.funnel_definition) the session reached: clickstream.funnel_agg over its events, with the session as the window.';

COMMENT ON COLUMN clickstream.sessions.category_funnel IS 'Per product category of its events, the furthest funnel step reached with that category: {"category": level}. Step 1 needs an event of the category; later steps take an event of the category or one without a category, such as begin_checkout (clickstream.funnel_breakdown).';

COMMENT ON COLUMN clickstream.sessions.product_funnel IS 'Per product of its events, the furthest funnel step reached with that product, and the product''s category (the smallest its events carry, null when none): {"product_id": [level, "category"]}. Step 1 needs an event of the product; later steps take an event of the product or one without a product (clickstream.funnel_breakdown).';

-- gold_state: re-created in the 0.2.0 layout (silver_partitions before
-- updated_at); session_rules = NULL makes the first refresh rebuild gold
ALTER TABLE clickstream.gold_state RENAME TO gold_state_0_1_0;
ALTER INDEX clickstream.gold_state_pkey RENAME TO gold_state_0_1_0_pkey;
ALTER TABLE clickstream.gold_state_0_1_0
	RENAME CONSTRAINT gold_state_singleton_check TO gold_state_0_1_0_singleton_check;

CREATE TABLE clickstream.gold_state (
	singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
	touch_id bigint NOT NULL DEFAULT 0,
	session_rules jsonb,
	timezone_changed boolean NOT NULL DEFAULT false,
	interest_rules jsonb,
	silver_partitions text[],
	updated_at timestamptz
);

INSERT INTO clickstream.gold_state (singleton, touch_id, session_rules, timezone_changed,
	interest_rules, silver_partitions, updated_at)
SELECT singleton, touch_id, NULL, timezone_changed, NULL, NULL, updated_at
FROM clickstream.gold_state_0_1_0;
DROP TABLE clickstream.gold_state_0_1_0;

COMMENT ON TABLE clickstream.gold_state IS
'Where gold stands (one row): the clickstream.touched rows applied so far and the session rules clickstream.sessions was built with.';

COMMENT ON COLUMN clickstream.gold_state.singleton IS 'Always true: the table has one row.';

COMMENT ON COLUMN clickstream.gold_state.touch_id IS 'Gold watermark: touched rows up to this touch_id are reflected in gold.';

COMMENT ON COLUMN clickstream.gold_state.session_rules IS 'clickstream.gold_rules() (session rules, time zone, funnel steps) when sessions was last brought up to date; a change makes the next refresh rebuild sessions and the funnel tables.';

COMMENT ON COLUMN clickstream.gold_state.timezone_changed IS 'clickstream.timezone changed at some point: silver then holds event_date values derived in different zones, and gold looks for a user''s events two days around their times instead of on the exact days.';

COMMENT ON COLUMN clickstream.gold_state.interest_rules IS 'clickstream.interest_rules() when clickstream.high_interest_low_conversion was last built; a change makes the next refresh rebuild it.';

COMMENT ON COLUMN clickstream.gold_state.silver_partitions IS 'The day partitions of clickstream.events when gold was last brought up to date: one that has gone since (dropped or detached) makes the next refresh rebuild gold from the days that are left.';

COMMENT ON COLUMN clickstream.gold_state.updated_at IS 'When gold was last brought up to date.';

-- pg_dump saves the row, and restoring it comes after the restore's CREATE
-- EXTENSION has made a fresh one: the restored row takes its place.
CREATE FUNCTION clickstream.gold_state_replace()
RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
	DELETE FROM clickstream.gold_state;
	RETURN NEW;
END
$$;

CREATE TRIGGER gold_state_replace
BEFORE INSERT ON clickstream.gold_state
FOR EACH ROW EXECUTE FUNCTION clickstream.gold_state_replace();

COMMENT ON FUNCTION clickstream.gold_state_replace() IS
'Trigger function: a row inserted into clickstream.gold_state replaces the one there (restoring a dump replaces the fresh row of CREATE EXTENSION).';

COMMENT ON TRIGGER gold_state_replace ON clickstream.gold_state IS
'The table keeps one row: an inserted row replaces it (clickstream.gold_state_replace).';

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
	exit_page text, utm_source text, utm_medium text, utm_campaign text, device text,
	country text, funnel_level integer, category_funnel jsonb, product_funnel jsonb)
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
			   min(e.utm_medium) FILTER (WHERE z.event_index = 1),
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

-- 60_funnel_gold ----------------------------------------------------------
-- Maintenance -----------------------------------------------------------------------

-- Per-call scratch tables of the funnel deltas; emptied at every commit.
CREATE FUNCTION clickstream.funnel_scratch()
RETURNS void
LANGUAGE plpgsql
AS $$
BEGIN
	-- the sessions a step removed (sign -1) and wrote (+1), whole: the
	-- funnel tables and the marts (70_marts.sql) take what they count
	IF to_regclass('pg_temp.clickstream_session_delta') IS NULL THEN
		CREATE TEMP TABLE clickstream_session_delta (
			sign integer NOT NULL,
			LIKE clickstream.sessions
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

COMMENT ON FUNCTION clickstream.funnel_scratch() IS
'Internal: create the session''s scratch tables of the funnel deltas (pg_temp.clickstream_session_delta: the sessions a step removed and wrote, with a sign; pg_temp.clickstream_funnel_delta: what they count netted per day, key and level).';

-- Apply pg_temp.clickstream_session_delta to every funnel table: first net
-- it per key and level (a session rewritten unchanged cancels out), then add
-- it to each table.
CREATE OR REPLACE FUNCTION clickstream.apply_funnel_delta()
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
'Internal (clickstream.refresh_gold()): net what the sessions removed (-1) and written (+1) in this step counted, per day, key and level (pg_temp.clickstream_funnel_delta), add it to daily_funnel, funnel_by_category and product_funnel, and update high_interest_low_conversion for the products touched.';

-- Rebuild every funnel table from clickstream.sessions.
CREATE OR REPLACE FUNCTION clickstream.rebuild_funnels()
RETURNS void
LANGUAGE plpgsql
AS $$
BEGIN
	PERFORM clickstream.funnel_scratch();
	DELETE FROM clickstream.daily_funnel;
	DELETE FROM clickstream.funnel_by_category;
	DELETE FROM clickstream.product_funnel;
	DELETE FROM clickstream.high_interest_low_conversion;
	DELETE FROM pg_temp.clickstream_session_delta;
	INSERT INTO pg_temp.clickstream_session_delta
	SELECT 1, s.* FROM clickstream.sessions s;
	PERFORM clickstream.apply_funnel_delta();
	DELETE FROM pg_temp.clickstream_session_delta;
END
$$;

COMMENT ON FUNCTION clickstream.rebuild_funnels() IS
'Internal (clickstream.rebuild_gold()): rebuild daily_funnel, funnel_by_category, product_funnel and high_interest_low_conversion from clickstream.sessions.';

-- Full recomputations, for clickstream.verify_gold(): the same sums taken
-- over all of clickstream.sessions.
CREATE FUNCTION clickstream.recompute_funnels()
RETURNS TABLE (kind text, day date, key text, category text, step integer, step_name text,
	sessions bigint, reached bigint, conversion_from_previous numeric,
	conversion_from_first numeric, conversion_overall numeric)
LANGUAGE sql STABLE
AS $$
	WITH counted AS (
		SELECT 'daily' AS kind, s.session_date AS day, '' AS key, '' AS category,
			   s.funnel_level AS level
		FROM clickstream.sessions s
		UNION ALL
		SELECT 'category', s.session_date, c.key, c.key, c.value::integer
		FROM clickstream.sessions s, jsonb_each_text(s.category_funnel) c
		UNION ALL
		SELECT 'product', s.session_date, p.key, coalesce(p.value ->> 1, ''), (p.value ->> 0)::integer
		FROM clickstream.sessions s, jsonb_each(s.product_funnel) p),
	sums AS (
		SELECT c.kind, c.day, c.key, c.category, f.step, f.name, count(*) AS sessions,
			   count(*) FILTER (WHERE c.level >= f.step) AS reached
		FROM counted c CROSS JOIN clickstream.funnel_definition f
		GROUP BY c.kind, c.day, c.key, c.category, f.step, f.name)
	SELECT s.kind, s.day, s.key, s.category, s.step, s.name, s.sessions, s.reached,
		   round(s.reached::numeric / nullif(coalesce(lag(s.reached) OVER w, s.sessions), 0), 4),
		   round(s.reached::numeric / nullif(first_value(s.reached) OVER w, 0), 4),
		   round(s.reached::numeric / nullif(s.sessions, 0), 4)
	FROM sums s
	WINDOW w AS (PARTITION BY s.kind, s.day, s.key, s.category ORDER BY s.step)
$$;

COMMENT ON FUNCTION clickstream.recompute_funnels() IS
'Full recomputation of the funnel tables from clickstream.sessions, one row per kind (daily, category, product), day, key, category and step.';

CREATE FUNCTION clickstream.recompute_high_interest_low_conversion()
RETURNS SETOF clickstream.high_interest_low_conversion
LANGUAGE sql STABLE
AS $$
	SELECT x.day, x.product_id, x.category, x.views, x.carts, x.purchases,
		   round(x.carts::numeric / x.views, 4), round(x.purchases::numeric / x.views, 4)
	FROM (SELECT f.day, f.key AS product_id, f.category,
				 max(f.reached) FILTER (WHERE f.step = 1) AS views,
				 max(f.reached) FILTER (WHERE f.step = 2) AS carts,
				 max(f.reached) FILTER (WHERE f.step = (SELECT max(d.step) FROM clickstream.funnel_definition d)) AS purchases
		  FROM clickstream.recompute_funnels() f
		  WHERE f.kind = 'product'
		  GROUP BY f.day, f.key, f.category) x
	WHERE x.views > 0
		AND (x.views >= current_setting('clickstream.interest_min_views')::bigint
			 OR x.carts >= current_setting('clickstream.interest_min_carts')::bigint)
		AND x.purchases <= current_setting('clickstream.interest_max_conversion')::numeric * x.views
$$;

COMMENT ON FUNCTION clickstream.recompute_high_interest_low_conversion() IS
'Full recomputation of clickstream.high_interest_low_conversion from clickstream.sessions and the clickstream.interest_* thresholds.';

REVOKE ALL ON FUNCTION clickstream.funnel_scratch() FROM PUBLIC;

-- 70_marts ----------------------------------------------------------------
-- Gold: the marts dashboards read.  Days and hours are in
-- clickstream.timezone.  Every mart is kept equal to a full recomputation
-- from silver (and from clickstream.sessions, itself equal to one) by every
-- refresh step, in the step's transaction; clickstream.verify_gold()
-- (80_gold.sql) compares them with the recomputations below.
--
--   daily_metrics, hourly_metrics, category_daily, product_daily, products,
--   orders, users, active_users, cohort_retention, traffic_daily,
--   audience_daily, pages_daily; the views live and live_summary.
--
-- How they are maintained (docs/marts.md, "How the marts stay exact"):
--   * what the step's new events add (pg_temp.clickstream_step_events,
--     written by promote_rows as it writes silver): counts and sums are
--     added to the rows of their day, hour, category, product, page, order;
--   * distinct users are sets with one row per member: user_days (user,
--     day, hours of activity), category_day_users and page_day_users; a
--     member that is new adds 1.  WAU, MAU and the retention table follow
--     from the new (user, day) pairs and each user's nearest active days
--     before and after (index probes), never from a recount;
--   * what sessions count (sessions, bounces, conversions, traffic,
--     audience, entrances and exits) comes from the sessions the step
--     removed (-1) and wrote (+1), as for the funnel tables; distinct users
--     of traffic and audience are reference-counted sets
--     (traffic_day_users, audience_day_users);
--   * orders: the lines of the step are added to their order; what an order
--     counted before and counts now goes to the order delta, which moves
--     the daily and hourly order counts and the owners' lifetime value.
-- So a step costs what it adds, whatever the size of history.

-- Conventions ------------------------------------------------------------------

CREATE FUNCTION clickstream.local_day(ts timestamptz)
RETURNS date
LANGUAGE sql STABLE PARALLEL SAFE
AS $$ SELECT (ts AT TIME ZONE current_setting('clickstream.timezone'))::date $$;

COMMENT ON FUNCTION clickstream.local_day(timestamptz) IS
'The day of a time in clickstream.timezone: the day of every daily mart.';

CREATE FUNCTION clickstream.local_hour(ts timestamptz)
RETURNS timestamptz
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
	SELECT date_trunc('hour', ts AT TIME ZONE current_setting('clickstream.timezone'))
		   AT TIME ZONE current_setting('clickstream.timezone')
$$;

COMMENT ON FUNCTION clickstream.local_hour(timestamptz) IS
'The start of the hour of a time in clickstream.timezone, as a timestamptz: the key of clickstream.hourly_metrics (on the day clocks go back, the repeated hour is one bucket).';

CREATE FUNCTION clickstream.hour_of_day(ts timestamptz)
RETURNS integer
LANGUAGE sql STABLE PARALLEL SAFE
AS $$ SELECT extract(hour FROM ts AT TIME ZONE current_setting('clickstream.timezone'))::integer $$;

COMMENT ON FUNCTION clickstream.hour_of_day(timestamptz) IS
'The hour of the day (0-23) of a time in clickstream.timezone.';

CREATE FUNCTION clickstream.week_of(day date)
RETURNS date
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT day - (extract(isodow FROM day)::integer - 1) $$;

COMMENT ON FUNCTION clickstream.week_of(date) IS
'The Monday of the ISO week of a day: the cohort_week of clickstream.cohort_retention.';

CREATE FUNCTION clickstream.label(value text, missing text)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT coalesce(nullif(value, ''), missing) $$;

COMMENT ON FUNCTION clickstream.label(text, text) IS
'A dimension value for the marts: the value, or the given label when it is NULL or empty ((direct), (none), (not set)).';

CREATE FUNCTION clickstream.order_key(order_id text, event_id text)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT coalesce(nullif(order_id, ''), 'event:' || event_id) $$;

COMMENT ON FUNCTION clickstream.order_key(text, text) IS
'The order a purchase event is a line of: its order_id; a purchase without one (accepted when clickstream.require_order_id is off) is an order of its own, event:<event_id>.';

CREATE FUNCTION clickstream.rate(part numeric, whole numeric)
RETURNS numeric
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT round(part / nullif(whole, 0), 4) $$;

COMMENT ON FUNCTION clickstream.rate(numeric, numeric) IS
'part / whole rounded to 4 decimals, NULL when whole is 0 or NULL: every rate of the marts.';

-- The marts --------------------------------------------------------------------

CREATE TABLE clickstream.daily_metrics (
	day date PRIMARY KEY,
	events bigint NOT NULL,
	page_views bigint NOT NULL,
	users bigint NOT NULL,
	new_users bigint NOT NULL,
	sessions bigint NOT NULL,
	bounced_sessions bigint NOT NULL,
	converted_sessions bigint NOT NULL,
	session_seconds numeric NOT NULL,
	avg_session_seconds numeric,
	bounce_rate numeric,
	conversion_rate numeric,
	orders bigint NOT NULL,
	units bigint NOT NULL,
	revenue numeric NOT NULL,
	aov numeric,
	revenue_growth numeric,
	users_growth numeric,
	orders_growth numeric
);

COMMENT ON TABLE clickstream.daily_metrics IS
'Gold: the shop per day (clickstream.timezone), one row per day with events. Events, page views, units and revenue count the events of the day; users the distinct users active that day; new_users those whose first event ever is that day; sessions and their measures the sessions that started that day; orders the orders whose first line is that day. Growth columns compare with the previous calendar day. Maintained by every refresh, equal to a full recomputation from silver.';

COMMENT ON COLUMN clickstream.daily_metrics.day IS 'Day, in clickstream.timezone.';

COMMENT ON COLUMN clickstream.daily_metrics.events IS 'Silver events of the day.';

COMMENT ON COLUMN clickstream.daily_metrics.page_views IS 'page_view events of the day.';

COMMENT ON COLUMN clickstream.daily_metrics.users IS 'Distinct users with an event that day (the DAU of clickstream.active_users).';

COMMENT ON COLUMN clickstream.daily_metrics.new_users IS 'Users whose first event ever is on that day.';

COMMENT ON COLUMN clickstream.daily_metrics.sessions IS 'Sessions (clickstream.sessions) that started that day.';

COMMENT ON COLUMN clickstream.daily_metrics.bounced_sessions IS 'Of those, sessions of one page view and no other event.';

COMMENT ON COLUMN clickstream.daily_metrics.converted_sessions IS 'Of those, sessions with a purchase.';

COMMENT ON COLUMN clickstream.daily_metrics.session_seconds IS 'Total duration of those sessions, in seconds (first to last event).';

COMMENT ON COLUMN clickstream.daily_metrics.avg_session_seconds IS 'session_seconds / sessions, 4 decimals.';

COMMENT ON COLUMN clickstream.daily_metrics.bounce_rate IS 'bounced_sessions / sessions, 4 decimals.';

COMMENT ON COLUMN clickstream.daily_metrics.conversion_rate IS 'converted_sessions / sessions, 4 decimals.';

COMMENT ON COLUMN clickstream.daily_metrics.orders IS 'Orders (clickstream.orders) whose first line is on that day.';

COMMENT ON COLUMN clickstream.daily_metrics.units IS 'Units of the purchase events of the day (quantity, 1 when absent).';

COMMENT ON COLUMN clickstream.daily_metrics.revenue IS 'Revenue of the purchase events of the day (price x quantity).';

COMMENT ON COLUMN clickstream.daily_metrics.aov IS 'Average order value: revenue / orders, 4 decimals.';

COMMENT ON COLUMN clickstream.daily_metrics.revenue_growth IS 'Day-over-day growth of revenue: (revenue - revenue of the previous day) / revenue of the previous day, 4 decimals; NULL without a previous day or when it was 0.';

COMMENT ON COLUMN clickstream.daily_metrics.users_growth IS 'Day-over-day growth of users, as revenue_growth.';

COMMENT ON COLUMN clickstream.daily_metrics.orders_growth IS 'Day-over-day growth of orders, as revenue_growth.';

CREATE TABLE clickstream.hourly_metrics (
	hour timestamptz PRIMARY KEY,
	day date NOT NULL,
	events bigint NOT NULL,
	users bigint NOT NULL,
	sessions_started bigint NOT NULL,
	orders bigint NOT NULL,
	revenue numeric NOT NULL
);

CREATE INDEX hourly_metrics_day ON clickstream.hourly_metrics (day);

COMMENT ON TABLE clickstream.hourly_metrics IS
'Gold: the shop per hour (clickstream.timezone), one row per hour with events. Maintained by every refresh, equal to a full recomputation from silver.';

COMMENT ON COLUMN clickstream.hourly_metrics.hour IS 'Start of the hour in clickstream.timezone (on the day clocks go back, the repeated hour is one row).';

COMMENT ON COLUMN clickstream.hourly_metrics.day IS 'Its day.';

COMMENT ON COLUMN clickstream.hourly_metrics.events IS 'Silver events in the hour.';

COMMENT ON COLUMN clickstream.hourly_metrics.users IS 'Distinct users with an event in the hour.';

COMMENT ON COLUMN clickstream.hourly_metrics.sessions_started IS 'Sessions that started in the hour.';

COMMENT ON COLUMN clickstream.hourly_metrics.orders IS 'Orders whose first line is in the hour.';

COMMENT ON COLUMN clickstream.hourly_metrics.revenue IS 'Revenue of the purchase events in the hour.';

CREATE TABLE clickstream.category_daily (
	day date NOT NULL,
	category text NOT NULL,
	page_views bigint NOT NULL,
	add_to_carts bigint NOT NULL,
	purchases bigint NOT NULL,
	units bigint NOT NULL,
	revenue numeric NOT NULL,
	users bigint NOT NULL,
	PRIMARY KEY (day, category)
);

COMMENT ON TABLE clickstream.category_daily IS
'Gold: events and revenue per product category and day; events without a category count under (not set), so the categories of a day add up to daily_metrics. Maintained by every refresh, equal to a full recomputation from silver.';

COMMENT ON COLUMN clickstream.category_daily.day IS 'Day of the events.';

COMMENT ON COLUMN clickstream.category_daily.category IS 'category of the events; (not set) when they had none.';

COMMENT ON COLUMN clickstream.category_daily.page_views IS 'page_view events.';

COMMENT ON COLUMN clickstream.category_daily.add_to_carts IS 'add_to_cart events.';

COMMENT ON COLUMN clickstream.category_daily.purchases IS 'purchase events (order lines).';

COMMENT ON COLUMN clickstream.category_daily.units IS 'Units of those purchases.';

COMMENT ON COLUMN clickstream.category_daily.revenue IS 'Revenue of those purchases.';

COMMENT ON COLUMN clickstream.category_daily.users IS 'Distinct users with an event of the category that day.';

CREATE TABLE clickstream.product_daily (
	day date NOT NULL,
	product_id text NOT NULL,
	category text,
	page_views bigint NOT NULL,
	add_to_carts bigint NOT NULL,
	removes bigint NOT NULL,
	purchases bigint NOT NULL,
	units bigint NOT NULL,
	revenue numeric NOT NULL,
	PRIMARY KEY (day, product_id)
);

CREATE INDEX product_daily_product ON clickstream.product_daily (product_id, day);

COMMENT ON TABLE clickstream.product_daily IS
'Gold: events and revenue per product and day (events with a product_id). Maintained by every refresh, equal to a full recomputation from silver.';

COMMENT ON COLUMN clickstream.product_daily.day IS 'Day of the events.';

COMMENT ON COLUMN clickstream.product_daily.product_id IS 'Product.';

COMMENT ON COLUMN clickstream.product_daily.category IS 'The category its events carried that day (the smallest in byte order if they disagree); NULL when none did.';

COMMENT ON COLUMN clickstream.product_daily.page_views IS 'page_view events of the product.';

COMMENT ON COLUMN clickstream.product_daily.add_to_carts IS 'add_to_cart events.';

COMMENT ON COLUMN clickstream.product_daily.removes IS 'remove_from_cart events.';

COMMENT ON COLUMN clickstream.product_daily.purchases IS 'purchase events (order lines).';

COMMENT ON COLUMN clickstream.product_daily.units IS 'Units purchased.';

COMMENT ON COLUMN clickstream.product_daily.revenue IS 'Revenue of its purchases.';

CREATE TABLE clickstream.products (
	product_id text PRIMARY KEY,
	category text,
	first_seen timestamptz NOT NULL,
	last_seen timestamptz NOT NULL,
	page_views bigint NOT NULL,
	add_to_carts bigint NOT NULL,
	removes bigint NOT NULL,
	purchases bigint NOT NULL,
	units bigint NOT NULL,
	revenue numeric NOT NULL,
	view_to_cart_rate numeric,
	cart_to_purchase_rate numeric,
	last_price numeric,
	last_price_at timestamptz,
	last_price_event_id text COLLATE "C"
);

COMMENT ON TABLE clickstream.products IS
'Gold: one row per product over all of silver (the SKU 360): when it was first and last seen, what happened to it, its rates and its last price. Maintained by every refresh, equal to a full recomputation from silver.';

COMMENT ON COLUMN clickstream.products.product_id IS 'Product.';

COMMENT ON COLUMN clickstream.products.category IS 'The category its events carry (the smallest in byte order if they disagree); NULL when none does.';

COMMENT ON COLUMN clickstream.products.first_seen IS 'Time of its first event.';

COMMENT ON COLUMN clickstream.products.last_seen IS 'Time of its last event.';

COMMENT ON COLUMN clickstream.products.page_views IS 'page_view events of the product.';

COMMENT ON COLUMN clickstream.products.add_to_carts IS 'add_to_cart events.';

COMMENT ON COLUMN clickstream.products.removes IS 'remove_from_cart events.';

COMMENT ON COLUMN clickstream.products.purchases IS 'purchase events (order lines).';

COMMENT ON COLUMN clickstream.products.units IS 'Units purchased.';

COMMENT ON COLUMN clickstream.products.revenue IS 'Revenue of its purchases.';

COMMENT ON COLUMN clickstream.products.view_to_cart_rate IS 'add_to_carts / page_views (events, not sessions: see product_funnel for sessions), 4 decimals.';

COMMENT ON COLUMN clickstream.products.cart_to_purchase_rate IS 'purchases / add_to_carts, 4 decimals.';

COMMENT ON COLUMN clickstream.products.last_price IS 'price of its latest event that carries one (by ts, then event_id).';

COMMENT ON COLUMN clickstream.products.last_price_at IS 'ts of that event.';

COMMENT ON COLUMN clickstream.products.last_price_event_id IS 'event_id of that event.';

CREATE TABLE clickstream.orders (
	order_id text PRIMARY KEY,
	user_id text COLLATE "C" NOT NULL,
	session_id uuid,
	ordered_at timestamptz NOT NULL,
	day date NOT NULL,
	lines integer NOT NULL,
	units bigint NOT NULL,
	revenue numeric NOT NULL,
	first_event_id text COLLATE "C" NOT NULL
);

CREATE INDEX orders_user ON clickstream.orders (user_id, ordered_at);

CREATE INDEX orders_day ON clickstream.orders (day);

COMMENT ON TABLE clickstream.orders IS
'Gold: the order fact, one row per order. The purchase events with one order_id are the lines of one order, whenever they arrive; the order belongs to the user and session of its first line. Maintained by every refresh, equal to a full recomputation from silver.';

COMMENT ON COLUMN clickstream.orders.order_id IS 'order_id of its purchase events; event:<event_id> for a purchase without one (accepted when clickstream.require_order_id is off), which is an order of its own.';

COMMENT ON COLUMN clickstream.orders.user_id IS 'User of its first line (the earliest purchase event, by ts then event_id).';

COMMENT ON COLUMN clickstream.orders.session_id IS 'Session (clickstream.sessions) of its first line.';

COMMENT ON COLUMN clickstream.orders.ordered_at IS 'ts of its first line.';

COMMENT ON COLUMN clickstream.orders.day IS 'Day of ordered_at in clickstream.timezone.';

COMMENT ON COLUMN clickstream.orders.lines IS 'Purchase events of the order.';

COMMENT ON COLUMN clickstream.orders.units IS 'Units: the sum of their quantities (1 when absent).';

COMMENT ON COLUMN clickstream.orders.revenue IS 'Revenue: the sum of their price x quantity.';

COMMENT ON COLUMN clickstream.orders.first_event_id IS 'event_id of its first line.';

CREATE TABLE clickstream.users (
	user_id text COLLATE "C" PRIMARY KEY,
	first_seen timestamptz NOT NULL,
	last_seen timestamptz NOT NULL,
	first_event_id text COLLATE "C" NOT NULL,
	last_event_id text COLLATE "C" NOT NULL,
	utm_source text,
	utm_medium text,
	utm_campaign text,
	country text,
	device text,
	events bigint NOT NULL,
	sessions bigint NOT NULL,
	orders bigint NOT NULL,
	revenue numeric NOT NULL,
	first_order_at timestamptz,
	days_active integer NOT NULL
);

COMMENT ON TABLE clickstream.users IS
'Gold: one row per user over all of silver, with first touch and lifetime value. Maintained by every refresh, equal to a full recomputation from silver.';

COMMENT ON COLUMN clickstream.users.user_id IS 'User.';

COMMENT ON COLUMN clickstream.users.first_seen IS 'Time of the user''s first event.';

COMMENT ON COLUMN clickstream.users.last_seen IS 'Time of the user''s last event.';

COMMENT ON COLUMN clickstream.users.first_event_id IS 'event_id of the first event (the first in (ts, event_id) order).';

COMMENT ON COLUMN clickstream.users.last_event_id IS 'event_id of the last event.';

COMMENT ON COLUMN clickstream.users.utm_source IS 'First touch: utm_source of the first event (NULL: direct).';

COMMENT ON COLUMN clickstream.users.utm_medium IS 'First touch: utm_medium of the first event.';

COMMENT ON COLUMN clickstream.users.utm_campaign IS 'First touch: utm_campaign of the first event.';

COMMENT ON COLUMN clickstream.users.country IS 'country of the last event.';

COMMENT ON COLUMN clickstream.users.device IS 'device of the last event.';

COMMENT ON COLUMN clickstream.users.events IS 'Silver events of the user.';

COMMENT ON COLUMN clickstream.users.sessions IS 'Sessions of the user (clickstream.sessions).';

COMMENT ON COLUMN clickstream.users.orders IS 'Orders of the user (clickstream.orders.user_id).';

COMMENT ON COLUMN clickstream.users.revenue IS 'Lifetime value: the revenue of those orders.';

COMMENT ON COLUMN clickstream.users.first_order_at IS 'ordered_at of the first of those orders; NULL when none.';

COMMENT ON COLUMN clickstream.users.days_active IS 'Days (clickstream.timezone) with at least one event of the user.';

CREATE TABLE clickstream.active_users (
	day date PRIMARY KEY,
	dau bigint NOT NULL,
	wau bigint NOT NULL,
	mau bigint NOT NULL,
	stickiness numeric
);

COMMENT ON TABLE clickstream.active_users IS
'Gold: exact distinct active users per day: that day, in the 7 days and in the 30 days ending that day (clickstream.timezone); a row for every day that is in the 30-day window of some active day. Maintained by every refresh from the new (user, day) pairs only, equal to a full recomputation from silver.';

COMMENT ON COLUMN clickstream.active_users.day IS 'Day the windows end (included).';

COMMENT ON COLUMN clickstream.active_users.dau IS 'Distinct users with an event that day.';

COMMENT ON COLUMN clickstream.active_users.wau IS 'Distinct users with an event in the 7 days ending that day.';

COMMENT ON COLUMN clickstream.active_users.mau IS 'Distinct users with an event in the 30 days ending that day.';

COMMENT ON COLUMN clickstream.active_users.stickiness IS 'dau / mau, 4 decimals.';

CREATE TABLE clickstream.cohort_retention (
	cohort_week date NOT NULL,
	week_number integer NOT NULL,
	cohort_users bigint NOT NULL,
	active_users bigint NOT NULL,
	retention_rate numeric,
	PRIMARY KEY (cohort_week, week_number)
);

COMMENT ON TABLE clickstream.cohort_retention IS
'Gold: the retention table. Users belong to the cohort of the ISO week (Monday, clickstream.timezone) of their first event; a row tells how many of them had an event week_number weeks later (rows only where some did; week 0 is the whole cohort). Maintained by every refresh, equal to a full recomputation from silver.';

COMMENT ON COLUMN clickstream.cohort_retention.cohort_week IS 'Monday of the week of the users'' first event.';

COMMENT ON COLUMN clickstream.cohort_retention.week_number IS 'Weeks after the cohort week (0 = that week).';

COMMENT ON COLUMN clickstream.cohort_retention.cohort_users IS 'Users in the cohort.';

COMMENT ON COLUMN clickstream.cohort_retention.active_users IS 'Of them, users with an event in week week_number.';

COMMENT ON COLUMN clickstream.cohort_retention.retention_rate IS 'active_users / cohort_users, 4 decimals.';

CREATE TABLE clickstream.traffic_daily (
	day date NOT NULL,
	utm_source text NOT NULL,
	utm_medium text NOT NULL,
	utm_campaign text NOT NULL,
	sessions bigint NOT NULL,
	users bigint NOT NULL,
	converted_sessions bigint NOT NULL,
	revenue numeric NOT NULL,
	PRIMARY KEY (day, utm_source, utm_medium, utm_campaign)
);

COMMENT ON TABLE clickstream.traffic_daily IS
'Gold: acquisition per day by the first touch of each session (the utm_* of its first event), as Google Analytics reports it: a missing source is (direct), a missing medium or campaign (none). Sessions by the day they started. Maintained by every refresh, equal to a full recomputation from clickstream.sessions.';

COMMENT ON COLUMN clickstream.traffic_daily.day IS 'Day the sessions started.';

COMMENT ON COLUMN clickstream.traffic_daily.utm_source IS 'utm_source of the session''s first event; (direct) when none.';

COMMENT ON COLUMN clickstream.traffic_daily.utm_medium IS 'utm_medium of the session''s first event; (none) when none.';

COMMENT ON COLUMN clickstream.traffic_daily.utm_campaign IS 'utm_campaign of the session''s first event; (none) when none.';

COMMENT ON COLUMN clickstream.traffic_daily.sessions IS 'Sessions.';

COMMENT ON COLUMN clickstream.traffic_daily.users IS 'Distinct users of those sessions.';

COMMENT ON COLUMN clickstream.traffic_daily.converted_sessions IS 'Sessions with a purchase.';

COMMENT ON COLUMN clickstream.traffic_daily.revenue IS 'Revenue of the purchases of those sessions.';

CREATE TABLE clickstream.audience_daily (
	day date NOT NULL,
	country text NOT NULL,
	device text NOT NULL,
	sessions bigint NOT NULL,
	users bigint NOT NULL,
	converted_sessions bigint NOT NULL,
	revenue numeric NOT NULL,
	PRIMARY KEY (day, country, device)
);

COMMENT ON TABLE clickstream.audience_daily IS
'Gold: sessions per day by the country and device of their first event ((not set) when missing). Maintained by every refresh, equal to a full recomputation from clickstream.sessions.';

COMMENT ON COLUMN clickstream.audience_daily.day IS 'Day the sessions started.';

COMMENT ON COLUMN clickstream.audience_daily.country IS 'country of the session''s first event; (not set) when none.';

COMMENT ON COLUMN clickstream.audience_daily.device IS 'device of the session''s first event; (not set) when none.';

COMMENT ON COLUMN clickstream.audience_daily.sessions IS 'Sessions.';

COMMENT ON COLUMN clickstream.audience_daily.users IS 'Distinct users of those sessions.';

COMMENT ON COLUMN clickstream.audience_daily.converted_sessions IS 'Sessions with a purchase.';

COMMENT ON COLUMN clickstream.audience_daily.revenue IS 'Revenue of the purchases of those sessions.';

CREATE TABLE clickstream.pages_daily (
	day date NOT NULL,
	page_url text NOT NULL,
	page_views bigint NOT NULL,
	entrances bigint NOT NULL,
	exits bigint NOT NULL,
	users bigint NOT NULL,
	PRIMARY KEY (day, page_url)
);

COMMENT ON TABLE clickstream.pages_daily IS
'Gold: pages per day: views, and how often sessions started (landing page) or ended (exit page) on them ((not set) for a session whose first or last event has no page_url). Maintained by every refresh, equal to a full recomputation from silver and clickstream.sessions.';

COMMENT ON COLUMN clickstream.pages_daily.day IS 'Day of the page views; for entrances and exits the day the session started.';

COMMENT ON COLUMN clickstream.pages_daily.page_url IS 'page_url.';

COMMENT ON COLUMN clickstream.pages_daily.page_views IS 'page_view events of the page that day.';

COMMENT ON COLUMN clickstream.pages_daily.entrances IS 'Sessions that started there (landing_page).';

COMMENT ON COLUMN clickstream.pages_daily.exits IS 'Sessions that ended there (exit_page).';

COMMENT ON COLUMN clickstream.pages_daily.users IS 'Distinct users who viewed the page (page_view) that day.';

-- The sets behind the distinct counts -------------------------------------------

CREATE TABLE clickstream.user_days (
	user_id text COLLATE "C" NOT NULL,
	day date NOT NULL,
	events bigint NOT NULL,
	hours integer NOT NULL,
	PRIMARY KEY (user_id, day)
);

COMMENT ON TABLE clickstream.user_days IS
'Gold (state of the marts): one row per user and day with an event (clickstream.timezone): the set behind daily users, new users, days_active, WAU, MAU and retention.';

COMMENT ON COLUMN clickstream.user_days.user_id IS 'User.';

COMMENT ON COLUMN clickstream.user_days.day IS 'Day with at least one event of the user.';

COMMENT ON COLUMN clickstream.user_days.events IS 'The user''s events that day.';

COMMENT ON COLUMN clickstream.user_days.hours IS 'Hours of the day (bit 0 = 00:00-00:59 ... bit 23) with an event of the user: the set behind hourly_metrics.users.';

CREATE TABLE clickstream.category_day_users (
	day date NOT NULL,
	category text NOT NULL,
	user_id text COLLATE "C" NOT NULL,
	PRIMARY KEY (day, category, user_id)
);

COMMENT ON TABLE clickstream.category_day_users IS
'Gold (state of the marts): the users with an event of a category on a day, behind category_daily.users.';

COMMENT ON COLUMN clickstream.category_day_users.day IS 'Day.';

COMMENT ON COLUMN clickstream.category_day_users.category IS 'Category ((not set) for events without one).';

COMMENT ON COLUMN clickstream.category_day_users.user_id IS 'User.';

CREATE TABLE clickstream.page_day_users (
	day date NOT NULL,
	page_url text NOT NULL,
	user_id text COLLATE "C" NOT NULL,
	PRIMARY KEY (day, page_url, user_id)
);

COMMENT ON TABLE clickstream.page_day_users IS
'Gold (state of the marts): the users who viewed a page on a day, behind pages_daily.users.';

COMMENT ON COLUMN clickstream.page_day_users.day IS 'Day.';

COMMENT ON COLUMN clickstream.page_day_users.page_url IS 'Page ((not set) for page views without a page_url).';

COMMENT ON COLUMN clickstream.page_day_users.user_id IS 'User.';

CREATE TABLE clickstream.traffic_day_users (
	day date NOT NULL,
	utm_source text NOT NULL,
	utm_medium text NOT NULL,
	utm_campaign text NOT NULL,
	user_id text COLLATE "C" NOT NULL,
	sessions bigint NOT NULL,
	PRIMARY KEY (day, utm_source, utm_medium, utm_campaign, user_id)
);

COMMENT ON TABLE clickstream.traffic_day_users IS
'Gold (state of the marts): per day and first touch, the users with sessions of it and how many: behind traffic_daily.users (a user counts while sessions > 0; sessions merge and split, so membership is counted, not only added).';

COMMENT ON COLUMN clickstream.traffic_day_users.day IS 'Day the sessions started.';

COMMENT ON COLUMN clickstream.traffic_day_users.utm_source IS 'As in traffic_daily.';

COMMENT ON COLUMN clickstream.traffic_day_users.utm_medium IS 'As in traffic_daily.';

COMMENT ON COLUMN clickstream.traffic_day_users.utm_campaign IS 'As in traffic_daily.';

COMMENT ON COLUMN clickstream.traffic_day_users.user_id IS 'User.';

COMMENT ON COLUMN clickstream.traffic_day_users.sessions IS 'The user''s sessions of that day and first touch (always > 0).';

CREATE TABLE clickstream.audience_day_users (
	day date NOT NULL,
	country text NOT NULL,
	device text NOT NULL,
	user_id text COLLATE "C" NOT NULL,
	sessions bigint NOT NULL,
	PRIMARY KEY (day, country, device, user_id)
);

COMMENT ON TABLE clickstream.audience_day_users IS
'Gold (state of the marts): per day, country and device, the users with sessions of it and how many, behind audience_daily.users.';

COMMENT ON COLUMN clickstream.audience_day_users.day IS 'Day the sessions started.';

COMMENT ON COLUMN clickstream.audience_day_users.country IS 'As in audience_daily.';

COMMENT ON COLUMN clickstream.audience_day_users.device IS 'As in audience_daily.';

COMMENT ON COLUMN clickstream.audience_day_users.user_id IS 'User.';

COMMENT ON COLUMN clickstream.audience_day_users.sessions IS 'The user''s sessions of that day, country and device (always > 0).';

-- Full recomputations ------------------------------------------------------------
-- What each mart and set must hold, from silver (and clickstream.sessions),
-- written once, plainly: rebuild_gold() fills the tables with them and
-- verify_gold() compares the tables with them (80_gold.sql).

CREATE FUNCTION clickstream.recompute_user_days()
RETURNS SETOF clickstream.user_days
LANGUAGE sql STABLE
AS $$
	SELECT e.user_id, clickstream.local_day(e.ts), count(*),
		   bit_or(1 << clickstream.hour_of_day(e.ts))
	FROM clickstream.events e
	GROUP BY 1, 2
$$;

COMMENT ON FUNCTION clickstream.recompute_user_days() IS
'Full recomputation of clickstream.user_days from silver.';

CREATE FUNCTION clickstream.recompute_category_day_users()
RETURNS SETOF clickstream.category_day_users
LANGUAGE sql STABLE
AS $$
	SELECT DISTINCT clickstream.local_day(e.ts), clickstream.label(e.category, '(not set)'), e.user_id
	FROM clickstream.events e
$$;

COMMENT ON FUNCTION clickstream.recompute_category_day_users() IS
'Full recomputation of clickstream.category_day_users from silver.';

CREATE FUNCTION clickstream.recompute_page_day_users()
RETURNS SETOF clickstream.page_day_users
LANGUAGE sql STABLE
AS $$
	SELECT DISTINCT clickstream.local_day(e.ts), clickstream.label(e.page_url, '(not set)'), e.user_id
	FROM clickstream.events e
	WHERE e.event_type = 'page_view'
$$;

COMMENT ON FUNCTION clickstream.recompute_page_day_users() IS
'Full recomputation of clickstream.page_day_users from silver.';

CREATE FUNCTION clickstream.recompute_traffic_day_users()
RETURNS SETOF clickstream.traffic_day_users
LANGUAGE sql STABLE
AS $$
	SELECT s.session_date, clickstream.label(s.utm_source, '(direct)'),
		   clickstream.label(s.utm_medium, '(none)'), clickstream.label(s.utm_campaign, '(none)'),
		   s.user_id, count(*)
	FROM clickstream.sessions s
	GROUP BY 1, 2, 3, 4, 5
$$;

COMMENT ON FUNCTION clickstream.recompute_traffic_day_users() IS
'Full recomputation of clickstream.traffic_day_users from clickstream.sessions.';

CREATE FUNCTION clickstream.recompute_audience_day_users()
RETURNS SETOF clickstream.audience_day_users
LANGUAGE sql STABLE
AS $$
	SELECT s.session_date, clickstream.label(s.country, '(not set)'),
		   clickstream.label(s.device, '(not set)'), s.user_id, count(*)
	FROM clickstream.sessions s
	GROUP BY 1, 2, 3, 4
$$;

COMMENT ON FUNCTION clickstream.recompute_audience_day_users() IS
'Full recomputation of clickstream.audience_day_users from clickstream.sessions.';

CREATE FUNCTION clickstream.recompute_orders()
RETURNS SETOF clickstream.orders
LANGUAGE sql STABLE
AS $$
	WITH l AS (
		SELECT clickstream.order_key(e.order_id, e.event_id) AS order_id, e.user_id, e.ts,
			   e.event_id, coalesce(e.quantity, 1) AS units, coalesce(e.revenue, 0) AS revenue
		FROM clickstream.events e
		WHERE e.event_type = 'purchase'),
	f AS (
		SELECT DISTINCT ON (l.order_id) l.order_id, l.user_id, l.ts, l.event_id
		FROM l ORDER BY l.order_id, l.ts, l.event_id),
	a AS (
		SELECT l.order_id, count(*) AS lines, sum(l.units) AS units, sum(l.revenue) AS revenue
		FROM l GROUP BY l.order_id)
	SELECT f.order_id, f.user_id, s.session_id, f.ts, clickstream.local_day(f.ts),
		   a.lines::integer, a.units, a.revenue, f.event_id
	FROM f
	JOIN a USING (order_id)
	LEFT JOIN LATERAL (
		SELECT s.session_id FROM clickstream.sessions s
		WHERE s.user_id = f.user_id AND (s.session_start, s.first_event_id) <= (f.ts, f.event_id)
		ORDER BY s.session_start DESC, s.first_event_id DESC
		LIMIT 1) s ON true
$$;

COMMENT ON FUNCTION clickstream.recompute_orders() IS
'Full recomputation of clickstream.orders from silver (and the sessions of the first lines).';

CREATE FUNCTION clickstream.recompute_users()
RETURNS SETOF clickstream.users
LANGUAGE sql STABLE
AS $$
	WITH f AS (
		SELECT DISTINCT ON (e.user_id) e.user_id, e.ts, e.event_id, e.utm_source, e.utm_medium,
			   e.utm_campaign
		FROM clickstream.events e ORDER BY e.user_id, e.ts, e.event_id),
	l AS (
		SELECT DISTINCT ON (e.user_id) e.user_id, e.ts, e.event_id, e.country, e.device
		FROM clickstream.events e ORDER BY e.user_id, e.ts DESC, e.event_id DESC),
	n AS (
		SELECT e.user_id, count(*) AS events, count(DISTINCT clickstream.local_day(e.ts)) AS days
		FROM clickstream.events e GROUP BY e.user_id),
	s AS (
		SELECT s.user_id, count(*) AS sessions FROM clickstream.sessions s GROUP BY s.user_id),
	o AS (
		SELECT o.user_id, count(*) AS orders, sum(o.revenue) AS revenue, min(o.ordered_at) AS first_order_at
		FROM clickstream.recompute_orders() o GROUP BY o.user_id)
	SELECT f.user_id, f.ts, l.ts, f.event_id, l.event_id, f.utm_source, f.utm_medium,
		   f.utm_campaign, l.country, l.device, n.events, coalesce(s.sessions, 0),
		   coalesce(o.orders, 0), coalesce(o.revenue, 0), o.first_order_at, n.days::integer
	FROM f
	JOIN l USING (user_id)
	JOIN n USING (user_id)
	LEFT JOIN s USING (user_id)
	LEFT JOIN o USING (user_id)
$$;

COMMENT ON FUNCTION clickstream.recompute_users() IS
'Full recomputation of clickstream.users from silver, clickstream.sessions and the recomputed orders.';

CREATE FUNCTION clickstream.recompute_products()
RETURNS SETOF clickstream.products
LANGUAGE sql STABLE
AS $$
	WITH a AS (
		SELECT e.product_id, min(e.category) AS category, min(e.ts) AS first_seen,
			   max(e.ts) AS last_seen,
			   count(*) FILTER (WHERE e.event_type = 'page_view') AS page_views,
			   count(*) FILTER (WHERE e.event_type = 'add_to_cart') AS add_to_carts,
			   count(*) FILTER (WHERE e.event_type = 'remove_from_cart') AS removes,
			   count(*) FILTER (WHERE e.event_type = 'purchase') AS purchases,
			   coalesce(sum(coalesce(e.quantity, 1)) FILTER (WHERE e.event_type = 'purchase'), 0) AS units,
			   coalesce(sum(e.revenue) FILTER (WHERE e.event_type = 'purchase'), 0) AS revenue
		FROM clickstream.events e
		WHERE e.product_id <> ''
		GROUP BY e.product_id),
	p AS (
		SELECT DISTINCT ON (e.product_id) e.product_id, e.price, e.ts, e.event_id
		FROM clickstream.events e
		WHERE e.product_id <> '' AND e.price IS NOT NULL
		ORDER BY e.product_id, e.ts DESC, e.event_id DESC)
	SELECT a.product_id, a.category, a.first_seen, a.last_seen, a.page_views, a.add_to_carts,
		   a.removes, a.purchases, a.units, a.revenue,
		   clickstream.rate(a.add_to_carts, a.page_views), clickstream.rate(a.purchases, a.add_to_carts),
		   p.price, p.ts, p.event_id
	FROM a LEFT JOIN p USING (product_id)
$$;

COMMENT ON FUNCTION clickstream.recompute_products() IS
'Full recomputation of clickstream.products from silver.';

CREATE FUNCTION clickstream.recompute_product_daily()
RETURNS SETOF clickstream.product_daily
LANGUAGE sql STABLE
AS $$
	SELECT clickstream.local_day(e.ts), e.product_id, min(e.category),
		   count(*) FILTER (WHERE e.event_type = 'page_view'),
		   count(*) FILTER (WHERE e.event_type = 'add_to_cart'),
		   count(*) FILTER (WHERE e.event_type = 'remove_from_cart'),
		   count(*) FILTER (WHERE e.event_type = 'purchase'),
		   coalesce(sum(coalesce(e.quantity, 1)) FILTER (WHERE e.event_type = 'purchase'), 0),
		   coalesce(sum(e.revenue) FILTER (WHERE e.event_type = 'purchase'), 0)
	FROM clickstream.events e
	WHERE e.product_id <> ''
	GROUP BY 1, 2
$$;

COMMENT ON FUNCTION clickstream.recompute_product_daily() IS
'Full recomputation of clickstream.product_daily from silver.';

CREATE FUNCTION clickstream.recompute_category_daily()
RETURNS SETOF clickstream.category_daily
LANGUAGE sql STABLE
AS $$
	SELECT clickstream.local_day(e.ts), clickstream.label(e.category, '(not set)'),
		   count(*) FILTER (WHERE e.event_type = 'page_view'),
		   count(*) FILTER (WHERE e.event_type = 'add_to_cart'),
		   count(*) FILTER (WHERE e.event_type = 'purchase'),
		   coalesce(sum(coalesce(e.quantity, 1)) FILTER (WHERE e.event_type = 'purchase'), 0),
		   coalesce(sum(e.revenue) FILTER (WHERE e.event_type = 'purchase'), 0),
		   count(DISTINCT e.user_id)
	FROM clickstream.events e
	GROUP BY 1, 2
$$;

COMMENT ON FUNCTION clickstream.recompute_category_daily() IS
'Full recomputation of clickstream.category_daily from silver.';

CREATE FUNCTION clickstream.recompute_daily_metrics()
RETURNS SETOF clickstream.daily_metrics
LANGUAGE sql STABLE
AS $$
	WITH ev AS (
		SELECT clickstream.local_day(e.ts) AS day, count(*) AS events,
			   count(*) FILTER (WHERE e.event_type = 'page_view') AS page_views,
			   count(DISTINCT e.user_id) AS users,
			   coalesce(sum(coalesce(e.quantity, 1)) FILTER (WHERE e.event_type = 'purchase'), 0) AS units,
			   coalesce(sum(e.revenue) FILTER (WHERE e.event_type = 'purchase'), 0) AS revenue
		FROM clickstream.events e GROUP BY 1),
	nu AS (
		SELECT f.day, count(*) AS new_users
		FROM (SELECT clickstream.local_day(min(e.ts)) AS day FROM clickstream.events e GROUP BY e.user_id) f
		GROUP BY f.day),
	se AS (
		SELECT s.session_date AS day, count(*) AS sessions,
			   count(*) FILTER (WHERE s.events = 1 AND s.page_views = 1) AS bounced,
			   count(*) FILTER (WHERE s.converted) AS converted,
			   sum(extract(epoch FROM s.duration)) AS seconds
		FROM clickstream.sessions s GROUP BY 1),
	od AS (
		SELECT o.day, count(*) AS orders FROM clickstream.recompute_orders() o GROUP BY 1),
	d AS (
		SELECT ev.day, ev.events, ev.page_views, ev.users, coalesce(nu.new_users, 0) AS new_users,
			   coalesce(se.sessions, 0) AS sessions, coalesce(se.bounced, 0) AS bounced,
			   coalesce(se.converted, 0) AS converted, coalesce(se.seconds, 0) AS seconds,
			   coalesce(od.orders, 0) AS orders, ev.units, ev.revenue
		FROM ev
		LEFT JOIN nu USING (day)
		LEFT JOIN se USING (day)
		LEFT JOIN od USING (day))
	SELECT d.day, d.events, d.page_views, d.users, d.new_users, d.sessions, d.bounced, d.converted,
		   d.seconds, clickstream.rate(d.seconds, d.sessions), clickstream.rate(d.bounced, d.sessions),
		   clickstream.rate(d.converted, d.sessions), d.orders, d.units, d.revenue,
		   clickstream.rate(d.revenue, d.orders),
		   clickstream.rate(d.revenue - p.revenue, p.revenue),
		   clickstream.rate(d.users - p.users, p.users),
		   clickstream.rate(d.orders - p.orders, p.orders)
	FROM d LEFT JOIN d p ON p.day = d.day - 1
$$;

COMMENT ON FUNCTION clickstream.recompute_daily_metrics() IS
'Full recomputation of clickstream.daily_metrics from silver, clickstream.sessions and the recomputed orders.';

CREATE FUNCTION clickstream.recompute_hourly_metrics()
RETURNS SETOF clickstream.hourly_metrics
LANGUAGE sql STABLE
AS $$
	WITH ev AS (
		SELECT clickstream.local_hour(e.ts) AS hour, count(*) AS events,
			   count(DISTINCT e.user_id) AS users,
			   coalesce(sum(e.revenue) FILTER (WHERE e.event_type = 'purchase'), 0) AS revenue
		FROM clickstream.events e GROUP BY 1),
	se AS (
		SELECT clickstream.local_hour(s.session_start) AS hour, count(*) AS sessions
		FROM clickstream.sessions s GROUP BY 1),
	od AS (
		SELECT clickstream.local_hour(o.ordered_at) AS hour, count(*) AS orders
		FROM clickstream.recompute_orders() o GROUP BY 1)
	SELECT ev.hour, clickstream.local_day(ev.hour), ev.events, ev.users, coalesce(se.sessions, 0),
		   coalesce(od.orders, 0), ev.revenue
	FROM ev
	LEFT JOIN se USING (hour)
	LEFT JOIN od USING (hour)
$$;

COMMENT ON FUNCTION clickstream.recompute_hourly_metrics() IS
'Full recomputation of clickstream.hourly_metrics from silver, clickstream.sessions and the recomputed orders.';

-- Per (user, active day), the days up to the user's next active day are
-- the ones it is the latest active day of: those days count the user in
-- their 7- and 30-day windows while they are within 6 and 29 days of it.
CREATE FUNCTION clickstream.recompute_active_users()
RETURNS SETOF clickstream.active_users
LANGUAGE sql STABLE
AS $$
	WITH ud AS (
		SELECT e.user_id, clickstream.local_day(e.ts) AS day
		FROM clickstream.events e GROUP BY 1, 2),
	nx AS (
		SELECT ud.day, lead(ud.day) OVER (PARTITION BY ud.user_id ORDER BY ud.day) AS next_day
		FROM ud),
	c AS (
		SELECT nx.day + i AS day, count(*) FILTER (WHERE i = 0) AS dau,
			   count(*) FILTER (WHERE i < 7) AS wau, count(*) AS mau
		FROM nx, generate_series(0, least(29, coalesce(nx.next_day - nx.day - 1, 29))) i
		GROUP BY 1)
	SELECT c.day, c.dau, c.wau, c.mau, clickstream.rate(c.dau, c.mau) FROM c
$$;

COMMENT ON FUNCTION clickstream.recompute_active_users() IS
'Full recomputation of clickstream.active_users from silver.';

CREATE FUNCTION clickstream.recompute_cohort_retention()
RETURNS SETOF clickstream.cohort_retention
LANGUAGE sql STABLE
AS $$
	WITH ud AS (
		SELECT e.user_id, clickstream.local_day(e.ts) AS day
		FROM clickstream.events e GROUP BY 1, 2),
	c AS (
		SELECT ud.user_id, clickstream.week_of(min(ud.day)) AS cohort_week
		FROM ud GROUP BY ud.user_id),
	size AS (
		SELECT c.cohort_week, count(*) AS users FROM c GROUP BY 1),
	w AS (
		SELECT DISTINCT ud.user_id, c.cohort_week,
			   (clickstream.week_of(ud.day) - c.cohort_week) / 7 AS week_number
		FROM ud JOIN c USING (user_id))
	SELECT w.cohort_week, w.week_number, size.users, count(*), clickstream.rate(count(*), size.users)
	FROM w JOIN size USING (cohort_week)
	GROUP BY w.cohort_week, w.week_number, size.users
$$;

COMMENT ON FUNCTION clickstream.recompute_cohort_retention() IS
'Full recomputation of clickstream.cohort_retention from silver.';

CREATE FUNCTION clickstream.recompute_traffic_daily()
RETURNS SETOF clickstream.traffic_daily
LANGUAGE sql STABLE
AS $$
	SELECT s.session_date, clickstream.label(s.utm_source, '(direct)'),
		   clickstream.label(s.utm_medium, '(none)'), clickstream.label(s.utm_campaign, '(none)'),
		   count(*), count(DISTINCT s.user_id), count(*) FILTER (WHERE s.converted), sum(s.revenue)
	FROM clickstream.sessions s
	GROUP BY 1, 2, 3, 4
$$;

COMMENT ON FUNCTION clickstream.recompute_traffic_daily() IS
'Full recomputation of clickstream.traffic_daily from clickstream.sessions.';

CREATE FUNCTION clickstream.recompute_audience_daily()
RETURNS SETOF clickstream.audience_daily
LANGUAGE sql STABLE
AS $$
	SELECT s.session_date, clickstream.label(s.country, '(not set)'),
		   clickstream.label(s.device, '(not set)'),
		   count(*), count(DISTINCT s.user_id), count(*) FILTER (WHERE s.converted), sum(s.revenue)
	FROM clickstream.sessions s
	GROUP BY 1, 2, 3
$$;

COMMENT ON FUNCTION clickstream.recompute_audience_daily() IS
'Full recomputation of clickstream.audience_daily from clickstream.sessions.';

CREATE FUNCTION clickstream.recompute_pages_daily()
RETURNS SETOF clickstream.pages_daily
LANGUAGE sql STABLE
AS $$
	WITH v AS (
		SELECT clickstream.local_day(e.ts) AS day, clickstream.label(e.page_url, '(not set)') AS page_url,
			   count(*) AS page_views, count(DISTINCT e.user_id) AS users
		FROM clickstream.events e WHERE e.event_type = 'page_view' GROUP BY 1, 2),
	i AS (
		SELECT s.session_date AS day, clickstream.label(s.landing_page, '(not set)') AS page_url,
			   count(*) AS entrances
		FROM clickstream.sessions s GROUP BY 1, 2),
	o AS (
		SELECT s.session_date AS day, clickstream.label(s.exit_page, '(not set)') AS page_url,
			   count(*) AS exits
		FROM clickstream.sessions s GROUP BY 1, 2)
	SELECT day, page_url, coalesce(v.page_views, 0), coalesce(i.entrances, 0), coalesce(o.exits, 0),
		   coalesce(v.users, 0)
	FROM v FULL JOIN i USING (day, page_url) FULL JOIN o USING (day, page_url)
$$;

COMMENT ON FUNCTION clickstream.recompute_pages_daily() IS
'Full recomputation of clickstream.pages_daily from silver and clickstream.sessions.';

-- Incremental maintenance ---------------------------------------------------------

-- Per-call scratch tables of the marts; emptied at every commit.
CREATE FUNCTION clickstream.marts_scratch()
RETURNS void
LANGUAGE plpgsql
AS $$
BEGIN
	IF to_regclass('pg_temp.clickstream_day_delta') IS NOT NULL THEN
		RETURN;
	END IF;
	-- additions to daily_metrics and hourly_metrics, summed when applied
	CREATE TEMP TABLE clickstream_day_delta (
		day date NOT NULL,
		events bigint NOT NULL DEFAULT 0,
		page_views bigint NOT NULL DEFAULT 0,
		users bigint NOT NULL DEFAULT 0,
		new_users bigint NOT NULL DEFAULT 0,
		sessions bigint NOT NULL DEFAULT 0,
		bounced bigint NOT NULL DEFAULT 0,
		converted bigint NOT NULL DEFAULT 0,
		seconds numeric NOT NULL DEFAULT 0,
		orders bigint NOT NULL DEFAULT 0,
		units bigint NOT NULL DEFAULT 0,
		revenue numeric NOT NULL DEFAULT 0
	) ON COMMIT DELETE ROWS;
	CREATE TEMP TABLE clickstream_hour_delta (
		hour timestamptz NOT NULL,
		events bigint NOT NULL DEFAULT 0,
		users bigint NOT NULL DEFAULT 0,
		sessions bigint NOT NULL DEFAULT 0,
		orders bigint NOT NULL DEFAULT 0,
		revenue numeric NOT NULL DEFAULT 0
	) ON COMMIT DELETE ROWS;
	-- the step's events per user and day, with what user_days held before
	CREATE TEMP TABLE clickstream_user_day_delta (
		user_id text COLLATE "C" NOT NULL,
		day date NOT NULL,
		events bigint NOT NULL,
		hours integer NOT NULL,
		fresh boolean NOT NULL,
		old_hours integer NOT NULL
	) ON COMMIT DELETE ROWS;
	-- the (user, day) pairs that are new, with the user's nearest old days
	CREATE TEMP TABLE clickstream_new_days (
		user_id text COLLATE "C" NOT NULL,
		day date NOT NULL,
		prev_old date,
		next_old date,
		prev_new date
	) ON COMMIT DELETE ROWS;
	-- per user with new days: the first day before and after
	CREATE TEMP TABLE clickstream_user_firsts (
		user_id text COLLATE "C" NOT NULL,
		old_first date,
		new_first date NOT NULL,
		fresh integer NOT NULL
	) ON COMMIT DELETE ROWS;
	CREATE TEMP TABLE clickstream_active_delta (
		day date NOT NULL,
		dau bigint NOT NULL,
		wau bigint NOT NULL,
		mau bigint NOT NULL
	) ON COMMIT DELETE ROWS;
	CREATE TEMP TABLE clickstream_cohort_delta (
		cohort_week date NOT NULL,
		week_number integer NOT NULL,	-- -1: the cohort's size
		users bigint NOT NULL
	) ON COMMIT DELETE ROWS;
	-- orders as they were (-1) and are (+1) after the step
	CREATE TEMP TABLE clickstream_order_delta (
		sign integer NOT NULL,
		order_id text NOT NULL,
		user_id text COLLATE "C" NOT NULL,
		ordered_at timestamptz NOT NULL
	) ON COMMIT DELETE ROWS;
END
$$;

COMMENT ON FUNCTION clickstream.marts_scratch() IS
'Internal: create the session''s scratch tables of the marts'' maintenance (the deltas of a refresh step; ON COMMIT DELETE ROWS).';

-- What the step's new events add: to the sets, the event counts, products,
-- users and orders.  Reads pg_temp.clickstream_step_events.
CREATE FUNCTION clickstream.marts_apply_events()
RETURNS void
LANGUAGE plpgsql
AS $$
DECLARE
	tz text := current_setting('clickstream.timezone');
BEGIN
	-- (user, day): events, hours of activity, and whether the pair is new
	INSERT INTO pg_temp.clickstream_user_day_delta
	SELECT a.user_id, a.day, a.events, a.hours, u.user_id IS NULL, coalesce(u.hours, 0)
	FROM (SELECT e.user_id, clickstream.local_day(e.ts) AS day, count(*) AS events,
				 bit_or(1 << clickstream.hour_of_day(e.ts)) AS hours
		  FROM pg_temp.clickstream_step_events e GROUP BY 1, 2) a
	LEFT JOIN clickstream.user_days u ON u.user_id = a.user_id AND u.day = a.day;

	-- new pairs, and each user's nearest active days before and after them
	-- (as user_days holds them before this step; index probes)
	INSERT INTO pg_temp.clickstream_new_days
	SELECT d.user_id, d.day,
		   (SELECT max(u.day) FROM clickstream.user_days u WHERE u.user_id = d.user_id AND u.day < d.day),
		   (SELECT min(u.day) FROM clickstream.user_days u WHERE u.user_id = d.user_id AND u.day > d.day),
		   lag(d.day) OVER (PARTITION BY d.user_id ORDER BY d.day)
	FROM pg_temp.clickstream_user_day_delta d
	WHERE d.fresh;

	INSERT INTO pg_temp.clickstream_user_firsts
	SELECT n.user_id, f.first, least(f.first, min(n.day)), count(*)
	FROM pg_temp.clickstream_new_days n
	LEFT JOIN LATERAL (
		SELECT min(u.day) AS first FROM clickstream.user_days u WHERE u.user_id = n.user_id) f ON true
	GROUP BY n.user_id, f.first;

	-- Active users: a new pair (u, d) adds u to the windows of the days
	-- from d on that no other active day of u covered: with p the latest
	-- active day before d (old, or new and earlier in this step) and n the
	-- next old one, the W-day windows of [max(d, p + W), min(d + W - 1, n - 1)].
	INSERT INTO pg_temp.clickstream_active_delta
	SELECT x.day, sum(x.dau), sum(x.wau), sum(x.mau)
	FROM pg_temp.clickstream_new_days n
	CROSS JOIN LATERAL (SELECT greatest(n.prev_old, n.prev_new) AS p) p
	CROSS JOIN LATERAL (
		SELECT n.day AS day, 1 AS dau, 0 AS wau, 0 AS mau
		UNION ALL
		SELECT n.day + i, 0, 1, 0
		FROM generate_series(greatest(0, p.p + 7 - n.day), least(6, n.next_old - 1 - n.day)) i
		UNION ALL
		SELECT n.day + i, 0, 0, 1
		FROM generate_series(greatest(0, p.p + 30 - n.day), least(29, n.next_old - 1 - n.day)) i) x
	GROUP BY x.day;

	-- Retention.  A user whose cohort week stays: each week that gets its
	-- first active day adds the user there.  A new user joins the cohort
	-- of its first day with all the weeks of its new days.  A user whose
	-- first day moves to an earlier week (a late event) leaves the old
	-- cohort with all its weeks and joins the new one with all of them.
	INSERT INTO pg_temp.clickstream_cohort_delta
	SELECT x.cohort_week, x.week_number, sum(x.users)
	FROM (
		-- stays: first new day of a week with no old day in it
		SELECT clickstream.week_of(f.new_first) AS cohort_week,
			   (clickstream.week_of(n.day) - clickstream.week_of(f.new_first)) / 7 AS week_number,
			   1 AS users
		FROM pg_temp.clickstream_new_days n
		JOIN pg_temp.clickstream_user_firsts f USING (user_id)
		WHERE f.old_first IS NOT NULL
			AND clickstream.week_of(f.old_first) = clickstream.week_of(f.new_first)
			AND NOT coalesce(n.prev_old >= clickstream.week_of(n.day), false)
			AND NOT coalesce(n.next_old <= clickstream.week_of(n.day) + 6, false)
			AND NOT coalesce(n.prev_new >= clickstream.week_of(n.day), false)
		UNION ALL
		-- new users: size, and their weeks
		SELECT clickstream.week_of(f.new_first), -1, 1
		FROM pg_temp.clickstream_user_firsts f
		WHERE f.old_first IS NULL
		UNION ALL
		SELECT DISTINCT ON (n.user_id, clickstream.week_of(n.day))
			   clickstream.week_of(f.new_first),
			   (clickstream.week_of(n.day) - clickstream.week_of(f.new_first)) / 7, 1
		FROM pg_temp.clickstream_new_days n
		JOIN pg_temp.clickstream_user_firsts f USING (user_id)
		WHERE f.old_first IS NULL
		UNION ALL
		-- moved: out of the old cohort with the old weeks ...
		SELECT clickstream.week_of(f.old_first), -1, -1
		FROM pg_temp.clickstream_user_firsts f
		WHERE clickstream.week_of(f.old_first) <> clickstream.week_of(f.new_first)
		UNION ALL
		SELECT clickstream.week_of(f.old_first),
			   (w.week - clickstream.week_of(f.old_first)) / 7, -1
		FROM pg_temp.clickstream_user_firsts f
		CROSS JOIN LATERAL (
			SELECT DISTINCT clickstream.week_of(u.day) AS week
			FROM clickstream.user_days u WHERE u.user_id = f.user_id) w
		WHERE clickstream.week_of(f.old_first) <> clickstream.week_of(f.new_first)
		UNION ALL
		-- ... into the new one with the old and new weeks
		SELECT clickstream.week_of(f.new_first), -1, 1
		FROM pg_temp.clickstream_user_firsts f
		WHERE clickstream.week_of(f.old_first) <> clickstream.week_of(f.new_first)
		UNION ALL
		SELECT clickstream.week_of(f.new_first),
			   (w.week - clickstream.week_of(f.new_first)) / 7, 1
		FROM pg_temp.clickstream_user_firsts f
		CROSS JOIN LATERAL (
			SELECT clickstream.week_of(u.day) AS week
			FROM clickstream.user_days u WHERE u.user_id = f.user_id
			UNION
			SELECT clickstream.week_of(n.day)
			FROM pg_temp.clickstream_new_days n WHERE n.user_id = f.user_id) w
		WHERE clickstream.week_of(f.old_first) <> clickstream.week_of(f.new_first)
	) x
	GROUP BY x.cohort_week, x.week_number
	HAVING sum(x.users) <> 0;

	-- daily and hourly: users, new users; the events' counts and sums
	INSERT INTO pg_temp.clickstream_day_delta (day, users)
	SELECT n.day, count(*) FROM pg_temp.clickstream_new_days n GROUP BY n.day;
	INSERT INTO pg_temp.clickstream_day_delta (day, new_users)
	SELECT f.new_first, 1 FROM pg_temp.clickstream_user_firsts f
	WHERE f.old_first IS DISTINCT FROM f.new_first
	UNION ALL
	SELECT f.old_first, -1 FROM pg_temp.clickstream_user_firsts f
	WHERE f.old_first <> f.new_first;
	INSERT INTO pg_temp.clickstream_hour_delta (hour, users)
	SELECT (d.day + make_interval(hours => b)) AT TIME ZONE tz, count(*)
	FROM pg_temp.clickstream_user_day_delta d, generate_series(0, 23) b
	WHERE (d.hours & ~d.old_hours) & (1 << b) <> 0
	GROUP BY 1;
	INSERT INTO pg_temp.clickstream_day_delta (day, events, page_views, units, revenue)
	SELECT clickstream.local_day(e.ts), count(*),
		   count(*) FILTER (WHERE e.event_type = 'page_view'),
		   coalesce(sum(coalesce(e.quantity, 1)) FILTER (WHERE e.event_type = 'purchase'), 0),
		   coalesce(sum(e.revenue) FILTER (WHERE e.event_type = 'purchase'), 0)
	FROM pg_temp.clickstream_step_events e GROUP BY 1;
	INSERT INTO pg_temp.clickstream_hour_delta (hour, events, revenue)
	SELECT clickstream.local_hour(e.ts), count(*),
		   coalesce(sum(e.revenue) FILTER (WHERE e.event_type = 'purchase'), 0)
	FROM pg_temp.clickstream_step_events e GROUP BY 1;

	-- users: counts, first touch, last event
	INSERT INTO clickstream.users AS u (user_id, first_seen, last_seen, first_event_id,
		last_event_id, utm_source, utm_medium, utm_campaign, country, device, events,
		sessions, orders, revenue, first_order_at, days_active)
	SELECT f.user_id, f.ts, l.ts, f.event_id, l.event_id, f.utm_source, f.utm_medium,
		   f.utm_campaign, l.country, l.device, c.events, 0, 0, 0, NULL, coalesce(nf.fresh, 0)
	FROM (SELECT DISTINCT ON (e.user_id) e.user_id, e.ts, e.event_id, e.utm_source,
				 e.utm_medium, e.utm_campaign
		  FROM pg_temp.clickstream_step_events e ORDER BY e.user_id, e.ts, e.event_id) f
	JOIN (SELECT DISTINCT ON (e.user_id) e.user_id, e.ts, e.event_id, e.country, e.device
		  FROM pg_temp.clickstream_step_events e ORDER BY e.user_id, e.ts DESC, e.event_id DESC) l
		USING (user_id)
	JOIN (SELECT e.user_id, count(*) AS events
		  FROM pg_temp.clickstream_step_events e GROUP BY e.user_id) c USING (user_id)
	LEFT JOIN pg_temp.clickstream_user_firsts nf USING (user_id)
	ON CONFLICT (user_id) DO UPDATE
	SET events = u.events + excluded.events,
		days_active = u.days_active + excluded.days_active,
		first_seen = least(u.first_seen, excluded.first_seen),
		first_event_id = CASE WHEN (excluded.first_seen, excluded.first_event_id) < (u.first_seen, u.first_event_id)
							  THEN excluded.first_event_id ELSE u.first_event_id END,
		utm_source = CASE WHEN (excluded.first_seen, excluded.first_event_id) < (u.first_seen, u.first_event_id)
						  THEN excluded.utm_source ELSE u.utm_source END,
		utm_medium = CASE WHEN (excluded.first_seen, excluded.first_event_id) < (u.first_seen, u.first_event_id)
						  THEN excluded.utm_medium ELSE u.utm_medium END,
		utm_campaign = CASE WHEN (excluded.first_seen, excluded.first_event_id) < (u.first_seen, u.first_event_id)
							THEN excluded.utm_campaign ELSE u.utm_campaign END,
		last_seen = greatest(u.last_seen, excluded.last_seen),
		last_event_id = CASE WHEN (excluded.last_seen, excluded.last_event_id) > (u.last_seen, u.last_event_id)
							 THEN excluded.last_event_id ELSE u.last_event_id END,
		country = CASE WHEN (excluded.last_seen, excluded.last_event_id) > (u.last_seen, u.last_event_id)
					   THEN excluded.country ELSE u.country END,
		device = CASE WHEN (excluded.last_seen, excluded.last_event_id) > (u.last_seen, u.last_event_id)
					  THEN excluded.device ELSE u.device END;

	-- the sets
	INSERT INTO clickstream.user_days AS u (user_id, day, events, hours)
	SELECT d.user_id, d.day, d.events, d.hours FROM pg_temp.clickstream_user_day_delta d
	ON CONFLICT (user_id, day) DO UPDATE
	SET events = u.events + excluded.events, hours = u.hours | excluded.hours;

	WITH added AS (
		INSERT INTO clickstream.category_day_users
		SELECT DISTINCT clickstream.local_day(e.ts), clickstream.label(e.category, '(not set)'), e.user_id
		FROM pg_temp.clickstream_step_events e
		ON CONFLICT DO NOTHING
		RETURNING day, category),
	users AS (
		SELECT a.day, a.category, count(*) AS users FROM added a GROUP BY 1, 2),
	counts AS (
		SELECT clickstream.local_day(e.ts) AS day, clickstream.label(e.category, '(not set)') AS category,
			   count(*) FILTER (WHERE e.event_type = 'page_view') AS page_views,
			   count(*) FILTER (WHERE e.event_type = 'add_to_cart') AS add_to_carts,
			   count(*) FILTER (WHERE e.event_type = 'purchase') AS purchases,
			   coalesce(sum(coalesce(e.quantity, 1)) FILTER (WHERE e.event_type = 'purchase'), 0) AS units,
			   coalesce(sum(e.revenue) FILTER (WHERE e.event_type = 'purchase'), 0) AS revenue
		FROM pg_temp.clickstream_step_events e GROUP BY 1, 2)
	INSERT INTO clickstream.category_daily AS t
	SELECT c.day, c.category, c.page_views, c.add_to_carts, c.purchases, c.units, c.revenue,
		   coalesce(u.users, 0)
	FROM counts c LEFT JOIN users u USING (day, category)
	ON CONFLICT (day, category) DO UPDATE
	SET page_views = t.page_views + excluded.page_views,
		add_to_carts = t.add_to_carts + excluded.add_to_carts,
		purchases = t.purchases + excluded.purchases,
		units = t.units + excluded.units,
		revenue = t.revenue + excluded.revenue,
		users = t.users + excluded.users;

	WITH added AS (
		INSERT INTO clickstream.page_day_users
		SELECT DISTINCT clickstream.local_day(e.ts), clickstream.label(e.page_url, '(not set)'), e.user_id
		FROM pg_temp.clickstream_step_events e
		WHERE e.event_type = 'page_view'
		ON CONFLICT DO NOTHING
		RETURNING day, page_url),
	users AS (
		SELECT a.day, a.page_url, count(*) AS users FROM added a GROUP BY 1, 2),
	counts AS (
		SELECT clickstream.local_day(e.ts) AS day, clickstream.label(e.page_url, '(not set)') AS page_url,
			   count(*) AS page_views
		FROM pg_temp.clickstream_step_events e WHERE e.event_type = 'page_view' GROUP BY 1, 2)
	INSERT INTO clickstream.pages_daily AS t
	SELECT c.day, c.page_url, c.page_views, 0, 0, coalesce(u.users, 0)
	FROM counts c LEFT JOIN users u USING (day, page_url)
	ON CONFLICT (day, page_url) DO UPDATE
	SET page_views = t.page_views + excluded.page_views,
		users = t.users + excluded.users;

	-- products, per day and over all time
	INSERT INTO clickstream.product_daily AS t
	SELECT clickstream.local_day(e.ts), e.product_id, min(e.category),
		   count(*) FILTER (WHERE e.event_type = 'page_view'),
		   count(*) FILTER (WHERE e.event_type = 'add_to_cart'),
		   count(*) FILTER (WHERE e.event_type = 'remove_from_cart'),
		   count(*) FILTER (WHERE e.event_type = 'purchase'),
		   coalesce(sum(coalesce(e.quantity, 1)) FILTER (WHERE e.event_type = 'purchase'), 0),
		   coalesce(sum(e.revenue) FILTER (WHERE e.event_type = 'purchase'), 0)
	FROM pg_temp.clickstream_step_events e
	WHERE e.product_id <> ''
	GROUP BY 1, 2
	ON CONFLICT (day, product_id) DO UPDATE
	SET category = least(t.category, excluded.category),
		page_views = t.page_views + excluded.page_views,
		add_to_carts = t.add_to_carts + excluded.add_to_carts,
		removes = t.removes + excluded.removes,
		purchases = t.purchases + excluded.purchases,
		units = t.units + excluded.units,
		revenue = t.revenue + excluded.revenue;

	INSERT INTO clickstream.products AS t
	SELECT a.product_id, a.category, a.first_seen, a.last_seen, a.page_views, a.add_to_carts,
		   a.removes, a.purchases, a.units, a.revenue,
		   clickstream.rate(a.add_to_carts, a.page_views), clickstream.rate(a.purchases, a.add_to_carts),
		   p.price, p.ts, p.event_id
	FROM (SELECT e.product_id, min(e.category) AS category, min(e.ts) AS first_seen,
				 max(e.ts) AS last_seen,
				 count(*) FILTER (WHERE e.event_type = 'page_view') AS page_views,
				 count(*) FILTER (WHERE e.event_type = 'add_to_cart') AS add_to_carts,
				 count(*) FILTER (WHERE e.event_type = 'remove_from_cart') AS removes,
				 count(*) FILTER (WHERE e.event_type = 'purchase') AS purchases,
				 coalesce(sum(coalesce(e.quantity, 1)) FILTER (WHERE e.event_type = 'purchase'), 0) AS units,
				 coalesce(sum(e.revenue) FILTER (WHERE e.event_type = 'purchase'), 0) AS revenue
		  FROM pg_temp.clickstream_step_events e
		  WHERE e.product_id <> ''
		  GROUP BY e.product_id) a
	LEFT JOIN (SELECT DISTINCT ON (e.product_id) e.product_id, e.price, e.ts, e.event_id
			   FROM pg_temp.clickstream_step_events e
			   WHERE e.product_id <> '' AND e.price IS NOT NULL
			   ORDER BY e.product_id, e.ts DESC, e.event_id DESC) p USING (product_id)
	ON CONFLICT (product_id) DO UPDATE
	SET category = least(t.category, excluded.category),
		first_seen = least(t.first_seen, excluded.first_seen),
		last_seen = greatest(t.last_seen, excluded.last_seen),
		page_views = t.page_views + excluded.page_views,
		add_to_carts = t.add_to_carts + excluded.add_to_carts,
		removes = t.removes + excluded.removes,
		purchases = t.purchases + excluded.purchases,
		units = t.units + excluded.units,
		revenue = t.revenue + excluded.revenue,
		view_to_cart_rate = clickstream.rate(t.add_to_carts + excluded.add_to_carts,
											 t.page_views + excluded.page_views),
		cart_to_purchase_rate = clickstream.rate(t.purchases + excluded.purchases,
												 t.add_to_carts + excluded.add_to_carts),
		last_price = CASE WHEN t.last_price_at IS NULL
							   OR (excluded.last_price_at, excluded.last_price_event_id) > (t.last_price_at, t.last_price_event_id)
						  THEN coalesce(excluded.last_price, t.last_price) ELSE t.last_price END,
		last_price_event_id = CASE WHEN t.last_price_at IS NULL
									   OR (excluded.last_price_at, excluded.last_price_event_id) > (t.last_price_at, t.last_price_event_id)
								  THEN coalesce(excluded.last_price_event_id, t.last_price_event_id)
								  ELSE t.last_price_event_id END,
		last_price_at = CASE WHEN t.last_price_at IS NULL
								 OR (excluded.last_price_at, excluded.last_price_event_id) > (t.last_price_at, t.last_price_event_id)
							THEN coalesce(excluded.last_price_at, t.last_price_at) ELSE t.last_price_at END;

	-- orders: the step's lines added to their order; what the orders
	-- counted before and count now
	INSERT INTO pg_temp.clickstream_order_delta
	SELECT -1, o.order_id, o.user_id, o.ordered_at
	FROM clickstream.orders o
	WHERE o.order_id IN (
		SELECT clickstream.order_key(e.order_id, e.event_id)
		FROM pg_temp.clickstream_step_events e WHERE e.event_type = 'purchase');
	WITH l AS (
		SELECT clickstream.order_key(e.order_id, e.event_id) AS order_id, e.user_id, e.ts,
			   e.event_id, coalesce(e.quantity, 1) AS units, coalesce(e.revenue, 0) AS revenue
		FROM pg_temp.clickstream_step_events e
		WHERE e.event_type = 'purchase'),
	written AS (
		INSERT INTO clickstream.orders AS o (order_id, user_id, session_id, ordered_at, day, lines,
			units, revenue, first_event_id)
		SELECT f.order_id, f.user_id, NULL, f.ts, clickstream.local_day(f.ts), a.lines, a.units,
			   a.revenue, f.event_id
		FROM (SELECT DISTINCT ON (l.order_id) l.order_id, l.user_id, l.ts, l.event_id
			  FROM l ORDER BY l.order_id, l.ts, l.event_id) f
		JOIN (SELECT l.order_id, count(*)::integer AS lines, sum(l.units) AS units,
					 sum(l.revenue) AS revenue
			  FROM l GROUP BY l.order_id) a USING (order_id)
		ON CONFLICT (order_id) DO UPDATE
		SET lines = o.lines + excluded.lines,
			units = o.units + excluded.units,
			revenue = o.revenue + excluded.revenue,
			user_id = CASE WHEN (excluded.ordered_at, excluded.first_event_id) < (o.ordered_at, o.first_event_id)
						   THEN excluded.user_id ELSE o.user_id END,
			day = CASE WHEN (excluded.ordered_at, excluded.first_event_id) < (o.ordered_at, o.first_event_id)
					   THEN excluded.day ELSE o.day END,
			first_event_id = CASE WHEN (excluded.ordered_at, excluded.first_event_id) < (o.ordered_at, o.first_event_id)
								  THEN excluded.first_event_id ELSE o.first_event_id END,
			ordered_at = least(o.ordered_at, excluded.ordered_at)
		RETURNING o.order_id, o.user_id, o.ordered_at)
	INSERT INTO pg_temp.clickstream_order_delta
	SELECT 1, w.order_id, w.user_id, w.ordered_at FROM written w;
END
$$;

COMMENT ON FUNCTION clickstream.marts_apply_events() IS
'Internal (clickstream.refresh_gold()): add what the step''s new events (pg_temp.clickstream_step_events) count to the sets, products, users and orders, and record what they add to the daily, hourly, active-user and retention tables in the scratch deltas.';

-- Add signed per-user counts to a reference-counted set (traffic_day_users,
-- audience_day_users) and return, per key, how many users joined (+) or
-- left (-) it.  deltas: rows of the set's key columns, user_id and sign.
CREATE FUNCTION clickstream.marts_count_members(target regclass, keys text[], deltas text)
RETURNS TABLE (key jsonb, users bigint)
LANGUAGE plpgsql
AS $$
DECLARE
	cols text := (SELECT string_agg(format('%I', k), ', ') FROM unnest(keys) k);
	d_cols text := (SELECT string_agg(format('d.%I', k), ', ') FROM unnest(keys) k);
	same text := (SELECT string_agg(format('t.%1$I = d.%1$I', k), ' AND ') FROM unnest(keys) k);
	as_key text := (SELECT format('jsonb_build_array(%s)', string_agg(format('d.%I', k), ', ')) FROM unnest(keys) k);
BEGIN
	RETURN QUERY EXECUTE format($q$
		WITH d AS (
			SELECT %2$s, d.user_id, sum(d.sign) AS sign
			FROM (%4$s) d GROUP BY %2$s, d.user_id HAVING sum(d.sign) <> 0),
		old AS (
			SELECT %2$s, d.user_id, d.sign, coalesce(t.sessions, 0) AS before
			FROM d LEFT JOIN %1$s t ON %5$s AND t.user_id = d.user_id),
		gone AS (
			DELETE FROM %1$s t USING old d
			WHERE %5$s AND t.user_id = d.user_id AND d.before + d.sign <= 0),
		kept AS (
			INSERT INTO %1$s AS t (%3$s, user_id, sessions)
			SELECT %2$s, d.user_id, d.sign FROM old d WHERE d.before + d.sign > 0
			ON CONFLICT (%3$s, user_id) DO UPDATE SET sessions = t.sessions + excluded.sessions)
		SELECT %6$s, sum(CASE WHEN d.before = 0 THEN 1 WHEN d.before + d.sign <= 0 THEN -1 ELSE 0 END)::bigint
		FROM old d
		GROUP BY 1
	$q$, target, d_cols, cols, deltas, same, as_key);
END
$$;

COMMENT ON FUNCTION clickstream.marts_count_members(regclass, text[], text) IS
'Internal: add signed per-user session counts (a query of key columns, user_id, sign) to a reference-counted set of users, dropping members that reach 0, and return per key how many users joined or left.';

-- What the sessions the step removed (-1) and wrote (+1) count: from
-- pg_temp.clickstream_session_delta.
CREATE FUNCTION clickstream.marts_apply_sessions()
RETURNS void
LANGUAGE plpgsql
AS $$
BEGIN
	INSERT INTO pg_temp.clickstream_day_delta (day, sessions, bounced, converted, seconds)
	SELECT d.session_date, sum(d.sign),
		   coalesce(sum(d.sign) FILTER (WHERE d.events = 1 AND d.page_views = 1), 0),
		   coalesce(sum(d.sign) FILTER (WHERE d.converted), 0),
		   sum(d.sign * extract(epoch FROM d.duration))
	FROM pg_temp.clickstream_session_delta d
	GROUP BY 1;
	INSERT INTO pg_temp.clickstream_hour_delta (hour, sessions)
	SELECT clickstream.local_hour(d.session_start), sum(d.sign)
	FROM pg_temp.clickstream_session_delta d
	GROUP BY 1;

	-- users: their sessions
	UPDATE clickstream.users u SET sessions = u.sessions + d.sessions
	FROM (SELECT d.user_id, sum(d.sign) AS sessions
		  FROM pg_temp.clickstream_session_delta d GROUP BY 1 HAVING sum(d.sign) <> 0) d
	WHERE u.user_id = d.user_id;

	-- traffic and audience: counts, and their users through the counted sets
	WITH c AS (
		SELECT d.session_date AS day, clickstream.label(d.utm_source, '(direct)') AS utm_source,
			   clickstream.label(d.utm_medium, '(none)') AS utm_medium,
			   clickstream.label(d.utm_campaign, '(none)') AS utm_campaign,
			   sum(d.sign) AS sessions, coalesce(sum(d.sign) FILTER (WHERE d.converted), 0) AS converted,
			   sum(d.sign * d.revenue) AS revenue
		FROM pg_temp.clickstream_session_delta d GROUP BY 1, 2, 3, 4),
	u AS (
		SELECT (m.key ->> 0)::date AS day, m.key ->> 1 AS utm_source, m.key ->> 2 AS utm_medium,
			   m.key ->> 3 AS utm_campaign, m.users
		FROM clickstream.marts_count_members('clickstream.traffic_day_users',
			ARRAY['day', 'utm_source', 'utm_medium', 'utm_campaign'], $q$
				SELECT d.session_date AS day, clickstream.label(d.utm_source, '(direct)') AS utm_source,
					   clickstream.label(d.utm_medium, '(none)') AS utm_medium,
					   clickstream.label(d.utm_campaign, '(none)') AS utm_campaign, d.user_id, d.sign
				FROM pg_temp.clickstream_session_delta d $q$) m)
	INSERT INTO clickstream.traffic_daily AS t
	SELECT day, utm_source, utm_medium, utm_campaign, coalesce(c.sessions, 0), coalesce(u.users, 0),
		   coalesce(c.converted, 0), coalesce(c.revenue, 0)
	FROM c FULL JOIN u USING (day, utm_source, utm_medium, utm_campaign)
	ON CONFLICT (day, utm_source, utm_medium, utm_campaign) DO UPDATE
	SET sessions = t.sessions + excluded.sessions,
		users = t.users + excluded.users,
		converted_sessions = t.converted_sessions + excluded.converted_sessions,
		revenue = t.revenue + excluded.revenue;
	DELETE FROM clickstream.traffic_daily t
	USING (SELECT DISTINCT d.session_date AS day, clickstream.label(d.utm_source, '(direct)') AS utm_source,
				  clickstream.label(d.utm_medium, '(none)') AS utm_medium,
				  clickstream.label(d.utm_campaign, '(none)') AS utm_campaign
		   FROM pg_temp.clickstream_session_delta d) k
	WHERE t.day = k.day AND t.utm_source = k.utm_source AND t.utm_medium = k.utm_medium
		AND t.utm_campaign = k.utm_campaign AND t.sessions = 0;

	WITH c AS (
		SELECT d.session_date AS day, clickstream.label(d.country, '(not set)') AS country,
			   clickstream.label(d.device, '(not set)') AS device,
			   sum(d.sign) AS sessions, coalesce(sum(d.sign) FILTER (WHERE d.converted), 0) AS converted,
			   sum(d.sign * d.revenue) AS revenue
		FROM pg_temp.clickstream_session_delta d GROUP BY 1, 2, 3),
	u AS (
		SELECT (m.key ->> 0)::date AS day, m.key ->> 1 AS country, m.key ->> 2 AS device, m.users
		FROM clickstream.marts_count_members('clickstream.audience_day_users',
			ARRAY['day', 'country', 'device'], $q$
				SELECT d.session_date AS day, clickstream.label(d.country, '(not set)') AS country,
					   clickstream.label(d.device, '(not set)') AS device, d.user_id, d.sign
				FROM pg_temp.clickstream_session_delta d $q$) m)
	INSERT INTO clickstream.audience_daily AS t
	SELECT day, country, device, coalesce(c.sessions, 0), coalesce(u.users, 0),
		   coalesce(c.converted, 0), coalesce(c.revenue, 0)
	FROM c FULL JOIN u USING (day, country, device)
	ON CONFLICT (day, country, device) DO UPDATE
	SET sessions = t.sessions + excluded.sessions,
		users = t.users + excluded.users,
		converted_sessions = t.converted_sessions + excluded.converted_sessions,
		revenue = t.revenue + excluded.revenue;
	DELETE FROM clickstream.audience_daily t
	USING (SELECT DISTINCT d.session_date AS day, clickstream.label(d.country, '(not set)') AS country,
				  clickstream.label(d.device, '(not set)') AS device
		   FROM pg_temp.clickstream_session_delta d) k
	WHERE t.day = k.day AND t.country = k.country AND t.device = k.device AND t.sessions = 0;

	-- pages: entrances and exits
	INSERT INTO clickstream.pages_daily AS t
	SELECT x.day, x.page_url, 0, sum(x.entrances), sum(x.exits), 0
	FROM (SELECT d.session_date AS day, clickstream.label(d.landing_page, '(not set)') AS page_url,
				 d.sign AS entrances, 0 AS exits
		  FROM pg_temp.clickstream_session_delta d
		  UNION ALL
		  SELECT d.session_date, clickstream.label(d.exit_page, '(not set)'), 0, d.sign
		  FROM pg_temp.clickstream_session_delta d) x
	GROUP BY 1, 2
	HAVING sum(x.entrances) <> 0 OR sum(x.exits) <> 0
	ON CONFLICT (day, page_url) DO UPDATE
	SET entrances = t.entrances + excluded.entrances,
		exits = t.exits + excluded.exits;
	DELETE FROM clickstream.pages_daily t
	USING (SELECT DISTINCT d.session_date AS day, clickstream.label(d.landing_page, '(not set)') AS page_url
		   FROM pg_temp.clickstream_session_delta d
		   UNION
		   SELECT d.session_date, clickstream.label(d.exit_page, '(not set)')
		   FROM pg_temp.clickstream_session_delta d) k
	WHERE t.day = k.day AND t.page_url = k.page_url
		AND t.page_views = 0 AND t.entrances = 0 AND t.exits = 0;
END
$$;

COMMENT ON FUNCTION clickstream.marts_apply_sessions() IS
'Internal (clickstream.refresh_gold()): add what the sessions the step removed (-1) and wrote (+1) count (pg_temp.clickstream_session_delta) to traffic_daily, audience_daily, pages_daily, users and the daily and hourly deltas.';

-- Orders after the step: their sessions (new orders, and the orders of the
-- users whose sessions were recomputed), their counts per day and hour, and
-- their owners' lifetime value.  dirty: a query of (user_id, from_ts,
-- to_ts), the ranges whose sessions were replaced.
CREATE FUNCTION clickstream.marts_apply_orders(dirty text)
RETURNS void
LANGUAGE plpgsql
AS $$
BEGIN
	EXECUTE format($q$
		UPDATE clickstream.orders o
		SET session_id = (
			SELECT s.session_id FROM clickstream.sessions s
			WHERE s.user_id = o.user_id AND (s.session_start, s.first_event_id) <= (o.ordered_at, o.first_event_id)
			ORDER BY s.session_start DESC, s.first_event_id DESC
			LIMIT 1)
		WHERE o.order_id IN (SELECT d.order_id FROM pg_temp.clickstream_order_delta d WHERE d.sign = 1)
		   OR o.ctid = ANY (ARRAY(
				SELECT x.ctid
				FROM (%s) d
				CROSS JOIN LATERAL (
					SELECT o2.ctid FROM clickstream.orders o2
					WHERE o2.user_id = d.user_id AND o2.ordered_at >= d.from_ts
						AND o2.ordered_at <= d.to_ts) x))
	$q$, dirty);

	INSERT INTO pg_temp.clickstream_day_delta (day, orders)
	SELECT clickstream.local_day(d.ordered_at), sum(d.sign)
	FROM pg_temp.clickstream_order_delta d GROUP BY 1;
	INSERT INTO pg_temp.clickstream_hour_delta (hour, orders)
	SELECT clickstream.local_hour(d.ordered_at), sum(d.sign)
	FROM pg_temp.clickstream_order_delta d GROUP BY 1;

	UPDATE clickstream.users u
	SET orders = coalesce(o.orders, 0), revenue = coalesce(o.revenue, 0),
		first_order_at = o.first_order_at
	FROM (SELECT DISTINCT d.user_id FROM pg_temp.clickstream_order_delta d) k
	LEFT JOIN LATERAL (
		SELECT count(*) AS orders, sum(o.revenue) AS revenue, min(o.ordered_at) AS first_order_at
		FROM clickstream.orders o WHERE o.user_id = k.user_id) o ON true
	WHERE u.user_id = k.user_id;
END
$$;

COMMENT ON FUNCTION clickstream.marts_apply_orders(text) IS
'Internal (clickstream.refresh_gold()): set the sessions of the orders the step wrote and of the orders in the recomputed session ranges, record the order counts per day and hour, and recompute the order count, revenue and first order of their users.';

-- Add the scratch deltas to daily_metrics, hourly_metrics, active_users
-- and cohort_retention, with the rates and growth of the rows touched.
CREATE FUNCTION clickstream.marts_apply_deltas()
RETURNS void
LANGUAGE plpgsql
AS $$
BEGIN
	WITH d AS (
		SELECT d.day, sum(d.events) AS events, sum(d.page_views) AS page_views,
			   sum(d.users) AS users, sum(d.new_users) AS new_users, sum(d.sessions) AS sessions,
			   sum(d.bounced) AS bounced, sum(d.converted) AS converted, sum(d.seconds) AS seconds,
			   sum(d.orders) AS orders, sum(d.units) AS units, sum(d.revenue) AS revenue
		FROM pg_temp.clickstream_day_delta d GROUP BY d.day)
	INSERT INTO clickstream.daily_metrics AS t (day, events, page_views, users, new_users,
		sessions, bounced_sessions, converted_sessions, session_seconds, orders, units, revenue)
	SELECT * FROM d
	ON CONFLICT (day) DO UPDATE
	SET events = t.events + excluded.events,
		page_views = t.page_views + excluded.page_views,
		users = t.users + excluded.users,
		new_users = t.new_users + excluded.new_users,
		sessions = t.sessions + excluded.sessions,
		bounced_sessions = t.bounced_sessions + excluded.bounced_sessions,
		converted_sessions = t.converted_sessions + excluded.converted_sessions,
		session_seconds = t.session_seconds + excluded.session_seconds,
		orders = t.orders + excluded.orders,
		units = t.units + excluded.units,
		revenue = t.revenue + excluded.revenue;
	DELETE FROM clickstream.daily_metrics t
	USING (SELECT DISTINCT d.day FROM pg_temp.clickstream_day_delta d) k
	WHERE t.day = k.day AND t.events = 0;
	-- the rates of the days touched, the growth of those and of the next
	UPDATE clickstream.daily_metrics t
	SET avg_session_seconds = clickstream.rate(t.session_seconds, t.sessions),
		bounce_rate = clickstream.rate(t.bounced_sessions, t.sessions),
		conversion_rate = clickstream.rate(t.converted_sessions, t.sessions),
		aov = clickstream.rate(t.revenue, t.orders),
		revenue_growth = clickstream.rate(t.revenue - p.revenue, p.revenue),
		users_growth = clickstream.rate(t.users - p.users, p.users),
		orders_growth = clickstream.rate(t.orders - p.orders, p.orders)
	FROM (SELECT d.day FROM pg_temp.clickstream_day_delta d
		  UNION SELECT d.day + 1 FROM pg_temp.clickstream_day_delta d) k
	LEFT JOIN clickstream.daily_metrics p ON p.day = k.day - 1
	WHERE t.day = k.day;

	WITH d AS (
		SELECT d.hour, sum(d.events) AS events, sum(d.users) AS users,
			   sum(d.sessions) AS sessions, sum(d.orders) AS orders, sum(d.revenue) AS revenue
		FROM pg_temp.clickstream_hour_delta d GROUP BY d.hour)
	INSERT INTO clickstream.hourly_metrics AS t
	SELECT d.hour, clickstream.local_day(d.hour), d.events, d.users, d.sessions, d.orders, d.revenue
	FROM d
	ON CONFLICT (hour) DO UPDATE
	SET events = t.events + excluded.events,
		users = t.users + excluded.users,
		sessions_started = t.sessions_started + excluded.sessions_started,
		orders = t.orders + excluded.orders,
		revenue = t.revenue + excluded.revenue;
	DELETE FROM clickstream.hourly_metrics t
	USING (SELECT DISTINCT d.hour FROM pg_temp.clickstream_hour_delta d) k
	WHERE t.hour = k.hour AND t.events = 0;

	INSERT INTO clickstream.active_users AS t
	SELECT d.day, d.dau, d.wau, d.mau, NULL FROM pg_temp.clickstream_active_delta d
	ON CONFLICT (day) DO UPDATE
	SET dau = t.dau + excluded.dau, wau = t.wau + excluded.wau, mau = t.mau + excluded.mau;
	UPDATE clickstream.active_users t SET stickiness = clickstream.rate(t.dau, t.mau)
	FROM pg_temp.clickstream_active_delta d WHERE t.day = d.day;

	-- retention: the cohorts' sizes, then the weeks' active users
	WITH size AS (
		SELECT d.cohort_week, sum(d.users) AS users
		FROM pg_temp.clickstream_cohort_delta d WHERE d.week_number = -1 GROUP BY 1)
	UPDATE clickstream.cohort_retention t SET cohort_users = t.cohort_users + s.users
	FROM size s WHERE t.cohort_week = s.cohort_week;
	INSERT INTO clickstream.cohort_retention AS t
	SELECT d.cohort_week, d.week_number,
		   coalesce((SELECT c.cohort_users FROM clickstream.cohort_retention c
					 WHERE c.cohort_week = d.cohort_week AND c.week_number = 0),
					(SELECT sum(s.users) FROM pg_temp.clickstream_cohort_delta s
					 WHERE s.cohort_week = d.cohort_week AND s.week_number = -1), 0),
		   d.users, NULL
	FROM pg_temp.clickstream_cohort_delta d WHERE d.week_number >= 0
	ON CONFLICT (cohort_week, week_number) DO UPDATE
	SET active_users = t.active_users + excluded.active_users;
	DELETE FROM clickstream.cohort_retention t
	USING (SELECT DISTINCT d.cohort_week FROM pg_temp.clickstream_cohort_delta d) k
	WHERE t.cohort_week = k.cohort_week AND (t.active_users = 0 OR t.cohort_users = 0);
	UPDATE clickstream.cohort_retention t
	SET retention_rate = clickstream.rate(t.active_users, t.cohort_users)
	FROM (SELECT DISTINCT d.cohort_week FROM pg_temp.clickstream_cohort_delta d) k
	WHERE t.cohort_week = k.cohort_week;
END
$$;

COMMENT ON FUNCTION clickstream.marts_apply_deltas() IS
'Internal (clickstream.refresh_gold()): add the step''s scratch deltas to daily_metrics, hourly_metrics, active_users and cohort_retention, and recompute the rates and day-over-day growth of the rows they touched.';

-- Rebuild every mart and set from silver and clickstream.sessions.
CREATE FUNCTION clickstream.rebuild_marts()
RETURNS void
LANGUAGE plpgsql
AS $$
BEGIN
	TRUNCATE clickstream.daily_metrics, clickstream.hourly_metrics, clickstream.category_daily,
		clickstream.product_daily, clickstream.products, clickstream.orders, clickstream.users,
		clickstream.active_users, clickstream.cohort_retention, clickstream.traffic_daily,
		clickstream.audience_daily, clickstream.pages_daily, clickstream.user_days,
		clickstream.category_day_users, clickstream.page_day_users,
		clickstream.traffic_day_users, clickstream.audience_day_users;
	INSERT INTO clickstream.user_days SELECT * FROM clickstream.recompute_user_days();
	INSERT INTO clickstream.category_day_users SELECT * FROM clickstream.recompute_category_day_users();
	INSERT INTO clickstream.page_day_users SELECT * FROM clickstream.recompute_page_day_users();
	INSERT INTO clickstream.traffic_day_users SELECT * FROM clickstream.recompute_traffic_day_users();
	INSERT INTO clickstream.audience_day_users SELECT * FROM clickstream.recompute_audience_day_users();
	INSERT INTO clickstream.orders SELECT * FROM clickstream.recompute_orders();
	INSERT INTO clickstream.users SELECT * FROM clickstream.recompute_users();
	INSERT INTO clickstream.products SELECT * FROM clickstream.recompute_products();
	INSERT INTO clickstream.product_daily SELECT * FROM clickstream.recompute_product_daily();
	INSERT INTO clickstream.category_daily SELECT * FROM clickstream.recompute_category_daily();
	INSERT INTO clickstream.daily_metrics SELECT * FROM clickstream.recompute_daily_metrics();
	INSERT INTO clickstream.hourly_metrics SELECT * FROM clickstream.recompute_hourly_metrics();
	INSERT INTO clickstream.active_users SELECT * FROM clickstream.recompute_active_users();
	INSERT INTO clickstream.cohort_retention SELECT * FROM clickstream.recompute_cohort_retention();
	INSERT INTO clickstream.traffic_daily SELECT * FROM clickstream.recompute_traffic_daily();
	INSERT INTO clickstream.audience_daily SELECT * FROM clickstream.recompute_audience_daily();
	INSERT INTO clickstream.pages_daily SELECT * FROM clickstream.recompute_pages_daily();
END
$$;

COMMENT ON FUNCTION clickstream.rebuild_marts() IS
'Internal (clickstream.rebuild_gold()): empty every mart and set and fill it with its full recomputation.';

REVOKE ALL ON FUNCTION clickstream.marts_scratch() FROM PUBLIC;

REVOKE ALL ON FUNCTION clickstream.marts_apply_events() FROM PUBLIC;

REVOKE ALL ON FUNCTION clickstream.marts_count_members(regclass, text[], text) FROM PUBLIC;

REVOKE ALL ON FUNCTION clickstream.marts_apply_sessions() FROM PUBLIC;

REVOKE ALL ON FUNCTION clickstream.marts_apply_orders(text) FROM PUBLIC;

REVOKE ALL ON FUNCTION clickstream.marts_apply_deltas() FROM PUBLIC;

REVOKE ALL ON FUNCTION clickstream.rebuild_marts() FROM PUBLIC;

-- Right now ------------------------------------------------------------------------

-- The last minutes at query time: silver's newest events (through the BRIN
-- and purchase indexes of clickstream.events) and what bronze holds that the
-- refresh has not promoted yet, parsed on the fly.
CREATE VIEW clickstream.live AS
WITH recent AS (
	SELECT e.user_id, e.ts, e.event_type, e.revenue
	FROM clickstream.events e
	WHERE e.ts >= now() - interval '5 minutes'
		AND e.event_date >= (now() AT TIME ZONE current_setting('clickstream.timezone'))::date - 2
	UNION ALL
	SELECT p.user_id, p.ts, p.event_type, p.revenue
	FROM clickstream.bronze b
	CROSS JOIN LATERAL clickstream.parse_event(b.payload) p
	WHERE p.reason IS NULL AND p.ts >= now() - interval '5 minutes')
SELECT to_timestamp(floor(extract(epoch FROM r.ts) / 10) * 10) AS bucket,
	   count(*) AS events,
	   count(DISTINCT r.user_id) AS users,
	   count(*) FILTER (WHERE r.event_type = 'purchase') AS purchases,
	   coalesce(sum(r.revenue) FILTER (WHERE r.event_type = 'purchase'), 0) AS revenue
FROM recent r
GROUP BY 1;

COMMENT ON VIEW clickstream.live IS
'Right now, seconds fresh: per 10-second bucket of the last 5 minutes, events, distinct users, purchases and revenue, from silver and from the bronze rows the refresh has not promoted yet (parsed on the fly). The bronze part is validated but not deduplicated: a redelivered event is counted again until it is promoted, and a user with events on both sides of a bucket is exact. Its cost follows the events of the last 5 minutes, not history.';

COMMENT ON COLUMN clickstream.live.bucket IS 'Start of the 10-second bucket (by event time).';

COMMENT ON COLUMN clickstream.live.events IS 'Events in the bucket.';

COMMENT ON COLUMN clickstream.live.users IS 'Distinct users with an event in the bucket.';

COMMENT ON COLUMN clickstream.live.purchases IS 'Purchase events in the bucket.';

COMMENT ON COLUMN clickstream.live.revenue IS 'Their revenue.';

CREATE VIEW clickstream.live_summary AS
WITH unpromoted AS (
	SELECT p.user_id, p.ts, p.event_type, p.revenue, p.order_id, p.event_id
	FROM clickstream.bronze b
	CROSS JOIN LATERAL clickstream.parse_event(b.payload) p
	WHERE p.reason IS NULL AND p.ts >= now() - interval '1 hour'),
last5 AS (
	SELECT e.user_id, e.ts FROM clickstream.events e
	WHERE e.ts >= now() - interval '5 minutes'
		AND e.event_date >= (now() AT TIME ZONE current_setting('clickstream.timezone'))::date - 2
	UNION ALL
	SELECT u.user_id, u.ts FROM unpromoted u WHERE u.ts >= now() - interval '5 minutes'),
purchases AS (
	SELECT e.revenue, clickstream.order_key(e.order_id, e.event_id) AS order_id
	FROM clickstream.events e
	WHERE e.event_type = 'purchase' AND e.ts >= now() - interval '1 hour'
		AND e.event_date >= (now() AT TIME ZONE current_setting('clickstream.timezone'))::date - 2
	UNION ALL
	SELECT u.revenue, clickstream.order_key(u.order_id, u.event_id)
	FROM unpromoted u WHERE u.event_type = 'purchase')
SELECT (SELECT count(*) FROM last5) AS events_5m,
	   (SELECT count(DISTINCT l.user_id) FROM last5 l) AS users_5m,
	   (SELECT count(DISTINCT p.order_id) FROM purchases p) AS orders_1h,
	   (SELECT coalesce(sum(p.revenue), 0) FROM purchases p) AS revenue_1h,
	   (SELECT max(l.ts) FROM last5 l) AS last_event_at,
	   (SELECT count(*) FROM clickstream.bronze) AS unpromoted,
	   (SELECT min(b.ingested_at) FROM clickstream.bronze b) AS oldest_unpromoted_at;

COMMENT ON VIEW clickstream.live_summary IS
'Right now, one row: events and distinct users of the last 5 minutes, orders and revenue of the last hour, the newest event time, and how much bronze holds that the refresh has not promoted yet. Silver plus bronze parsed on the fly, like clickstream.live (not deduplicated on the bronze side).';

COMMENT ON COLUMN clickstream.live_summary.events_5m IS 'Events in the last 5 minutes.';

COMMENT ON COLUMN clickstream.live_summary.users_5m IS 'Distinct users with an event in the last 5 minutes.';

COMMENT ON COLUMN clickstream.live_summary.orders_1h IS 'Orders with a purchase event in the last hour.';

COMMENT ON COLUMN clickstream.live_summary.revenue_1h IS 'Revenue of the purchase events of the last hour.';

COMMENT ON COLUMN clickstream.live_summary.last_event_at IS 'Time of the newest event of the last 5 minutes.';

COMMENT ON COLUMN clickstream.live_summary.unpromoted IS 'Rows in bronze, waiting for the refresh.';

COMMENT ON COLUMN clickstream.live_summary.oldest_unpromoted_at IS 'When the oldest of them was ingested: how far behind silver and gold are.';

-- 80_gold -----------------------------------------------------------------
-- Gold maintenance: clickstream.sessions and the tables derived from it kept
-- equal to a full recomputation from silver, incrementally.
--
-- In every silver step's transaction, refresh_gold() reads the touched
-- rows above the gold watermark (gold_state.touch_id): per user, the range of
-- new event times.  It recomputes that user's sessions from the latest session that
-- starts before the first new event (its start stays a start: nothing before
-- it changed) up to the first later session that starts after a gap longer
-- than the timeout (or after midnight with that option) even counting the new
-- events: from there on nothing can change.  Those sessions are replaced by
-- the recomputed ones; what they count is added to the funnel tables
-- (60_funnel_gold.sql) and the marts (70_marts.sql), with what the step's
-- new events add; and the watermark moves, in one transaction.

-- The day partitions of silver, by name.
CREATE FUNCTION clickstream.silver_partitions()
RETURNS text[]
LANGUAGE sql STABLE
AS $$
	SELECT coalesce(array_agg(c.relname::text ORDER BY c.relname), '{}')
	FROM pg_catalog.pg_inherits i
	JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid
	WHERE i.inhparent = 'clickstream.events'::regclass
$$;

COMMENT ON FUNCTION clickstream.silver_partitions() IS
'The names of the day partitions of clickstream.events, sorted: gold notices a day that was dropped or detached by comparing them with clickstream.gold_state.silver_partitions.';

-- Rebuild all of gold from silver (the rules changed, a day was dropped, or
-- on demand).
CREATE FUNCTION clickstream.rebuild_gold()
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
		utm_medium, utm_campaign, device, country, funnel_level, category_funnel, product_funnel)
	SELECT * FROM clickstream.session_rows('clickstream.events');
	GET DIAGNOSTICS written = ROW_COUNT;
	PERFORM clickstream.rebuild_funnels();
	PERFORM clickstream.rebuild_marts();
	UPDATE clickstream.gold_state g
	SET touch_id = (SELECT coalesce(max(t.touch_id), 0) FROM clickstream.touched t),
		timezone_changed = g.timezone_changed OR coalesce((g.session_rules ->> 'timezone')
			<> current_setting('clickstream.timezone'), false),
		session_rules = clickstream.gold_rules(),
		silver_partitions = clickstream.silver_partitions(),
		updated_at = now();
	RETURN written;
END
$$ SET work_mem = '256MB' SET jit = off;

COMMENT ON FUNCTION clickstream.rebuild_gold() IS
'Recompute all of gold from silver: clickstream.sessions, the funnel tables and every mart, and move the gold watermark to the latest touched row; returns the number of sessions. clickstream.refresh() does it by itself when the session rules (clickstream.session_*, clickstream.timezone) or clickstream.funnel_definition changed, or a day partition of silver was dropped; run it after deleting silver rows by hand.';

CREATE OR REPLACE FUNCTION clickstream.rebuild_sessions()
RETURNS bigint
LANGUAGE sql
AS $$ SELECT clickstream.rebuild_gold() $$;

COMMENT ON FUNCTION clickstream.rebuild_sessions() IS
'The same as clickstream.rebuild_gold() (the marts follow the sessions): recompute all of gold from silver; returns the number of sessions.';

-- Per-call scratch tables; emptied at every commit.
CREATE OR REPLACE FUNCTION clickstream.gold_scratch()
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
	PERFORM clickstream.funnel_scratch();
END
$$;

COMMENT ON FUNCTION clickstream.gold_scratch() IS
'Internal: create the session''s scratch tables of clickstream.refresh_gold() (pg_temp.clickstream_dirty, pg_temp.clickstream_affected, and those of clickstream.funnel_scratch()).';

CREATE FUNCTION clickstream.refresh_gold(OUT users bigint, OUT sessions_removed bigint,
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
	parts text[];
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
	parts := clickstream.silver_partitions();
	IF gold.session_rules IS DISTINCT FROM rules
	   OR NOT coalesce(gold.silver_partitions <@ parts, true) THEN
		IF gold.session_rules IS DISTINCT FROM rules AND gold.session_rules IS NOT NULL THEN
			RAISE NOTICE 'clickstream: the session rules or the funnel changed, rebuilding gold'
				USING DETAIL = format('from %s to %s', gold.session_rules, rules);
		ELSIF gold.session_rules IS NOT NULL THEN
			RAISE NOTICE 'clickstream: a day partition of clickstream.events is gone, rebuilding gold from the days that are left'
				USING DETAIL = format('gone: %s', (SELECT string_agg(p, ', ') FROM unnest(gold.silver_partitions) p
												 WHERE p <> ALL (parts)));
		END IF;
		SELECT count(*) INTO sessions_removed FROM clickstream.sessions;
		sessions_written := clickstream.rebuild_gold();
		rebuilt := true;
		RETURN;
	END IF;
	IF gold.silver_partitions IS DISTINCT FROM parts THEN
		UPDATE clickstream.gold_state SET silver_partitions = parts;
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
	RETURNING s.*)
	INSERT INTO pg_temp.clickstream_session_delta
	SELECT -1, g.* FROM gone g;
	GET DIAGNOSTICS sessions_removed = ROW_COUNT;

	WITH added AS (
	INSERT INTO clickstream.sessions (session_id, user_id, session_start, session_end,
		session_date, first_event_id, last_event_id, events, page_views, add_to_carts,
		checkouts, purchases, revenue, converted, landing_page, exit_page, utm_source,
		utm_medium, utm_campaign, device, country, funnel_level, category_funnel, product_funnel)
	SELECT * FROM clickstream.session_rows('pg_temp.clickstream_affected')
	RETURNING *)
	INSERT INTO pg_temp.clickstream_session_delta
	SELECT 1, a.* FROM added a;
	GET DIAGNOSTICS sessions_written = ROW_COUNT;
	PERFORM clickstream.apply_funnel_delta();

	-- the marts: what the step's events add, what the replaced sessions
	-- count, the orders, then the daily, hourly, active-user and retention
	-- tables
	PERFORM clickstream.marts_scratch();
	PERFORM clickstream.marts_apply_events();
	PERFORM clickstream.marts_apply_sessions();
	PERFORM clickstream.marts_apply_orders(
		'SELECT d.user_id, d.from_ts, d.to_ts FROM pg_temp.clickstream_dirty d');
	PERFORM clickstream.marts_apply_deltas();

	UPDATE clickstream.gold_state SET touch_id = hi, updated_at = now();
END
$$ SET work_mem = '256MB' SET jit = off;

COMMENT ON FUNCTION clickstream.refresh_gold() IS
'Internal (run by clickstream.refresh() in every silver step''s transaction, and by replay_dead_letters): bring gold up to date with the step: clickstream.sessions from the touched rows above the gold watermark (recomputing only the affected sessions of the affected users), the funnel tables from the sessions replaced, and every mart from those and from the step''s new events (pg_temp.clickstream_step_events); rebuilds all of gold when the session rules or the funnel changed or a day partition of silver is gone, and high_interest_low_conversion when its thresholds changed.';

REVOKE ALL ON FUNCTION clickstream.refresh_gold() FROM PUBLIC;

REVOKE ALL ON FUNCTION clickstream.rebuild_gold() FROM PUBLIC;

-- Verification --------------------------------------------------------------------

-- Every gold table against its full recomputation: sessions against
-- session_rows('clickstream.events'), the funnel tables and the marts
-- against the plain-SQL recomputations of 60_funnel_gold.sql and
-- 70_marts.sql.  Rows are compared whole (every column); since restricts
-- the tables keyed by day to days >= since.
CREATE FUNCTION clickstream.verify_gold(since date DEFAULT NULL)
RETURNS TABLE (mart text, gold_rows bigint, recomputed_rows bigint, missing bigint,
	unexpected bigint, ok boolean)
LANGUAGE plpgsql
AS $$
DECLARE
	c record;
	session_cols text := 'session_id, user_id, session_start, session_end, session_date, '
		'first_event_id, last_event_id, events, page_views, add_to_carts, checkouts, purchases, '
		'revenue, converted, landing_page, exit_page, utm_source, utm_medium, utm_campaign, '
		'device, country, funnel_level, category_funnel, product_funnel';
	funnel_cols text := 'step, step_name, sessions, reached, conversion_from_previous, '
		'conversion_from_first, conversion_overall';
BEGIN
	FOR c IN
		SELECT * FROM (VALUES
			('sessions', format('SELECT %s FROM clickstream.sessions WHERE $1 IS NULL OR session_date >= $1', session_cols),
			 format('SELECT %s FROM clickstream.session_rows(''clickstream.events'') WHERE $1 IS NULL OR session_date >= $1', session_cols)),
			('daily_funnel', format('SELECT day, %s FROM clickstream.daily_funnel WHERE $1 IS NULL OR day >= $1', funnel_cols),
			 format('SELECT day, %s FROM clickstream.recompute_funnels() WHERE kind = ''daily'' AND ($1 IS NULL OR day >= $1)', funnel_cols)),
			('funnel_by_category', format('SELECT day, category, %s FROM clickstream.funnel_by_category WHERE $1 IS NULL OR day >= $1', funnel_cols),
			 format('SELECT day, category, %s FROM clickstream.recompute_funnels() WHERE kind = ''category'' AND ($1 IS NULL OR day >= $1)', funnel_cols)),
			('product_funnel', format('SELECT day, product_id, category, %s FROM clickstream.product_funnel WHERE $1 IS NULL OR day >= $1', funnel_cols),
			 format('SELECT day, key, category, %s FROM clickstream.recompute_funnels() WHERE kind = ''product'' AND ($1 IS NULL OR day >= $1)', funnel_cols)),
			('high_interest_low_conversion', 'SELECT * FROM clickstream.high_interest_low_conversion WHERE $1 IS NULL OR day >= $1',
			 'SELECT * FROM clickstream.recompute_high_interest_low_conversion() WHERE $1 IS NULL OR day >= $1'),
			('daily_metrics', 'day', NULL), ('hourly_metrics', 'day', NULL),
			('category_daily', 'day', NULL), ('product_daily', 'day', NULL),
			('products', NULL, NULL), ('orders', NULL, NULL), ('users', NULL, NULL),
			('active_users', 'day', NULL), ('cohort_retention', 'cohort_week', NULL),
			('traffic_daily', 'day', NULL), ('audience_daily', 'day', NULL),
			('pages_daily', 'day', NULL), ('user_days', 'day', NULL),
			('category_day_users', 'day', NULL), ('page_day_users', 'day', NULL),
			('traffic_day_users', 'day', NULL), ('audience_day_users', 'day', NULL)
		) AS m (name, g, r)
	LOOP
		mart := c.name;
		IF c.r IS NULL THEN
			-- a mart of 70_marts.sql: the table and its recompute_ function;
			-- g names its day column, if any
			c.r := format('SELECT * FROM clickstream.%I() x WHERE %s', 'recompute_' || c.name,
						  CASE WHEN c.g IS NULL THEN '$1 IS NULL OR true'
							   ELSE format('$1 IS NULL OR x.%I >= $1', c.g) END);
			c.g := format('SELECT * FROM clickstream.%I x WHERE %s', c.name,
						  CASE WHEN c.g IS NULL THEN '$1 IS NULL OR true'
							   ELSE format('$1 IS NULL OR x.%I >= $1', c.g) END);
		END IF;
		EXECUTE format($q$
			WITH g AS MATERIALIZED (%s), r AS MATERIALIZED (%s)
			SELECT (SELECT count(*) FROM g), (SELECT count(*) FROM r),
				   (SELECT count(*) FROM (TABLE r EXCEPT ALL TABLE g) a),
				   (SELECT count(*) FROM (TABLE g EXCEPT ALL TABLE r) b)
		$q$, c.g, c.r)
		INTO gold_rows, recomputed_rows, missing, unexpected
		USING since;
		ok := missing = 0 AND unexpected = 0;
		RETURN NEXT;
	END LOOP;
END
$$ SET work_mem = '256MB' SET jit = off SET enable_mergejoin = off;

COMMENT ON FUNCTION clickstream.verify_gold(date) IS
'Compare every gold table with its full recomputation from silver, row by row and column by column: clickstream.sessions with session_rows(''clickstream.events''), the funnel tables, and every mart and its sets with their plain-SQL recomputations (recompute_*). One row per table: rows in gold, rows recomputed, rows missing from gold, rows in gold that should not be there, ok. since (optional) restricts the tables keyed by day to the days from since on; the lifetime tables (users, products, orders) are always compared whole. Costs a full recomputation: run it from check_quality() or by hand, not every minute.';

INSERT INTO clickstream.quality_checks (name, layer, severity, description, query, builtin) VALUES
('gold_matches_recomputation', 'gold', 'error',
 'Every gold table (sessions, funnels, marts) equals its full recomputation from silver (clickstream.verify_gold()): the number of rows missing or unexpected.',
 $q$SELECT coalesce(sum(missing + unexpected), 0) FROM clickstream.verify_gold($1::date)$q$, true)
ON CONFLICT (name) DO NOTHING;

-- 90_orchestration --------------------------------------------------------
-- Orchestration: clickstream.refresh() (silver steps, each with gold brought
-- up to date in its transaction), dead-letter replay, pruning of the
-- history tables, and scheduling with pg_cron.  Uses every layer before it.

-- The refresh ---------------------------------------------------------------

CREATE OR REPLACE PROCEDURE clickstream.refresh(max_steps integer DEFAULT NULL)
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
			gold := clickstream.refresh_gold();
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

-- Replaying dead letters ----------------------------------------------------

CREATE OR REPLACE FUNCTION clickstream.replay_dead_letters(only_reason text DEFAULT NULL,
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
	PERFORM clickstream.refresh_scratch();

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
	INSERT INTO pg_temp.clickstream_step_events
	SELECT e.event_id, e.event_type, e.user_id, e.ts, e.event_date, e.event_hour, e.product_id, e.category, e.price, e.quantity, e.order_id, e.page_url, e.referrer, e.utm_source, e.utm_medium, e.utm_campaign, e.device, e.country, e.is_high_value, e.revenue, e.attrs, e.kafka_topic, e.kafka_partition, e.kafka_offset, e.run_id FROM clickstream.events e WHERE e.run_id = replay_dead_letters.run_id;  -- TEMPORARY
	-- gold follows in the same transaction
	PERFORM clickstream.refresh_gold();
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

-- DROP EXTENSION removes the job (src/drop.c): pg_cron keeps it in its own
-- table, where it would fail every minute once refresh() is gone.
CREATE FUNCTION clickstream.drop_cleanup()
RETURNS event_trigger
AS 'MODULE_PATHNAME', 'clickstream_drop_cleanup'
LANGUAGE C;

COMMENT ON FUNCTION clickstream.drop_cleanup() IS
'Event trigger function: when a DROP EXTENSION or DROP SCHEMA statement drops clickstream, remove this database''s pg_cron job clickstream-refresh first, in the same transaction.';

CREATE EVENT TRIGGER clickstream_drop_cleanup ON ddl_command_start
WHEN TAG IN ('DROP EXTENSION', 'DROP SCHEMA')
EXECUTE FUNCTION clickstream.drop_cleanup();

COMMENT ON EVENT TRIGGER clickstream_drop_cleanup IS
'Removes the pg_cron job clickstream-refresh when the extension (or its schema) is dropped (clickstream.drop_cleanup()).';

REVOKE ALL ON FUNCTION clickstream.drop_cleanup() FROM PUBLIC;

-- 97_backup ---------------------------------------------------------------
-- Backup: what pg_dump saves of the extension's tables.
--
-- pg_dump leaves out the contents of an extension's tables unless the
-- install script registers them (pg_extension_config_dump); a restore then
-- runs CREATE EXTENSION and loads what was saved.  Every table that holds
-- pipeline state is registered here, with the sequences that number its
-- rows; the configuration tables with shipped rows are registered next to
-- those rows, with a filter that leaves them out (event_types,
-- quality_checks, funnel_definition).  The day partitions of
-- clickstream.events are not members of the extension (create_partitions
-- makes them at run time): pg_dump saves them, their indexes and their rows
-- like any table of the user's.
--
-- Not registered: bronze and ingest_positions.  They are UNLOGGED, crash
-- recovery empties them, and the worker then resumes from the durable
-- watermarks; a restored server does the same, so a dump holds no rows of
-- them and needs none (docs/operations.md, "Backup and restore").
-- test/sql/backup.sql checks that every other table is registered.

-- positions and dead letters (10_bronze.sql)
SELECT pg_catalog.pg_extension_config_dump('clickstream.watermarks', '');

SELECT pg_catalog.pg_extension_config_dump('clickstream.dead_letters', '');

SELECT pg_catalog.pg_extension_config_dump('clickstream.dead_letters_id_seq', '');

-- silver and its bookkeeping (20_silver.sql)
SELECT pg_catalog.pg_extension_config_dump('clickstream.event_ids', '');

SELECT pg_catalog.pg_extension_config_dump('clickstream.refresh_history', '');

SELECT pg_catalog.pg_extension_config_dump('clickstream.refresh_history_run_id_seq', '');

SELECT pg_catalog.pg_extension_config_dump('clickstream.touched', '');

SELECT pg_catalog.pg_extension_config_dump('clickstream.touched_touch_id_seq', '');

-- quality results (30_quality.sql)
SELECT pg_catalog.pg_extension_config_dump('clickstream.quality_results', '');

SELECT pg_catalog.pg_extension_config_dump('clickstream.quality_results_id_seq', '');

-- gold: sessions and where gold stands (50_sessions.sql)
SELECT pg_catalog.pg_extension_config_dump('clickstream.sessions', '');

SELECT pg_catalog.pg_extension_config_dump('clickstream.gold_state', '');

-- the funnel tables (60_funnel_gold.sql)
SELECT pg_catalog.pg_extension_config_dump('clickstream.daily_funnel', '');

SELECT pg_catalog.pg_extension_config_dump('clickstream.funnel_by_category', '');

SELECT pg_catalog.pg_extension_config_dump('clickstream.product_funnel', '');

SELECT pg_catalog.pg_extension_config_dump('clickstream.high_interest_low_conversion', '');

-- the marts and their sets (70_marts.sql)
SELECT pg_catalog.pg_extension_config_dump('clickstream.daily_metrics', '');

SELECT pg_catalog.pg_extension_config_dump('clickstream.hourly_metrics', '');

SELECT pg_catalog.pg_extension_config_dump('clickstream.category_daily', '');

SELECT pg_catalog.pg_extension_config_dump('clickstream.product_daily', '');

SELECT pg_catalog.pg_extension_config_dump('clickstream.products', '');

SELECT pg_catalog.pg_extension_config_dump('clickstream.orders', '');

SELECT pg_catalog.pg_extension_config_dump('clickstream.users', '');

SELECT pg_catalog.pg_extension_config_dump('clickstream.active_users', '');

SELECT pg_catalog.pg_extension_config_dump('clickstream.cohort_retention', '');

SELECT pg_catalog.pg_extension_config_dump('clickstream.traffic_daily', '');

SELECT pg_catalog.pg_extension_config_dump('clickstream.audience_daily', '');

SELECT pg_catalog.pg_extension_config_dump('clickstream.pages_daily', '');

SELECT pg_catalog.pg_extension_config_dump('clickstream.user_days', '');

SELECT pg_catalog.pg_extension_config_dump('clickstream.category_day_users', '');

SELECT pg_catalog.pg_extension_config_dump('clickstream.page_day_users', '');

SELECT pg_catalog.pg_extension_config_dump('clickstream.traffic_day_users', '');

SELECT pg_catalog.pg_extension_config_dump('clickstream.audience_day_users', '');

