//! The processes the client forks when it starts a server (design.md §3):
//! the watcher daemon and the setup process. Each child role has one
//! function that never returns, `become_*`, whose comment says which fds it
//! starts with.
//!
//! Both forks happen in the single-threaded client (`sys::fork_checked`
//! makes sure), so the children may allocate; each ends in `exec` or
//! `_exit`.

use std::ffi::{CString, OsString};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use nix::unistd::{dup2_stderr, dup2_stdin, dup2_stdout};

use crate::client::identity::DevIno;
use crate::client::rundir::RunDir;
use crate::error::{Error, Result, report};
use crate::protocol::{ENV_VAR, SetupEnv};
use crate::sys::{self, Forked};

/// The child in between the client and the watcher daemon, which only
/// forks the daemon and exits: [`WatcherStart::finish`] reaps it, and so
/// does dropping it, so no zombie is left with the caller even where init
/// does not reap. Reaped after the setup process is forked, not before:
/// waiting for it first put its fork and exit (about 0.3-1.5 ms) on every
/// cold call's path.
pub struct WatcherStart {
    pid: Option<libc::pid_t>,
}

impl WatcherStart {
    /// Reap the child in between; an error if it could not fork the
    /// daemon.
    pub fn finish(mut self) -> Result<()> {
        match self.pid.take() {
            Some(pid) => reap_watcher_start(pid),
            None => Ok(()),
        }
    }
}

impl Drop for WatcherStart {
    fn drop(&mut self) {
        if let Some(pid) = self.pid.take() {
            let _ = reap_watcher_start(pid);
        }
    }
}

fn reap_watcher_start(pid: libc::pid_t) -> Result<()> {
    let status = sys::wait_raw(pid).map_err(|e| Error::io("wait for watcher", e))?;
    if status != 0 {
        return Err(Error::msg(format!(
            "watcher failed to start (wait status 0x{status:x})"
        )));
    }
    Ok(())
}

/// Start the watcher daemon for the socket `name` in `dir`, whose inode is
/// `initial`. `stdin` is the read end of the pipe whose write end (WATCHI)
/// only the server will hold; `out` is the write end of the pipe whose read
/// end (WATCHE) the server reads. The daemon is a grandchild: the child in
/// between exits at once, and the caller reaps it through the returned
/// [`WatcherStart`].
pub fn start_watcher(
    dir: &RunDir,
    name: &str,
    initial: DevIno,
    stdin: OwnedFd,
    out: OwnedFd,
    titles: &[Vec<u8>],
) -> Result<WatcherStart> {
    match sys::fork_checked().map_err(|e| Error::io("fork watcher", e))? {
        Forked::Child => match sys::fork_checked() {
            Ok(Forked::Child) => {
                // Our command line was the client's: the first caller's
                // arguments, which a daemon must not show for its life.
                let titles: Vec<&[u8]> = titles.iter().map(Vec::as_slice).collect();
                let _ = sys::set_title(&titles);
                become_watcher(dir.as_fd(), name, initial, stdin, out)
            }
            Ok(Forked::Parent(_)) => sys::exit_now(0),
            Err(e) => {
                report(format_args!("fork watcher daemon: {e}"));
                sys::exit_now(127)
            }
        },
        Forked::Parent(pid) => Ok(WatcherStart { pid: Some(pid) }),
    }
}

/// The watcher daemon (design.md §3.2).
///
/// On entry: fds 0-2 are still the caller's; `stdin` and `out` are the
/// watcher's ends of its two pipes; other fds are whatever the client had.
/// It becomes a session leader with fd 0 = `stdin` (non-blocking), fds 1
/// and 2 = `out`, and nothing else open but its inotify fd, in the run
/// directory `dir` (so it names the socket relative to the directory the
/// client checked, never through a path that could change).
///
/// It exits 0 when the socket path disappears or names another inode, or
/// when anything happens on its stdin (EOF: the server has gone). Errors go
/// to stderr, which the server reads and logs before quitting.
fn become_watcher(
    dir: BorrowedFd<'_>,
    name: &str,
    initial: DevIno,
    stdin: OwnedFd,
    out: OwnedFd,
) -> ! {
    let _ = nix::unistd::setsid();
    let arranged = dup2_stdin(&stdin)
        .and_then(|()| dup2_stdout(&out))
        .and_then(|()| dup2_stderr(&out));
    if arranged.is_err() {
        sys::exit_now(127);
    }
    std::mem::forget(stdin); // closed by close_fds_from below
    std::mem::forget(out);
    let dir_fd = dir.as_raw_fd();
    // SAFETY: a fork child about to run only `watch`, which opens its own
    // fds; the two owners above were forgotten, and `dir` (kept) is used
    // only by the fchdir below.
    unsafe { sys::close_fds_from(3, &[dir_fd]) };
    if nix::unistd::fchdir(dir).is_err() {
        report(format_args!("watcher: cannot enter the run directory"));
        sys::exit_now(127);
    }
    let _ = nix::unistd::close(dir_fd);
    match watch(Path::new(name), initial) {
        Ok(()) => sys::exit_now(0),
        Err(e) => {
            report(format_args!("watcher: {e}"));
            sys::exit_now(127)
        }
    }
}

