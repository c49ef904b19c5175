"""Wire protocol v1 of prefork-interp, script side (docs/protocol.md).

This module encodes and decodes; it never forks, never touches signal
dispositions and never decides what to do about a bad client (that is the
monitor's job, in ``_monitor``).  Every byte layout of the protocol is
written here once:

1. the ``PREFORK_INTERP`` environment variable the setup process gets
   (protocol.md section 1): :func:`parse_setup_env`;
2. per call (protocol.md section 2), in order: :data:`GREETING`, the
   signalling byte, three fds in ``SCM_RIGHTS`` messages, the length-prefixed
   request, all read by :func:`receive_call`; and the caller's exit status,
   :func:`send_status`.

Extensions (SPEC section 7, protocol.md section 5): a client announces an
extension with a request environment entry whose name starts with
:data:`EXT_ENV_PREFIX`.  :func:`parse_request` is the one place such entries
are recognised: it moves them out of :attr:`Request.env` into
:attr:`Request.extensions`, so they never reach the script's
``os.environ``.  No extension is defined yet, so nothing reads
``extensions``; a later one (signal forwarding, say) starts there.
"""

from __future__ import annotations

__all__ = [
    "ENV_NAME",
    "EXT_ENV_PREFIX",
    "GREETING",
    "MAX_REQUEST",
    "PeerGone",
    "PreforkError",
    "ProtocolError",
    "Request",
    "SetupInfo",
    "encode_request",
    "parse_request",
    "parse_setup_env",
    "receive_call",
    "send_status",
]

import array
import socket
import struct
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from ._errors import PreforkError
from ._proc import close_quietly

# ---------------------------------------------------------------------------
# Constants

#: Environment variable through which the client hands the setup process its
#: fds and the server's start stamp.
ENV_NAME = "PREFORK_INTERP"

#: The only protocol version there is; anything else means a mixed-up install.
PROTOCOL_VERSION = b"v1"

#: Greeting: magic, then a 4-byte length of extra data and the data.  The
#: 7.0.0 C client reads that length without byte-swapping, so the only
#: greeting it can take has length 0.
GREETING = b"PFI\n\0\0\0\0"

#: The byte the client sends after reading the greeting; v1 allows only 0.
SIGNALLING_BYTE = 0

#: The client passes its fds 0, 1 and 2, one per one-byte message.
N_STDIO_FDS = 3

#: Largest request body we accept.  A real exec's arguments and environment
#: are far smaller; the cap stops a bad client making a monitor allocate
#: without bound (protocol.md section 2 step 4).
MAX_REQUEST = 64 << 20

#: Request length prefix and status: 32-bit unsigned, big-endian.
U32_BE = struct.Struct(">I")

#: Request environment entries whose names start with this are reserved for
#: protocol extensions and are never applied to the script's environment.
EXT_ENV_PREFIX = b"PREFORK_INTERP_EXT"

_FD_SIZE = array.array("i").itemsize


# ---------------------------------------------------------------------------
# Errors


class ProtocolError(Exception):
    """The peer sent something protocol v1 does not allow."""


class PeerGone(Exception):
    """The client hung up (EOF, ECONNRESET, EPIPE) or took too long.

    For a monitor this is not an error: the caller is simply gone.
    """


# ---------------------------------------------------------------------------
# The PREFORK_INTERP environment variable


@dataclass(frozen=True)
class SetupInfo:
    """What the client told the setup process in ``PREFORK_INTERP``."""

    #: ``SECS.NSECS`` (the new socket's mtime) as integer nanoseconds: a
    #: program file whose ``st_mtime_ns`` is greater means a reload.
    stamp_ns: int
    listen_fd: int
    call_fd: int
    watchi_fd: int
    watche_fd: int


def _parse_uint(item: bytes, what: str) -> int:
    if not item.isdigit():
        raise PreforkError(f"{ENV_NAME}: {what} is {item!r}, not a decimal number")
    return int(item)


