//! The one training loop of `rnn train`, `transformer train` and `vit train`, and the
//! arguments they share.
//!
//! A model plugs in as a [`Task`]: it owns its model, data and optimizer and knows how
//! to take a step, evaluate and save. The loop owns everything else: threads, Ctrl-C,
//! the step and time budgets, the progress bar or its quiet and JSON forms, the
//! evaluation and checkpoint cadence, `metrics.jsonl`, the final plot and `--resume`.
//!
//! Under `mpirun -n R` (with the feature `mpi`) the same loop runs data-parallel on
//! every rank: the ranks check that they agree on the configuration and the model,
//! start from rank 0's parameters, take each step on their part of the batch with
//! gradients averaged over all ranks ([`Task::step`] gets the [`Communicator`]), and
//! stop together. The ranks share the evaluation: each evaluates its part of the
//! held-out set and the sums are added over the ranks. Only rank 0 prints, writes the
//! configuration, metrics, plot and checkpoints.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io::Write;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Once;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::builder::{PossibleValue, TypedValueParser};
use clap::{error::ErrorKind, ArgAction, Args, ValueEnum};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{Map, Value};
use tessera_optim::{
    broadcast_parameters, check_same, describe_parameters, sum_over_ranks, Communicator, Parameter,
};

/// The arguments every training command shares.
#[derive(Args, Debug, serde::Serialize)]
#[command(args_override_self = true)]
pub struct RunArgs {
    /// Read flags from a TOML file (keys are flag names, `lr = 1e-3`, `flip = true`);
    /// flags given here win, `--flip false` included. The effective configuration is
    /// written to OUT/config.toml.
    #[arg(long)]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Output folder (default: runs/MODEL, e.g. runs/vit).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Continue the run saved in OUT/checkpoint.safetensors.
    #[arg(long, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true", default_value_t)]
    pub resume: bool,
    /// Start afresh in an OUT that holds an earlier run: its checkpoint, snapshots,
    /// metrics and plot are removed first. Without this flag or --resume such an OUT
    /// is refused.
    #[arg(long, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true", default_value_t)]
    #[serde(skip)]
    pub overwrite: bool,
    /// Seed of the initialisation, the data order and the augmentation.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[command(flatten)]
    #[serde(flatten)]
    pub threads: Threads,
    /// Also stop after this many minutes of training (a checkpoint is saved).
    #[arg(long, value_parser = crate::ranges::non_negative::<f64>(), allow_negative_numbers = true)]
    pub minutes: Option<f64>,
    /// No progress bar: a line per evaluation only.
    #[arg(long, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true", default_value_t)]
    pub quiet: bool,
    /// One JSON line per evaluation on stdout, nothing else.
    #[arg(long, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true", default_value_t)]
    pub json: bool,
    /// Under mpirun: the gradients are averaged over the ranks in buckets of at most
    /// this many MiB (default 25, as PyTorch's DDP).
    #[arg(long, value_parser = crate::ranges::positive::<f64>())]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bucket_mb: Option<f64>,
}

/// How long a run trains and how often it evaluates and saves, in steps (`rnn train`
/// and `transformer train`; `vit train` counts in epochs).
#[derive(Args, Debug, serde::Serialize)]
pub struct Budget {
    /// Stop after this many steps in total.
    #[arg(long, default_value_t = 1000)]
    pub steps: u64,
    /// Evaluate on the validation data every this many steps (and at the end).
    #[arg(long, default_value_t = 200, value_parser = crate::ranges::at_least_one::<u64>())]
    pub eval_every: u64,
    /// Save the checkpoint every this many steps (and at the end).
    #[arg(long, default_value_t = 1000, value_parser = crate::ranges::at_least_one::<u64>())]
    pub save_every: u64,
}

impl Budget {
    /// The plan of this budget, evaluating from the first step; throughput in `unit`
    /// (`"chars/s"`), called `rate_key` in metrics.jsonl (`"tokens_per_s"`).
    pub fn plan(&self, unit: &'static str, rate_key: &'static str) -> Plan {
        let (steps, eval_every, save_every) = (self.steps, self.eval_every, self.save_every);
        let eval_at_start = true;
        Plan {
            steps,
            eval_every,
            eval_at_start,
            save_every,
            unit,
            rate_key,
        }
    }
}

