"""Wire protocol of prefork-interp, script side: v1 and extensions call1
and pty1 (docs/protocol.md).

This module encodes and decodes; it never forks, never touches signal
dispositions and never decides what to do about a bad client (that is the
monitor's job, in ``_monitor``).  Every byte layout of the protocol is
written here once:

1. the ``PREFORK_INTERP`` environment variable the setup process gets
   (protocol.md section 1): :func:`parse_setup_env`;
2. per call (protocol.md section 2), in order: :func:`send_greeting`, then
   the signalling byte, three fds in ``SCM_RIGHTS`` messages and the
   length-prefixed request, read without blocking, as they arrive, by
   :class:`Handshake` (protocol.md section 4.1); and the caller's exit
   status, :func:`send_status`.
3. extension ``call1`` (protocol.md section 6): the client's offer, a
   reserved request environment entry (:data:`EXT_ENV_NAME`, parsed by
   :func:`parse_request` into :attr:`Request.offer`); the accept frame and
   the caller's attributes (also :class:`Handshake`; :class:`Attributes`);
   then frames both ways (:func:`encode_frame`, :class:`FrameReader`):
   ``SIGP``/``SIGG`` from the client, ``STOP``/``EXIT`` to it.
4. extension ``pty1`` (protocol.md section 9), offered with call1: the
   accept frame names it too, ``ATTR`` has the key ``pty``
   (:attr:`Attributes.pty`, and ``ptybg``: :attr:`Attributes.ptybg`), and
   one more fd follows the extra fds, the slave side of the
   pseudo-terminal the client made for the call (:attr:`Handshake.pty_fd`);
   while the call runs the client sends ``FGND`` when its job moves to or
   from the foreground of the caller's terminal.

A request is kept as the one ``bytes`` buffer it arrived in:
:func:`parse_request` checks its shape without splitting it, and only the
executor splits it (:meth:`Request.env_entries`, :meth:`Request.argv`), so
a server and its monitors need about N bytes for an N-byte request however
many strings it holds (protocol.md section 4.1).

Extensions (SPEC section 7, protocol.md section 5): request environment
entries whose names start with :data:`EXT_ENV_PREFIX` are reserved.
:func:`parse_request` parses the ones it knows into :class:`Offer`, and
:meth:`Request.env_entries` leaves every one of them out, so they never
reach the script's environment.
"""

__all__ = [
    "CALL1",
    "ENV_NAME",
    "EXT_ENV_NAME",
    "EXT_ENV_PREFIX",
    "GREETING",
    "MAX_FRAME",
    "MAX_REQUEST_LEN",
    "PTY1",
    "RLIM_INFINITY",
    "TAG_ACCEPT",
    "TAG_ATTR",
    "TAG_EXIT",
    "TAG_FGND",
    "TAG_SIGG",
    "TAG_SIGP",
    "TAG_STOP",
    "Attributes",
    "Frame",
    "FrameReader",
    "Handshake",
    "Offer",
    "PeerGone",
    "PreforkError",
    "ProtocolError",
    "Request",
    "SetupInfo",
    "decode_foreground",
    "decode_u32",
    "encode_attributes",
    "encode_frame",
    "encode_request",
    "encode_u32_frame",
    "env_mapping",
    "fds_in",
    "parse_attributes",
    "parse_request",
    "parse_setup_env",
    "send_frame",
    "send_greeting",
    "send_status",
]

# Only C-level modules (_struct, not its wrapper struct): the setup
# process imports this module on the cold path, to take the first call in
# (protocol.md section 7), and every module it pulls in costs that call.
import resource

import _socket
import _struct

from ._errors import PreforkError
from ._proc import close_quietly
from ._record import Record

TYPE_CHECKING = False  # not typing's: importing typing costs a cold call
if TYPE_CHECKING:
    import signal as _signal  # the stubs of _signal, which has none of its own
    from typing import Dict, FrozenSet, Iterable, List, Optional, Tuple
else:
    import _signal

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

#: Largest request body we accept (protocol.md section 4.1): 6 MiB + 4 KiB.
#: Linux refuses to exec a program whose argument and environment strings
#: exceed 6 MiB (3/4 of the default 8 MiB stack limit), and a client sends
#: a subset of its own arguments and its environment, plus a few bytes of
#: extension entries.  A longer length is refused as soon as it is read.
MAX_REQUEST_LEN = 6 * 1024 * 1024 + 4096

#: Bytes asked of the socket at once for a request body: the buffer grows
#: with what has arrived, never to a length the peer merely announced.
_BODY_CHUNK = 256 * 1024

#: Request length prefix and status: 32-bit unsigned, big-endian.
U32_BE = _struct.Struct(">I")

#: Request environment entries whose names start with this are reserved for
#: protocol extensions and are never applied to the script's environment.
EXT_ENV_PREFIX = b"PREFORK_INTERP_EXT"

#: The reserved entry through which a client offers extensions: its value
#: is a comma-separated list of names (protocol.md section 6.1).
EXT_ENV_NAME = b"PREFORK_INTERP_EXT"

