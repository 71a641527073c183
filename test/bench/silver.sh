#!/usr/bin/env bash
# Silver benchmark: the same generated events, in one run, side by side:
#   1. server-side COPY FROM of the generator's file into clickstream.bronze;
#   2. CALL clickstream.refresh() promoting those bronze rows to silver
#      (its silver part: the run's duration less its gold_time, the sessions
#      it maintains in the same transactions; both are reported)
#      (parse, validate, deduplicate, partition, dead letters, touched,
#      watermarks, bronze deletion);
# plus the parser alone, and the built-in jsonb cast for comparison.
# Target: refresh rate >= 1/3 of the COPY rate.
# Usage: test/bench/silver.sh [events]   (default 1000000)
# CS_BENCH_ALIASES=1: the events use a producer's own names (event_time,
# userId, type; view, cart) and the server maps them back with
# clickstream.field_aliases and clickstream.event_type_aliases.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
n=${1:-1000000}
partitions=16

bash "$root/tools/setup.sh" >/dev/null

source "$root/tools/cluster.sh"
cs_workdir silverbench
port=${CS_BENCH_PORT:-54341}
q() { cs_psql -q -Atc "$1"; }
now() { date +%s.%N; }
# The work directory holds ~2 GB (cluster and COPY file): removed at the
# end unless CS_KEEP_WORK is set.
cleanup() { cs_stop; [ -n "${CS_KEEP_WORK:-}" ] || rm -rf "$work"; }
trap cleanup EXIT

brokers=127.0.0.1:9
aliases_conf=""
if [ -n "${CS_BENCH_ALIASES:-}" ]; then
	aliases_conf="clickstream.field_aliases = 'ts=event_time|event_ts|timestamp, user_id=userId|uid, event_type=type, category=category_code'
clickstream.event_type_aliases = 'page_view=view|pageview, add_to_cart=cart'"
fi
cs_start_cluster "$port" "clickstream.enabled = off
max_wal_size = '8GB'
shared_buffers = '1GB'
$aliases_conf"
q "CREATE EXTENSION clickstream"

echo "generating $n events (2% duplicates, 1% malformed, 2% late)"
"$root/tools/eventgen" --count "$n" --fast --seed 1 --start 2026-11-01T00:00:00Z \
	--users 500000 --products 5000 --dup-share 0.02 --bad-share 0.01 --late-share 0.02 \
	--bad-kinds invalid_json,not_object,missing_field,empty_field,wrong_type,negative_price,bad_quantity,invalid_utf8,bad_timestamp,purchase_without_order \
	--output "$work/events.copy" --format copy --partitions $partitions --manifest "$work/manifest"
if [ -n "${CS_BENCH_ALIASES:-}" ]; then
	# in the payloads' hex: "ts": "user_id": "event_type": "page_view" "add_to_cart"
	echo "renaming fields and event types as the producer of CS_BENCH_ALIASES names them"
	sed -i -e 's/227473223a/226576656e745f74696d65223a/g' -e 's/22757365725f6964223a/22757365724964223a/g' \
		-e 's/226576656e745f74797065223a/2274797065223a/g' -e 's/22706167655f7669657722/227669657722/g' \
		-e 's/226164645f746f5f6361727422/226361727422/g' "$work/events.copy"
fi
chmod 644 "$work/events.copy"
valid=$(awk -F= '$1 == "valid" {print $2}' "$work/manifest")

# Round 1 meets days without a partition (the events pass through the
# default partition and move to the new day's); later rounds find the day
# partitions there, as a running pipeline does.
reset() {
	q "TRUNCATE clickstream.events, clickstream.bronze, clickstream.ingest_positions, clickstream.watermarks,
	            clickstream.event_ids, clickstream.dead_letters, clickstream.touched,
	            clickstream.refresh_history, clickstream.sessions, clickstream.daily_funnel,
	            clickstream.funnel_by_category, clickstream.product_funnel,
	            clickstream.high_interest_low_conversion"
	q "CHECKPOINT"
}

