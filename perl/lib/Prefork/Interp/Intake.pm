# Prefork::Interp::Intake - the connections the server holds
# (protocol.md 4.1): it takes each one in (peer check, greeting at
# once), reads its handshake as bytes arrive (through a
# Prefork::Interp::Handshake), enforces the limits (64 connections
# held, the request timeout), and keeps complete calls in order until
# the server has a slot for them.  It logs what it refuses or drops; it
# never forks and never waits.
#
# Copyright the prefork-interp contributors; see the project's
# top-level files for the licence.

package Prefork::Interp::Intake;

use strict;
use warnings;

use Errno qw(EINTR EAGAIN EWOULDBLOCK ECONNABORTED);
use Fcntl qw(F_GETFL F_SETFL O_NONBLOCK);
use IO::Poll qw(POLLIN POLLHUP);
use Socket qw(SOL_SOCKET);

use Prefork::Interp::Handshake;
use Prefork::Interp::Protocol;

our $VERSION = '1.0.0';

# At most this many handshakes under way, and this many complete calls
# waiting for a slot (protocol.md 4.1, item 4).
use constant MAX_HELD => 64;
use constant MAX_WAITING => 1024;

# getsockopt(SO_PEERCRED) gives a struct ucred: pid_t, uid_t, gid_t.
# Older Socket modules do not export the option: 17 is Linux's number.
use constant SO_PEERCRED => defined &Socket::SO_PEERCRED
                            ? Socket::SO_PEERCRED() : 17;

# new(listen => FH, log => LOG, timeout => SECONDS)
sub new {
    my ($class, %a) = @_;
    return bless {
        listen  => $a{listen},
        log     => $a{log},
        timeout => $a{timeout},
        pending => [],    # handshakes in progress, oldest first
        ready   => [],    # complete calls waiting for a slot, oldest first
    }, $class;
}

# held(): how many connections we hold.  ready(): how many of them are
# complete calls waiting for a slot.
sub held { scalar(@{ $_[0]{pending} }) + scalar(@{ $_[0]{ready} }) }
sub ready { scalar @{ $_[0]{ready} } }

# accepting(): whether to accept (and so to watch LISTEN).  At the
# limit a new connection replaces the oldest idle handshake (nothing to
# read: a caller whose bytes are waiting is never dropped); when none is
# idle, or MAX_WAITING complete calls wait, callers wait in the listen
# queue until the server has read them or a slot frees.
sub accepting {
    my ($self) = @_;
    return 0 if @{ $self->{ready} } >= MAX_WAITING;
    return @{ $self->{pending} } < MAX_HELD || defined $self->_oldest_idle;
}

# _oldest_idle(): index in pending of the oldest handshake with nothing
# to read (no bytes, no EOF), or undef.
sub _oldest_idle {
    my ($self) = @_;
    my $poll = IO::Poll->new;
    $poll->mask($_->fh => POLLIN) for @{ $self->{pending} };
    $poll->poll(0);
    for my $i (0 .. $#{ $self->{pending} }) {
        return $i unless $poll->events($self->{pending}[$i]->fh);
    }
    return undef;
}

# accept_new(NOW): accepts one connection and takes it in.  Returns
# (1) if there was one (even if it was then refused), (0) if none was
# waiting, and (0, MESSAGE) if accept failed.
sub accept_new {
    my ($self, $now) = @_;
    return (0) unless $self->accepting;
    my $fh;
    if (!accept($fh, $self->{listen})) {
        # Nothing to accept after all, or the caller gave up.
        return (0) if $! == EINTR || $! == EAGAIN || $! == EWOULDBLOCK
                   || $! == ECONNABORTED;
        return (0, "accept: $!");
    }
    $self->take_in($fh, $now, 0);
    return (1);
}

# take_in(FH, NOW, INITIAL): a new connection (accepted, or the first
# call's socket from PREFORK_INTERP): the peer check; at the limit,
# the oldest idle handshake makes room; then the greeting at
# once, whether or not a slot is free (protocol.md 4.1, items 1, 2 and
# 4); then its handshake reads what has come, and waits for the rest.
sub take_in {
    my ($self, $fh, $now, $initial) = @_;
    my $log = $self->{log};
    my $refusal = _peer_refusal($fh);
    if (defined $refusal) {
        $log->msg('warning', $refusal);
        close $fh;
        return;
    }
    my $flags = fcntl($fh, F_GETFL, 0);
    if (!$flags || !fcntl($fh, F_SETFL, $flags | O_NONBLOCK)) {
        $log->msg('warning', "cannot make a call's socket non-blocking: $!");
        close $fh;
        return;
    }
    if (@{ $self->{pending} } >= MAX_HELD) {
        my $idle = $self->_oldest_idle;
        if (defined $idle) {
            my ($oldest) = splice @{ $self->{pending} }, $idle, 1;
            $log->msg('debug', 'dropped the oldest idle connection: '
                      . MAX_HELD . ' handshakes are under way');
            $oldest->close;
        }
    }
    if (!eval { Prefork::Interp::Protocol::send_greeting($fh); 1 }) {
        $self->_report($@);
        close $fh;
        return;
    }
    # Our client sends its request without waiting for the greeting, so
    # it is usually here: read it now rather than a select later.
    my $hs = Prefork::Interp::Handshake->new($fh, $now, $initial, 1);
    push @{ $self->{pending} }, $hs if $self->_advance($hs);
}

