#!/usr/bin/perl
# The server's life, through both clients: --kill, -f, idle_timeout,
# prompt reaping, and processes a call leaves behind.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use PfiTest qw(client_kinds fixture slurp wait_for procs_in_sessions
               zombie_children listen_path describe_status);
use Test::More;

# Prints the server's generation (setup pid) and session; "bg" leaves a
# process behind that outlives the call by a second.
my $init = 'our $GEN = $$;';
my $body = <<'EOF';
my ($sid) = (do { local (@ARGV, $/) = '/proc/self/stat'; <> })
    =~ m/\) \S+ \S+ \S+ (\S+)/;
print "gen=$main::GEN sid=$sid\n";
if (($ARGV[0] // '') eq 'bg') {
    my $pid = fork // die "fork: $!";
    if (!$pid) {
        open(STDOUT, '>', '/dev/null');
        sleep 1;
        open(my $fh, '>', 'bg-done') or die;
        close $fh;
        exit 0;
    }
    print "bg=$pid\n";
}
exit 0;
EOF

sub gen_sid ($) {
    my ($r) = @_;
    my ($gen, $sid) = ($r->{out} // '') =~ m/^gen=(\d+) sid=(\d+)$/m;
    return ($gen // 'none', $sid // 0);
}

foreach my $kind (client_kinds()) {
    subtest "$kind client" => sub {
        my $fx = fixture($kind) or return;
        my $script = $fx->script('life.pl', init => $init, body => $body);

        # A server's first call may run in its setup process (our
        # client: protocol.md 7), in our session; the next call gives
        # the server's session.
        my ($gen1) = gen_sid($fx->run($script));
        my ($gen, $sid1) = gen_sid($fx->run($script));
        is($gen, $gen1, 'the second call is served by the same server');
        my $socket = listen_path($sid1, $fx->run_dir);
        ok($socket && -S $socket, 'server listening');
        ($gen) = gen_sid($fx->run($script)) for 1..5;
        ok(wait_for(3, sub { !zombie_children($sid1) }),
           'finished monitors are reaped without waiting for a call');

        # -f: a fresh server; the old one notices and goes.
        my ($gen2) = gen_sid($fx->run($script, flags => ['-f']));
        isnt($gen2, $gen1, '-f starts a fresh server');
        ok(wait_for(5, sub { !procs_in_sessions([$sid1]) }),
           '... and the old one quits');
        my $sid2;
        ($gen, $sid2) = gen_sid($fx->run($script));
        is($gen, $gen2, '... and later calls use the new one');

        # --kill
        my $r = $fx->kill_server($script);
        is($r->{status}, 0, '--kill succeeds');
        ok(wait_for(5, sub { !procs_in_sessions([$sid2]) }),
           '--kill stops the server');
        ok(!-e $socket, '... and its socket is gone');
        my ($gen3) = gen_sid($fx->run($script));
        isnt($gen3, $gen2, 'the next call starts a new server');

        # A process the call leaves behind is not killed when the call
        # ends normally (7.0.0 sends SIGINT to the group every time).
        unlink $fx->dir . '/bg-done';
        $r = $fx->run($script, args => ['bg']);
        is($r->{status}, 0, 'call leaving a process behind: exit 0');
        my ($bg) = $r->{out} =~ m/^bg=(\d+)$/m;
        $fx->track_pids($bg) if $bg;
        ok(wait_for(5, sub { -e $fx->dir . '/bg-done' }),
           '... which lives on and finishes its work');

        # idle_timeout
        my $idle = $fx->script('idle.pl', init => $init,
                               opts => 'idle_timeout => 1', body => $body);
        my ($igen) = gen_sid($fx->run($idle));
        my ($igen1, $isid) = gen_sid($fx->run($idle));
        is($igen1, $igen, 'idle_timeout: a second call, to the same server');
        ok(wait_for(6, sub { !procs_in_sessions([$isid]) }),
           'idle_timeout: the server quits by itself');
        like($fx->log_text, qr/info: no calls for 1 seconds, quitting/,
             '... and says so');
        $r = $fx->run($idle);
        is($r->{status}, 0, '... and the next call works');
        my ($igen2) = gen_sid($r);
        isnt($igen2, $igen, '... with a new server');

        $fx->cleanup_ok;
    };
}

done_testing;
