//! The AMX kernel (Intel Xeon from Sapphire Rapids on): floating-point products on the
//! matrix tiles, `TDPBF16PS`, with both operands rounded to bf16 and the sums kept in f32.
//!
//! Not a [`MicroKernel`](super::MicroKernel): a tile instruction multiplies 16 rows by 32
//! values of depth by 16 columns at once and wants both operands in its own layout, so this
//! file has its own blocked loops. Per task:
//! - the task's rows of `A` are rounded to bf16 once per product and thread (rows padded with
//!   zeros to a multiple of 32, depth to a multiple of 32) and laid out tile by tile, and kept
//!   for the other tasks of the same product on this thread;
//! - per column block of `B` (8 panels, 128 columns) and pass over the depth ([`DEPTH`]), the
//!   panels are rounded to bf16 and interleaved by pairs of depth (the "VNNI" layout a `B`
//!   tile wants: row `j` of a tile holds depth `2j` and `2j + 1` of 16 columns side by side);
//! - every 32 × 32 block of `C` is four accumulator tiles (tmm0–3) fed by two `A` tiles
//!   (tmm4–5) and two `B` tiles (tmm6–7), loaded from `C` when a pass adds to it.
//!
//! Arithmetic: `f32` values become bf16 by rounding to nearest even ([`to_bf16`]); each
//! product of two bf16 values is exact in f32, and the products are summed into f32
//! accumulators (Intel's SDM: bf16 denormal inputs read as zero, denormal results flushed).
//! The SDM writes the sum as two rounded additions per pair of depth in order, but on a
//! Xeon host with AMX a 32-deep step's sum matched no order tried in its last bit, so the
//! unit tests check the kernel bit for bit on inputs whose sums are exact in any order, and
//! within f32's rounding elsewhere.
//!
//! Tile instructions have no stable intrinsics: they are written with `asm!`, after the
//! process has asked Linux for the tile state (`arch_prctl(ARCH_REQ_XCOMP_PERM)`).

use std::arch::asm;
use std::arch::x86_64::*;
use std::sync::OnceLock;

use super::super::pack::{self, panel};
use super::super::{Block, COLUMN_BLOCK, GemmScratch, KC, MatRef, NR};
use super::Panel;

/// Most depth of one pass over `C` (a multiple of 32). A column block of `B` is then 256 KB in
/// bf16 (L2). Measured on the 220 M model at 256 tokens (2 threads, a Xeon VM with AMX, bf16
/// weights, medians of 9): 0.213 s at 256 deep, 0.182 s at 512, 0.166 s at 1024, 0.169 s at
/// 2048 and 0.162 s at 4096 (the noise is about 0.005 s); f32 weights the same way.
const DEPTH: usize = 1024;
/// Rows of `C` per block (two tiles).
const ROWS: usize = 32;
/// Depth of one tile product.
const STEP: usize = 32;
/// Rows of one tile.
const TILE_ROWS: usize = 16;
/// Values of one tile of bf16 (16 rows of 32).
const TILE: usize = TILE_ROWS * STEP;

/// Whether this CPU has AMX with bf16 (CPUID) and the OS lets this process use the tile state.
/// Asked once per process: the permission, once granted, holds for every thread.
pub(crate) fn available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| cpu_has_amx_bf16() && os_grants_tile_state())
}

/// Whether the tiles also multiply bytes (AMX-INT8), besides [`available`].
pub(crate) fn int8_available() -> bool {
    // SAFETY: as in `cpu_has_amx_bf16`.
    #[allow(unused_unsafe)]
    let leaf7 = unsafe { __cpuid_count(7, 0) };
    available() && leaf7.edx & (1 << 25) != 0
}

fn cpu_has_amx_bf16() -> bool {
    // SAFETY: CPUID exists on every x86-64 CPU; leaf 7 is below the maximum leaf on any CPU
    // with AVX-512 (checked by the caller first) and reads as zeros otherwise.
    #[allow(unused_unsafe)]
    let leaf7 = unsafe { __cpuid_count(7, 0) };
    let (amx_bf16, amx_tile) = (1 << 22, 1 << 24);
    leaf7.edx & amx_bf16 != 0 && leaf7.edx & amx_tile != 0
}

