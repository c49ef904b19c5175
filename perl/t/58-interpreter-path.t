#!/usr/bin/perl
# An interpreter named without a / ("-U perl") is the binary the caller's
# PATH finds, as in a direct run (design.md 4.1): two PATHs that find two
# perl binaries get a server each, both warm, and every call runs its own
# PATH's perl.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Cwd qw(realpath);
use File::Copy qw(copy);
use PfiTest qw(fixture session_of);
use Test::More;

my $fx = fixture('ours') or plan skip_all => 'our client is not built';
my $dir = $fx->dir;
my @dirs = ("$dir/a", "$dir/b");
my $perl = realpath($^X);
foreach my $d (@dirs) {
    mkdir $d or die "mkdir $d: $!";
    copy($perl, "$d/perl") or die "copy $perl: $!";
    chmod 0755, "$d/perl" or die "chmod: $!";
}
my $script = $fx->script('which.pl',
    body => <<'EOT');
open(my $st, '<', '/proc/self/stat') or die "stat: $!";
my ($session) = (split ' ', (<$st> =~ s/\A.*\) //sr))[3];
print readlink("/proc/self/exe"), " $session\n";
EOT
my $path = sub { "$dirs[$_[0]]:/usr/local/bin:/usr/bin:/bin" };

# The first call for each PATH starts its server and runs in its setup
# process (protocol.md 7), in our session; the others are the server's.
my @servers = ({}, {});
foreach my $i (0 .. 9) {
    my $which = $i % 2;
    my $r = $fx->run($script, env => { PATH => $path->($which) });
    is($r->{status}, 0, "call $i ok") or diag($r->{err});
    my ($exe, $sid) = split ' ', $r->{out} // '';
    is($exe, "$dirs[$which]/perl", "call $i ran its own PATH's perl");
    if ($i < 2) {
        is($sid, session_of(), "call $i ran in place, in our session");
        next;
    }
    $servers[$which]{$sid // 'none'} = 1;
}
is(scalar(keys %{ $servers[0] }), 1, 'one server for the first PATH');
is(scalar(keys %{ $servers[1] }), 1, 'one server for the second PATH');
isnt((keys %{ $servers[0] })[0], (keys %{ $servers[1] })[0], 'two servers');

foreach my $which (0, 1) {
    $fx->run($script, flags => ['--kill'], env => { PATH => $path->($which) });
}
ok($fx->cleanup_ok, 'nothing left running');
done_testing;
