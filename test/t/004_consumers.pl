# clickstream.consumers = 2: two workers split the partitions of the topic
# through the consumer group, and together write every message exactly once,
# also when one of them restarts (a rebalance hands its partitions over).
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib "$FindBin::Bin/../perl";
use ClickstreamTest;

my $addr = start_broker(6);
my $node = new_node('consumers', $addr, 'clickstream.consumers' => 2,
	'clickstream.batch_size' => 200);
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION clickstream');

wait_for($node, q{
	SELECT count(*) || '|' || sum(assigned_partitions) || '|' || min(assigned_partitions)
	FROM clickstream.workers WHERE state = 'consuming'}, '2|6|3',
	'two workers, each with a share of the 6 partitions');

my $exact = q{
	SELECT count(*) || '|' || count(DISTINCT (kafka_partition, kafka_offset)) || '|' ||
	       count(DISTINCT convert_from(payload, 'UTF8')::jsonb->>'event_id')
	FROM clickstream.bronze};
my $n = produce($addr, 30000, prefix => 'first');
wait_for($node, $exact, "$n|$n|$n", 'together they write every message exactly once');
is($node->safe_psql('postgres', 'SELECT count(DISTINCT consumer) FROM clickstream.status'),
	'2', 'status shows partitions of both consumers');

# consumer 1 is terminated: its partitions move to consumer 0 via a
# rebalance, and back when the postmaster has started it again
my $pid1 = worker_pid($node, 1);
$node->safe_psql('postgres', "SELECT pg_terminate_backend($pid1)");
$n += produce($addr, 30000, prefix => 'second');
wait_for($node, $exact, "$n|$n|$n",
	'while a consumer leaves and comes back, every message is written exactly once');
wait_for($node, q{SELECT bool_and(lag = 0) FROM clickstream.status}, 't', 'lag back to 0');
isnt(worker_pid($node, 1), $pid1, 'the terminated worker was started again');
wait_for($node, q{
	SELECT count(*) || '|' || sum(assigned_partitions)
	FROM clickstream.workers WHERE state = 'consuming'}, '2|6', 'and has its share again');
unlike(slurp_file($node->logfile), qr/was moved by another consumer|ERROR|FATAL/,
	'no stale batch and no error during the rebalances');

$node->stop;

# more consumers than partitions: idle members get empty assignments, also
# across rebalances, and stay healthy
my $one = start_broker(1);
my $crowd = new_node('crowd', $one, 'clickstream.consumers' => 3);
$crowd->start;
$crowd->safe_psql('postgres', 'CREATE EXTENSION clickstream');
wait_for($crowd, q{SELECT count(*) || '|' || sum(assigned_partitions)
	FROM clickstream.workers WHERE state = 'consuming'}, '3|1', 'three workers share one partition');
my $m = produce($one, 500, prefix => 'crowd');
wait_for($crowd, 'SELECT count(*) FROM clickstream.bronze', $m, 'its messages are written');
wait_for($crowd, 'SELECT count(*) FROM clickstream.workers WHERE assigned_partitions = 1 AND pid IS NOT NULL',
	'1', 'one worker owns the partition');
my $owner = $crowd->safe_psql('postgres',
	'SELECT pid FROM clickstream.workers WHERE assigned_partitions = 1');
$crowd->safe_psql('postgres', "SELECT pg_terminate_backend($owner)");
$m += produce($one, 500, prefix => 'crowd-after');
wait_for($crowd, 'SELECT count(*), count(DISTINCT payload) FROM clickstream.bronze', "$m|$m",
	'after a rebalance another worker takes the partition over, exactly once');
unlike(slurp_file($crowd->logfile), qr/FATAL|ERROR/, 'empty assignments kill no worker');
$crowd->stop;
done_testing();
