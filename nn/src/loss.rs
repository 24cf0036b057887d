//! Losses with PyTorch's semantics.

use tessera_tensor::{IndexTensor, Tensor};

use crate::kernels::rows::{par_parts, ROWS_PER_PART};
use crate::{Error, Result, Var};

/// Cross-entropy on logits `[N, C]` with class targets `[N]`, as
/// `F.cross_entropy(logits, targets, label_smoothing=ε, ignore_index=i)` with mean
/// reduction: for each non-ignored row,
/// `(1 - ε) · (-log p[target]) + ε · (-(1/C) Σ_c log p[c])`, averaged over the
/// non-ignored rows (the smoothing mass is spread over all C classes, the target's
/// included).
///
/// # Shapes
/// logits `[N, C]`, targets `[N]` -> a scalar.
///
/// ```
/// use tessera_nn::{cross_entropy, Var};
/// use tessera_tensor::{IndexTensor, Tensor};
/// // Equal logits over 4 classes: -log(1/4) = ln 4, whatever the target.
/// let logits = Var::constant(Tensor::zeros(&[2, 4]));
/// let loss = cross_entropy(&logits, &IndexTensor::from_vec(vec![1, 3]), 0.0, None)?;
/// assert!((loss.value().to_scalar()? - 4f32.ln()).abs() < 1e-6);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn cross_entropy(
    logits: &Var,
    targets: &IndexTensor,
    label_smoothing: f32,
    ignore_index: Option<usize>,
) -> Result<Var> {
    let targets: Vec<i64> = targets.data().iter().map(|&t| t as i64).collect();
    let loss = CrossEntropyLoss {
        ignore_index: ignore_index.map_or(NO_INDEX, |i| i as i64),
        label_smoothing,
        ..CrossEntropyLoss::default()
    };
    loss.run("cross_entropy", logits, &targets, ignore_index.is_some())
}

/// An `ignore_index` no target can equal: the old signatures' `None`.
const NO_INDEX: i64 = i64::MIN;

/// How a loss reduces its values (PyTorch's `reduction`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Reduction {
    /// The mean (weighted by the targets' class weights where a loss has them).
    #[default]
    Mean,
    /// The sum.
    Sum,
    /// No reduction: one value per row (or element).
    None,
}

impl Reduction {
    /// A `[N]` tensor of values, reduced.
    fn apply(self, rows: Vec<f64>, denominator: f64) -> Result<Tensor> {
        let total: f64 = rows.iter().sum();
        Ok(match self {
            Reduction::Mean => Tensor::scalar((total / denominator) as f32),
            Reduction::Sum => Tensor::scalar(total as f32),
            Reduction::None => {
                let n = rows.len();
                Tensor::from_vec(rows.into_iter().map(|v| v as f32).collect(), &[n])?
            }
        })
    }

    /// The factor of row or element `i` in the gradient, from the output's gradient.
    fn scales(self, g: &Tensor, n: usize, denominator: f64) -> tessera_autograd::Result<Vec<f32>> {
        Ok(match self {
            Reduction::Mean => vec![(f64::from(g.to_scalar()?) / denominator) as f32; n],
            Reduction::Sum => vec![g.to_scalar()?; n],
            Reduction::None => g.contiguous().to_vec(),
        })
    }
}