/// The watcher's loop: returns Ok when it is time to go.
///
/// It watches the run directory (its cwd) for names leaving or arriving
/// (`IN_DELETE`, `IN_MOVED_FROM`, `IN_MOVED_TO`), and stats the socket's
/// name after each event. The kernel sends these once the name has left
/// the dentry cache, so the `stat` that follows sees what the event
/// reported. A watch on the socket itself would not do: an unlink's
/// `IN_ATTRIB` (its link count dropping) comes before the name is
/// removed, a `stat` racing with it can still find the old inode, and
/// when the socket has a second link no later event on the inode follows
/// (seen as a `--kill` that found the old server still listening).
fn watch(socket_path: &Path, initial: DevIno) -> Result<()> {
    let stdin = std::io::stdin();
    sys::set_nonblocking(stdin.as_fd(), true)
        .map_err(|e| Error::io("make stdin non-blocking", e))?;

    let inotify = Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK)
        .map_err(|e| Error::io("inotify_init", e))?;
    let mask = AddWatchFlags::IN_DELETE | AddWatchFlags::IN_MOVED_FROM | AddWatchFlags::IN_MOVED_TO;
    inotify
        .add_watch(Path::new("."), mask)
        .map_err(|e| Error::io("watch the run directory", e))?;
    // The socket may have been replaced before the watch existed.
    if socket_replaced(socket_path, initial)? {
        return Ok(());
    }
    loop {
        let mut fds = [
            PollFd::new(stdin.as_fd(), PollFlags::POLLIN),
            PollFd::new(inotify.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(Error::io("poll", e)),
        }
        let stdin_ready = !fds[0].revents().unwrap_or(PollFlags::empty()).is_empty();
        let inotify_ready = !fds[1].revents().unwrap_or(PollFlags::empty()).is_empty();
        if stdin_ready {
            let mut b = [0u8; 1];
            match nix::unistd::read(&stdin, &mut b) {
                Ok(_) => return Ok(()), // EOF (server gone) or a poke
                Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(Error::io("read sentinel stdin", e)),
            }
        }
        // Any event, whatever name it is for (or a queue overflow): one
        // stat answers for all of them.
        if inotify_ready {
            match inotify.read_events() {
                Ok(_) | Err(nix::errno::Errno::EAGAIN) => {}
                Err(e) => return Err(Error::io("read inotify events", e)),
            }
            if socket_replaced(socket_path, initial)? {
                return Ok(());
            }
        }
    }
}

/// Is the socket gone, or a different inode from the one we watch?
fn socket_replaced(path: &Path, initial: DevIno) -> Result<bool> {
    match nix::sys::stat::stat(path) {
        Ok(st) => Ok(not_our_socket(&st, initial)),
        Err(nix::errno::Errno::ENOENT) => Ok(true),
        Err(e) => Err(Error::io(format!("stat socket {}", path.display()), e)),
    }
}

/// Does `st` (what the socket path names now) show our socket has gone?
/// (Another inode, or ours with no link left.)
fn not_our_socket(st: &libc::stat, initial: DevIno) -> bool {
    st.st_dev != initial.dev || st.st_ino != initial.ino || st.st_nlink == 0
}

/// The fds the setup process hands to the script, in `PREFORK_INTERP` order.
pub struct SetupFds {
    /// Listening socket (already non-blocking).
    pub listen: OwnedFd,
    /// Server end of the first call's socketpair.
    pub call: OwnedFd,
    /// Write end of the watcher's stdin pipe.
    pub watchi: OwnedFd,
    /// Read end of the watcher's output pipe (already non-blocking).
    pub watche: OwnedFd,
    /// The server record's path (`record1`, protocol.md §8), if one was
    /// made (not an fd: a library that does not know `record1` would keep
    /// it open in every call).
    pub record: Option<PathBuf>,
}

