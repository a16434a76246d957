//! The trained network: its contract (read from ONNX metadata) and the backends that run it.
//!
//! [`Model`] owns one [`Backend`], built once at start-up for the concrete input shape and
//! reused for every image. Backends only map an input tensor to months; everything that
//! depends on the recipe (size, normalization) is in [`Contract`].
//!
//! Backends: tract (always) and ONNX Runtime (cargo feature `ort`), chosen by
//! `[model] backend`; `auto` prefers ONNX Runtime and falls back to tract.

mod contract;
mod memory;
#[cfg(feature = "ort")]
mod ort;
mod tract;

pub use contract::{
    Contract, ContractError, DeclaredInput, Dim, Fit, LikenessRule, Preprocess, ResizeFilter,
    ViewSpreadRule,
};

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[cfg(feature = "ort")]
use crate::config::Precision;
use crate::config::{BackendKind, ModelConfig};
use crate::preprocess::{self, Input};
use crate::report::Sex;
use crate::source::Radiograph;

/// Runs the network on one preprocessed input.
pub trait Backend: Send {
    /// Short name for logs, `--version`, STATUS and bench output, with the execution
    /// providers in use where the runtime has them: `ort (CPUExecutionProvider)`.
    fn name(&self) -> &str;
    /// Which `[model] backend` runtime this is, for errors that tell the user which setting
    /// to change.
    fn kind(&self) -> BackendKind;
    /// Bone age in months for one image, and its likeness score where the graph has one.
    ///
    /// # Errors
    /// [`ModelError::Inference`] if the runtime fails (shape mismatch, out of memory).
    fn infer(&mut self, input: &Input, male: f32) -> Result<Inferred, ModelError>;
    /// Where the time of `runs` inferences goes, per operator type, slowest first: what to
    /// tune on a new board. `None` where the runtime does not expose its steps (ONNX Runtime).
    fn op_profile(
        &mut self,
        _input: &Input,
        _male: f32,
        _runs: usize,
    ) -> Option<Result<Vec<OpTime>, ModelError>> {
        None
    }
}

/// One pass of the network.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Inferred {
    pub months: f32,
    /// The `ood_score` output, for a model that has one ([`LikenessRule`]).
    pub ood_score: Option<f32>,
}

