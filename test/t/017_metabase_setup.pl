# docker/metabase/setup.py against a stand-in for Metabase's REST API
# (test/metabase/fake_api.py, which checks request bodies against Metabase's
# closed schemas): the first run creates the first user, the database as the
# reader login, the collection, one question per block of questions.sql
# with its SQL, the dashboard with every question on the grid, and the
# marts' foreign keys; a second run changes nothing; a changed question is
# updated alone; cards stored as pMBQL (newer Metabase) are read as well.
use strict;
use warnings;

use File::Basename qw(dirname);
use File::Spec;
use IPC::Run;
use JSON::PP;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);

my $root = File::Spec->rel2abs(File::Spec->catdir(dirname(__FILE__), '..', '..'));
my $python = -x '/usr/bin/python3' ? '/usr/bin/python3' : 'python3';
my $setup = "$root/docker/metabase/setup.py";
my $questions_file = "$root/docker/metabase/questions.sql";
my $tmp = PostgreSQL::Test::Utils::tempdir();
my $json = JSON::PP->new->utf8;

my %env = (MB_ADMIN_EMAIL => 'admin@example.com', MB_ADMIN_PASSWORD => 'a-Passw0rd',
	MB_DB_HOST => 'postgres', MB_DB_PORT => '5432', MB_DB_NAME => 'clickstream',
	MB_DB_USER => 'metabase', MB_DB_PASSWORD => 'reader-secret', MB_WAIT => '30',
	MB_SYNC_WAIT => '10');

my @fakes;
END { local $?; $_->kill_kill for @fakes; }

# Start a fake Metabase; returns its URL and log file.
sub start_fake
{
	my ($name, %fake_env) = @_;
	my ($port_file, $log) = ("$tmp/$name.port", "$tmp/$name.log");
	local @ENV{ keys %fake_env } = values %fake_env;
	push @fakes, IPC::Run::start([ $python, "$root/test/metabase/fake_api.py", $port_file, $log ],
		'>', "$tmp/$name.out", '2>&1');
	for (1 .. 100) { last if -e $port_file; usleep(100_000); }
	die "the fake Metabase did not start" unless -e $port_file;
	return ('http://127.0.0.1:' . slurp_file($port_file), $log);
}

# Run setup.py against $url; returns (exit code, output).
sub run_setup
{
	my ($url, @args) = @_;
	local @ENV{ keys %env } = values %env;
	local $ENV{MB_URL} = $url;
	my ($out, $err) = ('', '');
	IPC::Run::run([ $python, $setup, @args ], '>', \$out, '2>', \$err);
	return ($? >> 8, $out . $err);
}

