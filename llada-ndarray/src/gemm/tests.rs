//! The matrix product against an f64 reference, with every kernel this CPU runs.

use super::kernels::avx512::{Lanes16, kernel_m16n};
use super::kernels::{BF16, F32, Sliver, Tile, with_rows};
use super::*;
use crate::Kernel;
use crate::quant::QuantType;

/// Every kernel this CPU runs that computes in f32 (the AMX kernel, which rounds to bf16, has
/// its own tests below), with every candidate [`Blocking`].
fn isas() -> Vec<Isa> {
    Kernel::supported()
        .into_iter()
        .filter(|k| !k.rounds_to_bf16())
        .flat_map(|k| {
            Blocking::CANDIDATES.map(|blocking| Isa::new(k).unwrap().with_blocking(blocking))
        })
        .collect()
}

pub(crate) fn reference(a: &[f32], w: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
    let mut c = vec![0.0f32; m * n];
    for i in 0..m {
        for j in 0..n {
            let mut s = 0.0f64;
            for kk in 0..k {
                s += f64::from(a[i * k + kk]) * f64::from(w[j * k + kk]);
            }
            c[i * n + j] = s as f32;
        }
    }
    c
}

pub(crate) fn values(len: usize, seed: u64) -> Vec<f32> {
    (0..len)
        .map(|i| {
            ((llada_core::testing::splitmix64(seed ^ i as u64) >> 40) as f32 / (1 << 24) as f32)
                - 0.5
        })
        .collect()
}

pub(crate) struct S(pub(crate) GemmScratch);
impl AsMut<GemmScratch> for S {
    fn as_mut(&mut self) -> &mut GemmScratch {
        &mut self.0
    }
}

/// `A · B`, `a` holding `m` rows, with the packed weight `packed`, on `pool` with `isa`.
fn packed_product(
    pool: &Pool<S>,
    isa: Isa,
    a: &[f32],
    m: usize,
    packed: &PackedMatrix,
) -> Vec<f32> {
    let (k, n) = (packed.k, packed.n);
    let mut c = vec![f32::NAN; m * n];
    gemm(
        pool,
        isa,
        MatRef::rows(a, m, k, k),
        Rhs::Packed(packed),
        Out::new(&mut c, m, n, n),
        false,
    );
    c
}

#[test]
fn packed_and_strided_products_match_a_reference_on_awkward_shapes() {
    let pool = Pool::new((0..3).map(|_| S(GemmScratch::new())).collect()).unwrap();
    for isa in isas() {
        for &(m, k, n) in &[
            (1, 1, 1),
            (7, 300, 33),
            (100, 17, 5),
            (13, 513, 64),
            (200, 64, 130),
            // With the shapes above, every short last sliver of the 6-row AVX2 and NEON
            // tiles and of the 8-row AVX-512 one: 1 to 7 rows left.
            (3, 40, 20),
            (5, 70, 48),
            (32, 260, 40),
            (2, 9, 16),
            (6, 33, 20),
            (9, 20, 17),
            (22, 50, 36),
            (23, 31, 40),
            // Deeper than one pass of the floating-point kernels: 3 passes, the later ones
            // adding to C.
            (19, 2100, 40),
        ] {
            let a = values(m * k, 1);
            let w = values(n * k, 2);
            let expected = reference(&a, &w, m, k, n);
            let packed = PackedMatrix::from_f32(&w, n, k, Dtype::F32);
            let tol = 1e-4 * (k as f32).sqrt();
            let mut c = packed_product(&pool, isa, &a, m, &packed);
            for (x, y) in c.iter().zip(&expected) {
                assert!(
                    (x - y).abs() < tol,
                    "{isa:?} packed {m}x{k}x{n}: {x} vs {y}"
                );
            }
            // Accumulating adds the product again.
            gemm(
                &pool,
                isa,
                MatRef::rows(&a, m, k, k),
                Rhs::Packed(&packed),
                Out::new(&mut c, m, n, n),
                true,
            );
            for (x, y) in c.iter().zip(&expected) {
                assert!((x - 2.0 * y).abs() < 2.0 * tol);
            }
            // Strided B = Wᵀ (rows of W are columns of B).
            let bt = MatRef {
                data: &w,
                rows: k,
                cols: n,
                row_stride: 1,
                col_stride: k,
            };
            // The same B = Wᵀ as a transposed strided view, packed into panels (attention's keys).
            let mut panels = vec![f32::NAN; n.div_ceil(NR) * k * NR];
            pack_panels(&bt, &mut panels);
            let mut c2 = vec![0.0f32; m * n];
            let mut scratch = GemmScratch::new();
            gemm_serial(
                isa,
                MatRef::rows(&a, m, k, k),
                Rhs::Panels {
                    data: &panels,
                    k,
                    n,
                },
                Out::new(&mut c2, m, n, n),
                false,
                &mut scratch,
            );
            for (x, y) in c2.iter().zip(&expected) {
                assert!(
                    (x - y).abs() < tol,
                    "{isa:?} panels {m}x{k}x{n}: {x} vs {y}"
                );
            }
        }
    }
}

