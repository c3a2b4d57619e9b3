//! The `generate` example as a user runs it: JSON output on a held-out prompt, raw prompts,
//! bad flags, and Ctrl-C during a long generation.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use llada_test_support::{
    bundled_model, eval_set, example_binary as example, fixture, held_out_answered, ort_library,
};

fn generate() -> Command {
    let path = example("generate");
    assert!(
        path.exists(),
        "{} is not built (cargo test builds the examples)",
        path.display()
    );
    let mut command = Command::new(path);
    command.env_remove("RUST_LOG");
    command
}

#[test]
fn generate_json_answers_a_held_out_prompt() {
    let eval = eval_set();
    // A held-out prompt the reference answers correctly.
    let (item, expected) = held_out_answered();
    let output = generate()
        .args(["--json", "--prompt", &item.prompt])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert_eq!(
        stdout.lines().count(),
        1,
        "exactly one JSON object: {stdout}"
    );
    let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        json["text"],
        item.answer.as_str(),
        "prompt {:?}",
        item.prompt
    );
    let ids: Vec<u32> = serde_json::from_value(json["output_ids"].clone()).unwrap();
    assert_eq!(ids, expected);
    assert_eq!(ids.len(), eval.gen_length);
    let prompt_ids: Vec<u32> = serde_json::from_value(json["prompt_ids"].clone()).unwrap();
    assert_eq!(prompt_ids, item.prompt_ids);
    assert_eq!(json["forward_passes"], eval.steps);
    assert!(json["elapsed_ms"].as_f64().unwrap() > 0.0);
    assert!(json["tokens_per_s"].as_f64().unwrap() > 0.0);
}

#[test]
fn the_prompt_can_come_from_stdin_and_bad_flags_are_reported() {
    let item = &eval_set().items[0];
    let mut child = generate()
        .arg("--json")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{}\n", item.prompt).as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let prompt_ids: Vec<u32> = serde_json::from_value(json["prompt_ids"].clone()).unwrap();
    assert_eq!(prompt_ids, item.prompt_ids);

    let output = generate()
        .args(["--prompt", "x", "--block-length", "5"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("block_length 5"));

    let output = generate()
        .args(["--prompt", "x", "--model", "/no/such/dir"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("/no/such/dir"));
}

#[test]
fn ctrl_c_stops_a_long_generation_cleanly() {
    // 224 tokens in 224 steps: seconds of work, interrupted after the first steps.
    let child = generate()
        .args([
            "--prompt",
            "copy: pen frog",
            "--gen-length",
            "224",
            "--steps",
            "224",
            "--block-length",
            "32",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(700));
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let start = Instant::now();
    let output = child.wait_with_output().unwrap();
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "stopped promptly"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("cancelled after"), "{stderr}");
}

#[test]
fn the_ort_backend_gives_the_same_answer_as_ndarray() {
    let item = &eval_set().items[3];
    let run = |backend: &str| {
        let output = generate()
            .args(["--json", "--backend", backend, "--prompt", &item.prompt])
            .env("ORT_DYLIB_PATH", ort_library())
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{backend}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        json["output_ids"].clone()
    };
    assert_eq!(run("ort"), run("ndarray"));
}

#[test]
fn a_checkpoint_quantized_while_loading_answers_from_the_cli() {
    let (item, _) = held_out_answered();
    for quantize in ["q8_0", "q4_0"] {
        let output = generate()
            .args(["--json", "--quantize", quantize, "--prompt", &item.prompt])
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        assert_eq!(json["text"], item.answer.as_str(), "{quantize}");
    }
    let output = generate()
        .args(["--quantize", "q3_k", "--prompt", "x"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("q3_k"));
}

#[test]
fn a_llama_cpp_gguf_file_alone_answers_from_the_cli() {
    let (item, _) = held_out_answered();
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("tiny-llada-q4_0.gguf");
    std::fs::copy(fixture("tiny-llada/gguf/tiny-llada-q4_0.gguf"), &model).unwrap();
    // llama.cpp's converter declares no decoding lengths: give the bundled model's.
    let output = generate()
        .arg("--model")
        .arg(&model)
        .args(["--gen-length", "16", "--steps", "16", "--block-length", "8"])
        .args(["--json", "--prompt", &item.prompt])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(json["text"], item.answer.as_str());
}

#[test]
fn the_gguf_example_writes_a_file_the_cli_runs() {
    let (item, _) = held_out_answered();
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("tiny-q4_k_m.gguf");
    let output = Command::new(example("gguf"))
        .args(["--type", "q4_k_m", "--out"])
        .arg(&model)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("39 tensors"));
    // The written file declares the bundled model's decoding lengths.
    let output = generate()
        .arg("--model")
        .arg(&model)
        .args(["--json", "--prompt", &item.prompt])
        .output()
        .unwrap();
    assert!(output.status.success());
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(json["text"], item.answer.as_str());
    assert_eq!(json["forward_passes"], 16);
    // A type it does not write is an error naming it; nothing is written.
    let output = Command::new(example("gguf"))
        .args(["--type", "q2_k", "--out"])
        .arg(dir.path().join("x.gguf"))
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("q2_k"));
    assert!(!dir.path().join("x.gguf").exists());
}

fn chat() -> Command {
    let mut command = Command::new(example("chat"));
    command.env_remove("RUST_LOG");
    command
}

/// The lengths a chat session reports on stderr, for a model directory.
fn chat_lengths(model: &std::path::Path) -> String {
    let output = chat()
        .arg("--model")
        .arg(model)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(output.status.success());
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn the_lengths_default_to_the_models_declaration_else_the_reference_chat_settings() {
    // The bundled model declares 16 tokens, 16 steps, blocks of 8.
    let stderr = chat_lengths(&bundled_model());
    assert!(
        stderr.contains("gen_length 16, steps 16, blocks of 8 (the model's generation_config.json `llada_decoding`)"),
        "{stderr}"
    );

    // A copy without the declaration gets LLaDA's chat settings: 128 tokens, 128 steps,
    // blocks of 32, in chat and in generate.
    let dir = tempfile::tempdir().unwrap();
    for file in [
        "config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "model.safetensors",
    ] {
        std::fs::copy(bundled_model().join(file), dir.path().join(file)).unwrap();
    }
    let stderr = chat_lengths(dir.path());
    assert!(
        stderr.contains("gen_length 128, steps 128, blocks of 32 (the reference chat settings"),
        "{stderr}"
    );
    let output = generate()
        .arg("--model")
        .arg(dir.path())
        .args(["--json", "--prompt", "copy:pen,frog"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(json["output_ids"].as_array().unwrap().len(), 128);
    assert_eq!(json["forward_passes"], 128);

    // A flag overrides the declaration; --gen-length alone keeps one step per token.
    let output = generate()
        .args(["--json", "--prompt", "copy:pen,frog", "--gen-length", "32"])
        .output()
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(json["output_ids"].as_array().unwrap().len(), 32);
    assert_eq!(json["forward_passes"], 32);
}
