//! Integration tests of the client against the real thing: the reference
//! Perl library (`Proc::Prefork::Interp`, Debian `chiark-scripts`) as the
//! server side, and the reference C client (`chiark-utils-bin`) for the
//! cross-client checks. Real processes, real sockets.
//!
//! Each test has its own directory (the script lives there, so each test
//! has its own identity) and, where only our client is used, its own run
//! directory. See `common` for the harness: [`Fixture`]'s `Drop` stops
//! every server a test started, and every process runs under a time
//! limit.

mod common;

use std::io::Write;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, Output, Stdio};
use std::str::FromStr;
use std::time::{Duration, Instant};

use common::*;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// The script the reference Perl library serves. The reference library
/// loses the exit status of a normal `exit` (SPEC §6: its monitor SIGINTs
/// the executor during global destruction), so every path here ends in
/// `POSIX::_exit` after flushing. It also leaves the interpreter and the
/// script in @ARGV (another defect), which we skip. `SETUP_EXIT` acts in
/// the setup run only (before the server starts).
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

/// A fixture serving [`SCRIPT`] with `perl`, in a private run directory.
fn perl(tag: &str) -> Fixture {
    Fixture::script(tag, "script.pl", SCRIPT, "perl", false)
}

/// A fixture whose servers live in the default run directory, so the C
/// client (which ignores PREFORK_INTERP_RUN_DIR) sees them too.
fn perl_shared(tag: &str) -> Fixture {
    Fixture::script(tag, "script.pl", SCRIPT, "perl", true)
}

/// The server pid an `echo` call reports.
#[track_caller]
fn server_of(out: &Output) -> i32 {
    id(out, "server")
}

/// Run `echo` with our client and `-U OPTS`: the server pid.
#[track_caller]
fn server(f: &Fixture, opts: &[&str]) -> i32 {
    let out = f.run_opts(&[&["-U"], opts].concat(), &["echo"]);
    assert_ok(&out);
    server_of(&out)
}

/// Our client's pid from the `PREFORK_INTERP_DEBUG` trace of a run.
fn traced(out: &Output, what: &str) -> bool {
    text(&out.stderr).contains(what)
}

#[test]
fn cold_then_warm_calls_share_one_server() {
    let f = perl("warm");
    let first = f.run_opts(&["-U"], &["echo", "a b", "", "c"]);
    assert_ok(&first);
    assert!(
        text(&first.stdout).contains("args=a b||c\n"),
        "{}",
        text(&first.stdout)
    );
    let pid = server_of(&first);
    for i in 0..5 {
        let out = f.run_opts(&["-U"], &["echo", &i.to_string()]);
        assert_ok(&out);
        assert_eq!(server_of(&out), pid);
        assert!(text(&out.stdout).contains(&format!("args={i}\n")));
    }
}

#[test]
fn environment_is_the_callers() {
    let f = perl("env");
    let mut c = f.cmd_opts(&["-U"], &["env", "PFI_A", "PFI_B", "PFI_C"]);
    c.env("PFI_A", "one").env("PFI_B", "").env_remove("PFI_C");
    let out = f.output(c);
    assert_ok(&out);
    assert_eq!(text(&out.stdout), "PFI_A=one\nPFI_B=\nPFI_C=(unset)\n");
    // Warm, with a different environment.
    let mut c = f.cmd_opts(&["-U"], &["env", "PFI_A", "PFI_C"]);
    c.env("PFI_C", "three").env_remove("PFI_A");
    let out = f.output(c);
    assert_eq!(text(&out.stdout), "PFI_A=(unset)\nPFI_C=three\n");
}

#[test]
fn stdio_is_passed_through() {
    let f = perl("stdio");
    let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    for _ in 0..2 {
        let mut c = f.cmd_opts(&["-U"], &["cat"]);
        c.stdin(Stdio::piped());
        let mut child = f.spawn(c);
        let mut stdin = child.take_stdin();
        let feed = data.clone();
        let writer = std::thread::spawn(move || stdin.write_all(&feed));
        let out = child.finish();
        join_within(writer, LIMIT).unwrap();
        assert_ok(&out);
        assert!(out.stdout == data, "{} bytes back", out.stdout.len());
        assert_eq!(text(&out.stderr), "to stderr\n");
    }
}

#[test]
fn exit_codes_are_passed_on() {
    let f = perl("exit");
    for code in [0, 1, 42, 255, 0] {
        let out = f.run_opts(&["-U"], &["exit", &code.to_string()]);
        assert_eq!(out.status.code(), Some(code), "{}", text(&out.stderr));
    }
}

