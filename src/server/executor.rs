//! The executor (upstream part 4 step 9): the process that returns from
//! `initialisation_complete` into the program, once per call. It is a
//! spare handed the call by the server ([`Role::Forked`], `spares.rs`), or, for the first call
//! with `inplace1`, the setup process itself ([`Role::InPlace`],
//! protocol.md §7, `in_place.rs`).
//!
//! ```text
//!   executor  fd0-2: the caller's (received with the request); with
//!             call1 the caller's other fds at their numbers too
//!             no protocol fd: CALL and the received copies are closed;
//!             syslog closed; the program's other fds as they were
//!             environment: the caller's; with call1 its umask, rlimits,
//!             nice value; signals: see `signals.rs`
//!             process group: its own, the call's (the caller going away
//!             SIGINTs it; SIGG frames signal it); in place: the caller's
//! ```
//!
//! The request body, as the server received it, becomes the executor's:
//! its environment entries are the process's environment in place
//! (`sys::set_environ`, one pointer each, no copy), and its arguments the
//! invocation's. The executor dies with the server, and in place with the
//! client ([`die_with`]).

use std::ffi::{CStr, OsStr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;

use nix::sys::signal::Signal;
use nix::sys::stat::{Mode, umask};
use nix::unistd::{Pid, dup2_stderr, dup2_stdin, dup2_stdout, setpgid};

use super::Invocation;
use super::log::Log;
use super::signals::Program;
use crate::error::Error;
use crate::protocol::{Attributes, is_reserved_env};
use crate::sys;

/// What extension `call1` brought: the caller's attributes and its extra
/// fds, each with its number in the caller; with `pty1`, the pty's slave
/// to install at `attrs.pty` (protocol.md §9.3).
#[derive(Debug, Default)]
pub(super) struct Extension {
    /// The caller's attributes.
    pub(super) attrs: Attributes,
    /// The extra fds, each with its number in the caller.
    pub(super) extra: Vec<(RawFd, OwnedFd)>,
    /// With `pty1`: the slave of the client's pseudo-terminal.
    pub(super) slave: Option<OwnedFd>,
}

/// Which process takes the call on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    /// A spare of the server's, handed the call: it leads the call's own process
    /// group (protocol.md §6.4 step 1), and a failure to arrange it is
    /// logged where the server logs.
    Forked,
    /// The setup process running the first call in place (protocol.md
    /// §7): it stays in its process group, the caller's, as a direct run
    /// does, and a failure is reported on stderr, the caller's, since no
    /// server will report a status.
    InPlace,
}

/// Die with our parent, `parent`: the kernel sends us `sig` if it goes
/// (a spare SIGKILL; in place, SIGINT, what the server would
/// send when the caller goes away); if it has already gone (our parent is
/// no longer `parent`), go now.
pub(super) fn die_with(parent: Pid, sig: Signal, log: Log) {
    if let Err(e) = nix::sys::prctl::set_pdeathsig(sig) {
        log.err(&Error::io("prctl(PR_SET_PDEATHSIG)", e).to_string());
        sys::exit_now(127);
    }
    if nix::unistd::getppid() != parent {
        sys::exit_now(127);
    }
}

/// Take the request body (checked by `Request::check_body`) for this
/// process, for good: its environment entries become the environment,
/// and the invocation has the arguments after the wire's first item (the
/// program, as the client ran it). Reserved and malformed environment
/// entries are left out.
pub(super) fn take_request(body: Vec<u8>) -> Invocation {
    let body: &'static [u8] = body.leak();
    let (env, args) = split_body(body);
    let entries: Vec<&'static CStr> = env
        .split_inclusive(|&b| b == 0)
        .filter(|e| split_env(&e[..e.len() - 1]).is_some())
        .filter_map(|e| CStr::from_bytes_with_nul(e).ok())
        .collect();
    // SAFETY: this process is single-threaded, so no other thread can
    // touch the environment: it is a fork child of the single-threaded
    // server, or (in place) the setup process, which become_server found
    // to have one thread, and which has run nothing of the program since.
    unsafe { sys::set_environ(&entries) };
    let mut args = args
        .split(|&b| b == 0)
        .map(|a| OsStr::from_bytes(a).to_os_string());
    Invocation {
        program: args.next().unwrap_or_default(),
        args: args.collect(),
        env,
        served: true,
    }
}

/// A checked request body's two parts: the environment entries (each
/// NUL-terminated) and the arguments (without their last NUL, so
/// splitting on NUL gives exactly the arguments; empty if there are none).
fn split_body(body: &[u8]) -> (&[u8], &[u8]) {
    let mut start = 0;
    while let Some(len) = body[start..].iter().position(|&b| b == 0) {
        if len == 0 {
            let args = &body[start + 1..];
            return (&body[..start], args.strip_suffix(b"\0").unwrap_or(args));
        }
        start += len + 1;
    }
    (body, b"")
}

/// `NAME=value` into its two parts; `None` without `=`, with no name, or
/// reserved for protocol extensions.
pub(super) fn split_env(entry: &[u8]) -> Option<(&OsStr, &OsStr)> {
    let eq = entry.iter().position(|&b| b == b'=')?;
    if eq == 0 || is_reserved_env(entry) {
        return None;
    }
    Some((
        OsStr::from_bytes(&entry[..eq]),
        OsStr::from_bytes(&entry[eq + 1..]),
    ))
}

