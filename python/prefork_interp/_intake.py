"""Taking calls in (protocol.md section 4.1): every connection the server
holds, from its ``accept`` (or, for the first call, the CALL fd) until a
monitor is forked for it or it is dropped.

:class:`Intake` owns, for the server loop:

1. the peer check: a peer whose uid (``SO_PEERCRED``) is not our effective
   uid is refused, root included, with one warning and no greeting;
2. the greeting, sent at once, busy monitor slots or not;
3. the handshakes (``_protocol.Handshake``), read without blocking from the
   server's one poll loop as bytes arrive: a connection holds no monitor
   slot and no process until its handshake is complete;
4. the limits: at most :data:`MAX_HELD` handshakes under way; at the
   limit a new connection drops the oldest one with nothing to read (idle
   or slow: one whose bytes are waiting, a real caller the server has not
   got to, is never dropped), and when none is idle, or
   :data:`MAX_WAITING` complete calls wait, the server stops accepting
   (:meth:`Intake.can_take`) and newcomers wait in the listen backlog; a
   handshake not finished within the ``request_timeout`` option's seconds
   of the accept (default :data:`_options.DEFAULT_REQUEST_TIMEOUT`; 0: no
   limit) is dropped;
5. complete calls, first in first out, until the server has a free slot
   (:meth:`Intake.next_call`); one whose caller hangs up meanwhile is
   dropped.

It never forks: the server forks a monitor for each :class:`Call` it takes.
"""

__all__ = ["MAX_HELD", "MAX_WAITING", "Call", "Intake", "peer_credentials"]

# Only C-level modules (_struct, not its wrapper struct): the setup
# process imports this module on the cold path, for take_in_place
# (protocol.md section 7).  The server's Intake imports collections.
import os
import select
import time

import _socket
import _struct

from ._options import DEFAULT_REQUEST_TIMEOUT
from ._proc import close_quietly
from ._protocol import Handshake, PeerGone, ProtocolError, send_greeting, send_in_place_greeting

TYPE_CHECKING = False  # not typing's: importing typing costs a cold call
if TYPE_CHECKING:
    from typing import Deque, Dict, List, Optional, Tuple

    from ._log import Log
    from ._protocol import Attributes, Request

#: Handshakes under way at once (protocol.md section 4.1).
MAX_HELD = 64

#: Complete calls waiting for a slot at once; they are never dropped.
MAX_WAITING = 1024

#: A deadline that never comes (``request_timeout`` 0: no limit).
_NEVER = float("inf")


def _deadline(now: float, request_timeout: float) -> float:
    """When a handshake accepted at ``now`` is dropped (0: never)."""
    return now + request_timeout if request_timeout > 0 else _NEVER

#: ``struct ucred`` of ``SO_PEERCRED``: pid_t, uid_t, gid_t.
_UCRED = _struct.Struct("iII")


def peer_credentials(sock: "_socket.socket") -> "Tuple[int, int, int]":
    """``(pid, uid, gid)`` of the process at the other end of ``sock``, as
    the kernel recorded them when it connected (or made the pair)."""
    pid, uid, gid = _UCRED.unpack(sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_PEERCRED, _UCRED.size))
    return pid, uid, gid


class Call:
    """A call whose handshake is complete: what a monitor serves."""

    __slots__ = ("sock", "stdio", "request", "attrs", "extra_fds", "pty_fd", "stderr", "in_place")

    #: The call's connection.
    sock: "_socket.socket"
    #: The caller's fds 0, 1, 2 (received copies).
    stdio: "List[int]"
    request: "Request"
    #: The caller's attributes (extension call1), or None for a v1 client.
    attrs: "Optional[Attributes]"
    #: Received copies of the caller's extra fds, one per ``attrs.fds``.
    extra_fds: "List[int]"
    #: The received pty slave (extension pty1, ``attrs.pty`` set), or None.
    pty_fd: "Optional[int]"
    #: For the first call only: the first caller's stderr, where its
    #: monitor logs (design.md section 2), or None.
    stderr: "Optional[int]"
    #: Run in place by the setup process (protocol.md section 7), not by
    #: an executor of the server.
    in_place: bool

    def __init__(
        self,
        sock: "_socket.socket",
        stdio: "List[int]",
        request: "Request",
        attrs: "Optional[Attributes]" = None,
        extra_fds: "Optional[List[int]]" = None,
        stderr: "Optional[int]" = None,
        in_place: bool = False,
        pty_fd: "Optional[int]" = None,
    ) -> None:
        self.sock = sock
        self.stdio = stdio
        self.request = request
        self.attrs = attrs
        self.extra_fds = [] if extra_fds is None else extra_fds
        self.pty_fd = pty_fd
        self.stderr = stderr
        self.in_place = in_place

    def close_fds(self) -> None:
        """Close the received fds and ``stderr`` (not the socket)."""
        close_quietly((*self.stdio, *self.extra_fds, self.pty_fd, self.stderr))
        self.stdio = []
        self.extra_fds = []
        self.pty_fd = None
        self.stderr = None

    def close(self) -> None:
        """Close everything the call holds."""
        self.close_fds()
        self.sock.close()