#[cfg(target_os = "linux")]
fn os_grants_tile_state() -> bool {
    const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
    const XFEATURE_XTILEDATA: libc::c_long = 18;
    // SAFETY: arch_prctl with this request only changes which state components the process
    // may use; it touches no memory of ours.
    unsafe {
        libc::syscall(
            libc::SYS_arch_prctl,
            ARCH_REQ_XCOMP_PERM,
            XFEATURE_XTILEDATA,
        ) == 0
    }
}

/// Other systems: not tried here, so not used.
#[cfg(not(target_os = "linux"))]
fn os_grants_tile_state() -> bool {
    false
}

/// `x` rounded to the nearest bf16, ties to even (the bits of the bf16). NaNs whose payload
/// lies only in the low 16 bits may become infinities; no model value is such a NaN.
#[inline(always)]
pub(crate) fn to_bf16(x: f32) -> u16 {
    let bits = x.to_bits();
    (bits.wrapping_add(0x7FFF + ((bits >> 16) & 1)) >> 16) as u16
}

/// Per-thread memory of the AMX kernel.
#[derive(Debug, Default)]
pub(crate) struct AmxScratch {
    /// Rows of `A` in bf16, laid out in tiles ([`round_rows`](Self::round_rows)).
    a: Vec<u16>,
    /// (product, first row, rows, k) of what `a` holds.
    holds: Option<(u64, usize, usize, usize)>,
    /// One row of `A` rounded, before it is laid out in tiles.
    row: Vec<u16>,
    /// A column block of `B` in the tile layout: per panel, `pass / 2` rows of 16 pairs.
    b: Vec<u16>,
    /// One 32 × 32 block of `C` whose tiles are not all inside the output.
    c: Vec<f32>,
}

impl AmxScratch {
    /// Rounds rows `rows` of `a` to bf16 unless they are what `self.a` holds for `product`,
    /// in the order the tiles read them: `rows.len()` rounded up to 32 rows (zeros), `a.cols`
    /// rounded up to `steps` × 32 values (zeros); for each block of 16 rows and each step of
    /// 32 values, the block's 16 rows of 32 values side by side (one tile, 1 KB, read as one
    /// stream rather than 16 rows far apart).
    fn round_rows(&mut self, product: u64, a: &MatRef<'_>, rows: std::ops::Range<usize>) {
        let key = (product, rows.start, rows.len(), a.cols);
        if self.holds == Some(key) {
            return;
        }
        let steps = a.cols.div_ceil(STEP);
        let padded = rows.len().next_multiple_of(ROWS);
        let len = padded * steps * STEP;
        if self.a.len() < len {
            self.a.resize(len, 0);
        }
        self.row.resize(steps * STEP, 0);
        let out = &mut self.a[..len];
        out[rows.len() / TILE_ROWS * steps * TILE..].fill(0);
        for (i, r) in rows.clone().enumerate() {
            let row = &mut self.row[..];
            if a.col_stride == 1 {
                let src = &a.data[r * a.row_stride..r * a.row_stride + a.cols];
                // SAFETY: AVX-512F and BW are present (an AMX `Isa` requires them).
                unsafe { round_row(src, row) };
            } else {
                for (c, d) in row[..a.cols].iter_mut().enumerate() {
                    *d = to_bf16(a.at(r, c));
                }
            }
            row[a.cols..].fill(0);
            let (block, within) = (i / TILE_ROWS, i % TILE_ROWS);
            for (step, values) in row.chunks_exact(STEP).enumerate() {
                let at = (block * steps + step) * TILE + within * STEP;
                out[at..at + STEP].copy_from_slice(values);
            }
        }
        self.holds = Some(key);
    }
}

/// `dst[..src.len()]` = `src` rounded to bf16.
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn round_row(src: &[f32], dst: &mut [u16]) {
    let n = src.len();
    assert!(dst.len() >= n);
    let chunks = n / 16;
    for i in 0..chunks {
        // SAFETY: values 16i..16i + 16 lie inside both slices (chunks ≤ n / 16).
        unsafe {
            let x = _mm512_loadu_ps(src.as_ptr().add(16 * i));
            let r = _mm512_cvtepi32_epi16(round_lanes(_mm512_castps_si512(x)));
            _mm256_storeu_si256(dst.as_mut_ptr().add(16 * i).cast(), r);
        }
    }
    for i in chunks * 16..n {
        dst[i] = to_bf16(src[i]);
    }
}

