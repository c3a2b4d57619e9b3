//! Key/value caches. Fast-dLLM's block-wise cache: the keys and values of every position,
//! kept between the steps of a block so that a step recomputes only the block (dual cache) or
//! the block and what follows it (prefix cache). And the exact prefix cache of block-causal
//! models (LLaDA2.x): the keys and values of finished blocks, which nothing after them can
//! change, kept for as long as the tokens they were computed from stay the same.

use llada_core::{CausalPrefix, ForwardRequest};

use crate::config::Config;

/// How a pass gets the keys and values of the positions it does not compute.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum KvUse {
    /// Every position is computed; no cache.
    Plain,
    /// Every position is computed and its keys and values are kept.
    Fill,
    /// Only some positions are computed; the others come from the cache.
    Read,
}

/// Keys and values per layer, `[batch, seq, 2 · kv_dim]` (rotated keys, then values), kept
/// between the steps of a block.
#[derive(Default)]
pub(crate) struct KvCache {
    data: Vec<f32>,
    layer_len: usize,
    /// The (batch, seq) it was filled for.
    shape: Option<(usize, usize)>,
    /// With block-causal attention: what the cache holds exactly.
    causal: Option<CausalPrefix>,
    /// The tokens of the cached prefix, `[batch, prefix]` (block-causal).
    ids: Vec<u32>,
    /// Which of them were real (the attention mask; 1 everywhere without one).
    real: Vec<u8>,
}

impl KvCache {
    /// Whether the cache holds a whole pass of `batch` rows of `seq` positions.
    pub(crate) fn holds(&self, batch: usize, seq: usize) -> bool {
        self.shape == Some((batch, seq))
    }

    /// How many leading positions of every row of `request` (block-causal, blocks of
    /// `block`) the cache holds exactly ([`CausalPrefix::reusable`]). A pass computes the
    /// positions from there to the end of the window's block.
    pub(crate) fn causal_reuse(&mut self, request: &ForwardRequest<'_>, block: usize) -> usize {
        self.shape = None;
        self.causal.map_or(0, |held| {
            held.reusable(request, block, &self.ids, &self.real)
        })
    }

    /// Records that a block-causal pass over `request` computed every position before
    /// `computed_end` (from `start` on, the others being held already), and that the
    /// positions before `final_end` will not change ([`CausalPrefix::after_pass`]).
    pub(crate) fn causal_filled(
        &mut self,
        request: &ForwardRequest<'_>,
        block: usize,
        computed_end: usize,
        final_end: usize,
    ) {
        let held = CausalPrefix::after_pass(request, block, computed_end, final_end);
        crate::context::grow(&mut self.ids, held.tokens());
        crate::context::grow(&mut self.real, held.tokens());
        held.record(request, &mut self.ids, &mut self.real);
        self.causal = Some(held);
    }

    /// Sizes the cache for `batch × seq`; forgets its content if the shape changes.
    pub(crate) fn prepare(&mut self, c: &Config, batch: usize, seq: usize) {
        if !self.holds(batch, seq) {
            self.shape = None;
        }
        if self.causal.is_some_and(|h| !h.holds_shape(batch, seq)) {
            self.causal = None;
        }
        self.layer_len = batch * seq * 2 * c.n_kv_heads * c.head_dim;
        crate::context::grow(&mut self.data, self.layer_len * c.n_layers);
    }

    /// Marks the cache as holding a full pass of `batch × seq` (after a [`KvUse::Fill`]).
    pub(crate) fn filled(&mut self, batch: usize, seq: usize) {
        self.shape = Some((batch, seq));
        self.causal = None;
    }

    /// One layer's keys and values.
    pub(crate) fn layer(&self, layer: usize) -> &[f32] {
        &self.data[layer * self.layer_len..(layer + 1) * self.layer_len]
    }

    /// One layer's keys and values, to write.
    pub(crate) fn layer_mut(&mut self, layer: usize) -> &mut [f32] {
        &mut self.data[layer * self.layer_len..(layer + 1) * self.layer_len]
    }
}
