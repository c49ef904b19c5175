#!/usr/bin/perl
# Extension call1 (and pty1), encoding and decoding only (no
# processes): Prefork::Interp::Protocol's offer, frames and ATTR bodies,
# against the worked examples of protocol.md 6.3 and 6.5, and the pty
# key of 9.2.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";
use PfiTest qw(lib_dir);
use lib lib_dir();

use Prefork::Interp::Protocol;
use Test::More;

my $P = 'Prefork::Interp::Protocol';

sub hex_bytes ($) {
    my ($s) = @_;
    $s =~ s/\s+//g;
    return pack 'H*', $s;
}

sub dies_like {
    my ($code, $re, $name) = @_;
    my $ok = eval { $code->(); 1 };
    ok(!$ok, "$name: dies");
    like($@, $re, "$name: message");
    like($@, qr/\A[^\n]*\n\z/, "$name: one line");
}

subtest 'offer (protocol.md 5, 6.1)' => sub {
    my $body = "A=1\0PREFORK_INTERP_EXT=call1\0PREFORK_INTERP_EXT_X=y\0B=2\0"
             . "\0perl\0/s.pl\0";
    my $shape = Prefork::Interp::Protocol::check_request(\$body);
    is($shape->{env_end}, index($body, "\0\0") + 1,
       'the environment ends at the empty string');
    is_deeply($shape->{offer}, { call1 => 1, pty1 => 0 }, 'call1 offered');
    is_deeply([ Prefork::Interp::Protocol::accepted_names($shape->{offer}) ],
              ['call1'], 'call1 accepted');
    my ($names, $values) = Prefork::Interp::Protocol::request_env(
        \$body, $shape->{env_end});
    is_deeply([ map { [ $_, $values->{$_} ] } @$names ],
              [ [ 'A', '1' ], [ 'B', '2' ] ],
              'reserved entries are not in the environment');

    my $offer = sub {
        my $b = join('', map { "$_\0" } @_) . "\0perl\0";
        return Prefork::Interp::Protocol::check_request(\$b)->{offer};
    };
    ok($offer->('PREFORK_INTERP_EXT=future,call1,,later')->{call1},
       'call1 found among other names');
    ok($offer->('PREFORK_INTERP_EXT=call1,later')->{call1}, 'first');
    ok($offer->('PREFORK_INTERP_EXT=later,call1')->{call1}, 'last');
    ok(!$offer->('PREFORK_INTERP_EXT=call10,CALL1,xcall1')->{call1},
       'names are compared exactly');
    ok($offer->('PREFORK_INTERP_EXT=x', 'A=1', 'PREFORK_INTERP_EXT=call1')
       ->{call1}, 'the names of several entries add up');
    ok(!$offer->('PREFORK_INTERP_EXT_OTHER=call1')->{call1},
       'only PREFORK_INTERP_EXT offers');
    my $b = "A=1\0\0perl\0PREFORK_INTERP_EXT=call1\0";
    ok(!Prefork::Interp::Protocol::check_request(\$b)->{offer}{call1},
       'an argument is not an offer');
    is_deeply([ Prefork::Interp::Protocol::accepted_names(
                    $offer->('PREFORK_INTERP_EXT=call10')) ], [],
              'nothing accepted: plain v1');
    is_deeply($offer->('A=1'), { call1 => 0, pty1 => 0 },
              'no reserved entry: no offer');
};