/// [`to_bf16`] of 16 f32 bit patterns, in the low half of each lane.
#[target_feature(enable = "avx512f")]
#[inline]
fn round_lanes(bits: __m512i) -> __m512i {
    let lsb = _mm512_and_si512(_mm512_srli_epi32::<16>(bits), _mm512_set1_epi32(1));
    let bias = _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7FFF));
    _mm512_srli_epi32::<16>(_mm512_add_epi32(bits, bias))
}

/// Writes `kc` rows of a panel (16 columns) in the tile layout: `kc.div_ceil(32) * 16` rows
/// of 32 values, row `j` holding depth `2j` and `2j + 1` of each column side by side; zeros
/// past `kc`.
#[target_feature(enable = "avx512f,avx512bw,f16c,avx2")]
unsafe fn interleave_panel(panel: Panel<'_>, kc: usize, out: &mut [u16]) {
    let pairs = kc.next_multiple_of(STEP) / 2;
    assert!(out.len() >= pairs * 2 * NR);
    let (_, data, len) = panel.parts();
    assert!(len >= kc * NR, "B panel out of bounds");
    for j in 0..pairs {
        // SAFETY: rows 2j and 2j + 1 are read only if below kc (inside the panel).
        let (even, odd) = unsafe {
            (
                panel_row(panel, data, kc, 2 * j),
                panel_row(panel, data, kc, 2 * j + 1),
            )
        };
        let v = _mm512_or_si512(even, _mm512_slli_epi32::<16>(odd));
        // SAFETY: 32 values at 32j lie inside `out` (asserted above).
        unsafe { _mm512_storeu_si512(out.as_mut_ptr().add(32 * j).cast(), v) };
    }
}

/// Row `kk` of a panel (at `data`, `kc` rows of 16 values) as 16 bf16 values in the low
/// halves of 16 lanes; zeros from `kc` on.
///
/// # Safety
/// The panel holds at least `kc × 16` values.
#[target_feature(enable = "avx512f,avx512bw,f16c,avx2")]
#[inline]
unsafe fn panel_row(panel: Panel<'_>, data: *const u8, kc: usize, kk: usize) -> __m512i {
    if kk >= kc {
        return _mm512_setzero_si512();
    }
    // SAFETY: row kk < kc of a panel of at least kc × 16 values (the contract).
    unsafe {
        match panel {
            Panel::F32(_) => {
                let p = data.cast::<f32>().add(kk * NR);
                round_lanes(_mm512_castps_si512(_mm512_loadu_ps(p)))
            }
            Panel::Bf16(_) => {
                let p = data.cast::<u16>().add(kk * NR);
                _mm512_cvtepu16_epi32(_mm256_loadu_si256(p.cast()))
            }
            Panel::F16(_) => {
                let p = data.cast::<u16>().add(kk * NR);
                let x = _mm512_cvtph_ps(_mm256_loadu_si256(p.cast()));
                round_lanes(_mm512_castps_si512(x))
            }
        }
    }
}

/// The tile configuration: palette 1, all eight tiles 16 rows of 64 bytes.
#[repr(C, align(64))]
struct TileConfig([u8; 64]);

impl TileConfig {
    const fn all_full() -> Self {
        let mut bytes = [0u8; 64];
        bytes[0] = 1;
        let mut t = 0;
        while t < 8 {
            bytes[16 + 2 * t] = 64;
            bytes[48 + t] = 16;
            t += 1;
        }
        Self(bytes)
    }
}

static CONFIG: TileConfig = TileConfig::all_full();

