"""Reloading on any change (``_reload``): a warm call runs exactly the code
a direct run would run at that moment, whatever mtime the new files carry;
and the check costs a call the same with 1,000 modules as with none.

Through our client; files changed with the real tools (``tar``, ``cp -p``,
``mv``, ``touch -d``, ``ln``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import List

from harness import Harness, alive, wait_until

from prefork_interp import _reload

OLD_DATE = "2000-01-01"


def _touch_old(*paths: Path) -> None:
    subprocess.run(["touch", "-d", OLD_DATE, *map(str, paths)], check=True)


def _like_direct_run(h: Harness, script: Path, expected: bytes) -> None:
    """A warm call prints what a direct run prints now, and that is ``expected``."""
    direct = h.direct(script)
    assert direct.returncode == 0 and direct.out == expected, direct.text()
    got = h.run(script)
    assert got.returncode == 0, got.text()
    assert got.out == direct.out, f"warm call ran old code:\n{got.text()}"


def _warm(h: Harness, script: Path, expected: bytes) -> int:
    """Start the server and make a warm call; returns the server's pid."""
    for _ in range(2):
        got = h.run(script)
        assert got.out == expected, got.text()
    server = h.last_server()
    assert h.executors()[-2][2] == server, "the second call was not warm"
    return server


def _reloaded(h: Harness, old_server: int) -> None:
    assert h.last_server() != old_server, "no new server"
    wait_until(lambda: not alive(lambda p: p.pid == old_server), 5, "the stale server to quit")


# Same sizes in both versions: only the inode, mtime or ctime can tell them apart.
SCRIPT_V1 = 'print("script v1", helper.VALUE)\n'
SCRIPT_V2 = 'print("script v2", helper.VALUE)\n'
MODULE_V1 = 'VALUE = "module v1"\n'
MODULE_V2 = 'VALUE = "module v2"\n'


def _app(h: Harness, where: str = "") -> Path:
    h.module(f"{where}helper.py", MODULE_V1)
    return h.script(f"{where}app.py", SCRIPT_V1, setup="import helper\n")


def test_tar_extract_of_an_older_release(our_harness):
    h = our_harness
    script = _app(h)
    server = _warm(h, script, b"script v1 module v1\n")
    stage = h.dir / "stage"
    stage.mkdir()
    h.module("stage/helper.py", MODULE_V2)
    h.script("stage/app.py", SCRIPT_V2, setup="import helper\n")
    _touch_old(stage / "helper.py", stage / "app.py")
    subprocess.run(["tar", "-C", str(stage), "-cf", str(h.dir / "release.tar"), "app.py", "helper.py"], check=True)
    subprocess.run(["tar", "-C", str(h.dir), "-xf", str(h.dir / "release.tar")], check=True)
    assert script.stat().st_mtime_ns < 10**18, "tar kept the old mtime"
    _like_direct_run(h, script, b"script v2 module v2\n")
    _reloaded(h, server)


def test_cp_p_of_an_older_file_over_the_module(our_harness):
    h = our_harness
    script = _app(h)
    module = h.dir / "helper.py"
    inode = module.stat().st_ino
    server = _warm(h, script, b"script v1 module v1\n")
    (h.dir / "other").mkdir()
    older = h.module("other/helper.py", MODULE_V2)
    _touch_old(older)
    subprocess.run(["cp", "-p", str(older), str(module)], check=True)
    assert module.stat().st_ino == inode, "cp -p wrote into the same inode"
    _like_direct_run(h, script, b"script v1 module v2\n")
    _reloaded(h, server)


def test_mv_of_an_older_file_over_the_script(our_harness):
    h = our_harness
    script = _app(h)
    server = _warm(h, script, b"script v1 module v1\n")
    new = h.script("new-app.py", SCRIPT_V2, setup="import helper\n")
    _touch_old(new)
    subprocess.run(["mv", str(new), str(script)], check=True)
    _like_direct_run(h, script, b"script v2 module v1\n")
    _reloaded(h, server)


def test_script_rewritten_in_place_then_dated_back(our_harness):
    h = our_harness
    script = _app(h)
    inode = script.stat().st_ino
    server = _warm(h, script, b"script v1 module v1\n")
    with open(script, "r+") as f:
        text = f.read()
        f.seek(0)
        f.write(text.replace("script v1", "script v2"))
    _touch_old(script)
    assert script.stat().st_ino == inode
    _like_direct_run(h, script, b"script v2 module v1\n")
    _reloaded(h, server)


