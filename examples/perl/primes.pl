#!/usr/local/bin/prefork-interp -U,perl
# Example: a Perl script that pays for its start-up once.
#
# It sieves the primes up to 2 million (about a second of work) when
# its server starts; after that every call only looks numbers up.
#
#   examples/perl/primes.pl 97 91 1999993     # through the #! line
#   prefork-interp -U perl examples/perl/primes.pl 97
#   perl examples/perl/primes.pl 97           # standalone, no server
#
# The first call takes about a second, the next ones a few
# milliseconds.  Edit this file and the next call starts a fresh
# server (automatic reloading).  "prefork-interp --kill -U perl
# examples/perl/primes.pl" stops the server.
#
# The #! line works with both clients.  This project's client also
# takes interpreter arguments there, as in "-U,perl,-w".

use strict;
use warnings;

# Run from a checkout: use the library next to this example.
use FindBin;
use lib "$FindBin::Bin/../../perl/lib";

use Prefork::Interp;

#---------- initialisation: once per server ----------

use constant LIMIT => 2_000_000;

my $composite = '';
vec($composite, LIMIT, 1) = 0;
vec($composite, $_, 1) = 1 for 0, 1;
for (my $i = 2; $i * $i <= LIMIT; $i++) {
    next if vec($composite, $i, 1);
    for (my $j = $i * $i; $j <= LIMIT; $j += $i) {
        vec($composite, $j, 1) = 1;
    }
}

prefork_initialisation_complete(max_servers => 8);

#---------- per call: @ARGV, %ENV and stdio are the caller's ----------

if (!@ARGV) {
    print STDERR "usage: $0 NUMBER...\n";
    exit 2;
}
my $all_prime = 1;
foreach my $n (@ARGV) {
    if ($n !~ m/\A[0-9]+\z/ || $n > LIMIT) {
        print STDERR "$0: $n: not a whole number up to ", LIMIT, "\n";
        exit 2;
    }
    my $prime = !vec($composite, $n, 1);
    print "$n is ", ($prime ? 'prime' : 'not prime'), "\n";
    $all_prime &&= $prime;
}
exit($all_prime ? 0 : 1);
