//! The harness shared by the integration tests (`client.rs`, `server.rs`,
//! `transparency.rs`, `identity.rs`, `robustness.rs`; `harness.rs` checks
//! it):
//!
//! - [`Fixture`]: a test's own directory, program (a private copy of a
//!   Rust example, or a script written there), run directory and `$HOME`,
//!   and a `Drop` that stops every server the test started;
//! - [`Running`], [`run_within`]: every process a test starts runs under
//!   a time limit; past it the process is killed and the test fails;
//! - process inspection through `/proc`, with one meaning of "gone"
//!   ([`gone`]);
//! - text and assertion helpers.
//!
//! Processes are found by recorded pid, by their executable being the
//! test's private copy of an example, or by their command line naming a
//! file in the test's own directory (each directory name is unique), never
//! by a program name shared with other tests.

#![allow(dead_code)]

pub mod identity;
pub mod users;

use std::cell::RefCell;
use std::ffi::{OsStr, OsString};
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Output, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// Our client: `$PREFORK_INTERP_CLIENT` when the tests were built (the
/// Makefile sets it to the client it builds, maybe linked against musl),
/// else the one cargo built with them.
pub const OURS: &str = match option_env!("PREFORK_INTERP_CLIENT") {
    Some(path) => path,
    None => env!("CARGO_BIN_EXE_prefork-interp"),
};
/// The reference C client (Debian chiark-utils-bin).
pub const C_CLIENT: &str = "/usr/bin/prefork-interp";

/// How long one client call or program run may take before it is killed
/// and the test fails.
pub const LIMIT: Duration = Duration::from_secs(30);

/// No arguments, for the `args` of [`Fixture::cmd_with`] and the like.
pub const NONE: &[&str] = &[];

/// How long a fixture's clean-up `--kill` may take (ours waits at most
/// 5 s for the old server).
const KILL_LIMIT: Duration = Duration::from_secs(20);

/// Building the examples (cold, in release mode) may take a while.
const BUILD_LIMIT: Duration = Duration::from_secs(900);

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
        let out = run_within(cmd, BUILD_LIMIT);
        assert!(
            out.status.success(),
            "building the examples failed: {}\n{}",
            out.status,
            text(&out.stderr)
        );
        profile_dir.join("examples")
    })
}

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Client {
    /// Ours.
    Ours,
    /// The reference C client, which ignores `PREFORK_INTERP_RUN_DIR`
    /// and `$HOME`: it always uses the default run directory.
    C,
}

impl Client {
    /// The client's executable.
    pub fn path(self) -> &'static str {
        match self {
            Client::Ours => OURS,
            Client::C => C_CLIENT,
        }
    }
}

/// An identity a fixture used: the client, the options that make the
/// identity, and the first argument (the script, for an example).
type Used = (Client, Vec<OsString>, Option<OsString>);

/// A test's own directory (the current directory of its calls), program,
/// run directory and `$HOME`.
///
/// Calls are `CLIENT OPTIONS PROGRAM... ARGS...`, where `PROGRAM...` is the
/// example copy, or the interpreter and the script. Either way the program
/// lives in the test's directory, so each test has its own server
/// identities, with either client.
///
/// Run directory: a private one (`run_dir`), except in a *shared* fixture,
/// which uses the default run directory so the C client sees the same
/// servers. `$HOME` is private (`home`) for every process a fixture
/// starts. Note that it does not move the default run directory: both
/// clients take the home directory from the passwd entry (SPEC §3), so a
/// shared fixture's servers still live in the real one; their identities
/// are this test's own (the program is in its directory) and `Drop` stops
/// them with `--kill`, which removes their sockets and locks.
pub struct Fixture {
    /// The test's directory, the calls' current directory.
    pub dir: PathBuf,
    /// The private run directory (unused by a shared fixture).
    pub run_dir: PathBuf,
    /// The private `$HOME`.
    pub home: PathBuf,
    /// The program: the example's copy, or the script.
    pub prog: PathBuf,
    /// The client [`Fixture::cmd`] runs.
    pub client: Client,
    /// What the client runs before the arguments: `[prog]`, or
    /// `[interpreter, prog]`.
    program: Vec<OsString>,
    shared: bool,
    /// Each identity used, for `Drop`.
    used: RefCell<Vec<Used>>,
}