#[test]
fn death_by_sigterm_is_passed_on_as_sigterm() {
    let f = perl("term");
    server(&f, &[]);
    let out = f.run_opts(&["-U"], &["kill", "TERM"]);
    assert_eq!(out.status.signal(), Some(libc::SIGTERM), "{out:?}");
}

#[test]
fn death_by_any_signal_is_passed_on_without_a_core_file() {
    let f = perl("segv");
    server(&f, &[]);
    for sig in ["SEGV", "QUIT", "USR1", "ABRT"] {
        let out = f.run_opts(&["-U"], &["kill", sig]);
        let want = Signal::from_str(&format!("SIG{sig}")).unwrap() as i32;
        assert_eq!(out.status.signal(), Some(want), "{sig}: {out:?}");
        assert!(!out.status.core_dumped(), "{sig}: client dumped core");
        assert!(out.stderr.is_empty(), "{sig}: {}", text(&out.stderr));
    }
}

#[test]
fn fresh_server_replaces_old_one() {
    let f = perl("fresh");
    let old = server(&f, &[]);
    let new = server(&f, &["-f"]);
    assert_ne!(old, new);
    assert!(
        wait_until(Duration::from_secs(1), || gone(old)),
        "old server {old} still running 1 s after -f"
    );
    assert!(!gone(new));
    assert_eq!(server(&f, &[]), new);
}

#[test]
fn kill_leaves_no_server() {
    let f = perl("kill");
    let pid = server(&f, &[]);
    let out = f.run_opts(&["-U", "--kill"], NONE);
    assert_ok(&out);
    assert!(out.stdout.is_empty() && out.stderr.is_empty(), "{out:?}");
    assert!(gone(pid), "server {pid} still running after --kill");
    assert_eq!(std::fs::read_dir(&f.run_dir).unwrap().count(), 0);
    // Killing when there is nothing to kill is fine too.
    assert_ok(&f.run_opts(&["-U", "--kill"], NONE));
    // And the next call starts a new one.
    assert_ne!(server(&f, &[]), pid);
}

/// The name of the one socket in the fixture's run directory.
fn socket_name(f: &Fixture) -> std::ffi::OsString {
    let names: Vec<_> = std::fs::read_dir(&f.run_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.as_encoded_bytes().starts_with(b"s"))
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
    names[0].clone()
}

#[test]
fn server_quits_whenever_its_socket_name_goes() {
    // A second link to the socket: unlinking the name leaves the inode
    // with a link, which the watcher must not take for the socket.
    let f = perl("linked");
    let pid = server(&f, &[]);
    let socket = f.run_dir.join(socket_name(&f));
    std::fs::hard_link(&socket, f.dir.join("alias")).unwrap();
    let out = f.run_opts(&["-U", "--kill"], NONE);
    assert_ok(&out);
    assert!(out.stderr.is_empty(), "{}", text(&out.stderr));
    assert!(gone(pid), "server {pid} still running after --kill");

    // The name renamed away, and another file renamed over the name.
    let f = perl("renamed");
    let pid = server(&f, &[]);
    let socket = f.run_dir.join(socket_name(&f));
    std::fs::rename(&socket, f.dir.join("moved")).unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || gone(pid)),
        "server {pid} still running with its socket renamed away"
    );
    let pid = server(&f, &[]);
    std::fs::write(f.dir.join("other"), "").unwrap();
    std::fs::rename(f.dir.join("other"), &socket).unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || gone(pid)),
        "server {pid} still running with its socket replaced"
    );
    std::fs::remove_file(&socket).unwrap();
}