/// Time spent in one operator type over a profile's runs.
#[derive(Debug, Clone, PartialEq)]
pub struct OpTime {
    /// Operator type as the runtime names it after optimization (`Conv`, `DepthWise`...).
    pub op: String,
    /// Nodes of that type in the optimized plan.
    pub nodes: usize,
    /// Total over all runs.
    pub total: std::time::Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("cannot load model {}: {message}", path.display())]
    Load { path: PathBuf, message: String },
    #[error("model {} does not follow the boneage contract: {source}; see docs/model-contract.md", path.display())]
    Contract { path: PathBuf, source: ContractError },
    #[error("inference failed: {0}")]
    Inference(String),
    /// The image cannot be made into the model's input (pixels that are not numbers).
    #[error(transparent)]
    Pixels(#[from] preprocess::NonFinitePixels),
    /// The configured backend cannot run here (not compiled in, library or provider missing).
    #[error("backend \"{backend}\" unavailable: {reason}")]
    Unavailable { backend: &'static str, reason: String },
}

/// Why `backend = "ort"` cannot work in a build without the feature.
#[cfg(not(feature = "ort"))]
const NO_ORT_FEATURE: &str =
    "built without the ort feature; rebuild with --features ort or use backend = \"tract\"";

type Loaded = (Contract, Box<dyn Backend>);

fn load_tract(config: &ModelConfig) -> Result<Loaded, ModelError> {
    let (contract, b) = tract::TractBackend::load(&config.path, config.threads, config.precision)?;
    Ok((contract, Box::new(b)))
}

#[cfg(feature = "ort")]
fn load_ort(config: &ModelConfig) -> Result<Loaded, ModelError> {
    if config.precision != Precision::F32 {
        return Err(ModelError::Unavailable { backend: "ort", reason: ORT_F32_ONLY.into() });
    }
    let (contract, b) = self::ort::OrtBackend::load(config)?;
    Ok((contract, Box::new(b)))
}

/// Why `precision = "f16"` and ONNX Runtime do not go together.
#[cfg(feature = "ort")]
const ORT_F32_ONLY: &str =
    "precision = \"f16\" applies to the tract backend only; set precision = \"f32\" or backend = \"tract\"";

#[cfg(not(feature = "ort"))]
fn load_ort(_config: &ModelConfig) -> Result<Loaded, ModelError> {
    Err(ModelError::Unavailable { backend: "ort", reason: NO_ORT_FEATURE.into() })
}

/// The backend `config` selects, named as [`Model::backend_name`] would name it, without
/// building an inference plan or session (cheap enough for `--version`). For `ort` and
/// `auto` this loads the ONNX Runtime library and checks the providers are in it.
pub fn describe_backend(config: &ModelConfig) -> String {
    check_backend(config).unwrap_or_else(|not_usable| not_usable)
}

/// The backend the config would run, or (as `Err`) why the configured one cannot run.
///
/// # Errors
/// The description of an unusable backend ("ort, not usable: ...").
pub fn check_backend(config: &ModelConfig) -> Result<String, String> {
    #[cfg(feature = "ort")]
    let ort = match config.precision {
        Precision::F32 => self::ort::describe(config),
        Precision::F16 => {
            Err(ModelError::Unavailable { backend: "ort", reason: ORT_F32_ONLY.into() })
        }
    };
    #[cfg(not(feature = "ort"))]
    let ort: Result<String, ModelError> =
        Err(ModelError::Unavailable { backend: "ort", reason: NO_ORT_FEATURE.into() });
    let tract = tract::name(config.precision);
    match (config.backend, ort) {
        (BackendKind::Tract, _) => Ok(tract.into()),
        (_, Ok(name)) => Ok(name),
        (BackendKind::Ort, Err(e)) => Err(format!("ort, not usable: {e}")),
        (BackendKind::Auto, Err(e)) => Ok(format!("{tract} (auto: {e})")),
    }
}

/// A loaded model ready to analyse radiographs.
pub struct Model {
    pub path: PathBuf,
    pub contract: Contract,
    backend: Box<dyn Backend>,
    /// Time to load, check and optimize the model (reported by `bench`).
    pub load_time: Duration,
    /// Average over the contract's test-time views (`[model] tta`).
    tta: bool,
}

/// The model's answer for one image.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Estimate {
    pub bone_age_months: f64,
    /// Half-width of the calibrated 95% interval, when the model ships a table; widened
    /// when the views disagree (see [`Contract::interval95_months`]).
    pub interval95_months: Option<f64>,
    /// Standard deviation of the test-time view readings (months); `None` for one view.
    /// A wide spread marks an unstable reading (see [`Contract::view_spread`]).
    pub view_spread_months: Option<f64>,
    /// How unlike the training radiographs the image is (mean over the views); `None` for
    /// a model without the score (see [`Contract::likeness`]).
    pub ood_score: Option<f64>,
    /// The score of the unshifted view alone, which the orientation and mirror checks
    /// compare with.
    pub centre_ood_score: Option<f64>,
}

impl Model {
    /// Loads and optimizes the model named in `config`.
    ///
    /// # Errors
    /// [`ModelError`] naming the file: missing, not ONNX, not following the contract, or
    /// rejected by the backend.
    pub fn load(config: &ModelConfig) -> Result<Model, ModelError> {
        let start = Instant::now();
        let path = &config.path;
        let (contract, backend) = memory::during_load(|| Model::load_backend(config))?;
        let load_time = start.elapsed();
        log::info!(
            "loaded model {} v{} with {} in {:.0} ms",
            path.display(),
            contract.version,
            backend.name(),
            load_time.as_secs_f64() * 1e3
        );
        Ok(Model { path: path.clone(), contract, backend, load_time, tta: config.tta })
    }

    /// The contract and backend for `config.backend`, `auto` falling back to tract.
    fn load_backend(config: &ModelConfig) -> Result<Loaded, ModelError> {
        let path = &config.path;
        Ok(match config.backend {
            BackendKind::Tract => load_tract(config)?,
            BackendKind::Ort => load_ort(config)?,
            BackendKind::Auto => match load_ort(config) {
                Ok(loaded) => loaded,
                // Not the runtime's fault: tract would refuse the file the same way.
                Err(e @ ModelError::Contract { .. }) => return Err(e),
                Err(_) if !path.is_file() => load_tract(config)?,
                Err(e) => {
                    log::warn!(
                        "backend = \"auto\": not using ONNX Runtime, falling back to tract: {e}"
                    );
                    load_tract(config)?
                }
            },
        })
    }

    /// Reads only the contract (metadata), without building the inference plan: cheap
    /// enough for `--version` and `model-info`.
    ///
    /// # Errors
    /// As [`Model::load`].
    pub fn read_contract(path: &Path) -> Result<Contract, ModelError> {
        tract::read_contract(path)
    }

    pub fn backend_name(&self) -> &str {
        self.backend.name()
    }