# Why the peer of FH may not call us, or undef if it may: only our own
# effective uid may, root included (root can become us with su).
sub _peer_refusal ($) {
    my ($fh) = @_;
    my $cred = getsockopt($fh, SOL_SOCKET, SO_PEERCRED);
    return "refused a call: cannot read the caller's credentials: $!"
        unless defined $cred && length $cred >= 12;
    my ($pid, $uid) = unpack 'i I', $cred;
    return undef if $uid == $>;
    return "refused a call from uid $uid (pid $pid): only uid $> may"
        . ' call this server';
}

# watch(\RBITS): adds the connections whose handshake is in progress to
# a select bit vector.
sub watch {
    my ($self, $rbits) = @_;
    vec($$rbits, fileno($_->fh), 1) = 1 foreach @{ $self->{pending} };
}

# service(RBITS): advances the handshakes whose connection select found
# readable.  A complete one joins the queue of calls; one that fails is
# logged and closed.
sub service {
    my ($self, $rbits) = @_;
    my @still;
    foreach my $hs (@{ $self->{pending} }) {
        push @still, $hs
            if !vec($rbits, fileno($hs->fh), 1) || $self->_advance($hs);
    }
    $self->{pending} = \@still;
}

# _advance(HS): reads what has come of HS's handshake.  A complete one
# joins the queue of calls, one that fails is logged and closed; true if
# it is still under way.
sub _advance {
    my ($self, $hs) = @_;
    my $done = eval { $hs->advance };
    if (!defined $done) {
        $self->_report($@);
        $hs->close;
        return 0;
    }
    push @{ $self->{ready} }, $hs if $done;
    return !$done;
}

# A caller that goes away is not an error (upstream part 4); one that
# breaks the protocol is not our failure, but worth a warning.
sub _report {
    my ($self, $e) = @_;
    if (Prefork::Interp::Protocol::is_gone($e)) {
        $self->{log}->msg('info', 'caller ' . $e->why);
    } else {
        chomp $e;
        $self->{log}->msg('warning', "bad request from caller: $e");
    }
}

# expire(NOW): drops the connections that have not finished their
# handshake within the request timeout of their acceptance (none with a
# timeout of 0: no limit).
sub expire {
    my ($self, $now) = @_;
    return unless $self->{timeout} > 0;
    my @still;
    foreach my $hs (@{ $self->{pending} }) {
        if ($hs->accepted_at + $self->{timeout} > $now) {
            push @still, $hs;
            next;
        }
        $self->{log}->msg('debug', 'caller did not send its request within'
                          . " $self->{timeout} s of connecting; dropped");
        $hs->close;
    }
    $self->{pending} = \@still;
}

# next_deadline(): when the oldest handshake in progress times out, or
# undef if there is none.
sub next_deadline {
    my ($self) = @_;
    return undef unless $self->{timeout} > 0;
    my $first = $self->{pending}[0] or return undef;
    return $first->accepted_at + $self->{timeout};
}

# take_ready(): the oldest complete call (a Handshake), or undef.  A call
# whose caller hung up while it waited is closed and skipped: it is not
# started only to be interrupted.
sub take_ready {
    my ($self) = @_;
    while (my $hs = shift @{ $self->{ready} }) {
        return $hs unless _hung_up($hs->fh);
        $self->{log}->msg('debug', 'a caller left while its call waited for a slot');
        $hs->close;
    }
    return undef;
}

# _hung_up($fh): has the peer closed its end?  (POLLHUP on a Unix stream
# socket, whether or not frames it sent are still to be read.)
sub _hung_up {
    my ($fh) = @_;
    my $poll = IO::Poll->new;
    $poll->mask($fh => POLLIN);
    $poll->poll(0);
    return ($poll->events($fh) & POLLHUP) ? 1 : 0;
}

# close_all(): closes every connection held.
sub close_all {
    my ($self) = @_;
    $_->close foreach @{ $self->{pending} }, @{ $self->{ready} };
    $self->{pending} = [];
    $self->{ready} = [];
}

1;

__END__

=head1 NAME

Prefork::Interp::Intake - the connections the server holds (internal)

=head1 DESCRIPTION

Internal to L<Prefork::Interp>: accepting calls, refusing peers of
another uid, greeting at once, reading every handshake without
blocking, the limit of 64 connections held and the request timeout,
and the queue of complete calls waiting for a slot.

=cut
