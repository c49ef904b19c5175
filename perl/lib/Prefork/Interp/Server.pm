# Prefork::Interp::Server - the processes behind
# prefork_initialisation_complete: server, monitors, executors.
#
# Process tree (&& session leader, & process group leader):
#
#   client (prefork-interp)
#     `- setup: the script, run by the client with PREFORK_INTERP set;
#        it forks (Prefork::Interp::Setup) and exits, or with
#        extension inplace1 runs the first call itself
#   server &&            serve(): own session, stdio /dev/null,
#     |                  fds: LISTEN, WATCHI, WATCHE (and the script's),
#     |                  the connections it holds (Prefork::Interp::
#     |                  Intake), a pidfd per monitor
#     `- monitor &       one per complete call: _monitor(); fds: CALL
#          `- executor & the script again, returning from serve() with
#                        the caller's stdio, environment and arguments
#                        (and with extension call1, its other fds and
#                        attributes); leader of the call's group; dies
#                        with its monitor
#
# This file is loaded by the server, once forked: the setup process does
# without it.
#
# The server takes calls in itself (protocol.md 4.1): it greets each
# connection at once and reads every handshake from its one select
# loop, without blocking; a monitor is forked only for a complete call,
# when one of the max_servers slots is free.
#
# Quitting (reload, idle timeout, the watcher, a failure to read from
# it) stops the accepting at once but not the serving: every
# connection the server holds has been greeted, so its caller could not
# tell being dropped from a server dying in the middle of its call, and
# would fail instead of starting a fresh server.  So the loop runs on
# without LISTEN and the watcher's pipes until it holds nothing, then
# waits for its monitors and exits (protocol.md 4.1, end).  Only too
# many errors in a row, or select failing, drop everything at once.
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
use Errno qw(EINTR EAGAIN EWOULDBLOCK ECHILD);
use Fcntl qw(F_GETFL F_SETFL O_NONBLOCK);
use POSIX qw(WNOHANG WIFSIGNALED WTERMSIG WIFEXITED WEXITSTATUS SIGPIPE
             SIGKILL);
use Time::HiRes ();

use Prefork::Interp::Intake;
use Prefork::Interp::Protocol;
use Prefork::Interp::Reload;
use Prefork::Interp::Signals;
use Prefork::Interp::Syscall ();

our $VERSION = '1.0.0';

# After an accept or fork failure, pause this long before trying again,
# so that a persistent error (say EMFILE) does not spin the CPU.
use constant ERROR_PAUSE => 0.05;

# Connections accepted per pass of the loop at most, so that handshakes
# and finished monitors are seen to between bursts.
use constant ACCEPTS_PER_PASS => 16;

# Without pidfds, the server learns that a monitor has finished from
# SIGCHLD, which select can miss (it may come just before select
# starts); while complete calls wait for a slot it looks this often.
use constant POLL => 0.05;

#---------- entry point ----------

# serve(CFG, FH) - in the server, just forked by the setup process
# (Prefork::Interp::Setup::start, which has set the server's signal
# dispositions).  Daemonises and becomes the server.  Returns only in
# an executor, once per call, with the call (see _monitor_body).
#
# CFG: fds (from parse_env_value), max_servers, idle_timeout,
# max_errors, before (the identities of the files the server depends
# on, as the setup process recorded them), reload_files (a code ref
# that, given before, lists those files and their identities before by
# the same names; called once this file and what it uses are loaded,
# which are then among them), request_timeout, use_pidfd, use_inotify,
# log (a Prefork::Interp::Log), title (for ps).  FH: the handles
# listen, watche and (unless the setup process runs the first call
# itself) call, and the bare fd watchi.
sub serve ($$) {
    my ($cfg, $fh) = @_;
    my $log = $cfg->{log};

    # Look up the system calls the server, monitors and executors use
    # now, once: where syscall.ph has to be loaded, that takes a while,
    # and they are forked from us.
    Prefork::Interp::Syscall::number($_)
        foreach qw(pidfd_open signalfd4 prlimit64 prctl recvmsg
                   inotify_init1 inotify_add_watch);

    # From here on we are the server and must never return into the
    # script except as an executor.
    my $request = eval {
        # 3.4
        POSIX::setsid() or die "setsid: $!\n";
        $0 = "$cfg->{title} [prefork server]";

        # 3.6: from now on nobody reads our stderr.
        _stdio_to_null();
        $log->to_stderr(0);
        $log->msg('warning', 'this system has no prctl we know of: a call'
                  . ' whose monitor is killed will not be stopped')
            unless defined Prefork::Interp::Syscall::number('prctl');

        # What the program is made of, as it is now (and watches on it):
        # 3.7.A.i compares against this.
        my ($files, $before) = $cfg->{reload_files}->($cfg->{before});
        my $reload = Prefork::Interp::Reload->new(
            files => $files, before => $before,
            since => $cfg->{fds}{mtime}, inotify => $cfg->{use_inotify},
            log => $log);
        my ($nfiles, $ndirs, $npolled) = $reload->counts;
        $log->msg('debug', "watching $nfiles files through $ndirs"
                  . " directories; $npolled checked on every call");

        # 3.5, as protocol.md 4.1 has it: the call that started us is
        # taken in as if it had just been accepted (unless the setup
        # process runs it itself, protocol.md 7).
        my $intake = Prefork::Interp::Intake->new(
            listen => $fh->{listen}, log => $log,
            timeout => $cfg->{request_timeout});
        $intake->take_in(delete $fh->{call}, Time::HiRes::time(), 1)
            if $fh->{call};

        return _server_loop({ cfg => $cfg, fh => $fh, intake => $intake,
                              reload => $reload, children => {} });
    };
    return $request if $request;
    # Only reached if something died in the server itself.
    $log->msg('err', "server failed: $@");
    POSIX::_exit(127);
}

