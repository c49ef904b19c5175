//! Integration tests of the Rust server side (`prefork_interp::server`):
//! the `exit_with` and `probe` examples run as servers through our client
//! and through the reference C client. Real processes, real sockets.
//!
//! Each test has its own directory with its own copy of the example (so
//! its own server identity) and its own run directory; the fixture stops
//! every server it started. See `common` for the harness.

mod common;

use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStringExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// Both clients, or only ours where the C client is not installed.
fn clients() -> Vec<Client> {
    if have_c_client() {
        vec![Client::Ours, Client::C]
    } else {
        eprintln!("{C_CLIENT} not installed: testing with our client only");
        vec![Client::Ours]
    }
}

#[test]
fn exit_codes_and_words_are_passed_on() {
    for client in clients() {
        let f = Fixture::example("codes", "exit_with", client);
        // CODE is the first argument, which the client counts as the
        // script: each code has its own server. Each cold, then warm.
        for code in [0, 1, 2, 42, 126, 127, 128, 200, 255] {
            for _ in 0..2 {
                let out = f.run(&[code.to_string().as_str(), "hello", "world"]);
                assert_eq!(out.status.code(), Some(code), "{client:?}: {out:?}");
                assert_eq!(text(&out.stdout), "hello world\n", "{client:?}");
                assert_eq!(text(&out.stderr), "", "{client:?}");
            }
        }
    }
}

#[test]
fn arguments_are_as_in_a_direct_run_including_non_utf8() {
    let args: Vec<OsString> = vec![
        "same".into(),
        OsString::from_vec(vec![0xff, 0xfe, b'x']),
        "".into(),
        "a b".into(),
        "-U".into(),
    ];
    let expected: String = args
        .iter()
        .map(|a| format!("arg={}\n", hex(a.as_encoded_bytes())))
        .collect();
    for client in clients() {
        let f = Fixture::example("args", "probe", client);
        let program = format!("program={}\n", hex(f.prog.as_os_str().as_encoded_bytes()));
        for round in ["cold", "warm"] {
            let out = f.probe("args", &args);
            assert_ok(&out);
            assert_eq!(
                text(&out.stdout),
                format!("{program}{expected}"),
                "{client:?} {round}"
            );
        }
        // The same program run directly sees the same.
        let mut c = Command::new(&f.prog);
        c.args(&args)
            .env("PROBE", "args")
            .env_remove("PREFORK_INTERP");
        let out = f.output(c);
        assert_ok(&out);
        assert_eq!(text(&out.stdout), format!("{program}{expected}"));
    }
}

#[test]
fn exit_with_runs_standalone() {
    let f = Fixture::example("standalone", "exit_with", Client::Ours);
    let mut c = Command::new(&f.prog);
    c.args(["5", "a", "b"]).env_remove("PREFORK_INTERP");
    let out = f.output(c);
    assert_eq!(out.status.code(), Some(5));
    assert_eq!(text(&out.stdout), "a b\n");
    assert!(f.processes().is_empty());
    let out = f.output(Command::new(&f.prog));
    assert_eq!(out.status.code(), Some(127));
    assert!(text(&out.stderr).contains("usage"), "{out:?}");
}

#[test]
fn environment_is_the_callers_without_reserved_entries() {
    for client in clients() {
        let f = Fixture::example("env", "probe", client);
        let names = [
            "same",
            "FOO",
            "BAR",
            "PREFORK_INTERP_EXT_TEST",
            "PREFORK_INTERP",
        ];
        let mut c = f.cmd(&names);
        c.env("PROBE", "env")
            .env("FOO", "first")
            .env("BAR", "1")
            .env("PREFORK_INTERP_EXT_TEST", "x");
        let out = f.output(c);
        assert_ok(&out);
        let first = text(&out.stdout);
        assert!(first.contains("FOO=first\nBAR=1\n"), "{client:?}: {first}");
        let mut c = f.cmd(&names);
        c.env("PROBE", "env")
            .env("FOO", "second")
            .env_remove("BAR")
            .env("PREFORK_INTERP_EXT_TEST", "x");
        let out = f.output(c);
        assert_ok(&out);
        assert_eq!(
            text(&out.stdout),
            "FOO=second\nBAR unset\nPREFORK_INTERP_EXT_TEST unset\nPREFORK_INTERP unset\n",
            "{client:?}"
        );
    }
}

#[test]
fn stdio_is_the_callers() {
    for client in clients() {
        let f = Fixture::example("stdio", "probe", client);
        for _ in 0..2 {
            let mut c = f.cmd(&["same"]);
            c.env("PROBE", "cat").stdin(Stdio::piped());
            let mut child = f.spawn(c);
            let mut stdin = child.take_stdin();
            stdin.write_all(b"hello\nworld\n").unwrap();
            drop(stdin);
            let out = child.finish();
            assert_ok(&out);
            assert_eq!(text(&out.stdout), "hello\nworld\n", "{client:?}");
            assert_eq!(text(&out.stderr), "to stderr\n", "{client:?}");
        }
    }
}

#[test]
fn death_by_signal_is_passed_on() {
    for client in clients() {
        let f = Fixture::example("signal", "probe", client);
        for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGKILL, libc::SIGHUP] {
            let out = f.probe("signal", &["same", &sig.to_string()]);
            assert_eq!(out.status.signal(), Some(sig), "{client:?}: {out:?}");
        }
        // Other signals: ours dies of them too (without a core file); the
        // C client reports them and exits 127.
        let out = f.probe("signal", &["same", &libc::SIGSEGV.to_string()]);
        match client {
            Client::Ours => {
                assert_eq!(out.status.signal(), Some(libc::SIGSEGV), "{out:?}");
                assert!(
                    !out.status.core_dumped() && out.stderr.is_empty(),
                    "{out:?}"
                );
            }
            Client::C => {
                assert_eq!(out.status.code(), Some(127), "{client:?}: {out:?}");
                assert!(text(&out.stderr).contains("signal 11"), "{out:?}");
            }
        }
    }
}

