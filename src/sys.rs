//! Thin wrappers over the system calls nix does not offer in the shape we
//! need, each for a reason: the raw `struct utsname` bytes (the identity
//! hash needs them exactly), fork (nix's is `unsafe` with the same
//! contract), `dup2` onto any number (nix's `dup2` wants an `OwnedFd`
//! target), closing every other fd, raw wait statuses (sent on the wire as
//! they are), signal numbers and sets including real-time signals (nix's
//! `Signal` has none), dispositions saved whole, resource limits and the
//! nice value by number, pidfds, and adopting inherited fds.
//!
//! Every `unsafe` block in the crate lives here, except where fds are
//! adopted (received by SCM_RIGHTS in `protocol`, inherited through
//! `PREFORK_INTERP` in `server::setup`), each with a `SAFETY:` comment.

use std::io;
use std::os::fd::RawFd;

/// Size of the C `struct utsname` (390 bytes on Linux/glibc).
pub const UTSNAME_LEN: usize = std::mem::size_of::<libc::utsname>();

fn check(r: libc::c_int) -> io::Result<libc::c_int> {
    if r == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// The raw bytes of `struct utsname` as `uname(2)` fills it, zero-padded:
/// exactly what the C client feeds into the identity hash.
pub fn uname_raw() -> io::Result<[u8; UTSNAME_LEN]> {
    // SAFETY: utsname is plain old data (arrays of c_char), so all-zero is a
    // valid value; uname writes only within the struct we pass.
    let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: `uts` is a valid, writable utsname.
    check(unsafe { libc::uname(&mut uts) })?;
    // SAFETY: utsname has no padding (six c_char arrays), so viewing it as
    // UTSNAME_LEN initialised bytes is sound.
    let bytes: [u8; UTSNAME_LEN] = unsafe { std::mem::transmute(uts) };
    Ok(bytes)
}

/// A file's identity: device and inode numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DevIno {
    /// `st_dev`.
    pub dev: libc::dev_t,
    /// `st_ino`.
    pub ino: libc::ino_t,
}

impl DevIno {
    /// The identity of the file `md` describes.
    pub fn of(md: &std::fs::Metadata) -> DevIno {
        use std::os::unix::fs::MetadataExt;
        DevIno {
            dev: md.dev(),
            ino: md.ino(),
        }
    }

    /// The identity of the file `st` describes.
    pub fn from_stat(st: &libc::stat) -> DevIno {
        DevIno {
            dev: st.st_dev,
            ino: st.st_ino,
        }
    }
}

/// Which side of a fork we are on.
pub enum Forked {
    /// In the parent: the child's pid.
    Parent(libc::pid_t),
    /// In the child.
    Child,
}

/// `fork(2)`.
///
/// # Safety
/// The calling process must be single-threaded (as the client always is,
/// and as `server` checks before it forks), so the child can use any
/// function, including the allocator. The child must end in `exec` or
/// `_exit` (the `become_*` functions), never return into the caller's
/// logic by accident.
pub unsafe fn fork() -> io::Result<Forked> {
    // SAFETY: the caller guarantees the process is single-threaded.
    match check(unsafe { libc::fork() })? {
        0 => Ok(Forked::Child),
        pid => Ok(Forked::Parent(pid)),
    }
}

/// `_exit(2)`: leave at once, running no destructors or atexit handlers
/// (which belong to the parent's copy of the process).
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit is async-signal-safe and always sound to call.
    unsafe { libc::_exit(code) }
}

/// Wait for `pid` and return its raw wait status, retrying on EINTR.
pub fn wait_raw(pid: libc::pid_t) -> io::Result<i32> {
    let mut status = 0;
    loop {
        // SAFETY: `status` is a valid out-pointer for the call.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r == pid {
            return Ok(status);
        }
        let err = io::Error::last_os_error();
        if r == -1 && err.raw_os_error() == Some(libc::EINTR) {
            continue;
        }
        if r == -1 {
            return Err(err);
        }
        return Err(io::Error::other(format!("waitpid({pid}) returned {r}")));
    }
}

