#!/usr/bin/env bash
# The main job, end to end, on the embedded default: a private PostgreSQL
# cluster, the local broker, the event generator streaming realistic traffic
# (with some duplicates, malformed and late events), the ingestion worker,
# and a summary on screen.  Usage: tools/demo.sh [seconds] [events-per-second]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
seconds=${1:-30}
rate=${2:-20000}

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

echo "== private PostgreSQL cluster in $work/data (port $port)"
cs_start_cluster "$port" "clickstream.max_message_bytes = '64kB'"
psql_demo -qc "CREATE EXTENSION clickstream"

echo "== generator: $rate events/s for ${seconds}s (1% duplicates, 1% malformed, 2% late)"
"$root/tools/eventgen" --brokers "$brokers" --topic clickstream --rate "$rate" \
	--duration "$seconds" --users 50000 --products 2000 --seed 7 \
	--dup-share 0.01 --bad-share 0.01 --late-share 0.02 --oversize-bytes 100000 \
	--manifest "$work/manifest" 2> "$work/eventgen.log" &
gen_pid=$!

printf '\n%8s %12s %12s %10s %8s\n' "t (s)" "bronze rows" "rows/s" "lag" "dead"
start=$(date +%s)
while kill -0 "$gen_pid" 2>/dev/null; do
	sleep 3
	psql_demo -Atc "SELECT (SELECT count(*) FROM clickstream.bronze),
	       round((SELECT sum(messages_per_sec) FROM clickstream.status)),
	       (SELECT coalesce(sum(lag), 0) FROM clickstream.status),
	       (SELECT count(*) FROM clickstream.dead_letters)" |
		awk -F'|' -v t=$(( $(date +%s) - start )) '{printf "%8d %12d %12d %10d %8d\n", t, $1, $2, $3, $4}'
done
gen_pid=""
produced=$(grep '^messages=' "$work/manifest" | cut -d= -f2)

# let the worker drain the rest
for _ in $(seq 60); do
	done_rows=$(psql_demo -Atc "SELECT (SELECT count(*) FROM clickstream.bronze) + (SELECT count(*) FROM clickstream.dead_letters WHERE stage = 'ingest')")
	[ "$done_rows" -ge "$produced" ] && break
	sleep 1
done

echo
echo "== summary"
echo "   generator: $(tail -n1 "$work/eventgen.log")"
psql_demo <<SQL
\pset footer off
SELECT $produced AS produced,
       (SELECT count(*) FROM clickstream.bronze) AS bronze_rows,
       (SELECT count(*) FROM clickstream.dead_letters WHERE stage = 'ingest') AS dead_letters,
       (SELECT sum(lag) FROM clickstream.status) AS total_lag,
       round((SELECT count(*) FROM clickstream.bronze)
             / greatest(extract(epoch FROM max(ingested_at) - min(ingested_at)), 1)) AS avg_rows_per_sec
FROM clickstream.bronze;

SELECT reason, count(*), max(detail) AS example FROM clickstream.dead_letters GROUP BY 1;

SELECT partition, committed_offset, high_watermark, lag, round(messages_per_sec) AS msgs_per_sec,
       to_char(last_batch_at, 'HH24:MI:SS.MS') AS last_batch
FROM clickstream.status ORDER BY partition LIMIT 16;

SELECT convert_from(payload, 'UTF8') AS sample_event
FROM clickstream.bronze ORDER BY kafka_partition, kafka_offset LIMIT 1;
SQL
echo "(the cluster, broker and logs were in $work; both are stopped now)"