def parse_setup_env(value: bytes) -> SetupInfo:
    """Parse ``PREFORK_INTERP`` (``v1,SECS.NSECS LISTEN,CALL,WATCHI,WATCHE``).

    The value is bytes; words after the second and items after the ones we
    know are ignored (they are for later protocol versions).  Raises
    :class:`ProtocolError` with a one-line message if it is malformed.
    """
    words = value.split(b" ")
    if len(words) < 2:
        raise PreforkError(f"{ENV_NAME}: expected two words, got {value!r}")
    version = words[0].split(b",")
    if version[0] != PROTOCOL_VERSION:
        raise PreforkError(
            f"{ENV_NAME}: protocol {version[0]!r} is not v1"
            " (prefork-interp and this library do not match)"
        )
    if len(version) < 2:
        raise PreforkError(f"{ENV_NAME}: no start stamp after v1")
    secs, dot, nsecs = version[1].partition(b".")
    if not dot or not nsecs or len(nsecs) > 9:
        raise PreforkError(f"{ENV_NAME}: start stamp {version[1]!r} is not SECS.NSECS")
    stamp_ns = _parse_uint(secs, "start stamp seconds") * 1_000_000_000 + _parse_uint(
        nsecs.ljust(9, b"0"), "start stamp nanoseconds"
    )
    fds = words[1].split(b",")
    if len(fds) < 4:
        raise PreforkError(f"{ENV_NAME}: expected 4 fds, got {words[1]!r}")
    listen, call, watchi, watche = (
        _parse_uint(item, name)
        for item, name in zip(fds, ("LISTEN fd", "CALL fd", "WATCHI fd", "WATCHE fd"))
    )
    return SetupInfo(stamp_ns, listen, call, watchi, watche)


# ---------------------------------------------------------------------------
# Socket helpers: explicit loops for short reads, EOF as PeerGone


def _set_deadline(sock: socket.socket, deadline: float) -> None:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise PeerGone("client did not send its request in time")
    sock.settimeout(remaining)


def _recv_exact(sock: socket.socket, n: int, deadline: float, what: str) -> bytes:
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        _set_deadline(sock, deadline)
        try:
            r = sock.recv_into(view[got:])
        except socket.timeout:
            raise PeerGone(f"client did not send {what} in time") from None
        except ConnectionResetError:
            raise PeerGone(f"client reset the connection reading {what}") from None
        if r == 0:
            raise PeerGone(f"EOF after {got} of {n} bytes of {what}")
        got += r
    return bytes(buf)


def _recv_one_fd(sock: socket.socket, deadline: float, which: int) -> int:
    """Receive one one-byte message carrying exactly one fd."""
    _set_deadline(sock, deadline)
    try:
        data, ancdata, flags, _ = sock.recvmsg(1, socket.CMSG_SPACE(_FD_SIZE))
    except socket.timeout:
        raise PeerGone(f"client did not send fd {which} in time") from None
    except ConnectionResetError:
        raise PeerGone(f"client reset the connection sending fd {which}") from None
    fds: List[int] = []
    odd_cmsg = False
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            usable = len(payload) - len(payload) % _FD_SIZE
            fds.extend(array.array("i", payload[:usable]))
        else:
            odd_cmsg = True
    if not data:
        close_quietly(fds)
        raise PeerGone(f"EOF before fd {which}")
    problem: Optional[str] = None
    if flags & socket.MSG_CTRUNC:
        problem = "control data truncated (more than one fd?)"
    elif odd_cmsg or len(ancdata) != 1:
        problem = f"{len(ancdata)} control messages, expected one SCM_RIGHTS"
    elif len(fds) != 1:
        problem = f"{len(fds)} fds in one message"
    if problem is not None:
        close_quietly(fds)
        raise ProtocolError(f"receiving fd {which}: {problem}")
    return fds[0]


# ---------------------------------------------------------------------------
# The request


