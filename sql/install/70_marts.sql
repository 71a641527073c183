-- Gold: the marts dashboards read.  Days and hours are in
-- clickstream.timezone.  Every mart is kept equal to a full recomputation
-- from silver (and from clickstream.sessions, itself equal to one) by every
-- refresh step, in the step's transaction; clickstream.verify_gold()
-- (80_gold.sql) compares them with the recomputations below.
--
--   daily_metrics, hourly_metrics, category_daily, product_daily, products,
--   orders, users, active_users, cohort_retention, traffic_daily,
--   audience_daily, pages_daily; the views live and live_summary.
--
-- How they are maintained (docs/marts.md, "How the marts stay exact"):
--   * what the step's new events add (pg_temp.clickstream_step_events,
--     written by promote_rows as it writes silver): counts and sums are
--     added to the rows of their day, hour, category, product, page, order;
--   * distinct users come from sets: user_days holds per user and day the
--     hours, pages and categories of the user's events (sorted arrays); a
--     pair or an element that is new adds 1.  WAU, MAU and retention follow
--     from the new (user, day) pairs and each user's nearest active days
--     before and after (index probes), never from a recount;
--   * what sessions count (sessions, bounces, conversions, traffic,
--     audience, entrances and exits) comes from the sessions the step
--     removed (-1) and wrote (+1), as for the funnel tables; the first
--     touches of a user's sessions of a day are a set in user_days too,
--     recomputed from clickstream.sessions for the (user, day) pairs whose
--     sessions changed;
--   * orders: the lines of the step are added to their order; what an order
--     counted before and counts now goes to the order delta, which moves
--     the daily and hourly order counts and the owners' lifetime value.
-- So a step costs what it adds, whatever the size of history.

\echo Use "CREATE EXTENSION clickstream" to load this file. \quit

-- Conventions ------------------------------------------------------------------
--
-- These small helpers are inlined into the queries that call them (views,
-- panels), which a SET clause would prevent: their bodies name functions
-- and operators by schema instead (or give exact argument types, for which
-- pg_catalog, searched first, wins), so that a user's objects earlier in
-- the search_path cannot take their place.

CREATE FUNCTION clickstream.local_day(ts timestamptz)
RETURNS date
LANGUAGE sql STABLE PARALLEL SAFE
AS $$ SELECT (ts AT TIME ZONE pg_catalog.current_setting('clickstream.timezone'))::date $$;

COMMENT ON FUNCTION clickstream.local_day(timestamptz) IS
'The day of a time in clickstream.timezone: the day of every daily mart.';

CREATE FUNCTION clickstream.local_hour(ts timestamptz)
RETURNS timestamptz
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
	SELECT pg_catalog.date_trunc('hour', ts AT TIME ZONE pg_catalog.current_setting('clickstream.timezone'))
		   AT TIME ZONE pg_catalog.current_setting('clickstream.timezone')
$$;

COMMENT ON FUNCTION clickstream.local_hour(timestamptz) IS
'The start of the hour of a time in clickstream.timezone, as a timestamptz: the key of clickstream.hourly_metrics (on the day clocks go back, the repeated hour is one bucket).';

CREATE FUNCTION clickstream.hour_of_day(ts timestamptz)
RETURNS integer
LANGUAGE sql STABLE PARALLEL SAFE
AS $$ SELECT extract(hour FROM ts AT TIME ZONE pg_catalog.current_setting('clickstream.timezone'))::integer $$;

COMMENT ON FUNCTION clickstream.hour_of_day(timestamptz) IS
'The hour of the day (0-23) of a time in clickstream.timezone.';

CREATE FUNCTION clickstream.week_of(day date)
RETURNS date
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT day OPERATOR(pg_catalog.-) (extract(isodow FROM day)::integer OPERATOR(pg_catalog.-) 1) $$;

COMMENT ON FUNCTION clickstream.week_of(date) IS
'The Monday of the ISO week of a day: the cohort_week of clickstream.cohort_retention.';

CREATE FUNCTION clickstream.label(value text, missing text)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT coalesce(nullif(value, ''::text), missing) $$;

COMMENT ON FUNCTION clickstream.label(text, text) IS
'A dimension value for the marts: the value, or the given label when it is NULL or empty ((direct), (none), (not set)).';

CREATE FUNCTION clickstream.page_key(page_url text)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT pg_catalog.md5(clickstream.label(page_url, '(not set)')) $$;

COMMENT ON FUNCTION clickstream.page_key(text) IS
'The key of a page in pages_daily and in user_days.pages: the md5 of its URL ((not set) when missing), so that a user-day''s set of pages stays small whatever the URLs'' length.';

CREATE FUNCTION clickstream.order_key(order_id text, event_id text)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT coalesce(nullif(order_id, ''::text), 'event:'::text OPERATOR(pg_catalog.||) event_id) $$;

COMMENT ON FUNCTION clickstream.order_key(text, text) IS
'The order a purchase event is a line of: its order_id; a purchase without one (accepted when clickstream.require_order_id is off) is an order of its own, event:<event_id>.';

CREATE FUNCTION clickstream.rate(part numeric, whole numeric)
RETURNS numeric
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT pg_catalog.round(part OPERATOR(pg_catalog./) nullif(whole, 0::numeric), 4) $$;

COMMENT ON FUNCTION clickstream.rate(numeric, numeric) IS
'part / whole rounded to 4 decimals, NULL when whole is 0 or NULL: every rate of the marts.';

-- traffic_key and audience_key are STABLE, as jsonb_build_array is: the planner inlines
-- them into the statements that call them once per session.  Declared IMMUTABLE they
-- were not inlined, and each call ran as a function of its own (three times the time).
CREATE FUNCTION clickstream.traffic_key(utm_source text, utm_medium text, utm_campaign text)
RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
	SELECT pg_catalog.jsonb_build_array(clickstream.label(utm_source, '(direct)'), clickstream.label(utm_medium, '(none)'),
							 clickstream.label(utm_campaign, '(none)'))::text
$$;

COMMENT ON FUNCTION clickstream.traffic_key(text, text, text) IS
'A session''s first touch as traffic_daily labels it, as one text: the JSON array ["utm_source", "utm_medium", "utm_campaign"] (element n of its jsonb is the column).';

CREATE FUNCTION clickstream.audience_key(country text, device text)
RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
	SELECT pg_catalog.jsonb_build_array(clickstream.label(country, '(not set)'), clickstream.label(device, '(not set)'))::text
$$;

COMMENT ON FUNCTION clickstream.audience_key(text, text) IS
'A session''s country and device as audience_daily labels them, as one text: the JSON array ["country", "device"].';

-- The marts --------------------------------------------------------------------

CREATE TABLE clickstream.daily_metrics (
	day date PRIMARY KEY,
	events bigint NOT NULL,
	page_views bigint NOT NULL,
	users bigint NOT NULL,
	new_users bigint NOT NULL,
	sessions bigint NOT NULL,
	bounced_sessions bigint NOT NULL,
	converted_sessions bigint NOT NULL,
	session_seconds numeric NOT NULL,
	avg_session_seconds numeric,
	bounce_rate numeric,
	conversion_rate numeric,
	orders bigint NOT NULL,
	units bigint NOT NULL,
	revenue numeric NOT NULL,
	aov numeric,
	revenue_growth numeric,
	users_growth numeric,
	orders_growth numeric
);

COMMENT ON TABLE clickstream.daily_metrics IS
'Gold: the shop per day (clickstream.timezone), one row per day with events. Events, page views, units and revenue count the events of the day; users the distinct users active that day; new_users those whose first event ever is that day; sessions and their measures the sessions that started that day; orders the orders whose first line is that day. Growth columns compare with the previous calendar day. Maintained by every refresh, equal to a full recomputation from silver.';
COMMENT ON COLUMN clickstream.daily_metrics.day IS 'Day, in clickstream.timezone.';
COMMENT ON COLUMN clickstream.daily_metrics.events IS 'Silver events of the day.';
COMMENT ON COLUMN clickstream.daily_metrics.page_views IS 'page_view events of the day.';
COMMENT ON COLUMN clickstream.daily_metrics.users IS 'Distinct users with an event that day (the DAU of clickstream.active_users).';
COMMENT ON COLUMN clickstream.daily_metrics.new_users IS 'Users whose first event ever is on that day.';
COMMENT ON COLUMN clickstream.daily_metrics.sessions IS 'Sessions (clickstream.sessions) that started that day.';
COMMENT ON COLUMN clickstream.daily_metrics.bounced_sessions IS 'Of those, sessions of one page view and no other event.';
COMMENT ON COLUMN clickstream.daily_metrics.converted_sessions IS 'Of those, sessions with a purchase.';
COMMENT ON COLUMN clickstream.daily_metrics.session_seconds IS 'Total duration of those sessions, in seconds (first to last event).';
COMMENT ON COLUMN clickstream.daily_metrics.avg_session_seconds IS 'session_seconds / sessions, 4 decimals.';
COMMENT ON COLUMN clickstream.daily_metrics.bounce_rate IS 'bounced_sessions / sessions, 4 decimals.';
COMMENT ON COLUMN clickstream.daily_metrics.conversion_rate IS 'converted_sessions / sessions, 4 decimals.';
COMMENT ON COLUMN clickstream.daily_metrics.orders IS 'Orders (clickstream.orders) whose first line is on that day.';
COMMENT ON COLUMN clickstream.daily_metrics.units IS 'Units of the purchase events of the day (quantity, 1 when absent).';
COMMENT ON COLUMN clickstream.daily_metrics.revenue IS 'Revenue of the purchase events of the day (price x quantity).';
COMMENT ON COLUMN clickstream.daily_metrics.aov IS 'Average order value: revenue / orders, 4 decimals.';
COMMENT ON COLUMN clickstream.daily_metrics.revenue_growth IS 'Day-over-day growth of revenue: (revenue - revenue of the previous day) / revenue of the previous day, 4 decimals; NULL without a previous day or when it was 0.';
COMMENT ON COLUMN clickstream.daily_metrics.users_growth IS 'Day-over-day growth of users, as revenue_growth.';
COMMENT ON COLUMN clickstream.daily_metrics.orders_growth IS 'Day-over-day growth of orders, as revenue_growth.';

CREATE TABLE clickstream.hourly_metrics (
	hour timestamptz PRIMARY KEY,
	day date NOT NULL,
	events bigint NOT NULL,
	users bigint NOT NULL,
	sessions_started bigint NOT NULL,
	orders bigint NOT NULL,
	revenue numeric NOT NULL
);

CREATE INDEX hourly_metrics_day ON clickstream.hourly_metrics (day);

COMMENT ON TABLE clickstream.hourly_metrics IS
'Gold: the shop per hour (clickstream.timezone), one row per hour with events. Maintained by every refresh, equal to a full recomputation from silver.';
COMMENT ON COLUMN clickstream.hourly_metrics.hour IS 'Start of the hour in clickstream.timezone (on the day clocks go back, the repeated hour is one row).';
COMMENT ON COLUMN clickstream.hourly_metrics.day IS 'Its day.';
COMMENT ON COLUMN clickstream.hourly_metrics.events IS 'Silver events in the hour.';
COMMENT ON COLUMN clickstream.hourly_metrics.users IS 'Distinct users with an event in the hour.';
COMMENT ON COLUMN clickstream.hourly_metrics.sessions_started IS 'Sessions that started in the hour.';
COMMENT ON COLUMN clickstream.hourly_metrics.orders IS 'Orders whose first line is in the hour.';
COMMENT ON COLUMN clickstream.hourly_metrics.revenue IS 'Revenue of the purchase events in the hour.';

CREATE TABLE clickstream.category_daily (
	day date NOT NULL,
	category text NOT NULL,
	page_views bigint NOT NULL,
	add_to_carts bigint NOT NULL,
	purchases bigint NOT NULL,
	units bigint NOT NULL,
	revenue numeric NOT NULL,
	users bigint NOT NULL,
	PRIMARY KEY (day, category)
);

COMMENT ON TABLE clickstream.category_daily IS
'Gold: events and revenue per product category and day; events without a category count under (not set), so the categories of a day add up to daily_metrics. Maintained by every refresh, equal to a full recomputation from silver.';
COMMENT ON COLUMN clickstream.category_daily.day IS 'Day of the events.';
COMMENT ON COLUMN clickstream.category_daily.category IS 'category of the events; (not set) when they had none.';
COMMENT ON COLUMN clickstream.category_daily.page_views IS 'page_view events.';
COMMENT ON COLUMN clickstream.category_daily.add_to_carts IS 'add_to_cart events.';
COMMENT ON COLUMN clickstream.category_daily.purchases IS 'purchase events (order lines).';
COMMENT ON COLUMN clickstream.category_daily.units IS 'Units of those purchases.';
COMMENT ON COLUMN clickstream.category_daily.revenue IS 'Revenue of those purchases.';
COMMENT ON COLUMN clickstream.category_daily.users IS 'Distinct users with an event of the category that day.';

CREATE TABLE clickstream.product_daily (
	day date NOT NULL,
	product_id text NOT NULL,
	category text,
	page_views bigint NOT NULL,
	add_to_carts bigint NOT NULL,
	removes bigint NOT NULL,
	purchases bigint NOT NULL,
	units bigint NOT NULL,
	revenue numeric NOT NULL,
	PRIMARY KEY (day, product_id)
);

CREATE INDEX product_daily_product ON clickstream.product_daily (product_id, day);

COMMENT ON TABLE clickstream.product_daily IS
'Gold: events and revenue per product and day (events with a non-empty product_id). Maintained by every refresh, equal to a full recomputation from silver.';
COMMENT ON COLUMN clickstream.product_daily.day IS 'Day of the events.';
COMMENT ON COLUMN clickstream.product_daily.product_id IS 'Product.';
COMMENT ON COLUMN clickstream.product_daily.category IS 'The category its events carried that day (the smallest in byte order if they disagree; an empty string is none); NULL when none did.';
COMMENT ON COLUMN clickstream.product_daily.page_views IS 'page_view events of the product.';
COMMENT ON COLUMN clickstream.product_daily.add_to_carts IS 'add_to_cart events.';
COMMENT ON COLUMN clickstream.product_daily.removes IS 'remove_from_cart events.';
COMMENT ON COLUMN clickstream.product_daily.purchases IS 'purchase events (order lines).';
COMMENT ON COLUMN clickstream.product_daily.units IS 'Units purchased.';
COMMENT ON COLUMN clickstream.product_daily.revenue IS 'Revenue of its purchases.';

CREATE TABLE clickstream.products (
	product_id text PRIMARY KEY,
	category text,
	first_seen timestamptz NOT NULL,
	last_seen timestamptz NOT NULL,
	page_views bigint NOT NULL,
	add_to_carts bigint NOT NULL,
	removes bigint NOT NULL,
	purchases bigint NOT NULL,
	units bigint NOT NULL,
	revenue numeric NOT NULL,
	view_to_cart_rate numeric,
	cart_to_purchase_rate numeric,
	last_price numeric,
	last_price_at timestamptz,
	last_price_event_id text COLLATE "C"
);

