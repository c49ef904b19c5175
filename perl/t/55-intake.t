#!/usr/bin/perl
# How the server takes calls in (protocol.md 4.1), with the test playing
# the client (PfiTest::Harness) or using ours: peers of another uid get
# nothing, idle and half-done connections cost real callers nothing and
# are dropped by age and number, requests are bounded in size and in the
# server's memory, complete calls wait in the server for a slot, and
# executors die with their server.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use IO::FDPass;
use PfiTest qw(fixture slurp spit wait_for describe_status alive
               server_helpers);
use POSIX ();
use Socket qw(AF_UNIX SOCK_STREAM pack_sockaddr_un);
use Test::More;
use Time::HiRes ();

# A write to a connection the server has closed is EPIPE, not death.
$SIG{PIPE} = 'IGNORE';

use constant MAX_REQUEST => 6 * 1024 * 1024 + 4 * 1024;

my $body = <<'EOF';
use Time::HiRes ();
my $mode = $ARGV[0] // '';
# Writes "SERVER-PID EXECUTOR-PID" to FILE, atomically.
sub ready {
    my ($file) = @_;
    open(my $f, '>', "$file.tmp") or die "ready: $!";
    print $f getppid(), " $$\n";
    close $f;
    rename "$file.tmp", $file or die "rename: $!";
}
# Waits (at most 30 s) for FILE to exist.
sub wait_file {
    my ($file) = @_;
    for (1..600) { return if -e $file; Time::HiRes::sleep(0.05) }
}
if ($mode eq 'long') {          # long MARKER: until killed or 60 s
    ready($ARGV[1]);
    sleep 60;
} elsif ($mode eq 'until') {    # until MARKER DONE: until DONE exists
    ready($ARGV[1]);
    wait_file($ARGV[2]);
} elsif ($mode eq 'note') {     # note NAME: append NAME to order.txt
    open(my $f, '>>', 'order.txt') or die;
    printf $f "%s %.6f\n", $ARGV[1], Time::HiRes::time();
    close $f;
} elsif ($mode eq 'env') {      # what the environment looks like
    print 'A=', (defined $ENV{A} ? length $ENV{A} : 'undef'),
          ' B=', (defined $ENV{B} ? length $ENV{B} : 'undef'),
          ' N=', scalar(keys %ENV), "\n";
}
exit 0;
EOF

