#!/usr/bin/perl
# Concurrency, through both clients: max_servers limits the calls
# served at once, no limit means none, and idle connections hold none
# of the places that real callers need.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use PfiTest qw(client_kinds fixture slurp listen_path describe_status);
use Socket qw(AF_UNIX SOCK_STREAM pack_sockaddr_un);
use Test::More;
use Time::HiRes ();

# Each call appends "start T" and "end T" to spans.txt around a sleep.
my $body = <<'EOF';
use Time::HiRes ();
exit 0 if ($ARGV[0] // '') eq 'quick';
sub note_span {
    open(my $fh, '>>', 'spans.txt') or die "spans: $!";
    printf $fh "%s %.6f\n", $_[0], Time::HiRes::time();
    close $fh;
}
note_span('start');
Time::HiRes::sleep($ARGV[0]);
note_span('end');
exit 0;
EOF

# The largest number of calls that were running at the same moment.
sub max_overlap ($) {
    my ($file) = @_;
    my @events = map { my ($what, $t) = split; [ $t, $what eq 'start' ? 1 : -1 ] }
                 split /\n/, slurp($file) // '';
    # At equal times, count ends first.
    @events = sort { $a->[0] <=> $b->[0] || $a->[1] <=> $b->[1] } @events;
    my ($now, $max) = (0, 0);
    foreach my $e (@events) {
        $now += $e->[1];
        $max = $now if $now > $max;
    }
    return ($max, scalar(@events) / 2);
}

# Runs N calls at once; returns the statuses.
sub parallel_calls {
    my ($fx, $script, $n, $secs) = @_;
    unlink $fx->dir . '/spans.txt';
    my @h = map { $fx->start($script, args => [$secs]) } 1..$n;
    return map { describe_status($fx->finish($_, 30)->{status}) } @h;
}

foreach my $kind (client_kinds()) {
    subtest "$kind client" => sub {
        my $fx = fixture($kind) or return;

        my $limited = $fx->script('limited.pl', opts => 'max_servers => 2',
                                  body => $body);
        is($fx->run($limited, args => ['quick'])->{status}, 0, 'warm up');
        my $t0 = Time::HiRes::time();
        my @st = parallel_calls($fx, $limited, 5, 0.4);
        my $took = Time::HiRes::time() - $t0;
        is("@st", join(' ', ('exit 0') x 5), 'max_servers 2: all 5 calls succeed');
        my ($max, $calls) = max_overlap($fx->dir . '/spans.txt');
        is($calls, 5, 'five calls ran');
        is($max, 2, 'at most two at once, and two did run together');
        cmp_ok($took, '>=', 1.1, "they took three rounds ($took s)");

        # Negative (7.0.0) and 0 (docs/options.md): no limit.
        foreach my $n (-1, 0) {
            my $unlimited = $fx->script("unlimited$n.pl",
                                        opts => "max_servers => $n",
                                        body => $body);
            is($fx->run($unlimited, args => ['quick'])->{status}, 0,
               'warm up');
            @st = parallel_calls($fx, $unlimited, 6, 1.5);
            is("@st", join(' ', ('exit 0') x 6),
               "max_servers $n: all 6 calls succeed");
            ($max) = max_overlap($fx->dir . '/spans.txt');
            is($max, 6, '... all six at once');
        }

        $fx->cleanup_ok;

        # Idle connections (7.0.0: five of them block every caller).
        # A fixture of its own, so its only session is this server's.
        $fx = fixture($kind) or return;
        my $idle = $fx->script('idle.pl', body => $body);
        is($fx->run($idle, args => ['quick'])->{status}, 0, 'warm up');
        # The first call may have run in the setup process (our client:
        # protocol.md 7): the second is the server's, and records it.
        is($fx->run($idle, args => ['quick'])->{status}, 0, 'a warm call');
        my @servers = $fx->sessions;
        is(scalar @servers, 1, 'one server') or return;
        my $server = $servers[0];
        my $path = listen_path($server, $fx->run_dir);
        ok($path, "found the server's socket") or return;
        my @conns = map {
            socket(my $s, AF_UNIX, SOCK_STREAM, 0) or die;
            connect($s, pack_sockaddr_un($path)) or die "connect: $!";
            $s;
        } 1..6;
        $t0 = Time::HiRes::time();
        my $r = $fx->run($idle, args => ['quick'], timeout => 30);
        $took = Time::HiRes::time() - $t0;
        is(describe_status($r->{status}), 'exit 0',
           'with 6 idle connections (max_servers 4), a call still succeeds');
        cmp_ok($took, '<', 4, "at once ($took s): idle connections hold no"
               . ' slot (7.0.0 waited for ever, our 5 s timeout before)');
        close $_ foreach @conns;

        $fx->cleanup_ok;
    };
}

done_testing;