/// `torch.nn.CrossEntropyLoss` on logits `[N, C]` with class targets as `i64` (so that
/// PyTorch's `ignore_index = -100` works): per row,
/// `(1 - ε) · w[t] · (-log p[t]) + (ε / C) · Σ_c w[c] · (-log p[c])`, zero for an ignored
/// row; `Mean` divides the sum by `Σ w[t]` over the rows that count (their number
/// without weights), as PyTorch does. One fused pass; the softmax is kept for backward.
///
/// # Shapes
/// logits `[N, C]`, targets `N`, `weight` `[C]` -> a scalar, or `[N]` with
/// [`Reduction::None`].
///
/// ```
/// use tessera_nn::{CrossEntropyLoss, Reduction, Var};
/// use tessera_tensor::Tensor;
/// let logits = Var::constant(Tensor::zeros(&[3, 4]));
/// let loss = CrossEntropyLoss { reduction: Reduction::None, ..Default::default() };
/// let rows = loss.forward(&logits, &[1, -100, 3])?; // the second row is ignored
/// assert_eq!(rows.value().to_vec(), vec![4f32.ln(), 0.0, 4f32.ln()]);
/// let weighted = CrossEntropyLoss {
///     weight: Some(Tensor::from_vec(vec![1.0, 3.0, 1.0, 1.0], &[4])?),
///     ..Default::default()
/// };
/// // (3 ln 4 + 1 ln 4) / (3 + 1)
/// let mean = weighted.forward(&logits, &[1, -100, 3])?.value().to_scalar()?;
/// assert!((mean - 4f32.ln()).abs() < 1e-6);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct CrossEntropyLoss {
    /// A weight per class, `[C]` (`weight=`).
    pub weight: Option<Tensor>,
    /// Rows whose target is this count for nothing (`ignore_index=`, -100).
    pub ignore_index: i64,
    /// `reduction=` (mean).
    pub reduction: Reduction,
    /// `label_smoothing=` ε in [0, 1] (0).
    pub label_smoothing: f32,
}

impl Default for CrossEntropyLoss {
    /// PyTorch's defaults: no weight, `ignore_index` -100, mean, no smoothing.
    fn default() -> CrossEntropyLoss {
        CrossEntropyLoss {
            weight: None,
            ignore_index: -100,
            reduction: Reduction::Mean,
            label_smoothing: 0.0,
        }
    }
}

impl CrossEntropyLoss {
    /// The loss of `logits` for `targets` (class indices, or `ignore_index`).
    pub fn forward(&self, logits: &Var, targets: &[i64]) -> Result<Var> {
        self.run("CrossEntropyLoss", logits, targets, true)
    }

    fn run(&self, op: &'static str, logits: &Var, targets: &[i64], named: bool) -> Result<Var> {
        let eps = self.label_smoothing;
        if !(0.0..=1.0).contains(&eps) {
            return Err(Error::setting(op, "label smoothing", eps, "within [0, 1]"));
        }
        let ignore = self.ignore_index;
        let (mean, weight) = (self.reduction == Reduction::Mean, self.weight.as_ref());
        let named = named.then_some(ignore);
        let Rows {
            n,
            c,
            counted,
            weight,
        } = Rows::check(op, logits, "logits", targets, ignore, weight, mean, named)?;
        // The mean's denominator: the counted rows' class weights (their number).
        let denominator: f64 = match &weight {
            Some(w) => counted
                .iter()
                .map(|&i| f64::from(w[targets[i] as usize]))
                .sum(),
            None => counted.len() as f64,
        };
        // One pass per row for the value, the softmax kept for the backward pass.
        let x = logits.value().contiguous();
        let xs = x.as_slice().expect("contiguous");
        let mut probs = vec![0.0f32; n * c];
        let mut rows = vec![0.0f64; n];
        let total_weight: f64 = weight.as_ref().map_or(0.0, |w| lane_sum(w));
        let k = RowConstants {
            c,
            eps,
            ignore,
            weight: weight.as_deref(),
            total_weight,
        };
        // Rows shared among the threads, each part's loops compiled for the widest
        // vectors the CPU has (the same results on every width and thread count).
        let parts: Vec<_> = xs
            .chunks(ROWS_PER_PART * c)
            .zip(probs.chunks_mut(ROWS_PER_PART * c))
            .zip(rows.chunks_mut(ROWS_PER_PART))
            .zip(targets.chunks(ROWS_PER_PART))
            .collect();
        par_parts(parts, |(((xs, p), rows), targets)| {
            tessera_tensor::widest!(forward_rows(xs, p, rows, targets, k))
        });
        let value = self.reduction.apply(rows, denominator)?;
        let backward = CrossEntropyBackward {
            probs,
            targets: targets.to_vec(),
            ignore,
            weight,
            label_smoothing: self.label_smoothing,
            reduction: self.reduction,
            denominator,
            shape: [n, c],
        };
        Ok(Var::custom(
            value,
            std::slice::from_ref(logits),
            std::sync::Arc::new(backward),
        ))
    }
}

