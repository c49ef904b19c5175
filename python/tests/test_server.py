"""The server's life: reloading, concurrency limit, idle timeout, callers
that go away, bad clients, error counting, stdio buffers across forks."""

from __future__ import annotations

import os
import signal
import socket
import time

import pytest
from harness import alive, listening_socket, only_server_and_spares, send_fds, wait_until

from prefork_interp import _forker
from prefork_interp._options import DEFAULT_REQUEST_TIMEOUT as REQUEST_TIMEOUT
from prefork_interp._options import DEFAULT_POOL_SIZE
from prefork_interp._protocol import GREETING, encode_request

NO_PYTHONUNBUFFERED = {"PYTHONUNBUFFERED": None}


def _server_gone(sid: int) -> bool:
    return not alive(lambda p: p.pid == sid)


# ---------------------------------------------------------------------------
# Reloading


def test_reload_after_editing_the_script(harness):
    script = harness.script("edit.py", 'print("version 1")\n')
    assert harness.run(script).out == b"version 1\n"
    assert harness.run(script).out == b"version 1\n"
    first = harness.last_server()
    harness.script("edit.py", 'print("version 2")\n')
    got = harness.run(script)
    assert got.out == b"version 2\n", got.text()
    second = harness.last_server()
    assert second != first
    wait_until(lambda: _server_gone(first), 5, "the stale server to quit")
    assert harness.run(script).out == b"version 2\n"
    assert harness.last_server() == second


def test_reload_after_touching_an_imported_module(harness):
    module = harness.module("helper.py", "VALUE = 1\n")
    script = harness.script("uses_helper.py", "print(helper.VALUE)\n", setup="import helper\n")
    assert harness.run(script).out == b"1\n"
    first = harness.last_server()
    os.utime(module)
    assert harness.run(script).out == b"1\n"
    assert harness.last_server() != first
    second = harness.last_server()
    module.write_text("VALUE = 2\n")
    assert harness.run(script).out == b"2\n"
    assert harness.last_server() != second


def test_no_module_reload_without_autoreload(harness):
    module = harness.module("helper.py", "VALUE = 1\n")
    script = harness.script("uses_helper.py", "print(helper.VALUE)\n", setup="import helper\n", init="autoreload=False")
    harness.run(script)
    first = harness.last_server()
    module.write_text("VALUE = 2\n")
    assert harness.run(script).out == b"1\n", "modules are not checked with autoreload=False"
    assert harness.last_server() == first
    os.utime(script)
    assert harness.run(script).out == b"2\n", "the script itself is always checked"
    assert harness.last_server() != first


@pytest.mark.parametrize("how", ["option", "function"])
def test_reload_after_touching_an_extra_file(harness, how):
    data = harness.dir / "data.txt"
    data.write_text("a\n")
    missing = harness.dir / "does-not-exist"
    if how == "option":
        setup, init = "", f"autoreload_extra=[{str(data)!r}, {str(missing)!r}]"
    else:
        setup, init = f"prefork_interp.autoreload_also_check({str(data)!r}, {str(missing)!r})\n", ""
    script = harness.script("extra.py", f"print(open({str(data)!r}).read(), end='')\n", setup="import prefork_interp\n" + setup, init=init)
    assert harness.run(script).out == b"a\n"
    assert harness.run(script).out == b"a\n"
    first = harness.last_server()
    data.write_text("b\n")
    assert harness.run(script).out == b"b\n"
    assert harness.last_server() != first


# ---------------------------------------------------------------------------
# Concurrency, idle timeout, callers going away


CONCURRENT_BODY = """\
import time
started = time.monotonic()
time.sleep(0.3)
print(started, time.monotonic())
"""


def _run_together(harness, script, n: int) -> list:
    """Start ``n`` calls of a CONCURRENT_BODY script at once: the (start,
    end) time each printed."""
    calls = [harness.popen(script, stdout=-1, stderr=-1) for _ in range(n)]
    intervals = []
    for p in calls:
        out, err = p.communicate(timeout=30)
        assert p.returncode == 0, err
        start, end = map(float, out.split())
        intervals.append((start, end))
    return intervals


