-- Gold: sessions.  clickstream.sessionize() (C) assigns events to sessions;
-- clickstream.sessions holds one row per session of silver, with the funnel
-- step it reached (clickstream.funnel_definition), and clickstream.gold_state
-- where gold stands.  80_gold.sql keeps the table equal to a full
-- recomputation (clickstream.session_rows('clickstream.events')),
-- incrementally, in every refresh step.

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

-- (fillfactor 70: a session still going on is extended in place by every
-- step that brings it events, refresh_gold()'s append path; the room left
-- on its page keeps that update off the three indexes)
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
) WITH (fillfactor = 70);

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

CREATE TABLE clickstream.gold_state (
	singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
	touch_id bigint NOT NULL DEFAULT 0,
	session_rules jsonb,
	timezone_changed boolean NOT NULL DEFAULT false,
	interest_rules jsonb,
	silver_partitions text[],
	silver_partition_ids regclass[],
	newest_event_at timestamptz,
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
COMMENT ON COLUMN clickstream.gold_state.silver_partitions IS 'The names of the day partitions of clickstream.events when gold was last brought up to date: one that has gone since (dropped or detached) makes the next refresh rebuild gold from the days that are left.';
COMMENT ON COLUMN clickstream.gold_state.silver_partition_ids IS 'The same partitions as tables (regclass: pg_dump saves them by name, a restore finds the restored tables): a day dropped and then created again under its name (by a late event) is another table, which makes the next refresh rebuild gold as well.';
COMMENT ON COLUMN clickstream.gold_state.newest_event_at IS 'ts of the newest event gold reflects: now() - newest_event_at is how fresh the marts are (event time to gold).';
COMMENT ON COLUMN clickstream.gold_state.updated_at IS 'When gold was last brought up to date.';

-- pg_dump saves the row, and restoring it comes after the restore's CREATE
-- EXTENSION has made a fresh one: the restored row takes its place.
CREATE FUNCTION clickstream.gold_state_replace()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
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

CREATE FUNCTION clickstream.session_rules()
RETURNS jsonb
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
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

-- The funnel's steps as the conditions its aggregates take, over events
-- aliased e: step k is an event of the step's type.
CREATE FUNCTION clickstream.funnel_step_conditions()
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT string_agg(format('e.event_type = %L', t), ', ' ORDER BY o)
	FROM unnest(clickstream.funnel_event_types()) WITH ORDINALITY AS u(t, o)
$$;

COMMENT ON FUNCTION clickstream.funnel_step_conditions() IS
'Internal: the steps of clickstream.funnel_definition as the boolean arguments of funnel_agg() and funnel_breakdown() over events aliased e (e.event_type = ''page_view'', ...), for the SQL that session_rows() and session_append_rows() build.';

-- JIT is off: sessionize()'s row estimate makes the plan look costly, and
-- compiling it took seconds for a few thousand events.  Merge joins are off:
-- the join on event_id is always best hashed (two sorts of every event by
-- event_id made it 1.6x slower on 250 000 events).  STABLE, and sessionize()
-- reads with the caller's snapshot: verify_gold() compares
-- clickstream.sessions with session_rows('clickstream.events') in one
-- statement, and a refresh step that committed in between (a volatile
-- function takes a new snapshot per statement) showed as differences.
CREATE FUNCTION clickstream.session_rows(source regclass)
RETURNS TABLE (session_id uuid, user_id text, session_start timestamptz,
	session_end timestamptz, session_date date, first_event_id text, last_event_id text,
	events integer, page_views integer, add_to_carts integer, checkouts integer,
	purchases integer, revenue numeric, converted boolean, landing_page text,
	exit_page text, utm_source text, utm_medium text, utm_campaign text, device text,
	country text, funnel_level integer, category_funnel jsonb, product_funnel jsonb)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	events text := format('SELECT user_id, ts, event_id, utm_source, utm_campaign FROM %s', source);
	-- the funnel: the session is its window (no event of a session is more
	-- than session_max_duration after its start)
	win interval := current_setting('clickstream.session_max_duration')::interval;
	conditions text := clickstream.funnel_step_conditions();
BEGIN
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
			   -- one (a checkout carries no product); an empty string is none,
			   -- as in the marts
			   coalesce(clickstream.funnel_breakdown(e.ts, %3$L::interval,
													 NULLIF(e.category, ''), %4$s), '{}'),
			   coalesce(clickstream.funnel_breakdown(e.ts, %3$L::interval,
													 NULLIF(e.product_id, ''),
													 NULLIF(e.category, ''), %4$s), '{}')
		FROM clickstream.sessionize(%1$L) z
		JOIN %2$s e ON e.event_id = z.event_id COLLATE "C"
		GROUP BY z.session_id
	$q$, events, source, win, conditions);
END
$$ SET jit = off SET enable_mergejoin = off;

COMMENT ON FUNCTION clickstream.session_rows(regclass) IS
'Sessions (rows of clickstream.sessions) of all events of a table or view with columns of clickstream.events (unique event_id; it reads event_id, event_type, user_id, ts, product_id, category, page_url, utm_source, utm_medium, utm_campaign, device, country and revenue), by the clickstream.session_* rules and the funnel of clickstream.funnel_definition. session_rows(''clickstream.events'') is the full recomputation clickstream.sessions always equals.';

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
COMMENT ON COLUMN clickstream.event_sessions.event_id IS 'The silver event.';
COMMENT ON COLUMN clickstream.event_sessions.user_id IS 'Its user.';
COMMENT ON COLUMN clickstream.event_sessions.ts IS 'Its time.';
COMMENT ON COLUMN clickstream.event_sessions.session_id IS 'The session (clickstream.sessions) it belongs to.';
COMMENT ON COLUMN clickstream.event_sessions.session_start IS 'Start of that session.';

-- The rules gold follows: the session rules and the funnel.
CREATE FUNCTION clickstream.gold_rules()
RETURNS jsonb
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT clickstream.session_rules() || jsonb_build_object('funnel',
		(SELECT jsonb_agg(jsonb_build_array(f.step, f.name, f.event_type) ORDER BY f.step)
		 FROM clickstream.funnel_definition f))
$$;

COMMENT ON FUNCTION clickstream.gold_rules() IS
'What clickstream.sessions and the funnel tables are built by, as one value: clickstream.session_rules() and the steps of clickstream.funnel_definition. A change makes the next refresh rebuild them.';

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