COMMENT ON TABLE clickstream.products IS
'Gold: one row per product over all of silver (the SKU 360): when it was first and last seen, what happened to it, its rates and its last price. Maintained by every refresh, equal to a full recomputation from silver.';
COMMENT ON COLUMN clickstream.products.product_id IS 'Product.';
COMMENT ON COLUMN clickstream.products.category IS 'The category its events carry (the smallest in byte order if they disagree; an empty string is none); NULL when none does.';
COMMENT ON COLUMN clickstream.products.first_seen IS 'Time of its first event.';
COMMENT ON COLUMN clickstream.products.last_seen IS 'Time of its last event.';
COMMENT ON COLUMN clickstream.products.page_views IS 'page_view events of the product.';
COMMENT ON COLUMN clickstream.products.add_to_carts IS 'add_to_cart events.';
COMMENT ON COLUMN clickstream.products.removes IS 'remove_from_cart events.';
COMMENT ON COLUMN clickstream.products.purchases IS 'purchase events (order lines).';
COMMENT ON COLUMN clickstream.products.units IS 'Units purchased.';
COMMENT ON COLUMN clickstream.products.revenue IS 'Revenue of its purchases.';
COMMENT ON COLUMN clickstream.products.view_to_cart_rate IS 'add_to_carts / page_views (events, not sessions: see product_funnel for sessions), 4 decimals.';
COMMENT ON COLUMN clickstream.products.cart_to_purchase_rate IS 'purchases / add_to_carts, 4 decimals.';
COMMENT ON COLUMN clickstream.products.last_price IS 'price of its latest event that carries one (by ts, then event_id).';
COMMENT ON COLUMN clickstream.products.last_price_at IS 'ts of that event.';
COMMENT ON COLUMN clickstream.products.last_price_event_id IS 'event_id of that event.';

-- "top products by revenue" reads 20 entries, whatever the number of products
CREATE INDEX products_revenue ON clickstream.products (revenue DESC, product_id);

CREATE TABLE clickstream.orders (
	order_id text PRIMARY KEY,
	user_id text COLLATE "C" NOT NULL,
	session_id uuid,
	ordered_at timestamptz NOT NULL,
	day date NOT NULL,
	lines integer NOT NULL,
	units bigint NOT NULL,
	revenue numeric NOT NULL,
	first_event_id text COLLATE "C" NOT NULL
);

CREATE INDEX orders_user ON clickstream.orders (user_id, ordered_at);
CREATE INDEX orders_day ON clickstream.orders (day);

COMMENT ON TABLE clickstream.orders IS
'Gold: the order fact, one row per order. The purchase events with one order_id are the lines of one order, whenever they arrive; the order belongs to the user and session of its first line. Maintained by every refresh, equal to a full recomputation from silver.';
COMMENT ON COLUMN clickstream.orders.order_id IS 'order_id of its purchase events; event:<event_id> for a purchase without one (accepted when clickstream.require_order_id is off), which is an order of its own.';
COMMENT ON COLUMN clickstream.orders.user_id IS 'User of its first line (the earliest purchase event, by ts then event_id).';
COMMENT ON COLUMN clickstream.orders.session_id IS 'Session (clickstream.sessions) of its first line.';
COMMENT ON COLUMN clickstream.orders.ordered_at IS 'ts of its first line.';
COMMENT ON COLUMN clickstream.orders.day IS 'Day of ordered_at in clickstream.timezone.';
COMMENT ON COLUMN clickstream.orders.lines IS 'Purchase events of the order.';
COMMENT ON COLUMN clickstream.orders.units IS 'Units: the sum of their quantities (1 when absent).';
COMMENT ON COLUMN clickstream.orders.revenue IS 'Revenue: the sum of their price x quantity.';
COMMENT ON COLUMN clickstream.orders.first_event_id IS 'event_id of its first line.';

CREATE TABLE clickstream.users (
	user_id text COLLATE "C" PRIMARY KEY,
	first_seen timestamptz NOT NULL,
	last_seen timestamptz NOT NULL,
	first_event_id text COLLATE "C" NOT NULL,
	last_event_id text COLLATE "C" NOT NULL,
	utm_source text,
	utm_medium text,
	utm_campaign text,
	country text,
	device text,
	events bigint NOT NULL,
	sessions bigint NOT NULL,
	orders bigint NOT NULL,
	revenue numeric NOT NULL,
	first_order_at timestamptz,
	days_active integer NOT NULL,
	country_seen_at timestamptz,
	country_event_id text COLLATE "C",
	device_seen_at timestamptz,
	device_event_id text COLLATE "C"
) WITH (fillfactor = 85);

COMMENT ON TABLE clickstream.users IS
'Gold: one row per user over all of silver, with first touch and lifetime value. Maintained by every refresh, equal to a full recomputation from silver.';
COMMENT ON COLUMN clickstream.users.user_id IS 'User.';
COMMENT ON COLUMN clickstream.users.first_seen IS 'Time of the user''s first event.';
COMMENT ON COLUMN clickstream.users.last_seen IS 'Time of the user''s last event.';
COMMENT ON COLUMN clickstream.users.first_event_id IS 'event_id of the first event (the first in (ts, event_id) order).';
COMMENT ON COLUMN clickstream.users.last_event_id IS 'event_id of the last event.';
COMMENT ON COLUMN clickstream.users.utm_source IS 'First touch: utm_source of the first event (NULL: direct).';
COMMENT ON COLUMN clickstream.users.utm_medium IS 'First touch: utm_medium of the first event.';
COMMENT ON COLUMN clickstream.users.utm_campaign IS 'First touch: utm_campaign of the first event.';
COMMENT ON COLUMN clickstream.users.country IS 'Last known country: that of the latest event (in (ts, event_id) order) that carries a non-empty one; NULL when none does.';
COMMENT ON COLUMN clickstream.users.device IS 'Last known device: that of the latest event that carries a non-empty one; NULL when none does.';
COMMENT ON COLUMN clickstream.users.events IS 'Silver events of the user.';
COMMENT ON COLUMN clickstream.users.sessions IS 'Sessions of the user (clickstream.sessions).';
COMMENT ON COLUMN clickstream.users.orders IS 'Orders of the user (clickstream.orders.user_id).';
COMMENT ON COLUMN clickstream.users.revenue IS 'Lifetime value: the revenue of those orders.';
COMMENT ON COLUMN clickstream.users.first_order_at IS 'ordered_at of the first of those orders; NULL when none.';
COMMENT ON COLUMN clickstream.users.days_active IS 'Days (clickstream.timezone) with at least one event of the user.';
COMMENT ON COLUMN clickstream.users.country_seen_at IS 'Time of the event that gave country (what a late event is compared with).';
COMMENT ON COLUMN clickstream.users.country_event_id IS 'event_id of the event that gave country.';
COMMENT ON COLUMN clickstream.users.device_seen_at IS 'Time of the event that gave device.';
COMMENT ON COLUMN clickstream.users.device_event_id IS 'event_id of the event that gave device.';

-- "top customers by lifetime value" reads 20 entries, whatever the number of users
CREATE INDEX users_revenue ON clickstream.users (revenue DESC, user_id);

CREATE TABLE clickstream.active_users (
	day date PRIMARY KEY,
	dau bigint NOT NULL,
	wau bigint NOT NULL,
	mau bigint NOT NULL,
	stickiness numeric
);

COMMENT ON TABLE clickstream.active_users IS
'Gold: exact distinct active users per day: that day, in the 7 days and in the 30 days ending that day (clickstream.timezone); a row for every day that is in the 30-day window of some active day. Maintained by every refresh from the new (user, day) pairs only, equal to a full recomputation from silver.';
COMMENT ON COLUMN clickstream.active_users.day IS 'Day the windows end (included).';
COMMENT ON COLUMN clickstream.active_users.dau IS 'Distinct users with an event that day.';
COMMENT ON COLUMN clickstream.active_users.wau IS 'Distinct users with an event in the 7 days ending that day.';
COMMENT ON COLUMN clickstream.active_users.mau IS 'Distinct users with an event in the 30 days ending that day.';
COMMENT ON COLUMN clickstream.active_users.stickiness IS 'dau / mau, 4 decimals.';

CREATE TABLE clickstream.cohort_retention (
	cohort_week date NOT NULL,
	week_number integer NOT NULL,
	cohort_users bigint NOT NULL,
	active_users bigint NOT NULL,
	retention_rate numeric,
	PRIMARY KEY (cohort_week, week_number)
);

COMMENT ON TABLE clickstream.cohort_retention IS
'Gold: the retention table. Users belong to the cohort of the ISO week (Monday, clickstream.timezone) of their first event; a row tells how many of them had an event week_number weeks later (rows only where some did; week 0 is the whole cohort). Maintained by every refresh, equal to a full recomputation from silver.';
COMMENT ON COLUMN clickstream.cohort_retention.cohort_week IS 'Monday of the week of the users'' first event.';
COMMENT ON COLUMN clickstream.cohort_retention.week_number IS 'Weeks after the cohort week (0 = that week).';
COMMENT ON COLUMN clickstream.cohort_retention.cohort_users IS 'Users in the cohort.';
COMMENT ON COLUMN clickstream.cohort_retention.active_users IS 'Of them, users with an event in week week_number.';
COMMENT ON COLUMN clickstream.cohort_retention.retention_rate IS 'active_users / cohort_users, 4 decimals.';

CREATE TABLE clickstream.traffic_daily (
	day date NOT NULL,
	utm_source text NOT NULL,
	utm_medium text NOT NULL,
	utm_campaign text NOT NULL,
	sessions bigint NOT NULL,
	users bigint NOT NULL,
	converted_sessions bigint NOT NULL,
	revenue numeric NOT NULL,
	PRIMARY KEY (day, utm_source, utm_medium, utm_campaign)
);

COMMENT ON TABLE clickstream.traffic_daily IS
'Gold: acquisition per day by the first touch of each session (the utm_* of its first event), as Google Analytics reports it: a missing source is (direct), a missing medium or campaign (none). Sessions by the day they started. Maintained by every refresh, equal to a full recomputation from clickstream.sessions.';
COMMENT ON COLUMN clickstream.traffic_daily.day IS 'Day the sessions started.';
COMMENT ON COLUMN clickstream.traffic_daily.utm_source IS 'utm_source of the session''s first event; (direct) when none.';
COMMENT ON COLUMN clickstream.traffic_daily.utm_medium IS 'utm_medium of the session''s first event; (none) when none.';
COMMENT ON COLUMN clickstream.traffic_daily.utm_campaign IS 'utm_campaign of the session''s first event; (none) when none.';
COMMENT ON COLUMN clickstream.traffic_daily.sessions IS 'Sessions.';
COMMENT ON COLUMN clickstream.traffic_daily.users IS 'Distinct users of those sessions.';
COMMENT ON COLUMN clickstream.traffic_daily.converted_sessions IS 'Sessions with a purchase.';
COMMENT ON COLUMN clickstream.traffic_daily.revenue IS 'Revenue of the purchases of those sessions, without trailing zeros (12.5, not 12.50: the scale of a sum would depend on the sessions that left the row).';

CREATE TABLE clickstream.audience_daily (
	day date NOT NULL,
	country text NOT NULL,
	device text NOT NULL,
	sessions bigint NOT NULL,
	users bigint NOT NULL,
	converted_sessions bigint NOT NULL,
	revenue numeric NOT NULL,
	PRIMARY KEY (day, country, device)
);

COMMENT ON TABLE clickstream.audience_daily IS
'Gold: sessions per day by the country and device of their first event ((not set) when missing). Maintained by every refresh, equal to a full recomputation from clickstream.sessions.';
COMMENT ON COLUMN clickstream.audience_daily.day IS 'Day the sessions started.';
COMMENT ON COLUMN clickstream.audience_daily.country IS 'country of the session''s first event; (not set) when none.';
COMMENT ON COLUMN clickstream.audience_daily.device IS 'device of the session''s first event; (not set) when none.';
COMMENT ON COLUMN clickstream.audience_daily.sessions IS 'Sessions.';
COMMENT ON COLUMN clickstream.audience_daily.users IS 'Distinct users of those sessions.';
COMMENT ON COLUMN clickstream.audience_daily.converted_sessions IS 'Sessions with a purchase.';
COMMENT ON COLUMN clickstream.audience_daily.revenue IS 'Revenue of the purchases of those sessions, without trailing zeros (as in traffic_daily).';

CREATE TABLE clickstream.pages_daily (
	day date NOT NULL,
	page_url text NOT NULL,
	page_views bigint NOT NULL,
	entrances bigint NOT NULL,
	exits bigint NOT NULL,
	users bigint NOT NULL
);

-- The key is (day, page_url), indexed through md5(page_url): a URL has no
-- length limit (tracking parameters, encoded state) and a B-tree entry does
-- (about 2.7 kB); two URLs of one day with the same md5 are not expected.
CREATE UNIQUE INDEX pages_daily_key ON clickstream.pages_daily (day, md5(page_url));

COMMENT ON TABLE clickstream.pages_daily IS
'Gold: pages per day: views, and how often sessions started (landing page) or ended (exit page) on them ((not set) for a session whose first or last event has no page_url). Maintained by every refresh, equal to a full recomputation from silver and clickstream.sessions.';
COMMENT ON COLUMN clickstream.pages_daily.day IS 'Day of the page views; for entrances and exits the day the session started.';
COMMENT ON COLUMN clickstream.pages_daily.page_url IS 'page_url.';
COMMENT ON COLUMN clickstream.pages_daily.page_views IS 'page_view events of the page that day.';
COMMENT ON COLUMN clickstream.pages_daily.entrances IS 'Sessions that started there (landing_page).';
COMMENT ON COLUMN clickstream.pages_daily.exits IS 'Sessions that ended there (exit_page).';
COMMENT ON COLUMN clickstream.pages_daily.users IS 'Distinct users who viewed the page (page_view) that day.';

-- The sets behind the distinct counts -------------------------------------------

CREATE TABLE clickstream.user_days (
	user_id text COLLATE "C" NOT NULL,
	day date NOT NULL,
	events bigint NOT NULL,
	hours integer NOT NULL,
	pages text[] NOT NULL,
	categories text[] NOT NULL,
	traffic text[] NOT NULL,
	audience text[] NOT NULL,
	PRIMARY KEY (user_id, day)
) WITH (fillfactor = 80);

COMMENT ON TABLE clickstream.user_days IS
'Gold (state of the marts): one row per user and day with an event (clickstream.timezone), with the hours, pages and categories of the user''s events that day and the first touches of the user''s sessions that started that day: the sets behind daily and hourly users, new users, days_active, WAU, MAU, retention, and the users of category_daily, pages_daily, traffic_daily and audience_daily. Updated in place by the steps that change them (fillfactor 80 keeps those updates on their page).';
COMMENT ON COLUMN clickstream.user_days.user_id IS 'User.';
COMMENT ON COLUMN clickstream.user_days.day IS 'Day with at least one event of the user.';
COMMENT ON COLUMN clickstream.user_days.events IS 'The user''s events that day.';
COMMENT ON COLUMN clickstream.user_days.hours IS 'Hours of the day with an event of the user (bit 0 = 00:00-00:59 ... bit 23): the set behind hourly_metrics.users.';
COMMENT ON COLUMN clickstream.user_days.pages IS 'The pages the user viewed that day, each as clickstream.page_key(page_url) (the md5 of the URL, as pages_daily is keyed: 32 bytes whatever the URL''s length), sorted in byte order without duplicates: the set behind pages_daily.users.';
COMMENT ON COLUMN clickstream.user_days.categories IS 'The categories ((not set) for events without one) of the user''s events that day, sorted in byte order without duplicates: the set behind category_daily.users.';
COMMENT ON COLUMN clickstream.user_days.traffic IS 'The first touches of the user''s sessions that started that day, as JSON arrays ["utm_source", "utm_medium", "utm_campaign"] of traffic_daily''s labels, sorted without duplicates: the set behind traffic_daily.users.';
COMMENT ON COLUMN clickstream.user_days.audience IS 'The ["country", "device"] of the user''s sessions that started that day, as audience_daily labels them, sorted without duplicates: the set behind audience_daily.users.';

