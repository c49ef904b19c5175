"""Executors: spares forked before they are needed, and the server's watch
over each running call.

No fork is on a warm call's critical path.  The server keeps ``pool_size``
*spares*: copies of itself made while it is idle, each waiting on a control
socket of its own, and its children.  The forker (``_forker``) makes them,
so that the server itself never forks while it serves; where no forker can
run, or it has failed, the server forks them itself.  When a call's
handshake is complete and a slot is free, the server hands the call to a
spare (the call's socket, the caller's fds, the request and the
attributes, over the control socket).  It asks for the replacement once
no call younger than :data:`FILL_DELAY` runs, as the Perl server forks
it: the fork and the new spare's rehearsal (below) compete with the call
for the CPUs (a warm trivial call took 7-8% longer with the fork right
after the handover, on a 2-core VM).  An empty pool the forker refills
at once, and calls wait for its spares rather than for a fork of the
server (8 parallel callers: 12% more calls a second; the Perl server,
where the same measured 6% fewer, forks them itself).  The spare becomes
the call's executor (``_executor``).  Android's zygote keeps its pool of
unspecialised app processes the same way.

The server itself then plays the monitor's part of protocol.md section 4,
one process per call fewer than a monitor per call: each running call's
socket is in the server's poll set (frames ``SIGP``/``SIGG`` from the
client, its hang-up), and the executor's stops and death come from the
kernel (``waitpid`` after SIGCHLD), never from a pipe the language runtime
may close early.  On a hang-up the call's process group gets SIGINT (and
SIGCONT, in case it is stopped), as from a monitor.

The call's process group: the server makes the spare the leader of a new
group before it hands the call over, so the group exists before any
``SIGG`` can be forwarded to it.

With extension pty1 (protocol.md section 9.3) it does not: the spare
becomes the call's session *leader* (``setsid``, which a group leader
cannot do) and forks the executor into a group of its own (``_session``).
The server keeps the spare's control socket, over which the leader reports
the executor's pid, its stops and its wait status; signals for the call
(``SIGP``, ``SIGG``, a hang-up's) are held until the executor's pid has
come, then go to the executor and its group.  The server reaps the leader
and sends the status it reported (the leader's own if none came).  An
``FGND`` frame goes to the leader over the same socket (a record of kind
``_session.FOREGROUND``), which moves the pty's foreground and answers;
signals are held until it has, so a ``SIGCONT`` after ``FGND 1`` finds the
executor's group in front of the pty.

Every executor asks the kernel to SIGKILL it if the server dies
(``PR_SET_PDEATHSIG``): a server killed under its calls never leaves one
running with a caller's stdio after the client has returned.

Control socket, server to spare (a stream; sizes in bytes, big-endian):

1. one message: 12 bytes ``len(body), len(attrs) or 0xffffffff, nfds``,
   carrying the first fds (``SCM_RIGHTS``): the call's socket, the
   caller's fds 0-2, then its extra fds, then (pty1: the attributes have
   ``pty``) the pty's slave;
2. the rest of the fds, at most :data:`_FDS_PER_MESSAGE` a message, each
   message one byte;
3. the request body, then the attributes the server has parsed, as
   ``marshal`` data (:func:`_pack_attributes`; the spare, a copy of the
   server, need not check them again).

With no more fds than one message carries (every call but those passing
hundreds of fds), steps 1 and 3 go in one message, so the spare wakes
once to a whole call.

EOF instead of step 1: the server is quitting; the spare exits 0.
"""

from __future__ import annotations

import marshal
import os
import select
import signal
import socket
import struct
import time

import _socket
from typing import Callable, Dict, List, Optional, Tuple

from . import _forker
from ._intake import Call
from ._log import Log
from ._proc import close_quietly, die_with_parent, fork, process_title, set_cmdline
from ._protocol import (
    TAG_EXIT,
    TAG_FGND,
    TAG_SIGG,
    TAG_SIGP,
    TAG_STOP,
    U32_BE,
    Attributes,
    Frame,
    FrameReader,
    PeerGone,
    ProtocolError,
    decode_foreground,
    decode_u32,
    encode_request,
    fds_in,
    parse_request,
    send_frame,
    send_status,
)
from ._signals import block_all, restore_mask

