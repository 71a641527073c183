-- The saved questions of Metabase's "Clickstream" dashboard, in dashboard
-- order.  setup.py saves each as a native question of the Clickstream
-- database (read by the metabase login, a member of clickstream_reader) and
-- lays them out left to right, top to bottom, on a 24-column grid;
-- test/t/016_dashboards.pl runs each as that login.  All read the gold
-- marts; windows end today in clickstream.timezone.
--
-- A question is a header of "-- key: value" lines, then its SQL, ending
-- with a line that ends with a semicolon.  Keys: name (unique), description,
-- display (scalar, line, bar, row, pie, funnel, table), size (columns x
-- rows), x and y (the columns of a chart: dimension, metrics).

-- name: Revenue, last 30 days
-- description: Revenue of the purchase events of the last 30 days (daily_metrics).
-- display: scalar
-- size: 6x3
SELECT coalesce(sum(revenue), 0) AS revenue
FROM clickstream.daily_metrics
WHERE day > clickstream.local_day(now()) - 30;

-- name: Orders, last 30 days
-- description: Orders whose first line is in the last 30 days (daily_metrics).
-- display: scalar
-- size: 6x3
SELECT coalesce(sum(orders), 0) AS orders
FROM clickstream.daily_metrics
WHERE day > clickstream.local_day(now()) - 30;

-- name: Average order value, last 30 days
-- description: Revenue / orders over the last 30 days.
-- display: scalar
-- size: 6x3
SELECT round(sum(revenue) / nullif(sum(orders), 0), 2) AS aov
FROM clickstream.daily_metrics
WHERE day > clickstream.local_day(now()) - 30;

-- name: Conversion rate, last 30 days
-- description: Sessions with a purchase / sessions, of the sessions started in the last 30 days.
-- display: scalar
-- size: 6x3
SELECT clickstream.rate(sum(converted_sessions), sum(sessions)) AS conversion_rate
FROM clickstream.daily_metrics
WHERE day > clickstream.local_day(now()) - 30;

-- name: Revenue and orders per day
-- description: Revenue, orders and average order value per day, last 30 days (daily_metrics).
-- display: line
-- size: 12x6
-- x: day
-- y: revenue, orders
SELECT day, revenue, orders, aov
FROM clickstream.daily_metrics
WHERE day > clickstream.local_day(now()) - 30
ORDER BY day;

-- name: Sessions and conversion per day
-- description: Sessions started per day, their conversion and bounce rates, last 30 days (daily_metrics).
-- display: line
-- size: 12x6
-- x: day
-- y: conversion_rate, bounce_rate
SELECT day, sessions, conversion_rate, bounce_rate
FROM clickstream.daily_metrics
WHERE day > clickstream.local_day(now()) - 30
ORDER BY day;

-- name: Active users
-- description: Exact distinct users per day, 7 days and 30 days, last 90 days (active_users).
-- display: line
-- size: 12x6
-- x: day
-- y: dau, wau, mau
SELECT day, dau, wau, mau, stickiness
FROM clickstream.active_users
WHERE day > clickstream.local_day(now()) - 90 AND day <= clickstream.local_day(now())
ORDER BY day;

-- name: Revenue by category
-- description: Revenue and units per category, last 30 days (category_daily).
-- display: row
-- size: 12x6
-- x: category
-- y: revenue
SELECT category, sum(revenue) AS revenue, sum(units) AS units
FROM clickstream.category_daily
WHERE day > clickstream.local_day(now()) - 30
GROUP BY category
ORDER BY revenue DESC
LIMIT 15;

-- name: Funnel, last 30 days
-- description: Sessions started in the last 30 days that reached each step of the funnel (daily_funnel).
-- display: funnel
-- size: 8x6
-- x: step_name
-- y: sessions
SELECT step_name, sum(reached) AS sessions
FROM clickstream.daily_funnel
WHERE day > clickstream.local_day(now()) - 30
GROUP BY step, step_name
ORDER BY step;

-- name: Top products, last 30 days
-- description: The 20 products with the most revenue in the last 30 days, with their event rates (product_daily).
-- display: table
-- size: 16x6
SELECT product_id,
       clickstream.label(max(category), '(not set)') AS category,
       sum(page_views) AS views,
       sum(add_to_carts) AS carts,
       sum(purchases) AS purchases,
       sum(revenue) AS revenue,
       clickstream.rate(sum(add_to_carts), sum(page_views)) AS view_to_cart,
       clickstream.rate(sum(purchases), sum(add_to_carts)) AS cart_to_purchase
FROM clickstream.product_daily
WHERE day > clickstream.local_day(now()) - 30
GROUP BY product_id
ORDER BY sum(revenue) DESC, product_id
LIMIT 20;

