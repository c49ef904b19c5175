"""Wire protocol of prefork-interp, script side: v1 and extension call1
(docs/protocol.md).

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
3. extension ``call1`` (protocol.md section 6): the client's offer, a
   reserved request environment entry (:data:`EXT_ENV_NAME`, parsed by
   :func:`parse_request` into :attr:`Request.offer`); the accept frame and
   the caller's attributes (:func:`accept_call1`, :class:`Attributes`);
   then frames both ways (:func:`encode_frame`, :class:`FrameReader`):
   ``SIGP``/``SIGG`` from the client, ``STOP``/``EXIT`` to it.

Extensions (SPEC section 7, protocol.md section 5): request environment
entries whose names start with :data:`EXT_ENV_PREFIX` are reserved.
:func:`parse_request` is the one place such entries are recognised: it
parses the ones it knows into :class:`Offer` and drops every one of them
from :attr:`Request.env`, so they never reach the script's ``os.environ``.
"""

from __future__ import annotations

__all__ = [
    "CALL1",
    "ENV_NAME",
    "EXT_ENV_NAME",
    "EXT_ENV_PREFIX",
    "GREETING",
    "MAX_FRAME",
    "MAX_REQUEST",
    "RLIM_INFINITY",
    "TAG_ACCEPT",
    "TAG_ATTR",
    "TAG_EXIT",
    "TAG_SIGG",
    "TAG_SIGP",
    "TAG_STOP",
    "Attributes",
    "Frame",
    "FrameReader",
    "Offer",
    "PeerGone",
    "PreforkError",
    "ProtocolError",
    "Request",
    "SetupInfo",
    "accept_call1",
    "decode_u32",
    "encode_attributes",
    "encode_frame",
    "encode_request",
    "encode_u32_frame",
    "parse_attributes",
    "parse_offer",
    "parse_request",
    "parse_setup_env",
    "receive_call",
    "send_frame",
    "send_status",
]

import array
import resource
import signal
import socket
import struct
import time
from dataclasses import dataclass, field
from typing import Dict, FrozenSet, Iterable, List, Optional, Tuple

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

#: The reserved entry through which a client offers extensions: its value
#: is a comma-separated list of names (protocol.md section 6.1).
EXT_ENV_NAME = b"PREFORK_INTERP_EXT"

#: The one extension defined so far (protocol.md section 6).
CALL1 = "call1"

#: Extension frames (protocol.md section 6.2): 4-byte tag, u32 BE length.
_FRAME_HEADER = struct.Struct(">4sI")

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
#: Server -> client: the executor has stopped with this signal (u32 BE).
TAG_STOP = b"STOP"
#: Server -> client: the executor's raw wait status (u32 BE); last frame.
TAG_EXIT = b"EXIT"

#: ``inf`` in an ``rlimit`` attribute: Python's ``resource.RLIM_INFINITY``.
RLIM_INFINITY = resource.RLIM_INFINITY

#: Highest signal number (64 on Linux).
_MAX_SIGNAL = signal.NSIG - 1

#: At most this many extra fds in ``ATTR`` (protocol.md section 6.3).
MAX_EXTRA_FDS = 256

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


@dataclass(frozen=True)
class Offer:
    """The extensions a client offered (protocol.md section 6.1), parsed
    from the request's reserved ``PREFORK_INTERP_EXT*`` entries."""

    #: Every name listed in ``PREFORK_INTERP_EXT``, in order, known or not.
    names: Tuple[str, ...] = ()
    #: Names of reserved entries other than ``PREFORK_INTERP_EXT`` itself:
    #: not understood, removed from the environment and otherwise ignored.
    ignored: Tuple[bytes, ...] = ()

    @property
    def call1(self) -> bool:
        """Whether the client offers extension call1."""
        return CALL1 in self.names


def parse_offer(entries: Iterable[Tuple[bytes, bytes]]) -> Offer:
    """Parse the reserved ``(name, value)`` entries of a request.

    ``PREFORK_INTERP_EXT`` is a comma-separated list of names (empty items
    skipped; bytes that are not ASCII cannot name a known extension and are
    kept backslash-escaped).  The first occurrence counts, as for any
    environment name.  Any other reserved name is listed in ``ignored``.
    """
    names: Tuple[str, ...] = ()
    seen = False
    ignored: List[bytes] = []
    for name, value in entries:
        if name != EXT_ENV_NAME:
            ignored.append(name)
        elif not seen:
            seen = True
            names = tuple(item.decode("ascii", "backslashreplace") for item in value.split(b",") if item)
    return Offer(names, tuple(ignored))


