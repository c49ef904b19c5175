"""Small process helpers shared by the server, the monitors and the executor,
and the two things the standard library cannot do without ``ctypes``:
asking to die with the parent (``prctl``) and installing a whole C
environment at once (``environ``)."""

__all__ = [
    "ChildWakeup",
    "close_quietly",
    "die_with_parent",
    "flush_std_streams",
    "fork",
    "load_libc",
    "redirect_stdio_to_devnull",
    "set_c_environment",
]

# Only C-level modules: the setup process imports this module on the cold
# path (protocol.md section 7).  ctypes is imported by the two functions
# that need it, which that path does not call (see load_libc).
import os
import sys

TYPE_CHECKING = False  # not typing's: importing typing costs a cold call
if TYPE_CHECKING:
    import ctypes
    import signal as _signal  # the stubs of _signal, which has none of its own
    from typing import Iterable, List, Optional, Tuple, Union
else:
    import _signal

#: ``prctl`` option: the signal to get when the parent thread dies.
_PR_SET_PDEATHSIG = 1

#: The C library of this process (its ``prctl`` and its ``environ``), once
#: :func:`load_libc` has loaded it.
_LIBC: "Optional[ctypes.CDLL]" = None

#: The C environment arrays installed by :func:`set_c_environment`: they
#: (and the strings they point into) must live as long as the process.
_C_ENVIRONMENTS: "List[ctypes.Array[ctypes.c_char_p]]" = []


def load_libc() -> "ctypes.CDLL":
    """The C library of this process, through ctypes, loaded on the first
    call (the server calls it once, so that its executors need not)."""
    global _LIBC
    if _LIBC is None:
        import ctypes

        _LIBC = ctypes.CDLL(None, use_errno=True)
    return _LIBC


def flush_std_streams() -> None:
    """Flush Python's stdio buffers, so a fork does not copy pending output.

    Output still in a buffer at fork time would otherwise be written once by
    each process that later flushes it: duplicated, or lost if nobody does.
    """
    seen = set()
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        if stream is None or id(stream) in seen:
            continue
        seen.add(id(stream))
        try:
            stream.flush()
        except (OSError, ValueError):
            # A broken or closed stream; there is nowhere to report it.
            pass


def fork() -> int:
    """``os.fork()`` with stdio flushed first (see :func:`flush_std_streams`)."""
    flush_std_streams()
    return os.fork()


