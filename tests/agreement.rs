//! The shipped model through the full Rust path (decode -> preprocess -> tract) agrees with
//! PyTorch on the committed validation images (models/train/export.py wrote the reference).

mod common;

use boneage::config::Config;
use boneage::model::Model;
use boneage::source;
use boneage::Sex;

#[test]
fn rust_matches_pytorch_on_validation_fixtures() {
    let mut config = Config::builtin().unwrap();
    config.model.path = common::model_path();
    let mut model = Model::load(&config.model).unwrap();
    let expected = common::expected();
    assert!(expected.len() >= 100, "need at least 100 fixtures, have {}", expected.len());
    let (mut worst, mut mae_rust, mut mae_torch) = (0f64, 0f64, 0f64);
    for (id, male, label, torch) in &expected {
        let r = source::read_file(&common::val_image(id)).unwrap();
        let sex = if *male { Sex::Male } else { Sex::Female };
        let got = model.estimate(&r, sex).unwrap().bone_age_months;
        let diff = (got - torch).abs();
        assert!(diff <= 0.1, "{id}: rust {got:.3} vs pytorch {torch:.3} months");
        worst = worst.max(diff);
        mae_rust += (got - label).abs();
        mae_torch += (torch - label).abs();
    }
    let n = expected.len() as f64;
    let (mae_rust, mae_torch) = (mae_rust / n, mae_torch / n);
    assert!(
        (mae_rust - mae_torch).abs() <= 0.2,
        "MAE rust {mae_rust:.3} vs pytorch {mae_torch:.3}"
    );
    eprintln!(
        "{} images: worst |rust - pytorch| = {worst:.4} months, MAE {mae_rust:.3}",
        expected.len()
    );
}
