# Prefork::Interp::Forker - a child of the server that forks the
# server's spares (Prefork::Interp::Executors).
#
# Forking costs the process that forks: the kernel copies its page
# tables, and afterwards every page it writes that the child still
# shares is copied too, a page fault each.  perl writes to every value
# it uses (reference counts, flags), so a server that forks the
# replacement spare after each call faults again on everything it
# touches while it takes the next call in, on that call's path; and it
# does nothing else while the fork runs.  (Warm calls back to back took
# 5.5 ms with a fork after each call, 4.1 ms with none.)
#
# So the server forks once, when it first fills its pool: the forker,
# which only forks spares when the server asks (a byte per spare on a
# socket pair) and sends back each one's pid (4 bytes) and the server's
# end of its control socket (one message, SCM_RIGHTS).  Its fork and
# the new spare's rehearsal run beside the server.
#
# A spare must still be the server's child: the server reaps it (a
# call's status comes from the kernel), sets its process group and
# hears of its stops.  The forker therefore makes it with
# clone(CLONE_PARENT), which gives the new process the forker's own
# parent, by the bare system call.  perl's fork would also block the
# signals around the fork (every one is blocked here for good), flush
# perl's handles (the forker writes through none), clear the signals
# perl has noted (none can come), and through the C library run the
# pthread_atfork handlers (perl's own lock its interpreter mutexes,
# which a forker with one thread never holds) and record the child's
# thread id (glibc from 2.34 on asks the kernel for it in raise, the
# only use a single-threaded child can reach).  Where that cannot be
# relied on (another C library, an older glibc, an architecture whose
# clone number Prefork::Interp::Syscall does not know) there is no
# forker, and the server forks its spares itself; so it does from then
# on if the forker dies or a clone fails.
#
# Copyright the prefork-interp contributors; see the project's
# top-level files for the licence.

package Prefork::Interp::Forker;

use strict;
use warnings;

use Errno qw(EINTR EAGAIN EWOULDBLOCK);
use Fcntl qw(F_GETFL F_SETFL O_NONBLOCK);
use POSIX ();
use Socket qw(AF_UNIX SOCK_STREAM PF_UNSPEC);

use Prefork::Interp::Protocol ();
use Prefork::Interp::Syscall ();

our $VERSION = '1.0.0';

# clone's flag: the child's parent is the caller's parent.
use constant CLONE_PARENT => 0x00008000;

# glibc from this version on takes the thread id from the kernel in
# raise.
use constant GLIBC_MIN => 2.034;

