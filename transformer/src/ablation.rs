//! The paper's Table 3 at another scale: each row's change applied to a smaller base
//! model, and the table of what the runs measured.
//!
//! Table 3 varies the base model one thing at a time: (A) the number of heads at a
//! constant amount of computation, (B) the attention key size `d_k`, (C) depth, width and
//! the feed-forward width, (D) dropout and label smoothing, (E) learned positions. A
//! laptop cannot train the base model, so [`scaled`] applies each row to a smaller base
//! by keeping the row's ratios: every size the row changes is multiplied by
//! `row / paper base` (A1's `h = 1, d_k = 512` on a base of `d_model = 256, h = 8, d_k =
//! 32` becomes `h = 1, d_k = 256`; C1's `N = 2` on `N = 3` becomes `N = 1`); a
//! regularisation or the position encoding the row changes takes the row's value.
//!
//! ```
//! use tessera_transformer::ablation::{scaled, select_rows};
//! use tessera_transformer::TransformerConfig;
//! let base = TransformerConfig::small(8000, 256, 8, 1024, 3);
//! let rows = select_rows("A1,C")?;
//! assert_eq!(rows.len(), 8); // A1 and C1..C7
//! let a1 = scaled(rows[0], &base)?;
//! assert_eq!((a1.heads, a1.d_k, a1.d_v, a1.d_model), (1, 256, 256, 256));
//! let c1 = scaled(rows[1], &base)?;
//! assert_eq!((c1.encoder_layers, c1.decoder_layers), (1, 1));
//! # Ok::<(), tessera_transformer::Error>(())
//! ```

use serde::{Deserialize, Serialize};

use crate::config::{preset, Positional, Preset, PRESETS};
use crate::{Error, Result, TransformerConfig};

/// The group of a row of Table 3: its name without the number (`A` of `A1`; `base`,
/// `E` and `big` are groups of one).
fn group(row: &str) -> &str {
    row.trim_end_matches(|c: char| c.is_ascii_digit())
}

/// Whether `name` is the row `p` or its group, case-insensitive.
fn names(p: &Preset, name: &str) -> bool {
    p.name.eq_ignore_ascii_case(name) || group(p.name).eq_ignore_ascii_case(name)
}

/// [`Error::UnknownRow`] for `name`, listing the groups and their rows.
fn unknown_row(name: &str) -> Error {
    let mut known: Vec<(&str, Vec<&str>)> = Vec::new();
    for p in PRESETS {
        match known.last_mut() {
            Some((g, rows)) if *g == group(p.name) => rows.push(p.name),
            _ => known.push((group(p.name), vec![p.name])),
        }
    }
    Error::UnknownRow {
        name: name.to_string(),
        known: known
            .into_iter()
            .map(|(g, rows)| match rows[..] {
                [one] => one.to_string(),
                _ => format!("{g} ({})", rows.join(", ")),
            })
            .collect(),
    }
}

/// The rows named by `spec`: a comma-separated list of groups (`base`, `A`, ..., `E`,
/// `big`) and single rows (`A1`, `C4`), case-insensitive, in the table's order, each once.
///
/// # Errors
/// [`Error::UnknownRow`] for a name that is neither, or an empty list.
///
/// ```
/// use tessera_transformer::ablation::select_rows;
/// let names: Vec<_> = select_rows("e, base, B")?.iter().map(|p| p.name).collect();
/// assert_eq!(names, ["base", "B1", "B2", "E"]);
/// assert!(select_rows("A9").is_err());
/// # Ok::<(), tessera_transformer::Error>(())
/// ```
pub fn select_rows(spec: &str) -> Result<Vec<&'static Preset>> {
    let asked: Vec<&str> = spec.split(',').map(str::trim).collect();
    if let Some(name) = asked.iter().find(|n| !PRESETS.iter().any(|p| names(p, n))) {
        return Err(unknown_row(name));
    }
    Ok(PRESETS
        .iter()
        .filter(|p| asked.iter().any(|n| names(p, n)))
        .collect())
}

/// A size of a configuration, reached through its field.
type Size = fn(&mut TransformerConfig) -> &mut usize;

/// The sizes a row of Table 3 may change, by name.
const SIZES: [(&str, Size); 7] = [
    ("heads", |c| &mut c.heads),
    ("d_k", |c| &mut c.d_k),
    ("d_v", |c| &mut c.d_v),
    ("d_model", |c| &mut c.d_model),
    ("d_ff", |c| &mut c.d_ff),
    ("encoder_layers", |c| &mut c.encoder_layers),
    ("decoder_layers", |c| &mut c.decoder_layers),
];