subtest 'pty1 offer (protocol.md 9.1)' => sub {
    my $offer = sub {
        my $b = join('', map { "$_\0" } @_) . "\0perl\0";
        return Prefork::Interp::Protocol::check_request(\$b)->{offer};
    };
    my $accepted = sub {
        my ($pty_ok, @env) = @_;
        return join ',', Prefork::Interp::Protocol::accepted_names(
            $offer->(@env), $pty_ok);
    };
    is_deeply($offer->('PREFORK_INTERP_EXT=call1,pty1'),
              { call1 => 1, pty1 => 1 }, 'both offered');
    is($accepted->(1, 'PREFORK_INTERP_EXT=call1,pty1'), 'call1,pty1',
       'both accepted, in that order');
    is($accepted->(1, 'PREFORK_INTERP_EXT=pty1,x,call1'), 'call1,pty1',
       'offered the other way round: the same answer');
    is($accepted->(1, 'PREFORK_INTERP_EXT=pty1'), '',
       'pty1 without call1: ignored (plain v1)');
    is($accepted->(0, 'PREFORK_INTERP_EXT=call1,pty1'), 'call1',
       'where no session can be started (in place): call1 alone');
    is($accepted->(undef, 'PREFORK_INTERP_EXT=call1,pty1'), 'call1',
       '... and by default');
    is($accepted->(1, 'PREFORK_INTERP_EXT=call1,pty10,PTY1'), 'call1',
       'names are compared exactly');
};

subtest 'request shape and splitting (protocol.md 2, 4.1)' => sub {
    my @bad = (
        [ '', qr/does not end in a NUL/ ],
        [ "A=1", qr/does not end in a NUL/ ],
        [ "A=1\0", qr/no end-of-environment marker/ ],
        [ "A=1\0B=2\0", qr/no end-of-environment marker/ ],
        [ "A=1\0\0", qr/no arguments/ ],
        [ "\0", qr/no arguments/ ],
    );
    foreach my $case (@bad) {
        my ($body, $re) = @$case;
        (my $name = $body) =~ s/\0/\\0/g;
        dies_like(sub { Prefork::Interp::Protocol::check_request(\$body) },
                  $re, "'$name'");
    }

    my $body = "A=1\0NOEQUALS\0A=2\0EMPTY=\0EQ=a=b\0=x\0B=3\0\0"
             . "perl\0/s.pl\0\0two words\0";
    my $shape = Prefork::Interp::Protocol::check_request(\$body);
    my ($names, $values) = Prefork::Interp::Protocol::request_env(
        \$body, $shape->{env_end});
    is_deeply($names, [ 'A', 'EMPTY', 'EQ', '', 'B' ],
              'names in the order they first appear, those without "="'
              . ' left out');
    is_deeply($values, { A => 2, EMPTY => '', EQ => 'a=b', '' => 'x',
                         B => 3 }, 'a repeated name has its last value');
    is_deeply([ Prefork::Interp::Protocol::request_args(
                    \$body, $shape->{env_end}) ],
              [ 'perl', '/s.pl', '', 'two words' ],
              'arguments, empty ones included');

    $body = "\0perl\0";
    $shape = Prefork::Interp::Protocol::check_request(\$body);
    is($shape->{env_end}, 0, 'empty environment');
    is_deeply([ Prefork::Interp::Protocol::request_env(\$body, 0) ],
              [ [], {} ], 'nothing in it');
    is_deeply([ Prefork::Interp::Protocol::request_args(\$body, 0) ],
              [ 'perl' ], 'the interpreter alone');

    $body = "\0\0\0";
    $shape = Prefork::Interp::Protocol::check_request(\$body);
    is_deeply([ Prefork::Interp::Protocol::request_args(\$body, 0) ],
              [ '', '' ], 'empty arguments after an empty environment');

    is(Prefork::Interp::Protocol::MAX_REQUEST_LEN, 6 * 1024 * 1024 + 4096,
       'the request limit is 6 MiB + 4 KiB');
};

