"""Where the server and its executors report (docs/options.md, "Where
messages go").

While a process still has the first caller's stderr (the setup process,
and the server until it detaches), its messages go there.  From then on:

1. to syslog (``log_facility``), sent straight to ``/dev/log``, when the
   system logger takes them;
2. to the log file, when one is given (``log_file``, or the setup run's
   ``PREFORK_INTERP_LOG``), as well;
3. when syslog is off or did not take a message and no log file is given:
   to the file ``log`` in the run directory (the directory of the server
   record, protocol.md section 8), so that a server in a container without
   ``/dev/log`` still leaves its messages somewhere.  A server started
   without a record (by the C client) then has nowhere to write.

A log file gets one line per message, in one ``write``, appended (created
mode 0600), and is renamed to ``FILE.old`` once it has reached
:data:`LOG_FILE_MAX` bytes.  It is opened for each message, so that
nothing of ours stays open in spares and executors, and every process
writing it follows a rotation.  Each error or warning also becomes the
server record's last error (``_listing.ServerRecord.error``) while the
record is open (in the server).

The syslog module is not used: it would say nothing when ``/dev/log`` is
missing, and its ``openlog`` state is the script's (a script that calls
``syslog.openlog`` keeps its settings in its calls, as in a direct run).

Only ``os`` and ``syslog`` (for its constants) are imported here: the
setup process imports this module on the cold path; ``_socket`` and
``time``, C-level, are imported when a message is written.
"""

__all__ = [
    "LOG_FILE_MAX",
    "RUN_DIR_LOG",
    "SYSLOG_IDENT",
    "SYSLOG_PATH",
    "Log",
    "append_line",
    "format_line",
    "resolve_facility",
    "send_syslog",
]

import os
import syslog

TYPE_CHECKING = False  # not typing's: importing typing costs a standalone run
if TYPE_CHECKING:
    from typing import Optional, Union

    from ._listing import ServerRecord

#: syslog identity, as the Perl library's (without its ``$0``: we put the
#: script in each message instead, and add the pid).
SYSLOG_IDENT = "prefork-interp"

#: The system logger's socket.
SYSLOG_PATH = "/dev/log"

#: The log in the run directory, when neither syslog nor a log file takes
#: the messages.
RUN_DIR_LOG = "log"

#: A log file that has reached this many bytes is renamed to ``FILE.old``
#: (replacing the previous one) before the next line is written to a new
#: one, so it never holds much more than twice this.
LOG_FILE_MAX = 1 << 20

#: Months for the syslog timestamp (RFC 3164), not the locale's.
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def resolve_facility(facility: "Union[int, str, None]") -> "Optional[int]":
    """Turn a ``log_facility`` option into a syslog facility or None.

    Accepts a ``syslog.LOG_*`` integer, a name (``"LOG_DAEMON"``,
    ``"daemon"``), or None or ``""`` for no syslog.
    """
    if facility is None or facility == "":
        return None
    if isinstance(facility, bool) or not isinstance(facility, (int, str)):
        raise TypeError(f"log_facility must be a syslog.LOG_* number, a name or None, not {facility!r}")
    if isinstance(facility, int):
        return facility
    name = facility.upper()
    if not name.startswith("LOG_"):
        name = "LOG_" + name
    value = getattr(syslog, name, None)
    if not isinstance(value, int):
        raise ValueError(f"log_facility {facility!r} is not a syslog facility")
    return value


def format_line(when: float, name: str, pid: int, level: str, msg: str) -> bytes:
    """A log file's line: ``2026-11-28T23:50:01 tool.py[4242] warning: msg``
    (local time), newline included; a newline in ``msg`` becomes a space."""
    import time

    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(when))
    text = msg.replace("\r\n", " ").replace("\n", " ").replace("\r", " ")
    return f"{stamp} {name}[{pid}] {level}: {text}\n".encode(errors="backslashreplace")


def _open_append(path: str) -> int:
    return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOCTTY, 0o600)


