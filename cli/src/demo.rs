//! `tessera demo`: the three model families trained briefly on built-in data.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use clap::Args;

/// Arguments of `tessera demo`.
#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Output folder (one sub-folder per model).
    #[arg(long, default_value = "runs/demo")]
    out: PathBuf,
    /// Seconds of training for each model.
    #[arg(long, default_value_t = 45.0, value_parser = crate::ranges::non_negative::<f64>(), allow_negative_numbers = true)]
    seconds: f64,
    #[command(flatten)]
    threads: crate::train::Threads,
}

/// Runs `tessera demo`: each step is an ordinary `tessera` command, printed before it
/// runs so that it can be repeated with other settings.
pub fn run(a: &DemoArgs) -> Result<()> {
    let start = Instant::now();
    let minutes = format!("{}", a.seconds / 60.0);
    let threads = a.threads.threads.map(|t| t.to_string());
    let dir = |name: &str| a.out.join(name).display().to_string();
    let (rnn, transformer, vit) = (dir("rnn"), dir("transformer"), dir("vit"));
    let mut steps: Vec<(&str, Vec<String>)> = vec![
        (
            "1. The Elman RNN (S_t = tanh(W S_{t-1} + U x_t + b_s)) learns the characters of nine sonnets, by BPTT",
            argv(&[
                "rnn", "train", "--cell", "elman", "--hidden", "128", "--steps", "600",
                "--minutes", &minutes, "--eval-every", "100", "--save-every", "600",
                "--sample", "240", "--out", &rnn,
            ]),
        ),
        (
            "2. The Transformer learns to reverse sequences of letters (encoder-decoder, warmup schedule, beam search)",
            argv(&[
                "transformer", "train", "--d-model", "64", "--heads", "4", "--d-ff", "256",
                "--layers", "2", "--dropout", "0.0", "--warmup", "150", "--lr-factor", "0.5",
                "--max-tokens", "2048", "--steps", "100000", "--minutes", &minutes,
                "--eval-every", "100", "--save-every", "100000", "--out", &transformer,
            ]),
        ),
        (
            "3. A Vision Transformer learns eight kinds of shapes (patches, class token, position embeddings)",
            argv(&[
                "vit", "train", "--dim", "64", "--depth", "4", "--heads", "4", "--patch", "8",
                "--batch", "64", "--epochs", "12", "--lr", "3e-3", "--crop-padding", "2",
                "--flip", "--minutes", &minutes, "--quiet", "--out", &vit,
            ]),
        ),
    ];
    for (_, v) in &mut steps {
        // A demo run replaces the previous demo's files.
        v.push("--overwrite".to_string());
        if let Some(t) = &threads {
            v.extend(["--threads".to_string(), t.clone()]);
        }
    }
    for (title, args) in &steps {
        crate::train::say(format_args!("\n== {title}\n$ tessera {}\n", args.join(" ")));
        crate::run_args(args)?;
    }
    crate::train::say(format_args!(
        "\nDemo finished in {:.0} s. Checkpoints, metrics.jsonl and plots are in {}.",
        start.elapsed().as_secs_f64(),
        a.out.display()
    ));
    Ok(())
}

fn argv(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|s| s.to_string()).collect()
}
