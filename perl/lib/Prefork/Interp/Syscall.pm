# Prefork::Interp::Syscall - Linux system call numbers, from perl's
# syscall.ph (without disturbing the script's own use of it), or from a
# small table of our own for the calls the library cannot do without.
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

# The numbers of the system calls the server needs on every call
# (receiving the caller's fds, the executor's parent-death signal,
# watching for changes),
# for where syscall.ph is missing: by architecture, the first word of
# perl's archname.  aarch64 and riscv64 use the generic table.
my %FALLBACK = (
    prctl => { x86_64 => 157, i386 => 172, i486 => 172, i586 => 172,
               i686 => 172, aarch64 => 167, riscv64 => 167, arm => 172,
               powerpc => 171, powerpc64 => 171, powerpc64le => 171,
               ppc64 => 171, ppc64le => 171, s390x => 172 },
    recvmsg => { x86_64 => 47, aarch64 => 212, riscv64 => 212 },
    # Watching the server's files for changes (Prefork::Interp::Reload).
    inotify_init1 => { x86_64 => 294, aarch64 => 26, riscv64 => 26 },
    inotify_add_watch => { x86_64 => 254, aarch64 => 27, riscv64 => 27 },
);

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
# where neither syscall.ph nor our table knows it.
sub number ($) {
    my ($name) = @_;
    return undef unless $^O eq 'linux';
    if (_load()) {
        no strict 'refs';
        my $sub = \&{"Prefork::Interp::Syscall::SYS_$name"};
        my $nr = defined &$sub ? scalar eval { $sub->() } : undef;
        return $nr if defined $nr;
    }
    my ($arch) = $Config::Config{archname} =~ m/\A([^-]+)/;
    return $FALLBACK{$name} && defined $arch ? $FALLBACK{$name}{$arch}
                                             : undef;
}

1;

__END__

=head1 NAME

Prefork::Interp::Syscall - system call numbers from syscall.ph (internal)

=head1 DESCRIPTION

Internal to L<Prefork::Interp>: looks up Linux system call numbers in
perl's F<syscall.ph> without registering it in C<%INC>, so that a
script's own C<require 'syscall.ph'> still works; for C<prctl>,
C<recvmsg>, C<inotify_init1> and C<inotify_add_watch>, a table of its own where F<syscall.ph> is missing.

=cut
