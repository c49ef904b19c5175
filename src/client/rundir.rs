//! The run directory (SPEC §3, design.md §5): where it is, opening it
//! safely, the per-identity lock, and pruning old identities.
//!
//! In order of preference:
//! 1. `$PREFORK_INTERP_RUN_DIR`, if set and not empty (our extension, for
//!    tests and unusual setups; the C client ignores it), created if
//!    missing;
//! 2. `/var/run/user/<uid>/prefork-interp`, if `/var/run/user/<uid>` is a
//!    directory owned by us with no group or other permission bits;
//! 3. `<home>/.prefork-interp/<node>`, with `<home>` from the passwd entry
//!    (not `$HOME`) and `<node>` the host name up to its first `.` (at most
//!    32 bytes);
//! 4. if the home directory cannot hold it (missing, read-only, not ours
//!    to write): `$TMPDIR/prefork-interp-<uid>` (or `/tmp/...` when
//!    `TMPDIR` is unset or relative), as tmux does.
//!
//! Each identity has a socket `s<ident>`, a lock file `l<ident>`, and, for
//! an interpreter found in `PATH`, the record `i<ident>` of the binary its
//! server runs (`client::interpreter`).
//!
//! **Trust.** Another user who can write in the run directory can answer
//! our calls (and receive the caller's fds and environment) or make us
//! create files where they like. So the directory is opened once, without
//! following a symbolic link as its last component, and checked on the open
//! fd: it must be a directory owned by our effective uid, with no write
//! permission for group or others (`$PREFORK_INTERP_RUN_DIR`), or no
//! permission at all for them (the directories we create: 2-4). A directory
//! failing that is refused with a message saying how to fix it. Everything
//! after that is done relative to the fd, never by path again: the lock is
//! opened with `openat(O_NOFOLLOW)`, and sockets are bound and connected to
//! through `/proc/self/fd/<fd>/<name>`, which the kernel resolves from the
//! open directory, so flipping a symbolic link in the path between two
//! calls changes nothing.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, Flock, FlockArg, OFlag};
use nix::sys::stat::{FileStat, Mode, SFlag};

use crate::error::{Error, Result, report};
use crate::sys::DevIno;

/// Environment variable naming the run directory explicitly.
pub const RUN_DIR_VAR: &str = "PREFORK_INTERP_RUN_DIR";

/// At most this many identities are kept; before a new server is made,
/// the least recently used ones beyond it are removed.
pub const MAX_IDENTITIES: usize = 100;

/// Flags for opening a directory we are about to trust.
const DIR_FLAGS: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_DIRECTORY)
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_CLOEXEC);

/// How much access group and others may have to a run directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    /// Named by the user: may be readable by others, not writable.
    NoWrite,
    /// One of ours: no access for group or others at all.
    Private,
}

impl Access {
    fn forbidden_bits(self) -> u32 {
        match self {
            Access::NoWrite => 0o022,
            Access::Private => 0o077,
        }
    }
}

/// The open, checked run directory.
#[derive(Debug)]
pub struct RunDir {
    /// Its path as found (for messages, and for the length of the
    /// identity, which must match the C client's).
    pub path: PathBuf,
    /// The directory itself: every operation goes through this.
    fd: OwnedFd,
}

impl RunDir {
    /// Find the run directory, create it if needed, open and check it.
    pub fn open() -> Result<RunDir> {
        let uid = nix::unistd::geteuid().as_raw();
        if let Some(dir) = std::env::var_os(RUN_DIR_VAR).filter(|d| !d.is_empty()) {
            let mut path = PathBuf::from(dir);
            if path.is_relative() {
                let cwd =
                    std::env::current_dir().map_err(|e| Error::io("get current directory", e))?;
                path = cwd.join(path);
            }
            return RunDir::at(path);
        }
        if let Some(dir) = var_run_user(uid)? {
            return Ok(dir);
        }
        let user = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
            .map_err(|e| Error::io(format!("look up passwd entry for uid {uid}"), e))?
            .ok_or_else(|| Error::msg(format!("no passwd entry for uid {uid}")))?;
        if let Some(dir) = in_home(&user.dir, uid)? {
            return Ok(dir);
        }
        in_tmp(uid)
    }

