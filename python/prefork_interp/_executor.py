"""Turning a fresh fork of a monitor into the caller's own process.

The executor is the process that returns from ``initialisation_complete()``
into the script.  Before it does, it takes on what a direct run of the script
by the caller would have had: fds 0-2, environment, ``sys.argv``, the
standard streams as the interpreter would have made them for those fds and
that environment, and (protocol.md section 6.4; with a v1 client, section
6.6) in this order: its own process group, the caller's extra fds at their
numbers, umask, resource limits, nice value, signal dispositions (the
script's, with the caller's ignored signals, ``_signals``) and, last, the
caller's signal mask.

With extension pty1 (protocol.md section 9.3) the executor is the child of
the call's session leader, whose controlling terminal is the pty the client
made; its process group, the pty's foreground group, is made before it
gets here (``_session``); the pty's slave replaces some of fds 0-2.
"""

__all__ = ["ScriptState", "become_executor", "prepare_in_place", "stdio_settings", "warm_up"]

# Only C-level modules: the setup process runs the first call in place
# (protocol.md section 7) through this module, and each module imported
# adds to that call's time.
import codecs
import fcntl
import io
import os
import resource
import sys

from . import _fastexit
from ._protocol import RLIM_INFINITY, Attributes, env_mapping
from ._proc import close_quietly, rehearse_c_environment, set_c_environment, set_cmdline
from ._signals import ScriptSignals, block_all

TYPE_CHECKING = False  # not typing's: importing typing costs a cold call
if TYPE_CHECKING:
    import locale as _locale  # its stubs: _locale's have no Error
    from typing import Any, Dict, List, Optional, Sequence, TextIO, Tuple

    from ._intake import Call
    from ._log import Log
else:
    import _locale  # what locale.setlocale calls for a str locale name

#: Locales the interpreter coerces a "C" LC_CTYPE to (PEP 538), in order;
#: stdio in these uses surrogateescape.
_COERCION_TARGETS = ("C.UTF-8", "C.utf8", "UTF-8")

#: Environment variables that decide LC_CTYPE at start-up.
_LOCALE_VARS = ("LC_ALL", "LC_CTYPE", "LANG", "PYTHONCOERCECLOCALE")

_STD_STREAMS = (("stdin", 0), ("stdout", 1), ("stderr", 2))

# On Python 3.9 (no sys.orig_argv), `python -u` shows only in how the
# start-up streams were made: unbuffered, with PYTHONUNBUFFERED unset.
_STARTUP_CMDLINE_UNBUFFERED = isinstance(getattr(sys.__stdout__, "buffer", None), io.RawIOBase) and bool(
    sys.flags.ignore_environment or not os.environ.get("PYTHONUNBUFFERED")
)


class ScriptState:
    """What the server changes in the process and the executor restores."""

    __slots__ = ("signals", "locale_env")

    signals: ScriptSignals
    locale_env: "Tuple[Optional[str], ...]"

    def __init__(self, signals: ScriptSignals, locale_env: "Tuple[Optional[str], ...]") -> None:
        self.signals = signals
        self.locale_env = locale_env

    @classmethod
    def capture(cls) -> "ScriptState":
        """Record the script's state; call before the server changes it."""
        return cls(ScriptSignals.capture(), _locale_env())


def _locale_env() -> "Tuple[Optional[str], ...]":
    return tuple(os.environ.get(name) for name in _LOCALE_VARS)


# ---------------------------------------------------------------------------
# The standard streams, as the interpreter makes them at start-up


def _env_option(name: str) -> "Optional[str]":
    """A PYTHON* variable as the interpreter reads it: empty is unset, and
    ``-E``/``-I`` ignore them all."""
    if sys.flags.ignore_environment:
        return None
    return os.environ.get(name) or None


