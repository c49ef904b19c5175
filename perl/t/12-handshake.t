#!/usr/bin/perl
# Prefork::Interp::Handshake on its own, in one process, with the test
# writing the client's side of a socketpair: a handshake that arrives a
# byte (or an fd) at a time is read without ever blocking, takes exactly
# its own bytes, and hands over the right fds, body and attributes;
# a refused one leaves no fd behind.

use strict;
use warnings FATAL => 'all';

use FindBin;
use lib "$FindBin::Bin/lib";
use PfiTest qw(lib_dir);
use lib lib_dir();

use Fcntl qw(F_GETFL F_SETFL O_NONBLOCK);
use IO::FDPass;
use Prefork::Interp::Handshake;
use Prefork::Interp::Protocol;
use Socket qw(AF_UNIX SOCK_STREAM PF_UNSPEC);
use Test::More;

$SIG{PIPE} = 'IGNORE';

# A connected pair: (client end, server end made non-blocking).
sub pair {
    socketpair(my $c, my $s, AF_UNIX, SOCK_STREAM, PF_UNSPEC)
        or die "socketpair: $!";
    my $flags = fcntl($s, F_GETFL, 0) or die;
    fcntl($s, F_SETFL, $flags | O_NONBLOCK) or die;
    return ($c, $s);
}

sub ino_of_fd ($) { (stat "/proc/self/fd/$_[0]")[1] }

sub open_fds {
    opendir(my $d, '/proc/self/fd') or die;
    return scalar grep { m/\A[0-9]+\z/ } readdir $d;
}

# The client's side as a list of steps: a string is written, a number
# is sent as an fd (one message of one byte).
sub feed {
    my ($c, $step) = @_;
    if (ref $step) {
        IO::FDPass::send(fileno $c, $$step) or die "send fd: $!";
    } else {
        syswrite($c, $step) == length $step or die "write: $!";
    }
}

