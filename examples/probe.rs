//! `PROBE=COMMAND probe [ARGS...]`: a test subject for the Rust server
//! side, reporting what a call sees. The integration tests
//! (`tests/server.rs`) run it through the clients.
//!
//! The command comes from the call's environment, not its arguments: the
//! client counts the first argument as a script, part of the server's
//! identity, so a test keeps its first argument fixed to reach the same
//! server with every command.
//!
//! Commands (default `ids`; output one `key=value` line per item, flushed
//! at once; ARGS below are the arguments after the first):
//! - `args`: `program=HEX` then `arg=HEX` for every argument;
//! - `env NAME...`: `NAME=value` or `NAME unset`;
//! - `ids`: `pid= ppid= pgid= sid=` (the server is the session leader);
//! - `cat`: copy stdin to stdout, then write `to stderr` to stderr;
//! - `fds`: `fd=N TARGET` for each open fd;
//! - `exit N`; `signal N` (die of signal N); `exec PROG ARGS...`;
//!   `panic` (panic in `main`: Rust's message on stderr, exit status 101);
//! - `sleep MS [DIR]`: print `ids`, then, with DIR, create `DIR/PID` and
//!   print `concurrent=N` (the files in DIR), sleep, remove the file;
//! - `attrs`: what a process inherits from its caller: `umask=`, `nice=`,
//!   `SigIgn=` and `SigBlk=` (as `/proc/self/status` shows them), one
//!   `rlimit=R,SOFT,HARD` per resource and `fds=` (open fds 3 and up);
//! - `sigwait`: handle every catchable signal, print `ready`, then print
//!   `got=N` for the first signal that arrives and exit 0.
//!
//! Options for the server, read from the environment of the first call
//! (the setup run): `PROBE_MAX_SERVERS`, `PROBE_POOL` (spares kept),
//! `PROBE_IDLE_MS`,
//! `PROBE_REQUEST_MS`, `PROBE_ALSO_CHECK` (a path), `PROBE_SETUP_EXIT`
//! (exit with this status before initialisation_complete),
//! `PROBE_THREAD=1` (start a thread first, which must be refused),
//! `PROBE_SIGCHLD_IGN=1` (ignore SIGCHLD first, as some programs do).

use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::time::Duration;

use prefork_interp::server::{self, Options};