#[test]
fn identity_options_make_separate_servers() {
    let f = perl("ident");
    let plain = server(&f, &[]);
    let g1 = server(&f, &["-G", "one"]);
    let g2 = server(&f, &["-Gtwo"]);
    assert_eq!(server(&f, &["-G", "one"]), g1);
    let run_e = |value: Option<&str>| {
        let mut c = f.cmd_opts(&["-U", "-E", "PFI_SELECT"], &["echo"]);
        match value {
            Some(v) => c.env("PFI_SELECT", v),
            None => c.env_remove("PFI_SELECT"),
        };
        let out = f.output(c);
        assert_ok(&out);
        server_of(&out)
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
    let out = f.run_opts(&["-U", "-g", "my-ident"], &["echo"]);
    assert_ok(&out);
    assert!(f.run_dir.join("smy-ident").exists());
    for opts in [
        &["-U", "-g", "my-ident", "--kill"][..],
        &["-U", "-G", "one", "--kill"],
        &["-U", "-Gtwo", "--kill"],
    ] {
        assert_ok(&f.run_opts(opts, NONE));
    }
    for v in [None, Some("a"), Some("b"), Some("")] {
        let mut c = f.cmd_opts(&["-U", "-E", "PFI_SELECT", "--kill"], NONE);
        match v {
            Some(v) => c.env("PFI_SELECT", v),
            None => c.env_remove("PFI_SELECT"),
        };
        assert_ok(&f.output(c));
    }
}

#[test]
fn interpreter_arguments_on_the_shebang_line() {
    let f = perl("interp-args");
    let mut c = Command::new(OURS);
    c.arg("-U,perl,-w").arg(&f.prog).arg("warnflag");
    f.prepare(&mut c);
    let out = f.output(c);
    assert_ok(&out);
    assert_eq!(text(&out.stdout), "W=1\n", "perl did not get -w: {out:?}");
    // Without -w it is another identity (another server), without -w.
    let out = f.run_opts(&["-U"], &["warnflag"]);
    assert_ok(&out);
    assert_eq!(text(&out.stdout), "W=0\n", "{out:?}");
    assert_eq!(f.sockets().len(), 2);
    // `--kill` before the combined argument stops the `-w` server only.
    let mut k = Command::new(OURS);
    k.args(["--kill", "-U,perl,-w"]).arg(&f.prog);
    f.prepare(&mut k);
    assert_ok(&f.output(k));
    assert_eq!(f.sockets().len(), 1);
}

#[test]
fn c_client_and_ours_share_servers_both_ways() {
    if !have_c_client() {
        eprintln!("{C_CLIENT} not installed: skipped");
        return;
    }
    // Server started by the C client, reused by ours.
    let f = perl_shared("cross-c-first");
    let out = f.run_with(Client::C, &["-U"], &["echo"]);
    assert_ok(&out);
    let pid = server_of(&out);
    let out = f.run_with(Client::Ours, &["-U"], &["echo", "x"]);
    assert_ok(&out);
    assert_eq!(
        server_of(&out),
        pid,
        "ours did not reuse the C client's server"
    );

    // Server started by ours, reused by the C client.
    let g = perl_shared("cross-ours-first");
    let out = g.run_with(Client::Ours, &["-U", "-G", "x"], &["echo"]);
    assert_ok(&out);
    let pid = server_of(&out);
    let out = g.run_with(Client::C, &["-U", "-G", "x"], &["echo"]);
    assert_ok(&out);
    assert_eq!(
        server_of(&out),
        pid,
        "the C client did not reuse our server"
    );

    // The C client's --kill stops our server too.
    let k = g.run_with(Client::C, &["-U", "-G", "x", "--kill"], NONE);
    assert_ok(&k);
    assert!(wait_until(Duration::from_secs(2), || gone(pid)));
}

#[test]
fn socket_name_matches_the_c_client() {
    // Same identity inputs, compared by the socket each client names, and
    // with the independent implementation of the hash (common/identity.rs)
    // on this host.
    if !have_c_client() {
        eprintln!("{C_CLIENT} not installed: skipped (tests/identity.rs has its vectors)");
        return;
    }
    use common::identity::{RefItem, reference_hex, this_host};
    use std::os::unix::ffi::OsStrExt;
    let f = perl_shared("ident-vectors");
    let home = f.home.as_os_str().as_bytes();
    let cases: [(&[&str], Vec<RefItem<'_>>); 3] = [
        (&["-U"], vec![]),
        (
            &["-U", "-G", "g", "-E", "PFI_IDENT_VEC"],
            vec![RefItem::G(b"g"), RefItem::E(b"PFI_IDENT_VEC", Some(b"v"))],
        ),
        (&["-U", "-E", "HOME"], vec![RefItem::E(b"HOME", Some(home))]),
    ];
    let host = this_host(&f.dir);
    for (opts, items) in cases {
        let before = ls_default_run_dirs();
        let mut c = f.cmd_with(Client::C, opts, &["echo"]);
        c.env("PFI_IDENT_VEC", "v");
        let out = f.output(c);
        assert_ok(&out);
        // (Other tests share the default run directory: only hash names
        // count, and of those the one our client then uses.)
        let new: Vec<String> = ls_default_run_dirs()
            .into_iter()
            .filter(|n| {
                !before.contains(n)
                    && n.strip_prefix('s')
                        .is_some_and(|h| h.bytes().all(|b| b.is_ascii_hexdigit()))
            })
            .collect();
        assert!(!new.is_empty(), "the C client made no socket");
        let mut c = f.cmd_with(Client::Ours, opts, &["echo"]);
        c.env("PFI_IDENT_VEC", "v").env("PREFORK_INTERP_DEBUG", "1");
        let out = f.output(c);
        assert_ok(&out);
        let new: Vec<String> = new
            .into_iter()
            .filter(|n| text(&out.stderr).contains(&format!("/{n}\n")))
            .collect();
        assert_eq!(
            new.len(),
            1,
            "our client used none of the C client's new sockets: {}",
            text(&out.stderr)
        );
        let hex = reference_hex(
            &host,
            &items,
            b"perl",
            &[],
            Some(f.prog.as_os_str().as_bytes()),
        );
        let dir = default_run_dirs()
            .into_iter()
            .find(|d| d.join(&new[0]).exists())
            .expect("the C client's socket is still there");
        let digits = (108 - dir.as_os_str().len() as isize - 12).min(64) as usize;
        assert_eq!(
            new[0],
            format!("s{}", &hex[..digits]),
            "reference implementation, {opts:?}"
        );
        let mut k = f.cmd_with(Client::C, &[opts, &["--kill"]].concat(), NONE);
        k.env("PFI_IDENT_VEC", "v");
        assert_ok(&f.output(k));
    }
}

#[test]
fn no_process_is_left_in_the_callers_process_group() {
    let f = perl("zombies");
    for _ in 0..2 {
        // Cold (setup, watcher) and warm.
        let mut c = f.cmd_opts(&["-U"], &["echo"]);
        c.process_group(0);
        let child = f.spawn(c);
        let pgid = child.pid();
        let out = child.finish();
        assert_ok(&out);
        // Zombies count: nothing of ours may be left unreaped either.
        let left: Vec<String> = all_pids()
            .into_iter()
            .filter_map(|pid| {
                let (_, _, pg, _) = proc_stat(pid)?;
                let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
                (pg == pgid).then(|| format!("{pid}: {stat}"))
            })
            .collect();
        assert!(left.is_empty(), "left in the caller's group: {left:?}");
    }
}

#[test]
fn watcher_does_not_hold_the_callers_stdout() {
    // `$(script)` must not wait for the daemon processes: the call returns
    // and stdout reaches EOF as soon as the client exits.
    let f = perl("subst");
    let start = Instant::now();
    let out = f.run_opts(&["-U"], &["echo"]);
    assert_ok(&out);
    assert!(start.elapsed() < Duration::from_secs(5));
}

#[test]
fn help_prints_usage_and_exits_0() {
    let mut c = Command::new(OURS);
    c.arg("--help");
    let out = run_within(c, LIMIT);
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stdout).starts_with("usage: "));
    assert!(out.stderr.is_empty());
}

