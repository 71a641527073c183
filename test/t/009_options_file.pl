# clickstream.kafka_options_file: librdkafka properties from a file that only
# the server may read, applied at start and on reload; values with commas
# work; its contents never reach the server log, even when a line is bad;
# a file that group or others may read is refused with a hint.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib "$FindBin::Bin/../perl";
use ClickstreamTest;

my $addr = start_broker(2);

# clickstream.brokers points nowhere: only the file's bootstrap.servers, a
# list with a comma, can make the worker consume
my $node = new_node('optfile', '127.0.0.1:9');
my $file = $node->data_dir . '/kafka.properties';
my $file2 = $node->data_dir . '/kafka-other.properties';

# Write the options file (mode 0600 unless told otherwise).
sub write_options
{
	my ($path, $text, $mode) = @_;
	open(my $fh, '>', $path) or die "cannot write $path: $!";
	print $fh $text;
	close $fh;
	chmod($mode // 0600, $path) or die "cannot chmod $path: $!";
}

write_options($file, <<"EOF");
# SASL secrets would go here; the mock broker speaks plaintext, which
# ignores them, but librdkafka still parses and keeps every value
bootstrap.servers = 127.0.0.1:9,$addr
  sasl.username=clickstream
sasl.password=SECRET-one,with=commas and spaces
session.timeout.ms=6000
EOF
$node->append_conf('postgresql.conf', "clickstream.kafka_options_file = 'kafka.properties'\n");
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION clickstream');

my $n = produce($addr, 200, prefix => 'first');
wait_for($node, 'SELECT count(*) FROM clickstream.bronze', $n,
	'the file is applied: its bootstrap.servers, a value with a comma, reaches the broker');
my $pid = worker_pid($node);
is($node->safe_psql('postgres', 'SHOW clickstream.kafka_options_file'), 'kafka.properties',
	'the setting names the file');

# a changed file is read again at reload: the worker reconnects
my $logpos = -s $node->logfile;
write_options($file, <<"EOF");
bootstrap.servers=127.0.0.1:9,$addr
sasl.password=SECRET-two,still=secret
session.timeout.ms=6000
client.id=clickstream-from-file
EOF
$node->reload;
$node->wait_for_log(qr/Kafka settings changed, reconnecting/, $logpos);
pass('a changed options file makes the worker reconnect on reload');
produce($addr, 100, prefix => 'second');
wait_for($node, 'SELECT count(*) FROM clickstream.bronze', $n + 100, 'and it consumes with the new file');
is(worker_pid($node), $pid, 'without restarting');

# a reload that changes nothing does not reconnect
$logpos = -s $node->logfile;
$node->reload;
sleep 2;
ok(!$node->log_contains(qr/reconnecting/, $logpos), 'an unchanged file does not make it reconnect');

# another file: PostgreSQL logs the new setting (a file name), not the file
write_options($file2, <<"EOF");
bootstrap.servers=127.0.0.1:9,$addr
sasl.password=SECRET-three
session.timeout.ms=6000
EOF
$logpos = -s $node->logfile;
$node->safe_psql('postgres', "ALTER SYSTEM SET clickstream.kafka_options_file = 'kafka-other.properties'");
$node->reload;
$node->wait_for_log(qr/Kafka settings changed, reconnecting/, $logpos);
ok($node->log_contains(qr/parameter "clickstream.kafka_options_file" changed to "kafka-other.properties"/, $logpos),
	'the reload logs the file name');
produce($addr, 100, prefix => 'third');
wait_for($node, 'SELECT count(*) FROM clickstream.bronze', $n + 200, 'the other file is used');

# bad lines: reported by line and key, the value never shown; the worker
# waits (without restarting) until the file is fixed
$logpos = -s $node->logfile;
write_options($file2, <<"EOF");
bootstrap.servers=127.0.0.1:9,$addr
security.protocol=SECRET-four
SECRET-five has no equals sign
SECRET-six: x=y
no.such.property=SECRET-seven
session.timeout.ms=6000
EOF
$node->reload;
$node->wait_for_log(qr/invalid Kafka setting "no.such.property" at line 5/, $logpos);
ok($node->log_contains(qr/invalid Kafka setting "security.protocol" at line 2 of clickstream.kafka_options_file "kafka-other.properties"/, $logpos),
	'a bad value is reported by key and line');
ok($node->log_contains(qr/Invalid value "\(hidden\)" for configuration property "security.protocol"/, $logpos),
	'with librdkafka\'s message, the value hidden');
ok($node->log_contains(qr/line 3 of clickstream.kafka_options_file "kafka-other.properties" has no "="/, $logpos),
	'a line without "=" is reported by its number');
ok($node->log_contains(qr/line 4 of clickstream.kafka_options_file "kafka-other.properties" does not start with a property name/, $logpos),
	'a line whose key is not a property name is reported without it');
produce($addr, 50, prefix => 'bad-file');
sleep 2;
is($node->safe_psql('postgres', 'SELECT count(*) FROM clickstream.bronze'), $n + 200,
	'nothing is consumed with a bad file');
is(worker_pid($node), $pid, 'and the worker does not restart');

# group- or world-readable: refused with a hint
$logpos = -s $node->logfile;
write_options($file2, <<"EOF", 0640);
bootstrap.servers=127.0.0.1:9,$addr
sasl.password=SECRET-eight
session.timeout.ms=6000
EOF
$node->reload;
$node->wait_for_log(qr/clickstream.kafka_options_file "kafka-other.properties" is accessible to group or others \(mode 0640\); not using it/, $logpos);
ok($node->log_contains(qr/HINT:  Run chmod 600 on it/, $logpos), 'a readable file is refused with a hint');
sleep 2;
is($node->safe_psql('postgres', 'SELECT count(*) FROM clickstream.bronze'), $n + 200,
	'nothing is consumed with a readable file');
chmod(0600, $file2);
wait_for($node, 'SELECT count(*) FROM clickstream.bronze', $n + 250,
	'once the file is private again, the worker (retrying) consumes what waited');
is(worker_pid($node), $pid, 'still the same worker');

# a restart reads it too
$node->restart;
produce($addr, 30, prefix => 'after-restart');
wait_for($node, 'SELECT count(*) FROM clickstream.bronze', $n + 280, 'the file is read at start');

my $log = slurp_file($node->logfile);
unlike($log, qr/SECRET/, 'no line of the file ever reaches the server log');
unlike($log, qr/with=commas|still=secret/, 'not even a part of a value');
$node->stop;

done_testing();
