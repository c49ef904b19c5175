"""Executor exit without interpreter finalization, with a normal exit's effects.

Tearing down a big interpreter is slow, and slower still in a forked child:
freeing every object the server had loaded touches (and so copies) every
page it shares with the server.  A warm call of a script that imported
boto3 took 76-80 ms with a normal exit and 11 ms with this fast exit
(bench/python/latency.py, on a 2-core VM).

What must stay as in a normal exit: non-daemon threads joined, ``atexit``
handlers run, stdio flushed, and the same exit status.  Python gives no
hook between the ``atexit`` handlers and the teardown, and never tells Python
code the exit status it is about to use.  So:

* **Where to stop.**  After the ``atexit`` handlers, ``Py_FinalizeEx``
  flushes ``sys.stdout`` and ``sys.stderr`` by calling their ``flush``
  methods from C, with no Python frame on the stack, and only then tears
  down.  Our own ``atexit`` handler (:func:`_arm`; the order of ``atexit``
  handlers does not matter for it) puts a thin stand-in
  (:class:`_ExitTrigger`) in front of each stream; when the interpreter
  itself calls its ``flush``, we flush the real streams and ``os._exit``.
* **With what status.**  The interpreter decides the status from how the
  ``__main__`` module ended, and we observe each way:

  - it fell off its end: the main module's frame stopped at a return
    instruction (:func:`_main_frame_returned`): status 0;
  - an uncaught exception: the interpreter reports it through
    ``sys.excepthook``, raising the ``sys.excepthook`` audit event from the
    top level first (:func:`_audit`): status 1, or death by SIGINT for
    KeyboardInterrupt, as CPython does;
  - ``sys.exit(code)``: our ``sys.exit`` raises a subclass of SystemExit
    whose ``code`` property notices the interpreter's own, top-level read
    of it (:class:`_ExitClass`): the status follows from ``code`` exactly
    as CPython computes it.

  Anything else (``raise SystemExit(n)`` written out, a changed
  ``sys.exit``, streams replaced during ``atexit``) leaves the status
  unknown, and then we step aside and the interpreter finishes normally:
  slower, never different.

This relies on how CPython's exit works, checked on 3.9 to 3.13 (the test
suite compares each exit path with a direct run, and checks which paths
skip the teardown): ``atexit`` handlers run before the final stdio flush;
that flush, the ``sys.excepthook`` audit event and the read of
``SystemExit.code`` happen with no Python frame on the stack; a finished
frame keeps its ``f_lasti``.  Should a later version differ, the status
becomes unknown and the interpreter finishes normally, or a test fails.
"""

__all__ = ["install", "exit_status_of_code"]

# Only C-level modules: the executor installs this on the cold path too,
# in the setup process running the first call in place (protocol.md
# section 7), where each module imported adds to the call's time.
import atexit
import os
import sys

TYPE_CHECKING = False  # not typing's: importing typing costs a cold call
if TYPE_CHECKING:
    import signal as _signal  # the stubs of _signal, which has none of its own
    from types import FrameType
    from typing import Any, List, Optional, TextIO, Tuple
else:
    import _signal

#: Opcodes that return from a frame: RETURN_VALUE, and from 3.12 to 3.13
#: RETURN_CONST.  Found as the last instruction of the two kinds of code
#: that end by returning (a value, and None), as the ``opcode`` module,
#: which costs an import, would name them.  (Functions compiled with this
#: file, not ``compile()``: its first call builds the ``ast`` module's
#: types, about 1 ms, on the cold path.)
_RETURN_OPS = frozenset(f.__code__.co_code[-2] for f in (lambda x: x, lambda: None))

#: SystemExit's own ``code`` member descriptor, under our property.
_BASE_CODE: "Any" = SystemExit.__dict__["code"]

#: Exit status when flushing stdout at exit fails (Py_RunMain's 120).
_FLUSH_FAILED_STATUS = 120


def _at_top_level(depth: int) -> bool:
    """True if no Python frame is below the caller ``depth`` frames up.

    ``depth`` counts from our caller: 1 means "whoever called the function
    that calls us".  That is the case exactly when the interpreter's C code
    called that function outside any Python code: at exit.
    """
    try:
        sys._getframe(depth + 1)
    except ValueError:
        return True
    return False


