//! Accuracy of a model on an `eval.json` set (the bundled model's held-out tasks by default):
//! exact-match accuracy of generation, tokens per second, and a multiple-choice score through
//! the Monte Carlo log-likelihood (the true answer against three others from the set).
//!
//! ```sh
//! cargo run --release --example eval
//! ```

mod common;

use std::path::PathBuf;
use std::time::Instant;

use clap::Parser;
use llada::LikelihoodOptions;
use llada_test_support::EvalSet;

/// Evaluate a LLaDA model on an eval.json set.
#[derive(Parser, Debug)]
#[command(version)]
struct Cli {
    #[command(flatten)]
    model: common::ModelArgs,
    #[command(flatten)]
    sampling: common::SamplingArgs,
    /// The set (default: eval.json in the model directory, or beside a GGUF file).
    #[arg(long)]
    eval: Option<PathBuf>,
    /// Evaluate only the first N items.
    #[arg(long)]
    limit: Option<usize>,
    /// Prompts per batch (left-padded).
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Monte Carlo samples per likelihood estimate (0 skips the multiple-choice score).
    #[arg(long, default_value_t = 32)]
    mc_samples: usize,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

fn main() -> anyhow::Result<()> {
    common::init_logging();
    let cli = Cli::parse();
    let path = cli.eval.clone().unwrap_or_else(|| {
        let model = &cli.model.model;
        let dir = if model.is_file() {
            model.parent().unwrap_or(model)
        } else {
            model
        };
        dir.join("eval.json")
    });
    let set = EvalSet::load(&path).map_err(anyhow::Error::from_boxed)?;
    let items = &set.items[..cli.limit.unwrap_or(set.items.len()).min(set.items.len())];
    anyhow::ensure!(!items.is_empty(), "{} has no items", path.display());
    let mut pipeline = cli.model.open()?;
    let params = cli.sampling.params(pipeline.model());
    if params.gen_length < set.gen_length {
        eprintln!(
            "note: --gen-length {} is shorter than the set's {}",
            params.gen_length, set.gen_length
        );
    }

    let start = Instant::now();
    let mut correct = 0;
    let mut forward_passes = 0;
    let mut first_wrong = None;
    for chunk in items.chunks(cli.batch.max(1)) {
        let prompts: Vec<Vec<u32>> = chunk.iter().map(|i| i.prompt_ids.clone()).collect();
        let outputs =
            pipeline.generate_ids(&prompts, &params, |_| std::ops::ControlFlow::Continue(()))?;
        forward_passes += outputs[0].forward_passes;
        for (item, out) in chunk.iter().zip(&outputs) {
            if out.answer_ids == item.answer_ids {
                correct += 1;
            } else if first_wrong.is_none() {
                first_wrong = Some(format!(
                    "{:?} -> {:?} (expected {:?})",
                    item.prompt, out.text, item.answer
                ));
            }
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let accuracy = correct as f64 / items.len() as f64;
    let tokens_per_s = (items.len() * params.gen_length) as f64 / elapsed;

    // Multiple choice: the true answer against the answers of the next three items.
    let mut mc_correct = 0;
    if cli.mc_samples > 0 {
        let batch = cli.mc_samples.min(8);
        let samples = cli.mc_samples.div_ceil(batch) * batch;
        for (i, item) in items.iter().enumerate() {
            let mut best = (f64::NEG_INFINITY, usize::MAX);
            for k in 0..4 {
                let candidate = &set.items[(i + k * 7) % set.items.len()].answer_ids;
                let choice = if k == 0 { &item.answer_ids } else { candidate };
                if k > 0 && choice == &item.answer_ids {
                    continue;
                }
                let options = LikelihoodOptions::default()
                    .with_mc_samples(samples)
                    .with_batch(batch)
                    .with_seed(i as u64);
                let ll = pipeline.log_likelihood(&item.prompt_ids, choice, &options)?;
                if ll > best.0 {
                    best = (ll, k);
                }
            }
            if best.1 == 0 {
                mc_correct += 1;
            }
        }
    }
    let mc_accuracy = mc_correct as f64 / items.len() as f64;

    if cli.json {
        let object = serde_json::json!({
            "items": items.len(),
            "exact_match": accuracy,
            "forward_passes_per_answer": forward_passes as f64 * cli.batch.max(1) as f64 / items.len() as f64,
            "tokens_per_s": tokens_per_s,
            "multiple_choice": if cli.mc_samples > 0 { Some(mc_accuracy) } else { None },
        });
        println!("{object}");
    } else {
        println!(
            "exact match: {correct}/{} = {:.1}%",
            items.len(),
            100.0 * accuracy
        );
        println!(
            "generation: {tokens_per_s:.1} tokens/s ({:.2} s for {} answers), {:.2} forward passes per answer",
            elapsed,
            items.len(),
            forward_passes as f64 * cli.batch.max(1) as f64 / items.len() as f64
        );
        if cli.mc_samples > 0 {
            println!(
                "multiple choice (log-likelihood, 4 options): {mc_correct}/{} = {:.1}%",
                items.len(),
                100.0 * mc_accuracy
            );
        }
        if let Some(wrong) = first_wrong {
            println!("first miss: {wrong}");
        }
    }
    Ok(())
}
