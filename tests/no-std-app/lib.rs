//! A `#![no_std]`, heap-free host of llada-core (see Cargo.toml).
#![no_std]

use core::panic::PanicInfo;

use llada_core::testing::HashPredictor;
use llada_core::{Canvas, GenerateParams, Workspace, WorkspaceSizes, generate};

#[panic_handler]
fn panic(_: &PanicInfo<'_>) -> ! {
    loop {}
}

/// Runs a whole generation on stack memory and returns the sum of the generated ids, or
/// `u32::MAX` on error.
#[unsafe(no_mangle)]
pub extern "C" fn llada_no_std_generate() -> u32 {
    let params = GenerateParams::default().with_steps(8).with_gen_length(8).with_block_length(4).with_mask_id(63);
    let mut canvas = [0u32; 3 + 8];
    let mut logits = [0f32; 4 * 64];
    let mut tokens = [0u32; 32];
    let mut flags = [0u8; 16];
    let mut scores = [0f64; 8];
    let fits = match WorkspaceSizes::for_generation(&params, 1, 3, 64) {
        Ok(s) => {
            s.logits <= logits.len()
                && s.tokens <= tokens.len()
                && s.flags <= flags.len()
                && s.scores <= scores.len()
        }
        Err(_) => false,
    };
    if !fits || Canvas::fill(&mut canvas, &[1, 2, 3], 1, 8, 63).is_err() {
        return u32::MAX;
    }
    let workspace = Workspace::new(&mut logits, &mut tokens, &mut flags, &mut scores);
    let mut predictor = HashPredictor::new(64, 63, 1);
    match generate(
        &mut predictor,
        &params,
        Canvas::new(&mut canvas, 1, 3),
        workspace,
        &mut (),
    ) {
        Ok(_) => canvas[3..].iter().sum(),
        Err(_) => u32::MAX,
    }
}
