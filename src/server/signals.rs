//! Signals on the server side, in one place: what the program had when it
//! called `initialisation_complete` ([`Program`]), what the server changes
//! ([`SERVER_SIGNALS`]), and what the executor ends up with
//! ([`Program::apply`], protocol.md §6.4 step 6-7).
//!
//! ```text
//!   program   its own dispositions and mask (snapshot)
//!   server    SIGCHLD default (SIG_IGN would reap executors behind our
//!             back), blocked and read from a signalfd (the executors'
//!             stops and ends)
//!   spare     the server's, until it becomes an executor
//!   executor  the program's handlers and SIG_IGNs; its defaults become
//!             SIG_IGN where the caller ignores them; the caller's mask
//!             (without call1: the program's)
//! ```

use std::io;

use nix::sys::signal::{SigSet, SigmaskHow, sigprocmask};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use crate::sys::{self, Disposition, SavedSignal};

/// Set in the server before it forks anything, with the reason.
pub(super) const SERVER_SIGNALS: &[(libc::c_int, Disposition, &str)] = &[(
    libc::SIGCHLD,
    Disposition::Default,
    "SIG_IGN would reap our children for us, and waitpid would fail",
)];

/// The program's signal state when it called `initialisation_complete`.
pub(super) struct Program {
    /// Every signal's disposition then, by number (SIGKILL and SIGSTOP
    /// left out: they cannot be changed).
    saved: Vec<SavedSignal>,
    /// Its blocked signals.
    mask: SigSet,
}

impl Program {
    /// Record the program's dispositions and mask; call before the server
    /// changes any.
    pub(super) fn snapshot() -> io::Result<Program> {
        let saved = sys::all_signals()
            .filter(|&s| s != libc::SIGKILL && s != libc::SIGSTOP)
            .map(sys::get_signal)
            .collect::<io::Result<Vec<_>>>()?;
        let mask = SigSet::thread_get_mask()?;
        Ok(Program { saved, mask })
    }

    /// Give the executor its signals (protocol.md §6.4 step 6): where the
    /// program has what a Rust program starts with (`SIG_DFL`), `SIG_IGN`
    /// if the caller ignores it (`ignored`), else the default again; every
    /// other disposition is the program's choice and kept. SIGPIPE starts
    /// ignored in a Rust program, so a `SIG_DFL` there is a choice too.
    /// Then the mask: the caller's (`blocked`) or, without one, the
    /// program's.
    pub(super) fn apply(
        &self,
        ignored: &[libc::c_int],
        blocked: Option<&[libc::c_int]>,
    ) -> io::Result<()> {
        for saved in &self.saved {
            let sig = saved.signal();
            if saved.is_default() && sig != libc::SIGPIPE && ignored.contains(&sig) {
                sys::set_signal(saved.signal(), Disposition::Ignore)?;
            } else {
                sys::restore_signal(saved)?;
            }
        }
        let mask = blocked.map_or(self.mask, |b| sys::sigset_of(b.iter().copied()));
        sigprocmask(SigmaskHow::SIG_SETMASK, Some(&mask), None)?;
        Ok(())
    }
}

/// Apply a table of dispositions.
pub(super) fn install(table: &[(libc::c_int, Disposition, &str)]) -> io::Result<()> {
    for &(sig, to, _why) in table {
        sys::set_signal(sig, to)?;
    }
    Ok(())
}

/// In the server: block SIGCHLD and read it from a signalfd, so the loop
/// wakes for the executors' stops as well as their ends (a pidfd only
/// wakes for the end).
pub(super) fn child_events() -> io::Result<SignalFd> {
    let set = sys::sigset_of(std::iter::once(libc::SIGCHLD));
    sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), None)?;
    Ok(SignalFd::with_flags(
        &set,
        SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC,
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_name_each_signal_once() {
        let mut sigs: Vec<_> = SERVER_SIGNALS.iter().map(|r| r.0).collect();
        sigs.dedup();
        assert_eq!(sigs.len(), SERVER_SIGNALS.len());
    }
}