# Peak resident set of PID, in bytes (VmHWM).
sub peak_rss ($) {
    my ($pid) = @_;
    my ($kb) = (slurp("/proc/$pid/status") // '') =~ m/^VmHWM:\s+([0-9]+) kB/m;
    return defined $kb ? $kb * 1024 : undef;
}

sub fd_count ($) {
    my ($pid) = @_;
    opendir(my $d, "/proc/$pid/fd") or return undef;
    return scalar grep { m/\A[0-9]+\z/ } readdir $d;
}

sub median {
    my @s = sort { $a <=> $b } @_;
    return $s[ int(@s / 2) ];
}

# Whether the server still holds CONN: nothing to read (the greeting
# has been read), no EOF.
sub still_open ($) {
    my ($conn) = @_;
    my $rbits = '';
    vec($rbits, fileno($conn), 1) = 1;
    return select($rbits, undef, undef, 0) == 0;
}

# One timed plain call (exit 0); returns its duration, or undef if it
# did not come back with status 0.
sub timed_call ($) {
    my ($h) = @_;
    my $t0 = Time::HiRes::time();
    my (undef, $st) = $h->call($h->connect, args => [ 'perl', $h->script ],
                               timeout => 20);
    return defined $st && $st == 0 ? Time::HiRes::time() - $t0 : undef;
}

# Starts a call through the harness without waiting for it: greeting,
# then the whole request.  Returns the connection.
sub start_call ($@) {
    my ($h, @args) = @_;
    my $conn = $h->connect;
    $h->read_bytes($conn, 8, 5) eq "PFI\n\0\0\0\0" or return undef;
    open(my $null, '+<', '/dev/null') or die;
    $h->send_request($conn, fds => [ (fileno $null) x 3 ],
                     args => [ 'perl', $h->script, @args ]);
    return $conn;
}

# The wait status that comes back on CONN (within 10 s), or undef.
sub status_of ($$) {
    my ($h, $conn) = @_;
    return undef unless defined $conn;
    my $st = $h->read_bytes($conn, 4, 10);
    return length($st) == 4 ? unpack('N', $st) : undef;
}

# The children of PID that are spare executors (by their title).
sub spares_of ($) {
    my ($pid) = @_;
    return map { $_->{pid} }
        grep { $_->{ppid} == $pid
               && (slurp("/proc/$_->{pid}/cmdline") // '') =~ m/prefork-interp spare: / }
        PfiTest::_all_procs();
}

# Whether the children of server PID are its two spares, and nothing
# else but its forker.
sub only_spares ($) {
    my ($pid) = @_;
    my @children = grep { $_->{ppid} == $pid } PfiTest::_all_procs();
    return @children == 2 + server_helpers() && spares_of($pid) == 2;
}

sub server_pid ($) {
    my ($h) = @_;
    my @p = $h->server_pids;
    return @p == 1 ? $p[0] : undef;
}

# In a child about to do something as another user: becomes UID, GID
# (no supplementary groups).
sub become ($$) {
    my ($uid, $gid) = @_;
    $) = "$gid $gid";
    POSIX::setgid($gid);
    POSIX::setuid($uid);
}

# Runs CODE as UID, GID in a child; returns whether it returned true.
sub as_user ($$$) {
    my ($uid, $gid, $code) = @_;
    my $pid = fork // die "fork: $!";
    if (!$pid) {
        become($uid, $gid);
        POSIX::_exit($> == $uid && $code->() ? 0 : 1);
    }
    waitpid($pid, 0);
    return $? == 0;
}

subtest 'a peer of another uid is refused' => sub {
    plan skip_all => 'needs root (to make a user for the other uid)'
        unless $> == 0;
    my $user = "pfipl$$";
    system('useradd', '--no-create-home', '--shell', '/usr/sbin/nologin',
           $user) == 0
        or plan skip_all => "useradd $user failed";
    my (undef, undef, $uid, $gid) = getpwnam($user);
    my $h;
    my $ok = eval {
        $h = PfiTest::Harness->new(body => $body);
        my ($greeting) = $h->call($h->initial);
        is($greeting, "PFI\n\0\0\0\0", 'server up');
        # The misconfiguration the peer check is for: anyone can reach
        # the socket.
        chmod 0755, $h->dir or die "chmod: $!";
        chmod 0777, $h->dir . '/h.sock' or die "chmod: $!";

        pipe(my $r, my $w) or die "pipe: $!";
        my $pid = fork // die "fork: $!";
        if (!$pid) {
            close $r;
            become($uid, $gid);
            my $got = 'not run';
            if ($> == $uid) {
                socket(my $s, AF_UNIX, SOCK_STREAM, 0) or die;
                if (connect($s, pack_sockaddr_un($h->dir . '/h.sock'))) {
                    my $bytes = $h->read_bytes($s, 8, 5);
                    $got = length($bytes) . ' bytes';
                } else {
                    $got = "connect: $!";
                }
            }
            print $w "$got\n";
            close $w;
            POSIX::_exit(0);
        }
        close $w;
        my $got = <$r> // '';
        chomp $got;
        waitpid($pid, 0);
        is($got, '0 bytes', "uid $uid connects and gets no greeting, only EOF");
        like($h->log_text, qr/^\S+ \S+ warning: refused a call from uid $uid \(pid $pid\): only uid 0 may call this server$/m,
             'one warning line');
        my (undef, $st) = $h->call($h->connect, args => [ 'perl', $h->script ]);
        is($st, 0, 'our own uid is still served');
        $h->cleanup_ok;

        # Root included: root can become the user with su.
        if (!as_user($uid, $gid, sub { -r PfiTest::lib_dir()
                                       . '/Prefork/Interp.pm' })) {
            diag("the library is not readable by $user: root's call to"
                 . " ${user}'s server not tried");
            return 1;
        }
        $h = PfiTest::Harness->new(body => $body, run_as => [ $uid, $gid ]);
        is($h->setup_status, 0, "a server of ${user}'s") or diag $h->setup_err;
        my $c = $h->connect;
        is($h->read_bytes($c, 8, 5), '', 'root connects and gets only EOF');
        close $c;
        like($h->log_text, qr/ warning: refused a call from uid 0 \(pid $$\): only uid $uid may call this server$/m,
             'one warning line');
        $h->cleanup_ok;
        1;
    };
    my $e = $@;
    system('userdel', $user);
    die $e unless $ok;
};

subtest '50 idle connections cost a real call nothing' => sub {
    my $h = PfiTest::Harness->new(
        # They must still be held when we measure.
        init => '$Prefork::Interp::REQUEST_TIMEOUT = 60;',
        body => $body);
    $h->call($h->initial);
    timed_call($h) foreach 1..3;    # warm up
    my @without = map { timed_call($h) } 1..7;
    ok(!grep({ !defined } @without), 'calls without idle connections')
        or return;

    open(my $null, '+<', '/dev/null') or die;
    my @idle;
    foreach my $i (0..49) {
        my $c = $h->connect;
        push @idle, $c;
        next if $i % 5 == 0;                   # connected, nothing sent
        syswrite($c, "\0");                    # the byte
        next if $i % 5 == 1;
        IO::FDPass::send(fileno $c, fileno $null) foreach 1 .. ($i % 5 - 1);
        next if $i % 5 != 4;                   # one or two fds
        syswrite($c, pack('N', 1000) . "A=1\0");   # 3 fds, part of a request
    }
    my @with = map { timed_call($h) } 1..7;
    ok(!grep({ !defined } @with), 'calls with 50 idle connections')
        or return;
    my ($m0, $m1) = (median(@without), median(@with));
    diag(sprintf 'median call: %.1f ms without, %.1f ms with 50 idle'
         . ' connections', $m0 * 1000, $m1 * 1000);
    cmp_ok($m1 - $m0, '<', 0.05, 'they add less than 50 ms');
    my $held = grep { $h->read_bytes($_, 8, 0.2) eq "PFI\n\0\0\0\0"
                      && still_open($_) } @idle;
    is($held, 50, 'and they were still held');
    close $_ foreach @idle;
    $h->cleanup_ok;
};

subtest 'more than 64 idle connections: the oldest are dropped' => sub {
    my $h = PfiTest::Harness->new(
        init => '$Prefork::Interp::REQUEST_TIMEOUT = 60;',
        body => $body);
    $h->call($h->initial);
    my @idle;
    foreach my $i (1..70) {
        my $c = $h->connect;
        # Read the greeting, so the server has taken this one in before
        # the next one comes.
        if ($h->read_bytes($c, 8, 3) ne "PFI\n\0\0\0\0") {
            fail("connection $i greeted at once");
            return;
        }
        push @idle, $c;
    }
    my @open = map { still_open($_) ? 1 : 0 } @idle;
    is(join('', @open), ('0' x 6) . ('1' x 64),
       'the 6 oldest were dropped, 64 are held') or diag($h->log_text);
    my $t0 = Time::HiRes::time();
    my $took = timed_call($h);
    ok(defined $took && $took < 4, 'a real call is served before the 5 s'
       . ' request timeout'
       . (defined $took ? sprintf(' (%.3f s)', $took) : ''));
    ok(wait_for(2, sub { !still_open($idle[6]) }),
       'and it took the place of the oldest idle one');
    ok(still_open($idle[7]), 'the next one is still held');
    my @drops = $h->log_text =~ m/debug: dropped the oldest idle connection: 64 handshakes are under way$/mg;
    is(scalar @drops, 7, 'each drop logged at debug level');
    close $_ foreach @idle;
    $h->cleanup_ok;
};

subtest 'request length: over the limit refused at once, the limit served' => sub {
    my $h = PfiTest::Harness->new(body => $body);
    $h->call($h->initial);
    my $server = server_pid($h);
    ok($server, 'found the server') or return;
    open(my $null, '+<', '/dev/null') or die;

    # Only the length: the server must not wait for a body.
    my $c = $h->connect;
    $h->read_bytes($c, 8);
    syswrite($c, "\0");
    IO::FDPass::send(fileno $c, fileno $null) foreach 1..3;
    my $t0 = Time::HiRes::time();
    syswrite($c, pack 'N', MAX_REQUEST + 1);
    is($h->read_bytes($c, 4, 10), '', 'one byte over: EOF, no status');
    cmp_ok(Time::HiRes::time() - $t0, '<', 4, 'without waiting for the body'
           . ' (well before the 5 s request timeout)');
    close $c;
    like($h->log_text, qr/warning: bad request from caller: request length ${\ (MAX_REQUEST + 1)} exceeds the limit of ${\ MAX_REQUEST} bytes$/m,
         'logged as a warning');
    my (undef, $st) = $h->call($h->connect, args => [ 'perl', $h->script ]);
    is($st, 0, 'the next call is served');

    # The same with the whole body sent: refused all the same.
    $c = $h->connect;
    $h->read_bytes($c, 8);
    syswrite($c, "\0");
    IO::FDPass::send(fileno $c, fileno $null) foreach 1..3;
    my $big = "\0perl\0" . ('x' x (MAX_REQUEST + 1 - 7)) . "\0";
    syswrite($c, pack('N', length $big) . $big);
    is($h->read_bytes($c, 4, 10), '', 'a whole oversized request: refused');
    close $c;

    # The largest request there can be: 6 MiB + 4 KiB of "A=" entries.
    my $args = "perl\0" . $h->script . "\0env\0";
    my $env_len = MAX_REQUEST - 1 - length $args;
    my $n = int(($env_len - 3) / 3);
    my $rest = $env_len - 3 * $n;
    my $data = ("A=\0" x $n) . 'B=' . ('x' x ($rest - 3)) . "\0\0" . $args;
    is(length $data, MAX_REQUEST, "a request of exactly ${\ MAX_REQUEST} bytes");
    my $before = peak_rss($server);
    $c = $h->connect;
    my ($f, $in, $out, $err) = $h->_call_files('');
    $h->read_bytes($c, 8);
    $t0 = Time::HiRes::time();
    $h->send_request($c, fds => [ map { fileno $_ } $in, $out, $err ],
                     data => $data);
    my $status = $h->read_bytes($c, 4, 60);
    my $took = Time::HiRes::time() - $t0;
    close $c;
    is(length($status) == 4 ? unpack('N', $status) : undef, 0,
       sprintf('served, exit 0 (%.2f s)', $took));
    cmp_ok($took, '<', 15, 'in reasonable time');
    is(slurp($f->{out}), 'A=0 B=' . ($rest - 3) . " N=2\n",
       'the script sees the environment: A and B, once each');
    my $after = peak_rss($server);
    diag(sprintf 'server peak RSS: %.1f MiB before, %.1f MiB after a'
         . ' %.1f MiB request', $before / 2**20, $after / 2**20,
         MAX_REQUEST / 2**20);
    cmp_ok($after - $before, '<=', 3 * MAX_REQUEST,
           "the server's peak grew by at most 3 times the request");
    $h->cleanup_ok;
};

subtest "a maximal request in the executor's memory" => sub {
    my $h = PfiTest::Harness->new(body => $body);
    $h->call($h->initial);
    my $server = server_pid($h);
    ok($server, 'found the server') or return;
    my $dir = $h->dir;
    my $args = "perl\0" . $h->script . "\0until\0$dir/m\0$dir/m.done\0";
    my $env_len = MAX_REQUEST - 1 - length $args;
    my $n = int(($env_len - 3) / 3);
    my $data = ("A=\0" x $n) . 'B=' . ('x' x ($env_len - 3 * $n - 3))
             . "\0\0" . $args;
    my $before = peak_rss($server);
    my $c = $h->connect;
    my ($f, $in, $out, $err) = $h->_call_files('');
    $h->read_bytes($c, 8);
    $h->send_request($c, fds => [ map { fileno $_ } $in, $out, $err ],
                     data => $data);
    ok(wait_for(60, sub { -e "$dir/m" }), 'the call runs') or return;
    my (undef, $executor) = split ' ', slurp("$dir/m");
    my $peak = peak_rss($executor);
    diag(sprintf "executor's peak RSS %.1f MiB, the server's before the"
         . ' call %.1f MiB', $peak / 2**20, $before / 2**20);
    cmp_ok($peak - $before, '<=', 3 * MAX_REQUEST,
           "the executor's peak (the spare that was handed the request) is"
           . " within 3 times the request of the server's");
    spit("$dir/m.done", '');
    my $status = $h->read_bytes($c, 4, 30);
    is(length($status) == 4 ? unpack('N', $status) : undef, 0, 'exit 0');
    close $c;
    $h->cleanup_ok;
};

subtest 'a message with two fds is refused, and both are closed' => sub {
    my $h = PfiTest::Harness->new(body => $body);
    $h->call($h->initial);
    my $server = server_pid($h);
    ok($server, 'found the server') or return;
    # The first call's executor may not have been reaped yet, and the
    # spare that replaces it not forked: count once the server's
    # children are its two spares.
    ok(wait_for(5, sub { only_spares($server) }), 'the server has its spares');
    my $fds_before = fd_count($server);
    my $c = $h->connect;
    $h->read_bytes($c, 8);
    syswrite($c, "\0");
    ok(send_fds($c, 0, 1), 'sent fds 0 and 1 in one message') or return;
    my $t0 = Time::HiRes::time();
    is($h->read_bytes($c, 4, 10), '', 'EOF');
    cmp_ok(Time::HiRes::time() - $t0, '<', 4,
           'at once (well before the 5 s request timeout)');
    close $c;
    like($h->log_text, qr/warning: bad request from caller: caller's fd 0: message carries more than one file descriptor$/m,
         'logged');
    ok(wait_for(2, sub { fd_count($server) == $fds_before }),
       'the server holds no more fds than before')
        or diag("before $fds_before, now " . fd_count($server));
    $h->cleanup_ok;
};

# sendmsg(2) of one zero byte with FDS as SCM_RIGHTS in one message
# (IO::FDPass sends one fd only).  Linux, 64-bit.
sub send_fds {
    my ($conn, @fds) = @_;
    require 'syscall.ph';
    my $data = "\0";
    my $control = pack('Q i i', 16 + 4 * @fds, 1, 1) . pack('i*', @fds);
    $control .= "\0" x ((8 - length($control) % 8) % 8);
    my $iov = pack 'P Q', $data, 1;
    my $msg = pack 'x8 L x4 P Q P Q i x4', 0, $iov, 1, $control,
                   length $control, 0;
    my $r = syscall(&SYS_sendmsg, fileno($conn) + 0, $msg, 0);
    return $r == 1;
}

subtest 'complete calls wait in the server for a slot, in order' => sub {
    my $h = PfiTest::Harness->new(opts => 'max_servers => 1', body => $body);
    $h->call($h->initial);
    my $dir = $h->dir;
    my $a = start_call($h, 'until', "$dir/a", "$dir/a.done");
    ok($a && wait_for(10, sub { -e "$dir/a" }), 'call A runs, in the only slot')
        or return;

    # A holds the only slot until a.done exists, made below.
    my $b = $h->connect;
    is($h->read_bytes($b, 8, 10), "PFI\n\0\0\0\0",
       'B is greeted while every slot is busy');
    open(my $null, '+<', '/dev/null') or die;
    $h->send_request($b, fds => [ (fileno $null) x 3 ],
                     args => [ 'perl', $h->script, 'note', 'B' ]);
    my $c = start_call($h, 'note', 'C');
    ok($c, 'C is greeted too');
    Time::HiRes::sleep(0.5);
    ok(!-e "$dir/order.txt", 'B and C wait while A runs');

    my $end_a = Time::HiRes::time();
    spit("$dir/a.done", '');
    is(status_of($h, $a), 0, 'A finishes');
    is(status_of($h, $b), 0, 'then B is served');
    is(status_of($h, $c), 0, 'and C');
    my @order = map { [ split ' ' ] } split /\n/, slurp("$dir/order.txt") // '';
    is(join(' ', map { $_->[0] } @order), 'B C', 'first come, first served');
    cmp_ok($order[0][1], '>=', $end_a, 'B started after A had finished');
    close $_ foreach grep { defined } $a, $b, $c;
    $h->cleanup_ok;
};

subtest 'SIGKILL of the server kills its executors and spares' => sub {
    my $h = PfiTest::Harness->new(body => $body);
    $h->call($h->initial);
    my $dir = $h->dir;
    my $conn = start_call($h, 'long', "$dir/k");
    ok($conn && wait_for(10, sub { -e "$dir/k" }), 'the call runs') or return;
    my ($server, $executor) = split ' ', slurp("$dir/k");
    ok(wait_for(5, sub { spares_of($server) == 2 }), 'two spares');
    my @spares = spares_of($server);
    ok(alive($server) && alive($executor), 'server and executor up');
    kill 'KILL', $server;
    ok(wait_for(1, sub { !alive($executor) }),
       'the executor is gone within a second');
    ok(wait_for(1, sub { !grep { alive($_) } @spares }),
       '... and so are the spares');
    is($h->read_bytes($conn, 4, 5), '', 'the caller sees EOF, no status');
    close $conn;
    $h->cleanup_ok;

    # With our client: it returns (what it says is its own business),
    # and the next call starts a fresh server.
    my $fx = fixture('ours') or return;
    my $script = $fx->script('k.pl', body => $body);
    my $marker = $fx->dir . '/k';
    # The first call runs in place, not in the server.
    is($fx->run($script, args => ['x'])->{status}, 0, 'our client: server up');
    my $call = $fx->start($script, args => [ 'long', $marker ]);
    ok(wait_for(15, sub { -e $marker }), 'our client: a served call runs')
        or return;
    ($server, $executor) = split ' ', slurp($marker);
    $fx->track_pids($executor);
    kill 'KILL', $server;
    ok(wait_for(1, sub { !alive($executor) }),
       'our client: the executor is gone within a second');
    my $r = $fx->finish($call, 5);
    ok(!$r->{timed_out}, 'our client returns ('
       . describe_status($r->{status}) . ')');
    is($fx->run($script, args => ['x'])->{status}, 0,
       'the next call is served by a fresh server');
    $fx->cleanup_ok;
};

done_testing;
