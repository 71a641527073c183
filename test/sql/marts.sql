-- Gold marts: hand-made cases with known answers, then a property test:
-- random streams in random batch splits (late events, redeliveries, order
-- lines arriving in different refreshes), with a time zone change, a change
-- of the session rules and a dropped day, and verify_gold() finding nothing
-- after every refresh.
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS clickstream;	-- the funnel test leaves it
RESET client_min_messages;
CREATE EXTENSION clickstream;
CREATE SCHEMA mt;
SET search_path = mt, public;
SET clickstream.refresh_batch_size = 1000;
SET timezone = 'UTC';

SET regress.topic = 'mt';
\getenv abs_srcdir PG_ABS_SRCDIR
\i :abs_srcdir/sql/include/feed_events.sql
\i :abs_srcdir/sql/include/marts_events.sql

-- Orders: lines of one order in different refreshes; a late line that comes
-- first makes its user and time the order's
SELECT feed_events(0, ARRAY[
	ev('a1', 'ann', '2026-04-06T10:00:00Z', 'page_view', 'page_url=/home', 'utm_source=google', 'utm_medium=cpc'),
	ev('a2', 'ann', '2026-04-06T10:05:00Z', 'purchase', 'order_id=o1', 'product_id=p1', 'category=books',
	   'price=10', 'quantity=2', 'page_url=/buy')]);
CALL clickstream.refresh();
SELECT order_id, user_id, ordered_at, day, lines, units, revenue, session_id IS NOT NULL AS has_session
FROM clickstream.orders;
SELECT feed_events(1, ARRAY[
	ev('a3', 'ann', '2026-04-06T10:06:00Z', 'purchase', 'order_id=o1', 'product_id=p2', 'category=toys',
	   'price=5.5', 'page_url=/buy'),
	ev('b1', 'bob', '2026-04-06T09:00:00Z', 'purchase', 'order_id=o1', 'product_id=p2', 'category=toys',
	   'price=1', 'quantity=3')]);
CALL clickstream.refresh();
SELECT order_id, user_id, ordered_at, day, lines, units, revenue FROM clickstream.orders;
SELECT user_id, orders, revenue, first_order_at, sessions, events, utm_source, utm_medium, days_active
FROM clickstream.users ORDER BY 1;
SELECT day, events, page_views, users, new_users, sessions, bounced_sessions, converted_sessions,
	   orders, units, revenue, aov, conversion_rate
FROM clickstream.daily_metrics ORDER BY day;
SELECT * FROM clickstream.category_daily ORDER BY 1, 2;
SELECT product_id, category, page_views, purchases, units, revenue, last_price FROM clickstream.products ORDER BY 1;
SELECT day, utm_source, utm_medium, utm_campaign, sessions, users, converted_sessions, revenue
FROM clickstream.traffic_daily ORDER BY 1, 2;
SELECT * FROM clickstream.pages_daily ORDER BY 1, 2;
SELECT gold_bad();

-- Active users and retention: cal is active on Mon 6 April, then on Mon 13
-- and Wed 22 April; a late event on Fri 3 April (the week before) moves
-- cal to the cohort of 30 March
SELECT feed_events(0, ARRAY[
	ev('c1', 'cal', '2026-04-06T12:00:00Z'), ev('c2', 'cal', '2026-04-13T12:00:00Z'),
	ev('c3', 'cal', '2026-04-22T12:00:00Z')]);
CALL clickstream.refresh();
SELECT day, dau, wau, mau FROM clickstream.active_users
WHERE day IN ('2026-04-06', '2026-04-12', '2026-04-13', '2026-04-19', '2026-04-20', '2026-04-22', '2026-05-05', '2026-05-06')
ORDER BY day;
SELECT * FROM clickstream.cohort_retention ORDER BY 1, 2;
SELECT feed_events(2, ARRAY[ev('c0', 'cal', '2026-04-03T12:00:00Z')]);
CALL clickstream.refresh();
SELECT * FROM clickstream.cohort_retention ORDER BY 1, 2;
SELECT day, new_users FROM clickstream.daily_metrics WHERE new_users <> 0 ORDER BY day;
SELECT gold_bad();

