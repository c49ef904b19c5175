//! This user's servers as a whole: the record a client writes when it
//! starts one (`m<IDENT>`, protocol.md §8), `--list` and `--kill-all`.
//!
//! A server is found by its socket, `s<IDENT>`, in the run directory. It is
//! live if a connection to it is accepted (the connection is then closed
//! at once: a server drops a caller that sends nothing, protocol.md §4.1);
//! a socket nobody listens on is stale, and is removed with the lock and
//! records of its identity, under that lock, as pruning does. The record
//! says what the server runs and, through the line the server keeps in
//! it, its pid, calls and last call; memory is read from `/proc`. A server
//! with no record (started by the C client, or by a library that does not
//! know `record1`) is listed with its identity alone.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

use nix::fcntl::OFlag;
use nix::sys::stat::Mode as FileMode;

use super::cli::Command;
use super::rundir::{Lock, RunDir};
use super::{Names, exit_status::Outcome};
use crate::error::{Error, Result};
use crate::record::{self, Record};

/// The record's name in the run directory.
pub(super) fn record_name(ident: &str) -> String {
    format!("m{ident}")
}

/// Write the record of a server about to start, under the identity's
/// lock: a new file renamed into place. Returns its path, for the server
/// (`record1`), or `None` if it cannot be made (the server then starts
/// without one; `--list` shows less of it).
pub(super) fn create_record(dir: &RunDir, names: &Names, cmd: &Command) -> Option<PathBuf> {
    let name = record_name(&names.ident);
    let tmp = format!("t{}.{}.m", names.ident, std::process::id());
    let made = (|| -> Result<()> {
        let fd = dir
            .open_at(
                &tmp,
                OFlag::O_RDWR | OFlag::O_CREAT | OFlag::O_TRUNC | OFlag::O_CLOEXEC,
                FileMode::from_bits_truncate(0o600),
            )
            .map_err(|e| Error::io(format!("create {}", dir.shown(&tmp)), e))?;
        let cwd = std::env::current_dir().unwrap_or_default();
        let script = cmd.script.as_ref().map(|s| cwd.join(s));
        let started = crate::sys::unix_now().to_string();
        let args = cmd
            .interpreter_args
            .iter()
            .map(|a| a.as_bytes())
            .collect::<Vec<_>>()
            .join(&b' ');
        let mut items: Vec<(&str, &OsStr)> = vec![
            ("ident", OsStr::new(&names.ident)),
            ("interpreter", &cmd.interpreter),
            ("interpreter_args", OsStr::from_bytes(&args)),
        ];
        if let Some(binary) = &names.binary {
            items.push(("binary", binary.as_os_str()));
        }
        if let Some(script) = &script {
            items.push(("script", script.as_os_str()));
        }
        items.push(("cwd", cwd.as_os_str()));
        items.push(("started", OsStr::new(&started)));
        let text = record::client_part(&items);
        let n = nix::unistd::write(&fd, &text)
            .map_err(|e| Error::io(format!("write {}", dir.shown(&tmp)), e))?;
        if n != text.len() {
            return Err(Error::msg(format!("short write to {}", dir.shown(&tmp))));
        }
        dir.rename(&tmp, &name)
    })();
    match made {
        Ok(()) => Some(dir.path.join(&name)),
        Err(e) => {
            let _ = dir.remove(&tmp, "remove");
            super::debug(|| format!("no server record: {e}"));
            None
        }
    }
}

/// Before a new server replaces it: say what the last one's record says
/// of its end (`PREFORK_INTERP_DEBUG`).
pub(super) fn report_previous(dir: &RunDir, ident: &str) {
    if let Some((at, msg)) = read_record(dir, ident).as_ref().and_then(last_error) {
        super::debug(|| {
            format!(
                "the previous server's last error ({}): {msg}",
                crate::sys::local_time(at)
            )
        });
    }
}

