//! The tract backend: pure Rust, no system libraries, runs on every target we ship.
//!
//! The plan is built once for the contract's concrete input shape and optimized
//! (`into_optimized`), which folds the network's constant subgraphs and picks kernels.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use tract_onnx::prelude::multithread::Executor;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::runtime::RunOptions;

use super::contract::{INPUT_IMAGE, INPUT_MALE};
use super::{Backend, Contract, ContractError, DeclaredInput, Dim, Inferred, ModelError, OpTime};
use crate::config::{BackendKind, Precision};
use crate::preprocess::Input;

type Plan = Arc<TypedRunnableModel>;

pub(super) struct TractBackend {
    plan: Plan,
    precision: Precision,
}

fn load_err(path: &Path, e: impl std::fmt::Display) -> ModelError {
    ModelError::Load { path: path.to_path_buf(), message: format!("{e:#}") }
}

fn proto(path: &Path) -> Result<tract_onnx::pb::ModelProto, ModelError> {
    let problem = if path.is_dir() {
        Some("is a folder; pass the .onnx file inside it")
    } else if path.metadata().is_ok_and(|m| m.len() == 0) {
        Some("file is empty (0 bytes); copy the model file again")
    } else {
        None
    };
    if let Some(message) = problem {
        return Err(ModelError::Load { path: path.to_path_buf(), message: message.into() });
    }
    if !path.is_file() {
        return Err(ModelError::Load {
            path: path.to_path_buf(),
            message: "no such file; pass --model FILE, or set [model] path in a --config file"
                .into(),
        });
    }
    tract_onnx::onnx()
        .proto_model_for_path(path)
        .map_err(|e| load_err(path, format!("not a readable ONNX file: {e}")))
}

fn contract_of(path: &Path, proto: &tract_onnx::pb::ModelProto) -> Result<Contract, ModelError> {
    let meta: HashMap<String, String> =
        proto.metadata_props.iter().map(|e| (e.key.clone(), e.value.clone())).collect();
    Contract::from_metadata(&meta)
        .map_err(|source| ModelError::Contract { path: path.to_path_buf(), source })
}

/// The element type and shape the file declares for the graph input `name` (an input with
/// no tensor type reads as a non-float without a shape, which the contract refuses).
fn declared(proto: &tract_onnx::pb::ModelProto, name: &str) -> DeclaredInput {
    use tract_onnx::pb::tensor_shape_proto::dimension::Value;
    use tract_onnx::pb::type_proto::Value as TypeValue;
    let tensor = proto
        .graph
        .as_ref()
        .and_then(|g| g.input.iter().find(|i| i.name == name))
        .and_then(|i| i.r#type.as_ref())
        .and_then(|t| t.value.as_ref())
        .map(|TypeValue::TensorType(t)| t);
    let Some(tensor) = tensor else {
        return DeclaredInput { float32: false, type_name: "untyped input".into(), shape: None };
    };
    let float = tract_onnx::pb::tensor_proto::DataType::Float as i32;
    let type_name = match tract_onnx::pb::tensor_proto::DataType::try_from(tensor.elem_type) {
        Ok(t) => format!("{t:?}").to_lowercase(),
        Err(_) => format!("ONNX type {}", tensor.elem_type),
    };
    let shape = tensor.shape.as_ref().map(|s| {
        s.dim
            .iter()
            .map(|d| match &d.value {
                Some(Value::DimValue(n)) => Dim::Fixed(*n),
                Some(Value::DimParam(p)) => Dim::Symbolic(p.clone()),
                None => Dim::Symbolic(String::new()),
            })
            .collect()
    });
    DeclaredInput { float32: tensor.elem_type == float, type_name, shape }
}

pub(super) fn read_contract(path: &Path) -> Result<Contract, ModelError> {
    let proto = proto(path)?;
    contract_of(path, &proto)
}

impl TractBackend {
    pub(super) fn load(
        path: &Path,
        threads: usize,
        precision: Precision,
    ) -> Result<(Contract, TractBackend), ModelError> {
        let proto = proto(path)?;
        let contract = contract_of(path, &proto)?;
        let p = &contract.preprocess;
        let outputs: Vec<String> = proto
            .graph
            .as_ref()
            .map(|g| g.output.iter().map(|o| o.name.clone()).collect())
            .unwrap_or_default();
        let (image, male) = (declared(&proto, INPUT_IMAGE), declared(&proto, INPUT_MALE));
        let mut model =
            tract_onnx::onnx().model_for_proto_model(&proto).map_err(|e| load_err(path, e))?;
        // The protobuf holds a full copy of the weights: free it before optimizing, which
        // makes further copies (packed kernels), to keep the load's peak memory down.
        drop(proto);
        let contract_err = |source| ModelError::Contract { path: path.to_path_buf(), source };
        let names: Vec<String> = model
            .input_outlets()
            .map_err(|e| load_err(path, e))?
            .iter()
            .map(|o| model.node(o.node).name.clone())
            .collect();
        if names != [INPUT_IMAGE, INPUT_MALE] {
            return Err(contract_err(ContractError::Inputs { found: names }));
        }
        contract.check_outputs(&outputs).map_err(contract_err)?;
        // The facts set below replace the graph's declared shapes, so a graph made for
        // another input size would otherwise load and read wrongly.
        contract.check_inputs(&image, &male).map_err(contract_err)?;
        model = model
            .with_input_fact(0, f32::fact([1, p.channels, p.height, p.width]).into())
            .and_then(|m| m.with_input_fact(1, f32::fact([1, 1]).into()))
            .map_err(|e| load_err(path, e))?;
        let mut typed = model.into_typed().map_err(|e| load_err(path, format!("{e:#}")))?;
        if precision == Precision::F16 {
            // tract's own translator: every f32 node, the inputs and output included, in f16.
            let to_f16 = tract_onnx::tract_core::transform::get_transform("f32_to_f16")
                .map_err(|e| load_err(path, e))?
                .ok_or_else(|| load_err(path, "this tract has no f32_to_f16 transform"))?;
            to_f16.transform(&mut typed).map_err(|e| load_err(path, format!("to f16: {e:#}")))?;
        }
        let optimized = typed
            .into_optimized()
            .map_err(|e| load_err(path, format!("tract cannot optimize it: {e:#}")))?;
        let options = RunOptions { executor: Some(executor(threads)?), ..RunOptions::default() };
        let plan = optimized.into_runnable_with_options(&options).map_err(|e| load_err(path, e))?;
        Ok((contract, TractBackend { plan, precision }))
    }
}

/// The backend's name in `--version`, STATUS and `bench`, with the precision when not f32.
pub(super) fn name(precision: Precision) -> &'static str {
    match precision {
        Precision::F32 => "tract",
        Precision::F16 => "tract (f16)",
    }
}

