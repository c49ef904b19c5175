#!/usr/bin/perl
# Extension pty1 (protocol.md 9) against a real server of ours, with
# the test playing the client (PfiTest::Harness): it makes a pty,
# offers call1,pty1, and passes the slave after the extra fds.  The
# served script reports what it has (its session, its controlling
# terminal, its fds) in a file; the test reads the pty's master as a
# client would, and checks that once the call has ended nobody holds
# the slave any more (EIO on the master), that signals reach the call,
# and that a client breaking the rules only loses its call.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Errno qw(EIO);
use Fcntl qw(O_RDWR O_NOCTTY);
use IO::FDPass;
use POSIX qw(SIGINT SIGUSR1);
use PfiTest qw(slurp spit wait_for describe_status alive lib_dir);
use Test::More;

# A server that closes a connection must not kill the test.
$SIG{PIPE} = 'IGNORE';

# Linux's generic ioctl numbers, as the library's (x86_64, aarch64,
# riscv64; the architectures this test suite runs on).
use constant TIOCSPTLCK => 0x40045431;
use constant TIOCGPTN   => 0x80045430;

# A new pty: (master, slave, slave's path), both opened read-write and
# without becoming our controlling terminal.
sub open_pty () {
    sysopen(my $master, '/dev/ptmx', O_RDWR | O_NOCTTY)
        or die "open /dev/ptmx: $!";
    my $unlock = pack 'i', 0;
    ioctl($master, TIOCSPTLCK, $unlock) or die "TIOCSPTLCK: $!";
    my $n = pack 'i', 0;
    ioctl($master, TIOCGPTN, $n) or die "TIOCGPTN: $!";
    my $path = '/dev/pts/' . unpack('i', $n);
    sysopen(my $slave, $path, O_RDWR | O_NOCTTY) or die "open $path: $!";
    return ($master, $slave, $path);
}

# drain(MASTER): reads the master until the read fails or ends; returns
# (what was read, how it ended: 'EIO', 'EOF', another error, or
# 'nothing for 20 s', which means someone still holds the slave).
sub drain ($) {
    my ($master) = @_;
    my $got = '';
    for (;;) {
        my $rbits = '';
        vec($rbits, fileno $master, 1) = 1;
        return ($got, 'nothing for 20 s')
            unless select($rbits, undef, undef, 20) > 0;
        my $r = sysread($master, $got, 4096, length $got);
        return ($got, 'EOF') if defined $r && $r == 0;
        next if defined $r;
        return ($got, $! == EIO ? 'EIO' : "$!");
    }
}

# pty_call(H, CONN, ARGS, ATTR...): starts a call of ARGS on CONN on a new
# pty: offers call1,pty1, sends ATTR (pty => '0,1,2' unless given) and
# the slave, and closes our copy of the slave.  Returns the call, the
# master and the slave's path.
sub pty_call ($$$;@) {
    my ($h, $conn, $args, @attr) = @_;
    @attr = (pty => '0,1,2') unless @attr;
    my ($master, $slave, $path) = open_pty();
    my $c = $h->call1_start($conn, offer => 'call1,pty1', args => $args,
                            attr => $h->attr_body(@attr),
                            slave => fileno $slave);
    close $slave;
    return ($c, $master, $path);
}

# ends_in_eio(MASTER, NAME): reads the master to its end, which must be
# EIO (nobody holds the slave any more), as test NAME; closes it.
sub ends_in_eio ($$) {
    my ($master, $name) = @_;
    my (undef, $end) = drain($master);
    is($end, 'EIO', $name);
    close $master;
}