#---------- server ----------

# 3.7: the select loop.  SRV holds the server's state: cfg, fh (listen,
# watche, watchi; gone once closed), intake, children (monitor pid =>
# its pidfd or undef), and once _quit has been called, quitting (the
# status to exit with).  Returns only in an executor.
sub _server_loop ($) {
    my ($srv) = @_;
    my ($cfg, $fh, $intake, $children) = @$srv{qw(cfg fh intake children)};
    my $log = $cfg->{log};
    my $max = $cfg->{max_servers};
    $max = 1 if $max == 0;    # as 7.0.0 behaves: one call at a time
    my $errors = 0;           # consecutive, reset by a successful call
    my $last_call = Time::HiRes::time();

    # A monitor finishing interrupts select (EINTR), so we reap it at
    # once even without a pidfd for it.
    local $SIG{CHLD} = sub { };

    for (;;) {
        # 3.7.A.ii: reap finished monitors, then fork one for each
        # complete call, oldest first, while a slot is free.
        _reap($children, $log, 0);
        while ($intake->ready && ($max < 0 || keys(%$children) < $max)) {
            my $hs = $intake->take_ready;
            my $pid = fork;
            if (!defined $pid) {
                my $e = "cannot fork a monitor: $!";
                $hs->close;
                $errors = _count_error($srv, $errors, $e);
                next;
            }
            if (!$pid) {
                # 4.1: the monitor holds this call's fds and nothing
                # else of the server's.
                _close_server_fds($srv);
                return _monitor($cfg, $hs->call);
            }
            $hs->close;
            $children->{$pid} = $cfg->{use_pidfd}
                ? Prefork::Interp::Signals::pidfd_open($pid) : undef;
            $errors = 0;
            $last_call = Time::HiRes::time();
        }

        my $now = Time::HiRes::time();
        $intake->expire($now);
        my $quitting = defined $srv->{quitting};

        # Quitting, and every connection we held has been served or
        # dropped: wait for the calls in progress, and go.
        _exit_when_done($srv) if $quitting && !$intake->held;

        # Idle: no call for idle_timeout, and no connection held.
        my $timeout;
        if (!$quitting && $cfg->{idle_timeout} >= 0 && !$intake->held) {
            $timeout = $last_call + $cfg->{idle_timeout} - $now;
            if ($timeout <= 0) {
                _quit($srv, 0, 'info',
                      "no calls for $cfg->{idle_timeout} seconds, quitting");
                next;
            }
        }
        if (defined(my $deadline = $intake->next_deadline)) {
            my $left = $deadline - $now;
            $left = 0 if $left < 0;
            $timeout = $left if !defined $timeout || $left < $timeout;
        }
        if ($intake->ready && grep { !defined } values %$children) {
            $timeout = POLL if !defined $timeout || $timeout > POLL;
        }

        my $rbits = '';
        if (!$quitting) {
            vec($rbits, fileno($fh->{watche}), 1) = 1;
            vec($rbits, fileno($fh->{listen}), 1) = 1 if $intake->accepting;
        }
        $intake->watch(\$rbits);
        vec($rbits, $_, 1) = 1 foreach grep { defined } values %$children;
        my $n = select($rbits, undef, undef, $timeout);
        if ($n < 0) {
            next if $! == EINTR;
            _abort($srv, 'err', "select: $!");
        }
        next if $n == 0;    # deadlines are checked above

        # 3.7.B: the watcher says the socket is gone or replaced (EOF),
        # or reports an error (data).
        if (!$quitting && vec($rbits, fileno($fh->{watche}), 1)) {
            my $buf = '';
            my $r = sysread($fh->{watche}, $buf, 4096);
            if (defined $r && $r > 0) {
                _quit($srv, 1, 'err', "watcher reported: $buf");
            } elsif (defined $r) {
                _quit($srv, 0, 'info', 'socket removed or replaced'
                      . ' (fresh server or --kill), quitting');
            } elsif (!($! == EINTR || $! == EAGAIN || $! == EWOULDBLOCK)) {
                _quit($srv, 1, 'err', "read from watcher: $!");
            }
        }

        # Handshakes in progress that have bytes for us.
        $intake->service($rbits);

        next if defined $srv->{quitting};
        next unless $intake->accepting
                 && vec($rbits, fileno($fh->{listen}), 1);

        # 3.7.A.iii, and before each connection 3.7.A.i: reload if
        # the program changed since we started.  We quit without
        # accepting; the client that is waiting sees its connection
        # reset and starts a fresh server.  (The calls we hold are
        # still served, by this program: their callers came before the
        # change was seen.)  With inotify the check is one read when
        # nothing changed, so it is made for every connection.
        for (1 .. ACCEPTS_PER_PASS) {
            if (defined(my $why = $srv->{reload}->check)) {
                _quit($srv, 0, 'info', "reloading: $why");
                last;
            }
            my ($got, $error) = $intake->accept_new(Time::HiRes::time());
            if (defined $error) {
                $errors = _count_error($srv, $errors, $error);
                last;
            }
            last unless $got;
        }
    }
}

