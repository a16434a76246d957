//! Durable record of every analysis, written before the result is shown or reported.
//!
//! SQLite in WAL mode with `synchronous = FULL`: once [`Store::insert`] returns, the row
//! survives a power cut or a SIGKILL (the field clinic has unreliable power). One writer
//! connection per process; readers may share it through a mutex.

use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("result store {}: {source}; {}", path.display(), advice(source))]
    Sqlite { path: PathBuf, source: rusqlite::Error },
    #[error("backup {}: {reason}", path.display())]
    Backup { path: PathBuf, reason: String },
    #[error("result store {}: cannot create folder: {source}", path.display())]
    Dir { path: PathBuf, source: std::io::Error },
    /// SQLite opens a file it may not write read-only, and every open step still passes;
    /// only the first result would fail.
    #[error("result store {} can be read but not written by this service: the file, its -wal/-shm files or its folder belong to another user (a backup restored as root?); give them to the service's user (e.g. `chown boneage: FILE*` and its folder)", path.display())]
    ReadOnly { path: PathBuf },
}

impl StoreError {
    /// Whether waiting may cure it: a full disk or a failing write, which someone can
    /// free or fix while the unit waits; not a damaged file or a wrong path.
    pub fn is_transient(&self) -> bool {
        use rusqlite::ErrorCode::{DiskFull, SystemIoFailure};
        match self {
            StoreError::Sqlite { source, .. } => {
                matches!(source.sqlite_error_code(), Some(DiskFull | SystemIoFailure))
            }
            StoreError::Dir { source, .. } => source.kind() == std::io::ErrorKind::StorageFull,
            // An administrator can hand the file over while the unit waits.
            StoreError::ReadOnly { .. } => true,
            StoreError::Backup { .. } => false,
        }
    }
}

/// What to do about a store error: a damaged file needs a different remedy from a full disk.
fn advice(e: &rusqlite::Error) -> &'static str {
    use rusqlite::ErrorCode::{DatabaseCorrupt, NotADatabase};
    match e.sqlite_error_code() {
        Some(DatabaseCorrupt | NotADatabase) => {
            "the file is damaged: stop the service, move the file aside (keep it, with any \
             -wal file, for recovery), restore the last backup or start with an empty store \
             (docs/deploy.md, Store)"
        }
        Some(rusqlite::ErrorCode::CannotOpen) => {
            "check that [store] path names a file (not a folder) in a folder this service may \
             write"
        }
        Some(rusqlite::ErrorCode::DiskFull) => "free disk space",
        _ => "check the path is writable and the disk not full",
    }
}

/// One stored analysis (successful or failed).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Record {
    /// Assigned by the store, increasing.
    pub id: i64,
    /// RFC 3339 UTC time the record was written.
    pub created_at: String,
    /// Where the image came from: a path, "camera", a hot-folder file.
    pub source: String,
    /// SHA-256 of the image file bytes (hex), empty when no bytes were read.
    pub image_sha256: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exam_id: Option<String>,
    /// The file's PatientID (DICOM).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patient_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sex: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub age_months: Option<f64>,
    /// Where `age_months` came from: "given", "file_dates" or "file_patient_age".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub age_source: Option<String>,
    /// The exam date in the image file (`YYYY-MM-DD`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exam_date: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bone_age_months: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval95_months: Option<f64>,
    /// SD of the test-time view readings (months); absent with one view.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub view_spread_months: Option<f64>,
    /// The model's likeness score (about 1 for training radiographs); absent for a model
    /// without it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ood_score: Option<f64>,
    /// Standing height given with the request (cm).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub height_cm: Option<f64>,
    /// Bone age SDS against the Greulich-Pyle reference (needs the chronological age).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sds: Option<f64>,
    /// "delayed", "normal" or "advanced".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    /// Bayley-Pinneau predicted adult height (cm).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub adult_height_cm: Option<f64>,
    /// What the reader must know about this number (outside the training range, ...).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    pub model: String,
    /// "ok" or "error".
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A record before the store gives it an id and a time.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NewRecord {
    pub source: String,
    pub image_sha256: String,
    pub exam_id: Option<String>,
    pub patient_id: Option<String>,
    pub sex: Option<String>,
    pub age_months: Option<f64>,
    pub age_source: Option<String>,
    pub exam_date: Option<String>,
    pub bone_age_months: Option<f64>,
    pub interval95_months: Option<f64>,
    pub view_spread_months: Option<f64>,
    pub ood_score: Option<f64>,
    pub height_cm: Option<f64>,
    pub sds: Option<f64>,
    pub category: Option<String>,
    pub adult_height_cm: Option<f64>,
    pub warnings: Vec<String>,
    pub model: String,
    pub error: Option<String>,
    /// The request's arguments in canonical form (`Request::arguments`), kept so that a
    /// client's resend of the identical request is recognised ([`Store::find_resent`]).
    pub request: Option<String>,
}