impl Fixture {
    fn empty(tag: &str, client: Client, shared: bool) -> Fixture {
        let dir = std::env::temp_dir().join(format!(
            "pfi-{tag}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        let home = dir.join("home");
        std::fs::create_dir_all(&home).unwrap();
        Fixture {
            run_dir: dir.join("run"),
            prog: PathBuf::new(),
            dir,
            home,
            client,
            program: Vec::new(),
            shared,
            used: Default::default(),
        }
    }

    /// A fixture running a private copy of the Rust example `example`
    /// through `client`, by default; a C client fixture is shared (the C
    /// client uses the default run directory anyway), so our client run
    /// with [`Fixture::cmd_with`] reaches the same servers.
    pub fn example(tag: &str, example: &str, client: Client) -> Fixture {
        let mut f = Fixture::empty(tag, client, client == Client::C);
        f.prog = f.dir.join(example);
        std::fs::copy(examples_dir().join(example), &f.prog).unwrap();
        f.program = vec![f.prog.clone().into()];
        f
    }

    /// A fixture running `interpreter DIR/name` (the file holding `text`)
    /// through our client by default; `shared`: in the default run
    /// directory, for the C client.
    pub fn script(tag: &str, name: &str, text: &str, interpreter: &str, shared: bool) -> Fixture {
        let mut f = Fixture::empty(tag, Client::Ours, shared);
        f.prog = f.dir.join(name);
        std::fs::write(&f.prog, text).unwrap();
        f.program = vec![interpreter.into(), f.prog.clone().into()];
        f
    }

    /// Is this fixture in the default run directory?
    pub fn is_shared(&self) -> bool {
        self.shared
    }

    /// Give `c` this fixture's surroundings: its directory as the current
    /// directory, its run directory (unless shared), its `$HOME`, no
    /// tracing, stdin `/dev/null`.
    pub fn prepare(&self, c: &mut Command) {
        c.current_dir(&self.dir);
        if self.shared {
            c.env_remove("PREFORK_INTERP_RUN_DIR");
        } else {
            c.env("PREFORK_INTERP_RUN_DIR", &self.run_dir);
        }
        c.env("HOME", &self.home);
        c.env_remove("PREFORK_INTERP_DEBUG");
        c.env_remove("PREFORK_INTERP");
        c.stdin(Stdio::null());
        // What a shell gives the commands it runs in the foreground: SIGINT
        // and SIGQUIT at their default, even when the tests themselves were
        // started in the background of a non-interactive shell, which
        // ignores both for its background jobs.
        // SAFETY: signal() is async-signal-safe, fit to run between fork
        // and exec.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(c, || {
                libc::signal(libc::SIGINT, libc::SIG_DFL);
                libc::signal(libc::SIGQUIT, libc::SIG_DFL);
                Ok(())
            });
        }
    }

    /// `CLIENT OPTS PROGRAM... ARGS...`, prepared ([`Fixture::prepare`]).
    pub fn cmd_with<S: AsRef<OsStr>>(&self, client: Client, opts: &[&str], args: &[S]) -> Command {
        if !opts.contains(&"--kill") {
            let ident_opts: Vec<OsString> = opts
                .iter()
                .filter(|o| **o != "-f")
                .map(OsString::from)
                .collect();
            let used = (
                client,
                ident_opts,
                args.first().map(|a| a.as_ref().to_owned()),
            );
            if !self.used.borrow().contains(&used) {
                self.used.borrow_mut().push(used);
            }
        }
        let mut c = Command::new(client.path());
        c.args(opts).args(&self.program).args(args);
        self.prepare(&mut c);
        c
    }

    /// `CLIENT OPTS PROGRAM... ARGS...` with this fixture's client.
    pub fn cmd_opts<S: AsRef<OsStr>>(&self, opts: &[&str], args: &[S]) -> Command {
        self.cmd_with(self.client, opts, args)
    }

    /// `CLIENT -U PROGRAM... ARGS...` with this fixture's client.
    pub fn cmd<S: AsRef<OsStr>>(&self, args: &[S]) -> Command {
        self.cmd_opts(&["-U"], args)
    }

    /// Run `CLIENT -U PROGRAM... ARGS...` ([`Fixture::cmd`]).
    pub fn run<S: AsRef<OsStr>>(&self, args: &[S]) -> Output {
        self.output(self.cmd(args))
    }

    /// Run `CLIENT OPTS PROGRAM... ARGS...` with this fixture's client.
    pub fn run_opts<S: AsRef<OsStr>>(&self, opts: &[&str], args: &[S]) -> Output {
        self.output(self.cmd_opts(opts, args))
    }

    /// Run `CLIENT OPTS PROGRAM... ARGS...` with `client`.
    pub fn run_with<S: AsRef<OsStr>>(&self, client: Client, opts: &[&str], args: &[S]) -> Output {
        self.output(self.cmd_with(client, opts, args))
    }

    /// Run a probe command: `PROBE=probe CLIENT -U probe ARGS...`.
    pub fn probe<S: AsRef<OsStr>>(&self, probe: &str, args: &[S]) -> Output {
        let mut c = self.cmd(args);
        c.env("PROBE", probe);
        self.output(c)
    }

    /// Run `cmd` within [`LIMIT`], capturing its output.
    pub fn output(&self, cmd: Command) -> Output {
        run_within(cmd, LIMIT)
    }

    /// Start `cmd` (stdout and stderr piped) under [`LIMIT`].
    pub fn spawn(&self, mut cmd: Command) -> Running {
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        Running::spawn(cmd, LIMIT)
    }

    /// The listening socket of this fixture's only server (private run
    /// directory).
    pub fn socket(&self) -> PathBuf {
        let sockets = self.sockets();
        assert_eq!(sockets.len(), 1, "sockets in run dir: {sockets:?}");
        sockets.into_iter().next().unwrap()
    }

    /// The sockets (`s*`) in the private run directory.
    pub fn sockets(&self) -> Vec<PathBuf> {
        std::fs::read_dir(&self.run_dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().as_bytes().starts_with(b"s"))
            .map(|e| e.path())
            .collect()
    }

    /// Live processes running this fixture's copy of an example.
    pub fn processes(&self) -> Vec<i32> {
        let mut deleted = self.prog.clone().into_os_string();
        deleted.push(" (deleted)");
        all_pids()
            .into_iter()
            .filter(|pid| {
                // A replaced executable reads as "PATH (deleted)".
                std::fs::read_link(format!("/proc/{pid}/exe"))
                    .is_ok_and(|exe| exe == self.prog || exe.as_os_str() == deleted)
            })
            .collect()
    }

    /// The servers among [`Fixture::processes`]: session leaders (their
    /// spare executors and the calls' executors are not).
    pub fn servers(&self) -> Vec<i32> {
        self.processes()
            .into_iter()
            .filter(|&p| proc_stat(p).is_some_and(|(_, _, _, sid)| sid == p))
            .collect()
    }

    /// Live processes of this fixture: those running its copy of an
    /// example, and those whose command line names a file in its
    /// directory (clients, watchers, script servers). Zombies have no
    /// command line and no executable: they are not counted.
    pub fn belonging(&self) -> Vec<i32> {
        let me = std::process::id() as i32;
        let mut dir = self.dir.clone().into_os_string();
        dir.push("/");
        let dir = dir.as_bytes();
        let mut pids = self.processes();
        for pid in all_pids() {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if pid != me && !pids.contains(&pid) && cmdline.windows(dir.len()).any(|w| w == dir) {
                pids.push(pid);
            }
        }
        pids
    }
}

