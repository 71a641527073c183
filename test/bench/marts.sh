#!/usr/bin/env bash
# Marts benchmark, on one server in one run, side by side:
#   1. two histories in two databases: H (default 1M events over 30 days)
#      and 10xH (10M events over 300 days), loaded into silver and gold
#      built by rebuild_gold() (its time is reported);
#   2. the refresh of one minute of new events (60 000, 1000/s), gold marts
#      included, on H and on 10xH in turn, minute after minute (alternating
#      which goes first), 5 consecutive minutes of one stream: medians of
#      the whole refresh and of its parts (silver, sessions and funnels,
#      marts), and their ratio; each minute's full-page images and WAL
#      (pg_stat_wal: what a larger history costs in writes);
#   3. the dashboard questions asked of the marts (median of 21 runs each,
#      timed inside the server) on H and 10xH, and the same questions asked
#      of silver in plain SQL (median of 3), with the ratios.
# Targets (issue 15): refresh 10xH <= 1.2x H; each mart query median <= 20 ms
# at 10xH and <= 1.2x from H to 10xH; silver / marts >= 100x at 10xH.
# Usage: test/bench/marts.sh [events-of-H]   (default 1000000)
# Environment: CS_SHARED_BUFFERS (default 2GB), CS_MINUTE_USERS (below),
# CS_EXTRA_CONF (more postgresql.conf lines), CS_KEEP=1 (keep the cluster).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
n=${1:-1000000}
days=30
# the histories' users: 60 % of sessions are followed by another of their
# user (--return-share 0.6), so about 60 000 users have events in H and
# 600 000 in 10xH, most of them once or twice, as in a shop
hist_users=$((n / 10))

bash "$root/tools/setup.sh" >/dev/null

source "$root/tools/cluster.sh"
cs_workdir martsbench
port=54352
q() { cs_psql -q -Atc "$1" -d "${db:-postgres}"; }
trap 'cs_stop; [ -n "${CS_KEEP:-}" ] || rm -rf "$work"' EXIT

brokers=127.0.0.1:9
cs_start_cluster "$port" "clickstream.enabled = off
max_wal_size = '16GB'
${CS_EXTRA_CONF:-}
shared_buffers = '${CS_SHARED_BUFFERS:-2GB}'
maintenance_work_mem = '1GB'
work_mem = '64MB'"
echo "== $(date -u +%FT%TZ) on $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg), commit $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo '?')"

end_ms=$(( ($(date +%s) - 86400) / 86400 * 86400 * 1000 ))	# midnight UTC, yesterday
silver_columns="event_id, event_type, user_id, ts, event_date, event_hour, product_id, category, price,
	quantity, order_id, page_url, referrer, utm_source, utm_medium, utm_campaign, device, country,
	is_high_value, revenue, attrs, kafka_topic, kafka_partition, kafka_offset, run_id"

# history DB EVENTS DAYS USERS: silver of DB = EVENTS generated events over
# DAYS days ending at $end_ms, gold rebuilt
history() {
	local db=$1 events=$2 span=$3 hist_users=$4 rate start t0 t1
	rate=$(echo "scale=6; $events / ($span * 86400)" | bc)
	start=$((end_ms - span * 86400 * 1000))
	db=postgres q "DROP DATABASE IF EXISTS $db"
	db=postgres q "CREATE DATABASE $db"
	q "CREATE EXTENSION clickstream"
	echo "  $db: $events events over $span days, $hist_users users"
	"$root/tools/eventgen" --count "$events" --fast --seed 3 --start "$start" --rate "$rate" \
		--users "$hist_users" --return-share 0.6 --concurrency 12 --products 2000 \
		--output "$work/$db.copy" --format copy --partitions 16 2>/dev/null
	chmod 644 "$work/$db.copy"
	q "CREATE UNLOGGED TABLE bench_raw (LIKE clickstream.bronze INCLUDING DEFAULTS)"
	q "COPY bench_raw (kafka_topic, kafka_partition, kafka_offset, kafka_timestamp, kafka_key, payload) FROM '$work/$db.copy'"
	rm -f "$work/$db.copy"
	q "CREATE UNLOGGED TABLE bench_silver AS
	   SELECT e.event_id, e.event_type, e.user_id, e.ts, e.event_date, e.event_hour, e.product_id,
			  e.category, e.price, e.quantity, e.order_id, e.page_url, e.referrer, e.utm_source,
			  e.utm_medium, e.utm_campaign, e.device, e.country, e.is_high_value, e.revenue, e.attrs,
			  b.kafka_topic, b.kafka_partition, b.kafka_offset, 0::bigint AS run_id, b.kafka_timestamp AS kafka_ts
	   FROM bench_raw b, LATERAL clickstream.parse_event(b.payload) e WHERE e.reason IS NULL"
	q "DROP TABLE bench_raw"
	q "SELECT clickstream.create_partitions((SELECT array_agg(DISTINCT event_date) FROM bench_silver))" >/dev/null
	# in the order the refresh writes silver: minute by minute, each step
	# sorted by day, user and time
	q "INSERT INTO clickstream.events ($silver_columns)
	   SELECT $silver_columns FROM bench_silver ORDER BY date_trunc('minute', kafka_ts), event_date, user_id, ts"
	q "INSERT INTO clickstream.event_ids SELECT event_id, event_date FROM bench_silver"
	q "DROP TABLE bench_silver"
	q "VACUUM ANALYZE clickstream.events"
	q "VACUUM ANALYZE clickstream.event_ids"
	t0=$(date +%s.%N)
	q "SELECT clickstream.rebuild_gold()" >/dev/null
	t1=$(date +%s.%N)
	q "VACUUM ANALYZE"
	echo "    rebuild_gold() $(printf '%.1f' "$(echo "$t1 - $t0" | bc)") s: $(q "SELECT count(*) FROM clickstream.sessions") sessions, $(q "SELECT count(*) FROM clickstream.users") users, $(q "SELECT count(*) FROM clickstream.user_days") user-days, $(q "SELECT count(*) FROM clickstream.orders") orders; database $(q "SELECT pg_size_pretty(pg_database_size(current_database()))")"
}

