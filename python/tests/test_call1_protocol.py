"""Extension call1 on the wire (protocol.md section 6), byte by byte,
in-process: frames, the ATTR body, the accept exchange over a socketpair
(read without blocking by the handshake, protocol.md section 4.1)."""

from __future__ import annotations

import os
import resource
import signal
import socket

import pytest
from harness import send_fds

from prefork_interp._protocol import (
    MAX_FRAME,
    RLIM_INFINITY,
    TAG_ACCEPT,
    TAG_ATTR,
    TAG_EXIT,
    TAG_FGND,
    TAG_SIGG,
    Attributes,
    Frame,
    FrameReader,
    Handshake,
    PeerGone,
    ProtocolError,
    decode_foreground,
    decode_u32,
    encode_attributes,
    encode_frame,
    encode_request,
    encode_u32_frame,
    parse_attributes,
)

# ---------------------------------------------------------------------------
# The worked examples of protocol.md

#: Section 6.3: umask 027, nice 0, RLIMIT_NOFILE 200/524288, SIGHUP
#: ignored, nothing blocked, fd 3 passed.
ATTR_EXAMPLE = bytes.fromhex("41545452 0000003d") + (
    b"umask=027\0nice=0\0rlimit=7,200,524288\0sigign=1\0sigmask=\0fds=3\0"
)
ATTR_EXAMPLE_VALUE = Attributes(
    umask=0o027, nice=0, rlimits=((7, 200, 524288),), sigign=frozenset({1}), sigmask=frozenset(), fds=(3,)
)

#: Section 6.5: ^C in a terminal, the script exits 130.
SIGG_INT_EXAMPLE = bytes.fromhex("53494747 00000004 00000002")
EXIT_130_EXAMPLE = bytes.fromhex("45584954 00000004 00008200")


def test_attr_example_encodes_to_the_documented_bytes():
    assert len(ATTR_EXAMPLE) == 8 + 61
    assert encode_frame(TAG_ATTR, encode_attributes(ATTR_EXAMPLE_VALUE)) == ATTR_EXAMPLE


def test_attr_example_decodes():
    (frame,) = FrameReader().feed(ATTR_EXAMPLE)
    assert frame.tag == b"ATTR"
    assert parse_attributes(frame.body) == ATTR_EXAMPLE_VALUE


def test_signal_and_exit_examples():
    assert encode_u32_frame(TAG_SIGG, signal.SIGINT) == SIGG_INT_EXAMPLE
    assert encode_u32_frame(TAG_EXIT, 130 << 8) == EXIT_130_EXAMPLE
    frames = FrameReader().feed(SIGG_INT_EXAMPLE + EXIT_130_EXAMPLE)
    assert [(f.tag, decode_u32(f)) for f in frames] == [(b"SIGG", 2), (b"EXIT", 0x8200)]


def test_accept_frame_bytes():
    assert encode_frame(TAG_ACCEPT, b"call1") == b"PFXA\0\0\0\x05call1"
    assert b"PFXA"[:2] != b"\0\0", "cannot start a v1 status (top 16 bits zero)"


# ---------------------------------------------------------------------------
# Frames


def test_frame_reader_takes_any_split():
    wire = encode_frame(b"XYZW", b"") + SIGG_INT_EXAMPLE + encode_frame(b"BIGG", b"x" * 1000) + EXIT_130_EXAMPLE
    for step in (1, 3, 7, 8, 13, len(wire)):
        reader = FrameReader()
        frames = []
        for i in range(0, len(wire), step):
            frames.extend(reader.feed(wire[i : i + step]))
        assert [f.tag for f in frames] == [b"XYZW", b"SIGG", b"BIGG", b"EXIT"], step
        assert frames[2].body == b"x" * 1000
        assert reader.pending == 0


def test_frame_reader_holds_a_partial_frame():
    reader = FrameReader()
    assert reader.feed(EXIT_130_EXAMPLE[:9]) == []
    assert reader.pending == 9
    assert reader.feed(EXIT_130_EXAMPLE[9:]) == [Frame(b"EXIT", b"\0\0\x82\0")]


def test_largest_frame_accepted_and_one_more_byte_refused():
    body = bytes(MAX_FRAME)
    assert FrameReader().feed(encode_frame(b"DATA", body)) == [Frame(b"DATA", body)]
    reader = FrameReader()
    with pytest.raises(ProtocolError, match="65537 bytes is over the 65536"):
        # Refused from the header alone, before any body arrives.
        reader.feed(b"DATA" + (MAX_FRAME + 1).to_bytes(4, "big"))
    with pytest.raises(ValueError):
        encode_frame(b"DATA", bytes(MAX_FRAME + 1))


