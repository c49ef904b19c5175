"""A call on a pty (extension pty1, protocol.md section 9.3): the spare
handed the call becomes the **leader** of a new session whose controlling
terminal is the client's pty, and forks the **executor** into a process
group of its own in that session, the pty's foreground group.

Why two processes: a process group is *orphaned* when no member has a
parent in the same session but another group, and Linux discards ^Z,
background reads and writes (SIGTSTP, SIGTTIN, SIGTTOU) sent to an
orphaned group.  An executor leading its own session, its parent the
server in another session, would be orphaned: ^Z would stop nothing.  With
the leader as its parent, in its session, the executor's group stops as a
direct run's job does::

  server ── spare's control socket ──► leader (session leader, the pty its
    │          ◄── reports:              controlling terminal; every signal
    │              executor pid,         blocked, every fd closed but the
    │              stops, wait status    control socket)
    │                                        │ fork, waitpid(WUNTRACED)
    └── SIGP / SIGG, to the executor ──►  executor (own group, the pty's
                                          foreground; returns into the script)

The server reaps the leader; the executor's pid, stops and raw wait status
come in reports, 8 bytes each: a kind (:data:`EXECUTOR`, :data:`STOPPED`,
:data:`EXITED`) and a value, u32 big-endian (the same as the Rust
server's).  The status is the kernel's, from the leader's ``waitpid``.

The other way, the server passes on where the client's job is (frame
``FGND``, as a :data:`FOREGROUND` record: 1 the foreground, 0 the
background of the caller's terminal), and the leader mirrors it onto the
pty (protocol.md section 9.3 step 5): in the background its own group
takes the pty's foreground, so the kernel stops the executor's group when
it reads the pty (SIGTTIN), as a background job; in the foreground the
group it displaced gets it back.  It then answers with the same record,
and the server holds the call's signals until it has: a SIGCONT that
follows ``FGND 1`` finds the executor in front of the pty.

Imported only for pty calls (never on the cold path).
"""

from __future__ import annotations

__all__ = ["EXECUTOR", "EXITED", "FOREGROUND", "REPORT", "STOPPED", "decode_reports", "lead"]

import fcntl
import gc
import os
import select
import signal
import socket
import struct
import termios
from types import FrameType
from typing import List, Optional, Tuple

from ._proc import die_with_parent, fork, process_title, set_cmdline

#: One report: kind, value (u32 big-endian each).
REPORT = struct.Struct(">II")

#: Report kinds: the executor's pid, a stop (its signal), the end (the raw
#: wait status; last).
EXECUTOR, STOPPED, EXITED = 1, 2, 3

#: Both ways: from the server, the client's job is now in the foreground
#: (1) or the background (0) of the caller's terminal (``FGND``); from the
#: leader, the same value: done.
FOREGROUND = 4


def decode_reports(buf: bytes) -> "Tuple[List[Tuple[int, int]], bytes]":
    """The whole reports in ``buf`` (kind, value; an unknown kind skipped),
    and the bytes left over (part of the next report)."""
    whole = len(buf) - len(buf) % REPORT.size
    reports = [
        (kind, value)
        for kind, value in REPORT.iter_unpack(buf[:whole])
        if kind in (STOPPED, EXITED)
        or (kind == EXECUTOR and 0 < value < 1 << 31)
        or (kind == FOREGROUND and value in (0, 1))
    ]
    return reports, buf[whole:]


def lead(ctl: socket.socket, slave: int, background: bool = False) -> None:
    """In a spare handed a call on a pty: lead a new session with ``slave``
    as its controlling terminal and fork the executor.  Returns in the
    executor only, which is then in a group of its own, the pty's
    foreground group unless ``background`` (``ptybg=1``: the client
    started in the background; the leader's group stays in front), with
    every signal blocked; the leader reports over ``ctl`` and ends in
    ``os._exit``.  Raises OSError on failure (before the fork, or in the
    executor)."""
    # The pty's hang-up at the end (and anything else) must not end the
    # leader before the executor: it stays blocked for the leader's life.
    signal.pthread_sigmask(signal.SIG_SETMASK, signal.valid_signals())
    # Not a group leader (the server made it none), so this works.
    os.setsid()
    # 0: do not steal a terminal another session has.
    fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
    # Before the fork: the title is there before the executor runs (which
    # then shows the call's command line, as a direct run would).
    set_cmdline(process_title("session"))
    leader = os.getpid()
    # Closed by the executor once it has taken the pty's foreground (or
    # not, in the background): until then the leader moves nothing, so an
    # early FGND 0 cannot be undone by the executor's tcsetpgrp.
    settled_r, settled_w = os.pipe()
    pid = fork()
    if pid == 0:
        os.close(settled_r)
        die_with_parent(leader)
        os.setpgid(0, 0)
        if not background:
            # We are not in the foreground yet: SIGTTOU is blocked (every
            # signal is, until the script's mask is set), so this works.
            os.tcsetpgrp(slave, os.getpgrp())
        os.close(settled_w)
        return
    try:
        _supervise(ctl, pid, settled_r)
    finally:
        os._exit(127)


