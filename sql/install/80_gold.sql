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

\echo Use "CREATE EXTENSION clickstream" to load this file. \quit

-- The day partitions of silver as tables, in the order of their names: a
-- day dropped and created again has the same name and is another table.
-- A partition that DETACH PARTITION ... CONCURRENTLY is detaching (or left
-- pending when it was cancelled) is gone already: queries on
-- clickstream.events no longer read it.
CREATE FUNCTION clickstream.silver_partition_ids()
RETURNS regclass[]
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT coalesce(array_agg(c.oid::regclass ORDER BY c.relname), '{}')
	FROM pg_catalog.pg_inherits i
	JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid
	WHERE i.inhparent = 'clickstream.events'::regclass AND NOT i.inhdetachpending
$$;

COMMENT ON FUNCTION clickstream.silver_partition_ids() IS
'The day partitions of clickstream.events as tables, sorted by name: gold notices a day that was dropped or detached (or is being detached CONCURRENTLY: queries no longer read it), even one created again since under its name (by a late event), by comparing them with clickstream.gold_state.silver_partition_ids.';

-- The same partitions by name.
CREATE FUNCTION clickstream.silver_partitions()
RETURNS text[]
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT coalesce(array_agg(c.relname::text ORDER BY c.relname), '{}')
	FROM pg_catalog.pg_class c
	WHERE c.oid = ANY (clickstream.silver_partition_ids()::oid[])
$$;

COMMENT ON FUNCTION clickstream.silver_partitions() IS
'The names of the day partitions of clickstream.events, sorted (those of clickstream.silver_partition_ids()): what clickstream.gold_state.silver_partitions holds, for messages.';