@pytest.mark.parametrize("body", [b"", b"\0\0\2", b"\0\0\0\2\0"])
def test_u32_frame_of_the_wrong_size(body):
    with pytest.raises(ProtocolError, match="not 4"):
        decode_u32(Frame(b"SIGP", body))


# ---------------------------------------------------------------------------
# ATTR bodies


def test_attr_every_key():
    attrs = Attributes(
        umask=0o002,
        nice=-5,
        rlimits=((resource.RLIMIT_NOFILE, 200, RLIM_INFINITY), (resource.RLIMIT_CORE, 0, 0), (15, RLIM_INFINITY, RLIM_INFINITY)),
        sigign=frozenset({13, 2, 1}),
        sigmask=frozenset({10, 64}),
        fds=(3, 4, 250),
    )
    body = encode_attributes(attrs)
    assert body == (
        b"umask=002\0nice=-5\0rlimit=7,200,inf\0rlimit=4,0,0\0rlimit=15,inf,inf\0"
        b"sigign=1,2,13\0sigmask=10,64\0fds=3,4,250\0"
    )
    assert parse_attributes(body) == attrs


def test_attr_absent_keys_and_unknown_ones():
    assert parse_attributes(b"") == Attributes()
    assert parse_attributes(b"fds=\0") == Attributes()
    got = parse_attributes(b"later=whatever,with=signs\0umask=0777\0x\x7f=1\0sigign=\0")
    assert got == Attributes(umask=0o777, sigign=frozenset())


@pytest.mark.parametrize(
    "body, message",
    [
        (b"umask=027", "does not end with NUL"),
        (b"umask=027\0\xff=1\0", "not ASCII"),
        (b"umask\0", "has no '='"),
        (b"umask=089\0", "not an octal umask"),
        (b"umask=1000\0", "not an octal umask"),
        (b"umask=\0", "not an octal umask"),
        (b"umask=022\0umask=022\0", "umask given twice"),
        (b"nice=ten\0", "nice: 'ten' is not a decimal"),
        (b"nice=20\0", "not a nice value"),
        (b"nice=-21\0", "not a nice value"),
        (b"rlimit=7,200\0", "not RESOURCE,SOFT,HARD"),
        (b"rlimit=7,-1,inf\0", "is not a decimal"),
        (b"rlimit=7,1,2\0rlimit=7,1,2\0", "resource 7 given twice"),
        (b"sigign=1,,2\0", "'' is not a decimal"),
        (b"sigign=0\0", "0 is not a signal number"),
        (b"sigmask=65\0", "65 is not a signal number"),
        (b"fds=4,3\0", "not ascending"),
        (b"fds=3,3\0", "not ascending"),
        (b"fds=2\0", "not ascending"),
        (b"fds=" + ",".join(str(n) for n in range(3, 3 + 257)).encode() + b"\0", "more than 256"),
    ],
)
def test_attr_errors(body, message):
    with pytest.raises(ProtocolError, match=message):
        parse_attributes(body)


def test_attr_pty():
    """Extension pty1 (protocol.md section 9.2): ``pty`` after ``fds``."""
    attrs = Attributes(fds=(3,), pty=(0, 2))
    body = encode_attributes(attrs)
    assert body == b"fds=3\0pty=0,2\0"
    assert parse_attributes(body) == attrs
    assert parse_attributes(b"pty=0,1,2\0").pty == (0, 1, 2)
    assert parse_attributes(b"pty=1\0").pty == (1,)
    assert parse_attributes(b"").pty is None


@pytest.mark.parametrize(
    "body",
    [b"pty=\0", b"pty=3\0", b"pty=0,3\0", b"pty=1,0\0", b"pty=1,1\0", b"pty=-1\0", b"pty=0,,1\0", b"pty=x\0", b"pty=0\0pty=0\0"],
)
def test_attr_pty_errors(body):
    with pytest.raises(ProtocolError, match="pty"):
        parse_attributes(body)


def test_attr_ptybg():
    """``ptybg=1``: the client starts in the background (section 9.2);
    absent or ``0``: in the foreground."""
    attrs = Attributes(fds=(), pty=(0, 1, 2), ptybg=True)
    body = encode_attributes(attrs)
    assert body == b"fds=\0pty=0,1,2\0ptybg=1\0"
    assert parse_attributes(body) == attrs
    assert parse_attributes(b"pty=1\0ptybg=0\0").ptybg is False
    assert parse_attributes(b"pty=1\0").ptybg is False
    assert encode_attributes(Attributes(pty=(1,))) == b"fds=\0pty=1\0", "the foreground: no key"