pub struct Store {
    conn: Connection,
    path: PathBuf,
    /// The start-up integrity check's finding when it was not "ok": a damaged file keeps
    /// serving what it can, but STATUS must say so.
    damage: Option<String>,
    /// The last failed write, cleared by the next successful one (a full disk).
    write_error: std::cell::RefCell<Option<String>>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS results (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at TEXT NOT NULL,
    source TEXT NOT NULL,
    image_sha256 TEXT NOT NULL,
    exam_id TEXT,
    sex TEXT,
    age_months REAL,
    bone_age_months REAL,
    interval95_months REAL,
    model TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('ok', 'error')),
    error TEXT
);";

/// Columns added after the first release: (name, SQL type). Stores written by an older
/// version get them on open, so their results stay readable.
const ADDED_COLUMNS: [(&str, &str); 11] = [
    ("height_cm", "REAL"),
    ("sds", "REAL"),
    ("category", "TEXT"),
    ("adult_height_cm", "REAL"),
    ("warnings", "TEXT"),
    ("view_spread_months", "REAL"),
    ("age_source", "TEXT"),
    ("exam_date", "TEXT"),
    ("patient_id", "TEXT"),
    ("request", "TEXT"),
    ("ood_score", "REAL"),
];

impl Store {
    /// Opens (creating if needed) the store at `path`.
    ///
    /// # Errors
    /// [`StoreError`] naming the file when it cannot be created or is not a valid store.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|source| StoreError::Dir { path: dir.to_path_buf(), source })?;
        }
        let err = |source| StoreError::Sqlite { path: path.to_path_buf(), source };
        let conn = Connection::open(path).map_err(err)?;
        conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(err)?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(err)?;
        conn.pragma_update(None, "synchronous", "FULL").map_err(err)?;
        // Copy each committed result from the -wal into the main file at once, so the main
        // file alone holds every result: a lost or damaged -wal (a copy that forgot it, a
        // power cut) then loses nothing. One result is a few pages; the cost is one more
        // sync per result. (A copy cannot pass an open reader's view: while a backup or
        // another program reads, new results wait in the synced -wal.)
        conn.pragma_update(None, "wal_autocheckpoint", 1).map_err(err)?;
        conn.execute_batch(SCHEMA).map_err(err)?;
        migrate(&conn).map_err(err)?;
        let check: String = conn.query_row("PRAGMA quick_check", [], |r| r.get(0)).map_err(err)?;
        let damage = (check != "ok").then(|| {
            log::error!(
                "store {} failed its integrity check: {check}; some results may be unreadable: \
                 stop the service, copy the file (with any -wal file) aside and see \
                 docs/deploy.md, Store",
                path.display()
            );
            check
        });
        Ok(Store {
            conn,
            path: path.to_path_buf(),
            damage,
            write_error: std::cell::RefCell::new(None),
        })
    }

    /// Opens the store as [`open`](Self::open) does, for a service that writes results:
    /// refused when this process may only read it.
    ///
    /// # Errors
    /// As [`open`](Self::open), and [`StoreError::ReadOnly`].
    pub fn open_writable(path: &Path) -> Result<Store, StoreError> {
        let store = Store::open(path)?;
        store.writable()?;
        Ok(store)
    }

    /// [`StoreError::ReadOnly`] when the connection can only read the file.
    fn writable(&self) -> Result<(), StoreError> {
        match self.conn.is_readonly(rusqlite::MAIN_DB) {
            Ok(false) => Ok(()),
            Ok(true) => Err(StoreError::ReadOnly { path: self.path.clone() }),
            Err(e) => Err(self.err(e)),
        }
    }

    /// For STATUS: `ok`, `damaged: <integrity check finding>` (from start-up), or
    /// `error: <reason>` while writes fail.
    pub fn health(&self) -> String {
        if let Some(e) = self.write_error.borrow().as_ref() {
            return format!("error: {e}");
        }
        match &self.damage {
            // The first finding, not SQLite's "*** in database main ***" heading.
            Some(check) => format!(
                "damaged: {}",
                check.lines().find(|l| !l.starts_with("***")).unwrap_or(check.as_str())
            ),
            None => "ok".into(),
        }
    }

    fn err(&self, source: rusqlite::Error) -> StoreError {
        StoreError::Sqlite { path: self.path.clone(), source }
    }

    /// Writes a record durably and returns it with its id.
    ///
    /// # Errors
    /// [`StoreError`] if the write did not reach the disk; the result must then not be reported.
    pub fn insert(&self, r: &NewRecord) -> Result<Record, StoreError> {
        let created_at = now_rfc3339();
        let status = if r.error.is_some() { "error" } else { "ok" };
        self.conn
            .execute(
                "INSERT INTO results (created_at, source, image_sha256, exam_id, sex, age_months,
                 bone_age_months, interval95_months, model, status, error,
                 height_cm, sds, category, adult_height_cm, warnings, view_spread_months,
                 age_source, exam_date, patient_id, request, ood_score)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16,
                 ?17, ?18, ?19, ?20, ?21, ?22)",
                params![
                    created_at,
                    r.source,
                    r.image_sha256,
                    r.exam_id,
                    r.sex,
                    r.age_months,
                    r.bone_age_months,
                    r.interval95_months,
                    r.model,
                    status,
                    r.error,
                    r.height_cm,
                    r.sds,
                    r.category,
                    r.adult_height_cm,
                    warnings_json(&r.warnings),
                    r.view_spread_months,
                    r.age_source,
                    r.exam_date,
                    r.patient_id,
                    r.request,
                    r.ood_score,
                ],
            )
            .map_err(|e| {
                *self.write_error.borrow_mut() = Some(e.to_string());
                self.err(e)
            })?;
        self.write_error.borrow_mut().take();
        let id = self.conn.last_insert_rowid();
        Ok(Record {
            id,
            created_at,
            source: r.source.clone(),
            image_sha256: r.image_sha256.clone(),
            exam_id: r.exam_id.clone(),
            patient_id: r.patient_id.clone(),
            sex: r.sex.clone(),
            age_months: r.age_months,
            age_source: r.age_source.clone(),
            exam_date: r.exam_date.clone(),
            bone_age_months: r.bone_age_months,
            interval95_months: r.interval95_months,
            view_spread_months: r.view_spread_months,
            ood_score: r.ood_score,
            height_cm: r.height_cm,
            sds: r.sds,
            category: r.category.clone(),
            adult_height_cm: r.adult_height_cm,
            warnings: r.warnings.clone(),
            model: r.model.clone(),
            status: status.to_string(),
            error: r.error.clone(),
        })
    }

    /// # Errors
    /// [`StoreError`] on a read failure; a missing id is `Ok(None)`.
    pub fn get(&self, id: i64) -> Result<Option<Record>, StoreError> {
        self.conn
            .query_row(&format!("{SELECT} WHERE id = ?1"), [id], row_to_record)
            .optional()
            .map_err(|e| self.err(e))
    }

    /// The newest record for this source and image hash, if any.
    ///
    /// # Errors
    /// [`StoreError`] on a read failure.
    pub fn find(&self, source: &str, image_sha256: &str) -> Result<Option<Record>, StoreError> {
        self.conn
            .query_row(
                &format!(
                    "{SELECT} WHERE source = ?1 AND image_sha256 = ?2 ORDER BY id DESC LIMIT 1"
                ),
                [source, image_sha256],
                row_to_record,
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    /// The newest successful record stored at or after `since` for the identical request:
    /// same source, image bytes, request arguments and model as `r`. An older store's
    /// records have no arguments and never match.
    ///
    /// # Errors
    /// [`StoreError`] on a read failure.
    pub fn find_resent(&self, r: &NewRecord, since: &str) -> Result<Option<Record>, StoreError> {
        self.conn
            .query_row(
                &format!(
                    "{SELECT} WHERE source = ?1 AND image_sha256 = ?2 AND request = ?3
                     AND model = ?4 AND status = 'ok' AND created_at >= ?5
                     ORDER BY id DESC LIMIT 1"
                ),
                params![r.source, r.image_sha256, r.request, r.model, since],
                row_to_record,
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    /// The newest `limit` records, newest first.
    ///
    /// # Errors
    /// [`StoreError`] on a read failure.
    pub fn history(&self, limit: usize) -> Result<Vec<Record>, StoreError> {
        self.newest(None, limit)
    }

    /// The newest `limit` records of one exam id, newest first: how a client finds the
    /// result of a request whose reply it lost when resending would not find it (a camera
    /// capture), without taking another patient's newer result.
    ///
    /// # Errors
    /// [`StoreError`] on a read failure.
    pub fn history_of(&self, exam_id: &str, limit: usize) -> Result<Vec<Record>, StoreError> {
        self.newest(Some(exam_id), limit)
    }

    /// The newest `limit` records, of one exam id when given.
    fn newest(&self, exam_id: Option<&str>, limit: usize) -> Result<Vec<Record>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(&format!(
                "{SELECT} WHERE ?1 IS NULL OR exam_id = ?1 ORDER BY id DESC LIMIT ?2"
            ))
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params![exam_id, limit as i64], row_to_record)
            .map_err(|e| self.err(e))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.err(e))?;
        Ok(rows)
    }

    /// Id of the newest record, if any.
    ///
    /// # Errors
    /// [`StoreError`] on a read failure.
    pub fn last_id(&self) -> Result<Option<i64>, StoreError> {
        self.conn
            .query_row("SELECT MAX(id) FROM results", [], |r| r.get(0))
            .map_err(|e| self.err(e))
    }

    /// Number of records.
    ///
    /// # Errors
    /// [`StoreError`] on a read failure.
    pub fn count(&self) -> Result<u64, StoreError> {
        self.conn
            .query_row("SELECT COUNT(*) FROM results", [], |r| r.get::<_, i64>(0))
            .map(|n| n as u64)
            .map_err(|e| self.err(e))
    }

    /// Writes a consistent copy of the whole store to `dest` (which must not exist), while
    /// the service may be writing: the way to back a store up, since copying the file can
    /// catch it between two writes.
    ///
    /// # Errors
    /// [`StoreError::Backup`] when `dest` exists, [`StoreError::Sqlite`] when the copy fails.
    pub fn backup_to(&self, dest: &Path) -> Result<(), StoreError> {
        if dest.exists() {
            return Err(StoreError::Backup {
                path: dest.to_path_buf(),
                reason: "already exists; choose a new file name".into(),
            });
        }
        let dest_text = dest.to_str().ok_or_else(|| StoreError::Backup {
            path: dest.to_path_buf(),
            reason: "the path is not UTF-8 text".into(),
        })?;
        self.conn.execute("VACUUM INTO ?1", [dest_text]).map(|_| ()).map_err(|e| {
            // Nothing half-written may pass for a backup (nor block the next try).
            let _ = std::fs::remove_file(dest);
            let reason = match e.sqlite_error_code() {
                Some(rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase) => {
                    format!(
                        "{e}: the store {} is damaged, so no whole copy can be read from it; \
                         stop the service and copy the file (with any -wal file) aside as it is",
                        self.path.display()
                    )
                }
                _ => format!("{e}; check that the destination's disk has room"),
            };
            StoreError::Backup { path: dest.to_path_buf(), reason }
        })
    }

    /// The latest `created_at` stored (times sort as text), for the clock check: the
    /// newest result by id may itself carry a wrong time.
    ///
    /// # Errors
    /// [`StoreError`] on a read failure.
    pub fn latest_time(&self) -> Result<Option<String>, StoreError> {
        self.conn
            .query_row("SELECT MAX(created_at) FROM results", [], |r| r.get(0))
            .map_err(|e| self.err(e))
    }

    /// [`clock_check`] of the system time against this store's latest result.
    ///
    /// # Errors
    /// [`StoreError`] on a read failure.
    pub fn clock(&self) -> Result<String, StoreError> {
        Ok(clock_check(&now_rfc3339(), self.latest_time()?.as_deref()))
    }

    /// SQLite's full integrity check: "ok" when the file is sound.
    ///
    /// # Errors
    /// [`StoreError`] if the check cannot run.
    pub fn integrity_check(&self) -> Result<String, StoreError> {
        self.conn.query_row("PRAGMA integrity_check", [], |r| r.get(0)).map_err(|e| self.err(e))
    }
}

