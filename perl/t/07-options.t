#!/usr/bin/perl
# The options and their defaults are those of docs/options.md, which the
# three libraries share: its ```text block lists each option and its
# default ("8*cpus": 8 per CPU the process may run on, at least 8).

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";
use lib "$FindBin::Bin/../lib";

use PfiTest qw(root_dir slurp);
use Prefork::Interp ();
use Prefork::Interp::Log ();
use Test::More;

my $doc = slurp(root_dir() . '/docs/options.md');
plan skip_all => 'no docs/options.md (not in the repository)'
    unless defined $doc;

my ($block) = $doc =~ m/^```text\n(.*?)^```$/ms;
ok(defined $block, 'docs/options.md has its text block') or BAIL_OUT('no block');
my %doc;
foreach my $line (split /\n/, $block) {
    my ($name, $value) = $line =~ m/\A(\w+) (\S+)\z/
        or fail("a line of the block: '$line'"), next;
    $doc{$name} = $value;
}
cmp_ok(scalar keys %doc, '>=', 10, 'the block lists the options');

# The CPUs this process may run on, as nproc(1) counts them (its
# affinity).
chomp(my $cpus = `nproc 2>/dev/null` // '');
$cpus = 0 unless $cpus =~ m/\A[0-9]+\z/;

my %opt = Prefork::Interp::_check_options();
is_deeply([ sort keys %opt ], [ sort keys %doc ],
          'the library has exactly the options of the table');

foreach my $name (sort keys %doc) {
    my ($want, $got) = ($doc{$name}, $opt{$name});
    if ($want eq '8*cpus') {
        SKIP: {
            skip 'nproc is missing', 1 unless $cpus;
            is($got, 8 * $cpus, "$name: 8 per CPU ($cpus)");
        }
        cmp_ok($got, '>=', 8, "$name: at least 8");
    } elsif ($want eq 'true') {
        ok($got, "$name: true");
    } elsif ($want eq 'false') {
        ok(!$got, "$name: false");
    } elsif ($want eq 'none') {
        ok(!defined $got || (ref $got eq 'ARRAY' && !@$got), "$name: none");
    } elsif ($want =~ m/\ALOG_[A-Z0-9]+\z/) {
        is(Prefork::Interp::Log::facility_code($got),
           Prefork::Interp::Log::facility_code($want), "$name: $want");
    } else {
        is($got, $want, "$name: $want");
    }
}

# The meanings the table gives that a default does not show.
my %given = Prefork::Interp::_check_options(
    idle_timeout => undef, log_facility => undef, autoreload_inc => 0,
    request_timeout => 0, max_servers => 0);
is($given{idle_timeout}, -1, 'idle_timeout undef: never (as negative)');
ok(!defined $given{log_facility}, 'log_facility undef: no syslog');
is($given{autoreload}, 0, 'autoreload_inc is autoreload (7.0.0\'s name)');
is($given{request_timeout}, 0, 'request_timeout 0 is taken (no limit)');
is($given{max_servers}, 0, 'max_servers 0 is taken (no limit)');
ok(!eval { Prefork::Interp::_check_options(no_such_option => 1); 1 },
   'an unknown option is an error');
like($@, qr/unknown option 'no_such_option'/, '... saying which');

done_testing;