CREATE FUNCTION clickstream.text_set_union(a text[], b text[])
RETURNS text[]
AS 'MODULE_PATHNAME', 'clickstream_text_set_union'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

COMMENT ON FUNCTION clickstream.text_set_union(text[], text[]) IS
'The union of two sets of text kept as arrays sorted in byte order without duplicates (as clickstream.user_days keeps pages and categories), in the same form; an error when an input is not.';

CREATE FUNCTION clickstream.text_set_minus(a text[], b text[])
RETURNS text[]
AS 'MODULE_PATHNAME', 'clickstream_text_set_minus'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

COMMENT ON FUNCTION clickstream.text_set_minus(text[], text[]) IS
'The elements of the first set of text (an array sorted in byte order without duplicates) that the second lacks, in the same form; an error when an input is not.';

-- Full recomputations ------------------------------------------------------------
-- What each mart and set must hold, from silver (and clickstream.sessions),
-- written once, plainly: rebuild_gold() fills the tables with them and
-- verify_gold() compares the tables with them (80_gold.sql).
--
-- No SET search_path here (nor on recompute_funnels and
-- recompute_high_interest_low_conversion): a SET clause stops the planner
-- from inlining them into verify_gold()'s queries, which then recompute
-- every day before filtering (verify_gold(since) took twice as long).
-- Their callers (rebuild_marts, rebuild_funnels, verify_gold) set
-- search_path = pg_catalog, pg_temp, and an inlined or not body is parsed
-- under the caller's path.

CREATE FUNCTION clickstream.recompute_user_days()
RETURNS SETOF clickstream.user_days
LANGUAGE sql STABLE
AS $$
	WITH e AS (
		SELECT e.user_id, clickstream.local_day(e.ts) AS day, count(*) AS events,
			   bit_or(1 << clickstream.hour_of_day(e.ts)) AS hours,
			   coalesce(array_agg(DISTINCT clickstream.page_key(e.page_url) COLLATE "C"
								  ORDER BY clickstream.page_key(e.page_url) COLLATE "C")
						FILTER (WHERE e.event_type = 'page_view'), '{}') AS pages,
			   array_agg(DISTINCT clickstream.label(e.category, '(not set)') COLLATE "C"
						 ORDER BY clickstream.label(e.category, '(not set)') COLLATE "C") AS categories
		FROM clickstream.events e
		GROUP BY 1, 2),
	s AS (
		SELECT s.user_id, s.session_date AS day,
			   array_agg(DISTINCT clickstream.traffic_key(s.utm_source, s.utm_medium, s.utm_campaign) COLLATE "C"
						 ORDER BY clickstream.traffic_key(s.utm_source, s.utm_medium, s.utm_campaign) COLLATE "C") AS traffic,
			   array_agg(DISTINCT clickstream.audience_key(s.country, s.device) COLLATE "C"
						 ORDER BY clickstream.audience_key(s.country, s.device) COLLATE "C") AS audience
		FROM clickstream.sessions s
		GROUP BY 1, 2)
	SELECT e.user_id, e.day, e.events, e.hours, e.pages, e.categories,
		   coalesce(s.traffic, '{}'), coalesce(s.audience, '{}')
	FROM e LEFT JOIN s USING (user_id, day)
$$;

COMMENT ON FUNCTION clickstream.recompute_user_days() IS
'Full recomputation of clickstream.user_days from silver and clickstream.sessions.';

CREATE FUNCTION clickstream.recompute_orders()
RETURNS SETOF clickstream.orders
LANGUAGE sql STABLE
AS $$
	WITH l AS (
		SELECT clickstream.order_key(e.order_id, e.event_id) AS order_id, e.user_id, e.ts,
			   e.event_id, coalesce(e.quantity, 1) AS units, coalesce(e.revenue, 0) AS revenue
		FROM clickstream.events e
		WHERE e.event_type = 'purchase'),
	f AS (
		SELECT DISTINCT ON (l.order_id) l.order_id, l.user_id, l.ts, l.event_id
		FROM l ORDER BY l.order_id, l.ts, l.event_id),
	a AS (
		SELECT l.order_id, count(*) AS lines, sum(l.units) AS units, sum(l.revenue) AS revenue
		FROM l GROUP BY l.order_id)
	SELECT f.order_id, f.user_id, s.session_id, f.ts, clickstream.local_day(f.ts),
		   a.lines::integer, a.units, a.revenue, f.event_id
	FROM f
	JOIN a USING (order_id)
	LEFT JOIN LATERAL (
		SELECT s.session_id FROM clickstream.sessions s
		WHERE s.user_id = f.user_id AND (s.session_start, s.first_event_id) <= (f.ts, f.event_id)
		ORDER BY s.session_start DESC, s.first_event_id DESC
		LIMIT 1) s ON true
$$;

COMMENT ON FUNCTION clickstream.recompute_orders() IS
'Full recomputation of clickstream.orders from silver (and the sessions of the first lines).';

CREATE FUNCTION clickstream.recompute_users()
RETURNS SETOF clickstream.users
LANGUAGE sql STABLE
AS $$
	WITH f AS (
		SELECT DISTINCT ON (e.user_id) e.user_id, e.ts, e.event_id, e.utm_source, e.utm_medium,
			   e.utm_campaign
		FROM clickstream.events e ORDER BY e.user_id, e.ts, e.event_id),
	l AS (
		SELECT DISTINCT ON (e.user_id) e.user_id, e.ts, e.event_id
		FROM clickstream.events e ORDER BY e.user_id, e.ts DESC, e.event_id DESC),
	c AS (
		SELECT DISTINCT ON (e.user_id) e.user_id, e.ts, e.event_id, e.country
		FROM clickstream.events e WHERE e.country <> ''
		ORDER BY e.user_id, e.ts DESC, e.event_id DESC),
	d AS (
		SELECT DISTINCT ON (e.user_id) e.user_id, e.ts, e.event_id, e.device
		FROM clickstream.events e WHERE e.device <> ''
		ORDER BY e.user_id, e.ts DESC, e.event_id DESC),
	n AS (
		SELECT e.user_id, count(*) AS events, count(DISTINCT clickstream.local_day(e.ts)) AS days
		FROM clickstream.events e GROUP BY e.user_id),
	s AS (
		SELECT s.user_id, count(*) AS sessions FROM clickstream.sessions s GROUP BY s.user_id),
	o AS (
		SELECT o.user_id, count(*) AS orders, sum(o.revenue) AS revenue, min(o.ordered_at) AS first_order_at
		FROM clickstream.recompute_orders() o GROUP BY o.user_id)
	SELECT f.user_id, f.ts, l.ts, f.event_id, l.event_id, f.utm_source, f.utm_medium,
		   f.utm_campaign, c.country, d.device, n.events, coalesce(s.sessions, 0),
		   coalesce(o.orders, 0), coalesce(o.revenue, 0), o.first_order_at, n.days::integer,
		   c.ts, c.event_id, d.ts, d.event_id
	FROM f
	JOIN l USING (user_id)
	JOIN n USING (user_id)
	LEFT JOIN c USING (user_id)
	LEFT JOIN d USING (user_id)
	LEFT JOIN s USING (user_id)
	LEFT JOIN o USING (user_id)
$$;

COMMENT ON FUNCTION clickstream.recompute_users() IS
'Full recomputation of clickstream.users from silver, clickstream.sessions and the recomputed orders.';

CREATE FUNCTION clickstream.recompute_products()
RETURNS SETOF clickstream.products
LANGUAGE sql STABLE
AS $$
	WITH a AS (
		SELECT e.product_id, min(nullif(e.category, '') COLLATE "C") AS category, min(e.ts) AS first_seen,
			   max(e.ts) AS last_seen,
			   count(*) FILTER (WHERE e.event_type = 'page_view') AS page_views,
			   count(*) FILTER (WHERE e.event_type = 'add_to_cart') AS add_to_carts,
			   count(*) FILTER (WHERE e.event_type = 'remove_from_cart') AS removes,
			   count(*) FILTER (WHERE e.event_type = 'purchase') AS purchases,
			   coalesce(sum(coalesce(e.quantity, 1)) FILTER (WHERE e.event_type = 'purchase'), 0) AS units,
			   coalesce(sum(e.revenue) FILTER (WHERE e.event_type = 'purchase'), 0) AS revenue
		FROM clickstream.events e
		WHERE e.product_id <> ''
		GROUP BY e.product_id),
	p AS (
		SELECT DISTINCT ON (e.product_id) e.product_id, e.price, e.ts, e.event_id
		FROM clickstream.events e
		WHERE e.product_id <> '' AND e.price IS NOT NULL
		ORDER BY e.product_id, e.ts DESC, e.event_id DESC)
	SELECT a.product_id, a.category, a.first_seen, a.last_seen, a.page_views, a.add_to_carts,
		   a.removes, a.purchases, a.units, a.revenue,
		   clickstream.rate(a.add_to_carts, a.page_views), clickstream.rate(a.purchases, a.add_to_carts),
		   p.price, p.ts, p.event_id
	FROM a LEFT JOIN p USING (product_id)
$$;

COMMENT ON FUNCTION clickstream.recompute_products() IS
'Full recomputation of clickstream.products from silver.';

CREATE FUNCTION clickstream.recompute_product_daily()
RETURNS SETOF clickstream.product_daily
LANGUAGE sql STABLE
AS $$
	SELECT clickstream.local_day(e.ts), e.product_id, min(nullif(e.category, '') COLLATE "C"),
		   count(*) FILTER (WHERE e.event_type = 'page_view'),
		   count(*) FILTER (WHERE e.event_type = 'add_to_cart'),
		   count(*) FILTER (WHERE e.event_type = 'remove_from_cart'),
		   count(*) FILTER (WHERE e.event_type = 'purchase'),
		   coalesce(sum(coalesce(e.quantity, 1)) FILTER (WHERE e.event_type = 'purchase'), 0),
		   coalesce(sum(e.revenue) FILTER (WHERE e.event_type = 'purchase'), 0)
	FROM clickstream.events e
	WHERE e.product_id <> ''
	GROUP BY 1, 2
$$;

COMMENT ON FUNCTION clickstream.recompute_product_daily() IS
'Full recomputation of clickstream.product_daily from silver.';

CREATE FUNCTION clickstream.recompute_category_daily()
RETURNS SETOF clickstream.category_daily
LANGUAGE sql STABLE
AS $$
	SELECT clickstream.local_day(e.ts), clickstream.label(e.category, '(not set)'),
		   count(*) FILTER (WHERE e.event_type = 'page_view'),
		   count(*) FILTER (WHERE e.event_type = 'add_to_cart'),
		   count(*) FILTER (WHERE e.event_type = 'purchase'),
		   coalesce(sum(coalesce(e.quantity, 1)) FILTER (WHERE e.event_type = 'purchase'), 0),
		   coalesce(sum(e.revenue) FILTER (WHERE e.event_type = 'purchase'), 0),
		   count(DISTINCT e.user_id)
	FROM clickstream.events e
	GROUP BY 1, 2
$$;

COMMENT ON FUNCTION clickstream.recompute_category_daily() IS
'Full recomputation of clickstream.category_daily from silver.';

CREATE FUNCTION clickstream.recompute_daily_metrics()
RETURNS SETOF clickstream.daily_metrics
LANGUAGE sql STABLE
AS $$
	WITH ev AS (
		SELECT clickstream.local_day(e.ts) AS day, count(*) AS events,
			   count(*) FILTER (WHERE e.event_type = 'page_view') AS page_views,
			   count(DISTINCT e.user_id) AS users,
			   coalesce(sum(coalesce(e.quantity, 1)) FILTER (WHERE e.event_type = 'purchase'), 0) AS units,
			   coalesce(sum(e.revenue) FILTER (WHERE e.event_type = 'purchase'), 0) AS revenue
		FROM clickstream.events e GROUP BY 1),
	nu AS (
		SELECT f.day, count(*) AS new_users
		FROM (SELECT clickstream.local_day(min(e.ts)) AS day FROM clickstream.events e GROUP BY e.user_id) f
		GROUP BY f.day),
	se AS (
		SELECT s.session_date AS day, count(*) AS sessions,
			   count(*) FILTER (WHERE s.events = 1 AND s.page_views = 1) AS bounced,
			   count(*) FILTER (WHERE s.converted) AS converted,
			   sum(extract(epoch FROM s.duration)) AS seconds
		FROM clickstream.sessions s GROUP BY 1),
	od AS (
		SELECT o.day, count(*) AS orders FROM clickstream.recompute_orders() o GROUP BY 1),
	d AS (
		SELECT ev.day, ev.events, ev.page_views, ev.users, coalesce(nu.new_users, 0) AS new_users,
			   coalesce(se.sessions, 0) AS sessions, coalesce(se.bounced, 0) AS bounced,
			   coalesce(se.converted, 0) AS converted, round(coalesce(se.seconds, 0), 6) AS seconds,
			   coalesce(od.orders, 0) AS orders, ev.units, ev.revenue
		FROM ev
		LEFT JOIN nu USING (day)
		LEFT JOIN se USING (day)
		LEFT JOIN od USING (day))
	SELECT d.day, d.events, d.page_views, d.users, d.new_users, d.sessions, d.bounced, d.converted,
		   d.seconds, clickstream.rate(d.seconds, d.sessions), clickstream.rate(d.bounced, d.sessions),
		   clickstream.rate(d.converted, d.sessions), d.orders, d.units, d.revenue,
		   clickstream.rate(d.revenue, d.orders),
		   clickstream.rate(d.revenue - p.revenue, p.revenue),
		   clickstream.rate(d.users - p.users, p.users),
		   clickstream.rate(d.orders - p.orders, p.orders)
	FROM d LEFT JOIN d p ON p.day = d.day - 1
$$;

COMMENT ON FUNCTION clickstream.recompute_daily_metrics() IS
'Full recomputation of clickstream.daily_metrics from silver, clickstream.sessions and the recomputed orders.';

