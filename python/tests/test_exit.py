"""Every way a call can end: same status, stdout and stderr as a direct run.

Each exit path runs 20 times through each client and is compared byte for
byte with the same script run directly by the interpreter.  Stdio is left
buffered (PYTHONUNBUFFERED removed) so that unflushed output at exit is
part of what is compared.
"""

from __future__ import annotations

import os
import signal

import pytest

REPEAT = 20

SETUP = """\
import atexit, threading, time

def _bye():
    sys.stdout.write("atexit-out")
    sys.stderr.write("atexit-err\\n")

atexit.register(_bye)

def main_exit():
    sys.exit(5)

def main_raise():
    raise SystemExit(6)

class Exit7:  # a stable repr: it is printed when the callback fails
    def __call__(self):
        raise SystemExit(7)

    def __repr__(self):
        return "<exit 7>"
"""

BODY = """\
mode = sys.argv[1]
print("out-" + mode, end="")
sys.stderr.write("err-no-newline ")
if mode == "end":
    pass
elif mode == "exit3":
    sys.exit(3)
elif mode == "exit_none":
    sys.exit()
elif mode == "exit_true":
    sys.exit(True)
elif mode == "exit_256":
    sys.exit(256)
elif mode == "exit_neg":
    sys.exit(-1)
elif mode == "exit_long":
    sys.exit(2**40 + 7)
elif mode == "exit_huge":
    sys.exit(2**70)
elif mode == "exit_msg":
    sys.exit("fatal: a message")
elif mode == "exit_tuple":
    sys.exit((1, 2))
elif mode == "exit_in_function":
    main_exit()
elif mode == "exit_caught":
    try:
        sys.exit(9)
    except SystemExit as e:
        print(" caught", e.code, repr(e), end="")
elif mode == "raise4":
    raise SystemExit(4)
elif mode == "raise_msg":
    raise SystemExit("raised message")
elif mode == "raise_in_function":
    main_raise()
elif mode == "exception":
    raise ValueError("boom")
elif mode == "keyboard_interrupt":
    raise KeyboardInterrupt
elif mode == "thread":
    def late():
        time.sleep(0.2)
        print(" from-thread", end="")
    threading.Thread(target=late).start()
elif mode == "atexit_exit":
    atexit.register(Exit7())
elif mode == "atexit_sys_exit":
    atexit.register(sys.exit, 7)
elif mode == "sigterm":
    os.kill(os.getpid(), signal.SIGTERM)
elif mode == "sigkill":
    os.kill(os.getpid(), signal.SIGKILL)
elif mode == "sighup":
    os.kill(os.getpid(), signal.SIGHUP)
elif mode == "exec":
    os.execv("/bin/sh", ["sh", "-c", "echo from-sh; echo to-stderr >&2; exit 7"])
elif mode == "os_exit":
    os._exit(11)
"""

EXIT_MODES = [
    "end",
    "exit3",
    "exit_none",
    "exit_true",
    "exit_256",
    "exit_neg",
    "exit_long",
    "exit_huge",
    "exit_msg",
    "exit_tuple",
    "exit_in_function",
    "exit_caught",
    "raise4",
    "raise_msg",
    "raise_in_function",
    "exception",
    "keyboard_interrupt",
    "thread",
    "atexit_exit",
]

SIGNAL_MODES = {"sigterm": -signal.SIGTERM, "sigkill": -signal.SIGKILL, "sighup": -signal.SIGHUP}

BUFFERED = {"PYTHONUNBUFFERED": None}


def _script(harness, init=""):
    return harness.script("exits.py", BODY, setup="import signal\n" + SETUP, init=init)


def _check_same(harness, script, mode, repeat):
    want = harness.direct(script, mode, env=BUFFERED)
    for i in range(repeat):
        got = harness.run(script, mode, env=BUFFERED)
        assert (got.returncode, got.out, got.err) == (want.returncode, want.out, want.err), (
            f"{mode}, call {i + 1}: through prefork-interp\n{got.text()}\n\ndirect\n{want.text()}"
        )
    return want


def test_exit_paths_match_direct_run(harness):
    script = _script(harness)
    harness.run(script, "end", env=BUFFERED)  # start the server
    statuses = {}
    for mode in EXIT_MODES:
        statuses[mode] = _check_same(harness, script, mode, REPEAT).returncode
    # The reference points, so a wrong direct run cannot pass unnoticed.
    assert statuses["end"] == 0
    assert statuses["exit3"] == 3
    assert statuses["exit_256"] == 0
    assert statuses["exit_neg"] == 255
    assert statuses["exit_long"] == 7
    assert statuses["exit_huge"] == 255
    assert statuses["exit_msg"] == 1
    assert statuses["raise4"] == 4
    assert statuses["exception"] == 1
    assert statuses["keyboard_interrupt"] == -signal.SIGINT
    assert len(harness.sessions()) == 1, "every call should have used the one server"


