"""Taking calls in (protocol.md section 4.1) against clients that are not
polite: another uid, idle and half-open connections, huge and oversized
requests, more connections than the server holds, a monitor killed under
a running call.

Tests that need exact bytes speak the protocol themselves (``FakeClient``
or raw sockets on a real server's socket); the others go through the real
clients.  The server's log goes to a file (option ``log_file``).
"""

from __future__ import annotations

import itertools
import json
import os
import pwd
import select
import signal
import socket
import statistics
import subprocess
import string
import time
from pathlib import Path
from typing import List, Tuple

import pytest
from fake_client import FakeClient, read_until
from harness import PYTHON, Harness, alive, listening_socket, server_helpers, wait_until

from prefork_interp._intake import MAX_HELD
from prefork_interp._options import DEFAULT_POOL_SIZE
from prefork_interp._options import DEFAULT_REQUEST_TIMEOUT as REQUEST_TIMEOUT
from prefork_interp._protocol import GREETING, MAX_REQUEST_LEN, U32_BE, encode_request

def log_to(path: Path) -> str:
    """initialisation_complete() options that send the server's messages
    to the file ``path`` (and not to syslog)."""
    return f"log_facility=None, log_file={str(path)!r}"

#: A script for FakeClient: its modes say what a call does.
FAKE_SCRIPT = """\
import ctypes, json, os, sys
import prefork_interp
prefork_interp.initialisation_complete({init})
mode = sys.argv[1]
if mode == "exit":
    print("sid", os.getsid(0), flush=True)
    sys.exit(int(sys.argv[2]))
if mode == "report-then-wait":
    # The environment as the script sees it, Python's and C's, then wait
    # for EOF on stdin (so the test can look at the monitor meanwhile).
    name = sys.argv[2].encode()
    getenv = ctypes.CDLL(None).getenv
    getenv.restype = ctypes.c_char_p
    print(json.dumps({{
        "pid": os.getpid(), "ppid": os.getppid(), "sid": os.getsid(0),
        "n": len(os.environb), "py": (os.environb.get(name) or b"").decode(),
        "c": (getenv(name) or b"").decode(), "argv": sys.argv[1:],
    }}), flush=True)
    sys.stdin.read()
    sys.exit(0)
"""


#: Where the fake fixture's server logs, in the test's directory.
LOG_NAME = "server.log"


def _read_log(path: Path) -> str:
    try:
        return path.read_text()
    except FileNotFoundError:
        return ""


@pytest.fixture
def fake(tmp_path):
    """A server started by FakeClient, with max_servers=1, its log in a file."""
    script = tmp_path / "script.py"
    script.write_text(FAKE_SCRIPT.format(init="max_servers=1, " + log_to(tmp_path / LOG_NAME)))
    client = FakeClient(tmp_path, script)
    try:
        status, out = client.call(client.first_call, b"exit", b"0")
        assert status == 0
        client.servers.append(int(out.split()[1]))
        yield client
    finally:
        client.close()


def _argv(fake: FakeClient, *args: bytes) -> List[bytes]:
    return [PYTHON.encode(), fake.script.encode(), *args]


def _greeted(sock: socket.socket, timeout: float = 5) -> None:
    sock.settimeout(timeout)
    assert sock.recv(8, socket.MSG_WAITALL) == GREETING


def _eof_within(sock: socket.socket, seconds: float) -> bool:
    """The server closed ``sock`` (EOF, or a reset if it left bytes unread)
    within ``seconds``."""
    if not select.select([sock], [], [], seconds)[0]:
        return False
    try:
        return sock.recv(1, socket.MSG_DONTWAIT) == b""
    except ConnectionResetError:
        return True


def _vm_hwm(pid: int) -> int:
    """Peak resident set size of a process, in bytes."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmHWM for {pid}")


def _server_socket(harness: Harness) -> str:
    (path,) = harness.run_dir.glob("s*")
    return str(path)


# ---------------------------------------------------------------------------
# Peer check


def _connect_as(uid: int, gid: int, path: str) -> Tuple[int, bytes]:
    """Connect to ``path`` from a child process running as ``uid``; returns
    the child's pid and what it read before EOF (at most the greeting)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(r)
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(5)
                s.connect(path)
                got = s.recv(8, socket.MSG_WAITALL)
            os.write(w, b"read:" + got)
            code = 0
        except BaseException as e:
            os.write(w, f"error: {e!r}".encode())
        finally:
            os._exit(code)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        result = f.read()
    _, status = os.waitpid(pid, 0)
    assert status == 0 and result.startswith(b"read:"), result
    return pid, result[5:]


