//! GGUF files as whole models: the files llama.cpp's own converter and `llama-quantize` made
//! from the bundled model (tests/fixtures/tiny-llada/gguf, see make_gguf.py), and the files
//! this library writes. One file, nothing beside it: tokenizer, special ids, chat template and
//! decoding lengths come from its metadata.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use llada::core::ErrorKind;
use llada::ndarray::gguf::{FileType, GgufFile, TensorType};
use llada::{BackendChoice, Error, Model, ModelFiles, Pipeline};
use llada_test_support::{bundled_model, eval_set, fixture};

/// The committed llama.cpp files, by type.
const LLAMA_CPP_TYPES: [&str; 4] = ["f32", "f16", "q8_0", "q4_0"];

fn llama_cpp_file(ty: &str) -> PathBuf {
    fixture(&format!("tiny-llada/gguf/tiny-llada-{ty}.gguf"))
}

/// `file` copied alone into a fresh directory, so that nothing beside it can be read.
fn alone(file: &Path) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(file.file_name().unwrap());
    std::fs::copy(file, &path).unwrap();
    (dir, path)
}

fn directory_model() -> Arc<Model> {
    Model::load(bundled_model(), &BackendChoice::Ndarray).unwrap()
}

/// What a user sees of a model's text side must not depend on the file it came from.
fn assert_same_text_side(gguf: &Model, dir: &Model, what: &str) {
    assert_eq!(gguf.special_tokens(), dir.special_tokens(), "{what}");
    assert_eq!(
        gguf.default_params(),
        dir.default_params(),
        "{what}: decoding lengths and special ids"
    );
    assert_eq!(
        gguf.chat_template().map(|t| t.source()),
        dir.chat_template().map(|t| t.source()),
        "{what}"
    );
    for item in &eval_set().items {
        assert_eq!(
            gguf.chat_prompt_ids(&item.prompt).unwrap(),
            item.prompt_ids,
            "{what}: {:?}",
            item.prompt
        );
        assert_eq!(
            gguf.tokenizer().encode(&item.answer).unwrap(),
            item.answer_ids,
            "{what}: {:?}",
            item.answer
        );
        assert_eq!(
            gguf.tokenizer().decode(&item.answer_ids, true).unwrap(),
            item.answer,
            "{what}"
        );
    }
}

#[test]
fn llama_cpps_files_carry_the_tokenizer_and_chat_template() {
    let dir = directory_model();
    for ty in LLAMA_CPP_TYPES {
        let (_keep, path) = alone(&llama_cpp_file(ty));
        let model = Model::load(&path, &BackendChoice::Ndarray).unwrap();
        // llama.cpp's converter writes no decoding lengths: the reference chat settings apply.
        assert!(!model.files().decoding_defaults().declared, "{ty}");
        let same_lengths = llada::DecodingDefaults::default().apply(dir.default_params());
        assert_eq!(model.default_params(), same_lengths, "{ty}");
        assert_eq!(model.special_tokens(), dir.special_tokens(), "{ty}");
        for item in &eval_set().items {
            assert_eq!(
                model.chat_prompt_ids(&item.prompt).unwrap(),
                item.prompt_ids,
                "{ty}: {:?}",
                item.prompt
            );
        }
    }
}

