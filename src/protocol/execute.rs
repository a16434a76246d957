//! Executes parsed commands against the running [`Service`]; the only place that does.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use super::{codes, Command, ProtocolError, COMMANDS};
use crate::service::{Analysed, Capture, CaptureError, Request, Reuse, Service, ServiceError};
use crate::store::Record;

/// Per-connection state.
pub struct Session {
    pub service: Arc<Service>,
    /// How requests on this connection are labelled in the store ("tcp", "serial").
    pub via: String,
    /// The configured token, which `AUTH` checks. Whether it must be sent before anything
    /// but PING/HELP is `authenticated` starting false (public binds).
    pub required_token: Option<String>,
    pub authenticated: bool,
    /// Called once when AUTH succeeds, so the transport can stop counting the connection
    /// as a stranger's.
    pub on_authenticated: Option<Box<dyn FnOnce() + Send>>,
    /// Canonical folders ANALYZE may read from.
    pub allowed_dirs: Arc<Vec<PathBuf>>,
    /// The other end of a TCP connection, named in the warning about a wrong token.
    pub peer: Option<SocketAddr>,
    /// Set by a command whose reply is the connection's last (a wrong token): the
    /// connection loop closes the connection once that reply is written.
    pub closing: bool,
}

impl Session {
    pub fn new(service: Arc<Service>, via: &str, allowed_dirs: Arc<Vec<PathBuf>>) -> Session {
        Session {
            service,
            via: via.to_string(),
            required_token: None,
            authenticated: true,
            on_authenticated: None,
            allowed_dirs,
            peer: None,
            closing: false,
        }
    }
}

fn ok(mut v: Value) -> Value {
    if let Value::Object(map) = &mut v {
        map.entry("ok").or_insert(Value::Bool(true));
    }
    v
}

fn record_json(r: &Record) -> Value {
    serde_json::to_value(r).unwrap_or(Value::Null)
}

/// Runs one command and returns its reply object (always with `"ok"`).
pub fn execute(cmd: Command, session: &mut Session) -> Value {
    match run(cmd, session) {
        Ok(v) => ok(v),
        Err(e) => e.to_reply(),
    }
}

fn run(cmd: Command, s: &mut Session) -> Result<Value, ProtocolError> {
    if !s.authenticated && !matches!(cmd, Command::Auth { .. } | Command::Ping | Command::Help) {
        return Err(ProtocolError::new(codes::UNAUTHORIZED, "send AUTH token=<token> first"));
    }
    let svc = Arc::clone(&s.service);
    match cmd {
        Command::Ping => Ok(json!({"reply": "pong"})),
        Command::Help => Ok(json!({
            "commands": COMMANDS.iter().map(|c| json!({"syntax": c.syntax, "summary": c.summary})).collect::<Vec<_>>()
        })),
        Command::Identify => Ok(json!({"identity": svc.identity})),
        Command::Auth { token } => match &s.required_token {
            Some(expected) if !constant_time_eq(expected.as_bytes(), token.as_bytes()) => {
                Err(wrong_token(s))
            }
            _ => {
                s.authenticated = true;
                if let Some(notify) = s.on_authenticated.take() {
                    notify();
                }
                Ok(json!({"authenticated": true}))
            }
        },
        Command::Status => {
            // A store that cannot be read (damaged pages) must not hide the rest of the
            // unit's health: each field says what it could not find out.
            let store = svc.store();
            let (last, count, clock) = (store.last_id(), store.count(), store.clock());
            let read_error = [last.as_ref().err(), count.as_ref().err(), clock.as_ref().err()]
                .into_iter()
                .flatten()
                .next()
                .map(|e| format!("error: {e}"));
            // Without the newest stored time, the check against 2026 still stands.
            let clock = clock
                .unwrap_or_else(|_| crate::store::clock_check(&crate::store::now_rfc3339(), None));
            let (last, count) = (last.ok().flatten(), count.ok());
            Ok(json!({
                "state": if svc.queue_len() > 0 { "analysing" } else { "ready" },
                "uptime_s": svc.uptime_s(),
                "queue": svc.queue_len(),
                "last_result_id": last,
                "results_stored": count,
                "model": svc.identity.model_version,
                "backend": svc.identity.backend,
                "source": {"camera": camera_json(&svc)},
                "display": svc.display_health(),
                // A damaged store (found at start) is what reads then fail on: say that.
                "store": match store.health() {
                    h if h.starts_with("damaged") => h,
                    h => read_error.unwrap_or(h),
                },
                "clock": clock,
            }))
        }
        Command::Result { id } => {
            let r = svc.store().get(id).map_err(store_err)?;
            match r {
                Some(r) => Ok(json!({"result": record_json(&r)})),
                None => {
                    Err(ProtocolError::new(codes::NOT_FOUND, format!("no result with id {id}")))
                }
            }
        }
        Command::History { limit, exam_id } => {
            let rows = match exam_id {
                Some(id) => svc.store().history_of(&id, limit),
                None => svc.store().history(limit),
            }
            .map_err(store_err)?;
            Ok(json!({"results": rows.iter().map(record_json).collect::<Vec<_>>()}))
        }
        Command::Capture => {
            let c = svc.capture().map_err(capture_err)?;
            Ok(json!({"capture": capture_json(&c)}))
        }
        Command::Analyze(args) => {
            let path = match &args.path {
                Some(p) => allowed(Path::new(p), &s.allowed_dirs)?,
                // Replaced by the capture's file.
                None => PathBuf::new(),
            };
            let req = Request {
                path,
                via: s.via.clone(),
                sex: args.sex,
                age: args.age,
                height_cm: args.height_cm,
                exam_id: args.exam_id,
                reuse: Reuse::Resend,
            };
            let (capture, outcome) = if args.path.is_some() {
                (None, svc.analyze(&req))
            } else {
                let (c, outcome) = svc.capture_and_analyze(&req).map_err(capture_err)?;
                (Some(capture_json(&c)), outcome)
            };
            let mut reply = match outcome {
                // `repeat`: the identical request was answered before (a resend after a
                // lost reply); this is that stored result, nothing new was stored.
                Ok(Analysed { record, repeat: true }) => {
                    json!({"result": record_json(&record), "repeat": true})
                }
                Ok(Analysed { record, .. }) => json!({"result": record_json(&record)}),
                Err(ServiceError::Analysis { message, record }) => json!({
                    "ok": false,
                    "error": {"code": codes::ANALYSIS_FAILED, "message": message},
                    "result": record_json(&record),
                }),
                Err(ServiceError::Store(e)) => return Err(store_err(e)),
            };
            if let (Some(c), Value::Object(map)) = (capture, &mut reply) {
                map.insert("capture".into(), c);
            }
            Ok(reply)
        }
    }
}