echo "== histories"
history bench_h "$n" "$days" "$hist_users"
history bench_10xh $((n * 10)) $((days * 10)) $((hist_users * 10))

# the builds' dirty pages are written now, not while the minutes run
q "CHECKPOINT"

# Five minutes of traffic after the histories' end, made by one generator
# run (sessions go on from one minute to the next, as they do live) and cut
# into one file per minute.  By default the same files for both: users
# drawn from H's ids, of which about 60 % have events in H and, ids being
# given out alike, in 10xH too; so only the length of the history differs.
# CS_MINUTE_USERS=N draws them from N ids instead (beyond H's ids, more of
# the minutes' users are known to 10xH than to H); CS_MINUTE_USERS=history
# gives each history minutes from its own ids (10xH's are ten times as
# many: fewer of the minutes' users come back within the five minutes).
rounds=5
echo "== incremental refresh: 1 minute of new events (1000/s), H vs 10xH, $rounds minutes each, alternating (minute users: ${CS_MINUTE_USERS:-$hist_users})"
minute_users() {	# minute_users DB: the ids the minutes of DB draw users from
	case "${CS_MINUTE_USERS:-}" in
	'') echo "$hist_users" ;;
	history) if [ "$1" = bench_10xh ]; then echo $((hist_users * 10)); else echo "$hist_users"; fi ;;
	*) echo "$CS_MINUTE_USERS" ;;
	esac
}
minute_file() { echo "$work/minutes-u$(minute_users "$1").$2"; }	# minute_file DB M
for db in bench_h bench_10xh; do
	f=$(minute_file $db 0)
	[ -e "$f" ] && continue	# the same minutes for both
	"$root/tools/eventgen" --count $((rounds * 60000)) --fast --seed 10 --rate 1000 --topic minutes \
		--start "$end_ms" --users "$(minute_users $db)" --concurrency 30000 --products 2000 \
		--output "$work/minutes.copy" --format copy --partitions 16 2>/dev/null
	# the generator writes in time order: 60 000 lines are one minute
	split -l 60000 -a 1 -d "$work/minutes.copy" "${f%.0}."
	rm -f "$work/minutes.copy"
	chmod 644 "${f%.0}".*
