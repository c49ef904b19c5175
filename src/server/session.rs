//! A call on a pty (protocol.md §9.3): the spare handed the call becomes
//! the leader of a new session whose controlling terminal is the client's
//! pty, and forks the executor into a process group of its own in that
//! session, the pty's foreground group.
//!
//! Why two processes: a process group is *orphaned* when no member has a
//! parent in the same session but another group, and the kernel discards
//! ^Z, background reads and writes (SIGTSTP, SIGTTIN, SIGTTOU) for
//! orphaned groups. An executor leading its own session, its parent the
//! server in another session, would be orphaned: ^Z would do nothing. With
//! the leader as its parent, in its session, the executor's group stops
//! exactly as a direct run's job does.
//!
//! ```text
//!   server ── spare control socket ──► leader (session leader, the pty
//!     │          ◄── reports:            as controlling terminal; every
//!     │              executor pid,       signal blocked, every fd closed
//!     │              stops, wait status  but the control socket; puts the
//!     │          FGND ──►                executor's group in front of the
//!     │                                  pty, or its own while the
//!     │                                  client's job is in the background)
//!     │                                      │ fork, waitpid(WUNTRACED)
//!     └── SIGP / SIGG, to the executor ──►  executor (own group; runs the
//!                                           program once the leader is done)
//! ```
//!
//! The server reaps the leader; the executor's pid, stops and raw wait
//! status come in reports ([`Report`]), each 8 bytes: a kind and a value,
//! u32 big-endian. The other way the server passes on where the client's
//! job is (`FGND`), and the leader mirrors it onto the pty (protocol.md
//! §9.3 step 5), then answers with the same report. The status is the kernel's, from the leader's
//! `waitpid`. If the leader dies without reporting one (killed), its own
//! wait status stands.

use std::io::{ErrorKind, Read};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, SigmaskHow, Signal, sigprocmask};
use nix::unistd::{Pid, setpgid, setsid};

use super::executor;
use super::log::Log;
use crate::protocol::write_all_nosignal;
use crate::sys::{self, Forked};

/// What a session leader tells the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Report {
    /// The executor's pid (also its process group's id).
    Executor(libc::pid_t),
    /// The executor stopped with this signal.
    Stopped(i32),
    /// The executor ended with this raw wait status; last.
    Exited(i32),
    /// Both ways: from the server, the client is now in the foreground
    /// (`true`) or the background of the caller's terminal (`FGND`,
    /// protocol.md §9.3 step 5); from the leader, done.
    Foreground(bool),
}

/// Bytes of one report.
const REPORT_LEN: usize = 8;

impl Report {
    fn encode(self) -> [u8; REPORT_LEN] {
        let (kind, value) = match self {
            Report::Executor(pid) => (1u32, pid as u32),
            Report::Stopped(sig) => (2, sig as u32),
            Report::Exited(status) => (3, status as u32),
            Report::Foreground(front) => (4, u32::from(front)),
        };
        let mut out = [0u8; REPORT_LEN];
        out[..4].copy_from_slice(&kind.to_be_bytes());
        out[4..].copy_from_slice(&value.to_be_bytes());
        out
    }

    fn decode(bytes: &[u8]) -> Option<Report> {
        let word = |i: usize| u32::from_be_bytes(bytes[i..i + 4].try_into().expect("4 bytes"));
        let value = word(4) as i32;
        match word(0) {
            1 if value > 0 => Some(Report::Executor(value)),
            2 => Some(Report::Stopped(value)),
            3 => Some(Report::Exited(value)),
            4 if value == 0 || value == 1 => Some(Report::Foreground(value == 1)),
            _ => None,
        }
    }
}

/// One end of a leader's control socket: the server's, or the leader's.
#[derive(Debug)]
pub(super) struct Reports {
    control: UnixStream,
    buf: Vec<u8>,
    /// EOF seen: the leader has gone.
    pub(super) closed: bool,
}