impl Drop for Fixture {
    /// Stop every server: `--kill` each identity the test used (with the
    /// client and options it used), give everything of the fixture a few
    /// seconds to exit, then SIGKILL what is left.
    fn drop(&mut self) {
        let mut problems = Vec::new();
        for (client, opts, first) in self.used.take() {
            let mut c = Command::new(client.path());
            c.arg("--kill").args(&opts).args(&self.program).args(first);
            self.prepare(&mut c);
            if let Err(e) = try_run_within(c, KILL_LIMIT) {
                problems.push(e);
            }
        }
        if !wait_until(Duration::from_secs(5), || self.belonging().is_empty()) {
            let left = self.belonging();
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
            assert!(problems.is_empty(), "clean-up failed: {problems:?}");
        }
    }
}

/// One of a running process's output pipes, read by a thread.
struct Pipe {
    rx: Option<Receiver<Vec<u8>>>,
    buf: Vec<u8>,
}

impl Pipe {
    fn new<R: Read + Send + 'static>(r: Option<R>) -> Pipe {
        let rx = r.map(|mut r| {
            let (tx, rx) = mpsc::channel();
            std::thread::spawn(move || {
                let mut b = [0u8; 16384];
                loop {
                    match r.read(&mut b) {
                        Ok(0) => break,
                        Ok(n) => {
                            if tx.send(b[..n].to_vec()).is_err() {
                                break;
                            }
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(_) => break,
                    }
                }
            });
            rx
        });
        Pipe {
            rx,
            buf: Vec::new(),
        }
    }

