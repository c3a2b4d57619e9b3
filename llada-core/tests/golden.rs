//! Conformance with LLaDA's reference `generate()`: every case of the golden file, produced by
//! the published sampler on the hash predictor, must come out token for token.

use llada_core::testing::HashPredictor;
use llada_core::{Canvas, GenerateParams, Remasking, WorkspaceBuf, WorkspaceSizes, generate};
use serde::Deserialize;

#[derive(Deserialize)]
struct Golden {
    spec: String,
    scale: f32,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    vocab: usize,
    mask_id: u32,
    seed: u64,
    prompt: Vec<Vec<u32>>,
    attention_mask: Option<Vec<Vec<u8>>>,
    steps: usize,
    gen_length: usize,
    block_length: usize,
    cfg_scale: f32,
    remasking: String,
    temperature: f32,
    logits_eos_inf: bool,
    confidence_eos_eot_inf: bool,
    expected: Vec<Vec<u32>>,
}

fn load() -> Golden {
    let text = include_str!("data/scheduler_golden.json");
    serde_json::from_str(text).expect("golden file parses")
}

/// Runs one case and returns the final canvas, row by row.
fn run(case: &Case, scale: f32) -> Vec<Vec<u32>> {
    let batch = case.prompt.len();
    let prompt_len = case.prompt[0].len();
    let seq = prompt_len + case.gen_length;
    let params = GenerateParams::default()
        .with_steps(case.steps)
        .with_gen_length(case.gen_length)
        .with_block_length(case.block_length)
        .with_temperature(case.temperature)
        .with_cfg_scale(case.cfg_scale)
        .with_remasking(
            case.remasking
                .parse::<Remasking>()
                .expect("known remasking"),
        )
        .with_mask_id(case.mask_id)
        .with_logits_eos_inf(case.logits_eos_inf)
        .with_confidence_eos_eot_inf(case.confidence_eos_eot_inf)
        .with_eos_id(126_081)
        .with_eot_id(126_348);
    let prompts: Vec<u32> = case.prompt.concat();
    let mut tokens = vec![0; batch * seq];
    Canvas::fill(&mut tokens, &prompts, batch, case.gen_length, case.mask_id).unwrap();
    let attention: Option<Vec<u8>> = case.attention_mask.as_ref().map(|rows| {
        rows.iter()
            .flat_map(|r| {
                r.iter()
                    .copied()
                    .chain(std::iter::repeat_n(1, case.gen_length))
            })
            .collect()
    });
    let mut predictor = HashPredictor {
        scale,
        ..HashPredictor::new(case.vocab, case.mask_id, case.seed)
    };
    let sizes = WorkspaceSizes::for_generation(&params, batch, prompt_len, case.vocab).unwrap();
    let mut workspace = WorkspaceBuf::new(&sizes);
    let mut canvas = Canvas::new(&mut tokens, batch, prompt_len);
    if let Some(mask) = &attention {
        canvas = canvas.with_attention_mask(mask);
    }
    generate(
        &mut predictor,
        &params,
        canvas,
        workspace.as_workspace(),
        &mut (),
    )
    .unwrap();
    tokens.chunks(seq).map(<[u32]>::to_vec).collect()
}

#[test]
fn every_golden_case_matches_the_reference_token_for_token() {
    let golden = load();
    assert_eq!(golden.spec, "hash-predictor-v1");
    assert_eq!(golden.cases.len(), 63);
    let mut failures = Vec::new();
    for (i, case) in golden.cases.iter().enumerate() {
        let got = run(case, golden.scale);
        if got != case.expected {
            failures.push(format!(
                "case {i} (steps {}, gen {}, block {}, cfg {}, batch {}): expected {:?}, got {:?}",
                case.steps,
                case.gen_length,
                case.block_length,
                case.cfg_scale,
                case.prompt.len(),
                case.expected,
                got
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of 63 cases differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn the_golden_suite_covers_what_it_claims() {
    let golden = load();
    let cases = &golden.cases;
    assert!(cases.iter().any(|c| c.cfg_scale > 0.0));
    assert!(cases.iter().any(|c| c.logits_eos_inf));
    assert!(cases.iter().any(|c| c.steps != c.gen_length));
    assert!(cases.iter().any(|c| c.gen_length / c.block_length > 1));
    assert!(cases.iter().any(|c| {
        c.attention_mask
            .as_ref()
            .is_some_and(|m| m.iter().flatten().any(|&x| x == 0))
    }));
    // Steps that do not divide a block's masked count evenly.
    assert!(
        cases
            .iter()
            .any(|c| c.block_length % (c.steps / (c.gen_length / c.block_length)) != 0)
    );
    assert!(cases.iter().any(|c| c.prompt.len() > 1));
}
