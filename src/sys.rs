//! Thin wrappers over the few system calls that need `unsafe` or that nix
//! does not offer in the shape we need: the raw `struct utsname`, fork,
//! `dup2` onto a given number, closing every other fd, `execvpe`, raw wait
//! statuses and re-raising a signal with its default action.
//!
//! Every `unsafe` block in the crate outside received-fd adoption in
//! `protocol` lives here, each with a `SAFETY:` comment.

use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::RawFd;
use std::os::unix::ffi::OsStrExt;

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

/// `dup2(old, new)`, retrying on EINTR.
///
/// Only for fork children arranging their fds 0-2 before exec, or for
/// filling closed stdio fds at start-up: it replaces whatever `new` was.
pub fn dup_onto(old: RawFd, new: RawFd) -> io::Result<()> {
    loop {
        // SAFETY: dup2 only manipulates the fd table; the callers own `new`
        // (a stdio slot they are deliberately replacing).
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
/// Used by the watcher daemon, which must not hold on to the caller's
/// files (a `$(script)` substitution would otherwise wait for it).
pub fn close_fds_from(from: RawFd, keep: &[RawFd]) {
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
            // SAFETY: close_range only closes fds; our caller (a fork child
            // about to become a daemon) owns the whole fd table.
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

/// `flock(fd, op)` (one attempt; EINTR is returned to the caller).
pub fn flock(fd: std::os::fd::BorrowedFd<'_>, op: libc::c_int) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: flock only acts on the open file behind a valid borrowed fd.
    check(unsafe { libc::flock(fd.as_raw_fd(), op) }).map(drop)
}

/// `execvpe(file, argv, envp)`: returns only on failure.
pub fn execvpe(file: &OsStr, argv: &[CString], envp: &[CString]) -> io::Error {
    let Ok(file) = CString::new(file.as_bytes()) else {
        return io::Error::from_raw_os_error(libc::EINVAL);
    };
    let mut argv_p: Vec<*const libc::c_char> = argv.iter().map(|s| s.as_ptr()).collect();
    argv_p.push(std::ptr::null());
    let mut envp_p: Vec<*const libc::c_char> = envp.iter().map(|s| s.as_ptr()).collect();
    envp_p.push(std::ptr::null());
    // SAFETY: every pointer is to a NUL-terminated string owned by `argv`,
    // `envp` or `file`, all alive across the call; both arrays end in NULL.
    unsafe { libc::execvpe(file.as_ptr(), argv_p.as_ptr(), envp_p.as_ptr()) };
    io::Error::last_os_error()
}

/// Die of `sig` with its default action: reset the handler, unblock it,
/// raise it. Returns only if the signal did not kill us.
pub fn raise_default(sig: libc::c_int) {
    // SAFETY: installing SIG_DFL and changing our own mask are always sound;
    // the structs are zero-initialised plain data.
    unsafe {
        if sig != libc::SIGKILL {
            libc::signal(sig, libc::SIG_DFL);
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, sig);
            libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
        }
        libc::raise(sig);
    }
}

/// The description `strsignal(3)` gives, e.g. "Segmentation fault".
pub fn signal_name(sig: libc::c_int) -> String {
    // SAFETY: strsignal returns a pointer to a static or thread-local
    // NUL-terminated string, which we copy at once.
    let p = unsafe { libc::strsignal(sig) };
    if p.is_null() {
        return format!("signal {sig}");
    }
    // SAFETY: non-null pointer to a NUL-terminated string (see above).
    unsafe { std::ffi::CStr::from_ptr(p) }
        .to_string_lossy()
        .into_owned()
}

/// Make sure fds 0, 1 and 2 are open (on /dev/null if they were closed),
/// so no socket or pipe we create later lands on a stdio number.
pub fn ensure_stdio_open() -> io::Result<()> {
    for fd in 0..3 {
        // SAFETY: F_GETFD only queries the fd table.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } == -1 {
            let null = std::fs::OpenOptions::new()
                .read(fd == 0)
                .write(fd != 0)
                .open("/dev/null")?;
            use std::os::fd::IntoRawFd;
            let raw = null.into_raw_fd();
            if raw != fd {
                dup_onto(raw, fd)?;
                // SAFETY: `raw` came from into_raw_fd just above; we own it.
                unsafe { libc::close(raw) };
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