@pytest.fixture
def other_user():
    """A throwaway user (created with useradd, removed afterwards)."""
    if os.geteuid() != 0:
        pytest.skip("needs root: creates a user to call from another uid")
    name = f"pfi{os.getpid()}{time.monotonic_ns() % 100000}"
    for _ in range(5):  # another test may hold the passwd lock for a moment
        made = subprocess.run(["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", name], capture_output=True)
        if made.returncode == 0:
            break
        time.sleep(0.2)
    else:
        pytest.skip(f"useradd failed: {made.stderr.decode(errors='replace').strip()}")
    try:
        yield pwd.getpwnam(name)
    finally:
        subprocess.run(["userdel", name], capture_output=True)


def test_peer_of_another_uid_is_refused(our_harness, other_user):
    """A caller of another uid reaches the socket (the run directory and the
    socket opened up on purpose: the misconfiguration the check defends
    against) and gets no greeting, only EOF; the server logs one line and
    goes on serving its own user."""
    log = our_harness.dir / "server.log"
    script = our_harness.script("peer.py", 'print("fine")\n', init=log_to(log))
    assert our_harness.run(script).out == b"fine\n"
    path = _server_socket(our_harness)
    os.chmod(our_harness.run_dir, 0o755)
    os.chmod(path, 0o777)
    pid, got = _connect_as(other_user.pw_uid, other_user.pw_gid, path)
    assert got == b"", "no greeting for another uid"
    want = f"refused a call from uid {other_user.pw_uid} (pid {pid}): only uid {os.geteuid()} may call this server"
    wait_until(lambda: want in _read_log(log), 5, "the refusal in the log")
    assert _read_log(log).count("refused a call") == 1
    got2 = our_harness.run(script)
    assert (got2.returncode, got2.out) == (0, b"fine\n"), got2.text()


# ---------------------------------------------------------------------------
# Idle and half-open connections


