"""The executor's rules for the caller's attributes, in-process or in a
forked child: signal dispositions (protocol.md section 6.4 step 6),
resource limits and nice value a server without privilege cannot match."""

from __future__ import annotations

import json
import os
import resource
import signal
from typing import Callable

import pytest

from prefork_interp._executor import _set_nice, _set_rlimit
from prefork_interp._protocol import RLIM_INFINITY
from prefork_interp._signals import ScriptSignals


def _handler(signum, frame):
    pass


def _snapshot(**handlers) -> ScriptSignals:
    base = {int(s): signal.SIG_DFL for s in signal.valid_signals() if s not in (signal.SIGKILL, signal.SIGSTOP)}
    base[signal.SIGINT] = signal.default_int_handler
    base[signal.SIGPIPE] = signal.SIG_IGN
    base.update({getattr(signal, name): h for name, h in handlers.items()})
    return ScriptSignals(base, -1, frozenset())


IGNORED_BY_CALLER = frozenset({signal.SIGINT, signal.SIGHUP, signal.SIGPIPE, signal.SIGTERM, signal.SIGUSR1})


@pytest.mark.parametrize(
    "script, caller_ignores, want",
    [
        # Python's defaults: the caller's ignored signals win.
        (signal.default_int_handler, frozenset(), signal.default_int_handler),
        (signal.default_int_handler, IGNORED_BY_CALLER, signal.SIG_IGN),
        # A handler the script installed: kept.
        (_handler, frozenset(), _handler),
        (_handler, IGNORED_BY_CALLER, _handler),
        # SIG_IGN: the script's choice, kept.
        (signal.SIG_IGN, frozenset(), signal.SIG_IGN),
        # SIG_DFL for SIGINT: Python never leaves it so, the script chose it.
        (signal.SIG_DFL, frozenset(), signal.SIG_DFL),
        (signal.SIG_DFL, IGNORED_BY_CALLER, signal.SIG_DFL),
        # Set from C: left as inherited.
        (None, IGNORED_BY_CALLER, None),
    ],
)
def test_sigint_rules(script, caller_ignores, want):
    assert _snapshot(SIGINT=script).disposition_for(signal.SIGINT, caller_ignores) == want


@pytest.mark.parametrize(
    "script, caller_ignores, want",
    [
        (signal.SIG_DFL, frozenset(), signal.SIG_DFL),
        (signal.SIG_DFL, IGNORED_BY_CALLER, signal.SIG_IGN),
        (signal.SIG_IGN, frozenset(), signal.SIG_IGN),
        (_handler, IGNORED_BY_CALLER, _handler),
        (None, frozenset(), None),
    ],
)
def test_other_signal_rules(script, caller_ignores, want):
    assert _snapshot(SIGTERM=script).disposition_for(signal.SIGTERM, caller_ignores) == want


def test_sigpipe_ignored_by_python_stays_ignored():
    assert _snapshot().disposition_for(signal.SIGPIPE, frozenset()) == signal.SIG_IGN


def test_snapshot_covers_every_settable_signal():
    snap = ScriptSignals.capture()
    want = {int(s) for s in signal.valid_signals()} - {signal.SIGKILL, signal.SIGSTOP}
    assert set(snap.handlers) == want
    assert snap.handlers[signal.SIGINT] is signal.getsignal(signal.SIGINT)


def _in_child_as_nobody(prepare: Callable[[], None], check: Callable[[], object]) -> object:
    """Run ``prepare`` as root, then ``check`` as user nobody (no
    privilege), in a forked child; return what ``check`` returned."""
    if os.geteuid() != 0:
        pytest.skip("needs root to drop privilege in a child")
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            prepare()
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            os.write(w, json.dumps(check()).encode())
            os._exit(0)
        except BaseException as e:
            os.write(w, json.dumps(f"error: {e!r}").encode())
            os._exit(1)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        data = f.read()
    _, status = os.waitpid(pid, 0)
    assert status == 0, data
    return json.loads(data)


def test_rlimit_above_our_hard_limit_without_privilege():
    """The kernel refuses a hard limit above ours: our hard limit, and the
    lower of the caller's soft limit and that."""
    nofile = resource.RLIMIT_NOFILE

    def prepare():
        resource.setrlimit(nofile, (500, 1000))

    def check():
        results = []
        _set_rlimit(nofile, 4000, 8000)
        results.append(resource.getrlimit(nofile))
        _set_rlimit(nofile, 300, RLIM_INFINITY)
        results.append(resource.getrlimit(nofile))
        _set_rlimit(nofile, 200, 900)  # lowering the hard limit needs no privilege
        results.append(resource.getrlimit(nofile))
        _set_rlimit(99, 1, 1)  # not a resource: left alone, no error
        return results

    assert _in_child_as_nobody(prepare, check) == [[1000, 1000], [300, 1000], [200, 900]]


def test_nice_lower_than_ours_without_privilege():
    def prepare():
        os.setpriority(os.PRIO_PROCESS, 0, 5)

    def check():
        _set_nice(2)  # lower: needs privilege, stays 5
        first = os.getpriority(os.PRIO_PROCESS, 0)
        _set_nice(9)
        return [first, os.getpriority(os.PRIO_PROCESS, 0)]

    assert _in_child_as_nobody(prepare, check) == [5, 9]