def _cmdline_unbuffered() -> bool:
    """Whether the interpreter's own command line has ``-u``."""
    orig_argv = getattr(sys, "orig_argv", None)
    if orig_argv is None:  # Python 3.9
        return _STARTUP_CMDLINE_UNBUFFERED
    args = iter(orig_argv[1:])
    for arg in args:
        if arg in ("-", "--") or not arg.startswith("-"):
            break
        if arg.startswith("--"):
            if arg == "--check-hash-based-pycs":
                next(args, None)
            continue
        for i, letter in enumerate(arg[1:]):
            if letter == "u":
                return True
            if letter in "cm":
                return False
            if letter in "WX":  # the rest of the word, or the next, is its value
                if i == len(arg) - 2:
                    next(args, None)
                break
    return False


def _set_ctype_locale() -> "Tuple[str, str]":
    """Set LC_CTYPE from the environment as the interpreter does at start-up.

    Returns the locale before and after C locale coercion (PEP 538: a "C"
    LC_CTYPE becomes C.UTF-8, and LC_CTYPE is exported, unless LC_ALL is
    set or PYTHONCOERCECLOCALE=0).
    """
    try:
        before = _locale.setlocale(_locale.LC_CTYPE, "")
    except _locale.Error:
        before = _locale.setlocale(_locale.LC_CTYPE, "C")
    if before != "C" or os.environ.get("LC_ALL") or _env_option("PYTHONCOERCECLOCALE") == "0":
        return before, before
    for target in _COERCION_TARGETS:
        try:
            after = _locale.setlocale(_locale.LC_CTYPE, target)
        except _locale.Error:
            continue
        os.environ["LC_CTYPE"] = target
        return before, after
    return before, before


def _utf8_mode(ctype_before_coercion: str) -> bool:
    """UTF-8 mode as the interpreter would choose it (PEP 540)."""
    xoption = sys._xoptions.get("utf8")
    if xoption is not None:
        return xoption is True or xoption == "1"
    env = _env_option("PYTHONUTF8")
    if env in ("0", "1"):
        return env == "1"
    if env is not None:  # the interpreter refuses to start; keep ours
        return bool(sys.flags.utf8_mode)
    return ctype_before_coercion in ("C", "POSIX")


def stdio_settings(locale_changed: bool) -> "Tuple[str, str, bool]":
    """Encoding, errors handler (stdin, stdout) and "buffered" for stdio.

    Follows CPython's start-up (``config_init_stdio_encoding``) using the
    current ``os.environ``.  ``locale_changed``: the locale variables differ
    from the server's, so LC_CTYPE is set afresh (as at start-up).
    Raises LookupError for an unknown PYTHONIOENCODING.
    """
    if locale_changed:
        before, after = _set_ctype_locale()
    else:
        before = after = _locale.setlocale(_locale.LC_CTYPE)
    utf8 = _utf8_mode(before)
    encoding: "Optional[str]" = None
    errors: "Optional[str]" = None
    ioencoding = _env_option("PYTHONIOENCODING")
    if ioencoding:
        enc_part, _, err_part = ioencoding.partition(":")
        if enc_part:
            encoding, errors = enc_part, err_part or "strict"
        elif err_part:
            errors = err_part
    if encoding is None:
        encoding = "utf-8" if utf8 else (_locale.nl_langinfo(_locale.CODESET) or "utf-8")
    encoding = codecs.lookup(encoding).name
    if errors is None:
        legacy = after in ("C", "POSIX") or after in _COERCION_TARGETS
        errors = "surrogateescape" if utf8 or legacy else "strict"
    buffered = not (_cmdline_unbuffered() or _env_option("PYTHONUNBUFFERED"))
    return encoding, errors, buffered


def _open_std_stream(fd: int, name: str, encoding: str, errors: str, buffered: bool) -> "TextIO":
    """One standard stream exactly as CPython's ``create_stdio`` makes it."""
    write = fd != 0
    unbuffered_raw = write and not buffered
    buf = io.open(fd, "wb" if write else "rb", buffering=0 if unbuffered_raw else -1, closefd=False)
    raw: "Any" = buf if unbuffered_raw else buf.raw  # type: ignore[attr-defined]
    raw.name = f"<{name}>"
    line_buffering = buffered and (raw.isatty() or fd == 2)
    stream = io.TextIOWrapper(
        buf,
        encoding=encoding,
        errors="backslashreplace" if fd == 2 else errors,
        newline="\n",
        line_buffering=line_buffering,
        write_through=not buffered,
    )
    stream.mode = "w" if write else "r"  # type: ignore[misc]
    return stream


