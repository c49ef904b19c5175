# Prefork::Interp::Syscall - Linux system call numbers: from tables of
# our own where we know them all (x86_64, aarch64, riscv64), otherwise
# from perl's syscall.ph (without disturbing the script's own use of
# it), or a small table for the calls the library cannot do without.
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

use Config ();

our $VERSION = '1.0.0';

# The numbers of every system call the library makes, on the
# architectures whose numbers we know for good: x86_64's 64-bit ABI (not
# x32, which has 4-byte pointers and numbers of its own) and the generic
# table of aarch64 and riscv64.  There they are used first, without
# syscall.ph, which takes about 20 ms to load: a setup process that runs
# the first call itself (protocol.md 7) would pay that on a cold call
# that a direct run does not.
my %KNOWN = (
    x86_64 => { prctl => 157, recvmsg => 47, prlimit64 => 302,
                pidfd_open => 434, signalfd4 => 289,
                inotify_init1 => 294, inotify_add_watch => 254 },
    aarch64 => { prctl => 167, recvmsg => 212, prlimit64 => 261,
                 pidfd_open => 434, signalfd4 => 74,
                 inotify_init1 => 26, inotify_add_watch => 27 },
);
$KNOWN{riscv64} = $KNOWN{aarch64};

# Elsewhere, for where syscall.ph is missing, the numbers of the calls
# the server needs on every call (receiving the caller's fds, the
# executor's parent-death signal, watching for changes): by
# architecture, the first word of perl's archname.
my %FALLBACK = (
    prctl => { i386 => 172, i486 => 172, i586 => 172, i686 => 172,
               arm => 172, powerpc => 171, powerpc64 => 171,
               powerpc64le => 171, ppc64 => 171, ppc64le => 171,
               s390x => 172 },
);

my ($ARCH) = $Config::Config{archname} =~ m/\A([^-]+)/;
$ARCH //= '';
my $KNOWN = $^O eq 'linux' && length(pack 'p', undef) == 8
            ? $KNOWN{$ARCH} : undef;

my $loaded;    # undef: not tried; 0: failed; 1: loaded

sub _load () {
    return $loaded if defined $loaded;
    local %INC = %INC;
    delete $INC{$_} foreach grep { m/\.ph\z/ } keys %INC;
    local $SIG{__WARN__} = sub { };
    local $@;
    $loaded = eval { require 'syscall.ph'; 1 } ? 1 : 0;
    return $loaded;
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

1;

__END__

=head1 NAME

Prefork::Interp::Syscall - system call numbers from syscall.ph (internal)

=head1 DESCRIPTION

Internal to L<Prefork::Interp>: Linux system call numbers, from tables
of its own on x86_64, aarch64 and riscv64, elsewhere from perl's
F<syscall.ph>, loaded without registering it in C<%INC>, so that a
script's own C<require 'syscall.ph'> still works; for C<prctl>, a
table of its own where F<syscall.ph> is missing.

=cut
