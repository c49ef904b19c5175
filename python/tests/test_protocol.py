"""The wire format, byte by byte, in-process over socketpairs."""

from __future__ import annotations

import os
import socket
import tracemalloc

import pytest
from harness import send_fds

from prefork_interp._fastexit import exit_status_of_code
from prefork_interp._protocol import (
    GREETING,
    MAX_REQUEST_LEN,
    Handshake,
    Offer,
    PeerGone,
    PreforkError,
    ProtocolError,
    encode_request,
    parse_request,
    parse_setup_env,
    send_greeting,
    send_status,
)


# ---------------------------------------------------------------------------
# PREFORK_INTERP


def test_setup_env():
    info = parse_setup_env(b"v1,1700000000.123456789 3,4,5,6")
    assert info.stamp_ns == 1700000000_123456789
    assert (info.listen_fd, info.call_fd, info.watchi_fd, info.watche_fd) == (3, 4, 5, 6)


def test_setup_env_ignores_what_later_versions_may_add():
    info = parse_setup_env(b"v1,12.000000001,more 7,8,9,10,11 third-word \xff\x00binary")
    assert info.stamp_ns == 12_000000001
    assert info.watche_fd == 10


@pytest.mark.parametrize(
    "value, message",
    [
        (b"v1,1.000000000", "expected two words"),
        (b"v2,1.000000000 3,4,5,6", "is not v1"),
        (b"v1 3,4,5,6", "no start stamp"),
        (b"v1,1 3,4,5,6", "is not SECS.NSECS"),
        (b"v1,1.0000000001 3,4,5,6", "is not SECS.NSECS"),
        (b"v1,x.000000000 3,4,5,6", "seconds is b'x'"),
        (b"v1,1.000000000 3,4,5", "expected 4 fds"),
        (b"v1,1.000000000 3,4,-5,6", "WATCHI fd is b'-5'"),
    ],
)
def test_setup_env_errors(value, message):
    with pytest.raises(PreforkError, match=message):
        parse_setup_env(value)


# ---------------------------------------------------------------------------
# The request body


def test_request_round_trip():
    env = [(b"A", b"1"), (b"EMPTY", b""), (b"EQ", b"x=y"), (b"A", b"second")]
    argv = [b"python3", b"/s.py", b"", b"arg with spaces", b"\xff"]
    wire = encode_request(env, argv)
    assert wire[:4] == len(wire[4:]).to_bytes(4, "big")
    request = parse_request(wire[4:])
    assert request.env() == {b"A": b"1", b"EMPTY": b"", b"EQ": b"x=y"}, "first occurrence wins, as at start-up"
    assert request.env_entries() == [b"A=1", b"EMPTY=", b"EQ=x=y", b"A=second"]
    assert request.argv() == argv
    assert request.offer == Offer()
    assert not request.offer.call1


def test_request_layout_from_the_protocol_document():
    body = b"A=1\0\0python3\0/s.py\0x\0"
    assert encode_request([(b"A", b"1")], [b"python3", b"/s.py", b"x"]) == b"\0\0\0\x15" + body
    assert parse_request(body).argv() == [b"python3", b"/s.py", b"x"]


def test_request_kept_as_its_one_buffer():
    """The shape is checked without splitting: the request holds the very
    bytes object it was given (protocol.md section 4.1, memory)."""
    body = encode_request([(b"A", b"")] * 1000 + [(b"PREFORK_INTERP_EXT", b"call1")], [b"i", b"x"])[4:]
    request = parse_request(body)
    assert request.body is body
    assert request.offer.call1
    assert len(request.env_entries()) == 1000
    assert request.argv() == [b"i", b"x"]


@pytest.mark.parametrize(
    "body, env, argv",
    [
        (b"\0i\0", [], [b"i"]),
        (b"\0\0", [], [b""]),
        (b"A=\0\0\0", [b"A="], [b""]),
        (b"=v\0\0i\0a\0\0", [b"=v"], [b"i", b"a", b""]),
    ],
)
def test_request_edges(body, env, argv):
    request = parse_request(body)
    assert (request.env_entries(), request.argv()) == (env, argv)


def test_reserved_extension_entries_are_kept_out_of_the_environment():
    request = parse_request(encode_request([(b"PREFORK_INTERP_EXT_SIGNALS", b"1"), (b"PREFORK_INTERPX", b"2")], [b"i"])[4:])
    assert request.offer == Offer(value=b"", ignored=1)
    assert not request.offer.call1
    assert request.env() == {b"PREFORK_INTERPX": b"2"}


