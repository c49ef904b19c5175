//! Where the server side's messages go: the first caller's stderr until
//! the server has detached, then syslog (or nowhere, by option).
//!
//! Messages are one line each, `prefork: <what>`, and syslog adds the
//! program name and pid; on stderr they read `<program>: prefork: <what>`.

use std::ffi::CString;

use nix::syslog::{Facility, LogFlags, Priority, Severity, openlog, syslog};
use std::io::Write;
use std::sync::OnceLock;

/// The program's name for messages, set once by the setup run.
static PROGRAM: OnceLock<String> = OnceLock::new();

/// A message's importance, as syslog levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Level {
    /// Something failed.
    Err,
    /// Something odd that we carry on after.
    Warning,
    /// Normal but significant: why the server quits.
    Info,
    /// Routine: a caller that gave up, for instance.
    Debug,
}

impl Level {
    fn priority(self) -> Priority {
        let severity = match self {
            Level::Err => Severity::LOG_ERR,
            Level::Warning => Severity::LOG_WARNING,
            Level::Info => Severity::LOG_INFO,
            Level::Debug => Severity::LOG_DEBUG,
        };
        Priority::new(severity, Facility::LOG_USER)
    }
}

/// Where messages go from this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Log {
    /// Our fd 2 (the first caller's stderr, while it still is).
    Stderr,
    /// syslog, opened by [`Log::open_syslog`].
    Syslog,
    /// Nowhere.
    Off,
}

impl Log {
    /// Remember the program's name for messages (the first call wins).
    pub(super) fn set_program(name: String) {
        let _ = PROGRAM.set(name);
    }

    /// Open syslog with the program's name as its ident and return the
    /// sink to use from now on: [`Log::Syslog`] if `on`, else [`Log::Off`].
    pub(super) fn open_syslog(on: bool) -> Log {
        if !on {
            return Log::Off;
        }
        let name = PROGRAM.get().map(String::as_str).unwrap_or("prefork");
        let ident = CString::new(name.replace('\0', "")).unwrap_or_default();
        // glibc keeps the pointer: the ident must live as long as the
        // process, and this runs once per server.
        let _ = openlog(
            Some(Box::leak(ident.into_boxed_c_str())),
            LogFlags::LOG_PID,
            Facility::LOG_USER,
        );
        Log::Syslog
    }

    /// Log `msg` at `level`.
    pub(super) fn log(self, level: Level, msg: &str) {
        match self {
            Log::Off => {}
            // NUL bytes cannot pass through syslog(3): shown as \0.
            Log::Syslog => {
                let _ = syslog(
                    level.priority(),
                    &format!("prefork: {msg}").replace('\0', "\\0"),
                );
            }
            Log::Stderr => {
                if level == Level::Debug {
                    return;
                }
                let name = PROGRAM.get().map(String::as_str).unwrap_or("prefork");
                let _ = writeln!(std::io::stderr(), "{name}: prefork: {msg}");
            }
        }
    }

    /// Log at [`Level::Err`].
    pub(super) fn err(self, msg: &str) {
        self.log(Level::Err, msg);
    }

    /// Log at [`Level::Warning`].
    pub(super) fn warn(self, msg: &str) {
        self.log(Level::Warning, msg);
    }

    /// Log at [`Level::Debug`].
    pub(super) fn debug(self, msg: &str) {
        self.log(Level::Debug, msg);
    }
}