class _Pending:
    """A connection whose handshake is under way."""

    __slots__ = ("handshake", "deadline", "stderr")

    handshake: Handshake
    #: ``time.monotonic()`` after which it is dropped.
    deadline: float
    stderr: "Optional[int]"

    def __init__(self, handshake: Handshake, deadline: float, stderr: "Optional[int]" = None) -> None:
        self.handshake = handshake
        self.deadline = deadline
        self.stderr = stderr

    def close(self) -> None:
        self.handshake.close_fds()
        self.handshake.sock.close()
        close_quietly((self.stderr,))


class Intake:
    """The connections a server holds (see the module docstring)."""

    def __init__(self, log: "Log", request_timeout: float = DEFAULT_REQUEST_TIMEOUT) -> None:
        import collections  # here: only the server needs it

        self.log = log
        #: Seconds a connection has to finish its handshake (0: no limit).
        self.request_timeout = request_timeout
        self.uid = os.geteuid()
        #: Handshakes under way, by socket fd, oldest first.
        self.pending: "Dict[int, _Pending]" = {}
        #: Complete calls waiting for a monitor slot, oldest first.
        self.waiting: "Deque[Call]" = collections.deque()

    def __len__(self) -> int:
        return len(self.pending) + len(self.waiting)

    def can_take(self) -> bool:
        """Whether the server should accept: under the limits, or an idle
        handshake that a new connection may displace."""
        return len(self.waiting) < MAX_WAITING and (len(self.pending) < MAX_HELD or self._oldest_idle() is not None)

    def _oldest_idle(self) -> "Optional[int]":
        """The fd of the oldest handshake with nothing to read (no bytes, no
        EOF), or None."""
        poller = select.poll()
        for fd in self.pending:
            poller.register(fd, select.POLLIN)
        readable = {fd for fd, _ in poller.poll(0)}
        return next((fd for fd in self.pending if fd not in readable), None)

    def take(self, sock: "_socket.socket", stderr: "Optional[int]" = None) -> None:
        """A new connection (accepted, or the first call's CALL): check the
        peer, greet it, and start reading its handshake.  At the limit, the
        oldest handshake under way is dropped for it (the server accepts only
        while :meth:`can_take`).  ``stderr``: the first caller's stderr for
        the first call, owned from now on."""
        pending = _Pending(Handshake(sock), _deadline(time.monotonic(), self.request_timeout), stderr)
        try:
            pid, uid, _ = peer_credentials(sock)
        except OSError as e:
            self.log.warning(f"reading a caller's credentials (SO_PEERCRED): {e}")
            pending.close()
            return
        if uid != self.uid:
            self.log.warning(f"refused a call from uid {uid} (pid {pid}): only uid {self.uid} may call this server")
            pending.close()
            return
        if len(self.pending) >= MAX_HELD:
            idle = self._oldest_idle()
            if idle is not None:
                self.log.debug(f"{MAX_HELD} handshakes under way: dropping the oldest idle one")
                self._drop(idle)
        try:
            send_greeting(sock)
        except PeerGone:
            pending.close()
            return
        self.pending[sock.fileno()] = pending
        # Our client sends its request without waiting for the greeting,
        # so it is usually here: read it now rather than a poll later.
        self._advance(sock.fileno(), pending)

    def register(self, poller: "select.poll") -> None:
        """Add the held connections to the server's poll set: handshakes for
        input, waiting calls for hang-ups only (their clients may already
        send frames that only their monitors are to read)."""
        for fd in self.pending:
            poller.register(fd, select.POLLIN)
        for call in self.waiting:
            poller.register(call.sock.fileno(), 0)

    def handle(self, fd: int, events: int) -> bool:
        """A poll event on ``fd``.  False if ``fd`` is not a held connection."""
        pending = self.pending.get(fd)
        if pending is not None:
            self._advance(fd, pending)
            return True
        for call in self.waiting:
            if call.sock.fileno() == fd:
                if events & (select.POLLHUP | select.POLLERR):
                    self.log.debug("caller gone while its call waited for a slot")
                    self.waiting.remove(call)
                    call.close()
                return True
        return False

    def _advance(self, fd: int, pending: _Pending) -> None:
        handshake = pending.handshake
        try:
            if not handshake.advance():
                return
        except PeerGone:
            self._drop(fd)
            return
        except ProtocolError as e:
            # The client's fault: logged, the call dropped, the server goes on.
            self.log.warning(f"bad request from client: {e}")
            self._drop(fd)
            return
        except OSError as e:
            self.log.warning(f"reading a request: {e}")
            self._drop(fd)
            return
        del self.pending[fd]
        assert handshake.request is not None
        self.waiting.append(
            Call(
                handshake.sock,
                handshake.stdio,
                handshake.request,
                handshake.attrs,
                handshake.extra_fds,
                pending.stderr,
                pty_fd=handshake.pty_fd,
            )
        )

    def _drop(self, fd: int) -> None:
        self.pending.pop(fd).close()

    def expire(self, now: float) -> "Optional[float]":
        """Drop the handshakes past their deadline; returns the next
        deadline, or None."""
        for fd, pending in list(self.pending.items()):
            if pending.deadline <= now:
                self.log.debug(f"dropped a connection that sent no complete request within {self.request_timeout:g} s")
                self._drop(fd)
        deadline = min((p.deadline for p in self.pending.values()), default=_NEVER)
        return None if deadline == _NEVER else deadline

    def next_call(self) -> "Optional[Call]":
        """The complete call that has waited longest, now the caller's."""
        return self.waiting.popleft() if self.waiting else None

    def drop_pending(self) -> None:
        """Drop every handshake under way (part of :meth:`close_all`; a
        server quitting otherwise lets them finish within their deadline)."""
        for fd in list(self.pending):
            self._drop(fd)

    def close_all(self) -> None:
        """Close everything held (in a new monitor: the other calls are not
        its own; or when the server ends)."""
        self.drop_pending()
        while self.waiting:
            self.waiting.popleft().close()


