//! `boneage serve`: the appliance loop. Loads the model once, opens the store, then runs
//! the configured inputs side by side: the hot folder on this thread, the TCP listener and
//! the serial line on their own threads, all sharing one [`Service`]. A configured camera is
//! opened at start-up if it is there and retried on its own thread if not.
//!
//! Shutdown (SIGTERM/SIGINT in the binary, a flag in tests) lets the analysis in progress
//! finish and be stored, then returns.

use std::collections::VecDeque;
use std::io::BufReader;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use crate::config::{Config, Parity};
use crate::display::{Display, Screen};
use crate::model::{Model, ModelError};
use crate::protocol::{self, codes, ConnectionLimits, ProtocolError, Session};
use crate::service::{Request, Reuse, Service, ServiceError};
use crate::source::hotfolder::{self, HotFolder, HotFolderError, SidecarInfo};
use crate::store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    HotFolder(#[from] HotFolderError),
    #[error("cannot listen on {addr}: {source}; is another instance running? change [tcp] bind")]
    Bind { addr: std::net::SocketAddr, source: std::io::Error },
    #[error("cannot create allowed folder {}: {source}", path.display())]
    AllowedDir { path: PathBuf, source: std::io::Error },
    #[error("[protocol] allowed_dirs entry {} is the hot folder {} or overlaps it (through a symlink): the folder watcher would also analyse and move files meant for ANALYZE; give ANALYZE a folder of its own", allowed.display(), hot.display())]
    AllowedOverlapsHotFolder { allowed: PathBuf, hot: PathBuf },
    #[error("{key} {} lies in the hot folder {} (through a symlink): the folder watcher would take it as an image and move it away; keep the hot folder for incoming images only", file.display(), hot.display())]
    OwnFileInHotFolder { key: &'static str, file: PathBuf, hot: PathBuf },
    #[error("another boneage service (pid {pid}) is using the result store {}: stop it first (e.g. `systemctl stop boneage`), or give this one its own [store] path", store.display())]
    AlreadyRunning { store: PathBuf, pid: String },
    #[error("cannot lock {}: {source}; check that the store's folder is writable by this service", path.display())]
    Lock { path: PathBuf, source: std::io::Error },
    #[error("nothing to serve: [tcp], [serial] and [hot_folder] are all disabled in this configuration; enable one (firmware-config/headless.toml, kiosk.toml and field-clinic.toml are examples) or pass the unit's --config")]
    NothingEnabled,
    #[error("the {what} stopped while the service was running (see the log above); exiting so that the service manager restarts the unit")]
    WorkerStopped { what: &'static str },
    #[error("cannot start a thread: {source}; the system is out of threads or memory")]
    Spawn { source: std::io::Error },
}

/// What the running service exposes to tests: the bound TCP address (port 0 resolved).
#[derive(Debug, Clone, Default)]
pub struct Running {
    pub tcp_addr: Option<std::net::SocketAddr>,
}

/// Runs until `shutdown` is set. `on_ready` is called once everything is listening.
///
/// # Errors
/// [`ServeError`] for anything that prevents starting; once running, per-file and
/// per-connection errors are logged and stored, never fatal.
pub fn run(
    config: &Config,
    shutdown: Arc<AtomicBool>,
    on_ready: impl FnOnce(Running),
) -> Result<(), ServeError> {
    // A service nobody can reach would sit idle without a word; say so before loading.
    if !(config.tcp.enabled || config.serial.enabled || config.hot_folder.enabled) {
        return Err(ServeError::NothingEnabled);
    }
    let started = Instant::now();
    // Where this unit keeps things, as resolved from its config: the first thing to check
    // when results or files are not where they were expected.
    log::info!(
        "model {}, store {}{}",
        config.model.path.display(),
        config.store.path.display(),
        if config.hot_folder.enabled {
            format!(", hot folder {}", config.hot_folder.path.display())
        } else {
            String::new()
        }
    );
    // Before the model: a second instance must not take a small board's memory either.
    let _instance = lock_instance(&config.store.path)?;
    let model = Model::load(&config.model)?;
    // The screen first, so that a store the unit has to wait for is shown on it. A missing
    // screen must not stop a headless-capable unit: log and carry on without it.
    let mut display_error = None;
    let mut display = Display::open(&config.display)
        .map_err(|e| {
            log::error!(
                "display: {e}; continuing without it, trying again every {} s",
                DISPLAY_RETRY.as_secs()
            );
            display_error = Some(e.to_string());
        })
        .ok();
    let Some(store) = open_store(&config.store.path, display.as_mut(), &shutdown)? else {
        if let Some(d) = display.as_mut() {
            let _ = d.show(&stopped_screen());
        }
        log::info!("stopped while waiting for the store");
        return Ok(());
    };
    // Only a check: a store that opened but cannot be read here (damaged pages) still
    // takes new results, and STATUS reports it.
    match store.clock() {
        Ok(clock) if clock != "ok" => log::error!("clock {clock}"),
        Ok(_) => {}
        Err(e) => log::error!("cannot check the clock against the stored results: {e}"),
    }
    let service = Arc::new(Service::new(model, store, config).started_at(started));
    if let Some(d) = display {
        service.set_display(d);
    }
    if let Some(e) = &display_error {
        service.set_display_error(e);
    }
    let mut allowed = Vec::new();
    for d in &config.protocol.allowed_dirs {
        std::fs::create_dir_all(d)
            .map_err(|source| ServeError::AllowedDir { path: d.clone(), source })?;
        if let Ok(c) = d.canonicalize() {
            allowed.push(c);
        }
    }
    // A hot folder that cannot be made yet (a USB stick not plugged in at boot) does not
    // stop the unit: the loop below logs why and tries again every FOLDER_RETRY, as for a
    // folder that goes away while running, and checks it once it exists.
    let mut hot = if config.hot_folder.enabled {
        let (dirs, own) = (config.protocol.allowed_dirs.clone(), config.own_files());
        let hf = HotFolder::new(
            &config.hot_folder.path,
            Duration::from_millis(config.hot_folder.stable_ms),
        )
        .with_check(move |dir| match hot_folder_conflict(dir, &dirs, &own) {
            Some(e) => Err(e.to_string()),
            None => Ok(()),
        });
        // Made now if it can be, so that a bad set-up is refused at start (below).
        let _ = hf.create();
        Some(hf)
    } else {
        None
    };
    if let Some(conflict) = hot.as_ref().and_then(|h| {
        hot_folder_conflict(h.dir(), &config.protocol.allowed_dirs, &config.own_files())
    }) {
        return Err(conflict);
    }
    let allowed = Arc::new(allowed);

    let mut running = Running::default();
    let mut threads = Vec::new();
    if config.tcp.enabled {
        let listener = TcpListener::bind(config.tcp.bind)
            .map_err(|source| ServeError::Bind { addr: config.tcp.bind, source })?;
        running.tcp_addr = listener.local_addr().ok();
        log::info!("listening on tcp {}", running.tcp_addr.unwrap_or(config.tcp.bind));
        let (svc, stop, dirs, cfg) =
            (Arc::clone(&service), Arc::clone(&shutdown), Arc::clone(&allowed), config.tcp.clone());
        threads.push((
            "tcp listener",
            worker(move || accept_loop(listener, svc, dirs, &cfg, &stop), &shutdown)?,
        ));
    }
    if config.serial.enabled {
        let (svc, stop, dirs, cfg) =
            (Arc::clone(&service), Arc::clone(&shutdown), Arc::clone(&allowed), config.clone());
        threads
            .push(("serial line", worker(move || serial_loop(&cfg, svc, dirs, &stop), &shutdown)?));
    }
    let mut status_lines = Vec::new();
    if let Some(addr) = running.tcp_addr {
        status_lines.push(format!("tcp {addr}"));
    }
    if config.serial.enabled {
        status_lines.push(format!(
            "serial {} {} baud",
            config.serial.device.display(),
            config.serial.baud
        ));
    }
    if config.hot_folder.enabled {
        status_lines.push(format!("folder {}", config.hot_folder.path.display()));
    }
    if let Some(camera) = service.camera() {
        // One attempt now so STATUS and the log tell at once whether the camera is there;
        // a missing or busy camera is retried in the background, never fatal.
        if let Err(e) = std::fs::create_dir_all(&config.camera.captures_dir) {
            log::error!(
                "cannot create [camera] captures_dir {}: {e}; captures will fail",
                config.camera.captures_dir.display()
            );
        }
        status_lines.push(camera_line(&camera.probe()));
        let (svc, stop) = (Arc::clone(&service), Arc::clone(&shutdown));
        let every = Duration::from_secs(config.camera.retry_s);
        threads.push((CAMERA_WATCH, worker(move || camera_loop(&svc, every, &stop), &shutdown)?));
    }
    service.set_ready(Screen::Ready {
        device_name: config.device.name.clone(),
        model_version: service.identity.model_version.clone(),
        status_lines,
    });
    on_ready(running);

    let poll = Duration::from_millis(config.hot_folder.poll_ms);
    let mut next_poll = Instant::now();
    // The hot folder's listing error last logged, while it lasts.
    let mut folder_error: Option<String> = None;
    let mut stopped = None;
    // A display missing at start (its driver bound after the service started), or one
    // that failed to draw later (a driver rebound, a panel unplugged), is opened again
    // every DISPLAY_RETRY and shown the screen it missed, so the panel never keeps an
    // older result.
    let mut next_redraw = Instant::now() + DISPLAY_RETRY;
    while !shutdown.load(Ordering::Relaxed) {
        if Instant::now() >= next_redraw {
            if service.redraw_after_failure(|| Display::open(&config.display)) == Some(true) {
                log::warn!("display drawing again after an error");
            }
            next_redraw = Instant::now() + DISPLAY_RETRY;
        }
        // These run until shutdown; one that has ended (a panic, a listener that failed)
        // leaves a unit that looks alive but no longer answers: stop, to be restarted.
        let ended = threads.iter().position(|(_, t)| t.is_finished());
        if let Some(i) = ended.filter(|_| !shutdown.load(Ordering::Relaxed)) {
            let (what, t) = threads.swap_remove(i);
            if what == CAMERA_WATCH {
                // The camera is never fatal: without its watch a camera that goes away is
                // only noticed at the next CAPTURE, which still says why.
                log::error!("the {what} stopped unexpectedly; the camera is no longer re-tried");
                let _ = t.join();
                continue;
            }
            log::error!("the {what} stopped unexpectedly; stopping the service");
            stopped = Some(what);
            shutdown.store(true, Ordering::Relaxed);
            break;
        }
        if let Some(hf) = hot.as_mut().filter(|_| Instant::now() >= next_poll) {
            next_poll = match process_hot_folder(hf, &service, &shutdown) {
                // Nothing can be stored (a full disk): analysing the same files again every
                // poll only burns the CPU and the log; try again a little later.
                Polled::StoreFailed => {
                    folder_error = None;
                    Instant::now() + STORE_RETRY
                }
                // Logged once per new error, not every poll (a day of an unplugged stick
                // would write hundreds of thousands of lines to the SD card).
                Polled::Unreadable(e) => {
                    let message = e.to_string();
                    if folder_error.as_deref() != Some(message.as_str()) {
                        log::error!(
                            "{message}; new files are not analysed until it can be read: \
                             re-mount the stick or fix [hot_folder] path (retrying every {} s)",
                            FOLDER_RETRY.as_secs()
                        );
                        folder_error = Some(message);
                    }
                    Instant::now() + FOLDER_RETRY
                }
                Polled::Done => {
                    if folder_error.take().is_some() {
                        log::warn!("hot folder {} can be read again", hf.dir().display());
                    }
                    Instant::now()
                }
            };
        }
        thread::sleep(poll);
    }
    // Each worker finishes its command in hand within SHUTDOWN_GRACE; one stuck beyond it
    // (a serial write to a peer that stopped reading blocks with no timeout) must not keep
    // the unit from stopping: it is left behind, and ends with the process.
    let deadline = Instant::now() + SHUTDOWN_GRACE + Duration::from_secs(2);
    while threads.iter().any(|(_, t)| !t.is_finished()) && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
    }
    for (what, t) in threads {
        if t.is_finished() {
            let _ = t.join();
        } else {
            log::warn!("stopping with the {what} still busy (a reply the peer is not reading?)");
        }
    }
    // The last result must not stay on the screen as if it were current.
    service.show(&stopped_screen());
    if let Some(what) = stopped {
        return Err(ServeError::WorkerStopped { what });
    }
    log::info!("stopped");
    Ok(())
}

/// Name of the camera's re-try thread, the one worker whose end does not stop the service.
const CAMERA_WATCH: &str = "camera watch";

/// Starts one of the service's long-running threads; if it cannot, the ones already
/// started are told to stop.
fn worker(
    f: impl FnOnce() + Send + 'static,
    shutdown: &AtomicBool,
) -> Result<thread::JoinHandle<()>, ServeError> {
    thread::Builder::new().spawn(f).map_err(|source| {
        shutdown.store(true, Ordering::Relaxed);
        ServeError::Spawn { source }
    })
}

/// Re-opens a missing, busy or unplugged camera every `every`, so it works again once it is
/// plugged in or released, without a restart.
fn camera_loop(service: &Service, every: Duration, shutdown: &AtomicBool) {
    let Some(camera) = service.camera() else {
        return;
    };
    let mut last = camera.health().state;
    while pause(every, shutdown) {
        let health = camera.probe();
        if health.state != last {
            last = health.state;
            service.set_ready_camera_line(camera_line(&health));
        }
    }
}

/// The camera's line on the idle screen.
fn camera_line(health: &crate::source::camera::Health) -> String {
    format!("camera {} {}", health.device.display(), health.state.as_str())
}

/// Waits `duration` in short steps; `false` as soon as `shutdown` is set, so a stop is never
/// held up by a retry or back-off wait.
fn pause(duration: Duration, shutdown: &AtomicBool) -> bool {
    let until = Instant::now() + duration;
    while Instant::now() < until {
        if shutdown.load(Ordering::Relaxed) {
            return false;
        }
        thread::sleep(Duration::from_millis(100));
    }
    !shutdown.load(Ordering::Relaxed)
}

/// What the screen shows once the service has stopped.
fn stopped_screen() -> Screen {
    Screen::Error {
        what: "Stopped: no current result".into(),
        action: "restart the service (or the unit) to analyse radiographs".into(),
    }
}

/// Holds an exclusive lock on `<store>.lock` for as long as the returned file is open
/// (the kernel lets it go when the process ends, however it ends). Two services on one
/// store would both take each file of a shared hot folder, store it twice and fight over
/// moving it, and both draw on the screen; the second is refused, naming the first's pid.
fn lock_instance(store: &Path) -> Result<std::fs::File, ServeError> {
    use std::io::{Read, Seek, Write};
    use std::os::fd::AsRawFd;
    let mut name = store.as_os_str().to_os_string();
    name.push(".lock");
    let path = PathBuf::from(name);
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|source| ServeError::Lock { path: path.clone(), source })?;
    }
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|source| ServeError::Lock { path: path.clone(), source })?;
    // SAFETY: flock on a descriptor this function owns; no memory is shared.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let source = std::io::Error::last_os_error();
        if source.kind() != std::io::ErrorKind::WouldBlock {
            return Err(ServeError::Lock { path, source });
        }
        let mut pid = String::new();
        let _ = file.read_to_string(&mut pid);
        return Err(ServeError::AlreadyRunning {
            store: store.to_path_buf(),
            pid: pid.trim().into(),
        });
    }
    // For the message another start would give; the lock, not this text, is what counts.
    let _ = file.set_len(0).and_then(|()| file.rewind());
    let _ = write!(file, "{}", std::process::id()).and_then(|()| file.flush());
    Ok(file)
}

