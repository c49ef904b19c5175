"""Reload detection: the files a server depends on, and whether any changed.

At start (``Watch.start``, in the server, at ``initialisation_complete()``)
the server records an *identity* for every file it depends on (``files``):
``(st_dev, st_ino, st_size, st_mtime_ns, st_ctime_ns)``, or "absent", or
the error that stat gave.  Any replacement or rewrite of a file changes its
identity, whatever mtime it is given: a new inode, or a new ctime (which
nobody can set back).  The interpreter is recorded as the binary that is
*running* (``/proc/self/exe``), so one replaced before the server started
already counts as changed.

Before each new connection is taken in, :meth:`Watch.changed` says which
file, if any, changed since.  A file counts as changed when its identity
differs from the recorded one, or when its mtime or ctime is later than the
server's start stamp (the client's ``SECS.NSECS``: set before the
interpreter started, so a change made after the interpreter read a file,
but before it was recorded here, is caught too).

So that the check does not grow with the number of files, it uses inotify:
one watch per directory holding a tracked file (and, with fewer events,
one per ancestor of those directories, so that a renamed directory or a
swapped symbolic link anywhere in a path is seen).  Each check drains the
inotify fd (one non-blocking read when nothing happened) and re-stats only
the files named by an event.  Without inotify (not available, watch limit
reached), every file is re-stated at every check.

The inotify fd is close-on-exec and non-blocking; monitors close it
(:meth:`Watch.close`) along with the server's other fds.
"""

from __future__ import annotations

__all__ = ["Watch", "files", "identity"]

import ctypes
import errno
import os
import struct
import sys
from typing import Dict, Iterable, List, Optional, Set, Tuple

#: An identity: (dev, ino, size, mtime_ns, ctime_ns) of an existing file;
#: ``ABSENT``; or (-errno,) when stat failed otherwise.
Identity = Tuple[int, ...]
ABSENT: Identity = (0,)

# inotify(7) constants.
IN_MODIFY = 0x00000002
IN_ATTRIB = 0x00000004
IN_CLOSE_WRITE = 0x00000008
IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_DELETE_SELF = 0x00000400
IN_MOVE_SELF = 0x00000800
IN_UNMOUNT = 0x00002000
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000
IN_ONLYDIR = 0x01000000
IN_MASK_ADD = 0x20000000
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC

#: Events on the directory of a tracked file: anything that can change a
#: file in it, or the name's target.
FILE_DIR_MASK = (
    IN_ATTRIB | IN_MODIFY | IN_CLOSE_WRITE | IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO | IN_DELETE_SELF | IN_MOVE_SELF
)
#: Events on an ancestor directory: only names coming and going (a
#: directory renamed, a symbolic link replaced), not writes to its files.
ANCESTOR_MASK = IN_ATTRIB | IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO | IN_DELETE_SELF | IN_MOVE_SELF
#: Events after which every file below the watched directory is re-stated.
_SELF_EVENTS = IN_DELETE_SELF | IN_MOVE_SELF
#: The watch is gone: from then on nothing below it would be seen.
_LOST_EVENTS = IN_IGNORED | IN_UNMOUNT

_EVENT = struct.Struct("iIII")  # wd, mask, cookie, len; then the name
_READ_SIZE = 65536


def identity(path: str) -> Identity:
    """The identity of ``path`` now (following symbolic links)."""
    try:
        st = os.stat(path)
    except OSError as e:
        if e.errno in (errno.ENOENT, errno.ENOTDIR):
            return ABSENT
        return (-(e.errno or errno.EIO),)
    except ValueError:  # a NUL in the path: no file can have that name
        return (-errno.EINVAL,)
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def describe(ident: Identity) -> str:
    """``ident`` for a log line."""
    if ident == ABSENT:
        return "absent"
    if len(ident) == 1:
        return f"stat failed: {os.strerror(-ident[0])}"
    dev, ino, size, mtime_ns, ctime_ns = ident
    return f"dev {dev} ino {ino} size {size} mtime {mtime_ns} ctime {ctime_ns}"


def _running_interpreter() -> Optional[Tuple[str, Identity]]:
    """The path of the binary this process runs, and that binary's identity
    (the running one, even if the path now names another file)."""
    try:
        path = os.readlink("/proc/self/exe")
        running = identity("/proc/self/exe")
    except OSError:
        return None
    if path.endswith(" (deleted)"):
        path = path[: -len(" (deleted)")]
    if not path.startswith("/") or len(running) == 1:
        return None
    return path, running


def _libpython() -> List[str]:
    """Shared libpython files mapped in this process (none when the
    interpreter is linked statically)."""
    found: Dict[str, None] = {}
    try:
        with open("/proc/self/maps", "rb") as f:
            for line in f:
                fields = line.split(maxsplit=5)
                if len(fields) == 6:
                    path = os.fsdecode(fields[5].rstrip(b"\n"))
                    if os.path.basename(path).startswith("libpython") and path.startswith("/"):
                        found.setdefault(path, None)
    except OSError:
        pass
    return list(found)