/// `dup2(old, new)`, retrying on EINTR: the new fd is inheritable.
///
/// # Safety
/// `dup2` silently closes whatever `new` was, so no Rust value may own
/// `new` (an `OwnedFd`, a `File`...): the caller must be deliberately
/// filling that slot (a fork child arranging its stdio before exec, a
/// closed stdio fd at start-up, an executor installing the caller's fds).
pub unsafe fn dup_onto(old: RawFd, new: RawFd) -> io::Result<()> {
    loop {
        // SAFETY: dup2 only manipulates the fd table; the caller
        // guarantees nothing owns `new`.
        let r = unsafe { libc::dup2(old, new) };
        if r == new {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EINTR) {
            return Err(err);
        }
    }
}

/// Close every fd numbered `from` or above except those in `keep`.
///
/// Used by the watcher daemon and the setup process, which must not hold
/// on to the caller's files (a `$(script)` substitution or a pipe's reader
/// would otherwise wait for them).
///
/// # Safety
/// Every `OwnedFd`, `File` or other owner of a closed fd is left dangling,
/// so the caller must be a fork child about to `exec` or to become a
/// daemon that uses only the fds in `keep` (and 0-2) from here on.
pub unsafe fn close_fds_from(from: RawFd, keep: &[RawFd]) {
    let mut start = from as libc::c_uint;
    let mut keep: Vec<libc::c_uint> = keep
        .iter()
        .filter(|&&k| k >= from)
        .map(|&k| k as libc::c_uint)
        .collect();
    keep.sort_unstable();
    keep.push(libc::c_uint::MAX);
    for k in keep {
        if k > start {
            let last = k - 1;
            // SAFETY: close_range only closes fds; our caller guarantees
            // no live owner uses them again.
            let r = unsafe { libc::syscall(libc::SYS_close_range, start, last, 0) };
            if r != 0 {
                close_range_fallback(start, last);
            }
        }
        start = k.saturating_add(1);
    }
}

/// For kernels without close_range(2): close what /proc/self/fd lists.
fn close_range_fallback(first: libc::c_uint, last: libc::c_uint) {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    let fds: Vec<libc::c_uint> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|&fd| fd >= first && fd <= last)
        .collect();
    for fd in fds {
        // SAFETY: as in close_fds_from; closing the directory's own fd
        // (already gone by now) just fails with EBADF.
        unsafe { libc::close(fd as libc::c_int) };
    }
}

/// Let `fd` survive exec (clear `FD_CLOEXEC`).
pub fn clear_cloexec(fd: RawFd) -> io::Result<()> {
    // SAFETY: F_SETFD only changes the flags of an fd; on a closed fd it
    // fails with EBADF, which we report.
    check(unsafe { libc::fcntl(fd, libc::F_SETFD, 0) }).map(drop)
}

/// Die of `sig` with its default action: reset the handler, unblock it,
/// raise it. Returns only if the signal did not kill us.
pub fn raise_default(sig: libc::c_int) {
    if sig != libc::SIGKILL {
        // SAFETY: installing SIG_DFL runs no code of ours.
        unsafe { libc::signal(sig, libc::SIG_DFL) };
        let _ = sigprocmask(libc::SIG_UNBLOCK, Some(&sigset_of(std::iter::once(sig))));
    }
    // SAFETY: raise only sends a signal to this thread.
    unsafe { libc::raise(sig) };
}

