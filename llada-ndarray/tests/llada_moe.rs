//! The LLaDA-MoE family on the ndarray backend: the bundled LLaDA-MoE-shaped model (a mixture
//! of experts with per-head query/key norms, bf16 weights in two shards, one tensor per
//! expert, as the release is saved) against transformers' own `Qwen3MoeForCausalLM` run
//! non-causally with `norm_topk_prob=False`; llama.cpp's `llada-moe` GGUF files (3-D expert
//! tensors, and the fused gate/up layout) against the logits of their dequantized weights;
//! the GGUF writer's expert tensors; and LLaDA-MoE's `config.json` keys.

mod common;

use std::sync::Arc;

use common::{golden_cases_of, max_abs_diff};
use llada_core::ForwardRequest;
use llada_core::testing::{Expectations, check_predictor};
use llada_ndarray::gguf::{FileType, write_checkpoint};
use llada_ndarray::{Config, Context, ContextOptions, Family, Kernel, LoadError, Model};
use llada_test_support::{fixture, golden_cases_in, llada_moe_model};

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
fn llada_moe_logits_match_transformers_qwen3_moe_within_1e4_with_every_kernel() {
    let model = Arc::new(Model::load(llada_moe_model()).unwrap());
    let c = model.config();
    assert_eq!(c.family, Family::LladaMoe);
    assert!(c.qk_norm && !c.qkv_bias && !c.shifted_logits && !c.weight_tying);
    let moe = c.moe.as_ref().unwrap();
    assert!(moe.experts_per_token > 1 && moe.experts > moe.experts_per_token);
    assert!(!moe.normalize_weights && moe.layers.is_none());
    assert_eq!(model.weights_dtype(), "bf16");
    assert!(model.weights_bytes() as f64 <= 1.05 * model.checkpoint_bytes() as f64);
    let cases = golden_cases_of(&llada_moe_model());
    assert!(cases.iter().any(|c| c.batch > 1 && c.mask.contains(&0)));
    // The kernels that compute in f32 (`amx` has its bound in tests/amx.rs).
    for kernel in Kernel::supported()
        .into_iter()
        .filter(|k| !k.rounds_to_bf16())
    {
        for threads in [1, 2] {
            let options = ContextOptions::default()
                .with_threads(threads)
                .with_kernel(kernel);
            let mut context = Context::with_options(model.clone(), options).unwrap();
            for case in &cases {
                let got = logits(&mut context, &case.ids, &case.mask, case.batch, case.seq);
                let diff = max_abs_diff(&got, &case.logits);
                eprintln!(
                    "{kernel} kernel, {threads} threads, {}: max |diff| {diff:e}",
                    case.name
                );
                assert!(diff < 1e-4, "{kernel} kernel, {}: {diff}", case.name);
            }
            check_predictor(&mut context, &Expectations::default())
                .unwrap_or_else(|e| panic!("{kernel} kernel: {e}"));
            let profile = context.moe_profile();
            assert!(profile.layers > 0 && !profile.experts.is_zero());
        }
    }
}

/// The profile counts the experts a pass reads (what the benchmark's real-scale section turns
/// into bytes per step): a one-token pass runs exactly its `experts_per_token` in every layer,
/// and a longer one at least that many and at most all of them.
#[test]
fn the_moe_profile_counts_the_experts_a_pass_runs() {
    let model = Arc::new(Model::load(llada_moe_model()).unwrap());
    let (layers, moe) = (
        model.config().n_layers as u64,
        model.config().moe.clone().unwrap(),
    );
    let (k, n) = (moe.experts_per_token as u64, moe.experts as u64);
    let mut context = Context::with_threads(model, 1).unwrap();
    logits(&mut context, &[5], &[1], 1, 1);
    let one = context.moe_profile();
    assert_eq!((one.layers, one.experts_run), (layers, layers * k));
    context.reset_moe_profile();
    let ids: Vec<u32> = (0..24).map(|i| (i * 37 % 600) as u32).collect();
    logits(&mut context, &ids, &[1; 24], 1, 24);
    let many = context.moe_profile();
    assert_eq!(many.layers, layers);
    assert!(
        (layers * k..=layers * n).contains(&many.experts_run),
        "{many:?}"
    );
    assert!(
        many.experts_run > layers * k,
        "24 tokens chose the same experts: {many:?}"
    );
}

