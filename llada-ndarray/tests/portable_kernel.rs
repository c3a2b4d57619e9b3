//! The portable matrix kernel (what runs on CPUs without AVX2) gives the fixture's golden
//! logits too. Its own test binary: the kernel is chosen once per process.

mod common;

#[test]
fn the_portable_kernel_matches_pytorch() {
    assert!(
        common::forced_kernel_matches_pytorch("portable", "portable"),
        "the portable kernel runs everywhere"
    );
}
