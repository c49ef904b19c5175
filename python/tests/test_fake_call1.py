"""Extension call1 through a client written here (fake_client.Call1): the
caller's attributes and fds applied, signals forwarded, job control frames,
exact exit statuses, and bad clients (protocol.md section 6)."""

from __future__ import annotations

import json
import os
import resource
import signal
import socket
import subprocess
import textwrap

import pytest
from fake_client import ACCEPT_FRAME, Call1, FakeClient, read_until
from harness import ATTRIBUTES_SNIPPET, PACKAGE_ROOT, PYTHON, alive, send_fds, wait_until

from prefork_interp._protocol import (
    MAX_FRAME,
    RLIM_INFINITY,
    TAG_ATTR,
    TAG_SIGG,
    TAG_SIGP,
    TAG_STOP,
    Attributes,
    encode_frame,
)

SCRIPT = """\
import json, os, resource, signal, subprocess, sys, time
# The script's own fd 9, opened while initialising.
_own = os.open(os.devnull, os.O_RDONLY)
os.dup2(_own, 9)
os.close(_own)
import prefork_interp
prefork_interp.initialisation_complete(log_facility=None)

CHILD = '''
import os, signal, sys, time
signal.signal(signal.SIGUSR1, lambda *a: os.write(1, b"child USR1\\\\n"))
print("child ready", flush=True)
while True:
    time.sleep(1)
'''

""" + ATTRIBUTES_SNIPPET + """
def report():
    return {
        **attributes(20),
        "group_leader": os.getpgid(0) == os.getpid(),
        "sid": os.getsid(0),
    }

mode = sys.argv[1]
if mode == "report":
    print(json.dumps(report()))
elif mode == "exit":
    sys.exit(int(sys.argv[2]))
elif mode == "kill":
    os.kill(os.getpid(), int(sys.argv[2]))
elif mode == "write-fds":
    for n in sys.argv[2:]:
        os.write(int(n), f"fd {n} from pid {os.getpid()}\\n".encode())
    print(json.dumps(report()))
elif mode == "wait":
    # os.write, not print: a handler running inside print() would be a
    # reentrant call on sys.stdout.
    signal.signal(signal.SIGUSR1, lambda *a: os.write(1, b"script USR1\\n"))
    child = subprocess.Popen([sys.executable, "-c", CHILD])
    try:
        print("script ready", child.pid, flush=True)
        while True:
            time.sleep(0.02)
    except KeyboardInterrupt:
        print("script KeyboardInterrupt", flush=True)
        child.kill()
        child.wait()
        sys.exit(3)
"""


@pytest.fixture
def fake(tmp_path):
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(SCRIPT))
    client = FakeClient(tmp_path, script, setup_args=("exit", "0"))
    try:
        call = Call1(client.first_call, _argv(client, "report"))
        status, out, err = call.finish()
        assert status == 0, err
        client.servers.append(json.loads(out)["sid"])
        yield client
    finally:
        client.close()


def _argv(client: FakeClient, *args: str):
    return [b"python3", client.script.encode(), *(a.encode() for a in args)]


def _call(client: FakeClient, *args: str, **kw) -> Call1:
    return Call1(client.connect(), _argv(client, *args), **kw)


def _run(client: FakeClient, *args: str, **kw):
    call = _call(client, *args, **kw)
    try:
        return call.finish()
    finally:
        call.close()


# ---------------------------------------------------------------------------
# The caller's attributes (protocol.md section 6.4)


def _limits_for_test():
    """Every resource as we have it, with some changed: what a caller under
    `ulimit -n 200 -c 0 -v 4194304 -f 1024` sends."""
    limits = {r: resource.getrlimit(r) for r in range(16)}
    limits[resource.RLIMIT_NOFILE] = (200, limits[resource.RLIMIT_NOFILE][1])
    limits[resource.RLIMIT_CORE] = (0, 0)
    limits[resource.RLIMIT_AS] = (4 << 30, RLIM_INFINITY)
    limits[resource.RLIMIT_FSIZE] = (1 << 20, RLIM_INFINITY)
    return limits


ATTRS = Attributes(
    umask=0o027,
    nice=os.getpriority(os.PRIO_PROCESS, 0) + 7,
    rlimits=tuple((r, soft, hard) for r, (soft, hard) in _limits_for_test().items()),
    sigign=frozenset({signal.SIGINT, signal.SIGHUP, signal.SIGPIPE}),
    sigmask=frozenset({signal.SIGUSR2, signal.SIGWINCH, 40}),
)


