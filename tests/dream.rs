//! Dream through the whole library, on the bundled Dream-shaped model (tests/fixtures/tiny-dream):
//! its own decoding against a PyTorch transcription of Dream's `_sample`, token for token for
//! each of its four algorithms; llama.cpp's answers on the GGUF files its converter made; the
//! other decoding rules on a model with shifted logits; ONNX Runtime; and the files' defaults.

mod common;

use std::ops::ControlFlow;
use std::path::PathBuf;

use common::{agreement_with_llama_cpp, generate, score};
use llada::core::rand_core::{Rng, SeedableRng};
use llada::core::{CacheMode, CommitRule, GenerateParams, Remasking, SamplerRng};
use llada::{BackendChoice, Model, OrtOptions, Pipeline};
use llada_test_support::{
    EvalSet, dream_model, example_binary as example, fixture, golden_cases_in, ort_library,
};

fn eval() -> EvalSet {
    EvalSet::load(&dream_model().join("eval.json")).unwrap()
}

fn ndarray() -> Pipeline {
    Pipeline::open(dream_model(), &BackendChoice::Ndarray).unwrap()
}

#[derive(serde::Deserialize)]
struct Outputs {
    outputs: Vec<Vec<u32>>,
}

#[derive(serde::Deserialize)]
struct Run {
    alg: String,
    steps: usize,
    f32: Outputs,
    f64: Outputs,
}

#[derive(serde::Deserialize)]
struct Reference {
    gen_length: usize,
    eps: f64,
    seed: u64,
    rng_check: Vec<u64>,
    configs: Vec<Run>,
}