#[test]
fn a_call_that_execs_keeps_its_exit_status() {
    for client in clients() {
        let f = Fixture::example("exec", "probe", client);
        for _ in 0..3 {
            let out = f.probe("exec", &["same", "/bin/sh", "-c", "echo via sh; exit 7"]);
            assert_eq!(out.status.code(), Some(7), "{client:?}: {out:?}");
            assert_eq!(text(&out.stdout), "via sh\n");
        }
    }
}

#[test]
fn a_call_holds_no_protocol_fds() {
    let f = Fixture::example("fds", "probe", Client::Ours);
    let fds = |out: &std::process::Output| -> Vec<String> {
        text(&out.stdout)
            .lines()
            .filter(|l| {
                !l.contains("/proc/")
                    && !l.starts_with("fd=0 ")
                    && !l.starts_with("fd=1 ")
                    && !l.starts_with("fd=2 ")
            })
            .map(str::to_owned)
            .collect()
    };
    // What the program inherits from this test process anyway.
    let mut direct = Command::new(&f.prog);
    direct
        .arg("same")
        .env("PROBE", "fds")
        .env_remove("PREFORK_INTERP");
    let direct = f.output(direct);
    let inherited = fds(&direct);
    assert_ok(&f.probe("ids", &["same"]));
    // A call in progress, so the server holds a pidfd for its monitor.
    let mut c = f.cmd(&["same", "1000"]);
    c.env("PROBE", "sleep");
    let mut busy = f.spawn(c);
    busy.line();
    for _ in 0..2 {
        let out = f.probe("fds", &["same"]);
        assert_ok(&out);
        let seen = fds(&out);
        for line in &seen {
            assert!(!line.contains("socket:"), "socket in call: {seen:?}");
            assert!(!line.contains("pidfd"), "pidfd in call: {seen:?}");
            assert!(
                inherited.contains(line) || !line.contains("pipe:"),
                "unexpected fd in call: {line} (all: {seen:?}, direct run: {inherited:?})"
            );
        }
    }
    assert_ok(&busy.finish());
}

#[test]
fn processes_are_server_spares_executor() {
    let f = Fixture::example("tree", "probe", Client::Ours);
    // The first call runs in the setup process (protocol.md §7); the
    // others are served.
    assert_ok(&f.probe("ids", &["same"]));
    let a = f.probe("ids", &["same"]);
    let b = f.probe("ids", &["same"]);
    assert_ok(&a);
    assert_ok(&b);
    let server = id(&a, "sid");
    assert_eq!(
        id(&b, "sid"),
        server,
        "second call served by the same server"
    );
    // The executor leads the call's process group (protocol.md §6.4); its
    // parent is the server, which watches the call (no monitor process)
    // and is a session leader.
    for out in [&a, &b] {
        assert_eq!(id(out, "pgid"), id(out, "pid"));
        assert_eq!(id(out, "ppid"), server);
    }
    let (state, ppid, pgid, sid) = proc_stat(server).expect("server alive");
    assert_ne!(state, 'Z');
    assert_eq!((pgid, sid), (server, server));
    assert_eq!(ppid, 1, "the setup process has exited");
    // Every executor has been reaped; the default pool of spares waits.
    assert!(
        wait_until(Duration::from_secs(5), || at_rest(
            server,
            prefork_interp::server::DEFAULT_POOL_SIZE
        )),
        "server children: {:?}",
        children(server)
    );
}

// The first call runs in place (extension inplace1, protocol.md §7): our
// client announces it, and the setup process, having forked the server,
// takes the first call on itself instead of exiting.

/// The words `pid= ppid= pgid= sid=` of a probe `ids` or `sleep` line.
fn ids_of(line: &str) -> [i32; 4] {
    ["pid", "ppid", "pgid", "sid"].map(|key| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
            .unwrap_or_else(|| panic!("no {key}= in {line:?}"))
    })
}

/// This test process's session.
fn our_session() -> i32 {
    nix::unistd::getsid(None).unwrap().as_raw()
}

#[test]
fn the_first_call_runs_in_the_setup_process() {
    let f = Fixture::example("in-place", "probe", Client::Ours);
    // The client leads its own process group, so the call's group can be
    // told from this test's.
    let mut c = f.cmd(&["same", "2000"]);
    c.env("PROBE", "sleep").process_group(0);
    let mut cold = f.spawn(c);
    let client = cold.pid();
    let [pid, ppid, pgid, sid] = ids_of(&cold.line());
    // A shell job's place: the client's child, leading a process group
    // of its own in the caller's session; not a session of its own.
    assert_eq!(ppid, client, "the cold call's parent is the client");
    assert_eq!(pgid, pid, "the cold call leads a process group of its own");
    assert_eq!(
        sid,
        our_session(),
        "the cold call is in the caller's session"
    );
    // It forked the server through a child that is already reaped: like a
    // direct run, the program has no child it did not make.
    assert_eq!(children(pid), [], "the cold call has a child of ours");
    assert_ok(&cold.finish());
    // The second call is served: in the server's session, leading its own
    // group; the server, orphaned at birth, is nobody's child of ours.
    let out = f.probe("ids", &["same"]);
    assert_ok(&out);
    let [pid, _, pgid, server] = ids_of(&text(&out.stdout));
    assert_ne!(server, our_session());
    assert_eq!(pgid, pid);
    let (_, server_parent, _, _) = proc_stat(server).expect("server alive");
    assert_ne!(
        server_parent, client,
        "the server is not the client's grandchild"
    );
    // And so is every later one.
    let out = f.probe("ids", &["same"]);
    assert_eq!(id(&out, "sid"), server);
}

