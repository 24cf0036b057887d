//! `tessera vit`: the Vision Transformer's configurations.

use anyhow::Result;
use clap::{Args, Subcommand};
use tessera_vit::{VitConfig, PRESETS};

/// `tessera vit` subcommands.
#[derive(Subcommand, Debug)]
pub enum VitCommand {
    /// Print the exact parameter count of every preset (224×224, 1,000 classes, timm's
    /// layout) beside the paper's rounded Table 1 column.
    Params(ParamsArgs),
}

/// Arguments of `tessera vit params`.
#[derive(Args, Debug)]
pub struct ParamsArgs {
    /// Output classes (0: no head, as timm's `num_classes=0`).
    #[arg(long, default_value_t = 1000)]
    classes: usize,
}

/// Runs `tessera vit ...`.
pub fn run(cmd: &VitCommand) -> Result<()> {
    match cmd {
        VitCommand::Params(a) => params(a),
    }
}

fn params(a: &ParamsArgs) -> Result<()> {
    println!(
        "{:<6} {:>5} {:>6} {:>6} {:>6} {:>14}  paper (Table 1)",
        "model", "D", "depth", "heads", "MLP", "parameters"
    );
    for &(name, ..) in PRESETS {
        let c = VitConfig {
            classes: a.classes,
            ..VitConfig::preset(name)?
        };
        let paper = match name.split('/').next() {
            Some("B") => "86M",
            Some("L") => "307M",
            Some("H") => "632M",
            _ => "-",
        };
        println!(
            "{name:<6} {:>5} {:>6} {:>6} {:>6} {:>14}  {paper}",
            c.embed_dim,
            c.depth,
            c.heads,
            c.mlp_dim,
            c.num_parameters()
        );
    }
    println!(
        "The paper's Table 1 gives one rounded count per size (its patch size and head are not \
         stated): B/16 rounds to its 86M and H/14 with a 1,000-class head to its 632M; L/16 \
         has 304M against its 307M, which L/32 matches. Ti and S are timm's additions. timm creates H/14 without a \
         head by default (630,764,800; --classes 0)."
    );
    Ok(())
}
