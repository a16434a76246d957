//! The ONNX Runtime backend (cargo feature `ort`), for GPUs and vendor accelerators through
//! ONNX Runtime's execution providers.
//!
//! ONNX Runtime is loaded at run time (`ort`'s `load-dynamic`), so the build downloads and
//! links nothing and one binary serves CPU-only and GPU units. `ort` panics when the library
//! is missing or too old, so [`init`] checks the library itself first and turns every such
//! case into a [`ModelError::Unavailable`] that `auto` can fall back from.

use std::ffi::CStr;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use ort::execution_providers::{
    CPUExecutionProvider, CUDAExecutionProvider, CoreMLExecutionProvider,
    DirectMLExecutionProvider, ExecutionProvider, OpenVINOExecutionProvider, ROCmExecutionProvider,
    TensorRTExecutionProvider,
};
use ort::session::builder::SessionBuilder;
use ort::session::Session;
use ort::tensor::TensorElementType;
use ort::value::{TensorRef, ValueType};

use super::contract::{INPUT_IMAGE, INPUT_MALE};
use super::{Backend, Contract, ContractError, DeclaredInput, Dim, Inferred, ModelError};
use crate::config::{BackendKind, ExecutionProviderKind, ModelConfig};
use crate::preprocess::Input;

/// What to do when ONNX Runtime cannot be loaded, appended to every such error.
const LIBRARY_HINT: &str = "set [model] ort_library or ORT_DYLIB_PATH to libonnxruntime.so.1.x \
     (from the `onnxruntime` Python wheel, onnxruntime/capi/; scripts/test-ort.sh installs one), \
     or use backend = \"tract\" (or \"auto\" to fall back to it)";

/// The library ONNX Runtime was loaded from: `ort` holds exactly one per process, so a later
/// request for another file must be refused rather than silently served by the first.
static LOADED: Mutex<Option<PathBuf>> = Mutex::new(None);

pub(super) struct OrtBackend {
    session: Session,
    /// `ort (CUDAExecutionProvider, CPUExecutionProvider)`: what actually registered.
    name: String,
}

fn unavailable(reason: impl Into<String>) -> ModelError {
    ModelError::Unavailable { backend: "ort", reason: reason.into() }
}

/// Resolves the configured library the way `ort` does (a relative name next to the
/// executable first), so the file checked here is the file `ort` loads.
fn resolve(library: &Path) -> PathBuf {
    if library.is_absolute() {
        return library.to_path_buf();
    }
    if let Some(beside) =
        std::env::current_exe().ok().and_then(|exe| exe.parent().map(|d| d.join(library)))
    {
        if beside.exists() {
            return beside;
        }
    }
    if library.components().count() > 1 {
        if let Ok(absolute) = std::fs::canonicalize(library) {
            return absolute;
        }
    }
    // A bare file name: left to the dynamic loader's search path (LD_LIBRARY_PATH, ldconfig).
    library.to_path_buf()
}

/// Opens `library` and reads its version: the checks `ort` would otherwise panic on.
fn check_library(library: &Path) -> Result<String, ModelError> {
    let shown = library.display();
    if library.components().count() > 1 && !library.exists() {
        return Err(unavailable(format!(
            "ONNX Runtime library {shown} does not exist; {LIBRARY_HINT}"
        )));
    }
    // SAFETY: loading a shared library runs its initializers; this is the file the operator
    // configured as ONNX Runtime, which `ort` is about to load anyway.
    let lib = unsafe { libloading::Library::new(library) }.map_err(|e| {
        unavailable(format!("cannot load ONNX Runtime library {shown}: {e}; {LIBRARY_HINT}"))
    })?;
    type GetApiBase = unsafe extern "C" fn() -> *const ort::sys::OrtApiBase;
    // SAFETY: `OrtGetApiBase` has this signature in every ONNX Runtime release.
    let get_base = unsafe { lib.get::<GetApiBase>(b"OrtGetApiBase") }.map_err(|e| {
        unavailable(format!("{shown} is not ONNX Runtime (no OrtGetApiBase: {e}); {LIBRARY_HINT}"))
    })?;
    // SAFETY: the symbol was found above; the base is checked for null before use, and the
    // version string is a static NUL-terminated string owned by the library.
    let version = unsafe {
        let base = get_base();
        if base.is_null() {
            return Err(unavailable(format!("{shown}: OrtGetApiBase returned null")));
        }
        CStr::from_ptr(((*base).GetVersionString)()).to_string_lossy().into_owned()
    };
    let minor = version.split('.').nth(1).and_then(|m| m.parse::<u32>().ok()).unwrap_or(0);
    if minor < ort::MINOR_VERSION {
        return Err(unavailable(format!(
            "ONNX Runtime {version} at {shown} is too old: this build needs 1.{}.x or newer; \
             {LIBRARY_HINT}",
            ort::MINOR_VERSION
        )));
    }
    Ok(version)
}

