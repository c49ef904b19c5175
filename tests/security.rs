//! The client trusts nothing in the run directory or on the socket
//! (design.md §5): insecure directories are refused, planted sockets and
//! symbolic links reach nobody and create nothing, a flipped path never
//! leads to another user's server, sockets are private whatever the
//! umask, a silent server is reported, an account without a home still
//! works, and a broken `#!` line fails at once with a clear message.
//!
//! Cross-uid tests make a throwaway user (`common::users`) and skip,
//! saying so, when not run as root.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::users::TempUser;
use common::*;

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn chown(path: &Path, user: &TempUser) {
    std::os::unix::fs::chown(path, Some(user.uid), Some(user.gid)).unwrap();
}

/// A Unix socket listener run by `user` at `path` (mode 0777): it greets
/// every connection as a v1 server would, then prints what the client
/// sent it (`conn bytes=N fds=N`) when the client hangs up.
struct Impostor {
    running: Running,
}

const IMPOSTOR: &str = r#"
import os, socket, sys
s = socket.socket(socket.AF_UNIX)
s.bind(sys.argv[1]); os.chmod(sys.argv[1], 0o777); s.listen(64)
print("ready", flush=True)
while True:
    c, _ = s.accept()
    total = fds = 0
    try:
        c.sendall(b"PFI\n\0\0\0\0")
        while True:
            msg, anc, _, _ = c.recvmsg(65536, socket.CMSG_SPACE(64 * 4))
            fds += sum(len(d) // 4 for _, _, d in anc)
            if not msg:
                break
            total += len(msg)
    except OSError:  # reset or broken pipe: the client left without reading
        pass
    print(f"conn bytes={total} fds={fds}", flush=True)
    c.close()
"#;

impl Impostor {
    fn start(user: &TempUser, path: &Path) -> Impostor {
        let mut c = user.command("python3");
        c.args(["-c", IMPOSTOR]).arg(path);
        c.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut running = Running::spawn(c, LIMIT);
        assert_eq!(running.line(), "ready\n");
        Impostor { running }
    }

    /// Wait for `expected` connections to end, then a little more for any
    /// other, and stop it: the connections it saw, one line each.
    fn connections(mut self, expected: usize) -> Vec<String> {
        let mut seen: Vec<String> = (0..expected)
            .map(|_| self.running.line().trim_end().to_string())
            .collect();
        std::thread::sleep(Duration::from_millis(300));
        let pid = self.running.pid();
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        );
        let out = self.running.finish();
        seen.extend(text(&out.stdout).lines().map(str::to_string));
        seen
    }
}

#[test]
fn insecure_run_directories_are_refused() {
    let f = Fixture::example("sec-modes", "probe", Client::Ours);
    std::fs::create_dir(&f.run_dir).unwrap();
    for mode in [0o777, 0o1777, 0o770, 0o730, 0o702] {
        chmod(&f.run_dir, mode);
        let out = f.run(&["ids"]);
        assert_error(&out, &format!("run `chmod 700 {}`", f.run_dir.display()));
        assert!(
            f.sockets().is_empty(),
            "mode {mode:o}: a server was started"
        );
    }
    chmod(&f.run_dir, 0o700);
    assert_ok(&f.run(&["ids"]));
    assert_eq!(
        f.socket().metadata().unwrap().mode() & 0o777,
        0o600,
        "socket mode"
    );
}

#[test]
fn a_run_directory_that_is_a_symlink_is_refused() {
    let f = Fixture::example("sec-link", "probe", Client::Ours);
    let real = f.dir.join("real");
    std::fs::create_dir(&real).unwrap();
    chmod(&real, 0o700);
    std::os::unix::fs::symlink(&real, &f.run_dir).unwrap();
    assert_error(&f.run(&["ids"]), "is a symbolic link");
    assert_eq!(std::fs::read_dir(&real).unwrap().count(), 0);
}

