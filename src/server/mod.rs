//! The script side for Rust programs: turn a program that has finished its
//! slow start-up into a prefork-interp server (SPEC §6).
//!
//! Run a program through the client with the program as the
//! "interpreter":
//!
//! ```text
//! prefork-interp -U /path/to/program ARGS...
//! ```
//!
//! The first call starts the program as usual. When its initialisation is
//! done it calls [`initialisation_complete`], which turns the process into
//! a server and then returns once per call, each time in a new process (a
//! fork of the initialised one) that has the caller's arguments,
//! environment and stdin/stdout/stderr. The caller gets that process's
//! exit status as its own. Run without `prefork-interp` (the
//! `PREFORK_INTERP` variable unset), [`initialisation_complete`] returns at
//! once, in the same process, with the program's own arguments.
//!
//! ```no_run
//! use prefork_interp::server::{self, Options};
//! use std::io::Write;
//!
//! fn main() {
//!     let table: Vec<u64> = (0..1_000_000).map(|i| i * i).collect(); // slow start-up
//!     let call = match server::initialisation_complete(&Options::new()) {
//!         Ok(call) => call,
//!         Err(e) => {
//!             eprintln!("squares: {e}");
//!             std::process::exit(127);
//!         }
//!     };
//!     // From here on, once per call, in a fresh process.
//!     for arg in call.args() {
//!         let n: usize = arg.to_str().and_then(|s| s.parse().ok()).unwrap_or(0);
//!         let _ = writeln!(std::io::stdout(), "{}", table.get(n).copied().unwrap_or(0));
//!     }
//! }
//! ```
//!
//! # Processes
//!
//! ```text
//!   setup ── the program as first started, runs until initialisation_complete
//!     │ fork, then setup exits 0 (the client waits for that); or, when
//!     │ the client announced inplace1, setup runs the first call itself
//!     │ and returns from initialisation_complete (protocol.md §7)
//!   server && ── setsid; stdio /dev/null; logs to syslog; accepts calls
//!     │            of its own uid and reads their handshakes; watches each
//!     │            running call (relays signals and stops, sends the status)
//!     │ fork ahead of time: pool_size spares, each waiting for a call
//!   spare → executor & ── dies with the server; given a complete call (at
//!                 most max_servers at once), leads the call's process
//!                 group and returns from initialisation_complete into
//!                 the program; the server forks a replacement
//! ```
//!
//! Files, one concern each: `setup.rs` (the `PREFORK_INTERP` fds, the
//! checks, daemonising), `serve.rs` (the server's event loop),
//! `handshake.rs` (a call's handshake, read without blocking), `reload.rs`
//! (is the program out of date?), `spares.rs` (spare executors and the
//! handover), `running.rs` (the server's watch over a running call),
//! `in_place.rs`
//! (the first call, run by the setup process), `executor.rs` (the process
//! that returns to the program, with the caller's attributes and fds),
//! `signals.rs` (every signal
//! disposition the server side sets, and the program's it restores),
//! `log.rs` (stderr or syslog).
//!
//! # Threads
//!
//! Forking a multi-threaded process is unsound: only the forking thread
//! survives in the child, and locks held by the others (the allocator's,
//! say) stay locked forever. [`initialisation_complete`] therefore refuses,
//! with an error, to start a server when the process has more than one
//! thread. Start threads only after it has returned, in each call.
//! Every fork the server side makes re-checks this.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::Result;

mod executor;
mod handshake;
mod in_place;
mod log;
mod reload;
mod running;
mod serve;
mod session;
mod setup;
mod signals;
mod spares;

/// How a server behaves: concurrency, lifetime, reloading and logging.
///
/// Built with chained setters from [`Options::new`] (the same as
/// `Options::default()`):
///
/// ```
/// use prefork_interp::server::Options;
/// use std::time::Duration;
///
/// let opts = Options::new()
///     .max_servers(8)
///     .idle_timeout(Some(Duration::from_secs(600)))
///     .also_check("/etc/myprog.conf")
///     .syslog(false);
/// assert_eq!(opts.get_max_servers(), 8);
/// ```
#[derive(Debug, Clone)]
pub struct Options {
    max_servers: usize,
    idle_timeout: Option<Duration>,
    reload_paths: Vec<PathBuf>,
    syslog: bool,
    request_timeout: Duration,
    max_errors: u32,
    pool_size: usize,
    autoreload: bool,
    log_file: Option<PathBuf>,
}

