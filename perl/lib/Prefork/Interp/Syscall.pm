# Prefork::Interp::Syscall - Linux system call numbers: from tables of
# our own where we know them all (x86_64, aarch64, riscv64), otherwise
# from perl's syscall.ph (without disturbing the script's own use of
# it), or a small table for the calls the library cannot do without.
#
# Also the few POSIX functions that a process taking a call on needs
# (closing and duplicating fds, the signal mask, _exit), made as system
# calls where the table knows them: POSIX takes longer to load (about
# 10 ms) than everything else the setup process loads to run the first
# call itself (protocol.md 7).  Elsewhere they are POSIX's.
#
# A file loaded with require is compiled in the package that loads it,
# and %INC then says it is loaded: a script that did "require
# 'syscall.ph'" after us would get no SYS_* functions in its own
# package, and one that did it before us would leave us none.  So we
# load syscall.ph (and the files it requires) into this package with a
# private %INC.
#
# Copyright the prefork-interp contributors; see the project's
# top-level files for the licence.

package Prefork::Interp::Syscall;

use strict;
use warnings;

our $VERSION = '1.0.0';

# The numbers of every system call the library makes, on the
# architectures whose numbers we know for good: x86_64's 64-bit ABI (not
# x32, which has 4-byte pointers and numbers of its own) and the generic
# table of aarch64 and riscv64.  There they are used first, without
# syscall.ph, which takes about 20 ms to load: a setup process that runs
# the first call itself (protocol.md 7) would pay that on a cold call
# that a direct run does not.
my %KNOWN = (
    x86_64 => { prctl => 157, recvmsg => 47, sendmsg => 46,
                prlimit64 => 302, signalfd4 => 289,
                inotify_init1 => 294, inotify_add_watch => 254,
                pidfd_open => 434, close => 3, write => 1, dup2 => 33, fcntl => 72,
                exit_group => 231, rt_sigprocmask => 14,
                clock_gettime => 228, statx => 332, clone => 56 },
    # No dup2 in the generic table: dup3.
    aarch64 => { prctl => 167, recvmsg => 212, sendmsg => 211,
                 prlimit64 => 261, signalfd4 => 74,
                 inotify_init1 => 26, inotify_add_watch => 27,
                 pidfd_open => 434, close => 57, write => 64, dup3 => 24, fcntl => 25,
                 exit_group => 94, rt_sigprocmask => 135,
                 clock_gettime => 113, statx => 291, clone => 220 },
);
$KNOWN{riscv64} = $KNOWN{aarch64};

# Elsewhere, for where syscall.ph is missing, the numbers of the calls
# the server needs on every call (receiving the caller's fds, the
# executor's parent-death signal, watching for changes): by
# architecture, the first word of perl's archname.
my %FALLBACK = (
    # Linux 5.3 gave the calls it added one number on every
    # architecture (but MIPS, which offsets its tables).
    pidfd_open => { map { $_ => 434 } qw(i386 i486 i586 i686 arm powerpc
                                          powerpc64 powerpc64le ppc64
                                          ppc64le s390x) },
    prctl => { i386 => 172, i486 => 172, i586 => 172, i686 => 172,
               arm => 172, powerpc => 171, powerpc64 => 171,
               powerpc64le => 171, ppc64 => 171, ppc64le => 171,
               s390x => 172 },
);

