//! How the Rust server takes calls in (protocol.md §4.1): only its own
//! uid, idle connections cost real callers nothing, requests are bounded
//! and cost memory in proportion, and a killed monitor takes its call
//! with it. Run with the probe example through our client, and with raw
//! protocol clients (`prefork_interp::protocol::Call`) for what no real
//! client sends.

mod common;

use std::io::Read;
use std::os::fd::AsFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use common::users::TempUser;
use common::*;
use prefork_interp::protocol::{Call, MAX_REQUEST_LEN};

/// A probe server, started by a call and called once more: (its pid, its
/// socket).
fn probe_server(f: &Fixture, max_servers: usize) -> (i32, std::path::PathBuf) {
    let mut c = f.cmd(&["same"]);
    c.env("PROBE", "ids")
        .env("PROBE_MAX_SERVERS", max_servers.to_string());
    (start_probe_server(f, c), f.socket())
}

/// The median of five timed real calls.
fn median_call(f: &Fixture) -> Duration {
    let mut times: Vec<Duration> = (0..5)
        .map(|_| {
            let start = Instant::now();
            assert_ok(&f.probe("ids", &["same"]));
            start.elapsed()
        })
        .collect();
    times.sort();
    times[2]
}

/// `VmHWM` (peak resident memory) of `pid`, in bytes.
fn peak_rss(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM");
    kb * 1024
}

#[test]
fn a_caller_of_another_uid_is_refused_without_a_greeting() {
    let Some(user) = TempUser::create("a_caller_of_another_uid_is_refused_without_a_greeting")
    else {
        return;
    };
    let f = Fixture::example("intake-uid", "probe", Client::Ours);
    let (server, sock) = probe_server(&f, 4);
    // The misconfiguration the check defends against: the socket open to
    // everyone.
    for dir in [&f.dir, &f.run_dir] {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o777)).unwrap();
    let script = "import socket, sys\n\
        s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.settimeout(10)\n\
        print(repr(s.recv(8)))\n";
    let mut c = user.command("python3");
    c.args(["-c", script]).arg(&sock);
    let out = run_within(c, LIMIT);
    assert_ok(&out);
    assert_eq!(text(&out.stdout), "b''\n", "the other uid was greeted");
    // The server is unharmed and still serves its own uid.
    let out = f.probe("ids", &["same"]);
    assert_ok(&out);
    assert_eq!(id(&out, "sid"), server);
}

#[test]
fn fifty_idle_connections_cost_a_real_call_nothing() {
    let f = Fixture::example("intake-idle", "probe", Client::Ours);
    let (server, sock) = probe_server(&f, 2);
    let before = median_call(&f);
    // 25 connect and send nothing; 25 send half a request.
    let idle: Vec<UnixStream> = (0..50)
        .map(|i| {
            let s = UnixStream::connect(&sock).unwrap();
            if i % 2 == 1 {
                std::io::Write::write_all(&mut &s, &[0]).unwrap();
            }
            s
        })
        .collect();
    let during = median_call(&f);
    eprintln!("median call: {before:?} alone, {during:?} with 50 idle connections");
    assert!(
        during < before + Duration::from_millis(50),
        "{during:?} with idle connections, {before:?} without"
    );
    assert!(
        executors(server).is_empty(),
        "idle connections got executors"
    );
    drop(idle);
}

#[test]
fn beyond_64_connections_the_oldest_idle_one_makes_room() {
    let f = Fixture::example("intake-many", "probe", Client::Ours);
    let (server, sock) = probe_server(&f, 2);
    let mut idle: Vec<UnixStream> = (0..70)
        .map(|_| UnixStream::connect(&sock).unwrap())
        .collect();
    let out = f.probe("ids", &["same"]);
    assert_ok(&out);
    assert_eq!(id(&out, "sid"), server);
    // The first ones were greeted, then dropped for newcomers.
    let mut buf = [0u8; 16];
    idle[0].set_read_timeout(Some(LIMIT)).unwrap();
    let mut got = Vec::new();
    loop {
        match idle[0].read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => panic!("the oldest connection was kept: {e}"),
        }
    }
    assert_eq!(got, b"PFI\n\0\0\0\0");
}

#[test]
fn an_overlong_length_is_refused_at_once() {
    let f = Fixture::example("intake-long", "probe", Client::Ours);
    let (server, sock) = probe_server(&f, 4);
    let s = UnixStream::connect(&sock).unwrap();
    s.set_read_timeout(Some(LIMIT)).unwrap();
    let mut call = Call::new(s);
    call.read_greeting().unwrap();
    let null = std::fs::File::open("/dev/null").unwrap();
    let d = null.as_fd();
    // The stdio part of a request, then a length one over the limit.
    let big = probe_request(vec![
        std::ffi::OsString::from("A=").to_owned();
        (MAX_REQUEST_LEN as usize) / 3 + 1
    ]);
    let start = Instant::now();
    let sent = call.send_request([d, d, d], &big);
    // The server closes as soon as it has read the length: the body
    // cannot all be sent, or the status read fails.
    assert!(sent.is_err() || call.read_status().is_err());
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    let out = f.probe("ids", &["same"]);
    assert_ok(&out);
    assert_eq!(id(&out, "sid"), server, "the server survived");
}

