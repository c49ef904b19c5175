# Prefork::Interp::Server - the processes behind
# prefork_initialisation_complete: the server and its executors.
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
#     |                  Intake), the socket of each call in progress,
#     |                  a control socket per spare, a signalfd for
#     |                  SIGCHLD
#     |- spare           pool_size of them (Prefork::Interp::Executors),
#     |                  forked while the server is idle, each blocked
#     |                  reading its control socket; in the server's
#     |                  group until it is handed a call; dies with the
#     |                  server
#     `- executor &      a spare once handed a call (or, with no spare
#                        left, forked for it): the script again,
#                        returning from serve() with the caller's stdio,
#                        environment and arguments (and with extension
#                        call1, its other fds and attributes); leader of
#                        the call's group; dies with the server
#
# There is no monitor process: the server does the monitor's part of
# protocol.md 4 (upstream part 4) for every call in progress, from its
# select loop (Prefork::Interp::Executors): signals forwarded, the
# client's hang-up, the executor's stops and end (waitpid), the STOP and
# EXIT frames (v1: the wait status).  A warm call costs one fork, made
# before the call came; the replacement spare is forked once no young
# call runs (Prefork::Interp::Executors::fill_in).
#
# This file is loaded by the server, once forked: the setup process does
# without it.
#
# The server takes calls in itself (protocol.md 4.1): it greets each
# connection at once and reads every handshake from its one select
# loop, without blocking; only a complete call, when one of the
# max_servers slots is free, is handed to an executor.
#
# Quitting (reload, idle timeout, the watcher, a failure to read from
# it) stops the accepting at once but not the serving: every
# connection the server holds has been greeted, so its caller could not
# tell being dropped from a server dying in the middle of its call, and
# would fail instead of starting a fresh server.  So the loop runs on
# without LISTEN, the watcher's pipes and the spares (they see EOF and
# exit) until it holds nothing and no call is in progress, then waits
# for its children and exits (protocol.md 4.1, end).  Only too many
# errors in a row, or select failing, drop every connection held at
# once (calls in progress are still served).
#
# The steps follow the upstream design comment, parts 3 ("Library
# should do the following") and 4 ("service (monitor) child"); the
# comments below cite them as "3.5", "4.11" and so on.  Where we differ
# from it or from 7.0.0's Perl library, the comment says so and why.
#
# The server, and a spare that is not handed a call, end in
# POSIX::_exit: they must never run the script's END blocks or
# destructors, and must never fall back into the script's code.
#
# Copyright the prefork-interp contributors; see the project's
# top-level files for the licence.

package Prefork::Interp::Server;

use strict;
use warnings;

use Errno qw(EINTR EAGAIN EWOULDBLOCK);
use POSIX ();
use Time::HiRes ();

use Prefork::Interp::Executors;
use Prefork::Interp::Intake;
use Prefork::Interp::Protocol;
use Prefork::Interp::Record;
use Prefork::Interp::Reload;
use Prefork::Interp::Signals;
use Prefork::Interp::Syscall ();
use Prefork::Interp::Title;

our $VERSION = '1.0.0';

# In an executor, the server's state, never freed (see serve).
my @KEPT;

# After an accept or fork failure, pause this long before trying again,
# so that a persistent error (say EMFILE) does not spin the CPU.
use constant ERROR_PAUSE => 0.05;

# Connections accepted per pass of the loop at most, so that handshakes
# and the calls in progress are seen to between bursts.
use constant ACCEPTS_PER_PASS => 16;

#---------- entry point ----------