def test_a_spare_whose_rehearsal_fails_still_serves_calls(harness):
    # The server's environment names a codec that does not exist, so each
    # spare's rehearsal of a call (streams made with the server's settings,
    # _executor.warm_up) fails.  The calls themselves have the caller's
    # environment: they are served, warm, by the same server.
    script = harness.script(
        "bad_rehearsal.py",
        'print("served", flush=True)\n',
        setup='import os\nos.environ["PYTHONIOENCODING"] = "no-such-codec"\n',
    )
    assert harness.run(script).out == b"served\n"
    server = harness.last_server()
    for _ in range(2 * DEFAULT_POOL_SIZE + 1):
        got = harness.run(script)
        assert got.out == b"served\n", got.text()
        assert harness.last_server() == server


FORKS_SETUP = """\
def _note_fork():
    # In the server (a session leader), after each fork it makes itself.
    if os.getsid(0) == os.getpid():
        with open(os.environ["FORKS_FILE"], "a") as f:
            f.write(f"{os.getpid()}\\n")

os.register_at_fork(after_in_parent=_note_fork)
"""

needs_forker = pytest.mark.skipif(
    not _forker.available(), reason="no forker here (CPython on glibc 2.34 or later, on x86_64, aarch64 or riscv64)"
)


def _cmdline(pid: int) -> bytes:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return f.read()


def _server_forks(harness, script, path, calls: int) -> int:
    """Make ``calls`` calls; how many forks the last one's server has made
    itself."""
    for _ in range(calls):
        got = harness.run(script, env={"FORKS_FILE": str(path)})
        assert got.out == b"served\n", got.text()
    return path.read_text().split().count(str(harness.last_server())) if path.exists() else 0


@needs_forker
def test_the_forker_makes_the_spares_the_server_never_forks(harness, tmp_path):
    """The server forks once, the forker (``_forker``), which makes every
    spare; each spare is the server's child all the same (clone with
    CLONE_PARENT), and calls are served as ever."""
    forks = tmp_path / "forks"
    script = harness.script("forked.py", 'print("served", flush=True)\n', setup=FORKS_SETUP)
    _server_forks(harness, script, forks, 1)
    server = harness.last_server()
    wait_until(lambda: only_server_and_spares(server), 5, "the forker and the spares")
    # The forker; and with the C client, whose first call the server takes
    # in before it has a spare, that call's executor.
    before = _server_forks(harness, script, forks, 0)
    assert before in (1, 2)
    assert _server_forks(harness, script, forks, 3 * DEFAULT_POOL_SIZE) == before, "no fork by the server"
    assert harness.last_server() == server
    # (A spare just made shows the forker's title until it sets its own.)
    titles = lambda: sorted(_cmdline(p.pid).split(b":")[0] for p in alive(lambda p: p.sid == server and p.pid != server))  # noqa: E731
    expected = [b"prefork-interp forker"] + [b"prefork-interp spare"] * DEFAULT_POOL_SIZE
    wait_until(lambda: titles() == expected, 5, f"the forker and the spares, titled so: {titles()}")


@needs_forker
def test_calls_beyond_the_spares_wait_for_the_forker_not_a_fork(harness, tmp_path):
    """More calls at once than spares: the forker makes the executors of
    the others too (the server's pool is empty meanwhile); the server
    still forks nothing."""
    forks = tmp_path / "forks"
    script = harness.script("burst.py", 'time.sleep(0.2)\nprint("served", flush=True)\n', setup="import time\n" + FORKS_SETUP)
    _server_forks(harness, script, forks, 2)
    server = harness.last_server()
    wait_until(lambda: only_server_and_spares(server), 5, "the forker and the spares")
    before = _server_forks(harness, script, forks, 0)
    calls = [harness.popen(script, env={"FORKS_FILE": str(forks)}, stdout=-1, stderr=-1) for _ in range(3 * DEFAULT_POOL_SIZE)]
    for p in calls:
        out, err = p.communicate(timeout=30)
        assert (p.returncode, out) == (0, b"served\n"), err
    assert harness.last_server() == server
    assert _server_forks(harness, script, forks, 0) == before, "no fork by the server"


