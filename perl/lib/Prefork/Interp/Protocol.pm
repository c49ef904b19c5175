# Prefork::Interp::Protocol - the bytes of prefork-interp protocol v1
# and of its extension call1, script side.
#
# This file owns the wire format and nothing else: it parses the
# PREFORK_INTERP environment variable, sends the greeting, reads and
# decodes a request and writes the wait status; for call1 it parses the
# client's offer, encodes and decodes frames and the ATTR body, and
# receives the caller's extra fds.  It never forks, never touches
# signal dispositions and never logs; callers decide what an error
# means.  Step numbers refer to the upstream design comment, part 4
# ("service (monitor) child"), to SPEC section 5, and to
# docs/protocol.md ("protocol.md 6.3").
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
# protocol extensions (protocol.md 5); they are never given to the
# script.  See parse_request and parse_offer.
use constant EXT_ENV_PREFIX => 'PREFORK_INTERP_EXT';

# The entry through which a client offers extensions (protocol.md
# 6.1): PREFORK_INTERP_EXT=NAME[,NAME...].
use constant EXT_OFFER_NAME => 'PREFORK_INTERP_EXT';

# The one extension we implement.
use constant EXT_CALL1 => 'call1';

# Frames (protocol.md 6.2): 4-byte tag, 4-byte big-endian length, body.
use constant MAX_FRAME_BODY => 65536;
use constant FRAME_HEADER_LEN => 8;

# Frame tags.
use constant TAG_ACCEPT => 'PFXA';    # server -> client, accepted names
use constant TAG_ATTR   => 'ATTR';    # client -> server, attributes
use constant TAG_SIGP   => 'SIGP';    # client -> server, kill(executor)
use constant TAG_SIGG   => 'SIGG';    # client -> server, killpg(call group)
use constant TAG_STOP   => 'STOP';    # server -> client, executor stopped
use constant TAG_EXIT   => 'EXIT';    # server -> client, final wait status

# At most this many extra fds in one call (protocol.md 6.3).
use constant MAX_EXTRA_FDS => 256;

# Signal numbers the ATTR sets may hold (Linux: 1 to 64).
use constant MAX_SIGNAL => 64;

# RLIM_INFINITY, "inf" in an ATTR rlimit entry (all ones in the
# kernel's 64-bit rlim_t).
use constant RLIM_INFINITY => ~0;

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
# returns (env, offer, args).  On failure any descriptors already received are closed.
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
#   env   => [ [NAME, VALUE], ... ]  in order, reserved entries removed
#   offer => what parse_offer makes of the reserved PREFORK_INTERP_EXT*
#            entries
#   args  => [ interpreter, ... ]
sub parse_request ($) {
    my ($data) = @_;
    length($data) && substr($data, -1) eq "\0"
        or die "request does not end in a NUL\n";
    my @strings = split /\0/, substr($data, 0, -1), -1;

    my (@env, @reserved);
    for (;;) {
        @strings or die "request has no end-of-environment marker\n";
        my $s = shift @strings;
        last if $s eq '';
        # An environment string without "=" cannot be represented in
        # %ENV; perl run directly skips such entries too.
        my ($name, $value) = $s =~ m/\A([^=]*)=(.*)\z/s or next;
        # Reserved for protocol extensions (protocol.md 5): a newer
        # client announces itself with such an entry inside a v1
        # request.  This is the one place they are taken out; the
        # script never sees them.
        if (substr($name, 0, length EXT_ENV_PREFIX) eq EXT_ENV_PREFIX) {
            push @reserved, [ $name, $value ];
            next;
        }
        push @env, [ $name, $value ];
    }
    @strings >= 1 or die "request has no arguments (not even the"
                         . " interpreter)\n";
    return { env => \@env, offer => parse_offer(\@reserved),
             args => \@strings };
}

# parse_offer([ [NAME, VALUE], ... ])
#
# The reserved environment entries of a request (protocol.md 5, 6.1),
# as a hash ref:
#   names   => [ NAME, ... ]  every extension name the client offers,
#                             in its order, from PREFORK_INTERP_EXT
#   call1   => BOOL           whether call1 is among them
#   ignored => [ [NAME, VALUE], ... ]
#                             reserved entries we do not understand
#                             (removed from the environment all the same)
sub parse_offer ($) {
    my ($entries) = @_;
    my (@names, @ignored);
    foreach my $e (@$entries) {
        my ($name, $value) = @$e;
        if ($name eq EXT_OFFER_NAME) {
            # A client sends one such entry; if there are more, their
            # names add up.
            push @names, grep { length } split /,/, $value;
        } else {
            push @ignored, [ $name, $value ];
        }
    }
    return {
        names   => \@names,
        call1   => (grep { $_ eq EXT_CALL1 } @names) ? 1 : 0,
        ignored => \@ignored,
    };
}

# accepted_names(OFFER): the names we accept from an offer, in our
# order of preference; empty means "plain v1, send nothing".
sub accepted_names ($) {
    my ($offer) = @_;
    return $offer->{call1} ? (EXT_CALL1) : ();
}

#---------- extension call1: frames (protocol.md 6.2) ----------

