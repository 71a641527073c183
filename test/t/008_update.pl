# Updates: for every released version (sql/releases), CREATE EXTENSION at
# that version followed by ALTER EXTENSION clickstream UPDATE gives the same
# catalog as a fresh install of the current version (test/catalog.sql:
# objects and kinds, columns, constraints, indexes, triggers, function
# definitions, comments, ACLs, what pg_dump saves, the shipped rows, the
# day partitions); the differences are printed when it does not.  Data made
# under the old version survives the update: silver, watermarks, bronze,
# the configuration the user changed, and gold is rebuilt exact.
use strict;
use warnings;

use File::Basename qw(dirname);
use File::Spec;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $root = File::Spec->rel2abs(File::Spec->catdir(dirname(__FILE__), '..', '..'));
my $catalog_sql = slurp_file("$root/test/catalog.sql");
my ($current) = slurp_file("$root/clickstream.control") =~ /default_version\s*=\s*'([^']+)'/;
my @releases = sort map { m{clickstream--([0-9.]+)\.sql$} ? $1 : () }
  glob("$root/sql/releases/clickstream--*.sql");
ok(@releases > 0, "released versions: @releases; current: $current");

my $node = PostgreSQL::Test::Cluster->new('update');
$node->init(extra => [ '--encoding=UTF8', '--locale=C' ]);
$node->append_conf('postgresql.conf', q{
shared_preload_libraries = 'clickstream'
clickstream.database = 'postgres'
clickstream.brokers = '127.0.0.1:9'
clickstream.enabled = off
});
$node->start;

# The catalog of a database, as lines.
sub catalog
{
	my ($db, $before) = @_;
	$before //= '';
	return $node->safe_psql($db, "$before\n$catalog_sql");
}

# The lines only one side has (a multiset difference), each marked with the
# side ("fresh" or "updated") that has it.
sub differences
{
	my ($fresh, $updated) = @_;
	my %count;
	$count{$_}++ for split /\n/, $fresh;
	$count{$_}-- for split /\n/, $updated;
	return map { ($count{$_} > 0 ? 'only in a fresh install: ' : 'only after the update:   ') . $_ }
	  grep { $count{$_} != 0 } sort keys %count;
}

$node->safe_psql('postgres', 'CREATE DATABASE fresh');
$node->safe_psql('fresh', "CREATE EXTENSION clickstream; SELECT clickstream.create_partitions(ARRAY[date '2026-03-01'])");
my $fresh = catalog('fresh');
ok(scalar(split /\n/, $fresh) > 500, 'the catalog of a fresh install is described in detail');

# --- the catalog after an update equals a fresh install -----------------------
for my $version (@releases)
{
	my $db = "updated_$version" =~ s/\./_/gr;
	$node->safe_psql('postgres', "CREATE DATABASE $db");
	is($node->safe_psql('postgres',
			"SELECT path IS NOT NULL FROM pg_extension_update_paths('clickstream') WHERE source = '$version' AND target = '$current'"),
		't', "an update path leads from $version to $current");
	# a day partition made by the old version is updated too
	$node->safe_psql($db, "CREATE EXTENSION clickstream VERSION '$version'; "
		  . "SELECT clickstream.create_partitions(ARRAY[date '2026-03-01'])");
	$node->safe_psql($db, 'ALTER EXTENSION clickstream UPDATE');
	is($node->safe_psql($db, "SELECT extversion FROM pg_extension WHERE extname = 'clickstream'"),
		$current, "$version updated to $current");
	my @diff = differences($fresh, catalog($db));
	is(scalar(@diff), 0, "after the update from $version the catalog equals a fresh install")
	  or diag(join("\n", @diff));
}

