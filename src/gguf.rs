//! A GGUF file as a whole model: the tokenizer, special ids, chat template and decoding
//! defaults from its metadata, when no `tokenizer.json` is beside it.

use std::path::Path;

use llada_ndarray::gguf::{FileType, GgufFile, Value, Written};

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
        // The Ling (inclusionAI) tokenizer, which LLaDA-8B uses (126,464 tokens, `<role>`,
        // `[gMASK]`): llama.cpp's converter recognises it as Ling-lite's (`bailingmoe`). Single
        // digits; the regex as llama.cpp runs it (its possessive quantifiers made greedy).
        // Qwen2's (Dream, DiffuCoder): single digits; its tokenizer also normalises to NFC
        // (see `normalizer`).
        "qwen2" => serde_json::json!({"type": "Sequence", "pretokenizers": [
            split(r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"),
            byte_level(false),
        ]}),
        "bailingmoe" | "bailingmoe2" | "llada-moe" => {
            serde_json::json!({"type": "Sequence", "pretokenizers": [
                split(r"'(?:[sSdDmMtT]|[lL][lL]|[vV][eE]|[rR][eE])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+"),
                byte_level(false),
            ]})
        }
        _ => return None,
    })
}

/// The normaliser that goes with a pre-tokenizer of [`pre_tokenizer`]: NFC for Qwen2's, whose
/// `tokenizer.json` has it (GGUF files do not record normalisers).
fn normalizer(pre_name: &str) -> serde_json::Value {
    match pre_name {
        "qwen2" => serde_json::json!({"type": "NFC"}),
        _ => serde_json::Value::Null,
    }
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
            "pre-tokenizer {pre_name:?} (tokenizer.ggml.pre) is not supported (gpt-2, llama-bpe, qwen2 and bailingmoe are); put the model's tokenizer.json and tokenizer_config.json beside the file"
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
        "normalizer": normalizer(pre_name),
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
pub(crate) fn decoding(
    file: &GgufFile,
    block_diffusion: bool,
) -> Result<Option<DecodingDefaults>, Error> {
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
    DecodingDefaults::from_declaration(&declared, file.path(), "llada.decoding", block_diffusion)
}

/// llama.cpp's token types.
const NORMAL: i64 = 1;
const CONTROL: i64 = 3;
const USER_DEFINED: i64 = 4;
const UNUSED: i64 = 5;

/// The `tokenizer.ggml.pre` name of a `tokenizer.json` pre-tokenizer, if it is one of those
/// [`pre_tokenizer`] knows.
fn pre_tokenizer_name(pre: &serde_json::Value) -> Option<&'static str> {
    let same = |a: &serde_json::Value, b: &serde_json::Value| {
        a.get("type") == b.get("type")
            && a.get("use_regex") == b.get("use_regex")
            && a.get("pattern") == b.get("pattern")
            && a.get("pretokenizers").map(|p| p.as_array().map(Vec::len))
                == b.get("pretokenizers").map(|p| p.as_array().map(Vec::len))
    };
    // Ling's own `tokenizer.json` (LLaDA-8B's, LLaDA-MoE's) writes its regex with possessive
    // quantifiers, which llama.cpp runs made greedy (`bailingmoe`): the same name.
    let ling_original = serde_json::json!({"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": LING_ORIGINAL_REGEX}, "behavior": "Isolated", "invert": false},
        {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false},
    ]});
    ["gpt-2", "llama-bpe", "qwen2", "bailingmoe"]
        .into_iter()
        .map(|name| (name, pre_tokenizer(name).expect("a supported name")))
        .chain(std::iter::once(("bailingmoe", ling_original)))
        .find(|(_, known)| {
            match (
                pre.get("pretokenizers").and_then(|p| p.as_array()),
                known.get("pretokenizers").and_then(|p| p.as_array()),
            ) {
                (Some(a), Some(b)) => {
                    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| same(x, y))
                }
                (None, None) => same(pre, known),
                _ => false,
            }
        })
        .map(|(name, _)| name)
}

/// The pre-tokenizer regex of Ling's `tokenizer.json` as the tokenizer writes it (llama.cpp's
/// `bailingmoe` runs it with its possessive quantifiers made greedy).
const LING_ORIGINAL_REGEX: &str = r"'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+";