def _half_open(path: str, null: int, how: int) -> socket.socket:
    """A connection that stops part-way: after the greeting, after the
    signalling byte and the fds, or in the middle of the request body."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(5)
    s.connect(path)
    if how == 0:
        _greeted(s)
    else:
        FakeClient.send_preamble(s, (null, null, null))
    if how >= 2:
        s.sendall(encode_request([(b"A", b"1")], [b"python3", b"/x.py"])[:-5])
    return s


def _median_call_seconds(harness: Harness, script: Path, n: int) -> float:
    times = []
    for _ in range(n):
        got = harness.run(script)
        assert (got.returncode, got.out) == (0, b"fine\n"), got.text()
        times.append(got.seconds)
    return statistics.median(times)


def test_idle_connections_cost_a_call_nothing(harness):
    """50 connections that send nothing or stop part-way hold no monitor
    slot and are read only as bytes arrive: a real call takes as long with
    them as without (the reference took seconds, waiting for slots)."""
    script = harness.script("fast.py", 'print("fine")\n')
    harness.run(script)
    path = listening_socket(harness.last_server(), harness.run_dir)  # the C client uses its own run directory
    without = _median_call_seconds(harness, script, 5)
    null = os.open(os.devnull, os.O_RDWR)
    idle: List[socket.socket] = []
    try:
        started = time.monotonic()
        idle = [_half_open(path, null, i % 3) for i in range(50)]
        with_idle = _median_call_seconds(harness, script, 5)
        assert time.monotonic() - started < REQUEST_TIMEOUT, "measured before the idle ones time out"
    finally:
        os.close(null)
        for s in idle:
            s.close()
    print(f"median call: {without * 1000:.1f} ms alone, {with_idle * 1000:.1f} ms with 50 idle connections")
    assert with_idle - without < 0.050


def test_more_connections_than_the_server_holds(our_harness):
    """Beyond 64 held connections each new one drops the oldest that has
    not finished its handshake, and a real call still gets through."""
    script = our_harness.script("fast.py", 'print("fine")\n')
    our_harness.run(script)
    path = _server_socket(our_harness)
    extra = 6
    idle: List[socket.socket] = []
    try:
        started = time.monotonic()
        for _ in range(MAX_HELD + extra):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(path)
            _greeted(s, timeout=2)  # greeted at once, every one of them
            idle.append(s)
        got = our_harness.run(script)
        assert (got.returncode, got.out) == (0, b"fine\n"), got.text()
        # The real call took one more place: extra + 1 of the oldest gone.
        dropped = [i for i, s in enumerate(idle) if _eof_within(s, 0.5 if i <= extra else 0)]
        assert time.monotonic() - started < REQUEST_TIMEOUT, "checked before the idle ones time out"
        assert dropped == list(range(extra + 1))
    finally:
        for s in idle:
            s.close()


def test_first_call_is_taken_in_like_the_others(tmp_path):
    """The first call's socket (CALL) is read by the server loop like any
    other: left idle, it holds no slot (max_servers=1 here), and it is
    dropped after the request timeout."""
    script = tmp_path / "script.py"
    script.write_text(FAKE_SCRIPT.format(init="max_servers=1, log_facility=None"))
    client = FakeClient(tmp_path, script)
    try:
        _greeted(client.first_call)
        greeted = time.monotonic()
        with client.connect() as sock:
            status, out = client.call(sock, b"exit", b"4")
        assert status == 4 << 8
        client.servers.append(int(out.split()[1]))
        # Had the idle first call held the only slot, this call would have
        # waited for its request timeout.
        assert time.monotonic() - greeted < REQUEST_TIMEOUT - 1, "the idle first call held the only slot"
        assert _eof_within(client.first_call, REQUEST_TIMEOUT + 3)
        assert time.monotonic() - greeted > REQUEST_TIMEOUT - 0.5
    finally:
        client.close()


# ---------------------------------------------------------------------------
# Request size and memory


def test_over_long_length_is_refused_at_once(fake):
    """A length over 6 MiB + 4 KiB: the connection is closed as soon as the
    length is in (the client sees EOF, nothing more is read), a warning is
    logged, and the next call is served."""
    null = os.open(os.devnull, os.O_RDWR)
    try:
        with fake.connect() as sock:
            FakeClient.send_preamble(sock, (null, null, null))
            sent = time.monotonic()
            sock.sendall(U32_BE.pack(MAX_REQUEST_LEN + 1))
            # Not waiting for a body: EOF well before the request timeout.
            assert _eof_within(sock, REQUEST_TIMEOUT - 1)
            assert time.monotonic() - sent < REQUEST_TIMEOUT - 1
    finally:
        os.close(null)
    want = f"bad request from client: request length {MAX_REQUEST_LEN + 1} is over the {MAX_REQUEST_LEN} byte limit"
    wait_until(lambda: want in _read_log(fake.dir / LOG_NAME), 5, "the refusal in the log")
    with fake.connect() as sock:
        assert fake.call(sock, b"exit", b"3")[0] == 3 << 8


def _environment_of_size(size: int, distinct: bool) -> Tuple[bytes, bytes, bytes]:
    """Environment entries of exactly ``size`` bytes (NULs included), nearly
    all as short as can be: ``A=`` again and again after a first ``A=first``,
    or distinct 4-letter names and a last ``LAST=yyy...``.  Returns the
    entries, a name to look up and the value the script must see for it."""
    if not distinct:
        count, spare = divmod(size - len(b"A=first\0"), 3)
        value = b"first" + b"x" * spare
        return b"A=" + value + b"\0" + b"A=\0" * count, b"A", value
    count = size // 6 - 2
    names = ("".join(letters) for letters in itertools.product(string.ascii_letters, repeat=4))
    entries = b"".join(name.encode() + b"=\0" for _, name in zip(range(count), names))
    value = b"y" * (size - len(entries) - len(b"LAST=\0"))
    return entries + b"LAST=" + value + b"\0", b"LAST", value


#: First entry of the big requests: a locale, so that the executor has no
#: reason to add LC_CTYPE (PEP 538 coercion, as a direct run would).
LOCALE_ENTRY = b"LC_CTYPE=C.UTF-8\0"


def _request_of_size(size: int, argv: List[bytes], distinct: bool) -> Tuple[bytes, bytes, bytes]:
    """A request body of exactly ``size`` bytes for ``argv``: LOCALE_ENTRY,
    environment (see _environment_of_size), empty string, arguments."""
    args = b"".join(arg + b"\0" for arg in argv)
    env, name, value = _environment_of_size(size - len(LOCALE_ENTRY) - 1 - len(args), distinct)
    body = LOCALE_ENTRY + env + b"\0" + args
    assert len(body) == size
    return body, name, value


@pytest.mark.parametrize("distinct", [False, True], ids=["A= repeated", "distinct names"])
def test_maximal_request_is_served_within_memory_bound(fake, distinct):
    """A request of exactly 6 MiB + 4 KiB of 2-byte environment entries is
    served; the server and the monitor hold it as one buffer (their peak
    RSS grows by at most 3 times its size) and the executor applies it in
    linear time (the environment as the script sees it, in Python and C)."""
    server = fake.servers[0]
    name = b"LAST" if distinct else b"A"
    body, name, value = _request_of_size(MAX_REQUEST_LEN, _argv(fake, b"report-then-wait", name), distinct)
    names = 1 + (body.count(b"=\0") + 1 if distinct else 1)  # LC_CTYPE, then A or every name
    baseline = _vm_hwm(server)
    in_r, in_w = os.pipe()
    out_r, out_w = os.pipe()
    null = os.open(os.devnull, os.O_RDWR)
    sock = fake.connect()
    try:
        FakeClient.send_preamble(sock, (in_r, out_w, null))
        sent = time.monotonic()
        sock.sendall(U32_BE.pack(len(body)) + body)
        del body
        seen = json.loads(read_until(out_r, b"}\n", 60))
        served = time.monotonic() - sent
        assert (seen["n"], seen["argv"]) == (names, ["report-then-wait", name.decode()])
        assert seen["py"] == seen["c"] == value.decode(), "os.environ and the C environment agree"
        server_growth = _vm_hwm(server) - baseline
        monitor_growth = _vm_hwm(seen["ppid"]) - baseline
        print(
            f"maximal request ({'distinct names' if distinct else 'A= repeated'}): served in {served:.2f} s;"
            f" peak RSS growth: server {server_growth / 2**20:.1f} MiB, monitor {monitor_growth / 2**20:.1f} MiB"
            f" (request {MAX_REQUEST_LEN / 2**20:.2f} MiB)"
        )
        assert server_growth <= 3 * MAX_REQUEST_LEN
        assert monitor_growth <= 3 * MAX_REQUEST_LEN
        assert served < 30
        os.close(in_w)
        in_w = -1
        sock.settimeout(30)
        assert sock.recv(4, socket.MSG_WAITALL) == b"\0\0\0\0"
    finally:
        sock.close()
        for fd in (in_r, in_w, out_r, out_w, null):
            if fd >= 0:
                os.close(fd)


def test_oversized_request_is_refused(fake):
    """A well-formed request one byte over the limit: refused at the length
    while the client is still sending the body; the server goes on."""
    body, _, _ = _request_of_size(MAX_REQUEST_LEN + 1, _argv(fake, b"exit", b"0"), distinct=False)
    null = os.open(os.devnull, os.O_RDWR)
    try:
        with fake.connect() as sock:
            FakeClient.send_preamble(sock, (null, null, null))
            sock.settimeout(10)
            with pytest.raises((BrokenPipeError, ConnectionResetError)):
                sock.sendall(U32_BE.pack(len(body)) + body)
    finally:
        os.close(null)
    with fake.connect() as sock:
        assert fake.call(sock, b"exit", b"2")[0] == 2 << 8


# ---------------------------------------------------------------------------
# Slots


def test_complete_call_waits_for_a_slot(fake):
    """max_servers=1 and a call running: a new caller is greeted at once,
    its complete call waits in the server (no monitor for it), and it runs
    as soon as the running call ends."""
    server = fake.servers[0]
    first_in_r, first_in_w = os.pipe()
    first_out_r, first_out_w = os.pipe()
    null = os.open(os.devnull, os.O_RDWR)
    first = fake.connect()
    second = fake.connect()
    second_out_r, second_out_w = os.pipe()
    try:
        FakeClient.send_preamble(first, (first_in_r, first_out_w, null))
        first.sendall(encode_request([], _argv(fake, b"report-then-wait", b"A")))
        read_until(first_out_r, b"}\n", 10)
        in_session = lambda: sorted(p.pid for p in alive(lambda p: p.sid == server))  # noqa: E731
        # The server has a new spare made once it has handed the call over.
        wait_until(lambda: len(in_session()) == 2 + DEFAULT_POOL_SIZE + server_helpers(), 5, "the server, the first call's executor and the spares")
        running = in_session()

        second.settimeout(1)  # greeted at once, though the only slot is busy
        FakeClient.send_preamble(second, (null, second_out_w, null))
        second.sendall(encode_request([], _argv(fake, b"exit", b"5")))
        time.sleep(0.5)
        assert in_session() == running, "the complete call waits without a monitor"
        assert not select.select([second_out_r], [], [], 0)[0], "and has not run"

        os.close(first_in_w)
        first_in_w = -1
        first.settimeout(10)
        assert first.recv(4, socket.MSG_WAITALL) == b"\0\0\0\0"
        second.settimeout(10)
        assert second.recv(4, socket.MSG_WAITALL) == U32_BE.pack(5 << 8)
        assert read_until(second_out_r, b"\n", 5).startswith(b"sid ")
    finally:
        for fd in (first_in_r, first_out_w, second_out_w, null):
            os.close(fd)
        for fd in (first_in_w, first_out_r, second_out_r):
            if fd >= 0:
                os.close(fd)
        first.close()
        second.close()


def test_waiting_call_of_a_caller_gone_is_dropped(fake):
    """A complete call waiting for a slot whose caller hangs up is dropped
    by the server: it never runs."""
    in_r, in_w = os.pipe()
    out_r, out_w = os.pipe()
    late_r, late_w = os.pipe()
    null = os.open(os.devnull, os.O_RDWR)
    first = fake.connect()
    try:
        FakeClient.send_preamble(first, (in_r, out_w, null))
        first.sendall(encode_request([], _argv(fake, b"report-then-wait", b"A")))
        read_until(out_r, b"}\n", 10)
        with fake.connect() as late:
            FakeClient.send_preamble(late, (null, late_w, null))
            late.sendall(encode_request([], _argv(fake, b"exit", b"0")))
            os.close(late_w)
            late_w = -1
            time.sleep(0.3)  # complete, and waiting: max_servers=1
        time.sleep(0.3)  # the server sees the hang-up
        os.close(in_w)
        in_w = -1
        first.settimeout(10)
        assert first.recv(4, socket.MSG_WAITALL) == b"\0\0\0\0"
        assert select.select([late_r], [], [], 5)[0], "the server lets go of the late caller's stdout"
        assert os.read(late_r, 100) == b"", "the late call never ran"
    finally:
        first.close()
        for fd in (in_r, in_w, out_r, out_w, late_r, late_w, null):
            if fd >= 0:
                os.close(fd)


# ---------------------------------------------------------------------------
# Quitting


#: A script for quitting with calls held: "wait" writes STARTED_FILE and
#: runs until its stdin closes; "exit N" prints its session and exits N.
QUIT_BODY = """\
if sys.argv[1] == "wait":
    with open(os.environ["STARTED_FILE"], "w") as f:
        f.write(str(os.getpid()))
    sys.stdin.read()
    sys.exit(3)
