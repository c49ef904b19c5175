#!/usr/bin/perl
# The default concurrency limit comes from the machine (8 calls per CPU
# the process may run on, so at least 8; 7.0.0: 4): 8 callers at once all
# run at once, as direct runs would.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use PfiTest qw(fixture);
use Test::More;

foreach my $kind (qw(ours)) {
    my $fx = fixture($kind) or next;
    # Long enough that all 8 have been started before the first ends.
    my $script = $fx->script('busy.pl', body => <<'EOT');
use Time::HiRes ();
my $started = Time::HiRes::time();
Time::HiRes::sleep($ARGV[0] // 0);
printf "%.6f %.6f\n", $started, Time::HiRes::time();
EOT
    is($fx->run($script, args => ['0'])->{status}, 0, 'server started');
    my @calls = map { $fx->start($script, args => ['4']) } 1 .. 8;
    my (@starts, @ends);
    foreach my $h (@calls) {
        my $r = $fx->finish($h, 30);
        is($r->{status}, 0, 'call ok') or diag($r->{err});
        my ($s, $e) = split ' ', $r->{out} // '';
        push @starts, $s // 0;
        push @ends, $e // 0;
    }
    my ($last_start) = sort { $b <=> $a } @starts;
    my ($first_end) = sort { $a <=> $b } @ends;
    cmp_ok($last_start, '<', $first_end, 'all 8 calls ran at once');
    is(scalar(my @s = $fx->sessions), 1, 'one server');
    ok($fx->cleanup_ok, 'nothing left running');
}
done_testing;