def test_imported_module_replaced_with_an_older_copy(our_harness):
    """A module of a package in another directory, replaced by rename."""
    h = our_harness
    (h.dir / "lib" / "pkg").mkdir(parents=True)
    (h.dir / "lib" / "pkg" / "__init__.py").write_text("")
    module = h.module("lib/pkg/mod.py", MODULE_V1)
    setup = "sys.path.insert(0, os.path.join(os.path.dirname(__file__), 'lib'))\nfrom pkg import mod as helper\n"
    script = h.script("app.py", SCRIPT_V1, setup=setup)
    server = _warm(h, script, b"script v1 module v1\n")
    new = h.module("lib/pkg/mod.py.new", MODULE_V2)
    _touch_old(new)
    os.replace(new, module)
    _like_direct_run(h, script, b"script v1 module v2\n")
    _reloaded(h, server)


def test_directory_renamed_and_replaced(our_harness):
    """``mv lib lib.old; mv lib.new lib``: same names, older files, and the
    tracked files' own directory is not the one renamed (its parent is)."""
    h = our_harness
    for release, value in (("lib", MODULE_V1), ("lib.new", MODULE_V2)):
        (h.dir / release / "pkg").mkdir(parents=True)
        (h.dir / release / "pkg" / "__init__.py").write_text("")
        h.module(f"{release}/pkg/mod.py", value)
    _touch_old(*(h.dir / "lib.new").rglob("*"))
    setup = "sys.path.insert(0, os.path.join(os.path.dirname(__file__), 'lib'))\nfrom pkg import mod as helper\n"
    script = h.script("app.py", SCRIPT_V1, setup=setup)
    server = _warm(h, script, b"script v1 module v1\n")
    os.rename(h.dir / "lib", h.dir / "lib.old")
    os.rename(h.dir / "lib.new", h.dir / "lib")
    _like_direct_run(h, script, b"script v1 module v2\n")
    _reloaded(h, server)


def test_symbolic_link_to_the_release_swapped(our_harness):
    """``current -> rel1`` swapped for ``current -> rel2`` (older files)."""
    h = our_harness
    (h.dir / "rel1").mkdir()
    (h.dir / "rel2").mkdir()
    _app(h, "rel1/")
    h.module("rel2/helper.py", MODULE_V2)
    h.script("rel2/app.py", SCRIPT_V2, setup="import helper\n")
    _touch_old(h.dir / "rel2" / "helper.py", h.dir / "rel2" / "app.py")
    (h.dir / "current").symlink_to("rel1")
    script = h.dir / "current" / "app.py"
    server = _warm(h, script, b"script v1 module v1\n")
    subprocess.run(["ln", "-s", "rel2", str(h.dir / "current.tmp")], check=True)
    subprocess.run(["mv", "-T", str(h.dir / "current.tmp"), str(h.dir / "current")], check=True)
    _like_direct_run(h, script, b"script v2 module v2\n")
    _reloaded(h, server)


def test_interpreter_replaced(our_harness):
    """The ``#!`` interpreter (a copy of python3 here) replaced by another
    copy (``cp`` to a temporary name, ``mv``): the next call is served by a
    new server running the new binary, not the deleted one."""
    h = our_harness
    python = h.dir / "python3"
    shutil.copy2(os.path.realpath(sys.executable), python)
    script = h.script("exe.py", 'print(os.readlink("/proc/self/exe"))\n')
    cmd = [h.client, "-U", str(python), str(script)]
    env = h.env()
    try:
        for _ in range(2):
            got = h.call_argv(cmd, env, None, None, None, 30)
            assert got.out == f"{python}\n".encode(), got.text()
        server = h.last_server()
        subprocess.run(["cp", str(python), str(h.dir / "python3.tmp")], check=True)
        subprocess.run(["mv", str(h.dir / "python3.tmp"), str(python)], check=True)
        assert os.readlink(f"/proc/{server}/exe") == f"{python} (deleted)"
        direct = h.call_argv([str(python), str(script)], {k: v for k, v in env.items() if k != "PFI_TEST_RECORD"}, None, None, None, 30)
        got = h.call_argv(cmd, env, None, None, None, 30)
        assert got.out == direct.out == f"{python}\n".encode(), got.text()
        _reloaded(h, server)
        assert os.readlink(f"/proc/{h.last_server()}/exe") == str(python)
    finally:
        subprocess.run([h.client, "--kill", "-U", str(python), str(script)], env=env, cwd=h.dir, capture_output=True, timeout=30)