/// One model's side of the training loop. The loop calls [`Task::step`] until the
/// budget is spent, [`Task::evaluate`] and [`Task::save`] at the [`Plan`]'s cadence and
/// when the run stops, then [`Task::finish`].
pub trait Task {
    /// When to stop, evaluate and save, and what a step's items are.
    fn plan(&self) -> Plan;
    /// Training steps done so far: 0 for a new run, the checkpoint's for a resumed one.
    fn steps_done(&self) -> u64;
    /// Lines that describe the run before it starts (data, model, batch).
    fn describe(&self) -> Vec<String>;
    /// The model's parameters, by name (checked alike on every rank and broadcast from
    /// rank 0 before the first step of a data-parallel run).
    fn named_parameters(&self) -> Vec<(String, Parameter)>;
    /// One optimizer step: on this rank's part of the batch, with the gradients
    /// averaged over the ranks of `comm`; what it reports is the whole batch's.
    fn step(&mut self, comm: &dyn Communicator) -> Result<Step>;
    /// The held-out loss and whatever else the task measures, over the whole held-out
    /// set: each rank of `comm` evaluates its part, and the sums are added over the
    /// ranks.
    fn evaluate(&mut self, comm: &dyn Communicator) -> Result<Eval>;
    /// Writes what `--resume` continues from (atomically).
    fn save(&self, checkpoint: &Path) -> Result<()>;
    /// Runs after the loop (after the last save): samples or translations to print
    /// (`mode` says whether to), files to export. Returns the files it wrote.
    fn finish(&mut self, _out: &Path, _mode: Mode) -> Result<Vec<PathBuf>> {
        Ok(Vec::new())
    }
}

/// When a run stops, evaluates and saves, and how its throughput is counted.
#[derive(Clone, Copy, Debug)]
pub struct Plan {
    /// Stop when this many steps are done in total.
    pub steps: u64,
    /// Evaluate every this many steps, and when the run stops.
    pub eval_every: u64,
    /// Also evaluate before the first step when the position is on the cadence.
    pub eval_at_start: bool,
    /// Save the checkpoint every this many steps, and when the run stops.
    pub save_every: u64,
    /// The items of [`Step::items`] per second, as shown: `"chars/s"`.
    pub unit: &'static str,
    /// The same in metrics.jsonl: `"tokens_per_s"`.
    pub rate_key: &'static str,
}

/// What one training step reports.
#[derive(Clone, Copy, Debug)]
pub struct Step {
    /// The mean loss of the batch.
    pub loss: f32,
    /// The learning rate, when it follows a schedule.
    pub lr: Option<f64>,
    /// Items trained on (characters, target tokens, images), for the throughput.
    pub items: usize,
    /// Items predicted correctly, for tasks that count them (the training accuracy).
    pub correct: Option<usize>,
}

/// An evaluation: its fields in metrics.jsonl and its words on the progress line.
#[derive(Clone, Debug, Default)]
pub struct Eval {
    /// For example `val_loss`, `test_acc`, `epoch`.
    pub metrics: Map<String, Value>,
    /// For example `val 2.5613 nats/char`.
    pub summary: String,
}

