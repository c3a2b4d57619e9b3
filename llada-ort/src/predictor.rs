//! [`OrtPredictor`]: an ONNX model of a LLaDA mask predictor behind [`MaskPredictor`].

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use llada_core::{ForwardRequest, MaskPredictor};
use ort::session::builder::{GraphOptimizationLevel, SessionBuilder};
use ort::session::{Session, SessionInputValue};
use ort::value::{TensorElementType, TensorRef, ValueType};

use crate::error::OrtError;
use crate::kv::KvGraph;
use crate::runtime;

/// Graph optimisation level of ONNX Runtime.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum GraphOptimization {
    /// No graph optimisation.
    Disable,
    /// Constant folding and redundant-node elimination.
    Basic,
    /// Basic plus node fusions.
    Extended,
    /// Everything, layout optimisations included (the default).
    #[default]
    All,
}

/// Where ONNX Runtime runs the model. CPU is always available; the others need their cargo
/// feature and a runtime library built with them. CUDA falls back to CPU (with a warning) when
/// it cannot start; the pass-through providers report an error instead.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ExecutionProvider {
    /// The CPU provider.
    Cpu,
    /// NVIDIA CUDA (feature `cuda`).
    Cuda {
        /// GPU index.
        device_id: i32,
    },
    /// NVIDIA TensorRT (feature `tensorrt`).
    TensorRt {
        /// GPU index.
        device_id: i32,
    },
    /// Apple Core ML (feature `coreml`).
    CoreMl,
    /// Windows DirectML (feature `directml`).
    DirectMl {
        /// Adapter index.
        device_id: i32,
    },
    /// Android NNAPI (feature `nnapi`).
    Nnapi,
    /// XNNPACK (feature `xnnpack`).
    Xnnpack,
}

impl ExecutionProvider {
    /// The provider's name.
    pub fn name(&self) -> &'static str {
        match self {
            ExecutionProvider::Cpu => "cpu",
            ExecutionProvider::Cuda { .. } => "cuda",
            ExecutionProvider::TensorRt { .. } => "tensorrt",
            ExecutionProvider::CoreMl => "coreml",
            ExecutionProvider::DirectMl { .. } => "directml",
            ExecutionProvider::Nnapi => "nnapi",
            ExecutionProvider::Xnnpack => "xnnpack",
        }
    }
}

/// Builds an [`OrtPredictor`].
#[derive(Clone, Debug)]
pub struct OrtPredictorBuilder {
    model: PathBuf,
    library: Option<PathBuf>,
    intra_threads: Option<usize>,
    optimization: GraphOptimization,
    providers: Vec<ExecutionProvider>,
    input_ids: Option<String>,
    attention_mask: Option<String>,
    logits: Option<String>,
    max_sequence_length: Option<usize>,
    vocab_size: Option<usize>,
    shifted_logits: Option<bool>,
}

impl OrtPredictorBuilder {
    /// The runtime library to load (otherwise `ORT_DYLIB_PATH`). Only the first library loaded
    /// in a process is used.
    pub fn library(mut self, path: impl AsRef<Path>) -> Self {
        self.library = Some(path.as_ref().to_path_buf());
        self
    }

    /// Intra-op threads (default: ONNX Runtime's choice, one per core).
    pub fn intra_threads(mut self, threads: usize) -> Self {
        self.intra_threads = Some(threads);
        self
    }

    /// Graph optimisation level (default: all).
    pub fn optimization(mut self, level: GraphOptimization) -> Self {
        self.optimization = level;
        self
    }

    /// Adds an execution provider, tried in the order added, before the CPU.
    pub fn execution_provider(mut self, provider: ExecutionProvider) -> Self {
        self.providers.push(provider);
        self
    }

    /// Name of the token-id input (default: discovered, `input_ids` preferred).
    pub fn input_ids_name(mut self, name: impl Into<String>) -> Self {
        self.input_ids = Some(name.into());
        self
    }

    /// Name of the attention-mask input (default: `attention_mask` when the model has it).
    pub fn attention_mask_name(mut self, name: impl Into<String>) -> Self {
        self.attention_mask = Some(name.into());
        self
    }

    /// Name of the logits output (default: `logits`, or the only output).
    pub fn logits_name(mut self, name: impl Into<String>) -> Self {
        self.logits = Some(name.into());
        self
    }

