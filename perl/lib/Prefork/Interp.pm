# Prefork::Interp - script side of prefork-interp, for Perl.
#
# Public API (compatible with chiark-utils' Proc::Prefork::Interp),
# option checking, and the executor's entry into a call (also the setup
# process's, when it runs the first call itself).  The processes
# themselves are in Prefork/Interp/Setup.pm and Server.pm, the bytes on
# the wire in Prefork/Interp/Protocol.pm.  Documentation at the end.
#
# Copyright the prefork-interp contributors; see the project's
# top-level files for the licence.

package Prefork::Interp;

use strict;
use warnings;

use Exporter qw(import);

use Prefork::Interp::Log;

# What else this module needs is loaded when it is needed: a direct run
# loads nothing but this file and Prefork::Interp::Log (to check the
# options); a setup process, only what it takes to fork the server and,
# with extension inplace1, to run the first call itself (CALL_MODULES);
# the server loads the rest once forked (Prefork::Interp::Server).  So
# a cold call costs little more than a direct run.  Not even POSIX,
# which takes longer to load than all of these, nor Errno and Fcntl
# (about 2 ms together): Prefork::Interp::Syscall has the few functions
# and constants needed.  FastExit (and the B it loads, about 3 ms
# together) is worth its cost even here: the first call, run in place,
# shares its pages with the server it has just forked, so perl's global
# destruction would copy every page it touches, as in a served call (with
# DateTime and friends loaded: 14 ms more than a direct run's).
use constant CALL_MODULES => qw(Prefork/Interp/Syscall.pm
                                Prefork/Interp/Protocol.pm
                                Prefork/Interp/Signals.pm
                                Prefork/Interp/Attributes.pm
                                Prefork/Interp/FastExit.pm
                                Prefork/Interp/Setup.pm);

our $VERSION = '1.0.0';

our @EXPORT = qw(
    prefork_initialisation_complete
    prefork_autoreload_also_check
);

# Tunables, documented under "PACKAGE VARIABLES".
our $REQUEST_TIMEOUT = 5;
our $USE_PIDFD = 1;
our $USE_INOTIFY = 1;
our $START_DELAY = 0.1;

# Calls served at once by default, per CPU this process may run on: calls
# often wait (on I/O, on their callers), so a few per CPU keep the machine
# busy, while a burst of callers still cannot fork without bound.  (7.0.0:
# 4, whatever the machine.)
use constant CALLS_PER_CPU => 8;

