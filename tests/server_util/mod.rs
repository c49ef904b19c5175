//! Harness for `tests/server.rs`: builds the Rust examples the tests run
//! as servers, gives each test its own directory (holding a private copy
//! of the example, so each test has its own server identity with either
//! client) and run directory, and stops every server a test started.
//!
//! Processes are found by recorded pid, or by their executable being this
//! test's private copy, never by name. Init on the test machines may not
//! reap orphans, so a zombie whose parent is pid 1 counts as gone.

#![allow(dead_code)]

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Our client.
pub const OURS: &str = env!("CARGO_BIN_EXE_prefork-interp");
/// The reference C client (Debian chiark-utils-bin).
pub const C_CLIENT: &str = "/usr/bin/prefork-interp";

/// Is the reference C client installed?
pub fn have_c_client() -> bool {
    Path::new(C_CLIENT).exists()
}

/// The directory holding the built examples, building them once.
///
/// Integration tests do not get examples built when run alone
/// (`cargo test --test server`), so build them here with the same cargo,
/// target directory and profile as this test binary.
pub fn examples_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        // target/<profile>/deps/server-<hash>
        let exe = std::env::current_exe().expect("current_exe");
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("test binary in target/<profile>/deps");
        let target_dir = profile_dir.parent().expect("target dir");
        let profile = profile_dir.file_name().expect("profile").to_owned();
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| env!("CARGO").into());
        let mut cmd = Command::new(cargo);
        cmd.args([
            "build",
            "--quiet",
            "--example",
            "exit_with",
            "--example",
            "probe",
        ])
        .arg("--target-dir")
        .arg(target_dir)
        .current_dir(env!("CARGO_MANIFEST_DIR"));
        match profile.to_str() {
            Some("debug") => {}
            Some("release") => {
                cmd.arg("--release");
            }
            _ => {
                cmd.arg("--profile").arg(&profile);
            }
        }
        let status = cmd.status().expect("run cargo build for the examples");
        assert!(status.success(), "building the examples failed: {status}");
        profile_dir.join("examples")
    })
}

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// Which client a fixture runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Client {
    /// Ours, with a private run directory.
    Ours,
    /// The reference C client, which uses the default run directory.
    C,
}

/// A test's directory, program copy and run directory.
pub struct Fixture {
    pub dir: PathBuf,
    pub run_dir: PathBuf,
    /// This test's copy of the example.
    pub prog: PathBuf,
    pub client: Client,
    /// First arguments used (each is part of a server identity).
    scripts: std::cell::RefCell<Vec<Option<OsString>>>,
}

