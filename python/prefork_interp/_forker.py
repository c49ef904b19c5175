"""The forker: a child of the server that forks the server's spares.

Forking costs the process that forks.  The kernel copies its page tables,
and afterwards every page it writes that the child still shares is copied
too, a page fault each.  CPython writes to every object it touches
(reference counts), so a server that forks the replacement spare after
each call then faults again on everything it touches while it takes the
next call in: about 275 faults per call, most of a millisecond on a
virtual machine, on the next call's path.  The server also does nothing
else while the fork runs.

So the server forks once, when it fills its pool for the first time: the
forker, which does nothing but fork spares when the server asks (one byte
per spare on a socketpair) and send each one's pid and control socket back
(``SCM_RIGHTS``).  Its fork and the new spare's start run beside the
server, which does not fault any more once its pages are its own.  A warm
Python call made right after the previous one took 13% less time (hyperfine,
back to back, 4.2-4.6 ms against 4.9-5.5 ms).

A spare must still be the server's child: the server reaps it (a call's
status comes from the kernel), sets its process group and gets its
SIGCHLD.  The forker therefore makes it with ``clone(CLONE_PARENT)``,
which gives the new process the forker's own parent.  CPython's fork hooks
run around it as around ``os.fork`` (``PyOS_BeforeFork``,
``PyOS_AfterFork_Child``/``_Parent``: ``os.register_at_fork`` callbacks,
the runtime's locks and thread states).  glibc's ``fork`` would also run
``pthread_atfork`` handlers and record the child's thread id in its thread
descriptor; the bare system call does neither, which is safe here:

- the forker is an ``os.fork`` of the server, so those handlers ran for it;
  it has one thread, which holds no lock while it clones;
- glibc reads the thread id from the kernel where it matters for a single
  thread (``raise``) from 2.34 on.

Where that cannot be relied on (another C library, an older glibc, an
architecture missing from :data:`_SYS_CLONE`, a Python without
``ctypes.pythonapi``) there is no forker, and the server forks its spares
itself.  If the forker dies or a clone fails, the server does the same from
then on.
"""

from __future__ import annotations

import os
import socket
import struct
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    import ctypes
    from typing import Callable, List, Optional, Tuple, TypeVar

    T = TypeVar("T")

from ._proc import die_with_parent, fork, load_libc, process_title, set_cmdline
from ._protocol import fds_in

#: ``clone`` flag: the child's parent is the caller's parent.
_CLONE_PARENT = 0x00008000

#: SIGCHLD, the signal ``clone``'s low byte names for the child's end
#: (the same number on every architecture in the table below).
_SIGCHLD = 17

#: The number of ``clone`` by machine (``os.uname().machine``).  With no
#: stack, no tls and no thread-id pointers every argument but the flags is
#: 0, so the order of the others, which differs between these, does not
#: matter.
_SYS_CLONE = {"x86_64": 56, "aarch64": 220, "riscv64": 220}

#: glibc from this version on takes the thread id from the kernel in
#: ``raise`` (the only use of it that a single-threaded child can reach).
_GLIBC_MIN = (2, 34)

#: A record from the forker: the new spare's pid, 0 if the clone failed
#: (its control socket rides along as ``SCM_RIGHTS`` otherwise).
_RECORD = struct.Struct("=i")


def _clone_number() -> "Optional[int]":
    """The number of ``clone`` here, or None where the forker is not to be
    used (see the module docstring)."""
    if sys.implementation.name != "cpython" or not sys.platform.startswith("linux"):
        return None
    try:
        name, version = os.confstr("CS_GNU_LIBC_VERSION").split()  # type: ignore[union-attr]
        if name != "glibc" or tuple(int(part) for part in version.split(".")[:2]) < _GLIBC_MIN:
            return None
    except (AttributeError, OSError, ValueError):
        return None
    return _SYS_CLONE.get(os.uname().machine)


def available() -> bool:
    """Whether a forker can be started here."""
    return _clone_number() is not None


