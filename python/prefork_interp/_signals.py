"""Signals on the server side: the script's dispositions and mask, and what
each executor gets (protocol.md section 6.4 steps 6-7, section 6.6).

:class:`ScriptSignals` is taken once, when the script calls
``initialisation_complete()``, before the server changes anything (it
handles SIGCHLD, and its monitors block signals around ``fork``).  Each
executor then calls :meth:`ScriptSignals.apply_dispositions` with the
signals its caller ignores, and finally :meth:`ScriptSignals.set_mask`.

Step 6, for every signal but SIGKILL and SIGSTOP, with P the script's
disposition at ``initialisation_complete()``:

- a handler the script installed: kept;
- ``SIG_IGN``: kept (Python itself ignores SIGPIPE and SIGXFSZ at start-up);
- Python's own default (``SIG_DFL``; for SIGINT ``default_int_handler``):
  ``SIG_IGN`` if the caller ignores the signal, else that default again.

Python never leaves SIGINT at ``SIG_DFL`` by itself (it installs
``default_int_handler`` unless SIGINT was ignored at start-up), so a P of
``SIG_DFL`` for SIGINT is the script's own choice (the common
``signal.signal(signal.SIGINT, signal.SIG_DFL)`` to die quietly on ^C) and
is treated as a handler the script installed: kept, as a direct run of the
script would have it whatever its caller ignores.

A disposition set from C code rather than through the ``signal`` module
(``signal.getsignal`` says ``None``) cannot be re-installed from Python:
it is left as the fork inherited it, which is the script's.
"""

__all__ = ["ScriptSignals", "block_all", "restore_mask"]

# _signal, not signal: the setup process imports this module on the cold
# path (protocol.md section 7), and signal imports enum.  _signal gives
# plain ints where signal gives its enums (signal numbers, and SIG_DFL and
# SIG_IGN as dispositions), and the same handler objects otherwise.
TYPE_CHECKING = False  # not typing's: importing typing costs a cold call
if TYPE_CHECKING:
    import signal as _signal  # the stubs of _signal, which has none of its own
    from typing import AbstractSet, Any, Dict, FrozenSet, Iterable, Optional
else:
    import _signal

#: The signals whose disposition can be set: every valid one (glibc keeps
#: 32 and 33 for itself; valid_signals() leaves them out) but KILL and STOP.
_SETTABLE = frozenset(int(sig) for sig in _signal.valid_signals()) - {_signal.SIGKILL, _signal.SIGSTOP}

#: Every signal that can be blocked (KILL and STOP cannot, and the kernel
#: silently leaves them out).
_BLOCKABLE = frozenset(int(sig) for sig in _signal.valid_signals())


def _python_default(sig: int) -> "Any":
    """The disposition a direct run of Python starts with for a signal the
    caller left at its default."""
    return _signal.default_int_handler if sig == _signal.SIGINT else _signal.SIG_DFL


def _is_python_default(sig: int, handler: "Any") -> bool:
    if sig == _signal.SIGINT:
        # SIG_DFL for SIGINT is the script's choice, see the module docstring.
        return handler is _signal.default_int_handler
    return bool(handler == _signal.SIG_DFL)


def _same_disposition(a: "Any", b: "Any") -> bool:
    """Whether two dispositions are the same: ``SIG_DFL`` and ``SIG_IGN``
    are ints (plain, or signal's enums, whichever was installed), equal by
    value; handlers are the same object."""
    if isinstance(a, int) and isinstance(b, int):
        return a == b
    return a is b


def block_all() -> "FrozenSet[int]":
    """Block every signal; returns the mask before (for :func:`restore_mask`).

    A monitor forks its executor with everything blocked, so that no signal
    (a forwarded ``SIGG``, the caller's hang-up) acts on the executor before
    its dispositions are the caller's; it then arrives, pending, when the
    executor sets its final mask.
    """
    return frozenset(_signal.pthread_sigmask(_signal.SIG_BLOCK, _BLOCKABLE))


def restore_mask(mask: "AbstractSet[int]") -> None:
    """Set the signal mask to exactly ``mask`` (invalid numbers left out)."""
    _signal.pthread_sigmask(_signal.SIG_SETMASK, set(mask) & _BLOCKABLE)


class ScriptSignals:
    """The script's signal state at ``initialisation_complete()``."""

    __slots__ = ("handlers", "wakeup_fd", "mask")

    #: Disposition of every settable signal, as ``_signal.getsignal`` says.
    handlers: "Dict[int, Any]"
    #: The script's ``signal.set_wakeup_fd``, or -1.
    wakeup_fd: int
    #: The script's blocked signals.
    mask: "FrozenSet[int]"

    def __init__(self, handlers: "Dict[int, Any]", wakeup_fd: int, mask: "FrozenSet[int]") -> None:
        self.handlers = handlers
        self.wakeup_fd = wakeup_fd
        self.mask = mask

    @classmethod
    def capture(cls) -> "ScriptSignals":
        """Record the script's state; call before the server changes it."""
        handlers: "Dict[int, Any]" = {sig: _signal.getsignal(sig) for sig in sorted(_SETTABLE)}
        wakeup_fd = _signal.set_wakeup_fd(-1)
        if wakeup_fd != -1:
            _signal.set_wakeup_fd(wakeup_fd)
        mask = frozenset(_signal.pthread_sigmask(_signal.SIG_BLOCK, ()))
        return cls(handlers, wakeup_fd, mask)

    def disposition_for(self, sig: int, caller_ignores: "AbstractSet[int]") -> "Any":
        """What the executor's disposition of ``sig`` must be (step 6):
        ``None`` for "leave it as inherited" (set from C)."""
        script = self.handlers.get(sig)
        if script is None:
            return None
        if _is_python_default(sig, script):
            return _signal.SIG_IGN if sig in caller_ignores else _python_default(sig)
        return script  # the script's own handler, or SIG_IGN

    def apply_dispositions(self, caller_ignores: "Iterable[int]" = ()) -> None:
        """Step 6 in the executor, and the script's wake-up fd back.

        Only dispositions that differ from the inherited ones are set (a
        ``sigaction`` each).  ``caller_ignores``: the ``sigign`` attribute,
        empty without call1 (section 6.6).
        """
        ignored = frozenset(caller_ignores)
        for sig in self.handlers:
            wanted = self.disposition_for(sig, ignored)
            if wanted is not None and not _same_disposition(_signal.getsignal(sig), wanted):
                _signal.signal(sig, wanted)
        _signal.set_wakeup_fd(self.wakeup_fd)

    def rehearse(self) -> None:
        """What :meth:`apply_dispositions` and :meth:`set_mask` run, changing
        nothing (``_executor.warm_up``); the mask is set to what it is."""
        nothing: "FrozenSet[int]" = frozenset()
        for sig in self.handlers:
            wanted = self.disposition_for(sig, nothing)
            if wanted is not None:
                _same_disposition(_signal.getsignal(sig), wanted)
        restore_mask(frozenset(_signal.pthread_sigmask(_signal.SIG_BLOCK, ())))

    def set_mask(self, caller_mask: "Optional[AbstractSet[int]]") -> None:
        """Step 7: the caller's mask, or without one (v1) the script's."""
        restore_mask(self.mask if caller_mask is None else caller_mask)
