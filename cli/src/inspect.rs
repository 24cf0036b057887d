//! `tessera inspect`: what a safetensors checkpoint holds.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use tessera_tensor::SafeTensorsFile;

/// Arguments of `tessera inspect`.
#[derive(Args, Debug)]
pub struct InspectArgs {
    /// A safetensors file: a tessera checkpoint, or one saved from PyTorch or timm.
    checkpoint: PathBuf,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

/// Prefixes of the run state a tessera training checkpoint keeps beside the model.
const RUN_STATE: [&str; 2] = ["optim.", "train."];

/// Runs `tessera inspect`.
pub fn run(a: &InspectArgs) -> Result<()> {
    // The error names the file.
    let file = SafeTensorsFile::open(&a.checkpoint)?;
    let entries = file.entries();
    let meta = file.metadata()?;
    let is_state = |n: &str| RUN_STATE.iter().any(|p| n.starts_with(p));
    let count = |pred: &dyn Fn(&str) -> bool| -> usize {
        entries
            .iter()
            .filter(|(n, _, _)| pred(n))
            .map(|(_, s, _)| s.iter().product::<usize>())
            .sum()
    };
    let model_params = count(&|n| !is_state(n));
    let state_values = count(&|n| is_state(n));
    if a.json {
        let tensors: Vec<serde_json::Value> = entries
            .iter()
            .map(|(n, s, d)| serde_json::json!({"name": n, "shape": s, "dtype": d}))
            .collect();
        let metadata: serde_json::Map<String, serde_json::Value> =
            meta.into_iter().map(|(k, v)| (k, v.into())).collect();
        let out = serde_json::json!({
            "file": a.checkpoint.display().to_string(),
            "tensors": tensors,
            "model_parameters": model_params,
            "run_state_values": state_values,
            "metadata": metadata,
        });
        println!("{out}");
        return Ok(());
    }
    println!("{}", a.checkpoint.display());
    let width = entries
        .iter()
        .map(|(n, _, _)| n.len())
        .max()
        .unwrap_or(4)
        .max(4);
    println!("{:<width$}  {:<6}  shape", "name", "dtype");
    for (n, s, d) in &entries {
        println!("{n:<width$}  {d:<6}  {s:?}");
    }
    println!(
        "{} tensors; {model_params} model values{}",
        entries.len(),
        if state_values > 0 {
            format!(" and {state_values} of optimizer and run state")
        } else {
            String::new()
        }
    );
    if !meta.is_empty() {
        println!("metadata:");
        for (k, v) in tessera_nn::metadata_fields(&meta) {
            let shown = if v.chars().count() > 80 {
                format!(
                    "{}... ({} characters)",
                    v.chars().take(77).collect::<String>(),
                    v.chars().count()
                )
            } else {
                v
            };
            println!("  {k} = {shown:?}");
        }
    }
    Ok(())
}