@pytest.mark.parametrize("body", [b"ptybg=2\0", b"ptybg=\0", b"ptybg=01\0", b"ptybg=yes\0", b"ptybg=1\0ptybg=1\0"])
def test_attr_ptybg_errors(body):
    with pytest.raises(ProtocolError, match="ptybg"):
        parse_attributes(b"pty=0\0" + body)


def test_fgnd_frame():
    """``FGND``, client to server (section 9.2): u32 BE 1 or 0."""
    assert encode_u32_frame(TAG_FGND, 1) == b"FGND\0\0\0\x04\0\0\0\x01"
    assert decode_foreground(Frame(TAG_FGND, b"\0\0\0\x01")) is True
    assert decode_foreground(Frame(TAG_FGND, b"\0\0\0\0")) is False
    for body in (b"\0\0\0\x02", b"\0\0\0\0\x01", b"\x01", b"", b"\x01\0\0\0"):
        with pytest.raises(ProtocolError, match="FGND"):
            decode_foreground(Frame(TAG_FGND, body))


def test_attr_256_fds_is_the_limit():
    fds = tuple(range(3, 3 + 256))
    assert parse_attributes(encode_attributes(Attributes(fds=fds))).fds == fds


# ---------------------------------------------------------------------------
# The accept exchange over a socketpair


@pytest.fixture
def pair():
    server, client = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    yield server, client
    server.close()
    client.close()


def _open_fds():
    return len(os.listdir("/proc/self/fd"))


def _offer_call1(server, client, null, offer=b"call1", accepted=b"call1", accept_pty1=True):
    """Steps 2-4 with a call1 offer; returns the handshake, at the point
    where it has sent the accept frame."""
    client.sendall(b"\0")
    for _ in range(3):
        send_fds(client, [null])
    client.sendall(encode_request([(b"PREFORK_INTERP_EXT", offer)], [b"i"]))
    handshake = Handshake(server, accept_pty1=accept_pty1)
    assert not handshake.advance()
    assert client.recv(100) == encode_frame(TAG_ACCEPT, accepted)
    return handshake


def test_handshake_receives_attr_and_fds(pair, tmp_path):
    server, client = pair
    files = [open(tmp_path / name, "wb") for name in ("three", "nine")]
    null = os.open(os.devnull, os.O_RDONLY)
    handshake = _offer_call1(server, client, null)
    try:
        client.sendall(encode_frame(b"LATR", b"a frame of a later version, skipped"))
        assert not handshake.advance()
        client.sendall(encode_frame(TAG_ATTR, encode_attributes(Attributes(umask=0o22, fds=(3, 9)))))
        assert not handshake.advance()
        for f in files:
            send_fds(client, [f.fileno()])
        client.sendall(SIGG_INT_EXAMPLE)  # left on the socket for the monitor
        assert handshake.advance()
        assert handshake.attrs == Attributes(umask=0o22, fds=(3, 9))
        assert len(handshake.extra_fds) == 2
        for fd, f in zip(handshake.extra_fds, files):
            mine, theirs = os.fstat(fd), os.fstat(f.fileno())
            assert (mine.st_dev, mine.st_ino) == (theirs.st_dev, theirs.st_ino)
        assert server.recv(100) == SIGG_INT_EXAMPLE, "nothing after the fds is read"
    finally:
        handshake.close_fds()
        os.close(null)
        for f in files:
            f.close()


def test_handshake_oversized_frame(pair):
    server, client = pair
    null = os.open(os.devnull, os.O_RDONLY)
    handshake = _offer_call1(server, client, null)
    try:
        client.sendall(b"ATTR" + (MAX_FRAME + 1).to_bytes(4, "big"))
        with pytest.raises(ProtocolError, match="over the 65536"):
            handshake.advance()
    finally:
        handshake.close_fds()
        os.close(null)


@pytest.mark.parametrize("sent", ["nothing", "half the fds", "a bad attr"])
def test_handshake_call1_failures_leak_no_fd(pair, sent):
    server, client = pair
    null = os.open(os.devnull, os.O_RDONLY)
    before = _open_fds()
    handshake = _offer_call1(server, client, null)
    try:
        if sent == "a bad attr":
            client.sendall(encode_frame(TAG_ATTR, b"fds=3,x\0"))
        elif sent == "half the fds":
            client.sendall(encode_frame(TAG_ATTR, b"fds=3,4,5\0"))
            send_fds(client, [null])
            send_fds(client, [null])
        client.shutdown(socket.SHUT_WR)
        with pytest.raises(ProtocolError if sent == "a bad attr" else PeerGone):
            handshake.advance()
    finally:
        handshake.close_fds()
    assert _open_fds() == before
    os.close(null)