    /// The directory at `path`, as `$PREFORK_INTERP_RUN_DIR` names one:
    /// created if missing (its parent must exist), opened and checked.
    pub fn at(path: PathBuf) -> Result<RunDir> {
        open_named(path, nix::unistd::geteuid().as_raw())
    }

    /// A path naming `name` in this directory through our open fd, for
    /// `bind` and `connect`, which take only paths. At most 84
    /// bytes for a 64-character identity, well within a socket address.
    pub fn via_fd(&self, name: &str) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}/{name}", self.fd.as_raw_fd()))
    }

    /// `name`'s full path, for messages.
    pub fn shown(&self, name: &str) -> String {
        self.path.join(name).display().to_string()
    }

    /// The directory's fd, for the watcher to inherit.
    pub fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// `lstat` of `name` in the directory; `None` if there is none.
    pub fn stat(&self, name: &str) -> Result<Option<FileStat>> {
        match nix::sys::stat::fstatat(&self.fd, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(st)),
            Err(Errno::ENOENT) => Ok(None),
            Err(e) => Err(Error::io(format!("stat {}", self.shown(name)), e)),
        }
    }

    /// Remove `name` from the directory; "already gone" is fine. `what`
    /// says why, for the message.
    pub fn remove(&self, name: &str, what: &str) -> Result<()> {
        match nix::unistd::unlinkat(&self.fd, name, nix::unistd::UnlinkatFlags::NoRemoveDir) {
            Ok(()) | Err(Errno::ENOENT) => Ok(()),
            Err(e) => Err(Error::io(format!("{what} {}", self.shown(name)), e)),
        }
    }

    /// Remove everything of the identity `ident`: its socket, its records
    /// (the interpreter binary's `i`, the server's `m`) and, last, its lock
    /// ("already gone" is fine). `--kill`, `--kill-all`, cleaning a stale
    /// entry and pruning all do this, holding the lock.
    pub fn remove_identity(&self, ident: &str) -> Result<()> {
        for (prefix, what) in [
            ('s', "remove socket"),
            ('i', "remove interpreter record"),
            ('m', "remove server record"),
            ('l', "remove lock"),
        ] {
            self.remove(&format!("{prefix}{ident}"), what)?;
        }
        Ok(())
    }

    /// Rename `from` to `to` within the directory (replacing `to`).
    pub fn rename(&self, from: &str, to: &str) -> Result<()> {
        nix::fcntl::renameat(&self.fd, from, &self.fd, to)
            .map_err(|e| Error::io(format!("rename {} to {to}", self.shown(from)), e))
    }

    /// Open `name` in the directory with `flags` (never following a
    /// symbolic link).
    pub fn open_at(&self, name: &str, flags: OFlag, mode: Mode) -> nix::Result<OwnedFd> {
        nix::fcntl::openat(
            &self.fd,
            name,
            flags | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            mode,
        )
    }

    /// The names in the directory.
    pub(super) fn names(&self) -> Result<Vec<OsString>> {
        let read_error = |e| Error::io(format!("read {}", self.path.display()), e);
        std::fs::read_dir(self.via_fd("."))
            .map_err(read_error)?
            .map(|entry| entry.map(|e| e.file_name()).map_err(read_error))
            .collect()
    }
}

/// `$PREFORK_INTERP_RUN_DIR`: create it if missing (its parent must
/// exist), then open and check it.
fn open_named(path: PathBuf, uid: u32) -> Result<RunDir> {
    let open = || nix::fcntl::open(&path, DIR_FLAGS, Mode::empty());
    // Usually it is there and opens: try that first, saving a `mkdir` on
    // every run; otherwise make it, then open it (and say why not).
    let fd = match open() {
        Ok(fd) => fd,
        Err(_) => {
            match nix::unistd::mkdir(&path, Mode::from_bits_truncate(0o700)) {
                Ok(()) | Err(Errno::EEXIST) => {}
                Err(e) => return Err(Error::io(format!("mkdir {}", path.display()), e)),
            }
            open().map_err(|e| open_error(&path, e))?
        }
    };
    check(&fd, &path, uid, Access::NoWrite)?;
    Ok(RunDir { path, fd })
}