@needs_forker
def test_without_its_forker_the_server_forks_its_spares_itself(harness, tmp_path):
    forks = tmp_path / "forks"
    script = harness.script("forkless.py", 'print("served", flush=True)\n', setup=FORKS_SETUP)
    _server_forks(harness, script, forks, 2)
    server = harness.last_server()
    wait_until(lambda: only_server_and_spares(server), 5, "the spares")
    # (A spare just made shows the forker's title until it sets its own.)
    forkers = lambda: [p.pid for p in alive(lambda p: p.ppid == server and _cmdline(p.pid).startswith(b"prefork-interp forker:"))]  # noqa: E731
    wait_until(lambda: len(forkers()) == 1, 5, "one forker")
    (forker,) = forkers()
    os.kill(forker, signal.SIGKILL)
    assert _server_forks(harness, script, forks, 2 * DEFAULT_POOL_SIZE) > 1
    assert harness.last_server() == server, "the same server serves on"
    wait_until(lambda: len(alive(lambda p: p.ppid == server)) == DEFAULT_POOL_SIZE, 5, "the spares, forked by the server")
    if harness.first_call_in_place:
        # Our client names the run directory, where the log falls back to
        # (the C client's server logs to syslog).
        assert b"the forker of spares" in (harness.run_dir / "log").read_bytes()


def test_max_servers_reached_callers_wait(harness):
    script = harness.script("busy.py", CONCURRENT_BODY, init="max_servers=2")
    assert harness.run(script).returncode == 0
    intervals = _run_together(harness, script, 8)
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    running = most = 0
    for _, delta in events:
        running += delta
        most = max(most, running)
    assert most == 2, f"{most} calls ran at once with max_servers=2"
    assert len(harness.sessions()) == 1


def test_by_default_eight_callers_run_at_once(harness):
    """The default limit comes from the machine (8 per CPU, so at least 8):
    8 callers at once all run at once, as direct runs would."""
    # Long enough that all 8 have been started before the first ends.
    script = harness.script("busy8.py", CONCURRENT_BODY.replace("time.sleep(0.3)", "time.sleep(4)"))
    assert harness.run(script).returncode == 0
    intervals = _run_together(harness, script, 8)
    # Every call started before any ended: all 8 ran at once.
    assert max(start for start, _ in intervals) < min(end for _, end in intervals), intervals


SLEEPER_BODY = """\
import time
with open(os.environ["STARTED_FILE"], "w") as f:
    f.write("started")
time.sleep(float(sys.argv[1]))
print("done")
"""


def test_caller_killed_mid_cold_call_leaves_no_process(harness):
    # The first call runs in place, in the client's child (protocol.md
    # section 7), which gets SIGINT when the client dies, as a served
    # call's group does.
    if not harness.first_call_in_place:
        pytest.skip("the C client has the server serve the first call")
    script = harness.script("sleeper.py", SLEEPER_BODY)
    started = harness.dir / "started"
    env = {"STARTED_FILE": str(started)}
    caller = harness.popen(script, "60", env=env, stdout=-1, stderr=-1)
    wait_until(started.exists, 10, "the call to start")
    executor, group, server = harness.executors()[-1]
    assert group == executor != os.getpgid(0), "the first call should lead a process group of its own"
    caller.kill()
    caller.wait()
    wait_until(lambda: not alive(lambda p: p.pid == executor), 10, "the first call to end")
    assert not _server_gone(server), "the server should keep running"
    started.unlink()
    got = harness.run(script, "0", env=env)
    assert got.out == b"done\n", got.text()
    assert harness.last_server() == server


