//! An interactive multi-turn chat in the terminal (the bundled tiny model by default).
//!
//! ```sh
//! cargo run --release --example chat
//! ```
//! Type a message and press Enter; `/reset` starts a new conversation, `/quit` (or Ctrl-D)
//! leaves. The history is kept as LLaDA's reference chat loop keeps it.

mod common;

use std::io::{BufRead, Write};
use std::ops::ControlFlow;

use clap::Parser;
use llada::{Conversation, Progress};

/// Chat with a LLaDA masked diffusion model.
#[derive(Parser, Debug)]
#[command(version)]
struct Cli {
    #[command(flatten)]
    model: common::ModelArgs,
    #[command(flatten)]
    sampling: common::SamplingArgs,
    /// Show the answer unmasking step by step.
    #[arg(long)]
    visual: bool,
}

fn main() -> anyhow::Result<()> {
    common::init_logging();
    let cli = Cli::parse();
    let mut pipeline = cli.model.open()?;
    let params = cli.sampling.params(pipeline.model());
    let mut conversation = Conversation::new();
    let stdin = std::io::stdin();
    let mut stdout = std::io::stdout();
    eprintln!(
        "chatting with {} ({} backend; {}); /reset, /quit",
        cli.model.model.display(),
        pipeline.backend_name(),
        cli.sampling.describe(pipeline.model(), &params)
    );
    loop {
        write!(stdout, "> ")?;
        stdout.flush()?;
        let mut line = String::new();
        if stdin.lock().read_line(&mut line)? == 0 {
            break;
        }
        let line = line.trim();
        match line {
            "" => continue,
            "/quit" | "/exit" => break,
            "/reset" => {
                conversation = Conversation::new();
                eprintln!("(new conversation)");
                continue;
            }
            _ => {}
        }
        let visual = cli.visual;
        let on_step = |p: &Progress<'_>| {
            if visual {
                let _ = write!(
                    std::io::stdout(),
                    "\r\x1b[2K{}",
                    p.partial_text(0).replace('\n', "⏎")
                );
                let _ = std::io::stdout().flush();
            }
            ControlFlow::Continue(())
        };
        match pipeline.chat(&mut conversation, line, &params, on_step) {
            Ok(answer) => {
                if visual {
                    write!(stdout, "\r\x1b[2K")?;
                }
                writeln!(stdout, "{}", answer.text)?;
            }
            Err(llada::Error::PromptTooLong {
                prompt_len, max, ..
            }) => {
                eprintln!(
                    "the conversation ({prompt_len} tokens) no longer fits the model's {max}; /reset to start over"
                );
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
