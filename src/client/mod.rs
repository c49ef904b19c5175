//! The client (SPEC §4-5): find the server for this script, or start one,
//! then make the call and leave with the script's exit status.
//!
//! ```text
//!   open and check the run directory; choose the name (binary in PATH?)
//!   connect (own uid?) + greeting ──ok───────────────────┐
//!      │ no server / stale          another binary there: │ the name with ours
//!   prune; lock; connect + greeting again ──ok──┐         │
//!      │ still none                              │         │
//!   start server (watcher, setup), greeting     unlock    │
//!   unlock ──────────────────────────────────────┴─────────┤
//!                                         send request, read status, exit
//! ```
//! Numbered steps refer to `docs/design.md` §4.
//!
//! Modules, one concern each: [`cli`] (the command line, `#!` splitting),
//! [`identity`] (the hash that names a server), [`rundir`] (run directory,
//! opened once and trusted only if safe; locks, pruning), `interpreter`
//! (which binary an interpreter named without `/` is, and which server
//! runs it), `peer` (the server's uid, and a server slow to greet),
//! [`spawn`] (the watcher and setup processes), [`exit_status`] (a wait
//! status into our own exit), `caller` (the caller's attributes and fds
//! that a call carries), `call` (the exchange with the server, one poll
//! loop) and `signals` (forwarding signals and job control, with its
//! routing table).

mod call;
mod caller;
pub mod cli;
pub mod exit_status;
pub mod identity;
mod in_place;
mod interpreter;
mod peer;
mod pty;
pub mod rundir;
mod servers;
mod signals;
pub mod spawn;
mod terminal;

use std::ffi::OsString;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nix::fcntl::OFlag;
use nix::sys::socket::{
    AddressFamily, Backlog, SockFlag, SockType, UnixAddr, bind, listen, socket,
};
use nix::sys::stat::Mode as FileMode;

use self::call::Sent;
use self::cli::{Command, Mode, Parsed};
use self::exit_status::Outcome;
use self::identity::{DevIno, Host};
use self::in_place::SetupAnswer;
use self::rundir::{Lock, RunDir};
use self::spawn::SetupFds;
use self::terminal::Foreground;
use crate::error::{Error, Result, report};
use crate::protocol::{Call, Offer, Request};
use crate::sys;
use caller::Caller;

/// Environment variable that turns on tracing to stderr.
pub const DEBUG_VAR: &str = "PREFORK_INTERP_DEBUG";

/// The largest request body sent to a new server's setup process before
/// it greets us: a socket buffer holds at least this much, so the send
/// cannot block.
const PRESEND_MAX: usize = 32 * 1024;

/// How long `--kill` waits for the old server to go.
const KILL_WAIT: Duration = Duration::from_secs(5);

static DEBUG: AtomicBool = AtomicBool::new(false);

fn debug(msg: impl FnOnce() -> String) {
    if DEBUG.load(Ordering::Relaxed) {
        let line = format!("prefork-interp[{}]: {}\n", std::process::id(), msg());
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }
}

/// The whole client: parse the command line `argv` (the program's
/// arguments, its name first), run, exit. Never returns.
pub fn main(argv: Vec<OsString>) -> ! {
    if std::env::var_os(DEBUG_VAR).is_some_and(|v| !v.is_empty()) {
        DEBUG.store(true, Ordering::Relaxed);
    }
    let outcome = match cli::parse(&argv) {
        Ok(Parsed::Help) => print_stdout(cli::USAGE, "usage message"),
        Ok(Parsed::Version) => print_stdout(&(cli::version() + "\n"), "version"),
        Ok(Parsed::List { json }) => servers::list(json),
        Ok(Parsed::KillAll) => servers::kill_all(),
        Ok(Parsed::Run(cmd)) => run(&cmd),
        Err(e) => Err(e),
    };
    match outcome {
        Ok(outcome) => exit_status::propagate(outcome),
        Err(e) => {
            report(e);
            sys::exit_now(127)
        }
    }
}

/// `--help`, `--version`: `text` on stdout, then exit 0.
fn print_stdout(text: &str, what: &str) -> Result<Outcome> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| Error::io(format!("write {what} to stdout"), e))?;
    Ok(Outcome::Exit(0))
}

