#!/usr/bin/env python3
"""Exit statuses stay exact under load, in all three libraries.

For each library (Python ``prefork_interp``, Perl ``Prefork::Interp``, and
the Rust ``prefork_interp::server`` in the ``probe`` example), a script or
program in a private temp dir ends each call one of the ways the library
has, chosen by its arguments:

- Python: falling off the end, ``sys.exit(n)``, ``raise SystemExit(n)``,
  ``sys.exit("message")``, an uncaught exception, an uncaught
  ``KeyboardInterrupt``, ``os._exit(n)``, ``sys.exit(n)`` and
  ``os._exit(n)`` from an ``atexit`` handler, ``os.execv`` of
  ``sh -c 'exit n'``, and ``os.kill`` of itself with SIGTERM and SIGKILL;
- Perl: falling off the end, ``exit n``, ``die`` (with ``$!`` 0 and with
  ``$!`` set to n), ``exit n`` inside an ``END`` block, ``$? = n`` inside an
  ``END`` block, ``POSIX::_exit(n)``, ``exec`` of ``sh -c 'exit n'``, and
  ``kill`` of itself with TERM and KILL;
- Rust (``probe``): returning from ``main``, ``std::process::exit(n)``, a
  panic, exec of ``sh -c 'exit n'``, and raising SIGTERM and SIGKILL.

What each call should give (its exit status, or the signal it dies of, and
its stdout) is learnt from a direct run of the same script with the same
arguments, once per path and n; nothing is hard-coded.  Then, per library:
``--calls`` consecutive warm calls through the client, cycling through the
paths with n running 0..255 for each path, and ``--concurrent`` calls all
started at once (each with its own path and n), every one compared with
its direct run.

Prints one line per library (calls, wrong, concurrent calls, wrong, median
time per consecutive call including spawning the client from Python), the
details of any wrong call, and exits 1 if any call was wrong.  A call is
wrong if its status differs from the direct run's, or its stdout does
(counted separately).

Every server it starts is stopped at the end (``--kill``, then any leftover
process of its temp dir by pid), also on errors and ^C.  Builds the client
and the ``probe`` example first (``cargo build --release``) unless
``--client`` is given.

Usage: bench/statuses.py [--calls N] [--concurrent N]
                         [--only python|perl|rust] [--client PATH]
                         [--python PATH] [--perl PATH]
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

TOP = Path(__file__).resolve().parent.parent
CALL_TIMEOUT = 60.0  # seconds; a call taking longer counts as wrong

PYTHON_SCRIPT = """\
import atexit, os, signal, sys
import prefork_interp
prefork_interp.initialisation_complete()
how = sys.argv[1]
n = int(sys.argv[2]) if len(sys.argv) > 2 else None
print(how, n)
if how == "end":
    pass
elif how == "sys.exit":
    sys.exit(n)
elif how == "raise":
    raise SystemExit(n)
elif how == "sys.exit-message":
    sys.exit("statuses: exiting with a message")
elif how == "exception":
    raise RuntimeError("statuses: an uncaught exception")
elif how == "KeyboardInterrupt":
    raise KeyboardInterrupt
elif how == "os._exit":
    os._exit(n)
elif how == "atexit-sys.exit":
    atexit.register(sys.exit, n)
elif how == "atexit-os._exit":
    atexit.register(os._exit, n)
elif how == "exec":
    os.execv("/bin/sh", ["sh", "-c", f"exit {n}"])
elif how == "SIGTERM":
    os.kill(os.getpid(), signal.SIGTERM)
    signal.pause()
elif how == "SIGKILL":
    os.kill(os.getpid(), signal.SIGKILL)
    signal.pause()
else:
    sys.exit(f"statuses: unknown path {how}")
