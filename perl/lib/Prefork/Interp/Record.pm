# Prefork::Interp::Record - the server's lines in its server record
# (protocol.md 8, extension record1), which `prefork-interp --list`
# reads.
#
# The client that starts a server writes the record (m<IDENT> in the
# run directory: what the server runs, where, since when) and passes
# its path at the end of PREFORK_INTERP, announced by the item
# record1.  The server opens it (read-write, close-on-exec, never
# through a symbolic link; it must be a regular file of our effective
# uid), appends one fixed-width line, 81 bytes with its newline:
#
#     server=PID TICKS LIBRARY CALLS RUNNING LAST
#
# (PID in 10 columns, TICKS, our start time in clock ticks after boot,
# field 22 of /proc/self/stat, in 20, "perl" left-aligned in 8, CALLS
# in 12, RUNNING in 6, LAST, when the last call started in Unix
# seconds, in 12) and rewrites it in place when a call starts or ends.
# After it, the last error or warning the server logged:
#
#     error=SECS MESSAGE
#
# MESSAGE escaped as the record's values are (bytes below 0x20, 0x7f
# and above, and "%", as %HH), the file truncated after it, so there is
# at most one.  Spares and executors close the fd.
#
# Loaded by the server only (Prefork::Interp::Server): the setup
# process does not touch the record.
#
# Copyright the prefork-interp contributors; see the project's
# top-level files for the licence.

package Prefork::Interp::Record;

use strict;
use warnings;

use Fcntl qw(O_RDWR O_NOFOLLOW O_NONBLOCK SEEK_SET SEEK_END S_ISREG);

our $VERSION = '1.0.0';

use constant LIBRARY => 'perl';

# The server line's length, newline included.
use constant LINE_LEN => 7 + 10 + 1 + 20 + 1 + 8 + 1 + 12 + 1 + 6 + 1 + 12 + 1;

# new(PATH, IN_PLACE, RUNNING, LOG): opens the record at PATH and
# appends our line; undef (logged) if it cannot be used.  IN_PLACE: the
# setup process runs the first call (it counts as call 1); RUNNING: and
# it is still running.
sub new {
    my ($class, $path, $in_place, $running, $log) = @_;
    my $fh;
    if (!sysopen($fh, $path, O_RDWR | O_NOFOLLOW | O_NONBLOCK)) {
        $log->msg('warning', "opening the server record $path: $!");
        return undef;
    }
    my @st = stat $fh;
    if (!@st || !S_ISREG($st[2]) || $st[4] != $>) {
        close $fh;
        $log->msg('warning', "the server record $path is not a regular"
                  . ' file of ours; not using it');
        return undef;
    }
    my $offset = sysseek($fh, 0, SEEK_END);
    my $self = bless {
        fh      => $fh,
        path    => $path,
        log     => $log,
        offset  => $offset ? $offset + 0 : 0,
        pid     => $$,
        ticks   => _start_ticks(),
        calls   => $in_place ? 1 : 0,
        running => $running ? 1 : 0,
        last    => $in_place ? time : 0,
    }, $class;
    return undef unless defined $offset && $self->_write;
    return $self;
}

# line(): the server line, newline included (LINE_LEN bytes).
sub line {
    my ($self) = @_;
    return sprintf "server=%10d %20s %-8s %12d %6d %12d\n", $self->{pid},
        $self->{ticks}, LIBRARY, $self->{calls}, $self->{running},
        $self->{last};
}

# started(): a call has started.
sub started {
    my ($self) = @_;
    $self->{calls}++;
    $self->{running}++;
    $self->{last} = time;
    $self->_write;
}

# ended(N): N calls (default 1) have ended.
sub ended {
    my ($self, $n) = @_;
    $n //= 1;
    return unless $n > 0;
    $self->{running} -= $n;
    $self->{running} = 0 if $self->{running} < 0;
    $self->_write;
}

# error(TEXT): TEXT is the last error or warning logged.
sub error {
    my ($self, $text) = @_;
    my $fh = $self->{fh} or return;
    my $line = 'error=' . time . ' ' . escape($text) . "\n";
    my $at = $self->{offset} + LINE_LEN;
    local $!;
    # The record may be gone (--kill removes it): no complaint, it
    # would only come back here.
    _write_at($fh, $line, $at) && truncate($fh, $at + length $line);
}

# release(): closes the record, in a spare or executor, or once it
# failed.
sub release {
    my ($self) = @_;
    my $fh = delete $self->{fh} or return;
    close($fh);
}

# escape(BYTES): as protocol.md 8 writes values.
sub escape ($) {
    my ($text) = @_;
    utf8::encode($text) if utf8::is_utf8($text);
    $text =~ s/([^\x20-\x24\x26-\x7e])/sprintf '%%%02X', ord $1/ge;
    return $text;
}

# Writes the line in place; on failure says so, once, and stops.
sub _write {
    my ($self) = @_;
    my $fh = $self->{fh} or return 0;
    return 1 if _write_at($fh, $self->line, $self->{offset});
    my $e = "$!";
    $self->release;
    $self->{log}->msg('warning', "writing the server record"
                      . " $self->{path}: $e");
    return 0;
}

sub _write_at ($$$) {
    my ($fh, $bytes, $at) = @_;
    defined sysseek($fh, $at, SEEK_SET) or return 0;
    my $n = syswrite($fh, $bytes);
    if (defined $n && $n != length $bytes) {
        $! = 0;
        return 0;
    }
    return defined $n;
}

# Our start time in clock ticks after boot (field 22 of
# /proc/self/stat), 0 if it cannot be read.
sub _start_ticks () {
    open(my $fh, '<', '/proc/self/stat') or return 0;
    my $stat = <$fh> // '';
    close($fh);
    my ($rest) = $stat =~ m/\) (.*)\z/s or return 0;
    my $ticks = (split / /, $rest)[22 - 3];
    return defined $ticks && $ticks =~ m/\A[0-9]+\z/ ? $ticks : 0;
}

1;

__END__

=head1 NAME

Prefork::Interp::Record - the server's line in its server record, for
C<prefork-interp --list> (internal)

=head1 DESCRIPTION

Internal to L<Prefork::Interp>: with protocol extension C<record1>
(protocol.md section 8) the server appends a fixed-width line to the
record its client wrote (pid, start time, library, calls, running
calls, last call) and keeps it up to date, followed by the last error
or warning it logged.  See the comments in the source.

=cut