/// The parity above is not a coincidence of small weights: without the query/key norms, or
/// with the chosen experts' weights renormalised (RND1's router), the logits are far off.
#[test]
fn without_its_qk_norms_or_with_renormalised_weights_the_model_is_another_model() {
    let case = &golden_cases_of(&llada_moe_model())[0];
    let text = std::fs::read_to_string(llada_moe_model().join("config.json")).unwrap();
    let index = llada_moe_model().join("model.safetensors.index.json");
    let base: Config = Config::from_json(&text).unwrap();
    let mut no_norm = base.clone();
    no_norm.qk_norm = false;
    let mut renormalised = base.clone();
    renormalised.moe.as_mut().unwrap().normalize_weights = true;
    for (what, config) in [("no q/k norm", no_norm), ("renormalised", renormalised)] {
        let model = Arc::new(Model::from_safetensors(config, &index).unwrap());
        let mut context = Context::with_threads(model, 2).unwrap();
        let got = logits(&mut context, &case.ids, &case.mask, case.batch, case.seq);
        let diff = max_abs_diff(&got, &case.logits);
        assert!(diff > 1e-2, "{what}: {diff}");
    }
}

/// llama.cpp's converter (architecture `llada-moe`: 3-D `ffn_{gate,up,down}_exps`, or the
/// fused `ffn_gate_up_exps`; `attn_q_norm` / `attn_k_norm`) and `llama-quantize` made these
/// files from the bundled model (tests/fixtures/make_llada_moe_gguf.py); each gives the
/// PyTorch logits of the weights gguf-py dequantizes from it.
#[test]
fn llama_cpps_llada_moe_files_give_the_logits_of_their_weights() {
    let dir = fixture("tiny-llada-moe/gguf");
    let directory = Model::load(llada_moe_model()).unwrap();
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let Some(stem) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".gguf"))
            .and_then(|n| n.strip_prefix("tiny-llada-moe-"))
            .map(str::to_string)
        else {
            continue;
        };
        let model = Arc::new(Model::from_gguf(&path).unwrap());
        let c = model.config();
        assert_eq!(c.family, Family::LladaMoe, "{stem}");
        assert!(
            !c.shifted_logits,
            "{stem}: llama.cpp writes shift_logits false"
        );
        assert_eq!(c.moe, directory.config().moe, "{stem}");
        assert_eq!(c.mask_token_id, directory.config().mask_token_id, "{stem}");
        let options = ContextOptions::default()
            .with_threads(2)
            .with_dequantized_products();
        let mut context = Context::with_options(Arc::clone(&model), options).unwrap();
        // The fused file holds the Q8_0 file's weights, gate and up rows side by side.
        let weights = stem.trim_end_matches("-fused");
        let cases = golden_cases_in(
            &dir.join("reference_logits.safetensors"),
            &format!("{weights}."),
        );
        assert!(!cases.is_empty(), "{stem}: reference logits");
        for case in &cases {
            let got = logits(&mut context, &case.ids, &case.mask, case.batch, case.seq);
            let diff = max_abs_diff(&got, &case.logits);
            eprintln!("{stem} {}: max |diff| {diff:e}", case.name);
            assert!(diff < 1e-4, "{stem} {}: max |diff| {diff}", case.name);
        }
        let ratio = model.weights_bytes() as f64 / model.checkpoint_bytes() as f64;
        assert!(ratio <= 1.05, "{stem}: weights take {ratio:.3} x the file");
        seen += 1;
    }
    assert!(
        seen >= 3,
        "the Q8_0, Q4_K_M and fused files are there ({seen})"
    );
}

