//! The block-wise key/value cache (Fast-dLLM): a refreshing pass equals the plain forward, a
//! reusing pass over unchanged tokens equals it too, and with changed tokens it approximates
//! (the generation-level accuracy is measured by the eval example and the cache test in `tests/`).

mod common;

use std::sync::Arc;

use llada_core::{CacheHint, CacheMode, ForwardRequest};
use llada_ndarray::{Context, Model};

fn logits(
    context: &mut Context,
    ids: &[u32],
    window: std::ops::Range<usize>,
    hint: Option<CacheHint>,
) -> Vec<f32> {
    let vocab = context.model().config().embedding_size;
    let mut request = ForwardRequest::new(ids, 1, ids.len())
        .unwrap()
        .with_window(window)
        .unwrap();
    if let Some(hint) = hint {
        request = request.with_cache(hint).unwrap();
    }
    let mut out = vec![0.0; request.logits_len(vocab)];
    context.forward(&request, &mut out).unwrap();
    out
}

#[test]
fn cached_passes_agree_with_the_plain_forward() {
    let model = Arc::new(Model::load(llada_test_support::bundled_model()).unwrap());
    let mask = model.config().mask_token_id.unwrap();
    let mut context = Context::with_threads(model, 2).unwrap();
    let mut ids: Vec<u32> = (40..60).collect();
    ids.extend(std::iter::repeat_n(mask, 16));
    let span = 20..28;
    for mode in [CacheMode::Prefix, CacheMode::Dual] {
        let plain = logits(&mut context, &ids, span.clone(), None);
        let refresh = logits(
            &mut context,
            &ids,
            span.clone(),
            Some(CacheHint {
                mode,
                span: span.clone(),
                refresh: true,
            }),
        );
        assert_eq!(
            plain, refresh,
            "{mode:?}: a refreshing pass is the plain forward"
        );
        let reuse = logits(
            &mut context,
            &ids,
            span.clone(),
            Some(CacheHint {
                mode,
                span: span.clone(),
                refresh: false,
            }),
        );
        assert_eq!(
            plain, reuse,
            "{mode:?}: nothing changed, so the cache is exact"
        );

        // Commit two tokens inside the block: the cached pass approximates the plain one.
        let mut changed = ids.clone();
        changed[21] = 70;
        changed[25] = 71;
        let exact = logits(&mut context, &changed, span.clone(), None);
        let cached = logits(
            &mut context,
            &changed,
            span.clone(),
            Some(CacheHint {
                mode,
                span: span.clone(),
                refresh: false,
            }),
        );
        // Approximate (the frozen positions' keys and values predate the change), not recomputed.
        assert!(cached.iter().all(|v| v.is_finite()));
        assert!(
            common::max_abs_diff(&exact, &cached) > 0.0,
            "{mode:?}: the cache was not used"
        );
        // And a refresh brings the exact logits back.
        let hint = CacheHint {
            mode,
            span: span.clone(),
            refresh: true,
        };
        assert_eq!(
            logits(&mut context, &changed, span.clone(), Some(hint)),
            exact
        );
    }
}

#[test]
fn a_reuse_without_a_filled_cache_runs_in_full() {
    let model = Arc::new(Model::load(llada_test_support::bundled_model()).unwrap());
    let mut context = Context::with_threads(model, 1).unwrap();
    let ids: Vec<u32> = (40..72).collect();
    let plain = logits(&mut context, &ids, 8..16, None);
    let hint = CacheHint {
        mode: CacheMode::Dual,
        span: 8..16,
        refresh: false,
    };
    assert_eq!(logits(&mut context, &ids, 8..16, Some(hint)), plain);
}
