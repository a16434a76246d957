//! Shared helpers for the end-to-end tests: the built binary, the shipped model, fixtures.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The shipped model, the one `predict` uses by default.
pub fn model_path() -> PathBuf {
    root().join("models/boneage-lite0.onnx")
}

pub fn fixtures() -> PathBuf {
    root().join("tests/fixtures")
}

/// (id, male, label, reading) per fixture, where reading is what the default configuration
/// reports: the test-time-augmented prediction (`pred_tta`).
pub fn expected() -> Vec<(String, bool, f64, f64)> {
    expected_column("pred_tta")
}

/// As [`expected`], with the reference value from `column` of val/expected.csv
/// (`pred_pytorch`: one view, PyTorch; `pred_tta`: mean over the test-time views;
/// `view_sd_tta`: their standard deviation).
pub fn expected_column(column: &str) -> Vec<(String, bool, f64, f64)> {
    let text = std::fs::read_to_string(fixtures().join("val/expected.csv")).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let k = header.iter().position(|h| *h == column).unwrap_or_else(|| panic!("no {column}"));
    lines
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (f[0].to_string(), f[1] == "true", f[2].parse().unwrap(), f[k].parse().unwrap())
        })
        .collect()
}

pub fn val_image(id: &str) -> PathBuf {
    fixtures().join("val/images").join(format!("{id}.png"))
}

/// Runs the boneage binary from the repository root (where the default config finds the model).
pub fn boneage(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_boneage"))
        .args(args)
        .current_dir(root())
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn json_lines(o: &Output) -> Vec<serde_json::Value> {
    stdout(o).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

pub fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The shipped model's rule for readings whose test-time views disagree.
pub fn view_spread_rule() -> boneage::model::ViewSpreadRule {
    boneage::model::Model::read_contract(&model_path())
        .unwrap()
        .view_spread
        .expect("shipped model has a view-spread rule")
}

/// The shipped model's view-spread warning threshold (months).
pub fn view_spread_warn_months() -> f64 {
    view_spread_rule().warn_from_months
}

/// Whether a JSON reading or stored result carries the "views disagree" warning.
pub fn warns_views_disagree(v: &serde_json::Value) -> bool {
    v["warnings"].as_array().is_some_and(|w| {
        w.iter().any(|w| w.as_str().unwrap().contains("views of this image disagree"))
    })
}
