//! How the integer kernels' formats are stored: for each panel of 16 rows and each block of
//! the format along `k`, one *panel block* holding the 16 rows' scales, then their codes
//! (unsigned or signed small integers) in groups of 4 consecutive values, `[group][row][4]`,
//! so that one 64-byte load holds 4 codes of each of the 16 rows (a `vpdpbusd` operand).
//!
//! | format | panel block | value |
//! |---|---|---|
//! | Q8_0 | d\[16\] f16, then 8 groups of 64 signed bytes | `d · q` |
//! | Q4_0 | d\[16\] f16, then 4 runs of 64 bytes: group `2i` in the low nibbles, `2i + 1` in the high ones | `d · (q − 8)` |
//! | Q4_K | d\[16\], dmin\[16\] f16, sc\[8\]\[16\], m\[8\]\[16\] bytes, then per sub-block of 32 the Q4_0 layout | `d·sc · q − dmin·m` |
//! | Q6_K | d\[16\] f16, sc\[16\]\[16\] signed bytes, then per sub-block of 16: 2 runs of 64 bytes of low nibbles as Q4_0, 64 bytes of 2-bit highs (group `g` at bits `2g`) | `d·sc · (q − 32)` |
//!
//! Q8_0, Q4_0 and Q6_K take the file's bytes exactly; Q4_K unpacks its 6-bit sub-block scales
//! and minimums into bytes (148 bytes per 256 values instead of 144).

use half::f16;

use crate::gemm::NR;
use crate::quant::{QuantType, scale_min_k4};

/// Whether `ty`'s panels are stored interleaved for the integer kernels.
pub(crate) const fn is_interleaved(ty: QuantType) -> bool {
    matches!(
        ty,
        QuantType::Q8_0 | QuantType::Q4_0 | QuantType::Q4_K | QuantType::Q6_K
    )
}

/// Bytes of one panel block (16 rows × one block of `ty`).
pub(crate) const fn panel_block_bytes(ty: QuantType) -> usize {
    match ty {
        QuantType::Q4_K => NR * 148,
        _ => NR * ty.block_bytes(),
    }
}

/// Offsets inside a Q4_K panel block.
pub(crate) mod q4k {
    pub(crate) const DMIN: usize = 32;
    pub(crate) const SC: usize = 64;
    pub(crate) const M: usize = 192;
    pub(crate) const Q: usize = 320;
}

/// Offsets inside a Q6_K panel block.
pub(crate) mod q6k {
    pub(crate) const SC: usize = 32;
    pub(crate) const Q: usize = 288;
    /// Bytes per sub-block of 16 values: 128 of low nibbles, 64 of high bits.
    pub(crate) const SUB: usize = 192;
}

/// The code of value `v` (0..`ty.block_len()`) of a ggml block.
#[inline(always)]
fn code(ty: QuantType, block: &[u8], v: usize) -> i32 {
    match ty {
        QuantType::Q8_0 => i32::from(block[2 + v] as i8),
        QuantType::Q4_0 => {
            let q = block[2 + v % 16];
            i32::from(if v < 16 { q & 0x0F } else { q >> 4 })
        }
        QuantType::Q4_K => {
            let q = block[16 + 32 * (v / 64) + v % 32];
            i32::from(if v % 64 < 32 { q & 0x0F } else { q >> 4 })
        }
        _ => {
            let (half, quarter, l) = (v / 128, (v % 128) / 32, v % 32);
            let low = block[64 * half + l + 32 * (quarter % 2)];
            let low = if quarter < 2 { low & 0x0F } else { low >> 4 };
            let high = (block[128 + 32 * half + l] >> (2 * quarter)) & 3;
            i32::from(low | (high << 4))
        }
    }
}

