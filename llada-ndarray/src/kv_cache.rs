//! Fast-dLLM's block-wise key/value cache: the keys and values of every position, kept
//! between the steps of a block so that a step recomputes only the block (dual cache) or the
//! block and what follows it (prefix cache).

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
}

impl KvCache {
    /// Whether the cache holds a whole pass of `batch` rows of `seq` positions.
    pub(crate) fn holds(&self, batch: usize, seq: usize) -> bool {
        self.shape == Some((batch, seq))
    }

    /// Sizes the cache for `batch × seq`; forgets its content if the shape changes.
    pub(crate) fn prepare(&mut self, c: &Config, batch: usize, seq: usize) {
        if !self.holds(batch, seq) {
            self.shape = None;
        }
        self.layer_len = batch * seq * 2 * c.n_kv_heads * c.head_dim;
        crate::context::grow(&mut self.data, self.layer_len * c.n_layers);
    }

    /// Marks the cache as holding a full pass of `batch × seq` (after a [`KvUse::Fill`]).
    pub(crate) fn filled(&mut self, batch: usize, seq: usize) {
        self.shape = Some((batch, seq));
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
