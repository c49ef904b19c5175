# Prefork::Interp::Identity - what a file the server depends on is,
# now: the identity Prefork::Interp::Reload compares (protocol.md 4).
#
# Apart from Prefork::Interp::Reload, which the server loads, the
# server records these as soon as the setup process has forked it
# (record), before it waits or loads anything: it compares them with
# what it finds when it starts, which may be after the first call has
# ended when the setup process runs it itself (protocol.md 7), so that
# a file changed in between (even to an older date, or removed) is
# seen.
#
# Copyright the prefork-interp contributors; see the project's
# top-level files for the licence.

package Prefork::Interp::Identity;

use strict;
use warnings;

use Errno qw(ENOENT);
use Prefork::Interp::Syscall ();

our $VERSION = '1.0.0';

# identity(PATH): (IDENTITY, MTIME): IDENTITY is a string that differs
# whenever the file is replaced or rewritten: device, inode, size,
# modification and status-change times (which users cannot set back),
# or "absent", or the error stat gave; MTIME undef unless the file
# exists.
sub identity ($) {
    my ($path) = @_;
    my @st = Prefork::Interp::Syscall::stat_times($path);
    if (!@st) {
        return ('absent', undef) if $! == ENOENT;
        return ("error: $!", undef);
    }
    # Times with nanoseconds where the system has them (as a double: a
    # fraction of a microsecond at today's dates), as Time::HiRes::stat
    # gives them.
    return (sprintf('%s:%s:%s:%.9f:%.9f', @st), $st[3]);
}

# record(PATHS): a hash ref, each path => its identity.
sub record {
    my %ident;
    foreach my $path (@_) {
        ($ident{$path}) = identity($path) unless exists $ident{$path};
    }
    return \%ident;
}

1;

__END__

=head1 NAME

Prefork::Interp::Identity - a file's identity, for reloading (internal)

=head1 DESCRIPTION

Internal to L<Prefork::Interp>: the identity (device, inode, size,
modification and status-change times, or absence) of a file the
server depends on.  See L<Prefork::Interp/"AUTOMATIC RELOADING">.

=cut
