//! `boneage eval`: accuracy over a labelled folder, with a progress bar on a terminal.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use boneage::config::Config;
use boneage::evaluate::{self, Case, Metrics, SpreadCheck};
use boneage::source;
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
    /// Write per-image predictions (id,male,boneage,predicted,error,view_sd) to this CSV
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
    let mut model = super::load_model(config)?;
    let bar = ProgressBar::new(cases.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} images, {per_sec}, ETA {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut results: Vec<(Case, f64, Option<f64>)> = Vec::with_capacity(cases.len());
    let mut failures: Vec<String> = Vec::new();
    for case in cases {
        let path = args.images.join(format!("{}.png", case.id));
        match source::read_file(&path).map_err(|e| e.to_string()).and_then(|r| {
            model.estimate(&r, case.sex).map_err(|e| format!("{}: {e}", path.display()))
        }) {
            Ok(est) => results.push((case, est.bone_age_months, est.view_spread_months)),
            Err(e) => failures.push(e),
        }
        bar.inc(1);
    }
    bar.finish_and_clear();

    if let Some(out) = &args.out {
        let mut w = csv::Writer::from_path(out)
            .with_context(|| format!("cannot write {}", out.display()))?;
        w.write_record(["id", "male", "boneage", "predicted", "error", "view_sd"])?;
        for (c, p, sd) in &results {
            let male = if c.sex == boneage::Sex::Male { "true" } else { "false" };
            w.write_record([
                c.id.as_str(),
                male,
                &c.bone_age_months.to_string(),
                &format!("{p:.3}"),
                &format!("{:.3}", p - c.bone_age_months),
                &sd.map_or(String::new(), |sd| format!("{sd:.3}")),
            ])?;
        }
        w.flush()?;
    }
    for f in &failures {
        eprintln!("boneage: failed: {f}");
    }
    let spread = SpreadCheck::compute(&results, model.contract.view_spread_warn_months);
    let scored: Vec<(Case, f64)> = results.into_iter().map(|(c, p, _)| (c, p)).collect();
    let metrics = Metrics::compute(&scored);
    let mut stdout = std::io::stdout().lock();
    if let Some(m) = &metrics {
        print_text(&mut stdout, m, spread.as_ref(), failures.len())?;
    } else {
        writeln!(stdout, "no image could be analysed ({} failed)", failures.len())?;
    }
    if args.json {
        let obj = serde_json::json!({
            "model": model.contract.model_id(),
            "n": metrics.as_ref().map_or(0, |m| m.n),
            "mae": metrics.as_ref().map(|m| m.mae),
            "rmse": metrics.as_ref().map(|m| m.rmse),
            "bias": metrics.as_ref().map(|m| m.bias),
            "by_sex": metrics.as_ref().map(|m| &m.by_sex),
            "by_age_band_years": metrics.as_ref().map(|m| &m.by_age_band_years),
            "view_spread": spread,
            "failed": failures.len(),
            "failures": failures,
        });
        writeln!(stdout, "{obj}")?;
    }
    Ok(if failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(super::EXIT_INPUT_FAILED)
    })
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
    writeln!(out, "bias:    {:+.2} months (prediction - label)", m.bias)?;
    for g in &m.by_sex {
        writeln!(out, "  {:<14} n={:<5} MAE {:.2}", g.name, g.n, g.mae)?;
    }
    for g in &m.by_age_band_years {
        writeln!(out, "  {:<14} n={:<5} MAE {:.2}", format!("{} years", g.name), g.n, g.mae)?;
    }
    if let Some(s) = spread {
        writeln!(out, "test-time views (warning from view SD {:.2} months):", s.warn_from_months)?;
        for g in [&s.flagged, &s.rest].into_iter().flatten() {
            writeln!(out, "  {:<14} n={:<5} MAE {:.2}", g.name, g.n, g.mae)?;
        }
    }
    Ok(())
}
