-- Sessions: clickstream.sessionize() edge cases and errors, a randomized
-- comparison with a plain-SQL reference, and clickstream.sessions kept equal
-- to a full recomputation by refresh (merges, extensions, random batches).
CREATE EXTENSION clickstream;
SET clickstream.refresh_batch_size = 1000;
SET timezone = 'UTC';

CREATE TEMP TABLE ev (user_id text, ts timestamptz, event_id text,
	utm_source text, utm_campaign text);
CREATE FUNCTION show(q text, opts text DEFAULT '') RETURNS TABLE (
	user_id text, event_id text, ts text, session_index integer, session_start text,
	session_end text, event_index bigint, session_events bigint)
LANGUAGE plpgsql AS $$
BEGIN
	RETURN QUERY EXECUTE format(
		'SELECT z.user_id, z.event_id, to_char(z.ts, ''DD HH24:MI:SS''), z.session_index,
				to_char(z.session_start, ''DD HH24:MI:SS''), to_char(z.session_end, ''DD HH24:MI:SS''),
				z.event_index, z.session_events
		 FROM clickstream.sessionize(%L%s) z
		 ORDER BY z.user_id, z.ts, z.event_id', q, opts);
END $$;

-- a single event; a gap exactly equal to the timeout continues the session,
-- one microsecond more starts a new one
INSERT INTO ev (user_id, ts, event_id) VALUES
 ('single', '2026-01-01 10:00Z', 's1'),
 ('gap', '2026-01-01 10:00Z', 'g1'),
 ('gap', '2026-01-01 10:30Z', 'g2'),
 ('gap', '2026-01-01 11:00:00.000001Z', 'g3');
SELECT * FROM show('SELECT * FROM ev');

-- equal timestamps: ordered by event_id (byte order), one session
TRUNCATE ev;
INSERT INTO ev (user_id, ts, event_id) VALUES
 ('tie', '2026-01-01 10:00Z', 'b'),
 ('tie', '2026-01-01 10:00Z', 'a'),
 ('tie', '2026-01-01 10:00Z', 'B'),
 ('tie', '2026-01-01 10:00Z', NULL);
SELECT * FROM show('SELECT * FROM ev');

-- longer than the maximum: every 20 minutes for 3 hours, max 1 hour
TRUNCATE ev;
INSERT INTO ev (user_id, ts, event_id)
SELECT 'long', timestamptz '2026-01-01 10:00Z' + g * interval '20 minutes', 'l' || g
FROM generate_series(0, 9) g;
SELECT * FROM show('SELECT * FROM ev', ', max_duration => ''1 hour''');

-- midnight (in clickstream.timezone, UTC here)
TRUNCATE ev;
INSERT INTO ev (user_id, ts, event_id) VALUES
 ('night', '2026-01-01 23:50Z', 'n1'),
 ('night', '2026-01-02 00:05Z', 'n2'),
 ('night', '2026-01-02 00:20Z', 'n3');
SELECT * FROM show('SELECT * FROM ev');
SELECT * FROM show('SELECT * FROM ev', ', split_at_midnight => true');

-- campaign: an event with another (utm_source, utm_campaign) than the
-- session's first event starts a new session; events without any continue
-- (an empty string is none: c7 continues, and c8 is c6's campaign)
TRUNCATE ev;
INSERT INTO ev VALUES
 ('camp', '2026-01-01 10:00Z', 'c1', NULL, NULL),
 ('camp', '2026-01-01 10:01Z', 'c2', 'google', 'spring'),
 ('camp', '2026-01-01 10:02Z', 'c3', NULL, NULL),
 ('camp', '2026-01-01 10:03Z', 'c4', 'google', 'spring'),
 ('camp', '2026-01-01 10:04Z', 'c5', 'google', NULL),
 ('camp', '2026-01-01 10:05Z', 'c6', NULL, 'spring'),
 ('camp', '2026-01-01 10:06Z', 'c7', '', ''),
 ('camp', '2026-01-01 10:07Z', 'c8', '', 'spring');
SELECT * FROM show('SELECT * FROM ev');
SELECT * FROM show('SELECT * FROM ev', ', split_on_campaign => true');

-- NULLs: a NULL user or ts belongs to no session (returned with NULL session
-- columns); a NULL event_id sorts after the others at the same ts
TRUNCATE ev;
INSERT INTO ev (user_id, ts, event_id) VALUES
 (NULL, '2026-01-01 10:00Z', 'x1'),
 ('nul', NULL, 'x2'),
 ('nul', '2026-01-01 10:00Z', NULL),
 ('nul', '2026-01-01 10:00Z', 'x3');
SELECT * FROM show('SELECT * FROM ev');

-- users with interleaved events, any column types, extra columns ignored
TRUNCATE ev;
INSERT INTO ev (user_id, ts, event_id) VALUES
 ('1', '2026-01-01 10:00Z', '7'), ('2', '2026-01-01 10:01Z', '8'),
 ('1', '2026-01-01 10:50Z', '9'), ('2', '2026-01-01 10:02Z', '10'),
 ('1', '2026-01-01 10:51Z', '11'), ('2', '2026-01-01 12:00Z', '12');
SELECT * FROM show('SELECT user_id::int AS user_id, ts, event_id::bigint AS event_id, 42 AS other FROM ev');

-- session_id: PostgreSQL's 64-bit hash (seeds 0 and 1) of
-- octet_length(user_id) ':' user_id ':' start (microseconds since 2000) ':'
-- first event_id, as a version-8 UUID
WITH z AS (SELECT DISTINCT user_id, session_id, session_start, first_value(event_id) OVER (
		PARTITION BY session_id ORDER BY event_index) AS first_id
	FROM clickstream.sessionize('SELECT * FROM ev')),
k AS (SELECT z.*, octet_length(user_id) || ':' || user_id || ':' ||
		(extract(epoch FROM session_start - timestamptz '2000-01-01 00:00Z') * 1000000)::bigint ||
		':' || coalesce(first_id, '') AS key FROM z),
h AS (SELECT k.*, lpad(to_hex(hashtextextended(key, 0)), 16, '0') ||
		lpad(to_hex(hashtextextended(key, 1)), 16, '0') AS x FROM k)
SELECT count(*) AS sessions,
	   count(*) FILTER (WHERE session_id = (substr(x, 1, 12) || '8' || substr(x, 14, 3) ||
			to_hex((('x' || substr(x, 17, 1))::bit(4)::int & 3) | 8) || substr(x, 18))::uuid) AS ids_as_documented
FROM h;

-- errors
SELECT * FROM clickstream.sessionize('SELECT * FROM ev', timeout => '0');
SELECT * FROM clickstream.sessionize('SELECT * FROM ev', timeout => '-1 minute');
SELECT * FROM clickstream.sessionize('SELECT * FROM ev', max_duration => NULL);
SELECT * FROM clickstream.sessionize('SELECT * FROM ev', timeout => '1 month');
SELECT * FROM clickstream.sessionize('SELECT * FROM ev', split_at_midnight => NULL);
SELECT * FROM clickstream.sessionize(NULL);
SELECT * FROM clickstream.sessionize('SELECT user_id, event_id FROM ev');
SELECT * FROM clickstream.sessionize('SELECT user_id, ts::timestamp AS ts FROM ev');
SELECT * FROM clickstream.sessionize('SELECT user_id, ts, ts AS user_id FROM ev');
SELECT * FROM clickstream.sessionize('SELECT user_id, ts FROM ev', split_on_campaign => true);
SELECT * FROM clickstream.sessionize('INSERT INTO ev DEFAULT VALUES');
SELECT * FROM clickstream.sessionize('SELECT * FROM no_such_table');

-- Randomized comparison with a plain-SQL reference of the same rules (a
-- recursive walk of each user's events), on 3000 random users, with ties,
-- gaps around the timeout, midnights and campaigns; in memory and spilled
SELECT setseed(0.25);
CREATE TEMP TABLE rnd AS
SELECT 'u' || (1 + floor(random() * 3000))::int AS user_id,
	   date_trunc('second', timestamptz '2026-02-01 00:00Z'
			+ (random() * random() * 4) * interval '1 day') AS ts,
	   'e' || g AS event_id,
	   CASE WHEN random() < 0.1 THEN (ARRAY['google', 'mail'])[1 + floor(random() * 2)::int] END AS utm_source,
	   CASE WHEN random() < 0.1 THEN (ARRAY['spring', 'fall'])[1 + floor(random() * 2)::int] END AS utm_campaign
FROM generate_series(1, 60000) g;
CREATE FUNCTION ref_sessionize(timeout interval, max_duration interval, midnight boolean, campaign boolean)
RETURNS TABLE (event_id text, session_index integer, session_start timestamptz, event_index bigint)
LANGUAGE sql AS $$
	WITH RECURSIVE o AS MATERIALIZED (
		SELECT r.*, row_number() OVER (PARTITION BY r.user_id ORDER BY r.ts, r.event_id COLLATE "C") AS n
		FROM rnd r
	), w AS (
		SELECT o.user_id, o.n, o.ts, o.event_id, o.ts AS s_start, o.utm_source AS s_src,
			   o.utm_campaign AS s_camp, 1 AS s_index, 1::bigint AS e_index
		FROM o WHERE o.n = 1
		UNION ALL
		SELECT o.user_id, o.n, o.ts, o.event_id,
			   CASE WHEN b.brk THEN o.ts ELSE w.s_start END,
			   CASE WHEN b.brk THEN o.utm_source ELSE w.s_src END,
			   CASE WHEN b.brk THEN o.utm_campaign ELSE w.s_camp END,
			   w.s_index + b.brk::int,
			   CASE WHEN b.brk THEN 1 ELSE w.e_index + 1 END
		FROM w
		JOIN o ON o.user_id = w.user_id AND o.n = w.n + 1
		CROSS JOIN LATERAL (SELECT
			o.ts - w.ts > timeout
			OR o.ts - w.s_start > max_duration
			OR (midnight AND (o.ts AT TIME ZONE 'UTC')::date <> (w.ts AT TIME ZONE 'UTC')::date)
			OR (campaign AND (o.utm_source IS NOT NULL OR o.utm_campaign IS NOT NULL)
				AND (o.utm_source IS DISTINCT FROM w.s_src OR o.utm_campaign IS DISTINCT FROM w.s_camp))
			AS brk) b
	)
	SELECT w.event_id, w.s_index, w.s_start, w.e_index FROM w
$$;
CREATE FUNCTION compare(timeout interval, max_duration interval, midnight boolean, campaign boolean)
RETURNS TABLE (events bigint, sessions bigint, mismatches bigint)
LANGUAGE sql AS $$
	SELECT count(*), count(DISTINCT z.session_id),
		   count(*) FILTER (WHERE r.event_id IS NULL OR z.event_id IS NULL
				OR (r.session_index, r.session_start, r.event_index)
					IS DISTINCT FROM (z.session_index, z.session_start, z.event_index))
	FROM clickstream.sessionize('SELECT * FROM rnd', timeout, max_duration, midnight, campaign) z
	FULL JOIN ref_sessionize(timeout, max_duration, midnight, campaign) r ON r.event_id = z.event_id
$$;
SELECT * FROM compare('30 minutes', '1 day', false, false);
SELECT * FROM compare('10 minutes', '2 hours', true, false);
SELECT * FROM compare('1 hour', '3 hours', true, true);
SET work_mem = '64kB';
SELECT * FROM compare('30 minutes', '1 day', false, false);
SELECT * FROM compare('1 hour', '3 hours', true, true);
RESET work_mem;

-- one user with many events (in memory whatever work_mem) among many users
SET work_mem = '64kB';
SELECT count(*) AS events, count(DISTINCT session_id) AS sessions, max(session_events) AS longest
FROM clickstream.sessionize($$
	SELECT CASE WHEN g % 2 = 0 THEN 'bot' ELSE 'u' || g END AS user_id,
		   timestamptz '2026-01-01 00:00Z' + g * interval '1 second' AS ts, g::text AS event_id
	FROM generate_series(1, 300000) g$$);
RESET work_mem;

-- Gold: clickstream.sessions, maintained by refresh ----------------------------

-- thresholds of high_interest_low_conversion small enough for test data
ALTER SYSTEM SET clickstream.interest_min_views = 3;
ALTER SYSTEM SET clickstream.interest_min_carts = 2;
ALTER SYSTEM SET clickstream.interest_max_conversion = 0.25;
SELECT pg_reload_conf();
SELECT pg_sleep(0.5);

SET regress.topic = 'sess';
\getenv abs_srcdir PG_ABS_SRCDIR
\i :abs_srcdir/sql/include/feed_events.sql
\i :abs_srcdir/sql/include/session_events.sql
-- the funnel tables minus the same sums over the full recomputation of
-- sessions, both ways (high_interest_low_conversion too)
CREATE FUNCTION funnels_diff() RETURNS bigint
LANGUAGE sql AS $$
	WITH s AS MATERIALIZED (SELECT * FROM clickstream.session_rows('clickstream.events')),
	counted AS (
		SELECT 'daily' AS kind, session_date AS day, '' AS category, '' AS product_id,
			   funnel_level AS level FROM s
		UNION ALL
		SELECT 'category', session_date, c.key, '', c.value::integer
		FROM s, jsonb_each_text(s.category_funnel) c
		UNION ALL
		SELECT 'product', session_date, coalesce(p.value ->> 1, ''), p.key, (p.value ->> 0)::integer
		FROM s, jsonb_each(s.product_funnel) p),
	sums AS (
		SELECT kind, day, category, product_id, f.step, f.name, count(*) AS sessions,
			   count(*) FILTER (WHERE level >= f.step) AS reached
		FROM counted, clickstream.funnel_definition f
		GROUP BY kind, day, category, product_id, f.step, f.name),
	f AS (
		SELECT kind, day, category, product_id, step, name, sessions, reached,
			   round(reached::numeric / nullif(coalesce(lag(reached) OVER w, sessions), 0), 4),
			   round(reached::numeric / nullif(first_value(reached) OVER w, 0), 4),
			   round(reached::numeric / nullif(sessions, 0), 4)
		FROM sums WINDOW w AS (PARTITION BY kind, day, category, product_id ORDER BY step)),
	g AS (
		SELECT 'daily', day, '', '', step, step_name, sessions, reached, conversion_from_previous,
			   conversion_from_first, conversion_overall FROM clickstream.daily_funnel
		UNION ALL
		SELECT 'category', day, category, '', step, step_name, sessions, reached,
			   conversion_from_previous, conversion_from_first, conversion_overall
		FROM clickstream.funnel_by_category
		UNION ALL
		SELECT 'product', day, category, product_id, step, step_name, sessions, reached,
			   conversion_from_previous, conversion_from_first, conversion_overall
		FROM clickstream.product_funnel),
	fi AS (
		SELECT day, product_id, category, views, carts, purchases,
			   round(carts::numeric / views, 4), round(purchases::numeric / views, 4)
		FROM (SELECT day, product_id, category,
					 max(reached) FILTER (WHERE step = 1) AS views,
					 max(reached) FILTER (WHERE step = 2) AS carts,
					 max(reached) FILTER (WHERE step = (SELECT max(step) FROM clickstream.funnel_definition)) AS purchases
			  FROM f WHERE kind = 'product' GROUP BY day, product_id, category) x
		WHERE views > 0
		  AND (views >= current_setting('clickstream.interest_min_views')::bigint
			   OR carts >= current_setting('clickstream.interest_min_carts')::bigint)
		  AND purchases <= current_setting('clickstream.interest_max_conversion')::numeric * views),
	gi AS (SELECT * FROM clickstream.high_interest_low_conversion)
	SELECT (SELECT count(*) FROM (TABLE g EXCEPT ALL TABLE f) a) +
		   (SELECT count(*) FROM (TABLE f EXCEPT ALL TABLE g) b) +
		   (SELECT count(*) FROM (TABLE gi EXCEPT ALL TABLE fi) c) +
		   (SELECT count(*) FROM (TABLE fi EXCEPT ALL TABLE gi) d)
$$ SET jit = off;
CREATE FUNCTION user_sessions(usr text) RETURNS TABLE (session_start text, session_end text,
	events integer, first_event_id text, last_event_id text, landing_page text, exit_page text,
	purchases integer, revenue numeric, converted boolean)
LANGUAGE sql AS $$
	SELECT to_char(session_start, 'HH24:MI'), to_char(session_end, 'HH24:MI'), events,
		   first_event_id, last_event_id, landing_page, exit_page, purchases, revenue, converted
	FROM clickstream.sessions WHERE user_id = usr ORDER BY session_start
$$;

SELECT sessions_diff() AS diff, (SELECT count(*) FROM clickstream.sessions) AS sessions;

-- two sessions, then a late event that bridges them: one session
SELECT feed_events(0, ARRAY[sev('m1', 'mia', '2026-03-01T10:00:00Z'), sev('m2', 'mia', '2026-03-01T10:20:00Z'),
	sev('m3', 'mia', '2026-03-01T11:10:00Z'), sev('m4', 'mia', '2026-03-01T11:15:00Z', 'purchase')]);
CALL clickstream.refresh();
SELECT * FROM user_sessions('mia');
SELECT feed_events(0, ARRAY[sev('m5', 'mia', '2026-03-01T10:45:00Z')]);
CALL clickstream.refresh();
SELECT * FROM user_sessions('mia');
SELECT event_id, session_start FROM clickstream.event_sessions WHERE user_id = 'mia' ORDER BY ts;

-- an event inside an existing gap extends a session; one after it too, in
-- the next refresh: still one session
SELECT feed_events(0, ARRAY[sev('n1', 'noa', '2026-03-01T10:00:00Z'), sev('n2', 'noa', '2026-03-01T10:50:00Z')]);
CALL clickstream.refresh();
SELECT * FROM user_sessions('noa');
SELECT feed_events(0, ARRAY[sev('n3', 'noa', '2026-03-01T10:25:00Z')]);
CALL clickstream.refresh();
SELECT * FROM user_sessions('noa');
SELECT feed_events(0, ARRAY[sev('n4', 'noa', '2026-03-01T11:10:00Z')]);
CALL clickstream.refresh();
SELECT * FROM user_sessions('noa');
-- an event before the first session: its start moves, the id changes
SELECT feed_events(0, ARRAY[sev('n0', 'noa', '2026-03-01T09:40:00Z')]);
CALL clickstream.refresh();
SELECT * FROM user_sessions('noa');
SELECT sessions_diff() AS diff;

-- Late events and events that continue the last session in one step: the
-- late ones' range stops at the first session they cannot reach, and the
-- last session is extended from its row (sessions_extended) instead of
-- read again; events_reread counts what was read to recompute the rest
CREATE FUNCTION last_run() RETURNS TABLE (sessions_written bigint, sessions_extended bigint,
	events_reread bigint)
LANGUAGE sql AS $$
	SELECT sessions_written, sessions_extended, events_reread
	FROM clickstream.refresh_history ORDER BY run_id DESC LIMIT 1
$$;
SELECT feed_events(0, ARRAY[sev('s1', 'sal', '2026-02-20T10:00:00Z'),
	sev('s2', 'sal', '2026-02-20T10:10:00Z', 'page_view', NULL, 'p1', 'c1'),
	sev('s3', 'sal', '2026-02-20T10:20:00Z', 'add_to_cart', NULL, 'p1', 'c1')]);
CALL clickstream.refresh();
-- hours late, and the session goes on: split, extended
SELECT feed_events(0, ARRAY[sev('s0', 'sal', '2026-02-20T06:00:00Z'),
	sev('s4', 'sal', '2026-02-20T10:25:00Z', 'begin_checkout'),
	sev('s5', 'sal', '2026-02-20T10:30:00Z', 'purchase', NULL, 'p1', 'c1')]);
CALL clickstream.refresh();
SELECT * FROM last_run();
SELECT * FROM user_sessions('sal');
SELECT sessions_diff() AS diff, funnels_diff() AS funnel_diff;
-- a session in between is left alone: only the late one's session is read
SELECT feed_events(0, ARRAY[sev('s6', 'sal', '2026-02-20T08:00:00Z')]);
CALL clickstream.refresh();
SELECT feed_events(0, ARRAY[sev('s7', 'sal', '2026-02-20T06:10:00Z'), sev('s8', 'sal', '2026-02-20T10:40:00Z')]);
CALL clickstream.refresh();
SELECT * FROM last_run();
SELECT * FROM user_sessions('sal');
SELECT sessions_diff() AS diff, funnels_diff() AS funnel_diff;
-- late, but within the timeout of the last session's start: it moves that
-- start, so no split; the session is read again
SELECT feed_events(0, ARRAY[sev('s9', 'sal', '2026-02-20T09:45:00Z'), sev('s10', 'sal', '2026-02-20T10:45:00Z')]);
CALL clickstream.refresh();
SELECT * FROM last_run();
SELECT * FROM user_sessions('sal');
SELECT sessions_diff() AS diff, funnels_diff() AS funnel_diff;
-- split, but a new event inside the last session: that one is read again
SELECT feed_events(0, ARRAY[sev('s11', 'sal', '2026-02-20T06:20:00Z'), sev('s12', 'sal', '2026-02-20T10:05:00Z')]);
CALL clickstream.refresh();
SELECT * FROM last_run();
SELECT * FROM user_sessions('sal');
SELECT sessions_diff() AS diff, funnels_diff() AS funnel_diff;
-- split, and the new events after the last session start one of their own
SELECT feed_events(0, ARRAY[sev('s13', 'sal', '2026-02-20T05:00:00Z'), sev('s14', 'sal', '2026-02-20T12:00:00Z')]);
CALL clickstream.refresh();
SELECT * FROM last_run();
SELECT * FROM user_sessions('sal');
SELECT sessions_diff() AS diff, funnels_diff() AS funnel_diff;

-- Funnels: per session, per category and per product.  fay views p1 (c1)
-- and p2 (c2), carts p2, checks out (no product), buys p2, then carts p1.
SELECT feed_events(0, ARRAY[
	sev('f1', 'fay', '2026-03-02T10:00:00Z', 'page_view', NULL, 'p1', 'c1'),
	sev('f2', 'fay', '2026-03-02T10:01:00Z', 'page_view', NULL, 'p2', 'c2'),
	sev('f3', 'fay', '2026-03-02T10:02:00Z', 'add_to_cart', NULL, 'p2', 'c2'),
	sev('f4', 'fay', '2026-03-02T10:03:00Z', 'begin_checkout'),
	sev('f5', 'fay', '2026-03-02T10:04:00Z', 'purchase', NULL, 'p2', 'c2'),
	sev('f6', 'fay', '2026-03-02T10:05:00Z', 'add_to_cart', NULL, 'p1', 'c1'),
-- gus lands on a page without product, carts and buys p1: level 2 (no
-- checkout), and 0 for c1 and p1 (never viewed)
	sev('g1', 'gus', '2026-03-02T11:00:00Z'),
	sev('g2', 'gus', '2026-03-02T11:01:00Z', 'add_to_cart', NULL, 'p1', 'c1'),
	sev('g3', 'gus', '2026-03-02T11:02:00Z', 'purchase', NULL, 'p1', 'c1')]);
CALL clickstream.refresh();
SELECT user_id, funnel_level, category_funnel, product_funnel
FROM clickstream.sessions WHERE session_date = '2026-03-02' ORDER BY user_id;
SELECT step, step_name, sessions, reached, conversion_from_previous, conversion_from_first,
	   conversion_overall
FROM clickstream.daily_funnel WHERE day = '2026-03-02' ORDER BY step;
SELECT category, step, sessions, reached, conversion_from_previous
FROM clickstream.funnel_by_category WHERE day = '2026-03-02' ORDER BY category, step;
-- late events complete gus's funnel: a view of p1 before the landing page,
-- and a checkout between cart and purchase
SELECT feed_events(0, ARRAY[
	sev('g0', 'gus', '2026-03-02T10:59:30Z', 'page_view', NULL, 'p1', 'c1'),
	sev('g4', 'gus', '2026-03-02T11:01:30Z', 'begin_checkout')]);
CALL clickstream.refresh();
SELECT user_id, funnel_level, category_funnel, product_funnel
FROM clickstream.sessions WHERE session_date = '2026-03-02' ORDER BY user_id;
SELECT step, sessions, reached, conversion_from_previous, conversion_overall
FROM clickstream.daily_funnel WHERE day = '2026-03-02' ORDER BY step;
SELECT product_id, category, step, sessions, reached
FROM clickstream.product_funnel WHERE day = '2026-03-02' ORDER BY product_id, step;
SELECT funnels_diff() AS diff;

-- Property: random streams in random batch splits, with late events; after
-- every refresh, sessions equals the full recomputation
CREATE TEMP TABLE rounds (run integer, batch integer, events integer, sessions bigint, diff bigint,
	funnel_diff bigint);
CREATE PROCEDURE property(run integer, seed float8, total integer)
LANGUAGE plpgsql AS $$
DECLARE
	pos bigint := 0;
	size integer;
	batch integer := 0;
BEGIN
	PERFORM setseed(seed);
	DROP TABLE IF EXISTS stream;
	CREATE TEMP TABLE stream AS
	SELECT row_number() OVER (ORDER BY arrival) AS n, payload
	FROM (
		SELECT sev(run || 'r' || g, 'ru' || (1 + floor(random() * 200))::int,
				   to_char(t, 'YYYY-MM-DD"T"HH24:MI:SS"Z"'), typ,
				   CASE WHEN random() < 0.1 THEN (ARRAY['google', 'mail'])[1 + floor(random() * 2)::int] END,
				   CASE WHEN prod > 0 THEN 'p' || prod END,
				   -- a product's category, sometimes missing
				   CASE WHEN prod > 0 AND random() < 0.95 THEN 'c' || prod % 3 END) AS payload,
			   -- most arrive about in order, some hours late, a few days late
			   t + CASE WHEN random() < 0.9 THEN random() * interval '10 minutes'
						WHEN random() < 0.8 THEN random() * interval '6 hours'
						ELSE random() * interval '3 days' END AS arrival
		FROM (SELECT g, t, typ,
					 -- products on most views, carts and purchases, none on checkouts
					 CASE WHEN typ <> 'begin_checkout' AND random() < 0.8 THEN 1 + floor(random() * 6)::int END AS prod
			  FROM (SELECT g, date_trunc('minute', timestamptz '2026-03-05 00:00Z'
						+ random() * random() * interval '2 days') AS t,
						(ARRAY['page_view', 'page_view', 'add_to_cart', 'begin_checkout', 'purchase'])[1 + floor(random() * 5)::int] AS typ
					FROM generate_series(1, total) g) w) x
	) y;
	WHILE pos < total LOOP
		size := 1 + floor(random() * 400)::int;
		batch := batch + 1;
		PERFORM feed_events(1 + floor(random() * 3)::int,
			ARRAY(SELECT payload FROM stream WHERE n > pos AND n <= pos + size ORDER BY n));
		pos := pos + size;
		CALL clickstream.refresh();
		INSERT INTO rounds SELECT run, batch, least(size, total - pos + size),
			(SELECT count(*) FROM clickstream.sessions), sessions_diff(), funnels_diff();
	END LOOP;
END $$;
CALL property(1, 0.5, 4000);
-- the same with every rule on: short timeout and maximum, midnight, campaign
ALTER SYSTEM SET clickstream.session_timeout = '10min';
ALTER SYSTEM SET clickstream.session_max_duration = '1h';
ALTER SYSTEM SET clickstream.session_split_at_midnight = on;
ALTER SYSTEM SET clickstream.session_split_on_campaign = on;
SELECT pg_reload_conf();
SELECT pg_sleep(0.5);
SELECT clickstream.session_rules();
CALL property(2, 0.75, 4000);
SELECT run, count(*) AS refreshes, sum(events) AS events, max(diff) AS max_diff,
	   max(funnel_diff) AS max_funnel_diff, count(DISTINCT sessions) > 10 AS sessions_changed
FROM rounds GROUP BY run ORDER BY run;
SELECT sum(events) AS session_events, count(*) AS sessions, count(*) FILTER (WHERE converted) AS converted,
	   count(*) FILTER (WHERE utm_source IS NOT NULL) AS with_campaign
FROM clickstream.sessions WHERE user_id LIKE 'ru%';

-- what refresh recorded
SELECT status, sessions_written > 0 AS wrote_sessions, gold_time > '0' AS timed
FROM clickstream.refresh_history ORDER BY run_id DESC LIMIT 1;

-- a change of the rules rebuilds sessions at the next refresh
ALTER SYSTEM RESET clickstream.session_timeout;
ALTER SYSTEM RESET clickstream.session_max_duration;
ALTER SYSTEM RESET clickstream.session_split_at_midnight;
ALTER SYSTEM RESET clickstream.session_split_on_campaign;
SELECT pg_reload_conf();
SELECT pg_sleep(0.5);
CALL clickstream.refresh();
SELECT sessions_diff() AS diff, funnels_diff() AS funnel_diff, count(*) AS sessions
FROM clickstream.sessions WHERE user_id LIKE 'ru%';

-- another time zone: sessions are rebuilt; silver keeps the days it derived
-- before, so gold looks two days around (timezone_changed) and stays exact
-- as more events come, late ones too, with midnight splits in the new zone
ALTER SYSTEM SET clickstream.timezone = 'Pacific/Kiritimati';
ALTER SYSTEM SET clickstream.session_split_at_midnight = on;
SELECT pg_reload_conf();
SELECT pg_sleep(0.5);
CALL property(3, 0.125, 1500);
SELECT timezone_changed FROM clickstream.gold_state;
SELECT run, count(*) AS refreshes, sum(events) AS events, max(diff) AS max_diff,
	   max(funnel_diff) AS max_funnel_diff
FROM rounds WHERE run = 3 GROUP BY run;
SELECT count(*) AS events_on_other_days FROM clickstream.events
WHERE (ts AT TIME ZONE 'Pacific/Kiritimati')::date <> event_date;
ALTER SYSTEM RESET clickstream.timezone;
ALTER SYSTEM RESET clickstream.session_split_at_midnight;
SELECT pg_reload_conf();
SELECT pg_sleep(0.5);

CALL clickstream.refresh();
-- the property runs left products of high interest and low conversion
SELECT count(*) > 0 AS listed, bool_and(views >= 3 OR carts >= 2) AS interest,
	   bool_and(purchases <= 0.25 * views) AS low_conversion
FROM clickstream.high_interest_low_conversion;
-- other thresholds: the list is rebuilt at the next refresh
ALTER SYSTEM SET clickstream.interest_min_views = 5;
ALTER SYSTEM SET clickstream.interest_max_conversion = 0.1;
SELECT pg_reload_conf();
SELECT pg_sleep(0.5);
CALL clickstream.refresh();
SELECT gold_state.interest_rules, funnels_diff() AS funnel_diff FROM clickstream.gold_state;

-- a shop's own funnel: two steps, cart then purchase; refresh rebuilds
-- sessions and funnels
BEGIN;
DELETE FROM clickstream.funnel_definition;
INSERT INTO clickstream.funnel_definition VALUES (1, 'cart', 'add_to_cart'), (2, 'buy', 'purchase');
COMMIT;
CALL clickstream.refresh();
SELECT step, step_name, sessions, reached, conversion_from_previous
FROM clickstream.daily_funnel WHERE day = '2026-03-02' ORDER BY step;
SELECT user_id, funnel_level, category_funnel, product_funnel
FROM clickstream.sessions WHERE session_date = '2026-03-02' ORDER BY user_id;
SELECT sessions_diff() AS diff, funnels_diff() AS funnel_diff;
-- steps with a gap, or none, or two steps of one event type (one event
-- would make both) are refused when the change commits
UPDATE clickstream.funnel_definition SET step = 3 WHERE step = 2;
DELETE FROM clickstream.funnel_definition;
INSERT INTO clickstream.funnel_definition VALUES (3, 'second cart', 'add_to_cart');
SELECT * FROM clickstream.funnel_definition ORDER BY step;
-- back to the default funnel
BEGIN;
DELETE FROM clickstream.funnel_definition;
INSERT INTO clickstream.funnel_definition VALUES
	(1, 'view', 'page_view'), (2, 'add to cart', 'add_to_cart'),
	(3, 'begin checkout', 'begin_checkout'), (4, 'purchase', 'purchase');
COMMIT;
CALL clickstream.refresh();
SELECT sessions_diff() AS diff, funnels_diff() AS funnel_diff;
SELECT check_name, failures, passed FROM clickstream.check_quality() WHERE check_name LIKE '%funnel%';
ALTER SYSTEM RESET clickstream.interest_min_views;
ALTER SYSTEM RESET clickstream.interest_min_carts;
ALTER SYSTEM RESET clickstream.interest_max_conversion;
SELECT pg_reload_conf();
SELECT pg_sleep(0.5);

-- a column added to silver while this session lives: the next refresh's
-- scratch copy of silver follows it
ALTER TABLE clickstream.events ADD COLUMN note text;
SELECT feed_events(0, ARRAY[sev('z1', 'zed', '2026-03-05T10:00:00Z'), sev('z2', 'zed', '2026-03-05T10:10:00Z', 'add_to_cart')]);
CALL clickstream.refresh();
SELECT user_id, events, funnel_level FROM clickstream.sessions WHERE user_id = 'zed';
SELECT sessions_diff() AS diff, funnels_diff() AS funnel_diff;
ALTER TABLE clickstream.events DROP COLUMN note;

-- the settings
SELECT name, setting, unit, context FROM pg_settings
WHERE name LIKE 'clickstream.session%' OR name LIKE 'clickstream.interest%' ORDER BY name;

DROP EXTENSION clickstream;
DROP FUNCTION feed_events(int, text[]);
