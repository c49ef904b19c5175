"""Extension pty1 through a client written here (fake_client.Call1): the
pty's slave the client passes becomes the controlling terminal of a new
session, whose leader is the executor's parent, and the executor's process
group the pty's foreground group (protocol.md section 9.3).

Each call makes a pty with ``os.openpty()``, sends the slave after the
extra fds and closes its own copy, then reads the master: what the script
writes, and at the end EIO, which comes only when no process holds the
slave any more (not the server, not a spare).
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import select
import signal
import socket
import struct
import subprocess
import sys
import textwrap
import time

import pytest
from fake_client import ACCEPT_FRAME, ACCEPT_PTY_FRAME, Call1, FakeClient
from harness import alive, send_fds, wait_until

from prefork_interp._executors import _Running
from prefork_interp._log import Log
from prefork_interp._protocol import (
    TAG_ATTR,
    TAG_FGND,
    TAG_SIGG,
    TAG_SIGP,
    TAG_STOP,
    Attributes,
    Frame,
    encode_frame,
    encode_u32_frame,
)

#: ``ioctl`` asking a tty for its session (termios has no name for it).
TIOCGSID = 0x5429

SCRIPT = """\
import json, os, signal, stat, sys, time
import prefork_interp
prefork_interp.initialisation_complete(log_facility=None, pool_size=POOL_SIZE)


def fd_info(n):
    st = os.fstat(n)
    try:
        name = os.ttyname(n)
    except OSError:
        name = None
    return {"tty": name, "fifo": stat.S_ISFIFO(st.st_mode), "inheritable": os.get_inheritable(n)}


def report():
    got = {"pid": os.getpid(), "sid": os.getsid(0), "pgrp": os.getpgrp(), "ppid": os.getppid()}
    with open(f"/proc/{got['ppid']}/stat") as f:
        stat = f.read()
    # Fields after the command: state, ppid, pgrp, session.
    got["parent_sid"] = int(stat[stat.rindex(")") + 2 :].split()[3])
    with open(f"/proc/{got['ppid']}/cmdline", "rb") as f:
        got["parent_cmdline"] = f.read().decode(errors="replace")
    try:
        tty = os.open("/dev/tty", os.O_RDWR)
    except OSError as e:
        got["dev_tty"] = str(e)
    else:
        # Which terminal it is: the test looks for this on the pty's master.
        os.write(tty, b"via /dev/tty\\n")
        got["dev_tty"] = "opened"
        got["foreground"] = os.tcgetpgrp(tty)
        os.close(tty)
    got["fds"] = {n: fd_info(n) for n in range(3)}
    # Every fd of ours open on the pty's slave (fd 1 is one, with a pty).
    slave = got["fds"][1]["tty"]
    got["slave_fds"] = []
    for n in sorted(os.listdir("/proc/self/fd"), key=int):
        try:
            if slave and os.readlink(f"/proc/self/fd/{n}") == slave:
                got["slave_fds"].append(int(n))
        except OSError:
            pass  # the fd listdir read the directory with
    return got


def wait_for(name):
    while not os.path.exists(name):
        time.sleep(0.02)


mode, path = sys.argv[1], sys.argv[2]
if mode == "report":
    got = report()
    if not got["fds"][0]["tty"]:
        got["stdin"] = sys.stdin.readline()
    with open(path, "w") as f:
        json.dump(got, f)
    print("reported", flush=True)
    print("on stderr", file=sys.stderr, flush=True)
elif mode in ("exit", "kill"):
    with open(path, "w") as f:
        json.dump(report(), f)
    print("ending", flush=True)
    if mode == "exit":
        sys.exit(7)
    os.kill(os.getpid(), signal.SIGKILL)
elif mode == "wait":
    with open(path, "w") as f:
        json.dump(report(), f)
    try:
        print("ready", flush=True)
        while True:
            time.sleep(0.02)
    except KeyboardInterrupt:
        print("interrupted", flush=True)
        sys.exit(3)
elif mode == "read":
    # Reads a line from the pty, at once or once a file is there.
    with open(path, "w") as f:
        json.dump(report(), f)
    print("ready", flush=True)
    if len(sys.argv) > 3:
        wait_for(sys.argv[3])
    print("reading", flush=True)
    line = sys.stdin.readline()
    print("got " + line.strip(), flush=True)
    sys.exit(5)
