//! `boneage serve` seen from outside: the protocol over TCP and a serial PTY, the hot
//! folder, bad input, load, and SIGKILL during analyses.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use boneage::config::Config;
use boneage::protocol::COMMANDS;
use boneage::store::Store;
use serde_json::Value;

struct Server {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    dir: tempfile::TempDir,
}

impl Server {
    fn inbox(&self) -> PathBuf {
        self.dir.path().join("inbox")
    }
    fn store(&self) -> Store {
        Store::open(&self.dir.path().join("results.db")).unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn config_in(dir: &Path) -> Config {
    let mut c = Config::builtin().unwrap();
    c.model.path = common::model_path();
    c.store.path = dir.join("results.db");
    c.hot_folder.enabled = true;
    c.hot_folder.path = dir.join("inbox");
    c.hot_folder.stable_ms = 100;
    c.hot_folder.poll_ms = 50;
    c.tcp.enabled = true;
    c.tcp.bind = "127.0.0.1:0".parse().unwrap();
    c.tcp.idle_timeout_s = 30;
    c.protocol.allowed_dirs = vec![dir.join("allowed")];
    c
}

fn start(edit: impl FnOnce(&mut Config)) -> Server {
    start_in(tempfile::tempdir().unwrap(), edit)
}

/// As [`start`], in a folder prepared beforehand (a store, an inbox left by a crash).
fn start_in(dir: tempfile::TempDir, edit: impl FnOnce(&mut Config)) -> Server {
    let mut config = config_in(dir.path());
    edit(&mut config);
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel();
    let s = Arc::clone(&stop);
    let thread = std::thread::spawn(move || {
        boneage::serve::run(&config, s, |r| tx.send(r.tcp_addr).unwrap()).unwrap();
    });
    let addr = rx.recv_timeout(Duration::from_secs(60)).unwrap().unwrap();
    Server { addr, stop, thread: Some(thread), dir }
}

struct Client {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Client {
    fn connect(addr: SocketAddr) -> Client {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        Client { reader: BufReader::new(s.try_clone().unwrap()), writer: s }
    }
    fn send_raw(&mut self, bytes: &[u8]) -> Value {
        self.writer.write_all(bytes).unwrap();
        let mut line = String::new();
        self.reader.read_line(&mut line).unwrap();
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("bad reply {line:?}: {e}"))
    }
    fn send(&mut self, line: &str) -> Value {
        self.send_raw(format!("{line}\n").as_bytes())
    }
}

fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or_else(|| panic!("no error code in {v}"))
}

fn copy_fixture(n: usize, dest: &Path) -> (String, bool) {
    let (id, male, ..) = common::expected().into_iter().nth(n).unwrap();
    std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
    std::fs::copy(common::val_image(&id), dest).unwrap();
    (id, male)
}

#[test]
fn protocol_over_tcp() {
    let server = start(|_| {});
    let mut c = Client::connect(server.addr);
    assert_eq!(c.send("PING")["reply"], "pong");
    assert_eq!(c.send("ping")["ok"], true);
    let idn = c.send("*IDN?");
    assert_eq!(idn["identity"]["vendor"], "boneage");
    assert!(idn["identity"]["model_version"].as_str().unwrap().contains("boneage-lite0"));
    assert_eq!(c.send("VERSION")["identity"], idn["identity"]);
    assert_eq!(c.send("HELP")["commands"].as_array().unwrap().len(), COMMANDS.len());
    let status = c.send("STATUS");
    assert_eq!(status["state"], "ready");
    assert_eq!(status["source"]["camera"]["state"], "none", "{status}");
    assert_eq!(status["display"], "none", "{status}");
    assert_eq!(status["store"], "ok", "{status}");
    assert_eq!(status["clock"], "ok", "{status}");

    let img = server.dir.path().join("allowed/a.png");
    copy_fixture(0, &img);
    let r = c.send(&format!("ANALYZE sex=female age=10y path={} id=EX-1", img.display()));
    assert_eq!(r["ok"], true, "{r}");
    let id = r["result"]["id"].as_i64().unwrap();
    assert!(r["result"]["bone_age_months"].as_f64().unwrap() > 0.0);
    assert_eq!(r["result"]["exam_id"], "EX-1");
    assert_eq!(r["result"]["age_months"].as_f64(), Some(120.0));
    assert_eq!(r["result"]["age_source"], "given");
    assert_eq!(r["result"]["image_sha256"].as_str().unwrap().len(), 64);
    // The spread of the test-time views and its warning are stored with the result
    // (fixture 0 is flagged with the shipped model: SD 8.7 months).
    let sd = common::expected_column("view_sd_tta")[0].3;
    let limit = common::view_spread_warn_months();
    let got = r["result"]["view_spread_months"].as_f64().unwrap();
    assert!((got - sd).abs() < 0.05, "{r}");
    let stored = c.send(&format!("RESULT id={id}"));
    assert_eq!(stored["result"]["view_spread_months"].as_f64(), Some(got), "{stored}");
    assert_eq!(common::warns_views_disagree(&r["result"]), sd >= limit, "{r}");
    assert_eq!(common::warns_views_disagree(&stored["result"]), sd >= limit, "{stored}");
    // So is the interval, widened for a flagged reading.
    let interval = r["result"]["interval95_months"].as_f64().unwrap();
    let flagged_hw = common::view_spread_rule().interval95_months.expect("shipped model has one");
    assert_eq!(interval >= flagged_hw, sd >= limit, "{r}");
    assert_eq!(stored["result"]["interval95_months"].as_f64(), Some(interval), "{stored}");
    assert_eq!(c.send(&format!("RESULT id={id}"))["result"]["id"].as_i64(), Some(id));
    assert_eq!(code(&c.send("RESULT id=999999")), "not_found");
    assert_eq!(c.send("HISTORY limit=5")["results"][0]["id"].as_i64(), Some(id));
    assert_eq!(c.send("STATUS")["last_result_id"].as_i64(), Some(id));

    // The clinical reading travels with the result and is stored with it.
    let r = c.send(&format!("ANALYZE sex=female age=10y height=138.5 path={}", img.display()));
    let res = &r["result"];
    assert!(res["sds"].is_number(), "{r}");
    assert!(["delayed", "normal", "advanced"].contains(&res["category"].as_str().unwrap()), "{r}");
    assert_eq!(res["height_cm"].as_f64(), Some(138.5));
    let explained = res["warnings"].to_string().contains("Bayley-Pinneau");
    assert!(res["adult_height_cm"].as_f64().is_some_and(|h| h > 138.5) || explained, "{r}");
    let stored = c.send(&format!("RESULT id={}", res["id"]));
    assert_eq!(&stored["result"], res);
    assert_eq!(
        code(&c.send(&format!("ANALYZE sex=f height=9 path={}", img.display()))),
        "bad_argument"
    );

    // The quality gate refuses a blank image with a reason, and the refusal is stored.
    let blank = server.dir.path().join("allowed/blank.png");
    image::GrayImage::from_pixel(200, 240, image::Luma([128u8])).save(&blank).unwrap();
    let r = c.send(&format!("ANALYZE sex=m path={}", blank.display()));
    assert_eq!(code(&r), "analysis_failed");
    assert!(r["error"]["message"].as_str().unwrap().contains("quality gate"), "{r}");
    assert_eq!(r["result"]["status"], "error");

    // Failures are stored too, and reported as such.
    let bad = server.dir.path().join("allowed/bad.png");
    std::fs::write(&bad, b"\x89PNG\r\n\x1a\ntruncated").unwrap();
    let r = c.send(&format!("ANALYZE sex=m path={}", bad.display()));
    assert_eq!(r["ok"], false);
    assert_eq!(code(&r), "analysis_failed");
    assert_eq!(r["result"]["status"], "error");
    assert!(server.store().get(r["result"]["id"].as_i64().unwrap()).unwrap().is_some());

    // sex= may be left out when the file says it (DICOM PatientSex); a plain image without
    // it is refused with the fix, and the refusal is stored.
    let dcm = server.dir.path().join("allowed/study.dcm");
    std::fs::copy(common::root().join("samples/1724.dcm"), &dcm).unwrap();
    let r = c.send(&format!("ANALYZE path={}", dcm.display()));
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["result"]["sex"], "male");
    assert_eq!(r["result"]["age_source"], "file_dates");
    let r = c.send(&format!("ANALYZE path={}", img.display()));
    assert_eq!(code(&r), "analysis_failed");
    assert!(r["error"]["message"].as_str().unwrap().contains("give sex=male|female"), "{r}");