/// Become the executor and return the invocation to the program.
///
/// On entry: a spare handed its call ([`Role::Forked`]), or the setup
/// process with every signal blocked ([`Role::InPlace`]); the environment
/// already the caller's; fds 0-2 the server's /dev/null (the setup process's);
/// `stdio` the caller's fds 0-2, `call` the call socket and the
/// extension's fds, all close-on-exec. Warnings go to `log`. On failure to
/// arrange the process, report it (see [`Role`]) and `_exit(127)`: the
/// caller's client then exits 127.
pub(super) fn become_executor(
    stdio: [OwnedFd; 3],
    extension: Option<Extension>,
    program: &Program,
    invocation: Invocation,
    log: Log,
    role: Role,
) -> Invocation {
    let Extension {
        attrs,
        extra,
        slave,
    } = extension.unwrap_or_default();
    let arranged = (|| -> std::io::Result<Vec<(RawFd, String)>> {
        // protocol.md §6.4 step 1: lead the call's process group (in
        // place: stay in the caller's, §7); on a pty (§9.3) our parent, the
        // session's leader, has done it, and put us in front of the pty.
        if role == Role::Forked && slave.is_none() {
            setpgid(Pid::from_raw(0), Pid::from_raw(0))?;
        }
        // Fds 0-2 are open already, so the received fds are >= 3
        // and each dup2 makes a distinct copy without close-on-exec.
        let [stdin, stdout, stderr] = &stdio;
        dup2_stdin(stdin)?;
        dup2_stdout(stdout)?;
        dup2_stderr(stderr)?;
        drop(stdio);
        nix::syslog::closelog();
        // The slave must not sit where an extra fd goes: dup2 would close it.
        let slave = match slave {
            Some(fd) if extra.iter().any(|&(n, _)| n == fd.as_raw_fd()) => {
                let top = extra.iter().map(|&(n, _)| n).max().unwrap_or(2);
                let moved = nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(top + 1))?;
                // SAFETY: F_DUPFD_CLOEXEC just made this fd for us alone.
                Some(unsafe { OwnedFd::from_raw_fd(moved) })
            }
            other => other,
        };
        let skipped = install_extra_fds(extra);
        if let Some(slave) = slave {
            install_slave(slave, &attrs.pty)?;
        }
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
            let failed = match role {
                Role::Forked => log,
                Role::InPlace => Log::Stderr,
            };
            failed.err(&Error::io("prepare the call's process", e).to_string());
            sys::exit_now(127);
        }
    }
    nix::syslog::closelog();
    invocation
}

/// protocol.md §9.3: the pty's slave at each of `numbers` (among 0-2);
/// the received copy is closed.
fn install_slave(slave: OwnedFd, numbers: &[RawFd]) -> std::io::Result<()> {
    for &n in numbers {
        // SAFETY: `n` is 0, 1 or 2, open since step 1 and owned by no Rust
        // value (the caller's copies were moved there with dup2): dup2
        // replaces it atomically with a copy of the slave, not
        // close-on-exec, which the program owns as it owned stdio.
        unsafe { sys::dup_onto(slave.as_raw_fd(), n) }?;
    }
    Ok(())
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
    let nofile = sys::RLIMIT_NOFILE;
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
    use crate::protocol::Request;

    fn body(env: &[&[u8]], args: &[&[u8]]) -> Vec<u8> {
        let r = Request {
            env: env
                .iter()
                .map(|e| OsStr::from_bytes(e).to_owned())
                .collect(),
            args: args
                .iter()
                .map(|a| OsStr::from_bytes(a).to_owned())
                .collect(),
            ..Default::default()
        };
        let b = r.encode_body();
        Request::check_body(&b).unwrap();
        b
    }

    #[test]
    fn a_body_splits_into_environment_and_arguments() {
        let b = body(&[b"A=1", b"B="], &[b"/p/prog", b"a", b"", b"\xff"]);
        let (env, args) = split_body(&b);
        assert_eq!(env, b"A=1\0B=\0");
        let args: Vec<&[u8]> = args.split(|&c| c == 0).collect();
        assert_eq!(args, [&b"/p/prog"[..], b"a", b"", b"\xff"]);
        let b = body(&[], &[]);
        assert_eq!(split_body(&b), (&b""[..], &b""[..]));
        let b = body(&[b"A=1"], &[b"p"]);
        assert_eq!(split_body(&b), (&b"A=1\0"[..], &b"p"[..]));
    }

    #[test]
    fn environment_entries_drop_reserved_and_malformed_ones() {
        let entries: [&[u8]; 7] = [
            b"A=1",
            b"B=",
            b"C=x=y",
            b"PREFORK_INTERP_EXT_SIGNALS=1",
            b"NOEQUALS",
            b"=nameless",
            b"D=\xfe",
        ];
        let kept: Vec<(&OsStr, &OsStr)> = entries.iter().filter_map(|e| split_env(e)).collect();
        let os = |b: &'static [u8]| OsStr::from_bytes(b);
        assert_eq!(
            kept,
            [
                (os(b"A"), os(b"1")),
                (os(b"B"), os(b"")),
                (os(b"C"), os(b"x=y")),
                (os(b"D"), os(b"\xfe")),
            ]
        );
    }
}
