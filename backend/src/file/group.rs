//! Consumer groups on disk: committed offsets (written atomically), membership, and exclusive
//! partition ownership through file locks that the kernel releases when a holder dies.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::segment::sync_dir;

pub fn groups_dir(root: &Path) -> PathBuf {
    root.join("groups")
}

fn offset_file_name(partition: u32) -> String {
    format!("{partition:04}")
}

/// Reads a group's committed next offset for a partition; 0 when it never committed.
pub fn read_committed(group_dir: &Path, partition: u32) -> io::Result<u64> {
    let path = group_dir.join("offsets").join(offset_file_name(partition));
    match fs::read_to_string(&path) {
        Ok(text) => text.trim().parse::<u64>().map_err(|error| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{} holds {text:?}, not an offset: {error}", path.display()),
            )
        }),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(0),
        Err(error) => Err(error),
    }
}

/// Replaces a group's committed offset for a partition so that a crash leaves either the old
/// or the new value: write a temporary file, fsync it, rename it over, fsync the directory.
pub fn write_committed(
    group_dir: &Path,
    partition: u32,
    next: u64,
    writer_id: &str,
) -> io::Result<()> {
    let dir = group_dir.join("offsets");
    let name = offset_file_name(partition);
    let temp = dir.join(format!(".{name}.{writer_id}.tmp"));
    {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&temp)?;
        writeln!(file, "{next}")?;
        file.sync_all()?;
    }
    fs::rename(&temp, dir.join(name))?;
    sync_dir(&dir)
}

/// The smallest committed offset of `partition` over every group that exists, or `None` when no
/// group exists yet (then nothing counts as consumed).
pub fn min_committed_all_groups(root: &Path, partition: u32) -> io::Result<Option<u64>> {
    let dir = groups_dir(root);
    let entries = match fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(error),
    };
    let mut min: Option<u64> = None;
    for entry in entries {
        let entry = entry?;
        if !entry.file_type()?.is_dir() {
            continue;
        }
        let committed = read_committed(&entry.path(), partition)?;
        min = Some(min.map_or(committed, |m| m.min(committed)));
    }
    Ok(min)
}

/// Creates a directory and all its parents, fsyncing each parent that gained an entry.
pub fn create_dir_durable(dir: &Path) -> io::Result<()> {
    if dir.as_os_str().is_empty() || dir.is_dir() {
        return Ok(());
    }
    // A relative path's last parent is "", which stands for the working directory.
    let parent = dir.parent().map(|p| {
        if p.as_os_str().is_empty() {
            Path::new(".")
        } else {
            p
        }
    });
    if let Some(parent) = parent {
        create_dir_durable(parent)?;
    }
    match fs::create_dir(dir) {
        Ok(()) => {}
        Err(error) if error.kind() == io::ErrorKind::AlreadyExists => return Ok(()),
        Err(error) => return Err(error),
    }
    if let Some(parent) = parent {
        sync_dir(parent)?;
    }
    Ok(())
}

/// Tries to take an exclusive lock on `path` (created if missing) without waiting.
/// `Ok(None)` when another open file description holds it — another live process, or another
/// member in this one.
pub fn try_lock(path: &Path) -> io::Result<Option<File>> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(fs::TryLockError::WouldBlock) => Ok(None),
        Err(fs::TryLockError::Error(error)) => Err(error),
    }
}

/// This process's membership in a consumer group: a lock file held for as long as it lives.
pub struct Membership {
    pub group_dir: PathBuf,
    pub member_id: String,
    member_path: PathBuf,
    _member_lock: File,
}

impl Membership {
    pub fn join(root: &Path, group: &str) -> io::Result<Self> {
        let group_dir = groups_dir(root).join(group);
        for sub in ["members", "owners", "offsets"] {
            create_dir_durable(&group_dir.join(sub))?;
        }
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let member_id = format!("{}-{nanos}", std::process::id());
        let member_path = group_dir.join("members").join(format!("{member_id}.lock"));
        // Lock the file before it appears under members/: a file found there unlocked is dead.
        let temp_path = group_dir.join(format!(".{member_id}.joining"));
        let member_lock = try_lock(&temp_path)?.ok_or_else(|| {
            io::Error::other(format!(
                "member lock {} is already held",
                temp_path.display()
            ))
        })?;
        fs::rename(&temp_path, &member_path)?;
        Ok(Self {
            group_dir,
            member_id,
            member_path,
            _member_lock: member_lock,
        })
    }