    // Outside the allowed folders, or via .. tricks: refused.
    let outside = server.dir.path().join("secret.png");
    copy_fixture(0, &outside);
    assert_eq!(
        code(&c.send(&format!("ANALYZE sex=m path={}", outside.display()))),
        "path_not_allowed"
    );
    let sneaky = format!("{}/allowed/../secret.png", server.dir.path().display());
    assert_eq!(code(&c.send(&format!("ANALYZE sex=m path={sneaky}"))), "path_not_allowed");
    assert_eq!(code(&c.send("ANALYZE sex=m path=/etc/passwd")), "path_not_allowed");
    assert_eq!(code(&c.send("ANALYZE sex=m path=/etc/no-such-file.png")), "path_not_allowed");
    // A typo inside an allowed folder is named as such.
    let typo = server.dir.path().join("allowed/han.png");
    let r = c.send(&format!("ANALYZE sex=m path={}", typo.display()));
    assert_eq!(code(&r), "not_found", "{r}");
    assert!(r["error"]["message"].as_str().unwrap().contains("no such file"), "{r}");
    assert_eq!(code(&c.send("CAPTURE")), "unavailable");
    assert_eq!(code(&c.send("ANALYZE sex=m source=camera")), "unavailable");

    // Malformed input: an error reply each time, and the connection keeps working.
    assert_eq!(code(&c.send("FLY me=moon")), "unknown_command");
    assert_eq!(code(&c.send("ANALYZE path=x.png")), "bad_argument");
    assert_eq!(code(&c.send("ANALYZE source=camera")), "missing_argument");
    assert_eq!(code(&c.send("ANALYZE sex=maybe path=/x")), "bad_argument");
    assert_eq!(code(&c.send_raw(b"\xff\xfe\x00garbage\n")), "not_utf8");
    let long = format!("PING {}\n", "x".repeat(10_000));
    assert_eq!(code(&c.send_raw(long.as_bytes())), "line_too_long");
    assert_eq!(c.send("PING")["reply"], "pong");
    assert_eq!(c.send_raw(b"STATUS\r\n")["ok"], true);
    // The limit (4096 by default) counts the command, not a CRLF ending: a line of exactly
    // 4096 bytes is parsed (and refused for its argument), with either ending.
    let at_limit = format!("PING {}", "x".repeat(4096 - 5));
    assert_eq!(code(&c.send_raw(format!("{at_limit}\r\n").as_bytes())), "bad_argument");
    assert_eq!(code(&c.send_raw(format!("{at_limit}\n").as_bytes())), "bad_argument");
    assert_eq!(code(&c.send_raw(format!("{at_limit}x\r\n").as_bytes())), "line_too_long");
}

