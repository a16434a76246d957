//! The running appliance: one loaded model and one result store shared by every input
//! (hot folder, TCP, serial). Analyses are serialized on the model, and every outcome,
//! success or failure, is stored before anyone is told about it.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::atomic_file;
use crate::clinical::Thresholds;
use crate::config::Config;
use crate::display::{Display, ResultView, Screen};
use crate::model::Model;
use crate::quality;
use crate::report::{Age, AgeSource, Given, Reading, ReadingError, Sex};
use crate::source;
use crate::source::camera::{self, Camera, CameraError, Health};
use crate::store::{self as store_mod, NewRecord, Record, Store, StoreError};

/// What `*IDN?` reports.
#[derive(Debug, Clone, Serialize)]
pub struct Identity {
    pub vendor: String,
    pub model: String,
    pub serial: String,
    pub firmware: String,
    pub model_version: String,
    pub backend: String,
}

/// An analysis request, from any input.
#[derive(Debug, Clone)]
pub struct Request {
    pub path: PathBuf,
    /// How the image arrived, stored with the result ("tcp", "serial", "hot-folder").
    pub via: String,
    pub sex: Option<Sex>,
    pub age: Option<Age>,
    /// Standing height (cm), for the Bayley-Pinneau adult height prediction.
    pub height_cm: Option<f64>,
    pub exam_id: Option<String>,
    /// When a stored outcome answers this request instead of a new analysis.
    pub reuse: Reuse,
}

/// When a stored outcome answers a request instead of a new analysis. The model is
/// deterministic, so the identical request for the same bytes would only store a duplicate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reuse {
    /// Always analyse.
    Never,
    /// The hot folder's exactly-once guarantee across a crash between storing a result and
    /// moving the file: the same file (source and SHA-256) already stored by the same model
    /// with the same settings, see [`Request::answered_by`] (a success, also for the
    /// identical request arguments). `arrived_at` is when the file arrived (`created_at`
    /// form): a stored failure newer than that is the outcome of this very drop.
    SameDrop { arrived_at: Option<String> },
    /// A protocol client sending the request again after a lost reply (connection dropped,
    /// unit restarted): the success stored for the identical request (same source, bytes,
    /// arguments and model) within [`RESEND_WINDOW`] is the answer, not a second record.
    Resend,
}

/// How long after a result an identical protocol request is taken as a resend of the
/// first ([`Reuse::Resend`]): long enough for a client's timeout, reconnect, or a unit's
/// reboot after a power cut; short enough that a deliberate repeat later is a new record.
pub const RESEND_WINDOW: std::time::Duration = std::time::Duration::from_secs(600);

/// A successful analysis, as [`Service::analyze`] returns it.
#[derive(Debug, Clone)]
pub struct Analysed {
    pub record: Record,
    /// The record was already stored for an earlier, identical request (see [`Reuse`]);
    /// nothing new was stored.
    pub repeat: bool,
}

impl Request {
    /// Whether `done`, stored for the same file, already answers this request: it agrees
    /// with every fact this request gives, and it succeeded or it failed after the file
    /// arrived (a crash between storing the failure and moving the file). An image
    /// dropped again after a failure (the cause may have been fixed), or with a corrected
    /// sidecar, is analysed again; only the crash-recovery case, the identical request
    /// for the same drop, reuses the outcome.
    pub fn answered_by(&self, done: &Record) -> bool {
        let sex = self.sex.is_none_or(|s| done.sex.as_deref() == Some(s.to_string().as_str()));
        let age =
            self.age.is_none_or(|a| done.age_months.is_some_and(|m| (m - a.months()).abs() < 1e-6));
        let exam = self.exam_id.is_none() || done.exam_id == self.exam_id;
        let same_facts = sex && age && exam && done.height_cm == self.height_cm;
        let arrived_at = match &self.reuse {
            Reuse::SameDrop { arrived_at } => arrived_at.as_deref(),
            _ => None,
        };
        let same_drop = arrived_at.is_some_and(|m| done.created_at.as_str() >= m);
        same_facts && (done.error.is_none() || same_drop)
    }

