//! `tessera rnn`: train a character language model and sample from it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use tessera_data::{split_fraction, CharVocab, SONNETS};
use tessera_nn::Params;
use tessera_rnn::{
    evaluate_with, read_vocab, sample, Cell, CharLm, CharLmConfig, TrainConfig, TrainState,
    VOCAB_KEY,
};
use tessera_tensor::Rng;

use crate::train::{choice, say, Budget, Eval, Mode, Plan, Run, RunArgs, Step, Task};

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
pub struct TrainArgs {
    /// UTF-8 text to learn (default: nine of Shakespeare's sonnets, built in).
    #[arg(long)]
    text: Option<PathBuf>,
    /// Recurrent cell: elman (the notes' network, closed-form BPTT), rnn, lstm or gru.
    #[arg(long, value_parser = choice::<CellName>("cell"), default_value = "elman")]
    cell: CellName,
    /// State size.
    #[arg(long, default_value_t = 256, value_parser = crate::ranges::at_least_one::<usize>())]
    hidden: usize,
    /// Stacked layers (rnn, lstm, gru).
    #[arg(long, default_value_t = 1, value_parser = crate::ranges::at_least_one::<usize>())]
    layers: usize,
    /// Parallel streams per step (default 32; 8 for the built-in text).
    #[arg(long, value_parser = crate::ranges::at_least_one::<usize>())]
    batch: Option<usize>,
    /// Characters per truncated-BPTT chunk (default 64; 32 for the built-in text).
    #[arg(long, value_parser = crate::ranges::at_least_one::<usize>())]
    seq: Option<usize>,
    /// Adam learning rate.
    #[arg(long, default_value_t = 2e-3, value_parser = crate::ranges::positive::<f64>(), allow_negative_numbers = true)]
    lr: f64,
    /// Global gradient-norm clip (0: no clipping).
    #[arg(long, default_value_t = 5.0, value_parser = crate::ranges::non_negative::<f32>(), allow_negative_numbers = true)]
    clip: f32,
    #[command(flatten)]
    #[serde(flatten)]
    budget: Budget,
    /// Characters of sample text to print after training.
    #[arg(long, default_value_t = 200)]
    sample: usize,
    #[command(flatten)]
    #[serde(flatten)]
    run: RunArgs,
}

/// The choices of `--cell`.
#[derive(Clone, Copy, Debug, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
enum CellName {
    Elman,
    Rnn,
    Lstm,
    Gru,
}

/// Arguments of `tessera rnn sample`.
#[derive(Args, Debug)]
pub struct SampleArgs {
    /// A checkpoint written by `tessera rnn train`.
    #[arg(long)]
    checkpoint: PathBuf,
    #[command(flatten)]
    threads: crate::train::Threads,
    /// Text to start from (every character must be in the model's vocabulary).
    #[arg(long, default_value = "\n")]
    prompt: String,
    /// Characters to generate.
    #[arg(long, default_value_t = 300)]
    length: usize,
    /// Softmax temperature: below 1 more conservative, above 1 more varied, 0 greedy.
    #[arg(long, default_value_t = 0.8, value_parser = crate::ranges::non_negative::<f32>(), allow_negative_numbers = true)]
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
    let Some(p) = path else {
        return Ok((SONNETS.to_string(), "built-in sonnets".to_string()));
    };
    let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
    if text.is_empty() {
        bail!("{} is empty", p.display());
    }
    Ok((text, p.display().to_string()))
}

/// A character language model learning a text: the first 90% trains, the rest
/// validates.
struct CharTask<'a> {
    args: &'a TrainArgs,
    state: TrainState,
    vocab: CharVocab,
    text: String,
    val: Vec<usize>,
    meta: HashMap<String, String>,
}