def test_caller_killed_mid_call_leaves_no_process(harness):
    script = harness.script("sleeper.py", SLEEPER_BODY)
    started = harness.dir / "started"
    env = {"STARTED_FILE": str(started)}
    assert harness.run(script, "0", env=env).returncode == 0  # the cold call runs in place
    started.unlink()
    caller = harness.popen(script, "60", env=env, stdout=-1, stderr=-1)
    wait_until(started.exists, 10, "the call to start")
    executor, group, server = harness.executors()[-1]
    assert group == executor != server, "the executor should lead a process group of its own"
    assert alive(lambda p: p.pgid == group)
    caller.kill()
    caller.wait()
    wait_until(lambda: not alive(lambda p: p.pgid == group), 10, "the call's process group to empty")
    assert not _server_gone(server), "the server should keep running"
    started.unlink()
    got = harness.run(script, "0", env=env)
    assert got.out == b"done\n", got.text()
    assert harness.last_server() == server


def test_idle_timeout(harness):
    script = harness.script("idle.py", SLEEPER_BODY, init="idle_timeout=1")
    env = {"STARTED_FILE": str(harness.dir / "started")}
    # A call longer than the idle timeout does not count as idle time, the
    # first one included, which our client's setup process runs in place.
    assert harness.run(script, "1.5", env=env).out == b"done\n"
    assert harness.run(script, "0", env=env).returncode == 0
    first = harness.last_server()
    assert len(harness.sessions()) == 1
    wait_until(lambda: _server_gone(first), 5, "the idle server to quit")
    assert harness.run(script, "0", env=env).out == b"done\n"
    assert harness.last_server() != first


# ---------------------------------------------------------------------------
# Bad clients


def _connect(path: str) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(path)
    return s


def test_server_survives_bad_clients(harness):
    script = harness.script("ok.py", 'print("fine")\n')
    assert harness.run(script).returncode == 0
    server = harness.last_server()
    path = listening_socket(server, harness.run_dir)
    null = os.open(os.devnull, os.O_RDWR)
    try:
        bad_clients = [
            lambda s: None,  # hang up at once
            lambda s: s.sendall(b"\x01garbage"),  # wrong signalling byte
            lambda s: s.sendall(b"\0"),  # hang up before the fds
            lambda s: (s.sendall(b"\0"), send_fds(s, [null])),  # after one fd
            lambda s: (s.sendall(b"\0"), send_fds(s, [null, null])),  # two fds in one message
            lambda s: (s.sendall(b"\0"), *(send_fds(s, [null]) for _ in range(3)), s.sendall(b"\xff\xff\xff\xff")),
            lambda s: (s.sendall(b"\0"), *(send_fds(s, [null]) for _ in range(3)), s.sendall(encode_request([], [b"x"])[:-3])),
            lambda s: (s.sendall(b"\0"), *(send_fds(s, [null]) for _ in range(3)), s.sendall(b"\0\0\0\2ab")),
        ]
        for behave in bad_clients:
            with _connect(path) as s:
                assert s.recv(8, socket.MSG_WAITALL) == GREETING
                behave(s)
        for _ in range(3):
            got = harness.run(script)
            assert (got.returncode, got.out) == (0, b"fine\n"), got.text()
    finally:
        os.close(null)
    assert harness.last_server() == server
    # Every executor of the bad clients has gone; the server and its idle
    # spares are left.
    wait_until(lambda: only_server_and_spares(server), 10, "bad clients' executors to exit")


def test_idle_connections_are_dropped_after_the_request_timeout(harness):
    """Connections that never send a request hold no monitor slot, so a call
    goes through at once, and each is dropped (EOF) the request timeout
    after its acceptance (protocol.md section 4.1)."""
    script = harness.script("ok.py", 'print("fine")\n', init="max_servers=2")
    assert harness.run(script).returncode == 0
    path = listening_socket(harness.last_server(), harness.run_dir)
    idle = [_connect(path) for _ in range(2)]
    try:
        for s in idle:
            assert s.recv(8, socket.MSG_WAITALL) == GREETING
        greeted = time.monotonic()
        got = harness.run(script, timeout=30)
        assert (got.returncode, got.out) == (0, b"fine\n"), got.text()
        assert got.seconds < 2, "idle connections must not hold the slots"
        for s in idle:
            assert s.recv(1) == b"", "an idle connection is closed without a word"
        waited = time.monotonic() - greeted
        assert REQUEST_TIMEOUT - 0.5 < waited < REQUEST_TIMEOUT + 3
    finally:
        for s in idle:
            s.close()