#: The per-call extension (protocol.md section 6).
CALL1 = "call1"

#: The per-call extension giving the call a pseudo-terminal (protocol.md
#: section 9); offered and accepted only with call1.
PTY1 = "pty1"

#: The extension announced in ``PREFORK_INTERP``, and the payload of the
#: greeting that takes it up (protocol.md section 7).
INPLACE1 = b"inplace1"
#: ``PREFORK_INTERP`` item announcing the server record (protocol.md
#: section 8), whose path is the rest of the value after the fds.
RECORD1 = b"record1"

#: Extension frames (protocol.md section 6.2): 4-byte tag, u32 BE length.
_FRAME_HEADER = _struct.Struct(">4sI")

#: Largest frame body a receiver accepts; more is a protocol error.
MAX_FRAME = 65536

#: Server -> client: the extensions the server accepts (comma-separated).
TAG_ACCEPT = b"PFXA"
#: Client -> server: the caller's attributes, once, right after the accept.
TAG_ATTR = b"ATTR"
#: Client -> server: send a signal (u32 BE) to the executor.
TAG_SIGP = b"SIGP"
#: Client -> server: send a signal (u32 BE) to the call's process group.
TAG_SIGG = b"SIGG"
#: Client -> server, pty1: the client is now in the foreground (u32 BE 1)
#: or the background (0) of the caller's terminal (protocol.md section 9.2).
TAG_FGND = b"FGND"
#: Server -> client: the executor has stopped with this signal (u32 BE).
TAG_STOP = b"STOP"
#: Server -> client: the executor's raw wait status (u32 BE); last frame.
TAG_EXIT = b"EXIT"

#: ``inf`` in an ``rlimit`` attribute: Python's ``resource.RLIM_INFINITY``.
RLIM_INFINITY = resource.RLIM_INFINITY

#: Highest signal number (64 on Linux).
_MAX_SIGNAL = _signal.NSIG - 1

#: At most this many extra fds in ``ATTR`` (protocol.md section 6.3).
MAX_EXTRA_FDS = 256

#: Size of an fd in ``SCM_RIGHTS`` data: a C int.
_FD_SIZE = _struct.calcsize("i")


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


class SetupInfo(Record):
    """What the client told the setup process in ``PREFORK_INTERP``."""

    __slots__ = ("stamp_ns", "listen_fd", "call_fd", "watchi_fd", "watche_fd", "in_place", "record_path")

    #: ``SECS.NSECS`` (the new socket's mtime) as integer nanoseconds: a
    #: program file whose ``st_mtime_ns`` is greater means a reload.
    stamp_ns: int
    listen_fd: int
    call_fd: int
    watchi_fd: int
    watche_fd: int
    #: The client announced ``inplace1``: the setup process runs the first
    #: call itself (protocol.md section 7).
    in_place: bool
    #: With ``record1``: the server record's path (``--list``).
    record_path: "Optional[bytes]"

    def __init__(
        self,
        stamp_ns: int,
        listen_fd: int,
        call_fd: int,
        watchi_fd: int,
        watche_fd: int,
        in_place: bool = False,
        record_path: "Optional[bytes]" = None,
    ) -> None:
        self.stamp_ns = stamp_ns
        self.listen_fd = listen_fd
        self.call_fd = call_fd
        self.watchi_fd = watchi_fd
        self.watche_fd = watche_fd
        self.in_place = in_place
        self.record_path = record_path


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
    record = None
    if RECORD1 in version[2:]:
        # Everything after the second space: a path may hold spaces.
        record = value.split(b" ", 2)[2] if len(words) > 2 else b""
        if not record:
            raise PreforkError(f"{ENV_NAME}: record1 announced but no record path")
    return SetupInfo(stamp_ns, listen, call, watchi, watche, INPLACE1 in version[2:], record)


# ---------------------------------------------------------------------------
# Non-blocking socket reads: exactly the bytes of one item, one fd per message


def _recv_some(sock: "_socket.socket", n: int, what: str) -> "Optional[bytes]":
    """Up to ``n`` bytes that have arrived, or None if none has.

    Never more than ``n``: on a stream that carries fds, a longer read could
    take the data byte of the next fd's message, and the fd with it.
    Raises :class:`PeerGone` at EOF or on a reset.
    """
    try:
        data = sock.recv(n, _socket.MSG_DONTWAIT)
    except BlockingIOError:
        return None
    except ConnectionResetError:
        raise PeerGone(f"client reset the connection sending {what}") from None
    if not data:
        raise PeerGone(f"EOF before {what}")
    return data


def fds_in(ancdata: "List[Tuple[int, int, bytes]]") -> "List[int]":
    """The fds that ``recvmsg``'s control data (``ancdata``) carries, in
    its ``SCM_RIGHTS`` messages."""
    fds: "List[int]" = []
    for level, kind, payload in ancdata:
        if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
            usable = len(payload) - len(payload) % _FD_SIZE
            fds.extend(memoryview(payload)[:usable].cast("i"))
    return fds


