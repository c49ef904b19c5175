# Prefork::Interp::Protocol - the bytes of prefork-interp protocol v1
# and of its extensions call1, pty1 and inplace1, script side.
#
# This file owns the wire format and nothing else: it parses the
# PREFORK_INTERP environment variable; reads bytes and passed fds
# without blocking and sends the greeting (for the server's handshakes,
# Prefork::Interp::Handshake, and with inplace1 the setup process's);
# checks a request body's shape without splitting it, and splits it
# (for the executor); writes the wait status; for call1 (and pty1) it
# parses the client's offer and encodes and decodes frames and the ATTR
# body.
# It never forks, never touches signal dispositions and never logs;
# callers decide what an error means.  Step numbers refer to the
# upstream design comment, part 4 ("service (monitor) child"), to SPEC
# section 5, and to docs/protocol.md ("protocol.md 6.3").
#
# Copyright the prefork-interp contributors; see the project's
# top-level files for the licence.

package Prefork::Interp::Protocol;

use strict;
use warnings;

use Prefork::Interp::Syscall qw(EINTR EAGAIN EWOULDBLOCK ECONNRESET EPIPE
                                EDOM);

# A setup process that runs the first call itself (extension inplace1)
# loads this file, so it loads nothing it does not need: IO::FDPass only
# where recvmsg's number is unknown, Socket only where SOL_SOCKET is not
# Linux's usual 1, no POSIX (Prefork::Interp::Syscall closes fds).

our $VERSION = '1.0.0';

#---------- constants ----------

use constant {
    # Environment variable through which the client hands us the server's
    # file descriptors (SPEC section 4).
    ENV_NAME => 'PREFORK_INTERP',

    # Greeting (step 3): magic, then a 4-byte length and that many bytes.
    # The 7.0.0 C client reads the length without byte-swapping, so the
    # length must be zero and there must be no further data.
    GREETING => "PFI\n\0\0\0\0",

    # Signalling byte the client sends after the greeting (step 4).
    SIGNAL_BYTE => "\0",

    # A request carries a subset of the caller's arguments and its
    # environment, which Linux caps at 6 MiB for exec (3/4 of the 8 MiB
    # default stack limit, whatever the rlimit), plus a few bytes of
    # extension entries: 6 MiB + 4 KiB (protocol.md 4.1, item 5).  A longer
    # request is not from a real caller.
    MAX_REQUEST_LEN => 6 * 1024 * 1024 + 4 * 1024,

    # Environment entries whose names start with this are reserved for
    # protocol extensions (protocol.md 5); they are never given to the
    # script.  See check_request and request_env.
    EXT_ENV_PREFIX => 'PREFORK_INTERP_EXT',

    # The entry through which a client offers extensions (protocol.md
    # 6.1): PREFORK_INTERP_EXT=NAME[,NAME...].
    EXT_OFFER_NAME => 'PREFORK_INTERP_EXT',

    # The per-call extensions we implement: call1 (protocol.md 6), and
    # pty1 (protocol.md 9), which only comes with call1.
    EXT_CALL1 => 'call1',
    EXT_PTY1 => 'pty1',

    # The extension our client announces in PREFORK_INTERP (protocol.md
    # 7), which is also the payload of the greeting that takes it up.
    EXT_INPLACE1 => 'inplace1',

    # The item of PREFORK_INTERP that announces a server record (protocol.md
    # 8): its path is the rest of the value, after the fds.
    EXT_RECORD1 => 'record1',

    # Frames (protocol.md 6.2): 4-byte tag, 4-byte big-endian length, body.
    MAX_FRAME_BODY => 65536,
    FRAME_HEADER_LEN => 8,

    # Frame tags.
    TAG_ACCEPT => 'PFXA',    # server -> client, accepted names
    TAG_ATTR   => 'ATTR',    # client -> server, attributes
    TAG_SIGP   => 'SIGP',    # client -> server, kill(executor)
    TAG_SIGG   => 'SIGG',    # client -> server, killpg(call group)
    TAG_STOP   => 'STOP',    # server -> client, executor stopped
    TAG_EXIT   => 'EXIT',    # server -> client, final wait status
    TAG_FGND   => 'FGND',    # client -> server (pty1), 1: the
                             # caller's job is in the foreground,
                             # 0: in the background

    # At most this many extra fds in one call (protocol.md 6.3).
    MAX_EXTRA_FDS => 256,

    # Signal numbers the ATTR sets may hold (Linux: 1 to 64).
    MAX_SIGNAL => 64,

    # RLIM_INFINITY, "inf" in an ATTR rlimit entry (all ones in the
    # kernel's 64-bit rlim_t).
    RLIM_INFINITY => ~0,
};