#[test]
fn version_prints_name_and_version_and_exits_0() {
    let want = format!("prefork-interp {}\n", env!("CARGO_PKG_VERSION"));
    for flag in ["--version", "-V"] {
        let mut c = Command::new(OURS);
        c.arg(flag);
        let out = run_within(c, LIMIT);
        assert_eq!(out.status.code(), Some(0), "{flag}");
        assert_eq!(text(&out.stdout), want, "{flag}");
        assert!(out.stderr.is_empty(), "{flag}");
    }
}

#[test]
fn usage_errors() {
    let out = run_within(Command::new(OURS), LIMIT);
    assert_error(&out, "need interpreter argument");
    let mut c = Command::new(OURS);
    c.args(["perl", "x"]);
    assert_error(&run_within(c, LIMIT), "need -U");
    let mut c = Command::new(OURS);
    c.args(["-U", "-Q", "perl"]);
    assert_error(&run_within(c, LIMIT), "unknown option -Q");
}

#[test]
fn interpreter_not_found() {
    let f = perl("noint");
    let mut c = Command::new(OURS);
    c.args(["-U", "/nonexistent/interp"]).arg(&f.prog);
    f.prepare(&mut c);
    let out = f.output(c);
    assert_error(&out, "interpreter \"/nonexistent/interp\" not found");
}

#[test]
fn run_dir_not_usable() {
    let f = perl("badrun");
    let file = f.dir.join("plain-file");
    std::fs::write(&file, "").unwrap();
    let mut c = f.cmd_opts(&["-U"], &["echo"]);
    c.env("PREFORK_INTERP_RUN_DIR", file.join("sub"));
    assert_error(&f.output(c), "Not a directory");
    // Writable by nobody (root ignores modes, so use a read-only mount
    // substitute: /proc is never writable).
    let mut c = f.cmd_opts(&["-U"], &["echo"]);
    c.env("PREFORK_INTERP_RUN_DIR", "/proc/pfi-run");
    assert_error(&f.output(c), "mkdir /proc/pfi-run");
}

#[test]
fn socket_path_too_long() {
    let f = perl("long");
    let long = f.dir.join("d".repeat(80));
    let mut c = f.cmd_opts(&["-U"], &["echo"]);
    c.env("PREFORK_INTERP_RUN_DIR", &long);
    assert_error(&f.output(c), "too few");
}

