# Backup and restore of a running pipeline.  While the generator streams
# events (with duplicates, malformed, late and oversize ones) and after one
# refresh, with rows still waiting in bronze, the database is dumped
# (pg_dump, custom and plain formats) and copied (pg_basebackup); the
# source server is then lost.  Each copy is brought up in a new cluster
# against the same broker: pg_restore and psql -f of the plain dump (with
# the worker paused), pg_restore --single-transaction and psql
# --single-transaction (with the worker running), and the base backup.  Production goes
# on; each cluster resumes from its restored watermarks, refreshes, and ends
# with silver exactly the valid events once each, dead letters exactly the
# malformed ones, every gold table equal to its recomputation, and the
# configuration the operator had changed.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib "$FindBin::Bin/../perl";
use ClickstreamTest;

my $addr = start_broker(16);
my %common = (
	'clickstream.batch_size'        => 1000,
	'clickstream.max_message_bytes' => 4096);
my $src = new_node('source', $addr, %common,
	wal_level       => 'replica',
	max_wal_senders => 4);
$src->start;
$src->safe_psql('postgres', 'CREATE EXTENSION clickstream');

# configuration an operator changed: it must come back as it was
$src->safe_psql('postgres', q{
	UPDATE clickstream.quality_checks SET enabled = false WHERE name = 'events_have_runs';
	INSERT INTO clickstream.quality_checks (name, layer, description, query)
	VALUES ('no_test_users', 'silver', 'No test user.',
			$q$SELECT count(*) FROM clickstream.events WHERE user_id = 'test'$q$);
	INSERT INTO clickstream.event_types (event_type, description) VALUES ('signup', 'An account.');
	UPDATE clickstream.funnel_definition SET name = 'cart' WHERE step = 2;
});
my $config_sql = q{
	SELECT string_agg(format('%s|%s|%s|%s', name, enabled, builtin, modified), ',' ORDER BY name)
	FROM clickstream.quality_checks
	UNION ALL
	SELECT string_agg(format('%s|%s|%s', event_type, builtin, modified), ',' ORDER BY event_type)
	FROM clickstream.event_types
	UNION ALL
	SELECT string_agg(format('%s|%s|%s|%s', step, name, event_type, builtin), ',' ORDER BY step)
	FROM clickstream.funnel_definition};
my $config = $src->safe_psql('postgres', $config_sql);

sub generate
{
	my ($seed, $count, $rate, $manifest) = @_;
	my ($out, $err) = ('', '');
	return IPC::Run::start(
		[
			tool('eventgen'), '--brokers', $addr, '--seed', $seed,
			'--count', $count, '--rate', $rate, '--users', '2000',
			'--dup-share', '0.03', '--bad-share', '0.03', '--late-share', '0.05',
			'--oversize-bytes', '5000', '--manifest', $manifest
		],
		'>', \$out, '2>', \$err);
}

# --- the source: streaming, one refresh, more rows in bronze ---------------
my $tmp = $PostgreSQL::Test::Utils::tmp_check;
my $manifest_a = "$tmp/dump_manifest_a.txt";
my $gen = generate(31, 40000, 2000, $manifest_a);

$src->poll_query_until('postgres', 'SELECT count(*) > 5000 FROM clickstream.bronze')
  or die 'no ingestion';
$src->safe_psql('postgres', 'CALL clickstream.refresh()');
$src->poll_query_until('postgres', 'SELECT count(*) > 3000 FROM clickstream.bronze')
  or die 'no ingestion after the refresh';

# bronze only shrinks by a refresh, and none runs from here on: the dumps
# are taken with at least this many rows not promoted yet
my $in_bronze = bronze_count($src);
my $in_silver = $src->safe_psql('postgres', 'SELECT count(*) FROM clickstream.events');
ok($in_bronze > 0 && $in_silver > 0,
	"mid-stream: $in_silver events in silver, $in_bronze rows waiting in bronze");

my $custom = "$tmp/pipeline.dump";
my $plain = "$tmp/pipeline.sql";
$src->command_ok([ 'pg_dump', '-Fc', '-f', $custom, '-d', $src->connstr('postgres') ],
	'pg_dump -Fc');