    /// Longest sequence to accept (default: unlimited; the `llada` pipeline passes the
    /// model's `max_sequence_length`).
    pub fn max_sequence_length(mut self, len: usize) -> Self {
        self.max_sequence_length = Some(len);
        self
    }

    /// Logits per position, for models whose output leaves it dynamic.
    pub fn vocab_size(mut self, vocab: usize) -> Self {
        self.vocab_size = Some(vocab);
        self
    }

    /// Whether the model's prediction for position `i` is its output row `i − 1` (Dream;
    /// see [`MaskPredictor::shifted_logits`]). Default: what the export's metadata says
    /// (`llada.shift_logits`, written by the project's exporter), else `false`.
    pub fn shifted_logits(mut self, shifted: bool) -> Self {
        self.shifted_logits = Some(shifted);
        self
    }

    /// Loads the runtime (if this process has not yet), creates the session and checks the
    /// model's inputs and output.
    pub fn build(self) -> Result<OrtPredictor, OrtError> {
        let path = self.model.clone();
        if !path.is_file() {
            return Err(OrtError::ModelNotFound { path });
        }
        let environment = runtime::environment(self.library.as_deref())?;
        let model_error = |source: ort::Error| OrtError::Model {
            path: path.clone(),
            source,
        };
        let mut builder = Session::builder(&environment).map_err(model_error)?;
        builder = builder
            .with_optimization_level(match self.optimization {
                GraphOptimization::Disable => GraphOptimizationLevel::Disable,
                GraphOptimization::Basic => GraphOptimizationLevel::Level1,
                GraphOptimization::Extended => GraphOptimizationLevel::Level2,
                GraphOptimization::All => GraphOptimizationLevel::All,
            })
            .map_err(|e| model_error(e.into()))?;
        if let Some(threads) = self.intra_threads {
            builder = builder
                .with_intra_threads(threads)
                .map_err(|e| model_error(e.into()))?;
        }
        let mut providers = Vec::new();
        for provider in &self.providers {
            let (next, started) = register(builder, *provider)?;
            builder = next;
            if started {
                providers.push(provider.name());
            }
        }
        providers.push("cpu");
        let session = builder.commit_from_file(&path).map_err(model_error)?;
        SESSIONS.fetch_add(1, Ordering::Relaxed);
        let max_len = self.max_sequence_length.unwrap_or(usize::MAX);
        #[allow(unused_mut)]
        let mut predictor = OrtPredictor::from_session(session, path, &self, providers, max_len)?;
        #[cfg(feature = "cuda")]
        if let Some(device_id) = self.providers.iter().find_map(|p| match p {
            ExecutionProvider::Cuda { device_id } => Some(*device_id),
            _ => None,
        }) && predictor.providers.contains(&"cuda")
        {
            predictor.keep_cache_on_cuda(device_id)?;
        }
        Ok(predictor)
    }
}

/// Registers one execution provider. Returns the builder and whether the provider started.
// Without provider features every arm returns early and the registration is unreachable.
#[allow(unreachable_code, unused_variables)]
fn register(
    builder: SessionBuilder,
    provider: ExecutionProvider,
) -> Result<(SessionBuilder, bool), OrtError> {
    #[allow(unused_imports)]
    use ort::ep::ExecutionProvider as _;
    let dispatch: ort::ep::ExecutionProviderDispatch = match provider {
        ExecutionProvider::Cpu => return Ok((builder, false)),
        #[cfg(feature = "cuda")]
        ExecutionProvider::Cuda { device_id } => {
            ort::ep::CUDA::default().with_device_id(device_id).build()
        }
        #[cfg(feature = "tensorrt")]
        ExecutionProvider::TensorRt { device_id } => ort::ep::TensorRT::default()
            .with_device_id(device_id)
            .build(),
        #[cfg(feature = "coreml")]
        ExecutionProvider::CoreMl => ort::ep::CoreML::default().build(),
        #[cfg(feature = "directml")]
        ExecutionProvider::DirectMl { device_id } => ort::ep::DirectML::default()
            .with_device_id(device_id)
            .build(),
        #[cfg(feature = "nnapi")]
        ExecutionProvider::Nnapi => ort::ep::NNAPI::default().build(),
        #[cfg(feature = "xnnpack")]
        ExecutionProvider::Xnnpack => ort::ep::XNNPACK::default().build(),
        #[allow(unreachable_patterns)]
        other => return Err(OrtError::ProviderNotCompiled(other.name())),
    };
    match builder.with_execution_providers([dispatch.error_on_failure()]) {
        Ok(builder) => {
            tracing::info!(provider = provider.name(), "execution provider registered");
            Ok((builder, true))
        }
        Err(e) if matches!(provider, ExecutionProvider::Cuda { .. }) => {
            tracing::warn!("CUDA execution provider could not start ({e}); falling back to CPU");
            Ok((e.recover(), false))
        }
        Err(e) => Err(OrtError::Provider {
            name: provider.name(),
            message: e.to_string(),
        }),
    }
}

