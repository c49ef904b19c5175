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

After it, the server keeps one more line, the last error or warning it
logged (``_log.Log`` calls :meth:`ServerRecord.error`)::

    error=SECS MESSAGE

written in place just after the server line, the file then truncated after
it, so there is at most one; ``MESSAGE`` is escaped as the record's values
(:func:`escape`).
"""

import os
import stat
import time

from ._log import Log

TYPE_CHECKING = False  # not typing's: importing typing costs a cold call
if TYPE_CHECKING:
    from typing import Optional

__all__ = ["MAX_ERROR_BYTES", "ServerRecord", "escape"]

#: A message longer than this (in UTF-8) is cut to it in the record (the
#: whole message is in the log).
MAX_ERROR_BYTES = 1024


def escape(data: bytes) -> bytes:
    """A record value: bytes below 0x20, 0x7f and above, and ``%`` written
    ``%HH`` (upper-case hex), the rest as they are."""
    return b"".join(b"%%%02X" % c if c < 0x20 or c >= 0x7F or c == 0x25 else bytes((c,)) for c in data)


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
            self.close()  # first: the warning would be written here too
            self.log.warning(f"updating the server record: {e}")

    def error(self, message: str, when: "Optional[float]" = None) -> None:
        """Keep ``message`` as the last error, logged at ``when`` (Unix
        seconds; default now), in the line after ours."""
        if self.fd is None:
            return
        text = message.encode(errors="backslashreplace")[:MAX_ERROR_BYTES]
        line = b"error=%d %s\n" % (int(time.time() if when is None else when), escape(text))
        at = self.offset + len(self.line())
        try:
            os.pwrite(self.fd, line, at)
            os.ftruncate(self.fd, at + len(line))
        except OSError as e:
            self.close()
            self.log.warning(f"writing the last error to the server record: {e}")

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
