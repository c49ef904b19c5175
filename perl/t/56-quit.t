#!/usr/bin/perl
# Quitting serves what the server holds (protocol.md 4.1, end): when the
# server quits (--kill, the watcher's pipe closing, a reload) it stops
# listening at once, but a call waiting for a slot is still served, and
# so is a connection that completes its request within its request
# timeout; one that does not is dropped; then the server exits, leaving
# no process.  Every caller it holds has been greeted, so dropping it
# would fail its call (our client: exit 127).
#
# No check here is on the wall clock: each request timeout leaves the
# test ample room on a loaded machine, and "at once" is what the client
# or the server would tell us otherwise.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Errno qw(ECONNREFUSED);
use IO::FDPass;
use PfiTest qw(fixture slurp spit wait_for listen_path describe_status
               zombie_children alive read_bytes);
use POSIX ();
use Socket qw(AF_UNIX SOCK_STREAM pack_sockaddr_un);
use Test::More;
use Time::HiRes ();

# A write to a connection the server has closed is EPIPE, not death.
$SIG{PIPE} = 'IGNORE';

use constant GREETING => "PFI\n\0\0\0\0";

# The request timeouts of the scripts below: C's request is held over
# from before the quit to well after it.  D's runs out in the harness's
# tests, which wait for that.
use constant REQUEST_TIMEOUT => 30;
use constant HARNESS_REQUEST_TIMEOUT => 10;

my $body = <<'EOF';
use Time::HiRes ();
my $mode = $ARGV[0] // '';
if ($mode eq 'until') {         # until MARKER DONE: until DONE exists
    my ($marker, $done) = @ARGV[1, 2];
    open(my $f, '>', "$marker.tmp") or die "marker: $!";
    print $f getppid(), " $$\n";
    close $f;
    rename "$marker.tmp", $marker or die "rename: $!";
    for (1..600) { last if -e $done; Time::HiRes::sleep(0.05) }
} elsif ($mode eq 'exit') {     # exit N
    exit $ARGV[1];
}
exit 0;
EOF

