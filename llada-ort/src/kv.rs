//! The cached graph: the key/value cache as graph inputs and outputs, so that ONNX Runtime runs
//! Fast-dLLM's prefix and dual caches and LLaDA2.x's exact prefix cache as the ndarray backend
//! does.
//!
//! The graph (written by the project's exporter with `--graph cached`, metadata `llada.cache =
//! kv`) computes the positions `position_start .. position_start + n` (`input_ids [batch, n]`),
//! attends to `keys` positions (`attention_mask [batch, keys]`) whose keys and values are its
//! own for the computed positions and the `past_key_i` / `past_value_i` inputs' (rotated keys,
//! `[batch, kv_heads, past, head_dim]`) for the others, and returns the logits of the canvas
//! positions `logits_window[0] .. logits_window[1]` with every position's keys and values
//! (`present_key_i` / `present_value_i`, `[batch, kv_heads, keys, head_dim]`). A full pass is
//! `position_start` 0, `n = keys` and an empty past.
//!
//! Every tensor of a run is bound once through an [`IoBinding`] and reused while the shapes
//! stay the same (the steps of a block): the token ids are written into the bound input in
//! place and the logits read from the bound output, and the keys and values stay in tensors
//! ONNX Runtime allocated (on the GPU for the CUDA provider), never copied through the caller.
//! A warm step allocates nothing on the Rust side.

use std::ptr;

use llada_core::{CacheMode, CausalPrefix, ForwardRequest, TokenId};
use ort::AsPointer;
use ort::memory::Allocator;
use ort::session::{IoBinding, Session};
use ort::value::{Tensor, TensorElementType, ValueType};

use crate::error::OrtError;

/// The cached graph's input of the first computed position, int64 `[1]`.
pub const POSITION_START_INPUT: &str = "position_start";
/// The cached graph's input of the canvas positions whose logits it returns, int64 `[2]`.
pub const LOGITS_WINDOW_INPUT: &str = "logits_window";

/// The cached graph's interface and the cache it keeps between passes.
pub(crate) struct KvGraph {
    kv_heads: usize,
    head_dim: usize,
    past: Vec<String>,
    present: Vec<String>,
    /// Where the keys and values live: the session's allocator (CPU) unless a GPU provider
    /// runs the graph.
    device: Option<Allocator>,
    /// Inputs on the host are copied to the device when bound: rebind them every run.
    rebind_inputs: bool,
    held: Option<Held>,
    /// Block-causal models: what `held` holds exactly, and the tokens it was computed from.
    causal: Option<CausalPrefix>,
    causal_ids: Vec<TokenId>,
    causal_real: Vec<u8>,
    bound: Option<Bound>,
    serial: u64,
}

/// Keys and values of every position of the last pass that kept them.
struct Held {
    kv: Vec<Tensor<f32>>,
    batch: usize,
    /// Positions per row.
    keys: usize,
    /// The canvas they were computed for.
    seq: usize,
    serial: u64,
}

/// The shapes of a run, and which held cache it reads (`None`: an empty past).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Key {
    batch: usize,
    n: usize,
    keys: usize,
    window: usize,
    past: Option<u64>,
}

/// A run's bound tensors.
struct Bound {
    key: Key,
    binding: IoBinding,
    ids: Tensor<i64>,
    mask: Tensor<i64>,
    start: Tensor<i64>,
    window: Tensor<i64>,
    block: Option<Tensor<i64>>,
    logits: Tensor<f32>,
    present: Vec<Tensor<f32>>,
}

/// What a pass computes and whether it keeps its keys and values.
struct Plan {
    start: usize,
    end: usize,
    keys: usize,
    use_past: bool,
    keep: Keep,
}

#[derive(PartialEq)]
enum Keep {
    /// The keys and values are not needed later.
    No,
    /// A full pass of a bidirectional model: the cache for the next steps.
    Full,
    /// A block-causal pass: the exact prefix it leaves.
    Causal(CausalPrefix),
}

