# Prefork::Interp::Syscall - Linux system call numbers, from perl's
# syscall.ph, without disturbing the script's own use of it.
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
# where syscall.ph is missing or does not know it.
sub number ($) {
    my ($name) = @_;
    return undef unless $^O eq 'linux' && _load();
    no strict 'refs';
    my $sub = \&{"Prefork::Interp::Syscall::SYS_$name"};
    return defined &$sub ? scalar eval { $sub->() } : undef;
}

1;

__END__

=head1 NAME

Prefork::Interp::Syscall - system call numbers from syscall.ph (internal)

=head1 DESCRIPTION

Internal to L<Prefork::Interp>: looks up Linux system call numbers in
perl's F<syscall.ph> without registering it in C<%INC>, so that a
script's own C<require 'syscall.ph'> still works.

=cut