impl Eval {
    /// An evaluation from its summary and its metrics.
    pub fn new(summary: String, metrics: impl IntoIterator<Item = (&'static str, Value)>) -> Eval {
        let metrics = metrics
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        Eval { metrics, summary }
    }
}

/// A run about to start: the output folder, the checkpoint and, with `--resume`, the
/// metadata stored in it. It holds the folder's lock until it ends.
pub struct Run {
    /// The output folder.
    pub out: PathBuf,
    /// `OUT/checkpoint.safetensors`.
    pub checkpoint: PathBuf,
    /// The checkpoint's metadata when resuming.
    pub resumed: Option<HashMap<String, String>>,
    mode: Mode,
    minutes: Option<f64>,
    /// Rank 0's claim on the folder (the other ranks take none).
    lock: Option<Lock>,
    comm: Rc<dyn Communicator>,
    /// The effective configuration, which every rank must share.
    config: String,
    /// Training's memory budget, in force while the model is built and trained.
    _budget: Option<tessera_nn::BudgetGuard>,
}

impl Run {
    /// Applies `--threads`, creates the output folder (`runs/{model}` by default) and
    /// locks it, refuses to replace an earlier run in it unless `--overwrite` (or
    /// `--resume`) says so, removes what killed saves left behind, writes the effective
    /// configuration `args` to OUT/config.toml and, with `--resume`, reads the
    /// checkpoint's metadata.
    ///
    /// Under mpirun only rank 0 touches the folder; the others wait for it, then read
    /// the checkpoint themselves when resuming (on several hosts OUT must be shared or
    /// copied). `--threads` defaults to the cores over the ranks on this host.
    pub fn start(run: &RunArgs, model: &str, args: &impl serde::Serialize) -> Result<Run> {
        let comm = crate::dist::communicator(run.bucket_mb)?;
        match run.threads.threads {
            Some(_) => run.threads.apply(),
            None if comm.size() > 1 => {
                let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
                tessera_tensor::set_num_threads((cores / crate::dist::ranks_on_this_host()).max(1));
            }
            None => {}
        }
        if run.resume && run.overwrite {
            bail!("--resume continues the run in OUT and --overwrite replaces it: give one");
        }
        let out = run
            .out
            .clone()
            .unwrap_or_else(|| Path::new("runs").join(model));
        let checkpoint = out.join("checkpoint.safetensors");
        let config = out.join("config.toml");
        let lock = if comm.rank() == 0 {
            std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
            let lock = Lock::take(&out)?;
            if !run.resume {
                clear_earlier_run(&out, run.overwrite)?;
            }
            remove_leftovers(&out)?;
            if run.resume {
                crate::config::check_resumed(args, &config)?;
            }
            crate::config::save(args, &out, &config)?;
            Some(lock)
        } else {
            None
        };
        comm.barrier()?;
        let table = toml::Table::try_from(args).context("the configuration as TOML")?;
        let config = toml::to_string(&table).context("the configuration as TOML")?;
        let open = || -> Result<_> {
            let file = tessera_tensor::SafeTensorsFile::open(&checkpoint)
                .with_context(|| format!("resuming from {}", checkpoint.display()))?;
            Ok(file.metadata()?)
        };
        let resumed = run.resume.then(open).transpose()?;
        // A model too large to train is refused at its first parameter beyond the
        // budget, before seconds go into drawing the rest.
        let budget = available_memory().map(|bytes| {
            tessera_nn::MemoryBudget {
                bytes: bytes as usize,
                bytes_per_value: 16,
                what: "available to train it (16 bytes a parameter: the weight, its \
                       gradient and Adam's two moments, before activations)",
            }
            .enter()
        });
        Ok(Run {
            out,
            checkpoint,
            resumed,
            mode: Mode::new(run.quiet, run.json),
            minutes: run.minutes,
            lock,
            comm,
            config,
            _budget: budget,
        })
    }

    /// The number of ranks that train together (1 without mpirun).
    pub fn ranks(&self) -> usize {
        self.comm.size()
    }

    /// This process's rank (0 without mpirun).
    pub fn rank(&self) -> usize {
        self.comm.rank()
    }

    /// An error unless a batch of `items` (`what`: `"--batch"`) gives every rank at
    /// least one item.
    pub fn check_split(&self, what: &str, items: usize) -> Result<()> {
        let ranks = self.ranks();
        if items < ranks {
            let msg = format!(
                "{what} {items} is split over {ranks} ranks: it must be at least {ranks}, \
                 one item per rank"
            );
            return Err(crate::dist::OnEveryRank(msg).into());
        }
        Ok(())
    }

    /// A value stored in the resumed checkpoint's metadata, parsed, or `default`.
    pub fn stored<T: std::str::FromStr>(&self, key: &str, default: T) -> Result<T>
    where
        T::Err: std::error::Error + Send + Sync + 'static,
    {
        match self.resumed.as_ref().and_then(|m| m.get(key)) {
            Some(v) => v
                .parse()
                .with_context(|| format!("{}: {key} = {v:?}", self.checkpoint.display())),
            None => Ok(default),
        }
    }