/// The AVX-512 kernel's code, run on 16-lane arrays: the same tiles as the reference (its
/// 8-row main tile and a short one; the rows below a tile stay untouched).
#[test]
fn the_avx512_kernel_logic_matches_a_reference() {
    let (m, k, n) = (12, 37, 32);
    let a = values(m * k, 5);
    let w = values(n * k, 6);
    let expected = reference(&a, &w, m, k, n);
    let panels = PackedMatrix::pack(n, k, |r, out: &mut [f32]| {
        out.copy_from_slice(&w[r * k..(r + 1) * k])
    });
    let a_rows = Sliver { data: &a, lda: k };
    for (rows, cols, add) in [
        (8, 32, false),
        (7, 32, false),
        (8, 21, false),
        (8, 16, true),
    ] {
        let mut c = vec![1.0f32; m * n];
        let tile = Tile {
            c: Out::new(&mut c, m, n, n),
            row: 0,
            col: 0,
            rows,
            cols,
            add,
            prefetch: add,
            ahead: std::ptr::null(),
        };
        let b = [
            panels.as_ptr().cast::<u8>(),
            panels[k * NR..].as_ptr().cast::<u8>(),
        ];
        // SAFETY: the buffers have the kernel's shapes; Lanes16 needs no CPU feature.
        unsafe {
            with_rows!(
                rows,
                M in [7, 8],
                if cols > NR {
                    kernel_m16n::<Lanes16, F32, 2, M>(k, a_rows, b, tile);
                } else {
                    kernel_m16n::<Lanes16, F32, 1, M>(k, a_rows, [b[0]], tile);
                }
            )
        }
        for i in 0..m {
            for j in 0..n {
                let got = c[i * n + j];
                let want = if i < rows && j < cols {
                    expected[i * n + j] + f32::from(u8::from(add))
                } else {
                    1.0
                };
                assert!(
                    (got - want).abs() < 1e-4,
                    "({i}, {j}) rows {rows} cols {cols}: {got} vs {want}"
                );
            }
        }
    }
    // Half-precision panels through the emulated loads.
    let half = PackedMatrix::pack(n, k, |r, out: &mut [bf16]| {
        for (o, &v) in out.iter_mut().zip(&w[r * k..]) {
            *o = bf16::from_f32(v);
        }
    });
    let mut c = vec![0.0f32; m * n];
    let b = [
        half.as_ptr().cast::<u8>(),
        half[k * NR..].as_ptr().cast::<u8>(),
    ];
    // All 12 rows: a main tile of 8, then a short one of 4.
    fn tile(c: &mut [f32], (m, n): (usize, usize), row: usize, rows: usize) -> Tile<'_> {
        Tile {
            c: Out::new(c, m, n, n),
            row,
            col: 0,
            rows,
            cols: 32,
            add: false,
            prefetch: true,
            ahead: std::ptr::null(),
        }
    }
    let rest = Sliver {
        data: &a[8 * k..],
        lda: k,
    };
    // SAFETY: as above.
    unsafe {
        kernel_m16n::<Lanes16, BF16, 2, 8>(k, a_rows, b, tile(&mut c, (m, n), 0, 8));
        kernel_m16n::<Lanes16, BF16, 2, 4>(k, rest, b, tile(&mut c, (m, n), 8, 4));
    }
    for (x, y) in c.iter().zip(&expected) {
        assert!((x - y).abs() < 2e-2, "{x} vs {y}");
    }
}