    /// The request's own arguments in one canonical form, stored with its record so that
    /// [`Reuse::Resend`] recognises the identical request (a value the file supplied,
    /// such as a DICOM sex, is not an argument: leaving `sex=` out is a different request).
    pub fn arguments(&self) -> String {
        let opt = |v: Option<String>| v.unwrap_or_else(|| "-".into());
        format!(
            "sex={} age={} height={} id={}",
            opt(self.sex.map(|s| s.to_string())),
            opt(self.age.map(|a| format!("{:.3}", a.months()))),
            opt(self.height_cm.map(|h| format!("{h:.1}"))),
            opt(self.exam_id.clone()),
        )
    }

    /// The stored outcome that already answers this request (see
    /// [`answered_by`](Self::answered_by)), as [`Service::analyze`] would return it.
    fn reuse(&self, done: Record) -> Result<Analysed, ServiceError> {
        log::info!("{} already analysed as result {}", self.path.display(), done.id);
        match done.error.clone() {
            None => Ok(Analysed { record: done, repeat: true }),
            Some(message) => Err(ServiceError::Analysis { message, record: Box::new(done) }),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The analysis failed and the failure was stored as `record`.
    #[error("{message}")]
    Analysis { message: String, record: Box<Record> },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A saved camera capture.
#[derive(Debug, Clone, Serialize)]
pub struct Capture {
    /// The PNG file, inside `[camera] captures_dir` (canonical, as ANALYZE path= resolves).
    pub path: PathBuf,
    pub width: u32,
    pub height: u32,
    /// Frames averaged into it.
    pub frames: u32,
    /// UTC, `YYYY-MM-DDTHH:MM:SS.mmmZ`, as results are stamped.
    pub captured_at: String,
}

#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("no capture device is configured on this unit ([camera] enabled = false)")]
    NotConfigured,
    #[error(transparent)]
    Camera(#[from] CameraError),
    #[error("cannot save the capture as {}: {reason}; check [camera] captures_dir and free disk space", path.display())]
    Save { path: PathBuf, reason: String },
}

pub struct Service {
    model: Mutex<Model>,
    store: Mutex<Store>,
    pub identity: Identity,
    started: Instant,
    queued: AtomicUsize,
    /// Held from the exactly-once or resend check to the stored outcome, so that a request
    /// sent again while the first is still running waits and finds it stored.
    analysing: Mutex<()>,
    /// The settings besides the request that decide a reading (backend and precision,
    /// views, quality gate, category thresholds): part of what makes a resend identical.
    settings: String,
    /// The attached screen, if any; drawing failures are logged, never fatal.
    display: Mutex<Option<Display>>,
    /// The screen the display last failed to draw, until one is drawn: a framebuffer whose
    /// driver was rebound keeps the previous patient's result on the panel, so
    /// [`Service::redraw_after_failure`] opens it again and draws this.
    failed_screen: Mutex<Option<Screen>>,
    /// The display's health for STATUS: `None` until a display is attached, then the last
    /// drawing error (`Some(Some(..))`) or none (`Some(None)`).
    display_health: Mutex<Option<Option<String>>>,
    /// SDS thresholds for the delayed/normal/advanced category (`[reading]`).
    thresholds: Thresholds,
    /// Whether the quality gate runs before inference (`[quality] enabled`).
    quality_gate: bool,
    /// The camera, when `[camera] enabled`; opened lazily and retried.
    camera: Option<Camera>,
    /// The idle screen, shown again after a capture that is not followed by an analysis.
    ready: Mutex<Option<Screen>>,
}

/// A poisoned mutex only means another thread panicked mid-analysis; the model and the
/// store stay usable (the store's durability is SQLite's), so keep serving.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Service {
    /// A service for `model` and `store`, with identity and reading policy from `config`.
    pub fn new(model: Model, store: Store, config: &Config) -> Service {
        let identity = Identity {
            vendor: "boneage".into(),
            model: config.device.name.clone(),
            serial: config.device.serial.clone(),
            firmware: env!("CARGO_PKG_VERSION").into(),
            model_version: model.contract.model_id(),
            backend: model.backend_name().into(),
        };
        let settings = format!(
            "backend={} views={} gate={} thresholds={:?}",
            model.backend_name(),
            model.views(),
            config.quality.enabled,
            config.reading.thresholds()
        );
        Service {
            model: Mutex::new(model),
            store: Mutex::new(store),
            identity,
            started: Instant::now(),
            queued: AtomicUsize::new(0),
            analysing: Mutex::new(()),
            settings,
            display: Mutex::new(None),
            failed_screen: Mutex::new(None),
            display_health: Mutex::new(None),
            thresholds: config.reading.thresholds(),
            quality_gate: config.quality.enabled,
            camera: config.camera.enabled.then(|| Camera::new(&config.camera)),
            ready: Mutex::new(None),
        }
    }

    /// The configured camera, if any.
    pub fn camera(&self) -> Option<&Camera> {
        self.camera.as_ref()
    }

    /// The camera's last known health; `None` when no camera is configured.
    pub fn camera_health(&self) -> Option<Health> {
        self.camera.as_ref().map(Camera::health)
    }

    /// Sets and shows the idle screen.
    pub fn set_ready(&self, screen: Screen) {
        self.show(&screen);
        *lock(&self.ready) = Some(screen);
    }

    /// Grabs a frame from the camera and saves it as a PNG in `[camera] captures_dir`,
    /// showing the capturing screen meanwhile and the idle screen after.
    ///
    /// # Errors
    /// [`CaptureError`]: no camera configured, the camera failed (with what to do), or the
    /// file could not be written. Failures are shown on the display.
    pub fn capture(&self) -> Result<Capture, CaptureError> {
        let c = self.grab_and_save()?;
        self.show_ready();
        Ok(c)
    }

    /// [`Service::capture`] followed by [`Service::analyze`] of the saved file: the capture is
    /// stored and can be re-analysed like any other input.
    ///
    /// # Errors
    /// [`CaptureError`] when nothing was captured (nothing is stored then).
    pub fn capture_and_analyze(
        &self,
        req: &Request,
    ) -> Result<(Capture, Result<Analysed, ServiceError>), CaptureError> {
        let capture = self.grab_and_save()?;
        let req = Request { path: capture.path.clone(), ..req.clone() };
        Ok((capture, self.analyze(&req)))
    }

    fn grab_and_save(&self) -> Result<Capture, CaptureError> {
        let camera = self.camera.as_ref().ok_or(CaptureError::NotConfigured)?;
        self.show(&Screen::Capturing { source: camera.device().display().to_string() });
        let result = camera.grab().map_err(CaptureError::from).and_then(|image| {
            save_capture(&image, &camera.config().captures_dir, camera.config().frames)
        });
        if let Err(e) = &result {
            self.show(&Screen::Error {
                what: "the camera capture failed".into(),
                action: match e {
                    CaptureError::Camera(e) => e.kind.to_string(),
                    other => other.to_string(),
                },
            });
        }
        result
    }

    /// Replaces the camera's line on the idle screen (`camera <device> <state>`), so that
    /// the screen shown after a capture says what the camera is now, not what it was at
    /// start. Not drawn here: whatever is on the screen (a result) stays.
    pub fn set_ready_camera_line(&self, line: String) {
        if let Some(Screen::Ready { status_lines, .. }) = lock(&self.ready).as_mut() {
            match status_lines.iter_mut().find(|l| l.starts_with("camera ")) {
                Some(old) => *old = line,
                None => status_lines.push(line),
            }
        }
    }

    /// Shows the idle screen, if one was set.
    pub fn show_ready(&self) {
        let ready = lock(&self.ready).clone();
        if let Some(ready) = ready {
            self.show(&ready);
        }
    }

    /// Records why a configured display could not be opened, for STATUS (otherwise it
    /// would read `none`, as on a unit without one); the screens it misses meanwhile are
    /// drawn by [`Service::redraw_after_failure`] once it opens.
    pub fn set_display_error(&self, error: &str) {
        if lock(&self.display).is_none() {
            *lock(&self.display_health) = Some(Some(format!("cannot open: {error}")));
        }
    }

    /// Attaches a display; every analysis is then shown on it.
    pub fn set_display(&self, display: Display) {
        // `backend = "none"` draws nothing, so there is no health to report.
        if !matches!(display, Display::None) {
            *lock(&self.display_health) = Some(None);
        }
        *lock(&self.display) = Some(display);
    }

    /// Draws `screen` if a display is attached; one configured but not open yet keeps it
    /// for [`Service::redraw_after_failure`].
    pub fn show(&self, screen: &Screen) {
        match lock(&self.display).as_mut() {
            Some(d) => {
                let outcome = d.show(screen).err().map(|e| e.to_string());
                if let Some(e) = &outcome {
                    log::warn!("display: {e}");
                }
                self.record_drawing(screen, outcome);
            }
            None if matches!(*lock(&self.display_health), Some(Some(_))) => {
                *lock(&self.failed_screen) = Some(screen.clone());
            }
            None => {}
        }
    }

    /// After a display failed to open or to draw: opens it (again) with `open` and draws the
    /// screen it missed, unless a later one was drawn meanwhile. `None` when nothing is
    /// missing, else whether it is drawn now. Called every few seconds by the serve loop.
    pub fn redraw_after_failure(
        &self,
        open: impl FnOnce() -> Result<Display, crate::display::DisplayError>,
    ) -> Option<bool> {
        // Held throughout, so that no newer screen is drawn and then covered by this one.
        let mut display = lock(&self.display);
        let screen = lock(&self.failed_screen).clone()?;
        let outcome = match open() {
            Ok(mut reopened) => {
                let outcome = reopened.show(&screen).err().map(|e| e.to_string());
                *display = Some(reopened);
                outcome
            }
            Err(e) => Some(format!("cannot open: {e}")),
        };
        let drawn = outcome.is_none();
        self.record_drawing(&screen, outcome);
        Some(drawn)
    }

    /// Health and the screen to draw again, after `screen` was drawn (`None`) or not.
    fn record_drawing(&self, screen: &Screen, outcome: Option<String>) {
        *lock(&self.failed_screen) = outcome.is_some().then(|| screen.clone());
        // Tracked only for a display that draws (see `set_display`).
        if let Some(health) = lock(&self.display_health).as_mut() {
            *health = outcome;
        }
    }

    /// `"none"` (no display attached), `"ok"`, or the last drawing error.
    pub fn display_health(&self) -> String {
        match &*lock(&self.display_health) {
            None => "none".into(),
            Some(None) => "ok".into(),
            Some(Some(e)) => format!("error: {e}"),
        }
    }

    /// Counts uptime from `at` (the process start, before the model load and any wait for
    /// the store) rather than from when the service was built.
    pub fn started_at(mut self, at: Instant) -> Service {
        self.started = at;
        self
    }

    pub fn uptime_s(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    /// Requests waiting for or in analysis.
    pub fn queue_len(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    pub fn store(&self) -> MutexGuard<'_, Store> {
        lock(&self.store)
    }

    /// Reads, analyses and stores one radiograph.
    ///
    /// # Errors
    /// [`ServiceError::Analysis`] (already stored as an error record) when the image or the
    /// request is unusable; [`ServiceError::Store`] when nothing could be stored, in which
    /// case no result may be reported.
    pub fn analyze(&self, req: &Request) -> Result<Analysed, ServiceError> {
        self.analyze_then(req, || {})
    }

    /// [`Service::analyze`], calling `started` once this request's turn has come (the
    /// analysis lock is held): the hot folder marks a file as in analysis only then, so a
    /// crash during someone else's analysis is not counted against a file still waiting.
    ///
    /// # Errors
    /// As [`Service::analyze`].
    pub fn analyze_then(
        &self,
        req: &Request,
        started: impl FnOnce(),
    ) -> Result<Analysed, ServiceError> {
        // A guard, not a pair of calls: a panic on the way must not leave STATUS
        // reporting an analysis for ever.
        struct Queued<'a>(&'a AtomicUsize);
        impl Drop for Queued<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::Relaxed);
            }
        }
        self.queued.fetch_add(1, Ordering::Relaxed);
        let _queued = Queued(&self.queued);
        let _one_at_a_time = lock(&self.analysing);
        started();
        self.analyze_inner(req)
    }

    /// Stores a request refused before analysis (a hot-folder file whose sidecar is
    /// unreadable), so the failure is in the history like any other.
    ///
    /// # Errors
    /// [`ServiceError::Analysis`] carrying the stored failure, or [`ServiceError::Store`].
    pub fn reject(&self, req: &Request, message: String) -> Result<Record, ServiceError> {
        let _one_at_a_time = lock(&self.analysing);
        let (mut rec, _) = self.new_record(req);
        // Only a stored refusal answers: the request lacks the facts its sidecar would give.
        if let Some(done) = self.stored_answer(req, &rec)?.filter(|d| d.error.is_some()) {
            return req.reuse(done).map(|a| a.record);
        }
        rec.error = Some(message.clone());
        let record = self.store().insert(&rec)?;
        self.show(&Screen::Error {
            what: on_screen(&message, &req.path),
            action: "fix the request and send the image again".into(),
        });
        Err(ServiceError::Analysis { message, record: Box::new(record) })
    }

    /// What is already stored and answers this request, as its [`Reuse`] allows.
    fn stored_answer(&self, req: &Request, rec: &NewRecord) -> Result<Option<Record>, StoreError> {
        if rec.image_sha256.is_empty() {
            return Ok(None);
        }
        match req.reuse {
            Reuse::Never => Ok(None),
            Reuse::SameDrop { .. } => {
                let store = self.store();
                let Some(done) = store.find(&rec.source, &rec.image_sha256)? else {
                    return Ok(None);
                };
                // Only what this model with these settings would answer: after a model
                // update, or with the quality gate or thresholds changed, the file is read
                // afresh (a result the gate now refuses must not be handed out again).
                if !req.answered_by(&done) || done.model != rec.model {
                    return Ok(None);
                }
                // A record does not carry its request; the store compares it: a success
                // answers only if it was stored for this very request (the same sidecar
                // facts, backend, views, gate and thresholds).
                if done.error.is_none()
                    && store.find_resent(rec, &done.created_at)?.is_none_or(|r| r.id != done.id)
                {
                    return Ok(None);
                }
                Ok(Some(done))
            }
            Reuse::Resend => {
                let since = store_mod::rfc3339(
                    std::time::SystemTime::now()
                        .checked_sub(RESEND_WINDOW)
                        .unwrap_or(std::time::UNIX_EPOCH),
                );
                self.store().find_resent(rec, &since)
            }
        }
    }

    /// The record a request starts as, and the file's bytes: read and hashed once, so the
    /// same bytes serve the exactly-once check and the analysis.
    fn new_record(&self, req: &Request) -> (NewRecord, Result<Vec<u8>, source::SourceError>) {
        let mut rec = NewRecord {
            source: format!("{}:{}", req.via, req.path.display()),
            exam_id: req.exam_id.clone(),
            sex: req.sex.map(|s| s.to_string()),
            age_months: req.age.map(Age::months),
            age_source: req.age.map(|_| AgeSource::Given.as_str().to_string()),
            height_cm: req.height_cm,
            model: self.identity.model_version.clone(),
            request: Some(format!("{} {}", req.arguments(), self.settings)),
            ..NewRecord::default()
        };
        let bytes = source::read_limited(&req.path);
        if let Ok(bytes) = &bytes {
            rec.image_sha256 = hex(&Sha256::digest(bytes));
        }
        (rec, bytes)
    }

    fn analyze_inner(&self, req: &Request) -> Result<Analysed, ServiceError> {
        let (mut rec, bytes) = self.new_record(req);
        if let Some(done) = self.stored_answer(req, &rec)? {
            return req.reuse(done);
        }
        self.show(&Screen::Analysing { source: req.path.display().to_string() });
        let outcome = bytes.map_err(|e| Failure::from(e.to_string())).and_then(|bytes| {
            // A decoder or backend bug must cost one image, not the service (and, through a
            // restart loop, every file after it in the hot folder).
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                self.run_model(req, &bytes, &mut rec)
            }))
            .unwrap_or_else(|panic| {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                Err(Failure::from(format!(
                    "{}: internal error while analysing this file ({what}); the service goes \
                     on - please report the file to the maintainers",
                    req.path.display()
                )))
            })
        });
        if let Err(failure) = &outcome {
            rec.error = Some(failure.message.clone());
        }
        // Stored first; only then shown or reported.
        let record = match self.store().insert(&rec) {
            Ok(r) => r,
            Err(e) => {
                self.show(&Screen::Error {
                    what: "the result could not be stored".into(),
                    action: "check the disk; the image was not reported".into(),
                });
                return Err(e.into());
            }
        };
        match outcome {
            Ok((reading, radiograph)) => {
                self.show(&Screen::Result(Box::new(ResultView {
                    bone_age_months: reading.bone_age_months,
                    sex: reading.sex,
                    interval95_months: reading.interval95_months,
                    chronological_age_months: reading.chronological_age_months,
                    difference_months: reading.difference_months,
                    // With its SDS: a bare "delayed" gives no idea how far from the line.
                    category: reading.category.map(|c| match reading.sds {
                        Some(sds) => format!("SDS {sds:+.2}: {}", c.as_str()),
                        None => c.as_str().to_string(),
                    }),
                    adult_height_cm: reading.adult_height.map(|h| h.predicted_cm),
                    patient_id: record.patient_id.clone(),
                    exam_id: record.exam_id.clone(),
                    thumbnail: Some(radiograph.pixels),
                    warnings: reading.warnings,
                })));
                Ok(Analysed { record, repeat: false })
            }
            Err(Failure { message, action, headline }) => {
                self.show(&Screen::Error {
                    what: headline.unwrap_or_else(|| on_screen(&message, &req.path)),
                    action,
                });
                Err(ServiceError::Analysis { message, record: Box::new(record) })
            }
        }
    }

    /// Fills `rec` with the reading, or returns why there is none.
    /// The radiograph comes back too: the result screen shows its thumbnail and patient id.
    fn run_model(
        &self,
        req: &Request,
        bytes: &[u8],
        rec: &mut NewRecord,
    ) -> Result<(Reading, source::Radiograph), Failure> {
        let radiograph = source::read_bytes(&req.path, bytes).map_err(|e| e.to_string())?;
        // Who this is, known as soon as the file is read: a failure below is stored with it.
        rec.patient_id.clone_from(&radiograph.patient.patient_id);
        if rec.exam_id.is_none() {
            // The request's id, else AccessionNumber (not PatientID, which has its own field).
            rec.exam_id.clone_from(&radiograph.patient.accession);
        }
        if self.quality_gate {
            quality::check_radiograph(&radiograph).map_err(|why| Failure {
                message: format!("{}: rejected by the quality gate: {why}", req.path.display()),
                // The check's own remedy: the whole message does not fit the screen.
                action: why.remedy(),
                headline: None,
            })?;
        }
        let given =
            Given { sex: req.sex, age: req.age, height_cm: req.height_cm, id: req.exam_id.clone() };
        let reading = Reading::of_radiograph(
            &mut lock(&self.model),
            req.path.display().to_string(),
            &radiograph,
            &given,
            self.thresholds,
            self.quality_gate,
        );
        if let Err(ReadingError::UnlikeTraining { score, .. }) = &reading {
            // Stored with the refusal: how far over the limit it was.
            rec.ood_score = Some(*score);
        }
        let name = req.path.file_name().unwrap_or_default().to_string_lossy();
        let reading = reading.map_err(|e| match e {
            ReadingError::SexUnknown { .. } => {
                let how = if req.via == "hot-folder" {
                    let sidecar = crate::source::hotfolder::sidecar_path(&req.path);
                    let sidecar = sidecar.file_name().unwrap_or_default().to_string_lossy();
                    format!("write {sidecar} with {{\"sex\": \"male\"}} or \"female\" first, then drop the image again")
                } else {
                    "give sex=male|female".to_string()
                };
                Failure::from(format!("{}: {e}; {how}", req.path.display()))
            }
            ReadingError::UnlikeTraining { score, limit } => Failure {
                message: format!("{}: rejected by the quality gate: {e}", req.path.display()),
                action: UNLIKE_ACTION.into(),
                headline: Some(format!(
                    "{name}: unlike the training radiographs (likeness {score:.2}, limit {limit:.2})"
                )),
            },
            ReadingError::Turned { turn } => Failure {
                message: format!("{}: rejected by the quality gate: {e}", req.path.display()),
                action: format!("turn the image {turn} (fingers up) and send it again"),
                headline: Some(format!("{name}: the radiograph looks turned")),
            },
            ReadingError::Model(_) => Failure::from(format!("{}: {e}", req.path.display())),
        })?;
        rec.sex = Some(reading.sex.to_string());
        rec.age_months = reading.chronological_age_months;
        rec.age_source = reading.age_source.map(|s| s.as_str().to_string());
        rec.exam_date.clone_from(&reading.exam_date);
        rec.bone_age_months = Some(reading.bone_age_months);
        rec.interval95_months = reading.interval95_months;
        rec.view_spread_months = reading.view_spread_months;
        rec.ood_score = reading.ood_score;
        rec.sds = reading.sds;
        rec.category = reading.category.map(|c| c.as_str().to_string());
        rec.adult_height_cm = reading.adult_height.map(|h| h.predicted_cm);
        rec.warnings = reading.warnings.clone();
        Ok((reading, radiograph))
    }
}