#: A spare is not forked while a call younger than this (seconds) runs;
#: once every call is older, or none runs, the pool is filled.
FILL_DELAY = 0.1

#: Spares a call is offered to, when those before have gone (start()).
_HANDOVER_TRIES = 3

#: Fds in one control message (the kernel takes at most 253).
_FDS_PER_MESSAGE = 250

_HEADER = struct.Struct(">III")
_NO_ATTRS = 0xFFFFFFFF

#: Bytes read from a call socket at once while the call runs.
_READ_SIZE = 65536


# ---------------------------------------------------------------------------
# The spare's side


def _recv_fds(sock: socket.socket, size: int) -> "Tuple[bytes, List[int]]":
    """Exactly ``size`` bytes (fewer only at EOF) with the fds they carry."""
    data = b""
    fds: List[int] = []
    space = socket.CMSG_SPACE(_FDS_PER_MESSAGE * 4)
    while len(data) < size:
        chunk, ancillary, flags, _ = sock.recvmsg(size - len(data), space, socket.MSG_CMSG_CLOEXEC)
        fds.extend(fds_in(ancillary))
        if flags & socket.MSG_CTRUNC:
            close_quietly(fds)
            raise ProtocolError("control message truncated")
        if not chunk:
            break
        data += chunk
    return data, fds


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    parts: List[bytes] = []
    left = size
    while left:
        chunk = sock.recv(min(left, 1 << 20))
        if not chunk:
            raise ProtocolError("control socket closed in the middle of a call")
        parts.append(chunk)
        left -= len(chunk)
    return b"".join(parts)


def _pack_attributes(attrs: Attributes) -> bytes:
    """``attrs`` for the spare: its fields, in order, as ``marshal`` data
    (built in C: parsing the ``ATTR`` body again took the spare 0.1 ms)."""
    return marshal.dumps(tuple(getattr(attrs, name) for name in Attributes.__slots__))


def _unpack_attributes(data: bytes) -> Attributes:
    return Attributes(*marshal.loads(data))


def _send_call(ctl: socket.socket, call: Call) -> None:
    """Send ``call`` over a spare's control socket (the module docstring
    has the layout).  Raises OSError."""
    fds = [call.sock.fileno(), *call.stdio, *call.extra_fds]
    if call.pty_fd is not None:
        fds.append(call.pty_fd)
    attrs = b"" if call.attrs is None else _pack_attributes(call.attrs)
    head = _HEADER.pack(len(call.request.body), _NO_ATTRS if call.attrs is None else len(attrs), len(fds))
    first, rest = fds[:_FDS_PER_MESSAGE], fds[_FDS_PER_MESSAGE:]
    rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack(f"{len(first)}i", *first))]
    if not rest:
        data = head + call.request.body + attrs
        sent = ctl.sendmsg([data], rights)
        if sent < len(data):
            # (Never an empty sendall: the spare, once it has the call,
            # closes its end, and a send of nothing would then fail.)
            ctl.sendall(data[sent:])
        return
    ctl.sendmsg([head], rights)
    while rest:
        chunk, rest = rest[:_FDS_PER_MESSAGE], rest[_FDS_PER_MESSAGE:]
        ctl.sendmsg([b"\0"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack(f"{len(chunk)}i", *chunk))])
    ctl.sendall(call.request.body + attrs)


