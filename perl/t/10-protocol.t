#!/usr/bin/perl
# Protocol v1 at the byte level, with the test playing the client
# (PfiTest::Harness): greeting, status encoding, request decoding, the
# reserved extension entries, and clients that break the rules.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";
use lib "$FindBin::Bin/../lib";

use IO::FDPass;
use PfiTest qw(slurp wait_for);
use POSIX qw(WIFEXITED WEXITSTATUS WIFSIGNALED WTERMSIG SIGINT SIGTERM);
use Prefork::Interp::Protocol ();
use Test::More;
use Time::HiRes ();

my $echo_body = <<'EOF';
print "ARGV=", join('|', @ARGV), "\n";
print "0=$0\n";
print "ENV=", join('|', map { "$_=$ENV{$_}" } sort keys %ENV), "\n";
exit($ARGV[0] // 0) if ($ARGV[0] // '') =~ m/\A[0-9]+\z/;
EOF

subtest 'greeting, status and the request as the script sees it' => sub {
    my $h = PfiTest::Harness->new(body => $echo_body);
    is($h->setup_status, 0, 'setup process exits 0 once serving')
        or diag $h->setup_err;
    my ($greeting, $st, $out) = $h->call($h->initial,
        args => [ 'perl', $h->script, '5', 'two words', '' ],
        env  => [ 'PATH=/usr/bin:/bin', 'A=1', 'EMPTY=', 'EQ=a=b',
                  'NOEQUALS', 'PREFORK_INTERP_EXT_X=1',
                  'PREFORK_INTERP_EXTENSION_Y=2' ]);
    is($greeting, "PFI\n\0\0\0\0", 'greeting is exactly PFI\n + four NULs');
    is($st, 5 << 8, 'status is the raw wait status, big-endian');
    like($out, qr/^ARGV=5\|two words\|$/m,
         '@ARGV is the arguments only (no interpreter, no script)');
    like($out, qr/^0=\Q${\ $h->script }\E$/m, '$0 is the script');
    like($out, qr/^ENV=A=1\|EMPTY=\|EQ=a=b\|PATH=\/usr\/bin:\/bin$/m,
         '%ENV is the request environment, without PREFORK_INTERP_EXT*'
         . ' entries or entries without "="');

    # A second call, through the listening socket.
    my @r = $h->call($h->connect, args => [ 'perl', $h->script, '0' ]);
    is($r[1], 0, 'second call: exit 0 comes back as 0');
    like($r[2], qr/^ARGV=0$/m, 'second call has its own @ARGV');

    $h->cleanup_ok;
};

subtest 'death by signal is reported as such' => sub {
    my $h = PfiTest::Harness->new(body => 'kill $ARGV[0], $$; sleep 10;');
    my (undef, $st) = $h->call($h->initial,
                               args => [ 'perl', $h->script, 'TERM' ]);
    ok(defined $st && WIFSIGNALED($st) && WTERMSIG($st) == SIGTERM,
       'SIGTERM');
    (undef, $st) = $h->call($h->connect, args => [ 'perl', $h->script, 'INT' ]);
    ok(defined $st && WIFSIGNALED($st) && WTERMSIG($st) == SIGINT,
       'SIGINT (the executor does not ignore it)');
    $h->cleanup_ok;
};

subtest 'a bad PREFORK_INTERP is a clear error in the setup process' => sub {
    my @cases = (
        [ 'v2,1.000000000 3,4,5,6', qr/does not specify protocol v1/ ],
        [ 'v1,1.000000000', qr/has too few words/ ],
        [ 'v1,yesterday 3,4,5,6', qr/has a malformed start time/ ],
        [ 'v1,1.000000000 3,4,5', qr/has too few file descriptors/ ],
        [ 'v1,1.000000000 3,x,5,6', qr/has "x" where a file descriptor/ ],
        [ 'v1,1.000000000,record1 3,4,5,6',
          qr/announces record1 but names no record/ ],
        [ undef, qr/names fd 999 \(watche\), which is not open/ ],
    );
    foreach my $case (@cases) {
        my ($value, $re) = @$case;
        my $h = PfiTest::Harness->new(
            defined $value ? (env_value => $value)
                           : (fd_override => { watche => 999 }));
        my $name = $value // 'watche fd 999';
        is($h->setup_status, 255 << 8, "'$name': setup exits 255");
        like($h->setup_err,
             qr/\Aprefork_initialisation_complete: PREFORK_INTERP $re[^\n]* at \S+ line \d+\.\n\z/,
             "'$name': one-line message");
        $h->cleanup_ok("'$name'");
    }
};

subtest 'record1: the record is the rest of the value' => sub {
    my $parse = \&Prefork::Interp::Protocol::parse_env_value;
    my $v = $parse->('v1,1.000000000,inplace1,record1 3,4,5,6 /run dir/m1 x');
    is($v->{record}, '/run dir/m1 x', 'after the second space, spaces and all');
    is($v->{in_place}, 1, 'with inplace1');
    is($parse->('v1,1.000000000 3,4,5,6 /run/m1')->{record}, undef,
       'not announced: no record');
};

subtest 'extra items and words in PREFORK_INTERP are ignored' => sub {
    my $h = PfiTest::Harness->new(env_extras => 1, body => $echo_body);
    is($h->setup_status, 0, 'setup accepts the value') or diag $h->setup_err;
    my (undef, $st) = $h->call($h->initial,
                               args => [ 'perl', $h->script, '6' ]);
    is($st, 6 << 8, 'and serves calls');
    $h->cleanup_ok;
};

subtest 'clients that break the protocol do not hurt the server' => sub {
    my $h = PfiTest::Harness->new(body => $echo_body);
    $h->call($h->initial);

    my @bad = (
        [ 'hang up before reading the greeting', sub { close $_[0] } ],
        [ 'hang up after the greeting',
          sub { $h->read_bytes($_[0], 8); close $_[0] } ],
        [ 'non-zero signalling byte',
          sub { $h->read_bytes($_[0], 8); syswrite($_[0], "\x01") } ],
        [ 'hang up after one fd', sub {
              $h->read_bytes($_[0], 8);
              syswrite($_[0], "\0");
              IO::FDPass::send(fileno($_[0]), 0);
              close $_[0];
          } ],
        [ 'bytes without fds', sub {
              $h->read_bytes($_[0], 8);
              syswrite($_[0], "\0\0\0\0" . "garbage");
          } ],
        [ 'absurd length', sub {
              $h->read_bytes($_[0], 8);
              syswrite($_[0], "\0");
              IO::FDPass::send(fileno($_[0]), $_) foreach 0, 1, 2;
              syswrite($_[0], pack('N', 0xffffffff));
          } ],
        [ 'request without final NUL', sub {
              $h->read_bytes($_[0], 8);
              syswrite($_[0], "\0");
              IO::FDPass::send(fileno($_[0]), $_) foreach 0, 1, 2;
              syswrite($_[0], pack('N', 3) . "A=1");
          } ],
        [ 'request without end of environment', sub {
              $h->read_bytes($_[0], 8);
              syswrite($_[0], "\0");
              IO::FDPass::send(fileno($_[0]), $_) foreach 0, 1, 2;
              syswrite($_[0], pack('N', 4) . "A=1\0");
          } ],
        [ 'request without arguments', sub {
              $h->read_bytes($_[0], 8);
              syswrite($_[0], "\0");
              IO::FDPass::send(fileno($_[0]), $_) foreach 0, 1, 2;
              syswrite($_[0], pack('N', 5) . "A=1\0\0");
          } ],
    );
    foreach my $case (@bad) {
        my ($name, $code) = @$case;
        my $conn = $h->connect;
        $code->($conn);
        # The monitor should answer by closing the connection, not by
        # running anything.
        if (defined fileno $conn) {
            my $t0 = Time::HiRes::time();
            my $rest = $h->read_bytes($conn, 100, 10);
            is($rest, '', "'$name': connection closed, nothing run");
            cmp_ok(Time::HiRes::time() - $t0, '<', 4,
                   "'$name': at once (before the 5 s request timeout)");
            close $conn;
        }
        my (undef, $st, $out) = $h->call($h->connect,
                                         args => [ 'perl', $h->script, '3' ]);
        is($st, 3 << 8, "after '$name': the next call works");
    }
    my $log = $h->log_text;
    like($log, qr/warning: bad request from caller: signalling byte is 0x01, not 0x00$/m,
         'non-zero byte logged, on one line');
    like($log, qr/bad request from caller: request length 4294967295 exceeds the limit/,
         'absurd length logged');
    like($log, qr/bad request from caller: request does not end in a NUL/,
         'missing NUL logged');
    like($log, qr/bad request from caller: request has no arguments/,
         'missing arguments logged');
    like($log, qr/bad request from caller: request has no end-of-environment marker/,
         'missing end of environment logged');
    like($log, qr/bad request from caller: caller's fd 0: message has no file descriptor attached/,
         'missing fd logged');
    like($log, qr/info: caller hung up before sending caller's fd 1$/m,
         'early hang-up logged at info level');
    like($log, qr/info: caller hung up before sending signalling byte$/m,
         'hang-up after the greeting logged at info level');
    unlike($log, qr/in time/, 'no hang-up mistaken for a timeout');
    unlike($log, qr/monitor \[\d+\] failed/, 'no monitor failed');
    $h->cleanup_ok;
};

subtest 'idle connections cannot block real callers' => sub {
    # 7.0.0: max_servers idle connections block everyone for ever.
    my $h = PfiTest::Harness->new(
        opts => 'max_servers => 2, request_timeout => 3',
        body => $echo_body);
    $h->call($h->initial);
    my @idle = map { $h->connect } 1..4;
    $h->read_bytes($_, 8, 2) foreach @idle[0, 1];
    my (undef, $st) = $h->call($h->connect,
                               args => [ 'perl', $h->script, '4' ],
                               timeout => 15);
    is($st, 4 << 8, 'a real call gets through');
    # Had it waited for the idle ones to time out, they would be closed.
    my $rbits = '';
    vec($rbits, fileno($_), 1) = 1 foreach @idle[0, 1];
    is(select(my $r = $rbits, undef, undef, 0), 0,
       'before the idle ones time out (the greeted two are still held)');
    my @got = map { $h->read_bytes($_, 9, 10) } @idle;
    # The first two have read their greeting already.
    is_deeply(\@got, [ '', '', ("PFI\n\0\0\0\0") x 2 ],
              'the idle callers were greeted, then dropped');
    like($h->log_text, qr/debug: caller did not send its request within 3 s of connecting; dropped/,
         'logged at debug level');
    close $_ foreach @idle;
    $h->cleanup_ok;
};

subtest 'data after a v1 request is ignored; EOF ends the call' => sub {
    my $h = PfiTest::Harness->new(body => <<'EOF');
open(my $f, '>', 'started') or die; close $f;
sleep 20;
exit 0;
EOF
    my $conn = $h->initial;
    $h->read_bytes($conn, 8);
    $h->send_request($conn, fds => [ 0, 1, 2 ],
                     args => [ 'perl', $h->script ]);
    ok(wait_for(10, sub { -e $h->dir . '/started' }), 'executor started');
    syswrite($conn, "x");
    is($h->read_bytes($conn, 4, 1), '', 'a byte does not end the call');
    like($h->log_text,
         qr/info: caller sent data after its request; ignored/,
         'logged');
    shutdown($conn, 1);
    my $st = $h->read_bytes($conn, 4, 10);
    is(length($st), 4, 'EOF: a status comes back');
    my $status = unpack 'N', $st;
    ok(WIFSIGNALED($status) && WTERMSIG($status) == SIGINT,
       'the executor was stopped with SIGINT');
    $h->cleanup_ok;
};

subtest 'the watcher' => sub {
    my $h = PfiTest::Harness->new(body => $echo_body);
    $h->call($h->initial);
    $h->watcher_says("prefork-interp: watcher: stat socket: oops\n");
    ok($h->server_gone(10), 'an error from the watcher stops the server');
    like($h->log_text,
         qr/error: watcher reported: prefork-interp: watcher: stat socket: oops$/m,
         'and is logged on one line');
    $h->cleanup_ok('watcher error');

    $h = PfiTest::Harness->new(body => $echo_body);
    $h->call($h->initial);
    close $h->{we_w};
    ok($h->server_gone(10), 'EOF from the watcher stops the server');
    like($h->log_text, qr/info: socket removed or replaced/,
         'and is logged');
    $h->cleanup_ok('watcher EOF');
};

subtest 'max_errors counts' => sub {
    # LISTEN is a connected socket with data waiting: select says
    # "readable" and every accept fails.  7.0.0 never counts, and spins.
    my $h = PfiTest::Harness->new(listen => 'not-listening',
                                  opts => 'max_errors => 3',
                                  body => $echo_body);
    is($h->setup_status, 0, 'server started');
    ok($h->server_gone(10), 'the server quits after too many errors');
    my $log = $h->log_text;
    my @warnings = $log =~ m/warning: accept: /g;
    is(scalar @warnings, 3, 'three errors were tolerated');
    like($log, qr/error: accept: .*; 4 errors in a row \(max_errors is 3\), quitting$/m,
         'the fourth one stops it');
    $h->cleanup_ok;
};

subtest 'idle_timeout' => sub {
    my $h = PfiTest::Harness->new(opts => 'idle_timeout => 0.5',
                                  body => $echo_body);
    $h->call($h->initial);
    my $t0 = Time::HiRes::time();
    ok($h->server_gone(10), 'the server quits when idle');
    my $took = Time::HiRes::time() - $t0;
    cmp_ok($took, '>=', 0.3, "not too early ($took s)");
    like($h->log_text, qr/info: no calls for 0.5 seconds, quitting/,
         'logged');
    $h->cleanup_ok;
};

subtest 'without a pidfd (SIGCHLD fallback)' => sub {
    my $h = PfiTest::Harness->new(
        init => '$Prefork::Interp::USE_PIDFD = 0;',
        body => <<'EOF');
if ($ARGV[0] eq 'sleep') { open(my $f, '>', 'started'); close $f; sleep 20 }
exit $ARGV[0];
EOF
    my (undef, $st) = $h->call($h->initial,
                               args => [ 'perl', $h->script, '9' ]);
    is($st, 9 << 8, 'first call');
    my @wrong;
    foreach my $i (1..30) {
        my $code = $i % 4;
        (undef, $st) = $h->call($h->connect,
                                args => [ 'perl', $h->script, $code ]);
        push @wrong, "$code -> " . PfiTest::describe_status($st)
            unless defined $st && $st == $code << 8;
    }
    is("@wrong", '', '30 calls, statuses exact');

    my $conn = $h->connect;
    $h->read_bytes($conn, 8);
    $h->send_request($conn, fds => [ 0, 1, 2 ],
                     args => [ 'perl', $h->script, 'sleep' ]);
    ok(wait_for(10, sub { -e $h->dir . '/started' }), 'long call started');
    my $t0 = Time::HiRes::time();
    shutdown($conn, 1);
    my $r = $h->read_bytes($conn, 4, 10);
    ok(length($r) == 4 && WIFSIGNALED(unpack 'N', $r),
       'a hang-up still stops the executor');
    cmp_ok(Time::HiRes::time() - $t0, '<', 5, 'promptly');
    $h->cleanup_ok;
};

done_testing;