/// Record that the setup process failed (protocol.md §8): the next
/// caller's `PREFORK_INTERP_DEBUG` and `--list` show it.
pub(super) fn note_setup_failure(dir: &RunDir, ident: &str, what: &str) {
    let Ok(fd) = dir.open_at(
        &record_name(ident),
        OFlag::O_WRONLY | OFlag::O_APPEND | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW,
        FileMode::empty(),
    ) else {
        return;
    };
    let line = format!(
        "error={} {}\n",
        crate::sys::unix_now(),
        record::escape(what.as_bytes())
    );
    let _ = nix::unistd::write(&fd, line.as_bytes());
}

/// A record's last error: when, and what.
fn last_error(record: &Record) -> Option<(i64, String)> {
    let text = String::from_utf8_lossy(record.get("error")?).into_owned();
    let (at, msg) = text.split_once(' ')?;
    Some((at.parse().ok()?, msg.to_string()))
}

/// One live server, as `--list` shows it.
#[derive(Debug, Default)]
struct Listed {
    ident: String,
    record: Option<Record>,
    /// The server's pid, if its record names a live process that is it.
    pid: Option<i32>,
    /// PSS of the server and its children (spares, forker, running calls),
    /// KiB.
    pss_kib: Option<u64>,
}

impl Listed {
    fn item(&self, key: &str) -> Option<String> {
        let value = self.record.as_ref()?.get(key)?;
        Some(String::from_utf8_lossy(value).into_owned())
    }

    fn server(&self) -> Option<&record::ServerLine> {
        self.pid?;
        self.record.as_ref()?.server.as_ref()
    }
}

/// The identities in the run directory that have a socket.
fn socket_idents(dir: &RunDir) -> Result<Vec<String>> {
    let mut idents: Vec<String> = dir
        .names()?
        .into_iter()
        .filter_map(|n| Some(n.to_str()?.strip_prefix('s')?.to_string()))
        .filter(|i| !i.is_empty())
        .collect();
    idents.sort();
    Ok(idents)
}

/// Is a server listening at `s<ident>`? A socket that refuses (or has
/// gone) is not; any other failure is an error.
fn listening(dir: &RunDir, ident: &str) -> Result<bool> {
    let name = format!("s{ident}");
    match UnixStream::connect(dir.via_fd(&name)) {
        Ok(_) => Ok(true),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            Ok(false)
        }
        Err(e) => Err(Error::io(format!("connect {}", dir.shown(&name)), e)),
    }
}

/// Remove what is left of a dead server at `ident`, under its lock, if no
/// server has come up there meanwhile.
fn clean_stale(dir: &RunDir, ident: &str) -> Result<()> {
    let _lock = Lock::acquire(dir, &format!("l{ident}"))?;
    if listening(dir, ident)? {
        return Ok(());
    }
    dir.remove_identity(ident)
}

/// The live servers, stale ones cleaned on the way.
fn live_servers(dir: &RunDir) -> Result<Vec<Listed>> {
    let mut listed = Vec::new();
    for ident in socket_idents(dir)? {
        if !listening(dir, &ident)? {
            clean_stale(dir, &ident)?;
            continue;
        }
        let record = read_record(dir, &ident);
        let pid = record
            .as_ref()
            .and_then(|r| r.server.as_ref())
            .filter(|s| s.pid > 0 && record::start_ticks(&s.pid.to_string()) == s.start_ticks)
            .map(|s| s.pid);
        let pss_kib = pid.map(family_pss_kib);
        listed.push(Listed {
            ident,
            record,
            pid,
            pss_kib,
        });
    }
    Ok(listed)
}

fn read_record(dir: &RunDir, ident: &str) -> Option<Record> {
    let fd = dir
        .open_at(
            &record_name(ident),
            OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
            FileMode::empty(),
        )
        .ok()?;
    let mut file = std::fs::File::from(fd);
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut std::io::Read::take(&mut file, 1 << 20), &mut bytes).ok()?;
    Record::parse(&bytes)
}