def append_line(path: str, line: bytes) -> bool:
    """Append ``line`` to the log file ``path`` in one ``write``, renaming
    it to ``path.old`` first if it has reached :data:`LOG_FILE_MAX` bytes.
    False if it could not be written."""
    try:
        fd = _open_append(path)
    except OSError:
        return False
    try:
        st = os.fstat(fd)
        if st.st_size >= LOG_FILE_MAX:
            # Unless another process has rotated it meanwhile (then ours is
            # already the .old one, and path a new file).
            try:
                now = os.stat(path)
                if (now.st_dev, now.st_ino) == (st.st_dev, st.st_ino):
                    os.rename(path, path + ".old")
            except OSError:
                pass
            os.close(fd)
            fd = -1
            fd = _open_append(path)
        os.write(fd, line)
        return True
    except OSError:
        return False
    finally:
        if fd >= 0:
            os.close(fd)


def send_syslog(path: str, datagram: bytes) -> bool:
    """Send one message to the system logger at ``path`` without blocking
    (a datagram socket, or else a stream one, as glibc's ``syslog``).
    False if it did not take it: no logger, or its queue full."""
    import _socket

    for kind in (_socket.SOCK_DGRAM, _socket.SOCK_STREAM):
        try:
            sock = _socket.socket(_socket.AF_UNIX, kind | _socket.SOCK_CLOEXEC | _socket.SOCK_NONBLOCK)
        except OSError:
            return False
        try:
            try:
                sock.connect(path)
            except OSError:
                continue  # the wrong kind, or nobody there
            try:
                data = datagram if kind == _socket.SOCK_DGRAM else datagram + b"\0"
                return sock.send(data, _socket.MSG_NOSIGNAL) == len(data)
            except OSError:
                return False
        finally:
            sock.close()
    return False


class Log:
    """Reports of one server and its executors.

    ``to_stderr`` starts true (the setup process and the server until it
    detaches still have the first caller's stderr) and the server clears it
    when it detaches from that stderr.
    """

    def __init__(
        self, script: str, facility: "Optional[int]", log_file: "Optional[str]" = None, run_dir: "Optional[str]" = None
    ) -> None:
        self.script = script
        #: The script's name in log file lines.
        self.name = os.path.basename(script) or script
        self.facility = facility
        self.log_file = log_file
        #: The run directory's log, for when neither syslog nor a log file
        #: takes a message.
        self.fallback = os.path.join(run_dir, RUN_DIR_LOG) if run_dir else None
        self.to_stderr = True
        #: The server record, whose last error each error or warning becomes
        #: (set by the server once it has its line; closed in spares).
        self.record: "Optional[ServerRecord]" = None

    def _syslog(self, severity: int, text: str, when: float) -> bool:
        if self.facility is None:
            return False
        import time

        t = time.localtime(when)
        stamp = f"{_MONTHS[t.tm_mon - 1]} {t.tm_mday:2} {t.tm_hour:02}:{t.tm_min:02}:{t.tm_sec:02}"
        datagram = f"<{self.facility | severity}>{stamp} {SYSLOG_IDENT}[{os.getpid()}]: {text}".replace("\0", "\\0")
        return send_syslog(SYSLOG_PATH, datagram.encode(errors="backslashreplace"))

    def _emit(self, severity: int, level: str, msg: str) -> None:
        import time

        when = time.time()
        text = f"{self.script}: prefork: {'error: ' if severity == syslog.LOG_ERR else ''}{msg}"
        if self.to_stderr:
            try:
                os.write(2, f"{text}\n".encode(errors="backslashreplace"))
            except OSError:
                pass
            reported = True
        else:
            reported = self._syslog(severity, text, when)
        if self.log_file is not None:
            append_line(self.log_file, format_line(when, self.name, os.getpid(), level, msg))
        elif not reported and self.fallback is not None:
            append_line(self.fallback, format_line(when, self.name, os.getpid(), level, msg))
        if self.record is not None and severity <= syslog.LOG_WARNING:
            self.record.error(msg, when)

    def info(self, msg: str) -> None:
        """An expected event (quitting on reload, idle timeout)."""
        # Informational messages are of no use on the caller's stderr.
        if not self.to_stderr:
            self._emit(syslog.LOG_INFO, "info", msg)

    def debug(self, msg: str) -> None:
        """A routine event worth a trace (a connection dropped for taking
        too long); never on the caller's stderr."""
        if not self.to_stderr:
            self._emit(syslog.LOG_DEBUG, "debug", msg)

    def warning(self, msg: str) -> None:
        """Something went wrong with one call or one client."""
        self._emit(syslog.LOG_WARNING, "warning", msg)

    def error(self, msg: str) -> None:
        """Something went wrong that ends this server or executor."""
        self._emit(syslog.LOG_ERR, "error", msg)