const SELECT: &str = "SELECT id, created_at, source, image_sha256, exam_id, sex, age_months,
    bone_age_months, interval95_months, model, status, error,
    height_cm, sds, category, adult_height_cm, warnings, view_spread_months, age_source,
    exam_date, patient_id, ood_score FROM results";

fn row_to_record(row: &rusqlite::Row<'_>) -> rusqlite::Result<Record> {
    Ok(Record {
        id: row.get(0)?,
        created_at: row.get(1)?,
        source: row.get(2)?,
        image_sha256: row.get(3)?,
        exam_id: row.get(4)?,
        sex: row.get(5)?,
        age_months: row.get(6)?,
        bone_age_months: row.get(7)?,
        interval95_months: row.get(8)?,
        model: row.get(9)?,
        status: row.get(10)?,
        error: row.get(11)?,
        height_cm: row.get(12)?,
        sds: row.get(13)?,
        category: row.get(14)?,
        adult_height_cm: row.get(15)?,
        warnings: row
            .get::<_, Option<String>>(16)?
            .and_then(|s| serde_json::from_str(&s).ok())
            .unwrap_or_default(),
        view_spread_months: row.get(17)?,
        age_source: row.get(18)?,
        exam_date: row.get(19)?,
        patient_id: row.get(20)?,
        ood_score: row.get(21)?,
    })
}

