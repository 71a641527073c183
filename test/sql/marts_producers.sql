-- Gold marts fed by real producers: a hand-made case with known answers,
-- then a property test: a REES46-shaped random stream (event_time with
-- " UTC", view/cart/remove_from_cart/purchase, integer ids, no event id, no
-- order id) mixed with events in our own format with integer ids and field
-- and type aliases, exact duplicate rows, redeliveries in the other id
-- style, late events, random batch splits; verify_gold() finding nothing
-- after every refresh, and at the end the marts checked against the stream
-- as it was generated.
CREATE EXTENSION clickstream;
CREATE SCHEMA mp;
SET search_path = mp, public;
SET clickstream.refresh_batch_size = 1000;
SET timezone = 'UTC';
\pset null '(null)'

ALTER SYSTEM SET clickstream.field_aliases = 'ts=event_time, event_type=type, user_id=userId, category=category_code';
ALTER SYSTEM SET clickstream.event_type_aliases = 'page_view=view, add_to_cart=cart';
ALTER SYSTEM SET clickstream.event_id_fields = 'user_id,ts,event_type,product_id';
ALTER SYSTEM SET clickstream.require_order_id = off;
SELECT pg_reload_conf();
SELECT pg_sleep(0.5);
SELECT name, setting FROM pg_settings WHERE name IN ('clickstream.field_aliases',
	'clickstream.event_type_aliases', 'clickstream.event_id_fields', 'clickstream.require_order_id')
ORDER BY name;

SET regress.topic = 'mp';
\getenv abs_srcdir PG_ABS_SRCDIR
\i :abs_srcdir/sql/include/feed_events.sql
CREATE FUNCTION gold_bad() RETURNS text LANGUAGE sql AS $$
	SELECT coalesce(string_agg(format('%s(-%s,+%s)', mart, missing, unexpected), ' '), 'ok')
	FROM clickstream.verify_gold() WHERE NOT ok $$;

-- User 42 in both id styles: a REES46 view and purchase (no quantity, no
-- order id, an empty category_code), an event in our format with
-- "userId":"42", type "cart" and a category, the purchase again with string
-- ids (a duplicate), a view without product sent twice in one batch; an
-- order 981 whose lines come as 981 and "981" in different refreshes.
-- Product 7's category is "kitchen" (an empty category_code is none)
SELECT feed_events(0, ARRAY[
	'{"event_time":"2019-09-01 10:00:00 UTC","event_type":"view","product_id":7,"category_id":2103807459595387724,"category_code":"","brand":null,"price":5,"user_id":42,"user_session":"s42"}',
	'{"event_id":"h1","type":"cart","userId":"42","ts":"2019-09-01T10:01:00Z","product_id":"7","category":"kitchen","price":5}',
	'{"event_time":"2019-09-01 10:02:00 UTC","event_type":"purchase","product_id":7,"category_id":2103807459595387724,"category_code":"","brand":null,"price":5,"user_id":42,"user_session":"s42"}',
	'{"event_time":"2019-09-01 10:03:00 UTC","event_type":"view","user_id":42}',
	'{"event_time":"2019-09-01 10:03:00 UTC","event_type":"view","user_id":42}',
	'{"event_id":9001,"event_type":"purchase","user_id":42,"ts":"2019-09-01T10:04:00Z","product_id":8,"category":"books","price":3,"quantity":2,"order_id":981}']);
CALL clickstream.refresh();
SELECT feed_events(1, ARRAY[
	'{"event_time":"2019-09-01 10:02:00 UTC","event_type":"purchase","product_id":"7","category_id":2103807459595387724,"category_code":"","brand":null,"price":5,"user_id":"42","user_session":"s42"}',
	'{"event_id":"9002","event_type":"purchase","userId":"42","ts":"2019-09-01T10:05:00Z","product_id":"9","price":4,"order_id":"981"}']);