-- The ranges of days the partitions of silver hold, [lo, hi), from their
-- bounds (a DEFAULT partition, or MINVALUE / MAXVALUE, is unbounded there).
CREATE FUNCTION clickstream.silver_partition_ranges()
RETURNS TABLE (lo date, hi date)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT coalesce(substring(b.bound FROM $re$FROM \('([^']*)'\)$re$)::date, '-infinity'),
		   coalesce(substring(b.bound FROM $re$TO \('([^']*)'\)$re$)::date, 'infinity')
	FROM pg_catalog.pg_class c
	CROSS JOIN LATERAL (SELECT pg_catalog.pg_get_expr(c.relpartbound, c.oid) AS bound) b
	WHERE c.oid = ANY (clickstream.silver_partition_ids()::oid[])
$$;

COMMENT ON FUNCTION clickstream.silver_partition_ranges() IS
'Internal: the days each partition of clickstream.events can hold, as [lo, hi) (one day for those of create_partitions; -infinity / infinity for a DEFAULT partition or a MINVALUE / MAXVALUE bound): refresh_gold() reads only the days between a user''s events that have a partition (an event of year 1 for a user active today is not 740 000 empty days to probe).';

-- Rebuild all of gold from silver (the rules changed, a day was dropped, or
-- on demand).
CREATE FUNCTION clickstream.rebuild_gold()
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	written bigint;
BEGIN
	-- one writer of gold at a time (clickstream.refresh() explains the lock)
	LOCK TABLE clickstream.refresh_history IN EXCLUSIVE MODE;
	LOCK TABLE clickstream.funnel_definition IN SHARE MODE;
	PERFORM 1 FROM clickstream.gold_state FOR UPDATE;
	PERFORM clickstream.scratch_renew();
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
			<> current_setting('clickstream.timezone'), false)
			-- rules unknown (the update from 0.1.0 clears them, so that the
			-- first refresh rebuilds): silver itself says whether its days
			-- were dated in another zone
			OR (g.session_rules IS NULL AND EXISTS (
				SELECT 1 FROM clickstream.events e
				WHERE e.event_date <> clickstream.local_day(e.ts))),
		session_rules = clickstream.gold_rules(),
		silver_partitions = clickstream.silver_partitions(),
		silver_partition_ids = clickstream.silver_partition_ids(),
		newest_event_at = (SELECT max(e.ts) FROM clickstream.events e),
		updated_at = now();
	RETURN written;
END
$$ SET work_mem = '256MB' SET jit = off;

COMMENT ON FUNCTION clickstream.rebuild_gold() IS
'Recompute all of gold from silver: clickstream.sessions, the funnel tables and every mart, and move the gold watermark to the latest touched row; returns the number of sessions. clickstream.refresh() does it by itself when the session rules (clickstream.session_*, clickstream.timezone) or clickstream.funnel_definition changed, or a day partition of silver was dropped; run it after deleting silver rows by hand.';

CREATE FUNCTION clickstream.rebuild_sessions()
RETURNS bigint
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$ SELECT clickstream.rebuild_gold() $$;

COMMENT ON FUNCTION clickstream.rebuild_sessions() IS
'The same as clickstream.rebuild_gold() (the marts follow the sessions): recompute all of gold from silver; returns the number of sessions.';

-- Per-call scratch tables; emptied at every commit.
CREATE FUNCTION clickstream.gold_scratch()
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	PERFORM clickstream.scratch_renew();
	-- tables of an older layout (before last_tid and tid) are made again
	IF to_regclass('pg_temp.clickstream_dirty') IS NOT NULL
	   AND NOT EXISTS (SELECT 1 FROM pg_attribute
					   WHERE attrelid = to_regclass('pg_temp.clickstream_dirty')
						   AND attname = 'last_tid' AND NOT attisdropped) THEN
		DROP TABLE pg_temp.clickstream_dirty;
		DROP TABLE IF EXISTS pg_temp.clickstream_reread;
	END IF;
	IF to_regclass('pg_temp.clickstream_append') IS NOT NULL
	   AND NOT EXISTS (SELECT 1 FROM pg_attribute
					   WHERE attrelid = to_regclass('pg_temp.clickstream_append')
						   AND attname = 'tid' AND NOT attisdropped) THEN
		DROP TABLE pg_temp.clickstream_append;
	END IF;
	-- the ranges of sessions a step recomputes, per user; last_tid: where
	-- the user's last session is stored, when the range starts with it
	IF to_regclass('pg_temp.clickstream_dirty') IS NULL THEN
		CREATE TEMP TABLE clickstream_dirty (
			user_id text COLLATE "C" NOT NULL,
			from_ts timestamptz NOT NULL,
			from_id text COLLATE "C" NOT NULL,
			to_ts timestamptz NOT NULL,
			to_id text COLLATE "C" NOT NULL,
			lo_date date NOT NULL,
			hi_date date NOT NULL,
			last_tid tid
		) ON COMMIT DELETE ROWS;
	END IF;
	-- the events of the sessions a step recomputes: the columns of silver
	-- that clickstream.session_rows() reads, and no other (a step re-reads
	-- several times as many events as it brings); one of the older layout
	-- (a copy of all of silver's columns, before 0.2.0: it has event_date)
	-- is made again
	IF EXISTS (SELECT 1 FROM pg_attribute
			   WHERE attrelid = to_regclass('pg_temp.clickstream_affected')
				   AND attname = 'event_date' AND NOT attisdropped) THEN
		DROP TABLE pg_temp.clickstream_affected;
	END IF;
	IF to_regclass('pg_temp.clickstream_affected') IS NULL THEN
		CREATE TEMP TABLE clickstream_affected (
			event_id text COLLATE "C" NOT NULL,
			event_type text NOT NULL,
			user_id text COLLATE "C" NOT NULL,
			ts timestamptz NOT NULL,
			product_id text,
			category text,
			page_url text,
			utm_source text,
			utm_medium text,
			utm_campaign text,
			device text,
			country text,
			revenue numeric
		) ON COMMIT DELETE ROWS;
	END IF;
	-- the sessions a step extends without re-reading them, as they were,
	-- and where they are stored
	IF to_regclass('pg_temp.clickstream_append') IS NULL THEN
		CREATE TEMP TABLE clickstream_append (LIKE clickstream.sessions, tid tid) ON COMMIT DELETE ROWS;
	END IF;
	-- the ranges of clickstream_dirty whose events a step re-reads (all but
	-- those of the sessions it extends)
	IF to_regclass('pg_temp.clickstream_reread') IS NULL THEN
		CREATE TEMP TABLE clickstream_reread (LIKE pg_temp.clickstream_dirty) ON COMMIT DELETE ROWS;
	END IF;
	PERFORM clickstream.funnel_scratch();
END
$$;

COMMENT ON FUNCTION clickstream.gold_scratch() IS
'Internal: create the session''s scratch tables of clickstream.refresh_gold() (pg_temp.clickstream_dirty, pg_temp.clickstream_affected, pg_temp.clickstream_append, pg_temp.clickstream_reread, and those of clickstream.funnel_scratch()).';

-- The sessions a step extends (refresh_gold()'s append path): each row of
-- pg_temp.clickstream_append is a user's last session as stored, which the
-- user's new events after its end (pg_temp.clickstream_step_events; a
-- user's late events in a range split off before it are not its)
-- continue.  Counts and sums add up, the end and exit page are the last new
-- event's.  The funnels continue from the levels reached: a session is its
-- funnel's window, so the furthest chain is the one from its first step-1
-- event, and rows at the old end, one per step reached, put each funnel
-- back where it stood (funnel_agg's as rows here; per category and product,
-- funnel_breakdown_continue makes them from the stored jsonb, which also
-- keeps a key at level 0).
CREATE FUNCTION clickstream.session_append_rows()
RETURNS TABLE (session_id uuid, user_id text, session_start timestamptz,
	session_end timestamptz, session_date date, first_event_id text, last_event_id text,
	events integer, page_views integer, add_to_carts integer, checkouts integer,
	purchases integer, revenue numeric, converted boolean, landing_page text,
	exit_page text, utm_source text, utm_medium text, utm_campaign text, device text,
	country text, funnel_level integer, category_funnel jsonb, product_funnel jsonb)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	win interval := current_setting('clickstream.session_max_duration')::interval;
	steps text[] := clickstream.funnel_event_types();
	conditions text := clickstream.funnel_step_conditions();
BEGIN
	RETURN QUERY EXECUTE format($q$
		WITH e AS (
			SELECT 'n' AS src, e.user_id, e.ts, e.event_type, e.revenue, e.category, e.product_id,
				   a.session_end, a.category_funnel, a.product_funnel
			FROM pg_temp.clickstream_append a
			JOIN pg_temp.clickstream_step_events e ON e.user_id = a.user_id AND e.ts > a.session_end
			UNION ALL
			SELECT 'f', a.user_id, a.session_end, $1[k], NULL, NULL, NULL, NULL, NULL, NULL
			FROM pg_temp.clickstream_append a, generate_series(1, a.funnel_level) k),
		g AS (
			SELECT e.user_id,
				   count(*) FILTER (WHERE e.src = 'n') AS events,
				   count(*) FILTER (WHERE e.src = 'n' AND e.event_type = 'page_view') AS page_views,
				   count(*) FILTER (WHERE e.src = 'n' AND e.event_type = 'add_to_cart') AS add_to_carts,
				   count(*) FILTER (WHERE e.src = 'n' AND e.event_type = 'begin_checkout') AS checkouts,
				   count(*) FILTER (WHERE e.src = 'n' AND e.event_type = 'purchase') AS purchases,
				   sum(e.revenue) FILTER (WHERE e.src = 'n') AS revenue,
				   max(e.ts) FILTER (WHERE e.src = 'n') AS last_ts,
				   clickstream.funnel_agg(e.ts, %1$L::interval, %2$s) AS funnel_level,
				   -- (the new events only: the group's first row seeds the
				   -- state with the stored jsonb, which a funnel row lacks)
				   clickstream.funnel_breakdown_continue(e.category_funnel, e.session_end, e.ts,
						%1$L::interval, NULLIF(e.category, ''), %2$s)
					   FILTER (WHERE e.src = 'n') AS category_funnel,
				   clickstream.funnel_breakdown_continue(e.product_funnel, e.session_end, e.ts,
						%1$L::interval, NULLIF(e.product_id, ''), NULLIF(e.category, ''), %2$s)
					   FILTER (WHERE e.src = 'n') AS product_funnel
			FROM e
			GROUP BY e.user_id),
		l AS (
			SELECT DISTINCT ON (e.user_id) e.user_id, e.event_id, e.page_url
			FROM pg_temp.clickstream_append a
			JOIN pg_temp.clickstream_step_events e ON e.user_id = a.user_id AND e.ts > a.session_end
			ORDER BY e.user_id, e.ts DESC, e.event_id DESC)
		SELECT a.session_id, a.user_id, a.session_start, g.last_ts, a.session_date,
			   a.first_event_id, l.event_id, a.events + g.events::integer,
			   a.page_views + g.page_views::integer, a.add_to_carts + g.add_to_carts::integer,
			   a.checkouts + g.checkouts::integer, a.purchases + g.purchases::integer,
			   a.revenue + coalesce(g.revenue, 0), a.converted OR g.purchases > 0,
			   a.landing_page, l.page_url, a.utm_source, a.utm_medium, a.utm_campaign, a.device,
			   a.country, g.funnel_level, g.category_funnel, g.product_funnel
		FROM pg_temp.clickstream_append a
		JOIN g ON g.user_id = a.user_id
		JOIN l ON l.user_id = a.user_id
	$q$, win, conditions) USING steps;
END
$$ SET jit = off
-- (grouped after a sort, not in a hash table: the funnel states of a
-- session cost ~2 kB, so a hash of every extended session's states made
-- 470 MB and spilled at 220 000 sessions, where one group's state at a
-- time is freed as the next begins: 3.6 -> 2.8 s at 220 000 sessions)
SET enable_hashagg = off;

COMMENT ON FUNCTION clickstream.session_append_rows() IS
'Internal (refresh_gold()''s append path): the sessions of pg_temp.clickstream_append extended by their users'' new events in pg_temp.clickstream_step_events, as clickstream.session_rows() would compute them from all their events.';

-- The campaign an event carries, as sessionize() reads it with
-- split_on_campaign (an empty utm_source or utm_campaign is none), as one
-- comparable text; NULL when it carries none.
CREATE FUNCTION clickstream.campaign_text(utm_source text, utm_campaign text)
RETURNS text
-- (STABLE as jsonb_build_array is, so that it is inlined)
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
	SELECT CASE WHEN nullif(utm_source, '') IS NOT NULL OR nullif(utm_campaign, '') IS NOT NULL
		THEN pg_catalog.jsonb_build_array(nullif(utm_source, ''), nullif(utm_campaign, ''))::text COLLATE "C" END
$$;

COMMENT ON FUNCTION clickstream.campaign_text(text, text) IS
'Internal (clickstream.refresh_gold()): the campaign an event carries as session_split_on_campaign reads it (an empty utm_source or utm_campaign is none), as one text; NULL when it carries none.';

-- Whether an event at next_ts starts a new session after activity that
-- ended at prev_end: a gap over the timeout, or a midnight between them in
-- tz with the midnight rule (sessionize()'s rules, in SQL, for the probes
-- of refresh_gold(); inlined: exact argument types, no SET clause).
CREATE FUNCTION clickstream.session_gap(prev_end timestamptz, next_ts timestamptz,
	timeout interval, midnight boolean, tz text)
RETURNS boolean
LANGUAGE sql IMMUTABLE
AS $$
	SELECT next_ts - prev_end > timeout
		   OR (midnight AND (prev_end AT TIME ZONE tz)::date <> (next_ts AT TIME ZONE tz)::date)
$$;

COMMENT ON FUNCTION clickstream.session_gap(timestamptz, timestamptz, interval, boolean, text) IS
'Internal (clickstream.refresh_gold()): whether an event at next_ts starts a new session after activity that ended at prev_end (a gap over the timeout, or a midnight in tz with the midnight rule).';

-- Where a recomputation of a user's sessions from from_ts on stops: the
-- first session from there (up to upto_start, upto_id) that starts after a
-- gap over the timeout, or a midnight with that rule, that events up to
-- last_ts cannot close; nothing from it on can change.  (Inlined into
-- refresh_gold()'s per-user LATERAL probes, which a SET clause would
-- prevent: operators and functions with exact argument types, for which
-- pg_catalog, searched first, wins.)
CREATE FUNCTION clickstream.session_after_gap(uid text, from_ts timestamptz,
	last_ts timestamptz, upto_start timestamptz, upto_id text, timeout interval,
	midnight boolean, tz text)
RETURNS TABLE (session_start timestamptz, first_event_id text)
LANGUAGE sql STABLE
AS $$
	SELECT x.session_start, x.first_event_id
	FROM (
		SELECT s.session_start, s.first_event_id,
			   greatest(pg_catalog.lag(s.session_end) OVER w, last_ts) AS before_start
		FROM clickstream.sessions s
		WHERE s.user_id = uid AND s.session_start >= from_ts
			AND (s.session_start, s.first_event_id) <= (upto_start, upto_id)
		WINDOW w AS (ORDER BY s.session_start, s.first_event_id)
	) x
	WHERE x.session_start > last_ts
		AND clickstream.session_gap(x.before_start, x.session_start, timeout, midnight, tz)
	ORDER BY x.session_start, x.first_event_id
	LIMIT 1
$$;

COMMENT ON FUNCTION clickstream.session_after_gap(text, timestamptz, timestamptz, timestamptz, text, interval, boolean, text) IS
'Internal (clickstream.refresh_gold()): the first of a user''s sessions from from_ts on (up to upto_start, upto_id) that starts after a gap over the timeout (or a midnight, with that rule) that events up to last_ts cannot close: where a recomputation from from_ts stops.';

CREATE FUNCTION clickstream.refresh_gold(OUT users bigint, OUT sessions_removed bigint,
	OUT sessions_written bigint, OUT rebuilt boolean, OUT marts_time interval,
	OUT sessions_extended bigint, OUT events_reread bigint)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	gold record;
	hi bigint;
	rules jsonb;
	timeout interval := current_setting('clickstream.session_timeout')::interval;
	midnight boolean := current_setting('clickstream.session_split_at_midnight')::boolean;
	campaign boolean := current_setting('clickstream.session_split_on_campaign')::boolean;
	longest interval := current_setting('clickstream.session_max_duration')::interval;
	tz text := current_setting('clickstream.timezone');
	margin integer;
	one_day date;
	days date[];
	parts text[];
	part_ids regclass[];
	first_run bigint;
	first_run_known boolean := false;
	new_part regclass;
	uncounted boolean;
	attached text[] := '{}';
	marts_started timestamptz;
	added bigint;
BEGIN
	users := 0;
	sessions_removed := 0;
	sessions_written := 0;
	rebuilt := false;
	marts_time := '0';
	sessions_extended := 0;
	events_reread := 0;
	-- one writer of gold at a time (a refresh step holds this lock already;
	-- clickstream.refresh() explains it); the funnel stays as read until the
	-- step commits
	LOCK TABLE clickstream.refresh_history IN EXCLUSIVE MODE;
	LOCK TABLE clickstream.funnel_definition IN SHARE MODE;
	rules := clickstream.gold_rules();
	SELECT * INTO gold FROM clickstream.gold_state FOR UPDATE;
	parts := clickstream.silver_partitions();
	part_ids := clickstream.silver_partition_ids();
	-- A partition new since gold's last step holds only events of the runs
	-- gold has not applied yet (created by this step, or empty); one with
	-- older events was attached by hand (a day detached and attached again,
	-- or restored from an archive), and gold never counted them.  (Read
	-- once, when the partition is new: a scan that stops at the first
	-- such event.)
	IF gold.silver_partition_ids IS NOT NULL THEN
		FOR new_part IN
			SELECT p FROM unnest(part_ids) p WHERE p::oid <> ALL (gold.silver_partition_ids::oid[])
		LOOP
			-- (only when a partition is new: it reads every touched row of
			-- the step, 0.3 s for 450 000 events)
			IF NOT first_run_known THEN
				SELECT min(t.run_id) INTO first_run FROM clickstream.touched t
				WHERE t.touch_id > gold.touch_id;
				first_run_known := true;
			END IF;
			EXECUTE format('SELECT EXISTS (SELECT 1 FROM %s e WHERE $1 IS NULL OR e.run_id < $1)', new_part)
			INTO uncounted USING first_run;
			IF uncounted THEN
				attached := attached || (SELECT c.relname::text FROM pg_class c WHERE c.oid = new_part);
			END IF;
		END LOOP;
	END IF;
	-- (compared as oids: a day dropped and created again is another table)
	IF gold.session_rules IS DISTINCT FROM rules
	   OR NOT coalesce(gold.silver_partitions <@ parts, true)
	   OR NOT coalesce(gold.silver_partition_ids::oid[] <@ part_ids::oid[], true)
	   OR cardinality(attached) > 0 THEN
		IF gold.session_rules IS DISTINCT FROM rules AND gold.session_rules IS NOT NULL THEN
			RAISE NOTICE 'clickstream: the session rules or the funnel changed, rebuilding gold'
				USING DETAIL = format('from %s to %s', gold.session_rules, rules);
		ELSIF cardinality(attached) > 0 AND coalesce(gold.silver_partitions <@ parts, true)
			  AND coalesce(gold.silver_partition_ids::oid[] <@ part_ids::oid[], true) THEN
			RAISE NOTICE 'clickstream: a day partition of clickstream.events was attached with events gold has not counted, rebuilding gold'
				USING DETAIL = format('attached: %s', array_to_string(attached, ', '));
		ELSIF gold.session_rules IS NOT NULL THEN
			RAISE NOTICE 'clickstream: a day partition of clickstream.events is gone, rebuilding gold from the days that are left'
				USING DETAIL = format('gone: %s', (
					SELECT string_agg(x.p, ', ' ORDER BY x.p)
					FROM (SELECT p FROM unnest(gold.silver_partitions) p
						  WHERE p <> ALL (parts)
						  UNION ALL
						  SELECT c.relname || ' (dropped, then created again)'
						  FROM pg_catalog.pg_class c
						  WHERE c.oid = ANY (part_ids::oid[])
							AND c.relname = ANY (gold.silver_partitions)
							AND c.oid <> ALL (gold.silver_partition_ids::oid[])) x));
		END IF;
		SELECT count(*) INTO sessions_removed FROM clickstream.sessions;
		sessions_written := clickstream.rebuild_gold();
		rebuilt := true;
		RETURN;
	END IF;
	IF gold.silver_partitions IS DISTINCT FROM parts
	   OR gold.silver_partition_ids::oid[] IS DISTINCT FROM part_ids::oid[] THEN
		UPDATE clickstream.gold_state SET silver_partitions = parts, silver_partition_ids = part_ids;
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
	DELETE FROM pg_temp.clickstream_append;
	DELETE FROM pg_temp.clickstream_reread;

	-- Per user: recompute from the latest session that starts before the
	-- first new event, unless that one ended long enough before it (a gap
	-- over the timeout, or a midnight with that option: the new events start
	-- a session of their own whatever came before), in which case from that
	-- event; up to the first later session that starts after a gap (or a
	-- midnight) that the new events cannot close, or to the end.  Most users'
	-- new events come after their last session has started: that session (l)
	-- is then the one before them and none comes later, so one index probe
	-- per user finds all; the other two probes run only for the others.
	INSERT INTO pg_temp.clickstream_dirty
	SELECT t.user_id, f.from_ts, f.from_id,
		   coalesce(n.session_start, 'infinity'), coalesce(n.first_event_id, ''),
		   (f.from_ts AT TIME ZONE tz)::date - margin,
		   (greatest(coalesce(n.session_start, l.session_end), t.last_ts) AT TIME ZONE tz)::date + margin,
		   CASE WHEN NOT i.inside AND NOT c.fresh THEN l.tid END
	FROM (
		SELECT x.user_id, min(x.first_ts) AS first_ts, max(x.last_ts) AS last_ts
		FROM clickstream.touched x
		WHERE x.touch_id > gold.touch_id AND x.touch_id <= hi
		GROUP BY x.user_id
		-- (in key order, as every later probe per user: neighbouring index
		-- and heap pages instead of random ones)
		ORDER BY x.user_id
	) t
	LEFT JOIN LATERAL (
		SELECT s.session_start, s.session_end, s.first_event_id, s.ctid AS tid
		FROM clickstream.sessions s
		WHERE s.user_id = t.user_id
		ORDER BY s.session_start DESC, s.first_event_id DESC
		LIMIT 1
	) l ON true
	CROSS JOIN LATERAL (
		SELECT l.session_start IS NOT NULL AND l.session_start >= t.first_ts AS inside
	) i
	LEFT JOIN LATERAL (
		SELECT s.session_start, s.session_end, s.first_event_id
		FROM clickstream.sessions s
		WHERE i.inside AND s.user_id = t.user_id AND s.session_start < t.first_ts
		ORDER BY s.session_start DESC, s.first_event_id DESC
		LIMIT 1
	) q ON true
	CROSS JOIN LATERAL (
		SELECT CASE WHEN i.inside THEN q.session_start ELSE l.session_start END AS session_start,
			   CASE WHEN i.inside THEN q.session_end ELSE l.session_end END AS session_end,
			   CASE WHEN i.inside THEN q.first_event_id ELSE l.first_event_id END AS first_event_id
	) p
	CROSS JOIN LATERAL (
		SELECT p.session_start IS NULL
			   OR clickstream.session_gap(p.session_end, t.first_ts, timeout, midnight, tz) AS fresh
	) c
	CROSS JOIN LATERAL (
		SELECT CASE WHEN c.fresh THEN t.first_ts ELSE p.session_start END AS from_ts,
			   CASE WHEN c.fresh THEN '' ELSE p.first_event_id END AS from_id
	) f
	LEFT JOIN LATERAL (
		SELECT g.session_start, g.first_event_id
		FROM clickstream.session_after_gap(t.user_id, f.from_ts, t.last_ts, 'infinity', '',
										   timeout, midnight, tz) g
		WHERE l.session_start > t.last_ts
		-- (kept a subquery: its condition then gates the probe, which
		-- most users skip, instead of filtering what the probe returned)
		OFFSET 0
	) n ON true;
	GET DIAGNOSTICS users = ROW_COUNT;

	-- A user with late events as well as events after the start of the last
	-- session (l): when the recomputation the late ones need stops at or
	-- before l (the first session after them that starts after a gap they
	-- cannot close, n, is l or an earlier one), the range splits in two,
	-- [from, n) and the one l's own new events need, [l, end): the sessions
	-- between are left alone, and l can take the append path below instead
	-- of being re-read for an event hours before it.  (Only users whose new
	-- events span more than the timeout can split: found from the step's
	-- events, one hash aggregate, before any probe.)
	WITH w AS (
		SELECT e.user_id FROM pg_temp.clickstream_step_events e
		GROUP BY e.user_id
		HAVING max(e.ts) - min(e.ts) > timeout),
	c AS MATERIALIZED (
		SELECT d.user_id, d.from_ts, l.session_start AS l_start, l.session_end AS l_end,
			   l.first_event_id AS l_id, l.tid AS l_tid
		FROM w
		JOIN pg_temp.clickstream_dirty d ON d.user_id = w.user_id
		CROSS JOIN LATERAL (
			SELECT s.session_start, s.session_end, s.first_event_id, s.ctid AS tid
			FROM clickstream.sessions s
			WHERE s.user_id = d.user_id
			ORDER BY s.session_start DESC, s.first_event_id DESC
			LIMIT 1) l
		WHERE d.to_ts = 'infinity'
			AND (l.session_start, l.first_event_id) > (d.from_ts, d.from_id)),
	-- (c's columns carried through the grouping: joined back to c, the
	-- one-row estimates of both made that a nested loop over all pairs)
	e AS MATERIALIZED (
		SELECT c.user_id, c.from_ts, c.l_start, c.l_end, c.l_id, c.l_tid,
			   max(e.ts) FILTER (WHERE e.ts <= c.l_start) AS early_last,
			   min(e.ts) FILTER (WHERE e.ts > c.l_start) AS tail_first, max(e.ts) AS last_ts
		FROM c JOIN pg_temp.clickstream_step_events e ON e.user_id = c.user_id
		GROUP BY c.user_id, c.from_ts, c.l_start, c.l_end, c.l_id, c.l_tid),
	n AS (
		SELECT e.*, x.session_start AS n_start, x.first_event_id AS n_id
		FROM e
		CROSS JOIN LATERAL clickstream.session_after_gap(e.user_id, e.from_ts, e.early_last,
														 e.l_start, e.l_id, timeout, midnight, tz) x
		WHERE e.early_last IS NOT NULL AND e.tail_first IS NOT NULL),
	split AS (
		UPDATE pg_temp.clickstream_dirty d
		SET to_ts = n.n_start, to_id = n.n_id,
			hi_date = (greatest(n.n_start, n.early_last) AT TIME ZONE tz)::date + margin,
			last_tid = NULL
		FROM n
		WHERE d.user_id = n.user_id
		RETURNING n.*)
	INSERT INTO pg_temp.clickstream_dirty
	SELECT s.user_id, f.from_ts, f.from_id, 'infinity', '', (f.from_ts AT TIME ZONE tz)::date - margin,
		   (greatest(s.l_end, s.last_ts) AT TIME ZONE tz)::date + margin,
		   CASE WHEN NOT c.fresh THEN s.l_tid END
	FROM split s
	CROSS JOIN LATERAL (
		SELECT clickstream.session_gap(s.l_end, s.tail_first, timeout, midnight, tz) AS fresh
	) c
	CROSS JOIN LATERAL (
		SELECT CASE WHEN c.fresh THEN s.tail_first ELSE s.l_start END AS from_ts,
			   CASE WHEN c.fresh THEN '' ELSE s.l_id END AS from_id
	) f;
	ANALYZE pg_temp.clickstream_dirty;

	-- The append path: a user whose new events all come after the end of
	-- the user's last session and continue it (the first within the timeout
	-- of its end, all within one timeout of each other and within the
	-- longest session from its start; with the midnight rule, all on the
	-- local day the session started; with the campaign rule, none carrying
	-- a campaign other than the session's first event's) has that session
	-- extended from its stored row (session_append_rows()) instead of
	-- re-reading its events: a long session that grows in every step no
	-- longer costs its length each time.
	-- (The candidates are the ranges that start with the user's last
	-- session, fetched where the probe above found it, last_tid: neither a
	-- join with all of sessions nor a probe for a later session.)
	INSERT INTO pg_temp.clickstream_append
	SELECT s.*, s.ctid
	FROM (SELECT d.user_id, d.last_tid, min(e.ts) AS first_ts, max(e.ts) AS last_ts,
				 -- with the campaign rule, the least and greatest campaign the
				 -- new events carry, one text each, so that one campaign is
				 -- min = max (min and max keep the hash aggregate a DISTINCT
				 -- count would turn into a sort)
				 min(c.campaign) AS campaign_min, max(c.campaign) AS campaign_max
		  FROM pg_temp.clickstream_step_events e
		  CROSS JOIN LATERAL (
			  SELECT CASE WHEN campaign THEN clickstream.campaign_text(e.utm_source, e.utm_campaign) END
				  AS campaign) c
		  JOIN pg_temp.clickstream_dirty d ON d.user_id = e.user_id AND d.to_ts = 'infinity'
		  -- (the events of the user's last range: not those of a range
		  -- split off before it)
		  WHERE e.ts >= d.from_ts AND d.last_tid IS NOT NULL
		  GROUP BY d.user_id, d.last_tid) t
	JOIN clickstream.sessions s ON s.ctid = t.last_tid
	WHERE t.first_ts > s.session_end
		AND t.first_ts - s.session_end <= timeout
		-- (new events within one timeout of each other have no gap
		-- over it, and are rarely further apart in a step)
		AND t.last_ts - t.first_ts <= timeout
		AND t.last_ts - s.session_start <= longest
		AND (NOT midnight
			 OR (t.last_ts AT TIME ZONE tz)::date = (s.session_start AT TIME ZONE tz)::date)
		AND (NOT campaign OR t.campaign_min IS NULL
			 OR (t.campaign_min = t.campaign_max
				 AND t.campaign_min = clickstream.campaign_text(s.utm_source, s.utm_campaign)));
	GET DIAGNOSTICS sessions_extended = ROW_COUNT;
	ANALYZE pg_temp.clickstream_append (user_id);

	-- The ranges left to re-read: every dirty one but those of the sessions
	-- extended above.  (A table of their own, analyzed: read through an
	-- anti-join of the two, the planner expected three in four ranges to
	-- stay, where often under 1 % do, and scanned the whole day's partition
	-- of silver for them, 1.5 s a step at 3.4 M events a day and growing
	-- with the day.)
	INSERT INTO pg_temp.clickstream_reread
	SELECT d.*
	FROM pg_temp.clickstream_dirty d
	WHERE NOT EXISTS (SELECT 1 FROM pg_temp.clickstream_append a
					  WHERE a.user_id = d.user_id AND a.session_start = d.from_ts
						  AND a.first_event_id = d.from_id);
	ANALYZE pg_temp.clickstream_reread;

	-- Their events, one daily partition at a time, by index probes per user
	-- (LATERAL: never a scan of a whole day for a few users).  A range of
	-- more than a month (a late event from a producer's clock at 1970 or
	-- year 1, an unset date, for a user active today) spans decades of days
	-- that hold nothing: then only the days that have a partition (one
	-- statement per day took 90 s for a year-1 event over 200 partitions;
	-- reading the partitions' bounds costs 40 ms with 1 000 of them, so not
	-- for the short ranges of every step).
	IF EXISTS (SELECT 1 FROM pg_temp.clickstream_reread d WHERE d.hi_date - d.lo_date > 31) THEN
		days := ARRAY(
			WITH r AS (
				SELECT DISTINCT d.lo_date, d.hi_date FROM pg_temp.clickstream_reread d),
			p AS MATERIALIZED (
				SELECT p.lo, p.hi FROM clickstream.silver_partition_ranges() p)
			SELECT DISTINCT g::date
			FROM r
			JOIN p ON p.lo <= r.hi_date AND p.hi > r.lo_date
			CROSS JOIN LATERAL generate_series(greatest(r.lo_date, p.lo), least(r.hi_date, p.hi - 1),
											   '1 day') g
			ORDER BY 1);
	ELSE
		days := ARRAY(
			SELECT DISTINCT g::date
			FROM pg_temp.clickstream_reread d, generate_series(d.lo_date, d.hi_date, '1 day') g
			ORDER BY 1);
	END IF;
	FOREACH one_day IN ARRAY days
	LOOP
		INSERT INTO pg_temp.clickstream_affected
		SELECT e.*
		FROM pg_temp.clickstream_reread d
		CROSS JOIN LATERAL (
			SELECT e.event_id, e.event_type, e.user_id, e.ts, e.product_id, e.category,
				   e.page_url, e.utm_source, e.utm_medium, e.utm_campaign, e.device,
				   e.country, e.revenue
			FROM clickstream.events e
			WHERE e.event_date = one_day
				AND e.user_id = d.user_id
				AND e.ts >= d.from_ts AND e.ts <= d.to_ts
				AND (e.ts, e.event_id) >= (d.from_ts, d.from_id)
				AND (e.ts, e.event_id) < (d.to_ts, d.to_id)
			OFFSET 0	-- a fence: see marts_apply()
		) e
		WHERE one_day BETWEEN d.lo_date AND d.hi_date;
		GET DIAGNOSTICS added = ROW_COUNT;
		events_reread := events_reread + added;
	END LOOP;
	-- (the columns session_rows() joins on: the others, jsonb among them,
	-- only made ANALYZE slower)
	ANALYZE pg_temp.clickstream_affected (event_id, user_id, ts);

	-- the sessions replaced: those of the ranges re-read, found by index
	-- probes per user, and those extended, as clickstream_append holds
	-- them; what they and their replacements count in the funnels goes to
	-- the delta
	DELETE FROM pg_temp.clickstream_session_delta;
	WITH gone AS (
	DELETE FROM clickstream.sessions s
	WHERE s.ctid = ANY (ARRAY(
		SELECT x.ctid
		FROM pg_temp.clickstream_reread d
		CROSS JOIN LATERAL (
			SELECT s2.ctid
			FROM clickstream.sessions s2
			WHERE s2.user_id = d.user_id
				AND s2.session_start >= d.from_ts AND s2.session_start <= d.to_ts
				AND (s2.session_start, s2.first_event_id) >= (d.from_ts, d.from_id)
				AND (s2.session_start, s2.first_event_id) < (d.to_ts, d.to_id)
			-- (a fence: see marts_apply(); at 10xH the planner merge-joined
			-- all 1.5 M sessions of the index for 8 500 ranges)
			OFFSET 0
		) x))
	RETURNING s.*)
	INSERT INTO pg_temp.clickstream_session_delta
	SELECT -1, g.* FROM gone g;
	GET DIAGNOSTICS sessions_removed = ROW_COUNT;
	INSERT INTO pg_temp.clickstream_session_delta
	SELECT -1, a.session_id, a.user_id, a.session_start, a.session_end, a.duration,
		   a.session_date, a.first_event_id, a.last_event_id, a.events, a.page_views,
		   a.add_to_carts, a.checkouts, a.purchases, a.revenue, a.converted, a.landing_page,
		   a.exit_page, a.utm_source, a.utm_medium, a.utm_campaign, a.device, a.country,
		   a.funnel_level, a.category_funnel, a.product_funnel
	FROM pg_temp.clickstream_append a;
	sessions_removed := sessions_removed + sessions_extended;

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

	-- The sessions extended are updated in place: an extended session keeps
	-- its id, user, start, date and first event, every column an index of
	-- sessions holds, so the new version is a heap-only tuple (no index
	-- entry) when its page has room, which the table's fillfactor keeps:
	-- a deleted and inserted row cost three index insertions (84 % of the
	-- updates were heap-only on six minutes of the end-to-end traffic, and
	-- the two statements took 46 s where the delete and insert took 55).
	WITH extended AS (
	UPDATE clickstream.sessions s
	SET session_end = n.session_end, last_event_id = n.last_event_id, events = n.events,
		page_views = n.page_views, add_to_carts = n.add_to_carts, checkouts = n.checkouts,
		purchases = n.purchases, revenue = n.revenue, converted = n.converted,
		exit_page = n.exit_page, funnel_level = n.funnel_level,
		category_funnel = n.category_funnel, product_funnel = n.product_funnel
	FROM clickstream.session_append_rows() n
	JOIN pg_temp.clickstream_append a ON a.session_id = n.session_id
	WHERE s.ctid = a.tid
	RETURNING s.*)
	INSERT INTO pg_temp.clickstream_session_delta
	SELECT 1, x.* FROM extended x;
	GET DIAGNOSTICS added = ROW_COUNT;
	-- (every session extended was read where it is stored in this
	-- transaction, under the refresh lock: one not found there, moved by a
	-- writer other than the refresh, would be lost, so it is an error)
	IF added <> sessions_extended THEN
		RAISE EXCEPTION 'clickstream.refresh_gold: % of the % sessions to extend are not where they were read',
			sessions_extended - added, sessions_extended
			USING HINT = 'Only the refresh may write clickstream.sessions; the step is rolled back and the next run does it again.';
	END IF;
	sessions_written := sessions_written + added;
	PERFORM clickstream.apply_funnel_delta();

	-- the marts: what the step's events add, what the replaced sessions
	-- count, the orders, then the daily, hourly, active-user and retention
	-- tables
	marts_started := clock_timestamp();
	-- (the ranges re-read only: an extended session keeps its session_id,
	-- and so do the orders it held; the step's own orders are looked up
	-- by marts_apply() in any case)
	PERFORM clickstream.marts_apply('SELECT d.user_id, d.from_ts, d.to_ts FROM pg_temp.clickstream_reread d');
	marts_time := clock_timestamp() - marts_started;

	UPDATE clickstream.gold_state g
	SET touch_id = hi, updated_at = now(),
		newest_event_at = greatest(g.newest_event_at, (SELECT max(e.ts) FROM pg_temp.clickstream_step_events e));
END
$$ SET work_mem = '256MB' SET jit = off;

COMMENT ON FUNCTION clickstream.refresh_gold() IS
'Internal (run by clickstream.refresh() in every silver step''s transaction, and by replay_dead_letters): bring gold up to date with the step: clickstream.sessions from the touched rows above the gold watermark (recomputing only the affected sessions of the affected users), the funnel tables from the sessions replaced, and every mart from those and from the step''s new events (pg_temp.clickstream_step_events); rebuilds all of gold when the session rules or the funnel changed, a day partition of silver is gone, or one was attached holding events of runs gold has applied (a day detached and attached again, or restored from an archive), and high_interest_low_conversion when its thresholds changed.';

REVOKE ALL ON FUNCTION clickstream.gold_scratch() FROM PUBLIC;
REVOKE ALL ON FUNCTION clickstream.session_append_rows() FROM PUBLIC;
REVOKE ALL ON FUNCTION clickstream.session_gap(timestamptz, timestamptz, interval, boolean, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION clickstream.campaign_text(text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION clickstream.session_after_gap(text, timestamptz, timestamptz, timestamptz, text, interval, boolean, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION clickstream.silver_partition_ranges() FROM PUBLIC;
REVOKE ALL ON FUNCTION clickstream.refresh_gold() FROM PUBLIC;
REVOKE ALL ON FUNCTION clickstream.rebuild_gold() FROM PUBLIC;
REVOKE ALL ON FUNCTION clickstream.rebuild_sessions() FROM PUBLIC;

-- Verification --------------------------------------------------------------------

-- Whether gold follows the settings of now: a reload that changes them
-- takes effect at the next refresh, which rebuilds gold.
CREATE FUNCTION clickstream.gold_settings_current()
RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT CASE WHEN g.session_rules IS NULL
		-- never built (a new install, or updated from 0.1.0): the first
		-- refresh builds gold, pending only if silver has events
		THEN NOT EXISTS (SELECT FROM clickstream.events)
		ELSE g.session_rules = clickstream.gold_rules()
			AND g.interest_rules IS NOT DISTINCT FROM clickstream.interest_rules() END
	FROM clickstream.gold_state g
$$;

COMMENT ON FUNCTION clickstream.gold_settings_current() IS
'Whether gold was built under the current settings: clickstream.gold_rules() (the time zone, the session settings, the funnel steps) and clickstream.interest_rules(). False once one of them changed (or, with events in silver, before gold was first built), until the next refresh rebuilds gold under them; until then gold differs from a recomputation under the new settings.';

-- Every gold table against its full recomputation: sessions against
-- session_rows('clickstream.events'), the funnel tables and the marts
-- against the plain-SQL recomputations of 60_funnel_gold.sql and
-- 70_marts.sql.  Rows are compared whole (every column); since restricts
-- the tables keyed by day to days >= since.  Hash joins only: every join
-- here is of whole recomputations, and nothing analyzes the partitioned
-- parent of silver (autovacuum analyzes its partitions only), so the
-- planner sees 200 users where there are 50 000 and chose nested loops
-- over them: recompute_users() alone took 280 s of verify_gold()'s 332 s
-- on the demo's 2.35M events, 18 s with hash joins.
CREATE FUNCTION clickstream.verify_gold(since date DEFAULT NULL)
RETURNS TABLE (mart text, gold_rows bigint, recomputed_rows bigint, missing bigint,
	unexpected bigint, ok boolean)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
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
	IF NOT clickstream.gold_settings_current() THEN
		RAISE NOTICE 'clickstream: gold was built under other settings than the current ones, and the next refresh rebuilds it'
			USING HINT = 'Until then gold may differ from this recomputation, which follows the current settings: let a refresh run (or SELECT clickstream.rebuild_gold()) first.';
	END IF;
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
			('pages_daily', 'day', NULL), ('user_days', 'day', NULL)
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
$$ SET work_mem = '256MB' SET jit = off SET enable_mergejoin = off SET enable_nestloop = off;

COMMENT ON FUNCTION clickstream.verify_gold(date) IS
'Compare every gold table with its full recomputation from silver, row by row and column by column: clickstream.sessions with session_rows(''clickstream.events''), the funnel tables, and every mart and its sets with their plain-SQL recomputations (recompute_*). One row per table: rows in gold, rows recomputed, rows missing from gold, rows in gold that should not be there, ok. since (optional) restricts the tables keyed by day to the days from since on; the lifetime tables (users, products, orders) are always compared whole. Costs a full recomputation: run it from check_quality() or by hand, not every minute.';

INSERT INTO clickstream.quality_checks (name, layer, severity, description, query, builtin) VALUES
('gold_matches_recomputation', 'gold', 'error',
 'Every gold table (sessions, funnels, marts) equals its full recomputation from silver (clickstream.verify_gold()): the number of rows missing or unexpected. Skipped (0) while gold_settings_applied fails: gold built under settings changed since differs from a recomputation under the new ones until the next refresh rebuilds it.',
 $q$SELECT CASE WHEN clickstream.gold_settings_current()
    THEN (SELECT coalesce(sum(missing + unexpected), 0) FROM clickstream.verify_gold($1::date))
    ELSE 0 END$q$, true),
('gold_settings_applied', 'gold', 'warning',
 'Gold was built under the current settings (clickstream.timezone, the session settings, the funnel steps, the interest thresholds): 1 when one of them changed since (or, with events in silver, before gold was first built), until the next refresh rebuilds gold under them.',
 $q$SELECT CASE WHEN clickstream.gold_settings_current() THEN 0 ELSE 1 END$q$, true);
