//! A child process we forked and must reap: its pid, and a pidfd that
//! polls readable when it exits (SPEC §6: learn of a death from the
//! kernel, never from a handle the program may close).
//!
//! Kernels without `pidfd_open` (before Linux 5.3) get no pidfd; the
//! callers then poll with a short [`TICK`] and check with `WNOHANG`.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use crate::sys;

/// How often to check on children that have no pidfd.
pub(super) const TICK: Duration = Duration::from_millis(50);

/// A child process not yet reaped.
#[derive(Debug)]
pub(super) struct Child {
    /// Its pid.
    pub(super) pid: libc::pid_t,
    pidfd: Option<OwnedFd>,
}

impl Child {
    /// Track the child `pid` (just forked by us).
    pub(super) fn new(pid: libc::pid_t) -> Child {
        Child {
            pid,
            pidfd: sys::pidfd_open(pid).ok(),
        }
    }

    /// The fd to poll for the child's exit, if the kernel gave us one.
    pub(super) fn pidfd(&self) -> Option<BorrowedFd<'_>> {
        self.pidfd.as_ref().map(|fd| fd.as_fd())
    }

    /// Reap the child if it has exited: its raw wait status.
    pub(super) fn try_reap(&self) -> io::Result<Option<i32>> {
        sys::try_wait_raw(self.pid)
    }

    /// Wait for the child to exit and reap it: its raw wait status.
    pub(super) fn reap(self) -> io::Result<i32> {
        sys::wait_raw(self.pid)
    }
}
