"""What a call sees: arguments, environment, stdio, current directory.

Each check compares a call through prefork-interp with a direct run of the
same script, so "as a direct run would have it" is what is tested.
"""

from __future__ import annotations

import json
import os
import pty
import stat

import pytest
from harness import PYTHON

REPORT = """\
import json, locale

def stream(s):
    buf = s.buffer
    raw = getattr(buf, "raw", buf)
    return [s.encoding, s.errors, s.line_buffering, s.write_through, type(buf).__name__,
            raw.name, s.mode, s.name, s.isatty(), s is getattr(sys, "__" + s.name[1:-1] + "__")]

report = {
    "argv": [os.fsencode(a).hex() for a in sys.argv],
    "env": {os.fsencode(k).hex(): os.fsencode(v).hex() for k, v in os.environ.items()},
    "cwd": os.getcwd(),
    "stdio": [stream(sys.stdin), stream(sys.stdout), stream(sys.stderr)],
    "lc_ctype": [locale.setlocale(locale.LC_CTYPE), os.environ.get("LC_CTYPE")],
    "dev_mode": sys.flags.dev_mode,
    "stdin": sys.stdin.read() if os.environ.get("READ_STDIN") else None,
}
if os.environ.get("REPORT_FILE"):
    with open(os.environ["REPORT_FILE"], "w") as f:
        json.dump(report, f)
else:
    print(json.dumps(report))
"""

EXT = "PREFORK_INTERP_EXT_TEST_ANNOUNCEMENT"


def _report(result):
    assert result.returncode == 0, result.text()
    return json.loads(result.out)


def _decode_env(report):
    return {bytes.fromhex(k): bytes.fromhex(v) for k, v in report["env"].items()}


def test_arguments_and_environment(harness):
    script = harness.script("report.py", REPORT)
    args = ["a b", "", "--opt=1", "non-utf8 \udcff\udcfe", "unicodé", "-"]
    env = {"FOO": "bar=baz", "EMPTY": "", "UNICODE": "é", "NONUTF8": "\udcff", EXT: "1"}
    harness.run(script)  # start the server with a different environment
    for _ in range(3):
        got = _report(harness.run(script, *args, env=env))
        want = _report(harness.direct(script, *args, env=env))
        assert got["argv"] == want["argv"]
        assert [bytes.fromhex(a) for a in got["argv"]][1:] == [os.fsencode(a) for a in args]
        got_env, want_env = _decode_env(got), _decode_env(want)
        assert EXT.encode() not in got_env, "reserved extension entries must not reach the script"
        del want_env[EXT.encode()]
        del got_env[b"PFI_TEST_RECORD"]  # the harness's, given to calls only
        assert got_env == want_env
        assert got_env[b"NONUTF8"] == b"\xff"
        assert b"PREFORK_INTERP" not in got_env


def test_relative_script_path(harness):
    harness.script("report.py", REPORT)
    got = _report(harness.run("./report.py", "x"))
    want = _report(harness.direct("./report.py", "x"))
    assert got["argv"] == want["argv"] == [b"./report.py".hex(), b"x".hex()]


def test_current_directory(harness):
    script = harness.script("report.py", REPORT)
    got = _report(harness.run(script))
    assert got["cwd"] == os.path.realpath(harness.dir)


PIPE_BODY = """\
data = sys.stdin.buffer.read()
sys.stdout.buffer.write(data[::-1])
sys.stderr.buffer.write(data[:1000])
sys.exit(len(data) % 256)
"""


def test_100k_through_pipes(harness):
    script = harness.script("pipe.py", PIPE_BODY)
    data = os.urandom(100 * 1024)
    for _ in range(3):
        got = harness.run(script, input=data, env={"PYTHONUNBUFFERED": None})
        assert got.returncode == len(data) % 256, got.text()
        assert got.out == data[::-1]
        assert got.err == data[:1000]



ORDER = """\
import json, subprocess
child = subprocess.run(["env", "-0"], capture_output=True, check=True).stdout
print(json.dumps({
    "environ": [k for k in os.environ if k != "PFI_TEST_RECORD"],
    "child": [e.split("=", 1)[0] for e in child.decode(errors="replace").split("\\0")[:-1] if not e.startswith("PFI_TEST_RECORD=")],
}))
"""


def test_environment_order(harness):
    """The order of the caller's environment, in os.environ and in the C
    environment a child process gets, is a direct run's: when the caller has
    the server's variables in another order, and when it has them in the
    same order (which the executor need not set again)."""
    script = harness.script("order.py", ORDER)
    base = harness.env()
    first = {**base, "PFI_ORDER_A": "1", "PFI_ORDER_B": "2"}
    swapped = {k: v for k, v in first.items() if k not in ("PFI_ORDER_A", "PFI_ORDER_B")}
    swapped = {"PFI_ORDER_B": "2", **swapped, "PFI_ORDER_A": "1"}
    assert list(swapped) != list(first) and swapped == first
    _report(harness.call_argv(harness.command(script), first, None, None, None, 30))  # the server
    for env in (swapped, first, swapped):
        got = _report(harness.call_argv(harness.command(script), env, None, None, None, 30))
        direct = {k: v for k, v in env.items() if k != "PFI_TEST_RECORD"}  # as harness.direct
        want = _report(harness.call_argv([PYTHON, str(script)], direct, None, None, None, 30))
        assert got == want, f"order {list(env)[:2]}..."
        assert got["environ"].index("PFI_ORDER_A") < got["environ"].index("PFI_ORDER_B") or env is swapped
    executors = harness.executors()
    assert len(executors) == 4 and len({server for _, _, server in executors}) == 1, "one server served all"


