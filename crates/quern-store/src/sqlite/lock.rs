//! The data directory's lock: one process at a time owns a data directory.
//!
//! Invariant: while a store is open on a directory, its `quern.lock` file is
//! held under an exclusive advisory lock (`flock`), so a second server, or
//! an offline command, on the same directory refuses to open it instead of
//! writing beside the first. The lock goes with the process, also on
//! `kill -9`: a crashed server never leaves a directory locked. The file
//! names the holder (its pid, and the address it serves once it says so),
//! for the refusal's message.

use crate::error::{Result, StoreError};
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// The lock file's name in the data directory.
pub const LOCK_FILE: &str = "quern.lock";

/// The held lock; dropping it releases the directory.
#[derive(Debug)]
pub(crate) struct DirLock {
    file: File,
}

impl DirLock {
    /// Takes `dir`'s lock, or answers who holds it.
    pub(crate) fn take(dir: &Path) -> Result<Self> {
        let path = dir.join(LOCK_FILE);
        let fail = |e: std::io::Error| StoreError::Backend(format!("cannot open {}: {e}", path.display()));
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(fail)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                return Err(StoreError::Locked { dir: dir.display().to_string(), holder: describe(&holder) });
            }
            Err(TryLockError::Error(e)) => return Err(fail(e)),
        }
        let lock = Self { file };
        lock.write(&format!("pid: {}\n", std::process::id()))?;
        Ok(lock)
    }

    /// Records the address the holder serves, for a refused second server
    /// to name.
    pub(crate) fn announce(&self, url: &str) -> Result<()> {
        self.write(&format!("pid: {}\nserving: {url}\n", std::process::id()))
    }

    fn write(&self, text: &str) -> Result<()> {
        let mut file = &self.file;
        let done =
            file.set_len(0).and_then(|()| file.seek(SeekFrom::Start(0))).and_then(|_| file.write_all(text.as_bytes()));
        done.map_err(|e| StoreError::Backend(format!("cannot write the data directory's lock file: {e}")))
    }
}

/// `pid 1234, serving http://127.0.0.1:7311` from the lock file's text.
fn describe(text: &str) -> String {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(':')))
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    match (field("pid"), field("serving")) {
        (Some(pid), Some(url)) => format!("pid {pid}, serving {url}"),
        (Some(pid), None) => format!("pid {pid}"),
        _ => "a process that has not said who it is".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_holder_at_a_time_and_the_refusal_names_it() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let first = DirLock::take(dir.path()).expect("the first takes it");
        first.announce("http://127.0.0.1:7311").expect("announce");
        let refused = DirLock::take(dir.path()).expect_err("the second is refused");
        let message = refused.to_string();
        assert!(message.contains(&format!("pid {}", std::process::id())), "{message}");
        assert!(message.contains("serving http://127.0.0.1:7311"), "{message}");
        drop(first);
        DirLock::take(dir.path()).expect("free again once dropped");
    }
}
