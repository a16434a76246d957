//! Every shipped example config must load: a renamed or removed key, or a new validation
//! rule, must not leave a file in firmware-config/ that stops a unit at start-up.

mod common;

use boneage::config::{CameraPixelFormat, Config, DisplayBackend};

#[test]
fn every_firmware_config_loads() {
    let dir = common::root().join("firmware-config");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    let failures: Vec<String> = files
        .iter()
        .filter_map(|p| Config::load(p).err().map(|e| format!("{}: {e}", p.display())))
        .collect();
    assert!(failures.is_empty(), "example configs that do not load:\n{}", failures.join("\n"));
    let names: Vec<_> =
        files.iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
    for expected in ["default.toml", "field-clinic.toml", "headless.toml", "kiosk.toml"] {
        assert!(names.iter().any(|n| n == expected), "{expected} missing from {names:?}");
    }
}

#[test]
fn kiosk_has_camera_panel_and_loopback_tcp() {
    let c = Config::load(&common::root().join("firmware-config/kiosk.toml")).unwrap();
    assert!(c.camera.enabled);
    assert_eq!(c.camera.pixel_format, CameraPixelFormat::Mjpeg);
    assert_eq!(c.display.backend, DisplayBackend::Framebuffer);
    assert!(c.tcp.enabled && c.tcp.bind.ip().is_loopback());
    assert!(c.protocol.allowed_dirs.iter().any(|d| c.camera.captures_dir.starts_with(d)));
}
