"""The server's line in its server record (protocol.md section 8), which
``prefork-interp --list`` reads.

The client that starts a server writes the record (``m<IDENT>`` in the run
directory: what the server runs, where, since when) and passes its path at
the end of ``PREFORK_INTERP``, announced by ``record1``.  The server
appends one fixed-width line and rewrites it in place with one ``pwrite``
when a call starts or ends::

    server=PID TICKS LIBRARY CALLS RUNNING LAST

``TICKS`` is the server's start time (``/proc/PID/stat`` field 22), so that
a reader can tell the server from a process that got its pid later;
``LAST`` is when the last call started, in Unix seconds.
"""

import os
import stat
import time

from ._log import Log

TYPE_CHECKING = False  # not typing's: importing typing costs a cold call
if TYPE_CHECKING:
    from typing import Optional

__all__ = ["ServerRecord"]


def _start_ticks() -> int:
    try:
        with open("/proc/self/stat", "rb") as f:
            stat = f.read()
        return int(stat[stat.rindex(b")") + 2 :].split(b" ")[19])
    except (OSError, ValueError, IndexError):
        return 0


class ServerRecord:
    """This server's line in the record open on ``fd``."""

    @classmethod
    def open(cls, path: bytes, in_place: bool, in_place_running: bool, log: Log) -> "Optional[ServerRecord]":
        """Open the record at ``path`` (a regular file of ours, never
        through a symbolic link) and write our line; None if it cannot be."""
        try:
            fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
        except OSError as e:
            log.warning(f"opening the server record: {e}")
            return None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid():
                raise OSError(f"{os.fsdecode(path)} is not a regular file of ours")
            return cls(fd, in_place, in_place_running, log)
        except OSError as e:
            log.warning(f"writing the server record: {e}")
            os.close(fd)
            return None

    def __init__(self, fd: int, in_place: bool, in_place_running: bool, log: Log) -> None:
        self.fd: "Optional[int]" = fd
        self.log = log
        self.pid = os.getpid()
        self.ticks = _start_ticks()
        #: A call run in place by the setup process is the first one (and
        #: it may have ended already).
        self.calls = 1 if in_place else 0
        self.running = 1 if in_place_running else 0
        self.last_call = int(time.time()) if in_place else 0
        self.offset = os.lseek(fd, 0, os.SEEK_END)
        self.write()

    def line(self) -> bytes:
        """The fixed-width line, newline included."""
        return (
            f"server={self.pid:>10} {self.ticks:>20} {'python':<8} {self.calls:>12} "
            f"{self.running:>6} {self.last_call:>12}\n"
        ).encode()

    def write(self) -> None:
        """Rewrite the line in place; on failure, say so once and stop."""
        if self.fd is None:
            return
        try:
            os.pwrite(self.fd, self.line(), self.offset)
        except OSError as e:
            self.log.warning(f"updating the server record: {e}")
            self.close()

    def started(self) -> None:
        """A call has started."""
        self.calls += 1
        self.running += 1
        self.last_call = int(time.time())
        self.write()

    def ended(self, n: int = 1) -> None:
        """``n`` calls have ended."""
        if n > 0:
            self.running = max(0, self.running - n)
            self.write()

    def close(self) -> None:
        """Close the record (in a spare, or after a failure)."""
        if self.fd is not None:
            fd, self.fd = self.fd, None
            try:
                os.close(fd)
            except OSError:
                pass
