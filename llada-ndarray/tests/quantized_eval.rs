//! Quantized files end to end with integer products: llama.cpp's Q8_0 file of the bundled
//! model and its Q4_K_M file of the second fixture model (Q4_K and Q6_K matrices) answer
//! their eval sets token for token as recorded on x86-64 (AVX-512 VNNI) in
//! `tests/fixtures/quantized_answers.json`. On x86 this pins the integer kernels' answers; on
//! aarch64 it shows that the NEON kernels (`sdot` under qemu's `max` CPU, the widening one
//! under its Cortex-A72) give the x86 answers. `LLADA_EVAL_ITEMS` (`start..end` or `r%n`)
//! runs part of each set, `LLADA_EVAL_MODELS=name,…` some of the models;
//! `LLADA_RECORD_ANSWERS=1` (x86 only, every item of both) rewrites the file instead.

mod common;

use std::sync::Arc;

use llada_core::{GenerateParams, WorkspaceBuf};
use llada_ndarray::{Context, Model};
use llada_test_support::{EvalSet, answer_of, fixture};
use serde_json::{Value, json};

/// (name in the answers file, GGUF file, its eval set).
const MODELS: [(&str, &str, &str); 2] = [
    (
        "tiny-llada-q8_0",
        "tiny-llada/gguf/tiny-llada-q8_0.gguf",
        "tiny-llada/eval.json",
    ),
    (
        "small-llada-q4_k_m",
        "small-llada/gguf/small-llada-q4_k_m.gguf",
        "small-llada/eval.json",
    ),
];

/// Items whose answer may differ from the x86 one because two logits tie to within float
/// rounding, by model: none so far on qemu's `max` and Cortex-A72 CPUs.
const FLOAT_TIES: [(&str, &[usize]); 0] = [];

#[test]
fn quantized_files_answer_the_eval_sets_as_on_x86() {
    let answers_path = fixture("quantized_answers.json");
    let record = std::env::var_os("LLADA_RECORD_ANSWERS").is_some();
    let recorded: Value = if record {
        if cfg!(not(target_arch = "x86_64")) {
            panic!("the answers are recorded on x86-64");
        }
        json!({})
    } else {
        let text = std::fs::read_to_string(&answers_path).expect("the recorded answers");
        serde_json::from_str(&text).expect("valid JSON")
    };
    let chosen = std::env::var("LLADA_EVAL_MODELS").ok().filter(|_| !record);
    let mut written = serde_json::Map::new();
    for (name, file, eval) in MODELS {
        if chosen
            .as_ref()
            .is_some_and(|list| !list.split(',').any(|n| n == name))
        {
            continue;
        }
        let model = Arc::new(Model::from_gguf(fixture(file)).unwrap());
        let mut context = Context::new(model.clone()).unwrap();
        let integer = context.integer_kernel();
        assert_eq!(integer, common::expected_integer_kernel(context.kernel()));
        if integer.is_none() {
            // `LLADA_KERNEL=portable`: widened products are another computation.
            eprintln!("the {} kernel has no integer products", context.kernel());
            return;
        }
        let eval = EvalSet::load(&fixture(eval)).unwrap();
        let mask = model.config().mask_token_id.unwrap();
        let params = eval.params(GenerateParams::default().with_mask_id(mask));
        let items = if record {
            (0..eval.items.len()).collect()
        } else {
            common::eval_items(eval.items.len())
        };
        eprintln!(
            "{name}: {} items, {} kernel, integer kernel {integer:?}",
            items.len(),
            context.kernel()
        );
        let ties = FLOAT_TIES
            .iter()
            .find(|(n, _)| *n == name)
            .map_or(&[][..], |(_, items)| items);
        let start = std::time::Instant::now();
        let mut workspace = WorkspaceBuf::default();
        let (mut correct, mut outputs, mut mismatches) = (0, Vec::new(), Vec::new());
        for &i in &items {
            let item = &eval.items[i];
            let canvas =
                common::generate_canvas(&mut context, &params, &item.prompt_ids, &mut workspace);
            let generated = &canvas[item.prompt_ids.len()..];
            correct += usize::from(answer_of(generated) == item.answer_ids.as_slice());
            if record {
                outputs.push(json!(generated));
                continue;
            }
            let expected: Vec<u32> = serde_json::from_value(recorded[name]["outputs"][i].clone())
                .unwrap_or_else(|e| panic!("{name}: no recorded output for item {i}: {e}"));
            if generated != expected.as_slice() && !ties.contains(&i) {
                mismatches.push(format!(
                    "item {i} ({:?}): here {generated:?}, x86 {expected:?}",
                    item.prompt
                ));
            }
        }
        eprintln!(
            "{name}: exact match {correct}/{} in {:.1} s",
            items.len(),
            start.elapsed().as_secs_f64()
        );
        assert!(
            mismatches.is_empty(),
            "{name}: {} of {} items differ from the x86 run:\n{}",
            mismatches.len(),
            items.len(),
            mismatches.join("\n")
        );
        if record {
            written.insert(
                name.to_string(),
                json!({
                    "file": file,
                    "kernel": context.kernel().name(),
                    "integer_kernel": integer,
                    "gen_length": eval.gen_length,
                    "block_length": eval.block_length,
                    "steps": eval.steps,
                    "exact_match": correct,
                    "outputs": outputs,
                }),
            );
        }
    }
    if record {
        let text = serde_json::to_string(&Value::Object(written)).unwrap();
        std::fs::write(&answers_path, text + "\n").unwrap();
        eprintln!("wrote {}", answers_path.display());
    }
}