def set_cmdline(title: "Union[bytes, List[bytes]]") -> None:
    """Set this process's command line, as ``ps`` and ``/proc/PID/cmdline``
    show it, to ``title`` (arguments separated by NUL bytes).

    Python's standard library has no ``setproctitle``; this does what it
    does, with files only: the memory that held the arguments the process
    was started with (``arg_start`` and ``arg_end``, fields 48 and 49 of
    ``/proc/self/stat``) is overwritten through ``/proc/self/mem``, with
    the title cut to fit and the rest zeroed.  A process may write its own
    memory that way without privilege.  Best effort: a failure leaves the
    command line as it was.  Given a list, the first title that fits is
    used (the last one, cut, if none does).
    """
    titles = title if isinstance(title, list) else [title]
    try:
        start, end = _arg_area()
        if end <= start:
            return
        room = end - start
        chosen = next((t for t in titles if len(t) < room), titles[-1])
        area = chosen[: room - 1].ljust(room, b"\0")
        fd = os.open("/proc/self/mem", os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.pwrite(fd, area, start)
        finally:
            os.close(fd)
    except (OSError, ValueError, IndexError):
        pass


#: ``(arg_start, arg_end)``, once read: the same in every fork of this
#: process, so a spare and an executor each save reading /proc on a call.
_ARG_AREA: "Optional[Tuple[int, int]]" = None


def _arg_area() -> "Tuple[int, int]":
    """Where the memory that held this process's arguments starts and ends
    (fields 48 and 49 of ``/proc/self/stat``).  Raises OSError or
    ValueError if that cannot be read."""
    global _ARG_AREA
    if _ARG_AREA is None:
        fd = os.open("/proc/self/stat", os.O_RDONLY | os.O_CLOEXEC)
        try:
            stat = os.read(fd, 4096)
        finally:
            os.close(fd)
        fields = stat[stat.rindex(b")") + 2 :].split(b" ")
        _ARG_AREA = int(fields[48 - 3]), int(fields[49 - 3])
    return _ARG_AREA


def process_title(role: str) -> "List[bytes]":
    """``prefork-interp ROLE: SCRIPT (INTERPRETER)``, from the arguments
    of the run that started the server (no argument of the caller's), and
    shorter forms for a process started with little room."""
    orig = getattr(sys, "orig_argv", None) or [sys.executable]
    script = sys.argv[0] if sys.argv and sys.argv[0] else "-"
    interp = os.path.basename(orig[0])
    return [
        os.fsencode(f"prefork-interp {role}: {script} ({interp})"),
        os.fsencode(f"prefork-interp {role}: {script}"),
        os.fsencode(f"{os.path.basename(script)} [{role}]"),
    ]


def close_quietly(fds: "Iterable[Optional[int]]") -> None:
    """Close each fd that is not None, ignoring errors (cleanup paths)."""
    for fd in fds:
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass


def redirect_stdio_to_devnull() -> None:
    """Point fds 0, 1 and 2 at ``/dev/null``."""
    null = os.open(os.devnull, os.O_RDWR)
    try:
        for fd in (0, 1, 2):
            os.dup2(null, fd)
    finally:
        if null > 2:
            os.close(null)


def _ignore_signal(signum: int, frame: object) -> None:
    """Python-level SIGCHLD handler: the wake-up fd does the work.

    It must be a real handler: SIG_IGN for SIGCHLD would make the kernel
    reap children before we can read their status.
    """


class ChildWakeup:
    """SIGCHLD delivered as a readable pipe (the self-pipe trick).

    Python's C-level handler writes to the pipe at once, so a ``poll`` that
    includes :attr:`fd` wakes up for every child death, with no race between
    checking for dead children and going to sleep.
    """

    def __init__(self) -> None:
        self.fd, self._write_fd = os.pipe()
        try:
            os.set_blocking(self.fd, False)
            os.set_blocking(self._write_fd, False)
            _signal.set_wakeup_fd(self._write_fd, warn_on_full_buffer=False)
            _signal.signal(_signal.SIGCHLD, _ignore_signal)
            # A script that blocked SIGCHLD would otherwise never wake us.
            _signal.pthread_sigmask(_signal.SIG_UNBLOCK, {_signal.SIGCHLD})
        except BaseException:
            self.close()
            raise

    def drain(self) -> None:
        """Empty the pipe after it polled readable."""
        try:
            while os.read(self.fd, 512):
                pass
        except BlockingIOError:
            pass

    def close(self) -> None:
        """Stop using the pipe as wake-up fd and close it.

        SIGCHLD keeps its handler: the caller installs what it needs next.
        """
        _signal.set_wakeup_fd(-1)
        close_quietly((self.fd, self._write_fd))


def die_with_parent(parent: int) -> None:
    """In a fork child of ``parent``: have the kernel SIGKILL us when the
    parent dies (``prctl(PR_SET_PDEATHSIG, SIGKILL)``), then make sure it
    has not died already (our parent would then be another process).

    Returns only if both hold; otherwise ``os._exit(127)`` at once, so a
    child is never left running without the parent that answers for it.
    """
    if load_libc().prctl(_PR_SET_PDEATHSIG, _signal.SIGKILL, 0, 0, 0) != 0 or os.getppid() != parent:
        os._exit(127)


def rehearse_c_environment(entries: "List[bytes]") -> None:
    """What :func:`set_c_environment` runs, changing nothing: the array is
    made and dropped, ``environ`` read (``_executor.warm_up``)."""
    import ctypes

    (ctypes.c_char_p * (len(entries) + 1))(*entries)
    ctypes.c_void_p.in_dll(load_libc(), "environ").value


def set_c_environment(entries: "List[bytes]") -> None:
    """Make the C environment (``environ``) exactly ``entries``, in order.

    One new ``char *`` array pointing into the given bytes objects, so the
    time is linear in the number of entries: putting them one by one
    (``putenv``, ``os.environ[...] =``) costs a search of the whole
    environment each, quadratic for a large one.  Later ``setenv`` and
    ``unsetenv`` calls work on it as usual (glibc copies an array it did not
    allocate before growing it).  Only ``os.environ`` is left to the caller.
    """
    import ctypes

    array = (ctypes.c_char_p * (len(entries) + 1))(*entries)  # NULL-terminated
    _C_ENVIRONMENTS.append(array)  # keeps the array and the bytes objects alive
    ctypes.c_void_p.in_dll(load_libc(), "environ").value = ctypes.addressof(array)