/// Our GGUF writer stacks each layer's experts into llama.cpp's 3-D tensors: the F32 file
/// gives the checkpoint's logits, and the Q8_0 file (experts quantized, router kept in f32)
/// those of llama.cpp's own Q8_0 conversion.
#[test]
fn the_gguf_writer_stacks_the_experts_as_llama_cpp_does() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config::from_file(llada_moe_model().join("config.json")).unwrap();
    let index = llada_moe_model().join("model.safetensors.index.json");
    let reference = fixture("tiny-llada-moe/gguf/reference_logits.safetensors");
    for ty in [FileType::F32, FileType::Q8_0] {
        let cases = if ty == FileType::F32 {
            golden_cases_of(&llada_moe_model())
        } else {
            golden_cases_in(&reference, "q8_0.")
        };
        let out = dir.path().join(format!("moe-{ty}.gguf"));
        let written = write_checkpoint(&config, &index, ty, &[], &out).unwrap();
        let moe = config.moe.as_ref().unwrap();
        let down = written
            .tensors
            .iter()
            .find(|t| t.name == "blk.0.ffn_down_exps.weight")
            .unwrap();
        assert_eq!(
            down.dims,
            [moe.expert_hidden_size, config.d_model, moe.experts].map(|d| d as u64)
        );
        let router = written
            .tensors
            .iter()
            .find(|t| t.name == "blk.0.ffn_gate_inp.weight")
            .unwrap();
        assert_eq!(router.ty.name(), "F32", "{ty}: the router stays f32");
        let model = Arc::new(Model::load(&out).unwrap());
        assert_eq!(model.config().moe, config.moe);
        let options = ContextOptions::default()
            .with_threads(2)
            .with_dequantized_products();
        let mut context = Context::with_options(model, options).unwrap();
        for case in &cases {
            let got = logits(&mut context, &case.ids, &case.mask, case.batch, case.seq);
            let diff = max_abs_diff(&got, &case.logits);
            eprintln!("{ty} {}: max |diff| {diff:e}", case.name);
            assert!(diff < 1e-4, "{ty} {}: {diff}", case.name);
        }
    }
}

fn config_error(edit: impl FnOnce(&mut serde_json::Value)) -> LoadError {
    let text = std::fs::read_to_string(llada_moe_model().join("config.json")).unwrap();
    let mut value: serde_json::Value = serde_json::from_str(&text).unwrap();
    edit(&mut value);
    Config::from_value(value).unwrap_err()
}

fn unsupported(field: &str, err: &LoadError) -> bool {
    matches!(err, LoadError::Unsupported { field: f, .. } if *f == field)
}

fn invalid(field: &str, err: &LoadError) -> bool {
    matches!(err, LoadError::InvalidConfig { field: f, .. } if *f == field)
}

/// What the reference does not compute is refused naming the key, never half-followed.
#[test]
fn llada_moe_configs_are_read_in_their_keys_and_what_the_reference_lacks_is_refused() {
    let err = config_error(|v| {
        v.as_object_mut().unwrap().remove("num_experts");
    });
    assert!(
        matches!(
            err,
            LoadError::MissingField {
                field: "num_experts"
            }
        ),
        "{err}"
    );
    for (field, value) in [
        ("norm_topk_prob", serde_json::json!(true)),
        ("routed_scaling_factor", serde_json::json!(2.5)),
        ("router_num_group", serde_json::json!(8)),
        ("moe_router_score_function", serde_json::json!("sigmoid")),
        ("attention_bias", serde_json::json!(true)),
        ("clip_qkv", serde_json::json!(8.0)),
        (
            "rope_scaling",
            serde_json::json!({"type": "yarn", "factor": 4.0}),
        ),
    ] {
        let err = config_error(|v| v[field] = value.clone());
        assert!(unsupported(field, &err), "{field}: {err}");
    }
    // The reference indexes a list: a number is the wrong type, named.
    let err = config_error(|v| v["moe_layer_freq"] = serde_json::json!(2));
    assert!(
        matches!(&err, LoadError::ConfigField { field, .. } if field == "moe_layer_freq"),
        "{err}"
    );
    for (field, value) in [
        ("num_experts_per_tok", serde_json::json!(1000)),
        ("num_experts", serde_json::json!(-1)),
        ("expert_intermediate_size", serde_json::json!(0)),
        ("moe_layer_freq", serde_json::json!([1])),
        ("moe_layer_freq", serde_json::json!([2, 1])),
        ("partial_rotary_factor", serde_json::json!(0.0)),
    ] {
        let err = config_error(|v| v[field] = value.clone());
        assert!(invalid(field, &err), "{field} = {value}: {err}");
    }
    // A dense layer needs the dense width.
    let err = config_error(|v| {
        v["moe_layer_freq"] = serde_json::json!([0, 1]);
        v["dense_intermediate_size"] = serde_json::json!(-1);
    });
    assert!(invalid("dense_intermediate_size", &err), "{err}");
    // LLaDA-8B's config (d_model, model_type "llada") is still LLaDA.
    let llada = std::fs::read_to_string(fixture("tiny-llada/config.json")).unwrap();
    assert_eq!(Config::from_json(&llada).unwrap().family, Family::Llada);
    // The release's config.json has no mask id: its vocabulary's 156895 is taken.
    let text = std::fs::read_to_string(llada_moe_model().join("config.json")).unwrap();
    let mut value: serde_json::Value = serde_json::from_str(&text).unwrap();
    value.as_object_mut().unwrap().remove("mask_token_id");
    value["vocab_size"] = 157_184.into();
    assert_eq!(
        Config::from_value(value).unwrap().mask_token_id,
        Some(156_895)
    );
}