impl Fixture {
    /// A fixture running `example` through `client`.
    pub fn new(tag: &str, example: &str, client: Client) -> Fixture {
        let dir = std::env::temp_dir().join(format!(
            "pfi-server-{tag}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let prog = dir.join(example);
        std::fs::copy(examples_dir().join(example), &prog).unwrap();
        Fixture {
            run_dir: dir.join("run"),
            dir,
            prog,
            client,
            scripts: Default::default(),
        }
    }

    fn client_path(&self) -> &str {
        match self.client {
            Client::Ours => OURS,
            Client::C => C_CLIENT,
        }
    }

    /// `client -U PROG args...`, in the test's directory, stdin /dev/null.
    pub fn cmd<S: AsRef<OsStr>>(&self, args: &[S]) -> Command {
        let first = args.first().map(|a| a.as_ref().to_owned());
        if !self.scripts.borrow().contains(&first) {
            self.scripts.borrow_mut().push(first);
        }
        let mut c = Command::new(self.client_path());
        c.arg("-U").arg(&self.prog).args(args);
        c.current_dir(&self.dir);
        c.env("PREFORK_INTERP_RUN_DIR", &self.run_dir);
        c.env_remove("PREFORK_INTERP_DEBUG");
        c.env_remove("PREFORK_INTERP");
        c.stdin(Stdio::null());
        c
    }

    /// Run to completion, capturing stdout and stderr.
    pub fn run<S: AsRef<OsStr>>(&self, args: &[S]) -> Output {
        self.output(self.cmd(args))
    }

    /// Run a probe command: `PROBE=cmd client -U probe args...`.
    pub fn probe<S: AsRef<OsStr>>(&self, probe: &str, args: &[S]) -> Output {
        let mut c = self.cmd(args);
        c.env("PROBE", probe);
        self.output(c)
    }

    /// Run `cmd` with a time limit, capturing its output.
    pub fn output(&self, mut cmd: Command) -> Output {
        let child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn client");
        output_within(child, Duration::from_secs(30))
    }

    /// The listening socket of this fixture's only server (our client).
    pub fn socket(&self) -> PathBuf {
        let sockets: Vec<PathBuf> = std::fs::read_dir(&self.run_dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().as_bytes().starts_with(b"s"))
            .map(|e| e.path())
            .collect();
        assert_eq!(sockets.len(), 1, "sockets in run dir: {sockets:?}");
        sockets.into_iter().next().unwrap()
    }

    /// Live processes running this fixture's copy of the example.
    pub fn processes(&self) -> Vec<i32> {
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return vec![];
        };
        dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
            .filter(|pid| {
                // A replaced executable reads as "PATH (deleted)".
                let mut deleted = self.prog.clone().into_os_string();
                deleted.push(" (deleted)");
                std::fs::read_link(format!("/proc/{pid}/exe"))
                    .is_ok_and(|exe| exe == self.prog || exe.as_os_str() == deleted)
            })
            .collect()
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        for script in self.scripts.borrow().iter() {
            let mut c = Command::new(self.client_path());
            c.arg("--kill").arg("-U").arg(&self.prog).args(script);
            c.current_dir(&self.dir)
                .env("PREFORK_INTERP_RUN_DIR", &self.run_dir)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            let _ = c.status();
        }
        // The servers now finish their calls and exit; force any that
        // do not within a few seconds.
        if !wait_until(Duration::from_secs(5), || self.processes().is_empty()) {
            let left = self.processes();
            eprintln!(
                "fixture {}: killing leftover processes {left:?}",
                self.dir.display()
            );
            for pid in left {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Wait for `child` for at most `limit`, killing it if it takes longer.
pub fn output_within(mut child: std::process::Child, limit: Duration) -> Output {
    use std::io::Read;
    let mut out = child.stdout.take();
    let mut err = child.stderr.take();
    let t_out = std::thread::spawn(move || {
        let mut v = Vec::new();
        if let Some(o) = out.as_mut() {
            let _ = o.read_to_end(&mut v);
        }
        v
    });
    let t_err = std::thread::spawn(move || {
        let mut v = Vec::new();
        if let Some(e) = err.as_mut() {
            let _ = e.read_to_end(&mut v);
        }
        v
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let status = child.wait().unwrap();
            panic!("client took more than {limit:?}; killed ({status})");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    Output {
        status,
        stdout: t_out.join().unwrap(),
        stderr: t_err.join().unwrap(),
    }
}

/// Lossy text, for messages.
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Panic with everything useful unless `out` is a success.
pub fn assert_ok(out: &Output) {
    assert!(
        out.status.success(),
        "status {}\nstdout: {}\nstderr: {}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
}

/// `key=value` from the `ids` line of a probe's output.
pub fn id(out: &Output, key: &str) -> i32 {
    let t = text(&out.stdout);
    t.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
        .unwrap_or_else(|| panic!("no {key}= in output {t:?}, stderr {}", text(&out.stderr)))
}

/// A process's state, parent, process group and session.
pub fn proc_stat(pid: i32) -> Option<(char, i32, i32, i32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut f = rest.split(' ');
    let state = f.next()?.chars().next()?;
    let mut num = || f.next()?.parse::<i32>().ok();
    Some((state, num()?, num()?, num()?))
}

/// Gone: no such process, or a zombie of init (which may never reap it).
pub fn gone(pid: i32) -> bool {
    match proc_stat(pid) {
        None => true,
        Some((state, ppid, _, _)) => state == 'Z' && ppid == 1,
    }
}

/// Poll `cond` until it holds or `limit` passes; the final answer.
pub fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    let mut pause = Duration::from_millis(2);
    loop {
        if cond() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// Children of `pid` (any state).
pub fn children(pid: i32) -> Vec<(i32, char)> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return vec![];
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|p| {
            let (state, ppid, _, _) = proc_stat(p)?;
            (ppid == pid).then_some((p, state))
        })
        .collect()
}

/// Number of open fds of `pid`.
pub fn fd_count(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Lower-case hex of some bytes.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
}
