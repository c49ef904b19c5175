//! The executor (upstream part 4 step 9): the process that returns from
//! `initialisation_complete` into the program, once per call.
//!
//! ```text
//!   executor  fd0-2: the caller's (received with the request); with
//!             call1 the caller's other fds at their numbers too
//!             no protocol fd: CALL and the received copies are closed;
//!             syslog closed; the program's other fds as they were
//!             environment: the caller's; with call1 its umask, rlimits,
//!             nice value; signals: see `signals.rs`
//!             process group: its own, the call's (the caller going away
//!             SIGINTs it; SIGG frames signal it)
//! ```
//!
//! The environment is replaced inside the fork itself
//! (`sys::fork_checked_with_env`), where the process is known to be
//! single-threaded.

use std::ffi::{OsStr, OsString};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};

use nix::sys::stat::{Mode, umask};
use nix::unistd::{Pid, dup2_stderr, dup2_stdin, dup2_stdout, setpgid};

use super::Invocation;
use super::log::Log;
use super::signals::Program;
use crate::error::Error;
use crate::protocol::{Attributes, Call, Request};
use crate::sys;

/// What extension `call1` brought: the caller's attributes and its extra
/// fds, each with its number in the caller.
pub(super) type Extension = (Attributes, Vec<(RawFd, OwnedFd)>);

/// What the program sees of a request: the arguments after the wire's
/// first item (the program, as the client ran it), and the environment
/// without malformed entries (reserved ones are the request's offer).
pub(super) fn invocation(request: &Request) -> Invocation {
    Invocation {
        program: request.args.first().cloned().unwrap_or_default(),
        args: request.args.get(1..).unwrap_or_default().to_vec(),
        env: request.env.iter().filter_map(|e| split_env(e)).collect(),
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
/// caller's; fds 0-2 the monitor's; `stdio` the caller's fds 0-2, `call`
/// the call socket and the extension's fds, all close-on-exec. On failure
/// to arrange the process, log and `_exit(127)`: the caller's client then
/// exits 127.
pub(super) fn become_executor(
    stdio: [OwnedFd; 3],
    call: Call,
    extension: Option<Extension>,
    program: &Program,
    invocation: Invocation,
    log: Log,
) -> Invocation {
    let (attrs, extra) = extension.unwrap_or_default();
    let arranged = (|| -> std::io::Result<Vec<(RawFd, String)>> {
        // protocol.md §6.4 step 1: lead the call's process group.
        setpgid(Pid::from_raw(0), Pid::from_raw(0))?;
        // Fds 0-2 are open in the monitor, so the received fds are >= 3
        // and each dup2 makes a distinct copy without close-on-exec.
        let [stdin, stdout, stderr] = &stdio;
        dup2_stdin(stdin)?;
        dup2_stdout(stdout)?;
        dup2_stderr(stderr)?;
        drop(stdio);
        drop(call);
        nix::syslog::closelog();
        let skipped = install_extra_fds(extra);
        apply_attributes(&attrs);
        program.apply(
            attrs.ignored.as_deref().unwrap_or_default(),
            attrs.blocked.as_deref(),
        )?;
        Ok(skipped)
    })();
    match arranged {
        Ok(skipped) => {
            for (fd, why) in skipped {
                log.warn(&format!("the caller's fd {fd} is not passed on: {why}"));
            }
        }
        Err(e) => {
            log.err(&Error::io("prepare the call's process", e).to_string());
            sys::exit_now(127);
        }
    }
    nix::syslog::closelog();
    invocation
}

/// protocol.md §6.4 step 2: each of the caller's extra fds at its number,
/// unless the program has that number open itself or it cannot be made.
/// Best effort: returns the numbers not installed, each with the reason.
fn install_extra_fds(extra: Vec<(RawFd, OwnedFd)>) -> Vec<(RawFd, String)> {
    let Some(top) = extra.iter().map(|&(n, _)| n).max() else {
        return Vec::new();
    };
    // The caller may hold fds above our limit (it lowered its limit after
    // opening them): allow them while placing (above the hard limit only
    // with privilege); the caller's own limits are applied afterwards.
    let nofile = libc::RLIMIT_NOFILE;
    if let Ok((_, hard)) = sys::get_rlimit(nofile) {
        let want = hard.max(top as u64 + 1);
        if sys::set_rlimit(nofile, want, want).is_err() {
            let _ = sys::set_rlimit(nofile, hard, hard);
        }
    }
    let mut held = extra;
    let mut skipped = Vec::new();
    for i in 0..held.len() {
        let n = held[i].0;
        if held[i].1.as_raw_fd() == n {
            // Received at its own number: just let it be inherited.
            if let Err(e) = sys::clear_cloexec(n) {
                skipped.push((n, e.to_string()));
            }
            continue;
        }
        // Another received copy sits on `n`: move it out of the way (it is
        // close-on-exec and ours, not the program's).
        if let Some(j) = held.iter().position(|(_, fd)| fd.as_raw_fd() == n) {
            match nix::fcntl::fcntl(&held[j].1, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(3)) {
                // SAFETY: F_DUPFD_CLOEXEC just made this fd for us alone.
                Ok(moved) => held[j].1 = unsafe { OwnedFd::from_raw_fd(moved) },
                Err(e) => {
                    skipped.push((n, e.desc().to_string()));
                    continue;
                }
            }
        }
        if sys::fd_is_open(n) {
            skipped.push((n, format!("the program has its own fd {n} open")));
            continue;
        }
        // SAFETY: `n` is not open, so no Rust value owns it; the fd made
        // there belongs to the program from now on, as an inherited fd
        // would.
        if let Err(e) = unsafe { sys::dup_onto(held[i].1.as_raw_fd(), n) } {
            skipped.push((n, e.to_string()));
        }
    }
    // Copies received at their own number are the program's now.
    for (n, fd) in held {
        if fd.as_raw_fd() == n {
            std::mem::forget(fd);
        }
    }
    skipped
}

/// protocol.md §6.4 steps 3-5: umask, resource limits, nice value. Each is
/// best effort: what the kernel refuses stays as the server has it.
fn apply_attributes(attrs: &Attributes) {
    if let Some(mask) = attrs.umask {
        umask(Mode::from_bits_truncate(mask as libc::mode_t));
    }
    for r in &attrs.rlimits {
        if sys::set_rlimit(r.resource, r.soft, r.hard).is_err()
            && let Ok((_, server_hard)) = sys::get_rlimit(r.resource)
        {
            // A hard limit above the server's needs privilege: keep the
            // server's, and the caller's soft limit under it.
            let _ = sys::set_rlimit(r.resource, r.soft.min(server_hard), server_hard);
        }
    }
    if let Some(nice) = attrs.nice {
        let _ = sys::set_nice_value(nice);
    }
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
        // Reserved entries on the wire become the offer, not environment.
        let r = Request::decode_body(&r.encode_body()).unwrap();
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