@dataclass
class Request:
    """One call's request, as the client sent it."""

    #: The caller's environment, in order, first occurrence of a name winning
    #: (as Python builds ``os.environ`` at start-up); reserved
    #: ``PREFORK_INTERP_EXT*`` entries removed.
    env: Dict[bytes, bytes]
    #: ``interpreter, [script,] args...`` exactly as on the wire.
    argv: List[bytes]
    #: What the reserved ``PREFORK_INTERP_EXT*`` entries offered.
    offer: Offer = field(default_factory=Offer)


def parse_request(body: bytes) -> Request:
    """Decode a request body: env strings, an empty string, then arguments.

    Every string is NUL-terminated.  This is where reserved
    ``PREFORK_INTERP_EXT*`` environment entries are recognised, parsed into
    :attr:`Request.offer` and kept out of the environment the script will
    see.
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
    reserved: List[Tuple[bytes, bytes]] = []
    for entry in strings[:end_of_env]:
        name, eq, value = entry.partition(b"=")
        if not eq:
            raise ProtocolError(f"request environment entry {entry[:40]!r} has no '='")
        if name.startswith(EXT_ENV_PREFIX):
            reserved.append((name, value))
        else:
            env.setdefault(name, value)
    return Request(env, argv, parse_offer(reserved))


def encode_request(env: Iterable[Tuple[bytes, bytes]], argv: Iterable[bytes]) -> bytes:
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


# ---------------------------------------------------------------------------
# Extension call1: frames (protocol.md section 6.2)


@dataclass(frozen=True)
class Frame:
    """One extension frame: a 4-byte tag and its body."""

    tag: bytes
    body: bytes


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
    """The u32 BE body of a ``SIGP``/``SIGG``/``STOP``/``EXIT`` frame."""
    if len(frame.body) != U32_BE.size:
        raise ProtocolError(f"{_tag_text(frame.tag)} frame body is {len(frame.body)} bytes, not 4")
    (value,) = U32_BE.unpack(frame.body)
    return int(value)


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

    def feed(self, data: bytes) -> List[Frame]:
        self._buf += data
        frames: List[Frame] = []
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


def send_frame(sock: socket.socket, tag: bytes, body: bytes = b"") -> None:
    """Send one frame.  Raises :class:`PeerGone` if the caller has gone."""
    try:
        sock.sendall(encode_frame(tag, body), socket.MSG_NOSIGNAL)
    except (BrokenPipeError, ConnectionResetError):
        raise PeerGone(f"client gone before the {_tag_text(tag)} frame") from None


def _recv_frame(sock: socket.socket, deadline: float) -> Frame:
    tag, length = _FRAME_HEADER.unpack(_recv_exact(sock, _FRAME_HEADER.size, deadline, "a frame header"))
    _check_frame_length(tag, length)
    return Frame(tag, _recv_exact(sock, length, deadline, f"the body of a {_tag_text(tag)!r} frame"))


# ---------------------------------------------------------------------------
# Extension call1: the caller's attributes (protocol.md section 6.3)


@dataclass(frozen=True)
class Attributes:
    """What the ``ATTR`` frame says about the caller.  ``None`` (or, for
    ``rlimits``, a missing resource): not sent, the server's stays."""

    #: The caller's umask.
    umask: Optional[int] = None
    #: The caller's nice value.
    nice: Optional[int] = None
    #: ``(resource, soft, hard)``, :data:`RLIM_INFINITY` for ``inf``, in the
    #: order sent, one per resource.
    rlimits: Tuple[Tuple[int, int, int], ...] = ()
    #: Signals the caller ignores (``SIG_IGN``).
    sigign: Optional[FrozenSet[int]] = None
    #: Signals the caller blocks.
    sigmask: Optional[FrozenSet[int]] = None
    #: The caller's other open fds the client passes, ascending; each
    #: arrives, in this order, as one ``SCM_RIGHTS`` message after the frame.
    fds: Tuple[int, ...] = ()