    /// Trains `task` until its plan, the time budget, Ctrl-C or SIGTERM stops it. Output
    /// into a closed pipe is dropped: it never stops the run or loses its checkpoint.
    pub fn train(self, task: &mut impl Task) -> Result<()> {
        let plan = task.plan();
        if plan.eval_every == 0 || plan.save_every == 0 {
            bail!("--eval-every and --save-every must be at least 1");
        }
        catch_signals();
        let comm = Rc::clone(&self.comm);
        let (ranks, root) = (comm.size(), comm.rank() == 0);
        // Only rank 0 speaks and writes.
        let mode = if root { self.mode } else { Mode::Json };
        let metrics = self.out.join("metrics.jsonl");
        let bar = if root {
            mode.bar(plan.steps)
        } else {
            ProgressBar::hidden()
        };
        bar.set_position(task.steps_done());
        if ranks > 1 {
            let params = task.named_parameters();
            check_same(&*comm, "the configuration", &self.config)?;
            check_same(
                &*comm,
                "the model's parameters",
                &describe_parameters(&params),
            )?;
            broadcast_parameters(&*comm, &params, 0)?;
            if root {
                let threads = tessera_tensor::num_threads();
                let line = format!("data-parallel on {ranks} ranks, {threads} threads each; every batch is split over them");
                mode.line(&bar, &line);
            }
        }
        if root {
            for line in task.describe() {
                mode.line(&bar, &line);
            }
        }
        let (start, budget) = (Instant::now(), self.minutes.map(|m| m * 60.0));
        let (mut window, mut since) = (Window::default(), Instant::now());
        let (first, mut last_eval, mut last_saved) = (task.steps_done(), None, task.steps_done());
        let reason = loop {
            let step = task.steps_done();
            // The ranks stop together: on a signal or the time limit of any of them.
            let timed_out = budget.is_some_and(|b| start.elapsed().as_secs_f64() >= b);
            let flags = [
                f64::from(u8::from(stop_requested())),
                f64::from(u8::from(timed_out)),
            ];
            let [interrupted, timed_out] = sum_over_ranks(&*comm, flags)?;
            let reason = if interrupted > 0.0 {
                Some("interrupted")
            } else if timed_out > 0.0 {
                Some("time limit")
            } else {
                (step >= plan.steps).then_some("done")
            };
            let on_cadence =
                step.is_multiple_of(plan.eval_every) && (step > first || plan.eval_at_start);
            // Interrupted, the checkpoint comes first: under mpirun a signal leaves
            // the ranks a second (odls_base_sigkill_timeout) before they are killed.
            let order = if reason == Some("interrupted") {
                [Phase::Save, Phase::Evaluate]
            } else {
                [Phase::Evaluate, Phase::Save]
            };
            for phase in order {
                match phase {
                    Phase::Evaluate => {
                        if (on_cadence || reason.is_some()) && last_eval != Some(step) {
                            last_eval = Some(step);
                            let eval = task.evaluate(&*comm)?;
                            let elapsed = start.elapsed().as_secs_f64();
                            let rate = window.rate(since);
                            let (line, json) = window.report(step, &plan, eval, rate, elapsed);
                            if root {
                                record(&metrics, mode, &json)?;
                                mode.line(&bar, &line);
                            }
                            (window, since) = (Window::default(), Instant::now());
                        }
                    }
                    Phase::Save => {
                        // A run that stops where it started still leaves its checkpoint.
                        let unsaved = step != last_saved || !self.checkpoint.exists();
                        let due = step.is_multiple_of(plan.save_every) || reason.is_some();
                        if due && unsaved && root {
                            task.save(&self.checkpoint).with_context(|| {
                                format!(
                                    "saving step {step}; the checkpoint of step {last_saved} \
                                     is intact"
                                )
                            })?;
                            last_saved = step;
                        }
                    }
                }
            }
            if let Some(reason) = reason {
                break reason;
            }
            // Every trainer stops the same way on a non-finite loss or gradient.
            let s = task.step(&*comm).with_context(|| {
                let path = self.checkpoint.display();
                format!("training stopped at step {step}; {path} holds step {last_saved}")
            })?;
            window.add(&s);
            bar.set_position(task.steps_done());
            let lr = s.lr.map_or(String::new(), |lr| format!(" lr {lr:.2e}"));
            let (loss, rate) = (window.loss(), window.rate(since));
            bar.set_message(format!("loss {loss:.4}{lr} {rate:.0} {}", plan.unit));
        };
        bar.finish_and_clear();
        if !root {
            // Rank 0 writes the plot, the model files and the closing line.
            if reason == "interrupted" {
                crate::dist::end();
                std::process::exit(130);
            }
            return Ok(());
        }
        let png = self.out.join("metrics.png");
        if metrics.exists() {
            crate::plot::metrics_png(&metrics, &png)?;
        }
        let mut files = vec![self.checkpoint.clone()];
        files.extend(task.finish(&self.out, mode)?);
        files.extend([metrics, png]);
        files.retain(|f| f.exists());
        if mode != Mode::Json {
            let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
            let step = task.steps_done();
            say(match names.split_last() {
                Some((last, [])) => format!("{reason} at step {step}: wrote {last}"),
                Some((last, rest)) => format!(
                    "{reason} at step {step}: wrote {} and {last}",
                    rest.join(", ")
                ),
                None => format!("{reason} at step {step}"),
            });
        }
        if reason == "interrupted" {
            drop(self.lock);
            crate::dist::end();
            std::process::exit(130);
        }
        Ok(())
    }
}

/// What the loop does at a step boundary besides stepping.
#[derive(Clone, Copy)]
enum Phase {
    Evaluate,
    Save,
}

/// The steps since the last evaluation.
#[derive(Default)]
struct Window {
    steps: u64,
    loss: f64,
    items: usize,
    correct: Option<usize>,
    lr: Option<f64>,
}

impl Window {
    fn add(&mut self, s: &Step) {
        self.steps += 1;
        self.loss += f64::from(s.loss);
        self.items += s.items;
        if let Some(c) = s.correct {
            self.correct = Some(self.correct.unwrap_or(0) + c);
        }
        self.lr = s.lr.or(self.lr);
    }

