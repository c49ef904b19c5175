"""Small process helpers shared by the server, the monitors and the executor."""

from __future__ import annotations

__all__ = [
    "ChildWakeup",
    "close_quietly",
    "flush_std_streams",
    "fork",
    "redirect_stdio_to_devnull",
]

import os
import signal
import sys
from typing import Iterable, Optional


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


def close_quietly(fds: Iterable[Optional[int]]) -> None:
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
            signal.set_wakeup_fd(self._write_fd, warn_on_full_buffer=False)
            signal.signal(signal.SIGCHLD, _ignore_signal)
            # A script that blocked SIGCHLD would otherwise never wake us.
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGCHLD})
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
        signal.set_wakeup_fd(-1)
        close_quietly((self.fd, self._write_fd))