/// Loads ONNX Runtime from `library` once per process; later calls with the same file are
/// free. Must precede every other `ort` call, which would load (or panic) on its own.
fn init(library: &Path) -> Result<(), ModelError> {
    let library = resolve(library);
    let mut loaded = LOADED.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(first) = loaded.as_ref() {
        if *first == library {
            return Ok(());
        }
        return Err(unavailable(format!(
            "ONNX Runtime is already loaded from {} in this process, cannot also load {}",
            first.display(),
            library.display()
        )));
    }
    let version = check_library(&library)?;
    ort::init_from(library.to_string_lossy())
        .with_name("boneage")
        // A clinical appliance sends nothing anywhere (only Windows builds would).
        .with_telemetry(false)
        .commit()
        .map_err(|e| unavailable(format!("ONNX Runtime {version} did not start: {e}")))?;
    log::info!("loaded ONNX Runtime {version} from {}", library.display());
    *loaded = Some(library);
    Ok(())
}

fn provider(kind: ExecutionProviderKind) -> Box<dyn ExecutionProvider> {
    match kind {
        ExecutionProviderKind::Cpu => Box::new(CPUExecutionProvider::default()),
        ExecutionProviderKind::Cuda => Box::new(CUDAExecutionProvider::default()),
        ExecutionProviderKind::Tensorrt => Box::new(TensorRTExecutionProvider::default()),
        ExecutionProviderKind::Rocm => Box::new(ROCmExecutionProvider::default()),
        ExecutionProviderKind::Openvino => Box::new(OpenVINOExecutionProvider::default()),
        ExecutionProviderKind::Directml => Box::new(DirectMLExecutionProvider::default()),
        ExecutionProviderKind::Coreml => Box::new(CoreMLExecutionProvider::default()),
    }
}

const ALL_PROVIDERS: [ExecutionProviderKind; 7] = [
    ExecutionProviderKind::Cpu,
    ExecutionProviderKind::Cuda,
    ExecutionProviderKind::Tensorrt,
    ExecutionProviderKind::Rocm,
    ExecutionProviderKind::Openvino,
    ExecutionProviderKind::Directml,
    ExecutionProviderKind::Coreml,
];

/// Config names of the providers the loaded library offers, for error messages.
fn offered() -> String {
    let names: Vec<&str> = ALL_PROVIDERS
        .into_iter()
        .filter(|&k| {
            let ep = provider(k);
            ep.supported_by_platform() && ep.is_available().unwrap_or(false)
        })
        .map(ExecutionProviderKind::as_str)
        .collect();
    format!("[{}]", names.join(", "))
}

/// What to do about a provider that is missing or does not register.
fn provider_hint(kind: ExecutionProviderKind) -> String {
    let build = match kind {
        ExecutionProviderKind::Cpu => "",
        ExecutionProviderKind::Cuda | ExecutionProviderKind::Tensorrt => {
            "it needs the GPU build of ONNX Runtime (the `onnxruntime-gpu` wheel) with CUDA and \
             cuDNN (and TensorRT for \"tensorrt\") on the loader path, and an NVIDIA GPU; "
        }
        _ => "it needs an ONNX Runtime build that includes it, on a platform that has it; ",
    };
    format!(
        "{build}remove \"{}\" from [model] execution_providers, or use backend = \"auto\" to fall \
         back to tract",
        kind.as_str()
    )
}

/// Fails, naming what the library offers, unless `kind` is in the loaded ONNX Runtime.
fn check_available(kind: ExecutionProviderKind) -> Result<Box<dyn ExecutionProvider>, ModelError> {
    let ep = provider(kind);
    let available = ep.supported_by_platform()
        && ep.is_available().map_err(|e| unavailable(format!("ONNX Runtime: {e}")))?;
    if !available {
        return Err(unavailable(format!(
            "execution provider \"{}\" ({}) is not in the loaded ONNX Runtime, which offers {}; \
             {}",
            kind.as_str(),
            ep.name(),
            offered(),
            provider_hint(kind)
        )));
    }
    Ok(ep)
}

