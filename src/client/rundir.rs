//! The run directory (SPEC §3): where it is, creating it, the per-identity
//! lock, and pruning old identities.
//!
//! In order of preference:
//! 1. `$PREFORK_INTERP_RUN_DIR`, if set and not empty (our extension, for
//!    tests and unusual setups; the C client ignores it);
//! 2. `/var/run/user/<uid>/prefork-interp`, if `/var/run/user/<uid>` is a
//!    directory owned by us with no group or other permission bits;
//! 3. `<home>/.prefork-interp/<node>`, with `<home>` from the passwd entry
//!    (not `$HOME`) and `<node>` the host name up to its first `.` (at most
//!    32 bytes).
//!
//! Each identity has a socket `s<ident>` and a lock file `l<ident>`.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

use crate::error::{Error, Result, report};
use crate::sys::DevIno;

/// Environment variable naming the run directory explicitly.
pub const RUN_DIR_VAR: &str = "PREFORK_INTERP_RUN_DIR";

/// At most this many identities are kept; before a new server is made,
/// the least recently used ones beyond it are removed.
pub const MAX_IDENTITIES: usize = 100;

/// Where sockets and locks live.
#[derive(Debug, Clone)]
pub struct RunDir {
    /// The directory itself.
    pub path: PathBuf,
    /// For the home-directory location: `<home>/.prefork-interp`, which may
    /// need creating first.
    parent_to_create: Option<PathBuf>,
}

impl RunDir {
    /// Work out where the run directory is (does not create it).
    pub fn locate() -> Result<RunDir> {
        if let Some(dir) = std::env::var_os(RUN_DIR_VAR).filter(|d| !d.is_empty()) {
            let mut path = PathBuf::from(dir);
            if path.is_relative() {
                let cwd =
                    std::env::current_dir().map_err(|e| Error::io("get current directory", e))?;
                path = cwd.join(path);
            }
            return Ok(RunDir {
                path,
                parent_to_create: None,
            });
        }
        let uid = nix::unistd::getuid();
        if let Some(path) = var_run_user(uid.as_raw())? {
            return Ok(RunDir {
                path,
                parent_to_create: None,
            });
        }
        let user = nix::unistd::User::from_uid(uid)
            .map_err(|e| Error::io(format!("look up passwd entry for uid {uid}"), e))?
            .ok_or_else(|| Error::msg(format!("no passwd entry for uid {uid}")))?;
        let parent = user.dir.join(".prefork-interp");
        Ok(RunDir {
            path: parent.join(node_name()?),
            parent_to_create: Some(parent),
        })
    }

    /// Create the directory (mode 0700) if it does not exist, and check
    /// that what is there is a directory of ours.
    pub fn create(&self) -> Result<()> {
        let mkdir = |p: &Path| DirBuilder::new().mode(0o700).create(p);
        match mkdir(&self.path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound && self.parent_to_create.is_some() => {
                let parent = self.parent_to_create.as_ref().expect("checked");
                match mkdir(parent) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                    Err(e) => {
                        return Err(Error::io(format!("mkdir {}", parent.display()), e));
                    }
                }
                match mkdir(&self.path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(Error::io(format!("mkdir {}", self.path.display()), e)),
                }
            }
            Err(e) => return Err(Error::io(format!("mkdir {}", self.path.display()), e)),
        }
        let md = fs::metadata(&self.path)
            .map_err(|e| Error::io(format!("stat {}", self.path.display()), e))?;
        if !md.is_dir() {
            return Err(Error::msg(format!(
                "run directory {} is not a directory",
                self.path.display()
            )));
        }
        let uid = nix::unistd::getuid().as_raw();
        if md.uid() != uid {
            return Err(Error::msg(format!(
                "run directory {} is owned by uid {}, not by us (uid {uid})",
                self.path.display(),
                md.uid()
            )));
        }
        Ok(())
    }

    /// The socket path for `ident`.
    pub fn socket_path(&self, ident: &str) -> PathBuf {
        self.path.join(format!("s{ident}"))
    }

    /// The lock file path for `ident`.
    pub fn lock_path(&self, ident: &str) -> PathBuf {
        self.path.join(format!("l{ident}"))
    }
}

/// `/var/run/user/<uid>/prefork-interp` if its parent is safe to use.
fn var_run_user(uid: u32) -> Result<Option<PathBuf>> {
    let base = PathBuf::from(format!("/var/run/user/{uid}"));
    let md = match fs::symlink_metadata(&base) {
        Ok(md) => md,
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::ENOENT | libc::ENOTDIR | libc::EACCES | libc::EPERM)
            ) =>
        {
            return Ok(None);
        }
        Err(e) => return Err(Error::io(format!("stat {}", base.display()), e)),
    };
    let problem = if !md.is_dir() {
        Some("is not a directory".to_string())
    } else if md.uid() != uid {
        Some(format!("is not owned by uid {uid}"))
    } else if md.mode() & 0o077 != 0 {
        Some("is accessible by group or other".to_string())
    } else {
        None
    };
    if let Some(problem) = problem {
        report(format_args!(
            "warning: {} {problem}, falling back to home directory",
            base.display()
        ));
        return Ok(None);
    }
    Ok(Some(base.join("prefork-interp")))
}

