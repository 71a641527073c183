# The crash protocol: while events stream in, the whole server is killed
# (pg_ctl stop -m immediate, so crash recovery empties the UNLOGGED bronze
# and positions) three times: in the middle of ingestion, right after a
# refresh, and during a refresh.  After draining, silver holds exactly the
# valid events the generator produced, each once, and dead_letters exactly
# the malformed ones, by reason.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);
use FindBin;
use lib "$FindBin::Bin/../perl";
use ClickstreamTest;

my $addr = start_broker(16);
my $node = new_node('crash', $addr,
	'clickstream.batch_size'        => 1000,
	'clickstream.max_message_bytes' => 4096);
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION clickstream');

# ~20 s of traffic with every kind of fault; oversize messages are small
# (5000 bytes, above max_message_bytes) to stay within the mock broker's
# retention
my $manifest = "$PostgreSQL::Test::Utils::tmp_check/crash_manifest.txt";
my ($gout, $gerr) = ('', '');
my $gen = IPC::Run::start(
	[
		tool('eventgen'), '--brokers', $addr, '--seed', '11',
		'--count', '60000', '--rate', '3000', '--users', '3000',
		'--dup-share', '0.03', '--bad-share', '0.03', '--late-share', '0.05',
		'--oversize-bytes', '5000', '--manifest', $manifest
	],
	'>', \$gout, '2>', \$gerr);

sub crash
{
	my ($when) = @_;
	$node->stop('immediate');
	$node->start;
	note "crashed $when";
}

sub silver_count
{
	return $node->safe_psql('postgres', 'SELECT count(*) FROM clickstream.events');
}

# 1: in the middle of ingestion, before any refresh
$node->poll_query_until('postgres', 'SELECT count(*) > 5000 FROM clickstream.bronze')
  or die 'no ingestion';
crash('during ingestion');

# 2: right after a refresh committed
$node->poll_query_until('postgres', 'SELECT count(*) > 5000 FROM clickstream.bronze')
  or die 'no ingestion after the first crash';
$node->safe_psql('postgres', 'CALL clickstream.refresh()');
my $after_refresh = silver_count();
ok($after_refresh > 0, "a refresh promoted $after_refresh events");
crash('right after a refresh');
is(silver_count(), $after_refresh, 'silver survives crash recovery');

# 3: during a refresh (small steps, so that it runs for a while)
$node->poll_query_until('postgres', 'SELECT count(*) > 10000 FROM clickstream.bronze')
  or die 'no ingestion after the second crash';
my ($rout, $rerr) = ('', '');
my $refresh = IPC::Run::start(
	[
		'psql', '-X', '-d', $node->connstr('postgres'), '-c',
		'SET clickstream.refresh_batch_size = 1000', '-c', 'CALL clickstream.refresh()'
	],
	'>', \$rout, '2>', \$rerr);
$node->poll_query_until('postgres',
	"SELECT count(*) > 0 FROM clickstream.refresh_history WHERE status = 'running' AND steps >= 2")
  or die 'the refresh did not get going';
my $interrupted = $node->safe_psql('postgres',
	"SELECT run_id FROM clickstream.refresh_history WHERE status = 'running'");
crash('during a refresh');
$refresh->finish;
like($rerr, qr/terminat|connection/i, 'the refresh was cut off by the crash');

# drain: the generator finishes, the worker catches up, one last refresh
$gen->finish or die "eventgen failed: $gerr";
my $m = read_manifest($manifest);
note "manifest: " . join(' ', map { "$_=$m->{$_}" } sort keys %$m);
wait_for($node, 'SELECT sum(committed_offset) FROM clickstream.status',
	$m->{messages}, 'the worker consumed every message');
$node->safe_psql('postgres', 'CALL clickstream.refresh()');

is( $node->safe_psql('postgres',
		'SELECT count(*) || \'|\' || count(DISTINCT event_id) FROM clickstream.events'),
	"$m->{valid}|$m->{valid}",
	"silver holds exactly the $m->{valid} valid events, none twice");
is($node->safe_psql('postgres', 'SELECT count(*) FROM clickstream.event_ids'),
	$m->{valid}, 'event_ids matches');
