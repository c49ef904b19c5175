//! Integration tests of the client against the real thing: the reference
//! Perl library (`Proc::Prefork::Interp`, Debian `chiark-scripts`) as the
//! server side, and the reference C client (`chiark-utils-bin`) for the
//! cross-client checks. Real processes, real sockets.
//!
//! Each test has its own directory (the script lives there, so each test
//! has its own identity) and, where only our client is used, its own run
//! directory. [`Fixture`]'s `Drop` stops every server a test started, by
//! `--kill` and then by pid.

use std::io::Write;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const OURS: &str = env!("CARGO_BIN_EXE_prefork-interp");
const C_CLIENT: &str = "/usr/bin/prefork-interp";

/// The script the reference Perl library serves. The reference library
/// loses the exit status of a normal `exit` (SPEC §6: its monitor SIGINTs
/// the executor during global destruction), so every path here ends in
/// `POSIX::_exit` after flushing. It also leaves the interpreter and the
/// script in @ARGV (another defect), which we skip.
const SCRIPT: &str = r#"
use strict;
use warnings;
use POSIX ();
use Proc::Prefork::Interp;
exit($ENV{SETUP_EXIT}) if defined $ENV{SETUP_EXIT};
prefork_initialisation_complete();
$| = 1;
my @args = @ARGV[2..$#ARGV];
my $cmd = shift(@args) // 'exit';
sub server_pid {
    open my $f, '<', "/proc/".getppid()."/stat" or die "stat: $!";
    my $stat = <$f>;
    $stat =~ s/^.*\) //;
    return (split / /, $stat)[1];
}
if ($cmd eq 'echo') {
    print "server=", server_pid(), "\n";
    print "args=", join('|', @args), "\n";
} elsif ($cmd eq 'env') {
    print "$_=", $ENV{$_} // '(unset)', "\n" for @args;
} elsif ($cmd eq 'cat') {
    local $/;
    my $in = <STDIN>;
    print $in;
    print STDERR "to stderr\n";
} elsif ($cmd eq 'kill') {
    kill $args[0], $$;
    sleep 5;
} elsif ($cmd eq 'sleep') {
    sleep $args[0];
} elsif ($cmd eq 'sigign') {
    open my $f, '<', '/proc/self/status' or die;
    while (<$f>) { print "$1\n" if /^SigIgn:\s*(\S+)/ }
} elsif ($cmd eq 'warnflag') {
    print "W=$^W\n";
}
POSIX::_exit($cmd eq 'exit' ? ($args[0] // 0) : 0);
"#;

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A test's private directory, script and run directory.
struct Fixture {
    dir: PathBuf,
    script: PathBuf,
    run_dir: PathBuf,
    /// Server pids seen, killed on drop if still there.
    servers: std::cell::RefCell<Vec<i32>>,
    /// Use the default run directory (shared with the C client).
    shared_run_dir: bool,
}

impl Fixture {
    fn new(tag: &str) -> Fixture {
        let dir = std::env::temp_dir().join(format!(
            "pfi-test-{tag}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let script = dir.join("script.pl");
        std::fs::write(&script, SCRIPT).unwrap();
        let run_dir = dir.join("run");
        Fixture {
            dir,
            script,
            run_dir,
            servers: Default::default(),
            shared_run_dir: false,
        }
    }

    /// A fixture whose servers live in the default run directory, so the
    /// C client (which ignores PREFORK_INTERP_RUN_DIR) sees them too.
    fn shared(tag: &str) -> Fixture {
        let mut f = Fixture::new(tag);
        f.shared_run_dir = true;
        f
    }

    fn cmd(&self, client: &str, opts: &[&str], args: &[&str]) -> Command {
        let mut c = Command::new(client);
        c.args(opts).arg("perl").arg(&self.script).args(args);
        c.current_dir(&self.dir);
        if self.shared_run_dir {
            c.env_remove("PREFORK_INTERP_RUN_DIR");
        } else {
            c.env("PREFORK_INTERP_RUN_DIR", &self.run_dir);
        }
        c.env_remove("PREFORK_INTERP_DEBUG");
        c.stdin(Stdio::null());
        c
    }

    fn run(&self, opts: &[&str], args: &[&str]) -> Output {
        self.run_with(OURS, opts, args)
    }

    fn run_with(&self, client: &str, opts: &[&str], args: &[&str]) -> Output {
        let out = self.cmd(client, opts, args).output().unwrap();
        self.note_server(&out);
        out
    }

    fn note_server(&self, out: &Output) {
        if let Some(pid) = server_of(out) {
            let mut s = self.servers.borrow_mut();
            if !s.contains(&pid) {
                s.push(pid);
            }
        }
    }

    /// Run `echo` and return the server pid.
    fn server(&self, opts: &[&str]) -> i32 {
        let out = self.run(&[&["-U"], opts].concat(), &["echo"]);
        assert_ok(&out);
        server_of(&out).unwrap()
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = self.cmd(OURS, &["-U", "--kill"], &[]).output();
        for &pid in self.servers.borrow().iter() {
            if alive(pid) {
                // SAFETY: kill(2) has no memory-safety preconditions.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn server_of(out: &Output) -> Option<i32> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("server=")?.parse().ok())
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[track_caller]
fn assert_ok(out: &Output) {
    assert!(
        out.status.success(),
        "status {:?}\nstdout: {}\nstderr: {}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
}

/// One `prefork-interp: ...` line on stderr, exit 127, no panic.
#[track_caller]
fn assert_error(out: &Output, needle: &str) {
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(127), "stderr: {err}");
    assert!(err.starts_with("prefork-interp: "), "stderr: {err}");
    assert!(err.contains(needle), "wanted {needle:?} in {err:?}");
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(err.lines().count(), 1, "one line wanted: {err:?}");
}

/// Process state from /proc (None if gone).
fn proc_state(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(") ")?.1.chars().next()
}

/// Running (not a zombie: the machine's init may never reap those).
fn alive(pid: i32) -> bool {
    matches!(proc_state(pid), Some(s) if s != 'Z')
}

fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn cold_then_warm_calls_share_one_server() {
    let f = Fixture::new("warm");
    let first = f.run(&["-U"], &["echo", "a b", "", "c"]);
    assert_ok(&first);
    assert!(
        text(&first.stdout).contains("args=a b||c\n"),
        "{}",
        text(&first.stdout)
    );
    let pid = server_of(&first).unwrap();
    for i in 0..5 {
        let out = f.run(&["-U"], &["echo", &i.to_string()]);
        assert_ok(&out);
        assert_eq!(server_of(&out), Some(pid));
        assert!(text(&out.stdout).contains(&format!("args={i}\n")));
    }
}

#[test]
fn environment_is_the_callers() {
    let f = Fixture::new("env");
    let mut c = f.cmd(OURS, &["-U"], &["env", "PFI_A", "PFI_B", "PFI_C"]);
    c.env("PFI_A", "one").env("PFI_B", "").env_remove("PFI_C");
    let out = c.output().unwrap();
    assert_ok(&out);
    assert_eq!(text(&out.stdout), "PFI_A=one\nPFI_B=\nPFI_C=(unset)\n");
    // Warm, with a different environment.
    let mut c = f.cmd(OURS, &["-U"], &["env", "PFI_A", "PFI_C"]);
    c.env("PFI_C", "three").env_remove("PFI_A");
    let out = c.output().unwrap();
    assert_eq!(text(&out.stdout), "PFI_A=(unset)\nPFI_C=three\n");
}

#[test]
fn stdio_is_passed_through() {
    let f = Fixture::new("stdio");
    let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    for _ in 0..2 {
        let mut child = f
            .cmd(OURS, &["-U"], &["cat"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let feed = data.clone();
        let writer = std::thread::spawn(move || stdin.write_all(&feed));
        let out = child.wait_with_output().unwrap();
        writer.join().unwrap().unwrap();
        assert_ok(&out);
        assert!(out.stdout == data, "{} bytes back", out.stdout.len());
        assert_eq!(text(&out.stderr), "to stderr\n");
    }
}

#[test]
fn exit_codes_are_passed_on() {
    let f = Fixture::new("exit");
    for code in [0, 1, 42, 255, 0] {
        let out = f.run(&["-U"], &["exit", &code.to_string()]);
        assert_eq!(out.status.code(), Some(code), "{}", text(&out.stderr));
    }
}

#[test]
fn death_by_sigterm_is_passed_on_as_sigterm() {
    let f = Fixture::new("term");
    f.server(&[]);
    let out = f.run(&["-U"], &["kill", "TERM"]);
    assert_eq!(out.status.signal(), Some(libc::SIGTERM), "{out:?}");
}

#[test]
fn death_by_any_signal_is_passed_on_without_a_core_file() {
    let f = Fixture::new("segv");
    f.server(&[]);
    for sig in ["SEGV", "QUIT", "USR1", "ABRT"] {
        let out = f.run(&["-U"], &["kill", sig]);
        let want = nix::sys::signal::Signal::from_str(&format!("SIG{sig}")).unwrap() as i32;
        assert_eq!(out.status.signal(), Some(want), "{sig}: {out:?}");
        assert!(!out.status.core_dumped(), "{sig}: client dumped core");
        assert!(out.stderr.is_empty(), "{sig}: {}", text(&out.stderr));
    }
}

#[test]
fn fresh_server_replaces_old_one() {
    let f = Fixture::new("fresh");
    let old = f.server(&[]);
    let new = f.server(&["-f"]);
    assert_ne!(old, new);
    assert!(
        wait_until(Duration::from_secs(1), || !alive(old)),
        "old server {old} still running 1 s after -f"
    );
    assert!(alive(new));
    assert_eq!(f.server(&[]), new);
}

#[test]
fn kill_leaves_no_server() {
    let f = Fixture::new("kill");
    let pid = f.server(&[]);
    let out = f.run(&["-U", "--kill"], &[]);
    assert_ok(&out);
    assert!(out.stdout.is_empty() && out.stderr.is_empty(), "{out:?}");
    assert!(!alive(pid), "server {pid} still running after --kill");
    assert_eq!(std::fs::read_dir(&f.run_dir).unwrap().count(), 0);
    // Killing when there is nothing to kill is fine too.
    assert_ok(&f.run(&["-U", "--kill"], &[]));
    // And the next call starts a new one.
    assert_ne!(f.server(&[]), pid);
}

#[test]
fn identity_options_make_separate_servers() {
    let f = Fixture::new("ident");
    let plain = f.server(&[]);
    let g1 = f.server(&["-G", "one"]);
    let g2 = f.server(&["-Gtwo"]);
    assert_eq!(f.server(&["-G", "one"]), g1);
    let run_e = |value: Option<&str>| {
        let mut c = f.cmd(OURS, &["-U", "-E", "PFI_SELECT"], &["echo"]);
        match value {
            Some(v) => c.env("PFI_SELECT", v),
            None => c.env_remove("PFI_SELECT"),
        };
        let out = c.output().unwrap();
        assert_ok(&out);
        f.note_server(&out);
        server_of(&out).unwrap()
    };
    let (e_unset, e_a, e_b, e_empty) = (
        run_e(None),
        run_e(Some("a")),
        run_e(Some("b")),
        run_e(Some("")),
    );
    assert_eq!(run_e(Some("a")), e_a);
    let all = [plain, g1, g2, e_unset, e_a, e_b, e_empty];
    for (i, a) in all.iter().enumerate() {
        for b in &all[i + 1..] {
            assert_ne!(a, b, "servers {all:?}");
        }
    }
    // -g names the socket directly.
    let out = f.run(&["-U", "-g", "my-ident"], &["echo"]);
    assert_ok(&out);
    assert!(f.run_dir.join("smy-ident").exists());
    for opts in [
        &["-U", "-g", "my-ident", "--kill"][..],
        &["-U", "-G", "one", "--kill"],
        &["-U", "-Gtwo", "--kill"],
    ] {
        assert_ok(&f.run(opts, &[]));
    }
    for v in [None, Some("a"), Some("b"), Some("")] {
        let mut c = f.cmd(OURS, &["-U", "-E", "PFI_SELECT", "--kill"], &[]);
        match v {
            Some(v) => c.env("PFI_SELECT", v),
            None => c.env_remove("PFI_SELECT"),
        };
        assert_ok(&c.output().unwrap());
    }
}

#[test]
fn interpreter_arguments_on_the_shebang_line() {
    let f = Fixture::new("interp-args");
    let mut c = Command::new(OURS);
    c.arg("-U,perl,-w").arg(&f.script).arg("warnflag");
    c.current_dir(&f.dir)
        .env("PREFORK_INTERP_RUN_DIR", &f.run_dir);
    let out = c.output().unwrap();
    assert_ok(&out);
    assert_eq!(text(&out.stdout), "W=1\n", "perl did not get -w: {out:?}");
    // Without -w it is another identity (another server), without -w.
    let out = f.run(&["-U"], &["warnflag"]);
    assert_ok(&out);
    assert_eq!(text(&out.stdout), "W=0\n", "{out:?}");
    let sockets = || {
        std::fs::read_dir(&f.run_dir)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with('s')
            })
            .count()
    };
    assert_eq!(sockets(), 2);
    // `--kill` before the combined argument stops the `-w` server only.
    let mut k = Command::new(OURS);
    k.args(["--kill", "-U,perl,-w"]).arg(&f.script);
    k.current_dir(&f.dir)
        .env("PREFORK_INTERP_RUN_DIR", &f.run_dir);
    assert_ok(&k.output().unwrap());
    assert_eq!(sockets(), 1);
}

#[test]
fn c_client_and_ours_share_servers_both_ways() {
    // Server started by the C client, reused by ours.
    let f = Fixture::shared("cross-c-first");
    let out = f.run_with(C_CLIENT, &["-U"], &["echo"]);
    assert_ok(&out);
    let pid = server_of(&out).unwrap();
    let out = f.run_with(OURS, &["-U"], &["echo", "x"]);
    assert_ok(&out);
    assert_eq!(
        server_of(&out),
        Some(pid),
        "ours did not reuse the C client's server"
    );

    // Server started by ours, reused by the C client.
    let g = Fixture::shared("cross-ours-first");
    let out = g.run_with(OURS, &["-U", "-G", "x"], &["echo"]);
    assert_ok(&out);
    let pid = server_of(&out).unwrap();
    let out = g.run_with(C_CLIENT, &["-U", "-G", "x"], &["echo"]);
    assert_ok(&out);
    assert_eq!(
        server_of(&out),
        Some(pid),
        "the C client did not reuse our server"
    );

    // The C client's --kill stops our server too.
    let k = g
        .cmd(C_CLIENT, &["-U", "-G", "x", "--kill"], &[])
        .output()
        .unwrap();
    assert_ok(&k);
    assert!(wait_until(Duration::from_secs(2), || !alive(pid)));
}

#[test]
fn socket_name_matches_the_c_client() {
    // Same identity inputs, compared by the socket each client names.
    let f = Fixture::shared("ident-vectors");
    for opts in [
        &["-U"][..],
        &["-U", "-G", "g", "-E", "PFI_IDENT_VEC"],
        &["-U", "-E", "HOME"],
    ] {
        let before = ls_run_dir();
        let mut c = f.cmd(C_CLIENT, opts, &["echo"]);
        c.env("PFI_IDENT_VEC", "v");
        let out = c.output().unwrap();
        assert_ok(&out);
        f.note_server(&out);
        let new: Vec<String> = ls_run_dir()
            .into_iter()
            .filter(|n| !before.contains(n) && n.starts_with('s'))
            .collect();
        assert_eq!(new.len(), 1, "C client made {new:?}");
        let mut c = f.cmd(OURS, opts, &["echo"]);
        c.env("PFI_IDENT_VEC", "v").env("PREFORK_INTERP_DEBUG", "1");
        let out = c.output().unwrap();
        assert_ok(&out);
        assert!(
            text(&out.stderr).contains(&format!("/{}\n", new[0])),
            "our client used another socket than {}: {}",
            new[0],
            text(&out.stderr)
        );
        let mut k = f.cmd(C_CLIENT, &[opts, &["--kill"]].concat(), &[]);
        k.env("PFI_IDENT_VEC", "v");
        assert_ok(&k.output().unwrap());
    }
}

/// The C client's default run directory for root here (no /var/run/user/0).
fn ls_run_dir() -> Vec<String> {
    let home = nix_home();
    let node = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let node = node.trim().split('.').next().unwrap().to_string();
    let mut candidates = vec![home.join(".prefork-interp").join(node)];
    let uid = unsafe { libc::getuid() };
    candidates.insert(
        0,
        PathBuf::from(format!("/var/run/user/{uid}/prefork-interp")),
    );
    candidates
        .iter()
        .filter_map(|d| std::fs::read_dir(d).ok())
        .flat_map(|rd| rd.filter_map(|e| e.ok()?.file_name().into_string().ok()))
        .collect()
}

fn nix_home() -> PathBuf {
    // The passwd entry's home, as the clients use (not $HOME).
    let uid = unsafe { libc::getuid() };
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    passwd
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.get(2)?.parse::<u32>().ok()? == uid).then(|| PathBuf::from(f[5]))
        })
        .unwrap()
}

#[test]
fn no_process_is_left_in_the_callers_process_group() {
    let f = Fixture::new("zombies");
    for _ in 0..2 {
        // Cold (setup, watcher) and warm.
        let mut c = f.cmd(OURS, &["-U"], &["echo"]);
        c.process_group(0);
        let child = c.stdout(Stdio::piped()).spawn().unwrap();
        let pgid = child.id() as i32;
        let out = child.wait_with_output().unwrap();
        assert_ok(&out);
        f.note_server(&out);
        let left: Vec<String> = std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok()?.parse::<i32>().ok())
            .filter_map(|pid| {
                let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
                let fields: Vec<&str> = stat.rsplit_once(") ")?.1.split(' ').collect();
                (fields[2].parse::<i32>().ok()? == pgid).then(|| format!("{pid}: {stat}"))
            })
            .collect();
        assert!(left.is_empty(), "left in the caller's group: {left:?}");
    }
}

#[test]
fn watcher_does_not_hold_the_callers_stdout() {
    // `$(script)` must not wait for the daemon processes: the call returns
    // and stdout reaches EOF as soon as the client exits.
    let f = Fixture::new("subst");
    let start = Instant::now();
    let out = f
        .cmd(OURS, &["-U"], &["echo"])
        .stdout(Stdio::piped())
        .output()
        .unwrap();
    assert_ok(&out);
    f.note_server(&out);
    assert!(start.elapsed() < Duration::from_secs(5));
}

#[test]
fn help_prints_usage_and_exits_0() {
    let out = Command::new(OURS).arg("--help").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stdout).starts_with("usage: "));
    assert!(out.stderr.is_empty());
}

#[test]
fn usage_errors() {
    let out = Command::new(OURS).output().unwrap();
    assert_error(&out, "need interpreter argument");
    let out = Command::new(OURS).args(["perl", "x"]).output().unwrap();
    assert_error(&out, "need -U");
    let out = Command::new(OURS)
        .args(["-U", "-Q", "perl"])
        .output()
        .unwrap();
    assert_error(&out, "unknown option -Q");
}

#[test]
fn interpreter_not_found() {
    let f = Fixture::new("noint");
    let mut c = Command::new(OURS);
    c.args(["-U", "/nonexistent/interp"]).arg(&f.script);
    c.env("PREFORK_INTERP_RUN_DIR", &f.run_dir);
    let out = c.output().unwrap();
    assert_error(
        &out,
        "execute /nonexistent/interp: No such file or directory",
    );
}

#[test]
fn run_dir_not_usable() {
    let f = Fixture::new("badrun");
    let file = f.dir.join("plain-file");
    std::fs::write(&file, "").unwrap();
    let mut c = f.cmd(OURS, &["-U"], &["echo"]);
    c.env("PREFORK_INTERP_RUN_DIR", file.join("sub"));
    assert_error(&c.output().unwrap(), "Not a directory");
    // Writable by nobody (root ignores modes, so use a read-only mount
    // substitute: /proc is never writable).
    let mut c = f.cmd(OURS, &["-U"], &["echo"]);
    c.env("PREFORK_INTERP_RUN_DIR", "/proc/pfi-run");
    assert_error(&c.output().unwrap(), "mkdir /proc/pfi-run");
}

#[test]
fn socket_path_too_long() {
    let f = Fixture::new("long");
    let long = f.dir.join("d".repeat(80));
    let mut c = f.cmd(OURS, &["-U"], &["echo"]);
    c.env("PREFORK_INTERP_RUN_DIR", &long);
    assert_error(&c.output().unwrap(), "too few");
}

#[test]
fn setup_failure_status_is_passed_on() {
    let f = Fixture::new("setupfail");
    let mut c = f.cmd(OURS, &["-U"], &["echo"]);
    c.env("SETUP_EXIT", "3");
    let out = c.output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    // A script that never calls initialisation_complete and exits 0.
    let plain = f.dir.join("plain.pl");
    std::fs::write(&plain, "print STDERR qq(plain\\n); exit 0;\n").unwrap();
    let mut c = Command::new(OURS);
    c.args(["-U", "perl"])
        .arg(&plain)
        .env("PREFORK_INTERP_RUN_DIR", &f.run_dir);
    let out = c.output().unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(127));
    assert!(
        err.starts_with("plain\nprefork-interp: setup failed"),
        "{err}"
    );
    assert!(err.contains("initialisation_complete"), "{err}");
}

#[test]
fn closed_stdio_is_tolerated() {
    let f = Fixture::new("closed");
    let mut c = f.cmd(OURS, &["-U"], &["exit", "7"]);
    // Start the client with fd 0 closed.
    unsafe {
        c.pre_exec(|| {
            libc::close(0);
            Ok(())
        });
    }
    let out = c.output().unwrap();
    assert_eq!(out.status.code(), Some(7), "{out:?}");
}

#[test]
fn relative_run_dir_is_made_absolute() {
    let f = Fixture::new("relative");
    let mut c = f.cmd(OURS, &["-U"], &["echo"]);
    c.env("PREFORK_INTERP_RUN_DIR", "rel-run");
    let out = c.output().unwrap();
    assert_ok(&out);
    f.note_server(&out);
    assert!(f.dir.join("rel-run").is_dir());
    let mut k = f.cmd(OURS, &["-U", "--kill"], &[]);
    k.env("PREFORK_INTERP_RUN_DIR", "rel-run");
    assert_ok(&k.output().unwrap());
}

/// Live processes started as our client for this fixture's script that
/// made themselves session leaders: the watcher daemons.
fn watchers(f: &Fixture) -> Vec<i32> {
    let script = f.script.to_string_lossy().into_owned();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok()?.parse::<i32>().ok())
        .filter(|&pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let args: Vec<String> = cmdline
                .split(|&b| b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            let sid = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| {
                    s.rsplit_once(") ")?
                        .1
                        .split(' ')
                        .nth(3)?
                        .parse::<i32>()
                        .ok()
                });
            args.first().map(String::as_str) == Some(OURS)
                && args.contains(&script)
                && sid == Some(pid)
                && alive(pid)
        })
        .collect()
}

