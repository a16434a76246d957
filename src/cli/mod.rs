//! Command-line interface: clap definitions, config + flag merging, dispatch.
//!
//! Exit codes: 0 success; 1 some inputs failed (the others were still processed);
//! 2 the command could not run at all (bad flag, config or model).

mod bench;
mod eval;
mod predict;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use boneage::config::Config;
use boneage::model::Model;
use clap::{Parser, Subcommand};

pub const EXIT_INPUT_FAILED: u8 = 1;
pub const EXIT_USAGE: u8 = 2;

#[derive(Parser, Debug)]
#[command(
    name = "boneage",
    about = "Estimate bone age from a left-hand radiograph and the child's sex",
    long_about = "Estimate skeletal (bone) age in months from a left-hand radiograph \
                  (PNG, JPEG, TIFF, BMP or DICOM) and the child's sex.\n\
                  Decision support for a qualified clinician; not a certified medical device.",
    disable_version_flag = true
)]
struct Cli {
    /// Configuration file (default: firmware-config/default.toml in the binary's folder when
    /// that holds firmware-config/, as in an installation, else in the working directory;
    /// where that file is missing, the built-in copy of it)
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// ONNX model file (overrides [model] path)
    #[arg(long, global = true, value_name = "FILE")]
    model: Option<PathBuf>,
    /// Inference threads, 0 = one per core (overrides [model] threads)
    #[arg(long, global = true, value_name = "N")]
    threads: Option<usize>,
    /// One inference pass per image instead of the model's test-time views (overrides
    /// [model] tta; faster, about 0.2 months less accurate with the shipped model)
    #[arg(long, global = true)]
    no_tta: bool,
    /// Print the program and model versions
    #[arg(short = 'V', long)]
    version: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Estimate bone age for one or more radiographs
    Predict(predict::Args),
    /// Measure accuracy on a labelled folder (id,male,boneage + <id>.png)
    Eval(eval::Args),
    /// Measure load time, latency and memory on this machine
    Bench(bench::Args),
    /// Run the appliance: hot folder, TCP and serial control, as configured
    Serve,
    /// Copy the result store to a new file, safely while `serve` runs
    Backup {
        /// The copy to write (must not exist), e.g. /media/usb/results-2026-11-27.db
        dest: PathBuf,
    },
    /// Show the model's contract and metadata
    ModelInfo {
        /// One JSON object instead of text
        #[arg(long)]
        json: bool,
    },
}

pub fn run() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    if !matches!(cli.command, Some(Command::Serve)) {
        quiet_on_closed_pipe();
    }
    let installed = installation();
    let root = installed.clone().unwrap_or_default();
    let mut config = match &cli.config {
        // What the unit's file leaves out is the installation's, paths included.
        Some(path) if installed.is_some() => Config::load_in(path, &root.join("firmware-config"))?,
        Some(path) => Config::load(path)?,
        None => {
            // An edited default.toml of the installation is what its owner expects to apply;
            // the compiled-in copy serves only where there is no file.
            let file = root.join("firmware-config").join("default.toml");
            if file.is_file() {
                Config::load(&file)?
            } else {
                Config::builtin_in(&root)?
            }
        }
    };
    if let Some(model) = &cli.model {
        config.model.path = model.clone();
    }
    if let Some(threads) = cli.threads {
        // The same bound as `[model] threads` in a config file.
        anyhow::ensure!(
            threads <= boneage::config::MAX_THREADS,
            "--threads {threads}: expected 0 (one per core) to {}",
            boneage::config::MAX_THREADS
        );
        config.model.threads = threads;
    }
    if cli.no_tta {
        config.model.tta = false;
    }
    env_logger::Builder::new()
        .filter_level(config.log.level.as_filter())
        .parse_env("RUST_LOG")
        .init();

    if cli.version {
        // Cheap: reads only the model's metadata, never builds the plan.
        let (model, model_ok) = match Model::read_contract(&config.model.path) {
            Ok(c) => (format!("model {} ({})", c.model_id(), config.model.path.display()), true),
            Err(e) => (format!("model unavailable: {e}"), false),
        };
        let backend = boneage::model::check_backend(&config.model);
        let backend_ok = backend.is_ok();
        let backend = backend.unwrap_or_else(|not_usable| not_usable);
        writeln!(
            std::io::stdout(),
            "boneage {} [{}] ; {model} ; backend {backend}",
            env!("CARGO_PKG_VERSION"),
            build_features(),
        )
        .context("cannot write to standard output")?;
        // A unit check (docs/deploy.md) must be able to fail: exit 2 when the unit could
        // not analyse anything as configured.
        let usable = model_ok && backend_ok;
        return Ok(if usable { ExitCode::SUCCESS } else { ExitCode::from(EXIT_USAGE) });
    }
    let Some(command) = cli.command else {
        anyhow::bail!(
            "no command given; try `boneage predict IMAGE --sex female` or `boneage --help`"
        );
    };
    match command {
        Command::ModelInfo { json } => model_info(&config, json),
        Command::Predict(args) => predict::run(&config, args),
        Command::Eval(args) => eval::run(&config, args),
        Command::Bench(args) => bench::run(&config, args),
        Command::Serve => serve(&config),
        Command::Backup { dest } => backup(&config, &dest),
    }
}