/// A configuration claiming a trillion layers allocates nothing per layer: the checkpoint's
/// third layer is the first missing tensor. A mixture changed by hand to choose no expert is
/// refused when the model loads, not a panic in the forward pass.
#[test]
fn hostile_llada_moe_configurations_are_typed_errors() {
    let text = std::fs::read_to_string(llada_moe_model().join("config.json")).unwrap();
    let mut value: serde_json::Value = serde_json::from_str(&text).unwrap();
    value.as_object_mut().unwrap().remove("moe_layer_freq");
    value["num_hidden_layers"] = (1u64 << 40).into();
    let config = Config::from_value(value).unwrap();
    let index = llada_moe_model().join("model.safetensors.index.json");
    let err = Model::from_safetensors(config, &index).unwrap_err();
    assert!(
        matches!(&err, LoadError::MissingTensor { name, .. } if name.starts_with("model.layers.2.")),
        "{err}"
    );
    let mut config = Config::from_file(llada_moe_model().join("config.json")).unwrap();
    config.moe.as_mut().unwrap().experts_per_token = 0;
    let err = Model::from_safetensors(config, &index).unwrap_err();
    assert!(
        matches!(
            err,
            LoadError::InvalidConfig {
                field: "num_experts_per_tok",
                ..
            }
        ),
        "{err}"
    );
}

/// What llama.cpp's `llada-moe` cannot express is not written into a file of that name; a
/// file of ours or llama.cpp's is written again with its experts' three dimensions.
#[test]
fn the_gguf_writer_refuses_what_llada_moe_files_cannot_hold_and_rewrites_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let variants = fixture("tiny-llada-moe-variants");
    let config = Config::from_file(variants.join("config.json")).unwrap();
    let out = dir.path().join("variants.gguf");
    let err = write_checkpoint(
        &config,
        &variants.join("model.safetensors"),
        FileType::F32,
        &[],
        &out,
    )
    .unwrap_err();
    assert!(matches!(err, LoadError::Unsupported { .. }), "{err}");
    assert!(!out.exists(), "nothing half-written");
    // llama.cpp's Q8_0 file, written again as Q8_0 (its tensors copied): the same dims and
    // the same logits.
    let source = fixture("tiny-llada-moe/gguf/tiny-llada-moe-q8_0.gguf");
    let file = llada_ndarray::gguf::GgufFile::open(&source).unwrap();
    let again = dir.path().join("again.gguf");
    let written = llada_ndarray::gguf::requantize(&file, FileType::Q8_0, &[], &again).unwrap();
    let up = written
        .tensors
        .iter()
        .find(|t| t.name == "blk.1.ffn_up_exps.weight")
        .unwrap();
    assert_eq!(up.dims, [128, 32, 8]);
    let case = &golden_cases_in(
        &fixture("tiny-llada-moe/gguf/reference_logits.safetensors"),
        "q8_0.",
    )[0];
    let model = Arc::new(Model::load(&again).unwrap());
    let options = ContextOptions::default()
        .with_threads(2)
        .with_dequantized_products();
    let mut context = Context::with_options(model, options).unwrap();
    let got = logits(&mut context, &case.ids, &case.mask, case.batch, case.seq);
    assert!(max_abs_diff(&got, &case.logits) < 1e-4);
    // The fused layout is read, not rewritten: a clear refusal.
    let fused = fixture("tiny-llada-moe/gguf/tiny-llada-moe-q8_0-fused.gguf");
    let file = llada_ndarray::gguf::GgufFile::open(&fused).unwrap();
    let err = llada_ndarray::gguf::requantize(&file, FileType::Q8_0, &[], &again).unwrap_err();
    assert!(
        matches!(
            err,
            LoadError::Unsupported {
                field: "ffn_gate_up_exps",
                ..
            }
        ),
        "{err}"
    );
}