# In a monitor just forked: closes what the server holds (LISTEN, the
# watcher's pipes, unless quitting closed them already; the inotify fd,
# the monitors' pidfds, every other connection).
sub _close_server_fds ($) {
    my ($srv) = @_;
    _stop_listening($srv);
    $srv->{reload}->close_fd;
    POSIX::close($_) foreach grep { defined } values %{ $srv->{children} };
    %{ $srv->{children} } = ();
    $srv->{intake}->close_all;
}

# Counts one server loop error (7.0.0 never counted them, so a
# persistent accept failure made it spin forever).  Returns the new
# count, or quits once there have been more than max_errors in a row.
sub _count_error ($$$) {
    my ($srv, $errors, $what) = @_;
    my $cfg = $srv->{cfg};
    $errors++;
    my $limit = $cfg->{max_errors};
    if ($limit >= 0 && $errors > $limit) {
        _abort($srv, 'err',
               "$what; $errors errors in a row (max_errors is $limit),"
               . ' quitting');
    }
    $cfg->{log}->msg('warning', $what);
    Time::HiRes::sleep(ERROR_PAUSE);
    return $errors;
}

# Reaps finished monitors, and closes their pidfds.  If BLOCK, waits
# for at least one.  Reports failures, except death by SIGPIPE
# (upstream 3.7.A.ii).
sub _reap ($$$) {
    my ($children, $log, $block) = @_;
    for (;;) {
        my $pid = waitpid(-1, $block ? 0 : WNOHANG);
        if ($pid < 0) {
            next if $! == EINTR;
            # ECHILD: nothing left to wait for, whatever we thought.
            if ($! == ECHILD) {
                POSIX::close($_) foreach grep { defined } values %$children;
                %$children = ();
            }
            return;
        }
        return if $pid == 0;
        my $status = $?;
        my $pidfd = delete $children->{$pid};
        POSIX::close($pidfd) if defined $pidfd;
        if ($status != 0
            && !(WIFSIGNALED($status) && WTERMSIG($status) == SIGPIPE)) {
            $log->msg('warning', "monitor [$pid] failed: "
                      . describe_status($status));
        }
        $block = 0;
    }
}

