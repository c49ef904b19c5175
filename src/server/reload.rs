//! Is the server out of date? (SPEC §6, upstream part 3 step 7.A.i.)
//!
//! A server runs the program as it was when the server started. It is out
//! of date when one of the watched files (the program's executable, plus
//! the paths given with `Options::also_check`) has a modification time
//! after the stamp the client gave in `PREFORK_INTERP` (the socket's
//! creation time, taken just before the setup run started), or is now a
//! different file from the one there at start-up (replaced by rename with
//! an old mtime, as `cp -p` or `install -p` leave, or created where there
//! was none). A file that has disappeared does not count. The server then
//! quits before accepting the call, and the caller starts a fresh one.

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::sys::DevIno;

/// The watched files and what they were at start-up.
#[derive(Debug)]
pub(super) struct ReloadCheck {
    stamp: (i64, i64),
    files: Vec<(PathBuf, Option<DevIno>)>,
}

fn stat(path: &Path) -> io::Result<Option<std::fs::Metadata>> {
    match std::fs::metadata(path) {
        Ok(md) => Ok(Some(md)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

impl ReloadCheck {
    /// Watch `paths` against the stamp `secs`.`nsecs`, noting which file
    /// each path names now.
    pub(super) fn new(stamp: (i64, u32), paths: impl IntoIterator<Item = PathBuf>) -> ReloadCheck {
        let files = paths
            .into_iter()
            .map(|p| {
                let id = stat(&p).ok().flatten().map(|md| DevIno::of(&md));
                (p, id)
            })
            .collect();
        ReloadCheck {
            stamp: (stamp.0, i64::from(stamp.1)),
            files,
        }
    }

    /// `None` if every watched file is as it was; otherwise why to reload.
    /// A file that cannot be checked (other than by not existing) counts
    /// as changed: better a needless restart than stale code.
    pub(super) fn why_reload(&self) -> Option<String> {
        for (path, was) in &self.files {
            let md = match stat(path) {
                Ok(Some(md)) => md,
                Ok(None) => continue,
                Err(e) => {
                    return Some(format!(
                        "cannot check {} for changes ({}), reloading",
                        path.display(),
                        crate::error::Error::io("stat", e)
                    ));
                }
            };
            if (md.mtime(), md.mtime_nsec()) > self.stamp {
                return Some(format!("{} was modified, reloading", path.display()));
            }
            if *was != Some(DevIno::of(&md)) {
                return Some(format!("{} was replaced, reloading", path.display()));
            }
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
    fn unchanged_files_and_missing_ones_do_not_reload() {
        let d = tempdir("same");
        let a = d.join("a");
        std::fs::write(&a, "x").unwrap();
        set_mtime(&a, SystemTime::now() - Duration::from_secs(100));
        let check = ReloadCheck::new(now_stamp(), [a.clone(), d.join("absent")]);
        assert_eq!(check.why_reload(), None);
        std::fs::remove_file(&a).unwrap();
        assert_eq!(check.why_reload(), None);
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
        assert!(check.why_reload().unwrap().contains("was replaced"));
        let _ = std::fs::remove_dir_all(&d);
    }
}
