//! `boneage eval`: accuracy over a labelled folder, with a progress bar on a terminal.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use boneage::config::Config;
use boneage::evaluate::{self, Group, Metrics, Scored, SpreadCheck};
use boneage::model::ModelError;
use boneage::report::refusal_after_inference;
use boneage::{quality, source};
use indicatif::{ProgressBar, ProgressStyle};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// CSV with columns id,male,boneage (as in RSNA-100px)
    #[arg(long, value_name = "CSV")]
    labels: PathBuf,
    /// Folder holding <id>.png for each labelled id
    #[arg(long, value_name = "DIR")]
    images: PathBuf,
    /// Print the metrics as one JSON object on the last line
    #[arg(long)]
    json: bool,
    /// Write per-image predictions (id,male,boneage,predicted,error,view_sd,interval95,ood_score,gate_refused)
    /// to this CSV
    #[arg(long, value_name = "CSV")]
    out: Option<PathBuf>,
}

pub fn run(config: &Config, args: Args) -> anyhow::Result<ExitCode> {
    let cases = evaluate::read_labels(&args.labels)?;
    anyhow::ensure!(
        args.images.is_dir(),
        "image folder {} does not exist; pass --images DIR holding <id>.png",
        args.images.display()
    );
    // Opened before the run, which takes minutes to an hour on a small board: a path that
    // cannot be written must not cost it.
    let mut writer = match &args.out {
        Some(out) => Some({
            // Checked before it is truncated: `--out labels.csv` would replace the labels.
            anyhow::ensure!(
                !super::same_file(out, &args.labels),
                "--out {} is the labels file; writing the predictions there would replace it: \
                 choose another file",
                out.display()
            );
            csv::Writer::from_path(out)
                .with_context(|| format!("cannot write {}", out.display()))?
        }),
        None => None,
    };
    let mut model = super::load_model(config)?;
    let bar = ProgressBar::new(cases.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} images, {per_sec}, ETA {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut results: Vec<Scored> = Vec::with_capacity(cases.len());
    let mut failures: Vec<String> = Vec::new();
    let mut gate_refused: Vec<String> = Vec::new();
    let mut refused_ids = std::collections::HashSet::new();
    for case in cases {
        let path = args.images.join(format!("{}.png", case.id));
        // One image whose decoder or backend panics is that image's failure, as in
        // `predict`, not the end of the run.
        let scored = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            score(config, &mut model, &path, &case)
        }))
        .unwrap_or_else(|_| {
            Err(format!(
                "{}: internal error while analysing this image (a bug: please report the file)",
                path.display()
            ))
        });
        match scored {
            Ok((est, refused)) => {
                if let Some(why) = refused {
                    gate_refused.push(format!("{}: {why}", case.id));
                    refused_ids.insert(case.id.clone());
                }
                results.push((case, est));
            }
            Err(e) => failures.push(e),
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    if let Some(w) = writer.as_mut() {
        w.write_record([
            "id",
            "male",
            "boneage",
            "predicted",
            "error",
            "view_sd",
            "interval95",
            "ood_score",
            "gate_refused",
        ])?;
        let optional = |v: Option<f64>| v.map_or(String::new(), |v| format!("{v:.3}"));
        for (c, est) in &results {
            let p = est.bone_age_months;
            let male = if c.sex == boneage::Sex::Male { "true" } else { "false" };
            w.write_record([
                c.id.as_str(),
                male,
                &c.bone_age_months.to_string(),
                &format!("{p:.3}"),
                &format!("{:.3}", p - c.bone_age_months),
                &optional(est.view_spread_months),
                &optional(est.interval95_months),
                &est.ood_score.map_or(String::new(), |v| format!("{v:.4}")),
                if refused_ids.contains(&c.id) { "true" } else { "false" },
            ])?;
        }
        w.flush()?;
    }
    for f in &failures {
        eprintln!("boneage: failed: {f}");
    }
    // What a user of predict and serve gets: the images the gate lets through.
    let accepted: Vec<f64> = results
        .iter()
        .filter(|(c, _)| !refused_ids.contains(&c.id))
        .map(|(c, est)| (est.bone_age_months - c.bone_age_months).abs())
        .collect();
    let mae_accepted =
        (!accepted.is_empty()).then(|| accepted.iter().sum::<f64>() / accepted.len() as f64);
    let spread = SpreadCheck::compute(&results, model.contract.view_spread);
    let metrics = Metrics::compute(&results);
    let mut stdout = std::io::stdout().lock();
    if let Some(m) = &metrics {
        print_text(&mut stdout, m, spread.as_ref(), failures.len())?;
        if !gate_refused.is_empty() {
            writeln!(
                stdout,
                "quality gate: {} of these images would be refused by predict and serve \
                 (counted above all the same; listed with --json); MAE of the {} it accepts: \
                 {:.2} months",
                gate_refused.len(),
                accepted.len(),
                mae_accepted.unwrap_or(f64::NAN)
            )?;
        }
    } else {
        writeln!(stdout, "no image could be analysed ({} failed)", failures.len())?;
    }
    if args.json {
        let obj = serde_json::json!({
            "model": model.contract.model_id(),
            "n": metrics.as_ref().map_or(0, |m| m.n),
            "mae": metrics.as_ref().map(|m| m.mae),
            "rmse": metrics.as_ref().map(|m| m.rmse),
            "median_abs_error": metrics.as_ref().map(|m| m.median_abs_error),
            "bias": metrics.as_ref().map(|m| m.bias),
            "interval95_coverage": metrics.as_ref().and_then(|m| m.interval95_coverage),
            "by_sex": metrics.as_ref().map(|m| &m.by_sex),
            "by_age_band_years": metrics.as_ref().map(|m| &m.by_age_band_years),
            "view_spread": spread,
            "failed": failures.len(),
            "failures": failures,
            "quality_gate_refused": gate_refused,
            "mae_gate_accepted": mae_accepted,
        });
        writeln!(stdout, "{obj}")?;
    }
    Ok(if failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(super::EXIT_INPUT_FAILED)
    })
}

