//! Job control for a call run in place (protocol.md §7): the setup process
//! runs in a process group of its own, as a shell runs a job, so that a
//! signal reaches it once, from us or from the terminal, never both. When
//! we are in the foreground of our controlling terminal, the terminal is
//! handed to that group for the call (its reads, ^C, ^Z, resizes are the
//! call's), taken back while the call is stopped or when it ends, and
//! handed over again when we are continued in the foreground (also when we
//! started in the background: `script &`, then `fg`).

use std::os::fd::{BorrowedFd, RawFd};

use nix::unistd::{Pid, getpgrp, tcgetpgrp, tcsetpgrp};

use crate::sys;

/// Our controlling terminal, open on one of fds 0-2.
#[derive(Debug, Clone, Copy)]
pub struct Foreground {
    /// A stdio fd open on the terminal (0, 1 or 2).
    fd: RawFd,
    /// Our process group.
    ours: Pid,
}

impl Foreground {
    /// Our controlling terminal, if one of fds 0-2 is it (we may be in
    /// its background).
    pub fn ours() -> Option<Foreground> {
        let sid = nix::unistd::getsid(None).ok()?;
        (0..3).find_map(|fd| {
            // SAFETY: fds 0-2 are open for the client's whole life
            // (sys::ensure_stdio_open), and only borrowed for this call.
            let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
            (nix::sys::termios::tcgetsid(borrowed).ok()? == sid).then_some(Foreground {
                fd,
                ours: getpgrp(),
            })
        })
    }

    /// Put `group` in the foreground if our group is there now (best
    /// effort: a terminal hung up meanwhile just refuses).
    pub fn give_to(&self, group: Pid) {
        if self.is_ours_now() {
            self.set(group);
        }
    }

    /// Put our group back in the foreground, if the terminal's foreground
    /// is still one we gave it (a shell may have taken it meanwhile).
    pub fn take_back(&self, given: Pid) {
        if self.front() == Some(given) {
            self.set(self.ours);
        }
    }

    /// Is our group in the foreground now (after `fg`, not after `bg`)?
    pub fn is_ours_now(&self) -> bool {
        self.front() == Some(self.ours)
    }

    fn front(&self) -> Option<Pid> {
        // SAFETY: as in `ours`.
        tcgetpgrp(unsafe { BorrowedFd::borrow_raw(self.fd) }).ok()
    }

    /// `tcsetpgrp` with SIGTTOU blocked: from a background group the
    /// kernel would otherwise stop us for it.
    fn set(&self, group: Pid) {
        let ttou = sys::sigset_of(std::iter::once(libc::SIGTTOU));
        let old = sys::sigprocmask(libc::SIG_BLOCK, Some(&ttou));
        // SAFETY: as in `ours`.
        let _ = tcsetpgrp(unsafe { BorrowedFd::borrow_raw(self.fd) }, group);
        if let Ok(old) = old {
            let _ = sys::sigprocmask(libc::SIG_SETMASK, Some(&old));
        }
    }
}
