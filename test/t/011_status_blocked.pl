# Status tells the truth while the worker cannot write: a session holding a
# lock the write needs (a table lock on ingest_positions, then row locks on
# it) makes the worker "blocked" with what it waits on; the high watermark
# keeps being refreshed from the broker, so the lag grows; the worker keeps
# its process (no restart), gives its batch up on SIGTERM, and once the lock
# is released every message is in bronze exactly once.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib "$FindBin::Bin/../perl";
use ClickstreamTest;

my $addr = start_broker(2);
my $node = new_node('blocked', $addr);
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION clickstream');

my $exact = q{
	SELECT count(*) || '|' || count(DISTINCT (kafka_partition, kafka_offset)) || '|' ||
	       count(DISTINCT convert_from(payload, 'UTF8')::jsonb->>'event_id')
	FROM clickstream.bronze};
my $total = produce($addr, 1000, prefix => 'before');
wait_for($node, $exact, "$total|$total|$total", 'the first messages are ingested');
wait_for($node, q{
	SELECT count(*) = 2 AND bool_and(lag = 0 AND high_watermark_at IS NOT NULL)
	FROM clickstream.status}, 't', 'lag 0, with the time the broker reported the high watermark');
is($node->safe_psql('postgres',
		'SELECT state, waiting_for IS NULL, blocked_since IS NULL FROM clickstream.workers'),
	'consuming|t|t', 'the worker is consuming, waiting for nothing');
my $worker = worker_pid($node);

# --- a table lock on ingest_positions --------------------------------------
my $holder = $node->background_psql('postgres');
$holder->query_safe('BEGIN');
$holder->query_safe('LOCK TABLE clickstream.ingest_positions IN EXCLUSIVE MODE');
my $holder_pid = $holder->query_safe('SELECT pg_backend_pid()');

my $m = produce($addr, 3000, prefix => 'table-lock');
my $produced_at = $node->safe_psql('postgres', 'SELECT clock_timestamp()');
wait_for($node, qq{
	SELECT sum(lag) = $m AND sum(committed_offset) = $total
	       AND bool_and(high_watermark_at > '$produced_at')
	FROM clickstream.status}, 't',
	'while the worker cannot write, the lag counts the new messages (high watermark asked again)');
wait_for($node, q{SELECT state FROM clickstream.workers}, 'blocked', 'the worker is blocked');
like($node->safe_psql('postgres', 'SELECT waiting_for FROM clickstream.workers'),
	qr/^(?:RowShare|RowExclusive)Lock on relation clickstream\.ingest_positions held by pid $holder_pid$/,
	'waiting_for names the lock and its holder');
is($node->safe_psql('postgres', q{
		SELECT blocked_since <= now() FROM clickstream.workers}),
	't', 'and since when');
is($node->safe_psql('postgres', 'SELECT count(*) FROM clickstream.bronze'),
	$total, 'nothing of the new messages is written meanwhile');

# a reload while blocked is taken (the worker stays blocked, with its process)
$node->safe_psql('postgres', q{ALTER SYSTEM SET clickstream.batch_timeout = '300ms'});
$node->reload;
$node->poll_query_until('postgres', q{SELECT setting = '300' FROM pg_settings WHERE name = 'clickstream.batch_timeout'})
  or die 'the reload was not taken';
wait_for($node, q{
	SELECT w.state || '|' || (SELECT sum(lag) FROM clickstream.status)
	FROM clickstream.workers w}, "blocked|$m", 'still blocked after a reload, same lag');

$holder->query_safe('COMMIT');
$total += $m;
wait_for($node, $exact, "$total|$total|$total", 'after the release every message is written once');
wait_for($node, q{
	SELECT bool_and(lag = 0) AND sum(committed_offset) = } . $total . q{
	FROM clickstream.status}, 't', 'lag back to 0');
wait_for($node, 'SELECT state, waiting_for IS NULL, blocked_since IS NULL FROM clickstream.workers',
	'consuming|t|t', 'the worker is consuming again');
is(worker_pid($node), $worker, 'the same worker process throughout (no error, no restart)');
ok($node->log_contains(qr/clickstream consumer 0 wrote its batch of \d+ messages after waiting \d+ ms for a lock/),
	'the log says it wrote after waiting');

