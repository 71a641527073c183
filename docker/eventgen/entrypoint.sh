#!/bin/sh
# Feed Kafka as a shop would.  Once (a marker in the eventgen volume
# remembers it), EVENTGEN_BACKFILL_DAYS days of history up to now, produced
# as fast as the broker takes them, so that the dashboards have days to show;
# then live traffic at EVENTGEN_RATE events per second until stopped.  Every
# run has its own seed: new event ids, and order ids tagged by the seed.
set -eu

brokers=${KAFKA_BROKERS:-kafka:9092}
topic=${KAFKA_TOPIC:-clickstream}
users=${EVENTGEN_USERS:-20000}
days=${EVENTGEN_BACKFILL_DAYS:-7}
backfill_rate=${EVENTGEN_BACKFILL_RATE:-2}
rate=${EVENTGEN_RATE:-50}
# concurrent sessions: a session's events come about concurrency / rate
# seconds apart (a minute or less keeps sessions realistic)
backfill_concurrency=${EVENTGEN_BACKFILL_CONCURRENCY:-60}
concurrency=${EVENTGEN_CONCURRENCY:-1000}
faults="--dup-share ${EVENTGEN_DUP_SHARE:-0.01} --bad-share ${EVENTGEN_BAD_SHARE:-0.005} --late-share ${EVENTGEN_LATE_SHARE:-0.01}"
marker=/var/lib/eventgen/backfilled

if [ "$days" -gt 0 ] && [ ! -e "$marker" ]; then
	start=$(date -u -d "@$(($(date +%s) - days * 86400))" +%Y-%m-%dT%H:%M:%SZ)
	count=$((days * 86400 * backfill_rate))
	echo "eventgen: backfilling $count events from $start"
	# shellcheck disable=SC2086
	eventgen --brokers "$brokers" --topic "$topic" --fast --start "$start" \
		--rate "$backfill_rate" --count "$count" --concurrency "$backfill_concurrency" \
		--users "$users" --seed "$(date +%s)" $faults
	touch "$marker"
fi

echo "eventgen: producing $rate events/s"
# shellcheck disable=SC2086
exec eventgen --brokers "$brokers" --topic "$topic" --rate "$rate" --duration 315360000 \
	--concurrency "$concurrency" --users "$users" --seed "$(($(date +%s) + 1))" $faults
