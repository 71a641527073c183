#!/usr/bin/env bash
# End-to-end rate: the whole pipeline on this machine, for each given rate:
# the local broker, a private server with the worker and pg_cron running
# CALL clickstream.refresh() every minute, and the generator producing at a
# fixed rate for SECONDS (default 300).  Every 10 s it samples how fresh gold
# is (now() - gold_state.newest_event_at: event time to the marts) and what
# bronze holds; it reports, after the first 2 minutes, the worst freshness,
# bronze at the start of each refresh, and the refreshes' durations.
# A rate is sustained when freshness stays <= 90 s and bronze does not grow
# (the last refreshes start with no more than the first ones, +25 %).
#
# Traffic is realistic for the rate: sessions of ~5.5 events about 30 s
# apart (--concurrency = 30 x rate), so a session spans a few refreshes, and
# enough users that none is needed twice within the run (the generator's
# users come back 35 minutes to 2 days after a session): --users = (40 +
# SECONDS / 4) x rate.  With fewer (40 x rate before), the generator runs
# out of users, stretches sessions instead ("sessions stretched" in its log)
# and every active user's session grows for the whole run, so that each
# refresh recomputes longer and longer sessions: not what a shop sees.
# Usage: test/bench/e2e.sh [SECONDS] RATE...   (default: 300 5000 10000 20000 40000)
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
seconds=${1:-300}
shift || true
rates=${*:-5000 10000 20000 40000}

bash "$root/tools/setup.sh" >/dev/null
source "$root/tools/cluster.sh"

echo "== $(date -u +%FT%TZ) on $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg), commit $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo '?')"
for rate in $rates; do
	cs_workdir e2e
	port=54353
	q() { cs_psql -q -Atc "$1"; }
	cs_start_broker 64
	cs_start_cluster "$port" "shared_preload_libraries = 'clickstream,pg_cron'
cron.database_name = 'postgres'
cron.use_background_workers = on
max_worker_processes = 32
max_wal_size = '8GB'
shared_buffers = '2GB'
clickstream.max_message_bytes = '64kB'"
	q "CREATE EXTENSION clickstream"
	q "CREATE EXTENSION pg_cron"
	q "SELECT clickstream.schedule()" >/dev/null
	"$root/tools/eventgen" --brokers "$brokers" --topic clickstream --rate "$rate" --duration "$seconds" \
		--users $((rate * (40 + seconds / 4))) --concurrency $((rate * 30)) --products 2000 --seed 11 \
		--manifest "$work/manifest" 2> "$work/eventgen.log" &
	gen=$!
	t0=$(date +%s)
	worst=0
	samples=""
	while kill -0 "$gen" 2>/dev/null; do
		sleep 10
		t=$(( $(date +%s) - t0 ))
		f=$(q "SELECT coalesce(round(extract(epoch FROM now() - newest_event_at))::text, '-') FROM clickstream.gold_state")
		b=$(q "SELECT count(*) FROM clickstream.bronze")
		samples+="$t:${f}s/$b "
		if [ "$t" -gt 120 ] && [ "$f" != - ] && [ "$f" -gt "$worst" ]; then worst=$f; fi
	done
	produced=$(grep '^messages=' "$work/manifest" | cut -d= -f2)
	echo "-- $rate events/s for ${seconds}s: $produced produced$(grep -o '[0-9]* sessions stretched' "$work/eventgen.log" | sed 's/^/ (generator: /; s/$/)/')"
	echo "   samples (s since start: freshness / bronze rows): $samples"
	runs=$(q "SELECT string_agg(format('%s%s', round(extract(epoch FROM duration)), CASE WHEN status <> 'succeeded' THEN '(' || status || ')' ELSE '' END), ' ' ORDER BY run_id)
			  FROM clickstream.refresh_history WHERE kind = 'refresh' AND rows_read > 0")
	backlog=$(q "SELECT string_agg(rows_read::text, ' ' ORDER BY run_id) FROM clickstream.refresh_history WHERE kind = 'refresh' AND rows_read > 0")
	echo "   refresh runs: seconds $runs; rows each $backlog"
	first=$(echo "$backlog" | awk '{print $2}'); last=$(echo "$backlog" | awk '{print $NF}')
	grows=$(awk -v a="${first:-0}" -v b="${last:-0}" 'BEGIN { print (a > 0 && b > 1.25 * a) ? "yes" : "no" }')
	echo "   worst freshness after 2 minutes: ${worst} s (target <= 90 s); bronze grows: $grows; sustained: $([ "$worst" -le 90 ] && [ "$grows" = no ] && echo yes || echo no)"
	cs_stop
	rm -rf "$work"
done
