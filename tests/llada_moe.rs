//! LLaDA-MoE through the whole library, on the bundled LLaDA-MoE-shaped model
//! (tests/fixtures/tiny-llada-moe: a mixture of experts with per-head query/key norms, the
//! Ling chat template, trained on the bundled tasks): its directory's defaults answer the
//! held-out prompts; llama.cpp's answers on the GGUF files its converter made; Fast-dLLM's
//! rules and caches; a GGUF file alone; ONNX Runtime on an export that computes every expert;
//! the `generate` example.

mod common;

use common::{agreement_with_llama_cpp, generate, score};
use llada::core::{CacheMode, CommitRule, Remasking};
use llada::{BackendChoice, Model, OrtOptions, Pipeline};
use llada_test_support::{
    EvalSet, example_binary as example, fixture, golden_cases_in, llada_moe_model, ort_library,
};

fn eval() -> EvalSet {
    EvalSet::load(&llada_moe_model().join("eval.json")).unwrap()
}

fn ndarray() -> Pipeline {
    Pipeline::open(llada_moe_model(), &BackendChoice::Ndarray).unwrap()
}

/// The directory brings everything: the family, the Ling template (and its `<|role_end|>` as
/// end of turn), the mask id from `config.json`, the lengths of `generation_config.json`; the
/// reference schedule answers the held-out prompts as the fixture's README says (97.2%).
#[test]
fn a_llada_moe_directory_answers_the_held_out_prompts_with_its_defaults() {
    let mut pipeline = ndarray();
    let model = pipeline.model().clone();
    assert_eq!(model.files().family(), "llada-moe");
    assert!(!model.files().shifted_logits());
    let special = model.special_tokens();
    assert_eq!(special.mask, 618);
    assert_eq!(
        model.tokenizer().token_to_id("<|role_end|>"),
        Some(special.eot)
    );
    let eval = eval();
    let item = &eval.items[0];
    assert_eq!(
        model.chat_prompt_ids(&item.prompt).unwrap(),
        item.prompt_ids
    );
    let params = pipeline.default_params();
    assert_eq!(
        (params.gen_length, params.steps, params.block_length),
        (16, 16, 16)
    );
    let (exact, passes) = score(&mut pipeline, &params, &eval);
    let n = eval.items.len();
    eprintln!("LLaDA-MoE defaults: exact match {exact}/{n}, {passes:.2} passes per answer");
    assert!(exact * 100 >= 95 * n, "exact match {exact}/{n}");
}

/// Fast-dLLM's threshold rule with and without the block-wise caches, the factor rule and
/// stopping at end of text run on the mixture, take fewer passes, and the cached runs keep
/// the uncached answers' accuracy.
#[test]
fn fast_dllm_rules_and_caches_run_on_llada_moe() {
    let mut pipeline = ndarray();
    let eval = eval();
    let base = pipeline
        .default_params()
        .with_commit(CommitRule::Schedule)
        .with_remasking(Remasking::LowConfidence)
        .with_gen_length(16)
        .with_steps(16)
        .with_block_length(8);
    let (reference, reference_passes) = score(&mut pipeline, &base, &eval);
    eprintln!("schedule, blocks of 8: exact {reference}, {reference_passes:.2} passes");
    let threshold = base.with_commit(CommitRule::Threshold(0.9));
    let (uncached, uncached_passes) = score(&mut pipeline, &threshold, &eval);
    eprintln!("threshold 0.9: exact {uncached}, {uncached_passes:.2} passes");
    assert!(uncached_passes < reference_passes);
    for (name, params) in [
        (
            "threshold 0.9 + prefix cache",
            threshold.with_cache(CacheMode::Prefix),
        ),
        (
            "threshold 0.9 + dual cache",
            threshold.with_cache(CacheMode::Dual),
        ),
        ("factor 1.0", base.with_commit(CommitRule::Factor(1.0))),
        ("schedule + stop at EOS", base.with_stop_at_eos(true)),
    ] {
        let (exact, passes) = score(&mut pipeline, &params, &eval);
        eprintln!("{name}: exact {exact}, {passes:.2} passes per answer");
        assert!(passes <= reference_passes, "{name}: {passes} passes");
        assert!(
            exact + eval.items.len() / 50 >= uncached.min(reference),
            "{name}: exact {exact} vs {uncached} without a cache"
        );
    }
}

