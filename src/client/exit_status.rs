//! Turning a wait status into our own exit, for the setup process and for
//! each call.
//!
//! An exit code is passed on as it is. Death by any signal is passed on by
//! dying of the same signal (with core dumps off, so the client leaves no
//! core file of its own), so the caller (a shell, say) sees what it would
//! have seen had it run the script directly: `$?` is 128 + the signal.
//! The C client 7.0.0 does this only for INT, TERM, HUP, PIPE and KILL and
//! reports the others with exit status 127. A status no process can die
//! with (a stop, a signal whose default is to ignore or stop) becomes a
//! message and 127.

use crate::error::report;

/// What to do with a wait status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Exit with this code.
    Exit(u8),
    /// Kill ourselves with this signal.
    Raise(libc::c_int),
    /// Print this message and exit 127.
    Fail(String),
}

/// Signals whose default action does not end a process: a status saying
/// a process died of one cannot be reproduced by raising it.
const NOT_FATAL: [libc::c_int; 8] = [
    libc::SIGCHLD,
    libc::SIGCONT,
    libc::SIGURG,
    libc::SIGWINCH,
    libc::SIGSTOP,
    libc::SIGTSTP,
    libc::SIGTTIN,
    libc::SIGTTOU,
];

/// Classify a raw wait status received for `what` ("setup", "invocation").
pub fn classify(status: u32, what: &str) -> Outcome {
    let Ok(status) = i32::try_from(status) else {
        return Outcome::Fail(format!("status 0x{status:x} does not fit in an int"));
    };
    if libc::WIFEXITED(status) {
        return Outcome::Exit(libc::WEXITSTATUS(status) as u8);
    }
    if libc::WIFSIGNALED(status) {
        let sig = libc::WTERMSIG(status);
        let core = libc::WCOREDUMP(status);
        if !NOT_FATAL.contains(&sig) && (1..=64).contains(&sig) {
            return Outcome::Raise(sig);
        }
        return Outcome::Fail(format!(
            "{what} failed due to signal {sig} {}{}",
            crate::sys::signal_name(sig),
            if core { " (core dumped)" } else { "" }
        ));
    }
    Outcome::Fail(format!(
        "{what} failed with weird wait status {status} 0x{status:x}"
    ))
}

/// Act on an outcome: exit or die, never return.
pub fn propagate(outcome: Outcome) -> ! {
    match outcome {
        Outcome::Exit(code) => crate::sys::exit_now(code.into()),
        Outcome::Raise(sig) => {
            crate::sys::disable_core_dumps();
            crate::sys::raise_default(sig);
            let name = crate::sys::signal_name(sig);
            report(format_args!(
                "unexpectedly kept running after raising (to propagate) {name}"
            ));
            crate::sys::exit_now(127)
        }
        Outcome::Fail(msg) => {
            report(msg);
            crate::sys::exit_now(127)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exited(code: i32) -> u32 {
        (code << 8) as u32
    }
    fn signalled(sig: i32, core: bool) -> u32 {
        (sig | if core { 0x80 } else { 0 }) as u32
    }

    #[test]
    fn table() {
        let cases: Vec<(u32, Outcome)> = vec![
            (exited(0), Outcome::Exit(0)),
            (exited(1), Outcome::Exit(1)),
            (exited(42), Outcome::Exit(42)),
            (exited(255), Outcome::Exit(255)),
            (signalled(libc::SIGINT, false), Outcome::Raise(libc::SIGINT)),
            (
                signalled(libc::SIGTERM, false),
                Outcome::Raise(libc::SIGTERM),
            ),
            (signalled(libc::SIGHUP, false), Outcome::Raise(libc::SIGHUP)),
            (
                signalled(libc::SIGPIPE, false),
                Outcome::Raise(libc::SIGPIPE),
            ),
            (
                signalled(libc::SIGKILL, false),
                Outcome::Raise(libc::SIGKILL),
            ),
        ];
        for (status, want) in cases {
            assert_eq!(classify(status, "invocation"), want, "status {status:#x}");
        }
    }

    #[test]
    fn every_fatal_signal_is_raised_core_dump_or_not() {
        for sig in [
            libc::SIGSEGV,
            libc::SIGQUIT,
            libc::SIGABRT,
            libc::SIGUSR1,
            40,
        ] {
            assert_eq!(classify(signalled(sig, false), "x"), Outcome::Raise(sig));
            assert_eq!(classify(signalled(sig, true), "x"), Outcome::Raise(sig));
        }
    }

    #[test]
    fn reported_signals() {
        assert_eq!(
            classify(signalled(libc::SIGWINCH, false), "invocation"),
            Outcome::Fail("invocation failed due to signal 28 Window changed".into())
        );
        assert_eq!(
            classify(signalled(libc::SIGCHLD, true), "setup"),
            Outcome::Fail("setup failed due to signal 17 Child exited (core dumped)".into())
        );
    }

    #[test]
    fn odd_statuses() {
        // Stopped (0x7f in the low byte) is not a final status.
        assert!(matches!(classify(0x137f, "x"), Outcome::Fail(m) if m.contains("weird")));
        assert!(
            matches!(classify(0x8000_0000, "x"), Outcome::Fail(m) if m.contains("does not fit"))
        );
    }
}
