#!/usr/bin/perl
#
# update_script.pl: assemble an update script from its template.
#
#   perl tools/update_script.pl OLD_RELEASE_SCRIPT TEMPLATE LAYER... > OUT
#
# An update script must bring an installed release to what the install
# script of the current version makes (test/t/008_update.pl compares the
# catalogs).  Writing every changed function and view twice, once in
# sql/install and once in the update script, goes stale with the next
# change; so the update script is assembled while the version is being
# developed:
#
#   * what is code (functions, procedures, views) and what describes
#     objects (COMMENT, GRANT, REVOKE, pg_extension_config_dump, DO blocks)
#     is taken from the install layers as it is, CREATE becoming CREATE OR
#     REPLACE;
#   * objects that hold data or that CREATE cannot replace (tables,
#     sequences, types, indexes, triggers, event triggers) and the rows the
#     install script inserts are taken from the layers only when the old
#     release did not have them;
#   * everything else, what an update must do by hand (ALTER TABLE, moving
#     rows, dropping what is gone or what OR REPLACE cannot change), is
#     written in the template, in sections placed before or after a layer's
#     statements:
#
#       -- @@ before 50_sessions
#       -- @@ after 50_sessions
#
#     Text before the first section is the script's head; a section named
#     "end" comes last.
#
# When the version is released the assembled script is committed as it is
# and its template removed: the layers go on changing, a released update
# script does not.
use strict;
use warnings;

die "usage: $0 OLD_RELEASE_SCRIPT TEMPLATE LAYER...\n" if @ARGV < 3;
my ($old_file, $template_file, @layers) = @ARGV;

sub slurp
{
	my ($f) = @_;
	open(my $fh, '<', $f) or die "$f: $!\n";
	local $/;
	my $s = <$fh>;
	close $fh;
	return $s;
}

# Split SQL text into statements, each with the comments and blank lines
# before it; the psql \echo guard line is dropped.
sub statements
{
	my ($sql) = @_;
	$sql =~ s/^\\echo [^\n]*\n//mg;
	my @out;
	my $cur = '';
	pos($sql) = 0;
	while (pos($sql) < length($sql))
	{
		if ($sql =~ /\G(--[^\n]*\n?)/gc
			|| $sql =~ m{\G(/\*.*?\*/)}gcs
			|| $sql =~ /\G([Ee]'(?:[^'\\]|\\.|'')*')/gcs
			|| $sql =~ /\G('(?:[^']|'')*')/gcs
			|| $sql =~ /\G("(?:[^"]|"")*")/gcs
			|| $sql =~ /\G(\$([A-Za-z_]\w*|)\$.*?\$\2\$)/gcs
			|| $sql =~ /\G([^;'"\$\-\/Ee]+)/gc
			|| $sql =~ /\G([^;])/gcs)
		{
			$cur .= $1;
		}
		elsif ($sql =~ /\G;/gc)
		{
			push @out, "$cur;";
			$cur = '';
		}
	}
	push @out, $cur if $cur =~ /\S/;
	return @out;
}

# The statement without its leading comments and whitespace.
sub body
{
	my ($st) = @_;
	$st =~ s/^(?:\s+|--[^\n]*\n)*//;
	return $st;
}

my $ident = qr/(?:"(?:[^"]|"")*"|[A-Za-z_][\w\$]*)/;
my $qname = qr/$ident(?:\.$ident)?/;

# What a statement makes: [kind, name], kind one of table, sequence, type,
# index, trigger, event_trigger, rows (an INSERT), code (function,
# procedure, view), or undef.
sub makes
{
	my $b = body($_[0]);
	return ['table', lc $1]
	  if $b =~ /^CREATE\s+(?:UNLOGGED\s+)?TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?($qname)/i;
	return ['sequence', lc $1] if $b =~ /^CREATE\s+SEQUENCE\s+(?:IF\s+NOT\s+EXISTS\s+)?($qname)/i;
	return ['type', lc $1] if $b =~ /^CREATE\s+TYPE\s+($qname)/i;
	return ['index', lc $1]
	  if $b =~ /^CREATE\s+(?:UNIQUE\s+)?INDEX\s+(?:IF\s+NOT\s+EXISTS\s+)?($ident)/i;
	return ['trigger', lc "$1 on $2"]
	  if $b =~ /^CREATE\s+(?:CONSTRAINT\s+)?TRIGGER\s+($ident)\s.*?\sON\s+($qname)/is;
	return ['event_trigger', lc $1] if $b =~ /^CREATE\s+EVENT\s+TRIGGER\s+($ident)/i;
	return ['rows', lc $1] if $b =~ /^INSERT\s+INTO\s+($qname)/i;
	return ['code', lc $2]
	  if $b =~ /^CREATE\s+(?:OR\s+REPLACE\s+)?(FUNCTION|PROCEDURE|VIEW|AGGREGATE)\s+($qname)/i;
	return undef;
}

# What the old release has.
my %old;
for my $st (statements(slurp($old_file)))
{
	my $m = makes($st);
	$old{"$m->[0] $m->[1]"} = 1 if $m;
}

# The template's sections.
my %section;
my $head = '';
my $name;
for my $line (split /^/, slurp($template_file))
{
	if ($line =~ /^-- \@\@ (before|after) (\S+)\s*$/ || $line =~ /^-- \@\@ (end)()\s*$/)
	{
		$name = $1 eq 'end' ? 'end' : "$1 $2";
		die "$template_file: section \"$name\" twice\n" if exists $section{$name};
		$section{$name} = '';
		next;
	}
	if (defined $name) { $section{$name} .= $line; }
	else { $head .= $line; }
}
my %used;

print $head;
for my $layer (@layers)
{
	(my $short = $layer) =~ s{.*/}{};
	$short =~ s/\.sql$//;
	print "\n-- $short " . ('=' x (74 - length($short))) . "\n";
	for my $when ('before', 'after')
	{
		my $text = $section{"$when $short"};
		if ($when eq 'after')
		{
			print "\n-- $short: what it defines\n";
			for my $st (statements(slurp($layer)))
			{
				my $m = makes($st);
				if ($m && $m->[0] eq 'code')
				{
					$st =~ s/^((?:\s+|--[^\n]*\n)*)CREATE\s+(?!OR\s+REPLACE)/$1CREATE OR REPLACE /i;
				}
				elsif ($m && $old{"$m->[0] $m->[1]"})
				{
					next;    # the old release has it: the template changes it
				}
				print $st;
			}
			print "\n";
		}
		next unless defined $text;
		$used{"$when $short"} = 1;
		print "\n-- $short: by hand ($when its definitions)\n$text";
	}
}
if (defined $section{end})
{
	$used{end} = 1;
	print "\n-- by hand, last\n$section{end}";
}
for my $s (sort keys %section)
{
	die "$template_file: section \"$s\" names no layer\n" unless $used{$s};
}
