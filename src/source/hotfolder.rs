//! Hot folder: scanner or PACS export software drops radiographs into a directory.
//!
//! Each file is handed out once it is completely written: its size and modification time
//! have not changed for `stable` (or it was moved in atomically, which looks the same).
//! Names starting with `.` and ending in `.tmp`, `.part` or `.partial` are in-progress
//! copies and are skipped. After analysis the caller moves the file to `done/` or to
//! `failed/` (with `<name>.error.txt` beside it saying why), unless it was replaced during
//! the analysis: the new file stays and is analysed in its turn. Files present at start-up
//! are processed too, so a restart mid-file only repeats that file's wait. Symbolic links
//! are not followed: they are moved to `failed/` with a note.
//!
//! An optional sidecar `<stem>.json`
//! (`{"sex": "female", "age": "10y4m", "height": "142.5", "id": "A123"}`)
//! carries what a plain image cannot; DICOM files carry it in their tags.

use std::collections::{HashMap, HashSet};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
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

/// Which file a path names, and in what state: device, inode, size and modification time.
/// A file renamed over the path (`mv new.png hand.png`) has another inode; one rewritten in
/// place another size or time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileId {
    dev: u64,
    ino: u64,
    stamp: FileStamp,
}

fn file_id(meta: &std::fs::Metadata) -> FileId {
    FileId { dev: meta.dev(), ino: meta.ino(), stamp: stamp(meta) }
}

/// The file at `path` itself (a symbolic link is not followed).
fn file_id_of(path: &Path) -> Option<FileId> {
    std::fs::symlink_metadata(path).ok().map(|m| file_id(&m))
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
    unmoved: HashMap<PathBuf, (Option<String>, FileId)>,
    /// The file each analysis in progress started on ([`begin`](Self::begin)), so that
    /// [`finish`](Self::finish) moves only that file, not one put in its place meanwhile.
    analysing: HashMap<PathBuf, FileId>,
    /// Whether the folder and its subfolders exist (made by [`open`](Self::open), or by the
    /// first [`poll`](Self::poll) after [`new`](Self::new) that could make them).
    created: bool,
    /// Run once the folder exists, before anything in it is taken: a reason not to watch it
    /// (it leads to the unit's own files through a symbolic link).
    check: Option<FolderCheck>,
}

/// See [`HotFolder::with_check`].
type FolderCheck = Box<dyn Fn(&Path) -> Result<(), String> + Send>;

impl HotFolder {
    /// Creates the folder and its `done/` and `failed/` subfolders if needed.
    ///
    /// # Errors
    /// [`HotFolderError`] when the folders cannot be created.
    pub fn open(dir: &Path, stable: Duration) -> Result<HotFolder, HotFolderError> {
        let mut hf = HotFolder::new(dir, stable);
        hf.create()?;
        hf.created = true;
        Ok(hf)
    }

    /// A hot folder that is made when it first can be: each [`poll`](Self::poll) tries to
    /// create it (and `done/`, `failed/`) until that works, and fails meanwhile, as for a
    /// folder that went away. A USB stick not plugged in at boot must not stop the unit.
    pub fn new(dir: &Path, stable: Duration) -> HotFolder {
        HotFolder {
            dir: dir.to_path_buf(),
            stable,
            seen: HashMap::new(),
            stray_after: STRAY_AFTER,
            set_aside: Vec::new(),
            unmoved: HashMap::new(),
            analysing: HashMap::new(),
            created: false,
            check: None,
        }
    }

    /// Creates the folder and its `done/` and `failed/` subfolders if needed.
    ///
    /// # Errors
    /// [`HotFolderError`] naming the folder that cannot be created and why.
    pub fn create(&self) -> Result<(), HotFolderError> {
        for d in [self.dir.clone(), self.dir.join(DONE_DIR), self.dir.join(FAILED_DIR)] {
            std::fs::create_dir_all(&d).map_err(|e| HotFolderError {
                path: d.clone(),
                source: std::io::Error::new(e.kind(), format!("cannot create it: {e}")),
            })?;
        }
        Ok(())
    }