/// Why opening a would-be run directory failed, in words. (With
/// `O_DIRECTORY`, a symbolic link gives `ENOTDIR`, not `ELOOP`.)
fn open_error(path: &Path, e: Errno) -> Error {
    let is_link = || std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink());
    match e {
        Errno::ELOOP | Errno::ENOTDIR if is_link() => Error::msg(format!(
            "run directory {} is a symbolic link, which we do not follow: \
             name the directory itself",
            path.display()
        )),
        Errno::ENOTDIR => Error::msg(format!(
            "run directory {} is not a directory",
            path.display()
        )),
        e => Error::io(format!("open run directory {}", path.display()), e),
    }
}

/// Is the open directory `fd` (at `path`) one we may trust?
fn check(fd: &OwnedFd, path: &Path, uid: u32, access: Access) -> Result<()> {
    let st = nix::sys::stat::fstat(fd)
        .map_err(|e| Error::io(format!("fstat run directory {}", path.display()), e))?;
    if st.st_uid != uid {
        return Err(Error::msg(format!(
            "run directory {} is owned by uid {}, not by us (uid {uid}): \
             remove it, or set {RUN_DIR_VAR} to a directory of ours",
            path.display(),
            st.st_uid
        )));
    }
    let mode = st.st_mode & 0o7777;
    if mode & access.forbidden_bits() != 0 {
        let whom = match access {
            Access::NoWrite => "writable by group or others",
            Access::Private => "open to group or others",
        };
        return Err(Error::msg(format!(
            "run directory {} has mode {mode:04o}, {whom}, so another user could \
             answer our calls: run `chmod 700 {}`",
            path.display(),
            path.display()
        )));
    }
    Ok(())
}

/// Make (if needed) and open the private directory `name` in `parent`.
/// `Ok(None)` if it cannot be made there (read-only, no permission): the
/// caller then tries the next place.
fn private_dir(parent: &OwnedFd, name: &OsStr, path: &Path, uid: u32) -> Result<Option<OwnedFd>> {
    let open = || nix::fcntl::openat(parent, name, DIR_FLAGS, Mode::empty());
    // Usually it is there and opens: try that first, saving a `mkdirat` on
    // every run; otherwise make it, then open it (and say why not).
    let fd = match open() {
        Ok(fd) => fd,
        Err(_) => {
            match nix::sys::stat::mkdirat(parent, name, Mode::from_bits_truncate(0o700)) {
                Ok(()) | Err(Errno::EEXIST) => {}
                Err(
                    Errno::EROFS | Errno::EACCES | Errno::EPERM | Errno::ENOSPC | Errno::EDQUOT,
                ) => return Ok(None),
                Err(e) => return Err(Error::io(format!("mkdir {}", path.display()), e)),
            }
            open().map_err(|e| open_error(path, e))?
        }
    };
    check(&fd, path, uid, Access::Private)?;
    Ok(Some(fd))
}

/// Open a directory we only start from (not one we trust for its
/// contents): a symbolic link is fine here. `None` if it is not there or
/// not ours to use.
fn open_base(path: &Path) -> Result<Option<OwnedFd>> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    match nix::fcntl::open(path, flags, Mode::empty()) {
        Ok(fd) => Ok(Some(fd)),
        Err(Errno::ENOENT | Errno::ENOTDIR | Errno::EACCES | Errno::EPERM) => Ok(None),
        Err(e) => Err(Error::io(format!("open {}", path.display()), e)),
    }
}

