# Kafka -> bronze: exact rows and coordinates, status and group offsets,
# headers, oversize messages and rows refused by bronze go to dead_letters.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib "$FindBin::Bin/../perl";
use ClickstreamTest;

my $addr = start_broker(4);
my $node = new_node('ingest', $addr);
$node->start;

# before CREATE EXTENSION the worker waits quietly
$node->wait_for_log(qr/waiting for CREATE EXTENSION clickstream in database "postgres"/);
sleep 2;
my $log = slurp_file($node->logfile);
is(() = $log =~ /waiting for CREATE EXTENSION/g, 1, 'one LOG line while waiting for the extension');
unlike($log, qr/ERROR|FATAL/, 'no error while waiting for the extension');

$node->safe_psql('postgres', 'CREATE EXTENSION clickstream');
my $n = produce($addr, 20000);
wait_for($node, 'SELECT count(*) FROM clickstream.bronze', $n, "$n messages give $n bronze rows");

is( $node->safe_psql('postgres', q{
		SELECT bool_and(c = d AND mn = 0 AND mx = c - 1), sum(c)
		FROM (SELECT kafka_partition, count(*) c, count(DISTINCT kafka_offset) d,
		             min(kafka_offset) mn, max(kafka_offset) mx
		      FROM clickstream.bronze GROUP BY 1) s}),
	"t|$n", 'every partition holds offsets 0..n-1 exactly once');
is( $node->safe_psql('postgres', q{
		SELECT count(DISTINCT convert_from(payload, 'UTF8')::jsonb->>'event_id'),
		       count(DISTINCT kafka_partition),
		       bool_and(kafka_topic = 'clickstream' AND kafka_timestamp IS NOT NULL
		                AND convert_from(kafka_key, 'UTF8') ~ '^u[0-9]+$')
		FROM clickstream.bronze}),
	"$n|4|t", 'payloads, keys, topic and timestamps are kept');
is( $node->safe_psql('postgres', q{
		SELECT count(*) FROM (SELECT kafka_key, kafka_partition FROM clickstream.bronze
		                      GROUP BY 1, 2) s}),
	$node->safe_psql('postgres', 'SELECT count(DISTINCT kafka_key) FROM clickstream.bronze'),
	'a key always maps to one partition');

wait_for($node, q{
	SELECT count(*) = 4 AND bool_and(coalesce(lag = 0 AND committed_offset = high_watermark, false))
	FROM clickstream.status}, 't', 'status shows lag going to 0 on every partition');
is( $node->safe_psql('postgres',
		'SELECT sum(committed_offset), bool_and(durable_offset = 0) FROM clickstream.status'),
	"$n|t", 'committed positions cover every row; watermarks start at the first offset');
ok( $node->safe_psql('postgres',
		'SELECT sum(messages_per_sec) > 0 AND sum(bytes_per_sec) > 0 FROM clickstream.status') eq 't',
	'status reports rates over the last minute');
is($node->safe_psql('postgres', 'SELECT state FROM clickstream.workers'),
	'consuming', 'worker state is consuming');

# the Kafka group sees the committed offsets (after the PostgreSQL commit)
my $committed = '';
for (1 .. 50)
{
	my ($out, $err) = ('', '');
	IPC::Run::run([ '/usr/bin/python3', '-c', <<"PY" ], '>', \$out, '2>', \$err);
from confluent_kafka import Consumer, TopicPartition
c = Consumer({'bootstrap.servers': '$addr', 'group.id': 'clickstream'})
parts = c.committed([TopicPartition('clickstream', p) for p in range(4)], timeout=10)
print(sum(max(p.offset, 0) for p in parts))
c.close()
PY
	chomp($committed = $out);
	last if $committed eq $n;
	sleep 1;
}
is($committed, $n, 'offsets committed to the consumer group match bronze');

