//! The LLaDA2.x family on the ndarray backend, on the bundled LLaDA2-shaped model
//! (`tests/fixtures/tiny-llada2`, saved as the release is): its logits against transformers'
//! own `Glm4MoeForCausalLM` (the same router, shared expert, dense first layer, per-head q/k
//! norms and partial rotary embedding) with the block-causal mask and without it; the exact
//! prefix cache against uncached passes at every step a generation asks for; LLaDA2.0's and
//! LLaDA2.1's decoding against our PyTorch transcriptions of their `generate`, token for token
//! and pass for pass; the `llada2` GGUF files; and the configuration's checks.

mod common;

use std::ops::ControlFlow;
use std::sync::Arc;

use common::max_abs_diff;
use llada_core::{
    BlockGrid, CacheMode, Canvas, CommitRule, Editing, ForwardRequest, GenerateParams,
    MaskPredictor, StepEvent, WorkspaceBuf, WorkspaceSizes, generate,
};
use llada_ndarray::gguf::{FileType, write_checkpoint};
use llada_ndarray::{
    Config, Context, ContextOptions, Family, ForwardError, Kernel, LoadError, LoadOptions, Model,
    Quantization,
};
use llada_test_support::{llada2_model, safetensors_tensor};

/// The fixture's block length (its `golden_logits.safetensors` metadata says so too).
const BLOCK: usize = 8;

fn model() -> Arc<Model> {
    Arc::new(Model::load(llada2_model()).unwrap())
}

/// `case{n}`'s ids (`[batch, seq]`) from the golden file.
fn case_ids(n: usize) -> (usize, usize, Vec<u32>) {
    let (shape, ids) = safetensors_tensor(
        &llada2_model().join("golden_logits.safetensors"),
        &format!("case{n}.input_ids"),
    );
    (shape[0], shape[1], ids.iter().map(|&v| v as u32).collect())
}

fn golden_logits(name: &str) -> Option<Vec<f32>> {
    let path = llada2_model().join("golden_logits.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensor(name).ok()?;
    Some(
        safetensors_tensor(&path, name)
            .1
            .iter()
            .map(|&v| v as f32)
            .collect(),
    )
}

fn forward(context: &mut Context, request: &ForwardRequest<'_>) -> Vec<f32> {
    let vocab = context.model().config().embedding_size;
    let mut out = vec![f32::NAN; request.logits_len(vocab)];
    context.forward(request, &mut out).unwrap();
    out
}

#[test]
fn llada2_logits_match_transformers_glm4_moe_within_1e4_block_causal_and_bidirectional() {
    let model = model();
    let c = model.config();
    assert_eq!(c.family, Family::Llada2);
    assert!(c.block_causal && c.fused_qkv && c.qk_norm && !c.qkv_bias && !c.attn_out_bias);
    assert_eq!(c.rotary_dim * 2, c.head_dim, "partial_rotary_factor 0.5");
    let moe = c.moe.as_ref().unwrap();
    assert!(
        !moe.is_moe_layer(0) && moe.is_moe_layer(1),
        "first_k_dense_replace 1"
    );
    assert!(moe.expert_bias && moe.normalize_weights && moe.shared_expert_hidden_size.is_some());
    assert_eq!(moe.weight_scale, 2.5);
    assert_eq!(model.weights_dtype(), "bf16");
    assert!(model.weights_bytes() as f64 <= 1.05 * model.checkpoint_bytes() as f64);
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
            for n in 0..3 {
                let (batch, seq, ids) = case_ids(n);
                let block_causal = ForwardRequest::new(&ids, batch, seq)
                    .unwrap()
                    .with_block_causal(BLOCK)
                    .unwrap();
                let want = golden_logits(&format!("case{n}.logits_block8")).unwrap();
                let diff = max_abs_diff(&forward(&mut context, &block_causal), &want);
                eprintln!("{kernel}, {threads} threads, case{n} block-causal: {diff:e}");
                assert!(diff < 1e-4, "{kernel} case{n} block-causal: {diff}");
                if let Some(want) = golden_logits(&format!("case{n}.logits_bidirectional")) {
                    let plain = ForwardRequest::new(&ids, batch, seq).unwrap();
                    let diff = max_abs_diff(&forward(&mut context, &plain), &want);
                    eprintln!("{kernel}, {threads} threads, case{n} bidirectional: {diff:e}");
                    assert!(diff < 1e-4, "{kernel} case{n} bidirectional: {diff}");
                }
            }
        }
    }
}

