"""Test harness: scripts in a private directory, calls through a client,
process bookkeeping and clean-up.

Each test gets its own directory; scripts live there and calls run with it
as the current directory, so every test has its own server identity even
with the C client (which ignores PREFORK_INTERP_RUN_DIR and uses the
machine-wide ~root/.prefork-interp).  Every executor appends its pid,
process group and session to a record file; the session is the server's
pid.  Clean-up stops each server with ``--kill`` through the client, then
kills whatever is left in the recorded sessions, by pid.
"""

from __future__ import annotations

import array
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Set, Tuple, Union

PACKAGE_ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable

#: Appended to every test script after initialisation_complete(): record
#: this executor (pid, process group, session = server pid) for the harness.
#: (Direct runs do not get PFI_TEST_RECORD.)
#: Script code defining ``attributes(max_fd)``: what a process inherited
#: from its caller that a call must carry (protocol.md section 6), as plain
#: data: umask, nice value, resource limits, signal dispositions and mask,
#: and the fds 3 to ``max_fd - 1`` (device, inode, inheritable).
ATTRIBUTES_SNIPPET = """\
import os, resource, signal

def disposition(sig):
    h = signal.getsignal(sig)
    names = {signal.SIG_DFL: "SIG_DFL", signal.SIG_IGN: "SIG_IGN", signal.default_int_handler: "default_int_handler"}
    return names.get(h, repr(h))

def attributes(max_fd):
    fds = {}
    for n in range(3, max_fd):
        try:
            st = os.fstat(n)
        except OSError:
            continue
        fds[n] = [st.st_dev, st.st_ino, os.get_inheritable(n)]
    umask = os.umask(0)
    os.umask(umask)
    return {
        "umask": umask,
        "nice": os.getpriority(os.PRIO_PROCESS, 0),
        "rlimits": {r: resource.getrlimit(r) for r in range(16)},
        "dispositions": {int(s): disposition(s) for s in sorted(signal.valid_signals()) if s not in (9, 19)},
        "mask": sorted(int(s) for s in signal.pthread_sigmask(signal.SIG_BLOCK, [])),
        "fds": fds,
    }
"""

#: The reference C client (chiark-utils-bin).
C_CLIENT = "/usr/bin/prefork-interp"


# Records "pid pgid server" for each call.  A served call runs in its
# server's session (the server called setsid), so the server is the session
# leader, whose command line is its title, "prefork-interp server: SCRIPT
# (INTERPRETER)".  The first call of a new server runs in place, in the
# setup process (protocol.md section 7), in our session: its server is then
# the newest session leader with that title for this script (it may take a
# moment to get there).
RECORD_SNIPPET = """\
if os.environ.get("PFI_TEST_RECORD"):
    def _pfi_server():
        import time
        def cmdline(pid):
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    return f.read()
            except OSError:
                return None
        me = b"prefork-interp server: " + os.fsencode(sys.argv[0]) + b" ("
        leader = cmdline(os.getsid(0))
        if leader is not None and leader.startswith(me):
            return os.getsid(0)
        for _ in range(500):
            leaders = []
            for p in os.listdir("/proc"):
                try:
                    with open(f"/proc/{p}/stat") as st:
                        fields = st.read().rsplit(")", 1)[1].split()
                    if int(p) != os.getpid() and int(fields[3]) == int(p) and (cmdline(p) or b"").startswith(me):
                        leaders.append((int(fields[19]), int(p)))
                except (OSError, ValueError):
                    pass
            if leaders:
                return max(leaders)[1]
            time.sleep(0.01)
        return os.getsid(0)
    with open(os.environ["PFI_TEST_RECORD"], "a") as _f:
        _f.write(f"{os.getpid()} {os.getpgid(0)} {_pfi_server()}\\n")
"""


@dataclass
class Result:
    """Outcome of one call."""

    returncode: int
    out: bytes
    err: bytes
    seconds: float

    def text(self) -> str:
        return f"status {self.returncode}\n--- stdout\n{self.out!r}\n--- stderr\n{self.err.decode(errors='replace')}"


@dataclass(frozen=True)
class Proc:
    """One line of /proc/<pid>/stat, the fields we use."""

    pid: int
    state: str
    ppid: int
    pgid: int
    sid: int

    @property
    def gone(self) -> bool:
        """A zombie nobody will reap (init here does not): as good as gone."""
        return self.state in ("Z", "X") and self.ppid == 1


