//! End to end: `llada_core::generate` on the ndarray backend solves the fixture's held-out
//! tasks as well as the PyTorch reference does, token for token, with whichever kernel the
//! context picks (or `LLADA_KERNEL` names). `LLADA_EVAL_ITEMS=start..end` runs part of the
//! set: the aarch64 tests under qemu split it between two emulated CPUs.

use std::sync::Arc;

use llada_core::{Canvas, GenerateParams, MaskPredictor, WorkspaceBuf, WorkspaceSizes, generate};
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
    let items = match std::env::var("LLADA_EVAL_ITEMS") {
        Ok(range) => {
            let (start, end) = range
                .split_once("..")
                .and_then(|(s, e)| Some((s.parse().ok()?, e.parse().ok()?)))
                .expect("LLADA_EVAL_ITEMS is start..end");
            start..usize::min(end, eval.items.len())
        }
        Err(_) => 0..eval.items.len(),
    };
    eprintln!("items {items:?} with the {} kernel", context.kernel());
    let mut workspace = WorkspaceBuf::default();
    let mut correct = 0;
    let mut mismatches = Vec::new();
    for (i, item) in eval
        .items
        .iter()
        .enumerate()
        .take(items.end)
        .skip(items.start)
    {
        let prompt_len = item.prompt_ids.len();
        let mut canvas = vec![0; prompt_len + params.gen_length];
        workspace.ensure(
            &WorkspaceSizes::for_generation(&params, 1, prompt_len, context.vocab_size()).unwrap(),
        );
        let c = Canvas::from_prompts(
            &mut canvas,
            &item.prompt_ids,
            1,
            params.gen_length,
            params.mask_id,
        )
        .unwrap();
        generate(&mut context, &params, c, workspace.as_workspace(), &mut ()).unwrap();
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
    let kernel = match std::env::var("LLADA_KERNEL") {
        Ok(name) if !name.is_empty() => name.parse().unwrap(),
        _ => Kernel::detect(),
    };
    if cfg!(target_arch = "aarch64") && std::env::var_os("LLADA_KERNEL").is_none() {
        assert_eq!(kernel, Kernel::Neon);
    }
    kernel
}