#[test]
fn stale_socket_of_a_killed_server_is_replaced() {
    let f = Fixture::new("stale");
    let old = f.server(&[]);
    let w = watchers(&f);
    assert_eq!(w.len(), 1, "watchers: {w:?}");
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe { libc::kill(old, libc::SIGKILL) };
    assert!(wait_until(Duration::from_secs(2), || !alive(old)));
    // The watcher notices the server has gone (EOF on its stdin).
    assert!(
        wait_until(Duration::from_secs(2), || !alive(w[0])),
        "watcher {} outlived its server",
        w[0]
    );
    // Its socket is still there, with nobody listening.
    let names: Vec<String> = std::fs::read_dir(&f.run_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(names.iter().any(|n| n.starts_with('s')), "{names:?}");
    let new = f.server(&[]);
    assert_ne!(new, old);
}

#[test]
fn garbage_at_the_socket_path_is_replaced() {
    let f = Fixture::new("garbage");
    std::fs::create_dir_all(&f.run_dir).unwrap();
    // A plain file where the socket should be.
    std::fs::write(f.run_dir.join("sjunk"), "not a socket").unwrap();
    let out = f.run(&["-U", "-g", "junk"], &["echo"]);
    assert_ok(&out);
    // A listener that hangs up without greeting.
    let path = f.run_dir.join("shangup");
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let t = std::thread::spawn(move || {
        let (conn, _) = listener.accept().unwrap();
        drop(conn);
    });
    let out = f.run(&["-U", "-g", "hangup"], &["echo"]);
    assert_ok(&out);
    t.join().unwrap();
    for g in ["junk", "hangup"] {
        assert_ok(&f.run(&["-U", "-g", g, "--kill"], &[]));
    }
}

#[test]
fn a_stranger_on_the_socket_is_an_error() {
    let f = Fixture::new("stranger");
    std::fs::create_dir_all(&f.run_dir).unwrap();
    let listener = std::os::unix::net::UnixListener::bind(f.run_dir.join("sweb")).unwrap();
    let t = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        conn.write_all(b"HTTP/1.0 400 Bad Request\r\n").unwrap();
    });
    let out = f.run(&["-U", "-g", "web"], &["echo"]);
    t.join().unwrap();
    assert_error(&out, "unexpected greeting 0x48545450");
}

