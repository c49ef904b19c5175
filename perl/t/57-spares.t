#!/usr/bin/perl
# Spare executors (Prefork::Interp::Executors), through both clients:
# an idle server keeps pool_size spares, forks of itself that cost no
# CPU and hold none of its fds; a warm call is served by one of them
# (no fork between the call's arrival and its executor), and a new
# spare replaces it; pool_size 0 forks an executor per call; the
# server watches each call itself (no monitor process): a client that
# goes away gets SIGINT to the call's group; spares go when the server
# quits, or dies; a spare killed by someone is replaced.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use PfiTest qw(client_kinds fixture slurp wait_for alive describe_status
               procs_in_sessions server_helpers);
use Test::More;
use Time::HiRes ();

# Each call prints "pid PID ppid PPID pgrp PGRP sid SID"; "long MARKER"
# notes the same in MARKER, starts a helper in the call's group, and
# sleeps until a signal: SIGINT is noted in MARKER.int (with the
# helper's fate), then exit 130; "exit N" exits N.
my $body = <<'EOF';
sub ids {
    my ($pgrp, $sid) = (do { local (@ARGV, $/) = '/proc/self/stat'; <> })
        =~ m/\) \S+ \S+ (\S+) (\S+)/;
    return "pid $$ ppid " . getppid() . " pgrp $pgrp sid $sid";
}
my $mode = $ARGV[0] // '';
print ids(), "\n";
exit $ARGV[1] if $mode eq 'exit';
if ($mode eq 'long') {
    my $marker = $ARGV[1];
    my $helper = fork // die "fork: $!";
    if (!$helper) { exec 'sleep', '60' or die "exec: $!" }
    $SIG{INT} = sub {
        open(my $fh, '>', "$marker.int") or die;
        print $fh "INT\n";
        close $fh;
        exit 130;
    };
    open(my $fh, '>', "$marker.tmp") or die;
    print $fh ids(), " helper $helper\n";
    close $fh;
    rename "$marker.tmp", $marker or die;
    sleep 1 for 1 .. 60;
    exit 0;
}
exit 0;
EOF

sub ids_of ($) {
    my ($text) = @_;
    my %id = ($text // '') =~ m/\b(pid|ppid|pgrp|sid|helper) (\d+)/g;
    return \%id;
}

sub stat_fields ($) {
    my ($pid) = @_;
    my $stat = slurp("/proc/$pid/stat") // return ();
    my ($rest) = $stat =~ m/\) (.*)\z/s or return ();
    return split ' ', $rest;
}

# The children of PID, as hash refs (pid, state, cmdline).
sub children_of ($) {
    my ($pid) = @_;
    my @kids;
    opendir(my $d, '/proc') or die;
    foreach my $p (grep { m/\A[0-9]+\z/ } readdir $d) {
        my @f = stat_fields($p) or next;
        next unless $f[1] == $pid && $f[0] ne 'Z';
        my $cmd = slurp("/proc/$p/cmdline") // '';
        $cmd =~ s/\0/ /g;
        push @kids, { pid => $p, state => $f[0], pgrp => $f[2],
                      sid => $f[3], cpu => $f[11] + $f[12], cmd => $cmd };
    }
    return @kids;
}

sub spares_of ($) {
    my ($server) = @_;
    return grep { $_->{cmd} =~ m/prefork-interp spare: / } children_of($server);
}