    /// Wait until `deadline` for more: `Ok(false)` at EOF (or if not
    /// piped), `Err(())` if the deadline passed.
    fn more(&mut self, deadline: Instant) -> Result<bool, ()> {
        let Some(rx) = &self.rx else {
            return Ok(false);
        };
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(chunk) => {
                self.buf.extend(chunk);
                Ok(true)
            }
            Err(RecvTimeoutError::Disconnected) => {
                self.rx = None;
                Ok(false)
            }
            Err(RecvTimeoutError::Timeout) => Err(()),
        }
    }

    /// Take what has arrived so far, without waiting.
    fn poll(&mut self) {
        if let Some(rx) = &self.rx {
            while let Ok(chunk) = rx.try_recv() {
                self.buf.extend(chunk);
            }
        }
    }

    /// Read to EOF by `deadline`.
    fn drain(&mut self, deadline: Instant) -> Result<(), ()> {
        while self.more(deadline)? {}
        Ok(())
    }
}

/// A started process with a deadline. Past the deadline, whatever is
/// waiting for it ([`Running::line`], [`Running::finish`]) kills it and
/// panics. Dropped before it has been waited for (a test failing), it is
/// killed and reaped.
pub struct Running {
    child: Option<Child>,
    what: String,
    limit: Duration,
    deadline: Instant,
    out: Pipe,
    err: Pipe,
}

impl Running {
    /// Start `cmd` as configured (stdio as set on it), to be done within
    /// `limit`. Its piped stdout and stderr are read as they come.
    pub fn spawn(mut cmd: Command, limit: Duration) -> Running {
        let what = describe(&cmd);
        // ETXTBSY: a test's fresh copy of an example is still open for
        // writing in a child another test thread has just forked (until
        // that child's exec closes it). Wait that moment out.
        let mut tries = 0;
        let mut child = loop {
            match cmd.spawn() {
                Ok(child) => break child,
                Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && tries < 50 => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => panic!("cannot start {what}: {e}"),
            }
        };
        Running {
            out: Pipe::new(child.stdout.take()),
            err: Pipe::new(child.stderr.take()),
            child: Some(child),
            what,
            limit,
            deadline: Instant::now() + limit,
        }
    }

    /// The process id.
    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("running").id() as i32
    }

    /// Its stdin, if piped (once).
    pub fn take_stdin(&mut self) -> ChildStdin {
        self.child
            .as_mut()
            .and_then(|c| c.stdin.take())
            .expect("stdin piped")
    }

    /// The next line of its stdout (with its `\n`; without one at EOF,
    /// empty if nothing is left).
    pub fn line(&mut self) -> String {
        loop {
            if let Some(i) = self.out.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.out.buf.drain(..=i).collect();
                return text(&line);
            }
            match self.out.more(self.deadline) {
                Ok(true) => {}
                Ok(false) => return text(&std::mem::take(&mut self.out.buf)),
                Err(()) => self.fail("no complete line of output"),
            }
        }
    }

    /// Wait for it to exit, then for EOF on its stdout and stderr: its
    /// status and the output not yet taken by [`Running::line`].
    pub fn finish(mut self) -> Output {
        let status = self.wait_exit();
        if self.out.drain(self.deadline).is_err() || self.err.drain(self.deadline).is_err() {
            self.fail(
                "exited, but its stdout or stderr stayed open (held by a process it started?)",
            );
        }
        Output {
            status,
            stdout: std::mem::take(&mut self.out.buf),
            stderr: std::mem::take(&mut self.err.buf),
        }
    }

    /// Kill it (SIGKILL) and reap it.
    pub fn kill(mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        let _ = child.kill();
        child.wait().expect("wait for a killed child")
    }

    fn wait_exit(&mut self) -> ExitStatus {
        let mut pause = Duration::from_millis(1);
        loop {
            let child = self.child.as_mut().expect("running");
            if let Some(status) = child.try_wait().expect("try_wait") {
                self.child = None;
                return status;
            }
            if Instant::now() >= self.deadline {
                self.fail("did not exit");
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(20));
        }
    }

    /// Kill the process if it is running, and panic with what we know.
    fn fail(&mut self, why: &str) -> ! {
        let status = self.child.take().map(|mut c| {
            let _ = c.kill();
            c.wait()
        });
        self.out.poll();
        self.err.poll();
        panic!(
            "{}: {why} within {:?} ({}){}\nstdout: {}\nstderr: {}",
            self.what,
            self.limit,
            if status.is_some() {
                "killed"
            } else {
                "had exited"
            },
            match status {
                Some(Ok(s)) => format!(", {s}"),
                _ => String::new(),
            },
            text(&self.out.buf),
            text(&self.err.buf)
        );
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `PROGRAM ARGS...` of a command, for messages.
fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Run `cmd` as [`Command::output`] would (stdin `/dev/null`, stdout and
/// stderr captured), but kill it and panic if it does not finish within
/// `limit`.
pub fn run_within(cmd: Command, limit: Duration) -> Output {
    let mut cmd = cmd;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    Running::spawn(cmd, limit).finish()
}

/// [`run_within`], with a timeout or a failure to start as an error
/// rather than a panic (for `Drop`).
pub fn try_run_within(cmd: Command, limit: Duration) -> Result<Output, String> {
    let what = describe(&cmd);
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_within(cmd, limit))).map_err(|e| {
        e.downcast_ref::<String>()
            .cloned()
            .unwrap_or_else(|| format!("{what}: failed"))
    })
}

