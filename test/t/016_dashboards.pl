# Every panel of every provisioned Grafana dashboard and every Metabase
# question, run the way the dashboards run them: a server with the stack's
# settings (docker/postgres/clickstream.conf) and init script, filled by the
# event generator through bronze and refreshed; Grafana's template variables
# (their default values) and macros expanded as Grafana expands them; each
# query run by a dashboard login, a member of clickstream_reader.  A panel
# fails on an error, on an empty result (the data gives every panel
# something to show), on a time series without a time column, or when it
# reads bronze or silver directly.  The slowest panels are printed with
# their times (printed, not asserted).
use strict;
use warnings;

use File::Basename qw(dirname basename);
use File::Spec;
use IPC::Run;
use JSON::PP;
use POSIX qw(floor strftime);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);
use FindBin;
use lib "$FindBin::Bin/../perl";
use ClickstreamTest;

my $root = File::Spec->rel2abs(File::Spec->catdir(dirname(__FILE__), '..', '..'));
my $docker = "$root/docker";

# --- the server: the stack's settings, the stack's init script --------------
my $node = PostgreSQL::Test::Cluster->new('dashboards');
$node->init(extra => [ '--encoding=UTF8', '--locale=C' ]);
$node->append_conf('postgresql.conf', <<"CONF");
include '$docker/postgres/clickstream.conf'
# the test's own: no broker (bronze is loaded by COPY), and thresholds that
# the small test traffic reaches, so that every panel has rows
clickstream.brokers = '127.0.0.1:9'
clickstream.enabled = off
clickstream.interest_min_views = 10
clickstream.interest_min_carts = 5
clickstream.interest_max_conversion = 0.5
CONF
$node->start;
$node->safe_psql('postgres', 'CREATE DATABASE clickstream');
my ($out, $err) = ('', '');
IPC::Run::run([ 'psql', '-X', '-q', '-d', $node->connstr('clickstream'),
		'-v', 'grafana_password=test-grafana', '-v', 'metabase_password=test-metabase',
		'-v', 'metabase_app_password=test-metabase-app', '-f', "$docker/postgres/init.sql" ],
	'>', \$out, '2>', \$err);
