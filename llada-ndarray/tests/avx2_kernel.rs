//! The AVX2 + FMA kernel (tiles of 1 to 6 rows) gives the fixture's golden logits when it is
//! forced on a CPU that would pick the AVX-512 one, so machines with AVX-512 test it too. Its
//! own test binary: the kernel is chosen once per process.

mod common;

#[test]
fn the_avx2_kernel_matches_pytorch() {
    if !common::forced_kernel_matches_pytorch("avx2", "avx2+fma") {
        eprintln!("this CPU has no AVX2 + FMA: the kernel cannot run here");
    }
}
