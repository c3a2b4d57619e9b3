//! The hot kernels of the ndarray backend at the shapes of the mid-size benchmark model
//! (d_model 1024, mlp 2816, vocab 32000): the matrix products of a block and of the LM head,
//! single- and two-threaded, f32 and bf16 weights, and two-threaded with block-quantized
//! weights; RMSNorm + rotary embedding and attention at 256 and 1024 tokens; and a whole forward pass of the bundled tiny model. The sampler's
//! softmax/argmax over a 126,464-wide vocabulary is in `llada-core`'s `sampler` bench.

use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use llada_core::ForwardRequest;
use llada_ndarray::Quantization;
use llada_ndarray::bench::{Layer, matmul, pack, pack_quantized, threads};
use llada_ndarray::{Config, Family};

fn values(len: usize) -> Vec<f32> {
    (0..len)
        .map(|i| ((i * 2_654_435_761) % 1000) as f32 / 1000.0 - 0.5)
        .collect()
}

fn matmuls(c: &mut Criterion) {
    let tokens = 256;
    let shapes = [
        ("qkv", 3072, 1024),
        ("attn_out", 1024, 1024),
        ("gate_up", 5632, 1024),
        ("ff_out", 1024, 2816),
        ("lm_head_window32", 32000, 1024),
    ];
    let mut group = c.benchmark_group("matmul");
    group.sample_size(10);
    for threads_n in [1, 2] {
        let pool = threads(threads_n);
        for (name, n, k) in shapes {
            let m = if name.starts_with("lm_head") {
                32
            } else {
                tokens
            };
            let a = values(m * k);
            for bf16 in [false, true] {
                let w = pack(&values(n * k), n, k, bf16);
                let mut out = vec![0.0; m * n];
                group.throughput(Throughput::Elements((2 * m * n * k) as u64));
                let id = format!(
                    "{name}/{m}x{k}x{n}/{}/{threads_n}t",
                    if bf16 { "bf16" } else { "f32" }
                );
                group.bench_function(id, |b| b.iter(|| matmul(&pool, &a, m, &w, &mut out)));
            }
        }
    }
    group.finish();
}

/// The same products with block-quantized weights, two threads: a block's 256 tokens, a
/// 32-token dual-cache step, and a 32-token window of the LM head. `widened`: blocks widened
/// to f32 inside the kernel; `integer`: multiplied in integers (AVX-512 VNNI only; the row is
/// left out elsewhere).
fn quantized_matmuls(c: &mut Criterion) {
    let shapes = [
        ("gate_up", 256, 5632, 1024),
        ("gate_up", 32, 5632, 1024),
        ("ff_out", 256, 1024, 2816),
        ("lm_head_window32", 32, 32000, 1024),
    ];
    let mut group = c.benchmark_group("matmul_quantized");
    group.sample_size(10);
    let widened = threads(2);
    let integer = threads(2).with_integer_products();
    for (name, m, n, k) in shapes {
        let a = values(m * k);
        let w = values(n * k);
        let mut out = vec![0.0; m * n];
        for format in Quantization::ALL {
            let packed = pack_quantized(&w, n, k, format);
            group.throughput(Throughput::Elements((2 * m * n * k) as u64));
            for (path, pool) in [("widened", &widened), ("integer", &integer)] {
                if path == "integer" && !pool.integer_products() {
                    continue;
                }
                let id = format!("{name}/{m}x{k}x{n}/{format}/{path}/2t");
                group.bench_function(id, |b| b.iter(|| matmul(pool, &a, m, &packed, &mut out)));
            }
        }
    }
    group.finish();
}

/// The mid-size benchmark model's configuration (d_model 1024, 16 heads of 64).
fn mid_config() -> Config {
    Config {
        family: Family::Llada,
        d_model: 1024,
        n_heads: 16,
        n_kv_heads: 16,
        head_dim: 64,
        n_layers: 12,
        mlp_hidden_size: 2816,
        vocab_size: 32000,
        embedding_size: 32000,
        rope_theta: 500_000.0,
        rms_norm_eps: 1e-5,
        max_sequence_length: 4096,
        weight_tying: false,
        qkv_bias: false,
        rotary_dim: 64,
        shifted_logits: false,
        mask_token_id: None,
        eos_token_id: None,
        pad_token_id: None,
        qk_norm: false,
        fused_qkv: false,
        attn_out_bias: false,
        block_causal: false,
        moe: None,
    }
}

fn layer_kernels(c: &mut Criterion) {
    let config = mid_config();
    let (d, width) = (config.d_model, 3 * config.d_model);
    let mut group = c.benchmark_group("layer");
    group.sample_size(10);
    for threads_n in [1, 2] {
        let mut layer = Layer::new(config.clone(), threads_n);
        for tokens in [256, 1024] {
            let x = values(tokens * d);
            let weight = values(d);
            let mut h = vec![0.0; tokens * d];
            let mut qkv = values(tokens * width);
            group.throughput(Throughput::Elements(tokens as u64));
            group.bench_function(format!("rms_norm_rope/{tokens}/{threads_n}t"), |b| {
                b.iter(|| layer.norm_rope(&x, &weight, &mut h, &mut qkv, tokens))
            });
            let qkv = values(tokens * width);
            let mut out = vec![0.0; tokens * d];
            // q·kᵀ and p·v: 2 · 2 · tokens² · d_model.
            group.throughput(Throughput::Elements((4 * tokens * tokens * d) as u64));
            group.bench_function(format!("attention/{tokens}/{threads_n}t"), |b| {
                b.iter(|| layer.attention(&qkv, tokens, &mut out))
            });
        }
    }
    group.finish();
}

fn tiny_forward(c: &mut Criterion) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/tiny-llada");
    let model = Arc::new(llada_ndarray::Model::load(dir).unwrap());
    let mut context = llada_ndarray::Context::with_threads(Arc::clone(&model), 2).unwrap();
    let vocab = model.config().embedding_size;
    let ids: Vec<u32> = (0..64).map(|i| 100 + i).collect();
    let request = ForwardRequest::new(&ids, 1, 64)
        .unwrap()
        .with_window(48..64)
        .unwrap();
    let mut logits = vec![0.0; request.logits_len(vocab)];
    c.bench_function("tiny_model_forward/64_tokens/window16/2t", |b| {
        b.iter(|| context.forward(&request, &mut logits).unwrap())
    });
}

criterion_group!(
    benches,
    matmuls,
    quantized_matmuls,
    layer_kernels,
    tiny_forward
);
criterion_main!(benches);
