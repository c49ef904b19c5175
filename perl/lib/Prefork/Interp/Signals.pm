# Prefork::Interp::Signals - every signal matter of the server side in
# one place.
#
#  * In the script, at initialisation_complete: snapshot() records the
#    script's dispositions and mask (protocol.md 6.4 step 6 calls them
#    P).
#  * In the executor: die_with_parent() first; apply_dispositions() and
#    set_mask() give the call what protocol.md 6.4 steps 6 and 7 (and
#    6.6 without the extension) say.  Also in the setup process when it
#    runs the first call itself (protocol.md 7).
#  * In the server: block_all()/restore_mask() around forking an
#    executor (a spare, or one for a call), and, as it watches the calls
#    in progress (Prefork::Interp::Executors), deliver() for SIGP and
#    SIGG frames and hang_up() for a caller that has gone.
#
# Copyright the prefork-interp contributors; see the project's
# top-level files for the licence.

package Prefork::Interp::Signals;

use strict;
use warnings;

use Prefork::Interp::Syscall qw(ESRCH);

# Not POSIX, which takes a while to load and which a setup process
# running the first call itself does without: signal numbers from
# Config, the mask through Prefork::Interp::Syscall.

our $VERSION = '1.0.0';

#---------- signal numbers and names ----------

# Number => the name %SIG knows it by (the first one Config lists, so
# CHLD rather than CLD, NUM40 for a real-time one); and name => number.
# Config's sig_name and sig_num are in Config_heavy.pl, which takes a cold
# call about 10 ms to load: on the architectures Syscall knows, Linux's
# generic numbering (as perl's Config lists it with glibc) is used.
my (@NAME, %NUMBER);
BEGIN {
    my (@names, @nums);
    if (Prefork::Interp::Syscall::known_linux()) {
        @names = (qw(ZERO HUP INT QUIT ILL TRAP ABRT BUS FPE KILL USR1 SEGV
                     USR2 PIPE ALRM TERM STKFLT CHLD CONT STOP TSTP TTIN TTOU
                     URG XCPU XFSZ VTALRM PROF WINCH IO PWR SYS NUM32 NUM33
                     RTMIN),
                  (map { "NUM$_" } 35..63), qw(RTMAX IOT CLD POLL));
        @nums = (0..64, 6, 17, 29);
    } else {
        require Config;
        @names = split ' ', $Config::Config{sig_name};
        @nums = split ' ', $Config::Config{sig_num};
    }
    for my $i (0..$#names) {
        $NAME[ $nums[$i] ] //= $names[$i];
        $NUMBER{ $names[$i] } //= $nums[$i];
    }
}
use constant { SIGINT => $NUMBER{INT}, SIGKILL => $NUMBER{KILL},
               SIGSTOP => $NUMBER{STOP}, SIGCONT => $NUMBER{CONT},
               SIGFPE => $NUMBER{FPE} };

# The highest signal number (64 on Linux).
use constant MAX_SIGNAL => 64;

sub name_of ($) { $NAME[ $_[0] ] }

# Signals whose disposition can be changed: all but 0, SIGKILL, SIGSTOP.
sub catchable () {
    return grep { defined $NAME[$_] && $_ != SIGKILL && $_ != SIGSTOP }
        1..MAX_SIGNAL;
}

#---------- the script's dispositions (executor) ----------

# snapshot(INHERITED): the script's signal state now (at
# initialisation_complete), as a hash ref:
#   disp => { SIGNAL => 'default' | 'ignore' | 'handler' }
#   handler => { SIGNAL => the %SIG value (code ref or sub name) }
#   unset => { SIGNAL => 1 }  defaults that %SIG shows as undef (never
#            assigned), so that the call's %SIG reads as a direct run's
#   mask => [ SIGNAL, ... ]  blocked
#
# INHERITED: a hash ref whose keys are the names (as %SIG has them) of
# the signals ignored when Prefork::Interp was loaded.  By the time a
# script's "use Prefork::Interp" runs, nothing of the script has run
# but BEGIN blocks and earlier "use"s, so these were inherited from
# whoever started the setup process.  Our client starts it with every
# signal at its default; the 7.0.0 C client passes on its first
# caller's (a shell makes background jobs ignore SIGINT and SIGQUIT).
# They are that first caller's, not the script's choice, so they count
# as defaults (protocol.md 6.6: "no signal ignored by the caller").
#
# Except SIGFPE: perl itself ignores it as it starts (PERL_FPU_INIT;
# it gives programs it runs the original disposition back), so every
# direct run of a perl script has it ignored, and so must a call.
sub snapshot ($) {
    my ($inherited) = @_;
    my (%disp, %handler, %unset);
    foreach my $sig (catchable()) {
        my $v = $SIG{ $NAME[$sig] };
        if (!defined $v || $v eq '' || $v eq 'DEFAULT') {
            $disp{$sig} = 'default';
            $unset{$sig} = 1 unless defined $v;
        } elsif ($v eq 'IGNORE') {
            my $was = $inherited->{ $NAME[$sig] } && $sig != SIGFPE;
            $disp{$sig} = $was ? 'default' : 'ignore';
            $unset{$sig} = 1 if $was;
        } else {
            $disp{$sig} = 'handler';
            $handler{$sig} = $v;
        }
    }
    return { disp => \%disp, handler => \%handler, unset => \%unset,
             mask => [ blocked() ] };
}

