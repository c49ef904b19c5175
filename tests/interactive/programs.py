"""The programs the interactive tests run, one per script-side language.

Every program takes a mode as its first argument and behaves as follows
(markers in ``<<...>>`` are what the scenarios look for; no command line
contains them, so the terminal's echo of a typed command never matches):

``warm``
    exit 0 at once (starts the server before the test proper).
``interrupt``
    print ``<<ready>>``, wait; on SIGINT print ``<<cleanup>>``, exit 3.
``finally``
    print ``<<ready>>``, wait; on SIGINT print ``<<cleanup>>`` on the way
    out and die of SIGINT (Python: ``finally:`` around the wait).
``read-line``
    print ``<<ready>>``, read a line from stdin, print ``<<got LINE>>``.
``wait-file PATH``
    print ``<<ready>>``, wait until PATH exists, print ``<<finished>>``,
    exit 5.
``winch``
    print ``<<ready>>``; after a SIGWINCH (seen by a handler) print
    ``<<winch COLSxROWS>>`` (the terminal's size as the language's usual
    call reports it) and exit 0.
``password``
    read a password without echo, prompting ``<<password:>>``; print
    ``<<len N>>``.
``pager-run``
    run ``less`` on a 300-line file as a child; on SIGINT print
    ``<<interrupted>>`` and exit 3; after it, print ``<<after pager>>``.
``tty``
    try to open ``/dev/tty``: print ``<<tty opened>>`` or ``<<tty ERRNO>>``.
``tty-read``
    open ``/dev/tty``, prompt ``<<tty prompt>>`` on it, read a line from
    it, print ``<<tty got LINE fg=yes|no>>`` (is the call's group the
    terminal's foreground?).
``pid``
    print ``<<pid N>>`` (its pid), wait until killed.
``isatty``
    print ``<<isatty XYZ>>``: for fds 0, 1, 2, ``y`` if a terminal, else ``n``.
``interleave``
    100 times: ``<<o N>>`` on stdout, ``<<e N>>`` on stderr, each flushed.
``pager-pydoc`` (Python)
    ``pydoc.pager`` (PAGER=less) with 300 lines, then ``<<after pager>>``.

A :class:`Program` gives the shell command lines to run it served (through
the prefork-interp client) and directly, and how to stop its server. The
Perl program is ``interactive.pl`` beside this file (this project's
``Prefork::Interp``), the Rust one ``examples/interactive.rs``; both have
every mode but ``pager-pydoc``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from shlex import quote
from typing import Dict, List, Set

from terminal import Terminal

REPO_ROOT = Path(__file__).resolve().parent.parent.parent
PYTHON_PACKAGE = REPO_ROOT / "python"
PYTHON = sys.executable
CLIENT = os.environ.get("PREFORK_INTERP_CLIENT") or str(REPO_ROOT / "target" / "release" / "prefork-interp")

PYTHON_SCRIPT = """\
import os, signal, sys, time
import prefork_interp
prefork_interp.initialisation_complete(log_facility=None)
if os.environ.get("PFI_SESSIONS"):
    with open(os.environ["PFI_SESSIONS"], "a") as f:
        f.write(f"{os.getsid(0)}\\n")

def say(text):
    print(f"<<{text}>>", flush=True)

def wait_forever():
    while True:
        time.sleep(0.05)

LINES = "".join(f"page line {n}\\n" for n in range(1, 301))
mode = sys.argv[1]
if mode == "warm":
    sys.exit(0)
elif mode == "interrupt":
    try:
        say("ready")
        wait_forever()
    except KeyboardInterrupt:
        say("cleanup")
        sys.exit(3)
elif mode == "finally":
    try:
        say("ready")
        wait_forever()
    finally:
        say("cleanup")
elif mode == "read-line":
    say("ready")
    say("got " + sys.stdin.readline().strip())
elif mode == "wait-file":
    say("ready")
    while not os.path.exists(sys.argv[2]):
        time.sleep(0.02)
    say("finished")
    sys.exit(5)
elif mode == "winch":
    # The handler only notes the signal: printing from a handler that may
    # run inside print() itself would be a reentrant call.
    import shutil
    resized = []
    signal.signal(signal.SIGWINCH, lambda sig, frame: resized.append(sig))
    say("ready")
    while not resized:
        time.sleep(0.02)
    size = shutil.get_terminal_size()
    say(f"winch {size.columns}x{size.lines}")
elif mode == "password":
    import getpass
    password = getpass.getpass("<<password:>>")
    say(f"len {len(password)}")
elif mode == "pager-run":
    import subprocess, tempfile
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        f.write(LINES)
    try:
        subprocess.run(["less", f.name])
    except KeyboardInterrupt:
        say("interrupted")
        sys.exit(3)
    finally:
        os.unlink(f.name)
    say("after pager")
elif mode == "tty":
    try:
        open("/dev/tty").close()
        say("tty opened")
    except OSError as e:
        import errno
        say(f"tty {errno.errorcode[e.errno]}")
elif mode == "tty-read":
    tty = os.open("/dev/tty", os.O_RDWR)
    os.write(tty, b"<<tty prompt>>")
    line = b""
    while not line.endswith(b"\\n"):
        byte = os.read(tty, 1)
        if not byte:
            break
        line += byte
    fg = "yes" if os.tcgetpgrp(tty) == os.getpgrp() else "no"
    os.close(tty)
    say(f"tty got {line.decode().strip()} fg={fg}")
elif mode == "pid":
    say(f"pid {os.getpid()}")
    wait_forever()
elif mode == "isatty":
    say("isatty " + "".join("y" if os.isatty(fd) else "n" for fd in (0, 1, 2)))