# Starts quitting (reload, idle timeout, the watcher): logs why, once,
# and closes the listening socket and the watcher fds, so new callers
# start a fresh server at once and the watcher exits.  Returns: the
# loop runs on without accepting, serving the complete calls it holds
# as slots free and giving unfinished handshakes the rest of their
# request timeout, and exits (with status CODE) once it holds nothing
# (_exit_when_done).  A caller we hold has been greeted: dropping it
# would look like a server dying in the middle of its call, and the
# call would fail.
sub _quit ($$$$) {
    my ($srv, $code, $level, $why) = @_;
    return if defined $srv->{quitting};
    $srv->{cfg}{log}->msg($level, $why);
    _stop_listening($srv);
    $srv->{quitting} = $code;
}

# Quits at once, for failures of the server itself (too many errors in
# a row, select): logs why, closes everything it holds, every
# connection included, waits for the calls in progress, and exits 1.
sub _abort ($$$) {
    my ($srv, $level, $why) = @_;
    $srv->{cfg}{log}->msg($level, $why);
    _stop_listening($srv);
    $srv->{intake}->close_all;
    $srv->{quitting} = 1;
    _exit_when_done($srv);
}

# Waits for every monitor, and exits with the status _quit was given.
# Waiting means our monitors never become orphans, which matters where
# init does not reap.
sub _exit_when_done ($) {
    my ($srv) = @_;
    _reap($srv->{children}, $srv->{cfg}{log}, 1) while %{ $srv->{children} };
    POSIX::_exit($srv->{quitting});
}

# Closes LISTEN, WATCHE and WATCHI, those that are still open (each
# only once: a descriptor number closed twice may by then be another
# file's).
sub _stop_listening ($) {
    my ($srv) = @_;
    my $fh = $srv->{fh};
    close(delete $fh->{listen}) if $fh->{listen};
    close(delete $fh->{watche}) if $fh->{watche};
    POSIX::close(delete $fh->{watchi}) if defined $fh->{watchi};
}

#---------- monitor ----------

