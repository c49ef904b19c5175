#!/usr/bin/perl
# Where the server's messages go (docs/options.md, "Where messages go"),
# through our client: the log file given (log_file, or
# PREFORK_INTERP_LOG), one line per message in the documented format,
# mode 0600, renamed to FILE.old once it is big enough; without syslog
# and without a log file, the file "log" in the run directory.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use PfiTest qw(fixture slurp wait_for read_bytes);
use Socket qw(AF_UNIX SOCK_STREAM pack_sockaddr_un);
use Test::More;

# A log line: time (local), script[pid], level, message.
my $LINE = qr/\A[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2} [^\s\[]+\[[0-9]+\] (?:debug|info|warning|error): \S[^\n]*\z/;

# Lines of FILE that are not log lines.
sub bad_lines ($) {
    my ($file) = @_;
    return grep { $_ !~ $LINE } split /\n/, slurp($file) // '';
}

# Connects to the server's socket and hangs up at once, N times: the
# server logs each (info).
sub hang_ups ($$) {
    my ($fx, $n) = @_;
    my ($sock_path) = glob($fx->run_dir . '/s*');
    foreach (1 .. $n) {
        socket(my $s, AF_UNIX, SOCK_STREAM, 0) or die "socket: $!";
        connect($s, pack_sockaddr_un($sock_path)) or die "connect: $!";
        read_bytes($s, 8, 10);
        close $s;
    }
}

sub mode_of ($) { ((stat $_[0])[2] // 0) & 07777 }

my $fx = fixture('ours');
if ($fx) {
    my $dir = $fx->dir;
    my $run = $fx->run_dir;

    subtest 'log_file: the documented lines, mode 0600' => sub {
        my $script = $fx->script('file.pl', body => 'exit 0;');
        is($fx->run($script)->{status}, 0, 'a call');
        ok(wait_for(10, sub { $fx->log_text =~ m/watching/ }),
           'the server logged its start');
        like((split /\n/, $fx->log_text)[0],
             qr/\A\S+ file\.pl\[[0-9]+\] debug: watching [0-9]+ files through/,
             'script name, pid, level, message');
        is_deeply([ bad_lines("$dir/log") ], [], 'every line well-formed');
        is(sprintf('%o', mode_of("$dir/log")), '600', 'mode 0600');
        ok(!-e "$run/log", 'nothing in the run directory');
        $fx->kill_server($script);
    };

    # Starts a server for NAME.pl with OPTS (no log_file), with ENV for
    # the first call, and checks that it logs its start to FILE.
    my $logs_to = sub {
        my ($name, $opts, $file, %env) = @_;
        my $script = $fx->script("$name.pl", raw_opts => 1, opts => $opts,
                                 body => 'exit 0;');
        is($fx->run($script, env => \%env)->{status}, 0, 'a call');
        ok(wait_for(10, sub { (slurp($file) // '') =~ m/ \Q$name\E\.pl\[[0-9]+\] debug: watching/ }),
           "the server logs to $file");
        is(sprintf('%o', mode_of($file)), '600', 'mode 0600');
        is_deeply([ bad_lines($file) ], [], 'every line well-formed');
        $fx->kill_server($script);
    };

    subtest 'PREFORK_INTERP_LOG gives the log file' => sub {
        my $file = "$dir/env.log";
        $logs_to->('env', 'log_facility => undef', $file,
                   PREFORK_INTERP_LOG => $file);
        ok(!-e "$run/log", 'not to the run directory');
    };

    subtest 'without syslog and a log file: the run directory\'s log' => sub {
        $logs_to->('nolog', 'log_facility => undef', "$run/log");
        unlink "$run/log";
    };

    subtest 'the default log_facility, where syslog does not work' => sub {
        plan skip_all => 'this system has a syslog socket' if -S '/dev/log';
        $logs_to->('default', '', "$run/log");
        unlink "$run/log";
    };

    subtest 'a log file is renamed to FILE.old when it is big enough' => sub {
        my $file = "$dir/rot.log";
        my $script = $fx->script('rot.pl', raw_opts => 1,
            init => '$Prefork::Interp::Log::ROTATE_SIZE = 1000;',
            opts => "log_facility => undef, log_file => '$file'",
            body => 'exit 0;');
        is($fx->run($script)->{status}, 0, 'a call');
        my $count = sub {
            scalar(() = join('', map { slurp($_) // '' } $file, "$file.old")
                         =~ m/ info: caller /g) };
        hang_ups($fx, 15);
        ok(wait_for(10, sub { $count->() == 15 }),
           '15 callers that hung up are logged') or diag($count->());
        ok(-e "$file.old", 'the file was renamed to FILE.old');
        cmp_ok(-s "$file.old", '>=', 1000, '... once it had reached the size');
        cmp_ok(-s "$file.old", '<', 1000 + 200, '... no later');
        cmp_ok(-s $file, '<', 1000, 'the new file is smaller');
        is_deeply([ bad_lines($file), bad_lines("$file.old") ], [],
                  'every line well-formed, none cut');
        my $old = slurp("$file.old");
        hang_ups($fx, 15);
        ok(wait_for(10, sub { (slurp("$file.old") // '') ne $old }),
           'FILE.old is replaced the next time');
        cmp_ok(-s "$file.old", '<', 1000 + 200, '... the file is bounded');
        is(sprintf('%o', mode_of($file)), '600', 'the new file: mode 0600');
        $fx->kill_server($script);
    };

    $fx->cleanup_ok;
}

done_testing;