#[test]
fn setup_failure_status_is_passed_on() {
    let f = perl("setupfail");
    let mut c = f.cmd_opts(&["-U"], &["echo"]);
    c.env("SETUP_EXIT", "3");
    let out = f.output(c);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    // A script that never calls initialisation_complete and exits 0.
    let plain = f.dir.join("plain.pl");
    std::fs::write(&plain, "print STDERR qq(plain\\n); exit 0;\n").unwrap();
    let mut c = Command::new(OURS);
    c.args(["-U", "perl"]).arg(&plain);
    f.prepare(&mut c);
    let out = f.output(c);
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
    let f = perl("closed");
    let mut c = f.cmd_opts(&["-U"], &["exit", "7"]);
    // Start the client with fd 0 closed.
    // SAFETY: close(2) only, between fork and exec; fd 0 is not owned by
    // any Rust object in the child.
    unsafe {
        c.pre_exec(|| {
            libc::close(0);
            Ok(())
        });
    }
    let out = f.output(c);
    assert_eq!(out.status.code(), Some(7), "{out:?}");
}

#[test]
fn relative_run_dir_is_made_absolute() {
    let f = perl("relative");
    let mut c = f.cmd_opts(&["-U"], &["echo"]);
    c.env("PREFORK_INTERP_RUN_DIR", "rel-run");
    let out = f.output(c);
    assert_ok(&out);
    assert!(f.dir.join("rel-run").is_dir());
    let mut k = f.cmd_opts(&["-U", "--kill"], NONE);
    k.env("PREFORK_INTERP_RUN_DIR", "rel-run");
    assert_ok(&f.output(k));
}

/// Live session leaders titled as our watcher for this fixture's script:
/// the watcher daemons.
fn watchers(f: &Fixture) -> Vec<i32> {
    f.belonging()
        .into_iter()
        .filter(|&pid| {
            // Its title, one argument: no argument of the caller's.
            let mut title = std::ffi::OsString::from("prefork-interp watcher: ");
            title.push(&f.prog);
            let args = cmdline(pid);
            args.len() == 1
                && args[0]
                    .as_encoded_bytes()
                    .starts_with(title.as_encoded_bytes())
                && proc_stat(pid).is_some_and(|(_, _, _, sid)| sid == pid)
                && !gone(pid)
        })
        .collect()
}

#[test]
fn stale_socket_of_a_killed_server_is_replaced() {
    let f = perl("stale");
    let old = server(&f, &[]);
    let w = watchers(&f);
    assert_eq!(w.len(), 1, "watchers: {w:?}");
    kill(Pid::from_raw(old), Signal::SIGKILL).unwrap();
    assert!(wait_until(Duration::from_secs(2), || gone(old)));
    // The watcher notices the server has gone (EOF on its stdin).
    assert!(
        wait_until(Duration::from_secs(2), || gone(w[0])),
        "watcher {} outlived its server",
        w[0]
    );
    // Its socket is still there, with nobody listening.
    assert_eq!(f.sockets().len(), 1);
    let new = server(&f, &[]);
    assert_ne!(new, old);
}

#[test]
fn garbage_at_the_socket_path_is_replaced() {
    let f = perl("garbage");
    std::fs::create_dir_all(&f.run_dir).unwrap();
    // A plain file where the socket should be.
    std::fs::write(f.run_dir.join("sjunk"), "not a socket").unwrap();
    let out = f.run_opts(&["-U", "-g", "junk"], &["echo"]);
    assert_ok(&out);
    // A listener that hangs up without greeting.
    let path = f.run_dir.join("shangup");
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let t = std::thread::spawn(move || {
        let (conn, _) = listener.accept().unwrap();
        drop(conn);
    });
    let out = f.run_opts(&["-U", "-g", "hangup"], &["echo"]);
    assert_ok(&out);
    join_within(t, LIMIT);
    for g in ["junk", "hangup"] {
        assert_ok(&f.run_opts(&["-U", "-g", g, "--kill"], NONE));
    }
}

#[test]
fn a_stranger_on_the_socket_is_an_error() {
    let f = perl("stranger");
    std::fs::create_dir_all(&f.run_dir).unwrap();
    let listener = std::os::unix::net::UnixListener::bind(f.run_dir.join("sweb")).unwrap();
    let t = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        conn.write_all(b"HTTP/1.0 400 Bad Request\r\n").unwrap();
    });
    let out = f.run_opts(&["-U", "-g", "web"], &["echo"]);
    join_within(t, LIMIT);
    assert_error(&out, "unexpected greeting 0x48545450");
}