/// The description glibc's `strsignal(3)` gives, e.g. "Segmentation
/// fault", whatever C library this is linked against (musl words some
/// differently), so that messages are the C client's.
pub fn signal_name(sig: libc::c_int) -> String {
    let text = match sig {
        libc::SIGHUP => "Hangup",
        libc::SIGINT => "Interrupt",
        libc::SIGQUIT => "Quit",
        libc::SIGILL => "Illegal instruction",
        libc::SIGTRAP => "Trace/breakpoint trap",
        libc::SIGABRT => "Aborted",
        libc::SIGBUS => "Bus error",
        libc::SIGFPE => "Floating point exception",
        libc::SIGKILL => "Killed",
        libc::SIGUSR1 => "User defined signal 1",
        libc::SIGSEGV => "Segmentation fault",
        libc::SIGUSR2 => "User defined signal 2",
        libc::SIGPIPE => "Broken pipe",
        libc::SIGALRM => "Alarm clock",
        libc::SIGTERM => "Terminated",
        #[cfg(not(any(target_arch = "mips", target_arch = "mips64", target_arch = "sparc64")))]
        libc::SIGSTKFLT => "Stack fault",
        libc::SIGCHLD => "Child exited",
        libc::SIGCONT => "Continued",
        libc::SIGSTOP => "Stopped (signal)",
        libc::SIGTSTP => "Stopped",
        libc::SIGTTIN => "Stopped (tty input)",
        libc::SIGTTOU => "Stopped (tty output)",
        libc::SIGURG => "Urgent I/O condition",
        libc::SIGXCPU => "CPU time limit exceeded",
        libc::SIGXFSZ => "File size limit exceeded",
        libc::SIGVTALRM => "Virtual timer expired",
        libc::SIGPROF => "Profiling timer expired",
        libc::SIGWINCH => "Window changed",
        libc::SIGIO => "I/O possible",
        libc::SIGPWR => "Power failure",
        libc::SIGSYS => "Bad system call",
        // glibc keeps 32 and 33 for itself and numbers the rest from 34.
        34..=64 => return format!("Real-time signal {}", sig - 34),
        _ => return format!("Unknown signal {sig}"),
    };
    text.to_owned()
}

/// Put `/dev/null` (opened for reading and writing) on each of the given
/// stdio fds (0, 1 or 2; other numbers are ignored).
pub fn null_stdio(fds: &[RawFd]) -> io::Result<()> {
    if fds.is_empty() {
        return Ok(());
    }
    let null = std::fs::File::options()
        .read(true)
        .write(true)
        .open("/dev/null")?;
    for &fd in fds {
        match fd {
            0 => nix::unistd::dup2_stdin(&null)?,
            1 => nix::unistd::dup2_stdout(&null)?,
            2 => nix::unistd::dup2_stderr(&null)?,
            _ => {}
        }
    }
    Ok(())
}

/// Make sure fds 0, 1 and 2 are open (on /dev/null if they were closed),
/// so no socket or pipe we create later lands on a stdio number.
pub fn ensure_stdio_open() -> io::Result<()> {
    let closed: Vec<RawFd> = (0..3).filter(|&fd| !fd_is_open(fd)).collect();
    null_stdio(&closed)
}

/// Set or clear `O_NONBLOCK` on `fd`.
pub fn set_nonblocking(fd: std::os::fd::BorrowedFd<'_>, on: bool) -> io::Result<()> {
    use nix::fcntl::{FcntlArg, OFlag, fcntl};
    let flags = OFlag::from_bits_retain(fcntl(fd, FcntlArg::F_GETFL)?);
    let flags = if on {
        flags | OFlag::O_NONBLOCK
    } else {
        flags - OFlag::O_NONBLOCK
    };
    fcntl(fd, FcntlArg::F_SETFL(flags))?;
    Ok(())
}

// ---------------------------------------------------------------------------
// Process attributes a call carries (protocol.md §6.3-6.4): read by the
// client, applied by the Rust executor.

/// Signal numbers a process can have a disposition or mask bit for: 1-64,
/// without glibc's two internal real-time signals (32 and 33), which its
/// `sigaction` refuses.
pub fn all_signals() -> impl Iterator<Item = libc::c_int> {
    (1..=64).filter(|&s| s != 32 && s != 33)
}

// Signal sets and masks bit by bit, as the kernel has them (bit `sig - 1`
// of the set's first 64 bits), and the mask through `rt_sigprocmask`
// itself: the C libraries keep some real-time signals for themselves and
// their wrappers refuse or hide those (glibc's 32 and 33, musl's 32 to
// 34), while a caller's mask, or a signal to forward, may hold any of them.