    /// Counts live members (this one included) and removes the files of dead ones.
    pub fn live_members(&self) -> io::Result<usize> {
        let mut live = 1;
        for entry in fs::read_dir(self.group_dir.join("members"))? {
            let path = entry?.path();
            if path == self.member_path {
                continue;
            }
            match try_lock(&path) {
                Ok(Some(_dead)) => {
                    // Its holder is gone; the lock we just took is released when `_dead` drops.
                    let _ = fs::remove_file(&path);
                }
                Ok(None) => live += 1,
                Err(error) if error.kind() == io::ErrorKind::NotFound => {}
                Err(error) => return Err(error),
            }
        }
        Ok(live)
    }

    pub fn owner_lock_path(&self, partition: u32) -> PathBuf {
        self.group_dir
            .join("owners")
            .join(format!("{partition:04}.lock"))
    }

    pub fn read_committed(&self, partition: u32) -> io::Result<u64> {
        read_committed(&self.group_dir, partition)
    }

    pub fn write_committed(&self, partition: u32, next: u64) -> io::Result<()> {
        write_committed(&self.group_dir, partition, next, &self.member_id)
    }

    /// Leaves the group: removes this member's file (its lock goes with the handle).
    pub fn leave(self) {
        let _ = fs::remove_file(&self.member_path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn committed_offset_round_trips_and_defaults_to_zero() {
        let dir = tempfile::tempdir().expect("tempdir");
        let group = dir.path().join("g");
        create_dir_durable(&group.join("offsets")).expect("mkdir");
        assert_eq!(read_committed(&group, 3).expect("read"), 0);
        write_committed(&group, 3, 42, "t").expect("write");
        assert_eq!(read_committed(&group, 3).expect("read"), 42);
        write_committed(&group, 3, 43, "t").expect("write");
        assert_eq!(read_committed(&group, 3).expect("read"), 43);
    }

    #[test]
    fn a_leftover_temp_file_never_replaces_the_committed_offset() {
        // A crash after writing the temporary file but before the rename must leave the old
        // value: the temp file is a different name, so readers never see it.
        let dir = tempfile::tempdir().expect("tempdir");
        let group = dir.path().join("g");
        create_dir_durable(&group.join("offsets")).expect("mkdir");
        write_committed(&group, 0, 10, "a").expect("write");
        fs::write(group.join("offsets").join(".0000.b.tmp"), "99\n").expect("temp");
        assert_eq!(read_committed(&group, 0).expect("read"), 10);
        // And a later commit by that writer replaces its own leftover cleanly.
        write_committed(&group, 0, 11, "b").expect("write");
        assert_eq!(read_committed(&group, 0).expect("read"), 11);
    }

    #[test]
    fn a_garbled_offset_file_is_an_error_not_a_reset_to_zero() {
        let dir = tempfile::tempdir().expect("tempdir");
        let group = dir.path().join("g");
        create_dir_durable(&group.join("offsets")).expect("mkdir");
        fs::write(group.join("offsets").join("0000"), "not a number").expect("write");
        let error = read_committed(&group, 0).expect_err("garbled");
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn min_committed_is_none_without_groups_and_the_minimum_with_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(min_committed_all_groups(dir.path(), 0).expect("min"), None);
        let a = Membership::join(dir.path(), "a").expect("join a");
        let b = Membership::join(dir.path(), "b").expect("join b");
        a.write_committed(0, 100).expect("commit");
        b.write_committed(0, 40).expect("commit");
        assert_eq!(
            min_committed_all_groups(dir.path(), 0).expect("min"),
            Some(40)
        );
        assert_eq!(
            min_committed_all_groups(dir.path(), 1).expect("min"),
            Some(0)
        );
    }

    #[test]
    fn a_relative_directory_is_created_under_the_working_directory() {
        // A single relative component has "" as its parent: the case `--data-dir data` hits.
        let relative = PathBuf::from(format!("relative-dir-test-{}", std::process::id()));
        create_dir_durable(&relative.join("nested")).expect("relative");
        assert!(relative.join("nested").is_dir());
        fs::remove_dir_all(&relative).expect("cleanup");
    }

    #[test]
    fn a_held_lock_is_exclusive_and_freed_on_drop() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("p.lock");
        let held = try_lock(&path).expect("lock").expect("free");
        assert!(try_lock(&path).expect("lock").is_none());
        drop(held);
        assert!(try_lock(&path).expect("lock").is_some());
    }

    #[test]
    fn dead_members_are_not_counted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = Membership::join(dir.path(), "g").expect("join");
        let b = Membership::join(dir.path(), "g").expect("join");
        assert_eq!(a.live_members().expect("count"), 2);
        // Simulate b dying: its lock is released but its file stays behind.
        let b_path = b.member_path.clone();
        drop(b);
        assert!(b_path.exists());
        assert_eq!(a.live_members().expect("count"), 1);
        assert!(!b_path.exists());
    }
}