/// Run a parsed command line: returns what the caller should exit with.
pub fn run(cmd: &Command) -> Result<Outcome> {
    sys::ensure_stdio_open().map_err(|e| Error::io("open /dev/null for closed stdio", e))?;
    let run_dir = RunDir::open()?;
    let mut names = Names::for_command(cmd, &run_dir)?;
    // Read what the caller handed us before anything could change it
    // (every fd we open is close-on-exec, and signals are untouched until
    // a request is sent): the request may go with the connection.
    let caller = Caller::capture();
    let off = cmd.no_pty || std::env::var_os(cli::NO_PTY_VAR).is_some_and(|v| !v.is_empty());
    let plan = pty::Plan::for_caller(off);
    let request = Request {
        env: std::env::vars_os()
            .map(|(k, v)| {
                let mut e = k;
                e.push("=");
                e.push(v);
                e
            })
            .collect(),
        args: wire_args(cmd),
        // A served call is offered pty1 on a terminal; the first call, run
        // in place, already has the caller's terminal (protocol.md §7).
        offer: Offer {
            call1: true,
            pty1: false,
        },
    };
    let served = Request {
        offer: Offer {
            call1: true,
            pty1: plan.is_some(),
        },
        ..request.clone()
    };
    let ready = Ready {
        served: &served,
        in_place: &request,
        caller: &caller,
    };
    let status = loop {
        debug(|| format!("socket {}", run_dir.shown(&names.socket)));
        let started = match cmd.mode {
            Mode::Normal => match connect_existing(&run_dir, &names, &ready)? {
                Existing::Ready(sent) => Started::Ready(sent),
                Existing::Elsewhere => Started::Elsewhere,
                Existing::None => under_lock(cmd, &run_dir, &names, &ready)?,
            },
            Mode::Fresh | Mode::Kill | Mode::List | Mode::KillAll => {
                under_lock(cmd, &run_dir, &names, &ready)?
            }
        };
        match started {
            Started::Elsewhere => names = names.for_own_binary(),
            Started::Done(outcome) => return Ok(outcome),
            Started::Ready(sent) => break call::make_call(sent, &caller, plan),
            Started::InPlace(call, pid, fg, sent) => {
                break in_place::make_call(call, pid, fg, (!sent).then_some(&request), &caller);
            }
        }
    }
    .map_err(|e| e.at(run_dir.shown(&names.socket)))?;
    debug(|| format!("wait status 0x{status:x}"));
    Ok(exit_status::classify(status, "invocation"))
}

/// The identity a call uses, and its entries in the run directory.
struct Names {
    /// The identity.
    ident: String,
    /// `s<ident>`, the server's listening socket.
    socket: String,
    /// `l<ident>`, the lock file.
    lock: String,
    /// The interpreter binary the caller's `PATH` finds, for an
    /// interpreter named without a `/` (`client::interpreter`).
    binary: Option<PathBuf>,
    /// While `ident` is the name without the binary: the name with it, to
    /// use if that server runs another binary.
    with_binary: Option<String>,
}

impl Names {
    fn new(ident: String, binary: Option<PathBuf>, with_binary: Option<String>) -> Names {
        Names {
            socket: format!("s{ident}"),
            lock: format!("l{ident}"),
            ident,
            binary,
            with_binary,
        }
    }

    /// The C client's name, unless the caller's binary has a server under
    /// the name with the binary, or the binary recorded for the C client's
    /// name is another one: then the name with the caller's binary
    /// (design.md §4.1).
    fn for_command(cmd: &Command, run_dir: &RunDir) -> Result<Names> {
        let binary = match cmd.ident {
            Some(_) => None,
            None => interpreter::resolve(&cmd.interpreter, std::env::var_os("PATH").as_deref()),
        };
        let (ident, with_binary) = identities_for(cmd, run_dir, binary.as_deref())?;
        let (Some(binary), Some(with_binary)) = (binary, with_binary) else {
            return Ok(Names::new(ident, None, None));
        };
        // Once the binary has a name of its own, it keeps it.
        let own = interpreter::recorded(run_dir, &with_binary)?.is_some_and(|r| r == binary);
        let names = Names::new(ident, Some(binary), Some(with_binary));
        Ok(match own || names.taken_by_another_binary(run_dir)? {
            true => names.for_own_binary(),
            false => names,
        })
    }