# headers
produce_lines($addr, [ "h1\t{\"event_id\":\"h-1\"}" ], headers => [ 'source=test', 'trace=abc' ]);
wait_for($node, q{
	SELECT array_to_string(header_keys, ',') || ':' ||
	       convert_from(header_values[1], 'UTF8') || ',' || convert_from(header_values[2], 'UTF8')
	FROM clickstream.bronze WHERE header_keys IS NOT NULL},
	'source,trace:test,abc', 'headers are kept in order');
$n++;

# an oversize message goes to dead_letters; ingestion continues
$node->safe_psql('postgres', "ALTER SYSTEM SET clickstream.max_message_bytes = 1000");
$node->reload;
sleep 1;
my $big = $node->basedir . '/big.json';
open(my $fh, '>', $big) or die;
print $fh '{"event_id":"big","pad":"' . ('x' x 5000) . '"}';
close $fh;
produce_file($addr, $big, 'ubig');
$n += produce($addr, 100, prefix => 'after');
wait_for($node, 'SELECT count(*) FROM clickstream.bronze', $n, 'messages after the oversize one are ingested');
is( $node->safe_psql('postgres', q{
		SELECT reason, stage, payload_bytes, payload_truncated, length(payload), kafka_offset IS NOT NULL
		FROM clickstream.dead_letters}),
	'message_too_large|ingest|5027|t|1000|t', 'the oversize message is in dead_letters with its coordinates');
is( $node->safe_psql('postgres',
		q{SELECT count(*) FROM clickstream.bronze WHERE convert_from(payload, 'UTF8') LIKE '%"big"%'}),
	'0', 'and not in bronze');

# a row refused by bronze (a user's constraint) is isolated; the batch is written
$node->safe_psql('postgres', q{
	ALTER TABLE clickstream.bronze ADD CONSTRAINT no_poison
	CHECK (position('poison'::bytea in payload) = 0)});
my @lines = map { "p$_\t{\"event_id\":\"" . ($_ == 37 ? 'poison' : "ok-$_") . '"}' } 1 .. 200;
produce_lines($addr, \@lines);
$n += 199;
wait_for($node, 'SELECT count(*) FROM clickstream.bronze', $n, 'the 199 good messages of the batch are written');
wait_for($node, q{SELECT count(*) FROM clickstream.dead_letters WHERE reason = 'rejected_by_bronze'},
	'1', 'the refused message is in dead_letters');
$node->safe_psql('postgres', 'ALTER TABLE clickstream.bronze DROP CONSTRAINT no_poison');

# so is a row a user's trigger refuses with RAISE EXCEPTION
$node->safe_psql('postgres', q{
	CREATE FUNCTION public.refuse_marked() RETURNS trigger LANGUAGE plpgsql AS $$
	BEGIN
		IF position('refuse-me'::bytea in NEW.payload) > 0 THEN
			RAISE EXCEPTION 'refused by trigger';
		END IF;
		RETURN NEW;
	END $$;
	CREATE TRIGGER refuse_marked BEFORE INSERT ON clickstream.bronze
		FOR EACH ROW EXECUTE FUNCTION public.refuse_marked()});
@lines = map { "r$_\t{\"event_id\":\"" . ($_ % 50 == 7 ? 'refuse-me' : "fine-$_") . '"}' } 1 .. 200;
produce_lines($addr, \@lines);
$n += 196;
wait_for($node, 'SELECT count(*) FROM clickstream.bronze', $n, 'rows around those a trigger refuses are written');
wait_for($node, q{SELECT count(*) FROM clickstream.dead_letters
	WHERE reason = 'rejected_by_bronze' AND detail = 'refused by trigger'},
	'4', 'the 4 refused rows are in dead_letters');
$node->safe_psql('postgres', 'DROP TRIGGER refuse_marked ON clickstream.bronze');
wait_for($node, q{
	SELECT bool_and(lag = 0) FROM clickstream.status}, 't', 'positions moved past the dead letters');

$node->stop;
ok($node->log_contains(qr/clickstream consumer 0 stopped/), 'SIGTERM stops the worker cleanly');
done_testing();