elif mode == "interleave":
    for n in range(100):
        print(f"<<o {n}>>", flush=True)
        print(f"<<e {n}>>", file=sys.stderr, flush=True)
elif mode == "pager-pydoc":
    import pydoc
    pydoc.pager(LINES)
    say("after pager")
"""


@dataclass
class Program:
    """How to run one language's program in a terminal test."""

    name: str
    #: Shell command line running it through the client (add the mode).
    served: str
    #: Shell command line running it directly.
    direct: str
    #: Commands stopping its server (``prefork-interp --kill ...``).
    killers: List[List[str]]
    #: Environment for the terminal's bash.
    env: Dict[str, str]
    #: Modes this language has (see the module docstring).
    modes: List[str] = field(default_factory=list)


def python_program(directory: Path, run_dir: Path, sessions_file: Path) -> Program:
    """The Python script, in ``directory``; its server is started here."""
    script = directory / "interactive.py"
    script.write_text(textwrap.dedent(PYTHON_SCRIPT))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFORK_INTERP") and k != "PYTHONUNBUFFERED"}
    env.update(
        PYTHONPATH=str(PYTHON_PACKAGE),
        PREFORK_INTERP_RUN_DIR=str(run_dir),
        PFI_SESSIONS=str(sessions_file),
        PAGER="less",
        LESS="",
        LESSHISTFILE="-",
    )
    served = [CLIENT, "-U", PYTHON, str(script)]
    program = Program(
        name="python",
        served=" ".join(quote(a) for a in served),
        direct=f"{quote(PYTHON)} {quote(str(script))}",
        killers=[[CLIENT, "--kill", "-U", PYTHON, str(script)]],
        env=env,
        modes=[*COMMON_MODES, "pager-pydoc"],
    )
    _warm("python", served, env, directory, program.killers)
    return program


#: The modes every language has.
COMMON_MODES = [
    "interrupt", "finally", "read-line", "wait-file", "winch", "password", "tty", "pager-run",
    "tty-read", "pid", "interleave", "isatty",
]


def _program_env(run_dir: Path, sessions_file: Path, **extra: str) -> Dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFORK_INTERP") and k != "PYTHONUNBUFFERED"}
    env.update(
        PREFORK_INTERP_RUN_DIR=str(run_dir),
        PFI_SESSIONS=str(sessions_file),
        PAGER="less",
        LESS="",
        LESSHISTFILE="-",
        **extra,
    )
    return env


def _warm(name: str, served: List[str], env: Dict[str, str], directory: Path, killers: List[List[str]]) -> None:
    """Start the server; if that fails, stop whatever did start.  The first
    call runs in place, in our session (protocol.md section 7): it records
    no session; the second, served, records its server's."""
    quiet = {k: v for k, v in env.items() if k != "PFI_SESSIONS"}
    warm = subprocess.run([*served, "warm"], env=quiet, cwd=directory, capture_output=True, timeout=60)
    if warm.returncode == 0:
        warm = subprocess.run([*served, "warm"], env=env, cwd=directory, capture_output=True, timeout=60)
    if warm.returncode != 0:
        for argv in killers:
            subprocess.run(argv, env=env, cwd=directory, capture_output=True, timeout=30)
    assert warm.returncode == 0, f"{name}: " + warm.stderr.decode(errors="replace")


def perl_program(directory: Path, run_dir: Path, sessions_file: Path) -> Program:
    """The Perl script (a private copy, so its server is this test's)."""
    script = directory / "interactive.pl"
    script.write_text((Path(__file__).parent / "interactive.pl").read_text())
    env = _program_env(run_dir, sessions_file, PERL5LIB=str(REPO_ROOT / "perl" / "lib"))
    served = [CLIENT, "-U", "perl", str(script)]
    killers = [[CLIENT, "--kill", "-U", "perl", str(script)]]
    _warm("perl", served, env, directory, killers)
    return Program(
        name="perl",
        served=" ".join(quote(a) for a in served),
        direct=f"perl {quote(str(script))}",
        killers=killers,
        env=env,
        modes=COMMON_MODES,
    )


def rust_program(directory: Path, run_dir: Path, sessions_file: Path) -> Program:
    """The Rust program (a private copy of examples/interactive)."""
    built = REPO_ROOT / "target" / "release" / "examples" / "interactive"
    if not built.exists():
        subprocess.run(
            ["cargo", "build", "--release", "--example", "interactive"], cwd=REPO_ROOT, check=True, timeout=600
        )
    program = directory / "interactive"
    program.write_bytes(built.read_bytes())
    program.chmod(0o755)
    env = _program_env(run_dir, sessions_file)
    served = [CLIENT, "-U", str(program)]
    # The client counts the first argument (the mode) as a script: each
    # mode has its own server.
    killers = [[CLIENT, "--kill", "-U", str(program), m] for m in ["warm", *COMMON_MODES]]
    _warm("rust", served, env, directory, killers)
    return Program(
        name="rust",
        served=" ".join(quote(a) for a in served),
        direct=quote(str(program)),
        killers=killers,
        env=env,
        modes=COMMON_MODES,
    )


#: Each language's program maker; the tests run once per entry.
PROGRAMS = {"python": python_program, "perl": perl_program, "rust": rust_program}


class Setup:
    """One test's program and terminal."""

    def __init__(self, program: Program, terminal: Terminal, directory: Path, sessions_file: Path) -> None:
        self.program = program
        self.terminal = terminal
        self.dir = directory
        self.sessions_file = sessions_file

    def server_sessions(self) -> Set[int]:
        """Sessions of the executors that ran served (the servers' pids)."""
        try:
            lines = self.sessions_file.read_text().split()
        except FileNotFoundError:
            return set()
        return {int(sid) for sid in lines} - {self.terminal.bash.pid}