@pytest.mark.parametrize(
    "value, names, call1",
    [
        (b"call1", ("call1",), True),
        (b"later,call1", ("later", "call1"), True),
        (b"call1,", ("call1",), True),
        (b"call2", ("call2",), False),
        (b"", (), False),
        (b"CALL1", ("CALL1",), False),
        (b"call1x,\xff", ("call1x", "\\xff"), False),
    ],
)
def test_offer(value, names, call1):
    env = [(b"A", b"1"), (b"PREFORK_INTERP_EXT", value), (b"B", b"2")]
    request = parse_request(encode_request(env, [b"i"])[4:])
    assert request.offer.names() == names
    assert request.offer.call1 is call1
    assert request.env() == {b"A": b"1", b"B": b"2"}


@pytest.mark.parametrize(
    "value, pty1",
    [
        (b"call1,pty1", True),
        (b"pty1,call1", True),
        (b"pty1", False),  # without call1: ignored (protocol.md section 9.1)
        (b"call1", False),
        (b"call1,pty11,xpty1", False),
    ],
)
def test_offer_pty1(value, pty1):
    request = parse_request(encode_request([(b"PREFORK_INTERP_EXT", value)], [b"i"])[4:])
    assert request.offer.pty1 is pty1


def test_offer_first_entry_counts():
    env = [(b"PREFORK_INTERP_EXT", b"nothing"), (b"PREFORK_INTERP_EXT", b"call1")]
    assert not parse_request(encode_request(env, [b"i"])[4:]).offer.call1


def test_offer_only_at_the_start_of_an_entry():
    """The reserved prefix inside a value, or in the arguments, offers nothing."""
    env = [(b"X", b"PREFORK_INTERP_EXT=call1"), (b"XPREFORK_INTERP_EXT", b"call1")]
    request = parse_request(encode_request(env, [b"PREFORK_INTERP_EXT=call1"])[4:])
    assert request.offer == Offer()
    assert request.env() == {b"X": b"PREFORK_INTERP_EXT=call1", b"XPREFORK_INTERP_EXT": b"call1"}


@pytest.mark.parametrize(
    "body, message",
    [
        (b"A=1\0\0python3", "does not end with NUL"),
        (b"A=1\0B=2\0", "no empty string"),
        (b"A=1\0\0", "no arguments"),
        (b"NOEQUALS\0\0python3\0", "has no '='"),
        (b"A=1\0NOEQUALS\0B=2\0\0python3\0", "NOEQUALS' has no '='"),
        (b"", "does not end with NUL"),
    ],
)
def test_request_errors(body, message):
    with pytest.raises(ProtocolError, match=message):
        parse_request(body)


# ---------------------------------------------------------------------------
# A whole handshake over a socketpair, read without blocking


def _open_fds():
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture
def pair():
    server, client = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    yield server, client
    server.close()
    client.close()


def _same_file(a: int, b: int) -> bool:
    sa, sb = os.fstat(a), os.fstat(b)
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def test_handshake(pair, tmp_path):
    server, client = pair
    files = [open(tmp_path / name, "wb") for name in ("in", "out", "err")]
    try:
        send_greeting(server)
        assert client.recv(100) == GREETING == b"PFI\n\0\0\0\0"
        handshake = Handshake(server)
        assert not handshake.advance(), "nothing has arrived: not complete, and no waiting"
        client.sendall(b"\0")
        for f in files:
            send_fds(client, [f.fileno()])
        client.sendall(encode_request([(b"HOME", b"/h")], [b"python3", b"/s.py", b"a"]))
        assert handshake.advance()
        try:
            assert len(handshake.stdio) == 3
            for fd, f in zip(handshake.stdio, files):
                assert fd != f.fileno() and _same_file(fd, f.fileno())
                assert not os.get_inheritable(fd)
        finally:
            handshake.close_fds()
        assert handshake.request is not None
        assert handshake.request.env() == {b"HOME": b"/h"}
        assert handshake.request.argv() == [b"python3", b"/s.py", b"a"]
        assert handshake.attrs is None and handshake.extra_fds == []
        send_status(server, 3 << 8)
        assert client.recv(4) == b"\0\0\x03\0"
    finally:
        for f in files:
            f.close()


def test_handshake_byte_by_byte(pair):
    """Each piece on its own, the handshake advanced after each: complete
    only with the last byte, every fd taken at its place (a read past an
    item would swallow the data byte that carries the next fd)."""
    server, client = pair
    null = os.open(os.devnull, os.O_RDONLY)
    handshake = Handshake(server)
    try:
        pieces = [b"\0", null, null, null, *(bytes([b]) for b in encode_request([(b"A", b"1")], [b"i", b"x"]))]
        for n, piece in enumerate(pieces):
            assert not handshake.advance()
            if isinstance(piece, int):
                send_fds(client, [piece])
            else:
                client.sendall(piece)
            assert handshake.advance() == (n == len(pieces) - 1)
        assert len(handshake.stdio) == 3
        assert handshake.request is not None and handshake.request.argv() == [b"i", b"x"]
    finally:
        handshake.close_fds()
        os.close(null)


