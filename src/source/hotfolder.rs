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

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use serde::Deserialize;

use crate::report::{Age, Sex};

pub const DONE_DIR: &str = "done";
pub const FAILED_DIR: &str = "failed";
/// Hidden folder of attempt counters, one small file per image being analysed.
pub const ATTEMPTS_DIR: &str = ".attempts";
/// Analyses a file may start without finishing (the process died: out of memory, a
/// crash, power) before it is set aside, so one bad file cannot stop the folder for good.
/// Three, so a power cut or two never costs a good file.
pub const MAX_ATTEMPTS: u32 = 3;

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
    /// As typed at the CLI: a string (`"10y4m"`) or a number of months.
    pub age: Option<serde_json::Value>,
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

/// Size and modification time of a file, and of its sidecar when it has one: a file is
/// ready only when neither has changed for the stable time.
type Snapshot = (FileStamp, Option<FileStamp>);

/// A file's size and modification time.
type FileStamp = (u64, Option<SystemTime>);

fn stamp(meta: &std::fs::Metadata) -> FileStamp {
    (meta.len(), meta.modified().ok())
}

/// How long an empty file or a sidecar without its image may sit before it is moved to
/// `failed/`: long enough for any copy to finish, short enough that a stray file does not
/// wait for (and get applied to) a later image of the same name.
pub const STRAY_AFTER: Duration = Duration::from_secs(60);