    /// Preprocesses per the contract; split from [`Model::infer`] so `bench` can time both.
    ///
    /// # Errors
    /// [`ModelError::Pixels`] for pixels that are not numbers.
    pub fn preprocess(&self, radiograph: &Radiograph) -> Result<Input, ModelError> {
        Ok(preprocess::to_input(&radiograph.pixels, &self.contract.preprocess)?)
    }

    /// # Errors
    /// [`ModelError::Inference`] when the backend fails or returns a non-finite value.
    pub fn infer(&mut self, input: &Input, sex: Sex) -> Result<Estimate, ModelError> {
        let out = self.backend.infer(input, sex.as_model_input())?;
        let months = f64::from(out.months);
        let ood_score = out.ood_score.map(f64::from);
        if !months.is_finite() || ood_score.is_some_and(|s| !s.is_finite()) {
            return Err(ModelError::Inference(format!(
                "model returned {months} months (likeness score {ood_score:?})"
            )));
        }
        Ok(Estimate {
            bone_age_months: months,
            interval95_months: self.contract.interval95_months(months, None),
            view_spread_months: None,
            ood_score,
            centre_ood_score: ood_score,
        })
    }

    /// The turn (degrees counter-clockwise: 90, 180 or 270) after which the radiograph
    /// looks clearly more like the training images than as given, by more than the
    /// model's `ood.orientation_margin`, and passes the likeness limit: then it was most
    /// likely sent turned. `None` when
    /// no turn does, or the model has no margin. Three more passes of the network.
    ///
    /// # Errors
    /// As [`Model::infer`].
    pub fn turn_to_upright(
        &mut self,
        radiograph: &Radiograph,
        sex: Sex,
        centre_ood_score: f64,
    ) -> Result<Option<u32>, ModelError> {
        let Some(rule) = self.contract.likeness else { return Ok(None) };
        let Some(margin) = rule.orientation_margin else { return Ok(None) };
        let input = self.preprocess(radiograph)?;
        let mut best: Option<(u32, f64)> = None;
        for quarter_turns in 1..4 {
            let Some(turned) = preprocess::rotated_ccw(&input, quarter_turns) else { continue };
            let Some(gain) = self.clear_gain(&turned, sex, centre_ood_score, margin, rule)? else {
                continue;
            };
            if best.is_none_or(|(_, g)| gain > g) {
                best = Some((quarter_turns * 90, gain));
            }
        }
        Ok(best.map(|(degrees, _)| degrees))
    }

    /// Whether the radiograph looks clearly more like the training images mirrored
    /// left-right than as given (its score drops by more than `ood.mirror_margin`, to under
    /// the likeness limit): most likely a right hand, which the model, trained on left
    /// hands, reads less accurately. `false` when the model has no margin. One more pass.
    ///
    /// # Errors
    /// As [`Model::infer`].
    pub fn looks_mirrored(
        &mut self,
        radiograph: &Radiograph,
        sex: Sex,
        centre_ood_score: f64,
    ) -> Result<bool, ModelError> {
        let Some(rule) = self.contract.likeness else { return Ok(false) };
        let Some(margin) = rule.mirror_margin else { return Ok(false) };
        let input = preprocess::mirrored(&self.preprocess(radiograph)?);
        Ok(self.clear_gain(&input, sex, centre_ood_score, margin, rule)?.is_some())
    }

    /// The orientation and mirror checks' one criterion: how much lower the likeness score
    /// of `view` (the unshifted image turned or mirrored) is than `centre_ood_score`, when
    /// that is more than `margin` and `view` passes the likeness limit (a picture unlike any
    /// radiograph may merely score a little lower when transformed); `None` otherwise.
    fn clear_gain(
        &mut self,
        view: &Input,
        sex: Sex,
        centre_ood_score: f64,
        margin: f64,
        rule: LikenessRule,
    ) -> Result<Option<f64>, ModelError> {
        let Some(score) = self.infer(view, sex)?.ood_score else { return Ok(None) };
        let gain = centre_ood_score - score;
        Ok((gain > margin && !rule.refuses(score)).then_some(gain))
    }

    /// Per-operator time of `runs` passes on one input (see [`Backend::op_profile`]).
    ///
    /// # Errors
    /// [`ModelError::Unavailable`] for a backend that cannot break its time down;
    /// [`ModelError::Inference`] as [`Model::infer`].
    pub fn op_profile(
        &mut self,
        input: &Input,
        sex: Sex,
        runs: usize,
    ) -> Result<Vec<OpTime>, ModelError> {
        let (name, backend) = (self.backend.name().to_string(), self.backend.kind().as_str());
        self.backend.op_profile(input, sex.as_model_input(), runs).unwrap_or_else(|| {
            Err(ModelError::Unavailable {
                backend,
                reason: format!(
                    "{name} does not expose per-operator times; use backend = \"tract\""
                ),
            })
        })
    }

