//! The model's own chat template, rendered the way Hugging Face's `apply_chat_template` does.

use minijinja::{Environment, ErrorKind as TemplateErrorKind, Value, context};
use serde::{Deserialize, Serialize};

use crate::error::Error;

/// One message of a conversation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// `"system"`, `"user"` or `"assistant"`.
    pub role: String,
    /// The text.
    pub content: String,
}

impl Message {
    /// A message from `role`.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
        }
    }

    /// A user message.
    pub fn user(content: impl Into<String>) -> Self {
        Self::new("user", content)
    }

    /// An assistant message.
    pub fn assistant(content: impl Into<String>) -> Self {
        Self::new("assistant", content)
    }
}

/// Template instructions one rendering may execute: LLaDA's template spends about twenty per
/// message, so a conversation of thousands of turns fits; a template that loops for ever
/// runs out.
const TEMPLATE_FUEL: u64 = 5_000_000;

/// Nesting depth of macro calls and includes a rendering may reach.
const TEMPLATE_RECURSION: usize = 64;

/// The `chat_template` of `tokenizer_config.json` with the special-token strings it may use.
#[derive(Clone, Debug)]
pub struct ChatTemplate {
    env: Environment<'static>,
    source: String,
    bos_token: String,
    eos_token: String,
    pad_token: String,
    unk_token: String,
}

/// A special token in `tokenizer_config.json`: a string or an object with `content`.
fn token_string(value: Option<&serde_json::Value>) -> String {
    match value {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(serde_json::Value::Object(o)) => o
            .get("content")
            .and_then(|c| c.as_str())
            .unwrap_or_default()
            .to_string(),
        _ => String::new(),
    }
}

impl ChatTemplate {
    /// Compiles `source` with the settings of Hugging Face's renderer (`trim_blocks`,
    /// `lstrip_blocks`, a `raise_exception` function).
    pub fn new(source: &str, bos_token: &str, eos_token: &str) -> Result<Self, Error> {
        let mut env = Environment::new();
        env.set_syntax(
            minijinja::syntax::SyntaxConfig::builder()
                .trim_blocks(true)
                .lstrip_blocks(true)
                .build()
                .map_err(Error::Template)?,
        );
        env.add_function(
            "raise_exception",
            |message: String| -> Result<Value, minijinja::Error> {
                Err(minijinja::Error::new(
                    TemplateErrorKind::InvalidOperation,
                    message,
                ))
            },
        );
        // A template comes from a model file: a hostile one must end in an error, not a hang.
        env.set_fuel(Some(TEMPLATE_FUEL));
        env.set_recursion_limit(TEMPLATE_RECURSION);
        env.add_template_owned("chat", source.to_string())
            .map_err(Error::Template)?;
        Ok(Self {
            env,
            source: source.to_string(),
            bos_token: bos_token.to_string(),
            eos_token: eos_token.to_string(),
            pad_token: String::new(),
            unk_token: String::new(),
        })
    }

    /// The template's text.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Takes `chat_template`, `bos_token` and `eos_token` from a parsed
    /// `tokenizer_config.json`. `Ok(None)` when it has no chat template.
    pub fn from_tokenizer_config(value: &serde_json::Value) -> Result<Option<Self>, Error> {
        let Some(source) = value.get("chat_template").and_then(|t| t.as_str()) else {
            return Ok(None);
        };
        let mut template = Self::new(
            source,
            &token_string(value.get("bos_token")),
            &token_string(value.get("eos_token")),
        )?;
        template.pad_token = token_string(value.get("pad_token"));
        template.unk_token = token_string(value.get("unk_token"));
        Ok(Some(template))
    }

    /// Renders `messages`; with `add_generation_prompt` the text ends where the assistant's
    /// answer begins.
    pub fn render(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
    ) -> Result<String, Error> {
        let template = self.env.get_template("chat").map_err(Error::Template)?;
        let messages: Vec<Value> = messages
            .iter()
            .map(|m| {
                Value::from_pairs([("role", m.role.as_str()), ("content", m.content.as_str())])
            })
            .collect();
        template
            .render(context! {
                messages => messages,
                add_generation_prompt => add_generation_prompt,
                bos_token => &self.bos_token,
                eos_token => &self.eos_token,
                pad_token => &self.pad_token,
                unk_token => &self.unk_token,
            })
            .map_err(Error::Template)
    }
}
