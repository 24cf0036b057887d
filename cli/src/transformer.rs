//! `tessera transformer`: the paper's configurations, training, translation and BLEU.

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use tessera_data::{read_parallel, reversal_pairs, Bpe};
use tessera_nn::Params;
use tessera_tensor::Rng;
use tessera_transformer::{
    average_checkpoints, evaluate_loss_with, load_model, preset, read_bpe, CheckpointConfig,
    Corpus, Positional, Preset, TrainConfig, Trainer, Transformer, TransformerConfig, BPE_KEY,
    PRESETS,
};

use crate::train::{say, Budget, Eval, Mode, Plan, Run, RunArgs, Step, Task};

/// `tessera transformer` subcommands.
#[derive(Subcommand, Debug)]
pub enum TransformerCommand {
    /// Print the exact parameter count of a Table 3 configuration as tessera builds it
    /// (shared source/target vocabulary, tied embeddings and pre-softmax projection,
    /// biases on every projection, no final stack norms), beside the paper's column.
    Params(ParamsArgs),
    /// Train a translation model on parallel text files (one sentence per line, .gz
    /// read as is) with a shared byte-level BPE vocabulary, or on a built-in
    /// sequence-reversal task when no files are given. Writes OUT/checkpoint.safetensors
    /// (the run, for --resume), OUT/step-N.safetensors snapshots (weights only, for
    /// averaging) and OUT/metrics.jsonl.
    Train(TrainArgs),
    /// Translate lines from standard input with beam search.
    Translate(TranslateArgs),
    /// Translate a source file and score it against references with BLEU (sacreBLEU's
    /// defaults).
    Eval(EvalArgs),
    /// Average the parameters of several checkpoints of one model (the paper averages
    /// the last 5 or 20) into a new file.
    Average(AverageArgs),
    /// Table 1 made measurable: time one layer of self-attention, recurrent,
    /// convolutional (kernel k) and restricted self-attention (neighbourhood r) for
    /// growing sequence lengths n at a fixed width d; print the per-layer cost, the
    /// sequential operations and the maximum path length beside the table's O() forms,
    /// and write a PNG of time against n.
    Complexity(ComplexityArgs),
    /// Table 3 rerun at this scale: train each chosen variation of a scaled-down base
    /// model for the same budget, with the same seed, data and schedule, then measure
    /// perplexity per word-piece and beam-search BLEU on the validation set as the
    /// paper does. Prints the table in the paper's layout and writes it as
    /// OUT/table.md, OUT/table.json and OUT/table.png. A rerun skips finished rows and
    /// continues interrupted ones.
    Ablate(crate::ablate::AblateArgs),
}

/// Arguments of `tessera transformer complexity`.
#[derive(Args, Debug)]
pub struct ComplexityArgs {
    /// Width d of the representations.
    #[arg(long, short, default_value_t = 512, value_parser = crate::ranges::at_least_one::<usize>())]
    d: usize,
    /// Sequence lengths n to time (comma-separated).
    #[arg(long, short, value_delimiter = ',', default_values_t = [16, 32, 64, 128, 256, 512, 1024, 2048])]
    n: Vec<usize>,
    /// Kernel width of the convolutional layer.
    #[arg(long, short, default_value_t = 3, value_parser = crate::ranges::at_least_one::<usize>())]
    k: usize,
    /// Neighbourhood size of the restricted self-attention.
    #[arg(long, short, default_value_t = 32, value_parser = crate::ranges::at_least_one::<usize>())]
    r: usize,
    /// Timed runs per point (the fastest counts).
    #[arg(long, default_value_t = 3, value_parser = crate::ranges::at_least_one::<usize>())]
    repeats: usize,
    /// The plot to write.
    #[arg(long, default_value = "complexity.png")]
    out: PathBuf,
    #[command(flatten)]
    threads: crate::train::Threads,
}

