//! Hot folder: scanner or PACS export software drops radiographs into a directory.
//!
//! Each file is handed out once it is completely written: its size and modification time
//! have not changed for `stable` (or it was moved in atomically, which looks the same).
//! Names starting with `.` and ending in `.tmp`, `.part` or `.partial` are in-progress
//! copies and are skipped. After analysis the caller moves the file to `done/` or to
//! `failed/` (with `<name>.error.txt` beside it saying why). Files present at start-up are
//! processed too, so a restart mid-file only repeats that file's wait.
//!
//! An optional sidecar `<stem>.json`
//! (`{"sex": "female", "age": "10y4m", "height": "142.5", "id": "A123"}`)
//! carries what a plain image cannot; DICOM files carry it in their tags.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use serde::Deserialize;

use crate::report::{Age, Sex};

pub const DONE_DIR: &str = "done";
pub const FAILED_DIR: &str = "failed";

#[derive(Debug, thiserror::Error)]
#[error("hot folder {}: {source}", path.display())]
pub struct HotFolderError {
    pub path: PathBuf,
    pub source: std::io::Error,
}

/// What a sidecar file may say about the image beside it.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sidecar {
    pub sex: Option<String>,
    pub age: Option<String>,
    /// Standing height in cm, as a number or a string.
    pub height: Option<serde_json::Value>,
    pub id: Option<String>,
}

/// A sidecar's values, parsed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SidecarInfo {
    pub sex: Option<Sex>,
    pub age: Option<Age>,
    pub height_cm: Option<f64>,
    pub exam_id: Option<String>,
}

pub struct HotFolder {
    dir: PathBuf,
    stable: Duration,
    /// Last seen (size, mtime) of each candidate and since when it has been unchanged.
    seen: HashMap<PathBuf, (u64, Option<SystemTime>, Instant)>,
}