pub struct HotFolder {
    dir: PathBuf,
    stable: Duration,
    /// Last snapshot of each candidate and sidecar, and since when it has been unchanged.
    seen: HashMap<PathBuf, (Snapshot, Instant)>,
    /// [`STRAY_AFTER`], shorter in tests.
    stray_after: Duration,
    /// Files the last poll found over [`MAX_ATTEMPTS`], with the reason, for the caller to
    /// store as failures and then [`finish`](Self::finish).
    set_aside: Vec<(PathBuf, String)>,
    /// Files whose outcome is stored but which could not be moved out (a full or read-only
    /// disk), with the failure reason: the move is retried each poll, the analysis never,
    /// so the store does not get a new record per poll.
    unmoved: HashMap<PathBuf, (Option<String>, FileStamp)>,
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
        Ok(HotFolder {
            dir: dir.to_path_buf(),
            stable,
            seen: HashMap::new(),
            stray_after: STRAY_AFTER,
            set_aside: Vec::new(),
            unmoved: HashMap::new(),
        })
    }

    /// Changes how long empty files and sidecars without an image wait ([`STRAY_AFTER`]).
    #[must_use]
    pub fn with_stray_after(mut self, wait: Duration) -> HotFolder {
        self.stray_after = wait;
        self
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Files that are complete and ready for analysis, oldest name first. An image waits
    /// until its sidecar, if any, is also complete; an empty file is offered only after
    /// [`STRAY_AFTER`] (so that it fails visibly instead of sitting there); a sidecar whose
    /// image has not arrived within [`STRAY_AFTER`] is moved to `failed/` with a note, so it
    /// is never applied to a later image of the same name.
    ///
    /// # Errors
    /// [`HotFolderError`] when the folder cannot be listed (unplugged USB stick).
    pub fn poll(&mut self) -> Result<Vec<PathBuf>, HotFolderError> {
        let err = |source| HotFolderError { path: self.dir.clone(), source };
        let now = Instant::now();
        let mut ready = Vec::new();
        let mut present = Vec::new();
        let mut images = Vec::new();
        let mut sidecars = Vec::new();
        self.set_aside.clear();
        for entry in std::fs::read_dir(&self.dir).map_err(err)? {
            let Ok(entry) = entry else { continue };
            let path = entry.path();
            let Ok(meta) = entry.metadata() else { continue };
            if !meta.is_file() {
                continue;
            }
            if is_sidecar(&path) {
                sidecars.push((path, meta));
            } else if is_candidate(&path) {
                images.push((path, meta));
            }
        }
        // Each image's sidecar from this listing, as `sidecar_path` would find it on disk,
        // without a lookup per pair of files: a backlog of thousands stays cheap.
        let listed: HashMap<&Path, &std::fs::Metadata> =
            sidecars.iter().map(|(p, m)| (p.as_path(), m)).collect();
        let sidecar_of: HashMap<&PathBuf, PathBuf> = images
            .iter()
            .map(|(image, _)| (image, pick_sidecar(image, |p| listed.contains_key(p))))
            .collect();
        let claimed: HashSet<&PathBuf> = sidecar_of.values().collect();
        for (path, meta) in &images {
            match self.unmoved.get(path).cloned() {
                // Stored already: only the move is owed.
                Some((failure, was)) if was == stamp(meta) => {
                    if self.move_with_sidecar(path, failure.as_deref()).is_ok() {
                        self.unmoved.remove(path);
                    }
                    continue;
                }
                // Replaced by a new file of the same name: that one is analysed.
                Some(_) => {
                    self.unmoved.remove(path);
                }
                None => {}
            }
            // Counters only grow when a process dies, so a file's first sighting by this
            // process (a restart) is the one time to look: no read per file per poll.
            if !self.seen.contains_key(path) && self.attempts(path) >= MAX_ATTEMPTS {
                let why = format!(
                    "the service stopped {MAX_ATTEMPTS} times while analysing this file (out of \
                     memory, a crash or power loss); it was set aside so the other files go on: \
                     check the file and drop it again"
                );
                log::error!("{}: {why}", path.display());
                self.set_aside.push((path.clone(), why));
                continue;
            }
            let side =
                sidecar_of.get(path).and_then(|side| listed.get(side.as_path())).map(|m| stamp(m));
            let snap = (stamp(meta), side);
            present.push(path.clone());
            let Some(waited) = self.unchanged_for(path, snap, now) else { continue };
            if waited >= self.stable && (meta.len() > 0 || waited >= self.stray_after) {
                ready.push(path.clone());
            }
        }
        for (path, meta) in &sidecars {
            if claimed.contains(path) {
                continue;
            }
            let snap = (stamp(meta), None);
            present.push(path.clone());
            let waited = self.unchanged_for(path, snap, now);
            if waited.is_some_and(|w| w >= self.stray_after.max(self.stable)) {
                let why = format!(
                    "sidecar without an image: no image named {0} or {0}.* arrived within {1} \
                     s; write the sidecar first, then its image, and drop both again",
                    path.file_stem().map(|s| s.to_string_lossy()).unwrap_or_default(),
                    self.stray_after.as_secs()
                );
                log::warn!("{}: {why}", path.display());
                if let Err(e) = self.move_to(FAILED_DIR, path, Some(&why)) {
                    log::error!("{e}");
                }
            }
        }
        self.seen.retain(|p, _| present.contains(p));
        self.unmoved.retain(|p, _| images.iter().any(|(image, _)| image == p));
        ready.sort();
        Ok(ready)
    }

    /// The files the last [`poll`](Self::poll) set aside after [`MAX_ATTEMPTS`] analyses
    /// that never ended, with the reason. They are not offered for analysis; the caller
    /// stores each as a failure, so it is in the history like any other outcome, and then
    /// moves it (and its sidecar) with [`finish`](Self::finish).
    pub fn take_set_aside(&mut self) -> Vec<(PathBuf, String)> {
        std::mem::take(&mut self.set_aside)
    }

    /// Records that an analysis of `path` starts; [`finish`](Self::finish) clears it. Written
    /// before the work, so a process that dies during it leaves the count behind.
    pub fn begin(&mut self, path: &Path) {
        let marker = self.attempts_marker(path);
        let count = self.attempts(path) + 1;
        let written = std::fs::create_dir_all(self.dir.join(ATTEMPTS_DIR))
            .and_then(|()| std::fs::write(&marker, count.to_string()));
        if let Err(e) = written {
            log::warn!("{}: {e}; a crash on this file would not be counted", marker.display());
        }
    }

    /// Forgets a started analysis that ended without a verdict for a reason outside the
    /// file (the store could not be written): the file will be retried, uncounted.
    pub fn retry_later(&mut self, path: &Path) {
        let _ = std::fs::remove_file(self.attempts_marker(path));
    }

    fn attempts(&self, path: &Path) -> u32 {
        std::fs::read_to_string(self.attempts_marker(path))
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(0)
    }

    fn attempts_marker(&self, path: &Path) -> PathBuf {
        self.dir.join(ATTEMPTS_DIR).join(path.file_name().unwrap_or_default())
    }

    /// How long `path` has looked like `snap`; `None` when it is new or just changed (a
    /// first sighting only starts the clock, even with a zero stable time).
    fn unchanged_for(&mut self, path: &Path, snap: Snapshot, now: Instant) -> Option<Duration> {
        match self.seen.get(path) {
            Some(&(seen, since)) if seen == snap => Some(now.duration_since(since)),
            _ => {
                self.seen.insert(path.to_path_buf(), (snap, now));
                None
            }
        }
    }

    /// Moves a processed file (and its sidecar) to `done/`, or to `failed/` with the reason.
    ///
    /// # Errors
    /// [`HotFolderError`] when the move fails (a full or read-only disk). The file is then
    /// not offered again: each poll retries only the move, so its outcome, already stored,
    /// is not stored again.
    pub fn finish(&mut self, path: &Path, failure: Option<&str>) -> Result<(), HotFolderError> {
        let moved = self.move_with_sidecar(path, failure);
        if moved.is_err() {
            if let Ok(meta) = std::fs::metadata(path) {
                self.unmoved
                    .insert(path.to_path_buf(), (failure.map(str::to_string), stamp(&meta)));
            }
        }
        moved
    }

    fn move_with_sidecar(
        &mut self,
        path: &Path,
        failure: Option<&str>,
    ) -> Result<(), HotFolderError> {
        let sub = if failure.is_some() { FAILED_DIR } else { DONE_DIR };
        let dest_dir = self.move_to(sub, path, failure)?;
        let sidecar = sidecar_path(path);
        if sidecar.exists() {
            let side_name = sidecar.file_name().map(PathBuf::from).unwrap_or_default();
            let _ = move_file(&sidecar, &unique(&dest_dir, &side_name));
        }
        Ok(())
    }

    /// Moves `path` into the subfolder `sub` (recreated if someone removed it), with
    /// `<name>.error.txt` beside it when there is a `failure`; returns the subfolder.
    fn move_to(
        &mut self,
        sub: &str,
        path: &Path,
        failure: Option<&str>,
    ) -> Result<PathBuf, HotFolderError> {
        let dest_dir = self.dir.join(sub);
        std::fs::create_dir_all(&dest_dir)
            .map_err(|source| HotFolderError { path: dest_dir.clone(), source })?;
        let name = path.file_name().map(PathBuf::from).unwrap_or_default();
        let dest = unique(&dest_dir, &name);
        if let Some(reason) = failure {
            let mut note = dest.clone().into_os_string();
            note.push(".error.txt");
            std::fs::write(&note, format!("{reason}\n"))
                .map_err(|source| HotFolderError { path: PathBuf::from(&note), source })?;
        }
        move_file(path, &dest).map_err(|source| HotFolderError {
            path: path.to_path_buf(),
            source: std::io::Error::new(
                source.kind(),
                format!("cannot move to {}: {source}", dest.display()),
            ),
        })?;
        let _ = std::fs::remove_file(self.attempts_marker(path));
        self.seen.remove(path);
        Ok(dest_dir)
    }
}