def _rehearse_handover() -> None:
    """In a new spare: take a made-up call over a socket pair of our own,
    as a real one will come (``_executor.warm_up`` says why)."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    devnull = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    try:
        request = parse_request(encode_request([(b"NAME", b"value")], [b"interpreter", b"script"])[4:])
        attrs = Attributes(umask=0o22, nice=0, rlimits=((0, 1, 2),), sigign=frozenset(), sigmask=frozenset({1}))
        _send_call(ours, Call(ours, [devnull, devnull, devnull], request, attrs))
        _wait_for_call(theirs).close()
    finally:
        os.close(devnull)
        ours.close()
        theirs.close()


def _wait_for_call(ctl: socket.socket) -> Call:
    """Block until the server hands us a call; exit 0 at EOF."""
    head, fds = _recv_fds(ctl, _HEADER.size)
    if len(head) < _HEADER.size:
        os._exit(0)
    body_len, attrs_len, nfds = _HEADER.unpack(head)
    while len(fds) < nfds:
        byte, more = _recv_fds(ctl, 1)
        if not byte:
            raise ProtocolError("control socket closed in the middle of a call")
        fds.extend(more)
    request = parse_request(_recv_exact(ctl, body_len))
    attrs = None if attrs_len == _NO_ATTRS else _unpack_attributes(_recv_exact(ctl, attrs_len))
    sock = socket.socket(fileno=fds[0])
    if attrs is not None and attrs.pty is not None:
        # Extension pty1: the slave comes last.
        return Call(sock, fds[1:4], request, attrs, fds[4:-1], pty_fd=fds[-1])
    return Call(sock, fds[1:4], request, attrs, fds[4:])


def _become_spare(
    server_pid: int, ctl: socket.socket, release: Callable[[], None], log: Log, warm_up: "Optional[Callable[[], None]]"
) -> Call:
    """A fresh fork of the server, every signal blocked: wait for a call.
    Returns it, with the call's socket closed (the server keeps its end),
    as :func:`_executor.become_executor` wants it; anything else ends in
    ``os._exit``."""
    try:
        release()
        die_with_parent(server_pid)
        set_cmdline(process_title("spare"))
        # (Not when a call is there already: it would wait for it.)
        if warm_up is not None and not select.select([ctl], [], [], 0)[0]:
            try:
                _rehearse_handover()
                warm_up()
            except Exception as e:
                # Only a rehearsal: the spare still takes its call, which
                # reports its own errors.
                log.warning(f"spare executor: rehearsing a call: {type(e).__name__}: {e}")
        call = _wait_for_call(ctl)
        if call.pty_fd is not None:
            # Extension pty1, protocol.md section 9.3: we lead the call's
            # session, the pty its controlling terminal, and the executor
            # is a child of ours (the server made us no group: a group
            # leader could not call setsid).  Returns in the executor only.
            from ._session import lead

            assert call.attrs is not None
            lead(ctl, call.pty_fd, call.attrs.ptybg)
        ctl.close()
        call.sock.close()
        return call
    except BaseException as e:
        log.error(f"spare executor: {type(e).__name__}: {e}")
        os._exit(127)


# ---------------------------------------------------------------------------
# The server's side


class _Spare:
    """A spare: its pid and the server's end of its control socket."""

    __slots__ = ("pid", "ctl")

    def __init__(self, pid: int, ctl: socket.socket) -> None:
        self.pid = pid
        self.ctl = ctl


