//! The setup run's last steps (upstream part 3 steps 1-6): understand
//! `PREFORK_INTERP`, check that forking is sound, take the four fds it
//! names, then daemonise: fork and let the setup process exit, `setsid`,
//! point stdio at `/dev/null`, take the first call in like an accepted
//! one, and run the server loop. When the client announced `inplace1`
//! (protocol.md §7), the setup process does not exit: it runs the first
//! call itself (`in_place.rs`), and the server starts with no call.
//!
//! ```text
//!   setup      fd0 /dev/null, fd1+2 the first caller's stderr,
//!              LISTEN CALL WATCHI WATCHE (made close-on-exec here)
//!     └ server       same fds; setsid; fd0-2 /dev/null, syslog; CALL
//!                    handed to the loop (in place: closed at once)
//!         └ spare    its control socket only; becomes the executor
//!                    of a call (without inplace1, the first)
//! ```

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

use nix::fcntl::{FcntlArg, FdFlag, OFlag, fcntl};
use nix::sys::stat::SFlag;

use super::log::Log;
use super::reload::ReloadCheck;
use super::serve::{First, Server, ServerFds};
use super::signals::{self, Program, SERVER_SIGNALS};
use super::spares::Waiting;
use super::{Invocation, Options, in_place};
use crate::error::{Error, Result};
use crate::protocol::{ENV_VAR, SetupEnv};
use crate::sys::{self, Forked};

/// Set once the setup run has taken the `PREFORK_INTERP` fds: they must
/// not be taken twice (and a second call in an executor, whose
/// environment a caller could have filled with anything, must fail).
static STARTED: AtomicBool = AtomicBool::new(false);

/// The fds named by `PREFORK_INTERP`, owned.
struct Fds {
    listen: UnixListener,
    call: UnixStream,
    watchi: OwnedFd,
    watche: File,
    /// With `record1`: the server record (protocol.md §8), its path and
    /// the record open.
    record: Option<(PathBuf, OwnedFd)>,
}

/// The setup run: check, take the fds and daemonise. Returns `Err` only
/// in the setup process, before forking; `Ok` only in a call's executor
/// (in place: the setup process, running the first call).
pub(super) fn become_server(value: &[u8], opts: &Options) -> Result<Invocation> {
    let env = SetupEnv::parse(value)?;
    let threads = sys::thread_count()
        .map_err(|e| Error::io("count this process's threads in /proc/self/task", e))?;
    if threads != 1 {
        return Err(Error::msg(format!(
            "cannot start a prefork server: the process has {threads} threads, and forking \
             a multi-threaded process is unsound (start threads only after \
             initialisation_complete has returned)"
        )));
    }
    if STARTED.swap(true, Ordering::SeqCst) {
        return Err(Error::msg(
            "initialisation_complete was called again in a process that already started a server",
        ));
    }
    // Before the server changes any signal: what the executor restores.
    let program =
        Program::snapshot().map_err(|e| Error::io("read the program's signal state", e))?;
    PROGRAM_NAME.get_or_init(|| std::env::args_os().next().unwrap_or_default());
    signals::install(SERVER_SIGNALS).map_err(|e| Error::io("set server signals", e))?;
    Log::set_program(program_name());
    sys::ensure_stdio_open().map_err(|e| Error::io("open /dev/null for closed stdio", e))?;
    let fds = take_fds(&env)?;
    let exe = std::env::current_exe()
        .map_err(|e| Error::io("find this program's executable (/proc/self/exe)", e))?;
    let reload = ReloadCheck::new(
        (env.stamp_secs, env.stamp_nsecs),
        std::iter::once(exe)
            .filter(|_| opts.autoreload)
            .chain(opts.reload_paths.iter().cloned()),
    );
    // Anything still buffered would be written again by every call.
    let _ = std::io::stdout().flush();

    let Fds {
        listen,
        call,
        watchi,
        watche,
        record,
    } = fds;
    let setup_pid = std::process::id() as libc::pid_t;
    match sys::fork_checked().map_err(|e| Error::io("fork server", e))? {
        // The client waits for the setup process or a greeting on CALL:
        // this greets it and runs the first call (protocol.md §7). The
        // child in between only forks the server and exits: reaped here,
        // so the program has no child of ours to see or to reap.
        Forked::Parent(between) if env.in_place => {
            drop((listen, watchi, watche));
            let record_path = record.as_ref().map(|(path, _)| path.clone());
            drop(record);
            let log = Log::open(opts.syslog, log_file(opts), record_path.as_deref());
            let invocation = in_place::run_first_call(call, opts, &program, log);
            let _ = sys::wait_raw(between);
            return Ok(invocation);
        }
        // The setup process's exit 0 says the server is up (or about to
        // be) and the first greeting will come.
        Forked::Parent(_) => sys::exit_now(0),
        Forked::Child if env.in_place => match sys::fork_checked() {
            Ok(Forked::Child) => {}
            Ok(Forked::Parent(_)) => sys::exit_now(0),
            Err(e) => {
                Log::Stderr.err(&format!("fork server: {e}"));
                sys::exit_now(127)
            }
        },
        Forked::Child => {}
    }
    // In place, the setup process answers on CALL: not ours to hold; its
    // call counts as running, for the idle timeout.
    let first = if env.in_place {
        First::InPlace(setup_pid)
    } else {
        First::Call(call)
    };
    let server_fds = ServerFds {
        listen,
        watchi,
        watche,
    };
    let (spare, log) = become_detached_server(server_fds, record, first, reload, opts);
    Ok(spare.become_executor(log, &program))
}

