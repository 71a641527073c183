-- Gold marts under what operators and producers actually do: time zone
-- names that SQL reads otherwise than silver, events from clocks that were
-- never set (1970, year 1) for users active today, and odd values (long
-- strings, control characters, huge prices and quantities); verify_gold()
-- finds nothing after each refresh.
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS clickstream;
RESET client_min_messages;
CREATE EXTENSION clickstream;
CREATE SCHEMA mo;
SET search_path = mo, public;
SET timezone = 'UTC';

SET regress.topic = 'mo';
\getenv abs_srcdir PG_ABS_SRCDIR
\i :abs_srcdir/sql/include/feed_events.sql
\i :abs_srcdir/sql/include/marts_events.sql

-- Time zone names that are also abbreviations: AT TIME ZONE 'CET' is +1
-- all year, silver's CET has summer time; refused (silver put an event of
-- 22:10 UTC on 10 June on 11 June, gold looked for it on 10 June and lost
-- it from its session)
\set VERBOSITY terse
ALTER SYSTEM SET clickstream.timezone = 'CET';
ALTER SYSTEM SET clickstream.timezone = 'est';
ALTER SYSTEM SET clickstream.timezone = 'Europe/Paris';
ALTER SYSTEM RESET clickstream.timezone;
\set VERBOSITY default

-- A clock that was never set: events of 1970 and of year 1 for users with
-- sessions today.  Gold reads only the days between that have a partition
-- (it probed each of the 740 000 days of the range, 90 s for one event
-- over 200 partitions).
SELECT feed_events(0, ARRAY[
	ev('a1', 'ann', '2026-04-06T10:00:00Z', 'page_view', 'page_url=/home'),
	ev('a2', 'ann', '2026-04-08T10:00:00Z', 'purchase', 'order_id=o1', 'price=10'),
	ev('b1', 'bob', '2026-04-07T09:00:00Z', 'page_view', 'page_url=/home')]);
CALL clickstream.refresh();
SELECT lo, hi FROM clickstream.silver_partition_ranges() WHERE lo < '2026-05-01' ORDER BY lo;	-- (not today's)
SELECT feed_events(0, ARRAY[
	ev('a0', 'ann', '0001-01-01T00:00:00Z', 'page_view', 'page_url=/zero'),
	ev('b0', 'bob', '1970-01-01T00:00:00Z', 'purchase', 'order_id=o1', 'price=1')]);
CALL clickstream.refresh();
SELECT gold_bad();
SELECT user_id, first_seen, days_active, orders, revenue FROM clickstream.users ORDER BY 1;
SELECT order_id, user_id, ordered_at, lines, revenue FROM clickstream.orders;
SELECT cohort_week, week_number, cohort_users, active_users FROM clickstream.cohort_retention
ORDER BY 1, 2;
SELECT lo, hi FROM clickstream.silver_partition_ranges() WHERE lo < '2026-05-01' ORDER BY lo;	-- (not today's)
-- a day dropped in between: only the days left are read
DROP TABLE clickstream.events_20260407;
CALL clickstream.refresh();
SELECT feed_events(0, ARRAY[ev('b2', 'bob', '1970-01-01T00:10:00Z')]);
CALL clickstream.refresh();
SELECT gold_bad();
SELECT user_id, first_seen, last_seen, events, sessions FROM clickstream.users ORDER BY 1;

-- A day detached (gold forgets it) and attached again, or restored from an
-- archive and attached: its events are older than gold's last step, which
-- never counted them (they stayed out of gold, verify_gold() found them
-- missing after every refresh)
ALTER TABLE clickstream.events DETACH PARTITION clickstream.events_20260406;
CALL clickstream.refresh();
SELECT gold_bad();
ALTER TABLE clickstream.events ATTACH PARTITION clickstream.events_20260406
	FOR VALUES FROM ('2026-04-06') TO ('2026-04-07');
SELECT feed_events(0, ARRAY[ev('b3', 'bob', '2026-04-08T12:00:00Z')]);
CALL clickstream.refresh();
SELECT gold_bad();
SELECT user_id, first_seen, events FROM clickstream.users ORDER BY 1;
-- a partition the refresh creates for a late event is not taken for one
SELECT feed_events(0, ARRAY[ev('b4', 'bob', '2026-04-02T12:00:00Z')]);
CALL clickstream.refresh();
SELECT gold_bad();

-- Odd values: a long URL, identifiers of the longest length accepted,
-- control characters and quotes in labels, unicode, an empty category,
-- a literal '(not set)', the largest price and quantity
SELECT feed_events(1, ARRAY[
	jsonb_build_object('event_id', 'x1', 'user_id', 'üser', 'ts', '2026-04-09T10:00:00Z',
		'event_type', 'page_view', 'page_url', repeat('/é', 5000), 'category', repeat('ç', 256),
		'utm_source', E'a\u0001b\nc"d', 'utm_medium', repeat('m', 512),
		'utm_campaign', repeat('k', 512), 'country', repeat('Z', 512), 'device', repeat('D', 512))::text,
	jsonb_build_object('event_id', 'x2', 'user_id', 'üser', 'ts', '2026-04-09T10:01:00Z',
		'event_type', 'purchase', 'order_id', repeat('o', 512), 'product_id', repeat('p', 512),
		'category', 'z', 'price', 999999999999999.123456789123456789, 'quantity', 2147483647)::text,
	ev('x3', 'üser', '2026-04-09T10:02:00Z', 'page_view', 'page_url=(not set)', 'category='),
	ev('x4', 'üser', '2026-04-09T10:03:00Z', 'page_view', 'page_url=', 'category=(not set)'),
	ev('x5', 'v', '2026-04-09T10:04:00Z', 'purchase', 'order_id=o9', 'price=1000000000000000',
	   'quantity=2147483647')]);
CALL clickstream.refresh();
SELECT count(*) AS dead_letters FROM clickstream.dead_letters;
SELECT gold_bad();
SELECT day, orders, units, revenue, aov FROM clickstream.daily_metrics WHERE day = '2026-04-09';
SELECT day, left(utm_source, 12) AS utm_source, length(utm_medium) AS medium_length, sessions, users
FROM clickstream.traffic_daily WHERE day = '2026-04-09' ORDER BY 2;
SELECT day, left(category, 3) AS category, length(category) AS length, page_views, users
FROM clickstream.category_daily WHERE day = '2026-04-09' ORDER BY 2;
SELECT left(page_url, 9) AS page_url, length(page_url), page_views, entrances, users
FROM clickstream.pages_daily WHERE day = '2026-04-09' ORDER BY 1;

SET client_min_messages = warning;
DROP SCHEMA mo CASCADE;
DROP EXTENSION clickstream;
