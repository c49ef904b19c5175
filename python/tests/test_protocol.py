"""The wire format, byte by byte, in-process over socketpairs."""

from __future__ import annotations

import os
import socket
import time

import pytest
from harness import send_fds

from prefork_interp._fastexit import exit_status_of_code
from prefork_interp._protocol import (
    GREETING,
    MAX_REQUEST,
    Offer,
    PeerGone,
    PreforkError,
    ProtocolError,
    encode_request,
    parse_request,
    parse_setup_env,
    receive_call,
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
    assert request.env == {b"A": b"1", b"EMPTY": b"", b"EQ": b"x=y"}, "first occurrence wins, as at start-up"
    assert request.argv == argv
    assert request.offer == Offer()
    assert not request.offer.call1


def test_request_layout_from_the_protocol_document():
    body = b"A=1\0\0python3\0/s.py\0x\0"
    assert encode_request([(b"A", b"1")], [b"python3", b"/s.py", b"x"]) == b"\0\0\0\x15" + body
    assert parse_request(body).argv == [b"python3", b"/s.py", b"x"]


def test_reserved_extension_entries_are_kept_out_of_the_environment():
    request = parse_request(encode_request([(b"PREFORK_INTERP_EXT_SIGNALS", b"1"), (b"PREFORK_INTERPX", b"2")], [b"i"])[4:])
    assert request.offer == Offer(names=(), ignored=(b"PREFORK_INTERP_EXT_SIGNALS",))
    assert not request.offer.call1
    assert request.env == {b"PREFORK_INTERPX": b"2"}


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
    assert request.offer.names == names
    assert request.offer.call1 is call1
    assert request.env == {b"A": b"1", b"B": b"2"}


def test_offer_first_entry_counts():
    env = [(b"PREFORK_INTERP_EXT", b"nothing"), (b"PREFORK_INTERP_EXT", b"call1")]
    assert not parse_request(encode_request(env, [b"i"])[4:]).offer.call1


@pytest.mark.parametrize(
    "body, message",
    [
        (b"A=1\0\0python3", "does not end with NUL"),
        (b"A=1\0B=2\0", "no empty string"),
        (b"A=1\0\0", "no arguments"),
        (b"NOEQUALS\0\0python3\0", "has no '='"),
    ],
)
def test_request_errors(body, message):
    with pytest.raises(ProtocolError, match=message):
        parse_request(body)


# ---------------------------------------------------------------------------
# A whole call over a socketpair


def _open_fds():
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture
def pair():
    server, client = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    yield server, client
    server.close()
    client.close()


def test_receive_call(pair, tmp_path):
    server, client = pair
    files = [open(tmp_path / name, "wb") for name in ("in", "out", "err")]
    try:
        client.sendall(b"\0")
        for f in files:
            send_fds(client, [f.fileno()])
        client.sendall(encode_request([(b"HOME", b"/h")], [b"python3", b"/s.py", b"a"]))
        fds, request = receive_call(server, timeout=5)
        try:
            for fd, f in zip(fds, files):
                assert fd not in (f.fileno() for f in files)
                mine, theirs = os.fstat(fd), os.fstat(f.fileno())
                assert (mine.st_dev, mine.st_ino) == (theirs.st_dev, theirs.st_ino)
        finally:
            for fd in fds:
                os.close(fd)
        assert request.env == {b"HOME": b"/h"}
        assert request.argv == [b"python3", b"/s.py", b"a"]
        assert client.recv(100) == GREETING == b"PFI\n\0\0\0\0"
        assert server.gettimeout() is None, "the call socket goes back to blocking"
        send_status(server, 3 << 8)
        assert client.recv(4) == b"\0\0\x03\0"
    finally:
        for f in files:
            f.close()


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
        client.sendall((MAX_REQUEST + 1).to_bytes(4, "big"))
    elif case == "bad body":
        client.sendall(b"\0\0\0\3abc")


@pytest.mark.parametrize(
    "case, message",
    [
        ("signalling byte", "signalling byte is 0x07"),
        ("no fd", "0 control messages"),
        ("two fds", "2 fds in one message"),
        ("too long", "over the"),
        ("bad body", "does not end with NUL"),
    ],
)
def test_receive_call_rejects_and_leaks_no_fd(pair, case, message):
    server, client = pair
    null = os.open(os.devnull, os.O_RDONLY)
    try:
        _bad_call(client, null, case)
        before = _open_fds()
        with pytest.raises(ProtocolError, match=message):
            receive_call(server, timeout=5)
        assert _open_fds() == before, "received fds must be closed on error"
    finally:
        os.close(null)


def test_receive_call_peer_gone(pair):
    server, client = pair
    null = os.open(os.devnull, os.O_RDONLY)
    try:
        client.sendall(b"\0")
        send_fds(client, [null])
        client.close()
        before = _open_fds()
        with pytest.raises(PeerGone):
            receive_call(server, timeout=5)
        assert _open_fds() == before
    finally:
        os.close(null)


def test_receive_call_gives_up_on_a_silent_client(pair):
    server, _client = pair
    started = time.monotonic()
    with pytest.raises(PeerGone, match="in time"):
        receive_call(server, timeout=0.3)
    assert 0.25 < time.monotonic() - started < 3


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
