//! The clinical reading end to end: SDS and category, adult height, the quality gate and
//! the one-page PDF/PNG report. Predictions are not hard-coded (the model will change);
//! tests check the arithmetic against the numbers the binary itself reports.

mod common;

use common::*;

fn first() -> (String, bool) {
    let e = expected().into_iter().next().unwrap();
    (e.0, e.1)
}

fn sex_of(male: bool) -> &'static str {
    if male {
        "male"
    } else {
        "female"
    }
}

#[test]
fn json_carries_sds_category_and_adult_height() {
    let (id, male) = first();
    let img = val_image(&id);
    let out = boneage(&[
        "predict",
        "--json",
        path_str(&img),
        "--sex",
        sex_of(male),
        "--age",
        "10y",
        "--height",
        "140",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v = &json_lines(&out)[0];
    let ba = v["bone_age_months"].as_f64().unwrap();
    let sd = v["sd_months"].as_f64().unwrap();
    // Greulich-Pyle SD at exactly 10 years: 9.79 boys, 11.73 girls.
    assert_eq!(sd, if male { 9.79 } else { 11.73 });
    let sds = v["sds"].as_f64().unwrap();
    assert!((sds - (ba - 120.0) / sd).abs() < 1e-9, "{v}");
    let cat = v["category"].as_str().unwrap();
    let want = if sds < -2.0 {
        "delayed"
    } else if sds > 2.0 {
        "advanced"
    } else {
        "normal"
    };
    assert_eq!(cat, want);
    match v.get("adult_height") {
        Some(h) => {
            let pct = h["percent_of_mature_height"].as_f64().unwrap();
            assert!(
                (h["predicted_cm"].as_f64().unwrap() - 140.0 / (pct / 100.0)).abs() < 1e-9,
                "{h}"
            );
            assert!(["average", "accelerated", "retarded"].contains(&h["table"].as_str().unwrap()));
        }
        None => {
            let w = v["warnings"].to_string();
            assert!(w.contains("Bayley-Pinneau"), "no height and no warning: {v}");
        }
    }

    let out = boneage(&["predict", path_str(&img), "--sex", sex_of(male), "--age", "10y"]);
    let text = stdout(&out);
    assert!(text.contains("SDS") && text.contains(cat), "{text}");
}

#[test]
fn thresholds_come_from_the_config() {
    let (id, male) = first();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    // Any non-zero SDS is outside +-0.001.
    std::fs::write(
        &cfg,
        format!(
            "[model]\npath = \"{}\"\n[reading]\ndelayed_below_sds = -0.001\nadvanced_above_sds = 0.001\n",
            path_str(&model_path())
        ),
    )
    .unwrap();
    let out = boneage(&[
        "--config",
        path_str(&cfg),
        "predict",
        "--json",
        path_str(&val_image(&id)),
        "--sex",
        sex_of(male),
        "--age",
        "120",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v = &json_lines(&out)[0];
    let want = if v["sds"].as_f64().unwrap() < 0.0 { "delayed" } else { "advanced" };
    assert_eq!(v["category"], want, "{v}");
}

#[test]
fn age_outside_the_reference_is_a_warning_not_an_sds() {
    let (id, male) = first();
    let out = boneage(&[
        "predict",
        "--json",
        path_str(&val_image(&id)),
        "--sex",
        sex_of(male),
        "--age",
        "1",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v = &json_lines(&out)[0];
    assert!(v.get("sds").is_none(), "{v}");
    assert!(v["warnings"].to_string().contains("outside the Greulich-Pyle reference"), "{v}");
}

#[test]
fn bad_height_is_a_usage_error() {
    let (id, ..) = first();
    let out = boneage(&["predict", path_str(&val_image(&id)), "--sex", "f", "--height", "1.4"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("centimetres"), "{}", stderr(&out));
}

/// A config in `dir` for the shipped model with the quality gate off.
fn gate_off_config(dir: &std::path::Path) -> std::path::PathBuf {
    let cfg = dir.join("off.toml");
    let text =
        format!("[model]\npath = \"{}\"\n[quality]\nenabled = false\n", path_str(&model_path()));
    std::fs::write(&cfg, text).unwrap();
    cfg
}

/// The JSON reading of `image` (as a girl's) with the quality gate off.
fn gate_off_reading(dir: &std::path::Path, image: &std::path::Path) -> serde_json::Value {
    let cfg = gate_off_config(dir);
    let out =
        boneage(&["--config", path_str(&cfg), "predict", "--json", "--sex", "f", path_str(image)]);
    assert!(out.status.success(), "gate off, {}: {}", image.display(), stderr(&out));
    json_lines(&out).remove(0)
}

#[test]
fn quality_gate_rejects_with_a_reason_and_can_be_disabled() {
    let (id, male) = first();
    let dir = tempfile::tempdir().unwrap();
    let blank = dir.path().join("blank.png");
    image::GrayImage::from_pixel(300, 300, image::Luma([128])).save(&blank).unwrap();
    let inverted = dir.path().join("inverted.png");
    let mut img = image::open(val_image(&id)).unwrap().to_luma8();
    image::imageops::invert(&mut img);
    img.save(&inverted).unwrap();
    let good = val_image(&id);

    let out = boneage(&[
        "predict",
        "--json",
        "--sex",
        sex_of(male),
        path_str(&blank),
        path_str(&inverted),
        path_str(&good),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "{}: rejected by the quality gate: image is almost uniform",
            blank.display()
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!("{}: rejected by the quality gate", inverted.display())),
        "{err}"
    );
    let lines = json_lines(&out);
    assert!(lines[0]["error"].as_str().unwrap().contains("check exposure"));
    assert!(lines[2]["bone_age_months"].is_number(), "the good image is still analysed");

    let cfg = gate_off_config(dir.path());
    let out = boneage(&["--config", path_str(&cfg), "predict", "--sex", "f", path_str(&blank)]);
    assert!(out.status.success(), "gate off: {}", stderr(&out));
}

#[test]
fn the_model_refuses_images_unlike_its_training_radiographs() {
    let (id, male) = first();
    let rule = boneage::model::Model::read_contract(&model_path())
        .unwrap()
        .likeness
        .expect("the shipped model has the likeness score");
    let dir = tempfile::tempdir().unwrap();
    // Two inputs the global intensity checks let through: the fixture blurred (a motion-
    // blurred or heavily smoothed exposure), and a smooth grey pattern.
    let radiograph = image::open(val_image(&id)).unwrap().to_luma8();
    let blurred = dir.path().join("blurred.png");
    image::imageops::blur(&radiograph, 3.0).save(&blurred).unwrap();
    let pattern = dir.path().join("pattern.png");
    image::GrayImage::from_fn(256, 256, |x, y| {
        let (u, v) = (x as f32 / 255.0, y as f32 / 255.0);
        let w = (10.0 * std::f32::consts::PI * u).sin() * (10.0 * std::f32::consts::PI * v).sin();
        image::Luma([((0.35 + 0.25 * w) * 255.0) as u8])
    })
    .save(&pattern)
    .unwrap();
    // And the radiograph upside down, which the likeness score alone often lets through.
    let turned = dir.path().join("turned.png");
    image::imageops::rotate180(&radiograph).save(&turned).unwrap();
    for unlike in [&blurred, &pattern, &turned] {
        let img = boneage::source::read_file(unlike).unwrap();
        assert!(boneage::quality::check_radiograph(&img).is_ok(), "{}", unlike.display());
    }
    let good = val_image(&id);
    let out = boneage(&[
        "predict",
        "--json",
        "--sex",
        sex_of(male),
        path_str(&blurred),
        path_str(&pattern),
        path_str(&good),
        path_str(&turned),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    let want = format!(
        "{}: rejected by the quality gate: the image looks turned: it resembles the training \
         radiographs only after half a turn",
        turned.display()
    );
    assert!(err.contains(&want), "{err}");
    for unlike in [&blurred, &pattern] {
        let want = format!(
            "{}: rejected by the quality gate: the image is unlike the hand radiographs",
            unlike.display()
        );
        assert!(err.contains(&want), "{err}");
    }
    let lines = json_lines(&out);
    let score = lines[2]["ood_score"].as_f64().expect("the reading carries its score");
    assert!(score > 0.0 && score <= rule.threshold, "{}", lines[2]);

    // With the gate off the reading is given, with the score and a warning.
    let v = &gate_off_reading(dir.path(), &pattern);
    assert!(v["ood_score"].as_f64().unwrap() > rule.threshold, "{v}");
    assert!(v["warnings"].to_string().contains("unlike the hand radiographs"), "{v}");
}

#[test]
fn a_hand_that_looks_like_a_right_hand_carries_a_warning() {
    let rule = boneage::model::Model::read_contract(&model_path()).unwrap().likeness.unwrap();
    assert!(rule.mirror_margin.is_some(), "the shipped model has ood.mirror_margin");
    // Fixture 1478 (female): mirrored, it scores 0.22 lower than as given, over the margin
    // (about 70% of the fixtures' mirrored copies do; models/README.md).
    let upright = val_image("1478");
    let dir = tempfile::tempdir().unwrap();
    let mirrored = dir.path().join("right-hand.png");
    image::imageops::flip_horizontal(&image::open(&upright).unwrap().to_luma8())
        .save(&mirrored)
        .unwrap();
    let out =
        boneage(&["predict", "--json", "--sex", "f", path_str(&upright), path_str(&mirrored)]);
    assert!(out.status.success(), "{}", stderr(&out));
    let lines = json_lines(&out);
    let warned = |v: &serde_json::Value| v["warnings"].to_string().contains("looks mirrored");
    assert!(!warned(&lines[0]), "the left hand as given: {}", lines[0]);
    assert!(warned(&lines[1]), "its mirror image: {}", lines[1]);
    assert_eq!(
        lines[1]["warnings"][0].as_str(),
        Some(boneage::report::MIRRORED_WARNING),
        "an image warning comes before the reading's own: {}",
        lines[1]
    );
    // The check is part of the quality gate: off, no extra pass and no warning.
    assert!(!warned(&gate_off_reading(dir.path(), &mirrored)), "gate off");
}

/// Checks the PDF's structure: header, every cross-reference entry pointing at its
/// object, a trailer with a catalog, and the end marker.
fn assert_valid_pdf(bytes: &[u8]) {
    assert!(bytes.starts_with(b"%PDF-"), "header");
    // Binary streams become '?' so that text offsets stay byte offsets (xref needs them).
    let text: String = bytes.iter().map(|&b| if b.is_ascii() { b as char } else { '?' }).collect();
    assert!(text.trim_end().ends_with("%%EOF"), "end marker");
    let sx = text.rfind("startxref").expect("startxref");
    let xref_at: usize = text[sx + 9..].split_whitespace().next().unwrap().parse().unwrap();
    assert!(text[xref_at..].starts_with("xref"), "startxref points at the xref table");
    let mut lines = text[xref_at..].lines().skip(1);
    let mut head = lines.next().unwrap().split_whitespace().map(|n| n.parse::<usize>().unwrap());
    let (start, count) = (head.next().unwrap(), head.next().unwrap());
    assert!(count >= 7, "catalog, pages, page, 2 fonts, image, content: {count}");
    for (i, entry) in lines.by_ref().take(count).enumerate() {
        let f: Vec<&str> = entry.split_whitespace().collect();
        if f[2] == "n" {
            let off: usize = f[0].parse().unwrap();
            let want = format!("{} 0 obj", start + i);
            assert!(text[off..].starts_with(&want), "object {} at {off}", start + i);
        }
    }
    let trailer = &text[xref_at..sx];
    assert!(trailer.contains("trailer") && trailer.contains("/Root"), "trailer with a catalog");
    assert!(text.contains("/Type /Catalog") && text.contains("/Type /Page"), "catalog and page");
}

#[test]
fn pdf_and_png_reports() {
    let (id, male) = first();
    let dir = tempfile::tempdir().unwrap();
    let pdf = dir.path().join("report.pdf");
    let img = val_image(&id);
    let out = boneage(&[
        "predict",
        "--json",
        path_str(&img),
        "--sex",
        sex_of(male),
        "--age",
        "10y4m",
        "--height",
        "140",
        "--id",
        "EXAM-0042",
        "--report",
        path_str(&pdf),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v = &json_lines(&out)[0];
    assert_eq!(v["id"], "EXAM-0042");
    let bytes = std::fs::read(&pdf).unwrap();
    assert_valid_pdf(&bytes);
    let text = String::from_utf8_lossy(&bytes);
    let ba = v["bone_age_months"].as_f64().unwrap();
    for needle in [
        "EXAM-0042".to_string(),
        format!("{ba:.1} months"),
        format!("{:+.2}", v["sds"].as_f64().unwrap()),
        v["category"].as_str().unwrap().to_string(),
        format!("{:.1}", v["interval95_months"].as_f64().unwrap()),
        "124.0 months), as given".to_string(),
        "Not a certified medical device.".to_string(),
        "boneage-lite0 v".to_string(),
        sex_of(male).to_string(),
    ] {
        assert!(text.contains(&needle), "PDF lacks {needle:?}");
    }
    if let Some(h) = v.get("adult_height") {
        assert!(text.contains(&format!("{:.1} cm", h["predicted_cm"].as_f64().unwrap())));
    }
    assert!(text.contains("/Subtype /Image"), "thumbnail");

    let png = dir.path().join("report.png");
    let out =
        boneage(&["predict", path_str(&img), "--sex", sex_of(male), "--report", path_str(&png)]);
    assert!(out.status.success(), "{}", stderr(&out));
    let page = image::open(&png).unwrap().to_luma8();
    assert!(page.width() >= 600 && page.height() > page.width());
    let dark = page.pixels().filter(|p| p.0[0] < 128).count();
    assert!(dark > 2000, "text and thumbnail drawn: {dark} dark pixels");

    let out = boneage(&[
        "predict",
        path_str(&img),
        path_str(&img),
        "--sex",
        "f",
        "--report",
        path_str(&png),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let out = boneage(&[
        "predict",
        path_str(&img),
        "--sex",
        "f",
        "--report",
        &format!("{}/r.docx", dir.path().display()),
    ]);
    // Refused before any analysis: a usage error, not a failed image.
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains(".pdf or .png"), "{}", stderr(&out));

    // A folder that exists but takes no files (sysfs refuses even root) is found out before
    // the analysis too, so no reading is printed and then reported as failed.
    let out = boneage(&["predict", path_str(&img), "--sex", "f", "--report", "/sys/r.pdf"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("/sys/r.pdf"), "{}", stderr(&out));
    assert!(out.stdout.is_empty(), "no reading before the refusal");

    // Written through a temporary file that is renamed: nothing else is left in the folder.
    let mut names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["report.pdf", "report.png"]);
}

/// A copy of the shipped model in `dir` with metadata bytes replaced (`from` and `to` of
/// equal length, so the protobuf stays valid).
fn patched_model(dir: &std::path::Path, edits: &[(&[u8], &[u8])]) -> std::path::PathBuf {
    let mut bytes = std::fs::read(model_path()).unwrap();
    for (from, to) in edits {
        assert_eq!(from.len(), to.len());
        let at = bytes.windows(from.len()).position(|w| w == *from).unwrap();
        bytes[at..at + to.len()].copy_from_slice(to);
    }
    let path = dir.join("patched.onnx");
    std::fs::write(&path, bytes).unwrap();
    path
}

/// Metadata saying 128 px over a graph made for 100 px once loaded and read 65.0 instead
/// of 69.5 months without a word: refused at load, naming the keys, the graph's shape and
/// what to do.
#[test]
fn a_model_whose_metadata_disagrees_with_its_graph_is_refused() {
    let (id, male) = first();
    let dir = tempfile::tempdir().unwrap();
    let model = patched_model(
        dir.path(),
        &[
            (b"preprocess.width\x12\x03100", b"preprocess.width\x12\x03128"),
            (b"preprocess.height\x12\x03100", b"preprocess.height\x12\x03128"),
        ],
    );
    let img = val_image(&id);
    let out =
        boneage(&["--model", path_str(&model), "predict", "--sex", sex_of(male), path_str(&img)]);
    assert!(!out.status.success());
    assert!(out.stdout.is_empty(), "no reading: {}", stdout(&out));
    let err = stderr(&out);
    for part in [
        "does not follow the boneage contract",
        "graph input `image` is declared as float32 [1, 1, 100, 100]",
        "preprocess.height 128, preprocess.width 128",
        "re-export the model",
    ] {
        assert!(err.contains(part), "{part:?} not in {err}");
    }
}

/// A view-spread rule without the views it is about: the model once read one view and
/// never flagged anything. Refused at load, naming the missing key.
#[test]
fn a_view_spread_rule_without_views_is_refused() {
    let (id, male) = first();
    let dir = tempfile::tempdir().unwrap();
    let model =
        patched_model(dir.path(), &[(b"preprocess.tta_shifts_px", b"preprocess.tta_shifts_xx")]);
    let img = val_image(&id);
    let out =
        boneage(&["--model", path_str(&model), "predict", "--sex", sex_of(male), path_str(&img)]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("metadata key `preprocess.tta_shifts_px` is missing"), "{err}");
}

/// An RGB float TIFF with one NaN pixel once read 60.5 instead of 65.1 months with the
/// quality gate off and no warning. Float TIFFs (grey ones already were) are refused with
/// the gate on or off, saying how to export the image instead.
#[test]
fn floating_point_tiffs_are_refused_with_or_without_the_gate() {
    use tiff::encoder::{colortype::RGB32Float, TiffEncoder};
    let (id, male) = first();
    let dir = tempfile::tempdir().unwrap();
    let grey = image::open(val_image(&id)).unwrap().to_luma8();
    let (w, h) = grey.dimensions();
    let mut rgb: Vec<f32> = grey.pixels().flat_map(|p| [f32::from(p[0]) / 255.0; 3]).collect();
    let centre = ((h / 2 * w + w / 2) * 3) as usize;
    rgb[centre] = f32::NAN;
    let tif = dir.path().join("nan.tif");
    let mut file = std::fs::File::create(&tif).unwrap();
    TiffEncoder::new(&mut file).unwrap().write_image::<RGB32Float>(w, h, &rgb).unwrap();
    drop(file);
    let cfg = gate_off_config(dir.path());
    for with_gate in [true, false] {
        let mut args = vec!["predict", "--sex", sex_of(male), path_str(&tif)];
        if !with_gate {
            args.splice(0..0, ["--config", path_str(&cfg)]);
        }
        let out = boneage(&args);
        assert_eq!(out.status.code(), Some(1), "gate {with_gate}: {}", stdout(&out));
        let err = stderr(&out);
        assert!(
            err.contains("floating-point") && err.contains("export it as an 8- or 16-bit"),
            "gate {with_gate}: {err}"
        );
    }
}

/// The same refusal from ONNX Runtime, which reads the declared shapes itself (and would
/// otherwise fail only at the first inference, with a message about dimensions).
#[cfg(feature = "ort")]
#[test]
fn ort_refuses_a_model_whose_metadata_disagrees_with_its_graph() {
    assert!(
        std::env::var_os("ORT_DYLIB_PATH").is_some_and(|p| !p.is_empty()),
        "ORT_DYLIB_PATH is not set, and the `ort` feature's tests need ONNX Runtime: run \
         scripts/test-ort.sh"
    );
    let (id, male) = first();
    let dir = tempfile::tempdir().unwrap();
    let model = patched_model(
        dir.path(),
        &[(b"preprocess.channels\x12\x011", b"preprocess.channels\x12\x013")],
    );
    let cfg = dir.path().join("ort.toml");
    let text = format!(
        "[model]\npath = \"{}\"\nbackend = \"ort\"\nexecution_providers = [\"cpu\"]\n",
        path_str(&model)
    );
    std::fs::write(&cfg, text).unwrap();
    let img = val_image(&id);
    let out =
        boneage(&["--config", path_str(&cfg), "predict", "--sex", sex_of(male), path_str(&img)]);
    assert!(!out.status.success());
    let err = stderr(&out);
    for part in [
        "graph input `image` is declared as float32 [1, 1, 100, 100]",
        "(preprocess.channels 3, preprocess.height 100, preprocess.width 100) needs float32 [1, 3, 100, 100]",
        "re-export the model",
    ] {
        assert!(err.contains(part), "{part:?} not in {err}");
    }
}
