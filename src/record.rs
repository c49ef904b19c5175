//! Server records (protocol.md §8): what `prefork-interp --list` shows of
//! each server, shared by the client, which writes a record when it starts
//! a server, and the Rust server side, which keeps its own line in it up
//! to date.
//!
//! ```text
//!   m<IDENT> in the run directory, mode 0600, one `key=value` per line:
//!     record=1                       the format
//!     ident=...  interpreter=...  binary=...  script=...  cwd=...
//!     started=UNIX-SECONDS           written by the client, once
//!     server=PID TICKS LIB CALLS RUNNING LAST    appended by the server,
//!                                    fixed width, rewritten in place
//! ```
//!
//! Values are bytes; bytes below 0x20, from 0x7f, and `%` are written
//! `%HH`. The client passes the record's path at the end of
//! `PREFORK_INTERP`, announced by the item `record1`. A server without a
//! record (started by the C client, or by a library that ignores
//! `record1`) is listed with what the client can see of it.

use std::ffi::OsStr;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

/// The `PREFORK_INTERP` item that announces the record fd.
pub const RECORD1: &str = "record1";

/// The record's first line.
pub const FORMAT_LINE: &str = "record=1";

/// Length of the server's line, newline included: `server=`, then
/// `PID(10) TICKS(20) LIBRARY(8) CALLS(12) RUNNING(6) LAST(12)`.
pub const SERVER_LINE_LEN: usize = 7 + 10 + 1 + 20 + 1 + 8 + 1 + 12 + 1 + 6 + 1 + 12 + 1;

/// Escape a value for a record line.
pub fn escape(value: &[u8]) -> String {
    let mut out = String::with_capacity(value.len());
    for &b in value {
        if b < 0x20 || b == 0x7f || b == b'%' || b >= 0x80 {
            out.push_str(&format!("%{b:02X}"));
        } else {
            out.push(b as char);
        }
    }
    out
}

/// Undo [`escape`]; a malformed escape is kept as it is.
pub fn unescape(value: &str) -> Vec<u8> {
    let b = value.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && let Some(hex) = value.get(i + 1..i + 3)
            && let Ok(byte) = u8::from_str_radix(hex, 16)
        {
            out.push(byte);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

/// What the client writes when it starts a server.
pub fn client_part(items: &[(&str, &OsStr)]) -> Vec<u8> {
    let mut out = format!("{FORMAT_LINE}\n");
    for (key, value) in items {
        out.push_str(&format!("{key}={}\n", escape(value.as_bytes())));
    }
    out.into_bytes()
}

/// The server's line: who it is and what it has done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerLine {
    /// The server's pid.
    pub pid: i32,
    /// Its start time in clock ticks after boot (`/proc/PID/stat` field
    /// 22): with the pid, it names the process even after pid reuse.
    pub start_ticks: u64,
    /// `python`, `perl` or `rust`.
    pub library: String,
    /// Calls started (the first run in place included).
    pub calls: u64,
    /// Calls running now.
    pub running: u32,
    /// When the last call started (Unix seconds; 0: none yet).
    pub last_call: i64,
}

impl ServerLine {
    /// The fixed-width line, newline included ([`SERVER_LINE_LEN`] bytes).
    pub fn encode(&self) -> String {
        format!(
            "server={:>10} {:>20} {:<8} {:>12} {:>6} {:>12}\n",
            self.pid,
            self.start_ticks,
            &self.library[..self.library.len().min(8)],
            self.calls,
            self.running,
            self.last_call
        )
    }

    /// Parse the value of a `server=` line.
    pub fn parse(value: &str) -> Option<ServerLine> {
        let mut w = value.split_whitespace();
        let line = ServerLine {
            pid: w.next()?.parse().ok()?,
            start_ticks: w.next()?.parse().ok()?,
            library: w.next()?.to_string(),
            calls: w.next()?.parse().ok()?,
            running: w.next()?.parse().ok()?,
            last_call: w.next()?.parse().ok()?,
        };
        w.next().is_none().then_some(line)
    }
}

/// A record as read back: its items in order, and the server's line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Record {
    /// `key` and unescaped value of each line but the server's.
    pub items: Vec<(String, Vec<u8>)>,
    /// The server's line, if it has written one.
    pub server: Option<ServerLine>,
}