def _clone_parent(number: int, syscall: "Callable[..., int]", api: "ctypes.PyDLL") -> int:
    """``clone(CLONE_PARENT | SIGCHLD)`` with CPython's fork hooks around
    it: 0 in the child, its pid in the forker.  Raises OSError."""
    import ctypes

    api.PyOS_BeforeFork()
    pid = syscall(number, _CLONE_PARENT | _SIGCHLD, 0, 0, 0, 0)
    if pid == 0:
        api.PyOS_AfterFork_Child()
        return 0
    err = ctypes.get_errno()
    api.PyOS_AfterFork_Parent()
    if pid < 0:
        raise OSError(err, os.strerror(err))
    return int(pid)


class Forker:
    """The server's side: the forker's pid and the server's end of its
    socket."""

    def __init__(self, pid: int, sock: socket.socket) -> None:
        self.pid = pid
        self.sock = sock

    def request(self, count: int) -> bool:
        """Ask for ``count`` more spares; False if the forker has gone."""
        try:
            self.sock.sendall(b"F" * count)
        except OSError:
            return False
        return True

    def receive(self) -> "Tuple[List[Tuple[int, socket.socket]], int, bool]":
        """What the forker has sent (never blocks): the new spares (pid,
        the server's end of its control socket), how many clones failed,
        and whether the forker has gone (EOF)."""
        spares: "List[Tuple[int, socket.socket]]" = []
        failed = 0
        while True:
            try:
                data, anc, _, _ = self.sock.recvmsg(
                    _RECORD.size, socket.CMSG_SPACE(_RECORD.size), socket.MSG_DONTWAIT | socket.MSG_CMSG_CLOEXEC
                )
            except BlockingIOError:
                return spares, failed, False
            except OSError:
                return spares, failed, True
            fds = fds_in(anc)
            if len(data) < _RECORD.size:
                for fd in fds:
                    os.close(fd)
                return spares, failed, True
            (pid,) = _RECORD.unpack(data)
            if pid > 0 and len(fds) == 1:
                spares.append((pid, socket.socket(fileno=fds[0])))
            else:
                for fd in fds:
                    os.close(fd)
                failed += 1

    def close(self) -> None:
        """The forker sees EOF and exits."""
        self.sock.close()


def start(
    release: "Callable[[], None]", become_spare: "Callable[[int, socket.socket], T]"
) -> "Tuple[Optional[Forker], Optional[T]]":
    """Fork the forker (every signal blocked by the caller, who restores
    its mask in the server).  In the server: (the forker, None).  In a
    spare the forker has made, once it has a call: (None, what
    ``become_spare(server_pid, control_socket)`` returned).  The forker
    itself never returns.  Raises OSError if the fork fails."""
    number = _clone_number()
    assert number is not None
    server = os.getpid()
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        pid = fork()
    except BaseException:
        ours.close()
        theirs.close()
        raise
    if pid:
        theirs.close()
        return Forker(pid, ours), None
    try:
        ours.close()
        release()
        die_with_parent(server)
        set_cmdline(process_title("forker"))
        return None, _serve(number, theirs, server, become_spare)
    except BaseException:
        os._exit(127)


def _serve(number: int, sock: socket.socket, server: int, become_spare: "Callable[[int, socket.socket], T]") -> "T":
    """The forker's loop (every signal blocked): a spare per byte read,
    until EOF (the server is quitting: exit 0).  Returns only in a spare."""
    import ctypes

    # A function pointer of our own: its types are not the C library's
    # shared one's to change.
    syscall = ctypes.CFUNCTYPE(ctypes.c_long, *[ctypes.c_long] * 6, use_errno=True)(("syscall", load_libc()))
    api = ctypes.pythonapi
    while True:
        requests = sock.recv(256)
        if not requests:
            os._exit(0)
        for _ in requests:
            ctl, spares_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                pid = _clone_parent(number, syscall, api)
            except OSError:
                ctl.close()
                spares_end.close()
                sock.sendall(_RECORD.pack(0))
                continue
            if pid == 0:
                sock.close()
                ctl.close()
                return become_spare(server, spares_end)
            spares_end.close()
            sock.sendmsg([_RECORD.pack(pid)], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, _RECORD.pack(ctl.fileno()))])
            ctl.close()
