//! End to end: `llada_core::generate` on the ndarray backend solves the fixture's held-out
//! tasks as well as the PyTorch reference does, token for token.

use std::sync::Arc;

use llada_core::{Canvas, GenerateParams, MaskPredictor, WorkspaceBuf, WorkspaceSizes, generate};
use llada_ndarray::{Context, Model};
use llada_test_support::{answer_of, eval_set, reference_outputs};

#[test]
fn eval_set_exact_match_and_token_for_token_agreement_with_pytorch() {
    let model = Arc::new(Model::load(llada_test_support::bundled_model()).unwrap());
    let mut context = Context::new(model.clone()).unwrap();
    let config = model.config();
    let eval = eval_set();
    let reference = reference_outputs();
    let params = eval.params(GenerateParams::default().with_mask_id(config.mask_token_id.unwrap()));
    assert!(eval.items.len() >= 200);
    let mut workspace = WorkspaceBuf::default();
    let mut correct = 0;
    let mut mismatches = Vec::new();
    for (i, item) in eval.items.iter().enumerate() {
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
        if i < 50 && generated != reference[i].as_slice() {
            mismatches.push(format!(
                "item {i} ({:?}): rust {generated:?}, pytorch {:?}",
                item.prompt, reference[i]
            ));
        }
    }
    let accuracy = correct as f64 / eval.items.len() as f64;
    eprintln!("exact match {correct}/{} = {accuracy:.3}", eval.items.len());
    assert!(
        mismatches.is_empty(),
        "{} of the first 50 differ from PyTorch:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
    assert!(
        accuracy >= 0.9,
        "exact match {accuracy:.3} below 0.9 (answer for item 0: {:?})",
        eval.items[0].answer
    );
}
