//! The integer products: the interleaved layout keeps ggml's values, the vector kernels give
//! their reference's sums bit for bit, and both stay within the activations' rounding of the
//! f32 product.

use super::super::tests::{S, random_blocks, reference, values};
use super::*;
use crate::Kernel;
use crate::gemm::{GemmScratch, Isa, Out, PackedMatrix, gemm};
use crate::quant::{dequantize_block, dequantize_row};
use crate::threads::Pool;

#[test]
fn interleaved_blocks_widen_to_ggmls_values() {
    for ty in [
        QuantType::Q8_0,
        QuantType::Q4_0,
        QuantType::Q4_K,
        QuantType::Q6_K,
    ] {
        let (len, bytes) = (ty.block_len(), ty.block_bytes());
        let blocks = random_blocks(ty, NR * 3, 5);
        for group in blocks.chunks_exact(NR * bytes) {
            let mut expected = vec![0.0f32; len * NR];
            let mut one = vec![0.0f32; len];
            for c in 0..NR {
                dequantize_block(ty, &group[c * bytes..(c + 1) * bytes], &mut one);
                for (k, &v) in one.iter().enumerate() {
                    expected[k * NR + c] = v;
                }
            }
            let mut interleaved = vec![0u8; panel_block_bytes(ty)];
            interleave(ty, group, &mut interleaved);
            let mut widened = vec![0.0f32; len * NR];
            layout::widen(ty, &interleaved, &mut widened);
            assert!(widened == expected, "{ty:?}");
        }
    }
}

/// A `[n, k]` weight of `types` parts (48, 32, 16, ... rows), each in its own format, and its
/// dequantized rows.
fn weight(types: &[QuantType], k: usize, seed: u64) -> (PackedMatrix, Vec<f32>) {
    let mut segments = Vec::new();
    let mut dense = Vec::new();
    let mut n = 0;
    for (i, &ty) in types.iter().enumerate() {
        let rows = NR * (3 - i.min(2));
        let row_bytes = ty.row_bytes(k);
        let blocks = random_blocks(ty, rows * k / ty.block_len(), seed + i as u64);
        let mut row = vec![0.0f32; k];
        for r in 0..rows {
            dequantize_row(ty, &blocks[r * row_bytes..(r + 1) * row_bytes], &mut row);
            dense.extend_from_slice(&row);
        }
        let data = PackedMatrix::pack_quantized(rows, k, ty, |r, out| {
            out.copy_from_slice(&blocks[r * row_bytes..(r + 1) * row_bytes])
        });
        segments.push(crate::gemm::Segment {
            panels: n / NR..(n + rows) / NR,
            data,
        });
        n += rows;
    }
    (PackedMatrix { k, n, segments }, dense)
}

/// Every vector integer kernel this CPU runs: each kernel family's own, and the ones a family
/// falls back to (AVX2 where AVX-512 takes VNNI, plain NEON where NEON takes `sdot`).
fn vector_isas() -> Vec<Isa> {
    let mut isas: Vec<Isa> = Kernel::supported()
        .into_iter()
        .map(|k| Isa::new(k).unwrap().with_integer_products())
        .filter(|isa| isa.int8().is_some())
        .collect();
    #[cfg(target_arch = "x86_64")]
    let fallback = (Kernel::Avx2, IntKernel::Avx2);
    #[cfg(target_arch = "aarch64")]
    let fallback = (Kernel::Neon, IntKernel::Neon);
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    if fallback.0.is_supported() {
        let isa = Isa::new(fallback.0).unwrap().with_int8_kernel(fallback.1);
        if !isas.contains(&isa) {
            isas.push(isa);
        }
    }
    // On aarch64 both NEON paths run here: `sdot` where the CPU has dotprod (qemu's `max`),
    // the widening one everywhere (qemu's Cortex-A72 has nothing else).
    #[cfg(target_arch = "aarch64")]
    {
        let has = |k| isas.iter().any(|isa| isa.int8() == Some(k));
        let dotprod = std::arch::is_aarch64_feature_detected!("dotprod");
        assert!(
            has(IntKernel::Neon) && has(IntKernel::NeonDot) == dotprod,
            "{isas:?}"
        );
    }
    isas
}

fn product(isa: Isa, pool: &Pool<S>, a: &[f32], w: &PackedMatrix, m: usize, c0: f32) -> Vec<f32> {
    let mut c = vec![c0; m * w.n];
    gemm(
        pool,
        isa,
        MatRef::rows(a, m, w.k, w.k),
        Rhs::Packed(w),
        Out::new(&mut c, m, w.n, w.n),
        c0 != 0.0,
    );
    c
}