fn reference() -> Reference {
    let text = std::fs::read_to_string(dream_model().join("dream_reference.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Dream's rule with `alg` (its name) over `steps`, as `diffusion_generate` runs it: one
/// block, temperature 0, no filters.
fn dream_params(base: GenerateParams, alg: &str, steps: usize, r: &Reference) -> GenerateParams {
    base.with_gen_length(r.gen_length)
        .with_block_length(r.gen_length)
        .with_steps(steps)
        .with_commit(CommitRule::Timesteps(r.eps))
        .with_remasking(alg.parse::<Remasking>().unwrap())
        .with_temperature(0.0)
        .with_top_p(1.0)
        .with_top_k(0)
        .with_alg_temp(0.0)
        .with_seed(r.seed)
}

/// tests/fixtures/dream_reference.py transcribes Dream's `DreamGenerationMixin._sample` and
/// runs it in PyTorch on this model for every eval prompt, each algorithm and two step counts
/// (16 and 5 over 16 tokens), in float32 and float64; `origin` draws its coins from this
/// library's generator (checked here). Ours gives the same tokens; a float32 near-tie that
/// decides differently is settled by the float64 run, and such items are listed.
#[test]
fn dreams_four_algorithms_equal_a_transcription_of_dreams_sampler() {
    let r = reference();
    let mut rng = SamplerRng::seed_from_u64(0);
    let ours: Vec<u64> = (0..r.rng_check.len()).map(|_| rng.next_u64()).collect();
    assert_eq!(ours, r.rng_check, "the transcription's generator is ours");
    let mut pipeline = ndarray();
    let eval = eval();
    let mut algorithms: Vec<&str> = r.configs.iter().map(|c| c.alg.as_str()).collect();
    algorithms.sort_unstable();
    algorithms.dedup();
    assert_eq!(
        algorithms,
        ["entropy", "maskgit_plus", "origin", "topk_margin"]
    );
    let mut near_ties = Vec::new();
    for run in &r.configs {
        let params = dream_params(pipeline.default_params(), &run.alg, run.steps, &r);
        assert_eq!(run.f32.outputs.len(), eval.items.len());
        for (i, item) in eval.items.iter().enumerate() {
            let (out, _) = generate(&mut pipeline, &item.prompt_ids, &params);
            if out != run.f32.outputs[i] {
                assert_eq!(
                    out, run.f64.outputs[i],
                    "{} steps {}, item {i} {:?}: differs from the transcription in float32 and float64",
                    run.alg, run.steps, item.prompt
                );
                near_ties.push(format!("{} steps {} item {i}", run.alg, run.steps));
            }
        }
    }
    eprintln!(
        "float32 near-ties settled by the float64 transcription: {}",
        if near_ties.is_empty() {
            "none".to_string()
        } else {
            near_ties.join("; ")
        }
    );
}

/// The model's files, read as Dream's: its generation_config.json's `alg`, `steps`, `eps` and
/// `max_new_tokens`, ChatML, `<|mask|>` and `<|im_end|>`.
#[test]
fn a_dream_directory_brings_dreams_own_defaults() {
    let model = Model::load(dream_model(), &BackendChoice::Ndarray).unwrap();
    let files = model.files();
    assert_eq!(files.family(), "dream");
    assert!(files.shifted_logits());
    let generation: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dream_model().join("generation_config.json")).unwrap(),
    )
    .unwrap();
    let params = model.default_params();
    assert_eq!(
        params.commit,
        CommitRule::Timesteps(generation["eps"].as_f64().unwrap())
    );
    assert_eq!(
        params.remasking,
        generation["alg"].as_str().unwrap().parse().unwrap()
    );
    assert_eq!(params.steps as u64, generation["steps"].as_u64().unwrap());
    assert_eq!(
        params.gen_length as u64,
        generation["max_new_tokens"].as_u64().unwrap()
    );
    assert_eq!(
        params.block_length, params.gen_length,
        "one block, as Dream"
    );
    let tokenizer = model.tokenizer();
    let special = model.special_tokens();
    assert_eq!(Some(special.mask), tokenizer.token_to_id("<|mask|>"));
    assert_eq!(Some(special.eot), tokenizer.token_to_id("<|im_end|>"));
    assert_eq!(Some(special.eos), tokenizer.token_to_id("<|endoftext|>"));
    for item in &eval().items {
        assert_eq!(
            model.chat_prompt_ids(&item.prompt).unwrap(),
            item.prompt_ids
        );
    }
}

/// Dream's defaults answer the eval set as the transcription does with the same algorithm.
#[test]
fn dreams_defaults_answer_the_held_out_prompts() {
    let mut pipeline = ndarray();
    let params = pipeline.default_params();
    let eval = eval();
    let (mut exact, n) = (0usize, eval.items.len());
    for item in &eval.items {
        let out = pipeline
            .generate_ids(std::slice::from_ref(&item.prompt_ids), &params, |_| {
                ControlFlow::Continue(())
            })
            .unwrap()
            .remove(0);
        exact += usize::from(out.answer_ids == item.answer_ids);
    }
    eprintln!("Dream defaults: exact match {exact}/{n}");
    assert!(exact * 2 > n, "exact match {exact}/{n}");
}

/// LLaDA's rules on a model with shifted logits: the reference schedule over blocks,
/// Fast-dLLM's threshold with and without the block-wise caches, the factor rule, the
/// entropy-bounded sampler and stopping at end of text all run, and the cached ones keep the
/// uncached answers' accuracy.
#[test]
fn llada_rules_and_caches_run_on_dream() {
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
    let (uncached, _) = score(&mut pipeline, &threshold, &eval);
    for (name, params) in [
        ("threshold 0.9", threshold),
        (
            "threshold 0.9 + prefix cache",
            threshold.with_cache(CacheMode::Prefix),
        ),
        (
            "threshold 0.9 + dual cache",
            threshold.with_cache(CacheMode::Dual),
        ),
        ("factor 1.0", base.with_commit(CommitRule::Factor(1.0))),
        (
            "entropy-bounded 0.1",
            base.with_commit(CommitRule::EntropyBounded(0.1)),
        ),
        ("schedule + stop at EOS", base.with_stop_at_eos(true)),
    ] {
        let (exact, passes) = score(&mut pipeline, &params, &eval);
        eprintln!("{name}: exact {exact}, {passes:.2} passes per answer");
        assert!(passes <= reference_passes, "{name}: {passes} passes");
        if params.cache != CacheMode::None {
            assert!(
                exact + eval.items.len() / 50 >= uncached,
                "{name}: exact {exact} vs {uncached} without a cache"
            );
        }
    }
}

/// Q8_0: both engines quantize the activations to 8-bit blocks and sum the blocks' products
/// in integers, but add the blocks up in another order, so a near-tie may go the other way.
#[test]
fn answers_match_llama_diffusion_cli_on_its_q8_0_dream_file() {
    let same = agreement_with_llama_cpp("tiny-dream", "q8_0", &eval());
    assert!(same * 100 >= 95 * eval().items.len(), "{same}");
}

/// Q4_K_M (with llama-quantize's fallbacks for rows that are not whole super-blocks): the
/// same, and formats without integer kernels here are widened to f32 where llama.cpp
/// multiplies them in integers.
#[test]
fn answers_match_llama_diffusion_cli_on_its_q4_k_m_dream_file() {
    let same = agreement_with_llama_cpp("tiny-dream", "q4_k_m", &eval());
    assert!(same * 100 >= 95 * eval().items.len(), "{same}");
}

/// A Dream GGUF file made by llama.cpp's converter carries everything Dream needs but its
/// decoding settings, which take Dream's own defaults (`origin`, eps 0.001, 512 steps) with its
/// ids and ChatML from the metadata.
#[test]
fn a_dream_gguf_file_alone_takes_dreams_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tiny-dream-q8_0.gguf");
    std::fs::copy(fixture("tiny-dream/gguf/tiny-dream-q8_0.gguf"), &file).unwrap();
    let model = Model::load(&file, &BackendChoice::Ndarray).unwrap();
    let directory = Model::load(dream_model(), &BackendChoice::Ndarray).unwrap();
    assert_eq!(model.files().family(), "dream");
    assert!(model.files().shifted_logits());
    assert_eq!(model.special_tokens(), directory.special_tokens());
    assert_eq!(
        model.chat_template().map(|t| t.source()),
        directory.chat_template().map(|t| t.source())
    );
    let params = model.default_params();
    assert_eq!(params.commit, CommitRule::Timesteps(1e-3));
    assert_eq!(params.remasking, Remasking::Origin);
    assert_eq!(
        (params.steps, params.gen_length, params.block_length),
        (512, 512, 512)
    );
}

