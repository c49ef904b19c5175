#!/usr/bin/perl
# Extension inplace1 (protocol.md 7): our client announces it, and the
# setup process runs the first (cold) call itself, after forking the
# server: leading a process group of its own, as the client's child, with
# what a direct run and a warm call get (exit status, stdout, stdin,
# arguments, environment, umask, an extra fd), the same wait status when
# the script dies by a signal, and SIGINT when the client dies.  Then
# the setup process's side of the wire, with the test playing the
# client: the greeting, and a broken handshake (exit 127, one line on
# stderr).

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Config ();
use POSIX ();
use PfiTest qw(fixture slurp spit wait_for describe_status session_of
               alive read_bytes);
use Test::More;

my %SIGNUM;
{
    my @names = split ' ', $Config::Config{sig_name};
    my @nums = split ' ', $Config::Config{sig_num};
    $SIGNUM{ $names[$_] } //= $nums[$_] for 0..$#names;
}

# Where the call runs goes to stderr, which is not compared with a
# direct run: its pid, parent, process group and session, and the
# server's generation (the pid of the process that initialised it).
my $init = 'our $GEN = $$;';
my $body = <<'EOF';
{
    my ($ppid, $pgrp, $sid) = (do { local (@ARGV, $/) = '/proc/self/stat'; <> })
        =~ m/\) \S+ (\S+) (\S+) (\S+)/;
    print STDERR "proc pid=$$ ppid=$ppid pgrp=$pgrp sid=$sid gen=$main::GEN\n";
}
my $mode = $ARGV[0] // '';
if ($mode eq 'state') {
    print 'argv=', join('|', @ARGV), "\n";
    print "0=$0\n";
    my $in = join '', <STDIN>;
    print 'stdin=', $in =~ s/\n/\\n/gr, "\n";
    printf "umask=%03o\n", umask;
    print "env $_=$ENV{$_}\n" foreach sort keys %ENV;
    opendir(my $d, '/proc/self/fd') or die;
    foreach my $fd (sort { $a <=> $b } grep { m/\A[0-9]+\z/ && $_ > 2 }
                    readdir $d) {
        my $t = readlink("/proc/self/fd/$fd") // next;
        next if $t =~ m{^/proc/};
        print "fd $fd -> $t\n";
    }
    if (open(my $three, '>>&=', 3)) {
        print $three "written to fd 3\n";
        close $three;
    }
    exit 7;
}
sub PfiDestruct::DESTROY { print "DESTROY in ${^GLOBAL_PHASE}\n" }
if ($mode eq 'destruct') {      # an object left for global destruction
    our $left = bless {}, 'PfiDestruct';
    print "made\n";
    exit 0;
}
if ($mode eq 'die') {           # die SIGNAL: killed by SIGNAL
    kill $ARGV[1], $$;
    sleep 5;
    exit 0;
}
if ($mode eq 'wait') {          # wait READY DONE [int-handler]
    my ($ready, $done, $how) = @ARGV[1, 2, 3];
    $SIG{INT} = sub {
        open(my $f, '>', "$done.int") or die; close $f;
        exit 3;
    } if ($how // '') eq 'int-handler';
    open(my $f, '>', "$ready.tmp") or die; print $f "$$\n"; close $f;
    rename "$ready.tmp", $ready or die;
    for (1 .. 1000) {
        last if -e $done;
        select(undef, undef, undef, 0.02);
    }
    exit 0;
}
print "unknown mode\n";
exit 1;
EOF

my $fx = fixture('ours') or done_testing, exit;
my $script = $fx->script('inplace.pl', init => $init, body => $body);
my $dir = $fx->dir;
my $n = 0;
my $test_sid = session_of();

# The proc line of a call's stderr, as a hash ref, and the rest.
sub proc_of ($) {
    my ($r) = @_;
    my $err = $r->{err} // '';
    my %p;
    if ($err =~ s/^proc (.*)\n//m) {
        %p = map { split /=/, $_, 2 } split ' ', $1;
    }
    return (\%p, $err);
}

# A caller as a shell job would be, with umask 027 and "3>FILE".
sub caller_with ($) {
    my ($file) = @_;
    return sub {
        umask 027;
        my $fd = POSIX::open($file, POSIX::O_WRONLY() | POSIX::O_APPEND())
            // die "open $file: $!";
        if ($fd != 3) {
            POSIX::dup2($fd, 3) // die "dup2: $!";
            POSIX::close($fd);
        }
    };
}

# One 'state' call: through the client (cold or warm), or direct.
sub state_call {
    my (%how) = @_;
    my $file = "$dir/fd3." . ++$n;
    spit($file, "hello from fd 3\n");
    my $h = $fx->start($script, args => [ 'state', 'a b', '', 'c' ],
                       stdin => "line 1\nline 2\n",
                       env => { PFI_IN_PLACE => 'x y', EMPTY => '' },
                       pgrp => 1, caller => caller_with($file), %how);
    my $r = $fx->finish($h, 30);
    $r->{client} = $h->{pid};
    $r->{out} =~ s/\Q$file\E/FILE/g;
    $r->{file} = slurp($file);
    ($r->{proc}, $r->{rest_err}) = proc_of($r);
    return $r;
}

subtest 'the cold call runs in the setup process, as a direct run' => sub {
    my $cold = state_call();
    my $warm = state_call();
    my $direct = state_call(direct => 1);

    foreach my $r ([ 'cold', $cold ], [ 'warm', $warm ],
                   [ 'direct', $direct ]) {
        my ($name, $c) = @$r;
        is(describe_status($c->{status}), 'exit 7', "$name: exit 7")
            or diag $c->{err};
        is($c->{rest_err}, '', "$name: nothing else on stderr");
        is($c->{file}, "hello from fd 3\nwritten to fd 3\n",
           "$name: what the script wrote to fd 3 is in the file");
    }
    like($direct->{out}, qr/^argv=state\|a b\|\|c$/m,
         'direct: the arguments');
    like($direct->{out}, qr/^stdin=line 1\\nline 2\\n$/m, 'direct: stdin');
    like($direct->{out}, qr/^umask=027$/m, 'direct: the umask');
    like($direct->{out}, qr/^env PFI_IN_PLACE=x y$/m,
         'direct: the environment');
    like($direct->{out}, qr/^fd 3 -> FILE$/m, 'direct: 3>FILE');
    is($cold->{out}, $direct->{out}, 'cold: the same output as the direct'
       . ' run (arguments, $0, stdin, umask, environment, fds)');
    is($warm->{out}, $direct->{out}, 'warm: the same output');

    my ($c, $w) = ($cold->{proc}, $warm->{proc});
    is($c->{ppid}, $cold->{client}, 'cold: the client\'s child');
    is($c->{pgrp}, $c->{pid}, '... leading a process group of its own, as'
       . ' a shell\'s job');
    is($c->{sid}, $test_sid, '... and session');
    is($w->{gen}, $c->{pid}, 'the server was initialised in that process');
    isnt($w->{pid}, $c->{pid}, 'warm: another process');
    isnt($w->{ppid}, $warm->{client}, '... not the client\'s child');
    is($w->{pgrp}, $w->{pid}, '... leading a process group of its own');
    isnt($w->{sid}, $test_sid, '... in another session');
    like(slurp("/proc/$w->{sid}/cmdline") // '', qr/\Aprefork-interp server: /,
         '... the server\'s');
    ok(!alive($c->{pid}), 'the cold call\'s process has gone');
};

subtest 'fast exit: the cold call ends as a warm one' => sub {
    my %out;
    foreach my $how ([ cold => flags => ['-f'] ], [ 'warm' ],
                     [ direct => direct => 1 ]) {
        my ($name, @how) = @$how;
        my $r = $fx->run($script, args => ['destruct'], @how);
        is(describe_status($r->{status}), 'exit 0', "$name: exit 0");
        $out{$name} = $r->{out};
    }
    is($out{direct}, "made\nDESTROY in DESTRUCT\n",
       'direct: global destruction');
    is($out{warm}, "made\n", 'warm: none (fast exit)');
    is($out{cold}, $out{warm}, 'cold: none either (and no child of its'
       . ' own, the server, made fast exit step aside)');
};

subtest 'a death by a signal: the same status, cold, warm and direct' => sub {
    foreach my $sig (qw(TERM INT HUP USR1 KILL)) {
        my %st;
        foreach my $how ([ cold => flags => ['-f'] ], [ 'warm' ],
                         [ direct => direct => 1 ]) {
            my ($name, @how) = @$how;
            my $r = $fx->run($script, args => [ 'die', $SIGNUM{$sig} ],
                             @how);
            $st{$name} = describe_status($r->{status});
            my ($p) = proc_of($r);
            is($p->{sid}, $test_sid, "SIG$sig: -f makes a cold call, in"
               . ' place') if $name eq 'cold';
        }
        is($st{direct}, "signal $SIGNUM{$sig}", "SIG$sig: direct run");
        is($st{cold}, $st{warm}, "SIG$sig: cold as warm ($st{warm})");
        is($st{cold}, $st{direct}, "SIG$sig: cold as direct");
    }
};

subtest 'SIGTERM to the client: passed on, as to a warm call' => sub {
    my %st;
    foreach my $how ([ cold => flags => ['-f'] ], [ 'warm' ],
                     [ direct => direct => 1 ]) {
        my ($name, @how) = @$how;
        my $ready = "$dir/ready." . ++$n;
        my $h = $fx->start($script, args => [ 'wait', $ready, "$dir/none" ],
                           pgrp => 1, @how);
        ok(wait_for(20, sub { -e $ready }), "$name: the call runs");
        kill 'TERM', $h->{pid};
        my $r = $fx->finish($h, 20);
        $st{$name} = describe_status($r->{status});
    }
    is($st{direct}, "signal $SIGNUM{TERM}", 'direct: killed by SIGTERM');
    is($st{cold}, $st{direct}, 'cold: the same');
    is($st{warm}, $st{direct}, 'warm: the same');
};

subtest 'the client killed: the cold call gets SIGINT' => sub {
    my $ready = "$dir/ready." . ++$n;
    my $done = "$dir/done.$n";
    my $h = $fx->start($script, args => [ 'wait', $ready, $done,
                                          'int-handler' ],
                       flags => ['-f'], pgrp => 1);
    ok(wait_for(20, sub { -e $ready }), 'the call runs') or return;
    my ($pid) = split ' ', slurp($ready);
    kill 'KILL', $h->{pid};
    $fx->finish($h, 10);
    ok(wait_for(10, sub { -e "$done.int" }),
       'its SIGINT handler ran (PR_SET_PDEATHSIG)');
    ok(wait_for(10, sub { !alive($pid) }), '... and it has gone');
};

subtest 'a caller during the first call wakes the waiting server' => sub {
    # The server forked beside the first call waits before it starts
    # ($Prefork::Interp::START_DELAY), here a minute, unless a caller
    # connects meanwhile: the second call is served while the first one
    # still runs.
    my $delayed = $fx->script('delayed.pl', body => $body,
        init => $init . ' $Prefork::Interp::START_DELAY = 60;');
    my $ready = "$dir/ready." . ++$n;
    my $done = "$dir/done.$n";
    my $first = $fx->start($delayed, args => [ 'wait', $ready, $done ],
                           pgrp => 1);
    ok(wait_for(20, sub { -e $ready }), 'the first call runs') or return;
    # (Waiting for a file that is there already: it returns at once.)
    my $second = $fx->run($delayed, args => [ 'wait', "$dir/ready2.$n",
                                              $ready ], timeout => 15);
    ok(!$second->{timed_out}, 'the second call is served meanwhile');
    is(describe_status($second->{status}), 'exit 0', '... exit 0')
        or diag $second->{err};
    ok(alive((split ' ', slurp($ready))[0]), '... the first still running');
    spit($done, '');
    is(describe_status($fx->finish($first, 30)->{status}), 'exit 0',
       'the first call ends, exit 0');
};

subtest 'job control: the cold call stops and continues with the client' => sub {
    my $ready = "$dir/ready." . ++$n;
    my $done = "$dir/done.$n";
    my $h = $fx->start($script, args => [ 'wait', $ready, $done ],
                       flags => ['-f'], pgrp => 1);
    ok(wait_for(20, sub { -e $ready }), 'the call runs') or return;
    my ($pid) = split ' ', slurp($ready);
    my $stopped = sub { (slurp("/proc/$_[0]/stat") // '') =~ m/\) T / };
    kill 'TSTP', $h->{pid};
    ok(wait_for(5, sub { $stopped->($h->{pid}) }), 'kill -TSTP: the client'
       . ' stops');
    ok($stopped->($pid), '... and so does the script');
    # As fg and bg do: to the job's process group, the client's, which
    # continues the script's.
    kill 'CONT', -$h->{pid};
    ok(wait_for(5, sub { !$stopped->($pid) }), 'kill -CONT to the group:'
       . ' the script runs again');
    ok(wait_for(5, sub { !$stopped->($h->{pid}) }), '... and the client');
    spit($done, '');
    is(describe_status($fx->finish($h, 20)->{status}), 'exit 0',
       '... and ends as usual');
};

$fx->cleanup_ok;

# The test plays the client (protocol.md 7, "Library").
subtest 'the setup process\'s side of the wire' => sub {
    my $init = '$Prefork::Interp::REQUEST_TIMEOUT = 1;';
    my $h = PfiTest::Harness->new(announce => 'inplace1', no_wait => 1,
                                  init => $init, body => 'exit 0;');
    my $conn = $h->initial;
    is(read_bytes($conn, 16, 20), "PFI\n\0\0\0\x08inplace1",
       'the greeting names the extension');
    syswrite($conn, "\x01");
    my $st = $h->wait_setup(20);
    is(describe_status($st), 'exit 127', 'a bad signalling byte: exit 127');
    my $what = $h->script . ': prefork: error: taking the first call in';
    like($h->setup_err,
         qr/\A\Q$what: signalling byte is 0x01, not 0x00\E\n\z/,
         '... and one line on stderr') or diag $h->setup_err;
    $h->cleanup_ok('bad byte');

    $h = PfiTest::Harness->new(announce => 'inplace1', no_wait => 1,
                               init => $init, body => 'exit 0;');
    is(read_bytes($h->initial, 16, 20), "PFI\n\0\0\0\x08inplace1",
       'greeted');
    $st = $h->wait_setup(20);
    is(describe_status($st), 'exit 127', 'no request: exit 127');
    $what = $h->script . ': prefork: error: taking the first call in';
    like($h->setup_err,
         qr/\A\Q$what: no complete request within 1 s\E\n\z/,
         '... and one line on stderr, after the request timeout')
        or diag $h->setup_err;
    # The server was started all the same, without this call.
    my $conn2 = $h->connect;
    is(read_bytes($conn2, 8, 20), "PFI\n\0\0\0\0", 'the server answers');
    close $conn2;
    $h->cleanup_ok('no request');

    # A plain v1 request (no call1 offered): the call runs in place all
    # the same, and its status is the setup process's.
    $h = PfiTest::Harness->new(announce => 'inplace1', no_wait => 1,
        body => 'print "args=@ARGV env=$ENV{PFI_X}\n"; exit 4;');
    $conn = $h->initial;
    is(read_bytes($conn, 16, 20), "PFI\n\0\0\0\x08inplace1", 'greeted');
    my $out = $h->dir . '/v1.out';
    open(my $in, '<', '/dev/null') or die;
    open(my $o, '>', $out) or die;
    $h->send_request($conn, fds => [ fileno $in, fileno $o, fileno $o ],
                     env => [ 'PATH=/usr/bin:/bin', 'PFI_X=y' ],
                     args => [ 'perl', $h->script, 'one', 'two' ]);
    close $_ foreach $in, $o;
    is(describe_status($h->wait_setup(20)), 'exit 4',
       'v1: the call\'s exit status is the setup process\'s');
    is(slurp($out), "args=one two env=y\n", '... and it ran with the'
       . ' request\'s arguments, environment and stdout');
    is($h->setup_err, '', '... and said nothing on its own stderr');
    my $tail = '';
    is(sysread($conn, $tail, 16), 0, '... nor anything on CALL, now closed');
    $h->cleanup_ok('v1 in place');
};

done_testing;
