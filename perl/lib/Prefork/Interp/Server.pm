# Prefork::Interp::Server - the processes behind
# prefork_initialisation_complete: server, monitors, executors.
#
# Process tree (&& session leader, & process group leader):
#
#   client (prefork-interp)
#     `- setup: the script, run by the client with PREFORK_INTERP set;
#        it calls serve(), which forks and exits
#   server &&            serve(): own session, stdio /dev/null,
#     |                  fds: LISTEN, WATCHI, WATCHE (and the script's)
#     `- monitor &       one per call: _monitor(); fds: CALL
#          `- executor   the script again, returning from serve() with
#                        the caller's stdio, environment and arguments
#
# The steps follow the upstream design comment, parts 3 ("Library
# should do the following") and 4 ("service (monitor) child"); the
# comments below cite them as "3.5", "4.11" and so on.  Where we differ
# from it or from 7.0.0's Perl library, the comment says so and why.
#
# Every process this file forks, other than the executor, ends in
# POSIX::_exit: it must never run the script's END blocks or
# destructors, and it must never fall back into the script's code.
#
# Copyright the prefork-interp contributors; see the project's
# top-level files for the licence.

package Prefork::Interp::Server;

use strict;
use warnings;

use Config ();
use Errno qw(EINTR EAGAIN EWOULDBLOCK ECONNABORTED ECHILD ENOENT);
use Fcntl qw(F_GETFL F_SETFL O_NONBLOCK);
use POSIX qw(WNOHANG WIFSIGNALED WTERMSIG WIFEXITED WEXITSTATUS SIGPIPE);
use Time::HiRes ();

use Prefork::Interp::Protocol;

our $VERSION = '1.0.0';

# While we wait for a monitor's executor without a pidfd (see
# _await_executor), SIGCHLD wakes us; this bounds the delay in the one
# case it cannot: the executor dying just before we start to wait.
use constant NO_PIDFD_POLL => 0.05;

# After an accept or fork failure, pause this long before trying again,
# so that a persistent error (say EMFILE) does not spin the CPU.
use constant ERROR_PAUSE => 0.05;

# Linux's pidfd_open(2) number; it is the same on every architecture
# except alpha and ia64, which we do not try it on.
use constant SYS_pidfd_open => 434;

#---------- entry point ----------

# serve(CFG) - called in the setup process, at the script's
# initialisation-complete point.  Daemonises and becomes the server.
# Returns only in an executor, once per call, with the request (see
# Prefork::Interp::Protocol::read_request).
#
# CFG: fds (from parse_env_value), max_servers, idle_timeout,
# max_errors, reload_files, request_timeout, use_pidfd, log
# (a Prefork::Interp::Log), title (for ps).
sub serve ($) {
    my ($cfg) = @_;
    my $log = $cfg->{log};

    # Dispositions and hooks for the server and the monitors.  They are
    # local, so the executor gets back whatever the script had set when
    # serve() returns into it.
    local $SIG{CHLD} = 'DEFAULT';    # SIG_IGN would hide our children
    local $SIG{PIPE} = 'IGNORE';     # a vanished caller is EPIPE, quietly
    local $SIG{__DIE__};             # the script's hooks must not run
    local $SIG{__WARN__};            #   in the server or in monitors
    local $0 = $0;                   # we retitle server and monitors

    my $fds = $cfg->{fds};
    my %fh;
    open($fh{listen}, '+<&=', $fds->{listen})
        or die "cannot use LISTEN fd $fds->{listen}: $!\n";
    open($fh{call}, '+<&=', $fds->{call})
        or die "cannot use CALL fd $fds->{call}: $!\n";
    open($fh{watche}, '<&=', $fds->{watche})
        or die "cannot use WATCHE fd $fds->{watche}: $!\n";
    # WATCHI is only held (its closing tells the watcher we are gone),
    # so it stays a bare descriptor.
    $fh{watchi} = $fds->{watchi};
    _set_nonblocking($fh{listen}, 'LISTEN');
    _set_nonblocking($fh{watche}, 'WATCHE');

    # 3.3: fork and let the parent exit, so the client, which waits for
    # its setup process, can carry on.  (fork flushes perl's output
    # buffers first, so output from initialisation appears once.)
    my $pid = fork;
    defined $pid or die "cannot fork the server: $!\n";
    POSIX::_exit(0) if $pid;

    # From here on we are the server and must never return into the
    # script except as an executor.
    my $request = eval {
        # 3.4
        POSIX::setsid() or die "setsid: $!\n";
        $0 = "$cfg->{title} [prefork server]";

        # 3.5: the monitor for the call that started us.
        $pid = fork;
        defined $pid or die "cannot fork the initial monitor: $!\n";
        if (!$pid) {
            return _monitor($cfg, $fh{call}, 1, \%fh);
        }
        close $fh{call};
        delete $fh{call};
        my %children = ($pid => 1);

        # 3.6: from now on nobody reads our stderr.
        _stdio_to_null();
        $log->to_stderr(0);

        return _server_loop($cfg, \%fh, \%children);
    };
    return $request if $request;
    # Only reached if something died in the server itself.
    $log->msg('err', "server failed: $@");
    POSIX::_exit(127);
}