-- Traffic and audience users when sessions merge or change their first
-- touch: tom's two google sessions merge through a late event (google keeps
-- tom); val's bing session gets an earlier first event from mail (bing
-- loses val, mail gains val)
SELECT feed_events(0, ARRAY[
	ev('t1', 'tom', '2026-04-08T10:00:00Z', 'page_view', 'utm_source=google', 'country=FR'),
	ev('t2', 'tom', '2026-04-08T11:00:00Z', 'page_view', 'utm_source=google', 'country=FR'),
	ev('v1', 'val', '2026-04-08T12:00:00Z', 'page_view', 'utm_source=bing', 'country=DE')]);
CALL clickstream.refresh();
SELECT utm_source, sessions, users FROM clickstream.traffic_daily WHERE day = '2026-04-08' ORDER BY 1;
SELECT feed_events(1, ARRAY[
	ev('t0', 'tom', '2026-04-08T10:30:00Z', 'page_view', 'country=FR'),
	ev('v0', 'val', '2026-04-08T11:50:00Z', 'page_view', 'utm_source=mail', 'country=US')]);
CALL clickstream.refresh();
SELECT utm_source, sessions, users FROM clickstream.traffic_daily WHERE day = '2026-04-08' ORDER BY 1;
SELECT country, sessions, users FROM clickstream.audience_daily WHERE day = '2026-04-08' ORDER BY 1;
SELECT gold_bad();

-- a session that leaves its traffic and audience rows takes its revenue
-- with it, and the rows show what a recomputation shows, to the digit:
-- una's purchase of 12.50 moves to a google / US session when a late event
-- gives it an earlier first touch (the rows it left keep 0, not 0.00)
SELECT feed_events(0, ARRAY[
	ev('u1', 'una', '2026-04-09T10:00:00Z', 'page_view'),
	ev('u2', 'una', '2026-04-09T10:01:00Z', 'purchase', 'order_id=uo1', 'price=12.50'),
	ev('u3', 'uri', '2026-04-09T11:00:00Z', 'page_view')]);
CALL clickstream.refresh();
SELECT feed_events(1, ARRAY[ev('u0', 'una', '2026-04-09T09:59:00Z', 'page_view', 'utm_source=google', 'country=US')]);
CALL clickstream.refresh();
SELECT utm_source, sessions, revenue::text FROM clickstream.traffic_daily WHERE day = '2026-04-09' ORDER BY 1;
SELECT country, sessions, revenue::text FROM clickstream.audience_daily WHERE day = '2026-04-09' ORDER BY 1;
SELECT 'traffic_daily' AS mart, count(*) AS rows_not_as_recomputed FROM (
	SELECT day, utm_source, utm_medium, utm_campaign, revenue::text FROM clickstream.traffic_daily
	EXCEPT SELECT day, utm_source, utm_medium, utm_campaign, revenue::text FROM clickstream.recompute_traffic_daily()) d
UNION ALL
SELECT 'audience_daily', count(*) FROM (
	SELECT day, country, device, revenue::text FROM clickstream.audience_daily
	EXCEPT SELECT day, country, device, revenue::text FROM clickstream.recompute_audience_daily()) d;
SELECT gold_bad();
-- the same for the seconds of a day that loses all its sessions: sam's
-- session of 11 April merges into the one that started on 10 April through a
-- late event between them (the day keeps 0.000000, as a day without any)
SELECT feed_events(0, ARRAY[ev('s1', 'sam', '2026-04-10T23:50:00Z'), ev('s2', 'sam', '2026-04-11T00:25:00Z')]);
CALL clickstream.refresh();
SELECT feed_events(1, ARRAY[ev('s0', 'sam', '2026-04-11T00:05:00Z')]);
CALL clickstream.refresh();
SELECT day, sessions, session_seconds::text FROM clickstream.daily_metrics
WHERE day IN ('2026-04-10', '2026-04-11') ORDER BY 1;
SELECT count(*) AS rows_not_as_recomputed FROM (
	SELECT day, session_seconds::text FROM clickstream.daily_metrics
	EXCEPT SELECT day, session_seconds::text FROM clickstream.recompute_daily_metrics()) d;
SELECT gold_bad();

