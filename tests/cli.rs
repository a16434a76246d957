//! `boneage predict`, `eval`, `model-info` and config handling, end to end on the binary.

mod common;

use common::*;
use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::{FileMetaTableBuilder, InMemDicomObject};
use std::path::Path;

/// The first fixture: (id, male, label, PyTorch prediction).
fn first() -> (String, bool, f64, f64) {
    expected().into_iter().next().unwrap()
}

fn predict_json(args: &[&str]) -> (std::process::Output, Vec<serde_json::Value>) {
    let mut all = vec!["predict", "--json"];
    all.extend_from_slice(args);
    let out = boneage(&all);
    let lines = json_lines(&out);
    (out, lines)
}

fn months(v: &serde_json::Value) -> f64 {
    v["bone_age_months"].as_f64().unwrap_or_else(|| panic!("no bone_age_months in {v}"))
}

#[test]
fn predict_png_text_and_json() {
    let (id, male, _, torch) = first();
    let sex = if male { "male" } else { "female" };
    let img = val_image(&id);
    let out = boneage(&["predict", path_str(&img), "--sex", sex, "--age", "10y4m"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("bone age") && text.contains(" y ") && text.contains("chronological 124.0"),
        "{text}"
    );

    let (out, lines) = predict_json(&[path_str(&img), "--sex", sex, "--age", "124"]);
    assert!(out.status.success());
    let v = &lines[0];
    assert!((months(v) - torch).abs() < 0.1, "{v}");
    assert_eq!(v["sex"], sex);
    assert_eq!(v["image"], path_str(&img));
    assert!(v["model"].as_str().unwrap().starts_with("boneage-lite0 v"));
    assert!((v["difference_months"].as_f64().unwrap() - (torch - 124.0)).abs() < 0.1);
    assert!(v["interval95_months"].as_f64().unwrap() > 0.0);
}

#[test]
fn missing_sex_is_an_error_not_a_default() {
    let (id, ..) = first();
    let out = boneage(&["predict", path_str(&val_image(&id))]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("sex unknown") && err.contains("--sex"), "{err}");
    assert!(stdout(&out).is_empty());
}

#[test]
fn bad_flag_values_are_explained() {
    let (id, ..) = first();
    let out = boneage(&["predict", path_str(&val_image(&id)), "--sex", "yes"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("use male or female"), "{}", stderr(&out));
    let out = boneage(&["predict", path_str(&val_image(&id)), "--sex", "f", "--age", "ten"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("10y4m"), "{}", stderr(&out));
}

#[test]
fn sixteen_bit_and_jpeg_give_the_same_reading() {
    let (id, male, _, torch) = first();
    let sex = if male { "male" } else { "female" };
    let dir = tempfile::tempdir().unwrap();
    let gray = image::open(val_image(&id)).unwrap().to_luma8();
    let wide = image::ImageBuffer::<image::Luma<u16>, Vec<u16>>::from_fn(
        gray.width(),
        gray.height(),
        |x, y| image::Luma([u16::from(gray.get_pixel(x, y)[0]) * 257]),
    );
    let p16 = dir.path().join("wide.png");
    wide.save(&p16).unwrap();
    let rgb = image::DynamicImage::ImageLuma8(gray.clone()).to_rgb8();
    let pjpg = dir.path().join("color.jpg");
    let mut f = std::fs::File::create(&pjpg).unwrap();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut f, 95).encode_image(&rgb).unwrap();
    let pbig = dir.path().join("big.tif");
    image::imageops::resize(&gray, 400, 500, image::imageops::FilterType::CatmullRom)
        .save(&pbig)
        .unwrap();

    let (out, lines) =
        predict_json(&[path_str(&p16), path_str(&pjpg), path_str(&pbig), "--sex", sex]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!((months(&lines[0]) - torch).abs() < 0.1, "16-bit: {}", lines[0]);
    assert!(months(&lines[1]).is_finite(), "JPEG decodes: {}", lines[1]);
    // A JPEG file is lossy by its format, and the reading says so with its quality; the
    // lossless PNG and TIFF readings do not.
    let warnings = |v: &serde_json::Value| v["warnings"].to_string();
    assert!(
        warnings(&lines[1]).contains("lossy compression (JPEG, quality about 95)"),
        "{}",
        lines[1]
    );
    assert!(!warnings(&lines[0]).contains("lossy") && !warnings(&lines[2]).contains("lossy"));
    // A 4-5x bicubic up-then-down round trip blurs the image; the v1.0.0 model moves by
    // ~10 months on fixture 1381 (55.9 -> 46.3): a measured sensitivity, see models/README.md.
    assert!((months(&lines[2]) - torch).abs() < 12.0, "upscaled TIFF: {}", lines[2]);
}

/// Known issue: a JPEG (quality 95) of a 100x100 fixture moves the estimate by ~18 months
/// (v1.2.0, 5 views: 65.1 -> 83.5 for fixture 1381; v1.0.0: 55.9 -> 73.3). It is the model's
/// sensitivity to 8x8-block artefacts at this size, not the decoder: PIL's codec in Python
/// gives the same over the whole validation split (models/README.md, "Robustness": 1.6 months
/// on average at quality 95, up to 25). Run on demand (`cargo test -- --ignored`) until a
/// model passes it.
#[test]
#[ignore = "known issue: JPEG artefacts on 100 px images shift the estimate (see comment)"]
fn jpeg_matches_png_within_three_months() {
    let (id, male, _, torch) = first();
    let dir = tempfile::tempdir().unwrap();
    let gray = image::open(val_image(&id)).unwrap().to_luma8();
    let pjpg = dir.path().join("gray.jpg");
    let mut f = std::fs::File::create(&pjpg).unwrap();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut f, 95).encode_image(&gray).unwrap();
    let (_, lines) =
        predict_json(&[path_str(&pjpg), "--sex", if male { "male" } else { "female" }]);
    assert!((months(&lines[0]) - torch).abs() < 3.0, "JPEG q95: {}", lines[0]);
}

#[test]
fn corrupt_inputs_fail_alone_and_are_named() {
    let (id, ..) = first();
    let dir = tempfile::tempdir().unwrap();
    let good = val_image(&id);
    let bytes = std::fs::read(&good).unwrap();
    let truncated = dir.path().join("truncated.png");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let empty = dir.path().join("empty.png");
    std::fs::write(&empty, b"").unwrap();
    let text = dir.path().join("notes.png");
    std::fs::write(&text, b"this is not an image at all").unwrap();
    let missing = dir.path().join("missing.png");
    let tiny = dir.path().join("tiny.png");
    image::GrayImage::new(8, 8).save(&tiny).unwrap();
    // A JPEG cut off at 60%, as an interrupted copy leaves it: its decoder would fill the
    // rest with grey and succeed.
    let cut = dir.path().join("cut.jpg");
    let mut jpeg = Vec::new();
    let gray = image::open(&good).unwrap().to_luma8();
    let big = image::imageops::resize(&gray, 400, 400, image::imageops::FilterType::Triangle);
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 90).encode_image(&big).unwrap();
    std::fs::write(&cut, &jpeg[..jpeg.len() * 6 / 10]).unwrap();

    // A DICOM file whose pixel data fragment claims about 4 GB, as one corrupted length
    // field makes it: refused before the parser reserves that memory.
    let damaged = dir.path().join("damaged.dcm");
    let mut dicom = std::fs::read(fixtures().join("dicom/jls-lossless.dcm")).unwrap();
    let item: &[u8] = &[0xFE, 0xFF, 0x00, 0xE0];
    let items: Vec<usize> =
        dicom.windows(4).enumerate().filter(|(_, w)| *w == item).map(|(i, _)| i).collect();
    let fragment = items[1]; // after the basic offset table
    dicom[fragment + 4..fragment + 8].copy_from_slice(&0xF000_0000u32.to_le_bytes());
    std::fs::write(&damaged, &dicom).unwrap();

    let paths = [&truncated, &empty, &text, &missing, &tiny, &cut, &damaged, &good];
    let mut args: Vec<&str> = vec!["predict", "--json", "--sex", "female"];
    args.extend(paths.iter().map(|p| path_str(p)));
    let out = boneage(&args);
    assert_eq!(out.status.code(), Some(1), "some inputs failed");
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 8);
    let err = stderr(&out);
    for (p, why) in [
        (&truncated, "corrupt or truncated PNG"),
        (&empty, "file is empty"),
        (&text, "not a supported image"),
        (&missing, "cannot read file"),
        (&tiny, "image is 8x8 px"),
        (&cut, "corrupt or truncated JPEG image: no end-of-image marker"),
        (&damaged, "DICOM file unusable: element (FFFE,E000) at byte"),
    ] {
        assert!(err.contains(&format!("{}: {why}", p.display())), "{why}: {err}");
    }
    assert!(err.contains("declares 4026531840 bytes but only"), "{err}");
    assert!(lines[7]["bone_age_months"].is_number(), "the good image is still analysed");
    assert!(err.contains("7 of 8 images failed"));
}

