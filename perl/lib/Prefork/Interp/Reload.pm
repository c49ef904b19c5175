# Prefork::Interp::Reload - has any file the server depends on changed
# since it started?  (protocol.md 4: the reload rule.)
#
# At start (new) we record, for every tracked file (the script, %INC,
# the extra files, the interpreter), an identity that any replacement
# or rewrite changes: device, inode, size, mtime and ctime (ctime
# cannot be set back by users), or "absent", or the error stat gave.
# A call must never run old code, whatever the dates of the new files
# (tar -x, cp -p, rsync -t, git checkout, mv of an older file, touch -d).
#
# The check runs before every connection is taken in, so it must not
# cost a stat per file (a large application loads hundreds).  So we
# use inotify: one watch per directory on the way to each tracked file
# (the directory holding it, with every change to its entries, and each
# ancestor, with the changes to its names, so that renaming or
# re-pointing a directory or a symbolic link on the path is seen too).
# A check reads the pending events (one non-blocking read when nothing
# happened) and re-stats only the files they name.  Where inotify
# cannot be had, or a directory cannot be watched, the files concerned
# are re-stat'd on every check instead, and the server says so once.
#
# What a watch cannot see, and so what this cannot either: a file
# changed through another hard link in another directory, or written
# through a shared mmap; a change on a network filesystem made by
# another machine.  Those are still caught if they change the file's
# identity and something else makes us re-stat it; otherwise not.
#
# Copyright the prefork-interp contributors; see the project's
# top-level files for the licence.

package Prefork::Interp::Reload;

use strict;
use warnings;

use Config ();
use Cwd ();
use Errno qw(EINTR EAGAIN EWOULDBLOCK);
use Fcntl qw(F_GETFD F_SETFD FD_CLOEXEC F_GETFL F_SETFL O_NONBLOCK);
use POSIX ();

use Prefork::Interp::Identity ();
use Prefork::Interp::Syscall ();

our $VERSION = '1.0.0';

# <sys/inotify.h>
use constant {
    IN_MODIFY      => 0x00000002,
    IN_ATTRIB      => 0x00000004,
    IN_CLOSE_WRITE => 0x00000008,
    IN_MOVED_FROM  => 0x00000040,
    IN_MOVED_TO    => 0x00000080,
    IN_CREATE      => 0x00000100,
    IN_DELETE      => 0x00000200,
    IN_DELETE_SELF => 0x00000400,
    IN_MOVE_SELF   => 0x00000800,
    IN_UNMOUNT     => 0x00002000,
    IN_Q_OVERFLOW  => 0x00004000,
    IN_IGNORED     => 0x00008000,
    IN_MASK_ADD    => 0x20000000,
};

# A directory that holds tracked files: every change to its entries.
use constant HOLDER_MASK => IN_ATTRIB | IN_MODIFY | IN_CLOSE_WRITE
    | IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO
    | IN_DELETE_SELF | IN_MOVE_SELF;
# A directory further up the path: its names only.
use constant ANCESTOR_MASK => IN_CREATE | IN_DELETE | IN_MOVED_FROM
    | IN_MOVED_TO | IN_DELETE_SELF | IN_MOVE_SELF;
# The watch no longer follows the path.
use constant WATCH_LOST => IN_DELETE_SELF | IN_MOVE_SELF | IN_UNMOUNT
    | IN_IGNORED;

# IN_CLOEXEC is O_CLOEXEC, which Fcntl does not export; 02000000 on
# every architecture we know the system calls of.  (new checks the
# flags on the fd it gets, and sets them with fcntl if need be.)
use constant IN_CLOEXEC => 0x80000;

# Bytes read from the inotify fd at once: many whole events (each at
# most 16 + NAME_MAX + 1 bytes).
use constant READ_SIZE => 65536;

# new(files => [PATHS], since => MTIME, before => {PATH => IDENTITY},
#     inotify => BOOL, log => LOG):
# records each file's identity and sets up the watches (unless INOTIFY
# is false: then every file is re-stat'd on every check).  PATHS are
# absolute.  BEFORE: identities recorded earlier (by the setup process
# just before it forked the server, when the program was loaded); a
# file whose identity has changed since is a reason to reload at once.
sub new {
    my ($class, %a) = @_;
    my $self = bless {
        files  => [ @{ $a{files} } ],
        since  => $a{since},
        log    => $a{log},
        inotify => $a{inotify} // 1,
        ident  => [],       # index => identity at start
        polled => {},       # index => 1: re-stat'd on every check
        dirs   => {},       # wd => { files => {NAME => [indexes]},
                            #         below => {NAME => [indexes]} }
        fh     => undef,    # the inotify fd, as a perl handle
        stale  => undef,    # a reason to reload found at start
    }, $class;

    # Watches first, identities second: a change after our stat is
    # then surely seen.
    $self->_watch_all;
    my $files = $self->{files};
    foreach my $i (0 .. $#$files) {
        my ($ident, $mtime) = identity($files->[$i]);
        $self->{ident}[$i] = $ident;
        # The rule of old: modified after the client made the socket
        # (while the script was starting).
        $self->{stale} //= "$files->[$i] changed"
            if defined $mtime && $mtime > $self->{since};
        # Changed since the setup process forked us: the program we run
        # is what it had loaded.
        my $before = $a{before} ? $a{before}{ $files->[$i] } : undef;
        $self->{stale} //= "$files->[$i] changed"
            if defined $before && $before ne $ident;
    }
    return $self;
}

