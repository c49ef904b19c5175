//! One call's monitor (upstream part 4): greet the caller, take its
//! request, fork the executor, then wait for whichever comes first, the
//! executor's death or the caller hanging up, and report the executor's
//! exact wait status.
//!
//! ```text
//!   monitor  own process group (the executor shares it)
//!            fd0-2: /dev/null (first call: /dev/null + the caller's stderr)
//!            CALL (blocking, close-on-exec); then the caller's fds 0-2
//!            until the executor is forked; a pidfd for the executor
//!            SIGINT ignored (we SIGINT our own group), SIGALRM default
//! ```
//!
//! The executor's death is learnt from the kernel (a pidfd, then
//! `waitpid`), never from an fd the program could close or inherit, so the
//! status is exact even when the program `exec`s. A caller that does not
//! send its whole request within `Options::request_timeout` of the
//! greeting is dropped by SIGALRM's default action, quietly. A caller
//! going away is not an error: the monitor SIGINTs its process group,
//! reaps the executor and exits 0.

use std::io::Read;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::{Pid, getpgrp, setpgid};

use super::child::{Child, TICK};
use super::executor;
use super::log::Log;
use super::{Invocation, Options};
use crate::error::{Error, Result};
use crate::protocol::{Call, MAX_REQUEST_LEN};
use crate::sys::{self, Disposition, Forked, SavedSignal};

/// The monitor's signal dispositions, each with its reason. The executor
/// puts back what the program had ([`Signals::restore`]) and then applies
/// [`EXECUTOR_SIGNALS`].
const MONITOR_SIGNALS: &[(libc::c_int, Disposition, &str)] = &[
    (
        libc::SIGINT,
        Disposition::Ignore,
        "the monitor SIGINTs its own process group when the caller goes",
    ),
    (
        libc::SIGALRM,
        Disposition::Default,
        "the request timeout: SIGALRM ends a monitor whose caller is too slow",
    ),
];

/// The executor's own dispositions, set after restoring the program's.
pub(super) const EXECUTOR_SIGNALS: &[(libc::c_int, Disposition, &str)] = &[(
    libc::SIGINT,
    Disposition::Default,
    "SPEC §6: a call is interrupted with SIGINT when its caller goes away",
)];

/// The dispositions [`Signals::install`] replaced.
pub(super) struct Signals {
    saved: Vec<SavedSignal>,
}

impl Signals {
    /// Apply [`MONITOR_SIGNALS`], remembering what was there.
    fn install() -> Result<Signals> {
        let mut saved = Vec::with_capacity(MONITOR_SIGNALS.len());
        for &(sig, to, _why) in MONITOR_SIGNALS {
            saved.push(
                sys::set_signal(sig, to)
                    .map_err(|e| Error::io(format!("set disposition of signal {sig}"), e))?,
            );
        }
        Ok(Signals { saved })
    }

    /// Undo [`Signals::install`], in reverse order.
    pub(super) fn restore(self) -> std::io::Result<()> {
        for saved in self.saved.iter().rev() {
            sys::restore_signal(saved)?;
        }
        Ok(())
    }
}

/// Serve one call. Returns only in the executor, with the caller's
/// arguments and environment; the monitor itself ends in `_exit`.
///
/// On entry: a fresh fork of the server; fds 0-2 are /dev/null (for the
/// first call: /dev/null and the first caller's stderr); `call` is the only
/// other fd of ours (the server's fds were closed on the way here).
pub(super) fn become_monitor(call: UnixStream, log: Log, opts: &Options) -> Invocation {
    match serve_call(call, log, opts.request_timeout) {
        Ok(invocation) => invocation,
        // The caller went away before the call started: not an error.
        Err(e) if e.is_peer_gone() => sys::exit_now(0),
        Err(e) => {
            log.err(&e.to_string());
            sys::exit_now(127)
        }
    }
}

/// Upstream part 4 steps 2-9.
fn serve_call(call: UnixStream, log: Log, request_timeout: Duration) -> Result<Invocation> {
    setpgid(Pid::from_raw(0), Pid::from_raw(0))
        .map_err(|e| Error::io("make a process group for the call (setpgid)", e))?;
    let signals = Signals::install()?;
    let mut call = Call::new(call);
    call.send_greeting()?;
    sys::alarm_after(request_timeout).map_err(|e| Error::io("set request timer", e))?;
    let (stdio, request) = call.read_request(MAX_REQUEST_LEN)?;
    sys::alarm_after(Duration::ZERO).map_err(|e| Error::io("cancel request timer", e))?;
    let invocation = executor::invocation(&request);
    match sys::fork_checked_with_env(invocation.env()) {
        Ok(Forked::Child) => Ok(executor::become_executor(
            stdio, call, signals, invocation, log,
        )),
        Ok(Forked::Parent(pid)) => {
            drop(stdio);
            supervise(call, Child::new(pid), log)
        }
        Err(e) => Err(Error::io("fork executor", e)),
    }
}

/// Upstream part 4 steps 11-16: wait for the executor or for the caller
/// to go, then report the executor's wait status and exit.
fn supervise(mut call: Call, executor: Child, log: Log) -> ! {
    let status = match wait_or_hangup(&call, &executor) {
        Ok(Some(status)) => status,
        outcome => {
            if let Err(e) = outcome {
                log.err(&Error::io("wait for the executor or the caller", e).to_string());
            }
            interrupt(executor.pid);
            match executor.reap() {
                Ok(status) => status,
                Err(e) => {
                    log.err(&Error::io("wait for the executor", e).to_string());
                    sys::exit_now(127)
                }
            }
        }
    };
    match call.send_status(status) {
        Ok(()) => sys::exit_now(0),
        Err(e) if e.is_peer_gone() => sys::exit_now(0),
        Err(e) => {
            log.err(&e.to_string());
            sys::exit_now(127)
        }
    }
}

/// `Some(status)` once the executor has exited (and is reaped), `None` if
/// the caller hung up first.
fn wait_or_hangup(call: &Call, executor: &Child) -> std::io::Result<Option<i32>> {
    let mut sock = call.socket();
    loop {
        if let Some(status) = executor.try_reap()? {
            return Ok(Some(status));
        }
        let mut fds = vec![PollFd::new(call.as_fd(), PollFlags::POLLIN)];
        let timeout = match executor.pidfd() {
            Some(fd) => {
                fds.push(PollFd::new(fd, PollFlags::POLLIN));
                PollTimeout::NONE
            }
            None => PollTimeout::try_from(TICK).unwrap_or(PollTimeout::MAX),
        };
        match poll(&mut fds, timeout) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
        if fds[0].revents().is_none_or(|r| r.is_empty()) {
            continue;
        }
        // The executor's death wins a tie: report its real status.
        if let Some(status) = executor.try_reap()? {
            return Ok(Some(status));
        }
        let mut buf = [0u8; 512];
        match sock.read(&mut buf) {
            Ok(0) => return Ok(None),
            // Protocol v1 has nothing after the request; ignore it.
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
                ) => {}
            Err(_) => return Ok(None),
        }
    }
}

/// The caller has gone: interrupt the call's whole process group (our
/// SIGINT is ignored), and the executor itself in case it left the group.
fn interrupt(executor: libc::pid_t) {
    let _ = killpg(getpgrp(), Signal::SIGINT);
    let _ = kill(Pid::from_raw(executor), Signal::SIGINT);
}