/// The 64 bits of `set` the kernel reads (Linux: 64 signals).
fn sigset_bits(set: &libc::sigset_t) -> u64 {
    // SAFETY: sigset_t is at least 64 bits of plain data on Linux (glibc
    // and musl: 1024), its first 64 the kernel's set; read unaligned-safe.
    unsafe { std::ptr::read_unaligned(std::ptr::from_ref(set).cast::<u64>()) }
}

/// A `sigset_t` holding the 64 bits `bits` (the kernel's set).
fn sigset_from_bits(bits: u64) -> nix::sys::signal::SigSet {
    // SAFETY: all-zero is an empty sigset_t (plain data), and its first 64
    // bits are the kernel's set, written in place.
    unsafe {
        let mut raw: libc::sigset_t = std::mem::zeroed();
        std::ptr::write_unaligned(std::ptr::from_mut(&mut raw).cast::<u64>(), bits);
        nix::sys::signal::SigSet::from_sigset_t_unchecked(raw)
    }
}

/// The bit of signal `sig` (1-64), or 0 for any other number.
fn signal_bit(sig: libc::c_int) -> u64 {
    if (1..=64).contains(&sig) {
        1 << (sig - 1)
    } else {
        0
    }
}

/// A signal set holding `sigs`, real-time signals included (nix's
/// `Signal` has none); numbers outside 1-64 are left out.
pub fn sigset_of(sigs: impl Iterator<Item = libc::c_int>) -> nix::sys::signal::SigSet {
    sigset_from_bits(sigs.fold(0, |bits, s| bits | signal_bit(s)))
}

/// Is `sig` in `set`? (Real-time signals included.)
pub fn sigset_has(set: &nix::sys::signal::SigSet, sig: libc::c_int) -> bool {
    sigset_bits(set.as_ref()) & signal_bit(sig) != 0
}

/// `rt_sigprocmask(how, set)` (`how`: `libc::SIG_BLOCK`, `SIG_UNBLOCK` or
/// `SIG_SETMASK`; no set: a query): this thread's mask before the call.
pub fn sigprocmask(
    how: libc::c_int,
    set: Option<&nix::sys::signal::SigSet>,
) -> io::Result<nix::sys::signal::SigSet> {
    let new = set.map(|s| sigset_bits(s.as_ref()));
    let mut old = 0u64;
    let new_ptr = new.as_ref().map_or(std::ptr::null(), std::ptr::from_ref);
    // SAFETY: the kernel reads 8 bytes from `new_ptr` (null: no change) and
    // writes 8 to `old`, both valid u64s; only this thread's mask changes.
    let r = unsafe {
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            how,
            new_ptr,
            std::ptr::from_mut(&mut old),
            std::mem::size_of::<u64>(),
        )
    };
    if r == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(sigset_from_bits(old))
}

/// Is `sig` pending for this process or thread (`sigpending`)?
pub fn signal_pending(sig: libc::c_int) -> bool {
    // SAFETY: sigpending fills the set we pass; all-zero is a valid start.
    unsafe {
        let mut raw: libc::sigset_t = std::mem::zeroed();
        libc::sigpending(&mut raw) == 0 && sigset_bits(&raw) & signal_bit(sig) != 0
    }
}

/// Is `sig` set to `SIG_IGN`? (A query: changes nothing.)
pub fn signal_is_ignored(sig: libc::c_int) -> bool {
    get_signal(sig).is_ok_and(|saved| saved.action.sa_sigaction == libc::SIG_IGN)
}

/// `getpriority(PRIO_PROCESS, 0)`: our nice value.
pub fn nice_value() -> io::Result<i32> {
    // getpriority may legitimately return -1, so errno tells failure apart.
    // SAFETY: __errno_location returns this thread's errno slot.
    unsafe { *libc::__errno_location() = 0 };
    // SAFETY: getpriority takes no pointers.
    let r = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
    let err = io::Error::last_os_error();
    if r == -1 && err.raw_os_error() != Some(0) {
        return Err(err);
    }
    Ok(r)
}