# serve(CFG, FH) - in the server, just forked by the setup process
# (Prefork::Interp::Setup::start, which has set the server's signal
# dispositions).  Daemonises and becomes the server.  Returns only in
# an executor, once per call, with the call (see
# Prefork::Interp::Executors).
#
# CFG: fds (from parse_env_value), max_servers, pool_size,
# idle_timeout, max_errors, before (the identities of the files the
# server depends on, as the setup process recorded them), reload_files
# (a code ref that, given before, lists those files and their
# identities before by the same names; called once this file and what
# it uses are loaded, which are then among them), request_timeout,
# use_pidfd, use_inotify, log (a Prefork::Interp::Log), title (the
# script as the first run named it, for ps), setup_pid (with inplace1:
# the setup process, which runs the first call).
# FH: the handles listen, watche and (unless the setup process runs the
# first call itself) call, and the bare fd watchi.
sub serve ($$) {
    my ($cfg, $fh) = @_;
    my $log = $cfg->{log};

    # Look up the system calls the server and executors use now, once:
    # where syscall.ph has to be loaded, that takes a while, and the
    # executors are forked from us.
    Prefork::Interp::Syscall::number($_)
        foreach qw(signalfd4 prlimit64 prctl recvmsg sendmsg
                   inotify_init1 inotify_add_watch pidfd_open);

    # From here on we are the server and must never return into the
    # script except as an executor.
    my $request = eval {
        # 3.4
        POSIX::setsid() or die "setsid: $!\n";
        # Our command line is the first caller's, arguments and all:
        # show what we are instead, for our whole life (and our
        # spares').
        Prefork::Interp::Title::set(
            Prefork::Interp::Title::of_role('server', $cfg->{title}));

        # 3.6: from now on nobody reads our stderr.
        Prefork::Interp::Setup::stdio_to_null();
        $log->to_stderr(0);

        # The first call, run in place by the setup process, is running
        # while that process lives (a pidfd tells when it has gone):
        # it holds the idle timeout, and counts in the record.
        my $first_call;
        $first_call = _pidfd($cfg->{setup_pid})
            if $cfg->{fds}{in_place} && defined $cfg->{setup_pid};
        if (defined $first_call
            && Prefork::Interp::Syscall::readable($first_call, 0)) {
            POSIX::close($first_call);
            $first_call = undef;
        }
        # Our line in the server record (protocol.md 8), for --list,
        # first: the warnings below are its last error.
        my $record;
        if (defined $cfg->{fds}{record}) {
            $record = Prefork::Interp::Record->new(
                $cfg->{fds}{record}, $cfg->{fds}{in_place},
                defined $first_call, $log);
            $log->record($record) if $record;
        }

        $log->msg('warning', 'this system has no prctl we know of: a call'
                  . ' whose server is killed will not be stopped')
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

        my $srv = { cfg => $cfg, fh => $fh, intake => $intake,
                    reload => $reload, record => $record,
                    first_call => $first_call };
        my $request = _server_loop($srv);
        # In an executor: the server's state (the reload watch with its
        # files, the intake, the spares...) stays allocated, as it is in
        # the server.  Freed here, its values' pages would be copied from
        # the server (perl writes reference counts) on the call's path:
        # with DateTime loaded, about 100 page faults.
        push @KEPT, $srv, $files, $before;
        return $request;
    };
    return $request if $request;
    # Only reached if something died in the server itself.
    $log->msg('err', "server failed: $@");
    POSIX::_exit(127);
}

#---------- server ----------