impl Reports {
    /// Read reports from `control` (made non-blocking here).
    pub(super) fn new(control: UnixStream) -> Reports {
        let _ = control.set_nonblocking(true);
        Reports {
            control,
            buf: Vec::new(),
            closed: false,
        }
    }

    /// The fd to poll while the other side is there.
    pub(super) fn fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        (!self.closed).then(|| self.control.as_fd())
    }

    /// Tell the leader where the client's job is now; it answers with the
    /// same report once the pty mirrors it.
    pub(super) fn tell(&self, front: bool) -> crate::error::Result<()> {
        write_all_nosignal(
            &self.control,
            &Report::Foreground(front).encode(),
            "tell the call's leader",
        )
    }

    /// Every whole report that has arrived. A malformed one is skipped.
    pub(super) fn read(&mut self) -> Vec<Report> {
        let mut chunk = [0u8; 256];
        while !self.closed {
            match (&self.control).read(&mut chunk) {
                Ok(0) => self.closed = true,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(_) => self.closed = true,
            }
        }
        let whole = self.buf.len() / REPORT_LEN * REPORT_LEN;
        let reports = self.buf[..whole]
            .chunks(REPORT_LEN)
            .filter_map(Report::decode)
            .collect();
        self.buf.drain(..whole);
        reports
    }
}

/// In a spare handed a call on a pty: lead a new session with `slave` as
/// its controlling terminal and fork the executor. Returns in the executor
/// only, once the leader has put it in its process group and, unless the
/// client starts in the `background` (`ptybg`), in the pty's foreground;
/// the leader reports over `control` and exits when the executor has ended.
pub(super) fn lead(control: UnixStream, slave: &OwnedFd, background: bool, log: Log) -> UnixStream {
    let fail = |what: &str, e: &dyn std::fmt::Display| -> ! {
        log.err(&format!("{what}: {e}"));
        sys::exit_now(127)
    };
    if let Err(e) = start_session(slave) {
        fail("make the call's session", &e);
    }
    // The executor waits for EOF on this pipe: the leader closes it once
    // the executor's group is set up, before it handles any `FGND`.
    let (ready_r, ready_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap_or_else(|e| fail("pipe", &e));
    let leader = nix::unistd::getpid();
    match sys::fork_checked() {
        Ok(Forked::Child) => {
            drop(ready_w);
            let mut byte = [0u8; 1];
            while let Err(nix::errno::Errno::EINTR) = nix::unistd::read(&ready_r, &mut byte) {}
            drop(ready_r);
            executor::die_with(leader, Signal::SIGKILL, log);
            control
        }
        Ok(Forked::Parent(pid)) => {
            drop(ready_r);
            let executor = Pid::from_raw(pid);
            // The executor's group, in front of the pty unless the client's
            // job is in the background (then ours stays there, as
            // TIOCSCTTY left it, and the kernel stops the executor's group
            // when it reads).
            if let Err(e) = setpgid(executor, executor) {
                fail("put the executor in its group", &e);
            }
            if !background && let Err(e) = nix::unistd::tcsetpgrp(slave, executor) {
                fail("put the executor in the pty's foreground", &e);
            }
            drop(ready_w);
            supervise(control, executor, log)
        }
        Err(e) => fail("fork the call's executor", &e),
    }
}

/// A session of our own whose terminal is the pty, with every signal
/// blocked: the pty's hang-up must not end us before the executor.
fn start_session(slave: &OwnedFd) -> std::io::Result<()> {
    sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::all()), None)?;
    setsid()?;
    // SAFETY: TIOCSCTTY takes an int argument (0: do not steal a terminal
    // another session has) and touches no memory of ours.
    if unsafe { libc::ioctl(slave.as_raw_fd(), libc::TIOCSCTTY, 0) } == -1 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The leader's life: report the executor, its stops and its end, and