/// Warnings as a JSON array, NULL when there are none.
fn warnings_json(w: &[String]) -> Option<String> {
    (!w.is_empty()).then(|| serde_json::to_string(w).unwrap_or_default())
}

/// Adds the columns a store written by an older version lacks. The columns are read again
/// under a write lock before any is added: two programs opening an old store at once (the
/// upgraded service and a backup) would otherwise both add one, and the second fail. A
/// current store takes no lock (it may be read-only).
fn migrate(conn: &Connection) -> rusqlite::Result<()> {
    let missing = |conn: &Connection| -> rusqlite::Result<Vec<(&str, &str)>> {
        let mut stmt = conn.prepare("SELECT name FROM pragma_table_info('results')")?;
        let have = stmt.query_map([], |r| r.get::<_, String>(0))?.collect::<Result<Vec<_>, _>>()?;
        Ok(ADDED_COLUMNS
            .iter()
            .copied()
            .filter(|(name, _)| !have.iter().any(|h| h == name))
            .collect())
    };
    if !missing(conn)?.is_empty() {
        let tx =
            rusqlite::Transaction::new_unchecked(conn, rusqlite::TransactionBehavior::Immediate)?;
        for (name, kind) in missing(&tx)? {
            tx.execute_batch(&format!("ALTER TABLE results ADD COLUMN {name} {kind}"))?;
        }
        tx.commit()?;
    }
    // The exactly-once and resend lookups search by image hash on every analysis; STATUS
    // asks for the newest time on every poll. Building an index reads every row, so on an
    // older store with damaged pages it can fail: that store must still open (and say it
    // is damaged), only those lookups are slower.
    for (index, column, slower) in [
        ("results_image", "image_sha256", "the repeat and resend checks"),
        ("results_created", "created_at", "STATUS"),
    ] {
        let sql = format!("CREATE INDEX IF NOT EXISTS {index} ON results ({column})");
        if let Err(e) = conn.execute_batch(&sql) {
            log::warn!("cannot index the results by {column} ({e}); {slower} will be slower");
        }
    }
    Ok(())
}

