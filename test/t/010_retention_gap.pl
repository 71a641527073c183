# Data the broker deleted before it was read: messages produced before the
# worker first subscribed, pushed out by the local broker's retention (~5 MiB
# per partition).  With start_offset = earliest the partition starts above
# offset 0: one WARNING says so, and clickstream.status shows the first offset
# read (kept with the watermark, so it survives a restart).
use strict;
use warnings;

use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib "$FindBin::Bin/../perl";
use ClickstreamTest;

my $addr = start_broker(2);

# Produce $n messages of about $size bytes to partition $p with kcat.
sub produce_to
{
	my ($p, $n, $size, $prefix) = @_;
	my $pad = 'x' x $size;
	my $input = join('', map { "{\"event_id\":\"$prefix-$_\",\"pad\":\"$pad\"}\n" } 1 .. $n);
	my ($out, $err) = ('', '');
	IPC::Run::run([ 'kcat', '-P', '-b', $addr, '-t', 'clickstream', '-p', $p, '-X', 'linger.ms=5' ],
		'<', \$input, '>', \$out, '2>', \$err)
	  or die "kcat failed: $err";
}

my $node = new_node('gap', $addr);
$node->start;
$node->wait_for_log(qr/waiting for CREATE EXTENSION clickstream/);

# before the worker subscribes: ~8 MB into partition 0, a little into 1
produce_to(0, 8000, 1000, 'early');
produce_to(1, 10, 10, 'small');

$node->safe_psql('postgres', 'CREATE EXTENSION clickstream');
# coalesce: bool_and skips NULLs, and a partition assigned but not yet
# written has no committed_offset
wait_for($node, q{SELECT count(*) = 2 AND bool_and(coalesce(lag = 0 AND committed_offset = high_watermark, false))
                  FROM clickstream.status}, 't', 'both partitions are consumed to their end');

my ($first, $high, $rows, $min) = split /\|/, $node->safe_psql('postgres', q{
	SELECT s.first_offset, s.high_watermark,
	       (SELECT count(*) FROM clickstream.bronze WHERE kafka_partition = 0),
	       (SELECT min(kafka_offset) FROM clickstream.bronze WHERE kafka_partition = 0)
	FROM clickstream.status s WHERE s.partition = 0});
cmp_ok($first, '>', 0, "partition 0's first offset read is above 0 (Kafka had deleted the start)");
cmp_ok($first, '<', 8000, 'but the end of the partition was read');
is($high, 8000, 'the high watermark counts every message produced');
is($min, $first, 'first_offset is the first offset in bronze');
is($rows, 8000 - $first, 'every message from first_offset on is in bronze, and the lag is 0');
is($node->safe_psql('postgres', 'SELECT first_offset FROM clickstream.status WHERE partition = 1'),
	'0', 'a partition read from offset 0 shows 0');

my $log = slurp_file($node->logfile);
like($log, qr/WARNING:  clickstream: clickstream\[0\]: the first offset Kafka delivered is $first, not 0: offsets 0 to @{[$first - 1]} were gone before this partition was first read/,
	'a WARNING names the partition and the missing offsets');
like($log, qr/HINT:  clickstream.status shows first_offset/, 'with a hint');
unlike($log, qr/clickstream\[1\]: the first offset/, 'no WARNING for the partition read from 0');
is(scalar(() = $log =~ /the first offset Kafka delivered/g), 1, 'one WARNING');

# more traffic, and a restart: no new WARNING, first_offset kept
produce_to(0, 100, 10, 'later');
wait_for($node, 'SELECT count(*) FROM clickstream.bronze WHERE kafka_partition = 0',
	8100 - $first, 'later messages are consumed');
$node->restart;
produce_to(0, 100, 10, 'after-restart');
wait_for($node, 'SELECT count(*) FROM clickstream.bronze WHERE kafka_partition = 0',
	8200 - $first, 'and after a restart');
is($node->safe_psql('postgres', 'SELECT first_offset FROM clickstream.status WHERE partition = 0'),
	$first, 'first_offset survives the restart');
$log = slurp_file($node->logfile);
is(scalar(() = $log =~ /the first offset Kafka delivered/g), 1, 'still one WARNING');
unlike($log, qr/ERROR|FATAL|PANIC/, 'no error in the whole run');
$node->stop;

done_testing();
