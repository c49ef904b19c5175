#!/usr/bin/perl
# Warm "exit 0" calls through a prefork-interp client, against this
# project's Perl library (Prefork::Interp) and against chiark-utils'
# Proc::Prefork::Interp, side by side: how many calls came back with a
# status other than 0, and the median latency.
#
# usage: bench/perl/warm-exit0.pl [--client PATH] [--runs N]
#
# Default client: target/release/prefork-interp in this repository
# (build it with "cargo build --release").  The C client,
# /usr/bin/prefork-interp, works too.  Needs hyperfine, and
# Proc::Prefork::Interp (Debian: chiark-scripts) for the comparison.
#
# Each library gets its own script in a private temp dir, so each has
# its own server.  Our client keeps its sockets in that dir too
# (PREFORK_INTERP_RUN_DIR); the C client ignores that variable and
# uses ~/.prefork-interp.  Both servers are stopped with --kill at the
# end.

use strict;
use warnings;

use Cwd qw(abs_path);
use File::Basename qw(dirname);
use File::Temp qw(tempdir);
use Getopt::Long qw(GetOptions);
use JSON::PP ();

my $root = abs_path(dirname(__FILE__) . '/../..');
my $client = "$root/target/release/prefork-interp";
my $runs = 1000;
GetOptions('client=s' => \$client, 'runs=i' => \$runs)
    or die "usage: $0 [--client PATH] [--runs N]\n";
-x $client or die "$0: client $client is not executable"
    . " (build it with \"cargo build --release\", or give --client)\n";
my $hyperfine = '/usr/bin/hyperfine';
-x $hyperfine or $hyperfine = 'hyperfine';

my $dir = abs_path(tempdir('pfi-bench-pl-XXXXXX', TMPDIR => 1,
                           CLEANUP => 1));
$ENV{PREFORK_INTERP_RUN_DIR} = "$dir/run";
chdir $dir or die "chdir $dir: $!\n";

my %libraries = (
    'Prefork::Interp (ours)' => <<"EOF",
use lib '$root/perl/lib';
use Prefork::Interp;
prefork_initialisation_complete(log_facility => '');
exit 0;
EOF
    'Proc::Prefork::Interp (Debian)' => <<'EOF',
use Proc::Prefork::Interp;
prefork_initialisation_complete(log_facility => '');
exit 0;
EOF
);

my @results;
my $n = 0;
foreach my $name (sort keys %libraries) {
    my $script = "$dir/lib" . ++$n . '.pl';
    open(my $fh, '>', $script) or die "write $script: $!\n";
    print $fh $libraries{$name};
    close $fh or die "write $script: $!\n";

    my ($module) = $libraries{$name} =~ m/^use (\S+::Interp);/m;
    if (system('perl', "-I$root/perl/lib", "-M$module", '-e', '1') != 0) {
        push @results, [ $name, 'not installed', '', '' ];
        next;
    }
    my @cmd = ($client, '-U', 'perl', $script);
    # The first call starts the server: keep it out of the figures.
    # (Its status is not checked: with 7.0.0's library it is often 130.)
    system(@cmd);
    my $json = "$dir/result$n.json";
    my $log = "$dir/hyperfine$n.log";
    if (system("$hyperfine --shell=none --runs $runs --warmup 5"
               . " --ignore-failure --style none --export-json $json"
               . " '@cmd' >$log 2>&1") != 0) {
        die "$0: hyperfine failed:\n", `cat $log`;
    }
    open(my $jfh, '<', $json) or die "read $json: $!\n";
    my $data = JSON::PP::decode_json(do { local $/; <$jfh> });
    my $res = $data->{results}[0];
    my @codes = @{ $res->{exit_codes} };
    my $wrong = grep { !defined $_ || $_ != 0 } @codes;
    my %by;
    $by{ $_ // 'signal' }++ foreach grep { !defined $_ || $_ != 0 } @codes;
    push @results, [ $name, "$wrong of " . scalar(@codes),
                     sprintf('%.2f ms', $res->{median} * 1000),
                     join(', ', map { "$by{$_} x exit $_" } sort keys %by) ];
    system($client, '--kill', '-U', 'perl', $script);
}

printf "%d consecutive warm \"exit 0\" calls through %s\n\n", $runs, $client;
printf "%-32s %-16s %-12s %s\n", 'library', 'wrong status', 'median', 'wrong ones';
printf "%-32s %-16s %-12s %s\n", @$_ foreach @results;