def test_nothing_changed_no_reload(our_harness):
    """20 calls, one server, while unrelated files in the watched directory
    come and go and are written (the executors' record file, among them)."""
    h = our_harness
    data = h.dir / "data.txt"
    data.write_text("data\n")
    script = h.script(
        "app.py",
        SCRIPT_V1,
        setup=f"import helper\nimport prefork_interp\nprefork_interp.autoreload_also_check({str(data)!r})\n",
    )
    h.module("helper.py", MODULE_V1)
    for i in range(20):
        got = h.run(script)
        assert got.out == b"script v1 module v1\n", got.text()
        (h.dir / f"unrelated-{i}").write_text("x")
        if i:
            (h.dir / f"unrelated-{i - 1}").unlink()
        os.utime(h.dir / "executors.log")
        _ = data.read_text()
    assert len(h.sessions()) == 1, f"reloaded with nothing changed: {h.executors()}"


def test_inotify_fd_not_in_the_call(our_harness):
    """The executor holds no inotify fd (the monitor closed it)."""
    h = our_harness
    body = """\
    kinds = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            kinds.append(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            pass  # the listing's own fd
    print([k for k in kinds if "inotify" in k])
    """
    script = h.script("fds.py", body)
    for _ in range(2):
        got = h.run(script)
        assert got.out == b"[]\n", got.text()
    server = h.last_server()
    server_fds = [os.readlink(f"/proc/{server}/fd/{fd}") for fd in os.listdir(f"/proc/{server}/fd")]
    assert "anon_inode:inotify" in server_fds, "the server itself watches with inotify"


def test_check_cost_does_not_grow_with_modules(tmp_path, monkeypatch):
    """1,000 module files: with nothing changed, a check looks at none of
    them (inotify says nothing happened); after one changes, it looks at
    that one.  No timing here: bench/python/reload_cost.py measures what
    the check costs a warm call."""
    files = []
    for d in range(10):
        package = tmp_path / f"p{d}"
        package.mkdir()
        for m in range(100):
            path = package / f"m{m:03d}.py"
            path.write_text(f"X = {m}\n")
            files.append(path)
    _touch_old(*files)
    watch, problem = _reload.Watch.start([str(f) for f in files], 10**19)
    try:
        assert problem is None and watch.inotify is not None
        looked_at: List[str] = []
        real_stat = os.stat

        def counting_stat(path, *args, **kwargs):  # type: ignore[no-untyped-def]
            looked_at.append(str(path))
            return real_stat(path, *args, **kwargs)

        monkeypatch.setattr(_reload.os, "stat", counting_stat)
        for _ in range(20):
            assert watch.changed() is None
        assert looked_at == [], f"{len(looked_at)} files looked at in 20 checks"
        files[500].write_text("X = 'new'\n")
        _touch_old(files[500])
        change = watch.changed()
        assert change is not None and str(files[500]) in change, change
        assert len(set(looked_at)) <= 2, looked_at
    finally:
        watch.close()


# ---------------------------------------------------------------------------
# _reload in this process: identities, events, the fallback without inotify


def test_watch_sees_changes_and_ignores_reads(tmp_path):
    files = [tmp_path / f"f{i}" for i in range(3)]
    for f in files:
        f.write_text("x")
    _touch_old(*files)
    watch, problem = _reload.Watch.start([str(f) for f in files] + [str(tmp_path / "missing" / "g")], 10**19)
    try:
        assert problem is None and watch.inotify is not None
        assert watch.changed() is None
        files[0].read_text()
        (tmp_path / "other").write_text("y")
        assert watch.changed() is None
        os.chmod(files[1], 0o600)
        change = watch.changed()
        assert change is not None and str(files[1]) in change, change
    finally:
        watch.close()


def test_watch_falls_back_to_stat_without_inotify(tmp_path, monkeypatch):
    def no_inotify() -> None:
        raise OSError(38, "inotify_init1: Function not implemented")

    monkeypatch.setattr(_reload, "_Inotify", no_inotify)
    path = tmp_path / "f"
    path.write_text("one")
    _touch_old(path)
    watch, problem = _reload.Watch.start([str(path)], 10**19)
    assert problem is not None and watch.inotify is None
    assert watch.changed() is None
    path.write_text("two")
    _touch_old(path)
    assert str(path) in (watch.changed() or "")


def test_watch_file_appearing_in_a_missing_directory(tmp_path):
    path = tmp_path / "later" / "f"
    watch, _ = _reload.Watch.start([str(path)], 10**19)
    try:
        assert watch.changed() is None
        path.parent.mkdir()
        assert watch.changed() is None
        path.write_text("x")
        assert str(path) in (watch.changed() or "")
    finally:
        watch.close()