# encode_frame(TAG, BODY): the bytes of one frame.
sub encode_frame ($$) {
    my ($tag, $body) = @_;
    length($tag) == 4 or die "frame tag '$tag' is not 4 bytes\n";
    length($body) <= MAX_FRAME_BODY
        or die "frame body of " . length($body) . " bytes is too long\n";
    return $tag . pack('N', length $body) . $body;
}

# decode_frame_header(BYTES): (TAG, LENGTH) from the first 8 bytes;
# dies if the length is over the limit (protocol.md 6.2: a protocol
# error).
sub decode_frame_header ($) {
    my ($bytes) = @_;
    length($bytes) >= FRAME_HEADER_LEN
        or die "frame header is " . length($bytes) . " bytes, not 8\n";
    my ($tag, $len) = unpack 'a4 N', $bytes;
    $len <= MAX_FRAME_BODY
        or die "frame '" . _printable($tag) . "' has a body of $len bytes"
             . ' (the limit is ' . MAX_FRAME_BODY . ")\n";
    return ($tag, $len);
}

# take_frame(\BUFFER): if BUFFER starts with a whole frame, removes it
# and returns [TAG, BODY]; returns undef if more bytes are needed.
# Dies as decode_frame_header does, as soon as the header is in.
sub take_frame ($) {
    my ($bufref) = @_;
    return undef if length($$bufref) < FRAME_HEADER_LEN;
    my ($tag, $len) = decode_frame_header($$bufref);
    return undef if length($$bufref) < FRAME_HEADER_LEN + $len;
    my $body = substr($$bufref, FRAME_HEADER_LEN, $len);
    substr($$bufref, 0, FRAME_HEADER_LEN + $len) = '';
    return [ $tag, $body ];
}

# encode_u32_frame(TAG, N) and decode_u32_body(TAG, BODY): the frames
# whose body is one big-endian u32 (SIGP, SIGG, STOP, EXIT).
sub encode_u32_frame ($$) {
    my ($tag, $n) = @_;
    return encode_frame($tag, pack('N', $n));
}

sub decode_u32_body ($$) {
    my ($tag, $body) = @_;
    length($body) == 4
        or die "frame '" . _printable($tag) . "' has a body of "
             . length($body) . " bytes, not 4\n";
    return unpack 'N', $body;
}

sub _printable ($) {
    my ($s) = @_;
    $s =~ s/([^\x21-\x7e])/sprintf('\\x%02x', ord $1)/ge;
    return $s;
}

# read_frame(CALL, DEADLINE, WHAT): reads one whole frame, blocking
# until DEADLINE; returns [TAG, BODY].
sub read_frame ($$$) {
    my ($fh, $deadline, $what) = @_;
    my ($tag, $len) = decode_frame_header(
        _read_exact($fh, FRAME_HEADER_LEN, $deadline, "$what (header)"));
    my $body = $len ? _read_exact($fh, $len, $deadline, $what) : '';
    return [ $tag, $body ];
}

#---------- extension call1: ATTR (protocol.md 6.3) ----------

# decode_attr(BODY)
#
# The ATTR body: NUL-terminated "key=value" strings.  Returns a hash
# ref with one field per attribute; a field is undef when its key was
# absent ("leave that attribute as the server has it"):
#   umask   => NUMBER
#   nice    => NUMBER
#   rlimits => [ [RESOURCE, SOFT, HARD], ... ]   (RLIM_INFINITY for inf)
#   sigign  => [ SIGNAL, ... ]
#   sigmask => [ SIGNAL, ... ]
#   fds     => [ FD, ... ]   ascending, each 3 or more, at most 256
#   unknown => [ KEY, ... ]  keys we do not know (ignored)
# A malformed value of a key we know is a protocol error: dies with a
# one-line message.  A repeated key other than rlimit: the last wins.
sub decode_attr ($) {
    my ($body) = @_;
    my %attr = (umask => undef, nice => undef, rlimits => undef,
                sigign => undef, sigmask => undef, fds => undef,
                unknown => []);
    return \%attr if $body eq '';
    substr($body, -1) eq "\0" or die "ATTR body does not end in a NUL\n";
    foreach my $s (split /\0/, substr($body, 0, -1), -1) {
        my ($key, $value) = $s =~ m/\A([^=]*)=(.*)\z/s
            or die "ATTR entry '" . _printable($s) . "' has no '='\n";
        my $bad = sub {
            die "ATTR $key has a malformed value '" . _printable($value)
                . "'\n";
        };
        if ($key eq 'umask') {
            $value =~ m/\A[0-7]{1,4}\z/ && oct($value) <= 0777 or $bad->();
            $attr{umask} = oct $value;
        } elsif ($key eq 'nice') {
            $value =~ m/\A-?[0-9]{1,3}\z/ or $bad->();
            $attr{nice} = $value + 0;
        } elsif ($key eq 'rlimit') {
            my ($res, @lim) = $value =~ m/\A([0-9]{1,4}),([0-9]{1,20}|inf),
                                           ([0-9]{1,20}|inf)\z/x
                or $bad->();
            foreach my $l (@lim) {
                if ($l eq 'inf') {
                    $l = RLIM_INFINITY;
                } else {
                    # Decimal digits beyond 64 bits do not fit rlim_t.
                    length($l) < 20 || $l le '18446744073709551615'
                        or $bad->();
                    $l = _to_uint($l);
                }
            }
            push @{ $attr{rlimits} }, [ $res + 0, @lim ];
        } elsif ($key eq 'sigign' || $key eq 'sigmask') {
            my @sigs = _number_list($value, $bad);
            foreach my $sig (@sigs) {
                $sig >= 1 && $sig <= MAX_SIGNAL or $bad->();
            }
            $attr{$key} = \@sigs;
        } elsif ($key eq 'fds') {
            my @fds = _number_list($value, $bad);
            @fds <= MAX_EXTRA_FDS
                or die "ATTR fds lists " . scalar(@fds) . " fds (the limit"
                     . ' is ' . MAX_EXTRA_FDS . ")\n";
            for my $i (0..$#fds) {
                $fds[$i] >= 3 && $fds[$i] < 2**31 or $bad->();
                $i == 0 || $fds[$i] > $fds[$i - 1] or $bad->();
            }
            $attr{fds} = \@fds;
        } else {
            push @{ $attr{unknown} }, $key;
        }
    }
    return \%attr;
}

