"""The library against a client written here: exact bytes, and the watcher.

These tests play the client's part themselves (listening socket, first-call
socketpair, watcher pipes, PREFORK_INTERP, then protocol v1 by hand), so
they can do what no real client does on demand: make the watcher report an
error, or vanish.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import textwrap

import pytest
from harness import PACKAGE_ROOT, PYTHON, alive, send_fds, wait_until

from prefork_interp._protocol import GREETING, encode_request

SCRIPT = """\
import os, sys
import prefork_interp
prefork_interp.initialisation_complete(log_facility=None)
print("argv", sys.argv[1:], "sid", os.getsid(0), flush=True)
sys.exit(int(sys.argv[1]))
"""


class FakeClient:
    """Just enough of a prefork-interp client to start a server and call it."""

    def __init__(self, directory, script):
        self.script = str(script)
        self.path = str(directory / "s")
        self.listen = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listen.bind(self.path)
        self.listen.listen(8)
        self.listen.setblocking(False)
        self.first_call, call_fd = socket.socketpair()
        self.watchi_r, watchi_w = os.pipe()  # the watcher's stdin
        watche_r, self.watche_w = os.pipe()  # the watcher's stdout and stderr
        mtime = os.stat(self.path).st_mtime_ns
        fds = (self.listen.fileno(), call_fd.fileno(), watchi_w, watche_r)
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFORK_INTERP")}
        env["PYTHONPATH"] = str(PACKAGE_ROOT)
        env["PREFORK_INTERP"] = f"v1,{mtime // 10**9}.{mtime % 10**9:09d} " + ",".join(map(str, fds))
        errors = directory / "setup-stderr"
        try:
            # Like a real client: wait for the setup process to exit (not
            # for EOF on its stderr, which the first call's monitor keeps).
            with open(errors, "wb") as err:
                setup = subprocess.Popen(
                    [PYTHON, self.script, "0"], env=env, pass_fds=fds, stdin=subprocess.DEVNULL,
                    stdout=err, stderr=err, cwd=directory,
                )
            assert setup.wait(timeout=30) == 0, errors.read_text()
        finally:
            # The server has its own copies now.
            self.listen.close()
            call_fd.close()
            os.close(watchi_w)
            os.close(watche_r)

    def call(self, sock, *args):
        """Run one call on ``sock``; returns (wait status, stdout)."""
        assert sock.recv(8, socket.MSG_WAITALL) == GREETING
        sock.sendall(b"\0")
        out_r, out_w = os.pipe()
        null = os.open(os.devnull, os.O_RDWR)
        try:
            for fd in (null, out_w, null):
                send_fds(sock, [fd])
        finally:
            os.close(out_w)
            os.close(null)
        sock.sendall(encode_request([(b"A", b"1")], [PYTHON.encode(), self.script.encode(), *args]))
        status = int.from_bytes(sock.recv(4, socket.MSG_WAITALL), "big")
        with os.fdopen(out_r, "rb") as f:
            return status, f.read()

    def connect(self):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(self.path)
        return sock

    def close(self):
        self.listen.close()
        self.first_call.close()
        os.close(self.watchi_r)
        if self.watche_w is not None:
            os.close(self.watche_w)


@pytest.fixture
def fake(tmp_path):
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(SCRIPT))
    client = FakeClient(tmp_path, script)
    servers = []
    client.servers = servers
    try:
        yield client
    finally:
        client.close()
        for sid in servers:
            for p in alive(lambda p, sid=sid: p.sid == sid):
                try:
                    os.kill(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


def _server_of(out: bytes) -> int:
    return int(out.split()[-1])


def test_calls_byte_by_byte(fake):
    status, out = fake.call(fake.first_call, b"3", b"x")
    assert status == 3 << 8
    server = _server_of(out)
    fake.servers.append(server)
    assert out.startswith(b"argv ['3', 'x'] sid ")
    with fake.connect() as sock:
        status, out = fake.call(sock, b"0")
    assert (status, _server_of(out)) == (0, server)


def _watchi_open(fake) -> bool:
    """The server holds the write end of the watcher's stdin until it quits."""
    os.set_blocking(fake.watchi_r, False)
    try:
        return os.read(fake.watchi_r, 1) != b""
    except BlockingIOError:
        return True


@pytest.mark.parametrize("watcher", ["reports an error", "exits"])
def test_server_quits_when_the_watcher_says_so(fake, watcher):
    _, out = fake.call(fake.first_call, b"0")
    server = _server_of(out)
    fake.servers.append(server)
    assert _watchi_open(fake)
    if watcher == "exits":
        os.close(fake.watche_w)
        fake.watche_w = None
    else:
        os.write(fake.watche_w, b"prefork-interp: watcher: stat socket: Permission denied\n")
    wait_until(lambda: not alive(lambda p: p.pid == server), 5, "the server to quit")
    assert not _watchi_open(fake)
    with pytest.raises(ConnectionRefusedError):
        fake.connect()
