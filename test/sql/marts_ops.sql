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
-- the ids of the dropped day stay in event_ids (their redeliveries are
-- duplicates), which no quality check counts as a failure (one did, for
-- good, after every documented drop)
SELECT count(*) AS ids_kept FROM clickstream.event_ids WHERE event_date = '2026-04-07';
SELECT check_name, failures FROM clickstream.check_quality() WHERE NOT passed AND severity = 'error';

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

-- A trigger on events that changes and skips rows (docs/operations.md):
-- gold counts what silver holds, as the trigger left it.  tia's session
-- continues in the second step (the append path) past a skipped search; tom
-- has nothing but a skipped search in it (the marts counted the events as
-- parsed, not as written: category_daily, users and user_days were off).
CREATE FUNCTION mo.tidy() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	IF NEW.event_type = 'search' THEN
		RETURN NULL;
	END IF;
	NEW.country := upper(NEW.country);
	NEW.category := lower(NEW.category);
	RETURN NEW;
END $$;
CREATE TRIGGER tidy BEFORE INSERT ON clickstream.events FOR EACH ROW EXECUTE FUNCTION mo.tidy();
SELECT feed_events(2, ARRAY[
	ev('t1', 'tia', '2026-04-10T10:00:00Z', 'page_view', 'category=Books', 'country=fr'),
	ev('t2', 'tia', '2026-04-10T10:01:00Z', 'search', 'category=Books'),
	ev('t3', 'tom', '2026-04-10T10:02:00Z', 'page_view', 'category=TOYS', 'country=de')]);
CALL clickstream.refresh();
SELECT gold_bad();
SELECT feed_events(2, ARRAY[
	ev('t4', 'tia', '2026-04-10T10:05:00Z', 'search'),
	ev('t5', 'tia', '2026-04-10T10:06:00Z', 'purchase', 'order_id=ot', 'price=5', 'category=BOOKS'),
	ev('t6', 'tom', '2026-04-10T10:07:00Z', 'search')]);
CALL clickstream.refresh();
SELECT gold_bad();
SELECT rows_read, rows_promoted, rows_duplicate, rows_rejected
FROM clickstream.refresh_history ORDER BY run_id DESC LIMIT 1;
SELECT category, page_views, purchases, revenue, users
FROM clickstream.category_daily WHERE day = '2026-04-10' ORDER BY 1;
SELECT user_id, country, events, sessions, orders FROM clickstream.users
WHERE user_id IN ('tia', 'tom') ORDER BY 1;
SELECT user_id, session_start, session_end, events, purchases FROM clickstream.sessions
WHERE user_id IN ('tia', 'tom') ORDER BY 1;
SELECT check_name, failures FROM clickstream.check_quality() WHERE NOT passed AND severity = 'error';
-- one that changes a key (user_id): that event is refused, to dead_letters
-- with the reason; the others of the step are promoted
CREATE OR REPLACE FUNCTION mo.tidy() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	NEW.user_id := lower(NEW.user_id);
	RETURN NEW;
END $$;
SELECT feed_events(2, ARRAY[
	ev('t7', 'Uma', '2026-04-10T11:00:00Z'),
	ev('t8', 'tia', '2026-04-10T11:01:00Z')]);
CALL clickstream.refresh();
SELECT gold_bad();
SELECT rows_read, rows_promoted, rows_duplicate, rows_rejected
FROM clickstream.refresh_history ORDER BY run_id DESC LIMIT 1;
SELECT reason, detail, kafka_offset FROM clickstream.dead_letters WHERE reason = 'rejected_by_silver';
SELECT event_id, user_id FROM clickstream.events WHERE event_id IN ('t7', 't8') ORDER BY 1;
DROP TRIGGER tidy ON clickstream.events;
-- a column of the user's on events: the rows go through COPY (which fills
-- its default) and are read back
ALTER TABLE clickstream.events ADD COLUMN note text DEFAULT 'mine';
SELECT feed_events(2, ARRAY[ev('t9', 'tia', '2026-04-10T11:05:00Z', 'page_view', 'category=Books')]);
CALL clickstream.refresh();
SELECT gold_bad();
SELECT event_id, category, note FROM clickstream.events WHERE event_id = 't9';
ALTER TABLE clickstream.events DROP COLUMN note;