/// Sessions created in this process.
static SESSIONS: AtomicUsize = AtomicUsize::new(0);

/// How many ONNX Runtime sessions this process has created (each holds its own copy of the
/// optimised graph and its buffers): for hosts and tests that check a model is not opened
/// more often than they expect.
pub fn sessions_created() -> usize {
    SESSIONS.load(Ordering::Relaxed)
}

/// Integer inputs in the type the model declares.
#[derive(Debug)]
enum IntBuffer {
    I64(Vec<i64>),
    I32(Vec<i32>),
}

impl IntBuffer {
    fn new(ty: TensorElementType) -> Self {
        if ty == TensorElementType::Int32 {
            IntBuffer::I32(Vec::new())
        } else {
            IntBuffer::I64(Vec::new())
        }
    }

    /// Refills the buffer with `values` (it only grows).
    fn fill(&mut self, values: impl Iterator<Item = i64>) {
        match self {
            IntBuffer::I64(v) => {
                v.clear();
                v.extend(values);
            }
            IntBuffer::I32(v) => {
                v.clear();
                v.extend(values.map(|x| x as i32));
            }
        }
    }

    fn tensor(&self, batch: usize, seq: usize) -> ort::Result<SessionInputValue<'_>> {
        Ok(match self {
            IntBuffer::I64(v) => TensorRef::from_array_view(([batch, seq], v.as_slice()))?.into(),
            IntBuffer::I32(v) => TensorRef::from_array_view(([batch, seq], v.as_slice()))?.into(),
        })
    }
}

/// The graph input that makes attention block-causal: the block length, int64 `[1]`
/// (LLaDA2.x exports).
pub const BLOCK_LENGTH_INPUT: &str = "block_length";

/// A LLaDA mask predictor running an ONNX model in ONNX Runtime.
///
/// The model takes token ids `[batch, seq]` (int64 or int32) and, optionally, an attention mask
/// of the same shape, and returns logits `[batch, seq, vocab]` (float32). Only the requested
/// window of logit rows is copied out. A model with a [`BLOCK_LENGTH_INPUT`] input attends
/// block-causally on the absolute grid of that block length (LLaDA2.x): it answers
/// block-causal requests, running only the positions up to the end of the window's block.
pub struct OrtPredictor {
    session: Session,
    path: PathBuf,
    ids_name: String,
    mask_name: Option<String>,
    logits_name: String,
    ids: IntBuffer,
    mask: IntBuffer,
    vocab: usize,
    max_len: usize,
    providers: Vec<&'static str>,
    shifted: bool,
    /// Whether the graph has the block-length input (and the model was trained so).
    block_causal: bool,
    /// The cached graph's interface and cache, when the model is one (boxed: its buffers and
    /// binding make it several times the rest of the predictor).
    kv: Option<Box<KvGraph>>,
    /// A plain graph was asked for a cache once (and said it has none).
    warned_no_cache: bool,
}

impl std::fmt::Debug for OrtPredictor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrtPredictor")
            .field("model", &self.path)
            .field("input_ids", &self.ids_name)
            .field("attention_mask", &self.mask_name)
            .field("logits", &self.logits_name)
            .field("vocab", &self.vocab)
            .field("providers", &self.providers)
            .finish()
    }
}

fn describe(ty: &ValueType) -> String {
    ty.to_string()
}

