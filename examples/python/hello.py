#!/usr/local/bin/prefork-interp -U,python3
"""The smallest prefork-interp script: greet the caller.

Run it through prefork-interp (the #! line above, or
`prefork-interp -U python3 hello.py NAME`), or directly with
`python3 hello.py NAME`: it works the same either way.
"""
import sys

import prefork_interp

prefork_interp.initialisation_complete()

# From here on we are in a fresh process per call, with the caller's
# arguments, environment, stdin/stdout/stderr and current directory.
name = sys.argv[1] if len(sys.argv) > 1 else "world"
print(f"hello, {name}")
sys.exit(0 if name != "nobody" else 3)