class _Outcome:
    """How the main module ended, as far as we have seen it (per process)."""

    #: The ``__main__`` module's frame, until atexit time, when the main
    #: module has ended and :func:`_arm` notes whether it returned and lets
    #: go of it (holding it would keep the module's globals alive through
    #: the teardown, and their finalizers from running if we step aside).
    main_frame: "Optional[FrameType]" = None
    main_returned = False
    #: Set when an uncaught exception reached the top level.
    exception: "Optional[type]" = None
    #: Set to the SystemExit code the interpreter read at the top level.
    exit_code: "Any" = None
    exit_code_seen = False
    #: Old stdio objects the executor replaced; flushed at exit as their
    #: deallocation would have flushed them.
    replaced_streams: "List[TextIO]" = []
    finishing = False


_outcome = _Outcome()


class _ExitClass(SystemExit):
    """SystemExit raised by our ``sys.exit``; otherwise the same.

    Its ``code`` property records the value when the interpreter's exit
    handling reads it from the top level, which it does exactly once, when
    this exception ends the program.  It calls itself ``builtins.SystemExit``
    so that reprs and printed tracebacks read as usual (save for one more
    line, for our ``sys.exit``).
    """

    @property
    def code(self) -> "Any":
        value = _BASE_CODE.__get__(self)
        if _at_top_level(1):
            _outcome.exit_code = value
            _outcome.exit_code_seen = True
        return value

    @code.setter
    def code(self, value: "Any") -> None:
        _BASE_CODE.__set__(self, value)


_ExitClass.__name__ = _ExitClass.__qualname__ = "SystemExit"
_ExitClass.__module__ = "builtins"  # a printed traceback ends "SystemExit: 3"


def _sys_exit(status: "Any" = None, /) -> None:
    # As sys.exit: PyErr_SetObject turns None into no args and a tuple into
    # several; an exception instance becomes the single argument.
    if status is None:
        raise _ExitClass()
    if isinstance(status, tuple):
        raise _ExitClass(*status)
    raise _ExitClass(status)


# What functools.wraps(sys.exit) would do (functools costs an import).
for _name in ("__module__", "__name__", "__qualname__", "__doc__"):
    setattr(_sys_exit, _name, getattr(sys.exit, _name))
_sys_exit.__wrapped__ = sys.exit  # type: ignore[attr-defined]
del _name


def _audit(event: str, args: "Tuple[Any, ...]") -> None:
    """Audit hook: notice an uncaught exception reported from the top level."""
    if event == "sys.excepthook" and _at_top_level(1):
        _outcome.exception = args[1]


def exit_status_of_code(code: "Any") -> int:
    """The exit status CPython uses for ``SystemExit(code)``.

    None: 0; an int: its low 8 bits if it fits in a C long (it is cast to
    int, then the kernel keeps 8 bits), else 255; anything else (CPython
    prints it): 1.
    """
    if code is None:
        return 0
    if isinstance(code, int):
        if -(1 << 63) <= code < (1 << 63):
            return code & 0xFF
        return 0xFF
    return 1


def _main_frame_returned(frame: "Optional[FrameType]") -> bool:
    if frame is None:
        return False
    code = frame.f_code.co_code
    lasti = frame.f_lasti
    return 0 <= lasti < len(code) and code[lasti] in _RETURN_OPS


def _decided_status() -> "Optional[int]":
    """Exit status of this process, or None if we cannot be sure of it.

    A negative result means "die of SIGINT" (KeyboardInterrupt).
    """
    if _outcome.exception is not None:
        return -_signal.SIGINT if issubclass(_outcome.exception, KeyboardInterrupt) else 1
    if _outcome.exit_code_seen:
        return exit_status_of_code(_outcome.exit_code)
    if _outcome.main_returned:
        return 0
    return None


def _report_flush_failure(stream: "Any", exc: BaseException) -> None:
    """Report a failed flush of stdout as the interpreter does at exit:
    through sys.unraisablehook, with CPython's wording of the version."""
    if sys.version_info >= (3, 13):
        err_msg, obj = "Exception ignored on flushing sys.stdout", None
    else:
        err_msg, obj = None, stream
    hook = sys.unraisablehook
    if hook is not sys.__unraisablehook__:
        from types import SimpleNamespace

        hook(SimpleNamespace(exc_type=type(exc), exc_value=exc, exc_traceback=None, err_msg=err_msg, object=obj))
        return
    import traceback

    err = sys.stderr
    if err is None:
        return
    heading = f"{err_msg}:" if obj is None else f"Exception ignored in: {obj!r}"
    try:
        err.write(heading + "\n" + "".join(traceback.format_exception_only(type(exc), exc)))
        err.flush()
    except Exception:
        pass