/// llama.cpp's answers on its own files (tests/fixtures/make_gguf.py runs
/// `llama-diffusion-cli` on every eval prompt): per file type, each item's block length and
/// answer text.
fn llama_cpp_answers(model: &str, ty: &str) -> (Vec<usize>, Vec<String>) {
    let path = fixture(&format!("{model}/gguf/llama_cpp_answers.json"));
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let file = &json["files"][ty];
    let blocks = file["block_length"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b.as_u64().unwrap() as usize)
        .collect();
    let answers = file["answers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect();
    (blocks, answers)
}

/// Our answers to `model`'s eval prompts from its GGUF file of type `ty` (alone in a
/// directory) against llama.cpp's on the same file: (same answer, our exact matches).
fn agreement_with_llama_cpp(name: &str, ty: &str) -> (usize, usize) {
    let eval = llada_test_support::EvalSet::load(&fixture(&format!("{name}/eval.json"))).unwrap();
    let (blocks, answers) = llama_cpp_answers(name, ty);
    assert_eq!(answers.len(), eval.items.len());
    let (_keep, path) = alone(&fixture(&format!("{name}/gguf/{name}-{ty}.gguf")));
    let model = Model::load(&path, &BackendChoice::Ndarray).unwrap();
    // One thread each: the test harness runs the four comparisons side by side.
    let mut pipeline = Pipeline::with_threads(model.clone(), Some(1)).unwrap();
    let (mut same, mut exact) = (0, 0);
    for ((item, &block), theirs) in eval.items.iter().zip(&blocks).zip(&answers) {
        assert_eq!(block, if item.prompt_ids.len() % 2 == 0 { 2 } else { 1 });
        let params = pipeline
            .default_params()
            .with_gen_length(16)
            .with_steps(16)
            .with_block_length(block);
        let out = pipeline
            .generate_ids(std::slice::from_ref(&item.prompt_ids), &params, |_| {
                std::ops::ControlFlow::Continue(())
            })
            .unwrap()
            .remove(0);
        // llama.cpp prints every non-special token of the answer positions.
        let ours = model.tokenizer().decode(&out.output_ids, true).unwrap();
        same += usize::from(&ours == theirs);
        exact += usize::from(out.text == item.answer);
    }
    let n = eval.items.len();
    eprintln!("{name} {ty}: same answer as llama.cpp {same}/{n}, exact match {exact}/{n}");
    assert!(
        same * 100 >= 95 * n,
        "{name} {ty}: {same}/{n} answers equal llama.cpp's"
    );
    (same, exact)
}

/// Same file, same schedule: llama.cpp counts blocks from the prompt's end over the whole
/// canvas, so with 16 answer tokens, blocks of 2 after an even-length prompt and of 1 after an
/// odd one, and one token per step, both engines denoise the same positions in the same
/// blocks with the same number of steps. They still differ in one rule: with `--top-k 1`
/// llama.cpp's confidence is 1 for every position and its ties go left, so inside a block of
/// 2 it commits the left token first where LLaDA's low-confidence remasking commits the more
/// probable one.
#[test]
fn answers_match_llama_diffusion_cli_on_the_bundled_models_f32_file() {
    agreement_with_llama_cpp("tiny-llada", "f32");
}

#[test]
fn answers_match_llama_diffusion_cli_on_the_bundled_models_q8_0_file() {
    agreement_with_llama_cpp("tiny-llada", "q8_0");
}

#[test]
fn answers_match_llama_diffusion_cli_on_the_second_models_f16_file() {
    agreement_with_llama_cpp("small-llada", "f16");
}

/// Q4_K_M as `llama-quantize` makes it (Q4_K and Q6_K blocks); the exact match against the
/// eval answers is printed beside the F16 file's.
#[test]
fn answers_match_llama_diffusion_cli_on_the_second_models_q4_k_m_file() {
    agreement_with_llama_cpp("small-llada", "q4_k_m");
}

fn write(files: &ModelFiles, dir: &Path, file_type: FileType) -> PathBuf {
    let out = dir.join(format!("tiny-{file_type}.gguf"));
    let written = files.write_gguf(&out, file_type).unwrap();
    assert_eq!(written.path, out);
    assert_eq!(written.bytes, std::fs::metadata(&out).unwrap().len());
    out
}

#[test]
fn a_written_f32_file_is_the_same_model_as_its_directory() {
    let files = ModelFiles::open(bundled_model(), &BackendChoice::Ndarray).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = write(&files, dir.path(), FileType::F32);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    let gguf = Model::load(&path, &BackendChoice::Ndarray).unwrap();
    let reference = directory_model();
    assert_same_text_side(&gguf, &reference, "f32");
    // The same weights, in the same order after llama.cpp's row interleaving is undone: the
    // same answers, token for token.
    let mut a = Pipeline::new(gguf).unwrap();
    let mut b = Pipeline::new(reference).unwrap();
    let eval = eval_set();
    let params = eval.params(b.default_params());
    for item in eval.items.iter().take(16) {
        let x = a.generate(&item.prompt, &params).unwrap();
        let y = b.generate(&item.prompt, &params).unwrap();
        assert_eq!(x.output_ids, y.output_ids, "{:?}", item.prompt);
    }
}

#[test]
fn every_file_type_gets_llama_cpps_tensor_types_and_answers() {
    let files = ModelFiles::open(bundled_model(), &BackendChoice::Ndarray).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let eval = eval_set();
    let (q8_0, q5_0, q6_k, q4_k) = (TensorType(8), TensorType(6), TensorType(14), TensorType(12));
    for file_type in FileType::ALL {
        let path = write(&files, dir.path(), file_type);
        let file = GgufFile::open(&path).unwrap();
        let ty = |name: &str| file.tensor(name).unwrap().ty;
        // Norms stay f32 in every file.
        assert_eq!(ty("blk.0.attn_norm.weight"), TensorType::F32);
        assert_eq!(ty("output_norm.weight"), TensorType::F32);
        // The bundled model is 128 wide: no row is whole 256-value super-blocks, so the
        // K-quants fall back as llama-quantize does (Q4_K to Q5_0, Q6_K to Q8_0).
        let (matrix, output) = match file_type {
            FileType::F32 => (TensorType::F32, TensorType::F32),
            FileType::F16 => (TensorType::F16, TensorType::F16),
            FileType::Q8_0 => (q8_0, q8_0),
            FileType::Q4_0 => (TensorType(2), q8_0),
            FileType::Q4KM => (q5_0, q8_0),
            FileType::Q6K => (q8_0, q8_0),
            other => panic!("untested file type {other}"),
        };
        assert_eq!(ty("blk.1.attn_q.weight"), matrix, "{file_type}");
        assert_eq!(ty("blk.2.ffn_up.weight"), matrix, "{file_type}");
        assert_eq!(ty("output.weight"), output, "{file_type}");
        assert_ne!(ty("blk.1.attn_q.weight"), q4_k);
        if file_type == FileType::Q4KM {
            // Q4_K_M's extra bits for attn_v and ffn_down go to layers 2 and 3 of 4
            // (llama.cpp's `use_more_bits`; Q6_K, falling back to Q8_0 here).
            assert_eq!(ty("blk.2.attn_v.weight"), q8_0);
            assert_eq!(ty("blk.3.ffn_down.weight"), q8_0);
            assert_eq!(ty("blk.1.ffn_down.weight"), q5_0);
            assert_eq!(ty("blk.1.attn_v.weight"), q5_0);
            assert_ne!(ty("blk.3.ffn_down.weight"), q6_k);
        }
        drop(file);

        let (_keep, alone) = alone(&path);
        let model = Model::load(&alone, &BackendChoice::Ndarray).unwrap();
        assert_eq!(
            model.files().decoding_defaults().gen_length,
            eval.gen_length
        );
        let mut pipeline = Pipeline::new(model).unwrap();
        let params = eval.params(pipeline.default_params());
        let correct = eval
            .items
            .iter()
            .take(40)
            .filter(|item| pipeline.generate(&item.prompt, &params).unwrap().text == item.answer)
            .count();
        // The model answers 247 of 250 in f32; 4-bit weights cost it a few at most.
        assert!(correct >= 36, "{file_type}: {correct}/40");
    }
}

/// A file of the model's shape with random weights (the benchmark's real-scale files): the
/// tensors, types and metadata of the real export, the same bytes for the same seed, other
/// bytes for another, values at the initialisation scale, and a model that loads and runs.
#[test]
fn a_random_file_has_the_exports_tensors_and_metadata_and_its_seeds_bytes() {
    let files = ModelFiles::open(bundled_model(), &BackendChoice::Ndarray).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let real = write(&files, dir.path(), FileType::Q8_0);
    // The same file name (it is written as `general.name`) in three folders.
    let random = |folder: &str, seed: u64| {
        let out = dir.path().join(folder).join("random.gguf");
        std::fs::create_dir(out.parent().unwrap()).unwrap();
        let written = files.write_gguf_random(&out, FileType::F32, seed).unwrap();
        assert_eq!(written.bytes, std::fs::metadata(&out).unwrap().len());
        out
    };
    let (a, b, c) = (random("a", 1), random("b", 1), random("c", 2));
    let bytes = |p: &Path| std::fs::read(p).unwrap();
    assert!(bytes(&a) == bytes(&b), "the same seed wrote other bytes");
    assert!(bytes(&a) != bytes(&c), "another seed wrote the same bytes");
    let q8 = dir.path().join("q8.gguf");
    files.write_gguf_random(&q8, FileType::Q8_0, 1).unwrap();

    let (real, q8, a) = (
        GgufFile::open(&real).unwrap(),
        GgufFile::open(&q8).unwrap(),
        GgufFile::open(&a).unwrap(),
    );
    let table = |f: &GgufFile| {
        f.tensors()
            .iter()
            .map(|t| (t.name.clone(), t.dims.clone(), t.ty))
            .collect::<Vec<_>>()
    };
    assert_eq!(table(&q8), table(&real));
    let keys = |f: &GgufFile| {
        let mut keys: Vec<_> = f.keys().map(str::to_string).collect();
        keys.sort();
        keys
    };
    assert_eq!(keys(&q8), keys(&real));
    for key in [
        "tokenizer.ggml.tokens",
        "tokenizer.chat_template",
        "llada.block_count",
    ] {
        assert_eq!(q8.get(key), real.get(key), "{key}");
    }
    // f32 values: norms 1, matrices uniform with standard deviation 0.02.
    let floats = |name: &str| -> Vec<f32> {
        a.data(a.tensor(name).unwrap())
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect()
    };
    assert!(floats("blk.0.attn_norm.weight").iter().all(|&v| v == 1.0));
    let q = floats("blk.0.attn_q.weight");
    let std = (q.iter().map(|v| v * v).sum::<f32>() / q.len() as f32).sqrt();
    assert!((std - 0.02).abs() < 0.001, "standard deviation {std}");
    assert!(q.iter().all(|v| v.abs() <= 0.0347));
    drop((real, q8, a));

    let (_keep, alone) = alone(&dir.path().join("q8.gguf"));
    let mut pipeline =
        Pipeline::new(Model::load(&alone, &BackendChoice::Ndarray).unwrap()).unwrap();
    let params = pipeline
        .default_params()
        .with_gen_length(8)
        .with_steps(8)
        .with_block_length(8);
    let out = pipeline.generate("reverse:pen,frog,rock", &params).unwrap();
    assert_eq!(out.output_ids.len(), 8);
}

/// Quantizing llama.cpp's F32 file gives the bytes `llama-quantize` wrote for Q8_0 and Q4_0,
/// tensor for tensor, and keeps the file's tokenizer and template.
#[test]
fn requantizing_a_gguf_file_gives_llama_quantizes_bytes() {
    let files = ModelFiles::open(llama_cpp_file("f32"), &BackendChoice::Ndarray).unwrap();
    let dir = tempfile::tempdir().unwrap();
    for (file_type, ty) in [(FileType::Q8_0, "q8_0"), (FileType::Q4_0, "q4_0")] {
        let path = write(&files, dir.path(), file_type);
        let ours = GgufFile::open(&path).unwrap();
        let theirs = GgufFile::open(llama_cpp_file(ty)).unwrap();
        assert_eq!(ours.tensors().len(), theirs.tensors().len());
        for t in theirs.tensors() {
            let o = ours.tensor(&t.name).unwrap();
            assert_eq!((o.ty, &o.dims), (t.ty, &t.dims), "{ty} {}", t.name);
            assert!(
                ours.data(o) == theirs.data(t),
                "{ty} {}: different bytes",
                t.name
            );
        }
        for key in [
            "tokenizer.chat_template",
            "tokenizer.ggml.pre",
            "general.name",
        ] {
            assert_eq!(ours.get(key), theirs.get(key), "{key}");
        }
        assert_eq!(
            ours.get("general.file_type"),
            theirs.get("general.file_type"),
            "{ty}"
        );
        let model = Model::load(&path, &BackendChoice::Ndarray).unwrap();
        assert_eq!(model.special_tokens(), directory_model().special_tokens());
    }
}

#[test]
fn what_cannot_be_written_is_a_typed_error_and_leaves_no_file() {
    let files = ModelFiles::open(bundled_model(), &BackendChoice::Ndarray).unwrap();
    // Into a directory that does not exist.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("missing").join("model.gguf");
    let err = files.write_gguf(&out, FileType::Q8_0).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Io, "{err}");
    assert!(
        llada::report(&err).contains("model.gguf"),
        "{}",
        llada::report(&err)
    );
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);

    // A tensor already quantized is not quantized again into another type.
    let gguf = ModelFiles::open(llama_cpp_file("q8_0"), &BackendChoice::Ndarray).unwrap();
    let err = gguf
        .write_gguf(dir.path().join("again.gguf"), FileType::Q4_0)
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unsupported);
    let report = llada::report(&err);
    assert!(report.contains("token_embd.weight is Q8_0"), "{report}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);

    // ONNX weights are not a source the writer reads.
    let onnx = ModelFiles::open(
        bundled_model(),
        &BackendChoice::Ort(llada::OrtOptions::default()),
    )
    .unwrap();
    let err = onnx
        .write_gguf(dir.path().join("onnx.gguf"), FileType::Q8_0)
        .unwrap_err();
    assert!(
        matches!(err, Error::ExportSource { format: "onnx", .. }),
        "{err}"
    );
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);

    // A file type by a name the writer does not know.
    let err = "q3_k_s".parse::<FileType>().unwrap_err();
    assert!(err.to_string().contains("q3_k_s"), "{err}");
}