#[test]
fn a_new_server_starts_with_default_signals_whoever_starts_it() {
    // The setup process starts with every signal at its default, so a
    // server's state is the script's own, not its first caller's
    // (protocol.md §6.4). This server is the Debian v1 library's, which
    // applies no caller attributes: SIGPIPE stays default for every call.
    let f = perl("sigpipe");
    let sigign = |out: &Output| {
        assert_ok(out);
        u64::from_str_radix(text(&out.stdout).trim(), 16).unwrap()
    };
    let pipe_bit = 1u64 << (libc::SIGPIPE - 1);
    let out = f.run_opts(&["-U"], &["sigign"]);
    assert_eq!(sigign(&out) & pipe_bit, 0, "SIGPIPE ignored in the script");
    let mut c = f.cmd_opts(&["-U", "-G", "ignoring"], &["sigign"]);
    // SAFETY: signal(2) in the child before exec, nothing else.
    unsafe {
        c.pre_exec(|| {
            libc::signal(libc::SIGPIPE, libc::SIG_IGN);
            Ok(())
        });
    }
    let out = f.output(c);
    assert_eq!(
        sigign(&out) & pipe_bit,
        0,
        "first caller's SIG_IGN leaked into the server"
    );
    assert_ok(&f.run_opts(&["-U", "-G", "ignoring", "--kill"], NONE));
}

/// Start `client` for `echo` with tracing on (ours says what it did).
fn traced_echo(f: &Fixture, client: Client, opts: &[&str]) -> Running {
    let mut c = f.cmd_with(client, opts, &["echo"]);
    c.env("PREFORK_INTERP_DEBUG", "1");
    f.spawn(c)
}

/// Two cold callers, `clients`, racing for the lock of identity `ident`
/// (`-g`, so the test knows the lock's name): the test holds the lock
/// until both are waiting for it, so both have found no server. Returns
/// their outputs and the server pid, after checking that both were served
/// by the one server.
fn race(f: &Fixture, clients: [Client; 2], ident: &str) -> ([Output; 2], i32) {
    let run_dir = if f.is_shared() {
        default_run_dirs()
            .into_iter()
            .find(|d| d.is_dir())
            .expect("a default run directory")
    } else {
        std::fs::create_dir_all(&f.run_dir).unwrap();
        f.run_dir.clone()
    };
    let lock_path = run_dir.join(format!("l{ident}"));
    let lock = hold_lock(&lock_path);
    let ino = inode(&lock_path);
    let opts = ["-U", "-g", ident];
    let callers = clients.map(|c| traced_echo(f, c, &opts));
    for c in &callers {
        let pid = c.pid();
        assert!(
            wait_until(LIMIT, || blocked_on(pid) == Some(ino)),
            "client {pid} not waiting for the lock: {}",
            std::fs::read_to_string("/proc/locks").unwrap()
        );
    }
    drop(lock);
    let outs = callers.map(Running::finish);
    for out in &outs {
        assert_ok(out);
    }
    let server = server_of(&outs[0]);
    assert_eq!(server_of(&outs[1]), server, "{outs:?}");
    // Exactly one server of this fixture's script.
    assert_eq!(perl_servers(f), [server]);
    (outs, server)
}

#[test]
fn two_cold_callers_race_for_the_lock() {
    // design.md §5: both fail to connect, one takes the lock and starts
    // the server; the other waits for the lock, then connects.
    let f = perl("race");
    let (outs, server) = race(&f, [Client::Ours; 2], "race");
    for out in &outs {
        assert!(traced(out, "no server"), "not a cold call: {out:?}");
    }
    let starters = outs.iter().filter(|o| traced(o, "setup process")).count();
    assert_eq!(starters, 1, "{outs:?}");
    assert!(
        outs.iter()
            .any(|o| traced(o, "connected to existing server")),
        "{outs:?}"
    );
    // One socket, one watcher, and nothing else of ours left running once
    // the calls are over.
    assert_eq!(f.sockets().len(), 1);
    let w = watchers(&f);
    assert_eq!(w.len(), 1, "watchers: {w:?}");
    let mut want = vec![server, w[0]];
    want.sort_unstable();
    assert!(
        wait_until(Duration::from_secs(5), || {
            let mut now = f.belonging();
            now.sort_unstable();
            now == want
        }),
        "processes {:?}, wanted server {server} and watcher {}",
        f.belonging(),
        w[0]
    );
}

#[test]
fn a_cold_c_client_and_ours_race_for_the_lock() {
    // The same race across the two clients: they lock the same file.
    if !have_c_client() {
        eprintln!("{C_CLIENT} not installed: skipped");
        return;
    }
    let f = perl_shared("race-c");
    // The default run directory is shared with other tests: an identity
    // of this fixture's own.
    let ident = f.dir.file_name().unwrap().to_str().unwrap().to_owned();
    let (outs, _) = race(&f, [Client::C, Client::Ours], &ident);
    assert!(traced(&outs[1], "no server"), "not a cold call: {outs:?}");
}

