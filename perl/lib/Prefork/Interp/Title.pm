# Prefork::Interp::Title - what ps and /proc/PID/cmdline show of the
# server, its spares and the executors.
#
# A server is forked from the process that ran the script for the first
# caller, so until it says otherwise its command line is that caller's,
# arguments and all, for its whole life (and its spares'), for every
# user to read.  So the server and its spares show what they are:
#
#     prefork-interp server: SCRIPT (perl)
#     prefork-interp spare: SCRIPT (perl)
#
# (SCRIPT as the first run named it), and an executor handed a call
# shows what a direct run of that call would: the interpreter, the
# script and the caller's arguments, and perl's process name (comm)
# again.
#
# Perl's $0 rewrites the memory that holds the arguments (and, where it
# follows them, the environment's) and sets the name (prctl
# PR_SET_NAME); where it could not use the environment's memory it pads
# the title with spaces.  The command line of a call, several words,
# and a tidy title are written into that memory through
# /proc/self/mem, as the Python library does (a process may write its
# own memory so without privilege), cut to fit, the rest zeroed.  All
# of it best effort: a failure leaves the title as it was.
#
# Loaded by the server only (Prefork::Interp::Server).
#
# Copyright the prefork-interp contributors; see the project's
# top-level files for the licence.

package Prefork::Interp::Title;

use strict;
use warnings;

use Fcntl qw(O_RDONLY O_WRONLY SEEK_SET);

our $VERSION = '1.0.0';

# The process's name (/proc/self/comm: perl's, as a direct run has it)
# before the server changed it; given back to each executor.
my $COMM;

# of_role(ROLE, SCRIPT): "prefork-interp ROLE: SCRIPT (perl)".
sub of_role ($$) {
    my ($role, $script) = @_;
    return "prefork-interp $role: $script (perl)";
}

# set(TITLE): in the server or a spare, make TITLE this process's $0
# and its whole command line.  The first call remembers the process's
# name for the executors.
sub set ($) {
    my ($title) = @_;
    if (!defined $COMM) {
        $COMM = _read('/proc/self/comm') // '';
        chomp $COMM;
    }
    $0 = $title;
    _args_area();    # known, for every process forked from here on
    my $shown = _read('/proc/self/cmdline');
    return if defined $shown && $shown =~ m/\A\Q$title\E\0?\z/;
    _write_args($title);
}

# as_call(WORDS): in an executor, once $0 is the script's again: show
# WORDS (the call's interpreter, script and arguments) as the command
# line, and perl's own process name.
sub as_call {
    my (@words) = @_;
    _write_args(join "\0", @words);
    if (defined $COMM && length $COMM) {
        local $!;
        if (sysopen(my $fh, '/proc/self/comm', O_WRONLY)) {
            syswrite($fh, $COMM);
            close $fh;
        }
    }
}

# _write_args(BYTES): BYTES (NUL-separated words) over the memory of
# the arguments the process was started with (arg_start and arg_end,
# fields 48 and 49 of /proc/self/stat), cut to fit, the rest zeroed.
sub _write_args ($) {
    my ($text) = @_;
    local $!;
    my ($start, $len) = _args_area() or return;
    utf8::encode($text) if utf8::is_utf8($text);
    my $area = substr($text, 0, $len - 1);
    $area .= "\0" x ($len - length $area);
    sysopen(my $mem, '/proc/self/mem', O_WRONLY) or return;
    syswrite($mem, $area) if sysseek($mem, $start, SEEK_SET);
    close $mem;
}

# _args_area(): (START, LENGTH) of our argument area, as
# /proc/self/stat gives it (arg_start and arg_end, its fields 48 and
# 49), or () if it cannot be read.  Read once: a fork, or perl setting
# $0, does not move it, so the server's answer is every spare's and
# executor's (an executor would read and parse /proc/self/stat on every
# call otherwise).
my @ARGS_AREA;
sub _args_area () {
    return @ARGS_AREA if @ARGS_AREA;
    my $stat = _read('/proc/self/stat') // return;
    my ($rest) = $stat =~ m/\) (.*)\z/s or return;
    my @f = split / /, $rest;
    my ($start, $end) = @f[48 - 3, 49 - 3];
    return unless defined $end && $start =~ m/\A[0-9]+\z/
        && $end =~ m/\A[0-9]+\z/ && $end > $start;
    return @ARGS_AREA = ($start, $end - $start);
}

sub _read ($) {
    my ($path) = @_;
    local $!;
    sysopen(my $fh, $path, O_RDONLY) or return undef;
    my $data = '';
    1 while sysread($fh, $data, 4096, length $data);
    close $fh;
    return $data;
}

1;

__END__

=head1 NAME

Prefork::Interp::Title - process titles of the server, its spares and
the executors (internal)

=head1 DESCRIPTION

Internal to L<Prefork::Interp>: the server shows
C<prefork-interp server: SCRIPT (perl)> and its spares
C<prefork-interp spare: SCRIPT (perl)> as their command line, never a
caller's arguments; an executor shows its call's, as a direct run
would.  See the comments in the source.

=cut