CALL clickstream.refresh();
SELECT sum(rows_read) AS rows_read, sum(rows_promoted) AS promoted, sum(rows_duplicate) AS duplicates,
	   sum(rows_rejected) AS rejected
FROM clickstream.refresh_history;
SELECT event_type, user_id, product_id, category, price, quantity, order_id, revenue
FROM clickstream.events ORDER BY ts;
SELECT order_id LIKE 'event:%' AS own_order, order_id = 'event:' || first_event_id AS keyed_by_event,
	   user_id, ordered_at, lines, units, revenue
FROM clickstream.orders ORDER BY ordered_at;
SELECT user_id, events, sessions, orders, revenue, days_active FROM clickstream.users;
SELECT day, events, page_views, users, sessions, orders, units, revenue, aov FROM clickstream.daily_metrics;
SELECT category, page_views, add_to_carts, purchases, units, revenue FROM clickstream.category_daily ORDER BY 1;
SELECT product_id, category, page_views, add_to_carts, purchases, units, revenue FROM clickstream.products ORDER BY 1;
SELECT product_id, category FROM clickstream.product_daily ORDER BY 1;
SELECT gold_bad();

-- Property test ---------------------------------------------------------------------

-- the stream as generated: one row per distinct event, with the payload
-- sent and the same event with its ids in the other style
CREATE TABLE truth (
	n int PRIMARY KEY,
	own boolean NOT NULL,		-- our format (with event_id), else REES46
	user_id text NOT NULL,
	ts timestamptz NOT NULL,
	event_type text NOT NULL,	-- canonical
	product_id text,
	category text,
	price numeric,
	quantity int,
	order_id text,
	quoted boolean NOT NULL,	-- user_id sent as a JSON string
	payload text NOT NULL,
	alt text NOT NULL
);
CREATE TABLE rounds (round int, events bigint, dead_letters bigint, bad text);
CREATE TABLE sent (round int, rows int);
-- user u: a REES46 id, every tenth beyond 2^53
CREATE FUNCTION uid(u int) RETURNS text LANGUAGE sql IMMUTABLE AS $$
	SELECT (CASE WHEN u % 10 = 0 THEN 9007199254740993 + u ELSE 541312140 + u END)::text $$;
-- a JSON integer, or the same as a string
CREATE FUNCTION js(v text, quoted boolean) RETURNS text LANGUAGE sql IMMUTABLE AS $$
	SELECT CASE WHEN quoted THEN '"' || v || '"' ELSE v END $$;

-- a new event n at about time "at" (15 % late, up to 20 days), recorded in
-- truth; its payload is returned.  A REES46 event whose derived id (user,
-- second, type, product) another event has is moved by a second: truth
-- holds distinct events only
CREATE FUNCTION new_event(n int, at timestamptz, nusers int) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
	u int := 1 + floor(random() * nusers)::int;
	usr text := uid(u);
	own boolean := random() < 0.25;
	p int := 1 + floor(random() * 20)::int;
	prod text := CASE WHEN random() < 0.9 THEN (44600000 + p)::text END;
	t timestamptz := at + random() * interval '40 minutes'
		- CASE WHEN random() < 0.15 THEN random() * interval '20 days' ELSE interval '0' END;
	typ text;
	sent_typ text;
	cat text;
	cat_json text;
	price numeric := CASE WHEN prod IS NOT NULL AND random() < 0.85 THEN round(5 + (p * 37 % 500) / 7.0, 2) END;
	qty int;
	oid text;
	quoted boolean := false;
	ids_quoted boolean := false;
	eid text := (500000 + n)::text;
	o text;
	a text;
	extra text := '';
