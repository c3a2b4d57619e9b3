//! Generation parameters, named as in LLaDA's reference `generate()`.

use core::fmt;
use core::str::FromStr;

use crate::error::Error;
use crate::schedule::MAX_TIMESTEPS;

/// LLaDA-8B's mask token id (`<|mdm_mask|>`), the reference sampler's default.
pub const LLADA_8B_MASK_ID: u32 = 126_336;
/// LLaDA-8B's end-of-text id (`<|endoftext|>`).
pub const LLADA_8B_EOS_ID: u32 = 126_081;
/// LLaDA-8B-Instruct's end-of-turn id (`<|eot_id|>`).
pub const LLADA_8B_EOT_ID: u32 = 126_348;

/// How the sampler ranks the masked positions of a block to decide which to commit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Remasking {
    /// The softmax probability of the proposed token (the reference default).
    #[default]
    LowConfidence,
    /// A uniform random number per position.
    Random,
    /// Top-1 minus top-2 probability.
    Margin,
    /// Negative entropy of the position's distribution.
    Entropy,
    /// Dream's `origin` algorithm, with [`CommitRule::Timesteps`] only: no ranking at all;
    /// at each step every masked position is committed on its own with probability `1 − s/t`
    /// (one uniform draw per masked position, in position order), all that are left on the
    /// last step.
    Origin,
}

impl Remasking {
    /// The name used by the reference and the command-line tools.
    pub const fn as_str(self) -> &'static str {
        match self {
            Remasking::LowConfidence => "low_confidence",
            Remasking::Random => "random",
            Remasking::Margin => "margin",
            Remasking::Entropy => "entropy",
            Remasking::Origin => "origin",
        }
    }
}

impl fmt::Display for Remasking {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The name of a remasking strategy is not one of `low_confidence`, `random`, `margin`,
/// `entropy`, `origin` (or Dream's names `maskgit_plus`, `topk_margin`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown remasking strategy (expected low_confidence, random, margin, entropy or origin; Dream's maskgit_plus and topk_margin name low_confidence and margin)"
)]
pub struct UnknownRemasking;

impl FromStr for Remasking {
    type Err = UnknownRemasking;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            // Dream's algorithms rank by the same scores: the probability of the proposed token
            // (`maskgit_plus`) and the top-1 minus top-2 probability (`topk_margin`).
            "low_confidence" | "maskgit_plus" => Ok(Remasking::LowConfidence),
            "random" => Ok(Remasking::Random),
            "margin" | "topk_margin" => Ok(Remasking::Margin),
            "entropy" => Ok(Remasking::Entropy),
            "origin" => Ok(Remasking::Origin),
            _ => Err(UnknownRemasking),
        }
    }
}