/// Make the call `cmd()` makes twice on a fresh server: the first runs in
/// place (the client's trace says so), the second is served. Both
/// outputs, without the client's trace lines on stderr.
fn cold_then_warm(f: &Fixture, cmd: impl Fn() -> Command) -> [std::process::Output; 2] {
    let call = |in_place: bool| {
        let mut c = cmd();
        c.env("PREFORK_INTERP_DEBUG", "1");
        let mut out = f.spawn(c).finish();
        let err = text(&out.stderr);
        let trace = |l: &&str| l.starts_with("prefork-interp[");
        assert_eq!(
            err.lines()
                .filter(trace)
                .any(|l| l.contains("runs the call in place")),
            in_place,
            "in place: {in_place}?\n{err}"
        );
        out.stderr = err
            .lines()
            .filter(|l| !trace(l))
            .flat_map(|l| [l, "\n"])
            .collect::<String>()
            .into_bytes();
        out
    };
    [call(true), call(false)]
}

#[test]
fn a_cold_call_gets_what_a_warm_call_gets() {
    // Exit status and stdout (exit_with), each code its own server.
    let f = Fixture::example("in-place-same", "exit_with", Client::Ours);
    for code in ["0", "3", "255"] {
        let [cold, warm] = cold_then_warm(&f, || f.cmd(&[code, "hello", "world"]));
        assert_eq!(cold.status.code(), Some(code.parse().unwrap()), "{cold:?}");
        assert_eq!(text(&cold.stdout), "hello world\n");
        assert_eq!(cold.stderr, b"");
        assert_eq!(cold, warm, "exit {code}");
    }
    let f = Fixture::example("in-place-same", "probe", Client::Ours);
    // Arguments, any bytes.
    let args: Vec<OsString> = vec![
        "args".into(),
        OsString::from_vec(vec![0xff, b'x']),
        "".into(),
        "a b".into(),
    ];
    let [cold, warm] = cold_then_warm(&f, || {
        let mut c = f.cmd(&args);
        c.env("PROBE", "args");
        c
    });
    assert_ok(&cold);
    assert!(text(&cold.stdout).contains("arg=ff78\n"), "{cold:?}");
    assert_eq!(cold, warm, "arguments");
    // The environment: the caller's, not the setup process's (which had
    // PREFORK_INTERP), without reserved entries.
    let [cold, warm] = cold_then_warm(&f, || {
        let mut c = f.cmd(&["env", "FOO", "PREFORK_INTERP_EXT_TEST", "PREFORK_INTERP"]);
        c.env("PROBE", "env")
            .env("FOO", "bar")
            .env("PREFORK_INTERP_EXT_TEST", "x");
        c
    });
    assert_eq!(
        text(&cold.stdout),
        "FOO=bar\nPREFORK_INTERP_EXT_TEST unset\nPREFORK_INTERP unset\n",
        "{cold:?}"
    );
    assert_eq!(cold, warm, "environment");
    // Stdio: the caller's stdin, stdout and stderr.
    let [cold, warm] = cold_then_warm(&f, || {
        let mut c = f.cmd(&["cat"]);
        c.env("PROBE", "cat");
        let input = f.dir.join("input");
        std::fs::write(&input, "hello\nworld\n").unwrap();
        c.stdin(std::fs::File::open(input).unwrap());
        c
    });
    assert_eq!(text(&cold.stdout), "hello\nworld\n", "{cold:?}");
    assert_eq!(text(&cold.stderr), "to stderr\n", "{cold:?}");
    assert_eq!(cold, warm, "stdio");
    // An extra fd, at its number, and the other attributes; none of the
    // setup process's protocol fds.
    let extra = std::fs::File::create(f.dir.join("extra")).unwrap();
    let [cold, warm] = cold_then_warm(&f, || {
        let mut c = f.cmd(&["attrs"]);
        c.env("PROBE", "attrs");
        let raw = std::os::fd::AsRawFd::as_raw_fd(&extra);
        // SAFETY: dup2 only, between fork and exec.
        unsafe {
            c.pre_exec(move || {
                libc::dup2(raw, 5);
                Ok(())
            });
        }
        c
    });
    assert_ok(&cold);
    let fds: Vec<i32> = text(&cold.stdout)
        .lines()
        .find_map(|l| {
            l.strip_prefix("fds=[")?
                .strip_suffix(']')
                .map(str::to_owned)
        })
        .map(|l| l.split(", ").filter_map(|n| n.parse().ok()).collect())
        .unwrap_or_default();
    assert!(fds.contains(&5), "{cold:?}");
    assert_eq!(cold, warm, "attributes and fds");
}

#[test]
fn a_cold_call_killed_by_a_signal_gives_the_warm_calls_status() {
    let f = Fixture::example("in-place-signal", "probe", Client::Ours);
    // Without core files, as a direct run in these conditions.
    let no_core = |c: &mut Command| {
        // SAFETY: setrlimit only, between fork and exec.
        unsafe {
            c.pre_exec(|| {
                let none = libc::rlimit {
                    rlim_cur: 0,
                    rlim_max: 0,
                };
                libc::setrlimit(libc::RLIMIT_CORE, &none);
                Ok(())
            });
        }
    };
    // Dying of a signal it raised, each signal its own server.
    for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGKILL, libc::SIGSEGV] {
        let arg = sig.to_string();
        let [cold, warm] = cold_then_warm(&f, || {
            let mut c = f.cmd(&[arg.as_str(), arg.as_str()]);
            c.env("PROBE", "signal");
            no_core(&mut c);
            c
        });
        assert_eq!(cold.status.signal(), Some(sig), "{cold:?}");
        assert!(!cold.status.core_dumped(), "{cold:?}");
        assert_eq!(cold, warm, "signal {sig}");
    }
    // Killed from outside while it runs (a cold call, then a warm one).
    for round in ["cold", "warm"] {
        let mut c = f.cmd(&["killed", "30000"]);
        c.env("PROBE", "sleep");
        let mut call = f.spawn(c);
        let [pid, _, _, sid] = ids_of(&call.line());
        assert_eq!(sid == our_session(), round == "cold", "{round}");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        let out = call.finish();
        assert_eq!(out.status.signal(), Some(libc::SIGTERM), "{round}: {out:?}");
    }
}

