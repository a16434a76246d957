//! With `--features ort`: ONNX Runtime (CPU provider) and tract give the same bone age on the
//! bundled samples and the validation fixtures, and provider errors say what to do.
//! These tests need ONNX Runtime: run `scripts/test-ort.sh`, or set ORT_DYLIB_PATH yourself.
#![cfg(feature = "ort")]

mod common;

use boneage::config::{BackendKind, Config, ExecutionProviderKind, ModelConfig};
use boneage::model::{describe_backend, Model};
use boneage::source;
use boneage::Sex;

/// Fails (never skips) without ONNX Runtime: a build with the feature must test it.
fn require_ort_library() {
    match std::env::var_os("ORT_DYLIB_PATH") {
        Some(p) if !p.is_empty() => {}
        _ => panic!(
            "ORT_DYLIB_PATH is not set, and the `ort` feature's tests need ONNX Runtime. Run \
             scripts/test-ort.sh (installs the pinned onnxruntime wheel into .venv-ort and sets \
             it), or `pip install --no-deps -r scripts/requirements-ort.txt` and export \
             ORT_DYLIB_PATH=<site-packages>/onnxruntime/capi/libonnxruntime.so.<version>"
        ),
    }
}

fn model_config(backend: BackendKind, providers: &[ExecutionProviderKind]) -> ModelConfig {
    let mut config = Config::builtin().unwrap().model;
    config.path = common::model_path();
    config.backend = backend;
    config.execution_providers = providers.to_vec();
    // Empty: ORT_DYLIB_PATH decides, as on a unit configured through the environment.
    config.ort_library = Default::default();
    config
}

#[test]
fn ort_cpu_agrees_with_tract_on_samples_and_fixtures() {
    require_ort_library();
    let cpu = [ExecutionProviderKind::Cpu];
    let mut tract = Model::load(&model_config(BackendKind::Tract, &cpu)).unwrap();
    let mut ort = Model::load(&model_config(BackendKind::Ort, &cpu)).unwrap();
    assert_eq!(tract.backend_name(), "tract");
    assert_eq!(ort.backend_name(), "ort (CPUExecutionProvider)");

    let samples = common::root().join("samples");
    let mut cases =
        vec![(samples.join("1618.png"), Sex::Female), (samples.join("1724.dcm"), Sex::Male)];
    for (id, male, _, _) in common::expected() {
        cases.push((common::val_image(&id), if male { Sex::Male } else { Sex::Female }));
    }
    assert!(cases.len() >= 100, "need the validation fixtures, have {} images", cases.len());
    let mut worst = 0f64;
    for (path, sex) in &cases {
        let r = source::read_file(path).unwrap();
        let (ta, oa) = (tract.estimate(&r, *sex).unwrap(), ort.estimate(&r, *sex).unwrap());
        let (a, b) = (ta.bone_age_months, oa.bone_age_months);
        let diff = (a - b).abs();
        assert!(diff <= 0.05, "{}: tract {a:.4} vs ort {b:.4} months", path.display());
        worst = worst.max(diff);
        // Both runtimes read the likeness output too, and agree on it.
        let (sa, sb) = (ta.ood_score.unwrap(), oa.ood_score.unwrap());
        assert!((sa - sb).abs() <= 1e-3 * sa.max(1.0), "{}: score {sa} vs {sb}", path.display());
    }
    eprintln!("{} images: worst |tract - ort| = {worst:.5} months", cases.len());
}

#[test]
fn auto_uses_ort_when_it_loads() {
    require_ort_library();
    let config = model_config(BackendKind::Auto, &[ExecutionProviderKind::Cpu]);
    let model = Model::load(&config).unwrap();
    assert_eq!(model.backend_name(), "ort (CPUExecutionProvider)");
    assert_eq!(describe_backend(&config), "ort (CPUExecutionProvider)");
}

/// CoreML exists in no Linux or Windows build of ONNX Runtime, so this holds on GPU hosts too.
#[cfg(not(target_vendor = "apple"))]
#[test]
fn missing_provider_is_named_in_ort_mode_and_falls_back_in_auto() {
    require_ort_library();
    let providers = [ExecutionProviderKind::Coreml, ExecutionProviderKind::Cpu];
    let e = Model::load(&model_config(BackendKind::Ort, &providers)).err().unwrap().to_string();
    assert!(
        e.contains("\"coreml\" (CoreMLExecutionProvider) is not in the loaded ONNX Runtime")
            && e.contains("offers [cpu")
            && e.contains("remove \"coreml\" from [model] execution_providers"),
        "{e}"
    );
    let model = Model::load(&model_config(BackendKind::Auto, &providers)).unwrap();
    assert_eq!(model.backend_name(), "tract");
    let shown = describe_backend(&model_config(BackendKind::Auto, &providers));
    assert!(shown.starts_with("tract (auto: ") && shown.contains("coreml"), "{shown}");
}

/// ONNX Runtime is loaded once per process; another library later is refused, not ignored.
#[test]
fn a_second_library_in_the_same_process_is_refused() {
    require_ort_library();
    let cpu = [ExecutionProviderKind::Cpu];
    Model::load(&model_config(BackendKind::Ort, &cpu)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let other = dir.path().join("libonnxruntime.so");
    let lib = std::env::var_os("ORT_DYLIB_PATH").unwrap();
    std::fs::copy(lib, &other).unwrap();
    let mut config = model_config(BackendKind::Ort, &cpu);
    config.ort_library = other;
    let e = Model::load(&config).err().unwrap().to_string();
    assert!(e.contains("already loaded from"), "{e}");
}