# A decimal string up to 2**64-1 as a perl number (an unsigned integer,
# not a lossy floating-point one).
sub _to_uint ($) {
    my ($s) = @_;
    $s =~ s/\A0+(?=[0-9])//;
    return $s + 0;
}

sub _number_list ($$) {
    my ($value, $bad) = @_;
    return () if $value eq '';
    my @n = split /,/, $value, -1;
    foreach (@n) {
        m/\A[0-9]{1,10}\z/ or $bad->();
        $_ += 0;
    }
    return @n;
}

# encode_attr(ATTR): the ATTR body for a hash ref shaped as decode_attr
# returns (undef fields are left out), keys in the order of
# protocol.md 6.3.
sub encode_attr ($) {
    my ($attr) = @_;
    my @s;
    push @s, sprintf('umask=%03o', $attr->{umask}) if defined $attr->{umask};
    push @s, "nice=$attr->{nice}" if defined $attr->{nice};
    foreach my $r (@{ $attr->{rlimits} // [] }) {
        my ($res, @lim) = @$r;
        push @s, 'rlimit=' . join ',', $res,
            map { $_ == RLIM_INFINITY ? 'inf' : $_ } @lim;
    }
    foreach my $key (qw(sigign sigmask fds)) {
        push @s, "$key=" . join(',', @{ $attr->{$key} })
            if defined $attr->{$key};
    }
    return join '', map { "$_\0" } @s;
}

# read_call1_setup(CALL, DEADLINE)
#
# Right after we sent the accept frame (protocol.md 6.3): frames until
# the ATTR frame, then one message carrying one fd for each number in
# its "fds".  Unknown frames before ATTR are skipped; SIGP and SIGG
# frames (which a client has no reason to send yet) are kept for when
# the executor runs.
#
# Returns a hash ref: attr (as decode_attr), extra_fds => [ [NUMBER,
# RECEIVED_FD], ... ], early => [ [TAG, SIGNAL], ... ].  On failure the
# fds already received are closed.
sub read_call1_setup ($$) {
    my ($fh, $deadline) = @_;
    my (@early, $attr, @extra);
    my $ok = eval {
        for (;;) {
            my $frame = read_frame($fh, $deadline, 'ATTR frame');
            my ($tag, $body) = @$frame;
            if ($tag eq TAG_ATTR) {
                $attr = decode_attr($body);
                last;
            }
            if ($tag eq TAG_SIGP || $tag eq TAG_SIGG) {
                push @early, [ $tag, decode_u32_body($tag, $body) ];
            }
        }
        foreach my $n (@{ $attr->{fds} // [] }) {
            push @extra, [ $n, _recv_fd($fh, $deadline, "caller's fd $n") ];
        }
        1;
    };
    if (!$ok) {
        my $e = $@;
        POSIX::close($_->[1]) foreach @extra;
        die $e;
    }
    return { attr => $attr, extra_fds => \@extra, early => \@early };
}

# send_frame(CALL, TAG, BODY) and send_u32_frame(CALL, TAG, N).
sub send_frame ($$$) {
    my ($fh, $tag, $body) = @_;
    _write_all($fh, encode_frame($tag, $body), "'$tag' frame");
}

sub send_u32_frame ($$$) {
    my ($fh, $tag, $n) = @_;
    _write_all($fh, encode_u32_frame($tag, $n), "'$tag' frame");
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

Prefork::Interp::Protocol - wire format of prefork-interp v1 and of
extension call1 (internal)

=head1 DESCRIPTION

Internal to L<Prefork::Interp>: parsing of the C<PREFORK_INTERP>
environment variable, and the script side of one call (greeting,
request, wait status); for extension call1, the client's offer, frames,
the C<ATTR> body and the caller's extra descriptors.  It has no stable
API of its own.

=cut