#[test]
fn integer_products_are_their_reference_bit_for_bit_and_within_the_rounding_of_f32() {
    let pool = Pool::new(vec![S(GemmScratch::new()), S(GemmScratch::new())]).unwrap();
    let reference_isa = Isa::new(Kernel::Portable)
        .unwrap()
        .with_int8_kernel(IntKernel::Reference);
    let vector_isas = vector_isas();
    eprintln!("vector integer kernels on this CPU: {vector_isas:?}");
    for types in [
        vec![QuantType::Q8_0],
        vec![QuantType::Q4_0],
        vec![QuantType::Q4_K],
        vec![QuantType::Q6_K],
        // Parts in several formats, as in a GGUF file's stacked q, k and v, one of them
        // without an integer kernel (widened).
        vec![QuantType::Q4_0, QuantType::Q8_0, QuantType::Q6_K],
        vec![QuantType::Q5_0, QuantType::Q4_K, QuantType::Q6_K],
    ] {
        let k = if types.iter().any(|t| t.block_len() == 256) {
            512
        } else {
            320
        };
        let (w, dense) = weight(&types, k, 70);
        for m in [1, 5, 6, 13, 40, 70] {
            let a = values(m * k, m as u64);
            for c0 in [0.0, 0.25] {
                let ours = product(reference_isa, &pool, &a, &w, m, c0);
                for &isa in &vector_isas {
                    let theirs = product(isa, &pool, &a, &w, m, c0);
                    for (j, segment) in w.segments.iter().enumerate() {
                        let integer = matches!(segment.data, PanelData::Quant { ty, .. } if is_interleaved(ty));
                        for col in segment.panels.start * NR..segment.panels.end * NR {
                            for i in 0..m {
                                let (x, y) = (ours[i * w.n + col], theirs[i * w.n + col]);
                                if integer {
                                    assert!(x == y, "{isa:?} {types:?} part {j} m {m}: {x} vs {y}");
                                } else {
                                    // Widened: in f32, or in bf16 by the AMX kernel.
                                    let tol = if isa.kernel().rounds_to_bf16() {
                                        1e-2
                                    } else {
                                        1e-5
                                    };
                                    assert!(
                                        (x - y).abs() <= tol * x.abs().max(1.0),
                                        "{isa:?}: {x} vs {y}"
                                    );
                                }
                            }
                        }
                    }
                }
                // Against the f32 product of the dequantized weights: each block's
                // activations are off by at most half their scale, max |a| / 127 / 2.
                let exact = reference(&a, &dense, m, k, w.n);
                for i in 0..m {
                    for j in 0..w.n {
                        let bound: f32 = (0..k / QK)
                            .map(|b| {
                                let row = &a[i * k + b * QK..][..QK];
                                let half_step =
                                    row.iter().fold(0.0f32, |x, v| x.max(v.abs())) / 127.0 / 2.0;
                                let w_abs: f32 =
                                    dense[j * k + b * QK..][..QK].iter().map(|v| v.abs()).sum();
                                half_step * w_abs
                            })
                            .sum::<f32>()
                            * 1.001
                            + 1e-5;
                        let got = ours[i * w.n + j] - c0;
                        let want = exact[i * w.n + j];
                        assert!(
                            (got - want).abs() <= bound,
                            "{types:?} m {m} ({i}, {j}): {got} vs {want}, bound {bound}"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn a_nan_or_infinite_activation_makes_its_row_nan_as_in_f32() {
    let pool = Pool::new(vec![S(GemmScratch::new())]).unwrap();
    let mut isas = vec![
        Isa::new(Kernel::Portable)
            .unwrap()
            .with_int8_kernel(IntKernel::Reference),
    ];
    isas.extend(vector_isas());
    for ty in [
        QuantType::Q8_0,
        QuantType::Q4_0,
        QuantType::Q4_K,
        QuantType::Q6_K,
    ] {
        let (w, _) = weight(&[ty], 256, 3);
        let (m, k) = (3, 256);
        for bad in [f32::NAN, f32::INFINITY] {
            let mut a = values(m * k, 8);
            a[k + 40] = bad;
            for &isa in &isas {
                let c = product(isa, &pool, &a, &w, m, 0.0);
                assert!(
                    c[..w.n].iter().all(|v| v.is_finite()),
                    "{isa:?} {ty:?}: row 0"
                );
                assert!(
                    c[w.n..2 * w.n].iter().all(|v| v.is_nan()),
                    "{isa:?} {ty:?} {bad}: row 1"
                );
                assert!(
                    c[2 * w.n..].iter().all(|v| v.is_finite()),
                    "{isa:?} {ty:?}: row 2"
                );
            }
        }
    }
}