# 3.7: the select loop.  SRV holds the server's state: cfg, fh (listen,
# watche, watchi; gone once closed), intake, executors (spares and the
# calls in progress), record (our server record, or undef), first_call
# (a pidfd of the setup process while it runs the first call in place,
# or undef), and once _quit has been called, quitting (the status to
# exit with).  Returns only in an executor.
sub _server_loop ($) {
    my ($srv) = @_;
    my ($cfg, $fh, $intake) = @$srv{qw(cfg fh intake)};
    my $log = $cfg->{log};
    my $max = $cfg->{max_servers};
    $max = -1 if $max == 0;   # 0 and negative numbers: no limit
    my $errors = 0;           # consecutive, reset by a call started
    my $last_call = Time::HiRes::time();

    # Without a signalfd, an executor stopping or ending interrupts
    # select (EINTR), so we hear of it at once.
    local $SIG{CHLD} = sub { };
    my $executors = $srv->{executors} = Prefork::Interp::Executors->new(
        pool_size => $cfg->{pool_size}, log => $log, title => $cfg->{title},
        use_signalfd => $cfg->{use_pidfd},
        rehearse => $cfg->{rehearse},
        release => sub { _close_server_fds($srv) });

    for (;;) {
        # 3.7.A.ii: executors that stopped or ended (STOP and EXIT
        # frames), then each complete call to an executor, oldest
        # first, while a slot is free.
        _reap($srv, 0);
        if (defined $srv->{first_call}
            && Prefork::Interp::Syscall::readable($srv->{first_call}, 0)) {
            # The first call, run in place, has ended.
            POSIX::close(delete $srv->{first_call});
            $srv->{record}->ended if $srv->{record};
            $last_call = Time::HiRes::time();
        }
        while ($intake->ready
               && ($max < 0 || $executors->running < $max)) {
            my $hs = $intake->take_ready;
            my $request = eval { $executors->start($hs) };
            return $request if $request;    # we are its executor
            if ($@) {
                my $e = $@;
                chomp $e;
                $errors = _count_error($srv, $errors, $e);
                next;
            }
            $errors = 0;
            $last_call = Time::HiRes::time();
            $srv->{record}->started if $srv->{record};
        }
        # Spares for the calls to come, the ones handed calls replaced:
        # not on a call's way (Prefork::Interp::Executors::fill_in).
        my $now = Time::HiRes::time();
        my $fill_in;
        if (!defined $srv->{quitting}) {
            $fill_in = $executors->fill_in($now);
            if (defined $fill_in && $fill_in <= 0) {
                my $request = $executors->fill;
                return $request if $request;    # a spare, handed a call
                $fill_in = undef;
                $now = Time::HiRes::time();
            }
        }

        $intake->expire($now);
        my $quitting = defined $srv->{quitting};

        # Quitting, every connection we held has been served or
        # dropped, and no call is in progress: go.
        _exit_when_done($srv)
            if $quitting && !$intake->held && !$executors->running;

        # Idle: no call for idle_timeout, and no connection held (nor
        # a first call running in place).
        my $timeout;
        if (!$quitting && $cfg->{idle_timeout} >= 0 && !$intake->held
            && !defined $srv->{first_call}) {
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
        foreach my $delay ($executors->timeout, $fill_in) {
            $timeout = $delay
                if defined $delay && (!defined $timeout || $delay < $timeout);
        }

        my $rbits = '';
        if (!$quitting) {
            vec($rbits, fileno($fh->{watche}), 1) = 1;
            vec($rbits, fileno($fh->{listen}), 1) = 1 if $intake->accepting;
        }
        $intake->watch(\$rbits);
        $executors->watch(\$rbits);
        vec($rbits, $srv->{first_call}, 1) = 1 if defined $srv->{first_call};
        my $n = select($rbits, undef, undef, $timeout);
        if ($n < 0) {
            next if $! == EINTR;
            _abort($srv, 'err', "select: $!");
            _exit_when_done($srv);
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

        # Handshakes in progress that have bytes for us, and calls in
        # progress whose client sent frames or hung up.
        $intake->service($rbits);
        $executors->service($rbits);

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
            # A whole call came with it: start it before taking in more.
            last unless $got && !$intake->ready;
        }
    }
}

# In an executor just forked (a spare, or one forked for a call; 4.1):
# closes what the server holds of its own (LISTEN, the watcher's pipes,
# unless quitting closed them already; the inotify fd; every connection
# held).  Prefork::Interp::Executors closes the rest.
sub _close_server_fds ($) {
    my ($srv) = @_;
    _stop_listening($srv);
    $srv->{reload}->close_fd;
    $srv->{intake}->close_all;
    POSIX::close(delete $srv->{first_call}) if defined $srv->{first_call};
    if (my $record = delete $srv->{record}) {
        $record->release;
        $srv->{cfg}{log}->record(undef);
    }
}

# _reap(SRV, BLOCK): the executors' stops and ends (BLOCK: waits for
# every child), and the calls that ended off the record's count.
sub _reap ($$) {
    my ($srv, $block) = @_;
    my $executors = $srv->{executors};
    my $running = $executors->running;
    $block ? $executors->wait_all : $executors->reap;
    $srv->{record}->ended($running - $executors->running)
        if $srv->{record};
}

# Counts one server loop error (7.0.0 never counted them, so a
# persistent accept failure made it spin forever).  Returns the new
# count; once there have been more than max_errors in a row, the server
# aborts (_abort).
sub _count_error ($$$) {
    my ($srv, $errors, $what) = @_;
    my $cfg = $srv->{cfg};
    $errors++;
    my $limit = $cfg->{max_errors};
    if ($limit >= 0 && $errors > $limit) {
        _abort($srv, 'err',
               "$what; $errors errors in a row (max_errors is $limit),"
               . ' quitting');
        return $errors;
    }
    $cfg->{log}->msg('warning', $what);
    Time::HiRes::sleep(ERROR_PAUSE);
    return $errors;
}

# Starts quitting (reload, idle timeout, the watcher): logs why, once,
# and closes the listening socket and the watcher fds, so new callers
# start a fresh server at once and the watcher exits, and lets the
# spares go.  Returns: the loop runs on without accepting, serving the
# complete calls it holds as slots free (each by an executor forked for
# it) and giving unfinished handshakes the rest of their request
# timeout, and exits (with status CODE) once it holds nothing and no
# call is in progress (_exit_when_done).  A caller we hold has been
# greeted: dropping it would look like a server dying in the middle of
# its call, and the call would fail.
sub _quit ($$$$) {
    my ($srv, $code, $level, $why) = @_;
    return if defined $srv->{quitting};
    $srv->{cfg}{log}->msg($level, $why);
    _stop_listening($srv);
    $srv->{executors}->close_spares;
    $srv->{quitting} = $code;
}

# Quits at once, for failures of the server itself (too many errors in
# a row, select): logs why, closes everything it holds, every
# connection included, and lets the spares go; the calls in progress
# are still served, and then the server exits 1.
sub _abort ($$$) {
    my ($srv, $level, $why) = @_;
    $srv->{cfg}{log}->msg($level, $why);
    _stop_listening($srv);
    $srv->{intake}->close_all;
    $srv->{executors}->close_spares;
    $srv->{quitting} = 1;
}

# Waits for every child (spares on their way out; calls in progress if
# select failed, which are reported as they end), and exits with the
# status _quit was given.  Waiting means no child of ours becomes an
# orphan, which matters where init does not reap, and no executor is
# killed by our death.
sub _exit_when_done ($) {
    my ($srv) = @_;
    $srv->{executors}->close_spares;
    _reap($srv, 1);
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

#---------- helpers ----------

# _pidfd(PID): a pidfd of process PID (readable once it has ended), or
# undef where there is none (the process has gone, or no pidfd_open).
sub _pidfd ($) {
    my ($pid) = @_;
    my $nr = Prefork::Interp::Syscall::number('pidfd_open');
    return undef unless defined $nr;
    my $fd = syscall($nr, $pid + 0, 0);
    return $fd >= 0 ? $fd : undef;
}

1;

__END__

=head1 NAME

Prefork::Interp::Server - the server process (internal)

=head1 DESCRIPTION

Internal to L<Prefork::Interp>: daemonising once the setup process has
forked (L<Prefork::Interp::Setup>) and the server's select loop, which
takes calls in, hands each to an executor (L<Prefork::Interp::Executors>)
and watches the calls in progress.  See the comments in the source for
the process tree and the steps of the upstream design it follows.

=cut