BEGIN
	IF NOT own THEN
		typ := (ARRAY['view', 'view', 'view', 'view', 'view', 'view', 'view', 'cart', 'cart',
			'remove_from_cart', 'purchase', 'purchase'])[1 + floor(random() * 12)::int];
		sent_typ := typ;
		typ := CASE typ WHEN 'view' THEN 'page_view' WHEN 'cart' THEN 'add_to_cart' ELSE typ END;
		IF typ = 'purchase' THEN
			IF prod IS NULL THEN prod := (44600000 + p)::text; END IF;
			price := coalesce(price, round(5 + (p * 37 % 500) / 7.0, 2));
		END IF;
		t := date_trunc('second', t);
		WHILE EXISTS (SELECT 1 FROM truth x WHERE NOT x.own AND x.user_id = usr AND x.ts = t
					  AND x.event_type = typ AND x.product_id IS NOT DISTINCT FROM prod) LOOP
			t := t + interval '1 second';
		END LOOP;
		cat := (ARRAY['electronics.smartphone', 'appliances.kitchen.washer', '', NULL])[1 + p % 4];
		cat_json := CASE WHEN cat IS NULL THEN CASE WHEN random() < 0.5 THEN 'null' END ELSE '"' || cat || '"' END;
		-- the same row, with ids as JSON integers (o) or strings (a)
		FOR k IN 0..1 LOOP
			a := '{"event_time":"' || to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') || ' UTC","event_type":"' || sent_typ || '"';
			IF prod IS NOT NULL THEN
				a := a || ',"product_id":' || js(prod, k = 1) || ',"category_id":' || (2103807459595387724 + p % 5);
			END IF;
			IF cat_json IS NOT NULL THEN a := a || ',"category_code":' || cat_json; END IF;
			a := a || ',"brand":' || CASE WHEN p % 3 = 0 THEN 'null' ELSE '"brand' || p % 3 || '"' END;
			IF price IS NOT NULL THEN a := a || ',"price":' || price; END IF;
			a := a || ',"user_id":' || js(usr, k = 1) || ',"user_session":"' || md5(usr || to_char(t, 'YYYYMMDDHH24')) || '"}';
			IF k = 0 THEN o := a; END IF;
		END LOOP;
		cat := nullif(cat, '');
	ELSE
		-- our format: event_id, user_id, product_id, order_id as integers or
		-- strings, event_type or type (with the aliases), user_id or userId
		typ := (ARRAY['page_view', 'page_view', 'page_view', 'add_to_cart', 'remove_from_cart',
			'begin_checkout', 'purchase', 'purchase', 'search'])[1 + floor(random() * 9)::int];
		quoted := random() < 0.6;
		ids_quoted := random() < 0.5;
		sent_typ := CASE WHEN random() < 0.5 THEN CASE typ WHEN 'page_view' THEN 'view' WHEN 'add_to_cart' THEN 'cart' ELSE typ END
			ELSE typ END;
		t := date_trunc('milliseconds', t);
		IF typ IN ('search', 'begin_checkout') THEN prod := NULL; price := NULL; END IF;
		IF prod IS NOT NULL AND random() < 0.8 THEN cat := 'c' || p % 4; END IF;
		IF typ = 'purchase' THEN
			price := coalesce(price, 7);
			IF random() < 0.6 THEN qty := 1 + floor(random() * 3)::int; END IF;
			IF random() < 0.7 THEN oid := (u * 10 + floor(random() * 2)::int)::text; END IF;
		END IF;
		extra := CASE WHEN random() < 0.8 THEN ',"page_url":"/page' || floor(random() * 4)::int || '"' ELSE '' END
			|| CASE WHEN random() < 0.3 THEN ',"utm_source":"' || (ARRAY['google', 'bing'])[1 + floor(random() * 2)::int] || '"' ELSE '' END
			|| CASE WHEN random() < 0.7 THEN ',"country":"' || (ARRAY['FR', 'US'])[1 + floor(random() * 2)::int] || '"' ELSE '' END;
		FOR k IN 0..1 LOOP
			a := '{"event_id":' || js(eid, ids_quoted <> (k = 1))
				|| CASE WHEN sent_typ <> typ OR random() < 0.3 THEN ',"type":"' ELSE ',"event_type":"' END || sent_typ || '"'
				|| CASE WHEN random() < 0.5 THEN ',"userId":' ELSE ',"user_id":' END || js(usr, quoted)
				|| ',"ts":"' || to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') || '"'
				|| CASE WHEN prod IS NOT NULL THEN ',"product_id":' || js(prod, ids_quoted) ELSE '' END
				|| CASE WHEN cat IS NOT NULL THEN ',"category":"' || cat || '"' ELSE '' END
				|| CASE WHEN price IS NOT NULL THEN ',"price":' || price ELSE '' END
				|| CASE WHEN qty IS NOT NULL THEN ',"quantity":' || qty || CASE WHEN k = 1 THEN '.0' ELSE '' END ELSE '' END
				|| CASE WHEN oid IS NOT NULL THEN ',"order_id":' || js(oid, ids_quoted <> (k = 1)) ELSE '' END
				|| extra || '}';
			IF k = 0 THEN o := a; END IF;
		END LOOP;
	END IF;
	INSERT INTO truth VALUES (n, own, usr, t, typ, prod, cat, price, qty, oid, quoted, o, a);
	RETURN o;