    /// Inference passes per reading: the number of test-time views, or 1.
    pub fn views(&self) -> usize {
        if self.tta {
            self.contract.preprocess.tta_shifts_px.len().max(1)
        } else {
            1
        }
    }

    /// The reading for one preprocessed input: the mean over the test-time views when
    /// `[model] tta` is on and the model lists views, else one pass.
    ///
    /// # Errors
    /// As [`Model::infer`].
    pub fn infer_views(&mut self, input: &Input, sex: Sex) -> Result<Estimate, ModelError> {
        if self.views() == 1 {
            return self.infer(input, sex);
        }
        let shifts = self.contract.preprocess.tta_shifts_px.clone();
        let mut readings = Vec::with_capacity(shifts.len());
        let mut scores = Vec::with_capacity(shifts.len());
        let mut centre_ood_score = None;
        for (dx, dy) in &shifts {
            let view = self.infer(&preprocess::shifted(input, *dx, *dy), sex)?;
            readings.push(view.bone_age_months);
            scores.extend(view.ood_score);
            if (*dx, *dy) == (0, 0) {
                centre_ood_score = view.ood_score;
            }
        }
        if centre_ood_score.is_none() && scores.len() == readings.len() && !scores.is_empty() {
            // No unshifted view among the model's views: one more pass gives it.
            centre_ood_score = self.infer(input, sex)?.ood_score;
        }
        let (months, spread) = mean_and_sd(&readings);
        Ok(Estimate {
            bone_age_months: months,
            interval95_months: self.contract.interval95_months(months, Some(spread)),
            view_spread_months: Some(spread),
            ood_score: (!scores.is_empty()).then(|| mean_and_sd(&scores).0),
            centre_ood_score,
        })
    }

    /// Preprocess + inference over the configured views.
    ///
    /// # Errors
    /// As [`Model::infer`].
    pub fn estimate(&mut self, radiograph: &Radiograph, sex: Sex) -> Result<Estimate, ModelError> {
        let input = self.preprocess(radiograph)?;
        self.infer_views(&input, sex)
    }
}

