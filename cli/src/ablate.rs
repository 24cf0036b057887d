//! `tessera transformer ablate`: the variations of the paper's Table 3, each trained by
//! `tessera transformer train` on the same data, with the same seed, data order and
//! schedule, for the same budget, then measured as the paper measures them.
//!
//! Each row and seed is a run of its own in `OUT/ROW-seedS/` (a child process of this
//! command, so that `--jobs` rows train side by side and an interrupted row resumes from
//! its checkpoint); its measurements go to `OUT/ROW-seedS/result.json`, and a row with
//! that file is not run again. The table is made from those files.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use serde::{Deserialize, Serialize};
use tessera_data::{read_parallel, reversal_pairs};
use tessera_transformer::ablation::{markdown, scaled, select_rows, summarise, RowResult};
use tessera_transformer::{
    corpus_bleu, evaluate_loss, load_model, read_bpe, Corpus, TransformerConfig,
};

use crate::train::say;

/// Arguments of `tessera transformer ablate`.
#[derive(Args, Debug)]
pub struct AblateArgs {
    /// Rows of Table 3, comma-separated: groups (base, A, B, C, D, E, big) and single
    /// rows (A1, C4).
    #[arg(long, default_value = "base,A,B,C,D,E")]
    rows: String,
    /// A folder of parallel text, `train.LANG[.gz]` and `val.LANG[.gz]` (Multi30K's
    /// layout, `../shared/data/multi30k`). Without it: the built-in reversal task, the
    /// quick mode.
    #[arg(long)]
    data: Option<PathBuf>,
    /// The source language of --data.
    #[arg(long, default_value = "de")]
    src_lang: String,
    /// The target language of --data.
    #[arg(long, default_value = "en")]
    tgt_lang: String,
    /// d_model of the scaled base model (the paper's 512).
    #[arg(long, default_value_t = 256, value_parser = crate::ranges::at_least_one::<usize>())]
    d_model: usize,
    /// Heads of the scaled base model (the paper's 8); d_k = d_v = d_model / heads.
    #[arg(long, default_value_t = 8, value_parser = crate::ranges::at_least_one::<usize>())]
    heads: usize,
    /// d_ff of the scaled base model (the paper's 2048).
    #[arg(long, default_value_t = 1024, value_parser = crate::ranges::at_least_one::<usize>())]
    d_ff: usize,
    /// N of the scaled base model (the paper's 6); row (C) scales it, so it takes a
    /// multiple of 3.
    #[arg(long, default_value_t = 3, value_parser = crate::ranges::at_least_one::<usize>())]
    layers: usize,
    /// Size of the shared BPE vocabulary.
    #[arg(long, default_value_t = 8000, value_parser = crate::ranges::at_least_one::<usize>())]
    vocab: usize,
    /// Padded source + target tokens per batch.
    #[arg(long, default_value_t = 4096, value_parser = crate::ranges::at_least_one::<usize>())]
    max_tokens: usize,
    /// Warmup steps of the paper's learning-rate schedule.
    #[arg(long, default_value_t = 400, value_parser = crate::ranges::at_least_one::<u64>())]
    warmup: u64,
    /// Factor on the paper's learning-rate schedule.
    #[arg(long, default_value_t = 1.0, value_parser = crate::ranges::positive::<f64>(), allow_negative_numbers = true)]
    lr_factor: f64,
    /// The budget of every row in training steps (default 1000), or:
    #[arg(long, value_parser = crate::ranges::at_least_one::<u64>(), conflicts_with = "minutes")]
    steps: Option<u64>,
    /// the budget of every row in minutes of training.
    #[arg(long, value_parser = crate::ranges::positive::<f64>(), allow_negative_numbers = true)]
    minutes: Option<f64>,
    /// Runs of each row, with seeds 0, 1, ...: the table shows mean ± standard deviation.
    #[arg(long, default_value_t = 1, value_parser = crate::ranges::at_least_one::<u64>())]
    seeds: u64,
    /// Rows that train side by side, each on --threads / --jobs threads.
    #[arg(long, default_value_t = 1, value_parser = crate::ranges::at_least_one::<usize>())]
    jobs: usize,
    /// Beam width of the BLEU translations (the paper's 4).
    #[arg(long, default_value_t = 4, value_parser = crate::ranges::at_least_one::<usize>())]
    beam: usize,
    /// Length penalty α of the beam search (the paper's 0.6).
    #[arg(long, default_value_t = 0.6, value_parser = crate::ranges::non_negative::<f32>(), allow_negative_numbers = true)]
    alpha: f32,
    /// Translate only the first N validation sentences for BLEU (default: all; the
    /// perplexity always uses all).
    #[arg(long, value_parser = crate::ranges::at_least_one::<usize>())]
    bleu_sentences: Option<usize>,
    /// The folder of the runs and the table.
    #[arg(long, default_value = "runs/ablate")]
    out: PathBuf,
    #[command(flatten)]
    threads: crate::train::Threads,
}