/// `setpriority(PRIO_PROCESS, 0, nice)`.
pub fn set_nice_value(nice: i32) -> io::Result<()> {
    // SAFETY: setpriority takes no pointers and affects only this process.
    check(unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) }).map(drop)
}

/// Number of resource limits the kernel has (`RLIM_NLIMITS` on Linux).
pub const RLIMIT_COUNT: u32 = 16;

// The resource numbers as `get_rlimit` and `set_rlimit` take them: the
// C libraries' constants differ in type (glibc's are unsigned, musl's int).
/// `RLIMIT_CORE`.
#[allow(clippy::unnecessary_cast)]
pub const RLIMIT_CORE: u32 = libc::RLIMIT_CORE as u32;
/// `RLIMIT_NOFILE`.
#[allow(clippy::unnecessary_cast)]
pub const RLIMIT_NOFILE: u32 = libc::RLIMIT_NOFILE as u32;

/// `getrlimit(resource)` by number: (soft, hard), `RLIM_INFINITY` as
/// `u64::MAX`.
pub fn get_rlimit(resource: u32) -> io::Result<(u64, u64)> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid out-pointer; an unknown resource is EINVAL.
    check(unsafe { libc::getrlimit(resource as _, &mut lim) })?;
    Ok((lim.rlim_cur, lim.rlim_max))
}

/// `setrlimit(resource, soft, hard)` by number.
pub fn set_rlimit(resource: u32, soft: u64, hard: u64) -> io::Result<()> {
    let lim = libc::rlimit {
        rlim_cur: soft,
        rlim_max: hard,
    };
    // SAFETY: `lim` is a valid struct read by the call.
    check(unsafe { libc::setrlimit(resource as _, &lim) }).map(drop)
}

/// Is `fd` open and inherited across exec (no `FD_CLOEXEC`)?
pub fn fd_is_inheritable(fd: RawFd) -> bool {
    // SAFETY: F_GETFD only queries the fd table.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    flags >= 0 && flags & libc::FD_CLOEXEC == 0
}

/// Is `fd` open?
pub fn fd_is_open(fd: RawFd) -> bool {
    // SAFETY: F_GETFD only queries the fd table.
    unsafe { libc::fcntl(fd, libc::F_GETFD) >= 0 }
}

/// Every signal back to `SIG_DFL` and nothing blocked: the state a fresh
/// server starts in (protocol.md §6.4 step 6), set in a fork child before
/// exec.
pub fn reset_signals() {
    for sig in all_signals().filter(|&s| s != libc::SIGKILL && s != libc::SIGSTOP) {
        // SAFETY: SIG_DFL runs no code of ours; failures (none expected
        // for these numbers) leave that signal as it was.
        unsafe { libc::signal(sig, libc::SIG_DFL) };
    }
    let _ = sigprocmask(libc::SIG_SETMASK, Some(&sigset_of(std::iter::empty())));
}

/// Make sure dying now leaves no core file: soft `RLIMIT_CORE` 0.
pub fn disable_core_dumps() {
    if let Ok((_, hard)) = get_rlimit(RLIMIT_CORE) {
        let _ = set_rlimit(RLIMIT_CORE, 0, hard);
    }
}

// ---------------------------------------------------------------------------
// For the Rust server side (`server`): forking a process that returns into
// the caller's code, pidfds, signal dispositions, syslog.

/// How many threads this process has (the entries of `/proc/self/task`).
pub fn thread_count() -> io::Result<usize> {
    Ok(std::fs::read_dir("/proc/self/task")?.count())
}

fn check_single_threaded() -> io::Result<()> {
    match thread_count()? {
        1 => Ok(()),
        n => Err(io::Error::other(format!(
            "the process has {n} threads, and forking a multi-threaded process is unsound"
        ))),
    }
}

