# Prefork::Interp::Protocol - the bytes of prefork-interp protocol v1,
# script side.
#
# This file owns the wire format and nothing else: it parses the
# PREFORK_INTERP environment variable, sends the greeting, reads and
# decodes a request and writes the wait status.  It never forks, never
# touches signal dispositions and never logs; callers decide what an
# error means.  Step numbers refer to the upstream design comment,
# part 4 ("service (monitor) child"), and to SPEC section 5.
#
# Copyright the prefork-interp contributors; see the project's
# top-level files for the licence.

package Prefork::Interp::Protocol;

use strict;
use warnings;

use Errno qw(EINTR EAGAIN EWOULDBLOCK ECONNRESET EPIPE EDOM);
use IO::FDPass ();
use POSIX ();
use Time::HiRes ();

our $VERSION = '1.0.0';

#---------- constants ----------

# Environment variable through which the client hands us the server's
# file descriptors (SPEC section 4).
use constant ENV_NAME => 'PREFORK_INTERP';

# Greeting (step 3): magic, then a 4-byte length and that many bytes.
# The 7.0.0 C client reads the length without byte-swapping, so the
# length must be zero and there must be no further data.
use constant GREETING => "PFI\n\0\0\0\0";

# Signalling byte the client sends after the greeting (step 4).
use constant SIGNAL_BYTE => "\0";

# A request carries the caller's environment and arguments, which the
# kernel caps at a few MiB (ARG_MAX; at most 6 MiB on Linux).  Anything
# longer is not a real caller.
use constant MAX_REQUEST_LEN => 16 * 1024 * 1024;

# Environment entries whose names start with this are reserved for
# protocol extensions (SPEC section 7); they are never given to the
# script.  See parse_request.
use constant EXT_ENV_PREFIX => 'PREFORK_INTERP_EXT';

#---------- errors ----------

# Exceptions are plain strings ending in "\n", except "the caller went
# away" (EOF, ECONNRESET, EPIPE, or the deadline passed), which is a
# Prefork::Interp::Protocol::Gone object: upstream part 4 says this is
# not an error, so monitors handle it quietly.

sub _gone ($) {
    my ($why) = @_;
    die bless { why => $why }, 'Prefork::Interp::Protocol::Gone';
}

sub is_gone ($) {
    my ($e) = @_;
    return ref($e) && ref($e) eq 'Prefork::Interp::Protocol::Gone';
}

sub Prefork::Interp::Protocol::Gone::why { $_[0]{why} }

#---------- PREFORK_INTERP ----------

# parse_env_value(VALUE)
#
# Decodes "v1,SECS.NSECS[,...] LISTEN,CALL,WATCHI,WATCHE[,...][ ...]"
# (SPEC section 4).  Only the first two space-separated words count;
# later words may hold anything.  Extra comma-separated items in either
# word are ignored (and extra fds left open, as upstream requires).
#
# Returns a hash ref: version, mtime (floating seconds), mtime_text,
# listen, call, watchi, watche.  Dies with a one-line message if the
# value is not something we understand.
sub parse_env_value ($) {
    my ($value) = @_;
    my $name = ENV_NAME;
    my @words = split / /, $value, 3;
    @words >= 2
        or die "$name has too few words (is the client compatible?)\n";

    my ($version, $stamp) = split /,/, $words[0];
    defined $version && $version eq 'v1'
        or die "$name does not specify protocol v1"
             . " (client and library do not match)\n";
    defined $stamp && $stamp =~ m/\A([0-9]+)\.([0-9]{9})\z/
        or die "$name has a malformed start time (want SECS.NSECS)\n";
    my $mtime = $1 + $2 / 1e9;

    my @fds = split /,/, $words[1];
    @fds >= 4 or die "$name has too few file descriptors\n";
    foreach my $fd (@fds[0..3]) {
        $fd =~ m/\A[0-9]+\z/
            or die "$name has \"$fd\" where a file descriptor belongs\n";
    }

    return {
        version    => $version,
        mtime      => $mtime,
        mtime_text => $stamp,
        listen     => $fds[0] + 0,
        call       => $fds[1] + 0,
        watchi     => $fds[2] + 0,
        watche     => $fds[3] + 0,
    };
}

#---------- low-level I/O with a deadline ----------

# Waits until FH is readable or DEADLINE (Time::HiRes::time value)
# passes; the latter counts as the caller having gone away.
sub _wait_readable ($$) {
    my ($fh, $deadline) = @_;
    for (;;) {
        my $left = $deadline - Time::HiRes::time();
        _gone('did not send its request in time') if $left <= 0;
        my $rbits = '';
        vec($rbits, fileno($fh), 1) = 1;
        my $n = select($rbits, undef, undef, $left);
        return if $n > 0;
        next if $n == 0 || $! == EINTR;
        die "select on call socket: $!\n";
    }
}

# Reads exactly LEN bytes from FH (unbuffered: the fds that follow the
# bytes we read must not be swallowed by a buffer).
sub _read_exact ($$$$) {
    my ($fh, $len, $deadline, $what) = @_;
    my $buf = '';
    while (length($buf) < $len) {
        _wait_readable($fh, $deadline);
        my $want = $len - length($buf);
        $want = 65536 if $want > 65536;
        my $r = sysread($fh, $buf, $want, length($buf));
        if (!defined $r) {
            next if $! == EINTR || $! == EAGAIN || $! == EWOULDBLOCK;
            _gone("connection reset reading $what") if $! == ECONNRESET;
            die "read $what: $!\n";
        }
        _gone("hung up before sending $what") if $r == 0;
    }
    return $buf;
}

