//! `boneage serve` with a kiosk-like config whose camera is not there (no /dev/video* on
//! CI machines): it must start, report the camera problem in STATUS, and answer CAPTURE
//! and ANALYZE source=camera with a stable error code instead of crashing.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

/// Kills the service if the test fails half-way, so no orphan keeps running.
struct Service(Child);

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn serve_without_the_camera_keeps_running_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let device = format!("/dev/video-boneage-test-{}", std::process::id());
    let config = dir.path().join("kiosk-test.toml");
    // kiosk.toml, with the store, folders and screen in the temporary folder.
    std::fs::write(
        &config,
        format!(
            r#"[model]
path = "{model}"
[device]
name = "kiosk-test"
[store]
path = "results.db"
[tcp]
enabled = true
bind = "127.0.0.1:0"
[protocol]
allowed_dirs = ["inbox", "captures"]
[display]
backend = "png"
png_path = "screen.png"
[camera]
enabled = true
device = "{device}"
frames = 2
retry_s = 1
captures_dir = "captures"
"#,
            model = common::model_path().display()
        ),
    )
    .unwrap();
    let mut child = Service(
        Command::new(env!("CARGO_BIN_EXE_boneage"))
            .args(["--config", config.to_str().unwrap(), "serve"])
            .env("RUST_LOG", "warn")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut err = BufReader::new(child.0.stderr.take().unwrap());
    let (mut line, mut log) = (String::new(), String::new());
    let addr = loop {
        line.clear();
        assert!(err.read_line(&mut line).unwrap() > 0, "serve exited before it was ready:\n{log}");
        log.push_str(&line);
        if let Some((_, a)) = line.trim().rsplit_once("protocol on tcp ") {
            break a.to_string();
        }
    };
    assert!(log.contains(&device) && log.contains("no such device"), "start-up log: {log}");
    std::thread::spawn(move || for _ in err.lines() {});

    let stream = TcpStream::connect(&addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    let mut send = |cmd: &str| -> Value {
        writeln!(writer, "{cmd}").unwrap();
        let mut reply = String::new();
        reader.read_line(&mut reply).unwrap();
        serde_json::from_str(&reply).unwrap_or_else(|e| panic!("bad reply {reply:?}: {e}"))
    };

    assert_eq!(send("PING")["reply"], "pong");
    let status = send("STATUS");
    assert_eq!(status["ok"], true, "{status}");
    let camera = &status["source"]["camera"];
    assert_eq!(camera["state"], "missing", "{status}");
    assert_eq!(camera["device"], device.as_str());
    assert!(camera["message"].as_str().unwrap().contains("check the cable"), "{status}");

    let r = send("CAPTURE");
    assert_eq!(r["ok"], false, "{r}");
    assert_eq!(r["error"]["code"], "capture_failed", "{r}");
    let msg = r["error"]["message"].as_str().unwrap();
    assert!(msg.contains(&device) && msg.contains("[camera] device"), "{msg}");

    let r = send("ANALYZE sex=female age=10y source=camera");
    assert_eq!(r["error"]["code"], "capture_failed", "{r}");
    assert!(r.get("result").is_none(), "nothing captured, nothing stored: {r}");
    assert_eq!(send("HISTORY")["results"].as_array().unwrap().len(), 0);

    // Still the same state after a background retry, and still serving.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(send("STATUS")["source"]["camera"]["state"], "missing");
    assert_eq!(send("PING")["reply"], "pong");
    assert!(child.0.try_wait().unwrap().is_none(), "serve exited");
    assert!(dir.path().join("captures").is_dir(), "captures_dir created at start-up");
    assert!(dir.path().join("screen.png").is_file(), "the error screen was drawn");
}
