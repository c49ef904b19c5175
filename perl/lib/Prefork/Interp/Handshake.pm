# Prefork::Interp::Handshake - one connection's handshake, read by the
# server without blocking (protocol.md 4.1, item 3).
#
# The connection has been greeted.  Each advance() reads what has
# arrived of steps 2 to 4 of protocol.md 2 (the signalling byte, the
# caller's fds 0, 1 and 2, the request) and, with extension call1,
# sends the accept frame and reads the ATTR frame and the caller's
# other fds (protocol.md 6.1 to 6.3), and with extension pty1 the pty's
# slave after them (protocol.md 9.2); it says whether the call is
# complete.  This file owns the order of those steps and what is
# well-formed; it never waits, never forks and never logs.
#
# A handshake holds the connection, the fds received so far and the
# request body as the one string it arrived in; close() closes them,
# call() hands them over once the call is complete.
#
# Copyright the prefork-interp contributors; see the project's
# top-level files for the licence.

package Prefork::Interp::Handshake;

use strict;
use warnings;

use Prefork::Interp::Protocol;
use Prefork::Interp::Syscall ();

our $VERSION = '1.0.0';

# At most this many bytes (a received fd counting as one) are taken
# from one connection per advance(), so that a peer sending fast
# cannot keep the server from the others, its deadlines or its
# listener.  Whatever is left is read on the next pass of the loop.
use constant BUDGET => 256 * 1024;

# Signal frames a client sends before its ATTR frame are kept for the
# executor (protocol.md 6.3); at most this many, so they cannot fill
# the server's memory.
use constant MAX_EARLY_SIGNALS => 64;

my $P = 'Prefork::Interp::Protocol';

# new(FH, ACCEPTED_AT, INITIAL, PTY_OK): FH is a non-blocking socket
# that has been greeted, at ACCEPTED_AT (Time::HiRes::time); INITIAL is
# true for the call that started the server; PTY_OK, whether extension
# pty1 may be accepted (a server's executor can start a session of its
# own; a setup process running the first call itself cannot: see
# Prefork::Interp::Protocol::accepted_names).
sub new {
    my ($class, $fh, $accepted_at, $initial, $pty_ok) = @_;
    my $body = '';
    return bless {
        fh          => $fh,
        accepted_at => $accepted_at,
        initial     => $initial ? 1 : 0,
        step        => 'byte',
        item        => '',       # the bytes of the item being read
        fds         => [],       # the caller's fds 0, 1 and 2
        body_len    => undef,
        body        => \$body,   # the request body, as it arrives
        shape       => undef,    # what check_request says of it
        call1       => 0,        # whether we sent the accept frame
        pty_ok      => $pty_ok ? 1 : 0,
        pty1        => 0,        # whether it accepted pty1 too
        frame       => undef,    # [TAG, LENGTH] of the frame being read
        attr        => undef,    # the decoded ATTR body
        attr_body   => undef,    # and as it came
        extra       => [],       # [ [NUMBER, FD], ... ]
        slave       => undef,    # the pty's slave (pty1), once received
        early       => [],       # [ [TAG, SIGNAL], ... ]
    }, $class;
}

sub fh { $_[0]{fh} }
sub accepted_at { $_[0]{accepted_at} }
sub complete { $_[0]{step} eq 'done' }

