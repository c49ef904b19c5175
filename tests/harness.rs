//! Checks of the shared test harness (`common`) itself: the time limit
//! and what counts as a gone process.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// Panic message of `f`, which must panic.
fn panic_of(f: impl FnOnce()) -> String {
    let e = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_err();
    e.downcast_ref::<String>().cloned().unwrap_or_default()
}

#[test]
fn a_process_past_its_limit_is_killed_and_fails_the_test() {
    let mut c = Command::new("sleep");
    c.arg("30").stdout(Stdio::piped()).stderr(Stdio::piped());
    let start = Instant::now();
    let sleeper = Running::spawn(c, Duration::from_millis(300));
    let pid = sleeper.pid();
    let err = panic_of(|| {
        sleeper.finish();
    });
    assert!(start.elapsed() < Duration::from_secs(10), "{err}");
    assert!(
        err.contains("did not exit") && err.contains("killed"),
        "{err}"
    );
    // Killed and reaped.
    assert!(reaped(pid), "{:?}", proc_stat(pid));
}

#[test]
fn output_held_open_by_a_grandchild_fails_the_test() {
    // The child exits at once, leaving a grandchild holding its stdout.
    let mut c = Command::new("sh");
    c.args(["-c", "sleep 30 & echo $!"]);
    let err = try_run_within(c, Duration::from_millis(300)).unwrap_err();
    assert!(err.contains("stayed open"), "{err}");
    let grandchild: i32 = err
        .split("stdout: ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no pid in {err}"));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(grandchild),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
}

#[test]
fn a_zombie_is_gone_but_not_reaped() {
    let mut c = Command::new("true");
    c.stdin(Stdio::null());
    let child = Running::spawn(c, LIMIT);
    let pid = child.pid();
    // Not waited for yet: a zombie of ours.
    assert!(
        wait_until(LIMIT, || proc_stat(pid).is_some_and(|s| s.0 == 'Z')),
        "{:?}",
        proc_stat(pid)
    );
    assert!(gone(pid));
    assert!(!reaped(pid));
    assert!(child.finish().status.success());
    assert!(gone(pid) && reaped(pid));
}