# apply_dispositions(SNAPSHOT, CALLER_IGNORES): protocol.md 6.4 step 6.
# A handler or an IGNORE of the script's is kept; a default becomes
# IGNORE if the caller ignores the signal (CALLER_IGNORES, an array ref
# of numbers, empty for a v1 caller), otherwise it is SIG_DFL.  Whatever
# the server had is gone: a signal whose %SIG entry says something else
# is set.  One whose entry already says what it should is left alone:
# %SIG is what perl has set (or, for a signal it never set, what it
# found when SNAPSHOT read it), and our server changes dispositions only
# through %SIG, with local, undone before this runs.  Setting all of
# them took a warm call about 0.3 ms: perl blocks every signal around
# each change.
sub apply_dispositions ($$) {
    my ($snap, $caller_ignores) = @_;
    my %ign = map { $_ => 1 } @$caller_ignores;
    foreach my $sig (catchable()) {
        my $name = $NAME[$sig];
        my $d = $snap->{disp}{$sig} // 'default';
        # What %SIG should say: undef for a default the script never set.
        my $want = $d eq 'handler'               ? $snap->{handler}{$sig}
                 : $d eq 'ignore' || $ign{$sig}  ? 'IGNORE'
                 : $snap->{unset}{$sig}          ? undef
                 :                                 'DEFAULT';
        my $now = $SIG{$name};
        next if defined $want ? defined $now && $now eq $want : !defined $now;
        $SIG{$name} = $want // 'DEFAULT';
        # Deleting leaves the disposition alone and makes %SIG say undef,
        # as in a program that never touched it.
        delete $SIG{$name} unless defined $want;
    }
}

#---------- the parent's death ----------

# prctl(2) option: the signal the kernel sends us when our parent dies.
use constant PR_SET_PDEATHSIG => 1;

# die_with_parent(PARENT, SIGNAL, LOG): in an executor, first thing
# (protocol.md 4): the kernel is to send us SIGNAL when our parent
# PARENT (the server) dies (PR_SET_PDEATHSIG), so a server killed by
# anyone never leaves a call running with the caller's stdio after the
# client has returned; and if it died before we asked, we go at once
# (exit 127).  The executor asks for SIGKILL; a setup process running
# the first call itself, whose parent is the client, for SIGINT
# (protocol.md 7).  A failing prctl is logged to LOG.
sub die_with_parent ($$$) {
    my ($parent, $sig, $log) = @_;
    my $nr = Prefork::Interp::Syscall::number('prctl');
    if (defined $nr
        && syscall($nr, PR_SET_PDEATHSIG + 0, $sig + 0, 0, 0, 0) != 0) {
        $log->msg('warning', "prctl(PR_SET_PDEATHSIG): $!");
    }
    Prefork::Interp::Syscall::exit_now(127) if getppid() != $parent;
}

#---------- masks ----------

# blocked(): the signals blocked now, as numbers.
sub blocked () {
    return Prefork::Interp::Syscall::blocked_signals();
}

# set_mask(SIGNALS): blocks exactly these (array ref of numbers);
# protocol.md 6.4 step 7.  (The kernel silently leaves SIGKILL and
# SIGSTOP unblocked, and glibc keeps its own two real-time signals, 32
# and 33, which nobody else can block or ignore anyway: they are left
# out.)
sub set_mask ($) {
    my ($sigs) = @_;
    Prefork::Interp::Syscall::set_blocked_signals(@$sigs);
}

# block_all(): blocks every signal; returns the previous mask for
# restore_mask.  The server forks executors (spares included) with
# everything blocked, so a signal sent to the executor (a SIGP frame
# right after the fds) waits until the executor has its dispositions
# and its final mask, instead of meeting the server's.
sub block_all () {
    return Prefork::Interp::Syscall::block_signals(1..MAX_SIGNAL);
}

sub restore_mask ($) {
    my ($old) = @_;
    Prefork::Interp::Syscall::restore_signals($old);
}

#---------- the calls in progress (server) ----------

# deliver(TAG, SIGNAL, EXECUTOR): a SIGP frame kills the executor, a
# SIGG frame the call's process group (whose leader is the executor).
# Returns an error message for a signal number that is no signal, or
# undef.  A target that has gone (ESRCH) is no error: the call is
# finishing.
sub deliver ($$$) {
    my ($tag, $sig, $pid) = @_;
    return "signal number $sig is out of range"
        unless $sig >= 1 && $sig <= MAX_SIGNAL;
    if ($tag eq 'SIGG') {
        _kill_group($sig, $pid);
    } else {
        kill $sig, $pid;
    }
    return undef;
}

# hang_up(EXECUTOR): the caller has gone (protocol.md 2, "Hang-ups"):
# SIGINT to the call's group, and to the executor in case it left the
# group (or, with pty1, has not made it yet: _kill_group); then
# SIGCONT, in case they were stopped, or the SIGINT would wait for ever
# (the kernel does the same for a stopped job whose session leader has
# gone).
sub hang_up ($) {
    my ($pid) = @_;
    kill SIGINT, -$pid, $pid;
    kill SIGCONT, -$pid, $pid;
}

# _kill_group(SIGNAL, EXECUTOR): SIGNAL to the call's process group.
# With extension pty1 the executor makes that group itself, with its
# new session (protocol.md 9.3): until then there is no such group
# (ESRCH), and the signal goes to the executor alone (which has every
# signal blocked until its mask is set, so it keeps it).
sub _kill_group ($$) {
    my ($sig, $pid) = @_;
    kill $sig, $pid if !kill($sig, -$pid) && $! == ESRCH;
}

1;

__END__

=head1 NAME

Prefork::Interp::Signals - signal dispositions, masks, forwarding and
hang-ups, for Prefork::Interp (internal)

=head1 DESCRIPTION

Internal to L<Prefork::Interp>: the script's signal state taken at
initialisation, the dispositions and mask each call gets (protocol
extension call1, and plain v1), signals forwarded by the client, and
the hang-up.

=cut
