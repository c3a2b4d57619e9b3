//! GGUF files: the bundled model written the way llama.cpp's converter writes it (q/k rows
//! permuted for its rotary layout) loads and gives the safetensors model's logits, and every
//! kind of malformed file is a typed error, never a panic or an allocation the file asks for.

mod common;

use std::sync::Arc;

use common::{golden_cases, max_abs_diff};
use llada_core::ForwardRequest;
use llada_ndarray::gguf::{GgufError, GgufFile, GgufWriter, TensorType, Value};
use llada_ndarray::{Context, ContextOptions, LoadError, Model};
use llada_test_support::bundled_model;
use safetensors::SafeTensors;

/// llama.cpp's `permute` for its rotary layout: within each head, row `t·hd/2 + i` moves to
/// `2i + t`.
fn permute(rows: &[Vec<f32>], heads: usize) -> Vec<Vec<f32>> {
    let hd = rows.len() / heads;
    let half = hd / 2;
    let mut out = rows.to_vec();
    for h in 0..heads {
        for t in 0..2 {
            for i in 0..half {
                out[h * hd + 2 * i + t] = rows[h * hd + t * half + i].clone();
            }
        }
    }
    out
}

/// The bundled model as a GGUF file in llama.cpp's layout (f32), with `edit` applied to the
/// writer's inputs before writing.
fn bundled_as_gguf(edit: impl FnOnce(&mut Vec<(String, Value)>, &mut Vec<Tensor>)) -> Vec<u8> {
    let bytes = std::fs::read(bundled_model().join("model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let config: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(bundled_model().join("config.json")).unwrap(),
    )
    .unwrap();
    let u = |k: &str| config[k].as_u64().unwrap();
    let (n_heads, n_kv) = (u("n_heads") as usize, u("n_kv_heads") as usize);
    let matrix = |name: &str| -> (Vec<Vec<f32>>, usize) {
        let t = st.tensor(name).unwrap();
        let cols = *t.shape().last().unwrap();
        let values: Vec<f32> = t
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        (values.chunks(cols).map(<[f32]>::to_vec).collect(), cols)
    };
    let mut tensors: Vec<Tensor> = Vec::new();
    let mut add = |gguf: String, rows: Vec<Vec<f32>>, cols: usize, vector: bool| {
        let data: Vec<u8> = rows
            .iter()
            .flatten()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let dims = if vector {
            vec![cols as u64]
        } else {
            vec![cols as u64, rows.len() as u64]
        };
        tensors.push(Tensor {
            name: gguf,
            dims,
            ty: TensorType::F32,
            data,
        });
    };
    let t = |n: &str| format!("model.transformer.{n}.weight");
    let (wte, d) = matrix(&t("wte"));
    add("token_embd.weight".into(), wte, d, false);
    for i in 0..u("n_layers") {
        let b = |n: &str| format!("model.transformer.blocks.{i}.{n}.weight");
        for (ours, theirs, heads) in [
            ("attn_norm", "attn_norm", None),
            ("q_proj", "attn_q", Some(n_heads)),
            ("k_proj", "attn_k", Some(n_kv)),
            ("v_proj", "attn_v", None),
            ("attn_out", "attn_output", None),
            ("ff_norm", "ffn_norm", None),
            ("ff_proj", "ffn_gate", None),
            ("up_proj", "ffn_up", None),
            ("ff_out", "ffn_down", None),
        ] {
            let (mut rows, cols) = matrix(&b(ours));
            if let Some(heads) = heads {
                rows = permute(&rows, heads);
            }
            let vector = ours.ends_with("norm");
            add(format!("blk.{i}.{theirs}.weight"), rows, cols, vector);
        }
    }
    let (ln_f, d) = matrix(&t("ln_f"));
    add("output_norm.weight".into(), ln_f, d, true);
    let (head, d) = matrix(&t("ff_out"));
    add("output.weight".into(), head, d, false);
    let mut metadata: Vec<(String, Value)> = vec![
        ("general.architecture".into(), Value::String("llada".into())),
        (
            "llada.context_length".into(),
            Value::Uint(u("max_sequence_length")),
        ),
        ("llada.embedding_length".into(), Value::Uint(u("d_model"))),
        ("llada.block_count".into(), Value::Uint(u("n_layers"))),
        (
            "llada.feed_forward_length".into(),
            Value::Uint(u("mlp_hidden_size")),
        ),
        (
            "llada.attention.head_count".into(),
            Value::Uint(n_heads as u64),
        ),
        (
            "llada.attention.head_count_kv".into(),
            Value::Uint(n_kv as u64),
        ),
        (
            "llada.rope.freq_base".into(),
            Value::Float(config["rope_theta"].as_f64().unwrap()),
        ),
        (
            "llada.attention.layer_norm_rms_epsilon".into(),
            Value::Float(config["rms_norm_eps"].as_f64().unwrap()),
        ),
    ];
    edit(&mut metadata, &mut tensors);
    let mut writer = GgufWriter::new();
    for (k, v) in metadata {
        writer.metadata(k, v);
    }
    for t in tensors {
        writer.tensor(t.name, &t.dims, t.ty, t.data);
    }
    let mut out = Vec::new();
    writer.write_to(&mut out).unwrap();
    out
}

struct Tensor {
    name: String,
    dims: Vec<u64>,
    ty: TensorType,
    data: Vec<u8>,
}

fn write_temp(bytes: &[u8]) -> tempfile::NamedTempFile {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    std::io::Write::write_all(&mut file, bytes).unwrap();
    file
}

fn logits(model: Arc<Model>) -> Vec<Vec<f32>> {
    common::golden_case_logits(&model)
}

#[test]
fn a_gguf_in_llama_cpps_layout_gives_the_safetensors_models_logits() {
    let file = write_temp(&bundled_as_gguf(|_, _| {}));
    let gguf = Arc::new(Model::from_gguf(file.path()).unwrap());
    let reference = Arc::new(Model::load(bundled_model()).unwrap());
    let (a, b) = (gguf.config(), reference.config());
    assert_eq!(
        (
            a.d_model,
            a.n_heads,
            a.n_kv_heads,
            a.n_layers,
            a.mlp_hidden_size
        ),
        (
            b.d_model,
            b.n_heads,
            b.n_kv_heads,
            b.n_layers,
            b.mlp_hidden_size
        )
    );
    assert_eq!(
        (a.embedding_size, a.max_sequence_length),
        (b.embedding_size, b.max_sequence_length)
    );
    // The file stores eps as f32, which is how the kernels use it.
    assert_eq!(a.rms_norm_eps as f32, b.rms_norm_eps as f32);
    for (a, b) in logits(gguf.clone()).iter().zip(logits(reference)) {
        assert!(max_abs_diff(a, &b) < 1e-5, "{}", max_abs_diff(a, &b));
    }
    // Resident weights: the file's size, the map released.
    let ratio = gguf.weights_bytes() as f64 / gguf.checkpoint_bytes() as f64;
    assert!(ratio <= 1.05, "weights take {ratio:.3} x the file");
}

/// The files llama.cpp's converter and `llama-quantize` made from the bundled model
/// (tests/fixtures/make_gguf.py), each against PyTorch logits of the weights the `gguf` Python
/// package dequantizes from the same file: the kernels widen the blocks inside the matrix
/// product, so they compute with exactly those weights.
#[test]
fn llama_cpps_files_give_the_logits_of_their_weights() {
    let dir = llada_test_support::fixture("tiny-llada/gguf");
    let bytes = std::fs::read(dir.join("reference_logits.safetensors")).unwrap();
    let reference = SafeTensors::deserialize(&bytes).unwrap();
    let cases = golden_cases();
    for ty in ["f32", "f16", "q8_0", "q4_0"] {
        let path = dir.join(format!("tiny-llada-{ty}.gguf"));
        let model = Arc::new(Model::from_gguf(&path).unwrap());
        for (i, got) in logits(model.clone()).iter().enumerate() {
            let view = reference.tensor(&format!("{ty}.case{i}.logits")).unwrap();
            let want: Vec<f32> = view
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            assert_eq!(got.len(), want.len(), "{ty} case{i}");
            let diff = max_abs_diff(got, &want);
            eprintln!("{ty} case{i}: max |diff| {diff:e}");
            assert!(diff < 1e-4, "{ty} case{i}: max |diff| {diff}");
        }
        assert_eq!(cases.len(), 3);
        // Quantized weights stay quantized: resident weights are the file's size.
        let ratio = model.weights_bytes() as f64 / model.checkpoint_bytes() as f64;
        assert!(ratio <= 1.05, "{ty}: weights take {ratio:.3} x the file");
    }
}

/// Loads `bytes` as a GGUF model and returns the error.
fn load_error(bytes: &[u8]) -> LoadError {
    let file = write_temp(bytes);
    Model::from_gguf(file.path()).unwrap_err()
}

fn gguf_error(bytes: &[u8]) -> GgufError {
    match load_error(bytes) {
        LoadError::Gguf { source, .. } => source,
        other => panic!("expected a GGUF format error, got {other}"),
    }
}

#[test]
fn malformed_files_are_typed_errors() {
    let good = bundled_as_gguf(|_, _| {});
    // Bad magic, unknown version.
    let mut bad = good.clone();
    bad[..4].copy_from_slice(b"GGML");
    assert!(matches!(gguf_error(&bad), GgufError::Magic { .. }));
    let mut bad = good.clone();
    bad[4..8].copy_from_slice(&7u32.to_le_bytes());
    assert_eq!(gguf_error(&bad), GgufError::Version(7));
    assert!(matches!(gguf_error(b"GG"), GgufError::Magic { .. }));
    // Truncated anywhere: in the header, in the metadata, in the tensor data.
    for cut in [10, 30, 300, good.len() / 2, good.len() - 1] {
        let err = load_error(&good[..cut]);
        assert!(matches!(err, LoadError::Gguf { .. }), "cut at {cut}: {err}");
    }
    // Absurd counts: more tensors or metadata entries than the file could hold.
    for at in [8, 16] {
        let mut bad = good.clone();
        bad[at..at + 8].copy_from_slice(&(u64::MAX / 3).to_le_bytes());
        assert!(
            matches!(gguf_error(&bad), GgufError::Count { .. }),
            "count at {at}"
        );
    }
    // A string that claims to be longer than the file (the first key's length).
    let mut bad = good.clone();
    bad[24..32].copy_from_slice(&(1u64 << 50).to_le_bytes());
    assert!(matches!(gguf_error(&bad), GgufError::Truncated { .. }));
    // An array claiming 2^40 elements.
    let bomb = bundled_as_gguf(|metadata, _| {
        metadata.push(("x.list".into(), Value::Array(vec![Value::Uint(1); 3])));
    });
    let pattern = [3u8, 0, 0, 0, 0, 0, 0, 0];
    let at = bomb
        .windows(8)
        .rposition(|w| w == pattern)
        .expect("the array's count");
    let mut bad = bomb.clone();
    bad[at..at + 8].copy_from_slice(&(1u64 << 40).to_le_bytes());
    assert!(matches!(gguf_error(&bad), GgufError::Count { .. }));
}

#[test]
fn bad_tensors_are_typed_errors_naming_the_tensor() {
    // A tensor past the end of the file, and one misaligned.
    let shifted = |shift: u64| {
        bundled_as_gguf(|_, tensors| {
            // Grow the last tensor's declared size past what is written: its dims say more.
            let last = tensors.last_mut().unwrap();
            last.dims[1] += shift;
        })
    };
    let err = gguf_error(&shifted(1000));
    assert!(
        matches!(&err, GgufError::Tensor { name, reason } if name == "output.weight" && reason.contains("past the end")),
        "{err}"
    );
    // A misaligned data offset: patch the first tensor's offset to 1.
    let good = bundled_as_gguf(|_, _| {});
    let file = write_temp(&good);
    let parsed = GgufFile::open(file.path()).unwrap();
    let first = &parsed.tensors()[1];
    let name_at = good
        .windows(first.name.len())
        .position(|w| w == first.name.as_bytes())
        .unwrap();
    let offset_at = name_at + first.name.len() + 4 + 8 * first.dims.len() + 4;
    let mut bad = good.clone();
    bad[offset_at..offset_at + 8].copy_from_slice(&1u64.to_le_bytes());
    let err = gguf_error(&bad);
    assert!(
        matches!(&err, GgufError::Tensor { reason, .. } if reason.contains("alignment")),
        "{err}"
    );

    // An unknown or unsupported tensor type, a missing tensor, a shape the metadata
    // contradicts, another architecture.
    let err = load_error(&bundled_as_gguf(|_, tensors| {
        tensors[3].ty = TensorType(9); // Q8_1: 32 values in 36 bytes
        tensors[3].data = vec![0; 36 * tensors[3].data.len() / 4 / 32];
    }));
    assert!(
        matches!(&err, LoadError::Dtype { name, dtype } if name == "blk.0.attn_k.weight" && dtype == "Q8_1"),
        "{err}"
    );
    let err = load_error(&bundled_as_gguf(|_, tensors| {
        tensors.retain(|t| t.name != "blk.2.ffn_up.weight");
    }));
    assert!(
        matches!(&err, LoadError::MissingTensor { name, .. } if name == "blk.2.ffn_up.weight"),
        "{err}"
    );
    let err = load_error(&bundled_as_gguf(|metadata, _| {
        for (k, v) in metadata.iter_mut() {
            if k == "llada.feed_forward_length" {
                *v = Value::Uint(320);
            }
        }
    }));
    assert!(
        matches!(&err, LoadError::TensorShape { name, expected, .. } if name == "blk.0.ffn_gate.weight" && expected == &[320, 128]),
        "{err}"
    );
    let err = load_error(&bundled_as_gguf(|metadata, _| {
        metadata[0].1 = Value::String("llama".into());
    }));
    assert!(
        matches!(
            &err,
            LoadError::Unsupported {
                field: "general.architecture",
                ..
            }
        ),
        "{err}"
    );
    let err = load_error(&bundled_as_gguf(|metadata, _| {
        metadata.retain(|(k, _)| k != "llada.block_count");
    }));
    assert!(
        matches!(
            err,
            LoadError::MissingField {
                field: "llada.block_count"
            }
        ),
        "{err}"
    );
}

/// Set in the child process of [`hostile_headers_are_rejected_within_256_mib`].
const HOSTILE_CHILD: &str = "LLADA_HOSTILE_HEADERS_CHILD";

/// Headers that claim terabytes (tensor counts, string and array lengths, layer counts,
/// widths, sequence lengths) in GGUF files, safetensors files and `config.json`: each is a
/// typed error, or, for a sequence length, costs nothing until a request that long comes,
/// inside a single-threaded child process whose address space is limited to 256 MiB
/// (`ulimit -v`), so an allocation the file asks for would abort it.
#[test]
fn hostile_headers_are_rejected_within_256_mib() {
    if std::env::var_os(HOSTILE_CHILD).is_none() {
        let exe = std::env::current_exe().unwrap();
        let output = std::process::Command::new("sh")
            .arg("-c")
            .arg("ulimit -v 262144 && exec \"$0\" \"$@\"")
            .arg(exe)
            .args([
                "hostile_headers_are_rejected_within_256_mib",
                "--exact",
                "--test-threads=1",
                "--nocapture",
            ])
            .env(HOSTILE_CHILD, "1")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success() && stdout.contains("every hostile header rejected"),
            "child failed ({:?}):\n{stdout}\n{stderr}",
            output.status
        );
        return;
    }
    let huge = 1u64 << 40;
    let set = |key: &'static str, value: u64| {
        move |metadata: &mut Vec<(String, Value)>, _: &mut Vec<Tensor>| {
            for entry in metadata.iter_mut().filter(|e| e.0 == key) {
                entry.1 = Value::Uint(value);
            }
        }
    };
    // GGUF: a trillion layers stops at the first missing one; absurd widths are shapes the
    // tensors contradict.
    let err = load_error(&bundled_as_gguf(set("llada.block_count", huge)));
    assert!(
        matches!(&err, LoadError::MissingTensor { name, .. } if name == "blk.4.attn_norm.weight"),
        "{err}"
    );
    for key in ["llada.feed_forward_length", "llada.embedding_length"] {
        let err = load_error(&bundled_as_gguf(set(key, huge)));
        assert!(
            matches!(
                err,
                LoadError::TensorShape { .. } | LoadError::ConfigField { .. }
            ),
            "{key}: {err}"
        );
    }
    // Counts and lengths in the header.
    let good = bundled_as_gguf(|_, _| {});
    for at in [8, 16, 24] {
        let mut bad = good.clone();
        bad[at..at + 8].copy_from_slice(&(u64::MAX / 3).to_le_bytes());
        assert!(
            matches!(load_error(&bad), LoadError::Gguf { .. }),
            "at {at}"
        );
    }
    // A context length of 2^40 tokens: the model loads and runs short requests; rotary
    // tables and attention scratch grow with the requests, not with the claim.
    let file = write_temp(&bundled_as_gguf(set("llada.context_length", huge)));
    let model = Arc::new(Model::from_gguf(file.path()).unwrap());
    assert_eq!(model.config().max_sequence_length as u64, huge);
    let mut context = Context::with_threads(model, 1).unwrap();
    let ids = [601u32, 604, 10, 11, 12, 603, 603, 603];
    let mut logits = vec![0.0; 8 * 640];
    context
        .forward(&ForwardRequest::new(&ids, 1, 8).unwrap(), &mut logits)
        .unwrap();
    assert!(logits.iter().all(|v| v.is_finite()));

    // safetensors: a header that claims 2^60 bytes, and a tensor that claims 2^40 x 2^40.
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        bundled_model().join("config.json"),
        dir.path().join("config.json"),
    )
    .unwrap();
    let weights = dir.path().join("model.safetensors");
    let mut header = (1u64 << 60).to_le_bytes().to_vec();
    header.extend_from_slice(b"{}");
    std::fs::write(&weights, &header).unwrap();
    let err = Model::load(dir.path()).unwrap_err();
    assert!(matches!(err, LoadError::Safetensors { .. }), "{err}");
    let json = format!(
        r#"{{"model.transformer.wte.weight":{{"dtype":"F32","shape":[{huge},{huge}],"data_offsets":[0,{}]}}}}"#,
        u64::MAX
    );
    let mut file = (json.len() as u64).to_le_bytes().to_vec();
    file.extend_from_slice(json.as_bytes());
    std::fs::write(&weights, &file).unwrap();
    let err = Model::load(dir.path()).unwrap_err();
    assert!(matches!(err, LoadError::Safetensors { .. }), "{err}");

    // config.json over the bundled weights: a trillion layers, a huge width, a huge context.
    std::fs::copy(bundled_model().join("model.safetensors"), &weights).unwrap();
    let config: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(bundled_model().join("config.json")).unwrap(),
    )
    .unwrap();
    for (field, expect_ok) in [
        ("n_layers", false),
        ("d_model", false),
        ("mlp_hidden_size", false),
        ("vocab_size", false),
        ("max_sequence_length", true),
    ] {
        let mut edited = config.clone();
        edited[field] = huge.into();
        if field == "vocab_size" {
            edited["embedding_size"] = huge.into();
        }
        std::fs::write(dir.path().join("config.json"), edited.to_string()).unwrap();
        match Model::load(dir.path()) {
            Ok(model) => {
                assert!(expect_ok, "{field}: loaded");
                let mut context = Context::with_threads(Arc::new(model), 1).unwrap();
                context
                    .forward(&ForwardRequest::new(&ids, 1, 8).unwrap(), &mut logits)
                    .unwrap();
            }
            Err(err) => {
                assert!(!expect_ok, "{field}: {err}");
                assert!(
                    matches!(
                        err,
                        LoadError::MissingTensor { .. }
                            | LoadError::TensorShape { .. }
                            | LoadError::ConfigField { .. }
                    ),
                    "{field}: {err}"
                );
            }
        }
    }
    println!("every hostile header rejected");
}