/// How many masked positions of the current block a step (a forward pass) commits.
///
/// With [`Schedule`](CommitRule::Schedule) a block takes `steps / num_blocks` steps. With any
/// other rule `steps` plays no part: every pass commits the most confident masked position of
/// the block and then every other one the rule admits, most confident first, and the block
/// takes as many passes as it needs until it has no mask left (at most `block_length`, or
/// [`GenerateParams::max_passes_per_block`] when set).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
#[non_exhaustive]
pub enum CommitRule {
    /// The reference schedule: `n / s` per step (plus one in the first `n % s` steps) for `n`
    /// masks in the block at its start and `s` steps per block.
    #[default]
    Schedule,
    /// Fast-dLLM's threshold rule (NVlabs/Fast-dLLM `llada/generate.py`,
    /// `get_transfer_index`): the top-1, then every masked position whose confidence is at
    /// least `threshold`. Confidence is the [`Remasking`] score (the softmax probability of the
    /// proposed token for the default low-confidence remasking).
    Threshold(f64),
    /// Fast-dLLM's factor rule, as its paper states it (Wu et al. 2025, arXiv 2505.22618,
    /// "factor-based parallel decoding"; the released code has only the threshold rule): the
    /// `n` most confident positions for the largest `n` with `(n + 1)(1 − c₍ₙ₎) < factor`,
    /// `c₍ₙ₎` the `n`-th highest confidence; at least one.
    Factor(f64),
    /// The entropy-bounded sampler (EB-Sampler, Ben-Hamu et al. 2025, arXiv 2505.24857): the
    /// block's masked positions sorted by the entropy of their predicted distribution, lowest
    /// first, and the largest prefix whose summed entropy minus its largest entropy is at most
    /// `gamma` (so at least one). Ranks by entropy whatever [`Remasking`] says.
    EntropyBounded(f64),
    /// Dream's schedule (`diffusion_generate` of HKUNLP's Dream, DiffuCoder), with the given
    /// `eps`: the times `t_0 = 1 > t_1 > … > t_steps = eps` evenly spaced (as
    /// `torch.linspace(1, eps, steps + 1)`, in f32, see [`timestep`](crate::timestep)) and, at step `i` with
    /// `m` masked positions left in the block, the `int(m · (1 − t_{i+1}/t_i))` most
    /// confident committed (every one left on the last step). Steps that commit nothing in
    /// any row are skipped without a forward pass. Dream runs it over the whole answer (one
    /// block: `block_length = gen_length`); with several blocks each gets
    /// `steps / num_blocks` steps of its own. Tokens and confidences follow Dream's
    /// `sample_tokens`: the logits are divided by the temperature and filtered by top-p,
    /// then top-k (at every temperature), and the confidence is taken from those
    /// probabilities. With [`Remasking::Origin`], Dream's `origin` algorithm, which runs a
    /// forward pass at every step (its coins are drawn after it, as Dream draws them).
    ///
    /// In a batch each row counts its own masks in its block; Dream counts the masks of the
    /// whole canvas averaged over the batch, which is the same for prompts followed by equal
    /// answers (every row then has as many masks) and differs for infilling canvases.
    Timesteps(f64),
    /// LLaDA2.x's rule (inclusionAI's `generate` of `LLaDA2MoeModelLM`): at pass `i` of a
    /// block, every masked position whose confidence (the probability of its proposed token)
    /// is strictly above `threshold`, if there are at least `n_i` of them; otherwise the `n_i`
    /// most confident (fewer if fewer are masked). `n_i` splits the block's length over its
    /// steps (`block_length / s`, plus one in the first `block_length % s` passes, counted on
    /// the whole block even where the prompt's tail fills part of it). A block ends when it has
    /// no mask left or after its `s` passes (with [`GenerateParams::editing`], see there); no
    /// pass is skipped. Tokens at temperature > 0 as
    /// LLaDA2 draws them: logits divided by the temperature, top-k, then top-p, the
    /// confidence taken from what is left. With [`GenerateParams::editing`], LLaDA2.1's
    /// token editing joins it.
    Llada2(f64),
}

impl CommitRule {
    /// Whether a block runs until it has no mask left (the threshold, factor and
    /// entropy-bounded rules).
    pub const fn is_adaptive(self) -> bool {
        !matches!(
            self,
            CommitRule::Schedule | CommitRule::Timesteps(_) | CommitRule::Llada2(_)
        )
    }

    /// Dream's `eps`, for [`CommitRule::Timesteps`].
    pub const fn timesteps_eps(self) -> Option<f64> {
        match self {
            CommitRule::Timesteps(eps) => Some(eps),
            _ => None,
        }
    }
}

/// Which key/value cache the sampler asks a backend to keep between the steps of a block
/// (Fast-dLLM's approximate block-wise cache). Backends without a cache ignore the hint and run
/// every step in full.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CacheMode {
    /// No cache: every step is a full forward pass (the reference).
    #[default]
    None,
    /// Keys and values of the positions before the current block are computed once per block;
    /// each step recomputes the block and everything after it. On the
    /// [absolute grid](BlockGrid::Absolute) (block-causal attention) this cache is exact:
    /// nothing after a finished block changes it, and a step computes the block alone
    /// (`Dual` is the same there).
    Prefix,
    /// Keys and values of every position outside the current block are computed once per block;
    /// each step recomputes the block only.
    Dual,
}