fn is_sidecar(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    !name.starts_with('.') && name.to_ascii_lowercase().ends_with(".json")
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

/// Renames `from` to `to`; across file systems (`done/` on a mounted stick), copies, syncs
/// and then removes the original, so the file is never lost half-way.
fn move_file(from: &Path, to: &Path) -> std::io::Result<()> {
    match std::fs::rename(from, to) {
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
            let copied = std::fs::copy(from, to)
                .and_then(|_| std::fs::File::open(to))
                .and_then(|f| f.sync_all());
            if let Err(e) = copied {
                let _ = std::fs::remove_file(to);
                return Err(e);
            }
            std::fs::remove_file(from)
        }
        other => other,
    }
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

/// The sidecar of `image`: `<stem>.json` for a file whose extension names an image
/// format (`hand-0042.json` for `hand-0042.png`), else `<whole name>.json`, so that DICOM
/// files named by their SOP Instance UID (`1.2.840.113619.2.55.612`, no extension), which
/// differ only after their last dot, do not share one; `.JSON` where only that exists, as
/// exporters on Windows write it (`SCAN01.PNG` with `SCAN01.JSON`).
pub fn sidecar_path(image: &Path) -> PathBuf {
    pick_sidecar(image, Path::exists)
}

/// Extensions that name an image format, which a sidecar's name leaves out.
const IMAGE_EXTENSIONS: [&str; 11] =
    ["png", "jpg", "jpeg", "tif", "tiff", "bmp", "dcm", "dicom", "dic", "ima", "jfif"];

/// The rule of [`sidecar_path`], with `exists` saying which files are there (the disk, or
/// a folder listing already read).
fn pick_sidecar(image: &Path, exists: impl Fn(&Path) -> bool) -> PathBuf {
    let named_format = image
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()));
    let base = if named_format { image.with_extension("") } else { image.to_path_buf() };
    let with = |ext: &str| {
        let mut name = base.clone().into_os_string();
        name.push(ext);
        PathBuf::from(name)
    };
    let (lower, upper) = (with(".json"), with(".JSON"));
    if !exists(&lower) && exists(&upper) {
        upper
    } else {
        lower
    }
}