/// The `tokenizer.*` metadata of a model's tokenizer and chat template, as llama.cpp's
/// converter writes them for LLaDA (`gpt2` byte-level BPE, every id up to `vocab_size`, the
/// control tokens marked, `add_bos_token`), plus its decoding lengths.
pub(crate) fn tokenizer_metadata(
    files: &crate::ModelFiles,
    out: &Path,
) -> Result<Vec<(String, Value)>, Error> {
    let bad = |reason: String| Error::GgufTokenizer {
        path: out.to_path_buf(),
        reason,
    };
    let json: serde_json::Value = serde_json::from_str(
        &files
            .tokenizer()
            .inner()
            .to_string(false)
            .map_err(|e| bad(format!("cannot serialize the tokenizer: {e}")))?,
    )
    .map_err(|e| bad(format!("cannot serialize the tokenizer: {e}")))?;
    let model = &json["model"];
    if model["type"] != "BPE" {
        return Err(bad(format!(
            "a {} tokenizer cannot be written; GGUF's `gpt2` tokenizer is a byte-level BPE",
            model["type"]
        )));
    }
    let pre = pre_tokenizer_name(&json["pre_tokenizer"]).ok_or_else(|| {
        bad(format!(
            "pre-tokenizer {} has no llama.cpp name here (gpt-2, llama-bpe, qwen2 and bailingmoe do)",
            json["pre_tokenizer"]
        ))
    })?;
    let vocab_size = files
        .config()
        .get("vocab_size")
        .and_then(serde_json::Value::as_u64)
        .map_or(files.tokenizer().vocab_size(), |v| v as usize);
    let mut tokens: Vec<Option<(String, i64)>> = vec![None; vocab_size];
    let mut place = |id: u64, text: &str, ty: i64| -> Result<(), Error> {
        let slot = tokens.get_mut(id as usize).ok_or_else(|| {
            bad(format!(
                "token {text:?} has id {id}, past the vocabulary size {vocab_size}"
            ))
        })?;
        *slot = Some((text.to_string(), ty));
        Ok(())
    };
    for (text, id) in model["vocab"].as_object().into_iter().flatten() {
        place(id.as_u64().unwrap_or(u64::MAX), text, NORMAL)?;
    }
    for added in json["added_tokens"].as_array().into_iter().flatten() {
        let ty = if added["special"] == true {
            CONTROL
        } else {
            USER_DEFINED
        };
        place(
            added["id"].as_u64().unwrap_or(u64::MAX),
            added["content"].as_str().unwrap_or_default(),
            ty,
        )?;
    }
    let (texts, types): (Vec<Value>, Vec<Value>) = tokens
        .into_iter()
        .enumerate()
        .map(|(id, t)| match t {
            Some((text, ty)) => (Value::String(text), Value::Int(ty)),
            None => (Value::String(format!("[PAD{id}]")), Value::Int(UNUSED)),
        })
        .unzip();
    let merges = model["merges"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| match m {
            serde_json::Value::String(s) => Ok(Value::String(s.clone())),
            serde_json::Value::Array(pair) if pair.len() == 2 => Ok(Value::String(format!(
                "{} {}",
                pair[0].as_str().unwrap_or_default(),
                pair[1].as_str().unwrap_or_default()
            ))),
            other => Err(bad(format!("merge {other} is not a pair"))),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let special = files.special_tokens();
    let mut out = vec![
        (
            "tokenizer.ggml.model".to_string(),
            Value::String("gpt2".into()),
        ),
        ("tokenizer.ggml.pre".to_string(), Value::String(pre.into())),
        ("tokenizer.ggml.tokens".to_string(), Value::Array(texts)),
        ("tokenizer.ggml.token_type".to_string(), Value::Array(types)),
        ("tokenizer.ggml.merges".to_string(), Value::Array(merges)),
        (
            "tokenizer.ggml.add_bos_token".to_string(),
            Value::Bool(true),
        ),
        (
            "tokenizer.ggml.add_eos_token".to_string(),
            Value::Bool(false),
        ),
    ];
    if let Some(bos) = special.bos {
        out.push((
            "tokenizer.ggml.bos_token_id".to_string(),
            Value::Uint(bos.into()),
        ));
    }
    if special.eot != special.eos {
        out.push((
            "tokenizer.ggml.eot_token_id".to_string(),
            Value::Uint(special.eot.into()),
        ));
    }
    if let Some(template) = files.chat_template() {
        out.push((
            "tokenizer.chat_template".to_string(),
            Value::String(template.source().to_string()),
        ));
    }
    let decoding = files.decoding_defaults();
    if decoding.declared {
        for (key, v) in
            DECODING_KEYS
                .iter()
                .zip([decoding.gen_length, decoding.steps, decoding.block_length])
        {
            out.push((key.to_string(), Value::Uint(v as u64)));
        }
    }
    Ok(out)
}

/// Writes `files`' safetensors checkpoint as one GGUF file at `out` (see
/// [`ModelFiles::write_gguf`](crate::ModelFiles::write_gguf)).
pub(crate) fn write(
    files: &crate::ModelFiles,
    out: &Path,
    file_type: FileType,
) -> Result<Written, Error> {
    let stage = write_stage;
    let weights = match files.weights() {
        crate::WeightSource::Safetensors(path) => path,
        crate::WeightSource::Gguf(path) => {
            // Its own metadata (tokenizer, template, special ids) is carried over.
            let file = open(path)?;
            return llada_ndarray::gguf::requantize(&file, file_type, &[], out).map_err(stage);
        }
        other => {
            return Err(Error::ExportSource {
                format: other.format(),
                path: other.path().to_path_buf(),
            });
        }
    };
    let (config, extra) = config_and_metadata(files, out)?;
    llada_ndarray::gguf::write_checkpoint(&config, weights, file_type, &extra, out).map_err(stage)
}

/// Writes `files`' model shape as one GGUF file at `out` with seeded random weights (see
/// [`ModelFiles::write_gguf_random`](crate::ModelFiles::write_gguf_random)).
pub(crate) fn write_random(
    files: &crate::ModelFiles,
    out: &Path,
    file_type: FileType,
    seed: u64,
) -> Result<Written, Error> {
    let (config, extra) = config_and_metadata(files, out)?;
    llada_ndarray::gguf::write_random(&config, file_type, seed, &extra, out).map_err(write_stage)
}

/// A write's error at the stage it happened: writing the file, or reading what goes in it.
fn write_stage(e: llada_ndarray::LoadError) -> Error {
    let stage = if matches!(e, llada_ndarray::LoadError::Write { .. }) {
        Stage::Write
    } else {
        Stage::Load
    };
    Error::from(BackendError::wrap("ndarray", stage, e))
}

/// The ndarray configuration of `files` and the metadata a GGUF file of it carries beyond its
/// hyper-parameters: tokenizer, chat template, special ids and the file's name.
fn config_and_metadata(
    files: &crate::ModelFiles,
    out: &Path,
) -> Result<(llada_ndarray::Config, Vec<(String, Value)>), Error> {
    let load = |e| Error::from(BackendError::wrap("ndarray", Stage::Load, e));
    let config = llada_ndarray::Config::from_value(files.config().clone()).map_err(load)?;
    let mut extra = tokenizer_metadata(files, out)?;
    let special = files.special_tokens();
    for (key, id) in [
        ("tokenizer.ggml.mask_token_id", special.mask),
        ("tokenizer.ggml.eos_token_id", special.eos),
        ("tokenizer.ggml.padding_token_id", special.pad),
    ] {
        extra.push((key.to_string(), Value::Uint(id.into())));
    }
    if let Some(name) = out.file_stem().and_then(|s| s.to_str()) {
        extra.push(("general.name".to_string(), Value::String(name.to_string())));
    }
    Ok((config, extra))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokenizers::{OffsetReferential, OffsetType, PreTokenizedString, PreTokenizer};

    fn pieces(name: &str, text: &str) -> Vec<String> {
        let pre: tokenizers::PreTokenizerWrapper =
            serde_json::from_value(pre_tokenizer(name).unwrap()).unwrap();
        let mut s = PreTokenizedString::from(text);
        pre.pre_tokenize(&mut s).unwrap();
        s.get_splits(OffsetReferential::Original, OffsetType::Byte)
            .into_iter()
            .map(|(piece, _, _)| piece.to_string())
            .collect()
    }

    #[test]
    fn each_pre_tokenizer_name_splits_as_llama_cpps() {
        // GPT-2 keeps digit runs and a leading space together; LLaMA 3 groups up to three
        // digits; Ling / LLaDA-8B's splits every digit. (Byte-level: a space is "Ġ".)
        assert_eq!(pieces("gpt-2", "I've 12345"), ["I", "'ve", "Ġ12345"]);
        assert_eq!(
            pieces("llama-bpe", "I've 12345"),
            ["I", "'ve", "Ġ", "123", "45"]
        );
        assert_eq!(
            pieces("bailingmoe", "I've 12345\n\n"),
            ["I", "'ve", "Ġ", "1", "2", "3", "4", "5", "ĊĊ"]
        );
        // Qwen2's (Dream) splits every digit too, and keeps a newline run apart.
        assert_eq!(
            pieces("qwen2", "I've 12345\n\n"),
            ["I", "'ve", "Ġ", "1", "2", "3", "4", "5", "ĊĊ"]
        );
        assert!(pre_tokenizer("falcon").is_none());
        for name in ["gpt-2", "llama-bpe", "qwen2", "bailingmoe"] {
            assert_eq!(
                pre_tokenizer_name(&pre_tokenizer(name).unwrap()),
                Some(name),
                "{name}"
            );
        }
        // Ling's own tokenizer.json (LLaDA-MoE's release, the bundled LLaDA-MoE fixture)
        // writes the regex with possessive quantifiers: still llama.cpp's bailingmoe.
        let text = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/tiny-llada-moe/tokenizer.json"),
        )
        .unwrap();
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            pre_tokenizer_name(&json["pre_tokenizer"]),
            Some("bailingmoe")
        );
    }
}
