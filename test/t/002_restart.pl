# Restarts lose and duplicate nothing: fast and smart shutdowns while
# messages stream in, and a kill -9 of the worker alone (which makes the
# postmaster run crash recovery: bronze is emptied and re-read from the
# durable watermark).
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib "$FindBin::Bin/../perl";
use ClickstreamTest;

my $addr = start_broker(8);
my $node = new_node('restart', $addr, 'clickstream.batch_size' => 500);
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION clickstream');

my $exact = q{
	SELECT count(*) || '|' || count(DISTINCT (kafka_partition, kafka_offset)) || '|' ||
	       count(DISTINCT convert_from(payload, 'UTF8')::jsonb->>'event_id')
	FROM clickstream.bronze};
my $total = 0;

for my $mode ('fast', 'smart')
{
	$total += produce($addr, 20000, prefix => "before-$mode");
	# stop while the worker is in the middle of the backlog
	$node->poll_query_until('postgres', 'SELECT count(*) > 0 FROM clickstream.bronze');
	$node->stop($mode);
	$total += produce($addr, 5000, prefix => "during-$mode");
	$node->start;
	wait_for($node, $exact, "$total|$total|$total",
		"$mode shutdown mid-stream: every message exactly once");
}

# kill -9 of the worker alone: the postmaster resets shared memory and runs
# crash recovery, which empties the UNLOGGED bronze and positions
$total += produce($addr, 20000, prefix => 'before-kill');
$node->poll_query_until('postgres', "SELECT count(*) > $total - 20000 FROM clickstream.bronze");
my $pid = worker_pid($node);
kill 'KILL', $pid;
$total += produce($addr, 5000, prefix => 'during-kill');
wait_for($node, $exact, "$total|$total|$total",
	'kill -9 of the worker: every message exactly once after crash recovery');
ok($node->log_contains(qr/terminated by signal 9/), 'the worker was really killed');
isnt(worker_pid($node), $pid, 'and restarted');
wait_for($node, 'SELECT bool_and(lag = 0) FROM clickstream.status', 't', 'lag back to 0');

$node->stop;
done_testing();
