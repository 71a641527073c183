#!/usr/bin/env bash
# Sessions benchmark, on the same server in one run:
#   1. clickstream.sessionize() over N silver events (default 5M, ~500k users);
#   2. the standard SQL window-function sessionization (lag + sum over) of
#      the same events, giving the same session boundaries (checked);
#   3. DuckDB (@duckdb/node-api) running that window query on the same
#      events, exported to CSV (load time reported apart);
# then incremental refreshes bringing 1 minute of new events (1000/s) each,
# on a history H (1 day) and on 10xH (10 days), side by side: two databases
# of the server, a refresh of each in turn, 5 minutes.
# Targets: sessionize >= 5x the SQL window version and >= DuckDB; refresh
# time on 10xH <= 1.2x the time on H.
# Both shapes are timed: sessionize() (every event with its session) against
# the window query, and sessions_of() (one row per session) against the
# window query grouped into sessions.
# Usage: test/bench/sessions.sh [events]   (default 5000000)
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
n=${1:-5000000}
users=$((n / 10))
rate=150	# events/s of simulated time: 5M events span ~9 hours, ~440k users
# (the incremental part generates its own: 6/s, ~500k events a day for 10 days)

bash "$root/tools/setup.sh" >/dev/null

source "$root/tools/cluster.sh"
cs_workdir sessionbench
port=54351
# q SQL: in database $db (postgres unless set)
q() { cs_psql -q -Atc "$1" -d "${db:-postgres}"; }
now() { date +%s.%N; }
secs() { printf '%.2f' "$(echo "$2 - $1" | bc)"; }
trap 'cs_stop; [ -n "${CS_KEEP:-}" ] || rm -rf "$work"' EXIT

duck=${CS_DUCKDB_DIR:-/tmp/clickstream-duckdb}
if [ ! -d "$duck/node_modules/@duckdb/node-api" ]; then
	mkdir -p "$duck"
	(cd "$duck" && npm install --silent --no-audit --no-fund @duckdb/node-api >/dev/null)
fi

brokers=127.0.0.1:9
cs_start_cluster "$port" "clickstream.enabled = off
max_wal_size = '8GB'
shared_buffers = '2GB'
maintenance_work_mem = '1GB'"
q "CREATE EXTENSION clickstream"

# Events of the generator, parsed, in bench_silver (this benchmark is about
# sessions, not refresh: silver is loaded directly from there).
make_history() {	# make_history RATE
	echo "generating $n events of $users users ($1/s of simulated time)"
	"$root/tools/eventgen" --count "$n" --fast --seed 1 --start 2026-01-01T00:00:00Z --rate "$1" \
		--users "$users" --output "$work/history.copy" --format copy --partitions 16 2>/dev/null
	chmod 644 "$work/history.copy"
	q "DROP TABLE IF EXISTS bench_raw, bench_silver"
	q "CREATE UNLOGGED TABLE bench_raw (LIKE clickstream.bronze INCLUDING DEFAULTS)"
	q "COPY bench_raw (kafka_topic, kafka_partition, kafka_offset, kafka_timestamp, kafka_key, payload) FROM '$work/history.copy'"
	q "CREATE UNLOGGED TABLE bench_silver AS
	   SELECT e.event_id, e.event_type, e.user_id, e.ts, e.event_date, e.event_hour, e.product_id,
			  e.category, e.price, e.quantity, e.order_id, e.page_url, e.referrer, e.utm_source,
			  e.utm_medium, e.utm_campaign, e.device, e.country, e.is_high_value, e.revenue, e.attrs,
			  b.kafka_topic, b.kafka_partition, b.kafka_offset, 0::bigint AS run_id, b.kafka_timestamp AS kafka_ts
	   FROM bench_raw b, LATERAL clickstream.parse_event(b.payload) e WHERE e.reason IS NULL"
	q "DROP TABLE bench_raw"
	rm -f "$work/history.copy"
}
silver_columns="event_id, event_type, user_id, ts, event_date, event_hour, product_id, category, price,
	quantity, order_id, page_url, referrer, utm_source, utm_medium, utm_campaign, device, country,
	is_high_value, revenue, attrs, kafka_topic, kafka_partition, kafka_offset, run_id"
