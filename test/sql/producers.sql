-- What real producers send: integer ids, other field and event type names,
-- timestamp styles and epoch units, derived event ids, purchases without an
-- order; the settings' parsing and errors; replaying dead letters after a
-- fix; a REES46-shaped stream through silver, the sessions and the marts;
-- and a fuzzing corpus that never makes the parser raise an error.
CREATE EXTENSION clickstream;
CREATE SCHEMA pr;
SET search_path = pr, public;
SET timezone = 'UTC';
\pset null '(null)'

-- parse one payload (text) and show what matters
CREATE FUNCTION p(j text) RETURNS clickstream.parsed_event
LANGUAGE sql AS $$ SELECT clickstream.parse_event(convert_to(j, 'UTF8')) $$;
-- an event with the given extra members
CREATE FUNCTION e(extra text) RETURNS text
LANGUAGE sql AS $$ SELECT '{"event_id":"e1","event_type":"page_view","user_id":"u1","ts":"2026-01-15T10:00:00Z"' || extra || '}' $$;

-- the settings: names, contexts, defaults
SELECT name, setting, context, vartype, enumvals FROM pg_settings
WHERE name IN ('clickstream.field_aliases', 'clickstream.event_type_aliases',
	'clickstream.timestamp_without_zone', 'clickstream.epoch_unit',
	'clickstream.event_id_fields', 'clickstream.require_order_id',
	'clickstream.kafka_options_file')
ORDER BY name;
-- they are server settings: not per session
SET clickstream.field_aliases = 'ts=event_time';

-- the settings' errors name the setting, say what is wrong, and hint
ALTER SYSTEM SET clickstream.field_aliases = 'tss=event_time';
ALTER SYSTEM SET clickstream.field_aliases = 'ts';
ALTER SYSTEM SET clickstream.field_aliases = '=event_time';
ALTER SYSTEM SET clickstream.field_aliases = 'ts=event_time|';
ALTER SYSTEM SET clickstream.field_aliases = 'ts=user_id';
ALTER SYSTEM SET clickstream.field_aliases = 'ts=event_time, user_id=event_time';
ALTER SYSTEM SET clickstream.field_aliases = 'ts=a|a';
ALTER SYSTEM SET clickstream.field_aliases = 'ts=a, ts=b';
ALTER SYSTEM SET clickstream.event_type_aliases = 'page_view';
ALTER SYSTEM SET clickstream.event_type_aliases = 'page_view=view, view=pageview';
ALTER SYSTEM SET clickstream.event_type_aliases = 'page_view=view, add_to_cart=view';
ALTER SYSTEM SET clickstream.event_type_aliases = 'page_view=view, page_view=pv';
ALTER SYSTEM SET clickstream.event_id_fields = 'user_id,tss';
ALTER SYSTEM SET clickstream.event_id_fields = 'user_id,event_id';
ALTER SYSTEM SET clickstream.event_id_fields = 'user_id,ts,user_id';
ALTER SYSTEM SET clickstream.timestamp_without_zone = 'guess';
ALTER SYSTEM SET clickstream.epoch_unit = 'ns';
-- names longer than an identifier may be
SELECT 'ts=' || repeat('x', 513) AS long_alias \gset
ALTER SYSTEM SET clickstream.field_aliases = :'long_alias';

-- Accepted and refused forms with the default settings ------------------

-- identifier fields as JSON integers: their exact decimal text, every digit
SELECT n, (x).reason, (x).detail, (x).event_id, (x).event_type, left((x).user_id, 45) AS user_id,
	   length((x).user_id) AS user_id_length, (x).product_id, (x).category, (x).order_id,
	   (x).utm_source, (x).device
FROM (VALUES
 (1, p('{"event_id":123,"event_type":"page_view","user_id":12345,"ts":"2026-01-15T10:00:00Z","product_id":42}')),
 (2, p('{"event_id":"e","event_type":"page_view","user_id":9007199254740993,"ts":"2026-01-15T10:00:00Z","category":2103807459595387724}')),
 (3, p('{"event_id":"e","event_type":"page_view","user_id":123456789012345678901234567890123456789,"ts":"2026-01-15T10:00:00Z"}')),
 (4, p('{"event_id":"e","event_type":"page_view","user_id":-0,"ts":"2026-01-15T10:00:00Z","utm_source":-17,"device":0}')),
 (5, p('{"event_id":"e","event_type":7,"user_id":"u","ts":"2026-01-15T10:00:00Z"}')),
 (6, p('{"event_id":"e","event_type":"purchase","user_id":"u","ts":"2026-01-15T10:00:00Z","price":1,"order_id":981}')),
 (7, p('{"event_id":"e","event_type":"page_view","user_id":1.5,"ts":"2026-01-15T10:00:00Z"}')),
 (8, p('{"event_id":"e","event_type":"page_view","user_id":1e3,"ts":"2026-01-15T10:00:00Z"}')),
 (9, p('{"event_id":"e","event_type":"page_view","user_id":1.0,"ts":"2026-01-15T10:00:00Z"}')),
 (10, p('{"event_id":"e","event_type":"page_view","user_id":true,"ts":"2026-01-15T10:00:00Z"}')),
 (11, p('{"event_id":"e","event_type":"page_view","user_id":false,"ts":"2026-01-15T10:00:00Z"}')),
 (12, p('{"event_id":"e","event_type":"page_view","user_id":{"id":1},"ts":"2026-01-15T10:00:00Z"}')),
 (13, p('{"event_id":"e","event_type":"page_view","user_id":[1],"ts":"2026-01-15T10:00:00Z"}')),
 (14, p('{"event_id":"e","event_type":"page_view","user_id":"u","ts":"2026-01-15T10:00:00Z","product_id":4.2}')),
 (15, p('{"event_id":"e","event_type":"page_view","user_id":' || repeat('9', 513) || ',"ts":"2026-01-15T10:00:00Z"}')),
 (16, p('{"event_id":"e","event_type":"page_view","user_id":' || repeat('9', 512) || ',"ts":"2026-01-15T10:00:00Z"}'))
) v(n, x) ORDER BY n;
-- 42 and "42" are the same user, product and event
SELECT p('{"event_id":42,"event_type":"page_view","user_id":42,"ts":"2026-01-15T10:00:00Z","product_id":42}')
	IS NOT DISTINCT FROM
	   p('{"event_id":"42","event_type":"page_view","user_id":"42","ts":"2026-01-15T10:00:00Z","product_id":"42"}')
	AS same_event;

