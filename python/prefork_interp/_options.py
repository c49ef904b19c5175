"""Options of ``initialisation_complete()``, checked (cheap to import: they
are checked even when the script runs standalone).

Names, meanings and defaults are those of docs/options.md, which the three
libraries follow (python/tests/test_options.py checks the defaults here
against its table).
"""

__all__ = [
    "CALLS_PER_CPU",
    "DEFAULT_IDLE_TIMEOUT",
    "DEFAULT_MAX_ERRORS",
    "DEFAULT_POOL_SIZE",
    "DEFAULT_REQUEST_TIMEOUT",
    "LOG_ENV_NAME",
    "Options",
    "default_max_servers",
    "make_options",
]

import os
import syslog

from ._log import resolve_facility

TYPE_CHECKING = False  # not typing's: importing typing costs a standalone run
if TYPE_CHECKING:
    from typing import Iterable, Mapping, Optional, Tuple, Union


class Options:
    """Validated options; see ``initialisation_complete`` for their meaning.

    Normalised: ``max_servers`` and ``max_errors`` are negative for no
    limit, ``idle_timeout`` None for never, ``request_timeout`` 0 for no
    limit, ``log_file`` an absolute path or None.
    """

    __slots__ = (
        "max_servers",
        "pool_size",
        "idle_timeout",
        "request_timeout",
        "max_errors",
        "autoreload",
        "autoreload_extra",
        "log_facility",
        "log_file",
        "fast_exit",
    )

    max_servers: int
    pool_size: int
    idle_timeout: "Optional[float]"
    request_timeout: float
    max_errors: int
    autoreload: bool
    autoreload_extra: "Tuple[str, ...]"
    log_facility: "Optional[int]"
    log_file: "Optional[str]"
    fast_exit: bool

    def __init__(self, **values: object) -> None:
        for name in self.__slots__:
            setattr(self, name, values.pop(name))
        if values:
            raise TypeError(f"unknown options {sorted(values)}")

    def __repr__(self) -> str:
        return "Options(" + ", ".join(f"{n}={getattr(self, n)!r}" for n in self.__slots__) + ")"


#: Spare executors a server keeps by default (``_executors``): enough that
#: a call rarely waits for a fork, few enough that idle servers cost little.
DEFAULT_POOL_SIZE = 2

#: Calls served at once by default, per CPU this process may run on: calls
#: often wait (on I/O, on their callers), so a few per CPU keep the machine
#: busy, while a burst of callers still cannot fork without bound.
CALLS_PER_CPU = 8

#: Seconds with no call before a server quits by default: one hour keeps
#: servers warm through a working session, and an idle server's memory is
#: not held for days (docs/options.md, "Why these defaults").
DEFAULT_IDLE_TIMEOUT = 3600.0

#: Seconds a connection has by default, from its accept, to finish its
#: handshake (the request, and with call1 the attributes and extra fds).  A
#: real client sends it all at once; this only bounds what a slow or idle
#: one costs.
DEFAULT_REQUEST_TIMEOUT = 5.0

#: Failures in a row to accept or start a call before the server quits.
DEFAULT_MAX_ERRORS = 100

#: The environment variable of the setup run that gives ``log_file`` when
#: the option is not set.
LOG_ENV_NAME = "PREFORK_INTERP_LOG"


def default_max_servers() -> int:
    """The default for ``max_servers``: :data:`CALLS_PER_CPU` per CPU the
    process may run on (its affinity), at least :data:`CALLS_PER_CPU`."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return CALLS_PER_CPU * max(cpus, 1)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return _is_int(value) or isinstance(value, float)


def _log_file(
    log_file: "Union[str, bytes, os.PathLike[str], os.PathLike[bytes], None]", environ: "Optional[Mapping[str, str]]"
) -> "Optional[str]":
    """The ``log_file`` option, or else ``PREFORK_INTERP_LOG`` from
    ``environ`` (the setup run's; None: standalone, not looked at), made
    absolute against the current directory."""
    if log_file is None:
        log_file = environ.get(LOG_ENV_NAME) if environ is not None else None
        if not log_file:
            return None
    elif not isinstance(log_file, (str, bytes, os.PathLike)):
        raise TypeError(f"log_file must be a path or None, not {log_file!r}")
    path = os.fsdecode(log_file)
    if not path:
        raise ValueError("log_file must not be empty (None: no log file)")
    return os.path.abspath(path)


def make_options(
    max_servers: "Optional[int]" = None,
    idle_timeout: "Optional[float]" = DEFAULT_IDLE_TIMEOUT,
    autoreload: bool = True,
    autoreload_extra: "Iterable[Union[str, os.PathLike[str]]]" = (),
    log_facility: "Union[int, str, None]" = syslog.LOG_USER,
    max_errors: int = DEFAULT_MAX_ERRORS,
    fast_exit: bool = True,
    pool_size: int = DEFAULT_POOL_SIZE,
    request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
    log_file: "Union[str, bytes, os.PathLike[str], os.PathLike[bytes], None]" = None,
    environ: "Optional[Mapping[str, str]]" = None,
) -> Options:
    """Check and normalise the options; TypeError or ValueError if wrong.

    ``environ``: the setup run's environment, for ``PREFORK_INTERP_LOG``
    when ``log_file`` is None (None: not looked at).
    """
    if max_servers is None:
        max_servers = default_max_servers()
    if not _is_int(max_servers):
        raise TypeError(f"max_servers must be an int, not {max_servers!r}")
    if max_servers <= 0:
        max_servers = -1  # 0 or negative: no limit
    if idle_timeout is not None:
        if not _is_number(idle_timeout):
            raise TypeError(f"idle_timeout must be a number of seconds or None, not {idle_timeout!r}")
        if idle_timeout < 0:
            idle_timeout = None
    if not _is_number(request_timeout):
        raise TypeError(f"request_timeout must be a number of seconds, not {request_timeout!r}")
    if not request_timeout >= 0:
        raise ValueError(f"request_timeout must be 0 (no limit) or more, not {request_timeout}")
    if not _is_int(max_errors):
        raise TypeError(f"max_errors must be an int, not {max_errors!r}")
    if not _is_int(pool_size):
        raise TypeError(f"pool_size must be an int, not {pool_size!r}")
    if pool_size < 0:
        raise ValueError(f"pool_size must be 0 or more, not {pool_size}")
    if isinstance(autoreload_extra, (str, bytes, os.PathLike)):
        raise TypeError("autoreload_extra must be a collection of paths, not one path")
    return Options(
        max_servers=max_servers,
        pool_size=pool_size,
        idle_timeout=None if idle_timeout is None else float(idle_timeout),
        request_timeout=float(request_timeout),
        max_errors=max_errors,
        autoreload=bool(autoreload),
        autoreload_extra=tuple(os.path.abspath(os.fspath(path)) for path in autoreload_extra),
        log_facility=resolve_facility(log_facility),
        log_file=_log_file(log_file, environ),
        fast_exit=bool(fast_exit),
    )