fn train(a: &TrainArgs) -> Result<()> {
    let (text, source) = read_text(a.text.as_deref())?;
    let run = Run::start(&a.run, "rnn", a)?;
    let vocab = match &run.resumed {
        Some(meta) => read_vocab(meta, &run.checkpoint)?,
        None => CharVocab::from_text(&text)?,
    };
    let ids = vocab
        .encode(&text)
        .context("the text has characters the checkpoint's vocabulary lacks")?;
    let (train_ids, val_ids) = split_fraction(&ids, 0.9)?;
    let state = if run.resumed.is_some() {
        let mut state = TrainState::resume(&run.checkpoint, train_ids)?.0;
        state.set_lr(a.lr);
        state
    } else {
        let small = a.text.is_none();
        let config = TrainConfig {
            batch: a.batch.unwrap_or(if small { 8 } else { 32 }),
            seq: a.seq.unwrap_or(if small { 32 } else { 64 }),
            lr: a.lr,
            clip: a.clip,
        };
        let cell = match a.cell {
            CellName::Elman => Cell::Elman,
            CellName::Rnn => Cell::Rnn,
            CellName::Lstm => Cell::Lstm,
            CellName::Gru => Cell::Gru,
        };
        let lm = CharLmConfig {
            cell,
            vocab: vocab.len(),
            hidden: a.hidden,
            layers: a.layers,
        };
        TrainState::new(
            CharLm::new(lm, &mut Rng::seed(a.run.seed))?,
            train_ids,
            config,
        )?
    };
    let meta = HashMap::from([
        (VOCAB_KEY.to_string(), vocab.as_string()),
        ("text".to_string(), source),
    ]);
    let val = val_ids.to_vec();
    run.check_split("--batch", state.config.batch)?;
    run.train(&mut CharTask {
        args: a,
        state,
        vocab,
        text,
        val,
        meta,
    })
}

impl Task for CharTask<'_> {
    fn plan(&self) -> Plan {
        self.args.budget.plan("chars/s", "tokens_per_s")
    }

    fn steps_done(&self) -> u64 {
        self.state.step
    }

    fn describe(&self) -> Vec<String> {
        let (c, lm) = (self.state.config, self.state.model.config());
        vec![
            format!(
                "{} {}x{} on {}: {} characters ({} for validation), vocabulary {}, {} parameters",
                lm.cell.name(),
                lm.layers,
                lm.hidden,
                self.meta["text"],
                self.text.chars().count(),
                self.val.len(),
                self.vocab.len(),
                self.state.model.num_parameters()
            ),
            format!(
                "batch {} x {} characters, Adam {}, clip {}, {} threads; from step {}",
                c.batch,
                c.seq,
                c.lr,
                c.clip,
                tessera_tensor::num_threads(),
                self.state.step
            ),
        ]
    }

    fn named_parameters(&self) -> Vec<(String, tessera_optim::Parameter)> {
        self.state.model.named_parameters()
    }

    fn step(&mut self, comm: &dyn tessera_optim::Communicator) -> Result<Step> {
        let c = self.state.config;
        let loss = self.state.step_with(comm)?.loss;
        Ok(Step {
            loss,
            lr: None,
            items: c.batch * c.seq,
            correct: None,
        })
    }

    fn evaluate(&mut self, comm: &dyn tessera_optim::Communicator) -> Result<Eval> {
        // At most 64 streams of the training chunk length.
        let seq = self.state.config.seq;
        let batch = (self.val.len() / (seq + 1)).clamp(1, 64);
        let val = evaluate_with(&self.state.model, &self.val, batch, seq, comm)?;
        let summary = format!("val {val:.4} nats/char");
        Ok(Eval::new(summary, [("val_loss", val.into())]))
    }

    fn save(&self, checkpoint: &Path) -> Result<()> {
        Ok(self.state.save(checkpoint, &self.meta)?)
    }

    fn finish(&mut self, _: &Path, mode: Mode) -> Result<Vec<PathBuf>> {
        if mode != Mode::Json && self.args.sample > 0 {
            let first = self.text.chars().next().map_or(0, char::len_utf8);
            let prompt = self.vocab.encode(&self.text[..first])?;
            let mut rng = Rng::seed(self.args.run.seed);
            let out = sample(&self.state.model, &prompt, self.args.sample, 0.8, &mut rng)?;
            let (p, o) = (self.vocab.decode(&prompt)?, self.vocab.decode(&out)?);
            say(format!("--- sample (temperature 0.8) ---\n{p}{o}"));
        }
        Ok(Vec::new())
    }
}

fn sample_cmd(a: &SampleArgs) -> Result<()> {
    a.threads.apply();
    let (model, _, meta) = CharLm::load(&a.checkpoint)?;
    let vocab = read_vocab(&meta, &a.checkpoint)?;
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