impl CacheMode {
    /// The name used by the command-line tools.
    pub const fn as_str(self) -> &'static str {
        match self {
            CacheMode::None => "none",
            CacheMode::Prefix => "prefix",
            CacheMode::Dual => "dual",
        }
    }
}

/// Where the blocks of a generation lie, and how the model attends across them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BlockGrid {
    /// LLaDA's semi-autoregressive blocks: `block_length` positions each from the end of the
    /// prompt, `gen_length` a multiple of it, `steps` split evenly over them; the model attends
    /// bidirectionally over the whole canvas.
    #[default]
    FromPrompt,
    /// Block diffusion (LLaDA2.x, trained so): blocks at `k · block_length` from position 0,
    /// so the prompt's tail shares the first generated block; attention is bidirectional inside
    /// a block and causal across blocks (each pass asks the predictor for exactly that, see
    /// [`ForwardRequest::block_causal`](crate::ForwardRequest::block_causal)), so finished
    /// blocks never change and a prefix cache of their keys and values is exact. `steps`
    /// counts per block. The canvas runs to the end of the last block:
    /// [`GenerateParams::canvas_len`] positions, past `prompt_len + gen_length` by fewer
    /// than `block_length`; those extra positions are decoded with their block, and the
    /// answer is the first `gen_length`.
    Absolute,
}

/// LLaDA2.1's token editing, beside [`CommitRule::Llada2`]: in every pass, each position of
/// the current block that already holds a generated token (not the prompt, not a mask) is
/// rewritten when the model's token there differs and its probability is strictly above
/// `threshold`; the positions committed from masks in the same pass are not. A pass whose
/// masks are all at or below the commit threshold commits the `num_to_transfer` most
/// confident, however long the block runs (`steps` sets no limit with editing). Once the
/// block has no mask left, edit-only passes follow until one changes nothing or
/// `max_post_steps` of them have run.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Editing {
    /// Probability a changed token needs to replace a written one (0.9 in LLaDA2.1).
    pub threshold: f64,
    /// Most edit-only passes after a block's last mask (16 in LLaDA2.1).
    pub max_post_steps: usize,
    /// Masks a pass commits when none is above the commit threshold (1 in LLaDA2.1; 0 is
    /// taken as 1).
    pub num_to_transfer: usize,
}

impl Editing {
    /// LLaDA2.1's defaults: threshold 0.9, at most 16 edit-only passes per block, one token
    /// per pass below the commit threshold.
    pub const LLADA21: Editing = Editing {
        threshold: 0.9,
        max_post_steps: 16,
        num_to_transfer: 1,
    };
}

