//! Loading checkpoints as published: bf16 and sharded copies of the fixture, the real
//! LLaDA-8B-Instruct configuration, and every kind of bad input as a typed error.

mod common;

use std::sync::Arc;

use common::{fixture_tensors, golden_cases, max_abs_diff, model_dir, to_bf16, write_safetensors};
use llada_ndarray::{Config, LoadError, Model};
use llada_test_support::{bundled_model, fixture};

/// Largest |logit| difference between a bf16 copy of the fixture and PyTorch's f32 logits,
/// relative to the largest |logit| of the case. bf16 keeps 8 mantissa bits (relative error up
/// to 2^-9 per weight); through four layers the fixture's logits move by 0.2-0.4% of their
/// range (measured 0.0019-0.0039); the bound leaves a 5x margin while still catching a dtype
/// mix-up (reading bf16 bits as f16, say, is off by orders of magnitude).
const BF16_RELATIVE_TOLERANCE: f32 = 0.02;

fn logits(model: Arc<Model>, case: &common::GoldenCase) -> Vec<f32> {
    common::case_logits(&model, case)
}

#[test]
fn a_bf16_checkpoint_runs_in_bf16_within_tolerance() {
    let tensors: common::Tensors = fixture_tensors()
        .into_iter()
        .map(|(n, _, s, b)| (n, safetensors::Dtype::BF16, s, to_bf16(&b)))
        .collect();
    let dir = model_dir(&tensors);
    let model = Arc::new(Model::load(dir.path()).unwrap());
    assert_eq!(model.weights_dtype(), "bf16");
    // Weights stay bf16 in memory: no f32 copy.
    let ratio = model.weights_bytes() as f64 / model.checkpoint_bytes() as f64;
    assert!(ratio <= 1.1, "weights take {ratio:.3}x the checkpoint");
    for case in golden_cases() {
        let diff = max_abs_diff(&logits(model.clone(), &case), &case.logits);
        let scale = case.logits.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        eprintln!(
            "{}: bf16 max abs diff {diff} (logit scale {scale}, relative {})",
            case.name,
            diff / scale
        );
        assert!(
            diff < BF16_RELATIVE_TOLERANCE * scale,
            "{}: {diff} of {scale}",
            case.name
        );
    }
}

#[test]
fn a_sharded_checkpoint_gives_the_same_logits_as_the_single_file() {
    let tensors = fixture_tensors();
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        bundled_model().join("config.json"),
        dir.path().join("config.json"),
    )
    .unwrap();
    let (first, second): (Vec<_>, Vec<_>) = tensors
        .into_iter()
        .enumerate()
        .partition(|(i, _)| i % 2 == 0);
    let first: common::Tensors = first.into_iter().map(|(_, t)| t).collect();
    let second: common::Tensors = second.into_iter().map(|(_, t)| t).collect();
    write_safetensors(&dir.path().join("model-00001-of-00002.safetensors"), &first);
    write_safetensors(
        &dir.path().join("model-00002-of-00002.safetensors"),
        &second,
    );
    let mut map = serde_json::Map::new();
    for (tensors, file) in [
        (&first, "model-00001-of-00002.safetensors"),
        (&second, "model-00002-of-00002.safetensors"),
    ] {
        for t in tensors {
            map.insert(t.0.clone(), file.into());
        }
    }
    let index = serde_json::json!({ "metadata": { "total_size": 0 }, "weight_map": map });
    std::fs::write(
        dir.path().join("model.safetensors.index.json"),
        index.to_string(),
    )
    .unwrap();

    let sharded = Arc::new(Model::load(dir.path()).unwrap());
    let single = Arc::new(Model::load(bundled_model()).unwrap());
    let case = &golden_cases()[1];
    assert_eq!(logits(sharded, case), logits(single, case));
}