/// The server (upstream part 3 steps 4-7). Returns only in a newly forked
/// spare executor, with where its messages go.
///
/// On entry: fd 0 is /dev/null, fds 1 and 2 the first caller's stderr,
/// `fds` and `first` (CALL, unless the setup process runs the first call)
/// the protocol fds. We become a session leader, put /dev/null on fds
/// 0-2, log to syslog, and take the first call in on CALL as if it had
/// just been accepted.
fn become_detached_server(
    fds: ServerFds,
    record: Option<(PathBuf, OwnedFd)>,
    first: First,
    reload: ReloadCheck,
    opts: &Options,
) -> (Waiting, Log) {
    let log = Log::Stderr;
    if let Err(e) = nix::unistd::setsid() {
        log.err(&format!("setsid: {}", e.desc()));
        sys::exit_now(127);
    }
    if let Err(e) = sys::null_stdio(&[0, 1, 2]) {
        log.err(&Error::io("put /dev/null on stdin, stdout and stderr", e).to_string());
        sys::exit_now(127);
    }
    // Our command line is the first caller's, arguments and all: show
    // what we are instead, for our whole life (and our spares').
    set_title("server");
    let log = Log::open(
        opts.syslog,
        log_file(opts),
        record.as_ref().map(|(path, _)| path.as_path()),
    );
    match Server::new(fds, record, reload, first, opts, log) {
        Ok(server) => (server.run(), log),
        Err(e) => {
            log.err(&e.to_string());
            sys::exit_now(127)
        }
    }
}

/// The log file asked for: the option, else `PREFORK_INTERP_LOG` of this
/// run (the first caller's environment; docs/options.md).
fn log_file(opts: &Options) -> Option<PathBuf> {
    opts.log_file.clone().or_else(|| {
        std::env::var_os(super::log::LOG_VAR)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    })
}

/// The program's name as it was started, saved before any title
/// overwrites the memory `std::env::args_os` reads.
static PROGRAM_NAME: std::sync::OnceLock<std::ffi::OsString> = std::sync::OnceLock::new();

/// Set a server-side process's command line to
/// `prefork-interp ROLE: PROGRAM`, or, if the program was started with
/// too little room for that, `PROGRAM [ROLE]` or `NAME [ROLE]`.
pub(super) fn set_title(role: &str) {
    let program = PROGRAM_NAME.get_or_init(|| std::env::args_os().next().unwrap_or_default());
    let program = program.as_encoded_bytes();
    let name = program.rsplit(|&b| b == b'/').next().unwrap_or(program);
    let full = [format!("prefork-interp {role}: ").as_bytes(), program].concat();
    let short = [program, format!(" [{role}]").as_bytes()].concat();
    let shortest = [name, format!(" [{role}]").as_bytes()].concat();
    let _ = sys::set_title(&[&full, &short, &shortest]);
}

/// The program's name for messages: the file name it was run as.
fn program_name() -> String {
    std::env::args_os()
        .next()
        .map(PathBuf::from)
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "prefork".into())
}