def test_attr_encoding_takes_signal_enums():
    """signal.Signals members print their names on Python < 3.11; the wire
    has numbers."""
    body = encode_attributes(Attributes(sigign=frozenset({signal.SIGHUP}), sigmask=frozenset({signal.SIGUSR1})))
    assert body == b"sigign=1\0sigmask=10\0fds=\0"


# ---------------------------------------------------------------------------
# Extension pty1 in the handshake (protocol.md section 9)


@pytest.mark.parametrize(
    "offer, accepted",
    [
        (b"call1,pty1", b"call1,pty1"),
        (b"pty1,later,call1", b"call1,pty1"),
        (b"call1", b"call1"),
        (b"call1,pty2,PTY1", b"call1"),
    ],
)
def test_accept_frame_names_pty1_when_offered_with_call1(pair, offer, accepted):
    server, client = pair
    null = os.open(os.devnull, os.O_RDONLY)
    try:
        handshake = _offer_call1(server, client, null, offer, accepted)
        assert handshake.pty1 is (accepted == b"call1,pty1")
        handshake.close_fds()
    finally:
        os.close(null)


def test_handshake_receives_the_slave_after_the_extra_fds(pair, tmp_path):
    server, client = pair
    null = os.open(os.devnull, os.O_RDONLY)
    three = open(tmp_path / "three", "wb")
    master, slave = os.openpty()
    handshake = _offer_call1(server, client, null, b"call1,pty1", b"call1,pty1")
    try:
        client.sendall(encode_frame(TAG_ATTR, encode_attributes(Attributes(fds=(3,), pty=(0, 1)))))
        send_fds(client, [three.fileno()])
        assert not handshake.advance(), "the slave is still to come"
        assert handshake.pty_fd is None
        send_fds(client, [slave])
        assert handshake.advance()
        assert handshake.attrs == Attributes(fds=(3,), pty=(0, 1))
        assert len(handshake.extra_fds) == 1
        assert handshake.pty_fd is not None
        assert os.ttyname(handshake.pty_fd) == os.ttyname(slave)
        assert not os.get_inheritable(handshake.pty_fd), "close-on-exec until the executor installs it"
    finally:
        handshake.close_fds()
        assert handshake.pty_fd is None
        for fd in (null, master, slave):
            os.close(fd)
        three.close()


@pytest.mark.parametrize(
    "offer, accepted, accept_pty1, attr",
    [
        (b"call1", b"call1", True, b"pty=0\0"),  # pty without pty1
        (b"call1,pty1", b"call1", False, b"pty=0\0"),  # declined (first call in place)
        (b"call1,pty1", b"call1,pty1", True, b"fds=\0"),  # pty1 without pty
        (b"call1,pty1", b"call1,pty1", True, b"pty=0,3\0"),
    ],
)
def test_handshake_pty_mismatch_is_a_protocol_error(pair, offer, accepted, accept_pty1, attr):
    server, client = pair
    null = os.open(os.devnull, os.O_RDONLY)
    before = _open_fds()
    handshake = _offer_call1(server, client, null, offer, accepted, accept_pty1)
    try:
        client.sendall(encode_frame(TAG_ATTR, attr))
        with pytest.raises(ProtocolError, match="pty"):
            handshake.advance()
    finally:
        handshake.close_fds()
    assert _open_fds() == before
    os.close(null)


def test_handshake_no_slave_message(pair):
    """pty1 accepted, the ATTR and extra fds sent, then EOF: the client
    is gone, and no fd received is left open."""
    server, client = pair
    null = os.open(os.devnull, os.O_RDONLY)
    before = _open_fds()
    handshake = _offer_call1(server, client, null, b"call1,pty1", b"call1,pty1")
    try:
        client.sendall(encode_frame(TAG_ATTR, b"fds=3\0pty=0,1,2\0"))
        send_fds(client, [null])
        client.shutdown(socket.SHUT_WR)
        with pytest.raises(PeerGone, match="the pty slave"):
            handshake.advance()
    finally:
        handshake.close_fds()
    assert _open_fds() == before
    os.close(null)
