#!/usr/bin/perl
# Fast exit (Prefork::Interp::FastExit): every way a call can end gives
# the same stdout, stderr and exit status served with fast exit on, as
# a direct run, and as served with fast_exit => 0; what is skipped is
# global destruction only (the documented rule); and a server object
# whose DESTROY runs at global destruction costs the calls nothing.
# Last, warm call medians with fast exit on and off (printed, not
# checked).

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use PfiTest qw(fixture slurp describe_status);
use Test::More;
use Time::HiRes ();

my $init = <<'EOF';
package SlowGD;
# Stands for a module whose global destruction is slow: leaves a mark
# each time it runs at global destruction.
sub DESTROY {
    return unless ${^GLOBAL_PHASE} eq 'DESTRUCT';
    open(my $f, '>>', "$ENV{PFI_MARKS}") or return;
    print $f "$$\n";
    close $f;
}
package main;
our $SERVER_OBJ = bless {}, 'SlowGD';
EOF

my $body = <<'EOF';
package Obj;
use overload '""' => sub { "Obj($_[0]{n})" }, fallback => 1;
sub new { my ($c, $n) = @_; bless { n => $n }, $c }
sub DESTROY { print "DESTROY $_[0]{n} ${^GLOBAL_PHASE}\n" }
package main;
our $END_MODE = '';
END { print "END first-compiled \$?=$?\n" }
END {
    print "END second-compiled \$?=$?\n";
    if ($END_MODE eq 'set-status') { $? = 9 }
    if ($END_MODE eq 'exit') { exit 4 }
    if ($END_MODE eq 'die') { die "END dies\n" }
    if ($END_MODE eq 'status-256') { $? = 256 }
}
my $mode = shift @ARGV // '';
print "out: $mode";          # unterminated, in STDOUT's buffer
print STDERR "err: $mode\n";
if ($mode eq 'exit') { exit $ARGV[0] }
if ($mode eq 'fall-off') { }
if ($mode eq 'die') { $! = 0; $? = 0; die "dying on purpose\n" }
if ($mode eq 'die-errno') { $! = 5; die "dying with errno\n" }
if ($mode eq 'die-status') { $! = 0; $? = 3 << 8; die "dying with \$?\n" }
if ($mode eq 'die-object') { $! = 0; $? = 0; die Obj->new('exception') }
if ($mode eq 'end-status') { $END_MODE = 'set-status'; exit 0 }
if ($mode eq 'end-exit') { $END_MODE = 'exit'; exit 1 }
if ($mode eq 'end-die') { $END_MODE = 'die'; exit 0 }
if ($mode eq 'end-256') { $END_MODE = 'status-256'; exit 0 }
if ($mode eq 'late-end') {
    eval 'END { print "END compiled during the call \$?=$?\n"; $? = 7 } 1'
        or die $@;
    exit 2;
}
if ($mode eq 'handles') {
    # Other handles with buffered output, flushed at exit.
    open(DUP, '>&', \*STDOUT) or die;
    print DUP "[bareword handle]";
    our $fh;
    open($fh, '>&', \*STDOUT) or die;
    print $fh "[handle in a package variable]";
    open(my $lex, '>&', \*STDOUT) or die;
    print $lex "[file-scoped lexical handle]";
    print STDERR "[stderr, no newline]";
    exit 0;
}
if ($mode eq 'stdout-broken') {
    $SIG{PIPE} = 'IGNORE';
    pipe(my $r, my $w) or die;
    close $r;
    open(STDOUT, '>&', $w) or die;
    close $w;
    print "lost";
    exit $ARGV[0];
}
if ($mode eq 'exec') {
    exec '/bin/sh', '-c', 'echo " from sh"; exit 6' or die "exec: $!";
}
if ($mode eq 'signal') { kill 'TERM', $$; sleep 10; exit 0 }
if ($mode eq 'lexical') {
    my $obj = Obj->new('file-lexical');
    { my $inner = Obj->new('block-lexical'); }
    exit 0 if $ARGV[0];
}
if ($mode eq 'sub-lexical') {
    sub run_call { my $obj = Obj->new('sub-lexical'); exit 5 }
    run_call();
}
if ($mode eq 'global') {
    # Alive at global destruction: skipped by fast exit (documented).
    our $global = Obj->new('package-variable');
    exit 0;
}
if ($mode eq 'piped-open') {
    # Closed (and waited for) only at global destruction: fast exit
    # steps aside, since the executor has a child.
    open(P, '|-', '/bin/cat') or die;
    print P "[through cat]\n";
    exit 0;
}
if ($mode eq 'fork') {
    # A process the call forks exits as usual (its END blocks run).
    my $pid = fork // die;
    if (!$pid) { print " child"; exit 0 }
    waitpid($pid, 0);
    print " parent";
    exit 3;
}
EOF