impl KvGraph {
    /// The cached graph's interface, when the session has one: `None` for a plain graph.
    pub(crate) fn detect(
        inputs: &[(String, ValueType)],
        outputs: &[(String, ValueType)],
        bad: &dyn Fn(String) -> OrtError,
    ) -> Result<Option<Self>, OrtError> {
        if !inputs.iter().any(|(n, _)| n == POSITION_START_INPUT) {
            return Ok(None);
        }
        let shape_of = |items: &[(String, ValueType)], name: &str| -> Result<Vec<i64>, OrtError> {
            match items.iter().find(|(n, _)| n == name) {
                Some((
                    _,
                    ValueType::Tensor {
                        ty: TensorElementType::Float32,
                        shape,
                        ..
                    },
                )) if shape.len() == 4 => Ok(shape.to_vec()),
                Some((_, other)) => Err(bad(format!(
                    "cached graph: `{name}` is {other}, expected float32 [batch, kv_heads, positions, head_dim]"
                ))),
                None => Err(bad(format!("cached graph: no `{name}`"))),
            }
        };
        for name in [
            POSITION_START_INPUT,
            LOGITS_WINDOW_INPUT,
            "input_ids",
            "attention_mask",
        ] {
            match inputs.iter().find(|(n, _)| n == name) {
                Some((
                    _,
                    ValueType::Tensor {
                        ty: TensorElementType::Int64,
                        ..
                    },
                )) => {}
                Some((_, other)) => {
                    return Err(bad(format!(
                        "cached graph: input `{name}` is {other}, expected int64"
                    )));
                }
                None => return Err(bad(format!("cached graph: no input `{name}`"))),
            }
        }
        let layers = inputs
            .iter()
            .filter(|(n, _)| n.starts_with("past_key_"))
            .count();
        if layers == 0 {
            return Err(bad("cached graph: no `past_key_0` input".into()));
        }
        let mut past = Vec::with_capacity(2 * layers);
        let mut present = Vec::with_capacity(2 * layers);
        for i in 0..layers {
            for kv in ["key", "value"] {
                past.push(format!("past_{kv}_{i}"));
                present.push(format!("present_{kv}_{i}"));
            }
        }
        let first = shape_of(inputs, &past[0])?;
        let (kv_heads, head_dim) = (first[1], first[3]);
        if kv_heads <= 0 || head_dim <= 0 {
            return Err(bad(format!(
                "cached graph: `{}` leaves kv_heads or head_dim dynamic ({first:?})",
                past[0]
            )));
        }
        for name in past.iter().chain(&present) {
            let items = if name.starts_with("past") {
                inputs
            } else {
                outputs
            };
            let shape = shape_of(items, name)?;
            if (shape[1], shape[3]) != (kv_heads, head_dim) {
                return Err(bad(format!(
                    "cached graph: `{name}` has shape {shape:?}, expected [batch, {kv_heads}, positions, {head_dim}]"
                )));
            }
        }
        Ok(Some(Self {
            kv_heads: kv_heads as usize,
            head_dim: head_dim as usize,
            past,
            present,
            device: None,
            rebind_inputs: false,
            held: None,
            causal: None,
            causal_ids: Vec::new(),
            causal_real: Vec::new(),
            bound: None,
            serial: 0,
        }))
    }

    /// Keeps the keys and values on the device of `allocator` (a GPU provider's memory), and
    /// rebinds the host inputs on every run (ONNX Runtime copies them to the device when they
    /// are bound, so a change in place would not reach it; `ort`'s `bind_input` allocates a
    /// little each time: a warm step on a GPU is not allocation-free).
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    pub(crate) fn on_device(&mut self, allocator: Allocator) {
        self.device = Some(allocator);
        self.rebind_inputs = true;
    }

    /// Names of the input the graph's layers take, for the interface check.
    pub(crate) fn is_cache_input(&self, name: &str) -> bool {
        name == POSITION_START_INPUT
            || name == LOGITS_WINDOW_INPUT
            || self.past.iter().any(|p| p == name)
    }

