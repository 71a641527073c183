# Orchestration: clickstream.schedule()/unschedule() with pg_cron (and one
# real run by cron), a second refresh returning at once with a NOTICE, the
# ingestion worker never waiting for a running refresh, and DROP EXTENSION
# removing the cron job.  (Locks and every exit of a refresh: 020_locks.pl.)
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib "$FindBin::Bin/../perl";
use ClickstreamTest;

my $addr = start_broker(4);
my $node = new_node('cron', $addr,
	shared_preload_libraries     => "'clickstream,pg_cron'",
	'cron.database_name'         => "'postgres'",
	'cron.use_background_workers' => 'on',
	max_worker_processes         => 32);
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION clickstream; CREATE EXTENSION pg_cron');

sub generate
{
	my ($seed, $count) = @_;
	my ($out, $err) = ('', '');
	IPC::Run::run([ tool('eventgen'), '--brokers', $addr, '--seed', $seed,
			'--count', $count, '--fast' ], '>', \$out, '2>', \$err)
	  or die "eventgen failed: $err";
}

# --- registration --------------------------------------------------------
my $job = $node->safe_psql('postgres', 'SELECT clickstream.schedule()');
ok($job > 0, 'schedule() returns the cron job id');
is($node->safe_psql('postgres', 'SELECT jobname, schedule, command, database FROM cron.job'),
	'clickstream-refresh|* * * * *|CALL clickstream.refresh()|postgres',
	'the refresh is registered every minute');
is($node->safe_psql('postgres', 'SELECT clickstream.schedule()'), $job,
	'scheduling again is idempotent (same job)');
$node->safe_psql('postgres', "SELECT clickstream.schedule('15 minutes')");
is($node->safe_psql('postgres', 'SELECT count(*) || \'|\' || max(schedule) FROM cron.job'),
	'1|*/15 * * * *', 'a new interval updates the one job');
my ($ret, $out, $err) = $node->psql('postgres', "SELECT clickstream.schedule('30 seconds')");
like($err, qr/pg_cron 1\.4 schedules by the minute/, 'sub-minute intervals are refused with a hint');
($ret, $out, $err) = $node->psql('postgres', "SELECT clickstream.schedule('7 minutes')");
like($err, qr/divisor of an hour/, 'intervals cron cannot express are refused with a hint');
is($node->safe_psql('postgres', 'SELECT clickstream.unschedule()'), 't', 'unschedule() removes the job');
is($node->safe_psql('postgres', 'SELECT count(*) FROM cron.job'), '0', 'no job is left');
is($node->safe_psql('postgres', 'SELECT clickstream.unschedule()'), 'f',
	'unschedule() without a job is a no-op');

# --- the worker never waits for a refresh ---------------------------------
generate(1, 2000);
wait_for($node, 'SELECT sum(committed_offset) FROM clickstream.status', '2000', 'first events ingested');
# make one step of the refresh last 10 s
$node->safe_psql('postgres', q{
	CREATE FUNCTION public.slow() RETURNS trigger LANGUAGE plpgsql AS $$
	BEGIN PERFORM pg_sleep(10); RETURN NULL; END $$;
	CREATE TRIGGER slow AFTER INSERT ON clickstream.events
	FOR EACH STATEMENT EXECUTE FUNCTION public.slow();
});
my $refresher = $node->background_psql('postgres');
$refresher->query_until(qr/started/, "\\echo started\nCALL clickstream.refresh();\n");
$node->poll_query_until('postgres',
	"SELECT count(*) = 1 FROM pg_stat_activity WHERE wait_event = 'PgSleep'")
  or die 'refresh did not reach the slow trigger';
my $refresher_pid = $node->safe_psql('postgres',
	"SELECT pid FROM pg_stat_activity WHERE wait_event = 'PgSleep'");
($ret, $out, $err) = $node->psql('postgres', 'CALL clickstream.refresh()');
is($ret, 0, 'a concurrent refresh() does not fail');
like($err, qr/NOTICE:  clickstream.refresh\(\) is already running \(pid $refresher_pid\), skipping/,
	'it says which backend is running it');
is($node->safe_psql('postgres', "SELECT count(*) FROM clickstream.refresh_history WHERE status = 'running'"),
	'1', 'and records no run');
generate(2, 1000);
wait_for($node, 'SELECT sum(committed_offset) FROM clickstream.status', '3000',
	'the worker keeps committing batches while a refresh runs');
is($node->safe_psql('postgres',
		"SELECT status FROM clickstream.refresh_history ORDER BY run_id DESC LIMIT 1"),
	'running', 'the refresh was still running then');
$refresher->quit;
$node->safe_psql('postgres', 'DROP TRIGGER slow ON clickstream.events');
wait_for($node, "SELECT status FROM clickstream.refresh_history ORDER BY run_id DESC LIMIT 1",
	'succeeded', 'the slow refresh finished');

# a statement_timeout during a step: recorded as a failure, and the session
# that ran it keeps no lock
$node->safe_psql('postgres', q{
	CREATE TRIGGER slow AFTER INSERT ON clickstream.events
	FOR EACH STATEMENT EXECUTE FUNCTION public.slow();
});
($ret, $out, $err) = $node->psql('postgres', q{
	SET statement_timeout = '1s';
	CALL clickstream.refresh();
	SELECT count(*) FROM pg_locks WHERE pid = pg_backend_pid() AND locktype <> 'virtualxid'
		AND relation IS DISTINCT FROM 'pg_locks'::regclass;
}, on_error_stop => 0);
like($err, qr/canceling statement due to statement timeout/, 'a timed-out refresh reports the timeout');
is($out, '0', 'and its session holds no lock afterwards');
like($node->safe_psql('postgres',
		"SELECT status || ': ' || error FROM clickstream.refresh_history ORDER BY run_id DESC LIMIT 1"),
	qr/^failed: canceling statement due to statement timeout/, 'the run is recorded as failed');
