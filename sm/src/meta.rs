//! Small JSON records kept beside the images, written atomically (temporary file, sync,
//! rename, directory sync), so a crash leaves the old record or the new one.

use std::fs::{self, File};
use std::io::Write;
use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::{Error, Result};

/// Suffix of files being written; scan removes any it finds.
pub(crate) const TMP_SUFFIX: &str = ".tmp";

/// Syncs the directory `dir` (makes renames and unlinks in it durable).
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(Error::io(format!("syncing {}", dir.display())))
}

/// Writes `value` as JSON to `path` atomically and durably.
pub(crate) fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let tmp = path.with_extension(format!(
        "{}{TMP_SUFFIX}",
        path.extension().and_then(|e| e.to_str()).unwrap_or("")
    ));
    let body = serde_json::to_vec_pretty(value).map_err(|e| Error::Corrupt(e.to_string()))?;
    let write = || -> std::io::Result<()> {
        let mut f = File::create(&tmp)?;
        f.write_all(&body)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    };
    write().map_err(Error::io(format!("writing {}", path.display())))?;
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

/// Reads the JSON record at `path`; `None` when there is no such file.
pub(crate) fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>> {
    match fs::read(path) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| Error::Corrupt(format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(format!("reading {}", path.display()))(e)),
    }
}

/// Removes `path` if it exists.
pub(crate) fn remove(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(format!("removing {}", path.display()))(e)),
    }
}