# Part 4: one complete call (Prefork::Interp::Handshake::call), in a
# fresh process that holds nothing else of the server's.  Returns only
# in the executor, with the call; in the monitor itself it always ends
# in _exit.
sub _monitor ($$) {
    my ($cfg, $call) = @_;
    my $log = $cfg->{log};
    my $request = eval { _monitor_body($cfg, $call) };
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

sub _monitor_body ($$) {
    my ($cfg, $call) = @_;
    my $log = $cfg->{log};
    my $fh = $call->{fh};

    # A process group of our own.  The executor makes one of its own
    # (protocol.md 6.4 step 1), which we must not be in, but which must
    # have a parent (us) in another group of its session: a group
    # without one is orphaned, and the kernel would not stop it for
    # SIGTSTP, SIGTTIN or SIGTTOU.
    POSIX::setpgid(0, 0) or die "setpgid: $!\n";
    $0 = "$cfg->{title} [prefork monitor]";

    # 4.3 to 4.7 (and with call1, protocol.md 6.1 to 6.3) are done: the
    # server read the whole handshake without blocking.  From here on
    # this process waits on this one call, so its socket blocks again.
    my $flags = fcntl($fh, F_GETFL, 0) or die "fcntl F_GETFL on CALL: $!\n";
    fcntl($fh, F_SETFL, $flags & ~O_NONBLOCK)
        or die "fcntl F_SETFL on CALL: $!\n";
    my $call1 = $call->{call1};
    my @caller_fds = (@{ $call->{fds} },
                      map { $_->[1] } @{ $call1 ? $call1->{extra_fds} : [] });

    # 4.9: fork the executor.  (No EXECTERM pipe, unlike upstream 4.8:
    # see _await_executor.)  Every signal is blocked across the fork:
    # the executor unblocks them once it has its dispositions and mask
    # (protocol.md 6.4 steps 6 and 7), so a signal forwarded at once
    # is not met by the monitor's dispositions.
    my $monitor = $$;
    my $oldmask = Prefork::Interp::Signals::block_all();
    my $pid = fork;
    if (!defined $pid) {
        my $e = "cannot fork to run the script: $!";
        Prefork::Interp::Signals::restore_mask($oldmask);
        _tell_caller($caller_fds[2], $cfg->{title}, $e);
        $log->msg('err', $e);
        my $status = 127 << 8;
        if ($call1) {
            Prefork::Interp::Protocol::send_u32_frame($fh,
                Prefork::Interp::Protocol::TAG_EXIT, $status);
        } else {
            Prefork::Interp::Protocol::write_status($fh, $status);
        }
        POSIX::_exit(0);
    }
    if (!$pid) {
        # Executor.  First of all, it dies with its monitor.
        Prefork::Interp::Signals::die_with_parent($monitor, SIGKILL, $log);
        # The leader of the call's process group (protocol.md 6.4 step
        # 1; we do the same from our side, so neither of us can race
        # the other).  The caller's descriptors, environment, arguments
        # and attributes are installed by the library once serve() has
        # returned (4.9.i to 4.9.v, protocol.md 6.4).
        POSIX::setpgid(0, 0);
        close $fh;
        return { fds => $call->{fds}, body => $call->{body},
                 env_end => $call->{env_end}, call1 => $call1,
                 log => $log };
    }
    # EACCES (it has exec'd already) or ESRCH (it has gone): it did its
    # own setpgid first.
    POSIX::setpgid($pid, $pid);
    Prefork::Interp::Signals::restore_mask($oldmask);
    # Signal frames that came before the executor existed: delivered at
    # once (before anything slow), so that even a short call gets them;
    # the executor keeps them pending until its dispositions are set.
    foreach my $early (@{ $call1 ? $call1->{early} : [] }) {
        my ($tag, $sig) = @$early;
        my $err = Prefork::Interp::Signals::deliver($tag, $sig, $pid);
        $log->msg('warning', "caller sent a bad '$tag' frame: $err;"
                  . ' ignored') if defined $err;
    }

    # 4.10; and the request is the executor's now.
    POSIX::close($_) foreach @caller_fds;
    undef ${ $call->{body} };
    $0 = "$cfg->{title} [prefork monitor $pid]" unless $call->{initial};

    if ($call1) {
        _await_executor_call1($cfg, $fh, $pid);
        POSIX::_exit(0);
    }

    my $status = _await_executor($cfg, $fh, $pid);

    # 4.15: EPIPE or ECONNRESET here just mean the caller has gone.
    eval { Prefork::Interp::Protocol::write_status($fh, $status); 1 }
        or do {
            die $@ unless Prefork::Interp::Protocol::is_gone($@);
        };
    # 4.16
    POSIX::_exit(0);
}

# _call_readable(CALL, WATCH): waits until CALL is readable (true), or
# the child watch has something or its timeout passed (false).
sub _call_readable ($$) {
    my ($call, $watch) = @_;
    my $rbits = '';
    vec($rbits, fileno($call), 1) = 1;
    vec($rbits, $watch->fd, 1) = 1 if defined $watch->fd;
    my $n = select($rbits, undef, undef, $watch->timeout);
    if ($n < 0) {
        return 0 if $! == EINTR;
        die "select on call socket: $!\n";
    }
    return $n > 0 && vec($rbits, fileno($call), 1);
}

# 4.11 to 4.14: waits until the executor has exited or the caller has
# gone, and returns the executor's raw wait status.  Plain v1.
#
# We learn of the executor's death from the kernel only: a pidfd where
# Linux has one, otherwise waitpid woken by SIGCHLD (ChildWatch).
# Upstream uses an EXECTERM pipe whose write end the executor holds;
# but perl closes that pipe during global destruction, before the
# process has exited, and exec closes it too (close-on-exec), so 7.0.0
# signals a live executor and reports "killed by SIGINT" for most
# "exit 0" calls.
#
# Unlike upstream 4.12/4.13, a normal exit does not SIGINT the process
# group: background processes the script leaves behind survive it, as
# they would if the script had been run directly.
sub _await_executor ($$$) {
    my ($cfg, $call, $pid) = @_;
    my $watch = Prefork::Interp::Signals::ChildWatch->new(
        $pid, stops => 0, kernel_fd => $cfg->{use_pidfd});
    my $said_data = 0;

    for (;;) {
        my ($what, $status) = $watch->check;
        if (defined $what) {
            $watch->close;
            return $status;
        }
        next unless _call_readable($call, $watch);
        # CALL is readable.  A v1 client sends nothing after its
        # request: bytes are ignored (protocol.md 4; 7.0.0 took them as
        # a hang-up), only EOF or an error ends the call early.
        my $buf;
        my $r = sysread($call, $buf, 4096);
        next if !defined $r && ($! == EINTR || $! == EAGAIN);
        if (defined $r && $r > 0) {
            $cfg->{log}->msg('info', 'caller sent data after its request;'
                             . ' ignored') unless $said_data++;
            next;
        }
        last;
    }

    # The caller has gone: 4.12 to 4.14.
    $SIG{INT} = 'IGNORE';
    Prefork::Interp::Signals::hang_up($pid);
    $watch->close;
    return $watch->wait_exit;
}

# Extension call1 (protocol.md 6.5): while the executor runs, carries
# out the client's SIGP and SIGG frames, reports each stop with a STOP
# frame and the end with an EXIT frame.  Returns once the executor has
# exited.
sub _await_executor_call1 ($$$) {
    my ($cfg, $call, $pid) = @_;
    my $log = $cfg->{log};
    my $watch = Prefork::Interp::Signals::ChildWatch->new(
        $pid, stops => 1, kernel_fd => $cfg->{use_pidfd});
    my $inbuf = '';
    my $gone;     # why the call is dropped, once it is

    my $signal = sub {
        my ($tag, $sig) = @_;
        my $err = Prefork::Interp::Signals::deliver($tag, $sig, $pid);
        $log->msg('warning', "caller sent a bad '$tag' frame: $err;"
                  . ' ignored') if defined $err;
    };

    while (!defined $gone) {
        my ($what, $value) = $watch->check;
        if (defined $what && $what eq 'exit') {
            $watch->close;
            # EPIPE or ECONNRESET here just mean the caller has gone.
            eval {
                Prefork::Interp::Protocol::send_u32_frame($call,
                    Prefork::Interp::Protocol::TAG_EXIT, $value);
                1;
            } or do {
                die $@ unless Prefork::Interp::Protocol::is_gone($@);
            };
            return;
        }
        if (defined $what) {
            my $ok = eval {
                Prefork::Interp::Protocol::send_u32_frame($call,
                    Prefork::Interp::Protocol::TAG_STOP, $value);
                1;
            };
            if (!$ok) {
                die $@ unless Prefork::Interp::Protocol::is_gone($@);
                $gone = 'hung up';
                last;
            }
            next;
        }

        next unless _call_readable($call, $watch);

        my $r = sysread($call, $inbuf, 65536, length $inbuf);
        if (!defined $r) {
            next if $! == EINTR || $! == EAGAIN || $! == EWOULDBLOCK;
            $gone = "connection failed ($!)";
            last;
        }
        if ($r == 0) {
            $gone = length($inbuf) ? 'hung up in the middle of a frame'
                                   : 'hung up';
            last;
        }
        for (;;) {
            my $frame = eval { Prefork::Interp::Protocol::take_frame(\$inbuf) };
            if (!$frame) {
                last unless $@;
                my $e = $@;
                chomp $e;
                $log->msg('warning', "bad frame from caller: $e;"
                          . ' dropping the call');
                $gone = 'broke the protocol';
                last;
            }
            my ($tag, $body) = @$frame;
            # Frames we do not know are skipped (protocol.md 6.2).
            next unless $tag eq Prefork::Interp::Protocol::TAG_SIGP
                     || $tag eq Prefork::Interp::Protocol::TAG_SIGG;
            my $sig = eval {
                Prefork::Interp::Protocol::decode_u32_body($tag, $body);
            };
            if (!defined $sig) {
                # A malformed body is skipped: the client's mistake need
                # not end the call (protocol.md 6.2).
                my $e = $@;
                chomp $e;
                $log->msg('warning', "bad frame from caller, skipped: $e");
                next;
            }
            $signal->($tag, $sig);
        }
    }

    # The caller has gone, or broke the protocol: as a v1 hang-up.
    $log->msg('info', "caller $gone; stopping the call")
        if $gone ne 'broke the protocol';
    $SIG{INT} = 'IGNORE';
    Prefork::Interp::Signals::hang_up($pid);
    $watch->close;
    $watch->wait_exit;
    return;
}

# Writes one line to the caller's stderr (a raw fd), for errors the
# caller ought to see.
sub _tell_caller ($$$) {
    my ($fd, $title, $msg) = @_;
    my $line = "$title: prefork: $msg\n";
    POSIX::write($fd, $line, length $line);
}

#---------- helpers ----------

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

Internal to L<Prefork::Interp>: daemonising once the setup process has
forked (L<Prefork::Interp::Setup>), the server's accept loop, and the
per-call monitor.  See the comments in the source for the process
tree and the steps of the upstream design it follows.

=cut