/// Writes the code of value `v` of row `c` into an interleaved panel block's quants `q` (the
/// bytes after the scales), in `ty`'s layout: the definition [`put_codes`] is checked against.
#[cfg(test)]
fn put_code(ty: QuantType, q: &mut [u8], c: usize, v: usize, code: i32) {
    match ty {
        QuantType::Q8_0 => q[(v / 4) * 64 + c * 4 + v % 4] = code as i8 as u8,
        QuantType::Q4_0 | QuantType::Q4_K => {
            let (sub, w) = (v / 32, v % 32);
            q[256 * sub + (w / 8) * 64 + c * 4 + w % 4] |= (code as u8) << (4 * ((w / 4) % 2));
        }
        _ => {
            let (sub, w) = (v / 16, v % 16);
            let at = q6k::SUB * sub;
            q[at + (w / 8) * 64 + c * 4 + w % 4] |= ((code & 15) as u8) << (4 * ((w / 4) % 2));
            q[at + 128 + c * 4 + w % 4] |= ((code >> 4) as u8) << (2 * (w / 4));
        }
    }
}

/// The code of value `v` of row `c` from an interleaved panel block's quants `q`.
fn get_code(ty: QuantType, q: &[u8], c: usize, v: usize) -> i32 {
    match ty {
        QuantType::Q8_0 => i32::from(q[(v / 4) * 64 + c * 4 + v % 4] as i8),
        QuantType::Q4_0 | QuantType::Q4_K => {
            let (sub, w) = (v / 32, v % 32);
            i32::from((q[256 * sub + (w / 8) * 64 + c * 4 + w % 4] >> (4 * ((w / 4) % 2))) & 15)
        }
        _ => {
            let (sub, w) = (v / 16, v % 16);
            let at = q6k::SUB * sub;
            let low = (q[at + (w / 8) * 64 + c * 4 + w % 4] >> (4 * ((w / 4) % 2))) & 15;
            let high = (q[at + 128 + c * 4 + w % 4] >> (2 * (w / 4))) & 3;
            i32::from(low | (high << 4))
        }
    }
}

/// Bytes of a panel block before its quants.
const fn head_bytes(ty: QuantType) -> usize {
    match ty {
        QuantType::Q4_K => q4k::Q,
        QuantType::Q6_K => q6k::Q,
        _ => 2 * NR,
    }
}

/// Rewrites 16 rows' ggml blocks of `ty` (`16 × ty.block_bytes()` bytes, one after the other)
/// into one interleaved panel block (`panel_block_bytes(ty)` bytes).
pub(crate) fn interleave(ty: QuantType, blocks: &[u8], out: &mut [u8]) {
    // One copy of the loop per format, `ty` a constant in each: the per-value `match`es of
    // `code` and `put_code` fold away (loading an 8 B model spends most of its time here
    // otherwise).
    match ty {
        QuantType::Q8_0 => interleave_as(QuantType::Q8_0, blocks, out),
        QuantType::Q4_0 => interleave_as(QuantType::Q4_0, blocks, out),
        QuantType::Q4_K => interleave_as(QuantType::Q4_K, blocks, out),
        _ => interleave_as(QuantType::Q6_K, blocks, out),
    }
}

#[inline(always)]
fn interleave_as(ty: QuantType, blocks: &[u8], out: &mut [u8]) {
    let bytes = ty.block_bytes();
    debug_assert!(is_interleaved(ty) && blocks.len() == NR * bytes);
    out.fill(0);
    let (head, q) = out.split_at_mut(head_bytes(ty));
    for c in 0..NR {
        let block = &blocks[c * bytes..(c + 1) * bytes];
        match ty {
            QuantType::Q4_K => {
                head[2 * c..2 * c + 2].copy_from_slice(&block[0..2]);
                head[q4k::DMIN + 2 * c..][..2].copy_from_slice(&block[2..4]);
                for j in 0..8 {
                    let (sc, m) = scale_min_k4(j, &block[4..16]);
                    head[q4k::SC + NR * j + c] = sc;
                    head[q4k::M + NR * j + c] = m;
                }
            }
            QuantType::Q6_K => {
                head[2 * c..2 * c + 2].copy_from_slice(&block[208..210]);
                for j in 0..16 {
                    head[q6k::SC + NR * j + c] = block[192 + j];
                }
            }
            _ => head[2 * c..2 * c + 2].copy_from_slice(&block[0..2]),
        }
        let mut codes = [0i32; 256];
        codes_of(ty, block, &mut codes);
        put_codes(ty, q, c, &codes);
    }
}

