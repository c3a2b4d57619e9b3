//! The cached graph (the exporter's `--graph cached`, the bundled model's `model.onnx`): its
//! cached steps against the ndarray backend's, and Fast-dLLM's decoding on it against ndarray's
//! (`no_alloc.rs`: what a warm step allocates).
//!
//! These tests need `libonnxruntime` through `ORT_DYLIB_PATH` (the test command installs it).

use std::sync::Arc;

use llada_core::{
    CacheHint, CacheMode, Canvas, CommitRule, ForwardRequest, GenerateParams, MaskPredictor,
    WorkspaceBuf, WorkspaceSizes, generate,
};
use llada_ort::OrtPredictor;
use llada_test_support::{
    FnPredictor, bundled_mask_id, bundled_model as fixture, eval_set, ort_library, padded_canvas,
};

const MAX_LEN: usize = 256;
const VOCAB: usize = 640;

fn ort() -> OrtPredictor {
    let p = OrtPredictor::builder(fixture().join("model.onnx"))
        .library(ort_library())
        .intra_threads(2)
        .max_sequence_length(MAX_LEN)
        .build()
        .unwrap();
    assert!(p.has_cache(), "the bundled model.onnx is the cached graph");
    p
}

fn ndarray() -> llada_ndarray::Context {
    let model = Arc::new(llada_ndarray::Model::load(fixture()).unwrap());
    llada_ndarray::Context::new(model).unwrap()
}

/// The logits of one pass over `ids` (`batch` rows) with a cache hint.
fn pass<P: MaskPredictor>(
    p: &mut P,
    (ids, batch, mask): (&[u32], usize, Option<&[u8]>),
    mode: CacheMode,
    span: std::ops::Range<usize>,
    refresh: bool,
) -> Vec<f32>
where
    P::Error: std::fmt::Debug,
{
    let seq = ids.len() / batch;
    let mut request = ForwardRequest::new(ids, batch, seq)
        .unwrap()
        .with_window(span.clone())
        .unwrap()
        .with_cache(CacheHint {
            mode,
            span,
            refresh,
        })
        .unwrap();
    if let Some(mask) = mask {
        request = request.with_attention_mask(mask).unwrap();
    }
    let mut out = vec![0.0; request.logits_len(p.vocab_size())];
    p.forward(&request, &mut out).unwrap();
    out
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn cached_steps_match_the_ndarray_backends_within_1e4() {
    let (mut ort, mut nd) = (ort(), ndarray());
    for mode in [CacheMode::Dual, CacheMode::Prefix] {
        let (mut ids, mask) = padded_canvas();
        let seq = ids.len() / 2;
        // Blocks of 16 after the prompt; the first one is being denoised.
        let block = 20..36;
        let first = (&ids[..], 2, Some(&mask[..]));
        let a = pass(&mut ort, first, mode, block.clone(), true);
        let b = pass(&mut nd, first, mode, block.clone(), true);
        let refresh = max_abs_diff(&a, &b);
        // Commit tokens inside the block (and, for the prefix cache, nothing else changes
        // either): the cached step recomputes the block (and what follows) only.
        for r in 0..2 {
            for p in [21, 24, 25, 34] {
                ids[r * seq + p] = 100 + p as u32 + r as u32;
            }
        }
        let step = (&ids[..], 2, Some(&mask[..]));
        let a = pass(&mut ort, step, mode, block.clone(), false);
        let b = pass(&mut nd, step, mode, block.clone(), false);
        let cached = max_abs_diff(&a, &b);
        // And the step really used the cache: a full pass over the same tokens differs.
        let c = pass(&mut nd, step, mode, block.clone(), true);
        let approximation = max_abs_diff(&a, &c);
        eprintln!(
            "{mode:?}: refresh {refresh:e}, cached step {cached:e} (ORT vs ndarray); cached vs full {approximation:e}"
        );
        assert!(refresh < 1e-4, "{mode:?} refresh: {refresh}");
        assert!(cached < 1e-4, "{mode:?} cached step: {cached}");
        assert!(
            approximation > 1e-3,
            "{mode:?}: the cached step computed everything ({approximation})"
        );
    }
}

#[test]
fn threshold_decoding_with_the_dual_cache_matches_ndarray_over_the_eval_set() {
    let (mut ort, mut nd) = (ort(), ndarray());
    let eval = eval_set();
    let mut params = eval.params(GenerateParams::default().with_mask_id(bundled_mask_id()));
    params.commit = CommitRule::Threshold(0.9);
    params.cache = CacheMode::Dual;
    let mut ws = WorkspaceBuf::default();
    let mut run = |p: &mut dyn FnMut(&ForwardRequest<'_>, &mut [f32]), prompt: &[u32]| {
        let mut canvas = vec![0; prompt.len() + params.gen_length];
        let vocab = VOCAB.max(params.mask_id as usize + 1);
        ws.ensure(&WorkspaceSizes::for_generation(&params, 1, prompt.len(), vocab).unwrap());
        let c = Canvas::from_prompts(&mut canvas, prompt, 1, params.gen_length, params.mask_id)
            .unwrap();
        let mut predictor = FnPredictor(p, VOCAB, MAX_LEN);
        let stats = generate(&mut predictor, &params, c, ws.as_workspace(), &mut ()).unwrap();
        (canvas, stats.forward_passes)
    };
    let (mut differ, mut passes) = (Vec::new(), 0);
    for (i, item) in eval.items.iter().enumerate() {
        let (a, pa) = run(&mut |r, l| ort.forward(r, l).unwrap(), &item.prompt_ids);
        let (b, pb) = run(&mut |r, l| nd.forward(r, l).unwrap(), &item.prompt_ids);
        passes += pa;
        if (a, pa) != (b, pb) {
            differ.push(i);
        }
    }
    eprintln!(
        "{} answers, {:.2} passes per answer, differing: {differ:?}",
        eval.items.len(),
        passes as f64 / eval.items.len() as f64
    );
    assert!(
        differ.is_empty(),
        "answers differing between ONNX Runtime and ndarray with the dual cache: {differ:?}"
    );
    assert!(
        passes < eval.items.len() * params.steps / 2,
        "the threshold rule took {passes} passes"
    );
}
