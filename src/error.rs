//! The crate's error type.
//!
//! Every error prints as a single line naming the operation, the object it
//! was done to and, where there is one, the operating system's reason:
//! `connect /run/user/1000/prefork-interp/s3fa…: Connection refused`.
//! The binary prefixes `prefork-interp: ` and exits 127 (see `client`).
//!
//! "The peer went away" (EOF, `ECONNRESET`, `EPIPE`) is its own kind, so
//! callers can tell a vanished client or server from a real failure: for a
//! server watching a call, a caller hanging up is not an error (design.md §5).

use std::fmt;
use std::io;

/// An error from any part of prefork-interp.
#[derive(Debug)]
pub struct Error {
    kind: Kind,
    /// Where it happened (a socket's path), if the message needs it.
    place: Option<String>,
}

#[derive(Debug)]
enum Kind {
    /// An operating-system call failed.
    Io { what: String, err: io::Error },
    /// The other end of a socket went away (EOF, reset, broken pipe).
    PeerGone { what: String },
    /// The peer sent something that is not protocol v1.
    Protocol(String),
    /// The command line is wrong.
    Usage(String),
    /// Anything else, already phrased as a complete message.
    Other(String),
}

impl Error {
    /// An OS error while doing `what` (e.g. `"connect /path"`).
    ///
    /// EOF-like errors (`UnexpectedEof`, `ECONNRESET`, `EPIPE`) become
    /// [`Error::is_peer_gone`] errors.
    pub fn io(what: impl Into<String>, err: impl Into<io::Error>) -> Error {
        let err = err.into();
        let what = what.into();
        match err.kind() {
            io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::BrokenPipe => Error {
                kind: Kind::PeerGone { what },
                place: None,
            },
            _ => Error {
                kind: Kind::Io { what, err },
                place: None,
            },
        }
    }

    /// The peer went away while we were doing `what`.
    pub fn peer_gone(what: impl Into<String>) -> Error {
        Error {
            kind: Kind::PeerGone { what: what.into() },
            place: None,
        }
    }

    /// The peer broke protocol v1.
    pub fn protocol(msg: impl Into<String>) -> Error {
        Error {
            kind: Kind::Protocol(msg.into()),
            place: None,
        }
    }

    /// A command-line mistake.
    pub fn usage(msg: impl Into<String>) -> Error {
        Error {
            kind: Kind::Usage(msg.into()),
            place: None,
        }
    }

    /// Any other failure, described by `msg`.
    pub fn msg(msg: impl Into<String>) -> Error {
        Error {
            kind: Kind::Other(msg.into()),
            place: None,
        }
    }

    /// Say where this happened (a socket's path), once: `protocol error on
    /// PLACE: ...`, `PLACE: read frame: ...`.
    pub fn at(mut self, place: impl fmt::Display) -> Error {
        if self.place.is_none() {
            self.place = Some(place.to_string());
        }
        self
    }

    /// True if the other end of a socket went away.
    pub fn is_peer_gone(&self) -> bool {
        matches!(self.kind, Kind::PeerGone { .. })
    }

    /// The OS error number, if this error came from a system call.
    pub fn raw_os_error(&self) -> Option<i32> {
        match &self.kind {
            Kind::Io { err, .. } => err.raw_os_error(),
            _ => None,
        }
    }
}

/// `strerror`-style text without Rust's " (os error N)" suffix, so our
/// messages read like the C client's.
fn os_text(err: &io::Error) -> String {
    match err.raw_os_error() {
        Some(n) => nix::errno::Errno::from_raw(n).desc().to_string(),
        None => err.to_string(),
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.kind, &self.place) {
            (Kind::Protocol(m), Some(place)) => return write!(f, "protocol error on {place}: {m}"),
            (_, Some(place)) => write!(f, "{place}: ")?,
            (_, None) => {}
        }
        match &self.kind {
            Kind::Io { what, err } => write!(f, "{what}: {}", os_text(err)),
            Kind::PeerGone { what } => write!(f, "{what}: peer closed the connection"),
            Kind::Protocol(m) => write!(f, "protocol error: {m}"),
            Kind::Usage(m) => write!(f, "{m} (try --help)"),
            Kind::Other(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for Error {}

impl From<Error> for io::Error {
    fn from(e: Error) -> io::Error {
        let kind = match &e.kind {
            Kind::Io { err, .. } => err.kind(),
            Kind::PeerGone { .. } => io::ErrorKind::UnexpectedEof,
            Kind::Protocol(_) => io::ErrorKind::InvalidData,
            Kind::Usage(_) => io::ErrorKind::InvalidInput,
            Kind::Other(_) => io::ErrorKind::Other,
        };
        io::Error::new(kind, e.to_string())
    }
}

/// Write `prefork-interp: MSG` and a newline to stderr as one write,
/// ignoring failure: a closed stderr must not turn an error message into a
/// panic (`eprintln!` panics, and with SIGPIPE ignored that aborts the
/// client with SIGABRT instead of exiting 127).
pub fn report(msg: impl fmt::Display) {
    use std::io::Write;
    let line = format!("prefork-interp: {msg}\n");
    let _ = io::stderr().lock().write_all(line.as_bytes());
}

/// Shorthand used throughout the crate.
pub type Result<T> = std::result::Result<T, Error>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_are_one_line_with_strerror_text() {
        let e = Error::io(
            "connect /tmp/x",
            io::Error::from_raw_os_error(libc::ECONNREFUSED),
        );
        assert_eq!(e.to_string(), "connect /tmp/x: Connection refused");
        assert!(!e.is_peer_gone());
        assert_eq!(e.raw_os_error(), Some(libc::ECONNREFUSED));
    }

    #[test]
    fn errors_can_name_their_socket() {
        let e = Error::protocol("got unexpected greeting 0x48545450").at("/run/s1");
        assert_eq!(
            e.to_string(),
            "protocol error on /run/s1: got unexpected greeting 0x48545450"
        );
        let e = Error::peer_gone("read frame").at("/run/s1").at("/other");
        assert_eq!(
            e.to_string(),
            "/run/s1: read frame: peer closed the connection"
        );
        assert!(e.is_peer_gone());
    }

    #[test]
    fn eof_like_errors_are_peer_gone() {
        for err in [
            io::Error::from(io::ErrorKind::UnexpectedEof),
            io::Error::from_raw_os_error(libc::ECONNRESET),
            io::Error::from_raw_os_error(libc::EPIPE),
        ] {
            let e = Error::io("read status", err);
            assert!(e.is_peer_gone(), "{e}");
            assert_eq!(e.to_string(), "read status: peer closed the connection");
        }
    }
}