/// PSS in KiB of `pid` and its children (the server's spares, forker and
/// calls).
fn family_pss_kib(pid: i32) -> u64 {
    let children =
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    std::iter::once(pid.to_string())
        .chain(children.split_whitespace().map(str::to_string))
        .filter_map(|p| pss_kib(&p))
        .sum()
}

fn pss_kib(pid: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("Pss:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// `--list`: one line per live server (or a JSON array).
pub(super) fn list(json: bool) -> Result<Outcome> {
    let dir = RunDir::open()?;
    let servers = live_servers(&dir)?;
    let text = if json {
        as_json(&servers)
    } else {
        as_table(&servers, crate::sys::unix_now())
    };
    super::print_stdout(&text, "the list of servers")
}

fn as_table(servers: &[Listed], now: i64) -> String {
    let mut out = format!(
        "{:<12} {:>7} {:<6} {:>6} {:>4} {:>7} {:<16} {:>9}  {}\n",
        "IDENT",
        "PID",
        "LIB",
        "CALLS",
        "RUN",
        "PSS",
        "STARTED",
        "LAST CALL",
        "SCRIPT (INTERPRETER) IN CWD"
    );
    for s in servers {
        let server = s.server();
        let dash = || "-".to_string();
        let started = s
            .item("started")
            .and_then(|t| t.parse::<i64>().ok())
            .map_or_else(dash, crate::sys::local_time);
        let last = server
            .filter(|l| l.last_call > 0)
            .map_or_else(dash, |l| ago(now - l.last_call));
        let what = match (s.item("script"), s.item("interpreter")) {
            (Some(script), Some(interp)) => format!("{script} ({interp})"),
            (None, Some(interp)) => format!("({interp})"),
            _ => "(no record: started by another client?)".to_string(),
        };
        let cwd = s
            .item("cwd")
            .map_or_else(String::new, |c| format!(" in {c}"));
        out.push_str(&format!(
            "{:<12} {:>7} {:<6} {:>6} {:>4} {:>7} {:<16} {:>9}  {what}{cwd}\n",
            &s.ident[..s.ident.len().min(12)],
            s.pid.map_or_else(dash, |p| p.to_string()),
            server.map_or_else(dash, |l| l.library.clone()),
            server.map_or_else(dash, |l| l.calls.to_string()),
            server.map_or_else(dash, |l| l.running.to_string()),
            s.pss_kib.map_or_else(dash, human_kib),
            started,
            last,
        ));
        if let Some((at, msg)) = s.record.as_ref().and_then(last_error) {
            out.push_str(&format!(
                "{:12} last error ({}): {msg}\n",
                "",
                crate::sys::local_time(at)
            ));
        }
    }
    out
}

fn ago(secs: i64) -> String {
    match secs.max(0) {
        s if s < 120 => format!("{s}s ago"),
        s if s < 7200 => format!("{}m ago", s / 60),
        s if s < 172_800 => format!("{}h ago", s / 3600),
        s => format!("{}d ago", s / 86_400),
    }
}

fn human_kib(kib: u64) -> String {
    match kib {
        k if k < 10 * 1024 => format!("{:.1}M", k as f64 / 1024.0),
        k if k < 1024 * 1024 => format!("{}M", k / 1024),
        k => format!("{:.1}G", k as f64 / (1024.0 * 1024.0)),
    }
}

fn json_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn as_json(servers: &[Listed]) -> String {
    let opt_str = |v: Option<String>| v.map_or_else(|| "null".to_string(), |s| json_string(&s));
    let opt_num = |v: Option<String>| v.unwrap_or_else(|| "null".to_string());
    let items: Vec<String> = servers
        .iter()
        .map(|s| {
            let server = s.server();
            let error = s.record.as_ref().and_then(last_error);
            let fields = [
                ("ident", json_string(&s.ident)),
                ("pid", opt_num(s.pid.map(|p| p.to_string()))),
                ("library", opt_str(server.map(|l| l.library.clone()))),
                ("script", opt_str(s.item("script"))),
                ("interpreter", opt_str(s.item("interpreter"))),
                ("interpreter_args", opt_str(s.item("interpreter_args"))),
                ("binary", opt_str(s.item("binary"))),
                ("cwd", opt_str(s.item("cwd"))),
                (
                    "started",
                    opt_num(s.item("started").filter(|t| t.parse::<i64>().is_ok())),
                ),
                ("calls", opt_num(server.map(|l| l.calls.to_string()))),
                ("running", opt_num(server.map(|l| l.running.to_string()))),
                ("pss_kib", opt_num(s.pss_kib.map(|k| k.to_string()))),
                (
                    "last_call",
                    opt_num(
                        server
                            .filter(|l| l.last_call > 0)
                            .map(|l| l.last_call.to_string()),
                    ),
                ),
                ("last_error", opt_str(error.clone().map(|(_, m)| m))),
                (
                    "last_error_at",
                    opt_num(error.map(|(at, _)| at.to_string())),
                ),
                ("record", (s.record.is_some()).to_string()),
            ];
            let body: Vec<String> = fields
                .iter()
                .map(|(k, v)| format!("{}: {v}", json_string(k)))
                .collect();
            format!("  {{{}}}", body.join(", "))
        })
        .collect();
    if items.is_empty() {
        "[]\n".to_string()
    } else {
        format!("[\n{}\n]\n", items.join(",\n"))
    }
}

/// `--kill-all`: stop every live server of this user, as `--kill` stops
/// one, and clean the stale entries.
pub(super) fn kill_all() -> Result<Outcome> {
    let dir = RunDir::open()?;
    for ident in socket_idents(&dir)? {
        if !listening(&dir, &ident)? {
            clean_stale(&dir, &ident)?;
            continue;
        }
        let names = Names::new(ident, None, None);
        let lock = Lock::acquire(&dir, &names.lock)?;
        super::kill(&dir, &names, lock)?;
    }
    Ok(Outcome::Exit(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_shows_what_is_known_and_dashes_the_rest() {
        let mut bytes = record::client_part(&[
            ("ident", OsStr::new("abcdef0123456789")),
            ("interpreter", OsStr::new("python3")),
            ("script", OsStr::new("/srv/a.py")),
            ("cwd", OsStr::new("/srv")),
            ("started", OsStr::new("1764370000")),
        ]);
        bytes.extend_from_slice(
            record::ServerLine {
                pid: 77,
                start_ticks: 1,
                library: "python".into(),
                calls: 12,
                running: 1,
                last_call: 1_764_370_100,
            }
            .encode()
            .as_bytes(),
        );
        let known = Listed {
            ident: "abcdef0123456789".into(),
            record: Record::parse(&bytes),
            pid: Some(77),
            pss_kib: Some(20 * 1024),
        };
        let bare = Listed {
            ident: "ffff".into(),
            ..Listed::default()
        };
        let table = as_table(&[known, bare], 1_764_370_160);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3, "{table}");
        assert!(lines[1].starts_with("abcdef012345 "), "{table}");
        for want in [
            "77",
            "python",
            "12",
            "20M",
            "60s ago",
            "/srv/a.py (python3) in /srv",
        ] {
            assert!(lines[1].contains(want), "{want} in {table}");
        }
        assert!(lines[2].contains("no record"), "{table}");
        let json = as_json(&[Listed {
            ident: "x\"y".into(),
            ..Listed::default()
        }]);
        assert!(json.contains(r#""ident": "x\"y""#), "{json}");
        assert!(json.contains(r#""pid": null"#), "{json}");
        assert_eq!(as_json(&[]), "[]\n");
    }
}