_ATTR_KEYS = ("umask", "nice", "rlimit", "sigign", "sigmask", "fds")


def _attr_int(key: str, text: str, signed: bool = False) -> int:
    digits = text[1:] if signed and text.startswith("-") else text
    if not (digits.isascii() and digits.isdigit()):
        raise ProtocolError(f"ATTR {key}: {text[:40]!r} is not a decimal number")
    return int(text)


def _attr_limit(text: str) -> int:
    return RLIM_INFINITY if text == "inf" else _attr_int("rlimit", text)


def _attr_list(key: str, text: str) -> List[int]:
    return [_attr_int(key, item) for item in text.split(",")] if text else []


def _attr_signals(key: str, text: str) -> FrozenSet[int]:
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
    values: Dict[str, str] = {}
    rlimits: Dict[int, Tuple[int, int, int]] = {}
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
    umask: Optional[int] = None
    if "umask" in values:
        octal = values["umask"]
        if not octal or not all(c in "01234567" for c in octal) or int(octal, 8) > 0o777:
            raise ProtocolError(f"ATTR umask: {octal[:40]!r} is not an octal umask")
        umask = int(octal, 8)
    nice: Optional[int] = None
    if "nice" in values:
        nice = _attr_int("nice", values["nice"], signed=True)
        if not -20 <= nice <= 19:
            raise ProtocolError(f"ATTR nice: {nice} is not a nice value")
    fds = tuple(_attr_list("fds", values.get("fds", "")))
    if len(fds) > MAX_EXTRA_FDS:
        raise ProtocolError(f"ATTR fds: {len(fds)} fds, more than {MAX_EXTRA_FDS}")
    if any(fd < 3 for fd in fds) or any(a >= b for a, b in zip(fds, fds[1:])):
        raise ProtocolError("ATTR fds: not ascending numbers from 3 up")
    return Attributes(
        umask=umask,
        nice=nice,
        rlimits=tuple(rlimits.values()),
        sigign=_attr_signals("sigign", values["sigign"]) if "sigign" in values else None,
        sigmask=_attr_signals("sigmask", values["sigmask"]) if "sigmask" in values else None,
        fds=fds,
    )


def encode_attributes(attrs: Attributes) -> bytes:
    """An ``ATTR`` frame body (what a client sends; for tests and tools).

    Keys in the order of protocol.md's table; absent attributes omitted.
    """

    # int(): an IntEnum (signal.Signals) prints its name on Python < 3.11.
    def limit(value: int) -> str:
        return "inf" if value == RLIM_INFINITY else str(int(value))

    def numbers(values: Iterable[int]) -> str:
        return ",".join(str(int(v)) for v in sorted(values))

    entries: List[str] = []
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
    return "".join(entry + "\0" for entry in entries).encode("ascii")


def accept_call1(sock: socket.socket, timeout: float) -> Tuple[Attributes, List[int]]:
    """Accept extension call1 (protocol.md sections 6.1-6.3).

    Sends the accept frame, then reads, within ``timeout`` seconds, the
    ``ATTR`` frame (frames before it with other tags are skipped) and the
    extra fds it announces, one ``SCM_RIGHTS`` message each.  Returns the
    attributes and the received fds, in the order of ``Attributes.fds``
    (ours to close).  Raises :class:`PeerGone` or :class:`ProtocolError`
    as :func:`receive_call` does, with no received fd left open.  Leaves
    ``sock`` in blocking mode.
    """
    deadline = time.monotonic() + timeout
    fds: List[int] = []
    try:
        _set_deadline(sock, deadline)
        try:
            sock.sendall(encode_frame(TAG_ACCEPT, CALL1.encode()), socket.MSG_NOSIGNAL)
        except (BrokenPipeError, ConnectionResetError):
            raise PeerGone("client gone before the accept frame") from None
        except socket.timeout:
            raise PeerGone("client did not take the accept frame in time") from None
        while True:
            frame = _recv_frame(sock, deadline)
            if frame.tag == TAG_ATTR:
                break
        attrs = parse_attributes(frame.body)
        for number in attrs.fds:
            fds.append(_recv_one_fd(sock, deadline, number))
        sock.setblocking(True)
        return attrs, fds
    except BaseException:
        close_quietly(fds)
        raise
