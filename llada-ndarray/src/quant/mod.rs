//! ggml's block-quantized weight formats, as llama.cpp writes them into GGUF files: the block
//! layouts and their dequantization. A block holds [`QuantType::block_len`] consecutive values
//! of one weight row in [`QuantType::block_bytes`] bytes; the matrix kernel keeps weights in
//! these blocks and widens a slice at a time.

mod quantize;

use half::f16;

pub(crate) use quantize::{format_for, quantize_row};

use crate::error::LoadError;

/// A format to quantize a checkpoint's linear layers and token embedding into while it loads
/// (ggml's formats with ggml's reference quantization, as `llama-quantize` writes them).
/// Matrices whose rows are not a multiple of the format's block fall back as llama.cpp does
/// (Q4_K to Q5_0, Q6_K to Q8_0), or stay in floats when not even that fits; weights that are
/// already quantized keep their format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Quantization {
    /// 8-bit, blocks of 32 (about 8.5 bits per weight).
    Q8_0,
    /// 4-bit, blocks of 32 (4.5 bits per weight).
    Q4_0,
    /// 4-bit K-quant, super-blocks of 256 (4.5 bits per weight, smaller error than Q4_0).
    Q4K,
    /// 6-bit K-quant, super-blocks of 256 (about 6.6 bits per weight).
    Q6K,
}

impl Quantization {
    /// Every format.
    pub const ALL: [Quantization; 4] = [
        Quantization::Q8_0,
        Quantization::Q4_0,
        Quantization::Q4K,
        Quantization::Q6K,
    ];

    /// The name the CLI takes: `q8_0`, `q4_0`, `q4_k` or `q6_k`.
    pub const fn name(self) -> &'static str {
        match self {
            Quantization::Q8_0 => "q8_0",
            Quantization::Q4_0 => "q4_0",
            Quantization::Q4K => "q4_k",
            Quantization::Q6K => "q6_k",
        }
    }

    pub(crate) const fn quant_type(self) -> QuantType {
        match self {
            Quantization::Q8_0 => QuantType::Q8_0,
            Quantization::Q4_0 => QuantType::Q4_0,
            Quantization::Q4K => QuantType::Q4_K,
            Quantization::Q6K => QuantType::Q6_K,
        }
    }
}

impl std::fmt::Display for Quantization {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Quantization {
    type Err = LoadError;

    fn from_str(name: &str) -> Result<Self, LoadError> {
        Self::ALL
            .into_iter()
            .find(|q| q.name() == name.to_ascii_lowercase())
            .ok_or_else(|| LoadError::UnknownQuantization {
                name: name.to_string(),
            })
    }
}

/// A block-quantized format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[allow(non_camel_case_types)]
pub(crate) enum QuantType {
    /// 32 values: f16 scale, 4-bit quants offset by 8.
    Q4_0,
    /// 32 values: f16 scale and minimum, 4-bit quants.
    Q4_1,
    /// 32 values: f16 scale, 5-bit quants offset by 16 (fifth bits in 32 flag bits).
    Q5_0,
    /// 32 values: f16 scale and minimum, 5-bit quants.
    Q5_1,
    /// 32 values: f16 scale, 8-bit quants.
    Q8_0,
    /// 256 values: f16 super-block scale and minimum, eight 6-bit sub-block scales and
    /// minimums, 4-bit quants.
    Q4_K,
    /// 256 values: as Q4_K with a fifth bit per quant.
    Q5_K,
    /// 256 values: f16 super-block scale, sixteen 8-bit sub-block scales, 6-bit quants offset by 32.
    Q6_K,
}

impl QuantType {
    /// Values per block.
    pub(crate) const fn block_len(self) -> usize {
        match self {
            QuantType::Q4_K | QuantType::Q5_K | QuantType::Q6_K => 256,
            _ => 32,
        }
    }

    /// Bytes per block.
    pub(crate) const fn block_bytes(self) -> usize {
        match self {
            QuantType::Q4_0 => 18,
            QuantType::Q4_1 => 20,
            QuantType::Q5_0 => 22,
            QuantType::Q5_1 => 24,
            QuantType::Q8_0 => 34,
            QuantType::Q4_K => 144,
            QuantType::Q5_K => 176,
            QuantType::Q6_K => 210,
        }
    }

    /// The name llama.cpp gives the format.
    pub(crate) const fn name(self) -> &'static str {
        match self {
            QuantType::Q4_0 => "Q4_0",
            QuantType::Q4_1 => "Q4_1",
            QuantType::Q5_0 => "Q5_0",
            QuantType::Q5_1 => "Q5_1",
            QuantType::Q8_0 => "Q8_0",
            QuantType::Q4_K => "Q4_K",
            QuantType::Q5_K => "Q5_K",
            QuantType::Q6_K => "Q6_K",
        }
    }

    /// Bytes of a row of `len` values (`len` a multiple of the block length).
    pub(crate) const fn row_bytes(self, len: usize) -> usize {
        len / self.block_len() * self.block_bytes()
    }
}

fn half(bytes: &[u8], at: usize) -> f32 {
    f16::from_bits(u16::from_le_bytes([bytes[at], bytes[at + 1]])).to_f32()
}

