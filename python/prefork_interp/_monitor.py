"""The per-call monitor (upstream design part 4; protocol.md sections 2, 4, 6).

The server forks a monitor for each call whose handshake is complete
(``_intake``: the request, and with extension call1 the caller's attributes
and extra fds, are already in).  The monitor makes its own process group
and forks the executor, the leader of a new process group, the call's (both
call ``setpgid(executor, executor)``, so neither races the other), which
first asks the kernel to kill it when the monitor dies.  Then the monitor
waits, learning of the executor's state from the kernel (SIGCHLD and
``waitpid``, never from a pipe the script's runtime may close early), for:

- the executor's death: its raw wait status goes to the client (v1: 4
  bytes; call1: an ``EXIT`` frame), and the monitor exits;
- with call1, the executor stopping (``WUNTRACED``): a ``STOP`` frame;
- with call1, frames from the client: ``SIGP`` (signal the executor),
  ``SIGG`` (signal the call's group); frames with other tags are skipped;
- the caller hanging up (EOF on the call socket; with call1 also a frame
  over the size limit; in v1 bytes after the request are read and ignored,
  protocol.md section 4):
  SIGINT to the call's group, then SIGCONT (a stopped call gets the SIGINT
  only once continued), then wait for the executor.

The monitor forks with every signal blocked: the executor sets its final
mask last, once its dispositions are the caller's (``_signals``), so a
signal forwarded at once acts as it would on the script.
"""

from __future__ import annotations

__all__ = ["become_monitor"]

import os
import select
import signal
from typing import Callable, Optional

import _socket

from ._intake import Call
from ._log import Log
from ._proc import ChildWakeup, close_quietly, die_with_parent, fork
from ._protocol import (
    TAG_EXIT,
    TAG_SIGG,
    TAG_SIGP,
    TAG_STOP,
    Frame,
    FrameReader,
    PeerGone,
    ProtocolError,
    U32_BE,
    decode_u32,
    send_frame,
    send_status,
)
from ._signals import block_all, restore_mask

#: Exit status of a monitor that failed (logged by itself, counted by the
#: server as a failure).
_FAILED = 127

#: Bytes read from the call socket at once while the call runs.
_READ_SIZE = 65536