def _finish(triggers: "List[Any]") -> None:
    """The interpreter is flushing stdio at exit: exit now if we can.

    Returns (and the interpreter finalizes normally) if the status is
    unknown.
    """
    if _outcome.finishing:
        return
    _outcome.finishing = True
    for trigger in triggers:
        name = trigger._name
        if getattr(sys, name) is trigger:
            setattr(sys, name, trigger._stream)
    status = _decided_status()
    if status is None:
        _outcome.replaced_streams = []  # theirs to flush when they are freed
        return
    # flush_std_files(): stdout failing is reported and makes the status 120;
    # stderr failing only changes the status.
    flush_failed = False
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is None or getattr(stream, "closed", True):
            continue
        try:
            stream.flush()
        except Exception as e:
            flush_failed = True
            if name == "stdout":
                _report_flush_failure(stream, e)
    for stream in _outcome.replaced_streams:
        try:
            stream.flush()
        except Exception:
            pass
    if status < 0:
        _signal.signal(_signal.SIGINT, _signal.SIG_DFL)
        _signal.pthread_sigmask(_signal.SIG_UNBLOCK, {_signal.SIGINT})
        os.kill(os.getpid(), _signal.SIGINT)
        os._exit(128 + _signal.SIGINT)
    os._exit(_FLUSH_FAILED_STATUS if flush_failed else status)


class _ExitTrigger:
    """Stands in for sys.stdout or sys.stderr while atexit handlers run.

    Everything is passed through to the real stream, except that a ``flush``
    called by the interpreter itself (no Python caller) ends the process.
    """

    def __init__(self, name: str, stream: "Any", triggers: "List[Any]") -> None:
        self.__dict__.update(_name=name, _stream=stream, _triggers=triggers)

    def __getattr__(self, name: str) -> "Any":
        return getattr(self._stream, name)

    def __setattr__(self, name: str, value: "Any") -> None:
        setattr(self._stream, name, value)

    def write(self, text: str) -> "Any":
        return self._stream.write(text)

    def flush(self) -> "Any":
        if _at_top_level(1):
            _finish(self._triggers)
        return self._stream.flush()


def _arm() -> None:
    """atexit handler: note how the main module ended, and put exit
    triggers in front of sys.stdout/sys.stderr."""
    _outcome.main_returned = _main_frame_returned(_outcome.main_frame)
    _outcome.main_frame = None
    triggers: "List[Any]" = []
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is not None and not isinstance(stream, _ExitTrigger):
            triggers.append(_ExitTrigger(name, stream, triggers))
    for trigger in triggers:
        setattr(sys, trigger._name, trigger)


def _find_main_frame() -> "Optional[FrameType]":
    """The outermost frame running the ``__main__`` module's code."""
    main = sys.modules.get("__main__")
    if main is None:
        return None
    main_globals = main.__dict__
    found = None
    frame: "Optional[FrameType]" = sys._getframe(1)
    while frame is not None:
        if frame.f_globals is main_globals and frame.f_code.co_name == "<module>":
            found = frame
        frame = frame.f_back
    return found


def rehearse() -> None:
    """What :func:`install` looks up, changing nothing (``_executor.warm_up``)."""
    _find_main_frame()
    _main_frame_returned(None)
    _decided_status()
    _at_top_level(1)
    _ExitTrigger("stdout", sys.stdout, [])


def install(replaced_streams: "List[TextIO]") -> None:
    """Arrange for this process (an executor) to exit without finalization.

    Call once, in the executor, before returning into the script.
    ``replaced_streams`` are stdio objects the executor has replaced: they
    are flushed at exit too.
    """
    if sys.flags.inspect:
        return  # python -i: the interpreter does not exit after the script
    _outcome.main_frame = _find_main_frame()
    _outcome.replaced_streams = list(replaced_streams)
    sys.exit = _sys_exit  # type: ignore[assignment]
    sys.addaudithook(_audit)
    atexit.register(_arm)
