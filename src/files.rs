//! [`ModelFiles`]: everything that describes a model, read once and handed to the backends.

use std::path::{Path, PathBuf};

use llada_core::{BlockGrid, CacheMode, CommitRule, GenerateParams, Remasking};

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
    /// A GGUF file (llama.cpp's format, architecture `llada`, `llada-moe` or `dream`): for the ndarray
    /// backend.
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

/// The decoding defaults that fit a model: the lengths it declares ([`DECODING_KEY`]), else
/// the reference chat settings (LLaDA's `chat.py`: 128 tokens, 128 steps, blocks of 32); and
/// for a Dream model its own `diffusion_generate` settings ([`DreamDecoding`]).
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub struct DecodingDefaults {
    /// Tokens to generate.
    pub gen_length: usize,
    /// Denoising steps (the reference schedule's).
    pub steps: usize,
    /// Semi-autoregressive block length.
    pub block_length: usize,
    /// Whether the model declared them (else they are the reference chat settings, or
    /// Dream's own).
    pub declared: bool,
    /// Dream's decoding rule and sampling settings, for a Dream model.
    pub dream: Option<DreamDecoding>,
    /// LLaDA2.x's block diffusion: the absolute block grid, LLaDA2's threshold rule at 0.95,
    /// a stop after the block that holds end of text, the (exact) prefix cache; `steps`
    /// counts per block.
    pub block_diffusion: bool,
}

impl Default for DecodingDefaults {
    /// The reference chat settings: 128 tokens, 128 steps, blocks of 32.
    fn default() -> Self {
        Self {
            gen_length: 128,
            steps: 128,
            block_length: 32,
            declared: false,
            dream: None,
            block_diffusion: false,
        }
    }
}

/// Dream's decoding settings, as its `generation_config.json` holds them for
/// `diffusion_generate`: `alg` (`origin`, `maskgit_plus`, `topk_margin`, `entropy`), `eps`,
/// `alg_temp`, `temperature`, `top_p`, `top_k` (and `steps`, `max_new_tokens` for the
/// lengths). Absent keys take Dream's own defaults (`origin`, `eps` 0.001, 512 steps,
/// temperature 0, no filters).
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub struct DreamDecoding {
    /// `alg` as a ranking (`origin` is [`Remasking::Origin`]).
    pub remasking: Remasking,
    /// `eps`: the last time of the schedule.
    pub eps: f64,
    /// `alg_temp` (0 for none).
    pub alg_temp: f32,
    /// `temperature`.
    pub temperature: f32,
    /// `top_p` (1 for none).
    pub top_p: f32,
    /// `top_k` (0 for none).
    pub top_k: usize,
}

impl Default for DreamDecoding {
    fn default() -> Self {
        Self {
            remasking: Remasking::Origin,
            eps: 1e-3,
            alg_temp: 0.0,
            temperature: 0.0,
            top_p: 1.0,
            top_k: 0,
        }
    }
}

/// Dream's default number of steps (`DreamGenerationConfig`), and the answer length when a
/// Dream model declares none.
const DREAM_STEPS: usize = 512;

