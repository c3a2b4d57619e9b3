//! Seed inputs of every target, small and valid (or nearly), from which the fuzzer mutates;
//! `tests/replay.rs` writes them to `tests/fuzz/corpus/<target>/` and replays them.

use llada_ndarray::gguf::{GgufWriter, TensorType, Value};
use llada_test_support::{bundled_model, fixture};

fn bundled(name: &str) -> Vec<u8> {
    std::fs::read(bundled_model().join(name)).expect("a bundled file")
}

/// A GGUF file of a model 32 wide with one layer and an 8-token byte-level vocabulary: F32
/// norms, F16 and Q8_0 matrices, a tokenizer and a chat template in its metadata. Of
/// architecture `llada`, or `dream` (with F32 q/k/v biases and Qwen2's pre-tokenizer), or
/// `llada-moe` (per-head q/k norms, an F32 router and two Q8_0 experts of width 32 in
/// llama.cpp's 3-D tensors; with `fused`, their gate and up rows in one `ffn_gate_up_exps`).
fn tiny_gguf(arch: &str) -> Vec<u8> {
    moe_gguf(arch, false)
}

fn moe_gguf(arch: &str, fused: bool) -> Vec<u8> {
    let (d, hd, mlp, vocab) = (32u64, 16u64, 32u64, 8u64);
    let dream = arch == "dream";
    let moe = arch == "llada-moe";
    let experts = 2u64;
    let mut w = GgufWriter::new();
    let key = |name: &str| format!("{arch}.{name}");
    for (k, v) in [
        ("general.architecture".to_string(), Value::String(arch.into())),
        (key("context_length"), Value::Uint(16)),
        (key("embedding_length"), Value::Uint(d)),
        (key("block_count"), Value::Uint(1)),
        (key("feed_forward_length"), Value::Uint(mlp)),
        (key("attention.head_count"), Value::Uint(d / hd)),
        (key("attention.head_count_kv"), Value::Uint(1)),
        (key("rope.freq_base"), Value::Float(10000.0)),
        (key("attention.layer_norm_rms_epsilon"), Value::Float(1e-5)),
        ("tokenizer.ggml.model".into(), Value::String("gpt2".into())),
        (
            "tokenizer.ggml.pre".into(),
            Value::String(if dream { "qwen2" } else { "gpt-2" }.into()),
        ),
        (
            "tokenizer.ggml.tokens".into(),
            Value::Array(
                ["a", "b", "Ġ", "ab", "<|startoftext|>", "<|endoftext|>", "<|mdm_mask|>", "<|eot_id|>"]
                    .iter()
                    .map(|t| Value::String((*t).into()))
                    .collect(),
            ),
        ),
        (
            "tokenizer.ggml.token_type".into(),
            Value::Array([1, 1, 1, 1, 3, 3, 3, 3].iter().map(|&t| Value::Int(t)).collect()),
        ),
        ("tokenizer.ggml.merges".into(), Value::Array(vec![Value::String("a b".into())])),
        ("tokenizer.ggml.bos_token_id".into(), Value::Uint(4)),
        ("tokenizer.ggml.eos_token_id".into(), Value::Uint(5)),
        ("tokenizer.ggml.mask_token_id".into(), Value::Uint(6)),
        (
            "tokenizer.chat_template".into(),
            Value::String(
                "{{ bos_token }}{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}<|eot_id|>{% endfor %}"
                    .into(),
            ),
        ),
    ] {
        w.metadata(k, v);
    }
    if moe {
        w.metadata(key("expert_count"), Value::Uint(experts));
        w.metadata(key("expert_used_count"), Value::Uint(1));
        w.metadata(key("expert_feed_forward_length"), Value::Uint(mlp));
    }
    let f16 = |n: u64| -> Vec<u8> {
        (0..n)
            .flat_map(|i| half_bits((i % 7) as f32 / 16.0 - 0.2).to_le_bytes())
            .collect()
    };
    let q8_0 = |rows: u64, cols: u64| -> Vec<u8> {
        let mut out = Vec::new();
        for i in 0..rows * cols / 32 {
            out.extend_from_slice(&half_bits(0.01).to_le_bytes());
            out.extend((0..32).map(|j| ((i + j) % 50) as u8));
        }
        out
    };
    let ones = |n: u64| -> Vec<u8> { (0..n).flat_map(|_| 1.0f32.to_le_bytes()).collect() };
    w.tensor(
        "token_embd.weight",
        &[d, vocab],
        TensorType(8),
        q8_0(vocab, d),
    );
    w.tensor("blk.0.attn_norm.weight", &[d], TensorType::F32, ones(d));
    if dream {
        let small = |n: u64| -> Vec<u8> {
            (0..n)
                .flat_map(|i| ((i % 5) as f32 / 100.0).to_le_bytes())
                .collect()
        };
        w.tensor("blk.0.attn_q.bias", &[d], TensorType::F32, small(d));
        w.tensor("blk.0.attn_k.bias", &[hd], TensorType::F32, small(hd));
        w.tensor("blk.0.attn_v.bias", &[hd], TensorType::F32, small(hd));
    }
    w.tensor("blk.0.attn_q.weight", &[d, d], TensorType::F16, f16(d * d));
    w.tensor(
        "blk.0.attn_k.weight",
        &[d, hd],
        TensorType::F16,
        f16(d * hd),
    );
    w.tensor(
        "blk.0.attn_v.weight",
        &[d, hd],
        TensorType::F16,
        f16(d * hd),
    );
    w.tensor(
        "blk.0.attn_output.weight",
        &[d, d],
        TensorType::F16,
        f16(d * d),
    );
    w.tensor("blk.0.ffn_norm.weight", &[d], TensorType::F32, ones(d));
    if moe {
        w.tensor("blk.0.attn_q_norm.weight", &[hd], TensorType::F32, ones(hd));
        w.tensor("blk.0.attn_k_norm.weight", &[hd], TensorType::F32, ones(hd));
        w.tensor(
            "blk.0.ffn_gate_inp.weight",
            &[d, experts],
            TensorType::F32,
            ones(d * experts),
        );
        if fused {
            w.tensor(
                "blk.0.ffn_gate_up_exps.weight",
                &[d, 2 * mlp, experts],
                TensorType(8),
                q8_0(2 * mlp * experts, d),
            );
        } else {
            for name in ["blk.0.ffn_gate_exps.weight", "blk.0.ffn_up_exps.weight"] {
                w.tensor(
                    name,
                    &[d, mlp, experts],
                    TensorType(8),
                    q8_0(mlp * experts, d),
                );
            }
        }
        w.tensor(
            "blk.0.ffn_down_exps.weight",
            &[mlp, d, experts],
            TensorType(8),
            q8_0(d * experts, mlp),
        );
    } else {
        w.tensor(
            "blk.0.ffn_gate.weight",
            &[d, mlp],
            TensorType::F16,
            f16(d * mlp),
        );
        w.tensor(
            "blk.0.ffn_up.weight",
            &[d, mlp],
            TensorType::F16,
            f16(d * mlp),
        );
        w.tensor(
            "blk.0.ffn_down.weight",
            &[mlp, d],
            TensorType::F16,
            f16(mlp * d),
        );
    }
    w.tensor("output_norm.weight", &[d], TensorType::F32, ones(d));
    w.tensor("output.weight", &[d, vocab], TensorType(8), q8_0(vocab, d));
    let mut out = Vec::new();
    w.write_to(&mut out).expect("in memory");
    out
}