/// What both class losses check before they compute: the input `[N, C]`, one target
/// per row (a class in `0..C`, or `ignore`), the class weights, and for a mean at least
/// one counted row.
struct Rows {
    /// Rows.
    n: usize,
    /// Classes.
    c: usize,
    /// The rows whose target counts.
    counted: Vec<usize>,
    /// The class weights, when given.
    weight: Option<Vec<f32>>,
}

impl Rows {
    /// The checked rows of `input` (named `what` in errors) for `targets`; `named` is the
    /// ignore index that an all-ignored mean's error names, if the caller chose it.
    #[allow(clippy::too_many_arguments)]
    fn check(
        op: &'static str,
        input: &Var,
        what: &str,
        targets: &[i64],
        ignore: i64,
        weight: Option<&Tensor>,
        mean: bool,
        named: Option<i64>,
    ) -> Result<Rows> {
        let (n, c) = input
            .value()
            .dims2()
            .map_err(|_| Error::shape(op, format!("{what} [N, C]"), input.shape()))?;
        if targets.len() != n {
            return Err(Error::shape(op, format!("{n} targets"), &[targets.len()]));
        }
        let mut counted = Vec::with_capacity(n);
        for (row, &t) in targets.iter().enumerate() {
            if t == ignore {
                continue;
            }
            if t < 0 || t as u64 >= c as u64 {
                return Err(Error::Target {
                    op,
                    target: t,
                    row,
                    classes: c,
                });
            }
            counted.push(row);
        }
        if mean && counted.is_empty() {
            return Err(every_target_ignored(op, named));
        }
        let weight = class_weights(op, weight, c)?;
        Ok(Rows {
            n,
            c,
            counted,
            weight,
        })
    }
}

/// A class-weight tensor as `C` finite values, or an error naming its shape.
fn class_weights(
    op: &'static str,
    weight: Option<&Tensor>,
    classes: usize,
) -> Result<Option<Vec<f32>>> {
    let Some(w) = weight else {
        return Ok(None);
    };
    if w.shape() != [classes] {
        return Err(Error::shape(
            op,
            format!("a weight of [{classes}] (one per class)"),
            w.shape(),
        ));
    }
    let w = w.contiguous().to_vec();
    if let Some(bad) = w.iter().find(|v| !v.is_finite()) {
        return Err(Error::setting(op, "weight", bad, "must be finite"));
    }
    Ok(Some(w))
}

/// `Σ v` with eight f32 lanes (vectorisable) combined in f64.
fn lane_sum(v: &[f32]) -> f64 {
    let mut lanes = [0.0f32; 8];
    let chunks = v.chunks_exact(8);
    let tail: f64 = chunks.remainder().iter().map(|&x| f64::from(x)).sum();
    for c in chunks {
        for (l, &x) in lanes.iter_mut().zip(c) {
            *l += x;
        }
    }
    lanes.iter().map(|&l| f64::from(l)).sum::<f64>() + tail
}

/// What the rows of a cross-entropy share, forward and backward.
#[derive(Clone, Copy)]
struct RowConstants<'a> {
    /// Classes per row.
    c: usize,
    /// Label smoothing ε.
    eps: f32,
    /// The target of rows that count for nothing.
    ignore: i64,
    /// The class weights, if any.
    weight: Option<&'a [f32]>,
    /// `Σ w` (0 without weights).
    total_weight: f64,
}