elif mode == "jobs":
    # Job control of its own: a child's group in front of the pty.
    with open(path, "w") as f:
        json.dump(report(), f)
    child = os.fork()
    if child == 0:
        os.setpgid(0, 0)
        while True:
            time.sleep(1)
    os.setpgid(child, child)
    os.tcsetpgrp(0, child)
    print(f"job {child}", flush=True)
    wait_for(sys.argv[3])
    os.kill(child, signal.SIGKILL)
    os.waitpid(child, 0)
    print("job gone", flush=True)
    wait_for(sys.argv[4])
"""


@pytest.fixture(params=[2, 0], ids=["spares", "no-spares"])
def fake(request, tmp_path):
    """A server of SCRIPT started by a fake client; with ``pool_size`` 2
    (the default) or 0 (each executor forked when its call comes)."""
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(SCRIPT).replace("POOL_SIZE", str(request.param)))
    client = FakeClient(tmp_path, script, setup_args=("report", str(tmp_path / "first")))
    try:
        call = Call1(client.first_call, _argv(client, "report", str(tmp_path / "first")))
        try:
            status, out, err = call.finish()
        finally:
            call.close()
        assert status == 0, err
        assert out == b"reported\n", "without pty1, stdout is the pipe"
        first = json.loads((tmp_path / "first").read_text())
        client.servers.append(first["sid"])
        assert first["dev_tty"].startswith("[Errno 6]"), "no controlling terminal without pty1"
        yield client
    finally:
        client.close()


def _argv(client: FakeClient, *args: str):
    return [b"python3", client.script.encode(), *(a.encode() for a in args)]


class PtyCall:
    """A call offering call1 and pty1, with a fresh pty: the slave is sent
    (and our copy closed), the master is ours to read."""

    def __init__(
        self, client: FakeClient, args, pty, stdin=None, attr_body=None, send_slave=True, ptybg=False
    ) -> None:
        self.master, slave = os.openpty()
        self.slave_name = os.ttyname(slave)
        try:
            attrs = Attributes(sigign=frozenset(), sigmask=frozenset(), pty=pty, ptybg=ptybg)
            self.call = Call1(
                client.connect(), _argv(client, *args), attrs=attrs, offer=b"call1,pty1", stdin=stdin,
                pty=slave if send_slave and attr_body is None else None, send_attr=attr_body is None,
            )
            if attr_body is not None:
                assert self.call.accept == ACCEPT_PTY_FRAME
                self.call.sock.sendall(encode_frame(TAG_ATTR, attr_body))
                if send_slave:
                    try:
                        send_fds(self.call.sock, [slave])
                    except (BrokenPipeError, ConnectionResetError):
                        pass  # the server has already dropped the call
        except BaseException:
            os.close(self.master)
            raise
        finally:
            os.close(slave)

    def read_master(self, needle: bytes, timeout: float = 30) -> bytes:
        """Read the master until ``needle`` has come."""
        data = b""
        deadline = time.monotonic() + timeout
        while needle not in data:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.master], [], [], left)[0]:
                raise AssertionError(f"timed out waiting for {needle!r} on the pty; got {data!r}")
            data += os.read(self.master, 4096)
        return data

    def read_master_to_eio(self, timeout: float = 30) -> bytes:
        """Read the master until EIO: every copy of the slave is closed."""
        data = b""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.master], [], [], left)[0]:
                raise AssertionError(f"no EIO on the pty's master: a copy of the slave is still open; got {data!r}")
            try:
                chunk = os.read(self.master, 4096)
            except OSError as e:
                assert e.errno == errno.EIO, e
                return data
            assert chunk, "EOF instead of EIO on a pty master"
            data += chunk

    def close(self) -> None:
        self.call.close()
        os.close(self.master)


def _holding(path: str, pids) -> list:
    """The pids among ``pids`` with an fd open on ``path``."""
    found = []
    for pid in pids:
        try:
            names = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for name in names:
            try:
                if os.readlink(f"/proc/{pid}/fd/{name}") == path:
                    found.append(pid)
                    break
            except OSError:
                pass
    return found


def _assert_dropped(call: Call1) -> None:
    """The server closed the call without a frame: EOF, or a reset when it
    left bytes unread (the slave's message after a bad ATTR)."""
    try:
        frame = call.frame(10)
    except ConnectionResetError:
        return
    assert frame is None, f"nothing after a bad request, got {frame}"


def _assert_still_serving(fake: FakeClient, tmp_path) -> None:
    """A plain call1 call still works."""
    call = Call1(fake.connect(), _argv(fake, "report", str(tmp_path / "after")))
    try:
        status, out, err = call.finish()
    finally:
        call.close()
    assert status == 0, err
    assert out == b"reported\n"


# ---------------------------------------------------------------------------
# The call on its pty


def _assert_session(got) -> None:
    """The executor leads its process group, in a session its parent, the
    call's session leader, leads (not orphaned: ^Z can stop it)."""
    assert got["pgrp"] == got["pid"], "the executor leads the call's process group"
    assert got["sid"] != got["pid"], "but not a session"
    assert got["sid"] == got["ppid"] == got["parent_sid"], "its parent leads its session"
    assert "prefork-interp session: " in got["parent_cmdline"]


def test_pty_on_fds_0_1_2(fake, tmp_path):
    report = tmp_path / "report"
    call = PtyCall(fake, ("report", str(report)), pty=(0, 1, 2))
    try:
        assert call.call.accept == ACCEPT_PTY_FRAME
        status, out, err = call.call.finish()
        assert status == 0, call.read_master_to_eio()  # a traceback is on the pty
        # The v1 fds 0-2 were replaced, and no copy of them kept: the pipes
        # got nothing and reached EOF.
        assert (out, err) == (b"", b"")
        # Output on the pty (onlcr: CR LF), then EIO: no copy of the slave
        # is left anywhere, the server and its spares included.
        assert call.read_master_to_eio() == b"via /dev/tty\r\nreported\r\non stderr\r\n"
    finally:
        call.close()
    got = json.loads(report.read_text())
    fake.servers.append(got["sid"])  # killed at the end, if anything is left
    _assert_session(got)
    assert got["foreground"] == got["pgrp"], "which is the pty's foreground group"
    assert got["dev_tty"] == "opened", "/dev/tty is the pty (what was written to it came out of the master)"
    for n in "012":
        assert got["fds"][n] == {"tty": call.slave_name, "fifo": False, "inheritable": True}, n
    assert got["slave_fds"] == [0, 1, 2], "the received copy of the slave is closed"
    _assert_still_serving(fake, tmp_path)


def test_pty_on_fd_1_only(fake, tmp_path):
    """``pty=1`` with stdin a pipe: fds 0 and 2 stay what the caller passed."""
    report = tmp_path / "report"
    stdin_r, stdin_w = os.pipe()
    try:
        call = PtyCall(fake, ("report", str(report)), pty=(1,), stdin=stdin_r)
    finally:
        os.close(stdin_r)
    try:
        os.write(stdin_w, b"from the pipe\n")
        os.close(stdin_w)
        stdin_w = -1
        status, out, err = call.call.finish()
        assert status == 0, err
        assert out == b"", "fd 1 is the pty"
        assert err == b"on stderr\n", "fd 2 is the caller's pipe"
        assert call.read_master_to_eio() == b"via /dev/tty\r\nreported\r\n"
    finally:
        call.close()
        if stdin_w >= 0:
            os.close(stdin_w)
    got = json.loads(report.read_text())
    fake.servers.append(got["sid"])
    assert got["stdin"] == "from the pipe\n"
    assert got["fds"]["0"] == {"tty": None, "fifo": True, "inheritable": True}
    assert got["fds"]["1"] == {"tty": call.slave_name, "fifo": False, "inheritable": True}
    assert got["fds"]["2"] == {"tty": None, "fifo": True, "inheritable": True}
    _assert_session(got)
    assert got["dev_tty"] == "opened"
    assert got["foreground"] == got["pid"]
    assert got["slave_fds"] == [1]


@pytest.mark.parametrize("how", ["SIGG", "typed ^C"])
def test_interrupt_reaches_the_script(fake, tmp_path, how):
    """While the call runs, the pty belongs to the executor's session and
    its group is in the foreground; no other process of the server's holds
    the slave.  ^C reaches the script both as a SIGG frame and typed on
    the pty (the line discipline signals the foreground group)."""
    report = tmp_path / "report"
    call = PtyCall(fake, ("wait", str(report)), pty=(0, 1, 2))
    try:
        call.read_master(b"ready\r\n")
        got = json.loads(report.read_text())
        executor, leader = got["pid"], got["ppid"]
        fake.servers.append(leader)  # its session: killed at the end
        _assert_session(got)
        assert os.tcgetpgrp(call.master) == executor
        sid = struct.unpack("i", fcntl.ioctl(call.master, TIOCGSID, b"\0" * 4))[0]
        assert sid == leader
        server = fake.servers[0]
        others = [p.pid for p in alive(lambda p: p.sid == server)]
        assert len(others) >= 1 and server in others
        assert _holding(call.slave_name, others) == [], "the server and its spares hold no copy of the slave"
        # The leader closes its copy right after the fork, in parallel with
        # the executor starting the script: it may not have done so yet.
        wait_until(lambda: _holding(call.slave_name, [leader]) == [], 10, "the leader closing its copy of the slave")
        assert _holding(call.slave_name, [executor]) == [executor]
        if how == "SIGG":
            call.call.send(TAG_SIGG, signal.SIGINT)
        else:
            os.write(call.master, b"\x03")
        _ends_interrupted(call)
    finally:
        call.close()


def _ends_interrupted(call: PtyCall) -> None:
    """The "wait" script, interrupted, ends with its handler's status 3
    and says so on the pty, which then reads EIO."""
    assert call.call.expect(b"EXIT") == 3 << 8
    assert b"interrupted\r\n" in call.read_master_to_eio()


def _wait_call(fake: FakeClient, tmp_path) -> PtyCall:
    """A call of the "wait" script on a pty, running, its session noted
    for the clean-up."""
    report = tmp_path / "report"
    call = PtyCall(fake, ("wait", str(report)), pty=(0, 1, 2))
    try:
        call.read_master(b"ready\r\n")
        fake.servers.append(json.loads(report.read_text())["sid"])
    except BaseException:
        call.close()
        raise
    return call


def test_sigstop_stops_the_call(fake, tmp_path):
    call = _wait_call(fake, tmp_path)
    try:
        call.call.send(TAG_SIGG, signal.SIGSTOP)
        assert call.call.expect(TAG_STOP) == signal.SIGSTOP
        call.call.send(TAG_SIGG, signal.SIGCONT)
        call.call.send(TAG_SIGG, signal.SIGINT)
        _ends_interrupted(call)
    finally:
        call.close()


def _state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    return stat[stat.rindex(")") + 2]


@pytest.mark.parametrize("how", ["typed ^Z", "SIGG SIGTSTP"])
def test_tstp_stops_the_call(fake, tmp_path, how):
    """The call's group is not orphaned (its leader's session holds it):
    SIGTSTP stops it, typed (the line discipline signals the foreground
    group) or sent; the stop is reported, and SIGCONT continues it."""
    call = _wait_call(fake, tmp_path)
    try:
        executor = json.loads((tmp_path / "report").read_text())["pid"]
        if how == "SIGG SIGTSTP":
            call.call.send(TAG_SIGG, signal.SIGTSTP)
        else:
            os.write(call.master, b"\x1a")
        assert call.call.expect(TAG_STOP) == signal.SIGTSTP
        assert _state(executor) == "T"
        call.call.send(TAG_SIGG, signal.SIGCONT)
        call.call.send(TAG_SIGG, signal.SIGINT)
        _ends_interrupted(call)
    finally:
        call.close()


def _gone(pid: int) -> bool:
    """Reaped (a zombie would still be in /proc)."""
    return not os.path.exists(f"/proc/{pid}")


@pytest.mark.parametrize("mode, status", [("exit", 7 << 8), ("kill", signal.SIGKILL)])
def test_reported_status_and_the_end(fake, tmp_path, mode, status):
    """The client gets the executor's own wait status (the leader's report,
    not the leader's exit 0), then EIO on the master: no copy of the slave
    is left anywhere; the leader and the executor are both gone."""
    report = tmp_path / "report"
    call = PtyCall(fake, (mode, str(report)), pty=(0, 1, 2))
    try:
        assert call.call.expect(b"EXIT") == status
        got = json.loads(report.read_text())
        fake.servers.append(got["sid"])
        _assert_session(got)
        assert b"ending\r\n" in call.read_master_to_eio()
    finally:
        call.close()
    # The leader reaps the executor before it reports its end, and the
    # server reaps the leader before it sends EXIT.
    assert _gone(got["pid"]) and _gone(got["ppid"])
    assert not alive(lambda p: p.sid == got["sid"])


# ---------------------------------------------------------------------------
# The job's state mirrored onto the pty (ptybg, FGND: protocol.md section 9.3
# step 5)


def _foreground_becomes(call: PtyCall, pgrp: int, timeout: float = 30) -> None:
    """Wait until ``pgrp`` is the pty's foreground group (the leader moves
    it when the server passes an FGND on, after the frame has gone)."""
    deadline = time.monotonic() + timeout
    while os.tcgetpgrp(call.master) != pgrp:
        if time.monotonic() > deadline:
            raise AssertionError(f"the pty's foreground is {os.tcgetpgrp(call.master)}, not {pgrp}")
        time.sleep(0.01)


def test_started_in_the_background_a_read_stops_the_script(fake, tmp_path):
    """``ptybg=1``: the leader's group stays in front of the pty, so the
    script's read stops it (SIGTTIN, reported); FGND 1 and SIGCONT (what a
    client does on ``fg``) let it read."""
    report = tmp_path / "report"
    call = PtyCall(fake, ("read", str(report)), pty=(0, 1, 2), ptybg=True)
    try:
        assert call.call.expect(TAG_STOP) == signal.SIGTTIN
        got = json.loads(report.read_text())
        fake.servers.append(got["sid"])
        _assert_session(got)
        assert got["foreground"] == got["ppid"], "the leader's group in front, from the start"
        assert os.tcgetpgrp(call.master) == got["ppid"]
        assert _state(got["pid"]) == "T"
        os.write(call.master, b"typed\n")
        call.call.send(TAG_FGND, 1)
        call.call.send(TAG_SIGG, signal.SIGCONT)
        assert call.call.expect(b"EXIT") == 5 << 8
        out = call.read_master_to_eio()
        assert b"ready\r\nreading\r\n" in out, "writing in the background is allowed (no tostop)"
        assert b"got typed\r\n" in out
    finally:
        call.close()


def test_moved_to_the_background_the_script_runs_until_it_reads(fake, tmp_path):
    """Started in the foreground; after FGND 0 a script that does not read
    runs on (a background job is stopped only when it reads); when it
    reads, SIGTTIN stops it; FGND 1 and SIGCONT let it read."""
    report, go = tmp_path / "report", tmp_path / "go"
    call = PtyCall(fake, ("read", str(report), str(go)), pty=(0, 1, 2))
    try:
        call.read_master(b"ready\r\n")
        got = json.loads(report.read_text())
        fake.servers.append(got["sid"])
        executor, leader = got["pid"], got["ppid"]
        assert os.tcgetpgrp(call.master) == executor
        call.call.send(TAG_FGND, 0)
        _foreground_becomes(call, leader)
        go.touch()
        call.read_master(b"reading\r\n")
        assert call.call.expect(TAG_STOP) == signal.SIGTTIN
        assert _state(executor) == "T"
        call.call.send(TAG_FGND, 1)
        call.call.send(TAG_SIGG, signal.SIGCONT)
        os.write(call.master, b"typed\n")
        assert call.call.expect(b"EXIT") == 5 << 8
        assert b"got typed\r\n" in call.read_master_to_eio()
    finally:
        call.close()


def test_the_leader_gives_back_the_scripts_own_foreground_job(fake, tmp_path):
    """A script that put a job of its own in front of the pty gets it back
    after FGND 0 and FGND 1; if that job has gone meanwhile, the
    executor's group gets the foreground."""
    report, go, end = tmp_path / "report", tmp_path / "go", tmp_path / "end"
    call = PtyCall(fake, ("jobs", str(report), str(go), str(end)), pty=(0, 1, 2))
    try:
        out = call.read_master(b"job ")
        while not re.search(rb"job \d+\r\n", out):
            out += call.read_master(b"\n")
        job = int(re.search(rb"job (\d+)\r\n", out).group(1))
        got = json.loads(report.read_text())
        fake.servers.append(got["sid"])
        executor, leader = got["pid"], got["ppid"]
        assert os.tcgetpgrp(call.master) == job
        call.call.send(TAG_FGND, 0)
        _foreground_becomes(call, leader)
        call.call.send(TAG_FGND, 1)
        _foreground_becomes(call, job)
        # A repeated FGND 1 moves nothing.
        call.call.send(TAG_FGND, 1)
        call.call.send(TAG_FGND, 0)
        _foreground_becomes(call, leader)
        go.touch()
        call.read_master(b"job gone\r\n")
        call.call.send(TAG_FGND, 1)
        _foreground_becomes(call, executor)
        end.touch()
        assert call.call.expect(b"EXIT") == 0
        call.read_master_to_eio()
    finally:
        call.close()


@pytest.mark.parametrize(
    "garbage",
    [encode_frame(TAG_FGND, b"\0\0\0\0\1"), encode_u32_frame(TAG_FGND, 2), encode_frame(TAG_FGND, b"")],
)
def test_malformed_fgnd_is_skipped(fake, tmp_path, garbage):
    call = _wait_call(fake, tmp_path)
    try:
        executor = json.loads((tmp_path / "report").read_text())["pid"]
        call.call.sock.sendall(garbage)
        # A STOP answers a later frame: the bad one has been read (and
        # nothing held the signal for an answer from the leader).
        call.call.send(TAG_SIGG, signal.SIGSTOP)
        assert call.call.expect(TAG_STOP) == signal.SIGSTOP
        assert os.tcgetpgrp(call.master) == executor, "the pty's foreground has not moved"
        call.call.send(TAG_SIGG, signal.SIGCONT)
        call.call.send(TAG_SIGG, signal.SIGINT)
        _ends_interrupted(call)
    finally:
        call.close()


def test_fgnd_without_a_pty_is_ignored(fake, tmp_path):
    call = Call1(
        fake.connect(), _argv(fake, "wait", str(tmp_path / "report")),
        attrs=Attributes(sigign=frozenset(), sigmask=frozenset()),
    )
    try:
        call.read_out(b"ready\n")
        call.send(TAG_FGND, 0)
        call.send(TAG_FGND, 1)
        call.sock.sendall(encode_u32_frame(TAG_FGND, 7))
        call.send(TAG_SIGG, signal.SIGSTOP)
        assert call.expect(TAG_STOP) == signal.SIGSTOP
        call.send(TAG_SIGG, signal.SIGCONT)
        call.send(TAG_SIGP, signal.SIGINT)
        status, out, _ = call.finish()
        assert status == 3 << 8
        assert out == b"interrupted\n"
    finally:
        call.close()


# ---------------------------------------------------------------------------
# Negotiation and bad clients


def test_pty1_needs_call1(fake, tmp_path):
    """``pty1`` offered alone is ignored: a v1 call, no accept frame."""
    call = Call1(fake.connect(), _argv(fake, "report", str(tmp_path / "report")), offer=b"pty1")
    try:
        assert len(call.accept) == 4 and int.from_bytes(call.accept, "big") == 0, "a v1 status"
        assert call.sock.recv(1) == b""
        assert Call1.drain(call.out) == b"reported\n"
    finally:
        call.close()
    assert json.loads((tmp_path / "report").read_text())["dev_tty"].startswith("[Errno 6]")


def test_pty_attribute_without_pty1_drops_the_call(fake, tmp_path):
    """With call1 alone accepted, an ATTR naming ``pty`` is malformed."""
    call = Call1(
        fake.connect(), _argv(fake, "report", str(tmp_path / "report")),
        attrs=Attributes(pty=(0, 1, 2)), offer=b"later,call1",
    )
    try:
        assert call.accept == ACCEPT_FRAME
        _assert_dropped(call)
    finally:
        call.close()
    assert not (tmp_path / "report").exists()
    _assert_still_serving(fake, tmp_path)


@pytest.mark.parametrize(
    "attr_body, send_slave",
    [
        (b"pty=3\0", True),
        (b"pty=\0", True),
        (b"pty=1,0\0", True),
        (b"pty=1,1\0", True),
        (b"pty=-1\0", True),
        (b"fds=\0", True),  # pty1 accepted, but no pty key
        (b"pty=0\0", False),  # no slave message: the client hangs up
        (b"pty=0\0ptybg=2\0", True),
        (b"pty=0\0ptybg=\0", True),
    ],
)
def test_malformed_pty_drops_the_call(fake, tmp_path, attr_body, send_slave):
    report = tmp_path / "report"
    call = PtyCall(fake, ("report", str(report)), pty=None, attr_body=attr_body, send_slave=send_slave)
    try:
        try:
            call.call.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the server has already dropped the call
        _assert_dropped(call.call)
        # The server closed its copy of the slave with the call.
        assert call.read_master_to_eio() == b""
    finally:
        call.close()
    assert not report.exists()
    _assert_still_serving(fake, tmp_path)


# ---------------------------------------------------------------------------
# The server's side: the leader's reports


def test_signals_are_held_until_the_executor_is_reported(tmp_path):
    """Until the leader has reported the executor's pid, SIGP, SIGG and a
    hang-up's signals are held; then they go to the executor's group.
    Stops reported become STOP frames; the reported status is kept."""
    from prefork_interp._session import EXECUTOR, EXITED, REPORT, STOPPED

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    call_ours, call_theirs = socket.socketpair()
    leader_ours, leader_theirs = socket.socketpair()
    try:
        leader_ours.setblocking(False)
        running = _Running(12345, call_ours, True, Log("x.py", None, str(tmp_path / "log")), leader_ours)
        assert running.executor is None
        running._handle(Frame(TAG_SIGG, struct.pack(">I", signal.SIGTERM)))
        assert running.held == [(signal.SIGTERM, True)], "held, not sent"
        assert child.poll() is None
        # Half a report waits for the rest.
        whole = REPORT.pack(EXECUTOR, child.pid)
        leader_theirs.sendall(whole[:5])
        running.leader_readable()
        assert running.executor is None and running.held
        leader_theirs.sendall(whole[5:] + REPORT.pack(STOPPED, signal.SIGTSTP) + REPORT.pack(EXITED, 0x700))
        running.leader_readable()
        assert running.executor is None, "ended: its pid may be reused"
        assert running.reported == 0x700
        assert child.wait() == -signal.SIGTERM, "the held SIGG went to the executor's group"
        call_theirs.settimeout(30)
        assert call_theirs.recv(12) == TAG_STOP + struct.pack(">II", 4, signal.SIGTSTP)
        leader_theirs.close()
        running.leader_readable()
        assert running.leader is None, "EOF: the leader has gone"
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        for sock in (call_ours, call_theirs, leader_ours, leader_theirs):
            sock.close()


def test_fgnd_goes_to_the_leader_and_signals_wait_for_its_answer(tmp_path):
    """An FGND frame becomes a record to the leader; a signal after it is
    held until the leader has answered (so a SIGCONT after FGND 1 finds
    the pty's foreground moved).  Malformed ones go nowhere."""
    from prefork_interp._session import EXECUTOR, FOREGROUND, REPORT

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    call_ours, call_theirs = socket.socketpair()
    leader_ours, leader_theirs = socket.socketpair()
    try:
        leader_ours.setblocking(False)
        leader_theirs.settimeout(30)
        running = _Running(12345, call_ours, True, Log("x.py", None, str(tmp_path / "log")), leader_ours)
        leader_theirs.sendall(REPORT.pack(EXECUTOR, child.pid))
        running.leader_readable()
        assert running.executor == child.pid
        for body in (b"\0\0\0\2", b"\0\0\0\0\1"):
            running._handle(Frame(TAG_FGND, body))
        running._handle(Frame(TAG_FGND, struct.pack(">I", 1)))
        assert leader_theirs.recv(64) == REPORT.pack(FOREGROUND, 1), "only the good one passed on"
        running._handle(Frame(TAG_SIGG, struct.pack(">I", signal.SIGTERM)))
        assert running.held == [(signal.SIGTERM, True)], "held until the leader answers"
        assert child.poll() is None
        leader_theirs.sendall(REPORT.pack(FOREGROUND, 1))
        running.leader_readable()
        assert running.held == []
        assert child.wait() == -signal.SIGTERM
        # The leader gone: an FGND goes nowhere, and holds nothing.
        leader_theirs.close()
        running.leader_readable()
        assert running.leader is None
        running._handle(Frame(TAG_FGND, struct.pack(">I", 0)))
        assert running.unanswered == 0
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        for sock in (call_ours, call_theirs, leader_ours, leader_theirs):
            sock.close()


def test_fgnd_for_a_call_without_a_pty_goes_nowhere(tmp_path):
    call_ours, call_theirs = socket.socketpair()
    try:
        running = _Running(os.getpid(), call_ours, True, Log("x.py", None, str(tmp_path / "log")))
        running._handle(Frame(TAG_FGND, struct.pack(">I", 0)))
        assert running.unanswered == 0 and running.held == []
    finally:
        call_ours.close()
        call_theirs.close()