/// `C (+)= A · B` on 32 rows × 32 columns (`b1` given) or 16 columns, over `steps` × 32
/// depth. `a0`, `a1`: the two 16-row blocks of `A`, a tile (1 KB) per step; `b0`, `b1`:
/// panels in the tile layout, a tile per step; `c`: f32 rows `ldc` bytes apart, read first if
/// `load`.
///
/// # Safety
/// The tile configuration [`CONFIG`] is loaded; every address lies inside its buffer.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn tiles(
    a0: *const u16,
    a1: *const u16,
    b0: *const u16,
    b1: Option<*const u16>,
    steps: usize,
    c: *mut f32,
    ldc: usize,
    load: bool,
) {
    debug_assert!(steps > 0);
    let c1 = c.wrapping_byte_add(16 * ldc);
    // SAFETY: the caller's contract. Tile registers are touched by no code but these blocks,
    // so they keep their values from one block to the next.
    unsafe {
        match (load, b1) {
            (true, Some(_)) => asm!(
                "tileloadd tmm0, [{c0} + {ldc}*1]",
                "tileloadd tmm1, [{c0} + {ldc}*1 + 64]",
                "tileloadd tmm2, [{c1} + {ldc}*1]",
                "tileloadd tmm3, [{c1} + {ldc}*1 + 64]",
                c0 = in(reg) c, c1 = in(reg) c1, ldc = in(reg) ldc,
                options(nostack, readonly),
            ),
            (true, None) => asm!(
                "tileloadd tmm0, [{c0} + {ldc}*1]",
                "tileloadd tmm2, [{c1} + {ldc}*1]",
                c0 = in(reg) c, c1 = in(reg) c1, ldc = in(reg) ldc,
                options(nostack, readonly),
            ),
            (false, _) => asm!(
                "tilezero tmm0",
                "tilezero tmm1",
                "tilezero tmm2",
                "tilezero tmm3",
                options(nostack, nomem),
            ),
        }
        match b1 {
            Some(b1) => asm!(
                "2:",
                "tileloadd tmm4, [{a0} + {lda}*1]",
                "tileloadd tmm5, [{a1} + {lda}*1]",
                "tileloadd tmm6, [{b0} + {ldb}*1]",
                "tileloadd tmm7, [{b1} + {ldb}*1]",
                "tdpbf16ps tmm0, tmm4, tmm6",
                "tdpbf16ps tmm1, tmm4, tmm7",
                "tdpbf16ps tmm2, tmm5, tmm6",
                "tdpbf16ps tmm3, tmm5, tmm7",
                "add {a0}, 1024",
                "add {a1}, 1024",
                "add {b0}, 1024",
                "add {b1}, 1024",
                "dec {n}",
                "jnz 2b",
                "tilestored [{c0} + {ldc}*1], tmm0",
                "tilestored [{c0} + {ldc}*1 + 64], tmm1",
                "tilestored [{c1} + {ldc}*1], tmm2",
                "tilestored [{c1} + {ldc}*1 + 64], tmm3",
                a0 = inout(reg) a0 => _, a1 = inout(reg) a1 => _, lda = in(reg) 64usize,
                b0 = inout(reg) b0 => _, b1 = inout(reg) b1 => _, ldb = in(reg) 64usize,
                n = inout(reg) steps => _,
                c0 = in(reg) c, c1 = in(reg) c1, ldc = in(reg) ldc,
                options(nostack),
            ),
            None => asm!(
                "2:",
                "tileloadd tmm4, [{a0} + {lda}*1]",
                "tileloadd tmm5, [{a1} + {lda}*1]",
                "tileloadd tmm6, [{b0} + {ldb}*1]",
                "tdpbf16ps tmm0, tmm4, tmm6",
                "tdpbf16ps tmm2, tmm5, tmm6",
                "add {a0}, 1024",
                "add {a1}, 1024",
                "add {b0}, 1024",
                "dec {n}",
                "jnz 2b",
                "tilestored [{c0} + {ldc}*1], tmm0",
                "tilestored [{c1} + {ldc}*1], tmm2",
                a0 = inout(reg) a0 => _, a1 = inout(reg) a1 => _, lda = in(reg) 64usize,
                b0 = inout(reg) b0 => _, ldb = in(reg) 64usize,
                n = inout(reg) steps => _,
                c0 = in(reg) c, c1 = in(reg) c1, ldc = in(reg) ldc,
                options(nostack),
            ),
        }
    }
}

