#!/usr/bin/perl
# A warm call runs exactly the code a direct run would run at that
# moment, also when the new files do not look newer: a release unpacked
# with tar, cp -p, mv of an older-dated file, an in-place rewrite with
# the date set back, a module replaced by an older-dated copy, and the
# interpreter itself replaced.  And without a change, no reload.
#
# Through our client only (the reload rule is the library's; the C
# client is exercised by 40-reload.t).  Every row twice: with inotify,
# and with $Prefork::Interp::USE_INOTIFY = 0 (a stat of every file per
# call, as where inotify cannot be had).

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Config ();
use Cwd qw(abs_path);
use PfiTest qw(fixture spit slurp);
use Test::More;

my $fx = fixture('ours') or do { done_testing; exit };
my $top = $fx->dir;

# Per pass: a prefix for its directories, and initialisation code.
my ($PREFIX, $INIT_EXTRA);

# The same length in every version, so that no row is caught by a size
# change alone.
sub module_text ($) {
    my ($v) = @_;
    return "package PfiAny;\nsub version { '$v' }\n1;\n";
}

sub script_text ($$) {
    my ($app, $v) = @_;
    return PfiTest::script_text(
        dir  => $top,
        init => "$INIT_EXTRA\nuse lib '$app/lib';\nuse PfiAny;\n"
              . "our \$GEN = \$\$;\n",
        body => <<"EOF");
my (\$sid) = (do { local (\@ARGV, \$/) = '/proc/self/stat'; <> })
    =~ m/\\) \\S+ \\S+ \\S+ (\\S+)/;