/// Parameters of the reverse process. The defaults are those of LLaDA's reference
/// `generate()` (128 steps, 128 tokens, one block, temperature 0, no guidance,
/// low-confidence remasking) with LLaDA-8B's special token ids; set `mask_id`, `eos_id` and
/// `eot_id` from the model's files for any other model.
///
/// The struct is `#[non_exhaustive]` (later versions add fields): start from
/// [`Default::default()`] (or a model's defaults) and set fields, or chain the `with_*`
/// methods:
///
/// ```
/// use llada_core::{CommitRule, GenerateParams};
///
/// let params = GenerateParams::default()
///     .with_gen_length(64)
///     .with_block_length(32)
///     .with_steps(64)
///     .with_commit(CommitRule::Threshold(0.9));
/// assert_eq!(params.num_blocks(), 2);
/// params.validate()?;
/// # Ok::<(), llada_core::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub struct GenerateParams {
    /// Total number of denoising steps, split evenly over the blocks; on the
    /// [absolute grid](BlockGrid::Absolute), the most passes of each block (LLaDA2.0's
    /// `steps`).
    pub steps: usize,
    /// Number of tokens to generate after the prompt.
    pub gen_length: usize,
    /// Length of a semi-autoregressive block; `gen_length` must be a multiple of it (on the
    /// absolute grid it need not: the canvas runs to the end of the last block).
    pub block_length: usize,
    /// Gumbel-max sampling temperature; `0` takes the argmax.
    pub temperature: f32,
    /// Classifier-free guidance scale; `0` disables guidance.
    pub cfg_scale: f32,
    /// How the positions to commit are ranked.
    pub remasking: Remasking,
    /// The mask token id.
    pub mask_id: u32,
    /// Seed of the sampler's random number generator (temperature > 0, random remasking,
    /// Dream's `origin` and `alg_temp`).
    pub seed: u64,
    /// Forbid end-of-text: its logit is set to negative infinity.
    pub logits_eos_inf: bool,
    /// Leave the EOS and EOT logits out of the confidence softmax, so positions proposing EOS
    /// or EOT get confidence 0 and are committed after the others. This is applied at every
    /// temperature. Upstream's `confidence_eos_eot_inf` differs: it is a chained assignment
    /// made after the argmax, so at temperature 0 both EOS and EOT get zero confidence, but at
    /// temperature > 0 only EOT does (it also leaves the softmax) while EOS keeps its
    /// probability.
    pub confidence_eos_eot_inf: bool,
    /// The end-of-text id used by `logits_eos_inf` and `confidence_eos_eot_inf`.
    pub eos_id: u32,
    /// The end-of-turn id used by `confidence_eos_eot_inf`.
    pub eot_id: u32,
    /// Sample only among the `top_k` largest logits (temperature > 0; under
    /// [`CommitRule::Timesteps`] at every temperature, as Dream filters); `0` disables.
    pub top_k: usize,
    /// Sample only among the smallest set of tokens whose probability reaches `top_p`
    /// (temperature > 0; under [`CommitRule::Timesteps`] at every temperature, with Dream's
    /// rule: every token whose preceding cumulative probability does not exceed `top_p`);
    /// `1.0` disables.
    pub top_p: f32,
    /// How many positions a step commits (the reference schedule by default).
    pub commit: CommitRule,
    /// The key/value cache asked of the backend (none by default).
    pub cache: CacheMode,
    /// With an adaptive [`CommitRule`], the most passes a block may take: the last one commits
    /// every mask left. `0` (the default) sets no cap. Ignored by the schedule and the
    /// timesteps rule.
    pub max_passes_per_block: usize,
    /// Stop at end of text: once a completed block of a row holds `eos_id` or `eot_id`, that
    /// row's later masked positions are filled with `eos_id` without running their blocks, and
    /// the generation ends when every row has stopped. Committed tokens are final, so the
    /// answer up to the first EOS/EOT is the same either way; what changes is the rest of the
    /// canvas (EOS where the model might have written something after its end of text, which a
    /// multi-turn chat history keeps). Off by default, for exactness with the reference.
    pub stop_at_eos: bool,
    /// Dream's `alg_temp`: with a fixed count per step (the schedule or
    /// [`CommitRule::Timesteps`]) and a value above 0, the positions to commit are drawn
    /// without replacement from `softmax(confidence / alg_temp)` over the block's masked
    /// positions instead of taken most confident first. `0` (the default) takes the most
    /// confident.
    pub alg_temp: f32,
    /// Where the blocks lie and how attention crosses them (LLaDA's blocks from the prompt by
    /// default; [`BlockGrid::Absolute`] for block-diffusion models).
    pub grid: BlockGrid,
    /// LLaDA2.1's token editing, with [`CommitRule::Llada2`] only (`None`: LLaDA2.0's rule).
    pub editing: Option<Editing>,
}