impl Record {
    /// Parse a record; `None` unless it starts with [`FORMAT_LINE`].
    pub fn parse(bytes: &[u8]) -> Option<Record> {
        let text = String::from_utf8_lossy(bytes);
        let mut lines = text.lines();
        if lines.next()? != FORMAT_LINE {
            return None;
        }
        let mut record = Record::default();
        for line in lines {
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            if key == "server" {
                record.server = ServerLine::parse(value);
            } else {
                record.items.push((key.to_string(), unescape(value)));
            }
        }
        Some(record)
    }

    /// The value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<&[u8]> {
        self.items
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_slice())
    }
}

/// The server's side: its line in the record, kept up to date with one
/// `pwrite` per change.
#[derive(Debug)]
pub struct ServerRecord {
    fd: OwnedFd,
    offset: i64,
    /// The line as it stands; change it, then [`ServerRecord::write`].
    pub line: ServerLine,
}

impl ServerRecord {
    /// Append `line` to the record open (read-write) on `fd` and keep it
    /// there.
    pub fn append(fd: OwnedFd, line: ServerLine) -> std::io::Result<ServerRecord> {
        let offset = nix::unistd::lseek(&fd, 0, nix::unistd::Whence::SeekEnd)?;
        let record = ServerRecord { fd, offset, line };
        record.write()?;
        Ok(record)
    }

    /// Where the last-error line goes: just after ours.
    pub fn error_offset(&self) -> u64 {
        self.offset as u64 + SERVER_LINE_LEN as u64
    }

    /// Write the line in place.
    pub fn write(&self) -> std::io::Result<()> {
        let text = self.line.encode();
        let n = nix::sys::uio::pwrite(self.fd.as_fd(), text.as_bytes(), self.offset)?;
        if n != text.len() {
            return Err(std::io::Error::other("short write to the server record"));
        }
        Ok(())
    }
}

/// This process's start time in clock ticks after boot (`/proc/self/stat`
/// field 22), 0 if it cannot be read.
pub fn start_ticks(pid: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let rest = &s[s.rfind(')')? + 2..];
            rest.split(' ').nth(19)?.parse().ok()
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_round_trips_every_byte() {
        let all: Vec<u8> = (0..=255).collect();
        let text = escape(&all);
        assert!(!text.contains('\n'));
        assert_eq!(unescape(&text), all);
        assert_eq!(escape(b"/a b/c.py"), "/a b/c.py");
    }

    #[test]
    fn the_server_line_is_fixed_width_and_parses_back() {
        let line = ServerLine {
            pid: 4242,
            start_ticks: 123_456_789,
            library: "rust".into(),
            calls: 17,
            running: 2,
            last_call: 1_764_370_000,
        };
        let text = line.encode();
        assert_eq!(text.len(), SERVER_LINE_LEN);
        let max = ServerLine {
            pid: i32::MAX,
            start_ticks: u64::MAX,
            library: "longname-cut".into(),
            calls: 999_999_999_999,
            running: 999_999,
            last_call: 999_999_999_999,
        };
        assert_eq!(max.encode().len(), SERVER_LINE_LEN);
        let value = text.strip_prefix("server=").unwrap().trim_end();
        assert_eq!(ServerLine::parse(value), Some(line));
    }

    #[test]
    fn a_record_parses_with_and_without_the_server_line() {
        let mut bytes = client_part(&[
            ("ident", OsStr::new("abc")),
            ("script", OsStr::new("/t/a\nb.py")),
        ]);
        let r = Record::parse(&bytes).unwrap();
        assert_eq!(r.get("ident"), Some(&b"abc"[..]));
        assert_eq!(r.get("script"), Some(&b"/t/a\nb.py"[..]));
        assert!(r.server.is_none());
        bytes.extend_from_slice(
            ServerLine {
                pid: 1,
                start_ticks: 2,
                library: "python".into(),
                calls: 3,
                running: 0,
                last_call: 5,
            }
            .encode()
            .as_bytes(),
        );
        assert_eq!(Record::parse(&bytes).unwrap().server.unwrap().calls, 3);
        assert!(Record::parse(b"something else\n").is_none());
    }
}