/// How long a wrong token holds its connection before the reply (and the close).
const WRONG_TOKEN_PAUSE: Duration = Duration::from_secs(1);

/// A wrong token costs the guesser: it is logged with the peer's address, answered only
/// after a pause, and ends the connection, so each guess takes a new connection (one of
/// `max_connections`) and a second.
fn wrong_token(s: &mut Session) -> ProtocolError {
    match s.peer {
        Some(peer) => log::warn!("wrong AUTH token from {peer} ({}); connection closed", s.via),
        None => log::warn!("wrong AUTH token on {}; connection closed", s.via),
    }
    std::thread::sleep(WRONG_TOKEN_PAUSE);
    s.closing = true;
    ProtocolError::new(
        codes::UNAUTHORIZED,
        "wrong token; connection closed: reconnect and send AUTH token=<token> with the \
         token set as [tcp] token in the unit's configuration",
    )
}

/// STATUS's camera health: `{"state": "none"}` without a camera, else its state
/// (`ok`, `missing`, `busy`, `denied`, `error`, `unknown`), device and message.
fn camera_json(svc: &Service) -> Value {
    match svc.camera_health() {
        None => json!({"state": "none"}),
        Some(h) => json!({
            "state": h.state.as_str(),
            "device": h.device.display().to_string(),
            "message": h.message,
        }),
    }
}

fn capture_json(c: &Capture) -> Value {
    json!({
        "path": c.path.display().to_string(),
        "width": c.width,
        "height": c.height,
        "frames": c.frames,
        "captured_at": c.captured_at,
    })
}

fn capture_err(e: CaptureError) -> ProtocolError {
    match e {
        CaptureError::NotConfigured => camera_unavailable(),
        other => {
            log::warn!("capture failed: {other}");
            ProtocolError::new(codes::CAPTURE_FAILED, other.to_string())
        }
    }
}

fn camera_unavailable() -> ProtocolError {
    ProtocolError::new(
        codes::UNAVAILABLE,
        "no capture device is configured on this unit; use ANALYZE path=<file>",
    )
}

fn store_err(e: crate::store::StoreError) -> ProtocolError {
    log::error!("store failure: {e}");
    ProtocolError::new(codes::STORE_FAILED, e.to_string())
}

/// The canonical path if it is inside one of the allowed folders.
fn allowed(path: &Path, dirs: &[PathBuf]) -> Result<PathBuf, ProtocolError> {
    let refuse = || {
        ProtocolError::new(
            codes::PATH_NOT_ALLOWED,
            format!(
                "{} is not a file inside an allowed folder ([protocol] allowed_dirs)",
                path.display()
            ),
        )
    };
    // A missing file named inside an allowed folder is a typo to point out; outside them,
    // the same refusal as for any other path, so nothing is learnt about other folders.
    let inside = path.components().all(|c| c != std::path::Component::ParentDir)
        && dirs.iter().any(|d| path.starts_with(d));
    let canonical = path.canonicalize().map_err(|e| {
        if inside && e.kind() == std::io::ErrorKind::NotFound {
            ProtocolError::new(
                codes::NOT_FOUND,
                format!(
                    "{}: no such file; check the name and that the copy has finished",
                    path.display()
                ),
            )
        } else {
            refuse()
        }
    })?;
    if dirs.iter().any(|d| canonical.starts_with(d)) && canonical.is_file() {
        Ok(canonical)
    } else {
        Err(refuse())
    }
}

/// Token comparison whose time does not depend on where the first difference is.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