def _recreate_std_streams(locale_changed: bool) -> "List[TextIO]":
    """Make new sys.stdin/stdout/stderr on fds 0-2; return the replaced ones.

    A stream the script replaced with its own object is left to the script
    (it still writes to the same fd, now the caller's); ``sys.__stdxxx__``
    always gets the new stream.
    """
    try:
        encoding, errors, buffered = stdio_settings(locale_changed)
    except LookupError as e:
        # What the interpreter says, and does, at start-up.
        os.write(
            2,
            b"Fatal Python error: init_stdio_encoding: failed to get the Python codec name"
            b" of the stdio encoding\nPython runtime state: core initialized\n"
            + f"LookupError: {e}\n".encode(errors="backslashreplace"),
        )
        os._exit(1)
    replaced: "List[TextIO]" = []
    for name, fd in _STD_STREAMS:
        old = getattr(sys, "__" + name + "__")
        new = _open_std_stream(fd, name, encoding, errors, buffered)
        if getattr(sys, name) is old:
            setattr(sys, name, new)
        setattr(sys, "__" + name + "__", new)
        if old is not None:
            replaced.append(old)
    return replaced


# ---------------------------------------------------------------------------
# Putting it together


def _install_stdio_fds(fds: "Sequence[int]") -> None:
    # The received fds are never 0-2: those are open in the monitor.
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
    for fd in set(fds):
        os.close(fd)


def _install_pty(numbers: "Sequence[int]", slave: int) -> None:
    """Extension pty1 (protocol.md section 9.3): the pty's slave at each of
    ``numbers`` (among 0-2), inheritable, and the received copy closed, so
    the client sees the end of the output (EIO on the master) once the
    call's processes have closed theirs.

    On entry the pty is already our controlling terminal (our parent, the
    call's session leader, made it its session's) and our process group
    the pty's foreground group (``_session``).
    """
    try:
        for number in numbers:
            os.dup2(slave, number, inheritable=True)
    finally:
        os.close(slave)


def _is_open(fd: int) -> bool:
    try:
        fcntl.fcntl(fd, fcntl.F_GETFD)
    except OSError:
        return False
    return True


def _install_extra_fds(numbers: "Sequence[int]", received: "Sequence[int]") -> "List[str]":
    """Step 2: each received fd at its number in the caller, inheritable.

    The received copies are first moved above the highest number; a number
    the script has open itself keeps the script's fd.  Every copy is closed
    at the end (so a pipe's reader sees EOF when the call ends).  Returns
    warnings about numbers not installed.
    """
    if not numbers:
        return []
    copies: "List[int]" = []
    try:
        floor = max(numbers) + 1
        for fd in received:
            copies.append(fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, floor))
    finally:
        close_quietly(received)
    warnings = []
    try:
        for number, copy in zip(numbers, copies):
            if _is_open(number):
                warnings.append(f"the caller's fd {number} is not passed on: the script has its own fd {number} open")
            else:
                os.dup2(copy, number, inheritable=True)
    finally:
        close_quietly(copies)
    return warnings


def _limit_key(value: int) -> float:
    return float("inf") if value == RLIM_INFINITY else value


def _set_rlimit(res: int, soft: int, hard: int) -> None:
    """Step 4 for one resource: the caller's limits; if the kernel refuses
    (a hard limit above ours, unprivileged), our hard limit and the lower
    of the caller's soft limit and that."""
    try:
        resource.setrlimit(res, (soft, hard))
        return
    except (ValueError, OSError, OverflowError):
        pass
    try:
        _, our_hard = resource.getrlimit(res)
        resource.setrlimit(res, (min(soft, our_hard, key=_limit_key), our_hard))
    except (ValueError, OSError, OverflowError):
        pass  # a resource this kernel does not know, or nonsense: left as it is