/// Fork the setup process, which execs the interpreter on the script with
/// `PREFORK_INTERP` set, announcing `inplace1` (protocol.md §7). Returns
/// its pid; the caller waits for it.
pub fn start_setup(
    exec_argv: &[OsString],
    stamp: (i64, u32),
    fds: &SetupFds,
) -> Result<libc::pid_t> {
    let env = SetupEnv {
        stamp_secs: stamp.0,
        stamp_nsecs: stamp.1,
        listen: fds.listen.as_raw_fd(),
        call: fds.call.as_raw_fd(),
        watchi: fds.watchi.as_raw_fd(),
        watche: fds.watche.as_raw_fd(),
        in_place: true,
        record: fds
            .record
            .as_ref()
            .map(|p| p.as_os_str().as_bytes().to_vec()),
    };
    let argv = exec_argv
        .iter()
        .map(|a| CString::new(a.as_bytes()))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|_| Error::msg("argument contains a NUL byte"))?;
    let mut envp: Vec<CString> = std::env::vars_os()
        .filter(|(k, _)| k != ENV_VAR)
        .filter_map(|(k, v)| {
            let mut e = k.as_bytes().to_vec();
            e.push(b'=');
            e.extend_from_slice(v.as_bytes());
            CString::new(e).ok()
        })
        .collect();
    let mut value = format!("{ENV_VAR}=").into_bytes();
    value.extend_from_slice(&env.format());
    envp.push(
        CString::new(value).map_err(|_| Error::msg("run directory path contains a NUL byte"))?,
    );
    let keep = [env.listen, env.call, env.watchi, env.watche];

    let client = nix::unistd::getpid();
    match sys::fork_checked().map_err(|e| Error::io("fork setup", e))? {
        Forked::Child => become_setup(client, &exec_argv[0], &argv, &envp, &keep),
        Forked::Parent(pid) => {
            // Its own group, as the child makes it too: whichever runs
            // first, the group exists before we hand it the terminal.
            let child = nix::unistd::Pid::from_raw(pid);
            let _ = nix::unistd::setpgid(child, child);
            Ok(pid)
        }
    }
}

/// The setup process (design.md §3.3).
///
/// On entry: fds 0-2 are the caller's; `keep` are the four protocol fds
/// (close-on-exec); the lock and the client's end of the first call are
/// close-on-exec too. Before exec: fd 0 is /dev/null, fds 1 and 2 are the
/// caller's stderr, and the `keep` fds are inherited by the interpreter.
/// It leads a process group of its own (`client::terminal`). The kernel
/// sends it SIGINT if the `client` dies (`PR_SET_PDEATHSIG`
/// survives exec): a setup process running the first call in place
/// (protocol.md §7) then gets what a served call's group gets on a
/// hang-up, and the library need not ask for it.
fn become_setup(
    client: nix::unistd::Pid,
    interp: &OsString,
    argv: &[CString],
    envp: &[CString],
    keep: &[RawFd],
) -> ! {
    let prepared = (|| -> std::io::Result<()> {
        // A process group of its own, as a shell gives a job
        // (`client::terminal`).
        nix::unistd::setpgid(nix::unistd::Pid::from_raw(0), nix::unistd::Pid::from_raw(0))?;
        nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGINT)?;
        if nix::unistd::getppid() != client {
            // The client died before the line above: nobody waits for us.
            sys::exit_now(127);
        }
        sys::null_stdio(&[0])?;
        // SAFETY: fd 2 is the caller's stderr, open for our whole life
        // (ensure_stdio_open), and borrowed only for this call.
        dup2_stdout(unsafe { BorrowedFd::borrow_raw(2) })?;
        for &fd in keep {
            sys::clear_cloexec(fd)?;
        }
        // The server outlives this call: it must hold none of the caller's
        // other fds (a pipe's reader would never see EOF), and start with
        // the script's own signal state, not this caller's (protocol.md
        // §6.4 step 6): every signal default, nothing blocked.
        // SAFETY: a fork child about to exec: after this only `keep`, fds
        // 0-2 and the exec arguments (memory, not fds) are used.
        unsafe { sys::close_fds_from(3, keep) };
        sys::reset_signals();
        Ok(())
    })();
    if let Err(e) = prepared {
        report(format_args!("prepare setup process: {e}"));
        sys::exit_now(127);
    }
    let err = match CString::new(interp.as_bytes()) {
        Ok(file) => match nix::unistd::execvpe(&file, argv, envp) {
            Err(e) => e,
            Ok(never) => match never {},
        },
        Err(_) => nix::errno::Errno::EINVAL,
    };
    let name = interp.to_string_lossy();
    match err {
        nix::errno::Errno::ENOENT if !name.contains('/') => {
            report(format_args!("interpreter {name:?} not found in PATH"));
        }
        nix::errno::Errno::ENOENT => report(format_args!("interpreter {name:?} not found")),
        err => report(format_args!("execute interpreter {name:?}: {}", err.desc())),
    }
    sys::exit_now(127)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unlinked_or_other_inode_is_not_our_socket() {
        let path = std::env::temp_dir();
        let st = nix::sys::stat::stat(&path).unwrap();
        let ours = DevIno {
            dev: st.st_dev,
            ino: st.st_ino,
        };
        assert!(!not_our_socket(&st, ours));
        let mut unlinked = st;
        unlinked.st_nlink = 0;
        assert!(not_our_socket(&unlinked, ours));
        let other = DevIno {
            dev: st.st_dev,
            ino: st.st_ino + 1,
        };
        assert!(not_our_socket(&st, other));
    }
}
