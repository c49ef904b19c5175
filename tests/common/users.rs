//! Throwaway users for cross-uid tests: made with `useradd` for one test
//! and removed (with every process they still run) when dropped. Tests
//! that need one run as root (as CI does) and skip, saying so, otherwise.

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A user that exists for one test.
pub struct TempUser {
    /// The login name.
    pub name: String,
    /// Its uid.
    pub uid: u32,
    /// Its primary gid.
    pub gid: u32,
}

impl TempUser {
    /// A new user without a home directory (`/nonexistent`), or `None`
    /// (after a message) when the tests do not run as root.
    pub fn create(test: &str) -> Option<TempUser> {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("{test}: skipped: needs root to create a throwaway user");
            return None;
        }
        let name = format!(
            "pfi{}x{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        );
        // useradd takes a lock on /etc/passwd and gives up at once when a
        // parallel test holds it: try again for a while.
        let mut last = String::new();
        for _ in 0..100 {
            let out = Command::new("useradd")
                .args(["-M", "-N", "-d", "/nonexistent", "-s", "/bin/false", &name])
                .output()
                .expect("run useradd");
            if out.status.success() {
                let user = nix::unistd::User::from_name(&name)
                    .expect("look up the new user")
                    .expect("the new user exists");
                return Some(TempUser {
                    name,
                    uid: user.uid.as_raw(),
                    gid: user.gid.as_raw(),
                });
            }
            last = String::from_utf8_lossy(&out.stderr).into_owned();
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("useradd {name} failed: {last}");
    }

    /// `cmd`, to be run as this user.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        use std::os::unix::process::CommandExt;
        let mut c = Command::new(program);
        c.uid(self.uid).gid(self.gid);
        c
    }
}

impl Drop for TempUser {
    fn drop(&mut self) {
        let _ = Command::new("pkill")
            .args(["-KILL", "-U", &self.uid.to_string()])
            .status();
        for _ in 0..100 {
            let ok = Command::new("userdel")
                .arg(&self.name)
                .output()
                .is_ok_and(|o| o.status.success());
            if ok {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("warning: could not remove throwaway user {}", self.name);
    }
}