/// f32 to f16 bits (the values here are exact in f16).
fn half_bits(v: f32) -> u16 {
    let bits = v.to_bits();
    let sign = ((bits >> 16) & 0x8000) as u16;
    let exp = ((bits >> 23) & 0xff) as i32 - 127 + 15;
    if v == 0.0 || exp <= 0 {
        return sign;
    }
    sign | ((exp as u16) << 10) | ((bits >> 13) & 0x3ff) as u16
}

/// A safetensors file: an 8-byte header length, a JSON header, the data.
fn safetensors_file(header: &str, data: &[u8]) -> Vec<u8> {
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}

/// A `chat` input: the tokenizer_config.json and (role, content) messages.
fn chat_input(tokenizer_config: &[u8], messages: &[(&str, &str)]) -> Vec<u8> {
    let mut out = (tokenizer_config.len() as u16).to_le_bytes().to_vec();
    out.extend_from_slice(tokenizer_config);
    for (role, content) in messages {
        out.push(role.len() as u8);
        out.extend_from_slice(role.as_bytes());
        out.extend_from_slice(&(content.len() as u16).to_le_bytes());
        out.extend_from_slice(content.as_bytes());
    }
    out
}

/// A `c_abi` input: the bundled model's lengths (16 tokens, 16 steps, blocks of 8) with the
/// given commit rule and cache, a mode and a prompt.
fn c_abi_input(commit: u32, cache: u32, mode: u8, prompt: &str) -> Vec<u8> {
    let mut out = vec![2u8]; // the ndarray backend
    out.extend_from_slice(&0u32.to_le_bytes()); // execution provider
    out.push(5); // quantize: none
    out.extend_from_slice(&1u32.to_le_bytes()); // threads
    for v in [16u32, 16, 8, 0, 5 * 7, 5 * 7, 5 * 7, 0, commit, cache] {
        out.extend_from_slice(&v.to_le_bytes()); // steps .. cache (ids: from the model)
    }
    out.extend_from_slice(&7u64.to_le_bytes()); // seed
    for v in [0.0f32, 0.0, 1.0] {
        out.extend_from_slice(&v.to_le_bytes()); // temperature, cfg, top_p
    }
    out.extend_from_slice(&0.9f64.to_le_bytes()); // commit value
    out.extend_from_slice(&0u32.to_le_bytes()); // max passes per block
    out.extend_from_slice(&[0, 0, 0]); // flags
    out.push(mode);
    out.extend_from_slice(&256u32.to_le_bytes()); // capacity
    out.extend_from_slice(&[255, 0]); // cancel after, no callback
    out.extend_from_slice(prompt.as_bytes());
    out
}