#[test]
fn an_overexposed_radiograph_is_refused_with_what_to_do() {
    // Fixture 1618 with its pixel values tripled and clipped (a wrong window): 41% of the
    // image's central half is burnt-out white, 12% of the whole image.
    let dir = tempfile::tempdir().unwrap();
    let mut burnt = image::open(val_image("1618")).unwrap().to_luma8();
    burnt.pixels_mut().for_each(|p| p.0[0] = p.0[0].saturating_mul(3));
    let path = dir.path().join("burnt.png");
    burnt.save(&path).unwrap();
    let out = boneage(&["predict", "--sex", "f", path_str(&val_image("1618")), path_str(&path)]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("burnt.png") && err.contains("where the hand is"), "{err}");
    assert!(err.contains("re-export with the full grey range"), "{err}");
    assert!(!err.contains("1618.png"), "the radiograph as given is read: {err}");
    assert_eq!(
        stdout(&out).lines().filter(|l| l.contains("bone age")).count(),
        1,
        "{}",
        stdout(&out)
    );
}

/// A 16-bit DICOM of a fixture image, with optional inversion, rescale and patient tags.
fn write_dicom(
    path: &Path,
    id: &str,
    monochrome1: bool,
    slope: f64,
    tags_: &[(dicom_core::Tag, &str)],
) {
    let gray = image::open(val_image(id)).unwrap().to_luma8();
    save_dicom(dicom_of(&gray, monochrome1, slope, tags_), path);
}

/// The object [`write_dicom`] writes, for tests that change it further.
fn dicom_of(
    gray: &image::GrayImage,
    monochrome1: bool,
    slope: f64,
    tags_: &[(dicom_core::Tag, &str)],
) -> InMemDicomObject {
    let (w, h) = gray.dimensions();
    // Stored values chosen so that after slope, the display range is 0..65535 * (v / 255).
    let pixels: Vec<u16> = gray
        .pixels()
        .map(|p| {
            let v = f64::from(p[0]) * 257.0;
            let v = if monochrome1 { 65535.0 - v } else { v };
            (v / slope).round() as u16
        })
        .collect();
    let mut obj = InMemDicomObject::new_empty();
    let put = |obj: &mut InMemDicomObject, tag, vr, value: PrimitiveValue| {
        obj.put(DataElement::new(tag, vr, value));
    };
    put(
        &mut obj,
        tags::SOP_CLASS_UID,
        VR::UI,
        PrimitiveValue::from(uids::DIGITAL_X_RAY_IMAGE_STORAGE_FOR_PRESENTATION),
    );
    put(&mut obj, tags::SOP_INSTANCE_UID, VR::UI, PrimitiveValue::from("2.25.1234"));
    put(&mut obj, tags::MODALITY, VR::CS, PrimitiveValue::from("DX"));
    put(&mut obj, tags::SAMPLES_PER_PIXEL, VR::US, PrimitiveValue::from(1u16));
    let pi = if monochrome1 { "MONOCHROME1" } else { "MONOCHROME2" };
    put(&mut obj, tags::PHOTOMETRIC_INTERPRETATION, VR::CS, PrimitiveValue::from(pi));
    put(&mut obj, tags::ROWS, VR::US, PrimitiveValue::from(h as u16));
    put(&mut obj, tags::COLUMNS, VR::US, PrimitiveValue::from(w as u16));
    put(&mut obj, tags::BITS_ALLOCATED, VR::US, PrimitiveValue::from(16u16));
    put(&mut obj, tags::BITS_STORED, VR::US, PrimitiveValue::from(16u16));
    put(&mut obj, tags::HIGH_BIT, VR::US, PrimitiveValue::from(15u16));
    put(&mut obj, tags::PIXEL_REPRESENTATION, VR::US, PrimitiveValue::from(0u16));
    put(&mut obj, tags::RESCALE_SLOPE, VR::DS, PrimitiveValue::from(format!("{slope}")));
    put(&mut obj, tags::RESCALE_INTERCEPT, VR::DS, PrimitiveValue::from("0"));
    put(&mut obj, tags::WINDOW_CENTER, VR::DS, PrimitiveValue::from("32768"));
    put(&mut obj, tags::WINDOW_WIDTH, VR::DS, PrimitiveValue::from("65536"));
    for (tag, value) in tags_ {
        let vr = if [
            tags::PATIENT_SEX,
            tags::PHOTOMETRIC_INTERPRETATION,
            tags::PRESENTATION_LUT_SHAPE,
            tags::PRESENTATION_INTENT_TYPE,
            tags::MODALITY,
            tags::BODY_PART_EXAMINED,
            tags::IMAGE_LATERALITY,
        ]
        .contains(tag)
        {
            VR::CS
        } else if *tag == tags::PATIENT_AGE {
            VR::AS
        } else if *tag == tags::NUMBER_OF_FRAMES {
            VR::IS
        } else {
            VR::DA
        };
        put(&mut obj, *tag, vr, PrimitiveValue::from(*value));
    }
    obj.put(DataElement::new(tags::PIXEL_DATA, VR::OW, PrimitiveValue::U16(pixels.into())));
    obj
}