def _direct_report(client: FakeClient, attrs: Attributes):
    """The same script run directly by a caller with ``attrs``."""

    def as_the_caller():
        os.umask(attrs.umask)
        for r, soft, hard in attrs.rlimits:
            resource.setrlimit(r, (soft, hard))
        os.setpriority(os.PRIO_PROCESS, 0, attrs.nice)
        for sig in attrs.sigign:
            signal.signal(sig, signal.SIG_IGN)
        signal.pthread_sigmask(signal.SIG_SETMASK, attrs.sigmask)

    p = subprocess.run(
        [PYTHON, client.script, "report"], preexec_fn=as_the_caller, capture_output=True, timeout=30,
        env={**os.environ, "PYTHONPATH": str(PACKAGE_ROOT)}, cwd=client.dir,
    )
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def test_attributes_applied_as_in_a_direct_run(fake):
    status, out, err = _run(fake, "report", attrs=ATTRS)
    assert status == 0, err
    got = json.loads(out)
    assert got["umask"] == 0o027
    assert got["nice"] == ATTRS.nice
    assert {int(r): tuple(v) for r, v in got["rlimits"].items()} == _limits_for_test()
    assert got["mask"] == [signal.SIGUSR2, signal.SIGWINCH, 40]
    dispositions = {int(s): d for s, d in got["dispositions"].items()}
    assert dispositions[signal.SIGINT] == dispositions[signal.SIGHUP] == dispositions[signal.SIGPIPE] == "SIG_IGN"
    assert dispositions[signal.SIGTERM] == dispositions[signal.SIGQUIT] == "SIG_DFL"
    assert got["group_leader"] is True
    want = _direct_report(fake, ATTRS)
    for key in ("umask", "nice", "rlimits", "dispositions", "mask"):
        assert got[key] == want[key], key


def test_python_defaults_when_the_caller_ignores_nothing(fake):
    status, out, err = _run(fake, "report", attrs=Attributes(sigign=frozenset(), sigmask=frozenset()))
    assert status == 0, err
    got = json.loads(out)
    dispositions = {int(s): d for s, d in got["dispositions"].items()}
    assert dispositions[signal.SIGINT] == "default_int_handler"
    # Python's own start-up choices, kept.
    assert dispositions[signal.SIGPIPE] == dispositions[signal.SIGXFSZ] == "SIG_IGN"
    assert dispositions[signal.SIGHUP] == "SIG_DFL"
    assert got["mask"] == []
    want = _direct_report(fake, Attributes(umask=os.umask(0o22), nice=0, rlimits=(), sigign=frozenset(), sigmask=frozenset()))
    os.umask(want["umask"])
    assert got["dispositions"] == want["dispositions"]


def test_absent_attributes_leave_the_servers(fake):
    """An empty ATTR: umask, limits, nice are the server's; the mask is the
    script's at initialisation_complete (empty)."""
    old = os.umask(0o022)
    os.umask(old)
    status, out, err = _run(fake, "report", attrs=Attributes())
    assert status == 0, err
    got = json.loads(out)
    assert got["umask"] == old
    assert got["nice"] == os.getpriority(os.PRIO_PROCESS, 0)
    assert {int(r): tuple(v) for r, v in got["rlimits"].items()} == {r: resource.getrlimit(r) for r in range(16)}
    assert got["mask"] == []


# ---------------------------------------------------------------------------
# Extra fds


def test_extra_fds_at_their_numbers(fake, tmp_path):
    three = open(tmp_path / "three", "wb")
    ten = open(tmp_path / "ten", "wb")
    pipe_r, pipe_w = os.pipe()
    mine = open(tmp_path / "nine", "wb")  # fd 9 is the script's own
    try:
        attrs = Attributes(fds=(3, 4, 9, 10))
        call = _call(fake, "write-fds", "3", "4", "10", attrs=attrs, extra=[three.fileno(), pipe_w, mine.fileno(), ten.fileno()])
        os.close(pipe_w)
        pipe_w = -1
        try:
            status, out, err = call.finish()
        finally:
            call.close()
        assert status == 0, err
        got = json.loads(out)["fds"]
        for number, f in (("3", three), ("10", ten)):
            st = os.fstat(f.fileno())
            assert got[number] == [st.st_dev, st.st_ino, True], number
        st = os.fstat(pipe_r)
        assert got["4"] == [st.st_dev, st.st_ino, True]
        null = os.stat(os.devnull)
        assert got["9"][:2] == [null.st_dev, null.st_ino], "the script's own fd 9 wins"
        assert set(got) == {"3", "4", "9", "10"}, "no other fd of ours reaches the script"
        # Every copy of the pipe's write end is closed when the call ends: EOF.
        os.set_blocking(pipe_r, True)
        data = read_until(pipe_r, b"\n", 10)
        assert data.startswith(b"fd 4 from pid ")
        assert Call1.drain(pipe_r) == b""
        assert (tmp_path / "three").read_bytes().startswith(b"fd 3 from pid ")
        assert (tmp_path / "ten").read_bytes().startswith(b"fd 10 from pid ")
        assert (tmp_path / "nine").read_bytes() == b""
    finally:
        for f in (three, ten, mine):
            f.close()
        os.close(pipe_r)
        if pipe_w >= 0:
            os.close(pipe_w)


