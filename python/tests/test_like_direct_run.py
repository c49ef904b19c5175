"""A served call behaves like a direct run (issue 8; protocol.md section 6),
through the real clients: our Rust client speaking call1, and the Debian C
client (v1, section 6.6).  Each test runs the same script both ways from
the same caller and compares what the script saw, printed and returned.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import time
from typing import Callable, Dict, List, Optional

import pytest
from fake_client import read_until
from harness import ATTRIBUTES_SNIPPET, PYTHON, Harness, alive, wait_until

REPORT = ATTRIBUTES_SNIPPET + "import json\nprint(json.dumps(attributes(64)))\n"

COMPARED = ("umask", "nice", "rlimits", "dispositions", "mask", "fds")


def _report(harness: Harness, how: str, wrapper: str, env: Optional[Dict[str, Optional[str]]] = None, preexec: Optional[Callable[[], None]] = None) -> dict:
    """Run the report script served (``how == "served"``) or directly, from
    ``bash -c 'WRAPPER "$@"'``: the wrapper sets the caller up."""
    script = harness.dir / "report.py"
    if how == "served":
        cmd = harness.command(script)
        run_env = harness.env(env)
    else:
        cmd = [PYTHON, str(script)]
        run_env = harness.env({**(env or {}), "PFI_TEST_RECORD": None})
    p = subprocess.run(
        ["bash", "--norc", "--noprofile", "-c", f'{wrapper} "$@"', "bash", *cmd],
        capture_output=True, env=run_env, cwd=harness.dir, timeout=30, preexec_fn=preexec,
    )
    assert p.returncode == 0, (how, p.stderr.decode(errors="replace"))
    return json.loads(p.stdout)


CALLERS = {
    "umask 027": "umask 027; exec",
    "ulimit -n 200": "ulimit -n 200; exec",
    "ulimit -c 0": "ulimit -c 0; exec",
    "ulimit -v": "ulimit -v 4194304; exec",
    "ulimit -f, -s": "ulimit -f 1024; ulimit -s 4096; exec",
    "nice -n 10": "exec nice -n 10",
    "nohup": "exec nohup",
    "trap '' INT": "trap '' INT; exec",
    "trap '' INT HUP PIPE QUIT TERM": "trap '' INT HUP PIPE QUIT TERM; exec",
    "3>file": "exec 3>file; exec",
    "3>file 5<file 9>>file": "exec 3>file 5<file 9>>file; exec",
    "everything": "umask 077; ulimit -n 300 -c 0; trap '' INT HUP; exec 4>file; exec nice -n 5 nohup",
}


@pytest.mark.parametrize("caller", list(CALLERS))
def test_caller_attributes_as_in_a_direct_run(our_harness, caller):
    harness = our_harness
    harness.script("report.py", REPORT)
    (harness.dir / "file").write_bytes(b"")
    harness.run(harness.dir / "report.py")  # a server, started by a plain caller
    served = _report(harness, "served", CALLERS[caller])
    direct = _report(harness, "direct", CALLERS[caller])
    for key in COMPARED:
        assert served[key] == direct[key], key
    plain = _report(harness, "served", "exec")
    assert any(plain[key] != served[key] for key in COMPARED), "the caller's setting should make a difference"


def test_blocked_mask_as_in_a_direct_run(our_harness):
    harness = our_harness
    harness.script("report.py", REPORT)
    harness.run(harness.dir / "report.py")
    blocked = {signal.SIGUSR1, signal.SIGTERM, signal.SIGINT, 40}

    def block():
        signal.pthread_sigmask(signal.SIG_BLOCK, blocked)

    served = _report(harness, "served", "exec", preexec=block)
    direct = _report(harness, "direct", "exec", preexec=block)
    assert served["mask"] == direct["mask"] == sorted(blocked)
    assert served["dispositions"] == direct["dispositions"]


def test_extra_pipe_reaches_eof_when_the_call_ends(our_harness):
    """`script 4>&PIPE`: fd 4 at 4; the reader sees EOF when the call ends
    (no copy left in the server or monitor)."""
    harness = our_harness
    script = harness.script("fd4.py", 'os.write(4, b"via fd 4\\n")\n')
    harness.run(script)
    r, w = os.pipe()
    try:
        p = subprocess.run(
            ["bash", "--norc", "--noprofile", "-c", f'exec 4>&{w} {w}>&-; exec "$@"', "bash", *harness.command(script)],
            env=harness.env(), cwd=harness.dir, timeout=30, capture_output=True, pass_fds=(w,),
        )
        assert p.returncode == 0, p.stderr
        os.close(w)
        w = -1
        os.set_blocking(r, False)
        deadline = time.monotonic() + 10
        data = b""
        while True:
            try:
                chunk = os.read(r, 100)
            except BlockingIOError:
                assert time.monotonic() < deadline, f"no EOF on the pipe; got {data!r}"
                time.sleep(0.02)
                continue
            if not chunk:
                break
            data += chunk
        assert data == b"via fd 4\n"
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)


# ---------------------------------------------------------------------------
# Signals sent to the client with kill(2)


class Running:
    """A call (served or direct) running in the background, its output read
    as it comes."""

    def __init__(self, harness: Harness, cmd: List[str], env: Dict[str, str], new_group: bool = False) -> None:
        def setup() -> None:
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # no core files from direct runs
            if new_group:
                os.setpgid(0, 0)

        self.p = subprocess.Popen(cmd, env=env, cwd=harness.dir, stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=setup)
        harness.popened.append(self.p)
        self.out = b""

    def wait_for(self, needle: bytes, timeout: float = 30) -> None:
        self.out += read_until(self.p.stdout.fileno(), needle, timeout)

    def finish(self, timeout: float = 30):
        out, err = self.p.communicate(timeout=timeout)
        return self.p.returncode, self.out + out, err


def _start(harness: Harness, how: str, script, *args: str, new_group: bool = False) -> Running:
    if how == "served":
        return Running(harness, harness.command(script, args), harness.env(), new_group)
    return Running(harness, [PYTHON, str(script), *args], harness.env({"PFI_TEST_RECORD": None}), new_group)


#: Signals a script can catch (glibc keeps 32 and 33; the client does not
#: forward SIGCHLD, which is about its own children).
CATCHABLE = sorted(int(s) for s in signal.valid_signals() if s not in (signal.SIGKILL, signal.SIGSTOP, signal.SIGCHLD))

CATCH_ALL = """\
import signal, time
def handler(sig, frame):
    os.write(1, f"got {sig}\\n".encode())  # not print(): no reentrant call on sys.stdout