/// The servers of this fixture's script: the Perl library names its
/// server process `SCRIPT [server]`.
fn perl_servers(f: &Fixture) -> Vec<i32> {
    f.belonging()
        .into_iter()
        .filter(|&p| {
            cmdline(p)
                .iter()
                .any(|a| a.to_string_lossy().ends_with(" [server]"))
        })
        .collect()
}

/// The inode of the lock `pid` is blocked on in `flock(2)`, from
/// `/proc/locks` (`N: -> FLOCK ADVISORY WRITE PID MAJ:MIN:INODE 0 EOF`).
fn blocked_on(pid: i32) -> Option<u64> {
    let locks = std::fs::read_to_string("/proc/locks").unwrap();
    locks.lines().find_map(|l| {
        let w: Vec<&str> = l.split_whitespace().collect();
        let arrow = w.iter().position(|x| *x == "->")?;
        let w = &w[arrow + 1..];
        (w.first() == Some(&"FLOCK") && w.get(3)?.parse::<i32>().ok()? == pid)
            .then(|| w.get(4)?.rsplit(':').next()?.parse().ok())
            .flatten()
    })
}

/// Take `flock(LOCK_EX)` on `path` (created if need be), as a client does.
fn hold_lock(path: &std::path::Path) -> nix::fcntl::Flock<std::fs::File> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .unwrap();
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .unwrap()
}

fn inode(path: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).unwrap().ino()
}

#[test]
fn lock_file_replaced_under_a_waiting_client() {
    // design.md §4.6: after locking, a client checks that the path still
    // names the file it locked, and retries on the new file if not.
    let f = perl("lockswap");
    std::fs::create_dir_all(&f.run_dir).unwrap();
    let lock = f.run_dir.join("lswap");
    let old = hold_lock(&lock);
    let old_ino = inode(&lock);
    let client = traced_echo(&f, Client::Ours, &["-U", "-g", "swap"]);
    let pid = client.pid();
    assert!(
        wait_until(LIMIT, || blocked_on(pid) == Some(old_ino)),
        "client {pid} not waiting for the lock: {}",
        std::fs::read_to_string("/proc/locks").unwrap()
    );
    // Replace the lock file (rename a new one over it), holding the new
    // one too, then let the old one go.
    let tmp = f.run_dir.join("lswap.new");
    let new = hold_lock(&tmp);
    std::fs::rename(&tmp, &lock).unwrap();
    let new_ino = inode(&lock);
    assert_ne!(new_ino, old_ino);
    drop(old);
    // The client got the old lock, saw the path name another file, and
    // now waits for the new one.
    assert!(
        wait_until(LIMIT, || blocked_on(pid) == Some(new_ino)),
        "client {pid} not waiting for the new lock file: {}",
        std::fs::read_to_string("/proc/locks").unwrap()
    );
    drop(new);
    let out = client.finish();
    assert_ok(&out);
    assert!(text(&out.stdout).contains("args=\n"), "{out:?}");
    assert_eq!(inode(&lock), new_ino);
    assert!(f.run_dir.join("sswap").exists());
}

#[test]
fn lock_file_removed_under_a_waiting_client() {
    // As --kill and pruning do: the lock file is unlinked by its holder.
    let f = perl("lockgone");
    std::fs::create_dir_all(&f.run_dir).unwrap();
    let lock = f.run_dir.join("lgone");
    let old = hold_lock(&lock);
    let old_ino = inode(&lock);
    let client = traced_echo(&f, Client::Ours, &["-U", "-g", "gone"]);
    let pid = client.pid();
    assert!(
        wait_until(LIMIT, || blocked_on(pid) == Some(old_ino)),
        "client {pid} not waiting for the lock: {}",
        std::fs::read_to_string("/proc/locks").unwrap()
    );
    std::fs::remove_file(&lock).unwrap();
    // Keep the old file open, so its inode number cannot be reused.
    let keep = old.unlock().map_err(|(_, e)| e).unwrap();
    let out = client.finish();
    assert_ok(&out);
    assert!(text(&out.stdout).contains("args=\n"), "{out:?}");
    // It made and locked a new file.
    assert_ne!(inode(&lock), old_ino);
    drop(keep);
}