# [ args, expected exit status (for the record; the comparison is with
# the direct run) ]
my @cases = (
    [ [ 'exit', 0 ] ], [ [ 'exit', 3 ] ], [ [ 'exit', 256 + 7 ] ],
    [ ['fall-off'] ], [ ['die'] ], [ ['die-errno'] ], [ ['die-status'] ],
    [ ['die-object'] ],
    [ ['end-status'] ], [ ['end-exit'] ], [ ['end-die'] ], [ ['end-256'] ],
    [ ['late-end'] ], [ ['handles'] ],
    [ [ 'stdout-broken', 0 ] ], [ [ 'stdout-broken', 7 ] ],
    [ ['exec'] ], [ ['signal'] ],
    [ [ 'lexical', 0 ] ], [ [ 'lexical', 1 ] ], [ ['sub-lexical'] ],
    [ ['piped-open'] ], [ ['fork'] ],
);

my $fx = fixture('ours') or do { done_testing; exit };
my $marks = $fx->dir . '/marks';
my %env = (PFI_MARKS => $marks);
my %script = (
    on  => $fx->script('fast-on.pl',  init => $init, body => $body),
    off => $fx->script('fast-off.pl', init => $init, body => $body,
                       opts => 'fast_exit => 0'),
);

sub show ($) {
    my ($r) = @_;
    return { status => describe_status($r->{status}),
             out => $r->{out}, err => $r->{err} };
}

# Start both servers.
$fx->run($script{$_}, args => [ 'exit', 0 ], env => \%env) for qw(on off);

foreach my $case (@cases) {
    my ($args) = @$case;
    my $what = join ' ', @$args;
    foreach my $setting (qw(on off)) {
        my $direct = show($fx->run($script{$setting}, args => $args,
                                   env => \%env, direct => 1));
        my $served = show($fx->run($script{$setting}, args => $args,
                                   env => \%env));
        is_deeply($served, $direct,
                  "$what: served with fast exit $setting = direct run")
            or diag explain { served => $served, direct => $direct };
    }
}

# The documented rule: objects still alive at global destruction (here
# one the call put in a package variable) are not destroyed with fast
# exit on; everything else is identical.
{
    my $direct = show($fx->run($script{on}, args => ['global'],
                               env => \%env, direct => 1));
    my $on = show($fx->run($script{on}, args => ['global'], env => \%env));
    my $off = show($fx->run($script{off}, args => ['global'],
                            env => \%env));
    my $line = "DESTROY package-variable DESTRUCT\n";
    like($direct->{out}, qr/\Q$line\E/,
         'direct run: the package variable is destroyed at global'
         . ' destruction');
    is_deeply($off, $direct, 'fast exit off: same as the direct run');
    (my $without = $direct->{out}) =~ s/\Q$line\E//;
    is_deeply($on, { %$direct, out => $without },
              'fast exit on: the same without that DESTROY');
}

# The server's objects are not destroyed per call with fast exit on,
# and are with it off.
{
    my $count = sub { my $t = slurp($marks) // ''; scalar(() = $t =~ /\n/g) };
    foreach my $setting (qw(on off)) {
        my $before = $count->();
        my $bad = 0;
        foreach (1..5) {
            my $r = $fx->run($script{$setting}, args => [ 'exit', 0 ],
                             env => \%env);
            $bad++ if !defined $r->{status} || $r->{status} != 0;
        }
        is($bad, 0, "fast exit $setting: 5 calls exit 0");
        is($count->() - $before, $setting eq 'on' ? 0 : 5,
           "fast exit $setting: server object destroyed at global"
           . ' destruction in ' . ($setting eq 'on' ? 'no' : 'every')
           . ' call');
    }
}

$fx->cleanup_ok;

# Warm call medians of a script that loads heavy modules, fast exit on
# and off.  Printed only.
SKIP: {
    my $heavy = join '', map { "use $_ ();\n" }
        grep { eval "require $_; 1" } qw(DateTime POSIX Data::Dumper Storable);
    my $bx = fixture('ours') or last;
    my %bench = (
        on  => $bx->script('heavy-on.pl', init => $heavy,
                           body => 'print "ok\n";'),
        off => $bx->script('heavy-off.pl', init => $heavy,
                           body => 'print "ok\n";', opts => 'fast_exit => 0'),
    );
    my %median;
    foreach my $setting (qw(on off)) {
        $bx->run($bench{$setting}) for 1..3;
        my @t;
        foreach (1..21) {
            my $t0 = Time::HiRes::time();
            $bx->run($bench{$setting});
            push @t, Time::HiRes::time() - $t0;
        }
        @t = sort { $a <=> $b } @t;
        $median{$setting} = $t[@t / 2] * 1000;
    }
    (my $mods = $heavy) =~ s/use (\S+) \(\);\n/$1 /g;
    diag(sprintf 'warm call median (%s): fast exit on %.1f ms, off %.1f ms',
         $mods =~ s/ \z//r, $median{on}, $median{off});
    pass('timings printed');
    $bx->cleanup_ok;
}

done_testing;
