//! Shared helpers of the ndarray backend's tests: the bundled fixture and its golden logits.

#![allow(dead_code)]

use std::path::Path;

use llada_test_support::bundled_model;
use safetensors::SafeTensors;

pub(crate) use llada_test_support::GoldenCase;

/// An int64 tensor's shape and values.
pub(crate) fn i64s(st: &SafeTensors<'_>, name: &str) -> (Vec<usize>, Vec<i64>) {
    let t = st.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}"));
    let v = t
        .data()
        .chunks_exact(8)
        .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
        .collect();
    (t.shape().to_vec(), v)
}

pub(crate) fn golden_cases() -> Vec<GoldenCase> {
    golden_cases_of(&bundled_model())
}

/// The golden cases of the model in `dir` (its `golden_logits.safetensors`).
pub(crate) fn golden_cases_of(dir: &Path) -> Vec<GoldenCase> {
    llada_test_support::golden_cases_in(&dir.join("golden_logits.safetensors"), "")
}

/// The logits of `model` for one golden case (two threads; quantized weights widened to f32,
/// so that the logits are those of the dequantized weights).
pub(crate) fn case_logits(
    model: &std::sync::Arc<llada_ndarray::Model>,
    case: &GoldenCase,
) -> Vec<f32> {
    let options = llada_ndarray::ContextOptions::default()
        .with_threads(2)
        .with_dequantized_products();
    case_logits_with(model, case, options)
}

/// The logits of `model` for one golden case, computed with `options`.
pub(crate) fn case_logits_with(
    model: &std::sync::Arc<llada_ndarray::Model>,
    case: &GoldenCase,
    options: llada_ndarray::ContextOptions,
) -> Vec<f32> {
    let vocab = model.config().embedding_size;
    let mut context = llada_ndarray::Context::with_options(model.clone(), options).unwrap();
    let request = llada_core::ForwardRequest::new(&case.ids, case.batch, case.seq)
        .unwrap()
        .with_attention_mask(&case.mask)
        .unwrap();
    let mut out = vec![0.0; case.batch * case.seq * vocab];
    context.forward(&request, &mut out).unwrap();
    out
}

/// The logits of `model` for every golden case.
pub(crate) fn golden_case_logits(model: &std::sync::Arc<llada_ndarray::Model>) -> Vec<Vec<f32>> {
    golden_cases()
        .iter()
        .map(|case| case_logits(model, case))
        .collect()
}

pub(crate) fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// The fixture's tensors: name, dtype, shape, bytes.
pub(crate) type Tensors = Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)>;

pub(crate) fn fixture_tensors() -> Tensors {
    let bytes = std::fs::read(bundled_model().join("model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut out: Tensors = st
        .iter()
        .map(|(n, t)| {
            (
                n.to_string(),
                t.dtype(),
                t.shape().to_vec(),
                t.data().to_vec(),
            )
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// f32 bytes to bf16 bytes (round to nearest even).
pub(crate) fn to_bf16(bytes: &[u8]) -> Vec<u8> {
    bytes
        .chunks_exact(4)
        .flat_map(|b| half::bf16::from_f32(f32::from_le_bytes(b.try_into().unwrap())).to_le_bytes())
        .collect()
}

pub(crate) fn write_safetensors(path: &Path, tensors: &Tensors) {
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .map(|(n, d, s, b)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap(),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, None, path).unwrap();
}

/// A model directory in a temporary folder: the fixture's config and the given tensors.
pub(crate) fn model_dir(tensors: &Tensors) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        bundled_model().join("config.json"),
        dir.path().join("config.json"),
    )
    .unwrap();
    write_safetensors(&dir.path().join("model.safetensors"), tensors);
    dir
}

/// The items of an eval set of `len` a test runs: with `LLADA_EVAL_ITEMS=start..end` those,
/// with `LLADA_EVAL_ITEMS=r%n` every `n`-th from `r` (the sets are grouped by task, so this
/// samples every task), else all of them. The aarch64 tests under qemu share the sets
/// between two emulated CPUs this way.
pub(crate) fn eval_items(len: usize) -> Vec<usize> {
    let Ok(spec) = std::env::var("LLADA_EVAL_ITEMS") else {
        return (0..len).collect();
    };
    let numbers = |sep: &str| -> Option<(usize, usize)> {
        let (a, b) = spec.split_once(sep)?;
        Some((a.parse().ok()?, b.parse().ok()?))
    };
    if let Some((start, end)) = numbers("..") {
        (start.min(len)..end.min(len)).collect()
    } else if let Some((r, n)) = numbers("%").filter(|&(_, n)| n > 0) {
        (0..len).filter(|i| i % n == r).collect()
    } else {
        panic!("LLADA_EVAL_ITEMS is start..end or r%n, not {spec:?}")
    }
}

/// The canvas `generate` leaves after `prompt`: the prompt, then `params.gen_length` tokens.
pub(crate) fn generate_canvas(
    context: &mut llada_ndarray::Context,
    params: &llada_core::GenerateParams,
    prompt: &[u32],
    workspace: &mut llada_core::WorkspaceBuf,
) -> Vec<u32> {
    use llada_core::MaskPredictor;
    let mut canvas = vec![0; prompt.len() + params.gen_length];
    workspace.ensure(
        &llada_core::WorkspaceSizes::for_generation(params, 1, prompt.len(), context.vocab_size())
            .unwrap(),
    );
    let c =
        llada_core::Canvas::from_prompts(&mut canvas, prompt, 1, params.gen_length, params.mask_id)
            .unwrap();
    llada_core::generate(context, params, c, workspace.as_workspace(), &mut ()).unwrap();
    canvas
}

/// The integer kernel a context of `kernel` must run on this CPU, if any: each family's
/// fastest (VNNI on AVX-512 hosts that have it, `sdot` on Arm CPUs with dotprod).
pub(crate) fn expected_integer_kernel(kernel: llada_ndarray::Kernel) -> Option<&'static str> {
    use llada_ndarray::Kernel;
    match kernel {
        // Every CPU with AMX-BF16 so far has AMX-INT8 and VNNI too.
        Kernel::Amx => Some("amx-int8"),
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx512 if std::arch::is_x86_feature_detected!("avx512vnni") => Some("avx512-vnni"),
        Kernel::Avx512 | Kernel::Avx2 => Some("avx2"),
        #[cfg(target_arch = "aarch64")]
        Kernel::Neon if std::arch::is_aarch64_feature_detected!("dotprod") => Some("neon-dotprod"),
        Kernel::Neon => Some("neon"),
        _ => None,
    }
}

/// How far a row of logits `got` moved from `want`: the largest |difference| and `want`'s
/// spread (max − min), whose ratio the approximate kernels' tests bound.
pub(crate) fn shift_and_spread(got: &[f32], want: &[f32]) -> (f32, f32) {
    let spread = want.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v))
        - want.iter().fold(f32::INFINITY, |m, &v| m.min(v));
    let shift = got
        .iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max);
    (shift, spread)
}

/// The index of the largest logit (the first of equals).
pub(crate) fn argmax(row: &[f32]) -> usize {
    row.iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |best, (i, &v)| {
            if v > best.1 { (i, v) } else { best }
        })
        .0
}