/// `fork(2)` made safe by checking first that this process has a single
/// thread (which costs a few microseconds: one read of `/proc/self/task`).
///
/// Fails, without forking, when the process has more threads or when the
/// thread count cannot be read. Unlike [`fork`], the child may run any
/// code, including returning into the caller's logic.
pub fn fork_checked() -> io::Result<Forked> {
    check_single_threaded()?;
    // SAFETY: the process has exactly one thread, the one running this
    // code, so no lock (in the allocator, stdio, ...) can be held by a
    // thread that the child would not have; nothing between the check and
    // the fork can start a thread.
    unsafe { fork() }
}

/// Make `entries` the whole environment, in order, at the cost of one
/// pointer each: `environ` is pointed at them, with no copy and no
/// `setenv` (which scans the environment each time, so is quadratic for a
/// large one). Each entry is `NAME=value` and NUL-terminated, and lives
/// for the rest of the process.
///
/// # Safety
/// Nothing else may read or write the environment meanwhile: the process
/// must be single-threaded (a fork child of our single-threaded server, or
/// the setup process running the first call, checked single-threaded).
pub unsafe fn set_environ(entries: &[&'static std::ffi::CStr]) {
    unsafe extern "C" {
        static mut environ: *const *const libc::c_char;
    }
    let mut pointers: Vec<*const libc::c_char> = entries.iter().map(|e| e.as_ptr()).collect();
    pointers.push(std::ptr::null());
    // SAFETY: the caller guarantees no other thread touches the
    // environment; the array and its strings are leaked, so they outlive
    // every later reader, and glibc copies the array before changing it
    // (setenv), as it does for any environment it did not allocate.
    unsafe { environ = pointers.leak().as_ptr() };
}

/// `pidfd_open(2)`: an fd that polls readable when process `pid` (our
/// child, not yet reaped) has exited. Close-on-exec.
pub fn pidfd_open(pid: libc::pid_t) -> io::Result<std::os::fd::OwnedFd> {
    // SAFETY: pidfd_open only creates a new fd; it takes no pointers.
    let r = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = RawFd::try_from(r).map_err(|_| io::Error::other("pidfd_open: fd out of range"))?;
    // SAFETY: the kernel just created this fd for us; nothing else owns it.
    Ok(unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) })
}

/// `waitpid(pid, WNOHANG)`: the raw wait status if `pid` has exited (and
/// is now reaped), `None` if it is still running. Retries on EINTR.
pub fn try_wait_raw(pid: libc::pid_t) -> io::Result<Option<i32>> {
    wait_nohang(pid, 0)
}

/// `waitpid(pid, WNOHANG | WUNTRACED)`: the raw wait status if `pid` has
/// stopped or exited (then reaped), `None` if neither. Retries on EINTR.
pub fn try_wait_untraced(pid: libc::pid_t) -> io::Result<Option<i32>> {
    wait_nohang(pid, libc::WUNTRACED)
}

fn wait_nohang(pid: libc::pid_t, flags: libc::c_int) -> io::Result<Option<i32>> {
    let mut status = 0;
    loop {
        // SAFETY: `status` is a valid out-pointer for the call.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG | flags) };
        match r {
            0 => return Ok(None),
            r if r == pid => return Ok(Some(status)),
            -1 => {
                let err = io::Error::last_os_error();
                if err.raw_os_error() != Some(libc::EINTR) {
                    return Err(err);
                }
            }
            r => return Err(io::Error::other(format!("waitpid({pid}) returned {r}"))),
        }
    }
}

/// `kill(target, sig)` with a raw signal number, real-time signals
/// included (nix's `Signal` has none); a negative `target` is a process
/// group.
pub fn send_signal(target: libc::pid_t, sig: libc::c_int) -> nix::Result<()> {
    // SAFETY: kill takes no pointers; it only sends a signal.
    nix::errno::Errno::result(unsafe { libc::kill(target, sig) }).map(drop)
}

/// Wait for any child: its pid and raw wait status, or `None` when there
/// are no children left (ECHILD). Retries on EINTR.
pub fn wait_any_raw() -> io::Result<Option<(libc::pid_t, i32)>> {
    let mut status = 0;
    loop {
        // SAFETY: `status` is a valid out-pointer for the call.
        let r = unsafe { libc::waitpid(-1, &mut status, 0) };
        if r > 0 {
            return Ok(Some((r, status)));
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::ECHILD) => return Ok(None),
            _ => return Err(err),
        }
    }
}