    /// Runs `check` on the folder once [`poll`](Self::poll) has created it, before taking
    /// any file: an `Err` (a reason not to watch this folder, which names the fix) is
    /// returned by every poll until the check passes.
    #[must_use]
    pub fn with_check(
        mut self,
        check: impl Fn(&Path) -> Result<(), String> + Send + 'static,
    ) -> HotFolder {
        self.check = Some(Box::new(check));
        self
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
        if !self.created {
            self.create()?;
            if let Some(check) = &self.check {
                check(&self.dir).map_err(|why| HotFolderError {
                    path: self.dir.clone(),
                    source: std::io::Error::other(why),
                })?;
            }
            self.created = true;
            log::info!("hot folder {} is watched", self.dir.display());
        }
        let err = |source| HotFolderError { path: self.dir.clone(), source };
        let now = Instant::now();
        let mut ready = Vec::new();
        let mut present = HashSet::new();
        let mut images = Vec::new();
        let mut sidecars = Vec::new();
        let mut links = Vec::new();
        self.set_aside.clear();
        for entry in std::fs::read_dir(&self.dir).map_err(err)? {
            let Ok(entry) = entry else { continue };
            let path = entry.path();
            // The entry itself: a symbolic link is not followed.
            let Ok(meta) = entry.metadata() else { continue };
            if meta.file_type().is_symlink() {
                // A link to a folder is left alone, like a subfolder.
                let to_dir = std::fs::metadata(&path).is_ok_and(|m| m.is_dir());
                if !to_dir && (is_sidecar(&path) || is_candidate(&path)) {
                    links.push(path);
                }
                continue;
            }
            if !meta.is_file() {
                continue;
            }
            if is_sidecar(&path) {
                sidecars.push((path, meta));
            } else if is_candidate(&path) {
                images.push((path, meta));
            }
        }
        if !links.is_empty() {
            for link in &links {
                // Not gone already with the image it is the sidecar of.
                if std::fs::symlink_metadata(link).is_ok() {
                    self.refuse_link(link);
                }
            }
            // An image link takes its sidecar with it.
            sidecars.retain(|(p, _)| p.exists());
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
                Some((failure, was)) if was == file_id(meta) => {
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
                // Moved only if it is still this file once its failure is stored.
                self.analysing.insert(path.clone(), file_id(meta));
                self.set_aside.push((path.clone(), why));
                continue;
            }
            let side =
                sidecar_of.get(path).and_then(|side| listed.get(side.as_path())).map(|m| stamp(m));
            let snap = (stamp(meta), side);
            present.insert(path.clone());
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
            present.insert(path.clone());
            let waited = self.unchanged_for(path, snap, now);
            if waited.is_some_and(|w| w >= self.stray_after.max(self.stable)) {
                let why = format!(
                    "sidecar without an image: no image named {0} or {0}.* arrived within {1} \
                     s; write the sidecar first, then its image, and drop both again",
                    path.file_stem().map(|s| s.to_string_lossy()).unwrap_or_default(),
                    self.stray_after.as_secs()
                );
                log::warn!("{}: {why}", path.display());
                if let Err(e) = self.move_to(FAILED_DIR, path, Some(&why), None) {
                    log::error!("{e}");
                }
            }
        }
        // Sets, not lists: a backlog of thousands of waiting files must stay cheap to poll.
        self.seen.retain(|p, _| present.contains(p));
        let listed_images: HashSet<&PathBuf> = images.iter().map(|(p, _)| p).collect();
        self.unmoved.retain(|p, _| listed_images.contains(p));
        ready.sort();
        Ok(ready)
    }