/// What every run of one ablation shares; a folder holding runs with other settings is
/// refused, so that the rows of one table stay comparable.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Settings {
    data: String,
    base: TransformerConfig,
    max_tokens: usize,
    warmup: u64,
    lr_factor: f64,
    steps: Option<u64>,
    minutes: Option<f64>,
    beam: usize,
    alpha: f32,
    bleu_sentences: Option<usize>,
}

/// One row and seed to run.
struct Job {
    row: &'static str,
    seed: u64,
    config: TransformerConfig,
    dir: PathBuf,
}

/// How a job ended.
enum Outcome {
    Measured(Box<RowResult>),
    Interrupted,
}

/// The parallel text of `--data`, or the reversal task.
enum Data {
    /// The training files (source, target), the validation files and their pairs,
    /// read once.
    Files {
        train: (PathBuf, PathBuf),
        valid: (PathBuf, PathBuf),
        valid_pairs: Vec<(String, String)>,
    },
    /// The built-in reversal task, whose validation pairs depend on the seed.
    Reversal,
}

impl Data {
    /// The validation pairs that `transformer train` uses with `seed`.
    fn validation(&self, seed: u64) -> std::borrow::Cow<'_, [(String, String)]> {
        match self {
            Data::Files { valid_pairs, .. } => valid_pairs.into(),
            Data::Reversal => reversal_pairs(300, seed + 1).into(),
        }
    }
}

/// `dir/split.lang.gz`, or `dir/split.lang`.
fn text_file(dir: &Path, split: &str, lang: &str) -> Result<PathBuf> {
    let plain = dir.join(format!("{split}.{lang}"));
    let gz = dir.join(format!("{split}.{lang}.gz"));
    [gz, plain.clone()]
        .into_iter()
        .find(|p| p.is_file())
        .with_context(|| format!("{}: neither it nor its .gz exists", plain.display()))
}

