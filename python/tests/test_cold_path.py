"""The cold path: with our client, the first call of a new server runs in
the setup process, the script's own process (protocol.md section 7).  What
the library does there between ``initialisation_complete()`` and returning
into the script is all a cold call costs over a direct run, so:

- it imports nothing a direct run does not, but its own submodules and
  C-level modules (issue 11);
- it leaves the environment as it is, without ctypes, when it is already
  the caller's, and makes it the caller's when it is not, as a served
  call does.
"""

from __future__ import annotations

import importlib.machinery
import json
import os
import subprocess

from harness import PYTHON, RECORD_SNIPPET, wait_until

#: Modules the cold path may import beyond a direct run's, besides
#: prefork_interp's own: each built into the interpreter or a C extension.
C_LEVEL_ALLOWED = {
    "_locale",  # the executor: LC_CTYPE and its codeset
    "_signal",  # dispositions and mask, not signal (enum); loaded at start-up
    "_socket",  # the handshake on CALL (not socket: enum, selectors)
    "_struct",  # the protocol's binary fields (not struct, its wrapper)
    "_thread",  # the main-thread check, not threading; loaded at start-up
    "atexit",  # fast exit
    "fcntl",  # the caller's extra fds
    "resource",  # the caller's resource limits
    "select",  # waiting for the handshake
}

#: Prints, as JSON, each module loaded once initialisation_complete() has
#: returned, with where it came from (``origin``: "built-in", a .so, a .py),
#: and its session.
MODULES_SCRIPT = (
    """\
import sys
import prefork_interp
prefork_interp.initialisation_complete()
loaded = {name: getattr(getattr(module, "__spec__", None), "origin", None) for name, module in list(sys.modules.items())}
import json, os
"""
    + RECORD_SNIPPET
    + """\
print(json.dumps({"modules": loaded, "sid": os.getsid(0)}))
"""
)


def _c_level(origin: str | None) -> bool:
    """Built into the interpreter, or a C extension module."""
    return origin == "built-in" or (origin is not None and origin.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES)))


def test_cold_call_imports_only_c_level_modules(our_harness):
    """A cold call (through our client, in place) has loaded, once
    initialisation_complete() returns, the modules of a direct run of the
    same script, prefork_interp's own, and C-level modules from
    :data:`C_LEVEL_ALLOWED`.  With ``python -S``: site's imports (this
    machine's .pth files load typing, re, threading...) would hide ours.
    With PYTHONCOERCECLOCALE=0, whatever the locale: a coerced locale puts
    LC_CTYPE in the setup process's environment, which the call then takes
    out again, as any change to it, through ctypes."""
    harness = our_harness
    script = harness.dir / "modules.py"
    script.write_text(MODULES_SCRIPT)
    env = {"PYTHONCOERCECLOCALE": "0"}
    direct = harness.call_argv([PYTHON, "-S", str(script)], harness.env({**env, "PFI_TEST_RECORD": None}), None, None, None, 30)
    assert direct.returncode == 0, direct.text()
    cold = harness.run(script, interp=("-S",), env=env)
    assert cold.returncode == 0, cold.text()
    got = json.loads(cold.out)
    assert got["sid"] == os.getsid(0), "the cold call should have run in place, in our session"
    extra = set(got["modules"]) - set(json.loads(direct.out)["modules"])
    own = {name for name in extra if name.startswith("prefork_interp.")}
    assert own, "the cold path imports prefork_interp's own modules: is the comparison right?"
    others = extra - own
    assert others <= C_LEVEL_ALLOWED, f"the cold path imports {sorted(others - C_LEVEL_ALLOWED)}"
    assert [name for name in others if not _c_level(got["modules"][name])] == []
    # The server works, and its executors have all they need.
    warm = harness.run(script, interp=("-S",), env=env)
    assert warm.returncode == 0, warm.text()
    assert json.loads(warm.out)["sid"] != os.getsid(0), "the second call should have been served"


#: Reports os.environ and the C environment (``environ``, in order).
ENV_BODY = """\
import ctypes, json
def c_environ():
    environ = ctypes.POINTER(ctypes.c_char_p).in_dll(ctypes.CDLL(None), "environ")
    entries, i = [], 0
    while environ[i] is not None:
        entries.append(environ[i].hex())
        i += 1
    return entries
print(json.dumps({
    "environ": {os.fsencode(k).hex(): os.fsencode(v).hex() for k, v in os.environ.items()},
    "c_environ": c_environ(),
    "sid": os.getsid(0),
}))
"""

EXT = "PREFORK_INTERP_EXT_TEST_ANNOUNCEMENT"