    /// Moves a symbolic link (not what it points to) to `failed/` with a note: what it
    /// points to can change or vanish after the analysis, so only files are taken.
    fn refuse_link(&mut self, link: &Path) {
        let target = std::fs::read_link(link).map(|t| t.display().to_string()).unwrap_or_default();
        let why = format!(
            "{} is a symbolic link (to {target}); the hot folder does not take symbolic links, \
             because what they point to can change or vanish: copy the file itself into the \
             folder (write it under a temporary name, then rename it)",
            link.display()
        );
        log::warn!("{why}");
        let moved = if is_sidecar(link) {
            self.move_to(FAILED_DIR, link, Some(&why), None)
        } else {
            self.move_with_sidecar(link, Some(&why))
        };
        if let Err(e) = moved {
            log::error!("{e}");
        }
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
        // The file the analysis is about to read: only it is moved afterwards.
        match file_id_of(path) {
            Some(id) => {
                self.analysing.insert(path.to_path_buf(), id);
            }
            None => {
                self.analysing.remove(path);
            }
        }
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
        self.analysing.remove(path);
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
    /// A file replaced since its analysis began ([`begin`](Self::begin)), by a rename over
    /// it or a rewrite, is not the one whose outcome was stored: it stays, with its
    /// sidecar, and is analysed once it is complete.
    ///
    /// # Errors
    /// [`HotFolderError`] when the move fails (a full or read-only disk). The file is then
    /// not offered again: each poll retries only the move, so its outcome, already stored,
    /// is not stored again.
    pub fn finish(&mut self, path: &Path, failure: Option<&str>) -> Result<(), HotFolderError> {
        let now = file_id_of(path);
        if let Some(read) = self.analysing.remove(path) {
            if now.is_some_and(|now| now != read) {
                log::warn!(
                    "{}: replaced by another file while it was analysed; the outcome stored is \
                     the earlier file's, and the new file stays in the folder and is analysed \
                     once it is complete",
                    path.display()
                );
                // A new file: its own wait, and its own count of attempts.
                self.seen.remove(path);
                let _ = std::fs::remove_file(self.attempts_marker(path));
                return Ok(());
            }
        }
        let moved = self.move_with_sidecar(path, failure);
        if moved.is_err() {
            if let Some(id) = now {
                self.unmoved.insert(path.to_path_buf(), (failure.map(str::to_string), id));
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
        let sidecar = sidecar_path(path);
        let sidecar = std::fs::symlink_metadata(&sidecar).is_ok().then_some(sidecar);
        self.move_to(sub, path, failure, sidecar.as_deref())
    }

    /// Moves `path` into the subfolder `sub` (recreated if someone removed it), with
    /// `<name>.error.txt` beside it when there is a `failure`, and its `sidecar` if given,
    /// under the same suffix as the file (`a.png.1` with `a.json.1`), so that a sidecar
    /// never sits beside another drop's image.
    fn move_to(
        &mut self,
        sub: &str,
        path: &Path,
        failure: Option<&str>,
        sidecar: Option<&Path>,
    ) -> Result<(), HotFolderError> {
        let dest_dir = self.dir.join(sub);
        std::fs::create_dir_all(&dest_dir)
            .map_err(|source| HotFolderError { path: dest_dir.clone(), source })?;
        let name = path.file_name().map(PathBuf::from).unwrap_or_default();
        let side_name = sidecar.map(|s| s.file_name().map(PathBuf::from).unwrap_or_default());
        let (dest, side_dest) = unique_pair(&dest_dir, &name, side_name.as_deref());
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
        if let (Some(from), Some(to)) = (sidecar, side_dest) {
            if let Err(e) = move_file(from, &to) {
                log::error!(
                    "{}: cannot move to {}: {e}; move it there by hand (its image is {})",
                    from.display(),
                    to.display(),
                    dest.display()
                );
            }
        }
        Ok(())
    }
}

/// The file name's bytes, as the file system has them: a name that is not UTF-8
/// (`r\xf6ntgen.png.part` written by a Latin-1 system) is judged like any other.
fn name_bytes(path: &Path) -> &[u8] {
    path.file_name().map(|n| n.as_bytes()).unwrap_or_default()
}

fn ends_with_ignore_case(name: &[u8], suffix: &str) -> bool {
    name.len() >= suffix.len()
        && name[name.len() - suffix.len()..].eq_ignore_ascii_case(suffix.as_bytes())
}

fn is_sidecar(path: &Path) -> bool {
    let name = name_bytes(path);
    !name.starts_with(b".") && ends_with_ignore_case(name, ".json")
}

fn is_candidate(path: &Path) -> bool {
    let name = name_bytes(path);
    !(name.starts_with(b".")
        || [".tmp", ".part", ".partial", ".json", ".txt"]
            .iter()
            .any(|suffix| ends_with_ignore_case(name, suffix)))
}

/// Renames `from` to `to`; across file systems (`done/` on a mounted stick), copies, syncs
/// and then removes the original, so the file is never lost half-way. A symbolic link is
/// moved as a link, never followed.
fn move_file(from: &Path, to: &Path) -> std::io::Result<()> {
    match std::fs::rename(from, to) {
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
            if std::fs::symlink_metadata(from)?.file_type().is_symlink() {
                std::os::unix::fs::symlink(std::fs::read_link(from)?, to)?;
                return std::fs::remove_file(from);
            }
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

/// `dir/name`, or `dir/name.1`, `.2`... if taken, so a repeated file name never
/// overwrites; with a `sidecar` name, the first suffix free for both, so that an image and
/// its sidecar keep the same one (`a.png.2` with `a.json.2`).
fn unique_pair(dir: &Path, name: &Path, sidecar: Option<&Path>) -> (PathBuf, Option<PathBuf>) {
    let with = |name: &Path, i: u32| {
        let mut n = name.as_os_str().to_os_string();
        if i > 0 {
            n.push(format!(".{i}"));
        }
        dir.join(n)
    };
    // `symlink_metadata`: a dangling link in the way is still taken.
    let free = |p: &Path| std::fs::symlink_metadata(p).is_err();
    let pair = |i| (with(name, i), sidecar.map(|s| with(s, i)));
    (0..)
        .map(pair)
        .find(|(image, side)| free(image) && side.as_deref().is_none_or(free))
        .unwrap_or_else(|| pair(0))
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

    /// A file renamed over (or rewritten in place) while it is analysed is not the file
    /// whose outcome is stored: it stays, with its sidecar, and is offered again once
    /// complete; the unchanged file is moved as before.
    #[test]
    fn a_file_replaced_during_its_analysis_stays_and_is_offered_again() {
        let dir = tempfile::tempdir().unwrap();
        let mut hf = HotFolder::open(dir.path(), Duration::from_millis(0)).unwrap();
        let (img, side) = (dir.path().join("slow.png"), dir.path().join("slow.json"));
        std::fs::write(&img, b"first").unwrap();
        std::fs::write(&side, br#"{"sex":"f"}"#).unwrap();
        hf.poll().unwrap();
        assert_eq!(hf.poll().unwrap(), vec![img.clone()]);
        hf.begin(&img);
        // `mv .tmp slow.png` during the analysis.
        let tmp = dir.path().join(".tmp");
        std::fs::write(&tmp, b"other").unwrap();
        std::fs::rename(&tmp, &img).unwrap();
        hf.finish(&img, None).unwrap();
        assert_eq!(std::fs::read(&img).unwrap(), b"other", "the new file stays");
        assert!(side.exists(), "and so does the sidecar");
        assert!(!dir.path().join("done/slow.png").exists());
        assert!(hf.poll().unwrap().is_empty(), "a new file: its own wait");
        assert_eq!(hf.poll().unwrap(), vec![img.clone()]);
        // Rewritten in place (same inode, other size) during the analysis: also kept.
        hf.begin(&img);
        std::fs::write(&img, b"rewritten").unwrap();
        hf.finish(&img, Some("bad")).unwrap();
        assert!(img.exists() && !dir.path().join("failed/slow.png").exists());
        hf.poll().unwrap();
        assert_eq!(hf.poll().unwrap(), vec![img.clone()]);
        hf.begin(&img);
        hf.finish(&img, None).unwrap();
        assert_eq!(std::fs::read(dir.path().join("done/slow.png")).unwrap(), b"rewritten");
        assert!(dir.path().join("done/slow.json").exists());
        // A file set aside is moved only if it is still that file, too.
        std::fs::write(&img, b"poison").unwrap();
        std::fs::create_dir_all(dir.path().join(ATTEMPTS_DIR)).unwrap();
        std::fs::write(dir.path().join(ATTEMPTS_DIR).join("slow.png"), "3").unwrap();
        assert!(hf.poll().unwrap().is_empty());
        let set_aside = hf.take_set_aside();
        assert_eq!(set_aside.len(), 1);
        std::fs::write(&tmp, b"fixed").unwrap();
        std::fs::rename(&tmp, &img).unwrap();
        hf.finish(&img, Some("set aside")).unwrap();
        assert!(img.exists() && !dir.path().join("failed/slow.png").exists());
        assert!(!dir.path().join(ATTEMPTS_DIR).join("slow.png").exists(), "a fresh count");
        hf.poll().unwrap();
        assert_eq!(hf.poll().unwrap(), vec![img.clone()]);
    }

    /// Names that are not UTF-8 (a Latin-1 system's `röntgen.png.part`) are judged by their
    /// bytes like any other: in-progress copies are skipped.
    #[test]
    fn names_that_are_not_utf8_are_judged_by_their_bytes() {
        use std::ffi::OsStr;
        let name = |b: &[u8]| PathBuf::from(OsStr::from_bytes(b));
        assert!(!is_candidate(&name(b"r\xf6ntgen.png.part")));
        assert!(!is_candidate(&name(b"r\xf6ntgen.png.PARTIAL")));
        assert!(!is_candidate(&name(b".h\xe4nd.png")));
        assert!(!is_candidate(&name(b"r\xf6ntgen.txt")));
        assert!(!is_candidate(&name(b"r\xf6ntgen.json")));
        assert!(is_candidate(&name(b"r\xf6ntgen.png")));
        assert!(is_sidecar(&name(b"r\xf6ntgen.JSON")));
        assert!(!is_sidecar(&name(b".r\xf6ntgen.json")));

        let dir = tempfile::tempdir().unwrap();
        let mut hf = HotFolder::open(dir.path(), Duration::from_millis(0)).unwrap();
        let at = |b: &[u8]| dir.path().join(OsStr::from_bytes(b));
        for n in [&b"r\xf6ntgen.png.part"[..], b".h\xe4nd.png", b"r\xf6ntgen.png"] {
            if std::fs::write(at(n), b"x").is_err() {
                return; // a file system that refuses such names cannot hold them either
            }
        }
        hf.poll().unwrap();
        assert_eq!(hf.poll().unwrap(), vec![at(b"r\xf6ntgen.png")]);
    }

    /// In done/ and failed/ an image and its sidecar get the same suffix, so a sidecar
    /// never ends up beside another drop's image.
    #[test]
    fn an_image_and_its_sidecar_keep_the_same_suffix() {
        let dir = tempfile::tempdir().unwrap();
        let mut hf = HotFolder::open(dir.path(), Duration::from_millis(0)).unwrap();
        let failed = dir.path().join(FAILED_DIR);
        // A stray sidecar failed earlier: failed/a.json, no failed/a.png.
        std::fs::write(failed.join("a.json"), b"stray").unwrap();
        let drop_pair = |hf: &mut HotFolder, side: &[u8]| {
            let img = dir.path().join("a.png");
            std::fs::write(&img, b"x").unwrap();
            std::fs::write(dir.path().join("a.json"), side).unwrap();
            hf.poll().unwrap();
            assert_eq!(hf.poll().unwrap(), vec![img.clone()]);
            hf.finish(&img, Some("why")).unwrap();
        };
        drop_pair(&mut hf, b"first");
        assert!(!failed.join("a.png").exists());
        assert_eq!(std::fs::read(failed.join("a.png.1")).unwrap(), b"x");
        assert_eq!(std::fs::read(failed.join("a.json.1")).unwrap(), b"first");
        assert!(failed.join("a.png.1.error.txt").exists());
        assert_eq!(std::fs::read(failed.join("a.json")).unwrap(), b"stray", "not overwritten");
        // An image already there without its sidecar: the next pair moves past it.
        std::fs::write(failed.join("a.png.2"), b"alone").unwrap();
        drop_pair(&mut hf, b"second");
        assert!(!failed.join("a.json.2").exists(), "not beside another drop's image");
        assert_eq!(std::fs::read(failed.join("a.json.3")).unwrap(), b"second");
        assert_eq!(std::fs::read(failed.join("a.png.3")).unwrap(), b"x");
        // Without a sidecar, only the image's name counts.
        std::fs::write(dir.path().join("b.png"), b"y").unwrap();
        std::fs::write(failed.join("b.json"), b"stray").unwrap();
        hf.poll().unwrap();
        let ready = hf.poll().unwrap();
        hf.finish(&ready[0], Some("why")).unwrap();
        assert!(failed.join("b.png").exists());
    }

    /// A symbolic link is not followed: it is moved (as a link) to failed/ with a note
    /// saying to copy the file in, with its sidecar; a link to a folder is left alone.
    #[test]
    fn symbolic_links_are_moved_to_failed_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        let mut hf = HotFolder::open(dir.path(), Duration::from_millis(0)).unwrap();
        let target = elsewhere.path().join("hand.png");
        std::fs::write(&target, b"radiograph").unwrap();
        let link = |name: &str, to: &Path| {
            std::os::unix::fs::symlink(to, dir.path().join(name)).unwrap();
        };
        link("linked.png", &target);
        std::fs::write(dir.path().join("linked.json"), br#"{"sex":"f"}"#).unwrap();
        link("dangling.png", &elsewhere.path().join("gone.png"));
        std::fs::write(elsewhere.path().join("side.json"), br#"{"sex":"m"}"#).unwrap();
        link("real.json", &elsewhere.path().join("side.json"));
        std::fs::write(dir.path().join("real.png"), b"x").unwrap();
        link("folder", elsewhere.path());

        assert!(hf.poll().unwrap().is_empty());
        let failed = dir.path().join(FAILED_DIR);
        for name in ["linked.png", "dangling.png", "real.json"] {
            let moved = failed.join(name);
            assert!(std::fs::symlink_metadata(&moved).unwrap().file_type().is_symlink(), "{name}");
            let why = std::fs::read_to_string(failed.join(format!("{name}.error.txt"))).unwrap();
            assert!(why.contains("symbolic link") && why.contains("copy the file"), "{why}");
            assert!(!dir.path().join(name).exists());
        }
        assert!(failed.join("linked.json").is_file(), "the sidecar goes with its image");
        assert_eq!(std::fs::read(&target).unwrap(), b"radiograph", "the target is untouched");
        assert!(elsewhere.path().join("side.json").exists());
        assert!(dir.path().join("folder").exists(), "a link to a folder is left alone");
        // The real image is still offered.
        assert_eq!(hf.poll().unwrap(), vec![dir.path().join("real.png")]);
    }

    /// A folder that cannot be created yet (a stick not plugged in) is tried again at each
    /// poll; once made, the check runs before any file is taken.
    #[test]
    fn a_folder_that_cannot_be_created_yet_is_tried_again() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("stick");
        std::fs::write(&blocker, b"").unwrap();
        let inbox = blocker.join("inbox");
        let allowed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let ok = std::sync::Arc::clone(&allowed);
        let mut hf = HotFolder::new(&inbox, Duration::from_millis(0)).with_check(move |d| {
            if ok.load(std::sync::atomic::Ordering::Relaxed) {
                Ok(())
            } else {
                Err(format!("{} is not allowed", d.display()))
            }
        });
        let e = hf.poll().unwrap_err().to_string();
        assert!(e.contains("cannot create it") && e.contains("stick"), "{e}");
        std::fs::remove_file(&blocker).unwrap();
        let e = hf.poll().unwrap_err().to_string();
        assert!(e.contains("is not allowed"), "{e}");
        assert!(inbox.join(DONE_DIR).is_dir() && inbox.join(FAILED_DIR).is_dir());
        std::fs::write(inbox.join("a.png"), b"x").unwrap();
        allowed.store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(hf.poll().unwrap().is_empty());
        assert_eq!(hf.poll().unwrap(), vec![inbox.join("a.png")]);
    }
}