#---------- errors ----------

# Exceptions are plain strings ending in "\n", except "the caller went
# away" (EOF, ECONNRESET, EPIPE), which is a
# Prefork::Interp::Protocol::Gone object: upstream part 4 says this is
# not an error, so the server handles it quietly.

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
# later words may hold anything.  Of the further comma-separated items
# of the first word, "inplace1" (protocol.md 7) and "record1"
# (protocol.md 8: then the rest of the value, everything after the
# second space, is the server record's path, which may hold spaces) are
# known; any other item in either word is ignored (and extra fds left
# open, as upstream requires).
#
# Returns a hash ref: version, mtime (floating seconds), mtime_text,
# listen, call, watchi, watche, in_place (whether the client announced
# inplace1: the setup process runs the first call itself), record (the
# record's path, or undef without record1).  Dies with a one-line
# message if the value is not something we understand.
sub parse_env_value ($) {
    my ($value) = @_;
    my $name = ENV_NAME;
    my @words = split / /, $value, 3;
    @words >= 2
        or die "$name has too few words (is the client compatible?)\n";

    my ($version, $stamp, @items) = split /,/, $words[0];
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
    my $record;
    if (grep { $_ eq EXT_RECORD1 } @items) {
        $record = $words[2];
        defined $record && length $record
            or die "$name announces record1 but names no record\n";
    }

    return {
        version    => $version,
        mtime      => $mtime,
        mtime_text => $stamp,
        listen     => $fds[0] + 0,
        call       => $fds[1] + 0,
        watchi     => $fds[2] + 0,
        watche     => $fds[3] + 0,
        in_place   => (grep { $_ eq EXT_INPLACE1 } @items) ? 1 : 0,
        record     => $record,
    };
}

#---------- reading without blocking ----------
#
# The server reads every handshake from its one select loop
# (protocol.md 4.1, item 3), so these never wait: each returns undef
# when nothing has arrived yet.  They read exactly what they are asked
# for, never more: a byte beyond an item may be the one that carries
# the next fd.

# read_some(FH, \BUF, N, WHAT): appends to BUF at most N bytes that have
# arrived on FH (which must be non-blocking).  Returns how many, or
# undef if none has arrived.  EOF or a reset: the caller has gone.
sub read_some ($$$$) {
    my ($fh, $bufref, $n, $what) = @_;
    for (;;) {
        my $r = sysread($fh, $$bufref, $n, length $$bufref);
        if (!defined $r) {
            next if $! == EINTR;
            return undef if $! == EAGAIN || $! == EWOULDBLOCK;
            _gone("connection reset reading $what") if $! == ECONNRESET;
            die "read $what: $!\n";
        }
        _gone("hung up before sending $what") if $r == 0;
        return $r;
    }
}

# For recvmsg(2) by hand (perl has no recvmsg): the flags and the sizes
# of struct msghdr, struct iovec and struct cmsghdr.  size_t is an
# unsigned long on every Linux ABI ("L!"); a pointer is "p".
use constant {
    MSG_CTRUNC       => 0x08,
    MSG_DONTWAIT     => 0x40,
    MSG_CMSG_CLOEXEC => 0x40000000,
    MSG_NOSIGNAL     => 0x4000,
    SCM_RIGHTS       => 1,
    MSGHDR           => 'p L x![p] p L! p L! i x![p]',
    MSGHDR_OUT       => 'x[p] L x![p] x[p] L! x[p] L! i',
};
my $LONG = length pack 'l!', 0;
sub _cmsg_align ($) { my ($n) = @_; return ($n + $LONG - 1) & ~($LONG - 1) }
my $CMSG_HDR = _cmsg_align($LONG + 8);    # cmsg_len, cmsg_level, cmsg_type