def _report(ctl: socket.socket, kind: int, value: int) -> None:
    try:
        ctl.sendall(REPORT.pack(kind, value & 0xFFFFFFFF), socket.MSG_NOSIGNAL)
    except OSError:
        pass  # the server gone, we are killed with it (PR_SET_PDEATHSIG)


def _supervise(ctl: socket.socket, executor: int, settled: int) -> None:
    """The leader's life: report the executor, its stops and its end, and
    mirror the client's job onto the pty as the server passes it on.
    ``settled`` reaches EOF once the executor has taken its place on the
    pty (or died)."""
    # Nothing of the script's or the server's runs here (no finalizer).
    gc.disable()
    # The executor does the same; whichever runs first wins.
    try:
        os.setpgid(executor, executor)
    except OSError:
        pass
    # Every fd but the control socket, ``settled`` and 0-2 (/dev/null, the
    # server's): the slave above all, so the client sees EIO once the
    # executor and what it started have closed theirs.
    keep = (ctl.fileno(), settled)
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd > 2 and fd not in keep:
            try:
                os.close(fd)
            except OSError:
                pass  # the fd listdir read the directory with
    _report(ctl, EXECUTOR, executor)
    # The executor's changes wake the select below: SIGCHLD, the only
    # signal unblocked, writes to ``wakeup`` (its handler does nothing).
    wakeup, wakeup_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.signal(signal.SIGCHLD, _no_op)
    signal.set_wakeup_fd(wakeup_w, warn_on_full_buffer=False)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGCHLD})
    pty = _Foreground(executor)
    told = b""
    listening = True
    while True:
        # What changed (also before the first wait: nothing is missed).
        _check_executor(ctl, executor)
        watched = [wakeup]
        if settled >= 0:
            watched.append(settled)
        elif listening:
            watched.append(ctl.fileno())
        ready = select.select(watched, [], [])[0]
        if wakeup in ready:
            _drain(wakeup)
        if settled in ready:
            os.close(settled)  # EOF: the executor is in place (or gone)
            settled = -1
        elif ctl.fileno() in ready:
            try:
                chunk = ctl.recv(4096)
            except OSError:
                chunk = b""
            if not chunk:
                listening = False  # the server gone: we die with it
                continue
            whole = len(told + chunk) - len(told + chunk) % REPORT.size
            records, told = (told + chunk)[:whole], (told + chunk)[whole:]
            for kind, value in REPORT.iter_unpack(records):
                if kind == FOREGROUND and value in (0, 1):
                    pty.mirror(value == 1)
                    _report(ctl, FOREGROUND, value)


def _no_op(signum: int, frame: "Optional[FrameType]") -> None:
    """SIGCHLD's handler in the leader: the wakeup fd does the work."""


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 512):
            pass
    except BlockingIOError:
        pass


def _check_executor(ctl: socket.socket, executor: int) -> None:
    """Report each change of the executor's: its stops; its end, after
    which the leader exits."""
    while True:
        try:
            pid, status = os.waitpid(executor, os.WNOHANG | os.WUNTRACED)
        except ChildProcessError:
            os._exit(127)
        if pid == 0:
            return
        if os.WIFSTOPPED(status):
            _report(ctl, STOPPED, os.WSTOPSIG(status))
        else:
            _report(ctl, EXITED, status)
            os._exit(0)


class _Foreground:
    """The leader's side of protocol.md section 9.3 step 5: the pty's
    foreground follows the client's job.  SIGTTOU stays blocked in the
    leader, so no ``tcsetpgrp`` stops it."""

    def __init__(self, executor: int) -> None:
        self.executor = executor
        #: The pty's foreground group when the client went to the
        #: background (the executor's, or a job of the script's own).
        self.remembered: Optional[int] = None

    def mirror(self, front: bool) -> None:
        """The client is now in the foreground (``front``) or the
        background: the executor's group (or the job the script had put
        there) in front of the pty, or ours."""
        try:
            # The leader's controlling terminal, the pty; opened for each
            # change only, so nothing of ours holds it open.
            tty = os.open("/dev/tty", os.O_RDWR | os.O_CLOEXEC)
        except OSError:
            return  # hung up: nothing to mirror onto
        try:
            ours = os.getpgrp()
            now = os.tcgetpgrp(tty)
            if not front:
                if now != ours:
                    self.remembered = now
                    os.tcsetpgrp(tty, ours)
            elif now == ours:
                # Not otherwise: the script has taken it (SIGTTOU blocked)
                # or this repeats the last FGND 1; its choice stands.
                to, self.remembered = self.remembered, None
                try:
                    os.tcsetpgrp(tty, self.executor if to is None else to)
                except OSError:
                    if to is None:
                        raise
                    os.tcsetpgrp(tty, self.executor)  # that group is gone
        except OSError:
            pass  # the executor's group gone too: it is ending
        finally:
            os.close(tty)