    /// Does the record for this name say its server runs a binary other
    /// than the caller's (and is there another name to go to)?
    fn taken_by_another_binary(&self, run_dir: &RunDir) -> Result<bool> {
        let (Some(binary), Some(_)) = (&self.binary, &self.with_binary) else {
            return Ok(false);
        };
        let recorded = interpreter::recorded(run_dir, &self.ident)?;
        Ok(recorded.is_some_and(|r| r != *binary))
    }

    /// The name with the caller's binary.
    fn for_own_binary(self) -> Names {
        match self.with_binary {
            Some(ident) => Names::new(ident, self.binary, None),
            None => self,
        }
    }
}

/// The identity (socket name) for this command: `-g`, or the hash cut to
/// what fits in a socket path; and, given the interpreter `binary`, the
/// hash with it too (the host is read once for both).
fn identities_for(
    cmd: &Command,
    run_dir: &RunDir,
    binary: Option<&Path>,
) -> Result<(String, Option<String>)> {
    let dir_len = run_dir.path.as_os_str().len();
    let max = identity::max_ident_len(dir_len);
    if let Some(ident) = &cmd.ident {
        let ident = ident
            .to_str()
            .filter(|s| !s.is_empty() && !s.contains('/'))
            .ok_or_else(|| Error::usage("-g IDENT must be non-empty text without '/'"))?;
        if ident.len() as isize > max {
            return Err(Error::msg(format!(
                "run directory {} plus ident {ident} too long for a socket path (max ident {max})",
                run_dir.path.display()
            )));
        }
        return Ok((ident.to_string(), None));
    }
    if max < identity::MIN_HEX_LEN as isize {
        return Err(Error::msg(format!(
            "run directory {} leaves only {max} characters for the id hash, \
             which is too few (<{}); set {} to a shorter directory",
            run_dir.path.display(),
            identity::MIN_HEX_LEN,
            rundir::RUN_DIR_VAR
        )));
    }
    let host = Host {
        utsname: sys::uname_raw().map_err(|e| Error::io("uname", e))?,
        cwd: dev_ino(Path::new("."))?,
        root: dev_ino(Path::new("/"))?,
    };
    let hash = |binary: Option<&Path>| {
        let mut hex = identity::hex_identity_with(&host, cmd, binary.map(Path::as_os_str));
        hex.truncate(max.min(64) as usize);
        hex
    };
    Ok((hash(None), binary.map(|b| hash(Some(b)))))
}

fn dev_ino(path: &Path) -> Result<DevIno> {
    let md =
        std::fs::metadata(path).map_err(|e| Error::io(format!("stat {}", path.display()), e))?;
    Ok(DevIno::of(&md))
}

/// What goes on the wire as arguments: `interpreter, [script,] args...`
/// (as 7.0.0 sends; interpreter arguments are part of the identity instead).
fn wire_args(cmd: &Command) -> Vec<OsString> {
    std::iter::once(&cmd.interpreter)
        .chain(&cmd.script)
        .chain(&cmd.args)
        .cloned()
        .collect()
}

/// What the setup process runs: `interpreter [interp-args] [script] args`.
fn exec_args(cmd: &Command) -> Vec<OsString> {
    std::iter::once(&cmd.interpreter)
        .chain(&cmd.interpreter_args)
        .chain(&cmd.script)
        .chain(&cmd.args)
        .cloned()
        .collect()
}

/// What a call sends, and with what: the requests for a served call and
/// for a first call run in place, and the caller.
struct Ready<'a> {
    served: &'a Request,
    in_place: &'a Request,
    caller: &'a Caller,
}

/// What [`connect_existing`] found.
enum Existing {
    /// Nothing there, nobody listening, or a server that hung up before
    /// greeting us.
    None,
    /// A server of another interpreter binary: we sent it nothing.
    Elsewhere,
    /// A server that greeted us, our request sent.
    Ready(Sent),
}

