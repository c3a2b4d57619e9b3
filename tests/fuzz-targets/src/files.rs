//! Model files from arbitrary bytes: GGUF, safetensors, config.json, tokenizer_config.json.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use llada::{BackendChoice, Message, ModelFiles, WeightSource};
use llada_core::ForwardRequest;
use llada_ndarray::gguf::GgufFile;
use llada_ndarray::{Context, ContextOptions, LoadOptions, Model};
use llada_test_support::{bundled_model, dream_model, llada_moe_model};

use crate::{Bytes, scratch_path};

/// One short forward pass on one thread: a model that loads must run (or refuse the request
/// with an error), whatever its shapes.
fn run(model: Model) {
    let vocab = model.config().embedding_size;
    let seq = model.config().max_sequence_length.min(4);
    let Ok(mut context) =
        Context::with_options(Arc::new(model), ContextOptions::default().with_threads(1))
    else {
        return;
    };
    let ids: Vec<u32> = (0..seq).map(|i| (i % vocab) as u32).collect();
    let Ok(request) = ForwardRequest::new(&ids, 1, seq) else {
        return;
    };
    let mut logits = vec![0.0; seq * vocab];
    let _ = context.forward(&request, &mut logits);
}

/// A tokenizer and chat template in use: render a conversation, tokenize it, decode it.
fn use_text_side(files: &ModelFiles, messages: &[Message]) {
    let tokenizer = files.tokenizer();
    if let Some(template) = files.chat_template()
        && let Ok(text) = template.render(messages, true)
        && let Ok(ids) = tokenizer.encode(&text)
    {
        let _ = tokenizer.decode(&ids, true);
    }
    for m in messages {
        let _ = tokenizer.encode(&m.content);
    }
}

/// The bytes are a GGUF file.
pub fn gguf(data: &[u8]) {
    let path = scratch_path("model.gguf");
    std::fs::write(&path, data).expect("the scratch file");
    if let Ok(file) = GgufFile::open(&path) {
        let _ = llada_ndarray::gguf::config_json(&file);
        if let Ok(model) = Model::from_gguf_file_with(&file, &LoadOptions::default()) {
            run(model);
        }
    }
    // The whole model: tokenizer, template and special ids from the metadata.
    if let Ok(files) = ModelFiles::open(&path, &BackendChoice::Ndarray) {
        use_text_side(&files, &[Message::user("reverse:pen,frog,rock")]);
    }
}

/// A directory holding `config.json` and `model.safetensors`, either one taken from the
/// bundled model.
fn model_dir(name: &str) -> PathBuf {
    let dir = scratch_path(name);
    std::fs::create_dir_all(&dir).expect("a scratch directory");
    dir
}

fn copy_once(from: &Path, to: &Path) {
    if !to.exists() {
        std::fs::copy(from, to).expect("a bundled file");
    }
}

/// The bytes are `model.safetensors` beside the bundled `config.json`.
pub fn safetensors(data: &[u8]) {
    let dir = model_dir("safetensors");
    copy_once(
        &bundled_model().join("config.json"),
        &dir.join("config.json"),
    );
    std::fs::write(dir.join("model.safetensors"), data).expect("the scratch file");
    if let Ok(model) = Model::load(&dir) {
        run(model);
    }
}

/// The bytes are `config.json` beside the bundled weights: the LLaDA model's, or the Dream
/// or LLaDA-MoE model's (two shards) when the bytes are a Dream or LLaDA-MoE configuration.
pub fn config(data: &[u8]) {
    let family = std::str::from_utf8(data)
        .ok()
        .and_then(|text| llada_ndarray::Config::from_json(text).ok())
        .map(|c| c.family);
    let sharded = match family {
        Some(llada_ndarray::Family::Dream) => Some(("config-dream", dream_model())),
        Some(llada_ndarray::Family::LladaMoe) => Some(("config-llada-moe", llada_moe_model())),
        _ => None,
    };
    let dir = if let Some((name, source)) = sharded {
        let dir = model_dir(name);
        for name in [
            "model.safetensors.index.json",
            "model-00001-of-00002.safetensors",
            "model-00002-of-00002.safetensors",
        ] {
            copy_once(&source.join(name), &dir.join(name));
        }
        dir
    } else {
        let dir = model_dir("config");
        copy_once(
            &bundled_model().join("model.safetensors"),
            &dir.join("model.safetensors"),
        );
        dir
    };
    std::fs::write(dir.join("config.json"), data).expect("the scratch file");
    if let Ok(model) = Model::load(&dir) {
        run(model);
    }
}

fn bundled(name: &str) -> &'static [u8] {
    static FILES: OnceLock<Vec<(String, Vec<u8>)>> = OnceLock::new();
    let files = FILES.get_or_init(|| {
        ["config.json", "tokenizer.json"]
            .iter()
            .map(|n| {
                let bytes = std::fs::read(bundled_model().join(n)).expect("a bundled file");
                (n.to_string(), bytes)
            })
            .collect()
    });
    &files
        .iter()
        .find(|f| f.0 == name)
        .expect("a bundled file")
        .1
}

/// The bytes are a `tokenizer_config.json` (its chat template and special tokens, hostile or
/// not) and the messages of a conversation: a 2-byte length, the file, then per message a
/// 1-byte role length, the role, a 2-byte content length and the content (any bytes, read as
/// UTF-8 with replacements).
pub fn chat(data: &[u8]) {
    let mut bytes = Bytes::new(data);
    let len = usize::from(bytes.u8()) | (usize::from(bytes.u8()) << 8);
    let tokenizer_config = bytes.take(len);
    let mut messages = Vec::new();
    while messages.len() < 8 {
        let role_len = usize::from(bytes.u8());
        let role = String::from_utf8_lossy(bytes.take(role_len)).into_owned();
        let content_len = usize::from(bytes.u8()) | (usize::from(bytes.u8()) << 8);
        let content = String::from_utf8_lossy(bytes.take(content_len)).into_owned();
        if role.is_empty() && content.is_empty() {
            break;
        }
        messages.push(Message::new(role, content));
    }
    let weights = WeightSource::Safetensors(bundled_model().join("model.safetensors"));
    if let Ok(files) = ModelFiles::from_bytes(
        bundled("config.json"),
        bundled("tokenizer.json"),
        tokenizer_config,
        weights,
    ) {
        use_text_side(&files, &messages);
    }
}