subtest 'v1, a byte at a time' => sub {
    my ($c, $s) = pair();
    open(my $f0, '<', '/dev/null') or die;
    open(my $f1, '<', $0) or die;
    open(my $f2, '<', '/') or die;
    my $body = "A=1\0B=2\0\0perl\0/s.pl\0x\0";
    my @steps = ("\0", \fileno($f0), \fileno($f1), \fileno($f2),
                 split(//, pack('N', length $body) . $body));
    my $hs = Prefork::Interp::Handshake->new($s, 0, 0);
    is($hs->advance, 0, 'nothing yet');
    my $done_at;
    foreach my $i (0..$#steps) {
        feed($c, $steps[$i]);
        if ($hs->advance) {
            $done_at = $i;
            last;
        }
    }
    is($done_at, $#steps, 'complete after the last byte, not before');
    syswrite($c, 'after');
    my $call = $hs->call;
    is(${ $call->{body} }, $body, 'the body');
    is($call->{env_end}, index($body, "\0\0") + 1, 'where the environment ends');
    is($call->{call1}, undef, 'plain v1');
    is_deeply([ map { ino_of_fd($_) } @{ $call->{fds} } ],
              [ map { (stat $_)[1] } $f0, $f1, $f2 ],
              'the three fds, in order');
    my $rest = '';
    sysread($s, $rest, 100);
    is($rest, 'after', 'bytes after the request are left on the socket');
    $hs->close;
};

subtest 'call1, a step at a time, with early signals and unknown frames' => sub {
    my ($c, $s) = pair();
    open(my $null, '<', '/dev/null') or die;
    open(my $extra, '<', $0) or die;
    my $body = "PREFORK_INTERP_EXT=call1\0\0perl\0";
    my $frame = sub { $_[0] . pack('N', length $_[1]) . $_[1] };
    my $hs = Prefork::Interp::Handshake->new($s, 0, 1);
    feed($c, $_) foreach "\0", (\fileno $null) x 3;
    feed($c, pack('N', length $body) . $body);
    is($hs->advance, 0, 'request read; now waiting for ATTR');
    my $pfxa = '';
    sysread($c, $pfxa, 100);
    is($pfxa, $frame->('PFXA', 'call1'), 'the accept frame was sent');
    my $before = $frame->('SIGP', pack 'N', 15) . $frame->('XYZW', 'skip')
               . $frame->('ATTR', "umask=022\0fds=5,7\0");
    my @early = map { feed($c, $_); $hs->advance } split //, $before;
    is(join('', @early), '0' x length $before,
       'frames a byte at a time: never complete without the fds');
    feed($c, \fileno $extra);
    is($hs->advance, 0, 'one fd');
    feed($c, \fileno $null);
    feed($c, $frame->('SIGG', pack 'N', 2));
    is($hs->advance, 1, 'complete');
    my $call = $hs->call;
    ok($call->{initial}, 'the first call');
    is($call->{call1}{attr}{umask}, 022, 'attributes');
    is_deeply([ map { $_->[0] } @{ $call->{call1}{extra_fds} } ], [ 5, 7 ],
              'extra fds, by number');
    is(ino_of_fd($call->{call1}{extra_fds}[0][1]), (stat $extra)[1],
       'fd 5 is the one sent first');
    is_deeply($call->{call1}{early}, [ [ 'SIGP', 15 ] ],
              'a signal frame before ATTR is kept, an unknown one skipped');
    my $rest = '';
    sysread($s, $rest, 100);
    is($rest, $frame->('SIGG', pack 'N', 2),
       'a frame after the fds is left for the monitor');
    $hs->close;
};

subtest 'pty1: the slave after the extra fds' => sub {
    my $frame = sub { $_[0] . pack('N', length $_[1]) . $_[1] };
    my $base = open_fds();
    open(my $null, '<', '/dev/null') or die;
    open(my $extra, '<', $0) or die;
    open(my $slave, '<', '/') or die;    # any fd will do here
    my $body = "PREFORK_INTERP_EXT=call1,pty1\0\0perl\0";
    my $start = sub {
        my ($pty_ok) = @_;
        my ($c, $s) = pair();
        my $hs = Prefork::Interp::Handshake->new($s, 0, 0, $pty_ok);
        feed($c, $_) foreach "\0", (\fileno $null) x 3,
                             pack('N', length $body) . $body;
        is($hs->advance, 0, 'request read');
        my $pfxa = '';
        sysread($c, $pfxa, 100);
        return ($c, $hs, $pfxa);
    };

    my ($c, $hs, $pfxa) = $start->(1);
    is($pfxa, $frame->('PFXA', 'call1,pty1'), 'accept frame: call1,pty1');
    feed($c, $frame->('ATTR', "fds=5\0pty=0,2\0"));
    feed($c, \fileno $extra);
    is($hs->advance, 0, 'the extra fd: not complete without the slave');
    feed($c, \fileno $slave);
    is($hs->advance, 1, 'the slave: complete');
    my $call = $hs->call;
    is_deeply($call->{call1}{attr}{pty}, [ 0, 2 ], 'pty numbers');
    is(ino_of_fd($call->{call1}{extra_fds}[0][1]), (stat $extra)[1],
       'fd 5 is the extra one');
    is(ino_of_fd($call->{call1}{slave}), (stat $slave)[1],
       'the slave is the fd sent last');
    $hs->close;
    close $c;

    ($c, $hs) = $start->(1);
    feed($c, $frame->('ATTR', "pty=1\0"));
    is($hs->advance, 0, 'no extra fds: waiting for the slave');
    feed($c, "\0");
    ok(!eval { $hs->advance; 1 }, 'a byte without an fd: refused');
    like($@, qr/^pty's slave: message has no file descriptor attached$/,
         'saying why');
    $hs->close;
    close $c;

    ($c, $hs, $pfxa) = $start->(0);
    is($pfxa, $frame->('PFXA', 'call1'),
       'where pty1 may not be taken: call1 alone');
    feed($c, $frame->('ATTR', "pty=0\0"));
    ok(!eval { $hs->advance; 1 }, 'then a pty entry: refused');
    like($@, qr/^ATTR has a pty entry, but pty1 was not accepted$/,
         'saying why');
    $hs->close;
    close $c;

    close $_ foreach $null, $extra, $slave;
    is(open_fds(), $base, 'no fd left open');
};

subtest 'refusals close what arrived' => sub {
    my $base = open_fds();
    my @cases = (
        [ 'signalling byte 1', [ "\1" ], qr/^signalling byte is 0x01/ ],
        [ 'bytes where an fd belongs', [ "\0", "\0\0\0" ],
          qr/^caller's fd 0: message has no file descriptor attached/ ],
        [ 'length over the limit',
          [ "\0", \0, \0, \0,
            pack('N', Prefork::Interp::Protocol::MAX_REQUEST_LEN + 1) ],
          qr/^request length 6295553 exceeds the limit of 6295552 bytes/ ],
        [ 'hang-up in the body', [ "\0", \0, \0, \0, pack('N', 10) . 'A=1', undef ],
          'hung up before sending request' ],
        [ 'no end of environment', [ "\0", \0, \0, \0, pack('N', 4) . "A=1\0" ],
          qr/^request has no end-of-environment marker/ ],
    );
    foreach my $case (@cases) {
        my ($name, $steps, $want) = @$case;
        my ($c, $s) = pair();
        my $hs = Prefork::Interp::Handshake->new($s, 0, 0);
        my $ok = eval {
            foreach my $step (@$steps) {
                if (defined $step) { feed($c, $step) } else { close $c }
                $hs->advance;
            }
            1;
        };
        ok(!$ok, "$name: refused");
        if (ref $want) {
            like($@, $want, "$name: why");
        } else {
            ok(Prefork::Interp::Protocol::is_gone($@)
               && $@->why eq $want, "$name: the caller has gone")
                or diag explain $@;
        }
        $hs->close;
        close $c;
        is(open_fds(), $base, "$name: no fd left open");
    }
};

subtest 'an fd the server cannot take (its fd limit) is a refusal' => sub {
    my ($c, $s) = pair();
    my $hs = Prefork::Interp::Handshake->new($s, 0, 0);
    feed($c, $_) foreach "\0", \0;
    my @hold;
    while (open(my $f, '<', '/dev/null')) { push @hold, $f }
    my $ok = eval { $hs->advance; 1 };
    my $e = $@;
    close $_ foreach @hold;
    ok(!$ok, 'refused');
    like($e, qr/^caller's fd 0: could not be received \(is the server at its fd limit\?\)$/,
         'saying why');
    $hs->close;
};

subtest 'a waiting call whose caller hung up is skipped' => sub {
    require Prefork::Interp::Intake;
    my @logged;
    my $log = bless { lines => \@logged }, 'TestLog';
    my $intake = Prefork::Interp::Intake->new(log => $log, timeout => 5);
    my @callers;
    foreach my $n (1, 2) {
        my ($c, $s) = pair();
        open(my $null, '<', '/dev/null') or die;
        my $body = "A=$n\0\0perl\0";
        feed($c, $_) foreach ("\0", (\fileno($null)) x 3,
                              pack('N', length $body) . $body);
        my $hs = Prefork::Interp::Handshake->new($s, 0, 0);
        1 until $hs->advance;
        push @{ $intake->{ready} }, $hs;
        push @callers, $c;
    }
    close $callers[0];    # the first caller leaves while it waits
    my $next = $intake->take_ready;
    ok($next, 'a call is handed over');
    is(${ $next->call->{body} }, "A=2\0\0perl\0", "... the second: the first caller had gone");
    is($intake->take_ready, undef, 'nothing else waits');
    is_deeply(\@logged, ['debug: a caller left while its call waited for a slot'], 'logged');
    $next->close;
};

package TestLog {
    sub msg { my ($self, $level, $m) = @_; push @{ $self->{lines} }, "$level: $m" }
}

done_testing;