-- timestamps: zones, UTC and GMT, no zone (refused by default), epochs
SELECT n, (x).reason, (x).detail, to_char((x).ts, 'YYYY-MM-DD HH24:MI:SS.US') AS ts_utc
FROM (VALUES
 (1, p(e(',"ts":"2019-10-01 00:00:04 UTC"'))),
 (2, p(e(',"ts":"2019-10-01 00:00:04.123 GMT"'))),
 (3, p(e(',"ts":"2019-10-01T00:00:04UTC"'))),
 (4, p(e(',"ts":"2019-10-01 00:00:04 +02:00"'))),
 (5, p(e(',"ts":"2019-10-01 00:00:04 Z"'))),
 (6, p(e(',"ts":"2019-10-01 00:00:04"'))),
 (7, p(e(',"ts":"2019-10-01T00:00:04.5"'))),
 (8, p(e(',"ts":"2019-10-01 00:00:04 "'))),
 (9, p(e(',"ts":"2019-10-01 00:00:04  UTC"'))),
 (10, p(e(',"ts":"2019-10-01 00:00:04 utc"'))),
 (11, p(e(',"ts":"2019-10-01 00:00:04 CET"'))),
 (12, p(e(',"ts":1569888004123'))),
 (13, p(e(',"ts":"1569888004123"'))),
 (14, p(e(',"ts":1.569888004123e12'))),
 (15, p(e(',"ts":"1.5698880041235e12"'))),
 (16, p(e(',"ts":1569888004123.0000009'))),
 (17, p(e(',"ts":-1.5'))),
 (18, p(e(',"ts":"-1"'))),
 (19, p(e(',"ts":1e400'))),
 (20, p(e(',"ts":"1e9999999999"'))),
 (21, p(e(',"ts":"+1569888004123"'))),
 (22, p(e(',"ts":"1569888004123 "')))
) v(n, x) ORDER BY n;

-- epoch numbers must fall within 1973-03-03 09:46:40 and 5138-11-16 09:46:40
-- UTC in clickstream.epoch_unit (1e11 to 1e14 ms): a number in another unit
-- (seconds, microseconds) is refused, never misdated, and the detail names the
-- unit it fits; ISO strings keep years 1 to 9999
SELECT n, (x).reason, (x).detail, to_char((x).ts, 'YYYY-MM-DD HH24:MI:SS.US') AS ts_utc
FROM (VALUES
 (1, p(e(',"ts":1764496800'))),
 (2, p(e(',"ts":"1764496800"'))),
 (3, p(e(',"ts":1764496800.5'))),
 (4, p(e(',"ts":1764496800000000'))),
 (5, p(e(',"ts":0'))),
 (6, p(e(',"ts":-1764496800000'))),
 (7, p(e(',"ts":1e20'))),
 (8, p(e(',"ts":100000000000'))),
 (9, p(e(',"ts":99999999999.999'))),
 (10, p(e(',"ts":99999999999999.999'))),
 (11, p(e(',"ts":1e14'))),
 (12, p(e(',"ts":"1950-06-01T00:00:00Z"'))),
 (13, p(e(',"ts":"0001-01-01T00:00:00Z"')))
) v(n, x) ORDER BY n;

-- quantity: one exact rule, whatever the notation
SELECT n, q, (x).reason, (x).detail, (x).quantity
FROM (VALUES (1, '2'), (2, '2.0'), (3, '2e0'), (4, '20e-1'), (5, '0.2E+1'), (6, '2.0000000000000001'),
			 (7, '2.0000000000000001e0'), (8, '1e-1'), (9, '0'), (10, '-3'), (11, '2147483647'),
			 (12, '2147483648'), (13, '1e30'), (14, '-0.0'), (15, '12.5e-1')) q(n, q),
	 LATERAL p(e(',"quantity":' || q)) x
ORDER BY n;

-- price and quantity as strings holding exactly a JSON number (CSV exports),
-- read by the same rules as numbers; "" is an empty cell: absent
SELECT n, (x).reason, (x).detail, (x).price, (x).quantity, (x).revenue
FROM (VALUES
 (1, p(e(',"price":"35.79","quantity":"2"'))),
 (2, p(e(',"price":"3579e-2","quantity":"20e-1"'))),
 (3, p(e(',"price":"\u0033\u0035.790","quantity":"\u0032"'))),
 (4, p(e(',"price":"","quantity":""'))),
 (5, p(e(',"price":"0","quantity":"2147483647"'))),
 (6, p(e(',"price":"abc"'))),
 (7, p(e(',"price":" 1"'))),
 (8, p(e(',"price":"1 "'))),
 (9, p(e(',"price":"+1"'))),
 (10, p(e(',"price":"0x1A"'))),
 (11, p(e(',"price":"01"'))),
 (12, p(e(',"price":".5"'))),
 (13, p(e(',"price":"1."'))),
 (14, p(e(',"price":"-"'))),
 (15, p(e(',"price":"-1"'))),
 (16, p(e(',"price":"1000000000000000.01"'))),
 (17, p(e(',"price":"1e2000"'))),
 (18, p(e(',"price":true'))),
 (19, p(e(',"quantity":"2.5"'))),
 (20, p(e(',"quantity":"0"'))),
 (21, p(e(',"quantity":"NaN"'))),
 (22, p(e(',"quantity":[2]'))),
 (23, p('{"event_id":"e","event_type":"purchase","user_id":"u","ts":"2026-01-15T10:00:00Z","order_id":"o1","price":"12.50","quantity":"3"}')),
 (24, p('{"event_id":"e","event_type":"purchase","user_id":"u","ts":"2026-01-15T10:00:00Z","order_id":"o1","price":"","quantity":"3"}'))
) v(n, x) ORDER BY n;

