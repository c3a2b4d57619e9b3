//! [`ModelFiles`]: everything that describes a model, read once and handed to the backends.

use std::path::{Path, PathBuf};

use llada_core::GenerateParams;

use crate::backend::BackendChoice;
use crate::chat::ChatTemplate;
use crate::error::Error;
use crate::tokenizer::{SpecialTokens, Tokenizer};

/// Where a model's weights are. A path to a file, never a directory: a single GGUF file will
/// be a whole model.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum WeightSource {
    /// A safetensors file (`model.safetensors`), or a shard index
    /// (`model.safetensors.index.json`) with its shards beside it: for the ndarray backend.
    Safetensors(PathBuf),
    /// An ONNX export (`model.onnx`, external data beside it): for ONNX Runtime.
    Onnx(PathBuf),
    /// A GGUF file (llama.cpp's format, architecture `llada`): for the ndarray backend.
    Gguf(PathBuf),
}

impl WeightSource {
    /// The file.
    pub fn path(&self) -> &Path {
        match self {
            WeightSource::Safetensors(p) | WeightSource::Onnx(p) | WeightSource::Gguf(p) => p,
        }
    }

    /// `"safetensors"`, `"onnx"` or `"gguf"`.
    pub fn format(&self) -> &'static str {
        match self {
            WeightSource::Safetensors(_) => "safetensors",
            WeightSource::Onnx(_) => "onnx",
            WeightSource::Gguf(_) => "gguf",
        }
    }

    /// The weights a model directory holds for `backend`: `model.safetensors` (else
    /// `model.safetensors.index.json`) for ndarray, `model.onnx` for ONNX Runtime.
    pub fn in_dir(dir: &Path, backend: &BackendChoice) -> Result<Self, Error> {
        match backend {
            BackendChoice::Ort(_) => {
                let path = dir.join("model.onnx");
                if path.is_file() {
                    Ok(WeightSource::Onnx(path))
                } else {
                    Err(Error::MissingFile {
                        path,
                        expected: "the ONNX export of the model (model.onnx)",
                    })
                }
            }
            _ => ["model.safetensors", "model.safetensors.index.json"]
                .into_iter()
                .map(|name| dir.join(name))
                .find(|path| path.is_file())
                .map(WeightSource::Safetensors)
                .ok_or_else(|| Error::MissingFile {
                    path: dir.join("model.safetensors"),
                    expected: "the weights (model.safetensors, or model.safetensors.index.json and its shards)",
                }),
        }
    }
}

/// The key of `generation_config.json` under which a model declares its decoding lengths:
/// `{"llada_decoding": {"gen_length": 128, "steps": 128, "block_length": 32}}`.
pub const DECODING_KEY: &str = "llada_decoding";

/// The decoding lengths that fit a model: the ones it declares ([`DECODING_KEY`]), else the
/// reference chat settings (LLaDA's `chat.py`: 128 tokens, 128 steps, blocks of 32).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct DecodingDefaults {
    /// Tokens to generate.
    pub gen_length: usize,
    /// Denoising steps (the reference schedule's).
    pub steps: usize,
    /// Semi-autoregressive block length.
    pub block_length: usize,
    /// Whether the model declared them (else they are the reference chat settings).
    pub declared: bool,
}

impl Default for DecodingDefaults {
    /// The reference chat settings: 128 tokens, 128 steps, blocks of 32.
    fn default() -> Self {
        Self {
            gen_length: 128,
            steps: 128,
            block_length: 32,
            declared: false,
        }
    }
}

impl DecodingDefaults {
    /// The lengths `generation_config` declares under [`DECODING_KEY`], if it does; `path`
    /// names the file in errors.
    fn declared_in(
        generation_config: &serde_json::Value,
        path: &Path,
    ) -> Result<Option<Self>, Error> {
        match generation_config.get(DECODING_KEY) {
            Some(declared) => Self::from_declaration(declared, path, DECODING_KEY),
            None => Ok(None),
        }
    }

    /// The lengths of a declaration `{"gen_length", "steps", "block_length"}`, checked;
    /// `path` and `key` name it in errors.
    pub(crate) fn from_declaration(
        declared: &serde_json::Value,
        path: &Path,
        key: &'static str,
    ) -> Result<Option<Self>, Error> {
        let bad = |reason: String| Error::Declaration {
            path: path.to_path_buf(),
            key,
            reason,
        };
        let field = |name: &str| -> Result<usize, Error> {
            match declared.get(name).and_then(serde_json::Value::as_u64) {
                Some(v) if v > 0 => Ok(v as usize),
                _ => Err(bad(format!("`{name}` must be a positive integer"))),
            }
        };
        let defaults = Self {
            gen_length: field("gen_length")?,
            steps: field("steps")?,
            block_length: field("block_length")?,
            declared: true,
        };
        defaults
            .apply(GenerateParams::default())
            .validate()
            .map_err(|e| bad(e.to_string()))?;
        Ok(Some(defaults))
    }