/// Opens the store, waiting while the disk is full or failing ([`StoreError::is_transient`]):
/// a unit that exits instead is restarted into the same failure over and over, with a
/// blank screen; this one says on its screen what is wrong and starts once space is
/// freed. `None` when asked to stop while waiting; other errors end the start.
fn open_store(
    path: &Path,
    mut display: Option<&mut Display>,
    shutdown: &AtomicBool,
) -> Result<Option<Store>, ServeError> {
    let mut logged = String::new();
    loop {
        let (error, read_only) = match Store::open_writable(path) {
            Ok(store) => return Ok(Some(store)),
            Err(e) if e.is_transient() => (e.to_string(), matches!(e, StoreError::ReadOnly { .. })),
            Err(e) => return Err(e.into()),
        };
        if error != logged {
            log::error!("{error}; trying again every {} s", STORE_RETRY.as_secs());
            if let Some(d) = display.as_deref_mut() {
                let screen = if read_only {
                    Screen::Error {
                        what: "the result store is read-only for this service".into(),
                        action: "give the store file to the service's user (see the log); the \
                                 unit starts by itself then"
                            .into(),
                    }
                } else {
                    Screen::Error {
                        what: "the result store cannot be opened: the disk is full or failing"
                            .into(),
                        action: "free disk space (see the log); the unit starts by itself then"
                            .into(),
                    }
                };
                if let Err(e) = d.show(&screen) {
                    log::warn!("display: {e}");
                }
            }
            logged = error;
        }
        if !pause(STORE_RETRY, shutdown) {
            return Ok(None);
        }
    }
}

