//! `prefork-interp --list`, `--kill-all` and what `--kill` says, against
//! real servers of our Rust and Python libraries (and the Perl library's,
//! when it records itself), in a private run directory.

mod common;

use std::os::unix::net::UnixListener;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use common::*;

/// Our client with only this fixture's surroundings (run directory, home).
fn admin(f: &Fixture, args: &[&str]) -> Output {
    let mut c = Command::new(OURS);
    c.args(args);
    f.prepare(&mut c);
    run_within(c, LIMIT)
}

/// The `--list` table's rows (without the header), each split in words.
fn table_rows(out: &Output) -> Vec<Vec<String>> {
    assert_ok(out);
    text(&out.stdout)
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .collect()
}

const PY_SCRIPT: &str = "import prefork_interp\nprefork_interp.initialisation_complete()\n";

fn python_fixture(tag: &str) -> Fixture {
    Fixture::script(tag, "served.py", PY_SCRIPT, "python3", false)
}

fn python_path() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("python")
        .display()
        .to_string()
}

#[test]
fn list_shows_every_live_server_and_cleans_stale_entries() {
    let f = Fixture::example("list", "exit_with", Client::Ours);
    // Two identities of the Rust example (-G), one of a Python script in
    // the same run directory.
    for (g, calls) in [("one", 3), ("two", 1)] {
        for _ in 0..calls {
            assert_ok(&f.output(f.cmd_opts(&["-U", "-G", g], &["0"])));
        }
    }
    let mut py = python_fixture("list-py");
    py.run_dir = f.run_dir.clone();
    for _ in 0..2 {
        let mut c = py.cmd(NONE);
        c.env("PYTHONPATH", python_path());
        assert_ok(&py.output(c));
    }
    // A stale entry: a socket nobody listens on, with its lock.
    let stale = f.run_dir.join("sdeadbeef");
    drop(UnixListener::bind(&stale).unwrap());
    std::fs::write(f.run_dir.join("ldeadbeef"), "").unwrap();

    // The calls have ended; the servers' lines say so once reaped.
    let settled = || {
        let rows = table_rows(&admin(&f, &["--list"]));
        rows.len() == 3 && rows.iter().all(|r| r[4] == "0")
    };
    assert!(
        wait_until(Duration::from_secs(5), settled),
        "{}",
        text(&admin(&f, &["--list"]).stdout)
    );
    let out = admin(&f, &["--list"]);
    let table = text(&out.stdout);
    let rows = table_rows(&out);
    assert!(table.starts_with("IDENT "), "{table}");
    let mut by_lib: Vec<(String, String)> =
        rows.iter().map(|r| (r[2].clone(), r[3].clone())).collect();
    by_lib.sort();
    assert_eq!(
        by_lib,
        [
            ("python".to_string(), "2".to_string()),
            ("rust".into(), "1".into()),
            ("rust".into(), "3".into())
        ],
        "{table}"
    );
    for r in &rows {
        let pid: i32 = r[1].parse().unwrap_or_else(|_| panic!("pid in {table}"));
        assert!(!gone(pid), "{pid} listed but gone: {table}");
    }
    assert!(
        table.contains(&format!("{} (python3)", py.prog.display())),
        "{table}"
    );
    assert!(!stale.exists(), "stale socket left");
    assert!(!f.run_dir.join("ldeadbeef").exists(), "stale lock left");

    // The same as JSON: one object per server, the same pids.
    let json = text(&admin(&f, &["--list", "--json"]).stdout);
    assert!(
        json.trim_start().starts_with('[') && json.trim_end().ends_with(']'),
        "{json}"
    );
    assert_eq!(json.matches("\"ident\": ").count(), 3, "{json}");
    for r in &rows {
        assert!(json.contains(&format!("\"pid\": {}", r[1])), "{json}");
    }
    assert!(json.contains("\"library\": \"python\""), "{json}");

    // --kill-all stops them all and leaves nothing in the run directory.
    let pids: Vec<i32> = rows.iter().map(|r| r[1].parse().unwrap()).collect();
    assert_ok(&admin(&f, &["--kill-all"]));
    for pid in pids {
        assert!(
            wait_until(Duration::from_secs(5), || gone(pid)),
            "{pid} still running"
        );
    }
    assert!(table_rows(&admin(&f, &["--list"])).is_empty());
    // (The servers' log stays: it said why each quit.)
    let left: Vec<_> = std::fs::read_dir(&f.run_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n != "log")
        .collect();
    assert!(left.is_empty(), "left in the run directory: {left:?}");
}

