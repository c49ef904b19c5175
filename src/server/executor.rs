//! The executor (upstream part 4 step 9): the process that returns from
//! `initialisation_complete` into the program, once per call.
//!
//! ```text
//!   executor  fd0-2: the caller's (received with the request)
//!             no protocol fd: CALL and the received copies are closed;
//!             syslog closed; the program's other fds as they were
//!             environment: the caller's; SIGINT default, other signal
//!             dispositions as the program left them
//!             process group: the monitor's (the caller going away
//!             SIGINTs it)
//! ```
//!
//! The environment is replaced inside the fork itself
//! (`sys::fork_checked_with_env`), where the process is known to be
//! single-threaded.

use std::ffi::{OsStr, OsString};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};

use super::Invocation;
use super::log::Log;
use super::monitor::{EXECUTOR_SIGNALS, Signals};
use crate::error::Error;
use crate::protocol::{Call, Request, is_reserved_env};
use crate::sys;

/// What the program sees of a request: the arguments after the wire's
/// first item (the program, as the client ran it), and the environment
/// without reserved or malformed entries.
pub(super) fn invocation(request: &Request) -> Invocation {
    Invocation {
        program: request.args.first().cloned().unwrap_or_default(),
        args: request.args.get(1..).unwrap_or_default().to_vec(),
        env: request
            .env
            .iter()
            .filter(|e| !is_reserved_env(e.as_bytes()))
            .filter_map(|e| split_env(e))
            .collect(),
        served: true,
    }
}

/// `NAME=value` into its two parts; `None` without `=` or with no name.
fn split_env(entry: &OsStr) -> Option<(OsString, OsString)> {
    let bytes = entry.as_bytes();
    let eq = bytes.iter().position(|&b| b == b'=')?;
    if eq == 0 {
        return None;
    }
    Some((
        OsString::from_vec(bytes[..eq].to_vec()),
        OsString::from_vec(bytes[eq + 1..].to_vec()),
    ))
}

/// Become the executor and return the invocation to the program.
///
/// On entry: a fresh fork of the monitor, the environment already the
/// caller's; fds 0-2 the monitor's; `stdio` the caller's fds 0-2 and
/// `call` the call socket, both close-on-exec. On failure to arrange the
/// fds, log and `_exit(127)`: the caller's client then exits 127.
pub(super) fn become_executor(
    stdio: [OwnedFd; 3],
    call: Call,
    signals: Signals,
    invocation: Invocation,
    log: Log,
) -> Invocation {
    let arranged = (|| -> std::io::Result<()> {
        // Fds 0-2 are open in the monitor, so the received fds are >= 3
        // and each dup2 makes a distinct copy without close-on-exec.
        for (n, fd) in (0..).zip(&stdio) {
            sys::dup_onto(fd.as_raw_fd(), n)?;
        }
        drop(stdio);
        drop(call);
        signals.restore()?;
        for &(sig, to, _why) in EXECUTOR_SIGNALS {
            sys::set_signal(sig, to)?;
        }
        Ok(())
    })();
    if let Err(e) = arranged {
        log.err(&Error::io("prepare the call's process", e).to_string());
        sys::exit_now(127);
    }
    sys::close_syslog();
    invocation
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(s: &str) -> OsString {
        OsString::from(s)
    }

    #[test]
    fn arguments_drop_only_the_program() {
        let r = Request {
            env: vec![],
            args: vec![
                os("/p/prog"),
                os("a"),
                os(""),
                OsString::from_vec(vec![0xff]),
            ],
            ..Default::default()
        };
        let inv = invocation(&r);
        assert_eq!(inv.program(), "/p/prog");
        assert_eq!(
            inv.args(),
            [os("a"), os(""), OsString::from_vec(vec![0xff])]
        );
        assert!(inv.is_served());
        let inv = invocation(&Request::default());
        assert_eq!(inv.program(), "");
        assert!(inv.args().is_empty());
    }

    #[test]
    fn environment_drops_reserved_and_malformed_entries() {
        let r = Request {
            env: vec![
                os("A=1"),
                os("B="),
                os("C=x=y"),
                os("PREFORK_INTERP_EXT_SIGNALS=1"),
                os("NOEQUALS"),
                os("=nameless"),
                OsString::from_vec(b"D=\xfe".to_vec()),
            ],
            args: vec![],
            ..Default::default()
        };
        let inv = invocation(&r);
        assert_eq!(
            inv.env(),
            [
                (os("A"), os("1")),
                (os("B"), os("")),
                (os("C"), os("x=y")),
                (os("D"), OsString::from_vec(vec![0xfe])),
            ]
        );
    }
}
