//! The trained network: its contract (read from ONNX metadata) and the backends that run it.
//!
//! [`Model`] owns one [`Backend`], built once at start-up for the concrete input shape and
//! reused for every image. Backends only map an input tensor to months; everything that
//! depends on the recipe (size, normalization) is in [`Contract`].

mod contract;
mod tract;

pub use contract::{Contract, ContractError, Fit, Preprocess, ResizeFilter};

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::config::{BackendKind, ModelConfig};
use crate::preprocess::{self, Input};
use crate::report::Sex;
use crate::source::Radiograph;

/// Runs the network on one preprocessed input.
pub trait Backend: Send {
    /// Short name for logs, `--version`, and bench output.
    fn name(&self) -> &'static str;
    /// Bone age in months for one image.
    ///
    /// # Errors
    /// [`ModelError::Inference`] if the runtime fails (shape mismatch, out of memory).
    fn infer(&mut self, input: &Input, male: f32) -> Result<f32, ModelError>;
}

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("cannot load model {}: {message}", path.display())]
    Load { path: PathBuf, message: String },
    #[error("model {} does not follow the boneage contract: {source}; see docs/model-contract.md", path.display())]
    Contract { path: PathBuf, source: ContractError },
    #[error("inference failed: {0}")]
    Inference(String),
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
    /// Half-width of the calibrated 95% interval, when the model ships a table.
    pub interval95_months: Option<f64>,
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
        let (contract, backend): (Contract, Box<dyn Backend>) = match config.backend {
            BackendKind::Tract => {
                let (contract, b) = tract::TractBackend::load(path, config.threads)?;
                (contract, Box::new(b))
            }
        };
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

    /// Reads only the contract (metadata), without building the inference plan: cheap
    /// enough for `--version` and `model-info`.
    ///
    /// # Errors
    /// As [`Model::load`].
    pub fn read_contract(path: &Path) -> Result<Contract, ModelError> {
        tract::read_contract(path)
    }

    pub fn backend_name(&self) -> &'static str {
        self.backend.name()
    }

    /// Preprocesses per the contract; split from [`Model::infer`] so `bench` can time both.
    pub fn preprocess(&self, radiograph: &Radiograph) -> Input {
        preprocess::to_input(&radiograph.pixels, &self.contract.preprocess)
    }

    /// # Errors
    /// [`ModelError::Inference`] when the backend fails or returns a non-finite value.
    pub fn infer(&mut self, input: &Input, sex: Sex) -> Result<Estimate, ModelError> {
        let months = f64::from(self.backend.infer(input, sex.as_model_input())?);
        if !months.is_finite() {
            return Err(ModelError::Inference(format!("model returned {months}")));
        }
        Ok(Estimate {
            bone_age_months: months,
            interval95_months: self.contract.interval95_months(months),
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
        let mut sum = 0.0;
        for (dx, dy) in &shifts {
            sum += self.infer(&preprocess::shifted(input, *dx, *dy), sex)?.bone_age_months;
        }
        let months = sum / shifts.len() as f64;
        Ok(Estimate {
            bone_age_months: months,
            interval95_months: self.contract.interval95_months(months),
        })
    }

    /// Preprocess + inference over the configured views.
    ///
    /// # Errors
    /// As [`Model::infer`].
    pub fn estimate(&mut self, radiograph: &Radiograph, sex: Sex) -> Result<Estimate, ModelError> {
        let input = self.preprocess(radiograph);
        self.infer_views(&input, sex)
    }
}