my $refresh_check = q{SELECT failures || ' ' || passed FROM clickstream.check_quality()
	WHERE check_name = 'refresh_not_failing'};
is($node->safe_psql('postgres', $refresh_check), '1 false',
	'check_quality() reports that the last refresh failed');
$node->safe_psql('postgres', 'DROP TRIGGER slow ON clickstream.events');

# --- bronze does not grow: promoted rows leave it, their space is reused ------
# (autovacuum does this on its own schedule; the test vacuums explicitly)
my $total = 3000;
my @sizes;
for my $round (1 .. 4)
{
	generate(10 + $round, 5000);
	$total += 5000;
	wait_for($node, 'SELECT sum(committed_offset) FROM clickstream.status', $total,
		"round $round ingested");
	push @sizes, $node->safe_psql('postgres', "SELECT pg_relation_size('clickstream.bronze')");
	$node->safe_psql('postgres', 'CALL clickstream.refresh()');
	$node->safe_psql('postgres', 'VACUUM clickstream.bronze');
}
note "bronze size before each refresh: @sizes";
is($node->safe_psql('postgres', 'SELECT count(*) FROM clickstream.bronze'), '0',
	'every round was promoted');
is($node->safe_psql('postgres', $refresh_check), '0 true', 'and the refresh check passes again');
ok($sizes[3] <= $sizes[0] * 1.5 + 8192 * 16,
	"bronze holds one round's data at most, not all of them ($sizes[0] -> $sizes[3] bytes)");

# --- one real run by pg_cron (waits up to a minute) -------------------------
my $before = $node->safe_psql('postgres', 'SELECT max(run_id) FROM clickstream.refresh_history');
$node->safe_psql('postgres', 'SELECT clickstream.schedule()');
wait_for($node,
	"SELECT count(*) > 0 FROM cron.job_run_details WHERE status = 'succeeded' AND command = 'CALL clickstream.refresh()'",
	't', 'pg_cron ran the refresh');
is($node->safe_psql('postgres',
		"SELECT count(*) > 0 FROM clickstream.refresh_history WHERE run_id > $before AND status = 'succeeded'"),
	't', 'and it is in refresh_history');
is($node->safe_psql('postgres',
		'SELECT count(*) FROM clickstream.bronze'),
	'0', 'cron drained bronze into silver');
is($node->safe_psql('postgres',
		"SELECT refresh_age < '2 minutes' FROM clickstream.status LIMIT 1"),
	't', 'status shows a recent successful refresh');

# --- DROP EXTENSION takes its cron job along ---------------------------------
# (a job of the same name in another database is not ours: it stays)
$node->safe_psql('postgres', 'CREATE DATABASE other; CREATE ROLE cron_other LOGIN');
$node->safe_psql('postgres',
	"SELECT cron.schedule_in_database('clickstream-refresh', '0 * * * *', 'SELECT 1', 'other', 'cron_other')");
my $jobs = "SELECT string_agg(database, ',' ORDER BY database) FROM cron.job WHERE jobname = 'clickstream-refresh'";
is($node->safe_psql('postgres', $jobs), 'other,postgres', 'the refresh job is scheduled');
$node->safe_psql('postgres', 'CREATE VIEW public.silver_days AS SELECT DISTINCT event_date FROM clickstream.events');
($ret, $out, $err) = $node->psql('postgres', 'DROP EXTENSION clickstream');
like($err, qr/depends on/, 'a DROP EXTENSION that fails (a view of the user depends on silver) ...');
is($node->safe_psql('postgres', $jobs), 'other,postgres', '... keeps the job');
$node->safe_psql('postgres', 'DROP VIEW public.silver_days');
($ret, $out, $err) = $node->psql('postgres', 'DROP EXTENSION clickstream');
is($ret, 0, 'DROP EXTENSION clickstream succeeds');
like($err, qr/removed the pg_cron job clickstream-refresh/, 'and says it removed the cron job');
is($node->safe_psql('postgres', $jobs), 'other', 'the job of this database is gone');

# the same when the schema goes (DROP SCHEMA ... CASCADE drops the extension)
$node->safe_psql('postgres', 'CREATE EXTENSION clickstream');
$node->safe_psql('postgres', 'SELECT clickstream.schedule()');
is($node->safe_psql('postgres', $jobs), 'other,postgres', 'scheduled again');
$node->safe_psql('postgres', 'DROP SCHEMA clickstream CASCADE');
is($node->safe_psql('postgres', $jobs), 'other', 'DROP SCHEMA clickstream CASCADE removes it too');
is($node->safe_psql('postgres',
		"SELECT count(*) FROM pg_event_trigger WHERE evtname LIKE 'clickstream%'"),
	'0', 'and leaves no event trigger behind');

# other DROPs leave the job alone; without pg_cron a DROP works as before
$node->safe_psql('postgres', 'CREATE EXTENSION clickstream');
$node->safe_psql('postgres', 'SELECT clickstream.schedule()');
$node->safe_psql('postgres', 'CREATE SCHEMA scratch; DROP SCHEMA scratch; CREATE EXTENSION pg_trgm; DROP EXTENSION pg_trgm');
is($node->safe_psql('postgres', $jobs), 'other,postgres', 'dropping other schemas and extensions keeps the job');
$node->safe_psql('other', 'CREATE EXTENSION clickstream; DROP EXTENSION clickstream');
is($node->safe_psql('postgres', $jobs), 'other,postgres', 'a database without pg_cron drops the extension quietly');

$node->stop;
stop_broker($addr);
done_testing();
