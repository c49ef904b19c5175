#!/usr/bin/perl
# Process titles, through both clients: after calls made with a secret
# argument, the server's command line (/proc/PID/cmdline) is
# "prefork-interp server: SCRIPT (perl)" and its spares' "prefork-interp
# spare: SCRIPT (perl)", with no caller's argument; a served call shows
# what a direct run shows (command line, process name, $0), and so does
# the first call, run in place.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use PfiTest qw(fixture client_kinds wait_for cmdline_of server_helpers);
use Test::More;

my $body = <<'EOT';
sub show { my $v = shift // '?'; $v =~ s/\0+\z//; $v =~ s/\0/|/g; chomp $v; $v }
my $cmd = do { local (@ARGV, $/) = '/proc/self/cmdline'; <> };
my $comm = do { local (@ARGV, $/) = '/proc/self/comm'; <> };
print "0=$0\ncmdline=", show($cmd), "\ncomm=", show($comm), "\n";
EOT

my @secret = ('--password=hunter2', 'x y');

foreach my $kind (client_kinds()) {
    subtest "$kind client" => sub {
        my $fx = fixture($kind) or return;
        my $script = $fx->script('title.pl', body => $body);
        my $direct = $fx->run($script, direct => 1, args => \@secret);
        is($direct->{status}, 0, 'a direct run');
        like($direct->{out}, qr/^cmdline=perl\|\Q$script\E\|--password=hunter2\|x y$/m,
             '... shows perl, the script and the arguments');

        my $first = $fx->run($script, args => \@secret);
        is($first->{status}, 0, 'the first call') or diag($first->{err});
        is($first->{out}, $direct->{out}, $kind eq 'ours'
           ? '... run in place, shows what a direct run shows'
           : '... served, shows what a direct run shows');
        my $warm = $fx->run($script, args => \@secret);
        is($warm->{out}, $direct->{out},
           'a warm call shows what a direct run shows ($0, command line, name)');

        my ($server) = $fx->sessions;
        ok($server, "the server ($server)");
        is(cmdline_of($server), "prefork-interp server: $script (perl)",
           'the server\'s command line');
        my @kids;
        wait_for(10, sub {
            @kids = grep { $_->{ppid} == $server && $_->{state} ne 'Z' }
                    PfiTest::_all_procs();
            @kids == 2 + server_helpers() });
        is_deeply([ sort map { cmdline_of($_->{pid}) } @kids ],
                  [ (server_helpers()
                     ? ("prefork-interp forker: $script (perl)") : ()),
                    ("prefork-interp spare: $script (perl)") x 2 ],
                  'two spares (and the forker), titled so');
        foreach my $pid ($server, map { $_->{pid} } @kids) {
            my $all = PfiTest::slurp("/proc/$pid/cmdline") // '';
            unlike($all, qr/hunter2|x y/, "[$pid]: no caller's argument");
        }
        $fx->cleanup_ok;
    };
}

done_testing;