/// Runs `tessera transformer ablate`.
pub fn run(a: &AblateArgs) -> Result<()> {
    // Everything that can be wrong is found before anything is written.
    let rows = select_rows(&a.rows)?;
    if !a.d_model.is_multiple_of(a.heads) {
        bail!(
            "--d-model {} does not split into {} heads; the base needs d_k = d_model / heads",
            a.d_model,
            a.heads
        );
    }
    let least = 256 + tessera_data::SPECIALS.len();
    if a.vocab < least {
        bail!(
            "--vocab {} is below the {least} byte and special tokens every BPE vocabulary has",
            a.vocab
        );
    }
    let base = TransformerConfig::small(a.vocab, a.d_model, a.heads, a.d_ff, a.layers);
    let configs = rows
        .iter()
        .map(|p| Ok((p.name, scaled(p, &base)?)))
        .collect::<Result<Vec<_>>>()?;
    let data = match &a.data {
        Some(dir) => {
            let pair = |split| -> Result<_> {
                Ok((
                    text_file(dir, split, &a.src_lang)?,
                    text_file(dir, split, &a.tgt_lang)?,
                ))
            };
            let valid = pair("val")?;
            Data::Files {
                train: pair("train")?,
                valid_pairs: read_parallel(&valid.0, &valid.1)?,
                valid,
            }
        }
        None => Data::Reversal,
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let per_job = (a.threads.threads.unwrap_or(cores) / a.jobs).max(1);
    tessera_tensor::set_num_threads(per_job);
    let settings = Settings {
        data: match &a.data {
            Some(d) => format!("{} ({} -> {})", d.display(), a.src_lang, a.tgt_lang),
            None => "built-in reversal task".into(),
        },
        base,
        max_tokens: a.max_tokens,
        warmup: a.warmup,
        lr_factor: a.lr_factor,
        steps: a.minutes.is_none().then(|| a.steps.unwrap_or(1000)),
        minutes: a.minutes,
        beam: a.beam,
        alpha: a.alpha,
        bleu_sentences: a.bleu_sentences,
    };
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let _lock = crate::train::Lock::take(&a.out)?;
    check_settings(&a.out, &settings)?;
    crate::train::catch_signals();

    let mut jobs = VecDeque::new();
    let mut done = Vec::new();
    for seed in 0..a.seeds {
        for &(row, config) in &configs {
            let dir = a.out.join(format!("{row}-seed{seed}"));
            match read_result(&dir)? {
                Some(r) => done.push(r),
                None => jobs.push_back(Job {
                    row,
                    seed,
                    config,
                    dir,
                }),
            }
        }
    }
    let (total, workers) = (done.len() + jobs.len(), a.jobs.min(jobs.len()));
    say(format!(
        "Table 3 on {}: {} row(s) × {} seed(s), {} finished earlier; base d_model {}, {} heads, d_ff {}, N {}; {} per row; {} job(s) of {} thread(s)",
        settings.data,
        configs.len(),
        a.seeds,
        done.len(),
        base.d_model,
        base.heads,
        base.d_ff,
        base.encoder_layers,
        match (settings.steps, settings.minutes) {
            (_, Some(m)) => format!("{m} minutes"),
            (s, None) => format!("{} steps", s.unwrap_or_default()),
        },
        a.jobs,
        per_job,
    ));
    let queue = Mutex::new(jobs);
    let finished = Mutex::new(done);
    let failures = Mutex::new(Vec::new());
    let interrupted = AtomicBool::new(false);
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| loop {
                if crate::train::stop_requested() {
                    return;
                }
                let Some(job) = queue.lock().map(|mut q| q.pop_front()).ok().flatten() else {
                    return;
                };
                match run_job(&settings, &data, &job, per_job) {
                    Ok(Outcome::Measured(r)) => {
                        say(format!(
                            "{:<4} seed {}: PPL {:.2}, BLEU {:.2}, {:.2}M parameters, {} steps in {:.0} s",
                            r.row,
                            r.seed,
                            r.perplexity(),
                            r.bleu,
                            r.parameters as f64 / 1e6,
                            r.steps,
                            r.train_seconds
                        ));
                        if let Ok(mut f) = finished.lock() {
                            f.push(*r);
                        }
                    }
                    Ok(Outcome::Interrupted) => interrupted.store(true, Ordering::SeqCst),
                    Err(e) => {
                        let msg = format!("{} seed {}: {e:#}", job.row, job.seed);
                        say(&msg);
                        if let Ok(mut f) = failures.lock() {
                            f.push(msg);
                        }
                    }
                }
            });
        }
    });
    let results = finished.into_inner().unwrap_or_default();
    let failures = failures.into_inner().unwrap_or_default();
    if !results.is_empty() {
        write_table(&a.out, &results)?;
    }
    if crate::train::stop_requested() || interrupted.into_inner() {
        say(format!(
            "interrupted: {} of {total} runs measured; the same command continues the others from their checkpoints",
            results.len()
        ));
        std::process::exit(130);
    }
    if !failures.is_empty() {
        bail!(
            "{} of {total} runs failed (above; each run's log is {}/ROW-seedS/train.log)",
            failures.len(),
            a.out.display()
        );
    }
    Ok(())
}

/// Refuses an `out` that holds an ablation with other settings, or records these.
fn check_settings(out: &Path, settings: &Settings) -> Result<()> {
    let path = out.join("ablate.json");
    if path.is_file() {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let earlier: Settings = serde_json::from_str(&text)
            .with_context(|| format!("{}: not the settings of an ablation", path.display()))?;
        if &earlier != settings {
            let (old, new) = (
                serde_json::to_value(&earlier)?,
                serde_json::to_value(settings)?,
            );
            let key = old
                .as_object()
                .and_then(|o| o.iter().find(|(k, v)| new.get(k.as_str()) != Some(v)))
                .map_or("?".to_string(), |(k, v)| {
                    format!("{k}: {v} there, {} here", new[k.as_str()])
                });
            bail!(
                "{} holds an ablation with other settings ({key}); its rows would not be comparable \
                 with these: use another --out, or the same settings to continue it",
                out.display()
            );
        }
        return Ok(());
    }
    let json = serde_json::to_string_pretty(settings)?;
    tessera_tensor::write_atomic(&path, json.as_bytes())?;
    Ok(())
}

/// The measurements of a finished run, if `dir` has them.
fn read_result(dir: &Path) -> Result<Option<RowResult>> {
    let path = dir.join("result.json");
    if !path.is_file() {
        return Ok(None);
    }
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let r = serde_json::from_str(&text)
        .with_context(|| format!("{}: not the result of an ablation run", path.display()))?;
    Ok(Some(r))
}

/// Seconds of training a run has had in earlier invocations.
fn spent(dir: &Path) -> f64 {
    std::fs::read_to_string(dir.join("spent_s"))
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(0.0)
}