/// Why an image has no reading, and what the person at the unit should do about it.
struct Failure {
    message: String,
    action: String,
    /// A shorter headline for the screen than the message, when it has one.
    headline: Option<String>,
}

/// What to do after most failures.
const RETRY_ACTION: &str = "check the image and the patient details, then send it again";
/// After a likeness refusal: sending the same image again cannot help.
const UNLIKE_ACTION: &str =
    "send the right image: a left-hand radiograph, upright, sharp, not inverted, not a photo";

impl From<String> for Failure {
    fn from(message: String) -> Failure {
        Failure { message, action: RETRY_ACTION.into(), headline: None }
    }
}

/// A failure message for the small screen: the file's name instead of its full path, which
/// would fill the rows and push out the reason (the store and the reply keep the path).
fn on_screen(message: &str, path: &Path) -> String {
    match path.file_name() {
        Some(name) if !path.as_os_str().is_empty() => {
            message.replacen(&path.display().to_string(), &name.to_string_lossy(), 1)
        }
        _ => message.to_string(),
    }
}

/// Writes `image` to `dir` as `capture-<UTC time>.png`, atomically (a temporary name, then a
/// rename), so neither ANALYZE nor a person copying the folder sees half a file.
fn save_capture(
    image: &source::GrayImage,
    dir: &Path,
    frames: u32,
) -> Result<Capture, CaptureError> {
    let captured_at = store_mod::now_rfc3339();
    let stamp: String = captured_at
        .chars()
        .filter_map(|c| match c {
            ':' => Some('-'),
            'Z' => None,
            c => Some(c),
        })
        .collect();
    let path = dir.join(format!("capture-{stamp}Z.png"));
    let save_err = |reason: String| CaptureError::Save { path: path.clone(), reason };
    std::fs::create_dir_all(dir).map_err(|e| save_err(e.to_string()))?;
    let png = camera::encode_png(image).map_err(|e| save_err(e.to_string()))?;
    // Synced before it is named: the capture is analysed and stored by its path, so it
    // must survive a power cut as whole as the result that refers to it.
    atomic_file::write(&path, &png).map_err(|e| save_err(e.to_string()))?;
    let path = path.canonicalize().map_err(|e| save_err(e.to_string()))?;
    let (width, height) = image.dimensions();
    Ok(Capture { path, width, height, frames, captured_at })
}