def files(autoreload: bool, extra: Iterable[str]) -> List[str]:
    """The files whose change means the server is out of date.

    The main script; the interpreter's own files (``sys.executable`` and its
    real path, a shared libpython, the standard library's ``os.py``, a
    venv's ``pyvenv.cfg``); with ``autoreload``, the file of every module in
    ``sys.modules`` (sources for modules loaded from bytecode caches, shared
    objects for extensions); and ``extra``.  Each path's real path too when
    it goes through a symbolic link.  Absolute, without duplicates.  (The
    running binary itself is added by :meth:`Watch.start`.)
    """
    candidates: List[object] = [getattr(sys.modules.get("__main__"), "__file__", None)]
    candidates.append(sys.executable)
    candidates.extend(_libpython())
    candidates.append(getattr(os, "__file__", None))
    if sys.prefix != sys.base_prefix:
        candidates.append(os.path.join(sys.prefix, "pyvenv.cfg"))
    if autoreload:
        candidates.extend(getattr(module, "__file__", None) for module in list(sys.modules.values()))
    candidates.extend(extra)
    found: Dict[str, None] = {}
    real_dirs: Dict[str, str] = {}
    for path in candidates:
        if isinstance(path, str) and path:
            absolute = os.path.abspath(path)
            found.setdefault(absolute, None)
            found.setdefault(_realpath(absolute, real_dirs), None)
    return list(found)


def _realpath(path: str, real_dirs: Dict[str, str]) -> str:
    """``os.path.realpath(path)``, resolving each directory once."""
    directory, name = os.path.split(path)
    real_dir = real_dirs.get(directory)
    if real_dir is None:
        real_dir = real_dirs[directory] = os.path.realpath(directory)
    real = os.path.join(real_dir, name)
    return os.path.realpath(real) if os.path.islink(real) else real


class _Inotify:
    """inotify(7) through libc (ctypes): an fd and its watches."""

    def __init__(self) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        self._add_watch = libc.inotify_add_watch
        self._add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
        self._add_watch.restype = ctypes.c_int
        init1 = libc.inotify_init1
        init1.argtypes = [ctypes.c_int]
        init1.restype = ctypes.c_int
        fd = init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            raise OSError(ctypes.get_errno(), f"inotify_init1: {os.strerror(ctypes.get_errno())}")
        self.fd = fd

    def add_watch(self, directory: str, mask: int) -> int:
        wd = self._add_watch(self.fd, os.fsencode(directory), mask | IN_MASK_ADD | IN_ONLYDIR)
        if wd < 0:
            code = ctypes.get_errno()
            raise OSError(code, f"inotify_add_watch {directory}: {os.strerror(code)}")
        return int(wd)

    def read(self) -> List[Tuple[int, int, bytes]]:
        """Every event queued: (wd, mask, name).  [] when none."""
        events: List[Tuple[int, int, bytes]] = []
        while True:
            try:
                data = os.read(self.fd, _READ_SIZE)
            except BlockingIOError:
                return events
            if not data:
                return events
            offset = 0
            while offset + _EVENT.size <= len(data):
                wd, mask, _cookie, length = _EVENT.unpack_from(data, offset)
                offset += _EVENT.size
                name = data[offset : offset + length].rstrip(b"\0")
                offset += length
                events.append((wd, mask, name))

    def close(self) -> None:
        try:
            os.close(self.fd)
        except OSError:
            pass


def _steps(path: str) -> List[Tuple[str, str]]:
    """(directory, name) for every component of absolute ``path``, from its
    own directory up to the root: ``/a/b/f`` -> ``[("/a/b", "f"), ("/a",
    "b"), ("/", "a")]``."""
    steps: List[Tuple[str, str]] = []
    while True:
        directory, name = os.path.split(path)
        if not name or directory == path:
            return steps
        steps.append((directory, name))
        path = directory