impl DreamDecoding {
    /// The settings of a Dream `generation_config.json` (`path` names it in errors), with the
    /// lengths it implies: `max_new_tokens` (else `steps`) tokens in `steps` steps, one block.
    fn read(
        value: &serde_json::Value,
        path: &Path,
    ) -> Result<(Self, Option<(usize, usize)>), Error> {
        let bad = |key: &'static str, reason: String| Error::Declaration {
            path: path.to_path_buf(),
            key,
            reason,
        };
        let number = |key: &'static str| -> Result<Option<f64>, Error> {
            match value.get(key) {
                None | Some(serde_json::Value::Null) => Ok(None),
                Some(v) => v
                    .as_f64()
                    .filter(|x| x.is_finite() && *x >= 0.0)
                    .map(Some)
                    .ok_or_else(|| bad(key, format!("expected a non-negative number, found {v}"))),
            }
        };
        let count = |key: &'static str| -> Result<Option<usize>, Error> {
            match value.get(key) {
                None | Some(serde_json::Value::Null) => Ok(None),
                Some(v) => v
                    .as_u64()
                    .filter(|&x| x > 0)
                    .map(|x| Some(x as usize))
                    .ok_or_else(|| bad(key, format!("expected a positive integer, found {v}"))),
            }
        };
        let mut dream = Self::default();
        // Each value is checked as Dream's rule will use it, naming its key.
        let check = |key: &'static str, params: GenerateParams| {
            params.validate().map_err(|e| bad(key, e.to_string()))
        };
        if let Some(alg) = value.get("alg").filter(|v| !v.is_null()) {
            let name = alg.as_str().unwrap_or_default();
            dream.remasking = match name {
                "origin" | "maskgit_plus" | "topk_margin" | "entropy" => {
                    name.parse().expect("Dream's algorithm names parse")
                }
                _ => {
                    return Err(bad(
                        "alg",
                        format!("{alg} is not one of origin, maskgit_plus, topk_margin, entropy"),
                    ));
                }
            };
        }
        if let Some(eps) = number("eps")? {
            dream.eps = eps;
        }
        dream.alg_temp = number("alg_temp")?.unwrap_or(0.0) as f32;
        dream.temperature = number("temperature")?.unwrap_or(0.0) as f32;
        dream.top_p = number("top_p")?.map_or(1.0, |p| p as f32);
        dream.top_k = count("top_k")?.unwrap_or(0);
        let rule = GenerateParams::default()
            .with_steps(1)
            .with_gen_length(1)
            .with_block_length(1)
            .with_commit(CommitRule::Timesteps(dream.eps));
        check("eps", rule)?;
        check("alg_temp", rule.with_alg_temp(dream.alg_temp))?;
        check("temperature", rule.with_temperature(dream.temperature))?;
        check("top_p", rule.with_top_p(dream.top_p))?;
        let steps = count("steps")?;
        let gen_length = count("max_new_tokens")?;
        let lengths = match (gen_length, steps) {
            (None, None) => None,
            (g, s) => {
                let steps = s.unwrap_or(DREAM_STEPS);
                Some((g.unwrap_or(steps), steps))
            }
        };
        Ok((dream, lengths))
    }

    /// `params` with Dream's rule: the time schedule with `eps`, the ranking, `alg_temp` and
    /// the sampling settings.
    pub fn apply(&self, params: GenerateParams) -> GenerateParams {
        params
            .with_commit(CommitRule::Timesteps(self.eps))
            .with_remasking(self.remasking)
            .with_alg_temp(self.alg_temp)
            .with_temperature(self.temperature)
            .with_top_p(self.top_p)
            .with_top_k(self.top_k)
    }
}

impl DecodingDefaults {
    /// Dream's own defaults: 512 tokens in 512 steps, one block, `origin` with `eps` 0.001.
    pub(crate) fn dream() -> Self {
        Self {
            gen_length: DREAM_STEPS,
            steps: DREAM_STEPS,
            block_length: DREAM_STEPS,
            declared: false,
            dream: Some(DreamDecoding::default()),
            block_diffusion: false,
        }
    }

    /// LLaDA2.x's defaults, as its reference `generate` ships them: up to 2048 tokens in
    /// blocks of 32 on the absolute grid, at most 32 passes per block, threshold 0.95,
    /// stopping after the block in which end of text appears.
    pub(crate) fn llada2() -> Self {
        Self {
            gen_length: 2048,
            steps: 32,
            block_length: 32,
            declared: false,
            dream: None,
            block_diffusion: true,
        }
    }

    /// The lengths `generation_config` declares under [`DECODING_KEY`], if it does; `path`
    /// names the file in errors.
    fn declared_in(
        generation_config: &serde_json::Value,
        path: &Path,
        block_diffusion: bool,
    ) -> Result<Option<Self>, Error> {
        match generation_config.get(DECODING_KEY) {
            Some(declared) => Self::from_declaration(declared, path, DECODING_KEY, block_diffusion),
            None => Ok(None),
        }
    }