/// SHA-256 of a file's bytes as lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_screen_names_the_file_not_its_folders() {
        let path = Path::new("/var/lib/boneage/requests/ward-3/noise.png");
        let message = format!("{}: rejected by the quality gate: image is noise", path.display());
        assert_eq!(
            on_screen(&message, path),
            "noise.png: rejected by the quality gate: image is noise"
        );
        assert_eq!(on_screen("camera failed", Path::new("")), "camera failed");
    }

    /// The idle screen's camera line is replaced as the camera's state changes, the other
    /// lines kept; a screen without one gets it added.
    #[test]
    fn the_idle_screen_follows_the_camera() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut config = crate::config::Config::builtin_in(root).unwrap();
        config.model.path = root.join("models/boneage-lite0.onnx");
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::Store::open(&dir.path().join("r.db")).unwrap();
        let model = Model::load(&config.model).unwrap();
        let service = Service::new(model, store, &config);
        let lines = |s: &Service| match lock(&s.ready).clone() {
            Some(Screen::Ready { status_lines, .. }) => status_lines,
            other => panic!("{other:?}"),
        };
        service.set_ready(Screen::Ready {
            device_name: "unit".into(),
            model_version: "m".into(),
            status_lines: vec!["tcp 127.0.0.1:5025".into(), "camera /dev/video0 missing".into()],
        });
        service.set_ready_camera_line("camera /dev/video0 ok".into());
        assert_eq!(lines(&service), ["tcp 127.0.0.1:5025", "camera /dev/video0 ok"]);
        service.set_ready(Screen::Ready {
            device_name: "unit".into(),
            model_version: "m".into(),
            status_lines: vec!["tcp 127.0.0.1:5025".into()],
        });
        service.set_ready_camera_line("camera /dev/video0 busy".into());
        assert_eq!(lines(&service), ["tcp 127.0.0.1:5025", "camera /dev/video0 busy"]);
    }
}
