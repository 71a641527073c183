# Locks no one else can hold, and every exit of a refresh releases and
# records:
#  - a role with only LOGIN, and one with clickstream_reader, take every
#    advisory lock key the extension used to take and every lock they can get
#    on its tables; the worker keeps ingesting and refresh(), rebuild_gold()
#    and replay_dead_letters() still run;
#  - a refresh that is running makes a second one return with a NOTICE; one
#    whose backend was terminated is marked interrupted and taken over;
#  - a statement_timeout in each phase of refresh() (the claim, a step, gold,
#    the end, prune_history) leaves no run 'running' and nothing held: the
#    next refresh runs.
# The phases are stopped deterministically: a trigger on a table the phase
# writes waits for a lock on public.gate that this test holds.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib "$FindBin::Bin/../perl";
use ClickstreamTest;

my $addr = start_broker(4);
my $node = new_node('locks', $addr);
$node->start;
$node->safe_psql('postgres', q{
	CREATE EXTENSION clickstream;
	CREATE ROLE nobody LOGIN;
	CREATE ROLE dash LOGIN IN ROLE clickstream_reader;
});

my $produced = 0;

sub generate
{
	my ($seed, $count) = @_;
	my ($out, $err) = ('', '');
	IPC::Run::run([ tool('eventgen'), '--brokers', $addr, '--seed', $seed,
			'--count', $count, '--fast' ], '>', \$out, '2>', \$err)
	  or die "eventgen failed: $err";
	$produced += $count;
	wait_for($node, 'SELECT sum(committed_offset) FROM clickstream.status', $produced,
		"$produced messages ingested");
}

generate(1, 1000);

# --- locks an unprivileged role can take -------------------------------------
# every advisory key of the old code: the refresh's, and (topic, partition)
my $advisory = q{
	SELECT count(*) FROM (
		SELECT pg_advisory_lock(hashtext('clickstream.refresh'), 0)
		UNION ALL
		SELECT pg_advisory_lock(hashtext('clickstream'), p) FROM generate_series(0, 3) p) s};
my ($ret, $out, $err) = $node->psql('postgres',
	'BEGIN; LOCK TABLE clickstream.refresh_history IN ACCESS SHARE MODE;',
	extra_params => [ '-U', 'nobody' ]);
like($err, qr/permission denied for schema clickstream/,
	'a role with only LOGIN gets no lock on the extension\'s tables');
my @readable = split /\n/, $node->safe_psql('postgres', q{
	SELECT c.oid::regclass FROM pg_class c
	WHERE c.relnamespace = 'clickstream'::regnamespace AND c.relkind IN ('r', 'p', 'v')
		AND NOT c.relispartition AND has_table_privilege('dash', c.oid, 'SELECT')
	ORDER BY 1});
ok(grep({ $_ eq 'clickstream.refresh_history' } @readable), 'the reader reads refresh_history');
for my $sql ('SELECT run_id FROM clickstream.refresh_history FOR SHARE',
	'SELECT run_id FROM clickstream.refresh_history FOR KEY SHARE',
	'LOCK TABLE clickstream.refresh_history IN ROW SHARE MODE',
	'LOCK TABLE clickstream.sessions IN SHARE MODE')
{
	($ret, $out, $err) = $node->psql('postgres', "BEGIN; $sql;", extra_params => [ '-U', 'dash' ]);
	like($err, qr/permission denied/, "the reader cannot: $sql");
}

my $seed = 2;
for my $role ('nobody', 'dash')
{
	my $holder = $node->background_psql('postgres', extra_params => [ '-U', $role ]);
	is($holder->query_safe($advisory), '5', "$role holds every advisory key");
	if ($role eq 'dash')
	{
		$holder->query_safe('BEGIN');
		$holder->query_safe("LOCK TABLE $_ IN ACCESS SHARE MODE") for @readable;
		ok($holder->query_safe(q{
			SELECT count(*) FROM pg_locks WHERE pid = pg_backend_pid() AND locktype = 'relation'
				AND mode = 'AccessShareLock' AND granted}) >= scalar(@readable),
			'and locks everything it reads in ACCESS SHARE mode, in an open transaction');
	}

	# with all that held, the pipeline runs
	generate($seed++, 1000);
	is($node->safe_psql('postgres',
			'SELECT count(*) FROM clickstream.ingest_positions WHERE next_offset < 0'),
		'0', "$role: no position placeholder is left behind");
	my $bronze = bronze_count($node);
	($ret, $out, $err) = $node->psql('postgres',
		"SET statement_timeout = '120s'; CALL clickstream.refresh()");
	is($ret, 0, "$role: refresh() runs");
	unlike($err, qr/already running/, "$role: without taking a lock for a running refresh");
	is($node->safe_psql('postgres', q{
		SELECT status || ' ' || rows_read FROM clickstream.refresh_history ORDER BY run_id DESC LIMIT 1}),
		"succeeded $bronze", "$role: and promotes every ingested row");
	is($node->safe_psql('postgres',
			"SET statement_timeout = '120s'; SELECT clickstream.rebuild_gold() > 0"),
		't', "$role: rebuild_gold() runs");
	is($node->safe_psql('postgres',
			"SET statement_timeout = '120s'; SELECT replayed >= 0 FROM clickstream.replay_dead_letters()"),
		't', "$role: replay_dead_letters() runs");
	is($node->safe_psql('postgres', 'SELECT count(*) FROM clickstream.verify_gold() WHERE NOT ok'),
		'0', "$role: gold equals its recomputation");
	$holder->quit;
}

