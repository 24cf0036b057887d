//! The `tessera` command.
//!
//! A thin front end: it parses arguments, prints progress and results, and reads and
//! writes files. The work itself lives in the library crates.

// mimalloc reuses freed memory instead of returning it to the system after every large
// tensor: without it the page faults of fresh allocations took about 15% of a ViT
// training step (W4: 31 images/s with glibc's allocator, 44-50 with mimalloc, 1 thread).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod bench;
mod inspect;
mod plot;
mod progress;
mod rnn;
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
    /// The Vision Transformer: configurations, training, evaluation, prediction and the
    /// paper's pictures.
    #[command(subcommand)]
    Vit(vit::VitCommand),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Bench(args) => bench::run(&args),
        Command::Rnn(cmd) => rnn::run(&cmd),
        Command::Inspect(args) => inspect::run(&args),
        Command::Transformer(cmd) => transformer::run(&cmd),
        Command::Vit(cmd) => vit::run(&cmd),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
