//! The metrics of a training run as a PNG.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, Result};

/// Reads the JSON lines of `jsonl` and draws their losses and accuracies into `png`,
/// against the epoch where the rows log fractional epochs, else the step.
pub fn metrics_png(jsonl: &Path, png: &Path) -> Result<()> {
    let text =
        std::fs::read_to_string(jsonl).with_context(|| format!("reading {}", jsonl.display()))?;
    let rows: Vec<HashMap<String, serde_json::Value>> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l)
                .with_context(|| format!("{}:{}: not a JSON object", jsonl.display(), i + 1))
        })
        .collect::<Result<_>>()?;
    let fractional = rows
        .iter()
        .any(|r| r.get("epoch").is_some_and(|v| v.is_f64()));
    let numbers: Vec<HashMap<String, f64>> = rows
        .iter()
        .map(|r| {
            r.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_f64()?)))
                .collect()
        })
        .collect();
    let x = if fractional { "epoch" } else { "step" };
    let picture = tessera_data::metrics_picture(&numbers, x)
        .with_context(|| format!("plotting {}", jsonl.display()))?;
    Ok(picture.save(png)?)
}
