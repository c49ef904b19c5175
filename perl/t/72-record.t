#!/usr/bin/perl
# The server record (extension record1, protocol.md 8), through our
# client: the server appends its fixed-width line to the record the
# client wrote and keeps it up to date (calls, running calls, last call;
# the first call, run in place, is call 1 and runs while the setup
# process does), spares and executors do not hold it, `prefork-interp
# --list --json` shows the server as a Perl one with its calls, and the
# last error or warning the server logged follows the line, alone.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";
use lib "$FindBin::Bin/../lib";

use JSON::PP ();
use PfiTest qw(fixture slurp spit wait_for server_record start_ticks
               cmdline_of read_bytes);
use Prefork::Interp::Record ();
use Socket qw(AF_UNIX SOCK_STREAM pack_sockaddr_un);
use Test::More;

is(Prefork::Interp::Record::escape("a%b\n\x7f\xff c~\x1f"),
   'a%25b%0A%7F%FF c~%1F', 'escaping: controls, DEL and above, and %');

my $body = <<'EOT';
my ($what, $flag) = @ARGV;
if (($what // '') eq 'wait') {
    for (1 .. 1000) {
        last if -e $flag;
        select(undef, undef, undef, 0.02);
    }
}
if (($what // '') eq 'fds') {
    opendir(my $d, '/proc/self/fd') or die;
    foreach my $fd (grep { m/\A[0-9]+\z/ } readdir $d) {
        print "fd $fd -> ", readlink("/proc/self/fd/$fd") // '?', "\n";
    }
}
print "pid=$$\n";
print "loaded: ", join(' ', grep { m{\APrefork/Interp/(?:Record|Title|Server)\.pm\z|\A(?:POSIX|Socket|Sys/Syslog)\.pm\z} }
                             sort keys %INC), "\n";
EOT

# The --list output, JSON decoded (or the text with json => 0).
sub list_of ($$) {
    my ($fx, $json) = @_;
    local %ENV = $fx->base_env;
    open(my $ph, '-|', $fx->client, '--list', $json ? ('--json') : ())
        or die "run --list: $!";
    local $/;
    my $out = <$ph> // '';
    close $ph;
    return $json ? JSON::PP::decode_json($out) : $out;
}

# Opens a connection to the server's socket and sends BYTE instead of
# the signalling byte: the server logs a warning.
sub bad_caller ($$) {
    my ($fx, $byte) = @_;
    my ($sock_path) = glob($fx->run_dir . '/s*');
    socket(my $s, AF_UNIX, SOCK_STREAM, 0) or die "socket: $!";
    connect($s, pack_sockaddr_un($sock_path)) or die "connect: $!";
    read_bytes($s, 8, 10);
    syswrite($s, $byte);
    return $s;
}

my $fx = fixture('ours');
if ($fx) {
    my $dir = $fx->dir;
    my $script = $fx->script('rec.pl', body => $body);
    my $t0 = time;

    # The first call runs in place, in the setup process.
    my $flag = "$dir/go1";
    my $cold = $fx->start($script, args => [ 'wait', $flag ]);
    my $rec = wait_for(20, sub {
        my $r = server_record($fx->run_dir);
        $r && $r->{server} && $r });
    ok($rec, 'the server has written its line') or diag(explain $rec);
    $rec ||= { server => {}, items => {}, text => '' };
    my $line = $rec->{server}{line} // '';
    is(length $line, 81, 'the line is 81 bytes long');
    like($line, qr/\Aserver=[ 0-9]{10} [ 0-9]{20} perl     [ 0-9]{12} [ 0-9]{6} [ 0-9]{12}\n\z/,
         'fixed width: pid, ticks, library, calls, running, last');
    like($rec->{text}, qr/\Arecord=1\n(?:[a-z_]+=[^\n]*\n)+\Q$line\E\z/,
         'appended to the client\'s lines');
    is($rec->{items}{script}, $script, 'the client\'s part: the script');
    my $server = $rec->{server}{pid} // 0;
    ok($server && $server != $cold->{pid}, "the server's pid ($server)");
    is($rec->{server}{ticks}, start_ticks($server),
       'its start time in clock ticks');
    like(cmdline_of($server) // '', qr/\Aprefork-interp server: /,
         '... the server\'s indeed');
    is($rec->{server}{library}, 'perl', 'library perl');
    is($rec->{server}{calls}, 1, 'the first call, run in place, is call 1');
    is($rec->{server}{running}, 1, '... running while the setup process runs it');
    cmp_ok($rec->{server}{last}, '>=', $t0, '... and the last call');
    spit($flag, '');
    my $r = $fx->finish($cold);
    is($r->{status}, 0, 'the first call ends') or diag($r->{err});
    like($r->{out}, qr/^loaded: $/m,
         '... in a process that loaded nothing for the record and titles'
         . ' (nor POSIX, Socket, Sys::Syslog)');
    ok(wait_for(10, sub { (server_record($fx->run_dir)->{server}{running} // -1) == 0 }),
       'running 0 once the setup process has gone');

    foreach my $n (1 .. 3) {
        $r = $fx->run($script);
        is($r->{status}, 0, "warm call $n");
    }
    like($r->{out}, qr{^loaded: .*Prefork/Interp/Record\.pm}m,
         'a warm call\'s process, forked from the server, has them');
    $rec = server_record($fx->run_dir);
    is($rec->{server}{calls}, 4, 'four calls');
    is($rec->{server}{running}, 0, 'none running');

    my $t1 = time;
    $flag = "$dir/go2";
    my $h = $fx->start($script, args => [ 'wait', $flag ]);
    ok(wait_for(10, sub { (server_record($fx->run_dir)->{server}{running} // 0) == 1 }),
       'a warm call running: running 1');
    $rec = server_record($fx->run_dir);
    is($rec->{server}{calls}, 5, '... call 5');
    cmp_ok($rec->{server}{last}, '>=', $t1, '... the last call');
    is($rec->{server}{pid}, $server, 'the same server');
    is(length $rec->{text}, length($rec->{text} =~ s/server=.*\n//sr) + 81,
       'one server line');
    spit($flag, '');
    is($fx->finish($h)->{status}, 0, 'it ends');
    ok(wait_for(10, sub { (server_record($fx->run_dir)->{server}{running} // -1) == 0 }),
       '... and running is 0 again');

    # Who holds the record: the server, not its spares nor the calls.
    $r = $fx->run($script, args => ['fds']);
    my $path = $rec->{path};
    like($r->{out}, qr/^fd 0 -> /m, 'a call lists its fds');
    unlike($r->{out}, qr/ -> \Q$path\E$/m, 'a call does not hold the record');
    # A spare forked a moment ago may not have closed the server's fds
    # yet: what counts is that none keeps it.
    my %held;
    my $holders = sub {
        %held = ();
        foreach my $p (grep { $_->{ppid} == $server || $_->{pid} == $server }
                       PfiTest::_all_procs()) {
            opendir(my $d, "/proc/$p->{pid}/fd") or next;
            $held{ $p->{pid} } = grep { (readlink("/proc/$p->{pid}/fd/$_") // '') eq $path }
                                 readdir $d;
        }
        return grep { $_ != $server && $held{$_} } keys %held;
    };
    wait_for(10, sub { !$holders->() });
    is($held{$server}, 1, 'the server holds it open');
    is(scalar($holders->()), 0,
       'its spares do not') or diag(explain \%held);

    # --list shows it.
    my ($entry) = grep { ($_->{script} // '') eq $script } @{ list_of($fx, 1) };
    ok($entry, '--list --json shows the server') or diag(explain list_of($fx, 1));
    $entry ||= {};
    is($entry->{library}, 'perl', '... as a Perl one');
    is($entry->{pid}, $server, '... its pid');
    is($entry->{calls}, 6, '... its calls');
    is($entry->{running}, 0, '... none running');
    like(list_of($fx, 0), qr/^\S+ +\Q$server\E perl +6 +0 .*\Q$script\E/m,
         '--list too');

    # The last error: after the line, alone, the file ending there.
    my $t2 = time;
    my $s1 = bad_caller($fx, "\x01");
    ok(wait_for(10, sub { defined server_record($fx->run_dir)->{error} }),
       'a warning logged is the last error');
    $rec = server_record($fx->run_dir);
    is($rec->{error}{message},
       'bad request from caller: signalling byte is 0x01, not 0x00',
       '... its message');
    cmp_ok($rec->{error}{secs}, '>=', $t2, '... and time');
    my $s2 = bad_caller($fx, "\x02");
    ok(wait_for(10, sub { (server_record($fx->run_dir)->{error}{message} // '') =~ m/0x02/ }),
       'the next one replaces it');
    $rec = server_record($fx->run_dir);
    like($rec->{text}, qr/\n\Q$rec->{server}{line}\Eerror=[0-9]+ bad request from caller: signalling byte is 0x02, not 0x00\n\z/,
         '... right after the server line, the file ending there');
    close $_ foreach $s1, $s2;
    is($rec->{server}{calls}, 6, 'no call counted for them');
    $fx->kill_server($script);

    # A warning at the server's start is in the record too.
    my $noinotify = $fx->script('noinotify.pl',
                                init => '$Prefork::Interp::USE_INOTIFY = 0;',
                                body => $body);
    is($fx->run($noinotify)->{status}, 0, 'a server without inotify');
    ok(wait_for(10, sub { ((server_record($fx->run_dir) // {})->{error}{message} // '')
                              =~ m/\Acannot use inotify \(turned off/ }),
       '... has its start-up warning as its last error')
        or diag(explain server_record($fx->run_dir));
    $fx->cleanup_ok;
}

done_testing;