# The requests of the log from line $from on: (all, the ones that change something).
sub requests
{
	my ($log, $from) = @_;
	my @all = map { $json->decode($_) } split /\n/, slurp_file($log);
	@all = @all[ $from .. $#all ];
	return (\@all, [ grep { $_->{method} ne 'GET' && $_->{path} ne '/api/session' } @all ]);
}

sub count_of
{
	my ($reqs, $method, $path_re) = @_;
	return scalar grep { $_->{method} eq $method && $_->{path} =~ $path_re } @$reqs;
}

# The questions as setup.py reads them (its own parser, through Python).
my ($qjson, $qerr) = ('', '');
IPC::Run::run([ $python, '-c',
		"import json, sys; sys.path.insert(0, '$root/docker/metabase'); import setup; "
		  . "print(json.dumps(setup.read_questions('$questions_file')))" ],
	'>', \$qjson, '2>', \$qerr)
  or die "reading the questions failed: $qerr";
my @questions = @{ $json->decode($qjson) };
ok(@questions >= 10, scalar(@questions) . ' questions in questions.sql');
my %question = map { ($_->{name} => $_) } @questions;

# --- a new Metabase ---------------------------------------------------------
my ($url, $log) = start_fake('legacy');
my ($rc, $out) = run_setup($url);
is($rc, 0, 'the first run succeeds') or diag($out);
my ($all, $writes) = requests($log, 0);
is(count_of($writes, 'POST', qr{^/api/setup$}), 1, 'it creates the first user');
my ($db) = grep { $_->{method} eq 'POST' && $_->{path} eq '/api/database' } @$writes;
is_deeply([ @{ $db->{body} }{qw(engine name)}, @{ $db->{body}{details} }{qw(host port dbname user password schema-filters-patterns)} ],
	[ 'postgres', 'Clickstream', 'postgres', 5432, 'clickstream', 'metabase', 'reader-secret', 'clickstream' ],
	'it adds the database as the reader login, schema clickstream only');
is(count_of($writes, 'POST', qr{^/api/database/\d+/sync_schema$}), 1, 'and syncs its schema');
is(count_of($writes, 'POST', qr{^/api/collection$}), 1, 'it creates the collection');
my @cards = grep { $_->{method} eq 'POST' && $_->{path} eq '/api/card' } @$writes;
is(scalar @cards, scalar @questions, 'one question per block of questions.sql');
my @wrong = grep {
	my $q = $question{ $_->{body}{name} };
	!$q || $_->{body}{dataset_query}{type} ne 'native'
	  || $_->{body}{dataset_query}{native}{query} ne $q->{sql}
	  || $_->{body}{display} ne ($q->{display} // 'table')
} @cards;
is(join(', ', map { $_->{body}{name} } @wrong), '', 'each with its SQL and display, as native questions');
is(count_of($writes, 'POST', qr{^/api/dashboard$}), 1, 'it creates the dashboard');
my ($layout) = grep { $_->{method} eq 'PUT' && $_->{path} =~ m{^/api/dashboard/\d+$} } @$writes;
my @dashcards = @{ $layout->{body}{dashcards} // [] };
is(scalar @dashcards, scalar @questions, 'with every question on it');
my (%cell, @clash);
for my $c (@dashcards)
{
	push @clash, "card $c->{card_id} beyond the grid" if $c->{col} + $c->{size_x} > 24;
	for my $r ($c->{row} .. $c->{row} + $c->{size_y} - 1)
	{
		for my $k ($c->{col} .. $c->{col} + $c->{size_x} - 1)
		{
			push @clash, "cards $cell{$r}{$k} and $c->{card_id} overlap" if $cell{$r}{$k};
			$cell{$r}{$k} = $c->{card_id};
		}
	}
}
is(join('; ', @clash), '', 'laid out on the 24-column grid without overlaps');
is(count_of($writes, 'PUT', qr{^/api/field/\d+$}), 6, "it marks the marts' foreign keys");

# --- again: nothing changes ----------------------------------------------------
my $seen = @$all;
($rc, $out) = run_setup($url);
is($rc, 0, 'a second run succeeds') or diag($out);
($all, $writes) = requests($log, $seen);
is(join(', ', map { "$_->{method} $_->{path}" } @$writes), '', 'a second run changes nothing');
is(count_of($all, 'POST', qr{^/api/session$}), 1, 'it logs in instead of setting up');
like($out, qr/done, 0 changes/, 'and says so');

# --- a question changed, one added ------------------------------------------------
my $changed = "$tmp/questions.sql";
my $text = slurp_file($questions_file);
$text =~ s/LIMIT 20;/LIMIT 25;/ or die 'no "LIMIT 20;" to change in questions.sql';
$text .= "\n-- name: Extra\n-- display: table\n-- size: 12x4\nSELECT day, revenue FROM clickstream.daily_metrics;\n";
open my $fh, '>', $changed or die $!;
print $fh $text;
close $fh;
$seen += @$all;
($rc, $out) = run_setup($url, '--questions', $changed);
is($rc, 0, 'a run with changed questions succeeds') or diag($out);
($all, $writes) = requests($log, $seen);
is(join(', ', sort map { "$_->{method} " . ($_->{path} =~ s/\d+/N/gr) } @$writes),
	'POST /api/card, PUT /api/card/N, PUT /api/dashboard/N',
	'it updates the changed question, adds the new one and lays the dashboard out again, nothing else');
my ($put) = grep { $_->{method} eq 'PUT' && $_->{path} =~ m{^/api/card/} } @$writes;
is_deeply([ sort keys %{ $put->{body} } ], ['dataset_query'], 'only the SQL of the changed question is sent');

# --- a wrong password is an error, not a new setup -----------------------------------
{
	local $env{MB_ADMIN_PASSWORD} = 'not-it';
	($rc, $out) = run_setup($url);
	isnt($rc, 0, 'a wrong admin password fails');
	like($out, qr{POST /api/session: HTTP 401}, 'with the answer of Metabase');
}

# --- a Metabase that stores native questions as pMBQL stages ---------------------
my ($url2, $log2) = start_fake('pmbql', FAKE_PMBQL => '1');
($rc, $out) = run_setup($url2);
is($rc, 0, 'the first run on a pMBQL Metabase succeeds') or diag($out);
($all, $writes) = requests($log2, 0);
$seen = @$all;
($rc, $out) = run_setup($url2);
($all, $writes) = requests($log2, $seen);
is(join(', ', map { "$_->{method} $_->{path}" } @$writes), '', 'there too, a second run changes nothing');

done_testing();
