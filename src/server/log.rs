//! Where the server side's messages go (docs/options.md, "Where messages
//! go"): the first caller's stderr until the server has detached; then
//! syslog when it is on and the system logger is there, a log file when
//! one is given (`Options::log_file`, or `PREFORK_INTERP_LOG`), and the
//! file `log` in the run directory when neither syslog nor a given file
//! takes them. Errors and warnings also become the server record's last
//! error (protocol.md §8), which `--list` shows.
//!
//! Messages are one line each, `prefork: <what>` in syslog (which adds the
//! program name and pid); a log file has the local time, the program name
//! and pid, and the level: `2026-11-28T23:50:01 prog[4242] warning: <what>`.
//!
//! The file and the record are opened for each message, by path: no fd of
//! ours stays open for the program's calls to inherit.

use std::ffi::CString;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use nix::syslog::{Facility, LogFlags, Priority, Severity, openlog, syslog};

/// The program's name for messages, set once by the setup run.
static PROGRAM: OnceLock<String> = OnceLock::new();

/// Where a detached server's messages go, set once by [`Log::open`].
static SINKS: Mutex<Sinks> = Mutex::new(Sinks {
    syslog: false,
    file: None,
    record: None,
});

/// A log file is renamed to `FILE.old` once it has reached this size.
pub(super) const LOG_FILE_LIMIT: u64 = 1 << 20;

/// The environment variable that gives a log file when the option does not.
pub const LOG_VAR: &str = "PREFORK_INTERP_LOG";

struct Sinks {
    syslog: bool,
    file: Option<PathBuf>,
    /// The server record and the offset of its last-error line.
    record: Option<(PathBuf, u64)>,
}

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
    fn severity(self) -> Severity {
        match self {
            Level::Err => Severity::LOG_ERR,
            Level::Warning => Severity::LOG_WARNING,
            Level::Info => Severity::LOG_INFO,
            Level::Debug => Severity::LOG_DEBUG,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Level::Err => "error",
            Level::Warning => "warning",
            Level::Info => "info",
            Level::Debug => "debug",
        }
    }
}

/// Where messages go from this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Log {
    /// Our fd 2 (the first caller's stderr, while it still is).
    Stderr,
    /// The detached server's sinks, set by [`Log::open`].
    Server,
}

impl Log {
    /// Remember the program's name for messages (the first call wins).
    pub(super) fn set_program(name: String) {
        let _ = PROGRAM.set(name);
    }

    /// Set where a detached server's messages go and return the sink to
    /// use from now on. `syslog`: the option (the system logger is used
    /// only if `/dev/log` is there); `file`: the log file asked for;
    /// `record`: the server record, whose directory (the run directory)
    /// takes the messages nothing else would.
    pub(super) fn open(syslog_on: bool, file: Option<PathBuf>, record: Option<&Path>) -> Log {
        let syslog_on =
            syslog_on && std::fs::metadata("/dev/log").is_ok_and(|m| m.file_type().is_socket());
        if syslog_on {
            let name = PROGRAM.get().map(String::as_str).unwrap_or("prefork");
            let ident = CString::new(name.replace('\0', "")).unwrap_or_default();
            // glibc keeps the pointer: the ident must live as long as the
            // process, and this runs once per server.
            let _ = openlog(
                Some(Box::leak(ident.into_boxed_c_str())),
                LogFlags::LOG_PID,
                Facility::LOG_USER,
            );
        }
        let file = file.or_else(|| {
            (!syslog_on)
                .then(|| record.and_then(Path::parent).map(|dir| dir.join("log")))
                .flatten()
        });
        let mut sinks = SINKS.lock().unwrap_or_else(|e| e.into_inner());
        sinks.syslog = syslog_on;
        sinks.file = file;
        Log::Server
    }

    /// Errors and warnings from now on also go to the record at `path`,
    /// as its last-error line at `offset` (protocol.md §8).
    pub(super) fn record_errors_in(path: PathBuf, offset: u64) {
        SINKS.lock().unwrap_or_else(|e| e.into_inner()).record = Some((path, offset));
    }

