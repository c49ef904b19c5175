//! One call's monitor (upstream part 4): given a complete call (the
//! server read its handshake, `handshake.rs`), fork the executor, then
//! relay until the executor has finished: the caller's forwarded signals
//! to the executor, the executor's stops to the caller, and at the end its
//! exact wait status.
//!
//! ```text
//!   monitor  own process group; the executor leads another, the call's
//!            fd0-2: /dev/null
//!            CALL (blocking, close-on-exec); the caller's fds until the
//!            executor is forked; a signalfd for SIGCHLD (blocked)
//! ```
//!
//! The executor's stops and death are learnt from the kernel (SIGCHLD,
//! then `waitpid(WUNTRACED)`), never from an fd the program could close or
//! inherit, so the status is exact even when the program `exec`s. Signals
//! go to the executor only while it is unreaped, so its pid (and its
//! group's id) cannot have been reused. The executor dies with the
//! monitor (`PR_SET_PDEATHSIG`), so killing a monitor never leaves a call
//! running unattended. A caller going away is not an error: the monitor
//! SIGINTs the call's group (and SIGCONTs it, in case it is stopped),
//! reaps the executor and exits 0.

use std::os::fd::AsFd;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{Signal, kill, killpg};
use nix::sys::signalfd::SignalFd;
use nix::unistd::{Pid, setpgid};

use super::Invocation;
use super::executor::{self, Role};
use super::handshake::Complete;
use super::log::Log;
use super::signals::{self, Program};
use crate::error::{Error, Result};
use crate::protocol::{Call, Frame, FrameBuf};
use crate::sys::{self, Forked};

/// Serve one call. Returns only in the executor, with the caller's
/// arguments and environment; the monitor itself ends in `_exit`.
///
/// On entry: a fresh fork of the server; fds 0-2 are /dev/null; `call`
/// holds the only other fds of ours (the server's were closed on the way
/// here).
pub(super) fn become_monitor(call: Complete, log: Log, program: &Program) -> Invocation {
    match serve_call(call, log, program) {
        Ok(invocation) => invocation,
        // The caller went away before the call started: not an error.
        Err(e) if e.is_peer_gone() => sys::exit_now(0),
        Err(e) => {
            log.err(&e.to_string());
            sys::exit_now(127)
        }
    }
}

/// Upstream part 4 steps 8-10: fork the executor, then supervise it.
fn serve_call(call: Complete, log: Log, program: &Program) -> Result<Invocation> {
    setpgid(Pid::from_raw(0), Pid::from_raw(0))
        .map_err(|e| Error::io("make a process group for the monitor (setpgid)", e))?;
    let children = signals::child_events().map_err(|e| Error::io("signalfd for SIGCHLD", e))?;
    let monitor = nix::unistd::getpid();
    let Complete {
        call,
        stdio,
        body,
        extension,
    } = call;
    match sys::fork_checked() {
        Ok(Forked::Child) => {
            drop(children);
            executor::die_with(monitor, Signal::SIGKILL, log);
            let invocation = executor::take_request(body);
            Ok(executor::become_executor(
                stdio,
                call,
                extension,
                program,
                invocation,
                log,
                Role::Forked,
            ))
        }
        Ok(Forked::Parent(pid)) => {
            // The executor does the same; whichever runs first wins, and
            // the other's call is then a harmless repeat (or EACCES once
            // the child has run its program's exec).
            let _ = setpgid(Pid::from_raw(pid), Pid::from_raw(pid));
            let framed = extension.is_some();
            drop((stdio, extension, body));
            supervise(call, Pid::from_raw(pid), framed, &children, log)
        }
        Err(e) => Err(Error::io("fork executor", e)),
    }
}

/// Upstream part 4 steps 11-16 and protocol.md §6.5: relay until the
/// executor has finished, report its wait status, exit.
fn supervise(call: Call, executor: Pid, framed: bool, children: &SignalFd, log: Log) -> ! {
    let status = match relay(&call, executor, framed, children, log) {
        Ok(Some(status)) => status,
        outcome => {
            if let Err(e) = outcome {
                log.err(&e.to_string());
            }
            // The caller has gone (or broke the protocol): interrupt the
            // call, which may be stopped, then reap it.
            let _ = killpg(executor, Signal::SIGINT);
            let _ = kill(executor, Signal::SIGINT);
            let _ = killpg(executor, Signal::SIGCONT);
            match sys::wait_raw(executor.as_raw()) {
                Ok(status) => status,
                Err(e) => {
                    log.err(&Error::io("wait for the executor", e).to_string());
                    sys::exit_now(127)
                }
            }
        }
    };
    let sent = if framed {
        call.send_frame(&Frame::Exit(status as u32))
    } else {
        let mut call = call;
        call.send_status(status)
    };
    match sent {
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
fn relay(
    call: &Call,
    executor: Pid,
    framed: bool,
    children: &SignalFd,
    log: Log,
) -> Result<Option<i32>> {
    let mut buf = FrameBuf::default();
    loop {
        // Drain SIGCHLD first, then ask the kernel: a stop or the end.
        while let Ok(Some(_)) = children.read_signal() {}
        loop {
            match sys::try_wait_untraced(executor.as_raw())
                .map_err(|e| Error::io("wait for the executor", e))?
            {
                None => break,
                Some(status) if libc::WIFSTOPPED(status) => {
                    if framed {
                        call.send_frame(&Frame::Stopped(libc::WSTOPSIG(status)))?;
                    }
                }
                Some(status) => return Ok(Some(status)),
            }
        }
        let mut fds = [
            PollFd::new(call.as_fd(), PollFlags::POLLIN),
            PollFd::new(children.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(Error::io("poll the caller and the executor", e)),
        }
        if fds[0].revents().is_none_or(|r| r.is_empty()) {
            continue;
        }
        match buf.fill(call.socket()) {
            Ok(true) => {}
            Ok(false) => return Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(_) => return Ok(None),
        }
        // Protocol v1 has nothing after the request: anything is ignored.
        if !framed {
            buf = FrameBuf::default();
            continue;
        }
        while let Some(frame) = buf.next_frame()? {
            let sent = match frame {
                Frame::SignalProcess(sig) => signal_executor(executor, sig, false),
                Frame::SignalGroup(sig) => signal_executor(executor, sig, true),
                Frame::Unknown(_) => Ok(()),
                // A client's mistake need not end the call: skip it.
                Frame::Malformed(tag, why) => {
                    log.warn(&format!(
                        "bad {} frame from the client, skipped: {why}",
                        String::from_utf8_lossy(&tag)
                    ));
                    Ok(())
                }
                other => {
                    return Err(Error::protocol(format!(
                        "unexpected frame from the client: {other:?}"
                    )));
                }
            };
            // The executor may have just exited: not an error.
            if let Err(e) = sent
                && e != nix::errno::Errno::ESRCH
            {
                return Err(Error::io(format!("forward signal to [{executor}]"), e));
            }
        }
    }
}

/// `kill` or `killpg` with a raw signal number (real-time ones included).
fn signal_executor(executor: Pid, sig: i32, group: bool) -> nix::Result<()> {
    let target = if group {
        -executor.as_raw()
    } else {
        executor.as_raw()
    };
    sys::send_signal(target, sig)
}