subtest 'frames (protocol.md 6.2, 6.5)' => sub {
    # protocol.md 6.5: ^C in a terminal, the script exits 130.
    is(Prefork::Interp::Protocol::encode_u32_frame('SIGG', 2),
       hex_bytes('53 49 47 47  00 00 00 04  00 00 00 02'),
       'SIGG SIGINT: the bytes of the worked example');
    is(Prefork::Interp::Protocol::encode_u32_frame('EXIT', 0x8200),
       hex_bytes('45 58 49 54  00 00 00 04  00 00 82 00'),
       'EXIT 0x8200: the bytes of the worked example');
    is(Prefork::Interp::Protocol::encode_frame('PFXA', 'call1'),
       "PFXA\0\0\0\x05call1", 'accept frame');
    is($P->TAG_ACCEPT, "\x50\x46\x58\x41", 'PFXA is 50 46 58 41');
    cmp_ok(unpack('N', $P->TAG_ACCEPT) >> 16, '!=', 0,
           'PFXA cannot be a v1 wait status (top 16 bits not zero)');

    my $buf = hex_bytes('53 49 47 47  00 00 00 04  00 00 00 02')
            . hex_bytes('45 58 49 54  00 00 00 04  00 00 82');
    my $f = Prefork::Interp::Protocol::take_frame(\$buf);
    is_deeply($f, [ 'SIGG', "\0\0\0\x02" ], 'take_frame: a whole frame');
    is(Prefork::Interp::Protocol::decode_u32_body($f->[0], $f->[1]), 2, 'its number');
    is(Prefork::Interp::Protocol::take_frame(\$buf), undef,
       'incomplete frame: undef');
    is(length $buf, 11, '... and the bytes stay');
    $buf .= "\0";
    $f = Prefork::Interp::Protocol::take_frame(\$buf);
    is(Prefork::Interp::Protocol::decode_u32_body($f->[0], $f->[1]), 0x8200,
       'completed: EXIT 0x8200');
    is($buf, '', 'buffer empty');

    $buf = "XYZW\0\0\0\0" . "SIGP\0\0\0\x04\0\0\0\x0a";
    is_deeply(Prefork::Interp::Protocol::take_frame(\$buf), [ 'XYZW', '' ],
              'empty body');
    is_deeply(Prefork::Interp::Protocol::take_frame(\$buf),
              [ 'SIGP', "\0\0\0\x0a" ], 'next frame');

    $buf = 'SIGP' . pack('N', 65536) . ('x' x 65536);
    ok(Prefork::Interp::Protocol::take_frame(\$buf), '65536 bytes: allowed');
    $buf = 'SIGP' . pack('N', 65537);
    dies_like(sub { Prefork::Interp::Protocol::take_frame(\$buf) },
        qr/^frame 'SIGP' has a body of 65537 bytes \(the limit is 65536\)$/,
        '65537 bytes, seen from the header alone');
    $buf = "\x00\xffAB" . pack('N', 0xffffffff);
    dies_like(sub { Prefork::Interp::Protocol::take_frame(\$buf) },
        qr/^frame '\\x00\\xffAB' has a body of 4294967295 bytes/,
        'absurd length, binary tag shown escaped');
    dies_like(sub {
            Prefork::Interp::Protocol::decode_u32_body("SIGP", "\0\0\2") },
        qr/^frame 'SIGP' has a body of 3 bytes, not 4$/, 'short u32 body');
    dies_like(sub {
            Prefork::Interp::Protocol::encode_frame("SIGP", "x" x 65537) },
        qr/too long/, 'encoding refuses an oversized body');
};

