# Prefork::Interp::Setup - the setup process's part, at the script's
# initialisation-complete point: fork the server, and with extension
# inplace1 (protocol.md 7) take the first call in, to run it here.
#
# Without inplace1 (the 7.0.0 C client, or a client that did not
# announce it) the setup process forks the server and exits 0; the
# server takes the first call in from CALL (Prefork::Interp::Server has
# the process tree).  With it:
#
#   client (prefork-interp)
#     `- setup: the script, run by the client with PREFORK_INTERP set;
#        |      start() greets the client on CALL ("inplace1"), reads
#        |      the call's handshake and returns into the script with
#        |      the caller's stdio, environment, arguments and
#        |      attributes, leading the call's process group
#        `- (short-lived) forks the server and exits at once, so the
#             server is not the script's child, which a script waiting
#             for all its children (or fast exit) would see
#   server &&   as without inplace1, but with no first call: it closes
#               CALL
#
# This file, and what it loads, is all the setup process loads beyond
# what the first call needs: the server loads Prefork::Interp::Server
# (the intake, the reload watches) once forked, so that a cold call
# costs about what a direct run costs.  Beside a first call run here it
# waits first ($Prefork::Interp::START_DELAY, the start_delay of CFG),
# so that its start does not compete with that call for the CPUs (it
# takes tens of milliseconds of CPU, which on a small machine would
# otherwise be taken from the first call).
#
# Copyright the prefork-interp contributors; see the project's
# top-level files for the licence.

package Prefork::Interp::Setup;

use strict;
use warnings;

use Prefork::Interp::Handshake;
use Prefork::Interp::Protocol;
use Prefork::Interp::Signals;
use Prefork::Interp::Syscall qw(EINTR F_GETFL F_SETFL O_NONBLOCK);

our $VERSION = '1.0.0';

