//! The metrics of a training run as a PNG.

use std::path::Path;

use anyhow::{bail, Context, Result};
use tessera_data::{Canvas, Chart, Series, Style};

/// Loss and accuracy curves of a metrics.jsonl file, as one PNG.
pub fn metrics_png(jsonl: &Path, png: &Path) -> Result<()> {
    let text =
        std::fs::read_to_string(jsonl).with_context(|| format!("reading {}", jsonl.display()))?;
    let rows: Vec<serde_json::Value> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l)
                .with_context(|| format!("{}:{}: not a JSON line", jsonl.display(), i + 1))
        })
        .collect::<Result<_>>()?;
    let x_key = if rows
        .iter()
        .any(|r| r.get("epoch").is_some_and(|v| v.is_f64()))
    {
        "epoch"
    } else {
        "step"
    };
    let series = |key: &str| -> Option<Series> {
        let points: Vec<(f64, f64)> = rows
            .iter()
            .filter_map(|r| Some((r.get(x_key)?.as_f64()?, r.get(key)?.as_f64()?)))
            .collect();
        (!points.is_empty()).then(|| Series {
            name: key.to_string(),
            points,
            style: Style::Line,
        })
    };
    let losses: Vec<Series> = ["train_loss", "val_loss", "test_loss"]
        .iter()
        .filter_map(|k| series(k))
        .collect();
    let accs: Vec<Series> = ["train_acc", "test_acc", "val_acc"]
        .iter()
        .filter_map(|k| series(k))
        .collect();
    if losses.is_empty() && accs.is_empty() {
        bail!("{}: no loss or accuracy values to plot", jsonl.display());
    }
    let (w, h) = (800, if accs.is_empty() { 500 } else { 1000 });
    let mut canvas = Canvas::new(w, h);
    let mut paste = |chart: Chart, y0: usize| canvas.paste_rows(&chart.render(w, 500), y0);
    paste(
        Chart {
            title: "loss".into(),
            x_label: x_key.into(),
            y_label: "loss".into(),
            series: losses,
            ..Chart::default()
        },
        0,
    );
    if !accs.is_empty() {
        paste(
            Chart {
                title: "accuracy".into(),
                x_label: x_key.into(),
                y_label: "accuracy".into(),
                series: accs,
                ..Chart::default()
            },
            500,
        );
    }
    Ok(canvas.save(png)?)
}