/// Mean and population standard deviation (as numpy's `std`, which calibrated the
/// threshold in models/train/export.py); `values` is never empty here.
fn mean_and_sd(values: &[f64]) -> (f64, f64) {
    let n = values.len().max(1) as f64;
    let mean = values.iter().sum::<f64>() / n;
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
    (mean, var.sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, Precision};

    #[test]
    fn view_spread_is_the_population_sd() {
        let (m, sd) = mean_and_sd(&[100.0, 102.0, 98.0, 104.0, 96.0]);
        assert!((m - 100.0).abs() < 1e-12);
        assert!((sd - 8.0f64.sqrt()).abs() < 1e-12, "{sd}");
        assert_eq!(mean_and_sd(&[7.0]), (7.0, 0.0));
    }

    /// The shipped model, with ONNX Runtime pointed at a file that does not exist.
    fn config(backend: BackendKind) -> ModelConfig {
        let mut c = Config::builtin().unwrap().model;
        c.path = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/boneage-lite0.onnx");
        c.backend = backend;
        c.ort_library = PathBuf::from("/nonexistent/onnxruntime/libonnxruntime.so");
        c
    }

    #[test]
    fn auto_falls_back_to_tract_when_the_library_is_missing() {
        let model = Model::load(&config(BackendKind::Auto)).unwrap();
        assert_eq!(model.backend_name(), "tract");
        let shown = describe_backend(&config(BackendKind::Auto));
        assert!(shown.starts_with("tract (auto: backend \"ort\" unavailable: "), "{shown}");
    }

    #[test]
    fn ort_without_library_or_feature_fails_saying_what_to_do() {
        let e = Model::load(&config(BackendKind::Ort)).err().unwrap();
        assert!(matches!(e, ModelError::Unavailable { backend: "ort", .. }), "{e}");
        let msg = e.to_string();
        if cfg!(feature = "ort") {
            assert!(
                msg.contains("/nonexistent/onnxruntime/libonnxruntime.so does not exist")
                    && msg.contains("ORT_DYLIB_PATH")
                    && msg.contains("ort_library"),
                "{msg}"
            );
        } else {
            assert!(
                msg.contains(
                    "built without the ort feature; rebuild with --features ort or use backend = \"tract\""
                ),
                "{msg}"
            );
        }
        assert!(describe_backend(&config(BackendKind::Ort)).starts_with("ort, not usable: "));
    }

    /// f16 on a CPU without half-precision arithmetic is emulated (slow), so one image.
    #[test]
    fn f16_plan_agrees_with_f32_within_half_a_month() {
        let radiograph = crate::source::read_file(Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/samples/1618.png"
        )))
        .unwrap();
        let mut c = config(BackendKind::Tract);
        c.tta = false;
        let mut f32_model = Model::load(&c).unwrap();
        c.precision = Precision::F16;
        let mut f16_model = Model::load(&c).unwrap();
        assert_eq!(f16_model.backend_name(), "tract (f16)");
        let input = f32_model.preprocess(&radiograph).unwrap();
        let a = f32_model.infer(&input, Sex::Female).unwrap().bone_age_months;
        let b = f16_model.infer(&input, Sex::Female).unwrap().bone_age_months;
        assert!((a - b).abs() < 0.5, "f32 {a} vs f16 {b}");
    }

    #[test]
    fn f16_is_for_tract_only() {
        let mut c = config(BackendKind::Ort);
        c.precision = Precision::F16;
        let e = Model::load(&c).err().unwrap();
        assert!(matches!(e, ModelError::Unavailable { backend: "ort", .. }), "{e}");
        #[cfg(feature = "ort")]
        assert!(e.to_string().contains(ORT_F32_ONLY), "{e}");
        c.backend = BackendKind::Auto;
        assert!(
            describe_backend(&c).starts_with("tract (f16) (auto: "),
            "{}",
            describe_backend(&c)
        );
        c.backend = BackendKind::Tract;
        assert_eq!(describe_backend(&c), "tract (f16)");
    }

    /// A copy of the shipped model in `dir` with metadata values replaced byte for byte
    /// (`from` and `to` of equal length, so the protobuf stays valid).
    fn patched_model(dir: &Path, edits: &[(&[u8], &[u8])]) -> PathBuf {
        let mut bytes = std::fs::read(config(BackendKind::Tract).path).unwrap();
        for (from, to) in edits {
            assert_eq!(from.len(), to.len());
            let at = bytes.windows(from.len()).position(|w| w == *from).unwrap();
            bytes[at..at + to.len()].copy_from_slice(to);
        }
        let path = dir.join("patched.onnx");
        std::fs::write(&path, bytes).unwrap();
        path
    }

    /// tract's input facts replace the graph's declared shapes, so metadata saying 128 px
    /// over a graph made for 100 px loaded and read 65.0 instead of 69.5 months; 3 channels
    /// failed deep in tract. Both are refused at load, naming the keys and the graph's shape.
    #[test]
    fn metadata_that_disagrees_with_the_graph_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let size: &[(&[u8], &[u8])] = &[
            (b"preprocess.width\x12\x03100", b"preprocess.width\x12\x03128"),
            (b"preprocess.height\x12\x03100", b"preprocess.height\x12\x03128"),
        ];
        let channels: &[(&[u8], &[u8])] =
            &[(b"preprocess.channels\x12\x011", b"preprocess.channels\x12\x013")];
        for (edits, wanted) in [
            (size, "preprocess.height 128, preprocess.width 128) needs float32 [1, 1, 128, 128]"),
            (channels, "(preprocess.channels 3, preprocess.height 100, preprocess.width 100) needs float32 [1, 3, 100, 100]"),
        ] {
            let mut c = config(BackendKind::Tract);
            c.path = patched_model(dir.path(), edits);
            // The metadata alone is still a valid contract (model-info shows it).
            Model::read_contract(&c.path).unwrap();
            for backend in [BackendKind::Tract, BackendKind::Auto] {
                c.backend = backend;
                let e = Model::load(&c).err().unwrap();
                assert!(
                    matches!(e, ModelError::Contract { source: ContractError::Shape { .. }, .. }),
                    "{e}"
                );
                let msg = e.to_string();
                assert!(msg.contains("graph input `image` is declared as float32 [1, 1, 100, 100]"), "{msg}");
                assert!(msg.contains(wanted) && msg.contains("re-export the model"), "{msg}");
            }
        }
    }

    #[test]
    fn the_shipped_graph_has_the_inputs_its_metadata_says() {
        let mut c = config(BackendKind::Tract);
        c.tta = false;
        Model::load(&c).unwrap();
    }

    #[test]
    fn tract_is_named_tract() {
        assert_eq!(describe_backend(&config(BackendKind::Tract)), "tract");
    }
}