# ---------------------------------------------------------------------------
# Signals and job control (protocol.md section 6.5)


def _ready(call: Call1) -> int:
    """Wait until the "wait" script and its child are running; the child's pid."""
    out = call.read_out(b"child ready\n")
    while not any(line.startswith(b"script ready") and line.endswith(b"\n") for line in out.splitlines(True)):
        out += call.read_out(b"\n")
    (line,) = [line for line in out.splitlines() if line.startswith(b"script ready")]
    return int(line.split()[2])


def test_sigp_reaches_the_executor_and_sigg_its_group(fake):
    call = _call(fake, "wait", attrs=Attributes(sigign=frozenset(), sigmask=frozenset()))
    try:
        child = _ready(call)
        call.send(TAG_SIGP, signal.SIGUSR1)
        assert call.read_out(b"script USR1\n") == b"script USR1\n"
        assert call.no_frame_for(0.2)
        call.send(TAG_SIGG, signal.SIGUSR1)
        got = call.read_out(b"USR1\n")
        got += call.read_out(b"USR1\n") if got.count(b"USR1") < 2 else b""
        assert sorted(got.split(b"\n")[:-1]) == [b"child USR1", b"script USR1"]
        call.send(TAG_SIGG, signal.SIGTERM)
        status, _, err = call.finish()
        assert status == signal.SIGTERM, err
        wait_until(lambda: not alive(lambda p: p.pid == child), 5, "the script's child to die of SIGG SIGTERM")
    finally:
        call.close()


def test_stop_frame_then_sigg_sigcont(fake):
    call = _call(fake, "wait", attrs=Attributes(sigign=frozenset(), sigmask=frozenset()))
    try:
        _ready(call)
        call.send(TAG_SIGG, signal.SIGTSTP)
        assert call.expect(TAG_STOP, 10) == signal.SIGTSTP
        call.send(TAG_SIGP, signal.SIGUSR1)
        with pytest.raises(AssertionError, match="timed out"):
            call.read_out(b"script USR1", timeout=0.3)  # stopped: the handler cannot run
        call.send(TAG_SIGG, signal.SIGCONT)
        assert call.read_out(b"script USR1\n") == b"script USR1\n"
        call.send(TAG_SIGP, signal.SIGSTOP)
        assert call.expect(TAG_STOP, 10) == signal.SIGSTOP
        call.send(TAG_SIGG, signal.SIGCONT)
        call.send(TAG_SIGG, signal.SIGINT)
        status, out, err = call.finish()
        assert b"script KeyboardInterrupt\n" in out, err
        assert status == 3 << 8, err
    finally:
        call.close()


@pytest.mark.parametrize(
    "args, status",
    [
        (("exit", "0"), 0),
        (("exit", "3"), 3 << 8),
        (("exit", "255"), 255 << 8),
        (("kill", str(int(signal.SIGKILL))), signal.SIGKILL),
        (("kill", str(int(signal.SIGTERM))), signal.SIGTERM),
        # RLIMIT_CORE 0 from the caller: no core dump bit.
        (("kill", str(int(signal.SIGQUIT))), signal.SIGQUIT),
    ],
)
def test_exit_frame_has_the_exact_wait_status(fake, args, status):
    got, _, err = _run(fake, *args, attrs=Attributes(rlimits=((resource.RLIMIT_CORE, 0, 0),)))
    assert got == status, err


# ---------------------------------------------------------------------------
# The caller going away