load_silver() {	# load_silver WHERE-clause: silver of database $db = those events, sessions rebuilt
	local dates
	dates=$(db=postgres q "SELECT array_agg(DISTINCT event_date) FROM bench_silver WHERE $1")
	# in the order the refresh writes silver in steady state: minute by
	# minute (pg_cron), each step sorted by day, user and time
	db=postgres q "COPY (SELECT $silver_columns FROM bench_silver WHERE $1
	   ORDER BY date_trunc('minute', kafka_ts), event_date, user_id, ts) TO '$work/silver.copy'"
	db=postgres q "COPY (SELECT event_id, event_date FROM bench_silver WHERE $1) TO '$work/ids.copy'"
	q "TRUNCATE clickstream.events, clickstream.event_ids, clickstream.sessions, clickstream.touched,
			  clickstream.bronze, clickstream.ingest_positions, clickstream.watermarks, clickstream.refresh_history"
	q "SELECT clickstream.create_partitions('$dates')" >/dev/null
	q "COPY clickstream.events ($silver_columns) FROM '$work/silver.copy'"
	q "COPY clickstream.event_ids FROM '$work/ids.copy'"
	rm -f "$work/silver.copy" "$work/ids.copy"
	q "VACUUM ANALYZE clickstream.events"
	q "VACUUM ANALYZE clickstream.event_ids"
	t0=$(now)
	q "SELECT clickstream.rebuild_sessions()" >/dev/null
	t1=$(now)
	q "VACUUM ANALYZE clickstream.sessions"
	echo "  ${db:-postgres}: silver $(q "SELECT count(*) || ' events, ' || count(DISTINCT user_id) || ' users, ' || min(ts)::date || ' to ' || max(ts)::date FROM clickstream.events"); sessions: $(q "SELECT count(*) FROM clickstream.sessions") (full rebuild $(secs "$t0" "$t1") s)"
}

if [ "${CS_SESSIONS_PART:-all}" != incremental ]; then
make_history $rate
echo "== sessionize vs SQL window vs DuckDB, all $n events"
load_silver true
q "CHECKPOINT"

# Same boundaries: the SQL window version knows only the timeout rule, so
# sessionize runs without a maximum duration here.  Checksums over every
# event's session number (per event) or every session (per session).
sessionize_args="'SELECT user_id, ts, event_id FROM clickstream.events', max_duration => '10000 days'"
window_sql="SELECT user_id, ts, sum(CASE WHEN prev IS NULL OR ts - prev > interval '30 minutes' THEN 1 ELSE 0 END)
			   OVER (PARTITION BY user_id ORDER BY ts, event_id ROWS UNBOUNDED PRECEDING) AS session_index
	FROM (SELECT user_id, ts, event_id,
				 lag(ts) OVER (PARTITION BY user_id ORDER BY ts, event_id) AS prev
		  FROM clickstream.events) x"
per_event_check="count(*) || ' ' || sum(session_index) || ' ' || sum(session_index * (floor(extract(epoch FROM ts))::bigint % 997))"
per_session_check="count(*) || ' ' || sum(session_index) || ' ' || sum(events) || ' ' || sum(floor(extract(epoch FROM session_start))::bigint % 997)"
pg_event_c="SELECT $per_event_check FROM clickstream.sessionize($sessionize_args)"
pg_event_w="SELECT $per_event_check FROM ($window_sql) y"
pg_session_c="SELECT $per_session_check FROM clickstream.sessions_of($sessionize_args)"
pg_session_w="SELECT $per_session_check FROM (
	SELECT user_id, session_index, min(ts) AS session_start, count(*) AS events
	FROM ($window_sql) y GROUP BY user_id, session_index) z"

q "COPY (SELECT user_id, (extract(epoch FROM ts) * 1000000)::bigint AS ts_us, event_id FROM clickstream.events) TO '$work/events.csv' WITH (FORMAT csv, HEADER)"
chmod 644 "$work/events.csv"
cat > "$work/duck.mjs" <<'JS'
import { DuckDBInstance } from '@duckdb/node-api';
const [file, rounds] = [process.argv[2], Number(process.argv[3])];
const db = await DuckDBInstance.create(':memory:');
const con = await db.connect();
let t = performance.now();
await con.run(`CREATE TABLE events AS SELECT user_id, make_timestamp(ts_us) AS ts, event_id
	FROM read_csv('${file}', header = true, columns = {'user_id': 'VARCHAR', 'ts_us': 'BIGINT', 'event_id': 'VARCHAR'})`);
console.log(`load ${((performance.now() - t) / 1000).toFixed(2)}`);
const sessionized = `SELECT user_id, ts, sum(CASE WHEN prev IS NULL OR ts - prev > INTERVAL 30 MINUTE THEN 1 ELSE 0 END)
			   OVER (PARTITION BY user_id ORDER BY ts, event_id ROWS UNBOUNDED PRECEDING) AS session_index
	FROM (SELECT user_id, ts, event_id, lag(ts) OVER (PARTITION BY user_id ORDER BY ts, event_id) AS prev
		  FROM events)`;