/// One labelled image: its estimate and, when the quality gate of `predict` and `serve`
/// would refuse it, why. Scored all the same, so the MAE stays comparable with the model
/// card; the user learns how many of these images would be refused.
fn score(
    config: &Config,
    model: &mut boneage::model::Model,
    path: &std::path::Path,
    case: &evaluate::Case,
) -> Result<(boneage::model::Estimate, Option<String>), String> {
    let r = source::read_file(path).map_err(|e| e.to_string())?;
    let model_err = |e: ModelError| format!("{}: {e}", path.display());
    let est = model.estimate(&r, case.sex).map_err(model_err)?;
    // The gate as predict and serve run it: the global checks, then the model's own (only
    // when the global ones pass: their reason is the one reported).
    let refused = if config.quality.enabled {
        match quality::check_radiograph(&r) {
            Err(why) => Some(why.to_string()),
            Ok(_) => refusal_after_inference(model, &r, case.sex, &est)
                .map_err(model_err)?
                .map(|refusal| refusal.to_string()),
        }
    } else {
        None
    };
    Ok((est, refused))
}

fn print_text(
    out: &mut impl Write,
    m: &Metrics,
    spread: Option<&SpreadCheck>,
    failed: usize,
) -> std::io::Result<()> {
    writeln!(out, "images:  {} analysed, {failed} failed", m.n)?;
    writeln!(out, "MAE:     {:.2} months", m.mae)?;
    writeln!(out, "RMSE:    {:.2} months", m.rmse)?;
    writeln!(out, "median absolute error: {:.2} months", m.median_abs_error)?;
    writeln!(out, "bias:    {:+.2} months (prediction - label)", m.bias)?;
    if let Some(c) = m.interval95_coverage {
        writeln!(out, "95% interval holds the label: {:.1}%", 100.0 * c)?;
    }
    let line = |out: &mut dyn Write, name: &str, g: &Group| {
        let covered = g
            .interval95_coverage
            .map_or(String::new(), |c| format!(", interval holds {:.1}%", 100.0 * c));
        writeln!(out, "  {name:<14} n={:<5} MAE {:.2}{covered}", g.n, g.mae)
    };
    for g in &m.by_sex {
        line(out, &g.name, g)?;
    }
    for g in &m.by_age_band_years {
        line(out, &format!("{} years", g.name), g)?;
    }
    if let Some(s) = spread {
        writeln!(out, "test-time views (warning from view SD {:.2} months):", s.warn_from_months)?;
        for g in [&s.flagged, &s.rest].into_iter().flatten() {
            line(out, &g.name, g)?;
        }
    }
    Ok(())
}