def send_fds(sock: socket.socket, fds: Sequence[int]) -> None:
    """Send one byte carrying ``fds`` in SCM_RIGHTS, as a client sends
    each of its stdio fds."""
    sock.sendmsg([b"\0"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])


def processes() -> List[Proc]:
    """Every process on the machine."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                data = f.read()
        except OSError:
            continue
        fields = data[data.rindex(b")") + 2 :].split()
        found.append(Proc(int(name), fields[0].decode(), int(fields[1]), int(fields[2]), int(fields[3])))
    return found


def alive(match: Callable[[Proc], bool]) -> List[Proc]:
    """Processes matching ``match`` that are not unreapable zombies."""
    return [p for p in processes() if match(p) and not p.gone]


def listening_socket(server_pid: int, run_dir: "Optional[Path]" = None) -> str:
    """Path of the Unix socket a server listens on (from /proc: the C
    client's run directory is not the harness's).  Our client binds through
    its open run directory (``/proc/self/fd/N/NAME``): such a path is NAME
    in ``run_dir``."""
    inodes = set()
    for fd in os.listdir(f"/proc/{server_pid}/fd"):
        try:
            target = os.readlink(f"/proc/{server_pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    with open("/proc/net/unix") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            if len(fields) >= 8 and int(fields[6]) in inodes and int(fields[3], 16) & 0x10000:
                path = fields[7]
                if run_dir is not None and path.startswith("/proc/self/fd/"):
                    return str(run_dir / os.path.basename(path))
                return path
    raise AssertionError(f"server {server_pid} has no listening socket")


def server_helpers() -> int:
    """Processes a Python server keeps besides its spares: the forker that
    makes them (``_forker``), where one can run."""
    from prefork_interp import _forker

    return 1 if _forker.available() else 0


def only_server_and_spares(server: int) -> bool:
    """Is everything left in the server's session the server, its idle
    spare executors (its children, as many as the default pool size) and
    its forker (also its child, where one runs)?"""
    from prefork_interp._options import DEFAULT_POOL_SIZE

    others = alive(lambda p: p.sid == server and p.pid != server)
    return len(others) == DEFAULT_POOL_SIZE + server_helpers() and all(_ppid(p.pid) == server for p in others)


def _ppid(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError):
        return 0


def wait_until(condition: Callable[[], object], timeout: float, what: str, interval: float = 0.02) -> object:
    """Poll ``condition`` until it is true; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