/// Runs every pass on the cached context and on an uncached one, and keeps the largest
/// difference between their logits.
struct Twin {
    cached: Context,
    plain: Context,
    worst: f32,
    cached_passes: usize,
}

impl MaskPredictor for Twin {
    type Error = ForwardError;

    fn vocab_size(&self) -> usize {
        self.cached.vocab_size()
    }

    fn max_sequence_length(&self) -> usize {
        self.cached.max_sequence_length()
    }

    fn block_causal(&self) -> bool {
        self.cached.block_causal()
    }

    fn forward(
        &mut self,
        request: &ForwardRequest<'_>,
        logits: &mut [f32],
    ) -> Result<(), ForwardError> {
        self.cached.forward(request, logits)?;
        self.cached_passes += usize::from(request.cache().is_some());
        let mut plain = ForwardRequest::new(request.ids(), request.batch(), request.seq_len())?
            .with_window(request.window())?;
        if let Some(block) = request.block_causal() {
            plain = plain.with_block_causal(block)?;
        }
        let mut want = vec![0.0; logits.len()];
        self.plain.forward(&plain, &mut want)?;
        self.worst = self.worst.max(max_abs_diff(logits, &want));
        Ok(())
    }
}

/// The generate_golden.json of the fixture.
fn golden() -> serde_json::Value {
    let text = std::fs::read_to_string(llada2_model().join("generate_golden.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Our parameters for one of the golden file's configurations.
fn params_of(conf: &serde_json::Value) -> GenerateParams {
    let number = |key: &str| conf[key].as_f64().unwrap_or_else(|| panic!("{key}"));
    let size = |key: &str| number(key) as usize;
    let base = GenerateParams::llada2()
        .with_gen_length(size("gen_length"))
        .with_block_length(size("block_length"))
        .with_mask_id(size("mask_id") as u32)
        .with_eos_id(size("eos_id") as u32)
        .with_eot_id(size("eos_id") as u32)
        .with_temperature(number("temperature") as f32)
        .with_commit(CommitRule::Llada2(number("threshold")))
        .with_cache(CacheMode::Prefix);
    assert_eq!(base.grid, BlockGrid::Absolute);
    match conf["algorithm"].as_str().unwrap() {
        "llada2.0" => {
            assert_eq!(size("minimal_topk"), 1, "LLaDA2.0's minimal_topk is 1 here");
            assert_eq!(conf["eos_early_stop"], false);
            // LLaDA2.0 stops after a block holding end of text, whatever eos_early_stop says.
            base.with_steps(size("steps")).with_stop_at_eos(true)
        }
        "llada2.1" => base
            .with_editing(Some(Editing {
                threshold: number("editing_threshold"),
                max_post_steps: size("max_post_steps"),
                num_to_transfer: size("num_to_transfer"),
            }))
            .with_stop_at_eos(conf["eos_early_stop"].as_bool().unwrap()),
        other => panic!("unknown algorithm {other}"),
    }
}

/// One pass as the golden file logs it: absolute block, positions committed from masks and
/// positions edited, sorted.
type Pass = (usize, Vec<u32>, Vec<u32>);

/// Generates from `prompt` with `predictor`; returns the output cut after the first EOS (as
/// the reference returns it), the forward passes and the log of passes.
fn decode<P: MaskPredictor>(
    predictor: &mut P,
    params: &GenerateParams,
    prompt: &[u32],
) -> (Vec<u32>, usize, Vec<Pass>)
where
    P::Error: std::fmt::Debug,
{
    let len = params.canvas_len(prompt.len());
    let mut tokens = vec![0; len];
    let canvas =
        Canvas::from_prompts(&mut tokens, prompt, 1, len - prompt.len(), params.mask_id).unwrap();
    let vocab = predictor.vocab_size();
    let mut ws =
        WorkspaceBuf::new(&WorkspaceSizes::for_generation(params, 1, prompt.len(), vocab).unwrap());
    let mut passes = Vec::new();
    let block = params.block_length;
    let mut observer = |e: &StepEvent<'_>| {
        let mut masked = e.committed(0).to_vec();
        masked.sort_unstable();
        let mut edited = e.edited(0).to_vec();
        edited.sort_unstable();
        passes.push((e.block_span().start / block, masked, edited));
        ControlFlow::Continue(())
    };
    let stats = generate(predictor, params, canvas, ws.as_workspace(), &mut observer).unwrap();
    let mut output = tokens[prompt.len()..prompt.len() + params.gen_length].to_vec();
    if let Some(eos) = output.iter().position(|&t| t == params.eos_id) {
        output.truncate(eos + 1);
    }
    (output, stats.forward_passes, passes)
}

fn golden_passes(result: &serde_json::Value) -> Vec<Pass> {
    let ids = |v: &serde_json::Value| -> Vec<u32> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect()
    };
    result["passes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["block"].as_u64().unwrap() as usize,
                ids(&p["masked"]),
                ids(&p["edited"]),
            )
        })
        .collect()
}

