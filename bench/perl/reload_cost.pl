#!/usr/bin/perl
# Benchmark: what checking for changes costs a call, in the Perl library.
# With 500 modules loaded, a warm call with autoreload_inc on against one
# with it off (the test perl/t/42-reload-cost.t checks, without timing,
# that no module file is looked at per call).
#
# usage: bench/perl/reload_cost.pl   (needs target/release/prefork-interp)
#
# Two measures, each the median of interleaved samples, printed:
#  - the whole warm call through our client (the figure users see;
#    a stat per file is a small part of it, about 0.6 ms of 10 here);
#  - connect to greeting, raw: the server checks for changes before it
#    takes a connection in, so this is where a per-file check shows
#    (several times the time without one).

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/../../perl/t/lib";

use PfiTest qw(autoreload_pair);
use Socket qw(AF_UNIX SOCK_STREAM pack_sockaddr_un);
use Time::HiRes qw(time);

use constant MODULES => 500;
use constant CALLS => 40;        # warm calls per setting
use constant CONNECTS => 300;    # connect-to-greeting samples per setting

my ($fx, $script) = autoreload_pair(MODULES) or die "our client is not built\n";
my %fx = %$fx;
my %script = %$script;

sub median (@) {
    my @s = sort { $a <=> $b } @_;
    return $s[ int(@s / 2) ];
}

# Start both servers; make sure they are warm and have the modules.
my %sid;
foreach my $k (qw(on off)) {
    for (1 .. 3) {
        my $r = $fx{$k}->run($script{$k});
        $r->{out} eq MODULES . "\n" or die "$k: the modules are not loaded: $r->{err}";
    }
    my @s = $fx{$k}->sessions;
    @s == 1 or die "$k: not one server: @s";
}

# The whole warm call through the client.
my %call;
for (1 .. CALLS) {
    foreach my $k (qw(on off)) {
        my $t0 = time;
        my $r = $fx{$k}->run($script{$k});
        push @{ $call{$k} }, time - $t0;
        $r->{status} == 0 or die "call failed: $r->{err}";
    }
}

# Connect to greeting, bare: the socket in each run directory.
sub greet_time ($) {
    my ($path) = @_;
    socket(my $s, AF_UNIX, SOCK_STREAM, 0) or die "socket: $!";
    my $t0 = time;
    connect($s, pack_sockaddr_un($path)) or die "connect $path: $!";
    my $rbits = '';
    vec($rbits, fileno($s), 1) = 1;
    select($rbits, undef, undef, 5) > 0 or die "no greeting from $path";
    sysread($s, my $buf, 8) > 0 or die "no greeting from $path: $!";
    my $t = time - $t0;
    close $s;
    return $t;
}
my %sock = map {
    my @s = glob($fx{$_}->run_dir . '/s*');
    @s == 1 or die "run dir of $_: @s";
    ($_ => $s[0]);
} qw(on off);
my %greet;
for (1 .. CONNECTS) {
    push @{ $greet{$_} }, greet_time($sock{$_}) foreach qw(on off);
}

my %m = map {
    ($_ => { call => median(@{ $call{$_} }), greet => median(@{ $greet{$_} }) })
} qw(on off);
my $call_ratio = $m{on}{call} / $m{off}{call};
my $greet_ratio = $m{on}{greet} / $m{off}{greet};
printf("%d modules: warm call median %.2f ms with autoreload_inc,"
       . " %.2f ms without: ratio %.2f\n", MODULES,
       1000 * $m{on}{call}, 1000 * $m{off}{call}, $call_ratio);
printf("%d modules: connect to greeting median %.3f ms with"
       . " autoreload_inc, %.3f ms without: ratio %.2f\n", MODULES,
       1000 * $m{on}{greet}, 1000 * $m{off}{greet}, $greet_ratio);

foreach my $k (qw(on off)) {
    my @s = $fx{$k}->sessions;
    print "warning: $k: a server reloaded during the measurement\n" if @s != 1;
    $fx{$k}->cleanup;
}