def _set_nice(nice: int) -> None:
    """Step 5: the caller's nice value; a lower one than ours needs
    privilege, and without it ours stays."""
    if os.getpriority(os.PRIO_PROCESS, 0) != nice:
        try:
            os.setpriority(os.PRIO_PROCESS, 0, nice)
        except PermissionError:
            pass


def _apply_attributes(attrs: "Attributes", extra_fds: "Sequence[int]", log: "Log") -> None:
    """Steps 2-5 of protocol.md section 6.4."""
    warnings = _install_extra_fds(attrs.fds, extra_fds)
    if warnings:
        # To the server's log, not stderr (fd 2 is this caller's now).
        log.to_stderr = False
        for warning in warnings:
            log.warning(warning)
    if attrs.umask is not None:
        os.umask(attrs.umask)
    for res, soft, hard in attrs.rlimits:
        _set_rlimit(res, soft, hard)
    if attrs.nice is not None:
        _set_nice(attrs.nice)


def _environ_dict() -> "Dict[bytes, bytes]":
    """The dict behind both ``os.environ`` and ``os.environb`` (CPython's
    ``os._Environ._data``), which the interpreter fills at start-up."""
    shared = getattr(os.environ, "_data", None)
    if getattr(os.environb, "_data", None) is shared and isinstance(shared, dict):
        return shared
    raise RuntimeError("os.environ is not built as in CPython (no _data dict shared with os.environb)")


def _apply_environment(entries: "List[bytes]", in_place: bool) -> None:
    """Make the environment exactly the caller's ``entries`` (``NAME=value``),
    as a direct run would start with them, in time linear in their number.

    The C environment becomes the entries themselves, in order (one array,
    ``set_c_environment``).  ``os.environ`` and ``os.environb`` become what
    the interpreter builds from them at start-up: each name that has a
    ``=``, the first occurrence winning.  Their shared dict (``_data``, bytes
    to bytes on POSIX) is filled directly: assigning to ``os.environ`` would
    call ``putenv`` once per entry, each a search of the whole environment.

    ``in_place``: this is the setup process (protocol.md section 7), which
    our client started with its own environment, the one it sends as
    ``entries``, plus ``PREFORK_INTERP``, which ``initialisation_complete``
    has removed (``unsetenv``): its environment is already the caller's,
    and is left alone (no ``ctypes``), unless ``os.environ`` says otherwise
    (the interpreter coerced the locale into ``LC_CTYPE``, the script set a
    variable, the caller has a reserved ``PREFORK_INTERP*`` variable).  Only
    a change the script made to the C environment alone (``os.putenv``, C
    code) then stays, as it would in a direct run.
    """
    data = env_mapping(entries)
    shared = _environ_dict()
    if in_place and shared == data:
        return
    if len(data) == len(entries) and list(shared.items()) == list(data.items()):
        # A served call whose caller has the environment the server has,
        # in the same order (the same shell again, say): nothing to do.
        # The C environment is the same entries in that order too (the
        # interpreter built os.environ from it; every change since, the
        # script's and ours, went through os.environ, which putenv()s and
        # unsetenv()s in step), unless C code changed it alone, as the
        # script's initialisation would again in a direct run.  (Not with
        # a repeated name or an entry without "=": those are in the C
        # environment only, so it is set.)  Saves about 0.15 ms.
        return
    set_c_environment(entries)
    shared.clear()
    shared.update(data)