#[test]
fn a_cold_call_is_interrupted_when_its_client_dies() {
    let f = Fixture::example("in-place-orphan", "probe", Client::Ours);
    let mut c = f.cmd(&["same", "30000"]);
    c.env("PROBE", "sleep").process_group(0);
    let mut cold = f.spawn(c);
    let [pid, ppid, ..] = ids_of(&cold.line());
    assert_eq!(ppid, cold.pid());
    // As a monitor does when its caller goes: SIGINT (PR_SET_PDEATHSIG).
    cold.kill();
    assert!(
        wait_until(Duration::from_secs(5), || gone(pid)),
        "the cold call outlived its client: {:?}",
        proc_stat(pid)
    );
    // The server it started serves the next call.
    let out = f.probe("ids", &["same"]);
    assert_ok(&out);
    assert_ne!(id(&out, "sid"), our_session(), "{out:?}");
}

/// The setup process of `f`'s probe as a client starts it, announcing
/// `inplace1`, with `env` added: (it, the client's end of CALL, the write
/// end of WATCHE, which the server quits on when it is closed).
fn raw_setup(f: &Fixture, env: &[(&str, &str)]) -> (Running, UnixStream, std::os::fd::OwnedFd) {
    use std::os::fd::AsRawFd;
    let listen = std::os::unix::net::UnixListener::bind(f.dir.join("sock")).unwrap();
    let (ours, theirs) = UnixStream::pair().unwrap();
    // Close-on-exec: the setup process (and so the server) must hold only
    // the ends named in PREFORK_INTERP.
    let pipe = || nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
    let (_watchi_r, watchi_w) = pipe();
    let (watche_r, watche_w) = pipe();
    let fds = [
        listen.as_raw_fd(),
        theirs.as_raw_fd(),
        watchi_w.as_raw_fd(),
        watche_r.as_raw_fd(),
    ];
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    let mut c = Command::new(&f.prog);
    f.prepare(&mut c);
    c.env(
        "PREFORK_INTERP",
        format!(
            "v1,{}.{:09},inplace1 10,11,12,13",
            now.as_secs(),
            now.subsec_nanos()
        ),
    )
    .envs(env.iter().copied())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    // SAFETY: fcntl and dup2 only, between fork and exec.
    unsafe {
        c.pre_exec(move || {
            // Out of the way first: a source may sit on a target number.
            let mut high = [0; 4];
            for (h, &fd) in high.iter_mut().zip(&fds) {
                *h = libc::fcntl(fd, libc::F_DUPFD, 100);
                if *h < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            for (i, &fd) in high.iter().enumerate() {
                if libc::dup2(fd, 10 + i as i32) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                libc::close(fd);
            }
            Ok(())
        });
    }
    let setup = Running::spawn(c, LIMIT);
    drop((listen, theirs, watchi_w, watche_r));
    (setup, ours, watche_w)
}

#[test]
fn a_first_call_that_fails_its_handshake_ends_the_setup_process_with_127() {
    let f = Fixture::example("in-place-fail", "probe", Client::Ours);
    let in_place_greeting = b"PFI\n\0\0\0\x08inplace1";
    let cases: [(&str, &[(&str, &str)]); 3] = [
        ("hang-up", &[]),
        ("bad byte", &[]),
        ("timeout", &[("PROBE_REQUEST_MS", "300")]),
    ];
    for (case, env) in cases {
        let (setup, mut call, watche) = raw_setup(&f, env);
        call.set_read_timeout(Some(LIMIT)).unwrap();
        let mut greeting = [0u8; 16];
        if let Err(e) = call.read_exact(&mut greeting) {
            panic!("{case}: no greeting ({e}): {:?}", setup.finish());
        }
        assert_eq!(&greeting, in_place_greeting, "{case}");
        let start = Instant::now();
        match case {
            "hang-up" => drop(call),
            "bad byte" => call.write_all(&[1]).unwrap(),
            _ => {}
        }
        let out = setup.finish();
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(127), "{case}: {out:?}");
        assert!(
            err.starts_with("probe: prefork: taking the first call in: "),
            "{case}: {err}"
        );
        assert_eq!(err.lines().count(), 1, "{case}: {err}");
        if case == "timeout" {
            // (Counted from just before the greeting we read.)
            assert!(start.elapsed() >= Duration::from_millis(250), "{case}");
            assert!(err.contains("within 300 ms"), "{err}");
        }
        // The server quits when its watcher's output closes.
        drop(watche);
        assert!(
            wait_until(Duration::from_secs(5), || f.processes().is_empty()),
            "{case}: {:?}",
            f.processes()
        );
        std::fs::remove_file(f.dir.join("sock")).unwrap();
    }
}

#[test]
fn a_warm_call_runs_in_a_spare_forked_before_it_and_is_replaced() {
    let f = Fixture::example("pool", "probe", Client::Ours);
    let pool = prefork_interp::server::DEFAULT_POOL_SIZE;
    let server = start_probe_server(&f, f.cmd(&["same"]));
    assert!(wait_until(Duration::from_secs(5), || at_rest(server, pool)));
    let before = spares(server);
    let out = f.probe("ids", &["same"]);
    assert_ok(&out);
    let executor = id(&out, "pid");
    assert!(
        before.contains(&executor),
        "call ran in [{executor}], not one of the spares {before:?}"
    );
    // A replacement is forked after the handover; the pool is whole again.
    assert!(
        wait_until(Duration::from_secs(5), || at_rest(server, pool)
            && !spares(server).contains(&executor)),
        "server children: {:?}",
        children(server)
    );
    // No spares: each call's executor is forked when the call comes.
    let f = Fixture::example("no-pool", "probe", Client::Ours);
    let mut c = f.cmd(&["same"]);
    c.env("PROBE_POOL", "0");
    let server = start_probe_server(&f, c);
    for _ in 0..3 {
        let out = f.probe("ids", &["same"]);
        assert_ok(&out);
        assert_eq!(id(&out, "ppid"), server);
        assert!(wait_until(Duration::from_secs(5), || at_rest(server, 0)));
    }
}