/// Connect to an existing server, send the request and read its greeting
/// (step 1). The request goes without waiting for the greeting, once we
/// know whose server it is (its uid, its interpreter binary): one round
/// trip less per call. A server of another uid is an error: we send it
/// nothing.
fn connect_existing(dir: &RunDir, names: &Names, ready: &Ready<'_>) -> Result<Existing> {
    let name = names.socket.as_str();
    let sock = match UnixStream::connect(dir.via_fd(name)) {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            debug(|| format!("no server: {e}"));
            return Ok(Existing::None);
        }
        Err(e) => return Err(Error::io(format!("connect {}", dir.shown(name)), e)),
    };
    peer::check_server(&sock, &dir.shown(name))?;
    // The record of the binary is written before the socket exists, so it
    // is this server's.
    if names.taken_by_another_binary(dir)? {
        return Ok(Existing::Elsewhere);
    }
    let mut sent = Sent::hold(Call::new(sock), ready.caller)?;
    // A server that hangs up makes the send fail; what it said first (a
    // stranger on our socket path, say) is still read below.
    let request_lost = match sent.send_request(ready.served) {
        Ok(()) => false,
        Err(e)
            if e.is_peer_gone()
                || matches!(e.raw_os_error(), Some(libc::EPIPE | libc::ECONNRESET)) =>
        {
            true
        }
        Err(e) => {
            sent.abandon();
            return Err(e.at(dir.shown(name)));
        }
    };
    peer::await_greeting(sent.call_mut().socket(), dir, name);
    let greeting = sent.call_mut().read_greeting();
    match greeting {
        Ok(_) if !request_lost => {
            debug(|| "connected to existing server".into());
            Ok(Existing::Ready(sent))
        }
        Ok(_) => {
            debug(|| "server hung up on our request".into());
            sent.abandon();
            Ok(Existing::None)
        }
        Err(e) if e.is_peer_gone() => {
            debug(|| "server hung up before greeting".into());
            sent.abandon();
            Ok(Existing::None)
        }
        Err(e) => {
            sent.abandon();
            Err(e.at(dir.shown(name)))
        }
    }
}

/// What happened under the lock.
enum Started {
    /// A server greeted us, our request sent: make the call.
    Ready(Sent),
    /// The setup process, our child with this pid, runs the call itself
    /// (protocol.md §7): make the call with it; the terminal we were in
    /// the foreground of, now its; whether the request went already.
    InPlace(Call, libc::pid_t, Option<Foreground>, bool),
    /// The server under this name runs another interpreter binary: use
    /// the name with the caller's.
    Elsewhere,
    /// Nothing to call: leave with this (`--kill` done, or the setup
    /// process failed).
    Done(Outcome),
}

/// Steps 5-9: prune, lock, then kill, find the server someone else has
/// just started, or start one.
fn under_lock(
    cmd: &Command,
    run_dir: &RunDir,
    names: &Names,
    ready: &Ready<'_>,
) -> Result<Started> {
    rundir::prune(run_dir)?;
    let lock = Lock::acquire(run_dir, &names.lock)?;
    if cmd.mode == Mode::Kill {
        kill(run_dir, names, lock)?;
        return Ok(Started::Done(Outcome::Exit(0)));
    }
    if cmd.mode == Mode::Normal {
        match connect_existing(run_dir, names, ready)? {
            Existing::Ready(sent) => return Ok(Started::Ready(sent)),
            Existing::Elsewhere => return Ok(Started::Elsewhere),
            Existing::None => {}
        }
    }
    start_server(cmd, run_dir, names, &lock, ready)
    // The lock is released here, after the new server's greeting.
}

