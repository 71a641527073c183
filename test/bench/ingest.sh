#!/usr/bin/env bash
# Ingestion benchmark: the same generated events loaded three ways, in one
# run, into the same UNLOGGED table definition (clickstream.bronze):
#   1. server-side COPY FROM of the generator's file (the ceiling);
#   2. the clickstream worker draining a pre-filled topic;
#   3. a hand-written loader of the kind users write: kcat piped into psql \copy.
# Reports rows/s, ratios and the worker's peak memory.
# Usage: test/bench/ingest.sh [events]   (default 1000000, ~250 bytes each)
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
n=${1:-1000000}
partitions=128          # the mock broker keeps ~5 MiB per partition

bash "$root/tools/setup.sh" >/dev/null

source "$root/tools/cluster.sh"
cs_workdir bench
port=54339
q() { cs_psql -q -Atc "$1"; }
now() { date +%s.%N; }

cleanup() {
	[ -n "${sampler:-}" ] && kill "$sampler" 2>/dev/null || true
	cs_stop
}
trap cleanup EXIT

cs_start_broker "$partitions"
cs_start_cluster "$port" "clickstream.enabled = off
fsync = off"
q "CREATE EXTENSION clickstream"

gen="$root/tools/eventgen --count $n --fast --seed 1 --start 2026-11-01T00:00:00Z --users 500000 --products 5000"
echo "generating $n events"
$gen --output "$work/events.copy" --format copy --partitions $partitions
chmod 644 "$work/events.copy"
bytes=$(stat -c %s "$work/events.copy")
$gen --brokers "$brokers" --topic clickstream 2>/dev/null
echo "topic pre-filled: $n messages in $partitions partitions"

# Each method loads the same rows into an emptied bronze; two rounds, the
# methods interleaved, and the better run of each is kept.
reset_bronze() { q "TRUNCATE clickstream.bronze"; q "CHECKPOINT"; }

run_copy() {
	reset_bronze
	local t0 t1
	t0=$(now)
	q "COPY clickstream.bronze (kafka_topic, kafka_partition, kafka_offset, kafka_timestamp, kafka_key, payload) FROM '$work/events.copy'"
	t1=$(now)
	echo "$n / ($t1 - $t0)" | bc
}

# the worker drains the topic from the beginning (positions forgotten)
run_worker() {
	reset_bronze
	q "TRUNCATE clickstream.ingest_positions, clickstream.watermarks"
	q "ALTER SYSTEM SET clickstream.enabled = on"; q "SELECT pg_reload_conf()" >/dev/null
	local t0 t1 pid=""
	t0=$(now)
	for _ in $(seq 100); do
		pid=$(q "SELECT pid FROM clickstream.workers WHERE pid IS NOT NULL")
		[ -n "$pid" ] && break
		sleep 0.1
	done
	(
		peak=0
		while kill -0 "$pid" 2>/dev/null; do
			a=$(awk '/^RssAnon/ {print $2}' /proc/$pid/status 2>/dev/null || echo 0)
			if [ "${a:-0}" -gt "$peak" ]; then peak=$a; echo "$peak" > "$work/peak_anon.$pid"; fi
			sleep 0.05
		done
	) &
	sampler=$!
	while [ "$(q "SELECT count(*) FROM clickstream.bronze")" -lt "$n" ]; do sleep 0.1; done
	t1=$(now)
	awk '/^VmHWM/ {print $2}' /proc/$pid/status > "$work/hwm"
	kill "$sampler" 2>/dev/null || true
	sampler=""
	cp "$work/peak_anon.$pid" "$work/peak_anon"
	q "ALTER SYSTEM SET clickstream.enabled = off"; q "SELECT pg_reload_conf()" >/dev/null
	[ "$(q "SELECT count(DISTINCT (kafka_partition, kafka_offset)) FROM clickstream.bronze")" = "$n" ] ||
		echo "worker: WRONG ROW SET" >&2
	echo "$(echo "$n / ($t1 - $t0)" | bc) $(q "SELECT round(($n - (SELECT count(*) FROM clickstream.bronze WHERE ingested_at = (SELECT max(ingested_at) FROM clickstream.bronze)))
	            / extract(epoch FROM max(ingested_at) - min(ingested_at))) FROM clickstream.bronze")"
	sleep 3		# let the worker leave the group
}

run_loader() {
	reset_bronze
	local t0 t1
	t0=$(now)
	kcat -C -b "$brokers" -t clickstream -o beginning -e -q -f 'clickstream\t%p\t%o\t%k\t%s\n' |
		psql -X -q -h "$work" -p "$port" -U postgres -d postgres \
			-c "\\copy clickstream.bronze (kafka_topic, kafka_partition, kafka_offset, kafka_key, payload) FROM STDIN"
	t1=$(now)
	[ "$(q "SELECT count(*) FROM clickstream.bronze")" = "$n" ] || echo "loader: wrong row count" >&2
	echo "$n / ($t1 - $t0)" | bc
}

copy_best=0; steady=0; wall=0; loader=0
max() { [ "$1" -gt "$2" ] && echo "$1" || echo "$2"; }
for round in 1 2; do
	c=$(run_copy)
	read -r w s < <(run_worker)
	l=$(run_loader)
	echo "round $round: COPY $c rows/s; worker $s rows/s steady, $w wall; kcat|psql $l rows/s"
	copy_best=$(max "$c" "$copy_best"); steady=$(max "$s" "$steady")
	wall=$(max "$w" "$wall"); loader=$(max "$l" "$loader")
done
avg=$(q "SELECT round(avg(length(payload))) FROM clickstream.bronze")
hwm=$(cat "$work/hwm")
peak_anon=$(cat "$work/peak_anon" 2>/dev/null || echo 0)

echo
echo "| method | rows/s | vs COPY |"
echo "|---|---|---|"
printf '| server-side COPY FROM file (ceiling) | %d | 1.00 |\n' "$copy_best"
printf '| clickstream worker, steady | %d | %.2f |\n' "$steady" "$(echo "$steady / $copy_best" | bc -l)"
printf '| clickstream worker, wall incl. group join | %d | %.2f |\n' "$wall" "$(echo "$wall / $copy_best" | bc -l)"
printf '| kcat \\| psql \\\\copy | %d | %.2f |\n' "$loader" "$(echo "$loader / $copy_best" | bc -l)"
echo
echo "events: $n, average payload $avg bytes, COPY file $((bytes / 1048576)) MiB"
echo "worker peak memory: private (RssAnon) $((peak_anon / 1024)) MiB, VmHWM $((hwm / 1024)) MiB (VmHWM includes shared buffers it touched)"