/// Widens one block (`block` holds exactly `ty.block_bytes()` bytes) into `out`
/// (`ty.block_len()` values), with ggml's reference arithmetic.
pub(crate) fn dequantize_block(ty: QuantType, block: &[u8], out: &mut [f32]) {
    debug_assert_eq!(block.len(), ty.block_bytes());
    debug_assert_eq!(out.len(), ty.block_len());
    match ty {
        QuantType::Q4_0 => {
            let d = half(block, 0);
            let qs = &block[2..18];
            for (j, &q) in qs.iter().enumerate() {
                out[j] = (i32::from(q & 0x0F) - 8) as f32 * d;
                out[j + 16] = (i32::from(q >> 4) - 8) as f32 * d;
            }
        }
        QuantType::Q4_1 => {
            let (d, m) = (half(block, 0), half(block, 2));
            let qs = &block[4..20];
            for (j, &q) in qs.iter().enumerate() {
                out[j] = f32::from(q & 0x0F) * d + m;
                out[j + 16] = f32::from(q >> 4) * d + m;
            }
        }
        QuantType::Q5_0 => {
            let d = half(block, 0);
            let qh = u32::from_le_bytes([block[2], block[3], block[4], block[5]]);
            let qs = &block[6..22];
            for (j, &q) in qs.iter().enumerate() {
                let high0 = ((qh >> j) << 4) & 0x10;
                let high1 = (qh >> (j + 12)) & 0x10;
                out[j] = ((u32::from(q & 0x0F) | high0) as i32 - 16) as f32 * d;
                out[j + 16] = ((u32::from(q >> 4) | high1) as i32 - 16) as f32 * d;
            }
        }
        QuantType::Q5_1 => {
            let (d, m) = (half(block, 0), half(block, 2));
            let qh = u32::from_le_bytes([block[4], block[5], block[6], block[7]]);
            let qs = &block[8..24];
            for (j, &q) in qs.iter().enumerate() {
                let high0 = ((qh >> j) << 4) & 0x10;
                let high1 = (qh >> (j + 12)) & 0x10;
                out[j] = (u32::from(q & 0x0F) | high0) as f32 * d + m;
                out[j + 16] = (u32::from(q >> 4) | high1) as f32 * d + m;
            }
        }
        QuantType::Q8_0 => {
            let d = half(block, 0);
            for (o, &q) in out.iter_mut().zip(&block[2..34]) {
                *o = f32::from(q as i8) * d;
            }
        }
        QuantType::Q4_K => {
            let (d, dmin) = (half(block, 0), half(block, 2));
            let scales = &block[4..16];
            let qs = &block[16..144];
            for (chunk, (q, out)) in qs
                .chunks_exact(32)
                .zip(out.chunks_exact_mut(64))
                .enumerate()
            {
                let (sc1, m1) = scale_min_k4(2 * chunk, scales);
                let (sc2, m2) = scale_min_k4(2 * chunk + 1, scales);
                let (d1, min1) = (d * f32::from(sc1), dmin * f32::from(m1));
                let (d2, min2) = (d * f32::from(sc2), dmin * f32::from(m2));
                let (lo, hi) = out.split_at_mut(32);
                for ((l, h), &q) in lo.iter_mut().zip(hi.iter_mut()).zip(q) {
                    *l = d1 * f32::from(q & 0x0F) - min1;
                    *h = d2 * f32::from(q >> 4) - min2;
                }
            }
        }
        QuantType::Q5_K => {
            let (d, dmin) = (half(block, 0), half(block, 2));
            let scales = &block[4..16];
            let qh = &block[16..48];
            let qs = &block[48..176];
            for (chunk, (q, out)) in qs
                .chunks_exact(32)
                .zip(out.chunks_exact_mut(64))
                .enumerate()
            {
                let (sc1, m1) = scale_min_k4(2 * chunk, scales);
                let (sc2, m2) = scale_min_k4(2 * chunk + 1, scales);
                let (d1, min1) = (d * f32::from(sc1), dmin * f32::from(m1));
                let (d2, min2) = (d * f32::from(sc2), dmin * f32::from(m2));
                let (bit1, bit2) = (1u8 << (2 * chunk), 2u8 << (2 * chunk));
                let (lo, hi) = out.split_at_mut(32);
                for (l, ((lo, hi), &q)) in lo.iter_mut().zip(hi.iter_mut()).zip(q).enumerate() {
                    let h1 = if qh[l] & bit1 != 0 { 16 } else { 0 };
                    let h2 = if qh[l] & bit2 != 0 { 16 } else { 0 };
                    *lo = d1 * f32::from((q & 0x0F) + h1) - min1;
                    *hi = d2 * f32::from((q >> 4) + h2) - min2;
                }
            }
        }
        QuantType::Q6_K => {
            let ql = &block[0..128];
            let qh = &block[128..192];
            let scales = &block[192..208];
            let d = half(block, 208);
            for half_block in 0..2 {
                let ql = &ql[64 * half_block..];
                let qh = &qh[32 * half_block..];
                let sc = &scales[8 * half_block..];
                let out = &mut out[128 * half_block..];
                for l in 0..32 {
                    let is = l / 16;
                    let q1 = i32::from((ql[l] & 0x0F) | ((qh[l] & 3) << 4)) - 32;
                    let q2 = i32::from((ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4)) - 32;
                    let q3 = i32::from((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
                    let q4 = i32::from((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
                    let s = |i: usize| d * f32::from(sc[i] as i8);
                    out[l] = s(is) * q1 as f32;
                    out[l + 32] = s(is + 2) * q2 as f32;
                    out[l + 64] = s(is + 4) * q3 as f32;
                    out[l + 96] = s(is + 6) * q4 as f32;
                }
            }
        }
    }
}

/// The 6-bit scale and minimum of sub-block `j` (0..8) of a Q4_K / Q5_K super-block.
pub(crate) fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// Widens a row of blocks (`row` holds whole blocks) into `out` (as many values).
pub(crate) fn dequantize_row(ty: QuantType, row: &[u8], out: &mut [f32]) {
    for (block, out) in row
        .chunks_exact(ty.block_bytes())
        .zip(out.chunks_exact_mut(ty.block_len()))
    {
        dequantize_block(ty, block, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q8_0_and_q4_0_blocks_decode_as_ggml_defines_them() {
        // Q8_0: scale 0.5, quants -16..15 as two's complement bytes.
        let mut block = vec![0u8; 34];
        block[..2].copy_from_slice(&f16::from_f32(0.5).to_le_bytes());
        for (i, b) in block[2..].iter_mut().enumerate() {
            *b = (i as i8 - 16) as u8;
        }
        let mut out = [0.0; 32];
        dequantize_block(QuantType::Q8_0, &block, &mut out);
        for (i, &v) in out.iter().enumerate() {
            assert_eq!(v, (i as f32 - 16.0) * 0.5, "{i}");
        }
        // Q4_0: byte j holds value j (low nibble) and value j + 16 (high nibble), minus 8.
        let mut block = vec![0u8; 18];
        block[..2].copy_from_slice(&f16::from_f32(2.0).to_le_bytes());
        for j in 0..16 {
            block[2 + j] = (j as u8) | ((15 - j as u8) << 4);
        }
        dequantize_block(QuantType::Q4_0, &block, &mut out);
        for j in 0..16 {
            assert_eq!(out[j], (j as f32 - 8.0) * 2.0);
            assert_eq!(out[j + 16], (7.0 - j as f32) * 2.0);
        }
    }

    #[test]
    fn block_sizes_are_ggmls() {
        for (ty, len, bytes) in [
            (QuantType::Q4_0, 32, 18),
            (QuantType::Q8_0, 32, 34),
            (QuantType::Q4_K, 256, 144),
            (QuantType::Q6_K, 256, 210),
        ] {
            assert_eq!((ty.block_len(), ty.block_bytes()), (len, bytes));
        }
        assert_eq!(QuantType::Q4_K.row_bytes(4096), 16 * 144);
    }

    /// ggml's block formats as llama.cpp's `gguf` Python package reads and writes them
    /// (tests/fixtures/make_quant_blocks.py): random blocks of every type, and the reference
    /// quantizer's blocks for the same rows.
    fn reference() -> Vec<u8> {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/fixtures/quant/blocks.safetensors"
        );
        std::fs::read(path).expect("tests/fixtures/quant/blocks.safetensors")
    }

    fn floats(bytes: &[u8]) -> Vec<f32> {
        bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    }

    #[test]
    fn every_format_dequantizes_as_gguf_py_does() {
        let bytes = reference();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        for ty in [
            QuantType::Q4_0,
            QuantType::Q4_1,
            QuantType::Q5_0,
            QuantType::Q5_1,
            QuantType::Q8_0,
            QuantType::Q4_K,
            QuantType::Q5_K,
            QuantType::Q6_K,
        ] {
            let blocks = st.tensor(&format!("{}.blocks", ty.name())).unwrap();
            let want = floats(
                st.tensor(&format!("{}.dequantized", ty.name()))
                    .unwrap()
                    .data(),
            );
            let mut got = vec![f32::NAN; want.len()];
            dequantize_row(ty, blocks.data(), &mut got);
            // Bit for bit: the same f16 scales times the same small integers.
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert_eq!(
                    g.to_bits(),
                    w.to_bits(),
                    "{} value {i}: {g} vs {w}",
                    ty.name()
                );
            }
        }
    }

    #[test]
    fn the_32_value_formats_quantize_as_gguf_py_does() {
        let bytes = reference();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let rows = floats(st.tensor("rows").unwrap().data());
        for ty in [QuantType::Q4_0, QuantType::Q5_0, QuantType::Q8_0] {
            let want = st.tensor(&format!("{}.quantized", ty.name())).unwrap();
            let mut got = Vec::new();
            for row in rows.chunks_exact(512) {
                let mut out = vec![0u8; ty.row_bytes(512)];
                quantize_row(ty, row, &mut out);
                got.extend(out);
            }
            assert_eq!(got, want.data(), "{}", ty.name());
        }
    }
}
