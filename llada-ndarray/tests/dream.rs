//! The Dream family on the ndarray backend: the bundled Dream-shaped model (Qwen2 body with
//! q/k/v biases, bf16 weights in two shards, as Dream's release is saved) against logits of
//! transformers' own `Qwen2ForCausalLM` run non-causally, llama.cpp's `dream` GGUF files
//! against the logits of their dequantized weights, and Dream's `config.json` keys.

mod common;

use std::sync::Arc;

use common::{golden_cases_of, max_abs_diff};
use llada_core::ForwardRequest;
use llada_core::MaskPredictor;
use llada_core::testing::{Expectations, check_predictor};
use llada_ndarray::{Config, Context, ContextOptions, Family, Kernel, LoadError, Model};
use llada_test_support::{dream_model, fixture, golden_cases_in};

fn logits(context: &mut Context, ids: &[u32], mask: &[u8], batch: usize, seq: usize) -> Vec<f32> {
    let vocab = context.model().config().embedding_size;
    let request = ForwardRequest::new(ids, batch, seq)
        .unwrap()
        .with_attention_mask(mask)
        .unwrap();
    let mut out = vec![f32::NAN; batch * seq * vocab];
    context.forward(&request, &mut out).unwrap();
    out
}

#[test]
fn dream_logits_match_transformers_qwen2_within_1e4_with_every_kernel() {
    let model = Arc::new(Model::load(dream_model()).unwrap());
    let c = model.config();
    assert_eq!(c.family, Family::Dream);
    assert!(c.qkv_bias && c.shifted_logits && !c.weight_tying);
    assert!(
        c.n_kv_heads < c.n_heads,
        "grouped-query attention is covered"
    );
    assert_eq!(model.weights_dtype(), "bf16");
    assert!(model.weights_bytes() as f64 <= 1.1 * model.checkpoint_bytes() as f64);
    let cases = golden_cases_of(&dream_model());
    assert!(cases.iter().any(|c| c.batch > 1 && c.mask.contains(&0)));
    // The kernels that compute in f32 (`amx` has its bound in tests/amx.rs).
    for kernel in Kernel::supported()
        .into_iter()
        .filter(|k| !k.rounds_to_bf16())
    {
        let options = ContextOptions::default()
            .with_threads(2)
            .with_kernel(kernel);
        let mut context = Context::with_options(model.clone(), options).unwrap();
        assert!(context.shifted_logits());
        for case in &cases {
            let got = logits(&mut context, &case.ids, &case.mask, case.batch, case.seq);
            let diff = max_abs_diff(&got, &case.logits);
            eprintln!("{kernel} kernel, {}: max |diff| {diff:e}", case.name);
            assert!(diff < 1e-4, "{kernel} kernel, {}: {diff}", case.name);
        }
        check_predictor(&mut context, &Expectations::default())
            .unwrap_or_else(|e| panic!("{kernel} kernel: {e}"));
    }
}

/// A model that forgets the biases, or rotates the wrong halves, is far off: the parity above
/// is not a coincidence of small weights.
#[test]
fn without_its_biases_the_model_is_another_model() {
    let text = std::fs::read_to_string(dream_model().join("config.json")).unwrap();
    let mut value: serde_json::Value = serde_json::from_str(&text).unwrap();
    value["attention_bias"] = false.into();
    let config = Config::from_value(value).unwrap();
    assert!(!config.qkv_bias);
    let index = dream_model().join("model.safetensors.index.json");
    let model = Arc::new(Model::from_safetensors(config, index).unwrap());
    let mut context = Context::with_threads(model, 2).unwrap();
    let case = &golden_cases_of(&dream_model())[0];
    let got = logits(&mut context, &case.ids, &case.mask, case.batch, case.seq);
    assert!(max_abs_diff(&got, &case.logits) > 1e-2);
}