copy_rate=(); refresh_rate=(); silver_rate=(); parse_rate=(); jsonb_rate=()
for round in 1 2 3; do
	reset
	t0=$(now)
	q "COPY clickstream.bronze (kafka_topic, kafka_partition, kafka_offset, kafka_timestamp, kafka_key, payload) FROM '$work/events.copy'"
	t1=$(now)
	copy_rate+=("$(echo "$n / ($t1 - $t0)" | bc)")
	# what the worker would have stored with those rows
	q "INSERT INTO clickstream.ingest_positions (topic, partition, next_offset)
	   SELECT kafka_topic, kafka_partition, max(kafka_offset) + 1 FROM clickstream.bronze GROUP BY 1, 2;
	   INSERT INTO clickstream.watermarks (topic, partition, durable_offset)
	   SELECT topic, partition, 0 FROM clickstream.ingest_positions"
	q "VACUUM ANALYZE clickstream.bronze"

	t0=$(now)
	q "SELECT count(*) FROM clickstream.bronze b, LATERAL clickstream.parse_event(b.payload) e WHERE e.reason IS NULL" >/dev/null
	t1=$(now)
	parse_rate+=("$(echo "$n / ($t1 - $t0)" | bc)")
	t0=$(now)
	q "SELECT count(*) FROM clickstream.bronze b, LATERAL clickstream.parse_event(b.payload) e
	   WHERE CASE WHEN e.reason IS NULL THEN (convert_from(b.payload, 'UTF8')::jsonb ->> 'event_id') IS NOT NULL END" >/dev/null
	t1=$(now)
	jsonb_rate+=("$(echo "$n / ($t1 - $t0)" | bc)")

	q "CHECKPOINT"
	t0=$(now)
	q "CALL clickstream.refresh()"
	t1=$(now)
	refresh_rate+=("$(echo "$n / ($t1 - $t0)" | bc)")
	# the same run without its gold part (sessions, in the steps' transactions)
	gold=$(q "SELECT extract(epoch FROM gold_time) FROM clickstream.refresh_history ORDER BY run_id DESC LIMIT 1")
	silver_rate+=("$(echo "$n / ($t1 - $t0 - $gold)" | bc)")
	got=$(q "SELECT count(*) FROM clickstream.events")
	[ "$got" = "$valid" ] || { echo "silver has $got events, expected $valid" >&2; exit 1; }
	echo "round $round: COPY ${copy_rate[-1]} rows/s, refresh ${refresh_rate[-1]} rows/s (silver part ${silver_rate[-1]} rows/s), parser alone ${parse_rate[-1]} rows/s"
	q "SELECT 'refresh: ' || steps || ' steps, ' || rows_promoted || ' promoted, ' || rows_duplicate || ' duplicates, ' || rows_rejected || ' rejected, ' || partitions_created || ' partitions, ' || sessions_written || ' sessions in ' || duration || ' (gold ' || gold_time || ')' FROM clickstream.refresh_history"
done

echo
echo "| round (1: new days) | COPY into bronze rows/s | refresh() silver part rows/s | silver / COPY | refresh() with gold rows/s | with gold / COPY | parse_event alone rows/s | parse_event + jsonb cast rows/s |"
echo "|---|---|---|---|---|---|---|---|"
for i in 0 1 2; do
	printf '| %d | %s | %s | %s | %s | %s | %s | %s |\n' $((i + 1)) "${copy_rate[$i]}" "${silver_rate[$i]}" \
		"$(echo "scale=2; ${silver_rate[$i]} / ${copy_rate[$i]}" | bc)" "${refresh_rate[$i]}" \
		"$(echo "scale=2; ${refresh_rate[$i]} / ${copy_rate[$i]}" | bc)" "${parse_rate[$i]}" "${jsonb_rate[$i]}"
done
echo "events: $n messages, $valid valid distinct; payload bytes $(stat -c %s "$work/events.copy") (COPY file)"