-- purchases: a price is required; an order_id too (by default), which may be an integer
SELECT n, (x).reason, (x).detail, (x).order_id, (x).price, (x).revenue
FROM (VALUES
 (1, p('{"event_id":"e","event_type":"purchase","user_id":"u","ts":"2026-01-15T10:00:00Z","order_id":"o1"}')),
 (2, p('{"event_id":"e","event_type":"purchase","user_id":"u","ts":"2026-01-15T10:00:00Z","order_id":"o1","price":null}')),
 (3, p('{"event_id":"e","event_type":"purchase","user_id":"u","ts":"2026-01-15T10:00:00Z","order_id":"o1","price":0}')),
 (4, p('{"event_id":"e","event_type":"purchase","user_id":"u","ts":"2026-01-15T10:00:00Z","price":3}')),
 (5, p('{"event_id":"e","event_type":"purchase","user_id":"u","ts":"2026-01-15T10:00:00Z","price":3,"order_id":""}')),
 (6, p('{"event_id":"e","event_type":"purchase","user_id":"u","ts":"2026-01-15T10:00:00Z","price":3,"order_id":17,"quantity":2}')),
 (7, p('{"event_id":"e","event_type":"add_to_cart","user_id":"u","ts":"2026-01-15T10:00:00Z"}'))
) v(n, x) ORDER BY n;

-- without event_id_fields, event_id stays required
SELECT (p('{"event_type":"page_view","user_id":"u","ts":"2026-01-15T10:00:00Z"}')).reason;

-- Settings applied ----------------------------------------------------------

ALTER SYSTEM SET clickstream.field_aliases = 'ts=event_time|timestamp, user_id=userId|uid, category=category_code, event_type=type';
ALTER SYSTEM SET clickstream.event_type_aliases = 'page_view=view|pageview, add_to_cart=cart, purchase=order_completed';
ALTER SYSTEM SET clickstream.event_id_fields = ' user_id , ts,event_type, product_id ,price,quantity';
ALTER SYSTEM SET clickstream.timestamp_without_zone = 'utc';
ALTER SYSTEM SET clickstream.epoch_unit = 's';
SELECT pg_reload_conf();
SELECT pg_sleep(0.5);
SELECT name, setting FROM pg_settings WHERE name IN ('clickstream.field_aliases',
	'clickstream.event_type_aliases', 'clickstream.event_id_fields',
	'clickstream.timestamp_without_zone', 'clickstream.epoch_unit') ORDER BY name;

-- field aliases: a value beats null, the canonical name beats its aliases,
-- the alias listed first beats the next; the names that lose stay in attrs;
-- keys compare exactly, after JSON unescaping
SELECT n, (x).reason, (x).detail, (x).user_id, to_char((x).ts, 'YYYY-MM-DD HH24:MI:SS') AS ts,
	   (x).event_type, (x).category, (x).attrs
FROM (VALUES
 (1, p('{"event_id":"a","type":"view","userId":7,"event_time":"2019-10-01 00:00:04 UTC","category_code":"a.b"}')),
 (2, p('{"event_id":"a","event_type":"page_view","uid":1,"userId":2,"user_id":3,"timestamp":1569888005,"event_time":1569888006,"ts":null}')),
 (3, p('{"event_id":"a","event_type":"page_view","uid":1,"userId":2,"timestamp":1569888005,"ts":1569888007,"event_time":1569888006}')),
 (4, p('{"event_id":"a","event_type":"page_view","user_id":null,"uid":"x","ts":1569888001}')),
 (5, p('{"event_id":"a","event_type":"page_view","uid":"x","uid":"y","ts":1569888001}')),
 (6, p('{"event_id":"a","event_type":"page_view","event\u005ftime":1569888001,"UserId":"x","uid":"z"}')),
 (7, p('{"event_id":"a","event_type":"page_view","user_id":"u","Event_Time":1}')),
 (8, p('{"event_id":"a","event_type":"page_view","userId":1.5,"ts":1569888001}')),
 (9, p('{"event_id":"a","event_type":"page_view","userId":"","ts":1569888001}')),
 (10, p('{"event_id":"a","event_type":"page_view","uid":"u","event_time":"2019-10-01 00:00:04"}'))
) v(n, x) ORDER BY n;

-- path aliases (a dot): fields nested in objects, as Segment and RudderStack
-- send them; the objects stay in attrs whole
ALTER SYSTEM SET clickstream.field_aliases = 'event_id=messageId, event_type=event, user_id=userId|anonymousId, ts=timestamp, price=properties.price, quantity=properties.quantity, product_id=properties.product_id, order_id=properties.order_id, page_url=context.page.url, utm_source=context.campaign.source, category=properties.category|properties.product.category';
SELECT pg_reload_conf();
SELECT pg_sleep(0.5);
SELECT n, (x).reason, (x).detail, (x).event_id, (x).user_id, (x).price, (x).quantity, (x).product_id,
	   (x).order_id, (x).page_url, (x).utm_source, (x).category, (x).revenue, (x).attrs
