"""The setup process: check the fds the client passed, fork the server, and
then either exit (the client makes the first call to the server) or, when
the client announced ``inplace1``, run the first call here (protocol.md
sections 1 and 7).

This is the cold path: what runs here before the script goes on is the
whole cost of a cold call over a direct run.  So it imports only C-level
modules and the first call's handshake code (before the fork: pages a
process writes after a fork are copied, one page fault each); the server's
own modules are imported by the server, after the fork.  The server forked
beside a first call run in place waits before it imports them (see
:data:`START_DELAY`), so that its start does not compete with that call
for the CPUs.
"""

import os

import _socket

from ._errors import PreforkError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable, Iterable, Optional

    from ._intake import Call
    from ._log import Log
    from ._options import Options
    from ._protocol import SetupInfo

#: Shown in the messages about the fds (as ``_protocol.ENV_NAME``).
_ENV_NAME = "PREFORK_INTERP"

#: Seconds a server forked beside a first call run in place waits before it
#: starts (imports its modules, forks its spares), unless a caller connects
#: first.  Its start takes tens of milliseconds of CPU, which on a small
#: machine would otherwise be taken from the first call; a short first call
#: is over by then, and a caller that comes sooner is not kept waiting.
START_DELAY = 0.1


def _check_socket(fd: int, what: str, listening: bool) -> None:
    """``fd`` must be an open Unix stream socket (listening, for LISTEN)."""
    try:
        sock = _socket.socket(fileno=fd)
    except OSError as e:
        raise PreforkError(f"{_ENV_NAME}: {what} fd {fd}: {e.strerror}") from None
    try:
        if sock.family != _socket.AF_UNIX or sock.type != _socket.SOCK_STREAM:
            raise PreforkError(f"{_ENV_NAME}: {what} fd {fd} is not a Unix stream socket")
        if listening and not sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_ACCEPTCONN):
            raise PreforkError(f"{_ENV_NAME}: {what} fd {fd} is not listening")
    finally:
        sock.detach()


def _check_open(fd: int, what: str) -> None:
    try:
        os.fstat(fd)
    except OSError as e:
        raise PreforkError(f"{_ENV_NAME}: {what} fd {fd}: {e.strerror}") from None


def start(
    setup: "SetupInfo",
    opts: "Options",
    extra_files: "Iterable[str]",
    log: "Log",
    warm_up: "Optional[Callable[[], None]]" = None,
) -> "Call":
    """Fork the server.  Returns only with a call to run in this process:
    the first call, in place, or (in the server) a later one in an
    executor.  ``warm_up``: what each spare runs while it waits
    (``_executors``).

    On entry: the setup process, single-threaded, with the fds named in
    ``setup``.  Problems with those fds raise :class:`PreforkError` here,
    in the setup process; after the fork, the setup process either exits 0
    or takes the first call in, and every process but an executor ends in
    ``os._exit``.
    """
    _check_socket(setup.listen_fd, "LISTEN", listening=True)
    _check_socket(setup.call_fd, "CALL", listening=False)
    _check_open(setup.watchi_fd, "WATCHI")
    _check_open(setup.watche_fd, "WATCHE")
    from ._proc import fork, load_libc, redirect_stdio_to_devnull

    if setup.in_place:
        from ._intake import take_in_place
    setup_pid = os.getpid()
    child = fork()
    if child == 0:
        if setup.in_place:
            # A grandchild is the server, so that the first call, which
            # goes on in this process, has no child of ours to see (its
            # SIGCHLD, a wait() reaping it) and no zombie if the server
            # quits first.  The child in between exits at once.
            if fork() != 0:
                os._exit(0)
            os.close(setup.call_fd)  # the setup process takes the first call
        # The server.  It leaves the caller's session and process group at
        # once: a ^C, or a kill(2) to the group, meant for the first call
        # (running in place meanwhile, or about to be served) must not
        # reach it while it imports its modules.
        try:
            os.setsid()
        except OSError:
            os._exit(127)
        if setup.in_place:
            # Our stderr is the first caller's, which the call running in
            # place is using, and which must not wait for us to close it,
            # nor get our start-up messages, maybe after that call has
            # ended: those go to the log (the server would detach once
            # started anyway).  Without inplace1 the client is waiting
            # for us, and a failed start is said on its stderr.
            log.to_stderr = False
            redirect_stdio_to_devnull()
            _wait_to_start(setup.listen_fd)
        from ._server import serve

        load_libc()  # once here, not in every executor (die_with_parent)

        if setup.in_place:
            return serve(setup, opts, extra_files, log, first=False, in_place=setup_pid, warm_up=warm_up)
        return serve(setup, opts, extra_files, log, first=True, warm_up=warm_up)
    if not setup.in_place:
        # The client waits for this exit, then for the greeting on CALL.
        os._exit(0)
    for fd in (setup.listen_fd, setup.watchi_fd, setup.watche_fd):
        os.close(fd)
    call = take_in_place(_socket.socket(fileno=setup.call_fd), log, opts.request_timeout)
    # The child in between has exited by now (it only forked): reap it.
    os.waitpid(child, 0)
    return call


def _wait_to_start(listen_fd: int) -> None:
    """In the server forked beside a first call run in place: wait until a
    caller connects on ``listen_fd`` or :data:`START_DELAY` has passed."""
    import select

    poller = select.poll()
    poller.register(listen_fd, select.POLLIN)
    try:
        poller.poll(START_DELAY * 1000)
    except OSError:
        pass  # start now, then
