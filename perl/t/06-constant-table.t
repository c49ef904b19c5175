#!/usr/bin/perl
# Prefork::Interp::Syscall gives the error numbers and fcntl values the
# setup process needs without loading Errno and Fcntl (about 2 ms of a
# cold call): where it uses its own table, that table must be what
# perl's Errno and Fcntl say, and a module that takes them by name gets
# them as constants.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/../lib";

use Errno ();
use Fcntl ();
use Test::More;
use Prefork::Interp::Syscall ();

my @names = Prefork::Interp::Syscall::constant_names();
ok(scalar(@names) >= 10, 'the table has names') or diag "@names";
foreach my $name (@names) {
    my $module = $name =~ m/\AE/ ? 'Errno' : 'Fcntl';
    my $theirs = $module->can($name);
    ok($theirs, "$module has $name") or next;
    is(Prefork::Interp::Syscall::value_of($name), $theirs->(),
       "$name is ${module}'s");
}

{
    package Taker;
    Prefork::Interp::Syscall->import(qw(EINTR O_NONBLOCK));
}
is(Taker::EINTR(), Errno::EINTR(), 'imported EINTR');
is(Taker::O_NONBLOCK(), Fcntl::O_NONBLOCK(), 'imported O_NONBLOCK');
is(prototype(\&Taker::EINTR), '', '... as a constant');
ok(!eval { Prefork::Interp::Syscall->import('ENOPE'); 1 },
   'an unknown name is an error');
like($@, qr/\APrefork::Interp::Syscall has no constant ENOPE\n\z/,
     '... saying which');
ok(!Taker->can('ENOPE'), '... and defines nothing');
done_testing;