/// The flags of `tessera transformer train` for `job`.
fn train_flags(settings: &Settings, data: &Data, job: &Job, threads: usize) -> Vec<OsString> {
    let c = &job.config;
    let mut f: Vec<OsString> = vec!["transformer".into(), "train".into()];
    let mut flag = |name: &str, value: String| {
        f.push(format!("--{name}").into());
        f.push(value.into());
    };
    if let Data::Files {
        train: (src, tgt),
        valid: (vs, vt),
        ..
    } = data
    {
        flag("src", src.display().to_string());
        flag("tgt", tgt.display().to_string());
        flag("valid-src", vs.display().to_string());
        flag("valid-tgt", vt.display().to_string());
    }
    flag("vocab", settings.base.src_vocab.to_string());
    flag("d-model", c.d_model.to_string());
    flag("heads", c.heads.to_string());
    flag("d-k", c.d_k.to_string());
    flag("d-v", c.d_v.to_string());
    flag("d-ff", c.d_ff.to_string());
    flag("layers", c.encoder_layers.to_string());
    flag("dropout", c.dropout.to_string());
    flag("label-smoothing", c.label_smoothing.to_string());
    flag("positional", c.positional.to_string());
    flag("max-tokens", settings.max_tokens.to_string());
    flag("warmup", settings.warmup.to_string());
    flag("lr-factor", settings.lr_factor.to_string());
    // One evaluation and one save at the end (a signal saves too): this command
    // measures the run afterwards.
    let steps = settings.steps.unwrap_or(1_000_000_000);
    flag("steps", steps.to_string());
    flag("eval-every", steps.to_string());
    flag("save-every", steps.to_string());
    flag("seed", job.seed.to_string());
    flag("threads", threads.to_string());
    flag("out", job.dir.display().to_string());
    // JSON lines into the log, and no sample translations after training.
    f.push("--json".into());
    f
}