# holders(PATH): the pids (but ours) with an fd open on PATH.
sub holders ($) {
    my ($path) = @_;
    my @pids;
    opendir(my $d, '/proc') or die;
    foreach my $pid (grep { m/\A[0-9]+\z/ && $_ != $$ } readdir $d) {
        opendir(my $fds, "/proc/$pid/fd") or next;
        push @pids, $pid
            if grep { (readlink("/proc/$pid/fd/$_") // '') eq $path }
                    readdir $fds;
    }
    return sort { $a <=> $b } @pids;
}

# The script.  Every mode stops itself after a while (alarm), so
# nothing can outlive a failed test for long.
my $init = <<'EOF';
$SIG{USR1} = sub { $main::USR1++ };
EOF

my $body = <<'EOF';
use Fcntl qw(F_GETFD FD_CLOEXEC);
use POSIX ();
alarm 60;
my $mode = $ARGV[0] // '';
sub put {
    my ($name, $text) = @_;
    open(my $f, '>', "$name.tmp") or die; print $f $text; close $f;
    rename "$name.tmp", $name or die;
}
if ($mode eq 'report') {
    # report [read] [usr1]: what this process has, in the file
    # "report"; with "read", a line of stdin; with "usr1", once a
    # SIGUSR1 has come.
    my %want = map { $_ => 1 } @ARGV[1 .. $#ARGV];
    select(undef, undef, undef, 0.01) until !$want{usr1} || $main::USR1;
    my %r = (pid => $$, pgrp => getpgrp(), usr1 => $main::USR1 // 0,
             ppid => getppid());
    my $stat = do { local (@ARGV, $/) = '/proc/self/stat'; <> };
    my ($rest) = $stat =~ m/\) (.*)\z/s;
    @r{qw(sid tty_nr)} = (split ' ', $rest)[3, 4];
    # Our parent, the session's leader: its own session.
    my $pstat = do { local (@ARGV, $/) = "/proc/$r{ppid}/stat"; <> };
    my ($prest) = $pstat =~ m/\) (.*)\z/s;
    $r{parent_sid} = (split ' ', $prest)[3];
    foreach my $fd (0 .. 2) {
        $r{"fd$fd"} = readlink("/proc/self/fd/$fd") // 'closed';
        $r{"tcpgrp$fd"} = POSIX::tcgetpgrp($fd) // 'error';
        my $flags = fcntl(($fd == 0 ? \*STDIN : $fd == 1 ? \*STDOUT
                                                        : \*STDERR),
                          F_GETFD, 0);
        $r{"cloexec$fd"} = ($flags // 0) & FD_CLOEXEC ? 1 : 0;
    }
    if (open(my $tty, '+<', '/dev/tty')) {
        $r{devtty} = 'ok';
        syswrite $tty, "written to /dev/tty\n";
        close $tty;
    } else {
        $r{devtty} = "$!";
    }
    if ($want{read}) {
        my $line = <STDIN> // 'EOF';
        chomp $line;
        $r{stdin} = $line;
    }
    syswrite STDOUT, "written to stdout\n";
    put('report', join '', map { "$_=$r{$_}\n" } sort keys %r);
    exit 0;
}
if ($mode eq 'wait') {
    put('ready', "$$ " . getppid() . "\n");
    sleep 1 while 1;
}
if ($mode eq 'read') {
    # read [go]: says it runs ("ready"); with "go", waits for the file
    # "go" and says so ("went"); then reads a line of stdin, and reports
    # it and the pty's foreground group then ("got"); exits 5.
    put('ready', "$$ " . getppid() . "\n");
    if (($ARGV[1] // '') eq 'go') {
        select(undef, undef, undef, 0.01) until -e 'go';
        put('went', "$$\n");
    }
    my $line = <STDIN> // 'EOF';
    chomp $line;
    put('got', "line=$line\ntcpgrp=" . POSIX::tcgetpgrp(0)
               . "\npgrp=" . getpgrp() . "\n");
    exit 5;
}
if ($mode eq 'exit') {
    exit($ARGV[1] // 3);
}
print "mode?\n";
exit 3;
EOF

# report(H): the script's report, as a hash ref, and the file removed.
sub report ($) {
    my ($h) = @_;
    my $f = $h->dir . '/report';
    my $text = slurp($f) // return {};
    unlink $f;
    return { map { m/\A([^=]+)=(.*)\z/ ? ($1 => $2) : () } split /\n/, $text };
}

# wait_ready(H): the pid the script wrote to "ready" once running.
sub wait_ready ($) {
    my ($h) = @_;
    my $f = $h->dir . '/ready';
    wait_for(20, sub { -e $f }) or return undef;
    my ($pid) = slurp($f) =~ m/([0-9]+)/;
    unlink $f;
    return $pid;
}

# The same with spares (a call is handed to one) and without (an
# executor is forked for it).
foreach my $pool (2, 0) {
    subtest "pty=0,1,2 (pool_size $pool)" => sub {
        my $h = PfiTest::Harness->new(init => $init, body => $body,
                                      opts => "pool_size => $pool");
        is($h->setup_status, 0, 'server started') or diag $h->setup_err;
        my $conn = $h->initial;
        # Two calls, so that with spares the second one is a spare's.
        foreach my $n (1, 2) {
            my ($master, $slave, $path) = open_pty();
            my $c = $h->call1_start($conn, offer => 'call1,pty1',
                                    args => [ 'perl', $h->script, 'report' ],
                                    attr => $h->attr_body(pty => '0,1,2'),
                                    slave => fileno $slave);
            my $rdev = (stat $slave)[6];
            close $slave;
            is($c->{accepted}, 'call1,pty1',
               "call $n: PFXA body is exactly call1,pty1");
            $c = $h->call1_finish($c);
            is($c->{status}, 0, "call $n: EXIT 0") or diag $h->log_text;
            is(scalar @{ $c->{frames} }, 1, "call $n: EXIT the only frame");
            my @left = holders($path);
            is("@left", '', "call $n: after EXIT nobody holds the slave"
               . ' (not the server, not a spare)');
            my ($out, $end) = drain($master);
            is($end, 'EIO', "call $n: reading the master ends in EIO");
            like($out, qr/^written to stdout\r?$/m,
                 "call $n: the script's stdout is the pty");
            like($out, qr/^written to \/dev\/tty\r?$/m,
                 "call $n: so is /dev/tty");
            close $master;

            my $r = report($h);
            ok($r->{pid}, "call $n: reported") or next;
            isnt($r->{sid}, $r->{pid}, "call $n: getsid(0) != \$\$: the"
               . ' executor does not lead its session');
            is($r->{pgrp}, $r->{pid}, "call $n: it leads its process group");
            is($r->{sid}, $r->{ppid}, "call $n: its parent leads its"
               . ' session');
            is($r->{parent_sid}, $r->{ppid}, "call $n: (the parent's own"
               . ' session id is its pid)');
            is($r->{tty_nr}, $rdev, "call $n: its controlling terminal is"
               . ' the slave');
            is($r->{devtty}, 'ok', "call $n: /dev/tty opens");
            foreach my $fd (0 .. 2) {
                is($r->{"fd$fd"}, $path, "call $n: fd $fd is the slave");
                is($r->{"tcpgrp$fd"}, $r->{pgrp}, "call $n: fd $fd:"
                   . ' tcgetpgrp is the call\'s group (the foreground)');
                is($r->{"cloexec$fd"}, 0,
                   "call $n: fd $fd is not close-on-exec");
            }
            $conn = $h->connect;
        }
        close $conn;
        $h->cleanup_ok;
    };
}

subtest 'pty=1 with stdin a pipe, and an extra fd' => sub {
    my $h = PfiTest::Harness->new(init => $init, body => $body);
    my ($master, $slave, $path) = open_pty();
    pipe(my $in_r, my $in_w) or die;
    my $err_file = $h->dir . '/err';
    open(my $err, '>', $err_file) or die;
    open(my $extra, '<', $h->script) or die;
    my $c = $h->call1_start($h->initial, offer => 'call1,pty1',
                            args => [ 'perl', $h->script, 'report', 'read' ],
                            stdio => [ $in_r, undef, $err ],
                            extra => [ [ 5, fileno $extra ] ],
                            attr => $h->attr_body(fds => 5, pty => 1),
                            slave => fileno $slave);
    close $_ foreach $slave, $in_r, $err, $extra;
    is($c->{accepted}, 'call1,pty1', 'accepted');
    syswrite($in_w, "piped input\n");
    close $in_w;
    $c = $h->call1_finish($c);
    is($c->{status}, 0, 'EXIT 0') or diag $h->log_text;
    my ($out, $end) = drain($master);
    is($end, 'EIO', 'reading the master ends in EIO');
    like($out, qr/^written to stdout\r?$/m, 'stdout is the pty');
    close $master;
    my $r = report($h);
    like($r->{fd0}, qr/^pipe:/, 'fd 0 is still the pipe');
    is($r->{stdin}, 'piped input', '... and the script read it');
    is($r->{fd1}, $path, 'fd 1 is the slave');
    is($r->{fd2}, $err_file, 'fd 2 is still what was passed');
    is($r->{sid}, $r->{ppid}, 'a session of its own, led by its parent');
    is($r->{pgrp}, $r->{pid}, 'leading its process group');
    is($r->{tcpgrp1}, $r->{pgrp}, 'the call\'s group is the pty\'s'
       . ' foreground group');
    is($r->{devtty}, 'ok', '/dev/tty opens');
    $h->cleanup_ok;
};

subtest 'signals: SIGG before the session, SIGG during, ^C, hang-up' => sub {
    my $h = PfiTest::Harness->new(init => $init, body => $body);
    my $frame = $h->frame('SIGG', pack 'N', SIGUSR1);

    # A SIGG frame before ATTR is delivered as soon as the executor has
    # the call, maybe before its setsid: then to the executor alone.
    my ($master, $slave, $path) = open_pty();
    my $c = $h->call1_start($h->initial, offer => 'call1,pty1',
                            args => [ 'perl', $h->script, 'report', 'usr1' ],
                            before_attr => $frame,
                            attr => $h->attr_body(pty => '0,1,2'),
                            slave => fileno $slave);
    close $slave;
    $c = $h->call1_finish($c);
    is($c->{status}, 0, 'early SIGG USR1: the call ran to its end');
    is(report($h)->{usr1}, 1, '... and the script\'s handler had it');
    ends_in_eio($master, '... EIO on the master');

    # SIGG SIGINT while the call runs.
    ($c, $master, $path) = pty_call($h, $h->connect,
        [ 'perl', $h->script, 'wait' ]);
    my $exec = wait_ready($h);
    ok($exec, 'running') or return;
    ok(wait_for(10, sub { join(' ', holders($path)) eq $exec }),
       'only the executor holds the slave (the server closed its copy)')
        or diag 'holders: ' . join ' ', holders($path);
    is(POSIX::tcgetpgrp(fileno $master), $exec,
       'the master says: the executor\'s group is in the foreground');
    $h->signal($c->{conn}, 'SIGG', SIGINT);
    $c = $h->call1_finish($c);
    is(describe_status($c->{status}), 'signal ' . SIGINT,
       'SIGG SIGINT: EXIT, killed by SIGINT');
    ends_in_eio($master, '... EIO on the master');

    # ^C typed on the pty: the kernel's SIGINT to the foreground group.
    ($c, $master, $path) = pty_call($h, $h->connect,
        [ 'perl', $h->script, 'wait' ]);
    ok(wait_ready($h), 'running');
    syswrite($master, "\x03");
    $c = $h->call1_finish($c);
    is(describe_status($c->{status}), 'signal ' . SIGINT,
       '^C on the pty: EXIT, killed by SIGINT');
    ends_in_eio($master, '... EIO on the master');

    # The caller hangs up: SIGINT to the call.
    ($c, $master, $path) = pty_call($h, $h->connect,
        [ 'perl', $h->script, 'wait' ]);
    $exec = wait_ready($h);
    ok($exec, 'running');
    close $c->{conn};
    ok(wait_for(10, sub { !alive($exec) }), 'hang-up: the executor is gone');
    ends_in_eio($master, '... EIO on the master');
    $h->cleanup_ok;
};

# wait_ready2(H): (the executor's pid, its parent's), once running.
sub wait_ready2 ($) {
    my ($h) = @_;
    my $f = $h->dir . '/ready';
    wait_for(20, sub { -e $f }) or return ();
    my @pids = slurp($f) =~ m/([0-9]+) ([0-9]+)/;
    unlink $f;
    return @pids;
}

# gone(PID): no process PID (reaped), or one that is not ours any more.
sub gone ($) { !-e "/proc/$_[0]" }

subtest 'stops: ^Z, SIGG SIGTSTP; exact statuses; nothing left' => sub {
    my $h = PfiTest::Harness->new(init => $init, body => $body);
    my $conn = $h->initial;
    my ($c, $master, $path) = pty_call($h, $conn,
        [ 'perl', $h->script, 'wait' ]);
    my ($exec, $leader) = wait_ready2($h);
    ok($exec, 'running') or return;
    is(POSIX::tcgetpgrp(fileno $master), $exec,
       'the executor\'s group is the foreground');
    syswrite($master, "\x1a");
    is_deeply($h->read_frame($c->{conn}, 20), [ 'STOP', pack 'N', 20 ],
              '^Z on the pty: STOP frame with SIGTSTP');
    $h->signal($c->{conn}, 'SIGG', POSIX::SIGCONT());
    $h->signal($c->{conn}, 'SIGG', POSIX::SIGTSTP());
    is_deeply($h->read_frame($c->{conn}, 20), [ 'STOP', pack 'N', 20 ],
              'SIGG SIGCONT then SIGG SIGTSTP: STOP frame with SIGTSTP');
    $h->signal($c->{conn}, 'SIGG', POSIX::SIGCONT());
    $h->signal($c->{conn}, 'SIGG', POSIX::SIGTERM());
    $c = $h->call1_finish($c);
    is($c->{status}, POSIX::SIGTERM(), 'continued, then SIGG SIGTERM:'
       . ' EXIT status exactly SIGTERM');
    ends_in_eio($master, '... EIO on the master');
    ok(wait_for(20, sub { gone($exec) && gone($leader) }),
       '... executor and leader reaped');

    # SIGKILL sent by pid to the script: status 9.
    ($c, $master, $path) = pty_call($h, $h->connect,
        [ 'perl', $h->script, 'wait' ]);
    ($exec, $leader) = wait_ready2($h);
    ok($exec, 'running') or return;
    isnt($leader, $exec, 'the executor\'s parent is another process');
    kill 'KILL', $exec;
    $c = $h->call1_finish($c);
    is($c->{status}, 9, 'killed by SIGKILL: EXIT status 9');
    ends_in_eio($master, '... EIO on the master');
    ok(wait_for(20, sub { gone($exec) && gone($leader) }),
       '... executor and leader reaped');

    # exit 7: status 0x700.
    ($master, my $slave, $path) = open_pty();
    $c = $h->call1($h->connect, offer => 'call1,pty1',
                   args => [ 'perl', $h->script, 'exit', 7 ],
                   attr => $h->attr_body(pty => '0,1,2'),
                   slave => fileno $slave);
    close $slave;
    is($c->{status}, 0x700, 'exit 7: EXIT status 0x700');
    is(scalar @{ $c->{frames} }, 1, '... the only frame');
    ends_in_eio($master, '... EIO on the master');
    my @left = holders($path);
    is("@left", '', '... nobody holds the slave');
    $h->cleanup_ok;
};

# got(H): what the script in mode "read" reported, as a hash ref, and
# the file removed.
sub got ($) {
    my ($h) = @_;
    my $f = $h->dir . '/got';
    my $text = slurp($f) // return {};
    unlink $f;
    return { map { m/\A([^=]+)=(.*)\z/ ? ($1 => $2) : () } split /\n/, $text };
}

# fgnd(H, CONN, VALUE): an FGND frame (protocol.md 9.2).
sub fgnd ($$$) {
    my ($h, $conn, $value) = @_;
    $h->send_frame($conn, 'FGND', pack 'N', $value);
}

# The job's state mirrored onto the pty (protocol.md 9.3 step 5), with
# the leader woken by a signalfd and, without one, by its SIGCHLD
# handler; two calls each, so that with spares the second one is a
# spare's.
foreach my $case ([ 'signalfd, pool_size 2', '', 2 ],
                  [ 'no signalfd, pool_size 0',
                    '$Prefork::Interp::USE_PIDFD = 0;', 0 ]) {
    my ($how, $init_more, $pool) = @$case;
    subtest "ptybg=1: a background read stops the script ($how)" => sub {
        my $h = PfiTest::Harness->new(init => $init . $init_more,
                                      body => $body,
                                      opts => "pool_size => $pool");
        foreach my $n (1, 2) {
            my ($c, $master, $path) = pty_call(
                $h, $n == 1 ? $h->initial : $h->connect,
                [ 'perl', $h->script, 'read' ], pty => '0,1,2', ptybg => 1);
            is($c->{accepted}, 'call1,pty1', "call $n: accepted");
            my ($exec, $leader) = wait_ready2($h);
            ok($exec, "call $n: running") or return;
            is_deeply($h->read_frame($c->{conn}, 20),
                      [ 'STOP', pack 'N', 21 ],
                      "call $n: it reads stdin: STOP frame with SIGTTIN");
            is(POSIX::tcgetpgrp(fileno $master), $leader,
               "call $n: the pty's foreground is the leader's group");
            fgnd($h, $c->{conn}, 1);
            $h->signal($c->{conn}, 'SIGG', POSIX::SIGCONT());
            syswrite($master, "typed\n");
            $c = $h->call1_finish($c);
            is($c->{status}, 5 << 8,
               "call $n: FGND 1, SIGG SIGCONT: EXIT status 5")
                or diag explain $c->{frames}, $h->log_text;
            is(scalar @{ $c->{frames} }, 1,
               "call $n: ... the only frame after STOP");
            my $got = got($h);
            is($got->{line}, 'typed',
               "call $n: ... and it read what was typed");
            is($got->{tcpgrp}, $got->{pgrp},
               "call $n: ... in the pty's foreground");
            is($got->{pgrp}, $exec, "call $n: ... its own group");
            ends_in_eio($master, "call $n: ... EIO on the master");
            ok(wait_for(20, sub { gone($exec) && gone($leader) }),
               "call $n: ... executor and leader reaped");
        }
        $h->cleanup_ok;
    };
}

subtest 'FGND 0 while running: runs on until it reads; FGND 1' => sub {
    my $h = PfiTest::Harness->new(init => $init, body => $body);
    my ($c, $master, $path) = pty_call($h, $h->initial,
        [ 'perl', $h->script, 'read', 'go' ]);
    my ($exec, $leader) = wait_ready2($h);
    ok($exec, 'running') or return;
    is(POSIX::tcgetpgrp(fileno $master), $exec,
       'the executor\'s group is the pty\'s foreground');
    fgnd($h, $c->{conn}, 0);
    ok(wait_for(20, sub { POSIX::tcgetpgrp(fileno $master) == $leader }),
       'FGND 0: the leader\'s group takes the foreground');
    spit($h->dir . '/go', '');
    ok(wait_for(20, sub { -e $h->dir . '/went' }),
       'in the background, a script that does not read runs on');
    is_deeply($h->read_frame($c->{conn}, 20), [ 'STOP', pack 'N', 21 ],
              'then it reads stdin: STOP frame with SIGTTIN');
    fgnd($h, $c->{conn}, 1);
    $h->signal($c->{conn}, 'SIGG', POSIX::SIGCONT());
    syswrite($master, "typed\n");
    $c = $h->call1_finish($c);
    is($c->{status}, 5 << 8, 'FGND 1, SIGG SIGCONT: EXIT status 5')
        or diag explain $c->{frames}, $h->log_text;
    my $got = got($h);
    is($got->{line}, 'typed', '... and it read what was typed');
    is($got->{tcpgrp}, $exec, '... in the pty\'s foreground again');
    ends_in_eio($master, '... EIO on the master');
    ok(wait_for(20, sub { gone($exec) && gone($leader) }),
       '... executor and leader reaped');
    $h->cleanup_ok;
};

subtest 'FGND: malformed ones skipped; none without a pty' => sub {
    my $h = PfiTest::Harness->new(init => $init, body => $body);
    my ($c, $master, $path) = pty_call($h, $h->initial,
        [ 'perl', $h->script, 'read', 'go' ]);
    my ($exec, $leader) = wait_ready2($h);
    ok($exec, 'running') or return;
    $h->send_frame($c->{conn}, 'FGND', "\0\0\0\0\0");
    fgnd($h, $c->{conn}, 2);
    ok(wait_for(20, sub { $h->log_text =~ m/holds 2/ }), 'logged');
    like($h->log_text, qr/bad frame from caller, skipped: frame 'FGND' has a body of 5 bytes, not 4$/m,
         'FGND with a 5-byte body: skipped');
    like($h->log_text, qr/bad frame from caller, skipped: frame 'FGND' holds 2, not 0 or 1$/m,
         'FGND 2: skipped');
    spit($h->dir . '/go', '');
    syswrite($master, "typed\n");
    $c = $h->call1_finish($c);
    is($c->{status}, 5 << 8, 'the call went on: EXIT status 5')
        or diag explain $c->{frames}, $h->log_text;
    is(scalar @{ $c->{frames} }, 1, '... no STOP');
    my $got = got($h);
    is($got->{line}, 'typed', '... it read what was typed');
    is($got->{tcpgrp}, $exec, '... in the pty\'s foreground');
    ends_in_eio($master, '... EIO on the master');

    # A call without a pty: FGND is ignored.
    open(my $null, '<', '/dev/null') or die;
    $c = $h->call1_start($h->connect, offer => 'call1',
                         args => [ 'perl', $h->script, 'read', 'go' ],
                         stdio => [ $null ], attr => '');
    close $null;
    is($c->{accepted}, 'call1', 'call1 alone');
    ($exec) = wait_ready2($h);
    ok($exec, 'running') or return;
    fgnd($h, $c->{conn}, 0);
    fgnd($h, $c->{conn}, 1);
    spit($h->dir . '/go', '');
    $c = $h->call1_finish($c);
    is($c->{status}, 5 << 8, 'FGND 0 and 1 ignored: EXIT status 5')
        or diag explain $c->{frames}, $h->log_text;
    is(scalar @{ $c->{frames} }, 1, '... the only frame');
    is(got($h)->{line}, 'EOF', '... it read /dev/null');
    unlike($h->log_text, qr/FGND.*(?:skipped|bad)/, '... nothing bad logged');
    $h->cleanup_ok;
};

# spares(H): the server's spares (its children titled as such).
sub spares ($) {
    my ($h) = @_;
    my ($server) = $h->server_pids or return ();
    my @spares;
    opendir(my $d, '/proc') or die;
    foreach my $pid (grep { m/\A[0-9]+\z/ } readdir $d) {
        my ($ppid) = (slurp("/proc/$pid/stat") // '') =~ m/\) \S+ (\S+)/;
        next unless defined $ppid && $ppid == $server;
        push @spares, $pid
            if (PfiTest::cmdline_of($pid) // '') =~ m/^prefork-interp spare:/;
    }
    return @spares;
}

subtest 'spares forked while a pty call waits do not hold its slave' => sub {
    # One call at a time, two spares.  Call A runs; call B, with a pty,
    # waits for the slot, its slave held by the server; the spare that
    # replaces the one A took is forked meanwhile (0.1 s after A
    # started).  When A ends, B goes to the older spare, and the newer
    # one stays idle: it must not hold B's slave.
    my $h = PfiTest::Harness->new(init => $init, body => $body,
                                  opts => 'pool_size => 2, max_servers => 1');
    my $c = $h->call1($h->initial, args => [ 'perl', $h->script, 'exit' ],
                      attr => '');
    is($c->{status}, 3 << 8, 'first call');
    ok(wait_for(20, sub { spares($h) == 2 }), 'two spares');
    my $a = $h->call1_start($h->connect, args => [ 'perl', $h->script, 'wait' ],
                            attr => '');
    my ($b, $master, $path) = pty_call($h, $h->connect,
        [ 'perl', $h->script, 'report' ]);
    my $exec = wait_ready($h);
    ok($exec, 'call A runs');
    ok(wait_for(20, sub { spares($h) == 2 }), 'two spares again');
    ok(!-e $h->dir . '/report', 'call B waits');
    my @idle = spares($h);
    $h->signal($a->{conn}, 'SIGP', POSIX::SIGTERM());
    $a = $h->call1_finish($a);
    is(describe_status($a->{status}), 'signal ' . POSIX::SIGTERM(),
       'call A ended');
    $b = $h->call1_finish($b);
    is($b->{status}, 0, 'then call B ran');
    my $r = report($h);
    is($r->{fd0}, $path, '... with its pty');
    my @left = holders($path);
    is("@left", '', 'after EXIT nobody holds the slave');
    my @still = grep { alive($_) } @idle;
    is(scalar @still, 1, 'one of the spares is still idle')
        or diag "spares before: @idle; pid of call B: $r->{pid}";
    ends_in_eio($master, 'reading the master ends in EIO');
    $h->cleanup_ok;
};

subtest 'a group signal before the group exists goes to the executor' => sub {
    # Prefork::Interp::Signals::deliver on a child that leads no group
    # (as an executor before its setsid): ESRCH for the group, so the
    # child alone.
    require lib;
    lib->import(lib_dir());
    require Prefork::Interp::Signals;
    pipe(my $r, my $w) or die;
    my $pid = fork // die "fork: $!";
    if (!$pid) {
        close $r;
        $SIG{USR1} = sub { syswrite $w, "USR1\n"; POSIX::_exit(0) };
        syswrite $w, "ready\n";
        sleep 1 for 1 .. 30;
        POSIX::_exit(1);
    }
    close $w;
    is(PfiTest::read_bytes($r, 6), "ready\n", 'the child runs');
    isnt(getpgrp($pid), $pid, 'it leads no process group');
    is(Prefork::Interp::Signals::deliver('SIGG', SIGUSR1, $pid), undef,
       'SIGG USR1 delivered');
    my $got = PfiTest::read_bytes($r, 5);
    is($got, "USR1\n", 'the child got it');
    kill 'KILL', $pid unless $got eq "USR1\n";
    waitpid($pid, 0);
    is($?, 0, 'and exited');
};

subtest 'without pty1, and clients that break it' => sub {
    my $h = PfiTest::Harness->new(init => $init, body => $body);
    my @args = (args => [ 'perl', $h->script, 'report' ]);

    # call1 alone: the call runs as section 6 says.
    my $c = $h->call1($h->initial, @args, attr => '');
    is($c->{accepted}, 'call1', 'call1 offered: PFXA body call1');
    is($c->{status}, 0, '... and the call runs');
    my $r = report($h);
    is($r->{devtty}, 'No such device or address',
       '... without a controlling terminal');
    isnt($r->{sid}, $r->{pid}, '... in the server\'s session');
    is($r->{pgrp}, $r->{pid}, '... leading its process group');

    $c = $h->call1($h->connect, @args, offer => 'pty1');
    ok(!defined $c->{accepted}, 'pty1 alone: no accept frame');
    is($c->{v1_status}, 0, '... a v1 call');
    report($h);

    my @bad = (
        [ 'call1 only, then pty=0', offer => 'call1', attr => "pty=0\0",
          log => qr/bad request from caller: ATTR has a pty entry, but pty1 was not accepted$/m ],
        [ 'pty=3', attr => "pty=3\0",
          log => qr/bad request from caller: ATTR pty has a malformed value '3'$/m ],
        [ 'pty=', attr => "pty=\0",
          log => qr/bad request from caller: ATTR pty has a malformed value ''$/m ],
        [ 'ptybg=2', attr => "pty=0,1,2\0ptybg=2\0",
          log => qr/bad request from caller: ATTR ptybg has a malformed value '2'$/m ],
        [ 'no pty key', attr => "umask=022\0",
          log => qr/bad request from caller: ATTR has no pty entry, with pty1 accepted$/m ],
        [ 'no slave', attr => "fds=\0pty=0\0", after => "\0",
          log => qr/bad request from caller: pty's slave: message has no file descriptor attached$/m ],
        [ 'hang-up before the slave', attr => "pty=0,1\0", hang_up => 1,
          log => qr/info: caller hung up before sending pty's slave$/m ],
    );
    foreach my $case (@bad) {
        my ($name, %a) = @$case;
        my ($after, $hang_up, $log) = delete @a{qw(after hang_up log)};
        $c = $h->call1_start($h->connect, @args, offer => 'call1,pty1', %a);
        ok(defined $c->{accepted}, "$name: accepted");
        syswrite($c->{conn}, $after) if defined $after;
        shutdown($c->{conn}, 1) if $hang_up;
        my $f = $h->read_frame($c->{conn}, 10);
        ok(!$f, "$name: connection closed, nothing run") or diag explain $f;
        close $c->{conn};
        like($h->log_text, $log, "$name: logged");
        ok(!-e $h->dir . '/report', "$name: the script did not run");
        my ($master, $slave) = open_pty();
        my $next = $h->call1($h->connect, @args, offer => 'call1,pty1',
                             attr => $h->attr_body(pty => '0,1,2'),
                             slave => fileno $slave);
        close $slave;
        close $master;
        is($next->{status}, 0, "after '$name': the next call works");
        is(report($h)->{devtty}, 'ok', "after '$name': with its pty");
    }
    $h->cleanup_ok;
};

subtest 'a first call run in place takes call1 alone' => sub {
    my $h = PfiTest::Harness->new(announce => 'inplace1', no_wait => 1,
                                  init => $init, body => $body);
    my $conn = $h->initial;
    is(PfiTest::read_bytes($conn, 16), "PFI\n\0\0\0\x08inplace1", 'greeted');
    open(my $null, '<', '/dev/null') or die;
    $h->send_request($conn, fds => [ (fileno $null) x 3 ],
                     env => [ 'PATH=/usr/bin:/bin',
                              'PREFORK_INTERP_EXT=call1,pty1' ],
                     args => [ 'perl', $h->script, 'exit' ]);
    close $null;
    is_deeply($h->read_frame($conn, 20), [ 'PFXA', 'call1' ],
              'call1,pty1 offered: PFXA body call1');
    $h->send_frame($conn, 'ATTR', '');
    is(describe_status($h->wait_setup(20)), 'exit 3',
       'the call ran in the setup process');
    $h->cleanup_ok;
};

done_testing;