/// Registers every requested provider, in order, or says which one failed and why.
fn register(
    builder: &mut SessionBuilder,
    kinds: &[ExecutionProviderKind],
) -> Result<Vec<&'static str>, ModelError> {
    let mut names = Vec::with_capacity(kinds.len());
    for &kind in kinds {
        let ep = check_available(kind)?;
        ep.register(builder).map_err(|e| {
            unavailable(format!(
                "execution provider \"{}\" ({}) did not register: {}; {}",
                kind.as_str(),
                ep.name(),
                e.to_string().trim_end(),
                provider_hint(kind)
            ))
        })?;
        names.push(ep.name());
    }
    Ok(names)
}

impl OrtBackend {
    pub(super) fn load(config: &ModelConfig) -> Result<(Contract, OrtBackend), ModelError> {
        let path = &config.path;
        // The contract (metadata) is read the same way for every backend.
        let contract = super::tract::read_contract(path)?;
        init(&config.ort_library_path())?;
        let ort_err = |e: ort::Error| ModelError::Load {
            path: path.clone(),
            message: format!("ONNX Runtime: {e}"),
        };
        let mut builder = Session::builder().map_err(ort_err)?;
        // 0 keeps ONNX Runtime's default, one thread per physical core.
        if config.threads > 0 {
            builder = builder.with_intra_threads(config.threads).map_err(ort_err)?;
        }
        let names = register(&mut builder, &config.execution_providers)?;
        let session = builder.commit_from_file(path).map_err(ort_err)?;

        let contract_err = |source| ModelError::Contract { path: path.clone(), source };
        let inputs: Vec<String> = session.inputs.iter().map(|i| i.name.clone()).collect();
        if inputs != [INPUT_IMAGE, INPUT_MALE] {
            return Err(contract_err(ContractError::Inputs { found: inputs }));
        }
        let outputs: Vec<String> = session.outputs.iter().map(|o| o.name.clone()).collect();
        contract.check_outputs(&outputs).map_err(contract_err)?;
        let declared = |i: usize| declared(&session.inputs[i].input_type);
        contract.check_inputs(&declared(0), &declared(1)).map_err(contract_err)?;
        let name = format!("ort ({})", names.join(", "));
        Ok((contract, OrtBackend { session, name }))
    }
}

/// A graph input's element type and shape as ONNX Runtime reports them (a symbolic
/// dimension as -1, with its name beside it).
fn declared(value_type: &ValueType) -> DeclaredInput {
    match value_type {
        ValueType::Tensor { ty, shape, dimension_symbols } => DeclaredInput {
            float32: *ty == TensorElementType::Float32,
            type_name: ty.to_string(),
            shape: Some(
                shape
                    .iter()
                    .enumerate()
                    .map(|(axis, &n)| {
                        if n >= 0 {
                            Dim::Fixed(n)
                        } else {
                            Dim::Symbolic(dimension_symbols.get(axis).cloned().unwrap_or_default())
                        }
                    })
                    .collect(),
            ),
        },
        other => DeclaredInput { float32: false, type_name: format!("{other:?}"), shape: None },
    }
}

/// The backend name `config` would get, without building a session: for `--version`.
/// Registration problems that only show when a session is built are not caught here.
pub(super) fn describe(config: &ModelConfig) -> Result<String, ModelError> {
    init(&config.ort_library_path())?;
    let names = config
        .execution_providers
        .iter()
        .map(|&kind| check_available(kind).map(|ep| ep.name()))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(format!("ort ({})", names.join(", ")))
}

impl Backend for OrtBackend {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> BackendKind {
        BackendKind::Ort
    }

    fn infer(&mut self, input: &Input, male: f32) -> Result<Inferred, ModelError> {
        let err = |e: ort::Error| ModelError::Inference(format!("ONNX Runtime: {e}"));
        let image =
            TensorRef::from_array_view((input.shape, input.data.as_slice())).map_err(err)?;
        let male = [male];
        let male = TensorRef::from_array_view(([1usize, 1], &male[..])).map_err(err)?;
        let outputs = self
            .session
            .run(ort::inputs![INPUT_IMAGE => image, INPUT_MALE => male])
            .map_err(err)?;
        let scalar = |i: usize| -> Result<f32, ModelError> {
            let (_, values) = outputs[i].try_extract_tensor::<f32>().map_err(err)?;
            values
                .first()
                .copied()
                .ok_or_else(|| ModelError::Inference("empty output tensor".into()))
        };
        let months = scalar(0)?;
        let ood_score = if outputs.len() > 1 { Some(scalar(1)?) } else { None };
        Ok(Inferred { months, ood_score })
    }
}