# The first word of perl's archname (x86_64, aarch64...), without
# loading Config, which takes a cold call about 2 ms: from the ELF header
# of the running perl for the 64-bit little-endian machines %KNOWN has,
# otherwise from Config.
sub _arch () {
    my %machine = (62 => 'x86_64', 183 => 'aarch64', 243 => 'riscv64');
    if (open my $exe, '<:raw', '/proc/self/exe') {
        my $head = '';
        if ((sysread($exe, $head, 20) // 0) == 20 && substr($head, 0, 4) eq "\x7fELF") {
            # EI_CLASS 2: 64-bit; EI_DATA 1: little-endian; e_machine at 18.
            my ($class, $data, $machine) = unpack 'x4 C C x12 v', $head;
            return $machine{$machine}
                if $class == 2 && $data == 1 && exists $machine{$machine};
        }
    }
    require Config;
    my ($arch) = $Config::Config{archname} =~ m/\A([^-]+)/;
    return $arch // '';
}
my $ARCH = _arch();
my $KNOWN = $^O eq 'linux' && length(pack 'p', undef) == 8
            ? $KNOWN{$ARCH} : undef;

# known_linux(): true on the architectures whose numbers (system calls,
# and Linux's generic signal numbers) we know for good.
sub known_linux () { defined $KNOWN }

my %loaded;    # .ph file => undef: not tried; 0: failed; 1: loaded

# _load(FILE): loads FILE (default syscall.ph) into this package, once.
sub _load (;$) {
    my ($file) = @_;
    $file //= 'syscall.ph';
    return $loaded{$file} if defined $loaded{$file};
    local %INC = %INC;
    delete $INC{$_} foreach grep { m/\.ph\z/ } keys %INC;
    local $SIG{__WARN__} = sub { };
    local $@;
    $loaded{$file} = eval { require $file; 1 } ? 1 : 0;
    return $loaded{$file};
}

# ph_value(FILE, NAME): the constant NAME of perl's header file FILE
# ("sys/ioctl.ph", "TIOCSCTTY"), loaded as syscall.ph is, or undef.
# For the architectures our tables do not know.
sub ph_value ($$) {
    my ($file, $name) = @_;
    return undef unless _load($file);
    no strict 'refs';
    my $sub = \&{"Prefork::Interp::Syscall::$name"};
    return defined &$sub ? scalar eval { $sub->() } : undef;
}

# number(NAME): the number of system call NAME ("prlimit64"), or undef
# where neither our tables nor syscall.ph know it.
sub number ($) {
    my ($name) = @_;
    return undef unless $^O eq 'linux';
    return $KNOWN->{$name} if $KNOWN && defined $KNOWN->{$name};
    if (_load()) {
        no strict 'refs';
        my $sub = \&{"Prefork::Interp::Syscall::SYS_$name"};
        my $nr = defined &$sub ? scalar eval { $sub->() } : undef;
        return $nr if defined $nr;
    }
    return $FALLBACK{$name} ? $FALLBACK{$name}{$ARCH} : undef;
}

#---------- Errno and Fcntl constants ----------

# The error numbers and fcntl values the setup process needs, as Linux's
# generic headers (asm-generic/errno*.h, fcntl.h) give them to the
# architectures of %KNOWN: Errno and Fcntl together take a cold call
# about 2 ms to load.  Elsewhere, Errno's and Fcntl's own.  A module
# takes them by name, as constants:
#
#     use Prefork::Interp::Syscall qw(EINTR O_NONBLOCK);
my %GENERIC = (
    EPERM => 1, ESRCH => 3, EINTR => 4, EAGAIN => 11, EWOULDBLOCK => 11,
    EINVAL => 22, EMFILE => 24, EPIPE => 32, EDOM => 33, ECONNRESET => 104,
    F_GETFL => 3, F_SETFL => 4, O_NONBLOCK => 04000,
);

# value_of(NAME): the value of Errno's or Fcntl's constant NAME, from our
# table where it applies (known_linux), otherwise from those modules.
sub value_of ($) {
    my ($name) = @_;
    exists $GENERIC{$name}
        or die "Prefork::Interp::Syscall has no constant $name\n";
    return $GENERIC{$name} if $KNOWN;
    my $module = $name =~ m/\AE/ ? 'Errno' : 'Fcntl';
    require "$module.pm";
    return $module->can($name)->();
}

# constant_names(): the names value_of knows.
sub constant_names () { sort keys %GENERIC }

sub import {
    my ($class, @names) = @_;
    return unless @names;
    my %values = map { $_ => value_of($_) } @names;
    # As constant's own import, for the module that said "use": it
    # defines the names in its caller's package.
    require constant;
    @_ = ('constant', \%values);
    goto &constant::import;
}

#---------- Time::HiRes functions, as system calls ----------

# Time::HiRes takes a cold call about 5 ms to load: where the table knows
# the numbers, its two functions the setup process needs are made here.

# now(): the time of day in seconds, with the nanoseconds as a fraction,
# as Time::HiRes::time gives it.
sub now () {
    if ($KNOWN && length(pack 'j', 0) == 8) {
        my $ts = "\0" x 16;
        # CLOCK_REALTIME
        if (syscall($KNOWN->{clock_gettime}, 0, $ts) == 0) {
            my ($sec, $nsec) = unpack 'q L', $ts;
            return $sec + $nsec / 1e9;
        }
    }
    require Time::HiRes;
    return Time::HiRes::time();
}

# stat_times(PATH): (DEV, INO, SIZE, MTIME, CTIME) as Time::HiRes::stat
# gives them (the times with their nanoseconds as a fraction), or () with
# $! set.
sub stat_times ($) {
    my ($path) = @_;
    if ($KNOWN && length(pack 'j', 0) == 8) {
        my $buf = "\0" x 256;
        # struct statx: AT_FDCWD, no flags, STATX_BASIC_STATS; the path
        # as a new string, so that syscall passes a pointer.
        if (syscall($KNOWN->{statx}, -100, "$path", 0, 0x7ff, $buf) == 0) {
            my ($ino, $size) = unpack 'x32 Q Q', $buf;
            my ($csec, $cnsec, $msec, $mnsec) = unpack 'x96 q L x4 q L', $buf;
            my ($major, $minor) = unpack 'x136 L L', $buf;
            # dev_t as glibc's stat gives it (gnu_dev_makedev).
            my $dev = ($minor & 0xff) | (($major & 0xfff) << 8)
                    | (($minor & ~0xff) << 12) | (($major & ~0xfff) << 32);
            return ($dev, $ino, $size, $msec + $mnsec / 1e9, $csec + $cnsec / 1e9);
        }
        return () unless $! + 0 == 38;    # ENOSYS: a kernel before 4.11
    }
    require Time::HiRes;
    my @st = Time::HiRes::stat($path);
    return @st ? @st[0, 1, 7, 9, 10] : ();
}

#---------- POSIX functions, as system calls ----------

# Linux's values, the same on the architectures of %KNOWN.
use constant { SIG_BLOCK => 0, SIG_SETMASK => 2, F_GETFD => 1 };

# The numbers for the functions below, or undef: then POSIX.
my $RAW = $KNOWN && length(pack 'j', 0) == 8 ? $KNOWN : undef;

# close_fd(FD): true, or false with $! set.
sub close_fd ($) {
    my ($fd) = @_;
    return syscall($RAW->{close}, $fd + 0) == 0 if $RAW;
    require POSIX;
    return defined POSIX::close($fd);
}

# is_open(FD): whether FD is an open file descriptor.
sub is_open ($) {
    my ($fd) = @_;
    return syscall($RAW->{fcntl}, $fd + 0, F_GETFD, 0) >= 0 if $RAW;
    require POSIX;
    my @st = POSIX::fstat($fd);
    return scalar @st;
}

# dup2(OLD, NEW): as POSIX::dup2: NEW ("0 but true" for 0), or undef
# with $! set.
sub dup2 ($$) {
    my ($old, $new) = @_;
    if ($RAW) {
        # dup3 refuses OLD == NEW, which dup2 allows (if OLD is open).
        return is_open($old) ? ($new || '0 but true') : undef
            if $old == $new;
        my $r = defined $RAW->{dup2}
              ? syscall($RAW->{dup2}, $old + 0, $new + 0)
              : syscall($RAW->{dup3}, $old + 0, $new + 0, 0);
        return $r < 0 ? undef : ($r || '0 but true');
    }
    require POSIX;
    return POSIX::dup2($old, $new);
}

# readable(FD, SECONDS): whether FD polls readable within SECONDS (0:
# now; a signal ends the wait early, with false).
sub readable ($$) {
    my ($fd, $seconds) = @_;
    my $rbits = '';
    vec($rbits, $fd, 1) = 1;
    return select($rbits, undef, undef, $seconds) > 0;
}

# write_fd(FD, DATA): one write(2); bytes written, or undef.
sub write_fd ($$) {
    my ($fd, $data) = @_;
    if ($RAW) {
        # A string of its own: syscall passes a string as a pointer, but
        # a value perl has used as a number as that number.
        my $buf = "$data";
        my $r = syscall($RAW->{write}, $fd + 0, $buf, length $buf);
        return $r < 0 ? undef : $r;
    }
    require POSIX;
    return POSIX::write($fd, $data, length $data);
}

# exit_now(STATUS): _exit(2), at once: no END block, no destructor, no
# buffer flushed.
sub exit_now ($) {
    my ($status) = @_;
    syscall($RAW->{exit_group}, $status + 0) if $RAW;
    require POSIX;
    POSIX::_exit($status);
}

# The signal mask.  Signal numbers are 1 to 64; the kernel leaves
# SIGKILL and SIGSTOP unblocked, and glibc keeps 32 and 33 for itself
# (POSIX::SigSet will not hold them), so they are never blocked here
# either.

# The kernel's sigset_t for SIGNALS: one bit per signal, bit 0 for 1.
sub _kernel_set {
    my $mask = 0;
    foreach my $sig (@_) {
        next if $sig < 1 || $sig > 64 || $sig == 32 || $sig == 33;
        $mask |= 1 << ($sig - 1);
    }
    return pack 'Q', $mask;
}

sub _posix_set {
    require POSIX;
    my $set = POSIX::SigSet->new;
    $set->addset($_) foreach grep { $_ != 32 && $_ != 33 } @_;
    return $set;
}

# rt_sigprocmask(HOW, SET or undef): the previous mask, or dies.
sub _rt_sigprocmask ($$) {
    my ($how, $set) = @_;
    my $old = "\0" x 8;
    syscall($RAW->{rt_sigprocmask}, $how + 0, $set // 0, $old, 8) == 0
        or die "sigprocmask: $!\n";
    return $old;
}

# blocked_signals(): the signals blocked now, as numbers.
sub blocked_signals () {
    if ($RAW) {
        my $mask = unpack 'Q', _rt_sigprocmask(SIG_BLOCK, undef);
        return grep { $mask & (1 << ($_ - 1)) } 1 .. 64;
    }
    require POSIX;
    my $set = POSIX::SigSet->new;
    POSIX::sigprocmask(POSIX::SIG_BLOCK(), _posix_set(), $set)
        or die "sigprocmask: $!\n";
    return grep { $set->ismember($_) } 1 .. 64;
}

# block_signals(SIGNALS): blocks them too; returns the previous mask,
# for restore_signals.
sub block_signals {
    return _rt_sigprocmask(SIG_BLOCK, _kernel_set(@_)) if $RAW;
    my $set = _posix_set(@_);    # loads POSIX
    my $old = POSIX::SigSet->new;
    POSIX::sigprocmask(POSIX::SIG_BLOCK(), $set, $old)
        or die "sigprocmask: $!\n";
    return $old;
}

# set_blocked_signals(SIGNALS): blocks exactly these.
sub set_blocked_signals {
    if ($RAW) {
        _rt_sigprocmask(SIG_SETMASK, _kernel_set(@_));
        return;
    }
    my $set = _posix_set(@_);    # loads POSIX
    POSIX::sigprocmask(POSIX::SIG_SETMASK(), $set)
        or die "sigprocmask: $!\n";
}

# restore_signals(OLD): the mask block_signals returned.
sub restore_signals ($) {
    my ($old) = @_;
    if ($RAW) {
        _rt_sigprocmask(SIG_SETMASK, $old);
        return;
    }
    require POSIX;
    POSIX::sigprocmask(POSIX::SIG_SETMASK(), $old)
        or die "sigprocmask: $!\n";
}

1;

__END__

=head1 NAME

Prefork::Interp::Syscall - system call numbers, and a few POSIX
functions as system calls (internal)

=head1 DESCRIPTION

Internal to L<Prefork::Interp>: Linux system call numbers, from tables
of its own on x86_64, aarch64 and riscv64, elsewhere from perl's
F<syscall.ph>, loaded without registering it in C<%INC>, so that a
script's own C<require 'syscall.ph'> still works; for C<prctl>, a
table of its own where F<syscall.ph> is missing.  And the few POSIX
functions a process taking a call on needs, as system calls where
those tables know them, so that it need not load POSIX.

=cut