#[test]
fn the_real_llada_8b_instruct_config_is_accepted() {
    let config = Config::from_file(fixture("llada-8b-instruct").join("config.json")).unwrap();
    assert_eq!(
        (
            config.d_model,
            config.n_heads,
            config.n_kv_heads,
            config.n_layers
        ),
        (4096, 32, 32, 32)
    );
    assert_eq!(
        (config.mlp_hidden_size, config.embedding_size),
        (12288, 126_464)
    );
    assert_eq!(config.mask_token_id, Some(126_336));
    let shapes = config.tensor_shapes();
    // The published index lists exactly these 291 tensors.
    let index: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixture("llada-8b-instruct").join("model.safetensors.index.json"))
            .unwrap(),
    )
    .unwrap();
    let mut published: Vec<&str> = index["weight_map"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let mut ours: Vec<&str> = shapes.iter().map(|(n, _)| n.as_str()).collect();
    published.sort_unstable();
    ours.sort_unstable();
    assert_eq!(ours.len(), 291);
    assert_eq!(ours, published);
    // About 8 billion parameters.
    assert!((7.9e9..8.1e9).contains(&(config.parameter_count() as f64)));
}

/// The shape the benchmark's "Real scale" section writes for LLaDA-MoE-7B-A1B (gathered from
/// several sources, see its README) adds up to the model card's sizes: 7.36 B parameters, about
/// 1.4 B of them active per token (the embedding aside).
#[test]
fn the_llada_moe_7b_shape_has_the_model_cards_sizes() {
    let config = Config::from_file(fixture("llada-moe-7b-a1b").join("config.json")).unwrap();
    assert_eq!(config.family.gguf_arch(), "llada-moe");
    assert_eq!(
        (
            config.d_model,
            config.n_heads,
            config.n_kv_heads,
            config.n_layers
        ),
        (2048, 16, 16, 16)
    );
    assert_eq!(config.vocab_size, 157_184);
    assert_eq!(config.mask_token_id, Some(156_895));
    let moe = config.moe.as_ref().unwrap();
    assert_eq!(
        (moe.experts, moe.experts_per_token, moe.expert_hidden_size),
        (64, 8, 1024)
    );
    assert!((0..16).all(|layer| config.is_moe_layer(layer)));
    let total = config.parameter_count() as f64;
    assert!((7.35e9..7.37e9).contains(&total), "{total}");
    let idle_experts = (moe.experts - moe.experts_per_token) * 3 * config.d_model * 1024 * 16;
    let embedding = config.vocab_size * config.d_model;
    let active = total - (idle_experts + embedding) as f64;
    assert!((1.35e9..1.45e9).contains(&active), "{active}");
}

fn config_error(edit: impl FnOnce(&mut serde_json::Value)) -> LoadError {
    let text = std::fs::read_to_string(bundled_model().join("config.json")).unwrap();
    let mut value: serde_json::Value = serde_json::from_str(&text).unwrap();
    edit(&mut value);
    Config::from_json(&value.to_string()).unwrap_err()
}