subtest 'ATTR (protocol.md 6.3)' => sub {
    # The worked example: umask 027, nice 0, RLIMIT_NOFILE 200/524288,
    # SIGHUP ignored, nothing blocked, fd 3.
    my $example = hex_bytes('41 54 54 52  00 00 00 3d')
        . "umask=027\0nice=0\0rlimit=7,200,524288\0"
        . "sigign=1\0sigmask=\0fds=3\0";
    my %attr = (umask => 027, nice => 0, rlimits => [ [ 7, 200, 524288 ] ],
                sigign => [1], sigmask => [], fds => [3], pty => undef,
                ptybg => undef);
    my $body = Prefork::Interp::Protocol::encode_attr(\%attr);
    is(length $body, 61, 'the body is 61 bytes');
    is(Prefork::Interp::Protocol::encode_frame('ATTR', $body), $example,
       'encode: the bytes of the worked example');
    my $d = Prefork::Interp::Protocol::decode_attr(substr $example, 8);
    is_deeply($d, { %attr, unknown => [] }, 'decode: the same fields');

    $d = Prefork::Interp::Protocol::decode_attr('');
    is_deeply($d, { umask => undef, nice => undef, rlimits => undef,
                    sigign => undef, sigmask => undef, fds => undef,
                    pty => undef, ptybg => undef, unknown => [] },
              'empty body: every attribute absent (undef)');

    my $inf = Prefork::Interp::Protocol::RLIM_INFINITY;
    is($inf, 18446744073709551615, 'RLIM_INFINITY is 2**64-1');
    $d = Prefork::Interp::Protocol::decode_attr(
        "rlimit=4,0,inf\0future=x=y\0rlimit=7,inf,inf\0nice=-5\0"
        . "rlimit=3,18446744073709551614,18446744073709551615\0"
        . "sigmask=10,12,64\0umask=0\0fds=3,4,300\0nice=19\0");
    is_deeply($d->{rlimits},
              [ [ 4, 0, $inf ], [ 7, $inf, $inf ],
                [ 3, 18446744073709551614, $inf ] ],
              'rlimits in order, "inf" and 64-bit values exact');
    is($d->{rlimits}[2][1] + 0, 18446744073709551614, 'no rounding');
    is($d->{nice}, 19, 'a repeated key: the last wins');
    is($d->{umask}, 0, 'umask 0');
    is_deeply($d->{sigmask}, [ 10, 12, 64 ], 'signal list');
    is_deeply($d->{fds}, [ 3, 4, 300 ], 'fd list');
    is_deeply($d->{unknown}, ['future'], 'unknown key noted, ignored');
    is(Prefork::Interp::Protocol::encode_attr(
           { rlimits => [ [ 4, 0, $inf ] ], sigign => [] }),
       "rlimit=4,0,inf\0sigign=\0", 'encode: inf, empty list, absent keys');
    is(Prefork::Interp::Protocol::encode_attr({ umask => 0, nice => -3 }),
       "umask=000\0nice=-3\0", 'encode: umask in octal, negative nice');

    my @bad = (
        [ "umask=027", qr/^ATTR body does not end in a NUL$/ ],
        [ "umask\0", qr/^ATTR entry 'umask' has no '='$/ ],
        [ "umask=8\0", qr/^ATTR umask has a malformed value '8'$/ ],
        [ "umask=1000\0", qr/^ATTR umask has a malformed value/ ],
        [ "nice=x\0", qr/^ATTR nice has a malformed value 'x'$/ ],
        [ "rlimit=7,200\0", qr/^ATTR rlimit has a malformed value/ ],
        [ "rlimit=7,-1,inf\0", qr/^ATTR rlimit has a malformed value/ ],
        [ "rlimit=7,18446744073709551616,inf\0",
          qr/^ATTR rlimit has a malformed value/ ],
        [ "sigign=0\0", qr/^ATTR sigign has a malformed value '0'$/ ],
        [ "sigmask=65\0", qr/^ATTR sigmask has a malformed value/ ],
        [ "sigign=1,,2\0", qr/^ATTR sigign has a malformed value/ ],
        [ "fds=2\0", qr/^ATTR fds has a malformed value '2'$/ ],
        [ "fds=4,3\0", qr/^ATTR fds has a malformed value '4,3'$/ ],
        [ "fds=3,3\0", qr/^ATTR fds has a malformed value/ ],
        [ "fds=" . join(',', 3..259) . "\0",
          qr/^ATTR fds lists 257 fds \(the limit is 256\)$/ ],
        [ "umask=\x01\0", qr/^ATTR umask has a malformed value '\\x01'$/ ],
    );
    foreach my $case (@bad) {
        my ($b, $re) = @$case;
        (my $name = $b) =~ s/([^\x21-\x7e])/sprintf '\\x%02x', ord $1/ge;
        $name = substr($name, 0, 40);
        dies_like(sub { Prefork::Interp::Protocol::decode_attr($b) }, $re, $name);
    }
    ok(Prefork::Interp::Protocol::decode_attr(
           "fds=" . join(',', 3..258) . "\0"), '256 fds are fine');
};

