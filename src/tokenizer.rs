//! Text to ids and back with the model's `tokenizer.json`, and the special-token ids the
//! sampler needs, read from the model's files.

use std::path::Path;

use crate::error::Error;

/// The model's tokenizer (Hugging Face `tokenizers`, no network, pure-Rust regex engine).
#[derive(Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.inner.get_vocab_size(true))
            .finish()
    }
}

impl Tokenizer {
    /// Loads `tokenizer.json`.
    pub fn from_file(path: &Path) -> Result<Self, Error> {
        if !path.is_file() {
            return Err(Error::MissingFile {
                path: path.to_path_buf(),
                expected: "the tokenizer (tokenizer.json)",
            });
        }
        let bytes = std::fs::read(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_bytes(&bytes, path)
    }

    /// Parses the bytes of a `tokenizer.json`; `path` names it in errors.
    pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<Self, Error> {
        let inner =
            tokenizers::Tokenizer::from_bytes(bytes).map_err(|source| Error::Tokenizer {
                path: Some(path.to_path_buf()),
                source,
            })?;
        Ok(Self { inner })
    }

    /// Token ids of `text`, with whatever special tokens the tokenizer's post-processor adds
    /// (as Hugging Face's `tokenizer(text)` does); special tokens written in the text, such as
    /// those of a chat template, are recognised.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, Error> {
        let encoding = self
            .inner
            .encode(text, true)
            .map_err(|source| Error::Tokenizer { path: None, source })?;
        Ok(encoding.get_ids().to_vec())
    }

    /// Text of `ids`; special tokens are dropped when `skip_special_tokens`.
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String, Error> {
        self.inner
            .decode(ids, skip_special_tokens)
            .map_err(|source| Error::Tokenizer { path: None, source })
    }

    /// The id of a token, special or not.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Vocabulary size, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The wrapped `tokenizers` tokenizer.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }
}

/// Ids of the special tokens, from the model's files: `config.json` (`mask_token_id`,
/// `eos_token_id`, `pad_token_id`) and the tokenizer (`<|mdm_mask|>` or `<|mask|>`,
/// `<|eot_id|>` or `<|im_end|>`, the `bos_token`/`eos_token` of `tokenizer_config.json`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpecialTokens {
    /// The mask token.
    pub mask: u32,
    /// End of text.
    pub eos: u32,
    /// End of turn (`<|eot_id|>`, or ChatML's `<|im_end|>`); equal to `eos` for models
    /// without one.
    pub eot: u32,
    /// Beginning of text, if the model has one.
    pub bos: Option<u32>,
    /// Left padding.
    pub pad: u32,
}

impl SpecialTokens {
    /// Resolves the ids from a model directory's parsed files.
    pub(crate) fn resolve(
        config: &serde_json::Value,
        tokenizer_config: &serde_json::Value,
        tokenizer: &Tokenizer,
    ) -> Result<Self, Error> {
        let from_config = |field: &str| {
            config
                .get(field)
                .and_then(serde_json::Value::as_u64)
                .map(|v| v as u32)
        };
        let from_token = |field: &str| {
            let value = tokenizer_config.get(field)?;
            let text = value
                .as_str()
                .or_else(|| value.get("content").and_then(|c| c.as_str()))?;
            tokenizer.token_to_id(text)
        };
        // LLaDA's mask is `<|mdm_mask|>`, Dream's `<|mask|>`; LLaDA-MoE's release says its
        // mask id nowhere in its files (its `generate` and llama.cpp's converter hard-code
        // 156895).
        // 156895 in the same case as the ndarray backend's config reader (a vocabulary that
        // has it), before any token name, so both sides agree.
        let release_mask = || {
            let rows = from_config("vocab_size").unwrap_or(0);
            let ling = crate::files::is_llada_moe(config) || crate::files::is_llada2(config);
            (ling && rows > 156_895).then_some(156_895)
        };
        let mask = from_config("mask_token_id")
            .or_else(release_mask)
            .or_else(|| tokenizer.token_to_id("<|mdm_mask|>"))
            .or_else(|| tokenizer.token_to_id("<|mask|>"))
            .ok_or(Error::MissingSpecialToken {
                name: "mask (mask_token_id, <|mdm_mask|> or <|mask|>)",
            })?;
        let eos = from_config("eos_token_id")
            .or_else(|| from_token("eos_token"))
            .ok_or(Error::MissingSpecialToken {
                name: "eos (eos_token_id or eos_token)",
            })?;
        // LLaDA's end of turn is `<|eot_id|>`; ChatML models' (Dream) `<|im_end|>`; the Ling
        // template's (LLaDA-MoE) `<|role_end|>`.
        let eot = tokenizer
            .token_to_id("<|eot_id|>")
            .or_else(|| tokenizer.token_to_id("<|im_end|>"))
            .or_else(|| tokenizer.token_to_id("<|role_end|>"))
            .unwrap_or(eos);
        let bos = from_token("bos_token");
        let pad = from_config("pad_token_id")
            .or_else(|| from_token("pad_token"))
            .unwrap_or(eos);
        Ok(Self {
            mask,
            eos,
            eot,
            bos,
            pad,
        })
    }
}
