#!/usr/bin/env python3
"""What checking for changed code costs a warm call: a script importing
many modules (1,000 generated ones by default, as a boto3 server loads),
served warm through our client with ``autoreload=True`` (every module file
is watched) and with ``autoreload=False`` (only the script), side by side
in one hyperfine run.  Prints the medians and their ratio; with boto3
importable, the same for a script importing boto3.

Usage: bench/python/reload_cost.py [--runs N] [--modules N] [--client PATH]
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

SCRIPT = """import sys
sys.path.insert(0, {mods!r})
{imports}
import prefork_interp
prefork_interp.initialisation_complete(autoreload={autoreload})
print(len(sys.modules))
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=200, help="runs per command (default 200)")
    parser.add_argument("--modules", type=int, default=1000, help="generated modules (default 1000)")
    parser.add_argument("--client", default=str(TOP / "target" / "release" / "prefork-interp"), help="our client")
    args = parser.parse_args()
    for tool in ("hyperfine", args.client):
        if not shutil.which(tool):
            sys.exit(f"reload_cost.py: {tool} not found")

    work = Path(tempfile.mkdtemp(prefix="pfi-reload-bench-"))
    env = dict(os.environ, PYTHONPATH=str(TOP / "python"), PREFORK_INTERP_RUN_DIR=str(work / "run"))
    mods = work / "mods"
    mods.mkdir()
    for i in range(args.modules):
        (mods / f"m{i:04d}.py").write_text(f"VALUE = {i}\n")
    variants = {"generated": "\n".join(f"import m{i:04d}" for i in range(args.modules))}
    if subprocess.run([sys.executable, "-c", "import boto3"], capture_output=True).returncode == 0:
        variants["boto3"] = "import boto3"
    commands = []
    for name, imports in variants.items():
        for autoreload in (True, False):
            script = work / f"{name}_{'watch' if autoreload else 'nowatch'}.py"
            script.write_text(SCRIPT.format(mods=str(mods), imports=imports, autoreload=autoreload))
            commands.append((f"{name}, autoreload={autoreload}", [args.client, "-U", sys.executable, str(script)]))
    try:
        for _, cmd in commands:  # start each server (and check it works)
            subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
        out = work / "hyperfine.json"
        subprocess.run(
            ["hyperfine", "-N", "--warmup", "10", "--runs", str(args.runs), "--export-json", str(out)]
            + [arg for name, cmd in commands for arg in ("-n", name, " ".join(cmd))],
            env=env,
            check=True,
        )
        medians = {r["command"]: r["median"] * 1000 for r in json.loads(out.read_text())["results"]}
        for name in variants:
            on, off = medians[f"{name}, autoreload=True"], medians[f"{name}, autoreload=False"]
            print(f"{name}: warm call {on:.3f} ms watching every module, {off:.3f} ms not: ratio {on / off:.3f}")
    finally:
        for _, cmd in commands:
            subprocess.run([cmd[0], "--kill"] + cmd[1:], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
