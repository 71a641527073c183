#!/usr/bin/env bash
# Set-up shared by the demo and the tests: install the Debian packages that
# are missing, then build and install the extension and build the tools.
# Idempotent; needs root (or sudo) for apt and `make install`.
# CS_WERROR=1 (set by test/run.sh) makes compiler warnings errors.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)

packages="build-essential pkg-config postgresql-15 postgresql-server-dev-15
	postgresql-15-cron librdkafka-dev kcat libipc-run-perl python3-psycopg2
	python3-confluent-kafka valgrind bc docker-compose"

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"

missing=""
for p in $packages; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
	echo "setup: installing$missing"
	$sudo apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

# Install into the PostgreSQL that will run it: PG_CONFIG, else the one next
# to CS_PGBIN (tools/cluster.sh's server binaries), else Debian's.
if [ -z "${PG_CONFIG:-}" ] && [ -n "${CS_PGBIN:-}" ]; then
	PG_CONFIG=$CS_PGBIN/pg_config
fi
export PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
make -s -C "$root" CS_WERROR="${CS_WERROR:-}" all tools >/dev/null
$sudo make -s -C "$root" install >/dev/null
echo "setup: clickstream built and installed into $($PG_CONFIG --pkglibdir), tools built"
