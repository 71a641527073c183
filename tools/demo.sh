#!/usr/bin/env bash
# The main job, end to end, on the embedded default: a private PostgreSQL
# cluster, the local broker, the event generator streaming realistic traffic
# (with some duplicates, malformed and late events), the ingestion worker,
# the silver refresh (registered with pg_cron, and called every few seconds),
# and a summary on screen.  Usage: tools/demo.sh [seconds] [events-per-second]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
seconds=${1:-30}
rate=${2:-10000}

bash "$root/tools/setup.sh"

source "$root/tools/cluster.sh"
cs_workdir demo
port=54329
psql_demo() { cs_psql "$@"; }

cleanup() {
	[ -n "${gen_pid:-}" ] && kill "$gen_pid" 2>/dev/null || true
	cs_stop
}
trap cleanup EXIT

echo "== local Kafka broker (librdkafka mock cluster), topic clickstream, 16 partitions"
cs_start_broker 16
echo "   bootstrap: $brokers"

echo "== private PostgreSQL cluster in $work/data (port $port), with pg_cron"
cs_start_cluster "$port" "shared_preload_libraries = 'clickstream,pg_cron'
cron.database_name = 'postgres'
cron.use_background_workers = on
max_worker_processes = 32
# a small shop's thresholds for clickstream.high_interest_low_conversion
clickstream.interest_min_views = 30
clickstream.interest_min_carts = 10
clickstream.interest_max_conversion = 0.03"
psql_demo -qc "CREATE EXTENSION clickstream" -c "CREATE EXTENSION pg_cron"
echo "   pg_cron job $(psql_demo -Atc "SELECT clickstream.schedule()"): CALL clickstream.refresh() every minute;"
echo "   the demo also calls it every few seconds to show silver filling up"

echo "== generator: $rate events/s for ${seconds}s (1% duplicates, 1% malformed, 2% late)"
"$root/tools/eventgen" --brokers "$brokers" --topic clickstream --rate "$rate" \
	--duration "$seconds" --users 50000 --products 2000 --seed 7 \
	--dup-share 0.01 --bad-share 0.01 --late-share 0.02 \
	--manifest "$work/manifest" 2> "$work/eventgen.log" &
gen_pid=$!

printf '\n%6s %12s %10s %12s %12s %10s %8s %10s\n' "t (s)" "ingested" "rows/s" "in bronze" "silver" "sessions" "dead" "lag"
start=$(date +%s)
while kill -0 "$gen_pid" 2>/dev/null; do
	sleep 4
	psql_demo -qc "CALL clickstream.refresh()" 2>/dev/null || true
	psql_demo -Atc "SELECT (SELECT coalesce(sum(committed_offset), 0) FROM clickstream.status),
	       round((SELECT sum(messages_per_sec) FROM clickstream.status)),
	       (SELECT count(*) FROM clickstream.bronze),
	       (SELECT count(*) FROM clickstream.events),
	       (SELECT count(*) FROM clickstream.sessions),
	       (SELECT count(*) FROM clickstream.dead_letters),
	       (SELECT CASE WHEN bool_and(lag IS NOT NULL) THEN sum(lag)::text ELSE '?' END
	        FROM clickstream.status)" |
		awk -F'|' -v t=$(( $(date +%s) - start )) '{printf "%6d %12d %10d %12d %12d %10d %8d %10s\n", t, $1, $2, $3, $4, $5, $6, $7}'
done
gen_pid=""
produced=$(grep '^messages=' "$work/manifest" | cut -d= -f2)
valid=$(grep '^valid=' "$work/manifest" | cut -d= -f2)
malformed=$(grep '^malformed=' "$work/manifest" | cut -d= -f2)

# let the worker drain the rest, then promote it
for _ in $(seq 60); do
	done_rows=$(psql_demo -Atc "SELECT coalesce(sum(committed_offset), 0) FROM clickstream.status")
	[ "$done_rows" -ge "$produced" ] && break
	sleep 1
done
# a scheduled run may be at work (this call then returns at once with a
# NOTICE): call again until no run is left and bronze is empty
for _ in $(seq 120); do
	psql_demo -qc "CALL clickstream.refresh()" 2>/dev/null || true
	[ "$(psql_demo -Atc "SELECT (SELECT count(*) FROM clickstream.bronze)
		+ (SELECT count(*) FROM clickstream.refresh_history WHERE status = 'running')")" = 0 ] && break
	sleep 1
