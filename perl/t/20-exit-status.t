#!/usr/bin/perl
# The caller sees the script's exit status exactly, through both
# clients, including the cases 7.0.0's library gets wrong: plain "exit
# 0" racing global destruction, and exec.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use PfiTest qw(client_kinds fixture describe_status);
use Test::More;

use constant REPEAT => 20;

my $body = <<'EOF';
package Noisy;
sub new { bless {}, shift }
# Runs during global destruction, as 7.0.0's EXECTERM pipe is closed.
sub DESTROY { my $x = 0; $x++ for 1..2000 }
package main;
our $END_MODE = '';
END {
    if ($END_MODE eq 'set-status') { $? = 9 }
    if ($END_MODE eq 'exit') { exit 4 }
}
my $mode = shift @ARGV;
if ($mode eq 'exit') { exit $ARGV[0] }
if ($mode eq 'destroy') { our $keep = Noisy->new; exit 0 }
if ($mode eq 'fall-off') { our $keep = Noisy->new }
if ($mode eq 'end-status') { $END_MODE = 'set-status'; exit 0 }
if ($mode eq 'end-exit') { $END_MODE = 'exit'; exit 1 }
if ($mode eq 'die') { $! = 0; die "dying on purpose\n" }
if ($mode eq 'exec-sh') { exec '/bin/sh', '-c', 'exit 6' or die "exec: $!" }
if ($mode eq 'exec-sleep') { exec '/bin/sleep', '0.2' or die "exec: $!" }
if ($mode eq 'posix-exit') { require POSIX; POSIX::_exit(3) }
if ($mode eq 'signal') { kill $ARGV[0], $$; sleep 10; exit 0 }
EOF

# [ description, args, expected wait status of the client, count ]
my @cases = (
    (map { [ "exit $_", [ 'exit', $_ ], $_ << 8, REPEAT ] } 0, 1, 2, 42, 255),
    [ 'exit 0 with a destructor', ['destroy'], 0, REPEAT ],
    [ 'falling off the end', ['fall-off'], 0, REPEAT ],
    [ 'END block setting $?', ['end-status'], 9 << 8, REPEAT ],
    [ 'exit inside an END block', ['end-exit'], 4 << 8, REPEAT ],
    [ 'die', ['die'], 255 << 8, REPEAT ],
    [ 'exec of sh -c "exit 6"', ['exec-sh'], 6 << 8, REPEAT ],
    [ 'exec of a program that takes a while', ['exec-sleep'], 0, 5 ],
    [ 'POSIX::_exit(3)', ['posix-exit'], 3 << 8, REPEAT ],
    (map { [ "killed by SIG$_->[0]", [ 'signal', $_->[0] ], $_->[1], 5 ] }
         [ TERM => 15 ], [ INT => 2 ], [ HUP => 1 ], [ KILL => 9 ]),
);

foreach my $kind (client_kinds()) {
    subtest "$kind client" => sub {
        my $fx = fixture($kind) or return;
        my $script = $fx->script('status.pl', body => $body);

        foreach my $case (@cases) {
            my ($what, $args, $want, $count) = @$case;
            my %wrong;
            foreach (1..$count) {
                my $r = $fx->run($script, args => $args);
                my $got = describe_status($r->{status});
                $got .= ', stderr: ' . $r->{err} if length $r->{err}
                    && $what !~ /^die/;
                $wrong{$got}++ unless defined $r->{status}
                    && $r->{status} == $want;
            }
            is(join(', ', map { "$_ x$wrong{$_}" } sort keys %wrong), '',
               "$what: " . describe_status($want) . " in all $count calls");
        }

        my $r = $fx->run($script, args => ['die']);
        is($r->{err}, "dying on purpose\n", 'die: message on stderr');

        $r = $fx->run($script, args => [ 'signal', 'USR1' ]);
        if ($kind eq 'c') {
            # Other signals: the C client reports them and exits 127.
            is(describe_status($r->{status}), 'exit 127',
               'killed by SIGUSR1: client exits 127');
            like($r->{err}, qr/\A[^\n]*\bsignal\b[^\n]*\n\z/i,
                 '... with a one-line message naming the signal');
        } else {
            # Ours dies of any signal the script died of, as a direct
            # run would.
            is(describe_status($r->{status}), 'signal 10',
               'killed by SIGUSR1: so is the client');
            is($r->{err}, '', '... silently');
        }

        $fx->cleanup_ok;
    };
}

done_testing;
