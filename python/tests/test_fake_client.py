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
import textwrap

import pytest
from fake_client import FakeClient, read_to_eof, read_until
from harness import alive, wait_until

from prefork_interp._protocol import encode_request

SCRIPT = """\
import os, sys
import prefork_interp
prefork_interp.initialisation_complete(log_facility=None)
print("argv", sys.argv[1:], "sid", os.getsid(0), flush=True)
if sys.argv[1] == "sleep":
    import time
    time.sleep(0.5)
    sys.exit(4)
if sys.argv[1] == "stop":
    import signal
    try:
        os.kill(os.getpid(), signal.SIGSTOP)
        signal.pause()
    except KeyboardInterrupt:
        print("KeyboardInterrupt after SIGCONT", flush=True)
        sys.exit(3)
sys.exit(int(sys.argv[1]))
"""


@pytest.fixture
def fake(tmp_path):
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(SCRIPT))
    client = FakeClient(tmp_path, script)
    try:
        yield client
    finally:
        client.close()


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
        fake.close_watcher()
    else:
        os.write(fake.watche_w, b"prefork-interp: watcher: stat socket: Permission denied\n")
    wait_until(lambda: not alive(lambda p: p.pid == server), 5, "the server to quit")
    assert not _watchi_open(fake)
    with pytest.raises(ConnectionRefusedError):
        fake.connect()


@pytest.mark.parametrize("offer", [None, b"", b"call2,later", b"CALL1"])
def test_no_call1_offer_is_plain_v1(fake, offer):
    """No offer, or none the server knows: no accept frame; the 4-byte
    status is all the server sends, then EOF (protocol.md section 6.1)."""
    _, out = fake.call(fake.first_call, b"0")
    fake.servers.append(_server_of(out))
    with fake.connect() as sock:
        null = os.open(os.devnull, os.O_RDWR)
        try:
            FakeClient.send_preamble(sock, (null, null, null))
        finally:
            os.close(null)
        env = [(b"A", b"1")] + ([] if offer is None else [(b"PREFORK_INTERP_EXT", offer)])
        sock.sendall(encode_request(env, [b"python3", fake.script.encode(), b"7"]))
        assert sock.recv(100, socket.MSG_WAITALL) == b"\0\0\x07\0"


def test_v1_bytes_after_the_request_are_ignored(fake):
    """In v1 only EOF ends a call early (protocol.md section 4): bytes the
    client sends after the request are read and dropped."""
    _, out = fake.call(fake.first_call, b"0")
    fake.servers.append(_server_of(out))
    with fake.connect() as sock:
        null = os.open(os.devnull, os.O_RDWR)
        try:
            FakeClient.send_preamble(sock, (null, null, null))
        finally:
            os.close(null)
        sock.sendall(encode_request([(b"A", b"1")], [b"python3", fake.script.encode(), b"sleep"]))
        sock.sendall(b"bytes v1 does not have" * 100)
        assert sock.recv(100, socket.MSG_WAITALL) == b"\0\0\x04\0"


def test_hang_up_reaches_a_stopped_executor(fake):
    """The caller goes away while the executor is stopped (v1: the monitor
    does not even know): SIGINT, then SIGCONT, so the SIGINT acts."""
    _, out = fake.call(fake.first_call, b"0")
    fake.servers.append(_server_of(out))
    sock = fake.connect()
    out_r, out_w = os.pipe()
    null = os.open(os.devnull, os.O_RDWR)
    try:
        FakeClient.send_preamble(sock, (null, out_w, null))
    finally:
        os.close(null)
        os.close(out_w)
    sock.sendall(encode_request([], [b"python3", fake.script.encode(), b"stop"]))
    try:
        assert read_until(out_r, b"\n", 10).startswith(b"argv ['stop']")
        wait_until(
            lambda: alive(lambda p: p.sid == fake.servers[-1] and p.state == "T"), 10, "the executor to stop"
        )
        sock.close()
        assert read_until(out_r, b"\n", 10) == b"KeyboardInterrupt after SIGCONT\n"
        assert read_to_eof(out_r, 10) == b"", "stdout reaches EOF: the executor is gone"
    finally:
        os.close(out_r)