END $$;

-- rounds of 1-3 random batches of 1-50 new events over three partitions,
-- some rows twice in a batch, redeliveries of older events (as sent or in
-- the other id style), then a refresh and verify_gold()
CREATE PROCEDURE property(first int, last int, nusers int DEFAULT 60) LANGUAGE plpgsql AS $$
DECLARE
	evs text[];
	n int := (SELECT coalesce(max(x.n), 0) FROM truth x);
	base timestamptz := '2019-10-01 00:00 UTC';
	pick int;
BEGIN
	FOR r IN first..last LOOP
		FOR k IN 1..(1 + floor(random() * 3)::int) LOOP
			evs := '{}';
			FOR g IN 1..(1 + floor(random() * 50)::int) LOOP
				n := n + 1;
				evs := evs || new_event(n, base + n * interval '7 minutes', nusers);
				IF random() < 0.04 THEN
					evs := evs || evs[cardinality(evs)];
				END IF;
			END LOOP;
			IF random() < 0.6 THEN
				FOR d IN 1..(1 + floor(random() * 4)::int) LOOP
					pick := 1 + floor(random() * n)::int;
					evs := evs || (SELECT CASE WHEN random() < 0.5 THEN payload ELSE alt END FROM truth WHERE truth.n = pick);
				END LOOP;
			END IF;
			PERFORM feed_events(floor(random() * 3)::int, evs);
			INSERT INTO sent VALUES (r, cardinality(evs));
		END LOOP;
		COMMIT;
		CALL clickstream.refresh();
		INSERT INTO rounds SELECT r, (SELECT count(*) FROM clickstream.events),
			(SELECT count(*) FROM clickstream.dead_letters), gold_bad();
		COMMIT;
	END LOOP;
END $$;

SELECT max(run_id) AS hand_runs FROM clickstream.refresh_history \gset
SELECT setseed(0.15);
CALL property(1, 40);
SELECT count(*) AS refreshes, min(events) > 0 AS events, max(events) > 1000 AS many,
	   max(dead_letters) AS dead_letters,
	   count(*) FILTER (WHERE bad <> 'ok') AS refreshes_with_differences
FROM rounds;
SELECT round, bad FROM rounds WHERE bad <> 'ok';

-- what the stream exercised
SELECT count(*) FILTER (WHERE NOT own) > 500 AS rees46, count(*) FILTER (WHERE own) > 200 AS own_format,
	   count(*) FILTER (WHERE NOT own AND event_type = 'purchase') > 50 AS purchases_without_order,
	   count(*) FILTER (WHERE own AND event_type = 'purchase' AND quantity IS NULL) > 10 AS without_quantity,
	   count(*) FILTER (WHERE product_id IS NULL) > 50 AS without_product,
	   count(*) FILTER (WHERE category IS NULL) > 100 AS without_category,
	   count(*) FILTER (WHERE ts < timestamptz '2019-10-01 00:00 UTC' + n * interval '7 minutes' - interval '1 day') > 100 AS late,
	   count(*) FILTER (WHERE user_id::numeric > 9007199254740992) > 50 AS beyond_2_53,
	   (SELECT count(*) FROM (SELECT user_id FROM truth GROUP BY 1 HAVING bool_or(quoted) AND NOT bool_and(quoted)) s) > 20
		   AS users_in_both_styles
