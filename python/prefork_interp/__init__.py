"""Script-side library for prefork-interp: pay a Python script's start-up once.

A script run through ``prefork-interp`` does its slow initialisation
(imports, loading data), then calls :func:`initialisation_complete`::

    #!/usr/bin/prefork-interp -U,python3
    import boto3                       # runs once, in the server
    import prefork_interp
    prefork_interp.initialisation_complete()
    ...                                # runs once per call

The first call forks the server and, with our client, then runs itself in
this very process (protocol.md section 7); every later call is served by a
fork of the server made ahead of time, which returns from
:func:`initialisation_complete` with the caller's arguments, environment and
stdio, and whose exit status becomes the caller's.  Run directly (without
prefork-interp), the script runs standalone: the call returns at once.

Modules: ``_protocol`` (wire format), ``_setup`` (fork the server; with our
client, take the first call in place), ``_server`` (daemon and poll loop),
``_intake`` (connections until they run: peer check, handshakes, limits),
``_reload`` (which files changed since the server started), ``_executors``
(spares forked ahead of calls, the watch over running calls), ``_executor``
(the caller's process context), ``_fastexit`` (exit without finalization),
``_log``, ``_proc``, ``_record`` (value classes).  What the setup process
runs before returning into the script, the first call's cold path, imports
only C-level modules.
"""

__all__ = [
    "PreforkError",
    "autoreload_also_check",
    "initialisation_complete",
]

__version__ = "0.1.0"

# Only light imports here: a script run standalone imports this package
# too, and pays for every module it pulls in.  The server's modules are
# imported when PREFORK_INTERP says there is a server to be.
import os
import sys
import syslog

import _thread

from ._errors import PreforkError
from ._options import DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_ERRORS, DEFAULT_POOL_SIZE, DEFAULT_REQUEST_TIMEOUT, make_options

TYPE_CHECKING = False  # not typing's: importing typing costs a standalone run
if TYPE_CHECKING:
    from typing import Iterable, List, Optional, Union

#: Environment variable of protocol v1 (also in ``_protocol``).
_ENV_NAME = "PREFORK_INTERP"

#: Paths given to autoreload_also_check() so far.
_extra_files: "List[str]" = []

#: Set once initialisation_complete() has returned in this process (an
#: executor): a second call is a no-op, as when run standalone.
_completed = False


def autoreload_also_check(*paths: "Union[str, os.PathLike[str]]") -> None:
    """Also reload the server when any of ``paths`` changes.

    A path that does not exist is not an error: it appearing is a change,
    as is it disappearing, or the error ``stat`` gives on it (permission
    denied, say) changing.  Relative paths are taken relative to the current
    directory now.  Only paths given before :func:`initialisation_complete`
    have an effect.
    """
    for path in paths:
        _extra_files.append(os.path.abspath(os.fspath(path)))


def _check_threads() -> None:
    """Raise RuntimeError unless this is the main thread and no other thread
    started with ``threading`` is running: ``fork`` copies only this one."""
    if "threading" not in sys.modules:
        # No threading.Thread can have been started, and importing threading
        # costs a cold call.  The main thread is the one whose id is the
        # process's (Linux).
        if _thread.get_native_id() != os.getpid():
            raise RuntimeError("initialisation_complete() must be called from the main thread")
        return
    import threading

    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError("initialisation_complete() must be called from the main thread")
    others = [t.name for t in threading.enumerate() if t is not threading.current_thread()]
    if others:
        raise RuntimeError(
            f"initialisation_complete(): other threads are running ({', '.join(others)});"
            " fork() would copy only this one: start them after initialisation_complete()"
        )