/// The AVX-512 kernel's assembly 8 × 32 tile (f32 panels) sums exactly what its compiled
/// loop does: the same FMAs in the same order, so the same bits, at depths that are and are
/// not multiples of its 4-step unrolling, with rows further apart than the depth, written
/// and added, with and without prefetches (of this panel and of what comes next), and over
/// a short last panel.
#[cfg(target_arch = "x86_64")]
#[test]
fn the_avx512_assembly_tile_is_its_compiled_loop_bit_for_bit() {
    use super::kernels::MicroKernel;
    use super::kernels::Panel;
    use super::kernels::avx512::Avx512;
    if !Kernel::Avx512.is_supported() {
        eprintln!("no AVX-512 on this CPU: the assembly tile cannot run here");
        return;
    }
    let (m, n) = (11, 32);
    for kc in [1, 3, 4, 5, 16, 37, 1029] {
        let lda = kc + 9;
        let a = values(m * lda, 7);
        let w = values(n * kc, 8);
        let panels = PackedMatrix::pack(n, kc, |r, out: &mut [f32]| {
            out.copy_from_slice(&w[r * kc..(r + 1) * kc])
        });
        let sliver = Sliver {
            data: &a[2 * lda..],
            lda,
        };
        let (first, second) = (&panels[..kc * NR], &panels[kc * NR..2 * kc * NR]);
        // The part of B prefetched ahead: none, or another weight's panels.
        let later = values(64 * kc, 10);
        for (cols, add, prefetch, ahead) in [
            (32, false, true, std::ptr::null()),
            (32, true, false, later.as_ptr().cast()),
            (21, true, true, later.as_ptr().cast()),
        ] {
            let start = values(m * n, 9);
            let (mut got, mut want) = (start.clone(), start);
            let tile = |c| Tile {
                c,
                row: 2,
                col: 0,
                rows: 8,
                cols,
                add,
                prefetch,
                ahead,
            };
            // SAFETY: the CPU has AVX-512 (checked); 8 rows of `kc` values `lda` apart from
            // row 2 of 11, two panels of `kc × 16`, the tile inside C.
            unsafe {
                Avx512::run(
                    kc,
                    sliver,
                    Panel::F32(first),
                    Some(Panel::F32(second)),
                    tile(Out::new(&mut got, m, n, n)),
                );
                kernel_m16n::<Lanes16, F32, 2, 8>(
                    kc,
                    sliver,
                    [first.as_ptr().cast(), second.as_ptr().cast()],
                    tile(Out::new(&mut want, m, n, n)),
                );
            }
            for (i, (x, y)) in got.iter().zip(&want).enumerate() {
                assert!(
                    x.to_bits() == y.to_bits(),
                    "kc {kc} cols {cols} add {add}: ({}, {}): {x:e} vs {y:e}",
                    i / n,
                    i % n
                );
            }
        }
    }
}

#[test]
fn half_precision_weights_are_widened_in_the_kernel() {
    let pool = Pool::new(vec![S(GemmScratch::new()), S(GemmScratch::new())]).unwrap();
    let (m, k, n) = (9, 70, 40);
    let a = values(m * k, 3);
    let w: Vec<f32> = values(n * k, 4)
        .iter()
        .map(|&v| bf16::from_f32(v).to_f32())
        .collect();
    let expected = reference(&a, &w, m, k, n);
    for (isa, dtype) in isas()
        .into_iter()
        .flat_map(|isa| [(isa, Dtype::Bf16), (isa, Dtype::F16)])
    {
        let packed = PackedMatrix::from_f32(&w, n, k, dtype);
        let c = packed_product(&pool, isa, &a, m, &packed);
        for (x, y) in c.iter().zip(&expected) {
            // bf16 values are exact in f16 only approximately (f16 has 10 mantissa bits).
            assert!((x - y).abs() < 2e-3, "{isa:?} {dtype:?}: {x} vs {y}");
        }
    }
}