/// The request for a hot-folder file, with the facts of its sidecar; a sidecar that cannot
/// be used is returned as the error to store as this file's failure, under the same label.
fn hotfolder_request(path: &Path) -> (Request, Option<String>) {
    let (facts, sidecar_error) = match hotfolder::read_sidecar(path) {
        Ok(facts) => (facts, None),
        Err(message) => (SidecarInfo::default(), Some(message)),
    };
    let req = Request {
        path: path.to_path_buf(),
        via: "hot-folder".into(),
        sex: facts.sex,
        age: facts.age,
        height_cm: facts.height_cm,
        exam_id: facts.exam_id,
        reuse: Reuse::SameDrop { arrived_at: arrived_at(path) },
    };
    (req, sidecar_error)
}

/// When the file arrived in the folder: its inode change time, which a copy or a rename
/// into the folder sets and no copy tool can carry over (unlike the modification time).
fn arrived_at(path: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok()?;
    let since_epoch =
        Duration::new(u64::try_from(meta.ctime()).ok()?, u32::try_from(meta.ctime_nsec()).ok()?);
    Some(crate::store::rfc3339(std::time::UNIX_EPOCH + since_epoch))
}

/// Why the hot folder `dir` must not be watched: as it is on disk (symbolic links
/// resolved), it overlaps an ANALYZE folder or directly holds one of the unit's own files
/// (the config check is lexical, and a symlink can still lead there). `None` when it is
/// fine, or does not exist (yet).
fn hot_folder_conflict(
    dir: &Path,
    allowed_dirs: &[PathBuf],
    own_files: &[(&'static str, PathBuf)],
) -> Option<ServeError> {
    let hot_dir = dir.canonicalize().ok()?;
    let overlaps = |d: &&PathBuf| {
        d.canonicalize().is_ok_and(|a| a.starts_with(&hot_dir) || hot_dir.starts_with(&a))
    };
    if let Some(d) = allowed_dirs.iter().find(overlaps) {
        return Some(ServeError::AllowedOverlapsHotFolder { allowed: d.clone(), hot: hot_dir });
    }
    let inside = |(_, file): &&(&'static str, PathBuf)| {
        // A bare file name (`--config unit.toml`) lies in the working folder.
        let parent = file.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        parent.canonicalize().is_ok_and(|p| p == hot_dir)
    };
    let (key, file) = own_files.iter().find(inside)?;
    Some(ServeError::OwnFileInHotFolder { key, file: file.clone(), hot: hot_dir })
}

/// How a hot-folder round ended.
enum Polled {
    Done,
    /// A result could not be stored; the round stopped there.
    StoreFailed,
    /// The folder could not be listed (an unplugged stick, a removed folder).
    Unreadable(HotFolderError),
}

/// Wait before the hot folder tries again after the store refused a result.
const STORE_RETRY: Duration = Duration::from_secs(5);

/// Wait before a display that could not be opened is tried again.
const DISPLAY_RETRY: Duration = Duration::from_secs(10);

/// Wait before the hot folder is listed again after it could not be.
const FOLDER_RETRY: Duration = Duration::from_secs(2);

fn process_hot_folder(hf: &mut HotFolder, service: &Service, shutdown: &AtomicBool) -> Polled {
    let ready = match hf.poll() {
        Ok(r) => r,
        Err(e) => return Polled::Unreadable(e),
    };
    // Files that stopped the service too often: stored as failures, then moved with their
    // sidecars, like any other failed file (left in place if the store cannot be written).
    for (path, why) in hf.take_set_aside() {
        let (req, _) = hotfolder_request(&path);
        match service.reject(&req, format!("{}: {why}", path.display())) {
            Err(ServiceError::Store(e)) => {
                log::error!("{}: {e}; will retry", path.display());
                return Polled::StoreFailed;
            }
            _ => {
                if let Err(e) = hf.finish(&path, Some(&why)) {
                    log::error!("{e}");
                }
            }
        }
    }
    for path in ready {
        if shutdown.load(Ordering::Relaxed) {
            return Polled::Done;
        }
        let (req, sidecar_error) = hotfolder_request(&path);
        // Marked as in analysis only once its turn has come: a crash while it waits behind
        // a protocol request is not this file's doing.
        let outcome = match sidecar_error {
            None => service.analyze_then(&req, || hf.begin(&path)).map(|done| done.record),
            Some(message) => {
                hf.begin(&path);
                service.reject(&req, message)
            }
        };
        let failure = match outcome {
            Ok(r) => {
                log::info!("{}: result {} stored", path.display(), r.id);
                None
            }
            Err(ServiceError::Analysis { message, .. }) => Some(message),
            Err(ServiceError::Store(e)) => {
                // Nothing stored: leave the file where it is to be retried.
                log::error!("{}: {e}; will retry in {} s", path.display(), STORE_RETRY.as_secs());
                hf.retry_later(&path);
                return Polled::StoreFailed;
            }
        };
        if let Some(why) = &failure {
            log::warn!("{why}");
        }
        if let Err(e) = hf.finish(&path, failure.as_deref()) {
            log::error!("{e}");
        }
    }
    Polled::Done
}

fn accept_loop(
    listener: TcpListener,
    service: Arc<Service>,
    allowed: Arc<Vec<PathBuf>>,
    cfg: &crate::config::TcpConfig,
    shutdown: &Arc<AtomicBool>,
) {
    // Non-blocking accept polled every 50 ms, so shutdown needs no self-connection trick.
    if let Err(e) = listener.set_nonblocking(true) {
        log::error!("tcp listener: {e}");
        return;
    }
    let active = Arc::new(AtomicUsize::new(0));
    let refusing = Arc::new(AtomicUsize::new(0));
    let strangers = Arc::new(Unauthenticated::default());
    let public = !listener.local_addr().map(|a| a.ip().is_loopback()).unwrap_or(false);
    while !shutdown.load(Ordering::Relaxed) {
        let (stream, peer) = match listener.accept() {
            Ok(accepted) => accepted,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                thread::sleep(Duration::from_millis(50));
                continue;
            }
            Err(e) => {
                log::warn!("accept failed: {e}");
                thread::sleep(Duration::from_millis(200));
                continue;
            }
        };
        // At the limit, a stranger that has had its chance to AUTH makes room, so clients
        // reconnecting in a loop without a token cannot keep an authorised one out.
        if active.load(Ordering::Acquire) >= cfg.max_connections
            && !strangers.close_oldest(AUTH_GRACE)
        {
            // A client reconnecting in a loop must not pile up refusing threads: past a
            // few, the connection is just closed.
            if refusing.load(Ordering::Acquire) >= MAX_REFUSING {
                continue;
            }
            let (max, slot) = (cfg.max_connections, Slot::take(&refusing));
            spawn_or_log("tcp refusal", move || {
                refuse(stream, max);
                drop(slot);
            });
            continue;
        }
        let slot = Slot::take(&active);
        let mut session = Session::new(Arc::clone(&service), "tcp", Arc::clone(&allowed));
        // A loopback client need not AUTH, but a token it sends is still checked: a wrong
        // one must not be confirmed.
        if public || !cfg.token.is_empty() {
            session.required_token = Some(cfg.token.clone());
        }
        session.authenticated = !public;
        session.peer = Some(peer);
        let stranger = if public { strangers.add(&stream) } else { None };
        if let Some(id) = stranger {
            let strangers = Arc::clone(&strangers);
            session.on_authenticated = Some(Box::new(move || strangers.remove(id)));
        }
        let strangers = Arc::clone(&strangers);
        let stop = Arc::clone(shutdown);
        let limits = ConnectionLimits {
            max_line_bytes: cfg.max_line_bytes,
            timeout_closes: true,
            auth_within: Some(Duration::from_secs(cfg.auth_timeout_s)),
        };
        let idle = Duration::from_secs(cfg.idle_timeout_s);
        spawn_or_log("tcp connection", move || {
            if let Err(e) = handle_tcp(stream, &mut session, limits, idle, &stop) {
                log::debug!("tcp connection ended: {e}");
            }
            if let Some(id) = stranger {
                strangers.remove(id);
            }
            drop(slot);
        });
    }
    // New connections are refused from here on (they would wait unanswered in the backlog
    // until the process exits); the open ones finish the command in hand, and store its
    // result, before the process exits: a client never loses an analysis it was told about.
    // Each connection sees the shutdown within one read tick; the cap only guards against
    // a stuck peer write.
    drop(listener);
    let deadline = Instant::now() + SHUTDOWN_GRACE;
    while active.load(Ordering::Acquire) > 0 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
    }
    let left = active.load(Ordering::Acquire);
    if left > 0 {
        log::warn!("stopping with {left} tcp connection(s) still busy");
    }
}