class _Supervisor:
    """The monitor's wait for the executor (see the module docstring)."""

    def __init__(self, call: _socket.socket, executor: int, wakeup: ChildWakeup, log: Log, framed: bool) -> None:
        self.call = call
        self.executor = executor
        self.wakeup = wakeup
        self.log = log
        #: Extension call1 is on: frames both ways, stops reported.
        self.framed = framed
        self.frames = FrameReader()

    def run(self) -> int:
        """Supervise until the executor has been reaped and its status
        reported.  Returns the monitor's exit status."""
        poller = select.poll()
        poller.register(self.call, select.POLLIN)
        poller.register(self.wakeup.fd, select.POLLIN)
        while True:
            events = dict(poller.poll())
            if self.wakeup.fd in events:
                self.wakeup.drain()
            status = self._reap()
            if status is not None:
                break
            if self.call.fileno() in events and not self._from_client():
                status = self._hang_up()
                break
        self._report(status)
        return 0

    def _reap(self) -> Optional[int]:
        """Collect the executor's state changes; its wait status once it
        has ended, else None.  With call1, each stop is reported."""
        flags = os.WNOHANG | (os.WUNTRACED if self.framed else 0)
        while True:
            pid, status = os.waitpid(self.executor, flags)
            if pid == 0:
                return None
            if not os.WIFSTOPPED(status):
                return status
            self._send(TAG_STOP, os.WSTOPSIG(status))

    def _send(self, tag: bytes, value: int) -> None:
        try:
            send_frame(self.call, tag, U32_BE.pack(value & 0xFFFFFFFF))
        except PeerGone:
            pass  # the hang-up shows as EOF on the socket next

    def _from_client(self) -> bool:
        """The call socket polled readable.  Returns False if the call is
        to be dropped (hang-up, or a protocol error, logged)."""
        try:
            data = self.call.recv(_READ_SIZE, _socket.MSG_DONTWAIT)
        except BlockingIOError:
            return True
        except OSError:
            return False  # ECONNRESET and the like
        if not data:
            return False
        if not self.framed:
            return True  # v1 has nothing after the request: ignored
        try:
            frames = self.frames.feed(data)
        except ProtocolError as e:
            self.log.warning(f"bad frame from client, dropping the call: {e}")
            return False
        for frame in frames:
            self._handle(frame)
        return True

    def _handle(self, frame: Frame) -> None:
        if frame.tag not in (TAG_SIGP, TAG_SIGG):
            return  # a frame of a later version: skipped
        try:
            sig = decode_u32(frame)
        except ProtocolError as e:
            self.log.warning(f"bad frame from client, ignored: {e}")
            return
        if not 1 <= sig < signal.NSIG:
            self.log.warning(f"bad frame from client, ignored: {frame.tag.decode()} {sig} is not a signal number")
            return
        try:
            if frame.tag == TAG_SIGG:
                os.killpg(self.executor, sig)
            else:
                os.kill(self.executor, sig)
        except ProcessLookupError:
            pass  # the group has emptied; the executor's death is on its way
        except OSError as e:
            self.log.warning(f"forwarding signal {sig}: {e}")

    def _hang_up(self) -> int:
        """The caller is gone: SIGINT the call's group (upstream part 4
        steps 12-14), SIGCONT it in case it is stopped (the SIGINT acts only
        then), and wait for the executor's death."""
        for sig in (signal.SIGINT, signal.SIGCONT):
            try:
                os.killpg(self.executor, sig)
            except ProcessLookupError:
                pass
        _, status = os.waitpid(self.executor, 0)
        return status

    def _report(self, status: int) -> None:
        try:
            if self.framed:
                send_frame(self.call, TAG_EXIT, U32_BE.pack(status & 0xFFFFFFFF))
            else:
                send_status(self.call, status)
        except PeerGone:
            pass


def _lead_group(executor: int) -> None:
    """In the monitor: make the executor the leader of a new group."""
    try:
        os.setpgid(executor, executor)
    except (PermissionError, ProcessLookupError):
        pass  # it has exec'd (after doing it itself) or is already gone


def become_monitor(call: Call, release: Callable[[], None], log: Log) -> Call:
    """Serve one call.  Returns only in the executor, with the call, and
    with every signal blocked (the executor sets its mask).

    On entry: a fresh fork child of the server, with the server's fds:
    ``call`` is this call, complete, and ours; ``release`` closes the
    server's other fds (LISTEN, WATCHI, WATCHE, its wake-up pipe, the other
    connections it holds) and is called at once; fds 0-2 are ``/dev/null``.
    For the first call, ``call.stderr`` is the first caller's stderr, made
    our fd 2, where ``log`` then writes.  Every other way out ends in
    ``os._exit``: 0 when the call is done or the caller went away, 127 after
    a logged failure of our own.
    """
    monitor_pid = os.getpid()
    code = _FAILED
    try:
        release()
        if call.stderr is not None:
            os.dup2(call.stderr, 2)
            close_quietly((call.stderr,))
            call.stderr = None
            log.to_stderr = True
        os.setpgid(0, 0)
        wakeup = ChildWakeup()
        mask = block_all()
        executor = fork()
        if executor == 0:
            die_with_parent(monitor_pid)
            wakeup.close()
            call.sock.close()
            os.setpgid(0, 0)
            return call
        restore_mask(mask)
        _lead_group(executor)
        call.close_fds()
        code = _Supervisor(call.sock, executor, wakeup, log, framed=call.attrs is not None).run()
    except BaseException as e:
        log.error(f"monitor: {e}")
    finally:
        if os.getpid() == monitor_pid:
            try:
                call.close_fds()
            finally:
                os._exit(code)
    raise AssertionError("not reached: the monitor exits in the finally clause")