"""

# (path, takes n)
PYTHON_PATHS = [
    ("end", False),
    ("sys.exit", True),
    ("raise", True),
    ("sys.exit-message", False),
    ("exception", False),
    ("KeyboardInterrupt", False),
    ("os._exit", True),
    ("atexit-sys.exit", True),
    ("atexit-os._exit", True),
    ("exec", True),
    ("SIGTERM", False),
    ("SIGKILL", False),
]

PERL_SCRIPT = """\
use strict;
use warnings;
use lib '{lib}';
use POSIX ();
use Prefork::Interp;
prefork_initialisation_complete();
our ($END_EXIT, $END_STATUS);
END {{
    $? = $END_STATUS if defined $END_STATUS;
    exit $END_EXIT if defined $END_EXIT;
}}
my ($how, $n) = @ARGV;
print "$how ", $n // 'none', "\\n";
if ($how eq 'end') {{ }}
elsif ($how eq 'exit') {{ exit $n }}
elsif ($how eq 'die') {{ $! = 0; $? = 0; die "statuses: dying\\n" }}
elsif ($how eq 'die-errno') {{ $! = $n; die "statuses: dying with \\$! = $n\\n" }}
elsif ($how eq 'END-exit') {{ $END_EXIT = $n; exit 1 }}
elsif ($how eq 'END-status') {{ $END_STATUS = $n; exit 2 }}
elsif ($how eq 'POSIX::_exit') {{ POSIX::_exit($n) }}
elsif ($how eq 'exec') {{ exec '/bin/sh', '-c', "exit $n" or die "exec: $!\\n" }}
elsif ($how eq 'TERM') {{ kill TERM => $$; sleep 10; exit 99 }}
elsif ($how eq 'KILL') {{ kill KILL => $$; sleep 10; exit 99 }}
else {{ die "statuses: unknown path $how\\n" }}
"""

PERL_PATHS = [
    ("end", False),
    ("exit", True),
    ("die", False),
    ("die-errno", True),
    ("END-exit", True),
    ("END-status", True),
    ("POSIX::_exit", True),
    ("exec", True),
    ("TERM", False),
    ("KILL", False),
]

# The probe example takes its command from PROBE and ignores its first
# argument (the client counts it as the script: fixed, so one server).
# path: (PROBE command, takes n, arguments after the first given n)
RUST_PATHS = {
    "return": ("args", False, lambda n: []),
    "exit": ("exit", True, lambda n: [str(n)]),
    "panic": ("panic", False, lambda n: []),
    "exec": ("exec", True, lambda n: ["/bin/sh", "-c", f"exit {n}"]),
    "SIGTERM": ("signal", False, lambda n: [str(int(signal.SIGTERM))]),
    "SIGKILL": ("signal", False, lambda n: [str(int(signal.SIGKILL))]),
}


@dataclass
class Library:
    name: str
    interp: list[str]  # after "-U": the interpreter and the script (for
    # the probe, its first argument: the client counts it as the script)
    paths: list[tuple[str, bool]]
    rust: bool = False
    calls: list[tuple[str, int | None]] = field(default_factory=list)

    def call(self, path: str, n: int | None) -> tuple[list[str], dict[str, str]]:
        """The arguments after ``interp``, and extra environment, of a call."""
        if self.rust:
            cmd, _, args = RUST_PATHS[path]
            return args(n), {"PROBE": cmd}
        return [path] + ([] if n is None else [str(n)]), {}


@dataclass
class Result:
    returncode: int
    stdout: bytes
    stderr: bytes = b""


def describe(rc: int) -> str:
    if rc < 0:
        try:
            return f"killed by {signal.Signals(-rc).name}"
        except ValueError:
            return f"killed by signal {-rc}"
    return f"exit {rc}"


class Bench:
    def __init__(self, args: argparse.Namespace, work: Path):
        self.args = args
        self.work = work
        self.client = args.client
        env = {k: v for k, v in os.environ.items()
               if k not in ("PYTHONUNBUFFERED", "PREFORK_INTERP", "PROBE") and not k.startswith("PROBE_")}
        env["PYTHONPATH"] = str(TOP / "python")
        env["PREFORK_INTERP_RUN_DIR"] = str(work / "run")
        self.env = env
        self.started: list[Library] = []  # libraries whose server may be running
        self.children: list[subprocess.Popen] = []

    # -- the libraries -------------------------------------------------

    def library(self, name: str) -> Library:
        if name == "python":
            script = self.work / "statuses.py"
            script.write_text(PYTHON_SCRIPT)
            return Library("python", [self.args.python, str(script)], PYTHON_PATHS)
        if name == "perl":
            script = self.work / "statuses.pl"
            script.write_text(PERL_SCRIPT.format(lib=TOP / "perl" / "lib"))
            return Library("perl", [self.args.perl, str(script)], PERL_PATHS)
        probe = self.work / "probe"  # a private copy: a server of its own
        shutil.copy2(TOP / "target" / "release" / "examples" / "probe", probe)
        return Library("rust", [str(probe), "same"], [(p, v[1]) for p, v in RUST_PATHS.items()], rust=True)

    # -- running calls -------------------------------------------------

    def argv(self, lib: Library, path: str, n: int | None, served: bool) -> tuple[list[str], dict[str, str]]:
        args, extra = lib.call(path, n)
        argv = ([self.client, "-U"] if served else []) + lib.interp + args
        return argv, dict(self.env, **extra)

    def direct(self, lib: Library, key: tuple[str, int | None]) -> Result:
        argv, env = self.argv(lib, *key, served=False)
        env.pop("PREFORK_INTERP_RUN_DIR")
        p = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, capture_output=True, timeout=CALL_TIMEOUT)
        return Result(p.returncode, p.stdout, p.stderr)

    def served(self, lib: Library, path: str, n: int | None) -> Result:
        argv, env = self.argv(lib, path, n, served=True)
        try:
            p = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, capture_output=True, timeout=CALL_TIMEOUT)
        except subprocess.TimeoutExpired as e:
            return Result(999, e.stdout or b"", (e.stderr or b"") + b"\n[timed out]")
        return Result(p.returncode, p.stdout, p.stderr)

    # -- one library ---------------------------------------------------

    def run(self, name: str) -> tuple[int, list[str]]:
        lib = self.library(name)
        paths = lib.paths

        def key(path: str, takes_n: bool, n: int) -> tuple[str, int | None]:
            return (path, n if takes_n else None)

        sequence = [key(*paths[i % len(paths)], (i // len(paths)) % 256) for i in range(self.args.calls)]
        together = [key(*paths[i % len(paths)], (i * 37 + 11) % 256) for i in range(self.args.concurrent)]

        wanted = sorted(set(sequence) | set(together) | {key(*paths[0], 0)}, key=repr)
        started = time.monotonic()
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=2)
        try:
            expect = dict(zip(wanted, pool.map(lambda k: self.direct(lib, k), wanted)))
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        print(f"{name}: {len(wanted)} direct runs in {time.monotonic() - started:.0f} s", file=sys.stderr)

        problems: list[str] = []
        counts: collections.Counter[str] = collections.Counter()

        def check(phase: str, i: int, k: tuple[str, int | None], got: Result) -> tuple[bool, bool]:
            want = expect[k]
            bad_status = got.returncode != want.returncode
            bad_out = got.stdout != want.stdout
            if bad_status or bad_out:
                label = f"{name} {phase} call {i}: {k[0]}" + ("" if k[1] is None else f" n={k[1]}")
                detail = (f"{describe(got.returncode)}, direct run {describe(want.returncode)}" if bad_status
                          else f"stdout {got.stdout[-80:]!r}, direct run {want.stdout[-80:]!r}")
                counts[f"{name} {phase} calls: {k[0]}: {'status' if bad_status else 'stdout'} wrong"] += 1
                if len(problems) < 20:
                    problems.append(f"{label}: {detail}; stderr {got.stderr[-300:]!r}")
            return bad_status, bad_out

        # The first call starts the server (and runs in place): not counted.
        self.started.append(lib)
        first = key(*paths[0], 0)
        first_bad = any(check("first (cold)", 0, first, self.served(lib, *first)))

        wrong = wrong_out = 0
        times = []
        for i, k in enumerate(sequence):
            t0 = time.monotonic()
            got = self.served(lib, *k)
            times.append(time.monotonic() - t0)
            bad_status, bad_out = check("consecutive", i, k, got)
            wrong += bad_status
            wrong_out += bad_out and not bad_status

        c_wrong, c_wrong_out, c_time = self.together(lib, together, check)

        median = f"{statistics.median(times) * 1000:.1f}" if times else "-"
        line = (f"{name}: {len(sequence)} consecutive warm calls, {wrong} wrong; "
                f"{len(together)} concurrent calls, {c_wrong} wrong; median {median} ms per call")
        if wrong_out or c_wrong_out:
            line += f" (also {wrong_out} + {c_wrong_out} with wrong stdout)"
        line += f"; {len(together)} concurrent in {c_time:.1f} s"
        if first_bad:
            line += "; the first (cold) call was wrong too"
        self.stop(lib)
        summary = [f"{v} x {k}" for k, v in sorted(counts.items())]
        bad = first_bad + wrong + wrong_out + c_wrong + c_wrong_out
        return bad, [line] + (summary + problems if bad else [])

    def together(self, lib: Library, keys: list, check) -> tuple[int, int, float]:
        out_dir = self.work / f"concurrent-{lib.name}"
        out_dir.mkdir()
        procs = []
        t0 = time.monotonic()
        for i, k in enumerate(keys):
            argv, env = self.argv(lib, *k, served=True)
            with open(out_dir / f"{i}.out", "wb") as out, open(out_dir / f"{i}.err", "wb") as err:
                p = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err)
            self.children.append(p)
            procs.append(p)
        deadline = time.monotonic() + CALL_TIMEOUT + len(keys)
        codes = []
        for p in procs:
            try:
                codes.append(p.wait(timeout=max(0.1, deadline - time.monotonic())))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
                codes.append(999)
        elapsed = time.monotonic() - t0
        self.children = []
        wrong = wrong_out = 0
        for i, (k, rc) in enumerate(zip(keys, codes)):
            got = Result(rc, (out_dir / f"{i}.out").read_bytes(), (out_dir / f"{i}.err").read_bytes())
            bad_status, bad_out = check("concurrent", i, k, got)
            wrong += bad_status
            wrong_out += bad_out and not bad_status
        return wrong, wrong_out, elapsed

    # -- cleaning up ---------------------------------------------------

    def stop(self, lib: Library) -> None:
        if lib in self.started:
            subprocess.run([self.client, "--kill", "-U", *lib.interp], env=self.env,
                           stdin=subprocess.DEVNULL, capture_output=True, timeout=CALL_TIMEOUT)
            self.started.remove(lib)

    def cleanup(self) -> None:
        for p in self.children:
            if p.poll() is None:
                p.kill()
                p.wait()
        for lib in list(self.started):
            try:
                self.stop(lib)
            except (OSError, subprocess.SubprocessError) as e:
                print(f"statuses.py: stopping the {lib.name} server: {e}", file=sys.stderr)
        # Anything left that runs from our temp dir (a server --kill did
        # not reach, a call still running): kill it by pid.
        time.sleep(0.2)
        mark = str(self.work).encode()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if mark in cmdline:
                shown = cmdline.replace(b"\0", b" ").decode(errors="replace")
                print(f"statuses.py: killing leftover process {entry.name}: {shown}", file=sys.stderr)
                try:
                    os.kill(int(entry.name), signal.SIGKILL)
                except OSError:
                    pass


def build(args: argparse.Namespace) -> None:
    """Builds what is used from this repository: the client (unless given)
    and the Rust probe example."""
    targets = []
    if args.client is None:
        # As make builds it (linked against musl where it can be).
        subprocess.run(["make", "-s", "build"], cwd=TOP, check=True)
        args.client = subprocess.run(["make", "-s", "--no-print-directory", "print-client"], cwd=TOP, check=True,
                                     capture_output=True, text=True).stdout.strip()
    if "rust" in args.only:
        targets += ["--example", "probe"]
    if targets and shutil.which("cargo"):
        subprocess.run(["cargo", "build", "--release", "--quiet", *targets], cwd=TOP, check=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=10000, help="consecutive warm calls per library (10000)")
    parser.add_argument("--concurrent", type=int, default=200, help="calls started at once per library (200)")
    parser.add_argument("--only", choices=["python", "perl", "rust"], action="append",
                        help="this library only (may be repeated; default: all three)")
    parser.add_argument("--client", help="the client (default: the one make builds, built first)")
    parser.add_argument("--python", default=sys.executable, help="the Python interpreter (default: this one)")
    parser.add_argument("--perl", default=shutil.which("perl") or "/usr/bin/perl", help="the Perl interpreter")
    args = parser.parse_args()
    args.only = args.only or ["python", "perl", "rust"]
    build(args)
    if not (os.path.isfile(args.client) and os.access(args.client, os.X_OK)):
        sys.exit(f"statuses.py: client {args.client} not found (make build)")

    work = Path(tempfile.mkdtemp(prefix="pfi-statuses-"))
    bench = Bench(args, work)
    # ^C raises KeyboardInterrupt; make SIGTERM and SIGHUP do the same, so
    # that the servers are stopped either way.
    def interrupted(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGHUP, interrupted)
    bad = 0
    try:
        for name in args.only:
            n_bad, lines = bench.run(name)
            bad += n_bad
            print("\n".join(lines), flush=True)
    except KeyboardInterrupt:
        print("statuses.py: interrupted", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        bench.cleanup()
        shutil.rmtree(work, ignore_errors=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
