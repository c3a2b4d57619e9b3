//! End to end: `llada_core::generate` on the ndarray backend solves the fixture's held-out
//! tasks as well as the PyTorch reference does, token for token, with whichever kernel the
//! context picks (or `LLADA_KERNEL` names). `LLADA_EVAL_ITEMS` (`start..end` or `r%n`) runs
//! part of the set: the aarch64 tests under qemu share it between two emulated CPUs.

mod common;

use std::sync::Arc;

use llada_core::{GenerateParams, WorkspaceBuf};
use llada_ndarray::{Context, Kernel, Model};
use llada_test_support::{answer_of, eval_set, reference_outputs};

#[test]
fn eval_set_exact_match_and_token_for_token_agreement_with_pytorch() {
    let model = Arc::new(Model::load(llada_test_support::bundled_model()).unwrap());
    let mut context = Context::new(model.clone()).unwrap();
    assert_eq!(context.kernel(), expected_kernel());
    let config = model.config();
    let eval = eval_set();
    let reference = reference_outputs();
    let params = eval.params(GenerateParams::default().with_mask_id(config.mask_token_id.unwrap()));
    assert!(eval.items.len() >= 200);
    let items = common::eval_items(eval.items.len());
    eprintln!("{} items with the {} kernel", items.len(), context.kernel());
    let mut workspace = WorkspaceBuf::default();
    let mut correct = 0;
    let mut mismatches = Vec::new();
    for &i in &items {
        let item = &eval.items[i];
        let prompt_len = item.prompt_ids.len();
        let canvas =
            common::generate_canvas(&mut context, &params, &item.prompt_ids, &mut workspace);
        let generated = &canvas[prompt_len..];
        if answer_of(generated) == item.answer_ids.as_slice() {
            correct += 1;
        }
        if generated != reference[i].as_slice() {
            mismatches.push(format!(
                "item {i} ({:?}): rust {generated:?}, pytorch {:?}",
                item.prompt, reference[i]
            ));
        }
    }
    let accuracy = correct as f64 / items.len() as f64;
    eprintln!("exact match {correct}/{} = {accuracy:.3}", items.len());
    assert!(
        mismatches.is_empty(),
        "{} of {} differ from PyTorch:\n{}",
        mismatches.len(),
        items.len(),
        mismatches.join("\n")
    );
    assert!(
        accuracy >= 0.9,
        "exact match {accuracy:.3} below 0.9 (answer for item 0: {:?})",
        eval.items[0].answer
    );
}

/// The kernel a context picks: `LLADA_KERNEL`'s, else the fastest this CPU runs (on aarch64
/// that must be NEON: the aarch64 tests assert the NEON kernel ran, not the portable one).
fn expected_kernel() -> Kernel {
    let kernel = Kernel::from_env().unwrap().unwrap_or_else(Kernel::detect);
    if cfg!(target_arch = "aarch64") && std::env::var_os("LLADA_KERNEL").is_none() {
        assert_eq!(kernel, Kernel::Neon);
    }
    kernel
}
