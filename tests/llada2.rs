//! LLaDA2.x through the whole library, on the bundled LLaDA2-shaped model
//! (tests/fixtures/tiny-llada2: block diffusion, trained briefly on the bundled tasks): its
//! directory brings LLaDA2's decoding and answers as our PyTorch transcriptions of LLaDA2.0's
//! and LLaDA2.1's `generate` do; a `llada2` GGUF file of it is the same model; ONNX Runtime
//! refuses block-causal requests by name; the `generate` example runs it.

use std::ops::ControlFlow;

use llada::core::{BlockGrid, CacheMode, CommitRule, Editing, GenerateParams};
use llada::{BackendChoice, Model, OrtOptions, Pipeline};
use llada_test_support::{example_binary as example, fixture, llada2_model, ort_library};

fn golden() -> serde_json::Value {
    let text = std::fs::read_to_string(llada2_model().join("generate_golden.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn ids(value: &serde_json::Value) -> Vec<u32> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect()
}

/// The generated ids of one prompt cut after the first EOS (as LLaDA2's `generate` returns
/// them), and the forward passes.
fn generate(pipeline: &mut Pipeline, prompt: &[u32], params: &GenerateParams) -> (Vec<u32>, usize) {
    let out = pipeline
        .generate_ids(&[prompt.to_vec()], params, |_| ControlFlow::Continue(()))
        .unwrap()
        .remove(0);
    let mut ids = out.output_ids;
    if let Some(eos) = ids.iter().position(|&t| t == params.eos_id) {
        ids.truncate(eos + 1);
    }
    (ids, out.forward_passes)
}

/// The directory brings LLaDA2's decoding: the absolute block grid, LLaDA2's rule at 0.95,
/// the stop after the block holding end of text, the exact prefix cache, end of text as the
/// only end; with the lengths its generation_config.json declares, the pipeline's answers are
/// the LLaDA2.0 transcription's, token for token, pass for pass.
#[test]
fn a_llada2_directory_decodes_as_llada2_with_its_defaults() {
    let mut pipeline = Pipeline::open(llada2_model(), &BackendChoice::Ndarray).unwrap();
    let model = pipeline.model().clone();
    assert_eq!(model.files().family(), "llada2");
    let params = pipeline.default_params();
    assert_eq!(params.grid, BlockGrid::Absolute);
    assert_eq!(params.commit, CommitRule::Llada2(0.95));
    assert!(params.stop_at_eos && params.editing.is_none());
    assert_eq!(params.cache, CacheMode::Prefix);
    let special = model.special_tokens();
    assert_eq!((params.mask_id, params.eos_id), (special.mask, special.eos));
    assert_eq!(
        params.eot_id, params.eos_id,
        "LLaDA2 stops on end of text only"
    );

    let golden = golden();
    let conf = &golden["configs"]["llada20_default"];
    let size = |key: &str| conf[key].as_u64().unwrap() as usize;
    assert_eq!(
        (params.gen_length, params.block_length, params.steps),
        (size("gen_length"), size("block_length"), size("steps")),
        "the fixture declares the golden configuration's lengths"
    );
    let items = golden["items"].as_array().unwrap();
    let mut answered = 0;
    for item in items {
        let want = &item["results"]["llada20_default"];
        let (got, passes) = generate(&mut pipeline, &ids(&item["prompt_ids"]), &params);
        assert_eq!(got, ids(&want["output_ids"]), "item {}", item["index"]);
        assert_eq!(passes as u64, want["forward_passes"].as_u64().unwrap());
        answered += 1;
    }
    assert_eq!(answered, items.len());
}

/// LLaDA2.1's editing through the pipeline: the transcription's answers, token for token.
#[test]
fn llada21_editing_runs_through_the_pipeline() {
    let mut pipeline = Pipeline::open(llada2_model(), &BackendChoice::Ndarray).unwrap();
    let golden = golden();
    for name in ["llada21_default", "llada21_edit"] {
        let conf = &golden["configs"][name];
        let params = pipeline
            .default_params()
            .with_gen_length(conf["gen_length"].as_u64().unwrap() as usize)
            .with_block_length(conf["block_length"].as_u64().unwrap() as usize)
            .with_steps(conf["block_length"].as_u64().unwrap() as usize)
            .with_commit(CommitRule::Llada2(conf["threshold"].as_f64().unwrap()))
            .with_editing(Some(Editing {
                threshold: conf["editing_threshold"].as_f64().unwrap(),
                max_post_steps: conf["max_post_steps"].as_u64().unwrap() as usize,
                num_to_transfer: conf["num_to_transfer"].as_u64().unwrap() as usize,
            }))
            .with_stop_at_eos(false);
        for item in golden["items"].as_array().unwrap().iter().step_by(3) {
            let want = &item["results"][name];
            let (got, passes) = generate(&mut pipeline, &ids(&item["prompt_ids"]), &params);
            assert_eq!(
                got,
                ids(&want["output_ids"]),
                "{name}, item {}",
                item["index"]
            );
            assert_eq!(passes as u64, want["forward_passes"].as_u64().unwrap());
        }
    }
}

/// The GGUF writer on the directory: a `llada2` file (llama.cpp's `bailingmoe2` names) with
/// the tokenizer and template, that is the directory's model.
#[test]
fn a_written_llada2_file_is_the_directorys_model() {
    use llada::ModelFiles;
    use llada::ndarray::gguf::{FileType, GgufFile};
    let files = ModelFiles::open(llada2_model(), &BackendChoice::Ndarray).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("tiny-llada2-q8_0.gguf");
    files.write_gguf(&out, FileType::Q8_0).unwrap();
    let gguf = GgufFile::open(&out).unwrap();
    let key = |k: &str| gguf.get(k).cloned();
    assert_eq!(
        key("general.architecture")
            .as_ref()
            .and_then(|v| v.as_str()),
        Some("llada2")
    );
    for k in [
        "llada2.leading_dense_block_count",
        "llada2.expert_weights_scale",
        "llada2.expert_group_count",
        "llada2.expert_group_used_count",
        "llada2.expert_shared_feed_forward_length",
        "llada2.rope.dimension_count",
    ] {
        assert!(key(k).is_some(), "{k}");
    }
    let model = Model::load(&out, &BackendChoice::Ndarray).unwrap();
    let directory = Model::load(llada2_model(), &BackendChoice::Ndarray).unwrap();
    assert_eq!(model.files().family(), "llada2");
    assert_eq!(model.special_tokens(), directory.special_tokens());
    assert_eq!(
        model.chat_template().map(|t| t.source()),
        directory.chat_template().map(|t| t.source())
    );
    let mut written = Pipeline::with_threads(model, Some(2)).unwrap();
    let mut pipeline = Pipeline::with_threads(directory, Some(2)).unwrap();
    let params = pipeline.default_params();
    assert_eq!(written.default_params().grid, BlockGrid::Absolute);
    let golden = golden();
    let items: Vec<_> = golden["items"]
        .as_array()
        .unwrap()
        .iter()
        .step_by(4)
        .collect();
    let mut same = 0;
    for item in &items {
        let prompt = ids(&item["prompt_ids"]);
        let (a, _) = generate(&mut written, &prompt, &params);
        let (b, _) = generate(&mut pipeline, &prompt, &params);
        same += usize::from(a == b);
    }
    eprintln!("Q8_0 file vs directory: {same}/{} the same", items.len());
    assert!(same + 1 >= items.len(), "{same}/{}", items.len());
}

/// ONNX Runtime runs exported graphs with bidirectional attention: a block-causal request is
/// refused by name rather than answered wrong.
#[test]
fn onnx_runtime_refuses_block_causal_requests_by_name() {
    use llada::core::{ForwardRequest, MaskPredictor};
    let mut predictor = llada::ort::OrtPredictor::builder(fixture("tiny-llada/model.onnx"))
        .library(ort_library())
        .build()
        .unwrap();
    let ids = vec![1u32; 16];
    let request = ForwardRequest::new(&ids, 1, 16)
        .unwrap()
        .with_block_causal(8)
        .unwrap();
    let mut logits = vec![0.0; request.logits_len(predictor.vocab_size())];
    let err = predictor.forward(&request, &mut logits).unwrap_err();
    assert!(
        matches!(err, llada::ort::OrtError::BlockCausal { block: 8, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("block-causal"), "{err}");
}

/// The LLaDA2 export (llada-ort/export/export_onnx.py: the block mask built in the graph from
/// its `block_length` input) gives transformers' block-causal logits, refuses bidirectional
/// requests, and answers through the pipeline as the ndarray backend does (every pass in full:
/// the graph has no cache).
#[test]
fn onnx_runtime_runs_llada2_with_the_block_mask() {
    use llada::core::{ForwardRequest, MaskPredictor};
    let mut predictor = llada::ort::OrtPredictor::builder(llada2_model().join("model.onnx"))
        .library(ort_library())
        .build()
        .unwrap();
    assert!(predictor.block_causal() && !predictor.shifted_logits());
    let logits_file = llada2_model().join("golden_logits.safetensors");
    for n in 0..3 {
        let (shape, ids) =
            llada_test_support::safetensors_tensor(&logits_file, &format!("case{n}.input_ids"));
        let ids: Vec<u32> = ids.iter().map(|&v| v as u32).collect();
        let (_, want) =
            llada_test_support::safetensors_tensor(&logits_file, &format!("case{n}.logits_block8"));
        let request = ForwardRequest::new(&ids, shape[0], shape[1])
            .unwrap()
            .with_block_causal(8)
            .unwrap();
        let mut got = vec![0.0; request.logits_len(predictor.vocab_size())];
        predictor.forward(&request, &mut got).unwrap();
        let diff = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (f64::from(*a) - b).abs())
            .fold(0.0f64, f64::max);
        eprintln!("ORT case{n}: max |diff| {diff:e}");
        assert!(diff < 1e-4, "case{n}: {diff}");
        let bidirectional = ForwardRequest::new(&ids, shape[0], shape[1]).unwrap();
        assert!(matches!(
            predictor.forward(&bidirectional, &mut got),
            Err(llada::ort::OrtError::BidirectionalRequest { .. })
        ));
    }
    // A batch whose second row is left-padded by more than a block: the padding's own
    // positions see nothing but padding; the real positions agree with the ndarray backend's.
    let (shape, first) = llada_test_support::safetensors_tensor(&logits_file, "case0.input_ids");
    let seq = shape[1];
    let first: Vec<u32> = first.iter().map(|&v| v as u32).collect();
    let pad = 11;
    let mut batch = first.clone();
    batch.extend(std::iter::repeat_n(617, pad).chain(first[..seq - pad].iter().copied()));
    let mask: Vec<u8> = std::iter::repeat_n(1, seq)
        .chain(std::iter::repeat_n(0, pad))
        .chain(std::iter::repeat_n(1, seq - pad))
        .collect();
    let request = ForwardRequest::new(&batch, 2, seq)
        .unwrap()
        .with_attention_mask(&mask)
        .unwrap()
        .with_block_causal(8)
        .unwrap();
    let vocab = predictor.vocab_size();
    let mut onnx_logits = vec![0.0; request.logits_len(vocab)];
    predictor.forward(&request, &mut onnx_logits).unwrap();
    let model = std::sync::Arc::new(llada::ndarray::Model::load(llada2_model()).unwrap());
    let mut context = llada::ndarray::Context::with_threads(model, 2).unwrap();
    let mut rust_logits = vec![0.0; request.logits_len(vocab)];
    context.forward(&request, &mut rust_logits).unwrap();
    assert!(
        rust_logits.iter().all(|v| v.is_finite()),
        "NaN from the padding"
    );
    let mut worst = 0.0f32;
    for (t, _) in mask.iter().enumerate().filter(|(_, m)| **m != 0) {
        let (a, b) = (
            &onnx_logits[t * vocab..(t + 1) * vocab],
            &rust_logits[t * vocab..(t + 1) * vocab],
        );
        worst = a
            .iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(worst, f32::max);
    }
    eprintln!("padded batch, real positions: ORT vs ndarray {worst:e}");
    assert!(worst < 1e-4, "{worst}");

    let choice = BackendChoice::Ort(OrtOptions::default().with_library(Some(ort_library())));
    let mut onnx = Pipeline::open(llada2_model(), &choice).unwrap();
    let mut rust = Pipeline::open(llada2_model(), &BackendChoice::Ndarray).unwrap();
    let params = rust.default_params();
    let golden = golden();
    let items: Vec<_> = golden["items"]
        .as_array()
        .unwrap()
        .iter()
        .step_by(5)
        .collect();
    for item in &items {
        let prompt = ids(&item["prompt_ids"]);
        let (a, passes_a) = generate(&mut onnx, &prompt, &params);
        let (b, passes_b) = generate(&mut rust, &prompt, &params);
        assert_eq!((a, passes_a), (b, passes_b), "item {}", item["index"]);
    }
}

/// `generate` on the directory with nothing but the prompt answers it, with LLaDA2.0's
/// decoding, and with LLaDA2.1's editing asked for.
#[test]
fn the_generate_example_runs_llada2() {
    let golden = golden();
    let item = golden["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["prompt"].as_str().unwrap().starts_with("reverse:"))
        .expect("a reverse item");
    let prompt = item["prompt"].as_str().unwrap();
    let eval: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(llada2_model().join("eval.json")).unwrap())
            .unwrap();
    let answer = eval["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["prompt"] == prompt)
        .map(|i| i["answer"].as_str().unwrap().to_string())
        .unwrap();
    let run = |extra: &[&str]| {
        let output = std::process::Command::new(example("generate"))
            .env_remove("RUST_LOG")
            .arg("--model")
            .arg(llada2_model())
            .args(extra)
            .args(["--prompt", prompt])
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap().trim().to_string()
    };
    assert_eq!(run(&[]), answer);
    assert_eq!(run(&["--editing-threshold", "0.9"]), answer);
    // The flag is read: on a LLaDA model, whose rule is not LLaDA2's, it is refused by name.
    let output = std::process::Command::new(example("generate"))
        .env_remove("RUST_LOG")
        .args([
            "--editing-threshold",
            "0.9",
            "--prompt",
            "reverse:pen,frog,rock",
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("token editing"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