/// Arguments of `tessera transformer train`.
#[derive(Args, Debug, serde::Serialize)]
#[command(mut_arg("steps", |a| a.default_value("20000")))]
#[command(mut_arg("eval_every", |a| a.default_value("500")))]
pub struct TrainArgs {
    /// Source sentences.
    #[arg(long, requires = "tgt")]
    src: Option<PathBuf>,
    /// Target sentences (line i translates line i of --src).
    #[arg(long, requires = "src")]
    tgt: Option<PathBuf>,
    /// Validation source sentences.
    #[arg(long, requires = "valid_tgt")]
    valid_src: Option<PathBuf>,
    /// Validation target sentences.
    #[arg(long, requires = "valid_src")]
    valid_tgt: Option<PathBuf>,
    /// Size of the shared BPE vocabulary.
    #[arg(long, default_value_t = 8000, value_parser = crate::ranges::at_least_one::<usize>())]
    vocab: usize,
    /// A Table 3 preset (base, big, ...) instead of the sizes below.
    #[arg(long)]
    preset: Option<String>,
    /// d_model.
    #[arg(long, default_value_t = 256, value_parser = crate::ranges::at_least_one::<usize>())]
    d_model: usize,
    /// Attention heads.
    #[arg(long, default_value_t = 4, value_parser = crate::ranges::at_least_one::<usize>())]
    heads: usize,
    /// Query/key width per head (default d_model / heads; Table 3 row (B) makes it
    /// smaller).
    #[arg(long, value_parser = crate::ranges::at_least_one::<usize>())]
    d_k: Option<usize>,
    /// Value width per head (default d_model / heads).
    #[arg(long, value_parser = crate::ranges::at_least_one::<usize>())]
    d_v: Option<usize>,
    /// Inner width of the feed-forward networks.
    #[arg(long, default_value_t = 1024, value_parser = crate::ranges::at_least_one::<usize>())]
    d_ff: usize,
    /// Encoder and decoder layers.
    #[arg(long, default_value_t = 3, value_parser = crate::ranges::at_least_one::<usize>())]
    layers: usize,
    /// P_drop.
    #[arg(long, default_value_t = 0.1, value_parser = crate::ranges::fraction::<f32>(), allow_negative_numbers = true)]
    dropout: f32,
    /// Label smoothing.
    #[arg(long, default_value_t = 0.1, value_parser = crate::ranges::fraction::<f32>(), allow_negative_numbers = true)]
    label_smoothing: f32,
    /// How positions enter the model: sinusoids or a learned table (Table 3 row (E)).
    #[arg(long, default_value = "sinusoidal", value_parser = crate::train::choice::<PositionalName>("positional encoding"))]
    positional: PositionalName,
    /// Padded source + target tokens per batch.
    #[arg(long, default_value_t = 4096, value_parser = crate::ranges::at_least_one::<usize>())]
    max_tokens: usize,
    /// Warmup steps of the learning-rate schedule.
    #[arg(long, default_value_t = 4000, value_parser = crate::ranges::at_least_one::<u64>())]
    warmup: u64,
    /// Factor on the paper's learning-rate schedule.
    #[arg(long, default_value_t = 1.0, value_parser = crate::ranges::positive::<f64>(), allow_negative_numbers = true)]
    lr_factor: f64,
    #[command(flatten)]
    #[serde(flatten)]
    budget: Budget,
    #[command(flatten)]
    #[serde(flatten)]
    run: RunArgs,
}

/// The choices of `--positional`.
#[derive(Clone, Copy, Debug, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PositionalName {
    /// Sinusoids, no parameters.
    Sinusoidal,
    /// A learned table.
    Learned,
}

impl From<PositionalName> for Positional {
    fn from(p: PositionalName) -> Positional {
        match p {
            PositionalName::Sinusoidal => Positional::Sinusoidal,
            PositionalName::Learned => Positional::Learned,
        }
    }
}

/// Arguments of `tessera transformer translate`.
#[derive(Args, Debug)]
pub struct TranslateArgs {
    /// A checkpoint written by `tessera transformer train`.
    #[arg(long)]
    checkpoint: PathBuf,
    #[command(flatten)]
    threads: crate::train::Threads,
    /// Beam width (1: greedy).
    #[arg(long, default_value_t = 4, value_parser = crate::ranges::at_least_one::<usize>())]
    beam: usize,
    /// Length penalty α.
    #[arg(long, default_value_t = 0.6, value_parser = crate::ranges::non_negative::<f32>(), allow_negative_numbers = true)]
    alpha: f32,
}