/// `/var/run/user/<uid>/prefork-interp` if its parent is safe to use.
fn var_run_user(uid: u32) -> Result<Option<RunDir>> {
    let base = PathBuf::from(format!("/var/run/user/{uid}"));
    let fd = match nix::fcntl::open(&base, DIR_FLAGS, Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::ENOENT | Errno::ENOTDIR | Errno::EACCES | Errno::EPERM | Errno::ELOOP) => {
            return Ok(None);
        }
        Err(e) => return Err(Error::io(format!("open {}", base.display()), e)),
    };
    if let Err(e) = check(&fd, &base, uid, Access::Private) {
        report(format_args!(
            "warning: {e}; using the home directory instead"
        ));
        return Ok(None);
    }
    let path = base.join("prefork-interp");
    Ok(private_dir(&fd, OsStr::new("prefork-interp"), &path, uid)?.map(|fd| RunDir { path, fd }))
}

/// `<home>/.prefork-interp/<node>`, or `None` if the home directory is
/// missing or cannot hold it.
fn in_home(home: &Path, uid: u32) -> Result<Option<RunDir>> {
    let Some(home_fd) = open_base(home)? else {
        return Ok(None);
    };
    let top = home.join(".prefork-interp");
    let Some(top_fd) = private_dir(&home_fd, OsStr::new(".prefork-interp"), &top, uid)? else {
        return Ok(None);
    };
    let node = node_name()?;
    let path = top.join(&node);
    Ok(private_dir(&top_fd, &node, &path, uid)?.map(|fd| RunDir { path, fd }))
}

/// `$TMPDIR/prefork-interp-<uid>` (or under `/tmp`): the last resort.
fn in_tmp(uid: u32) -> Result<RunDir> {
    let base = std::env::var_os("TMPDIR")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    let name = format!("prefork-interp-{uid}");
    let path = base.join(&name);
    let made = match open_base(&base)? {
        Some(base_fd) => private_dir(&base_fd, OsStr::new(&name), &path, uid)?,
        None => None,
    };
    match made {
        Some(fd) => Ok(RunDir { path, fd }),
        None => Err(Error::msg(format!(
            "no usable run directory: neither /var/run/user/{uid}, nor the home directory, \
             nor {} can hold one; set {RUN_DIR_VAR} to a directory of ours",
            base.display()
        ))),
    }
}

/// The host name up to its first `.`, at most 32 bytes.
fn node_name() -> Result<OsString> {
    let uts = nix::sys::utsname::uname().map_err(|e| Error::io("uname", e))?;
    let mut node: Vec<u8> = uts.nodename().as_bytes().to_vec();
    if let Some(dot) = node.iter().position(|&b| b == b'.') {
        node.truncate(dot);
    }
    node.truncate(32);
    Ok(OsString::from_vec(node))
}

/// An exclusive `flock` on an identity's lock file, released on drop.
#[derive(Debug)]
pub struct Lock {
    /// Held for its drop, which unlocks (and closes) the file.
    _file: Flock<File>,
}

impl Lock {
    /// Lock `name` in `dir`, creating it (mode 0600) if needed: a regular
    /// file, never through a symbolic link. After locking, make sure the
    /// name still is the file we locked: whoever removed it (`--kill`,
    /// pruning) did so holding the lock, so we try again.
    pub fn acquire(dir: &RunDir, name: &str) -> Result<Lock> {
        loop {
            // O_NONBLOCK: a FIFO planted there must not hang the open.
            let fd = dir
                .open_at(
                    name,
                    OFlag::O_RDWR | OFlag::O_CREAT | OFlag::O_NONBLOCK,
                    Mode::from_bits_truncate(0o600),
                )
                .map_err(|e| match e {
                    Errno::ELOOP => Error::msg(format!(
                        "lock {} is a symbolic link: remove it",
                        dir.shown(name)
                    )),
                    e => Error::io(format!("create lock {}", dir.shown(name)), e),
                })?;
            let held = nix::sys::stat::fstat(&fd)
                .map_err(|e| Error::io(format!("fstat lock {}", dir.shown(name)), e))?;
            if SFlag::from_bits_truncate(held.st_mode & SFlag::S_IFMT.bits()) != SFlag::S_IFREG {
                return Err(Error::msg(format!(
                    "lock {} is not a regular file: remove it",
                    dir.shown(name)
                )));
            }
            let mut file = File::from(fd);
            let file = loop {
                match Flock::lock(file, FlockArg::LockExclusive) {
                    Ok(locked) => break locked,
                    Err((again, Errno::EINTR)) => file = again,
                    Err((_, e)) => {
                        return Err(Error::io(format!("lock {}", dir.shown(name)), e));
                    }
                }
            };
            if dir
                .stat(name)?
                .is_some_and(|now| DevIno::from_stat(&now) == DevIno::from_stat(&held))
            {
                return Ok(Lock { _file: file });
            }
        }
    }
}