/// Start a new server (design.md §4.3-4.9). We hold the lock.
fn start_server(
    cmd: &Command,
    dir: &RunDir,
    names: &Names,
    lock: &Lock,
    ready: &Ready<'_>,
) -> Result<Started> {
    let _ = lock; // held for the whole of this function by our caller
    let name = names.socket.as_str();
    cli::check_interpreter(cmd)?;
    dir.remove(name, "remove stale socket")?;
    // Before the socket exists, so whoever reaches this server can read
    // which binary it runs.
    match &names.binary {
        Some(binary) => interpreter::record(dir, &names.ident, binary)?,
        None => interpreter::forget(dir, &names.ident)?,
    }
    servers::report_previous(dir, &names.ident);
    let listen_fd = listen_at(dir, name)?;
    let st = dir
        .stat(name)?
        .ok_or_else(|| Error::msg(format!("new socket {} vanished", dir.shown(name))))?;
    let initial = DevIno::from_stat(&st);
    let stamp = (st.st_mtime, st.st_mtime_nsec as u32);

    let (watch_in_r, watch_in_w) = pipe("watcher stdin")?;
    let (watch_err_r, watch_err_w) = pipe("watcher output")?;
    sys::set_nonblocking(watch_err_r.as_fd(), true)
        .map_err(|e| Error::io("make watcher output non-blocking", e))?;
    let watcher = spawn::start_watcher(
        dir,
        name,
        initial,
        watch_in_r,
        watch_err_w,
        &watcher_titles(cmd),
    )?;

    let (client_end, server_end) =
        UnixStream::pair().map_err(|e| Error::io("socketpair() for first call", e))?;
    let fds = SetupFds {
        listen: listen_fd,
        call: server_end.into(),
        watchi: watch_in_w,
        watche: watch_err_r,
        record: servers::create_record(dir, names, cmd),
    };
    let pid = spawn::start_setup(&exec_args(cmd), stamp, &fds)?;
    drop(fds);
    debug(|| format!("setup process {pid} started"));
    // The setup process is on its way; the watcher's start is checked
    // now. Without a watcher the new server sees WATCHE end and stops
    // (design.md §3.2), but the call, under way, is not abandoned.
    match watcher.finish() {
        Ok(()) => debug(|| "watcher started".into()),
        Err(e) => report(format_args!("{e}; the new server will stop at once")),
    }
    // The setup process leads its own group: if the terminal is ours, it
    // is the setup's while it runs (its ^C, its reads), ours again after.
    let foreground = Foreground::ours();
    if let Some(fg) = foreground {
        fg.give_to(nix::unistd::Pid::from_raw(pid));
    }
    let take_back = || {
        if let Some(fg) = foreground {
            fg.take_back(nix::unistd::Pid::from_raw(pid));
        }
    };
    let mut call = Call::new(client_end);
    // The request goes now, while the interpreter starts: the socket
    // buffers it, and the setup process (or, with a library without
    // inplace1, the new server) reads it after greeting us, so the
    // handshake has one round trip less. Not one too big for the socket
    // to hold until then: sending it would block.
    let sent = ready.in_place.body_len() <= PRESEND_MAX
        && call::send_request(&mut call, ready.in_place).is_ok();
    let answer = in_place::wait_for_setup(&mut call, pid);
    if !matches!(&answer, Ok(SetupAnswer::Greeted(greeting)) if greeting.in_place()) {
        take_back();
    }
    let status = match answer? {
        SetupAnswer::Greeted(greeting) if greeting.in_place() => {
            debug(|| "the setup process runs the call in place".into());
            return Ok(Started::InPlace(call, pid, foreground, sent));
        }
        // A library without inplace1: its server greeted before its setup
        // process exited; that exit is still the one to check.
        SetupAnswer::Greeted(_) => {
            let status =
                sys::wait_raw(pid).map_err(|e| Error::io(format!("wait for setup [{pid}]"), e))?;
            if status == 0 {
                return Ok(Started::Ready(first_call(call, sent, ready)?));
            }
            status
        }
        SetupAnswer::Exited(status) => status,
    };
    if status != 0 {
        debug(|| format!("setup failed, wait status 0x{status:x}"));
        servers::note_setup_failure(
            dir,
            &names.ident,
            &format!("setup failed, wait status 0x{status:x}"),
        );
        return Ok(Started::Done(exit_status::classify(status as u32, "setup")));
    }
    match call.read_greeting() {
        Ok(_) => Ok(Started::Ready(first_call(call, sent, ready)?)),
        Err(e) if e.is_peer_gone() => {
            let msg = "setup failed: initial monitor process quit \
                       (did the script call its library's initialisation_complete()?)";
            servers::note_setup_failure(dir, &names.ident, msg);
            Err(Error::msg(msg))
        }
        Err(e) => Err(e.at(format!("first call of new server {}", dir.shown(name)))),
    }
}

/// The new server's first call, which it serves itself (a library without
/// `inplace1`): the request went already if `sent`.
fn first_call(call: Call, sent: bool, ready: &Ready<'_>) -> Result<Sent> {
    let mut call = Sent::hold(call, ready.caller)?;
    if !sent && let Err(e) = call.send_request(ready.served) {
        call.abandon();
        return Err(e);
    }
    Ok(call)
}