/// The default for [`Options::pool_size`]: spare executors kept. Two cover
/// a caller and the next one arriving before the first replacement is
/// forked; more only help bursts, and each costs a process (a few hundred
/// KiB of its own memory, no CPU).
pub const DEFAULT_POOL_SIZE: usize = 2;

/// Calls served at once by default, per CPU the process may run on: calls
/// often wait (on I/O, on their callers), so a few per CPU keep the machine
/// busy, while a burst of callers still cannot fork without bound.
pub const CALLS_PER_CPU: usize = 8;

/// The default for [`Options::max_servers`]: [`CALLS_PER_CPU`] per CPU
/// this process may run on (`available_parallelism`: its affinity and
/// cgroup quota), at least [`CALLS_PER_CPU`].
pub fn default_max_servers() -> usize {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    CALLS_PER_CPU * cpus
}

impl Default for Options {
    fn default() -> Options {
        Options {
            max_servers: default_max_servers(),
            idle_timeout: Some(Duration::from_secs(3600)),
            reload_paths: Vec::new(),
            syslog: true,
            request_timeout: Duration::from_secs(5),
            max_errors: 100,
            pool_size: DEFAULT_POOL_SIZE,
            autoreload: true,
            log_file: None,
        }
    }
}

impl Options {
    /// The defaults: [`default_max_servers`] calls at once (8 per CPU),
    /// quit after an hour without calls, reload when the program's
    /// executable changes, log to syslog.
    pub fn new() -> Options {
        Options::default()
    }

    /// Serve at most `n` calls at once (default [`default_max_servers`]: 8
    /// per CPU); `0` means no limit. Further callers are taken in and wait
    /// in the server until a call finishes: they never fail because the
    /// server is busy.
    pub fn max_servers(mut self, n: usize) -> Options {
        self.max_servers = n;
        self
    }

    /// Quit when no call has been running or started for this long
    /// (default one hour); `None`: never. The next caller then starts a
    /// fresh server, running the program from the top.
    pub fn idle_timeout(mut self, timeout: Option<Duration>) -> Options {
        self.idle_timeout = timeout;
        self
    }

    /// Also reload when `path` changes: when it is modified after the
    /// server started, or replaced by another file (including a file
    /// appearing where there was none). A path that disappears does not
    /// count. The program's own executable is checked too (unless
    /// [`Options::autoreload`] is off); add data and configuration files
    /// read during initialisation, or a script the program interprets.
    /// The name all three libraries use (docs/options.md); the same as
    /// [`Options::also_check`].
    pub fn autoreload_extra(mut self, path: impl Into<PathBuf>) -> Options {
        self.reload_paths.push(path.into());
        self
    }

    /// The same as [`Options::autoreload_extra`].
    pub fn also_check(self, path: impl Into<PathBuf>) -> Options {
        self.autoreload_extra(path)
    }

    /// Check the program's executable before each call and quit when it
    /// has changed, so the next caller runs the new one (default on).
    /// Off: only the [`Options::autoreload_extra`] paths are checked.
    pub fn autoreload(mut self, on: bool) -> Options {
        self.autoreload = on;
        self
    }

    /// Also write the server's messages to this file (docs/options.md,
    /// "Where messages go"): appended, one line each, renamed to
    /// `FILE.old` when it reaches 1 MiB. Unset, the `PREFORK_INTERP_LOG`
    /// environment variable of the run that starts the server gives it.
    pub fn log_file(mut self, path: impl Into<PathBuf>) -> Options {
        self.log_file = Some(path.into());
        self
    }

    /// Send the server's messages to syslog (the default, facility
    /// `LOG_USER`, when the system logger is there), or not (`false`;
    /// they then go to the log file: docs/options.md). Errors in preparing the first call
    /// run in place go to the first caller's stderr either way.
    pub fn syslog(mut self, on: bool) -> Options {
        self.syslog = on;
        self
    }

