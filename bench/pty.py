#!/usr/bin/env python3
"""Output through the pty relay (protocol.md section 9): a script writing
SIZE bytes (100 MB by default) to its terminal, run directly and served,
side by side in one run; prints the wall times (medians) and their ratio.

The "terminal" is a pty whose master this benchmark drains as fast as it
can, as a terminal emulator would; the command runs as the leader of a
session with the pty's slave as its controlling terminal, so a served call
gets the client's relay (and with ``-T``, for comparison, none: the script
writes straight to the terminal).  The script is Python (our library);
the server is warmed first and stopped at the end.

Usage: bench/pty.py [--size BYTES] [--runs N]
"""

from __future__ import annotations

import argparse
import fcntl
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import termios
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CLIENT = REPO / "target" / "release" / "prefork-interp"

SCRIPT = """\
import os, sys
import prefork_interp
prefork_interp.initialisation_complete(log_facility=None)
size = int(sys.argv[1])
chunk = b"0123456789abcdef" * 4095 + b"0123456789abcde\\n"
out = sys.stdout.buffer
while size > 0:
    out.write(chunk[:size])
    size -= len(chunk)
out.flush()
"""


def _take_terminal() -> None:
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def on_terminal(argv: list[str], env: dict[str, str]) -> tuple[float, int]:
    """Run ``argv`` on a fresh terminal, draining it: wall seconds, bytes
    seen (with the terminal's own CR added before each LF)."""
    master, slave = os.openpty()
    start = time.monotonic()
    proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env,
                            start_new_session=True, preexec_fn=_take_terminal)
    os.close(slave)
    seen = 0
    try:
        while True:
            try:
                data = os.read(master, 1 << 16)
            except OSError:  # EIO: every slave fd closed
                break
            if not data:
                break
            seen += len(data)
    finally:
        proc.wait()
        os.close(master)
    return time.monotonic() - start, seen


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=100 * 1000 * 1000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    if not CLIENT.exists():
        subprocess.run(["cargo", "build", "--release"], cwd=REPO, check=True)
    tmp = Path(tempfile.mkdtemp(prefix="pfi-bench-pty-", dir="/tmp"))
    run_dir = tmp / "run"
    run_dir.mkdir(mode=0o700)
    script = tmp / "write.py"
    script.write_text(SCRIPT)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFORK_INTERP")}
    env.update(PYTHONPATH=str(REPO / "python"), PREFORK_INTERP_RUN_DIR=str(run_dir))
    size = str(args.size)
    ways = {
        "direct": [sys.executable, str(script), size],
        "served (pty relay)": [str(CLIENT), "-U", sys.executable, str(script), size],
        "served -T (no pty)": [str(CLIENT), "-T", "-U", sys.executable, str(script), size],
    }
    try:
        for _ in range(2):  # start the server, then a warm call
            on_terminal(ways["served -T (no pty)"][:-1] + ["1"], env)
        times: dict[str, list[float]] = {name: [] for name in ways}
        expected = None
        for _ in range(args.runs):
            for name, argv in ways.items():  # interleaved: same conditions
                secs, seen = on_terminal(argv, env)
                if expected is None:
                    expected = seen
                if seen != expected:
                    print(f"{name}: {seen} bytes on the terminal, not {expected}", file=sys.stderr)
                    return 1
                times[name].append(secs)
    finally:
        subprocess.run([str(CLIENT), "--kill", "-U", sys.executable, str(script)], env=env, capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)
    base = statistics.median(times["direct"])
    print(f"{args.size} bytes to a terminal, median of {args.runs} runs (every byte arrived each time)")
    print("| how | wall time | relative to direct |")
    print("|---|---|---|")
    for name, secs in times.items():
        m = statistics.median(secs)
        print(f"| {name} | {m * 1000:.0f} ms | {m / base:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
