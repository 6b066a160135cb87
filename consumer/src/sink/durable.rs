//! File-system calls that make what they create durable: files and directories whose entries
//! survive a machine crash.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use metricstream_backend::{Offset, Partition};

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

/// Stores the raw payload of a record that failed to decode under `<sink_dir>/quarantine/`,
/// durably, one file per record named by its position: a re-delivered corrupt record overwrites
/// its own copy instead of piling up duplicates. Every sink quarantines this way.
pub(super) fn quarantine_payload(
    sink_dir: &Path,
    partition: Partition,
    offset: Offset,
    payload: &[u8],
) -> Result<PathBuf, SinkError> {
    let dir = sink_dir.join("quarantine");
    create_dir_durably(&dir)?;
    let name = format!("partition-{:04}-offset-{:020}.bin", partition.0, offset.0);
    let path = dir.join(&name);
    let temp = dir.join(format!("{name}.tmp"));
    write_file_durably(&temp, payload)?;
    std::fs::rename(&temp, &path).map_err(io_error(format!(
        "renaming {} to {}",
        temp.display(),
        path.display()
    )))?;
    sync_dir(&dir)?;
    Ok(path)
}