#[test]
fn kill_says_when_there_was_no_server() {
    let f = Fixture::example("kill-none", "exit_with", Client::Ours);
    let out = f.output(f.cmd_opts(&["--kill", "-U"], &["0"]));
    assert_eq!(out.status.code(), Some(0));
    let err = text(&out.stderr);
    assert!(err.contains("no server to stop for this script"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    // With one running: quiet.
    assert_ok(&f.run(&["0"]));
    let out = f.output(f.cmd_opts(&["--kill", "-U"], &["0"]));
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(text(&out.stderr), "");
}

#[test]
fn list_and_kill_all_take_no_other_argument() {
    let f = Fixture::example("list-args", "exit_with", Client::Ours);
    for args in [
        &["--list", "x"][..],
        &["--kill-all", "-U", "prog"],
        &["--json"],
        &["--list=1"],
        &["-U,--list,python3", "s"],
    ] {
        let out = admin(&f, args);
        assert_eq!(out.status.code(), Some(127), "{args:?}: {out:?}");
        assert_eq!(text(&out.stderr).lines().count(), 1, "{args:?}: {out:?}");
    }
    // An empty (or missing) run directory lists nothing.
    assert_eq!(text(&admin(&f, &["--list"]).stdout).lines().count(), 1);
    assert_eq!(text(&admin(&f, &["--list", "--json"]).stdout), "[]\n");
    assert_ok(&admin(&f, &["--kill-all"]));
}

/// Every live process of this run directory's servers, with its command
/// line: watchers, servers, spares (not the test's own).
fn daemons_showing(needle: &str, f: &Fixture) -> Vec<(i32, String)> {
    f.belonging()
        .into_iter()
        .chain(all_pids().into_iter().filter(|&p| {
            cmdline(p)
                .first()
                .is_some_and(|a| a.as_encoded_bytes().starts_with(b"prefork-interp "))
        }))
        .filter_map(|p| {
            let args = cmdline(p);
            let line = args
                .iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join(" ");
            line.contains(needle).then_some((p, line))
        })
        .collect()
}

#[test]
fn no_long_lived_process_shows_a_callers_arguments() {
    let secret = "--password=hunter2-titles";
    // Rust: the program is the "interpreter"; Python: a script.
    let rust = Fixture::example("titles", "exit_with", Client::Ours);
    let mut py = python_fixture("titles-py");
    py.run_dir = rust.run_dir.clone();
    assert_ok(&rust.run(&["0", secret]));
    assert_ok(&rust.run(&["0", secret]));
    for _ in 0..2 {
        let mut c = py.cmd(&[secret]);
        c.env("PYTHONPATH", python_path());
        assert_ok(&py.output(c));
    }
    let list = admin(&rust, &["--list", "--json"]);
    let pids: Vec<i32> = text(&list.stdout)
        .split("\"pid\": ")
        .skip(1)
        .filter_map(|s| s.split(',').next()?.parse().ok())
        .collect();
    assert_eq!(pids.len(), 2, "{}", text(&list.stdout));
    // Servers and their spares show titles; so do the watchers.
    let settled = || {
        pids.iter().all(|&p| {
            let title = cmdline(p);
            title.len() == 1
                && title[0]
                    .as_encoded_bytes()
                    .starts_with(b"prefork-interp server: ")
        })
    };
    assert!(wait_until(Duration::from_secs(5), settled));
    for &server in &pids {
        assert!(
            wait_until(Duration::from_secs(5), || spares(server).len() == 2),
            "{server}"
        );
        for spare in spares(server) {
            let title = cmdline(spare);
            assert!(
                title[0]
                    .as_encoded_bytes()
                    .starts_with(b"prefork-interp spare: "),
                "{title:?}"
            );
        }
    }
    let showing = daemons_showing("hunter2", &rust);
    assert!(
        showing.is_empty(),
        "a caller's argument shows in: {showing:?}"
    );
    let watchers = daemons_showing("prefork-interp watcher: ", &rust);
    assert!(watchers.len() >= 2, "{watchers:?}");
    assert_ok(&admin(&rust, &["--kill-all"]));
}

/// Make the server at `sock` log a warning: a caller that breaks the
/// protocol (its signalling byte is not 0) is dropped, and said so.
fn provoke_a_warning(sock: &Path) {
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(sock).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut greeting = [0u8; 8];
    s.read_exact(&mut greeting).unwrap();
    s.write_all(&[7]).unwrap();
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
}

#[test]
fn messages_go_to_the_run_directory_log_and_the_last_error_to_the_record() {
    // The probe has syslog off: its messages go to the run directory's log.
    let f = Fixture::example("log-default", "probe", Client::Ours);
    let server = start_probe_server(&f, f.cmd(&["same"]));
    provoke_a_warning(&f.socket());
    let log = f.run_dir.join("log");
    let logged = || std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        wait_until(Duration::from_secs(5), || logged()
            .contains("dropped a call")),
        "{}",
        logged()
    );
    let line = logged().lines().next().unwrap().to_string();
    // 2026-11-28T23:50:01 probe[4242] warning: dropped a call: ...
    let words: Vec<&str> = line.split(' ').collect();
    assert_eq!(words[0].len(), 19, "{line}");
    assert_eq!(words[1], format!("probe[{server}]"), "{line}");
    assert_eq!(words[2], "warning:", "{line}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&log).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let list = text(&admin(&f, &["--list"]).stdout);
    assert!(list.contains("last error ("), "{list}");
    assert!(list.contains("signalling byte"), "{list}");
    let json = text(&admin(&f, &["--list", "--json"]).stdout);
    assert!(json.contains("\"last_error\": \"dropped a call"), "{json}");
}

#[test]
fn prefork_interp_log_names_the_log_file() {
    let f = Fixture::example("log-env", "probe", Client::Ours);
    let file = f.dir.join("server.log");
    let mut c = f.cmd(&["same"]);
    c.env("PREFORK_INTERP_LOG", &file);
    start_probe_server(&f, c);
    provoke_a_warning(&f.socket());
    assert!(
        wait_until(Duration::from_secs(5), || {
            std::fs::read_to_string(&file).is_ok_and(|t| t.contains("dropped a call"))
        }),
        "nothing in {}",
        file.display()
    );
    assert!(
        !f.run_dir.join("log").exists(),
        "the run directory's log too"
    );
}

#[test]
fn a_failed_setup_is_shown_to_the_next_caller() {
    let f = Fixture::example("setup-fails", "probe", Client::Ours);
    let mut c = f.cmd(&["same"]);
    c.env("PROBE_SETUP_EXIT", "3");
    assert_eq!(f.output(c).status.code(), Some(3));
    let mut c = f.cmd(&["same"]);
    c.env("PREFORK_INTERP_DEBUG", "1").env("PROBE", "ids");
    let out = f.output(c);
    assert_ok(&out);
    let err = text(&out.stderr);
    assert!(
        err.contains("the previous server's last error (") && err.contains("wait status 0x300"),
        "{err}"
    );
}