#[test]
fn a_resent_request_is_answered_from_the_store() {
    let server = start(|_| {});
    let img = server.dir.path().join("allowed/a.png");
    copy_fixture(1, &img);
    let line = format!("ANALYZE sex=female age=10y path={} id=EX-7", img.display());
    let first = Client::connect(server.addr).send(&line);
    assert_eq!(first["ok"], true, "{first}");
    assert!(first.get("repeat").is_none(), "{first}");
    // The reply was lost with the connection; the client sends the same line again.
    let mut c = Client::connect(server.addr);
    let again = c.send(&line);
    assert_eq!(again["repeat"], true, "{again}");
    assert_eq!(again["result"], first["result"]);
    assert_eq!(server.store().count().unwrap(), 1);
    // Other arguments are another request, and so is the same file changed.
    let older = c.send(&format!("ANALYZE sex=female age=11y path={} id=EX-7", img.display()));
    assert!(older.get("repeat").is_none(), "{older}");
    assert_ne!(older["result"]["id"], first["result"]["id"]);
    copy_fixture(2, &img);
    let changed = c.send(&line);
    assert!(changed.get("repeat").is_none(), "{changed}");
    assert_ne!(changed["result"]["image_sha256"], first["result"]["image_sha256"]);
    // A failure is analysed (and stored) again: the cause may have been fixed meanwhile.
    let no_sex = format!("ANALYZE path={}", img.display());
    let f1 = c.send(&no_sex);
    let f2 = c.send(&no_sex);
    assert_eq!(code(&f2), "analysis_failed");
    assert_ne!(f1["result"]["id"], f2["result"]["id"]);
    assert_eq!(server.store().count().unwrap(), 5);

    // Sent again while the first is still being analysed: the second waits and is the
    // first's repeat, not a second record.
    copy_fixture(3, &img);
    let mut first = Client::connect(server.addr);
    first.writer.write_all(format!("{line}\n").as_bytes()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while c.send("STATUS")["queue"].as_u64() == Some(0) {
        assert!(Instant::now() < deadline, "the first request never started");
        std::thread::sleep(Duration::from_millis(2));
    }
    let second = Client::connect(server.addr).send(&line);
    let mut reply = String::new();
    first.reader.read_line(&mut reply).unwrap();
    let first: Value = serde_json::from_str(&reply).unwrap();
    assert!(first.get("repeat").is_none(), "{first}");
    assert_eq!(second["repeat"], true, "{second}");
    assert_eq!(second["result"]["id"], first["result"]["id"]);
    assert_eq!(server.store().count().unwrap(), 6);
}

#[test]
fn a_store_with_damaged_pages_keeps_serving_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("results.db");
    let store = Store::open(&path).unwrap();
    for i in 0..400 {
        let rec = boneage::store::NewRecord {
            source: format!("/var/lib/boneage/inbox/{i:05}.png"),
            warnings: vec!["w".repeat(200)],
            ..Default::default()
        };
        store.insert(&rec).unwrap();
    }
    drop(store);
    // A power cut tore a page in the middle of the file.
    let mut bytes = std::fs::read(&path).unwrap();
    let page = bytes.len() / 4096 / 2 * 4096;
    bytes[page + 8..page + 2008].fill(0xA5);
    std::fs::write(&path, bytes).unwrap();

    let server = start_in(dir, |_| {});
    let mut c = Client::connect(server.addr);
    let status = c.send("STATUS");
    assert_eq!(status["ok"], true, "{status}");
    let health = status["store"].as_str().unwrap();
    assert!(health.starts_with("damaged: "), "{status}");
    assert_eq!(c.send("PING")["reply"], "pong");
}

#[test]
fn a_refusal_for_unlikeness_is_stored_with_its_score() {
    let server = start(|_| {});
    let (id, ..) = common::expected().into_iter().next().unwrap();
    let radiograph = image::open(common::val_image(&id)).unwrap().to_luma8();
    let blurred = server.dir.path().join("allowed/blurred.png");
    std::fs::create_dir_all(blurred.parent().unwrap()).unwrap();
    image::imageops::blur(&radiograph, 3.0).save(&blurred).unwrap();
    let mut c = Client::connect(server.addr);
    let r = c.send(&format!("ANALYZE sex=male path={}", blurred.display()));
    assert_eq!(code(&r), "analysis_failed", "{r}");
    assert!(r["error"]["message"].as_str().unwrap().contains("unlike the hand radiographs"), "{r}");
    let limit = boneage::model::Model::read_contract(&common::model_path())
        .unwrap()
        .likeness
        .unwrap()
        .threshold;
    let stored = c.send(&format!("RESULT id={}", r["result"]["id"]));
    assert!(stored["result"]["ood_score"].as_f64().unwrap() > limit, "{stored}");
}

/// A framebuffer that is not there at start does not stop the unit; STATUS says why the
/// configured display is blank instead of `none`, as on a unit without one (the service
/// keeps trying to open it).
#[test]
fn a_missing_framebuffer_is_reported_not_fatal() {
    let server = start(|c| {
        c.display.backend = boneage::config::DisplayBackend::Framebuffer;
        c.display.device = PathBuf::from("/dev/no-such-fb9");
    });
    let mut c = Client::connect(server.addr);
    let status = c.send("STATUS");
    assert_eq!(status["state"], "ready", "{status}");
    let display = status["display"].as_str().unwrap_or_default();
    assert!(
        display.starts_with("error: cannot open") && display.contains("no-such-fb9"),
        "{status}"
    );
}

/// A second service on the same store (a terminal run beside the system service) is
/// refused before it loads anything, naming the first one's pid; once the first has
/// stopped, a new one starts.
#[test]
fn a_second_service_on_the_same_store_is_refused() {
    let server = start(|_| {});
    let config = config_in(server.dir.path());
    let stop = Arc::new(AtomicBool::new(false));
    let err = boneage::serve::run(&config, stop, |_| {}).unwrap_err().to_string();
    let pid = std::process::id().to_string();
    assert!(err.contains("another boneage service") && err.contains(&pid), "{err}");
    // Still serving.
    let mut c = Client::connect(server.addr);
    assert_eq!(c.send("PING")["ok"], true);
}

/// The result store reached through a symlinked hot folder: the watcher would move the
/// database away (and a new, empty one would be made at the next start), so the unit
/// refuses to start and says which key to change.
#[test]
fn store_in_the_hot_folder_by_symlink_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config_in(dir.path());
    std::fs::create_dir_all(dir.path().join("data")).unwrap();
    std::os::unix::fs::symlink(dir.path().join("data"), dir.path().join("inbox")).unwrap();
    config.store.path = dir.path().join("data/results.db");
    let stop = Arc::new(AtomicBool::new(false));
    let err = boneage::serve::run(&config, stop, |_| {}).unwrap_err().to_string();
    assert!(err.contains("store.path") && err.contains("lies in the hot folder"), "{err}");
}

#[test]
fn analyze_folder_reaching_the_hot_folder_by_symlink_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config_in(dir.path());
    std::fs::create_dir_all(dir.path().join("inbox")).unwrap();
    std::os::unix::fs::symlink(dir.path().join("inbox"), dir.path().join("req")).unwrap();
    config.protocol.allowed_dirs = vec![dir.path().join("req")];
    let stop = Arc::new(AtomicBool::new(false));
    let err = boneage::serve::run(&config, stop, |_| {}).unwrap_err().to_string();
    assert!(err.contains("overlaps it") && err.contains("req"), "{err}");
}