    /// The lengths of a declaration `{"gen_length", "steps", "block_length"}`, checked (for
    /// LLaDA2's block diffusion when `block_diffusion`: steps per block, any answer length);
    /// `path` and `key` name it in errors.
    pub(crate) fn from_declaration(
        declared: &serde_json::Value,
        path: &Path,
        key: &'static str,
        block_diffusion: bool,
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
            dream: None,
            block_diffusion,
        };
        defaults
            .apply(GenerateParams::default())
            .validate()
            .map_err(|e| bad(e.to_string()))?;
        Ok(Some(defaults))
    }

    /// `params` with these lengths (and Dream's rule for a Dream model, LLaDA2's block
    /// diffusion for a LLaDA2.x model).
    pub fn apply(&self, params: GenerateParams) -> GenerateParams {
        let params = params
            .with_gen_length(self.gen_length)
            .with_steps(self.steps)
            .with_block_length(self.block_length);
        let params = if self.block_diffusion {
            params
                .with_grid(BlockGrid::Absolute)
                .with_commit(CommitRule::Llada2(0.95))
                .with_stop_at_eos(true)
                .with_cache(CacheMode::Prefix)
        } else {
            params
        };
        match &self.dream {
            Some(dream) => dream.apply(params),
            None => params,
        }
    }

    /// Where they come from, for help texts and logs.
    pub fn source(&self) -> &'static str {
        match (self.declared, self.dream.is_some()) {
            (true, false) if self.block_diffusion => {
                "LLaDA2's decoding, with the lengths of the model's generation_config.json `llada_decoding`"
            }
            (false, false) if self.block_diffusion => {
                "LLaDA2's reference decoding (blocks of 32, threshold 0.95); the model declares no lengths"
            }
            (true, false) => "the model's generation_config.json `llada_decoding`",
            (true, true) => "the model's generation_config.json (Dream's keys or `llada_decoding`)",
            (false, true) => "Dream's own defaults; the model declares none",
            (false, false) => "the reference chat settings; the model declares none",
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
    /// its weights. An `.onnx` file in a model directory: that directory, with this export for
    /// ONNX Runtime (a 4-bit or f16 copy beside `model.onnx`).
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
        Self::open_dir(dir, WeightSource::in_dir(dir, backend)?)
    }

    /// A directory's files, with `weights` for the weights.
    fn open_dir(dir: &Path, weights: WeightSource) -> Result<Self, Error> {
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

    /// A single file: a GGUF model, or an ONNX export in a model directory (for ONNX Runtime).
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
        if path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("onnx"))
        {
            // Another export of a model directory (4-bit, f16, ...): the rest of the model is
            // the directory's.
            if !matches!(backend, BackendChoice::Ort(_)) {
                return Err(Error::WeightsFormat {
                    backend: backend.name(),
                    format: "onnx",
                    path: path.to_path_buf(),
                });
            }
            let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
            return Self::open_dir(
                dir.unwrap_or(Path::new(".")),
                WeightSource::Onnx(path.to_path_buf()),
            );
        }
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
        let family_defaults = if is_dream(&config) {
            DecodingDefaults::dream()
        } else if is_llada2(&config) {
            DecodingDefaults::llada2()
        } else {
            DecodingDefaults::default()
        };
        let declared = crate::gguf::decoding(&file, family_defaults.block_diffusion)?;
        let mut files = Self {
            config,
            tokenizer,
            template,
            special,
            decoding: family_defaults,
            weights: WeightSource::Gguf(path.to_path_buf()),
        };
        // llama.cpp writes none of Dream's decoding settings: a Dream file in its model's
        // directory takes them from the generation_config.json beside it.
        if files.is_dream()
            && let Some(generation) = beside("generation_config.json")
        {
            let bytes = std::fs::read(&generation).map_err(|source| Error::Io {
                path: generation.clone(),
                source,
            })?;
            files = files.with_generation_config(&bytes, &generation)?;
        }
        // The lengths the file itself declares win.
        if let Some(declared) = declared {
            files.decoding = DecodingDefaults {
                dream: files.decoding.dream,
                block_diffusion: files.decoding.block_diffusion,
                ..declared
            };
        }
        Ok(files)
    }

    /// These files with the decoding lengths a `generation_config.json` (its bytes; `path`
    /// names it in errors) declares under [`DECODING_KEY`], if it does.
    pub fn with_generation_config(mut self, bytes: &[u8], path: &Path) -> Result<Self, Error> {
        let value: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|source| Error::Json {
                path: path.to_path_buf(),
                source,
            })?;
        let declared = DecodingDefaults::declared_in(&value, path, self.decoding.block_diffusion)?;
        if self.is_dream() {
            // Dream's keys; `llada_decoding`, when there too, sets the lengths.
            let (dream, lengths) = DreamDecoding::read(&value, path)?;
            self.decoding.dream = Some(dream);
            if let Some((gen_length, steps)) = lengths {
                self.decoding = DecodingDefaults {
                    gen_length,
                    steps,
                    block_length: gen_length,
                    declared: true,
                    dream: Some(dream),
                    block_diffusion: false,
                };
                let check = self.decoding.apply(GenerateParams::default());
                check.validate().map_err(|e| Error::Declaration {
                    path: path.to_path_buf(),
                    key: "steps",
                    reason: e.to_string(),
                })?;
            }
            if let Some(declared) = declared {
                self.decoding = DecodingDefaults {
                    dream: Some(dream),
                    ..declared
                };
            }
        } else if let Some(declared) = declared {
            self.decoding = DecodingDefaults {
                block_diffusion: self.decoding.block_diffusion,
                ..declared
            };
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
        let decoding = if is_dream(&config) {
            DecodingDefaults::dream()
        } else if is_llada2(&config) {
            DecodingDefaults::llada2()
        } else {
            DecodingDefaults::default()
        };
        Ok(Self {
            config,
            tokenizer,
            template,
            special,
            decoding,
            weights,
        })
    }

    /// The model family its `config.json` names: `"dream"` for Dream (and DiffuCoder,
    /// Dream-Coder: `model_type` `Dream`), `"llada-moe"` for LLaDA-MoE (`LLaDAMoEModelLM`),
    /// `"llada2"` for LLaDA2.x (`llada2_moe`), else `"llada"`.
    pub fn family(&self) -> &'static str {
        if self.is_dream() {
            "dream"
        } else if is_llada2(&self.config) {
            "llada2"
        } else if is_llada_moe(&self.config) {
            "llada-moe"
        } else {
            "llada"
        }
    }

    fn is_dream(&self) -> bool {
        is_dream(&self.config)
    }

    /// Whether the model's prediction for position `i` is its output row `i − 1`: Dream's
    /// (unless its config says `"shift_logits": false`), or any config that says
    /// `"shift_logits": true`.
    pub fn shifted_logits(&self) -> bool {
        self.declared_shift().unwrap_or(false)
    }

    /// What `config.json` says of the shift, when it says anything: a `shift_logits` key, or
    /// a Dream model. (Otherwise an ONNX export's own metadata decides.)
    pub(crate) fn declared_shift(&self) -> Option<bool> {
        match self
            .config
            .get("shift_logits")
            .and_then(serde_json::Value::as_bool)
        {
            Some(shift) => Some(shift),
            None => self.is_dream().then_some(true),
        }
    }

    /// `config.json`, parsed.
    pub fn config(&self) -> &serde_json::Value {
        &self.config
    }

    /// The longest sequence `config.json` allows (`max_sequence_length`, or
    /// `max_position_embeddings` in Qwen2-style configs), if it says.
    pub fn max_sequence_length(&self) -> Option<usize> {
        ["max_sequence_length", "max_position_embeddings"]
            .iter()
            .find_map(|key| self.config.get(*key).and_then(serde_json::Value::as_u64))
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

    /// Writes a GGUF file of this model's shape (the tensors, names, types and metadata that
    /// [`write_gguf`](Self::write_gguf) writes) with seeded random weights in place of the
    /// checkpoint's, which is not read and need not be present: for measuring speed and memory
    /// at a real model's size when its weights are not at hand. The same seed writes the same
    /// file; memory stays a few MiB while writing.
    #[cfg(feature = "ndarray")]
    pub fn write_gguf_random(
        &self,
        out: impl AsRef<Path>,
        file_type: llada_ndarray::gguf::FileType,
        seed: u64,
    ) -> Result<llada_ndarray::gguf::Written, Error> {
        crate::gguf::write_random(self, out.as_ref(), file_type, seed)
    }

    /// The parameters that fit the model: its decoding lengths and its mask, EOS and EOT
    /// ids; the reference sampler's for everything else.
    pub fn default_params(&self) -> GenerateParams {
        // LLaDA2's `generate` stops on end of text only.
        let eot = if self.decoding.block_diffusion {
            self.special.eos
        } else {
            self.special.eot
        };
        self.decoding.apply(
            GenerateParams::default()
                .with_mask_id(self.special.mask)
                .with_eos_id(self.special.eos)
                .with_eot_id(eot),
        )
    }
}