/// Our quantizer against `llama-quantize` on the second model's weights (256 wide, so its
/// Q4_K_M is real Q4_K and Q6_K): the same F16 file in, the same tensor types out, and per
/// tensor either the same bytes or a dequantized RMS error no worse than llama.cpp's.
#[test]
fn our_q4_k_m_of_the_second_model_matches_llama_quantize() {
    let dir = fixture("small-llada/gguf");
    let files =
        ModelFiles::open(dir.join("small-llada-f16.gguf"), &BackendChoice::Ndarray).unwrap();
    let out = tempfile::tempdir().unwrap();
    let path = write(&files, out.path(), FileType::Q4KM);
    let ours = GgufFile::open(&path).unwrap();
    let theirs = GgufFile::open(dir.join("small-llada-q4_k_m.gguf")).unwrap();
    let source = GgufFile::open(dir.join("small-llada-f16.gguf")).unwrap();
    let rms = |file: &GgufFile, name: &str| -> f64 {
        let x = source.tensor_f32(source.tensor(name).unwrap()).unwrap();
        let q = file.tensor_f32(file.tensor(name).unwrap()).unwrap();
        let sum: f64 = x
            .iter()
            .zip(&q)
            .map(|(a, b)| f64::from(a - b).powi(2))
            .sum();
        (sum / x.len() as f64).sqrt()
    };
    let mut identical = 0;
    assert_eq!(ours.tensors().len(), theirs.tensors().len());
    for t in theirs.tensors() {
        let o = ours.tensor(&t.name).unwrap();
        assert_eq!((o.ty, &o.dims), (t.ty, &t.dims), "{}", t.name);
        if ours.data(o) == theirs.data(t) {
            identical += 1;
            continue;
        }
        let (a, b) = (rms(&ours, &t.name), rms(&theirs, &t.name));
        eprintln!(
            "{} {}: RMS ours {a:.6e}, llama.cpp {b:.6e}",
            t.name,
            t.ty.name()
        );
        assert!(
            a <= b * (1.0 + 1e-4),
            "{}: ours {a} > llama.cpp's {b}",
            t.name
        );
    }
    eprintln!(
        "{identical} of {} tensors byte for byte",
        theirs.tensors().len()
    );
}
