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

# a crash and Kafka retention together: the rows lost with the UNLOGGED bronze
# are no longer in Kafka either; the range is recorded, not silently skipped
my $small = start_broker(1);
my $lossy = new_node('lossy', $small);
$lossy->start;
$lossy->safe_psql('postgres', 'CREATE EXTENSION clickstream');
produce($small, 100, prefix => 'early');
wait_for($lossy, 'SELECT count(*) FROM clickstream.bronze', '100', 'first rows ingested');
$lossy->stop('immediate');
# ~8 MB into one partition: the mock keeps ~5 MiB, the oldest offsets go
my $pad = 'x' x 400;
produce_lines($small, [ map { "k$_\t{\"event_id\":\"late-$_\",\"pad\":\"$pad\"}" } 1 .. 20000 ]);
$lossy->start;
wait_for($lossy, 'SELECT max(kafka_offset) FROM clickstream.bronze', '20099',
	'drained after recovery (once the group has dropped the dead member)');
my ($first, $kept) = split /\|/, $lossy->safe_psql('postgres',
	'SELECT min(kafka_offset), count(*) FROM clickstream.bronze');
ok($first > 100, "retention removed the first offsets (bronze starts at $first)");
is( $lossy->safe_psql('postgres', q{
		SELECT kafka_offset || '|' || detail FROM clickstream.dead_letters WHERE reason = 'offsets_skipped'}),
	"0|offsets 0 to " . ($first - 1) . " ($first messages) were not delivered by Kafka",
	'the lost range is recorded in dead_letters');
is($kept + $first, 20100, 'every offset is either in bronze or in the recorded range');
$lossy->stop;
done_testing();
