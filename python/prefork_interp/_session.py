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

Imported only for pty calls (never on the cold path).
"""

from __future__ import annotations

__all__ = ["EXECUTOR", "EXITED", "REPORT", "STOPPED", "decode_reports", "lead"]

import fcntl
import gc
import os
import signal
import socket
import struct
import termios
from typing import List, Tuple

from ._proc import die_with_parent, fork, process_title, set_cmdline

#: One report: kind, value (u32 big-endian each).
REPORT = struct.Struct(">II")

#: Report kinds: the executor's pid, a stop (its signal), the end (the raw
#: wait status; last).
EXECUTOR, STOPPED, EXITED = 1, 2, 3


def decode_reports(buf: bytes) -> "Tuple[List[Tuple[int, int]], bytes]":
    """The whole reports in ``buf`` (kind, value; an unknown kind skipped),
    and the bytes left over (part of the next report)."""
    whole = len(buf) - len(buf) % REPORT.size
    reports = [
        (kind, value)
        for kind, value in REPORT.iter_unpack(buf[:whole])
        if kind in (STOPPED, EXITED) or (kind == EXECUTOR and 0 < value < 1 << 31)
    ]
    return reports, buf[whole:]


def lead(ctl: socket.socket, slave: int) -> None:
    """In a spare handed a call on a pty: lead a new session with ``slave``
    as its controlling terminal and fork the executor.  Returns in the
    executor only, which is then in a group of its own, the pty's
    foreground group, with every signal blocked; the leader reports over
    ``ctl`` and ends in ``os._exit``.  Raises OSError on failure (before the
    fork, or in the executor)."""
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
    pid = fork()
    if pid == 0:
        die_with_parent(leader)
        os.setpgid(0, 0)
        # We are not in the foreground yet: SIGTTOU is blocked (every
        # signal is, until the script's mask is set), so this works.
        os.tcsetpgrp(slave, os.getpgrp())
        return
    try:
        _supervise(ctl, pid)
    finally:
        os._exit(127)


def _report(ctl: socket.socket, kind: int, value: int) -> None:
    try:
        ctl.sendall(REPORT.pack(kind, value & 0xFFFFFFFF), socket.MSG_NOSIGNAL)
    except OSError:
        pass  # the server gone, we are killed with it (PR_SET_PDEATHSIG)


def _supervise(ctl: socket.socket, executor: int) -> None:
    """The leader's life: report the executor, its stops and its end."""
    # Nothing of the script's or the server's runs here (no finalizer).
    gc.disable()
    # The executor does the same; whichever runs first wins.
    try:
        os.setpgid(executor, executor)
    except OSError:
        pass
    # Every fd but the control socket and 0-2 (/dev/null, the server's):
    # the slave above all, so the client sees EIO once the executor and
    # what it started have closed theirs.
    keep = ctl.fileno()
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd > 2 and fd != keep:
            try:
                os.close(fd)
            except OSError:
                pass  # the fd listdir read the directory with
    _report(ctl, EXECUTOR, executor)
    while True:
        try:
            _, status = os.waitpid(executor, os.WUNTRACED)
        except ChildProcessError:
            os._exit(127)
        if os.WIFSTOPPED(status):
            _report(ctl, STOPPED, os.WSTOPSIG(status))
        else:
            _report(ctl, EXITED, status)
            os._exit(0)
