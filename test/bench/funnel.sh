#!/usr/bin/env bash
# Funnel benchmark: the same generated events, in one run, side by side:
#   1. clickstream.funnel_agg, per session and per user-day;
#   2. the SQL the old stacks used for the same funnel (view -> cart ->
#      purchase within 1 hour): window functions, and self-joins;
#   3. DuckDB (@duckdb/node-api, data moved as CSV) running the same SQL.
# PostgreSQL runs each query serially and with 2 parallel workers.  Every
# method must return the same level histogram, or the script fails.
# Targets: funnel_agg >= 10x the SQL, at least as fast as DuckDB.
# Usage: test/bench/funnel.sh [events] [rounds]   (default 5000000, 2)
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
n=${1:-5000000}
rounds=${2:-2}

bash "$root/tools/setup.sh" >/dev/null

source "$root/tools/cluster.sh"
cs_workdir funnelbench
port=54342
q() { cs_psql -q -Atc "$1"; }
now() { date +%s.%N; }
trap 'cs_stop; rm -rf "$work"' EXIT

brokers=127.0.0.1:9
cs_start_cluster "$port" "clickstream.enabled = off
shared_buffers = '2GB'
work_mem = '512MB'
max_worker_processes = 16
max_parallel_workers = 8
jit = off"
q "CREATE EXTENSION clickstream"

# DuckDB's client, installed once per machine (npm registry).
duckdir=${CS_DUCKDB_DIR:-/tmp/clickstream-duckdb}
if [ ! -d "$duckdir/node_modules/@duckdb/node-api" ]; then
	mkdir -p "$duckdir"
	(cd "$duckdir" && npm install --silent --no-audit --no-fund @duckdb/node-api >/dev/null)
fi

# Sessions of 1 to ~60 events (mean ~9.5), 40 s apart with jitter, of 100 000
# users over 30 days; events in time order, as an append-only table holds
# them.  62% page views, 15% add to cart, 4% removals, 7% checkouts, 5%
# purchases, 7% searches.
echo "generating $n events"
t0=$(now)
# setseed() holds for the session: one psql call
q "SELECT setseed(0.2026);
   CREATE UNLOGGED TABLE bench_sessions AS
   SELECT s AS session_id, 1 + floor(random() * 100000)::int AS user_id,
          timestamptz '2026-11-01' + random() * interval '30 days' AS start,
          1 + floor(-ln(1 - random()) * 9)::int AS len
   FROM generate_series(1, ceil($n / 9.0)::int) s;
   CREATE UNLOGGED TABLE bench_events AS
   SELECT session_id, user_id, (ts AT TIME ZONE 'UTC')::date AS day, ts,
          CASE WHEN x < 0.62 THEN 'page_view' WHEN x < 0.77 THEN 'add_to_cart'
               WHEN x < 0.81 THEN 'remove_from_cart' WHEN x < 0.88 THEN 'begin_checkout'
               WHEN x < 0.93 THEN 'purchase' ELSE 'search' END AS event_type
   FROM (SELECT session_id, user_id, start + (k * 40 + random() * 40) * interval '1 second' AS ts,
                random() AS x
         FROM bench_sessions, generate_series(0, len - 1) k) e
   ORDER BY ts
   LIMIT $n"
q "VACUUM ANALYZE bench_events"
q "SELECT count(*) FROM bench_events" >/dev/null   # into shared_buffers
events=$(q "SELECT count(*) FROM bench_events")
sessions=$(q "SELECT count(DISTINCT session_id) FROM bench_events")
userdays=$(q "SELECT count(*) FROM (SELECT DISTINCT user_id, day FROM bench_events) d")
echo "generated $events events, $sessions sessions, $userdays user-days in $(echo "$(now) - $t0" | bc) s"
as_pg "psql -X -q -h '$work' -p $port -U postgres -c \"COPY (SELECT session_id, user_id, day, ts AT TIME ZONE 'UTC', event_type FROM bench_events) TO '$work/events.csv' CSV HEADER\""