/// An interpreter named without a `/` is the binary the caller's `PATH`
/// finds: two `PATH`s naming two binaries get two servers, each warm, and
/// each call runs its own `PATH`'s binary.
#[test]
fn each_path_gets_a_server_running_its_own_interpreter() {
    let f = Fixture::example("path-interp", "probe", Client::Ours);
    let dirs = [f.dir.join("a"), f.dir.join("b")];
    for d in &dirs {
        std::fs::create_dir_all(d).unwrap();
        std::fs::copy(&f.prog, d.join("pfi-probe")).unwrap();
    }
    let system_path = std::env::var("PATH").unwrap_or_default();
    let call = |which: usize, probe: &str, args: &[&str]| {
        let mut c = Command::new(OURS);
        c.args(["-U", "pfi-probe", "same"]).args(args);
        f.prepare(&mut c);
        c.env("PROBE", probe)
            .env("PATH", format!("{}:{system_path}", dirs[which].display()));
        c
    };
    // The first call of each PATH starts its server and runs in its setup
    // process (protocol.md §7): while it sleeps, that process shows the
    // binary it runs.
    for (which, dir) in dirs.iter().enumerate() {
        let mut running = f.spawn(call(which, "sleep", &["1000"]));
        let line = running.line();
        let pid: i32 = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("pid=")?.parse().ok())
            .unwrap_or_else(|| panic!("no pid in {line:?}"));
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
        assert_eq!(exe, dir.join("pfi-probe"), "first call of PATH {which}");
        assert_ok(&running.finish());
    }
    let mut servers: [Vec<i32>; 2] = [vec![], vec![]];
    for i in 0..10 {
        let which = i % 2;
        let out = f.output(call(which, "ids", &[]));
        assert_ok(&out);
        let sid = id(&out, "sid");
        let exe = std::fs::read_link(format!("/proc/{sid}/exe")).unwrap();
        assert_eq!(exe, dirs[which].join("pfi-probe"), "call {i}");
        if !servers[which].contains(&sid) {
            servers[which].push(sid);
        }
    }
    assert_eq!(
        servers[0].len(),
        1,
        "PATH a restarted its server: {servers:?}"
    );
    assert_eq!(
        servers[1].len(),
        1,
        "PATH b restarted its server: {servers:?}"
    );
    // Two PATHs reaching the same binary share its server.
    let link = f.dir.join("c");
    std::os::unix::fs::symlink(&dirs[0], &link).unwrap();
    let mut c = Command::new(OURS);
    c.args(["-U", "pfi-probe", "same"]);
    f.prepare(&mut c);
    c.env("PROBE", "ids")
        .env("PATH", format!("{}:{system_path}", link.display()));
    let out = f.output(c);
    assert_ok(&out);
    assert_eq!(id(&out, "sid"), servers[0][0]);
    for (d, sid) in dirs.iter().zip([servers[0][0], servers[1][0]]) {
        let mut c = Command::new(OURS);
        c.args(["--kill", "-U", "pfi-probe", "same"]);
        f.prepare(&mut c);
        c.env("PATH", format!("{}:{system_path}", d.display()));
        assert_ok(&f.output(c));
        assert!(
            wait_until(Duration::from_secs(5), || gone(sid)),
            "{sid} still running"
        );
    }
}

#[test]
fn a_late_accept_frame_still_turns_call1_on() {
    // A busy server may answer the call1 offer after the client's 200 ms
    // (protocol.md §6.1): its PFXA must still be taken as the accept, never
    // read as a v1 status. This fake server answers after 400 ms.
    use prefork_interp::protocol::{Attributes, Frame, GREETING_V1, recv_fd};
    use std::io::Read;
    let f = perl("late-pfxa");
    std::fs::create_dir_all(&f.run_dir).unwrap();
    let listener = std::os::unix::net::UnixListener::bind(f.run_dir.join("slate")).unwrap();
    let t = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        conn.write_all(&GREETING_V1).unwrap();
        let mut byte = [0u8; 1];
        conn.read_exact(&mut byte).unwrap();
        for _ in 0..3 {
            recv_fd(&conn).unwrap().expect("a stdio fd");
        }
        let mut len = [0u8; 4];
        conn.read_exact(&mut len).unwrap();
        let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
        conn.read_exact(&mut body).unwrap();
        std::thread::sleep(Duration::from_millis(400));
        conn.write_all(&Frame::Accept(vec!["call1".into()]).encode())
            .unwrap();
        let mut head = [0u8; 8];
        conn.read_exact(&mut head).unwrap();
        assert_eq!(&head[..4], b"ATTR");
        let mut attrs = vec![0u8; u32::from_be_bytes(head[4..].try_into().unwrap()) as usize];
        conn.read_exact(&mut attrs).unwrap();
        for _ in Attributes::decode_body(&attrs).unwrap().fds {
            recv_fd(&conn).unwrap().expect("an extra fd");
        }
        conn.write_all(&Frame::Exit(42 << 8).encode()).unwrap();
    });
    let out = f.run_opts(&["-U", "-g", "late"], &["echo"]);
    join_within(t, LIMIT);
    assert_eq!(out.status.code(), Some(42), "{}", text(&out.stderr));
}