#[test]
fn bad_configs_are_typed_errors_naming_the_field() {
    let err = config_error(|v| {
        v.as_object_mut().unwrap().remove("d_model");
    });
    assert!(
        matches!(err, LoadError::MissingField { field: "d_model" }),
        "{err}"
    );
    let err = config_error(|v| v["block_type"] = "sequential".into());
    assert!(
        matches!(
            err,
            LoadError::Unsupported {
                field: "block_type",
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("sequential"));
    let err = config_error(|v| v["alibi"] = true.into());
    assert!(
        matches!(err, LoadError::Unsupported { field: "alibi", .. }),
        "{err}"
    );
    let err = config_error(|v| v["include_bias"] = true.into());
    assert!(
        matches!(
            err,
            LoadError::Unsupported {
                field: "include_bias",
                ..
            }
        ),
        "{err}"
    );
    let err = config_error(|v| v["layer_norm_type"] = "default".into());
    assert!(
        matches!(
            err,
            LoadError::Unsupported {
                field: "layer_norm_type",
                ..
            }
        ),
        "{err}"
    );
    let err = config_error(|v| v["n_kv_heads"] = 3.into());
    assert!(
        matches!(
            err,
            LoadError::InvalidConfig {
                field: "n_kv_heads",
                ..
            }
        ),
        "{err}"
    );
    let err = config_error(|v| v["d_model"] = "wide".into());
    assert!(
        matches!(&err, LoadError::ConfigField { field, .. } if field == "d_model"),
        "{err}"
    );
    let err = Config::from_json("{ not json").unwrap_err();
    assert!(matches!(err, LoadError::ConfigJson { .. }), "{err}");
}

fn load_error(edit: impl FnOnce(&mut common::Tensors)) -> LoadError {
    let mut tensors = fixture_tensors();
    edit(&mut tensors);
    let dir = model_dir(&tensors);
    Model::load(dir.path()).unwrap_err()
}

#[test]
fn bad_checkpoints_are_typed_errors_naming_the_tensor() {
    let name = "model.transformer.blocks.2.up_proj.weight";
    let err = load_error(|t| t.retain(|x| x.0 != name));
    assert!(
        matches!(&err, LoadError::MissingTensor { name: n, expected } if n == name && expected == &[352, 128]),
        "{err}"
    );

    let err = load_error(|t| {
        let x = t.iter_mut().find(|x| x.0 == name).unwrap();
        x.2 = vec![128, 352];
    });
    assert!(
        matches!(&err, LoadError::TensorShape { name: n, expected, found } if n == name && expected == &[352, 128] && found == &[128, 352]),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        format!("tensor {name} has shape [128, 352], expected [352, 128]")
    );

    let err = load_error(|t| {
        let x = t.iter_mut().find(|x| x.0 == name).unwrap();
        x.1 = safetensors::Dtype::I32;
    });
    assert!(
        matches!(&err, LoadError::Dtype { name: n, dtype } if n == name && dtype == "I32"),
        "{err}"
    );
}

#[test]
fn truncated_or_corrupted_files_and_missing_paths_are_typed_errors() {
    let tensors = fixture_tensors();
    let dir = model_dir(&tensors);
    let path = dir.path().join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();

    std::fs::write(&path, &bytes[..bytes.len() - 1000]).unwrap();
    let err = Model::load(dir.path()).unwrap_err();
    assert!(
        matches!(&err, LoadError::Safetensors { path: p, .. } if *p == path),
        "{err}"
    );

    let mut corrupted = bytes.clone();
    corrupted[8..40].copy_from_slice(&[b'#'; 32]);
    std::fs::write(&path, &corrupted).unwrap();
    let err = Model::load(dir.path()).unwrap_err();
    assert!(matches!(err, LoadError::Safetensors { .. }), "{err}");

    std::fs::write(&path, [1u8, 2, 3]).unwrap();
    assert!(matches!(
        Model::load(dir.path()).unwrap_err(),
        LoadError::Safetensors { .. }
    ));

    std::fs::remove_file(&path).unwrap();
    let err = Model::load(dir.path()).unwrap_err();
    assert!(matches!(err, LoadError::NoWeights { .. }), "{err}");
    assert!(err.to_string().contains("model.safetensors.index.json"));

    let err = Model::load(dir.path().join("nowhere")).unwrap_err();
    assert!(
        matches!(&err, LoadError::Io { path, .. } if path.ends_with("nowhere")),
        "{err}"
    );

    std::fs::remove_file(dir.path().join("config.json")).unwrap();
    std::fs::write(&path, &bytes).unwrap();
    let err = Model::load(dir.path()).unwrap_err();
    assert!(
        matches!(&err, LoadError::Io { path, .. } if path.ends_with("config.json")),
        "{err}"
    );
}

#[test]
fn a_thread_count_no_context_runs_is_a_typed_error() {
    let model = Arc::new(Model::load(llada_test_support::bundled_model()).unwrap());
    let err = llada_ndarray::Context::with_threads(Arc::clone(&model), 4_000_000_000).unwrap_err();
    assert!(
        matches!(err, LoadError::ThreadCount { threads: 4_000_000_000, max } if max == llada_ndarray::MAX_THREADS),
        "{err}"
    );
    assert_eq!(err.kind(), llada_core::ErrorKind::InvalidInput);
    llada_ndarray::Context::with_threads(model, llada_ndarray::MAX_THREADS.min(4)).unwrap();
}
