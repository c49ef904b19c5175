//! Which interpreter binary a call is for, and which server runs it
//! (design.md §4.1).
//!
//! An interpreter named without a `/` (`-U,python3`) is found, for a
//! direct run, by `execvp` in the caller's `PATH`: two callers with
//! different `PATH`s (a virtualenv activated or not) run different
//! binaries. So the client resolves it the same way ([`resolve`]) and
//! calls a server running that binary.
//!
//! The socket name stays the C client's (the hash of the name as written)
//! for the first binary to claim it; a client that starts a server
//! records the binary's canonical path beside the socket, in `i<ident>`.
//! A caller whose binary is another one uses a second name, the same hash
//! with the binary's path added ([`crate::client::identity`]), and keeps
//! it while its record is there. So two `PATH`s that reach the same binary
//! share a server, two binaries get a server each, both warm, and a
//! caller whose `PATH` finds what the C client's would reaches the same
//! server as the C client. A server started by the C client records
//! nothing: it is taken to run the caller's binary.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

use super::rundir::RunDir;
use crate::error::{Error, Result};

/// `execvp`'s search path when `PATH` is unset (glibc's `_CS_PATH`).
const DEFAULT_PATH: &str = "/bin:/usr/bin";

/// The canonical path of the binary `name` runs for a caller whose `PATH`
/// is `path`, found as `execvp` finds it: the first directory (an empty
/// entry is the current directory) holding an executable regular file of
/// that name. `None` when `name` has a `/` (it is used as it is) or
/// nothing is found (the exec will say so).
pub fn resolve(name: &OsStr, path: Option<&OsStr>) -> Option<PathBuf> {
    if name.is_empty() || name.as_bytes().contains(&b'/') {
        return None;
    }
    let path = path.unwrap_or(OsStr::new(DEFAULT_PATH));
    path.as_bytes().split(|&b| b == b':').find_map(|dir| {
        let dir = if dir.is_empty() { b"." } else { dir };
        let candidate = Path::new(OsStr::from_bytes(dir)).join(name);
        // A regular file we may execute (access(2) also wants an x bit,
        // root included).
        let file = std::fs::metadata(&candidate).ok()?.is_file();
        let allowed = nix::unistd::access(&candidate, nix::unistd::AccessFlags::X_OK).is_ok();
        (file && allowed)
            .then(|| std::fs::canonicalize(&candidate).ok())
            .flatten()
    })
}

/// The record of the binary the server at `ident` runs.
fn record_name(ident: &str) -> String {
    format!("i{ident}")
}

/// The binary recorded for the server at `ident`, if any.
pub fn recorded(dir: &RunDir, ident: &str) -> Result<Option<PathBuf>> {
    let name = record_name(ident);
    let fd = match dir.open_at(&name, OFlag::O_RDONLY | OFlag::O_NONBLOCK, Mode::empty()) {
        Ok(fd) => fd,
        Err(nix::errno::Errno::ENOENT) => return Ok(None),
        Err(e) => return Err(Error::io(format!("open {}", dir.shown(&name)), e)),
    };
    let mut buf = vec![0u8; 4097];
    let n = nix::unistd::read(&fd, &mut buf)
        .map_err(|e| Error::io(format!("read {}", dir.shown(&name)), e))?;
    buf.truncate(n);
    Ok((!buf.is_empty() && n < 4097).then(|| PathBuf::from(OsString::from_vec(buf))))
}

/// Record that the server at `ident` runs `binary`: written to a new file
/// and renamed into place, so a reader sees the old record or the new
/// one, never part of one. Call with the identity's lock held, before
/// the server's socket exists.
pub fn record(dir: &RunDir, ident: &str, binary: &Path) -> Result<()> {
    let name = record_name(ident);
    let tmp = format!("t{ident}.{}", std::process::id());
    let fd = dir
        .open_at(
            &tmp,
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_TRUNC,
            Mode::from_bits_truncate(0o600),
        )
        .map_err(|e| Error::io(format!("create {}", dir.shown(&tmp)), e))?;
    let written = nix::unistd::write(&fd, binary.as_os_str().as_bytes());
    drop(fd);
    let done = match written {
        Ok(n) if n == binary.as_os_str().len() => dir.rename(&tmp, &name),
        Ok(_) => Err(Error::msg(format!("short write to {}", dir.shown(&tmp)))),
        Err(e) => Err(Error::io(format!("write {}", dir.shown(&tmp)), e)),
    };
    if done.is_err() {
        let _ = dir.remove(&tmp, "remove");
    }
    done
}

/// Remove the record for `ident` ("already gone" is fine).
pub fn forget(dir: &RunDir, ident: &str) -> Result<()> {
    dir.remove(&record_name(ident), "remove interpreter record")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn tempdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("pfi-interp-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn executable(path: &Path) {
        std::fs::write(path, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn resolves_as_execvp_does() {
        let d = tempdir("resolve");
        let (a, b) = (d.join("a"), d.join("b"));
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        executable(&b.join("tool"));
        // Not executable, or a directory: skipped.
        std::fs::write(a.join("tool"), "").unwrap();
        std::fs::create_dir_all(a.join("sub")).unwrap();
        let path = OsString::from(format!("{}:{}", a.display(), b.display()));
        assert_eq!(
            resolve(OsStr::new("tool"), Some(&path)),
            Some(b.join("tool").canonicalize().unwrap())
        );
        // The first one wins; a symbolic link is resolved.
        executable(&a.join("real"));
        std::os::unix::fs::symlink(a.join("real"), a.join("tool2")).unwrap();
        executable(&b.join("tool2"));
        assert_eq!(
            resolve(OsStr::new("tool2"), Some(&path)),
            Some(a.join("real").canonicalize().unwrap())
        );
        assert_eq!(resolve(OsStr::new("sub"), Some(&path)), None);
        assert_eq!(resolve(OsStr::new("missing"), Some(&path)), None);
        assert_eq!(resolve(OsStr::new("./tool"), Some(&path)), None);
        assert!(resolve(OsStr::new("sh"), None).is_some());
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_record_is_written_whole_and_read_back() {
        let d = tempdir("record");
        let rd = RunDir::at(d.join("run")).unwrap();
        assert_eq!(recorded(&rd, "abc").unwrap(), None);
        record(&rd, "abc", Path::new("/usr/bin/python3.11")).unwrap();
        assert_eq!(
            recorded(&rd, "abc").unwrap(),
            Some(PathBuf::from("/usr/bin/python3.11"))
        );
        record(&rd, "abc", Path::new("/venv/bin/python")).unwrap();
        assert_eq!(
            recorded(&rd, "abc").unwrap(),
            Some(PathBuf::from("/venv/bin/python"))
        );
        forget(&rd, "abc").unwrap();
        assert_eq!(recorded(&rd, "abc").unwrap(), None);
        let names: Vec<_> = std::fs::read_dir(d.join("run")).unwrap().collect();
        assert!(names.is_empty(), "{names:?}");
        let _ = std::fs::remove_dir_all(&d);
    }
}