/// Arguments of `tessera transformer eval`.
#[derive(Args, Debug)]
pub struct EvalArgs {
    /// A checkpoint written by `tessera transformer train`.
    #[arg(long)]
    checkpoint: PathBuf,
    #[command(flatten)]
    threads: crate::train::Threads,
    /// Source sentences.
    #[arg(long)]
    src: PathBuf,
    /// Reference translations.
    #[arg(long = "ref")]
    reference: PathBuf,
    /// Beam width (1: greedy).
    #[arg(long, default_value_t = 4, value_parser = crate::ranges::at_least_one::<usize>())]
    beam: usize,
    /// Length penalty α.
    #[arg(long, default_value_t = 0.6, value_parser = crate::ranges::non_negative::<f32>(), allow_negative_numbers = true)]
    alpha: f32,
    /// Only the first N sentences.
    #[arg(long, value_parser = crate::ranges::at_least_one::<usize>())]
    limit: Option<usize>,
    /// Write the translations here.
    #[arg(long)]
    output: Option<PathBuf>,
}

/// Arguments of `tessera transformer average`.
#[derive(Args, Debug)]
pub struct AverageArgs {
    /// The averaged checkpoint to write.
    #[arg(long)]
    out: PathBuf,
    /// Checkpoints of one model.
    #[arg(required = true)]
    checkpoints: Vec<PathBuf>,
}

/// Arguments of `tessera transformer params`.
#[derive(Args, Debug)]
pub struct ParamsArgs {
    /// A preset: base, big, A1..A4, B1, B2, C1..C7, D1..D4, E.
    #[arg(long, required_unless_present = "all")]
    preset: Option<String>,
    /// Every preset of Table 3.
    #[arg(long)]
    all: bool,
    /// Size of the shared vocabulary.
    #[arg(long, default_value_t = 37_000, value_parser = crate::ranges::at_least_one::<usize>())]
    vocab: usize,
}

/// Runs `tessera transformer ...`.
pub fn run(cmd: &TransformerCommand) -> Result<()> {
    match cmd {
        TransformerCommand::Params(a) => params(a),
        TransformerCommand::Train(a) => train(a),
        TransformerCommand::Translate(a) => translate(a),
        TransformerCommand::Eval(a) => eval(a),
        TransformerCommand::Average(a) => average(a),
        TransformerCommand::Complexity(a) => complexity(a),
        TransformerCommand::Ablate(a) => crate::ablate::run(a),
    }
}

/// A translation model learning parallel text (or the reversal task).
struct TranslationTask<'a> {
    args: &'a TrainArgs,
    trainer: Trainer,
    bpe: Bpe,
    train_pairs: usize,
    valid_pairs: Vec<(String, String)>,
    valid: Corpus,
    meta: HashMap<String, String>,
}