# --- row locks on ingest_positions; SIGTERM while blocked -------------------
$holder->query_safe('BEGIN');
$holder->query_safe('SELECT * FROM clickstream.ingest_positions FOR UPDATE');
$m = produce($addr, 2000, prefix => 'row-lock');
wait_for($node, q{SELECT state FROM clickstream.workers}, 'blocked', 'row locks block the worker');
like($node->safe_psql('postgres', 'SELECT waiting_for FROM clickstream.workers'),
	qr/^ShareLock on transaction \d+ \(a row lock\) held by pid $holder_pid .*ingest_positions/,
	'waiting_for names the row lock, its holder and the table');
wait_for($node, qq{SELECT sum(lag) = $m FROM clickstream.status}, 't', 'the lag counts them');

# SIGTERM: the batch is given up (nothing stored), the worker exits and is
# started again, and is blocked again by the same lock
$node->safe_psql('postgres', "SELECT pg_terminate_backend($worker)");
wait_for($node, "SELECT count(*) FROM clickstream.workers WHERE pid IS NOT NULL AND pid <> $worker",
	'1', 'a new worker starts after SIGTERM while blocked');
ok($node->log_contains(qr/clickstream consumer 0 gives up its unwritten batch of \d+ messages/),
	'the blocked worker gave its batch up');
wait_for($node, q{SELECT state FROM clickstream.workers}, 'blocked', 'the new worker is blocked too');

$holder->query_safe('COMMIT');
$holder->quit;
$total += $m;
wait_for($node, $exact, "$total|$total|$total", 'after the release every message is written once');
is( $node->safe_psql('postgres', q{
		SELECT bool_and(c = d AND mn = 0 AND mx = c - 1)
		FROM (SELECT kafka_partition, count(*) c, count(DISTINCT kafka_offset) d,
		             min(kafka_offset) mn, max(kafka_offset) mx
		      FROM clickstream.bronze GROUP BY 1) s}),
	't', 'every partition holds its offsets exactly once');
wait_for($node, q{
	SELECT bool_and(lag = 0) AND sum(committed_offset) = } . $total . q{
	FROM clickstream.status}, 't', 'lag back to 0');
wait_for($node, 'SELECT state FROM clickstream.workers', 'consuming', 'consuming again');

# --- a rebalance while blocked: the revoke hook waits for the lock ----------
$worker = worker_pid($node);
$holder = $node->background_psql('postgres');
$holder->query_safe('BEGIN');
$holder->query_safe('LOCK TABLE clickstream.bronze IN SHARE MODE');
$holder_pid = $holder->query_safe('SELECT pg_backend_pid()');
$m = produce($addr, 2000, prefix => 'rebalance');
wait_for($node, q{SELECT state FROM clickstream.workers}, 'blocked', 'a lock on bronze blocks the worker');
like($node->safe_psql('postgres', 'SELECT waiting_for FROM clickstream.workers'),
	qr/^RowExclusiveLock on relation clickstream\.bronze held by pid $holder_pid$/,
	'waiting_for names the lock on bronze');
# another member joins the group: the worker's partitions are revoked
my $logpos = -s $node->logfile;
my ($kout, $kerr) = ('', '');
my $kcat = IPC::Run::start([ 'kcat', '-b', $addr, '-G', 'clickstream', '-q', '-f', '%p:%o\n',
		'-X', 'session.timeout.ms=6000', 'clickstream' ],
	'>', \$kout, '2>', \$kerr);
$node->wait_for_log(qr/partitions are revoked while it is blocked; it waits for the lock/, $logpos);
is($node->safe_psql('postgres', 'SELECT state FROM clickstream.workers'), 'blocked',
	'still blocked while the revoke waits');
$holder->query_safe('COMMIT');
$holder->quit;
$node->wait_for_log(qr/clickstream consumer 0: \d+ partitions revoked/, $logpos);
$kcat->signal('TERM');
$kcat->finish;
$total += $m;
# partitions paused while blocked and assigned again fetch again
$total += produce($addr, 500, prefix => 'after-rebalance');
wait_for($node, $exact, "$total|$total|$total",
	'after the rebalance and the other member leaving, every message is written once');
wait_for($node, q{
	SELECT bool_and(lag = 0) AND sum(committed_offset) = } . $total . q{
	FROM clickstream.status}, 't', 'lag back to 0');
is(worker_pid($node), $worker, 'the same worker process throughout the rebalance');

unlike(slurp_file($node->logfile), qr/ERROR|FATAL|TRAP/, 'no error in the log');

$node->stop;
done_testing();