impl Default for GenerateParams {
    fn default() -> Self {
        Self {
            steps: 128,
            gen_length: 128,
            block_length: 128,
            temperature: 0.0,
            cfg_scale: 0.0,
            remasking: Remasking::LowConfidence,
            mask_id: LLADA_8B_MASK_ID,
            seed: 0,
            logits_eos_inf: false,
            confidence_eos_eot_inf: false,
            eos_id: LLADA_8B_EOS_ID,
            eot_id: LLADA_8B_EOT_ID,
            top_k: 0,
            top_p: 1.0,
            commit: CommitRule::Schedule,
            cache: CacheMode::None,
            max_passes_per_block: 0,
            stop_at_eos: false,
            alg_temp: 0.0,
            grid: BlockGrid::FromPrompt,
            editing: None,
        }
    }
}

/// Chainable setters, one per field: `with_<field>(value)` returns the parameters with that
/// field set.
macro_rules! setters {
    ($ty:ident { $($setter:ident => $field:ident: $t:ty),* $(,)? }) => {
        impl $ty {
            $(
                #[doc = concat!("These parameters with `", stringify!($field), "` set.")]
                #[must_use]
                pub const fn $setter(mut self, $field: $t) -> Self {
                    self.$field = $field;
                    self
                }
            )*
        }
    };
}
pub(crate) use setters;

setters!(GenerateParams {
    with_steps => steps: usize,
    with_gen_length => gen_length: usize,
    with_block_length => block_length: usize,
    with_temperature => temperature: f32,
    with_cfg_scale => cfg_scale: f32,
    with_remasking => remasking: Remasking,
    with_mask_id => mask_id: u32,
    with_seed => seed: u64,
    with_logits_eos_inf => logits_eos_inf: bool,
    with_confidence_eos_eot_inf => confidence_eos_eot_inf: bool,
    with_eos_id => eos_id: u32,
    with_eot_id => eot_id: u32,
    with_top_k => top_k: usize,
    with_top_p => top_p: f32,
    with_commit => commit: CommitRule,
    with_cache => cache: CacheMode,
    with_max_passes_per_block => max_passes_per_block: usize,
    with_stop_at_eos => stop_at_eos: bool,
    with_alg_temp => alg_temp: f32,
    with_grid => grid: BlockGrid,
    with_editing => editing: Option<Editing>,
});

impl GenerateParams {
    /// Number of semi-autoregressive blocks (valid parameters only). On the
    /// [absolute grid](BlockGrid::Absolute) the count depends on the prompt: this is the
    /// count for a prompt that ends on a block boundary (see [`blocks_for`](Self::blocks_for)).
    pub fn num_blocks(&self) -> usize {
        match self.grid {
            BlockGrid::FromPrompt => self.gen_length / self.block_length.max(1),
            BlockGrid::Absolute => self.gen_length.div_ceil(self.block_length.max(1)),
        }
    }

    /// Number of blocks decoded after a prompt of `prompt_len` tokens (valid parameters
    /// only): on the absolute grid, from the block holding position `prompt_len` to the one
    /// holding the last generated position.
    pub fn blocks_for(&self, prompt_len: usize) -> usize {
        match self.grid {
            BlockGrid::FromPrompt => self.num_blocks(),
            BlockGrid::Absolute => {
                let block = self.block_length.max(1);
                self.canvas_len(prompt_len) / block - prompt_len / block
            }
        }
    }

    /// Positions of a canvas row for a prompt of `prompt_len` tokens: `prompt_len +
    /// gen_length`, rounded up to a whole block on the absolute grid.
    pub fn canvas_len(&self, prompt_len: usize) -> usize {
        let len = prompt_len.saturating_add(self.gen_length);
        match self.grid {
            BlockGrid::FromPrompt => len,
            BlockGrid::Absolute => {
                let block = self.block_length.max(1);
                len.div_ceil(block).saturating_mul(block)
            }
        }
    }