def initialisation_complete(
    *,
    max_servers: "Optional[int]" = None,
    pool_size: int = DEFAULT_POOL_SIZE,
    idle_timeout: "Optional[float]" = DEFAULT_IDLE_TIMEOUT,
    request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
    max_errors: int = DEFAULT_MAX_ERRORS,
    autoreload: bool = True,
    autoreload_extra: "Iterable[Union[str, os.PathLike[str]]]" = (),
    log_facility: "Union[int, str, None]" = syslog.LOG_USER,
    log_file: "Union[str, bytes, os.PathLike[str], os.PathLike[bytes], None]" = None,
    fast_exit: bool = True,
) -> None:
    """Turn this script into a prefork server; return once per call.

    When ``PREFORK_INTERP`` is not set (the script was run directly), checks
    the options and returns at once.  Otherwise it daemonises and returns
    only in executors: once per call, each time in a new process, with
    ``sys.argv == [script, args...]``, ``os.environ`` the caller's,
    ``sys.stdin``/``stdout``/``stderr`` new streams on the caller's fds (as
    the interpreter would make them at start-up for those fds and that
    environment), the script's signal handlers, Python's defaults for the
    signals it left alone (SIGINT raises KeyboardInterrupt; the call gets
    SIGINT when the caller goes away), and, with a client offering the
    protocol extension call1, the caller's umask, resource limits, nice
    value, ignored and blocked signals, other open fds, and the signals
    sent to the caller while the call runs.  With extension pty1 too (our
    client offers it when the caller's terminal is its controlling
    terminal), the call leads a session of its own whose controlling
    terminal is a pseudo-terminal the client relays to the caller's, in
    place of the caller's terminal on those of fds 0-2 that were it:
    ``/dev/tty``, ^C and window changes work as in a direct run (^Z not
    yet: python/README.md, "Limitations").

    Options (the same names, meanings and defaults in the three libraries:
    docs/options.md):

    ``max_servers``
        Calls served at once; more callers are taken in and wait in the
        server, never refused.  Default (None): 8 per CPU this process may
        run on (its affinity), at least 8.  0 or negative: no limit.
    ``pool_size``
        Executors the server forks ahead of calls (default 2), so that no
        fork is on a warm call's critical path; 0: fork each when its call
        comes.  An idle spare costs little memory (its pages are shared
        with the server) and no CPU.
    ``idle_timeout``
        Quit after this many seconds with no call (default 3600, one
        hour).  None or negative: never.
    ``request_timeout``
        Seconds a caller has, from being accepted, to send its whole
        request, or it is dropped (default 5).  0: no limit.
    ``max_errors``
        Quit after more than this many accept or fork failures in a row
        (default 100).  Negative: never.
    ``autoreload``
        Quit on the next call when a loaded module's file changed (default
        True).  The script itself, the interpreter's files and extra paths
        are always checked (``_reload``; python/README.md, "Reloading").
    ``autoreload_extra``
        More paths to check (see :func:`autoreload_also_check`).
    ``log_facility``
        syslog facility for the server's messages: a ``syslog.LOG_*``
        number or name; None or ``""``: no syslog.  Default LOG_USER.
    ``log_file``
        Also write the server's messages to this file (appended; renamed to
        ``FILE.old`` at 1 MiB).  Default: the ``PREFORK_INTERP_LOG``
        environment variable of the run that starts the server, if set.
        Without syslog (off, or no ``/dev/log``) and without a log file,
        messages go to the file ``log`` in the run directory.
    ``fast_exit``
        End each call without interpreter finalization, with the same exit
        status, atexit handlers and flushed stdio (default True).

    Every error or warning the server logs is also kept in its server
    record, for ``prefork-interp --list`` (protocol.md section 8).

    Raises :class:`PreforkError` (in the first call only) if prefork-interp
    set the process up wrongly, and RuntimeError if other threads are
    running: ``fork`` copies only the calling thread.
    """
    global _completed
    raw = os.environb.get(_ENV_NAME.encode())
    opts = make_options(
        max_servers=max_servers,
        pool_size=pool_size,
        idle_timeout=idle_timeout,
        request_timeout=request_timeout,
        max_errors=max_errors,
        autoreload=autoreload,
        autoreload_extra=autoreload_extra,
        log_facility=log_facility,
        log_file=log_file,
        fast_exit=fast_exit,
        # PREFORK_INTERP_LOG counts in the setup run only.
        environ=os.environ if raw is not None and not _completed else None,
    )
    if _completed or raw is None:
        return

    # What follows is the cold path: with our client, the setup process
    # then runs the first call itself, so it imports only C-level modules
    # (the server's are imported in the server, after the fork).
    import __main__

    from ._executor import ScriptState, become_executor, prepare_in_place, warm_up
    from ._log import Log
    from ._protocol import parse_setup_env
    from ._setup import start

    setup = parse_setup_env(raw)
    _check_threads()
    del os.environ[_ENV_NAME]
    state = ScriptState.capture()
    # The run directory's log, for when neither syslog nor a log file
    # takes the server's messages, is beside the server record.
    run_dir = os.fsdecode(os.path.dirname(setup.record_path)) if setup.record_path else None
    log = Log(getattr(__main__, "__file__", None) or "python", opts.log_facility, opts.log_file, run_dir)
    call = start(setup, opts, (*opts.autoreload_extra, *_extra_files), log, lambda: warm_up(state, log))
    # Only executors, and a setup process running the first call, get here.
    _completed = True
    if call.in_place:
        prepare_in_place(call)
    become_executor(call, state, log, opts.fast_exit)