/// mirror the client's job state onto the pty as the server passes it on.
fn supervise(control: UnixStream, executor: Pid, log: Log) -> ! {
    // SAFETY: we are a fork child that never returns into the server's or
    // the program's code: no owner of the closed fds uses them again.
    unsafe { sys::close_fds_from(3, &[control.as_raw_fd()]) };
    super::setup::set_title("session");
    let report = |r: Report| write_all_nosignal(&control, &r.encode(), "report to the server");
    if let Err(e) = report(Report::Executor(executor.as_raw())) {
        log.debug(&e.to_string());
    }
    // Every signal is blocked (start_session): SIGCHLD is read from here.
    let children = match super::signals::child_events() {
        Ok(fd) => fd,
        Err(e) => {
            log.err(&format!("the call's leader: signalfd: {e}"));
            sys::exit_now(127)
        }
    };
    let mut from_server = Reports::new(control.try_clone().unwrap_or_else(|_| sys::exit_now(127)));
    let mut pty = Foreground::default();
    loop {
        // What changed (also before the first wait: nothing is missed).
        while let Ok(Some(status)) = sys::try_wait_untraced(executor.as_raw()) {
            let ended = !libc::WIFSTOPPED(status);
            let r = if ended {
                Report::Exited(status)
            } else {
                Report::Stopped(libc::WSTOPSIG(status))
            };
            // The server gone, we are killed with it (PR_SET_PDEATHSIG).
            let _ = report(r);
            if ended {
                sys::exit_now(0);
            }
        }
        let mut fds = vec![PollFd::new(children.as_fd(), PollFlags::POLLIN)];
        if let Some(fd) = from_server.fd() {
            fds.push(PollFd::new(fd, PollFlags::POLLIN));
        }
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(_) => sys::exit_now(127),
        }
        while let Ok(Some(_)) = children.read_signal() {}
        for told in from_server.read() {
            if let Report::Foreground(front) = told {
                pty.mirror(front, executor);
                let _ = report(Report::Foreground(front));
            }
        }
    }
}

/// The leader's side of protocol.md §9.3 step 5.
#[derive(Debug, Default)]
struct Foreground {
    /// The pty's foreground group when the client went to the background
    /// (the executor's, or one of the program's own jobs).
    remembered: Option<Pid>,
}

impl Foreground {
    /// The client is now in the foreground (`front`) or the background:
    /// the executor's group in front of the pty, or ours (then the kernel
    /// stops the executor's group when it reads, as a background job).
    /// SIGTTOU is blocked, so no `tcsetpgrp` stops us.
    fn mirror(&mut self, front: bool, executor: Pid) {
        let Ok(tty) = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/tty")
        else {
            return;
        };
        let ours = nix::unistd::getpgrp();
        let Ok(now) = nix::unistd::tcgetpgrp(&tty) else {
            return;
        };
        if front {
            // Only if we hold it: a repeated FGND, or a job the program put
            // in front itself meanwhile, is left alone.
            if now == ours {
                let to = self.remembered.take().unwrap_or(executor);
                if nix::unistd::tcsetpgrp(&tty, to).is_err() {
                    let _ = nix::unistd::tcsetpgrp(&tty, executor);
                }
            }
        } else if now != ours {
            self.remembered = Some(now);
            let _ = nix::unistd::tcsetpgrp(&tty, ours);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_cross_whole_and_in_order() {
        let (leader, server) = UnixStream::pair().unwrap();
        let mut reports = Reports::new(server);
        let sent = [
            Report::Executor(4242),
            Report::Stopped(libc::SIGTSTP),
            Report::Exited(0x8200),
        ];
        let mut bytes: Vec<u8> = sent.iter().flat_map(|r| r.encode()).collect();
        // Half a report waits for its other half.
        write_all_nosignal(&leader, &bytes[..12], "test").unwrap();
        assert_eq!(reports.read(), [sent[0]]);
        write_all_nosignal(&leader, &bytes.split_off(12), "test").unwrap();
        drop(leader);
        assert_eq!(reports.read(), sent[1..]);
        assert!(reports.closed);
    }

    #[test]
    fn a_malformed_report_is_skipped() {
        assert_eq!(Report::decode(&[0, 0, 0, 9, 0, 0, 0, 1]), None);
        assert_eq!(Report::decode(&[0, 0, 0, 1, 0, 0, 0, 0]), None);
    }
}
