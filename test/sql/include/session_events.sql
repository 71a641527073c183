-- sev(id, usr, ts, type, utm, product, category): one event's payload
-- (a purchase gets an order and a price); sessions_diff(): rows of
-- clickstream.sessions that differ from the full recomputation, both ways.
-- Shared by the regression tests of sessions (\i; OR REPLACE: they run in one
-- database).
CREATE OR REPLACE FUNCTION sev(id text, usr text, ts text, typ text DEFAULT 'page_view', utm text DEFAULT NULL,
	prod text DEFAULT NULL, cat text DEFAULT NULL) RETURNS text
LANGUAGE sql AS $$
	SELECT format('{"event_id":"%s","event_type":"%s","user_id":"%s","ts":"%s","page_url":"/%s"%s%s%s%s}',
		id, typ, usr, ts, id,
		CASE typ WHEN 'purchase' THEN ',"order_id":"o' || id || '","price":10,"quantity":2' ELSE '' END,
		CASE WHEN utm IS NOT NULL THEN ',"utm_source":"' || utm || '","utm_campaign":"c"' ELSE '' END,
		CASE WHEN prod IS NOT NULL THEN ',"product_id":"' || prod || '"' ELSE '' END,
		CASE WHEN cat IS NOT NULL THEN ',"category":"' || cat || '"' ELSE '' END)
$$;
CREATE OR REPLACE FUNCTION sessions_diff() RETURNS bigint
LANGUAGE sql AS $$
	WITH g AS (SELECT session_id, user_id, session_start, session_end, session_date,
			first_event_id, last_event_id, events, page_views, add_to_carts, checkouts,
			purchases, revenue, converted, landing_page, exit_page, utm_source,
			utm_medium, utm_campaign, device, country, funnel_level, category_funnel, product_funnel
			FROM clickstream.sessions),
	f AS (SELECT * FROM clickstream.session_rows('clickstream.events'))
	SELECT (SELECT count(*) FROM (TABLE g EXCEPT ALL TABLE f) a) +
		   (SELECT count(*) FROM (TABLE f EXCEPT ALL TABLE g) b)
$$ SET jit = off;
