"""The server: daemonise, take calls in, and fork a monitor for each.

Upstream design part 3 ("Library should do the following"), in order:
fork and let the setup process exit, ``setsid``, point stdio at
``/dev/null`` and log to syslog (or a log file, ``_log``) from then on, take the first call's CALL
socket in as if it had just been accepted, then loop (:meth:`_Server.loop`),
one ``poll`` over the watcher, the SIGCHLD wake-up pipe, the listening
socket and every connection held (``_intake``, protocol.md section 4.1):

- reap monitors; at most ``max_servers`` run at once, and complete calls
  beyond that wait in the server, first come first served, until one exits
  (callers wait, they never fail);
- quit after ``idle_timeout`` seconds with no call held or running;
- quit on EOF from WATCHE (the socket was removed or replaced) or on a
  message from the watcher (an error);
- when a caller connects: quit without answering if any file the program
  depends on changed since the server started (``_reload``: the caller
  then starts a fresh server), else accept it and hand it to the intake
  (peer check, greeting, handshake read as it arrives, limits);
- fork a monitor for each complete call as slots free;
- count accept and fork failures, and quit after more than ``max_errors``
  in a row.

Quitting closes LISTEN and the watcher fds at once (new callers start a new
server), then still serves every call already held: the complete calls
waiting for a slot, and the handshakes under way, which keep the rest of
their request timeout to finish (a caller already greeted cannot tell a
dropped handshake from a server dying under its call, so it would fail).
Monitors are forked for them as slots free, ``max_servers`` still holding;
when nothing is held any more, the server waits for every monitor, so none
is left to an init that may never reap it, and exits.  Only after more than
``max_errors`` failures in a row (or a failing ``poll``) is everything held
dropped at once.
"""

from __future__ import annotations

__all__ = ["serve"]

import gc
import os
import select
import socket
import time
from typing import Callable, Iterable, List, Optional

from ._intake import Call, Intake
from ._log import Log
from ._executors import Executors
from ._listing import ServerRecord
from ._options import Options
from ._proc import ChildWakeup, close_quietly, fork, process_title, redirect_stdio_to_devnull, set_cmdline
from ._protocol import SetupInfo
from ._reload import Watch
from ._reload import files as reload_files

#: In an executor, the server's state, never freed (see ``serve``).
_KEPT: "List[object]" = []


