#!/usr/local/bin/prefork-interp -U,python3
"""Demo: a script with a slow start-up, served warm by prefork-interp.

The initialisation (a sieve of primes below 10 million, standing in for
heavy imports or loading data) runs once, in the server. Each call then
runs only the code after initialisation_complete().
"""
import sys
import time

started = time.monotonic()
LIMIT = 10_000_000
sieve = bytearray([1]) * LIMIT
sieve[0:2] = b"\0\0"
for i in range(2, int(LIMIT**0.5) + 1):
    if sieve[i]:
        sieve[i * i :: i] = bytes(len(range(i * i, LIMIT, i)))
PRIMES = [i for i, is_prime in enumerate(sieve) if is_prime]
init_seconds = time.monotonic() - started

import prefork_interp  # noqa: E402

prefork_interp.initialisation_complete()

n = int(sys.argv[1]) if len(sys.argv) > 1 else 10
print(f"the {n}th prime is {PRIMES[n - 1]} "
      f"(table of {len(PRIMES)} primes built once in {init_seconds:.2f} s)")
