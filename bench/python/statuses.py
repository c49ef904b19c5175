#!/usr/bin/env python3
"""Consecutive warm calls through a client: is every exit status right?

The script ends each call one of several ways, chosen by its argument
(falling off the end, ``sys.exit(n)``, ``raise SystemExit(n)``, an uncaught
exception, ``os._exit(n)``), with the expected status varying from call to
call.  Counts wrong statuses and reports the time per call.  (The reference
Perl library loses the status of 295 in 300 such calls.)

Usage: bench/python/statuses.py [--calls N] [--client PATH] [--python PATH]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TOP = Path(__file__).resolve().parent.parent.parent

SCRIPT = """\
import os, sys
import prefork_interp
prefork_interp.initialisation_complete()
how, n = sys.argv[1], int(sys.argv[2])
print(how, n)
if how == "end":
    pass
elif how == "sys.exit":
    sys.exit(n)
elif how == "raise":
    raise SystemExit(n)
elif how == "exception":
    raise RuntimeError("expected failure")
elif how == "os._exit":
    os._exit(n)
"""


def expected(how: str, n: int) -> int:
    return {"end": 0, "exception": 1}.get(how, n)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--client", default=str(TOP / "target" / "release" / "prefork-interp"))
    parser.add_argument("--python", default=sys.executable)
    args = parser.parse_args()
    if not shutil.which(args.client):
        sys.exit(f"statuses.py: {args.client} not found")
    work = Path(tempfile.mkdtemp(prefix="pfi-st-"))
    env = dict(os.environ, PYTHONPATH=str(TOP / "python"), PREFORK_INTERP_RUN_DIR=str(work / "run"))
    script = work / "statuses.py"
    script.write_text(SCRIPT)
    ways = ["end", "sys.exit", "raise", "exception", "os._exit"]
    try:
        subprocess.run([args.client, "-U", args.python, str(script), "end", "0"], env=env, check=True, capture_output=True)
        wrong, sessions, times = 0, set(), []
        for i in range(args.calls):
            how, n = ways[i % len(ways)], i % 251
            started = time.monotonic()
            p = subprocess.run([args.client, "-U", args.python, str(script), how, str(n)], env=env, capture_output=True)
            times.append(time.monotonic() - started)
            if p.returncode != expected(how, n) or p.stdout != f"{how} {n}\n".encode():
                wrong += 1
                print(f"call {i}: {how} {n}: status {p.returncode}, stdout {p.stdout!r}, stderr {p.stderr[-200:]!r}")
        print(
            f"{args.calls} consecutive warm calls through {args.client}: {wrong} wrong exit statuses "
            f"(or output); median {statistics.median(times) * 1000:.1f} ms per call (incl. spawning the client)"
        )
        return 1 if wrong else 0
    finally:
        subprocess.run([args.client, "--kill", "-U", args.python, str(script)], env=env, capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