STDIO_ENVS = [
    {},
    {"PYTHONUNBUFFERED": "1"},
    {"LANG": "C"},
    {"LC_ALL": "C"},
    {"LC_ALL": "POSIX", "PYTHONCOERCECLOCALE": "0"},
    {"LANG": "xx_XX.UTF-8"},
    {"PYTHONIOENCODING": "latin-1"},
    {"PYTHONIOENCODING": ":replace"},
    {"PYTHONIOENCODING": "cp1252:ignore", "LC_ALL": "C"},
    {"PYTHONUTF8": "0", "LC_ALL": "C"},
    {"PYTHONUTF8": "0", "LANG": "C"},
    {"PYTHONUTF8": "1"},
]


def test_stdio_as_the_interpreter_makes_it(harness):
    """Encoding, errors, buffering of the new streams follow the caller's
    environment as the interpreter's start-up would, whatever the server
    started with."""
    script = harness.script("report.py", REPORT)
    base = {"PYTHONUNBUFFERED": None, "LANG": "C.UTF-8", "LC_ALL": None, "LC_CTYPE": None}
    harness.run(script, env=base)
    for extra in STDIO_ENVS:
        env = {**base, **extra, "READ_STDIN": "1"}
        got = _report(harness.run(script, env=env, input=b"a\r\nb\n\xff"))
        want = _report(harness.direct(script, env=env, input=b"a\r\nb\n\xff"))
        for key in ("stdio", "lc_ctype", "stdin"):
            assert got[key] == want[key], f"{key} with {extra}"


def test_unknown_pythonioencoding(harness):
    """As at start-up: a fatal error, status 1."""
    script = harness.script("report.py", REPORT)
    assert harness.run(script).returncode == 0  # a server, started with a good encoding
    server = harness.last_server()
    env = {"PYTHONIOENCODING": "no-such-codec"}
    got = harness.run(script, env=env)
    want = harness.direct(script, env=env)
    assert got.returncode == want.returncode == 1, got.text()
    assert got.out == want.out == b""
    assert got.err.splitlines()[:3] == want.err.splitlines()[:3], got.text()
    assert harness.run(script).returncode == 0
    assert harness.executors()[-1][2] == server and len(harness.executors()) == 2, "one server served all"


def test_stdio_on_a_terminal(harness):
    """stdin and stdout on a terminal: line buffered, as in a direct run."""
    script = harness.script("report.py", REPORT)
    report_file = harness.dir / "report.json"
    reports = []
    for call in (harness.direct, harness.run):
        master, slave = pty.openpty()
        try:
            result = call(script, stdin=slave, stdout=slave, env={"PYTHONUNBUFFERED": None, "REPORT_FILE": str(report_file)})
        finally:
            os.close(slave)
            os.close(master)
        assert result.returncode == 0, result.text()
        reports.append(json.loads(report_file.read_text()))
    assert reports[0]["stdio"][1][2] is True, "stdout on a terminal should be line buffered"
    assert reports[1]["stdio"] == reports[0]["stdio"]


def _shebang_script(harness, line):
    script = harness.script("hashbang.py", REPORT, shebang=line)
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


def test_hashbang_line(harness):
    """Run as a program: the kernel passes "-U,python" as one argument."""
    script = _shebang_script(harness, f"{harness.client} -U,{PYTHON}")
    harness.scripts.add((str(script),))
    got = _report(harness.call_argv([str(script), "x", "y"], harness.env(), None, None, None, 30))
    want = _report(harness.direct(script, "x", "y"))
    assert got["argv"] == want["argv"]


def test_interpreter_arguments_on_the_hashbang_line(our_harness):
    """Our client runs "-U,python3,-X,dev" as `python3 -X dev script`; the
    interpreter arguments are not in sys.argv."""
    harness = our_harness
    script = _shebang_script(harness, f"{harness.client} -U,{PYTHON},-X,dev")
    harness.scripts.add((str(script), "-X", "dev"))
    got = _report(harness.call_argv([str(script), "x"], harness.env(), None, None, None, 30))
    assert got["dev_mode"] is True
    assert [bytes.fromhex(a) for a in got["argv"]] == [os.fsencode(script), b"x"]


@pytest.mark.parametrize("option", ["-u", "-Xutf8"])
def test_interpreter_options_shape_stdio(our_harness, option):
    """Interpreter options on the #! line (-u, -X utf8) apply to every call,
    as they would to a direct run with them."""
    harness = our_harness
    script = harness.script("report.py", REPORT)
    env = {"PYTHONUNBUFFERED": None, "LC_ALL": "C", "PYTHONUTF8": None}
    got = _report(harness.run(script, env=env, interp=(option,)))
    want = _report(harness.call_argv([PYTHON, option, str(script)], harness.env({**env, "PFI_TEST_RECORD": None}), None, None, None, 30))
    assert got["stdio"] == want["stdio"]
