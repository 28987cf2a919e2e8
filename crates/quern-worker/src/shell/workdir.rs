//! Per-task temporary working directories.
//!
//! Invariant: each task gets a directory of its own — new, empty, private
//! (mode 0700), a real directory (not a symbolic link), uniquely named and
//! owned by the task's user — and no directory is ever handed to a second
//! task. Its [`TempWorkdir`] removes it with everything in it; the task's
//! group guard lets that happen only once no process of the task runs, so a
//! process the task left behind can write only into its own directory,
//! which then goes away.
//!
//! Directories were once emptied and recycled to save a `mkdir` and an
//! `rmdir` per task, but a process left behind by one task could then write
//! into the directory handed to the next. The pair costs ~0.1-0.2 ms of CPU
//! on ext4 (about as much as the rest of the worker's work for a `true`
//! task) and ~0.01 ms on tmpfs, hence `--work-root` on a tmpfs where
//! throughput matters.

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

/// One task's temporary working directory, removed (with its contents) when
/// dropped.
#[derive(Debug)]
pub(crate) struct TempWorkdir {
    /// Empty once the directory has been removed.
    path: PathBuf,
}

impl TempWorkdir {
    /// Creates a new directory under `root` for a task run as `owner`
    /// (`(uid, gid)`, if not the worker's user).
    pub(crate) fn create(root: &Path, owner: Option<(u32, u32)>) -> std::io::Result<Self> {
        let path = root.join(format!("quern-task-{}", uuid::Uuid::new_v4().simple()));
        // `create` fails if the name exists, so the directory is new; 0700
        // before the umask, which can only take permissions away.
        std::fs::DirBuilder::new().mode(0o700).create(&path)?;
        if let Some((uid, gid)) = owner
            && let Err(e) = std::os::unix::fs::chown(&path, Some(uid), Some(gid))
        {
            let _ = std::fs::remove_dir(&path);
            return Err(e);
        }
        Ok(Self { path })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Removes the directory if it is empty (one `rmdir`, the common case);
    /// false when something is left in it (or it is no longer a directory)
    /// and dropping `self` must do the rest.
    pub(crate) fn remove_if_empty(&mut self) -> bool {
        if self.path.as_os_str().is_empty() {
            return true;
        }
        // `rmdir` does not follow a symbolic link put in the directory's
        // place: it fails with ENOTDIR and the drop unlinks the link.
        if std::fs::remove_dir(&self.path).is_ok() {
            self.path = PathBuf::new();
            return true;
        }
        false
    }
}

impl Drop for TempWorkdir {
    fn drop(&mut self) {
        if self.path.as_os_str().is_empty() {
            return;
        }
        // Neither `symlink_metadata` nor `remove_dir_all` follows symbolic
        // links: a link the task put in the directory, or in its place, is
        // removed, not what it points to.
        let removed = match std::fs::symlink_metadata(&self.path) {
            Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(&self.path),
            Ok(_) => std::fs::remove_file(&self.path),
            Err(e) => Err(e),
        };
        if let Err(e) = removed
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(dir = %self.path.display(), error = %e, "cannot remove a task's working directory");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn each_directory_is_new_private_and_removed_with_what_it_holds() {
        let root = std::env::temp_dir();
        let first = TempWorkdir::create(&root, None).expect("a directory");
        let second = TempWorkdir::create(&root, None).expect("a directory");
        assert_ne!(first.path(), second.path());
        for dir in [&first, &second] {
            let meta = std::fs::symlink_metadata(dir.path()).expect("exists");
            assert!(meta.is_dir());
            assert_eq!(meta.mode() & 0o777, 0o700);
            assert_eq!(std::fs::read_dir(dir.path()).expect("readable").count(), 0, "empty");
        }
        let path = first.path().to_owned();
        std::fs::write(path.join("file"), b"x").expect("write");
        std::fs::create_dir_all(path.join("sub/deeper")).expect("mkdir");
        std::fs::write(path.join("sub/deeper/file"), b"x").expect("write");
        std::os::unix::fs::symlink("/etc", path.join("link")).expect("symlink");
        drop(first);
        assert!(std::fs::symlink_metadata(&path).is_err(), "removed with its contents");
        assert!(Path::new("/etc/passwd").exists(), "a link was removed, not followed");

        let mut second = second;
        let path = second.path().to_owned();
        assert!(second.remove_if_empty(), "an empty directory goes with one rmdir");
        assert!(!path.exists());
        drop(second);
    }

    #[test]
    fn a_link_put_in_the_directorys_place_is_unlinked_not_followed() {
        let mut dir = TempWorkdir::create(&std::env::temp_dir(), None).expect("a directory");
        let path = dir.path().to_owned();
        std::fs::remove_dir(&path).expect("rmdir");
        std::os::unix::fs::symlink("/etc", &path).expect("symlink in its place");
        assert!(!dir.remove_if_empty(), "rmdir refuses a link");
        drop(dir);
        assert!(std::fs::symlink_metadata(&path).is_err(), "the link is removed");
        assert!(Path::new("/etc/passwd").exists());
    }
}