# advance(): reads (and, for call1, writes) as far as the bytes that
# have arrived allow.  Returns true once the call is complete, false if
# more has to arrive.  Dies with a one-line message when the client
# breaks the protocol, and with a Prefork::Interp::Protocol::Gone
# object when it hangs up.  Either way the caller then closes us.
sub advance {
    my ($self) = @_;
    my $fh = $self->{fh};
    my $budget = BUDGET;
    while ($self->{step} ne 'done') {
        return 0 if $budget <= 0;
        my $step = $self->{step};
        if ($step eq 'byte') {
            my $b = $self->_item(1, 'signalling byte', \$budget)
                // return 0;
            $b eq $P->SIGNAL_BYTE
                or die sprintf("signalling byte is 0x%02x, not 0x00\n",
                               ord $b);
            $self->{step} = 'stdio';
        } elsif ($step eq 'stdio') {
            my $i = @{ $self->{fds} };
            my $fd = Prefork::Interp::Protocol::recv_fd($fh,
                                                        "caller's fd $i")
                // return 0;
            $budget--;
            push @{ $self->{fds} }, $fd;
            $self->{step} = 'length' if $i == 2;
        } elsif ($step eq 'length') {
            my $b = $self->_item(4, 'request length', \$budget) // return 0;
            my $len = unpack 'N', $b;
            # Refused as soon as it is read (protocol.md 4.1, item 5).
            $len <= $P->MAX_REQUEST_LEN
                or die "request length $len exceeds the limit of "
                     . $P->MAX_REQUEST_LEN . " bytes\n";
            $self->{body_len} = $len;
            $self->{step} = 'body';
        } elsif ($step eq 'body') {
            my $body = $self->{body};
            my $want = $self->{body_len} - length $$body;
            if ($want > 0) {
                # The buffer grows with what arrives, never to the
                # announced length.
                $want = 65536 if $want > 65536;
                $want = $budget if $want > $budget;
                my $r = Prefork::Interp::Protocol::read_some($fh, $body,
                                                             $want, 'request')
                    // return 0;
                $budget -= $r;
                next;
            }
            $self->{shape} = Prefork::Interp::Protocol::check_request($body);
            my @accept = Prefork::Interp::Protocol::accepted_names(
                $self->{shape}{offer}, $self->{pty_ok});
            if (@accept) {
                Prefork::Interp::Protocol::send_now($fh,
                    Prefork::Interp::Protocol::encode_frame($P->TAG_ACCEPT,
                                                           join ',', @accept),
                    "'" . $P->TAG_ACCEPT . "' frame");
                $self->{call1} = 1;
                $self->{pty1} = grep { $_ eq $P->EXT_PTY1 } @accept;
                $self->{step} = 'frame';
            } else {
                $self->{step} = 'done';
            }
        } elsif ($step eq 'frame') {
            my $head = $self->_item($P->FRAME_HEADER_LEN,
                                    'ATTR frame (header)', \$budget)
                // return 0;
            $self->{frame} = [ Prefork::Interp::Protocol::decode_frame_header(
                                   $head) ];
            $self->{step} = 'frame body';
        } elsif ($step eq 'frame body') {
            my ($tag, $len) = @{ $self->{frame} };
            my $body = $self->_item($len, 'ATTR frame', \$budget)
                // return 0;
            $self->{step} = 'frame';
            if ($tag eq $P->TAG_ATTR) {
                $self->{attr} = Prefork::Interp::Protocol::decode_attr(
                    $body, $self->{pty1});
                $self->{attr_body} = $body;
                $self->{step} = @{ $self->{attr}{fds} // [] }
                              ? 'extra fds' : $self->_after_extra;
            } elsif ($tag eq $P->TAG_SIGP || $tag eq $P->TAG_SIGG) {
                # No reason to send these yet; kept for the executor.
                @{ $self->{early} } < MAX_EARLY_SIGNALS
                    or die 'more than ' . MAX_EARLY_SIGNALS
                         . " signal frames before the ATTR frame\n";
                push @{ $self->{early} },
                    [ $tag, Prefork::Interp::Protocol::decode_u32_body(
                                $tag, $body) ];
            }
            # Frames we do not know are skipped (protocol.md 6.2).
        } elsif ($step eq 'extra fds') {
            my $want = $self->{attr}{fds};
            my $n = $want->[ scalar @{ $self->{extra} } ];
            my $fd = Prefork::Interp::Protocol::recv_fd($fh, "caller's fd $n")
                // return 0;
            $budget--;
            push @{ $self->{extra} }, [ $n, $fd ];
            $self->{step} = $self->_after_extra
                if @{ $self->{extra} } == @$want;
        } elsif ($step eq 'slave') {
            # protocol.md 9.2: one more fd message, the pty's slave.
            $self->{slave} = Prefork::Interp::Protocol::recv_fd($fh,
                                                               "pty's slave")
                // return 0;
            $budget--;
            $self->{step} = 'done';
        } else {
            die "handshake in unknown step '$step'\n";
        }
    }
    return 1;
}

# The step after the extra fds: with pty1, the slave's message.
sub _after_extra {
    my ($self) = @_;
    return $self->{pty1} ? 'slave' : 'done';
}

# _item(N, WHAT, \BUDGET): the next N bytes once they have all arrived,
# or undef until then (or when the budget is spent).
sub _item {
    my ($self, $n, $what, $budget) = @_;
    while (length $self->{item} < $n) {
        return undef if $$budget <= 0;
        my $want = $n - length $self->{item};
        $want = $$budget if $want > $$budget;
        my $r = Prefork::Interp::Protocol::read_some($self->{fh},
                                                     \$self->{item},
                                                     $want, $what)
            // return undef;
        $$budget -= $r;
    }
    my $item = $self->{item};
    $self->{item} = '';
    return $item;
}

# call(): what an executor needs of a complete call, as a hash ref:
#   fh      => the connection
#   initial => true for the call that started the server
#   fds     => [fd0, fd1, fd2], raw descriptors
#   body    => a reference to the request body
#   env_end => where its environment ends (check_request)
#   call1   => undef without the extension, otherwise { attr =>
#              decode_attr's hash, attr_body => the ATTR body as it
#              came, extra_fds => [ [NUMBER, FD], ... ],
#              early => [ [TAG, SIGNAL], ... ], slave => the pty's
#              slave with pty1 (attr's pty lists where it goes), or
#              undef }
# The fds stay ours: close() still closes them (the server closes them
# once an executor has its copies, keeping the connection).
sub call {
    my ($self) = @_;
    die "call() before the handshake is complete\n" unless $self->complete;
    return {
        fh      => $self->{fh},
        initial => $self->{initial},
        fds     => $self->{fds},
        body    => $self->{body},
        env_end => $self->{shape}{env_end},
        call1   => $self->{call1}
                   ? { attr => $self->{attr},
                       attr_body => $self->{attr_body},
                       extra_fds => $self->{extra},
                       early => $self->{early},
                       slave => $self->{slave} }
                   : undef,
    };
}

# close(): closes the connection and every fd received on it, and lets
# go of the body.
sub close {
    my ($self) = @_;
    CORE::close($self->{fh}) if defined fileno $self->{fh};
    Prefork::Interp::Syscall::close_fd($_)
        foreach @{ $self->{fds} }, map { $_->[1] }
                                                @{ $self->{extra} };
    Prefork::Interp::Syscall::close_fd(delete $self->{slave})
        if defined $self->{slave};
    $self->{fds} = [];
    $self->{extra} = [];
    my $empty = '';
    $self->{body} = \$empty;
}

1;

__END__

=head1 NAME

Prefork::Interp::Handshake - one connection's handshake, read without
blocking (internal)

=head1 DESCRIPTION

Internal to L<Prefork::Interp>: the server reads each connection's
signalling byte, descriptors and request (and, with extension call1,
the C<ATTR> frame and further descriptors; with pty1, the pty's
slave) through one of these, from
its select loop, so that no connection can make it wait.

=cut