    /// How long a caller may take, from being accepted, to send its whole
    /// request (default 5 s) before the server quietly drops it. Idle or
    /// half-open connections hold no `max_servers` slot meanwhile
    /// (protocol.md §4.1). `Duration::ZERO`: no limit.
    pub fn request_timeout(mut self, timeout: Duration) -> Options {
        self.request_timeout = timeout;
        self
    }

    /// Quit after this many consecutive failures to accept or fork a call
    /// (default 100), rather than fail every caller forever.
    pub fn max_errors(mut self, n: u32) -> Options {
        self.max_errors = n;
        self
    }

    /// Keep `n` spare executors (default [`DEFAULT_POOL_SIZE`]): forks of
    /// the server made while it is idle, each waiting for a call, so no
    /// fork is on a call's critical path. A spare is replaced after it
    /// takes a call. `0`: fork each call's executor when the call comes.
    pub fn pool_size(mut self, n: usize) -> Options {
        self.pool_size = n;
        self
    }

    /// The concurrency limit set by [`Options::max_servers`].
    pub fn get_max_servers(&self) -> usize {
        self.max_servers
    }

    /// The spares kept, set by [`Options::pool_size`].
    pub fn get_pool_size(&self) -> usize {
        self.pool_size
    }

    /// The idle timeout set by [`Options::idle_timeout`].
    pub fn get_idle_timeout(&self) -> Option<Duration> {
        self.idle_timeout
    }

    /// The request timeout set by [`Options::request_timeout`].
    pub fn get_request_timeout(&self) -> Duration {
        self.request_timeout
    }

    /// The limit set by [`Options::max_errors`].
    pub fn get_max_errors(&self) -> u32 {
        self.max_errors
    }

    /// Whether the executable is checked ([`Options::autoreload`]).
    pub fn get_autoreload(&self) -> bool {
        self.autoreload
    }

    /// The extra paths checked ([`Options::autoreload_extra`]).
    pub fn get_autoreload_extra(&self) -> &[PathBuf] {
        &self.reload_paths
    }

    /// Whether syslog is on ([`Options::syslog`]).
    pub fn get_syslog(&self) -> bool {
        self.syslog
    }

    /// The log file set by [`Options::log_file`].
    pub fn get_log_file(&self) -> Option<&Path> {
        self.log_file.as_deref()
    }
}

/// One call: what [`initialisation_complete`] returns, in the process that
/// is to serve it.
///
/// The arguments are what the program would have had if it had been run
/// directly, as `std::env::args_os()` gives them. Do not use
/// `std::env::args_os()` itself after [`initialisation_complete`]: in a
/// served call it still holds the arguments of the call that started the
/// server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    program: OsString,
    args: Vec<OsString>,
    /// The environment entries, each `NAME=value` and NUL-terminated,
    /// reserved and malformed ones already left out.
    env: &'static [u8],
    served: bool,
}

impl Invocation {
    /// The arguments after the program name: `std::env::args_os().skip(1)`
    /// of a direct run.
    ///
    /// The client sends `program, [script,] args...` (SPEC §5); this is
    /// everything after `program`. So for `prefork-interp -U prog a b` it
    /// is `[a, b]`, and when `prog` is the `#!` interpreter of a script,
    /// `#!/usr/bin/prefork-interp -U,/path/prog` run as `./script a b`, it
    /// is `[./script, a, b]`, just as the kernel would have run
    /// `/path/prog ./script a b`. Words after the program on a `#!` line
    /// (`-U,/path/prog,-x`) are not sent with each call: they reach only
    /// the first run, which sees them in `std::env::args_os()` before
    /// calling [`initialisation_complete`], and they are part of the
    /// server's identity, so they are the same for every call it serves.
    pub fn args(&self) -> &[OsString] {
        &self.args
    }

    /// Consume the invocation, keeping only [`Invocation::args`].
    pub fn into_args(self) -> Vec<OsString> {
        self.args
    }

    /// The program name the caller used (`argv[0]`).
    pub fn program(&self) -> &OsStr {
        &self.program
    }

