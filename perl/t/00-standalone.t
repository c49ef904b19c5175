#!/usr/bin/perl
# Without prefork-interp (no PREFORK_INTERP in the environment) the
# library does nothing but check its options: the script runs as an
# ordinary program.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Cwd qw(abs_path);
use File::Temp qw(tempdir);
use PfiTest qw(lib_dir slurp spit describe_status);
use Test::More;

my $dir = abs_path(tempdir('pfi-pl-s-XXXXXX', TMPDIR => 1, CLEANUP => 1));
my $lib = lib_dir();

# Runs perl on a script with the given text; returns (status, stdout,
# stderr).
sub run_perl {
    my ($text, @args) = @_;
    my $script = "$dir/s.pl";
    spit($script, $text);
    my $pid = fork // die "fork: $!";
    if (!$pid) {
        open(STDIN, '<', '/dev/null') or die;
        open(STDOUT, '>', "$dir/out") or die;
        open(STDERR, '>', "$dir/err") or die;
        delete $ENV{PREFORK_INTERP};
        exec 'perl', $script, @args or die "exec: $!";
    }
    waitpid($pid, 0);
    return ($?, slurp("$dir/out"), slurp("$dir/err"));
}

my ($st, $out, $err) = run_perl(<<"END_SCRIPT", 'a b', '', 'c');
use strict;
use warnings;
use lib '$lib';
use Prefork::Interp;
my \$before = \$\$;
prefork_autoreload_also_check('/nonexistent');
prefork_initialisation_complete(max_servers => 2, idle_timeout => 0.5,
    autoreload_inc => 0, autoreload_extra => ['x'], max_errors => 3,
    pool_size => 1, request_timeout => 2,
    log_facility => 'local3', log_file => '$dir/log', fast_exit => 1);
prefork_initialisation_complete(autoreload => 1, idle_timeout => undef,
    log_facility => undef, log_file => undef, max_servers => 0,
    request_timeout => 0);
print "returned once, same pid: ", (\$\$ == \$before ? 'yes' : 'no'), "\\n";
print "ARGV=", join('|', \@ARGV), "\\n0=\$0\\n";
prefork_initialisation_complete();
print "second call returns too\\n";
exit 7;
END_SCRIPT
is(describe_status($st), 'exit 7', 'exit status is the script\'s');
is($out, "returned once, same pid: yes\nARGV=a b||c\n0=$dir/s.pl\n"
         . "second call returns too\n",
   'returns once, in the same process, with @ARGV and $0 untouched');
is($err, '', 'nothing on stderr');
ok(!-e "$dir/log", 'no log file: nothing to log');

my @bad = (
    [ 'max_servers => 1, 2', qr/options must be NAME => VALUE pairs/ ],
    [ 'bogus => 1', qr/unknown option 'bogus'/ ],
    [ 'max_servers => "many"',
      qr/max_servers must be an integer, not 'many'/ ],
    [ 'max_errors => 1.5', qr/max_errors must be an integer, not '1.5'/ ],
    [ 'pool_size => -1',
      qr/pool_size must be an integer, 0 or more, not '-1'/ ],
    [ 'idle_timeout => "soon"',
      qr/idle_timeout must be a number of seconds, not 'soon'/ ],
    [ 'request_timeout => -1',
      qr/request_timeout must be a number of seconds, 0 or more, not '-1'/ ],
    [ 'autoreload => 1, autoreload_inc => 0',
      qr/options 'autoreload' and 'autoreload_inc' are the same: give one/ ],
    [ 'autoreload_extra => "file"',
      qr/autoreload_extra must be an array reference/ ],
    [ 'log_facility => "LOG_ERR"',
      qr/log_facility 'LOG_ERR' is not a syslog facility/ ],
);
foreach my $case (@bad) {
    my ($opts, $re) = @$case;
    ($st, $out, $err) = run_perl(<<"END_SCRIPT");
use lib '$lib';
use Prefork::Interp;
prefork_initialisation_complete($opts);
print "not reached\\n";
END_SCRIPT
    is(describe_status($st), 'exit 255', "($opts): dies");
    like($err, qr/\Aprefork_initialisation_complete: $re at \Q$dir\E\/s\.pl line 3\.\n\z/,
         "($opts): one line, naming the caller's line");
}

# Without a script file ("perl -e"), standalone too.
my $pid = fork // die;
if (!$pid) {
    open(STDOUT, '>', "$dir/out-e") or die;
    delete $ENV{PREFORK_INTERP};
    exec 'perl', "-I$lib", '-MPrefork::Interp', '-e',
         'prefork_initialisation_complete(); print "ok @ARGV\n"; exit 3',
         'x' or die;
}
waitpid($pid, 0);
is(describe_status($?), 'exit 3', 'perl -e: exit status');
is(slurp("$dir/out-e"), "ok x\n", 'perl -e: runs on');

done_testing;