-- Two replays in one transaction: the second added the first one's events
-- to the marts again (the step's events were only emptied at commit)
SELECT feed_events(2, ARRAY[
	ev('r1', 'rex', '2026-04-11T10:00:00Z', 'purchase', 'price=7', 'category=Books'),
	ev('r2', 'rex', '2026-04-11 10:05:00', 'page_view', 'category=Books')]);
CALL clickstream.refresh();
SELECT reason, count(*) FROM clickstream.dead_letters
WHERE reason IN ('purchase_without_order', 'timestamp_without_zone') GROUP BY 1 ORDER BY 1;
ALTER SYSTEM SET clickstream.require_order_id = off;
ALTER SYSTEM SET clickstream.timestamp_without_zone = 'utc';
SELECT pg_reload_conf();
SELECT pg_sleep(0.5);
BEGIN;
SELECT replayed, promoted FROM clickstream.replay_dead_letters(only_reason => 'purchase_without_order');
SELECT replayed, promoted FROM clickstream.replay_dead_letters(only_reason => 'timestamp_without_zone');
COMMIT;
SELECT gold_bad();
SELECT day, events, orders, revenue FROM clickstream.daily_metrics WHERE day = '2026-04-11';
ALTER SYSTEM RESET clickstream.require_order_id;
ALTER SYSTEM RESET clickstream.timestamp_without_zone;
SELECT pg_reload_conf();
SELECT pg_sleep(0.5);

-- A zone where local midnight happens twice (America/Havana, 1 November
-- 2026: 01:00 CDT back to 00:00 CST): a session of the day's first hour
-- kept its first touch when a late event merged two later sessions of the
-- day (the probe for the day's sessions started at the second midnight,
-- and traffic_daily lost the user)
ALTER SYSTEM SET clickstream.timezone = 'America/Havana';
SELECT pg_reload_conf();
SELECT pg_sleep(0.5);
SELECT feed_events(3, ARRAY[
	ev('h1', 'hal', '2026-11-01T04:30:00Z', 'page_view', 'utm_source=google'),
	ev('h2', 'hal', '2026-11-01T15:00:00Z', 'page_view'),
	ev('h3', 'hal', '2026-11-01T16:00:00Z', 'page_view')]);
CALL clickstream.refresh();
SELECT gold_bad();
SELECT feed_events(3, ARRAY[ev('h4', 'hal', '2026-11-01T15:30:00Z', 'page_view')]);
CALL clickstream.refresh();
SELECT gold_bad();
SELECT day, utm_source, sessions, users FROM clickstream.traffic_daily
WHERE day = '2026-11-01' ORDER BY 2;

-- A zone whose clocks skip less than an hour (Pacific/Chatham, 27 September
-- 2026 local: 02:45 to 03:45): local hours 3 (its last 15 minutes) and 4
-- are one row of hourly_metrics.  A user in both, seen in two refreshes,
-- was counted twice there; a third refresh in the row adds nobody
ALTER SYSTEM SET clickstream.timezone = 'Pacific/Chatham';
SELECT pg_reload_conf();
SELECT pg_sleep(0.5);
SELECT feed_events(3, ARRAY[ev('c1', 'cha', '2026-09-26T14:05:00Z', 'page_view')]);
CALL clickstream.refresh();
SELECT feed_events(3, ARRAY[ev('c2', 'cha', '2026-09-26T14:20:00Z', 'page_view'),
	ev('c3', 'chb', '2026-09-26T14:20:00Z', 'page_view')]);
CALL clickstream.refresh();
SELECT gold_bad();
SELECT feed_events(3, ARRAY[ev('c4', 'chb', '2026-09-26T14:10:00Z', 'page_view'),
	ev('c5', 'cha', '2026-09-26T15:10:00Z', 'page_view')]);
CALL clickstream.refresh();
SELECT gold_bad();
SELECT hour, day, events, users FROM clickstream.hourly_metrics
WHERE day = '2026-09-27' ORDER BY 1;
ALTER SYSTEM RESET clickstream.timezone;
SELECT pg_reload_conf();
SELECT pg_sleep(0.5);

SET client_min_messages = warning;
DROP SCHEMA mo CASCADE;
DROP EXTENSION clickstream;
