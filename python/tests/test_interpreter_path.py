"""An interpreter named without a ``/`` (``-U,python3``) is the binary the
caller's ``PATH`` finds, as in a direct run (design.md section 4.1): two
``PATH``s that find two binaries (a virtualenv activated or not) get a
server each, both warm, and every call runs its own ``PATH``'s binary."""

from __future__ import annotations

import os
import shutil
import sys

from harness import Harness


def test_each_path_gets_a_server_running_its_own_python(our_harness: Harness) -> None:
    h = our_harness
    real = os.path.realpath(sys.executable)
    dirs = [h.dir / "a", h.dir / "b"]
    for d in dirs:
        d.mkdir()
        shutil.copy2(real, d / "python3")
    script = h.script("which.py", 'print(os.path.realpath("/proc/self/exe"), os.getsid(0))\n')
    system_path = os.environ.get("PATH", "")

    def call(which: int, *options: str) -> tuple:
        env = h.env({"PATH": f"{dirs[which]}:{system_path}"})
        got = h.call_argv([h.client, *options, "-U", "python3", str(script)], env, None, None, None, 30)
        assert got.returncode == 0, got.text()
        exe, sid = got.out.decode().split()
        return exe, int(sid)

    servers: list = [set(), set()]
    try:
        for i in range(10):
            which = i % 2
            exe, sid = call(which)
            assert exe == str(dirs[which] / "python3"), f"call {i} ran {exe}"
            if i >= 2:  # each PATH's first call runs in place, in our session
                servers[which].add(sid)
        assert [len(s) for s in servers] == [1, 1], f"a server was restarted: {servers}"
        assert servers[0] != servers[1]
    finally:
        for which in (0, 1):
            env = h.env({"PATH": f"{dirs[which]}:{system_path}"})
            h.call_argv([h.client, "--kill", "-U", "python3", str(script)], env, None, None, None, 30)