class Watch:
    """The recorded identities of a server's files and their watches."""

    def __init__(self, paths: List[str], recorded: List[Identity], stamp_ns: int) -> None:
        self.paths = paths
        self.recorded = recorded
        self.stamp_ns = stamp_ns
        self.inotify: Optional[_Inotify] = None
        #: (watch, entry name) -> the files whose path goes through it.
        self.by_name: Dict[Tuple[int, bytes], List[int]] = {}
        #: watch -> every file at or below its directory.
        self.by_wd: Dict[int, List[int]] = {}
        self.wd_dirs: Dict[int, str] = {}
        #: Files to re-stat at the next check.
        self.pending: Set[int] = set()
        #: Files re-stated at every check: their directory could not be
        #: watched (it does not exist), or the watch has moved with it.
        self.unwatched: Set[int] = set()
        #: Why the server was already out of date when recorded, if it was.
        self.stale_at_start: Optional[str] = None

    @classmethod
    def start(cls, paths: Iterable[str], stamp_ns: int) -> "Tuple[Watch, Optional[str]]":
        """Watch ``paths`` (and the running interpreter).  Returns the
        watch and, when inotify could not be used, why (every check then
        re-stats every file)."""
        tracked = list(paths)
        running = _running_interpreter()
        if running is not None and running[0] not in tracked:
            tracked.append(running[0])
        watch = cls(tracked, [], stamp_ns)
        # Watches first, identities second: a change in between is then
        # either recorded or reported by an event (and caught by the stamp).
        problem = watch._add_watches()
        watch.recorded = [identity(path) for path in tracked]
        if running is not None:
            # The binary running, not whatever its path names now.
            index = tracked.index(running[0])
            if watch.recorded[index] != running[1]:
                watch.stale_at_start = f"{running[0]} changed (the running interpreter was replaced)"
            watch.recorded[index] = running[1]
        if watch.stale_at_start is None:
            for index, ident in enumerate(watch.recorded):
                why = watch._newer_than_stamp(ident)
                if why is not None:
                    watch.stale_at_start = f"{tracked[index]} changed ({why})"
                    break
        return watch, problem

    def _add_watches(self) -> Optional[str]:
        """Set up inotify; on failure leave it off and say why."""
        masks: Dict[str, int] = {}
        #: directory -> entry name -> the files whose path goes through it
        users: Dict[str, Dict[str, List[int]]] = {}
        by_dir: Dict[str, Dict[str, List[int]]] = {}
        for index, path in enumerate(self.paths):
            directory, name = os.path.split(path)
            by_dir.setdefault(directory, {}).setdefault(name, []).append(index)
        for directory, entries in by_dir.items():
            masks[directory] = masks.get(directory, 0) | FILE_DIR_MASK
            below: List[int] = []
            for name, indices in entries.items():
                users.setdefault(directory, {}).setdefault(name, []).extend(indices)
                below.extend(indices)
            for ancestor, name in _steps(directory):
                masks[ancestor] = masks.get(ancestor, 0) | ANCESTOR_MASK
                users.setdefault(ancestor, {}).setdefault(name, []).extend(below)
        try:
            inotify = _Inotify()
        except (OSError, AttributeError) as e:
            return f"inotify unavailable ({e})"
        for directory, mask in masks.items():
            try:
                wd = inotify.add_watch(directory, mask)
            except OSError as e:
                if e.errno in (errno.ENOENT, errno.ENOTDIR):
                    # A directory that does not exist: its files are absent
                    # (a file created in it later is not announced to us).
                    for indices in users[directory].values():
                        self.unwatched.update(indices)
                    continue
                inotify.close()
                self.by_name.clear()
                self.by_wd.clear()
                self.wd_dirs.clear()
                return str(e)
            self.wd_dirs[wd] = directory
            below = self.by_wd.setdefault(wd, [])
            for name, indices in users[directory].items():
                self.by_name.setdefault((wd, os.fsencode(name)), []).extend(indices)
                below.extend(indices)
        self.inotify = inotify
        return None

    def _newer_than_stamp(self, ident: Identity) -> Optional[str]:
        if len(ident) != 5:
            return None
        if ident[3] > self.stamp_ns:
            return "modified after the server started"
        if ident[4] > self.stamp_ns:
            return "inode changed after the server started"
        return None

    def _changed_among(self, indices: Iterable[int]) -> Optional[str]:
        stamp_ns = self.stamp_ns
        for index in sorted(indices):
            now = identity(self.paths[index])
            if now != self.recorded[index] or (len(now) == 5 and (now[3] > stamp_ns or now[4] > stamp_ns)):
                why = self._newer_than_stamp(now) or f"was {describe(self.recorded[index])}, now {describe(now)}"
                return f"{self.paths[index]} changed ({why})"
        return None

    def changed(self) -> Optional[str]:
        """What changed since the start, or None.  Cheap when inotify works
        and nothing happened: one read(2)."""
        if self.stale_at_start is not None:
            return self.stale_at_start
        if self.inotify is None:
            return self._changed_among(range(len(self.paths)))
        try:
            events = self.inotify.read()
        except OSError as e:
            return f"reading inotify events failed ({e}), so changes may have been missed"
        for wd, mask, name in events:
            if mask & IN_Q_OVERFLOW:
                self.pending.update(range(len(self.paths)))
            elif mask & _LOST_EVENTS:
                return f"the watch on {self.wd_dirs.get(wd, '?')} ended, so changes below it would be missed"
            elif mask & _SELF_EVENTS:
                # The directory was moved or deleted: its watch no longer
                # says anything about the paths below it.
                self.unwatched.update(self.by_wd.get(wd, ()))
            else:
                self.pending.update(self.by_name.get((wd, name), ()))
        if not self.pending and not self.unwatched:
            return None
        result = self._changed_among(self.pending | self.unwatched)
        self.pending.clear()
        return result

    def close(self) -> None:
        """Close the inotify fd (in a monitor)."""
        if self.inotify is not None:
            self.inotify.close()
            self.inotify = None