/// Connections over the limit answered at once; more are closed unanswered.
const MAX_REFUSING: usize = 8;

/// How long a connection on a public address keeps its slot against newcomers before it
/// has authenticated: a client that has its token sends AUTH in well under this.
const AUTH_GRACE: Duration = Duration::from_secs(1);

/// Connections on a public address that have not sent their token yet, oldest first,
/// each with a handle to close it from the accept loop.
#[derive(Default)]
struct Unauthenticated {
    next_id: AtomicU64,
    waiting: Mutex<VecDeque<(u64, Instant, TcpStream)>>,
}

impl Unauthenticated {
    fn waiting(&self) -> MutexGuard<'_, VecDeque<(u64, Instant, TcpStream)>> {
        // The list holds no invariant a panicking holder could break.
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers a new connection; `None` (not closable, so never made to give way) when
    /// its handle cannot be cloned.
    fn add(&self, stream: &TcpStream) -> Option<u64> {
        let handle = stream.try_clone().ok()?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.waiting().push_back((id, Instant::now(), handle));
        Some(id)
    }

    fn remove(&self, id: u64) {
        self.waiting().retain(|(i, _, _)| *i != id);
    }

    /// Tells the oldest connection waiting longer than `grace` why, and closes it; whether
    /// there was one. Its thread sees the close at its next read and frees the slot.
    fn close_oldest(&self, grace: Duration) -> bool {
        let mut waiting = self.waiting();
        let Some(at) = waiting.iter().position(|(_, since, _)| since.elapsed() >= grace) else {
            return false;
        };
        let Some((_, since, mut stream)) = waiting.remove(at) else { return false };
        drop(waiting);
        let reply = ProtocolError::new(
            codes::UNAUTHORIZED,
            format!(
                "no AUTH token=... after {:.1} s while the connection slots are full; \
                 connection closed to make room",
                since.elapsed().as_secs_f64()
            ),
        )
        .to_reply();
        let _ = stream.set_write_timeout(Some(Duration::from_millis(200)));
        let _ = std::io::Write::write_all(&mut stream, &protocol::reply_line(&reply));
        let _ = stream.shutdown(std::net::Shutdown::Both);
        true
    }
}