CREATE FUNCTION clickstream.recompute_hourly_metrics()
RETURNS SETOF clickstream.hourly_metrics
LANGUAGE sql STABLE
AS $$
	WITH ev AS (
		SELECT clickstream.local_hour(e.ts) AS hour, count(*) AS events,
			   count(DISTINCT e.user_id) AS users,
			   coalesce(sum(e.revenue) FILTER (WHERE e.event_type = 'purchase'), 0) AS revenue
		FROM clickstream.events e GROUP BY 1),
	se AS (
		SELECT clickstream.local_hour(s.session_start) AS hour, count(*) AS sessions
		FROM clickstream.sessions s GROUP BY 1),
	od AS (
		SELECT clickstream.local_hour(o.ordered_at) AS hour, count(*) AS orders
		FROM clickstream.recompute_orders() o GROUP BY 1)
	SELECT ev.hour, clickstream.local_day(ev.hour), ev.events, ev.users, coalesce(se.sessions, 0),
		   coalesce(od.orders, 0), ev.revenue
	FROM ev
	LEFT JOIN se USING (hour)
	LEFT JOIN od USING (hour)
$$;

COMMENT ON FUNCTION clickstream.recompute_hourly_metrics() IS
'Full recomputation of clickstream.hourly_metrics from silver, clickstream.sessions and the recomputed orders.';

-- Per (user, active day), the days up to the user's next active day are
-- the ones it is the latest active day of: those days count the user in
-- their 7- and 30-day windows while they are within 6 and 29 days of it.
CREATE FUNCTION clickstream.recompute_active_users()
RETURNS SETOF clickstream.active_users
LANGUAGE sql STABLE
AS $$
	WITH ud AS (
		SELECT e.user_id, clickstream.local_day(e.ts) AS day
		FROM clickstream.events e GROUP BY 1, 2),
	nx AS (
		SELECT ud.day, lead(ud.day) OVER (PARTITION BY ud.user_id ORDER BY ud.day) AS next_day
		FROM ud),
	c AS (
		SELECT nx.day + i AS day, count(*) FILTER (WHERE i = 0) AS dau,
			   count(*) FILTER (WHERE i < 7) AS wau, count(*) AS mau
		FROM nx, generate_series(0, least(29, coalesce(nx.next_day - nx.day - 1, 29))) i
		GROUP BY 1)
	SELECT c.day, c.dau, c.wau, c.mau, clickstream.rate(c.dau, c.mau) FROM c
$$;

COMMENT ON FUNCTION clickstream.recompute_active_users() IS
'Full recomputation of clickstream.active_users from silver.';

CREATE FUNCTION clickstream.recompute_cohort_retention()
RETURNS SETOF clickstream.cohort_retention
LANGUAGE sql STABLE
AS $$
	WITH ud AS (
		SELECT e.user_id, clickstream.local_day(e.ts) AS day
		FROM clickstream.events e GROUP BY 1, 2),
	c AS (
		SELECT ud.user_id, clickstream.week_of(min(ud.day)) AS cohort_week
		FROM ud GROUP BY ud.user_id),
	size AS (
		SELECT c.cohort_week, count(*) AS users FROM c GROUP BY 1),
	w AS (
		SELECT DISTINCT ud.user_id, c.cohort_week,
			   (clickstream.week_of(ud.day) - c.cohort_week) / 7 AS week_number
		FROM ud JOIN c USING (user_id))
	SELECT w.cohort_week, w.week_number, size.users, count(*), clickstream.rate(count(*), size.users)
	FROM w JOIN size USING (cohort_week)
	GROUP BY w.cohort_week, w.week_number, size.users
$$;

COMMENT ON FUNCTION clickstream.recompute_cohort_retention() IS
'Full recomputation of clickstream.cohort_retention from silver.';

CREATE FUNCTION clickstream.recompute_traffic_daily()
RETURNS SETOF clickstream.traffic_daily
LANGUAGE sql STABLE
AS $$
	SELECT s.session_date, clickstream.label(s.utm_source, '(direct)'),
		   clickstream.label(s.utm_medium, '(none)'), clickstream.label(s.utm_campaign, '(none)'),
		   count(*), count(DISTINCT s.user_id), count(*) FILTER (WHERE s.converted), trim_scale(sum(s.revenue))
	FROM clickstream.sessions s
	GROUP BY 1, 2, 3, 4
$$;

COMMENT ON FUNCTION clickstream.recompute_traffic_daily() IS
'Full recomputation of clickstream.traffic_daily from clickstream.sessions.';

CREATE FUNCTION clickstream.recompute_audience_daily()
RETURNS SETOF clickstream.audience_daily
LANGUAGE sql STABLE
AS $$
	SELECT s.session_date, clickstream.label(s.country, '(not set)'),
		   clickstream.label(s.device, '(not set)'),
		   count(*), count(DISTINCT s.user_id), count(*) FILTER (WHERE s.converted), trim_scale(sum(s.revenue))
	FROM clickstream.sessions s
	GROUP BY 1, 2, 3
$$;

COMMENT ON FUNCTION clickstream.recompute_audience_daily() IS
'Full recomputation of clickstream.audience_daily from clickstream.sessions.';

CREATE FUNCTION clickstream.recompute_pages_daily()
RETURNS SETOF clickstream.pages_daily
LANGUAGE sql STABLE
AS $$
	WITH v AS (
		SELECT clickstream.local_day(e.ts) AS day, clickstream.label(e.page_url, '(not set)') AS page_url,
			   count(*) AS page_views, count(DISTINCT e.user_id) AS users
		FROM clickstream.events e WHERE e.event_type = 'page_view' GROUP BY 1, 2),
	i AS (
		SELECT s.session_date AS day, clickstream.label(s.landing_page, '(not set)') AS page_url,
			   count(*) AS entrances
		FROM clickstream.sessions s GROUP BY 1, 2),
	o AS (
		SELECT s.session_date AS day, clickstream.label(s.exit_page, '(not set)') AS page_url,
			   count(*) AS exits
		FROM clickstream.sessions s GROUP BY 1, 2)
	SELECT day, page_url, coalesce(v.page_views, 0), coalesce(i.entrances, 0), coalesce(o.exits, 0),
		   coalesce(v.users, 0)
	FROM v FULL JOIN i USING (day, page_url) FULL JOIN o USING (day, page_url)
$$;

COMMENT ON FUNCTION clickstream.recompute_pages_daily() IS
'Full recomputation of clickstream.pages_daily from silver and clickstream.sessions.';

-- Incremental maintenance ---------------------------------------------------------
--
-- One step: read the step's new events (pg_temp.clickstream_step_events) and
-- the sessions it removed and wrote (pg_temp.clickstream_session_delta) into
-- small scratch tables, probing the big tables by key (LATERAL: an index
-- probe per user, day or order, never a scan that grows with history);
-- derive every delta from those; then write each mart with one statement.