/// The forward pass over whole rows of logits `xs`: each row's softmax into `probs` and
/// its loss into `rows` (left at 0 for an ignored row).
#[inline(always)]
fn forward_rows(
    xs: &[f32],
    probs: &mut [f32],
    rows: &mut [f64],
    targets: &[i64],
    k: RowConstants<'_>,
) {
    let (c, eps) = (k.c, f64::from(k.eps));
    let mut shifted = vec![0.0f32; c];
    for (i, (row, p)) in xs
        .chunks_exact(c)
        .zip(probs.chunks_exact_mut(c))
        .enumerate()
    {
        let m = crate::kernels::rows::max(row);
        shifted.iter_mut().zip(row).for_each(|(s, &v)| *s = v - m);
        tessera_tensor::exp_slice(&shifted, p);
        let sum = lane_sum(p);
        let inv = (1.0 / sum) as f32;
        p.iter_mut().for_each(|v| *v *= inv);
        if targets[i] == k.ignore {
            continue;
        }
        let t = targets[i] as usize;
        let log_sum = sum.ln();
        let nll = log_sum - f64::from(shifted[t]);
        rows[i] = match k.weight {
            None => {
                let smooth = log_sum - lane_sum(&shifted) / c as f64;
                (1.0 - eps) * nll + eps * smooth
            }
            Some(w) => {
                let weighted: f64 = w
                    .iter()
                    .zip(&shifted)
                    .map(|(&w, &s)| f64::from(w) * f64::from(s))
                    .sum();
                let smooth = k.total_weight * log_sum - weighted;
                (1.0 - eps) * f64::from(w[t]) * nll + eps / c as f64 * smooth
            }
        };
    }
}

/// The backward pass over whole rows: the gradient of each row's logits into `dx` from
/// its softmax `probs` and the reduction's factor in `scales` (an ignored row's stays 0).
#[inline(always)]
fn backward_rows(
    dx: &mut [f32],
    probs: &[f32],
    targets: &[i64],
    scales: &[f32],
    k: RowConstants<'_>,
) {
    let (c, eps, total_weight) = (k.c, k.eps, k.total_weight as f32);
    let uniform = eps / c as f32;
    for (i, (d, p)) in dx
        .chunks_exact_mut(c)
        .zip(probs.chunks_exact(c))
        .enumerate()
    {
        if targets[i] == k.ignore {
            continue;
        }
        let (t, scale) = (targets[i] as usize, scales[i]);
        match k.weight {
            None => {
                d.iter_mut()
                    .zip(p)
                    .for_each(|(d, &p)| *d = (p - uniform) * scale);
                d[t] -= (1.0 - eps) * scale;
            }
            Some(w) => {
                let a = (1.0 - eps) * w[t];
                for ((d, &p), &wj) in d.iter_mut().zip(p).zip(w) {
                    *d = (a * p + uniform * (total_weight * p - wj)) * scale;
                }
                d[t] -= a * scale;
            }
        }
    }
}

/// `∂loss_i/∂x_ij = (1 - ε) w[t] (p_j - [j = t]) + (ε / C)(W p_j - w[j])` (`W = Σ w`;
/// without weights `p_j - (1 - ε)[j = t] - ε / C`), times the reduction's factor; zero
/// for ignored rows.
#[derive(Debug)]
struct CrossEntropyBackward {
    probs: Vec<f32>,
    targets: Vec<i64>,
    ignore: i64,
    weight: Option<Vec<f32>>,
    label_smoothing: f32,
    reduction: Reduction,
    denominator: f64,
    shape: [usize; 2],
}

impl tessera_autograd::Function for CrossEntropyBackward {
    fn name(&self) -> &'static str {
        "cross_entropy"
    }

    fn backward(&self, g: &Tensor, _y: &Tensor) -> tessera_autograd::Result<Vec<Option<Tensor>>> {
        let [n, c] = self.shape;
        let scales = self.reduction.scales(g, n, self.denominator)?;
        let eps = self.label_smoothing;
        let total_weight = self.weight.as_ref().map_or(0.0, |w| lane_sum(w));
        let mut dx = vec![0.0f32; n * c];
        let k = RowConstants {
            c,
            eps,
            ignore: self.ignore,
            weight: self.weight.as_deref(),
            total_weight,
        };
        // Rows shared among the threads, each part compiled for the widest vectors.
        let parts: Vec<_> = dx
            .chunks_mut(ROWS_PER_PART * c)
            .zip(self.probs.chunks(ROWS_PER_PART * c))
            .zip(self.targets.chunks(ROWS_PER_PART))
            .zip(scales.chunks(ROWS_PER_PART))
            .collect();
        par_parts(parts, |(((dx, p), targets), scales)| {
            tessera_tensor::widest!(backward_rows(dx, p, targets, scales, k))
        });
        Ok(vec![Some(Tensor::from_vec(dx, &[n, c])?)])
    }
}