    /// `params` with these lengths.
    pub fn apply(&self, params: GenerateParams) -> GenerateParams {
        params
            .with_gen_length(self.gen_length)
            .with_steps(self.steps)
            .with_block_length(self.block_length)
    }

    /// Where they come from, for help texts and logs.
    pub fn source(&self) -> &'static str {
        if self.declared {
            "the model's generation_config.json `llada_decoding`"
        } else {
            "the reference chat settings; the model declares none"
        }
    }
}

/// A model's sources, each read and parsed once: `config.json`, the tokenizer
/// (`tokenizer.json`), `tokenizer_config.json` (special tokens and the chat template), the
/// special ids resolved from them, the default generation parameters they imply, and where the
/// weights are. [`Model::from_files`](crate::Model::from_files) hands it to a backend, which
/// reads only the weights.
///
/// Built from a model directory ([`ModelFiles::open`]) or from bytes
/// ([`ModelFiles::from_bytes`], for hosts that ship the files inside their own bundle).
#[derive(Clone, Debug)]
pub struct ModelFiles {
    config: serde_json::Value,
    tokenizer: Tokenizer,
    template: Option<ChatTemplate>,
    special: SpecialTokens,
    decoding: DecodingDefaults,
    weights: WeightSource,
}

impl ModelFiles {
    /// Reads a model for `backend`. A directory: `config.json`, `tokenizer.json`,
    /// `tokenizer_config.json`, `generation_config.json` when there is one (for the decoding
    /// lengths the model declares), and the weights the backend runs (see
    /// [`WeightSource::in_dir`]). A GGUF file (recognised by its magic): the whole model, its
    /// tokenizer, special ids, chat template and decoding lengths from its metadata unless a
    /// `tokenizer.json` (with a `tokenizer_config.json`) is beside it; the ndarray backend runs
    /// its weights.
    pub fn open(dir: impl AsRef<Path>, backend: &BackendChoice) -> Result<Self, Error> {
        let dir = dir.as_ref();
        if dir.is_file() {
            return Self::open_file(dir, backend);
        }
        if !dir.is_dir() {
            return Err(Error::MissingDirectory {
                path: dir.to_path_buf(),
            });
        }
        let read = |name: &str, expected: &'static str| -> Result<(PathBuf, Vec<u8>), Error> {
            let path = dir.join(name);
            if !path.is_file() {
                return Err(Error::MissingFile { path, expected });
            }
            let bytes = std::fs::read(&path).map_err(|source| Error::Io {
                path: path.clone(),
                source,
            })?;
            Ok((path, bytes))
        };
        let (config_path, config) = read("config.json", "the model configuration (config.json)")?;
        let (tokenizer_path, tokenizer) = read("tokenizer.json", "the tokenizer (tokenizer.json)")?;
        let (tc_path, tokenizer_config) = read(
            "tokenizer_config.json",
            "the tokenizer configuration (tokenizer_config.json)",
        )?;
        let weights = WeightSource::in_dir(dir, backend)?;
        let files = Self::parse(
            (&config_path, &config),
            (&tokenizer_path, &tokenizer),
            (&tc_path, &tokenizer_config),
            weights,
        )?;
        let generation = dir.join("generation_config.json");
        if !generation.is_file() {
            return Ok(files);
        }
        let bytes = std::fs::read(&generation).map_err(|source| Error::Io {
            path: generation.clone(),
            source,
        })?;
        files.with_generation_config(&bytes, &generation)
    }

    /// A single file: a GGUF model.
    fn open_file(path: &Path, backend: &BackendChoice) -> Result<Self, Error> {
        #[cfg(feature = "ndarray")]
        if llada_ndarray::gguf::is_gguf(path) {
            if !matches!(backend, BackendChoice::Ndarray) {
                return Err(Error::WeightsFormat {
                    backend: backend.name(),
                    format: "gguf",
                    path: path.to_path_buf(),
                });
            }
            return Self::open_gguf(path);
        }
        let _ = backend;
        Err(Error::MissingDirectory {
            path: path.to_path_buf(),
        })
    }

    /// A GGUF file, with the tokenizer files beside it when there are any.
    #[cfg(feature = "ndarray")]
    fn open_gguf(path: &Path) -> Result<Self, Error> {
        let file = crate::gguf::open(path)?;
        let config = crate::gguf::config(&file)?;
        let beside = |name: &str| path.parent().map(|d| d.join(name)).filter(|p| p.is_file());
        let (tokenizer, tokenizer_config) =
            match (beside("tokenizer.json"), beside("tokenizer_config.json")) {
                (Some(tokenizer), Some(tokenizer_config)) => {
                    let text = std::fs::read(&tokenizer_config).map_err(|source| Error::Io {
                        path: tokenizer_config.clone(),
                        source,
                    })?;
                    let value = serde_json::from_slice(&text).map_err(|source| Error::Json {
                        path: tokenizer_config,
                        source,
                    })?;
                    (Tokenizer::from_file(&tokenizer)?, value)
                }
                _ => {
                    let tokenizer = crate::gguf::tokenizer(&file)?;
                    let tokenizer_config = crate::gguf::tokenizer_config(&file, &tokenizer);
                    (tokenizer, tokenizer_config)
                }
            };
        let template = ChatTemplate::from_tokenizer_config(&tokenizer_config)?;
        let special = SpecialTokens::resolve(&config, &tokenizer_config, &tokenizer)?;
        Ok(Self {
            config,
            tokenizer,
            template,
            special,
            decoding: crate::gguf::decoding(&file)?.unwrap_or_default(),
            weights: WeightSource::Gguf(path.to_path_buf()),
        })
    }

    /// These files with the decoding lengths a `generation_config.json` (its bytes; `path`
    /// names it in errors) declares under [`DECODING_KEY`], if it does.
    pub fn with_generation_config(mut self, bytes: &[u8], path: &Path) -> Result<Self, Error> {
        let value: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|source| Error::Json {
                path: path.to_path_buf(),
                source,
            })?;
        if let Some(declared) = DecodingDefaults::declared_in(&value, path)? {
            self.decoding = declared;
        }
        Ok(self)
    }

    /// The same from the files' bytes: `config.json`, `tokenizer.json` and
    /// `tokenizer_config.json`, with the weights at `weights`. Errors name the files by
    /// these names.
    pub fn from_bytes(
        config: &[u8],
        tokenizer: &[u8],
        tokenizer_config: &[u8],
        weights: WeightSource,
    ) -> Result<Self, Error> {
        Self::parse(
            (Path::new("config.json"), config),
            (Path::new("tokenizer.json"), tokenizer),
            (Path::new("tokenizer_config.json"), tokenizer_config),
            weights,
        )
    }

    fn parse(
        (config_path, config): (&Path, &[u8]),
        (tokenizer_path, tokenizer): (&Path, &[u8]),
        (tc_path, tokenizer_config): (&Path, &[u8]),
        weights: WeightSource,
    ) -> Result<Self, Error> {
        let json = |path: &Path, bytes: &[u8]| -> Result<serde_json::Value, Error> {
            serde_json::from_slice(bytes).map_err(|source| Error::Json {
                path: path.to_path_buf(),
                source,
            })
        };
        let config = json(config_path, config)?;
        let tokenizer_config = json(tc_path, tokenizer_config)?;
        let tokenizer = Tokenizer::from_bytes(tokenizer, tokenizer_path)?;
        let template = ChatTemplate::from_tokenizer_config(&tokenizer_config)?;
        let special = SpecialTokens::resolve(&config, &tokenizer_config, &tokenizer)?;
        Ok(Self {
            config,
            tokenizer,
            template,
            special,
            decoding: DecodingDefaults::default(),
            weights,
        })
    }

    /// `config.json`, parsed.
    pub fn config(&self) -> &serde_json::Value {
        &self.config
    }

    /// `max_sequence_length` of `config.json`, if it has one.
    pub fn max_sequence_length(&self) -> Option<usize> {
        self.config
            .get("max_sequence_length")
            .and_then(serde_json::Value::as_u64)
            .map(|v| v as usize)
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// The chat template of `tokenizer_config.json`, if it has one.
    pub fn chat_template(&self) -> Option<&ChatTemplate> {
        self.template.as_ref()
    }

    /// The special-token ids.
    pub fn special_tokens(&self) -> SpecialTokens {
        self.special
    }

    /// Where the weights are.
    pub fn weights(&self) -> &WeightSource {
        &self.weights
    }

    /// The decoding lengths that fit the model (declared, else the reference chat ones).
    pub fn decoding_defaults(&self) -> DecodingDefaults {
        self.decoding
    }

    /// Writes the model as one GGUF file at `out` that llama.cpp runs and [`ModelFiles::open`]
    /// reads back whole: the safetensors checkpoint in `file_type`'s tensor types, with
    /// llama.cpp's `llada` metadata, tensor names and row order, the tokenizer, special ids
    /// and chat template, and the decoding lengths the model declares. The file appears whole
    /// or not at all. From a GGUF model, its float tensors are converted and its metadata
    /// kept, as `llama-quantize` does (a tensor quantized to another type is an error, see
    /// [`llada_ndarray::LoadError::Requantize`]); ONNX weights are [`Error::ExportSource`]. A
    /// tokenizer that is not a byte-level BPE with a pre-tokenizer llama.cpp names is
    /// [`Error::GgufTokenizer`].
    #[cfg(feature = "ndarray")]
    pub fn write_gguf(
        &self,
        out: impl AsRef<Path>,
        file_type: llada_ndarray::gguf::FileType,
    ) -> Result<llada_ndarray::gguf::Written, Error> {
        crate::gguf::write(self, out.as_ref(), file_type)
    }

    /// The parameters that fit the model: its decoding lengths and its mask, EOS and EOT
    /// ids; the reference sampler's for everything else.
    pub fn default_params(&self) -> GenerateParams {
        self.decoding.apply(
            GenerateParams::default()
                .with_mask_id(self.special.mask)
                .with_eos_id(self.special.eos)
                .with_eot_id(self.special.eot),
        )
    }
}