for sig in signal.valid_signals():
    if sig not in (signal.SIGKILL, signal.SIGSTOP, signal.SIGCHLD):
        signal.signal(sig, handler)
"""


def test_every_catchable_signal_reaches_the_scripts_handler(our_harness):
    harness = our_harness
    stop = harness.dir / "stop"
    body = f'print("ready", flush=True)\nwhile not os.path.exists({str(stop)!r}):\n    time.sleep(0.01)\n'
    script = harness.script("catch.py", body, setup=CATCH_ALL)
    outputs = {}
    for how in ("direct", "served"):
        call = _start(harness, how, script)
        call.wait_for(b"ready\n")
        for sig in CATCHABLE:
            os.kill(call.p.pid, sig)
            call.wait_for(f"got {sig}\n".encode(), 10)
        stop.touch()
        outputs[how] = call.finish()
        stop.unlink()
    assert outputs["served"] == outputs["direct"]
    status, out, err = outputs["served"]
    assert (status, err) == (0, b"")
    assert out == b"ready\n" + b"".join(f"got {sig}\n".encode() for sig in CATCHABLE)


#: Signals whose default action ends the process (Python ignores SIGPIPE
#: and SIGXFSZ, and turns SIGINT into KeyboardInterrupt: all tested too).
FATAL = sorted(
    int(s)
    for s in signal.valid_signals()
    if s not in (signal.SIGKILL, signal.SIGSTOP, signal.SIGCHLD, signal.SIGCONT, signal.SIGURG, signal.SIGWINCH)
    and s not in (signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU)
)

WAIT_BODY = 'print("ready", flush=True)\nwhile True:\n    time.sleep(0.01)\n'


def test_every_fatal_signal_gives_the_direct_runs_status(our_harness):
    harness = our_harness
    script = harness.script("wait.py", WAIT_BODY, setup="import time\n")
    results: Dict[str, Dict[int, object]] = {"direct": {}, "served": {}}
    for sig in FATAL:
        for how in ("direct", "served"):
            call = _start(harness, how, script)
            call.wait_for(b"ready\n")
            os.kill(call.p.pid, sig)
            # Python ignores SIGPIPE and SIGXFSZ at start-up (as this test
            # process shows): those must leave the script running.
            python_ignores = signal.getsignal(sig) == signal.SIG_IGN
            try:
                status, out, err = call.finish(timeout=1 if python_ignores else 30)
            except subprocess.TimeoutExpired:
                # Still running (Python ignores SIGPIPE and SIGXFSZ): as it should be, if both agree.
                os.kill(call.p.pid, signal.SIGTERM)
                status, out, err = call.finish()
                status = ("survived", status)
            last = err.splitlines()[-1:] if err else []
            results[how][sig] = (status, last)
    assert results["served"] == results["direct"]
    assert results["served"][signal.SIGINT] == (-signal.SIGINT, [b"KeyboardInterrupt"])
    assert results["served"][signal.SIGTERM] == (-signal.SIGTERM, [])
    assert results["served"][signal.SIGPIPE][0] == ("survived", -signal.SIGTERM)


INTERRUPTED = {
    "except": """\