impl HotFolder {
    /// Creates the folder and its `done/` and `failed/` subfolders if needed.
    ///
    /// # Errors
    /// [`HotFolderError`] when the folders cannot be created.
    pub fn open(dir: &Path, stable: Duration) -> Result<HotFolder, HotFolderError> {
        for d in [dir.to_path_buf(), dir.join(DONE_DIR), dir.join(FAILED_DIR)] {
            std::fs::create_dir_all(&d)
                .map_err(|source| HotFolderError { path: d.clone(), source })?;
        }
        Ok(HotFolder { dir: dir.to_path_buf(), stable, seen: HashMap::new() })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Files that are complete and ready for analysis, oldest name first.
    ///
    /// # Errors
    /// [`HotFolderError`] when the folder cannot be listed (unplugged USB stick).
    pub fn poll(&mut self) -> Result<Vec<PathBuf>, HotFolderError> {
        let err = |source| HotFolderError { path: self.dir.clone(), source };
        let now = Instant::now();
        let mut ready = Vec::new();
        let mut present = Vec::new();
        for entry in std::fs::read_dir(&self.dir).map_err(err)? {
            let Ok(entry) = entry else { continue };
            let path = entry.path();
            let Ok(meta) = entry.metadata() else { continue };
            if !meta.is_file() || !is_candidate(&path) {
                continue;
            }
            present.push(path.clone());
            let key = (meta.len(), meta.modified().ok());
            match self.seen.get(&path) {
                Some(&(len, mtime, since)) if (len, mtime) == key => {
                    if now.duration_since(since) >= self.stable && len > 0 {
                        ready.push(path);
                    }
                }
                _ => {
                    self.seen.insert(path, (key.0, key.1, now));
                }
            }
        }
        self.seen.retain(|p, _| present.contains(p));
        ready.sort();
        Ok(ready)
    }

    /// Moves a processed file (and its sidecar) to `done/`, or to `failed/` with the reason.
    ///
    /// # Errors
    /// [`HotFolderError`] when the move fails (the file would then be offered again; the
    /// caller's store check keeps that from producing a second result).
    pub fn finish(&mut self, path: &Path, failure: Option<&str>) -> Result<(), HotFolderError> {
        let sub = if failure.is_some() { FAILED_DIR } else { DONE_DIR };
        let name = path.file_name().map(PathBuf::from).unwrap_or_default();
        let dest_dir = self.dir.join(sub);
        let dest = unique(&dest_dir, &name);
        let err = |source| HotFolderError { path: path.to_path_buf(), source };
        if let Some(reason) = failure {
            let mut note = dest.clone().into_os_string();
            note.push(".error.txt");
            std::fs::write(&note, format!("{reason}\n")).map_err(err)?;
        }
        std::fs::rename(path, &dest).map_err(err)?;
        let sidecar = sidecar_path(path);
        if sidecar.exists() {
            let side_name = sidecar.file_name().map(PathBuf::from).unwrap_or_default();
            let _ = std::fs::rename(&sidecar, unique(&dest_dir, &side_name));
        }
        self.seen.remove(path);
        Ok(())
    }
}

fn is_candidate(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let lower = name.to_ascii_lowercase();
    !(name.starts_with('.')
        || lower.ends_with(".tmp")
        || lower.ends_with(".part")
        || lower.ends_with(".partial")
        || lower.ends_with(".json")
        || lower.ends_with(".txt"))
}

/// `dir/name`, or `dir/name.1`, `.2`... if taken, so a repeated file name never overwrites.
fn unique(dir: &Path, name: &Path) -> PathBuf {
    let first = dir.join(name);
    if !first.exists() {
        return first;
    }
    (1..)
        .map(|i| {
            let mut n = name.as_os_str().to_os_string();
            n.push(format!(".{i}"));
            dir.join(n)
        })
        .find(|p| !p.exists())
        .unwrap_or(first)
}

pub fn sidecar_path(image: &Path) -> PathBuf {
    image.with_extension("json")
}

/// Reads the sidecar beside `image`, if any.
///
/// # Errors
/// A message naming the sidecar and the bad value.
pub fn read_sidecar(image: &Path) -> Result<SidecarInfo, String> {
    let path = sidecar_path(image);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(SidecarInfo::default()),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let raw: Sidecar = serde_json::from_str(&text).map_err(|e| {
        format!(
            "{}: {e}; expected {{\"sex\": \"female\", \"age\": \"10y4m\", \"id\": \"...\"}}",
            path.display()
        )
    })?;
    let sex = match raw.sex {
        Some(s) => Some(s.parse::<Sex>().map_err(|e| format!("{}: {e}", path.display()))?),
        None => None,
    };
    let age = match raw.age {
        Some(a) => Some(a.parse::<Age>().map_err(|e| format!("{}: {e}", path.display()))?),
        None => None,
    };
    let height_cm = match raw.height {
        None | Some(serde_json::Value::Null) => None,
        Some(h) => {
            let text = match h {
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            };
            let cm = crate::clinical::parse_height_cm(&text)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            Some(cm)
        }
    };
    Ok(SidecarInfo { sex, age, height_cm, exam_id: raw.id })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_for_stable_files_and_skips_partials() {
        let dir = tempfile::tempdir().unwrap();
        let mut hf = HotFolder::open(dir.path(), Duration::from_millis(0)).unwrap();
        std::fs::write(dir.path().join("a.png"), b"x").unwrap();
        std::fs::write(dir.path().join("b.png.part"), b"x").unwrap();
        std::fs::write(dir.path().join(".c.png"), b"x").unwrap();
        std::fs::write(dir.path().join("empty.png"), b"").unwrap();
        assert!(hf.poll().unwrap().is_empty(), "first sighting only starts the clock");
        let ready = hf.poll().unwrap();
        assert_eq!(ready, vec![dir.path().join("a.png")]);
        hf.finish(&ready[0], Some("bad image")).unwrap();
        assert!(dir.path().join("failed/a.png").exists());
        let note = std::fs::read_to_string(dir.path().join("failed/a.png.error.txt")).unwrap();
        assert_eq!(note, "bad image\n");
        std::fs::write(dir.path().join("a.png"), b"y").unwrap();
        hf.poll().unwrap();
        let again = hf.poll().unwrap();
        hf.finish(&again[0], Some("again")).unwrap();
        assert!(dir.path().join("failed/a.png.1").exists(), "a repeated name never overwrites");
    }

    #[test]
    fn sidecars() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("x.png");
        assert_eq!(read_sidecar(&img).unwrap(), SidecarInfo::default());
        std::fs::write(dir.path().join("x.json"), r#"{"sex":"F","age":"10y4m","id":"A1"}"#)
            .unwrap();
        let s = read_sidecar(&img).unwrap();
        assert_eq!(s.sex, Some(Sex::Female));
        assert_eq!(s.exam_id.as_deref(), Some("A1"));
        assert_eq!(s.height_cm, None);
        std::fs::write(dir.path().join("x.json"), r#"{"sex":"m","height":142.5}"#).unwrap();
        assert_eq!(read_sidecar(&img).unwrap().height_cm, Some(142.5));
        std::fs::write(dir.path().join("x.json"), r#"{"sex":"m","height":"tall"}"#).unwrap();
        assert!(read_sidecar(&img).unwrap_err().contains("height"));
        std::fs::write(dir.path().join("x.json"), r#"{"sex":"unknown"}"#).unwrap();
        assert!(read_sidecar(&img).unwrap_err().contains("x.json"));
        std::fs::write(dir.path().join("x.json"), r#"{"gender":"F"}"#).unwrap();
        assert!(read_sidecar(&img).unwrap_err().contains("gender"));
    }
}