fn train(a: &TrainArgs) -> Result<()> {
    let (train_pairs, valid_pairs, source) = match (&a.src, &a.tgt) {
        (Some(s), Some(t)) => {
            let train = read_parallel(s, t)?;
            let valid = match (&a.valid_src, &a.valid_tgt) {
                (Some(vs), Some(vt)) => read_parallel(vs, vt)?,
                _ => train[..train.len().min(500)].to_vec(),
            };
            (train, valid, format!("{} -> {}", s.display(), t.display()))
        }
        _ => (
            reversal_pairs(20_000, a.run.seed),
            reversal_pairs(300, a.run.seed + 1),
            "built-in reversal task".to_string(),
        ),
    };
    let run = Run::start(&a.run, "transformer", a)?;
    let (trainer, bpe) = if let Some(meta) = &run.resumed {
        let bpe = read_bpe(meta, &run.checkpoint)?;
        let saved: CheckpointConfig =
            tessera_nn::get_json(meta, tessera_nn::CONFIG_KEY, &run.checkpoint)?;
        let max_len = saved.model.max_len;
        let corpus = Corpus::encode(&bpe, &train_pairs, max_len)?;
        let mut trainer = Trainer::resume(&run.checkpoint, corpus)?.0;
        trainer.config.lr_factor = a.lr_factor;
        (trainer, bpe)
    } else {
        let texts = train_pairs
            .iter()
            .flat_map(|(s, t)| [s.as_str(), t.as_str()]);
        let bpe = Bpe::train(texts, a.vocab, 2)?;
        let mut config = match &a.preset {
            Some(name) => preset(name)?.config(bpe.len()),
            None => TransformerConfig::small(bpe.len(), a.d_model, a.heads, a.d_ff, a.layers),
        };
        if a.preset.is_none() {
            if !a.d_model.is_multiple_of(a.heads) && (a.d_k.is_none() || a.d_v.is_none()) {
                bail!(
                    "--d-model {} does not split into {} heads: give --d-k and --d-v, or another --heads",
                    a.d_model,
                    a.heads
                );
            }
            config.d_k = a.d_k.unwrap_or(config.d_k);
            config.d_v = a.d_v.unwrap_or(config.d_v);
            config.positional = a.positional.into();
        }
        config.dropout = a.dropout;
        config.label_smoothing = a.label_smoothing;
        let model = Transformer::new(config, &mut Rng::seed(a.run.seed))?;
        let corpus = Corpus::encode(&bpe, &train_pairs, config.max_len)?;
        let tc = TrainConfig {
            max_tokens: a.max_tokens,
            warmup: a.warmup,
            lr_factor: a.lr_factor,
            seed: a.run.seed,
        };
        (Trainer::new(model, corpus, tc)?, bpe)
    };
    let valid = Corpus::encode(&bpe, &valid_pairs, trainer.model.config().max_len)?;
    let meta = HashMap::from([
        (BPE_KEY.to_string(), bpe.to_json()?),
        ("data".to_string(), source),
    ]);
    let train_pairs = train_pairs.len();
    run.train(&mut TranslationTask {
        args: a,
        trainer,
        bpe,
        train_pairs,
        valid_pairs,
        valid,
        meta,
    })
}

impl Task for TranslationTask<'_> {
    fn plan(&self) -> Plan {
        self.args
            .budget
            .plan("target tokens/s", "target_tokens_per_s")
    }

    fn steps_done(&self) -> u64 {
        self.trainer.step
    }

    fn describe(&self) -> Vec<String> {
        let (t, c) = (&self.trainer, self.trainer.model.config());
        vec![
            format!(
                "{}: {} training pairs, {} for validation, BPE vocabulary {}",
                self.meta["data"],
                self.train_pairs,
                self.valid.pairs.len(),
                self.bpe.len()
            ),
            format!(
                "d_model {}, {} heads, d_ff {}, {}+{} layers, dropout {}, {} parameters; {} batches of ≤{} tokens per epoch; from step {}",
                c.d_model,
                c.heads,
                c.d_ff,
                c.encoder_layers,
                c.decoder_layers,
                c.dropout,
                t.model.num_parameters(),
                t.batches_per_epoch(),
                t.config.max_tokens,
                t.step
            ),
        ]
    }

    fn named_parameters(&self) -> Vec<(String, tessera_optim::Parameter)> {
        self.trainer.model.named_parameters()
    }

    fn step(&mut self, comm: &dyn tessera_optim::Communicator) -> Result<Step> {
        let s = self.trainer.step_with(comm)?;
        Ok(Step {
            loss: s.loss,
            lr: Some(s.lr),
            items: s.target_tokens,
            correct: None,
        })
    }

    fn evaluate(&mut self, comm: &dyn tessera_optim::Communicator) -> Result<Eval> {
        let batch = self.args.max_tokens.max(512);
        let val = evaluate_loss_with(&self.trainer.model, &self.valid, batch, comm)?;
        let epoch = self.trainer.epoch;
        let summary = format!("val {val:.4}  epoch {epoch:>3}");
        Ok(Eval::new(
            summary,
            [("val_loss", val.into()), ("epoch", epoch.into())],
        ))
    }

    /// The run in OUT/checkpoint.safetensors, and a snapshot OUT/step-N.safetensors to
    /// average.
    fn save(&self, checkpoint: &Path) -> Result<()> {
        let snapshot = format!("step-{}.safetensors", self.trainer.step);
        self.trainer.save(checkpoint, &self.meta)?;
        // The snapshots are for averaging: the weights only, a third of the checkpoint.
        let snapshot = checkpoint.with_file_name(snapshot);
        Ok(self.trainer.model.save(snapshot, &self.meta)?)
    }

    /// A few validation translations (greedy) and their BLEU.
    fn finish(&mut self, _: &Path, mode: Mode) -> Result<Vec<PathBuf>> {
        if mode == Mode::Json {
            return Ok(Vec::new());
        }
        let pairs = &self.valid_pairs[..self.valid_pairs.len().min(100)];
        let (bleu, hyps) = self.trainer.model.bleu(&self.bpe, pairs, 1, 0.6)?;
        say(format!(
            "greedy BLEU on {} validation sentences: {bleu}",
            pairs.len()
        ));
        for (h, (src, _)) in hyps.iter().zip(pairs).take(3) {
            say(format!("  {src}\n  -> {h}"));
        }
        Ok(Vec::new())
    }
}

