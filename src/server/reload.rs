//! Is the server out of date? (SPEC §6, upstream part 3 step 7.A.i.)
//!
//! A server runs the program as it was when the server started; a call
//! must run what a direct run would run now. The server is out of date
//! when one of the watched files (the program's executable, plus the paths
//! given with `Options::also_check`):
//! - has a modification time after the stamp the client gave in
//!   `PREFORK_INTERP` (the socket's creation time, taken just before the
//!   setup run started): changed while the program was starting; or
//! - is not the file it was at start-up: its [`FileId`] (device, inode,
//!   size, modification and change times) differs. A rename over it (as
//!   `mv`, `tar`, `cp -p` to a new file, `install` or a package upgrade
//!   do), a rewrite in place with the modification time set back (`touch
//!   -d`, `rsync -t`), a file created where there was none, or one
//!   removed, all change it; the change time cannot be set back by users.
//!
//! The server then quits before accepting the call, and the caller starts
//! a fresh one. There are only a few files, so each is looked at on each
//! new connection: a `stat` each.

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// What identifies a file's content well enough to notice any change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileId {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl FileId {
    fn of(md: &std::fs::Metadata) -> FileId {
        FileId {
            dev: md.dev(),
            ino: md.ino(),
            size: md.size(),
            mtime: (md.mtime(), md.mtime_nsec()),
            ctime: (md.ctime(), md.ctime_nsec()),
        }
    }
}

/// The files to watch, each with its identity at start-up (`None`: absent).
#[derive(Debug)]
pub(super) struct ReloadCheck {
    stamp: (i64, i64),
    files: Vec<(PathBuf, Option<FileId>)>,
}

fn stat(path: &Path) -> io::Result<Option<std::fs::Metadata>> {
    match std::fs::metadata(path) {
        Ok(md) => Ok(Some(md)),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

impl ReloadCheck {
    /// Record `paths` as they are now; `stamp` is `PREFORK_INTERP`'s.
    pub(super) fn new(stamp: (i64, u32), paths: impl IntoIterator<Item = PathBuf>) -> ReloadCheck {
        let files = paths
            .into_iter()
            .map(|p| {
                let id = stat(&p).ok().flatten().map(|md| FileId::of(&md));
                (p, id)
            })
            .collect();
        ReloadCheck {
            stamp: (stamp.0, i64::from(stamp.1)),
            files,
        }
    }

    /// `Some(reason)` if the server is out of date.
    pub(super) fn why_reload(&self) -> Option<String> {
        for (path, was) in &self.files {
            let now = match stat(path) {
                Ok(now) => now,
                Err(e) => {
                    return Some(format!(
                        "cannot check {} for changes ({}), reloading",
                        path.display(),
                        crate::error::Error::io("stat", e)
                    ));
                }
            };
            if let Some(md) = &now
                && (md.mtime(), md.mtime_nsec()) > self.stamp
            {
                return Some(format!("{} was modified, reloading", path.display()));
            }
            let what = match (was, now.as_ref().map(FileId::of)) {
                (Some(a), Some(b)) if *a == b => continue,
                (None, None) => continue,
                (Some(a), Some(b)) if (a.dev, a.ino) == (b.dev, b.ino) => "was rewritten",
                (Some(_), Some(_)) => "was replaced",
                (None, Some(_)) => "has appeared",
                (Some(_), None) => "has gone",
            };
            return Some(format!("{} {what}, reloading", path.display()));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    fn tempdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("pfi-reload-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn now_stamp() -> (i64, u32) {
        let t = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap();
        (t.as_secs() as i64, t.subsec_nanos())
    }

    fn set_mtime(path: &Path, t: SystemTime) {
        let f = std::fs::File::options().write(true).open(path).unwrap();
        f.set_modified(t).unwrap();
    }

    #[test]
    fn unchanged_files_do_not_reload_and_vanished_ones_do() {
        let d = tempdir("same");
        let a = d.join("a");
        std::fs::write(&a, "x").unwrap();
        set_mtime(&a, SystemTime::now() - Duration::from_secs(100));
        let check = ReloadCheck::new(now_stamp(), [a.clone(), d.join("absent")]);
        assert_eq!(check.why_reload(), None);
        assert_eq!(check.why_reload(), None);
        std::fs::remove_file(&a).unwrap();
        assert!(check.why_reload().unwrap().contains("has gone"));
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_rewrite_with_the_mtime_set_back_reloads() {
        let d = tempdir("rewrite");
        let a = d.join("a");
        std::fs::write(&a, "old").unwrap();
        let old = SystemTime::now() - Duration::from_secs(100);
        set_mtime(&a, old);
        let check = ReloadCheck::new(now_stamp(), [a.clone()]);
        // Same size, same inode, same mtime: only the change time differs.
        std::thread::sleep(Duration::from_millis(20));
        std::fs::write(&a, "new").unwrap();
        set_mtime(&a, old);
        let why = check.why_reload().unwrap();
        assert!(why.contains("was rewritten"), "{why}");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn newer_file_reloads() {
        let d = tempdir("newer");
        let a = d.join("a");
        std::fs::write(&a, "x").unwrap();
        let stamp = now_stamp();
        set_mtime(&a, SystemTime::now() - Duration::from_secs(100));
        let check = ReloadCheck::new(stamp, [a.clone()]);
        assert_eq!(check.why_reload(), None);
        set_mtime(&a, SystemTime::now() + Duration::from_secs(1));
        let why = check.why_reload().unwrap();
        assert!(why.contains("was modified"), "{why}");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn replaced_or_created_file_reloads_even_with_an_old_mtime() {
        let d = tempdir("replaced");
        let (a, b) = (d.join("a"), d.join("b"));
        std::fs::write(&a, "x").unwrap();
        set_mtime(&a, SystemTime::now() - Duration::from_secs(100));
        let check = ReloadCheck::new(now_stamp(), [a.clone(), b.clone()]);
        std::fs::write(d.join("new"), "y").unwrap();
        set_mtime(&d.join("new"), SystemTime::now() - Duration::from_secs(100));
        std::fs::rename(d.join("new"), &a).unwrap();
        assert!(check.why_reload().unwrap().contains("was replaced"));

        let check = ReloadCheck::new(now_stamp(), [b.clone()]);
        std::fs::write(&b, "z").unwrap();
        set_mtime(&b, SystemTime::now() - Duration::from_secs(100));
        assert!(check.why_reload().unwrap().contains("has appeared"));
        let _ = std::fs::remove_dir_all(&d);
    }
}
