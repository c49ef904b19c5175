//! `interactive MODE [ARGS]`: the Rust program of the interactive terminal
//! tests (`tests/interactive/`), with the same modes as the Python and
//! Perl ones (see `tests/interactive/programs.py`). Markers `<<...>>` are
//! what the tests look for.
//!
//! - `warm`: exit 0 (starts the server);
//! - `interrupt`: `<<ready>>`, wait; on SIGINT `<<cleanup>>`, exit 3;
//! - `finally`: `<<ready>>`, wait; on SIGINT `<<cleanup>>`, then die of it;
//! - `read-line`: `<<ready>>`, read a line, `<<got LINE>>`;
//! - `wait-file PATH`: `<<ready>>`, wait for PATH, `<<finished>>`, exit 5;
//! - `winch`: `<<ready>>`; after SIGWINCH `<<winch COLSxROWS>>` (stdout's
//!   terminal size);
//! - `password`: prompt `<<password:>>` and read a line with echo off, on
//!   `/dev/tty` or, failing that, stdin (prompt on stderr), as password
//!   readers do; `<<len N>>`;
//! - `pager-run`: `less` on 300 lines as a child; on SIGINT kill it,
//!   `<<interrupted>>`, exit 3; else `<<after pager>>`;
//! - `tty`: open `/dev/tty`: `<<tty opened>>` or `<<tty ERRNO>>`;
//! - `tty-read`: prompt `<<tty prompt>>` on `/dev/tty`, read a line from
//!   it, `<<tty got LINE fg=yes|no>>` (our group the terminal's foreground?);
//! - `pid`: `<<pid N>>`, wait until killed;
//! - `isatty`: `<<isatty XYZ>>`, `y` or `n` for each of fds 0-2;
//! - `interleave`: 100 times `<<o N>>` on stdout, `<<e N>>` on stderr.

use std::io::{BufRead, Write};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

use prefork_interp::server::{self, Options};

static GOT: AtomicI32 = AtomicI32::new(0);

extern "C" fn note(sig: libc::c_int) {
    GOT.store(sig, Ordering::SeqCst);
}

/// Note `sig` in [`GOT`] when it arrives.
fn catch(sig: libc::c_int) {
    // SAFETY: the handler only stores to an atomic (async-signal-safe).
    unsafe { libc::signal(sig, note as *const () as libc::sighandler_t) };
}

fn say(text: &str) {
    let mut out = std::io::stdout();
    let _ = writeln!(out, "<<{text}>>");
    let _ = out.flush();
}

fn wait_for_signal() -> i32 {
    while GOT.load(Ordering::SeqCst) == 0 {
        std::thread::sleep(Duration::from_millis(20));
    }
    GOT.load(Ordering::SeqCst)
}