#[test]
fn llada2_decoding_equals_the_reference_transcriptions_token_for_token_and_pass_for_pass() {
    let golden = golden();
    let model = model();
    let mut context = Context::with_threads(model.clone(), 2).unwrap();
    let configs = golden["configs"].as_object().unwrap();
    // The eval items, and the out-of-distribution ones on which LLaDA2.1 edits most.
    let stress = golden["stress_items"].as_array().unwrap();
    let items: Vec<&serde_json::Value> = golden["items"]
        .as_array()
        .unwrap()
        .iter()
        .chain(stress)
        .collect();
    assert!(items.len() >= 20 && !stress.is_empty());
    let (mut edits, mut early, mut uncached_checked) = (0usize, 0usize, 0usize);
    for (name, conf) in configs {
        let params = params_of(conf);
        for &item in &items {
            let prompt: Vec<u32> = item["prompt_ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as u32)
                .collect();
            let want = &item["results"][name];
            let (output, forward_passes, passes) = decode(&mut context, &params, &prompt);
            let want_output: Vec<u32> = want["output_ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as u32)
                .collect();
            let index = format!("{} {}", item["kind"], item["index"]);
            assert_eq!(output, want_output, "{name}, item {index}: output");
            assert_eq!(
                passes,
                golden_passes(want),
                "{name}, item {index}: the passes"
            );
            assert_eq!(
                forward_passes as u64,
                want["forward_passes"].as_u64().unwrap(),
                "{name}, item {index}: forward passes"
            );
            edits += passes.iter().map(|p| p.2.len()).sum::<usize>();
            early += usize::from(output.len() < params.gen_length);
            // The reference runs every pass uncached: so do we, on a sample.
            if uncached_checked < 6 {
                let plain = params.with_cache(CacheMode::None);
                let again = decode(&mut context, &plain, &prompt);
                assert_eq!(
                    (again.0, again.2),
                    (want_output, golden_passes(want)),
                    "{name}, item {index}: uncached"
                );
                uncached_checked += 1;
            }
        }
    }
    eprintln!("{edits} edits, {early} answers ended by EOS before gen_length");
    assert!(edits > 0, "the golden configurations exercise editing");
    assert!(early > 0, "some answers end at EOS");
}

#[test]
fn the_prefix_cache_is_exact_at_every_step_a_generation_asks_for() {
    let golden = golden();
    let model = model();
    let mut twin = Twin {
        cached: Context::with_threads(model.clone(), 2).unwrap(),
        plain: Context::with_threads(model, 2).unwrap(),
        worst: 0.0,
        cached_passes: 0,
    };
    let conf = &golden["configs"]["llada21_edit"];
    let params = params_of(conf);
    for item in golden["items"].as_array().unwrap().iter().take(8) {
        let prompt: Vec<u32> = item["prompt_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        decode(&mut twin, &params, &prompt);
    }
    eprintln!(
        "{} cached passes, largest difference from the uncached pass {:e}",
        twin.cached_passes, twin.worst
    );
    assert!(twin.cached_passes > 20);
    assert!(twin.worst < 1e-4, "{}", twin.worst);
}

#[test]
fn a_cache_that_no_longer_matches_the_tokens_is_not_used() {
    // The same context serves a canvas, then another whose first block differs: the second
    // pass must not reuse the first one's keys and values.
    let model = model();
    let mut cached = Context::with_threads(model.clone(), 2).unwrap();
    let mut plain = Context::with_threads(model, 2).unwrap();
    let (_, seq, ids) = case_ids(2);
    let window = 2 * BLOCK..3 * BLOCK;
    let hint = |span: std::ops::Range<usize>| llada_core::CacheHint {
        mode: CacheMode::Prefix,
        span,
        refresh: false,
    };
    let mut changed = ids.clone();
    changed[1] = changed[2];
    let all = vec![1u8; seq];
    let mut padded = all.clone();
    padded[..2].fill(0);
    // The same tokens, then a token changed in the first block, then the same tokens with
    // their first two hidden as padding: each must be computed afresh where it differs.
    for (tokens, mask, label) in [
        (&ids, &all, "first"),
        (&changed, &all, "changed first block"),
        (&changed, &padded, "padding"),
    ] {
        let request = |cache: bool| {
            let r = ForwardRequest::new(tokens, 1, seq)
                .unwrap()
                .with_attention_mask(mask)
                .unwrap()
                .with_window(window.clone())
                .unwrap()
                .with_block_causal(BLOCK)
                .unwrap();
            if cache {
                r.with_cache(hint(window.clone())).unwrap()
            } else {
                r
            }
        };
        let got = forward(&mut cached, &request(true));
        let want = forward(&mut plain, &request(false));
        assert!(max_abs_diff(&got, &want) < 1e-4, "{label}");
    }
}

#[test]
fn llada2_gguf_files_hold_the_model_and_load_quantized() {
    let model = model();
    let dir = tempfile::tempdir().unwrap();
    let config = model.config().clone();
    let index = llada2_model().join("model.safetensors.index.json");
    let (batch, seq, ids) = case_ids(0);
    let request = ForwardRequest::new(&ids, batch, seq)
        .unwrap()
        .with_block_causal(BLOCK)
        .unwrap();
    let options = ContextOptions::default()
        .with_threads(2)
        .with_dequantized_products();
    let reference = forward(
        &mut Context::with_options(model.clone(), options).unwrap(),
        &request,
    );
    let spread = reference
        .chunks_exact(config.embedding_size)
        .map(|row| {
            let (lo, hi) = row
                .iter()
                .fold((f32::INFINITY, f32::NEG_INFINITY), |(l, h), &v| {
                    (l.min(v), h.max(v))
                });
            hi - lo
        })
        .fold(f32::INFINITY, f32::min);
    let argmax = |row: &[f32]| {
        row.iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map(|(i, _)| i)
    };
    let vocab = config.embedding_size;
    // F32: the checkpoint's numbers; Q8_0 within 2% of the smallest row spread everywhere;
    // Q4_K_M (on rows of 128 most tensors fall back to Q5_0) within 10% of it at nine
    // positions in ten: a router near a tie may send a position to other experts, which
    // moves its logits further (measured: median 0.2, one position of 30 at 3.3, spread ~8).
    // The argmax stays at 90% of the positions or more.
    for (file_type, bound, outliers) in [
        (FileType::F32, 1e-5, 0),
        (FileType::Q8_0, 0.02, 0),
        (FileType::Q4KM, 0.1, seq / 10),
    ] {
        let path = dir.path().join(format!("tiny-llada2-{file_type:?}.gguf"));
        let written = write_checkpoint(&config, &index, file_type, &[], &path).unwrap();
        let names: Vec<&str> = written.tensors.iter().map(|t| t.name.as_str()).collect();
        for name in [
            "blk.0.attn_qkv.weight",
            "blk.0.attn_q_norm.weight",
            "blk.0.ffn_gate.weight",
            "blk.1.ffn_gate_inp.weight",
            "blk.1.exp_probs_b.bias",
            "blk.1.ffn_gate_exps.weight",
            "blk.1.ffn_down_shexp.weight",
        ] {
            assert!(names.contains(&name), "{file_type:?}: {name} in {names:?}");
        }
        let loaded = Arc::new(Model::load(&path).unwrap());
        assert_eq!(
            (
                loaded.config().family,
                loaded.config().moe.clone(),
                loaded.config().rotary_dim
            ),
            (Family::Llada2, config.moe.clone(), config.rotary_dim)
        );
        let got = forward(
            &mut Context::with_options(loaded.clone(), options).unwrap(),
            &request,
        );
        let diff = max_abs_diff(&got, &reference);
        eprintln!(
            "{file_type:?}: {} bytes, max |diff| {diff:e} ({:.2}% of the smallest row spread)",
            written.bytes,
            100.0 * diff / spread
        );
        let beyond = got
            .chunks_exact(vocab)
            .zip(reference.chunks_exact(vocab))
            .filter(|(a, b)| max_abs_diff(a, b) > bound * spread.max(1.0))
            .count();
        assert!(
            beyond <= outliers,
            "{file_type:?}: {beyond} positions beyond {bound} of the spread (largest {diff})"
        );
        let same = got
            .chunks_exact(vocab)
            .zip(reference.chunks_exact(vocab))
            .filter(|(a, b)| argmax(a) == argmax(b))
            .count();
        assert!(
            same * 10 >= 9 * seq,
            "{file_type:?}: the argmax of {same} of {seq} positions"
        );
        assert!(loaded.weights_bytes() as f64 <= 1.05 * loaded.checkpoint_bytes() as f64);
    }
    // Quantized while loading the checkpoint: the same products as the Q8_0 file's.
    let q8 = Arc::new(
        Model::load_with(
            llada2_model(),
            &LoadOptions::default().with_quantize(Some(Quantization::Q8_0)),
        )
        .unwrap(),
    );
    let got = forward(&mut Context::with_options(q8, options).unwrap(), &request);
    assert!(max_abs_diff(&got, &reference) <= 0.02 * spread.max(1.0));
}

#[test]
fn llada2_configurations_are_checked_by_name() {
    let text = std::fs::read_to_string(llada2_model().join("config.json")).unwrap();
    let base: serde_json::Value = serde_json::from_str(&text).unwrap();
    let with = |key: &str, value: serde_json::Value| {
        let mut c = base.clone();
        c[key] = value;
        Config::from_value(c)
    };
    let field_of = |r: Result<Config, LoadError>| match r {
        Err(LoadError::ConfigField { field, .. }) => field,
        Err(LoadError::InvalidConfig { field, .. } | LoadError::Unsupported { field, .. }) => {
            field.to_string()
        }
        other => panic!("expected a config error, got {other:?}"),
    };
    assert_eq!(field_of(with("n_group", 3.into())), "n_group");
    assert_eq!(field_of(with("topk_group", 0.into())), "topk_group");
    assert_eq!(
        field_of(with("score_function", "softmax".into())),
        "score_function"
    );
    assert_eq!(
        field_of(with("partial_rotary_factor", 1.5.into())),
        "partial_rotary_factor"
    );
    let mut no_dense_width = base.clone();
    no_dense_width
        .as_object_mut()
        .unwrap()
        .remove("intermediate_size");
    assert_eq!(
        field_of(Config::from_value(no_dense_width)),
        "intermediate_size"
    );
    // The output bias follows `use_bias` (the class's default is true): a checkpoint
    // without it is refused by the tensor's name.
    let mut with_bias = base.clone();
    with_bias["use_bias"] = true.into();
    let config = Config::from_value(with_bias).unwrap();
    let err = Model::from_safetensors(config, llada2_model().join("model.safetensors.index.json"))
        .unwrap_err();
    assert!(err.to_string().contains("attention.dense.bias"), "{err}");
}