/// Whether a `config.json` is LLaDA2.x's: `model_type` `llada2_moe` or a LLaDA2 class in
/// `architectures` (the ndarray backend recognises the family the same way).
pub(crate) fn is_llada2(config: &serde_json::Value) -> bool {
    let model_type = config.get("model_type").and_then(serde_json::Value::as_str);
    model_type
        .is_some_and(|t| t.eq_ignore_ascii_case("llada2_moe") || t.eq_ignore_ascii_case("llada2"))
        || config
            .get("architectures")
            .and_then(serde_json::Value::as_array)
            .is_some_and(|a| {
                a.iter()
                    .any(|c| matches!(c.as_str(), Some("LLaDA2MoeModelLM" | "LLaDA2MoeModel")))
            })
}

/// Whether a `config.json` is LLaDA-MoE's: a LLaDA-MoE class in `architectures`, or
/// `model_type` `llada` with experts and without LLaDA-8B's `d_model` (the ndarray backend
/// recognises the family the same way).
pub(crate) fn is_llada_moe(config: &serde_json::Value) -> bool {
    let model_type = config.get("model_type").and_then(serde_json::Value::as_str);
    let by_class = config
        .get("architectures")
        .and_then(serde_json::Value::as_array)
        .is_some_and(|a| {
            a.iter()
                .any(|c| matches!(c.as_str(), Some("LLaDAMoEModelLM" | "LLaDAMoEModel")))
        });
    by_class
        || model_type.is_some_and(|t| {
            t.eq_ignore_ascii_case("lladamoe") || t.eq_ignore_ascii_case("llada_moe")
        })
        || (model_type.is_some_and(|t| t.eq_ignore_ascii_case("llada"))
            && config.get("num_experts").is_some()
            && config.get("d_model").is_none())
}

/// Whether a `config.json` is a Dream model's: `model_type` `Dream` or a Dream class in
/// `architectures` (the ndarray backend recognises the family the same way).
fn is_dream(config: &serde_json::Value) -> bool {
    let model_type = config.get("model_type").and_then(serde_json::Value::as_str);
    model_type.is_some_and(|t| t.eq_ignore_ascii_case("dream"))
        || config
            .get("architectures")
            .and_then(serde_json::Value::as_array)
            .is_some_and(|a| {
                a.iter()
                    .any(|c| matches!(c.as_str(), Some("DreamModel" | "DreamForCausalLM")))
            })
}
