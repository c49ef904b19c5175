//! What the caller hands a direct run that protocol v1 does not carry:
//! the umask, nice value, resource limits, ignored and blocked signals and
//! the other open fds (protocol.md §6.3). Read once, just before the call,
//! before the client changes any of them (every fd it opens until then is
//! close-on-exec, and it leaves signals and the umask alone).

use std::os::fd::{BorrowedFd, RawFd};

use nix::sys::signal::SigSet;
use nix::sys::stat::{Mode, umask};

use crate::error::report;
use crate::protocol::{Attributes, MAX_EXTRA_FDS, Rlimit};
use crate::sys;

/// The caller's attributes, ready to send in an `ATTR` frame.
#[derive(Debug)]
pub struct Caller {
    /// What goes on the wire (`fds` lists the numbers of [`Caller::fds`]).
    pub attrs: Attributes,
    /// The signal mask we started with, put back before falling back to
    /// v1 behaviour.
    pub mask: SigSet,
}

impl Caller {
    /// Read the caller's attributes. Nothing here fails: an attribute that
    /// cannot be read is left out, and the server keeps its own.
    pub fn capture() -> Caller {
        let mask = sys::sigprocmask(libc::SIG_BLOCK, None).unwrap_or_else(|_| SigSet::empty());
        let old = umask(Mode::empty());
        umask(old);
        let mut fds = inherited_fds();
        if fds.len() > MAX_EXTRA_FDS {
            report(format_args!(
                "warning: {} open fds besides 0-2; passing only the lowest {MAX_EXTRA_FDS}",
                fds.len()
            ));
            fds.truncate(MAX_EXTRA_FDS);
        }
        let attrs = Attributes {
            umask: Some(old.bits()),
            nice: sys::nice_value().ok(),
            rlimits: (0..sys::RLIMIT_COUNT)
                .filter_map(|resource| {
                    let (soft, hard) = sys::get_rlimit(resource).ok()?;
                    Some(Rlimit {
                        resource,
                        soft,
                        hard,
                    })
                })
                .collect(),
            ignored: Some(
                sys::all_signals()
                    .filter(|&s| sys::signal_is_ignored(s))
                    .collect(),
            ),
            blocked: Some(
                sys::all_signals()
                    .filter(|&s| sys::sigset_has(&mask, s))
                    .collect(),
            ),
            fds,
            pty: Vec::new(),
            pty_background: false,
        };
        Caller { attrs, mask }
    }

    /// The extra fds, borrowed for sending.
    pub fn fds(&self) -> Vec<BorrowedFd<'_>> {
        self.attrs
            .fds
            .iter()
            // SAFETY: these fds were open when we started and the client
            // never closes an fd it did not open itself, so each stays open
            // for the whole run (and so for the borrow).
            .map(|&fd| unsafe { BorrowedFd::borrow_raw(fd) })
            .collect()
    }
}

/// The fds 3 and up that a direct run would inherit: open and not
/// close-on-exec, ascending. `/proc/self/fd` lists them; without `/proc`,
/// probe up to 1024.
fn inherited_fds() -> Vec<RawFd> {
    let mut fds: Vec<RawFd> = match std::fs::read_dir("/proc/self/fd") {
        // The directory's own fd is close-on-exec, so the filter drops it.
        Ok(dir) => dir
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .filter(|&fd| fd >= 3)
            .collect(),
        Err(_) => (3..1024).collect(),
    };
    fds.retain(|&fd| sys::fd_is_inheritable(fd));
    fds.sort_unstable();
    fds
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn sees_inheritable_fds_only() {
        let (r, w) = nix::unistd::pipe().unwrap(); // inheritable
        let cloexec = std::fs::File::open("/dev/null").unwrap(); // std sets O_CLOEXEC
        let fds = inherited_fds();
        assert!(fds.contains(&r.as_raw_fd()), "{fds:?}");
        assert!(fds.contains(&w.as_raw_fd()), "{fds:?}");
        assert!(!fds.contains(&cloexec.as_raw_fd()), "{fds:?}");
        drop((r, w, cloexec));
    }

    #[test]
    fn captures_every_resource_and_the_umask() {
        let c = Caller::capture();
        assert_eq!(c.attrs.rlimits.len(), sys::RLIMIT_COUNT as usize);
        assert!(c.attrs.umask.is_some());
        assert!(c.attrs.ignored.is_some() && c.attrs.blocked.is_some());
    }
}
