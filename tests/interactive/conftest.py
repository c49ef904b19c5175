"""Fixtures of the interactive tests: a program per language (its server
warm), and a terminal running bash for it; everything stopped afterwards."""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path
from typing import Iterator

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from programs import CLIENT, PROGRAMS, Setup  # noqa: E402
from terminal import Terminal  # noqa: E402

# What a shell gives the commands it runs in the foreground: SIGINT and
# SIGQUIT at their default, also when this run was started in the
# background of a non-interactive shell (which ignores both for its
# background jobs); the processes the tests start inherit them.
import signal  # noqa: E402

if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
if signal.getsignal(signal.SIGQUIT) == signal.SIG_IGN:
    signal.signal(signal.SIGQUIT, signal.SIG_DFL)


@pytest.fixture(params=sorted(PROGRAMS))
def setup(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Setup]:
    if not shutil.which("less"):
        pytest.fail("these tests need less (apt package less)", pytrace=False)
    if not Path(CLIENT).exists():
        pytest.fail(f"no client at {CLIENT}: run `cargo build --release`", pytrace=False)
    # Socket paths are limited to 108 bytes: a pytest tmp_path is too long.
    run_dir = Path(tempfile.mkdtemp(prefix="pfi-tty-", dir="/tmp"))
    sessions_file = tmp_path / "sessions"
    program = PROGRAMS[request.param](tmp_path, run_dir, sessions_file)
    s = None
    try:
        terminal = Terminal(tmp_path, program.env)
        s = Setup(program, terminal, tmp_path, sessions_file)
        yield s
    finally:
        if s is not None:
            s.terminal.extra_sessions |= s.server_sessions()
            s.terminal.close(program.killers, program.env, tmp_path)
        else:
            import subprocess

            for argv in program.killers:
                subprocess.run(argv, env=program.env, cwd=tmp_path, capture_output=True, timeout=30)
        shutil.rmtree(run_dir, ignore_errors=True)
