//! Generate an answer with a LLaDA model (the bundled tiny model by default).
//!
//! ```sh
//! cargo run --release --example generate -- --prompt "reverse: apple river stone"
//! cargo run --release --example generate -- --model ~/LLaDA-8B-Instruct --gen-length 128 \
//!     --steps 128 --block-length 32 --prompt "What is diffusion?"
//! ```

mod common;

use std::io::{IsTerminal, Read, Write};
use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context as _;
use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use llada::{Error, Progress};

/// Generate text with a LLaDA masked diffusion model.
#[derive(Parser, Debug)]
#[command(version)]
struct Cli {
    #[command(flatten)]
    model: common::ModelArgs,
    #[command(flatten)]
    sampling: common::SamplingArgs,
    /// The prompt (read from stdin when absent).
    #[arg(long)]
    prompt: Option<String>,
    /// Use the prompt as is, without the model's chat template.
    #[arg(long)]
    raw: bool,
    /// Redraw the answer in the terminal as tokens unmask.
    #[arg(long)]
    visual: bool,
    /// Print exactly one JSON object: prompt_ids, output_ids, text, forward_passes,
    /// elapsed_ms, tokens_per_s.
    #[arg(long)]
    json: bool,
}

fn main() -> anyhow::Result<()> {
    common::init_logging();
    let cli = Cli::parse();
    let prompt = match &cli.prompt {
        Some(p) => p.clone(),
        None => {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .context("reading the prompt from stdin")?;
            text.trim_end_matches('\n').to_string()
        }
    };
    let mut pipeline = cli.model.open()?;
    let params = cli.sampling.params(pipeline.model());
    let prompt_ids = if cli.raw {
        pipeline.model().tokenizer().encode(&prompt)?
    } else {
        pipeline.model().chat_prompt_ids(&prompt)?
    };
    tracing::info!(model = %cli.model.model.display(), backend = ?cli.model.backend, prompt_tokens = prompt_ids.len(), lengths = %cli.sampling.describe(pipeline.model(), &params), "generating");

    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = Arc::clone(&stop);
        ctrlc::set_handler(move || stop.store(true, Ordering::SeqCst))
            .context("installing the Ctrl-C handler")?;
    }
    let bar = (!cli.json && !cli.visual && std::io::stderr().is_terminal()).then(|| {
        let bar = ProgressBar::new((params.steps) as u64);
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} block {msg} [{bar:30}] {pos}/{len} steps {elapsed}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        bar
    });
    let visual = cli.visual && !cli.json;
    let mut steps_done = 0;
    let on_step = |p: &Progress<'_>| {
        steps_done += 1;
        if let Some(bar) = &bar {
            let (block, blocks) = p.block();
            bar.set_message(format!("{}/{}", block + 1, blocks));
            bar.set_position(steps_done as u64);
        }
        if visual {
            let text = p.partial_text(0).replace('\n', "⏎");
            let mut out = std::io::stdout().lock();
            let _ = write!(out, "\r\x1b[2K{text}");
            let _ = out.flush();
        }
        if stop.load(Ordering::SeqCst) {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    };
    let result = pipeline.generate_ids(std::slice::from_ref(&prompt_ids), &params, on_step);
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    if visual {
        println!();
    }
    let generated = match result {
        Ok(mut g) => g.remove(0),
        Err(Error::Cancelled) => {
            eprintln!("cancelled after {steps_done} steps");
            std::process::exit(130);
        }
        Err(e) => return Err(e.into()),
    };
    if cli.json {
        let object = serde_json::json!({
            "prompt_ids": generated.prompt_ids,
            "output_ids": generated.output_ids,
            "text": generated.text,
            "forward_passes": generated.forward_passes,
            "elapsed_ms": generated.elapsed.as_secs_f64() * 1e3,
            "tokens_per_s": generated.tokens_per_second(),
        });
        println!("{object}");
    } else {
        println!("{}", generated.text);
        tracing::info!(
            forward_passes = generated.forward_passes,
            elapsed_ms = generated.elapsed.as_millis() as u64,
            tokens_per_s = generated.tokens_per_second(),
            "done"
        );
    }
    Ok(())
}