#[test]
fn server_keeps_no_zombies_and_no_extra_fds() {
    let f = Fixture::example("leaks", "exit_with", Client::Ours);
    assert_ok(&f.run(&["0"]));
    let pool = prefork_interp::server::DEFAULT_POOL_SIZE;
    let server = f.servers();
    assert_eq!(server.len(), 1, "{server:?}");
    let server = server[0];
    assert!(wait_until(Duration::from_secs(5), || at_rest(server, pool)));
    let before = fd_count(server);
    for _ in 0..20 {
        assert_ok(&f.run(&["0"]));
    }
    assert!(
        wait_until(Duration::from_secs(5), || at_rest(server, pool)),
        "server children: {:?}",
        children(server)
    );
    assert_eq!(fd_count(server), before);
    let mut all = f.processes();
    all.sort();
    let mut expected = spares(server);
    expected.push(server);
    expected.sort();
    assert_eq!(all, expected);
}

#[test]
fn concurrency_limit_makes_callers_wait_never_fail() {
    let f = Fixture::example("limit", "probe", Client::Ours);
    let mut c = f.cmd(&["same"]);
    c.env("PROBE", "ids").env("PROBE_MAX_SERVERS", "2");
    assert_ok(&f.output(c));
    let markers = f.dir.join("running");
    std::fs::create_dir(&markers).unwrap();
    let start = Instant::now();
    let children: Vec<_> = (0..6)
        .map(|_| {
            let mut c = f.cmd(&[OsString::from("same"), "300".into(), markers.clone().into()]);
            c.env("PROBE", "sleep");
            f.spawn(c)
        })
        .collect();
    let outs: Vec<_> = children.into_iter().map(Running::finish).collect();
    let elapsed = start.elapsed();
    for out in &outs {
        assert_ok(out);
        let n = id(out, "concurrent");
        assert!(
            (1..=2).contains(&n),
            "{n} calls at once: {}",
            text(&out.stdout)
        );
    }
    // Six calls of 300 ms, two at a time.
    assert!(elapsed >= Duration::from_millis(850), "{elapsed:?}");
}

/// The default limit comes from the machine (8 per CPU, so at least 8):
/// 8 callers at once all run at once, as direct runs would.
#[test]
fn by_default_eight_callers_run_at_once() {
    let f = Fixture::example("default-limit", "probe", Client::Ours);
    assert_ok(&f.probe("ids", &["same"]));
    let markers = f.dir.join("running");
    std::fs::create_dir(&markers).unwrap();
    let children: Vec<_> = (0..8)
        .map(|_| {
            let mut c = f.cmd(&[
                OsString::from("same"),
                "4000".into(),
                markers.clone().into(),
            ]);
            c.env("PROBE", "sleep");
            f.spawn(c)
        })
        .collect();
    let most = children
        .into_iter()
        .map(|c| {
            let out = c.finish();
            assert_ok(&out);
            id(&out, "concurrent")
        })
        .max();
    assert_eq!(most, Some(8), "not all 8 calls ran at once");
}

#[test]
fn caller_killed_mid_call_leaves_no_process() {
    for client in clients() {
        let f = Fixture::example("killed", "probe", client);
        // A served call (our client runs the first one in place).
        assert_ok(&f.probe("ids", &["same"]));
        let mut c = f.cmd(&["same", "30000"]);
        c.env("PROBE", "sleep");
        let mut child = f.spawn(c);
        let line = child.line();
        let word = |key: &str| -> i32 {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
                .unwrap_or_else(|| panic!("no {key} in {line:?}"))
        };
        let (executor, parent, server) = (word("pid"), word("ppid"), word("sid"));
        assert_eq!(parent, server, "{client:?}: the server watches the call");
        child.kill();
        // Properly reaped (no zombie), not left to init, and the server
        // carries on.
        assert!(
            wait_until(Duration::from_secs(10), || reaped(executor)),
            "{client:?}: executor {executor} {:?}",
            proc_stat(executor)
        );
        let out = f.probe("ids", &["same"]);
        assert_ok(&out);
        assert_eq!(id(&out, "sid"), server, "{client:?}");
    }
}

#[test]
fn replacing_the_executable_reloads() {
    let f = Fixture::example("reload", "probe", Client::Ours);
    let old = start_probe_server(&f, f.cmd(&["same"]));
    assert_eq!(id(&f.probe("ids", &["same"]), "sid"), old);
    // Install a new build the usual way: write a new file, rename it over;
    // dated in the past, as `tar`, `cp -p` or a package leave it.
    let new = f.dir.join("probe.new");
    std::fs::copy(examples_dir().join("probe"), &new).unwrap();
    let y2000 = std::time::UNIX_EPOCH + Duration::from_secs(946_684_800);
    std::fs::File::options()
        .write(true)
        .open(&new)
        .unwrap()
        .set_modified(y2000)
        .unwrap();
    std::fs::rename(&new, &f.prog).unwrap();
    // The call starts a fresh server, and runs in its setup process.
    let out = f.probe("ids", &["same"]);
    assert_ok(&out);
    assert!(ran_in_place(&out), "still the old server: {out:?}");
    let out = f.probe("ids", &["same"]);
    assert_ok(&out);
    let fresh = id(&out, "sid");
    assert_ne!(fresh, old, "still the old server");
    let exe = std::fs::read_link(format!("/proc/{fresh}/exe")).unwrap();
    assert_eq!(exe, f.prog, "the new server runs the new file");
    assert!(
        wait_until(Duration::from_secs(5), || gone(old)),
        "old server {old} still running"
    );
    assert_eq!(id(&f.probe("ids", &["same"]), "sid"), fresh);
}