    /// What a pass over `request` computes: per the cache hint, the way the ndarray backend
    /// does.
    fn plan(&mut self, request: &ForwardRequest<'_>) -> Plan {
        let (batch, seq) = (request.batch(), request.seq_len());
        if let Some(block) = request.block_causal() {
            let end = request.attended_end();
            let Some(hint) = request.cache() else {
                return Plan {
                    start: 0,
                    end,
                    keys: end,
                    use_past: false,
                    keep: Keep::No,
                };
            };
            let start = match (&self.causal, &self.held) {
                (Some(c), Some(h)) if h.batch == batch && h.seq == seq => c
                    .reusable(request, block, &self.causal_ids, &self.causal_real)
                    .min(h.keys),
                _ => 0,
            };
            let after = CausalPrefix::after_pass(request, block, end, hint.span.start);
            return Plan {
                start,
                end,
                keys: end,
                use_past: start > 0,
                keep: if after.len() > start {
                    Keep::Causal(after)
                } else {
                    Keep::No
                },
            };
        }
        let full = |keep| Plan {
            start: 0,
            end: seq,
            keys: seq,
            use_past: false,
            keep,
        };
        let Some(hint) = request.cache() else {
            return full(Keep::No);
        };
        let holds = self
            .held
            .as_ref()
            .is_some_and(|h| (h.batch, h.keys, h.seq) == (batch, seq, seq));
        if hint.refresh || !holds {
            return full(Keep::Full);
        }
        let (start, end) = match hint.mode {
            CacheMode::Dual => (hint.span.start, hint.span.end),
            CacheMode::Prefix => (hint.span.start, seq),
            _ => return full(Keep::Full),
        };
        Plan {
            start,
            end,
            keys: seq,
            use_past: true,
            keep: Keep::No,
        }
    }

    /// One pass: the logits of the request's window into `logits` (`[batch, window, vocab]`).
    pub(crate) fn forward(
        &mut self,
        session: &mut Session,
        request: &ForwardRequest<'_>,
        (vocab, logits_name): (usize, &str),
        logits: &mut [f32],
    ) -> Result<(), OrtError> {
        let plan = self.plan(request);
        let window = request.window();
        let batch = request.batch();
        let key = Key {
            batch,
            n: plan.end - plan.start,
            keys: plan.keys,
            window: window.len(),
            past: if plan.use_past {
                self.held.as_ref().map(|h| h.serial)
            } else {
                None
            },
        };
        if self.bound.as_ref().is_none_or(|b| b.key != key) {
            self.bound = None;
            self.bound = Some(self.bind(session, request, key, (vocab, logits_name))?);
        }
        let bound = self.bound.as_mut().expect("bound above");
        // The inputs, written in place into the bound tensors.
        let full = request.seq_len();
        let (_, ids) = bound.ids.extract_tensor_mut();
        for (r, out) in ids.chunks_exact_mut(key.n).enumerate() {
            let row = &request.row(r)[plan.start..plan.end];
            out.iter_mut()
                .zip(row)
                .for_each(|(o, &id)| *o = i64::from(id));
        }
        let (_, mask) = bound.mask.extract_tensor_mut();
        for (r, out) in mask.chunks_exact_mut(key.keys).enumerate() {
            match request.attention_mask() {
                Some(m) => out
                    .iter_mut()
                    .zip(&m[r * full..r * full + key.keys])
                    .for_each(|(o, &v)| *o = i64::from(v != 0)),
                None => out.fill(1),
            }
        }
        bound.start.extract_tensor_mut().1[0] = plan.start as i64;
        let w = bound.window.extract_tensor_mut().1;
        w[0] = window.start as i64;
        w[1] = window.end as i64;
        if let (Some(t), Some(b)) = (bound.block.as_mut(), request.block_causal()) {
            t.extract_tensor_mut().1[0] = b as i64;
        }
        if self.rebind_inputs {
            bound.rebind_inputs()?;
        }
        run_binding(session, &bound.binding)?;
        let (_, out) = bound.logits.extract_tensor();
        logits.copy_from_slice(&out[..logits.len()]);

        match plan.keep {
            Keep::No => {}
            Keep::Full | Keep::Causal(_) => {
                let bound = self.bound.take().expect("bound above");
                self.serial += 1;
                self.held = Some(Held {
                    kv: bound.present,
                    batch,
                    keys: plan.keys,
                    seq: full,
                    serial: self.serial,
                });
                if let Keep::Causal(after) = plan.keep {
                    grow(&mut self.causal_ids, after.tokens());
                    grow(&mut self.causal_real, after.tokens());
                    after.record(request, &mut self.causal_ids, &mut self.causal_real);
                    self.causal = Some(after);
                } else {
                    self.causal = None;
                }
            }
        }
        Ok(())
    }