/// `row` of Table 3 applied to `base` (a smaller model standing for the paper's base):
/// each size the row changes is scaled by `row / paper base`, each other setting it
/// changes (dropout, label smoothing, positions) takes the row's value, and what it
/// leaves alone stays the base's.
///
/// # Errors
/// [`tessera_nn::Error::Setting`] naming the row and the size when a scaled size is not
/// a whole number (A4's 32 heads on a `d_model` of 200, say) or comes out as zero.
///
/// ```
/// use tessera_transformer::ablation::scaled;
/// use tessera_transformer::{preset, Positional, TransformerConfig};
/// let base = TransformerConfig::small(100, 256, 8, 1024, 3);
/// let b1 = scaled(preset("B1")?, &base)?; // the paper's d_k 16 of 64
/// assert_eq!((b1.d_k, b1.d_v), (8, 32));
/// let e = scaled(preset("E")?, &base)?;
/// assert_eq!(e.positional, Positional::Learned);
/// let odd = TransformerConfig::small(100, 200, 8, 800, 3);
/// assert!(scaled(preset("A4")?, &odd).unwrap_err().to_string().contains("d_k"));
/// # Ok::<(), tessera_transformer::Error>(())
/// ```
pub fn scaled(row: &Preset, base: &TransformerConfig) -> Result<TransformerConfig> {
    let (mut paper, mut r) = (
        preset("base")?.config(base.src_vocab),
        row.config(base.src_vocab),
    );
    let (mut ours, mut out) = (*base, *base);
    for (name, field) in SIZES {
        let (p, want, have) = (*field(&mut paper), *field(&mut r), *field(&mut ours));
        if p == want {
            continue;
        }
        if (have * want) % p != 0 || have * want == 0 {
            let value = have as f64 * want as f64 / p as f64;
            return Err(tessera_nn::Error::setting(
                row.name,
                name,
                value,
                format!(
                    "a whole number of at least 1: the base's {have} scaled as the row's {want} of the paper's {p} \
                     (base d_model {}, {} heads, d_k {})",
                    base.d_model, base.heads, base.d_k
                ),
            )
            .into());
        }
        *field(&mut out) = have * want / p;
    }
    if r.dropout != paper.dropout {
        out.dropout = r.dropout;
    }
    if r.label_smoothing != paper.label_smoothing {
        out.label_smoothing = r.label_smoothing;
    }
    if r.positional != paper.positional {
        out.positional = r.positional;
    }
    out.validate()?;
    Ok(out)
}

/// What one run of one row measured: the record `tessera transformer ablate` writes
/// for each row and seed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RowResult {
    /// The row of Table 3 (`base`, `A1`, ...).
    pub row: String,
    /// The seed of the initialisation and the data order.
    pub seed: u64,
    /// The model trained.
    pub config: TransformerConfig,
    /// Training steps taken.
    pub steps: u64,
    /// Seconds of training.
    pub train_seconds: f64,
    /// Mean cross-entropy per target token (word-piece) on the validation set, in nats,
    /// without label smoothing.
    pub dev_loss: f64,
    /// BLEU of the beam-search translations of the validation set.
    pub bleu: f64,
    /// The model's parameter count.
    pub parameters: usize,
}

impl RowResult {
    /// The paper's "PPL (dev)": `exp` of the mean loss per word-piece.
    pub fn perplexity(&self) -> f64 {
        self.dev_loss.exp()
    }
}

/// The mean and the spread of a few measurements.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Spread {
    /// The mean.
    pub mean: f64,
    /// The sample standard deviation (`n - 1` in the denominator); 0 for one value.
    pub std: f64,
    /// How many values.
    pub n: usize,
}

impl Spread {
    /// The mean and sample standard deviation of `values`.
    ///
    /// ```
    /// use tessera_transformer::ablation::Spread;
    /// let s = Spread::of(&[1.0, 3.0]);
    /// assert_eq!((s.mean, s.n), (2.0, 2));
    /// assert!((s.std - 2f64.sqrt()).abs() < 1e-12);
    /// ```
    pub fn of(values: &[f64]) -> Spread {
        let n = values.len();
        let mean = values.iter().sum::<f64>() / n.max(1) as f64;
        let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n.max(2) - 1) as f64;
        Spread {
            mean,
            std: if n > 1 { var.sqrt() } else { 0.0 },
            n,
        }
    }

    /// `4.12 ± 0.05`, or `4.12` for one value, with `digits` decimals.
    pub fn text(&self, digits: usize) -> String {
        if self.n > 1 {
            format!("{:.digits$} ± {:.digits$}", self.mean, self.std)
        } else {
            format!("{:.digits$}", self.mean)
        }
    }
}

/// A row of the table: its runs over the seeds, summarised.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RowSummary {
    /// The row (`base`, `A1`, ...).
    pub row: String,
    /// What the row changes, in the paper's words.
    pub description: String,
    /// The model trained.
    pub config: TransformerConfig,
    /// Training steps (the most of its runs).
    pub steps: u64,
    /// Perplexity per word-piece on the validation set.
    pub ppl: Spread,
    /// Validation BLEU.
    pub bleu: Spread,
    /// Parameter count.
    pub parameters: usize,
    /// Seconds of training per run, averaged.
    pub train_seconds: f64,
}