# The inotify fd, or undef (for closing in an executor).
sub fd {
    my ($self) = @_;
    return $self->{fh} ? fileno($self->{fh}) : undef;
}

# In an executor just forked: closes the inotify fd.
sub close_fd {
    my ($self) = @_;
    close(delete $self->{fh}) if $self->{fh};
}

# How many files are tracked, watched and re-stat'd on every check.
sub counts {
    my ($self) = @_;
    return (scalar @{ $self->{files} }, scalar keys %{ $self->{dirs} },
            scalar keys %{ $self->{polled} });
}

# identity(PATH): (IDENTITY, MTIME), see Prefork::Interp::Identity.
sub identity ($) { Prefork::Interp::Identity::identity($_[0]) }

# check(): a reason to reload (a message), or undef if nothing the
# server depends on has changed.
sub check {
    my ($self) = @_;
    return $self->{stale} if defined $self->{stale};
    my %todo = map { $_ => 'stat' } keys %{ $self->{polled} };
    $self->_drain(\%todo) if $self->{fh};
    my $files = $self->{files};
    foreach my $i (sort { $a <=> $b } keys %todo) {
        my $file = $files->[$i];
        # Written to: changed, whatever the identity says (file times
        # are a few milliseconds coarse, so a rewrite of the same size
        # right after the server started may keep them all).
        return $self->{stale} = "$file changed" if $todo{$i} eq 'written';
        my ($ident, $mtime) = identity($file);
        next if $ident eq $self->{ident}[$i]
             && !(defined $mtime && $mtime > $self->{since});
        return $self->{stale} = "cannot check $file: $1"
            if $ident =~ m/\Aerror: (.*)\z/s;
        return $self->{stale} = "$file changed";
    }
    return undef;
}

#---------- setting up ----------

sub _watch_all {
    my ($self) = @_;
    my $files = $self->{files};
    my $log = $self->{log};
    my $n = @$files;
    my $init = Prefork::Interp::Syscall::number('inotify_init1');
    my $add = Prefork::Interp::Syscall::number('inotify_add_watch');
    my $why;
    if (!$self->{inotify}) {
        $why = 'turned off by $Prefork::Interp::USE_INOTIFY';
    } elsif (!defined $init || !defined $add) {
        $why = 'no inotify system call known on this system';
    } else {
        $self->{fh} = _inotify_fh($init, \$why);
    }
    if (!$self->{fh}) {
        $self->{polled}{$_} = 1 foreach 0 .. $#$files;
        $log->msg('warning', "cannot use inotify ($why): each of the $n"
                  . ' files the server depends on is checked on every call');
        return;
    }

    my %wd_of;       # directory path => wd, or the error adding it
    my ($failed, $first_error) = (0, undef);
    foreach my $i (0 .. $#$files) {
        my $ok = 1;
        foreach my $step (_path_steps($files->[$i])) {
            my ($dir, $name, $holder) = @$step;
            my $key = "$dir\0" . ($holder ? 'h' : 'a');
            if (!exists $wd_of{$key}) {
                my $mask = ($holder ? HOLDER_MASK : ANCESTOR_MASK)
                         | IN_MASK_ADD;
                my $path = $dir;    # a string, for syscall's pointer
                my $wd = syscall($add, fileno($self->{fh}), $path, $mask);
                $wd_of{$key} = $wd >= 0 ? $wd : "$dir: $!";
            }
            my $wd = $wd_of{$key};
            if ($wd !~ m/\A[0-9]+\z/) {
                $first_error //= $wd;
                $ok = 0;
                next;
            }
            # One inode can be reached by two paths: one record per wd.
            my $rec = $self->{dirs}{$wd} //= { files => {}, below => {} };
            push @{ $rec->{ $holder ? 'files' : 'below' }{$name} }, $i;
        }
        if (!$ok) {
            $self->{polled}{$i} = 1;
            $failed++;
        }
    }
    if ($failed) {
        $log->msg('warning', "cannot watch a directory ($first_error): $failed"
                  . " of the $n files the server depends on are checked on"
                  . ' every call');
    }
}

