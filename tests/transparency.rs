//! A served call behaves like a direct run (protocol.md §6, extension
//! call1), checked with the Rust server side (`examples/probe.rs`) through
//! our client: the caller's attributes and fds, every catchable signal,
//! every fatal signal's status, job control. Each test compares with the
//! same program run directly, in the same conditions.

mod common;

use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Run `cmd` with the caller's attributes this test sets: umask 027,
/// NOFILE 200/4096, no core files, nice +3, SIGINT, SIGHUP and SIGPIPE
/// ignored,
/// SIGUSR1 and SIGRTMIN+2 blocked, `extra` at fd 7.
fn with_attributes(cmd: &mut Command, extra: &OwnedFd) {
    let raw = extra.as_raw_fd();
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            libc::umask(0o027);
            let nofile = libc::rlimit {
                rlim_cur: 200,
                rlim_max: 4096,
            };
            libc::setrlimit(libc::RLIMIT_NOFILE, &nofile);
            let core = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            libc::setrlimit(libc::RLIMIT_CORE, &core);
            libc::setpriority(libc::PRIO_PROCESS, 0, 3);
            libc::signal(libc::SIGINT, libc::SIG_IGN);
            libc::signal(libc::SIGHUP, libc::SIG_IGN);
            libc::signal(libc::SIGPIPE, libc::SIG_IGN);
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGUSR1);
            libc::sigaddset(&mut set, libc::SIGRTMIN() + 2);
            libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            libc::dup2(raw, 7);
            Ok(())
        });
    }
}

fn direct(f: &Fixture, probe: &str, args: &[&str]) -> Command {
    let mut c = Command::new(&f.prog);
    c.args(args).current_dir(&f.dir).env("PROBE", probe);
    c.env_remove("PREFORK_INTERP").stdin(Stdio::null());
    c
}

#[test]
fn attributes_and_fds_are_the_callers() {
    let f = Fixture::example("attrs", "probe", Client::Ours);
    let file = std::fs::File::create(f.dir.join("seven")).unwrap();
    let extra = OwnedFd::from(file);
    let mut d = direct(&f, "attrs", &["same"]);
    with_attributes(&mut d, &extra);
    let want = f.output(d);
    assert_ok(&want);
    assert!(text(&want.stdout).contains("umask=0027"), "{want:?}");
    let sigign = text(&want.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("sigign="))
        .and_then(|h| u64::from_str_radix(h, 16).ok())
        .unwrap();
    assert_eq!(sigign & 0x1003, 0x1003, "HUP, INT, PIPE ignored: {want:?}");
    assert!(fds_of(&text(&want.stdout)).contains(&7), "{want:?}");
    // Twice: the server starts with the first call, then is reused.
    for round in ["first", "second"] {
        let mut c = f.cmd(&["same"]);
        c.env("PROBE", "attrs");
        with_attributes(&mut c, &extra);
        let got = f.output(c);
        assert_ok(&got);
        assert_eq!(text(&got.stdout), text(&want.stdout), "{round} call");
    }
    // A plain call in between gets the plain attributes, not the last ones.
    let plain = f.probe("attrs", &["same"]);
    assert!(!fds_of(&text(&plain.stdout)).contains(&7), "{plain:?}");
    assert!(!text(&plain.stdout).contains("umask=0027"), "{plain:?}");
}

/// The `fds=[..]` line of the probe's `attrs`.
fn fds_of(attrs: &str) -> Vec<i32> {
    attrs
        .lines()
        .find_map(|l| l.strip_prefix("fds=["))
        .and_then(|l| l.strip_suffix(']'))
        .map(|l| l.split(", ").filter_map(|n| n.parse().ok()).collect())
        .unwrap_or_default()
}

#[test]
fn an_extra_pipe_reaches_eof_when_the_call_ends() {
    let f = Fixture::example("pipe-eof", "probe", Client::Ours);
    for _ in 0..2 {
        let (r, w) = nix::unistd::pipe().unwrap();
        let mut c = f.cmd(&["same"]);
        c.env("PROBE", "exit");
        let raw = w.as_raw_fd();
        // SAFETY: dup2 only, between fork and exec.
        unsafe {
            c.pre_exec(move || {
                libc::dup2(raw, 4);
                Ok(())
            });
        }
        assert_ok(&f.output(c));
        drop(w);
        // Nobody holds the write end any more: EOF at once.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = std::fs::File::from(r).read_to_end(&mut buf);
            let _ = tx.send(buf);
        });
        let got = rx
            .recv_timeout(Duration::from_secs(5))
            .expect("fd 4's reader saw no EOF: someone still holds the pipe");
        assert!(got.is_empty());
    }
}