$src->command_ok([ 'pg_dump', '-Fp', '-f', $plain, '-d', $src->connstr('postgres') ],
	'pg_dump -Fp');
$src->backup('base');
ok(!-e $manifest_a, 'the generator was still producing during the backups');
$src->stop;
note 'the source server is gone';

# --- the copies, in new clusters against the same broker ---------------------
# pg_restore and psql -f run with the worker paused (clickstream.enabled =
# off): their CREATE EXTENSION commits before the data does, and the worker
# must not read the topic before the watermarks are there.  A restore in a
# single transaction needs no pause: the worker sees the extension only once
# everything is in.
sub restored_node
{
	my ($name, $enabled) = @_;
	my $node = new_node($name, $addr, %common,
		'clickstream.enabled'  => $enabled,
		'clickstream.group_id' => "'$name'");
	$node->start;
	return $node;
}

sub run_restore
{
	my ($node, $what, @cmd) = @_;
	my ($out, $err) = ('', '');
	my $ok = IPC::Run::run([ @cmd, '-d', $node->connstr('postgres') ], '>', \$out, '2>', \$err);
	note "$what: @cmd exited $?";
	is($? >> 8, 0, "$what exits 0");
	is($err, '', "$what reports no error");
}

my %nodes;
$nodes{custom} = restored_node('custom', 'off');
run_restore($nodes{custom}, 'pg_restore', 'pg_restore', $custom);
$nodes{plain} = restored_node('plain', 'off');
run_restore($nodes{plain}, 'psql -f of the plain dump', 'psql', '-X', '-q', '-v', 'ON_ERROR_STOP=1',
	'-o', '/dev/null', '-f', $plain);
$nodes{single} = restored_node('single', 'on');
run_restore($nodes{single}, 'pg_restore --single-transaction',
	'pg_restore', '--single-transaction', '--exit-on-error', $custom);
$nodes{plain1} = restored_node('plain1', 'on');
run_restore($nodes{plain1}, 'psql --single-transaction -f of the plain dump',
	'psql', '-X', '-q', '--single-transaction', '-v', 'ON_ERROR_STOP=1', '-o', '/dev/null', '-f', $plain);

# the base backup starts like a crash: bronze and the positions are empty
$nodes{pitr} = PostgreSQL::Test::Cluster->new('pitr');
$nodes{pitr}->init_from_backup($src, 'base');
$nodes{pitr}->append_conf('postgresql.conf', "clickstream.group_id = 'pitr'\n");
$nodes{pitr}->start;

for my $name (qw(custom plain))
{
	my $node = $nodes{$name};
	is($node->safe_psql('postgres', 'SELECT count(*) FROM clickstream.bronze'), '0',
		"$name: bronze is empty after the restore");
	$node->safe_psql('postgres', 'ALTER SYSTEM SET clickstream.enabled = on; SELECT pg_reload_conf()');
}
for my $name (qw(custom plain single plain1))
{
	is($nodes{$name}->safe_psql('postgres', $config_sql), $config,
		"$name: the changed configuration came back");
	# gold remembers its day partitions as tables (regclass): a dump saves
	# their names, and the restore finds the restored tables, so the next
	# refresh does not take them for days dropped and created again
	is($nodes{$name}->safe_psql('postgres', q{
			SELECT cardinality(g.silver_partition_ids) > 0
			   AND g.silver_partition_ids::oid[] = clickstream.silver_partition_ids()::oid[]
			FROM clickstream.gold_state g}),
		't', "$name: gold's day partitions are the restored tables");
}

