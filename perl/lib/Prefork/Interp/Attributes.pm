# Prefork::Interp::Attributes - the caller's process attributes, put on
# the executor (protocol extension call1, protocol.md 6.4 steps 2 to
# 5): extra fds at their numbers, umask, resource limits, nice value;
# and with extension pty1 the pty's slave at the pty numbers
# (protocol.md 9.3).  The signal steps (6, 7) are in
# Prefork::Interp::Signals; step 1 (the process group, or with pty1 the
# session, its leader and the executor's group) is taken as the
# executor gets the call (Prefork::Interp::Executors).
#
# Each function takes a Prefork::Interp::Log for what it cannot do;
# nothing here dies: a call with an attribute we could not set still
# runs, as the caller would rather have it than an error.
#
# Copyright the prefork-interp contributors; see the project's
# top-level files for the licence.

package Prefork::Interp::Attributes;

use strict;
use warnings;

use Prefork::Interp::Protocol ();
use Prefork::Interp::Syscall qw(EPERM EINVAL EMFILE);

our $VERSION = '1.0.0';

# getpriority/setpriority's "which" for one process.
use constant PRIO_PROCESS => 0;

#---------- extra fds (step 2) ----------

# install_fds(EXTRA, LOG)
#
# EXTRA: [ [NUMBER, RECEIVED_FD], ... ], NUMBER the fd's number in the
# caller, RECEIVED_FD where we received it.  First every
# received copy is moved above the highest NUMBER, so that none sits
# on a number another one needs; then each is dup2'd to its NUMBER
# (dup2 clears close-on-exec), unless the script itself has that
# number open (a file it opened while initialising): the script's wins
# and we log it.  Last the copies are closed, so the call holds each
# of the caller's files once, and a pipe's reader sees EOF when the
# call ends.
sub install_fds ($$) {
    my ($extra, $log) = @_;
    return unless @$extra;
    my $max = 0;
    foreach my $e (@$extra) { $max = $e->[0] if $e->[0] > $max }

    my @moved;
    foreach my $e (@$extra) {
        my ($n, $fd) = @$e;
        my $high = _dup_above($fd, $max + 1);
        if (!defined $high) {
            $log->msg('warning', "cannot move the caller's fd $n out of"
                      . " the way: $!; not passed on");
            Prefork::Interp::Syscall::close_fd($fd);
            next;
        }
        Prefork::Interp::Syscall::close_fd($fd);
        push @moved, [ $n, $high ];
    }
    foreach my $e (@moved) {
        my ($n, $high) = @$e;
        if (_is_open($n)) {
            $log->msg('warning', "the caller's fd $n is not passed on:"
                      . " the script has its own fd $n open");
        } elsif (!defined Prefork::Interp::Syscall::dup2($high, $n)) {
            $log->msg('warning', "cannot install the caller's fd $n: $!");
        }
    }
    Prefork::Interp::Syscall::close_fd($_->[1]) foreach @moved;
}

sub _is_open ($) {
    my ($fd) = @_;
    return Prefork::Interp::Syscall::is_open($fd);
}

# A duplicate of FD at the lowest free number from MIN up, or undef.
sub _dup_above ($$) {
    my ($fd, $min) = @_;
    for (my $n = $min; $n < $min + 65536; $n++) {
        next if _is_open($n);
        return Prefork::Interp::Syscall::dup2($fd, $n) // undef;
    }
    $! = EMFILE;
    return undef;
}

#---------- the pty's slave (protocol.md 9.3) ----------

# move_above(FD, EXTRA, LOG): a duplicate of FD above the highest
# number in EXTRA (as install_fds takes it), so that installing those
# cannot land on it; FD itself is closed.  Returns the new fd, or
# undef (logged, FD closed) if it cannot be moved.
sub move_above ($$$) {
    my ($fd, $extra, $log) = @_;
    my $max = 2;
    foreach my $e (@$extra) { $max = $e->[0] if $e->[0] > $max }
    my $high = $fd > $max ? $fd : _dup_above($fd, $max + 1);
    if (!defined $high) {
        $log->msg('warning', "cannot move the pty's slave out of the way:"
                  . " $!; the call has no pty");
    }
    Prefork::Interp::Syscall::close_fd($fd)
        unless defined $high && $high == $fd;
    return $high;
}

# TIOCSCTTY, the ioctl that makes a terminal the controlling terminal
# of a session leader (a pty call's, Prefork::Interp::Executors):
# Linux's generic number, on the architectures Prefork::Interp::Syscall
# knows (as Prefork::Interp::Signals does with signal numbers: no
# header to load); elsewhere sys/ioctl.ph's, if perl has it
# (Prefork::Interp::Syscall::ph_value).
use constant TIOCSCTTY_LINUX => 0x540E;

sub tiocsctty () {
    return TIOCSCTTY_LINUX if Prefork::Interp::Syscall::known_linux();
    return Prefork::Interp::Syscall::ph_value('sys/ioctl.ph', 'TIOCSCTTY');
}

