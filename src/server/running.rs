//! A call that runs: the server's watch over its executor (upstream part 4
//! steps 11-16, protocol.md §4 and §6.5), done in the server's own loop
//! for every running call, with no monitor process.
//!
//! - The caller's frames: `SIGP`/`SIGG` signal the executor or the call's
//!   process group (§6.5); anything else from a v1 caller is ignored.
//! - The executor's stops and its end come from the kernel (SIGCHLD, read
//!   from the server's signalfd, then `waitpid(WUNTRACED)`), never from an
//!   fd the program could close or inherit, so the status is exact even
//!   when the program `exec`s. A stop is reported (`STOP` frame), the end
//!   sent as the call's status (`EXIT` frame, or v1's 4 bytes).
//! - The caller hanging up (or breaking the protocol) interrupts the call:
//!   SIGINT to its group and to the executor, then SIGCONT, in case it is
//!   stopped. The call runs on to its end and is reaped as any other.
//!
//! Signals go to the executor only while it is unreaped (it is removed
//! from the server's list when reaped), so its pid and its group's id
//! cannot have been reused.

use std::os::fd::{AsFd, BorrowedFd};

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

use super::log::Log;
use crate::error::{Error, Result};
use crate::protocol::{Call, Frame, FrameBuf};
use crate::sys;

/// One running call.
#[derive(Debug)]
pub(super) struct Running {
    /// The executor's pid, which is also its process group's id.
    pub(super) pid: libc::pid_t,
    /// The call's socket (non-blocking).
    call: Call,
    /// With `call1`: frames both ways.
    framed: bool,
    buf: FrameBuf,
    /// The caller has gone: the call was interrupted, nothing more is read.
    hung_up: bool,
}

impl Running {
    /// Watch the call `call`, run by the executor `pid`.
    /// `call` is non-blocking, as the handshake left it.
    pub(super) fn new(call: Call, pid: libc::pid_t, framed: bool) -> Running {
        Running {
            pid,
            call,
            framed,
            buf: FrameBuf::default(),
            hung_up: false,
        }
    }

    /// The fd to poll for the caller, while it is there.
    pub(super) fn caller(&self) -> Option<BorrowedFd<'_>> {
        (!self.hung_up).then(|| self.call.as_fd())
    }

    /// The caller's socket is readable: forward its signals, or, if it
    /// has gone or broken the protocol, interrupt the call.
    pub(super) fn on_caller(&mut self, log: Log) {
        match self.read_frames(log) {
            Ok(true) => {}
            Ok(false) => self.interrupt(),
            Err(e) => {
                log.err(&e.to_string());
                self.interrupt();
            }
        }
    }

    /// False once the caller has hung up.
    fn read_frames(&mut self, log: Log) -> Result<bool> {
        match self.buf.fill(self.call.socket()) {
            Ok(true) => {}
            Ok(false) => return Ok(false),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => return Ok(true),
            Err(_) => return Ok(false),
        }
        // Protocol v1 has nothing after the request: anything is ignored.
        if !self.framed {
            self.buf = FrameBuf::default();
            return Ok(true);
        }
        while let Some(frame) = self.buf.next_frame()? {
            let sent = match frame {
                Frame::SignalProcess(sig) => sys::send_signal(self.pid, sig),
                // Before a pty call's executor has made its session (and
                // group), there is no such group: the executor alone.
                Frame::SignalGroup(sig) => match sys::send_signal(-self.pid, sig) {
                    Err(nix::errno::Errno::ESRCH) => sys::send_signal(self.pid, sig),
                    sent => sent,
                },
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
                return Err(Error::io(format!("forward signal to [{}]", self.pid), e));
            }
        }
        Ok(true)
    }

    /// The caller has gone: interrupt the call, which may be stopped.
    fn interrupt(&mut self) {
        self.hung_up = true;
        let pid = Pid::from_raw(self.pid);
        let _ = killpg(pid, Signal::SIGINT);
        let _ = kill(pid, Signal::SIGINT);
        let _ = killpg(pid, Signal::SIGCONT);
    }

    /// After SIGCHLD: report the executor's stops, and reap it if it has
    /// ended, returning its raw wait status.
    pub(super) fn check(&mut self, log: Log) -> std::io::Result<Option<i32>> {
        loop {
            match sys::try_wait_untraced(self.pid)? {
                None => return Ok(None),
                Some(status) if libc::WIFSTOPPED(status) => {
                    if self.framed && !self.hung_up {
                        let stop = Frame::Stopped(libc::WSTOPSIG(status));
                        // A caller gone is seen on its socket, soon.
                        if let Err(e) = self.call.send_frame(&stop) {
                            log.debug(&e.to_string());
                        }
                    }
                }
                Some(status) => return Ok(Some(status)),
            }
        }
    }

    /// The call is over, with this wait status: tell the caller, if it is
    /// still there, and close the call.
    pub(super) fn finish(self, status: i32, log: Log) {
        if self.hung_up {
            return;
        }
        let mut call = self.call;
        let sent = if self.framed {
            call.send_frame(&Frame::Exit(status as u32))
        } else {
            call.send_status(status)
        };
        // The caller may have just gone: not worth more than a debug line.
        if let Err(e) = sent {
            log.debug(&e.to_string());
        }
    }
}