#[test]
fn changing_an_extra_file_reloads() {
    let f = Fixture::example("reload-extra", "probe", Client::Ours);
    let conf = f.dir.join("probe.conf");
    let mut c = f.cmd(&["same"]);
    c.env("PROBE", "ids").env("PROBE_ALSO_CHECK", &conf);
    let old = start_probe_server(&f, c);
    assert_eq!(id(&f.probe("ids", &["same"]), "sid"), old);
    std::fs::write(&conf, "changed").unwrap();
    // A fresh server's first call: run in its setup process.
    let out = f.probe("ids", &["same"]);
    assert_ok(&out);
    assert!(
        ran_in_place(&out),
        "the old server served the call: {out:?}"
    );
    assert_ne!(id(&f.probe("ids", &["same"]), "sid"), old);
}

/// Each way of changing a watched file that leaves its modification time
/// in the past, as release tools do, still reloads: a call never runs
/// what a direct run would not.
#[test]
fn changes_with_old_modification_times_reload() {
    let f = Fixture::example("reload-old-mtime", "probe", Client::Ours);
    let conf = f.dir.join("probe.conf");
    std::fs::write(&conf, "one").unwrap();
    let touch_old = |p: &std::path::Path| {
        let st = Command::new("touch")
            .args(["-d", "2000-01-01"])
            .arg(p)
            .status()
            .unwrap();
        assert!(st.success());
    };
    touch_old(&conf);
    // Every call names the file: whichever starts a server sets it up.
    let cmd = || {
        let mut c = f.cmd(&["same"]);
        c.env("PROBE", "ids").env("PROBE_ALSO_CHECK", &conf);
        c
    };
    let call = || {
        let out = f.output(cmd());
        assert_ok(&out);
        out
    };
    let mut server = start_probe_server(&f, cmd());
    let changes: [(&str, &dyn Fn()); 3] = [
        // Rewritten in place, same size, the time set back.
        ("rewrite + touch -d", &|| {
            std::fs::write(&conf, "two").unwrap();
            touch_old(&conf);
        }),
        // An older file copied over it with its times (cp -p).
        ("cp -p", &|| {
            let older = f.dir.join("older.conf");
            std::fs::write(&older, "three!").unwrap();
            touch_old(&older);
            let st = Command::new("cp").arg("-p").arg(&older).arg(&conf).status();
            assert!(st.unwrap().success());
        }),
        // An older-dated file renamed over it (tar, mv, install).
        ("mv", &|| {
            let new = f.dir.join("new.conf");
            std::fs::write(&new, "four").unwrap();
            touch_old(&new);
            std::fs::rename(&new, &conf).unwrap();
        }),
    ];
    for (what, change) in changes {
        assert_eq!(id(&call(), "sid"), server, "{what}: warm");
        change();
        // A fresh server's first call runs in its setup process.
        let out = call();
        assert!(
            ran_in_place(&out),
            "{what}: the old server served the call: {out:?}"
        );
        let now = id(&call(), "sid");
        assert_ne!(now, server, "{what}: the old server served the call");
        server = now;
    }
}

#[test]
fn idle_server_quits() {
    let f = Fixture::example("idle", "probe", Client::Ours);
    let mut c = f.cmd(&["same"]);
    // Idle time counts from the server's start: the first call, run in
    // the setup process, is not the server's. Long enough for the second.
    c.env("PROBE", "ids").env("PROBE_IDLE_MS", "1000");
    let old = start_probe_server(&f, c);
    assert!(
        wait_until(Duration::from_secs(10), || gone(old)),
        "server {old} did not time out"
    );
    // A fresh server's first call: run in its setup process.
    let out = f.probe("ids", &["same"]);
    assert_ok(&out);
    assert!(ran_in_place(&out), "{out:?}");
    assert_ne!(id(&f.probe("ids", &["same"]), "sid"), old);
}

#[test]
fn a_first_call_run_in_place_keeps_an_idle_server() {
    let f = Fixture::example("idle-in-place", "probe", Client::Ours);
    // The cold call outlives the idle timeout: it counts as running.
    let mut c = f.cmd(&["same", "1500"]);
    c.env("PROBE", "sleep").env("PROBE_IDLE_MS", "700");
    let out = f.output(c);
    assert_ok(&out);
    assert!(ran_in_place(&out), "{out:?}");
    let warm = f.probe("ids", &["same"]);
    assert_ok(&warm);
    assert!(
        !ran_in_place(&warm),
        "the server quit while the first call ran in place: {warm:?}"
    );
}

#[test]
fn a_running_call_keeps_an_idle_server() {
    let f = Fixture::example("idle-busy", "probe", Client::Ours);
    let mut c = f.cmd(&["same"]);
    c.env("PROBE", "ids").env("PROBE_IDLE_MS", "700");
    start_probe_server(&f, c);
    let mut c = f.cmd(&["same", "1500"]);
    c.env("PROBE", "sleep");
    let out = f.output(c);
    assert_ok(&out);
    let server = id(&out, "sid");
    // The call outlived the idle timeout, but idle time counts from the
    // end of the last call.
    assert!(!gone(server), "server quit during a call");
    assert_eq!(id(&f.probe("ids", &["same"]), "sid"), server);
    assert!(wait_until(Duration::from_secs(10), || gone(server)));
}

#[test]
fn a_threaded_program_is_refused() {
    let f = Fixture::example("threads", "probe", Client::Ours);
    let mut c = f.cmd(&["same"]);
    c.env("PROBE_THREAD", "1");
    let out = f.output(c);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = text(&out.stderr);
    assert!(
        err.contains("2 threads") && err.contains("unsound"),
        "{err}"
    );
    assert!(f.processes().is_empty());
}

#[test]
fn setup_exit_status_is_passed_on() {
    let f = Fixture::example("setup-exit", "probe", Client::Ours);
    let mut c = f.cmd(&["same"]);
    c.env("PROBE_SETUP_EXIT", "9");
    assert_eq!(f.output(c).status.code(), Some(9));
}