/// A disposition to give a signal with [`set_signal`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// `SIG_DFL`.
    Default,
    /// `SIG_IGN`.
    Ignore,
}

/// A signal's disposition as it was before [`set_signal`] changed it.
pub struct SavedSignal {
    sig: libc::c_int,
    action: libc::sigaction,
}

impl std::fmt::Debug for SavedSignal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SavedSignal({})", self.sig)
    }
}

/// Set `sig` to `SIG_DFL` or `SIG_IGN`, returning what it was.
pub fn set_signal(sig: libc::c_int, to: Disposition) -> io::Result<SavedSignal> {
    // SAFETY: sigaction is plain data; all-zero is a valid value (empty
    // mask, no flags, handler SIG_DFL).
    let mut new: libc::sigaction = unsafe { std::mem::zeroed() };
    new.sa_sigaction = match to {
        Disposition::Default => libc::SIG_DFL,
        Disposition::Ignore => libc::SIG_IGN,
    };
    // SAFETY: as above.
    let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: SIG_DFL and SIG_IGN run no code of ours in signal context;
    // both pointers are to valid sigaction structs.
    check(unsafe { libc::sigaction(sig, &new, &mut old) })?;
    Ok(SavedSignal { sig, action: old })
}

impl SavedSignal {
    /// The signal this is the disposition of.
    pub fn signal(&self) -> libc::c_int {
        self.sig
    }

    /// Was it `SIG_DFL`?
    pub fn is_default(&self) -> bool {
        self.action.sa_sigaction == libc::SIG_DFL
    }
}

/// `sig`'s disposition, to put back later with [`restore_signal`].
pub fn get_signal(sig: libc::c_int) -> io::Result<SavedSignal> {
    // SAFETY: sigaction is plain data, all-zero is valid; a null new-action
    // pointer makes the call a query that fills `old`.
    let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: as above; `old` is a valid out-pointer.
    check(unsafe { libc::sigaction(sig, std::ptr::null(), &mut old) })?;
    Ok(SavedSignal { sig, action: old })
}

/// Put back a disposition saved by [`set_signal`].
pub fn restore_signal(saved: &SavedSignal) -> io::Result<()> {
    // SAFETY: this disposition was in force in this process image before
    // (fork keeps the code and data a handler refers to), so reinstating
    // it is exactly as sound as when the program installed it.
    check(unsafe { libc::sigaction(saved.sig, &saved.action, std::ptr::null_mut()) }).map(drop)
}

/// Take ownership of an fd this process inherited by number (as the
/// `PREFORK_INTERP` variable hands them over). Fails if `fd` is not open.
///
/// # Safety
/// Nothing else in the process may own `fd` (no `File`, `OwnedFd` or
/// other handle that will close it), and `fd` must not be adopted twice:
/// the returned `OwnedFd` closes it when dropped.
pub unsafe fn adopt_fd(fd: RawFd) -> io::Result<std::os::fd::OwnedFd> {
    // SAFETY: F_GETFD only queries the fd table.
    check(unsafe { libc::fcntl(fd, libc::F_GETFD) })?;
    // SAFETY: the fd is open, and the caller guarantees it has no owner.
    Ok(unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) })
}

/// Now, in Unix seconds (0 if the clock is before 1970).
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// `secs` (Unix time) broken down in local time, if the C library can.
fn local_tm(secs: i64) -> Option<libc::tm> {
    // time_t by inference (the libc crate deprecates the name for musl),
    // 64 bits here but not everywhere.
    #[allow(clippy::useless_conversion)]
    let t = secs.try_into().ok()?;
    let mut tm = std::mem::MaybeUninit::<libc::tm>::zeroed();
    // SAFETY: localtime_r reads `t` and writes only the `tm` we pass, which
    // is valid (zeroed) memory of the right type; it is re-entrant.
    let ok = !unsafe { libc::localtime_r(&t, tm.as_mut_ptr()) }.is_null();
    // SAFETY: localtime_r succeeded, so it has filled `tm` in (and a
    // zeroed libc::tm is a valid value anyway).
    ok.then(|| unsafe { tm.assume_init() })
}