    /// The mean training loss (NaN before the first step).
    fn loss(&self) -> f64 {
        self.loss / self.steps as f64
    }

    /// Items per second since `start`.
    fn rate(&self, start: Instant) -> f64 {
        self.items as f64 / start.elapsed().as_secs_f64().max(1e-9)
    }

    /// The progress line and the metrics.jsonl object of an evaluation at `step`.
    fn report(
        &self,
        step: u64,
        plan: &Plan,
        eval: Eval,
        rate: f64,
        elapsed: f64,
    ) -> (String, Value) {
        let mut json = Map::new();
        json.insert("step".into(), step.into());
        json.insert("train_loss".into(), self.loss().into());
        let mut train = if self.steps == 0 {
            "-".into()
        } else {
            format!("{:.4}", self.loss())
        };
        if let Some(c) = self.correct {
            let acc = c as f64 / self.items.max(1) as f64;
            json.insert("train_acc".into(), acc.into());
            train.push_str(&format!(" acc {:5.2}%", 100.0 * acc));
        }
        json.extend(eval.metrics);
        if let Some(lr) = self.lr {
            json.insert("lr".into(), lr.into());
        }
        json.insert(plan.rate_key.into(), rate.into());
        json.insert("elapsed_s".into(), elapsed.into());
        let (summary, unit) = (eval.summary, plan.unit);
        let line = format!(
            "step {step:>7}  train {train:>6}  {summary}  {rate:>9.0} {unit}  {elapsed:>6.0} s"
        );
        (line, Value::Object(json))
    }
}

static STOP: AtomicBool = AtomicBool::new(false);
static HANDLER: Once = Once::new();

/// Installs the handler of Ctrl-C, SIGTERM (what a cluster scheduler sends before it
/// kills a job) and SIGHUP, once: the first signal asks the running loop to save a
/// checkpoint and stop (exit status 130); a second one exits at once. Output into a
/// closed pipe stops being a signal: [`say`] drops it instead.
pub(crate) fn catch_signals() {
    HANDLER.call_once(|| {
        // SAFETY: sets the actions of two signals; no handler of either is installed.
        // A file-size limit reached while saving is then an error of that save (the
        // previous checkpoint stays), not a signal that kills the run.
        #[cfg(unix)]
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_IGN);
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
        };
        let _ = ctrlc::set_handler(|| {
            let mut err = std::io::stderr();
            if STOP.swap(true, Ordering::SeqCst) {
                let _ = writeln!(err, "\ninterrupted twice: exiting without saving");
                std::process::exit(130);
            }
            let _ = writeln!(
                err,
                "\ninterrupted: saving a checkpoint, then stopping (interrupt again to quit now)"
            );
        });
    });
}

/// Writes a line to standard output, dropping it when nobody reads any more (a closed
/// pipe): a training run's output must never stop it or lose its work.
pub fn say(line: impl std::fmt::Display) {
    let _ = writeln!(std::io::stdout().lock(), "{line}");
}