impl OrtPredictor {
    /// A builder for the model at `path`.
    pub fn builder(path: impl AsRef<Path>) -> OrtPredictorBuilder {
        OrtPredictorBuilder {
            model: path.as_ref().to_path_buf(),
            library: None,
            intra_threads: None,
            optimization: GraphOptimization::All,
            providers: Vec::new(),
            input_ids: None,
            attention_mask: None,
            logits: None,
            max_sequence_length: None,
            vocab_size: None,
            shifted_logits: None,
        }
    }

    fn from_session(
        session: Session,
        path: PathBuf,
        options: &OrtPredictorBuilder,
        providers: Vec<&'static str>,
        max_len: usize,
    ) -> Result<Self, OrtError> {
        let bad = |reason: String| OrtError::Signature {
            path: path.clone(),
            reason,
        };
        let inputs: Vec<(String, ValueType)> = session
            .inputs()
            .iter()
            .map(|o| (o.name().to_string(), o.dtype().clone()))
            .collect();
        let outputs: Vec<(String, ValueType)> = session
            .outputs()
            .iter()
            .map(|o| (o.name().to_string(), o.dtype().clone()))
            .collect();
        let listing = |items: &[(String, ValueType)]| {
            items
                .iter()
                .map(|(n, t)| format!("{n}: {}", describe(t)))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let int_matrix = |name: &str, ty: &ValueType| -> Result<TensorElementType, OrtError> {
            match ty {
                ValueType::Tensor {
                    ty: et @ (TensorElementType::Int64 | TensorElementType::Int32),
                    shape,
                    ..
                } if shape.len() == 2 => Ok(*et),
                other => Err(bad(format!(
                    "input `{name}` is {}, expected an int64 or int32 tensor [batch, seq]",
                    describe(other)
                ))),
            }
        };

        // Token ids: the named input, else `input_ids`, else the first integer input.
        let ids_name = match &options.input_ids {
            Some(n) => n.clone(),
            None if inputs.iter().any(|(n, _)| n == "input_ids") => "input_ids".to_string(),
            None => inputs
                .iter()
                .find(|(n, t)| {
                    Some(n.as_str()) != options.attention_mask.as_deref()
                        && n != "attention_mask"
                        && int_matrix(n, t).is_ok()
                })
                .map(|(n, _)| n.clone())
                .ok_or_else(|| {
                    bad(format!(
                        "no token-id input (int64/int32 [batch, seq]); the model has inputs [{}]",
                        listing(&inputs)
                    ))
                })?,
        };
        let ids_type = match inputs.iter().find(|(n, _)| *n == ids_name) {
            Some((n, t)) => int_matrix(n, t)?,
            None => {
                return Err(bad(format!(
                    "no input named `{ids_name}`; the model has inputs [{}]",
                    listing(&inputs)
                )));
            }
        };
        let mask_name = match &options.attention_mask {
            Some(n) if inputs.iter().any(|(m, _)| m == n) => Some(n.clone()),
            Some(n) => {
                return Err(bad(format!(
                    "no input named `{n}`; the model has inputs [{}]",
                    listing(&inputs)
                )));
            }
            None => inputs
                .iter()
                .any(|(n, _)| n == "attention_mask")
                .then(|| "attention_mask".to_string()),
        };
        let mask_type = match &mask_name {
            Some(name) => int_matrix(
                name,
                &inputs.iter().find(|(n, _)| n == name).expect("present").1,
            )?,
            None => TensorElementType::Int64,
        };
        let block_causal = inputs.iter().any(|(n, _)| n == BLOCK_LENGTH_INPUT);
        let kv = KvGraph::detect(&inputs, &outputs, &bad)?;
        if let Some((extra, ty)) = inputs.iter().find(|(n, _)| {
            *n != ids_name
                && Some(n) != mask_name.as_ref()
                && n != BLOCK_LENGTH_INPUT
                && !kv.as_ref().is_some_and(|kv| kv.is_cache_input(n))
        }) {
            return Err(bad(format!(
                "unexpected input `{extra}` ({}); a mask predictor feeds only token ids, an attention mask and (block diffusion) `{BLOCK_LENGTH_INPUT}`",
                describe(ty)
            )));
        }

        let logits_name = match &options.logits {
            Some(n) => n.clone(),
            None if outputs.iter().any(|(n, _)| n == "logits") => "logits".to_string(),
            None if outputs.len() == 1 => outputs[0].0.clone(),
            None => {
                return Err(bad(format!(
                    "no `logits` output; the model has outputs [{}]",
                    listing(&outputs)
                )));
            }
        };
        let vocab = match outputs.iter().find(|(n, _)| *n == logits_name) {
            Some((
                _,
                ValueType::Tensor {
                    ty: TensorElementType::Float32,
                    shape,
                    ..
                },
            )) if shape.len() == 3 => match (shape[2], options.vocab_size) {
                (v, _) if v > 0 => v as usize,
                (_, Some(v)) => v,
                _ => {
                    return Err(bad(format!(
                        "output `{logits_name}` leaves the vocabulary dimension dynamic; set it with vocab_size()"
                    )));
                }
            },
            Some((_, other)) => {
                return Err(bad(format!(
                    "output `{logits_name}` is {}, expected float32 logits [batch, seq, vocab]",
                    describe(other)
                )));
            }
            None => {
                return Err(bad(format!(
                    "no output named `{logits_name}`; the model has outputs [{}]",
                    listing(&outputs)
                )));
            }
        };
        let declared = session
            .metadata()
            .ok()
            .and_then(|m| m.custom("llada.shift_logits"));
        let shifted = match (options.shifted_logits, declared.as_deref()) {
            (Some(shifted), _) => shifted,
            (None, None) => false,
            (None, Some("true")) => true,
            (None, Some("false")) => false,
            (None, Some(other)) => {
                return Err(bad(format!(
                    "metadata llada.shift_logits is {other:?}, expected \"true\" or \"false\""
                )));
            }
        };
        tracing::debug!(model = %path.display(), ids = %ids_name, mask = ?mask_name, logits = %logits_name, vocab, shifted, "ONNX predictor ready");
        Ok(Self {
            session,
            path,
            ids_name,
            mask_name,
            logits_name,
            ids: IntBuffer::new(ids_type),
            mask: IntBuffer::new(mask_type),
            vocab,
            max_len,
            providers,
            shifted,
            block_causal,
            kv: kv.map(Box::new),
            warned_no_cache: false,
        })
    }

    /// Whether the model is a cached graph (the exporter's `--graph cached`): the key/value
    /// cache as inputs and outputs, so that `--cache prefix|dual` (and LLaDA2.x's exact prefix
    /// cache) compute only the block, as on the ndarray backend. A plain graph runs every pass
    /// in full.
    pub fn has_cache(&self) -> bool {
        self.kv.is_some()
    }

    /// With the CUDA provider: the cached graph's keys and values stay in GPU memory between
    /// steps (bound as device tensors; only the ids, the mask and the logits window cross to
    /// the host).
    #[cfg(feature = "cuda")]
    fn keep_cache_on_cuda(&mut self, device_id: i32) -> Result<(), OrtError> {
        use ort::memory::{AllocationDevice, Allocator, AllocatorType, MemoryInfo, MemoryType};
        let Some(kv) = self.kv.as_mut() else {
            return Ok(());
        };
        let info = MemoryInfo::new(
            AllocationDevice::CUDA,
            device_id,
            AllocatorType::Device,
            MemoryType::Default,
        )
        .map_err(OrtError::Run)?;
        let allocator = Allocator::new(&self.session, info).map_err(OrtError::Run)?;
        kv.on_device(allocator);
        Ok(())
    }

    /// Execution providers in use, in priority order (`"cpu"` last).
    pub fn providers(&self) -> &[&'static str] {
        &self.providers
    }

    /// Name of the token-id input.
    pub fn input_ids_name(&self) -> &str {
        &self.ids_name
    }

    /// Name of the attention-mask input, if the model has one.
    pub fn attention_mask_name(&self) -> Option<&str> {
        self.mask_name.as_deref()
    }

    /// The forward pass (see [`MaskPredictor::forward`]).
    pub fn forward(
        &mut self,
        request: &ForwardRequest<'_>,
        logits: &mut [f32],
    ) -> Result<(), OrtError> {
        let (batch, seq) = (request.batch(), request.seq_len());
        request.check_logits(logits, self.vocab)?;
        if seq > self.max_len {
            return Err(OrtError::TooLong {
                seq_len: seq,
                max: self.max_len,
            });
        }
        if let Some((_, _, id)) = request.first_id_outside(self.vocab) {
            return Err(OrtError::TokenOutOfVocab {
                id,
                vocab: self.vocab,
            });
        }
        let block = request.block_causal();
        if let (Some(block), false) = (block, self.block_causal) {
            return Err(OrtError::BlockCausal {
                path: self.path.clone(),
                block,
            });
        }
        if block.is_none() && self.block_causal {
            return Err(OrtError::BidirectionalRequest {
                path: self.path.clone(),
            });
        }
        let hides_padding = request.attention_mask().is_some_and(|m| m.contains(&0));
        if self.mask_name.is_none() && hides_padding {
            return Err(OrtError::NoAttentionMask {
                path: self.path.clone(),
            });
        }
        if let Some(kv) = &mut self.kv {
            return kv.forward(
                &mut self.session,
                request,
                (self.vocab, &self.logits_name),
                logits,
            );
        }
        if request.cache().is_some() && !self.warned_no_cache {
            self.warned_no_cache = true;
            tracing::warn!(
                model = %self.path.display(),
                "the graph has no key/value inputs: every pass runs in full (export it with `llada-ort/export/export_onnx.py --graph cached` for the prefix and dual caches)"
            );
        }
        // Block-causal: nothing after the window's block is attended to; run up to there.
        let seq = request.attended_end();
        let full = request.seq_len();
        self.ids.fill(
            request
                .ids()
                .chunks_exact(full)
                .flat_map(|row| &row[..seq])
                .map(|&id| i64::from(id)),
        );
        let run_error = OrtError::Run;
        let Self {
            session,
            ids,
            mask,
            ids_name,
            mask_name,
            logits_name,
            vocab,
            ..
        } = self;
        let mut inputs: Vec<(Cow<'_, str>, SessionInputValue<'_>)> = Vec::with_capacity(3);
        inputs.push((
            Cow::Borrowed(ids_name.as_str()),
            ids.tensor(batch, seq).map_err(run_error)?,
        ));
        if let Some(name) = mask_name {
            match request.attention_mask() {
                Some(m) => mask.fill(
                    m.chunks_exact(full)
                        .flat_map(|row| &row[..seq])
                        .map(|&v| i64::from(v != 0)),
                ),
                None => mask.fill(std::iter::repeat_n(1, batch * seq)),
            }
            inputs.push((
                Cow::Borrowed(name.as_str()),
                mask.tensor(batch, seq).map_err(run_error)?,
            ));
        }
        if let Some(block) = block {
            let value = ort::value::Tensor::from_array(([1usize], vec![block as i64]))
                .map_err(run_error)?;
            inputs.push((Cow::Borrowed(BLOCK_LENGTH_INPUT), value.into()));
        }
        let outputs = session.run(inputs).map_err(run_error)?;
        let value = outputs
            .get(logits_name.as_str())
            .ok_or_else(|| OrtError::Output(format!("the session returned no `{logits_name}`")))?;
        let (shape, data) = value.try_extract_tensor::<f32>().map_err(run_error)?;
        if **shape != [batch as i64, seq as i64, *vocab as i64] {
            return Err(OrtError::Output(format!(
                "`{logits_name}` has shape {shape:?}, expected [{batch}, {seq}, {vocab}]"
            )));
        }
        let window = request.window();
        let rows = window.len() * *vocab;
        for (b, out) in logits.chunks_exact_mut(rows).enumerate() {
            let start = (b * seq + window.start) * *vocab;
            out.copy_from_slice(&data[start..start + rows]);
        }
        Ok(())
    }
}

impl MaskPredictor for OrtPredictor {
    type Error = OrtError;

    fn vocab_size(&self) -> usize {
        self.vocab
    }

    fn max_sequence_length(&self) -> usize {
        self.max_len
    }

    fn shifted_logits(&self) -> bool {
        self.shifted
    }

    fn block_causal(&self) -> bool {
        self.block_causal
    }

    fn forward(
        &mut self,
        request: &ForwardRequest<'_>,
        logits: &mut [f32],
    ) -> Result<(), OrtError> {
        OrtPredictor::forward(self, request, logits)
    }
}