def take_in_place(sock: "_socket.socket", log: "Log", request_timeout: float = DEFAULT_REQUEST_TIMEOUT) -> Call:
    """The setup process runs the first call itself (extension inplace1,
    protocol.md section 7): greet the client on CALL and read the call's
    handshake, waiting at most ``request_timeout`` seconds (0: no limit).

    Never returns half done: a client that hangs up or breaks the protocol
    gets its message on stderr (the caller's) and the process ends with
    status 127.

    Extension pty1 is not accepted here (the accept frame names call1
    alone, protocol.md section 9.1): this process leads the process group
    the client made for the call, and a group leader cannot start a
    session; it runs in the caller's session, where the caller's terminal
    is its controlling terminal already.
    """
    handshake = Handshake(sock, accept_pty1=False)
    deadline = _deadline(time.monotonic(), request_timeout)
    try:
        send_in_place_greeting(sock)
        poller = select.poll()
        poller.register(sock.fileno(), select.POLLIN)
        while not handshake.advance():
            left = deadline - time.monotonic()
            if left <= 0:
                raise ProtocolError(f"no complete request within {request_timeout:g} s")
            poller.poll(None if deadline == _NEVER else left * 1000)
    except (PeerGone, ProtocolError, OSError) as e:
        handshake.close_fds()
        try:
            os.write(2, f"{log.script}: prefork: error: taking the first call in: {e}\n".encode(errors="replace"))
        finally:
            os._exit(127)
    assert handshake.request is not None
    return Call(sock, handshake.stdio, handshake.request, handshake.attrs, handshake.extra_fds, in_place=True)