/// Lets a one-shot command end quietly when its reader goes away (`boneage predict ... |
/// head -1`), as other command-line tools do, instead of panicking in `println!`. Rust
/// ignores SIGPIPE by default; `serve` keeps it ignored, so a client that disconnects
/// mid-reply costs only that connection.
fn quiet_on_closed_pipe() {
    // SAFETY: restores the default action of one signal at start-up, before any thread is
    // spawned; no handler code runs.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// SIGTERM/SIGINT set a flag; the loop finishes the analysis in progress and exits.
fn serve(config: &Config) -> anyhow::Result<ExitCode> {
    let shutdown = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, std::sync::Arc::clone(&shutdown))
            .context("cannot install signal handlers")?;
    }
    boneage::serve::run(config, shutdown, |running| {
        if let Some(addr) = running.tcp_addr {
            log::warn!("ready; protocol on tcp {addr}");
        } else {
            log::warn!("ready");
        }
    })?;
    Ok(ExitCode::SUCCESS)
}

/// A consistent copy of the store the configuration names, taken through SQLite while the
/// service may be writing to it; a plain file copy can catch it between two writes.
fn backup(config: &Config, dest: &std::path::Path) -> anyhow::Result<ExitCode> {
    let path = &config.store.path;
    anyhow::ensure!(
        path.is_file(),
        "no result store at {} ([store] path of the configuration); pass the unit's --config",
        path.display()
    );
    let store = boneage::store::Store::open(path)?;
    store.backup_to(dest)?;
    let copy = boneage::store::Store::open(dest)?;
    let (n, check) = (copy.count()?, copy.integrity_check()?);
    anyhow::ensure!(check == "ok", "backup {} failed its integrity check: {check}", dest.display());
    println!("{n} results copied from {} to {}", path.display(), dest.display());
    Ok(ExitCode::SUCCESS)
}

/// The installation the binary belongs to: its own folder when that has `firmware-config/`
/// beside it (e.g. `/opt/boneage/boneage`, also through a symlink in `/usr/local/bin`), so
/// `boneage predict` works from any working directory. `None` for a bare binary, whose
/// defaults are anchored in the working directory, as when run from the repository.
fn installation() -> Option<PathBuf> {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(PathBuf::from))
        .filter(|dir| dir.join("firmware-config").is_dir())
}

/// Loads the model named in the config, with the file in the error.
fn load_model(config: &Config) -> anyhow::Result<Model> {
    Model::load(&config.model).context("the model is needed for this command")
}

fn model_info(config: &Config, json: bool) -> anyhow::Result<ExitCode> {
    let c = Model::read_contract(&config.model.path)?;
    if json {
        let meta: serde_json::Map<String, serde_json::Value> =
            c.metadata.iter().map(|(k, v)| (k.clone(), v.clone().into())).collect();
        let obj = serde_json::json!({
            "path": config.model.path.display().to_string(),
            "name": c.name,
            "version": c.version,
            "metadata": meta,
        });
        println!("{obj}");
    } else {
        println!("model: {} ({})", c.model_id(), config.model.path.display());
        for (k, v) in &c.metadata {
            println!("  {k}: {v}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Cargo features this binary was built with, for `--version`: a size-first board build
/// (no `multithread`, no `jpegxl`) or a GPU build (`ort`) behaves differently, and support
/// asks first.
fn build_features() -> String {
    let features: Vec<&str> = [
        ("multithread", cfg!(feature = "multithread")),
        ("jpegxl", cfg!(feature = "jpegxl")),
        ("ort", cfg!(feature = "ort")),
    ]
    .into_iter()
    .filter_map(|(name, on)| on.then_some(name))
    .collect();
    if features.is_empty() {
        "features: none".into()
    } else {
        format!("features: {}", features.join(", "))
    }
}

/// Whether two paths name one existing file (links and `..` resolved): an output must not
/// replace an input.
fn same_file(a: &std::path::Path, b: &std::path::Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}