    /// Allocates and binds the tensors of a run of shape `key`.
    fn bind(
        &self,
        session: &Session,
        request: &ForwardRequest<'_>,
        key: Key,
        (vocab, logits_name): (usize, &str),
    ) -> Result<Bound, OrtError> {
        let run = OrtError::Run;
        let host = session.allocator();
        let device = self.device.as_ref().unwrap_or(host);
        let kv_shape = |positions: usize| [key.batch, self.kv_heads, positions, self.head_dim];
        let mut binding = session.create_binding().map_err(run)?;
        let ids = Tensor::<i64>::new(host, [key.batch, key.n]).map_err(run)?;
        let mask = Tensor::<i64>::new(host, [key.batch, key.keys]).map_err(run)?;
        let start = Tensor::<i64>::new(host, [1usize]).map_err(run)?;
        let window = Tensor::<i64>::new(host, [2usize]).map_err(run)?;
        let block = match request.block_causal() {
            Some(_) => Some(Tensor::<i64>::new(host, [1usize]).map_err(run)?),
            None => None,
        };
        let mut logits = Tensor::<f32>::new(host, [key.batch, key.window, vocab]).map_err(run)?;
        let mut present = Vec::with_capacity(self.present.len());
        for _ in &self.present {
            present.push(Tensor::<f32>::new(device, kv_shape(key.keys)).map_err(run)?);
        }
        match key.past {
            Some(_) => {
                let held = self.held.as_ref().expect("a run with a past has a cache");
                for (name, value) in self.past.iter().zip(&held.kv) {
                    binding.bind_input(name.as_str(), value).map_err(run)?;
                }
            }
            None => {
                let empty = Tensor::<f32>::new(device, kv_shape(0)).map_err(run)?;
                for name in &self.past {
                    binding.bind_input(name.as_str(), &empty).map_err(run)?;
                }
            }
        }
        for (name, value) in self.present.iter().zip(present.iter_mut()) {
            binding
                .bind_output(name.as_str(), &mut *value)
                .map_err(run)?;
        }
        binding.bind_output(logits_name, &mut logits).map_err(run)?;
        let mut bound = Bound {
            key,
            binding,
            ids,
            mask,
            start,
            window,
            block,
            logits,
            present,
        };
        bound.rebind_inputs()?;
        Ok(bound)
    }
}

impl Bound {
    /// Binds the host inputs (again).
    fn rebind_inputs(&mut self) -> Result<(), OrtError> {
        let run = OrtError::Run;
        let b = &mut self.binding;
        b.bind_input("input_ids", &self.ids).map_err(run)?;
        b.bind_input("attention_mask", &self.mask).map_err(run)?;
        b.bind_input(POSITION_START_INPUT, &self.start)
            .map_err(run)?;
        b.bind_input(LOGITS_WINDOW_INPUT, &self.window)
            .map_err(run)?;
        if let Some(block) = &self.block {
            b.bind_input(crate::BLOCK_LENGTH_INPUT, block)
                .map_err(run)?;
        }
        Ok(())
    }
}

/// Runs a bound session through ONNX Runtime's C API directly: `ort`'s `run_binding` collects
/// the outputs into new values (allocations every run) that this backend does not need, since
/// it reads the tensors it bound.
fn run_binding(session: &mut Session, binding: &IoBinding) -> Result<(), OrtError> {
    let api = ort::api();
    // SAFETY: both pointers come from live `ort` objects; a session is not run from two threads
    // at once (`&mut Session`); the returned status is checked and released by `ort`.
    unsafe {
        let status = (api.RunWithBinding)(session.ptr().cast_mut(), ptr::null(), binding.ptr());
        ort::Error::result_from_status(status).map_err(OrtError::Run)
    }
}

/// Grows a buffer to at least `len` elements (never shrinks, so warm calls do not allocate).
fn grow<T: Default + Clone>(v: &mut Vec<T>, len: usize) {
    if v.len() < len {
        v.resize(len, T::default());
    }
}