#[test]
fn a_maximal_request_is_served_in_proportionate_memory() {
    let f = Fixture::example("intake-max", "probe", Client::Ours);
    let (server, sock) = probe_server(&f, 4);
    let before = peak_rss(server);
    // `PROBE=env` and 2-byte entries filling the body to the limit: the
    // arguments (12 bytes with the separator) and `PROBE=env\0` (10) leave
    // a multiple of 3.
    let n = MAX_REQUEST_LEN as usize;
    let fill = (n - 12 - 10) / 3;
    assert_eq!(12 + 10 + 3 * fill, n);
    let mut env = vec![std::ffi::OsString::from("PROBE=env")];
    env.extend(std::iter::repeat_n(std::ffi::OsString::from("A="), fill));
    let req = probe_request(env);
    assert_eq!(req.encode_body().len(), n);
    let start = Instant::now();
    let status = raw_call(&sock, &req).expect("served");
    assert_eq!(status, 0, "wait status");
    let grew = peak_rss(server).saturating_sub(before);
    eprintln!(
        "a {n}-byte request: served in {:?}; the server's peak memory grew {grew} bytes",
        start.elapsed()
    );
    assert!(
        grew <= 3 * n as u64,
        "server peak grew by {grew} for {n} bytes"
    );
    // One byte more is refused, and the server goes on.
    let mut env = req.env.clone();
    env.push("B".into());
    assert_eq!(raw_call(&sock, &probe_request(env)), None);
    assert_eq!(
        raw_call(&sock, &probe_request(vec!["PROBE=ids".into()])),
        Some(0)
    );
}

#[test]
fn killing_the_server_kills_its_calls_and_spares() {
    let f = Fixture::example("intake-kill", "probe", Client::Ours);
    let (server, _) = probe_server(&f, 4);
    let mut c = f.cmd(&["same", "20000"]);
    c.env("PROBE", "sleep");
    let mut running = f.spawn(c);
    let executor: i32 = running
        .line()
        .split_whitespace()
        .find_map(|w| w.strip_prefix("pid=")?.parse().ok())
        .expect("the call's pid");
    // The server watches the call itself: no monitor in between.
    assert_eq!(proc_stat(executor).expect("executor running").1, server);
    let spares: Vec<i32> = children(server)
        .into_iter()
        .map(|(p, _)| p)
        .filter(|&p| p != executor)
        .collect();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(server),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    assert!(
        wait_until(Duration::from_secs(1), || gone(executor)),
        "the call outlived its server"
    );
    for spare in spares {
        assert!(
            wait_until(Duration::from_secs(1), || gone(spare)),
            "spare [{spare}] outlived its server"
        );
    }
    let out = running.finish();
    assert_eq!(out.status.code(), Some(127), "{}", text(&out.stderr));
}

/// Steps 2 and 3 of a call by hand (the signalling byte, then three fds
/// of /dev/null), after reading the greeting.
fn send_preamble(s: &UnixStream) {
    use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
    use std::os::fd::AsRawFd;
    let mut g = [0u8; 8];
    (&*s).read_exact(&mut g).unwrap();
    std::io::Write::write_all(&mut &*s, &[0]).unwrap();
    let null = std::fs::File::open("/dev/null").unwrap();
    for _ in 0..3 {
        sendmsg::<()>(
            s.as_raw_fd(),
            &[std::io::IoSlice::new(&[0])],
            &[ControlMessage::ScmRights(&[null.as_raw_fd()])],
            MsgFlags::empty(),
            None,
        )
        .unwrap();
    }
}

#[test]
fn a_quitting_server_still_serves_the_calls_it_holds() {
    let f = Fixture::example("intake-drain", "probe", Client::Ours);
    let (server, sock) = probe_server(&f, 1);
    // A: a call that takes the only slot for a while.
    let mut c = f.cmd(&["same", "1500"]);
    c.env("PROBE", "sleep");
    let mut a = f.spawn(c);
    a.line();
    // B: a complete call, waiting for the slot.
    let b = {
        let sock = sock.clone();
        std::thread::spawn(move || raw_call(&sock, &probe_request(vec!["PROBE=exit".into()])))
    };
    // C: half a request so far.
    let c_sock = UnixStream::connect(&sock).unwrap();
    c_sock.set_read_timeout(Some(LIMIT)).unwrap();
    send_preamble(&c_sock);
    std::thread::sleep(Duration::from_millis(200));
    // --kill: the socket goes, the server quits taking calls at once.
    assert_ok(&f.run_opts(&["--kill", "-U"], &["same"]));
    assert!(UnixStream::connect(&sock).is_err(), "still listening");
    // C finishes its request; everyone is served.
    let body = probe_request(vec!["PROBE=exit".into()]).encode_body();
    let mut msg = (body.len() as u32).to_be_bytes().to_vec();
    msg.extend_from_slice(&body);
    std::io::Write::write_all(&mut &c_sock, &msg).unwrap();
    let mut status = [0u8; 4];
    (&c_sock).read_exact(&mut status).expect("C served");
    assert_eq!(u32::from_be_bytes(status), 0);
    assert_eq!(join_within(b, LIMIT), Some(0), "B served");
    assert_ok(&a.finish());
    assert!(
        wait_until(Duration::from_secs(5), || gone(server)),
        "server {server} still running"
    );
}