class Harness:
    """Scripts and calls of one test (see the module docstring)."""

    def __init__(self, client: str, directory: Path) -> None:
        self.client = client
        #: Ours runs the first call of a new server in place (protocol.md
        #: section 7); the C client has the server serve it.
        self.first_call_in_place = client != C_CLIENT
        self.dir = directory
        # Socket paths are limited to 108 bytes: a pytest tmp_path is too long.
        self.run_dir = Path(tempfile.mkdtemp(prefix="pfi-", dir="/tmp"))
        self.record_file = directory / "executors.log"
        self.scripts: Set[Tuple[str, ...]] = set()
        self.popened: List[subprocess.Popen] = []
        self.own_session = os.getsid(0)

    # -- environment and scripts -------------------------------------------

    def env(self, overrides: Optional[Dict[str, Optional[str]]] = None) -> Dict[str, str]:
        """The environment for calls: ours, plus the package path, the run
        dir for our client and the record file; ``overrides`` set (None:
        remove) variables."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFORK_INTERP")}
        pythonpath = env.get("PYTHONPATH")
        env["PYTHONPATH"] = str(PACKAGE_ROOT) + (os.pathsep + pythonpath if pythonpath else "")
        env["PREFORK_INTERP_RUN_DIR"] = str(self.run_dir)
        env["PFI_TEST_RECORD"] = str(self.record_file)
        for name, value in (overrides or {}).items():
            if value is None:
                env.pop(name, None)
            else:
                env[name] = value
        return env

    def script(self, name: str, body: str, setup: str = "", init: str = "", shebang: Optional[str] = None) -> Path:
        """Write a script: ``setup`` code, initialisation_complete(``init``),
        the record snippet, then ``body``.  Returns its path."""
        path = self.dir / name
        parts = []
        if shebang is not None:
            parts.append(f"#!{shebang}\n")
        parts.append("import os, sys\n")
        parts.append(textwrap.dedent(setup))
        parts.append("import prefork_interp\n")
        parts.append(f"prefork_interp.initialisation_complete({init})\n")
        parts.append(RECORD_SNIPPET)
        parts.append(textwrap.dedent(body))
        path.write_text("".join(parts))
        return path

    def module(self, name: str, text: str) -> Path:
        """Write a module next to the scripts (importable by them)."""
        path = self.dir / name
        path.write_text(textwrap.dedent(text))
        return path

    # -- calls --------------------------------------------------------------

    def command(self, script: Union[Path, str], args: Iterable[Union[str, bytes]] = (), interp: Iterable[str] = ()) -> List:
        interp = tuple(interp)
        self.scripts.add((str(script), *interp))
        if interp:
            return [self.client, ",".join(("-U", PYTHON, *interp)), str(script), *args]
        return [self.client, "-U", PYTHON, str(script), *args]

    def call_argv(self, cmd: List, env: Dict[str, str], input: Optional[bytes], stdin, stdout, timeout: float) -> Result:
        """Run any command line in the test directory and capture it."""
        started = time.monotonic()
        p = subprocess.run(
            cmd,
            input=input,
            stdin=stdin if input is None else None,
            stdout=subprocess.PIPE if stdout is None else stdout,
            stderr=subprocess.PIPE,
            env=env,
            cwd=self.dir,
            timeout=timeout,
        )
        return Result(p.returncode, p.stdout or b"", p.stderr, time.monotonic() - started)

    def run(
        self,
        script: Union[Path, str],
        *args: Union[str, bytes],
        input: Optional[bytes] = None,
        env: Optional[Dict[str, Optional[str]]] = None,
        timeout: float = 30,
        interp: Iterable[str] = (),
        stdin=None,
        stdout=None,
    ) -> Result:
        """One call of ``script`` through the client.  ``stdin``/``stdout``:
        fds or files to use instead of ``input`` and capturing."""
        return self.call_argv(self.command(script, args, interp), self.env(env), input, stdin, stdout, timeout)

    def direct(
        self,
        script: Union[Path, str],
        *args: Union[str, bytes],
        input: Optional[bytes] = None,
        env: Optional[Dict[str, Optional[str]]] = None,
        timeout: float = 30,
        stdin=None,
        stdout=None,
    ) -> Result:
        """The same script run directly by the interpreter (no prefork)."""
        full_env = self.env(env)
        del full_env["PFI_TEST_RECORD"]  # a direct run must not record our session
        return self.call_argv([PYTHON, str(script), *args], full_env, input, stdin, stdout, timeout)

    def popen(self, script: Union[Path, str], *args: str, env: Optional[Dict[str, Optional[str]]] = None, **kw) -> subprocess.Popen:
        """Start a call without waiting for it (killed at clean-up)."""
        p = subprocess.Popen(self.command(script, args), env=self.env(env), cwd=self.dir, **kw)
        self.popened.append(p)
        return p

    # -- bookkeeping ----------------------------------------------------------

    def executors(self) -> List[Tuple[int, int, int]]:
        """(pid, pgid, sid) of every executor so far, in order."""
        try:
            lines = self.record_file.read_text().splitlines()
        except FileNotFoundError:
            return []
        return [tuple(int(x) for x in line.split()) for line in lines]  # type: ignore[misc]

    def sessions(self) -> Set[int]:
        """Sessions (server pids) our executors ran in."""
        return {sid for _, _, sid in self.executors() if sid != self.own_session}

    def last_server(self) -> int:
        return self.executors()[-1][2]

    def kill_server(self, script: Union[Path, str], interp: Tuple[str, ...] = ()) -> None:
        """``--kill`` the server of ``script`` through the client."""
        cmd = [self.client, "--kill", ",".join(("-U", PYTHON, *interp)) if interp else "-U"]
        if not interp:
            cmd.append(PYTHON)
        cmd.append(str(script))
        subprocess.run(cmd, env=self.env(), cwd=self.dir, capture_output=True, timeout=30)

    def cleanup(self) -> None:
        """Stop everything this test started; processes are found by the
        pids and sessions recorded, never by name."""
        for p in self.popened:
            if p.poll() is None:
                p.kill()
            p.wait()
        for script, *interp in sorted(self.scripts):
            self.kill_server(script, tuple(interp))
        sessions = self.sessions()
        in_sessions = lambda p: p.sid in sessions  # noqa: E731
        try:
            wait_until(lambda: not alive(in_sessions), 3, "servers to quit after --kill")
        except AssertionError:
            for proc in alive(in_sessions):
                try:
                    os.kill(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            wait_until(lambda: not alive(in_sessions), 5, "killed processes to go")
        finally:
            shutil.rmtree(self.run_dir, ignore_errors=True)
