"""The options of docs/options.md, which the three libraries share: the
defaults of its table, ``max_servers=0``, where messages go (syslog, a log
file, the run directory's ``log``), log files' lines and rotation, and the
last error kept in the server record (protocol.md section 8).

A server's warnings are provoked with a connection that sends a wrong
signalling byte: the server logs ``bad request from client: signalling
byte is 0xNN, not 0`` and goes on.
"""

from __future__ import annotations

import inspect
import json
import os
import re
import shutil
import socket
import stat
import subprocess
import syslog
import tempfile
import time
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

import pytest
from fake_client import FakeClient
from harness import Harness, wait_until

import prefork_interp
from prefork_interp._listing import ServerRecord, escape
from prefork_interp._log import Log, format_line
from prefork_interp._options import LOG_ENV_NAME, default_max_servers, make_options
from prefork_interp._protocol import GREETING, MAX_REQUEST_LEN, U32_BE

OPTIONS_MD = Path(__file__).resolve().parents[2] / "docs" / "options.md"


def documented_defaults() -> Dict[str, str]:
    """``name default`` per line of the ```text block of docs/options.md."""
    text = OPTIONS_MD.read_text()
    block = re.search(r"^```text\n(.*?)^```", text, re.M | re.S)
    assert block is not None, f"no ```text block in {OPTIONS_MD}"
    defaults = {}
    for line in block.group(1).splitlines():
        name, value = line.split()
        defaults[name] = value
    return defaults


def expected(name: str, value: str) -> object:
    """What the Python library's normalised option is for the default
    ``value`` of the table."""
    if value == "8*cpus":
        return 8 * max(len(os.sched_getaffinity(0)), 1)
    if value in ("true", "false"):
        return value == "true"
    if value == "none":
        return () if name == "autoreload_extra" else None
    if value.startswith("LOG_"):
        return getattr(syslog, value)
    return float(value) if name.endswith("_timeout") else int(value)


def test_defaults_are_those_of_docs_options_md(monkeypatch):
    """Every option of the table is a keyword of initialisation_complete()
    and none else; each default, normalised as the server uses it, is the
    table's (``8*cpus``: 8 per CPU this process may run on, at least 8)."""
    monkeypatch.delenv(LOG_ENV_NAME, raising=False)
    documented = documented_defaults()
    params = inspect.signature(prefork_interp.initialisation_complete).parameters
    assert sorted(params) == sorted(documented)
    opts = make_options(**{name: p.default for name, p in params.items()}, environ=os.environ)
    got = {name: getattr(opts, name) for name in documented}
    want = {name: expected(name, value) for name, value in documented.items()}
    assert got == want
    assert default_max_servers() == want["max_servers"] >= 8


def test_max_servers_zero_or_negative_is_no_limit():
    assert make_options(max_servers=0).max_servers < 0
    assert make_options(max_servers=-5).max_servers < 0
    assert make_options(max_servers=3).max_servers == 3


def test_no_timeouts():
    assert make_options(idle_timeout=None).idle_timeout is None
    assert make_options(idle_timeout=-1).idle_timeout is None
    assert make_options(request_timeout=0).request_timeout == 0