fn main() {
    let call = match server::initialisation_complete(&Options::new().syslog(false)) {
        Ok(call) => call,
        Err(e) => {
            eprintln!("interactive: {e}");
            std::process::exit(127);
        }
    };
    let args: Vec<String> = call
        .args()
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    if let Ok(path) = std::env::var("PFI_SESSIONS")
        && let Ok(mut f) = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(path)
    {
        // SAFETY: getsid takes no pointers.
        let _ = writeln!(f, "{}", unsafe { libc::getsid(0) });
    }
    match args.first().map(String::as_str).unwrap_or("") {
        "warm" => {}
        "interrupt" => {
            catch(libc::SIGINT);
            say("ready");
            wait_for_signal();
            say("cleanup");
            std::process::exit(3);
        }
        "finally" => {
            catch(libc::SIGINT);
            say("ready");
            wait_for_signal();
            say("cleanup");
            // SAFETY: back to the default action, then die of it.
            unsafe {
                libc::signal(libc::SIGINT, libc::SIG_DFL);
                libc::raise(libc::SIGINT);
            }
        }
        "read-line" => {
            say("ready");
            let mut line = String::new();
            let _ = std::io::stdin().lock().read_line(&mut line);
            say(&format!("got {}", line.trim()));
        }
        "wait-file" => {
            say("ready");
            let path = args.get(1).cloned().unwrap_or_default();
            while !std::path::Path::new(&path).exists() {
                std::thread::sleep(Duration::from_millis(20));
            }
            say("finished");
            std::process::exit(5);
        }
        "winch" => {
            catch(libc::SIGWINCH);
            say("ready");
            wait_for_signal();
            // SAFETY: winsize is plain data; TIOCGWINSZ fills it.
            let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
            // SAFETY: `ws` is a valid out-pointer for TIOCGWINSZ.
            unsafe { libc::ioctl(1, libc::TIOCGWINSZ, &mut ws) };
            say(&format!("winch {}x{}", ws.ws_col, ws.ws_row));
        }
        "password" => password(),
        "pager-run" => pager(),
        "tty" => match std::fs::File::open("/dev/tty") {
            Ok(_) => say("tty opened"),
            Err(e) => say(&format!(
                "tty {:?}",
                nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(0))
            )),
        },
        "tty-read" => tty_read(),
        "pid" => {
            say(&format!("pid {}", std::process::id()));
            loop {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        "isatty" => {
            let tty = |fd| {
                // SAFETY: isatty only looks at the fd.
                if unsafe { libc::isatty(fd) } == 1 {
                    'y'
                } else {
                    'n'
                }
            };
            say(&format!("isatty {}{}{}", tty(0), tty(1), tty(2)));
        }
        "interleave" => {
            for n in 0..100 {
                say(&format!("o {n}"));
                let mut err = std::io::stderr();
                let _ = writeln!(err, "<<e {n}>>");
            }
        }
        other => {
            eprintln!("interactive: unknown mode {other:?}");
            std::process::exit(2);
        }
    }
}

/// Read a password as password readers do: on the controlling terminal,
/// else on stdin with the prompt on stderr; echo off where it is a
/// terminal.
fn password() {
    let tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .ok();
    let (input, mut prompt): (i32, Box<dyn Write>) = match &tty {
        Some(t) => (t.as_raw_fd(), Box::new(t.try_clone().unwrap())),
        None => (0, Box::new(std::io::stderr())),
    };
    // SAFETY: termios is plain data; tcgetattr fills it or fails.
    let mut saved: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: `saved` is a valid out-pointer.
    let is_tty = unsafe { libc::tcgetattr(input, &mut saved) } == 0;
    if is_tty {
        let mut quiet = saved;
        quiet.c_lflag &= !libc::ECHO;
        // SAFETY: `quiet` is a valid termios derived from the current one.
        unsafe { libc::tcsetattr(input, libc::TCSAFLUSH, &quiet) };
    }
    let _ = write!(prompt, "<<password:>>");
    let _ = prompt.flush();
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    // SAFETY: reading into a valid one-byte buffer.
    while unsafe { libc::read(input, byte.as_mut_ptr().cast(), 1) } == 1 && byte[0] != b'\n' {
        line.push(byte[0]);
    }
    if is_tty {
        // SAFETY: putting back the settings read above.
        unsafe { libc::tcsetattr(input, libc::TCSAFLUSH, &saved) };
    }
    let _ = writeln!(prompt);
    say(&format!("len {}", line.len()));
}

/// A line read from the controlling terminal, as `sudo` or `ssh` prompt.
fn tty_read() {
    let tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .expect("/dev/tty");
    let _ = (&tty).write_all(b"<<tty prompt>>");
    let mut line = String::new();
    let _ = std::io::BufReader::new(&tty).read_line(&mut line);
    let fg = nix::unistd::tcgetpgrp(&tty).is_ok_and(|g| g == nix::unistd::getpgrp());
    say(&format!(
        "tty got {} fg={}",
        line.trim(),
        if fg { "yes" } else { "no" }
    ));
}

/// `less` on 300 lines; ^C reaches us too: then stop it and say so.
fn pager() {
    let path = std::env::temp_dir().join(format!("pfi-pager-{}.txt", std::process::id()));
    let lines: String = (1..=300).map(|n| format!("page line {n}\n")).collect();
    std::fs::write(&path, lines).unwrap();
    catch(libc::SIGINT);
    let mut less = std::process::Command::new("less")
        .arg(&path)
        .spawn()
        .unwrap();
    let interrupted = loop {
        if GOT.load(Ordering::SeqCst) != 0 {
            let _ = less.kill();
            let _ = less.wait();
            break true;
        }
        if let Ok(Some(_)) = less.try_wait() {
            break false;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let _ = std::fs::remove_file(&path);
    if interrupted {
        say("interrupted");
        std::process::exit(3);
    }
    say("after pager");
}