/// Spawn `cmd` (stdout piped) in its own process group, wait for its
/// `ready` line, send it `sig`, return (stdout, status).
fn signal_when_ready(mut cmd: Command, sig: i32) -> (String, std::process::ExitStatus) {
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = Running::spawn(cmd, LIMIT);
    let first = child.line();
    assert_eq!(first, "ready\n", "signal {sig}");
    // nix's Signal has no real-time signals, so libc.
    // SAFETY: kill(2) takes no pointers; the pid is our unreaped child.
    let r = unsafe { libc::kill(child.pid(), sig) };
    assert_eq!(r, 0, "kill {sig}");
    let out = child.finish();
    (text(&out.stdout), out.status)
}

#[test]
fn every_catchable_signal_reaches_the_script() {
    let f = Fixture::example("signals", "probe", Client::Ours);
    let sigs = (1..=31)
        .filter(|s| ![libc::SIGKILL, libc::SIGSTOP, libc::SIGCHLD].contains(s))
        .chain([libc::SIGRTMIN(), libc::SIGRTMIN() + 5, libc::SIGRTMAX()]);
    for sig in sigs {
        let want = signal_when_ready(direct(&f, "sigwait", &["same"]), sig);
        let mut c = f.cmd(&["same"]);
        c.env("PROBE", "sigwait");
        let got = signal_when_ready(c, sig);
        assert_eq!(want.0, format!("got={sig}\n"), "direct run, signal {sig}");
        assert_eq!(got, want, "signal {sig}");
    }
}

#[test]
fn death_by_each_fatal_signal_gives_the_direct_runs_status() {
    let f = Fixture::example("fatal", "probe", Client::Ours);
    let sigs = [
        libc::SIGHUP,
        libc::SIGINT,
        libc::SIGQUIT,
        libc::SIGILL,
        libc::SIGABRT,
        libc::SIGFPE,
        libc::SIGSEGV,
        // Not SIGPIPE: Rust's runtime ignores it, so neither run dies.
        libc::SIGALRM,
        libc::SIGTERM,
        libc::SIGUSR1,
        libc::SIGUSR2,
        libc::SIGXCPU,
        libc::SIGSYS,
        libc::SIGRTMIN() + 1,
    ];
    for sig in sigs {
        let arg = sig.to_string();
        let mut d = direct(&f, "signal", &["same", &arg]);
        with_no_core(&mut d);
        let want = f.output(d);
        let mut c = f.cmd(&["same", &arg]);
        c.env("PROBE", "signal");
        with_no_core(&mut c);
        let got = f.output(c);
        assert_eq!(want.status.signal(), Some(sig), "direct, signal {sig}");
        assert_eq!(
            got.status.signal(),
            Some(sig),
            "served, signal {sig}: {got:?}"
        );
        assert!(got.stderr.is_empty(), "{got:?}");
    }
}

fn with_no_core(cmd: &mut Command) {
    // SAFETY: setrlimit only, between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let core = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            libc::setrlimit(libc::RLIMIT_CORE, &core);
            Ok(())
        });
    }
}

#[test]
fn a_program_ignoring_sigchld_still_reports_statuses() {
    let f = Fixture::example("sigchld-ign", "probe", Client::Ours);
    for code in ["3", "0", "7"] {
        let mut c = f.cmd(&["same", code]);
        c.env("PROBE", "exit").env("PROBE_SIGCHLD_IGN", "1");
        let out = f.output(c);
        assert_eq!(out.status.code(), Some(code.parse().unwrap()), "{out:?}");
    }
}

fn state(pid: i32) -> char {
    proc_stat(pid).map_or('?', |s| s.0)
}

#[test]
fn a_stopped_script_stops_the_client_and_continues_with_it() {
    let f = Fixture::example("jobs", "probe", Client::Ours);
    let mut c = f.cmd(&["same", "1500"]);
    c.env("PROBE", "sleep");
    c.process_group(0);
    let mut child = f.spawn(c);
    let client = child.pid();
    let ids = child.line();
    let script: i32 = ids
        .split_whitespace()
        .find_map(|w| w.strip_prefix("pid="))
        .unwrap()
        .parse()
        .unwrap();
    // As a shell's `kill -TSTP`: the script stops, then so does the client.
    kill(Pid::from_raw(client), Signal::SIGTSTP).unwrap();
    assert!(
        wait_until(Duration::from_secs(5), || state(script) == 'T'
            && state(client) == 'T'),
        "script {} client {}",
        state(script),
        state(client)
    );
    // As `fg`: SIGCONT to the job continues the client and the script.
    nix::sys::signal::killpg(Pid::from_raw(client), Signal::SIGCONT).unwrap();
    assert!(
        wait_until(Duration::from_secs(5), || state(script) != 'T'
            && state(client) != 'T'),
        "script {} client {}",
        state(script),
        state(client)
    );
    let out = child.finish();
    assert!(out.status.success(), "{out:?}");
}