class _Quit(Exception):
    """Leave the server loop: log ``message`` and exit with ``code``.

    ``drop_held``: drop every call held (handshaking or waiting for a slot)
    at once instead of serving it (too many failures in a row: forking more
    monitors is not going to work)."""

    def __init__(self, code: int, message: str, drop_held: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.drop_held = drop_held


# ---------------------------------------------------------------------------
# The server loop


def _pidfd(pid: int) -> Optional[int]:
    """A pidfd of ``pid``, or None if it has gone (or pidfds are missing:
    then the first call run in place does not hold the idle timeout)."""
    try:
        return os.pidfd_open(pid)
    except (OSError, AttributeError):
        return None


class _Server:
    """State of a running server (the daemon)."""

    def __init__(
        self,
        setup: SetupInfo,
        opts: Options,
        log: Log,
        listen: socket.socket,
        watch: Watch,
        in_place: Optional[int],
        warm_up: "Optional[Callable[[], None]]",
    ) -> None:
        self.setup = setup
        self.opts = opts
        self.log = log
        self.listen = listen
        self.watch = watch
        self.wakeup = ChildWakeup()
        self.intake = Intake(log, opts.request_timeout)
        self.executors = Executors(opts.pool_size, log, self.release_for_child, warm_up)
        self.errors = 0
        self.idle_since = time.monotonic()
        #: A pidfd of the setup process while it runs the first call in
        #: place: that call counts as running, for the idle timeout.
        self.first_call = _pidfd(in_place) if in_place is not None else None
        #: Our line in the server record (``--list``), if the client made one.
        self.record: Optional[ServerRecord] = None
        if setup.record_path is not None:
            self.record = ServerRecord.open(setup.record_path, in_place is not None, self.first_call is not None, log)
            # Each error or warning logged from now on is the record's last
            # error too (not in spares: release_for_child closes it).
            log.record = self.record
        #: Why the server is quitting, once it is: it then takes no new
        #: connection and ends when the calls it holds (complete, or still
        #: handshaking within their request timeout) have been served.
        self.quitting: Optional[_Quit] = None
        self.watcher_open = True
        listen.setblocking(False)
        os.set_blocking(setup.watche_fd, False)

    def _first_call_over(self) -> None:
        """Forget the first call run in place once it has ended."""
        if self.first_call is not None and select.select([self.first_call], [], [], 0)[0]:
            close_quietly((self.first_call,))
            self.first_call = None
            if self.record is not None:
                self.record.ended()

    def _close_watcher_fds(self) -> None:
        if self.watcher_open:
            self.watcher_open = False
            close_quietly((self.setup.watchi_fd, self.setup.watche_fd))

    def release_for_child(self) -> None:
        """In a new spare executor: close what only the server needs
        (LISTEN, WATCHI, WATCHE, the wake-up pipe, the inotify fd and every
        connection held; upstream part 4 step 1)."""
        self.wakeup.close()
        self.watch.close()
        self.listen.close()
        self._close_watcher_fds()
        self.intake.close_all()
        close_quietly((self.first_call,))
        if self.record is not None:
            self.record.close()

    def _start_waiting_calls(self) -> Optional[Call]:
        """Hand waiting calls to executors while slots are free.  Returns
        only in an executor, with its call."""
        while (
            self.intake.waiting
            and not (0 <= self.opts.max_servers <= len(self.executors))
            and self.executors.can_start()
        ):
            call = self.intake.next_call()
            assert call is not None
            try:
                executor_call = self.executors.start(call)
            except OSError as e:
                call.close()
                self._count_error(f"starting a call: {e}")
                continue
            if executor_call is not None:
                return executor_call
            self.errors = 0
            if self.record is not None:
                self.record.started()
        return None

    def _count_error(self, message: str) -> None:
        self.errors += 1
        self.log.warning(message)
        if 0 <= self.opts.max_errors < self.errors:
            raise _Quit(127, f"{self.errors} errors in a row, quitting (last: {message})", drop_held=True)

    def _reap(self, block: bool) -> None:
        """Collect executors' stops and deaths (``block``: wait until every
        child has ended)."""
        flags = 0 if block else os.WNOHANG | os.WUNTRACED
        running = len(self.executors)
        try:
            self._reap_children(flags)
        finally:
            if self.record is not None:
                self.record.ended(running - len(self.executors))

    def _reap_children(self, flags: int) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, flags)
            except ChildProcessError:
                break
            if pid == 0:
                break
            if not self.executors.child_changed(pid, status):
                self.log.warning(f"reaped process [{pid}], which was not one of our executors")

    def _watcher_says(self) -> None:
        try:
            data = os.read(self.setup.watche_fd, 2048)
        except BlockingIOError:
            return
        except OSError as e:
            raise _Quit(127, f"reading from the watcher: {e}") from None
        if not data:
            raise _Quit(0, "socket removed or replaced (fresh server or cleanup), quitting")
        raise _Quit(127, f"watcher: {data.decode(errors='replace').strip()}")

    def _accept(self) -> None:
        """The listening socket polled readable: take a connection in."""
        change = self.watch.changed()
        if change is not None:
            raise _Quit(0, f"reloading: {change}, quitting")
        try:
            conn, _ = self.listen.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return  # nothing to accept after all, or the caller gave up
        except OSError as e:
            self._count_error(f"accept: {e}")
            return
        self.intake.take(conn)

    def _stop_taking_calls(self) -> None:
        """Close LISTEN and the watcher fds: new callers start a new server
        (the connections held are kept)."""
        self.listen.close()
        self._close_watcher_fds()

    def _quit(self, reason: _Quit) -> None:
        """Stop taking calls.  The calls held are still served: the complete
        ones, and the handshakes under way if they finish within their
        request timeout (the loop ends after them), unless ``reason`` says
        to drop them all."""
        if self.quitting is None:
            self.quitting = reason
        elif reason.drop_held and not self.quitting.drop_held:
            # Already quitting, and now failing too: that is the end.
            self.log.info(str(self.quitting))
            self.quitting = reason
        self._stop_taking_calls()
        self.executors.close_spares()
        if reason.drop_held:
            self.intake.close_all()

    def _poll_set(self) -> "select.poll":
        poller = select.poll()
        poller.register(self.wakeup.fd, select.POLLIN)
        if self.quitting is None:
            poller.register(self.setup.watche_fd, select.POLLIN)
            if self.intake.can_take():
                poller.register(self.listen, select.POLLIN)
        self.intake.register(poller)
        self.executors.register(poller)
        if self.first_call is not None:
            poller.register(self.first_call, select.POLLIN)
        return poller

    def _timeout_ms(self, now: float, next_deadline: Optional[float]) -> Optional[int]:
        """How long to sleep: until the next deadline (a handshake's, the
        pool's fill), or (not quitting, with nothing held or running) the
        idle timeout.  Raises _Quit once idle for ``idle_timeout``."""
        wake_at = next_deadline
        idle = self.quitting is None and not self.executors and not self.intake and self.first_call is None
        if idle and self.opts.idle_timeout is not None:
            idle_end = self.idle_since + self.opts.idle_timeout
            if idle_end <= now:
                raise _Quit(0, "idle timeout, quitting")
            wake_at = idle_end if wake_at is None else min(wake_at, idle_end)
        if wake_at is None:
            return None
        return max(0, int((wake_at - now) * 1000) + 1)

    def loop(self) -> Call:
        """Serve calls until told to quit (raises _Quit once the calls held
        are served or dropped).  Returns only in an executor, with its call."""
        while True:
            # Busy now (checked before reaping, so a call that ends while we
            # sleep counts as busy up to its end): the idle time starts later.
            if self.executors or self.intake or self.first_call is not None:
                self.idle_since = time.monotonic()
            self._reap(block=False)
            self._first_call_over()
            try:
                executor_call = self._start_waiting_calls()
                now = time.monotonic()
                fill_wait = None if self.quitting is not None else self.executors.fill_wait(now)
                if executor_call is None and fill_wait == 0:
                    executor_call = self.executors.fill()
                    fill_wait = None
                if executor_call is not None:
                    return executor_call
                next_deadline = self.intake.expire(now)
                if self.quitting is not None and not self.executors and not self.intake:
                    raise self.quitting
                if fill_wait is not None:
                    fill_at = now + fill_wait
                    next_deadline = fill_at if next_deadline is None else min(next_deadline, fill_at)
                timeout_ms = self._timeout_ms(now, next_deadline)
                for fd, events in self._poll_set().poll(timeout_ms):
                    if fd == self.wakeup.fd:
                        self.wakeup.drain()
                    elif self.executors.handle(fd) or fd == self.first_call:
                        pass  # (the first call's end: seen at the loop's top)
                    elif self.quitting is not None:
                        self.intake.handle(fd, events)
                    elif fd == self.setup.watche_fd:
                        self._watcher_says()
                    elif fd == self.listen.fileno():
                        self._accept()
                    else:
                        self.intake.handle(fd, events)
            except _Quit as q:
                if self.quitting is not None and q is self.quitting:
                    raise
                self._quit(q)

    def shutdown(self) -> None:
        """Stop taking calls, drop whatever is held, then wait for the
        running calls."""
        self._stop_taking_calls()
        self.executors.close_spares()
        self.intake.close_all()
        self._reap(block=True)