#[test]
fn loopback_checks_a_token_it_is_sent() {
    // Loopback needs no AUTH, but a wrong token must not be confirmed.
    let server = start(|c| c.tcp.token = "s3cret".into());
    let mut c = Client::connect(server.addr);
    assert_eq!(c.send("STATUS")["ok"], true);
    assert_eq!(code(&c.send("AUTH token=wrong")), "unauthorized");
    // A wrong token ends the connection, loopback too.
    let mut c = Client::connect(server.addr);
    assert_eq!(c.send("AUTH token=s3cret")["authenticated"], true);
}

#[test]
fn shutdown_waits_for_the_analysis_in_progress() {
    let mut server = start(|_| {});
    let img = server.dir.path().join("allowed/t.png");
    copy_fixture(5, &img);
    let mut c = Client::connect(server.addr);
    assert_eq!(c.send("PING")["reply"], "pong", "the connection is being served");
    // Two more commands behind the analysis, in the same write: received, not yet started.
    c.writer
        .write_all(format!("ANALYZE sex=m path={}\nPING\nHISTORY\n", img.display()).as_bytes())
        .unwrap();
    // Stop once the analysis has started: a second client watches STATUS.
    let mut watch = Client::connect(server.addr);
    let deadline = Instant::now() + Duration::from_secs(30);
    while watch.send("STATUS")["state"] != "analysing"
        && server.store().count().unwrap() == 0
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(2));
    }
    // As SIGTERM does: set the flag, and the service returns only when it is safe to exit.
    server.stop.store(true, Ordering::Relaxed);
    let stopped_mid_analysis = server.store().count().unwrap() == 0;
    server.thread.take().unwrap().join().unwrap();
    assert_eq!(server.store().count().unwrap(), 1, "the result was stored before stopping");
    let mut line = String::new();
    c.reader.read_line(&mut line).unwrap();
    assert!(line.contains("\"ok\":true"), "the client got its reply: {line}");
    // The commands behind it are answered, not dropped with the connection: refused
    // without being run when the stop came while the analysis was still running.
    for command in ["PING", "HISTORY"] {
        let mut line = String::new();
        c.reader.read_line(&mut line).unwrap();
        let reply: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line:?}: {e}"));
        if stopped_mid_analysis {
            assert_eq!(code(&reply), "unavailable", "{command}: {line}");
            assert!(line.contains("send it again"), "{line}");
        } else {
            assert!(reply["ok"] == true || code(&reply) == "unavailable", "{command}: {line}");
        }
    }
    let mut rest = String::new();
    assert_eq!(c.reader.read_line(&mut rest).unwrap(), 0, "then the connection closes: {rest}");
}

#[test]
fn public_bind_requires_auth() {
    // Bound to all interfaces: a token is required before anything but PING/HELP/AUTH.
    let server = start(|c| {
        c.tcp.bind = "0.0.0.0:0".parse().unwrap();
        c.tcp.token = "correct-horse".into();
        c.tcp.auth_timeout_s = 2;
    });
    let addr: SocketAddr = format!("127.0.0.1:{}", server.addr.port()).parse().unwrap();
    let mut c = Client::connect(addr);
    assert_eq!(c.send("PING")["ok"], true);
    assert_eq!(code(&c.send("STATUS")), "unauthorized");
    assert_eq!(c.send("AUTH token=correct-horse")["authenticated"], true);
    assert_eq!(c.send("STATUS")["ok"], true);
    // Authenticated: the deadline no longer applies.
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(c.send("PING")["ok"], true);

    // A stranger that never authenticates is told why and closed, keeping no slot.
    let mut idle = Client::connect(addr);
    assert_eq!(idle.send("PING")["ok"], true);
    let mut line = String::new();
    idle.reader.read_line(&mut line).unwrap();
    let reply: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(code(&reply), "unauthorized", "{reply}");
    assert!(reply["error"]["message"].as_str().unwrap().contains("within 2 s"), "{reply}");
    line.clear();
    assert_eq!(idle.reader.read_line(&mut line).unwrap(), 0, "closed");
}

/// Strangers on a public address that connect and never AUTH hold their slot only until
/// someone else needs it (after a 1 s grace), not for the whole `auth_timeout_s`: an
/// authorised client still gets in, and is itself never made to give way.
#[test]
fn strangers_make_room_for_an_authorised_client() {
    let server = start(|c| {
        c.tcp.bind = "0.0.0.0:0".parse().unwrap();
        c.tcp.token = "correct-horse".into();
        c.tcp.auth_timeout_s = 60;
        c.tcp.max_connections = 2;
    });
    let addr: SocketAddr = format!("127.0.0.1:{}", server.addr.port()).parse().unwrap();
    let mut first = Client::connect(addr);
    let mut second = Client::connect(addr);
    assert_eq!(first.send("PING")["ok"], true);
    assert_eq!(second.send("PING")["ok"], true);
    std::thread::sleep(Duration::from_millis(1200));
    // The slots are full; the oldest stranger is told why and closed.
    let mut me = Client::connect(addr);
    assert_eq!(me.send("AUTH token=correct-horse")["authenticated"], true);
    assert_eq!(me.send("STATUS")["ok"], true);
    let mut line = String::new();
    first.reader.read_line(&mut line).unwrap();
    let reply: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line:?}: {e}"));
    assert_eq!(code(&reply), "unauthorized", "{reply}");
    assert!(line.contains("to make room"), "{line}");
    line.clear();
    assert_eq!(first.reader.read_line(&mut line).unwrap(), 0, "closed: {line}");
    assert_eq!(second.send("PING")["ok"], true, "the younger stranger keeps its slot");

    // Once the second authenticates, both slots are authorised: a newcomer is refused,
    // not let in at their expense.
    assert_eq!(second.send("AUTH token=correct-horse")["authenticated"], true);
    std::thread::sleep(Duration::from_millis(1200));
    let mut late = Client::connect(addr);
    let reply = late.send("PING");
    assert_eq!(code(&reply), "unavailable", "{reply}");
    assert_eq!(me.send("PING")["ok"], true);
    assert_eq!(second.send("PING")["ok"], true);
}

