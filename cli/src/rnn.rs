//! `tessera rnn`: train a character language model and sample from it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use tessera_data::{split_fraction, CharVocab, SONNETS};
use tessera_nn::Params;
use tessera_rnn::{evaluate, sample, Cell, CharLm, CharLmConfig, TrainConfig, TrainState};
use tessera_tensor::Rng;

use crate::progress::{self, Mode};

/// `tessera rnn` subcommands.
#[derive(Subcommand, Debug)]
pub enum RnnCommand {
    /// Train a character language model with truncated BPTT, Adam and gradient clipping.
    ///
    /// The text is split into its first 90% (training) and last 10% (validation);
    /// validation loss is reported in nats per character. Writes
    /// OUT/checkpoint.safetensors (model, optimizer, position; atomically) and
    /// OUT/metrics.jsonl (one JSON line per evaluation).
    Train(TrainArgs),
    /// Generate text from a checkpoint written by `tessera rnn train`.
    Sample(SampleArgs),
}

/// Arguments of `tessera rnn train`.
#[derive(Args, Debug, serde::Serialize)]
#[command(args_override_self = true)]
pub struct TrainArgs {
    /// Read flags from a TOML file (keys are flag names; flags given here win). The
    /// effective configuration is written to OUT/config.toml.
    #[arg(long)]
    #[serde(skip)]
    config: Option<PathBuf>,
    /// UTF-8 text to learn (default: nine of Shakespeare's sonnets, built in).
    #[arg(long)]
    text: Option<PathBuf>,
    /// Recurrent cell: elman (the notes' network, closed-form BPTT), rnn, lstm or gru.
    #[arg(long, default_value = "elman")]
    cell: String,
    /// State size.
    #[arg(long, default_value_t = 256)]
    hidden: usize,
    /// Stacked layers (rnn, lstm, gru).
    #[arg(long, default_value_t = 1)]
    layers: usize,
    /// Parallel streams per step (default 32; 8 for the built-in text).
    #[arg(long)]
    batch: Option<usize>,
    /// Characters per truncated-BPTT chunk (default 64; 32 for the built-in text).
    #[arg(long)]
    seq: Option<usize>,
    /// Adam learning rate.
    #[arg(long, default_value_t = 2e-3)]
    lr: f64,
    /// Global gradient-norm clip.
    #[arg(long, default_value_t = 5.0)]
    clip: f32,
    /// Stop after this many steps in total.
    #[arg(long, default_value_t = 1000)]
    steps: u64,
    /// Also stop after this many minutes of training.
    #[arg(long)]
    minutes: Option<f64>,
    /// Evaluate on the validation text every this many steps (and at the end).
    #[arg(long, default_value_t = 200)]
    eval_every: u64,
    /// Save the checkpoint every this many steps (and at the end).
    #[arg(long, default_value_t = 1000)]
    save_every: u64,
    /// Output folder.
    #[arg(long, default_value = "runs/rnn")]
    out: PathBuf,
    /// Continue the run saved in OUT/checkpoint.safetensors.
    #[arg(long)]
    resume: bool,
    /// Seed of the initialisation.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Threads used by the kernels (default: all cores).
    #[arg(long, short)]
    threads: Option<usize>,
    /// Characters of sample text to print after training.
    #[arg(long, default_value_t = 200)]
    sample: usize,
    /// No progress bar: a line per evaluation only.
    #[arg(long)]
    quiet: bool,
    /// Print progress as JSON lines instead of text.
    #[arg(long)]
    json: bool,
}

