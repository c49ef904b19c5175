#!/usr/bin/env python3
"""The performance table: every figure measured side by side in one run
(hyperfine), printed as a Markdown table (figure | measured | goal), plus a
bar chart of the latencies written as SVG.

Figures (medians):

1. warm trivial call, Python / Perl (our libraries, our client), relative
   to the warm call of the Rust ``exit_with`` example (the floor);
2. that Rust warm call relative to exec'ing ``/bin/true``;
3. warm heavy call relative to warm trivial call, Python / Perl (heavy:
   boto3 + botocore + awscli; POSIX, Data::Dumper, Storable, DateTime,
   DateTime::Format::Strptime; what is not installed is skipped, and said);
4. cold first call (the one that starts the server; the server is stopped
   with ``--kill`` before each) minus the direct run, Python trivial / heavy:
   the median of the differences of pairs run one after the other (not
   hyperfine: its runs of one command all come before the other's, and
   the machine drifts meanwhile);
5. the same, Perl;
6. 8 parallel callers (``seq N | xargs -P8``) of a trivial script: calls/s
   of our client + our Python / Perl library relative to the C client +
   the reference Perl library (Proc::Prefork::Interp);
7. ``seq 16 | xargs -P8 -n1 script``, each call sleeping 0.5 s: wall time
   served (warm, our client + Python library) against the direct run.

Scripts live in a private temp dir; our client keeps its sockets in a
private run dir (PREFORK_INTERP_RUN_DIR); the C client ignores that
variable (its servers are stopped with its own ``--kill``).  Every server
started is stopped at the end, also on errors.

Needs hyperfine, the C client (chiark-utils-bin) and Proc::Prefork::Interp
(chiark-scripts), and builds our client and the exit_with example first.

Usage: bench/table.py [--runs N] [--calls N] [--svg PATH] [--python PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TOP = Path(__file__).resolve().parent.parent
C_CLIENT = "/usr/bin/prefork-interp"
REF_PM = "/usr/share/perl5/Proc/Prefork/Interp.pm"

PY_HEAVY = ["boto3", "botocore", "awscli"]
PL_HEAVY = ["POSIX", "Data::Dumper", "Storable", "DateTime", "DateTime::Format::Strptime"]


def py_script(imports: list[str], body: str = "") -> str:
    lines = [f"import {m}" for m in imports]
    lines += ["import prefork_interp", "prefork_interp.initialisation_complete()"]
    return "\n".join(lines) + "\n" + body


def pl_script(imports: list[str], reference: bool) -> str:
    lines = ["use strict;"]
    lines += [f"use {m} ();" for m in imports]
    if reference:
        # As bench/trivial.pl: the reference library loses the status of a
        # plain exit, so leave with _exit.
        if "POSIX" not in imports:
            lines.append("use POSIX ();")
        lines += ["use Proc::Prefork::Interp;", "prefork_initialisation_complete();", "POSIX::_exit(0);"]
    else:
        lines += [f"use lib '{TOP / 'perl' / 'lib'}';", "use Prefork::Interp;", "prefork_initialisation_complete();", "exit 0;"]
    return "\n".join(lines) + "\n"


def built_client() -> str:
    """The client ``make build`` builds (linked against musl where Rust's
    musl target is installed): the one the tests run and ``make install``
    installs."""
    out = subprocess.run(["make", "-s", "--no-print-directory", "print-client"], cwd=TOP, check=True,
                         capture_output=True, text=True).stdout.strip()
    return out or str(TOP / "target" / "release" / "prefork-interp")


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.ours = built_client()
        self.work = Path(tempfile.mkdtemp(prefix="pfi-table-"))
        self.env = dict(os.environ, PYTHONPATH=str(TOP / "python"), PREFORK_INTERP_RUN_DIR=str(self.work / "run"))
        self.env.pop("PYTHONUNBUFFERED", None)
        self.ours_servers: list[list[str]] = []  # [interp, script, args...] started with our client
        self.c_servers: list[list[str]] = []  # ... with the C client
        self.notes: list[str] = []
        #: Warm calls measured interleaved (``interleaved``), by name: ms.
        self.warm_interleaved: dict[str, float] = {}
        #: Figures 4 and 5: median of cold minus direct over pairs, ms.
        self.cold_diffs: dict[str, float] = {}

    # --- helpers -------------------------------------------------------
    def write(self, name: str, text: str, executable: bool = False) -> str:
        path = self.work / name
        path.write_text(text)
        if executable:
            path.chmod(0o755)
        return str(path)

    def start(self, client: str, cmd: list[str]) -> None:
        """Start (or check) a server with one call; remember to kill it."""
        (self.c_servers if client == C_CLIENT else self.ours_servers).append(cmd)
        p = subprocess.run([client, "-U", *cmd], cwd=self.work, env=self.env, capture_output=True)
        if p.returncode != 0:
            raise SystemExit(f"table.py: {client} -U {' '.join(cmd)}: status {p.returncode}\n{p.stderr.decode(errors='replace')}")

    def hyperfine(self, tag: str, commands: list[tuple[str, str]], runs: int, warmup: int, shell: bool = False,
                  prepare: list[str] | None = None, passes: int = 1) -> dict[str, float]:
        """hyperfine over all commands, in ``passes`` rounds of ``runs //
        passes`` runs each (the machine drifts: every command gets a share
        of each moment); returns the median of all of a command's times,
        in ms, by name."""
        times: dict[str, list[float]] = {name: [] for name, _ in commands}
        for i in range(passes):
            out = self.work / f"{tag}.{i}.json"
            cmd = ["hyperfine", "--runs", str(max(1, runs // passes)), "--warmup", str(warmup), "--export-json", str(out),
                   "--style", "basic"]
            if not shell:
                cmd.append("-N")
            for p in prepare or []:
                cmd += ["--prepare", p]
            for name, command in commands:
                cmd += ["-n", name, command]
            print(f"\n### {tag}: {len(commands)} commands, {runs // passes} runs each"
                  + (f", pass {i + 1} of {passes}" if passes > 1 else ""), flush=True)
            subprocess.run(cmd, cwd=self.work, env=self.env, check=True)
            for r in json.loads(out.read_text())["results"]:
                times[r["command"]] += r["times"]
        return {name: statistics.median(t) * 1000 for name, t in times.items()}

    def interleaved(self, tag: str, commands: list[tuple[str, str]], rounds: int, warmup: int) -> dict[str, float]:
        """Every command once per round, in turn (each round starting one
        command further on), ``rounds`` rounds after ``warmup`` untimed
        ones; returns each command's median wall time in ms, by name.

        hyperfine runs all of one command's runs before the next's, so the
        machine's drift (large on a shared VM) goes into the ratios: the
        Python heavy/trivial ratio read 1.22-1.41 in four runs of this
        script on the same code.  Interleaved, every command sees the same
        moments (and finds the caches as other work left them, as a call
        in real use does).  Each run is a posix_spawn and a waitpid, as little around
        the command as hyperfine -N puts, output to /dev/null."""
        argvs = [(name, shlex.split(command)) for name, command in commands]
        times: dict[str, list[float]] = {name: [] for name, _ in argvs}
        devnull = [(os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0)]
        print(f"\n### {tag}: {len(argvs)} commands interleaved, {rounds} rounds", flush=True)
        here = os.getcwd()
        os.chdir(self.work)
        try:
            for r in range(warmup + rounds):
                for i in range(len(argvs)):
                    name, argv = argvs[(r + i) % len(argvs)]
                    start = time.perf_counter()
                    pid = os.posix_spawn(argv[0], argv, self.env, file_actions=devnull)
                    _, status = os.waitpid(pid, 0)
                    elapsed = (time.perf_counter() - start) * 1000
                    if status != 0:
                        raise SystemExit(f"table.py: {' '.join(argv)}: wait status {status:#x}")
                    if r >= warmup:
                        times[name].append(elapsed)
        finally:
            os.chdir(here)
        for name, t in times.items():
            print(f"  {name}: median {statistics.median(t):.2f} ms, "
                  f"quartiles {statistics.quantiles(t, n=4)[0]:.2f}-{statistics.quantiles(t, n=4)[2]:.2f} ms")
        return {name: statistics.median(t) for name, t in times.items()}

    def pairs(self, tag: str, cmd: list[str], n: int) -> tuple[list[float], list[float]]:
        """``n`` pairs of a direct run of ``cmd`` and a cold call of it
        through our client (its server stopped first, untimed), alternating
        which goes first; wall times in ms."""
        print(f"\n### cold first call and direct run, {tag}: {n} pairs", flush=True)
        direct: list[float] = []
        served: list[float] = []
        self.timed([self.ours, "-U", *cmd])  # warm the file cache, start a server
        for i in range(n):
            subprocess.run([self.ours, "--kill", "-U", *cmd], cwd=self.work, env=self.env, capture_output=True)
            time.sleep(0.05)  # the old server's processes gone
            if i % 2:
                served.append(self.timed([self.ours, "-U", *cmd]))
                direct.append(self.timed(cmd))
            else:
                direct.append(self.timed(cmd))
                served.append(self.timed([self.ours, "-U", *cmd]))
        print(f"  direct median {statistics.median(direct):.1f} ms, cold median {statistics.median(served):.1f} ms, "
              f"median of the differences {statistics.median(c - d for c, d in zip(served, direct)):+.1f} ms")
        return direct, served

    def timed(self, argv: list[str]) -> float:
        """One run of ``argv``, output discarded: its wall time in ms."""
        start = time.perf_counter()
        p = subprocess.run(argv, cwd=self.work, env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        elapsed = (time.perf_counter() - start) * 1000
        if p.returncode != 0:
            raise SystemExit(f"table.py: {' '.join(argv)}: status {p.returncode}\n{p.stderr.decode(errors='replace')}")
        return elapsed

    def kill_all(self) -> None:
        for client, servers in ((self.ours, self.ours_servers), (C_CLIENT, self.c_servers)):
            for cmd in servers:
                p = subprocess.run([client, "--kill", "-U", *cmd], cwd=self.work, env=self.env, capture_output=True)
                if p.returncode != 0:
                    print(f"table.py: warning: {client} --kill -U {' '.join(cmd)}: status {p.returncode} "
                          f"{p.stderr.decode(errors='replace').strip()}", file=sys.stderr)

    # --- the run -------------------------------------------------------
    def run(self) -> int:
        a = self.args
        py, pl = a.python, shutil.which("perl") or "perl"
        q = shlex.quote

        py_heavy = [m for m in PY_HEAVY
                    if subprocess.run([py, "-c", f"import {m}"], capture_output=True).returncode == 0]
        pl_heavy = [m for m in PL_HEAVY
                    if subprocess.run([pl, f"-M{m} ()", "-e1"], capture_output=True).returncode == 0]
        for lang, want, have in (("Python", PY_HEAVY, py_heavy), ("Perl", PL_HEAVY, pl_heavy)):
            missing = [m for m in want if m not in have]
            if missing:
                self.notes.append(f"{lang} heavy script: skipped (not installed): {', '.join(missing)}")
        self.notes.append(f"heavy Python imports: {', '.join(py_heavy) or 'none'}; "
                          f"heavy Perl modules: {', '.join(pl_heavy) or 'none'}")

        # As an install does (pip, Debian packages): the package's bytecode is
        # compiled once, whatever PYTHONDONTWRITEBYTECODE says here.
        subprocess.run([py, "-m", "compileall", "-q", str(TOP / "python" / "prefork_interp")], check=True)

        rust = str(self.work / "exit_with")
        shutil.copy(TOP / "target" / "release" / "examples" / "exit_with", rust)
        s = {}
        for prefix in ("warm", "cold"):  # separate copies: separate servers
            s[f"{prefix}_py_trivial"] = self.write(f"{prefix}_trivial.py", py_script([]))
            s[f"{prefix}_py_heavy"] = self.write(f"{prefix}_heavy.py", py_script(py_heavy))
            s[f"{prefix}_pl_trivial"] = self.write(f"{prefix}_trivial.pl", pl_script([], False))
            s[f"{prefix}_pl_heavy"] = self.write(f"{prefix}_heavy.pl", pl_script(pl_heavy, False))
        s["ref_trivial"] = self.write("ref_trivial.pl", pl_script([], True))
        s["ref_heavy"] = self.write("ref_heavy.pl", pl_script(pl_heavy, True))
        s["cold_ref_trivial"] = self.write("cold_ref_trivial.pl", pl_script([], True))
        s["cold_ref_heavy"] = self.write("cold_ref_heavy.pl", pl_script(pl_heavy, True))
        s["par_py"] = self.write("par_trivial.py", py_script([]))
        s["par_pl"] = self.write("par_trivial.pl", pl_script([], False))
        s["par_ref"] = self.write("par_ref_trivial.pl", pl_script([], True))
        sleep_body = "import time\ntime.sleep(0.5)\n"
        s["sleep"] = self.write("sleep.py", f"#!{self.ours} -U,{py}\n" + py_script([], sleep_body), executable=True)
        # The same with room for all 8 callers (the default max_servers is 4): for information.
        s["sleep8"] = self.write("sleep8.py", f"#!{self.ours} -U,{py}\n" + py_script([], sleep_body).replace(
            "initialisation_complete()", "initialisation_complete(max_servers=8)"), executable=True)

        interp = {k: pl if path.endswith(".pl") else py for k, path in s.items()}
        ours_cmd = lambda k: f"{self.ours} -U {interp[k]} {s[k]}"  # noqa: E731
        c_cmd = lambda k: f"{C_CLIENT} -U {interp[k]} {s[k]}"  # noqa: E731

        # Start the servers measured warm (and check every script works).
        self.start(self.ours, [rust, "0"])
        for k in ("warm_py_trivial", "warm_py_heavy", "warm_pl_trivial", "warm_pl_heavy", "par_py", "par_pl", "sleep", "sleep8"):
            self.start(self.ours, [interp[k], s[k]])
        for k in ("ref_trivial", "ref_heavy", "par_ref"):
            self.start(C_CLIENT, [interp[k], s[k]])
        for k in ("cold_py_trivial", "cold_py_heavy", "cold_pl_trivial", "cold_pl_heavy"):
            self.ours_servers.append([interp[k], s[k]])  # started by the cold runs
        for k in ("cold_ref_trivial", "cold_ref_heavy"):
            self.c_servers.append([interp[k], s[k]])

        runs = a.runs
        cold_runs, batch_runs, sleep_runs = max(3, runs // 5), max(3, runs // 10), max(3, runs // 20)

        # A: warm calls (and the floors).
        warm_commands = [
            ("/bin/true", "/bin/true"),
            ("Rust exit_with, warm", f"{self.ours} -U {rust} 0"),
            ("Python trivial, warm", ours_cmd("warm_py_trivial")),
            ("Python heavy, warm", ours_cmd("warm_py_heavy")),
            ("Perl trivial, warm", ours_cmd("warm_pl_trivial")),
            ("Perl heavy, warm", ours_cmd("warm_pl_heavy")),
            ("Perl trivial, C client + Proc::Prefork::Interp, warm", c_cmd("ref_trivial")),
            ("Perl heavy, C client + Proc::Prefork::Interp, warm", c_cmd("ref_heavy")),
        ]
        warm = self.hyperfine("warm calls", warm_commands, runs=runs, warmup=10, passes=3)
        self.warm_interleaved = self.interleaved("warm calls", warm_commands, rounds=runs * 3, warmup=5)

        # B: cold first calls against direct runs, in pairs (figures 4 and 5
        # are differences of two noisy times: measured one after the other,
        # each pair in turn, so that the machine's drift hits both alike);
        # the server is stopped, untimed, before each cold call.
        cold: dict[str, float] = {}
        for lang, key in (("Python", "py"), ("Perl", "pl")):
            for kind in ("trivial", "heavy"):
                k = f"cold_{key}_{kind}"
                direct, served = self.pairs(f"{lang} {kind}", [interp[k], s[k]], cold_runs * 2)
                cold[f"{lang} {kind}, direct"] = statistics.median(direct)
                cold[f"{lang} {kind}, cold"] = statistics.median(served)
                self.cold_diffs[f"{lang} {kind}"] = statistics.median(c - d for c, d in zip(served, direct))
        cold_cmds, prepare = [], []
        for kind in ("trivial", "heavy"):
            k = f"cold_ref_{kind}"
            cold_cmds.append((f"Perl {kind}, C client + Proc::Prefork::Interp, cold", c_cmd(k)))
            prepare.append(f"{C_CLIENT} --kill -U {interp[k]} {s[k]}")
        cold.update(self.hyperfine("cold first calls, reference", cold_cmds, runs=cold_runs, warmup=1, prepare=prepare))

        # C: 8 parallel callers, N calls per batch.
        n = a.calls
        xargs = f"seq {n} | xargs -P8 -n1"
        par = self.hyperfine(f"8 parallel callers, {n} calls per batch", [
            ("Python, ours", f"{xargs} {ours_cmd('par_py')}"),
            ("Perl, ours", f"{xargs} {ours_cmd('par_pl')}"),
            ("Perl, C client + Proc::Prefork::Interp", f"{xargs} {c_cmd('par_ref')}"),
            # For information, the ceiling: the same batches of the Rust
            # example through our client, and of exec'ing /bin/true.
            # (exit_with exits with its argument: each call gets 0 instead.)
            ("Rust exit_with, ours", f"seq {n} | xargs -P8 -I{{}} {self.ours} -U {rust} 0"),
            ("/bin/true", f"{xargs} /bin/true"),
        ], runs=batch_runs, warmup=1, shell=True)

        # D: 16 calls sleeping 0.5 s, 8 at a time: served (warm) against direct.
        sl = self.hyperfine("seq 16 | xargs -P8, 0.5 s sleep", [
            ("direct", f"seq 16 | xargs -P8 -n1 {interp['sleep']} {q(s['sleep'])}"),
            ("served", f"seq 16 | xargs -P8 -n1 {q(s['sleep'])}"),
            ("served, max_servers=8", f"seq 16 | xargs -P8 -n1 {q(s['sleep8'])}"),
        ], runs=sleep_runs, warmup=1, shell=True)

        self.report(warm, cold, par, sl, n, runs, cold_runs, batch_runs, sleep_runs)
        return 0

    def report(self, warm: dict[str, float], cold: dict[str, float], par: dict[str, float], sl: dict[str, float],
               n: int, runs: int, cold_runs: int, batch_runs: int, sleep_runs: int) -> None:
        def mark(ok: bool) -> str:
            return "met" if ok else "NOT met"

        floor = warm["Rust exit_with, warm"]
        pt, ph = warm["Python trivial, warm"], warm["Python heavy, warm"]
        lt, lh = warm["Perl trivial, warm"], warm["Perl heavy, warm"]
        r1p, r1l = pt / floor, lt / floor
        r2 = floor / warm["/bin/true"]
        r3p, r3l = ph / pt, lh / lt
        d = self.cold_diffs
        ref_rate = n / par["Perl, C client + Proc::Prefork::Interp"] * 1000
        py_rate, pl_rate = n / par["Python, ours"] * 1000, n / par["Perl, ours"] * 1000
        r6p, r6l = py_rate / ref_rate, pl_rate / ref_rate
        r7 = sl["served"] / sl["direct"]

        rows = [
            ("1. warm trivial call, Python / Perl, relative to the Rust `exit_with` warm call",
             f"{r1p:.2f}× / {r1l:.2f}× ({pt:.2f} / {lt:.2f} ms vs {floor:.2f} ms) — {mark(max(r1p, r1l) <= 1.5)}",
             "≤ 1.5×"),
            ("2. Rust `exit_with` warm call relative to exec'ing `/bin/true`",
             f"{r2:.2f}× ({floor:.2f} ms vs {warm['/bin/true']:.2f} ms) — {mark(r2 <= 1.5)}", "≤ 1.5×"),
            ("3. warm heavy call relative to warm trivial, Python / Perl",
             f"{r3p:.2f}× / {r3l:.2f}× ({ph:.2f} / {lh:.2f} ms) — {mark(max(r3p, r3l) <= 1.2)}", "≤ 1.2×"),
        ]
        for i, lang in ((4, "Python"), (5, "Perl")):
            t, h = d[f"{lang} trivial"], d[f"{lang} heavy"]
            rows.append((
                f"{i}. cold first call minus direct run, trivial / heavy, {lang}",
                f"{t:+.1f} ms / {h:+.1f} ms (cold {cold[f'{lang} trivial, cold']:.1f} / {cold[f'{lang} heavy, cold']:.1f} ms, "
                f"direct {cold[f'{lang} trivial, direct']:.1f} / {cold[f'{lang} heavy, direct']:.1f} ms) — {mark(max(t, h) <= 2)}",
                "≤ +2 ms both"))
        rows += [
            ("6. 8 parallel callers of a trivial script, calls/s relative to the C client + Proc::Prefork::Interp, Python / Perl",
             f"{r6p:.2f}× / {r6l:.2f}× ({py_rate:.0f} / {pl_rate:.0f} vs {ref_rate:.0f} calls/s) — {mark(min(r6p, r6l) >= 4)}",
             "≥ 4×"),
            ("7. `seq 16 \\| xargs -P8 -n1 script`, 0.5 s sleep per call, served vs direct, Python",
             f"{r7:.3f}× ({sl['served'] / 1000:.3f} s vs {sl['direct'] / 1000:.3f} s) — {mark(r7 <= 1.10)}",
             "≤ direct + 10%"),
        ]
        print(f"\nmedians; runs: warm {runs}, cold {cold_runs}, parallel batches of {n} calls {batch_runs}, "
              f"sleep batches {sleep_runs}\n")
        print("| figure | measured | goal |\n|---|---|---|")
        for row in rows:
            print("| " + " | ".join(row) + " |")
        print()
        rust_rate, true_rate = n / par["Rust exit_with, ours"] * 1000, n / par["/bin/true"] * 1000
        self.notes.append(f"for information, figure 6's ceiling on this machine: the same batches of the Rust example "
                          f"through our client, {rust_rate / ref_rate:.2f}× ({rust_rate:.0f} calls/s), and of exec'ing "
                          f"/bin/true, {true_rate / ref_rate:.2f}× ({true_rate:.0f} calls/s)")
        wi = self.warm_interleaved
        ifloor = wi["Rust exit_with, warm"]
        ipt, ipl = wi["Python trivial, warm"], wi["Perl trivial, warm"]
        self.notes.append(
            f"for information, figures 1-3 with the warm calls interleaved ({runs * 3} rounds of one run of each "
            f"command in turn, not hyperfine's runs of one command after another): "
            f"1. {ipt / ifloor:.2f}× / {ipl / ifloor:.2f}× ({ipt:.2f} / {ipl:.2f} ms vs {ifloor:.2f} ms); "
            f"2. {ifloor / wi['/bin/true']:.2f}× ({wi['/bin/true']:.2f} ms); "
            f"3. {wi['Python heavy, warm'] / ipt:.2f}× / {wi['Perl heavy, warm'] / ipl:.2f}×")
        r7b = sl["served, max_servers=8"] / sl["direct"]
        self.notes.append(f"for information, figure 7 with `initialisation_complete(max_servers=8)` (the default is 8 per CPU): "
                          f"{r7b:.3f}× ({sl['served, max_servers=8'] / 1000:.3f} s)")
        for note in self.notes:
            print(f"- {note}")

        groups = []
        for lang in ("Python", "Perl"):
            for kind in ("trivial", "heavy"):
                bars = [("direct run", cold[f"{lang} {kind}, direct"]), ("cold first call", cold[f"{lang} {kind}, cold"]),
                        ("warm call (ours)", warm[f"{lang} {kind}, warm"])]
                if lang == "Perl":
                    bars.append(("cold first call, C client + Proc::Prefork::Interp",
                                 cold[f"Perl {kind}, C client + Proc::Prefork::Interp, cold"]))
                    bars.append(("warm call, C client + Proc::Prefork::Interp",
                                 warm[f"Perl {kind}, C client + Proc::Prefork::Interp, warm"]))
                groups.append((f"{lang} {kind}", bars))
        svg = Path(self.args.svg)
        svg.parent.mkdir(parents=True, exist_ok=True)
        svg.write_text(chart(groups, floor, warm["/bin/true"]))
        print(f"\nchart written to {svg}")


COLOURS = {"direct run": "#7f7f7f", "cold first call": "#d62728", "warm call (ours)": "#2ca02c",
           "cold first call, C client + Proc::Prefork::Interp": "#ff9896",
           "warm call, C client + Proc::Prefork::Interp": "#1f77b4"}


def chart(groups: list[tuple[str, list[tuple[str, float]]]], floor: float, true_ms: float) -> str:
    """A hand-written SVG bar chart, log scale (the values span 3 decades)."""
    import math

    bw, gap, left, top, height = 34, 40, 70, 60, 320
    width = left + sum(len(b) * bw + gap for _, b in groups) + 20
    vmax = max(v for _, bars in groups for _, v in bars)
    lo, hi = 0, math.ceil(math.log10(vmax))  # 1 ms .. 10^hi ms

    def y(v: float) -> float:
        return top + height - height * (math.log10(max(v, 1.0)) - lo) / (hi - lo)

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{top + height + 120}" '
           f'font-family="sans-serif" font-size="11">',
           f'<rect width="100%" height="100%" fill="white"/>',
           f'<text x="{left}" y="22" font-size="14" font-weight="bold">prefork-interp: time per call, median, ms '
           f'(log scale)</text>',
           f'<text x="{left}" y="40">floors: Rust exit_with warm call {floor:.2f} ms, /bin/true {true_ms:.2f} ms</text>']
    for e in range(lo, hi + 1):
        v = 10 ** e
        out.append(f'<line x1="{left}" x2="{width - 20}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{left - 6}" y="{y(v) + 4:.1f}" text-anchor="end">{v:g} ms</text>')
    x = left + gap / 2
    for name, bars in groups:
        gx = x
        for label, v in bars:
            yy = y(v)
            out.append(f'<rect x="{x}" y="{yy:.1f}" width="{bw - 4}" height="{top + height - yy:.1f}" '
                       f'fill="{COLOURS[label]}"><title>{name}, {label}: {v:.2f} ms</title></rect>')
            out.append(f'<text x="{x + (bw - 4) / 2}" y="{yy - 4:.1f}" text-anchor="middle">'
                       f'{v:.1f}</text>' if v >= 10 else
                       f'<text x="{x + (bw - 4) / 2}" y="{yy - 4:.1f}" text-anchor="middle">{v:.2f}</text>')
            x += bw
        out.append(f'<text x="{(gx + x - 4) / 2}" y="{top + height + 18}" text-anchor="middle" '
                   f'font-weight="bold">{name}</text>')
        x += gap
    ly = top + height + 40
    for i, (label, colour) in enumerate(COLOURS.items()):
        out.append(f'<rect x="{left}" y="{ly + i * 18}" width="12" height="12" fill="{colour}"/>')
        out.append(f'<text x="{left + 18}" y="{ly + i * 18 + 10}">{label}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=60,
                        help="runs per warm-call command (default 60); cold calls get runs/5, "
                             "parallel batches runs/10, sleep batches runs/20 (at least 3)")
    parser.add_argument("--calls", type=int, default=96, help="calls per parallel batch (default 96)")
    parser.add_argument("--svg", default=str(TOP / "bench" / "results" / "chart.svg"), help="chart output")
    parser.add_argument("--python", default=sys.executable, help="Python interpreter (default: this one)")
    args = parser.parse_args()
    for tool in ("hyperfine", C_CLIENT, "perl"):
        if not shutil.which(tool):
            sys.exit(f"table.py: {tool} not found")
    if not Path(REF_PM).exists():
        sys.exit(f"table.py: needs {REF_PM} (apt-get install chiark-scripts)")
    subprocess.run(["make", "-s", "build"], cwd=TOP, check=True)
    subprocess.run(["cargo", "build", "--release", "--quiet", "--example", "exit_with"], cwd=TOP, check=True)
    bench = Bench(args)
    try:
        return bench.run()
    finally:
        bench.kill_all()
        shutil.rmtree(bench.work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