/// The host name up to its first `.`, at most 32 bytes.
fn node_name() -> Result<OsString> {
    let uts = nix::sys::utsname::uname().map_err(|e| Error::io("uname", e))?;
    let mut node: Vec<u8> = std::os::unix::ffi::OsStrExt::as_bytes(uts.nodename()).to_vec();
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
    /// Lock `path`, creating it (mode 0600) if needed. After locking, make
    /// sure the path still names the file we locked: whoever removed it
    /// (`--kill`, pruning) did so holding the lock, so we try again.
    pub fn acquire(path: &Path) -> Result<Lock> {
        loop {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(path)
                .map_err(|e| Error::io(format!("create lock {}", path.display()), e))?;
            let mut file = file;
            let file = loop {
                match Flock::lock(file, FlockArg::LockExclusive) {
                    Ok(locked) => break locked,
                    Err((again, nix::errno::Errno::EINTR)) => file = again,
                    Err((_, e)) => return Err(Error::io(format!("lock {}", path.display()), e)),
                }
            };
            let held = file
                .metadata()
                .map_err(|e| Error::io(format!("fstat lock {}", path.display()), e))?;
            match fs::metadata(path) {
                Ok(now) if DevIno::of(&now) == DevIno::of(&held) => {
                    return Ok(Lock { _file: file });
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(format!("re-stat lock {}", path.display()), e)),
            }
        }
    }
}

/// If `dir` holds more than [`MAX_IDENTITIES`] identities, remove the least
/// recently used (by socket access time) until one more would still fit,
/// each under its own lock. A server whose socket is removed notices
/// through its watcher and quits.
pub fn prune(dir: &Path) -> Result<()> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(format!("prune: read {}", dir.display()), e)),
    };
    // ident -> socket atime (0 if no socket)
    let mut idents: BTreeMap<String, i64> = BTreeMap::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(format!("prune: read {}", dir.display()), e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(ident) = name.strip_prefix(['l', 's']) else {
            continue;
        };
        if ident.is_empty() || idents.contains_key(ident) {
            continue;
        }
        let atime = socket_atime(&dir.join(format!("s{ident}")))?;
        idents.insert(ident.to_string(), atime);
    }
    if idents.len() <= MAX_IDENTITIES {
        return Ok(());
    }
    let mut by_age: Vec<(i64, String)> = idents.into_iter().map(|(i, a)| (a, i)).collect();
    by_age.sort();
    let excess = by_age.len() - (MAX_IDENTITIES - 1);
    for (atime, ident) in by_age.into_iter().take(excess) {
        let lock_path = dir.join(format!("l{ident}"));
        let sock_path = dir.join(format!("s{ident}"));
        let _lock = Lock::acquire(&lock_path)?;
        // Used since we looked? Then someone else needs it: leave it.
        if socket_atime(&sock_path)? != atime {
            continue;
        }
        remove_if_exists(&sock_path, "prune: remove socket")?;
        remove_if_exists(&lock_path, "prune: remove lock")?;
    }
    Ok(())
}

fn socket_atime(path: &Path) -> Result<i64> {
    match fs::symlink_metadata(path) {
        Ok(md) => Ok(md.atime()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(Error::io(format!("prune: stat {}", path.display()), e)),
    }
}

/// `unlink`, where "already gone" is fine.
pub fn remove_if_exists(path: &Path, what: &str) -> Result<()> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(format!("{what} {}", path.display()), e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tempdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "pfi-rundir-{tag}-{}-{:?}",
            std::process::id(),
            std::time::SystemTime::now()
        ));
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn lock_is_exclusive_and_released_on_drop() {
        let d = tempdir("lock");
        let p = d.join("lx");
        let lock = Lock::acquire(&p).unwrap();
        let other = File::open(&p).unwrap();
        let other = match Flock::lock(other, FlockArg::LockExclusiveNonblock) {
            Ok(_) => panic!("locked twice"),
            Err((other, e)) => {
                assert_eq!(e, nix::errno::Errno::EWOULDBLOCK);
                other
            }
        };
        drop(lock);
        assert!(Flock::lock(other, FlockArg::LockExclusiveNonblock).is_ok());
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
        prune(&d).unwrap();
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
        prune(&d).unwrap();
        assert_eq!(fs::read_dir(&d).unwrap().count(), 2);
        fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn create_rejects_foreign_or_non_directory() {
        let d = tempdir("create");
        let f = d.join("file");
        fs::write(&f, b"").unwrap();
        let rd = RunDir {
            path: f,
            parent_to_create: None,
        };
        assert!(
            rd.create()
                .unwrap_err()
                .to_string()
                .contains("not a directory")
        );
        let rd = RunDir {
            path: d.join("new"),
            parent_to_create: None,
        };
        rd.create().unwrap();
        let md = fs::metadata(d.join("new")).unwrap();
        assert_eq!(md.mode() & 0o777, 0o700);
        fs::remove_dir_all(d).unwrap();
    }
}
