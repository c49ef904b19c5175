# The Perl program of the interactive terminal tests, with the modes of
# programs.py (markers <<...>> are what the tests look for), served by this
# project's Prefork::Interp.
use strict;
use warnings;
use POSIX ();
use Prefork::Interp;

prefork_initialisation_complete();

if (my $f = $ENV{PFI_SESSIONS}) {
    open my $fh, '>>', $f or die "$f: $!";
    open my $stat, '<', '/proc/self/stat' or die "/proc/self/stat: $!";
    my (undef, $after_name) = split /\) /, scalar(<$stat>), 2;
    print $fh((split ' ', $after_name)[3], "\n");    # the session id
    close $fh;
}

$| = 1;
sub say_marker { print "<<$_[0]>>\n" }
my $got = 0;
sub wait_for_signal { select undef, undef, undef, 0.02 until $got }

my $mode = shift @ARGV // '';
if ($mode eq 'warm') {
    exit 0;
} elsif ($mode eq 'interrupt') {
    local $SIG{INT} = sub { $got = 1 };
    say_marker('ready');
    wait_for_signal();
    say_marker('cleanup');
    exit 3;
} elsif ($mode eq 'finally') {
    $SIG{INT} = sub { $got = 1 };
    say_marker('ready');
    wait_for_signal();
    say_marker('cleanup');
    $SIG{INT} = 'DEFAULT';
    kill INT => $$;
    sleep 5;
    exit 99;
} elsif ($mode eq 'read-line') {
    say_marker('ready');
    my $line = <STDIN> // '';
    chomp $line;
    say_marker("got $line");
} elsif ($mode eq 'wait-file') {
    say_marker('ready');
    select undef, undef, undef, 0.02 until -e $ARGV[0];
    say_marker('finished');
    exit 5;
} elsif ($mode eq 'winch') {
    require 'sys/ioctl.ph';
    local $SIG{WINCH} = sub { $got = 1 };
    say_marker('ready');
    wait_for_signal();
    my $ws = "\0" x 8;
    ioctl(STDOUT, &TIOCGWINSZ, $ws) or die "TIOCGWINSZ: $!";
    my ($rows, $cols) = unpack 'S2', $ws;
    say_marker("winch ${cols}x$rows");
} elsif ($mode eq 'password') {
    # As password readers do: the controlling terminal, else stdin with
    # the prompt on stderr; echo off where it is a terminal.
    my ($in, $out);
    if (open my $tty, '+<', '/dev/tty') {
        ($in, $out) = ($tty, $tty);
    } else {
        ($in, $out) = (\*STDIN, \*STDERR);
    }
    my $t = POSIX::Termios->new;
    my $is_tty = $t->getattr(fileno $in);
    my $lflag = $is_tty ? $t->getlflag : 0;
    if ($is_tty) {
        $t->setlflag($lflag & ~POSIX::ECHO());
        $t->setattr(fileno $in, POSIX::TCSAFLUSH());
    }
    syswrite $out, '<<password:>>';
    my $line = readline($in) // '';
    chomp $line;
    if ($is_tty) {
        $t->setlflag($lflag);
        $t->setattr(fileno $in, POSIX::TCSAFLUSH());
    }
    syswrite $out, "\n";
    say_marker('len ' . length $line);
} elsif ($mode eq 'pager-run') {
    my $path = "/tmp/pfi-pager-$$.txt";
    open my $fh, '>', $path or die "$path: $!";
    print $fh "page line $_\n" for 1 .. 300;
    close $fh;
    local $SIG{INT} = sub { $got = 1 };
    my $pid = fork // die "fork: $!";
    if (!$pid) {
        $SIG{INT} = 'DEFAULT';
        exec 'less', $path or POSIX::_exit(127);
    }
    my $interrupted = 0;
    while (1) {
        if ($got) {
            kill KILL => $pid;
            waitpid $pid, 0;
            $interrupted = 1;
            last;
        }
        last if waitpid($pid, POSIX::WNOHANG()) == $pid;
        select undef, undef, undef, 0.02;
    }
    unlink $path;
    if ($interrupted) {
        say_marker('interrupted');
        exit 3;
    }
    say_marker('after pager');
} elsif ($mode eq 'tty') {
    if (open my $tty, '<', '/dev/tty') {
        say_marker('tty opened');
    } else {
        my $e = $! + 0;
        my ($name) = grep { my $v = eval "POSIX::$_()"; defined $v && $v == $e } qw(ENXIO ENOENT EACCES EIO);
        say_marker('tty ' . ($name // $e));
    }
} elsif ($mode eq 'tty-read') {
    open my $tty, '+<', '/dev/tty' or die "/dev/tty: $!";
    syswrite $tty, '<<tty prompt>>';
    my $line = readline($tty) // '';
    chomp $line;
    my $fg = POSIX::tcgetpgrp(fileno $tty) == getpgrp() ? 'yes' : 'no';
    say_marker("tty got $line fg=$fg");
} elsif ($mode eq 'pid') {
    say_marker("pid $$");
    select undef, undef, undef, 0.05 while 1;
} elsif ($mode eq 'isatty') {
    say_marker('isatty ' . join '', map { -t $_ ? 'y' : 'n' } \*STDIN, \*STDOUT, \*STDERR);
} elsif ($mode eq 'interleave') {
    STDERR->autoflush(1);
    for my $n (0 .. 99) {
        print "<<o $n>>\n";
        print STDERR "<<e $n>>\n";
    }
} else {
    die "interactive.pl: unknown mode '$mode'\n";
}
