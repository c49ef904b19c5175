"""Interactive use in a real terminal: a served call behaves like a direct
run (issue 8).  Each test runs a scenario on the program run directly and
then served, in the same bash on the same pty, and compares what the user
sees: the program's markers, the statuses bash reports, what is echoed.

The scenarios take a command line, so the same tests run every language in
``programs.PROGRAMS``.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from typing import Any, Callable, Dict, List

import pytest
from programs import PYTHON_PACKAGE, Setup
from terminal import PROMPT, Terminal, _stat_field, processes_in_session

sys.path.insert(0, str(PYTHON_PACKAGE))
from prefork_interp._options import DEFAULT_POOL_SIZE  # noqa: E402

MARKER = re.compile(rb"<<([^<>\r\n]*)>>")

#: bash's $? for a job stopped by SIGTSTP (^Z).
STOPPED_BY_TSTP = 128 + 20


def markers(output: bytes) -> List[str]:
    return [m.decode() for m in MARKER.findall(output)]


def both(setup: Setup, scenario: Callable[..., Any], *args: Any) -> Dict[str, Any]:
    """Run ``scenario`` direct, then served; their observations.  The Rust
    program has a server per mode, so its first call of a mode is cold and
    runs in place, like a direct run (protocol.md section 7): that one is
    made first, and the served observation is the next call's."""
    wanted = getattr(scenario, "mode", None)
    if wanted not in setup.program.modes:
        pytest.skip(f"{wanted} is Python's own (pydoc); {setup.program.name} has no such mode")
    if setup.program.name == "rust":
        scenario(setup.terminal, setup.program.served, *args)
    got = {"direct": scenario(setup.terminal, setup.program.direct, *args)}
    # Every served scenario leaves the terminal's settings as it found
    # them (the client's raw mode is put back on every way out).
    before = _stty(setup.terminal)
    got["served"] = scenario(setup.terminal, setup.program.served, *args)
    assert _stty(setup.terminal) == before, "the served call left the terminal's settings changed"
    return got


def cold(setup: Setup, scenario: Callable[..., Any], *args: Any) -> Dict[str, Any]:
    """Run ``scenario`` direct, then cold: the servers stopped first, so
    the call runs in place (protocol.md section 7), as a job of the
    client's holding the terminal; their observations."""
    wanted = getattr(scenario, "mode", None)
    if wanted not in setup.program.modes:
        pytest.skip(f"{wanted} is Python's own (pydoc); {setup.program.name} has no such mode")
    got = {"direct": scenario(setup.terminal, setup.program.direct, *args)}
    for argv in setup.program.killers:
        subprocess.run(argv, env=setup.program.env, cwd=setup.dir, capture_output=True, timeout=30)
    got["cold"] = scenario(setup.terminal, setup.program.served, *args)
    return got