/// Take the fds `PREFORK_INTERP` names, after checking that each is open,
/// is what it should be and is named once, and make them close-on-exec.
fn take_fds(env: &SetupEnv) -> Result<Fds> {
    let named = [
        ("LISTEN", env.listen),
        ("CALL", env.call),
        ("WATCHI", env.watchi),
        ("WATCHE", env.watche),
    ];
    for (i, &(what, fd)) in named.iter().enumerate() {
        if fd < 3 {
            return Err(Error::protocol(format!(
                "{ENV_VAR} gives fd {fd} as {what}, but that is a stdio fd"
            )));
        }
        if named[..i].iter().any(|&(_, other)| other == fd) {
            return Err(Error::protocol(format!(
                "{ENV_VAR} gives fd {fd} more than once"
            )));
        }
    }
    let take = |what: &str, fd: RawFd, kind: SFlag| -> Result<OwnedFd> {
        // SAFETY: the process inherited this fd across exec, with its
        // number in PREFORK_INTERP, for us: no code in the program opened
        // it, so nothing owns it. It is taken once: the numbers are
        // distinct (checked above) and STARTED lets this run only once per
        // process.
        let owned = unsafe { sys::adopt_fd(fd) }
            .map_err(|e| Error::io(format!("{ENV_VAR} {what} fd {fd}"), e))?;
        let st = nix::sys::stat::fstat(owned.as_fd())
            .map_err(|e| Error::io(format!("fstat {ENV_VAR} {what} fd {fd}"), e))?;
        if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != kind {
            return Err(Error::protocol(format!(
                "{ENV_VAR} {what} fd {fd} is not a {}",
                if kind == SFlag::S_IFSOCK {
                    "socket"
                } else {
                    "pipe"
                }
            )));
        }
        fcntl(owned.as_fd(), FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))
            .map_err(|e| Error::io(format!("make {ENV_VAR} {what} fd {fd} close-on-exec"), e))?;
        Ok(owned)
    };
    let listen = take("LISTEN", env.listen, SFlag::S_IFSOCK)?;
    let listening = nix::sys::socket::getsockopt(&listen, nix::sys::socket::sockopt::AcceptConn)
        .map_err(|e| Error::io(format!("{ENV_VAR} LISTEN fd {}", env.listen), e))?;
    if !listening {
        return Err(Error::protocol(format!(
            "{ENV_VAR} LISTEN fd {} is not a listening socket",
            env.listen
        )));
    }
    nonblocking(&listen, true, "LISTEN")?;
    let call = take("CALL", env.call, SFlag::S_IFSOCK)?;
    nonblocking(&call, false, "CALL")?;
    let watchi = take("WATCHI", env.watchi, SFlag::S_IFIFO)?;
    let watche = take("WATCHE", env.watche, SFlag::S_IFIFO)?;
    nonblocking(&watche, true, "WATCHE")?;
    let record = env.record.as_deref().and_then(|path| {
        let path = PathBuf::from(std::ffi::OsStr::from_bytes(path));
        open_record(&path).map(|fd| (path, fd))
    });
    Ok(Fds {
        listen: UnixListener::from(listen),
        call: UnixStream::from(call),
        watchi,
        watche: File::from(watche),
        record,
    })
}

/// Open the server record the client made (`record1`, protocol.md §8):
/// a regular file of ours, never through a symbolic link. `None` if it is
/// not that (the server then runs without one: `--list` shows less).
fn open_record(path: &std::path::Path) -> Option<OwnedFd> {
    let fd = nix::fcntl::open(
        path,
        OFlag::O_RDWR | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK,
        nix::sys::stat::Mode::empty(),
    )
    .ok()?;
    let st = nix::sys::stat::fstat(&fd).ok()?;
    let regular = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFREG;
    (regular && st.st_uid == nix::unistd::geteuid().as_raw()).then_some(fd)
}

/// Set the blocking mode the protocol gives each inherited fd.
fn nonblocking(fd: &OwnedFd, on: bool, what: &str) -> Result<()> {
    sys::set_nonblocking(fd.as_fd(), on)
        .map_err(|e| Error::io(format!("set {ENV_VAR} {what} fd blocking mode"), e))
}