@dataclass
class Request:
    """One call's request, as the client sent it."""

    #: The caller's environment, in order, first occurrence of a name winning
    #: (as Python builds ``os.environ`` at start-up); reserved
    #: ``PREFORK_INTERP_EXT*`` entries removed.
    env: Dict[bytes, bytes]
    #: ``interpreter, [script,] args...`` exactly as on the wire.
    argv: List[bytes]
    #: Reserved ``PREFORK_INTERP_EXT*`` entries (name -> value): extension
    #: announcements.  None is defined yet.
    extensions: Dict[bytes, bytes] = field(default_factory=dict)


def parse_request(body: bytes) -> Request:
    """Decode a request body: env strings, an empty string, then arguments.

    Every string is NUL-terminated.  This is where reserved
    ``PREFORK_INTERP_EXT*`` environment entries are recognised and kept out
    of the environment the script will see.
    """
    if not body.endswith(b"\0"):
        raise ProtocolError("request does not end with NUL")
    strings = body[:-1].split(b"\0")
    try:
        end_of_env = strings.index(b"")
    except ValueError:
        raise ProtocolError("request has no empty string ending the environment") from None
    argv = strings[end_of_env + 1 :]
    if not argv:
        raise ProtocolError("request has no arguments (not even the interpreter)")
    env: Dict[bytes, bytes] = {}
    extensions: Dict[bytes, bytes] = {}
    for entry in strings[:end_of_env]:
        name, eq, value = entry.partition(b"=")
        if not eq:
            raise ProtocolError(f"request environment entry {entry[:40]!r} has no '='")
        target = extensions if name.startswith(EXT_ENV_PREFIX) else env
        target.setdefault(name, value)
    return Request(env, argv, extensions)


def encode_request(env: List[Tuple[bytes, bytes]], argv: List[bytes]) -> bytes:
    """Encode a request body with its length prefix (what a client sends).

    The library never sends requests; tests and tools use this to speak the
    protocol, so the layout stays written in one place.
    """
    body = b"".join(n + b"=" + v + b"\0" for n, v in env) + b"\0"
    body += b"".join(a + b"\0" for a in argv)
    return U32_BE.pack(len(body)) + body


def receive_call(sock: socket.socket, timeout: float) -> Tuple[List[int], Request]:
    """Run protocol steps 1-4 on a call socket (protocol.md section 2).

    Sends the greeting, then reads the signalling byte, the caller's three
    stdio fds and the request, all within ``timeout`` seconds.  Returns the
    fds (the caller's 0, 1, 2; ours to close) and the request.  Raises
    :class:`PeerGone` if the client hangs up or is too slow, and
    :class:`ProtocolError` if it sends something else; either way no
    received fd is left open.  Leaves ``sock`` in blocking mode.
    """
    deadline = time.monotonic() + timeout
    fds: List[int] = []
    try:
        _set_deadline(sock, deadline)
        try:
            sock.sendall(GREETING)
        except (BrokenPipeError, ConnectionResetError):
            raise PeerGone("client gone before the greeting") from None
        except socket.timeout:
            raise PeerGone("client did not take the greeting in time") from None
        byte = _recv_exact(sock, 1, deadline, "the signalling byte")[0]
        if byte != SIGNALLING_BYTE:
            raise ProtocolError(f"signalling byte is 0x{byte:02x}, not 0")
        for which in range(N_STDIO_FDS):
            fds.append(_recv_one_fd(sock, deadline, which))
        (length,) = U32_BE.unpack(_recv_exact(sock, U32_BE.size, deadline, "the request length"))
        if length > MAX_REQUEST:
            raise ProtocolError(f"request length {length} is over the {MAX_REQUEST} byte limit")
        request = parse_request(_recv_exact(sock, length, deadline, "the request"))
        sock.setblocking(True)
        return fds, request
    except BaseException:
        close_quietly(fds)
        raise


def send_status(sock: socket.socket, status: int) -> None:
    """Protocol step 5: send the executor's raw wait status.

    Raises :class:`PeerGone` if the caller has gone (EPIPE, ECONNRESET).
    """
    try:
        sock.sendall(U32_BE.pack(status & 0xFFFFFFFF), socket.MSG_NOSIGNAL)
    except (BrokenPipeError, ConnectionResetError):
        raise PeerGone("client gone before the exit status") from None