FROM truth;
SELECT (SELECT sum(rows) FROM sent) - (SELECT count(*) FROM truth) > 100 AS duplicates_sent,
	   (SELECT count(*) FROM clickstream.orders WHERE lines > 1) > 10 AS multi_line_orders,
	   (SELECT count(*) FROM clickstream.orders o JOIN clickstream.events e ON e.order_id = o.order_id
		WHERE e.event_date <> o.day) > 0 AS orders_over_two_days,
	   (SELECT count(*) FROM clickstream.refresh_history WHERE run_id > :hand_runs AND rows_duplicate > 0) > 10 AS redeliveries,
	   (SELECT max(events) FROM clickstream.sessions) > 5 AS long_sessions;

-- silver: every distinct event once, every copy a duplicate, none refused
SELECT sum(rows_read) = (SELECT sum(rows) FROM sent) AS all_read,
	   sum(rows_promoted) = (SELECT count(*) FROM truth) AS promoted_distinct,
	   sum(rows_duplicate) = (SELECT sum(rows) FROM sent) - (SELECT count(*) FROM truth) AS duplicates,
	   sum(rows_rejected) AS rejected
FROM clickstream.refresh_history WHERE run_id > :hand_runs;
SELECT count(*) AS events_not_as_sent FROM (
	(SELECT user_id, ts, event_type, product_id, nullif(category, ''), price, quantity, order_id
	 FROM clickstream.events WHERE kafka_topic = 'mp' AND event_date > '2019-09-01'
	 EXCEPT ALL
	 SELECT user_id, ts, event_type, product_id, category, price, quantity, order_id FROM truth)
	UNION ALL
	(SELECT user_id, ts, event_type, product_id, category, price, quantity, order_id FROM truth
	 EXCEPT ALL
	 SELECT user_id, ts, event_type, product_id, nullif(category, ''), price, quantity, order_id
	 FROM clickstream.events WHERE kafka_topic = 'mp' AND event_date > '2019-09-01')) d;

-- users: one row per user whatever the id style, with all its events
SELECT (SELECT count(*) FROM clickstream.users WHERE user_id <> '42') = (SELECT count(DISTINCT user_id) FROM truth) AS one_row_per_user,
	   (SELECT count(*) FROM clickstream.users WHERE user_id !~ '^[0-9]+$') AS not_decimal,
	   (SELECT count(*) FROM (SELECT user_id, count(*) FROM truth GROUP BY 1
							  EXCEPT SELECT user_id, events FROM clickstream.users) d) AS users_with_other_counts;
-- orders: each purchase without order id an order of its own, one line;
-- the others one order per order id (integer or string), counted once
SELECT (SELECT count(*) FROM clickstream.orders WHERE order_id LIKE 'event:%' AND user_id <> '42')
		   = (SELECT count(*) FROM truth WHERE event_type = 'purchase' AND order_id IS NULL) AS one_order_each,
	   (SELECT bool_and(lines = 1 AND order_id = 'event:' || first_event_id)
		FROM clickstream.orders WHERE order_id LIKE 'event:%' AND user_id <> '42') AS single_lines,
	   (SELECT count(*) FROM (SELECT order_id, count(*)::int, sum(coalesce(quantity, 1))::int, sum(price * coalesce(quantity, 1))
							  FROM truth WHERE order_id IS NOT NULL GROUP BY 1
							  EXCEPT
							  SELECT order_id, lines, units, revenue FROM clickstream.orders
							  WHERE order_id NOT LIKE 'event:%' AND order_id <> '981') d) AS orders_with_other_lines,
	   (SELECT sum(orders) FROM clickstream.daily_metrics WHERE day > '2019-09-01')
		   = (SELECT count(DISTINCT coalesce(order_id, 'n' || n)) FROM truth WHERE event_type = 'purchase') AS orders_counted_once;
