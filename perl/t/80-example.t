#!/usr/bin/perl
# The example script works, through both clients and standalone.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use PfiTest qw(client_kinds fixture root_dir describe_status);
use Time::HiRes ();
use Test::More;

my $example = root_dir() . '/examples/perl/primes.pl';
# The example is the repository's, not the distribution's.
plan skip_all => 'not in a prefork-interp checkout (no examples/)'
    unless -e root_dir() . '/Cargo.toml';
ok(-x $example, 'the example is executable');

foreach my $kind (client_kinds()) {
    subtest "$kind client" => sub {
        my $fx = fixture($kind) or return;
        $fx->adopt_script($example);
        my $t0 = Time::HiRes::time();
        my $r = $fx->run($example, args => [ 97, 91 ]);
        my $cold = Time::HiRes::time() - $t0;
        is(describe_status($r->{status}), 'exit 1', 'not all prime: exit 1');
        is($r->{out}, "97 is prime\n91 is not prime\n", 'output');
        $t0 = Time::HiRes::time();
        $r = $fx->run($example, args => [1999993]);
        my $took = Time::HiRes::time() - $t0;
        is(describe_status($r->{status}), 'exit 0', 'prime: exit 0');
        # The first call sieved (about a second); a warm call does not.
        cmp_ok($took, '<', $cold / 3,
               sprintf('a warm call skips the sieve (%.3f s, the first'
                       . ' call %.3f s)', $took, $cold));
        $r = $fx->run($example);
        is(describe_status($r->{status}), 'exit 2', 'no arguments: exit 2');
        like($r->{err}, qr/^usage: \Q$example\E NUMBER\.\.\.$/, 'usage');
        $fx->cleanup_ok;
    };
}

done_testing;
