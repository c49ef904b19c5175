"""Options of ``initialisation_complete()``, checked (cheap to import: they
are checked even when the script runs standalone)."""

__all__ = ["Options", "make_options"]

import os

from ._log import resolve_facility

TYPE_CHECKING = False  # not typing's: importing typing costs a standalone run
if TYPE_CHECKING:
    from typing import Iterable, Optional, Tuple, Union


class Options:
    """Validated options; see ``initialisation_complete`` for their meaning."""

    __slots__ = ("max_servers", "idle_timeout", "autoreload", "autoreload_extra", "log_facility", "max_errors", "fast_exit", "pool_size")

    max_servers: int
    idle_timeout: "Optional[float]"
    autoreload: bool
    autoreload_extra: "Tuple[str, ...]"
    log_facility: "Optional[int]"
    max_errors: int
    fast_exit: bool
    pool_size: int

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


def make_options(
    max_servers: "Optional[int]",
    idle_timeout: "Optional[float]",
    autoreload: bool,
    autoreload_extra: "Iterable[Union[str, os.PathLike[str]]]",
    log_facility: "Union[int, str, None]",
    max_errors: int,
    fast_exit: bool,
    pool_size: int = DEFAULT_POOL_SIZE,
) -> Options:
    """Check and normalise the options; TypeError or ValueError if wrong."""
    if max_servers is None:
        max_servers = default_max_servers()
    if not _is_int(max_servers):
        raise TypeError(f"max_servers must be an int, not {max_servers!r}")
    if max_servers == 0:
        raise ValueError("max_servers must be positive (or negative for no limit), not 0")
    if idle_timeout is not None:
        if not (_is_int(idle_timeout) or isinstance(idle_timeout, float)):
            raise TypeError(f"idle_timeout must be a number of seconds or None, not {idle_timeout!r}")
        if idle_timeout < 0:
            idle_timeout = None
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
        idle_timeout=None if idle_timeout is None else float(idle_timeout),
        autoreload=bool(autoreload),
        autoreload_extra=tuple(os.path.abspath(os.fspath(path)) for path in autoreload_extra),
        log_facility=resolve_facility(log_facility),
        max_errors=max_errors,
        fast_exit=bool(fast_exit),
        pool_size=pool_size,
    )