try:
    print("ready", flush=True)
    time.sleep(60)
except KeyboardInterrupt:
    print("cleanup", flush=True)
    sys.exit(3)
""",
    "finally": """\
try:
    print("ready", flush=True)
    time.sleep(60)
finally:
    print("cleanup", flush=True)
""",
}


@pytest.mark.parametrize("target", ["client", "group"])
@pytest.mark.parametrize("cleanup", list(INTERRUPTED))
def test_sigint_runs_the_scripts_cleanup_as_in_a_direct_run(our_harness, cleanup, target):
    """SIGINT by kill(2) to the client, or to its whole process group:
    KeyboardInterrupt, the script's cleanup, same output and status."""
    harness = our_harness
    script = harness.script("interrupted.py", INTERRUPTED[cleanup], setup="import time\n")
    results = {}
    for how in ("direct", "served"):
        call = _start(harness, how, script, new_group=True)
        call.wait_for(b"ready\n")
        if target == "client":
            os.kill(call.p.pid, signal.SIGINT)
        else:
            os.killpg(call.p.pid, signal.SIGINT)
        status, out, err = call.finish()
        results[how] = (status, out, err.splitlines()[-1:])
    assert results["served"] == results["direct"]
    want_status = 3 if cleanup == "except" else -signal.SIGINT
    assert results["served"][:2] == (want_status, b"ready\ncleanup\n")


# ---------------------------------------------------------------------------
# The C client: v1, no extension (section 6.6)


def test_c_client_sigint_is_keyboard_interrupt(c_harness):
    """With the v1 C client the executor still has Python's SIGINT
    (default_int_handler), and when the client dies of SIGINT the call's
    group is SIGINTed: the script's KeyboardInterrupt cleanup runs."""
    harness = c_harness
    marker = harness.dir / "cleaned-up"
    body = f"""\
import signal, time
try:
    print(signal.getsignal(signal.SIGINT) is signal.default_int_handler, os.getpgid(0) == os.getpid(), flush=True)
    time.sleep(60)
except KeyboardInterrupt:
    open({str(marker)!r}, "w").write("yes")
    sys.exit(3)
"""
    script = harness.script("c_sigint.py", body)
    call = _start(harness, "served", script)
    call.wait_for(b"\n")
    assert call.out == b"True True\n"
    os.kill(call.p.pid, signal.SIGINT)
    status, _, _ = call.finish()
    assert status == -signal.SIGINT, "the C client dies of SIGINT (v1)"
    wait_until(marker.exists, 10, "the script's KeyboardInterrupt cleanup")
    executor = harness.executors()[-1][0]
    wait_until(lambda: not alive(lambda p: p.pid == executor), 10, "the executor to exit")
