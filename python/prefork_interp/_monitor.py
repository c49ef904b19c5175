"""The per-call monitor (upstream design part 4).

A monitor is forked by the server for each call.  It makes its own process
group, runs the protocol exchange, forks the executor and then waits for
whichever comes first: the executor's death (learned from the kernel, via
SIGCHLD and ``waitpid``, never from a pipe the script's runtime may close
early) or the caller hanging up (EOF on the call socket), in which case it
SIGINTs its process group.  It reports the executor's raw wait status and
exits.
"""

from __future__ import annotations

__all__ = ["REQUEST_TIMEOUT", "become_monitor"]

import os
import select
import signal
import socket
from typing import Callable, List, Tuple

from ._log import Log
from ._proc import ChildWakeup, close_quietly, fork
from ._protocol import PeerGone, ProtocolError, Request, receive_call, send_status

#: Seconds a client has, from our greeting, to send its whole request.
#: Longer would let idle or half-open connections hold every max_servers
#: slot (SPEC section 6); a real client sends it at once.
REQUEST_TIMEOUT = 5.0

#: Exit status of a monitor that failed (logged by itself, counted by the
#: server as a failure).
_FAILED = 127


def _caller_gone(call: socket.socket) -> bool:
    """The call socket polled readable: has the caller hung up?

    In protocol v1 the client sends nothing after the request, so data is
    treated as a hang-up too (as the 7.0.0 Perl library does).  This is
    where an extension's messages from the client (signal forwarding, say)
    would be read instead.
    """
    try:
        call.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except BlockingIOError:
        return False  # spurious wake-up
    except OSError:
        pass  # ECONNRESET and the like
    return True


def _supervise(call: socket.socket, executor: int, wakeup: ChildWakeup) -> int:
    """Wait for the executor's death or the caller's hang-up; report the
    executor's wait status.  Returns the monitor's exit status."""
    poller = select.poll()
    poller.register(call, select.POLLIN)
    poller.register(wakeup.fd, select.POLLIN)
    while True:
        events = dict(poller.poll())
        pid, status = os.waitpid(executor, os.WNOHANG)
        if pid:
            break
        if wakeup.fd in events:
            wakeup.drain()
        if call.fileno() in events and _caller_gone(call):
            # Upstream part 4 steps 12-14.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            os.killpg(0, signal.SIGINT)
            _, status = os.waitpid(executor, 0)
            break
    try:
        send_status(call, status)
    except PeerGone:
        pass
    return 0


def become_monitor(call: socket.socket, release: Callable[[], None], log: Log) -> Tuple[Request, List[int]]:
    """Serve one call.  Returns only in the executor, with the request and
    the caller's stdio fds.

    On entry: a fresh fork child of the server, with the server's fds:
    ``call`` is this call's socket; ``release`` closes the server's other
    fds (LISTEN, WATCHI, WATCHE, its wake-up pipe) and is called at once;
    fds 0-2 are ``/dev/null`` (or, for the first call, the first caller's
    stderr on 1 and 2, where ``log`` then writes).  Every other way out ends
    in ``os._exit``: 0 when the call is done, the caller went away or was too
    slow, or sent garbage (logged, but the client's fault), 127 after a
    logged failure of our own.
    """
    monitor_pid = os.getpid()
    code = _FAILED
    fds: List[int] = []
    try:
        release()
        os.setpgid(0, 0)
        try:
            fds, request = receive_call(call, REQUEST_TIMEOUT)
        except PeerGone:
            code = 0
        except ProtocolError as e:
            # The client's fault, not ours: logged here, not a failure.
            log.warning(f"bad request from client: {e}")
            code = 0
        else:
            wakeup = ChildWakeup()
            executor = fork()
            if executor == 0:
                wakeup.close()
                call.close()
                return request, fds
            close_quietly(fds)
            fds = []
            code = _supervise(call, executor, wakeup)
    except BaseException as e:
        log.error(f"monitor: {e}")
    finally:
        if os.getpid() == monitor_pid:
            try:
                close_quietly(fds)
            finally:
                os._exit(code)
    raise AssertionError("not reached: the monitor exits in the finally clause")
