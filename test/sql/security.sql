-- Privileges and the search_path: only the owner writes the checks that
-- check_quality() runs as its caller (the reader role and a plain login
-- cannot, and check_quality() refuses to run while another role could);
-- a reader locks nothing but ACCESS SHARE; and a user's functions and
-- operators earlier in the search_path do not change what the refresh, gold
-- and the marts' helpers compute.
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS clickstream;	-- the reader test leaves it
DROP ROLE IF EXISTS regress_cs_login;
DROP ROLE IF EXISTS regress_cs_dash;
RESET client_min_messages;
CREATE EXTENSION clickstream;
SET clickstream.refresh_batch_size = 1000;
SET timezone = 'UTC';
CREATE ROLE regress_cs_login LOGIN;
CREATE ROLE regress_cs_dash LOGIN IN ROLE clickstream_reader;

-- Who may write the quality checks: nobody but the owner.
SELECT r AS role,
	   has_table_privilege(r, 'clickstream.quality_checks', 'SELECT') AS sel,
	   has_table_privilege(r, 'clickstream.quality_checks', 'INSERT, UPDATE, DELETE, TRUNCATE') AS write
FROM unnest(ARRAY['regress_cs_login', 'regress_cs_dash', 'clickstream_reader']) r ORDER BY 1;
SELECT grantee, privilege_type FROM information_schema.table_privileges
WHERE table_schema = 'clickstream' AND table_name = 'quality_checks' AND grantee <> current_user;
SET ROLE regress_cs_dash;
INSERT INTO clickstream.quality_checks (name, layer, description, query)
VALUES ('mine', 'silver', 'x', 'SELECT 0');
UPDATE clickstream.quality_checks SET query = 'SELECT 0';
RESET ROLE;
SET ROLE regress_cs_login;
INSERT INTO clickstream.quality_checks (name, layer, description, query)
VALUES ('mine', 'silver', 'x', 'SELECT 0');
RESET ROLE;

-- A write grant to a role that does not have the caller's rights stops
-- check_quality() before it runs anything; revoked, it runs.
GRANT USAGE ON SCHEMA clickstream TO regress_cs_login;
GRANT INSERT ON clickstream.quality_checks TO regress_cs_login;
SELECT count(*) FROM clickstream.check_quality();
REVOKE INSERT ON clickstream.quality_checks FROM regress_cs_login;
REVOKE USAGE ON SCHEMA clickstream FROM regress_cs_login;
SELECT count(*) > 0 AS ran, bool_and(passed) AS all_passed FROM clickstream.check_quality();

-- The reader locks what it reads in ACCESS SHARE mode only: no row locks,
-- no stronger table locks (which need UPDATE, DELETE or TRUNCATE).
SET ROLE regress_cs_dash;
BEGIN;
LOCK TABLE clickstream.refresh_history IN ACCESS SHARE MODE;
SELECT count(*) FROM clickstream.refresh_history;
SELECT run_id FROM clickstream.refresh_history FOR KEY SHARE;
ROLLBACK;
BEGIN;
LOCK TABLE clickstream.refresh_history IN ROW SHARE MODE;
ROLLBACK;
BEGIN;
LOCK TABLE clickstream.sessions IN SHARE MODE;
ROLLBACK;
RESET ROLE;
-- every table of the extension: the reader's strongest lock is ACCESS SHARE
SELECT c.relname FROM pg_class c
WHERE c.relnamespace = 'clickstream'::regnamespace AND c.relkind IN ('r', 'p')
	AND (has_table_privilege('clickstream_reader', c.oid, 'UPDATE, DELETE, TRUNCATE')
		 OR has_table_privilege('regress_cs_login', c.oid, 'SELECT, UPDATE, DELETE, TRUNCATE'));

-- Shadowing: a schema of the user's, first in the search_path, with a
-- better match than pg_catalog's for calls the extension makes.
CREATE SCHEMA evil;
CREATE FUNCTION evil.numeric_int_true(numeric, integer) RETURNS boolean
LANGUAGE sql IMMUTABLE AS 'SELECT true';
CREATE FUNCTION evil.numeric_int_false(numeric, integer) RETURNS boolean
LANGUAGE sql IMMUTABLE AS 'SELECT false';
CREATE OPERATOR evil.= (LEFTARG = numeric, RIGHTARG = integer, FUNCTION = evil.numeric_int_true);
CREATE OPERATOR evil.> (LEFTARG = numeric, RIGHTARG = integer, FUNCTION = evil.numeric_int_false);
CREATE OPERATOR evil.< (LEFTARG = numeric, RIGHTARG = integer, FUNCTION = evil.numeric_int_false);
CREATE FUNCTION evil.jsonb_build_array(text, text) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$ SELECT '["evil"]'::jsonb $$;
CREATE FUNCTION evil.jsonb_build_array(text, text, text) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$ SELECT '["evil"]'::jsonb $$;
CREATE FUNCTION evil.jsonb_build_object(text, text, text, text) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$ SELECT '{"evil": true}'::jsonb $$;
CREATE FUNCTION evil.unnest(text[]) RETURNS SETOF text
LANGUAGE sql IMMUTABLE AS $$ SELECT 'evil'::text $$;
CREATE FUNCTION evil.unnest(date[]) RETURNS SETOF date
LANGUAGE sql IMMUTABLE AS $$ SELECT date '1999-01-01' $$;
CREATE FUNCTION evil.current_setting(varchar) RETURNS text
LANGUAGE sql STABLE AS $$ SELECT 'Pacific/Kiritimati'::text $$;
CREATE FUNCTION evil.lower(varchar) RETURNS text
LANGUAGE sql IMMUTABLE AS $$ SELECT 'evil'::text $$;