    /// Steps spent on each block (valid parameters only): `steps / num_blocks`, or `steps`
    /// itself on the absolute grid; under LLaDA2.0's rule at most `gen_length` (its
    /// `generate` caps the steps at `gen_length // minimal_topk`, `minimal_topk` 1).
    pub fn steps_per_block(&self) -> usize {
        match (self.grid, self.commit, self.editing) {
            (BlockGrid::FromPrompt, _, _) => self.steps / self.num_blocks().max(1),
            (BlockGrid::Absolute, CommitRule::Llada2(_), None) => {
                self.steps.min(self.gen_length.max(1))
            }
            (BlockGrid::Absolute, _, _) => self.steps,
        }
    }

    /// LLaDA2.0's decoding as its reference `generate` ships it: block diffusion on the
    /// absolute grid with blocks of 32, 32 passes at most per block, [`CommitRule::Llada2`]
    /// at 0.95, temperature 0, and a stop after the block in which end of text appears
    /// (`stop_at_eos`; the reference stops there too). Set the model's `mask_id` and
    /// `eos_id` (and `eot_id` = `eos_id`: LLaDA2 stops on end of text only), and
    /// [`editing`](Self::editing) for LLaDA2.1.
    pub fn llada2() -> Self {
        Self::default()
            .with_grid(BlockGrid::Absolute)
            .with_block_length(32)
            .with_steps(32)
            .with_gen_length(2048)
            .with_commit(CommitRule::Llada2(0.95))
            .with_stop_at_eos(true)
    }

    /// Whether classifier-free guidance doubles the batch.
    pub fn uses_cfg(&self) -> bool {
        self.cfg_scale > 0.0
    }

    /// Whether top-k or top-p filtering is in effect (when sampling, and under
    /// [`CommitRule::Timesteps`] at every temperature).
    pub fn filters_vocabulary(&self) -> bool {
        // Dream's rule filters the probabilities its confidences come from at every temperature.
        let samples = self.temperature > 0.0 || matches!(self.commit, CommitRule::Timesteps(_));
        samples && (self.top_k > 0 || self.top_p < 1.0)
    }