/// The memory this process can still have: Linux's `MemAvailable`, or else the
/// machine's memory.
fn available_memory() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let kb = text.lines().find_map(|l| {
        let rest = l.strip_prefix("MemAvailable:")?;
        rest.trim()
            .trim_end_matches("kB")
            .trim()
            .parse::<f64>()
            .ok()
    });
    kb.map(|kb| kb * 1024.0)
        .or_else(|| tessera_nn::physical_memory().map(|b| b as f64))
}

/// Refuses work that needs `bytes` (for the reason `why`) where the machine has less
/// memory available, with both figures.
pub fn fits_in_memory(what: &str, bytes: f64, why: &str) -> Result<()> {
    let Some(available) = available_memory() else {
        return Ok(());
    };
    if bytes > available {
        let text = |b: f64| tessera_nn::bytes_text((b < usize::MAX as f64).then_some(b as usize));
        bail!(
            "{what} needs about {} ({why}); this machine has {} available",
            text(bytes),
            text(available)
        );
    }
    Ok(())
}

/// Whether a stopping signal came.
pub(crate) fn stop_requested() -> bool {
    STOP.load(Ordering::SeqCst)
}

/// `--threads N`, `-t N`: the threads of the kernels, on every command that computes.
#[derive(Args, Clone, Copy, Debug, Default, serde::Serialize)]
pub struct Threads {
    /// Threads used by the kernels (default: all cores; also TESSERA_NUM_THREADS).
    #[arg(long, short, value_parser = crate::ranges::at_least_one::<usize>())]
    pub threads: Option<usize>,
}

impl Threads {
    /// Sets the kernels' thread count, when one is given.
    pub fn apply(self) {
        if let Some(t) = self.threads {
            tessera_tensor::set_num_threads(t);
        }
    }
}

/// How a training command reports progress.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// A progress bar and a line per evaluation.
    Bar,
    /// A line per evaluation only.
    Quiet,
    /// One JSON line per evaluation on stdout, nothing else.
    Json,
}

impl Mode {
    fn new(quiet: bool, json: bool) -> Mode {
        match (quiet, json) {
            (_, true) => Mode::Json,
            (true, false) => Mode::Quiet,
            (false, false) => Mode::Bar,
        }
    }

    /// A bar of `len` steps (hidden unless the mode is [`Mode::Bar`] and stderr is a
    /// terminal).
    fn bar(self, len: u64) -> ProgressBar {
        if self != Mode::Bar {
            return ProgressBar::hidden();
        }
        progress_bar(len, "steps")
    }

    /// Prints a human line (above the bar) unless the mode is JSON.
    fn line(self, bar: &ProgressBar, s: &str) {
        match self {
            Mode::Json => {}
            // A bar drawn on a terminal prints the line above itself; a hidden one (stderr
            // not a terminal) would drop it.
            Mode::Bar if !bar.is_hidden() => bar.println(s),
            Mode::Bar | Mode::Quiet => say(s),
        }
    }
}

/// A progress bar of `len` `unit`s on stderr, drawn only where stderr is a terminal.
pub fn progress_bar(len: u64, unit: &str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    let template =
        format!("{{bar:30}} {{pos}}/{{len}} {unit} {{msg}} [{{elapsed_precise}}, {{eta}} left]");
    bar.set_style(ProgressStyle::with_template(&template).expect("a valid template"));
    bar
}

/// Appends one JSON object to `path` (one line) and, in JSON mode, prints it.
fn record(path: &Path, mode: Mode, value: &Value) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path);
    f = f.and_then(|mut f| writeln!(f, "{value}").map(|()| f));
    f.with_context(|| format!("writing {}", path.display()))?;
    if mode == Mode::Json {
        say(value);
    }
    Ok(())
}