#---------- server ----------

# 3.7: the select loop.  Returns only in an executor.
sub _server_loop ($$$) {
    my ($cfg, $fh, $children) = @_;
    my $log = $cfg->{log};
    my $max = $cfg->{max_servers};
    $max = 1 if $max == 0;    # as 7.0.0 behaves: one call at a time
    my $errors = 0;           # consecutive, reset by a successful call
    my $last_call = Time::HiRes::time();

    # A monitor finishing interrupts select (EINTR), so we reap it at
    # once rather than at the next call.  (If it finishes just before
    # select, it is reaped at the next wake-up: no harm done.)
    local $SIG{CHLD} = sub { };

    for (;;) {
        # 3.7.A.ii, done before waiting: reap what we can, and while we
        # are at the concurrency limit wait for a monitor to finish.
        _reap($children, $log, 0);
        _reap($children, $log, 1)
            while $max > 0 && keys(%$children) >= $max;

        my $timeout;
        if ($cfg->{idle_timeout} >= 0) {
            $timeout = $last_call + $cfg->{idle_timeout}
                - Time::HiRes::time();
            _quit($cfg, $fh, $children, 0, 'info',
                  "no calls for $cfg->{idle_timeout} seconds, quitting")
                if $timeout <= 0;
        }

        my $rbits = '';
        vec($rbits, fileno($fh->{listen}), 1) = 1;
        vec($rbits, fileno($fh->{watche}), 1) = 1;
        my $n = select($rbits, undef, undef, $timeout);
        if ($n < 0) {
            next if $! == EINTR;
            _quit($cfg, $fh, $children, 1, 'err', "select: $!");
        }
        next if $n == 0;    # the idle deadline is checked above

        # 3.7.B: the watcher says the socket is gone or replaced (EOF),
        # or reports an error (data).
        if (vec($rbits, fileno($fh->{watche}), 1)) {
            my $buf = '';
            my $r = sysread($fh->{watche}, $buf, 4096);
            if (defined $r && $r > 0) {
                _quit($cfg, $fh, $children, 1, 'err',
                      "watcher reported: $buf");
            } elsif (defined $r) {
                _quit($cfg, $fh, $children, 0, 'info',
                      'socket removed or replaced'
                      . ' (fresh server or --kill), quitting');
            } elsif (!($! == EINTR || $! == EAGAIN || $! == EWOULDBLOCK)) {
                _quit($cfg, $fh, $children, 1, 'err',
                      "read from watcher: $!");
            }
        }

        next unless vec($rbits, fileno($fh->{listen}), 1);

        # 3.7.A.i: reload if the program changed since we started.  We
        # quit without accepting; the client that is waiting sees its
        # connection reset and starts a fresh server.
        if (defined(my $why = _stale_file($cfg))) {
            _quit($cfg, $fh, $children, 0, 'info', "reloading: $why");
        }

        # 3.7.A.iii
        my $call;
        if (!accept($call, $fh->{listen})) {
            # Nothing to accept after all, or the caller gave up.
            next if $! == EINTR || $! == EAGAIN || $! == EWOULDBLOCK
                 || $! == ECONNABORTED;
            $errors = _count_error($cfg, $fh, $children, $errors,
                                   "accept: $!");
            next;
        }
        my $pid = fork;
        if (!defined $pid) {
            my $e = "cannot fork a monitor: $!";
            close $call;
            $errors = _count_error($cfg, $fh, $children, $errors, $e);
            next;
        }
        if (!$pid) {
            return _monitor($cfg, $call, 0, $fh);
        }
        close $call;
        $children->{$pid} = 1;
        $errors = 0;
        $last_call = Time::HiRes::time();
    }
}