/// The watcher's command line, no argument of the caller's:
/// `prefork-interp watcher: SCRIPT (INTERP)`, or shorter forms where
/// there is little room.
fn watcher_titles(cmd: &Command) -> Vec<Vec<u8>> {
    let interp = cmd.interpreter.as_encoded_bytes();
    let what = cmd.script.as_ref().map_or(interp, |s| s.as_encoded_bytes());
    let mut titles = Vec::new();
    if cmd.script.is_some() {
        titles.push([b"prefork-interp watcher: ", what, b" (", interp, b")"].concat());
    }
    titles.push([b"prefork-interp watcher: ", what].concat());
    titles.push([what, b" [watcher]"].concat());
    titles
}

/// A new listening socket at `name` in `dir`, non-blocking, mode 0600
/// whatever the caller's umask: only we may connect to it.
///
/// It is bound through the directory's fd (`/proc/self/fd/N/NAME`), so
/// the kernel makes it in the directory we checked, whatever happens to
/// the path meanwhile. (Tools such as `ss -xl` then show that path, not
/// the run directory's; the socket file itself is `NAME` in the run
/// directory.)
fn listen_at(dir: &RunDir, name: &str) -> Result<OwnedFd> {
    let listen_fd = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|e| Error::io("socket() for new listener", e))?;
    let addr = UnixAddr::new(&dir.via_fd(name))
        .map_err(|e| Error::io(format!("socket path {}", dir.shown(name)), e))?;
    // The socket file's mode is 0777 less the umask: set the umask for
    // bind alone (we are single-threaded, and it is put back before
    // anything else reads it).
    let umask = nix::sys::stat::umask(FileMode::from_bits_truncate(0o177));
    let bound = bind(listen_fd.as_raw_fd(), &addr);
    nix::sys::stat::umask(umask);
    bound.map_err(|e| match e {
        nix::errno::Errno::ENOENT => Error::msg(format!(
            "bind {}: cannot reach the run directory through /proc/self/fd (is /proc mounted?)",
            dir.shown(name)
        )),
        e => Error::io(format!("bind {}", dir.shown(name)), e),
    })?;
    // Between bind and listen a caller may get ECONNREFUSED; it then takes
    // the lock, which we hold, and retries after we are done.
    listen(&listen_fd, Backlog::MAXCONN).map_err(|e| Error::io("listen", e))?;
    sys::set_nonblocking(listen_fd.as_fd(), true)
        .map_err(|e| Error::io("make listener non-blocking", e))?;
    Ok(listen_fd)
}

fn pipe(what: &str) -> Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| Error::io(format!("pipe() for {what}"), e))
}

/// `--kill`: remove the socket and the lock (the server's watcher sees the
/// socket go and the server quits), then wait until the old listening
/// socket refuses connections, i.e. the server has closed it by exiting.
fn kill(dir: &RunDir, names: &Names, lock: Lock) -> Result<()> {
    // An O_PATH handle lets us reach the socket after unlinking it.
    let handle = match dir.open_at(&names.socket, OFlag::O_PATH, FileMode::empty()) {
        Ok(fd) => Some(fd),
        Err(nix::errno::Errno::ENOENT) => None,
        Err(e) => return Err(Error::io(format!("open {}", dir.shown(&names.socket)), e)),
    };
    dir.remove_identity(&names.ident)?;
    drop(lock);
    let Some(handle) = handle else {
        report(format_args!(
            "no server to stop for this script (no {})",
            dir.shown(&names.socket)
        ));
        return Ok(());
    };
    let via = format!("/proc/self/fd/{}", handle.as_raw_fd());
    let deadline = Instant::now() + KILL_WAIT;
    let mut pause = Duration::from_millis(2);
    loop {
        match UnixStream::connect(&via) {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                debug(|| "old server has gone".into());
                return Ok(());
            }
            // No /proc, or not a socket after all: nothing to wait for.
            Err(e) if e.kind() != std::io::ErrorKind::WouldBlock => return Ok(()),
            _ => {}
        }
        if Instant::now() >= deadline {
            report(format_args!(
                "warning: old server still running {} s after removing its socket",
                KILL_WAIT.as_secs()
            ));
            return Ok(());
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}
