//! File-system calls that make what they create durable: files and directories whose entries
//! survive a machine crash.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::{SinkError, io_error};

/// Opens `path` for reading and writing, creating it if missing; says whether it was created.
pub(super) fn open_or_create(path: &Path) -> Result<(File, bool), SinkError> {
    let mut options = OpenOptions::new();
    options.read(true).write(true);
    match options.clone().create_new(true).open(path) {
        Ok(file) => Ok((file, true)),
        Err(error) if error.kind() == io::ErrorKind::AlreadyExists => options
            .open(path)
            .map(|file| (file, false))
            .map_err(io_error(format!("opening {}", path.display()))),
        Err(error) => Err(io_error(format!("creating {}", path.display()))(error)),
    }
}

/// Creates `dir` (and its parents) if missing, and makes the new entry durable in its parent.
pub(super) fn create_dir_durably(dir: &Path) -> Result<(), SinkError> {
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::create_dir_all(dir).map_err(io_error(format!("creating {}", dir.display())))?;
    match dir.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => sync_dir(parent),
        _ => sync_dir(Path::new(".")),
    }
}

pub(super) fn write_file_durably(path: &Path, bytes: &[u8]) -> Result<(), SinkError> {
    let file = File::create(path).map_err(io_error(format!("creating {}", path.display())))?;
    file.write_all_at(bytes, 0)
        .map_err(io_error(format!("writing {}", path.display())))?;
    file.sync_all()
        .map_err(io_error(format!("syncing {}", path.display())))
}

pub(super) fn sync_dir(dir: &Path) -> Result<(), SinkError> {
    File::open(dir)
        .and_then(|handle| handle.sync_all())
        .map_err(io_error(format!("syncing the directory {}", dir.display())))
}