/// Wait for a thread the test started, for at most `limit`.
pub fn join_within<T>(t: std::thread::JoinHandle<T>, limit: Duration) -> T {
    assert!(
        wait_until(limit, || t.is_finished()),
        "thread still running after {limit:?}"
    );
    t.join().expect("thread panicked")
}

/// Lossy text, for messages.
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Panic with everything useful unless `out` is a success.
#[track_caller]
pub fn assert_ok(out: &Output) {
    assert!(
        out.status.success(),
        "status {}\nstdout: {}\nstderr: {}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
}

/// One `prefork-interp: ...` line on stderr, exit 127, no panic.
#[track_caller]
pub fn assert_error(out: &Output, needle: &str) {
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(127), "stderr: {err}");
    assert!(err.starts_with("prefork-interp: "), "stderr: {err}");
    assert!(err.contains(needle), "wanted {needle:?} in {err:?}");
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(err.lines().count(), 1, "one line wanted: {err:?}");
}

/// The number `N` of the first `key=N` word on stdout.
#[track_caller]
pub fn id(out: &Output, key: &str) -> i32 {
    let t = text(&out.stdout);
    t.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
        .unwrap_or_else(|| panic!("no {key}= in output {t:?}, stderr {}", text(&out.stderr)))
}

/// Did this probe call (`ids`, or the first line of `sleep`) run in place,
/// in the setup process of the server it started (extension `inplace1`,
/// protocol.md §7), rather than in a server? A call run in place is in
/// its caller's session, this test's; a served call is in its server's.
#[track_caller]
pub fn ran_in_place(out: &Output) -> bool {
    id(out, "sid") == nix::unistd::getsid(None).expect("getsid").as_raw()
}

/// Start a probe server with `first`, its first call (cold: with our
/// client it runs in the setup process, not in the server, protocol.md
/// §7), then make one warm `ids` call: the server's pid, which is that
/// call's session.
#[track_caller]
pub fn start_probe_server(f: &Fixture, first: Command) -> i32 {
    assert_ok(&f.output(first));
    let warm = f.probe("ids", &["same"]);
    assert_ok(&warm);
    assert!(!ran_in_place(&warm), "the second call was cold: {warm:?}");
    id(&warm, "sid")
}

/// Lower-case hex of some bytes.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
}

/// Every pid in `/proc`.
pub fn all_pids() -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return vec![];
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .collect()
}

/// A process's state, parent, process group and session (None: no such
/// process, not even a zombie).
pub fn proc_stat(pid: i32) -> Option<(char, i32, i32, i32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut f = rest.split(' ');
    let state = f.next()?.chars().next()?;
    let mut num = || f.next()?.parse::<i32>().ok();
    Some((state, num()?, num()?, num()?))
}

/// Has process `pid` exited? The one meaning of "gone" in these tests:
/// there is no such process, or it is a zombie (or dead, `X`).
///
/// A zombie has exited: it runs nothing and holds no fds or sockets.
/// Whether its parent has reaped it is another question, which tests that
/// care ask with [`reaped`]. (Init on the test machines may never reap
/// orphans, so "no /proc entry" cannot mean "gone" for a daemon.)
pub fn gone(pid: i32) -> bool {
    match proc_stat(pid) {
        None => true,
        Some((state, ..)) => matches!(state, 'Z' | 'X'),
    }
}