done

echo
echo "== summary"
echo "   generator: $(tail -n1 "$work/eventgen.log")"
psql_demo <<SQL
\pset footer off
\echo '-- what came in and where it went (the generator''s manifest against the tables)'
SELECT $produced AS produced,
       (SELECT sum(committed_offset) FROM clickstream.status) AS ingested,
       $valid AS valid_distinct_sent, (SELECT count(*) FROM clickstream.events) AS silver_events,
       $malformed AS malformed_sent, (SELECT count(*) FROM clickstream.dead_letters) AS dead_letters,
       (SELECT count(*) FROM clickstream.bronze) AS left_in_bronze,
       (SELECT sum(lag) FROM clickstream.status) AS total_lag;

\echo '-- dead letters by stage and reason'
SELECT stage, reason, count(*), max(detail) AS example FROM clickstream.dead_letters GROUP BY 1, 2 ORDER BY 1, 3 DESC;

\echo '-- refresh runs (pg_cron and the demo)'
SELECT run_id, status, steps, rows_read, rows_promoted, rows_duplicate, rows_rejected,
       partitions_created, sessions_written, round(extract(epoch FROM duration)::numeric, 2) AS seconds,
       round(extract(epoch FROM gold_time)::numeric, 2) AS gold_seconds,
       round(extract(epoch FROM marts_time)::numeric, 2) AS marts_seconds
FROM clickstream.refresh_history ORDER BY run_id DESC LIMIT 5;

\echo '-- gold: sessions per day (kept by every refresh), and the same from a full recomputation'
SELECT session_date, count(*) AS sessions, count(DISTINCT user_id) AS users,
       round(avg(events), 1) AS events_per_session,
       to_char(avg(duration), 'MI:SS') AS avg_duration,
       round(100.0 * avg(converted::int), 2) AS conversion_pct, sum(revenue) AS revenue,
       count(*) FILTER (WHERE utm_source IS NOT NULL) AS from_campaigns
FROM clickstream.sessions GROUP BY 1 ORDER BY 1;
SELECT (SELECT count(*) FROM clickstream.sessions) AS sessions_kept,
       (SELECT count(*) FROM clickstream.session_rows('clickstream.events')) AS sessions_recomputed,
       (SELECT count(*) FROM (
            SELECT session_id, events, revenue, session_end FROM clickstream.sessions
            EXCEPT SELECT session_id, events, revenue, session_end
                   FROM clickstream.session_rows('clickstream.events')) d) AS differing;

\echo '-- gold: the daily funnel (sessions by start day; steps from clickstream.funnel_definition)'
SELECT day, max(sessions) AS sessions,
       string_agg(format('%s %s (%s%%)', step_name, reached, round(100 * conversion_from_previous, 1)),
                  ' -> ' ORDER BY step) AS "reached (step-to-step conversion)",
       round(100 * min(conversion_overall), 2) AS conversion_pct
FROM clickstream.daily_funnel GROUP BY day ORDER BY day;
SELECT (SELECT count(*) FROM (
            SELECT session_date, count(*), count(*) FILTER (WHERE funnel_level >= 2),
                   count(*) FILTER (WHERE funnel_level >= 4)
            FROM clickstream.session_rows('clickstream.events') GROUP BY 1
            EXCEPT SELECT day, max(sessions), max(reached) FILTER (WHERE step = 2),
                          max(reached) FILTER (WHERE step = 4)
                   FROM clickstream.daily_funnel GROUP BY 1) d) AS funnel_days_differing_from_recomputation;

\echo '-- gold: funnel by category (all days)'
SELECT category, sum(sessions) FILTER (WHERE step = 1) AS sessions,
       sum(reached) FILTER (WHERE step = 1) AS viewed, sum(reached) FILTER (WHERE step = 2) AS carted,
       sum(reached) FILTER (WHERE step = 4) AS bought,
       round(100.0 * sum(reached) FILTER (WHERE step = 4) / nullif(sum(reached) FILTER (WHERE step = 1), 0), 2) AS view_to_buy_pct
