//! Integer products: Q8_0, Q4_0, Q4_K and Q6_K weights multiplied with activations quantized to 8-bit
//! blocks of 32 (the AVX-512 VNNI, AVX2 and NEON kernels, whose sums equal their plain-Rust
//! reference bit for bit, see the unit tests in src/gemm/int8; `LLADA_KERNEL=avx2` runs this
//! test with the AVX2 one on an AVX-512 host; on aarch64 the `sdot` kernel runs where the CPU
//! has dotprod and the widening one elsewhere, qemu's `max` and Cortex-A72 CPUs). Against the same weights widened to f32:
//! the activations' rounding moves each logit by at most [`MAX_SHIFT`] of its row's spread
//! (max − min), and the argmax of at least 99% of positions stays where it was. Models: the
//! bundled one's llama.cpp Q8_0 and Q4_0 files, the second fixture model's Q4_K_M file, and
//! its F16 file quantized to each format while loading; the LLaDA-MoE fixture's Q8_0 and
//! Q4_K_M files (experts multiplied one by one; a position whose near-tied experts the rounding
//! reorders runs another expert, so for a mixture at most 1% of the positions may move more).

mod common;

use std::sync::Arc;

use common::golden_cases;
use llada_core::ForwardRequest;
use llada_ndarray::{Context, ContextOptions, Kernel, LoadOptions, Model, Quantization};
use safetensors::SafeTensors;

/// The documented bound: the largest move of a logit, as a fraction of its row's spread.
const MAX_SHIFT: f32 = 0.02;

/// A batch of inputs: ids, batch, sequence length, attention mask.
type Input = (Vec<u32>, usize, usize, Vec<u8>);

fn tiny_inputs() -> Vec<Input> {
    golden_cases()
        .into_iter()
        .map(|c| (c.ids, c.batch, c.seq, c.mask))
        .collect()
}

fn moe_inputs() -> Vec<Input> {
    common::golden_cases_of(&llada_test_support::llada_moe_model())
        .into_iter()
        .map(|c| (c.ids, c.batch, c.seq, c.mask))
        .collect()
}

fn small_inputs() -> Vec<Input> {
    let dir = llada_test_support::fixture("small-llada/gguf");
    let bytes = std::fs::read(dir.join("reference_logits.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let ints = |name: &str| common::i64s(&st, name);
    (0..3)
        .map(|case| {
            let (shape, ids) = ints(&format!("case{case}.input_ids"));
            let (_, mask) = ints(&format!("case{case}.attention_mask"));
            (
                ids.iter().map(|&i| i as u32).collect(),
                shape[0],
                shape[1],
                mask.iter().map(|&m| m as u8).collect(),
            )
        })
        .collect()
}

fn logits(
    model: &Arc<Model>,
    options: ContextOptions,
    input: &Input,
) -> (Vec<f32>, Option<&'static str>) {
    let (ids, batch, seq, mask) = input;
    let mut context = Context::with_options(Arc::clone(model), options).unwrap();
    // Every kernel family but the portable one has integer kernels.
    let expected = if options.dequantized_products {
        None
    } else {
        common::expected_integer_kernel(context.kernel())
    };
    assert_eq!(context.integer_kernel(), expected);
    let request = ForwardRequest::new(ids, *batch, *seq)
        .unwrap()
        .with_attention_mask(mask)
        .unwrap();
    let mut out = vec![0.0; batch * seq * model.config().embedding_size];
    context.forward(&request, &mut out).unwrap();
    (out, context.integer_kernel())
}

#[test]
fn integer_products_move_logits_within_their_bound_and_keep_the_argmax() {
    let tiny = llada_test_support::fixture("tiny-llada/gguf");
    let small = llada_test_support::fixture("small-llada/gguf/small-llada-f16.gguf");
    let small_file = llada_ndarray::gguf::GgufFile::open(&small).unwrap();
    let moe = llada_test_support::fixture("tiny-llada-moe/gguf");
    let quantized = |q| {
        let options = LoadOptions::default().with_quantize(Some(q));
        Model::from_gguf_file_with(&small_file, &options).unwrap()
    };
    let models = [
        (
            "tiny Q8_0 (llama.cpp)",
            Model::from_gguf(tiny.join("tiny-llada-q8_0.gguf")).unwrap(),
            tiny_inputs(),
        ),
        (
            "tiny Q4_0 (llama.cpp)",
            Model::from_gguf(tiny.join("tiny-llada-q4_0.gguf")).unwrap(),
            tiny_inputs(),
        ),
        (
            "small Q8_0 (at load)",
            quantized(Quantization::Q8_0),
            small_inputs(),
        ),
        (
            "small Q4_0 (at load)",
            quantized(Quantization::Q4_0),
            small_inputs(),
        ),
        (
            "small Q4_K (at load)",
            quantized(Quantization::Q4K),
            small_inputs(),
        ),
        (
            "small Q6_K (at load)",
            quantized(Quantization::Q6K),
            small_inputs(),
        ),
        (
            "small Q4_K_M (llama.cpp)",
            Model::from_gguf(small.with_file_name("small-llada-q4_k_m.gguf")).unwrap(),
            small_inputs(),
        ),
        // A mixture of experts: each expert's rows are quantized apart from the others'.
        (
            "tiny LLaDA-MoE Q8_0 (llama.cpp)",
            Model::from_gguf(moe.join("tiny-llada-moe-q8_0.gguf")).unwrap(),
            moe_inputs(),
        ),
        (
            "tiny LLaDA-MoE Q4_K_M (llama.cpp)",
            Model::from_gguf(moe.join("tiny-llada-moe-q4_k_m.gguf")).unwrap(),
            moe_inputs(),
        ),
    ];
    let integer = ContextOptions::default().with_threads(2);
    let widened = integer.with_dequantized_products();
    for (name, model, inputs) in models {
        let model = Arc::new(model);
        let vocab = model.config().embedding_size;
        let (mut rows, mut same, mut worst, mut kernel) = (0usize, 0usize, 0.0f32, None);
        let mut over = 0usize;
        for input in &inputs {
            let (got, used) = logits(&model, integer, input);
            kernel = used;
            if used.is_none() {
                eprintln!(
                    "the {} kernel has no integer products: nothing to compare",
                    Kernel::detect()
                );
                return;
            }
            let (want, _) = logits(&model, widened, input);
            for (g, w) in got.chunks_exact(vocab).zip(want.chunks_exact(vocab)) {
                let (shift, spread) = common::shift_and_spread(g, w);
                worst = worst.max(shift / spread);
                over += usize::from(shift / spread > MAX_SHIFT);
                rows += 1;
                same += usize::from(common::argmax(g) == common::argmax(w));
            }
        }
        eprintln!(
            "{name}: largest move {worst:.4} of a row's spread; argmax kept at {same}/{rows} ({} kernel)",
            kernel.unwrap()
        );
        if model.config().moe.is_none() {
            assert!(
                worst <= MAX_SHIFT,
                "{name}: a logit moved {worst} of its row's spread"
            );
        } else {
            // A mixture's routing is a comparison: where the activations' rounding reorders a
            // near-tie among a token's best experts, that token runs another expert and its
            // logits move further (llama.cpp's integer products do the same). At most 1% of
            // the positions; the others within the bound.
            eprintln!("{name}: {over}/{rows} positions past the bound (another expert chosen)");
            assert!(
                over * 100 <= rows,
                "{name}: {over}/{rows} positions moved past {MAX_SHIFT} of their spread"
            );
        }
        assert!(
            same * 100 >= rows * 99,
            "{name}: argmax kept at {same}/{rows} positions"
        );
    }
}