/// Trains `job` (or continues it) in a child process, then measures it.
fn run_job(settings: &Settings, data: &Data, job: &Job, threads: usize) -> Result<Outcome> {
    std::fs::create_dir_all(&job.dir).with_context(|| format!("creating {}", job.dir.display()))?;
    let resume = job.dir.join("checkpoint.safetensors").is_file();
    let mut flags = train_flags(settings, data, job, threads);
    flags.push(if resume { "--resume" } else { "--overwrite" }.into());
    let before = spent(&job.dir);
    let left = settings.minutes.map(|m| m - before / 60.0);
    let trained = resume
        && settings
            .steps
            .is_some_and(|s| last_step(&job.dir).is_ok_and(|done| done >= s));
    let status = match left {
        _ if trained => None,
        Some(m) if m <= 0.0 && resume => None,
        Some(m) => {
            flags.push("--minutes".into());
            flags.push(m.max(0.0).to_string().into());
            Some(train(job, &flags, before)?)
        }
        None => Some(train(job, &flags, before)?),
    };
    if let Some(status) = status {
        match status.code() {
            Some(0) => {}
            Some(130) => return Ok(Outcome::Interrupted),
            code => {
                let log = std::fs::read_to_string(job.dir.join("train.log")).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(3).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                bail!(
                    "training ended with {}: {}",
                    code.map_or("a signal".to_string(), |c| format!("exit status {c}")),
                    tail.join(" / ")
                );
            }
        }
    }
    if crate::train::stop_requested() {
        return Ok(Outcome::Interrupted);
    }
    let result = measure(settings, data, job)?;
    let json = serde_json::to_string_pretty(&result)?;
    tessera_tensor::write_atomic(job.dir.join("result.json"), json.as_bytes())?;
    // The snapshots are for averaging; the table needs the checkpoint only.
    for entry in std::fs::read_dir(&job.dir)?.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("step-") && name.ends_with(".safetensors") {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    Ok(Outcome::Measured(Box::new(result)))
}

/// Runs this program's `transformer train` with `flags`, its output into
/// `dir/train.log`, passing a stopping signal on; adds its time to `dir/spent_s`.
fn train(job: &Job, flags: &[OsString], before: f64) -> Result<ExitStatus> {
    let exe = std::env::current_exe().context("finding this program to run its training")?;
    let log_path = job.dir.join("train.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("opening {}", log_path.display()))?;
    let start = Instant::now();
    let mut command = Command::new(exe);
    command
        .args(flags)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // The child hears of a stop from this process only, once: in a process group of its
    // own, a Ctrl-C in the terminal reaches this process and not the child; when this
    // process ends (a second Ctrl-C), the child is sent SIGTERM.
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        command.process_group(0);
        #[cfg(target_os = "linux")]
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
    }
    let mut child = command.spawn().context("starting the training process")?;
    let mut passed_on = false;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if crate::train::stop_requested() && !passed_on {
            #[cfg(unix)]
            // SAFETY: sends a signal to our own child, which has not been waited for.
            unsafe {
                libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
            }
            passed_on = true;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let total = before + start.elapsed().as_secs_f64();
    tessera_tensor::write_atomic(job.dir.join("spent_s"), total.to_string().as_bytes())?;
    Ok(status)
}

/// The paper's measurements of a trained run: perplexity per word-piece and beam-search
/// BLEU on the validation set, and the parameter count.
fn measure(settings: &Settings, data: &Data, job: &Job) -> Result<RowResult> {
    let checkpoint = job.dir.join("checkpoint.safetensors");
    let (model, meta) = load_model(&checkpoint)?;
    // The vocabulary is what the BPE learned, at most --vocab.
    let asked = TransformerConfig {
        src_vocab: model.config().src_vocab,
        tgt_vocab: model.config().tgt_vocab,
        ..job.config
    };
    if model.config() != &asked {
        bail!(
            "{} holds another model than row {} asks for: {:?}",
            checkpoint.display(),
            job.row,
            model.config()
        );
    }
    let bpe = read_bpe(&meta, &checkpoint)?;
    let pairs = data.validation(job.seed);
    let valid = Corpus::encode(&bpe, &pairs, model.config().max_len)?;
    let dev_loss = f64::from(evaluate_loss(&model, &valid, settings.max_tokens.max(512))?);
    let n = settings
        .bleu_sentences
        .unwrap_or(pairs.len())
        .min(pairs.len());
    let sources: Vec<&str> = pairs[..n].iter().map(|(s, _)| s.as_str()).collect();
    let refs: Vec<&str> = pairs[..n].iter().map(|(_, r)| r.as_str()).collect();
    let hyps = model.translate_all(&bpe, &sources, settings.beam, settings.alpha, |_| {})?;
    let bleu = corpus_bleu(&hyps, &refs)?.score;
    tessera_tensor::write_atomic(
        job.dir.join("valid.hyp"),
        (hyps.join("\n") + "\n").as_bytes(),
    )?;
    Ok(RowResult {
        row: job.row.to_string(),
        seed: job.seed,
        config: *model.config(),
        steps: last_step(&job.dir)?,
        train_seconds: spent(&job.dir),
        dev_loss,
        bleu,
        parameters: tessera_nn::Params::num_parameters(&model),
    })
}

/// The step of the last line of `dir/metrics.jsonl`.
fn last_step(dir: &Path) -> Result<u64> {
    let path = dir.join("metrics.jsonl");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let last = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("{}");
    let v: serde_json::Value =
        serde_json::from_str(last).with_context(|| format!("{}: its last line", path.display()))?;
    v["step"]
        .as_u64()
        .with_context(|| format!("{}: its last line has no step", path.display()))
}

/// Prints the table and writes it as OUT/table.md, OUT/table.json and OUT/table.png.
fn write_table(out: &Path, results: &[RowResult]) -> Result<()> {
    let rows = summarise(results);
    let table = markdown(&rows);
    say(format!("\n{table}"));
    tessera_tensor::write_atomic(out.join("table.md"), table.as_bytes())?;
    let json = serde_json::json!({ "rows": rows, "runs": results });
    tessera_tensor::write_atomic(
        out.join("table.json"),
        serde_json::to_string_pretty(&json)?.as_bytes(),
    )?;
    let plot = tessera_data::DotPlot {
        title: "Table 3 at this scale: each row's runs (dots), mean (bar) and the base (line)"
            .into(),
        rows: rows.iter().map(|r| r.row.clone()).collect(),
        panels: vec![
            panel(
                "PPL (dev), lower is better",
                results,
                &rows,
                RowResult::perplexity,
            ),
            panel("BLEU (dev), higher is better", results, &rows, |r| r.bleu),
        ],
    };
    plot.save(&out.join("table.png"))?;
    say(format!(
        "wrote {}, table.json and table.png",
        out.join("table.md").display()
    ));
    Ok(())
}

fn panel(
    label: &str,
    results: &[RowResult],
    rows: &[tessera_transformer::ablation::RowSummary],
    f: fn(&RowResult) -> f64,
) -> tessera_data::DotPanel {
    let values =
        |row: &str| -> Vec<f64> { results.iter().filter(|r| r.row == row).map(f).collect() };
    let base = values("base");
    tessera_data::DotPanel {
        x_label: label.into(),
        values: rows.iter().map(|r| values(&r.row)).collect(),
        reference: (!base.is_empty()).then(|| base.iter().sum::<f64>() / base.len() as f64),
    }
}