# available(): whether a forker can run here.
sub available () {
    return 0 unless $^O eq 'linux' && Prefork::Interp::Syscall::known_linux();
    return 0 unless defined Prefork::Interp::Syscall::number('clone');
    require Config;
    my ($major, $minor) = ($Config::Config{gnulibc_version} // '')
        =~ m/\A([0-9]+)\.([0-9]+)/ or return 0;
    return $major + $minor / 1000 >= GLIBC_MIN;
}

# start(RELEASE, DIE_WITH_SERVER, TITLE): forks the forker, every signal
# blocked by the caller (who restores its mask in the server).  In the
# server: the forker, an object of this class.  In a spare the forker has
# cloned: the spare's end of its control socket, a plain (non-object)
# handle.  The forker itself never returns.  RELEASE closes, in the
# forker, every fd of the server's; DIE_WITH_SERVER(SERVER_PID) asks
# for SIGKILL at the server's death; TITLE sets the process title.
# Dies with a message if the forker cannot be forked.
sub start ($$$) {
    my ($release, $die_with_server, $title) = @_;
    my $server = $$;
    socketpair(my $ours, my $theirs, AF_UNIX, SOCK_STREAM, PF_UNSPEC)
        or die "cannot make a socket pair for the forker: $!\n";
    my $pid = fork;
    if (!defined $pid) {
        my $e = "$!";
        close $ours;
        close $theirs;
        die "cannot fork the forker of spares: $e\n";
    }
    if ($pid) {
        close $theirs;
        # Read until nothing is left (receive), never blocking.
        my $fl = fcntl($ours, F_GETFL, 0);
        fcntl($ours, F_SETFL, ($fl // 0) | O_NONBLOCK);
        return bless { pid => $pid, fh => $ours }, __PACKAGE__;
    }
    my $ctl = eval {
        close $ours;
        $die_with_server->($server);
        $release->();
        $title->();
        _serve($theirs);
    };
    return $ctl if $ctl;
    Prefork::Interp::Syscall::exit_now(127);
}

sub pid { $_[0]{pid} }
sub fh { $_[0]{fh} }

# request(N): asks for N more spares; false if the forker has gone.
sub request {
    my ($self, $n) = @_;
    local $SIG{PIPE} = 'IGNORE';
    my $r = syswrite($self->{fh}, 'F' x $n);
    return defined $r && $r == $n;
}

# receive(): reads what the forker has sent, once select has found its
# socket readable: (the new spares as [pid, control socket], how many
# clones failed, whether the forker has gone).  A record is the 4-byte
# pid (0: the clone failed) and, after a pid, the message carrying the
# control socket, which follows at once.
sub receive {
    my ($self) = @_;
    my (@spares, $failed);
    $failed = 0;
    for (;;) {
        my $head = '';
        my $r = sysread($self->{fh}, $head, 4);
        if (!defined $r) {
            next if $! == EINTR;
            return (\@spares, $failed, 0) if $! == EAGAIN || $! == EWOULDBLOCK;
            return (\@spares, $failed, 1);
        }
        return (\@spares, $failed, 1) if $r < 4;    # EOF (or torn)
        my $pid = unpack 'l', $head;
        if ($pid <= 0) {
            $failed++;
            next;
        }
        my $fd = eval {
            Prefork::Interp::Protocol::recv_fd_wait($self->{fh},
                                                    'a spare\'s socket');
        };
        return (\@spares, $failed, 1) unless defined $fd;
        open(my $ctl, '+<&=', $fd)
            or return (\@spares, $failed, 1);
        push @spares, [ $pid, $ctl ];
    }
}

# stop(): the forker sees EOF and exits.
sub stop {
    my ($self) = @_;
    close(delete $self->{fh}) if $self->{fh};
}

# _serve(SOCK): the forker's loop (every signal blocked): a spare per
# byte read, until EOF (the server is quitting: exit 0).  Returns only
# in a spare: its end of its control socket.
sub _serve ($) {
    my ($sock) = @_;
    my $nr = Prefork::Interp::Syscall::number('clone');
    # SIGCHLD, the signal clone's low byte names for the child's end.
    my $flags = CLONE_PARENT | POSIX::SIGCHLD();
    for (;;) {
        my $r = sysread($sock, my $requests, 256);
        if (!defined $r) {
            next if $! == EINTR;
            die "read: $!\n";
        }
        Prefork::Interp::Syscall::exit_now(0) if $r == 0;
        for (1 .. $r) {
            socketpair(my $ctl, my $spares_end, AF_UNIX, SOCK_STREAM,
                       PF_UNSPEC) or do {
                Prefork::Interp::Protocol::write_all($sock, \pack('l', 0),
                                                 'the server');
                next;
            };
            # "+ 0": syscall passes numbers as integers.
            my $pid = syscall($nr, $flags + 0, 0, 0, 0, 0);
            if ($pid == 0) {
                close($sock);
                close($ctl);
                return $spares_end;
            }
            close($spares_end);
            if ($pid < 0) {
                close($ctl);
                Prefork::Interp::Protocol::write_all($sock, \pack('l', 0),
                                                 'the server');
                next;
            }
            Prefork::Interp::Protocol::write_all($sock, \pack('l', $pid),
                                             'the server');
            Prefork::Interp::Protocol::send_fd($sock, fileno($ctl),
                                               'a spare\'s socket');
            close($ctl);
        }
    }
}

1;

__END__

=head1 NAME

Prefork::Interp::Forker - the process that forks a server's spare
executors (internal)

=head1 DESCRIPTION

Internal to L<Prefork::Interp>: see the comments in the source, and
the option C<pool_size> in L<Prefork::Interp>.

=cut