/// If `dir` holds more than [`MAX_IDENTITIES`] identities, remove the least
/// recently used (by socket access time) until one more would still fit,
/// each under its own lock. A server whose socket is removed notices
/// through its watcher and quits.
pub fn prune(dir: &RunDir) -> Result<()> {
    // ident -> socket atime (0 if no socket)
    let mut idents: BTreeMap<String, i64> = BTreeMap::new();
    for name in dir.names()? {
        let Some(name) = name.to_str() else { continue };
        let Some(ident) = name.strip_prefix(['l', 's', 'i', 'm']) else {
            continue;
        };
        if ident.is_empty() || idents.contains_key(ident) {
            continue;
        }
        let atime = socket_atime(dir, ident)?;
        idents.insert(ident.to_string(), atime);
    }
    if idents.len() <= MAX_IDENTITIES {
        return Ok(());
    }
    let mut by_age: Vec<(i64, String)> = idents.into_iter().map(|(i, a)| (a, i)).collect();
    by_age.sort();
    let excess = by_age.len() - (MAX_IDENTITIES - 1);
    for (atime, ident) in by_age.into_iter().take(excess) {
        let _lock = Lock::acquire(dir, &format!("l{ident}"))?;
        // Used since we looked? Then someone else needs it: leave it.
        if socket_atime(dir, &ident)? != atime {
            continue;
        }
        dir.remove_identity(&ident)?;
    }
    Ok(())
}

