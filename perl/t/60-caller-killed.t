#!/usr/bin/perl
# A caller that goes away mid-call, through both clients: the call's
# process group gets SIGINT, even when the server was started by a
# caller that had SIGINT ignored, and the server carries on.  (With our
# client a SIGTERM is not a hang-up: it is forwarded to the script.)

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use POSIX ();
use PfiTest qw(client_kinds fixture slurp wait_for describe_status alive);
use Test::More;
use Time::HiRes ();

my %SIGNUM = (KILL => 9, TERM => 15);

# "long": start a helper in our process group, note both pids, sleep.
my $body = <<'EOF';
exit 0 if $ARGV[0] eq 'quick';
my $helper = fork // die "fork: $!";
if (!$helper) { exec 'sleep', '60' or die "exec: $!" }
open(my $fh, '>', "$ARGV[1].tmp") or die;
print $fh "$$ $helper\n";
close $fh;
rename "$ARGV[1].tmp", $ARGV[1] or die;
sleep 60;
exit 0;
EOF

# Starts a long call, waits until it runs, kills the client with SIG;
# checks that the executor stopped promptly, and that its helper did
# (HELPER_DIES) or did not.
sub kill_mid_call {
    my ($fx, $script, $sig, $name, $helper_dies) = @_;
    $helper_dies //= 1;
    my $marker = $fx->dir . "/pids-$name";
    my $h = $fx->start($script, args => [ 'long', $marker ]);
    ok(wait_for(15, sub { -e $marker }), "$name: the call is running")
        or return;
    my ($exec_pid, $helper) = split ' ', slurp($marker);
    $fx->track_pids($exec_pid, $helper);
    ok(alive($exec_pid) && alive($helper), "$name: executor and helper up");
    kill $sig, $h->{pid};
    my $r = $fx->finish($h, 10);
    ok(!$r->{timed_out} && ($r->{status} & 127) == $SIGNUM{$sig},
       "$name: the client died of SIG$sig")
        or diag describe_status($r->{status});
    ok(wait_for(5, sub { !alive($exec_pid) }), "$name: the executor stopped");
    if ($helper_dies) {
        ok(wait_for(5, sub { !alive($helper) }),
           "$name: so did the helper in its process group");
    } else {
        Time::HiRes::sleep(0.3);
        ok(alive($helper), "$name: the helper in its process group lives"
           . ' on, as in a direct run');
        kill 'KILL', $helper;
    }
}

foreach my $kind (client_kinds()) {
    subtest "$kind client" => sub {
        my $fx = fixture($kind) or return;
        my $script = $fx->script('long.pl', body => $body);
        is($fx->run($script, args => ['quick'])->{status}, 0, 'warm up');
        # SIGKILL cannot be forwarded: the caller has gone.
        kill_mid_call($fx, $script, 'KILL', 'SIGKILL');
        # SIGTERM: the C client dies of it and the call's group gets
        # SIGINT; ours forwards it to the script (call1), which dies of
        # it, leaving its helper running, as a direct run would.
        kill_mid_call($fx, $script, 'TERM', 'SIGTERM', $kind eq 'c');
        is($fx->run($script, args => ['quick'])->{status}, 0,
           'the server still serves calls');

        # A server started by a caller that ignores SIGINT (as shells
        # make background jobs do) still stops calls whose caller goes.
        my $ign = $fx->script('ignint.pl', body => $body);
        is($fx->run($ign, args => ['quick'], ignore => ['INT'])->{status}, 0,
           'server started with SIGINT ignored');
        kill_mid_call($fx, $ign, 'KILL', 'SIGINT-ignored');

        $fx->cleanup_ok;
    };
}

done_testing;