/// The second fixture model (256 wide, so K-quants apply): llama.cpp's converter made its F16
/// file and `llama-quantize` its Q4_K_M one (Q4_K, and Q6_K for the output layer and two
/// layers' attn_v / ffn_down), against PyTorch logits of the weights gguf-py dequantizes from
/// each file (tests/fixtures/make_gguf.py --model small).
#[test]
fn k_quant_files_give_the_logits_of_their_weights() {
    let dir = llada_test_support::fixture("small-llada/gguf");
    let bytes = std::fs::read(dir.join("reference_logits.safetensors")).unwrap();
    let reference = SafeTensors::deserialize(&bytes).unwrap();
    let tensor = |name: &str| reference.tensor(name).unwrap();
    let ints = |name: &str| -> Vec<i64> {
        tensor(name)
            .data()
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
            .collect()
    };
    for ty in ["f16", "q4_k_m"] {
        let model = Arc::new(Model::from_gguf(dir.join(format!("small-llada-{ty}.gguf"))).unwrap());
        let vocab = model.config().embedding_size;
        // The weights widened to f32 in the kernel: the logits of the dequantized weights
        // (the integer products' bound is in tests/int8.rs).
        let options = ContextOptions::default()
            .with_threads(2)
            .with_dequantized_products();
        let mut context = Context::with_options(Arc::clone(&model), options).unwrap();
        for case in 0..3 {
            let shape = tensor(&format!("case{case}.input_ids")).shape().to_vec();
            let (batch, seq) = (shape[0], shape[1]);
            let ids: Vec<u32> = ints(&format!("case{case}.input_ids"))
                .iter()
                .map(|&i| i as u32)
                .collect();
            let mask: Vec<u8> = ints(&format!("case{case}.attention_mask"))
                .iter()
                .map(|&m| m as u8)
                .collect();
            let request = ForwardRequest::new(&ids, batch, seq)
                .unwrap()
                .with_attention_mask(&mask)
                .unwrap();
            let mut got = vec![0.0; batch * seq * vocab];
            context.forward(&request, &mut got).unwrap();
            let want: Vec<f32> = tensor(&format!("{ty}.case{case}.logits"))
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            let diff = max_abs_diff(&got, &want);
            eprintln!("{ty} case{case}: max |diff| {diff:e}");
            assert!(diff < 1e-4, "{ty} case{case}: max |diff| {diff}");
        }
        let ratio = model.weights_bytes() as f64 / model.checkpoint_bytes() as f64;
        assert!(ratio <= 1.05, "{ty}: weights take {ratio:.3} x the file");
    }
}