const queries = {
	event: `SELECT count(*) || ' ' || sum(session_index) || ' ' || sum(session_index * ((epoch_ms(ts) // 1000) % 997)) FROM (${sessionized})`,
	session: `SELECT count(*) || ' ' || sum(session_index) || ' ' || sum(events) || ' ' || sum((epoch_ms(session_start) // 1000) % 997) FROM (
		SELECT user_id, session_index, min(ts) AS session_start, count(*) AS events FROM (${sessionized}) GROUP BY user_id, session_index)`,
};
for (let i = 0; i < rounds; i++)
	for (const [name, query] of Object.entries(queries)) {
		t = performance.now();
		const r = await con.runAndReadAll(query);
		console.log(`${name} ${((performance.now() - t) / 1000).toFixed(2)} ${r.getRows()[0][0]}`);
	}
JS
cp "$work/duck.mjs" "$duck/duck.mjs"

best() { printf '%s\n' "$@" | sort -g | head -n1; }
timed() {	# timed QUERY WORK_MEM: seconds; the result goes to $work/result
	local t0 t1
	t0=$(now); cs_psql -q -Atc "SET work_mem = '$2'" -c "$1" > "$work/result"; t1=$(now)
	secs "$t0" "$t1"
}
declare -A times
for round in 1 2 3; do
	line="  round $round:"
	for kind in event session; do
		cq=pg_${kind}_c; wq=pg_${kind}_w
		t=$(timed "${!cq}" 1GB); times[$kind.c]+="$t "; c_sum=$(cat "$work/result")
		t=$(timed "${!wq}" 1GB); times[$kind.w]+="$t "; w_sum=$(cat "$work/result")
		t=$(timed "${!cq}" 4MB); times[$kind.c4]+="$t "; c4_sum=$(cat "$work/result")
		[ "$c_sum" = "$w_sum" ] && [ "$c_sum" = "$c4_sum" ] || {
			echo "per $kind: different boundaries: C $c_sum, window $w_sum, C at 4MB $c4_sum" >&2; exit 1; }
		eval "${kind}_sum=\$c_sum"
		line+=" per $kind: C $(echo ${times[$kind.c]} | awk '{print $NF}') s, SQL $(echo ${times[$kind.w]} | awk '{print $NF}') s, C at 4MB $(echo ${times[$kind.c4]} | awk '{print $NF}') s;"
	done
	echo "$line (checksums equal)"
done
duck_out=$(cd "$duck" && node duck.mjs "$work/events.csv" 3)
for kind in event session; do
	sums=$(echo "$duck_out" | awk -v k=$kind '$1 == k {$1 = ""; $2 = ""; print substr($0, 3)}' | sort -u)
	want=${kind}_sum
	[ "$sums" = "${!want}" ] || { echo "DuckDB per $kind differs: $sums vs ${!want}" >&2; exit 1; }
	times[$kind.d]=$(echo "$duck_out" | awk -v k=$kind '$1 == k {print $2}' | tr '\n' ' ')
done
duck_version=$(cd "$duck" && node -e "import('@duckdb/node-api').then(async d => { const c = await (await d.DuckDBInstance.create()).connect(); console.log((await c.runAndReadAll('select version()')).getRows()[0][0]) })")
echo "  DuckDB $duck_version (node $(node --version)): load $(echo "$duck_out" | awk '/^load/ {print $2}') s, per event ${times[event.d]}s, per session ${times[session.d]}s (checksums equal)"
for kind in event session; do
	c=$(best ${times[$kind.c]}); w=$(best ${times[$kind.w]}); d=$(best ${times[$kind.d]}); c4=$(best ${times[$kind.c4]})
	name=$([ $kind = event ] && echo "sessionize (per event)" || echo "sessions_of (per session)")
	echo "  best of 3, $name: C $c s, SQL window $w s ($(printf '%.1f' "$(echo "$w / $c" | bc -l)")x slower), DuckDB $d s ($(printf '%.2f' "$(echo "$d / $c" | bc -l)")x the C time), C at work_mem 4MB $c4 s"
done

fi

