//! `boneage predict`: one reading per image; one bad file never stops the others.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use boneage::config::Config;
use boneage::model::Model;
use boneage::report::{Age, Reading, Sex};
use boneage::source;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Radiographs: PNG, JPEG, TIFF, BMP (8/16-bit) or DICOM
    #[arg(required = true, value_name = "IMAGE")]
    images: Vec<PathBuf>,
    /// Patient sex: male or female (overrides the DICOM PatientSex tag)
    #[arg(long, value_parser = |s: &str| s.parse::<Sex>())]
    sex: Option<Sex>,
    /// Chronological age: months (124) or years+months (10y4m); overrides DICOM
    #[arg(long, value_parser = |s: &str| s.parse::<Age>())]
    age: Option<Age>,
    /// One JSON object per line per image
    #[arg(long)]
    json: bool,
}

pub fn run(config: &Config, args: Args) -> anyhow::Result<ExitCode> {
    let mut model = super::load_model(config)?;
    let mut failed = 0usize;
    for path in &args.images {
        match analyse(&mut model, path, &args) {
            Ok(reading) => {
                if args.json {
                    println!("{}", serde_json::to_string(&reading)?);
                } else {
                    println!("{reading}");
                }
            }
            Err(message) => {
                failed += 1;
                eprintln!("boneage: error: {message}");
                if args.json {
                    let obj = serde_json::json!({
                        "image": path.display().to_string(), "error": message });
                    println!("{obj}");
                }
            }
        }
    }
    if failed > 0 {
        eprintln!("boneage: {failed} of {} images failed", args.images.len());
        return Ok(ExitCode::from(super::EXIT_INPUT_FAILED));
    }
    Ok(ExitCode::SUCCESS)
}

fn analyse(model: &mut Model, path: &Path, args: &Args) -> Result<Reading, String> {
    let radiograph = source::read_file(path).map_err(|e| e.to_string())?;
    let sex = args.sex.or(radiograph.patient.sex).ok_or_else(|| {
        format!(
            "{}: patient sex unknown (the file has no usable PatientSex); pass --sex male or --sex female",
            path.display()
        )
    })?;
    let age = args.age.or(radiograph.patient.age);
    let estimate =
        model.estimate(&radiograph, sex).map_err(|e| format!("{}: {e}", path.display()))?;
    let c = &model.contract;
    Ok(Reading::new(
        path.display().to_string(),
        sex,
        estimate.bone_age_months,
        estimate.interval95_months,
        age,
        c.training_range_months,
        c.model_id(),
    ))
}