/// A value parser for a [`ValueEnum`] whose error names the kind of value and the
/// choices (`unknown cell "x"; expected elman, rnn, lstm, gru`); `--help` lists them.
#[derive(Clone)]
pub struct Choice<T>(&'static str, PhantomData<T>);

/// The [`Choice`] parser of a `what` (`"cell"`).
pub fn choice<T>(what: &'static str) -> Choice<T> {
    Choice(what, PhantomData)
}

impl<T: ValueEnum + Clone + Send + Sync + 'static> TypedValueParser for Choice<T> {
    type Value = T;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        _: Option<&clap::Arg>,
        value: &OsStr,
    ) -> Result<T, clap::Error> {
        let s = value.to_string_lossy();
        T::from_str(&s, true).map_err(|_| {
            let names: Vec<_> = T::value_variants()
                .iter()
                .filter_map(|v| Some(v.to_possible_value()?.get_name().to_string()))
                .collect();
            let msg = format!("unknown {} {s:?}; expected {}", self.0, names.join(", "));
            cmd.clone().error(ErrorKind::InvalidValue, msg)
        })
    }

    fn possible_values(&self) -> Option<Box<dyn Iterator<Item = PossibleValue> + '_>> {
        Some(Box::new(
            T::value_variants().iter().filter_map(T::to_possible_value),
        ))
    }
}

/// One run's claim on its output folder: `OUT/.lock` holds the process id, and goes
/// when the run ends. A lock whose process is gone (killed) is taken over.
pub(crate) struct Lock(PathBuf);

impl Lock {
    pub(crate) fn take(out: &Path) -> Result<Lock> {
        let path = out.join(".lock");
        for _ in 0..2 {
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(mut f) => {
                    writeln!(f, "{}", std::process::id())
                        .with_context(|| format!("writing {}", path.display()))?;
                    return Ok(Lock(path));
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let text = std::fs::read_to_string(&path).unwrap_or_default();
                    if let Some(pid) = text.trim().parse().ok().filter(|&p| alive(p)) {
                        bail!(
                            "{} is in use by another run (process {pid}); wait for it to end \
                             or choose another --out",
                            out.display()
                        );
                    }
                    // The lock of a run that was killed.
                    let _ = std::fs::remove_file(&path);
                }
                Err(e) => return Err(e).with_context(|| format!("creating {}", path.display())),
            }
        }
        bail!(
            "{}: could not take the lock {}",
            out.display(),
            path.display()
        )
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Whether process `pid` is running.
fn alive(pid: i32) -> bool {
    #[cfg(unix)]
    {
        // SAFETY: signal 0 sends nothing; it only checks that the process exists.
        let r = unsafe { libc::kill(pid, 0) };
        r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
    }
    #[cfg(not(unix))]
    {
        let _ = pid;
        true
    }
}

/// The names and paths of the files in `out`.
fn entries(out: &Path) -> Result<Vec<(String, PathBuf)>> {
    let dir = std::fs::read_dir(out).with_context(|| format!("reading {}", out.display()))?;
    let mut all: Vec<_> = dir
        .flatten()
        .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
        .collect();
    all.sort();
    Ok(all)
}

/// The files of a run in `out`: checkpoint, metrics, plot and step snapshots.
fn run_files(out: &Path) -> Result<Vec<PathBuf>> {
    let run_file = ["checkpoint.safetensors", "metrics.jsonl", "metrics.png"];
    let is_run_file = |name: &str| {
        run_file.contains(&name) || (name.starts_with("step-") && name.ends_with(".safetensors"))
    };
    Ok(entries(out)?
        .into_iter()
        .filter_map(|(name, path)| is_run_file(&name).then_some(path))
        .collect())
}

/// Refuses an `out` that holds an earlier run's checkpoint or metrics, or with
/// `overwrite` removes that run's files.
fn clear_earlier_run(out: &Path, overwrite: bool) -> Result<()> {
    let files = run_files(out)?;
    let earlier = ["checkpoint.safetensors", "metrics.jsonl"]
        .iter()
        .any(|n| files.iter().any(|f| f.ends_with(n)));
    if !earlier {
        return Ok(());
    }
    if !overwrite {
        bail!(
            "{} holds an earlier run (checkpoint.safetensors or metrics.jsonl); continue it \
             with --resume, replace it with --overwrite, or choose another --out",
            out.display()
        );
    }
    for f in files {
        std::fs::remove_file(&f).with_context(|| format!("removing {}", f.display()))?;
    }
    Ok(())
}

/// Removes the temporary files of saves that were killed before they finished
/// (`.checkpoint.safetensors.tmp-PID`); the lock says no other run writes here.
fn remove_leftovers(out: &Path) -> Result<()> {
    for (name, path) in entries(out)? {
        if name.starts_with('.') && name.contains(".tmp-") {
            let _ = std::fs::remove_file(path);
        }
    }
    Ok(())
}