/// `count` random blocks of `ty` with finite, modest f16 scales.
pub(crate) fn random_blocks(ty: QuantType, count: usize, seed: u64) -> Vec<u8> {
    let bytes = ty.block_bytes();
    let mut data: Vec<u8> = (0..count * bytes)
        .map(|i| (llada_core::testing::splitmix64(seed ^ i as u64) >> 56) as u8)
        .collect();
    let scale_offsets: &[usize] = match ty {
        QuantType::Q6_K => &[208],
        QuantType::Q4_1 | QuantType::Q5_1 | QuantType::Q4_K | QuantType::Q5_K => &[0, 2],
        _ => &[0],
    };
    for (b, block) in data.chunks_exact_mut(bytes).enumerate() {
        for (j, &at) in scale_offsets.iter().enumerate() {
            let v = 0.002 + 0.01 * ((b * 7 + j * 3) % 11) as f32 / 11.0;
            block[at..at + 2].copy_from_slice(&half::f16::from_f32(v).to_le_bytes());
        }
    }
    data
}

#[test]
fn quantized_weights_are_widened_inside_the_product_even_mixed_across_parts() {
    let pool = Pool::new(vec![S(GemmScratch::new()), S(GemmScratch::new())]).unwrap();
    let (m, k) = (13, 512);
    let a = values(m * k, 9);
    for types in [
        vec![QuantType::Q8_0],
        vec![QuantType::Q4_0],
        vec![QuantType::Q4_1, QuantType::Q5_0, QuantType::Q5_1],
        vec![QuantType::Q4_K, QuantType::Q6_K],
        vec![QuantType::Q5_K],
    ] {
        // Parts of 48, 16, ... rows, each in its own format: one segment per part.
        let mut segments = Vec::new();
        let mut dense = Vec::new();
        let mut n = 0;
        for (i, &ty) in types.iter().enumerate() {
            let rows = 16 * (3 - i.min(2));
            let blocks = random_blocks(ty, rows * k / ty.block_len(), 40 + i as u64);
            let row_bytes = ty.row_bytes(k);
            let mut row = vec![0.0f32; k];
            for r in 0..rows {
                crate::quant::dequantize_row(
                    ty,
                    &blocks[r * row_bytes..(r + 1) * row_bytes],
                    &mut row,
                );
                dense.extend_from_slice(&row);
            }
            let data = PackedMatrix::pack_quantized(rows, k, ty, |r, out| {
                out.copy_from_slice(&blocks[r * row_bytes..(r + 1) * row_bytes])
            });
            segments.push(Segment {
                panels: n / NR..(n + rows) / NR,
                data,
            });
            n += rows;
        }
        let packed = PackedMatrix { k, n, segments };
        let expected = reference(&a, &dense, m, k, n);
        for isa in isas() {
            let c = packed_product(&pool, isa, &a, m, &packed);
            let scale = expected.iter().fold(0.0f32, |s, v| s.max(v.abs()));
            for (x, y) in c.iter().zip(&expected) {
                assert!(
                    (x - y).abs() <= 1e-5 * scale.max(1.0),
                    "{isa:?} {types:?}: {x} vs {y}"
                );
            }
        }
    }
}

/// The blocks' widths never change a bit of a product (only their depth may): what lets a
/// CPU's table entry change widths without changing what a model computes. Products both
/// short and long (see [`Blocking::SHORT_ROWS`]).
#[test]
fn column_blocks_of_any_width_compute_the_same_bits() {
    let pool = Pool::new(vec![S(GemmScratch::new()), S(GemmScratch::new())]).unwrap();
    let (k, n) = (1100, 300);
    let w = values(n * k, 22);
    let packed = PackedMatrix::from_f32(&w, n, k, Dtype::F32);
    for kernel in Kernel::supported()
        .into_iter()
        .filter(|k| !k.rounds_to_bf16())
    {
        for (m, depth) in [(37, 512), (37, 1024), (150, 512), (150, 1024)] {
            let a = values(m * k, 21);
            let mut first: Option<(Blocking, Vec<f32>)> = None;
            for (short, columns) in [(16, 16), (64, 64), (64, 128), (128, 128), (256, 256)] {
                let blocking = Blocking::with_short_columns(short, columns, depth).unwrap();
                let isa = Isa::new(kernel).unwrap().with_blocking(blocking);
                let c = packed_product(&pool, isa, &a, m, &packed);
                match &first {
                    None => first = Some((blocking, c)),
                    Some((b0, c0)) => assert!(
                        c.iter().zip(c0).all(|(x, y)| x.to_bits() == y.to_bits()),
                        "{kernel}, {m} rows: {blocking} differs from {b0}"
                    ),
                }
            }
        }
    }
}