# The queries, one file each; {G}: the grouping columns, {J}: the join on them.
write_queries() {
	local name=$1 g=$2 vg=$3 j=$4
	# the floor: PostgreSQL's grouping alone, without any funnel
	cat > "$work/groupby_$name.sql" <<SQL
SELECT count(*) FROM (SELECT $g, count(*) FROM bench_events GROUP BY $g) s
SQL
	cat > "$work/agg_$name.sql" <<SQL
SELECT level, count(*) FROM (
  SELECT clickstream.funnel_agg(ts, interval '1 hour',
           event_type = 'page_view', event_type = 'add_to_cart', event_type = 'purchase') AS level
  FROM bench_events GROUP BY $g) s
WHERE level > 0 GROUP BY level ORDER BY level
SQL
	# exact for this funnel: per row the latest view before it, per cart the
	# start of its attempt, per purchase the latest attempt start it can end
	cat > "$work/window_$name.sql" <<SQL
WITH ev AS (
  SELECT $g, ts, CASE event_type WHEN 'page_view' THEN 1 WHEN 'add_to_cart' THEN 2 ELSE 3 END AS step
  FROM bench_events WHERE event_type IN ('page_view', 'add_to_cart', 'purchase')
), s1 AS (
  SELECT *, max(CASE WHEN step = 1 THEN ts END) OVER (PARTITION BY $g ORDER BY ts, step
              ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS last_view
  FROM ev
), s2 AS (
  SELECT *, max(CASE WHEN step = 2 AND ts <= last_view + INTERVAL '1 hour' THEN last_view END)
              OVER (PARTITION BY $g ORDER BY ts, step
                    ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS cart_start
  FROM s1
)
SELECT level, count(*) FROM (
  SELECT max(CASE WHEN step = 3 AND ts <= cart_start + INTERVAL '1 hour' THEN 3
                  WHEN cart_start IS NOT NULL THEN 2
                  WHEN last_view IS NOT NULL THEN 1 END) AS level
  FROM s2 GROUP BY $g) s
WHERE level > 0 GROUP BY level ORDER BY level
SQL
	cat > "$work/selfjoin_$name.sql" <<SQL
SELECT level, count(*) FROM (
  SELECT max(CASE WHEN p.ts IS NOT NULL THEN 3 WHEN c.ts IS NOT NULL THEN 2 ELSE 1 END) AS level
  FROM bench_events v
  LEFT JOIN bench_events c ON ${j//X/c} AND c.event_type = 'add_to_cart'
       AND c.ts >= v.ts AND c.ts <= v.ts + INTERVAL '1 hour'
  LEFT JOIN bench_events p ON ${j//X/p} AND p.event_type = 'purchase'
       AND p.ts >= c.ts AND p.ts <= v.ts + INTERVAL '1 hour'
  WHERE v.event_type = 'page_view'
  GROUP BY $vg) s
GROUP BY level ORDER BY level
SQL
}
# one group of every event (a huge group: the parallel plan splits its rows)
cat > "$work/agg_all.sql" <<SQL
SELECT clickstream.funnel_agg(ts, interval '1 hour', 'strict_increase',
         event_type = 'page_view', event_type = 'add_to_cart', event_type = 'purchase')
FROM bench_events
SQL
write_queries session "session_id" "v.session_id" "X.session_id = v.session_id"
write_queries day "user_id, day" "v.user_id, v.day" "X.user_id = v.user_id AND X.day = v.day"
chmod 644 "$work"/*.sql

declare -A best result
# run NAME WORKERS FILE: time one PostgreSQL query, keep the best round;
# with workers, a parallel plan is forced (no setup or tuple cost)
run() {
	local key="$1/$2" t0 t1 out
	t0=$(now)
	out=$(cs_psql -q -At -F: -c "SET max_parallel_workers_per_gather = $2" \
		-c "SET parallel_setup_cost = 0" -c "SET parallel_tuple_cost = 0" -f "$3" | tr '\n' ' ')
	t1=$(now)
	local secs
	secs=$(echo "$t1 - $t0" | bc)
	if [ -z "${best[$key]:-}" ] || [ "$(echo "$secs < ${best[$key]}" | bc)" = 1 ]; then
		best[$key]=$secs
	fi
	result[$key]=$out
	printf '  %-22s %s s  %s\n' "$key" "$secs" "$out"
}

for round in $(seq "$rounds"); do
	echo "round $round"
	run agg_all 0 "$work/agg_all.sql"
	run agg_all 2 "$work/agg_all.sql"
	for grouping in session day; do
		for workers in 0 2; do
			run "groupby_$grouping" $workers "$work/groupby_$grouping.sql"
			run "agg_$grouping" $workers "$work/agg_$grouping.sql"
			run "window_$grouping" $workers "$work/window_$grouping.sql"
			run "selfjoin_$grouping" $workers "$work/selfjoin_$grouping.sql"
		done
	done
	# ESM resolves packages next to the script: run a copy in $duckdir
	cp "$root/test/bench/funnel_duckdb.mjs" "$duckdir/"
	(cd "$duckdir" && node funnel_duckdb.mjs "$work/events.csv" 1 \
		"window_session=$work/window_session.sql" "selfjoin_session=$work/selfjoin_session.sql" \
		"window_day=$work/window_day.sql" "selfjoin_day=$work/selfjoin_day.sql") | tee "$work/duck.$round"
	while read -r name secs out; do
		[ "$name" = load ] && continue
		key="duckdb_$name/2"
		if [ -z "${best[$key]:-}" ] || [ "$(echo "$secs < ${best[$key]}" | bc)" = 1 ]; then
			best[$key]=$secs
		fi
		result[$key]="$out "
	done < "$work/duck.$round"
done

# every method, the same answer
status=0
for grouping in session day; do
	ref=${result[agg_$grouping/0]}
	for key in "agg_$grouping/2" "window_$grouping/0" "window_$grouping/2" "selfjoin_$grouping/0" \
		"selfjoin_$grouping/2" "duckdb_window_$grouping/2" "duckdb_selfjoin_$grouping/2"; do
		if [ "${result[$key]}" != "$ref" ]; then
			echo "MISMATCH $key: ${result[$key]} vs funnel_agg: $ref" >&2
			status=1
		fi
	done
done

echo
echo "| grouping | method | 1 core, s | 2 workers, s | rows/s (best) | funnel_agg faster by |"
echo "|---|---|---|---|---|---|"
for grouping in session day; do
	agg=$(printf '%s\n%s\n' "${best[agg_$grouping/0]}" "${best[agg_$grouping/2]}" | sort -g | head -1)
	for m in groupby agg window selfjoin duckdb_window duckdb_selfjoin; do
		if [[ $m == duckdb_* ]]; then
			one="-"; two=${best[$m\_$grouping/2]}; b=$two
		else
			one=${best[$m\_$grouping/0]}; two=${best[$m\_$grouping/2]}
			b=$(printf '%s\n%s\n' "$one" "$two" | sort -g | head -1)
		fi
		printf '| %s | %s | %s | %s | %s | %s |\n' "$grouping" "$m" "$one" "$two" \
			"$(echo "$events / $b" | bc)" "$(echo "scale=1; $b / $agg" | bc)"
	done
done
echo "events: $events, sessions: $sessions, user-days: $userdays; best of $rounds rounds;" \
	"parallel speedup of funnel_agg: session $(echo "scale=2; ${best[agg_session/0]} / ${best[agg_session/2]}" | bc)," \
	"day $(echo "scale=2; ${best[agg_day/0]} / ${best[agg_day/2]}" | bc)," \
	"one group of all events ${best[agg_all/0]} s / ${best[agg_all/2]} s = $(echo "scale=2; ${best[agg_all/0]} / ${best[agg_all/2]}" | bc);" \
	"DuckDB load: $(grep load "$work/duck.1")"
exit $status
