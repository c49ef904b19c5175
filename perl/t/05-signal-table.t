#!/usr/bin/perl
# Prefork::Interp::Signals knows Linux's signal numbering without loading
# Config_heavy.pl (about 10 ms of a cold call): where it uses its own
# table, that table must be what perl's own Config says.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/../lib";

use Config;
use Test::More;
use Prefork::Interp::Signals ();
use Prefork::Interp::Syscall ();

plan skip_all => 'no table of our own on this architecture'
    unless Prefork::Interp::Syscall::known_linux();

my @names = split ' ', $Config{sig_name};
my @nums = split ' ', $Config{sig_num};
my %first;
for my $i (0..$#names) { $first{ $nums[$i] } //= $names[$i] }
for my $n (sort { $a <=> $b } keys %first) {
    is(Prefork::Interp::Signals::name_of($n), $first{$n},
       "signal $n is $first{$n}, as Config says");
}
done_testing;