FROM clickstream.funnel_by_category GROUP BY category ORDER BY viewed DESC LIMIT 6;

\echo '-- gold: high interest, low conversion (views >= 30 or carts >= 10 sessions a day, conversion <= 3%)'
SELECT day, product_id, category, views, carts, purchases, conversion
FROM clickstream.high_interest_low_conversion ORDER BY views DESC, product_id LIMIT 6;
SELECT count(*) AS products_listed FROM clickstream.high_interest_low_conversion;

\echo '-- gold marts: the last 7 days (daily_metrics; clickstream.timezone days)'
SELECT day, events, users, new_users, sessions, bounce_rate, orders, revenue, aov, conversion_rate,
       revenue_growth
FROM clickstream.daily_metrics ORDER BY day DESC LIMIT 7;

\echo '-- gold marts: top categories by revenue (category_daily, all days)'
SELECT category, sum(revenue) AS revenue, sum(purchases) AS purchases, sum(units) AS units,
       sum(page_views) AS page_views
FROM clickstream.category_daily GROUP BY 1 ORDER BY 2 DESC LIMIT 6;

\echo '-- gold marts: active users (exact distinct counts)'
SELECT day, dau, wau, mau, stickiness FROM clickstream.active_users
WHERE day <= (SELECT max(day) FROM clickstream.daily_metrics) ORDER BY day DESC LIMIT 7;

\echo '-- gold marts: retention (share of each weekly cohort active N weeks later)'
SELECT cohort_week, max(cohort_users) AS users,
       string_agg(format('week %s: %s%%', week_number, round(100 * retention_rate, 1)), ', '
                  ORDER BY week_number) AS retention
FROM clickstream.cohort_retention GROUP BY 1 ORDER BY 1 DESC LIMIT 6;

\echo '-- gold marts: top products and the best customers'
SELECT product_id, category, page_views, add_to_carts, purchases, revenue, view_to_cart_rate,
       cart_to_purchase_rate
FROM clickstream.products ORDER BY revenue DESC LIMIT 5;
SELECT user_id, revenue AS lifetime_value, orders, sessions, days_active, utm_source AS first_touch
FROM clickstream.users ORDER BY revenue DESC, user_id LIMIT 5;

\echo '-- gold marts: right now (clickstream.live_summary, silver and what bronze still holds)'
SELECT events_5m, users_5m, orders_1h, revenue_1h, unpromoted FROM clickstream.live_summary;

\echo '-- every gold table against its full recomputation from silver (verify_gold)'
SELECT mart, gold_rows, recomputed_rows, missing, unexpected, ok FROM clickstream.verify_gold();

\echo '-- gold: top landing pages and sources'
SELECT landing_page, coalesce(utm_source, '(direct)') AS source, count(*) AS sessions,
       round(100.0 * avg(converted::int), 1) AS conversion_pct
FROM clickstream.sessions GROUP BY 1, 2 ORDER BY 3 DESC LIMIT 5;

\echo '-- silver by day (late events land in their own day) and what the last runs touched'
SELECT event_date, count(*) AS events, count(DISTINCT user_id) AS users,
       sum(revenue) AS revenue, count(*) FILTER (WHERE event_type = 'purchase') AS purchases
FROM clickstream.events GROUP BY 1 ORDER BY 1;
SELECT * FROM clickstream.touched_days((SELECT max(run_id) - 3 FROM clickstream.refresh_history));

\echo '-- a few silver events'
SELECT e.event_type, e.user_id, to_char(e.ts, 'HH24:MI:SS.MS') AS ts, e.product_id, e.category, e.price,
       e.quantity, e.revenue, e.device, e.country, e.utm_campaign
FROM clickstream.events e ORDER BY e.ts DESC LIMIT 5;	-- the latest (not the text ts)

\echo '-- data quality'
SELECT check_name, layer, severity, failures, passed FROM clickstream.check_quality();

\echo '-- ingestion status (first 8 partitions)'
SELECT partition, committed_offset, durable_offset, high_watermark, lag,
       round(messages_per_sec) AS msgs_per_sec, silver_backlog,
       to_char(refresh_age, 'MI:SS') AS refresh_age
FROM clickstream.status ORDER BY partition LIMIT 8;
SQL