/// Every code of a ggml block of `ty` (what [`code`] gives value by value), the 4-bit formats
/// a run of bytes at a time.
#[inline(always)]
fn codes_of(ty: QuantType, block: &[u8], codes: &mut [i32; 256]) {
    match ty {
        QuantType::Q4_K => {
            let qs = &block[16..144];
            for chunk in 0..4 {
                for l in 0..32 {
                    let b = qs[32 * chunk + l];
                    codes[64 * chunk + l] = i32::from(b & 0x0F);
                    codes[64 * chunk + 32 + l] = i32::from(b >> 4);
                }
            }
        }
        QuantType::Q4_0 => {
            for l in 0..16 {
                let b = block[2 + l];
                codes[l] = i32::from(b & 0x0F);
                codes[16 + l] = i32::from(b >> 4);
            }
        }
        _ => {
            for (v, c) in codes.iter_mut().enumerate().take(ty.block_len()) {
                *c = code(ty, block, v);
            }
        }
    }
}

/// Writes row `c`'s codes of one block into an interleaved panel block's quants `q` (zeroed):
/// what [`put_code`] does value by value, a whole byte at a time.
#[inline(always)]
fn put_codes(ty: QuantType, q: &mut [u8], c: usize, codes: &[i32; 256]) {
    match ty {
        QuantType::Q8_0 => {
            for g in 0..8 {
                for j in 0..4 {
                    q[g * 64 + c * 4 + j] = codes[4 * g + j] as i8 as u8;
                }
            }
        }
        QuantType::Q4_0 | QuantType::Q4_K => {
            for sub in 0..ty.block_len() / 32 {
                for g in 0..4 {
                    for j in 0..4 {
                        let v = 32 * sub + 8 * g + j;
                        q[256 * sub + g * 64 + c * 4 + j] = (codes[v] | (codes[v + 4] << 4)) as u8;
                    }
                }
            }
        }
        _ => {
            for sub in 0..16 {
                let at = q6k::SUB * sub;
                for g in 0..2 {
                    for j in 0..4 {
                        let v = 16 * sub + 8 * g + j;
                        q[at + g * 64 + c * 4 + j] =
                            ((codes[v] & 15) | ((codes[v + 4] & 15) << 4)) as u8;
                    }
                }
                for j in 0..4 {
                    let high = (0..4).fold(0, |acc, w| {
                        acc | (((codes[16 * sub + 4 * w + j] >> 4) & 3) << (2 * w))
                    });
                    q[at + 128 + c * 4 + j] = high as u8;
                }
            }
        }
    }
}

/// Values per sub-block (one scale): 16 for Q6_K, 32 for the others.
pub(crate) const fn sub_len(ty: QuantType) -> usize {
    match ty {
        QuantType::Q6_K => 16,
        _ => 32,
    }
}

/// What the code is offset by: a value is `mul · (code − offset) − min`.
pub(crate) const fn code_offset(ty: QuantType) -> i32 {
    match ty {
        QuantType::Q4_0 => 8,
        QuantType::Q6_K => 32,
        _ => 0,
    }
}

/// The multiplier and minimum of sub-block `s` of row `c` (as ggml's dequantization computes
/// them), from a panel block's head.
fn scales(ty: QuantType, head: &[u8], c: usize, s: usize) -> (f32, f32) {
    let half = |at: usize| f16::from_le_bytes([head[at], head[at + 1]]).to_f32();
    match ty {
        QuantType::Q4_K => (
            half(2 * c) * f32::from(head[q4k::SC + NR * s + c]),
            half(q4k::DMIN + 2 * c) * f32::from(head[q4k::M + NR * s + c]),
        ),
        QuantType::Q6_K => (
            half(2 * c) * f32::from(head[q6k::SC + NR * s + c] as i8),
            0.0,
        ),
        _ => (half(2 * c), 0.0),
    }
}