# inotify_init1(IN_NONBLOCK | IN_CLOEXEC) as a perl handle, or undef
# with $$WHY set.
sub _inotify_fh ($$) {
    my ($nr, $why) = @_;
    my $fd = syscall($nr, O_NONBLOCK | IN_CLOEXEC);
    if ($fd < 0) {
        $$why = "inotify_init1: $!";
        return undef;
    }
    my $fh;
    if (!open($fh, '<&=', $fd)) {
        $$why = "fdopen of inotify fd $fd: $!";
        POSIX::close($fd);
        return undef;
    }
    # Make sure of the flags, whatever the architecture's values.
    my $fdflags = fcntl($fh, F_GETFD, 0);
    fcntl($fh, F_SETFD, $fdflags | FD_CLOEXEC)
        if defined $fdflags && !($fdflags & FD_CLOEXEC);
    my $flflags = fcntl($fh, F_GETFL, 0);
    fcntl($fh, F_SETFL, $flflags | O_NONBLOCK)
        if defined $flflags && !($flflags & O_NONBLOCK);
    return $fh;
}

# _path_steps(PATH): the watches PATH needs, as [DIR, NAME, HOLDER]:
# for the path as given and, if it differs, the path with every
# symbolic link resolved, each directory on the way with the name of
# the next step (HOLDER false), and the directory holding the file with
# the file's name (HOLDER true).
sub _path_steps ($) {
    my ($path) = @_;
    my @paths = ($path);
    my $real = Cwd::abs_path($path);
    push @paths, $real if defined $real && $real ne $path;
    my @steps;
    foreach my $p (@paths) {
        my @parts = grep { length && $_ ne '.' } split m{/}, $p;
        next unless @parts;
        my $file = pop @parts;
        my $dir = '/';
        foreach my $part (@parts) {
            push @steps, [ $dir, $part, 0 ];
            $dir = $dir eq '/' ? "/$part" : "$dir/$part";
        }
        push @steps, [ $dir, $file, 1 ];
    }
    return @steps;
}

#---------- checking ----------

# Reads every pending event and marks in TODO (index => 'stat' or
# 'written') the files to look at.
sub _drain {
    my ($self, $todo) = @_;
    my $dirs = $self->{dirs};
    for (;;) {
        my $buf = '';
        my $r = sysread($self->{fh}, $buf, READ_SIZE);
        if (!defined $r) {
            return if $! == EAGAIN || $! == EWOULDBLOCK;
            next if $! == EINTR;
            $self->_give_up("read from inotify: $!", $todo);
            return;
        }
        if ($r == 0) {
            $self->_give_up('end of file on inotify', $todo);
            return;
        }
        my $off = 0;
        while ($off + 16 <= length $buf) {
            my ($wd, $mask, undef, $len) = unpack('iIII', substr($buf, $off, 16));
            if ($off + 16 + $len > length $buf) {
                # The kernel never splits an event; take it as lost ones.
                $mask = IN_Q_OVERFLOW;
                $len = length($buf) - $off - 16;
            }
            my $name = substr($buf, $off + 16, $len);
            $name =~ s/\0+\z//;
            $off += 16 + $len;
            if ($mask & IN_Q_OVERFLOW) {
                # Events were lost: look at everything once.
                $todo->{$_} //= 'stat' foreach 0 .. $#{ $self->{files} };
                next;
            }
            my $rec = $dirs->{$wd} or next;
            if ($mask & WATCH_LOST) {
                # The directory was removed or moved: the watch no
                # longer follows the path, so from now on its files are
                # re-stat'd on every check.
                foreach my $list (values(%{ $rec->{files} }),
                                  values(%{ $rec->{below} })) {
                    foreach my $i (@$list) {
                        $self->{polled}{$i} = 1;
                        $todo->{$i} //= 'stat';
                    }
                }
                next;
            }
            next unless length $name;
            foreach my $i (@{ $rec->{files}{$name} // [] }) {
                $todo->{$i} = ($mask & IN_MODIFY) ? 'written'
                            : ($todo->{$i} // 'stat');
            }
            # A directory or link on the way renamed, replaced or
            # removed: the watches further down may now be on the wrong
            # directories, so those files are re-stat'd from now on.
            foreach my $i (@{ $rec->{below}{$name} // [] }) {
                $self->{polled}{$i} = 1;
                $todo->{$i} //= 'stat';
            }
        }
    }
}

# inotify failed us after all: re-stat everything from now on.
sub _give_up {
    my ($self, $why, $todo) = @_;
    $self->{log}->msg('warning', "$why: from now on each of the "
                      . scalar(@{ $self->{files} }) . ' files the server'
                      . ' depends on is checked on every call');
    close(delete $self->{fh});
    $self->{polled}{$_} = 1 foreach 0 .. $#{ $self->{files} };
    $todo->{$_} //= 'stat' foreach 0 .. $#{ $self->{files} };
}

1;

__END__

=head1 NAME

Prefork::Interp::Reload - has the program changed since the server started? (internal)

=head1 DESCRIPTION

Internal to L<Prefork::Interp>: records the identity (device, inode,
size, modification and status-change times, or absence) of every file
the server depends on when it starts, watches their directories with
inotify, and on each new connection says whether any of them has
changed since.  See L<Prefork::Interp/"AUTOMATIC RELOADING">.

=cut
