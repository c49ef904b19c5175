# Prefork::Interp::FastExit - the executor ends as a direct run would,
# without perl's global destruction.
#
# Why: an executor is a fork of a server that has loaded everything the
# script needs.  At exit, perl's global destruction (perl_destruct:
# sv_clean_objs and the rest) visits and frees every object and every
# package variable, the server's included, in every call; in a forked
# child that also copies every page it touches.  With DateTime loaded
# that is about 12 ms per call, against about 1 ms for POSIX::_exit.
#
# Where: an ordinary exit of perl (exit, die, falling off the end) goes
#
#   1. unwind the running code: lexicals of every scope, the main
#      file's included, are freed (DESTROY runs, ${^GLOBAL_PHASE} is
#      RUN);
#   2. END blocks, last compiled first, each seeing and able to change
#      $? (an exit or die inside one sets $? and the rest still run);
#   3. flush STDOUT (PerlIO_stdout()): on failure, "Unable to flush
#      stdout: $!" on stderr and, if $? is 0, status 1;
#   4. flush every other PerlIO handle (my_fflush_all), errors ignored;
#   5. global destruction: DESTROY of every object still alive
#      (${^GLOBAL_PHASE} is DESTRUCT), then everything else is freed
#      and the handles are closed (a piped open waits for its child);
#   6. exit($? & 0xFFFF) (C atexit handlers, C stdio flushed).
#
# The mechanism: install() pushes a code reference on the *end* of perl's
# list of END blocks (PL_endav, reached through B::end_av).  perl runs
# that list from its start (call_list() shifts each entry off and
# call_sv()s it, which takes a code reference as well as a CV); END
# blocks compiled later, even during the call (require, string eval),
# are unshifted onto its start, so ours runs after every other one,
# with $? final: that is the end of step 2.  There _at_end() does steps
# 3 and 4 itself and then _exit($?) (Prefork::Interp::Syscall::exit_now,
# POSIX::_exit without loading POSIX), skipping 5 and 6.  Step 4
# is PerlIO_flush(NULL), which perl offers to Perl code only before it
# runs another program: an exec with no program (exec {''} ()) flushes
# every handle, finds no program to run without making a system call,
# and returns (with warnings off, silently).
#
# Where the outcome of step 5 could be observable and is cheap to
# detect, _at_end() steps aside and perl finishes normally (same
# result, usual cost): the executor has child processes (a piped open
# still open would be waited for), threads are running, taint mode is
# on (exec would check %ENV), STDERR is tied (step 3 writes below any
# tie), /proc/self/task/PID/children cannot be read.
#
# Armed only in the executor, and only in its own pid: a process the
# call forks runs the same END list and exits normally.
#
# Copyright the prefork-interp contributors; see the project's
# top-level files for the licence.

package Prefork::Interp::FastExit;

use strict;
use warnings;

use B ();

use Prefork::Interp::Syscall ();

my $armed_pid;

# Perl's list of END blocks (PL_endav), as an array reference, once
# prepare() has found or made it; undef if it could not.
my $end_list;

# prepare(): at initialisation, in the setup process: finds perl's list
# of END blocks, which exists only once an END block has been compiled,
# compiling an empty one if the program has none.  Done here once, for
# the server and every executor it forks (the list stays the same array
# for the life of the process), this costs a warm call nothing; done in
# install(), the string eval and the lookups through B took about
# 0.3 ms of each.  An empty END block runs at the exit of whichever
# process runs the END blocks, doing nothing.
sub prepare () {
    my $end = B::end_av();
    if (!$end->isa('B::AV')) {
        # No END block anywhere yet: compiling one creates the list.
        eval 'END {} 1' or return;
        $end = B::end_av();
        return unless $end->isa('B::AV');
    }
    $end_list = $end->object_2svref;
    return;
}

# In the executor (or the setup process running the first call), just
# before returning into the script; prepare() has run in this process
# or before the fork that made it.
sub install () {
    return if defined $armed_pid;
    my $list = $end_list // return;
    $armed_pid = $$;
    push @$list, \&_at_end;
    return;
}

# rehearse(): in a spare waiting for its call, what _at_end runs before
# it exits, changing nothing (Prefork::Interp::Executors' _rehearse): the
# checks, and the flush of every handle, which fork has flushed already.
sub rehearse () {
    _has_children();
    my $tied = tied *STDERR;
    no warnings;
    exec {''} ();
}

sub _has_children () {
    open(my $fh, '<', "/proc/self/task/$$/children") or return 1;
    my $line = <$fh>;
    return defined $line && $line =~ m/[0-9]/;
}

sub _at_end {
    return unless defined $armed_pid && $$ == $armed_pid;
    return if ${^TAINT};
    return if tied *STDERR;
    return if $INC{'threads.pm'} && eval { threads->list };
    return if _has_children();

    my $status = $?;

    # Step 3, as perl_destruct does it: a failed flush of STDOUT is
    # reported and makes a status of 0 into 1.  close flushes, and says
    # whether that failed, without loading IO (IO and the Carp it pulls in
    # cost a cold call about 13 ms); we are about to _exit anyway.
    my $out = *main::STDOUT{IO};
    if ($out && defined fileno($out)) {
        local $! = 0;
        if (!close(*main::STDOUT)) {
            print STDERR "Unable to flush stdout: $!\n" if $! + 0;
            $status = 1 if $status == 0;
        }
    }

    # Step 4: PerlIO_flush(NULL); see above.
    {
        no warnings;
        exec {''} ();
    }

    Prefork::Interp::Syscall::exit_now($status & 0xFFFF);
}

1;

__END__

=head1 NAME

Prefork::Interp::FastExit - a call's exit without global destruction

=head1 DESCRIPTION

Internal to L<Prefork::Interp>; see L<Prefork::Interp/"FAST EXIT">.

=cut
