//! The LLaDA reverse diffusion process, `#![no_std]` and allocation-free.
//!
//! LLaDA generates by denoising: the answer starts as mask tokens, a bidirectional *mask
//! predictor* predicts every masked position at once, and each step commits the most confident
//! predictions, block by block from left to right. This crate is that algorithm, exactly as
//! LLaDA's reference `generate()` does it (token for token at temperature 0), plus the
//! Monte Carlo likelihood used for multiple-choice scoring and the training-time masking.
//! It knows nothing about tensors or files: backends implement [`MaskPredictor`].
//!
//! All memory comes from the caller: [`WorkspaceSizes`] says how much, [`Workspace`] lends it,
//! and a buffer that is too small is an error naming the size needed.
//!
//! ```
//! use core::ops::ControlFlow;
//! use llada_core::{
//!     generate, Canvas, ForwardRequest, GenerateParams, MaskPredictor, StepEvent, Workspace,
//!     WorkspaceSizes,
//! };
//!
//! /// A toy predictor that is sure position `i` holds token `i % 7`.
//! struct Modulo;
//!
//! impl MaskPredictor for Modulo {
//!     type Error = core::convert::Infallible;
//!     fn vocab_size(&self) -> usize { 8 }
//!     fn max_sequence_length(&self) -> usize { 64 }
//!     fn forward(&mut self, req: &ForwardRequest<'_>, logits: &mut [f32]) -> Result<(), Self::Error> {
//!         let window = req.window();
//!         for (k, row) in logits.chunks_exact_mut(8).enumerate() {
//!             let position = window.start + k % window.len();
//!             row.fill(0.0);
//!             row[position % 7] = 5.0;
//!         }
//!         Ok(())
//!     }
//! }
//!
//! let params = GenerateParams::default()
//!     .with_steps(4)
//!     .with_gen_length(8)
//!     .with_block_length(4)
//!     .with_mask_id(7);
//! let mut ids = [0u32; 3 + 8];
//! let canvas = Canvas::from_prompts(&mut ids, &[1, 2, 3], 1, params.gen_length, params.mask_id)?;
//!
//! // Scratch memory, sized for these parameters (stack arrays here; any slices will do).
//! let sizes = WorkspaceSizes::for_generation(&params, 1, canvas.prompt_len(), 8)?;
//! let (mut logits, mut tokens, mut flags, mut scores) = ([0f32; 64], [0u32; 32], [0u8; 16], [0f64; 8]);
//! assert!(sizes.logits <= 64 && sizes.tokens <= 32 && sizes.flags <= 16 && sizes.scores <= 8);
//! let workspace = Workspace::new(&mut logits, &mut tokens, &mut flags, &mut scores);
//!
//! let mut steps = 0;
//! let mut observer = |_: &StepEvent<'_>| { steps += 1; ControlFlow::Continue(()) };
//! let stats = generate(&mut Modulo, &params, canvas, workspace, &mut observer)?;
//!
//! assert_eq!(ids, [1, 2, 3, 3, 4, 5, 6, 0, 1, 2, 3]);
//! assert_eq!((stats.forward_passes, steps), (4, 4));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! For hosts that drive the predictor themselves (async runtimes, GPU queues, streaming UIs),
//! [`Generation`] is the same process as a sans-IO state machine: it says which forward pass
//! to run, takes the logits back and commits tokens.
//!
//! # Features
//! - `alloc`: [`WorkspaceBuf`], an owned workspace.
//! - `std`: implies `alloc`.
//! - `testing`: mock predictors in [`testing`] (the golden hash predictor among them) and, with
//!   `alloc`, [`testing::check_predictor`], the conformance suite for backend authors.
#![no_std]
#![forbid(unsafe_code)]
#![warn(clippy::std_instead_of_core, clippy::alloc_instead_of_core)]

#[cfg(any(test, feature = "std"))]
extern crate std;

mod error;
mod generation;
mod likelihood;
pub mod math;
mod params;
mod predictor;
mod rng;
mod sampler;
mod schedule;
mod training;
mod workspace;

#[cfg(feature = "testing")]
pub mod testing;

pub use error::{Error, ErrorKind, GenerateError, ShapeError};
pub use generation::{
    Canvas, ForwardJob, Generation, GenerationStats, Limits, StepEvent, StepObserver, generate,
};
pub use likelihood::{LikelihoodParams, log_likelihood};
pub use params::{
    BlockGrid, CacheMode, CommitRule, Editing, GenerateParams, LLADA_8B_EOS_ID, LLADA_8B_EOT_ID,
    LLADA_8B_MASK_ID, Remasking, UnknownRemasking,
};
pub use predictor::{
    CacheHint, CausalPrefix, ForwardRequest, MaskPredictor, PredictorError, TokenId,
};
pub use rand_core;
pub use rng::SamplerRng;
pub use schedule::{
    MAX_TIMESTEPS, timestep, timesteps_to_commit, tokens_to_commit, transfer_fraction,
};
pub use training::{
    DEFAULT_MASK_EPS, LossNormalization, diffusion_loss, mask_for_pretraining, mask_for_sft,
};
#[cfg(feature = "alloc")]
pub use workspace::WorkspaceBuf;
pub use workspace::{Workspace, WorkspaceSizes};
