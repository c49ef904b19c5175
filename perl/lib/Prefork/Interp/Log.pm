# Prefork::Interp::Log - where the server's and executors' messages go.
#
# Once the server has daemonised nobody sees its stderr, so its
# messages go to syslog (upstream part 3 step 2), to a log file if the
# script asked for one, and, while there still is a caller's stderr
# (the setup process), there too.  Errors and warnings are also the
# server record's last error (Prefork::Interp::Record), once the server
# has one.
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
# in every run of a script, a direct one included.  Socket and POSIX
# are loaded when there is something to log.

our $VERSION = '1.0.0';

use constant SYSLOG_PATH => '/dev/log';

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

# new(ident => NAME, facility => NAME-or-'', file => PATH-or-undef)
sub new {
    my ($class, %args) = @_;
    my $self = bless {
        ident    => $args{ident},
        facility => undef,
        file     => $args{file},
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
    my $line = "prefork: $text";

    if (defined $self->{facility}) {
        my $pri = $self->{facility} | $SEVERITY{$level};
        _send_syslog("<$pri>$self->{ident}\[$$\]: $line");
    }
    if (defined $self->{file}) {
        require POSIX;
        my @t = gmtime;
        my $stamp = POSIX::strftime('%Y-%m-%dT%H:%M:%SZ', @t);
        if (open my $fh, '>>', $self->{file}) {
            print $fh "$stamp $self->{ident}\[$$\]: $level: $line\n";
            close $fh;
        }
    }
    if ($self->{record} && ($level eq 'err' || $level eq 'warning')) {
        $self->{record}->error($text);
    }
    if ($self->{stderr}) {
        local $!;
        print STDERR "$self->{ident}: $line\n";
    }
}

sub _send_syslog ($) {
    my ($datagram) = @_;
    local $!;
    require Socket;
    my $addr = Socket::pack_sockaddr_un(SYSLOG_PATH);
    foreach my $type (Socket::SOCK_DGRAM(), Socket::SOCK_STREAM()) {
        socket(my $sock, Socket::AF_UNIX(), $type, 0) or return;
        next unless connect($sock, $addr);
        # A stream syslog socket wants each message terminated.
        my $data = $type == Socket::SOCK_STREAM() ? "$datagram\0"
                                                  : $datagram;
        send($sock, $data, 0);
        close $sock;
        return;
    }
}

1;

__END__

=head1 NAME

Prefork::Interp::Log - logging for the Prefork::Interp server (internal)

=head1 DESCRIPTION

Internal to L<Prefork::Interp>.  Sends the server's and executors'
messages to syslog (directly over F</dev/log>), an optional log file,
and, before daemonising, standard error.

=cut