#[test]
fn the_socket_is_private_whatever_the_umask() {
    let f = Fixture::example("sec-umask", "probe", Client::Ours);
    let mut c = Command::new("sh");
    c.args(["-c", "umask 000; exec \"$@\"", "sh", OURS, "-U"])
        .arg(&f.prog)
        .arg("attrs");
    f.prepare(&mut c);
    c.env("PROBE", "attrs");
    let out = f.output(c);
    assert_ok(&out);
    // The call itself still got the caller's umask.
    assert!(
        text(&out.stdout).contains("umask=0000\n"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(f.socket().metadata().unwrap().mode() & 0o777, 0o600);
    let _ = f.cmd(&["attrs"]); // the identity used, for the fixture's clean-up
}

#[test]
fn a_symlink_at_the_lock_path_creates_nothing() {
    let f = Fixture::example("sec-lock", "probe", Client::Ours);
    std::fs::create_dir(&f.run_dir).unwrap();
    chmod(&f.run_dir, 0o700);
    let target = f.dir.join("nologin");
    std::os::unix::fs::symlink(&target, f.run_dir.join("lmyid")).unwrap();
    let out = f.run_opts(&["-U", "-g", "myid"], &["ids"]);
    assert_error(&out, "is a symbolic link");
    assert!(!target.exists(), "the client created the symlink's target");
}

#[test]
fn a_socket_of_another_user_gets_nothing() {
    let Some(user) = TempUser::create("a_socket_of_another_user_gets_nothing") else {
        return;
    };
    let f = Fixture::example("sec-peer", "probe", Client::Ours);
    chmod(&f.dir, 0o755);
    std::fs::create_dir(&f.run_dir).unwrap();
    chmod(&f.run_dir, 0o700);
    let theirs = f.dir.join("theirs");
    std::fs::create_dir(&theirs).unwrap();
    chown(&theirs, &user);
    let impostor = Impostor::start(&user, &theirs.join("sock"));
    // As if the socket path had been reached by the other user: a link
    // to their socket where ours would be.
    std::os::unix::fs::symlink(theirs.join("sock"), f.run_dir.join("smyid")).unwrap();
    let out = f.run_opts(&["-U", "-g", "myid"], &["ids"]);
    assert_error(&out, &format!("belongs to uid {}", user.uid));
    let seen = impostor.connections(1);
    assert_eq!(seen, ["conn bytes=0 fds=0"], "the impostor got something");
}

#[test]
fn a_flipped_symlink_in_the_path_never_reaches_another_user() {
    let Some(user) = TempUser::create("a_flipped_symlink_in_the_path_never_reaches_another_user")
    else {
        return;
    };
    let f = Fixture::example("sec-flip", "probe", Client::Ours);
    chmod(&f.dir, 0o755);
    // Ours: the fixture's directory (holding run/). Theirs: another
    // directory holding run/, owned by the other user, with their server.
    let theirs = f.dir.join("theirs");
    std::fs::create_dir_all(theirs.join("run")).unwrap();
    chmod(&theirs, 0o755);
    chown(&theirs.join("run"), &user);
    chmod(&theirs.join("run"), 0o700);
    let impostor = Impostor::start(&user, &theirs.join("run/smyid"));
    assert_ok(&f.run_opts(&["-U", "-g", "myid"], &["ids"]));

    let link = f.dir.join("link");
    std::os::unix::fs::symlink(&f.dir, &link).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let flipper = {
        let (stop, link, ours, theirs) = (stop.clone(), link.clone(), f.dir.clone(), theirs);
        std::thread::spawn(move || {
            let tmp = link.with_extension("tmp");
            let mut flips = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let target = if flips.is_multiple_of(2) {
                    &theirs
                } else {
                    &ours
                };
                let _ = std::fs::remove_file(&tmp);
                std::os::unix::fs::symlink(target, &tmp).unwrap();
                std::fs::rename(&tmp, &link).unwrap();
                flips += 1;
            }
            flips
        })
    };
    let (mut served, mut refused) = (0, 0);
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline || served == 0 || refused == 0 {
        let mut c = f.cmd_opts(&["-U", "-g", "myid"], &["ids"]);
        c.env("PREFORK_INTERP_RUN_DIR", link.join("run"));
        let out = f.output(c);
        if out.status.success() {
            served += 1;
        } else {
            assert_error(&out, &format!("is owned by uid {}", user.uid));
            refused += 1;
        }
        assert!(
            served + refused < 5000,
            "the flipping never showed both sides"
        );
    }
    stop.store(true, Ordering::Relaxed);
    let flips = join_within(flipper, LIMIT);
    let seen = impostor.connections(0);
    assert!(
        seen.is_empty(),
        "{} of {} calls reached the other user's server ({flips} flips)",
        seen.len(),
        served + refused
    );
    eprintln!("{served} served, {refused} refused, {flips} flips, 0 reached the other user");
}

#[test]
fn a_server_that_never_greets_is_reported_and_waited_for() {
    let f = Fixture::example("sec-greet", "probe", Client::Ours);
    std::fs::create_dir(&f.run_dir).unwrap();
    chmod(&f.run_dir, 0o700);
    let listener = UnixListener::bind(f.run_dir.join("smyid")).unwrap();
    let started = Instant::now();
    let client = f.spawn(f.cmd_opts(&["-U", "-g", "myid"], &["ids"]));
    // Accept, say nothing for 4.5 s, then go away: the client must have
    // told the user by then, and then start a server of its own.
    let (conn, _) = listener.accept().unwrap();
    std::thread::sleep(Duration::from_millis(4500));
    drop(conn);
    drop(listener);
    let out = client.finish();
    assert_ok(&out);
    let err = text(&out.stderr);
    let me = std::process::id();
    assert!(
        err.contains(&format!("(pid {me}) has not answered in 3 s"))
            && err.contains(&format!("to stop it: kill {me}")),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(started.elapsed() >= Duration::from_millis(4500));
}

#[test]
fn an_account_without_a_home_gets_a_private_directory_in_tmp() {
    let Some(user) = TempUser::create("an_account_without_a_home_gets_a_private_directory_in_tmp")
    else {
        return;
    };
    let f = Fixture::example("sec-nohome", "probe", Client::Ours);
    chmod(&f.dir, 0o755);
    let tmp = f.dir.join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    chmod(&tmp, 0o1777);
    let as_user = |args: &[&str]| {
        let mut c = user.command(OURS);
        c.args(args).current_dir(&f.dir);
        c.env_remove("PREFORK_INTERP_RUN_DIR")
            .env("HOME", "/nonexistent")
            .env("TMPDIR", &tmp);
        run_within(c, LIMIT)
    };
    let prog = f.prog.to_str().unwrap();
    // The first call runs in the setup process (protocol.md §7), in the
    // caller's session; the next ones in the server's.
    let first = as_user(&["-U", prog, "ids"]);
    assert_ok(&first);
    let second = as_user(&["-U", prog, "ids"]);
    assert_ok(&second);
    let third = as_user(&["-U", prog, "ids"]);
    assert_ok(&third);
    assert_ne!(
        id(&first, "sid"),
        id(&second, "sid"),
        "the first call was served"
    );
    assert_eq!(id(&second, "sid"), id(&third, "sid"), "not served warm");
    let dir = tmp.join(format!("prefork-interp-{}", user.uid));
    let md = std::fs::symlink_metadata(&dir).unwrap();
    assert!(md.is_dir());
    assert_eq!((md.uid(), md.mode() & 0o777), (user.uid, 0o700));
    assert_ok(&as_user(&["--kill", "-U", prog, "ids"]));
}

/// Write `text` as an executable script in the fixture's directory.
fn script(f: &Fixture, name: &str, text: &str) -> std::path::PathBuf {
    let path = f.dir.join(name);
    std::fs::write(&path, text).unwrap();
    chmod(&path, 0o755);
    path
}

#[test]
fn broken_hash_bang_lines_fail_at_once_with_a_clear_message() {
    let f = Fixture::example("sec-shebang", "probe", Client::Ours);
    let cases = [
        (
            format!("#!{OURS} -U,python3\r\nprint(1)\r\n"),
            "interpreter name ends in a carriage return: the script has DOS line endings",
        ),
        (
            format!("#!{OURS} -U\r\nprint(1)\r\n"),
            "#! line ends in a carriage return",
        ),
        (
            format!("#!{OURS} -U\nprint(1)\n"),
            "is a prefork-interp script, not an interpreter",
        ),
        (
            format!("#!{OURS} -U,no-such-interpreter-here\nprint(1)\n"),
            "interpreter \"no-such-interpreter-here\" not found in PATH",
        ),
    ];
    for (i, (text, needle)) in cases.iter().enumerate() {
        let path = script(&f, &format!("s{i}"), text);
        let started = Instant::now();
        let mut c = Command::new(&path);
        f.prepare(&mut c);
        let out = run_within(c, Duration::from_secs(10));
        assert_error(&out, needle);
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{needle}: too slow"
        );
        assert!(
            wait_until(Duration::from_secs(2), || f.belonging().is_empty()),
            "{needle}: processes left: {:?}",
            f.belonging()
        );
    }
}

#[test]
fn a_cold_callers_other_fds_are_not_held_by_the_server() {
    let f = Fixture::example("sec-fds", "probe", Client::Ours);
    // The shell's fd 3 and stdout are the same pipe into cat: cat (and so
    // this command) ends only when every process holding it has closed it.
    let mut c = Command::new("sh");
    c.args(["-c", "\"$@\" 3>&1 | cat", "sh", OURS, "-U"])
        .arg(&f.prog)
        .arg("ids");
    f.prepare(&mut c);
    let out = run_within(c, Duration::from_secs(10));
    assert_ok(&out);
    assert!(text(&out.stdout).contains("pid="));
    let server = f.processes();
    assert!(!server.is_empty(), "the server should still be running");
    let _ = f.cmd(&["ids"]); // the identity used, for the fixture's clean-up
}