# install_pty(NUMBERS, SLAVE, LOG): after the extra fds (install_fds),
# the pty's slave SLAVE (a received copy, as move_above left it) at
# each of NUMBERS (some of 0, 1 and 2, the caller's terminal; dup2
# clears close-on-exec), then the received copy closed.  The slave is
# our controlling terminal already, and our group its foreground group
# (our session's leader and we did that: protocol.md 9.3).  The call's
# fds are then the only copies of the slave (the server, the leader and
# the spares have closed theirs), so that the client sees the end of
# the output when they are closed.
#
# The perl handles on 0, 1 and 2 (STDIN...) stay as they are, on the
# slave from now on: they were the caller's terminal, so perl chose the
# same buffering for them.  A failure is logged; the call still runs.
sub install_pty ($$$) {
    my ($numbers, $slave, $log) = @_;
    foreach my $n (@$numbers) {
        defined Prefork::Interp::Syscall::dup2($slave, $n)
            or $log->msg('warning', "cannot install the pty at fd $n: $!");
    }
    Prefork::Interp::Syscall::close_fd($slave)
        unless grep { $_ == $slave } @$numbers;
}

#---------- umask (step 3) ----------

sub set_umask ($) {
    my ($mask) = @_;
    umask $mask;
}

#---------- resource limits (step 4) ----------

# One of: 'prlimit' (Linux system call, by Prefork::Interp::Syscall's
# number),
# 'bsd-resource' (BSD::Resource, if the script loaded it), or undef.
my $RLIMIT_HOW;
my $SYS_prlimit64;

sub _rlimit_how () {
    return $RLIMIT_HOW if defined $RLIMIT_HOW;
    $SYS_prlimit64 = Prefork::Interp::Syscall::number('prlimit64');
    if (defined $SYS_prlimit64 && length(pack 'Q', 0) == 8) {
        $RLIMIT_HOW = 'prlimit';
    } elsif (defined &BSD::Resource::setrlimit) {
        $RLIMIT_HOW = 'bsd-resource';
    } else {
        $RLIMIT_HOW = '';
    }
    return $RLIMIT_HOW;
}

# get_rlimit(RESOURCE): (SOFT, HARD), with Protocol::RLIM_INFINITY for
# "unlimited"; () if it cannot be read.
sub get_rlimit ($) {
    my ($res) = @_;
    my $how = _rlimit_how();
    if ($how eq 'prlimit') {
        my $old = "\0" x 16;
        return () if syscall($SYS_prlimit64, 0, $res + 0, 0, $old) < 0;
        return unpack 'QQ', $old;
    }
    if ($how eq 'bsd-resource') {
        my @l = BSD::Resource::getrlimit($res);
        return () unless @l == 2 && defined $l[0];
        return map { $_ == BSD::Resource::RLIM_INFINITY()
                     ? Prefork::Interp::Protocol::RLIM_INFINITY : $_ } @l;
    }
    return ();
}

# _set_rlimit(RESOURCE, SOFT, HARD): true on success, else false with
# $! set.
sub _set_rlimit ($$$) {
    my ($res, $soft, $hard) = @_;
    my $how = _rlimit_how();
    if ($how eq 'prlimit') {
        my $new = pack 'QQ', $soft, $hard;
        return syscall($SYS_prlimit64, 0, $res + 0, $new, 0) == 0;
    }
    my $inf = Prefork::Interp::Protocol::RLIM_INFINITY;
    my @l = map { $_ == $inf ? BSD::Resource::RLIM_INFINITY() : $_ }
                $soft, $hard;
    return BSD::Resource::setrlimit($res, @l);
}

# set_rlimits(RLIMITS, LOG): RLIMITS as Protocol::decode_attr gives
# them.  Where the kernel refuses (a hard limit above ours, without
# privilege), our hard limit and the lower of the two soft ones.
sub set_rlimits ($$) {
    my ($rlimits, $log) = @_;
    return unless @$rlimits;
    if (!_rlimit_how()) {
        $log->msg('warning', 'cannot set the caller\'s resource limits:'
                  . ' neither syscall.ph (prlimit64) nor BSD::Resource'
                  . ' is available');
        return;
    }
    foreach my $r (@$rlimits) {
        my ($res, $soft, $hard) = @$r;
        next if _set_rlimit($res, $soft, $hard);
        my $why = "$!";
        my (undef, $our_hard) = get_rlimit($res);
        if (defined $our_hard && $hard > $our_hard) {
            my $s = $soft < $our_hard ? $soft : $our_hard;
            next if _set_rlimit($res, $s, $our_hard);
            $why = "$!";
        }
        $log->msg('warning', "cannot set resource limit $res to"
                  . " $soft/$hard: $why");
    }
}

#---------- nice value (step 5) ----------

# set_nice(NICE): lowering it needs privilege; without, it stays.
sub set_nice ($) {
    my ($nice) = @_;
    local $!;
    setpriority(PRIO_PROCESS, 0, $nice);
}

1;

__END__

=head1 NAME

Prefork::Interp::Attributes - the caller's fds, umask, resource limits
and nice value for a call (internal)

=head1 DESCRIPTION

Internal to L<Prefork::Interp>: applies the attributes a client sends
with protocol extension call1 to the process that runs the call, and
with extension pty1 installs the pty's slave as its controlling
terminal.

=cut
