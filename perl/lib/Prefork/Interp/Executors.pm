# Prefork::Interp::Executors - the server's executors: spares forked
# ahead of calls, and the server's watch over each call in progress.
#
# No fork is on a warm call's critical path.  The server keeps
# pool_size spares: copies of itself made while it is idle, each
# blocked reading a control socket of its own (no timer, no polling),
# and its children.  The forker (Prefork::Interp::Forker) makes them,
# so that the server itself never forks while it serves; where no
# forker can run, or it has failed, the server forks them itself.
# When a call's handshake is complete and a slot is free, the server
# makes a spare the leader of the call's process group (with extension
# pty1, the spare makes itself the leader of a new session instead),
# hands it the call (the caller's fds, the request and the attributes,
# over the control socket); it has a new spare made once no call younger
# than FILL_DELAY runs (a fork would delay a short call's EXIT frame, by
# the server's time or the CPU it takes beside the call).  The spare
# returns from serve() as the call's executor; Prefork::Interp applies
# everything of the call (stdio, environment, arguments, fds,
# attributes, signals) there, as it did in an executor forked by a
# monitor.  With no spare left (pool_size 0, or a burst of calls) an
# executor is forked for the call, which it takes with the fork.  A new
# spare rehearses a call before it waits (_rehearse): the pages perl
# writes as it first runs that code after the fork are copied then, not
# on the real call's path (page faults on a warm call's path: 281 to
# 198; the call 6.1 to 5.8 ms on a 2-core VM; about 0.25 MiB more PSS
# per spare).
#
# The server itself plays the monitor's part of protocol.md 4 (upstream
# part 4), one process per call fewer: each call's socket is in the
# server's select loop (SIGP and SIGG frames from the client, and its
# hang-up: SIGINT, then SIGCONT, to the call's process group), and the
# executor's stops and end come from the kernel (waitpid with
# WUNTRACED, woken by a signalfd for SIGCHLD), never from a pipe that
# perl may close before the process has exited.  The STOP and EXIT
# frames (v1: the wait status) go to the client as a monitor sent them.
#
# Every executor, spares included, asks the kernel to SIGKILL it if the
# server dies (PR_SET_PDEATHSIG), so a server killed under its calls
# never leaves one running with a caller's stdio after the client has
# returned.  When the server quits, its spares see EOF on their control
# socket and _exit(0), running nothing of the script.
#
# Control socket, server to spare (a stream; numbers 32-bit big-endian):
#
#  1. 20 bytes: the length of the request body, where its environment
#     ends (check_request's env_end), the length of the ATTR body or
#     0xffffffff without extension call1, the number N of fds, and
#     flags: 1 if extension pty1 was accepted;
#  2. the N fds: the caller's fds 0, 1 and 2, then its other fds in the
#     order ATTR lists them, then with pty1 the pty's slave;
#  3. the request body, then the ATTR body as the client sent it (the
#     server has checked it; the executor decodes it again).
#
# Where perl can make the system calls (Prefork::Interp::Protocol's
# send_with_fds and recv_with_fds) and N is at most 250, 1 to 3 go in
# one sendmsg, the fds attached to its first bytes (one SCM_RIGHTS), so
# the spare wakes once for its call.  Otherwise the fds of 2 come after
# the header as N messages of one zero byte, each carrying one fd, as the
# client sends them (send_fd and recv_fd).  The spare tells which from
# whether fds came with the header.
#
# EOF instead of 1: the server is quitting.  (The call's socket stays
# with the server: the executor has no use for it.)  With pty1 the
# socket then stays open between the server and the call's session
# leader: 8-byte records both ways (REPORT_* and ORDER_FGND below).
#
# The server closes its copies of a call's fds as soon as the executor
# has them, and an executor or spare forked later closes every fd the
# server holds for calls not yet started (its release hook): so with
# pty1 the call's process holds the only copies of the pty's slave, and
# the client sees the end of the output (EIO on the master) when the
# call and what it started have closed theirs.
#
# Copyright the prefork-interp contributors; see the project's
# top-level files for the licence.

package Prefork::Interp::Executors;

use strict;
use warnings;

use Errno qw(EINTR EAGAIN EWOULDBLOCK EPIPE ECONNRESET);
use Fcntl ();
use POSIX qw(WNOHANG WUNTRACED WIFSTOPPED WSTOPSIG WIFSIGNALED WTERMSIG
             WIFEXITED WEXITSTATUS SIGKILL);
use Socket qw(AF_UNIX SOCK_STREAM PF_UNSPEC);
use Time::HiRes ();

use Prefork::Interp::Attributes ();
use Prefork::Interp::Forker ();
use Prefork::Interp::Protocol;
use Prefork::Interp::Signals;
use Prefork::Interp::Syscall ();
use Prefork::Interp::Title;

our $VERSION = '1.0.0';

use constant HEADER_LEN => 20;
use constant NO_ATTR => 0xffffffff;
use constant FLAG_PTY1 => 1;

# Reports from a pty call's session leader to the server, over the
# control socket (protocol.md 9.3): 8 bytes, a kind and a value, 32-bit
# big-endian: the executor's pid, a stop (the signal), the end (the raw
# wait status), an FGND carried out (its value).  The server sends the
# leader records of the same shape the other way: an FGND frame's
# value (protocol.md 9.3 step 5), which the leader answers with
# REPORT_FGND once the pty mirrors it.
use constant REPORT_LEN  => 8;
use constant REPORT_PID  => 1;
use constant REPORT_STOP => 2;
use constant REPORT_EXIT => 3;
use constant REPORT_FGND => 4;
use constant ORDER_FGND  => 4;

# MSG_NOSIGNAL, for send: a leader that has gone is EPIPE, not SIGPIPE.
use constant MSG_NOSIGNAL => 0x4000;

# A spare is not forked while a call started less than this long ago
# runs: the server does nothing else while it forks, and a short call
# would wait for the fork to learn of its end (its EXIT frame).  Once
# every call is older, or none runs, the pool is filled.
use constant FILL_DELAY => 0.1;

# Bytes read from a call's socket at once while the call runs.
use constant READ_SIZE => 65536;

# Without a signalfd, the server learns that an executor stopped or
# ended from SIGCHLD, which select can miss (it may come just before
# select starts); while it has children to hear of, it looks this
# often.
use constant POLL => 0.05;

my $P = 'Prefork::Interp::Protocol';

