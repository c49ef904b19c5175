//! The client's own messages cannot turn into a crash: with stderr a pipe
//! nobody reads and SIGPIPE ignored (as under `trap '' PIPE`), a usage
//! error still exits 127, not SIGABRT from a panicking `eprintln!`; with
//! stderr closed, likewise.

mod common;

use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{OURS, Running};

/// Run `cmd` (stdin `/dev/null`, stdout and stderr as set) for at most
/// 10 s: its status.
fn status_within(mut cmd: Command) -> std::process::ExitStatus {
    cmd.stdin(Stdio::null());
    Running::spawn(cmd, Duration::from_secs(10)).finish().status
}

#[test]
fn broken_stderr_with_sigpipe_ignored_gives_127() {
    let (r, w) = nix::unistd::pipe().unwrap();
    drop(r);
    let mut c = Command::new(OURS);
    c.arg("--frob").stderr(w);
    // SAFETY: signal(2) only, between fork and exec.
    unsafe {
        c.pre_exec(|| {
            libc::signal(libc::SIGPIPE, libc::SIG_IGN);
            Ok(())
        });
    }
    let status = status_within(c);
    assert_eq!(status.signal(), None, "{status:?}");
    assert_eq!(status.code(), Some(127));
}

#[test]
fn closed_stderr_gives_127() {
    for args in [&["--frob"][..], &["-U"]] {
        let mut c = Command::new(OURS);
        c.args(args);
        // SAFETY: close(2) only, between fork and exec.
        unsafe {
            c.pre_exec(|| {
                libc::close(2);
                Ok(())
            });
        }
        let status = status_within(c);
        assert_eq!(status.code(), Some(127), "{args:?}: {status:?}");
    }
}
