//! Files of a model's shape with seeded random weights ([`write_random`]): what the benchmark
//! measures real-scale speed and memory on when the weights themselves are not at hand.

use std::path::Path;

use super::Value;
use super::export::{FileType, Source, Written, write};
use crate::config::Config;
use crate::error::LoadError;

/// Writes a GGUF file with exactly the tensors, names, types and metadata that
/// [`write_checkpoint`](super::write_checkpoint) would write for `config`, filled with seeded random weights instead of
/// a checkpoint's: a real model's shape when its weights are not at hand, for speed and memory
/// (which do not depend on the values). Matrices are uniform with `config`'s
/// initialisation scale (standard deviation 0.02), norm weights 1, other vectors (biases) 0;
/// the same `seed` writes the same bytes. Each slice of rows is drawn, quantized and written in
/// turn, so the writer's memory stays a few MiB whatever the file's size. Whole or not at all,
/// as [`write_checkpoint`](super::write_checkpoint).
pub fn write_random(
    config: &Config,
    file_type: FileType,
    seed: u64,
    extra: &[(String, Value)],
    out: &Path,
) -> Result<Written, LoadError> {
    write(&Source::Random { seed }, config, file_type, extra, out)
}

/// Standard deviation of [`write_random`]'s matrices: LLaDA's `init_std`.
const RANDOM_STD: f32 = 0.02;

/// SplitMix64's finaliser: a well-mixed 64-bit value of `x`.
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Row `r` of the random tensor `name`: uniform on ±√3·[`RANDOM_STD`] for a matrix, 1 for a
/// norm's weight, 0 for any other vector. Depends on the seed, the name and the row only, so
/// rows can be drawn on any thread in any order.
pub(super) fn random_row(seed: u64, name: &str, vector: bool, r: usize, row: &mut [f32]) {
    if vector {
        row.fill(if name.contains("norm") { 1.0 } else { 0.0 });
        return;
    }
    let key = name.bytes().fold(mix(seed), |h, b| mix(h ^ u64::from(b)));
    let mut state = mix(key ^ (r as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let half_width = 3f32.sqrt() * RANDOM_STD;
    for pair in row.chunks_mut(2) {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let bits = mix(state);
        for (k, v) in pair.iter_mut().enumerate() {
            // 24 random bits per value: uniform on [-1, 1).
            let u = ((bits >> (32 * k + 8)) & 0xff_ffff) as f32 / (1 << 23) as f32 - 1.0;
            *v = u * half_width;
        }
    }
}
