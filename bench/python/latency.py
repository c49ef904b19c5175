#!/usr/bin/env python3
"""Warm-call latency of Python scripts through prefork-interp, side by side
with running them directly, measured in one hyperfine run.

Scripts measured (written to a temporary directory):

- ``trivial.py``: prints one line after ``initialisation_complete()``;
- ``boto3_fast.py``: ``import boto3`` first (about 0.2 s here), then the same;
- ``boto3_finalize.py``: as ``boto3_fast.py`` with ``fast_exit=False`` (the
  executor finalizes the interpreter as a normal exit does).

Each runs directly (``python3 script``) and warm through our client and the
C client (same server for both: the default run directory).  Prints a table
of medians.  Needs hyperfine, boto3 and both clients.

Usage: bench/python/latency.py [--runs N] [--client PATH] [--python PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

TOP = Path(__file__).resolve().parent.parent.parent
C_CLIENT = "/usr/bin/prefork-interp"

SCRIPTS = {
    "trivial.py": "import prefork_interp\nprefork_interp.initialisation_complete()\nprint('hello')\n",
    "boto3_fast.py": (
        "import boto3\nimport prefork_interp\nprefork_interp.initialisation_complete()\n"
        "print('hello from boto3', boto3.__version__)\n"
    ),
    "boto3_finalize.py": (
        "import boto3\nimport prefork_interp\nprefork_interp.initialisation_complete(fast_exit=False)\n"
        "print('hello from boto3', boto3.__version__)\n"
    ),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=100, help="runs per command (default 100)")
    parser.add_argument("--client", default=str(TOP / "target" / "release" / "prefork-interp"), help="our client")
    parser.add_argument("--python", default=sys.executable, help="interpreter (default: this one)")
    args = parser.parse_args()
    for tool in ("hyperfine", args.client, C_CLIENT):
        if not shutil.which(tool):
            sys.exit(f"latency.py: {tool} not found")
    if subprocess.run([args.python, "-c", "import boto3"], capture_output=True).returncode:
        sys.exit(f"latency.py: boto3 is not importable by {args.python} (pip install boto3)")

    work = Path(tempfile.mkdtemp(prefix="pfi-bench-"))
    env = dict(os.environ, PYTHONPATH=str(TOP / "python"))
    env.pop("PREFORK_INTERP_RUN_DIR", None)  # one server for both clients
    try:
        for name, text in SCRIPTS.items():
            (work / name).write_text(text)
        names = list(SCRIPTS)
        for name in names:  # start the servers (and check the scripts work)
            subprocess.run([args.client, "-U", args.python, name], cwd=work, env=env, check=True, capture_output=True)
        commands = []
        for name in names:
            commands += [
                (f"{name} direct", f"{args.python} {name}"),
                (f"{name} our client", f"{args.client} -U {args.python} {name}"),
                (f"{name} C client", f"{C_CLIENT} -U {args.python} {name}"),
            ]
        hyperfine = ["hyperfine", "-N", "--warmup", "10", "--runs", str(args.runs), "--export-json", str(work / "out.json")]
        for label, command in commands:
            hyperfine += ["-n", label, command]
        subprocess.run(hyperfine, cwd=work, env=env, check=True)
        results = {r["command"]: r for r in json.loads((work / "out.json").read_text())["results"]}
        print(f"\nmedian wall-clock time per call, {args.runs} runs each ({args.python}):\n")
        print(f"{'script':<20} {'direct':>10} {'our client':>12} {'C client':>10} {'speed-up (ours)':>16}")
        for name in names:
            direct, ours, c = (results[f"{name} {how}"]["median"] * 1000 for how in ("direct", "our client", "C client"))
            print(f"{name:<20} {direct:>8.1f}ms {ours:>10.1f}ms {c:>8.1f}ms {direct / ours:>15.1f}x")
        return 0
    finally:
        for name in SCRIPTS:
            subprocess.run([args.client, "--kill", "-U", args.python, name], cwd=work, env=env, capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
