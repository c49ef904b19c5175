# A trivial script for the reference Perl library (Proc::Prefork::Interp),
# served warm by bench/client.sh and bench/rust-server.sh.
use strict;
use POSIX ();
use Proc::Prefork::Interp;
prefork_initialisation_complete();
POSIX::_exit(0);   # the reference library loses the status of a plain exit