# new(pool_size => N, log => LOG, title => TITLE, use_signalfd => BOOL,
#     release => CODE)
#
# In the server.  release closes, in an executor just forked, what
# only the server needs of its own (LISTEN, the watcher's pipes, the
# inotify fd, the connections it holds); we close ours.  use_signalfd
# false ($Prefork::Interp::USE_PIDFD = 0) makes the server learn of its
# children from its SIGCHLD handler interrupting select, and polling.
sub new {
    my ($class, %a) = @_;
    my $self = bless {
        pool_size   => $a{pool_size},
        log         => $a{log},
        title       => $a{title},
        release     => $a{release},
        rehearse    => $a{rehearse},
        spares      => [],    # { pid, ctl (our end) }, oldest first
        running     => {},    # executor pid => the call (see _started)
        leaving     => {},    # pid => 1: spares told to go, not reaped
        fill_failed => 0,     # no spares forked until the next call
        forker      => undef, # Prefork::Interp::Forker, once started
        requested   => 0,     # spares asked of the forker, not yet come
        # No forker: none can run here, or it has failed (we fork).
        forker_failed => !Prefork::Interp::Forker::available(),
        sigfd       => undef,
        use_signalfd => $a{use_signalfd},    # so do pty calls' leaders
    }, $class;
    $self->{sigfd} = _signalfd_chld() if $a{use_signalfd} && $^O eq 'linux';
    return $self;
}

# running(): how many calls are in progress (each holds a slot).
sub running { scalar keys %{ $_[0]{running} } }

#---------- starting calls ----------

# fill_in(NOW): in how many seconds fill() is due: 0 for now, undef
# if the pool is full (or a fork failed: then after the next call).
sub fill_in {
    my ($self, $now) = @_;
    return undef if $self->{fill_failed}
                 || @{ $self->{spares} } + $self->{requested}
                    >= $self->{pool_size};
    my $left = 0;
    foreach my $c (values %{ $self->{running} }) {
        my $wait = $c->{started} + FILL_DELAY - $now;
        $left = $wait if $wait > $left;
    }
    return $left;
}

# fill(): forks spares up to the pool size.  Returns undef in the
# server; in a spare, once the server has handed it a call, the call
# (see _wait_for_call).  A fork that fails is logged, and tried again
# after the next call.
sub fill {
    my ($self) = @_;
    if (!$self->{forker} && !$self->{forker_failed}) {
        my $ctl = $self->_start_forker;
        return $self->_become_spare($ctl) if $ctl;
    }
    if (my $forker = $self->{forker}) {
        my $wanted = $self->{pool_size} - @{ $self->{spares} }
                   - $self->{requested};
        return undef if $wanted <= 0;
        if ($forker->request($wanted)) {
            $self->{requested} += $wanted;
            return undef;
        }
        $self->_forker_gone('its socket is closed');
    }
    while (!$self->{fill_failed}
           && @{ $self->{spares} } < $self->{pool_size}) {
        my $request;
        if (!eval { $request = $self->_fork_spare; 1 }) {
            my $e = $@;
            chomp $e;
            $self->{log}->msg('warning', "$e; no more spares until the"
                              . ' next call');
            $self->{fill_failed} = 1;
            return undef;
        }
        return $request if $request;
    }
    return undef;
}

# start(HS): hands the complete call of handshake HS (taken from the
# intake) to the oldest spare or, with none left, to an executor forked
# for it.  Returns the call in that new executor, undef in the server,
# where the call is then in progress; dies with a message if no
# executor could be had (HS is then closed).
sub start {
    my ($self, $hs) = @_;
    my $call = $hs->call;
    my $pty1 = _pty1($call->{call1});
    while (my $spare = shift @{ $self->{spares} }) {
        my $ok = eval { _hand_over($spare, $call); 1 };
        my $e = $@;
        if ($ok) {
            # With pty1 the spare leads the call's session: its reports
            # come over the control socket (protocol.md 9.3).
            close $spare->{ctl} unless $pty1;
            $self->_started($spare->{pid}, $call,
                            $pty1 ? $spare->{ctl} : undef);
            return undef;
        }
        close $spare->{ctl};
        # Killed by someone, say: the next one will do.
        $e = Prefork::Interp::Protocol::is_gone($e) ? $e->why : $e;
        chomp $e;
        $self->{log}->msg('warning', "spare executor [$spare->{pid}] could"
                          . " not take a call: $e");
        kill SIGKILL, $spare->{pid};
        $self->{leaving}{ $spare->{pid} } = 1;
    }
    # With pty1, the process forked leads the call's session, and
    # reports to us over a socket pair.
    my ($ours, $theirs);
    if ($pty1 && !socketpair($ours, $theirs, AF_UNIX, SOCK_STREAM,
                             PF_UNSPEC)) {
        my $e = "cannot make a socket pair for a call's session: $!\n";
        $hs->close;
        die $e;
    }
    # Signal frames that came before ATTR reach the process forked here
    # before it goes on (as a spare's come before its call: _hand_over).
    my ($early_r, $early_w);
    my $early = !$pty1 && $call->{call1} && @{ $call->{call1}{early} };
    if ($early && !pipe($early_r, $early_w)) {
        my $e = "cannot make a pipe for a call's early signals: $!\n";
        $hs->close;
        die $e;
    }
    my $pid = eval {
        $self->_fork('an executor', sub {
            close $call->{fh};
            close $ours if $ours;
            if ($early) {
                close $early_w;
                1 while !defined sysread($early_r, my $eof, 1)
                        && $! == EINTR;
                close $early_r;
            }
        });
    };
    if (!defined $pid) {
        my $e = $@;
        $hs->close;
        if ($ours) { close $ours; close $theirs }
        if ($early) { close $early_r; close $early_w }
        die $e;
    }
    if (!$pid) {
        # The executor, with the call, as a spare that has just been
        # handed it.  The leader of the call's process group
        # (protocol.md 6.4 step 1; the server does the same from its
        # side, so neither races the other), or with pty1 the leader of
        # a new session, which forks the executor (protocol.md 9.3).
        my $request = { fds => $call->{fds}, body => $call->{body},
                        env_end => $call->{env_end},
                        call1 => $call->{call1}, log => $self->{log} };
        return $self->_lead_session($theirs, $request) if $pty1;
        POSIX::setpgid(0, 0);
        return $request;
    }
    # EACCES (it has exec'd already) or ESRCH (it has gone): it did its
    # own setpgid first.  Not with pty1: a process-group leader cannot
    # start a session.
    close $theirs if $theirs;
    POSIX::setpgid($pid, $pid) unless $pty1;
    if ($early) {
        close $early_r;
        _deliver_early($call->{call1}, $pid);
        close $early_w;
    }
    $self->_started($pid, $call, $ours);
    return undef;
}

# _deliver_early(CALL1, PID): the signal frames that came before ATTR
# (protocol.md 6.5), to PID, which has every signal blocked and has not
# been handed the call yet, or waits for us to go on.
sub _deliver_early ($$) {
    my ($call1, $pid) = @_;
    foreach my $early (@{ $call1 ? $call1->{early} : [] }) {
        my ($tag, $sig) = @$early;
        Prefork::Interp::Signals::deliver($tag, $sig, $pid);
    }
}