fn ort() -> Pipeline {
    let choice = BackendChoice::Ort(OrtOptions::default().with_library(Some(ort_library())));
    Pipeline::open(dream_model(), &choice).unwrap()
}

/// The ONNX export of the Dream model (llada-ort/export/export_onnx.py, which declares the
/// shift in its metadata) answers as the ndarray backend does with Dream's rule.
#[test]
fn onnx_runtime_runs_dream_with_the_same_answers() {
    let r = reference();
    let mut onnx = ort();
    let mut rust = ndarray();
    assert_eq!(onnx.backend_name(), "ort");
    let eval = eval();
    for alg in ["entropy", "origin"] {
        let params = dream_params(rust.default_params(), alg, 16, &r);
        let mut same = 0;
        let items: Vec<_> = eval.items.iter().step_by(10).collect();
        for item in &items {
            let (a, _) = generate(&mut onnx, &item.prompt_ids, &params);
            let (b, _) = generate(&mut rust, &item.prompt_ids, &params);
            same += usize::from(a == b);
        }
        eprintln!("ORT vs ndarray, {alg}: {same}/{} the same", items.len());
        assert!(same + 1 >= items.len(), "{alg}: {same}/{}", items.len());
    }
}

/// ONNX Runtime's logits of the Dream export are transformers' within 1e-4.
#[test]
fn onnx_runtime_gives_transformers_logits_for_dream() {
    use llada::core::{ForwardRequest, MaskPredictor};
    let mut predictor = llada::ort::OrtPredictor::builder(dream_model().join("model.onnx"))
        .library(ort_library())
        .build()
        .unwrap();
    assert!(predictor.shifted_logits(), "the export declares the shift");
    let cases = golden_cases_in(&dream_model().join("golden_logits.safetensors"), "");
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

/// `generate --json` on the Dream directory with nothing but the prompt: Dream's own
/// defaults, and the ids it prints are the pipeline's.
#[test]
fn the_generate_example_runs_dream_with_its_defaults() {
    let item = &eval().items[0];
    let run = |model: &PathBuf, extra: &[&str]| {
        let output = std::process::Command::new(example("generate"))
            .env_remove("RUST_LOG")
            .arg("--model")
            .arg(model)
            .args(extra)
            .args(["--json", "--prompt", &item.prompt])
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        let prompt: Vec<u32> = serde_json::from_value(json["prompt_ids"].clone()).unwrap();
        let out: Vec<u32> = serde_json::from_value(json["output_ids"].clone()).unwrap();
        assert_eq!(prompt, item.prompt_ids);
        out
    };
    let mut pipeline = ndarray();
    let defaults = pipeline.default_params();
    let (expected, _) = generate(&mut pipeline, &item.prompt_ids, &defaults);
    assert_eq!(run(&dream_model(), &[]), expected);
    // The GGUF file alone: Dream's own defaults but for the length, which the tiny model's
    // 256 positions cannot hold at 512.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tiny-dream-q8_0.gguf");
    std::fs::copy(fixture("tiny-dream/gguf/tiny-dream-q8_0.gguf"), &file).unwrap();
    let out = run(&file, &["--gen-length", "16"]);
    assert_eq!(out.len(), 16);
}

/// The GGUF writer on a Dream directory: a `dream` file (no q/k interleaving, the biases, no
/// shift key, llama.cpp's tensor names) that is the directory's model; its Q4_K_M mix has the
/// tensor types and shapes llama-quantize gave llama.cpp's own conversion.
#[test]
fn a_written_dream_file_is_the_directorys_model() {
    use llada::ModelFiles;
    use llada::ndarray::gguf::{FileType, GgufFile};
    let files = ModelFiles::open(dream_model(), &BackendChoice::Ndarray).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let f32_path = dir.path().join("dream-f32.gguf");
    files.write_gguf(&f32_path, FileType::F32).unwrap();
    let file = GgufFile::open(&f32_path).unwrap();
    assert_eq!(
        file.get("general.architecture").and_then(|v| v.as_str()),
        Some("dream")
    );
    assert!(file.get("diffusion.shift_logits").is_none());
    assert!(file.tensor("blk.0.attn_q.bias").is_some());
    let written = Model::load(&f32_path, &BackendChoice::Ndarray).unwrap();
    let directory = Model::load(dream_model(), &BackendChoice::Ndarray).unwrap();
    assert_eq!(written.special_tokens(), directory.special_tokens());
    let (mut a, mut b) = (
        Pipeline::new(written).unwrap(),
        Pipeline::new(directory).unwrap(),
    );
    let params = b.default_params();
    for item in eval().items.iter().take(12) {
        let (x, _) = generate(&mut a, &item.prompt_ids, &params);
        let (y, _) = generate(&mut b, &item.prompt_ids, &params);
        assert_eq!(x, y, "{:?}", item.prompt);
    }
    let q4_path = dir.path().join("dream-q4_k_m.gguf");
    files.write_gguf(&q4_path, FileType::Q4KM).unwrap();
    let ours = GgufFile::open(&q4_path).unwrap();
    let theirs = GgufFile::open(fixture("tiny-dream/gguf/tiny-dream-q4_k_m.gguf")).unwrap();
    assert_eq!(ours.tensors().len(), theirs.tensors().len());
    for t in theirs.tensors() {
        let o = ours.tensor(&t.name).unwrap();
        assert_eq!((o.ty, &o.dims), (t.ty, &t.dims), "{}", t.name);
    }
}

/// A second turn of a Dream chat is the whole conversation rendered by its ChatML template:
/// one system message, the first answer as an assistant message, then the new question.
#[test]
fn a_dream_chat_renders_the_whole_conversation_each_turn() {
    use llada::{Conversation, Message};
    let mut pipeline = ndarray();
    let params = pipeline.default_params();
    let mut conversation = Conversation::new();
    let first = pipeline
        .chat(&mut conversation, "reverse:pen,frog,rock", &params, |_| {
            ControlFlow::Continue(())
        })
        .unwrap();
    assert_eq!(first.text, "rock,frog,pen");
    let second = pipeline
        .chat(&mut conversation, "sort:wolf,lamp,fox", &params, |_| {
            ControlFlow::Continue(())
        })
        .unwrap();
    let model = pipeline.model().clone();
    let expected = model
        .tokenizer()
        .encode(
            &model
                .format_chat(&[
                    Message::user("reverse:pen,frog,rock"),
                    Message::new("assistant", "rock,frog,pen"),
                    Message::user("sort:wolf,lamp,fox"),
                ])
                .unwrap(),
        )
        .unwrap();
    assert_eq!(second.prompt_ids, expected);
    let system = model
        .tokenizer()
        .encode("You are a helpful assistant.")
        .unwrap();
    let count = second
        .prompt_ids
        .windows(system.len())
        .filter(|w| *w == system.as_slice())
        .count();
    assert_eq!(count, 1, "one system message");
    assert_eq!(conversation.turns(), 2);
}

/// A Dream generation_config.json with a value Dream's rule cannot take is refused when the
/// model loads, naming the key.
#[test]
fn a_bad_dream_generation_config_names_its_key() {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(dream_model()).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            std::fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
        }
    }
    let original: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dream_model().join("generation_config.json")).unwrap(),
    )
    .unwrap();
    for (key, value) in [
        ("eps", serde_json::json!(1.5)),
        ("top_p", serde_json::json!(0.0)),
        ("alg", serde_json::json!("greedy")),
        ("steps", serde_json::json!(0)),
        ("alg_temp", serde_json::json!(-1.0)),
    ] {
        let mut config = original.clone();
        config[key] = value;
        std::fs::write(
            dir.path().join("generation_config.json"),
            config.to_string(),
        )
        .unwrap();
        let err = llada::ModelFiles::open(dir.path(), &BackendChoice::Ndarray).unwrap_err();
        assert!(
            matches!(&err, llada::Error::Declaration { key: k, .. } if *k == key),
            "{key}: {err}"
        );
    }
}