def test_handshake_all_sent_at_once_with_the_fds(pair):
    """The client sends everything before we read anything: the fds are
    still each found with their own data byte."""
    server, client = pair
    null = os.open(os.devnull, os.O_RDONLY)
    handshake = Handshake(server)
    try:
        client.sendall(b"\0")
        for _ in range(3):
            send_fds(client, [null])
        client.sendall(encode_request([], [b"i"]) + b"bytes after the request, not ours")
        assert handshake.advance()
        assert len(handshake.stdio) == 3 and all(_same_file(fd, null) for fd in handshake.stdio)
        assert server.recv(100) == b"bytes after the request, not ours", "nothing after the request is read"
    finally:
        handshake.close_fds()
        os.close(null)


def _bad_call(client, null, case):
    client.sendall(b"\x07" if case == "signalling byte" else b"\0")
    if case == "signalling byte":
        return
    if case == "no fd":
        client.sendall(b"\0")
        return
    if case == "two fds":
        send_fds(client, [null, null])
        return
    for _ in range(3):
        send_fds(client, [null])
    if case == "too long":
        client.sendall((MAX_REQUEST_LEN + 1).to_bytes(4, "big"))
    elif case == "bad body":
        client.sendall(b"\0\0\0\3abc")


@pytest.mark.parametrize(
    "case, message",
    [
        ("signalling byte", "signalling byte is 0x07"),
        ("no fd", "0 control messages"),
        ("two fds", "2 fds in one message"),
        ("too long", "request length 6295553 is over the 6295552 byte limit"),
        ("bad body", "does not end with NUL"),
    ],
)
def test_handshake_rejects_and_leaks_no_fd(pair, case, message):
    server, client = pair
    null = os.open(os.devnull, os.O_RDONLY)
    try:
        _bad_call(client, null, case)
        before = _open_fds()
        handshake = Handshake(server)
        with pytest.raises(ProtocolError, match=message):
            handshake.advance()
        handshake.close_fds()
        assert _open_fds() == before, "received fds must be closed"
    finally:
        os.close(null)


def test_longest_request_length_is_taken():
    assert MAX_REQUEST_LEN == 6 * 1024 * 1024 + 4096 == 6295552


def test_request_buffer_grows_with_what_arrived(pair):
    """A peer announcing the largest request and sending little of it costs
    little: nothing is allocated for what was merely announced."""
    server, client = pair
    null = os.open(os.devnull, os.O_RDONLY)
    handshake = Handshake(server)
    try:
        client.sendall(b"\0")
        for _ in range(3):
            send_fds(client, [null])
        client.sendall(MAX_REQUEST_LEN.to_bytes(4, "big") + b"A=" * 500)
        tracemalloc.start()
        try:
            assert not handshake.advance()
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak < MAX_REQUEST_LEN // 4, f"{peak} bytes allocated for 1000 bytes received"
        client.sendall(b"A=" * 500)
        assert not handshake.advance()
    finally:
        handshake.close_fds()
        os.close(null)


def test_handshake_peer_gone(pair):
    server, client = pair
    null = os.open(os.devnull, os.O_RDONLY)
    try:
        client.sendall(b"\0")
        send_fds(client, [null])
        client.close()
        before = _open_fds()
        handshake = Handshake(server)
        with pytest.raises(PeerGone):
            handshake.advance()
        assert len(handshake.stdio) == 1
        handshake.close_fds()
        assert _open_fds() == before
    finally:
        os.close(null)


def test_greeting_to_a_gone_client(pair):
    server, client = pair
    client.close()
    with pytest.raises(PeerGone):
        send_greeting(server)


def test_send_status_to_a_gone_client(pair):
    server, client = pair
    client.close()
    with pytest.raises(PeerGone):
        send_status(server, 0)


# ---------------------------------------------------------------------------
# Exit status of SystemExit(code), as CPython computes it


@pytest.mark.parametrize(
    "code, status",
    [(None, 0), (0, 0), (3, 3), (True, 1), (256, 0), (-1, 255), (2**40 + 7, 7), (2**70, 255), ("msg", 1), (1.0, 1)],
)
def test_exit_status_of_code(code, status):
    assert exit_status_of_code(code) == status