/// One counted connection: the count goes down when the guard is dropped, also when its
/// thread panics or cannot be started, so a slot is never lost.
struct Slot(Arc<AtomicUsize>);

impl Slot {
    fn take(count: &Arc<AtomicUsize>) -> Slot {
        count.fetch_add(1, Ordering::AcqRel);
        Slot(Arc::clone(count))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Starts a connection thread; when the system cannot start one (out of threads or
/// memory) the connection is dropped and logged, and the listener carries on.
fn spawn_or_log(what: &str, f: impl FnOnce() + Send + 'static) {
    if let Err(e) = thread::Builder::new().name(what.into()).spawn(f) {
        log::error!("cannot start a thread for a {what}: {e}; connection closed");
    }
}

/// Longest wait at shutdown for connections to finish their command (an analysis takes
/// under a second; a reply write times out after 10 s).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(15);

/// Answers a connection over the limit with `unavailable` and closes it cleanly: one write,
/// then half-close, then drain what the client already sent, so the close is a FIN and the
/// client reads the whole reply instead of a reset.
fn refuse(mut stream: TcpStream, max: usize) {
    use std::io::Write;
    let reply = ProtocolError::new(
        codes::UNAVAILABLE,
        format!("too many connections (limit {max}); try again later"),
    )
    .to_reply();
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_write_timeout(Some(Duration::from_secs(2)));
    if stream.write_all(&protocol::reply_line(&reply)).is_err() {
        return;
    }
    close_after_reply(&stream);
}

/// Closes a connection whose last reply was just written so that the peer reads that reply:
/// half-close, then drain (up to 1 s) what it already sent, so the close is a FIN and not a
/// reset that would discard the reply on the peer's side.
fn close_after_reply(mut stream: &TcpStream) {
    use std::io::Read;
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    let mut sink = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(1);
    while Instant::now() < deadline {
        match stream.read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
}

fn handle_tcp(
    stream: TcpStream,
    session: &mut Session,
    limits: ConnectionLimits,
    idle: Duration,
    stop: &AtomicBool,
) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    // Short read timeout so shutdown is noticed; idleness is tracked across timeouts.
    let tick = Duration::from_millis(500).min(idle);
    stream.set_read_timeout(Some(tick))?;
    stream.set_write_timeout(Some(Duration::from_secs(10)))?;
    let reader = IdleReader {
        inner: stream.try_clone()?,
        idle,
        tick,
        waited: Duration::ZERO,
        partial_since: None,
    };
    protocol::serve_connection(BufReader::new(reader), &stream, session, limits, stop)?;
    if session.closing {
        // A wrong token: its reply was the last.
        close_after_reply(&stream);
    }
    Ok(())
}

/// Turns read timeouts into "keep waiting" until `idle` has passed without data, so the
/// connection loop can still check for shutdown every `tick`. A line that has not ended
/// `idle` after its first byte times out too: one byte now and then, never a line end,
/// would otherwise hold a connection slot for ever.
struct IdleReader<R> {
    inner: R,
    idle: Duration,
    tick: Duration,
    waited: Duration,
    /// When the bytes after the last line end began to arrive.
    partial_since: Option<std::time::Instant>,
}

impl<R: std::io::Read> std::io::Read for IdleReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self.inner.read(buf) {
            Ok(n) => {
                self.waited = Duration::ZERO;
                let now = std::time::Instant::now();
                let data = &buf[..n];
                let ends = |b: &u8| matches!(b, b'\n' | b'\r');
                if data.last().is_some_and(ends) {
                    self.partial_since = None;
                } else if data.iter().any(ends) {
                    self.partial_since = Some(now);
                } else if n > 0 {
                    let since = *self.partial_since.get_or_insert(now);
                    if now.duration_since(since) >= self.idle {
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            "idle timeout: a line that does not end",
                        ));
                    }
                }
                Ok(n)
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                self.waited += self.tick;
                if self.waited >= self.idle {
                    Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "idle timeout"))
                } else {
                    Err(std::io::Error::new(std::io::ErrorKind::Interrupted, "tick"))
                }
            }
            Err(e) => Err(e),
        }
    }
}