#[test]
fn passes_over_c_are_as_few_as_the_depth_allows_and_even() {
    for (k, most) in [1, 15, 16, 256, 1000, 1024, 1025, 2816, 4096, 12288, 100_000]
        .into_iter()
        .flat_map(|k| [(k, 1024), (k, 512), (k, 64)])
    {
        let depth = pass_depth(k, most);
        let passes = k.div_ceil(depth);
        assert!(depth <= most, "k {k}: depth {depth}");
        assert_eq!(
            passes,
            k.div_ceil(most),
            "k {k}: {passes} passes of {depth}"
        );
        // Every pass but the last is a multiple of 16 deep, and the last is not much shorter.
        assert!(
            depth == k || depth.is_multiple_of(16),
            "k {k}: depth {depth}"
        );
        assert!(
            k - (passes - 1) * depth + 16 * passes >= depth,
            "k {k}: uneven passes"
        );
    }
    assert_eq!(pass_depth(1024, 1024), 1024);
    assert_eq!(pass_depth(2816, 1024), 944);
    assert_eq!(pass_depth(2816, 512), 512 - 32);
}

/// `len` values `q / 16` (`q` in -16..=16, a few bits: products and their sums over any
/// depth used here are exact in f32, in any order), each moved by 2⁻¹² of itself towards zero:
/// bf16 rounding (and f16 rounding) brings them back to `q / 16`, truncation would not.
#[cfg(target_arch = "x86_64")]
fn sixteenths(len: usize, seed: u64) -> (Vec<f32>, Vec<f32>) {
    let exact: Vec<f32> = (0..len)
        .map(|i| ((llada_core::testing::splitmix64(seed ^ i as u64) % 33) as f32 - 16.0) / 16.0)
        .collect();
    let moved = exact.iter().map(|&x| x * (1.0 - 1.0 / 4096.0)).collect();
    (exact, moved)
}

