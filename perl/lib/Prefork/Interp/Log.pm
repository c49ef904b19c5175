# Prefork::Interp::Log - where the server's and executors' messages go.
#
# Once the server has daemonised nobody sees its stderr, so its
# messages go (docs/options.md, "Where messages go"):
#
#   1. to syslog (log_facility), when the system logger takes them;
#   2. to the log file, when one is given (log_file, or the
#      PREFORK_INTERP_LOG environment variable of the run that started
#      the server), as well;
#   3. when syslog is off or did not take the message and no log file
#      is given: to the file "log" in the run directory (beside the
#      server record, protocol.md 8), so that a server without /dev/log
#      still leaves its messages somewhere;
#
# and, while there still is a caller's stderr (the setup process), there
# too.  Errors and warnings are also the server record's last error
# (Prefork::Interp::Record), once the server has one.
#
# A log file is opened for appending (created mode 0600) for each
# message, written with one write(2) per line,
#
#     2026-11-28T23:50:01 tool.pl[4242] warning: message
#
# (the local time, as syslog has it), and once it has reached 1 MiB renamed to FILE.old
# (replacing the previous one), so that the next message starts a new
# one.
#
# Syslog is spoken directly over /dev/log, one datagram per message,
# rather than through Sys::Syslog: Sys::Syslog keeps process-wide state
# (ident, facility, an open socket) that the script may be using for
# its own logging, and our executors must hand that back untouched.
# Messages are rare, so opening a socket per message costs nothing
# that matters, and no descriptor of ours is ever inherited.
#
# Copyright the prefork-interp contributors; see the project's
# top-level files for the licence.

package Prefork::Interp::Log;

use strict;
use warnings;

# Nothing else is loaded here: the options are checked (facility_code)
# in every run of a script, a direct one included.  Socket and Fcntl
# are loaded when there is something to log.

our $VERSION = '1.0.0';

use constant SYSLOG_PATH => '/dev/log';

# A log file is renamed to FILE.old once it has reached this size.  (Not
# documented: the tests make it smaller.)
our $ROTATE_SIZE = 1024 * 1024;

# The level's name in a log file.
my %LEVEL_NAME = (err => 'error', warning => 'warning', info => 'info',
                  debug => 'debug');

# Levels we use, as syslog severities.  debug is for what happens
# routinely under load or abuse (an idle connection dropped), which
# syslog usually keeps out of the logs.
my %SEVERITY = (err => 3, warning => 4, info => 6, debug => 7);

# The facilities, by their <syslog.h> names without "LOG_", and their
# codes (already shifted, as in <syslog.h>; every Unix has these
# values).  Not from Sys::Syslog, which takes about 20 ms to load.
my %FACILITY = (
    KERN => 0, USER => 1, MAIL => 2, DAEMON => 3, AUTH => 4, SYSLOG => 5,
    LPR => 6, NEWS => 7, UUCP => 8, CRON => 9, AUTHPRIV => 10, FTP => 11,
    map { ("LOCAL$_" => 16 + $_) } 0 .. 7,
);
$_ <<= 3 foreach values %FACILITY;

# facility_code(NAME) - NAME as Sys::Syslog::openlog takes it: "user",
# "LOG_USER", "local3", ...  Returns the facility code, or undef if NAME
# is not a facility (a severity or an option is not).
sub facility_code ($) {
    my ($name) = @_;
    return undef unless defined $name && $name =~ m/\A(?:LOG_)?(\w+)\z/i;
    return $FACILITY{ uc $1 };
}

# new(ident => NAME, facility => NAME (undef or '': no syslog),
#     file => PATH-or-undef, fallback => PATH-or-undef)
# fallback: where messages go when syslog does not take them and there
# is no file (the run directory's "log").
sub new {
    my ($class, %args) = @_;
    my $self = bless {
        ident    => $args{ident},
        facility => undef,
        file     => $args{file},
        fallback => $args{fallback},
        stderr   => 1,
        record   => undef,
    }, $class;
    if (defined $args{facility} && length $args{facility}) {
        $self->{facility} = facility_code($args{facility});
    }
    return $self;
}

# to_stderr(BOOL): whether messages also go to our stderr.
sub to_stderr {
    my ($self, $on) = @_;
    $self->{stderr} = $on;
}

# record(RECORD): errors and warnings are also RECORD's last error (a
# Prefork::Interp::Record; undef: no more).
sub record {
    my ($self, $record) = @_;
    $self->{record} = $record;
}

# msg(LEVEL, TEXT): LEVEL is 'err', 'warning', 'info' or 'debug'.  Never dies:
# there is nowhere left to report a failure to log.
sub msg {
    my ($self, $level, $text) = @_;
    $text =~ s/\n+\z//;
    $text =~ s/\n/ /g;

    my $sent = 0;
    if (defined $self->{facility}) {
        my $pri = $self->{facility} | $SEVERITY{$level};
        $sent = _send_syslog("<$pri>$self->{ident}\[$$\]: prefork: $text");
    }
    my $file = $self->{file} // ($sent ? undef : $self->{fallback});
    if (defined $file) {
        my @t = localtime;
        my $line = sprintf("%04d-%02d-%02dT%02d:%02d:%02d", $t[5] + 1900,
                           $t[4] + 1, @t[3, 2, 1, 0])
                 . " $self->{ident}\[$$\] $LEVEL_NAME{$level}: $text\n";
        utf8::encode($line) if utf8::is_utf8($line);
        _append($file, $line);
    }
    if ($self->{record} && ($level eq 'err' || $level eq 'warning')) {
        $self->{record}->error($text);
    }
    if ($self->{stderr}) {
        local $!;
        print STDERR "$self->{ident}: prefork: $text\n";
    }
}

# _append(PATH, LINE): one write, in append mode; then, if the file has
# reached $ROTATE_SIZE, renames it to PATH.old (unless PATH names
# another file by now: another process has done it).
sub _append ($$) {
    my ($path, $line) = @_;
    local $!;
    require Fcntl;
    sysopen(my $fh, $path, Fcntl::O_WRONLY() | Fcntl::O_APPEND()
                           | Fcntl::O_CREAT(), 0600) or return;
    syswrite($fh, $line);
    my @ours = stat $fh;
    close $fh;
    return unless @ours && $ours[7] >= $ROTATE_SIZE;
    my @now = stat $path;
    rename($path, "$path.old")
        if @now && $now[0] == $ours[0] && $now[1] == $ours[1];
}

# _send_syslog(DATAGRAM): true if the system logger took it.
sub _send_syslog ($) {
    my ($datagram) = @_;
    local $!;
    return 0 unless -S SYSLOG_PATH;
    require Socket;
    my $addr = Socket::pack_sockaddr_un(SYSLOG_PATH);
    foreach my $type (Socket::SOCK_DGRAM(), Socket::SOCK_STREAM()) {
        socket(my $sock, Socket::AF_UNIX(), $type, 0) or return 0;
        next unless connect($sock, $addr);
        # A stream syslog socket wants each message terminated.
        my $data = $type == Socket::SOCK_STREAM() ? "$datagram\0"
                                                  : $datagram;
        my $sent = send($sock, $data, 0);
        close $sock;
        return defined $sent && $sent == length $data;
    }
    return 0;
}

1;

__END__

=head1 NAME

Prefork::Interp::Log - logging for the Prefork::Interp server (internal)

=head1 DESCRIPTION

Internal to L<Prefork::Interp>.  Sends the server's and executors'
messages to syslog (directly over F</dev/log>), a log file (the one
given, or without it and without syslog, F<log> in the run directory),
the server record's last error and, before daemonising, standard
error.

=cut