# History as days: the same daily volume (~500k events), 1 day (H) against
# 10 days (10xH) of it, in two databases of the one server, measured side by
# side: minute after minute, one refresh of each (in alternating order), so
# that both see the same machine at the same time.
db=postgres q "TRUNCATE clickstream.events, clickstream.event_ids, clickstream.sessions"
make_history 6
rounds=5
echo "== incremental refresh: 1 minute of new events (1000/s), history H (1 day) vs 10xH (10 days), $rounds minutes each, alternating"
end_all=$(q "SELECT max(ts) FROM bench_silver")
cut=$(q "SELECT min(ts) + (max(ts) - min(ts)) / 10 FROM bench_silver")
for db in bench_h bench_10xh; do
	db=postgres q "DROP DATABASE IF EXISTS $db"
	db=postgres q "CREATE DATABASE $db"
	q "CREATE EXTENSION clickstream"
done
db=bench_h load_silver "ts < '$cut'"
db=bench_10xh load_silver true
minutes() {	# minutes LABEL START: $rounds files of 1 minute of events from START
	local epoch_ms m
	epoch_ms=$(q "SELECT (extract(epoch FROM '$2'::timestamptz) * 1000)::bigint + 60000")
	for m in $(seq 0 $((rounds - 1))); do
		"$root/tools/eventgen" --count 60000 --fast --seed $((10 + m)) --rate 1000 --topic "minute$m" \
			--start $((epoch_ms + m * 60000)) --users "$users" \
			--output "$work/$1.minute$m.copy" --format copy --partitions 16 2>/dev/null
		chmod 644 "$work/$1.minute$m.copy"
	done
}
minutes H "$cut"
minutes 10xH "$end_all"
q_bronze() {	# q_bronze: positions and watermarks of what bronze holds, as the worker writes them
	q "INSERT INTO clickstream.ingest_positions (topic, partition, next_offset)
	   SELECT kafka_topic, kafka_partition, max(kafka_offset) + 1 FROM clickstream.bronze GROUP BY 1, 2
	   ON CONFLICT (topic, partition) DO UPDATE SET next_offset = EXCLUDED.next_offset"
	q "INSERT INTO clickstream.watermarks (topic, partition, durable_offset)
	   SELECT kafka_topic, kafka_partition, min(kafka_offset) FROM clickstream.bronze GROUP BY 1, 2
	   ON CONFLICT (topic, partition) DO NOTHING"
}
declare -A refresh_times	# refresh_times[PART/LABEL]: the seconds of each minute
step() {	# step LABEL M: feed minute M to the LABEL history and refresh
	local db=$([ "$1" = H ] && echo bench_h || echo bench_10xh) r
	q "COPY clickstream.bronze (kafka_topic, kafka_partition, kafka_offset, kafka_timestamp, kafka_key, payload) FROM '$work/$1.minute$2.copy'"
	q_bronze
	q "CALL clickstream.refresh()"
	r=$(q "SELECT round(extract(epoch FROM duration)::numeric, 3) || ' ' || round(extract(epoch FROM gold_time)::numeric, 3) || ' ' ||
			  round(extract(epoch FROM duration - gold_time)::numeric, 3) || ' ' || rows_promoted || ' ' || sessions_written
		   FROM clickstream.refresh_history ORDER BY run_id DESC LIMIT 1")
	set -- "$1" "$2" $r
	refresh_times[total/$1]+="$3 "; refresh_times[gold/$1]+="$4 "; refresh_times[silver/$1]+="$5 "
	echo "  $1 minute $2: refresh $3 s (silver $5 s, gold $4 s), $6 events promoted, $7 sessions written"
}
for db in bench_h bench_10xh; do q "CALL clickstream.refresh()"; done	# settle (empty)
for m in $(seq 0 $((rounds - 1))); do
	if [ $((m % 2)) = 0 ]; then step H $m; step 10xH $m; else step 10xH $m; step H $m; fi
done
median() { printf '%s\n' "$@" | sort -g | sed -n "$((($# + 1) / 2))p"; }
for part in total silver gold; do
	h=$(median ${refresh_times[$part/H]}); h10=$(median ${refresh_times[$part/10xH]})
	echo "  median $part: H $h s, 10xH $h10 s, ratio $(printf '%.2f' "$(echo "$h10 / $h" | bc -l)")$([ $part = total ] && echo ' (target <= 1.2)')"
done
for db in bench_h bench_10xh; do
	echo "  $db sizes: $(q "SELECT string_agg(c.relname || ' ' || pg_size_pretty(pg_relation_size(c.oid)), ', ' ORDER BY c.relname)
		FROM pg_class c WHERE c.relname IN ('event_ids_pkey', 'sessions', 'sessions_pkey', 'sessions_user_start')")"
done
