# PfiTest - helpers for the Prefork::Interp test suite.
#
# Two ways of driving the library:
#
#  * PfiTest::Fixture runs scripts through a real prefork-interp client:
#    chiark-utils' C client (/usr/bin/prefork-interp) or ours (from
#    $PREFORK_INTERP_CLIENT, default target/release/prefork-interp in
#    the repository).  Each fixture has a private temp dir holding its
#    scripts (so each script has its own server identity) and, for our
#    client, its run dir (PREFORK_INTERP_RUN_DIR).
#
#  * PfiTest::Harness plays the client itself, byte by byte, so tests
#    can check the wire format and send the garbage no real client
#    would.
#
# Processes are tracked by session id: every test script appends its
# session (= its server's pid, since the server calls setsid) to
# <dir>/sessions on each call.  Cleanup stops servers with --kill (or,
# for the harness, by closing the watcher pipe, as a real watcher does)
# and then kills whatever is left in those sessions, by pid.  Zombies
# whose parent is pid 1 are ignored: this machine's init does not reap.

package PfiTest;

use strict;

# What a shell gives the commands it runs in the foreground: SIGINT and
# SIGQUIT at their default, also when the tests were started in the
# background of a non-interactive shell (which ignores both for its
# background jobs); the processes the tests start inherit them.
$SIG{INT} = 'DEFAULT';
$SIG{QUIT} = 'DEFAULT';
use warnings;

use Config ();
use Cwd qw(abs_path);
use Exporter qw(import);
use File::Basename qw(dirname);
use File::Temp qw(tempdir);
use POSIX qw(WNOHANG);
use Test::More;
use Time::HiRes qw(sleep);

our @EXPORT_OK = qw(
    root_dir lib_dir client_kinds fixture slurp spit wait_for
    procs_in_sessions describe_status listen_path zombie_children
    alive read_bytes autoreload_pair session_of server_record cmdline_of
    start_ticks server_helpers
);

# The repository (in an unpacked distribution: the directory above it),
# and the library beside these tests (perl/lib, or the distribution's lib).
my $ROOT = abs_path(dirname(__FILE__) . '/../../..');
my $LIB = abs_path(dirname(__FILE__) . '/../../lib');

sub root_dir () { $ROOT }
sub lib_dir () { $LIB }

# How many processes our server keeps besides its spares, as its
# children: the forker that makes them (Prefork::Interp::Forker), where
# one can run.
sub server_helpers () {
    local @INC = ($LIB, @INC);
    require Prefork::Interp::Forker;
    return Prefork::Interp::Forker::available() ? 1 : 0;
}

use constant C_CLIENT => '/usr/bin/prefork-interp';

sub our_client () {
    return $ENV{PREFORK_INTERP_CLIENT}
        // "$ROOT/target/release/prefork-interp";
}

# The clients every client-level test runs against.
sub client_kinds () { ('c', 'ours') }

sub client_path ($) {
    my ($kind) = @_;
    return $kind eq 'c' ? C_CLIENT : our_client();
}

# fixture(KIND): a new PfiTest::Fixture, or undef after failing the
# current test if that client is not there.  (A missing client is a
# failure, not a skip: CI must not go green without it.)
sub fixture ($) {
    my ($kind) = @_;
    my $path = client_path($kind);
    if (!-x $path) {
        fail("$kind client: $path is not an executable file");
        diag($kind eq 'ours'
             ? 'build it with "cargo build --release" in the repository,'
               . ' or set PREFORK_INTERP_CLIENT'
             : 'install chiark-utils-bin');
        return undef;
    }
    return PfiTest::Fixture->new($kind, $path);
}

sub slurp ($) {
    my ($file) = @_;
    open(my $fh, '<:raw', $file) or return undef;
    local $/;
    my $data = <$fh>;
    return $data // '';
}

sub spit ($$) {
    my ($file, $data) = @_;
    open(my $fh, '>:raw', $file) or die "write $file: $!";
    print $fh $data;
    close $fh or die "close $file: $!";
}

# wait_for(TIMEOUT, CODE): polls CODE until it returns true or TIMEOUT
# seconds pass; returns CODE's last value.
sub wait_for ($$) {
    my ($timeout, $code) = @_;
    my $deadline = Time::HiRes::time() + $timeout;
    for (;;) {
        my $r = $code->();
        return $r if $r || Time::HiRes::time() > $deadline;
        sleep 0.02;
    }
}

# All processes, as hash refs: pid, ppid, pgrp, sid, state, comm.
sub _all_procs () {
    my @procs;
    opendir(my $d, '/proc') or die "opendir /proc: $!";
    foreach my $pid (grep { m/\A[0-9]+\z/ } readdir $d) {
        my $stat = slurp("/proc/$pid/stat") // next;
        # comm may hold spaces and parentheses: split after the last ')'.
        my ($comm, $rest) = $stat =~ m/\A[0-9]+ \((.*)\) (.*)\z/s or next;
        my ($state, $ppid, $pgrp, $sid) = split ' ', $rest;
        push @procs, { pid => $pid, ppid => $ppid, pgrp => $pgrp,
                       sid => $sid, state => $state, comm => $comm };
    }
    return @procs;
}

