# Sourced by tools/demo.sh and test/bench/*.sh: a work directory with a local
# Kafka broker (tools/broker) and a private PostgreSQL cluster that preloads
# clickstream.  As root, PostgreSQL runs as the postgres user.
#
#   cs_workdir NAME            create $work, define as_pg
#   cs_start_broker N          start a broker with N partitions: $brokers, $broker_pid
#   cs_start_cluster PORT CONF initdb + settings + start on $work's socket
#   cs_psql ARGS...            psql on that cluster
#   cs_stop                    stop the cluster and the broker

cs_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# The server binaries: CS_PGBIN, else those of PG_CONFIG (the installation
# the extension was built for), else Debian's.
if [ -n "${CS_PGBIN:-}" ]; then
	cs_bin=$CS_PGBIN
elif [ -n "${PG_CONFIG:-}" ]; then
	cs_bin=$("$PG_CONFIG" --bindir)
else
	cs_bin=/usr/lib/postgresql/15/bin
fi

# Create the work directory; as_pg runs a command as the cluster's owner.
cs_workdir() {
	work=$(mktemp -d "/tmp/clickstream-$1.XXXXXX")
	chmod 755 "$work"
	if [ "$(id -u)" -eq 0 ]; then
		chown postgres: "$work"
		as_pg() { su postgres -s /bin/bash -c "$1"; }
	else
		as_pg() { bash -c "$1"; }
	fi
}

# Start the local broker and wait for its bootstrap address.
cs_start_broker() {
	"$cs_root/tools/broker" --partitions "$1" > "$work/broker.addr" 2> "$work/broker.log" &
	broker_pid=$!
	for _ in $(seq 50); do [ -s "$work/broker.addr" ] && break; sleep 0.1; done
	brokers=$(head -n1 "$work/broker.addr")
}

# initdb, write the settings (clickstream preloaded, pointed at $brokers), start.
cs_start_cluster() {
	cs_port=$1
	as_pg "$cs_bin/initdb -D '$work/data' -A trust -U postgres -E UTF8 --locale=C >/dev/null"
	cat >> "$work/data/postgresql.conf" <<CONF
port = $cs_port
unix_socket_directories = '$work'
listen_addresses = ''
shared_preload_libraries = 'clickstream'
clickstream.brokers = '$brokers'
clickstream.database = 'postgres'
# below the generator's default oversize message (100000 bytes), which stays
# small next to the ~5 MiB the local broker keeps per partition
clickstream.max_message_bytes = '64kB'
$2
CONF
	as_pg "$cs_bin/pg_ctl -D '$work/data' -l '$work/postgres.log' -w start >/dev/null"
}

# psql on the private cluster.
cs_psql() { psql -X -h "$work" -p "$cs_port" -U postgres -d postgres "$@"; }

# Stop the cluster and the broker (safe to call twice).
cs_stop() {
	[ -d "$work/data" ] && as_pg "$cs_bin/pg_ctl -D '$work/data' -m fast stop" >/dev/null 2>&1
	[ -n "${broker_pid:-}" ] && kill "$broker_pid" 2>/dev/null
	broker_pid=""
	return 0
}