is($err, '', 'docker/postgres/init.sql runs without an error or a warning');
is($node->safe_psql('clickstream',
		"SELECT string_agg(rolname || ':' || rolsuper || ':' || pg_has_role(rolname, 'clickstream_reader', 'MEMBER'), ' ' ORDER BY rolname)
		 FROM pg_roles WHERE rolname IN ('grafana', 'metabase')"),
	'grafana:false:true metabase:false:true', 'the dashboard logins are plain members of clickstream_reader');
is($node->safe_psql('clickstream', "SELECT jobname FROM cron.job ORDER BY 1"),
	"clickstream-quality\nclickstream-refresh", 'the refresh and the quality checks are scheduled');

# --- data: two days of generated traffic up to now, through bronze ----------
my $now = int(time);
my $start = strftime('%Y-%m-%dT%H:%M:%SZ', gmtime($now - 2 * 86400));
my $copy = "$PostgreSQL::Test::Utils::tmp_check/events.copy";
my @faults = ('--dup-share', '0.01', '--bad-share', '0.01', '--late-share', '0.01', '--bad-kinds',
	'invalid_json,missing_field,wrong_type,negative_price,bad_timestamp,future_timestamp');
IPC::Run::run([ tool('eventgen'), '--output', $copy, '--format', 'copy', '--partitions', '4',
		'--fast', '--seed', '16', '--start', $start, '--rate', '0.5', '--count', 2 * 86400 / 2,
		'--users', '3000', '--products', '200', '--concurrency', '20', @faults ],
	'>', \$out, '2>', \$err)
  or die "eventgen failed: $err";
chmod 0644, $copy;
$node->safe_psql('clickstream', qq{
	COPY clickstream.bronze (kafka_topic, kafka_partition, kafka_offset, kafka_timestamp, kafka_key, payload)
	FROM '$copy';
	-- what the worker would have stored with those rows
	INSERT INTO clickstream.ingest_positions (topic, partition, next_offset)
	SELECT kafka_topic, kafka_partition, max(kafka_offset) + 1 FROM clickstream.bronze GROUP BY 1, 2;
	INSERT INTO clickstream.watermarks (topic, partition, durable_offset)
	SELECT topic, partition, 0 FROM clickstream.ingest_positions;
});
# refresh until bronze is drained (pg_cron may be running one too)
for (1 .. 600)
{
	$node->psql('clickstream', 'CALL clickstream.refresh()');
	last if $node->safe_psql('clickstream', 'SELECT count(*) FROM clickstream.bronze') eq '0';
	sleep 1;
}
is($node->safe_psql('clickstream', 'SELECT count(*) FROM clickstream.bronze'), '0', 'bronze is drained');
# the last minute again, left in bronze: the live views parse it on the fly
IPC::Run::run([ tool('eventgen'), '--output', $copy, '--format', 'copy', '--partitions', '1',
		'--topic', 'recent', '--fast', '--seed', '17', '--start', strftime('%Y-%m-%dT%H:%M:%SZ', gmtime(time - 60)),
		'--rate', '2', '--count', '100', '--users', '50' ],
	'>', \$out, '2>', \$err)
  or die "eventgen failed: $err";
$node->safe_psql('clickstream', qq{
	COPY clickstream.bronze (kafka_topic, kafka_partition, kafka_offset, kafka_timestamp, kafka_key, payload)
	FROM '$copy';
	INSERT INTO clickstream.ingest_positions (topic, partition, next_offset) VALUES ('recent', 0, 100);
	INSERT INTO clickstream.watermarks (topic, partition, durable_offset) VALUES ('recent', 0, 0);
});
$node->safe_psql('clickstream', 'ANALYZE');

# --- running a query as a dashboard login -----------------------------------
# (rows, column names, milliseconds, error) of $sql run by $user.
sub run_as
{
	my ($user, $sql) = @_;
	my ($o, $e) = ('', '');
	IPC::Run::run([ 'psql', '-X', '-A', '-F', "\t", '-P', 'footer=off', '-v', 'ON_ERROR_STOP=1',
			'-d', $node->connstr('clickstream') . " user=$user", '-c', '\timing on', '-c', $sql ],
		'>', \$o, '2>', \$e);
	my ($ms, @lines);
	for (split /\n/, $o)
	{
		if (/^Time: ([\d.]+) ms/) { $ms = $1; }
		elsif ($_ ne 'Timing is on.') { push @lines, $_; }
	}
	my @columns = @lines ? split(/\t/, shift @lines, -1) : ();
	return (\@lines, \@columns, $ms, $e);
}

# Relations $sql reads directly (views not expanded), from the dependencies
# of a temporary view over it; as the superuser, so that a read of a private
# table shows up as such.
sub reads_of
{
	my ($sql) = @_;
	my ($ret, $o, $e) = $node->psql('clickstream', qq{
		BEGIN;
		CREATE TEMP VIEW panel_query AS $sql;
		SELECT DISTINCT d.refobjid::regclass
		FROM pg_depend d JOIN pg_rewrite r ON r.oid = d.objid AND d.classid = 'pg_rewrite'::regclass
		WHERE r.ev_class = 'panel_query'::regclass AND d.refclassid = 'pg_class'::regclass
			AND d.refobjid <> 'panel_query'::regclass
		ORDER BY 1;
		ROLLBACK;});
	return $ret == 0 ? [ split /\n/, $o ] : [ "(cannot tell: $e)" ];
}

my %private = map { ("clickstream.$_" => 1) }
  qw(bronze dead_letters events event_ids ingest_positions watermarks touched event_sessions);
my @timings;

# Check one query of a dashboard: runs, has rows, has a time column when
# Grafana wants one, reads no raw table.
sub check_query
{
	my ($label, $user, $sql, $want_time) = @_;
	my $reads = reads_of($sql);
	my @raw = grep { $private{$_} || /^clickstream\.events_\d+$/ || /^\(cannot/ } @$reads;
	is(join(', ', @raw), '', "$label: reads no bronze, silver or dead letter directly");
	my ($rows, $columns, $ms, $e) = run_as($user, $sql);
	if (!is($e, '', "$label: runs as $user"))
	{
		diag("query was:\n$sql");
		return;
	}
	my @empty = grep { $node->safe_psql('clickstream', "SELECT NOT EXISTS (SELECT FROM $_)") eq 't' } @$reads;
	is(join(', ', @empty), '', "$label: the data gives it something to show");
	# a row of NULLs is "No data" too (an aggregate over nothing); the lag
	# is unknown without a broker (this test has none): the panel says so
	if ($label eq 'overview / Kafka lag')
	{
		is(join('|', @$rows), '', "$label: unknown, with no high watermark from a broker");
	}
	else
	{
		ok((grep { /[^\t]/ } @$rows), "$label: shows data") or diag("query was:\n$sql");
	}
	ok((grep { $_ eq 'time' } @$columns), "$label: has the time column of a time series")
	  if $want_time;
	push @timings, [ $ms // 0, $label ];
}

# --- Grafana -----------------------------------------------------------------
$now = int(time);	# the dashboards are opened now
my $json = JSON::PP->new->utf8;
my $ds_yaml = slurp_file("$docker/grafana/provisioning/datasources/clickstream.yaml");
my ($ds_uid) = $ds_yaml =~ /^\s+uid:\s*(\S+)/m;
my ($ds_user) = $ds_yaml =~ /^\s+user:\s*(\S+)/m;
is($ds_user, 'grafana', 'the data source logs in as grafana');

# A Grafana relative time ("now", "now-7d", "now-5m") in epoch seconds.
sub grafana_time
{
	my ($spec, $now) = @_;
	return $now if $spec eq 'now';
	my %unit = (s => 1, m => 60, h => 3600, d => 86400, w => 604800, M => 2592000, y => 31536000);
	$spec =~ /^now-(\d+)([smhdwMy])$/ or die "time $spec not handled by this test";
	return $now - $1 * $unit{$2};
}

# Grafana's interval for a range (rangeutil's roundInterval), in ms.
sub round_interval
{
	my ($ms) = @_;
	my @table = ([ 15, 10 ], [ 35, 20 ], [ 75, 50 ], [ 150, 100 ], [ 350, 200 ], [ 750, 500 ],
		[ 1500, 1000 ], [ 3500, 2000 ], [ 7500, 5000 ], [ 12500, 10000 ], [ 17500, 15000 ],
		[ 25000, 20000 ], [ 45000, 30000 ], [ 90000, 60000 ], [ 210000, 120000 ],
		[ 450000, 300000 ], [ 750000, 600000 ], [ 1050000, 900000 ], [ 1500000, 1200000 ],
		[ 2700000, 1800000 ], [ 5400000, 3600000 ], [ 9000000, 7200000 ], [ 16200000, 10800000 ],
		[ 32400000, 21600000 ], [ 86400000, 43200000 ], [ 604800000, 86400000 ],
		[ 1814400000, 604800000 ], [ 3628800000, 2592000000 ]);
	for (@table) { return $_->[1] if $ms < $_->[0]; }
	return 31536000000;
}

# A duration like Grafana's backend formats it (gtime.FormatInterval).
sub format_interval
{
	my ($ms) = @_;
	for ([ 31536000000, 'y' ], [ 86400000, 'd' ], [ 3600000, 'h' ], [ 60000, 'm' ], [ 1000, 's' ])
	{
		return int($ms / $_->[0]) . $_->[1] if $ms >= $_->[0];
	}
	return "${ms}ms";
}

# Seconds of a Grafana interval ("1d", "10m", "30s").
sub interval_seconds
{
	my ($s) = @_;
	$s =~ s/^'|'$//g;
	my %unit = (ms => 0.001, s => 1, m => 60, h => 3600, d => 86400, w => 604800, M => 2592000, y => 31536000);
	$s =~ /^(\d+)(ms|[smhdwMy])$/ or die "interval $s not handled by this test";
	return $1 * $unit{$2};
}

sub rfc3339 { return strftime('%Y-%m-%dT%H:%M:%SZ', gmtime($_[0])); }

# The front end: template variables and built-in variables, with the SQL
# data sources' formatting of a single value (quotes doubled, no quoting).
sub grafana_variables
{
	my ($sql, $vars, $builtin) = @_;
	my $value = sub {
		my ($name, $format) = @_;
		my $v = $builtin->{$name} // $vars->{$name};
		return undef unless defined $v;
		$format //= '';
		return $v if $format eq 'raw' || exists $builtin->{$name};
		(my $q = $v) =~ s/'/''/g;
		return "'$q'" if $format eq 'sqlstring' || $format eq 'singlequote';
		return $v if $format eq 'csv';
		die "variable format $format not handled by this test" if $format ne '';
		return $q;
	};
	$sql =~ s{\$(\w+)|\[\[(\w+?)(?::(\w+))?\]\]|\$\{(\w+)(?::([^\}]+))?\}}{
		my ($name, $format) = defined $1 ? ($1) : defined $2 ? ($2, $3) : ($4, $5);
		my $v = $value->($name, $format);
		defined $v ? $v : $&;
	}ge;
	return $sql;
}

# The back end: global substitutions, then the PostgreSQL macros.
sub grafana_macros
{
	my ($sql, $from, $to, $interval_ms) = @_;
	my $interval = format_interval($interval_ms);
	$sql =~ s/\$__interval_ms/$interval_ms/g;
	$sql =~ s/\$__interval/$interval/g;
	$sql =~ s/\$__unixEpochFrom\(\)/$from/g;
	$sql =~ s/\$__unixEpochTo\(\)/$to/g;
	my ($f, $t) = (rfc3339($from), rfc3339($to));
	my $macro = sub {
		my ($name, $argtext, $next) = @_;
		my @args = map { s/^\s+|\s+$//gr } split /,/, $argtext, -1;
		# before Grafana 5.3, $__timeGroup(...), meant $__timeGroupAlias
		$name = '__timeGroupAlias' if $name eq '__timeGroup' && $next eq ',';
		return "$args[0] AS \"time\"" if $name eq '__time';
		return "extract(epoch from $args[0]) as \"time\"" if $name eq '__timeEpoch';
		return "$args[0] BETWEEN '$f' AND '$t'" if $name eq '__timeFilter';
		return "'$f'" if $name eq '__timeFrom';
		return "'$t'" if $name eq '__timeTo';
		if ($name eq '__timeGroup' || $name eq '__timeGroupAlias')
		{
			my $s = interval_seconds($args[1]);
			return "floor(extract(epoch from $args[0])/$s)*$s"
			  . ($name eq '__timeGroupAlias' ? ' AS "time"' : '');
		}
		return "$args[0] >= $from AND $args[0] <= $to" if $name eq '__unixEpochFilter';
		die "macro \$$name not handled by this test";
	};
	$sql =~ s/\$([_a-zA-Z0-9]+)\(([^\)]*)\)(?=(.?))/$macro->($1, $2, $3)/gse;
	return $sql;
}

my @dashboards = sort glob("$docker/grafana/dashboards/*.json");
ok(@dashboards >= 2, 'dashboards are provisioned');
my $panels = 0;
for my $file (@dashboards)
{
	my $d = $json->decode(slurp_file($file));
	my $name = basename($file, '.json');
	my $to = $now;
	my $from = grafana_time($d->{time}{from}, $now);
	$to = grafana_time($d->{time}{to}, $now);
	my %vars;
	# variables in order, each with the ones before it; the default is the
	# saved current value if the query still offers it, else its first value
	for my $v (@{ $d->{templating}{list} // [] })
	{
		die "variable type $v->{type} not handled by this test" if $v->{type} ne 'query';
		is($v->{datasource}{uid}, $ds_uid, "$name \$$v->{name}: reads the provisioned data source");
		my $q = ref $v->{query} ? $v->{query}{rawSql} // $v->{query}{query} : $v->{query};
		my $sql = grafana_macros(grafana_variables($q, \%vars, {}), $from, $to, 60000);
		my ($rows, $columns, $ms, $e) = run_as($ds_user, $sql);
		is($e, '', "$name \$$v->{name}: its query runs");
		ok(@$rows > 0, "$name \$$v->{name}: offers values");
		my ($col) = grep { $columns->[$_] eq '__value' } 0 .. $#$columns;
		my @values = map { (split /\t/, $_, -1)[ $col // 0 ] } @$rows;
		my $current = $v->{current}{value};
		$vars{ $v->{name} } = defined $current && grep({ $_ eq $current } @values) ? $current : $values[0];
		push @timings, [ $ms // 0, "$name \$$v->{name}" ];
	}
	my @flat = map { $_->{type} eq 'row' ? @{ $_->{panels} // [] } : $_ } @{ $d->{panels} };
	for my $p (@flat)
	{
		next if $p->{type} eq 'row' || !$p->{targets};
		my $label = "$name / $p->{title}";
		my ($pf, $pt) = ($from, $to);
		($pf, $pt) = (grafana_time("now-$p->{timeFrom}", $now), $now) if $p->{timeFrom};
		# $__interval: the range over the data points (about a panel's width),
		# never below the panel's or the SQL data source's minimum (1m)
		my $interval = round_interval(($pt - $pf) * 1000 / ($p->{maxDataPoints} // 1000));
		my $min = 1000 * interval_seconds($p->{interval} // '1m');
		$interval = $min if $interval < $min;
		my %builtin = (__interval => format_interval($interval), __interval_ms => $interval,
			__from => $pf * 1000, __to => $pt * 1000, __range_s => $pt - $pf);
		for my $t (@{ $p->{targets} })
		{
			next if $t->{hide};
			$panels++;
			is($t->{datasource}{uid} // $p->{datasource}{uid}, $ds_uid,
				"$label: reads the provisioned data source");
			like($t->{format}, qr/^(table|time_series)$/, "$label: a format Grafana knows");
			my $sql = grafana_macros(grafana_variables($t->{rawSql}, \%vars, \%builtin),
				$pf, $pt, $interval);
			check_query($label, $ds_user, $sql, $t->{format} eq 'time_series');
		}
	}
}
ok($panels >= 30, "$panels Grafana queries checked");

# --- Metabase ------------------------------------------------------------------
# docker/metabase/questions.sql: blocks of "-- key: value" lines, then the SQL
# up to a line ending with ";" (the format docker/metabase/setup.py reads).
my @questions;
my $current;
for my $line (split /\n/, slurp_file("$docker/metabase/questions.sql"))
{
	if ($line =~ /^-- (\w+):\s*(.*)$/ && (!$current || !defined $current->{sql}))
	{
		$current = { sql => undef } if $1 eq 'name';
		$current->{$1} = $2 if $current;
		next;
	}
	next unless $current;
	if (defined $current->{sql} || $line =~ /\S/)
	{
		$current->{sql} = defined $current->{sql} ? "$current->{sql}\n$line" : $line;
		if ($line =~ /;\s*$/)
		{
			$current->{sql} =~ s/;\s*$//;
			push @questions, $current;
			undef $current;
		}
	}
}
ok(@questions >= 10, scalar(@questions) . ' Metabase questions');
for my $q (@questions)
{
	unlike($q->{sql}, qr/\{\{|\[\[/, "metabase / $q->{name}: no template tags (run as written)");
	check_query("metabase / $q->{name}", 'metabase', $q->{sql}, 0);
}

# --- the slowest ----------------------------------------------------------------
my @slow = sort { $b->[0] <=> $a->[0] } @timings;
diag(sprintf('slowest of %d dashboard queries (ms, as the dashboard login):', scalar @timings));
diag(sprintf('%9.1f  %s', @$_)) for @slow[ 0 .. ($#slow < 9 ? $#slow : 9) ];
diag(sprintf('median %.1f ms, %d of %d under 10 ms', $slow[ $#slow / 2 ][0],
		scalar(grep { $_->[0] < 10 } @slow), scalar @slow));

$node->stop;
done_testing();