def _recv_fd(sock: "_socket.socket", what: str) -> "Optional[int]":
    """One one-byte message carrying exactly one fd, or None if it has not
    arrived.  The fd is close-on-exec.  Raises :class:`PeerGone` at EOF and
    :class:`ProtocolError` for a message with no fd, several, or truncated
    control data (no fd received is then left open)."""
    try:
        data, ancdata, flags, _ = sock.recvmsg(
            1, _socket.CMSG_SPACE(_FD_SIZE), _socket.MSG_DONTWAIT | _socket.MSG_CMSG_CLOEXEC
        )
    except BlockingIOError:
        return None
    except ConnectionResetError:
        raise PeerGone(f"client reset the connection sending {what}") from None
    fds = fds_in(ancdata)
    odd_cmsg = any(not (level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS) for level, kind, _ in ancdata)
    if not data:
        close_quietly(fds)
        raise PeerGone(f"EOF before {what}")
    problem: "Optional[str]" = None
    if flags & _socket.MSG_CTRUNC:
        problem = "control data truncated (more than one fd?)"
    elif odd_cmsg or len(ancdata) != 1:
        problem = f"{len(ancdata)} control messages, expected one SCM_RIGHTS"
    elif len(fds) != 1:
        problem = f"{len(fds)} fds in one message"
    if problem is not None:
        close_quietly(fds)
        raise ProtocolError(f"receiving {what}: {problem}")
    return fds[0]


def _send_now(sock: "_socket.socket", data: bytes, what: str) -> None:
    """Send a few bytes without blocking (a server never waits for a client).

    The socket's buffer is empty or nearly so whenever we send the greeting
    or the accept frame, so all of it goes at once unless the client is gone.
    """
    try:
        sent = sock.send(data, _socket.MSG_DONTWAIT | _socket.MSG_NOSIGNAL)
    except (BlockingIOError, BrokenPipeError, ConnectionResetError):
        sent = 0
    if sent != len(data):
        raise PeerGone(f"client did not take {what}")


def send_greeting(sock: "_socket.socket") -> None:
    """Protocol step 1, at once after accept, without blocking.  Raises
    :class:`PeerGone` if the client has gone."""
    _send_now(sock, GREETING, "the greeting")


def send_in_place_greeting(sock: "_socket.socket") -> None:
    """Step 1 of the first call run in place (extension ``inplace1``,
    protocol.md section 7): the greeting whose payload names it."""
    _send_now(sock, GREETING[:4] + U32_BE.pack(len(INPLACE1)) + INPLACE1, "the greeting")


# ---------------------------------------------------------------------------
# The request


class Offer(Record):
    """The extensions a client offered (protocol.md section 6.1), from the
    request's reserved ``PREFORK_INTERP_EXT*`` entries.

    Kept as the raw value: a request may hold millions of names, and the
    server makes no object per name (protocol.md section 4.1, memory).
    """

    __slots__ = ("value", "ignored")

    #: The value of the first ``PREFORK_INTERP_EXT`` entry: extension names,
    #: comma-separated, known or not (``b""`` without one).
    value: bytes
    #: How many reserved entries were neither that one nor a repeat of it:
    #: not understood, left out of the environment and otherwise ignored.
    ignored: int

    def __init__(self, value: bytes = b"", ignored: int = 0) -> None:
        self.value = value
        self.ignored = ignored

    @property
    def call1(self) -> bool:
        """Whether the client offers extension call1."""
        return _has_item(self.value, CALL1.encode())

    @property
    def pty1(self) -> bool:
        """Whether the client offers extension pty1 with call1 (offered
        alone, it is ignored: protocol.md section 9.1)."""
        return self.call1 and _has_item(self.value, PTY1.encode())

    def names(self) -> "Tuple[str, ...]":
        """The names offered, in order (empty items skipped; bytes that are
        not ASCII cannot name a known extension and are kept
        backslash-escaped).  For messages and tests."""
        return tuple(item.decode("ascii", "backslashreplace") for item in self.value.split(b",") if item)


_COMMA = ord(",")


def _has_item(items: bytes, item: bytes) -> bool:
    """Whether ``item`` is one of the comma-separated ``items``: one search
    per occurrence of it, no split (the list may be long)."""
    at = items.find(item)
    while at >= 0:
        end = at + len(item)
        if (at == 0 or items[at - 1] == _COMMA) and (end == len(items) or items[end] == _COMMA):
            return True
        at = items.find(item, at + 1)
    return False


def _parse_offer(body: bytes, env_end: int) -> Offer:
    """Find the reserved entries among the environment entries of a request
    body (those before ``env_end``): the first ``PREFORK_INTERP_EXT`` gives
    the offer, as the first occurrence of any name counts; the others are
    counted as ignored.  One search per reserved entry, no split."""
    value: "Optional[bytes]" = None
    ignored = 0
    at = body.find(EXT_ENV_PREFIX, 0, env_end)
    while at >= 0:
        end = body.index(b"\0", at)
        if at == 0 or body[at - 1] == 0:  # the start of an entry, not inside one
            eq = body.index(b"=", at, end)  # every entry has one (checked)
            if body[at:eq] != EXT_ENV_NAME:
                ignored += 1
            elif value is None:
                value = body[eq + 1 : end]
        at = body.find(EXT_ENV_PREFIX, end, env_end)
    return Offer(value or b"", ignored)