/// Q8_0: both engines quantize the activations to 8-bit blocks and sum the blocks' products
/// in integers, but add the blocks up in another order, so a near-tie may go the other way.
#[test]
fn answers_match_llama_diffusion_cli_on_its_q8_0_llada_moe_file() {
    let same = agreement_with_llama_cpp("tiny-llada-moe", "q8_0", &eval());
    assert!(same * 100 >= 97 * eval().items.len(), "{same}");
}

/// Q4_K_M (llama-quantize's fallbacks for rows that are not whole super-blocks: Q5_0, Q5_1,
/// Q8_0): the same, and those formats are widened to f32 here where llama.cpp multiplies them
/// in integers.
#[test]
fn answers_match_llama_diffusion_cli_on_its_q4_k_m_llada_moe_file() {
    let same = agreement_with_llama_cpp("tiny-llada-moe", "q4_k_m", &eval());
    assert!(same * 100 >= 97 * eval().items.len(), "{same}");
}

/// A `llada-moe` file made by llama.cpp's converter is the directory's model: family, ids,
/// template (its mask id rewritten from the converter's hard-coded 156895 to the fixture's).
#[test]
fn a_llada_moe_gguf_file_alone_is_the_directorys_model() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tiny-llada-moe-q8_0.gguf");
    std::fs::copy(
        fixture("tiny-llada-moe/gguf/tiny-llada-moe-q8_0.gguf"),
        &file,
    )
    .unwrap();
    let model = Model::load(&file, &BackendChoice::Ndarray).unwrap();
    let directory = Model::load(llada_moe_model(), &BackendChoice::Ndarray).unwrap();
    assert_eq!(model.files().family(), "llada-moe");
    assert!(!model.files().shifted_logits());
    assert_eq!(model.special_tokens(), directory.special_tokens());
    assert_eq!(
        model.chat_template().map(|t| t.source()),
        directory.chat_template().map(|t| t.source())
    );
    let item = &eval().items[3];
    assert_eq!(
        model.chat_prompt_ids(&item.prompt).unwrap(),
        item.prompt_ids
    );
}

/// The GGUF writer on the directory: a `llada-moe` file with the tokenizer named as
/// llama.cpp's `bailingmoe` (Ling's tokenizer.json writes its regex with possessive
/// quantifiers) that is the directory's model (`llama-diffusion-cli` answers
/// "rock,frog,pen" on its Q4_K_M file too: checked by hand, it is not installed here).
#[test]
fn a_written_llada_moe_file_is_the_directorys_model() {
    use llada::ModelFiles;
    use llada::ndarray::gguf::{FileType, GgufFile};
    let files = ModelFiles::open(llada_moe_model(), &BackendChoice::Ndarray).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ours-q8_0.gguf");
    files.write_gguf(&out, FileType::Q8_0).unwrap();
    let gguf = GgufFile::open(&out).unwrap();
    assert_eq!(
        gguf.get("general.architecture").and_then(|v| v.as_str()),
        Some("llada-moe")
    );
    assert_eq!(
        gguf.get("tokenizer.ggml.pre").and_then(|v| v.as_str()),
        Some("bailingmoe")
    );
    assert_eq!(
        gguf.tensor("blk.1.ffn_up_exps.weight")
            .map(|t| t.dims.clone()),
        Some(vec![128, 32, 8])
    );
    let model = Model::load(&out, &BackendChoice::Ndarray).unwrap();
    let directory = Model::load(llada_moe_model(), &BackendChoice::Ndarray).unwrap();
    assert_eq!(model.special_tokens(), directory.special_tokens());
    let mut written = Pipeline::with_threads(model, Some(2)).unwrap();
    let mut pipeline = Pipeline::with_threads(directory, Some(2)).unwrap();
    let params = pipeline.default_params();
    assert_eq!(written.default_params().gen_length, params.gen_length);
    let eval = eval();
    let items: Vec<_> = eval.items.iter().step_by(10).collect();
    let mut same = 0;
    for item in &items {
        let (a, _) = generate(&mut written, &item.prompt_ids, &params);
        let (b, _) = generate(&mut pipeline, &item.prompt_ids, &params);
        same += usize::from(a == b);
    }
    assert!(same + 1 >= items.len(), "{same}/{}", items.len());
}