# _pty1(CALL1): whether the call has a pty (extension pty1 accepted).
sub _pty1 ($) {
    my ($call1) = @_;
    return $call1 && defined $call1->{slave};
}

# _lead_session(CTL, REQUEST): protocol.md 9.3, in the process the
# server handed a pty1 call to (a spare, or a process forked for the
# call), every signal blocked since the server forked it (the pty's
# hang-up at the end must not end us early).  We lead a new session
# whose controlling terminal is the pty's slave, and fork the executor,
# which leads a process group of its own, in the pty's foreground
# unless the attribute ptybg says the caller's job starts in the
# background: its group is not orphaned (its parent, we, is in the same
# session and another group), so the kernel's stop signals (^Z,
# background reads) work.  Returns REQUEST in the executor; we never
# return: we close every fd but CTL, our channel to the server, report
# over it the executor's pid, its stops and its end (see REPORT_*),
# carry out the FGND the server passes on (_lead), and _exit, running
# nothing of the script's.
sub _lead_session {
    my ($self, $ctl, $request) = @_;
    my $log = $self->{log};
    my $slave = $request->{call1}{slave};
    defined POSIX::setsid()
        or $log->msg('warning', "setsid for a call with a pty: $!");
    my $tiocsctty = Prefork::Interp::Attributes::tiocsctty();
    # A duplicate for ioctl's handle, so closing it leaves the slave.
    if (!defined $tiocsctty) {
        $log->msg('warning', 'cannot make the pty the controlling'
                  . ' terminal: TIOCSCTTY is not known on this system');
    } elsif (!open(my $fh, '+<&', $slave)) {
        $log->msg('warning', "cannot use the pty's slave: $!");
    } else {
        # Its argument is the number 0: do not steal the terminal.
        ioctl($fh, $tiocsctty, 0)
            or $log->msg('warning', 'cannot make the pty the controlling'
                         . " terminal: $!");
        close $fh;
    }
    my $leader = $$;
    my $background = $request->{call1}{attr}{ptybg};
    # The executor closes its end of this pipe once it has set the pty's
    # foreground; we wait for that before we move the foreground
    # ourselves (FGND), which its tcsetpgrp would undo otherwise.
    my ($set_r, $set_w);
    pipe($set_r, $set_w)
        or $log->msg('warning', "cannot make a pipe for a call's session:"
                     . " $!");
    my $pid = fork;
    if (!defined $pid) {
        $log->msg('err', "cannot fork the executor of a call with a pty: $!");
        POSIX::_exit(127);
    }
    if (!$pid) {
        # The executor: dies with its leader, as a spare does with the
        # server; leads its group, the pty's foreground group unless the
        # caller's job is in the background (SIGTTOU is blocked, as
        # everything is until the call's mask is set).
        close $ctl;
        close $set_r if $set_r;
        Prefork::Interp::Signals::die_with_parent($leader, SIGKILL, $log);
        POSIX::setpgid(0, 0);
        if (!$background) {
            defined POSIX::tcsetpgrp($slave, POSIX::getpgrp())
                or $log->msg('warning', "cannot put the call in the pty's"
                             . " foreground: $!");
        }
        close $set_w if $set_w;
        return $request;
    }
    POSIX::setpgid($pid, $pid);
    Prefork::Interp::Title::set(
        Prefork::Interp::Title::of_role('session', $self->{title}));
    if ($set_w) {
        # EOF once the executor has closed its copy, or has died.
        close $set_w;
        my $byte;
        1 while !defined sysread($set_r, $byte, 1) && $! == EINTR;
        close $set_r;
    }
    _close_all_but(fileno $ctl);
    _report($ctl, REPORT_PID, $pid);
    _lead($ctl, $pid, $self->{use_signalfd} && $^O eq 'linux');
}

# _lead(CTL, EXECUTOR, USE_SIGNALFD): the session leader's watch, until the executor
# ends: its stops and its end reported to the server over CTL, and the
# server's FGND records carried out (_mirror) and answered.  Both are
# waited for at once: SIGCHLD (blocked, as everything is) read from a
# signalfd, or where there is none, a handler that writes to a pipe,
# with SIGCHLD alone unblocked, and select looking again every POLL
# seconds (perl runs a handler between its ops, so a SIGCHLD that comes
# just before select starts is heard only then).  Each wake drains the
# signalfd or pipe first, then waits for the executor without blocking,
# so no change is missed.  Never returns: _exits once the end is
# reported, or the executor cannot be waited for.
sub _lead ($$$) {
    my ($ctl, $exe, $use_signalfd) = @_;
    my $wake = $use_signalfd ? _signalfd_chld() : undef;
    my ($poll, $wake_r, $wake_w);
    if (!defined $wake) {
        $poll = POLL;
        if (pipe($wake_r, $wake_w)) {
            foreach my $fh ($wake_r, $wake_w) {
                my $flags = fcntl($fh, Fcntl::F_GETFL(), 0);
                fcntl($fh, Fcntl::F_SETFL(), $flags | Fcntl::O_NONBLOCK())
                    if defined $flags;
            }
            $SIG{CHLD} = sub { syswrite $wake_w, "\0" };
            $wake = fileno $wake_r;
            POSIX::sigprocmask(POSIX::SIG_UNBLOCK(),
                               POSIX::SigSet->new(POSIX::SIGCHLD()));
        }
    }
    my $listening = 1;    # until the server closes its end
    my $in = '';
    my $saved;            # the foreground group an FGND 0 replaced
    for (;;) {
        if (defined $wake) {
            my $buf;
            1 while defined POSIX::read($wake, $buf, 128 * 8) && length $buf;
        }
        for (;;) {
            my $r = waitpid($exe, WNOHANG | WUNTRACED);
            if ($r < 0) {
                next if $! == EINTR;
                POSIX::_exit(0);
            }
            last if $r == 0;
            my $st = ${^CHILD_ERROR_NATIVE};
            if (WIFSTOPPED($st)) {
                _report($ctl, REPORT_STOP, WSTOPSIG($st));
                next;
            }
            _report($ctl, REPORT_EXIT, $st);
            POSIX::_exit(0);
        }
        my $rbits = '';
        vec($rbits, fileno $ctl, 1) = 1 if $listening;
        vec($rbits, $wake, 1) = 1 if defined $wake;
        # Errors are EINTR (our handler): look again.
        next unless select($rbits, undef, undef, $poll) > 0
                    && $listening && vec($rbits, fileno $ctl, 1);
        my $r = sysread($ctl, $in, 4096, length $in);
        next if !defined $r && $! == EINTR;
        if (!$r) {
            # The server has gone (we die with it) or is leaving.
            $listening = 0;
            next;
        }
        while (length $in >= REPORT_LEN) {
            my ($kind, $value) = unpack 'NN', substr($in, 0, REPORT_LEN, '');
            next unless $kind == ORDER_FGND;
            $saved = _mirror($exe, $value, $saved);
            _report($ctl, REPORT_FGND, $value);
        }
    }
}