# The CPUs this process may run on: its affinity (Cpus_allowed_list in
# /proc/self/status, such as "0-3,8"), at least 1.
sub _cpus () {
    open(my $fh, '<', '/proc/self/status') or return 1;
    while (my $line = <$fh>) {
        next unless $line =~ m/\ACpus_allowed_list:\s*(\S+)/;
        my $n = 0;
        foreach my $range (split /,/, $1) {
            my ($lo, $hi) = $range =~ m/\A([0-9]+)(?:-([0-9]+))?\z/ or next;
            $n += ($hi // $lo) - $lo + 1;
        }
        return $n > 0 ? $n : 1;
    }
    return 1;
}

# Spare executors a server keeps by default (Prefork::Interp::Executors):
# enough that a call rarely waits for a fork, few enough that an idle
# server costs little.  As the Python library's DEFAULT_POOL_SIZE.
use constant DEFAULT_POOL_SIZE => 2;

# Option defaults: the same in the three libraries (docs/options.md,
# which t/07-options.t compares with these).  idle_timeout: an hour
# (7.0.0: one megasecond, about eleven days, which left idle servers
# holding their memory for days).  request_timeout's default is
# $REQUEST_TIMEOUT, the older way to set it.
my %DEFAULTS = (
    max_servers      => CALLS_PER_CPU * _cpus(),
    pool_size        => DEFAULT_POOL_SIZE,
    idle_timeout     => 3600,
    request_timeout  => undef,
    max_errors       => 100,
    autoreload       => 1,
    autoreload_extra => [],
    log_facility     => 'LOG_USER',
    log_file         => undef,
    fast_exit        => 1,
);

# Other names of options: 7.0.0's.
my %ALIASES = (autoreload_inc => 'autoreload');

# Options whose undef is a value of its own, not the default:
# idle_timeout (never), log_facility (no syslog), log_file (none).
my %UNDEF_MEANS = (idle_timeout => 1, log_facility => 1, log_file => 1);

# PATH made absolute, from the current directory (File::Spec's rel2abs,
# loaded only for a relative PATH).
sub _abs ($) {
    my ($path) = @_;
    return $path if $path =~ m{\A/};
    require File::Spec;
    return File::Spec->rel2abs($path);
}

# The current directory: Linux shows it in /proc (Cwd, loaded only
# where that fails, takes a while to load).
sub _cwd () {
    my $cwd = readlink '/proc/self/cwd';
    return $cwd if defined $cwd && $cwd =~ m{\A/} && $cwd !~ m/ \(deleted\)\z/;
    require Cwd;
    return Cwd::getcwd();
}

# $0 as perl set it, and whether perl was given a script file at all
# ("-e" and "-" mean it was not); recorded when the module is loaded,
# before the script can change $0 or the current directory.  The
# script's absolute path is made only under prefork-interp (the server
# watches the file), from the directory we were loaded in if $0 is
# relative.
my $LOAD_TIME_0 = $0;
my $HAS_SCRIPT = !($0 eq '-e' || $0 eq '-');
my $LOAD_CWD;
if ($HAS_SCRIPT && defined $ENV{PREFORK_INTERP} && $0 !~ m{\A/}) {
    $LOAD_CWD = _cwd();
}

# The signals ignored now, by their names in %SIG: inherited from
# whoever started us (see Prefork::Interp::Signals::snapshot).
my %INHERITED_IGNORE = map { $_ => 1 }
    grep { my $v = $SIG{$_}; defined $v && $v eq 'IGNORE' } keys %SIG;

my @also_check;        # from prefork_autoreload_also_check
my $became_server = 0; # set once this process tree has daemonised
my $signal_snapshot;   # the script's signal state at initialisation

sub prefork_autoreload_also_check {
    push @also_check, map { _abs($_) } @_;
    return;
}

sub prefork_initialisation_complete {
    my %opt = _check_options(@_);

    # Already a call process of a server: there is nothing left to do.
    return if $became_server;

    # Not run by prefork-interp: carry on as an ordinary script.
    my $env_name = 'PREFORK_INTERP';
    my $value = $ENV{$env_name};
    return unless defined $value;

    require $_ foreach CALL_MODULES;
    my $fds = eval { Prefork::Interp::Protocol::parse_env_value($value) };
    if (!$fds) {
        my $e = $@;
        chomp $e;
        _croak($e);
    }
    foreach my $which (qw(listen call watchi watche)) {
        Prefork::Interp::Syscall::is_open($fds->{$which})
            or _croak("$env_name names fd $fds->{$which} ($which), which"
                      . ' is not open');
    }
    # Nothing the script starts from here on should think it is a
    # prefork-interp setup process.
    delete $ENV{$env_name};

    my $title = $HAS_SCRIPT ? $LOAD_TIME_0 : 'perl';
    my ($ident) = $title =~ m{([^/]*)/*\z};
    # The log file: the option, or the environment of this run.
    my $log_file = $opt{log_file};
    $log_file = $ENV{PREFORK_INTERP_LOG}
        if !defined $log_file && defined $ENV{PREFORK_INTERP_LOG}
           && length $ENV{PREFORK_INTERP_LOG};
    # Without syslog and a log file: the run directory's "log", beside
    # the server record (docs/options.md, "Where messages go").
    my $fallback;
    $fallback = "$1/log" if defined $fds->{record}
                         && $fds->{record} =~ m{\A(.*?)/+[^/]*\z}s
                         && length $1;
    my $log = Prefork::Interp::Log->new(
        ident    => length $ident ? $ident : $title,
        facility => $opt{log_facility},
        file     => defined $log_file ? _abs($log_file) : undef,
        fallback => $fallback,
    );

    my %cfg = (
        fds             => $fds,
        max_servers     => $opt{max_servers},
        pool_size       => $opt{pool_size} + 0,
        idle_timeout    => $opt{idle_timeout},
        max_errors      => $opt{max_errors},
        reload_paths    => sub { _reload_paths(\%opt) },
        reload_files    => sub { _reload_files(\%opt, @_) },
        request_timeout => $opt{request_timeout},
        use_pidfd       => $USE_PIDFD,
        use_inotify     => $USE_INOTIFY,
        start_delay     => $START_DELAY,
        log             => $log,
        title           => $title,
        rehearse        => \&_rehearse_call,
    );

    # What protocol.md 6.4 step 6 calls P: the script's dispositions
    # now, before the server changes any.
    $signal_snapshot = Prefork::Interp::Signals::snapshot(\%INHERITED_IGNORE);

    # Once here, for the server and every executor it will fork, rather
    # than in each executor: see Prefork::Interp::FastExit::prepare.
    Prefork::Interp::FastExit::prepare() if $opt{fast_exit};

    $became_server = 1;
    my $request = eval { Prefork::Interp::Setup::start(\%cfg) };
    if (!$request) {
        # Still the setup process: the client shows our stderr.
        $became_server = 0;
        my $e = $@;
        chomp $e;
        _croak($e);
    }
    _enter_call($request);
    # Last thing before the script runs the call: from here on, how the
    # executor ends is the script's, up to the end of its END blocks.
    Prefork::Interp::FastExit::install() if $opt{fast_exit};
    return;
}

#---------- options ----------

# croak with our prefix; the exit status of a script that dies of it is
# 255, not whatever errno happened to be.
sub _croak ($) {
    my ($msg) = @_;
    require Carp;
    $! = 0;
    $? = 0;
    Carp::croak("prefork_initialisation_complete: $msg");
}


# _check_options(OPTIONS): the options given, checked, with the
# defaults of those not given (and autoreload_inc as autoreload).
# croaks on an unknown option or an ill-typed value.
sub _check_options {
    @_ % 2 == 0 or _croak('options must be NAME => VALUE pairs');
    my %given = @_;
    foreach my $name (sort keys %given) {
        my $real = $ALIASES{$name} // $name;
        exists $DEFAULTS{$real} or _croak("unknown option '$name'");
        next if $real eq $name;
        exists $given{$real}
            and _croak("options '$real' and '$name' are the same: give"
                       . ' one');
        $given{$real} = delete $given{$name};
    }
    my %opt = (%DEFAULTS,
               map { defined $given{$_} || $UNDEF_MEANS{$_}
                     ? ($_ => $given{$_}) : () } keys %given);
    $opt{request_timeout} //= $REQUEST_TIMEOUT;

    foreach my $name (qw(max_servers max_errors)) {
        $opt{$name} =~ m/\A-?[0-9]+\z/
            or _croak("$name must be an integer, not '$opt{$name}'");
    }
    $opt{pool_size} =~ m/\A[0-9]+\z/
        or _croak("pool_size must be an integer, 0 or more, not"
                  . " '$opt{pool_size}'");
    # undef, or a negative number: never.
    $opt{idle_timeout} //= -1;
    $opt{idle_timeout} =~ m/\A-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)\z/
        or _croak('idle_timeout must be a number of seconds, not'
                  . " '$opt{idle_timeout}'");
    $opt{request_timeout} =~ m/\A(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)\z/
        or _croak('request_timeout must be a number of seconds, 0 or'
                  . " more, not '$opt{request_timeout}'");
    ref($opt{autoreload_extra}) eq 'ARRAY'
        or _croak('autoreload_extra must be an array reference');
    if (defined $opt{log_facility} && length $opt{log_facility}) {
        defined Prefork::Interp::Log::facility_code($opt{log_facility})
            or _croak("log_facility '$opt{log_facility}' is not a syslog"
                      . ' facility');
    }
    return %opt;
}

# Files whose change means the server is out of date (see
# Prefork::Interp::Reload): the script, the interpreter running it, and
# unless told otherwise the modules loaded (%INC, as it is now), as
# they were named: relative ones (from a relative "use lib", or
# autoreload_extra) from the current directory, but the script from
# the one we were loaded in.  Cheap (no module to load): the server
# records their identities as soon as the setup process has forked it.
sub _reload_paths ($) {
    my ($opt) = @_;
    my @paths;
    if ($HAS_SCRIPT) {
        push @paths, defined $LOAD_CWD ? "$LOAD_CWD/$LOAD_TIME_0"
                                       : $LOAD_TIME_0;
    }
    push @paths, $^X;
    if ($opt->{autoreload}) {
        # Entries can be undef (failed require) or refs (@INC hooks).
        push @paths, grep { defined && !ref } values %INC;
    }
    push @paths, @also_check, @{ $opt->{autoreload_extra} };
    return @paths;
}

# _reload_files(OPT, BEFORE): in the server, right after the fork, once
# it has loaded its own modules (so they are among them, %INC being
# taken now; the server loads nothing more), before anything changes
# directory: the files of _reload_paths, absolute and each once, as
# Prefork::Interp::Reload takes them; and BEFORE, identities by the
# names _reload_paths gave, by those absolute names.  The perl binary
# is named by its real path: upgrading perl replaces it, and the server
# would run on with the old one.
sub _reload_files ($$) {
    my ($opt, $before) = @_;
    require Cwd;
    require File::Spec;
    my (@files, %seen, %ident);
    foreach my $path (_reload_paths($opt)) {
        my $abs = File::Spec->rel2abs($path);
        $abs = Cwd::abs_path($abs) // $abs if $path eq $^X;
        $ident{$abs} //= $before->{$path} if $before;
        push @files, $abs unless $seen{$abs}++;
    }
    return (\@files, \%ident);
}

#---------- entering a call (executor) ----------

# Upstream part 4 step 9: runs in the executor once serve() has
# returned, so the script's own signal handlers and $0 are back.
sub _enter_call ($) {
    my ($request) = @_;

    # 4.9.i and iii: the caller's stdin, stdout and stderr.
    _install_std_handles($request->{fds});
    Prefork::Interp::Syscall::close_fd($_) foreach @{ $request->{fds} };

    # 4.9.ii: environment and arguments, as a direct run would have
    # them.  The request is split here, in the caller's process, not in
    # the server (protocol.md 4.1, item 6).  Each name is
    # set once (a repeated one with its last value); perl's %ENV then
    # costs a search of the environment per name, which only a caller
    # with a huge number of distinct names notices.
    my ($names, $values) = Prefork::Interp::Protocol::request_env(
        $request->{body}, $request->{env_end});
    my @args = Prefork::Interp::Protocol::request_args($request->{body},
                                                       $request->{env_end});
    undef ${ $request->{body} };
    %ENV = ();
    $ENV{$_} = $values->{$_} foreach @$names;
    undef $values;
    undef $names;
    # On the wire: interpreter, [script,] arguments.
    my $renamed = $0 ne $LOAD_TIME_0;
    my @words = $request->{in_place} || $renamed ? () : @args;
    shift @args;                          # the interpreter
    if ($HAS_SCRIPT && @args) {
        my $script = shift @args;
        # Unless the script renamed itself during initialisation, $0
        # is the script as this caller named it (which differs from the
        # server's only with -g).
        # (Not assigned when it is already: perl would rewrite the
        # command line of a first call run in place, which is the
        # caller's.)
        $0 = $script if !$renamed && $0 ne $script;
    }
    @ARGV = @args;
    # A served call's process was the server's (or a spare's), titled
    # as such: it shows this call's command line, as a direct run would
    # (unless the script set $0, which shows instead).  The first call,
    # run in place, has the caller's already.
    Prefork::Interp::Title::as_call(@words) if @words;

    # The caller's process attributes (protocol.md 6.4 steps 2 to 7,
    # and with pty1 the pty, 9.3; step 1, the process group or with
    # pty1 the new session, was done as we took the call, or, run in
    # place by the setup process, it is the caller's, as in a direct
    # run).
    _apply_caller_attributes($request);

    # What perl itself sets up per run.
    $^T = time;
    srand();    # otherwise every call would draw the same numbers
    $? = 0;
    $@ = '';
    $! = 0;
    return;
}

# _rehearse_call(REQUEST): in a new spare, the made-up call of
# Prefork::Interp::Executors' _rehearse (stdio /dev/null, umask 022,
# nice 0, one limit): what _enter_call and _apply_caller_attributes run,
# changing nothing.  The standard handles are reopened on /dev/null,
# which they are in a spare already (the server's); the umask, the limit,
# the nice value, the signal dispositions and the mask are set to what
# they are.
sub _rehearse_call ($) {
    my ($request) = @_;
    # Only where the handles are on fds 0-2 (the server's /dev/null): a
    # reopen then takes the fd it frees and cannot fail, and a failure
    # would end the process (_install_stdio), which a rehearsal must not.
    _install_std_handles($request->{fds})
        if (fileno(STDIN) // -1) == 0 && (fileno(STDOUT) // -1) == 1
           && (fileno(STDERR) // -1) == 2;
    Prefork::Interp::Protocol::request_env($request->{body},
                                           $request->{env_end});
    Prefork::Interp::Protocol::request_args($request->{body},
                                            $request->{env_end});
    my $log = $request->{log};
    Prefork::Interp::Attributes::set_umask(umask);
    foreach my $r (@{ $request->{call1}{attr}{rlimits} // [] }) {
        my @now = Prefork::Interp::Attributes::get_rlimit($r->[0]);
        Prefork::Interp::Attributes::set_rlimits([ [ $r->[0], @now ] ], $log)
            if @now == 2;
    }
    Prefork::Interp::Attributes::set_nice(
        getpriority(Prefork::Interp::Attributes::PRIO_PROCESS(), 0));
    foreach my $sig (Prefork::Interp::Signals::catchable()) {
        my $name = Prefork::Interp::Signals::name_of($sig);
        my $v = $SIG{$name};
        $SIG{$name} = $v if defined $v;
    }
    Prefork::Interp::Signals::set_mask([ Prefork::Interp::Signals::blocked() ]);
    Prefork::Interp::FastExit::rehearse();
}

# protocol.md 6.4 steps 2 to 7, in that order, with pty1 the pty's
# slave after step 2 (protocol.md 9.3).  Without call1 (a v1 client,
# protocol.md 6.6) only the signal steps: nothing ignored by the
# caller, and the script's own mask.  Every signal has been blocked
# since the server forked us (or the setup process took the call in);
# step 7 unblocks them.
sub _apply_caller_attributes ($) {
    my ($request) = @_;
    my $log = $request->{log};
    # From now on the caller's stderr is ours: log only.
    $log->to_stderr(0);
    my $call1 = $request->{call1};
    my $attr = $call1 ? $call1->{attr} : {};
    if ($call1) {
        # The received copy of the slave first out of the way of the
        # extra fds, which are installed at their numbers first.
        my $slave = $call1->{slave};
        $slave = Prefork::Interp::Attributes::move_above(
            $slave, $call1->{extra_fds}, $log) if defined $slave;
        Prefork::Interp::Attributes::install_fds($call1->{extra_fds}, $log);
        Prefork::Interp::Attributes::install_pty($attr->{pty}, $slave, $log)
            if defined $slave;
        Prefork::Interp::Attributes::set_umask($attr->{umask})
            if defined $attr->{umask};
        Prefork::Interp::Attributes::set_rlimits($attr->{rlimits}, $log)
            if defined $attr->{rlimits};
        Prefork::Interp::Attributes::set_nice($attr->{nice})
            if defined $attr->{nice};
    }
    Prefork::Interp::Signals::apply_dispositions($signal_snapshot,
                                                 $attr->{sigign} // []);
    Prefork::Interp::Signals::set_mask($attr->{sigmask}
                                       // $signal_snapshot->{mask});
}

# _install_std_handles([FD0, FD1, FD2]): STDIN, STDOUT and STDERR on
# copies of these fds.  Reopening the perl handles keeps fds 0, 1 and 2,
# keeps the I/O layers the script pushed during initialisation (e.g.
# "use open ':std'"), and lets perl choose line buffering afresh for a
# terminal.
sub _install_std_handles ($) {
    my ($fd0, $fd1, $fd2) = @{ $_[0] };
    _install_stdio(\*STDIN,  '<', $fd0, 0, $fd2);
    _install_stdio(\*STDOUT, '>', $fd1, 1, $fd2);
    _install_stdio(\*STDERR, '>', $fd2, 2, $fd2);
}

sub _install_stdio ($$$$$) {
    my ($fh, $mode, $src, $want, $errfd) = @_;
    return if open($fh, "$mode&", $src) && fileno($fh) == $want;
    # The script closed this handle during initialisation and perl
    # chose another fd: put it where the caller expects it.
    if (defined fileno($fh)
        && defined Prefork::Interp::Syscall::dup2(fileno($fh), $want)) {
        my $other = fileno($fh);
        return if open($fh, "$mode&", $want) && fileno($fh) == $want
            && (Prefork::Interp::Syscall::close_fd($other), 1);
    }
    my $msg = "prefork: cannot set up fd $want for this call: $!\n";
    Prefork::Interp::Syscall::write_fd($errfd, $msg);
    Prefork::Interp::Syscall::exit_now(127);
}

1;

__END__

=encoding utf8

=head1 NAME

Prefork::Interp - script side of prefork-interp, for Perl

=head1 SYNOPSIS

    #!/usr/local/bin/prefork-interp -U,perl
    use strict;
    use warnings;
    use Prefork::Interp;

    # ... expensive initialisation: use statements, loading data ...

    prefork_initialisation_complete();

    # ... per-call code: @ARGV, %ENV, STDIN, STDOUT, STDERR and $0
    # are those of this invocation ...

=head1 DESCRIPTION

C<prefork-interp> is a C<#!> "interpreter" wrapper that pays a
script's start-up cost once.  The first invocation runs the script as
usual until it calls C<prefork_initialisation_complete>, which forks
a server listening on a per-user socket.  Every later invocation is
served by a fresh fork of that initialised process, with the caller's
standard input, output and error, arguments and environment; and the
caller's exit status is the script's.  (The server forks a few of those
processes ahead of time, while it is idle, so a call does not wait for a
fork: see C<pool_size>.)  With this project's client the
first invocation then carries on in the process that initialised the
script, as a direct run would (so it costs about what a direct run
costs), while the server waits until a second invocation comes or
0.1 s has passed before it loads its modules, so that it does not take
the CPU from the first; with chiark-utils' client, that process exits
and the server serves the first invocation too.

(This project's client also takes interpreter arguments in the C<#!>
line, as in C<-U,perl,-w>; chiark-utils' 7.0.0 client does not.)

Prefork::Interp is the Perl side of that arrangement.  It has the same
API as C<Proc::Prefork::Interp> from chiark-utils, works with both
prefork-interp clients (the Rust one from this project and chiark-utils'
C one), and fixes that library's defects; see
L</"DIFFERENCES FROM Proc::Prefork::Interp">.

=head1 FUNCTIONS

Both functions are exported by default.

=over

=item C<< prefork_initialisation_complete( I<%options> ) >>

Marks the end of initialisation.

When the script was not started by C<prefork-interp> (the
C<PREFORK_INTERP> environment variable is not set), it checks the
options and returns at once: the script simply runs on, as a normal
program.  See L</"STANDALONE OPERATION">.

Otherwise it forks the server, and never returns in the server.
Instead it returns once for each invocation of the script, each time
in a new process, set up as described in L</"AFTER INITIALISATION">;
except the first, which with this project's client (protocol extension
C<inplace1>) it returns in the process that called it, set up the same
way; with chiark-utils' client that process exits, and the client
carries on.

Options, given as a list of name-value pairs.  The three libraries of
prefork-interp (Python, Perl, Rust) take the same options, with the
same names, meanings and defaults (F<docs/options.md> in the source).

=over

=item C<< max_servers => I<N> >>

At most I<N> invocations are served at once; more are taken in and
wait until one finishes, never refused.  0 or a negative number: no
limit.  Default: 8 per CPU the process may run on (its CPU affinity),
at least 8, so parallel callers are not throttled below what the
machine can run (C<Proc::Prefork::Interp> 7.0.0: 4).

=item C<< pool_size => I<N> >>

How many spare executors the server keeps: copies of the server made
while it is idle, each waiting (asleep, using no CPU) for a call, so
that a call is handed to a process that already exists instead of
waiting for a fork; the server asks for a new spare once it has handed
a call over and no call that started less than 0.1 s ago is running
(so that the fork delays no short call's end).  A child of the server
that does nothing else, the forker, makes them (with
C<clone(CLONE_PARENT)>, so they are the server's children all the
same), so that the server never forks while it serves: every page it
wrote after a fork would be copied, on the next call's way.  Where
that cannot be relied on (not glibc 2.34 or later on x86_64, aarch64
or riscv64), or if the forker fails, the server forks them itself.
Each costs little memory: it shares its pages with the server until it
runs a call (the forker keeps about 1 MiB of its own).  0 means none:
a process is forked for each call when it comes.  More calls at once
than spares are served too, by processes forked for them.  Spares
exit when the server does, running nothing of the script (no C<END>
block, no destructor).  (Not in C<Proc::Prefork::Interp>.)  Default: 2.

=item C<< idle_timeout => I<SECONDS> >>

If no invocation has run for this long, the server quits, and the next
invocation starts the script afresh.  Fractions are allowed; C<undef>
or a negative number means never.  Default: 3600 (one hour: a server
that quits costs the next caller about a direct run, while an idle one
keeps its memory; C<Proc::Prefork::Interp> 7.0.0: 1000000, about
eleven days).

=item C<< request_timeout => I<SECONDS> >>

A caller must send its whole request within this time of being
accepted, or it is dropped (quietly: one "debug" log line).  Fractions
are allowed; 0 means no limit.  Default: 5, or
C<$Prefork::Interp::REQUEST_TIMEOUT> if the script set it (see
L</"PACKAGE VARIABLES">).  (Not in C<Proc::Prefork::Interp>.)

=item C<< max_errors => I<N> >>

If the server fails to accept, or to fork for a call (when no spare is
left), more than I<N> times in a row, it logs the fact and quits (the
next invocation starts a fresh server).  A served call resets the count.  Negative means no
limit.  Default: 100.

=item C<< autoreload => I<BOOL> >>

Whether the files in C<%INC> (the modules the script has loaded) are
checked for changes (the script and the perl binary always are).
C<autoreload_inc> is another name for it, C<Proc::Prefork::Interp>'s;
give one of the two.  Default: true.  See L</"AUTOMATIC RELOADING">.

=item C<< autoreload_extra => [ I<PATHS> ] >>

More files to check for changes, as an array reference.  Default: none.

=item C<< log_facility => I<FACILITY> >>

The syslog facility for the server's messages, as
L<Sys::Syslog/openlog> names them: C<"LOG_USER">, C<"user">,
C<"local3"> and so on.  C<undef> (or the empty string) turns syslog
off.  Default: C<"LOG_USER">.  See L</"MESSAGES">.

=item C<< log_file => I<PATH> >>

Also write the server's messages to I<PATH> (see L</"MESSAGES">).
When the option is not given (or C<undef>), the C<PREFORK_INTERP_LOG>
environment variable of the run that starts the server gives it.
(Not in C<Proc::Prefork::Interp>.)  Default: none.

=item C<< fast_exit => I<BOOL> >>

Whether each call ends without perl's global destruction; see
L</"FAST EXIT">.  (Not in C<Proc::Prefork::Interp>.)  Default: true.

=back

An unknown option, or a value of the wrong kind, is an error
(C<croak>), also when running standalone, so mistakes show up early.

=item C<< prefork_autoreload_also_check( I<PATHS> ) >>

Adds files to check for changes (see L</"AUTOMATIC RELOADING">); call
it before C<prefork_initialisation_complete>, for example right after
reading a data file.  Relative paths are taken relative to the current
directory at the time of the call.

=back

=head1 BEFORE INITIALISATION

The script runs as it would directly, with two differences: standard
input is F</dev/null>, and standard output goes to the caller's
standard error.

Initialisation should load modules and prepare data, but must not
depend on anything that varies between invocations: the arguments, the
environment, the current time, the terminal.  It must not open
connections to databases or other services either: every invocation
would share them.

Output printed during initialisation is flushed before the server
starts, so it is seen (on standard error) by the first caller only.

=head1 AFTER INITIALISATION

Each return from C<prefork_initialisation_complete> is one invocation,
in its own process (the I<executor>; for the first invocation with
this project's client, the process that initialised the script),
which behaves like a direct run of the script (C<perl script.pl ...>)
by the same caller.  (Served invocations run in a spare: a process
the server forked before the invocation came, see C<pool_size>; nothing
of the invocation reaches it before it is handed over.)  With this
project's C<prefork-interp> client, which speaks protocol extension
C<call1>, the executor has:

=over

=item *

C<STDIN>, C<STDOUT> and C<STDERR> on the caller's file descriptors 0,
1 and 2.  I/O layers pushed on them during initialisation (for example
by C<use open qw(:std :utf8)>) and C<$|> are kept; buffering is chosen
afresh (line-buffered for a terminal).

=item *

The caller's other open file descriptors (C<3E<gt>file>, a pipe on fd
4, ...) at the same numbers, not close-on-exec.  Where the script
itself has that number open (a file it opened while initialising), the
script's descriptor stays and the server logs a warning.  A pipe's
reader sees end-of-file when the call ends.

=item *

When the caller runs in a terminal (one of its descriptors 0, 1 and 2
is its controlling terminal) and the client offers protocol extension
C<pty1> with C<call1>, a terminal of its own: the client makes a
pseudo-terminal for the invocation and relays between it and the
caller's terminal; its slave side replaces the caller's terminal on
those of descriptors 0, 1 and 2 that were it, and is the executor's
controlling terminal, in a session of its own.  So opening
F</dev/tty>, terminal job control (^C, ^Z and background reads
stopping the job, through the kernel: while the caller's job is in the
background of its terminal, the script's is in the background of the
pseudo-terminal) and window-size changes work as in a direct run.  The descriptors that were not the caller's terminal
(a pipe on standard input, say) are passed as they are.

=item *

C<@ARGV> and C<%ENV> exactly as the caller passed them, and C<$0> the
script's name as the caller gave it, just as when run directly (unless
the script set C<$0> itself during initialisation, which is kept).

=item *

The caller's umask, resource limits, nice value and blocked-signal
mask.  A hard limit above the server's, which the kernel refuses
without privilege, becomes the server's (and the soft one no higher);
a nice value lower than the server's needs privilege too.

=item *

Signal dispositions as a direct run would have them: a handler the
script set in C<%SIG> before C<prefork_initialisation_complete> is
kept, and so is an C<IGNORE> the script set (and perl's own on
C<SIGFPE>); every other signal is ignored where the caller ignores it
and at its default otherwise.  C<%SIG> reads as it would in a direct
run.  (An C<IGNORE> already in force when Prefork::Interp was loaded
was inherited from whoever started the server, not chosen by the
script, and counts as a default: set your own after C<use
Prefork::Interp>.)

=item *

The signals sent to the client: with C<kill>, every catchable one but
C<SIGCHLD> reaches the script; those a terminal sends to its foreground
job (^C, ^\, ^Z, a resize, a hang-up) reach the script and the
processes it started in its process group.  If the script stops (^Z,
C<kill -TSTP>), the client stops too, and C<fg> or C<bg> continue both.

=item *

C<$^T> is the time of the call, and the random number generator is
reseeded (call C<srand> after initialisation if you want a fixed
sequence).

=item *

Everything else as the script set it up: loaded modules, data, open
files, the current directory.  No file descriptor of the library's is
left open.

=back

The script's exit status, or the signal that killed it, is what the
caller sees, exactly; C<exit> in C<END> blocks, C<die>, and C<exec> of
another program all behave as when run directly.  Unless C<fast_exit>
is false, global destruction is skipped: see L</"FAST EXIT">.

The executor leads a process group of its own, in a session without a
controlling terminal (with C<pty1>, it leads a session of its own too,
whose controlling terminal is the pseudo-terminal).  If the client goes
away (killed with
C<SIGKILL>, or its caller gave up), the executor's process group gets
C<SIGINT> (and then C<SIGCONT>, in case it was stopped): the script
should then stop promptly, without further I/O on its standard
descriptors.

The first invocation, run in place, is the client's child instead,
leading its own process group in the caller's session, with its
controlling terminal, as a shell's job; it gets C<SIGINT> if the client
goes away.

With chiark-utils' C client, which speaks plain protocol v1, the
executor gets standard input, output and error, arguments and
environment only; its umask, resource limits and nice value are the
server's (the first caller's), its signal mask is the script's at
C<prefork_initialisation_complete>, its dispositions follow the rule
above as if the caller ignored nothing (so C<SIGINT> is at its
default), and signals sent to the client are not passed on.

=head1 FAST EXIT

At exit, perl first unwinds the running code (the lexicals of every
scope, the main file's included, are freed, and their C<DESTROY> runs
with C<${^GLOBAL_PHASE}> C<RUN>), then runs the C<END> blocks, flushes
standard output and then every other handle, and only then destroys
every object still alive and frees everything else (global destruction,
phase C<DESTRUCT>), closes the handles and calls C<exit()>.  In a call,
global destruction visits everything the server loaded, and, in a
forked process, copies the pages it touches: about 12 ms per call with
DateTime loaded, against about 1 ms for C<POSIX::_exit>.

So, with C<fast_exit> true (the default), each call does everything up
to global destruction exactly as perl does, and then C<POSIX::_exit>:

=over

=item *

the exit status is the same for C<exit>, falling off the end, C<die>
(message on standard error; status from C<$!>, C<<< $? >> 8 >>> or
255) and C<exit> or C<die> inside an C<END> block;

=item *

every C<END> block runs, in perl's order (also those compiled during
the call), and sees and may change C<$?>;

=item *

standard output is flushed first; if that fails (a closed pipe with
C<SIGPIPE> ignored, say), C<Unable to flush stdout: I<error>> is
printed on standard error and a status of 0 becomes 1, as perl does;
then every other handle with buffered output is flushed (bareword, in a
package variable, lexical), errors ignored, as perl does;

=item *

C<DESTROY> of objects freed before the end (lexicals, file-scoped ones
included; C<undef>; C<local> restored; temporaries; a C<die> object)
runs as usual;

=item *

C<exec>, C<POSIX::_exit> and death by a signal are not affected.

=back

What is skipped, exactly, is what perl does after those flushes: global
destruction.  C<DESTROY> methods that would run with
C<${^GLOBAL_PHASE}> C<DESTRUCT> do not run: those of objects still
alive after the C<END> blocks, reachable from package variables
(C<our $obj>, a module's cache), globs, reference cycles or leaks,
whether the server or the call created them.  Nor do C<atexit>
handlers of C libraries, nor are their C stdio buffers flushed.  An
object whose C<DESTROY> matters (a L<File::Temp> object that removes its
file, a buffered writer, a lock) should be held in a lexical, or freed
or closed by the script; or set C<fast_exit> to false.

The library steps aside, and perl exits normally (same result, usual
cost), where global destruction can have effects it does not check:
when the call has child processes (a piped open left open would be
waited for), perl threads are running, taint mode is on, C<STDERR> is
tied, or F</proc/self/task/I<pid>/children> cannot be read.
Processes the call forks exit normally.

How: in the call's process only, the library appends a code reference
to perl's list of C<END> blocks (through L<B>); perl runs that list
from its start and adds C<END> blocks compiled later at its start, so
this one runs last.  It flushes the handles (all of them through
C<exec {''} ()>, an C<exec> of no program, which flushes every handle
and returns at once) and calls C<_exit($?)> (as C<POSIX::_exit>
does).  Never in the
server, nor in a standalone run.  Perl keeps no such list until an
C<END> block has been compiled: if the program has none, the library
compiles an empty one when C<prefork_initialisation_complete> is called
under prefork-interp, once for the server and all its calls.

=head1 AUTOMATIC RELOADING

A call runs the code a direct run would run at that moment.  The
server depends on the script, the perl binary running it (C<$^X>, by
its real path), every file in C<%INC> when
C<prefork_initialisation_complete> is called (unless C<autoreload>
is false), and the files given through C<autoreload_extra> or
C<prefork_autoreload_also_check>.  When it starts it records each
one's identity: device, inode, size, modification and status-change
times (to the nanosecond where the system has them), or its absence;
the process that initialised the script records them too, just before
it forks the server, and a file that differs when the server starts
(changed while the first invocation ran, say) is a reason to reload.
Before it takes in each new connection it checks whether any of them
has changed; if one has, it logs C<reloading: FILE changed> and quits
without answering, and the client starts a fresh server, which runs the
script from the top.  Calls it already held are still served by it.

A reload is triggered by any rewrite or replacement of such a file,
whatever dates it carries (C<tar -x>, C<cp -p>, C<rsync -t>,
C<git checkout> of an older commit, C<mv> of an older file over it, a
rewrite followed by C<touch -d>, a perl upgrade); any write to it; a
change of its metadata (C<chmod>, C<touch>: they change the
status-change time, which cannot be set back); its removal, or its
appearance; a directory or symbolic link on its path renamed, removed
or replaced; and, as in C<Proc::Prefork::Interp>, a modification time
later than the server's start.  A file that could not be checked at
start (permission denied) is a reason to reload when it can be, or
fails differently.

Not a reason to reload: reading the files; changes to any other file
(including files loaded after C<prefork_initialisation_complete>); a
file absent at the start that is still absent.  Not seen: writes
through another hard link in another directory or through a shared
C<mmap>, and changes made by another machine on a network filesystem.

The check does not stat each file on every call: the server watches
the directories on the way to the files with Linux inotify (one watch
per directory), reads the pending events before each connection (one
non-blocking read when nothing happened) and re-stats only the files
they name.  So its cost does not grow with the number of modules (with
500 modules loaded, a connection is greeted as fast as with
C<autoreload> off).  Where inotify cannot be used, or a directory
cannot be watched, the server logs a warning once at start and
re-stats the files concerned on every call.

=head1 STANDALONE OPERATION

Run directly (C<perl script.pl>, or a C<#!/usr/bin/perl> line),
C<prefork_initialisation_complete> only checks its options and
returns, once, in the same process, and nothing else changes.  This is
handy for testing and debugging.

=head1 MESSAGES

Errors found before the server starts (a bad option, an incompatible
client) are reported with C<croak>, on the first caller's standard
error.  The server's messages (reloads, idle shutdown,
callers refused, clients that broke the protocol, failures) go, one
line each:

=over

=item 1.

to syslog (C<log_facility>), as C<SCRIPT[PID]: prefork: MESSAGE>, when
the system logger takes them (F</dev/log>);

=item 2.

to the log file, when one is given (C<log_file>, or
C<PREFORK_INTERP_LOG>), as well as to syslog;

=item 3.

when syslog is off or does not take them and no log file is given, to
the file F<log> in the run directory of this project's client (the
directory of the server record, see L</"SERVER RECORDS AND PROCESS TITLES">),
so that a server without F</dev/log> (in a container, say)
still leaves its messages somewhere.  A server started by
chiark-utils' client has no run directory to write to.

=back

A log file is opened for appending (created with mode 0600) for each
message, which is one C<write> of a line such as

    2026-11-28T23:50:01 tool.pl[4242] warning: message

(the local time; the levels are C<error>, C<warning>, C<info> and
C<debug>).  Once the file has reached 1 MiB it is renamed to
F<I<FILE>.old> (replacing the previous one), and the next message
starts a new one, so it never holds more than about 2 MiB.
Connections dropped for being idle or too many are logged at the
"debug" level.

Each error or warning the server logs is also its last error in the
server record, which C<prefork-interp --list> shows.

=head1 SERVER RECORDS AND PROCESS TITLES

C<prefork-interp --list> shows each server of the user.  With this
project's client, which writes a I<server record> for each server it
starts (protocol extension C<record1>, protocol.md section 8), the
server adds its line to it: its pid and start time, the library
(C<perl>), how many calls it has started (the first, run in place,
included), how many are running, and when the last one started; and
after that line, the last error or warning it logged.  The server
keeps the record open and rewrites its line when a call starts or
ends; spares and calls do not hold it.

The server, forked from the process that ran the script for the first
caller, would otherwise show that caller's command line, arguments and
all, for its whole life.  Instead it sets C<$0> so that its command
line (F</proc/I<PID>/cmdline>, what C<ps> shows) is

    prefork-interp server: SCRIPT (perl)

and its spares' and its forker's

    prefork-interp spare: SCRIPT (perl)
    prefork-interp forker: SCRIPT (perl)

(I<SCRIPT> as the first run named it): no caller's argument remains.
A call's process shows what a direct run of that call would: C<$0> is
the script, its command line the interpreter, the script and the
caller's arguments, and its process name perl's again (unless the
script set C<$0> itself during initialisation: then that).  The first
call, run in place, keeps its own, the caller's.

=head1 PACKAGE VARIABLES

Set these before calling C<prefork_initialisation_complete>; most
scripts never need to.

=over

=item C<$Prefork::Interp::REQUEST_TIMEOUT>

The default of the C<request_timeout> option (the older way to set
it): seconds a caller has, after connecting, to send its whole request
before the server drops the connection.  Default: 5.

=item C<$Prefork::Interp::USE_INOTIFY>

Set to 0 to check every file the server depends on with C<stat> on
every call, instead of watching them with inotify (see
L</"AUTOMATIC RELOADING">).  The library falls back to that by itself
where inotify is not available; the switch is for testing.
Default: 1.

=item C<$Prefork::Interp::START_DELAY>

Seconds the server forked beside a first invocation run in place (see
L</DESCRIPTION>) waits before it loads its modules and forks its
spares, unless a second invocation comes first: its start takes tens of
milliseconds of CPU, which would otherwise be taken from the first
invocation.  Default: 0.1.

=item C<$Prefork::Interp::USE_PIDFD>

Set to 0 to make the server learn of the end (and, with C<call1>, the
stops) of the calls in progress from a C<SIGCHLD> handler and polling,
instead of a Linux signalfd.  The library falls back to that by itself
where a signalfd is not available; the switch is for testing.  (The name
is older than the spare executors: a pidfd tells of an end, not of a
stop.)  Default: 1.

=back

=head1 SWITCHING FROM Proc::Prefork::Interp

Change

    use Proc::Prefork::Interp;

to

    use Prefork::Interp;

Nothing else needs to change: the function names, their options and
the client (either C<prefork-interp>) are the same.  If the script
relied on 7.0.0's C<@ARGV> (which starts with the interpreter and the
script), drop that workaround: C<@ARGV> now holds the arguments only.
Both modules can be installed side by side.

=head1 DIFFERENCES FROM Proc::Prefork::Interp

Fixed defects of chiark-utils 7.0.0 (unchanged up to 8.0.1):

=over

=item *

The exit status is exact.  7.0.0 learns of the end of a call from a
pipe that perl closes during global destruction, before the process has
exited, and then sends it C<SIGINT>: C<exit 0> commonly came back as
130.  An executor that C<exec>s another program (which closes that pipe
too) was killed at once.  We ask the kernel (pidfd, or C<waitpid>).

=item *

C<@ARGV> holds the arguments only, not the interpreter and script
too, and C<$0> follows the caller.

=item *

Only processes of the server's own (effective) uid may call it; any
other caller, root included, gets no greeting, and the server logs a
warning.  7.0.0 relies on the permissions of the socket's directory
alone.

=item *

The server greets every connection at once and reads every request
itself, without waiting for any of them; a call gets a process (a
spare, see C<pool_size>) only once it is complete, and complete calls
wait in the server (first come, first served) while C<max_servers>
calls run.  So idle or slow
connections hold no place and cost real callers nothing; with 7.0.0 a
few idle connections block every other caller for ever.  The server
holds at most 64 connections: beyond that the oldest unfinished one is
dropped; and one that has not sent its request within
C<$REQUEST_TIMEOUT> seconds is dropped.  A request may be at most
6 MiB + 4 KiB long, the most a real client can send (Linux's limit
for the arguments and environment of a program is 6 MiB); the server
keeps it as one string, and only the call's own process splits it.
Clients that break the protocol are logged and dropped; the server
carries on.

=item *

The process running a call is killed by the kernel if the server dies
(killed by anyone), so a call never runs on with the caller's standard
input and output after the client has returned.  7.0.0 forks two
processes for every call (a monitor, which forks the process running
it); we fork none on the call's way (a spare takes it) and one in all,
the server itself watching each call.

=item *

C<max_errors> counts (7.0.0 never increments its counter, so a
persistent C<accept> failure spins for ever).

=item *

Signal dispositions are each caller's, not the first caller's: 7.0.0
gives every call the dispositions of the caller that started the
server, so a server started from a background job ignores C<SIGINT> in
every call, and a call whose caller goes away runs on.  The process
group is only signalled when the caller has gone, not after every
call, so background processes a call leaves behind survive as they
would when run directly.

=item *

The server does not use L<Sys::Syslog>, so a script's own
C<openlog> settings are not disturbed.

=item *

On quitting (reload, idle timeout, C<--kill>, C<-f>), the server
stops listening at once, so new invocations start a fresh server, but
it still serves the invocations it has already greeted: those waiting
for a place, and those that finish sending their request within
C<$REQUEST_TIMEOUT> seconds of connecting.  Its spares exit at once;
it waits for the calls in progress, then exits, so no process of its
is left orphaned.  Only too many
errors in a row (C<max_errors>) drop the invocations waiting.

=item *

Any change to a file the server depends on starts a fresh server, not
only a newer modification time, so unpacking an older-dated release
(C<tar -x>, C<cp -p>, C<git checkout>...) takes effect; the perl
binary is among those files; and a file that is removed is a change
too.  The check costs one read per call, not a C<stat> per file.  See
L</"AUTOMATIC RELOADING">.

=back

Changed, to be the same in the three libraries of prefork-interp: the
default C<idle_timeout> is an hour (7.0.0: 1000000 seconds), and
C<undef> means never; C<max_servers> 0 means no limit (7.0.0 served
one call at a time); C<log_facility> C<undef> turns syslog off;
C<autoreload> is the option's name, C<autoreload_inc> still taken.

Additions: protocol extensions C<call1>, C<pty1>, C<inplace1> and
C<record1> with this project's client (the caller's fds, umask, limits,
nice value, signals and job control; a pseudo-terminal as the
controlling terminal of an invocation run from a terminal; the first
invocation run by the process that initialised the script, see
L</"AFTER INITIALISATION">;
the server record that C<prefork-interp --list> reads, see
L</"SERVER RECORDS AND PROCESS TITLES">), the C<log_file> (and
C<PREFORK_INTERP_LOG>), C<request_timeout>, C<fast_exit> (see
L</"FAST EXIT">) and C<pool_size> options, process titles without the
first caller's arguments, a log file when there is no syslog, the
three package variables, and unknown options are errors.

=head1 LIMITATIONS

Calls inherit the server's current directory and credentials, which
are the first caller's.  (The client includes the current directory in
the server's identity, so a call from another directory gets another
server.)  With the C client, umask, resource limits and nice value are
the server's too.

What a served call cannot match of a direct run:

=over

=item *

Without protocol extension C<pty1> (chiark-utils' client, or this
project's with it turned off), there is no controlling terminal:
opening F</dev/tty> fails, and a script in a background job that reads
the terminal is not stopped by C<SIGTTIN> (it competes with the shell
for input).  (A first invocation run in place has the caller's, as a
direct run: it never takes C<pty1>.)

=item *

C<kill -STOP> on the client stops the client only: C<SIGSTOP> cannot
be caught, so it cannot be passed on.  C<kill -KILL> on the client is
a hang-up: the call gets C<SIGINT>.

=item *

A signal sent with C<kill> to the client's process group reaches the
script, but not the other processes the script started (a terminal's
signals reach them all).

=item *

Setting up the caller's environment takes longer than a direct run's
when it has a great many distinct variables: perl's C<%ENV> searches
the whole environment for each name it sets, so the time grows with the
square of their number (about a second for 20,000, half a minute for
80,000).  Ordinary environments have a few dozen.

=back

A script that ignores C<SIGINT> (or has a handler that does not exit)
keeps running after its caller has gone, and holds one of the
C<max_servers> places until it finishes.

=head1 SEE ALSO

F<README.md> in the C<perl/> directory of the prefork-interp source,
the project's protocol document, and C<Proc::Prefork::Interp> from
chiark-utils, whose API this module follows.

=head1 COPYRIGHT

Copyright the prefork-interp contributors.  Licensed under the MIT
licence or the Apache License, Version 2.0, at your option (SPDX:
C<MIT OR Apache-2.0>); see F<LICENSE-MIT> and F<LICENSE-APACHE> in the
distribution.  There is NO WARRANTY.

=cut