FROM (VALUES
 (1, p('{"messageId":"m1","event":"Order Completed","userId":123,"timestamp":"2026-01-15T10:00:00Z","properties":{"order_id":"o1","price":9.99,"product_id":"p1"},"context":{"page":{"url":"https://x"},"campaign":{"source":"google"}}}')),
 (2, p('{"messageId":"m2","event":"purchase","anonymousId":"a1","timestamp":"2026-01-15T10:00:00Z","properties":{"order_id":"o1","price":"2.50","quantity":"4"}}')),
 (3, p('{"messageId":"m3","event":"purchase","userId":"u","timestamp":"2026-01-15T10:00:00Z","properties":{"order_id":"o1"}}')),
 (4, p('{"messageId":"m4","event":"page","userId":"u","timestamp":"2026-01-15T10:00:00Z","properties":5,"context":[{"page":{"url":"https://x"}}]}')),
 (5, p('{"messageId":"m5","event":"page","userId":"u","timestamp":"2026-01-15T10:00:00Z","context":{"page":"https://x","campaign":{"source":null}}}')),
 (6, p('{"messageId":"m6","event":"page","userId":"u","timestamp":"2026-01-15T10:00:00Z","properties":{"price":null},"price":null}')),
 (7, p('{"messageId":"m7","event":"page","userId":"u","timestamp":"2026-01-15T10:00:00Z","price":1,"properties":{"price":2}}')),
 (8, p('{"messageId":"m8","event":"page","userId":"u","timestamp":"2026-01-15T10:00:00Z","properties":{"price":2},"price":null}')),
 (9, p('{"messageId":"m9","event":"page","userId":"u","timestamp":"2026-01-15T10:00:00Z","properties.price":3,"properties":{"price":2}}')),
 (10, p('{"messageId":"m10","event":"page","userId":"u","timestamp":"2026-01-15T10:00:00Z","properties":{"price":2},"properties.price":3}')),
 (11, p('{"messageId":"m11","event":"page","userId":"u","timestamp":"2026-01-15T10:00:00Z","properties.price":3}')),
 (12, p('{"messageId":"m12","event":"page","userId":"u","timestamp":"2026-01-15T10:00:00Z","prop\u0065rties":{"pr\u0069ce":4,"price":5}}')),
 (13, p('{"messageId":"m13","event":"page","userId":"u","timestamp":"2026-01-15T10:00:00Z","properties":{"category":"c1","product":{"category":"c2"}}}')),
 (14, p('{"messageId":"m14","event":"page","userId":"u","timestamp":"2026-01-15T10:00:00Z","properties":{"product":{"category":"c2"},"category":null}}')),
 (15, p('{"messageId":"m15","event":"page","userId":"u","timestamp":"2026-01-15T10:00:00Z","properties":{"price":"abc"}}')),
 (16, p('{"messageId":"m16","event":"page","userId":"u","timestamp":"2026-01-15T10:00:00Z","context":{"page":{"url":{"href":"https://x"}}}}')),
 (17, p('{"event":"page","userId":"u","timestamp":"2026-01-15T10:00:00Z","properties":{"messageId":"m"}}')),
 (18, p('{"messageId":"","event":"page","userId":"u","timestamp":"2026-01-15T10:00:00Z"}')),
 -- an anonymous Segment user (userId null), or one with an empty userId:
 -- anonymousId; an empty canonical price loses to the path's value
 (19, p('{"messageId":"m19","event":"page","userId":null,"anonymousId":"a19","timestamp":"2026-01-15T10:00:00Z"}')),
 (20, p('{"messageId":"m20","event":"page","userId":"","anonymousId":"a20","timestamp":"2026-01-15T10:00:00Z"}')),
 (21, p('{"messageId":"m21","event":"page","userId":"u","timestamp":"2026-01-15T10:00:00Z","price":"","properties":{"price":4}}')),
 -- an object given twice: its paths read the last copy
 (22, p('{"messageId":"m22","event":"page","userId":"u","timestamp":"2026-01-15T10:00:00Z","properties":{"price":5},"properties":{"x":1}}')),
 (23, p('{"messageId":"m23","event":"page","userId":"u","timestamp":"2026-01-15T10:00:00Z","properties":{"price":5},"properties":"zz"}')),
 (24, p('{"messageId":"m24","event":"page","userId":"u","timestamp":"2026-01-15T10:00:00Z","context":{"page":{"url":"a"}},"context":{"page":{}}}')),
 (25, p('{"messageId":"m25","event":"page","userId":"u","timestamp":"2026-01-15T10:00:00Z","properties":{"price":5},"properties":{"price":6}}'))
) v(n, x) ORDER BY n;
-- a missing field lists its path aliases
SELECT (p('{"messageId":"m","event":"page","userId":"u"}')).detail;
-- a path that starts with a field's own name: an object there is no value
-- of the field, the path reads into it
ALTER SYSTEM SET clickstream.field_aliases = 'category=category.name, page_url=b.a';
SELECT pg_reload_conf();
SELECT pg_sleep(0.5);
SELECT n, (x).reason, (x).detail, (x).category, (x).page_url, (x).attrs
FROM (VALUES
 (1, p('{"event_id":"a","event_type":"page_view","user_id":"u","ts":1569888001,"category":{"name":"books","id":7}}')),
 (2, p('{"event_id":"a","event_type":"page_view","user_id":"u","ts":1569888001,"category":"toys"}')),
 (3, p('{"event_id":"a","event_type":"page_view","user_id":"u","ts":1569888001,"b":{"a":{"x":1}},"b":[]}')),
 (4, p('{"event_id":"a","event_type":"page_view","user_id":"u","ts":1569888001,"b":{"a":"/p"}}'))
) v(n, x) ORDER BY n;
ALTER SYSTEM SET clickstream.field_aliases = 'ts=event_time|timestamp, user_id=userId|uid, category=category_code, event_type=type';
SELECT pg_reload_conf();
SELECT pg_sleep(0.5);

