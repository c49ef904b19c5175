"""Without prefork-interp: the script runs standalone; options and a
wrongly set-up PREFORK_INTERP are reported clearly."""

from __future__ import annotations

import os
import socket
import subprocess
import textwrap

import pytest
from harness import PACKAGE_ROOT, PYTHON

import prefork_interp


def _run(tmp_path, code, env_extra=None, pass_fds=()):
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(code))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFORK_INTERP")}
    env["PYTHONPATH"] = str(PACKAGE_ROOT)
    env.update(env_extra or {})
    return subprocess.run([PYTHON, str(script), "a", "b"], capture_output=True, env=env, cwd=tmp_path, timeout=30, pass_fds=pass_fds)


def test_standalone_returns_at_once(tmp_path):
    p = _run(
        tmp_path,
        """\
        import os, sys
        pid = os.getpid()
        import prefork_interp
        prefork_interp.autoreload_also_check("some/file")
        prefork_interp.initialisation_complete(max_servers=1, idle_timeout=None)
        prefork_interp.initialisation_complete()
        print(os.getpid() == pid, sys.argv[1:], sys.exit is sys.__dict__["exit"])
        sys.exit(3)
        """,
    )
    assert p.returncode == 3, p.stderr
    assert p.stdout == b"True ['a', 'b'] True\n"
    assert p.stderr == b""


@pytest.mark.parametrize(
    "options, error, message",
    [
        ({"max_servers": "4"}, TypeError, "max_servers must be an int"),
        ({"request_timeout": -1}, ValueError, "request_timeout must be 0"),
        ({"request_timeout": None}, TypeError, "request_timeout must be a number"),
        ({"log_file": 3}, TypeError, "log_file must be a path"),
        ({"log_file": ""}, ValueError, "log_file must not be empty"),
        ({"idle_timeout": "1"}, TypeError, "idle_timeout must be"),
        ({"log_facility": "nonsense"}, ValueError, "not a syslog facility"),
        ({"log_facility": 1.5}, TypeError, "log_facility must be"),
        ({"autoreload_extra": "one/path"}, TypeError, "collection of paths"),
        ({"max_errors": None}, TypeError, "max_errors must be an int"),
        ({"max_server": 4}, TypeError, "max_server"),
    ],
)
def test_bad_options_fail_even_standalone(monkeypatch, options, error, message):
    monkeypatch.delenv("PREFORK_INTERP", raising=False)
    with pytest.raises(error, match=message):
        prefork_interp.initialisation_complete(**options)


def test_default_concurrency_comes_from_the_machine():
    """Not the reference's fixed 4: 8 calls per CPU this process may run on
    (its affinity), so parallel callers are not throttled below what the
    machine can run."""
    from prefork_interp._options import make_options

    cpus = len(os.sched_getaffinity(0))
    opts = make_options(None, None, True, (), None, 100, True)
    assert opts.max_servers == 8 * cpus >= 8
    assert make_options(3, None, True, (), None, 100, True).max_servers == 3


@pytest.mark.parametrize("facility", [None, "", "daemon", "LOG_LOCAL3", 8])
def test_log_facility_forms(monkeypatch, facility):
    monkeypatch.delenv("PREFORK_INTERP", raising=False)
    prefork_interp.initialisation_complete(log_facility=facility)


INIT = """\
import prefork_interp
prefork_interp.initialisation_complete()
print("should not run")
"""


@pytest.mark.parametrize(
    "value, message",
    [
        ("v2,1.000000000 3,4,5,6", "PREFORK_INTERP: protocol b'v2' is not v1"),
        ("v1,1.000000000 3,4,5", "PREFORK_INTERP: expected 4 fds"),
        ("v1,1.000000000 97,98,99,100", "PREFORK_INTERP: LISTEN fd 97: Bad file descriptor"),
    ],
)
def test_wrong_prefork_interp_variable(tmp_path, value, message):
    p = _run(tmp_path, INIT, {"PREFORK_INTERP": value})
    assert p.returncode == 1
    assert p.stdout == b""
    last = p.stderr.decode().strip().splitlines()[-1]
    assert last.startswith(f"prefork_interp.PreforkError: {message}"), p.stderr


def test_listen_fd_that_is_not_listening(tmp_path):
    a, b = socket.socketpair()
    with a, b:
        fd_a, fd_b = a.fileno(), b.fileno()
        value = f"v1,1.000000000 {fd_a},{fd_b},{fd_a},{fd_b}"
        p = _run(tmp_path, INIT, {"PREFORK_INTERP": value}, pass_fds=(fd_a, fd_b))
    assert p.returncode == 1
    assert p.stderr.decode().strip().endswith(f"PREFORK_INTERP: LISTEN fd {fd_a} is not listening")