MAX_ERRORS_SETUP = """\
import resource
import socket

_accept = socket.socket.accept
_accepts = [0]

def _accept_then_fail(self):
    # In the server (a session leader), from its second accept() on (the
    # third call; the first came on CALL or ran in place): leave it no fds,
    # so that every accept() fails with EMFILE.
    if os.getsid(0) == os.getpid():
        _accepts[0] += 1
        if _accepts[0] == 2:
            resource.setrlimit(resource.RLIMIT_NOFILE, (3, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
    return _accept(self)

socket.socket.accept = _accept_then_fail
"""


def test_max_errors_makes_a_failing_server_quit(harness):
    """accept() failing again and again: the server counts the errors and
    quits after max_errors; the waiting caller then starts a new server."""
    script = harness.script("failing.py", 'print("fine")\n', setup=MAX_ERRORS_SETUP, init="max_errors=5")
    assert harness.run(script).returncode == 0
    assert harness.run(script).returncode == 0
    first = harness.last_server()
    got = harness.run(script, timeout=30)
    assert (got.returncode, got.out) == (0, b"fine\n"), got.text()
    assert harness.last_server() != first
    wait_until(lambda: _server_gone(first), 5, "the failing server to quit")


# ---------------------------------------------------------------------------
# Output and set-up


def test_no_output_duplicated_or_lost(harness):
    """Output still buffered when initialisation_complete() forks is
    written once (to the first caller's stderr, where the set-up's stdout
    goes), never again by the server, monitors or executors."""
    setup = 'print("MARK-OUT", end="")\nsys.stderr.write("MARK-ERR")\n'
    script = harness.script("buffered.py", 'print("call", end="")\n', setup=setup)
    results = [harness.run(script, env=NO_PYTHONUNBUFFERED) for _ in range(3)]
    everything = b"".join(r.out + r.err for r in results)
    assert everything.count(b"MARK-OUT") == 1, [r.text() for r in results]
    assert everything.count(b"MARK-ERR") == 1, [r.text() for r in results]
    assert b"MARK-OUT" in results[0].err and b"MARK-ERR" in results[0].err
    for r in results:
        assert r.out == b"call", r.text()


def test_threads_running_at_initialisation(harness):
    setup = "import threading, time\nthreading.Thread(target=time.sleep, args=(0.5,), daemon=True).start()\n"
    script = harness.script("threads.py", 'print("never")\n', setup=setup)
    got = harness.run(script)
    assert got.returncode == 1, got.text()
    assert b"other threads are running" in got.err
    assert got.out == b""


def test_sigint_is_pythons_default_in_the_executor(harness):
    """SIGINT is Python's default_int_handler, as in a direct run (the
    server's handlers are not the script's): SIGINT raises
    KeyboardInterrupt, and an uncaught one ends the call by SIGINT, with
    the same traceback as a direct run."""
    body = (
        "print(signal.getsignal(signal.SIGINT) is signal.default_int_handler, flush=True)\n"
        "os.kill(os.getpid(), signal.SIGINT)\n"
        "print('not reached')\n"
    )
    script = harness.script("sigint.py", body, setup="import signal\nsignal.signal(signal.SIGTERM, lambda *a: None)\n")
    got = harness.run(script, env=NO_PYTHONUNBUFFERED)
    want = harness.direct(script, env=NO_PYTHONUNBUFFERED)
    assert got.returncode == want.returncode == -signal.SIGINT, got.text()
    assert got.out == want.out == b"True\n"
    assert got.err.splitlines()[-1] == want.err.splitlines()[-1] == b"KeyboardInterrupt", got.text()


def test_script_signal_handlers_survive(harness):
    body = "print(signal.getsignal(signal.SIGTERM) is handler, signal.getsignal(signal.SIGCHLD) == signal.SIG_DFL)\n"
    setup = "import signal\ndef handler(*a): pass\nsignal.signal(signal.SIGTERM, handler)\n"
    script = harness.script("handlers.py", body, setup=setup)
    got = harness.run(script)
    assert got.out == b"True True\n", got.text()