-- Per-call scratch tables of the marts; emptied at every commit.
CREATE FUNCTION clickstream.marts_scratch()
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	PERFORM clickstream.scratch_renew();
	IF to_regclass('pg_temp.clickstream_session_keys') IS NOT NULL THEN
		-- (emptied at commit; a second step in one transaction, two
		-- replay_dead_letters() by hand, found the first one's rows)
		DELETE FROM pg_temp.clickstream_day_delta;
		DELETE FROM pg_temp.clickstream_hour_delta;
		DELETE FROM pg_temp.clickstream_user_day_delta;
		DELETE FROM pg_temp.clickstream_session_keys;
		DELETE FROM pg_temp.clickstream_user_delta;
		DELETE FROM pg_temp.clickstream_new_days;
		DELETE FROM pg_temp.clickstream_user_firsts;
		DELETE FROM pg_temp.clickstream_active_delta;
		DELETE FROM pg_temp.clickstream_cohort_delta;
		DELETE FROM pg_temp.clickstream_order_delta;
		RETURN;
	END IF;
	-- additions to daily_metrics and hourly_metrics, summed when applied
	CREATE TEMP TABLE clickstream_day_delta (
		day date NOT NULL,
		events bigint NOT NULL DEFAULT 0,
		page_views bigint NOT NULL DEFAULT 0,
		users bigint NOT NULL DEFAULT 0,
		new_users bigint NOT NULL DEFAULT 0,
		sessions bigint NOT NULL DEFAULT 0,
		bounced bigint NOT NULL DEFAULT 0,
		converted bigint NOT NULL DEFAULT 0,
		seconds numeric NOT NULL DEFAULT 0,
		orders bigint NOT NULL DEFAULT 0,
		units bigint NOT NULL DEFAULT 0,
		revenue numeric NOT NULL DEFAULT 0
	) ON COMMIT DELETE ROWS;
	CREATE TEMP TABLE clickstream_hour_delta (
		hour timestamptz NOT NULL,
		events bigint NOT NULL DEFAULT 0,
		users bigint NOT NULL DEFAULT 0,
		sessions bigint NOT NULL DEFAULT 0,
		orders bigint NOT NULL DEFAULT 0,
		revenue numeric NOT NULL DEFAULT 0
	) ON COMMIT DELETE ROWS;
	-- the step's events per user and day, with what user_days held before
	-- (and the pairs whose sessions changed: their first touches and
	-- audiences, recomputed; NULL when unchanged)
	CREATE TEMP TABLE clickstream_user_day_delta (
		user_id text COLLATE "C" NOT NULL,
		day date NOT NULL,
		events bigint NOT NULL,
		hours integer NOT NULL,
		pages text[] NOT NULL,
		categories text[] NOT NULL,
		traffic text[],
		audience text[],
		fresh boolean NOT NULL,
		old_hours integer NOT NULL,
		old_pages text[] NOT NULL,
		old_categories text[] NOT NULL,
		old_traffic text[] NOT NULL,
		old_audience text[] NOT NULL
	) ON COMMIT DELETE ROWS;
	-- per user, day and key of traffic_daily (t) or audience_daily (a),
	-- the net change of the user's sessions of that day with that key
	CREATE TEMP TABLE clickstream_session_keys (
		user_id text COLLATE "C" NOT NULL,
		day date NOT NULL,
		kind "char" NOT NULL,
		key text NOT NULL,
		sessions bigint NOT NULL
	) ON COMMIT DELETE ROWS;
	-- the step's events per user, with what users held before
	CREATE TEMP TABLE clickstream_user_delta (
		user_id text COLLATE "C" NOT NULL,
		events bigint NOT NULL,
		first_ts timestamptz NOT NULL,
		first_id text COLLATE "C" NOT NULL,
		utm_source text,
		utm_medium text,
		utm_campaign text,
		last_ts timestamptz NOT NULL,
		last_id text COLLATE "C" NOT NULL,
		country text,
		device text,
		country_ts timestamptz,
		country_id text COLLATE "C",
		device_ts timestamptz,
		device_id text COLLATE "C",
		known boolean NOT NULL,
		old_first_ts timestamptz,
		old_last_ts timestamptz
	) ON COMMIT DELETE ROWS;
	-- the (user, day) pairs that are new, with the user's nearest old days
	CREATE TEMP TABLE clickstream_new_days (
		user_id text COLLATE "C" NOT NULL,
		day date NOT NULL,
		prev_old date,
		next_old date,
		prev_new date
	) ON COMMIT DELETE ROWS;
	-- per user with new days: the first day before and after
	CREATE TEMP TABLE clickstream_user_firsts (
		user_id text COLLATE "C" NOT NULL,
		old_first date,
		new_first date NOT NULL,
		fresh integer NOT NULL
	) ON COMMIT DELETE ROWS;
	CREATE TEMP TABLE clickstream_active_delta (
		day date NOT NULL,
		dau bigint NOT NULL,
		wau bigint NOT NULL,
		mau bigint NOT NULL
	) ON COMMIT DELETE ROWS;
	CREATE TEMP TABLE clickstream_cohort_delta (
		cohort_week date NOT NULL,
		week_number integer NOT NULL,	-- -1: the cohort's size
		users bigint NOT NULL
	) ON COMMIT DELETE ROWS;
	-- orders as they were (-1) and are (+1) after the step
	CREATE TEMP TABLE clickstream_order_delta (
		sign integer NOT NULL,
		order_id text NOT NULL,
		user_id text COLLATE "C" NOT NULL,
		ordered_at timestamptz NOT NULL,
		revenue numeric NOT NULL
	) ON COMMIT DELETE ROWS;
END
$$;

COMMENT ON FUNCTION clickstream.marts_scratch() IS
'Internal: create the session''s scratch tables of the marts'' maintenance (the deltas of a refresh step; ON COMMIT DELETE ROWS).';

-- Bring every mart up to date with the step.  dirty: a query of (user_id,
-- from_ts, to_ts), the ranges whose sessions refresh_gold() recomputed from
-- their events (the orders in them are given their session again).
CREATE FUNCTION clickstream.marts_apply(dirty text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	tz text := current_setting('clickstream.timezone');
	shared_slots jsonb;
BEGIN
	PERFORM clickstream.marts_scratch();
	-- statistics of the columns the plans join, group and filter on only:
	-- the arrays, jsonb and other columns made ANALYZE cost more than the
	-- statements it informs (0.8 s of a 60 000-event step; 0.2 s now)
	ANALYZE pg_temp.clickstream_step_events (event_id, event_type, user_id, ts, product_id,
		category, page_url, order_id);
	ANALYZE pg_temp.clickstream_session_delta (sign, user_id, session_date, session_start,
		utm_source, utm_medium, utm_campaign, country, device);

	-- 1. Read: the step per (user, day) and per user, with the rows it
	-- changes, each found by its key.

	INSERT INTO pg_temp.clickstream_user_day_delta
	SELECT a.user_id, a.day, a.events, a.hours, a.pages, a.categories, NULL, NULL, o.hours IS NULL,
		   coalesce(o.hours, 0), coalesce(o.pages, '{}'), coalesce(o.categories, '{}'),
		   coalesce(o.traffic, '{}'), coalesce(o.audience, '{}')
	FROM (SELECT e.user_id, clickstream.local_day(e.ts) AS day, count(*) AS events,
				 bit_or(1 << clickstream.hour_of_day(e.ts)) AS hours,
				 coalesce(array_agg(DISTINCT clickstream.page_key(e.page_url) COLLATE "C"
									ORDER BY clickstream.page_key(e.page_url) COLLATE "C")
						  FILTER (WHERE e.event_type = 'page_view'), '{}') AS pages,
				 array_agg(DISTINCT clickstream.label(e.category, '(not set)') COLLATE "C"
						   ORDER BY clickstream.label(e.category, '(not set)') COLLATE "C") AS categories
		  FROM pg_temp.clickstream_step_events e GROUP BY 1, 2) a
	-- (every probe into a table that grows with history is a LATERAL
	-- subquery with OFFSET 0: one index probe per key.  Without the fence
	-- the planner may flatten it into a hash or merge join over the whole
	-- table, which it does while a step touches a large share of the
	-- table's rows: 950 000 rows of user_days read for 30 000 pairs at
	-- 10xH in the marts benchmark, a step's cost growing with history)
	LEFT JOIN LATERAL (
		SELECT u.hours, u.pages, u.categories, u.traffic, u.audience FROM clickstream.user_days u
		WHERE u.user_id = a.user_id AND u.day = a.day OFFSET 0) o ON true;
	-- The (user, day) pairs whose sessions changed what they count: per
	-- first touch (t) and per country and device (a), the net change of the
	-- user's sessions of that day (sessions rewritten alike cancel out).  A
	-- key that gained sessions is in the day's set now; one that lost some
	-- may have left it: those few pairs are recounted from their sessions
	-- (an index range scan), the others merge what they gained.
	-- (grouped by the raw columns first: most sessions were rewritten with
	-- the same values, and their -1 and +1 cancel before a key is built)
	INSERT INTO pg_temp.clickstream_session_keys
	SELECT r.user_id, r.session_date, 't', clickstream.traffic_key(r.utm_source, r.utm_medium, r.utm_campaign),
		   sum(r.sessions)
	FROM (SELECT d.user_id, d.session_date, d.utm_source, d.utm_medium, d.utm_campaign, sum(d.sign) AS sessions
		  FROM pg_temp.clickstream_session_delta d
		  GROUP BY 1, 2, 3, 4, 5
		  HAVING sum(d.sign) <> 0) r
	GROUP BY 1, 2, 4
	HAVING sum(r.sessions) <> 0
	UNION ALL
	SELECT r.user_id, r.session_date, 'a', clickstream.audience_key(r.country, r.device), sum(r.sessions)
	FROM (SELECT d.user_id, d.session_date, d.country, d.device, sum(d.sign) AS sessions
		  FROM pg_temp.clickstream_session_delta d
		  GROUP BY 1, 2, 3, 4
		  HAVING sum(d.sign) <> 0) r
	GROUP BY 1, 2, 4
	HAVING sum(r.sessions) <> 0;
	ANALYZE pg_temp.clickstream_session_keys;
	INSERT INTO pg_temp.clickstream_user_day_delta
	SELECT k.user_id, k.day, 0, 0, '{}', '{}', NULL, NULL, false, o.hours, o.pages, o.categories,
		   o.traffic, o.audience
	FROM (SELECT DISTINCT x.user_id, x.day FROM pg_temp.clickstream_session_keys x) k
	CROSS JOIN LATERAL (
		SELECT u.hours, u.pages, u.categories, u.traffic, u.audience FROM clickstream.user_days u
		WHERE u.user_id = k.user_id AND u.day = k.day OFFSET 0) o
	WHERE NOT EXISTS (SELECT 1 FROM pg_temp.clickstream_user_day_delta x
					  WHERE x.user_id = k.user_id AND x.day = k.day);
	UPDATE pg_temp.clickstream_user_day_delta d
	SET traffic = CASE WHEN k.t_lost THEN NULL ELSE clickstream.text_set_union(d.old_traffic, k.t_gained) END,
		audience = CASE WHEN k.a_lost THEN NULL ELSE clickstream.text_set_union(d.old_audience, k.a_gained) END
	FROM (SELECT x.user_id, x.day,
				 coalesce(array_agg(x.key COLLATE "C" ORDER BY x.key COLLATE "C")
						  FILTER (WHERE x.kind = 't' AND x.sessions > 0), '{}') AS t_gained,
				 coalesce(array_agg(x.key COLLATE "C" ORDER BY x.key COLLATE "C")
						  FILTER (WHERE x.kind = 'a' AND x.sessions > 0), '{}') AS a_gained,
				 bool_or(x.kind = 't' AND x.sessions < 0) AS t_lost,
				 bool_or(x.kind = 'a' AND x.sessions < 0) AS a_lost
		  FROM pg_temp.clickstream_session_keys x GROUP BY 1, 2) k
	WHERE d.user_id = k.user_id AND d.day = k.day;
	UPDATE pg_temp.clickstream_user_day_delta d
	SET traffic = coalesce(d.traffic, coalesce(s.traffic, '{}')),
		audience = coalesce(d.audience, coalesce(s.audience, '{}'))
	FROM (SELECT DISTINCT x.user_id, x.day FROM pg_temp.clickstream_session_keys x WHERE x.sessions < 0) k
	CROSS JOIN LATERAL (
		SELECT array_agg(DISTINCT clickstream.traffic_key(s.utm_source, s.utm_medium, s.utm_campaign) COLLATE "C"
						 ORDER BY clickstream.traffic_key(s.utm_source, s.utm_medium, s.utm_campaign) COLLATE "C") AS traffic,
			   array_agg(DISTINCT clickstream.audience_key(s.country, s.device) COLLATE "C"
						 ORDER BY clickstream.audience_key(s.country, s.device) COLLATE "C") AS audience
		FROM clickstream.sessions s
		-- (session_date decides; the range, a day wider on each side, lets
		-- the index find them: where local midnight happens twice, as in
		-- America/Havana when clocks go back, day::timestamp AT TIME ZONE
		-- is the later midnight and the day's first hour falls before it)
		WHERE s.user_id = k.user_id
			AND s.session_start >= (k.day - 1)::timestamp AT TIME ZONE tz
			AND s.session_start < (k.day + 2)::timestamp AT TIME ZONE tz
			AND s.session_date = k.day) s
	WHERE d.user_id = k.user_id AND d.day = k.day;
	ANALYZE pg_temp.clickstream_user_day_delta (user_id, day, fresh);

	-- (one sort: each user's first event, with the last one and the count
	-- from the window over all of the user's events)
	INSERT INTO pg_temp.clickstream_user_delta
	WITH f AS MATERIALIZED (
		SELECT DISTINCT ON (e.user_id) e.user_id, e.ts, e.event_id, e.utm_source, e.utm_medium,
			   e.utm_campaign, count(*) OVER w AS events, last_value(e.ts) OVER w AS last_ts,
			   last_value(e.event_id) OVER w AS last_id, last_value(e.country) OVER w AS last_country,
			   last_value(e.device) OVER w AS last_device
		FROM pg_temp.clickstream_step_events e
		WINDOW w AS (PARTITION BY e.user_id ORDER BY e.ts, e.event_id
					 ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING)
		ORDER BY e.user_id, e.ts, e.event_id),
	-- the last known country and device: the last event's, or, for the few
	-- users whose last event has none, of the latest event that has one
	c AS (
		SELECT DISTINCT ON (e.user_id) e.user_id, e.ts, e.event_id, e.country
		FROM pg_temp.clickstream_step_events e
		WHERE e.country <> ''
			AND e.user_id IN (SELECT f.user_id FROM f WHERE NOT coalesce(f.last_country <> '', false))
		ORDER BY e.user_id, e.ts DESC, e.event_id DESC),
	d AS (
		SELECT DISTINCT ON (e.user_id) e.user_id, e.ts, e.event_id, e.device
		FROM pg_temp.clickstream_step_events e
		WHERE e.device <> ''
			AND e.user_id IN (SELECT f.user_id FROM f WHERE NOT coalesce(f.last_device <> '', false))
		ORDER BY e.user_id, e.ts DESC, e.event_id DESC)
	SELECT f.user_id, f.events, f.ts, f.event_id, f.utm_source, f.utm_medium, f.utm_campaign,
		   f.last_ts, f.last_id,
		   CASE WHEN f.last_country <> '' THEN f.last_country ELSE c.country END,
		   CASE WHEN f.last_device <> '' THEN f.last_device ELSE d.device END,
		   CASE WHEN f.last_country <> '' THEN f.last_ts ELSE c.ts END,
		   CASE WHEN f.last_country <> '' THEN f.last_id ELSE c.event_id END,
		   CASE WHEN f.last_device <> '' THEN f.last_ts ELSE d.ts END,
		   CASE WHEN f.last_device <> '' THEN f.last_id ELSE d.event_id END,
		   o.first_seen IS NOT NULL, o.first_seen, o.last_seen
	FROM f
	LEFT JOIN c USING (user_id)
	LEFT JOIN d USING (user_id)
	LEFT JOIN LATERAL (
		SELECT u.first_seen, u.last_seen FROM clickstream.users u WHERE u.user_id = f.user_id OFFSET 0) o ON true;
	ANALYZE pg_temp.clickstream_user_delta (user_id, known);

	-- new (user, day) pairs and the user's nearest other active days: from
	-- users' first and last days, or (a day between them: a late event)
	-- index probes into user_days
	INSERT INTO pg_temp.clickstream_new_days
	SELECT d.user_id, d.day,
		   CASE WHEN NOT u.known THEN NULL
				WHEN d.day > clickstream.local_day(u.old_last_ts) THEN clickstream.local_day(u.old_last_ts)
				WHEN d.day < clickstream.local_day(u.old_first_ts) THEN NULL
				ELSE (SELECT max(x.day) FROM clickstream.user_days x
					  WHERE x.user_id = d.user_id AND x.day < d.day) END,
		   CASE WHEN NOT u.known THEN NULL
				WHEN d.day > clickstream.local_day(u.old_last_ts) THEN NULL
				WHEN d.day < clickstream.local_day(u.old_first_ts) THEN clickstream.local_day(u.old_first_ts)
				ELSE (SELECT min(x.day) FROM clickstream.user_days x
					  WHERE x.user_id = d.user_id AND x.day > d.day) END,
		   lag(d.day) OVER (PARTITION BY d.user_id ORDER BY d.day)
	FROM pg_temp.clickstream_user_day_delta d
	JOIN pg_temp.clickstream_user_delta u USING (user_id)
	WHERE d.fresh;

	INSERT INTO pg_temp.clickstream_user_firsts
	SELECT n.user_id, f.old_first, least(f.old_first, min(n.day)), count(*)
	FROM pg_temp.clickstream_new_days n
	JOIN pg_temp.clickstream_user_delta u USING (user_id)
	CROSS JOIN LATERAL (
		SELECT CASE WHEN u.known THEN clickstream.local_day(u.old_first_ts) END AS old_first) f
	GROUP BY n.user_id, f.old_first;

	-- orders: the step's lines per order; what the orders counted before
	-- (-1) and count after (+1)
	INSERT INTO pg_temp.clickstream_order_delta
	SELECT -1, o.order_id, o.user_id, o.ordered_at, o.revenue
	FROM (SELECT DISTINCT clickstream.order_key(e.order_id, e.event_id) AS order_id
		  FROM pg_temp.clickstream_step_events e WHERE e.event_type = 'purchase') k
	CROSS JOIN LATERAL (
		SELECT o.order_id, o.user_id, o.ordered_at, o.revenue
		-- (order_key() of a C-collated event_id: the primary key's collation
		-- named, or the probe could not use it)
		FROM clickstream.orders o WHERE o.order_id = k.order_id COLLATE "default" OFFSET 0) o;
	WITH l AS (
		SELECT clickstream.order_key(e.order_id, e.event_id) AS order_id, e.user_id, e.ts,
			   e.event_id, coalesce(e.quantity, 1) AS units, coalesce(e.revenue, 0) AS revenue
		FROM pg_temp.clickstream_step_events e
		WHERE e.event_type = 'purchase'),
	written AS (
		INSERT INTO clickstream.orders AS o (order_id, user_id, session_id, ordered_at, day, lines,
			units, revenue, first_event_id)
		SELECT f.order_id, f.user_id, NULL, f.ts, clickstream.local_day(f.ts), a.lines, a.units,
			   a.revenue, f.event_id
		FROM (SELECT DISTINCT ON (l.order_id) l.order_id, l.user_id, l.ts, l.event_id
			  FROM l ORDER BY l.order_id, l.ts, l.event_id) f
		JOIN (SELECT l.order_id, count(*)::integer AS lines, sum(l.units) AS units,
					 sum(l.revenue) AS revenue
			  FROM l GROUP BY l.order_id) a USING (order_id)
		ON CONFLICT (order_id) DO UPDATE
		SET lines = o.lines + excluded.lines,
			units = o.units + excluded.units,
			revenue = o.revenue + excluded.revenue,
			user_id = CASE WHEN (excluded.ordered_at, excluded.first_event_id) < (o.ordered_at, o.first_event_id)
						   THEN excluded.user_id ELSE o.user_id END,
			day = CASE WHEN (excluded.ordered_at, excluded.first_event_id) < (o.ordered_at, o.first_event_id)
					   THEN excluded.day ELSE o.day END,
			first_event_id = CASE WHEN (excluded.ordered_at, excluded.first_event_id) < (o.ordered_at, o.first_event_id)
								  THEN excluded.first_event_id ELSE o.first_event_id END,
			ordered_at = least(o.ordered_at, excluded.ordered_at)
		RETURNING o.order_id, o.user_id, o.ordered_at, o.revenue)
	INSERT INTO pg_temp.clickstream_order_delta
	SELECT 1, w.order_id, w.user_id, w.ordered_at, w.revenue FROM written w;
	-- their sessions: of the orders written, and of the orders in the
	-- ranges whose sessions were replaced (index probes)
	UPDATE clickstream.orders o
	SET session_id = (
		SELECT s.session_id FROM clickstream.sessions s
		WHERE s.user_id = o.user_id AND (s.session_start, s.first_event_id) <= (o.ordered_at, o.first_event_id)
		ORDER BY s.session_start DESC, s.first_event_id DESC
		LIMIT 1)
	WHERE o.order_id = ANY (ARRAY(
		SELECT d.order_id FROM pg_temp.clickstream_order_delta d WHERE d.sign = 1));
	EXECUTE format($q$
		UPDATE clickstream.orders o
		SET session_id = (
			SELECT s.session_id FROM clickstream.sessions s
			WHERE s.user_id = o.user_id AND (s.session_start, s.first_event_id) <= (o.ordered_at, o.first_event_id)
			ORDER BY s.session_start DESC, s.first_event_id DESC
			LIMIT 1)
		WHERE o.ctid = ANY (ARRAY(
			SELECT x.ctid
			FROM (%s) d
			CROSS JOIN LATERAL (
				SELECT o2.ctid FROM clickstream.orders o2
				WHERE o2.user_id = d.user_id AND o2.ordered_at >= d.from_ts
					AND o2.ordered_at <= d.to_ts OFFSET 0) x))
	$q$, dirty);

	-- 2. Derive: active users, retention, the daily and hourly additions.

	-- A new pair (u, d) adds u to the windows of the days from d on that
	-- no other active day of u covered: with p the latest active day before
	-- d (old, or new and earlier in this step) and n the next old one, the
	-- W-day windows of [max(d, p + W), min(d + W - 1, n - 1)].
	INSERT INTO pg_temp.clickstream_active_delta
	SELECT g.day + x.i, sum(x.dau), sum(x.wau), sum(x.mau)
	FROM (SELECT n.day, greatest(0, p.p + 7 - n.day) AS lo7, least(6, n.next_old - 1 - n.day) AS hi7,
				 greatest(0, p.p + 30 - n.day) AS lo30, least(29, n.next_old - 1 - n.day) AS hi30,
				 count(*) AS users
		  FROM pg_temp.clickstream_new_days n
		  CROSS JOIN LATERAL (SELECT greatest(n.prev_old, n.prev_new) AS p) p
		  GROUP BY 1, 2, 3, 4, 5) g
	CROSS JOIN LATERAL (
		SELECT 0 AS i, g.users AS dau, 0 AS wau, 0 AS mau
		UNION ALL
		SELECT i, 0, g.users, 0 FROM generate_series(g.lo7, g.hi7) i
		UNION ALL
		SELECT i, 0, 0, g.users FROM generate_series(g.lo30, g.hi30) i) x
	GROUP BY 1;

	-- Retention.  A user whose cohort week stays: each week that gets its
	-- first active day adds the user there.  A new user joins the cohort
	-- of its first day with all the weeks of its new days.  A user whose
	-- first day moves to an earlier week (a late event) leaves the old
	-- cohort with all its weeks and joins the new one with all of them.
	INSERT INTO pg_temp.clickstream_cohort_delta
	SELECT x.cohort_week, x.week_number, sum(x.users)
	FROM (
		SELECT clickstream.week_of(f.new_first) AS cohort_week,
			   (clickstream.week_of(n.day) - clickstream.week_of(f.new_first)) / 7 AS week_number,
			   1 AS users
		FROM pg_temp.clickstream_new_days n
		JOIN pg_temp.clickstream_user_firsts f USING (user_id)
		WHERE f.old_first IS NOT NULL
			AND clickstream.week_of(f.old_first) = clickstream.week_of(f.new_first)
			AND NOT coalesce(n.prev_old >= clickstream.week_of(n.day), false)
			AND NOT coalesce(n.next_old <= clickstream.week_of(n.day) + 6, false)
			AND NOT coalesce(n.prev_new >= clickstream.week_of(n.day), false)
		UNION ALL
		SELECT clickstream.week_of(f.new_first), -1, 1
		FROM pg_temp.clickstream_user_firsts f
		WHERE f.old_first IS NULL
		UNION ALL
		SELECT DISTINCT ON (n.user_id, clickstream.week_of(n.day))
			   clickstream.week_of(f.new_first),
			   (clickstream.week_of(n.day) - clickstream.week_of(f.new_first)) / 7, 1
		FROM pg_temp.clickstream_new_days n
		JOIN pg_temp.clickstream_user_firsts f USING (user_id)
		WHERE f.old_first IS NULL
		UNION ALL
		SELECT clickstream.week_of(f.old_first), -1, -1
		FROM pg_temp.clickstream_user_firsts f
		WHERE clickstream.week_of(f.old_first) <> clickstream.week_of(f.new_first)
		UNION ALL
		SELECT clickstream.week_of(f.old_first),
			   (w.week - clickstream.week_of(f.old_first)) / 7, -1
		FROM pg_temp.clickstream_user_firsts f
		CROSS JOIN LATERAL (
			SELECT DISTINCT clickstream.week_of(u.day) AS week
			FROM clickstream.user_days u WHERE u.user_id = f.user_id) w
		WHERE clickstream.week_of(f.old_first) <> clickstream.week_of(f.new_first)
		UNION ALL
		SELECT clickstream.week_of(f.new_first), -1, 1
		FROM pg_temp.clickstream_user_firsts f
		WHERE clickstream.week_of(f.old_first) <> clickstream.week_of(f.new_first)
		UNION ALL
		-- (the weeks of the step's new days joined once: probed per user,
		-- the unindexed new days were scanned once per moved user)
		SELECT clickstream.week_of(m.new_first),
			   (m.week - clickstream.week_of(m.new_first)) / 7, 1
		FROM (SELECT f.user_id, f.new_first, w.week
			  FROM pg_temp.clickstream_user_firsts f
			  CROSS JOIN LATERAL (
				  SELECT clickstream.week_of(u.day) AS week
				  FROM clickstream.user_days u WHERE u.user_id = f.user_id) w
			  WHERE clickstream.week_of(f.old_first) <> clickstream.week_of(f.new_first)
			  UNION
			  SELECT f.user_id, f.new_first, clickstream.week_of(n.day)
			  FROM pg_temp.clickstream_new_days n
			  JOIN pg_temp.clickstream_user_firsts f USING (user_id)
			  WHERE clickstream.week_of(f.old_first) <> clickstream.week_of(f.new_first)) m
	) x
	GROUP BY x.cohort_week, x.week_number
	HAVING sum(x.users) <> 0;

	INSERT INTO pg_temp.clickstream_day_delta (day, users)
	SELECT n.day, count(*) FROM pg_temp.clickstream_new_days n GROUP BY n.day;
	INSERT INTO pg_temp.clickstream_day_delta (day, new_users)
	SELECT f.new_first, 1 FROM pg_temp.clickstream_user_firsts f
	WHERE f.old_first IS DISTINCT FROM f.new_first
	UNION ALL
	SELECT f.old_first, -1 FROM pg_temp.clickstream_user_firsts f
	WHERE f.old_first <> f.new_first;
	INSERT INTO pg_temp.clickstream_day_delta (day, events, page_views, units, revenue)
	SELECT clickstream.local_day(e.ts), count(*),
		   count(*) FILTER (WHERE e.event_type = 'page_view'),
		   coalesce(sum(coalesce(e.quantity, 1)) FILTER (WHERE e.event_type = 'purchase'), 0),
		   coalesce(sum(e.revenue) FILTER (WHERE e.event_type = 'purchase'), 0)
	FROM pg_temp.clickstream_step_events e GROUP BY 1;
	INSERT INTO pg_temp.clickstream_day_delta (day, sessions, bounced, converted, seconds)
	SELECT d.session_date, sum(d.sign),
		   coalesce(sum(d.sign) FILTER (WHERE d.events = 1 AND d.page_views = 1), 0),
		   coalesce(sum(d.sign) FILTER (WHERE d.converted), 0),
		   sum(d.sign * extract(epoch FROM d.duration))
	FROM pg_temp.clickstream_session_delta d
	GROUP BY 1;
	INSERT INTO pg_temp.clickstream_day_delta (day, orders)
	SELECT clickstream.local_day(d.ordered_at), sum(d.sign)
	FROM pg_temp.clickstream_order_delta d GROUP BY 1;

	-- A user is new to an hour when the hour's bit is new to the user's day.
	-- Except where two local hours are one row: an hour that starts in a
	-- skipped interval (New York's 02:00 to 03:00, Pacific/Chatham's 02:45
	-- to 03:45) has the next one's start as its key.  Such slots of the
	-- step's days and their neighbours (rare: none on most days) are looked
	-- up in user_days, once per row.
	WITH days AS (
		SELECT DISTINCT x.day
		FROM (SELECT DISTINCT d.day FROM pg_temp.clickstream_user_day_delta d) d,
			 LATERAL (VALUES (d.day - 1), (d.day), (d.day + 1)) x(day)),
	slots AS (
		SELECT x.day, g.b, (x.day + make_interval(hours => g.b)) AT TIME ZONE tz AS hour
		FROM days x, generate_series(0, 23) g(b))
	SELECT jsonb_agg(jsonb_build_object('day', s.day, 'b', s.b, 'hour', s.hour))
	INTO shared_slots
	FROM slots s
	WHERE EXISTS (SELECT FROM slots t WHERE t.hour = s.hour AND (t.day, t.b) <> (s.day, s.b));

	IF shared_slots IS NULL THEN
		INSERT INTO pg_temp.clickstream_hour_delta (hour, users)
		SELECT (d.day + make_interval(hours => g.b)) AT TIME ZONE tz, count(*)
		FROM pg_temp.clickstream_user_day_delta d, generate_series(0, 23) g(b)
		WHERE (d.hours & ~d.old_hours) & (1 << g.b) <> 0
		GROUP BY 1;
	ELSE
		INSERT INTO pg_temp.clickstream_hour_delta (hour, users)
		WITH shared AS MATERIALIZED (
			SELECT x.day, x.b, x.hour
			FROM jsonb_to_recordset(shared_slots) x(day date, b integer, hour timestamptz))
		SELECT (d.day + make_interval(hours => g.b)) AT TIME ZONE tz, count(*)
		FROM pg_temp.clickstream_user_day_delta d, generate_series(0, 23) g(b)
		WHERE (d.hours & ~d.old_hours) & (1 << g.b) <> 0
			AND NOT EXISTS (SELECT FROM shared s WHERE s.day = d.day AND s.b = g.b)
		GROUP BY 1
		UNION ALL
		SELECT n.hour, count(*)
		FROM (SELECT DISTINCT d.user_id, s.hour
			  FROM pg_temp.clickstream_user_day_delta d
			  JOIN shared s ON s.day = d.day
			  WHERE (d.hours & ~d.old_hours) & (1 << s.b) <> 0) n
		WHERE NOT EXISTS (
			SELECT FROM shared t
			JOIN clickstream.user_days u ON u.user_id = n.user_id AND u.day = t.day
			WHERE t.hour = n.hour AND u.hours & (1 << t.b) <> 0)
		GROUP BY 1;
	END IF;
	INSERT INTO pg_temp.clickstream_hour_delta (hour, events, revenue)
	SELECT clickstream.local_hour(e.ts), count(*),
		   coalesce(sum(e.revenue) FILTER (WHERE e.event_type = 'purchase'), 0)
	FROM pg_temp.clickstream_step_events e GROUP BY 1;
	INSERT INTO pg_temp.clickstream_hour_delta (hour, sessions)
	SELECT clickstream.local_hour(d.session_start), sum(d.sign)
	FROM pg_temp.clickstream_session_delta d GROUP BY 1;
	INSERT INTO pg_temp.clickstream_hour_delta (hour, orders)
	SELECT clickstream.local_hour(d.ordered_at), sum(d.sign)
	FROM pg_temp.clickstream_order_delta d GROUP BY 1;

	-- 3. Write.

	INSERT INTO clickstream.user_days AS u (user_id, day, events, hours, pages, categories,
		traffic, audience)
	SELECT d.user_id, d.day, d.events, d.hours, d.pages, d.categories,
		   coalesce(d.traffic, d.old_traffic), coalesce(d.audience, d.old_audience)
	FROM pg_temp.clickstream_user_day_delta d
	ON CONFLICT (user_id, day) DO UPDATE
	SET events = u.events + excluded.events,
		hours = u.hours | excluded.hours,
		pages = clickstream.text_set_union(u.pages, excluded.pages),
		categories = clickstream.text_set_union(u.categories, excluded.categories),
		traffic = excluded.traffic,
		audience = excluded.audience;

	-- users: counts, first touch, last event, sessions, and the orders
	-- they gained or lost; a user who lost an order to another (a late
	-- first line) is recomputed from its orders below
	INSERT INTO clickstream.users AS u (user_id, first_seen, last_seen, first_event_id,
		last_event_id, utm_source, utm_medium, utm_campaign, country, device, events,
		sessions, orders, revenue, first_order_at, days_active, country_seen_at,
		country_event_id, device_seen_at, device_event_id)
	SELECT d.user_id, d.first_ts, d.last_ts, d.first_id, d.last_id, d.utm_source, d.utm_medium,
		   d.utm_campaign, d.country, d.device, d.events, coalesce(s.sessions, 0),
		   coalesce(o.orders, 0), coalesce(o.revenue, 0), o.first_order_at, coalesce(f.fresh, 0),
		   d.country_ts, d.country_id, d.device_ts, d.device_id
	FROM pg_temp.clickstream_user_delta d
	LEFT JOIN pg_temp.clickstream_user_firsts f USING (user_id)
	LEFT JOIN (SELECT x.user_id, sum(x.sign) AS sessions
			   FROM pg_temp.clickstream_session_delta x GROUP BY 1) s USING (user_id)
	LEFT JOIN (SELECT x.user_id, sum(x.sign) AS orders, sum(x.sign * x.revenue) AS revenue,
					  min(x.ordered_at) FILTER (WHERE x.sign = 1) AS first_order_at
			   FROM pg_temp.clickstream_order_delta x GROUP BY 1) o USING (user_id)
	-- (in key order: neighbouring index pages instead of random ones, 11 %
	-- less time for this statement on 450 000-event steps)
	ORDER BY d.user_id
	ON CONFLICT (user_id) DO UPDATE
	SET events = u.events + excluded.events,
		sessions = u.sessions + excluded.sessions,
		orders = u.orders + excluded.orders,
		revenue = u.revenue + excluded.revenue,
		first_order_at = least(u.first_order_at, excluded.first_order_at),
		days_active = u.days_active + excluded.days_active,
		first_seen = least(u.first_seen, excluded.first_seen),
		first_event_id = CASE WHEN (excluded.first_seen, excluded.first_event_id) < (u.first_seen, u.first_event_id)
							  THEN excluded.first_event_id ELSE u.first_event_id END,
		utm_source = CASE WHEN (excluded.first_seen, excluded.first_event_id) < (u.first_seen, u.first_event_id)
						  THEN excluded.utm_source ELSE u.utm_source END,
		utm_medium = CASE WHEN (excluded.first_seen, excluded.first_event_id) < (u.first_seen, u.first_event_id)
						  THEN excluded.utm_medium ELSE u.utm_medium END,
		utm_campaign = CASE WHEN (excluded.first_seen, excluded.first_event_id) < (u.first_seen, u.first_event_id)
							THEN excluded.utm_campaign ELSE u.utm_campaign END,
		last_seen = greatest(u.last_seen, excluded.last_seen),
		last_event_id = CASE WHEN (excluded.last_seen, excluded.last_event_id) > (u.last_seen, u.last_event_id)
							 THEN excluded.last_event_id ELSE u.last_event_id END,
		-- (a step without a country keeps the known one: NULL < anything)
		country = CASE WHEN (excluded.country_seen_at, excluded.country_event_id)
							> (u.country_seen_at, u.country_event_id) OR u.country_seen_at IS NULL
					   THEN coalesce(excluded.country, u.country) ELSE u.country END,
		country_event_id = CASE WHEN (excluded.country_seen_at, excluded.country_event_id)
									 > (u.country_seen_at, u.country_event_id) OR u.country_seen_at IS NULL
								THEN coalesce(excluded.country_event_id, u.country_event_id)
								ELSE u.country_event_id END,
		country_seen_at = greatest(u.country_seen_at, excluded.country_seen_at),
		device = CASE WHEN (excluded.device_seen_at, excluded.device_event_id)
						   > (u.device_seen_at, u.device_event_id) OR u.device_seen_at IS NULL
					  THEN coalesce(excluded.device, u.device) ELSE u.device END,
		device_event_id = CASE WHEN (excluded.device_seen_at, excluded.device_event_id)
									> (u.device_seen_at, u.device_event_id) OR u.device_seen_at IS NULL
							   THEN coalesce(excluded.device_event_id, u.device_event_id)
							   ELSE u.device_event_id END,
		device_seen_at = greatest(u.device_seen_at, excluded.device_seen_at);
	-- users without events in the step whose sessions or orders changed
	-- (none in practice: both come from the step's events), and owners
	-- that lost an order: recomputed from their sessions and orders
	-- (found by key: joined, the planner's estimate of the EXCEPT, the
	-- size of its first input, made it a hash join over all of users)
	UPDATE clickstream.users u
	SET sessions = (SELECT count(*) FROM clickstream.sessions s WHERE s.user_id = u.user_id),
		(orders, revenue, first_order_at) = (
			SELECT count(*), coalesce(sum(o.revenue), 0), min(o.ordered_at)
			FROM clickstream.orders o WHERE o.user_id = u.user_id)
	WHERE u.user_id = ANY (ARRAY(
		SELECT x.user_id FROM pg_temp.clickstream_session_delta x
		UNION SELECT x.user_id FROM pg_temp.clickstream_order_delta x
		EXCEPT SELECT d.user_id FROM pg_temp.clickstream_user_delta d
		UNION
		SELECT x.user_id FROM pg_temp.clickstream_order_delta x
		WHERE x.sign = -1 AND NOT EXISTS (
			SELECT 1 FROM pg_temp.clickstream_order_delta y
			WHERE y.sign = 1 AND y.order_id = x.order_id AND y.user_id = x.user_id)));

	-- category_daily and pages_daily: the counts of the step's events, and
	-- the users for whom the key is new that day
	INSERT INTO clickstream.category_daily AS t
	SELECT day, category, coalesce(c.page_views, 0), coalesce(c.add_to_carts, 0),
		   coalesce(c.purchases, 0), coalesce(c.units, 0), coalesce(c.revenue, 0), coalesce(u.users, 0)
	FROM (SELECT clickstream.local_day(e.ts) AS day, clickstream.label(e.category, '(not set)') AS category,
				 count(*) FILTER (WHERE e.event_type = 'page_view') AS page_views,
				 count(*) FILTER (WHERE e.event_type = 'add_to_cart') AS add_to_carts,
				 count(*) FILTER (WHERE e.event_type = 'purchase') AS purchases,
				 coalesce(sum(coalesce(e.quantity, 1)) FILTER (WHERE e.event_type = 'purchase'), 0) AS units,
				 coalesce(sum(e.revenue) FILTER (WHERE e.event_type = 'purchase'), 0) AS revenue
		  FROM pg_temp.clickstream_step_events e GROUP BY 1, 2) c
	FULL JOIN (SELECT d.day, k.category, count(*) AS users
			   FROM pg_temp.clickstream_user_day_delta d,
					unnest(clickstream.text_set_minus(d.categories, d.old_categories)) k(category)
			   GROUP BY 1, 2) u USING (day, category)
	ON CONFLICT (day, category) DO UPDATE
	SET page_views = t.page_views + excluded.page_views,
		add_to_carts = t.add_to_carts + excluded.add_to_carts,
		purchases = t.purchases + excluded.purchases,
		units = t.units + excluded.units,
		revenue = t.revenue + excluded.revenue,
		users = t.users + excluded.users;

	INSERT INTO clickstream.pages_daily AS t
	SELECT day, page_url, sum(x.page_views), sum(x.entrances), sum(x.exits), sum(x.users)
	FROM (SELECT clickstream.local_day(e.ts) AS day, clickstream.label(e.page_url, '(not set)') AS page_url,
				 1 AS page_views, 0 AS entrances, 0 AS exits, 0 AS users
		  FROM pg_temp.clickstream_step_events e WHERE e.event_type = 'page_view'
		  UNION ALL
		  -- (a page new to a user's day is a page of the step's events that
		  -- day: its URL from there, once the users are counted per key)
		  SELECT p.day, p.page_url, 0, 0, 0, u.users
		  FROM (SELECT d.day, k.page_key, count(*) AS users
				FROM pg_temp.clickstream_user_day_delta d,
					 unnest(clickstream.text_set_minus(d.pages, d.old_pages)) k(page_key)
				GROUP BY 1, 2) u
		  JOIN (SELECT clickstream.local_day(e.ts) AS day, clickstream.page_key(e.page_url) AS page_key,
					   min(clickstream.label(e.page_url, '(not set)') COLLATE "C") AS page_url
				FROM pg_temp.clickstream_step_events e WHERE e.event_type = 'page_view'
				GROUP BY 1, 2) p USING (day, page_key)
		  UNION ALL
		  SELECT d.session_date, clickstream.label(d.landing_page, '(not set)'), 0, d.sign, 0, 0
		  FROM pg_temp.clickstream_session_delta d
		  UNION ALL
		  SELECT d.session_date, clickstream.label(d.exit_page, '(not set)'), 0, 0, d.sign, 0
		  FROM pg_temp.clickstream_session_delta d) x
	GROUP BY 1, 2
	HAVING sum(x.page_views) <> 0 OR sum(x.entrances) <> 0 OR sum(x.exits) <> 0 OR sum(x.users) <> 0
	ON CONFLICT (day, md5(page_url)) DO UPDATE
	SET page_views = t.page_views + excluded.page_views,
		entrances = t.entrances + excluded.entrances,
		exits = t.exits + excluded.exits,
		users = t.users + excluded.users;
	DELETE FROM clickstream.pages_daily t
	WHERE (t.day, md5(t.page_url)) IN (
		-- (the md5 of each distinct page, not of every session's)
		SELECT x.day, md5(x.page_url)
		FROM (SELECT d.session_date AS day, clickstream.label(d.landing_page, '(not set)') AS page_url
			  FROM pg_temp.clickstream_session_delta d
			  UNION
			  SELECT d.session_date, clickstream.label(d.exit_page, '(not set)')
			  FROM pg_temp.clickstream_session_delta d) x)
		AND t.page_views = 0 AND t.entrances = 0 AND t.exits = 0;

	-- products, per day and over all time
	INSERT INTO clickstream.product_daily AS t
	SELECT clickstream.local_day(e.ts), e.product_id, min(nullif(e.category, '') COLLATE "C"),
		   count(*) FILTER (WHERE e.event_type = 'page_view'),
		   count(*) FILTER (WHERE e.event_type = 'add_to_cart'),
		   count(*) FILTER (WHERE e.event_type = 'remove_from_cart'),
		   count(*) FILTER (WHERE e.event_type = 'purchase'),
		   coalesce(sum(coalesce(e.quantity, 1)) FILTER (WHERE e.event_type = 'purchase'), 0),
		   coalesce(sum(e.revenue) FILTER (WHERE e.event_type = 'purchase'), 0)
	FROM pg_temp.clickstream_step_events e
	WHERE e.product_id <> ''
	GROUP BY 1, 2
	ON CONFLICT (day, product_id) DO UPDATE
	SET category = least(t.category COLLATE "C", excluded.category),
		page_views = t.page_views + excluded.page_views,
		add_to_carts = t.add_to_carts + excluded.add_to_carts,
		removes = t.removes + excluded.removes,
		purchases = t.purchases + excluded.purchases,
		units = t.units + excluded.units,
		revenue = t.revenue + excluded.revenue;

	INSERT INTO clickstream.products AS t
	SELECT a.product_id, a.category, a.first_seen, a.last_seen, a.page_views, a.add_to_carts,
		   a.removes, a.purchases, a.units, a.revenue,
		   clickstream.rate(a.add_to_carts, a.page_views), clickstream.rate(a.purchases, a.add_to_carts),
		   p.price, p.ts, p.event_id
	FROM (SELECT e.product_id, min(nullif(e.category, '') COLLATE "C") AS category, min(e.ts) AS first_seen,
				 max(e.ts) AS last_seen,
				 count(*) FILTER (WHERE e.event_type = 'page_view') AS page_views,
				 count(*) FILTER (WHERE e.event_type = 'add_to_cart') AS add_to_carts,
				 count(*) FILTER (WHERE e.event_type = 'remove_from_cart') AS removes,
				 count(*) FILTER (WHERE e.event_type = 'purchase') AS purchases,
				 coalesce(sum(coalesce(e.quantity, 1)) FILTER (WHERE e.event_type = 'purchase'), 0) AS units,
				 coalesce(sum(e.revenue) FILTER (WHERE e.event_type = 'purchase'), 0) AS revenue
		  FROM pg_temp.clickstream_step_events e
		  WHERE e.product_id <> ''
		  GROUP BY e.product_id) a
	LEFT JOIN (SELECT DISTINCT ON (e.product_id) e.product_id, e.price, e.ts, e.event_id
			   FROM pg_temp.clickstream_step_events e
			   WHERE e.product_id <> '' AND e.price IS NOT NULL
			   ORDER BY e.product_id, e.ts DESC, e.event_id DESC) p USING (product_id)
	ON CONFLICT (product_id) DO UPDATE
	SET category = least(t.category COLLATE "C", excluded.category),
		first_seen = least(t.first_seen, excluded.first_seen),
		last_seen = greatest(t.last_seen, excluded.last_seen),
		page_views = t.page_views + excluded.page_views,
		add_to_carts = t.add_to_carts + excluded.add_to_carts,
		removes = t.removes + excluded.removes,
		purchases = t.purchases + excluded.purchases,
		units = t.units + excluded.units,
		revenue = t.revenue + excluded.revenue,
		view_to_cart_rate = clickstream.rate(t.add_to_carts + excluded.add_to_carts,
											 t.page_views + excluded.page_views),
		cart_to_purchase_rate = clickstream.rate(t.purchases + excluded.purchases,
												 t.add_to_carts + excluded.add_to_carts),
		last_price = CASE WHEN t.last_price_at IS NULL
							   OR (excluded.last_price_at, excluded.last_price_event_id) > (t.last_price_at, t.last_price_event_id)
						  THEN coalesce(excluded.last_price, t.last_price) ELSE t.last_price END,
		last_price_event_id = CASE WHEN t.last_price_at IS NULL
									   OR (excluded.last_price_at, excluded.last_price_event_id) > (t.last_price_at, t.last_price_event_id)
								  THEN coalesce(excluded.last_price_event_id, t.last_price_event_id)
								  ELSE t.last_price_event_id END,
		last_price_at = CASE WHEN t.last_price_at IS NULL
								 OR (excluded.last_price_at, excluded.last_price_event_id) > (t.last_price_at, t.last_price_event_id)
							THEN coalesce(excluded.last_price_at, t.last_price_at) ELSE t.last_price_at END;

	-- traffic and audience: what the sessions count, and the users who
	-- gained or lost a first touch (or country and device) that day.  A
	-- session leaves its row when a late event changes its first touch; the
	-- scale of the difference would be that of the revenue removed, so the
	-- revenue is kept without trailing zeros, as the recomputation gives it.
	INSERT INTO clickstream.traffic_daily AS t
	SELECT (x.key ->> 0)::date, x.key ->> 1, x.key ->> 2, x.key ->> 3, sum(x.sessions), sum(x.users),
		   sum(x.converted), trim_scale(sum(x.revenue))
	FROM (SELECT jsonb_build_array(d.session_date) || clickstream.traffic_key(d.utm_source, d.utm_medium, d.utm_campaign)::jsonb AS key,
				 d.sessions, 0 AS users, d.converted, d.revenue
		  FROM (SELECT d.session_date, d.utm_source, d.utm_medium, d.utm_campaign, sum(d.sign) AS sessions,
					   sum(CASE WHEN d.converted THEN d.sign ELSE 0 END) AS converted,
					   sum(d.sign * d.revenue) AS revenue
				FROM pg_temp.clickstream_session_delta d
				GROUP BY 1, 2, 3, 4) d
		  UNION ALL
		  SELECT jsonb_build_array(d.day) || a.key::jsonb, 0, 1, 0, 0
		  FROM pg_temp.clickstream_user_day_delta d, unnest(clickstream.text_set_minus(d.traffic, d.old_traffic)) a(key)
		  WHERE d.traffic IS NOT NULL
		  UNION ALL
		  SELECT jsonb_build_array(d.day) || a.key::jsonb, 0, -1, 0, 0
		  FROM pg_temp.clickstream_user_day_delta d, unnest(clickstream.text_set_minus(d.old_traffic, d.traffic)) a(key)
		  WHERE d.traffic IS NOT NULL) x
	GROUP BY x.key
	HAVING sum(x.sessions) <> 0 OR sum(x.users) <> 0 OR sum(x.converted) <> 0 OR sum(x.revenue) <> 0
	ON CONFLICT (day, utm_source, utm_medium, utm_campaign) DO UPDATE
	SET sessions = t.sessions + excluded.sessions,
		users = t.users + excluded.users,
		converted_sessions = t.converted_sessions + excluded.converted_sessions,
		revenue = trim_scale(t.revenue + excluded.revenue);
	DELETE FROM clickstream.traffic_daily t
	WHERE (t.day, t.utm_source, t.utm_medium, t.utm_campaign) IN (
		SELECT DISTINCT d.session_date, clickstream.label(d.utm_source, '(direct)'),
			   clickstream.label(d.utm_medium, '(none)'), clickstream.label(d.utm_campaign, '(none)')
		FROM pg_temp.clickstream_session_delta d)
		AND t.sessions = 0;

	INSERT INTO clickstream.audience_daily AS t
	SELECT (x.key ->> 0)::date, x.key ->> 1, x.key ->> 2, sum(x.sessions), sum(x.users),
		   sum(x.converted), trim_scale(sum(x.revenue))
	FROM (SELECT jsonb_build_array(d.session_date) || clickstream.audience_key(d.country, d.device)::jsonb AS key,
				 d.sessions, 0 AS users, d.converted, d.revenue
		  FROM (SELECT d.session_date, d.country, d.device, sum(d.sign) AS sessions,
					   sum(CASE WHEN d.converted THEN d.sign ELSE 0 END) AS converted,
					   sum(d.sign * d.revenue) AS revenue
				FROM pg_temp.clickstream_session_delta d
				GROUP BY 1, 2, 3) d
		  UNION ALL
		  SELECT jsonb_build_array(d.day) || a.key::jsonb, 0, 1, 0, 0
		  FROM pg_temp.clickstream_user_day_delta d, unnest(clickstream.text_set_minus(d.audience, d.old_audience)) a(key)
		  WHERE d.audience IS NOT NULL
		  UNION ALL
		  SELECT jsonb_build_array(d.day) || a.key::jsonb, 0, -1, 0, 0
		  FROM pg_temp.clickstream_user_day_delta d, unnest(clickstream.text_set_minus(d.old_audience, d.audience)) a(key)
		  WHERE d.audience IS NOT NULL) x
	GROUP BY x.key
	HAVING sum(x.sessions) <> 0 OR sum(x.users) <> 0 OR sum(x.converted) <> 0 OR sum(x.revenue) <> 0
	ON CONFLICT (day, country, device) DO UPDATE
	SET sessions = t.sessions + excluded.sessions,
		users = t.users + excluded.users,
		converted_sessions = t.converted_sessions + excluded.converted_sessions,
		revenue = trim_scale(t.revenue + excluded.revenue);
	DELETE FROM clickstream.audience_daily t
	WHERE (t.day, t.country, t.device) IN (
		SELECT DISTINCT d.session_date, clickstream.label(d.country, '(not set)'),
			   clickstream.label(d.device, '(not set)')
		FROM pg_temp.clickstream_session_delta d)
		AND t.sessions = 0;

	PERFORM clickstream.marts_apply_deltas();
END
$$;

COMMENT ON FUNCTION clickstream.marts_apply(text) IS
'Internal (clickstream.refresh_gold()): bring every mart up to date with the step, from its new events (pg_temp.clickstream_step_events), the sessions it removed and wrote (pg_temp.clickstream_session_delta) and the ranges whose sessions were recomputed from their events (the query dirty: user_id, from_ts, to_ts; the orders in them are given their session again), probing the marts by key.';

-- Add the scratch deltas to daily_metrics, hourly_metrics, active_users
-- and cohort_retention, with the rates and growth of the rows touched.
CREATE FUNCTION clickstream.marts_apply_deltas()
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	WITH d AS (
		SELECT d.day, sum(d.events) AS events, sum(d.page_views) AS page_views,
			   sum(d.users) AS users, sum(d.new_users) AS new_users, sum(d.sessions) AS sessions,
			   sum(d.bounced) AS bounced, sum(d.converted) AS converted, round(sum(d.seconds), 6) AS seconds,
			   sum(d.orders) AS orders, sum(d.units) AS units, sum(d.revenue) AS revenue
		FROM pg_temp.clickstream_day_delta d GROUP BY d.day)
	INSERT INTO clickstream.daily_metrics AS t (day, events, page_views, users, new_users,
		sessions, bounced_sessions, converted_sessions, session_seconds, orders, units, revenue)
	SELECT * FROM d
	ON CONFLICT (day) DO UPDATE
	SET events = t.events + excluded.events,
		page_views = t.page_views + excluded.page_views,
		users = t.users + excluded.users,
		new_users = t.new_users + excluded.new_users,
		sessions = t.sessions + excluded.sessions,
		bounced_sessions = t.bounced_sessions + excluded.bounced_sessions,
		converted_sessions = t.converted_sessions + excluded.converted_sessions,
		-- (microseconds, as extract() gives them: a day that lost all its
		-- sessions keeps 0.000000, as a day without any)
		session_seconds = round(t.session_seconds + excluded.session_seconds, 6),
		orders = t.orders + excluded.orders,
		units = t.units + excluded.units,
		revenue = t.revenue + excluded.revenue;
	DELETE FROM clickstream.daily_metrics t
	WHERE t.day IN (SELECT d.day FROM pg_temp.clickstream_day_delta d) AND t.events = 0;
	-- the rates of the days touched, the growth of those and of the next
	UPDATE clickstream.daily_metrics t
	SET avg_session_seconds = clickstream.rate(t.session_seconds, t.sessions),
		bounce_rate = clickstream.rate(t.bounced_sessions, t.sessions),
		conversion_rate = clickstream.rate(t.converted_sessions, t.sessions),
		aov = clickstream.rate(t.revenue, t.orders),
		revenue_growth = clickstream.rate(t.revenue - p.revenue, p.revenue),
		users_growth = clickstream.rate(t.users - p.users, p.users),
		orders_growth = clickstream.rate(t.orders - p.orders, p.orders)
	FROM (SELECT d.day FROM pg_temp.clickstream_day_delta d
		  UNION SELECT d.day + 1 FROM pg_temp.clickstream_day_delta d) k
	LEFT JOIN clickstream.daily_metrics p ON p.day = k.day - 1
	WHERE t.day = k.day;

	WITH d AS (
		SELECT d.hour, sum(d.events) AS events, sum(d.users) AS users,
			   sum(d.sessions) AS sessions, sum(d.orders) AS orders, sum(d.revenue) AS revenue
		FROM pg_temp.clickstream_hour_delta d GROUP BY d.hour)
	INSERT INTO clickstream.hourly_metrics AS t
	SELECT d.hour, clickstream.local_day(d.hour), d.events, d.users, d.sessions, d.orders, d.revenue
	FROM d
	ON CONFLICT (hour) DO UPDATE
	SET events = t.events + excluded.events,
		users = t.users + excluded.users,
		sessions_started = t.sessions_started + excluded.sessions_started,
		orders = t.orders + excluded.orders,
		revenue = t.revenue + excluded.revenue;
	DELETE FROM clickstream.hourly_metrics t
	WHERE t.hour IN (SELECT d.hour FROM pg_temp.clickstream_hour_delta d) AND t.events = 0;

	INSERT INTO clickstream.active_users AS t
	SELECT d.day, d.dau, d.wau, d.mau, NULL FROM pg_temp.clickstream_active_delta d
	ON CONFLICT (day) DO UPDATE
	SET dau = t.dau + excluded.dau, wau = t.wau + excluded.wau, mau = t.mau + excluded.mau;
	UPDATE clickstream.active_users t SET stickiness = clickstream.rate(t.dau, t.mau)
	WHERE t.day IN (SELECT d.day FROM pg_temp.clickstream_active_delta d);

	-- retention: the cohorts' sizes, then the weeks' active users
	WITH size AS (
		SELECT d.cohort_week, sum(d.users) AS users
		FROM pg_temp.clickstream_cohort_delta d WHERE d.week_number = -1 GROUP BY 1)
	UPDATE clickstream.cohort_retention t SET cohort_users = t.cohort_users + s.users
	FROM size s WHERE t.cohort_week = s.cohort_week;
	INSERT INTO clickstream.cohort_retention AS t
	SELECT d.cohort_week, d.week_number,
		   coalesce((SELECT c.cohort_users FROM clickstream.cohort_retention c
					 WHERE c.cohort_week = d.cohort_week AND c.week_number = 0),
					(SELECT sum(s.users) FROM pg_temp.clickstream_cohort_delta s
					 WHERE s.cohort_week = d.cohort_week AND s.week_number = -1), 0),
		   d.users, NULL
	FROM pg_temp.clickstream_cohort_delta d WHERE d.week_number >= 0
	ON CONFLICT (cohort_week, week_number) DO UPDATE
	SET active_users = t.active_users + excluded.active_users;
	DELETE FROM clickstream.cohort_retention t
	WHERE t.cohort_week IN (SELECT d.cohort_week FROM pg_temp.clickstream_cohort_delta d)
		AND (t.active_users = 0 OR t.cohort_users = 0);
	UPDATE clickstream.cohort_retention t
	SET retention_rate = clickstream.rate(t.active_users, t.cohort_users)
	WHERE t.cohort_week IN (SELECT d.cohort_week FROM pg_temp.clickstream_cohort_delta d);
END
$$;

COMMENT ON FUNCTION clickstream.marts_apply_deltas() IS
'Internal (clickstream.marts_apply()): add the step''s scratch deltas to daily_metrics, hourly_metrics, active_users and cohort_retention, and recompute the rates and day-over-day growth of the rows they touched.';

-- Rebuild every mart and set from silver and clickstream.sessions.
CREATE FUNCTION clickstream.rebuild_marts()
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	mart regclass;
BEGIN
	-- TRUNCATE wants ACCESS EXCLUSIVE, which waits for every reader (and
	-- makes every later one wait): a dashboard's open transaction would
	-- hold the rebuild, and the refresh behind it.  When a reader is there,
	-- DELETE instead, which readers do not block.
	BEGIN
		LOCK TABLE clickstream.daily_metrics, clickstream.hourly_metrics, clickstream.category_daily,
			clickstream.product_daily, clickstream.products, clickstream.orders, clickstream.users,
			clickstream.active_users, clickstream.cohort_retention, clickstream.traffic_daily,
			clickstream.audience_daily, clickstream.pages_daily, clickstream.user_days
			IN ACCESS EXCLUSIVE MODE NOWAIT;
		TRUNCATE clickstream.daily_metrics, clickstream.hourly_metrics, clickstream.category_daily,
			clickstream.product_daily, clickstream.products, clickstream.orders, clickstream.users,
			clickstream.active_users, clickstream.cohort_retention, clickstream.traffic_daily,
			clickstream.audience_daily, clickstream.pages_daily, clickstream.user_days;
	EXCEPTION WHEN lock_not_available THEN
		FOREACH mart IN ARRAY ARRAY['clickstream.daily_metrics', 'clickstream.hourly_metrics',
				'clickstream.category_daily', 'clickstream.product_daily', 'clickstream.products',
				'clickstream.orders', 'clickstream.users', 'clickstream.active_users',
				'clickstream.cohort_retention', 'clickstream.traffic_daily',
				'clickstream.audience_daily', 'clickstream.pages_daily',
				'clickstream.user_days']::regclass[] LOOP
			EXECUTE format('DELETE FROM %s', mart);
		END LOOP;
	END;
	INSERT INTO clickstream.user_days SELECT * FROM clickstream.recompute_user_days();
	INSERT INTO clickstream.orders SELECT * FROM clickstream.recompute_orders();
	INSERT INTO clickstream.users SELECT * FROM clickstream.recompute_users();
	INSERT INTO clickstream.products SELECT * FROM clickstream.recompute_products();
	INSERT INTO clickstream.product_daily SELECT * FROM clickstream.recompute_product_daily();
	INSERT INTO clickstream.category_daily SELECT * FROM clickstream.recompute_category_daily();
	INSERT INTO clickstream.daily_metrics SELECT * FROM clickstream.recompute_daily_metrics();
	INSERT INTO clickstream.hourly_metrics SELECT * FROM clickstream.recompute_hourly_metrics();
	INSERT INTO clickstream.active_users SELECT * FROM clickstream.recompute_active_users();
	INSERT INTO clickstream.cohort_retention SELECT * FROM clickstream.recompute_cohort_retention();
	INSERT INTO clickstream.traffic_daily SELECT * FROM clickstream.recompute_traffic_daily();
	INSERT INTO clickstream.audience_daily SELECT * FROM clickstream.recompute_audience_daily();
	INSERT INTO clickstream.pages_daily SELECT * FROM clickstream.recompute_pages_daily();
END
$$;

COMMENT ON FUNCTION clickstream.rebuild_marts() IS
'Internal (clickstream.rebuild_gold()): empty every mart and set and fill it with its full recomputation.';

REVOKE ALL ON FUNCTION clickstream.marts_scratch() FROM PUBLIC;
REVOKE ALL ON FUNCTION clickstream.marts_apply(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION clickstream.marts_apply_deltas() FROM PUBLIC;
REVOKE ALL ON FUNCTION clickstream.rebuild_marts() FROM PUBLIC;

-- Right now ------------------------------------------------------------------------

-- The last minutes at query time: silver's newest events (through the BRIN
-- and purchase indexes of clickstream.events) and what bronze holds that the
-- refresh has not promoted yet, parsed on the fly.
CREATE VIEW clickstream.live AS
WITH recent AS (
	SELECT e.user_id, e.ts, e.event_type, e.revenue
	FROM clickstream.events e
	WHERE e.ts >= now() - interval '5 minutes'
		AND e.event_date >= (now() AT TIME ZONE current_setting('clickstream.timezone'))::date - 2
	UNION ALL
	-- (one row per event id, as the refresh keeps: the first delivered)
	(SELECT DISTINCT ON (p.event_id) p.user_id, p.ts, p.event_type, p.revenue
	 FROM clickstream.bronze b
	 CROSS JOIN LATERAL clickstream.parse_event(b.payload) p
	 WHERE p.reason IS NULL AND p.ts >= now() - interval '5 minutes'
	 ORDER BY p.event_id, b.kafka_timestamp, b.kafka_partition, b.kafka_offset)),
counted AS (
	SELECT to_timestamp(floor(extract(epoch FROM r.ts) / 10) * 10) AS bucket,
		   count(*) AS events,
		   count(DISTINCT r.user_id) AS users,
		   count(*) FILTER (WHERE r.event_type = 'purchase') AS purchases,
		   coalesce(sum(r.revenue) FILTER (WHERE r.event_type = 'purchase'), 0) AS revenue
	FROM recent r
	GROUP BY 1)
-- every bucket the window touches, with or without events, and those ahead
-- of now of events within clickstream.max_clock_skew
SELECT bucket, coalesce(c.events, 0) AS events, coalesce(c.users, 0) AS users,
	   coalesce(c.purchases, 0) AS purchases, coalesce(c.revenue, 0) AS revenue
FROM generate_series(to_timestamp(floor(extract(epoch FROM now() - interval '5 minutes') / 10) * 10),
					 now(), interval '10 seconds') AS b(bucket)
FULL JOIN counted c USING (bucket);

COMMENT ON VIEW clickstream.live IS
'Right now, seconds fresh: per 10-second bucket of the last 5 minutes (all 31 that the window touches, the first and the current one partial, with zeros where nothing happened; and a bucket ahead of now for events up to clickstream.max_clock_skew in the future), events, distinct users, purchases and revenue, from silver and from the bronze rows the refresh has not promoted yet (parsed on the fly). The bronze part is validated and deduplicated within bronze by event id; a redelivery of an event already promoted is counted again until the refresh drops it. A user with events on both sides is counted once. Its cost follows the events of the last 5 minutes, not history.';
COMMENT ON COLUMN clickstream.live.bucket IS 'Start of the 10-second bucket (by event time).';
COMMENT ON COLUMN clickstream.live.events IS 'Events in the bucket.';
COMMENT ON COLUMN clickstream.live.users IS 'Distinct users with an event in the bucket.';
COMMENT ON COLUMN clickstream.live.purchases IS 'Purchase events in the bucket.';
COMMENT ON COLUMN clickstream.live.revenue IS 'Their revenue.';

CREATE VIEW clickstream.live_summary AS
WITH unpromoted AS (
	SELECT DISTINCT ON (p.event_id) p.user_id, p.ts, p.event_type, p.revenue, p.order_id, p.event_id
	FROM clickstream.bronze b
	CROSS JOIN LATERAL clickstream.parse_event(b.payload) p
	WHERE p.reason IS NULL AND p.ts >= now() - interval '1 hour'
	ORDER BY p.event_id, b.kafka_timestamp, b.kafka_partition, b.kafka_offset),
last5 AS (
	SELECT e.user_id, e.ts FROM clickstream.events e
	WHERE e.ts >= now() - interval '5 minutes'
		AND e.event_date >= (now() AT TIME ZONE current_setting('clickstream.timezone'))::date - 2
	UNION ALL
	SELECT u.user_id, u.ts FROM unpromoted u WHERE u.ts >= now() - interval '5 minutes'),
purchases AS (
	SELECT e.revenue, clickstream.order_key(e.order_id, e.event_id) AS order_id
	FROM clickstream.events e
	WHERE e.event_type = 'purchase' AND e.ts >= now() - interval '1 hour'
		AND e.event_date >= (now() AT TIME ZONE current_setting('clickstream.timezone'))::date - 2
	UNION ALL
	SELECT u.revenue, clickstream.order_key(u.order_id, u.event_id)
	FROM unpromoted u WHERE u.event_type = 'purchase')
SELECT (SELECT count(*) FROM last5) AS events_5m,
	   (SELECT count(DISTINCT l.user_id) FROM last5 l) AS users_5m,
	   (SELECT count(DISTINCT p.order_id) FROM purchases p) AS orders_1h,
	   (SELECT coalesce(sum(p.revenue), 0) FROM purchases p) AS revenue_1h,
	   (SELECT max(l.ts) FROM last5 l) AS last_event_at,
	   (SELECT count(*) FROM clickstream.bronze) AS unpromoted,
	   (SELECT min(b.ingested_at) FROM clickstream.bronze b) AS oldest_unpromoted_at;

COMMENT ON VIEW clickstream.live_summary IS
'Right now, one row: events and distinct users of the last 5 minutes, orders and revenue of the last hour, the newest event time, and how much bronze holds that the refresh has not promoted yet. Silver plus bronze parsed on the fly, like clickstream.live (bronze deduplicated by event id within itself, not against silver).';
COMMENT ON COLUMN clickstream.live_summary.events_5m IS 'Events in the last 5 minutes.';
COMMENT ON COLUMN clickstream.live_summary.users_5m IS 'Distinct users with an event in the last 5 minutes.';
COMMENT ON COLUMN clickstream.live_summary.orders_1h IS 'Orders with a purchase event in the last hour.';
COMMENT ON COLUMN clickstream.live_summary.revenue_1h IS 'Revenue of the purchase events of the last hour.';
COMMENT ON COLUMN clickstream.live_summary.last_event_at IS 'Time of the newest event of the last 5 minutes.';
COMMENT ON COLUMN clickstream.live_summary.unpromoted IS 'Rows in bronze, waiting for the refresh.';
COMMENT ON COLUMN clickstream.live_summary.oldest_unpromoted_at IS 'When the oldest of them was ingested: how far behind silver and gold are.';