#[test]
fn a_new_server_starts_with_default_signals_whoever_starts_it() {
    // The setup process starts with every signal at its default, so a
    // server's state is the script's own, not its first caller's
    // (protocol.md §6.4). This server is the Debian v1 library's, which
    // applies no caller attributes: SIGPIPE stays default for every call.
    let f = Fixture::new("sigpipe");
    let sigign = |out: &Output| {
        assert_ok(out);
        u64::from_str_radix(text(&out.stdout).trim(), 16).unwrap()
    };
    let pipe_bit = 1u64 << (libc::SIGPIPE - 1);
    let out = f.cmd(OURS, &["-U"], &["sigign"]).output().unwrap();
    assert_eq!(sigign(&out) & pipe_bit, 0, "SIGPIPE ignored in the script");
    let mut c = f.cmd(OURS, &["-U", "-G", "ignoring"], &["sigign"]);
    // SAFETY: signal(2) in the child before exec, nothing else.
    unsafe {
        c.pre_exec(|| {
            libc::signal(libc::SIGPIPE, libc::SIG_IGN);
            Ok(())
        });
    }
    let out = c.output().unwrap();
    assert_eq!(
        sigign(&out) & pipe_bit,
        0,
        "first caller's SIG_IGN leaked into the server"
    );
    assert_ok(&f.run(&["-U", "-G", "ignoring", "--kill"], &[]));
}