# --- the claim -------------------------------------------------------------
$node->safe_psql('postgres', q{
	CREATE TABLE public.gate ();
	CREATE FUNCTION public.wait_at_gate() RETURNS trigger LANGUAGE plpgsql AS $$
	BEGIN LOCK TABLE public.gate IN ACCESS EXCLUSIVE MODE; RETURN NULL; END $$;
	CREATE FUNCTION public.wait_at_gate_row() RETURNS trigger LANGUAGE plpgsql AS $$
	BEGIN LOCK TABLE public.gate IN ACCESS EXCLUSIVE MODE; RETURN NEW; END $$;
});
my $gate = $node->background_psql('postgres');
my $at_gate = q{
	SELECT count(*) FROM pg_locks WHERE relation = 'public.gate'::regclass AND NOT granted};

$gate->query_safe('BEGIN; LOCK TABLE public.gate IN ACCESS EXCLUSIVE MODE');
$node->safe_psql('postgres', q{
	CREATE TRIGGER gate AFTER INSERT ON clickstream.events
	FOR EACH STATEMENT EXECUTE FUNCTION public.wait_at_gate()});
generate(30, 500);
my $refresher = $node->background_psql('postgres', on_error_stop => 0);
my $refresher_pid = $refresher->query_safe('SELECT pg_backend_pid()');
$refresher->query_until(qr/started/, "\\echo started\nCALL clickstream.refresh();\n");
$node->poll_query_until('postgres', $at_gate, '1')
  or die 'the refresh did not reach the gate: ' . $node->safe_psql('postgres', q{
	SELECT string_agg(format('%s %s %s %s %s', a.pid, a.state, a.wait_event_type, a.wait_event,
		left(a.query, 60)), E'\n') FROM pg_stat_activity a})
  . "\n" . $node->safe_psql('postgres', q{
	SELECT string_agg(format('%s %s %s %s %s', l.pid, l.locktype, l.relation::regclass, l.mode, l.granted), E'\n')
	FROM pg_locks l WHERE l.pid <> pg_backend_pid()})
  . "\n" . $node->safe_psql('postgres', q{
	SELECT string_agg(format('%s %s %s %s %s %s', run_id, kind, status, pid, rows_read, error), E'\n' ORDER BY run_id)
	FROM clickstream.refresh_history})
  . "\nbronze " . bronze_count($node) . "\nstderr: " . $refresher->{stderr};
($ret, $out, $err) = $node->psql('postgres', 'CALL clickstream.refresh()');
is($ret, 0, 'a second refresh() while one runs does not fail');
like($err, qr/NOTICE:  clickstream.refresh\(\) is already running \(pid $refresher_pid\), skipping/,
	'it returns with a NOTICE naming the running backend');
is($node->safe_psql('postgres', "SELECT count(*) FROM clickstream.refresh_history WHERE status = 'running'"),
	'1', 'and records no run of its own');

# the claimant dies: its claim is stale, the next run takes over
$node->safe_psql('postgres', "SELECT pg_terminate_backend($refresher_pid)");
$node->poll_query_until('postgres', "SELECT count(*) FROM pg_stat_activity WHERE pid = $refresher_pid", '0')
  or die 'the refresh backend did not exit';
eval { $refresher->quit };
$gate->query_safe('COMMIT');
$node->safe_psql('postgres', 'DROP TRIGGER gate ON clickstream.events');
is($node->safe_psql('postgres', "SELECT count(*) FROM clickstream.refresh_history WHERE status = 'running'"),
	'1', 'a terminated refresh leaves its claim');