def test_log_file_from_the_environment_only_when_not_given(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    env = {LOG_ENV_NAME: "env.log"}
    assert make_options(environ=env).log_file == str(tmp_path / "env.log")
    assert make_options(log_file="opt.log", environ=env).log_file == str(tmp_path / "opt.log")
    assert make_options(environ={LOG_ENV_NAME: ""}).log_file is None
    # Standalone (no environ given): the variable is not looked at.
    monkeypatch.setenv(LOG_ENV_NAME, "env.log")
    assert make_options().log_file is None


# ---------------------------------------------------------------------------
# Real servers

#: Calls of these scripts: ``ok`` prints ok; ``cpus`` prints the default
#: max_servers the call sees; ``together N DIR`` waits (20 s at most) until
#: N calls have joined it in DIR, and prints whether they all did.
BODY = """\
import time
mode = sys.argv[1]
if mode == "cpus":
    from prefork_interp._options import default_max_servers
    print(default_max_servers())
elif mode == "together":
    n, d = int(sys.argv[2]), sys.argv[3]
    open(os.path.join(d, str(os.getpid())), "w").close()
    deadline = time.monotonic() + 20
    while len(os.listdir(d)) < n and time.monotonic() < deadline:
        time.sleep(0.02)
    print(len(os.listdir(d)) >= n)
else:
    print("ok")
"""


def server_files(harness: Harness, script: Path) -> Tuple[Path, Path]:
    """The socket and the record of the server of ``script`` (found by the
    ``script=`` line of the records in the run directory)."""
    want = b"script=" + escape(os.fsencode(script))
    (record,) = [m for m in harness.run_dir.glob("m*") if want in m.read_bytes().split(b"\n")]
    return harness.run_dir / ("s" + record.name[1:]), record


def _hang_up(sock: socket.socket) -> None:
    """Wait for the server to close the connection."""
    while sock.recv(4096):
        pass


def provoke_warning(harness: Harness, script: Path, byte: int) -> str:
    """Connect to the server of ``script``, send ``byte`` (not 0) as the
    signalling byte, and wait for it to hang up; returns the warning it
    logged."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(str(server_files(harness, script)[0]))
        assert sock.recv(len(GREETING), socket.MSG_WAITALL) == GREETING
        sock.sendall(bytes([byte]))
        _hang_up(sock)
    return f"bad request from client: signalling byte is 0x{byte:02x}, not 0"


def provoke_long_warning(harness: Harness, script: Path) -> str:
    """As :func:`provoke_warning`, with a request length over the limit."""
    null = os.open(os.devnull, os.O_RDWR)
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(10)
            sock.connect(str(server_files(harness, script)[0]))
            FakeClient.send_preamble(sock, (null, null, null))
            sock.sendall(U32_BE.pack(MAX_REQUEST_LEN + 1))
            _hang_up(sock)
    finally:
        os.close(null)
    return f"bad request from client: request length {MAX_REQUEST_LEN + 1} is over the {MAX_REQUEST_LEN} byte limit"


def server_pid(harness: Harness, script: Path) -> int:
    """The server's pid, from its line in the record, which it writes once
    started: after a cold call, which ran in place meanwhile, it may not
    be there yet."""
    record = server_files(harness, script)[1]

    def pid() -> Optional[int]:
        for line in record.read_bytes().splitlines():
            if line.startswith(b"server="):
                return int(line[len(b"server=") :].split()[0])
        return None

    found = wait_until(pid, 10, "the server's line in the record")
    assert isinstance(found, int)
    return found


def _lines(path: Path) -> List[str]:
    try:
        return path.read_text().splitlines()
    except FileNotFoundError:
        return []


LINE = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d) (\S+)\[(\d+)\] (error|warning|info|debug): (.*)$")


def check_line(line: str, name: str, pid: int, level: str, message: str) -> None:
    """``line`` is ``TIME NAME[PID] LEVEL: MESSAGE``, logged just now."""
    m = LINE.match(line)
    assert m is not None, line
    assert m.group(2, 3, 4, 5) == (name, str(pid), level, message)
    logged = time.mktime(time.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S"))
    assert abs(time.time() - logged) < 60, f"{m.group(1)} is not local time now"


def test_max_servers_zero_runs_every_call_at_once(our_harness):
    """With one CPU the default would be 8 calls at once: with
    ``max_servers=0``, 9 calls run together (each waits for all 9)."""
    harness = our_harness
    script = harness.script("nolimit.py", BODY, init="max_servers=0")
    cpu = min(os.sched_getaffinity(0))

    def start(*args: str, **kw) -> subprocess.Popen:
        p = subprocess.Popen(
            harness.command(script, args),
            env=harness.env(),
            cwd=harness.dir,
            stdout=subprocess.PIPE,
            preexec_fn=lambda: os.sched_setaffinity(0, {cpu}),
            **kw,
        )
        harness.popened.append(p)
        return p

    first = start("cpus")
    assert first.communicate(timeout=30)[0] == b"8\n", "one CPU: the default would be 8"
    n = 9
    meeting = harness.dir / "meeting"
    meeting.mkdir()
    calls = [start("together", str(n), str(meeting)) for _ in range(n)]
    outs = [p.communicate(timeout=60)[0] for p in calls]
    assert outs == [b"True\n"] * n
    assert [p.returncode for p in calls] == [0] * n


def test_request_timeout(our_harness):
    """``request_timeout=1``: a caller that sends nothing is dropped after
    about a second (a debug line says so); ``request_timeout=0``: still
    held after longer than the default's 5 s."""
    harness = our_harness
    log = harness.dir / "timeout.log"
    quick = harness.script("quick.py", BODY, init=f"request_timeout=1, log_facility=None, log_file={str(log)!r}")
    patient = harness.script("patient.py", BODY, init="request_timeout=0")
    for script in (quick, patient):
        assert harness.run(script, "ok").out == b"ok\n"
    with socket.socket(socket.AF_UNIX) as q, socket.socket(socket.AF_UNIX) as p:
        for sock, script in ((q, quick), (p, patient)):
            sock.connect(str(server_files(harness, script)[0]))
            sock.settimeout(10)
            assert sock.recv(len(GREETING), socket.MSG_WAITALL) == GREETING
        greeted = time.monotonic()
        assert q.recv(1) == b""
        assert 0.5 < time.monotonic() - greeted < 5, "dropped once its 1 s request timeout is up"
        p.settimeout(max(0.1, greeted + 6 - time.monotonic()))
        with pytest.raises(socket.timeout):
            p.recv(1)
    wait_until(lambda: _lines(log), 5, "the debug line")
    check_line(_lines(log)[0], "quick.py", server_pid(harness, quick), "debug", "dropped a connection that sent no complete request within 1 s")


def test_log_file_lines(our_harness):
    """``log_file``: each message is one line ``TIME SCRIPT[PID] LEVEL:
    MESSAGE``, the file is created mode 0600, and nothing goes to the run
    directory's log."""
    harness = our_harness
    log = harness.dir / "server.log"
    script = harness.script("tool.py", BODY, init=f"log_facility=None, log_file={str(log)!r}")
    assert harness.run(script, "ok").out == b"ok\n"
    want = provoke_warning(harness, script, 7)
    pid = server_pid(harness, script)
    wait_until(lambda: _lines(log), 5, "a line in the log file")
    (line,) = _lines(log)
    check_line(line, "tool.py", pid, "warning", want)
    assert stat.S_IMODE(log.stat().st_mode) == 0o600
    want2 = provoke_warning(harness, script, 8)
    wait_until(lambda: len(_lines(log)) == 2, 5, "the second line")
    check_line(_lines(log)[1], "tool.py", pid, "warning", want2)
    assert not (harness.run_dir / "log").exists()


def test_log_file_rotation(our_harness):
    """A log file that has reached the limit (here 300 bytes, the module
    variable lowered by the script) is renamed to FILE.old before the next
    line, which starts a new file: no line is split or lost between the
    two, and neither grows past the limit by more than a line."""
    harness = our_harness
    log = harness.dir / "rot.log"
    limit = 300
    setup = f"import prefork_interp._log\nprefork_interp._log.LOG_FILE_MAX = {limit}\n"
    script = harness.script("rot.py", BODY, setup=setup, init=f"log_facility=None, log_file={str(log)!r}")
    assert harness.run(script, "ok").out == b"ok\n"
    pid = server_pid(harness, script)
    sent = []
    for byte in range(1, 11):
        sent.append(provoke_warning(harness, script, byte))
        wait_until(lambda: sent[-1] in log.read_text(), 5, f"warning {byte} in the log")
    old = Path(str(log) + ".old")
    assert old.exists(), "rotated"
    longest = max(len(line) + 1 for line in _lines(old) + _lines(log))
    assert limit <= old.stat().st_size < limit + longest
    assert log.stat().st_size < limit + longest
    assert stat.S_IMODE(old.stat().st_mode) == stat.S_IMODE(log.stat().st_mode) == 0o600
    lines = _lines(old) + _lines(log)
    for line, message in zip(lines, sent[-len(lines) :]):
        check_line(line, "rot.py", pid, "warning", message)
    assert len(lines) < len(sent), "the first lines went with the previous FILE.old"


@pytest.fixture
def fake_syslog() -> Iterator[Tuple[str, socket.socket]]:
    """A datagram socket standing for /dev/log: (path, socket)."""
    directory = tempfile.mkdtemp(prefix="pfi-log-", dir="/tmp")
    path = os.path.join(directory, "dev-log")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        sock.bind(path)
        sock.settimeout(10)
        yield path, sock
    finally:
        sock.close()
        shutil.rmtree(directory, ignore_errors=True)


def _syslog_setup(path: str) -> str:
    return f"import prefork_interp._log\nprefork_interp._log.SYSLOG_PATH = {path!r}\n"


@pytest.mark.parametrize("how", ["log_facility=None", "no /dev/log"])
def test_run_dir_log_when_syslog_is_off_or_missing(our_harness, how):
    """No syslog (off, or nobody at /dev/log) and no log file: messages go
    to ``log`` in the run directory, mode 0600."""
    harness = our_harness
    if how == "log_facility=None":
        script = harness.script("quiet.py", BODY, init="log_facility=None")
    else:
        missing = str(harness.run_dir / "no-such-dev-log")
        script = harness.script("quiet.py", BODY, setup=_syslog_setup(missing))
    assert harness.run(script, "ok").out == b"ok\n"
    want = provoke_warning(harness, script, 9)
    log = harness.run_dir / "log"
    wait_until(lambda: _lines(log), 5, "the run directory's log")
    (line,) = _lines(log)
    check_line(line, "quiet.py", server_pid(harness, script), "warning", want)
    assert stat.S_IMODE(log.stat().st_mode) == 0o600


def test_syslog_when_it_works(our_harness, fake_syslog):
    """A logger at /dev/log (a stand-in here) gets the message, with the
    facility and level, and then the run directory's log is not written;
    a log file given gets it as well."""
    harness = our_harness
    path, sock = fake_syslog
    log = harness.dir / "also.log"
    script = harness.script("loud.py", BODY, setup=_syslog_setup(path), init=f"log_facility='daemon', log_file={str(log)!r}")
    assert harness.run(script, "ok").out == b"ok\n"
    want = provoke_warning(harness, script, 10)
    pid = server_pid(harness, script)
    datagram = sock.recv(65536).decode()
    m = re.match(r"^<(\d+)>(\w{3} [ \d]\d \d\d:\d\d:\d\d) prefork-interp\[(\d+)\]: (.*)$", datagram)
    assert m is not None, datagram
    assert int(m.group(1)) == syslog.LOG_DAEMON | syslog.LOG_WARNING
    assert int(m.group(3)) == pid
    assert m.group(4) == f"{script}: prefork: {want}"
    wait_until(lambda: _lines(log), 5, "the log file's line")
    check_line(_lines(log)[0], "loud.py", pid, "warning", want)
    assert not (harness.run_dir / "log").exists()


def test_prefork_interp_log_of_the_setup_run(our_harness):
    """``PREFORK_INTERP_LOG`` (relative: to the current directory) of the
    run that starts the server gives its log file; a later caller's does
    not move it; the ``log_file`` option wins over it."""
    harness = our_harness
    script = harness.script("env.py", BODY)
    assert harness.run(script, "ok", env={LOG_ENV_NAME: "first.log"}).out == b"ok\n"
    assert harness.run(script, "ok", env={LOG_ENV_NAME: "second.log"}).out == b"ok\n"
    want = provoke_warning(harness, script, 11)
    first = harness.dir / "first.log"
    wait_until(lambda: _lines(first), 5, "the line in PREFORK_INTERP_LOG's file")
    check_line(_lines(first)[0], "env.py", server_pid(harness, script), "warning", want)
    assert not (harness.dir / "second.log").exists()

    opt = harness.dir / "option.log"
    script2 = harness.script("opt.py", BODY, init=f"log_file={str(opt)!r}")
    assert harness.run(script2, "ok", env={LOG_ENV_NAME: "third.log"}).out == b"ok\n"
    want2 = provoke_warning(harness, script2, 12)
    wait_until(lambda: _lines(opt), 5, "the line in the log_file option's file")
    check_line(_lines(opt)[0], "opt.py", server_pid(harness, script2), "warning", want2)
    assert not (harness.dir / "third.log").exists()


def _record_tail(harness: Harness, script: Path) -> List[bytes]:
    """The record's lines from the server line on (once the server, which
    may still be starting, has written it)."""
    server_pid(harness, script)
    lines = server_files(harness, script)[1].read_bytes().split(b"\n")
    assert lines[-1] == b"", "the record ends with a newline"
    starts = [i for i, line in enumerate(lines) if line.startswith(b"server=")]
    assert len(starts) == 1
    return lines[starts[0] : -1]


def test_last_error_in_the_record(our_harness):
    """Each warning becomes the record's last error, ``error=SECS
    MESSAGE`` right after the server line, the file ending there (a shorter
    one after a longer one: truncated); ``--list --json`` still lists the
    server."""
    harness = our_harness
    script = harness.script("rec.py", BODY, init="log_facility=None")
    assert harness.run(script, "ok").out == b"ok\n"
    assert len(_record_tail(harness, script)) == 1, "no error yet"
    before = int(time.time())
    want = provoke_long_warning(harness, script)
    wait_until(lambda: len(_record_tail(harness, script)) == 2, 5, "the error line")
    server, error = _record_tail(harness, script)
    assert len(server) == 80
    secs, message = error.split(b" ", 1)
    assert secs.startswith(b"error=")
    assert before <= int(secs[len(b"error=") :]) <= time.time() + 1
    assert message == want.encode()
    shorter = provoke_warning(harness, script, 0x7F)
    assert len(shorter) < len(want)
    wait_until(lambda: _record_tail(harness, script)[1].endswith(b"0x7f, not 0"), 5, "the new error")
    assert _record_tail(harness, script)[1].split(b" ", 1)[1] == shorter.encode()
    assert len(_record_tail(harness, script)) == 2
    listed = subprocess.run([harness.client, "--list", "--json"], env=harness.env(), capture_output=True, timeout=30)
    assert listed.returncode == 0, listed.stderr
    (entry,) = json.loads(listed.stdout)
    assert (entry["pid"], entry["script"], entry["calls"]) == (server_pid(harness, script), str(script), 1)


# ---------------------------------------------------------------------------
# The pieces, without a server


def test_escape():
    assert escape(b"plain text: ok") == b"plain text: ok"
    assert escape(b"100% \x00\x1f\x7f\n") == b"100%25 %00%1F%7F%0A"
    assert escape("café".encode()) == b"caf%C3%A9"


def test_record_error_line(tmp_path):
    """In place after the server line, the file truncated after it; a
    record that cannot be written is closed, with one warning."""
    path = tmp_path / "mrecord"
    path.write_bytes(b"record=1\nscript=/x\n")
    fd = os.open(path, os.O_RDWR)
    messages: List[Tuple[str, str]] = []

    class Capture(Log):
        def _emit(self, severity: int, level: str, msg: str) -> None:
            messages.append((level, msg))

    record = ServerRecord(fd, in_place=False, in_place_running=False, log=Capture("x.py", None))
    try:
        record.error("a long first message, 100% bad\n", 1700000000.5)
        server = record.line()
        assert path.read_bytes() == b"record=1\nscript=/x\n" + server + b"error=1700000000 a long first message, 100%25 bad%0A\n"
        record.started()
        record.error("short", 1700000001)
        assert path.read_bytes() == b"record=1\nscript=/x\n" + record.line() + b"error=1700000001 short\n"
        record.error("x" * 5000, 1700000002)
        assert len(path.read_bytes().splitlines()[-1]) == len("error=1700000002 ") + 1024
    finally:
        record.close()
    assert messages == []


def test_format_line():
    when = time.mktime((2026, 11, 28, 23, 50, 1, 0, 0, -1))
    assert format_line(when, "tool.py", 4242, "warning", "two\nlines") == b"2026-11-28T23:50:01 tool.py[4242] warning: two lines\n"


def test_log_record_gets_errors_and_warnings_only(tmp_path):
    """Log passes errors and warnings to the record, not info or debug."""
    got: List[str] = []

    class FakeRecord:
        def error(self, message: str, when: Optional[float] = None) -> None:
            got.append(message)

    log = Log("x.py", None, str(tmp_path / "f.log"))
    log.to_stderr = False
    log.record = FakeRecord()  # type: ignore[assignment]
    log.info("i")
    log.debug("d")
    log.warning("w")
    log.error("e")
    assert got == ["w", "e"]
    assert [line.split(" ", 2)[2] for line in (tmp_path / "f.log").read_text().splitlines()] == [
        "info: i",
        "debug: d",
        "warning: w",
        "error: e",
    ]