# No inotify fd of the server's in the call (its parent, the server,
# has one); a direct run has none either.
my \$inotify = grep { (readlink(\$_) // '') =~ m/inotify/ }
    glob('/proc/self/fd/*');
print "code: script=$v mod=", PfiAny::version(),
      " exe=", readlink('/proc/self/exe'), " inotify=\$inotify\\n";
print "gen=\$main::GEN sid=\$sid\\n";
EOF
}

sub sh (@) {
    my @cmd = @_;
    system(@cmd) == 0 or die "@cmd: " . PfiTest::describe_status($?);
}

my $OLD_DATE = '2000-01-01 00:00:00';

# A fresh application in $top/NAME: NAME/app.pl (v1) using
# NAME/lib/PfiAny.pm (v1).  Returns its directory and script.
sub make_app ($) {
    my ($name) = @_;
    my $app = "$top/$PREFIX-$name";
    mkdir $app or die;
    mkdir "$app/lib" or die;
    spit("$app/lib/PfiAny.pm", module_text('v1'));
    spit("$app/app.pl", script_text($app, 'v1'));
    chmod 0755, "$app/app.pl" or die;
    $fx->adopt_script("$app/app.pl");
    return ($app, "$app/app.pl");
}

# One call; returns (code line, gen, sid, whole result).
sub call ($%) {
    my ($script, %a) = @_;
    my $r = $fx->run($script, %a);
    my ($code) = ($r->{out} // '') =~ m/^(code: .*)$/m;
    my ($gen, $sid) = ($r->{out} // '') =~ m/^gen=(\d+) sid=(\d+)$/m;
    return ($code // 'none', $gen // 'none', $sid // 0, $r);
}

# row(NAME, WANT, CHANGE): starts the server of a fresh application,
# makes sure it is warm, runs CHANGE->(APP), then checks that the next
# call through the client prints what a direct run prints (WANT: its
# code line), from a new server.
sub row ($$$) {
    my ($name, $want, $change) = @_;
    subtest $name => sub {
        my ($app, $script) = make_app($name =~ s/\W+/-/gr);
        my ($code1, $gen1) = call($script);
        my ($code2, $gen2) = call($script);
        is($gen2, $gen1, 'warm before the change');
        like($code2, qr/^code: script=v1 mod=v1 /, '... running v1');

        $change->($app);

        my ($direct) = call($script, direct => 1);
        like($direct, $want, 'a direct run runs the new code');
        my ($code3, $gen3, undef, $r) = call($script);
        is($r->{status}, 0, 'the warm call succeeds') or diag $r->{err};
        is($code3, $direct, 'the warm call prints what a direct run prints');
        isnt($gen3, $gen2, '... from a fresh server');
        like($fx->log_text, qr/reloading: \Q$app\E\/\S+ changed$/m,
             '... and the old server said why');
    };
}

# Files of the next version, dated long ago, in $top/NAME.
sub old_dated_release ($$) {
    my ($name, $app) = @_;
    my $rel = "$top/$PREFIX-$name";
    mkdir $rel or die;
    mkdir "$rel/lib" or die;
    spit("$rel/lib/PfiAny.pm", module_text('v2'));
    spit("$rel/app.pl", script_text($app, 'v2'));
    chmod 0755, "$rel/app.pl" or die;
    sh('touch', '-d', $OLD_DATE, "$rel/app.pl", "$rel/lib/PfiAny.pm");
    return $rel;
}

sub rows () {
    row('tar -xf of an older-dated release', qr/^code: script=v2 mod=v2 /, sub {
        my ($app) = @_;
        my $rel = old_dated_release('rel-tar', $app);
        sh('tar', '-cf', "$rel.tar", '-C', $rel, 'app.pl', 'lib/PfiAny.pm');
        sh('tar', '-xf', "$rel.tar", '-C', $app);
        is((stat "$app/lib/PfiAny.pm")[9], (stat "$rel/lib/PfiAny.pm")[9],
           'tar kept the old date');
    });

    row('cp -p of an older file over the module', qr/^code: script=v1 mod=v2 /,
        sub {
        my ($app) = @_;
        my $rel = old_dated_release('rel-cp', $app);
        my $ino = (stat "$app/lib/PfiAny.pm")[1];
        sh('cp', '-p', "$rel/lib/PfiAny.pm", "$app/lib/PfiAny.pm");
        is((stat "$app/lib/PfiAny.pm")[1], $ino, 'cp -p rewrote the same inode');
    });

    row('mv of an older-dated file over the script',
        qr/^code: script=v2 mod=v1 /, sub {
        my ($app) = @_;
        my $rel = old_dated_release('rel-mv', $app);
        sh('mv', "$rel/app.pl", "$app/app.pl");
    });

    row('script rewritten in place, then touch -d 2000-01-01',
        qr/^code: script=v2 mod=v1 /, sub {
        my ($app) = @_;
        my $ino = (stat "$app/app.pl")[1];
        open(my $fh, '+<', "$app/app.pl") or die;
        print $fh script_text($app, 'v2');
        close $fh or die;
        sh('touch', '-d', $OLD_DATE, "$app/app.pl");
        is((stat "$app/app.pl")[1], $ino, 'the same inode');
    });

    row('a used module replaced by an older-dated copy',
        qr/^code: script=v1 mod=v2 /, sub {
        my ($app) = @_;
        my $rel = old_dated_release('rel-replace', $app);
        sh('cp', '-p', "$rel/lib/PfiAny.pm", "$app/lib/.PfiAny.pm.new");
        sh('mv', "$app/lib/.PfiAny.pm.new", "$app/lib/PfiAny.pm");
    });

    # The interpreter: a copy of perl in the application's directory is the
    # #! interpreter; replacing it (cp to a temporary name, then mv, as
    # package managers do) must bring a server running the new file.
    subtest 'the interpreter replaced' => sub {
        my ($app, $script) = make_app('interp');
        my $real_perl = abs_path($^X);
        my $perl = "$app/perl";
        sh('cp', $real_perl, $perl);
        my @interp = (interp => [ '-U', $perl ]);
        my ($code1, $gen1, $sid1) = call($script, @interp);
        my ($code2, $gen2, $sid2) = call($script, @interp);
        is($gen2, $gen1, 'warm before the change');
        is($code2, "code: script=v1 mod=v1 exe=$perl inotify=0",
       '... running our copy');
        is(readlink("/proc/$sid2/exe"), $perl, '... as the server does');

        sh('cp', $real_perl, "$app/.perl.new");
        sh('mv', "$app/.perl.new", $perl);

        my ($code3, $gen3, undef, $r) = call($script, @interp);
        is($r->{status}, 0, 'the warm call succeeds') or diag $r->{err};
        is($code3, "code: script=v1 mod=v1 exe=$perl inotify=0",
           'the call ran on the new file, not a deleted one');
        isnt($gen3, $gen2, '... from a fresh server');
        # That call may have run in the fresh server's setup process
        # (our client: protocol.md 7); the next one is the server's.
        my ($code4, $gen4, $sid3) = call($script, @interp);
        is($gen4, $gen3, '... which serves the next call');
        my $exe = readlink("/proc/$sid3/exe") // 'gone';
        is($exe, $perl, '... whose /proc/PID/exe is the new file')
            or diag "the old one: " . (readlink("/proc/$sid2/exe") // 'gone');
        like($fx->log_text, qr/reloading: \Q$perl\E changed$/m,
             '... and the old server said why');
        # This server's identity names our copy: the fixture's cleanup
        # would --kill another.
        my $k = $fx->run($script, flags => ['--kill'], @interp);
        is($k->{status}, 0, '--kill of this server');
    };

    subtest 'nothing changed: no reload' => sub {
        my ($app, $script) = make_app('steady');
        my ($code1, $gen1) = call($script);
        my %gens;
        my $ok = 0;
        for (1 .. 20) {
            my ($code, $gen, undef, $r) = call($script);
            $gens{$gen}++;
            $ok++ if $r->{status} == 0 && $code =~ /^code: script=v1 mod=v1 /;
        }
        is($ok, 20, '20 calls succeed, running v1');
        is_deeply([ keys %gens ], [ $gen1 ], '... all served by the first server');
    };

    # The application reached through a symbolic link that a deployment
    # switches to the next release (ln -s + mv -T, as Capistrano does):
    # no file the server loaded changes, the path leads elsewhere.
    subtest 'a symbolic link to the release switched' => sub {
        my $base = "$top/$PREFIX-link";
        mkdir $base or die;
        foreach my $v (qw(v1 v2)) {
            my $rel = "$base/rel-$v";
            mkdir $rel or die;
            mkdir "$rel/lib" or die;
            spit("$rel/lib/PfiAny.pm", module_text($v));
            spit("$rel/app.pl", script_text("$base/current", $v));
            chmod 0755, "$rel/app.pl" or die;
        }
        sh('touch', '-d', $OLD_DATE, "$base/rel-v2/app.pl",
           "$base/rel-v2/lib/PfiAny.pm");
        symlink('rel-v1', "$base/current") or die;
        my $script = $fx->adopt_script("$base/current/app.pl");
        my ($code1, $gen1) = call($script);
        my ($code2, $gen2) = call($script);
        is($gen2, $gen1, 'warm before the change');
        like($code2, qr/^code: script=v1 mod=v1 /, '... running v1');

        symlink('rel-v2', "$base/current.new") or die;
        rename("$base/current.new", "$base/current") or die;

        my ($direct) = call($script, direct => 1);
        like($direct, qr/^code: script=v2 mod=v2 /,
             'a direct run runs the new release');
        my ($code3, $gen3, undef, $r) = call($script);
        is($r->{status}, 0, 'the warm call succeeds') or diag $r->{err};
        is($code3, $direct, 'the warm call prints what a direct run prints');
        isnt($gen3, $gen2, '... from a fresh server');
    };
}

foreach my $pass (['inotify', ''],
                  ['polling', '$Prefork::Interp::USE_INOTIFY = 0;']) {
    ($PREFIX, $INIT_EXTRA) = @$pass;
    subtest $PREFIX => \&rows;
    if ($PREFIX eq 'inotify') {
        unlike($fx->log_text, qr/cannot use inotify|cannot watch/,
               'inotify: every file is watched');
        like($fx->log_text, qr/watching \d+ files through \d+ directories; 0 checked on every call/,
             '... and none is checked on every call');
    } else {
        like($fx->log_text, qr/cannot use inotify \(turned off by \$Prefork::Interp::USE_INOTIFY\): each of the \d+ files the server depends on is checked on every call/,
             'polling: the server said so');
    }
}

$fx->cleanup_ok;
done_testing;