($ret, $out, $err) = $node->psql('postgres', 'CALL clickstream.refresh()');
is($ret, 0, 'the next refresh runs');
unlike($err, qr/already running/, 'and does not take the dead claim for a live one');
is($node->safe_psql('postgres', q{
	SELECT string_agg(status, ',' ORDER BY run_id) FROM (
		SELECT run_id, status FROM clickstream.refresh_history
		WHERE kind = 'refresh' ORDER BY run_id DESC LIMIT 2) s}),
	'interrupted,succeeded', 'the dead run is marked interrupted, the new one succeeded');
is($node->safe_psql('postgres', 'SELECT count(*) FROM clickstream.bronze'), '0',
	'and it promoted what the dead run had not');

# --- a statement_timeout in each phase ---------------------------------------
my @phases = (
	[ 'the claim', 'BEFORE INSERT ON clickstream.refresh_history FOR EACH STATEMENT', 'wait_at_gate', 'none' ],
	[ 'a step', 'AFTER INSERT ON clickstream.events FOR EACH STATEMENT', 'wait_at_gate', 'failed' ],
	[ 'gold', 'AFTER INSERT ON clickstream.sessions FOR EACH STATEMENT', 'wait_at_gate', 'failed' ],
	[ 'the end',
	  "BEFORE UPDATE ON clickstream.refresh_history FOR EACH ROW WHEN (NEW.status = 'succeeded')",
	  'wait_at_gate_row', 'failed' ],
	[ 'prune_history', 'BEFORE DELETE ON clickstream.quality_results FOR EACH STATEMENT',
	  'wait_at_gate', 'failed' ]);
$seed = 40;
for my $phase (@phases)
{
	my ($name, $when, $func, $expect) = @$phase;
	generate($seed++, 300);
	my $runs = $node->safe_psql('postgres', 'SELECT count(*) FROM clickstream.refresh_history');
	$node->safe_psql('postgres', "CREATE TRIGGER gate $when EXECUTE FUNCTION public.$func()");
	$gate->query_safe('BEGIN; LOCK TABLE public.gate IN ACCESS EXCLUSIVE MODE');
	($ret, $out, $err) = $node->psql('postgres', q{
		SET statement_timeout = '5s';
		CALL clickstream.refresh();
		SELECT count(*) FROM pg_locks WHERE pid = pg_backend_pid() AND relation = 'clickstream.refresh_history'::regclass;
		SELECT count(*) FROM pg_locks WHERE pid = pg_backend_pid() AND locktype = 'transactionid';
	}, on_error_stop => 0);
	like($err, qr/canceling statement due to statement timeout/, "$name: the refresh is cancelled");
	is($out, "0\n0", "$name: its session holds nothing afterwards");
	$gate->query_safe('COMMIT');
	$node->safe_psql('postgres', "DROP TRIGGER gate ON " . ($when =~ /ON (\S+)/)[0]);
	is($node->safe_psql('postgres', "SELECT count(*) FROM clickstream.refresh_history WHERE status = 'running'"),
		'0', "$name: no run is left running");
	if ($expect eq 'none')
	{
		like($err, qr/wait_at_gate/, "$name: at the gate");
		is($node->safe_psql('postgres', 'SELECT count(*) FROM clickstream.refresh_history'),
			$runs, "$name: the claim was rolled back (no run recorded)");
	}
	else
	{
		like($node->safe_psql('postgres', q{
			SELECT status || ': ' || error FROM clickstream.refresh_history ORDER BY run_id DESC LIMIT 1}),
			qr/^failed: canceling statement due to statement timeout.*wait_at_gate/s,
			"$name: the run is recorded as failed, with the error (at the gate)");
	}
	($ret, $out, $err) = $node->psql('postgres', 'CALL clickstream.refresh()');
	is($ret, 0, "$name: the next refresh runs");
	unlike($err, qr/already running/, "$name: nothing is left claimed");
	is($node->safe_psql('postgres', q{
		SELECT status FROM clickstream.refresh_history ORDER BY run_id DESC LIMIT 1}),
		'succeeded', "$name: and succeeds");
}
is($node->safe_psql('postgres', 'SELECT count(*) FROM clickstream.bronze'), '0',
	'every ingested row was promoted in the end');
is($node->safe_psql('postgres', "SELECT count(*) FROM clickstream.verify_gold() WHERE NOT ok"),
	'0', 'gold equals its recomputation after all the cancels');
$gate->quit;