/// A configuration claiming more experts than the checkpoint has is refused before anything
/// is packed, naming the router whose shape differs.
#[test]
fn a_checkpoint_with_other_experts_is_refused_naming_the_tensor() {
    let mut config = Config::from_file(llada_moe_model().join("config.json")).unwrap();
    let experts = config.moe.as_ref().unwrap().experts;
    config.moe.as_mut().unwrap().experts = experts + 1;
    let index = llada_moe_model().join("model.safetensors.index.json");
    let err = Model::from_safetensors(config.clone(), &index).unwrap_err();
    assert!(
        matches!(&err, LoadError::TensorShape { name, expected, .. }
            if name == "model.layers.0.mlp.gate.weight" && expected[0] == experts + 1),
        "{err}"
    );
}

/// The optional pieces of LLaDA-MoE's configuration that the release does not use, honoured
/// as the reference computes them: a dense first layer (`moe_layer_freq`), a shared expert,
/// a router expert bias (in the choice and in the weights), partial rotary embeddings and
/// grouped-query attention (tests/fixtures/make_llada_moe_variants.py, random weights, a
/// direct transcription of the reference's forward pass).
#[test]
fn the_optional_pieces_of_the_config_are_computed_as_the_reference_does() {
    let dir = fixture("tiny-llada-moe-variants");
    let model = Arc::new(Model::load(&dir).unwrap());
    let c = model.config();
    let moe = c.moe.as_ref().unwrap();
    assert_eq!(moe.layers.as_deref(), Some(&[false, true][..]));
    assert!(moe.expert_bias && moe.shared_expert_hidden_size.is_some());
    assert_eq!(c.rotary_dim * 2, c.head_dim);
    let case = &golden_cases_of(&dir)[0];
    let mut context = Context::with_threads(Arc::clone(&model), 2).unwrap();
    let got = logits(&mut context, &case.ids, &case.mask, case.batch, case.seq);
    let diff = max_abs_diff(&got, &case.logits);
    eprintln!("variants: max |diff| {diff:e}");
    assert!(diff < 1e-4, "{diff}");
    // Each piece matters: without it, the logits are another model's.
    let text = std::fs::read_to_string(dir.join("config.json")).unwrap();
    type Edit = fn(&mut serde_json::Value);
    let edits: [(&str, Edit); 2] = [
        ("full rotary", |v| v["partial_rotary_factor"] = 1.0.into()),
        ("no dense layer", |v| {
            v["moe_layer_freq"] = serde_json::json!([1, 1])
        }),
    ];
    for (what, edit) in edits {
        let mut value: serde_json::Value = serde_json::from_str(&text).unwrap();
        edit(&mut value);
        let config = Config::from_value(value).unwrap();
        match Model::from_safetensors(config, dir.join("model.safetensors")) {
            Ok(model) => {
                let mut context = Context::with_threads(Arc::new(model), 2).unwrap();
                let got = logits(&mut context, &case.ids, &case.mask, case.batch, case.seq);
                assert!(max_abs_diff(&got, &case.logits) > 1e-2, "{what}");
            }
            // The dense layer's tensors are not a mixture's: refused, naming one.
            Err(err) => assert!(
                matches!(err, LoadError::MissingTensor { .. }),
                "{what}: {err}"
            ),
        }
    }
}
