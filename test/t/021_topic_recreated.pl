# A topic recreated (here: the broker replaced by a new, empty one): Kafka
# serves offsets below the stored positions.  The worker writes nothing of
# them (they could be rows it already has) and says so: a WARNING with what
# to do, the partition's last_error, and a NULL lag instead of 0.  The
# documented procedure (disable, drain bronze, delete the topic's positions
# and watermarks, enable) then reads the new topic from its start: nothing
# of it is lost.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib "$FindBin::Bin/../perl";
use ClickstreamTest;

# $n valid events "prefix-i" at 2026-11-01 10:00 + i s
sub events
{
	my ($prefix, $n) = @_;
	return [ map {
			sprintf("u%d\t{\"event_id\":\"%s-%d\",\"event_type\":\"page_view\",\"user_id\":\"u%d\",\"ts\":\"2026-11-01T10:%02d:%02dZ\"}",
				$_ % 7, $prefix, $_, $_ % 7, int($_ / 60) % 60, $_ % 60)
	} 1 .. $n ];
}

my $old = start_broker(1);
my $node = new_node('recreated', $old);
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION clickstream');
produce_lines($old, events('old', 300));
wait_for($node, 'SELECT next_offset FROM clickstream.ingest_positions', '300',
	'the old topic is consumed');

# the new, empty topic; the old broker goes
my $new = start_broker(1);
$node->safe_psql('postgres', "ALTER SYSTEM SET clickstream.brokers = '$new'");
$node->safe_psql('postgres', 'SELECT pg_reload_conf()');
stop_broker($old);
produce_lines($new, events('new', 50));
wait_for($node, q{SELECT last_error LIKE '%below the stored position 300%' FROM clickstream.status},
	't', "the partition's last_error says Kafka served offsets below the stored position");
like(slurp_file($node->logfile),
	qr/WARNING:  clickstream: clickstream\[0\]: Kafka served offset 0 below the stored position 300; not writing it.*\n.*DETAIL:.*\n.*HINT:  If the topic was recreated: set clickstream.enabled = off/,
	'a WARNING with the procedure as its hint');
wait_for($node, q{SELECT high_watermark = 50 AND lag IS NULL FROM clickstream.status}, 't',
	'the lag is NULL, not 0, while the position is past the end of the partition');
is($node->safe_psql('postgres', 'SELECT count(*) FROM clickstream.bronze'), '300',
	'nothing of the new topic was written');
unlike(slurp_file($node->logfile), qr/moved by another consumer/,
	'no false "moved by another consumer"');

# the procedure of the hint and docs/operations.md
$node->safe_psql('postgres', 'ALTER SYSTEM SET clickstream.enabled = off');
$node->safe_psql('postgres', 'SELECT pg_reload_conf()');
wait_for($node, q{SELECT state FROM clickstream.workers}, 'disabled', 'the worker is paused');
$node->safe_psql('postgres', 'CALL clickstream.refresh()');
is($node->safe_psql('postgres', 'SELECT count(*) FROM clickstream.bronze'), '0',
	'bronze is drained into silver');
$node->safe_psql('postgres', q{
	DELETE FROM clickstream.ingest_positions WHERE topic = 'clickstream';
	DELETE FROM clickstream.watermarks WHERE topic = 'clickstream'});
$node->safe_psql('postgres', 'ALTER SYSTEM SET clickstream.enabled = on');
$node->safe_psql('postgres', 'SELECT pg_reload_conf()');
produce_lines($new, [ @{ events('new', 60) }[ 50 .. 59 ] ]);
wait_for($node, 'SELECT next_offset FROM clickstream.ingest_positions', '60',
	'the new topic is read from its start');
$node->safe_psql('postgres', 'CALL clickstream.refresh()');
is($node->safe_psql('postgres',
		q{SELECT count(*) FILTER (WHERE event_id LIKE 'old-%') || '/' || count(*) FILTER (WHERE event_id LIKE 'new-%')
		  FROM clickstream.events}),
	'300/60', 'silver holds all 300 events of the old topic and all 60 of the new');
wait_for($node, q{SELECT lag FROM clickstream.status}, '0', 'the lag is 0 again');
is($node->safe_psql('postgres', q{SELECT count(*) FROM clickstream.dead_letters}), '0',
	'no dead letter');

# deleting the rows while the worker reads: it resumes at start_offset (it
# went on from where it was, and took the earliest offsets for gone)
$node->safe_psql('postgres', q{
	DELETE FROM clickstream.ingest_positions WHERE topic = 'clickstream';
	DELETE FROM clickstream.watermarks WHERE topic = 'clickstream'});
produce_lines($new, [ @{ events('new', 70) }[ 60 .. 69 ] ]);
wait_for($node, 'SELECT next_offset FROM clickstream.ingest_positions', '70',
	'after its rows were deleted under it, the partition is read again');
is($node->safe_psql('postgres', 'SELECT min(kafka_offset) FROM clickstream.bronze'), '0',
	'from offset 0 (start_offset = earliest)');
like(slurp_file($node->logfile), qr/has no stored position any more/, 'a WARNING says why');
unlike(slurp_file($node->logfile), qr/offsets 0 to \d+ were gone before/,
	'no false "were gone before this partition was first read"');
$node->safe_psql('postgres', 'CALL clickstream.refresh()');
is($node->safe_psql('postgres', q{SELECT count(*) FROM clickstream.events WHERE event_id LIKE 'new-%'}),
	'70', 'and silver has each of its events once');
unlike(slurp_file($node->logfile), qr/ERROR|FATAL|PANIC/, 'no error in the whole run');
$node->stop;

# the same with start_offset = latest: the batch read when the rows were
# found deleted is read again from its first message, not skipped
my $b2 = start_broker(1);
my $late = new_node('latest', $b2, 'clickstream.start_offset' => "'latest'");
$late->start;
$late->safe_psql('postgres', 'CREATE EXTENSION clickstream');
wait_for($late, q{SELECT count(*) > 0 FROM clickstream.worker_partitions()}, 't',
	'latest: the partition is assigned');
sleep 2;
produce_lines($b2, events('lat', 20));
wait_for($late, 'SELECT next_offset FROM clickstream.ingest_positions', '20', 'latest: 20 read');
$late->safe_psql('postgres', q{
	DELETE FROM clickstream.ingest_positions;
	DELETE FROM clickstream.watermarks});
produce_lines($b2, [ @{ events('lat', 30) }[ 20 .. 29 ] ]);
wait_for($late, q{SELECT coalesce(max(next_offset), -1) FROM clickstream.ingest_positions}, '30',
	'latest: the next messages are written');
$late->safe_psql('postgres', 'CALL clickstream.refresh()');
is($late->safe_psql('postgres', 'SELECT count(*) FROM clickstream.events'), '30',
	'latest: all 30 events in silver, none skipped');
like(slurp_file($late->logfile), qr/it resumes at offset 20, the first of the messages not written/,
	'latest: the WARNING says where it resumes');
$late->stop;

done_testing();