/// Runs one rectangle of `C` on the tiles (one that is not [trivial](Block::is_trivial)).
///
/// # Safety
/// [`available`] is true and the CPU has AVX-512F, BW, AVX2 and F16C (an AMX `Isa` exists).
pub(in crate::gemm) unsafe fn task(block: Block<'_, '_>, product: u64, scratch: &mut GemmScratch) {
    let Block {
        a,
        b,
        c,
        rows,
        cols,
        accumulate,
    } = block;
    let k = a.cols;
    debug_assert_eq!(cols.start % NR, 0);
    let GemmScratch {
        b: widened, amx, ..
    } = scratch;
    let quantized = pack::has_quantized(b);
    if quantized && widened.len() < COLUMN_BLOCK * KC * NR {
        widened.resize(COLUMN_BLOCK * KC * NR, 0.0);
    }
    let depth = if quantized { KC } else { DEPTH };
    let all_steps = k.div_ceil(STEP);
    amx.round_rows(product, a, rows.clone());
    let panel_len = depth * NR;
    if amx.b.len() < COLUMN_BLOCK * panel_len {
        amx.b.resize(COLUMN_BLOCK * panel_len, 0);
    }
    if amx.c.len() < ROWS * 2 * NR {
        amx.c.resize(ROWS * 2 * NR, 0.0);
    }
    let AmxScratch {
        a: abf,
        b: bbf,
        c: spill,
        ..
    } = amx;
    let (abf, spill): (&[u16], &mut [f32]) = (abf, spill);
    let m = rows.len();
    let ldc_out = c.row_stride * 4;
    // SAFETY: the tile state is granted (this function's contract); CONFIG is 64 bytes.
    unsafe { asm!("ldtilecfg [{}]", in(reg) &raw const CONFIG, options(nostack, readonly)) };
    let mut p0 = cols.start / NR;
    while p0 * NR < cols.end {
        let p_end = (p0 + COLUMN_BLOCK).min(cols.end.div_ceil(NR));
        let mut k0 = 0;
        while k0 < k {
            let kc = depth.min(k - k0);
            let steps = kc.div_ceil(STEP);
            let load = accumulate || k0 > 0;
            if quantized {
                pack::widen_quantized(b, p0..p_end, k0, kc, widened);
            }
            for (slot, p) in (p0..p_end).enumerate() {
                let source = panel(b, p, k0, kc, widened, slot);
                // SAFETY: the CPU has AVX-512F/BW, AVX2 and F16C (this function's contract).
                unsafe { interleave_panel(source, kc, &mut bbf[slot * panel_len..]) };
            }
            let mut r0 = 0;
            while r0 < m {
                let valid_rows = ROWS.min(m - r0);
                // The two 16-row blocks of rows r0.., from step k0 / 32 (k0 is a multiple of
                // 32, and the steps stay within k rounded up to 32).
                let block = |b: usize| {
                    let at = (b * all_steps + k0 / STEP) * TILE;
                    abf[at..at + steps * TILE].as_ptr()
                };
                let (a0, a1) = (block(r0 / TILE_ROWS), block(r0 / TILE_ROWS + 1));
                let mut p = p0;
                while p < p_end {
                    let pair = p + 1 < p_end;
                    let width = if pair { 2 * NR } else { NR };
                    let j0 = p * NR;
                    let ncols = width.min(cols.end - j0);
                    let row = rows.start + r0;
                    let b0 = bbf[(p - p0) * panel_len..].as_ptr();
                    let b1 = pair.then(|| bbf[(p + 1 - p0) * panel_len..].as_ptr());
                    if valid_rows == ROWS && ncols == width {
                        // The whole block lies in C: the tiles load and store it in place.
                        // SAFETY: rows row..row + 32 and columns j0..j0 + width are inside
                        // this task's rectangle (checked for the first and last row here);
                        // the tiles read A and B inside their buffers (slices above).
                        unsafe {
                            c.at(row + ROWS - 1, j0, width);
                            let at = c.at(row, j0, width);
                            tiles(a0, a1, b0, b1, steps, at, ldc_out, load);
                        }
                    } else {
                        if load {
                            for r in 0..valid_rows {
                                // SAFETY: this task owns its rectangle of C.
                                let src = unsafe { c.row_mut(row + r, j0, ncols) };
                                spill[r * 2 * NR..r * 2 * NR + ncols].copy_from_slice(src);
                            }
                        }
                        // SAFETY: as above; the spill block is 32 rows of 32 values.
                        unsafe {
                            let at = spill.as_mut_ptr();
                            tiles(a0, a1, b0, b1, steps, at, 2 * NR * 4, load);
                        }
                        for r in 0..valid_rows {
                            // SAFETY: this task owns its rectangle of C.
                            let dst = unsafe { c.row_mut(row + r, j0, ncols) };
                            dst.copy_from_slice(&spill[r * 2 * NR..r * 2 * NR + ncols]);
                        }
                    }
                    p += if pair { 2 } else { 1 };
                }
                r0 += ROWS;
            }
            k0 += kc;
        }
        p0 = p_end;
    }
    // SAFETY: as ldtilecfg above.
    unsafe { asm!("tilerelease", options(nostack, nomem)) };
}
