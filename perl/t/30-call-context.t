#!/usr/bin/perl
# What a call sees, through both clients: arguments, $0, environment,
# standard input/output/error, file descriptors, signal dispositions,
# and the combined "#!" form.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Digest::MD5 qw(md5_hex);
use PfiTest qw(client_kinds fixture describe_status slurp);
use Test::More;

my $body = <<'EOF';
use Digest::MD5 ();
sub hexs { join ',', map { unpack 'H*', $_ } @_ }
my $what = $ARGV[0] // '';
if ($what eq 'args') {
    print "ARGV=", hexs(@ARGV), "\n0=$0\n";
} elsif ($what eq 'env') {
    print map { hexs($_) . '=' . hexs($ENV{$_}) . "\n" } sort keys %ENV;
} elsif ($what eq 'stdin') {
    local $/;
    my $data = <STDIN>;
    print length($data), ' ', Digest::MD5::md5_hex($data), "\n";
    print STDERR "to stderr\n";
    printf "tty=%d\n", -t STDIN ? 1 : 0;
} elsif ($what eq 'big') {
    print 'x' x 1023, "\n" for 1..3072;
} elsif ($what eq 'state') {
    printf "layers=%s\n", join ',', PerlIO::get_layers(STDOUT);
    printf "autoflush=%d\n", $|;
    print "e-acute=\x{e9}\n";
    printf "warn=%d\n", $^W;
    printf "sig INT=%s PIPE=%s USR2=%s HUP=%s\n",
        map { ref($_) || $_ || 'undef' } @SIG{qw(INT PIPE USR2 HUP)};
    printf "T-now=%d\n", abs($^T - time) <= 2 ? 1 : 0;
    printf "T=%d\n", $^T;
    printf "rand=%.12f\n", rand();
    require Cwd;
    printf "cwd=%s\n", Cwd::getcwd();
    # Our descriptors, less the one the listing uses.
    opendir(my $d, '/proc/self/fd') or die;
    my @fds = sort { $a <=> $b } grep {
        m/\A[0-9]+\z/ && (readlink("/proc/self/fd/$_") // '') !~ m{^/proc/}
    } readdir $d;
    print "fds=@fds\n";
    print "init-fd=", fileno($main::INIT_FH), "\n";
}
exit 0;
EOF

# During initialisation: an I/O layer and autoflush on STDOUT, handlers
# for signals, an open file, a used random generator, a bogus $^T.
my $init = <<'EOF';
binmode(STDOUT, ':encoding(UTF-8)');
$| = 1;
$SIG{INT} = sub { print "INT handler\n" };
$SIG{PIPE} = 'IGNORE';
$SIG{USR2} = sub { };
open($main::INIT_FH, '<', $0) or die;
my $r = rand();
$^T = 12345;
EOF

sub parse_env ($) {
    my ($text) = @_;
    my %env;
    foreach my $line (split /\n/, $text) {
        my ($k, $v) = split /=/, $line, 2;
        $env{ pack 'H*', $k } = pack 'H*', ($v =~ s/,//gr);
    }
    return \%env;
}

foreach my $kind (client_kinds()) {
    subtest "$kind client" => sub {
        my $fx = fixture($kind) or return;
        my $script = $fx->script('ctx.pl', init => $init, body => $body);

        # Arguments and $0
        my @args = ('args', 'a b', '', "new\nline", "\xff\x01", '-x', '--',
                    '*', '=');
        my $r = $fx->run($script, args => \@args);
        is($r->{status}, 0, 'args: exit 0') or diag $r->{err};
        my $want = join ',', map { unpack 'H*', $_ } @args;
        like($r->{out}, qr/^ARGV=\Q$want\E$/m,
             '@ARGV is exactly the arguments');
        like($r->{out}, qr/^0=\Q$script\E$/m, '$0 is the script');

        # Environment
        my %extra = (FOO => 'bar baz', EMPTY => '', MULTI => "a\nb",
                     PREFORK_INTERP_EXT_TEST => 'secret',
                     PREFORK_INTERP_EXTENSION => 'also reserved');
        $r = $fx->run($script, args => ['env'], env => \%extra);
        my %expect = ($fx->base_env, %extra);
        delete @expect{qw(PREFORK_INTERP_EXT_TEST PREFORK_INTERP_EXTENSION)};
        is_deeply(parse_env($r->{out}), \%expect,
                  '%ENV is the caller\'s, less PREFORK_INTERP_EXT* entries');
        $r = $fx->run($script, args => ['env'], env => { OTHER => 1 });
        %expect = ($fx->base_env, OTHER => 1);
        is_deeply(parse_env($r->{out}), \%expect,
                  'the next call has its own environment');

        # Standard input, output and error
        my $input = join '', map { chr(($_ * 7) % 256) } 1..100_000;
        $r = $fx->run($script, args => ['stdin'], stdin => $input);
        is($r->{out}, "100000 " . md5_hex($input) . "\ntty=0\n",
           'stdin read completely; stdout separate');
        is($r->{err}, "to stderr\n", 'stderr separate');
        $r = $fx->run($script, args => ['big']);
        is(length($r->{out}), 3072 * 1024, '3 MiB of output arrives whole');

        # State inherited from initialisation, and what is reset
        $r = $fx->run($script, args => ['state']);
        my $out = $r->{out};
        like($out, qr/^layers=unix,perlio,encoding\(utf-8-strict\),utf8$/m,
             'STDOUT keeps the I/O layers pushed during initialisation');
        like($out, qr/^e-acute=\xc3\xa9$/m, '... and they work');
        like($out, qr/^autoflush=1$/m, 'STDOUT keeps autoflush');
        like($out, qr/^sig INT=CODE PIPE=IGNORE USR2=CODE HUP=undef$/m,
             'the script\'s handlers and IGNOREs kept, the rest default'
             . ' (protocol.md 6.4 step 6)');
        like($out, qr/^T-now=1$/m, '$^T is the time of the call');
        like($out, qr/^cwd=\Q${\ $fx->dir }\E$/m, 'current directory');
        my ($init_fd) = $out =~ m/^init-fd=(\d+)$/m;
        like($out, qr/^fds=0 1 2 $init_fd$/m,
             'fds: 0, 1, 2 and the script\'s own, nothing of ours');
        my ($rand1) = $out =~ m/^rand=(\S+)$/m;
        my $r2 = $fx->run($script, args => ['state']);
        my ($rand2) = $r2->{out} =~ m/^rand=(\S+)$/m;
        isnt($rand1, $rand2, 'each call draws its own random numbers');
        like($out, qr/^warn=0$/m, 'no -w: $^W is 0');

        $fx->cleanup_ok;
    };
}

subtest 'the #! line, and interpreter arguments (our client)' => sub {
    my $fx = fixture('ours') or return;
    # The kernel limits #! lines, so point one at a short symlink.  (The
    # path must not contain "perl": perl scans its #! line for switches
    # after the first "perl" it finds.)
    my $link = $fx->dir . '/pfi';
    symlink($fx->client, $link) or die "symlink: $!";
    my $script = $fx->script('bang.pl', shebang => "#!$link -U,perl,-w",
                             body => $body);
    my $r = $fx->run($script, shebang => 1, args => [ 'args', 'x y' ]);
    is($r->{status}, 0, 'runs') or diag $r->{err};
    like($r->{out}, qr/^ARGV=61726773,782079$/m, '@ARGV');
    like($r->{out}, qr/^0=\Q$script\E$/m, '$0');
    $r = $fx->run($script, shebang => 1, args => ['state']);
    like($r->{out}, qr/^warn=1$/m, '-w from the #! line took effect');
    # --kill needs the same interpreter arguments.
    $r = $fx->run($script, interp => [ '--kill,-U,perl,-w' ]);
    is($r->{status}, 0, '--kill with the same interpreter arguments');
    $fx->cleanup_ok;
};

subtest 'the #! line (C client)' => sub {
    my $fx = fixture('c') or return;
    my $link = $fx->dir . '/pfi';
    symlink($fx->client, $link) or die "symlink: $!";
    my $script = $fx->script('bang.pl', shebang => "#!$link -U,perl",
                             body => $body);
    my $r = $fx->run($script, shebang => 1, args => [ 'args', 'x y' ]);
    is($r->{status}, 0, 'runs') or diag $r->{err};
    like($r->{out}, qr/^ARGV=61726773,782079$/m, '@ARGV');
    like($r->{out}, qr/^0=\Q$script\E$/m, '$0');
    $fx->cleanup_ok;
};

done_testing;