#[test]
fn bad_clients_do_not_block_real_callers() {
    let f = Fixture::example("bad-clients", "probe", Client::Ours);
    let mut c = f.cmd(&["same"]);
    c.env("PROBE", "ids")
        .env("PROBE_MAX_SERVERS", "2")
        .env("PROBE_REQUEST_MS", "300");
    let server = start_probe_server(&f, c);
    let sock = f.socket();
    let greeted = |s: &mut UnixStream| {
        let mut g = [0u8; 8];
        s.read_exact(&mut g).unwrap();
        assert_eq!(&g, b"PFI\n\0\0\0\0");
    };
    // Connections that never send a request, more than max_servers.
    let mut idle: Vec<UnixStream> = (0..3)
        .map(|_| UnixStream::connect(&sock).unwrap())
        .collect();
    greeted(&mut idle[0]);
    // A wrong signalling byte; a hang-up half-way through a request.
    let mut bad = UnixStream::connect(&sock).unwrap();
    bad.write_all(&[1]).unwrap();
    let mut half = UnixStream::connect(&sock).unwrap();
    half.write_all(&[0]).unwrap();
    drop(half);
    let start = Instant::now();
    let out = f.probe("ids", &["same"]);
    assert_ok(&out);
    assert_eq!(id(&out, "sid"), server, "the server survived");
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "{:?}",
        start.elapsed()
    );
    // The idle connections were dropped.
    let mut buf = [0u8; 1];
    idle[0]
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    assert_eq!(idle[0].read(&mut buf).unwrap(), 0);
    assert!(wait_until(Duration::from_secs(5), || executors(server).is_empty()));
}

#[test]
fn kill_stops_the_server_and_its_calls_finish() {
    let f = Fixture::example("kill", "probe", Client::Ours);
    let server = start_probe_server(&f, f.cmd(&["same"]));
    let mut c = f.cmd(&["same", "500"]);
    c.env("PROBE", "sleep");
    let running = f.spawn(c);
    std::thread::sleep(Duration::from_millis(100));
    assert_ok(&f.run_opts(&["--kill", "-U"], &["same"]));
    // The call in progress completes with its status.
    let out = running.finish();
    assert_ok(&out);
    assert!(wait_until(Duration::from_secs(5), || gone(server)));
    assert!(f.processes().is_empty(), "{:?}", f.processes());
}

#[test]
fn c_client_and_ours_share_the_rust_server() {
    if !have_c_client() {
        eprintln!("{C_CLIENT} not installed: skipped");
        return;
    }
    let f = Fixture::example("shared", "probe", Client::C);
    let out = f.probe("ids", &["same"]);
    assert_ok(&out);
    let server = id(&out, "sid");
    // Shared: in the default run directory, as the C client.
    assert!(f.is_shared());
    let mut c = f.cmd_with(Client::Ours, &["-U"], &["same"]);
    c.env("PROBE", "ids");
    let out = f.output(c);
    assert_ok(&out);
    assert_eq!(id(&out, "sid"), server);
}

#[test]
fn pruning_keeps_100_identities_and_stops_the_oldest_servers() {
    // SPEC §3: before a new server is made, a run directory holding more
    // than 100 identities loses the least recently used (socket atime),
    // and the servers whose sockets go quit through their watchers.
    let f = Fixture::example("prune", "exit_with", Client::Ours);
    let start = |n: usize| {
        let mut c = Command::new(OURS);
        c.arg("-U")
            .arg("-G")
            .arg(format!("g{n}"))
            .arg(&f.prog)
            .arg("0");
        f.prepare(&mut c);
        c.env("PREFORK_INTERP_DEBUG", "1");
        let out = f.output(c);
        assert_ok(&out);
        let err = text(&out.stderr);
        let sock = err
            .lines()
            .find_map(|l| l.split_once("]: socket ").map(|(_, p)| p.to_string()))
            .unwrap_or_else(|| panic!("no socket in trace: {err}"));
        std::path::PathBuf::from(sock)
    };
    let mut sockets = Vec::new();
    for n in 0..=100 {
        sockets.push(start(n));
    }
    // Make g0 the least recently used, then g1, ...
    for (n, s) in sockets.iter().enumerate() {
        let t = nix::sys::time::TimeSpec::new(1_000_000 + n as i64, 0);
        nix::sys::stat::utimensat(
            nix::fcntl::AT_FDCWD,
            s,
            &t,
            &t,
            nix::sys::stat::UtimensatFlags::NoFollowSymlink,
        )
        .unwrap();
    }
    let before = f.servers().len();
    assert_eq!(before, 101, "one server per identity");
    // The 102nd identity: 101 are there, so the two oldest go.
    sockets.push(start(101));
    assert!(!sockets[0].exists() && !sockets[1].exists());
    assert!(sockets[2..].iter().all(|s| s.exists()));
    // (The servers' log, `log`, may be there too: the pruned ones say why
    // they quit.)
    let idents = std::fs::read_dir(&f.run_dir)
        .unwrap()
        .filter(|e| {
            let name = e.as_ref().unwrap().file_name();
            !name.to_string_lossy().starts_with("log")
        })
        .count();
    assert_eq!(
        idents,
        3 * 100,
        "sockets, locks and server records of 100 identities"
    );
    assert!(
        wait_until(Duration::from_secs(3), || f.servers().len() == 100),
        "pruned servers still running: {} servers",
        f.servers().len()
    );
    for n in 2..=101 {
        let mut c = Command::new(OURS);
        c.arg("--kill")
            .arg("-U")
            .arg("-G")
            .arg(format!("g{n}"))
            .arg(&f.prog)
            .arg("0");
        f.prepare(&mut c);
        assert_ok(&f.output(c));
    }
    // --kill returns once a server has closed its listener; it exits
    // right after.
    assert!(
        wait_until(Duration::from_secs(5), || f.processes().is_empty()),
        "{:?}",
        f.processes()
    );
}