/// A `sampler` input: one row, a 3-token prompt, greedy, commit rule `commit` (0 the
/// schedule, 1 a threshold of 115/128, 3 the entropy bound), steps = `gen_length`; `special`
/// is the logits' byte (3: a few NaN/inf; its top bit asks for LLaDA2's block diffusion, with
/// editing on odd seeds).
fn sampler_input(
    vocab: u32,
    gen_length: u32,
    block: u32,
    commit: u8,
    seed: u64,
    special: u8,
) -> Vec<u8> {
    let mut out = Vec::new();
    let u32s = |out: &mut Vec<u8>, values: &[u32]| {
        for v in values {
            out.extend_from_slice(&v.to_le_bytes());
        }
    };
    u32s(&mut out, &[vocab - 2, 39, 0]); // vocabulary, 40 tokens at most, one row
    u32s(&mut out, &[gen_length, gen_length, block, 1, 2, 3]); // steps, lengths, mask/eos/eot
    u32s(&mut out, &[0]); // low-confidence remasking
    out.push(commit);
    if commit != 0 {
        out.extend_from_slice(&[1, 115]); // the rule's value: 115/128
    }
    u32s(&mut out, &[0]); // no cache
    out.extend_from_slice(&[1, 1, 2, 64]); // temperature 0, cfg 0, top_p 1
    u32s(&mut out, &[0]); // top_k off
    out.extend_from_slice(&seed.to_le_bytes());
    u32s(&mut out, &[0]); // no pass cap
    out.extend_from_slice(&[0, 0, 0]); // flags off
    u32s(&mut out, &[2, 4, 5, 6, 0]); // a 3-token prompt, pad id 0
    out.extend_from_slice(&seed.rotate_left(17).to_le_bytes()); // the logits' seed
    out.extend_from_slice(&[special, 0]); // the logits' byte; steps as given
    out
}

