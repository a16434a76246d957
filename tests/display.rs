//! Golden-image tests of the kiosk screens.
//!
//! Each screen is rendered through the PNG backend at 320x240 and 800x480 and compared
//! pixel for pixel (decoded pixels, not PNG bytes) with `tests/fixtures/display/*.png`.
//! After an intended change, regenerate with `BONEAGE_UPDATE_GOLDEN=1 cargo test --test
//! display`, then look at every changed image before committing it. On a mismatch the
//! rendered image is kept in `target/display-actual/` for comparison.

mod common;

use std::path::PathBuf;

use boneage::display::{PngBackend, ResultView, Screen};
use boneage::Sex;

const SIZES: [(u32, u32); 2] = [(320, 240), (800, 480)];

fn golden_dir() -> PathBuf {
    common::fixtures().join("display")
}

fn result_view() -> ResultView {
    let radiograph =
        boneage::source::read_file(&common::fixtures().join("val/images/10022.png")).unwrap();
    ResultView {
        bone_age_months: 124.4,
        sex: Sex::Female,
        interval95_months: Some(14.2),
        chronological_age_months: Some(116.0),
        difference_months: Some(8.4),
        category: Some("within the normal range".into()),
        adult_height_cm: Some(163.4),
        patient_id: Some("PAT-0001234567".into()),
        exam_id: Some("1.2.840.113619.2.55.3.604688119.969.1268071029.320".into()),
        thumbnail: Some(radiograph.pixels),
        warnings: vec!["bone age 124.4 months is outside the range the model was trained on \
                        (130-228 months): treat it as unreliable"
            .into()],
    }
}

fn screens() -> Vec<(&'static str, Screen)> {
    vec![
        (
            "ready",
            Screen::Ready {
                device_name: "boneage-kiosk-radiology-2".into(),
                model_version: "boneage-lite0 2025-11-20 (sha256 3f9a1c)".into(),
                status_lines: vec![
                    "tcp 0.0.0.0:7878, 192.168.10.42".into(),
                    "serial /dev/ttyUSB0 115200 baud".into(),
                ],
            },
        ),
        ("capturing", Screen::Capturing { source: "/var/lib/boneage/inbox/10022.png".into() }),
        ("analysing", Screen::Analysing { source: "/var/lib/boneage/inbox/10022.png".into() }),
        ("result", Screen::Result(Box::new(result_view()))),
        (
            // More warnings than fit, no id: the first ones shortened, the rest counted.
            "result-warnings",
            Screen::Result(Box::new(ResultView {
                patient_id: None,
                exam_id: None,
                category: Some("SDS -2.44: delayed".into()),
                adult_height_cm: None,
                warnings: vec![
                    "sex female was given but the file says male (PatientSex): the reading \
                     uses female; check that this is the right patient"
                        .into(),
                    "chronological age 0 y 10 m was given but the file says 11 y 6 m: the \
                     reading uses 0 y 10 m; check that this is the right patient"
                        .into(),
                    "the category \"delayed\" is uncertain: over the bone age's 95% interval \
                     (110-139 months) the SDS runs from -3.1 to -0.9"
                        .into(),
                    "the test-time views of this image disagree (SD 5.0 months)".into(),
                    "no adult height prediction: the chronological age is needed".into(),
                ],
                ..result_view()
            })),
        ),
        (
            "error",
            Screen::Error {
                what: "Cannot read /var/lib/boneage/inbox/scan-0042.dcm: no PatientSex tag".into(),
                action: "Send the image again with the sex (male or female), or enter it on \
                         the kiosk. The file was moved to rejected/."
                    .into(),
            },
        ),
    ]
}

/// Renders `screen` at `size` through the PNG backend and checks it against its golden.
fn check(name: &str, screen: &Screen, (w, h): (u32, u32)) -> Result<(), String> {
    let file = format!("{name}-{w}x{h}.png");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join(&file);
    let mut png = PngBackend::new(&out, w, h);
    png.show(screen).unwrap();
    let golden = golden_dir().join(&file);
    if std::env::var_os("BONEAGE_UPDATE_GOLDEN").is_some_and(|v| v == "1") {
        std::fs::create_dir_all(golden_dir()).unwrap();
        std::fs::copy(&out, &golden).unwrap();
        return Ok(());
    }
    let got = image::open(&out).unwrap().to_rgb8();
    let want = match image::open(&golden) {
        Ok(img) => img.to_rgb8(),
        Err(e) => return Err(format!("{file}: no golden ({e}); run with BONEAGE_UPDATE_GOLDEN=1")),
    };
    if got.dimensions() != want.dimensions() {
        return Err(format!("{file}: size {:?}, golden {:?}", got.dimensions(), want.dimensions()));
    }
    let differing = got.pixels().zip(want.pixels()).filter(|(a, b)| a != b).count();
    if differing > 0 {
        let keep = common::root().join("target/display-actual");
        std::fs::create_dir_all(&keep).unwrap();
        std::fs::copy(&out, keep.join(&file)).unwrap();
        return Err(format!(
            "{file}: {differing} pixels differ from the golden; rendered image kept in {}",
            keep.join(&file).display()
        ));
    }
    Ok(())
}

#[test]
fn screens_match_golden_images() {
    let mut failures = Vec::new();
    for (name, screen) in screens() {
        for size in SIZES {
            if let Err(e) = check(name, &screen, size) {
                failures.push(e);
            }
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

/// Odd inputs must still draw: empty strings, huge text, no optional facts, a wide
/// thumbnail, ages outside the accepted range, and the smallest configurable screen.
#[test]
fn degenerate_inputs_draw_without_panicking() {
    let long = "x".repeat(5000);
    let screens = [
        Screen::Ready {
            device_name: String::new(),
            model_version: long.clone(),
            status_lines: vec![long.clone(); 50],
        },
        Screen::Capturing { source: long.clone() },
        Screen::Error { what: long.clone(), action: String::new() },
        Screen::Result(Box::new(ResultView {
            bone_age_months: -3.0,
            sex: Sex::Male,
            interval95_months: None,
            chronological_age_months: Some(400.0),
            difference_months: None,
            category: Some(long.clone()),
            adult_height_cm: Some(1e9),
            patient_id: None,
            exam_id: None,
            thumbnail: Some(boneage::source::GrayImage::new(3000, 1)),
            warnings: vec![long.clone(); 20],
        })),
    ];
    let dir = tempfile::tempdir().unwrap();
    for (w, h) in [(160, 120), (320, 240), (800, 480), (1920, 1080)] {
        let mut png = PngBackend::new(dir.path().join("s.png"), w, h);
        for screen in &screens {
            png.show(screen).unwrap();
        }
    }
}