def mode(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def mark(scenario: Callable[..., Any]) -> Callable[..., Any]:
        scenario.mode = name  # type: ignore[attr-defined]
        return scenario

    return mark


def _prompt(term: Terminal) -> None:
    term.expect(PROMPT.encode())


def _nobody_else_on_the_terminal(term: Terminal) -> List[int]:
    """Wait (a little) until only bash has the terminal open; who else has."""
    deadline = time.monotonic() + 5
    while term.others_holding_the_terminal() and time.monotonic() < deadline:
        time.sleep(0.05)
    return term.others_holding_the_terminal()


def _bash_reads_the_terminal(term: Terminal) -> bool:
    """Typed input reaches bash (nothing else is reading the terminal)."""
    return term.command('echo "<<alive $((6 * 7))>>"') == 0 and markers(term.output[-200:])[-1:] == ["alive 42"]


# ---------------------------------------------------------------------------
# Scenarios: each takes the terminal and a command line, returns what it saw


def _interrupted(term: Terminal, command: str, which: str) -> Any:
    start = term.start(f"{command} {which}")
    ready = term.expect(b"<<ready>>").end()
    time.sleep(0.2)  # a person's ^C comes after the print has returned
    term.send(b"\x03")
    status = term.wait_done()
    _prompt(term)
    # What appears after <<ready>>: ^C's echo, a traceback, the cleanup.
    after = term.output[ready : term.output.index(b"<DONE:", ready)]
    return status, markers(term.since(start)), after


@mode("interrupt")
def ctrl_c_except(term: Terminal, command: str) -> Any:
    return _interrupted(term, command, "interrupt")


@mode("finally")
def ctrl_c_finally(term: Terminal, command: str) -> Any:
    return _interrupted(term, command, "finally")


@mode("read-line")
def ctrl_z_fg(term: Terminal, command: str) -> Any:
    start = term.start(f"{command} read-line")
    term.expect(b"<<ready>>")
    term.send(b"\x1a")
    stopped = term.wait_done()
    _prompt(term)
    term.start("fg")
    term.expect(b"read-line")  # bash names the job it continues
    time.sleep(0.3)  # let bash hand the terminal over before typing
    term.sendline("hello")
    status = term.wait_done()
    _prompt(term)
    return stopped, status, markers(term.since(start))


@mode("wait-file")
def ctrl_z_bg(term: Terminal, command: str, go: Any) -> Any:
    start = term.start(f"{command} wait-file {go}")
    term.expect(b"<<ready>>")
    term.send(b"\x1a")
    stopped = term.wait_done()
    _prompt(term)
    go.touch()
    stays_stopped = term.absent_for(b"<<finished>>", 0.5)
    term.start("bg; wait %1")
    status = term.wait_done()
    _prompt(term)
    go.unlink()
    return stopped, stays_stopped, status, markers(term.since(start))


@mode("winch")
def window_resize(term: Terminal, command: str) -> Any:
    start = term.start(f"{command} winch")
    term.expect(b"<<ready>>")
    term.resize(33, 111)
    status = term.wait_done()
    _prompt(term)
    term.resize(24, 80)
    return status, markers(term.since(start))


@mode("password")
def password(term: Terminal, command: str, redirect: str = "") -> Any:
    start = term.start(f"{command} password{redirect}")
    term.expect(b"<<password:>>")
    term.sendline("s3cret")
    status = term.wait_done()
    _prompt(term)
    return status, markers(term.since(start)), b"s3cret" in term.since(start)


@mode("tty")
def open_dev_tty(term: Terminal, command: str) -> Any:
    start = term.start(f"{command} tty")
    status = term.wait_done()
    _prompt(term)
    return status, markers(term.since(start))


@mode("pager-run")
def pager_ctrl_c(term: Terminal, command: str) -> Any:
    start = term.start(f"{command} pager-run")
    term.expect(b"page line 1")
    time.sleep(0.3)  # less is reading keys
    term.send(b"\x03")
    status = term.wait_done()
    _prompt(term)
    return status, [m for m in markers(term.since(start))], _nobody_else_on_the_terminal(term), _bash_reads_the_terminal(term)


@mode("pager-pydoc")
def pydoc_pager_ctrl_c_then_q(term: Terminal, command: str) -> Any:
    start = term.start(f"{command} pager-pydoc")
    term.expect(b"page line 1")
    time.sleep(0.3)
    term.send(b"\x03")
    survives = term.absent_for(b"<DONE:", 0.5)
    term.send(b"q")
    status = term.wait_done()
    _prompt(term)
    return survives, status, markers(term.since(start)), _nobody_else_on_the_terminal(term), _bash_reads_the_terminal(term)


@mode("tty-read")
def tty_read_with_stdin_from_a_file(term: Terminal, command: str) -> Any:
    """As sudo, ssh or git ask for a password: on /dev/tty, whatever
    stdin is."""
    start = term.start(f"{command} tty-read < /dev/null")
    term.expect(b"<<tty prompt>>")
    term.sendline("typed")
    status = term.wait_done()
    _prompt(term)
    return status, markers(term.since(start)), b"typed" in term.since(start)


def _job_state(term: Terminal, wanted: str) -> str:
    """What ``jobs`` says of job 1, once it says ``wanted`` (or after a
    few seconds)."""
    deadline = time.monotonic() + 5
    while True:
        start = term.start("jobs")
        term.wait_done()
        _prompt(term)
        seen = term.since(start).decode(errors="replace")
        if wanted in seen or time.monotonic() > deadline:
            return wanted if wanted in seen else seen
        time.sleep(0.1)


@mode("read-line")
def background_read(term: Terminal, command: str) -> Any:
    """``script &`` reading the terminal: what bash says of the job, what
    is typed at the shell meanwhile reaching the shell (never the script),
    and after ``fg`` the script reading what is typed."""
    start = term.start(f"{command} read-line &")
    term.wait_done()
    _prompt(term)
    time.sleep(0.5)
    state = "Stopped" if _job_state(term, "Stopped") == "Stopped" else "Running"
    term.start("fg")
    term.expect(b"read-line")
    time.sleep(0.3)  # let bash hand the terminal over before typing
    term.sendline("hello")
    status = term.wait_done()
    _prompt(term)
    return state, status, markers(term.since(start))


def _stty(term: Terminal) -> str:
    start = term.start('echo "<<stty $(stty -g)>>"')
    term.wait_done()
    _prompt(term)
    return markers(term.since(start))[-1]


def _killed(term: Terminal, command: str, whom: str) -> Any:
    """Kill the script (``script``: SIGKILL, by the pid it prints) or the
    command bash runs (``client``: SIGTERM to the terminal's foreground
    process: the client, or the script run directly); the terminal's
    settings after, against before."""
    import os
    import signal

    before = _stty(term)
    term.start(f"{command} pid")
    pid = int(term.expect(re.compile(rb"<<pid (\d+)>>")).group(1))
    if whom == "script":
        os.kill(pid, signal.SIGKILL)
    else:
        os.kill(os.tcgetpgrp(term.master), signal.SIGTERM)
    status = term.wait_done()
    _prompt(term)
    return status, _stty(term) == before


@mode("pid")
def kill_9_script(term: Terminal, command: str) -> Any:
    return _killed(term, command, "script")


@mode("pid")
def kill_term_client(term: Terminal, command: str) -> Any:
    return _killed(term, command, "client")


@mode("isatty")
def redirected(term: Terminal, command: str, redirect: str) -> Any:
    start = term.start(f"{command} isatty {redirect}")
    status = term.wait_done()
    _prompt(term)
    return status, markers(term.since(start))


@mode("interleave")
def interleaved_output(term: Terminal, command: str) -> Any:
    start = term.start(f"{command} interleave")
    status = term.wait_done()
    _prompt(term)
    return status, markers(term.since(start))


@mode("pager-run")
def pager_quit(term: Terminal, command: str) -> Any:
    """A full-screen program run by the script, quit with q."""
    before = _stty(term)
    start = term.start(f"{command} pager-run")
    term.expect(b"page line 1")
    time.sleep(0.3)  # less is reading keys
    term.send(b"q")
    status = term.wait_done()
    _prompt(term)
    seen = markers(term.since(start))
    return status, seen, _nobody_else_on_the_terminal(term), _bash_reads_the_terminal(term), _stty(term) == before


# ---------------------------------------------------------------------------
# The tests


def _cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except OSError:
        return b""


def _no_process_left(setup: Setup) -> None:
    """Each server's session holds the server alone, and its idle spare
    executors (2 by default, in every library) and the Python or Perl
    server's forker; the session of a call run on a pty (protocol.md
    section 9), led by its executor, holds nothing: no executor or child
    of a call is left."""
    spares = DEFAULT_POOL_SIZE
    for sid in setup.server_sessions():
        left = lambda: sorted(processes_in_session(sid))  # noqa: E731
        # The forker (Python, Perl): one more child of the server, if any.
        forkers = lambda: sum(_cmdline(pid).startswith(b"prefork-interp forker:") for pid in left())  # noqa: E731
        server = lambda: forkers() <= 1 and len(left()) == 1 + spares + forkers() and all(pid == sid or _stat_field(pid, 1) == sid for pid in left())  # noqa: E731
        expected = lambda: server() or not left()  # noqa: E731
        deadline = time.monotonic() + 5
        while not expected() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert expected(), f"a process of a served call is left: {left()}"


def test_ctrl_c_with_except_keyboard_interrupt(setup):
    got = both(setup, ctrl_c_except)
    assert got["served"] == got["direct"]
    status, seen, _ = got["served"]
    assert (status, seen) == (3, ["ready", "cleanup"])
    _no_process_left(setup)


def test_ctrl_c_with_finally(setup):
    got = both(setup, ctrl_c_finally)
    assert got["served"] == got["direct"]
    status, seen, after = got["served"]
    assert (status, seen) == (128 + 2, ["ready", "cleanup"])
    if setup.program.name == "python":
        assert b"KeyboardInterrupt" in after
    _no_process_left(setup)


def test_ctrl_z_then_fg(setup):
    got = both(setup, ctrl_z_fg)
    assert got["served"] == got["direct"] == (STOPPED_BY_TSTP, 0, ["ready", "got hello"])
    _no_process_left(setup)


def test_ctrl_c_in_a_cold_call(setup):
    """^C in a cold call (run in place): the script's cleanup runs once,
    as in a direct run; a signal never reaches it twice."""
    got = cold(setup, ctrl_c_finally)
    assert got["cold"] == got["direct"]


def test_ctrl_z_then_fg_in_a_cold_call(setup):
    got = cold(setup, ctrl_z_fg)
    assert got["cold"] == got["direct"] == (STOPPED_BY_TSTP, 0, ["ready", "got hello"])


def test_ctrl_z_then_bg(setup):
    if setup.program.name == "rust":  # its cold call, so the next is served
        setup.terminal.command(f"{setup.program.served} wait-file /dev/null")
    got = {how: ctrl_z_bg(setup.terminal, getattr(setup.program, how), setup.dir / f"go-{how}") for how in ("direct", "served")}
    assert got["served"] == got["direct"] == (STOPPED_BY_TSTP, True, 5, ["ready", "finished"])
    _no_process_left(setup)


def test_window_resize_reaches_sigwinch_handler_and_terminal_size(setup):
    got = both(setup, window_resize)
    assert got["served"] == got["direct"] == (0, ["ready", "winch 111x33"])


def test_getpass(setup):
    """A password read on the terminal: the prompt, no echo, the password
    read; served, on the call's pty (its controlling terminal)."""
    got = both(setup, password)
    assert got["served"] == got["direct"] == (0, ["password:", "len 6"], False)


def test_dev_tty_is_the_calls_controlling_terminal(setup):
    """Served on a terminal, the call has a pty of the client's as its
    controlling terminal (protocol.md section 9)."""
    got = both(setup, open_dev_tty)
    assert got["served"] == got["direct"] == (0, ["tty opened"])


def test_getpass_with_stdin_from_a_file(setup):
    """getpass (and the other programs' password readers) prompt and read
    on /dev/tty, with echo off, whatever stdin is."""
    got = both(setup, password, " < /dev/null")
    assert got["served"] == got["direct"] == (0, ["password:", "len 6"], False)


def test_dev_tty_prompt_with_stdin_from_a_file(setup):
    got = both(setup, tty_read_with_stdin_from_a_file)
    assert got["served"] == got["direct"] == (0, ["tty prompt", "tty got typed fg=yes"], True)
    _no_process_left(setup)


def test_background_read_stops_the_job(setup):
    """``script &`` reading the terminal: the job is stopped by SIGTTIN
    (served: the pty mirrors the job's place, protocol.md section 9.3), what
    is typed at the shell meanwhile is the shell's, and after ``fg`` the
    script reads the line typed then."""
    got = both(setup, background_read)
    assert got["served"] == got["direct"] == ("Stopped", 0, ["ready", "got hello"])
    _no_process_left(setup)


def test_terminal_restored_after_kill_9_of_the_script(setup):
    got = both(setup, kill_9_script)
    assert got["served"] == got["direct"] == (128 + 9, True)
    _no_process_left(setup)


def test_terminal_restored_after_kill_term_of_the_client(setup):
    got = both(setup, kill_term_client)
    assert got["served"] == got["direct"] == (128 + 15, True)
    _no_process_left(setup)


def test_stdout_and_stderr_keep_their_order(setup):
    got = both(setup, interleaved_output)
    expected = [m for n in range(100) for m in (f"o {n}", f"e {n}")]
    assert got["served"] == got["direct"] == (0, expected)


@pytest.mark.parametrize(
    "redirect, seen",
    [("", "yyy"), ("< /dev/null | cat", "nny"), ("2>/dev/null", "yyn"), ("| cat", "yny")],
)
def test_only_the_terminal_fds_get_the_pty(setup, redirect, seen):
    """A pipe or a file stays what it is (``script | grep``); the fds that
    are the terminal are the call's pty."""
    got = both(setup, redirected, redirect)
    assert got["served"] == got["direct"] == (0, [f"isatty {seen}"])


def test_full_screen_program_quit(setup):
    got = both(setup, pager_quit)
    assert got["served"] == got["direct"] == (0, ["after pager"], [], True, True)
    _no_process_left(setup)


def test_no_pty_with_dash_t(setup):
    """-T (or PREFORK_INTERP_NO_PTY): the caller's terminal fds as they
    are, not the call's controlling terminal."""
    if setup.program.name == "rust":
        open_dev_tty(setup.terminal, setup.program.served)  # its cold call
    for off in ("PREFORK_INTERP_NO_PTY=1 " + setup.program.served, setup.program.served.replace(" -U ", " -T -U ", 1)):
        assert open_dev_tty(setup.terminal, off) == (0, ["tty ENXIO"])


def test_ctrl_c_in_a_pager_child_leaves_nothing_behind(setup):
    """^C while the script runs less: the script's KeyboardInterrupt handler
    runs, less is gone, and nothing but bash reads the terminal after."""
    got = both(setup, pager_ctrl_c)
    assert got["served"] == got["direct"] == (3, ["interrupted"], [], True)
    _no_process_left(setup)


def test_ctrl_c_in_pydoc_pager_then_q(setup):
    """pydoc.pager ignores ^C like less does; q ends the pager, the call
    goes on and ends; nothing is left reading the terminal."""
    got = both(setup, pydoc_pager_ctrl_c_then_q)
    assert got["served"] == got["direct"] == (True, 0, ["after pager"], [], True)
    _no_process_left(setup)