/// Negative log-likelihood on log-probabilities `[N, C]`, mean over non-ignored rows
/// (`F.nll_loss`).
///
/// # Shapes
/// log-probabilities `[N, C]`, targets `[N]` -> a scalar.
///
/// ```
/// use tessera_nn::{nll_loss, Var};
/// use tessera_tensor::{IndexTensor, Tensor};
/// let logp = Var::constant(Tensor::from_vec(vec![-0.5, -2.0, -3.0, -0.25], &[2, 2])?);
/// let loss = nll_loss(&logp, &IndexTensor::from_vec(vec![0, 1]), None)?;
/// assert_eq!(loss.value().to_scalar()?, 0.375); // (0.5 + 0.25) / 2
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn nll_loss(
    log_probs: &Var,
    targets: &IndexTensor,
    ignore_index: Option<usize>,
) -> Result<Var> {
    let targets: Vec<i64> = targets.data().iter().map(|&t| t as i64).collect();
    let loss = NllLoss {
        ignore_index: ignore_index.map_or(NO_INDEX, |i| i as i64),
        ..NllLoss::default()
    };
    loss.run("nll_loss", log_probs, &targets, ignore_index.is_some())
}

/// `torch.nn.NLLLoss` on log-probabilities `[N, C]` with `i64` class targets: per row
/// `-w[t] · logp[t]`, zero for an ignored row; `Mean` divides by `Σ w[t]` over the rows
/// that count.
///
/// # Shapes
/// log-probabilities `[N, C]`, targets `N`, `weight` `[C]` -> a scalar, or `[N]` with
/// [`Reduction::None`].
///
/// ```
/// use tessera_nn::{NllLoss, Reduction, Var};
/// use tessera_tensor::Tensor;
/// let logp = Var::constant(Tensor::from_vec(vec![-0.5, -2.0, -3.0, -0.25], &[2, 2])?);
/// let sum = NllLoss { reduction: Reduction::Sum, ..Default::default() };
/// assert_eq!(sum.forward(&logp, &[0, 1])?.value().to_scalar()?, 0.75);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct NllLoss {
    /// A weight per class, `[C]` (`weight=`).
    pub weight: Option<Tensor>,
    /// Rows whose target is this count for nothing (`ignore_index=`, -100).
    pub ignore_index: i64,
    /// `reduction=` (mean).
    pub reduction: Reduction,
}

impl Default for NllLoss {
    /// PyTorch's defaults: no weight, `ignore_index` -100, mean.
    fn default() -> NllLoss {
        NllLoss {
            weight: None,
            ignore_index: -100,
            reduction: Reduction::Mean,
        }
    }
}

impl NllLoss {
    /// The loss of `log_probs` for `targets` (class indices, or `ignore_index`).
    pub fn forward(&self, log_probs: &Var, targets: &[i64]) -> Result<Var> {
        self.run("NLLLoss", log_probs, targets, true)
    }

    fn run(&self, op: &'static str, log_probs: &Var, targets: &[i64], named: bool) -> Result<Var> {
        let ignore = self.ignore_index;
        let (mean, weight) = (self.reduction == Reduction::Mean, self.weight.as_ref());
        let named = named.then_some(ignore);
        let input = "log-probabilities";
        let Rows {
            n, counted, weight, ..
        } = Rows::check(op, log_probs, input, targets, ignore, weight, mean, named)?;
        // Each row's weight (0 for an ignored row) and the class it picks.
        let mut idx = vec![0usize; n];
        let mut row_weight = vec![0.0f32; n];
        for &i in &counted {
            let t = targets[i] as usize;
            idx[i] = t;
            row_weight[i] = weight.as_ref().map_or(1.0, |w| w[t]);
        }
        let denominator: f64 = row_weight.iter().map(|&w| f64::from(w)).sum();
        let picked = log_probs.gather(1, &IndexTensor::new(idx, &[n, 1])?)?;
        let rows = picked
            .mul(&Var::constant(Tensor::from_vec(row_weight, &[n, 1])?))?
            .mul_scalar(-1.0);
        Ok(match self.reduction {
            Reduction::Mean => rows.sum_all().mul_scalar((1.0 / denominator) as f32),
            Reduction::Sum => rows.sum_all(),
            Reduction::None => rows.reshape(&[n])?,
        })
    }
}