/// Every seed: (target, file name, bytes).
pub fn seeds() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    let config = bundled("config.json");
    let tokenizer_config = bundled("tokenizer_config.json");
    let real_template = {
        let text = std::fs::read_to_string(fixture("llada-8b-instruct/tokenizer_config.json"))
            .expect("the LLaDA-8B tokenizer config");
        let value: serde_json::Value = serde_json::from_str(&text).expect("JSON");
        serde_json::json!({
            "chat_template": value["chat_template"],
            "bos_token": value["bos_token"],
            "eos_token": value["eos_token"],
        })
        .to_string()
        .into_bytes()
    };
    let gguf = tiny_gguf("llada");
    let header = r#"{"model.transformer.wte.weight":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},"__metadata__":{"format":"pt"}}"#;
    vec![
        ("gguf", "tiny-f16-q8_0.gguf", gguf.clone()),
        ("gguf", "header-only.gguf", gguf[..200.min(gguf.len())].to_vec()),
        ("gguf", "tiny-dream.gguf", tiny_gguf("dream")),
        ("gguf", "tiny-llada-moe.gguf", moe_gguf("llada-moe", false)),
        ("gguf", "tiny-llada-moe-fused.gguf", moe_gguf("llada-moe", true)),
        ("safetensors", "one-tensor.safetensors", safetensors_file(header, &[0; 16])),
        (
            "safetensors",
            "bf16.safetensors",
            safetensors_file(
                r#"{"model.transformer.ln_f.weight":{"dtype":"BF16","shape":[128],"data_offsets":[0,256]}}"#,
                &[0x3f; 256],
            ),
        ),
        ("config", "bundled.json", config.clone()),
        (
            "config",
            "dream.json",
            std::fs::read(fixture("tiny-dream/config.json")).expect("the Dream fixture's config"),
        ),
        (
            "config",
            "llada-moe.json",
            std::fs::read(fixture("tiny-llada-moe/config.json"))
                .expect("the LLaDA-MoE fixture's config"),
        ),
        ("config", "mqa.json", {
            let mut v: serde_json::Value = serde_json::from_slice(&config).expect("JSON");
            v["multi_query_attention"] = true.into();
            v.as_object_mut().expect("object").remove("n_kv_heads");
            v.to_string().into_bytes()
        }),
        (
            "chat",
            "bundled.bin",
            chat_input(&tokenizer_config, &[("user", "reverse:pen,frog,rock")]),
        ),
        (
            "chat",
            "llada-8b.bin",
            chat_input(
                &real_template,
                &[("system", "Be brief."), ("user", "Hi"), ("assistant", "Hello!"), ("user", "2+2?")],
            ),
        ),
        (
            "chat",
            "loop.bin",
            chat_input(
                br#"{"chat_template":"{% for i in range(1000000) %}{% for j in range(1000000) %}x{% endfor %}{% endfor %}"}"#,
                &[("user", "x")],
            ),
        ),
        ("c_abi", "text.bin", c_abi_input(0, 0, 0, "reverse:pen,frog,rock")),
        ("c_abi", "chat-threshold-dual.bin", c_abi_input(1, 2, 1, "sort:lamp,fox")),
        ("c_abi", "template.bin", c_abi_input(0, 0, 2, "user")),
        ("c_abi", "tokenize.bin", c_abi_input(0, 0, 3, "copy:a,b <|eot_id|>")),
        ("sampler", "schedule.bin", sampler_input(12, 8, 4, 0, 1, 3)),
        ("sampler", "threshold.bin", sampler_input(20, 6, 3, 1, 2, 3)),
        ("sampler", "entropy.bin", sampler_input(6, 4, 2, 3, 3, 3)),
        ("sampler", "llada2.bin", sampler_input(12, 7, 4, 0, 4, 128 | 3)),
        ("sampler", "llada21.bin", sampler_input(12, 7, 4, 0, 5, 128)),
    ]
}