#: Every byte but NUL and ``=``: deleted from a request body, they leave
#: one NUL per string and the ``=`` signs in it (:func:`_check_env_equals`).
_NOT_NUL_OR_EQUALS = bytes(b for b in range(256) if b not in b"\0=")


def _check_env_equals(body: bytes, env_end: int) -> None:
    """Raise :class:`ProtocolError` if an environment entry of ``body``
    (one of the strings before ``env_end``) has no ``=``.

    At C speed, with no object per string and no ``re`` (the cold path
    imports none): with every byte but NUL and ``=`` deleted, the string
    ending with the ``i``-th NUL has no ``=`` exactly when that NUL comes
    first or right after another.  Only an error needs ``re``, to say which.
    """
    env_count = body.count(b"\0", 0, env_end)
    if env_count == 0:
        return
    squeezed = body.translate(None, _NOT_NUL_OR_EQUALS)  # a copy, dropped at once
    # The first string with no "=" after string 0 ends with the second NUL
    # of the first pair; it is string number count(NULs up to the first).
    pair = squeezed.find(b"\0\0")
    if not squeezed.startswith(b"\0") and (pair < 0 or squeezed.count(b"\0", 0, pair + 1) >= env_count):
        return  # strings 0 to env_count - 1, the environment, all have one
    import re

    bad = re.compile(rb"(?:\A|\0)([^=\0]*)\0").search(body, 0, env_end)
    assert bad is not None
    raise ProtocolError(f"request environment entry {bad.group(1)[:40]!r} has no '='")


class Request(Record):
    """One call's request: the body exactly as the client sent it.

    The server and the monitor keep it as this one buffer; only the executor
    splits it into strings (:meth:`env_entries`, :meth:`argv`).
    """

    __slots__ = ("body", "env_end", "offer")

    #: NUL-terminated environment entries, an empty string, NUL-terminated
    #: arguments (protocol.md section 2 step 4), shape checked.
    body: bytes
    #: Index in ``body`` of the empty string (its NUL) after the environment.
    env_end: int
    #: What the reserved ``PREFORK_INTERP_EXT*`` entries offered.
    offer: Offer

    def __init__(self, body: bytes, env_end: int, offer: Offer = Offer()) -> None:
        self.body = body
        self.env_end = env_end
        self.offer = offer

    def env_entries(self) -> "List[bytes]":
        """The caller's environment entries (``NAME=value``), in order,
        reserved ``PREFORK_INTERP_EXT*`` entries left out.  Splits the body:
        for the executor."""
        if self.env_end == 0:
            return []
        entries = self.body[: self.env_end - 1].split(b"\0")
        return [entry for entry in entries if not entry.startswith(EXT_ENV_PREFIX)]

    def env(self) -> "Dict[bytes, bytes]":
        """The environment as a mapping (:func:`env_mapping`)."""
        return env_mapping(self.env_entries())

    def argv(self) -> "List[bytes]":
        """``interpreter, [script,] args...`` exactly as on the wire.  Splits
        the body: for the executor."""
        return self.body[self.env_end + 1 : -1].split(b"\0")


def env_mapping(entries: "Iterable[bytes]") -> "Dict[bytes, bytes]":
    """``NAME=value`` entries as a mapping, as Python builds ``os.environ``
    at start-up: split at the first ``=``, the first occurrence of a name
    winning."""
    env: "Dict[bytes, bytes]" = {}
    for entry in entries:
        name, _, value = entry.partition(b"=")
        env.setdefault(name, value)
    return env


def parse_request(body: bytes) -> Request:
    """Check a request body's shape and parse its extension offer.

    The body is environment strings, an empty string, then arguments, each
    NUL-terminated; each environment string has a ``=``; there is at least
    one argument (the interpreter).  Checked without splitting the body into
    strings (C-speed searches, no object per string), so a body of millions
    of tiny strings costs the server no more memory than its bytes.  Raises
    :class:`ProtocolError` if the shape is wrong.
    """
    if not body.endswith(b"\0"):
        raise ProtocolError("request does not end with NUL")
    if body.startswith(b"\0"):
        env_end = 0
    else:
        pair = body.find(b"\0\0")
        if pair < 0:
            raise ProtocolError("request has no empty string ending the environment")
        env_end = pair + 1
    if env_end + 1 == len(body):
        raise ProtocolError("request has no arguments (not even the interpreter)")
    _check_env_equals(body, env_end)
    return Request(body, env_end, _parse_offer(body, env_end))