def serve(
    setup: SetupInfo,
    opts: Options,
    extra_files: Iterable[str],
    log: Log,
    first: bool,
    in_place: Optional[int] = None,
    warm_up: "Optional[Callable[[], None]]" = None,
) -> Call:
    """Be the server.  Returns only in an executor, with its call.

    On entry: the fork child (or, with ``inplace1``, grandchild) of the
    setup process (``_setup``), already the leader of a new session
    (``setsid``), with the fds named in ``setup``, checked; ``first``: CALL
    is the first call's, to take in (without ``inplace1``; with it, CALL is
    closed already; ``in_place`` is then the pid of the setup process,
    which runs it).  Every way out but an executor's return ends in
    ``os._exit``.
    """
    # Our command line is the first caller's, arguments and all: show what
    # we are instead, for our whole life (and our spares').
    set_cmdline(process_title("server"))
    listen = socket.socket(fileno=setup.listen_fd)
    server_pid = os.getpid()
    code = 127
    server: Optional[_Server] = None
    try:
        watch, no_inotify = Watch.start(reload_files(opts.autoreload, extra_files), setup.stamp_ns)
        server = _Server(setup, opts, log, listen, watch, in_place, warm_up)
        # Without inplace1, the first call is taken in like an accepted one.
        if first:
            server.intake.take(socket.socket(fileno=setup.call_fd))
        log.to_stderr = False
        redirect_stdio_to_devnull()
        if no_inotify is not None:
            n = len(watch.paths)
            log.warning(f"cannot watch files with inotify ({no_inotify}): every call re-stats the {n} files checked for reload")
        # Collect the set-up's garbage once here rather than in every
        # executor.  (No gc.freeze(): frozen objects are never collected, so
        # cycles through module globals would no longer be finalized at a
        # normal exit, nor freed when a long call drops them.)
        gc.collect()
        call = server.loop()
        # In an executor: the server's state (the reload watch with its
        # lists of files, the intake, the spares...) stays allocated, as
        # it is in the server.  Freed here, its objects' pages would be
        # copied from the server (reference counts are written) on the
        # call's path: with boto3 loaded, hundreds of page faults.
        _KEPT.append(server)
        return call
    except _Quit as q:
        code = q.code
        if code == 0:
            log.info(str(q))
        else:
            log.error(str(q))
    except BaseException as e:
        log.error(f"server: {type(e).__name__}: {e}")
    finally:
        if os.getpid() == server_pid:
            try:
                if server is not None:
                    server.shutdown()
            except BaseException as e:
                log.error(f"server: waiting for calls in progress: {type(e).__name__}: {e}")
            finally:
                os._exit(code)
    raise AssertionError("not reached: the server exits in the finally clause")
