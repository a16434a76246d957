//! The shipped model through the full Rust path (decode -> preprocess -> tract) agrees with
//! the reference on the committed validation images (models/train/export.py wrote it):
//! one view against PyTorch, and the test-time-augmented reading against ONNX Runtime.

mod common;

use boneage::config::Config;
use boneage::model::Model;
use boneage::source;
use boneage::Sex;

fn check(tta: bool, column: &str) {
    let mut config = Config::builtin().unwrap();
    config.model.path = common::model_path();
    config.model.tta = tta;
    let mut model = Model::load(&config.model).unwrap();
    let expected = common::expected_column(column);
    assert!(expected.len() >= 100, "need at least 100 fixtures, have {}", expected.len());
    let (mut worst, mut mae_rust, mut mae_ref) = (0f64, 0f64, 0f64);
    for (id, male, label, reference) in &expected {
        let r = source::read_file(&common::val_image(id)).unwrap();
        let sex = if *male { Sex::Male } else { Sex::Female };
        let got = model.estimate(&r, sex).unwrap().bone_age_months;
        let diff = (got - reference).abs();
        assert!(diff <= 0.1, "{id}: rust {got:.3} vs {column} {reference:.3} months");
        worst = worst.max(diff);
        mae_rust += (got - label).abs();
        mae_ref += (reference - label).abs();
    }
    let n = expected.len() as f64;
    let (mae_rust, mae_ref) = (mae_rust / n, mae_ref / n);
    assert!((mae_rust - mae_ref).abs() <= 0.2, "MAE rust {mae_rust:.3} vs {column} {mae_ref:.3}");
    eprintln!(
        "{} images, {} view(s): worst |rust - {column}| = {worst:.4} months, MAE {mae_rust:.3}",
        expected.len(),
        model.views()
    );
}

#[test]
fn rust_matches_pytorch_on_validation_fixtures() {
    check(false, "pred_pytorch");
}

#[test]
fn rust_tta_matches_the_reference_reading() {
    check(true, "pred_tta");
}

/// The spread of the test-time views, which decides the "views disagree" warning, is the
/// one the threshold was calibrated on (ONNX Runtime, numpy's population SD), image by image.
#[test]
fn rust_view_spread_matches_the_reference() {
    let mut config = Config::builtin().unwrap();
    config.model.path = common::model_path();
    config.model.tta = true;
    let mut model = Model::load(&config.model).unwrap();
    let limit = common::view_spread_warn_months();
    let (mut flagged, mut worst) = (0, 0f64);
    for (id, male, _, reference) in common::expected_column("view_sd_tta") {
        let r = source::read_file(&common::val_image(&id)).unwrap();
        let sex = if male { Sex::Male } else { Sex::Female };
        let got = model.estimate(&r, sex).unwrap().view_spread_months.unwrap();
        let diff = (got - reference).abs();
        assert!(diff <= 0.05, "{id}: view SD rust {got:.4} vs reference {reference:.4}");
        worst = worst.max(diff);
        if (reference - limit).abs() > 0.05 {
            assert_eq!(got >= limit, reference >= limit, "{id}: flag differs at {limit}");
        }
        flagged += usize::from(got >= limit);
    }
    // Not vacuous: the fixtures hold readings on both sides of the threshold.
    assert!(flagged > 0 && flagged < 100, "{flagged} of the fixtures flagged");
    eprintln!("view SD: worst |rust - reference| = {worst:.4} months, {flagged} flagged");
}

/// The likeness score, which decides the quality gate's last check, is the one the
/// threshold was calibrated with (ONNX Runtime, mean over the test-time views), image by
/// image, and no validation fixture is refused by it.
#[test]
fn rust_likeness_score_matches_the_reference() {
    let mut config = Config::builtin().unwrap();
    config.model.path = common::model_path();
    config.model.tta = true;
    let mut model = Model::load(&config.model).unwrap();
    let rule = model.contract.likeness.expect("the shipped model has the likeness score");
    let mut worst = 0f64;
    for (id, male, _, reference) in common::expected_column("ood_score_tta") {
        let r = source::read_file(&common::val_image(&id)).unwrap();
        let sex = if male { Sex::Male } else { Sex::Female };
        let got = model.estimate(&r, sex).unwrap().ood_score.unwrap();
        let diff = (got - reference).abs();
        assert!(diff <= 1e-3 * reference.max(1.0), "{id}: score rust {got:.5} vs {reference:.5}");
        if (reference - rule.threshold).abs() > 0.01 {
            assert_eq!(rule.refuses(got), rule.refuses(reference), "{id}: refusal differs");
        }
        worst = worst.max(diff);
    }
    eprintln!("likeness score: worst |rust - reference| = {worst:.6}");
}
