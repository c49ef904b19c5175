"""A real terminal for interactive tests: ``bash -i`` in a pseudo-terminal.

:class:`Terminal` starts ``bash --norc --noprofile -i`` as the session
leader of a new session whose controlling terminal is the slave side of a
pty; the test holds the master side, types into it (``^C``, ``^Z``,
``fg``), reads what appears with timeouts, and resizes the window
(``TIOCSWINSZ``, which makes the kernel send SIGWINCH to the foreground
process group, as a terminal emulator does).

Nothing here knows about prefork-interp: a scenario runs a command line
and watches it, so the same scenario runs a Python script, a Perl script
or a Rust program, served or direct.  Everything started is killed by pid
in :meth:`Terminal.close`: bash's session, and the processes of the extra
sessions (servers) the test registers.
"""

from __future__ import annotations

import fcntl
import os
import re
import select
import signal
import struct
import subprocess
import termios
import time
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Set, Union

#: The prompt: unlikely to be in any program's output.
PROMPT = "<PFI-PROMPT>$ "

#: What bash prints before each prompt: "<DONE:$?>", the status of the
#: last command (also when a ^C ended it, which aborts the rest of a
#: command line, or when ^Z stopped it: 128 + the signal).
DONE = re.compile(rb"<DONE:(\d+)>")

Pattern = Union[bytes, "re.Pattern[bytes]"]


def set_window_size(fd: int, rows: int, cols: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def _take_terminal() -> None:
    """In bash's child before exec, after setsid(): make fd 0 (the pty
    slave) the controlling terminal of the new session."""
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def _stat_field(pid: int, index: int) -> Optional[int]:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    return int(data[data.rindex(b")") + 2 :].split()[index])


def _state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return "X"
    return data[data.rindex(b")") + 2 :].split()[0].decode()


def processes_in_session(sid: int) -> List[int]:
    """Live processes (not zombies) whose session is ``sid``."""
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit() and _stat_field(int(name), 3) == sid and _state(int(name)) not in ("Z", "X"):
            found.append(int(name))
    return found


def _kill_all(pids: Iterable[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


class Terminal:
    """``bash -i`` on a pty; see the module docstring."""

    def __init__(self, cwd: Path, env: Dict[str, str], rows: int = 24, cols: int = 80) -> None:
        self.master, slave = os.openpty()
        #: The slave's path: a process holding it open is reading or
        #: writing the terminal.
        self.tty = os.ttyname(slave)
        set_window_size(self.master, rows, cols)
        env = {k: v for k, v in env.items() if k not in ("COLUMNS", "LINES")}
        env.update(PS1=PROMPT, PS2="", TERM="xterm", HISTFILE="/dev/null", PROMPT_COMMAND='echo "<DONE:$?>"')
        try:
            self.bash = subprocess.Popen(
                ["bash", "--norc", "--noprofile", "-i"],
                stdin=slave, stdout=slave, stderr=slave, cwd=cwd, env=env,
                start_new_session=True, preexec_fn=_take_terminal,
            )
        finally:
            os.close(slave)
        self.output = b""
        #: Where the next expect() starts looking.
        self.pos = 0
        #: Sessions of servers the test started: killed at close().
        self.extra_sessions: Set[int] = set()
        self.expect(PROMPT.encode())
        # Plain output: no bracketed-paste escapes around each command.
        self.command("bind 'set enable-bracketed-paste off'")

    # -- typing and reading --------------------------------------------------

    def send(self, data: Union[str, bytes]) -> None:
        os.write(self.master, data.encode() if isinstance(data, str) else data)

    def sendline(self, line: str) -> None:
        self.send(line + "\r")

    def _read(self, timeout: float) -> bool:
        if not select.select([self.master], [], [], max(timeout, 0))[0]:
            return False
        try:
            data = os.read(self.master, 65536)
        except OSError:  # EIO: every slave fd is closed
            data = b""
        if not data:
            raise AssertionError(f"terminal closed; output so far:\n{self.tail()}")
        self.output += data
        return True

    def expect(self, pattern: Pattern, timeout: float = 20) -> "re.Match[bytes]":
        """Wait for ``pattern`` (bytes: literal; or a compiled regex) after
        the last match; return the match and move past it."""
        regex = re.compile(re.escape(pattern)) if isinstance(pattern, bytes) else pattern
        deadline = time.monotonic() + timeout
        while True:
            match = regex.search(self.output, self.pos)
            if match:
                self.pos = match.end()
                return match
            if not self._read(deadline - time.monotonic()) and time.monotonic() >= deadline:
                raise AssertionError(f"timed out after {timeout} s waiting for {regex.pattern!r}; output:\n{self.tail()}")

    def absent_for(self, pattern: Pattern, seconds: float) -> bool:
        """True if ``pattern`` does not appear (after the last match) within
        ``seconds``."""
        regex = re.compile(re.escape(pattern)) if isinstance(pattern, bytes) else pattern
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if regex.search(self.output, self.pos):
                return False
            self._read(deadline - time.monotonic())
        return not regex.search(self.output, self.pos)

    def since(self, start: int) -> bytes:
        return self.output[start:]

    def tail(self, n: int = 3000) -> str:
        return self.output[-n:].decode(errors="replace")

    # -- commands -------------------------------------------------------------

    def start(self, command: str) -> int:
        """Type ``command``; :meth:`wait_done` then waits for its status.
        Returns the output position before it."""
        start = len(self.output)
        self.pos = start
        self.sendline(command)
        return start

    def wait_done(self, timeout: float = 20) -> int:
        """The status of the command started last (``<DONE:N>``)."""
        return int(self.expect(DONE, timeout).group(1))

    def command(self, command: str, timeout: float = 20) -> int:
        """Run ``command`` to the end: its status."""
        self.start(command)
        status = self.wait_done(timeout)
        self.expect(PROMPT.encode(), timeout)
        return status

    def resize(self, rows: int, cols: int) -> None:
        set_window_size(self.master, rows, cols)

    # -- who is there -----------------------------------------------------------

    def holders(self) -> List[int]:
        """Pids of every process (bash included) with the terminal open."""
        found = []
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            try:
                fds = os.listdir(f"/proc/{name}/fd")
            except OSError:
                continue
            for fd in fds:
                try:
                    if os.readlink(f"/proc/{name}/fd/{fd}") == self.tty:
                        found.append(int(name))
                        break
                except OSError:
                    continue
        return found

    def others_holding_the_terminal(self) -> List[int]:
        return [pid for pid in self.holders() if pid != self.bash.pid]

    # -- the end -----------------------------------------------------------------

    def close(self, killers: Iterable[List[str]] = (), env: Optional[Dict[str, str]] = None, cwd: Optional[Path] = None) -> None:
        """Run each ``killers`` command (``prefork-interp --kill ...``),
        then SIGKILL, by pid, every process left in bash's session and in
        the registered server sessions, and close the pty."""
        for argv in killers:
            subprocess.run(argv, env=env, cwd=cwd, capture_output=True, timeout=30)
        _kill_all(processes_in_session(self.bash.pid))
        # Servers quit by themselves after --kill, once their calls are
        # done; whatever is left after a grace period is killed.
        sessions = {self.bash.pid, *self.extra_sessions}
        left = lambda: [pid for sid in sessions for pid in processes_in_session(sid)]  # noqa: E731
        for grace in (3.0, 5.0):
            deadline = time.monotonic() + grace
            while left() and time.monotonic() < deadline:
                time.sleep(0.05)
            _kill_all(left())
        self.bash.wait(timeout=10)
        os.close(self.master)
