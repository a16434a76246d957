//! `boneage bench`: what this machine does with this model. Numbers, not assertions:
//! record them in docs/benchmarks.md with the command and the machine.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use boneage::config::Config;
use boneage::model::OpTime;
use boneage::Sex;
use boneage::{quality, source};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Folder of radiographs to cycle through (default: the bundled samples)
    #[arg(long, value_name = "DIR", default_value = "samples")]
    images: PathBuf,
    /// Timed iterations (after warm-up)
    #[arg(long, default_value_t = 200,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    runs: usize,
    /// Untimed warm-up iterations
    #[arg(long, default_value_t = 10)]
    warmup: usize,
    /// One JSON object instead of text
    #[arg(long)]
    json: bool,
    /// Also break the inference time down per operator type (tract backend)
    #[arg(long)]
    ops: bool,
}

pub fn run(config: &Config, args: Args) -> anyhow::Result<ExitCode> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(&args.images)
        .with_context(|| {
            let why = if args.images == Path::new("samples") {
                " (the bundled samples/ folder comes with the source tree, not with an \
                 installed unit)"
            } else {
                ""
            };
            format!(
                "cannot list {}{why}; pass --images DIR with a few radiographs",
                args.images.display()
            )
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    // Only files that decode: a README beside the samples is not an error here.
    files.retain(|p| source::read_file(p).is_ok());
    anyhow::ensure!(!files.is_empty(), "no readable radiograph in {}", args.images.display());

    let mut model = super::load_model(config)?;
    let load_ms = model.load_time.as_secs_f64() * 1e3;
    let (mut pre, mut inf) = (Vec::with_capacity(args.runs), Vec::with_capacity(args.runs));
    let mut reading = Vec::with_capacity(args.runs);
    let mut checks = Vec::with_capacity(args.runs);
    let views = model.views();
    let gate_passes = gate_passes(config, &model);
    for i in 0..args.warmup + args.runs {
        let path = &files[i % files.len()];
        let t0 = Instant::now();
        let radiograph = source::read_file(path)?;
        let input = model.preprocess(&radiograph)?;
        let t1 = Instant::now();
        let sex = if i % 2 == 0 { Sex::Male } else { Sex::Female };
        let one = model.infer(&input, sex)?;
        let t2 = Instant::now();
        // The whole reading: every test-time view (one pass when TTA is off).
        let estimate = if views > 1 { model.infer_views(&input, sex)? } else { one };
        let t3 = Instant::now();
        // What predict and serve add with the quality gate on: the image statistics, then
        // the likeness score of the image turned three ways and mirrored. Run whatever the
        // gate decides, so every run times the same work.
        if config.quality.enabled {
            let _verdict = quality::check_radiograph(&radiograph);
            if let Some(centre) = estimate.centre_ood_score {
                model.turn_to_upright(&radiograph, sex, centre)?;
                model.looks_mirrored(&radiograph, sex, centre)?;
            }
        }
        let t4 = Instant::now();
        if i >= args.warmup {
            pre.push(t1 - t0);
            inf.push(t2 - t1);
            reading.push(if views > 1 { t3 - t2 } else { t2 - t1 });
            checks.push(t4 - t3);
        }
    }
    let timed: Duration = pre.iter().chain(reading.iter()).sum();
    let per_s = args.runs as f64 / timed.as_secs_f64();
    let per_s_checked = args.runs as f64 / (timed + checks.iter().sum::<Duration>()).as_secs_f64();
    let (pre50, pre95) = (percentile_ms(&mut pre, 0.50), percentile_ms(&mut pre, 0.95));
    let (inf50, inf95) = (percentile_ms(&mut inf, 0.50), percentile_ms(&mut inf, 0.95));
    let (read50, read95) = (percentile_ms(&mut reading, 0.50), percentile_ms(&mut reading, 0.95));
    let (check50, check95) = (percentile_ms(&mut checks, 0.50), percentile_ms(&mut checks, 0.95));
    let rss = peak_rss_kib();
    let profile_runs = args.runs.max(1);
    let ops = if args.ops {
        let input = model.preprocess(&source::read_file(&files[0])?)?;
        Some(model.op_profile(&input, Sex::Male, profile_runs)?)
    } else {
        None
    };
    let op_ms = |t: &OpTime| t.total.as_secs_f64() * 1e3 / profile_runs as f64;
    if args.json {
        let obj = serde_json::json!({
            "model": model.contract.model_id(),
            "backend": model.backend_name(),
            "threads": config.model.threads,
            "images": files.len(),
            "runs": args.runs,
            "load_ms": load_ms,
            "preprocess_ms_p50": pre50, "preprocess_ms_p95": pre95,
            "inference_ms_p50": inf50, "inference_ms_p95": inf95,
            "views": views,
            "reading_ms_p50": read50, "reading_ms_p95": read95,
            "images_per_s": per_s,
            "quality_gate": config.quality.enabled,
            "gate_passes": gate_passes,
            "gate_checks_ms_p50": check50, "gate_checks_ms_p95": check95,
            "images_per_s_with_gate": per_s_checked,
            "peak_rss_mib": rss.map(|k| k as f64 / 1024.0),
            "ops": ops.as_ref().map(|ops| ops.iter().map(|t| serde_json::json!({
                "op": t.op, "nodes": t.nodes, "ms_per_pass": op_ms(t),
            })).collect::<Vec<_>>()),
        });
        println!("{obj}");
    } else {
        println!(
            "model:       {} ({}, threads={})",
            model.contract.model_id(),
            model.backend_name(),
            config.model.threads
        );
        println!(
            "images:      {} files, {} timed runs after {} warm-up",
            files.len(),
            args.runs,
            args.warmup
        );
        println!("load+optimize: {load_ms:.0} ms");
        println!("decode+preprocess: p50 {pre50:.2} ms, p95 {pre95:.2} ms");
        println!("inference:   p50 {inf50:.2} ms, p95 {inf95:.2} ms (one pass)");
        println!("reading:     p50 {read50:.2} ms, p95 {read95:.2} ms ({views} view(s))");
        println!("throughput:  {per_s:.1} images/s (decode + preprocess + reading)");
        if config.quality.enabled {
            println!(
                "gate checks: p50 {check50:.2} ms, p95 {check95:.2} ms (image statistics + \
                 {gate_passes} pass(es): the model's orientation and mirror checks)"
            );
            println!(
                "with gate:   {per_s_checked:.1} images/s (as predict and serve with [quality] \
                 enabled: {} passes per image)",
                views + gate_passes
            );
        } else {
            println!("gate checks: none ([quality] enabled = false: the views are all)");
        }
        match rss {
            Some(k) => println!("peak RSS:    {:.1} MiB", k as f64 / 1024.0),
            None => println!("peak RSS:    unavailable on this OS"),
        }
        if let Some(ops) = &ops {
            let total: f64 = ops.iter().map(op_ms).sum();
            println!("per operator (ms per pass, {total:.2} ms in all):");
            for t in ops {
                let ms = op_ms(t);
                println!(
                    "  {:<28} {:>3} nodes {ms:>8.3} ms {:>5.1}%",
                    t.op,
                    t.nodes,
                    100.0 * ms / total
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Passes of the network the quality gate adds to a reading: three turns for a model with
/// `ood.orientation_margin` (square input only), one mirror for `ood.mirror_margin`.
fn gate_passes(config: &Config, model: &boneage::Model) -> usize {
    let Some(rule) = model.contract.likeness.filter(|_| config.quality.enabled) else {
        return 0;
    };
    let p = &model.contract.preprocess;
    let turns = if rule.orientation_margin.is_some() {
        if p.width == p.height {
            3
        } else {
            1
        }
    } else {
        0
    };
    turns + usize::from(rule.mirror_margin.is_some())
}

fn percentile_ms(v: &mut [Duration], q: f64) -> f64 {
    v.sort();
    let idx = ((v.len() as f64 - 1.0) * q).round() as usize;
    v.get(idx).map_or(f64::NAN, |d| d.as_secs_f64() * 1e3)
}

/// Peak resident set size (VmHWM) from /proc; Linux only.
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