# procs_in_sessions(SIDS, PIDS): live processes in any of the sessions,
# or with any of the pids.  Zombies whose parent is init are not
# counted (nobody will reap them here); other zombies are.
sub procs_in_sessions ($;$) {
    my ($sids, $pids) = @_;
    my %sid = map { $_ => 1 } @$sids;
    my %pid = map { $_ => 1 } @{ $pids // [] };
    return grep {
        ($sid{ $_->{sid} } || $pid{ $_->{pid} })
            && !($_->{state} eq 'Z' && $_->{ppid} == 1)
            && $_->{pid} != $$
    } _all_procs();
}

# In a child about to exec: closes every fd above 2 but KEEP, so that
# what the script sees does not depend on what the test runner left
# open.
sub close_fds_except {
    my %keep = map { $_ => 1 } @_;
    opendir(my $d, '/proc/self/fd') or die "opendir /proc/self/fd: $!";
    my @fds = grep { m/\A[0-9]+\z/ && $_ > 2 && !$keep{$_} } readdir $d;
    closedir $d;
    POSIX::close($_) foreach @fds;
}

# In a child about to exec: every signal at its default disposition,
# none blocked.
sub default_signals () {
    foreach my $name (split ' ', $Config::Config{sig_name}) {
        next if $name =~ m/\A(?:ZERO|KILL|STOP|NUM3[23])\z/;
        $SIG{$name} = 'DEFAULT';
    }
    POSIX::sigprocmask(POSIX::SIG_SETMASK(), POSIX::SigSet->new)
        or die "sigprocmask: $!";
}

# listen_path(PID[, RUN_DIR]): the path of the listening Unix socket held
# by the process PID (a server), found through /proc/net/unix.  Our client
# binds through its open run directory (/proc/self/fd/N/NAME): such a path
# is NAME in RUN_DIR.
sub listen_path ($;$) {
    my ($pid, $run_dir) = @_;
    my %inodes;
    opendir(my $d, "/proc/$pid/fd") or return undef;
    foreach my $fd (readdir $d) {
        my $l = readlink("/proc/$pid/fd/$fd") // next;
        $inodes{$1} = 1 if $l =~ m/\Asocket:\[([0-9]+)\]\z/;
    }
    open(my $fh, '<', '/proc/net/unix') or return undef;
    while (my $line = <$fh>) {
        my @f = split ' ', $line;
        # Num RefCount Protocol Flags Type St Inode Path; St 01 = listening
        next unless @f >= 8 && $inodes{ $f[6] } && $f[3] eq '00010000';
        my $path = $f[7];
        $path = "$run_dir/$1" if defined $run_dir && $path =~ m{\A/proc/self/fd/[0-9]+/([^/]+)\z};
        return $path;
    }
    return undef;
}

# session_of(PID): the session of process PID (default: ours), or undef.
sub session_of (;$) {
    my ($pid) = @_;
    my $stat = slurp('/proc/' . ($pid // 'self') . '/stat') // return undef;
    my ($sid) = $stat =~ m/\) \S+ \S+ \S+ (\S+)/;
    return $sid;
}

# server_record(RUN_DIR): the server record (protocol.md 8) in our
# client's RUN_DIR, which must hold one (m<IDENT>), parsed from the text
# of protocol.md, not with the library's code: a hash ref with path,
# text (the whole file), items (key => unescaped value, in the client's
# lines), server (the server line's fields: pid, ticks, library, calls,
# running, last, and line, the line as written) and error (secs and
# message, unescaped, of an error line), or undef if there is no record.
sub server_record ($) {
    my ($run_dir) = @_;
    my @paths = glob("$run_dir/m*");
    return undef unless @paths == 1;
    my $text = slurp($paths[0]) // return undef;
    my %r = (path => $paths[0], text => $text, items => {});
    my $unescape = sub { (my $v = shift) =~ s/%([0-9A-F]{2})/chr hex $1/ge; $v };
    foreach my $line ($text =~ m/^(.*\n)/mg) {
        my ($key, $value) = $line =~ m/\A([^=]*)=(.*)\n\z/s or next;
        if ($key eq 'server') {
            my @f = split ' ', $value;
            $r{server} = { line => $line };
            @{ $r{server} }{qw(pid ticks library calls running last)} = @f;
        } elsif ($key eq 'error') {
            my ($secs, $msg) = $value =~ m/\A([0-9]+) (.*)\z/s;
            $r{error} = { secs => $secs, message => $unescape->($msg // '') };
        } else {
            $r{items}{$key} = $unescape->($value);
        }
    }
    return \%r;
}

# cmdline_of(PID): /proc/PID/cmdline, trailing NULs left out (a title
# written over the arguments' memory leaves the rest zeroed), or undef.
sub cmdline_of ($) {
    my ($pid) = @_;
    my $cmd = slurp("/proc/$pid/cmdline") // return undef;
    $cmd =~ s/\0+\z//;
    return $cmd;
}

# start_ticks(PID): field 22 of /proc/PID/stat.
sub start_ticks ($) {
    my ($pid) = @_;
    my $stat = slurp("/proc/$pid/stat") // return undef;
    my ($rest) = $stat =~ m/\) (.*)\z/s or return undef;
    return (split ' ', $rest)[22 - 3];
}

# Whether process PID exists and has not exited (a zombie has).
sub alive ($) {
    my ($pid) = @_;
    my $stat = slurp("/proc/$pid/stat") // return 0;
    return $stat !~ m/\) Z /;
}

# Reads N bytes from CONN, or fewer at EOF, within TIMEOUT seconds
# (default 20).
sub read_bytes ($$;$) {
    my ($conn, $n, $timeout) = @_;
    my $deadline = Time::HiRes::time() + ($timeout // 20);
    my $buf = '';
    while (length($buf) < $n) {
        my $left = $deadline - Time::HiRes::time();
        last if $left <= 0;
        my $rbits = '';
        vec($rbits, fileno($conn), 1) = 1;
        next unless select($rbits, undef, undef, $left) > 0;
        my $r = sysread($conn, $buf, $n - length($buf), length($buf));
        last if !$r;
    }
    return $buf;
}

# autoreload_pair(N): two fixtures of our client ('on', 'off'), each with a
# script 'cost.pl' that loads the same N generated modules and prints how
# many it has, with autoreload_inc on and off; each server has a run
# directory of its own, and the modules live in the first one's directory.
# Returns the fixtures and the scripts (hash refs by 'on' and 'off'), or
# nothing when our client is not built.
sub autoreload_pair ($) {
    my ($modules) = @_;
    my %fx;
    $fx{on} = fixture('ours') or return;
    $fx{off} = fixture('ours') or return;
    my $lib = $fx{on}->dir . '/lib';
    mkdir $lib or die "mkdir $lib: $!";
    mkdir "$lib/PfiCost" or die "mkdir $lib/PfiCost: $!";
    foreach my $i (1 .. $modules) {
        spit("$lib/PfiCost/M$i.pm",
             "package PfiCost::M$i;\nsub n { $i }\n1;\n");
    }
    my %script;
    foreach my $k (qw(on off)) {
        $script{$k} = $fx{$k}->script(
            'cost.pl',
            init => "use lib '$lib';\n"
                  . "BEGIN { require \"PfiCost/M\$_.pm\" foreach 1 .. "
                  . $modules . " }\n",
            opts => 'autoreload_inc => ' . ($k eq 'on' ? 1 : 0),
            body => "print scalar(grep { m{^PfiCost/} } keys %INC), \"\\n\";\n");
    }
    return (\%fx, \%script);
}

# Children of PID that are zombies.
sub zombie_children ($) {
    my ($pid) = @_;
    return grep { $_->{ppid} == $pid && $_->{state} eq 'Z' } _all_procs();
}

# For failure messages: each process, its state and its fds.
sub describe_procs {
    my @lines;
    foreach my $p (@_) {
        push @lines, "left: pid $p->{pid} ($p->{comm}) state $p->{state}"
            . " ppid $p->{ppid} pgrp $p->{pgrp} sid $p->{sid}"
            . " wchan " . (slurp("/proc/$p->{pid}/wchan") // '?');
        opendir(my $d, "/proc/$p->{pid}/fd") or next;
        foreach my $fd (sort { $a <=> $b } grep { m/\A[0-9]+\z/ } readdir $d) {
            my $target = readlink("/proc/$p->{pid}/fd/$fd") // '?';
            push @lines, "    fd $fd -> $target";
            next unless $target =~ m/\Apipe:/;
            # Who else holds this pipe (a watcher, a leaked copy)?
            foreach my $other (_all_procs()) {
                next if $other->{pid} == $p->{pid};
                opendir(my $od, "/proc/$other->{pid}/fd") or next;
                foreach my $ofd (grep { m/\A[0-9]+\z/ } readdir $od) {
                    next unless (readlink("/proc/$other->{pid}/fd/$ofd")
                                 // '') eq $target;
                    my $cmd = slurp("/proc/$other->{pid}/cmdline") // '?';
                    $cmd =~ s/\0/ /g;
                    push @lines, "        also fd $ofd of pid $other->{pid}"
                        . " ($cmd) state $other->{state}";
                }
            }
        }
    }
    return join "\n", @lines;
}

sub describe_status ($) {
    my ($st) = @_;
    return 'undef' unless defined $st;
    return "exit " . ($st >> 8) unless $st & 127;
    return "signal " . ($st & 127) . (($st & 128) ? ' (core)' : '');
}

# Writes a test script: the standard prologue (library, session
# recording), INIT code, the prefork_initialisation_complete call with
# OPTS (perl source), and BODY.
sub script_text (%) {
    my (%a) = @_;
    my $lib = lib_dir();
    my $sessions = "$a{dir}/sessions";
    my $opts = $a{opts} // '';
    my $log = "$a{dir}/log";
    $opts = "log_facility => '', log_file => '$log', $opts"
        unless $a{raw_opts};
    my $shebang = $a{shebang} // '#!/usr/bin/perl';
    my $preamble = $a{preamble} // '';
    my ($test_sid) = (slurp('/proc/self/stat') // '')
        =~ m/\) \S+ \S+ \S+ (\S+)/;
    return <<"EOF";
$shebang
use strict;
use warnings;
$preamble
use lib '$lib';
use Prefork::Interp;
$a{init}
prefork_initialisation_complete($opts);
{
    # Test suite bookkeeping: record this server's session (not the
    # test's own, where a direct run is).
    my (\$sid) = (do { local (\@ARGV, \$/) = '/proc/self/stat'; <> })
        =~ m/\\) \\S+ \\S+ \\S+ (\\S+)/;
    if (\$sid != $test_sid) {
        open(my \$fh, '>>', '$sessions') or die "record session: \$!";
        print \$fh "\$sid\\n";
        close \$fh;
    }
}
$a{body}
EOF
}

#======================================================================
package PfiTest::Fixture;

use strict;
use warnings;

use File::Temp qw(tempdir);
use POSIX qw(WNOHANG);
use Test::More;
use Time::HiRes qw(sleep);

sub new {
    my ($class, $kind, $client) = @_;
    my $dir = Cwd::abs_path(tempdir('pfi-pl-XXXXXX', TMPDIR => 1,
                                    CLEANUP => 1));
    my $self = bless {
        kind     => $kind,
        client   => $client,
        dir      => $dir,
        scripts  => {},
        pids     => [],
        children => {},
    }, $class;
    return $self;
}

sub kind { $_[0]{kind} }
sub dir { $_[0]{dir} }
sub client { $_[0]{client} }
sub run_dir { "$_[0]{dir}/run" }
sub log_text { PfiTest::slurp("$_[0]{dir}/log") // '' }

# The environment callers get (plus what a test adds).
sub base_env {
    my ($self) = @_;
    my %env = (
        PATH => '/usr/local/bin:/usr/bin:/bin',
        HOME => $ENV{HOME} // '/root',
        LC_ALL => 'C',
    );
    $env{PREFORK_INTERP_RUN_DIR} = $self->run_dir if $self->{kind} eq 'ours';
    return %env;
}

# script(NAME, init => CODE, opts => CODE, body => CODE, ...): writes
# NAME in the fixture's dir and returns its path.
sub script {
    my ($self, $name, %a) = @_;
    my $path = "$self->{dir}/$name";
    PfiTest::spit($path, PfiTest::script_text(%a, dir => $self->{dir},
                                               init => $a{init} // '',
                                               body => $a{body} // ''));
    chmod 0755, $path or die "chmod $path: $!";
    $self->{scripts}{$path} = 1;
    return $path;
}

# The command line for a call.  Default: "CLIENT [FLAGS] -U perl
# SCRIPT ARGS", where interp => [...] replaces "-U perl"; with shebang => 1 the script is executed directly and
# its #! line must name the client.
sub command {
    my ($self, $script, %a) = @_;
    return ($script, @{ $a{args} // [] }) if $a{shebang};
    # A direct run, without prefork-interp, for comparison.
    return ('perl', $script, @{ $a{args} // [] }) if $a{direct};
    return ($self->{client}, @{ $a{flags} // [] },
            @{ $a{interp} // [ '-U', 'perl' ] }, $script,
            @{ $a{args} // [] });
}

# start(SCRIPT, args => [...], env => {...}, stdin => STRING,
#       ignore => [SIGNAMES], flags => [...], shebang => BOOL,
#       direct => BOOL, pgrp => BOOL, caller => CODE)
# Starts a call in the background; returns a handle for finish().
# direct: run "perl SCRIPT ARGS" instead of the client.  pgrp: the call
# gets a process group of its own (as a shell's job).  caller: run in
# the child just before exec, to give it a caller's attributes (umask,
# limits, fds...).
sub start {
    my ($self, $script, %a) = @_;
    my $n = ++$self->{seq};
    my %h = (
        in  => "$self->{dir}/call$n.in",
        out => "$self->{dir}/call$n.out",
        err => "$self->{dir}/call$n.err",
    );
    PfiTest::spit($h{in}, $a{stdin} // '');
    my @cmd = $self->command($script, %a);
    my %env = ($self->base_env, %{ $a{env} // {} });
    my $pid = fork // die "fork: $!";
    if (!$pid) {
        eval {
            chdir $self->{dir} or die "chdir: $!";
            open(STDIN, '<', $h{in}) or die "stdin: $!";
            open(STDOUT, '>', $h{out}) or die "stdout: $!";
            open(STDERR, '>', $h{err}) or die "stderr: $!";
            %ENV = %env;
            PfiTest::close_fds_except();
            # A caller as a shell runs a command: every signal at its
            # default, nothing blocked; then what the test asks for.
            PfiTest::default_signals();
            $SIG{$_} = 'IGNORE' foreach @{ $a{ignore} // [] };
            POSIX::setpgid(0, 0) or die "setpgid: $!" if $a{pgrp};
            $a{caller}->() if $a{caller};
            exec { $cmd[0] } @cmd or die "exec $cmd[0]: $!";
        };
        print STDERR $@;
        POSIX::_exit(126);
    }
    $h{pid} = $pid;
    $self->{children}{$pid} = 1;
    return \%h;
}

# finish(HANDLE, TIMEOUT): waits for the call; returns a hash ref:
# status (raw wait status), out, err, timed_out.
sub finish {
    my ($self, $h, $timeout) = @_;
    $timeout //= 30;
    my $deadline = Time::HiRes::time() + $timeout;
    my $got;
    for (;;) {
        $got = waitpid($h->{pid}, WNOHANG);
        last if $got == $h->{pid} || $got < 0;
        if (Time::HiRes::time() > $deadline) {
            kill 'KILL', $h->{pid};
            waitpid($h->{pid}, 0);
            delete $self->{children}{ $h->{pid} };
            return { timed_out => 1, status => undef,
                     out => PfiTest::slurp($h->{out}),
                     err => PfiTest::slurp($h->{err}) };
        }
        sleep 0.002;
    }
    my $status = $?;
    delete $self->{children}{ $h->{pid} };
    return { status => $status, timed_out => 0,
             out => PfiTest::slurp($h->{out}),
             err => PfiTest::slurp($h->{err}) };
}

sub run {
    my ($self, $script, %a) = @_;
    return $self->finish($self->start($script, %a), $a{timeout});
}

# Sessions recorded by the scripts so far.
sub sessions {
    my ($self) = @_;
    my $text = PfiTest::slurp("$self->{dir}/sessions") // '';
    my %s = map { $_ => 1 } grep { m/\A[0-9]+\z/ } split /\n/, $text;
    return sort { $a <=> $b } keys %s;
}

# Remembers extra pids (say, a script's background child) to clean up.
sub track_pids {
    my ($self, @pids) = @_;
    push @{ $self->{pids} }, @pids;
}

# Processes of ours still alive: those in the recorded sessions, the
# tracked pids, and anything whose current directory is our private
# dir (servers run there: it is part of their identity).
sub live_procs {
    my ($self) = @_;
    my @in_dir;
    foreach my $p (PfiTest::_all_procs()) {
        next if $p->{state} eq 'Z' || $p->{pid} == $$;
        my $cwd = readlink("/proc/$p->{pid}/cwd") // next;
        push @in_dir, $p->{pid} if $cwd eq $self->{dir};
    }
    return PfiTest::procs_in_sessions([ $self->sessions ],
                                      [ @{ $self->{pids} }, @in_dir ]);
}

# Registers a script written elsewhere, so cleanup stops its server.
sub adopt_script {
    my ($self, $path) = @_;
    $self->{scripts}{$path} = 1;
    return $path;
}

# kill_server(SCRIPT): "--kill" through the client.
sub kill_server {
    my ($self, $script) = @_;
    my $r = $self->run($script, flags => ['--kill'], timeout => 20);
    return $r;
}

# Stops every server and process this fixture knows of.  Returns the
# processes that were still there after --kill and a grace period (and
# have now been killed).
sub cleanup {
    my ($self) = @_;
    return () if $self->{cleaned}++;
    my @kills;
    foreach my $script (sort keys %{ $self->{scripts} }) {
        my $r = $self->kill_server($script);
        push @kills, "--kill $script: " . PfiTest::describe_status($r->{status})
            . ($r->{err} ? ", stderr: $r->{err}" : '');
    }
    my @left;
    PfiTest::wait_for(5, sub { @left = $self->live_procs; !@left });
    $self->{left_diag} = join "\n", PfiTest::describe_procs(@left), @kills,
        map { "run dir: $_" } glob($self->run_dir . '/*');
    foreach my $p (@left) {
        kill 'KILL', $p->{pid};
    }
    foreach my $pid (keys %{ $self->{children} }) {
        kill 'KILL', $pid;
        waitpid($pid, 0);
    }
    PfiTest::wait_for(5, sub { !$self->live_procs });
    return @left;
}

# cleanup_ok(): cleanup as a test assertion.
sub cleanup_ok {
    my ($self) = @_;
    my @left = $self->cleanup;
    ok(!@left, "$self->{kind} client: no process left after --kill")
        or diag($self->{left_diag});
}

sub DESTROY {
    my ($self) = @_;
    local ($?, $!, $@);
    $self->cleanup;
}

#======================================================================
package PfiTest::Harness;

# Plays the client's part (SPEC sections 4 and 5) so tests control
# every byte.  The server-side fds are: LISTEN, a Unix socket at
# <dir>/h.sock; CALL, one end of a socketpair; WATCHI, the write end of
# a pipe whose read end we keep (EOF there = server gone); WATCHE, the
# read end of a pipe whose write end we keep (closing it = "socket
# replaced", as a real watcher's exit).

use strict;
use warnings;

use Fcntl qw(F_SETFD);
use File::Temp qw(tempdir);
use IO::FDPass;
use IO::Handle;
use POSIX qw(WNOHANG);
use Socket qw(AF_UNIX SOCK_STREAM PF_UNSPEC pack_sockaddr_un);
use Test::More;
use Time::HiRes qw(sleep);

# new(init => CODE, opts => CODE, body => CODE, listen => 'socket' |
#     'not-listening', env => {...}, run_as => [UID, GID],
#     announce => ITEM, no_wait => BOOL)
# run_as: the script (setup and server) runs as that user, who then
# owns the dir.  announce: an item added to the first word of
# PREFORK_INTERP ('inplace1': the setup process runs the first call
# itself, protocol.md 7).  no_wait: return at once, not once the setup
# process has exited (see wait_setup).
sub new {
    my ($class, %a) = @_;
    my $dir = Cwd::abs_path(tempdir('pfi-pl-h-XXXXXX', TMPDIR => 1,
                                    CLEANUP => 1));
    if ($a{run_as}) {
        chown @{ $a{run_as} }, $dir or die "chown $dir: $!";
    }
    my $self = bless { dir => $dir }, $class;
    my $script = "$dir/h.pl";
    PfiTest::spit($script, PfiTest::script_text(%a, dir => $dir,
                                                 init => $a{init} // '',
                                                 body => $a{body} // ''));
    $self->{script} = $script;

    my ($listen, $listen_peer);
    if (($a{listen} // 'socket') eq 'socket') {
        socket($listen, AF_UNIX, SOCK_STREAM, 0) or die "socket: $!";
        bind($listen, pack_sockaddr_un("$dir/h.sock")) or die "bind: $!";
        listen($listen, 64) or die "listen: $!";
    } else {
        # A connected socket with data waiting: select calls it
        # readable, accept fails (EINVAL) every time.
        socketpair($listen, $listen_peer, AF_UNIX, SOCK_STREAM, PF_UNSPEC)
            or die "socketpair: $!";
        syswrite($listen_peer, "x");
    }
    socketpair(my $call_c, my $call_s, AF_UNIX, SOCK_STREAM, PF_UNSPEC)
        or die "socketpair: $!";
    pipe(my $wi_r, my $wi_w) or die "pipe: $!";
    pipe(my $we_r, my $we_w) or die "pipe: $!";

    my $t = Time::HiRes::time();
    my $stamp = $a{stamp}
        // sprintf('%d.%09d', int($t), int(($t - int $t) * 1e9));
    my %fd = (listen => fileno($listen), call => fileno($call_s),
              watchi => fileno($wi_w), watche => fileno($we_r),
              %{ $a{fd_override} // {} });
    my $env_value = $a{env_value}
        // sprintf('v1,%s%s %d,%d,%d,%d', $stamp,
                   defined $a{announce} ? ",$a{announce}" : '',
                   @fd{qw(listen call watchi watche)});
    if ($a{env_extras}) {
        # What a later client may add: more items, more words.
        $env_value =~ s/\A(\S+) (\S+)\z/$1,future $2,77 more words \x01\xff/
            or die "cannot add extras to $env_value";
    }

    my $pid = fork // die "fork: $!";
    if (!$pid) {
        eval {
            close $_ foreach $call_c, $wi_r, $we_w;
            close $listen_peer if $listen_peer;
            foreach my $fh ($listen, $call_s, $wi_w, $we_r) {
                fcntl($fh, F_SETFD, 0) or die "fcntl: $!";
            }
            PfiTest::close_fds_except(map { fileno $_ }
                                      $listen, $call_s, $wi_w, $we_r);
            chdir $dir or die "chdir: $!";
            open(STDIN, '<', '/dev/null') or die "stdin: $!";
            open(STDOUT, '>', "$dir/setup.err") or die "stdout: $!";
            open(STDERR, '>&', \*STDOUT) or die "stderr: $!";
            %ENV = (PATH => '/usr/bin:/bin', %{ $a{env} // {} },
                    PREFORK_INTERP => $env_value);
            # As our client starts the setup process: every signal at
            # its default, nothing blocked; setup_ignore => [NAMES]
            # plays a caller that ignores some (as the C client passes
            # them on).
            PfiTest::default_signals();
            $SIG{$_} = 'IGNORE' foreach @{ $a{setup_ignore} // [] };
            if ($a{run_as}) {
                my ($uid, $gid) = @{ $a{run_as} };
                $) = "$gid $gid";    # and no supplementary groups
                POSIX::setgid($gid) or die "setgid: $!";
                POSIX::setuid($uid) or die "setuid: $!";
            }
            exec 'perl', $script, @{ $a{setup_args} // [] }
                or die "exec perl: $!";
        };
        print STDERR $@;
        POSIX::_exit(126);
    }
    close $_ foreach $call_s, $wi_w, $we_r;
    # The server is whoever holds the other end of our WATCHI pipe.
    $self->{wi_inode} = (stat $wi_r)[1];
    $self->{listen_peer} = $listen_peer;
    close $listen;
    $self->{setup_pid} = $pid;
    $self->wait_setup unless $a{no_wait};
    $self->{initial} = $call_c;
    $self->{wi_r} = $wi_r;
    $self->{we_w} = $we_w;
    $we_w->autoflush(1);
    return $self;
}

# wait_setup(TIMEOUT): waits for the setup process (at most TIMEOUT
# seconds, default 30; then kills it); returns its wait status, and
# records it and its output for setup_status and setup_err.
sub wait_setup {
    my ($self, $timeout) = @_;
    my $pid = delete $self->{setup_pid} // return $self->{setup_status};
    my $got = PfiTest::wait_for($timeout // 30,
                                sub { waitpid($pid, WNOHANG) == $pid });
    if (!$got) {
        kill 'KILL', $pid;
        waitpid($pid, 0);
    }
    $self->{setup_status} = $?;
    $self->{setup_err} = PfiTest::slurp("$self->{dir}/setup.err");
    return $self->{setup_status};
}

sub dir { $_[0]{dir} }
sub script { $_[0]{script} }
sub setup_status { $_[0]{setup_status} }
sub setup_err { $_[0]{setup_err} }
sub initial { $_[0]{initial} }
sub log_text { PfiTest::slurp("$_[0]{dir}/log") // '' }

sub connect {
    my ($self) = @_;
    socket(my $s, AF_UNIX, SOCK_STREAM, 0) or die "socket: $!";
    connect($s, pack_sockaddr_un("$self->{dir}/h.sock"))
        or die "connect: $!";
    return $s;
}

# Reads N bytes, or fewer at EOF, within TIMEOUT seconds (default 20).
sub read_bytes {
    my ($self, $conn, $n, $timeout) = @_;
    return PfiTest::read_bytes($conn, $n, $timeout);
}

# request_data(env => [STRINGS], args => [STRINGS])
sub request_data {
    my ($self, %a) = @_;
    return join('', map { "$_\0" } @{ $a{env} // [] }) . "\0"
         . join('', map { "$_\0" } @{ $a{args} // [] });
}

# send_request(CONN, fds => [3 fds], env => [...], args => [...]):
# steps 2 to 4 of SPEC section 5.
sub send_request {
    my ($self, $conn, %a) = @_;
    syswrite($conn, "\0") == 1 or die "send byte: $!";
    foreach my $fd (@{ $a{fds} }) {
        IO::FDPass::send(fileno($conn), $fd) or die "send fd: $!";
    }
    my $data = $a{data} // $self->request_data(%a);
    my $msg = pack('N', length $data) . $data;
    syswrite($conn, $msg) == length $msg or die "send request: $!";
}

# call(CONN, args => [...], env => [...], stdin/stdout/stderr => FH,
#      timeout => SECONDS)
# A whole call.  Returns (greeting, wait status or undef, stdout,
# stderr); stdout and stderr are captured through temp files unless
# handles are given.
# _call_files(STDIN_DATA): this call's files for the caller's stdio
# (stdin holding STDIN_DATA); returns ({in, out, err => path}, and the
# three open handles).
sub _call_files {
    my ($self, $stdin_data) = @_;
    my $n = ++$self->{seq};
    my %f = map { $_ => "$self->{dir}/hcall$n.$_" } qw(in out err);
    PfiTest::spit($f{in}, $stdin_data // '');
    open(my $in, '<', $f{in}) or die;
    open(my $out, '>', $f{out}) or die;
    open(my $err, '>', $f{err}) or die;
    return (\%f, $in, $out, $err);
}

sub call {
    my ($self, $conn, %a) = @_;
    my ($f, $in, $out, $err) = $self->_call_files($a{stdin_data});
    my %f = %$f;
    my $greeting = $self->read_bytes($conn, 8, $a{timeout});
    $self->send_request($conn, fds => [ map { fileno $_ }
                                        ($a{stdin} // $in),
                                        ($a{stdout} // $out),
                                        ($a{stderr} // $err) ],
                        env => $a{env} // ['PATH=/usr/bin:/bin'],
                        args => $a{args} // [ 'perl', $self->{script} ]);
    close $_ foreach $in, $out, $err;
    my $st = $self->read_bytes($conn, 4, $a{timeout});
    close $conn;
    return ($greeting,
            length($st) == 4 ? unpack('N', $st) : undef,
            PfiTest::slurp($f{out}), PfiTest::slurp($f{err}));
}

#---------- extension call1, client side (protocol.md 6) ----------
#
# Written independently of Prefork::Interp::Protocol (from the text of
# protocol.md), so the tests check the library against the document,
# not against itself.

# attr_body(KEY => VALUE, ...): an ATTR body, keys in the order given;
# a VALUE that is an array ref gives one entry per element (rlimit).
sub attr_body {
    my ($self, @kv) = @_;
    my $body = '';
    while (@kv) {
        my ($k, $v) = splice @kv, 0, 2;
        $body .= "$k=$_\0" foreach ref $v ? @$v : ($v);
    }
    return $body;
}

sub frame {
    my ($self, $tag, $body) = @_;
    return $tag . pack('N', length $body) . $body;
}

# send_frame(CONN, TAG, BODY): true if the frame was sent whole (a
# server that has dropped the call makes it fail: EPIPE, which the
# tests ignore as a signal).
sub send_frame {
    my ($self, $conn, $tag, $body) = @_;
    my $f = $self->frame($tag, $body);
    my $n = syswrite($conn, $f);
    return defined $n && $n == length $f;
}

# signal(CONN, 'SIGP' | 'SIGG', NUMBER)
sub signal {
    my ($self, $conn, $tag, $sig) = @_;
    $self->send_frame($conn, $tag, pack('N', $sig));
}

# read_frame(CONN, TIMEOUT): [TAG, BODY], or undef at EOF or timeout
# (then $self->{frame_eof} says which).
sub read_frame {
    my ($self, $conn, $timeout) = @_;
    my $head = $self->read_bytes($conn, 8, $timeout);
    if (length($head) < 8) {
        $self->{frame_eof} = length($head) ? 'short' : 'eof-or-timeout';
        return undef;
    }
    my ($tag, $len) = unpack 'a4 N', $head;
    my $body = $self->read_bytes($conn, $len, $timeout);
    return undef if length($body) < $len;
    return [ $tag, $body ];
}

# call1_start(CONN, attr => BODY, extra => [ [NUMBER, FD], ... ],
#             offer => 'call1', env => [...], args => [...],
#             before_attr => BYTES, stdin_data => STRING,
#             stdio => [FH0, FH1, FH2], slave => FD)
#
# A call with the extension offered: greeting, request with
# PREFORK_INTERP_EXT=OFFER last, then the answer.  If the server
# accepts: BEFORE_ATTR (raw bytes, for tests), the ATTR frame (default:
# just "fds=" listing EXTRA's numbers), one message per extra fd, and
# with SLAVE (extension pty1, protocol.md 9.2) one more carrying it.
# STDIO: handles sent as the caller's fds 0, 1 and 2 instead of the
# call's files (an undef one: its file).  Returns a hash ref: conn,
# accepted (the accept frame's body, or undef), v1_status (if the
# server answered as v1), out, err (files behind the caller's fds 1 and
# 2, unless STDIO replaced them).
sub call1_start {
    my ($self, $conn, %a) = @_;
    my ($f, $in, $out, $err) = $self->_call_files($a{stdin_data});
    my %f = %$f;
    my %c = (conn => $conn, out => $f{out}, err => $f{err});
    $c{greeting} = $self->read_bytes($conn, 8, $a{timeout});
    my $offer = $a{offer} // 'call1';
    my @stdio = ($in, $out, $err);
    foreach my $i (0 .. 2) {
        $stdio[$i] = $a{stdio}[$i] if $a{stdio} && $a{stdio}[$i];
    }
    $self->send_request($conn, fds => [ map { fileno $_ } @stdio ],
                        env => [ @{ $a{env} // ['PATH=/usr/bin:/bin'] },
                                 (length $offer
                                  ? ("PREFORK_INTERP_EXT=$offer") : ()) ],
                        args => $a{args} // [ 'perl', $self->{script} ]);
    close $_ foreach $in, $out, $err;
    my $first = $self->read_bytes($conn, 4, $a{timeout} // 20);
    if ($first ne 'PFXA') {
        $c{v1_status} = length($first) == 4 ? unpack('N', $first) : undef;
        return \%c;
    }
    my $len = unpack 'N', $self->read_bytes($conn, 4, 20);
    $c{accepted} = $self->read_bytes($conn, $len, 20);
    my @extra = @{ $a{extra} // [] };
    # Writes fail (EPIPE) if the server has dropped the call; tests
    # look at what comes back, so that is noted, not fatal.
    if (defined $a{before_attr}) {
        my $n = syswrite($conn, $a{before_attr});
        $c{send_failed} = 1 unless $n && $n == length $a{before_attr};
    }
    my $attr = $a{attr}
        // $self->attr_body(fds => join ',', map { $_->[0] } @extra);
    $self->send_frame($conn, 'ATTR', $attr) or $c{send_failed} = 1;
    foreach my $e (@extra) {
        IO::FDPass::send(fileno($conn), $e->[1]) or $c{send_failed} = 1;
    }
    if (defined $a{slave}) {
        IO::FDPass::send(fileno($conn), $a{slave}) or $c{send_failed} = 1;
    }
    return \%c;
}

# call1_finish(CALL, TIMEOUT): reads frames until EXIT or EOF.  Adds to
# CALL: frames => [ [TAG, BODY], ... ] (all of them), status (EXIT's
# value, or undef), eof (1 if the connection closed without EXIT),
# stdout, stderr.
sub call1_finish {
    my ($self, $c, $timeout) = @_;
    $c->{frames} = [];
    for (;;) {
        my $f = $self->read_frame($c->{conn}, $timeout // 20);
        if (!$f) { $c->{eof} = 1; last }
        push @{ $c->{frames} }, $f;
        if ($f->[0] eq 'EXIT') {
            $c->{status} = unpack 'N', $f->[1];
            last;
        }
    }
    close $c->{conn};
    $c->{stdout} = PfiTest::slurp($c->{out});
    $c->{stderr} = PfiTest::slurp($c->{err});
    return $c;
}

# call1(CONN, %args as call1_start, timeout => SECONDS): a whole call.
sub call1 {
    my ($self, $conn, %a) = @_;
    my $c = $self->call1_start($conn, %a);
    return $c unless defined $c->{accepted};
    return $self->call1_finish($c, $a{timeout});
}

# Whether the server has gone (EOF on the WATCHI pipe) within TIMEOUT.
sub server_gone {
    my ($self, $timeout) = @_;
    my $buf;
    my $rbits = '';
    vec($rbits, fileno($self->{wi_r}), 1) = 1;
    return 0 unless select($rbits, undef, undef, $timeout) > 0;
    return sysread($self->{wi_r}, $buf, 1) == 0;
}

# Tells the server what its watcher would: an error message.
sub watcher_says {
    my ($self, $msg) = @_;
    syswrite($self->{we_w}, $msg);
}

# Stops the server as a real watcher would (by exiting) and reports
# any process left after that, killing it.
sub cleanup {
    my ($self) = @_;
    return () if $self->{cleaned}++;
    my @sids = $self->sessions;
    close $self->{we_w};
    close $self->{initial};
    # A setup process running the first call (no_wait) sees the hang-up.
    $self->wait_setup(10) if defined $self->{setup_pid};
    my @left;
    PfiTest::wait_for(5, sub {
        @left = PfiTest::procs_in_sessions(\@sids); !@left });
    $self->{left_diag} = PfiTest::describe_procs(@left);
    kill 'KILL', $_->{pid} foreach @left;
    PfiTest::wait_for(5, sub { !PfiTest::procs_in_sessions(\@sids) });
    return @left;
}

sub sessions {
    my ($self) = @_;
    my $text = PfiTest::slurp("$self->{dir}/sessions") // '';
    my %s = map { $_ => 1 } grep { m/\A[0-9]+\z/ } split /\n/, $text;
    $s{$_} = 1 foreach $self->server_pids;
    return keys %s;
}

# Pids of the processes holding the write end of our WATCHI pipe: the
# server (it is also its session id).  An executor the server has just
# forked holds it too, until it closes the server's fds: a holder whose
# parent holds it is not counted.
sub server_pids {
    my ($self) = @_;
    my $want = "pipe:[$self->{wi_inode}]";
    my %ppid;
    opendir(my $d, '/proc') or return ();
    foreach my $pid (grep { m/\A[0-9]+\z/ } readdir $d) {
        next if $pid == $$;
        opendir(my $fds, "/proc/$pid/fd") or next;
        foreach my $fd (readdir $fds) {
            my $l = readlink("/proc/$pid/fd/$fd") // next;
            next unless $l eq $want;
            my ($ppid) = (PfiTest::slurp("/proc/$pid/stat") // '') =~ m/\) \S+ (\S+)/;
            $ppid{$pid} = $ppid // 0;
            last;
        }
    }
    return grep { !exists $ppid{ $ppid{$_} } } keys %ppid;
}

sub cleanup_ok {
    my ($self, $name) = @_;
    my @left = $self->cleanup;
    ok(!@left, ($name // 'harness') . ': no process left')
        or diag($self->{left_diag});
}

sub DESTROY {
    my ($self) = @_;
    local ($?, $!, $@);
    $self->cleanup;
}

1;