# Counts one server loop error (7.0.0 never counted them, so a
# persistent accept failure made it spin forever).  Returns the new
# count, or quits once there have been more than max_errors in a row.
sub _count_error ($$$$$) {
    my ($cfg, $fh, $children, $errors, $what) = @_;
    $errors++;
    my $limit = $cfg->{max_errors};
    if ($limit >= 0 && $errors > $limit) {
        _quit($cfg, $fh, $children, 1, 'err',
              "$what; $errors errors in a row (max_errors is $limit),"
              . ' quitting');
    }
    $cfg->{log}->msg('warning', $what);
    Time::HiRes::sleep(ERROR_PAUSE);
    return $errors;
}

# Reaps finished monitors.  If BLOCK, waits for at least one.
# Reports failures, except death by SIGPIPE (upstream 3.7.A.ii).
sub _reap ($$$) {
    my ($children, $log, $block) = @_;
    for (;;) {
        my $pid = waitpid(-1, $block ? 0 : WNOHANG);
        if ($pid < 0) {
            next if $! == EINTR;
            # ECHILD: nothing left to wait for, whatever we thought.
            %$children = () if $! == ECHILD;
            return;
        }
        return if $pid == 0;
        my $status = $?;
        delete $children->{$pid};
        if ($status != 0
            && !(WIFSIGNALED($status) && WTERMSIG($status) == SIGPIPE)) {
            $log->msg('warning', "monitor [$pid] failed: "
                      . describe_status($status));
        }
        $block = 0;
    }
}

# Returns a description of the first file to have been modified since
# the server started, or undef if there is none.  Files that do not
# exist are not a reason to reload (as documented by 7.0.0); files we
# cannot check are, so that the next call finds out from scratch.
sub _stale_file ($) {
    my ($cfg) = @_;
    my $since = $cfg->{fds}{mtime};
    foreach my $file (@{ $cfg->{reload_files} }) {
        my @st = Time::HiRes::stat($file);
        if (!@st) {
            next if $! == ENOENT;
            return "cannot check $file: $!";
        }
        return "$file changed" if $st[9] > $since;
    }
    return undef;
}

# Stops serving: logs why, closes the listening socket and the watcher
# fds (so new callers start a fresh server at once and the watcher
# exits), waits for the calls in progress, and exits.  Waiting means
# our monitors never become orphans, which matters where init does not
# reap.
sub _quit ($$$$$$) {
    my ($cfg, $fh, $children, $code, $level, $why) = @_;
    $cfg->{log}->msg($level, $why);
    close $fh->{listen};
    close $fh->{watche};
    POSIX::close($fh->{watchi});
    _reap($children, $cfg->{log}, 1) while %$children;
    POSIX::_exit($code);
}

#---------- monitor ----------

# Part 4: one call, in a fresh process.  INITIAL is true for the call
# that started the server.  Returns only in the executor, with the
# request; in the monitor itself it always ends in _exit.
sub _monitor ($$$$) {
    my ($cfg, $call, $initial, $server_fh) = @_;
    my $log = $cfg->{log};
    my $request = eval { _monitor_body($cfg, $call, $initial, $server_fh) };
    return $request if $request;    # we are the executor
    my $e = $@;
    if (Prefork::Interp::Protocol::is_gone($e)) {
        # Upstream part 4: a caller that goes away is not an error.
        $log->msg('info', 'caller ' . $e->why);
        POSIX::_exit(0);
    }
    $log->msg('err', $e);
    POSIX::_exit(127);
}