    /// The caller's environment, which is also the process's environment
    /// now, as `(name, value)` pairs in the caller's order. Entries
    /// reserved for protocol extensions ([`crate::protocol::is_reserved_env`])
    /// and malformed entries are left out. Nothing is copied: a call with
    /// a huge environment costs no more than a direct run.
    pub fn env(&self) -> impl Iterator<Item = (&OsStr, &OsStr)> {
        self.env.split(|&b| b == 0).filter_map(executor::split_env)
    }

    /// True in a call made through prefork-interp (served by a prefork
    /// server, or the first call, run by the setup process itself); false
    /// when the program runs standalone (without `PREFORK_INTERP`).
    pub fn is_served(&self) -> bool {
        self.served
    }

    /// This process as it was started, for standalone runs.
    fn standalone() -> Invocation {
        let mut argv = std::env::args_os();
        let mut env = Vec::new();
        for (k, v) in std::env::vars_os() {
            env.extend_from_slice(k.as_encoded_bytes());
            env.push(b'=');
            env.extend_from_slice(v.as_encoded_bytes());
            env.push(0);
        }
        Invocation {
            program: argv.next().unwrap_or_default(),
            args: argv.collect(),
            env: env.leak(),
            served: false,
        }
    }
}

/// Turn this process into a prefork-interp server, and return once per
/// call, each time in a new process with the caller's arguments,
/// environment and stdio.
///
/// When `PREFORK_INTERP` is unset (the program was not started by
/// `prefork-interp`), returns at once, in this process, with its own
/// arguments and environment.
///
/// Otherwise this is the setup run: it checks the variable and the fds it
/// names, forks the server and exits 0 itself (so the first caller's
/// client knows the server is up); the server serves calls until it quits
/// (idle timeout, its socket removed or replaced, the program changed on
/// disk), and each call's process returns from here. With our client
/// (which announces the protocol extension `inplace1`), the setup process
/// does not exit: it returns from here itself with the first call, as an
/// executor would, in the caller's session, leading the process group the
/// client made for it (with the terminal, as a shell's job); the server
/// serves the calls after it. In that process fds
/// 0, 1 and 2 are the caller's, the environment is the caller's
/// (`std::env::var` sees it), SIGINT has its default action (the call is
/// interrupted with SIGINT when the caller goes away), and the process
/// exit status (or the signal it dies of) is what the caller's client
/// exits with. Everything else set up before the call is inherited:
/// memory, other open fds, signal dispositions, the current directory.
///
/// # Errors
///
/// Only in the setup run, before anything has forked: the variable is
/// malformed or names fds that are not what it says, the process has more
/// than one thread, or this function was already called. The setup run
/// should print the error and exit non-zero; the first caller's client
/// passes that exit status on.
///
/// ```no_run
/// # use prefork_interp::server::{initialisation_complete, Options};
/// let call = initialisation_complete(&Options::new().max_servers(2)).unwrap_or_else(|e| {
///     eprintln!("myprog: {e}");
///     std::process::exit(127)
/// });
/// println!("called with {:?}", call.args());
/// ```
pub fn initialisation_complete(options: &Options) -> Result<Invocation> {
    let Some(value) = std::env::var_os(crate::protocol::ENV_VAR) else {
        return Ok(Invocation::standalone());
    };
    setup::become_server(value.as_encoded_bytes(), options)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn option_defaults_and_setters() {
        let o = Options::new();
        assert_eq!(o.max_servers, default_max_servers());
        assert!(o.max_servers >= CALLS_PER_CPU);
        assert_eq!(o.idle_timeout, Some(Duration::from_secs(3600)));
        assert!(o.syslog);
        assert!(o.reload_paths.is_empty());
        assert_eq!(o.pool_size, DEFAULT_POOL_SIZE);
        let o = o
            .max_servers(0)
            .idle_timeout(None)
            .syslog(false)
            .also_check("/a")
            .also_check("/b")
            .request_timeout(Duration::from_millis(10))
            .max_errors(3)
            .pool_size(0);
        assert_eq!(o.get_max_servers(), 0);
        assert_eq!(o.idle_timeout, None);
        assert_eq!(o.reload_paths, [PathBuf::from("/a"), PathBuf::from("/b")]);
        assert_eq!(o.request_timeout, Duration::from_millis(10));
        assert_eq!(o.max_errors, 3);
        assert_eq!(o.pool_size, 0);
    }
}
