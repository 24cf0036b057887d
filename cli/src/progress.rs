//! What every training command shares: progress bars, Ctrl-C, metrics files.

use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Once;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

static STOP: AtomicBool = AtomicBool::new(false);
static HANDLER: Once = Once::new();

/// Installs the Ctrl-C handler (once): the first Ctrl-C asks the running loop to save
/// a checkpoint and stop; a second one exits at once.
pub fn catch_ctrl_c() {
    HANDLER.call_once(|| {
        let _ = ctrlc::set_handler(|| {
            if STOP.swap(true, Ordering::SeqCst) {
                eprintln!("\ninterrupted twice: exiting without saving");
                std::process::exit(130);
            }
            eprintln!(
                "\ninterrupted: saving a checkpoint, then stopping (Ctrl-C again to quit now)"
            );
        });
    });
}

/// Whether Ctrl-C was pressed.
pub fn stop_requested() -> bool {
    STOP.load(Ordering::SeqCst)
}

/// Applies `--threads N` (none: all cores); 0 is an error.
pub fn set_threads(threads: Option<usize>) -> Result<()> {
    if let Some(t) = threads {
        if t == 0 {
            anyhow::bail!("--threads must be at least 1");
        }
        tessera_tensor::set_num_threads(t);
    }
    Ok(())
}

/// How a command reports progress.
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
    pub fn new(quiet: bool, json: bool) -> Mode {
        if json {
            Mode::Json
        } else if quiet {
            Mode::Quiet
        } else {
            Mode::Bar
        }
    }

    /// A bar of `len` steps (hidden unless the mode is [`Mode::Bar`] and stderr is a
    /// terminal).
    pub fn bar(self, len: u64, unit: &str) -> ProgressBar {
        if self != Mode::Bar {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template(&format!(
                "{{bar:30}} {{pos}}/{{len}} {unit} {{msg}} [{{elapsed_precise}}, {{eta}} left]"
            ))
            .expect("a valid template"),
        );
        bar
    }

    /// Prints a human line (above the bar) unless the mode is JSON.
    pub fn line(self, bar: &ProgressBar, s: &str) {
        match self {
            Mode::Json => {}
            // A bar drawn on a terminal prints the line above itself; a hidden one (stderr
            // not a terminal) would drop it.
            Mode::Bar if !bar.is_hidden() => bar.println(s),
            Mode::Bar | Mode::Quiet => println!("{s}"),
        }
    }
}

/// Appends one JSON object to `path` (one line) and, in JSON mode, prints it.
pub fn record(path: &Path, mode: Mode, value: &serde_json::Value) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    writeln!(f, "{value}").with_context(|| format!("writing {}", path.display()))?;
    if mode == Mode::Json {
        println!("{value}");
    }
    Ok(())
}

/// Puts a training step on the bar: its position, the running mean loss, the learning
/// rate when there is a schedule, and the throughput in `unit` per second.
pub fn show_step(bar: &ProgressBar, step: u64, loss: f64, lr: Option<f64>, rate: f64, unit: &str) {
    bar.set_position(step);
    let lr = lr.map_or(String::new(), |lr| format!(" lr {lr:.2e}"));
    bar.set_message(format!("loss {loss:.4}{lr} {rate:.0} {unit}"));
}
