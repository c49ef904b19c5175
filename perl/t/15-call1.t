#!/usr/bin/perl
# Extension call1 against a real server of ours, with the test playing
# the client (PfiTest::Harness, which encodes everything itself from
# protocol.md): negotiation, the caller's attributes (protocol.md 6.3,
# 6.4), extra fds, signals forwarded, STOP and EXIT frames (6.5), and
# clients that break the rules.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use IO::FDPass;
use POSIX qw(WIFEXITED WEXITSTATUS WIFSIGNALED WTERMSIG SIGINT SIGTERM
             SIGKILL SIGSEGV SIGUSR1 SIGUSR2 SIGTSTP SIGCONT SIGSTOP SIGHUP
             SIGPIPE SIGQUIT);
use PfiTest qw(slurp spit wait_for describe_status alive);
use Test::More;
use Time::HiRes ();

# A server that closes a connection must not kill the test.
$SIG{PIPE} = 'IGNORE';

# Scripts.  Every mode stops itself after a while (alarm), so nothing
# can outlive a failed test for long.
my $init = <<'EOF';
alarm 0;
$SIG{USR1} = sub {
    syswrite STDOUT, "USR1 in " . ($$ == ($main::EXEC // 0) ? 'executor'
                                                            : 'child') . "\n";
};
$SIG{USR2} = 'IGNORE';
$SIG{TERM} = sub {
    syswrite STDOUT, "TERM in " . ($$ == ($main::EXEC // 0) ? 'executor'
                                                            : 'child') . "\n";
    POSIX::_exit(42);
};
# The script's own file, at a number a caller may use too (60; far
# above the protocol fds the harness gives the setup process).
open(my $tmp, '<', $0) or die "open $0: $!";
POSIX::dup2(fileno $tmp, 60) // die "dup2: $!";
close $tmp;
open($main::INIT_FH, '<&=', 60) or die "fdopen 60: $!";
EOF

my $body = <<'EOF';
use POSIX ();
$main::EXEC = $$;
alarm 60;
my $mode = $ARGV[0] // '';
sub ready {
    my ($name, @what) = @_;
    open(my $f, '>', "$name.tmp") or die; print $f "@what\n"; close $f;
    rename "$name.tmp", $name or die;
}
sub sigs {
    my ($hex) = @_;
    my $n = Math::BigInt->from_hex($hex);
    # Not 32 and 33: glibc's own, which Perl cannot see or change, and
    # which a test's caller may have ignored.
    return join ',', grep { $n->copy->brsft($_ - 1)->band(1)->is_one }
        1..31, 34..64;
}
if ($mode eq 'state') {
    require Math::BigInt;
    require 'syscall.ph';
    printf "umask=%03o\n", umask;
    printf "nice=%d\n", getpriority(0, 0);
    my @r;
    for my $res (0..15) {
        my $b = "\0" x 16;
        syscall(&SYS_prlimit64, 0, $res, 0, $b) == 0 or die "prlimit: $!";
        push @r, "$res=" . join ',', map { $_ == ~0 ? 'inf' : $_ }
                                     unpack 'QQ', $b;
    }
    print "rlimits=@r\n";
    open(my $st, '<', '/proc/self/status') or die;
    while (<$st>) {
        print "$1=", sigs($2), "\n" if m/^(Sig(?:Ign|Blk|Cgt)):\s*(\S+)/;
    }
    print "sig=", join(' ', map {
        "$_=" . (ref $SIG{$_} ? 'CODE' : $SIG{$_} // 'undef')
    } qw(INT HUP PIPE QUIT TERM USR1 USR2)), "\n";
    printf "leader=%d\n", getpgrp() == $$ ? 1 : 0;
    print "ext=", join(',', grep { m/^PREFORK/ } sort keys %ENV), "\n";
    exit 0;
}
if ($mode eq 'fds') {
    opendir(my $d, '/proc/self/fd') or die;
    my @fds = sort { $a <=> $b } grep {
        m/\A[0-9]+\z/ && (readlink("/proc/self/fd/$_") // '') !~ m{^/proc/}
    } readdir $d;
    print "fds=", join(' ', map { "$_:" . readlink("/proc/self/fd/$_") } @fds),
          "\n";
    print "init-fd=", fileno($main::INIT_FH), "\n";
    # Not close-on-exec: a program we run sees them.
    my ($in, $out) = @ARGV[1, 2];
    system('/bin/sh', '-c', "cat <&$in; echo 'to fd $out' >&$out") == 0
        or die "sh: $?" if defined $out;
    exit 0;
}
if ($mode eq 'signals') {
    my $child = fork // die "fork: $!";
    if (!$child) { alarm 60; sleep 1 while 1 }
    ready('ready', $$, $child);
    select(undef, undef, undef, 0.05) for 1..1200;
    exit 1;
}
if ($mode eq 'stop') {
    $SIG{TERM} = 'DEFAULT';
    ready('ready', $$);
    for my $i (1..1200) {
        open(my $f, '>', 'count.tmp') or die; print $f "$i\n"; close $f;
        rename 'count.tmp', 'count' or die;
        select(undef, undef, undef, 0.05);
    }
    exit 1;
}
if ($mode eq 'exit') {
    my $how = $ARGV[1];
    exit $how if $how =~ m/\A[0-9]+\z/;
    if ($how eq 'die') {
        $! = 0;    # or perl's exit status is errno (as in a direct run)
        die "dying\n";
    }
    if ($how =~ m/\Akill:(\w+)\z/) {
        $SIG{$1} = 'DEFAULT';
        kill $1, $$;
        sleep 10;
    }
    exit 99;
}
if ($mode eq 'long') {
    ready('ready', $$);
    sleep 30;
    exit 0;
}
print "mode?\n";
exit 0;
EOF

# state(OUTPUT) => { key => value } from the 'state' mode's lines.
sub state_of ($) {
    my ($out) = @_;
    return { map { m/\A([^=]+)=(.*)\z/ ? ($1 => $2) : () } split /\n/, $out };
}

sub proc_state ($) {
    my ($pid) = @_;
    my $stat = slurp("/proc/$pid/stat") // return '';
    return $stat =~ m/\) (\S) / ? $1 : '';
}

# ready(H): waits for the script's "ready" file; returns its words and
# removes it.
sub wait_ready ($) {
    my ($h) = @_;
    my $f = $h->dir . '/ready';
    wait_for(20, sub { -e $f }) or return ();
    my @w = split ' ', slurp($f);
    unlink $f;
    return @w;
}

my $nofile_hard = (split ' ', (grep { m/^Max open files/ }
                               split /\n/, slurp('/proc/self/limits'))[0])[4];

subtest 'negotiation' => sub {
    my $h = PfiTest::Harness->new(init => $init, body => $body);
    is($h->setup_status, 0, 'server started') or diag $h->setup_err;
    my $c = $h->call1($h->initial, args => [ 'perl', $h->script, 'state' ]);
    is($c->{accepted}, 'call1', 'call1 offered: accept frame PFXA "call1"');
    is($c->{status}, 0, 'EXIT frame with status 0');
    is(scalar @{ $c->{frames} }, 1, 'EXIT was the only frame');
    like($c->{stdout}, qr/^ext=$/m,
         'the script does not see PREFORK_INTERP_EXT');

    $c = $h->call1($h->connect, offer => 'future,call1,other',
                   args => [ 'perl', $h->script, 'exit', '4' ]);
    is($c->{accepted}, 'call1', 'among other names: only call1 accepted');
    is($c->{status}, 4 << 8, 'EXIT 0x400');

    # Frames before ATTR: an unknown one is skipped; a SIGP is held
    # until the executor exists, and reaches it only once it has its
    # dispositions (its USR1 handler) and mask: it was blocked since
    # the fork.
    $c = $h->call1($h->connect,
                   before_attr => $h->frame('XTRA', 'x' x 1000)
                                . $h->frame('SIGP', pack('N', SIGUSR1)),
                   args => [ 'perl', $h->script, 'exit', '0' ]);
    is($c->{status}, 0, 'frames before ATTR: the call runs');
    like($c->{stdout}, qr/^USR1 in /m,
         'an early SIGP USR1 reached the script\'s handler');

    # The same with no spare: the executor is forked for the call.
    my $h0 = PfiTest::Harness->new(init => $init, body => $body,
                                   opts => 'pool_size => 0');
    is($h0->setup_status, 0, 'server without spares started')
        or diag $h0->setup_err;
    foreach my $n (1 .. 3) {
        my $c0 = $h0->call1($h0->connect,
                            before_attr => $h0->frame('SIGP', pack('N', SIGUSR1)),
                            args => [ 'perl', $h0->script, 'exit', '0' ]);
        is($c0->{status}, 0, "no spares, call $n: runs");
        like($c0->{stdout}, qr/^USR1 in /m,
             "no spares, call $n: the early SIGP reached the executor");
    }
    $h0->cleanup_ok;

    $c = $h->call1($h->connect, offer => 'future',
                   args => [ 'perl', $h->script, 'exit', '5' ]);
    ok(!defined $c->{accepted}, 'nothing we know offered: no accept frame');
    is($c->{v1_status}, 5 << 8, 'the answer is a v1 status');

    $h->cleanup_ok;
};

subtest 'the caller\'s attributes are applied' => sub {
    my $h = PfiTest::Harness->new(init => $init, body => $body);
    my @args = (args => [ 'perl', $h->script, 'state' ]);

    # What the server has: a call with an empty ATTR, and a v1 call.
    my $c = $h->call1($h->initial, @args, attr => '');
    my $server = state_of($c->{stdout});
    is($c->{status}, 0, 'empty ATTR: runs') or diag $c->{stderr};
    my (undef, $st, $out) = $h->call($h->connect, @args);
    my $v1 = state_of($out);
    is($st, 0, 'v1 call runs');
    foreach my $s ($server, $v1) {
        is($s->{leader}, 1, 'the executor leads its own process group');
        is($s->{SigBlk}, '', 'nothing blocked');
        is($s->{SigIgn}, join(',', POSIX::SIGFPE(), SIGUSR2),
           'only the script\'s own IGNORE (USR2) and perl\'s (FPE)');
        is($s->{SigCgt}, join(',', SIGUSR1, SIGTERM),
           'the script\'s handlers (USR1, TERM)');
        is($s->{sig}, 'INT=undef HUP=undef PIPE=undef QUIT=undef'
           . ' TERM=CODE USR1=CODE USR2=IGNORE', '%SIG');
    }
    is_deeply($v1, $server, 'v1 and an empty ATTR give the same');

    my $mask = $server->{umask} eq '027' ? '077' : '027';
    my $nice = $server->{nice} + 3;
    $c = $h->call1($h->connect, @args, attr => $h->attr_body(
        umask => $mask, nice => $nice,
        rlimit => [ "7,200,$nofile_hard", '4,0,0', '3,8388608,inf' ],
        sigign => join(',', SIGHUP, SIGINT, SIGPIPE, SIGUSR1, SIGQUIT),
        sigmask => join(',', SIGUSR1, SIGHUP),
        fds => '', unknown => 'ignored'));
    is($c->{status}, 0, 'ATTR call runs') or diag $c->{stderr};
    my $s = state_of($c->{stdout});
    is($s->{umask}, $mask, "umask $mask");
    is($s->{nice}, $nice, "nice $nice");
    like($s->{rlimits}, qr/(?:^| )7=200,\Q$nofile_hard\E(?: |$)/,
         'RLIMIT_NOFILE 200');
    like($s->{rlimits}, qr/(?:^| )4=0,0(?: |$)/, 'RLIMIT_CORE 0');
    like($s->{rlimits}, qr/(?:^| )3=8388608,inf(?: |$)/, 'RLIMIT_STACK');
    is($s->{SigIgn}, join(',', sort { $a <=> $b } SIGHUP, SIGINT, SIGQUIT,
                          POSIX::SIGFPE(), SIGUSR2, SIGPIPE),
       'ignored: the caller\'s (HUP, INT, QUIT, PIPE), the script\'s USR2;'
       . ' not USR1, which has a handler');
    is($s->{SigCgt}, join(',', SIGUSR1, SIGTERM), 'handlers kept');
    is($s->{sig}, 'INT=IGNORE HUP=IGNORE PIPE=IGNORE QUIT=IGNORE'
       . ' TERM=CODE USR1=CODE USR2=IGNORE', '%SIG says the same');
    is($s->{SigBlk}, join(',', SIGHUP, SIGUSR1), 'blocked: the caller\'s mask');
    is($s->{leader}, 1, 'process-group leader');

    # A limit the kernel refuses (RLIMIT_NOFILE cannot be unlimited):
    # the server's hard limit, the soft one no higher.
    $c = $h->call1($h->connect, @args,
                   attr => $h->attr_body(rlimit => '7,inf,inf'));
    $s = state_of($c->{stdout});
    my ($our) = $server->{rlimits} =~ m/(?:^| )7=\d+,(\d+)/;
    like($s->{rlimits}, qr/(?:^| )7=\Q$our,$our\E(?: |$)/,
         "refused limit: the server's hard limit ($our) for both");
    like($h->log_text, qr/^(?!.*resource limit 7)/s, 'the fallback worked,'
         . ' nothing logged');

    # The next call starts from the server's state again.
    $c = $h->call1($h->connect, @args, attr => '');
    is_deeply(state_of($c->{stdout}), $server,
              'the next call has the server\'s attributes again');
    $h->cleanup_ok;
};

subtest 'a server started by a caller that ignores signals (C client)' => sub {
    # The C client passes its first caller's ignored signals to the
    # setup process; they are not the script's (protocol.md 6.6).
    my $h = PfiTest::Harness->new(
        init => $init . 'POSIX::sigprocmask(POSIX::SIG_BLOCK(),'
                      . ' POSIX::SigSet->new(28));',
        body => $body, setup_ignore => [qw(INT QUIT HUP)]);
    my (undef, $st, $out) = $h->call($h->initial,
                                     args => [ 'perl', $h->script, 'state' ]);
    my $s = state_of($out);
    is($s->{sig}, 'INT=undef HUP=undef PIPE=undef QUIT=undef'
       . ' TERM=CODE USR1=CODE USR2=IGNORE',
       'v1: inherited IGNOREs are defaults again, the script\'s kept');
    is($s->{SigBlk}, 28, 'v1: the script\'s mask (SIGWINCH)');
    my $c = $h->call1($h->connect, args => [ 'perl', $h->script, 'state' ],
                      attr => $h->attr_body(sigign => SIGQUIT,
                                            sigmask => ''));
    $s = state_of($c->{stdout});
    is($s->{sig}, 'INT=undef HUP=undef PIPE=undef QUIT=IGNORE'
       . ' TERM=CODE USR1=CODE USR2=IGNORE', 'call1: the caller\'s IGNOREs');
    is($s->{SigBlk}, '', 'call1: the caller\'s (empty) mask');
    $h->cleanup_ok;
};

subtest 'extra fds' => sub {
    my $h = PfiTest::Harness->new(init => $init, body => $body);
    my @args = (args => [ 'perl', $h->script, 'fds' ]);
    my $c = $h->call1($h->initial, @args);
    my ($init_fd) = $c->{stdout} =~ m/^init-fd=(\d+)$/m;
    is($init_fd, 60, "the script's own file is fd 60");
    like($c->{stdout}, qr/^fds=0:\S+ 1:\S+ 2:\S+ \Q$init_fd\E:\S+$/m,
         'no extra fds: 0, 1, 2 and the script\'s');

    my $dir = $h->dir;
    spit("$dir/three", "content of three\n");
    spit("$dir/seven", "seven\n");
    open(my $three, '<', "$dir/three") or die;
    open(my $seven, '<', "$dir/seven") or die;
    pipe(my $pr, my $pw) or die;
    # Passed as the caller's 3 (a file), 4 (the pipe), 7 and 9, plus
    # one at the number the script has open itself (60).
    my ($n3, $np, $n7, $n9) = (3, 4, 7, 9);
    my @extra = sort { $a->[0] <=> $b->[0] }
                ([ $n3, fileno $three ], [ $np, fileno $pw ],
                 [ $n7, fileno $seven ], [ $n9, fileno $three ],
                 [ $init_fd, fileno $seven ]);
    $c = $h->call1_start($h->connect, args => [ 'perl', $h->script, 'fds',
                                                 $n3, $np ],
                         extra => \@extra);
    is($c->{accepted}, 'call1', 'accepted');
    close $pw;
    $c = $h->call1_finish($c);
    is($c->{status}, 0, 'runs') or diag $c->{stderr};
    my ($fds) = $c->{stdout} =~ m/^fds=(.*)$/m;
    my %fd = map { split /:/, $_, 2 } split ' ', $fds;
    is($fd{$n3}, "$dir/three", "fd $n3 is the caller's");
    like($fd{$np}, qr/^pipe:/, "fd $np is the pipe");
    is($fd{$n7}, "$dir/seven", "fd $n7");
    is($fd{$n9}, "$dir/three", "fd $n9 (a second copy of one file)");
    is($fd{$init_fd}, $h->script,
       "fd $init_fd: the script's own file wins");
    my $want = join ' ', sort { $a <=> $b } 0, 1, 2, $n3, $np, $n7, $n9,
                                           $init_fd;
    is(join(' ', sort { $a <=> $b } keys %fd), $want,
       'no other fd: copies and protocol fds closed');
    like($c->{stdout}, qr/^content of three$/m,
         "a program run by the script reads fd $n3 (not close-on-exec)");
    like($h->log_text, qr/warning: the caller's fd $init_fd is not passed on: the script has its own fd $init_fd open$/m,
         'the clash is logged');

    my $rbits = '';
    vec($rbits, fileno $pr, 1) = 1;
    ok(select($rbits, undef, undef, 10) > 0, 'the pipe is readable');
    my $got = '';
    while (select(my $r = $rbits, undef, undef, 10) > 0) {
        my $n = sysread($pr, $got, 4096, length $got);
        last unless $n;
    }
    is($got, "to fd $np\n", "what was written to fd $np, then EOF: nobody"
       . ' else holds the pipe once the call has ended');
    $h->cleanup_ok;
};

subtest 'signals forwarded: SIGP to the executor, SIGG to its group' => sub {
    my $h = PfiTest::Harness->new(init => $init, body => $body);
    my $c = $h->call1_start($h->initial,
                            args => [ 'perl', $h->script, 'signals' ],
                            attr => '');
    my ($exec, $child) = wait_ready($h);
    ok($exec && $child, 'executor and its child are running') or return;
    my $conn = $c->{conn};
    # Unknown frames are skipped, whatever their size.
    $h->send_frame($conn, 'ZZZZ', 'x' x 65536);
    $h->send_frame($conn, 'zz01', '');
    $h->signal($conn, 'SIGP', SIGUSR1);
    ok(wait_for(10, sub { slurp($c->{out}) =~ m/USR1 in executor/ }),
       'SIGP USR1: the executor\'s handler ran');
    Time::HiRes::sleep(0.3);
    unlike(slurp($c->{out}), qr/USR1 in child/, '... and only the executor\'s');
    $h->signal($conn, 'SIGG', SIGUSR1);
    ok(wait_for(10, sub { slurp($c->{out}) =~ m/USR1 in child/ }),
       'SIGG USR1: the child\'s handler ran too');
    my @lines = grep { m/^USR1/ } split /\n/, slurp($c->{out});
    is(scalar @lines, 3, 'three USR1 deliveries in all');
    $h->signal($conn, 'SIGP', 99);
    $h->signal($conn, 'SIGG', SIGTERM);
    $c = $h->call1_finish($c);
    is($c->{status}, 42 << 8, 'SIGG TERM: the handler\'s exit status 42');
    like($c->{stdout}, qr/^TERM in executor$/m, 'executor got TERM');
    like($c->{stdout}, qr/^TERM in child$/m, 'child got TERM');
    like($h->log_text, qr/warning: caller sent a bad 'SIGP' frame: signal number 99 is out of range; ignored/,
         'signal 99 logged and ignored');
    ok(wait_for(5, sub { !alive($child) }), 'the child is gone');
    $h->cleanup_ok;
};

subtest 'job control: STOP frames, SIGG SIGCONT' => sub {
    my $h = PfiTest::Harness->new(init => $init, body => $body);
    my $c = $h->call1_start($h->initial,
                            args => [ 'perl', $h->script, 'stop' ],
                            attr => '');
    my ($exec) = wait_ready($h);
    ok($exec, 'running') or return;
    my $conn = $c->{conn};
    my $count = sub { (slurp($h->dir . '/count') // 0) + 0 };

    foreach my $case ([ 'SIGG', SIGTSTP ], [ 'SIGP', SIGSTOP ],
                      [ 'SIGG', 21 ]) {
        my ($tag, $sig) = @$case;
        $h->signal($conn, $tag, $sig);
        my $f = $h->read_frame($conn, 10);
        is_deeply($f, [ 'STOP', pack('N', $sig) ],
                  "$tag $sig: STOP frame with signal $sig");
        is(proc_state($exec), 'T', '... the executor is stopped');
        my $n = $count->();
        Time::HiRes::sleep(0.3);
        is($count->(), $n, '... and does not run');
        $h->signal($conn, 'SIGG', SIGCONT);
        ok(wait_for(5, sub { $count->() > $n }), 'SIGG CONT: it runs again');
    }
    $h->signal($conn, 'SIGP', SIGTERM);
    $c = $h->call1_finish($c);
    is($c->{status}, SIGTERM, 'EXIT: killed by SIGTERM');
    is(scalar @{ $c->{frames} }, 1, 'no frame but EXIT after the last CONT');

    # A caller that goes away while its call is stopped: the call is
    # continued to meet its SIGINT.
    $c = $h->call1_start($h->connect, args => [ 'perl', $h->script, 'stop' ],
                         attr => '');
    ($exec) = wait_ready($h);
    $h->signal($c->{conn}, 'SIGG', SIGTSTP);
    is_deeply($h->read_frame($c->{conn}, 10), [ 'STOP', pack('N', SIGTSTP) ],
              'second call stopped');
    close $c->{conn};
    ok(wait_for(10, sub { !alive($exec) }),
       'caller gone while stopped: the executor is gone');
    like($h->log_text, qr/info: caller hung up; stopping the call/,
         'logged at info level');
    $h->cleanup_ok;
};

subtest 'EXIT frame: the exact wait status' => sub {
    my $h = PfiTest::Harness->new(init => $init, body => $body);
    my @cases = (
        [ '0', 0 ], [ '3', 3 << 8 ], [ '255', 255 << 8 ], [ 'die', 255 << 8 ],
        [ 'kill:TERM', SIGTERM ], [ 'kill:KILL', SIGKILL ],
        [ 'kill:INT', SIGINT ], [ 'kill:SEGV', SIGSEGV ],
        [ 'kill:USR1', SIGUSR1 ],
    );
    my $conn = $h->initial;
    foreach my $case (@cases) {
        my ($how, $want) = @$case;
        my $c = $h->call1($conn, args => [ 'perl', $h->script, 'exit', $how ],
                          attr => $h->attr_body(rlimit => '4,0,0'));
        is($c->{status}, $want, "$how: EXIT " . describe_status($want));
        is(scalar @{ $c->{frames} }, 1, "$how: EXIT is the only frame");
        $conn = $h->connect;
    }
    close $conn;
    $h->cleanup_ok;
};

subtest 'caller gone mid-call' => sub {
    my $h = PfiTest::Harness->new(init => $init, body => $body);
    my $c = $h->call1_start($h->initial, args => [ 'perl', $h->script, 'long' ],
                            attr => '');
    my ($exec) = wait_ready($h);
    ok($exec && alive($exec), 'running');
    close $c->{conn};
    ok(wait_for(10, sub { !alive($exec) }), 'hang-up: the executor stopped');
    $h->cleanup_ok;
};

subtest 'clients that break call1 do not hurt the server' => sub {
    my $h = PfiTest::Harness->new(init => $init, body => $body,
                                  opts => '');
    my $ok = $h->call1($h->initial, args => [ 'perl', $h->script, 'exit', 0 ]);
    is($ok->{status}, 0, 'first call');
    my @args = (args => [ 'perl', $h->script, 'exit', '6' ]);

    my @bad = (
        [ 'ATTR not ending in NUL', attr => 'umask=022' ],
        [ 'malformed umask', attr => "umask=999\0" ],
        [ 'fds not ascending', attr => "fds=5,4\0" ],
        [ 'signal 0 in sigign', attr => "sigign=0\0" ],
        [ 'oversized frame before ATTR',
          before_attr => 'BIG!' . pack('N', 65537) ],
        [ 'fds announced, none sent', attr => "fds=3\0",
          after => sub { syswrite($_[0], "\0") } ],
        [ 'fds announced, hang-up', attr => "fds=3,4\0",
          after => sub { IO::FDPass::send(fileno $_[0], 0) } ],
    );
    foreach my $case (@bad) {
        my ($name, %a) = @$case;
        my $after = delete $a{after};
        my $c = $h->call1_start($h->connect, @args, %a);
        is($c->{accepted}, 'call1', "$name: accepted");
        $after->($c->{conn}) if $after;
        shutdown($c->{conn}, 1) if $name =~ m/hang-up/;
        my $f = $h->read_frame($c->{conn}, 10);
        ok(!$f, "$name: connection closed, nothing run")
            or diag explain $f;
        close $c->{conn};
        my $next = $h->call1($h->connect, @args);
        is($next->{status}, 6 << 8, "after '$name': the next call works");
    }

    # Mid-call.
    my @mid = (
        [ 'oversized frame', 'SIGP' . pack('N', 65537) . 'x' x 100,
          qr/bad frame from caller: frame 'SIGP' has a body of 65537 bytes \(the limit is 65536\); dropping the call/ ],
        [ 'hang-up inside a frame', 'SIGG' . pack('N', 4) . "\0",
          qr/caller hung up in the middle of a frame/ ],
    );
    foreach my $case (@mid) {
        my ($name, $bytes, $log_re) = @$case;
        my $c = $h->call1_start($h->connect,
                                args => [ 'perl', $h->script, 'long' ],
                                attr => '');
        my ($exec) = wait_ready($h);
        ok($exec, "$name: running");
        syswrite($c->{conn}, $bytes);
        shutdown($c->{conn}, 1) if $name =~ m/hang-up/;
        my $f = $h->read_frame($c->{conn}, 10);
        ok(!$f, "$name: connection closed without EXIT");
        ok(wait_for(10, sub { !alive($exec) }),
           "$name: the executor was stopped");
        like($h->log_text, $log_re, "$name: logged");
        close $c->{conn};
        my $next = $h->call1($h->connect, @args);
        is($next->{status}, 6 << 8, "after '$name': the next call works");
    }

    # A malformed SIGP is skipped (protocol.md 6.2): the call goes on.
    {
        my $c = $h->call1_start($h->connect,
                                args => [ 'perl', $h->script, 'long' ],
                                attr => '');
        my ($exec) = wait_ready($h);
        ok($exec, 'malformed SIGP: running');
        syswrite($c->{conn}, 'SIGP' . pack('N', 3) . "\0\0\1");
        $h->signal($c->{conn}, 'SIGP', SIGTERM);
        $c = $h->call1_finish($c);
        like($c->{stdout}, qr/^TERM in executor$/m,
             'malformed SIGP skipped, the next one delivered')
            or diag explain $c;
        like($h->log_text,
             qr/bad frame from caller, skipped: frame 'SIGP' has a body of 3 bytes, not 4/,
             'malformed SIGP logged');
    }

    my $log = $h->log_text;
    like($log, qr/warning: bad request from caller: ATTR body does not end in a NUL$/m,
         'ATTR without NUL logged');
    like($log, qr/bad request from caller: ATTR umask has a malformed value '999'$/m,
         'bad umask logged');
    like($log, qr/bad request from caller: ATTR fds has a malformed value '5,4'$/m,
         'bad fds logged');
    like($log, qr/bad request from caller: frame 'BIG!' has a body of 65537 bytes/,
         'oversized frame before ATTR logged');
    like($log, qr/bad request from caller: caller's fd 3: message has no file descriptor attached$/m,
         'missing fd logged');
    like($log, qr/info: caller hung up before sending caller's fd 4$/m,
         'hang-up during the fds logged');
    unlike($log, qr/monitor \[\d+\] failed|error: /, 'no monitor failed');
    $h->cleanup_ok;
};

subtest 'without a pidfd or signalfd (SIGCHLD polling)' => sub {
    my $h = PfiTest::Harness->new(init => $init . '$Prefork::Interp::USE_PIDFD = 0;',
                                  body => $body);
    my $c = $h->call1_start($h->initial, args => [ 'perl', $h->script, 'stop' ],
                            attr => '');
    my ($exec) = wait_ready($h);
    $h->signal($c->{conn}, 'SIGG', SIGTSTP);
    is_deeply($h->read_frame($c->{conn}, 10), [ 'STOP', pack('N', SIGTSTP) ],
              'STOP frame');
    $h->signal($c->{conn}, 'SIGG', SIGCONT);
    $h->signal($c->{conn}, 'SIGP', SIGTERM);
    $c = $h->call1_finish($c);
    is($c->{status}, SIGTERM, 'EXIT');
    foreach my $code (0, 1, 2) {
        $c = $h->call1($h->connect,
                       args => [ 'perl', $h->script, 'exit', $code ]);
        is($c->{status}, $code << 8, "exit $code");
    }
    $h->cleanup_ok;
};

done_testing;