#[test]
fn connection_limit_and_half_open_clients() {
    let server = start(|c| c.tcp.max_connections = 2);
    // Two idle, half-open clients hold the slots...
    let a = TcpStream::connect(server.addr).unwrap();
    let b = TcpStream::connect(server.addr).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    // ...a third is told why and closed, and the service is not blocked.
    // (It sends at once, as clients do: the reply must still arrive whole, not as a reset.)
    let mut third = Client::connect(server.addr);
    third.writer.write_all(b"PING\nSTATUS\n").unwrap();
    let mut line = String::new();
    third.reader.read_line(&mut line).unwrap();
    let reply: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line:?}: {e}"));
    assert_eq!(code(&reply), "unavailable");
    assert!(line.contains("too many connections"), "{line}");
    drop((a, b));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(Client::connect(server.addr).send("PING")["reply"], "pong");
}

#[test]
fn a_file_that_kept_stopping_the_service_is_stored_as_failed_with_its_sidecar() {
    let server = start(|_| {});
    let inbox = server.inbox();
    // As left behind by three processes that died analysing it.
    std::fs::create_dir_all(inbox.join(".attempts")).unwrap();
    std::fs::write(inbox.join(".attempts/poison.png"), "3").unwrap();
    std::fs::write(inbox.join("poison.json"), r#"{"sex":"f","id":"HF-9"}"#).unwrap();
    copy_fixture(3, &inbox.join("poison.png"));
    let deadline = Instant::now() + Duration::from_secs(30);
    while !inbox.join("failed/poison.png").exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let rows = server.store().history(10).unwrap();
    assert_eq!(rows.len(), 1, "{rows:#?}");
    assert_eq!(rows[0].status, "error");
    assert_eq!(rows[0].exam_id.as_deref(), Some("HF-9"), "the sidecar's facts are kept");
    assert!(rows[0].error.as_deref().unwrap().contains("set aside"), "{:?}", rows[0]);
    assert!(inbox.join("failed/poison.json").exists(), "the sidecar goes with its image");
    assert!(!inbox.join("poison.json").exists());
    assert!(!inbox.join(".attempts/poison.png").exists());
}

/// A hot folder that goes away (an unplugged stick) and comes back is watched again
/// without a restart; meanwhile the service keeps running.
#[test]
fn hot_folder_that_goes_away_is_watched_again_when_back() {
    let server = start(|_| {});
    let inbox = server.inbox();
    std::thread::sleep(Duration::from_millis(300));
    std::fs::remove_dir_all(&inbox).unwrap();
    // Longer than a retry, so the unreadable folder has been met at least once.
    std::thread::sleep(Duration::from_secs(3));
    std::fs::create_dir_all(&inbox).unwrap();
    std::fs::copy(common::root().join("samples/1724.dcm"), inbox.join("after.dcm")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while server.store().count().unwrap() < 1 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let rows = server.store().history(10).unwrap();
    assert_eq!(rows.len(), 1, "{rows:#?}");
    assert_eq!(rows[0].status, "ok", "{:?}", rows[0]);
    assert!(rows[0].source.ends_with("after.dcm"), "{:?}", rows[0]);
}

#[test]
fn hot_folder_analyses_each_file_once_and_sorts_failures() {
    let screen = std::env::temp_dir().join(format!("boneage-screen-{}.png", std::process::id()));
    let png = screen.clone();
    let server = start(move |c| {
        c.display.backend = boneage::config::DisplayBackend::Png;
        c.display.png_path = png;
    });
    let inbox = server.inbox();
    let (_, male) = copy_fixture(1, &inbox.join("with-sidecar.png"));
    std::fs::write(
        inbox.join("with-sidecar.json"),
        format!(r#"{{"sex":"{}","age":"9y","id":"HF-1"}}"#, if male { "m" } else { "f" }),
    )
    .unwrap();
    copy_fixture(2, &inbox.join("no-sex.png"));
    std::fs::write(inbox.join("corrupt.png"), b"not an image").unwrap();
    std::fs::copy(common::root().join("samples/1724.dcm"), inbox.join("study.dcm")).unwrap();
    // An in-progress copy is left alone.
    std::fs::write(inbox.join("incoming.png.part"), b"...").unwrap();

    let deadline = Instant::now() + Duration::from_secs(60);
    while server.store().count().unwrap() < 4 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(500));
    let store = server.store();
    let rows = store.history(100).unwrap();
    assert_eq!(rows.len(), 4, "{rows:#?}");
    let by = |name: &str| {
        rows.iter().find(|r| r.source.ends_with(name)).unwrap_or_else(|| panic!("{name}"))
    };
    assert_eq!(by("with-sidecar.png").status, "ok");
    assert_eq!(by("with-sidecar.png").exam_id.as_deref(), Some("HF-1"));
    assert_eq!(by("study.dcm").status, "ok");
    assert_eq!(by("study.dcm").sex.as_deref(), Some("male"));
    assert_eq!(by("study.dcm").exam_id.as_deref(), Some("RSNA1724"));
    assert_eq!(by("study.dcm").patient_id.as_deref(), Some("SAMPLE-1724"));
    assert!(by("no-sex.png").error.as_deref().unwrap().contains("sex unknown"));
    assert!(by("corrupt.png").error.as_deref().unwrap().contains("not a supported image"));
    assert!(inbox.join("done/with-sidecar.png").exists());
    assert!(inbox.join("done/with-sidecar.json").exists());
    assert!(inbox.join("done/study.dcm").exists());
    let why = std::fs::read_to_string(inbox.join("failed/no-sex.png.error.txt")).unwrap();
    // The fix named is the hot folder's own (a sidecar), not a protocol argument.
    assert!(why.contains("write no-sex.json with {\"sex\""), "{why}");
    assert!(inbox.join("failed/corrupt.png.error.txt").exists());
    assert!(inbox.join("incoming.png.part").exists());
    // The PNG display shows the last screen (a result or an error) at the configured size.
    let shot = image::open(&screen).unwrap();
    assert_eq!((shot.width(), shot.height()), (800, 480));
    let _ = std::fs::remove_file(&screen);
    drop(store);

    // Dropped again with the same sidecar: the stored result answers (what makes a restart
    // safe). With a corrected sidecar: analysed again. A bad sidecar: stored as a failure.
    let drop_in = |name: &str, sidecar: &str| {
        copy_fixture(1, &inbox.join(format!("{name}.png")));
        std::fs::write(inbox.join(format!("{name}.json")), sidecar).unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        while inbox.join(format!("{name}.png")).exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        server.store().history(100).unwrap()
    };
    let sex = if male { "m" } else { "f" };
    let same = format!(r#"{{"sex":"{sex}","age":"9y","id":"HF-1"}}"#);
    assert_eq!(drop_in("with-sidecar", &same).len(), 4);
    let corrected = format!(r#"{{"sex":"{sex}","age":"9y6m","id":"HF-1"}}"#);
    let rows = drop_in("with-sidecar", &corrected);
    assert_eq!(rows.len(), 5);
    assert_eq!(rows[0].age_months, Some(114.0), "{:?}", rows[0]);
    let rows = drop_in("bad-sidecar", r#"{"weight":3}"#);
    assert_eq!(rows.len(), 6);
    assert!(rows[0].error.as_deref().unwrap().contains("weight"), "{:?}", rows[0]);
    assert!(inbox.join("failed/bad-sidecar.png.error.txt").exists());
    // A failed file dropped again is a new attempt (the cause may have been fixed).
    assert_eq!(drop_in("bad-sidecar", r#"{"weight":3}"#).len(), 7);
}

#[test]
fn a_failure_stored_before_a_crash_is_not_stored_again() {
    // The service stored this file's failure, then died before moving it to failed/.
    let dir = tempfile::tempdir().unwrap();
    let inbox = dir.path().join("inbox");
    std::fs::create_dir_all(&inbox).unwrap();
    let img = inbox.join("no-sex.png");
    copy_fixture(2, &img);
    let sha = {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(std::fs::read(&img).unwrap());
        digest.iter().map(|b| format!("{b:02x}")).collect::<String>()
    };
    std::thread::sleep(Duration::from_millis(20));
    let earlier = Store::open(&dir.path().join("results.db"))
        .unwrap()
        .insert(&boneage::store::NewRecord {
            source: format!("hot-folder:{}", img.display()),
            image_sha256: sha,
            error: Some(format!("{}: patient sex unknown", img.display())),
            // Only the running model's outcome answers.
            model: boneage::model::Model::read_contract(&common::model_path()).unwrap().model_id(),
            ..Default::default()
        })
        .unwrap();
    let server = start_in(dir, |_| {});
    let deadline = Instant::now() + Duration::from_secs(30);
    while !inbox.join("failed/no-sex.png").exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(inbox.join("failed/no-sex.png").exists());
    let rows = server.store().history(10).unwrap();
    assert_eq!(rows, vec![earlier], "the stored failure answers; no second record");
}

#[test]
fn serial_line_over_a_pty() {
    use serialport::SerialPort;
    let (mut master, slave) = serialport::TTYPort::pair().unwrap();
    let name = slave.name().unwrap();
    let server = start(move |c| {
        c.serial.enabled = true;
        c.serial.device = PathBuf::from(&name);
        c.serial.baud = 115_200;
    });
    master.set_timeout(Duration::from_secs(30)).unwrap();
    let mut reader = BufReader::new(master.try_clone_native().unwrap());
    let mut ask = |line: &str| -> Value {
        master.write_all(format!("{line}\r\n").as_bytes()).unwrap();
        master.flush().unwrap();
        let mut reply = String::new();
        reader.read_line(&mut reply).unwrap();
        serde_json::from_str(reply.trim()).unwrap_or_else(|e| panic!("bad reply {reply:?}: {e}"))
    };
    // The port may take a moment to open on the service side.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(ask("PING")["reply"], "pong");
    assert_eq!(ask("*IDN?")["identity"]["vendor"], "boneage");
    assert_eq!(ask("bogus")["error"]["code"], "unknown_command");
    let img = server.dir.path().join("allowed/s.png");
    copy_fixture(3, &img);
    let r = ask(&format!("ANALYZE sex=f path={}", img.display()));
    assert_eq!(r["ok"], true, "{r}");
    assert!(r["result"]["source"].as_str().unwrap().starts_with("serial:"));
    drop(slave);
}

#[test]
fn docs_list_exactly_the_implemented_commands() {
    let doc = std::fs::read_to_string(common::root().join("docs/protocol.md")).unwrap();
    let documented: Vec<&str> =
        doc.lines().filter_map(|l| l.strip_prefix("### ")).map(str::trim).collect();
    let implemented: Vec<&str> = COMMANDS.iter().map(|c| c.name).collect();
    assert_eq!(documented, implemented, "docs/protocol.md headings vs protocol::COMMANDS");
    for c in COMMANDS {
        assert!(
            doc.contains(&format!("`{}", c.syntax.split_whitespace().next().unwrap())),
            "{}",
            c.name
        );
        assert!(
            boneage::protocol::parse(c.name).map_or_else(|e| e.code != "unknown_command", |_| true),
            "{}",
            c.name
        );
    }
}

/// 50 concurrent clients x 200 requests (every 10th an ANALYZE): no errors, and every
/// result id a client was given is in the store. Throughput and p95 go to stderr for
/// docs/benchmarks.md; nothing here asserts on time.
#[test]
fn load_50_clients_200_requests() {
    // One view per reading: this measures the protocol and the store under load, and five
    // views would only multiply the inference time (docs/benchmarks.md has both).
    let server = start(|c| {
        c.tcp.max_connections = 64;
        c.model.tta = false;
    });
    let img = server.dir.path().join("allowed/load.png");
    copy_fixture(4, &img);
    let t0 = Instant::now();
    let handles: Vec<_> = (0..50)
        .map(|k| {
            let (addr, img) = (server.addr, img.clone());
            std::thread::spawn(move || {
                let mut c = Client::connect(addr);
                let (mut ids, mut lat) = (Vec::new(), Vec::new());
                for i in 0..200 {
                    let line = match (i + k) % 10 {
                        0 => format!("ANALYZE sex=male path={} id=L{k}-{i}", img.display()),
                        1 => "STATUS".to_string(),
                        2 => "HISTORY limit=3".to_string(),
                        _ => "PING".to_string(),
                    };
                    let t = Instant::now();
                    let r = c.send(&line);
                    lat.push(t.elapsed());
                    assert_eq!(r["ok"], true, "{line}: {r}");
                    if let Some(id) = r["result"]["id"].as_i64() {
                        ids.push(id);
                    }
                }
                (ids, lat)
            })
        })
        .collect();
    let (mut ids, mut lat) = (Vec::new(), Vec::new());
    for h in handles {
        let (i, l) = h.join().unwrap();
        ids.extend(i);
        lat.extend(l);
    }
    let wall = t0.elapsed();
    assert_eq!(ids.len(), 1000);
    let store = server.store();
    for id in &ids {
        assert!(store.get(*id).unwrap().is_some(), "result {id} missing from the store");
    }
    lat.sort();
    eprintln!(
        "load: 10000 requests (1000 ANALYZE) in {:.1} s = {:.0} req/s; p50 {:.1} ms, p95 {:.1} ms",
        wall.as_secs_f64(),
        10_000.0 / wall.as_secs_f64(),
        lat[lat.len() / 2].as_secs_f64() * 1e3,
        lat[lat.len() * 95 / 100].as_secs_f64() * 1e3
    );
}

#[test]
fn a_configuration_that_serves_nothing_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config_in(dir.path());
    config.tcp.enabled = false;
    config.hot_folder.enabled = false;
    let stop = Arc::new(AtomicBool::new(false));
    let err = boneage::serve::run(&config, stop, |_| panic!("must not start")).unwrap_err();
    assert!(err.to_string().contains("nothing to serve"), "{err}");
    assert!(!dir.path().join("results.db").exists(), "refused before creating anything");
}

/// Terminal programs (PuTTY, screen, minicom) send a bare CR on Enter: it ends a line, and a
/// CRLF still gets exactly one reply.
#[test]
fn cr_ends_a_line_as_terminals_send_it() {
    let server = start(|_| {});
    let mut c = Client::connect(server.addr);
    assert_eq!(c.send_raw(b"PING\r")["reply"], "pong");
    // The next reply is STATUS's own: the commands did not merge, and no extra reply is
    // pending from the CR.
    assert_eq!(c.send_raw(b"STATUS\r")["state"], "ready");
    assert_eq!(c.send_raw(b"PING\r\n")["reply"], "pong");
    assert!(c.send_raw(b"HISTORY limit=1\r")["results"].is_array(), "one reply per CRLF");
    // Several in one write, mixed endings: one reply each, in order.
    c.writer.write_all(b"PING\rVERSION\r\nHELP\n\r\r\nSTATUS\r").unwrap();
    let mut next = || {
        let mut line = String::new();
        c.reader.read_line(&mut line).unwrap();
        serde_json::from_str::<Value>(&line).unwrap_or_else(|e| panic!("{line:?}: {e}"))
    };
    assert_eq!(next()["reply"], "pong");
    assert_eq!(next()["identity"]["vendor"], "boneage");
    assert!(next()["commands"].is_array());
    assert_eq!(next()["state"], "ready");
    // A too-long line ended by a bare CR is answered once, and the connection goes on.
    let long = format!("PING {}\r", "x".repeat(10_000));
    assert_eq!(code(&c.send_raw(long.as_bytes())), "line_too_long");
    assert_eq!(c.send_raw(b"PING\r")["reply"], "pong");
}

/// A wrong token is answered, after a pause, and the connection is then closed: a guesser
/// gets one try per connection and per second, not thousands.
#[test]
fn a_wrong_token_is_answered_then_the_connection_is_closed() {
    let server = start(|c| {
        c.tcp.bind = "0.0.0.0:0".parse().unwrap();
        c.tcp.token = "correct-horse".into();
    });
    let addr: SocketAddr = format!("127.0.0.1:{}", server.addr.port()).parse().unwrap();
    let mut c = Client::connect(addr);
    assert_eq!(c.send("PING")["ok"], true);
    // A command sent right behind the guess is not run: the reply is the last line, and
    // it arrives whole (a FIN, not a reset) although the server had unread input.
    let t = Instant::now();
    c.writer.write_all(b"AUTH token=wrong-horse\nSTATUS\n").unwrap();
    let mut line = String::new();
    c.reader.read_line(&mut line).unwrap();
    let took = t.elapsed();
    let reply: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line:?}: {e}"));
    assert_eq!(code(&reply), "unauthorized", "{reply}");
    let message = reply["error"]["message"].as_str().unwrap();
    assert!(message.contains("wrong token") && message.contains("connection closed"), "{reply}");
    assert!(message.contains("[tcp] token"), "names the fix: {reply}");
    assert!(took >= Duration::from_millis(900), "a wrong token costs a pause: {took:?}");
    line.clear();
    assert_eq!(c.reader.read_line(&mut line).unwrap(), 0, "then closed: {line}");
    // The right token on a new connection still works.
    let mut c = Client::connect(addr);
    assert_eq!(c.send("AUTH token=correct-horse")["authenticated"], true);
    assert_eq!(c.send("STATUS")["ok"], true);
}

/// Stops `server` and hands back its folder (store, inbox) for a next start.
fn stop_keeping_folder(mut server: Server) -> tempfile::TempDir {
    server.stop.store(true, Ordering::Relaxed);
    if let Some(t) = server.thread.take() {
        t.join().unwrap();
    }
    std::mem::replace(&mut server.dir, tempfile::tempdir().unwrap())
}

/// Waits until `name` has left the inbox (analysed and moved), then returns the history.
fn dropped_and_moved(server: &Server, name: &str) -> Vec<boneage::store::Record> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while server.inbox().join(name).exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!server.inbox().join(name).exists(), "{name} was not taken");
    server.store().history(100).unwrap()
}

/// The same file dropped again is answered from the store only if the stored result was
/// made by this model with these settings: a result stored with the quality gate off is
/// not handed out once the gate is on (the gate refuses the image), nor a failure stored
/// by another model.
#[test]
fn a_result_stored_under_other_settings_is_not_reused_for_the_same_file() {
    let server = start(|c| c.quality.enabled = false);
    let (id, male, ..) = common::expected().into_iter().next().unwrap();
    let mut inverted = image::open(common::val_image(&id)).unwrap().to_luma8();
    image::imageops::invert(&mut inverted);
    let sidecar = format!(r#"{{"sex":"{}"}}"#, if male { "m" } else { "f" });
    let drop_in = |server: &Server| {
        let inbox = server.inbox();
        std::fs::write(inbox.join("inv.json"), &sidecar).unwrap();
        inverted.save(inbox.join(".inv.png")).unwrap();
        std::fs::rename(inbox.join(".inv.png"), inbox.join("inv.png")).unwrap();
        dropped_and_moved(server, "inv.png")
    };
    let rows = drop_in(&server);
    assert_eq!(rows.len(), 1, "{rows:#?}");
    assert_eq!(rows[0].status, "ok", "gate off: {:?}", rows[0]);
    // Same settings: the stored result answers (what makes a restart safe).
    assert_eq!(drop_in(&server).len(), 1);

    // The gate back on: the same file is read afresh, and refused.
    let server = start_in(stop_keeping_folder(server), |_| {});
    let rows = drop_in(&server);
    assert_eq!(rows.len(), 2, "{rows:#?}");
    assert_eq!(rows[0].status, "error", "{:?}", rows[0]);
    assert!(rows[0].error.as_deref().unwrap().contains("quality gate"), "{:?}", rows[0]);
    assert!(server.inbox().join("failed/inv.png").exists());
    assert!(server.inbox().join("failed/inv.json").exists());

    // A failure stored by another model for this very drop (a crash before the move) is
    // not this model's answer either: analysed again.
    let dir = stop_keeping_folder(server);
    let inbox = dir.path().join("inbox");
    let img = inbox.join("no-sex.png");
    copy_fixture(2, &img);
    let sha = {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(std::fs::read(&img).unwrap());
        digest.iter().map(|b| format!("{b:02x}")).collect::<String>()
    };
    std::thread::sleep(Duration::from_millis(20));
    Store::open(&dir.path().join("results.db"))
        .unwrap()
        .insert(&boneage::store::NewRecord {
            source: format!("hot-folder:{}", img.display()),
            image_sha256: sha,
            error: Some(format!("{}: patient sex unknown", img.display())),
            model: "an older model v0".into(),
            ..Default::default()
        })
        .unwrap();
    let server = start_in(dir, |_| {});
    let rows = dropped_and_moved(&server, "no-sex.png");
    assert_eq!(rows.len(), 4, "{rows:#?}");
    assert_ne!(rows[0].model, "an older model v0", "{:?}", rows[0]);
}

/// A hot folder that cannot be created at start (a USB stick not plugged in at boot) does
/// not stop the unit: the protocol is served, and the folder is watched once it can be
/// made.
#[test]
fn a_hot_folder_missing_at_start_does_not_stop_the_unit() {
    let dir = tempfile::tempdir().unwrap();
    // A file where the folder's parent should be: it cannot be created.
    let stick = dir.path().join("stick");
    std::fs::write(&stick, b"").unwrap();
    let inbox = stick.join("inbox");
    let path = inbox.clone();
    let server = start_in(dir, move |c| c.hot_folder.path = path);
    let mut c = Client::connect(server.addr);
    assert_eq!(c.send("STATUS")["state"], "ready");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(c.send("PING")["reply"], "pong", "still serving");
    // The stick arrives.
    std::fs::remove_file(&stick).unwrap();
    std::fs::create_dir(&stick).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !inbox.join("done").is_dir() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(inbox.join("done").is_dir() && inbox.join("failed").is_dir());
    std::fs::copy(common::root().join("samples/1724.dcm"), inbox.join("late.dcm")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !inbox.join("done/late.dcm").exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let rows = server.store().history(10).unwrap();
    assert_eq!(rows.len(), 1, "{rows:#?}");
    assert_eq!(rows[0].status, "ok", "{:?}", rows[0]);
}

/// The config file is never taken as an image: an empty hot-folder path (the config's own
/// folder) or `.` is refused naming the key, and a hot folder reaching the config's folder
/// through a symbolic link is refused at start, the config left where it is.
#[test]
fn the_config_file_is_never_taken_by_the_hot_folder() {
    let dir = tempfile::tempdir().unwrap();
    let etc = dir.path().join("etc");
    std::fs::create_dir_all(&etc).unwrap();
    let unit = etc.join("unit.toml");
    for path in ["", "."] {
        std::fs::write(&unit, format!("[hot_folder]\nenabled = true\npath = \"{path}\"\n"))
            .unwrap();
        let e = Config::load(&unit).unwrap_err().to_string();
        assert!(e.contains("`hot_folder.path`") && e.contains("unit.toml"), "{path:?}: {e}");
        assert!(e.contains("/var/lib/boneage/inbox"), "names the fix: {e}");
    }
    // Disabled, an empty path harms nothing.
    std::fs::write(&unit, "[hot_folder]\nenabled = false\npath = \"\"\n").unwrap();
    Config::load(&unit).unwrap();

    let mut config = config_in(dir.path());
    config.file = unit.clone();
    std::os::unix::fs::symlink(&etc, dir.path().join("inbox")).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let err = boneage::serve::run(&config, stop, |_| {}).unwrap_err().to_string();
    assert!(err.contains("the config file") && err.contains("lies in the hot folder"), "{err}");
    assert!(unit.exists());
}

/// A display that fails to draw (here a PNG screen whose folder is missing, as a
/// framebuffer whose driver was rebound) is opened again and the screen it missed drawn
/// within the retry period once it can be, without waiting for the next event; STATUS says
/// the error meanwhile.
#[test]
fn a_screen_that_failed_to_draw_is_drawn_once_the_display_works_again() {
    let dir = tempfile::tempdir().unwrap();
    let screens = dir.path().join("screens");
    let png = screens.join("screen.png");
    let shown = png.clone();
    let server = start_in(dir, move |c| {
        c.display.backend = boneage::config::DisplayBackend::Png;
        c.display.png_path = shown;
    });
    let mut client = Client::connect(server.addr);
    let status = client.send("STATUS");
    assert!(status["display"].as_str().unwrap().starts_with("error: cannot write"), "{status}");
    assert!(!png.exists());
    std::fs::create_dir_all(&screens).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !png.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(png.exists(), "the idle screen was not drawn after the folder appeared");
    assert_eq!(client.send("STATUS")["display"], "ok");
}