/// The AMX kernel on every path into it, bit for bit: shapes that leave partial tiles in both
/// directions, several passes over the depth, accumulation into `C`, f32, bf16, f16 and
/// widened quantized weights, attention's panels, a strided `A`, one thread and many.
///
/// Bit for bit needs inputs whose sums are exact: `TDPBF16PS` does not add a 32-deep step's
/// products in any order written down (on an Intel Xeon VM with AMX, 45 to 182 of 256 sums
/// differed from each order tried, in the last bit). Random values are checked against the
/// f64 sum of the rounded operands instead, within f32's rounding over the depth.
#[cfg(target_arch = "x86_64")]
#[test]
fn the_amx_kernel_computes_the_bf16_rounded_product() {
    use kernels::amx::to_bf16;
    if !Kernel::Amx.is_supported() {
        eprintln!("this CPU (or OS) has no AMX: the AMX kernel cannot run here");
        return;
    }
    let isa = Isa::new(Kernel::Amx).unwrap();
    let pool = Pool::new((0..3).map(|_| S(GemmScratch::new())).collect()).unwrap();
    let widen = |x: f32| f32::from_bits(u32::from(to_bf16(x)) << 16);
    for &(m, k, n) in &[
        (1, 1, 1),
        (7, 300, 33),
        (100, 17, 5),
        (13, 513, 64),
        (32, 512, 32),
        (64, 1100, 160),
        (33, 40, 17),
        (200, 64, 130),
        (19, 2100, 48),
    ] {
        let (a_exact, a) = sixteenths(m * k, 11);
        let (w_exact, w) = sixteenths(n * k, 12);
        let (init, _) = sixteenths(m * n, 13);
        let product = reference(&a_exact, &w_exact, m, k, n);
        let with_init: Vec<f32> = product.iter().zip(&init).map(|(p, i)| p + i).collect();
        let check = |what: &str, got: &[f32], want: &[f32]| {
            for (i, (x, y)) in got.iter().zip(want).enumerate() {
                assert!(x == y, "{m}x{k}x{n} {what}: value {i}: {x:e} vs {y:e}");
            }
        };
        for dtype in [Dtype::F32, Dtype::Bf16, Dtype::F16] {
            let packed = PackedMatrix::from_f32(&w, n, k, dtype);
            for accumulate in [false, true] {
                let mut c = if accumulate {
                    init.clone()
                } else {
                    vec![f32::NAN; m * n]
                };
                let a_rows = MatRef::rows(&a, m, k, k);
                let out = Out::new(&mut c, m, n, n);
                gemm(&pool, isa, a_rows, Rhs::Packed(&packed), out, accumulate);
                let want = if accumulate { &with_init } else { &product };
                check(&format!("{dtype:?} accumulate {accumulate}"), &c, want);
            }
        }
        // Attention's panels, one thread, and A read through a transposed view.
        let bt = MatRef {
            data: &w,
            rows: k,
            cols: n,
            row_stride: 1,
            col_stride: k,
        };
        let mut panels = vec![f32::NAN; n.div_ceil(NR) * k * NR];
        pack_panels(&bt, &mut panels);
        let at: Vec<f32> = (0..k * m).map(|i| a[(i % m) * k + i / m]).collect();
        let a_view = MatRef {
            data: &at,
            rows: m,
            cols: k,
            row_stride: 1,
            col_stride: m,
        };
        let mut c = vec![f32::NAN; m * n];
        let mut scratch = GemmScratch::new();
        let rhs = Rhs::Panels {
            data: &panels,
            k,
            n,
        };
        gemm_serial(
            isa,
            a_view,
            rhs,
            Out::new(&mut c, m, n, n),
            false,
            &mut scratch,
        );
        check("panels, strided A", &c, &product);

        // Random values: the f64 sum of the rounded operands, within f32 rounding.
        let a = values(m * k, 14);
        let w = values(n * k, 15);
        let packed = PackedMatrix::from_f32(&w, n, k, Dtype::F32);
        let c = packed_product(&pool, isa, &a, m, &packed);
        for i in 0..m {
            for j in 0..n {
                let (mut sum, mut size) = (0.0f64, 0.0f64);
                for kk in 0..k {
                    let p = f64::from(widen(a[i * k + kk])) * f64::from(widen(w[j * k + kk]));
                    sum += p;
                    size += p.abs();
                }
                let err = (f64::from(c[i * n + j]) - sum).abs();
                assert!(
                    err <= size * 4.0 * f64::from(f32::EPSILON),
                    "{m}x{k}x{n} random ({i}, {j}): {} vs {sum:e}",
                    c[i * n + j]
                );
            }
        }
    }
    // Quantized weights the integer kernels do not take (none runs here): widened to f32,
    // then rounded like any other.
    let (m, k, n) = (40, 512, 48);
    let (a_exact, a) = sixteenths(m * k, 14);
    let ty = QuantType::Q5_K;
    let blocks = random_blocks(ty, n * k / ty.block_len(), 15);
    let row_bytes = ty.row_bytes(k);
    let mut dense = vec![0.0f32; n * k];
    for (r, row) in dense.chunks_exact_mut(k).enumerate() {
        crate::quant::dequantize_row(ty, &blocks[r * row_bytes..(r + 1) * row_bytes], row);
    }
    let rounded: Vec<f32> = dense.iter().map(|&x| widen(x)).collect();
    let data = PackedMatrix::pack_quantized(n, k, ty, |r, out| {
        out.copy_from_slice(&blocks[r * row_bytes..(r + 1) * row_bytes])
    });
    let packed = PackedMatrix::single(k, n, data);
    let c = packed_product(&pool, isa, &a, m, &packed);
    let want = reference(&a_exact, &rounded, m, k, n);
    let scale = want.iter().fold(0.0f32, |s, v| s.max(v.abs()));
    for (x, y) in c.iter().zip(&want) {
        assert!((x - y).abs() <= 1e-5 * scale, "Q5_K: {x} vs {y}");
    }
}

#[cfg(target_arch = "x86_64")]
#[test]
fn bf16_rounding_is_to_nearest_even() {
    use kernels::amx::to_bf16;
    for x in values(10_000, 16)
        .into_iter()
        .chain([0.0, -0.0, 1.0, f32::INFINITY, 3.0e38])
    {
        assert_eq!(to_bf16(x), bf16::from_f32(x).to_bits(), "{x:e}");
    }
    // Ties go to the even neighbour.
    assert_eq!(to_bf16(f32::from_bits(0x3F80_8000)), 0x3F80);
    assert_eq!(to_bf16(f32::from_bits(0x3F81_8000)), 0x3F82);
}