/// Has `pid` exited and been reaped by its parent (no `/proc` entry at
/// all)?
pub fn reaped(pid: i32) -> bool {
    proc_stat(pid).is_none()
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

/// Children of `pid` (any state, zombies included).
pub fn children(pid: i32) -> Vec<(i32, char)> {
    all_pids()
        .into_iter()
        .filter_map(|p| {
            let (state, ppid, _, _) = proc_stat(p)?;
            (ppid == pid).then_some((p, state))
        })
        .collect()
}

/// The live children of `pid` whose process group `pgrp` passes `keep`.
fn live_children(pid: i32, keep: impl Fn(i32, i32) -> bool) -> Vec<i32> {
    children(pid)
        .into_iter()
        .filter(|&(p, state)| {
            !matches!(state, 'Z' | 'X') && proc_stat(p).is_some_and(|(_, _, pgrp, _)| keep(p, pgrp))
        })
        .map(|(p, _)| p)
        .collect()
}

/// The live children of the server `pid` that run calls: executors lead
/// a process group of their own (the call's).
pub fn executors(pid: i32) -> Vec<i32> {
    live_children(pid, |child, pgrp| pgrp == child)
}

/// The live children of the server `pid` waiting for calls: spare
/// executors stay in the server's process group (so does the forker of a
/// Python or Perl server, which makes them, and is not one).
pub fn spares(pid: i32) -> Vec<i32> {
    live_children(pid, |child, pgrp| {
        pgrp == pid
            && !cmdline(child)
                .first()
                .is_some_and(|a| a.as_encoded_bytes().starts_with(b"prefork-interp forker:"))
    })
}

/// Has the server `pid` settled after its calls: every executor reaped,
/// and exactly `pool` spares (`Options::pool_size`) waiting?
pub fn at_rest(pid: i32, pool: usize) -> bool {
    let all = children(pid);
    all.len() == pool && spares(pid).len() == pool
}

/// Number of open fds of `pid`.
pub fn fd_count(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// The open fd numbers of `pid`.
pub fn fds(pid: i32) -> Vec<i32> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The arguments `pid` was started with (empty for a zombie).
pub fn cmdline(pid: i32) -> Vec<OsString> {
    use std::os::unix::ffi::OsStringExt;
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    raw.split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| OsString::from_vec(a.to_vec()))
        .collect()
}

/// The directories where the clients put their sockets by default (SPEC
/// §3), for the user running the tests: `/var/run/user/UID/prefork-interp`
/// and `~/.prefork-interp/NODE` with the passwd home (not `$HOME`).
pub fn default_run_dirs() -> Vec<PathBuf> {
    let uid = nix::unistd::getuid();
    let home = nix::unistd::User::from_uid(uid)
        .expect("getpwuid")
        .expect("a passwd entry for the test user")
        .dir;
    let node = nix::sys::utsname::uname().expect("uname");
    let node = node.nodename().to_string_lossy();
    let node = node.split('.').next().unwrap_or_default();
    vec![
        PathBuf::from(format!("/var/run/user/{uid}/prefork-interp")),
        home.join(".prefork-interp").join(node),
    ]
}

/// The names of the entries in the default run directories.
pub fn ls_default_run_dirs() -> Vec<String> {
    default_run_dirs()
        .iter()
        .filter_map(|d| std::fs::read_dir(d).ok())
        .flat_map(|rd| rd.filter_map(|e| e.ok()?.file_name().into_string().ok()))
        .collect()
}

/// A raw v1 request for `probe same` (the probe example's fixed first
/// argument) with this environment.
pub fn probe_request(env: Vec<OsString>) -> prefork_interp::protocol::Request {
    prefork_interp::protocol::Request {
        env,
        args: vec!["probe".into(), "same".into()],
        ..Default::default()
    }
}

/// Make a whole v1 call on the socket at `sock` as a caller would, with
/// stdio `/dev/null`: the greeting must come at once; then the raw wait
/// status, or `None` if the server hung up instead.
pub fn raw_call(sock: &Path, req: &prefork_interp::protocol::Request) -> Option<u32> {
    use std::os::fd::AsFd;
    let s = std::os::unix::net::UnixStream::connect(sock).unwrap();
    s.set_read_timeout(Some(LIMIT)).unwrap();
    let mut call = prefork_interp::protocol::Call::new(s);
    call.read_greeting().expect("greeted at once");
    let null = std::fs::File::open("/dev/null").unwrap();
    let d = null.as_fd();
    call.send_request([d, d, d], req).ok()?;
    call.read_status().ok()
}
