# The provisioned Grafana dashboards have the shape of the Grafana they are
# provisioned to: each dashboard, and each panel's options and custom field
# config, is type-checked against the types of npm @grafana/schema (the
# dashboard and panel types of that Grafana version) with TypeScript's
# excess-property checks, so an unknown key, a misspelt option or a value of
# the wrong type fails.  The schema package and TypeScript are installed with
# npm into a cache directory outside the tree (never committed).
use strict;
use warnings;

use File::Basename qw(dirname basename);
use File::Path qw(make_path);
use File::Spec;
use IPC::Run;
use JSON::PP;
use PostgreSQL::Test::Utils;
use Test::More;

my $root = File::Spec->rel2abs(File::Spec->catdir(dirname(__FILE__), '..', '..'));

# the Grafana of docker-compose.yml, and its schema package
my $compose = slurp_file("$root/docker/docker-compose.yml");
my ($grafana) = $compose =~ m{GRAFANA_IMAGE:-grafana/grafana:([\d.]+)\}};
ok($grafana, "docker-compose.yml pins Grafana ($grafana)");

my ($npm_out, $npm_err) = ('', '');
plan skip_all => 'npm is not installed'
  unless IPC::Run::run([ 'npm', '--version' ], '>', \$npm_out, '2>', \$npm_err);

my $cache = $ENV{CS_NPM_CACHE} // File::Spec->tmpdir . "/clickstream-grafana-schema-$grafana";
make_path($cache);
if (!-e "$cache/node_modules/\@grafana/schema/package.json"
	|| slurp_file("$cache/node_modules/\@grafana/schema/package.json") !~ /"version": "\Q$grafana\E"/)
{
	my ($out, $err) = ('', '');
	my $ok = IPC::Run::run([ 'npm', 'install', '--prefix', $cache, '--no-audit', '--no-fund',
			'--loglevel=error', "\@grafana/schema\@$grafana", 'typescript@5' ],
		'>', \$out, '2>', \$err);
	ok($ok, "npm installs \@grafana/schema $grafana and TypeScript") or diag($err);
}

# TypeScript that states each dashboard, and each panel's options and custom
# field config, satisfies its type; enums are loosened to their string values
# (JSON holds strings), nothing else.
my %panel_types = (
	timeseries => [ 'TimeSeries', 1 ],
	stat       => [ 'Stat',       0 ],
	table      => [ 'Table',      1 ],
	barchart   => [ 'BarChart',   1 ],
	bargauge   => [ 'BarGauge',   0 ],
	piechart   => [ 'PieChart',   1 ]);
my @ts = ('import type { Dashboard } from "@grafana/schema";');
for my $type (sort keys %panel_types)
{
	my $n = $panel_types{$type}[0];
	push @ts, qq{import type * as $n from "\@grafana/schema/dist/esm/raw/composable/$type/panelcfg/x/${n}PanelCfg_types.gen";};
}
push @ts, 'type Loose<T> = T extends string ? `${T}` : T extends number | boolean | null | undefined ? T',
  '  : T extends Array<infer U> ? Array<Loose<U>> : T extends object ? { [K in keyof T]: Loose<T[K]> } : T;';
my $json = JSON::PP->new->utf8->canonical;
my @dashboards = sort glob("$root/docker/grafana/dashboards/*.json");
ok(@dashboards >= 2, 'dashboards to check');
for my $file (@dashboards)
{
	my $name = basename($file);
	my $d = $json->decode(slurp_file($file));
	push @ts, "// $name", '(' . $json->encode($d) . ') satisfies Loose<Dashboard>;';
	my @panels = map { $_->{type} eq 'row' ? @{ $_->{panels} // [] } : $_ } @{ $d->{panels} };
	for my $p (@panels)
	{
		next if $p->{type} eq 'row';
		my $t = $panel_types{ $p->{type} };
		ok($t, "$name / $p->{title}: panel type $p->{type} has a schema here") or next;
		push @ts, "// $name / $p->{title}",
		  '(' . $json->encode($p->{options} // {}) . ") satisfies Partial<Loose<$t->[0].Options>>;";
		push @ts, '(' . $json->encode($p->{fieldConfig}{defaults}{custom})
		  . ") satisfies Partial<Loose<$t->[0].FieldConfig>>;"
		  if $t->[1] && $p->{fieldConfig}{defaults}{custom};
	}
}
my $check = "$cache/check_" . $$ . '.ts';
open my $fh, '>', $check or die "$check: $!";
print $fh join("\n", @ts), "\n";
close $fh;

my ($out, $err) = ('', '');
IPC::Run::run([ 'node', "$cache/node_modules/typescript/bin/tsc", '--noEmit', '--strict',
		'--module', 'esnext', '--moduleResolution', 'bundler', '--target', 'es2020',
		'--skipLibCheck', $check ],
	'>', \$out, '2>', \$err);
is($out . $err, '', "the dashboards type-check against \@grafana/schema $grafana");
unlink $check;

done_testing();