/// Mean squared error (`F.mse_loss`, mean reduction); shapes must match.
///
/// # Shapes
/// prediction and target of one shape -> a scalar.
///
/// ```
/// use tessera_nn::{mse_loss, Var};
/// use tessera_tensor::Tensor;
/// let p = Var::constant(Tensor::from_vec(vec![1.0, 2.0], &[2])?);
/// let t = Var::constant(Tensor::from_vec(vec![0.0, 4.0], &[2])?);
/// assert_eq!(mse_loss(&p, &t)?.value().to_scalar()?, 2.5); // (1 + 4) / 2
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn mse_loss(prediction: &Var, target: &Var) -> Result<Var> {
    MseLoss::default().run("mse_loss", prediction, target)
}

/// `torch.nn.MSELoss`: `(prediction - target)²`, reduced.
///
/// # Shapes
/// prediction and target of one shape -> a scalar, or that shape with
/// [`Reduction::None`].
///
/// ```
/// use tessera_nn::{MseLoss, Reduction, Var};
/// use tessera_tensor::Tensor;
/// let p = Var::constant(Tensor::from_vec(vec![1.0, 2.0], &[2])?);
/// let t = Var::constant(Tensor::from_vec(vec![0.0, 4.0], &[2])?);
/// let each = MseLoss { reduction: Reduction::None };
/// assert_eq!(each.forward(&p, &t)?.value().to_vec(), vec![1.0, 4.0]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MseLoss {
    /// `reduction=` (mean).
    pub reduction: Reduction,
}

impl MseLoss {
    /// The loss of `prediction` against `target` (same shape).
    pub fn forward(&self, prediction: &Var, target: &Var) -> Result<Var> {
        self.run("MSELoss", prediction, target)
    }

    fn run(&self, op: &'static str, prediction: &Var, target: &Var) -> Result<Var> {
        if prediction.shape() != target.shape() {
            let expected = format!(
                "a target of the prediction's shape {:?}",
                prediction.shape()
            );
            return Err(Error::shape(op, expected, target.shape()));
        }
        let squares = prediction.sub(target)?.square();
        Ok(match self.reduction {
            Reduction::Mean => squares.mean_all(),
            Reduction::Sum => squares.sum_all(),
            Reduction::None => squares,
        })
    }
}

/// `torch.nn.BCEWithLogitsLoss`: binary cross-entropy on logits, computed stably:
/// `w · [(1 - y) x + (1 + (pw - 1) y) · (log(1 + e^-|x|) + max(-x, 0))]`, with `weight`
/// `w` broadcast to the input's shape and `pos_weight` `pw` along its last axis.
///
/// # Shapes
/// logits and targets of one shape; `weight` broadcastable to it; `pos_weight` of its
/// last axis -> a scalar, or that shape with [`Reduction::None`].
///
/// ```
/// use tessera_nn::{BceWithLogitsLoss, Var};
/// use tessera_tensor::Tensor;
/// let x = Var::constant(Tensor::zeros(&[2, 3]));
/// let y = Tensor::from_vec(vec![1.0, 0.0, 1.0, 0.0, 0.5, 1.0], &[2, 3])?;
/// // σ(0) = 1/2 whatever the target: ln 2 each.
/// let loss = BceWithLogitsLoss::default().forward(&x, &y)?;
/// assert!((loss.value().to_scalar()? - 2f32.ln()).abs() < 1e-6);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BceWithLogitsLoss {
    /// A weight per element, broadcast to the input's shape (`weight=`).
    pub weight: Option<Tensor>,
    /// The positive examples' weight per class, `[C]` for an input `[..., C]`
    /// (`pos_weight=`).
    pub pos_weight: Option<Tensor>,
    /// `reduction=` (mean).
    pub reduction: Reduction,
}