/// Current UTC time as `YYYY-MM-DDTHH:MM:SS.mmmZ`, without a date crate.
pub fn now_rfc3339() -> String {
    rfc3339(std::time::SystemTime::now())
}

/// No result of this software can be older than this: a clock before it was reset (a board
/// without a backed-up clock after a power cut).
pub const EARLIEST_PLAUSIBLE_TIME: &str = "2026-01-01T00:00:00.000Z";

/// For STATUS: `ok`, or `suspect: ...` when `now` is before [`EARLIEST_PLAUSIBLE_TIME`] or
/// before the newest stored result (the clock went back). Results are stored with the
/// time they get, so a wrong clock dates them wrongly; this is how a unit says so.
pub fn clock_check(now: &str, newest_stored: Option<&str>) -> String {
    if now < EARLIEST_PLAUSIBLE_TIME {
        return format!(
            "suspect: the system time {now} is before {EARLIEST_PLAUSIBLE_TIME}; set the clock \
             (results are stored with this time)"
        );
    }
    match newest_stored {
        Some(newest) if now < newest => format!(
            "suspect: the system time {now} is before the newest stored result ({newest}): \
             either the clock went back (set it: results are stored with this time) or that \
             result was stored while the clock was ahead (then its date is wrong, and this \
             stays until the time passes it)"
        ),
        _ => "ok".into(),
    }
}