sub _monitor_body ($$$$) {
    my ($cfg, $call, $initial, $server_fh) = @_;
    my $log = $cfg->{log};

    # 4.1: drop the server's descriptors.
    close $server_fh->{listen};
    close $server_fh->{watche};
    POSIX::close($server_fh->{watchi});

    # 4.2: a process group of our own, which the executor joins and
    # which we signal if the caller goes away.
    POSIX::setpgid(0, 0) or die "setpgid: $!\n";
    $0 = "$cfg->{title} [prefork monitor]";

    # 4.3 to 4.7.  The whole request must arrive soon after the
    # greeting.  (7.0.0 waits for ever, so a few idle connections hold
    # every max_servers slot and block all real callers.)
    Prefork::Interp::Protocol::send_greeting($call);
    my $deadline = Time::HiRes::time() + $cfg->{request_timeout};
    my $request = eval {
        Prefork::Interp::Protocol::read_request($call, $deadline);
    };
    if (!$request) {
        my $e = $@;
        die $e if Prefork::Interp::Protocol::is_gone($e);
        # A client that does not speak the protocol is not our failure.
        chomp $e;
        $log->msg('warning', "bad request from caller: $e");
        POSIX::_exit(0);
    }
    my @caller_fds = @{ $request->{fds} };

    # 4.9: fork the executor.  (No EXECTERM pipe, unlike upstream 4.8:
    # see _await_executor.)
    my $pid = fork;
    if (!defined $pid) {
        my $e = "cannot fork to run the script: $!";
        _tell_caller($caller_fds[2], $cfg->{title}, $e);
        $log->msg('err', $e);
        Prefork::Interp::Protocol::write_status($call, 127 << 8);
        POSIX::_exit(0);
    }
    if (!$pid) {
        # Executor: the caller's descriptors are installed by the
        # library once serve() has returned (4.9.i to 4.9.v).
        close $call;
        return $request;
    }

    # 4.10
    POSIX::close($_) foreach @caller_fds;
    $0 = "$cfg->{title} [prefork monitor $pid]" unless $initial;

    my $status = _await_executor($cfg, $call, $pid);

    # 4.15: EPIPE or ECONNRESET here just mean the caller has gone.
    eval { Prefork::Interp::Protocol::write_status($call, $status); 1 }
        or do {
            die $@ unless Prefork::Interp::Protocol::is_gone($@);
        };
    # 4.16
    POSIX::_exit(0);
}

# 4.11 to 4.14: waits until the executor has exited or the caller has
# gone, and returns the executor's raw wait status.
#
# We learn of the executor's death from the kernel only: a pidfd where
# Linux has one, otherwise waitpid woken by SIGCHLD.  Upstream uses an
# EXECTERM pipe whose write end the executor holds; but perl closes
# that pipe during global destruction, before the process has exited,
# and exec closes it too (close-on-exec), so 7.0.0 signals a live
# executor and reports "killed by SIGINT" for most "exit 0" calls.
#
# Unlike upstream 4.12/4.13, a normal exit does not SIGINT the process
# group: background processes the script leaves behind survive it, as
# they would if the script had been run directly.
sub _await_executor ($$$) {
    my ($cfg, $call, $pid) = @_;
    my $pidfd = $cfg->{use_pidfd} ? _pidfd_open($pid) : undef;

    # Without a pidfd, a SIGCHLD handler makes select return EINTR
    # when the executor dies.
    local $SIG{CHLD} = defined $pidfd ? $SIG{CHLD} : sub { };

    for (;;) {
        if (!defined $pidfd) {
            my $got = waitpid($pid, WNOHANG);
            return $? if $got == $pid;
        }
        my $rbits = '';
        vec($rbits, fileno($call), 1) = 1;
        vec($rbits, $pidfd, 1) = 1 if defined $pidfd;
        my $n = select($rbits, undef, undef,
                       defined $pidfd ? undef : NO_PIDFD_POLL);
        if ($n < 0) {
            next if $! == EINTR;
            die "select on call socket: $!\n";
        }
        next if $n == 0;
        if (defined $pidfd && vec($rbits, $pidfd, 1)) {
            POSIX::close($pidfd);
            return _wait_for($pid);
        }
        # CALL is readable.  A v1 client sends nothing after its
        # request, so this is a hang-up (EOF, reset) or a protocol
        # violation, which we treat the same way.  A protocol extension
        # that lets the client send messages mid-call (SPEC section 7)
        # would read and dispatch them here.
        my $buf;
        my $r = sysread($call, $buf, 4096);
        next if !defined $r && ($! == EINTR || $! == EAGAIN);
        if (defined $r && $r > 0) {
            $cfg->{log}->msg('warning', 'caller sent data after its'
                             . ' request; treating that as a hang-up');
        }
        last;
    }

    # The caller has gone: 4.12 to 4.14.  The executor may have left the
    # group, so it is signalled by pid too.
    $SIG{INT} = 'IGNORE';
    kill 'INT', -getpgrp(), $pid;
    POSIX::close($pidfd) if defined $pidfd;
    return _wait_for($pid);
}

