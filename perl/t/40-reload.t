#!/usr/bin/perl
# Automatic reloading, through both clients: a change to the script, to
# a module it uses, or to a file named with prefork_autoreload_also_check
# or autoreload_extra (its removal included) starts a fresh server;
# nothing else does.  (41-reload-any-change.t: changes that do not make
# a file newer.)

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use PfiTest qw(client_kinds fixture spit wait_for procs_in_sessions
               session_of);
use Test::More;
use Time::HiRes qw(sleep);

sub module_text ($) {
    my ($version) = @_;
    return "package PfiReloadMod;\nsub version { '$version' }\n1;\n";
}

# Each server has its own generation: the pid of its setup process.
sub init_code ($) {
    my ($dir) = @_;
    return <<"EOF";
use lib '$dir/lib';
use PfiReloadMod;
our \$GEN = \$\$;
prefork_autoreload_also_check('data.txt');
EOF
}

my $body = <<'EOF';
my ($sid) = (do { local (@ARGV, $/) = '/proc/self/stat'; <> })
    =~ m/\) \S+ \S+ \S+ (\S+)/;
print "gen=$main::GEN mod=", PfiReloadMod::version(), " sid=$sid\n";
EOF

# Modifies a file, after a pause so that its new mtime is surely later
# than the server's start time (file times can be a few ms coarse).
sub modify ($$) {
    my ($file, $text) = @_;
    sleep 0.05;
    spit($file, $text);
}

foreach my $kind (client_kinds()) {
    subtest "$kind client" => sub {
        my $fx = fixture($kind) or return;
        my $dir = $fx->dir;
        mkdir "$dir/lib" or die "mkdir: $!";
        spit("$dir/lib/PfiReloadMod.pm", module_text('v1'));
        spit("$dir/extra.txt", "1\n");
        my $script = $fx->script('reload.pl', init => init_code($dir),
                                 opts => "autoreload_extra => ['extra.txt']",
                                 body => $body);

        my $call = sub {
            my $r = $fx->run($script);
            is($r->{status}, 0, 'call succeeds') or diag $r->{err};
            my ($gen, $mod, $sid) =
                $r->{out} =~ m/^gen=(\d+) mod=(\S+) sid=(\d+)$/m;
            return ($gen // 'none', $mod // 'none', $sid // 0);
        };

        # The first call may run in the setup process (our client:
        # protocol.md 7), in our session; the second is the server's.
        my ($gen1, $mod) = $call->();
        is($mod, 'v1', 'module v1 loaded');
        my ($gen, undef, $sid1) = $call->();
        is($gen, $gen1, 'no change: same server');
        isnt($sid1, session_of(), '... which has a session of its own');

        modify("$dir/lib/PfiReloadMod.pm", module_text('v2'));
        my $gen2;
        ($gen2, $mod) = $call->();
        isnt($gen2, $gen1, 'module changed: fresh server');
        is($mod, 'v2', '... running the new module');
        like($fx->log_text,
             qr/info: reloading: \Q$dir\E\/lib\/PfiReloadMod\.pm changed$/m,
             '... and the old server said why');
        ok(wait_for(5, sub { !procs_in_sessions([$sid1]) }),
           '... and the old server has gone');

        open(my $fh, '>>', $script) or die;
        sleep 0.05;
        print $fh "# changed\n";
        close $fh;
        my ($gen3) = $call->();
        isnt($gen3, $gen2, 'script changed: fresh server');

        modify("$dir/data.txt", "new\n");
        my ($gen4) = $call->();
        isnt($gen4, $gen3,
             'a prefork_autoreload_also_check file appeared: fresh server');
        ($gen) = $call->();
        is($gen, $gen4, 'and then stays');

        modify("$dir/extra.txt", "2\n");
        my ($gen5) = $call->();
        isnt($gen5, $gen4, 'an autoreload_extra file changed: fresh server');

        # A direct run would no longer find it: a change like any other.
        unlink "$dir/extra.txt" or die;
        my ($gen6) = $call->();
        isnt($gen6, $gen5, 'a watched file disappearing: fresh server');
        ($gen) = $call->();
        is($gen, $gen6, '... and one that stays missing is no reason to'
           . ' reload');

        # With autoreload_inc => 0, modules are not watched; the script is.
        my $script2 = $fx->script('noinc.pl', init => init_code($dir),
                                  opts => 'autoreload_inc => 0',
                                  body => $body);
        my $r = $fx->run($script2);
        my ($g1) = $r->{out} =~ m/^gen=(\d+)/m;
        modify("$dir/lib/PfiReloadMod.pm", module_text('v3'));
        $r = $fx->run($script2);
        my ($g2, $m2) = $r->{out} =~ m/^gen=(\d+) mod=(\S+) /m;
        is($g2, $g1, 'autoreload_inc => 0: a module change is ignored');
        is($m2, 'v2', '... the old module still runs');
        open($fh, '>>', $script2) or die;
        sleep 0.05;
        print $fh "# changed\n";
        close $fh;
        $r = $fx->run($script2);
        my ($g3, $m3) = $r->{out} =~ m/^gen=(\d+) mod=(\S+) /m;
        isnt($g3, $g2, '... but a change to the script is not');
        is($m3, 'v3', '... and the fresh server loads the new module');

        # Each started with "watching N files" in the log (a server
        # whose only call ran in its setup process records no session).
        my $started = sub { scalar(() = $fx->log_text
                                   =~ m/: watching \d+ files/g) };
        ok(wait_for(5, sub { $started->() >= 8 }), 'eight servers were'
           . ' started') or diag($started->() . ' started');
        is($started->(), 8, '... and no more');
        $fx->cleanup_ok;
    };
}

done_testing;