impl BceWithLogitsLoss {
    /// The loss of `logits` for `targets` (probabilities in [0, 1], of the same shape).
    pub fn forward(&self, logits: &Var, targets: &Tensor) -> Result<Var> {
        let op = "BCEWithLogitsLoss";
        let shape = logits.shape().to_vec();
        if targets.shape() != shape.as_slice() {
            let expected = format!("targets of the logits' shape {shape:?}");
            return Err(Error::shape(op, expected, targets.shape()));
        }
        let numel = shape.iter().product::<usize>();
        let weight = match &self.weight {
            Some(w) => Some(
                w.broadcast_to(&shape)
                    .map_err(|_| {
                        let expected = format!("a weight that broadcasts to {shape:?}");
                        Error::shape(op, expected, w.shape())
                    })?
                    .contiguous()
                    .to_vec(),
            ),
            None => None,
        };
        let classes = shape.last().copied().unwrap_or(1);
        let pos_weight = match &self.pos_weight {
            Some(pw) if pw.shape() != [classes] => {
                let expected = format!("a pos_weight of [{classes}] (the last axis)");
                return Err(Error::shape(op, expected, pw.shape()));
            }
            Some(pw) => Some(pw.contiguous().to_vec()),
            None => None,
        };
        let x = logits.value().contiguous().to_vec();
        let y = targets.contiguous().to_vec();
        let mut values = Vec::with_capacity(numel);
        for i in 0..numel {
            let (x, y) = (f64::from(x[i]), f64::from(y[i]));
            let pw = pos_weight
                .as_ref()
                .map_or(1.0, |p| f64::from(p[i % classes]));
            let w = weight.as_ref().map_or(1.0, |w| f64::from(w[i]));
            let log_weight = 1.0 + (pw - 1.0) * y;
            let softplus = (-x.abs()).exp().ln_1p() + (-x).max(0.0);
            values.push(w * ((1.0 - y) * x + log_weight * softplus));
        }
        let value = match self.reduction {
            Reduction::None => {
                let v: Vec<f32> = values.iter().map(|&v| v as f32).collect();
                Tensor::from_vec(v, &shape)?
            }
            r => r.apply(values, numel as f64)?,
        };
        let backward = BceBackward {
            x,
            y,
            weight,
            pos_weight,
            classes,
            reduction: self.reduction,
            shape,
        };
        Ok(Var::custom(
            value,
            std::slice::from_ref(logits),
            std::sync::Arc::new(backward),
        ))
    }
}

/// `∂loss/∂x = w · (σ(x) (1 + (pw - 1) y) - pw y)`, times the reduction's factor.
#[derive(Debug)]
struct BceBackward {
    x: Vec<f32>,
    y: Vec<f32>,
    weight: Option<Vec<f32>>,
    pos_weight: Option<Vec<f32>>,
    classes: usize,
    reduction: Reduction,
    shape: Vec<usize>,
}

impl tessera_autograd::Function for BceBackward {
    fn name(&self) -> &'static str {
        "binary_cross_entropy_with_logits"
    }

    fn backward(&self, g: &Tensor, _y: &Tensor) -> tessera_autograd::Result<Vec<Option<Tensor>>> {
        let n = self.x.len();
        let scales = self.reduction.scales(g, n, n as f64)?;
        let dx = (0..n)
            .map(|i| {
                let (x, y) = (f64::from(self.x[i]), f64::from(self.y[i]));
                let pw = self
                    .pos_weight
                    .as_ref()
                    .map_or(1.0, |p| f64::from(p[i % self.classes]));
                let w = self.weight.as_ref().map_or(1.0, |w| f64::from(w[i]));
                let sigmoid = 1.0 / (1.0 + (-x).exp());
                (w * (sigmoid * (1.0 + (pw - 1.0) * y) - pw * y) * f64::from(scales[i])) as f32
            })
            .collect();
        Ok(vec![Some(Tensor::from_vec(dx, &self.shape)?)])
    }
}

/// The error of a batch whose every target is `ignore_index`: its mean is undefined.
fn every_target_ignored(op: &'static str, ignore_index: Option<i64>) -> Error {
    let index = ignore_index.map_or("none".to_string(), |i| i.to_string());
    Error::setting(
        op,
        "ignore_index",
        index,
        "must leave at least one target (every target is ignored: the mean is undefined)",
    )
}
