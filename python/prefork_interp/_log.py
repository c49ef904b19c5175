"""Where the server and its monitors report: syslog, stderr, or nowhere.

Upstream design (part 4): errors of the first call's monitor go to stderr,
which is still the first caller's; once the server has pointed its stdio at
``/dev/null`` everything goes to syslog.  ``log_facility=None`` turns syslog
off, and then the server's messages are lost.
"""

__all__ = ["Log", "resolve_facility"]

import os
import syslog

TYPE_CHECKING = False  # not typing's: importing typing costs a standalone run
if TYPE_CHECKING:
    from typing import Optional, Union

#: syslog identity, as the Perl library's (without its ``$0``: we put the
#: script in each message instead, and add the pid).
SYSLOG_IDENT = "prefork-interp"


def resolve_facility(facility: "Union[int, str, None]") -> "Optional[int]":
    """Turn a ``log_facility`` option into a syslog facility or None.

    Accepts a ``syslog.LOG_*`` integer, a name (``"LOG_DAEMON"``,
    ``"daemon"``), or None or ``""`` for no logging.
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


class Log:
    """Reports of one server and its monitors.

    ``to_stderr`` starts true (the setup process and the first call's
    monitor still have the first caller's stderr) and the server clears it
    when it detaches from that stderr.
    """

    def __init__(self, script: str, facility: "Optional[int]") -> None:
        self.script = script
        self.facility = facility
        self.to_stderr = True
        self._open = False

    def open_syslog(self) -> None:
        """Open syslog (no-op when logging is off)."""
        if self.facility is not None:
            syslog.openlog(SYSLOG_IDENT, syslog.LOG_PID, self.facility)
            self._open = True

    def close_for_executor(self) -> None:
        """Undo :meth:`open_syslog`, so the script's own syslog use starts
        afresh with its own identity, as in a direct run."""
        if self._open:
            syslog.closelog()
            self._open = False

    def _emit(self, priority: int, msg: str) -> None:
        line = f"{self.script}: prefork: {msg}"
        if self.to_stderr:
            try:
                os.write(2, f"{line}\n".encode(errors="backslashreplace"))
            except OSError:
                pass
        elif self._open:
            syslog.syslog(priority, line)

    def info(self, msg: str) -> None:
        """An expected event (quitting on reload, idle timeout)."""
        # Informational messages are of no use on the caller's stderr.
        if not self.to_stderr:
            self._emit(syslog.LOG_INFO, msg)

    def debug(self, msg: str) -> None:
        """A routine event worth a trace (a connection dropped for taking
        too long); never on the caller's stderr."""
        if not self.to_stderr:
            self._emit(syslog.LOG_DEBUG, msg)

    def warning(self, msg: str) -> None:
        """Something went wrong with one call or one client."""
        self._emit(syslog.LOG_WARNING, msg)

    def error(self, msg: str) -> None:
        """Something went wrong that ends this server or monitor."""
        self._emit(syslog.LOG_ERR, f"error: {msg}")