# start(CFG) - called in the setup process.  Forks the server (upstream
# design comment, part 3 step 3).  Returns only in an executor, once
# per call, with the call (see Prefork::Interp::Server), and with
# inplace1 in this process, with the first call (see _take_in_place).
#
# CFG: as Prefork::Interp::Server::serve takes it, with reload_paths (a
# code ref that lists the files the server depends on) instead of
# before; its fds (from parse_env_value) say whether the client
# announced inplace1.
sub start ($) {
    my ($cfg) = @_;
    my $log = $cfg->{log};

    # Dispositions and hooks for the server and the spares (and the
    # setup process while it takes the first call in).  They are local,
    # so the executor gets back whatever the script had set when
    # start() returns into it.
    local $SIG{CHLD} = 'DEFAULT';    # SIG_IGN would hide our children
    local $SIG{PIPE} = 'IGNORE';     # a vanished caller is EPIPE, quietly
    local $SIG{__DIE__};             # the script's hooks must not run
    local $SIG{__WARN__};            #   in the server or in spares

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
    # buffers first, so output from initialisation appears once.)  With
    # inplace1 the parent runs the first call instead, and the server
    # is forked from a child that exits at once.
    my $client = getppid();
    $cfg->{setup_pid} = $$;
    my $pid = fork;
    defined $pid or die "cannot fork the server: $!\n";
    if ($pid) {
        Prefork::Interp::Syscall::exit_now(0) unless $fds->{in_place};
        close(delete $fh{listen});
        close(delete $fh{watche});
        Prefork::Interp::Syscall::close_fd(delete $fh{watchi});
        return _take_in_place($cfg, delete $fh{call}, $client, $pid);
    }

    # From here on we are on the way to be the server and must never
    # return into the script except as an executor.  The server and
    # its spares show titles of their own (Prefork::Interp::Title); an
    # executor gets the script's $0 back.  (Not with local: the setup
    # process, which runs the first call as a direct run, never
    # touches its $0, so its command line stays as it was.)
    my $script0 = $0;
    $log->to_stderr(0) if $fds->{in_place};    # the caller's, in use
    my $request = eval {
        if ($fds->{in_place}) {
            # The server starts with no call: the setup process has it.
            close(delete $fh{call});
            my $server = fork;
            defined $server or die "cannot fork the server: $!\n";
            Prefork::Interp::Syscall::exit_now(0) if $server;
        }
        # The files the server depends on, as the program has loaded
        # them, recorded at once: the server compares them with what it
        # finds when it starts, which may be after the first call has
        # ended.  Here, not before the fork, so that a first call run in
        # place does not wait for a stat of every file.
        require Prefork::Interp::Identity;
        $cfg->{before} = Prefork::Interp::Identity::record(
            $cfg->{reload_paths}->());
        if ($fds->{in_place}) {
            # Nor do we keep the first caller's stderr (our fds 1 and
            # 2), in use by that call, while we load the server: it
            # must not wait for us to close it (serve() does this too).
            stdio_to_null();
            # Then wait until a caller connects or START_DELAY has
            # passed (a signal: start at once).
            Prefork::Interp::Syscall::readable(fileno($fh{listen}),
                                               $cfg->{start_delay} // 0);
        }
        require Prefork::Interp::Server;
        Prefork::Interp::Server::serve($cfg, \%fh);
    };
    if ($request) {
        $0 = $script0;
        return $request;
    }
    # Only reached if the server could not be started.
    $log->msg('err', "server failed: $@");
    Prefork::Interp::Syscall::exit_now(127);
}

# stdio_to_null(): stdin, stdout and stderr to /dev/null (upstream part
# 3.6), in the server (Prefork::Interp::Server::serve) and, earlier, in
# the child on its way to be the server beside a first call run in
# place.  Reopening the perl handles (rather than dup2 underneath them)
# keeps them on fds 0, 1 and 2 and keeps any I/O layers the script
# pushed on them.  Dies on failure.
sub stdio_to_null () {
    open(STDIN, '<', '/dev/null') or die "reopen stdin: $!\n";
    open(STDOUT, '>', '/dev/null') or die "reopen stdout: $!\n";
    open(STDERR, '>', '/dev/null') or die "reopen stderr: $!\n";
}

# _take_in_place(CFG, CALL, CLIENT, CHILD): protocol.md 7, in the setup
# process once it has forked CHILD (which forks the server and exits):
# greets the client on CALL with the payload "inplace1" and reads the
# call's handshake (protocol.md 2 steps 2 to 4, and with call1 the
# accept frame, ATTR and the caller's other fds), blocking, within the
# request timeout, with the Prefork::Interp::Handshake the server uses.
# Then makes this process what an executor is when the server has handed
# it a call, so that Prefork::Interp takes the call on the same way:
# every signal blocked (the call's own mask is set last), CALL closed,
# and the kernel to send it SIGINT, what the server sends when a
# caller hangs up, if the client (its parent, CLIENT) dies.  It stays
# in the process group the client made it lead, the call's.  Returns the
# call, as Prefork::Interp::Server does in an executor.
#
# Never returns half done: a client that hangs up or breaks the
# protocol gets one line on our stderr (the caller's), and we exit 127.
sub _take_in_place ($$$$) {
    my ($cfg, $fh, $client, $child) = @_;
    my $timeout = $cfg->{request_timeout};
    my $hs;
    my $ok = eval {
        _set_nonblocking($fh, 'CALL');
        Prefork::Interp::Protocol::send_in_place_greeting($fh);
        my $start = Prefork::Interp::Syscall::now();
        # Not pty1: this process leads the process group its client
        # made, so cannot start a session; and the caller's terminal is
        # its controlling terminal already, handed to it by the client
        # (protocol.md 7).  The client then goes on with call1 alone.
        $hs = Prefork::Interp::Handshake->new($fh, $start, 1, 0);
        until ($hs->advance) {
            # A request timeout of 0: no limit.
            my $left = $timeout > 0
                     ? $start + $timeout - Prefork::Interp::Syscall::now() : undef;
            die "no complete request within $timeout s\n"
                if defined $left && $left <= 0;
            my $rbits = '';
            vec($rbits, fileno($fh), 1) = 1;
            select($rbits, undef, undef, $left) >= 0 || $! == EINTR
                or die "select on CALL: $!\n";
        }
        1;
    };
    my $e = $@;
    # The child forks the server and exits at once: reap it, so that
    # the script has no child it did not start.
    1 while waitpid($child, 0) < 0 && $! == EINTR;
    if (!$ok) {
        $e = 'the client ' . $e->why
            if Prefork::Interp::Protocol::is_gone($e);
        chomp $e;
        $hs ? $hs->close : close($fh);
        my $line = "$cfg->{title}: prefork: error: taking the first call"
                 . " in: $e\n";
        Prefork::Interp::Syscall::write_fd(2, $line);
        Prefork::Interp::Syscall::exit_now(127);
    }
    my $call = $hs->call;
    Prefork::Interp::Signals::block_all();
    close $fh;
    Prefork::Interp::Signals::die_with_parent(
        $client, Prefork::Interp::Signals::SIGINT, $cfg->{log});
    # Signal frames that came before the ATTR frame (our client holds
    # the signals it gets while it hands the call over, and sends none)
    # stay pending until the call's mask is set, as the server delivers
    # them to an executor.  The call's process group is the caller's,
    # the client's too: a SIGG frame is for this process alone.
    foreach my $early (@{ $call->{call1} ? $call->{call1}{early} : [] }) {
        my ($tag, $sig) = @$early;
        Prefork::Interp::Signals::deliver('SIGP', $sig, $$);
    }
    return { fds => $call->{fds}, body => $call->{body},
             env_end => $call->{env_end}, call1 => $call->{call1},
             log => $cfg->{log}, in_place => 1 };
}

sub _set_nonblocking ($$) {
    my ($fh, $what) = @_;
    my $flags = fcntl($fh, F_GETFL, 0)
        or die "fcntl F_GETFL on $what: $!\n";
    fcntl($fh, F_SETFL, $flags | O_NONBLOCK)
        or die "fcntl F_SETFL on $what: $!\n";
}

1;

__END__

=head1 NAME

Prefork::Interp::Setup - forking the server, and the first call run in
place (internal)

=head1 DESCRIPTION

Internal to L<Prefork::Interp>: at the initialisation-complete point,
the setup process forks the server; with protocol extension inplace1
it then runs the first call itself, as a direct run would.  See the
comments in the source.

=cut
