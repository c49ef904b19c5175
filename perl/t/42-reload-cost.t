#!/usr/bin/perl
# Checking for changes must not grow with the number of files: with 500
# modules loaded and autoreload_inc on, every file is watched through
# inotify on its directory and none is looked at per call (the server
# says so in its log), and warm calls keep the same server.  No timing
# here: bench/perl/reload_cost.pl measures what the check costs.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use PfiTest qw(autoreload_pair);
use Test::More;

use constant MODULES => 500;
use constant CALLS => 20;        # warm calls per setting

my ($fx, $script) = autoreload_pair(MODULES) or do { done_testing; exit };
my %fx = %$fx;
my %script = %$script;

# Start both servers; make sure they are warm and have the modules.
my %sid;
foreach my $k (qw(on off)) {
    for (1 .. 3) {
        my $r = $fx{$k}->run($script{$k});
        is($r->{out}, MODULES . "\n", "$k: the modules are loaded")
            if $_ == 3;
    }
    my @s = $fx{$k}->sessions;
    is(scalar @s, 1, "$k: one server");
}

my ($files, $dirs, $polled) = $fx{on}->log_text
    =~ m/watching ([0-9]+) files through ([0-9]+) directories; ([0-9]+) checked on every call/;
ok(defined $files && $files >= MODULES, 'every module file is watched')
    or diag($fx{on}->log_text);
is($polled, 0, 'none is looked at on every call');
foreach my $k (qw(on off)) {
    for (1 .. CALLS) {
        my $r = $fx{$k}->run($script{$k});
        $r->{status} == 0 or die "call failed: $r->{err}";
    }
    is(scalar(my @s = $fx{$k}->sessions), 1, "$k: still the same server");
    $fx{$k}->cleanup_ok;
}
done_testing;
