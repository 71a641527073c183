# docker/docker-compose.yml without a Docker engine: `docker-compose config`
# (Debian's docker-compose) accepts it with the example .env and refuses it
# without the passwords; the services are there with health checks; Kafka
# runs in KRaft mode; PostgreSQL is built from this repository and mounts
# the settings file the dashboards' test uses; Grafana and Metabase read as
# the reader's members; every file a Dockerfile copies or the stack mounts
# exists; the README shows the command.
use strict;
use warnings;

use Cwd qw(realpath);
use File::Basename qw(dirname);
use IPC::Run;
use JSON::PP;
use PostgreSQL::Test::Utils;
use Test::More;

my $root = realpath(dirname(__FILE__) . '/../..');
my $docker = "$root/docker";
my $python = -x '/usr/bin/python3' ? '/usr/bin/python3' : 'python3';

my ($out, $err) = ('', '');
my $ok = IPC::Run::run([ 'docker-compose', '-f', "$docker/docker-compose.yml",
		'--env-file', "$docker/.env.example", 'config' ], '>', \$out, '2>', \$err);
ok($ok, 'docker-compose config accepts the stack with the example .env') or diag($err);

# the resolved file, as data (PyYAML comes with docker-compose)
my ($js, $yerr) = ('', '');
IPC::Run::run([ $python, '-c', 'import json, sys, yaml; print(json.dumps(yaml.safe_load(sys.stdin)))' ],
	'<', \$out, '>', \$js, '2>', \$yerr)
  or die "cannot read the resolved compose file: $yerr";
my $c = JSON::PP->new->decode($js);
my $s = $c->{services};

is(join(' ', sort keys %$s), 'eventgen grafana kafka kafka-init metabase metabase-setup postgres',
	'the services of the stack');
for my $name (qw(kafka postgres eventgen grafana metabase))
{
	ok($s->{$name}{healthcheck}{test}, "$name has a health check");
}
is($s->{grafana}{depends_on}{postgres}{condition}, 'service_healthy', 'Grafana waits for a healthy PostgreSQL');
is($s->{'metabase-setup'}{depends_on}{metabase}{condition}, 'service_healthy', 'the Metabase setup waits for Metabase');
is($s->{eventgen}{depends_on}{'kafka-init'}{condition}, 'service_completed_successfully',
	'the generator waits for the topic');

# Kafka: KRaft, one broker that is its own controller, no ZooKeeper
my $k = $s->{kafka}{environment};
is($k->{KAFKA_PROCESS_ROLES}, 'broker,controller', 'Kafka runs in KRaft mode (broker and controller)');
ok(!grep({ /zookeeper/i } keys %$s, keys %$k), 'no ZooKeeper');

# PostgreSQL: built here, with the settings file the tests use
is($s->{postgres}{build}{dockerfile}, 'docker/postgres/Dockerfile', 'PostgreSQL is built from this repository');
my @pg_mounts = @{ $s->{postgres}{volumes} };
ok((grep { m{^\Q$docker\E/postgres/clickstream\.conf:/etc/postgresql/clickstream\.conf} } @pg_mounts),
	'it mounts docker/postgres/clickstream.conf');
like(slurp_file("$docker/postgres/Dockerfile"), qr{include = '/etc/postgresql/clickstream\.conf'},
	'and its postgresql.conf includes it');
like(slurp_file("$root/test/t/016_dashboards.pl"), qr{include '\$docker/postgres/clickstream\.conf'},
	'the same file the dashboards test runs its server with');
like(slurp_file("$docker/postgres/clickstream.conf"), qr/^shared_preload_libraries = 'clickstream,pg_cron'/m,
	'with the extension and pg_cron preloaded');
ok((grep { m{/postgres/init\.sql:/etc/postgresql/clickstream-init\.sql} } @pg_mounts)
	  && slurp_file("$docker/postgres/initdb/10-clickstream.sh") =~ m{/etc/postgresql/clickstream-init\.sql},
	'the first start runs docker/postgres/init.sql');
ok(-x "$docker/postgres/initdb/10-clickstream.sh" && -x "$docker/eventgen/entrypoint.sh",
	'the scripts the images run are executable');

# the dashboards log in as members of the reader role
my $ds = slurp_file("$docker/grafana/provisioning/datasources/clickstream.yaml");
like($ds, qr/^\s+user: grafana$/m, "Grafana's data source is the grafana login");
like(slurp_file("$docker/postgres/init.sql"), qr/CREATE ROLE grafana LOGIN .* IN ROLE clickstream_reader;/,
	'a member of clickstream_reader');
like(slurp_file("$docker/postgres/init.sql"), qr/CREATE ROLE metabase LOGIN .* IN ROLE clickstream_reader;/,
	"so is Metabase's");
is($s->{'metabase-setup'}{environment}{MB_DB_USER}, 'metabase', 'which the Metabase setup uses');

# Grafana's provisioning: mounted where Grafana reads it, dashboards where the provider looks
my %mounts = map { my ($from, $to) = split /:/; ($to => $from) } @{ $s->{grafana}{volumes} };
is($mounts{'/etc/grafana/provisioning'}, "$docker/grafana/provisioning", 'Grafana reads the provisioning files');
my ($path) = slurp_file("$docker/grafana/provisioning/dashboards/clickstream.yaml") =~ /^\s+path: (\S+)$/m;
is($mounts{$path}, "$docker/grafana/dashboards", "the dashboard provider's path holds the dashboards");
my $home = $s->{grafana}{environment}{GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH};
ok($home =~ m{^\Q$path\E/(.+)$} && -e "$docker/grafana/dashboards/$1", 'the home dashboard is one of them');

# every file a Dockerfile copies is in its build context
for my $name (qw(postgres eventgen))
{
	my $context = $s->{$name}{build}{context};
	my $dockerfile = slurp_file("$context/$s->{$name}{build}{dockerfile}");
	my @missing = grep { !-e "$context/$_" }
	  map { my @w = split ' '; @w[ 0 .. $#w - 1 ] }
	  grep { !/--from=/ } $dockerfile =~ /^COPY\s+(.*)$/mg;
	is(join(', ', @missing), '', "$name: every file its Dockerfile copies exists");
}

# the passwords are required, not defaulted
my $empty = PostgreSQL::Test::Utils::tempdir() . '/empty.env';
open my $fh, '>', $empty or die "$empty: $!";
close $fh;
($ok) = IPC::Run::run([ 'docker-compose', '-f', "$docker/docker-compose.yml", '--env-file', $empty,
		'config' ], '>', \$out, '2>', \$err);
ok(!$ok && $err =~ /set POSTGRES_PASSWORD in docker\/.env/, 'without the passwords the stack is refused');

# the one command, with the ports to open
my $readme = slurp_file("$root/README.md");
like($readme, qr{docker-compose -f docker/docker-compose\.yml up -d --build}, 'the README shows the command');
like($readme, qr/3000.*3001/s, 'and the ports');

done_testing();