done
declare -A times	# times[PART/DB]: the seconds of each minute
step() {	# step DB M: feed minute M to DB and refresh
	local db=$1 r
	q "COPY clickstream.bronze (kafka_topic, kafka_partition, kafka_offset, kafka_timestamp, kafka_key, payload) FROM '$(minute_file "$1" "$2")'"
	q "INSERT INTO clickstream.ingest_positions (topic, partition, next_offset)
	   SELECT kafka_topic, kafka_partition, max(kafka_offset) + 1 FROM clickstream.bronze GROUP BY 1, 2
	   ON CONFLICT (topic, partition) DO UPDATE SET next_offset = EXCLUDED.next_offset"
	q "INSERT INTO clickstream.watermarks (topic, partition, durable_offset)
	   SELECT kafka_topic, kafka_partition, min(kafka_offset) FROM clickstream.bronze GROUP BY 1, 2
	   ON CONFLICT (topic, partition) DO NOTHING"
	w0=$(q "SELECT wal_fpi || ' ' || wal_bytes FROM pg_stat_wal")
	q "CALL clickstream.refresh()"
	w1=$(q "SELECT wal_fpi || ' ' || wal_bytes FROM pg_stat_wal")
	echo "    wal: fpi $(( ${w1% *} - ${w0% *} )) MB $(( (${w1#* } - ${w0#* }) / 1048576 ))"
	r=$(q "SELECT round(extract(epoch FROM duration)::numeric, 3) || ' ' ||
			  round(extract(epoch FROM duration - gold_time)::numeric, 3) || ' ' ||
			  round(extract(epoch FROM gold_time - marts_time)::numeric, 3) || ' ' ||
			  round(extract(epoch FROM marts_time)::numeric, 3) || ' ' || rows_promoted
		   FROM clickstream.refresh_history ORDER BY run_id DESC LIMIT 1")
	set -- "$1" "$2" $r
	times[total/$1]+="$3 "; times[silver/$1]+="$4 "; times[sessions/$1]+="$5 "; times[marts/$1]+="$6 "
	echo "  $1 minute $2: refresh $3 s (silver $4 s, sessions and funnels $5 s, marts $6 s), $7 events"
}
for db in bench_h bench_10xh; do q "CALL clickstream.refresh()"; done
for m in $(seq 0 $((rounds - 1))); do
	if [ $((m % 2)) = 0 ]; then step bench_h $m; step bench_10xh $m; else step bench_10xh $m; step bench_h $m; fi
done
median() { printf '%s\n' "$@" | sort -g | sed -n "$((($# + 1) / 2))p"; }
ratio() { printf '%.2f' "$(echo "$2 / $1" | bc -l)"; }
for part in total silver sessions marts; do
	h=$(median ${times[$part/bench_h]}); h10=$(median ${times[$part/bench_10xh]})
	echo "  median $part: H $h s, 10xH $h10 s, ratio $(ratio "$h" "$h10")$([ $part = total ] && echo ' (target <= 1.2)')"
done
# H is compared whole; 10xH from 30 days before the minutes on (the days a
# minute can touch, with margin), the lifetime tables (users, products,
# orders) whole: its older days are rebuild_gold()'s own output, and a full
# comparison of 10M events takes most of an hour (CS_VERIFY_FULL=1 for it)
for db in bench_h bench_10xh; do
	since=NULL
	[ "$db" = bench_10xh ] && [ -z "${CS_VERIFY_FULL:-}" ] && since="date '$(date -u -d "@$((end_ms / 1000))" +%F)' - 30"
	t0=$(date +%s)
	v=$(q "SELECT coalesce(string_agg(mart, ' '), 'every table equals its recomputation') FROM clickstream.verify_gold($since) WHERE NOT ok")
	echo "  $db: verify_gold($since): $v ($(( $(date +%s) - t0 )) s)"
done

# The dashboard questions: on the marts, and the same asked of silver,
# once the minutes' dead rows are vacuumed (autovacuum would otherwise be
# at work on 10xH's tables while its questions are timed)
for db in bench_h bench_10xh; do q "VACUUM ANALYZE"; done
last=$(date -u -d "@$((end_ms / 1000 - 1))" +%F)
declare -A mart_q silver_q
names="daily_revenue_30d revenue_by_category_30d dau_wau_mau_90d top_20_products retention_12_weeks traffic_30d"
mart_q[daily_revenue_30d]="SELECT day, revenue, orders, aov, conversion_rate FROM clickstream.daily_metrics WHERE day > date '$last' - 30 AND day <= date '$last' ORDER BY day"
mart_q[revenue_by_category_30d]="SELECT category, sum(revenue), sum(units) FROM clickstream.category_daily WHERE day > date '$last' - 30 AND day <= date '$last' GROUP BY 1 ORDER BY 2 DESC"
mart_q[dau_wau_mau_90d]="SELECT day, dau, wau, mau, stickiness FROM clickstream.active_users WHERE day > date '$last' - 90 AND day <= date '$last' ORDER BY day"
mart_q[top_20_products]="SELECT product_id, category, revenue, purchases FROM clickstream.products ORDER BY revenue DESC LIMIT 20"
mart_q[retention_12_weeks]="SELECT cohort_week, week_number, cohort_users, retention_rate FROM clickstream.cohort_retention WHERE cohort_week > date '$last' - 84 ORDER BY 1, 2"
mart_q[traffic_30d]="SELECT utm_source, utm_medium, sum(sessions), sum(users), sum(converted_sessions), sum(revenue) FROM clickstream.traffic_daily WHERE day > date '$last' - 30 AND day <= date '$last' GROUP BY 1, 2 ORDER BY 3 DESC"
silver_q[daily_revenue_30d]="SELECT event_date, sum(revenue) FILTER (WHERE event_type = 'purchase'), count(DISTINCT clickstream.order_key(order_id, event_id)) FILTER (WHERE event_type = 'purchase') FROM clickstream.events WHERE event_date > date '$last' - 30 AND event_date <= date '$last' GROUP BY 1 ORDER BY 1"
silver_q[revenue_by_category_30d]="SELECT coalesce(category, '(not set)'), sum(revenue), sum(coalesce(quantity, 1)) FROM clickstream.events WHERE event_type = 'purchase' AND event_date > date '$last' - 30 AND event_date <= date '$last' GROUP BY 1 ORDER BY 2 DESC"
silver_q[dau_wau_mau_90d]="WITH ud AS (SELECT DISTINCT user_id, event_date AS day FROM clickstream.events WHERE event_date > date '$last' - 119 AND event_date <= date '$last') SELECT g.day, count(DISTINCT ud.user_id) FILTER (WHERE ud.day = g.day), count(DISTINCT ud.user_id) FILTER (WHERE ud.day > g.day - 7), count(DISTINCT ud.user_id) FROM (SELECT date '$last' - i AS day FROM generate_series(0, 89) i) g JOIN ud ON ud.day > g.day - 30 AND ud.day <= g.day GROUP BY g.day ORDER BY 1"
silver_q[top_20_products]="SELECT product_id, min(category), sum(revenue) FILTER (WHERE event_type = 'purchase') AS revenue, count(*) FILTER (WHERE event_type = 'purchase') FROM clickstream.events WHERE product_id <> '' GROUP BY 1 ORDER BY 3 DESC NULLS LAST LIMIT 20"
silver_q[retention_12_weeks]="WITH ud AS (SELECT DISTINCT user_id, event_date AS day FROM clickstream.events), c AS (SELECT user_id, date_trunc('week', min(day))::date AS cohort FROM ud GROUP BY 1) SELECT c.cohort, (date_trunc('week', ud.day)::date - c.cohort) / 7 AS week, count(DISTINCT ud.user_id) FROM ud JOIN c USING (user_id) WHERE c.cohort > date '$last' - 84 GROUP BY 1, 2 ORDER BY 1, 2"
silver_q[traffic_30d]="WITH e AS (SELECT user_id, ts, utm_source, utm_medium, CASE WHEN lag(ts) OVER w IS NULL OR ts - lag(ts) OVER w > interval '30 minutes' THEN 1 ELSE 0 END AS starts FROM clickstream.events WHERE event_date > date '$last' - 30 AND event_date <= date '$last' WINDOW w AS (PARTITION BY user_id ORDER BY ts, event_id)) SELECT coalesce(utm_source, '(direct)'), coalesce(utm_medium, '(none)'), count(*), count(DISTINCT user_id) FROM e WHERE starts = 1 GROUP BY 1, 2 ORDER BY 3 DESC"
echo "== dashboard questions: median ms on the marts (21 runs) and on silver in plain SQL (3 runs)"
printf '  %-26s %10s %10s %7s %12s %12s %9s\n' question "marts H" "marts 10xH" ratio "silver H" "silver 10xH" "silver/marts 10xH"
for name in $names; do
	declare -A r=()
	for db in bench_h bench_10xh; do
		r[m/$db]=$(cs_psql -q -At -d "$db" -c "CREATE FUNCTION pg_temp.timed(query text, runs integer) RETURNS numeric LANGUAGE plpgsql AS \$\$
			DECLARE t timestamptz; ms numeric[] := '{}';
			BEGIN
				FOR i IN 1..runs LOOP
					t := clock_timestamp();
					EXECUTE 'SELECT count(*) FROM (' || query || ') q';
					ms := ms || (extract(epoch FROM clock_timestamp() - t) * 1000)::numeric;
				END LOOP;
				RETURN (SELECT round(percentile_disc(0.5) WITHIN GROUP (ORDER BY x), 2) FROM unnest(ms) x);
			END \$\$" -c "SELECT pg_temp.timed(\$q\$${mart_q[$name]}\$q\$, 21)" -c "SELECT pg_temp.timed(\$q\$${silver_q[$name]}\$q\$, 3)" | tr '\n' ' ')
	done
	read -r mh sh <<< "${r[m/bench_h]}"
	read -r m10 s10 <<< "${r[m/bench_10xh]}"
	printf '  %-26s %10s %10s %7s %12s %12s %9s\n' "$name" "$mh" "$m10" "$(ratio "$mh" "$m10")" "$sh" "$s10" "$(printf '%.0f' "$(echo "$s10 / $m10" | bc -l)")x"
done
