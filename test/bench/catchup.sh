#!/usr/bin/env bash
# Catch-up benchmark: refresh() draining a backlog of N1 and of N2 rows, in
# one run, side by side.  Before the catch-up map every step scanned all of
# bronze (about B^2 / (2 x refresh_batch_size) row reads for a backlog of B
# rows); now bronze is read once per run into a map and each step takes its
# rows by ctid, so the per-row rate must not fall with the backlog.
# Target: the N2 backlog promotes at >= 0.9x the per-row rate of the N1 one.
# Usage: test/bench/catchup.sh [N1] [N2]   (default 1000000 10000000)
# The rows of the N1 run are the first N1 messages of the N2 run's file.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
sizes=("${1:-1000000}" "${2:-10000000}")
partitions=16

bash "$root/tools/setup.sh" >/dev/null

source "$root/tools/cluster.sh"
cs_workdir catchupbench
port=${CS_BENCH_PORT:-54342}
q() { cs_psql -q -Atc "$1"; }
now() { date +%s.%N; }
# The work directory holds the cluster and the COPY file (~5 GB for 10M
# rows, the cluster more): removed at the end unless CS_KEEP_WORK is set.
cleanup() { cs_stop; [ -n "${CS_KEEP_WORK:-}" ] || rm -rf "$work"; }
trap cleanup EXIT

brokers=127.0.0.1:9
cs_start_cluster "$port" "clickstream.enabled = off
max_wal_size = '16GB'
shared_buffers = '1GB'"
q "CREATE EXTENSION clickstream"

big=${sizes[1]}
echo "generating $big events (2% duplicates, 1% malformed)"
"$root/tools/eventgen" --count "$big" --fast --seed 1 --start 2026-11-01T00:00:00Z \
	--users 500000 --products 5000 --dup-share 0.02 --bad-share 0.01 \
	--output "$work/events.copy" --format copy --partitions $partitions --manifest "$work/manifest" >/dev/null
chmod 644 "$work/events.copy"

# a fresh extension for each run: the same empty silver and gold
reset() {
	q "DROP EXTENSION clickstream CASCADE"
	q "CREATE EXTENSION clickstream"
	q "CHECKPOINT"
}

rate=(); silver=(); info=()
for n in "${sizes[@]}"; do
	reset
	if [ "$n" = "$big" ]; then
		q "COPY clickstream.bronze (kafka_topic, kafka_partition, kafka_offset, kafka_timestamp, kafka_key, payload) FROM '$work/events.copy'"
	else
		head -n "$n" "$work/events.copy" > "$work/part.copy"
		chmod 644 "$work/part.copy"
		q "COPY clickstream.bronze (kafka_topic, kafka_partition, kafka_offset, kafka_timestamp, kafka_key, payload) FROM '$work/part.copy'"
		rm -f "$work/part.copy"
	fi
	# what the worker would have stored with those rows
	q "INSERT INTO clickstream.ingest_positions (topic, partition, next_offset)
	   SELECT kafka_topic, kafka_partition, max(kafka_offset) + 1 FROM clickstream.bronze GROUP BY 1, 2;
	   INSERT INTO clickstream.watermarks (topic, partition, durable_offset)
	   SELECT topic, partition, 0 FROM clickstream.ingest_positions"
	q "VACUUM ANALYZE clickstream.bronze"
	q "CHECKPOINT"
	t0=$(now)
	q "CALL clickstream.refresh()"
	t1=$(now)
	gold=$(q "SELECT extract(epoch FROM gold_time) FROM clickstream.refresh_history ORDER BY run_id DESC LIMIT 1")
	rate+=("$(echo "$n / ($t1 - $t0)" | bc)")
	silver+=("$(echo "$n / ($t1 - $t0 - $gold)" | bc)")
	left=$(q "SELECT count(*) FROM clickstream.bronze")
	[ "$left" = 0 ] || { echo "bronze still holds $left rows" >&2; exit 1; }
	read_rows=$(q "SELECT rows_read FROM clickstream.refresh_history ORDER BY run_id DESC LIMIT 1")
	[ "$read_rows" = "$n" ] || { echo "the refresh read $read_rows rows of $n" >&2; exit 1; }
	info+=("$(q "SELECT steps || ' steps, ' || rows_promoted || ' promoted, ' || rows_duplicate || ' duplicates, ' || rows_rejected || ' rejected in ' || date_trunc('second', duration) || ' (gold ' || date_trunc('second', gold_time) || ')' FROM clickstream.refresh_history ORDER BY run_id DESC LIMIT 1")")
	echo "$n rows: refresh ${rate[-1]} rows/s (silver part ${silver[-1]} rows/s): ${info[-1]}"
done

echo
echo "| backlog (rows) | refresh() rows/s | its silver part rows/s | run |"
echo "|---|---|---|---|"
for i in 0 1; do
	printf '| %s | %s | %s | %s |\n' "${sizes[$i]}" "${rate[$i]}" "${silver[$i]}" "${info[$i]}"
done
echo "ratio ${sizes[1]} / ${sizes[0]} per-row rate: refresh $(echo "scale=2; ${rate[1]} / ${rate[0]}" | bc), silver part $(echo "scale=2; ${silver[1]} / ${silver[0]}" | bc) (target >= 0.9)"
