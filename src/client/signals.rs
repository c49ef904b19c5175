//! Signals while a call runs (protocol.md §6.5, design.md §6): the client
//! receives what a direct run of the script would have received and passes
//! it on, choosing the target the way the kernel would have.
//!
//! Every catchable signal but SIGCHLD is blocked and read from a signalfd,
//! which also tells who sent it (`si_code`): the terminal (`SI_KERNEL`)
//! signals the whole foreground process group, so such a signal goes to
//! the call's group; `kill(2)` (`SI_USER`) named our pid, so it goes to the
//! script's process. [`ROUTES`] is the table.

use std::os::fd::{AsFd, BorrowedFd};

use nix::sys::signal::SigSet;
use nix::sys::signalfd::{SfdFlags, SignalFd, siginfo};

use crate::error::{Error, Result};
use crate::sys;

/// Where a forwarded signal goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The script's process (`SIGP`).
    Process,
    /// The call's process group: the script and what it started (`SIGG`).
    Group,
}

/// A signal whose target depends on who sent it: (signal, from the
/// terminal, from `kill(2)` or `sigqueue`, what sends it from a terminal).
/// Every other catchable signal goes to the [`Target::Process`] whoever
/// sent it; SIGCONT is decided by [`Forwarder::route`] (it ends a stop).
pub const ROUTES: &[(libc::c_int, Target, Target, &str)] = &[
    (libc::SIGINT, Target::Group, Target::Process, "^C"),
    (libc::SIGQUIT, Target::Group, Target::Process, "^\\"),
    (libc::SIGTSTP, Target::Group, Target::Process, "^Z"),
    (
        libc::SIGWINCH,
        Target::Group,
        Target::Process,
        "window resize",
    ),
    (
        libc::SIGHUP,
        Target::Group,
        Target::Process,
        "terminal hang-up",
    ),
    (
        libc::SIGTTIN,
        Target::Group,
        Target::Process,
        "background read",
    ),
    (
        libc::SIGTTOU,
        Target::Group,
        Target::Process,
        "background write",
    ),
];

/// Signals the client never catches: SIGKILL and SIGSTOP cannot be, and
/// SIGCHLD is about the client's own children.
const NOT_FORWARDED: [libc::c_int; 3] = [libc::SIGKILL, libc::SIGSTOP, libc::SIGCHLD];

/// `si_code` of a signal the kernel itself sent (a terminal's).
const SI_KERNEL: i32 = 0x80;

/// Blocks the forwarded signals and reads them from a signalfd.
pub struct Forwarder {
    fd: SignalFd,
    /// The mask to put back (the caller's).
    original: SigSet,
    /// Set after the script stopped and we stopped too: the next SIGCONT
    /// (`fg`, `bg`) continues the whole call's group.
    job_stopped: bool,
}

/// One received signal.
#[derive(Debug, Clone, Copy)]
pub struct Received {
    /// The signal number.
    pub signal: libc::c_int,
    /// Its `si_code`.
    code: i32,
}

impl Received {
    /// Did a terminal send it (`si_code` `SI_KERNEL`)?
    pub fn sent_by_terminal(&self) -> bool {
        self.code == SI_KERNEL
    }
}