def encode_request(env: "Iterable[Tuple[bytes, bytes]]", argv: "Iterable[bytes]") -> bytes:
    """Encode a request body with its length prefix (what a client sends).

    The library never sends requests; tests and tools use this to speak the
    protocol, so the layout stays written in one place.
    """
    body = b"".join(n + b"=" + v + b"\0" for n, v in env) + b"\0"
    body += b"".join(a + b"\0" for a in argv)
    return U32_BE.pack(len(body)) + body


def send_status(sock: "_socket.socket", status: int) -> None:
    """Protocol step 5: send the executor's raw wait status.

    Raises :class:`PeerGone` if the caller has gone (EPIPE, ECONNRESET).
    """
    try:
        sock.sendall(U32_BE.pack(status & 0xFFFFFFFF), _socket.MSG_NOSIGNAL)
    except (BrokenPipeError, ConnectionResetError):
        raise PeerGone("client gone before the exit status") from None


# ---------------------------------------------------------------------------
# Extension call1: frames (protocol.md section 6.2)


class Frame(Record):
    """One extension frame: a 4-byte tag and its body."""

    __slots__ = ("tag", "body")

    tag: bytes
    body: bytes

    def __init__(self, tag: bytes, body: bytes) -> None:
        self.tag = tag
        self.body = body


def encode_frame(tag: bytes, body: bytes = b"") -> bytes:
    """A frame on the wire: tag, u32 BE body length, body."""
    if len(tag) != 4:
        raise ValueError(f"frame tag {tag!r} is not 4 bytes")
    if len(body) > MAX_FRAME:
        raise ValueError(f"frame body of {len(body)} bytes is over {MAX_FRAME}")
    return _FRAME_HEADER.pack(tag, len(body)) + body


def encode_u32_frame(tag: bytes, value: int) -> bytes:
    """A frame whose body is one u32 BE (``SIGP``, ``SIGG``, ``STOP``, ``EXIT``)."""
    return encode_frame(tag, U32_BE.pack(value & 0xFFFFFFFF))


def decode_u32(frame: Frame) -> int:
    """The u32 BE body of a ``SIGP``/``SIGG``/``STOP``/``EXIT``/``FGND`` frame."""
    if len(frame.body) != U32_BE.size:
        raise ProtocolError(f"{_tag_text(frame.tag)} frame body is {len(frame.body)} bytes, not 4")
    (value,) = U32_BE.unpack(frame.body)
    return int(value)


def decode_foreground(frame: Frame) -> bool:
    """An ``FGND`` frame's body: True for the foreground (1), False for the
    background (0); anything else is a :class:`ProtocolError`."""
    value = decode_u32(frame)
    if value not in (0, 1):
        raise ProtocolError(f"FGND frame: {value} is not 0 or 1")
    return value == 1


def _tag_text(tag: bytes) -> str:
    return tag.decode("ascii", "backslashreplace")


def _check_frame_length(tag: bytes, length: int) -> None:
    if length > MAX_FRAME:
        raise ProtocolError(f"{_tag_text(tag)!r} frame of {length} bytes is over the {MAX_FRAME} byte limit")


class FrameReader:
    """Incremental frame decoder for a stream read in pieces.

    :meth:`feed` takes whatever the socket gave and returns the frames it
    completed; a partial frame waits for more.  A length over
    :data:`MAX_FRAME` raises :class:`ProtocolError` as soon as the header
    is in, before any of the body is buffered.
    """

    def __init__(self) -> None:
        self._buf = bytearray()

    @property
    def pending(self) -> int:
        """Bytes of an incomplete frame held back."""
        return len(self._buf)

    def feed(self, data: bytes) -> "List[Frame]":
        self._buf += data
        frames: "List[Frame]" = []
        start = 0
        while len(self._buf) - start >= _FRAME_HEADER.size:
            tag, length = _FRAME_HEADER.unpack_from(self._buf, start)
            _check_frame_length(tag, length)
            end = start + _FRAME_HEADER.size + length
            if len(self._buf) < end:
                break
            frames.append(Frame(bytes(tag), bytes(self._buf[start + _FRAME_HEADER.size : end])))
            start = end
        del self._buf[:start]
        return frames


def send_frame(sock: "_socket.socket", tag: bytes, body: bytes = b"") -> None:
    """Send one frame.  Raises :class:`PeerGone` if the caller has gone."""
    try:
        sock.sendall(encode_frame(tag, body), _socket.MSG_NOSIGNAL)
    except (BrokenPipeError, ConnectionResetError):
        raise PeerGone(f"client gone before the {_tag_text(tag)} frame") from None


# ---------------------------------------------------------------------------
# Extension call1: the caller's attributes (protocol.md section 6.3)