# --- the comparison sees what an update could get wrong ----------------------
my @changed = differences($fresh, catalog('fresh', q{
	BEGIN;
	COMMENT ON COLUMN clickstream.events.price IS 'changed';
	ALTER TABLE clickstream.refresh_history ALTER COLUMN steps DROP DEFAULT;
	ALTER FUNCTION clickstream.rate(numeric, numeric) SET work_mem = '1MB';
	GRANT SELECT ON clickstream.sessions TO public;
	CREATE OR REPLACE FUNCTION clickstream.label(value text, missing text) RETURNS text
		LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT coalesce(value, missing) $$;
	ALTER INDEX clickstream.sessions_date RENAME TO sessions_day;
}));
$node->safe_psql('fresh', 'SELECT 1');    # the transaction above was not committed
note join("\n", @changed);
my %seen = (
	'a changed column comment'     => qr/^only after.*column\|clickstream\.events\|\d+\|price\|.*comment=changed$/,
	'a dropped default'            => qr/^only after.*column\|clickstream\.refresh_history\|\d+\|steps\|.*\|default=\|/,
	"a function's SET option"      => qr/^only after.*function\|clickstream\.rate\(numeric,numeric\)\|/,
	'a grant'                      => qr/^only after.*relation\|clickstream\.sessions\|.*acl=\{.*=r\//,
	'a changed function body'      => qr/^only after.*function\|clickstream\.label\(text,text\)\|/,
	'a renamed index'              => qr/^only after.*index\|clickstream\.sessions\|.*sessions_day/);
for my $what (sort keys %seen)
{
	ok((grep { $_ =~ $seen{$what} } @changed), "the comparison sees $what");
}
is(catalog('fresh'), $fresh, 'and nothing was committed');

# --- data made under the first release survives the update -------------------
my $first = $releases[0];
$node->safe_psql('postgres', 'CREATE DATABASE data');
$node->safe_psql('data', "CREATE EXTENSION clickstream VERSION '$first'");
# events as the worker would have written them: offset i of partition 0
$node->safe_psql('data', q{
	CREATE FUNCTION public.feed(first int, last int) RETURNS void LANGUAGE sql AS $$
		INSERT INTO clickstream.bronze (kafka_topic, kafka_partition, kafka_offset, kafka_key, payload)
		SELECT 't', 0, i, convert_to('u' || i % 4, 'UTF8'),
			   convert_to(json_build_object('event_id', 'e' || i,
					'event_type', CASE WHEN i % 5 = 4 THEN 'purchase' WHEN i % 5 = 3 THEN 'add_to_cart' ELSE 'page_view' END,
					'user_id', 'u' || i % 4, 'ts', now() - interval '3 hours' + i * interval '3 minutes',
					'product_id', 'p' || i % 3, 'category', 'c' || i % 2, 'price', 10 + i,
					'quantity', 1, 'order_id', 'o' || i, 'page_url', '/p/' || i % 3)::text, 'UTF8')
		FROM generate_series(first, last) i;
		INSERT INTO clickstream.ingest_positions (topic, partition, next_offset) VALUES ('t', 0, last + 1)
		ON CONFLICT (topic, partition) DO UPDATE SET next_offset = EXCLUDED.next_offset;
	$$;
	SELECT public.feed(0, 39);
});
$node->safe_psql('data', 'CALL clickstream.refresh()');
# more rows wait in bronze; the operator changed the configuration
$node->safe_psql('data', q{
	SELECT public.feed(40, 59);
	UPDATE clickstream.quality_checks SET enabled = false WHERE name = 'events_have_runs';
	INSERT INTO clickstream.quality_checks (name, layer, description, query, builtin)
	VALUES ('mine', 'silver', 'Mine.', 'SELECT 0', false);
	INSERT INTO clickstream.event_types (event_type, description) VALUES ('signup', 'An account.');
});
my $silver_sql = 'SELECT count(*), sum(kafka_offset), min(event_id) FROM clickstream.events';
my $silver = $node->safe_psql('data', $silver_sql);
is($silver, '40|780|e0', 'under the old version: 40 events in silver');
$node->safe_psql('data', 'ALTER EXTENSION clickstream UPDATE');

is($node->safe_psql('data', $silver_sql), $silver, 'silver survives the update');
is($node->safe_psql('data', 'SELECT count(*) FROM clickstream.event_ids'), '40', 'so do event_ids');
is($node->safe_psql('data', 'SELECT topic, partition, durable_offset FROM clickstream.watermarks'),
	't|0|40', 'and the watermark');
is($node->safe_psql('data', 'SELECT count(*), min(kafka_offset) FROM clickstream.bronze'),
	'20|40', 'and the rows waiting in bronze');
is($node->safe_psql('data', q{
		SELECT string_agg(format('%s|%s|%s|%s', name, enabled, builtin, modified), ',' ORDER BY name)
		FROM clickstream.quality_checks WHERE name IN ('events_have_runs', 'mine', 'events_not_null')}),
	'events_have_runs|f|t|t,events_not_null|t|t|f,mine|t|f|f',
	'a shipped check edited before the update is marked modified; the others are as shipped');
is($node->safe_psql('data', q{
		SELECT string_agg(format('%s|%s|%s', event_type, builtin, modified), ',' ORDER BY event_type)
		FROM clickstream.event_types WHERE event_type IN ('signup', 'purchase')}),
	'purchase|t|f,signup|f|f', "the user's event type is the user's");
is($node->safe_psql('data', 'SELECT bool_and(builtin), count(*) FROM clickstream.funnel_definition'),
	't|4', 'the untouched funnel is the shipped one');
my ($partition_lines) = join("\n", grep { /^partition/ } split /\n/, $fresh);
is(join("\n", sort { $a cmp $b } keys %{ { map { $_ => 1 } grep { /^partition/ } split /\n/, catalog('data') } }),
	$partition_lines, 'the day partitions made before the update have the indexes of a fresh install');

$node->safe_psql('data', 'CALL clickstream.refresh()');
is($node->safe_psql('data', 'SELECT count(*), count(DISTINCT event_id) FROM clickstream.events'),
	'60|60', 'the first refresh after the update promotes the waiting rows');
is($node->safe_psql('data', "SELECT string_agg(mart, ', ') FROM clickstream.verify_gold() WHERE NOT ok"),
	'', 'and rebuilds gold: every gold table equals its recomputation');
is($node->safe_psql('data', 'SELECT sum(events) FROM clickstream.sessions'), '60',
	'every event is in one session');
ok($node->safe_psql('data', 'SELECT count(*) FROM clickstream.daily_metrics') > 0
	  && $node->safe_psql('data', 'SELECT count(*) FROM clickstream.orders') > 0,
	'the marts new in this version are filled');
is($node->safe_psql('data', 'SELECT count(*) FROM clickstream.check_quality() WHERE NOT passed'),
	'0', 'every enabled quality check passes');

# an updated database dumps and restores like a fresh one
my $dump = "$PostgreSQL::Test::Utils::tmp_check/updated.dump";
$node->command_ok([ 'pg_dump', '-Fc', '-f', $dump, '-d', $node->connstr('data') ],
	'pg_dump of the updated database');
$node->safe_psql('postgres', 'CREATE DATABASE data_copy');
$node->command_ok([ 'pg_restore', '--single-transaction', '--exit-on-error', '-d',
		$node->connstr('data_copy'), $dump ], 'pg_restore of it exits 0');
is($node->safe_psql('data_copy', "$silver_sql; SELECT count(*) FROM clickstream.sessions; SELECT count(*) FROM clickstream.quality_checks WHERE modified"),
	$node->safe_psql('data', "$silver_sql; SELECT count(*) FROM clickstream.sessions; SELECT count(*) FROM clickstream.quality_checks WHERE modified"),
	'the copy holds the same silver, sessions and configuration');

# --- a session that refreshed under the old version goes on after the update
# (its scratch tables of the old layout are made again: the copy of the
# sessions' rows lacked the columns sessions gained, and every refresh and
# rebuild of that session failed until it reconnected)
$node->safe_psql('postgres', 'CREATE DATABASE same');
my $feed = $node->safe_psql('data', q{SELECT pg_get_functiondef('public.feed(int, int)'::regprocedure)});
my $same = $node->safe_psql('same', qq{
	CREATE EXTENSION clickstream VERSION '$first';
	$feed;
	SELECT public.feed(0, 39);
	CALL clickstream.refresh();
	ALTER EXTENSION clickstream UPDATE;
	SELECT public.feed(40, 59);
	CALL clickstream.refresh();
	SELECT 'bad: ' || coalesce(string_agg(mart, ', '), 'none') FROM clickstream.verify_gold() WHERE NOT ok;
	SELECT 'rebuilt: ' || clickstream.rebuild_gold();
	SELECT 'events: ' || count(*) FROM clickstream.events;
});
like($same, qr/^bad: none$/m, 'in the session that refreshed before the update, the refresh after it leaves gold exact');
like($same, qr/^rebuilt: \d+$/m, 'and rebuild_gold() works there');
like($same, qr/^events: 60$/m, 'with all the events in silver');

# --- silver dated in another zone than the one at the update: the old
# version's gold state does not say which zone its rows were dated in, so the
# rebuild after the update asks silver.  Without that, a session that went on
# after the update lost its events dated the day before (the refresh looked
# for them on their day in the new zone only).
$node->safe_psql('postgres', 'CREATE DATABASE zones');
$node->safe_psql('zones', qq{
	CREATE EXTENSION clickstream VERSION '$first';
	CREATE FUNCTION public.feed_at(first int, last int) RETURNS void LANGUAGE sql AS \$\$
		INSERT INTO clickstream.bronze (kafka_topic, kafka_partition, kafka_offset, kafka_key, payload)
		SELECT 't', 0, i, NULL,
			   convert_to(json_build_object('event_id', 'z' || i, 'event_type', 'page_view',
					'user_id', 'u' || i % 4, 'ts', timestamptz '2026-03-01 03:00Z' + i * interval '3 minutes',
					'page_url', '/p/' || i % 3)::text, 'UTF8')
		FROM generate_series(first, last) i;
		INSERT INTO clickstream.ingest_positions (topic, partition, next_offset) VALUES ('t', 0, last + 1)
		ON CONFLICT (topic, partition) DO UPDATE SET next_offset = EXCLUDED.next_offset;
	\$\$;
});
$node->safe_psql('postgres', "ALTER SYSTEM SET clickstream.timezone = 'America/New_York'");
$node->reload;
$node->poll_query_until('zones', "SELECT current_setting('clickstream.timezone') = 'America/New_York'")
  or die 'the time zone was not reloaded';
# 03:00 to 04:57 UTC is 22:00 to 23:57 on 2026-02-28 in New York
$node->safe_psql('zones', 'SELECT public.feed_at(0, 39); CALL clickstream.refresh();');
is($node->safe_psql('zones', 'SELECT string_agg(DISTINCT event_date::text, \',\') FROM clickstream.events'),
	'2026-02-28', 'under the old version, silver dated in New York');
$node->safe_psql('postgres', 'ALTER SYSTEM RESET clickstream.timezone');
$node->reload;
$node->poll_query_until('zones', "SELECT current_setting('clickstream.timezone') = 'UTC'")
  or die 'the time zone was not reloaded';
$node->safe_psql('zones', 'ALTER EXTENSION clickstream UPDATE');
$node->safe_psql('zones', 'CALL clickstream.refresh()');
is($node->safe_psql('zones', 'SELECT timezone_changed FROM clickstream.gold_state'), 't',
	'the rebuild after the update sees silver dated in another zone');
# every user's session goes on, in UTC on 2026-03-01 as before
$node->safe_psql('zones', 'SELECT public.feed_at(40, 59); CALL clickstream.refresh();');
is($node->safe_psql('zones', "SELECT string_agg(mart, ', ') FROM clickstream.verify_gold() WHERE NOT ok"),
	'', 'a session that goes on after the update has its events of the day before: gold is exact');
is($node->safe_psql('zones', 'SELECT count(*), sum(events) FROM clickstream.sessions'), '4|60',
	'one session per user, with every event');

$node->stop;
done_testing();
