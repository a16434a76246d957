//! Power-cut safety: SIGKILL `boneage serve` repeatedly while it is analysing, restart it,
//! and check that every result it reported is still stored and the store is sound.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use boneage::store::Store;

/// Kills the service if the test fails half-way, so no orphan keeps running.
struct Service(Child);

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(config: &std::path::Path) -> (Service, String) {
    let mut child = Service(
        Command::new(env!("CARGO_BIN_EXE_boneage"))
            .args(["--config", config.to_str().unwrap(), "serve"])
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut err = BufReader::new(child.0.stderr.take().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        assert!(err.read_line(&mut line).unwrap() > 0, "serve exited before it was ready");
        if let Some(addr) = line.trim().rsplit_once("protocol on tcp ").map(|(_, a)| a.to_string())
        {
            // Keep draining stderr so the child never blocks on a full pipe.
            std::thread::spawn(move || for _ in err.lines() {});
            return (child, addr);
        }
    }
}

#[test]
fn sigkill_during_analyses_loses_no_reported_result() {
    let dir = tempfile::tempdir().unwrap();
    let inbox = dir.path().join("inbox");
    std::fs::create_dir_all(&inbox).unwrap();
    let (id, male, ..) = common::expected().into_iter().next().unwrap();
    let allowed = dir.path().join("allowed");
    std::fs::create_dir_all(&allowed).unwrap();
    let img = allowed.join("fixed.png");
    std::fs::copy(common::val_image(&id), &img).unwrap();
    let sex = if male { "male" } else { "female" };
    let config = dir.path().join("crash.toml");
    std::fs::write(
        &config,
        format!(
            "[model]\npath = \"{}\"\n[store]\npath = \"results.db\"\n[hot_folder]\nenabled = true\npath = \"inbox\"\nstable_ms = 50\npoll_ms = 20\n[tcp]\nenabled = true\nbind = \"127.0.0.1:0\"\n[protocol]\nallowed_dirs = [\"allowed\"]\n[log]\nlevel = \"warn\"\n",
            common::model_path().display()
        ),
    )
    .unwrap();

    let mut reported: Vec<i64> = Vec::new();
    let mut dropped = 0;
    for cycle in 0..6u64 {
        let (mut child, addr) = start(&config);
        // Hot-folder work in flight too.
        for k in 0..3 {
            std::fs::copy(common::val_image(&id), inbox.join(format!("c{cycle}-{k}.png"))).unwrap();
            std::fs::write(
                inbox.join(format!("c{cycle}-{k}.json")),
                format!("{{\"sex\":\"{sex}\"}}"),
            )
            .unwrap();
            dropped += 1;
        }
        let stream = TcpStream::connect(&addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut writer = stream;
        // Kill after a varying number of replies, mid-stream of requests.
        let kill_after = 3 + (cycle * 7) % 11;
        for n in 0.. {
            writeln!(writer, "ANALYZE sex={sex} path={} id=c{cycle}-{n}", img.display()).unwrap();
            if n == kill_after {
                child.0.kill().unwrap(); // SIGKILL, while a request is in flight
                break;
            }
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            assert_eq!(v["ok"], true, "{v}");
            reported.push(v["result"]["id"].as_i64().unwrap());
        }
        child.0.wait().unwrap();
    }
    // A last clean run lets the hot folder finish whatever the kills interrupted.
    let (child, _) = start(&config);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while std::fs::read_dir(&inbox)
        .unwrap()
        .filter_map(|e| e.ok())
        .any(|e| e.path().extension().is_some_and(|x| x == "png"))
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(child);

    let store = Store::open(&dir.path().join("results.db")).unwrap();
    assert_eq!(store.integrity_check().unwrap(), "ok");
    for id in &reported {
        let r = store.get(*id).unwrap().unwrap_or_else(|| panic!("reported result {id} was lost"));
        assert_eq!(r.status, "ok");
    }
    // Every hot-folder file was analysed exactly once, despite the kills.
    let rows = store.history(100_000).unwrap();
    for cycle in 0..6 {
        for k in 0..3 {
            let name = format!("c{cycle}-{k}.png");
            let n = rows.iter().filter(|r| r.source.ends_with(&name)).count();
            assert_eq!(n, 1, "{name} stored {n} times");
            assert!(
                dir.path().join("inbox/done").join(&name).exists(),
                "{name} not moved to done/"
            );
        }
    }
    eprintln!(
        "{} reported results and {dropped} hot-folder files survived 6 SIGKILLs",
        reported.len()
    );
}
