# ClickstreamTest: helpers shared by the TAP tests of the ingestion worker.
#
# A test starts a local broker (tools/broker: librdkafka's mock cluster), a
# private PostgreSQL node that preloads clickstream and points at it, produces
# messages with kcat, and waits for bronze to reach a state.  Waits poll with
# a generous ceiling; no test asserts on elapsed time.

package ClickstreamTest;

use strict;
use warnings;

use Exporter 'import';
use File::Basename qw(dirname);
use File::Spec;
use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);

our @EXPORT = qw(start_broker stop_broker broker_down broker_up new_node
  produce produce_lines produce_file wait_for bronze_count worker_pid tool
  read_manifest);

my $root = File::Spec->rel2abs(File::Spec->catdir(dirname(__FILE__), '..', '..'));
my $broker_bin = "$root/tools/broker";

my %brokers;

# Start a broker with $partitions partitions; returns its bootstrap address.
sub start_broker
{
	my ($partitions, $topic) = @_;
	$topic //= 'clickstream';
	my ($out, $err) = ('', '');
	my $errfile = "$PostgreSQL::Test::Utils::tmp_check/broker_" . (scalar(keys %brokers) + 1) . '.log';
	my $h = IPC::Run::start([ $broker_bin, '--partitions', $partitions, '--topic', $topic ],
		'>', \$out, '2>', $errfile);
	my $deadline = time + 30;
	while ($out !~ /\n/ && time < $deadline)
	{
		$h->pump_nb;
		usleep(50_000);
	}
	die "broker did not start, see $errfile" unless $out =~ /^(\S+)\n/;
	my $addr = $1;
	$brokers{$addr} = $h;
	note "broker at $addr with $partitions partitions";
	return $addr;
}

# Take every broker of the cluster down, or bring them back up.
sub broker_down { $brokers{ $_[0] }->signal('USR1'); usleep(300_000); }
sub broker_up   { $brokers{ $_[0] }->signal('USR2'); usleep(300_000); }

# Stop a broker started by start_broker.
sub stop_broker
{
	my ($addr) = @_;
	my $h = delete $brokers{$addr} or return;
	$h->signal('TERM');
	$h->finish;
}

END
{
	for my $h (values %brokers) { eval { $h->kill_kill }; }
}

# A preloaded node consuming from $addr; %conf adds or overrides settings.
sub new_node
{
	my ($name, $addr, %conf) = @_;
	my $node = PostgreSQL::Test::Cluster->new($name);
	# silver parses JSON into text: the database must be UTF8
	$node->init(extra => [ '--encoding=UTF8', '--locale=C' ]);
	my %settings = (
		shared_preload_libraries    => "'clickstream'",
		'clickstream.database'      => "'postgres'",
		'clickstream.brokers'       => "'$addr'",
		'clickstream.batch_timeout' => "'200ms'",
		'clickstream.kafka_options' => "'session.timeout.ms=6000,heartbeat.interval.ms=500'",
		max_worker_processes        => 16,
		restart_after_crash         => 'on',
		%conf);
	$node->append_conf('postgresql.conf',
		join('', map { "$_ = $settings{$_}\n" } sort keys %settings));
	return $node;
}

# Produce $n messages "prefix-i" keyed by user, with kcat; dies on failure.
sub produce
{
	my ($addr, $n, %opt) = @_;
	my $prefix = $opt{prefix} // 'm';
	my @lines = map { sprintf("u%d\t{\"event_id\":\"%s-%d\",\"n\":%d}", $_ % 97, $prefix, $_, $_) }
	  1 .. $n;
	return produce_lines($addr, \@lines, %opt);
}

# Produce one message per "key<TAB>value" line, with kcat.
sub produce_lines
{
	my ($addr, $lines, %opt) = @_;
	my $topic = $opt{topic} // 'clickstream';
	my $input = join("\n", @$lines) . "\n";
	my @headers = map { ('-H', $_) } @{ $opt{headers} // [] };
	my ($out, $err) = ('', '');
	IPC::Run::run([ 'kcat', '-P', '-b', $addr, '-t', $topic, '-K', "\t", @headers,
			'-X', 'linger.ms=5' ],
		'<', \$input, '>', \$out, '2>', \$err)
	  or die "kcat failed: $err";
	return scalar @$lines;
}

# Produce the single message in $file (any bytes) with key $key.
sub produce_file
{
	my ($addr, $file, $key) = @_;
	my ($out, $err) = ('', '');
	IPC::Run::run([ 'kcat', '-P', '-b', $addr, '-t', 'clickstream', '-k', $key,
			'-X', 'message.max.bytes=16777216', $file ],
		'>', \$out, '2>', \$err)
	  or die "kcat failed: $err";
}

# Poll $sql on $node until it returns $expected (ceiling: 120 s).
sub wait_for
{
	my ($node, $sql, $expected, $name) = @_;
	my $got;
	for (1 .. 1200)
	{
		# psql, not safe_psql: the server may be in crash recovery
		my ($ret, $out, $err) = $node->psql('postgres', $sql);
		$got = $out;
		last if $ret == 0 && $got eq $expected;
		usleep(100_000);
	}
	is($got, $expected, $name);
}

# Path of a tool built by the Makefile (tools/NAME).
sub tool
{
	my ($name) = @_;
	return "$root/tools/$name";
}

# The key=value lines of an eventgen manifest, as a hash.
sub read_manifest
{
	my ($file) = @_;
	my %m;
	open(my $fh, '<', $file) or die "cannot read $file: $!";
	while (<$fh>)
	{
		chomp;
		my ($k, $v) = split /=/, $_, 2;
		$m{$k} = $v;
	}
	close $fh;
	return \%m;
}

# Number of rows in bronze.
sub bronze_count
{
	my ($node) = @_;
	return $node->safe_psql('postgres', 'SELECT count(*) FROM clickstream.bronze');
}

# Pid of ingestion worker $consumer (waits until it runs).
sub worker_pid
{
	my ($node, $consumer) = @_;
	$consumer //= 0;
	wait_for($node,
		"SELECT count(*) FROM clickstream.workers WHERE consumer = $consumer AND pid IS NOT NULL",
		'1', "worker $consumer is running");
	return $node->safe_psql('postgres',
		"SELECT pid FROM clickstream.workers WHERE consumer = $consumer");
}

1;
