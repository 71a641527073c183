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