-- event type aliases: silver stores the canonical type; an alias of
-- purchase is a purchase
SELECT n, (x).reason, (x).event_type, (x).revenue
FROM (VALUES
 (1, p('{"event_id":"a","event_type":"view","user_id":"u","ts":1569888001}')),
 (2, p('{"event_id":"a","event_type":"pageview","user_id":"u","ts":1569888001}')),
 (3, p('{"event_id":"a","event_type":"cart","user_id":"u","ts":1569888001}')),
 (4, p('{"event_id":"a","event_type":"remove_from_cart","user_id":"u","ts":1569888001}')),
 (5, p('{"event_id":"a","event_type":"order_completed","user_id":"u","ts":1569888001,"price":4,"order_id":"o"}')),
 (6, p('{"event_id":"a","event_type":"order_completed","user_id":"u","ts":1569888001}')),
 (7, p('{"event_id":"a","event_type":"View","user_id":"u","ts":1569888001}')),
 (8, p('{"event_id":"a","event_type":"vi\u0065w","user_id":"u","ts":1569888001}'))
) v(n, x) ORDER BY n;

-- epoch seconds, exactly; a timestamp without zone read as UTC
SELECT n, (x).reason, to_char((x).ts, 'YYYY-MM-DD HH24:MI:SS.US') AS ts_utc
FROM (VALUES (1, p(e(',"ts":1569888004'))), (2, p(e(',"ts":1569888004.1234567'))),
			 (3, p(e(',"ts":"1.569888004e9"'))), (4, p(e(',"ts":"2019-10-01 00:00:04"'))),
			 (5, p(e(',"ts":"2019-10-01 00:00:04.5"'))), (6, p(e(',"ts":253402300800'))),
			 (7, p(e(',"ts":1764496800000'))), (8, p(e(',"ts":99999999.999999'))),
			 (9, p(e(',"ts":100000000')))) v(n, x)
ORDER BY n;
SELECT (p(e(',"ts":1764496800000'))).detail;

-- derived event ids: deterministic, the documented SHA-256 (reproduced in
-- SQL here), an event_id sent is kept, "" and null count as missing
CREATE FUNCTION derived(user_id text, ts timestamptz, event_type text, product_id text, price numeric,
	quantity int) RETURNS text LANGUAGE sql AS $$
	SELECT encode(substr(sha256(
		   coalesce(convert_to(user_id, 'UTF8'), '\xff'::bytea) || '\x00'::bytea
		|| coalesce(convert_to(((extract(epoch FROM ts) * 1000000)::bigint)::text, 'UTF8'), '\xff'::bytea) || '\x00'::bytea
		|| coalesce(convert_to(event_type, 'UTF8'), '\xff'::bytea) || '\x00'::bytea
		|| coalesce(convert_to(product_id, 'UTF8'), '\xff'::bytea) || '\x00'::bytea
		|| coalesce(convert_to(trim_scale(price)::text, 'UTF8'), '\xff'::bytea) || '\x00'::bytea
		|| coalesce(convert_to(quantity::text, 'UTF8'), '\xff'::bytea) || '\x00'::bytea), 1, 16), 'hex') $$;
CREATE TEMP TABLE ids AS
SELECT n, (x).*
FROM (VALUES
 (1, p('{"type":"view","userId":541312140,"event_time":"2019-10-01 00:00:04 UTC","product_id":44600062,"price":35.79}')),
 (2, p('{"type":"view","userId":"541312140","event_time":"2019-10-01 00:00:04 UTC","product_id":"44600062","price":35.790}')),
 (3, p('{"type":"page_view","uid":541312140,"ts":1569888004,"product_id":44600062,"price":3579e-2}')),
 (4, p('{"event_id":"","type":"view","userId":541312140,"event_time":"2019-10-01 00:00:04 UTC","product_id":44600062,"price":35.79}')),
 (5, p('{"event_id":null,"type":"view","userId":541312140,"event_time":"2019-10-01 00:00:04 UTC","product_id":44600062,"price":35.79}')),
 (6, p('{"event_id":"mine","type":"view","userId":541312140,"event_time":"2019-10-01 00:00:04 UTC","product_id":44600062,"price":35.79}')),
 (7, p('{"type":"view","userId":541312140,"event_time":"2019-10-01 00:00:04 UTC","price":35.79}')),
 (8, p('{"type":"view","userId":541312140,"event_time":"2019-10-01 00:00:04 UTC","product_id":"","price":35.79}')),
 (9, p('{"type":"cart","userId":541312140,"event_time":"2019-10-01 00:00:04.000001 UTC","product_id":44600062,"quantity":2}')),
 (10, p('{"type":"cart","userId":"é\"\\","event_time":"2019-10-01 00:00:04 UTC","product_id":44600062,"quantity":2.0}'))
) v(n, x);
SELECT n, reason, event_id, event_id = derived(user_id, ts, event_type, product_id, price, quantity) AS documented
FROM ids ORDER BY n;
SELECT count(DISTINCT event_id) AS ids, count(*) FILTER (WHERE event_id = (SELECT event_id FROM ids WHERE n = 1)) AS same_as_1
FROM ids;
-- a price or quantity sent as a string holding a number: the same id
SELECT (p('{"type":"view","userId":541312140,"event_time":"2019-10-01 00:00:04 UTC","product_id":44600062,"price":"35.790","quantity":"2"}')).event_id
	 = (p('{"type":"view","userId":541312140,"event_time":"2019-10-01 00:00:04 UTC","product_id":44600062,"price":35.79,"quantity":2}')).event_id
	AS same_id;