/// The runs grouped by row, in the table's order (rows without runs left out).
pub fn summarise(results: &[RowResult]) -> Vec<RowSummary> {
    PRESETS
        .iter()
        .filter_map(|p| {
            let runs: Vec<&RowResult> = results.iter().filter(|r| r.row == p.name).collect();
            let first = runs.first()?;
            let of = |f: fn(&RowResult) -> f64| {
                Spread::of(&runs.iter().map(|r| f(r)).collect::<Vec<_>>())
            };
            Some(RowSummary {
                row: p.name.to_string(),
                description: p.description.to_string(),
                config: first.config,
                steps: runs.iter().map(|r| r.steps).max().unwrap_or(0),
                ppl: of(RowResult::perplexity),
                bleu: of(|r| r.bleu),
                parameters: first.parameters,
                train_seconds: of(|r| r.train_seconds).mean,
            })
        })
        .collect()
}

/// The table in the paper's layout (Markdown): the base row in full, the other rows
/// only where they differ from it, then train steps, PPL (dev), BLEU (dev) and the
/// parameters in millions. Learned positions show in the row's name column.
pub fn markdown(rows: &[RowSummary]) -> String {
    let base = rows.iter().find(|r| r.row == "base").map(|r| r.config);
    let mut s = String::from(
        "| row | N | d_model | d_ff | h | d_k | d_v | P_drop | ε_ls | train steps | PPL (dev) | BLEU (dev) | params ×10^6 |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in rows {
        let c = r.config;
        let show = |f: fn(&TransformerConfig) -> String| match base {
            Some(b) if r.row != "base" && f(&b) == f(&c) => String::new(),
            _ => f(&c),
        };
        let name = if c.positional == Positional::Learned
            && base.is_some_and(|b| b.positional != c.positional)
        {
            format!("{} (learned positions)", r.row)
        } else {
            r.row.clone()
        };
        s.push_str(&format!(
            "| {name} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.2} |\n",
            show(|c| c.encoder_layers.to_string()),
            show(|c| c.d_model.to_string()),
            show(|c| c.d_ff.to_string()),
            show(|c| c.heads.to_string()),
            show(|c| c.d_k.to_string()),
            show(|c| c.d_v.to_string()),
            show(|c| c.dropout.to_string()),
            show(|c| c.label_smoothing.to_string()),
            r.steps,
            r.ppl.text(2),
            r.bleu.text(2),
            r.parameters as f64 / 1e6,
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_row_of_the_table_scales_to_the_half_size_base() {
        let base = TransformerConfig::small(1000, 256, 8, 1024, 3);
        for p in select_rows("base,A,B,C,D,E,big").unwrap() {
            let c = scaled(p, &base).unwrap();
            let paper = p.config(1000);
            // Every size is half the paper's (depth: 3 of 6), every other setting equal.
            assert_eq!(c.d_model * 2, paper.d_model, "{}", p.name);
            assert_eq!(c.d_ff * 2, paper.d_ff, "{}", p.name);
            assert_eq!(c.d_k * 2, paper.d_k, "{}", p.name);
            assert_eq!(c.d_v * 2, paper.d_v, "{}", p.name);
            assert_eq!(c.heads, paper.heads, "{}", p.name);
            assert_eq!(c.encoder_layers * 2, paper.encoder_layers, "{}", p.name);
            assert_eq!(
                (c.dropout, c.label_smoothing),
                (paper.dropout, paper.label_smoothing)
            );
            assert_eq!(c.positional, paper.positional);
        }
    }

    #[test]
    fn a_row_that_does_not_fit_the_base_is_an_error_naming_it() {
        let base = TransformerConfig::small(100, 200, 8, 800, 3);
        let err = scaled(preset("A3").unwrap(), &base)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("A3") && err.contains("d_k") && err.contains("12.5"),
            "{err}"
        );
        let err = select_rows("base,Z").unwrap_err().to_string();
        assert!(err.contains("\"Z\"") && err.contains("C (C1"), "{err}");
        assert!(select_rows(" , ").is_err());
    }

    #[test]
    fn the_table_shows_the_base_in_full_and_the_rows_where_they_differ() {
        let base = TransformerConfig::small(100, 256, 8, 1024, 3);
        let run = |row: &str, seed, bleu| RowResult {
            row: row.into(),
            seed,
            config: scaled(preset(row).unwrap(), &base).unwrap(),
            steps: 10,
            train_seconds: 1.0,
            dev_loss: 2.0,
            bleu,
            parameters: 2_500_000,
        };
        let rows = summarise(&[
            run("A1", 0, 20.0),
            run("base", 0, 30.0),
            run("base", 1, 32.0),
        ]);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].row, "base", "the table's order");
        assert_eq!((rows[0].bleu.mean, rows[0].bleu.n), (31.0, 2));
        let md = markdown(&rows);
        let lines: Vec<&str> = md.lines().collect();
        assert_eq!(lines[2], "| base | 3 | 256 | 1024 | 8 | 32 | 32 | 0.1 | 0.1 | 10 | 7.39 ± 0.00 | 31.00 ± 1.41 | 2.50 |");
        assert_eq!(
            lines[3],
            "| A1 |  |  |  | 1 | 256 | 256 |  |  | 10 | 7.39 | 20.00 | 2.50 |"
        );
    }
}
