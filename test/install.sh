#!/usr/bin/env bash
# The README's "Installing in your own server", run as written: its fenced
# blocks are taken from README.md in order (sh, ini, sh, sql) and run against
# a private PostgreSQL that stands for the machine's own.  Fails when a block
# stops working.  Prints "ok N - ..." / "not ok N - ..." lines (counted by
# test/run.sh).
#
# What stands in for the machine: a copy of the PostgreSQL installation of
# PG_CONFIG (PostgreSQL is relocatable) without clickstream in it, which the
# blocks' make and make install build for and install into (PG_CONFIG points
# at it), and a fresh cluster of it; PGHOST/PGPORT point the client programs
# (createdb, psql) at that cluster; the ini block is appended to its
# postgresql.conf instead of /etc/postgresql/15/main/conf.d; "systemctl
# restart postgresql" and "pg_ctlcluster 15 main restart" restart it;
# "apt-get update" is skipped and "apt-get install" checks that every package
# it names is installed (tools/setup.sh installs them), installing the
# missing ones.  The machine's own PostgreSQL is not touched.
#
# Usage: test/install.sh (as root, or as a user who can run a cluster); the
# tools must be built (make tools).
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
system_pg_config=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
port=${CS_INSTALL_PORT:-54391}

n=0
failed=0
check() {
	local desc=$1
	shift
	n=$((n + 1))
	if "$@"; then
		echo "ok $n - $desc"
	else
		echo "not ok $n - $desc"
		failed=$((failed + 1))
	fi
}

work=$(mktemp -d /tmp/clickstream-install.XXXXXX)
chmod 755 "$work"
if [ "$(id -u)" -eq 0 ]; then
	chown postgres: "$work"
	as_pg() { su postgres -s /bin/bash -c "$1"; }
else
	as_pg() { bash -c "$1"; }
	# the README's "su postgres -c CMD" runs CMD as this user
	su() { [ "$1" = postgres ] && [ "$2" = -c ] && bash -c "$3"; }
fi

# --- a PostgreSQL without clickstream ----------------------------------------
pg=$work/pg
mkdir -p "$pg"
dirs=""
for d in "$("$system_pg_config" --bindir)/.." "$("$system_pg_config" --sharedir)" \
	"$("$system_pg_config" --includedir-server)/../.."; do
	dirs="$dirs $(cd "$d" && pwd | cut -c2-)"
done
tar -C / -cf - $dirs | tar -C "$pg" -xf -
export PG_CONFIG=$pg$("$system_pg_config" --bindir)/pg_config
bindir=$("$PG_CONFIG" --bindir)
rm -rf "$("$PG_CONFIG" --sharedir)"/extension/clickstream* "$("$PG_CONFIG" --pkglibdir)"/clickstream.so \
	"$("$PG_CONFIG" --pkglibdir)"/bitcode/clickstream*
check "a private PostgreSQL without clickstream in $pg" \
	test "$bindir" = "$pg$("$system_pg_config" --bindir)" -a ! -e "$("$PG_CONFIG" --sharedir)/extension/clickstream.control"