# recv_fd(FH, WHAT): one message of one data byte (its value does not
# matter) carrying exactly one fd (protocol.md 2, step 3).  Returns
# the fd (close-on-exec), or undef if no message has arrived.  The
# control buffer has room for one fd, so the kernel flags more as
# truncated (MSG_CTRUNC) or shows two; either way, or with no fd, every
# fd that did arrive is closed and the call is a protocol error: a
# client cannot make us hold fds we do not know about.
sub recv_fd ($$) {
    my ($fh, $what) = @_;
    my $nr = Prefork::Interp::Syscall::number('recvmsg');
    return _recv_fd_fdpass($fh, $what) unless defined $nr;
    my $data = "\0";
    my $control = "\0" x ($CMSG_HDR + _cmsg_align(4));
    my $iov = pack 'p L!', $data, 1;
    my $msg = pack MSGHDR, undef, 0, $iov, 1, $control, length $control, 0;
    my $r;
    for (;;) {
        # "+ 0": syscall passes numbers as integers, strings as pointers.
        $r = syscall($nr, fileno($fh) + 0, $msg,
                     MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
        last if $r >= 0;
        next if $! == EINTR;
        return undef if $! == EAGAIN || $! == EWOULDBLOCK;
        _gone("connection reset receiving $what") if $! == ECONNRESET;
        die "receive $what: $!\n";
    }
    _gone("hung up before sending $what") if $r == 0;
    my (undef, undef, $control_len, $flags) = unpack MSGHDR_OUT, $msg;
    my @fds = _control_fds($control, $control_len);
    return $fds[0] if @fds == 1 && !($flags & MSG_CTRUNC);
    Prefork::Interp::Syscall::close_fd($_) foreach @fds;
    die "$what: message carries more than one file descriptor\n" if @fds;
    # Truncated with none installed: the kernel could not give us the fd
    # (at our fd limit, say).
    die "$what: could not be received (is the server at its fd"
        . " limit?)\n" if $flags & MSG_CTRUNC;
    die "$what: message has no file descriptor attached\n";
}

# _control_fds(CONTROL, LENGTH): the fds of the SCM_RIGHTS messages in
# the first LENGTH bytes of the control buffer CONTROL, as recvmsg(2)
# filled it.
sub _control_fds ($$) {
    my ($control, $control_len) = @_;
    my @fds;
    my $off = 0;
    while ($off + $CMSG_HDR <= $control_len) {
        my ($len, $level, $type) = unpack "x$off L! i i", $control;
        last if $len < $CMSG_HDR || $off + $len > length $control;
        if ($level == _sol_socket() && $type == SCM_RIGHTS) {
            my $n = int(($len - $CMSG_HDR) / 4);
            push @fds, unpack 'x' . ($off + $CMSG_HDR) . " i$n", $control;
        }
        $off += _cmsg_align($len);
    }
    return @fds;
}

# The most fds send_with_fds attaches to one message (the kernel takes
# up to 253, SCM_MAX_FD).
use constant MAX_FDS_PER_MESSAGE => 250;

# send_with_fds(FH, \DATA, FDS, WHAT): DATA (not empty) with the fds of
# the array ref FDS (1 to MAX_FDS_PER_MESSAGE) attached to its first
# bytes, in one sendmsg(2), and whatever of DATA the socket did not take
# then written after it.  FH blocks.  Returns true; false, having sent
# nothing, where the system call's number is unknown or FDS is too long
# (the caller then sends the fds one by one, with send_fd).  Dies as
# send_fd does.  On the server's own sockets (a spare's control socket),
# where both ends are ours: the client's protocol has one fd a message.
sub send_with_fds ($$$$) {
    my ($fh, $data, $fds, $what) = @_;
    my $nr = Prefork::Interp::Syscall::number('sendmsg');
    my $n = @$fds;
    return 0 unless defined $nr && $n >= 1 && $n <= MAX_FDS_PER_MESSAGE
                    && length $$data;
    my $control = pack "L! i i i$n", $CMSG_HDR + 4 * $n, _sol_socket(),
                       SCM_RIGHTS, @$fds;
    $control .= "\0" x ($CMSG_HDR + _cmsg_align(4 * $n) - length $control);
    my $iov = pack 'p L!', $$data, length $$data;
    my $msg = pack MSGHDR, undef, 0, $iov, 1, $control, length $control, 0;
    my $r;
    for (;;) {
        $r = syscall($nr, fileno($fh) + 0, $msg, MSG_NOSIGNAL);
        last if $r > 0;
        next if $r < 0 && $! == EINTR;
        _gone("hung up before we sent $what")
            if $r < 0 && ($! == EPIPE || $! == ECONNRESET);
        die "send $what: " . ($r < 0 ? "$!" : 'sent nothing') . "\n";
    }
    write_all($fh, $data, $what, $r);
    return 1;
}

# recv_with_fds(FH, LENGTH, WHAT): waits for data on FH (which blocks),
# then takes at most LENGTH bytes of it in one recvmsg(2), with room for
# MAX_FDS_PER_MESSAGE fds: (DATA, FDS), FDS an array ref of the fds that
# came with those bytes (close-on-exec, maybe none).  DATA is empty at
# EOF.  Returns () where the system call's number is unknown (the
# caller then reads with sysread, and takes fds with recv_fd).  More fds
# than it has room for, or fds it could not be given (at our fd limit),
# are a protocol error: those that came are closed.
sub recv_with_fds ($$$) {
    my ($fh, $length, $what) = @_;
    my $nr = Prefork::Interp::Syscall::number('recvmsg');
    return () unless defined $nr;
    my $data = "\0" x $length;
    my $control = "\0" x ($CMSG_HDR + _cmsg_align(4 * MAX_FDS_PER_MESSAGE));
    my $iov = pack 'p L!', $data, $length;
    my $msg = pack MSGHDR, undef, 0, $iov, 1, $control, length $control, 0;
    my $r;
    for (;;) {
        $r = syscall($nr, fileno($fh) + 0, $msg, MSG_CMSG_CLOEXEC);
        last if $r >= 0;
        next if $! == EINTR;
        _gone("connection reset receiving $what") if $! == ECONNRESET;
        die "receive $what: $!\n";
    }
    my (undef, undef, $control_len, $flags) = unpack MSGHDR_OUT, $msg;
    my @fds = _control_fds($control, $control_len);
    if ($flags & MSG_CTRUNC) {
        Prefork::Interp::Syscall::close_fd($_) foreach @fds;
        die "$what: its file descriptors could not all be received\n";
    }
    return (substr($data, 0, $r), \@fds);
}

# write_all(FH, \DATA, WHAT[, FROM]): writes DATA (from byte FROM on, 0
# by default) on FH (blocking), without copying it (a request can be
# 6 MiB).  Dies with a message naming WHAT, the peer, if a write fails.
sub write_all ($$$;$) {
    my ($fh, $data, $what, $off) = @_;
    $off //= 0;
    while ($off < length $$data) {
        my $r = syswrite($fh, $$data, length($$data) - $off, $off);
        if (!defined $r) {
            next if $! == EINTR;
            die "write to $what: $!\n";
        }
        $off += $r;
    }
}

# recv_fd_wait(FH, WHAT): recv_fd, waiting (select) until the message
# has come, on a socket whose peer sends it at once (a spare's control
# socket, the forker's).  Dies as recv_fd does.
sub recv_fd_wait ($$) {
    my ($fh, $what) = @_;
    for (;;) {
        my $fd = recv_fd($fh, $what);
        return $fd if defined $fd;
        my $rbits = '';
        vec($rbits, fileno($fh), 1) = 1;
        select($rbits, undef, undef, undef) >= 0 || $! == EINTR
            or die "select waiting for $what: $!\n";
    }
}

# send_fd(FH, FD, WHAT): one message of one zero byte carrying FD, as
# recv_fd takes it (the server hands a call's fds to a spare executor
# this way where send_with_fds cannot).  FH blocks.  Dies as the writes
# below do.
sub send_fd ($$$) {
    my ($fh, $fd, $what) = @_;
    my $data = "\0";
    return if send_with_fds($fh, \$data, [ $fd ], $what);
    # No sendmsg number here.
    require IO::FDPass;
    return if IO::FDPass::send(fileno($fh), $fd);
    _gone("hung up before we sent $what") if $! == EPIPE || $! == ECONNRESET;
    die "send $what: $!\n";
}

# SOL_SOCKET, the level of an SCM_RIGHTS message: 1 on Linux, except
# on alpha, mips, parisc and sparc, where we ask Socket.
my $SOL_SOCKET;
sub _sol_socket () {
    return $SOL_SOCKET if defined $SOL_SOCKET;
    # (Config, which says, takes a cold call 2 ms to load: not asked
    # where Syscall knows the architecture, x86_64, aarch64, riscv64.)
    return $SOL_SOCKET = 1 if Prefork::Interp::Syscall::known_linux();
    require Config;
    if ($^O eq 'linux'
        && $Config::Config{archname} !~ m/\A(?:alpha|mips|hppa|parisc|sparc)/) {
        return $SOL_SOCKET = 1;
    }
    require Socket;
    return $SOL_SOCKET = Socket::SOL_SOCKET();
}

# Where neither syscall.ph nor our table knows recvmsg: IO::FDPass,
# which cannot tell us about a second fd or truncated control data.
sub _recv_fd_fdpass ($$) {
    my ($fh, $what) = @_;
    require IO::FDPass;
    for (;;) {
        $! = 0;
        my $fd = IO::FDPass::recv(fileno($fh));
        return $fd if $fd >= 0;
        # -1 with errno untouched on EOF, and with EDOM if the byte was
        # not zero or carried no descriptor.
        _gone("hung up before sending $what") if $! == 0;
        next if $! == EINTR;
        return undef if $! == EAGAIN || $! == EWOULDBLOCK;
        _gone("connection reset receiving $what") if $! == ECONNRESET;
        die "$what: message has no file descriptor attached\n"
            if $! == EDOM;
        die "receive $what: $!\n";
    }
}

# send_now(FH, DATA, WHAT): writes DATA on a non-blocking FH, all of it
# at once.  The server only writes a few bytes to a fresh connection
# (the greeting, the accept frame), which always fit in the socket's
# buffer; a peer for which they do not is broken.
sub send_now ($$$) {
    my ($fh, $data, $what) = @_;
    for (;;) {
        my $r = syswrite($fh, $data);
        if (!defined $r) {
            next if $! == EINTR;
            _gone("hung up before we sent the $what")
                if $! == EPIPE || $! == ECONNRESET;
            die "write $what: $!\n";
        }
        return if $r == length $data;
        die "could not send the $what without waiting\n";
    }
}

# send_greeting(CALL): step 1 of protocol.md 2 (step 3 upstream), on a
# non-blocking socket.
sub send_greeting ($) {
    my ($fh) = @_;
    send_now($fh, GREETING, 'greeting');
}

# send_in_place_greeting(CALL): the greeting of the first call when the
# setup process runs it itself (protocol.md 7): its payload names the
# extension.
sub send_in_place_greeting ($) {
    my ($fh) = @_;
    send_now($fh, substr(GREETING, 0, 4) . pack('N', length EXT_INPLACE1)
                  . EXT_INPLACE1, 'greeting');
}

#---------- the request body ----------
#
# The server keeps a request as the one string it
# arrived in (protocol.md 4.1, item 6): check_request looks at its
# shape and at the reserved entries only.  The executor splits it
# (request_env, request_args), once it is the caller's process.  Each
# function takes a reference to the body, so it is never copied.

# check_request(\BODY)
#
# BODY is a request body (step 4): NUL-terminated "NAME=value" strings,
# an empty string, then NUL-terminated arguments (7.0.0 clients send
# "interpreter, [script,] args...").  Dies with a one-line message
# unless it ends in a NUL, has the empty string, and at least one
# argument.  Returns a hash ref:
#   env_end => the offset of the NUL of that empty string
#   offer   => what the client offers (see _offer)
sub check_request ($) {
    my ($body) = @_;
    my $len = length $$body;
    $len && substr($$body, -1) eq "\0"
        or die "request does not end in a NUL\n";
    my $env_end;
    if (substr($$body, 0, 1) eq "\0") {
        $env_end = 0;
    } else {
        # The first empty string follows the first NUL that follows a
        # NUL (an entry's terminator); no environment string is empty.
        $env_end = index($$body, "\0\0");
        $env_end >= 0 or die "request has no end-of-environment marker\n";
        $env_end += 1;
    }
    $env_end + 1 < $len
        or die "request has no arguments (not even the interpreter)\n";
    return { env_end => $env_end, offer => _offer($body, $env_end) };
}

# _offer(\BODY, ENV_END): the reserved entries of the environment
# (protocol.md 5, 6.1, 9.1), found with index, not by splitting.
# Returns a hash ref: call1 => BOOL and pty1 => BOOL, whether a
# PREFORK_INTERP_EXT entry lists that name.  Every other name and
# reserved entry is ignored, and nothing of them is kept: a request
# full of them costs no memory.
sub _offer ($$) {
    my ($body, $env_end) = @_;
    my $prefix = EXT_ENV_PREFIX;
    my $offer_head = EXT_OFFER_NAME . '=';
    my ($call1, $pty1) = (0, 0);
    my $at = substr($$body, 0, length $prefix) eq $prefix ? 0
           : _next_entry_with($body, $prefix, 0);
    while ($at >= 0 && $at < $env_end) {
        my $end = index($$body, "\0", $at);
        if (substr($$body, $at, length $offer_head) eq $offer_head) {
            # A client sends one such entry; if there are more, their
            # names add up.
            $call1 ||= _list_has($body, $at + length $offer_head, $end,
                                 EXT_CALL1);
            $pty1 ||= _list_has($body, $at + length $offer_head, $end,
                                EXT_PTY1);
        }
        $at = _next_entry_with($body, $prefix, $end);
    }
    return { call1 => $call1, pty1 => $pty1 };
}

# The offset of the first entry after offset FROM that starts with
# PREFIX, or -1.
sub _next_entry_with ($$$) {
    my ($body, $prefix, $from) = @_;
    my $p = index($$body, "\0$prefix", $from);
    return $p < 0 ? -1 : $p + 1;
}

# Whether the comma-separated list between offsets START and END of
# BODY has the item NAME.
sub _list_has ($$$$) {
    my ($body, $start, $end, $name) = @_;
    my $n = length $name;
    for (my $p = index($$body, $name, $start);
         $p >= 0 && $p + $n <= $end;
         $p = index($$body, $name, $p + 1)) {
        next unless $p == $start || substr($$body, $p - 1, 1) eq ',';
        return 1 if $p + $n == $end || substr($$body, $p + $n, 1) eq ',';
    }
    return 0;
}

# request_env(\BODY, ENV_END): the environment of a checked request,
# for the executor.  Returns (NAMES, VALUES): the names in the order
# they first appear and a hash ref of their values; a repeated name
# keeps its first place and its last value, as setting them one after
# the other would.  Entries without "=" are left out (%ENV cannot hold
# them; perl run directly skips them too), and so are the reserved
# ones (protocol.md 5).  Linear in the size of the body.
sub request_env ($$) {
    my ($body, $env_end) = @_;
    my $prefix = EXT_ENV_PREFIX;
    my (@names, %value);
    my $p = 0;
    while ($p < $env_end) {
        my $end = index($$body, "\0", $p);
        my $entry = substr($$body, $p, $end - $p);
        $p = $end + 1;
        my $eq = index($entry, '=');
        next if $eq < 0;
        my $name = substr($entry, 0, $eq);
        next if substr($name, 0, length $prefix) eq $prefix;
        push @names, $name unless exists $value{$name};
        $value{$name} = substr($entry, $eq + 1);
    }
    return (\@names, \%value);
}

# request_args(\BODY, ENV_END): the arguments of a checked request
# (interpreter first), for the executor.
sub request_args ($$) {
    my ($body, $env_end) = @_;
    return split /\0/, substr($$body, $env_end + 1, -1), -1;
}

# accepted_names(OFFER, PTY_OK): the names we accept from an offer, in
# our order of preference; empty means "plain v1, send nothing".  pty1
# only with call1 (protocol.md 9.1), and only where PTY_OK: the call's
# process can start a session of its own (a server's executor can; a
# setup process running the first call itself, which leads the process
# group its client made, cannot, and has the caller's terminal anyway).
sub accepted_names ($;$) {
    my ($offer, $pty_ok) = @_;
    return () unless $offer->{call1};
    return (EXT_CALL1, EXT_PTY1) if $pty_ok && $offer->{pty1};
    return (EXT_CALL1);
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
# whose body is one big-endian u32 (SIGP, SIGG, STOP, EXIT, FGND).
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

# decode_fgnd_body(BODY): an FGND frame's body (protocol.md 9.2): 1
# (foreground) or 0 (background); dies with a one-line message for
# anything else.
sub decode_fgnd_body ($) {
    my ($body) = @_;
    my $n = decode_u32_body(TAG_FGND, $body);
    $n == 0 || $n == 1
        or die "frame '" . TAG_FGND . "' holds $n, not 0 or 1\n";
    return $n;
}

sub _printable ($) {
    my ($s) = @_;
    $s =~ s/([^\x21-\x7e])/sprintf('\\x%02x', ord $1)/ge;
    return $s;
}

#---------- extension call1: ATTR (protocol.md 6.3) ----------

# decode_attr(BODY, PTY1)
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
#   pty     => [ FD, ... ]   ascending, each 0 to 2, at least one
#   ptybg   => 0 or 1        1: the client starts in the background of
#                            the caller's terminal (only with pty)
#   unknown => [ KEY, ... ]  keys we do not know (ignored)
# A malformed value of a key we know is a protocol error: dies with a
# one-line message.  A repeated key other than rlimit: the last wins.
# PTY1 says whether we accepted extension pty1 (protocol.md 9.2): then
# the pty key must be there (the slave replaces those fds); without it,
# a pty key is a protocol error too.  A ptybg value other than 0 or 1
# is malformed; without a pty it means nothing.
sub decode_attr ($;$) {
    my ($body, $pty1) = @_;
    my %attr = (umask => undef, nice => undef, rlimits => undef,
                sigign => undef, sigmask => undef, fds => undef,
                pty => undef, ptybg => undef, unknown => []);
    die "ATTR has no pty entry, with pty1 accepted\n"
        if $pty1 && $body eq '';
    return \%attr if $body eq '';
    substr($body, -1) eq "\0" or die "ATTR body does not end in a NUL\n";
    # One closure for every entry (made per entry, it cost a call about
    # a third of this function's time).
    my ($key, $value);
    my $bad = sub {
        die "ATTR $key has a malformed value '" . _printable($value) . "'\n";
    };
    foreach my $s (split /\0/, substr($body, 0, -1), -1) {
        ($key, $value) = $s =~ m/\A([^=]*)=(.*)\z/s
            or die "ATTR entry '" . _printable($s) . "' has no '='\n";
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
        } elsif ($key eq 'pty') {
            $pty1 or die "ATTR has a pty entry, but pty1 was not"
                         . " accepted\n";
            my @fds = _number_list($value, $bad);
            @fds or $bad->();
            for my $i (0..$#fds) {
                $fds[$i] <= 2 or $bad->();
                $i == 0 || $fds[$i] > $fds[$i - 1] or $bad->();
            }
            $attr{pty} = \@fds;
        } elsif ($key eq 'ptybg') {
            $value eq '0' || $value eq '1' or $bad->();
            $attr{ptybg} = $value + 0;
        } else {
            push @{ $attr{unknown} }, $key;
        }
    }
    die "ATTR has no pty entry, with pty1 accepted\n"
        if $pty1 && !$attr{pty};
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
    foreach my $key (qw(sigign sigmask fds pty)) {
        push @s, "$key=" . join(',', @{ $attr->{$key} })
            if defined $attr->{$key};
    }
    push @s, "ptybg=$attr->{ptybg}" if defined $attr->{ptybg};
    return join '', map { "$_\0" } @s;
}

# encode_status(WAIT_STATUS): step 15 of a v1 call, the raw wait status
# as a 32-bit big-endian number.  (With call1, the EXIT frame carries
# it: encode_u32_frame.)
sub encode_status ($) {
    my ($status) = @_;
    return pack 'N', $status;
}

1;

__END__

=head1 NAME

Prefork::Interp::Protocol - wire format of prefork-interp v1 and of
extensions call1, pty1 and inplace1 (internal)

=head1 DESCRIPTION

Internal to L<Prefork::Interp>: parsing of the C<PREFORK_INTERP>
environment variable (and the extension inplace1 it may announce),
reading bytes and passed descriptors without blocking, and the script
side of one call (greeting, request, wait status); for extensions
call1 and pty1, the client's offer, frames and the C<ATTR> body.  It has no
stable API of its own.

=cut
