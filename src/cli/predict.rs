//! `boneage predict`: one reading per image; one bad file never stops the others.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use boneage::config::Config;
use boneage::document::{self, Sheet};
use boneage::model::Model;
use boneage::report::{Age, Given, Reading, ReadingError, Sex};
use boneage::source::{self, Radiograph};
use boneage::{clinical, quality};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Radiographs: PNG, JPEG, TIFF, BMP (8/16-bit) or DICOM
    #[arg(required = true, value_name = "IMAGE")]
    images: Vec<PathBuf>,
    /// Patient sex: male or female (m / f also accepted; overrides the DICOM PatientSex tag)
    #[arg(long, value_parser = |s: &str| s.parse::<Sex>())]
    sex: Option<Sex>,
    /// Chronological age: months (124) or years+months (10y4m); overrides DICOM
    #[arg(long, value_parser = |s: &str| s.parse::<Age>())]
    age: Option<Age>,
    /// One JSON object per line per image
    #[arg(long)]
    json: bool,
    /// Standing height in cm, for a Bayley-Pinneau adult height prediction (needs --age)
    #[arg(long, value_name = "CM", value_parser = |s: &str| clinical::parse_height_cm(s))]
    height: Option<f64>,
    /// Patient or exam id for the report (overrides DICOM PatientID / AccessionNumber)
    #[arg(long, value_parser = |s: &str| boneage::report::parse_exam_id(s))]
    id: Option<String>,
    /// Write a one-page report for the (single) image: FILE.pdf or FILE.png
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
}

pub fn run(config: &Config, args: Args) -> anyhow::Result<ExitCode> {
    if args.report.is_some() && args.images.len() != 1 {
        anyhow::bail!("--report writes one page for one image; got {} images", args.images.len());
    }
    if let Some(out) = &args.report {
        document::check_target(out)?;
        // The report must never replace the radiograph it describes.
        if let Some(input) = args.images.iter().find(|i| super::same_file(i, out)) {
            anyhow::bail!(
                "--report {} is the input image {}: choose another file name",
                out.display(),
                input.display()
            );
        }
    }
    let mut model = super::load_model(config)?;
    let mut failed = 0usize;
    // Written, not printed: a full disk or closed output is an error, not a panic.
    let mut stdout = std::io::stdout().lock();
    for path in &args.images {
        // A bug one file triggers (in a decoder, say) must not cost the rest of the batch,
        // as the service also guarantees.
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            analyse(&mut model, config, path, &args)
        }))
        .unwrap_or_else(|_| {
            Err(format!(
                "{}: internal error while analysing this file (see the message above); the \
                 other files go on: please report it, with the file",
                path.display()
            ))
        });
        match outcome {
            Ok((reading, radiograph)) => {
                if args.json {
                    writeln!(stdout, "{}", serde_json::to_string(&reading)?)
                } else {
                    writeln!(stdout, "{reading}")
                }
                .and_then(|()| stdout.flush())
                .context("cannot write the results to standard output")?;
                if let Some(out) = &args.report {
                    if let Err(e) =
                        document::write(out, &Sheet::from_reading(&reading, &radiograph.pixels))
                    {
                        failed += 1;
                        eprintln!("boneage: error: {e}");
                    }
                }
            }
            Err(message) => {
                failed += 1;
                eprintln!("boneage: error: {message}");
                if let Some(out) = args.report.as_ref().filter(|out| out.exists()) {
                    // Not removed (it is the user's file), but not to be taken for this image.
                    eprintln!(
                        "boneage: --report {}: not written; the file there is from an earlier run",
                        out.display()
                    );
                }
                if args.json {
                    let obj = serde_json::json!({
                        "image": path.display().to_string(), "error": message });
                    writeln!(stdout, "{obj}")
                        .context("cannot write the results to standard output")?;
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

fn analyse(
    model: &mut Model,
    config: &Config,
    path: &Path,
    args: &Args,
) -> Result<(Reading, Radiograph), String> {
    let radiograph = source::read_file(path).map_err(|e| e.to_string())?;
    if config.quality.enabled {
        quality::check_radiograph(&radiograph)
            .map_err(|why| format!("{}: rejected by the quality gate: {why}", path.display()))?;
    }
    let given = Given { sex: args.sex, age: args.age, height_cm: args.height, id: args.id.clone() };
    let reading = Reading::of_radiograph(
        model,
        path.display().to_string(),
        &radiograph,
        &given,
        config.reading.thresholds(),
        config.quality.enabled,
    )
    .map_err(|e| match e {
        ReadingError::SexUnknown { .. } => {
            format!("{}: {e}; pass --sex male or --sex female", path.display())
        }
        ReadingError::UnlikeTraining { .. } | ReadingError::Turned { .. } => {
            format!("{}: rejected by the quality gate: {e}", path.display())
        }
        ReadingError::Model(_) => format!("{}: {e}", path.display()),
    })?;
    Ok((reading, radiograph))
}
