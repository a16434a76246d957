//! Files replaced whole: written under a hidden temporary name beside the target, synced,
//! then renamed over it. A reader (a clinician opening a report, a viewer showing the kiosk
//! screen) never sees half a file, a failed write does not destroy the previous one, and
//! nothing is left behind.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Where [`write`] puts the bytes before the rename: `.<name>.part` in the same folder, so
/// the rename stays on one file system.
pub fn temporary_path(path: &Path) -> PathBuf {
    let mut name = std::ffi::OsString::from(".");
    name.push(path.file_name().unwrap_or_default());
    name.push(".part");
    path.with_file_name(name)
}

/// Replaces `path` with `bytes`, atomically.
///
/// # Errors
/// The I/O error of the create, write, sync or rename (the temporary file is then
/// removed), or `InvalidInput` when `path` names no file.
pub fn write(path: &Path, bytes: &[u8]) -> io::Result<()> {
    if path.file_name().is_none() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "the path names no file"));
    }
    let tmp = temporary_path(path);
    let result = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_file_and_leaves_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("report.pdf");
        write(&path, b"first").unwrap();
        write(&path, b"second").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        assert_eq!(temporary_path(&path), dir.path().join(".report.pdf.part"));
        assert_eq!(write(Path::new("/"), b"x").unwrap_err().kind(), io::ErrorKind::InvalidInput);
    }
}