impl Forwarder {
    /// Block every forwarded signal and open the signalfd. From here until
    /// [`Forwarder::restore`] (or exit) no such signal acts on the client.
    /// With `children`, SIGCHLD is read from the signalfd too (never
    /// forwarded: [`Forwarder::read`] returns it for the caller to wait).
    pub fn install(original: SigSet, children: bool) -> Result<Forwarder> {
        let set = sys::sigset_of(
            sys::all_signals()
                .filter(|&s| !NOT_FORWARDED.contains(&s) || (children && s == libc::SIGCHLD)),
        );
        sys::sigprocmask(libc::SIG_BLOCK, Some(&set)).map_err(|e| Error::io("block signals", e))?;
        let fd = SignalFd::with_flags(&set, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
            .map_err(|e| Error::io("signalfd", e))?;
        Ok(Forwarder {
            fd,
            original,
            job_stopped: false,
        })
    }

    /// The fd to poll.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Every signal waiting to be read, skipping those we sent ourselves.
    pub fn read(&mut self) -> Result<Vec<Received>> {
        let me = std::process::id();
        let mut got = Vec::new();
        loop {
            match self.fd.read_signal() {
                Ok(Some(info)) => {
                    if !sent_by(&info, me) {
                        got.push(Received {
                            signal: info.ssi_signo as libc::c_int,
                            code: info.ssi_code,
                        });
                    }
                }
                Ok(None) => return Ok(got),
                Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(Error::io("read signalfd", e)),
            }
        }
    }

    /// Where `r` goes ([`ROUTES`]); SIGCONT after a stop continues the
    /// group that stopped.
    pub fn route(&mut self, r: Received) -> Target {
        if r.signal == libc::SIGCONT {
            return if std::mem::take(&mut self.job_stopped) {
                Target::Group
            } else {
                Target::Process
            };
        }
        route(r.signal, r.code == SI_KERNEL)
    }

    /// The script stopped with `sig`: stop ourselves the same way, so our
    /// shell sees a stopped job. Returns once we are continued. Returns
    /// `true` if the call's group must be continued now because no SIGCONT
    /// will come (we could not stop: an orphaned process group, say).
    pub fn stop_like(&mut self, sig: libc::c_int) -> bool {
        self.job_stopped = true;
        if sig == libc::SIGSTOP {
            // SAFETY: raise only sends a signal to this thread.
            unsafe { libc::raise(libc::SIGSTOP) };
        } else if let Ok(saved) = sys::set_signal(sig, sys::Disposition::Default) {
            let one = sys::sigset_of(std::iter::once(sig));
            // Raised while blocked, it is taken (and stops us) as soon as
            // it is unblocked.
            // SAFETY: raise only sends a signal to this thread.
            unsafe { libc::raise(sig) };
            let _ = sys::sigprocmask(libc::SIG_UNBLOCK, Some(&one));
            let _ = sys::sigprocmask(libc::SIG_BLOCK, Some(&one));
            let _ = sys::restore_signal(&saved);
        }
        let cont_pending = sys::signal_pending(libc::SIGCONT);
        if !cont_pending {
            self.job_stopped = false;
        }
        !cont_pending
    }

    /// Stop forwarding: put back the caller's mask and let `held` signals
    /// act on the client as they would have without forwarding (v1).
    pub fn restore(self, held: &[Received]) {
        drop(self.fd);
        let _ = sys::sigprocmask(libc::SIG_SETMASK, Some(&self.original));
        for r in held {
            // SAFETY: raise only sends a signal to this thread; its
            // disposition is the caller's, as it was before we started.
            unsafe { libc::raise(r.signal) };
        }
    }
}

/// A signal of ours to ourselves (none is expected; never forward one).
fn sent_by(info: &siginfo, me: u32) -> bool {
    info.ssi_pid == me && (info.ssi_code == libc::SI_USER || info.ssi_code == libc::SI_TKILL)
}

/// [`ROUTES`] as a function: `from_terminal` is `si_code == SI_KERNEL`.
pub fn route(sig: libc::c_int, from_terminal: bool) -> Target {
    ROUTES
        .iter()
        .find(|r| r.0 == sig)
        .map_or(
            Target::Process,
            |&(_, terminal, kill, _)| {
                if from_terminal { terminal } else { kill }
            },
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_signals_go_to_the_group_kill_to_the_process() {
        assert_eq!(route(libc::SIGINT, true), Target::Group);
        assert_eq!(route(libc::SIGINT, false), Target::Process);
        assert_eq!(route(libc::SIGWINCH, true), Target::Group);
        assert_eq!(route(libc::SIGTERM, false), Target::Process);
        assert_eq!(route(libc::SIGTERM, true), Target::Process);
        assert_eq!(route(libc::SIGUSR1, false), Target::Process);
        assert_eq!(route(40, false), Target::Process);
    }

    #[test]
    fn routes_name_each_signal_once() {
        let mut sigs: Vec<_> = ROUTES.iter().map(|r| r.0).collect();
        sigs.sort_unstable();
        sigs.dedup();
        assert_eq!(sigs.len(), ROUTES.len());
        assert!(ROUTES.iter().all(|r| !NOT_FORWARDED.contains(&r.0)));
    }
}