fn translate(a: &TranslateArgs) -> Result<()> {
    a.threads.apply();
    let (model, meta) = load_model(&a.checkpoint)?;
    let bpe = read_bpe(&meta, &a.checkpoint)?;
    let stdin = std::io::stdin();
    let mut out = std::io::stdout().lock();
    for line in stdin.lock().lines() {
        let line = line.context("reading standard input")?;
        writeln!(out, "{}", model.translate(&bpe, &line, a.beam, a.alpha)?)?;
    }
    Ok(())
}

fn eval(a: &EvalArgs) -> Result<()> {
    a.threads.apply();
    let (model, meta) = load_model(&a.checkpoint)?;
    let bpe = read_bpe(&meta, &a.checkpoint)?;
    let mut pairs = read_parallel(&a.src, &a.reference)?;
    if let Some(n) = a.limit {
        pairs.truncate(n);
    }
    let bar = crate::train::progress_bar(pairs.len() as u64, "sentences");
    let sources: Vec<&str> = pairs.iter().map(|(src, _)| src.as_str()).collect();
    // One sentence to a thread (--threads of them).
    let hyps = model.translate_all(&bpe, &sources, a.beam, a.alpha, |_| bar.inc(1))?;
    bar.finish_and_clear();
    let refs: Vec<&str> = pairs.iter().map(|(_, r)| r.as_str()).collect();
    let bleu = tessera_transformer::corpus_bleu(&hyps, &refs)?;
    if let Some(path) = &a.output {
        tessera_tensor::write_atomic(path, (hyps.join("\n") + "\n").as_bytes())?;
    }
    println!("{bleu}");
    Ok(())
}

fn average(a: &AverageArgs) -> Result<()> {
    let (model, mut meta) = load_model(&a.checkpoints[0])?;
    average_checkpoints(&model, &a.checkpoints)?;
    // A model checkpoint: the first file's extras (BPE, data), not its training state.
    meta.remove(tessera_nn::TRAIN_STATE_KEY);
    meta.insert("averaged".into(), a.checkpoints.len().to_string());
    model.save(&a.out, &meta)?;
    println!(
        "averaged {} checkpoints into {}",
        a.checkpoints.len(),
        a.out.display()
    );
    Ok(())
}