# _mirror(EXECUTOR, FOREGROUND, SAVED): protocol.md 9.3 step 5, in the
# session leader: the caller's job is now in the foreground (1) or the
# background (0) of the caller's terminal, and the pty follows.  In the
# background, the leader's own group takes the pty's foreground, so the
# kernel stops the executor's group when it reads the pty (SIGTTIN);
# the group that had it is remembered.  In the foreground, that group
# gets it back, or if there is none or it has gone, the executor's
# group.  Only when the leader's group has the foreground: otherwise
# the pty mirrors the foreground already (and the foreground job of a
# script that runs job control of its own stays).  SIGTTOU is blocked,
# so tcsetpgrp does not stop us.  Returns the group to remember.
sub _mirror ($$$) {
    my ($exe, $fg, $saved) = @_;
    open(my $tty, '+<', '/dev/tty') or return $saved;
    my $fd = fileno $tty;
    my $now = POSIX::tcgetpgrp($fd) // -1;
    my $own = POSIX::getpgrp();
    if (!$fg) {
        $saved = $now
            if $now > 0 && $now != $own && POSIX::tcsetpgrp($fd, $own);
    } elsif ($now == $own) {
        POSIX::tcsetpgrp($fd, $exe)
            unless defined $saved && POSIX::tcsetpgrp($fd, $saved);
        $saved = undef;
    }
    close $tty;
    return $saved;
}

# _report(CTL, KIND, VALUE): from a session leader to the server.  A
# server that has gone kills us (PR_SET_PDEATHSIG): errors are ignored.
sub _report ($$$) {
    my ($ctl, $kind, $value) = @_;
    my $bytes = pack 'NN', $kind, $value;
    eval { _write_all($ctl, \$bytes) };
}

# _close_all_but(FD): closes every fd of ours but FD.
sub _close_all_but ($) {
    my ($keep) = @_;
    my @fds;
    if (opendir(my $dh, '/proc/self/fd')) {
        @fds = grep { /\A[0-9]+\z/ } readdir $dh;
        closedir $dh;
    } else {
        my $max = POSIX::sysconf(POSIX::_SC_OPEN_MAX()) // 1024;
        $max = 65536 if $max > 65536;
        @fds = 0 .. $max - 1;
    }
    POSIX::close($_) foreach grep { $_ != $keep } @fds;
}

# _hand_over(SPARE, CALL): over SPARE's control socket (see the top of
# this file).  Dies if the spare cannot take it.
sub _hand_over ($$) {
    my ($spare, $call) = @_;
    my $call1 = $call->{call1};
    my $pty1 = _pty1($call1);
    # Its group exists before anything of the call reaches it, so a
    # SIGG frame forwarded at once has a group to go to.  If it fails,
    # the spare has gone: so do the writes below.  Not with pty1: the
    # spare starts a session, which a group leader cannot (_lead_session).
    POSIX::setpgid($spare->{pid}, $spare->{pid}) unless $pty1;
    # Signal frames that came before ATTR, now, while the spare has every
    # signal blocked: they stay pending until the call's dispositions and
    # mask are set.  Sent after the handover, they could come too late,
    # the call over by then (t/15-call1.t caught it).
    _deliver_early($call1, $spare->{pid}) unless $pty1;
    _send_call($spare->{ctl}, $call);
}