fn serial_loop(
    config: &Config,
    service: Arc<Service>,
    allowed: Arc<Vec<PathBuf>>,
    shutdown: &AtomicBool,
) {
    let s = &config.serial;
    let mut backoff = Duration::from_secs(1);
    while !shutdown.load(Ordering::Relaxed) {
        let parity = match s.parity {
            Parity::None => serialport::Parity::None,
            Parity::Even => serialport::Parity::Even,
            Parity::Odd => serialport::Parity::Odd,
        };
        let port = serialport::new(s.device.to_string_lossy(), s.baud)
            .parity(parity)
            .timeout(Duration::from_millis(200))
            .open();
        match port {
            Ok(port) => {
                backoff = Duration::from_secs(1);
                log::info!("serial {} open at {} baud", s.device.display(), s.baud);
                match port.try_clone() {
                    Ok(writer) => {
                        let mut session =
                            Session::new(Arc::clone(&service), "serial", Arc::clone(&allowed));
                        let limits = ConnectionLimits {
                            max_line_bytes: config.tcp.max_line_bytes,
                            timeout_closes: false,
                            auth_within: None,
                        };
                        if let Err(e) = protocol::serve_connection(
                            BufReader::new(port),
                            writer,
                            &mut session,
                            limits,
                            shutdown,
                        ) {
                            log::warn!("serial {}: {e}; reopening", s.device.display());
                        }
                    }
                    Err(e) => log::warn!("serial {}: {e}", s.device.display()),
                }
            }
            Err(e) => {
                log::warn!(
                    "serial {}: {e}; retrying in {}s",
                    s.device.display(),
                    backoff.as_secs()
                );
            }
        }
        pause(backoff, shutdown);
        backoff = (backoff * 2).min(Duration::from_secs(64));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Gives `chunk` on every read, `pause` after the previous one.
    struct Trickle {
        chunk: &'static [u8],
        pause: Duration,
    }

    impl std::io::Read for Trickle {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            std::thread::sleep(self.pause);
            buf[..self.chunk.len()].copy_from_slice(self.chunk);
            Ok(self.chunk.len())
        }
    }

    /// Whole lines keep a connection open however long it lasts; a byte now and then that
    /// never ends a line is cut off once the idle time has passed since its first byte.
    #[test]
    fn a_line_that_never_ends_times_out() {
        use std::io::Read;
        let reader = |chunk| IdleReader {
            inner: Trickle { chunk, pause: Duration::from_millis(10) },
            idle: Duration::from_millis(100),
            tick: Duration::from_millis(10),
            waited: Duration::ZERO,
            partial_since: None,
        };
        let mut buf = [0u8; 16];
        let mut lines = reader(b"PING\n");
        assert!((0..30).all(|_| lines.read(&mut buf).is_ok()));
        let mut trickle = reader(b"P");
        let first_error = (0..30).find_map(|_| trickle.read(&mut buf).err());
        assert_eq!(first_error.map(|e| e.kind()), Some(std::io::ErrorKind::TimedOut));
    }

    #[test]
    fn a_connection_slot_comes_back_when_its_thread_panics() {
        let active = Arc::new(AtomicUsize::new(0));
        let slot = Slot::take(&active);
        assert_eq!(active.load(Ordering::Acquire), 1);
        let t = thread::spawn(move || {
            let _slot = slot;
            panic!("a bug while drawing the screen");
        });
        assert!(t.join().is_err());
        assert_eq!(active.load(Ordering::Acquire), 0);
    }
}
