//! The `tessera` command.
//!
//! A thin front end: it parses arguments, prints progress and results, and reads and
//! writes files. The work itself lives in the library crates.

// mimalloc reuses freed memory instead of returning it to the system after every large
// tensor: without it the page faults of fresh allocations took about 15% of a ViT
// training step (W4: 31 images/s with glibc's allocator, 44-50 with mimalloc, 1 thread).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod ablate;
mod bench;
mod config;
mod demo;
mod dist;
mod inspect;
mod plot;
mod ranges;
mod rnn;
mod toml_flags;
mod train;
mod transformer;
mod vit;

use clap::{Parser, Subcommand};

/// tessera: RNNs, Transformers and Vision Transformers in Rust.
#[derive(Parser)]
#[command(name = "tessera", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train the three model families briefly on built-in data (an Elman RNN on
    /// sonnets, a Transformer on sequence reversal, a ViT on generated shapes) and show
    /// each learning; at most 45 s each, about 1.5 minutes in all on 2 cores.
    Demo(demo::DemoArgs),
    /// Run the reference workloads of WORKLOADS.md and print their figures.
    Bench(bench::BenchArgs),
    /// List the tensors (name, dtype, shape), parameter count and metadata of a
    /// safetensors checkpoint (tessera's, PyTorch's or timm's).
    Inspect(inspect::InspectArgs),
    /// Recurrent character language models: the Elman network, RNN, LSTM, GRU.
    #[command(subcommand)]
    Rnn(rnn::RnnCommand),
    /// The Transformer of "Attention Is All You Need": the paper's configurations.
    #[command(subcommand)]
    Transformer(transformer::TransformerCommand),
    /// Draw the loss and accuracy curves of a metrics.jsonl file (written by every
    /// training command) as a PNG.
    Plot(PlotArgs),
    /// The Vision Transformer: configurations, training, evaluation, prediction and the
    /// paper's pictures.
    #[command(subcommand)]
    Vit(vit::VitCommand),
}

/// Arguments of `tessera plot`.
#[derive(clap::Args)]
struct PlotArgs {
    /// A metrics.jsonl file.
    metrics: std::path::PathBuf,
    /// The PNG to write (default: beside the metrics, with the extension .png).
    #[arg(long)]
    out: Option<std::path::PathBuf>,
}

/// Parses and runs one `tessera` command line (without the program name).
pub(crate) fn run_args(args: &[String]) -> anyhow::Result<()> {
    let cli =
        Cli::try_parse_from(std::iter::once("tessera".to_string()).chain(args.iter().cloned()))?;
    dispatch(cli)
}

fn dispatch(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Demo(args) => demo::run(&args),
        Command::Bench(args) => bench::run(&args),
        Command::Rnn(cmd) => rnn::run(&cmd),
        Command::Inspect(args) => inspect::run(&args),
        Command::Transformer(cmd) => transformer::run(&cmd),
        Command::Vit(cmd) => vit::run(&cmd),
        Command::Plot(a) => {
            let out = a.out.unwrap_or_else(|| a.metrics.with_extension("png"));
            plot::metrics_png(&a.metrics, &out)?;
            println!("wrote {}", out.display());
            Ok(())
        }
    }
}

/// mimalloc's `mi_option_purge_delay`, the option before `mi_option_use_numa_nodes` in
/// mimalloc 2 and 3 (15); `libmimalloc-sys` does not name it.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t =
    libmimalloc_sys::mi_option_use_numa_nodes - 1;

fn main() {
    // Keep freed memory instead of returning it to the system after 10 ms: a training
    // step frees and reallocates the same large buffers, and every return costs page
    // faults (W4, 2 threads, 5 steps: 45,674 page faults with the default, 810 without).
    // SAFETY: sets a mimalloc option; no allocation depends on its previous value.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
    // Output into a closed pipe (`tessera inspect X | head -1`) ends the process quietly,
    // as it does for other Unix tools, instead of a panic in `println!`.
    // SAFETY: restores the default action of one signal before any thread starts.
    #[cfg(unix)]
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL)
    };
    // A cap on the kernels' instruction set that names none is refused here, once,
    // instead of being passed over by the kernels.
    if let Err(e) = tessera_tensor::Isa::from_env() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
    let argv = match config::expand(std::env::args_os().collect()) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {}", report(&e));
            std::process::exit(1);
        }
    };
    let result = dispatch(Cli::parse_from(argv));
    if let Err(e) = result {
        // One write, so that the lines of several ranks do not interleave.
        let line = match dist::rank_and_size() {
            (rank, size) if size > 1 => format!("error on rank {rank} of {size}: {}\n", report(&e)),
            _ => format!("error: {}\n", report(&e)),
        };
        let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
        dist::end_after_error(&e, 1);
        std::process::exit(1);
    }
    dist::end();
}

/// An error and its causes on one line, each cause once (a library error that already
/// names its cause in its message does not repeat it).
fn report(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}
