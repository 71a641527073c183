# Operating the worker: SIGHUP batch size, pause and resume, broker down and
# up, an unreachable broker, DROP/CREATE EXTENSION, and the preload rule.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib "$FindBin::Bin/../perl";
use ClickstreamTest;

my $addr = start_broker(2);
my $node = new_node('control', $addr,
	'clickstream.batch_size'    => 5,
	'clickstream.batch_timeout' => "'1h'");
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION clickstream');
my $pid = worker_pid($node);

# batch_size: with a timeout of an hour, only full batches are written
produce($addr, 1, prefix => 'warmup');
produce($addr, 4, prefix => 'warmup2');
wait_for($node, 'SELECT count(*) FROM clickstream.bronze', '5', 'a full batch of 5 is written');
produce($addr, 12, prefix => 'size');
wait_for($node, 'SELECT count(*) FROM clickstream.bronze', '15', 'two more full batches are written');
sleep 2;
is($node->safe_psql('postgres', 'SELECT count(*) FROM clickstream.bronze'),
	'15', 'the partial batch waits for its size or timeout');
$node->safe_psql('postgres', 'ALTER SYSTEM SET clickstream.batch_size = 1');
$node->reload;
wait_for($node, 'SELECT count(*) FROM clickstream.bronze', '17',
	'SIGHUP: a smaller batch_size writes the pending messages');
$node->safe_psql('postgres', "ALTER SYSTEM SET clickstream.batch_timeout = '100ms'");
$node->safe_psql('postgres', 'ALTER SYSTEM SET clickstream.batch_size = 1000');
$node->reload;

# enabled = off pauses without losing the position
$node->safe_psql('postgres', 'ALTER SYSTEM SET clickstream.enabled = off');
$node->reload;
wait_for($node, 'SELECT state FROM clickstream.workers', 'disabled', 'enabled = off pauses the worker');
produce($addr, 100, prefix => 'paused');
sleep 3;
is($node->safe_psql('postgres', 'SELECT count(*) FROM clickstream.bronze'),
	'17', 'nothing is consumed while paused');
$node->safe_psql('postgres', 'ALTER SYSTEM SET clickstream.enabled = on');
$node->reload;
wait_for($node, 'SELECT count(*), count(DISTINCT payload) FROM clickstream.bronze', '117|117',
	'enabled = on resumes at the stored position');

# broker down and up: a WARNING, no restart, then consumption resumes
my $logpos = -s $node->logfile;
broker_down($addr);
$node->wait_for_log(qr/cannot reach Kafka/, $logpos);
pass('an unreachable broker gives a WARNING');
wait_for($node, 'SELECT state FROM clickstream.workers', 'broker_down', 'status says broker_down');
sleep 3;
broker_up($addr);
wait_for($node, 'SELECT state FROM clickstream.workers', 'consuming',
	'status says consuming again once a broker answers, before any new message');
produce($addr, 50, prefix => 'after-down');
wait_for($node, 'SELECT count(*), count(DISTINCT payload) FROM clickstream.bronze', '167|167',
	'after the broker is back, consumption resumes');
is(worker_pid($node), $pid, 'the worker did not restart');

# kafka_options reaches librdkafka: a bad entry is a WARNING with a hint and
# the worker waits for the next reload instead of restarting in a loop
$logpos = -s $node->logfile;
$node->safe_psql('postgres', "ALTER SYSTEM SET clickstream.kafka_options = 'no.such.property=1'");
$node->reload;
$node->wait_for_log(qr/invalid Kafka setting "no.such.property"/, $logpos);
ok($node->log_contains(qr/HINT:  Fix clickstream.kafka_options/, $logpos), 'a bad kafka_options entry gives a WARNING with a hint');
produce($addr, 10, prefix => 'bad-options');
sleep 2;
is($node->safe_psql('postgres', 'SELECT count(*) FROM clickstream.bronze'), '167', 'nothing is consumed meanwhile');
is(worker_pid($node), $pid, 'and the worker does not restart');
$node->safe_psql('postgres',
	"ALTER SYSTEM SET clickstream.kafka_options = 'session.timeout.ms=6000,heartbeat.interval.ms=500'");
$node->reload;
wait_for($node, 'SELECT count(*), count(DISTINCT payload) FROM clickstream.bronze', '177|177',
	'fixed options: consumption resumes where it stopped');

# DROP EXTENSION: back to waiting; CREATE EXTENSION: starts again from scratch
$logpos = -s $node->logfile;
$node->safe_psql('postgres', 'DROP EXTENSION clickstream');
$node->wait_for_log(qr/waiting for CREATE EXTENSION/, $logpos);
pass('after DROP EXTENSION the worker waits again');
is($node->safe_psql('postgres',
		"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'clickstream consumer' AND pid = $pid"),
	'1', 'the same worker process waits');
$node->safe_psql('postgres', 'CREATE EXTENSION clickstream');
wait_for($node, 'SELECT count(*), count(DISTINCT payload) FROM clickstream.bronze', '177|177',
	'after CREATE EXTENSION the retained topic is consumed again, exactly once');
unlike(slurp_file($node->logfile), qr/ERROR|FATAL|PANIC/, 'no error in the whole run');
$node->stop;

# an unreachable broker from the start: WARNING, no crash loop
my $lonely = new_node('unreachable', '127.0.0.1:9');
$lonely->start;
$lonely->safe_psql('postgres', 'CREATE EXTENSION clickstream');
$lonely->wait_for_log(qr/cannot reach Kafka/);
my $lpid = worker_pid($lonely);
sleep 6;
is(worker_pid($lonely), $lpid, 'an unreachable broker never makes a crash loop');
is($lonely->safe_psql('postgres', 'SELECT state FROM clickstream.workers'), 'broker_down',
	'status says broker_down');
$lonely->stop;

# loading the library any other way than shared_preload_libraries is an ERROR with a hint
my $plain = PostgreSQL::Test::Cluster->new('plain');
$plain->init;
$plain->start;
my ($ret, $out, $err) = $plain->psql('postgres', "LOAD 'clickstream'");
like($err, qr/clickstream can only be loaded via shared_preload_libraries/, 'LOAD without preload is refused');
like($err, qr/HINT:.*shared_preload_libraries/, 'with a hint');
($ret, $out, $err) = $plain->psql('postgres', 'CREATE EXTENSION clickstream');
like($err, qr/shared_preload_libraries/, 'so is CREATE EXTENSION');
$plain->stop;

done_testing();