def warm_up(state: ScriptState, log: "Log") -> None:
    """In a spare waiting for its call: run what :func:`become_executor`
    runs, on throwaway data, changing nothing of the process.

    A spare is a fork of the server, sharing its memory until either
    writes a page.  CPython writes to every object it uses (reference
    counts), so the first call of a function after the fork copies the
    pages of its code, its globals and what it touches, each a page fault:
    3-4 us each on a virtual machine, and ``become_executor`` alone made
    about 250 of them.  Taken here, while the spare waits, they are off the
    call's path: measured in a fork of a server, ``become_executor`` went
    from 1.26 ms to about 0.8 ms (half its faults), at the cost of those
    pages (about 0.5 MiB) being the spare's own a little earlier.
    """
    entries = [name + b"=" + value for name, value in os.environb.items()]
    env_mapping(entries)
    _environ_dict()
    _locale_env()
    [os.fsdecode(entry) for entry in entries[:1]]
    rehearse_c_environment(entries)
    encoding, errors, buffered = stdio_settings(False)
    devnull = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    try:
        for name, _ in _STD_STREAMS:
            stream: "Any" = _open_std_stream(devnull, name, encoding, errors, buffered)
            stream.detach()  # the fd stays open, the buffer goes
    finally:
        os.close(devnull)
    # The same umask, limit and nice value again: steps 3-5 changing nothing.
    umask = os.umask(0o077)
    os.umask(umask)
    nofile = (resource.RLIMIT_NOFILE, *resource.getrlimit(resource.RLIMIT_NOFILE))
    _apply_attributes(Attributes(umask=umask, nice=os.getpriority(os.PRIO_PROCESS, 0), rlimits=(nofile,)), (), log)
    state.signals.rehearse()
    _fastexit.rehearse()


def prepare_in_place(call: "Call") -> None:
    """Make the setup process, about to run the first call in place
    (protocol.md section 7), what :func:`become_executor` expects: every
    signal blocked and the call's socket closed.  It stays in the process
    group the client made it lead, the call's; the client has already
    asked the kernel to SIGINT it if the client dies."""
    block_all()
    call.sock.close()


def become_executor(call: "Call", state: ScriptState, log: "Log", fast_exit: bool) -> None:
    """Take on the caller's process context, then return into the script.

    On entry: a fresh fork child of a monitor, already the leader of its
    own process group (with pty1, the pty's foreground group, in the
    session its parent, the call's session leader, leads), with every signal
    blocked; fds 0-2 are the monitor's; ``call`` holds the caller's stdio
    fds, request and (call1) attributes and extra fds (pty1: and the pty's
    slave); the monitor's protocol fds and wake-up pipe are already
    closed.  Any failure here is reported on the caller's stderr and ends
    the process with status 127: it never returns into the script half set
    up.  The signal mask is set last, once everything else
    is the caller's: a signal that arrived meanwhile acts then.
    """
    attrs = call.attrs
    try:
        _install_stdio_fds(call.stdio)
        if call.pty_fd is not None:
            # The new step of protocol.md section 9.3, after step 2 there,
            # here before it: the same fds in the end (the slave goes only
            # to 0-2, the extra fds only from 3 up), and the standard
            # streams, made next, are made on the pty (isatty: line
            # buffering, as at start-up on a terminal).
            assert attrs is not None and attrs.pty is not None
            _install_pty(attrs.pty, call.pty_fd)
        _apply_environment(call.request.env_entries(), call.in_place)
        sys.argv = [os.fsdecode(arg) for arg in call.request.argv()[1:]] or [""]
        if not call.in_place:
            # What a direct run of this call shows (the spare showed the
            # server's title): the interpreter, the script, its arguments.
            set_cmdline(b"\0".join(call.request.argv()))
        replaced = _recreate_std_streams(_locale_env() != state.locale_env)
        if fast_exit:
            _fastexit.install(replaced)
        if attrs is not None:
            _apply_attributes(attrs, call.extra_fds, log)
        # Step 6.  Without call1 no signal is ignored by the caller, and
        # SIGINT is Python's default_int_handler again: the monitor SIGINTs
        # the group when the caller goes away, and the script gets a
        # KeyboardInterrupt, as after a ^C in a direct run.
        state.signals.apply_dispositions(attrs.sigign or () if attrs is not None else ())
    except BaseException as e:
        try:
            os.write(2, f"{log.script}: prefork: error: setting up the call: {e}\n".encode(errors="replace"))
        finally:
            os._exit(127)
    # Step 7, outside the try: a pending signal whose handler raises (^C
    # already pressed: KeyboardInterrupt) raises into the script.
    state.signals.set_mask(None if attrs is None else attrs.sigmask)
