//! `tessera transformer`: the paper's configurations.

use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use tessera_transformer::{preset, Preset, PRESETS};

/// `tessera transformer` subcommands.
#[derive(Subcommand, Debug)]
pub enum TransformerCommand {
    /// Print the exact parameter count of a Table 3 configuration as tessera builds it
    /// (shared source/target vocabulary, tied embeddings and pre-softmax projection,
    /// biases on every projection, no final stack norms), beside the paper's column.
    Params(ParamsArgs),
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
    #[arg(long, default_value_t = 37_000)]
    vocab: usize,
}

/// Runs `tessera transformer ...`.
pub fn run(cmd: &TransformerCommand) -> Result<()> {
    match cmd {
        TransformerCommand::Params(a) => params(a),
    }
}

fn params(a: &ParamsArgs) -> Result<()> {
    if a.vocab == 0 {
        bail!("--vocab must be at least 1");
    }
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
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    out
}