class Attributes(Record):
    """What the ``ATTR`` frame says about the caller.  ``None`` (or, for
    ``rlimits``, a missing resource): not sent, the server's stays."""

    __slots__ = ("umask", "nice", "rlimits", "sigign", "sigmask", "fds", "pty", "ptybg")

    #: The caller's umask.
    umask: "Optional[int]"
    #: The caller's nice value.
    nice: "Optional[int]"
    #: ``(resource, soft, hard)``, :data:`RLIM_INFINITY` for ``inf``, in the
    #: order sent, one per resource.
    rlimits: "Tuple[Tuple[int, int, int], ...]"
    #: Signals the caller ignores (``SIG_IGN``).
    sigign: "Optional[FrozenSet[int]]"
    #: Signals the caller blocks.
    sigmask: "Optional[FrozenSet[int]]"
    #: The caller's other open fds the client passes, ascending; each
    #: arrives, in this order, as one ``SCM_RIGHTS`` message after the frame.
    fds: "Tuple[int, ...]"
    #: Extension pty1 (protocol.md section 9.2): the numbers among 0-2 that
    #: the pty's slave replaces, ascending; the slave arrives after the
    #: extra fds.  None: no pty (the key is absent).
    pty: "Optional[Tuple[int, ...]]"
    #: Extension pty1: the client starts in the background of the caller's
    #: terminal (``ptybg=1``; absent or ``0``: in its foreground).  Only
    #: meaningful with :attr:`pty`.
    ptybg: bool

    def __init__(
        self,
        umask: "Optional[int]" = None,
        nice: "Optional[int]" = None,
        rlimits: "Tuple[Tuple[int, int, int], ...]" = (),
        sigign: "Optional[FrozenSet[int]]" = None,
        sigmask: "Optional[FrozenSet[int]]" = None,
        fds: "Tuple[int, ...]" = (),
        pty: "Optional[Tuple[int, ...]]" = None,
        ptybg: bool = False,
    ) -> None:
        self.umask = umask
        self.nice = nice
        self.rlimits = rlimits
        self.sigign = sigign
        self.sigmask = sigmask
        self.fds = fds
        self.pty = pty
        self.ptybg = ptybg


_ATTR_KEYS = ("umask", "nice", "rlimit", "sigign", "sigmask", "fds", "pty", "ptybg")


def _attr_int(key: str, text: str, signed: bool = False) -> int:
    digits = text[1:] if signed and text.startswith("-") else text
    if not (digits.isascii() and digits.isdigit()):
        raise ProtocolError(f"ATTR {key}: {text[:40]!r} is not a decimal number")
    return int(text)


def _attr_limit(text: str) -> int:
    return RLIM_INFINITY if text == "inf" else _attr_int("rlimit", text)


def _attr_list(key: str, text: str) -> "List[int]":
    return [_attr_int(key, item) for item in text.split(",")] if text else []


def _attr_signals(key: str, text: str) -> "FrozenSet[int]":
    signals = _attr_list(key, text)
    for sig in signals:
        if not 1 <= sig <= _MAX_SIGNAL:
            raise ProtocolError(f"ATTR {key}: {sig} is not a signal number")
    return frozenset(signals)


def parse_attributes(body: bytes) -> Attributes:
    """Decode an ``ATTR`` frame body: NUL-terminated ``key=value`` strings.

    Keys we do not know are ignored (later versions may add some); a known
    key with a bad value, a key given twice (``rlimit``: the same resource
    twice), or a body that is not NUL-terminated ASCII ``key=value``
    strings is a :class:`ProtocolError`.
    """
    if body and not body.endswith(b"\0"):
        raise ProtocolError("ATTR body does not end with NUL")
    try:
        text = body.decode("ascii")
    except UnicodeDecodeError:
        raise ProtocolError("ATTR body is not ASCII") from None
    values: "Dict[str, str]" = {}
    rlimits: "Dict[int, Tuple[int, int, int]]" = {}
    for entry in text.split("\0")[:-1] if text else []:
        key, eq, value = entry.partition("=")
        if not eq:
            raise ProtocolError(f"ATTR entry {entry[:40]!r} has no '='")
        if key not in _ATTR_KEYS:
            continue
        if key == "rlimit":
            parts = value.split(",")
            if len(parts) != 3:
                raise ProtocolError(f"ATTR rlimit {value[:40]!r} is not RESOURCE,SOFT,HARD")
            limit = (_attr_int(key, parts[0]), _attr_limit(parts[1]), _attr_limit(parts[2]))
            if limit[0] in rlimits:
                raise ProtocolError(f"ATTR rlimit: resource {limit[0]} given twice")
            rlimits[limit[0]] = limit
        elif key in values:
            raise ProtocolError(f"ATTR {key} given twice")
        else:
            values[key] = value
    umask: "Optional[int]" = None
    if "umask" in values:
        octal = values["umask"]
        if not octal or not all(c in "01234567" for c in octal) or int(octal, 8) > 0o777:
            raise ProtocolError(f"ATTR umask: {octal[:40]!r} is not an octal umask")
        umask = int(octal, 8)
    nice: "Optional[int]" = None
    if "nice" in values:
        nice = _attr_int("nice", values["nice"], signed=True)
        if not -20 <= nice <= 19:
            raise ProtocolError(f"ATTR nice: {nice} is not a nice value")
    fds = tuple(_attr_list("fds", values.get("fds", "")))
    if len(fds) > MAX_EXTRA_FDS:
        raise ProtocolError(f"ATTR fds: {len(fds)} fds, more than {MAX_EXTRA_FDS}")
    if any(fd < 3 for fd in fds) or any(a >= b for a, b in zip(fds, fds[1:])):
        raise ProtocolError("ATTR fds: not ascending numbers from 3 up")
    pty: "Optional[Tuple[int, ...]]" = None
    if "pty" in values:
        # Whether pty1 was accepted is the handshake's to check.
        pty = tuple(_attr_list("pty", values["pty"]))
        if not pty or any(fd > 2 for fd in pty) or any(a >= b for a, b in zip(pty, pty[1:])):
            raise ProtocolError(f"ATTR pty: {values['pty'][:40]!r} is not ascending numbers among 0-2")
    ptybg = values.get("ptybg", "0")
    if ptybg not in ("0", "1"):
        raise ProtocolError(f"ATTR ptybg: {ptybg[:40]!r} is not 0 or 1")
    return Attributes(
        umask=umask,
        nice=nice,
        rlimits=tuple(rlimits.values()),
        sigign=_attr_signals("sigign", values["sigign"]) if "sigign" in values else None,
        sigmask=_attr_signals("sigmask", values["sigmask"]) if "sigmask" in values else None,
        fds=fds,
        pty=pty,
        ptybg=ptybg == "1",
    )