/// llama.cpp's converter (architecture `dream`, q/k rows as the checkpoint, biases as
/// `attn_*.bias`) and `llama-quantize` made these files from the bundled model
/// (tests/fixtures/make_dream_gguf.py); each gives the PyTorch logits of the weights gguf-py
/// dequantizes from it.
#[test]
fn llama_cpps_dream_files_give_the_logits_of_their_weights() {
    let dir = fixture("tiny-dream/gguf");
    let directory = Model::load(dream_model()).unwrap();
    let shape = |c: &Config| {
        (
            c.d_model,
            c.n_heads,
            c.n_kv_heads,
            c.n_layers,
            c.embedding_size,
        )
    };
    for ty in ["q8_0", "q4_k_m"] {
        let model = Arc::new(Model::from_gguf(dir.join(format!("tiny-dream-{ty}.gguf"))).unwrap());
        let c = model.config();
        assert_eq!(c.family, Family::Dream, "{ty}");
        assert!(
            c.shifted_logits,
            "{ty}: no diffusion.shift_logits key means shifted"
        );
        assert_eq!(shape(c), shape(directory.config()), "{ty}");
        // The weights widened to f32 in the kernel: the logits of the dequantized weights.
        let options = ContextOptions::default()
            .with_threads(2)
            .with_dequantized_products();
        let mut context = Context::with_options(Arc::clone(&model), options).unwrap();
        let cases = golden_cases_in(&dir.join("reference_logits.safetensors"), &format!("{ty}."));
        assert_eq!(cases.len(), 3);
        for case in &cases {
            let got = logits(&mut context, &case.ids, &case.mask, case.batch, case.seq);
            let diff = max_abs_diff(&got, &case.logits);
            eprintln!("{ty} {}: max |diff| {diff:e}", case.name);
            assert!(diff < 1e-4, "{ty} {}: max |diff| {diff}", case.name);
        }
        let ratio = model.weights_bytes() as f64 / model.checkpoint_bytes() as f64;
        assert!(ratio <= 1.05, "{ty}: weights take {ratio:.3} x the file");
    }
}

fn config_error(edit: impl FnOnce(&mut serde_json::Value)) -> LoadError {
    let text = std::fs::read_to_string(dream_model().join("config.json")).unwrap();
    let mut value: serde_json::Value = serde_json::from_str(&text).unwrap();
    edit(&mut value);
    Config::from_value(value).unwrap_err()
}

#[test]
fn dream_configs_are_read_in_dreams_keys_and_bad_ones_name_them() {
    let err = config_error(|v| {
        v.as_object_mut().unwrap().remove("hidden_size");
    });
    assert!(
        matches!(
            err,
            LoadError::MissingField {
                field: "hidden_size"
            }
        ),
        "{err}"
    );
    let err = config_error(|v| v["num_key_value_heads"] = 3.into());
    assert!(
        matches!(
            err,
            LoadError::InvalidConfig {
                field: "num_key_value_heads",
                ..
            }
        ),
        "{err}"
    );
    let err =
        config_error(|v| v["rope_scaling"] = serde_json::json!({"type": "yarn", "factor": 4.0}));
    assert!(
        matches!(
            err,
            LoadError::Unsupported {
                field: "rope_scaling",
                ..
            }
        ),
        "{err}"
    );
    let err = config_error(|v| v["use_sliding_window"] = true.into());
    assert!(
        matches!(
            err,
            LoadError::Unsupported {
                field: "use_sliding_window",
                ..
            }
        ),
        "{err}"
    );
    let err = config_error(|v| v["hidden_size"] = "wide".into());
    assert!(
        matches!(&err, LoadError::ConfigField { field, .. } if field == "hidden_size"),
        "{err}"
    );
    let err = config_error(|v| {
        v["model_type"] = "gpt_neox".into();
        v.as_object_mut().unwrap().remove("architectures");
    });
    assert!(
        matches!(
            err,
            LoadError::Unsupported {
                field: "model_type",
                ..
            }
        ),
        "{err}"
    );
    // Hugging Face allows a list of EOS ids: the first is the one.
    let text = std::fs::read_to_string(dream_model().join("config.json")).unwrap();
    let mut value: serde_json::Value = serde_json::from_str(&text).unwrap();
    let eos = value["eos_token_id"].as_u64().unwrap();
    value["eos_token_id"] = serde_json::json!([eos, 1]);
    assert_eq!(
        Config::from_value(value).unwrap().eos_token_id,
        Some(eos as u32)
    );
}

/// A checkpoint missing tensors is refused before anything is packed, naming one.
#[test]
fn a_dream_checkpoint_missing_tensors_is_refused_naming_the_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let config_text = std::fs::read_to_string(dream_model().join("config.json")).unwrap();
    std::fs::write(dir.path().join("config.json"), &config_text).unwrap();
    // One shard of two: the tensors of the other are missing.
    let index: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dream_model().join("model.safetensors.index.json")).unwrap(),
    )
    .unwrap();
    let first = index["weight_map"]
        .as_object()
        .unwrap()
        .values()
        .next()
        .unwrap()
        .as_str()
        .unwrap()
        .to_string();
    std::fs::copy(
        dream_model().join(&first),
        dir.path().join("model.safetensors"),
    )
    .unwrap();
    let err = Model::load(dir.path()).unwrap_err();
    assert!(
        matches!(&err, LoadError::MissingTensor { name, .. } if name.starts_with("model.") || name == "lm_head.weight"),
        "{err}"
    );
}
