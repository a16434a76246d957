//! Files replaced whole: written under a hidden temporary name beside the target, synced,
//! then renamed over it. A reader (a clinician opening a report, a viewer showing the kiosk
//! screen) never sees half a file, a failed write does not destroy the previous one, and
//! nothing is left behind.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// The file [`write`] replaces: `path`, or where it leads when it is a symbolic link (a
/// report path linked into a shared folder must stay a link, its target replaced).
pub fn target(path: &Path) -> PathBuf {
    let mut path = path.to_path_buf();
    // A bound, like the kernel's, against a loop of links.
    for _ in 0..40 {
        match std::fs::read_link(&path) {
            Ok(to) => path = path.parent().map_or(to.clone(), |dir| dir.join(&to)),
            Err(_) => break,
        }
    }
    path
}

/// Where [`write`] puts the bytes before the rename: `.<name>.part` beside the
/// [`target`], so the rename stays on one file system.
pub fn temporary_path(path: &Path) -> PathBuf {
    let path = target(path);
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
    let path = target(path);
    let tmp = temporary_path(&path);
    let result = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        // The new name is on disk only once its folder is: without this a power cut can
        // bring back the old file, or none. Best effort: some filesystems cannot do it.
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
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

    #[test]
    fn a_link_stays_a_link_and_its_target_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let shared = dir.path().join("shared");
        std::fs::create_dir(&shared).unwrap();
        let real = shared.join("latest.pdf");
        std::fs::write(&real, b"old").unwrap();
        let link = dir.path().join("report.pdf");
        std::os::unix::fs::symlink("shared/latest.pdf", &link).unwrap();
        write(&link, b"new").unwrap();
        assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
        assert_eq!(std::fs::read(&real).unwrap(), b"new");
        assert_eq!(std::fs::read_dir(&shared).unwrap().count(), 1, "no temporary file left");
        // A link to a file not yet there: created where the link points.
        let dangling = dir.path().join("next.pdf");
        std::os::unix::fs::symlink(shared.join("next.pdf"), &dangling).unwrap();
        write(&dangling, b"first").unwrap();
        assert_eq!(std::fs::read(shared.join("next.pdf")).unwrap(), b"first");
    }
}