/// A sidecar value given as a string or a number, as text for the CLI's parsers (which
/// refuse anything else with their own message); `null` is absent.
fn scalar_text(value: Option<serde_json::Value>) -> Option<String> {
    match value? {
        serde_json::Value::Null => None,
        serde_json::Value::String(s) => Some(s),
        other => Some(other.to_string()),
    }
}

/// Largest sidecar read: far more than its four values need.
const MAX_SIDECAR_BYTES: u64 = 64 * 1024;

/// Reads the sidecar beside `image`, if any.
///
/// # Errors
/// A message naming the sidecar and the bad value.
pub fn read_sidecar(image: &Path) -> Result<SidecarInfo, String> {
    let path = sidecar_path(image);
    let size = match std::fs::metadata(&path) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(SidecarInfo::default()),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    // A sidecar holds four short values; a large file of that name is something else,
    // and must not be read into a small board's memory.
    if size > MAX_SIDECAR_BYTES {
        return Err(format!(
            "{}: {size} bytes, over the {MAX_SIDECAR_BYTES}-byte limit for a sidecar; it should \
             hold only {{\"sex\": ..., \"age\": ..., \"height\": ..., \"id\": ...}}",
            path.display()
        ));
    }
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let raw: Sidecar = serde_json::from_str(&text).map_err(|e| {
        format!(
            "{}: {e}; expected {{\"sex\": \"female\", \"age\": \"10y4m\", \"height\": 142.5, \
             \"id\": \"...\"}} (all keys optional)",
            path.display()
        )
    })?;
    let sex = match raw.sex {
        Some(s) => Some(s.parse::<Sex>().map_err(|e| format!("{}: {e}", path.display()))?),
        None => None,
    };
    let age = match scalar_text(raw.age) {
        Some(a) => Some(a.parse::<Age>().map_err(|e| format!("{}: {e}", path.display()))?),
        None => None,
    };
    let height_cm = match scalar_text(raw.height) {
        Some(h) => Some(
            crate::clinical::parse_height_cm(&h).map_err(|e| format!("{}: {e}", path.display()))?,
        ),
        None => None,
    };
    let exam_id = match raw.id {
        Some(id) => Some(
            crate::report::parse_exam_id(&id).map_err(|e| format!("{}: {e}", path.display()))?,
        ),
        None => None,
    };
    Ok(SidecarInfo { sex, age, height_cm, exam_id })
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
    fn images_wait_for_their_sidecar_and_strays_are_moved_out() {
        let dir = tempfile::tempdir().unwrap();
        let mut hf = HotFolder::open(dir.path(), Duration::from_millis(0))
            .unwrap()
            .with_stray_after(Duration::from_millis(300));
        let (img, side) = (dir.path().join("a.png"), dir.path().join("a.json"));
        std::fs::write(&img, b"x").unwrap();
        std::fs::write(&side, b"{").unwrap();
        hf.poll().unwrap();
        // The sidecar is still being written: the image waits for it.
        std::fs::write(&side, br#"{"sex":"F"}"#).unwrap();
        let t = std::time::SystemTime::now() + Duration::from_secs(5);
        std::fs::File::options().write(true).open(&side).unwrap().set_modified(t).unwrap();
        assert!(hf.poll().unwrap().is_empty(), "sidecar changed: wait");
        assert_eq!(hf.poll().unwrap(), vec![img.clone()]);
        // A missing failed/ (unplugged, deleted) is recreated, not retried for ever.
        std::fs::remove_dir(dir.path().join(FAILED_DIR)).unwrap();
        hf.finish(&img, Some("why")).unwrap();
        assert!(
            dir.path().join("failed/a.png").exists() && dir.path().join("failed/a.json").exists()
        );

        // A sidecar whose image never comes, and an empty file, leave after the wait.
        std::fs::write(dir.path().join("late.json"), br#"{"sex":"M"}"#).unwrap();
        std::fs::write(dir.path().join("empty.png"), b"").unwrap();
        assert!(hf.poll().unwrap().is_empty());
        std::thread::sleep(Duration::from_millis(350));
        assert_eq!(hf.poll().unwrap(), vec![dir.path().join("empty.png")]);
        assert!(!dir.path().join("late.json").exists());
        let why = std::fs::read_to_string(dir.path().join("failed/late.json.error.txt")).unwrap();
        assert!(why.contains("sidecar without an image"), "{why}");
    }

    #[test]
    fn a_file_that_keeps_killing_the_service_is_set_aside() {
        let dir = tempfile::tempdir().unwrap();
        let mut hf = HotFolder::open(dir.path(), Duration::from_millis(0)).unwrap();
        let img = dir.path().join("poison.png");
        std::fs::write(&img, b"x").unwrap();
        hf.poll().unwrap();
        for _ in 0..MAX_ATTEMPTS {
            // Each "process" offers the file and dies during the analysis.
            assert_eq!(hf.poll().unwrap(), vec![img.clone()]);
            hf.begin(&img);
            hf = HotFolder::open(dir.path(), Duration::from_millis(0)).unwrap();
            hf.poll().unwrap();
        }
        std::fs::write(dir.path().join("poison.json"), br#"{"sex":"f"}"#).unwrap();
        assert!(hf.poll().unwrap().is_empty());
        let set_aside = hf.take_set_aside();
        assert_eq!(set_aside.len(), 1);
        let (path, why) = &set_aside[0];
        assert_eq!(path, &img);
        hf.finish(path, Some(why)).unwrap();
        let why = std::fs::read_to_string(dir.path().join("failed/poison.png.error.txt")).unwrap();
        assert!(why.contains("set aside"), "{why}");
        assert!(dir.path().join("failed/poison.json").exists(), "its sidecar goes with it");
        // A file that finishes clears its count.
        std::fs::write(&img, b"y").unwrap();
        hf.poll().unwrap();
        let ready = hf.poll().unwrap();
        hf.begin(&ready[0]);
        hf.finish(&img, None).unwrap();
        assert!(!dir.path().join(ATTEMPTS_DIR).join("poison.png").exists());
    }

    #[test]
    fn a_stored_outcome_that_cannot_be_moved_is_moved_later_not_analysed_again() {
        let dir = tempfile::tempdir().unwrap();
        let mut hf = HotFolder::open(dir.path(), Duration::from_millis(0)).unwrap();
        let img = dir.path().join("a.png");
        std::fs::write(&img, b"x").unwrap();
        hf.poll().unwrap();
        assert_eq!(hf.poll().unwrap(), vec![img.clone()]);
        // failed/ cannot be written (a file in its place stands in for a full disk).
        let failed = dir.path().join(FAILED_DIR);
        std::fs::remove_dir(&failed).unwrap();
        std::fs::write(&failed, b"").unwrap();
        assert!(hf.finish(&img, Some("no sex")).is_err());
        for _ in 0..3 {
            assert!(hf.poll().unwrap().is_empty(), "stored already: not offered again");
        }
        assert!(img.exists());
        std::fs::remove_file(&failed).unwrap();
        assert!(hf.poll().unwrap().is_empty());
        assert!(!img.exists() && failed.join("a.png").exists(), "moved once it could be");
        let note = std::fs::read_to_string(failed.join("a.png.error.txt")).unwrap();
        assert_eq!(note.trim(), "no sex");

        // A new file dropped under the same name while the move was owed is analysed.
        std::fs::write(&img, b"y").unwrap();
        hf.poll().unwrap();
        let done = dir.path().join(DONE_DIR);
        std::fs::remove_dir(&done).unwrap();
        std::fs::write(&done, b"").unwrap();
        assert_eq!(hf.poll().unwrap(), vec![img.clone()]);
        assert!(hf.finish(&img, None).is_err());
        std::fs::write(&img, b"a new radiograph").unwrap();
        hf.poll().unwrap();
        assert_eq!(hf.poll().unwrap(), vec![img.clone()]);
    }

    #[test]
    fn moves_across_file_systems() {
        // /dev/shm is a tmpfs on Linux; where it shares the device with the temp folder the
        // plain rename is what runs, and the test still holds.
        let (Ok(src_dir), Ok(dst_dir)) = (tempfile::tempdir(), tempfile::tempdir_in("/dev/shm"))
        else {
            return;
        };
        let from = src_dir.path().join("a.png");
        std::fs::write(&from, b"radiograph").unwrap();
        let to = dst_dir.path().join("a.png");
        move_file(&from, &to).unwrap();
        assert!(!from.exists());
        assert_eq!(std::fs::read(&to).unwrap(), b"radiograph");
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
        let e = read_sidecar(&img).unwrap_err();
        assert!(e.contains("gender") && e.contains("\"height\": 142.5"), "{e}");
        // An age in months may be a number, as at the command line.
        std::fs::write(dir.path().join("x.json"), r#"{"sex":"f","age":124}"#).unwrap();
        assert_eq!(read_sidecar(&img).unwrap().age.map(Age::months), Some(124.0));
        std::fs::write(dir.path().join("x.json"), r#"{"sex":"f","age":[1]}"#).unwrap();
        assert!(read_sidecar(&img).unwrap_err().contains("age"));
        // A large file of that name is refused unread.
        std::fs::write(dir.path().join("x.json"), vec![b' '; 70_000]).unwrap();
        assert!(read_sidecar(&img).unwrap_err().contains("65536-byte limit"));
    }

    /// DICOM files named by their SOP Instance UID differ only after their last dot: each
    /// pairs with its whole name plus `.json`, not with one shared sidecar.
    #[test]
    fn files_without_an_image_extension_pair_by_their_whole_name() {
        let dir = Path::new("/in");
        let uid = |n: &str| dir.join(format!("1.2.840.113619.2.55.{n}"));
        let none = |_: &Path| false;
        assert_eq!(pick_sidecar(&uid("612"), none), dir.join("1.2.840.113619.2.55.612.json"));
        assert_eq!(pick_sidecar(&uid("613"), none), dir.join("1.2.840.113619.2.55.613.json"));
        assert_eq!(pick_sidecar(&dir.join("IM0001"), none), dir.join("IM0001.json"));
        assert_eq!(pick_sidecar(&dir.join("hand.v2.PNG"), none), dir.join("hand.v2.json"));
        assert_eq!(pick_sidecar(&dir.join("x.dcm"), none), dir.join("x.json"));
        let upper = |p: &Path| p == dir.join("IM0001.JSON");
        assert_eq!(pick_sidecar(&dir.join("IM0001"), upper), dir.join("IM0001.JSON"));
    }

    #[test]
    fn an_upper_case_sidecar_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("SCAN01.PNG");
        std::fs::write(dir.path().join("SCAN01.JSON"), r#"{"sex":"F"}"#).unwrap();
        assert_eq!(sidecar_path(&img), dir.path().join("SCAN01.JSON"));
        assert_eq!(read_sidecar(&img).unwrap().sex, Some(Sex::Female));
        // Both present: the lower-case one, as documented.
        std::fs::write(dir.path().join("SCAN01.json"), r#"{"sex":"M"}"#).unwrap();
        assert_eq!(read_sidecar(&img).unwrap().sex, Some(Sex::Male));
    }
}