-- name: High interest, low conversion
-- description: Products many sessions viewed or carted but few bought, last 7 days (high_interest_low_conversion).
-- display: table
-- size: 12x6
SELECT product_id,
       clickstream.label(nullif(category, ''), '(not set)') AS category,
       sum(views) AS viewed_in_sessions,
       sum(carts) AS carted_in_sessions,
       sum(purchases) AS bought_in_sessions,
       clickstream.rate(sum(purchases), sum(views)) AS conversion
FROM clickstream.high_interest_low_conversion
WHERE day > clickstream.local_day(now()) - 7
GROUP BY 1, 2
ORDER BY 3 DESC, 1
LIMIT 20;

-- name: Traffic sources, last 30 days
-- description: Sessions by first touch (utm_source and utm_medium of their first event), last 30 days (traffic_daily).
-- display: table
-- size: 12x6
SELECT utm_source, utm_medium,
       sum(sessions) AS sessions,
       sum(converted_sessions) AS converted_sessions,
       clickstream.rate(sum(converted_sessions), sum(sessions)) AS conversion_rate,
       sum(revenue) AS revenue
FROM clickstream.traffic_daily
WHERE day > clickstream.local_day(now()) - 30
GROUP BY 1, 2
ORDER BY 3 DESC
LIMIT 20;

-- name: Sessions by country and device, last 30 days
-- description: Sessions by the country and device of their first event (audience_daily).
-- display: bar
-- size: 12x6
-- x: country
-- y: sessions
SELECT country, device, sum(sessions) AS sessions, sum(revenue) AS revenue
FROM clickstream.audience_daily
WHERE day > clickstream.local_day(now()) - 30
GROUP BY 1, 2
ORDER BY 3 DESC
LIMIT 30;

-- name: Landing pages, last 30 days
-- description: The pages sessions started on, with their views and exits (pages_daily).
-- display: table
-- size: 12x6
SELECT page_url, sum(entrances) AS entrances, sum(page_views) AS page_views, sum(exits) AS exits
FROM clickstream.pages_daily
WHERE day > clickstream.local_day(now()) - 30
GROUP BY page_url
ORDER BY 2 DESC
LIMIT 20;

-- name: Weekly retention
-- description: Users by the week of their first event, and the share of them active 1 to 6 weeks later (cohort_retention).
-- display: table
-- size: 24x6
SELECT cohort_week,
       max(cohort_users) AS users,
       max(retention_rate) FILTER (WHERE week_number = 1) AS week_1,
       max(retention_rate) FILTER (WHERE week_number = 2) AS week_2,
       max(retention_rate) FILTER (WHERE week_number = 3) AS week_3,
       max(retention_rate) FILTER (WHERE week_number = 4) AS week_4,
       max(retention_rate) FILTER (WHERE week_number = 5) AS week_5,
       max(retention_rate) FILTER (WHERE week_number = 6) AS week_6
FROM clickstream.cohort_retention
WHERE cohort_week > clickstream.local_day(now()) - 91
GROUP BY cohort_week
ORDER BY cohort_week DESC;

-- name: Best customers
-- description: The 20 users with the highest lifetime value, with their first touch (users).
-- display: table
-- size: 12x6
SELECT user_id, revenue AS lifetime_value, orders, sessions, days_active, first_seen,
       clickstream.label(utm_source, '(direct)') AS first_source, country, device
FROM clickstream.users
ORDER BY revenue DESC, user_id
LIMIT 20;

-- name: Right now
-- description: Events and users of the last 5 minutes, orders and revenue of the last hour, seconds fresh (live_summary).
-- display: table
-- size: 12x6
SELECT events_5m, users_5m, orders_1h, revenue_1h, last_event_at, unpromoted, oldest_unpromoted_at
FROM clickstream.live_summary;

-- name: Pipeline status
-- description: Per Kafka partition: lag, messages waiting in bronze, ingest rate, last batch, last error, age of the last refresh (status).
-- display: table
-- size: 16x6
SELECT topic, partition, consumer, lag, silver_backlog, messages_per_sec, last_batch_at,
       last_error, refresh_age
FROM clickstream.status
ORDER BY topic, partition;

-- name: Dead letters by reason, last 7 days
-- description: Messages refused in the last 7 days, by reason and stage; the payloads stay private (dead_letters_daily).
-- display: row
-- size: 8x6
-- x: reason
-- y: messages
SELECT reason, stage, sum(messages) AS messages, max(last_at) AS last_at
FROM clickstream.dead_letters_daily
WHERE day > clickstream.local_day(now()) - 7
GROUP BY 1, 2
ORDER BY 3 DESC;

-- name: Refresh runs, last 24 hours
-- description: Each clickstream.refresh() run of the last day: duration, rows promoted and rejected, status (refresh_history).
-- display: line
-- size: 24x6
-- x: started_at
-- y: seconds
SELECT started_at, extract(epoch FROM duration) AS seconds, rows_promoted, rows_rejected, status
FROM clickstream.refresh_history
WHERE kind = 'refresh' AND started_at > now() - interval '1 day' AND finished_at IS NOT NULL
ORDER BY started_at;