@pytest.mark.parametrize("stopped", [False, True])
def test_hang_up_sigints_the_group(fake, stopped):
    call = _call(fake, "wait", attrs=Attributes(sigign=frozenset(), sigmask=frozenset()))
    try:
        child = _ready(call)
        if stopped:
            call.send(TAG_SIGG, signal.SIGTSTP)
            assert call.expect(TAG_STOP, 10) == signal.SIGTSTP
        call.sock.close()
        assert call.read_out(b"script KeyboardInterrupt\n", 10).endswith(b"script KeyboardInterrupt\n")
        assert Call1.drain(call.out) == b"", "stdout reaches EOF: the executor and its child are gone"
        wait_until(lambda: not alive(lambda p: p.pid == child), 5, "the child to go")
    finally:
        call.close()


# ---------------------------------------------------------------------------
# Bad or unusual clients


def _assert_still_serving(fake):
    status, out, err = _run(fake, "exit", "5", attrs=Attributes())
    assert status == 5 << 8, err


def test_unknown_frames_are_skipped(fake):
    call = _call(fake, "wait", attrs=Attributes(sigign=frozenset(), sigmask=frozenset()))
    try:
        _ready(call)
        call.sock.sendall(encode_frame(b"LATR", b"x" * 1000) + encode_frame(b"SIGX", b"") + encode_frame(TAG_ATTR, b"umask=0\0"))
        call.send(TAG_SIGP, signal.SIGUSR1)
        assert call.read_out(b"script USR1\n") == b"script USR1\n"
        call.send(TAG_SIGP, signal.SIGINT)
        status, out, err = call.finish()
        assert status == 3 << 8, err
    finally:
        call.close()


def test_oversized_frame_drops_the_call(fake):
    """A frame over 65536 bytes: logged (the first monitor logs to the first
    caller's stderr, here a file) and the call dropped as for a hang-up."""
    call = Call1(fake.connect(), _argv(fake, "wait"), attrs=Attributes())
    try:
        _ready(call)
        call.sock.sendall(b"BIGG" + (MAX_FRAME + 1).to_bytes(4, "big"))
        assert call.read_out(b"script KeyboardInterrupt\n", 10).endswith(b"script KeyboardInterrupt\n")
        assert call.expect(b"EXIT", 10) == 3 << 8
    finally:
        call.close()
    _assert_still_serving(fake)


@pytest.mark.parametrize(
    "garbage",
    [
        encode_frame(TAG_SIGP, b"\0\0\2"),  # body not 4 bytes
        encode_frame(TAG_SIGP, (0).to_bytes(4, "big")),  # not a signal
        encode_frame(TAG_SIGG, (999).to_bytes(4, "big")),
    ],
)
def test_bad_signal_frames_are_ignored(fake, garbage):
    call = _call(fake, "wait", attrs=Attributes(sigign=frozenset(), sigmask=frozenset()))
    try:
        _ready(call)
        call.sock.sendall(garbage)
        call.send(TAG_SIGP, signal.SIGUSR1)
        assert call.read_out(b"script USR1\n") == b"script USR1\n"
        call.send(TAG_SIGP, signal.SIGINT)
        assert call.finish()[0] == 3 << 8
    finally:
        call.close()


@pytest.mark.parametrize(
    "behave",
    [
        "hang up before ATTR",
        "bad ATTR",
        "oversized ATTR",
        "too few fds",
        "hang up at once after the fds",
    ],
)
def test_server_survives_bad_call1_clients(fake, behave):
    null = os.open(os.devnull, os.O_RDWR)
    try:
        call = Call1(fake.connect(), _argv(fake, "exit", "0"), send_attr=False)
        assert call.accept == ACCEPT_FRAME
        sock = call.sock
        if behave == "bad ATTR":
            sock.sendall(encode_frame(TAG_ATTR, b"fds=3,x\0"))
        elif behave == "oversized ATTR":
            sock.sendall(b"ATTR" + (MAX_FRAME + 1).to_bytes(4, "big"))
        elif behave == "too few fds":
            sock.sendall(encode_frame(TAG_ATTR, b"fds=3,4\0"))
            send_fds(sock, [null])
        elif behave == "hang up at once after the fds":
            sock.sendall(encode_frame(TAG_ATTR, b"fds=3\0"))
            send_fds(sock, [null])
        sock.shutdown(socket.SHUT_WR)
        if behave == "hang up at once after the fds":
            # The call ran, and got SIGINT at once: the status still comes.
            frame = call.frame(10)
            assert frame is not None and frame.tag == b"EXIT"
        else:
            assert call.frame(10) is None, "nothing after a bad request"
        call.close()
    finally:
        os.close(null)
    _assert_still_serving(fake)