# production goes on
$gen->finish or die 'eventgen failed';
my $manifest_b = "$tmp/dump_manifest_b.txt";
generate(32, 5000, 5000, $manifest_b)->finish or die 'eventgen failed';
my ($ma, $mb) = (read_manifest($manifest_a), read_manifest($manifest_b));
my %m = map { $_ => ($ma->{$_} // 0) + ($mb->{$_} // 0) } keys %$ma;
note 'manifest: ' . join(' ', map { "$_=$m{$_}" } sort keys %m);

# dead letters: the generator's malformed kinds map onto reasons
my %reason_of = (
	invalid_json           => 'invalid_json',
	not_object             => 'not_an_object',
	missing_field          => 'missing_field',
	empty_field            => 'missing_field',
	wrong_type             => 'wrong_type',
	negative_price         => 'negative_price',
	bad_quantity           => 'invalid_quantity',
	invalid_utf8           => 'invalid_utf8',
	bad_timestamp          => 'invalid_timestamp',
	future_timestamp       => 'timestamp_in_future',
	purchase_without_order => 'purchase_without_order',
	oversize               => 'message_too_large');
my %want;
$want{ $reason_of{$_} } += $m{"malformed.$_"} // 0 for keys %reason_of;
my $dead = join("\n", map { "$_|$want{$_}" } grep { $want{$_} } sort keys %want);

for my $name (qw(custom plain single plain1 pitr))
{
	my $node = $nodes{$name};
	wait_for($node, 'SELECT sum(committed_offset) FROM clickstream.status',
		$m{messages}, "$name: the worker resumed and consumed every message");
	is($node->safe_psql('postgres', q{
			SELECT count(*) FROM clickstream.bronze b
			JOIN clickstream.watermarks w ON w.topic = b.kafka_topic AND w.partition = b.kafka_partition
			WHERE b.kafka_offset < w.durable_offset}),
		'0', "$name: it resumed from the restored watermarks (nothing below them read again)");
	$node->safe_psql('postgres', 'CALL clickstream.refresh()');
	is( $node->safe_psql('postgres',
			'SELECT count(*) || \'|\' || count(DISTINCT event_id) FROM clickstream.events'),
		"$m{valid}|$m{valid}",
		"$name: silver holds exactly the $m{valid} valid events, none twice");
	is($node->safe_psql('postgres', 'SELECT count(*) FROM clickstream.event_ids'),
		$m{valid}, "$name: event_ids matches");
	is($node->safe_psql('postgres',
			'SELECT reason, count(*) FROM clickstream.dead_letters GROUP BY 1 ORDER BY 1'),
		$dead, "$name: dead_letters holds exactly the $m{malformed} malformed messages, by reason");
	is($node->safe_psql('postgres', 'SELECT count(*) FROM clickstream.bronze'),
		'0', "$name: bronze is drained");
	is($node->safe_psql('postgres',
			'SELECT count(*) FROM clickstream.status WHERE durable_offset <> committed_offset'),
		'0', "$name: the watermarks caught up with every position");
	is($node->safe_psql('postgres', 'SELECT sum(events) FROM clickstream.touched'),
		$m{valid}, "$name: touched accounts for every event, before and after the backup");
	is($node->safe_psql('postgres',
			"SELECT string_agg(mart, ', ') FROM clickstream.verify_gold() WHERE NOT ok"),
		'', "$name: every gold table equals its recomputation");
	is($node->safe_psql('postgres', 'SELECT sum(events) FROM clickstream.sessions'),
		$m{valid}, "$name: every event is in exactly one session");
	ok($node->safe_psql('postgres', 'SELECT count(*) FROM clickstream.daily_metrics') > 0
		  && $node->safe_psql('postgres', 'SELECT count(*) FROM clickstream.product_funnel') > 0,
		"$name: the gold tables are not empty");
	is($node->safe_psql('postgres', $config_sql), $config,
		"$name: the configuration is the source's");
}

# the refresh history came along (the refresh above numbered its run after
# it: the sequences were restored too)
for my $name (qw(custom plain single plain1 pitr))
{
	is($nodes{$name}->safe_psql('postgres',
			'SELECT rows_promoted FROM clickstream.refresh_history WHERE run_id = 1'),
		$in_silver, "$name: the source's refresh is in the restored history");
}
is($nodes{custom}->safe_psql('postgres', 'SELECT count(*) FROM clickstream.check_quality() WHERE NOT passed'),
	'0', 'every enabled quality check passes on the restored pipeline');

$_->stop for values %nodes;
stop_broker($addr);
done_testing();