subtest 'ATTR key pty (protocol.md 9.2)' => sub {
    my $decode = sub { Prefork::Interp::Protocol::decode_attr($_[0], 1) };
    is_deeply($decode->("pty=0,1,2\0")->{pty}, [ 0, 1, 2 ], 'pty=0,1,2');
    is_deeply($decode->("fds=3\0pty=1\0")->{pty}, [1], 'pty=1, with fds');
    is_deeply($decode->("pty=0,2\0umask=022\0")->{pty}, [ 0, 2 ],
              'pty=0,2, before another key');
    is(Prefork::Interp::Protocol::encode_attr({ fds => [3], pty => [ 0, 2 ] }),
       "fds=3\0pty=0,2\0", 'encode: after fds');
    my @bad = (
        [ "pty=\0", qr/^ATTR pty has a malformed value ''$/ ],
        [ "pty=3\0", qr/^ATTR pty has a malformed value '3'$/ ],
        [ "pty=1,0\0", qr/^ATTR pty has a malformed value '1,0'$/ ],
        [ "pty=1,1\0", qr/^ATTR pty has a malformed value '1,1'$/ ],
        [ "pty=-1\0", qr/^ATTR pty has a malformed value '-1'$/ ],
        [ "pty=0,,1\0", qr/^ATTR pty has a malformed value/ ],
        [ "umask=022\0", qr/^ATTR has no pty entry, with pty1 accepted$/ ],
        [ "", qr/^ATTR has no pty entry, with pty1 accepted$/ ],
    );
    foreach my $case (@bad) {
        my ($b, $re) = @$case;
        (my $name = $b) =~ s/([^\x21-\x7e])/sprintf '\\x%02x', ord $1/ge;
        dies_like(sub { $decode->($b) }, $re, "pty1 accepted: '$name'");
    }
    dies_like(sub { Prefork::Interp::Protocol::decode_attr("pty=0\0") },
              qr/^ATTR has a pty entry, but pty1 was not accepted$/,
              'pty without pty1 accepted');
};

subtest 'ATTR key ptybg and frame FGND (protocol.md 9.2)' => sub {
    my $decode = sub { Prefork::Interp::Protocol::decode_attr($_[0], 1) };
    is($decode->("pty=0,1,2\0")->{ptybg}, undef, 'ptybg absent: undef');
    is($decode->("pty=0,1,2\0ptybg=1\0")->{ptybg}, 1, 'ptybg=1');
    is($decode->("ptybg=0\0pty=0\0")->{ptybg}, 0, 'ptybg=0, before pty');
    is(Prefork::Interp::Protocol::encode_attr({ pty => [0], ptybg => 1 }),
       "pty=0\0ptybg=1\0", 'encode: after pty');
    foreach my $v ('2', '', '01', '1 ', 'yes', '-1') {
        dies_like(sub { $decode->("pty=0\0ptybg=$v\0") },
                  qr/^ATTR ptybg has a malformed value/, "ptybg='$v'");
    }
    my $fgnd = sub { Prefork::Interp::Protocol::decode_fgnd_body($_[0]) };
    is(Prefork::Interp::Protocol::TAG_FGND, 'FGND', 'tag FGND');
    is($fgnd->(pack 'N', 1), 1, 'FGND 1: foreground');
    is($fgnd->(pack 'N', 0), 0, 'FGND 0: background');
    dies_like(sub { $fgnd->(pack 'N', 2) },
              qr/^frame 'FGND' holds 2, not 0 or 1$/, 'FGND 2');
    dies_like(sub { $fgnd->("\0\0\0\0\1") },
              qr/^frame 'FGND' has a body of 5 bytes, not 4$/,
              'FGND with a 5-byte body');
    dies_like(sub { $fgnd->('') }, qr/body of 0 bytes/, 'FGND, empty');
};

done_testing;
