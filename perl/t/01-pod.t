#!/usr/bin/perl
# The documentation is well-formed and says what it must.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use File::Find qw(find);
use PfiTest qw(lib_dir);
use Pod::Checker qw(podchecker);
use Pod::Text;
use Test::More;

my @modules;
find(sub { push @modules, $File::Find::name if m/\.pm\z/ }, lib_dir());
ok(@modules >= 4, 'found the modules');

foreach my $file (sort @modules) {
    my $report = '';
    open(my $out, '>', \$report) or die;
    my $errors = podchecker($file, $out, -warnings => 2);
    is($errors, 0, "$file: POD has no errors") or diag $report;
    unlike($report, qr/WARNING/, "$file: POD has no warnings")
        or diag $report;
}

# Render the main page as perldoc does.
my $text = '';
my $parser = Pod::Text->new(width => 76);
$parser->output_string(\$text);
$parser->parse_file(lib_dir() . '/Prefork/Interp.pm');
foreach my $heading ('NAME', 'SYNOPSIS', 'FUNCTIONS',
                     'SWITCHING FROM Proc::Prefork::Interp',
                     'DIFFERENCES FROM Proc::Prefork::Interp') {
    like($text, qr/^\Q$heading\E$/m, "section $heading");
}
foreach my $option (qw(max_servers pool_size idle_timeout request_timeout
                       max_errors autoreload autoreload_extra log_facility
                       log_file fast_exit)) {
    like($text, qr/^\s+"?\Q$option\E => /m, "option $option documented");
}
like($text, qr/prefork_autoreload_also_check/, 'both functions documented');

done_testing;