/// Sub-block `s` of row `c` of an interleaved panel block: its multiplier and minimum, and
/// its codes.
pub(crate) fn sub_block(
    ty: QuantType,
    block: &[u8],
    c: usize,
    s: usize,
    codes: &mut [i32],
) -> (f32, f32) {
    let (head, q) = block.split_at(head_bytes(ty));
    let len = sub_len(ty);
    for (w, code) in codes[..len].iter_mut().enumerate() {
        *code = get_code(ty, q, c, s * len + w);
    }
    scales(ty, head, c, s)
}

/// Widens one interleaved panel block into `out` as `[ty.block_len()][16]` f32: the values
/// ggml's dequantization gives, bit for bit.
pub(crate) fn widen(ty: QuantType, block: &[u8], out: &mut [f32]) {
    let (head, q) = block.split_at(head_bytes(ty));
    let len = sub_len(ty);
    let (mut mul, mut min) = ([0.0f32; NR], [0.0f32; NR]);
    for s in 0..ty.block_len() / len {
        for c in 0..NR {
            (mul[c], min[c]) = scales(ty, head, c, s);
        }
        for w in 0..len {
            let v = s * len + w;
            let row: &mut [f32; NR] = (&mut out[v * NR..(v + 1) * NR]).try_into().unwrap();
            // Row c's code is at `c * 4` from `src` (bits `shift..` for packed codes).
            let (src, shift) = match ty {
                QuantType::Q8_0 => (&q[(v / 4) * 64 + v % 4..], 0),
                QuantType::Q6_K => (&q[q6k::SUB * s + (w / 8) * 64 + w % 4..], 4 * ((w / 4) % 2)),
                _ => (&q[256 * s + (w / 8) * 64 + w % 4..], 4 * ((w / 4) % 2)),
            };
            match ty {
                QuantType::Q8_0 => {
                    for c in 0..NR {
                        row[c] = f32::from(src[c * 4] as i8) * mul[c];
                    }
                }
                QuantType::Q4_0 => {
                    for c in 0..NR {
                        row[c] = (i32::from((src[c * 4] >> shift) & 15) - 8) as f32 * mul[c];
                    }
                }
                QuantType::Q4_K => {
                    for c in 0..NR {
                        row[c] = mul[c] * f32::from((src[c * 4] >> shift) & 15) - min[c];
                    }
                }
                _ => {
                    let highs = &q[q6k::SUB * s + 128 + w % 4..];
                    for c in 0..NR {
                        let low = (src[c * 4] >> shift) & 15;
                        let high = (highs[c * 4] >> (2 * (w / 4))) & 3;
                        row[c] = (i32::from(low | (high << 4)) - 32) as f32 * mul[c];
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whole bytes at a time write what value-by-value writes do, for every format and row.
    #[test]
    fn put_codes_writes_what_put_code_writes() {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for ty in [
            QuantType::Q8_0,
            QuantType::Q4_0,
            QuantType::Q4_K,
            QuantType::Q6_K,
        ] {
            let size = panel_block_bytes(ty) - head_bytes(ty);
            for c in [0, 5, NR - 1] {
                let mut codes = [0i32; 256];
                for code in codes.iter_mut().take(ty.block_len()) {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    *code = match ty {
                        QuantType::Q8_0 => (state % 256) as i32 - 128,
                        QuantType::Q6_K => (state % 64) as i32,
                        _ => (state % 16) as i32,
                    };
                }
                let (mut whole, mut one) = (vec![0u8; size], vec![0u8; size]);
                put_codes(ty, &mut whole, c, &codes);
                for (v, &code) in codes.iter().enumerate().take(ty.block_len()) {
                    put_code(ty, &mut one, c, v, code);
                }
                assert_eq!(whole, one, "{ty:?}, row {c}");
                // And a block's codes read at once are its codes read one by one.
                let block: Vec<u8> = (0..ty.block_bytes())
                    .map(|i| (i * 37 + c * 11) as u8)
                    .collect();
                let mut all = [0i32; 256];
                codes_of(ty, &block, &mut all);
                for (v, &code_v) in all.iter().enumerate().take(ty.block_len()) {
                    assert_eq!(code_v, code(ty, &block, v), "{ty:?}, value {v}");
                }
            }
        }
    }
}