fn hex(s: &OsString) -> String {
    s.as_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

fn env_num(name: &str) -> Option<u64> {
    std::env::var(name).ok()?.parse().ok()
}

fn options() -> Options {
    let mut opts = Options::new().syslog(false);
    if let Some(n) = env_num("PROBE_MAX_SERVERS") {
        opts = opts.max_servers(n as usize);
    }
    if let Some(n) = env_num("PROBE_POOL") {
        opts = opts.pool_size(n as usize);
    }
    if let Some(ms) = env_num("PROBE_IDLE_MS") {
        opts = opts.idle_timeout(Some(Duration::from_millis(ms)));
    }
    if let Some(ms) = env_num("PROBE_REQUEST_MS") {
        opts = opts.request_timeout(Duration::from_millis(ms));
    }
    if let Some(path) = std::env::var_os("PROBE_ALSO_CHECK") {
        opts = opts.also_check(path);
    }
    opts
}

fn ids() -> String {
    use nix::unistd::{getpgrp, getpid, getppid, getsid};
    format!(
        "pid={} ppid={} pgid={} sid={}",
        getpid(),
        getppid(),
        getpgrp(),
        getsid(None).map(|p| p.as_raw()).unwrap_or(-1)
    )
}

fn main() {
    if let Some(code) = env_num("PROBE_SETUP_EXIT") {
        std::process::exit(code as i32);
    }
    if std::env::var_os("PROBE_SIGCHLD_IGN").is_some() {
        // SAFETY: SIG_IGN runs no code; nothing else touches SIGCHLD here.
        unsafe { libc::signal(libc::SIGCHLD, libc::SIG_IGN) };
    }
    let _thread = (std::env::var_os("PROBE_THREAD").is_some())
        .then(|| std::thread::spawn(|| std::thread::sleep(Duration::from_secs(5))));
    let call = match server::initialisation_complete(&options()) {
        Ok(call) => call,
        Err(e) => {
            eprintln!("probe: {e}");
            std::process::exit(2);
        }
    };
    let cmd = std::env::var("PROBE").unwrap_or_else(|_| "ids".into());
    let cmd = cmd.as_str();
    let rest = call.args().get(1..).unwrap_or_default();
    let mut out = std::io::stdout();
    let mut say = |line: String| {
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    };
    let num = |i: usize| -> i64 {
        rest.get(i)
            .and_then(|s| s.to_str())
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    };
    match cmd {
        "args" => {
            say(format!("program={}", hex(&call.program().to_owned())));
            for a in call.args() {
                say(format!("arg={}", hex(a)));
            }
        }
        "env" => {
            for name in rest {
                let name = name.to_string_lossy();
                match std::env::var_os(&*name) {
                    Some(v) => say(format!("{name}={}", v.to_string_lossy())),
                    None => say(format!("{name} unset")),
                }
            }
        }
        "ids" => say(ids()),
        "cat" => {
            let mut input = Vec::new();
            let _ = std::io::stdin().read_to_end(&mut input);
            let _ = std::io::stdout().write_all(&input);
            eprintln!("to stderr");
        }
        "fds" => {
            let mut fds: Vec<i32> = std::fs::read_dir("/proc/self/fd")
                .map(|d| {
                    d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                        .collect()
                })
                .unwrap_or_default();
            fds.sort_unstable();
            for fd in fds {
                if let Ok(target) = std::fs::read_link(format!("/proc/self/fd/{fd}")) {
                    say(format!("fd={fd} {}", target.display()));
                }
            }
        }
        "exit" => std::process::exit(num(0) as i32),
        "panic" => panic!("probe: panicking on purpose"),
        "signal" => {
            let sig = num(0) as libc::c_int;
            // Twice: Rust's runtime catches the first SIGSEGV or SIGBUS (to
            // detect stack overflow), resets it and returns.
            // SAFETY: raise only sends a signal to this thread.
            unsafe {
                libc::raise(sig);
                libc::raise(sig);
            }
            std::thread::sleep(Duration::from_secs(5));
            std::process::exit(99);
        }
        "exec" => {
            let Some((prog, prog_args)) = rest.split_first() else {
                std::process::exit(127);
            };
            let err = std::process::Command::new(prog).args(prog_args).exec();
            eprintln!("probe: exec: {err}");
            std::process::exit(127);
        }
        "attrs" => {
            let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
            for line in status.lines() {
                if let Some((k @ ("Umask" | "SigIgn" | "SigBlk"), v)) = line.split_once(':') {
                    say(format!("{}={}", k.to_lowercase(), v.trim()));
                }
            }
            // SAFETY: getpriority takes no pointers.
            say(format!("nice={}", unsafe {
                libc::getpriority(libc::PRIO_PROCESS, 0)
            }));
            for r in 0..16 {
                let mut l = libc::rlimit {
                    rlim_cur: 0,
                    rlim_max: 0,
                };
                // SAFETY: `l` is a valid out-pointer.
                if unsafe { libc::getrlimit(r, &mut l) } == 0 {
                    say(format!("rlimit={r},{},{}", l.rlim_cur, l.rlim_max));
                }
            }
            let mut fds: Vec<i32> = std::fs::read_dir("/proc/self/fd")
                .map(|d| {
                    d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                        .collect()
                })
                .unwrap_or_default();
            fds.retain(|&fd| {
                fd >= 3
                    && std::fs::read_link(format!("/proc/self/fd/{fd}"))
                        .is_ok_and(|t| !t.starts_with("/proc"))
            });
            fds.sort_unstable();
            say(format!("fds={fds:?}"));
        }
        "sigwait" => {
            static GOT: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);
            extern "C" fn note(sig: libc::c_int) {
                GOT.store(sig, std::sync::atomic::Ordering::SeqCst);
            }
            for sig in (1..=64).filter(|&s| ![9, 19, 32, 33].contains(&s)) {
                // SAFETY: the handler only stores to an atomic, which is
                // async-signal-safe.
                unsafe { libc::signal(sig, note as *const () as libc::sighandler_t) };
            }
            say("ready".into());
            while GOT.load(std::sync::atomic::Ordering::SeqCst) == 0 {
                // SAFETY: pause takes no arguments; a handled signal ends it.
                unsafe { libc::pause() };
            }
            say(format!(
                "got={}",
                GOT.load(std::sync::atomic::Ordering::SeqCst)
            ));
        }
        "sleep" => {
            say(ids());
            let marker = rest.get(1).map(|dir| {
                let dir = std::path::PathBuf::from(dir);
                let marker = dir.join(std::process::id().to_string());
                let _ = std::fs::write(&marker, "");
                let n = std::fs::read_dir(&dir).map(|d| d.count()).unwrap_or(0);
                say(format!("concurrent={n}"));
                marker
            });
            std::thread::sleep(Duration::from_millis(num(0) as u64));
            if let Some(marker) = marker {
                let _ = std::fs::remove_file(marker);
            }
        }
        _ => {
            eprintln!("probe: unknown command {cmd:?}");
            std::process::exit(127);
        }
    }
}