is($node->safe_psql('postgres', 'SELECT count(*) FROM clickstream.bronze'),
	'0', 'bronze is drained');

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
for my $kind (keys %reason_of)
{
	$want{ $reason_of{$kind} } += $m->{"malformed.$kind"} // 0;
}
my $expected = join("\n", map { "$_|$want{$_}" } grep { $want{$_} } sort keys %want);
is($node->safe_psql('postgres',
		'SELECT reason, count(*) FROM clickstream.dead_letters GROUP BY 1 ORDER BY 1'),
	$expected, "dead_letters holds exactly the $m->{malformed} malformed messages, by reason");
is($node->safe_psql('postgres',
		"SELECT count(*) FROM clickstream.dead_letters WHERE reason = 'offsets_skipped'"),
	'0', 'no offsets were skipped');

# bookkeeping after the crashes
is($node->safe_psql('postgres',
		"SELECT status FROM clickstream.refresh_history WHERE run_id = $interrupted"),
	'interrupted', 'the run cut off by the crash is marked interrupted');
is($node->safe_psql('postgres',
		'SELECT sum(rows_promoted) FROM clickstream.refresh_history'),
	$m->{valid}, 'refresh_history accounts for every promoted event');
is($node->safe_psql('postgres',
		'SELECT count(*) FROM clickstream.check_quality() WHERE NOT passed'),
	'0', 'every quality check passes');
is($node->safe_psql('postgres',
		'SELECT count(*) FROM clickstream.status WHERE durable_offset <> committed_offset'),
	'0', 'the watermark caught up with every position');
is($node->safe_psql('postgres',
		"SELECT sum(events) FROM clickstream.touched"),
	$m->{valid}, 'touched accounts for every promoted event');

# gold came through the crashes too: sessions equal a full recomputation
is($node->safe_psql('postgres', q{
		SELECT count(*) FROM (
			(SELECT session_id, user_id, session_start, session_end, events, revenue,
					landing_page, exit_page, funnel_level, category_funnel, product_funnel FROM clickstream.sessions
			 EXCEPT ALL
			 SELECT session_id, user_id, session_start, session_end, events, revenue,
					landing_page, exit_page, funnel_level, category_funnel, product_funnel FROM clickstream.session_rows('clickstream.events'))
			UNION ALL
			(SELECT session_id, user_id, session_start, session_end, events, revenue,
					landing_page, exit_page, funnel_level, category_funnel, product_funnel FROM clickstream.session_rows('clickstream.events')
			 EXCEPT ALL
			 SELECT session_id, user_id, session_start, session_end, events, revenue,
					landing_page, exit_page, funnel_level, category_funnel, product_funnel FROM clickstream.sessions)) d}),
	'0', 'sessions equal a full recomputation from silver after the crashes');
is($node->safe_psql('postgres', 'SELECT sum(events) FROM clickstream.sessions'),
	$m->{valid}, 'every promoted event is in exactly one session');

# and the funnel tables equal the same sums over the recomputation
is($node->safe_psql('postgres', q{
		WITH s AS MATERIALIZED (SELECT * FROM clickstream.session_rows('clickstream.events')),
		counted AS (
			SELECT 'day' AS kind, session_date AS day, '' AS k1, '' AS k2, funnel_level AS level FROM s
			UNION ALL
			SELECT 'category', session_date, c.key, '', c.value::int
			FROM s, jsonb_each_text(s.category_funnel) c
			UNION ALL
			SELECT 'product', session_date, p.key, coalesce(p.value ->> 1, ''), (p.value ->> 0)::int
			FROM s, jsonb_each(s.product_funnel) p),
		f AS (
			SELECT kind, day, k1, k2, d.step, count(*) AS sessions,
				   count(*) FILTER (WHERE level >= d.step) AS reached
			FROM counted, clickstream.funnel_definition d GROUP BY 1, 2, 3, 4, 5),
		g AS (
			SELECT 'day', day, '', '', step, sessions, reached FROM clickstream.daily_funnel
			UNION ALL
			SELECT 'category', day, category, '', step, sessions, reached FROM clickstream.funnel_by_category
			UNION ALL
			SELECT 'product', day, product_id, category, step, sessions, reached FROM clickstream.product_funnel)
		SELECT (SELECT count(*) FROM (TABLE f EXCEPT ALL TABLE g) a)
			 + (SELECT count(*) FROM (TABLE g EXCEPT ALL TABLE f) b)}),
	'0', 'the funnel tables equal the sums over the recomputed sessions after the crashes');
ok($node->safe_psql('postgres', 'SELECT count(*) FROM clickstream.product_funnel') > 0,
	'the funnel tables are not empty');

$node->stop;
stop_broker($addr);
done_testing();