# --- verify_gold() while a refresh step commits ------------------------------
# verify_gold() compares clickstream.sessions with session_rows() of silver
# in one statement; a refresh step that commits between the two reads must
# not show as differences.  The gate: verify_gold() reads sessions, then
# waits to read silver (a day partition locked here) while a refresh runs.
$node->safe_psql('postgres', q{SELECT clickstream.create_partitions(ARRAY['2020-01-01'::date])});
$node->safe_psql('postgres', 'CALL clickstream.refresh()');
$gate = $node->background_psql('postgres');
$gate->query_safe('BEGIN; LOCK TABLE clickstream.events_20200101 IN ACCESS EXCLUSIVE MODE');
my $verifier = $node->background_psql('postgres');
$verifier->query_until(qr/started/, "\\echo started\nSELECT 'differences: ' || coalesce(string_agg(mart, ', '), 'none') FROM clickstream.verify_gold() WHERE NOT ok;\n");
$node->poll_query_until('postgres', q{
	SELECT count(*) FROM pg_locks
	WHERE relation = 'clickstream.events_20200101'::regclass AND NOT granted}, '1')
  or die 'verify_gold() did not reach the gate';
generate(70, 300);
($ret, $out, $err) = $node->psql('postgres', 'CALL clickstream.refresh()');
is($ret, 0, 'a refresh runs while verify_gold() waits to read silver');
ok($node->safe_psql('postgres', q{
	SELECT rows_promoted FROM clickstream.refresh_history ORDER BY run_id DESC LIMIT 1}) > 0,
	'and commits new events');
$gate->query_safe('COMMIT');
$gate->quit;
like($verifier->query_safe(''), qr/differences: none/,
	'verify_gold() compared gold and silver as of one moment: no differences');
$verifier->quit;

# --- a day detached CONCURRENTLY while a dashboard reads ---------------------
# DETACH PARTITION ... CONCURRENTLY marks the partition pending, then waits
# for the transactions that may read it; cancelled there (a dashboard's long
# transaction, an operator's ^C), it stays pending: queries on
# clickstream.events no longer read it, so gold must count it as gone (it
# kept counting its events, and verify_gold() found differences after every
# refresh); FINALIZE then changes nothing more.
my ($day_out, $day_err) = ('', '');
my $day_start = $node->safe_psql('postgres',
	q{SELECT to_char(date_trunc('day', now() AT TIME ZONE 'UTC') - interval '3 days', 'YYYY-MM-DD"T"12:00:00"Z"')});
IPC::Run::run([ tool('eventgen'), '--brokers', $addr, '--seed', 60, '--count', 300, '--fast',
		'--start', $day_start ], '>', \$day_out, '2>', \$day_err)
  or die "eventgen failed: $day_err";
$produced += 300;
wait_for($node, 'SELECT sum(committed_offset) FROM clickstream.status', $produced,
	"$produced messages ingested");
$node->safe_psql('postgres', 'CALL clickstream.refresh()');
my $day = $node->safe_psql('postgres',
	q{SELECT 'events_' || to_char(now() AT TIME ZONE 'UTC' - interval '3 days', 'YYYYMMDD')});
ok($node->safe_psql('postgres', "SELECT count(*) FROM clickstream.$day") > 0,
	"$day holds events");
my $dash = $node->background_psql('postgres', extra_params => [ '-U', 'dash' ]);
$dash->query_safe('BEGIN');
$dash->query_safe('SELECT count(*) FROM clickstream.live');
($ret, $out, $err) = $node->psql('postgres', qq{
	SET lock_timeout = '2s';
	ALTER TABLE clickstream.events DETACH PARTITION clickstream.$day CONCURRENTLY;
}, on_error_stop => 0);
like($err, qr/canceling statement due to lock timeout/,
	'the concurrent detach waits for the dashboard and is cancelled');
is($node->safe_psql('postgres', qq{
	SELECT inhdetachpending FROM pg_inherits WHERE inhrelid = 'clickstream.$day'::regclass}),
	't', 'the partition is left pending');
$dash->query_safe('COMMIT');
$dash->quit;
($ret, $out, $err) = $node->psql('postgres', 'CALL clickstream.refresh()');
like($err, qr/a day partition of clickstream.events is gone, rebuilding gold.*gone: $day/s,
	'the next refresh counts the pending partition as gone and rebuilds gold');
is($node->safe_psql('postgres', "SELECT string_agg(mart, ', ') FROM clickstream.verify_gold() WHERE NOT ok"),
	'', 'gold equals its recomputation');
$node->safe_psql('postgres',
	"ALTER TABLE clickstream.events DETACH PARTITION clickstream.$day FINALIZE");
($ret, $out, $err) = $node->psql('postgres', 'CALL clickstream.refresh()');
unlike($err, qr/rebuilding gold/, 'once the detach is finalized, no second rebuild');
is($node->safe_psql('postgres', "SELECT string_agg(mart, ', ') FROM clickstream.verify_gold() WHERE NOT ok"),
	'', 'gold still equals its recomputation');

$node->stop;
stop_broker($addr);
done_testing();