# --- the README's blocks ---------------------------------------------------
awk -v dir="$work" '
	/^## Installing in your own server/ { in_section = 1; next }
	/^## / { in_section = 0 }
	!in_section { next }
	/^```/ {
		if (in_block) { in_block = 0; close(file); next }
		in_block = 1; count++
		lang = substr($0, 4)
		file = sprintf("%s/block%d.%s", dir, count, lang)
		printf "" > file
		next
	}
	in_block { print > file }
' "$root/README.md"
blocks=$(cd "$work" && ls block*.* 2>/dev/null | sort -V | tr '\n' ' ')
check "the install section has its four blocks (sh, ini, sh, sql): $blocks" \
	test "$blocks" = "block1.sh block2.ini block3.sh block4.sql "

# --- the machine's own server: a fresh cluster with the default settings -----
as_pg "'$bindir/initdb' -D '$work/data' -E UTF8 --locale=C.UTF-8 >'$work/initdb.log' 2>&1" ||
	{ echo "initdb failed"; cat "$work/initdb.log"; }
as_pg "cat >> '$work/data/postgresql.conf' <<EOF
port = $port
unix_socket_directories = '$work'
listen_addresses = ''
EOF"
restart_server() {
	as_pg "'$bindir/pg_ctl' -D '$work/data' -l '$work/server.log' -w restart >>'$work/pg_ctl.log' 2>&1" ||
		as_pg "'$bindir/pg_ctl' -D '$work/data' -l '$work/server.log' -w start >>'$work/pg_ctl.log' 2>&1"
}
as_pg "'$bindir/pg_ctl' -D '$work/data' -l '$work/server.log' -w start >'$work/pg_ctl.log' 2>&1"
export PGHOST=$work PGPORT=$port

# the commands that act on the machine (see the header)
apt-get() {
	case "$1" in
	update) return 0 ;;
	install)
		shift
		local p missing=""
		for p in "$@"; do
			case "$p" in -*) continue ;; esac
			dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
		done
		[ -z "$missing" ] && return 0
		echo "installing$missing"
		command apt-get install -y $missing
		;;
	*) command apt-get "$@" ;;
	esac
}
systemctl() { [ "$1" = restart ] && [[ "$2" == postgresql* ]] && restart_server; }
pg_ctlcluster() { [ "$1" = 15 ] && [ "$2" = main ] && [ "$3" = restart ] && restart_server; }
export work bindir
export -f as_pg restart_server apt-get systemctl pg_ctlcluster
[ "$(id -u)" -eq 0 ] || export -f su

# the checkout the newcomer is in: a copy of this tree
mkdir -p "$work/src"
tar -C "$root" --exclude=.git --exclude=tmp_check -cf - . | tar -C "$work/src" -xf -

# a block runs in a shell of its own, which stops at its first failing command
run_sh() {
	bash -e -c "cd '$work/src'; source '$1'" >"$1.log" 2>&1
}
check "block 1 (packages, build, install, createdb) runs" run_sh "$work/block1.sh"
as_pg "cat '$work/block2.ini' >> '$work/data/postgresql.conf'"
check "block 3 (restart with the settings of block 2) runs" run_sh "$work/block3.sh"
check "block 4 (SQL in analytics) runs" \
	as_pg "psql -X -v ON_ERROR_STOP=1 -d analytics -f '$work/block4.sql' >'$work/block4.log' 2>&1"

q() { as_pg "psql -X -At -d analytics -c \"$1\"" 2>/dev/null; }
wait_for() {
	local i
	for i in $(seq 300); do
		[ "$(q "$1")" = "$2" ] && return 0
		sleep 0.2
	done
	echo "# waited for $1 = $2, got: $(q "$1")"
	return 1
}

check "the worker runs in analytics (not waiting for the extension)" \
	wait_for "SELECT state IN ('connecting', 'broker_down', 'consuming') FROM clickstream.workers" t
check "the refresh is scheduled with pg_cron" \
	test "$(q "SELECT count(*) FROM cron.job WHERE jobname = 'clickstream-refresh' AND database = 'analytics'")" = 1
check "the database is UTF8" test "$(q "SELECT pg_encoding_to_char(encoding) FROM pg_database WHERE datname = 'analytics'")" = UTF8
sleep 2
check "the server logged no FATAL (a missing database makes pg_cron log one every second)" \
	bash -c "! grep FATAL '$work/server.log'"

# --- and it works: a reachable broker, some events, a refresh -----------------
"$root/tools/broker" --partitions 4 >"$work/broker.addr" 2>"$work/broker.log" &
broker_pid=$!
for _ in $(seq 50); do [ -s "$work/broker.addr" ] && break; sleep 0.1; done
brokers=$(head -n1 "$work/broker.addr")
q "ALTER SYSTEM SET clickstream.brokers = '$brokers'" >/dev/null
q "SELECT pg_reload_conf()" >/dev/null
"$root/tools/eventgen" --brokers "$brokers" --count 500 --fast --seed 7 --bad-share 0.02 \
	--bad-kinds invalid_json,missing_field,wrong_type,bad_quantity,bad_timestamp \
	--manifest "$work/manifest" >/dev/null 2>"$work/eventgen.log"
messages=$(sed -n 's/^messages=//p' "$work/manifest")
valid=$(sed -n 's/^valid=//p' "$work/manifest")
check "the worker consumes the events" wait_for "SELECT sum(committed_offset) FROM clickstream.status" "$messages"
# The scheduled refresh may be running when we call ours (which then skips
# with a NOTICE): call again until silver holds the valid events.
refresh_until_promoted()
{
	for _ in $(seq 60); do
		q "CALL clickstream.refresh()" >/dev/null 2>&1
		[ "$(q "SELECT count(*) FROM clickstream.events")" = "$valid" ] && return 0
		sleep 1
	done
	echo "# silver holds $(q "SELECT count(*) FROM clickstream.events") events, not $valid;" \
		"dead letters: $(q "SELECT string_agg(reason || '=' || n, ' ') FROM (SELECT reason, count(*) n FROM clickstream.dead_letters GROUP BY 1) d")"
	return 1
}
check "a refresh promotes them to silver" refresh_until_promoted

# --- the README's example queries run as written ------------------------------
# The SQL blocks of "Quick start" (as the owner) and of "Gold marts" (as a
# dashboard login in clickstream_reader, as the README sets one up).
for section in "Quick start" "Gold marts"; do
	awk -v want="## $section" '
		$0 == want { in_section = 1; next }
		/^## / { in_section = 0 }
		in_section && /^```sql/ { in_block = 1; next }
		in_section && in_block && /^```/ { in_block = 0; next }
		in_section && in_block { print }
	' "$root/README.md" >"$work/examples-${section// /_}.sql"
done
q "CREATE ROLE readme_dashboard LOGIN IN ROLE clickstream_reader" >/dev/null
check "the Quick start's queries run ($(grep -c ';' "$work/examples-Quick_start.sql") statements)" \
	as_pg "psql -X -q -v ON_ERROR_STOP=1 -d analytics -f '$work/examples-Quick_start.sql' >'$work/examples-Quick_start.log' 2>&1"
check "the Gold marts' example queries run as a clickstream_reader login ($(grep -c ';' "$work/examples-Gold_marts.sql") statements)" \
	as_pg "psql -X -q -v ON_ERROR_STOP=1 -U readme_dashboard -d analytics -f '$work/examples-Gold_marts.sql' >'$work/examples-Gold_marts.log' 2>&1"

kill "$broker_pid" 2>/dev/null
wait "$broker_pid" 2>/dev/null
as_pg "'$bindir/pg_ctl' -D '$work/data' -m fast -w stop >>'$work/pg_ctl.log' 2>&1"
if [ "$failed" -eq 0 ]; then
	rm -rf "$work"
else
	echo "# kept $work"
	for l in block1.sh.log block3.sh.log block4.log examples-Quick_start.log examples-Gold_marts.log server.log; do
		[ -s "$work/$l" ] && tail -n 20 "$work/$l" | sed "s/^/# $l: /"
	done
fi
echo "# install: $((n - failed)) passed, $failed failed"
[ "$failed" -eq 0 ]
