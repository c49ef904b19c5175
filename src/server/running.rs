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
//!
//! On a pty (protocol.md §9.3) our child is the call's session leader and
//! the executor is its child: the leader reports the executor's pid, its
//! stops and its wait status (`session.rs`), and signals wait for the pid.
//! The leader outlives the executor, so the pid is not reused meanwhile.

use std::os::fd::{AsFd, BorrowedFd};

use nix::sys::signal::Signal;

use super::log::Log;
use super::session::{Report, Reports};
use super::spares::Handed;
use crate::error::{Error, Result};
use crate::protocol::{Call, Frame, FrameBuf};
use crate::sys;

/// One running call.
#[derive(Debug)]
pub(super) struct Running {
    /// Our child: the executor, or on a pty the call's session leader.
    pub(super) pid: libc::pid_t,
    /// The executor's pid, which is also its process group's id: `pid`,
    /// or on a pty what the leader reports (`None` until then).
    executor: Option<libc::pid_t>,
    /// On a pty: the leader's reports.
    leader: Option<Reports>,
    /// Signals held (see [`Running::signal`]): (signal, to its group).
    held: Vec<(i32, bool)>,
    /// The executor's wait status, as its leader reported it.
    reported: Option<i32>,
    /// `FGND`s passed to the leader and not yet answered: signals wait
    /// for them, so the pty's foreground is right before a SIGCONT acts.
    unanswered: u32,
    /// The call's socket (non-blocking).
    call: Call,
    /// With `call1`: frames both ways.
    framed: bool,
    buf: FrameBuf,
    /// The caller has gone: the call was interrupted, nothing more is read.
    hung_up: bool,
}

impl Running {
    /// Watch a call handed over. Its socket is non-blocking, as the
    /// handshake left it.
    pub(super) fn new(handed: Handed) -> Running {
        let Handed {
            pid,
            call,
            framed,
            leader,
        } = handed;
        Running {
            pid,
            executor: leader.is_none().then_some(pid),
            leader: leader.map(Reports::new),
            held: Vec::new(),
            reported: None,
            unanswered: 0,
            call,
            framed,
            buf: FrameBuf::default(),
            hung_up: false,
        }
    }

    /// The fd to poll for the leader's reports, on a pty.
    pub(super) fn leader(&self) -> Option<BorrowedFd<'_>> {
        self.leader.as_ref().and_then(Reports::fd)
    }

    /// The leader's reports are readable: learn the executor's pid (and
    /// send it what was held), pass stops on, note the status.
    pub(super) fn on_leader(&mut self, log: Log) {
        let Some(leader) = &mut self.leader else {
            return;
        };
        for report in leader.read() {
            match report {
                Report::Executor(pid) => {
                    self.executor = Some(pid);
                    self.release_held();
                }
                Report::Foreground(_) => {
                    self.unanswered = self.unanswered.saturating_sub(1);
                    self.release_held();
                }
                Report::Stopped(sig) => self.report_stop(sig, log),
                Report::Exited(status) => self.reported = Some(status),
            }
        }
    }

    /// Send the held signals, if nothing holds them any more.
    fn release_held(&mut self) {
        if self.executor.is_some() && self.unanswered == 0 {
            for (sig, group) in std::mem::take(&mut self.held) {
                let _ = self.signal(sig, group);
            }
        }
    }

    /// The client's job changed place (`FGND`): tell the leader, and hold
    /// signals until it answers. Nothing to do without a leader.
    fn job_moved(&mut self, front: bool, log: Log) {
        let Some(leader) = self.leader.as_ref().filter(|l| !l.closed) else {
            return;
        };
        match leader.tell(front) {
            Ok(()) => self.unanswered += 1,
            Err(e) => log.debug(&e.to_string()),
        }
    }

    /// Send `sig` to the executor, or to its group; held until the
    /// executor's pid is known and the leader has answered every `FGND`.
    fn signal(&mut self, sig: i32, group: bool) -> nix::Result<()> {
        let (Some(pid), 0) = (self.executor, self.unanswered) else {
            self.held.push((sig, group));
            return Ok(());
        };
        if group {
            sys::send_signal(-pid, sig)
        } else {
            sys::send_signal(pid, sig)
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
                Frame::SignalProcess(sig) => self.signal(sig, false),
                Frame::SignalGroup(sig) => self.signal(sig, true),
                Frame::Foreground(front) => {
                    self.job_moved(front, log);
                    Ok(())
                }
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
                return Err(Error::io(
                    format!("forward signal to [{}]", self.executor.unwrap_or(self.pid)),
                    e,
                ));
            }
        }
        Ok(true)
    }

    /// The caller has gone: interrupt the call, which may be stopped.
    fn interrupt(&mut self) {
        self.hung_up = true;
        let _ = self.signal(Signal::SIGINT as i32, true);
        let _ = self.signal(Signal::SIGINT as i32, false);
        let _ = self.signal(Signal::SIGCONT as i32, true);
    }

    /// Tell the caller the executor has stopped.
    fn report_stop(&mut self, sig: i32, log: Log) {
        if self.framed && !self.hung_up {
            // A caller gone is seen on its socket, soon.
            if let Err(e) = self.call.send_frame(&Frame::Stopped(sig)) {
                log.debug(&e.to_string());
            }
        }
    }

    /// After SIGCHLD: report the executor's stops, and reap it if it has
    /// ended, returning its raw wait status.
    /// On a pty, the leader's stops are its own business (the
    /// executor's come in its reports), and its reported status stands
    /// for its own.
    pub(super) fn check(&mut self, log: Log) -> std::io::Result<Option<i32>> {
        loop {
            match sys::try_wait_untraced(self.pid)? {
                None => return Ok(None),
                Some(status) if libc::WIFSTOPPED(status) => {
                    if self.leader.is_none() {
                        self.report_stop(libc::WSTOPSIG(status), log);
                    }
                }
                Some(status) => {
                    // The leader has gone: what it wrote is all there.
                    self.on_leader(log);
                    return Ok(Some(self.reported.unwrap_or(status)));
                }
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
