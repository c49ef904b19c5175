#!/usr/bin/perl
# Prefork::Interp::Protocol's send_with_fds and recv_with_fds, with which
# the server hands a spare its call in one message: the fds arrive with
# the first bytes, close-on-exec, as the same open files; data larger
# than a socket buffer arrives whole; bytes sent without fds
# arrive without; send_with_fds sends nothing it cannot send as one
# message (no fd, no data, too many fds); a peer gone is a peer gone.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/../lib";

use POSIX ();
use Socket qw(AF_UNIX SOCK_STREAM PF_UNSPEC);
use Test::More;
use Prefork::Interp::Protocol ();
use Prefork::Interp::Syscall ();

plan skip_all => 'no sendmsg/recvmsg system call numbers here'
    unless defined Prefork::Interp::Syscall::number('sendmsg')
        && defined Prefork::Interp::Syscall::number('recvmsg');

my $P = 'Prefork::Interp::Protocol';

sub pair () {
    socketpair(my $a, my $b, AF_UNIX, SOCK_STREAM, PF_UNSPEC) or die $!;
    return ($a, $b);
}

sub ident ($) { my @st = stat($_[0]); return "$st[0]:$st[1]" }

# Reads N more bytes of FH into a string (blocking).
sub read_n ($$) {
    my ($fh, $n) = @_;
    my $buf = '';
    while (length $buf < $n) {
        my $r = sysread($fh, $buf, $n - length $buf, length $buf);
        die "read: $!" unless defined $r;
        last unless $r;
    }
    return $buf;
}

subtest 'fds with the first bytes, the rest of a large message after' => sub {
    my ($s, $r) = pair();
    open(my $f1, '<', $0) or die;
    open(my $f2, '<', '/dev/null') or die;
    pipe(my $pr, my $pw) or die;
    my @sent = (fileno $f1, fileno $f2, fileno $pw);
    # More than a socket buffer holds: the sender, in a child, blocks
    # until we have read it.
    my $data = join '', map { chr(65 + $_ % 26) } 0 .. 2_000_000;
    my $pid = fork // die;
    if (!$pid) {
        close $r;
        my $ok = eval { $P->can('send_with_fds')->($s, \$data, \@sent, 'test') };
        POSIX::_exit($ok ? 0 : 1);
    }
    close $s;
    my ($got, $fds) = $P->can('recv_with_fds')->($r, 20, 'test');
    is($got, substr($data, 0, 20), 'the first bytes');
    is(scalar @$fds, 3, 'three fds with them');
    is_deeply([ map { ident("/proc/self/fd/$_") } @$fds ],
              [ map { ident("/proc/self/fd/$_") } @sent ],
              '... the files that were sent, in order');
    is(scalar(grep { cloexec($_) } @$fds), 3,
       '... close-on-exec');
    is(read_n($r, length($data) - 20), substr($data, 20), 'the rest, whole');
    waitpid($pid, 0);
    is($?, 0, 'the sender wrote it all');
    my ($eof, $none) = $P->can('recv_with_fds')->($r, 20, 'test');
    is($eof, '', 'then EOF: no data');
    is_deeply($none, [], '... and no fds');
    POSIX::close($_) foreach @$fds;
};

subtest 'bytes without fds, and what send_with_fds does not send' => sub {
    my ($s, $r) = pair();
    syswrite($s, 'plain bytes');
    my ($got, $fds) = $P->can('recv_with_fds')->($r, 64, 'test');
    is($got, 'plain bytes', 'bytes written without fds');
    is_deeply($fds, [], '... come without fds');
    my $data = 'x';
    ok(!$P->can('send_with_fds')->($s, \$data, [], 'test'), 'no fd: not sent');
    my @many = (fileno $s) x ($P->MAX_FDS_PER_MESSAGE + 1);
    ok(!$P->can('send_with_fds')->($s, \$data, \@many, 'test'),
       'more fds than one message takes: not sent');
    my $empty = '';
    ok(!$P->can('send_with_fds')->($s, \$empty, [ fileno $s ], 'test'),
       'no data: not sent');
    close $s;
    my ($eof) = $P->can('recv_with_fds')->($r, 64, 'test');
    is($eof, '', '... nothing was');
};

subtest 'a peer that has gone' => sub {
    my ($s, $r) = pair();
    close $r;
    my $data = 'call';
    ok(!eval { $P->can('send_with_fds')->($s, \$data, [ fileno $s ], 'test'); 1 },
       'sending to a closed peer dies');
    ok($P->can('is_gone')->($@), '... as a peer gone') or diag $@;
};

# Whether FD is close-on-exec: O_CLOEXEC in its flags, as
# /proc/self/fdinfo shows them (in octal).
sub cloexec ($) {
    my ($fd) = @_;
    open(my $fh, '<', "/proc/self/fdinfo/$fd") or return 0;
    my ($flags) = join('', <$fh>) =~ m/^flags:\s*([0-7]+)/m or return 0;
    return oct($flags) & 02000000 ? 1 : 0;
}

done_testing;