-- the marts' inlined helpers
SET search_path = evil, public, clickstream;
SELECT clickstream.rate(1, 4) AS rate, clickstream.rate(1, 0) AS rate_of_zero,
	   clickstream.label('', '(none)') AS label,
	   clickstream.traffic_key('google', 'cpc', NULL) AS traffic_key,
	   clickstream.audience_key('FR', NULL) AS audience_key,
	   clickstream.order_key(NULL, 'e1') AS order_key,
	   clickstream.week_of('2026-04-09') AS week_of;
RESET search_path;

-- Events, promoted and turned into gold with the user's schema first in
-- the search_path; verify_gold() recomputes gold from silver and finds the
-- same (it runs with a safe search_path).
CREATE FUNCTION public.feed_security(evs text[]) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
	INSERT INTO clickstream.bronze (kafka_topic, kafka_partition, kafka_offset, payload)
	SELECT 'sec', 0, o - 1, convert_to(p, 'UTF8')
	FROM pg_catalog.unnest(evs) WITH ORDINALITY AS u(p, o);
	INSERT INTO clickstream.watermarks (topic, partition, durable_offset) VALUES ('sec', 0, 0);
	INSERT INTO clickstream.ingest_positions (topic, partition, next_offset)
	VALUES ('sec', 0, cardinality(evs));
END $$;
SELECT public.feed_security(ARRAY[
	'{"event_id": "s1", "user_id": "ann", "ts": "2026-04-06T10:00:00Z", "event_type": "page_view", "page_url": "/home", "utm_source": "google", "utm_medium": "cpc", "country": "FR"}',
	'{"event_id": "s2", "user_id": "ann", "ts": "2026-04-06T10:02:00Z", "event_type": "add_to_cart", "product_id": "p1", "category": "books", "price": 10}',
	'{"event_id": "s3", "user_id": "ann", "ts": "2026-04-06T10:05:00Z", "event_type": "purchase", "order_id": "o1", "product_id": "p1", "category": "books", "price": 10, "quantity": 2}',
	'{"event_id": "s4", "user_id": "bob", "ts": "2026-04-06T23:30:00Z", "event_type": "page_view", "page_url": "/home"}',
	'{"event_id": "s4", "user_id": "bob", "ts": "2026-04-06T23:30:00Z", "event_type": "page_view", "page_url": "/home"}',
	'{"event_id": "s5", "user_id": "bob", "ts": "2026-04-07T00:10:00Z", "event_type": "purchase", "order_id": "o2", "product_id": "p2", "category": "toys", "price": 5.5}',
	'not json']);
SET search_path = evil, public, clickstream;
CALL clickstream.refresh();
RESET search_path;
SELECT status, rows_read, rows_promoted, rows_duplicate, rows_rejected
FROM clickstream.refresh_history ORDER BY run_id DESC LIMIT 1;
SELECT event_id, event_date, user_id FROM clickstream.events ORDER BY 1;
SELECT coalesce(string_agg(mart, ' '), 'gold equals its recomputation') AS differs
FROM clickstream.verify_gold() WHERE NOT ok;
SELECT day, events, sessions, orders, revenue, conversion_rate FROM clickstream.daily_metrics ORDER BY 1;
SELECT day, utm_source, utm_medium, sessions FROM clickstream.traffic_daily ORDER BY 1, 2;
SELECT day, country, device, sessions FROM clickstream.audience_daily ORDER BY 1, 2, 3;
-- a rebuild and a dead-letter replay under the same search_path
SET search_path = evil, public, clickstream;
SELECT clickstream.rebuild_gold() AS sessions_rebuilt;
SELECT replayed, promoted, still_rejected FROM clickstream.replay_dead_letters();
SELECT count(*) > 0 AS ran, bool_and(passed) AS all_passed FROM clickstream.check_quality();
RESET search_path;
SELECT coalesce(string_agg(mart, ' '), 'gold equals its recomputation') AS differs
FROM clickstream.verify_gold() WHERE NOT ok;
SELECT day, events, sessions, orders, revenue, conversion_rate FROM clickstream.daily_metrics ORDER BY 1;

DROP SCHEMA evil CASCADE;
DROP FUNCTION public.feed_security(text[]);
DROP EXTENSION clickstream;
DROP ROLE regress_cs_login;
DROP ROLE regress_cs_dash;