/// Set the soft `RLIMIT_NOFILE` of process `pid` (the hard limit stays),
/// returning the old soft limit.
fn set_nofile(pid: i32, soft: u64) -> u64 {
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // nix has no prlimit(2) (its setrlimit is for this process only).
    // SAFETY: prlimit reads no memory when `new` is null and writes one
    // rlimit to `old`, which is valid for the call.
    let r = unsafe { libc::prlimit(pid, libc::RLIMIT_NOFILE, std::ptr::null(), &mut old) };
    assert_eq!(r, 0, "prlimit {pid}: {}", std::io::Error::last_os_error());
    let new = libc::rlimit {
        rlim_cur: soft,
        rlim_max: old.rlim_max,
    };
    // SAFETY: prlimit reads one rlimit from `new`, valid for the call,
    // and writes nothing when `old` is null.
    let r = unsafe { libc::prlimit(pid, libc::RLIMIT_NOFILE, &new, std::ptr::null_mut()) };
    assert_eq!(r, 0, "prlimit {pid}: {}", std::io::Error::last_os_error());
    old.rlim_cur
}

/// The `n`th lowest fd number `pid` has free (from 1).
fn nth_free_fd(pid: i32, n: usize) -> u64 {
    let used = fds(pid);
    (0..).filter(|n| !used.contains(n)).nth(n - 1).unwrap() as u64
}

/// The lowest fd number `pid` has free.
fn lowest_free_fd(pid: i32) -> u64 {
    let used = fds(pid);
    (0..).find(|n| !used.contains(n)).unwrap() as u64
}

/// A probe server keeping `pool` spares, idle (those spares forked, every
/// executor reaped): its pid.
fn idle_probe_server(f: &Fixture, pool: usize) -> i32 {
    let mut c = f.cmd(&["same"]);
    c.env("PROBE_POOL", pool.to_string());
    let server = start_probe_server(f, c);
    assert!(
        wait_until(Duration::from_secs(5), || at_rest(server, pool)),
        "server children: {:?}",
        children(server)
    );
    // Wait until the server's fds have settled (a call's socket is closed
    // just after its executor is reaped), so the tests' fd arithmetic
    // holds.
    let mut last = fd_count(server);
    assert!(
        wait_until(Duration::from_secs(5), || {
            std::thread::sleep(Duration::from_millis(100));
            let now = fd_count(server);
            std::mem::replace(&mut last, now) == now
        }),
        "server {server}'s fds never settled"
    );
    server
}

// `Options::max_errors` (default 100): a server that fails to accept or
// fork a call that many times in a row, pausing 100 ms after each
// failure, quits rather than fail every caller forever. The failures are
// provoked by lowering the running server's RLIMIT_NOFILE from outside
// (prlimit(2)), so the probe needs no option for it.

#[test]
fn a_server_that_cannot_accept_quits_after_max_errors() {
    let f = Fixture::example("max-errors-accept", "probe", Client::Ours);
    let server = idle_probe_server(&f, prefork_interp::server::DEFAULT_POOL_SIZE);
    // No fd can be allocated: accept fails with EMFILE and leaves the
    // caller in the queue, so each turn of the loop fails again.
    set_nofile(server, lowest_free_fd(server));
    let start = Instant::now();
    let mut c = f.cmd(&["same"]);
    c.env("PROBE", "ids");
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    let caller = Running::spawn(c, Duration::from_secs(60));
    std::thread::sleep(Duration::from_secs(2));
    assert!(!gone(server), "server quit after a few failures");
    // When it quits, the caller's connection is reset: it starts a fresh
    // server and its call succeeds.
    let out = caller.finish();
    let elapsed = start.elapsed();
    assert_ok(&out);
    assert_ne!(id(&out, "sid"), server);
    assert!(
        wait_until(Duration::from_secs(5), || gone(server)),
        "server {server} still running"
    );
    // 101 failures, 100 pauses of 100 ms.
    assert!(elapsed >= Duration::from_secs(10), "{elapsed:?}");
}

/// Make a whole v1 call on `sock` as a caller would (`PROBE=ids`): was
/// it served (a status came back), or dropped (a hang-up)?
fn served(sock: &std::path::Path) -> bool {
    raw_call(sock, &probe_request(vec!["PROBE=ids".into()])).is_some()
}

#[test]
fn a_server_that_cannot_fork_quits_after_max_errors_in_a_row() {
    let f = Fixture::example("max-errors-fork", "probe", Client::Ours);
    // No spares, so each call forks its executor.
    let server = idle_probe_server(&f, 0);
    let sock = f.socket();
    // Four fds free: the connection and the caller's three stdio fds fit,
    // and the fork's thread check (it reads /proc/self/task) fails; the
    // call is dropped, the caller sees a hang-up.
    let free = lowest_free_fd(server);
    let room = nth_free_fd(server, 4) + 1;
    let old = set_nofile(server, room);
    for i in 0..50 {
        assert!(!served(&sock), "call {i} was served");
    }
    // A success resets the count.
    set_nofile(server, old);
    let out = f.probe("ids", &["same"]);
    assert_ok(&out);
    assert_eq!(id(&out, "sid"), server);
    assert!(wait_until(Duration::from_secs(5), || at_rest(server, 0)));
    assert_eq!(lowest_free_fd(server), free);
    set_nofile(server, room);
    // 100 more failures in a row (150 in all): still serving.
    for i in 0..100 {
        assert!(!served(&sock), "call {i} was served");
    }
    assert!(!gone(server), "server quit before {} failures", 101);
    // The 101st: it quits.
    assert!(!served(&sock));
    assert!(
        wait_until(Duration::from_secs(5), || gone(server)),
        "server {server} still running after 101 failures in a row"
    );
    // The next caller starts a fresh server.
    let out = f.probe("ids", &["same"]);
    assert_ok(&out);
    assert_ne!(id(&out, "sid"), server);
}
