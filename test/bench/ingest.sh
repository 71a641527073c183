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
partitions=64            # the mock broker keeps ~5 MiB per partition
bin=/usr/lib/postgresql/15/bin

bash "$root/tools/setup.sh" >/dev/null

work=$(mktemp -d /tmp/clickstream-bench.XXXXXX)
chmod 755 "$work"
as_pg() { bash -c "$1"; }
if [ "$(id -u)" -eq 0 ]; then
	chown postgres: "$work"
	as_pg() { su postgres -s /bin/bash -c "$1"; }
fi
port=54339
q() { psql -X -q -h "$work" -p "$port" -U postgres -d postgres -Atc "$1"; }
now() { date +%s.%N; }

cleanup() {
	[ -n "${sampler:-}" ] && kill "$sampler" 2>/dev/null || true
	as_pg "$bin/pg_ctl -D '$work/data' -m fast stop" >/dev/null 2>&1 || true
	[ -n "${broker_pid:-}" ] && kill "$broker_pid" 2>/dev/null || true
}
trap cleanup EXIT

"$root/tools/broker" --partitions $partitions > "$work/broker.addr" 2>/dev/null &
broker_pid=$!
for _ in $(seq 50); do [ -s "$work/broker.addr" ] && break; sleep 0.1; done
brokers=$(head -n1 "$work/broker.addr")

as_pg "$bin/initdb -D '$work/data' -A trust -U postgres >/dev/null"
cat >> "$work/data/postgresql.conf" <<CONF
port = $port
unix_socket_directories = '$work'
listen_addresses = ''
shared_preload_libraries = 'clickstream'
clickstream.brokers = '$brokers'
clickstream.enabled = off
fsync = off
CONF
as_pg "$bin/pg_ctl -D '$work/data' -l '$work/postgres.log' -w start >/dev/null"
q "CREATE EXTENSION clickstream"

gen="$root/tools/eventgen --count $n --fast --seed 1 --start 2026-11-01T00:00:00Z --users 500000 --products 5000"
echo "generating $n events"
$gen --output "$work/events.copy" --format copy --partitions $partitions
chmod 644 "$work/events.copy"
bytes=$(stat -c %s "$work/events.copy")
$gen --brokers "$brokers" --topic clickstream 2>/dev/null
echo "topic pre-filled: $n messages in $partitions partitions"

# 1. COPY (server side, from the file), twice; keep the better run
copy_best=0
for run in 1 2; do
	q "TRUNCATE clickstream.bronze; CHECKPOINT"
	t0=$(now)
	q "COPY clickstream.bronze (kafka_topic, kafka_partition, kafka_offset, kafka_timestamp, kafka_key, payload) FROM '$work/events.copy'"
	t1=$(now)
	r=$(echo "$n / ($t1 - $t0)" | bc)
	echo "COPY run $run: $r rows/s"
	[ "$r" -gt "$copy_best" ] && copy_best=$r
done
avg=$(q "SELECT round(avg(length(payload))) FROM clickstream.bronze")
q "TRUNCATE clickstream.bronze; CHECKPOINT"

# 2. the worker drains the topic
q "ALTER SYSTEM SET clickstream.enabled = on; SELECT pg_reload_conf()" >/dev/null
t0=$(now)
for _ in $(seq 100); do
	pid=$(q "SELECT pid FROM clickstream.workers WHERE pid IS NOT NULL")
	[ -n "$pid" ] && break
	sleep 0.1
done
# sample the worker's memory while it drains
(
	peak_anon=0
	while kill -0 "$pid" 2>/dev/null; do
		a=$(awk '/^RssAnon/ {print $2}' /proc/$pid/status 2>/dev/null || echo 0)
		[ "${a:-0}" -gt "$peak_anon" ] && peak_anon=$a && echo "$peak_anon" > "$work/peak_anon"
		sleep 0.05
	done
) &
sampler=$!
while [ "$(q "SELECT count(*) FROM clickstream.bronze")" -lt "$n" ]; do sleep 0.1; done
t1=$(now)
hwm=$(awk '/^VmHWM/ {print $2}' /proc/$pid/status)
kill "$sampler" 2>/dev/null || true
sampler=""
peak_anon=$(cat "$work/peak_anon" 2>/dev/null || echo 0)
# steady rate: from the first batch's commit to the last batch's start
steady=$(q "SELECT round(($n - (SELECT count(*) FROM clickstream.bronze WHERE ingested_at = (SELECT max(ingested_at) FROM clickstream.bronze)))
            / extract(epoch FROM max(ingested_at) - min(ingested_at))) FROM clickstream.bronze")
wall=$(echo "$n / ($t1 - $t0)" | bc)
exact=$(q "SELECT count(DISTINCT (kafka_partition, kafka_offset)) = $n FROM clickstream.bronze")
q "ALTER SYSTEM SET clickstream.enabled = off; SELECT pg_reload_conf()" >/dev/null
echo "worker: $steady rows/s steady (first to last batch), $wall rows/s wall (incl. group join), exact=$exact"

# 3. hand-written loader: kcat | psql \copy
q "TRUNCATE clickstream.bronze; CHECKPOINT"
t0=$(now)
kcat -C -b "$brokers" -t clickstream -o beginning -e -q -f 'clickstream\t%p\t%o\t%k\t%s\n' |
	psql -X -q -h "$work" -p "$port" -U postgres -d postgres \
		-c "\\copy clickstream.bronze (kafka_topic, kafka_partition, kafka_offset, kafka_key, payload) FROM STDIN"
t1=$(now)
loader=$(echo "$n / ($t1 - $t0)" | bc)
got=$(q "SELECT count(*) FROM clickstream.bronze")
echo "kcat | psql \\copy: $loader rows/s ($got rows)"

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