-- verify_gold() notices a mart that is off, and rebuild_gold() repairs it
UPDATE clickstream.daily_metrics SET revenue = revenue + 1 WHERE day = '2026-04-06';
DELETE FROM clickstream.user_days WHERE user_id = 'cal' AND day = '2026-04-13';
SELECT mart, missing, unexpected FROM clickstream.verify_gold() WHERE NOT ok;
SELECT clickstream.rebuild_gold() AS sessions;
SELECT gold_bad();

-- the live view: events of the last minutes, promoted or still in bronze
SELECT feed_events(0, ARRAY[ev('l1', 'liv', to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'), 'purchase',
	'order_id=lo1', 'price=3')]);
CALL clickstream.refresh();
SELECT feed_events(0, ARRAY[ev('l2', 'lou', to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'))]);
-- a purchase delivered twice, in two partitions, before the refresh: once
SELECT feed_events(p, ARRAY[ev('l3', 'lou', to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'), 'purchase',
	'order_id=lo3', 'price=5')]) FROM generate_series(1, 2) p;
SELECT sum(events) AS events, sum(purchases) AS purchases, sum(revenue) AS revenue FROM clickstream.live;
-- every bucket of the window, those without events at zero: 31 (the first
-- and the current one partial), 10 seconds apart, the newest not after now
SELECT count(*) AS buckets, count(*) FILTER (WHERE events = 0 AND users = 0 AND revenue = 0) >= 28 AS zeros,
	   max(bucket) <= now() AND max(bucket) > now() - interval '10 seconds' AS newest,
	   min(bucket) <= now() - interval '5 minutes' AS oldest,
	   count(DISTINCT bucket) = count(*) AND bool_and(extract(epoch FROM bucket)::numeric % 10 = 0) AS aligned
FROM clickstream.live;
SELECT events_5m, users_5m, orders_1h, revenue_1h, unpromoted FROM clickstream.live_summary;
CALL clickstream.refresh();

-- a page URL longer than a B-tree entry can hold (tracking parameters,
-- encoded state): pages_daily keeps it whole
SELECT feed_events(0, ARRAY[ev('p1', 'pia', '2026-04-25T10:00:00Z', 'page_view',
	'page_url=/p/' || (SELECT string_agg(md5(i::text), '') FROM generate_series(1, 120) i))]);
CALL clickstream.refresh();
SELECT day, length(page_url), page_views, entrances, exits, users
FROM clickstream.pages_daily WHERE length(page_url) > 3000;
-- and the user's day keeps its key, 32 bytes, not the URL (a crawler's day
-- of long distinct URLs would otherwise grow past what a value can hold)
SELECT u.user_id, u.day, u.pages = ARRAY[clickstream.page_key(p.page_url)] AS keyed,
	   octet_length(u.pages[1]) AS key_bytes
FROM clickstream.user_days u, clickstream.pages_daily p
WHERE u.user_id = 'pia' AND u.day = '2026-04-25' AND p.day = u.day AND length(p.page_url) > 3000;
SELECT gold_bad();
-- a day dropped, then created again by a late event: gold notices that the
-- day is another table, and forgets what it had
DROP TABLE clickstream.events_20260425;
SELECT feed_events(1, ARRAY[ev('p2', 'pat', '2026-04-25T11:00:00Z')]);
CALL clickstream.refresh();
SELECT day, events, users, new_users FROM clickstream.daily_metrics WHERE day = '2026-04-25';
SELECT gold_bad();

-- Property test ---------------------------------------------------------------------

-- a random event: n is its number (the event_id); users come and go over
-- about three weeks; 15 % are late (up to 20 days)
CREATE FUNCTION rand_event(n int, base timestamptz, nusers int DEFAULT 150,
	spacing interval DEFAULT '9 minutes') RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
	u int := 1 + floor(random() * nusers)::int;
	typ text := (ARRAY['page_view', 'page_view', 'page_view', 'page_view', 'add_to_cart',
		'remove_from_cart', 'begin_checkout', 'purchase', 'purchase', 'search'])[1 + floor(random() * 10)::int];
	p int := 1 + floor(random() * 15)::int;
	late boolean := random() < 0.15;
	ts timestamptz := base + (n * spacing) + (random() * interval '40 minutes')
		- CASE WHEN late THEN random() * interval '20 days' ELSE interval '0' END;
	o text;
BEGIN
	o := '"event_id":"r' || n || '","event_type":"' || typ || '","user_id":"ru' || u || '","ts":"'
		|| to_char(ts AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') || '"';
	IF typ <> 'search' AND typ <> 'begin_checkout' AND random() < 0.9 THEN
		o := o || ',"product_id":"p' || p || '"';
		IF random() < 0.9 THEN o := o || ',"category":"c' || (p % 4) || '"'; END IF;
		IF random() < 0.8 THEN o := o || ',"price":' || (p * 3 + 0.5); END IF;
	END IF;
	IF typ = 'purchase' THEN
		-- a few orders per user: their lines come in different refreshes
		o := o || ',"order_id":"ro' || (u * 10 + floor(random() * 3)::int) || '","quantity":' || (1 + floor(random() * 3)::int);
		IF o NOT LIKE '%"price"%' THEN o := o || ',"price":7'; END IF;
	END IF;
	IF random() < 0.9 THEN o := o || ',"page_url":"/page' || floor(random() * 6)::int || '"'; END IF;
	IF random() < 0.3 THEN o := o || ',"utm_source":"' || (ARRAY['google', 'bing', 'mail'])[1 + floor(random() * 3)::int] || '"'; END IF;
	IF random() < 0.2 THEN o := o || ',"utm_medium":"cpc"'; END IF;
	IF random() < 0.2 THEN o := o || ',"utm_campaign":"spring"'; END IF;
	IF random() < 0.8 THEN o := o || ',"device":"' || (ARRAY['mobile', 'desktop'])[1 + floor(random() * 2)::int] || '"'; END IF;
	IF random() < 0.8 THEN o := o || ',"country":"' || (ARRAY['FR', 'DE', 'US'])[1 + floor(random() * 3)::int] || '"'; END IF;
	RETURN '{' || o || '}';
END $$;
CREATE TABLE rounds (round int, events bigint, bad text);
-- rounds of 1-3 random batches of 1-60 events over three partitions, with
-- redeliveries, then a refresh and verify_gold()
CREATE PROCEDURE property(first int, last int, nusers int DEFAULT 150,
	spacing interval DEFAULT '9 minutes') LANGUAGE plpgsql AS $$
DECLARE
	batch int;
	evs text[];
	n int;
	base timestamptz := '2026-03-02 08:00Z';
BEGIN
	FOR r IN first..last LOOP
		n := r * 1000;
		FOR k IN 1..(1 + floor(random() * 3)::int) LOOP
			batch := 1 + floor(random() * 60)::int;
			evs := ARRAY(SELECT rand_event(n + g, base + r * interval '6 hours', nusers, spacing) FROM generate_series(1, batch) g);
			IF random() < 0.5 THEN
				evs := evs || ARRAY(SELECT rand_event(1000 + floor(random() * (n - 1000 + batch))::int,
													  base + r * interval '6 hours', nusers, spacing) FROM generate_series(1, 3));
			END IF;
			n := n + batch;
			PERFORM feed_events(floor(random() * 3)::int, evs);
		END LOOP;
		COMMIT;
		CALL clickstream.refresh();
		INSERT INTO rounds SELECT r, (SELECT count(*) FROM clickstream.events), gold_bad();
		COMMIT;
	END LOOP;
END $$;

SELECT setseed(0.42);
CALL property(1, 20);
-- another time zone: gold is rebuilt, then kept in the new one
ALTER SYSTEM SET clickstream.timezone = 'America/New_York';
SELECT pg_reload_conf();
SELECT pg_sleep(0.5);
CALL property(21, 30);
-- other session rules
ALTER SYSTEM SET clickstream.session_timeout = '10min';
SELECT pg_reload_conf();
SELECT pg_sleep(0.5);
-- until the next refresh rebuilds it, gold follows the old rules: the quality
-- checks say so with a warning, not with gold_matches_recomputation's error,
-- and verify_gold() (which compares with the new rules) with a notice
SELECT check_name, severity, failures, passed FROM clickstream.check_quality()
WHERE check_name IN ('gold_matches_recomputation', 'gold_settings_applied') ORDER BY 1;
SELECT count(*) > 0 AS differs FROM clickstream.verify_gold() WHERE NOT ok;
CALL property(31, 40);
SELECT check_name, severity, failures, passed FROM clickstream.check_quality()
WHERE check_name IN ('gold_matches_recomputation', 'gold_settings_applied') ORDER BY 1;
-- a dropped day: gold forgets it
DROP TABLE clickstream.events_20260303;
CALL property(41, 50);
ALTER SYSTEM RESET clickstream.timezone;
ALTER SYSTEM RESET clickstream.session_timeout;
SELECT pg_reload_conf();
SELECT pg_sleep(0.5);
CALL property(51, 55);
-- a few users with many events: sessions grow across refreshes and merge
CALL property(56, 70, 12, '15 seconds');
SELECT count(*) AS refreshes, min(events) > 0 AS events, max(events) > 1000 AS many,
	   count(*) FILTER (WHERE bad <> 'ok') AS refreshes_with_differences
FROM rounds;
SELECT round, bad FROM rounds WHERE bad <> 'ok';
-- what the streams exercised
SELECT (SELECT count(*) FROM clickstream.orders WHERE lines > 1) > 10 AS multi_line_orders,
	   (SELECT count(*) FROM clickstream.cohort_retention) > 3 AS cohorts,
	   (SELECT count(*) FROM clickstream.traffic_daily WHERE utm_source = '(direct)') > 0 AS direct,
	   (SELECT max(days_active) FROM clickstream.users) > 3 AS returning_users,
	   (SELECT count(*) FROM clickstream.refresh_history WHERE rows_duplicate > 0) > 5 AS redeliveries,
	   (SELECT max(events) FROM clickstream.sessions) > 5 AS long_sessions;
SELECT * FROM clickstream.verify_gold() WHERE NOT ok;

-- An empty product_id is none (docs/marts.md): no row in products or
-- product_daily, while "0" is a product
SELECT feed_events(0, ARRAY[
	ev('z1', 'zoe', '2025-01-02T10:00:00Z', 'add_to_cart', 'product_id=', 'category=x'),
	ev('z2', 'zoe', '2025-01-02T10:01:00Z', 'page_view', 'product_id=0')]);
CALL clickstream.refresh();
SELECT product_id, category, page_views, add_to_carts FROM clickstream.products
WHERE first_seen >= '2025-01-02' AND first_seen < '2025-01-03';
SELECT day, product_id, page_views, add_to_carts FROM clickstream.product_daily WHERE day = '2025-01-02';
SELECT gold_bad();

-- users' country and device are the last known ones: a purchase sent
-- without them (a server-side event) or with an empty one keeps what came
-- before; a late event older than the known one does not replace it; a
-- newer one does
SELECT feed_events(0, ARRAY[
	ev('kc1', 'kim', '2025-01-03T10:00:00Z', 'page_view', 'country=FR', 'device=mobile'),
	ev('kc2', 'kim', '2025-01-03T10:05:00Z', 'purchase', 'order_id=ko1', 'price=3')]);
CALL clickstream.refresh();
SELECT user_id, country, device, country_seen_at, device_event_id FROM clickstream.users WHERE user_id = 'kim';
SELECT feed_events(1, ARRAY[
	ev('kc0', 'kim', '2025-01-03T09:00:00Z', 'page_view', 'country=DE', 'device=desktop'),
	ev('kc3', 'kim', '2025-01-03T11:00:00Z', 'page_view', 'country=', 'device=tablet')]);
CALL clickstream.refresh();
SELECT user_id, country, device, country_seen_at, device_event_id FROM clickstream.users WHERE user_id = 'kim';
SELECT feed_events(2, ARRAY[ev('kc4', 'kim', '2025-01-03T12:00:00Z', 'page_view', 'country=US')]);
CALL clickstream.refresh();
SELECT user_id, country, device, country_seen_at, device_event_id FROM clickstream.users WHERE user_id = 'kim';
SELECT gold_bad();
SET client_min_messages = warning;
DROP SCHEMA mt CASCADE;
DROP EXTENSION clickstream;