class _Running:
    """A call being served by executor ``pid`` (the monitor's part of
    protocol.md section 4, driven by the server's poll loop)."""

    __slots__ = (
        "pid", "sock", "listening", "framed", "frames", "log", "pty", "leader", "executor", "held", "reported", "reports",
        "unanswered", "started",
    )

    def __init__(
        self, pid: int, sock: _socket.socket, framed: bool, log: Log, leader: "Optional[socket.socket]" = None
    ) -> None:
        #: Our child: the executor, or with pty1 the call's session leader.
        self.pid = pid
        #: The call's socket; None once the caller has gone.
        self.sock: Optional[_socket.socket] = sock
        #: Still reading the client: not after its hang-up or a protocol
        #: error (the call is then interrupted; its status is still sent).
        self.listening = True
        #: Extension call1 is on: frames both ways, stops reported.
        self.framed = framed
        self.frames = FrameReader()
        self.log = log
        #: Extension pty1: our child is the call's session leader.
        self.pty = leader is not None
        #: pty1: the leader's end of the control socket (None once at EOF),
        #: over which it reports (``_session``).
        self.leader = leader
        #: Who gets SIGP and SIGG (the group of that pid): the executor;
        #: with pty1 None until the leader has reported it, and again
        #: None once it has ended (its pid is free then).
        self.executor: Optional[int] = None if leader is not None else pid
        #: pty1: signals (number, to the group) held until ``executor``
        #: is known.
        self.held: List[Tuple[int, bool]] = []
        #: pty1: the executor's wait status, as the leader reported it.
        self.reported: Optional[int] = None
        #: pty1: the start of a report not all there yet.
        self.reports = b""
        #: pty1: FGNDs passed to the leader and not yet answered; signals
        #: are held until they are.
        self.unanswered = 0
        #: When the call was handed over (``time.monotonic``).
        self.started = time.monotonic()

    def readable(self) -> None:
        """The call socket polled readable: frames, or the hang-up."""
        assert self.sock is not None
        try:
            data = self.sock.recv(_READ_SIZE, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return
        except OSError:
            data = b""  # ECONNRESET and the like: gone
        if not data:
            self._hang_up()
            return
        if not self.framed:
            return  # v1 has nothing after the request: ignored
        try:
            frames = self.frames.feed(data)
        except ProtocolError as e:
            self.log.warning(f"bad frame from client, dropping the call: {e}")
            self._hang_up()
            return
        for frame in frames:
            self._handle(frame)

    def _handle(self, frame: Frame) -> None:
        if frame.tag == TAG_FGND:
            self._foreground(frame)
            return
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
            self._signal(sig, frame.tag == TAG_SIGG)
        except ProcessLookupError:
            pass  # the group has emptied; the executor's death is on its way
        except OSError as e:
            self.log.warning(f"forwarding signal {sig}: {e}")

    def _foreground(self, frame: Frame) -> None:
        """``FGND``: the client's job has moved to the foreground or the
        background of the caller's terminal.  Passed to the leader, which
        mirrors it onto the pty; signals wait for its answer.  Ignored for
        a call without a pty, or once the leader has gone."""
        if not self.pty:
            return
        try:
            front = decode_foreground(frame)
        except ProtocolError as e:
            self.log.warning(f"bad frame from client, ignored: {e}")
            return
        if self.leader is None or self.reported is not None:
            return
        from ._session import FOREGROUND, REPORT

        try:
            # 8 bytes to a socket the leader always reads: all or nothing.
            self.leader.send(REPORT.pack(FOREGROUND, int(front)), socket.MSG_NOSIGNAL)
        except OSError as e:
            self.log.warning(f"passing FGND to the call's leader: {e}")
            return
        self.unanswered += 1

    def _hang_up(self) -> None:
        """The caller is gone (or only half-closed its end): interrupt the
        call and stop reading; its death is reaped as any other, and its
        status still sent, in case the caller reads it."""
        self._interrupt()
        self.listening = False

    def _interrupt(self) -> None:
        """SIGINT the call's group (upstream part 4 steps 12-14), SIGCONT it
        in case it is stopped."""
        for sig in (signal.SIGINT, signal.SIGCONT):
            try:
                self._signal(sig, True)
            except ProcessLookupError:
                pass

    def _signal(self, sig: int, group: bool) -> None:
        """Send ``sig`` to the executor, or to its process group (which
        exists before the server learns the executor's pid).  With pty1,
        held until the leader has reported the pid and answered every
        FGND, and dropped once it has reported the executor's end.  Raises
        OSError."""
        if self.executor is None or self.unanswered:
            if self.pty and self.reported is None:
                self.held.append((sig, group))
            return
        if group:
            os.killpg(self.executor, sig)
        else:
            os.kill(self.executor, sig)

    def leader_readable(self) -> None:
        """pty1: the leader's reports (or its EOF) have come: learn the
        executor's pid (and send it what was held), pass its stops on,
        note its status."""
        data = b""
        while self.leader is not None:
            try:
                chunk = self.leader.recv(_READ_SIZE, socket.MSG_DONTWAIT)
            except BlockingIOError:
                break
            except OSError:
                chunk = b""
            if not chunk:
                self.leader.close()
                self.leader = None
                break
            data += chunk
        if self.leader is None:
            # The leader has gone (and the executor with it): no answer to
            # an FGND will come, and nothing held is sent.
            self.unanswered = 0
            self.held = []
        if not data:
            return
        from ._session import EXECUTOR, FOREGROUND, STOPPED, decode_reports

        reports, self.reports = decode_reports(self.reports + data)
        for kind, value in reports:
            if kind == EXECUTOR:
                if self.reported is None:
                    self.executor = value
                    self._release_held()
            elif kind == FOREGROUND:
                if self.unanswered:
                    self.unanswered -= 1
                    self._release_held()
            elif kind == STOPPED:
                self.stopped(value)
            else:
                self.reported = value
                self.executor = None
                self.held = []

    def _release_held(self) -> None:
        """pty1: send the held signals, once nothing holds them."""
        if self.executor is None or self.unanswered:
            return
        held, self.held = self.held, []
        for sig, group in held:
            try:
                self._signal(sig, group)
            except OSError:
                pass

    def stopped(self, sig: int) -> None:
        if self.framed and self.sock is not None:
            self._send(TAG_STOP, sig)

    def ended(self, status: int) -> None:
        """The executor has been reaped: report its status and let go."""
        if self.sock is not None:
            if self.framed:
                self._send(TAG_EXIT, status)
            else:
                try:
                    send_status(self.sock, status)
                except PeerGone:
                    pass
        self._close()

    def _send(self, tag: bytes, value: int) -> None:
        assert self.sock is not None
        try:
            send_frame(self.sock, tag, U32_BE.pack(value & 0xFFFFFFFF))
        except PeerGone:
            pass  # the hang-up shows as EOF on the socket next

    def _close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        if self.leader is not None:
            self.leader.close()
            self.leader = None


class Executors:
    """The server's spares and running calls."""

    def __init__(
        self, pool_size: int, log: Log, release: Callable[[], None], warm_up: "Optional[Callable[[], None]]" = None
    ) -> None:
        self.pool_size = pool_size
        self.log = log
        #: What a new spare runs while it waits (``_executor.warm_up``).
        self._warm_up = warm_up
        #: Closes, in a new spare, what only the server needs (not ours).
        self._release_server = release
        self.spares: List[_Spare] = []
        self.running: Dict[int, _Running] = {}
        #: Spares told to go (their control socket closed), not yet reaped.
        self.leaving: List[int] = []
        #: A fork for the pool failed: no more tries until a call starts.
        self.fill_failed = False
        #: The process that forks our spares (``_forker``), once started.
        self.forker: Optional[_forker.Forker] = None
        #: Spares asked of the forker and not yet come.
        self.requested = 0
        #: No forker: none can run here, or it has failed (we fork).
        self.forker_failed = not _forker.available()

    def __len__(self) -> int:
        """Calls running."""
        return len(self.running)

    def _release(self) -> None:
        """In a new spare (or the forker): close every fd of the server's."""
        self._release_server()
        if self.forker is not None:
            self.forker.sock.close()
        for spare in self.spares:
            spare.ctl.close()
        for running in self.running.values():
            if running.sock is not None:
                running.sock.close()
            if running.leader is not None:
                running.leader.close()

    def _fork_spare(self) -> "Tuple[Optional[_Spare], Optional[Call]]":
        """Fork a spare: (the spare, None) in the server, (None, its call)
        in the spare once a call has come.  Raises OSError if it cannot."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        mask = block_all()
        try:
            pid = fork()
        except BaseException:
            restore_mask(mask)
            ours.close()
            theirs.close()
            raise
        if pid == 0:
            ours.close()
            return None, _become_spare(os.getppid(), theirs, self._release, self.log, self._warm_up)
        restore_mask(mask)
        theirs.close()
        return _Spare(pid, ours), None

    def fill_wait(self, now: float) -> Optional[float]:
        """Seconds until the pool may be filled (0: now); None if it is
        full, or a fork for it failed and no call has started since."""
        if self.fill_failed or len(self.spares) + self.requested >= self.pool_size:
            return None
        if self.forker is not None and not self.spares:
            # An empty pool the forker refills at once: calls that come
            # meanwhile wait for its spares (can_start).
            return 0.0
        return max([0.0] + [running.started + FILL_DELAY - now for running in self.running.values()])

    def fill(self) -> Optional[Call]:
        """Fork spares up to the pool size.  Returns only in a spare that
        got a call; a fork failure is logged, and tried again once a call
        has started."""
        if self.forker is None and not self.forker_failed:
            call = self._start_forker()
            if call is not None:
                return call
        if self.forker is not None:
            wanted = self.pool_size - len(self.spares) - self.requested
            if wanted <= 0:
                return None
            if self.forker.request(wanted):
                self.requested += wanted
                return None
            self._forker_gone("its socket is closed")
        while len(self.spares) < self.pool_size:
            try:
                spare, call = self._fork_spare()
            except OSError as e:
                self.log.warning(f"fork for a spare executor: {e}; no more spares until the next call")
                self.fill_failed = True
                return None
            if call is not None:
                return call
            assert spare is not None
            self.spares.append(spare)
        return None

    def _start_forker(self) -> Optional[Call]:
        """Start the forker.  Returns only in a spare it has made, once
        that has a call; a failure is logged, and we fork ourselves."""
        mask = block_all()
        try:
            forker, call = _forker.start(
                self._release,
                lambda server, ctl: _become_spare(server, ctl, lambda: None, self.log, self._warm_up),
            )
        except OSError as e:
            restore_mask(mask)
            self.forker_failed = True
            self.log.warning(f"fork for the forker of spares: {e}; the server forks them itself")
            return None
        if call is not None:
            return call
        restore_mask(mask)
        self.forker = forker
        return None

    def _forker_gone(self, why: str, reaped: bool = False) -> None:
        """The forker has failed: we fork our spares ourselves from now on.
        ``reaped``: it has ended and been reaped already."""
        assert self.forker is not None
        self.log.warning(f"the forker of spares [{self.forker.pid}] has failed ({why}); the server forks them itself")
        self._drop_forker(reaped)

    def _drop_forker(self, reaped: bool = False) -> None:
        """Let the forker go (it sees EOF and exits, unless ``reaped``
        already); no spare is asked of it any more."""
        assert self.forker is not None
        self.forker.close()
        if not reaped:
            self.leaving.append(self.forker.pid)
        self.forker = None
        self.forker_failed = True
        self.requested = 0

    def _forker_readable(self) -> None:
        """Spares have come from the forker (or it has gone)."""
        assert self.forker is not None
        spares, failed, gone = self.forker.receive()
        for pid, ctl in spares:
            self.spares.append(_Spare(pid, ctl))
        self.requested = max(0, self.requested - len(spares) - failed)
        if failed:
            self.log.warning(f"the forker could not make {failed} spare executor(s); no more until the next call")
            self.fill_failed = True
        if gone:
            self._forker_gone("it has closed its socket")

    def can_start(self) -> bool:
        """Whether :meth:`start` would hand a call over now: not while the
        pool is empty and the forker can make spares (it is cheaper to wait
        for one than for the server to fork, and fault, itself: 8 parallel
        callers made 12% more calls a second)."""
        return bool(self.spares) or self.forker is None or self.fill_failed

    def start(self, call: Call) -> Optional[Call]:
        """Hand ``call`` to a spare (forking one if none is left).  Returns
        only in that spare, with the call.  Raises OSError if no spare
        could be had or the handover failed (the call is then closed).

        A spare found gone at the handover (killed, say, by the OOM killer,
        before we reaped it) never had the whole call: the next one gets
        it, up to :data:`_HANDOVER_TRIES` spares in all."""
        pty = call.pty_fd is not None
        try:
            for tries_left in reversed(range(_HANDOVER_TRIES)):
                if self.spares:
                    spare = self.spares.pop(0)
                else:
                    new, executor_call = self._fork_spare()
                    if executor_call is not None:
                        return executor_call
                    assert new is not None
                    spare = new
                try:
                    self._hand_over(spare, call)
                    break
                except (BrokenPipeError, ConnectionResetError) as e:
                    if not tries_left:
                        raise
                    self.log.warning(f"spare executor [{spare.pid}] had gone ({e.strerror}): its call goes to another")
        finally:
            # In the server: its copies, now the spare's (the pty's slave
            # too: the client sees EIO on the master only when no process
            # holds one).  In a spare forked here for this call: the copies
            # it inherited, the call having come to it over its socket.
            call.close_fds()
        self.fill_failed = False
        # pty1: the control socket stays, for the leader's reports.
        leader = spare.ctl if pty else None
        self.running[spare.pid] = _Running(spare.pid, call.sock, call.attrs is not None, self.log, leader)
        return None

    def _hand_over(self, spare: _Spare, call: Call) -> None:
        """Send ``call`` to ``spare`` (the module docstring has the layout).
        The caller closes the call's received fds, the pty's slave
        included, once it is sent: the server keeps no copy.  If the send
        fails, the spare is killed (it may be there still) and reaped
        later, and the call is left as it was."""
        if call.pty_fd is None:
            # Its group exists before any SIGG could be forwarded to it.
            # (With pty1 the spare leads a session and makes the group.)
            try:
                os.setpgid(spare.pid, spare.pid)
            except OSError:
                pass  # it has died: the send below fails
        try:
            _send_call(spare.ctl, call)
        except OSError:
            spare.ctl.close()
            try:
                os.kill(spare.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.leaving.append(spare.pid)
            raise
        if call.pty_fd is None:
            spare.ctl.close()
        else:
            spare.ctl.setblocking(False)

    def register(self, poller: "select.poll") -> None:
        """Running calls' sockets, for frames and hang-ups; the forker's."""
        if self.forker is not None:
            poller.register(self.forker.sock.fileno(), select.POLLIN)
        for running in self.running.values():
            if running.sock is not None and running.listening:
                poller.register(running.sock.fileno(), select.POLLIN)
            if running.leader is not None:
                poller.register(running.leader.fileno(), select.POLLIN)

    def handle(self, fd: int) -> bool:
        """A poll event on ``fd``: False if it is neither a running call's
        nor the forker's."""
        if self.forker is not None and self.forker.sock.fileno() == fd:
            self._forker_readable()
            return True
        for running in self.running.values():
            if running.sock is not None and running.sock.fileno() == fd:
                running.readable()
                return True
            if running.leader is not None and running.leader.fileno() == fd:
                running.leader_readable()
                return True
        return False

    def child_changed(self, pid: int, status: int) -> bool:
        """``waitpid`` said ``pid`` stopped or ended.  False if it is not
        ours (not a spare, not running a call)."""
        running = self.running.get(pid)
        if running is not None:
            if os.WIFSTOPPED(status):
                # pty1: the leader's own stops are its business; the
                # executor's come in its reports.
                if not running.pty:
                    running.stopped(os.WSTOPSIG(status))
            else:
                del self.running[pid]
                if running.pty:
                    # The leader has gone: what it wrote is all there.
                    running.leader_readable()
                    if running.reported is not None:
                        status = running.reported
                running.ended(status)
            return True
        if self.forker is not None and pid == self.forker.pid:
            if not os.WIFSTOPPED(status):
                self._forker_gone(f"status {status:#x}", reaped=True)
            return True
        if pid in self.leaving:
            if not os.WIFSTOPPED(status):
                self.leaving.remove(pid)
            return True
        for spare in self.spares:
            if spare.pid == pid:
                if not os.WIFSTOPPED(status):
                    self.spares.remove(spare)
                    spare.ctl.close()
                    self.log.warning(f"spare executor [{pid}] ended before it had a call: status {status:#x}")
                return True
        return False

    def close_spares(self) -> None:
        """The server is quitting: spares (and the forker) see EOF and
        exit."""
        if self.forker is not None:
            # The spares it has sent already are told to go like the rest.
            self._forker_readable()
        if self.forker is not None:
            self._drop_forker()
        for spare in self.spares:
            spare.ctl.close()
            self.leaving.append(spare.pid)
        self.spares = []