-- inputs of every length from one to four SHA-256 blocks (the padding's cases)
SELECT count(*) AS ids, count(DISTINCT (x).event_id) AS distinct_ids,
	   count(*) FILTER (WHERE (x).event_id = derived((x).user_id, (x).ts, (x).event_type, (x).product_id,
													 (x).price, (x).quantity)) AS documented
FROM generate_series(1, 220) n,
	 LATERAL p(format('{"type":"view","uid":"%s","ts":%s,"product_id":7}', repeat('é', n % 3) || repeat('u', n), 1569888000 + n)) x;

-- require_order_id off: a purchase without order_id is accepted (still not
-- without a price)
ALTER SYSTEM SET clickstream.require_order_id = off;
SELECT pg_reload_conf();
SELECT pg_sleep(0.5);
SHOW clickstream.require_order_id;
SELECT n, (x).reason, (x).order_id, (x).revenue
FROM (VALUES
 (1, p('{"event_id":"e","event_type":"purchase","user_id":"u","ts":1569888001,"price":3}')),
 (2, p('{"event_id":"e","event_type":"purchase","user_id":"u","ts":1569888001,"price":3,"order_id":""}')),
 (3, p('{"event_id":"e","event_type":"purchase","user_id":"u","ts":1569888001}'))
) v(n, x) ORDER BY n;

-- time zone local: wall-clock time in clickstream.timezone
ALTER SYSTEM SET clickstream.timestamp_without_zone = 'local';
ALTER SYSTEM SET clickstream.timezone = 'America/New_York';
SELECT pg_reload_conf();
SELECT pg_sleep(0.5);
SELECT n, (x).reason, to_char((x).ts, 'YYYY-MM-DD HH24:MI:SS') AS ts_utc, (x).event_date, (x).event_hour
FROM (VALUES (1, p(e(',"ts":"2026-01-15 10:00:00"'))), (2, p(e(',"ts":"2026-07-15 10:00:00"'))),
			 (3, p(e(',"ts":"2026-07-15 10:00:00 UTC"')))) v(n, x)
ORDER BY n;

-- Replay after a fix ------------------------------------------------------
-- A producer names the timestamp event_time and the user userId; without
-- the aliases its events are dead-lettered; fix the setting, reload, replay:
-- recovered, and no duplicate when a row is replayed twice.
ALTER SYSTEM RESET ALL;
SELECT pg_reload_conf();
SELECT pg_sleep(0.5);
SHOW clickstream.field_aliases;
CREATE FUNCTION feedb(part int, payloads bytea[]) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
	first bigint;
BEGIN
	SELECT coalesce(max(next_offset), 0) INTO first FROM clickstream.ingest_positions
	WHERE topic = 'pr' AND partition = part;
	INSERT INTO clickstream.bronze (kafka_topic, kafka_partition, kafka_offset, payload)
	SELECT 'pr', part, first + o - 1, x
	FROM unnest(payloads) WITH ORDINALITY AS u(x, o);
	INSERT INTO clickstream.watermarks (topic, partition, durable_offset)
	VALUES ('pr', part, first) ON CONFLICT DO NOTHING;
	INSERT INTO clickstream.ingest_positions (topic, partition, next_offset)
	VALUES ('pr', part, first + cardinality(payloads))
	ON CONFLICT (topic, partition) DO UPDATE SET next_offset = EXCLUDED.next_offset;
END $$;
CREATE FUNCTION feed(part int, payloads text[]) RETURNS void
LANGUAGE sql AS $$ SELECT feedb(part, (SELECT array_agg(convert_to(x, 'UTF8') ORDER BY o)
										FROM unnest(payloads) WITH ORDINALITY AS u(x, o))) $$;
SELECT feed(0, array_agg(format('{"event_id":"r%s","event_type":"page_view","userId":%s,"event_time":"2026-01-1%s 10:00:00Z"}',
								i, i % 4, i % 3)))
FROM generate_series(1, 12) i;
CALL clickstream.refresh();
SELECT reason, detail, count(*) FROM clickstream.dead_letters GROUP BY 1, 2;
ALTER SYSTEM SET clickstream.field_aliases = 'user_id=userId';
SELECT pg_reload_conf();
SELECT pg_sleep(0.5);
-- one alias is not enough: the rows go back with their new reason
SELECT replayed, promoted, duplicates, still_rejected FROM clickstream.replay_dead_letters(only_reason => 'missing_field');
SELECT reason, detail, count(*) FROM clickstream.dead_letters GROUP BY 1, 2;
ALTER SYSTEM SET clickstream.field_aliases = 'user_id=userId, ts=event_time';
SELECT pg_reload_conf();
SELECT pg_sleep(0.5);
SELECT replayed, promoted, duplicates, still_rejected FROM clickstream.replay_dead_letters(only_reason => 'missing_field');
SELECT count(*) AS dead_letters FROM clickstream.dead_letters;
SELECT count(*) AS events, count(DISTINCT user_id) AS users, min(event_id), max(event_id) FROM clickstream.events;
-- the same messages again (a redelivery): duplicates, nothing new
SELECT feed(0, array_agg(format('{"event_id":"r%s","event_type":"page_view","userId":%s,"event_time":"2026-01-1%s 10:00:00Z"}',
								i, i % 4, i % 3)))
FROM generate_series(1, 12) i;
CALL clickstream.refresh();
SELECT rows_read, rows_promoted, rows_duplicate, rows_rejected FROM clickstream.refresh_history ORDER BY run_id DESC LIMIT 1;

-- A REES46-shaped stream --------------------------------------------------
-- event_time like "2019-10-01 00:00:04 UTC", view/cart/remove_from_cart/
-- purchase, integer product, category and user ids (some beyond 2^53), no
-- event id, no order id, exact duplicate rows.  By construction: user u has
-- 1 + u % 3 sessions three hours apart, session s of user u has 2 + (u + s) % 4
-- events a minute apart (view, cart, remove_from_cart, purchase, in turn),
-- and every event with (u + s + k) % 5 = 0 is sent twice.
TRUNCATE clickstream.dead_letters;
ALTER SYSTEM SET clickstream.field_aliases = 'ts=event_time, category=category_code';
ALTER SYSTEM SET clickstream.event_type_aliases = 'page_view=view, add_to_cart=cart';
ALTER SYSTEM SET clickstream.event_id_fields = 'user_id,ts,event_type,product_id';
ALTER SYSTEM SET clickstream.require_order_id = off;
SELECT pg_reload_conf();
SELECT pg_sleep(0.5);
CREATE TEMP TABLE rees AS
SELECT u, s, k,
	   CASE WHEN u % 2 = 0 THEN (541312140 + u)::numeric ELSE 9007199254740993 + u * 1000002::numeric END AS user_id,
	   timestamptz '2019-10-01 00:00:00 UTC' + u * interval '7 minutes' + s * interval '3 hours' + k * interval '1 minute' AS ts,
	   (ARRAY['view', 'cart', 'remove_from_cart', 'purchase'])[1 + k % 4] AS event_type,
	   44600000 + (u * 7 + k) % 13 AS product_id,
	   2103807459595387724::numeric + (u + k) % 5 AS category_id,
	   (ARRAY['electronics.smartphone', '', 'appliances.kitchen.washer'])[1 + (u + k) % 3] AS category_code,
	   round(10 + ((u * 31 + k * 17) % 500) / 7.0, 2) AS price,
	   (u + s + k) % 5 = 0 AS twice
FROM generate_series(1, 30) u, generate_series(0, 2) s, generate_series(0, 5) k
WHERE s < 1 + u % 3 AND k < 2 + (u + s) % 4;
CREATE TEMP TABLE rees_rows AS
SELECT r.*, format('{"event_time":"%s","event_type":"%s","product_id":%s,"category_id":%s,"category_code":"%s","brand":"shiseido","price":%s,"user_id":%s,"user_session":"%s"}',
				   to_char(r.ts, 'YYYY-MM-DD HH24:MI:SS') || ' UTC', r.event_type, r.product_id, r.category_id,
				   r.category_code, r.price, r.user_id, md5(r.u || '/' || r.s)) AS payload
FROM rees r;
SELECT count(*) AS events, count(*) FILTER (WHERE twice) AS sent_twice, count(DISTINCT (u, s)) AS sessions,
	   count(*) FILTER (WHERE event_type = 'purchase') AS purchases, count(DISTINCT user_id) AS users,
	   count(*) FILTER (WHERE user_id > 9007199254740992) AS beyond_2_53
FROM rees;
-- three partitions; the second copy of a row comes in the same refresh (odd
-- users, from another partition) or in the next (even users); some rows of
-- users u % 4 = 0 come a third time
SELECT feed(p, array_agg(payload ORDER BY ts, c)) FROM (
	SELECT u % 3 AS p, payload, ts, 1 AS c FROM rees_rows
	UNION ALL
	SELECT (u + 1) % 3, payload, ts, 2 FROM rees_rows WHERE twice AND u % 2 = 1) r
GROUP BY p ORDER BY p;
CALL clickstream.refresh();
SELECT feed(1, array_agg(payload ORDER BY u DESC, ts)) FROM rees_rows WHERE twice AND u % 2 = 0;
SELECT feed(2, array_agg(payload ORDER BY ts)) FROM rees_rows WHERE twice AND u % 4 = 0;
CALL clickstream.refresh();
SELECT sum(rows_read) AS rows_read, sum(rows_promoted) AS promoted, sum(rows_duplicate) AS duplicates,
	   sum(rows_rejected) AS rejected
FROM clickstream.refresh_history WHERE run_id > (SELECT max(run_id) - 2 FROM clickstream.refresh_history);
SELECT count(*) AS dead_letters FROM clickstream.dead_letters;
-- silver: exactly the distinct events, canonical types, ids intact
SELECT event_type, count(*) FROM clickstream.events WHERE kafka_topic = 'pr' AND attrs ? 'brand'
GROUP BY 1 ORDER BY 1;
SELECT (SELECT count(*) FROM clickstream.events WHERE attrs ? 'brand') = (SELECT count(*) FROM rees) AS all_events,
	   (SELECT count(*) FROM (SELECT user_id, ts, event_type, product_id FROM clickstream.events WHERE attrs ? 'brand'
							  EXCEPT
							  SELECT r.user_id::text, r.ts,
									 CASE r.event_type WHEN 'view' THEN 'page_view' WHEN 'cart' THEN 'add_to_cart' ELSE r.event_type END,
									 r.product_id::text
							  FROM rees r) d) AS differing,
	   (SELECT bool_and(event_id = encode(substr(sha256(
				   convert_to(user_id, 'UTF8') || '\x00'::bytea
				|| convert_to(((extract(epoch FROM ts) * 1000000)::bigint)::text, 'UTF8') || '\x00'::bytea
				|| convert_to(event_type, 'UTF8') || '\x00'::bytea
				|| coalesce(convert_to(product_id, 'UTF8'), '\xff'::bytea) || '\x00'::bytea), 1, 16), 'hex')
				AND order_id IS NULL)
		FROM clickstream.events WHERE attrs ? 'brand') AS documented_ids,
	   (SELECT count(*) FROM clickstream.events WHERE attrs ? 'brand' AND user_id = '9007199255740995') AS user_2_53_plus_1000002,
	   (SELECT count(*) FROM clickstream.events WHERE attrs ? 'brand'
		AND (attrs ->> 'category_id')::numeric > 9007199254740992 AND attrs ->> 'category_id' LIKE '21038074595953877__') AS category_ids_intact,
	   (SELECT count(*) FROM clickstream.events WHERE attrs ? 'brand' AND category = '') AS empty_category_code;
-- the sessions: exactly those built in, one per (user, session)
SELECT count(*) AS sessions, count(DISTINCT user_id) AS users, sum(events) AS events,
	   sum(purchases) AS purchases, count(*) FILTER (WHERE converted) AS converted,
	   sum(add_to_carts) AS add_to_carts
FROM clickstream.sessions WHERE user_id IN (SELECT user_id::text FROM rees);
SELECT count(*) AS sessions_not_as_built FROM (
	SELECT user_id, session_start, events FROM clickstream.sessions WHERE user_id IN (SELECT user_id::text FROM rees)
	EXCEPT
	SELECT user_id::text, min(ts), count(*)::int FROM rees GROUP BY user_id, s) d;
-- the marts: every purchase an order of its own (event:<event_id>), and
-- every gold table equal to its recomputation
SELECT count(*) AS orders, sum(lines) AS lines, sum(revenue) AS revenue,
	   bool_and(order_id = 'event:' || first_event_id) AS own_orders
FROM clickstream.orders WHERE user_id IN (SELECT user_id::text FROM rees);
SELECT sum(price) AS purchase_revenue FROM rees WHERE event_type = 'purchase';
SELECT mart, ok FROM clickstream.verify_gold() WHERE NOT ok;
SELECT count(*) AS marts_verified, bool_and(ok) AS all_ok FROM clickstream.verify_gold();
SELECT check_name, failures FROM clickstream.check_quality() WHERE NOT passed AND severity = 'error';

-- The fuzzing corpus, with aliases configured ------------------------------
-- Payloads mutated at random (a fixed seed): bytes replaced, inserted
-- (JSON punctuation, digits, exponents, escapes, invalid UTF-8), deleted,
-- pieces repeated, truncated.  The parser must classify every one (an event,
-- or a reason and a detail) and never raise an error.
ALTER SYSTEM SET clickstream.field_aliases = 'ts=event_time|timestamp, user_id=userId|uid, category=category_code, event_type=type';
ALTER SYSTEM SET clickstream.event_type_aliases = 'page_view=view|pageview, add_to_cart=cart, purchase=order_completed';
ALTER SYSTEM SET clickstream.timestamp_without_zone = 'local';
SELECT pg_reload_conf();
SELECT pg_sleep(0.5);
CREATE FUNCTION mutate(b bytea, n int) RETURNS bytea
LANGUAGE plpgsql AS $$
DECLARE
	alphabet bytea := convert_to('{}[]":,0123456789.eE+-tfnul\ ', 'UTF8') || '\x00ff80c3e2'::bytea;
	pos int;
BEGIN
	FOR k IN 1..n LOOP
		pos := floor(random() * (length(b) + 1))::int;
		CASE floor(random() * 10)::int
			WHEN 0 THEN
				IF pos < length(b) THEN
					b := set_byte(b, pos, floor(random() * 256)::int);
				END IF;
			WHEN 1 THEN
				IF pos < length(b) THEN
					b := set_byte(b, pos, get_byte(alphabet, floor(random() * length(alphabet))::int));
				END IF;
			WHEN 2, 3, 4 THEN
				b := substr(b, 1, pos) || substr(alphabet, 1 + floor(random() * length(alphabet))::int, 1)
					 || substr(b, pos + 1);
			WHEN 5, 6 THEN
				b := substr(b, 1, pos) || substr(b, pos + 2);
			WHEN 7, 8 THEN
				b := substr(b, 1, pos) || substr(b, 1 + floor(random() * length(b))::int, 1 + floor(random() * 12)::int)
					 || substr(b, pos + 1);
			ELSE
				IF random() < 0.2 THEN
					b := substr(b, 1, pos);
				END IF;
		END CASE;
	END LOOP;
	RETURN b;
END $$;
CREATE TEMP TABLE seeds (seed bytea);
INSERT INTO seeds
SELECT convert_to(payload, 'UTF8') FROM rees_rows WHERE u <= 3
UNION ALL
SELECT convert_to(j, 'UTF8') FROM (VALUES
 ('{"event_id":"6f1c","event_type":"purchase","user_id":"u000123","ts":"2026-11-01T10:00:00.250Z","product_id":"p00042","category":"books","price":12.5,"quantity":2,"order_id":"o981"}'),
 ('{"type":"cart","uid":123456789012345678901234567890,"timestamp":1.569888004123e12,"quantity":2.0000000000000001e0,"price":1e-5}'),
 ('{"event_id":-0,"event_type":"view","userId":"\u00e9\ud83d\ude00","event_time":"2019-10-01 00:00:04.123456789 GMT","x":[1,{"y":null}]}'),
 ('{"event_id":"a","event_type":"order_completed","user_id":"u","ts":"2026-07-15 10:00:00","price":3579e-2,"order_id":17,"quantity":"2"}'),
 ('{"event_id":"a","event_type":"page_view","user_id":"u","ts":"-1e400","quantity":20e-1,"category_code":""}')
) v(j);
SELECT setseed(0.14);
CREATE TEMP TABLE corpus AS
SELECT i, mutate(seed, 1 + i % 6) AS payload
FROM seeds, generate_series(1, 250) i;
SELECT count(*) AS payloads, count(DISTINCT payload) > 3000 AS varied FROM corpus;
CREATE TEMP TABLE fuzzed AS SELECT i, clickstream.parse_event(payload) AS x FROM corpus;
SELECT count(*) AS parsed,
	   count(*) FILTER (WHERE (x).reason IS NULL) > 100 AS some_valid,
	   bool_and(CASE WHEN (x).reason IS NULL THEN (x).event_id IS NOT NULL AND (x).ts IS NOT NULL AND (x).detail IS NULL
				ELSE (x).detail IS NOT NULL AND (x).event_id IS NULL END) AS all_classified
FROM fuzzed;
SELECT (x).reason, count(*) FROM fuzzed GROUP BY 1 ORDER BY 1;
-- and as a refresh: every row promoted, a duplicate or dead-lettered, none lost
SELECT feedb(3, array_agg(payload ORDER BY i)) FROM corpus;
CALL clickstream.refresh();
SELECT status, rows_read, rows_promoted + rows_duplicate + rows_rejected = rows_read AS accounted,
	   rows_promoted > 100 AS some_promoted,
	   rows_rejected = (SELECT count(*) FROM clickstream.dead_letters WHERE kafka_partition = 3) AS dead_lettered
FROM clickstream.refresh_history ORDER BY run_id DESC LIMIT 1;
SELECT count(*) AS left_in_bronze FROM clickstream.bronze;

ALTER SYSTEM RESET ALL;
SELECT pg_reload_conf();
SET client_min_messages = warning;
DROP TABLE ids, rees, rees_rows, seeds, corpus, fuzzed;
DROP SCHEMA pr CASCADE;
DROP EXTENSION clickstream;