/// Arguments of `tessera rnn sample`.
#[derive(Args, Debug)]
pub struct SampleArgs {
    /// A checkpoint written by `tessera rnn train`.
    #[arg(long)]
    checkpoint: PathBuf,
    /// Text to start from (every character must be in the model's vocabulary).
    #[arg(long, default_value = "\n")]
    prompt: String,
    /// Characters to generate.
    #[arg(long, default_value_t = 300)]
    length: usize,
    /// Softmax temperature: below 1 more conservative, above 1 more varied, 0 greedy.
    #[arg(long, default_value_t = 0.8)]
    temperature: f32,
    /// Seed of the sampler.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

/// Runs `tessera rnn ...`.
pub fn run(cmd: &RnnCommand) -> Result<()> {
    match cmd {
        RnnCommand::Train(a) => train(a),
        RnnCommand::Sample(a) => sample_cmd(a),
    }
}

fn read_text(path: Option<&Path>) -> Result<(String, String)> {
    match path {
        Some(p) => {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            if text.is_empty() {
                bail!("{} is empty", p.display());
            }
            Ok((text, p.display().to_string()))
        }
        None => Ok((SONNETS.to_string(), "built-in sonnets".to_string())),
    }
}

fn train(a: &TrainArgs) -> Result<()> {
    progress::set_threads(a.threads)?;
    if a.eval_every == 0 || a.save_every == 0 {
        bail!("--eval-every and --save-every must be at least 1");
    }
    let (text, source) = read_text(a.text.as_deref())?;
    progress::catch_ctrl_c();
    let ckpt = a.out.join("checkpoint.safetensors");
    let (mut state, vocab) = if a.resume {
        let file = tessera_tensor::SafeTensorsFile::open(&ckpt)
            .with_context(|| format!("resuming from {}", ckpt.display()))?;
        let meta = file.metadata()?;
        let vocab =
            CharVocab::from_chars(meta.get("vocab").map(String::as_str).unwrap_or_default())
                .with_context(|| format!("{}: no vocabulary in the metadata", ckpt.display()))?;
        let ids = vocab
            .encode(&text)
            .context("the text has characters the checkpoint's vocabulary lacks")?;
        let (train_ids, _) = split_fraction(&ids, 0.9)?;
        let (state, _) = TrainState::resume(&ckpt, train_ids)?;
        (state, vocab)
    } else {
        let vocab = CharVocab::from_text(&text)?;
        let ids = vocab.encode(&text)?;
        let (train_ids, _) = split_fraction(&ids, 0.9)?;
        let small = a.text.is_none();
        let config = TrainConfig {
            batch: a.batch.unwrap_or(if small { 8 } else { 32 }),
            seq: a.seq.unwrap_or(if small { 32 } else { 64 }),
            lr: a.lr,
            clip: a.clip,
        };
        let cell: Cell = a.cell.parse()?;
        let lm = CharLmConfig {
            cell,
            vocab: vocab.len(),
            hidden: a.hidden,
            layers: a.layers,
        };
        let model = CharLm::new(lm, &mut Rng::seed(a.seed))?;
        (TrainState::new(model, train_ids, config)?, vocab)
    };
    let ids = vocab.encode(&text)?;
    let (_, val_ids) = split_fraction(&ids, 0.9)?;
    let c = state.config;
    let lm = *state.model.config();
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    crate::config::save(a, &a.out.join("config.toml"))?;
    let metrics_path = a.out.join("metrics.jsonl");
    let mode = Mode::new(a.quiet, a.json);
    let bar = mode.bar(a.steps, "steps");
    bar.set_position(state.step);
    let meta = HashMap::from([
        ("vocab".to_string(), vocab.as_string()),
        ("text".to_string(), source.clone()),
    ]);
    mode.line(
        &bar,
        &format!(
            "{} {}x{} on {source}: {} characters ({} for validation), vocabulary {}, {} parameters",
            lm.cell.name(),
            lm.layers,
            lm.hidden,
            ids.len(),
            val_ids.len(),
            vocab.len(),
            state.model.num_parameters()
        ),
    );
    mode.line(
        &bar,
        &format!(
            "batch {} x {} characters, Adam {}, clip {}, {} threads; from step {}",
            c.batch,
            c.seq,
            c.lr,
            c.clip,
            tessera_tensor::num_threads(),
            state.step
        ),
    );
    // Validation on at most 64 streams of the same chunk length.
    let val_batch = (val_ids.len() / (c.seq + 1)).clamp(1, 64);
    let start = Instant::now();
    let mut window = (Instant::now(), 0u64, 0.0f64);
    let budget = a.minutes.map(|m| m * 60.0);
    let mut last_saved = state.step;
    let mut last_eval = None;
    loop {
        let out_of_time = budget.is_some_and(|b| start.elapsed().as_secs_f64() >= b);
        let done = state.step >= a.steps || out_of_time || progress::stop_requested();
        if (state.step % a.eval_every == 0 || done) && last_eval != Some(state.step) {
            last_eval = Some(state.step);
            let val = evaluate(&state.model, val_ids, val_batch, c.seq)?;
            let secs = window.0.elapsed().as_secs_f64();
            let tokens_per_s = (window.1 * (c.batch * c.seq) as u64) as f64 / secs.max(1e-9);
            let train_loss = if window.1 > 0 {
                window.2 / window.1 as f64
            } else {
                f64::NAN
            };
            let line = serde_json::json!({
                "step": state.step, "train_loss": train_loss, "val_loss": val,
                "tokens_per_s": tokens_per_s, "elapsed_s": start.elapsed().as_secs_f64(),
            });
            progress::record(&metrics_path, mode, &line)?;
            let train = if window.1 > 0 {
                format!("{train_loss:.4}")
            } else {
                "-".into()
            };
            mode.line(
                &bar,
                &format!(
                    "step {:>7}  train {train:>6}  val {val:.4} nats/char  {:>9.0} chars/s  {:>6.0} s",
                    state.step,
                    tokens_per_s,
                    start.elapsed().as_secs_f64()
                ),
            );
            window = (Instant::now(), 0, 0.0);
        }
        if (state.step % a.save_every == 0 || done) && state.step != last_saved {
            state.save(&ckpt, &meta)?;
            last_saved = state.step;
        }
        if done {
            break;
        }
        let s = state.step()?;
        window.1 += 1;
        window.2 += f64::from(s.loss);
        progress::show_step(
            &bar,
            state.step,
            window.2 / window.1 as f64,
            None,
            (window.1 * (c.batch * c.seq) as u64) as f64
                / window.0.elapsed().as_secs_f64().max(1e-9),
            "chars/s",
        );
    }
    bar.finish_and_clear();
    crate::plot::metrics_png(&metrics_path, &a.out.join("metrics.png"))?;
    if mode != Mode::Json {
        println!(
            "saved {} and {}",
            ckpt.display(),
            a.out.join("metrics.png").display()
        );
        if a.sample > 0 {
            let prompt =
                vocab.encode(&text[..text.char_indices().nth(1).map_or(text.len(), |(i, _)| i)])?;
            let out = sample(&state.model, &prompt, a.sample, 0.8, &mut Rng::seed(a.seed))?;
            println!(
                "--- sample (temperature 0.8) ---\n{}{}",
                vocab.decode(&prompt)?,
                vocab.decode(&out)?
            );
        }
    }
    Ok(())
}

fn sample_cmd(a: &SampleArgs) -> Result<()> {
    let file = tessera_tensor::SafeTensorsFile::open(&a.checkpoint)?;
    let meta = file.metadata()?;
    let vocab = CharVocab::from_chars(meta.get("vocab").map(String::as_str).unwrap_or_default())
        .with_context(|| {
            format!(
                "{}: no vocabulary in the metadata (not a `tessera rnn train` checkpoint)",
                a.checkpoint.display()
            )
        })?;
    let (model, _, _) = CharLm::load(&a.checkpoint)?;
    let prompt = vocab.encode(&a.prompt).with_context(|| {
        format!(
            "the prompt {:?} has characters outside the model's vocabulary",
            a.prompt
        )
    })?;
    let out = sample(
        &model,
        &prompt,
        a.length,
        a.temperature,
        &mut Rng::seed(a.seed),
    )?;
    println!("{}{}", a.prompt, vocab.decode(&out)?);
    Ok(())
}