def encode_attributes(attrs: Attributes) -> bytes:
    """An ``ATTR`` frame body (what a client sends; for tests and tools).

    Keys in the order of protocol.md's table; absent attributes omitted.
    """

    # int(): an IntEnum (signal.Signals) prints its name on Python < 3.11.
    def limit(value: int) -> str:
        return "inf" if value == RLIM_INFINITY else str(int(value))

    def numbers(values: "Iterable[int]") -> str:
        return ",".join(str(int(v)) for v in sorted(values))

    entries: "List[str]" = []
    if attrs.umask is not None:
        entries.append(f"umask={int(attrs.umask):03o}")
    if attrs.nice is not None:
        entries.append(f"nice={int(attrs.nice)}")
    entries.extend(f"rlimit={int(res)},{limit(soft)},{limit(hard)}" for res, soft, hard in attrs.rlimits)
    if attrs.sigign is not None:
        entries.append(f"sigign={numbers(attrs.sigign)}")
    if attrs.sigmask is not None:
        entries.append(f"sigmask={numbers(attrs.sigmask)}")
    entries.append(f"fds={numbers(attrs.fds)}")
    if attrs.pty is not None:
        entries.append(f"pty={numbers(attrs.pty)}")
    if attrs.ptybg:
        entries.append("ptybg=1")
    return "".join(entry + "\0" for entry in entries).encode("ascii")


# ---------------------------------------------------------------------------
# A call's handshake, read as it arrives (protocol.md sections 2 and 4.1)


