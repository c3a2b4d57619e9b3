//! A GGUF file as a whole model: the tokenizer, special ids, chat template and decoding
//! defaults from its metadata, when no `tokenizer.json` is beside it.

use std::path::Path;

use llada_ndarray::gguf::{GgufFile, Value};

use crate::error::{BackendError, Error, Stage};
use crate::files::DecodingDefaults;
use crate::tokenizer::Tokenizer;

/// Opens a GGUF file for its metadata; a malformed file is the ndarray backend's load error.
pub(crate) fn open(path: &Path) -> Result<GgufFile, Error> {
    GgufFile::open(path).map_err(|e| BackendError::wrap("ndarray", Stage::Load, e).into())
}

/// The `config.json` the file's hyper-parameters make.
pub(crate) fn config(file: &GgufFile) -> Result<serde_json::Value, Error> {
    llada_ndarray::gguf::config_json(file)
        .map_err(|e| BackendError::wrap("ndarray", Stage::Load, e).into())
}

fn strings<'f>(file: &'f GgufFile, key: &'static str) -> Result<Vec<&'f str>, Error> {
    let bad = |reason: &str| Error::GgufTokenizer {
        path: file.path().to_path_buf(),
        reason: format!("{key} {reason}"),
    };
    file.get(key)
        .ok_or_else(|| bad("is missing"))?
        .as_array()
        .ok_or_else(|| bad("is not an array"))?
        .iter()
        .map(|v| v.as_str().ok_or_else(|| bad("holds a non-string")))
        .collect()
}

/// The pre-tokenizer of `tokenizer.ggml.pre` names, as `tokenizer.json` writes it.
fn pre_tokenizer(name: &str) -> Option<serde_json::Value> {
    let byte_level = |use_regex: bool| serde_json::json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": use_regex});
    let split = |regex: &str| serde_json::json!({"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": false});
    Some(match name {
        // GPT-2's byte-level regex, built into the ByteLevel pre-tokenizer.
        "gpt-2" | "default" => byte_level(true),
        // LLaMA 3's regex (llama.cpp's `llama-bpe`).
        "llama-bpe" | "llama3" => serde_json::json!({"type": "Sequence", "pretokenizers": [
            split(r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"),
            byte_level(false),
        ]}),
        _ => return None,
    })
}

/// The tokenizer of a GGUF file's `tokenizer.ggml.*` metadata (a byte-level BPE, as llama.cpp's
/// converter writes LLaDA's), built with the `tokenizers` crate. Control and user-defined
/// tokens become added tokens (the control ones special), as `tokenizer.json` has them.
/// `tokenizer.ggml.add_bos_token` is not applied: LLaDA's chat template writes the BOS itself,
/// and `tokenizer.json` adds none, so a prompt gets exactly one either way.
pub(crate) fn tokenizer(file: &GgufFile) -> Result<Tokenizer, Error> {
    let path = file.path().to_path_buf();
    let bad = |reason: String| Error::GgufTokenizer {
        path: path.clone(),
        reason,
    };
    let model = file
        .get("tokenizer.ggml.model")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if model != "gpt2" {
        return Err(bad(format!(
            "tokenizer.ggml.model {model:?} is not supported (byte-level BPE, \"gpt2\", is)"
        )));
    }
    let pre_name = file
        .get("tokenizer.ggml.pre")
        .and_then(Value::as_str)
        .unwrap_or("default");
    let pre = pre_tokenizer(pre_name).ok_or_else(|| {
        bad(format!(
            "pre-tokenizer {pre_name:?} (tokenizer.ggml.pre) is not supported; supported: gpt-2, llama-bpe"
        ))
    })?;
    let tokens = strings(file, "tokenizer.ggml.tokens")?;
    let merges = strings(file, "tokenizer.ggml.merges")?;
    let types: Vec<u64> = match file.get("tokenizer.ggml.token_type") {
        Some(v) => v
            .as_array()
            .ok_or_else(|| bad("tokenizer.ggml.token_type is not an array".into()))?
            .iter()
            .map(|t| t.as_u64().unwrap_or(1))
            .collect(),
        None => vec![1; tokens.len()],
    };
    if types.len() != tokens.len() {
        return Err(bad(format!(
            "{} token types for {} tokens",
            types.len(),
            tokens.len()
        )));
    }
    let mut vocab = serde_json::Map::with_capacity(tokens.len());
    let mut added = Vec::new();
    for (id, (&token, &ty)) in tokens.iter().zip(&types).enumerate() {
        vocab.insert(token.to_string(), id.into());
        // 3: control, 4: user-defined (llama.cpp's token types).
        if ty == 3 || ty == 4 {
            added.push(serde_json::json!({
                "id": id, "content": token, "single_word": false, "lstrip": false,
                "rstrip": false, "normalized": false, "special": ty == 3,
            }));
        }
    }
    let json = serde_json::json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": pre,
        "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {
            "type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
            "ignore_merges": false, "vocab": vocab, "merges": merges,
        },
    });
    Tokenizer::from_bytes(json.to_string().as_bytes(), file.path())
}

/// The `tokenizer_config.json` the metadata implies: the chat template and the BOS, EOS and
/// pad token texts (from their ids).
pub(crate) fn tokenizer_config(file: &GgufFile, tokenizer: &Tokenizer) -> serde_json::Value {
    let mut config = serde_json::Map::new();
    if let Some(template) = file.get("tokenizer.chat_template").and_then(Value::as_str) {
        config.insert("chat_template".into(), template.into());
    }
    for (field, key) in [
        ("bos_token", "tokenizer.ggml.bos_token_id"),
        ("eos_token", "tokenizer.ggml.eos_token_id"),
        ("pad_token", "tokenizer.ggml.padding_token_id"),
    ] {
        let text = file
            .get(key)
            .and_then(Value::as_u64)
            .and_then(|id| tokenizer.inner().id_to_token(id as u32));
        if let Some(text) = text {
            config.insert(field.into(), text.into());
        }
    }
    serde_json::Value::Object(config)
}

/// The metadata keys under which a GGUF file declares decoding lengths.
pub(crate) const DECODING_KEYS: [&str; 3] = [
    "llada.decoding.gen_length",
    "llada.decoding.steps",
    "llada.decoding.block_length",
];

/// The decoding lengths the file declares ([`DECODING_KEYS`]), if it does.
pub(crate) fn decoding(file: &GgufFile) -> Result<Option<DecodingDefaults>, Error> {
    let values: Vec<Option<u64>> = DECODING_KEYS
        .iter()
        .map(|k| file.get(k).and_then(Value::as_u64))
        .collect();
    if values.iter().all(Option::is_none) {
        return Ok(None);
    }
    let declared = serde_json::json!({
        "gen_length": values[0], "steps": values[1], "block_length": values[2],
    });
    DecodingDefaults::from_declaration(&declared, file.path(), "llada.decoding")
}