# What fd N of PID points to, for each fd.
sub fds_of ($) {
    my ($pid) = @_;
    opendir(my $d, "/proc/$pid/fd") or return {};
    return { map { $_ => readlink("/proc/$pid/fd/$_") // '?' }
             grep { m/\A[0-9]+\z/ } readdir $d };
}

foreach my $kind (client_kinds()) {
    subtest "$kind client" => sub {
        my $fx = fixture($kind) or return;
        my $dir = $fx->dir;
        my $script = $fx->script('spares.pl', body => $body);

        # Our client runs the first call in place; the second is the
        # server's.
        my $r = $fx->run($script, args => [ 'exit', 0 ]);
        is($r->{status}, 0, 'server started');
        $r = $fx->run($script, args => [ 'exit', 0 ]);
        my $first = ids_of($r->{out});
        my $server = $first->{ppid};
        ok($server && $server == $first->{sid},
           'a call is a child of the server, in its session')
            or diag($r->{out});
        is($first->{pgrp}, $first->{pid}, '... leading a group of its own');

        # Idle: pool_size (2) spares, in the server's group, asleep (and
        # the forker that makes them, where one runs).
        ok(wait_for(5, sub { spares_of($server) == 2
                             && children_of($server) == 2 + server_helpers() }),
           'idle: the server\'s children are its two spares (and forker)')
            or diag(explain [ children_of($server) ]);
        my @spares = spares_of($server);
        is_deeply([ map { $_->{pgrp} } @spares ], [ $server, $server ],
                  "spares are in the server's process group");
        is_deeply([ map { $_->{state} } @spares ], [ 'S', 'S' ],
                  'spares sleep');
        my %cpu = map { $_->{pid} => $_->{cpu} } @spares;
        Time::HiRes::sleep(1);
        is_deeply({ map { $_->{pid} => $_->{cpu} } spares_of($server) }, \%cpu,
                  'spares use no CPU while idle (no timer, no polling)');
        foreach my $spare (@spares) {
            my $fds = fds_of($spare->{pid});
            my @odd = grep { $fds->{$_} =~ m/inotify|pipe:|\/\S+\.sock|signalfd/
                             || ($_ <= 2 && $fds->{$_} ne '/dev/null') }
                      sort keys %$fds;
            is_deeply([ map { "$_ -> $fds->{$_}" } @odd ], [],
                      "spare [$spare->{pid}]: /dev/null on 0-2, nothing"
                      . ' of the server but its control socket')
                or diag(explain $fds);
            my @sockets = grep { $fds->{$_} =~ m/\Asocket:/ } keys %$fds;
            is(scalar @sockets, 1, '... one socket, its control socket');
        }

        # A warm call is served by a spare that was there before it.
        my %before = map { $_->{pid} => 1 } @spares;
        $r = $fx->run($script, args => [ 'exit', 7 ]);
        is(describe_status($r->{status}), 'exit 7', 'a warm call: exit 7');
        my $call = ids_of($r->{out});
        ok($before{ $call->{pid} },
           "its executor [$call->{pid}] is a spare that was idle before"
           . ' it came (no fork on its way)')
            or diag(join ' ', 'spares were', sort keys %before);
        is($call->{pgrp}, $call->{pid}, '... and leads the call\'s group');
        ok(wait_for(5, sub { my @s = spares_of($server);
                             @s == 2 && grep { !$before{ $_->{pid} } } @s }),
           'a new spare replaces it');
        my @statuses = map {
            my $st = $fx->run($script, args => [ 'exit', $_ ])->{status};
            defined $st ? $st >> 8 : -1;
        } 1 .. 5;
        is("@statuses", '1 2 3 4 5', 'calls in a row: exact statuses');

        # A spare killed by someone: the next call is served all the
        # same, and the pool is filled again.
        ok(wait_for(5, sub { spares_of($server) == 2 }), 'two spares again');
        my ($victim) = spares_of($server);
        kill 'KILL', $victim->{pid};
        ok(wait_for(5, sub { !alive($victim->{pid}) }), 'a spare killed');
        is($fx->run($script, args => [ 'exit', 4 ])->{status}, 4 << 8,
           'the next call is served');
        ok(wait_for(5, sub { spares_of($server) == 2 }),
           '... and the pool is full again');
        like($fx->log_text, qr/warning: spare executor \[$victim->{pid}\] ended before it had a call: killed by SIGKILL/,
             'the killed spare is logged');

        # The client goes away mid-call: SIGINT to the call's group.
        my $marker = "$dir/long";
        my $h = $fx->start($script, args => [ 'long', $marker ]);
        ok(wait_for(15, sub { -e $marker }), 'a long call runs') or return;
        my $long = ids_of(slurp($marker));
        $fx->track_pids($long->{pid}, $long->{helper});
        is($long->{ppid}, $server, '... served by the server');
        kill 'KILL', $h->{pid};
        $fx->finish($h, 10);
        ok(wait_for(5, sub { -e "$marker.int" }),
           'the client killed: the executor gets SIGINT');
        ok(wait_for(5, sub { !alive($long->{pid}) }), '... and ends');
        ok(wait_for(5, sub { !alive($long->{helper}) }),
           '... and so does the helper in its group');
        is($fx->run($script, args => [ 'exit', 0 ])->{status}, 0,
           'the server carries on');

        # Quitting (--kill) while a call runs: the spares go at once, the
        # server waits for the call, then nothing is left.
        unlink $marker;
        $h = $fx->start($script, args => [ 'long', $marker ]);
        ok(wait_for(15, sub { -e $marker }), 'another long call runs')
            or return;
        $long = ids_of(slurp($marker));
        $fx->track_pids($long->{pid}, $long->{helper});
        ok(wait_for(5, sub { spares_of($server) == 2 }), 'two spares');
        @spares = map { $_->{pid} } spares_of($server);
        is($fx->kill_server($script)->{status}, 0, '--kill');
        ok(wait_for(5, sub { !grep { alive($_) } @spares }),
           'the spares go at once');
        ok(alive($server) && alive($long->{pid}),
           'the server waits for the call in progress');
        kill 'KILL', $long->{helper};
        kill 'TERM', $h->{pid};    # forwarded (ours), or a hang-up (C)
        my $end = $fx->finish($h, 10);
        ok(!$end->{timed_out}, 'the call ends');
        ok(wait_for(5, sub { !alive($server) }), 'then the server exits');
        ok(wait_for(5, sub { !procs_in_sessions([$server]) }),
           'no process is left in its session');
        unlike($fx->log_text, qr/error: |spare executor: /,
               'no error logged (the spares exited quietly)');

        # pool_size => 0: an executor forked for each call.
        my $none = $fx->script('none.pl', opts => 'pool_size => 0',
                               body => $body);
        $fx->run($none, args => [ 'exit', 0 ]);
        $r = $fx->run($none, args => [ 'exit', 0 ]);
        my $s0 = ids_of($r->{out})->{ppid};
        ok($s0, 'pool_size 0: served');
        Time::HiRes::sleep(0.3);
        is(scalar children_of($s0), 0, 'pool_size 0: no spare while idle');
        @statuses = map {
            my $st = $fx->run($none, args => [ 'exit', $_ ])->{status};
            defined $st ? $st >> 8 : -1;
        } 3, 0, 9;
        is("@statuses", '3 0 9', 'pool_size 0: exact statuses');
        $r = $fx->run($none, args => [ 'exit', 0 ]);
        my $c0 = ids_of($r->{out});
        is($c0->{ppid}, $s0, "pool_size 0: the executor is the server's"
           . ' child (no monitor)');
        is($c0->{pgrp}, $c0->{pid}, '... leading the call\'s group');
        Time::HiRes::sleep(0.3);
        is(scalar children_of($s0), 0, 'pool_size 0: none after a call');

        # pool_size => 3
        my $three = $fx->script('three.pl', opts => 'pool_size => 3',
                                body => $body);
        $fx->run($three, args => [ 'exit', 0 ]);
        $r = $fx->run($three, args => [ 'exit', 0 ]);
        my $s3 = ids_of($r->{out})->{ppid};
        ok(wait_for(5, sub { spares_of($s3) == 3 }), 'pool_size 3: three spares');

        $fx->cleanup_ok;
    };
}

done_testing;