class Handshake:
    """Steps 2-4 of a call and, when the client offers call1, the accept
    frame, the ``ATTR`` frame and the extra fds (sections 6.1-6.3), and
    with pty1 accepted too, the pty's slave (section 9.2), read from a
    connection without ever blocking.

    The server greets (:func:`send_greeting`), then calls :meth:`advance`
    whenever the socket polls readable; each call reads whatever has
    arrived, item by item, exactly the bytes of each item (a stream that
    carries fds must not be read past the data byte of the next fd's
    message), and each fd with a one-byte ``recvmsg``.  The request body
    buffer grows with the bytes received, never to the announced length,
    and a length over :data:`MAX_REQUEST_LEN` is refused as soon as its 4
    bytes are in.

    Once :meth:`advance` has returned True the fields are complete:
    :attr:`stdio`, :attr:`request`, with call1 :attr:`attrs` and
    :attr:`extra_fds`, and with pty1 :attr:`pty_fd`.  The received fds
    belong to the handshake until the caller takes them; :meth:`close_fds`
    closes them.

    ``accept_pty1``: whether to accept extension pty1 when the client
    offers it (not for a first call run in place, protocol.md section 7:
    the setup process leads the process group the client made, and a
    group leader cannot start a session; it is in the caller's session,
    with the caller's terminal, already).
    """

    # The items, in order; each step reads one (an fd, or a run of bytes).
    _SIGNALLING_BYTE = "the signalling byte"
    _STDIO = "stdio fds"
    _LENGTH = "the request length"
    _BODY = "the request"
    _FRAME_HEADER = "a frame header"
    _FRAME_BODY = "a frame body"
    _EXTRA_FDS = "the extra fds"
    _PTY_FD = "the pty slave"
    _DONE = "nothing more"

    def __init__(self, sock: "_socket.socket", accept_pty1: bool = True) -> None:
        self.sock = sock
        self._accept_pty1 = accept_pty1
        #: The caller's fds 0, 1, 2, as received so far.
        self.stdio: "List[int]" = []
        #: The request, once its body has arrived.
        self.request: "Optional[Request]" = None
        #: The caller's attributes (call1), once the ``ATTR`` frame has arrived.
        self.attrs: "Optional[Attributes]" = None
        #: The caller's extra fds (call1), in the order of ``attrs.fds``.
        self.extra_fds: "List[int]" = []
        #: Whether we accepted extension pty1 (so ``attrs.pty`` is set).
        self.pty1 = False
        #: The pty's slave (pty1), once received.
        self.pty_fd: "Optional[int]" = None
        self._step = self._SIGNALLING_BYTE
        #: Bytes of the current item so far, and how many it has.
        self._buf = bytearray()
        self._need = 1
        #: Tag of the frame whose body is being read.
        self._tag = b""

    @property
    def complete(self) -> bool:
        return self._step == self._DONE

    def advance(self) -> bool:
        """Read what has arrived; True once the handshake is complete.

        Raises :class:`PeerGone` if the client hung up, and
        :class:`ProtocolError` if it sent something the protocol does not
        allow; the fds received so far stay with the handshake
        (:meth:`close_fds`).
        """
        while self._step != self._DONE:
            if self._step in (self._STDIO, self._EXTRA_FDS, self._PTY_FD):
                if not self._take_fd():
                    return False
            elif len(self._buf) < self._need:
                data = _recv_some(self.sock, min(self._need - len(self._buf), _BODY_CHUNK), self._step)
                if data is None:
                    return False
                self._buf += data
            else:
                item = bytes(self._buf)
                self._buf = bytearray()
                self._item_done(item)
        return True

    def _expect(self, step: str, need: int = 0) -> None:
        self._step = step
        self._need = need

    def _take_fd(self) -> bool:
        """Receive the next fd of :attr:`stdio` or :attr:`extra_fds`, or
        :attr:`pty_fd`."""
        if self._step == self._PTY_FD:
            self.pty_fd = _recv_fd(self.sock, "the pty slave")
            if self.pty_fd is None:
                return False
            self._expect(self._DONE)
            return True
        if self._step == self._STDIO:
            fd = _recv_fd(self.sock, f"stdio fd {len(self.stdio)}")
            if fd is None:
                return False
            self.stdio.append(fd)
            if len(self.stdio) == N_STDIO_FDS:
                self._expect(self._LENGTH, U32_BE.size)
            return True
        assert self.attrs is not None
        number = self.attrs.fds[len(self.extra_fds)]
        fd = _recv_fd(self.sock, f"the caller's fd {number}")
        if fd is None:
            return False
        self.extra_fds.append(fd)
        if len(self.extra_fds) == len(self.attrs.fds):
            self._after_extra_fds()
        return True

    def _after_extra_fds(self) -> None:
        """With pty1, the slave follows the extra fds; else that was all."""
        self._expect(self._PTY_FD if self.pty1 else self._DONE)

    def _item_done(self, item: bytes) -> None:
        """The bytes of the current item are all in: check them, and on to
        the next item."""
        if self._step == self._SIGNALLING_BYTE:
            if item[0] != SIGNALLING_BYTE:
                raise ProtocolError(f"signalling byte is 0x{item[0]:02x}, not 0")
            self._expect(self._STDIO)
        elif self._step == self._LENGTH:
            (length,) = U32_BE.unpack(item)
            if length > MAX_REQUEST_LEN:
                raise ProtocolError(f"request length {length} is over the {MAX_REQUEST_LEN} byte limit")
            self._expect(self._BODY, length)
        elif self._step == self._BODY:
            self.request = parse_request(item)
            if not self.request.offer.call1:
                self._expect(self._DONE)
                return
            self.pty1 = self._accept_pty1 and self.request.offer.pty1
            accepted = f"{CALL1},{PTY1}" if self.pty1 else CALL1
            _send_now(self.sock, encode_frame(TAG_ACCEPT, accepted.encode()), "the accept frame")
            self._expect(self._FRAME_HEADER, _FRAME_HEADER.size)
        elif self._step == self._FRAME_HEADER:
            tag, length = _FRAME_HEADER.unpack(item)
            _check_frame_length(tag, length)
            self._tag = tag
            self._expect(self._FRAME_BODY, length)
        elif self._step == self._FRAME_BODY:
            if self._tag != TAG_ATTR:
                # A frame of a later version before ATTR: skipped.
                self._expect(self._FRAME_HEADER, _FRAME_HEADER.size)
                return
            self.attrs = parse_attributes(item)
            if self.attrs.pty is not None and not self.pty1:
                raise ProtocolError("ATTR pty: extension pty1 was not accepted")
            if self.attrs.pty is None and self.pty1:
                raise ProtocolError("ATTR has no pty, though extension pty1 was accepted")
            if self.attrs.fds:
                self._expect(self._EXTRA_FDS)
            else:
                self._after_extra_fds()
        else:
            raise AssertionError(f"handshake step {self._step!r} takes no bytes")

    def close_fds(self) -> None:
        """Close every fd received (the socket is the caller's to close)."""
        close_quietly(self.stdio)
        close_quietly(self.extra_fds)
        close_quietly((self.pty_fd,))
        self.stdio = []
        self.extra_fds = []
        self.pty_fd = None