    /// In a process that takes a call: its errors are not the server's.
    pub(super) fn forget_record() {
        SINKS.lock().unwrap_or_else(|e| e.into_inner()).record = None;
    }

    /// Log `msg` at `level`.
    pub(super) fn log(self, level: Level, msg: &str) {
        let name = PROGRAM.get().map(String::as_str).unwrap_or("prefork");
        match self {
            Log::Stderr => {
                if level != Level::Debug {
                    let _ = writeln!(std::io::stderr(), "{name}: prefork: {msg}");
                }
            }
            Log::Server => {
                let sinks = SINKS.lock().unwrap_or_else(|e| e.into_inner());
                if sinks.syslog {
                    // NUL bytes cannot pass through syslog(3): shown as \0.
                    let _ = syslog(
                        Priority::new(level.severity(), Facility::LOG_USER),
                        &format!("prefork: {msg}").replace('\0', "\\0"),
                    );
                }
                if let (Some(file), true) = (&sinks.file, level != Level::Debug) {
                    let line = format!(
                        "{} {name}[{}] {}: {msg}\n",
                        crate::sys::local_time_iso(crate::sys::unix_now()),
                        std::process::id(),
                        level.name()
                    );
                    append_line(file, line.as_bytes());
                }
                if let (Some((record, offset)), true) =
                    (&sinks.record, matches!(level, Level::Err | Level::Warning))
                {
                    write_last_error(record, *offset, msg);
                }
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

/// Append one line to the log file at `path` (created 0600), first
/// renaming a full one to `PATH.old`. Best effort: there is nowhere to
/// report a failure to log.
fn append_line(path: &Path, line: &[u8]) {
    if std::fs::metadata(path).is_ok_and(|m| m.len() >= LOG_FILE_LIMIT) {
        let mut old = path.as_os_str().to_owned();
        old.push(".old");
        let _ = std::fs::rename(path, old);
    }
    let file = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path);
    if let Ok(mut file) = file {
        let _ = file.write_all(line);
    }
}

/// Write `msg` as the record's last error, at `offset`, and cut the file
/// there.
fn write_last_error(path: &Path, offset: u64, msg: &str) {
    let line = format!(
        "error={} {}\n",
        crate::sys::unix_now(),
        crate::record::escape(msg.as_bytes())
    );
    let file = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path);
    if let Ok(file) = file {
        let end = offset + line.len() as u64;
        if std::os::unix::fs::FileExt::write_all_at(&file, line.as_bytes(), offset).is_ok() {
            let _ = file.set_len(end);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tempdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("pfi-log-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_full_log_file_is_renamed_and_started_anew() {
        let d = tempdir("rotate");
        let log = d.join("log");
        std::fs::write(&log, vec![b'x'; LOG_FILE_LIMIT as usize]).unwrap();
        append_line(&log, b"fresh\n");
        assert_eq!(std::fs::read(&log).unwrap(), b"fresh\n");
        assert_eq!(
            std::fs::metadata(d.join("log.old")).unwrap().len(),
            LOG_FILE_LIMIT
        );
        append_line(&log, b"more\n");
        assert_eq!(std::fs::read(&log).unwrap(), b"fresh\nmore\n");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn the_last_error_replaces_the_one_before() {
        let d = tempdir("error");
        let record = d.join("m1");
        std::fs::write(&record, b"record=1\nserver=x\n").unwrap();
        write_last_error(&record, 18, "first, and a long one");
        write_last_error(&record, 18, "second\n%");
        let text = String::from_utf8(std::fs::read(&record).unwrap()).unwrap();
        let last = text.lines().last().unwrap();
        assert!(last.starts_with("error="), "{text}");
        assert!(last.ends_with(" second%0A%25"), "{text}");
        assert_eq!(text.lines().count(), 3, "{text}");
        let _ = std::fs::remove_dir_all(&d);
    }
}
