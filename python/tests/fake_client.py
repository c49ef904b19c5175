"""A prefork-interp client written here: exact bytes, on demand.

:class:`FakeClient` plays the client's part in starting a server (listening
socket, first-call socketpair, watcher pipes, ``PREFORK_INTERP``) and speaks
protocol v1 by hand; :class:`Call1` speaks extension call1 (protocol.md
section 6) on one call, frame by frame, so tests can do what no real client
does on demand: stop after any byte, send garbage, make the watcher report
an error or vanish.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from harness import PACKAGE_ROOT, PYTHON, alive, send_fds

from prefork_interp._protocol import (
    GREETING,
    TAG_ATTR,
    Attributes,
    Frame,
    decode_u32,
    encode_attributes,
    encode_frame,
    encode_request,
    encode_u32_frame,
)

#: What a call1 server answers at once (protocol.md section 6.1).
ACCEPT_FRAME = b"PFXA\0\0\0\x05call1"

#: What it answers to an offer of call1 and pty1 (protocol.md section 9.1).
ACCEPT_PTY_FRAME = b"PFXA\0\0\0\x0acall1,pty1"


class FakeClient:
    """Just enough of a prefork-interp client to start a server and call it."""

    def __init__(self, directory: Path, script: Path, setup_args: Sequence[str] = ("0",)) -> None:
        self.dir = directory
        self.script = str(script)
        self.path = str(directory / "s")
        self.listen = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listen.bind(self.path)
        self.listen.listen(8)
        self.listen.setblocking(False)
        self.first_call, call_fd = socket.socketpair()
        self.watchi_r, watchi_w = os.pipe()  # the watcher's stdin
        watche_r, self.watche_w = os.pipe()  # the watcher's stdout and stderr
        self.watche_w_open = True
        mtime = os.stat(self.path).st_mtime_ns
        fds = (self.listen.fileno(), call_fd.fileno(), watchi_w, watche_r)
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFORK_INTERP")}
        env["PYTHONPATH"] = str(PACKAGE_ROOT)
        env["PREFORK_INTERP"] = f"v1,{mtime // 10**9}.{mtime % 10**9:09d} " + ",".join(map(str, fds))
        #: The setup's stdout and stderr, and so the first monitor's log.
        self.setup_errors = directory / "setup-stderr"
        self.servers: List[int] = []
        try:
            # Like a real client: wait for the setup process to exit (not
            # for EOF on its stderr, which the first call's monitor keeps).
            with open(self.setup_errors, "wb") as err:
                setup = subprocess.Popen(
                    [PYTHON, self.script, *setup_args], env=env, pass_fds=fds, stdin=subprocess.DEVNULL,
                    stdout=err, stderr=err, cwd=directory,
                )
            assert setup.wait(timeout=30) == 0, self.setup_errors.read_text()
        finally:
            # The server has its own copies now.
            self.listen.close()
            call_fd.close()
            os.close(watchi_w)
            os.close(watche_r)

    @staticmethod
    def send_preamble(sock: socket.socket, stdio: Tuple[int, int, int]) -> None:
        """Steps 1-3 of a v1 call: read the greeting, send the signalling
        byte and the three stdio fds."""
        assert sock.recv(8, socket.MSG_WAITALL) == GREETING
        sock.sendall(b"\0")
        for fd in stdio:
            send_fds(sock, [fd])

    def call(self, sock: socket.socket, *args: bytes) -> Tuple[int, bytes]:
        """Run one v1 call on ``sock``; returns (wait status, stdout)."""
        sock.settimeout(30)
        out_r, out_w = os.pipe()
        null = os.open(os.devnull, os.O_RDWR)
        try:
            self.send_preamble(sock, (null, out_w, null))
        finally:
            os.close(out_w)
            os.close(null)
        sock.sendall(encode_request([(b"A", b"1")], [PYTHON.encode(), self.script.encode(), *args]))
        status = int.from_bytes(sock.recv(4, socket.MSG_WAITALL), "big")
        with os.fdopen(out_r, "rb") as f:
            return status, f.read()

    def connect(self) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(30)
        sock.connect(self.path)
        return sock

    def close_watcher(self) -> None:
        """The watcher exits: the server reads EOF on WATCHE."""
        if self.watche_w_open:
            os.close(self.watche_w)
            self.watche_w_open = False

    def close(self) -> None:
        """Close our ends; SIGKILL whatever is left in the sessions of the
        servers this client started (``servers``)."""
        self.listen.close()
        self.first_call.close()
        os.close(self.watchi_r)
        self.close_watcher()
        for sid in self.servers:
            for p in alive(lambda p, sid=sid: p.sid == sid):
                try:
                    os.kill(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


def read_until(fd: int, needle: bytes, timeout: float) -> bytes:
    """Read ``fd`` until ``needle`` has arrived (or EOF); fail after ``timeout``."""
    data = b""
    deadline = time.monotonic() + timeout
    while needle not in data:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
            raise AssertionError(f"timed out waiting for {needle!r}; got {data!r}")
        chunk = os.read(fd, 65536)
        if not chunk:
            raise AssertionError(f"EOF waiting for {needle!r}; got {data!r}")
        data += chunk
    return data


def read_to_eof(fd: int, timeout: float) -> bytes:
    """Read ``fd`` to EOF; fail if it is still open after ``timeout``."""
    data = b""
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
            raise AssertionError(f"no EOF after {timeout} s; got {data!r}")
        chunk = os.read(fd, 65536)
        if not chunk:
            return data
        data += chunk


class Call1:
    """One call with extension call1, driven by hand.

    Sends greeting reply, stdio (stdin ``/dev/null`` or ``stdin``, stdout
    and stderr pipes we read), the request with ``PREFORK_INTERP_EXT=call1``
    (or ``offer``) last, checks the accept frame (:data:`ACCEPT_FRAME`, or
    :data:`ACCEPT_PTY_FRAME` for an offer of pty1), then sends ``attrs``
    and the ``extra`` fds (their numbers in ``attrs.fds`` are what the
    script sees), and ``pty``, a pty's slave, if given (protocol.md section
    9.2).
    """

    def __init__(
        self,
        sock: socket.socket,
        argv: Sequence[bytes],
        attrs: Attributes = Attributes(),
        extra: Sequence[int] = (),
        env: Iterable[Tuple[bytes, bytes]] = (),
        offer: bytes = b"call1",
        send_attr: bool = True,
        stdin: Optional[int] = None,
        pty: Optional[int] = None,
    ) -> None:
        self.sock = sock
        sock.settimeout(30)
        self.out, out_w = os.pipe()
        self.err, err_w = os.pipe()
        null = os.open(os.devnull, os.O_RDWR)
        try:
            FakeClient.send_preamble(sock, (null if stdin is None else stdin, out_w, err_w))
        finally:
            for fd in (out_w, err_w, null):
                os.close(fd)
        sock.sendall(encode_request([*env, (b"PREFORK_INTERP_EXT", offer)], argv))
        # The accept frame, whatever it names; or the 4 bytes of a v1 status.
        self.accept = sock.recv(8, socket.MSG_WAITALL)
        if len(self.accept) == 8 and self.accept.startswith(b"PFXA"):
            self.accept += sock.recv(int.from_bytes(self.accept[4:], "big"), socket.MSG_WAITALL)
        if self.accept not in (ACCEPT_FRAME, ACCEPT_PTY_FRAME) or not send_attr:
            return
        sock.sendall(encode_frame(TAG_ATTR, encode_attributes(attrs)))
        for fd in extra:
            send_fds(sock, [fd])
        if pty is not None:
            send_fds(sock, [pty])

    def send(self, tag: bytes, value: int) -> None:
        self.sock.sendall(encode_u32_frame(tag, value))

    def frame(self, timeout: float = 30) -> Optional[Frame]:
        """The next frame from the server; None at EOF."""
        self.sock.settimeout(timeout)
        header = self.sock.recv(8, socket.MSG_WAITALL)
        if not header:
            return None
        assert len(header) == 8, header
        length = int.from_bytes(header[4:], "big")
        body = self.sock.recv(length, socket.MSG_WAITALL) if length else b""
        return Frame(header[:4], body)

    def expect(self, tag: bytes, timeout: float = 30) -> int:
        """The next frame must be ``tag`` with a u32 body: return it."""
        frame = self.frame(timeout)
        assert frame is not None and frame.tag == tag, frame
        return decode_u32(frame)

    def no_frame_for(self, seconds: float) -> bool:
        """Nothing from the server for ``seconds``."""
        return not select.select([self.sock], [], [], seconds)[0]

    def read_out(self, needle: bytes, timeout: float = 30) -> bytes:
        return read_until(self.out, needle, timeout)

    def finish(self, timeout: float = 30) -> Tuple[int, bytes, bytes]:
        """Read frames to the end: (EXIT status, rest of stdout, stderr).
        STOP frames before EXIT fail the test."""
        status = self.expect(b"EXIT", timeout)
        assert self.frame(timeout) is None, "EXIT is the last frame"
        return status, self.drain(self.out), self.drain(self.err)

    @staticmethod
    def drain(fd: int) -> bytes:
        chunks = []
        while select.select([fd], [], [], 10)[0]:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)

    def close(self) -> None:
        self.sock.close()
        for fd in (self.out, self.err):
            try:
                os.close(fd)
            except OSError:
                pass