fn socket_atime(dir: &RunDir, ident: &str) -> Result<i64> {
    Ok(dir.stat(&format!("s{ident}"))?.map_or(0, |st| st.st_atime))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn tempdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "pfi-rundir-{tag}-{}-{:?}",
            std::process::id(),
            std::time::SystemTime::now()
        ));
        fs::create_dir_all(&d).unwrap();
        fs::set_permissions(&d, fs::Permissions::from_mode(0o700)).unwrap();
        d
    }

    fn uid() -> u32 {
        nix::unistd::geteuid().as_raw()
    }

    #[test]
    fn lock_is_exclusive_and_released_on_drop() {
        let d = tempdir("lock");
        let rd = open_named(d.clone(), uid()).unwrap();
        let lock = Lock::acquire(&rd, "lx").unwrap();
        let other = File::open(d.join("lx")).unwrap();
        let other = match Flock::lock(other, FlockArg::LockExclusiveNonblock) {
            Ok(_) => panic!("locked twice"),
            Err((other, e)) => {
                assert_eq!(e, Errno::EWOULDBLOCK);
                other
            }
        };
        drop(lock);
        assert!(Flock::lock(other, FlockArg::LockExclusiveNonblock).is_ok());
        assert_eq!(fs::metadata(d.join("lx")).unwrap().mode() & 0o777, 0o600);
        fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn lock_never_follows_a_symlink_nor_opens_a_fifo() {
        let d = tempdir("locklink");
        let rd = open_named(d.clone(), uid()).unwrap();
        let target = d.join("target");
        std::os::unix::fs::symlink(&target, d.join("lsym")).unwrap();
        let e = Lock::acquire(&rd, "lsym").unwrap_err().to_string();
        assert!(e.contains("symbolic link"), "{e}");
        assert!(!target.exists());
        nix::unistd::mkfifo(&d.join("lfifo"), Mode::from_bits_truncate(0o600)).unwrap();
        let e = Lock::acquire(&rd, "lfifo").unwrap_err().to_string();
        assert!(e.contains("not a regular file"), "{e}");
        fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn prune_removes_least_recently_used_beyond_limit() {
        let d = tempdir("prune");
        let n = MAX_IDENTITIES + 5;
        for i in 0..n {
            let s = d.join(format!("s{i:04}"));
            fs::write(&s, b"").unwrap();
            fs::write(d.join(format!("l{i:04}")), b"").unwrap();
            // atime i seconds after the epoch: 0000 is the oldest.
            let t = nix::sys::time::TimeSpec::new(1_000_000 + i as i64, 0);
            nix::sys::stat::utimensat(
                nix::fcntl::AT_FDCWD,
                &s,
                &t,
                &t,
                nix::sys::stat::UtimensatFlags::NoFollowSymlink,
            )
            .unwrap();
        }
        fs::write(d.join("unrelated"), b"").unwrap();
        prune(&open_named(d.clone(), uid()).unwrap()).unwrap();
        let left: Vec<String> = fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        // Room for exactly one more identity.
        assert_eq!(left.len(), 2 * (MAX_IDENTITIES - 1) + 1);
        for i in 0..6 {
            assert!(!left.contains(&format!("s{i:04}")), "s{i:04} kept");
        }
        assert!(left.contains(&format!("s{:04}", 6)));
        assert!(left.contains(&"unrelated".to_string()));
        fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn prune_leaves_small_dirs_alone() {
        let d = tempdir("small");
        fs::write(d.join("sabc"), b"").unwrap();
        fs::write(d.join("labc"), b"").unwrap();
        prune(&open_named(d.clone(), uid()).unwrap()).unwrap();
        assert_eq!(fs::read_dir(&d).unwrap().count(), 2);
        fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn named_dir_is_created_private_and_checked() {
        let d = tempdir("create");
        let f = d.join("file");
        fs::write(&f, b"").unwrap();
        let e = open_named(f, uid()).unwrap_err().to_string();
        assert!(e.contains("not a directory"), "{e}");

        let new = d.join("new");
        open_named(new.clone(), uid()).unwrap();
        assert_eq!(fs::metadata(&new).unwrap().mode() & 0o777, 0o700);

        for mode in [0o777, 0o1777, 0o770, 0o720] {
            fs::set_permissions(&new, fs::Permissions::from_mode(mode)).unwrap();
            let e = open_named(new.clone(), uid()).unwrap_err().to_string();
            assert!(
                e.contains(&format!("chmod 700 {}", new.display())),
                "{mode:o}: {e}"
            );
        }
        // Readable by others is fine for a directory the user named.
        fs::set_permissions(&new, fs::Permissions::from_mode(0o755)).unwrap();
        open_named(new.clone(), uid()).unwrap();

        let link = d.join("link");
        std::os::unix::fs::symlink(&new, &link).unwrap();
        let e = open_named(link, uid()).unwrap_err().to_string();
        assert!(e.contains("symbolic link"), "{e}");

        let e = open_named(new.clone(), uid() + 1).unwrap_err().to_string();
        assert!(e.contains("owned by uid"), "{e}");
        fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn private_dirs_refuse_any_group_or_other_access() {
        let d = tempdir("private");
        let parent = nix::fcntl::open(&d, DIR_FLAGS, Mode::empty()).unwrap();
        let path = d.join("p");
        assert!(
            private_dir(&parent, OsStr::new("p"), &path, uid())
                .unwrap()
                .is_some()
        );
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o777, 0o700);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o750)).unwrap();
        let e = private_dir(&parent, OsStr::new("p"), &path, uid()).unwrap_err();
        assert!(e.to_string().contains("open to group or others"), "{e}");
        fs::remove_dir_all(d).unwrap();
    }
}