/// `time` as UTC `YYYY-MM-DDTHH:MM:SS.mmmZ`, the form of `created_at` (which sorts as text).
pub fn rfc3339(time: std::time::SystemTime) -> String {
    let now = time.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let secs = now.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        now.subsec_millis()
    )
}

/// Inverse of days-from-civil (H. Hinnant): days since 1970-01-01 to (year, month, day).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_disk_is_worth_waiting_for_a_damaged_file_is_not() {
        let sqlite = |code| StoreError::Sqlite {
            path: "r.db".into(),
            source: rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(code), None),
        };
        assert!(sqlite(rusqlite::ffi::SQLITE_FULL).is_transient());
        assert!(sqlite(rusqlite::ffi::SQLITE_IOERR).is_transient());
        assert!(!sqlite(rusqlite::ffi::SQLITE_NOTADB).is_transient());
        assert!(!sqlite(rusqlite::ffi::SQLITE_CANTOPEN).is_transient());
        let dir = |kind| StoreError::Dir { path: "d".into(), source: std::io::Error::from(kind) };
        assert!(dir(std::io::ErrorKind::StorageFull).is_transient());
        assert!(!dir(std::io::ErrorKind::PermissionDenied).is_transient());
    }

    /// A store this process may only read (a file restored as root, for a service running
    /// as its own user) is refused for writing, naming the fix, while reading is still
    /// allowed. Root may write any file, so the read-only connection is made directly.
    #[test]
    fn a_read_only_store_is_refused_for_writing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.db");
        Store::open_writable(&path).unwrap();
        let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY;
        let conn = Connection::open_with_flags(&path, flags).unwrap();
        let store = Store {
            conn,
            path: path.clone(),
            damage: None,
            write_error: std::cell::RefCell::new(None),
        };
        assert_eq!(store.count().unwrap(), 0);
        let e = store.writable().unwrap_err();
        assert!(e.is_transient(), "{e}");
        assert!(e.to_string().contains("chown boneage:"), "{e}");
    }

    #[test]
    fn a_resend_matches_only_the_identical_successful_request() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("r.db")).unwrap();
        let first = NewRecord {
            source: "tcp:/in/a.png".into(),
            image_sha256: "ab".into(),
            request: Some("sex=male age=- height=- id=-".into()),
            model: "m v1".into(),
            bone_age_months: Some(100.0),
            ..Default::default()
        };
        let stored = s.insert(&first).unwrap();
        let found = |r: &NewRecord, since: &str| s.find_resent(r, since).unwrap().map(|r| r.id);
        assert_eq!(found(&first, "2026-01-01T00:00:00.000Z"), Some(stored.id));
        // Too old, other arguments, bytes, source or model: not a resend.
        assert_eq!(found(&first, "9999-01-01T00:00:00.000Z"), None);
        let other_args =
            NewRecord { request: Some("sex=female age=- height=- id=-".into()), ..first.clone() };
        assert_eq!(found(&other_args, ""), None);
        assert_eq!(found(&NewRecord { image_sha256: "cd".into(), ..first.clone() }, ""), None);
        assert_eq!(
            found(&NewRecord { source: "serial:/in/a.png".into(), ..first.clone() }, ""),
            None
        );
        assert_eq!(found(&NewRecord { model: "m v2".into(), ..first.clone() }, ""), None);
        // A failure is never the answer: the cause may have been fixed.
        let failed =
            NewRecord { request: Some("x".into()), error: Some("bad".into()), ..first.clone() };
        s.insert(&failed).unwrap();
        assert_eq!(found(&failed, ""), None);
        // Records of an older version have no arguments and never match.
        let old = NewRecord { request: None, ..first.clone() };
        s.insert(&old).unwrap();
        assert_eq!(found(&old, ""), None);
    }

    #[test]
    fn insert_get_history_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/results.db");
        {
            let s = Store::open(&path).unwrap();
            let a = s
                .insert(&NewRecord {
                    source: "a.png".into(),
                    exam_id: Some("A-1".into()),
                    bone_age_months: Some(120.5),
                    sex: Some("male".into()),
                    model: "m v1".into(),
                    ..Default::default()
                })
                .unwrap();
            assert_eq!(a.status, "ok");
            let b = s
                .insert(&NewRecord {
                    source: "b.png".into(),
                    error: Some("bad".into()),
                    ..Default::default()
                })
                .unwrap();
            assert_eq!(b.id, a.id + 1);
            assert_eq!(b.status, "error");
        }
        let s = Store::open(&path).unwrap();
        assert_eq!(s.count().unwrap(), 2);
        assert_eq!(s.get(1).unwrap().unwrap().bone_age_months, Some(120.5));
        assert!(s.get(99).unwrap().is_none());
        let h = s.history(10).unwrap();
        assert_eq!(h[0].source, "b.png");
        // One exam's results, not the newest of all.
        let of_a = s.history_of("A-1", 1).unwrap();
        assert_eq!((of_a.len(), of_a[0].source.as_str()), (1, "a.png"));
        assert!(s.history_of("A-2", 10).unwrap().is_empty());
        assert_eq!(s.last_id().unwrap(), Some(2));
        assert_eq!(s.latest_time().unwrap().as_deref(), Some(h[0].created_at.as_str()));
        assert_eq!(s.integrity_check().unwrap(), "ok");
    }

    #[test]
    fn the_main_file_alone_holds_every_result_and_backups_are_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("results.db");
        let s = Store::open(&path).unwrap();
        for i in 0..5 {
            s.insert(&NewRecord { source: format!("{i}.png"), ..Default::default() }).unwrap();
        }
        // While the store is open (a running service): a plain copy of the main file,
        // without its -wal, has every result...
        let copy = dir.path().join("copy.db");
        std::fs::copy(&path, &copy).unwrap();
        assert_eq!(Store::open(&copy).unwrap().count().unwrap(), 5);
        // ...and the backup is a whole store; it never overwrites a file.
        let backup = dir.path().join("backup.db");
        s.backup_to(&backup).unwrap();
        let b = Store::open(&backup).unwrap();
        assert_eq!(b.count().unwrap(), 5);
        assert_eq!(b.integrity_check().unwrap(), "ok");
        assert!(matches!(s.backup_to(&backup), Err(StoreError::Backup { .. })));
        // A copy that fails leaves nothing behind.
        let into_missing = dir.path().join("no-such-folder/b.db");
        assert!(s.backup_to(&into_missing).is_err());
        assert!(!into_missing.exists());
    }

    #[test]
    fn health_says_when_writes_fail_and_when_the_file_is_damaged() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("results.db");
        let s = Store::open(&path).unwrap();
        let rec = |i: usize| NewRecord {
            source: format!("/var/lib/boneage/inbox/{i:05}.png"),
            warnings: vec!["w".repeat(200)],
            ..Default::default()
        };
        s.insert(&rec(0)).unwrap();
        assert_eq!(s.health(), "ok");
        // Writes refused (as on a full disk), then possible again.
        s.conn.pragma_update(None, "query_only", 1).unwrap();
        assert!(s.insert(&rec(1)).is_err());
        assert!(s.health().starts_with("error: "), "{}", s.health());
        s.conn.pragma_update(None, "query_only", 0).unwrap();
        for i in 1..400 {
            s.insert(&rec(i)).unwrap();
        }
        assert_eq!(s.health(), "ok");
        // As a store from before the indexes: opening it builds them, reading every row.
        s.conn
            .execute_batch("DROP INDEX results_image; DROP INDEX results_created; VACUUM")
            .unwrap();
        drop(s);
        // A damaged page in the middle of the table: the store still opens, and says so.
        let mut bytes = std::fs::read(&path).unwrap();
        let page = bytes.len() / 4096 / 2 * 4096;
        bytes[page + 8..page + 2008].fill(0xA5);
        std::fs::write(&path, bytes).unwrap();
        let s = Store::open(&path).unwrap();
        assert!(s.health().starts_with("damaged: "), "{}", s.health());
    }

    #[test]
    fn a_damaged_file_is_called_damaged() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("results.db");
        std::fs::write(&path, vec![7u8; 8192]).unwrap();
        let e = Store::open(&path).err().unwrap().to_string();
        assert!(e.contains("the file is damaged") && e.contains("backup"), "{e}");
        let sound = dir.path().join("sound.db");
        assert_eq!(Store::open(&sound).unwrap().health(), "ok");
    }

    #[test]
    fn reading_fields_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("r.db")).unwrap();
        let r = s
            .insert(&NewRecord {
                source: "a.png".into(),
                bone_age_months: Some(150.0),
                age_months: Some(120.0),
                height_cm: Some(140.5),
                sds: Some(2.4),
                category: Some("advanced".into()),
                adult_height_cm: Some(160.2),
                warnings: vec!["w1".into(), "w2".into()],
                view_spread_months: Some(5.1),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(s.get(r.id).unwrap().unwrap(), r);
        let plain = s.insert(&NewRecord { source: "b.png".into(), ..Default::default() }).unwrap();
        assert_eq!(s.get(plain.id).unwrap().unwrap().warnings, Vec::<String>::new());
    }

    #[test]
    fn store_from_the_first_release_is_migrated_and_keeps_its_results() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        {
            let c = Connection::open(&path).unwrap();
            c.execute_batch(SCHEMA).unwrap();
            c.execute(
                "INSERT INTO results (created_at, source, image_sha256, model, status,
                 bone_age_months) VALUES ('2026-01-01T00:00:00.000Z', 'x.png', '', 'm', 'ok', 99.5)",
                [],
            )
            .unwrap();
        }
        let s = Store::open(&path).unwrap();
        let old = s.get(1).unwrap().unwrap();
        assert_eq!((old.bone_age_months, old.sds), (Some(99.5), None));
        let new = s
            .insert(&NewRecord { source: "y.png".into(), sds: Some(-1.0), ..Default::default() })
            .unwrap();
        assert_eq!(s.get(new.id).unwrap().unwrap().sds, Some(-1.0));
        drop(s);
        // Opening again finds the columns already there.
        assert_eq!(Store::open(&path).unwrap().count().unwrap(), 2);
    }

    #[test]
    fn a_clock_reset_or_set_back_is_suspect() {
        assert_eq!(clock_check("2026-11-27T12:00:00.000Z", None), "ok");
        assert_eq!(clock_check("2026-11-27T12:00:00.000Z", Some("2026-11-27T11:59:00.000Z")), "ok");
        assert!(clock_check("1970-01-01T00:16:43.189Z", None).starts_with("suspect: "));
        let back = clock_check("2026-11-27T12:00:00.000Z", Some("2027-01-01T00:00:00.000Z"));
        assert!(back.contains("before the newest stored result"), "{back}");
    }

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert!(now_rfc3339().ends_with('Z'));
    }
}