# Whether process PID holds an fd open on FILE.
sub holds_file ($$) {
    my ($pid, $file) = @_;
    opendir(my $d, "/proc/$pid/fd") or return 0;
    return grep { (readlink("/proc/$pid/fd/$_") // '') eq $file } readdir $d;
}

# connect_to(PATH): a connected socket, or (undef, errno).
sub connect_to ($) {
    my ($path) = @_;
    socket(my $s, AF_UNIX, SOCK_STREAM, 0) or die "socket: $!";
    return $s if connect($s, pack_sockaddr_un($path));
    return (undef, $! + 0);
}

# The wait status that comes back on CONN within TIMEOUT, or undef.
sub status_of ($$) {
    my ($conn, $timeout) = @_;
    my $st = read_bytes($conn, 4, $timeout);
    return length($st) == 4 ? unpack('N', $st) : undef;
}

# begin_call(PATH, FRACTION, ARGS...): a v1 call on a raw connection:
# waits for the greeting, then sends the byte, stdio (/dev/null) and
# FRACTION of the request.  Returns (connection, the rest of the
# request, when it was greeted), or () if there was no greeting.
sub begin_call ($$@) {
    my ($path, $fraction, @args) = @_;
    my ($conn) = connect_to($path);
    return () unless $conn;
    my $t = Time::HiRes::time();
    read_bytes($conn, 8, 5) eq GREETING or return ();
    open(my $null, '+<', '/dev/null') or die;
    syswrite($conn, "\0") == 1 or return ();
    IO::FDPass::send(fileno($conn), fileno $null) or return ()
        foreach 1..3;
    my $data = "PATH=/usr/bin:/bin\0\0" . join('', map { "$_\0" } @args);
    my $msg = pack('N', length $data) . $data;
    my $now = int(length($msg) * $fraction);
    syswrite($conn, substr($msg, 0, $now)) == $now or return ()
        if $now;
    return ($conn, substr($msg, $now), $t);
}

sub send_rest ($$) {
    my ($conn, $rest) = @_;
    return (syswrite($conn, $rest) // -1) == length $rest;
}

#----------------------------------------------------------------------
# Through our client: A runs in the only slot, B (our client) waits for
# it, C has sent half its request; then --kill.

subtest 'our client: --kill serves the calls the server holds' => sub {
    my $fx = fixture('ours') or return;
    my $dir = $fx->dir;
    my $script = $fx->script('q.pl', body => $body, opts => 'max_servers => 1,'
                             . ' request_timeout => ' . REQUEST_TIMEOUT);
    # The first call runs in the setup process (protocol.md 7), not in
    # the server's slot: make it a quick one.
    is(describe_status($fx->run($script, args => [ 'exit', 0 ])->{status}),
       'exit 0', 'the server is started');
    my $a = $fx->start($script, args => [ 'until', "$dir/a", "$dir/a.done" ]);
    ok(wait_for(20, sub { -e "$dir/a" }), 'call A runs, in the only slot')
        or return;
    # The executor's parent is the server.
    my ($server) = split ' ', slurp("$dir/a");
    my $sock = $server && listen_path($server, $fx->run_dir);
    ok($sock, "found the server ($server) and its socket") or return;
    # A second name for the socket: --kill removes the first, and we
    # want to knock on the old listener's door afterwards.
    link($sock, "$dir/alias.sock") or die "link $sock: $!";

    # B: our client, greeted, its request read, waiting for the slot.
    my $b = $fx->start($script, args => [ 'exit', 3 ]);
    ok(wait_for(10, sub { holds_file($server, $b->{out}) }),
       "the server has B's request");
    Time::HiRes::sleep(0.5);    # and the rest of its handshake
    ok(alive($b->{pid}), 'B waits');

    # C: greeted, half its request sent.
    my ($c, $c_rest, $c_at) = begin_call("$dir/alias.sock", 0.5, 'perl',
                                         $script, 'exit', 5);
    ok($c, 'C is greeted and sends half its request') or return;

    my $k = $fx->kill_server($script);
    is($k->{status}, 0, '--kill succeeds');
    # The client waits a while for the old listener to close, and warns
    # if it stays open.
    is($k->{err}, '', 'it found the old listener closed, and said nothing');
    my (undef, $errno) = connect_to("$dir/alias.sock");
    is($errno // 0, ECONNREFUSED, 'a new connect to the old listener is'
       . ' refused');
    ok(alive($server), 'the old server is still there');
    ok(alive($b->{pid}), 'B still waits');

    spit("$dir/a.done", '');
    my $ra = $fx->finish($a, 10);
    is(describe_status($ra->{status}), 'exit 0', 'A finishes');
    my $rb = $fx->finish($b, 10);
    is(describe_status($rb->{status}), 'exit 3',
       'then B is served, with its exit status') or diag($rb->{err});
    is($rb->{err}, '', '... and says nothing');

    cmp_ok(Time::HiRes::time() - $c_at, '<', REQUEST_TIMEOUT - 1,
           'C is still within its request timeout') or return;
    ok(send_rest($c, $c_rest), 'C sends the rest of its request');
    is(describe_status(status_of($c, 10)), 'exit 5', 'C is served')
        or diag($fx->log_text);
    close $c;

    ok(wait_for(20, sub { !alive($server) }), 'then the old server exits')
        or diag($fx->log_text);
    my @log = $fx->log_text =~ m/^.*socket removed or replaced.*$/mg;
    is(scalar @log, 1, 'the reason for quitting is logged once')
        or diag($fx->log_text);

    my $r = $fx->run($script, args => [ 'exit', 4 ]);
    is(describe_status($r->{status}), 'exit 4', 'a new call is served by'
       . ' a fresh server') or diag($r->{err});
    $fx->cleanup_ok;
};

#----------------------------------------------------------------------
# The test playing the client: the same with the watcher's pipe closing
# (the socket removed) or a reload, plus D, which never finishes its
# request and is dropped when its request timeout is up.

sub with_harness ($$) {
    my ($what, $trigger) = @_;
    my $h = PfiTest::Harness->new(body => $body, opts => 'max_servers => 1,'
                                  . ' request_timeout => '
                                  . HARNESS_REQUEST_TIMEOUT);
    my (undef, $st) = $h->call($h->initial);
    is($st, 0, 'server up') or return;
    my @servers = $h->server_pids;
    my $server = @servers == 1 ? $servers[0] : undef;
    ok($server, 'found the server') or return;
    my $dir = $h->dir;
    my $sock = "$dir/h.sock";

    my ($a, $a_rest) = begin_call($sock, 1, 'perl', $h->script, 'until',
                                  "$dir/a", "$dir/a.done");
    ok($a && wait_for(10, sub { -e "$dir/a" }), 'A runs, in the only slot')
        or return;
    my ($b) = begin_call($sock, 1, 'perl', $h->script, 'exit', 3);
    ok($b, 'B sends its whole request, and waits') or return;
    my ($c, $c_rest, $c_at) = begin_call($sock, 0.5, 'perl', $h->script,
                                         'exit', 5);
    ok($c, 'C sends half its request') or return;
    my ($d) = begin_call($sock, 0.3, 'perl', $h->script, 'exit', 6);
    ok($d, 'D sends a third of its request, and no more') or return;
    Time::HiRes::sleep(0.3);

    $trigger->($h);
    my $errno;
    ok(wait_for(10, sub { (undef, $errno) = connect_to($sock);
                          ($errno // 0) == ECONNREFUSED }),
       "$what: a new connect is refused, while calls are held");
    ok($h->server_gone(10), '... and the server has closed WATCHI');
    ok(alive($server), 'the server is still there');
    is(status_of($b, 0.5), undef, 'B still waits');

    spit("$dir/a.done", '');
    is(describe_status(status_of($a, 10)), 'exit 0', 'A finishes');
    is(describe_status(status_of($b, 10)), 'exit 3', 'then B is served');
    cmp_ok(Time::HiRes::time() - $c_at, '<', HARNESS_REQUEST_TIMEOUT - 1,
           'C is still within its request timeout') or return;
    ok(send_rest($c, $c_rest), 'C sends the rest of its request');
    is(describe_status(status_of($c, 10)), 'exit 5', 'C is served');
    ok(alive($server), 'the server waits for D');
    is(read_bytes($d, 4, HARNESS_REQUEST_TIMEOUT + 10), '',
       'D is dropped (EOF, no status)');
    ok(wait_for(20, sub { !alive($server) }), 'then the server exits')
        or diag($h->log_text);
    close $_ foreach $a, $b, $c, $d;
    like($h->log_text, qr/debug: caller did not send its request/,
         "D's drop is logged");
    $h->cleanup_ok;
}

subtest 'the watcher says the socket is gone' => sub {
    with_harness('the watcher exits', sub {
        my ($h) = @_;
        close $h->{we_w};
    });
};

subtest 'reload' => sub {
    with_harness('a reload', sub {
        my ($h) = @_;
        my $t = time + 2;
        utime $t, $t, $h->script or die "utime: $!";
        # The server sees the change when a new call comes: that caller
        # is not greeted (the listener is closed before it is accepted),
        # and starts a fresh server.
        my ($e) = connect_to($h->dir . '/h.sock');
        is(defined $e ? read_bytes($e, 8, 5) : '', '',
           'the call that finds the change gets no greeting');
    });
};

done_testing;