    /// Checks the parameters on their own: non-zero lengths, `gen_length` divisible by
    /// `block_length`, `steps` divisible by the number of blocks, finite non-negative
    /// temperature and guidance, `top_p` in `(0, 1]`.
    pub fn validate(&self) -> Result<(), Error> {
        for (name, value) in [
            ("steps", self.steps),
            ("gen_length", self.gen_length),
            ("block_length", self.block_length),
        ] {
            if value == 0 {
                return Err(Error::Zero { name });
            }
        }
        if self.grid == BlockGrid::FromPrompt {
            if !self.gen_length.is_multiple_of(self.block_length) {
                return Err(Error::BlockLength {
                    gen_length: self.gen_length,
                    block_length: self.block_length,
                });
            }
            let num_blocks = self.num_blocks();
            if !self.steps.is_multiple_of(num_blocks) {
                return Err(Error::Steps {
                    steps: self.steps,
                    num_blocks,
                });
            }
        }
        for (name, value) in [
            ("temperature", self.temperature),
            ("cfg_scale", self.cfg_scale),
            ("alg_temp", self.alg_temp),
        ] {
            if !value.is_finite() || value < 0.0 {
                return Err(Error::NotFiniteNonNegative { name, value });
            }
        }
        match self.commit {
            CommitRule::Schedule => {}
            CommitRule::Threshold(t) if t > 0.0 && t <= 1.0 => {}
            CommitRule::Threshold(t) => {
                return Err(Error::OutOfRange {
                    name: "threshold",
                    range: "(0, 1]",
                    value: t,
                });
            }
            CommitRule::Factor(f) if f.is_finite() && f > 0.0 => {}
            CommitRule::Factor(f) => {
                return Err(Error::OutOfRange {
                    name: "factor",
                    range: "(0, inf)",
                    value: f,
                });
            }
            CommitRule::EntropyBounded(g) if g.is_finite() && g >= 0.0 => {}
            CommitRule::EntropyBounded(g) => {
                return Err(Error::OutOfRange {
                    name: "gamma",
                    range: "[0, inf)",
                    value: g,
                });
            }
            CommitRule::Timesteps(eps) if (0.0..1.0).contains(&eps) => {
                let steps = self.steps_per_block();
                if steps > MAX_TIMESTEPS {
                    return Err(Error::OutOfRange {
                        name: "steps per block (timesteps rule)",
                        range: "[1, 1048576]",
                        value: steps as f64,
                    });
                }
            }
            CommitRule::Timesteps(eps) => {
                return Err(Error::OutOfRange {
                    name: "eps",
                    range: "[0, 1)",
                    value: eps,
                });
            }
            CommitRule::Llada2(t) if (0.0..=1.0).contains(&t) => {}
            CommitRule::Llada2(t) => {
                return Err(Error::OutOfRange {
                    name: "threshold",
                    range: "[0, 1]",
                    value: t,
                });
            }
        }
        let llada2 = matches!(self.commit, CommitRule::Llada2(_));
        if let Some(editing) = self.editing {
            if !llada2 {
                return Err(Error::Combination {
                    what: "token editing",
                    needs: "LLaDA2's rule (CommitRule::Llada2)",
                });
            }
            if !(0.0..=1.0).contains(&editing.threshold) {
                return Err(Error::OutOfRange {
                    name: "editing threshold",
                    range: "[0, 1]",
                    value: editing.threshold,
                });
            }
        }
        if llada2 && self.remasking != Remasking::LowConfidence {
            return Err(Error::Combination {
                what: "a remasking other than low_confidence",
                needs: "another commit rule (LLaDA2's thresholds are probabilities)",
            });
        }
        if llada2 && self.confidence_eos_eot_inf {
            return Err(Error::Combination {
                what: "confidence_eos_eot_inf",
                needs: "LLaDA's sampling (not LLaDA2's rule)",
            });
        }
        let timesteps = matches!(self.commit, CommitRule::Timesteps(_));
        if self.remasking == Remasking::Origin && !timesteps {
            return Err(Error::Combination {
                what: "origin remasking",
                needs: "the timesteps rule (CommitRule::Timesteps)",
            });
        }
        if self.alg_temp > 0.0 && (self.commit.is_adaptive() || llada2) {
            return Err(Error::Combination {
                what: "alg_temp",
                needs: "a fixed count per step (the schedule or the timesteps rule)",
            });
        }
        if self.confidence_eos_eot_inf && timesteps {
            return Err(Error::Combination {
                what: "confidence_eos_eot_inf",
                needs: "LLaDA's sampling (not the timesteps rule)",
            });
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(Error::OutOfRange {
                name: "top_p",
                range: "(0, 1]",
                value: f64::from(self.top_p),
            });
        }
        Ok(())
    }

    /// [`validate`](Self::validate), plus the checks that need the predictor and the prompt:
    /// special ids inside the vocabulary and the whole canvas within the model's maximum.
    pub fn validate_for(
        &self,
        vocab: usize,
        max_sequence_length: usize,
        prompt_len: usize,
    ) -> Result<(), Error> {
        self.validate()?;
        check_id("mask_id", self.mask_id, vocab)?;
        if self.logits_eos_inf || self.confidence_eos_eot_inf {
            check_id("eos_id", self.eos_id, vocab)?;
        }
        if self.confidence_eos_eot_inf {
            check_id("eot_id", self.eot_id, vocab)?;
        }
        let length = self.canvas_len(prompt_len);
        if length > max_sequence_length {
            return Err(Error::TooLong {
                length,
                prompt_len,
                gen_length: self.gen_length,
                max: max_sequence_length,
            });
        }
        Ok(())
    }
}

pub(crate) fn check_id(name: &'static str, id: u32, vocab: usize) -> Result<(), Error> {
    if (id as usize) < vocab {
        Ok(())
    } else {
        Err(Error::TokenOutOfVocab { name, id, vocab })
    }
}