-- revenue: price x quantity (1 when absent) of the distinct purchases, per day
SELECT (SELECT sum(revenue) FROM clickstream.daily_metrics WHERE day > '2019-09-01')
		   = (SELECT sum(price * coalesce(quantity, 1)) FROM truth WHERE event_type = 'purchase') AS revenue,
	   (SELECT count(*) FROM (SELECT day, revenue, units FROM clickstream.daily_metrics WHERE day > '2019-09-01' AND revenue <> 0
							  EXCEPT
							  SELECT (ts AT TIME ZONE 'UTC')::date, sum(price * coalesce(quantity, 1)), sum(coalesce(quantity, 1))
							  FROM truth WHERE event_type = 'purchase' GROUP BY 1) d) AS days_with_other_revenue,
	   (SELECT sum(revenue) FROM clickstream.users WHERE user_id <> '42')
		   = (SELECT sum(price * coalesce(quantity, 1)) FROM truth WHERE event_type = 'purchase') AS lifetime_value;
-- products and categories: integer and string product ids are one product;
-- REES46's empty category_code is no category: (not set) in category_daily,
-- not a product's category
SELECT (SELECT count(*) FROM clickstream.products WHERE product_id NOT IN ('7', '8', '9'))
		   = (SELECT count(DISTINCT product_id) FROM truth) AS one_row_per_product,
	   (SELECT count(*) FROM (SELECT product_id, count(*) FILTER (WHERE event_type = 'page_view')::int,
									 count(*) FILTER (WHERE event_type = 'purchase')::int
							  FROM truth WHERE product_id IS NOT NULL GROUP BY 1
							  EXCEPT SELECT product_id, page_views, purchases FROM clickstream.products) d) AS products_with_other_counts,
	   (SELECT sum(page_views) FROM clickstream.category_daily WHERE category = '(not set)' AND day > '2019-09-01')
		   = (SELECT count(*) FROM truth WHERE event_type = 'page_view' AND category IS NULL) AS not_set_category,
	   (SELECT count(*) FROM (SELECT product_id, min(category) FROM truth WHERE product_id IS NOT NULL GROUP BY 1
							  EXCEPT SELECT product_id, category FROM clickstream.products) d) AS products_with_other_category,
	   (SELECT count(*) FROM (SELECT (ts AT TIME ZONE 'UTC')::date, product_id, min(category) FROM truth
							  WHERE product_id IS NOT NULL GROUP BY 1, 2
							  EXCEPT SELECT day, product_id, category FROM clickstream.product_daily) d) AS product_days_with_other_category;
-- the funnels agree: an empty category or product is none there too
SELECT (SELECT count(*) FROM clickstream.sessions WHERE category_funnel ? '' OR product_funnel ? '') AS sessions_with_empty_keys,
	   (SELECT count(*) FROM clickstream.funnel_by_category WHERE category = '') AS empty_category_funnels,
	   (SELECT count(*) FROM clickstream.product_funnel WHERE product_id = '') AS empty_product_funnels,
	   (SELECT string_agg(DISTINCT category, ',') FROM clickstream.product_funnel WHERE product_id = '7') AS product_7_funnel_category;
SELECT * FROM clickstream.verify_gold() WHERE NOT ok;
SELECT check_name, failures FROM clickstream.check_quality() WHERE NOT passed AND severity = 'error';

ALTER SYSTEM RESET clickstream.field_aliases;
ALTER SYSTEM RESET clickstream.event_type_aliases;
ALTER SYSTEM RESET clickstream.event_id_fields;
ALTER SYSTEM RESET clickstream.require_order_id;
SELECT pg_reload_conf();
SET client_min_messages = warning;
DROP SCHEMA mp CASCADE;
DROP EXTENSION clickstream;