# waitpid, blocking, for a child that must exist; returns its status.
sub _wait_for ($) {
    my ($pid) = @_;
    for (;;) {
        my $got = waitpid($pid, 0);
        return $? if $got == $pid;
        next if $got < 0 && $! == EINTR;
        die "wait for executor [$pid]: "
            . ($got < 0 ? "$!" : "got [$got]") . "\n";
    }
}

# Returns a pidfd for PID, or undef where that is not available (old
# kernel, seccomp, not Linux); callers then fall back to SIGCHLD.
sub _pidfd_open ($) {
    my ($pid) = @_;
    return undef unless $^O eq 'linux'
        && $Config::Config{archname} !~ m/\A(?:alpha|ia64)/;
    # "+ 0": syscall passes strings as pointers, numbers as integers.
    my $fd = syscall(SYS_pidfd_open, $pid + 0, 0);
    return $fd >= 0 ? $fd : undef;
}

# Writes one line to the caller's stderr (a raw fd), for errors the
# caller ought to see.
sub _tell_caller ($$$) {
    my ($fd, $title, $msg) = @_;
    my $line = "$title: prefork: $msg\n";
    POSIX::write($fd, $line, length $line);
}

#---------- helpers ----------

sub _set_nonblocking ($$) {
    my ($fh, $what) = @_;
    my $flags = fcntl($fh, F_GETFL, 0)
        or die "fcntl F_GETFL on $what: $!\n";
    fcntl($fh, F_SETFL, $flags | O_NONBLOCK)
        or die "fcntl F_SETFL on $what: $!\n";
}

# 3.6: stdin, stdout and stderr to /dev/null.  Reopening the perl
# handles (rather than dup2 underneath them) keeps them on fds 0, 1
# and 2 and keeps any I/O layers the script pushed on them.
sub _stdio_to_null () {
    open(STDIN, '<', '/dev/null') or die "reopen stdin: $!\n";
    open(STDOUT, '>', '/dev/null') or die "reopen stdout: $!\n";
    open(STDERR, '>', '/dev/null') or die "reopen stderr: $!\n";
}

# describe_status(WAIT_STATUS) - for messages.
sub describe_status ($) {
    my ($st) = @_;
    return "exit status " . WEXITSTATUS($st) if WIFEXITED($st);
    if (WIFSIGNALED($st)) {
        my $sig = WTERMSIG($st);
        my $name = (split ' ', $Config::Config{sig_name})[$sig];
        return "killed by SIG" . ($name // $sig)
            . (($st & 0x80) ? ' (core dumped)' : '');
    }
    return sprintf 'wait status 0x%x', $st;
}

1;

__END__

=head1 NAME

Prefork::Interp::Server - server, monitor and executor processes (internal)

=head1 DESCRIPTION

Internal to L<Prefork::Interp>: daemonising at the
initialisation-complete point, the server's accept loop, and the
per-call monitor.  See the comments in the source for the process
tree and the steps of the upstream design it follows.

=cut