/// `secs` (Unix time) as local time, `YYYY-MM-DD HH:MM` (`@SECS` if the
/// C library cannot convert it).
pub fn local_time(secs: i64) -> String {
    match local_tm(secs) {
        Some(tm) => format!(
            "{:04}-{:02}-{:02} {:02}:{:02}",
            tm.tm_year + 1900,
            tm.tm_mon + 1,
            tm.tm_mday,
            tm.tm_hour,
            tm.tm_min
        ),
        None => format!("@{secs}"),
    }
}

/// `secs` (Unix time) as local time, `YYYY-MM-DDTHH:MM:SS`, for logs.
pub fn local_time_iso(secs: i64) -> String {
    match local_tm(secs) {
        Some(tm) => format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
            tm.tm_year + 1900,
            tm.tm_mon + 1,
            tm.tm_mday,
            tm.tm_hour,
            tm.tm_min,
            tm.tm_sec
        ),
        None => format!("@{secs}"),
    }
}

/// Set this process's command line, as `ps` and `/proc/PID/cmdline` show
/// it, to `title`: written over the memory that held the arguments it was
/// started with (found in `/proc/self/stat`, written through
/// `/proc/self/mem`), cut to fit, the rest zeroed. So a long-lived process
/// forked from a call shows no caller's argument. Needs no privilege.
pub fn set_cmdline(title: &[u8]) -> io::Result<()> {
    set_title(&[title])
}

/// [`set_cmdline`] with the first of `titles` that fits the room there is
/// (the last one cut to fit if none does): a program started with short
/// arguments has little room.
pub fn set_title(titles: &[&[u8]]) -> io::Result<()> {
    let stat = std::fs::read("/proc/self/stat")?;
    let bad = || io::Error::other("unexpected /proc/self/stat");
    let after = stat.iter().rposition(|&b| b == b')').ok_or_else(bad)?;
    let fields: Vec<&[u8]> = stat[after + 2..].split(|&b| b == b' ').collect();
    // Fields 48 and 49 (arg_start, arg_end); the list starts at field 3.
    let num = |i: usize| -> io::Result<u64> {
        let f = fields.get(i - 3).ok_or_else(bad)?;
        std::str::from_utf8(f)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .ok_or_else(bad)
    };
    let (start, end) = (num(48)?, num(49)?);
    if end <= start {
        return Err(bad());
    }
    let len = (end - start) as usize;
    let title = titles
        .iter()
        .find(|t| t.len() < len)
        .or(titles.last())
        .copied()
        .unwrap_or_default();
    let mut area = vec![0u8; len];
    let keep = title.len().min(len - 1);
    area[..keep].copy_from_slice(&title[..keep]);
    let mem = std::fs::OpenOptions::new()
        .write(true)
        .open("/proc/self/mem")?;
    std::os::unix::fs::FileExt::write_all_at(&mem, &area, start)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Our table says what glibc's strsignal says, for every number.
    #[cfg(target_env = "gnu")]
    #[test]
    fn signal_names_are_glibcs() {
        for sig in -1..=66 {
            // SAFETY: strsignal returns a NUL-terminated string, copied at
            // once (the test threads do not call it on the same number).
            let glibc = unsafe { std::ffi::CStr::from_ptr(libc::strsignal(sig)) };
            assert_eq!(signal_name(sig), glibc.to_string_lossy(), "signal {sig}");
        }
    }

    #[test]
    fn utsname_is_390_bytes_and_starts_with_sysname() {
        assert_eq!(UTSNAME_LEN, 390);
        let raw = uname_raw().unwrap();
        assert!(raw.starts_with(b"Linux\0"));
    }

    #[test]
    fn signal_names() {
        assert_eq!(signal_name(libc::SIGSEGV), "Segmentation fault");
    }
}