fn save_dicom(obj: InMemDicomObject, path: &Path) {
    let file = obj
        .with_meta(
            FileMetaTableBuilder::new()
                .transfer_syntax(uids::EXPLICIT_VR_LITTLE_ENDIAN)
                .media_storage_sop_class_uid(uids::DIGITAL_X_RAY_IMAGE_STORAGE_FOR_PRESENTATION)
                .media_storage_sop_instance_uid("2.25.1234"),
        )
        .unwrap();
    file.write_to_file(path).unwrap();
}

/// Files the pixel library would decode without complaint but show wrongly: corrected
/// where the file says how (Presentation LUT Shape INVERSE), else refused with what to send.
#[test]
fn dicom_presentation_is_honoured_or_refused() {
    let (id, male, _, torch) = first();
    let sex = (tags::PATIENT_SEX, if male { "M" } else { "F" });
    let dir = tempfile::tempdir().unwrap();
    let inverse = dir.path().join("inverse.dcm");
    // Stored dark-bone, MONOCHROME2, with INVERSE saying to show it the other way round.
    write_dicom(
        &inverse,
        &id,
        true,
        1.0,
        &[
            sex,
            (tags::PHOTOMETRIC_INTERPRETATION, "MONOCHROME2"),
            (tags::PRESENTATION_LUT_SHAPE, "INVERSE"),
        ],
    );
    // MONOCHROME1 with INVERSE (as the DX standard requires) is not inverted twice.
    let mono1 = dir.path().join("mono1.dcm");
    write_dicom(&mono1, &id, true, 1.0, &[sex, (tags::PRESENTATION_LUT_SHAPE, "INVERSE")]);
    let raw = dir.path().join("raw.dcm");
    write_dicom(&raw, &id, false, 1.0, &[sex, (tags::PRESENTATION_INTENT_TYPE, "FOR PROCESSING")]);
    let frames = dir.path().join("frames.dcm");
    write_dicom(&frames, &id, false, 1.0, &[sex, (tags::NUMBER_OF_FRAMES, "2")]);

    let (out, lines) =
        predict_json(&[path_str(&inverse), path_str(&mono1), path_str(&raw), path_str(&frames)]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    for v in &lines[..2] {
        assert!((months(v) - torch).abs() < 0.5, "{v} vs {torch}");
    }
    let err = stderr(&out);
    assert!(err.contains("raw.dcm") && err.contains("FOR PRESENTATION"), "{err}");
    assert!(err.contains("frames.dcm") && err.contains("2 frames"), "{err}");
}

/// A header that names another modality or body part is refused with what it names, even
/// over a hand's pixels; a right-side marker is read with a note, and a hand marked as
/// such (free text included) is read as usual.
#[test]
fn dicom_header_subject_is_checked() {
    let (id, male, _, torch) = first();
    let sex = (tags::PATIENT_SEX, if male { "M" } else { "F" });
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, extra: &[(dicom_core::Tag, &str)]| {
        let path = dir.path().join(name);
        write_dicom(&path, &id, false, 1.0, &[&[sex], extra].concat());
        path_str(&path).to_string()
    };
    let ct = file("ct.dcm", &[(tags::MODALITY, "CT")]);
    let chest = file("chest.dcm", &[(tags::BODY_PART_EXAMINED, "CHEST")]);
    let right = file("right.dcm", &[(tags::IMAGE_LATERALITY, "R")]);
    let hand = file("hand.dcm", &[(tags::BODY_PART_EXAMINED, "HAND"), (tags::MODALITY, "CR")]);
    let (out, lines) = predict_json(&[&ct, &chest, &right, &hand]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let error = |v: &serde_json::Value| v["error"].as_str().unwrap_or_default().to_string();
    assert!(error(&lines[0]).contains("Modality is CT (computed tomography)"), "{}", lines[0]);
    assert!(error(&lines[1]).contains("Body Part Examined is CHEST"), "{}", lines[1]);
    for v in &lines[2..] {
        assert!((months(v) - torch).abs() < 0.5, "{v} vs {torch}");
    }
    let right_note = |v: &serde_json::Value| v["warnings"].to_string().contains("right side");
    assert!(right_note(&lines[2]) && !right_note(&lines[3]), "{lines:?}");
}

/// DICOM as older systems write it: without the 128-byte preamble, or as a bare data set
/// with no file meta (Implicit or Explicit VR Little Endian): read as the Part 10 file is.
#[test]
fn dicom_without_preamble_or_file_meta() {
    use dicom_transfer_syntax_registry::TransferSyntaxIndex;
    let (id, male, _, torch) = first();
    let sex = (tags::PATIENT_SEX, if male { "M" } else { "F" });
    let gray = image::open(val_image(&id)).unwrap().to_luma8();
    let dir = tempfile::tempdir().unwrap();
    let part10 = dir.path().join("part10.dcm");
    save_dicom(dicom_of(&gray, false, 1.0, &[sex]), &part10);
    let no_preamble = dir.path().join("no-preamble.dcm");
    std::fs::write(&no_preamble, &std::fs::read(&part10).unwrap()[128..]).unwrap();
    let mut files = vec![path_str(&part10).to_string(), path_str(&no_preamble).to_string()];
    for uid in [uids::IMPLICIT_VR_LITTLE_ENDIAN, uids::EXPLICIT_VR_LITTLE_ENDIAN] {
        let ts = dicom_transfer_syntax_registry::TransferSyntaxRegistry.get(uid).unwrap();
        let mut bytes = Vec::new();
        dicom_of(&gray, false, 1.0, &[sex]).write_dataset_with_ts(&mut bytes, ts).unwrap();
        let bare = dir.path().join(format!("bare-{uid}.dcm"));
        std::fs::write(&bare, bytes).unwrap();
        files.push(path_str(&bare).to_string());
    }
    let big_endian = dir.path().join("big-endian.dcm");
    std::fs::write(&big_endian, [0x00, 0x08, 0x00, 0x05, b'C', b'S', 0, 10]).unwrap();
    files.push(path_str(&big_endian).to_string());
    let (out, lines) = predict_json(&files.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(lines.len(), 5, "{lines:?}");
    for v in &lines[..4] {
        assert!((months(v) - torch).abs() < 0.5, "{v} vs {torch}");
    }
    assert!(lines[4]["error"].to_string().contains("big-endian DICOM data set"), "{}", lines[4]);
}

/// JPEG 2000, HTJ2K, JPEG-LS, 12-bit JPEG and JPEG XL files made from a fixture radiograph
/// (tests/fixtures/dicom/make.py): lossless ones read as the PNG does. The near-lossless
/// JPEG-LS one (12 bits, NEAR 3: pixels within a fifth of an 8-bit grey level, checked in
/// the unit tests) moved this reading by 0.7 months when measured: this radiograph's views
/// disagree (it is flagged), so it is sensitive to any change. The lossy JPEG 2000 one
/// (about 9:1) moved it by 4.2 months, the model's known sensitivity to compression
/// (models/README.md, "Robustness to how the image was stored"); that bound only shows it
/// was decoded and inverted back. The 12-bit JPEG one (quality 90, pixels within 16 of
/// 4,095 levels) moved it by 1.4 months, the lossy JPEG XL one (quality 98) by 2.9.
#[test]
fn dicom_compressed_is_decoded() {
    let png = val_image("1381");
    let dicom = |name: &str| fixtures().join("dicom").join(name);
    // Each file, how far its reading may be from the PNG's, and whether it went through
    // lossy compression, which the reading must say.
    let files = [
        ("j2k-lossless.dcm", 0.01, false),
        ("htj2k-lossless.dcm", 0.01, false),
        ("jls-lossless.dcm", 0.01, false),
        ("jls-near-mono1.dcm", 1.0, true),
        ("j2k-lossy-mono1.dcm", 8.0, true),
        ("jpeg12-lossy.dcm", 3.0, true),
        ("jxl-lossless.dcm", 0.01, false),
        ("jxl-lossy-mono1.dcm", 8.0, true),
    ];
    // The JPEG XL decoder is a default feature that size-first builds leave out.
    let files: Vec<_> = files
        .into_iter()
        .filter(|(name, ..)| cfg!(feature = "jpegxl") || !name.starts_with("jxl-"))
        .collect();
    let mut args = vec![path_str(&png).to_string()];
    args.extend(files.iter().map(|(name, ..)| path_str(&dicom(name)).to_string()));
    args.extend(["--sex".into(), "f".into()]);
    let (out, lines) = predict_json(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(lines.len(), files.len() + 1, "{}", stdout(&out));
    let reference = months(&lines[0]);
    let lossy_warning =
        |v: &serde_json::Value| v["warnings"].to_string().contains("lossy compression");
    assert!(!lossy_warning(&lines[0]), "{}", lines[0]);
    for ((name, bound, lossy), v) in files.iter().zip(&lines[1..]) {
        assert!((months(v) - reference).abs() < *bound, "{name}: {v} vs {reference}");
        assert_eq!(lossy_warning(v), *lossy, "{name}: {v}");
    }
}

/// An unexposed collimator frame shows bright; where the file marks it (a display
/// shutter, or Pixel Padding Value) it is blanked to background before the grey-level
/// stretch and the model, so the hand reads as it does with a dark frame; unmarked, it is
/// found by its look and set to background as well. A signed file with no window is
/// stretched over its signed values.
#[test]
fn dicom_shutter_padding_and_signed_data_without_window() {
    // A radiograph on a dark background, as most are (the first fixture lies on mid-grey,
    // which is not taken for the inside of a border).
    let (id, male) = ("1618", false);
    let sex = (tags::PATIENT_SEX, if male { "M" } else { "F" });
    // Saturated bone (255) would be stored as 0 in the MONOCHROME1 file below, the value
    // that marks padding there; a real detector keeps its padding value out of the image.
    let mut gray = image::open(val_image(id)).unwrap().to_luma8();
    gray.pixels_mut().for_each(|p| p[0] = p[0].min(254));
    let (w, h) = gray.dimensions();
    let border = 8;
    let framed = |value: u8| {
        let mut g = gray.clone();
        for (x, y, p) in g.enumerate_pixels_mut() {
            if x < border || y < border || x >= w - border || y >= h - border {
                p[0] = value;
            }
        }
        g
    };
    let dir = tempfile::tempdir().unwrap();
    let dark = dir.path().join("dark-frame.png");
    framed(0).save(&dark).unwrap();
    // With no window in the file, the grey levels inside the frame are stretched to the
    // full range, as the pixel library does for a whole image without one.
    let inside = framed(0);
    let inside: Vec<u8> = inside
        .enumerate_pixels()
        .filter(|(x, y, _)| (border..w - border).contains(x) && (border..h - border).contains(y))
        .map(|(_, _, p)| p[0])
        .collect();
    let (lo, hi) = (*inside.iter().min().unwrap(), *inside.iter().max().unwrap());
    let stretched = image::ImageBuffer::from_fn(w, h, |x, y| {
        let v = f64::from(gray.get_pixel(x, y)[0]);
        let inner = (border..w - border).contains(&x) && (border..h - border).contains(&y);
        let s = if inner { (v - f64::from(lo)) / f64::from(hi - lo) } else { 0.0 };
        image::Luma([(s * 65535.0).round() as u16])
    });
    let dark_stretched = dir.path().join("dark-frame-stretched.png");
    stretched.save(&dark_stretched).unwrap();
    let put = |obj: &mut InMemDicomObject, tag, vr, value: &str| {
        obj.put(DataElement::new(tag, vr, PrimitiveValue::from(value)));
    };
    // Bright frame, windowed, with a rectangular shutter around the hand.
    let mut shuttered = dicom_of(&framed(255), false, 1.0, &[sex]);
    put(&mut shuttered, tags::SHUTTER_SHAPE, VR::CS, "RECTANGULAR");
    let (first, last) = ((border + 1).to_string(), (w - border).to_string());
    put(&mut shuttered, tags::SHUTTER_LEFT_VERTICAL_EDGE, VR::IS, &first);
    put(&mut shuttered, tags::SHUTTER_RIGHT_VERTICAL_EDGE, VR::IS, &last);
    put(&mut shuttered, tags::SHUTTER_UPPER_HORIZONTAL_EDGE, VR::IS, &first);
    put(&mut shuttered, tags::SHUTTER_LOWER_HORIZONTAL_EDGE, VR::IS, &(h - border).to_string());
    let shutter = dir.path().join("shutter.dcm");
    save_dicom(shuttered, &shutter);
    // MONOCHROME1 with no window: the frame is padding stored as 0, which would show white
    // and, in the library's stretch over the whole image, set its bright end.
    let mut padded = dicom_of(&framed(255), true, 1.0, &[sex]);
    padded.remove_element(tags::WINDOW_CENTER);
    padded.remove_element(tags::WINDOW_WIDTH);
    padded.put(DataElement::new(tags::PIXEL_PADDING_VALUE, VR::US, PrimitiveValue::from(0u16)));
    let padding = dir.path().join("padding.dcm");
    save_dicom(padded, &padding);
    // Signed, no window: stored from -12,700 up, stretched over the signed values (the
    // library's own stretch takes the raw 16-bit words, where -1 is 65,535).
    let mut signed = dicom_of(&framed(0), false, 1.0, &[sex]);
    signed.remove_element(tags::WINDOW_CENTER);
    signed.remove_element(tags::WINDOW_WIDTH);
    signed.put(DataElement::new(tags::PIXEL_REPRESENTATION, VR::US, PrimitiveValue::from(1u16)));
    let values: Vec<i16> = framed(0).pixels().map(|p| i16::from(p[0]) * 100 - 12_700).collect();
    signed.put(DataElement::new(tags::PIXEL_DATA, VR::OW, PrimitiveValue::I16(values.into())));
    let signed_path = dir.path().join("signed.dcm");
    save_dicom(signed, &signed_path);
    let unmarked = dir.path().join("unmarked.dcm");
    save_dicom(dicom_of(&framed(255), false, 1.0, &[sex]), &unmarked);

    let (out, lines) = predict_json(&[
        path_str(&dark),
        path_str(&shutter),
        path_str(&dark_stretched),
        path_str(&padding),
        path_str(&signed_path),
        path_str(&unmarked),
        "--sex",
        if male { "m" } else { "f" },
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(lines.len(), 6, "{}", stdout(&out));
    for (reference, dicom) in [(&lines[0], &lines[1]), (&lines[2], &lines[3])] {
        assert!((months(dicom) - months(reference)).abs() < 0.05, "{dicom} vs {reference}");
    }
    // Grey levels v / 254 rather than v / 255: measured 0.09 months apart.
    assert!((months(&lines[4]) - months(&lines[0])).abs() < 0.2, "{} vs {}", lines[4], lines[0]);
    // Unmarked, the white border is found by its look (src/source/border.rs).
    assert!((months(&lines[5]) - months(&lines[0])).abs() < 0.05, "{} vs {}", lines[5], lines[0]);
}

#[test]
fn dicom_tags_pixels_inversion_and_rescale() {
    let (id, male, _, torch) = first();
    let sex_tag = if male { "M" } else { "F" };
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("plain.dcm");
    write_dicom(
        &plain,
        &id,
        false,
        1.0,
        &[(tags::PATIENT_SEX, sex_tag), (tags::PATIENT_AGE, "010Y")],
    );
    let inverted = dir.path().join("inverted.dcm");
    write_dicom(&inverted, &id, true, 1.0, &[(tags::PATIENT_SEX, sex_tag)]);
    let rescaled = dir.path().join("rescaled.dcm");
    write_dicom(
        &rescaled,
        &id,
        false,
        2.0,
        &[
            (tags::PATIENT_SEX, sex_tag),
            (tags::PATIENT_BIRTH_DATE, "20140301"),
            (tags::STUDY_DATE, "20240701"),
        ],
    );
    let nosex = dir.path().join("nosex.dcm");
    write_dicom(&nosex, &id, false, 1.0, &[]);

    let (out, lines) = predict_json(&[
        path_str(&plain),
        path_str(&inverted),
        path_str(&rescaled),
        path_str(&nosex),
    ]);
    assert_eq!(out.status.code(), Some(1), "nosex.dcm must fail: {}", stderr(&out));
    for v in &lines[..3] {
        assert!((months(v) - torch).abs() < 0.5, "{v} vs {torch}");
        assert_eq!(v["sex"], if male { "male" } else { "female" });
    }
    // PatientAge 010Y is anything from 10 y 0 m to 10 y 11 m: read as the middle.
    assert_eq!(lines[0]["chronological_age_months"].as_f64(), Some(126.0));
    assert!((lines[2]["chronological_age_months"].as_f64().unwrap() - 124.0).abs() < 0.1);
    // Where the age came from travels with it: whole-year PatientAge or exact dates.
    assert_eq!(lines[0]["age_source"], "file_patient_age");
    assert!(lines[0].get("exam_date").is_none(), "{}", lines[0]);
    assert_eq!(lines[2]["age_source"], "file_dates");
    assert_eq!(lines[2]["exam_date"], "2024-07-01");
    assert!(stderr(&out).contains("nosex.dcm: patient sex unknown"), "{}", stderr(&out));

    // The flag overrides the tag, and the reading says they disagree.
    let other = if male { "female" } else { "male" };
    let (_, lines) = predict_json(&[path_str(&plain), "--sex", other, "--age", "60"]);
    assert_eq!(lines[0]["sex"], other);
    assert_eq!(lines[0]["chronological_age_months"].as_f64(), Some(60.0));
    assert_eq!(lines[0]["age_source"], "given");
    let warnings = lines[0]["warnings"].to_string();
    assert!(warnings.contains("the file says") && warnings.contains("PatientSex"), "{warnings}");
    assert!(warnings.contains("chronological age 5 y 0 m was given"), "{warnings}");

    // Exact dates win over a whole-year PatientAge that does not fit them; an adult's dates
    // are not silently dropped.
    let mismatch = dir.path().join("mismatch.dcm");
    let adult = dir.path().join("adult.dcm");
    let dated = |age: &'static str, birth: &'static str| {
        [
            (tags::PATIENT_SEX, sex_tag),
            (tags::PATIENT_AGE, age),
            (tags::PATIENT_BIRTH_DATE, birth),
            (tags::STUDY_DATE, "20240701"),
        ]
    };
    write_dicom(&mismatch, &id, false, 1.0, &dated("008Y", "20140301"));
    write_dicom(&adult, &id, false, 1.0, &dated("044Y", "19800101"));
    let (_, lines) = predict_json(&[path_str(&mismatch), path_str(&adult)]);
    assert!((lines[0]["chronological_age_months"].as_f64().unwrap() - 124.0).abs() < 0.1);
    assert!(lines[0]["warnings"].to_string().contains("008Y disagrees"), "{}", lines[0]);
    assert!(lines[1].get("chronological_age_months").is_none(), "{}", lines[1]);
    let warnings = lines[1]["warnings"].to_string();
    assert!(warnings.contains("44.5 years") && warnings.contains("044Y"), "{warnings}");
}

#[test]
fn eval_reproduces_the_known_mae() {
    let exp = expected();
    let known: f64 = exp.iter().map(|e| (e.3 - e.2).abs()).sum::<f64>() / exp.len() as f64;
    let dir = tempfile::tempdir().unwrap();
    let preds = dir.path().join("p.csv");
    let labels = fixtures().join("val/labels.csv");
    let images = fixtures().join("val/images");
    let out = boneage(&[
        "eval",
        "--labels",
        path_str(&labels),
        "--images",
        path_str(&images),
        "--json",
        "--out",
        path_str(&preds),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let last: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(last["n"].as_u64(), Some(exp.len() as u64));
    assert!((last["mae"].as_f64().unwrap() - known).abs() < 0.02, "{last} vs {known}");
    for key in ["rmse", "bias", "median_abs_error"] {
        assert!(last[key].is_number(), "{key}");
    }
    assert!(text.contains("MAE:") && text.contains("0-5 years") || text.contains("5-10 years"));
    let csv = std::fs::read_to_string(&preds).unwrap();
    assert_eq!(csv.lines().count(), exp.len() + 1);
    assert!(csv
        .starts_with("id,male,boneage,predicted,error,view_sd,interval95,ood_score,gate_refused"));
    // The MAE of what predict and serve would accept leaves the refused fixtures out.
    let refused: Vec<&str> = last["quality_gate_refused"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().split(':').next().unwrap())
        .collect();
    let kept: Vec<f64> = exp
        .iter()
        .filter(|e| !refused.contains(&e.0.as_str()))
        .map(|e| (e.3 - e.2).abs())
        .collect();
    let known_kept = kept.iter().sum::<f64>() / kept.len() as f64;
    let got_kept = last["mae_gate_accepted"].as_f64().unwrap();
    assert!((got_kept - known_kept).abs() < 0.02, "{got_kept} vs {known_kept}");
    // The readings the warning flags, counted from the reference spreads.
    let (.., limit) = spread_extremes();
    let flagged = expected_column("view_sd_tta").iter().filter(|e| e.3 >= limit).count();
    let spread = &last["view_spread"];
    assert_eq!(spread["warn_from_months"].as_f64(), Some(limit), "{last}");
    assert_eq!(spread["flagged"]["n"].as_u64(), Some(flagged as u64), "{last}");
    assert_eq!(spread["rest"]["n"].as_u64(), Some((exp.len() - flagged) as u64), "{last}");
    assert!(text.contains("views disagree"), "{text}");
    // Interval coverage: what the model's own table and flagged width give on the
    // reference readings (one case may sit on an interval's edge: tolerance 1.5 cases).
    let contract = boneage::model::Model::read_contract(&model_path()).unwrap();
    let sds = expected_column("view_sd_tta");
    let covered = exp.iter().zip(&sds).filter(|(e, sd)| {
        (e.3 - e.2).abs() <= contract.interval95_months(e.3, Some(sd.3)).unwrap()
    });
    let want = covered.count() as f64 / exp.len() as f64;
    let got = last["interval95_coverage"].as_f64().unwrap();
    assert!((got - want).abs() <= 1.5 / exp.len() as f64, "coverage {got} vs {want}");
    let share = |v: &serde_json::Value| v.as_f64().is_some_and(|c| (0.0..=1.0).contains(&c));
    assert!(share(&spread["flagged"]["interval95_coverage"]), "{last}");
    assert!(share(&last["by_sex"][0]["interval95_coverage"]), "{last}");
    assert!(text.contains("95% interval holds the label"), "{text}");
}

/// The fixtures with the widest and narrowest spread of test-time views (reference values
/// from val/expected.csv) and the model's warning threshold.
fn spread_extremes() -> ((String, bool, f64), (String, bool, f64), f64) {
    let mut by_sd = expected_column("view_sd_tta");
    by_sd.sort_by(|a, b| a.3.total_cmp(&b.3));
    let pick = |e: &(String, bool, f64, f64)| (e.0.clone(), e.1, e.3);
    (pick(&by_sd[by_sd.len() - 1]), pick(&by_sd[0]), view_spread_warn_months())
}

#[test]
fn readings_whose_views_disagree_carry_a_warning() {
    let (wide, narrow, limit) = spread_extremes();
    assert!(wide.2 > limit && narrow.2 < limit, "{wide:?} {narrow:?} {limit}");
    let sex = |male: bool| if male { "male" } else { "female" };
    let img = val_image(&wide.0);
    let out = boneage(&["predict", path_str(&img), "--sex", sex(wide.1)]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("warning: the test-time views of this image disagree"));

    let (_, lines) = predict_json(&[path_str(&img), "--sex", sex(wide.1)]);
    let v = &lines[0];
    assert!((v["view_spread_months"].as_f64().unwrap() - wide.2).abs() < 0.05, "{v}");
    assert!(warns_views_disagree(v), "{v}");
    // Its interval is the one calibrated on flagged readings (wider than every age band of
    // the shipped table), and the warning says so.
    let flagged_hw = view_spread_rule().interval95_months.expect("shipped model has one");
    assert_eq!(v["interval95_months"].as_f64(), Some(flagged_hw), "{v}");
    assert!(v["warnings"].to_string().contains(&format!("widened to ±{flagged_hw:.1}")), "{v}");

    let img = val_image(&narrow.0);
    let (_, lines) = predict_json(&[path_str(&img), "--sex", sex(narrow.1)]);
    let v = &lines[0];
    assert!((v["view_spread_months"].as_f64().unwrap() - narrow.2).abs() < 0.05, "{v}");
    assert!(v.get("warnings").is_none(), "{v}");
    assert!(v["interval95_months"].as_f64().unwrap() < flagged_hw, "{v}");

    // One view has no spread to judge: no value, no warning.
    let (_, lines) =
        predict_json(&["--no-tta", path_str(&val_image(&wide.0)), "--sex", sex(wide.1)]);
    assert!(lines[0].get("view_spread_months").is_none(), "{}", lines[0]);
    assert!(lines[0].get("warnings").is_none(), "{}", lines[0]);
    assert!(lines[0]["interval95_months"].as_f64().unwrap() < flagged_hw, "{}", lines[0]);
}

#[test]
fn eval_counts_and_lists_missing_images() {
    let dir = tempfile::tempdir().unwrap();
    let (id, ..) = first();
    std::fs::copy(val_image(&id), dir.path().join(format!("{id}.png"))).unwrap();
    let labels = dir.path().join("labels.csv");
    std::fs::write(&labels, format!("id,male,boneage\n{id},true,100\n999999,false,50\n")).unwrap();
    let out = boneage(&[
        "eval",
        "--labels",
        path_str(&labels),
        "--images",
        path_str(dir.path()),
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let last: serde_json::Value =
        serde_json::from_str(stdout(&out).lines().last().unwrap()).unwrap();
    assert_eq!(last["n"].as_u64(), Some(1));
    assert_eq!(last["failed"].as_u64(), Some(1));
    assert!(last["failures"][0].as_str().unwrap().contains("999999.png"));

    // `--out` naming the labels file is refused before anything is written to it.
    let before = std::fs::read(&labels).unwrap();
    let args = ["eval", "--labels", path_str(&labels), "--images", path_str(dir.path())];
    let out = boneage(&[&args[..], &["--out", path_str(&labels)]].concat());
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("is the labels file"), "{}", stderr(&out));
    assert_eq!(std::fs::read(&labels).unwrap(), before);
}

#[test]
fn config_errors_name_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    std::fs::write(&cfg, "[model]\nthreads = 2\nbackend = \"gpu\"\n").unwrap();
    let out = boneage(&["--config", path_str(&cfg), "model-info"]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("bad.toml") && err.contains("gpu"), "{err}");

    std::fs::write(&cfg, "[modle]\npath = \"x.onnx\"\n").unwrap();
    let err = stderr(&boneage(&["--config", path_str(&cfg), "model-info"]));
    assert!(err.contains("bad.toml") && err.contains("modle"), "{err}");

    // A good file with a relative model path resolves against the file's folder.
    std::fs::copy(model_path(), dir.path().join("m.onnx")).unwrap();
    std::fs::write(&cfg, "[model]\npath = \"m.onnx\"\n").unwrap();
    let out = boneage(&["--config", path_str(&cfg), "model-info", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(json_lines(&out)[0]["name"], "boneage-lite0");
}

#[test]
fn missing_model_says_how_to_fix_it() {
    let out = boneage(&["--model", "/nonexistent/m.onnx", "predict", "x.png", "--sex", "m"]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("/nonexistent/m.onnx") && err.contains("--model"), "{err}");
}

/// An installation (`/opt/boneage/{boneage,firmware-config,models}`) finds its own model
/// without `--config`, from any working directory and through a symlink on the PATH.
#[test]
fn installed_binary_finds_its_model_from_any_directory() {
    let dir = tempfile::tempdir().unwrap();
    let inst = dir.path().join("opt/boneage");
    std::fs::create_dir_all(inst.join("firmware-config")).unwrap();
    std::fs::create_dir_all(inst.join("models")).unwrap();
    std::fs::copy(env!("CARGO_BIN_EXE_boneage"), inst.join("boneage")).unwrap();
    std::os::unix::fs::symlink(model_path(), inst.join("models/boneage-lite0.onnx")).unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    std::os::unix::fs::symlink(inst.join("boneage"), bin.join("boneage")).unwrap();
    let elsewhere = dir.path().join("home");
    std::fs::create_dir(&elsewhere).unwrap();
    let run = |exe: &Path| {
        std::process::Command::new(exe)
            .args(["model-info", "--json"])
            .current_dir(&elsewhere)
            .env_remove("RUST_LOG")
            .output()
            .unwrap()
    };
    let out = run(&bin.join("boneage"));
    assert!(out.status.success(), "{}", stderr(&out));
    let path = json_lines(&out)[0]["path"].as_str().unwrap().to_string();
    assert!(path.starts_with(path_str(&inst)), "{path}");

    // The installation's own default.toml applies when it exists: edits take effect.
    let edited = boneage::config::DEFAULT_TOML
        .replace("path = \"../models/boneage-lite0.onnx\"", "path = \"../models/edited.onnx\"");
    std::fs::write(inst.join("firmware-config/default.toml"), edited).unwrap();
    let out = run(&bin.join("boneage"));
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("edited.onnx"), "{}", stderr(&out));
    std::fs::remove_file(inst.join("firmware-config/default.toml")).unwrap();

    // A unit's own file elsewhere (/etc/boneage/unit.toml) that leaves the model out gets
    // the installation's model, not one under /etc.
    let etc = dir.path().join("etc/boneage");
    std::fs::create_dir_all(&etc).unwrap();
    std::fs::write(etc.join("unit.toml"), "[log]\nlevel = \"error\"\n").unwrap();
    let out = std::process::Command::new(bin.join("boneage"))
        .args(["--config", path_str(&etc.join("unit.toml")), "model-info", "--json"])
        .current_dir(&elsewhere)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let path = json_lines(&out)[0]["path"].as_str().unwrap().to_string();
    assert!(path.starts_with(path_str(&inst)), "{path}");

    // A bare binary (no firmware-config/ beside it) keeps looking under the working
    // directory, and says how to point it at a model.
    std::fs::remove_dir(inst.join("firmware-config")).unwrap();
    let out = run(&inst.join("boneage"));
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("firmware-config/../models/boneage-lite0.onnx"), "{err}");
    assert!(err.contains("--model FILE"), "{err}");
}

#[test]
fn version_fails_when_the_unit_cannot_analyse() {
    let out = boneage(&["--model", "/nonexistent/m.onnx", "--version"]);
    assert_eq!(out.status.code(), Some(2), "a unit check must be able to fail");
    assert!(stdout(&out).contains("model unavailable"), "{}", stdout(&out));
}

#[test]
fn version_names_crate_and_model() {
    let out = boneage(&["--version"]);
    assert!(out.status.success());
    let text = stdout(&out);
    assert!(text.contains(env!("CARGO_PKG_VERSION")) && text.contains("boneage-lite0 v"), "{text}");
    assert!(text.trim_end().ends_with("; backend tract"), "the default config runs tract: {text}");
    assert!(
        text.contains("[features: multithread, jpegxl"),
        "a default build names its features: {text}"
    );
}

#[test]
fn bench_breaks_inference_down_per_operator() {
    let out = boneage(&["--no-tta", "bench", "--runs", "3", "--warmup", "1", "--ops", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v = &json_lines(&out)[0];
    assert_eq!(v["backend"], "tract");
    let ops = v["ops"].as_array().unwrap_or_else(|| panic!("no ops in {v}"));
    assert!(ops.len() >= 3, "{v}");
    let ms: Vec<f64> = ops.iter().map(|o| o["ms_per_pass"].as_f64().unwrap()).collect();
    // Slowest first, every listed op type present in the plan, time accounted for.
    assert!(ms.windows(2).all(|w| w[0] >= w[1]), "{ms:?}");
    assert!(ops.iter().all(|o| o["nodes"].as_u64().unwrap() >= 1), "{v}");
    assert!(ms[0] > 0.0 && ms.iter().sum::<f64>() > 0.0);
    // Without --ops the field is null: the profile costs extra runs.
    let out = boneage(&["--no-tta", "bench", "--runs", "1", "--warmup", "0", "--json"]);
    assert!(json_lines(&out)[0]["ops"].is_null());
}

/// docs/model-contract.md is the model's specification: every key the shipped file
/// carries is in its table, so a key added by export.py cannot go undocumented.
#[test]
fn every_metadata_key_of_the_shipped_model_is_documented() {
    let spec = std::fs::read_to_string(root().join("docs/model-contract.md")).unwrap();
    let contract = boneage::model::Model::read_contract(&model_path()).unwrap();
    let undocumented: Vec<&str> = contract
        .metadata
        .iter()
        .map(|(k, _)| k.as_str())
        .filter(|k| !spec.contains(&format!("`{k}`")))
        .collect();
    assert!(undocumented.is_empty(), "not in docs/model-contract.md: {undocumented:?}");
}

#[test]
fn a_reader_that_goes_away_ends_predict_quietly() {
    // `boneage predict *.png --json | head -1`: the rest of the output has nowhere to go.
    use std::io::BufRead;
    let (id, male, _, _) = first();
    let img = val_image(&id);
    let img = path_str(&img);
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_boneage"))
        .args(["predict", "--json", "--no-tta", "--sex", if male { "m" } else { "f" }])
        .args([img; 6])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first_line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut first_line).unwrap();
    assert!(first_line.contains("bone_age_months"), "{first_line}");
    // The pipe is closed here (the reader dropped).
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert_ne!(out.status.code(), Some(101), "a panic's exit code");

    // Output that cannot be written (a full disk) is an error naming it, not a panic.
    for args in [vec!["predict", "--no-tta", "--sex", "f", img], vec!["--version"]] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_boneage"))
            .args(&args)
            .stdout(std::fs::File::create("/dev/full").unwrap())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains("standard output") && !err.contains("panicked"), "{err}");
    }
}

#[test]
fn backup_copies_the_configured_store() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("results.db");
    let config = dir.path().join("unit.toml");
    std::fs::write(&config, format!("[store]\npath = {:?}\n", db.to_str().unwrap())).unwrap();
    let dest = dir.path().join("backup.db");
    let out = boneage(&["--config", path_str(&config), "backup", path_str(&dest)]);
    assert_eq!(out.status.code(), Some(2), "no store yet");
    assert!(stderr(&out).contains("no result store at"), "{}", stderr(&out));

    let store = boneage::store::Store::open(&db).unwrap();
    for i in 0..3 {
        let rec = boneage::store::NewRecord { source: format!("{i}.png"), ..Default::default() };
        store.insert(&rec).unwrap();
    }
    // Taken while the store is open, as under a running service.
    let out = boneage(&["--config", path_str(&config), "backup", path_str(&dest)]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("3 results copied"));
    assert_eq!(boneage::store::Store::open(&dest).unwrap().count().unwrap(), 3);
    let out = boneage(&["--config", path_str(&config), "backup", path_str(&dest)]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("already exists"), "{}", stderr(&out));
}

/// DICOM files a review found mishandled: a stray item delimiter before a corrupted
/// length (the length check stopped at the delimiter, the parser read on and took 4 GB), a
/// JPEG frame of another size than Rows and Columns say (decoded at the frame's size),
/// Rows 0 (an internal error), an undecoded ISO 2022 PatientID (its ESC bytes went into the
/// reading) and file meta the library refuses (a value longer than its VR allows).
#[test]
fn dicom_damage_sizes_and_header_ids() {
    let (id, male, _, torch) = first();
    let sex = (tags::PATIENT_SEX, if male { "M" } else { "F" });
    let gray = image::open(val_image(&id)).unwrap().to_luma8();
    let (w, h) = gray.dimensions();
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, bytes: &[u8]| {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        path_str(&path).to_string()
    };
    let write = |obj: InMemDicomObject| {
        let path = dir.path().join("scratch.dcm");
        save_dicom(obj, &path);
        std::fs::read(&path).unwrap()
    };
    let good = write(dicom_of(&gray, false, 1.0, &[sex]));
    let pixel_data = good.windows(4).rposition(|w| w == [0xE0, 0x7F, 0x10, 0x00]).unwrap();
    let stray = [0xFE, 0xFF, 0x0D, 0xE0, 0, 0, 0, 0];
    let huge = [&[0x09, 0x00, 0x01, 0x10][..], b"OB", &[0, 0], &0xF000_0000u32.to_le_bytes()];
    let insert = |extra: &[u8]| [&good[..pixel_data], extra, &good[pixel_data..]].concat();
    let stray_only = file("stray.dcm", &insert(&stray));
    let stray_huge = file("stray-huge.dcm", &insert(&[&stray[..], &huge.concat()].concat()));

    let mut jpeg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 95).encode_image(&gray).unwrap();
    let jpeg_file = |rows: u16| {
        let mut obj = dicom_of(&gray, false, 1.0, &[sex]);
        for (tag, v) in [(tags::BITS_ALLOCATED, 8u16), (tags::BITS_STORED, 8), (tags::HIGH_BIT, 7)]
        {
            obj.put(DataElement::new(tag, VR::US, PrimitiveValue::from(v)));
        }
        obj.put(DataElement::new(tags::ROWS, VR::US, PrimitiveValue::from(rows)));
        obj.remove_element(tags::WINDOW_CENTER);
        obj.remove_element(tags::WINDOW_WIDTH);
        let fragments = dicom_core::value::PixelFragmentSequence::new_fragments(vec![jpeg.clone()]);
        obj.put(DataElement::new(tags::PIXEL_DATA, VR::OB, fragments));
        let path = dir.path().join(format!("jpeg-{rows}.dcm"));
        obj.with_meta(
            FileMetaTableBuilder::new()
                .transfer_syntax(uids::JPEG_BASELINE8_BIT)
                .media_storage_sop_class_uid(uids::DIGITAL_X_RAY_IMAGE_STORAGE_FOR_PRESENTATION)
                .media_storage_sop_instance_uid("2.25.1234"),
        )
        .unwrap()
        .write_to_file(&path)
        .unwrap();
        path_str(&path).to_string()
    };
    let jpeg_same = jpeg_file(h as u16);
    let jpeg_taller = jpeg_file(h as u16 + 12);

    let mut no_rows = dicom_of(&gray, false, 1.0, &[sex]);
    no_rows.put(DataElement::new(tags::ROWS, VR::US, PrimitiveValue::from(0u16)));
    let no_rows = file("rows0.dcm", &write(no_rows));

    let mut japanese = dicom_of(&gray, false, 1.0, &[sex]);
    let escaped = "\u{1b}$B%d%^%@\u{1b}(B01";
    japanese.put(DataElement::new(tags::PATIENT_ID, VR::LO, PrimitiveValue::from(escaped)));
    let japanese = file("iso2022.dcm", &write(japanese));

    // (0002,0013) Implementation Version Name of 20 characters (SH allows 16).
    let mut long_meta = dicom_object::OpenFileOptions::new().from_reader(&good[128..]).unwrap();
    long_meta.update_meta(|m| m.implementation_version_name = Some("VENDOR_WRITER_V1.2.3".into()));
    let mut bytes = Vec::new();
    long_meta.write_all(&mut bytes).unwrap();
    let long_meta = file("long-meta.dcm", &bytes);

    let files =
        [&stray_only, &stray_huge, &jpeg_same, &jpeg_taller, &no_rows, &japanese, &long_meta];
    let mut args: Vec<&str> = files.iter().map(|f| f.as_str()).collect();
    args.extend(["--sex", if male { "m" } else { "f" }]);
    let (out, lines) = predict_json(&args);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(lines.len(), files.len(), "{}", stdout(&out));
    let error = |v: &serde_json::Value| v["error"].as_str().unwrap_or_default().to_string();
    assert!((months(&lines[0]) - torch).abs() < 0.5, "{}", lines[0]);
    let e = error(&lines[1]);
    assert!(e.contains("element (0009,1001) at byte") && e.contains("declares 4026531840"), "{e}");
    assert!(lines[2]["warnings"].to_string().contains("lossy compression"), "{}", lines[2]);
    let e = error(&lines[3]);
    let says = format!("its JPEG data is {w}x{h} with 1 component(s), but Columns, Rows and");
    assert!(e.contains(&says) && e.contains(&format!("say {w}x{} with 1", h + 12)), "{e}");
    let e = error(&lines[4]);
    assert!(e.contains(&format!("image is {w}x0 px; at least 32x32")), "{e}");
    let v = &lines[5];
    assert_eq!(v["id"], "%d%^%@01", "{v}");
    assert!(v["warnings"].to_string().contains("PatientID was changed"), "{v}");
    assert!((months(&lines[6]) - torch).abs() < 0.5, "{}", lines[6]);
    assert!(!stderr(&out).contains("internal error"), "{}", stderr(&out));
}

/// Eight bits stored in sixteen allocated (some exports of 8-bit images) read as the 8-bit
/// image, MONOCHROME2 and MONOCHROME1 alike: the decoder's output spans 256 values, and
/// read on 0-65535 the image was refused as uniform.
#[test]
fn eight_bits_stored_in_sixteen_read_as_eight_bit() {
    let (id, male, _, torch) = first();
    let dir = tempfile::tempdir().unwrap();
    let gray = image::open(val_image(&id)).unwrap().to_luma8();
    let mut args = Vec::new();
    for monochrome1 in [false, true] {
        let mut obj = dicom_of(&gray, monochrome1, 1.0, &[]);
        let pixels: Vec<u16> =
            gray.pixels().map(|p| u16::from(if monochrome1 { 255 - p[0] } else { p[0] })).collect();
        for (tag, value) in [(tags::BITS_STORED, 8u16), (tags::HIGH_BIT, 7)] {
            obj.put(DataElement::new(tag, VR::US, PrimitiveValue::from(value)));
        }
        obj.remove_element(tags::WINDOW_CENTER);
        obj.remove_element(tags::WINDOW_WIDTH);
        obj.put(DataElement::new(tags::PIXEL_DATA, VR::OW, PrimitiveValue::U16(pixels.into())));
        let path = dir.path().join(format!("bs8-{monochrome1}.dcm"));
        save_dicom(obj, &path);
        args.push(path_str(&path).to_string());
    }
    args.extend(["--sex".into(), if male { "m" } else { "f" }.into()]);
    let (out, lines) = predict_json(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(out.status.success(), "{}", stderr(&out));
    for v in &lines {
        assert!((months(v) - torch).abs() < 0.1, "{v} vs {torch}");
    }
}