def test_death_by_signal(harness):
    script = _script(harness)
    for mode, status in SIGNAL_MODES.items():
        want = _check_same(harness, script, mode, 3)
        assert want.returncode == status


def test_sys_exit_in_an_atexit_handler_does_not_change_the_status(harness):
    """The interpreter ignores it (reporting it, with our sys.exit's extra
    traceback line), and so must the fast exit."""
    script = _script(harness)
    want = harness.direct(script, "atexit_sys_exit", env=BUFFERED)
    assert want.returncode == 0
    for _ in range(3):
        got = harness.run(script, "atexit_sys_exit", env=BUFFERED)
        assert (got.returncode, got.out) == (want.returncode, want.out), got.text()
        # Same report (from 3.11 on; silence before), but for the traceback
        # line of our sys.exit.
        assert got.err.splitlines()[-2:] == want.err.splitlines()[-2:], got.text()


def test_exec_from_the_executor_keeps_running_and_reports_its_status(harness):
    script = _script(harness)
    for _ in range(5):
        got = harness.run(script, "exec", env=BUFFERED)
        assert got.returncode == 7, got.text()
        assert got.out == b"from-sh\n"
        assert got.err == b"to-stderr\n"


def test_os_exit(harness):
    script = _script(harness)
    want = _check_same(harness, script, "os_exit", 3)
    assert want.returncode == 11


def test_exit_paths_without_fast_exit(harness):
    script = _script(harness, init="fast_exit=False")
    for mode in ("end", "exit3", "exit_msg", "raise4", "exception", "keyboard_interrupt", "thread"):
        _check_same(harness, script, mode, 3)


FINALIZER_BODY = """\
class Noisy:
    def __del__(self):
        os.write(1, b"finalized")

keep = Noisy()
how = sys.argv[1]
if how == "sys.exit":
    sys.exit(4)
elif how == "exception":
    raise ValueError("boom")
elif how == "keyboard_interrupt":
    raise KeyboardInterrupt
elif how == "raise":
    raise SystemExit(4)
"""

# How each way out ends with fast_exit on; "raise SystemExit(n)" written out
# cannot be observed, so the interpreter finalizes as usual (README).
FAST_EXIT_PATHS = {"end": True, "sys.exit": True, "exception": True, "keyboard_interrupt": True, "raise": False}


@pytest.mark.parametrize("fast_exit", [True, False])
def test_fast_exit_skips_finalization(harness, fast_exit):
    """Proof that the fast exit is taken: objects alive at exit are not
    finalized (as with os._exit), while atexit handlers still run.  With
    fast_exit=False the interpreter tears down and __del__ runs."""
    script = harness.script(
        "noisy.py", FINALIZER_BODY, setup="import atexit\natexit.register(os.write, 1, b'atexit ')\n",
        init=f"fast_exit={fast_exit}",
    )
    for how, fast in FAST_EXIT_PATHS.items():
        got = harness.run(script, how, env=BUFFERED)
        want = harness.direct(script, how, env=BUFFERED)
        assert got.returncode == want.returncode, got.text()
        assert want.out == b"atexit finalized"
        assert got.out == (b"atexit " if fast_exit and fast else b"atexit finalized"), f"{how}: {got.text()}"


BROKEN_PIPE_BODY = """\
sys.stdout.write("x" * int(sys.argv[1]))
"""


@pytest.mark.parametrize("size, status", [(100, 120), (200000, 1)])
def test_stdout_to_a_closed_pipe(harness, size, status):
    """stdout is a pipe nobody reads.  A small write fails only when stdout
    is flushed at exit (reported as ignored, status 120); a big one fails
    at once (traceback, status 1).  Both exactly as in a direct run."""
    script = harness.script("pipe.py", BROKEN_PIPE_BODY)
    results = []
    for call in (harness.direct, harness.run, harness.run):
        r, w = os.pipe()
        os.close(r)
        try:
            got = call(script, str(size), env=BUFFERED, stdout=w)
        finally:
            os.close(w)
        results.append((got.returncode, got.err))
    assert results[0][0] == status, results[0]
    assert b"BrokenPipeError" in results[0][1]
    assert results[1] == results[0]
    assert results[2] == results[0]
