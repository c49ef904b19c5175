#!/usr/bin/perl
# The forker (Prefork::Interp::Forker), through both clients: the server
# forks once, the forker, which makes every spare, each the server's
# child all the same (clone with CLONE_PARENT); while it serves, the
# server forks nothing; calls are served with exact statuses and draw
# different random numbers; a forker killed by someone leaves the server
# forking its spares itself, serving on.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use PfiTest qw(client_kinds fixture slurp wait_for alive describe_status
               cmdline_of server_helpers);
use Test::More;

plan skip_all => 'no forker here (glibc 2.34 or later on x86_64, aarch64'
                 . ' or riscv64)' unless server_helpers();

# Every fork the server (its session's leader) makes itself is noted in
# FORKS_FILE, by its pid: perl's fork, overridden before our library is
# compiled (the server loads it after the script's initialisation).
my $body = <<'EOF';
BEGIN {
    *CORE::GLOBAL::fork = sub {
        my $pid = CORE::fork();
        if ($pid) {
            my ($sid) = (do { local (@ARGV, $/) = '/proc/self/stat'; <> })
                =~ m/\) \S+ \S+ \S+ (\S+)/;
            if ($sid == $$ && open(my $fh, '>>', $ENV{FORKS_FILE})) {
                print $fh "$$\n";
                close $fh;
            }
        }
        return $pid;
    };
}
my ($sid) = (do { local (@ARGV, $/) = '/proc/self/stat'; <> })
    =~ m/\) \S+ \S+ \S+ (\S+)/;
print "sid $sid rand ", rand(), "\n";
exit $ARGV[0];
EOF

sub children_of ($) {
    my ($pid) = @_;
    return grep { $_->{ppid} == $pid && $_->{state} ne 'Z' }
        PfiTest::_all_procs();
}

sub titled ($$) {
    my ($server, $role) = @_;
    return grep { (cmdline_of($_->{pid}) // '') =~ m/\Aprefork-interp $role: / }
        children_of($server);
}

foreach my $kind (client_kinds()) {
    subtest "$kind client" => sub {
        my $fx = fixture($kind) or return;
        my $forks = $fx->dir . '/forks';
        my %env = (FORKS_FILE => $forks);
        my $script = $fx->script('forker.pl', body => $body);
        my $call = sub {
            my ($status) = @_;
            my $r = $fx->run($script, args => [ $status ], env => \%env);
            is(describe_status($r->{status}), "exit $status",
               "a call: exit $status") or diag($r->{err});
            my ($sid, $rand) = ($r->{out} // '') =~ m/\Asid (\d+) rand (\S+)/;
            return ($sid, $rand);
        };
        my $server_forks = sub {
            my ($server) = @_;
            return scalar grep { $_ == $server }
                split ' ', slurp($forks) // '';
        };

        $call->(0);
        my ($server) = $call->(1);
        ok($server, "the server [$server]") or return;
        ok(wait_for(5, sub { titled($server, 'spare') == 2
                             && titled($server, 'forker') == 1
                             && children_of($server) == 3 }),
           'its children: the forker and two spares')
            or diag(explain [ children_of($server) ]);
        # The forker; and an executor for each call that came before the
        # first spares did: the C client's first (ours runs its first in
        # place), and the second, which comes as the server starts.
        my $before = $server_forks->($server);
        ok($before >= 1 && $before <= 3, "the server forked $before"
           . ' time(s) while starting');

        my (@statuses, %rand);
        foreach my $status (2 .. 7) {
            my ($sid, $rand) = $call->($status);
            is($sid, $server, '... served by the same server');
            $rand{$rand // ''}++;
        }
        is(scalar keys %rand, 6, 'every call drew other random numbers');
        is($server_forks->($server), $before,
           'the server forked nothing while it served');
        ok(wait_for(5, sub { titled($server, 'spare') == 2 }),
           'two spares again, from the forker');

        # (A spare just made shows the forker's title until it sets its
        # own.)
        ok(wait_for(5, sub { titled($server, 'forker') == 1 }), 'one forker');
        my ($forker) = titled($server, 'forker');
        kill 'KILL', $forker->{pid};
        ok(wait_for(5, sub { !alive($forker->{pid}) }), 'the forker killed');
        $call->(9) for 1 .. 3;
        ok(wait_for(5, sub { titled($server, 'spare') == 2
                             && children_of($server) == 2 }),
           'the server forks its two spares itself');
        cmp_ok($server_forks->($server), '>', $before,
               '... with fork, its own');
        like($fx->log_text, qr/the forker of spares \[$forker->{pid}\] has failed/,
             'the forker\'s end is logged') if $kind eq 'ours';
        $fx->cleanup_ok;
    };
}

done_testing;