sub _recv_fd ($$$) {
    my ($fh, $deadline, $what) = @_;
    for (;;) {
        _wait_readable($fh, $deadline);
        $! = 0;
        my $fd = IO::FDPass::recv(fileno($fh));
        return $fd if $fd >= 0;
        # IO::FDPass::recv returns -1 with errno untouched on EOF, and
        # with EDOM if the byte was not zero or carried no descriptor.
        _gone("hung up before sending $what") if $! == 0;
        next if $! == EINTR || $! == EAGAIN || $! == EWOULDBLOCK;
        _gone("connection reset receiving $what") if $! == ECONNRESET;
        die "$what: message has no file descriptor attached\n"
            if $! == EDOM;
        die "receive $what: $!\n";
    }
}

#---------- the conversation, monitor side ----------

# send_greeting(CALL): step 3.
sub send_greeting ($) {
    my ($fh) = @_;
    _write_all($fh, GREETING, 'greeting');
}

# read_request(CALL, DEADLINE)
#
# Steps 4 to 7: the signalling byte, the caller's fds 0, 1 and 2 (one
# per one-byte message), a 4-byte big-endian length and the request
# itself.  Everything must arrive before DEADLINE.
#
# Returns a hash ref: fds => [fd0, fd1, fd2] (raw descriptors, now
# owned by the caller of read_request), plus what parse_request
# returns.  On failure any descriptors already received are closed.
sub read_request ($$) {
    my ($fh, $deadline) = @_;
    my @fds;
    my $ok = eval {
        my $byte = _read_exact($fh, 1, $deadline, 'signalling byte');
        $byte eq SIGNAL_BYTE
            or die sprintf("signalling byte is 0x%02x, not 0x00\n",
                           ord $byte);
        foreach my $i (0..2) {
            push @fds, _recv_fd($fh, $deadline, "caller's fd $i");
        }
        1;
    };
    my $request;
    $ok &&= eval {
        my $lenbuf = _read_exact($fh, 4, $deadline, 'request length');
        my $len = unpack 'N', $lenbuf;
        $len <= MAX_REQUEST_LEN
            or die "request length $len exceeds the limit of "
                 . MAX_REQUEST_LEN . " bytes\n";
        my $data = _read_exact($fh, $len, $deadline, 'request');
        $request = parse_request($data);
        1;
    };
    if (!$ok) {
        my $e = $@;
        POSIX::close($_) foreach @fds;
        die $e;
    }
    $request->{fds} = \@fds;
    return $request;
}

# parse_request(DATA)
#
# DATA is the request body (step 7): NUL-terminated "NAME=value"
# strings, an empty string, then NUL-terminated arguments.  7.0.0
# clients send the arguments as "interpreter, [script,] args...".
#
# Returns a hash ref:
#   env  => [ [NAME, VALUE], ... ]  in order, reserved entries removed
#   ext  => { NAME => VALUE, ... }  the reserved PREFORK_INTERP_EXT*
#                                   entries, for future extensions
#   args => [ interpreter, ... ]
sub parse_request ($) {
    my ($data) = @_;
    length($data) && substr($data, -1) eq "\0"
        or die "request does not end in a NUL\n";
    my @strings = split /\0/, substr($data, 0, -1), -1;

    my (@env, %ext);
    for (;;) {
        @strings or die "request has no end-of-environment marker\n";
        my $s = shift @strings;
        last if $s eq '';
        # An environment string without "=" cannot be represented in
        # %ENV; perl run directly skips such entries too.
        my ($name, $value) = $s =~ m/\A([^=]*)=(.*)\z/s or next;
        # Reserved for protocol extensions (SPEC section 7): a newer
        # client announces itself with such an entry inside a v1
        # request.  This is the one place they are taken out; the
        # script never sees them.  This library implements no
        # extension yet, so it never answers one, and the client
        # carries on with plain v1.
        if (substr($name, 0, length EXT_ENV_PREFIX) eq EXT_ENV_PREFIX) {
            $ext{$name} = $value;
            next;
        }
        push @env, [ $name, $value ];
    }
    @strings >= 1 or die "request has no arguments (not even the"
                         . " interpreter)\n";
    return { env => \@env, ext => \%ext, args => \@strings };
}

# write_status(CALL, WAIT_STATUS): step 15, the raw wait status as a
# 32-bit big-endian number.
sub write_status ($$) {
    my ($fh, $status) = @_;
    _write_all($fh, pack('N', $status), 'wait status');
}

sub _write_all ($$$) {
    my ($fh, $data, $what) = @_;
    my $off = 0;
    while ($off < length $data) {
        my $r = syswrite($fh, $data, length($data) - $off, $off);
        if (!defined $r) {
            next if $! == EINTR;
            _gone("hung up before we sent the $what")
                if $! == EPIPE || $! == ECONNRESET;
            die "write $what: $!\n";
        }
        $off += $r;
    }
}

1;

__END__

=head1 NAME

Prefork::Interp::Protocol - wire format of prefork-interp v1 (internal)

=head1 DESCRIPTION

Internal to L<Prefork::Interp>: parsing of the C<PREFORK_INTERP>
environment variable, and the script side of one call (greeting,
request, wait status).  It has no stable API of its own.

=cut