def test_many_calls_keep_the_server_steady(harness):
    """No fds leak in the server, and its children are all reaped."""
    script = harness.script("steady.py", "pass\n")
    harness.run(script)
    harness.run(script)  # the first served call (ours runs the first in place)
    server = harness.last_server()
    fds = lambda: len(os.listdir(f"/proc/{server}/fd"))  # noqa: E731
    # The server closes a call's socket just after sending its status.
    wait_until(lambda: only_server_and_spares(server), 5, "executors to be reaped")
    time.sleep(0.2)
    before = fds()
    for _ in range(30):
        assert harness.run(script).returncode == 0
    wait_until(lambda: only_server_and_spares(server), 5, "executors to be reaped")
    wait_until(lambda: fds() == before, 5, f"the server's fds to be {before} again")


def test_a_call_for_a_spare_gone_goes_to_the_next(tmp_path):
    """A spare that has died (the OOM killer, say) but is not reaped yet
    is passed over at the handover: the call goes to the next spare,
    whole, and the one gone is killed and awaited as leaving, not taken
    for a stranger when it is reaped."""
    import struct
    import subprocess
    import sys

    from prefork_interp._executors import _HEADER, Executors, _Spare
    from prefork_interp._intake import Call
    from prefork_interp._log import Log
    from prefork_interp._protocol import parse_request

    gone = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    next_one = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    gone_ours, gone_theirs = socket.socketpair()
    next_ours, next_theirs = socket.socketpair()
    call_ours, call_theirs = socket.socketpair()
    gone_theirs.close()  # what a spare's death does to its end
    stdio = [os.open(os.devnull, os.O_RDWR) for _ in range(3)]
    log_file = tmp_path / "log"
    handed = False
    try:
        executors = Executors(2, Log("x.py", None, str(log_file)), lambda: None)
        executors.spares = [_Spare(gone.pid, gone_ours), _Spare(next_one.pid, next_ours)]
        request = parse_request(encode_request([(b"A", b"b")], [b"python3", b"x.py", b"arg"])[4:])
        assert executors.start(Call(call_ours, stdio, request)) is None, "the server's side"
        handed = True  # (start closed our copies of the stdio fds)
        assert list(executors.running) == [next_one.pid] and not executors.spares
        next_theirs.settimeout(30)
        head, ancillary, _, _ = next_theirs.recvmsg(_HEADER.size, socket.CMSG_SPACE(4 * 4))
        body_len, attrs_len, nfds = _HEADER.unpack(head)
        assert nfds == 4 and body_len == len(request.body), "the whole call went to the next spare"
        received = list(struct.unpack("4i", ancillary[0][2]))
        for fd in received:
            os.close(fd)
        assert executors.leaving == [gone.pid]
        assert gone.wait(timeout=30) == -signal.SIGKILL
        assert executors.child_changed(gone.pid, 9), "reaped as one of ours"
        assert "spare executor [%d] had gone" % gone.pid in log_file.read_text()
    finally:
        for p in (gone, next_one):
            if p.poll() is None:
                p.kill()
            p.wait()
        for sock in (gone_ours, next_ours, next_theirs, call_ours, call_theirs):
            sock.close()
        if not handed:
            for fd in stdio:
                os.close(fd)


def test_a_server_that_quits_ends_quietly(harness):
    """--kill: the server, its forker and its spares end without a word
    above info in the log, the spares and the forker with status 0 (the
    server reaps them: it would log any other status)."""
    log = harness.dir / "quiet.log"
    script = harness.script("quiet.py", 'print("ok")\n', init=f"log_facility=None, log_file={str(log)!r}")
    for _ in range(4):
        assert harness.run(script).out == b"ok\n"
    server = harness.last_server()
    harness.kill_server(script)
    wait_until(lambda: not alive(lambda p: p.sid == server), 10, "the server and its children to end")
    lines = log.read_text().splitlines()
    assert any(" info: " in line and "quitting" in line for line in lines), lines
    assert not [line for line in lines if " info: " not in line and " debug: " not in line], lines
