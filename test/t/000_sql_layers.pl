# The install script's layers (sql/install/*.sql, concatenated in name order)
# are in dependency order: code in a layer refers only to objects created by
# that layer or an earlier one.  Documentation (comments, COMMENT ON) may
# mention later objects; quoted names (lock keys) are not references.
use strict;
use warnings;

use File::Basename qw(dirname basename);
use File::Spec;
use PostgreSQL::Test::Utils;
use Test::More;

my $root = File::Spec->rel2abs(File::Spec->catdir(dirname(__FILE__), '..', '..'));
my @files = sort glob("$root/sql/install/*.sql");
ok(@files >= 5, 'install layers found');

my (%defined_in, %code);
for my $i (0 .. $#files)
{
	open my $fh, '<', $files[$i] or die "$files[$i]: $!";
	my $text = do { local $/; <$fh> };
	close $fh;
	while ($text =~ /CREATE\s+(?:OR\s+REPLACE\s+)?(?:UNLOGGED\s+)?(?:TABLE|VIEW|FUNCTION|PROCEDURE|AGGREGATE|TYPE|SEQUENCE)\s+(?:IF\s+NOT\s+EXISTS\s+)?clickstream\.(\w+)/gi)
	{
		$defined_in{$1} //= $i;
	}
	# code only: drop COMMENT ON statements and -- comments
	$text =~ s/COMMENT ON [^;]*?IS\s*(?:E?'(?:[^']|'')*'\s*)+;//gs;
	$text =~ s/--[^\n]*//g;
	$code{$i} = $text;
}

for my $i (0 .. $#files)
{
	my @late;
	while ($code{$i} =~ /(['"]?)clickstream\.(\w+)/g)
	{
		next if $1 ne '';
		my $name = $2;
		push @late, "clickstream.$name (" . basename($files[ $defined_in{$name} ]) . ')'
		  if defined $defined_in{$name} && $defined_in{$name} > $i;
	}
	my %seen;
	@late = grep { !$seen{$_}++ } @late;
	is(join(', ', @late), '', basename($files[$i]) . ' uses only its own and earlier layers');
}

done_testing();