# _send_call(CTL, CALL): the handover's bytes and fds (the layout at the
# top of this file).  Dies if the spare has gone.
sub _send_call ($$) {
    my ($ctl, $call) = @_;
    my $call1 = $call->{call1};
    my $pty1 = _pty1($call1);
    my $attr = $call1 ? $call1->{attr_body} : undef;
    my @fds = (@{ $call->{fds} },
               map { $_->[1] } @{ $call1 ? $call1->{extra_fds} : [] });
    push @fds, $call1->{slave} if $pty1;
    my $body = $call->{body};
    my $head = pack 'N5', length $$body, $call->{env_end},
                          defined $attr ? length $attr : NO_ATTR,
                          scalar @fds, $pty1 ? FLAG_PTY1 : 0;
    my $all = $head . $$body . ($attr // '');
    return if Prefork::Interp::Protocol::send_with_fds($ctl, \$all, \@fds,
                                                       'a call');
    _write_all($ctl, \$head);
    Prefork::Interp::Protocol::send_fd($ctl, $_, 'a call\'s fd') foreach @fds;
    _write_all($ctl, $body);
    _write_all($ctl, \$attr) if defined $attr;
}

# _started(PID, CALL, CTL): the server's side once executor PID has the
# call (protocol.md 4, 4.10): the caller's fds and the request are the
# executor's now (our copies are closed at once, the pty's slave
# included: protocol.md 9.3); signal frames that came before ATTR have
# been delivered before it could run the call (it keeps them pending
# until its dispositions and mask are set); the call is watched from now
# on.  With pty1, PID
# is the call's session leader, and CTL our channel to it: the
# executor's pid comes over it, and signals are held until then.
sub _started {
    my ($self, $pid, $call, $ctl) = @_;
    my $call1 = $call->{call1};
    my $c = $self->{running}{$pid} = {
        pid       => $pid,
        exe       => $ctl ? undef : $pid,    # where signals go
        ctl       => $ctl,       # pty1: the leader's reports, until EOF
        pty1      => $ctl ? 1 : 0,
        held      => [],         # [TAG, VALUE]: signals until exe is
                                 # known, and pty1's FGND (see _pump)
        held_hang => 0,          # a hang-up, until exe is known
        fgnd_busy => 0,          # an FGND passed to the leader, not
                                 # carried out yet
        reports   => '',
        reported  => undef,      # the executor's wait status, reported
        fh        => $call->{fh},    # undef once closed
        call1     => $call1 ? 1 : 0,
        listening => 1,              # reading the client: not after it
                                     # has gone or broken the protocol
        inbuf     => '',
        said_data => 0,
        started   => Time::HiRes::time(),
    };
    if ($ctl) {
        my $flags = fcntl($ctl, Fcntl::F_GETFL(), 0);
        fcntl($ctl, Fcntl::F_SETFL(), $flags | Fcntl::O_NONBLOCK())
            if defined $flags;
    }
    # With pty1, held until the executor's pid comes; without, delivered
    # already (_deliver_early).
    if ($ctl) {
        $self->_deliver($c, @$_) foreach @{ $call1 ? $call1->{early} : [] };
    }
    Prefork::Interp::Syscall::close_fd($_)
        foreach @{ $call->{fds} },
                map { $_->[1] } @{ $call1 ? $call1->{extra_fds} : [] };
    Prefork::Interp::Syscall::close_fd($call1->{slave}) if _pty1($call1);
    undef ${ $call->{body} };
    $self->{fill_failed} = 0;
}

# _read_reports(C): reads what a pty call's session leader reported
# (protocol.md 9.3), without blocking: the executor's pid (the signals
# held until then are delivered), its stops (STOP frames), its end
# (kept for the EXIT frame, sent once the leader is reaped), each FGND
# it has carried out (what was held after it goes on).
sub _read_reports {
    my ($self, $c) = @_;
    while ($c->{ctl}) {
        my $r = sysread($c->{ctl}, $c->{reports}, 4096, length $c->{reports});
        if (!defined $r) {
            next if $! == EINTR;
            last if $! == EAGAIN || $! == EWOULDBLOCK;
        }
        if (!$r) {
            close(delete $c->{ctl});
            last;
        }
    }
    while (length $c->{reports} >= REPORT_LEN) {
        my ($kind, $value) = unpack 'NN',
                                    substr($c->{reports}, 0, REPORT_LEN, '');
        if ($kind == REPORT_PID) {
            $c->{exe} = $value;
            $self->_pump($c);
            Prefork::Interp::Signals::hang_up($value) if $c->{held_hang};
        } elsif ($kind == REPORT_STOP) {
            $self->_stopped($c, $value);
        } elsif ($kind == REPORT_EXIT) {
            $c->{reported} = $value;
        } elsif ($kind == REPORT_FGND) {
            $c->{fgnd_busy} = 0;
            $self->_pump($c);
        }
    }
    if (!$c->{ctl}) {
        # The leader has gone, and the executor with it: nothing held is
        # carried out any more.
        $c->{held} = [];
        $c->{fgnd_busy} = 0;
    }
}

# _fork(WHAT, IN_CHILD): forks an executor (a spare, or one for a call)
# with every signal blocked: the executor unblocks them once it has its
# dispositions and mask (protocol.md 6.4 steps 6 and 7), so a signal
# forwarded to it meanwhile is not met by the server's.  Returns the pid
# in the server, 0 in the executor, which dies with the server and has
# closed every fd of the server's (and run IN_CHILD); dies with a
# message if fork fails.  Nothing in the executor dies: it _exits.
sub _fork {
    my ($self, $what, $in_child) = @_;
    my $server = $$;
    my $oldmask = Prefork::Interp::Signals::block_all();
    my $pid = fork;
    if (!defined $pid) {
        my $e = "$!";
        Prefork::Interp::Signals::restore_mask($oldmask);
        die "cannot fork $what: $e\n";
    }
    if ($pid) {
        Prefork::Interp::Signals::restore_mask($oldmask);
        return $pid;
    }
    # First of all, die with the server (protocol.md 4).
    eval {
        Prefork::Interp::Signals::die_with_parent($server, SIGKILL,
                                                  $self->{log});
        $self->_release;
        $in_child->() if $in_child;
        1;
    } or do {
        $self->{log}->msg('err', "executor just forked: $@");
        POSIX::_exit(127);
    };
    return 0;
}

# _start_forker(): starts the forker (Prefork::Interp::Forker).
# Returns undef in the server; in a spare the forker has made, its end
# of its control socket.  A failure is logged, and we fork ourselves.
sub _start_forker {
    my ($self) = @_;
    my $oldmask = Prefork::Interp::Signals::block_all();
    my $log = $self->{log};
    my $server = $$;
    my $got = eval {
        Prefork::Interp::Forker::start(
            sub { $self->_release },
            sub { Prefork::Interp::Signals::die_with_parent($_[0], SIGKILL,
                                                            $log) },
            sub { Prefork::Interp::Title::set(
                      Prefork::Interp::Title::of_role('forker',
                                                      $self->{title})) });
    };
    if (!$got) {
        my $e = $@;
        chomp $e;
        Prefork::Interp::Signals::restore_mask($oldmask);
        $self->{forker_failed} = 1;
        $log->msg('warning', "$e; the server forks its spares itself");
        return undef;
    }
    if (ref($got) ne 'Prefork::Interp::Forker') {
        # A spare, the server's child: every signal stays blocked (see
        # _fork), and it dies with the server (a clone does not inherit
        # the forker's request).
        Prefork::Interp::Signals::die_with_parent($server, SIGKILL, $log);
        return $got;
    }
    Prefork::Interp::Signals::restore_mask($oldmask);
    $self->{forker} = $got;
    return undef;
}

# _forker_gone(WHY, REAPED): the forker has failed: we fork our spares
# ourselves from now on.  REAPED: it has ended and been reaped already.
sub _forker_gone {
    my ($self, $why, $reaped) = @_;
    $self->{log}->msg('warning', 'the forker of spares ['
                      . $self->{forker}->pid . "] has failed ($why); the"
                      . ' server forks them itself');
    $self->_drop_forker($reaped);
}

# _drop_forker(REAPED): lets the forker go (it sees EOF and exits, unless
# REAPED already); no spare is asked of it any more.
sub _drop_forker {
    my ($self, $reaped) = @_;
    my $forker = delete $self->{forker};
    $forker->stop;
    $self->{leaving}{ $forker->pid } = 1 unless $reaped;
    $self->{forker_failed} = 1;
    $self->{requested} = 0;
}

# _forker_readable(): spares have come from the forker (or it has gone).
sub _forker_readable {
    my ($self) = @_;
    my ($spares, $failed, $gone) = $self->{forker}->receive;
    push @{ $self->{spares} }, { pid => $_->[0], ctl => $_->[1] }
        foreach @$spares;
    $self->{requested} -= @$spares + $failed;
    $self->{requested} = 0 if $self->{requested} < 0;
    if ($failed) {
        $self->{log}->msg('warning', "the forker could not make $failed"
                          . ' spare executor(s); no more until the next'
                          . ' call');
        $self->{fill_failed} = 1;
    }
    $self->_forker_gone('it has closed its socket') if $gone;
}

# In an executor just forked (or the forker): closes every fd of the
# server's.
sub _release {
    my ($self) = @_;
    $self->{release}->();
    $self->{forker}->stop if $self->{forker};
    delete $self->{forker};
    POSIX::close(delete $self->{sigfd}) if defined $self->{sigfd};
    close $_->{ctl} foreach @{ $self->{spares} };
    foreach my $c (values %{ $self->{running} }) {
        close $c->{fh} if $c->{fh};
        close $c->{ctl} if $c->{ctl};
    }
    $self->{spares} = [];
    $self->{running} = {};
    $self->{leaving} = {};
}

#---------- the spare's side ----------

# _fork_spare(): forks a spare.  Returns undef in the server (the spare
# is then in the pool); in the spare, once it has been handed a call,
# the call.  Dies with a message if it cannot fork.
sub _fork_spare {
    my ($self) = @_;
    socketpair(my $ours, my $theirs, AF_UNIX, SOCK_STREAM, PF_UNSPEC)
        or die "cannot make a socket pair for a spare executor: $!\n";
    my $pid = eval {
        $self->_fork('a spare executor', sub { close $ours });
    };
    if (!defined $pid) {
        my $e = $@;
        close $ours;
        close $theirs;
        die $e;
    }
    if ($pid) {
        close $theirs;
        push @{ $self->{spares} }, { pid => $pid, ctl => $ours };
        return undef;
    }
    return $self->_become_spare($theirs);
}

# _become_spare(CTL): in a new spare (forked by us or made by the
# forker), every signal blocked: waits, costing nothing, until a call or
# EOF comes on CTL, its end of its control socket.  Returns the call;
# _exits at EOF.
sub _become_spare {
    my ($self, $theirs) = @_;
    Prefork::Interp::Title::set(
        Prefork::Interp::Title::of_role('spare', $self->{title}));
    $self->_rehearse if $self->{rehearse};
    my $request = eval { _wait_for_call($theirs) };
    if (!$request) {
        # EOF: the server is quitting (or has gone).
        POSIX::_exit(0) unless $@;
        my $e = Prefork::Interp::Protocol::is_gone($@) ? $@->why : $@;
        chomp $e;
        $self->{log}->msg('err', "spare executor: taking a call: $e");
        POSIX::_exit(127);
    }
    $request->{log} = $self->{log};
    # protocol.md 6.4 step 1: the server made us the leader of the
    # call's group already; with pty1, we lead its session and fork
    # its executor (9.3).
    return $self->_lead_session($theirs, $request)
        if _pty1($request->{call1});
    close $theirs;
    return $request;
}

# _rehearse(): in a new spare, before it waits: a made-up call handed
# over to ourselves through a socket pair, which the rehearse function
# (Prefork::Interp's) then takes on, changing nothing.  perl writes to
# every value it uses (reference counts, flags), so the first use of
# each piece of code and data after the fork copies pages from the
# server, a page fault each (3-4 us on a virtual machine); made here,
# while the spare waits, those copies are off the real call's path.
# Anything failing is left alone: the real call goes through it again.
sub _rehearse {
    my ($self) = @_;
    socketpair(my $ours, my $theirs, AF_UNIX, SOCK_STREAM, PF_UNSPEC)
        or return;
    my $null = POSIX::open('/dev/null', POSIX::O_RDWR());
    if (defined $null) {
        my $body = "NAME=value\0\0interpreter\0script\0";
        my $attr = "umask=0022\0nice=0\0rlimit=7,1024,4096\0";
        my $call = { fds => [ $null, $null, $null ], body => \$body,
                     env_end => index($body, "\0\0") + 1,
                     call1 => { attr_body => $attr, extra_fds => [] } };
        my $request = eval {
            _send_call($ours, $call);
            _wait_for_call($theirs);
        };
        if ($request) {
            $request->{log} = $self->{log};
            eval { $self->{rehearse}->($request); 1 };
            POSIX::close($_) foreach @{ $request->{fds} };
        }
        POSIX::close($null);
    }
    close $ours;
    close $theirs;
}

# _wait_for_call(CTL): blocks until the server hands us a call; returns
# it as Prefork::Interp takes it (fds, body, env_end, call1, as
# Prefork::Interp::Handshake's call() has them), or undef at EOF.  Dies
# if the server breaks off.
sub _wait_for_call ($) {
    my ($ctl) = @_;
    my $head = '';
    # The header, and the fds if they came with it (see the top of this
    # file).
    my ($got, $came) = Prefork::Interp::Protocol::recv_with_fds(
        $ctl, HEADER_LEN, 'a call');
    $head = $got if defined $got;
    my @fds = @{ $came // [] };
    if (!length $head) {
        _read_exact($ctl, \$head, HEADER_LEN) or return undef;
    } elsif (length $head < HEADER_LEN) {
        _read_exact($ctl, \$head, HEADER_LEN - length $head)
            or die "control socket closed in the middle of a call\n";
    }
    my ($body_len, $env_end, $attr_len, $nfds, $flags) = unpack 'N5', $head;
    my $pty1 = $flags & FLAG_PTY1;
    if (@fds && @fds != $nfds) {
        Prefork::Interp::Syscall::close_fd($_) foreach @fds;
        die 'got ' . scalar(@fds) . " fds with a call of $nfds\n";
    }
    push @fds, Prefork::Interp::Protocol::recv_fd_wait($ctl, 'a call\'s fd')
        while @fds < $nfds;
    my $body = '';
    _read_exact($ctl, \$body, $body_len)
        or die "control socket closed in the middle of a call\n";
    my $call1;
    if ($attr_len != NO_ATTR) {
        my $bytes = '';
        _read_exact($ctl, \$bytes, $attr_len)
            or die "control socket closed in the middle of a call\n";
        my $attr = Prefork::Interp::Protocol::decode_attr($bytes, $pty1);
        my @numbers = @{ $attr->{fds} // [] };
        @numbers == $nfds - 3 - ($pty1 ? 1 : 0)
            or die "got $nfds fds for a call with " . scalar(@numbers)
                 . " extra ones" . ($pty1 ? ' and a pty' : '') . "\n";
        $call1 = { attr => $attr, early => [],
                   extra_fds => [ map { [ $numbers[$_], $fds[ 3 + $_ ] ] }
                                      0 .. $#numbers ],
                   slave => $pty1 ? $fds[-1] : undef };
    }
    return { fds => [ @fds[0 .. 2] ], body => \$body, env_end => $env_end,
             call1 => $call1 };
}

# _read_exact(FH, \BUF, N): appends N bytes from FH (blocking) to BUF.
# True, or false at EOF before the first byte; dies at EOF after it.
sub _read_exact ($$$) {
    my ($fh, $buf, $n) = @_;
    my $start = length $$buf;
    while (length($$buf) - $start < $n) {
        my $r = sysread($fh, $$buf, $n - (length($$buf) - $start),
                        length $$buf);
        if (!defined $r) {
            next if $! == EINTR;
            die "read from the control socket: $!\n";
        }
        next if $r > 0;
        return 0 if length $$buf == $start;
        die "control socket closed in the middle of a call\n";
    }
    return 1;
}

# _write_all(FH, \DATA): to a spare's control socket (Protocol's write_all).
sub _write_all ($$) {
    my ($fh, $data) = @_;
    Prefork::Interp::Protocol::write_all($fh, $data, 'the control socket');
}

#---------- the calls in progress (the monitor's part) ----------

# watch(\RBITS): adds, to a select bit vector, the signalfd and the
# sockets of the calls whose client we still read.
sub watch {
    my ($self, $rbits) = @_;
    vec($$rbits, $self->{sigfd}, 1) = 1 if defined $self->{sigfd};
    vec($$rbits, fileno($self->{forker}->fh), 1) = 1 if $self->{forker};
    foreach my $c (values %{ $self->{running} }) {
        vec($$rbits, fileno($c->{fh}), 1) = 1 if $c->{listening};
        vec($$rbits, fileno($c->{ctl}), 1) = 1 if $c->{ctl};
    }
}

# timeout(): for select, undef for none: without a signalfd, POLL while
# a child is to be heard of.
sub timeout {
    my ($self) = @_;
    return undef if defined $self->{sigfd};
    return (%{ $self->{running} } || %{ $self->{leaving} }) ? POLL : undef;
}

# service(RBITS): reads the calls' sockets that select found readable.
sub service {
    my ($self, $rbits) = @_;
    $self->_forker_readable
        if $self->{forker} && vec($rbits, fileno($self->{forker}->fh), 1);
    foreach my $c (values %{ $self->{running} }) {
        $self->_read_reports($c)
            if $c->{ctl} && vec($rbits, fileno($c->{ctl}), 1);
        $self->_readable($c)
            if $c->{listening} && vec($rbits, fileno($c->{fh}), 1);
    }
}

# 4.11: the client's side of a call in progress.  Plain v1: a client
# sends nothing after its request; bytes are ignored (protocol.md 4;
# 7.0.0 took them as a hang-up), only EOF or an error ends the call
# early.  Extension call1 (protocol.md 6.5): SIGP and SIGG frames are
# carried out.
sub _readable {
    my ($self, $c) = @_;
    my $log = $self->{log};
    my $r = sysread($c->{fh}, $c->{inbuf}, READ_SIZE, length $c->{inbuf});
    if (!defined $r) {
        return if $! == EINTR || $! == EAGAIN || $! == EWOULDBLOCK;
        return $self->_hang_up($c, "connection failed ($!)");
    }
    if ($r == 0) {
        return $self->_hang_up($c, length($c->{inbuf}) && $c->{call1}
                                   ? 'hung up in the middle of a frame'
                                   : 'hung up');
    }
    if (!$c->{call1}) {
        $log->msg('info', 'caller sent data after its request; ignored')
            unless $c->{said_data}++;
        $c->{inbuf} = '';
        return;
    }
    for (;;) {
        my $frame = eval { Prefork::Interp::Protocol::take_frame(\$c->{inbuf}) };
        if (!$frame) {
            return unless $@;
            my $e = $@;
            chomp $e;
            $log->msg('warning', "bad frame from caller: $e;"
                      . ' dropping the call');
            return $self->_hang_up($c, undef);
        }
        my ($tag, $body) = @$frame;
        # Frames we do not know are skipped (protocol.md 6.2).
        next unless $tag eq $P->TAG_SIGP || $tag eq $P->TAG_SIGG
                 || $tag eq $P->TAG_FGND;
        my $sig = eval {
            $tag eq $P->TAG_FGND
                ? Prefork::Interp::Protocol::decode_fgnd_body($body)
                : Prefork::Interp::Protocol::decode_u32_body($tag, $body);
        };
        if (!defined $sig) {
            # A malformed body is skipped: the client's mistake need not
            # end the call (protocol.md 6.2).
            my $e = $@;
            chomp $e;
            $log->msg('warning', "bad frame from caller, skipped: $e");
            next;
        }
        $self->_deliver($c, $tag, $sig);
    }
}

# _deliver(C, TAG, VALUE): a signal to the executor (SIGP) or its
# group (SIGG), or FGND's value to a pty call's leader (protocol.md 9.3
# step 5), in the order they came (_pump).  FGND is ignored for a call
# without a pty, or once its leader has gone.
sub _deliver {
    my ($self, $c, $tag, $value) = @_;
    my $held = $c->{held};
    if ($tag eq $P->TAG_FGND) {
        if (!$c->{pty1} || !$c->{ctl}) {
            $self->{log}->msg('debug', "'$tag' frame for a call without a"
                              . ' pty, or whose leader has gone; ignored');
            return;
        }
        # FGNDs one after the other come to the last one's.
        if (@$held && $held->[-1][0] eq $tag) {
            $held->[-1][1] = $value;
            return;
        }
    }
    push @$held, [ $tag, $value ];
    $self->_pump($c);
}

# _pump(C): carries out what C holds, in order: a signal once the
# executor is known, FGND at once, passed to the leader; while the
# leader has not answered that it has carried it out (REPORT_FGND),
# what comes after waits, so that the pty mirrors the caller's
# foreground before a SIGCONT sent after FGND 1 continues the script.
sub _pump {
    my ($self, $c) = @_;
    my $held = $c->{held};
    while (@$held && !$c->{fgnd_busy}) {
        my ($tag, $value) = @{ $held->[0] };
        if ($tag eq $P->TAG_FGND) {
            shift @$held;
            $c->{fgnd_busy} = $self->_pass_fgnd($c, $value);
            next;
        }
        last unless defined $c->{exe};
        shift @$held;
        my $err = Prefork::Interp::Signals::deliver($tag, $value, $c->{exe});
        $self->{log}->msg('warning', "caller sent a bad '$tag' frame: $err;"
                          . ' ignored') if defined $err;
    }
}

# _pass_fgnd(C, VALUE): FGND's value to the leader over its control
# socket (one record at a time: a few bytes, which fit).  True if sent;
# false if the leader has gone (quietly) or the write failed (logged).
sub _pass_fgnd {
    my ($self, $c, $value) = @_;
    return 0 unless $c->{ctl};
    my $bytes = pack 'NN', ORDER_FGND, $value;
    for (;;) {
        my $r = send($c->{ctl}, $bytes, MSG_NOSIGNAL);
        return 1 if defined $r && $r == length $bytes;
        next if !defined $r && $! == EINTR;
        return 0 if !defined $r && ($! == EPIPE || $! == ECONNRESET);
        $self->{log}->msg('warning', "cannot pass 'FGND' to the call's"
                          . ' session leader: '
                          . (defined $r ? "wrote $r of " . length($bytes)
                                          . ' bytes' : "$!"));
        return 0;
    }
}

# 4.12 to 4.14: the caller has gone (WHY; undef: it broke the protocol,
# which has been logged): SIGINT, then SIGCONT, to the call's group,
# and we stop reading it.  The executor's end is reaped as any other.
# With call1 the connection is closed at once (no EXIT frame); a v1
# caller still gets the status written, in case it reads it.
sub _hang_up {
    my ($self, $c, $why) = @_;
    $self->{log}->msg('info', "caller $why; stopping the call")
        if defined $why && $c->{call1};
    if (defined $c->{exe}) {
        Prefork::Interp::Signals::hang_up($c->{exe});
    } else {
        $c->{held_hang} = 1;
    }
    $c->{listening} = 0;
    $c->{inbuf} = '';
    close(delete $c->{fh}) if $c->{call1};
}

# reap(): learns, without waiting, which executors have stopped or
# ended: a STOP frame for a stop (call1), the EXIT frame or the wait
# status for an end (4.15).  And forgets spares that have ended.
sub reap {
    my ($self) = @_;
    if (defined $self->{sigfd}) {
        # Drain: each read takes the pending SIGCHLD (128 bytes).
        my $buf;
        1 while defined POSIX::read($self->{sigfd}, $buf, 128 * 8)
            && length $buf;
    }
    for (;;) {
        my $pid = waitpid(-1, WNOHANG | WUNTRACED);
        if ($pid < 0) {
            next if $! == EINTR;
            return;    # ECHILD: no child at all
        }
        return if $pid == 0;
        # perl's $? is 0 for a stopped child; the raw status is in
        # ${^CHILD_ERROR_NATIVE}.
        $self->_child_changed($pid, $?, ${^CHILD_ERROR_NATIVE});
    }
}

# wait_all(): the server is exiting: waits for every child (the calls
# in progress reported as they end; not their stops).
sub wait_all {
    my ($self) = @_;
    for (;;) {
        my $pid = waitpid(-1, 0);
        if ($pid < 0) {
            next if $! == EINTR;
            last;
        }
        $self->_child_changed($pid, $?, ${^CHILD_ERROR_NATIVE});
    }
    # Nothing left to wait for, whatever we thought.
    foreach my $c (values %{ $self->{running} }) {
        close $c->{fh} if $c->{fh};
        close $c->{ctl} if $c->{ctl};
    }
    $self->{running} = {};
    $self->{leaving} = {};
}

sub _child_changed {
    my ($self, $pid, $status, $native) = @_;
    my $log = $self->{log};
    if (my $c = $self->{running}{$pid}) {
        if (WIFSTOPPED($native)) {
            # With pty1 the executor's stops are the leader's reports.
            $self->_stopped($c, WSTOPSIG($native)) unless $c->{pty1};
            return;
        }
        delete $self->{running}{$pid};
        if ($c->{pty1}) {
            # The leader's reports first; the status is the executor's
            # it reported, or the leader's own if it reported none.
            $self->_read_reports($c);
            close(delete $c->{ctl}) if $c->{ctl};
            $status = $c->{reported} if defined $c->{reported};
        }
        # 4.15: EPIPE or ECONNRESET here just mean the caller has gone.
        $self->_tell($c, $c->{call1}
                         ? Prefork::Interp::Protocol::encode_u32_frame(
                               $P->TAG_EXIT, $status)
                         : Prefork::Interp::Protocol::encode_status($status))
            if $c->{fh};
        close(delete $c->{fh}) if $c->{fh};
        return;
    }
    return if WIFSTOPPED($native);
    return if delete $self->{leaving}{$pid};
    if ($self->{forker} && $pid == $self->{forker}->pid) {
        $self->_forker_gone(describe_status($status), 1);
        return;
    }
    my @left = grep { $_->{pid} != $pid } @{ $self->{spares} };
    if (@left < @{ $self->{spares} }) {
        my ($spare) = grep { $_->{pid} == $pid } @{ $self->{spares} };
        close $spare->{ctl};
        $self->{spares} = \@left;
        $log->msg('warning', "spare executor [$pid] ended before it had a"
                  . ' call: ' . describe_status($status)
                  . '; no more spares until the next call');
        $self->{fill_failed} = 1;
        return;
    }
    $log->msg('debug', "reaped [$pid], which was none of our executors");
}

# _stopped(C, SIGNAL): protocol.md 6.5: the client stops itself the
# same way.  A v1 client is not told.
sub _stopped {
    my ($self, $c, $sig) = @_;
    return unless $c->{call1} && $c->{fh};
    $self->_tell($c, Prefork::Interp::Protocol::encode_u32_frame(
                         $P->TAG_STOP, $sig))
        or $self->_hang_up($c, 'hung up');
}

# _tell(C, BYTES): writes BYTES (a frame, a status: a few bytes, which
# fit in the socket's buffer unless the client reads nothing) on the
# call's socket, which does not block.  False if the client has gone
# (quietly) or the write failed (logged).
sub _tell {
    my ($self, $c, $bytes) = @_;
    for (;;) {
        my $r = syswrite($c->{fh}, $bytes);
        return 1 if defined $r && $r == length $bytes;
        next if !defined $r && $! == EINTR;
        return 0 if !defined $r && ($! == EPIPE || $! == ECONNRESET);
        $self->{log}->msg('warning', 'cannot write to the caller: '
                          . (defined $r ? "wrote $r of " . length($bytes)
                                          . ' bytes' : "$!"));
        return 0;
    }
}

# close_spares(): the server is quitting: its spares see EOF and exit,
# and no more are forked.
sub close_spares {
    my ($self) = @_;
    if ($self->{forker}) {
        # The spares it has sent already are told to go like the rest.
        $self->_forker_readable;
    }
    $self->_drop_forker if $self->{forker};
    foreach my $spare (@{ $self->{spares} }) {
        close $spare->{ctl};
        $self->{leaving}{ $spare->{pid} } = 1;
    }
    $self->{spares} = [];
    $self->{pool_size} = 0;
}

#---------- helpers ----------

# Blocks SIGCHLD and returns a non-blocking signalfd for it, or undef
# (SIGCHLD then unblocked again).  Closed in every executor.
sub _signalfd_chld () {
    my $nr = Prefork::Interp::Syscall::number('signalfd4');
    return undef unless defined $nr && length(pack 'j', 0) == 8;
    my $sigchld = POSIX::SIGCHLD();
    my $old = Prefork::Interp::Syscall::block_signals($sigchld);
    # The kernel's sigset_t: one bit per signal, bit 0 for signal 1.
    my $set = pack 'Q', 1 << ($sigchld - 1);
    # SFD_NONBLOCK is O_NONBLOCK.
    my $fd = syscall($nr, -1, $set, length($set), POSIX::O_NONBLOCK() + 0);
    if ($fd < 0) {
        Prefork::Interp::Syscall::restore_signals($old);
        return undef;
    }
    return $fd;
}

# describe_status(WAIT_STATUS) - for messages.
sub describe_status ($) {
    my ($st) = @_;
    return "exit status " . WEXITSTATUS($st) if WIFEXITED($st);
    if (WIFSIGNALED($st)) {
        my $sig = WTERMSIG($st);
        my $name = Prefork::Interp::Signals::name_of($sig);
        return "killed by SIG" . ($name // $sig)
            . (($st & 0x80) ? ' (core dumped)' : '');
    }
    return sprintf 'wait status 0x%x', $st;
}

1;

__END__

=head1 NAME

Prefork::Interp::Executors - spare executors, and the server's watch
over the calls in progress (internal)

=head1 DESCRIPTION

Internal to L<Prefork::Interp>: the server keeps C<pool_size> spare
executors forked ahead of calls, hands each complete call to one over
a control socket, and does the monitor's part of each call itself
(signals forwarded, hang-ups, stops and the exit status reported).
See the comments in the source.

=cut