print("sid", os.getsid(0), flush=True)
sys.exit(int(sys.argv[2]))
"""


def test_quitting_serves_waiting_calls_and_unfinished_handshakes(our_harness):
    """max_servers=1, call A running, caller B's complete call waiting, and
    caller C greeted with only part of its request sent; then ``--kill``.
    The listener is closed at once (a connection to it is refused), but
    every caller already greeted is served: B with its own exit status once
    A ends, then C, which completes its request afterwards (within its
    request timeout).  The server then exits, leaving no process."""
    harness = our_harness
    # C's request is held over from before the quit to well after it.
    request_timeout = 30
    script = harness.script("quit.py", QUIT_BODY, init=f"max_servers=1, request_timeout={request_timeout}")
    warm = harness.run(script, "exit", "0")
    assert warm.returncode == 0, warm.text()
    server = harness.last_server()
    path = _server_socket(harness)
    started = harness.dir / "started"
    env = [(k.encode(), v.encode()) for k, v in harness.env().items()]
    null = os.open(os.devnull, os.O_RDWR)
    b_out_r, b_out_w = os.pipe()
    c_out_r, c_out_w = os.pipe()
    handle = os.open(path, os.O_PATH)  # reaches the socket after --kill removes it
    b = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        a = harness.popen(script, "wait", env={"STARTED_FILE": str(started)}, stdin=subprocess.PIPE,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        wait_until(lambda: started.exists() and started.read_text(), 10, "call A to start")
        in_session = lambda: sorted(p.pid for p in alive(lambda p: p.sid == server))  # noqa: E731
        # The server has a new spare made once it has handed call A over.
        wait_until(lambda: len(in_session()) == 2 + DEFAULT_POOL_SIZE + server_helpers(), 5, "the server, A's executor and the spares")
        running = in_session()

        b.settimeout(5)
        b.connect(path)
        FakeClient.send_preamble(b, (null, b_out_w, null))
        b.sendall(encode_request(env, [PYTHON.encode(), str(script).encode(), b"exit", b"5"]))
        c.settimeout(5)
        c.connect(path)
        c_accepted = time.monotonic()
        FakeClient.send_preamble(c, (null, c_out_w, null))
        c_request = encode_request(env, [PYTHON.encode(), str(script).encode(), b"exit", b"6"])
        c.sendall(c_request[:-5])
        time.sleep(0.5)  # B complete and waiting for the slot, C part-way
        assert in_session() == running, "B waits without a monitor"

        killed = time.monotonic()
        harness.kill_server(script)
        # Our client waits up to 5 s for the old listener to close.
        assert time.monotonic() - killed < 4.5, "--kill returns as soon as the listener is closed"
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as late:
            with pytest.raises(ConnectionRefusedError):
                late.connect(f"/proc/self/fd/{handle}")
        assert a.poll() is None, "A still runs"
        assert not select.select([b, c], [], [], 0.3)[0], "B and C are still held, not dropped nor served"

        a.stdin.close()
        assert a.wait(timeout=10) == 3, a.stderr.read()
        assert b.recv(4, socket.MSG_WAITALL) == U32_BE.pack(5 << 8), "B served after A, with its status"
        assert read_until(b_out_r, b"\n", 5) == f"sid {server}\n".encode()
        assert not select.select([c], [], [], 0.3)[0], "C, unfinished, is not served nor dropped"

        c.sendall(c_request[-5:])
        assert c.recv(4, socket.MSG_WAITALL) == U32_BE.pack(6 << 8), "C served once its request is complete"
        assert read_until(c_out_r, b"\n", 5) == f"sid {server}\n".encode()
        assert time.monotonic() - c_accepted < request_timeout, "all within C's request timeout"

        wait_until(lambda: not alive(lambda p: p.sid == server), 5, "the server and its monitors to exit")
    finally:
        b.close()
        c.close()
        for fd in (null, b_out_r, b_out_w, c_out_r, c_out_w, handle):
            os.close(fd)


# ---------------------------------------------------------------------------
# The executor dies with its monitor


SLEEPER = """\
import time
with open(os.environ["STARTED_FILE"], "w") as f:
    f.write(f"{os.getpid()} {os.getppid()}")
time.sleep(60)
"""


def test_sigkill_of_the_monitor_kills_its_executor(harness):
    """A monitor killed by anyone never leaves its call running with the
    caller's stdio: the executor is gone within a second, and the client
    returns."""
    script = harness.script("sleeper.py", SLEEPER)
    started = harness.dir / "started"
    caller = harness.popen(script, env={"STARTED_FILE": str(started)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_until(lambda: started.exists() and started.read_text(), 10, "the call to start")
    executor, monitor = map(int, started.read_text().split())
    os.kill(monitor, signal.SIGKILL)
    killed = time.monotonic()
    wait_until(lambda: not alive(lambda p: p.pid == executor), 1, "the executor to die with its monitor")
    print(f"executor gone {1000 * (time.monotonic() - killed):.0f} ms after its monitor")
    _, err = caller.communicate(timeout=10)
    assert caller.returncode != 0, err