fn params(a: &ParamsArgs) -> Result<()> {
    let rows: Vec<&Preset> = match (&a.preset, a.all) {
        (_, true) => PRESETS.iter().collect(),
        (Some(name), false) => vec![preset(name)?],
        (None, false) => bail!("give --preset NAME or --all"),
    };
    println!("shared vocabulary of {} tokens", a.vocab);
    println!(
        "{:<5} {:>13} {:>8} {:>7}  configuration",
        "row", "parameters", "rounded", "paper"
    );
    let mut listed = 0;
    let mut agree = 0;
    for p in rows {
        let n = p.config(a.vocab).num_parameters();
        let m = (n as f64 / 1e6).round() as u32;
        let paper = match p.paper_millions {
            Some(pm) => {
                listed += 1;
                agree += usize::from(pm == m);
                format!("{pm}M")
            }
            None => "-".to_string(),
        };
        println!(
            "{:<5} {:>13} {:>7}M {:>7}  {}",
            p.name,
            group(n),
            m,
            paper,
            p.description
        );
    }
    if listed > 1 {
        println!(
            "{agree} of the {listed} rows with a count in the paper round to it with this vocabulary. \
             No single vocabulary matches the whole column: about 41,000 tokens gives ten of \
             eleven (base 65M, B 58M/60M, C 36M, 50M, 80M, 28M, 168M, 53M, 90M) but 218M for \
             big, where the paper has 213M."
        );
    }
    Ok(())
}

/// `63082496` as `63,082,496`.
fn group(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

fn complexity(a: &ComplexityArgs) -> Result<()> {
    use tessera_transformer::complexity::{Layer, LayerKind};
    a.threads.apply();
    if a.n.is_empty() || a.n.contains(&0) {
        bail!("--n needs sequence lengths of at least 1");
    }
    let kinds = [
        LayerKind::SelfAttention,
        LayerKind::Recurrent,
        LayerKind::Convolutional { k: a.k },
        LayerKind::Restricted { r: a.r },
    ];
    let mut rng = Rng::seed(0);
    let layers = kinds
        .iter()
        .map(|&k| Layer::new(k, a.d, &mut rng))
        .collect::<Result<Vec<_>, _>>()?;
    println!(
        "Table 1 of the paper, one layer at d = {}, {} thread(s):\n",
        a.d,
        tessera_tensor::num_threads()
    );
    println!(
        "{:<36} {:<12} {:<12} {:<12}",
        "layer", "per layer", "sequential", "max path"
    );
    for k in &kinds {
        println!(
            "{:<36} {:<12} {:<12} {:<12}",
            k.name(),
            k.complexity(),
            k.sequential(),
            k.path()
        );
    }
    let short = ["self-attention", "recurrent", "convolution", "restricted"];
    println!("\ntime per layer in ms (multiply-adds per ns), sequential operations / maximum path length in layers:\n");
    print!("{:>6}", "n");
    for s in short {
        print!("  {s:>24}");
    }
    println!();
    let mut series: Vec<Vec<(f64, f64)>> = vec![Vec::new(); kinds.len()];
    let mut crossover = None;
    for &n in &a.n {
        print!("{n:>6}");
        let mut times = Vec::new();
        for (i, layer) in layers.iter().enumerate() {
            let t = layer.time(n, a.repeats, &mut rng)?.as_secs_f64();
            let k = layer.kind();
            let rate = k.multiply_adds(n, a.d) / t / 1e9;
            let path = match k.max_path_length(n) {
                usize::MAX => "∞".to_string(),
                p => p.to_string(),
            };
            let cell = format!(
                "{:.3} ({rate:.1}) {}/{path}",
                t * 1e3,
                k.sequential_operations(n)
            );
            print!("  {cell:>24}");
            series[i].push((n as f64, t * 1e3));
            times.push(t);
        }
        println!();
        if crossover.is_none() && times[0] > times[1] {
            crossover = Some(n);
        }
    }
    match crossover {
        Some(n) => println!(
            "\nself-attention is faster than the recurrent layer below n = {n} (d = {}); the paper: when n < d",
            a.d
        ),
        None => println!(
            "\nself-attention is faster than the recurrent layer at every n measured (d = {})",
            a.d
        ),
    }
    let chart = tessera_data::Chart {
        title: format!("one layer, d = {}", a.d),
        x_label: "sequence length n".into(),
        y_label: "ms per layer".into(),
        series: kinds
            .iter()
            .zip(series)
            .map(|(k, points)| tessera_data::Series {
                name: k.name(),
                points,
                style: tessera_data::Style::Line,
            })
            .collect(),
        log_x: true,
        log_y: true,
    };
    if let Some(dir) = a.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    chart.save(&a.out)?;
    println!("wrote {}", a.out.display());
    Ok(())
}