/// tract's matrix products on `threads` cores (0 = all); 1 runs inline, no pool.
///
/// # Errors
/// [`ModelError::Unavailable`] for more than one thread in a build without the
/// `multithread` feature (no thread pool compiled in, to keep small builds small).
fn executor(threads: usize) -> Result<Executor, ModelError> {
    let n = if threads == 0 {
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
    } else {
        threads
    };
    if n <= 1 {
        return Ok(Executor::SingleThread);
    }
    #[cfg(feature = "multithread")]
    return Ok(Executor::multithread(n));
    #[cfg(not(feature = "multithread"))]
    Err(ModelError::Unavailable {
        backend: "tract",
        reason: format!(
            "threads = {threads} ([model] threads or --threads) needs multithreaded matrix \
             products, which this build leaves out (built without the `multithread` \
             feature); use threads = 1 or a default build"
        ),
    })
}

impl Backend for TractBackend {
    fn name(&self) -> &str {
        name(self.precision)
    }

    fn kind(&self) -> BackendKind {
        BackendKind::Tract
    }

    fn infer(&mut self, input: &Input, male: f32) -> Result<Inferred, ModelError> {
        let err = |e: TractError| ModelError::Inference(format!("{e:#}"));
        let out = self.plan.run(self.inputs(input, male).map_err(err)?).map_err(err)?;
        let scalar = |t: &TValue| -> Result<f32, ModelError> {
            t.cast_to::<f32>()
                .map_err(err)?
                .to_plain_array_view::<f32>()
                .map_err(err)?
                .iter()
                .next()
                .copied()
                .ok_or_else(|| ModelError::Inference("empty output tensor".into()))
        };
        let months = scalar(
            out.first().ok_or_else(|| ModelError::Inference("model produced no output".into()))?,
        )?;
        let ood_score = out.get(1).map(scalar).transpose()?;
        Ok(Inferred { months, ood_score })
    }

    fn op_profile(
        &mut self,
        input: &Input,
        male: f32,
        runs: usize,
    ) -> Option<Result<Vec<OpTime>, ModelError>> {
        Some(self.profile(input, male, runs).map_err(|e| ModelError::Inference(format!("{e:#}"))))
    }
}

impl TractBackend {
    /// The plan's inputs, in its float type.
    fn inputs(&self, input: &Input, male: f32) -> TractResult<TVec<TValue>> {
        let image = Tensor::from_shape(&input.shape, &input.data)?;
        let male = tensor2(&[[male]]);
        Ok(match self.precision {
            Precision::F32 => tvec!(image.into(), male.into()),
            Precision::F16 => tvec!(
                image.cast_to::<f16>()?.into_owned().into(),
                male.cast_to::<f16>()?.into_owned().into()
            ),
        })
    }

    /// Runs the plan `runs` times, timing each node's evaluation the way tract's own
    /// command-line profiler does, and sums the times per operator type.
    fn profile(&self, input: &Input, male: f32, runs: usize) -> TractResult<Vec<OpTime>> {
        let inputs = self.inputs(input, male)?;
        let mut state = self.plan.spawn()?;
        let mut per_op: HashMap<String, (std::collections::HashSet<usize>, Duration)> =
            HashMap::new();
        for _ in 0..runs {
            state.run_plan_with_eval(inputs.clone(), |ctx, st, node, inputs| {
                let started = Instant::now();
                let out = tract_onnx::tract_core::plan::eval(ctx, st, node, inputs);
                let entry = per_op.entry(node.op().name().to_string()).or_default();
                entry.0.insert(node.id);
                entry.1 += started.elapsed();
                out
            })?;
        }
        let mut ops: Vec<OpTime> = per_op
            .into_iter()
            .map(|(op, (nodes, total))| OpTime { op, nodes: nodes.len(), total })
            .collect();
        ops.sort_by_key(|t| std::cmp::Reverse(t.total));
        Ok(ops)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn more_than_one_thread_needs_the_multithread_feature() {
        assert!(matches!(executor(1), Ok(Executor::SingleThread)));
        match executor(2) {
            #[cfg(feature = "multithread")]
            Ok(e) => assert!(matches!(e, Executor::MultiThread(_))),
            #[cfg(not(feature = "multithread"))]
            Err(e) => {
                let msg = e.to_string();
                assert!(msg.contains("threads = 2") && msg.contains("use threads = 1"), "{msg}");
            }
            #[allow(unreachable_patterns)]
            _ => panic!("wrong executor for 2 threads in this build"),
        }
    }
}