def _env_report(result):
    """os.environ, the C environment and the session of a call, the
    harness's PFI_TEST_RECORD (given to calls only) left out."""
    assert result.returncode == 0, result.text()
    report = json.loads(result.out)
    environ = {bytes.fromhex(k): bytes.fromhex(v) for k, v in report["environ"].items()}
    environ.pop(b"PFI_TEST_RECORD", None)
    c_environ = [bytes.fromhex(e) for e in report["c_environ"]]
    c_environ = [e for e in c_environ if not e.startswith(b"PFI_TEST_RECORD=")]
    return environ, c_environ, report["sid"]


def _without(report, name):
    """``report`` without the variable ``name``."""
    environ, c_environ, sid = report
    key = name.encode()
    return {k: v for k, v in environ.items() if k != key}, [e for e in c_environ if not e.startswith(key + b"=")], sid


def test_cold_call_environment_as_in_a_direct_run(our_harness):
    """The cold call's os.environ and C environment are a direct run's:
    the setup process's own, left alone (its C environment is then exactly
    what our client exec'd it with, PREFORK_INTERP removed), or, when that
    is not the caller's, made the caller's."""
    harness = our_harness
    script = harness.script("env.py", ENV_BODY)
    cases = [
        {},
        {"FOO": "bar=baz", "EMPTY": "", "NONUTF8": "\udcff"},
        # PEP 538: the interpreter put LC_CTYPE in the setup process's
        # environment; the caller's has none, and a direct run sets it again.
        {"LANG": "C", "LC_ALL": None, "LC_CTYPE": None},
        # A reserved variable of the caller's, which the setup process has
        # too: no call gets it.
        {EXT: "1"},
    ]
    for overrides in cases:
        harness.kill_server(script)
        cold = _env_report(harness.run(script, env=overrides))
        assert cold[2] == os.getsid(0), f"{overrides}: the cold call should have run in place"
        warm = _env_report(harness.run(script, env=overrides))
        assert warm[2] != os.getsid(0)
        direct = _without(_env_report(harness.direct(script, env=overrides)), EXT)
        assert cold[:2] == direct[:2], overrides
        assert warm[:2] == direct[:2], overrides


def test_cold_call_does_not_keep_the_scripts_environment_changes(our_harness):
    """What the script put in os.environ before initialisation_complete()
    is gone in every call, the cold one included, as the caller never had
    it."""
    harness = our_harness
    script = harness.script("env.py", ENV_BODY, setup="os.environ['SET_BY_SCRIPT'] = '1'\n")
    direct = _without(_env_report(harness.direct(script)), "SET_BY_SCRIPT")
    for call in ("cold", "warm"):
        got = _env_report(harness.run(script))
        assert (got[2] == os.getsid(0)) is (call == "cold")
        assert got[:2] == direct[:2], call


def test_the_new_servers_messages_never_reach_the_first_callers_stderr(our_harness):
    """The first call runs in place with the caller's stderr; the server,
    forked meanwhile, must neither write there nor hold it (design.md
    section 2): its start-up messages go to the log.  Here the server
    cannot open its record (the script removed it first), which it
    reports; the call's stderr stays empty, even once the server has
    started."""
    harness = our_harness
    script = harness.script(
        "no_record.py",
        'print("ran")\n',
        setup="""\
        from prefork_interp._protocol import parse_setup_env
        _raw = os.environb.get(b"PREFORK_INTERP")
        if _raw is not None and parse_setup_env(_raw).record_path:
            os.unlink(parse_setup_env(_raw).record_path)
        """,
    )
    log = harness.run_dir / "log"
    cold = harness.run(script)
    assert (cold.returncode, cold.out) == (0, b"ran\n"), cold.err
    wait_until(lambda: log.exists() and b"opening the server record" in log.read_bytes(), 10, "the warning in the log")
    assert harness.run(script).returncode == 0, "and the server serves"
    assert cold.err == b""


def test_a_caller_during_the_first_call_wakes_the_waiting_server(our_harness):
    """The server forked beside a first call run in place waits before it
    starts (``_setup.START_DELAY``), so as not to take the CPUs from that
    call, but a caller that connects meanwhile starts it at once.  Here the
    wait is a minute and the first call blocks on its stdin until the
    second call has been served."""
    harness = our_harness
    script = harness.script(
        "delayed.py",
        """\
        if sys.argv[1:] == ["first"]:
            sys.stdin.buffer.read()
        print("served", sys.argv[1])
        """,
        setup="""\
        import prefork_interp._setup
        prefork_interp._setup.START_DELAY = 60
        """,
    )
    first = harness.popen(script, "first", stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    # The first call runs in place once it has recorded itself (after
    # looking a few seconds for a server process, which has not started).
    wait_until(lambda: harness.executors(), 30, "the first call to run")
    second = harness.run(script, "second", timeout=30)
    assert (second.returncode, second.out) == (0, b"served second\n"), second.err
    assert first.poll() is None, "the first call is still running"
    out, err = first.communicate(b"", timeout=30)
    assert (first.returncode, out) == (0, b"served first\n"), err