/// Quantizing the checkpoint while loading quantizes the experts (the router stays as the
/// file has it) and still answers the held-out prompts.
#[test]
fn a_llada_moe_checkpoint_quantized_at_load_answers_too() {
    let options =
        llada::LoadOptions::default().with_quantize(Some(llada::ndarray::Quantization::Q8_0));
    let model = Model::load_with(llada_moe_model(), &BackendChoice::Ndarray, &options).unwrap();
    let mut pipeline = Pipeline::with_threads(model, Some(2)).unwrap();
    let params = pipeline.default_params();
    let eval = eval();
    let (exact, _) = score(&mut pipeline, &params, &eval);
    eprintln!("Q8_0 at load: exact {exact}/{}", eval.items.len());
    assert!(exact * 100 >= 93 * eval.items.len(), "{exact}");
}

fn ort() -> Pipeline {
    let choice = BackendChoice::Ort(OrtOptions::default().with_library(Some(ort_library())));
    Pipeline::open(llada_moe_model(), &choice).unwrap()
}

/// ONNX Runtime's logits of the export (every expert computed, the unchosen ones weighted by
/// zero: llada-ort/export/export_onnx.py) are transformers' within 1e-4.
#[test]
fn onnx_runtime_gives_transformers_logits_for_llada_moe() {
    use llada::core::{ForwardRequest, MaskPredictor};
    let mut predictor = llada::ort::OrtPredictor::builder(llada_moe_model().join("model.onnx"))
        .library(ort_library())
        .build()
        .unwrap();
    assert!(!predictor.shifted_logits());
    let cases = golden_cases_in(&llada_moe_model().join("golden_logits.safetensors"), "");
    assert_eq!(cases.len(), 3);
    for case in &cases {
        let request = ForwardRequest::new(&case.ids, case.batch, case.seq)
            .unwrap()
            .with_attention_mask(&case.mask)
            .unwrap();
        let mut got = vec![0.0; request.logits_len(predictor.vocab_size())];
        predictor.forward(&request, &mut got).unwrap();
        let diff = got
            .iter()
            .zip(&case.logits)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        eprintln!("ORT {}: max |diff| {diff:e}", case.name);
        assert!(diff < 1e-4, "{}: {diff}", case.name);
    }
}

/// The ONNX export answers as the ndarray backend does.
#[test]
fn onnx_runtime_runs_llada_moe_with_the_same_answers() {
    let mut onnx = ort();
    let mut rust = ndarray();
    assert_eq!(onnx.backend_name(), "ort");
    let params = rust.default_params();
    let eval = eval();
    let items: Vec<_> = eval.items.iter().step_by(10).collect();
    let mut same = 0;
    for item in &items {
        let (a, _) = generate(&mut onnx, &item.prompt_ids, &params);
        let (b, _) = generate(&mut rust, &item.prompt_ids, &params);
        same += usize::from(a == b);
    }
    eprintln!("ORT vs ndarray: {same}/{} the same", items.len());
    assert!(same + 1 >= items.len(), "{same}/{}", items.len());
}

/// `generate` on the directory with nothing but the prompt answers it (its
/// `generation_config.json` gives the lengths), and on llama.cpp's Q4_K_M file alone too with
/// the answer's length given (llama.cpp writes none).
#[test]
fn the_generate_example_runs_llada_moe() {
    let run = |model: &std::path::Path, extra: &[&str]| {
        let output = std::process::Command::new(example("generate"))
            .env_remove("RUST_LOG")
            .arg("--model")
            .arg(model)
            .args(extra)
            .args(["--prompt", "reverse:pen,frog,rock"])
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap().trim().to_string()
    };
    assert_eq!(run(&llada_moe_model(), &[]), "rock,frog,pen");
    // llama.cpp's file declares no lengths (LLaDA's chat defaults, blocks of 32):
    // `--gen-length 16` alone makes the answer one block of 16 tokens in 16 steps.
    let lengths = ["--gen-length", "16"];
    assert_eq!(
        run(
            &fixture("tiny-llada-moe/gguf/tiny-llada-moe-q4_k_m.gguf"),
            &lengths
        ),
        "rock,frog,pen"
    );
}
