#!/usr/bin/env bash
# Run every test of the project: pg_regress (SQL level), the TAP tests, and
# the README's install section (test/install.sh).  Installs what is missing
# first.  Ends with the plain line "N passed, N failed" (pg_regress files,
# TAP subtests and install checks).
#
# initdb, pg_regress --temp-instance and TAP refuse to run as root, so as
# root the suite runs as the postgres user in a copy of the tree it owns.
# It tests against a private copy of the PostgreSQL installation, into which
# it installs the extension: another build installed on the machine meanwhile
# (another checkout, the demo) cannot change what is tested.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
export CS_WERROR=1  # the suite's build (tools/setup.sh) treats warnings as errors

if ! bash "$root/tools/setup.sh"; then
	echo "setup failed"
	echo "0 passed, 1 failed"
	exit 1
fi

work=$(mktemp -d /tmp/clickstream-test.XXXXXX)
tar -C "$root" --exclude=.git -cf - . | tar -C "$work" -xf -
as_user() { bash -c "$1"; }
# the private installation: Debian's PostgreSQL 15 (and pg_cron) copied
# under $work/pg; its binaries find their files relative to where they are
pg=$work/pg/usr
mkdir -p "$pg/lib/postgresql" "$pg/share/postgresql"
cp -a /usr/lib/postgresql/15 "$pg/lib/postgresql/"
cp -a /usr/share/postgresql/15 "$pg/share/postgresql/"
ln -s /usr/include "$pg/include"
export PG_CONFIG=$pg/lib/postgresql/15/bin/pg_config
if [ "$(id -u)" -eq 0 ]; then
	chown -R postgres: "$work"
	as_user() { su postgres -s /bin/bash -c "$1"; }
fi
if ! as_user "cd '$work' && make -s install PG_CONFIG=$PG_CONFIG CS_WERROR=1 >/dev/null"; then
	echo "install into the private installation failed"
	echo "0 passed, 1 failed"
	exit 1
fi

passed=0
failed=0

echo "== pg_regress"
as_user "cd '$work' && make -s installcheck TAP_TESTS= PG_CONFIG=$PG_CONFIG" 2>&1 | tee "$work/regress.log"
p=$(grep -cE '^(ok|test) .* \.\.\. +ok|^ok [0-9]+ ' "$work/regress.log")
f=$(grep -cE '\.\.\. +FAILED|^not ok [0-9]+ ' "$work/regress.log")
passed=$((passed + p)); failed=$((failed + f))
if [ "$p" -eq 0 ] && [ "$f" -eq 0 ]; then failed=$((failed + 1)); fi
[ -f "$work/test/regression.diffs" ] && cat "$work/test/regression.diffs"

echo "== TAP"
as_user "cd '$work' && make -s tapcheck PG_CONFIG=$PG_CONFIG" 2>&1 | tee "$work/tap.log"
# TAP lines in the per-test logs look like "[11:04:49.662](3.047s) ok 1 - name"
p=$(cat "$work/tmp_check/log/"regress_log_* 2>/dev/null | grep -cE '(^|\) )ok [0-9]+')
f=$(cat "$work/tmp_check/log/"regress_log_* 2>/dev/null | grep -cE '(^|\) )not ok [0-9]+')
# a test file that died counts as one more failure
d=$(grep -cE 'Dubious|Bailout|No subtests run|No plan found' "$work/tap.log")
passed=$((passed + p)); failed=$((failed + f))
if [ "$f" -eq 0 ] && [ "$d" -gt 0 ]; then failed=$((failed + 1)); fi
if [ "$p" -eq 0 ]; then failed=$((failed + 1)); fi

echo "== install (the README's install section, test/install.sh)"
bash "$root/test/install.sh" 2>&1 | tee "$work/install.log"
p=$(grep -cE '^ok [0-9]+ ' "$work/install.log")
f=$(grep -cE '^not ok [0-9]+ ' "$work/install.log")
passed=$((passed + p)); failed=$((failed + f))
if [ "$p" -eq 0 ] && [ "$f" -eq 0 ]; then failed=$((failed + 1)); fi

if [ "$failed" -gt 0 ]; then
	echo "logs kept in $work/tmp_check/log"
	for l in "$work"/tmp_check/log/*.log; do
		[ -f "$l" ] && { echo "--- tail of $l"; tail -n 30 "$l"; }
	done
fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
