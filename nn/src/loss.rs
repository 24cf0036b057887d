//! Losses with PyTorch's semantics.

use tessera_tensor::{IndexTensor, Tensor};

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
    let op = "cross_entropy";
    let (n, c) = logits
        .value()
        .dims2()
        .map_err(|_| Error::shape(op, "logits [N, C]", logits.shape()))?;
    if !(0.0..=1.0).contains(&label_smoothing) {
        return Err(Error::setting(
            op,
            "label smoothing",
            label_smoothing,
            "within [0, 1]",
        ));
    }
    if targets.shape() != [n] {
        return Err(Error::shape(op, format!("{n} targets"), targets.shape()));
    }
    for (row, &t) in targets.data().iter().enumerate() {
        if Some(t) != ignore_index && t >= c {
            return Err(Error::Target {
                op,
                target: t,
                row,
                classes: c,
            });
        }
    }
    let valid = targets
        .data()
        .iter()
        .filter(|&&t| Some(t) != ignore_index)
        .count();
    if valid == 0 {
        return Err(every_target_ignored(op, ignore_index));
    }
    // One pass per row for the value, the softmax kept for the backward pass:
    // loss_i = (1 - ε)(lse_i - x_i[t]) + ε (lse_i - mean_c x_ic).
    let x = logits.value().contiguous();
    let xs = x.as_slice().expect("contiguous");
    let mut probs = vec![0.0f32; n * c];
    let mut shifted = vec![0.0f32; c];
    let mut total = 0.0f64;
    for (i, (row, p)) in xs
        .chunks_exact(c)
        .zip(probs.chunks_exact_mut(c))
        .enumerate()
    {
        let m = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
        shifted.iter_mut().zip(row).for_each(|(s, &v)| *s = v - m);
        tessera_tensor::exp_slice(&shifted, p);
        let sum = lane_sum(p);
        let inv = (1.0 / sum) as f32;
        p.iter_mut().for_each(|v| *v *= inv);
        let t = targets.data()[i];
        if Some(t) == ignore_index {
            continue;
        }
        let log_sum = sum.ln();
        let nll = log_sum - f64::from(shifted[t]);
        let mean_shifted = lane_sum(&shifted) / c as f64;
        let smooth = log_sum - mean_shifted;
        total += (1.0 - f64::from(label_smoothing)) * nll + f64::from(label_smoothing) * smooth;
    }
    let value = Tensor::scalar((total / valid as f64) as f32);
    let backward = CrossEntropyBackward {
        probs,
        targets: targets.data().to_vec(),
        ignore_index,
        label_smoothing,
        valid,
        shape: [n, c],
    };
    Ok(Var::custom(
        value,
        std::slice::from_ref(logits),
        std::sync::Arc::new(backward),
    ))
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

/// `∂loss/∂x_i = (softmax(x_i) - (1 - ε) onehot(t_i) - ε / C) / n_valid` for the counted
/// rows, zero for ignored ones.
#[derive(Debug)]
struct CrossEntropyBackward {
    probs: Vec<f32>,
    targets: Vec<usize>,
    ignore_index: Option<usize>,
    label_smoothing: f32,
    valid: usize,
    shape: [usize; 2],
}

impl tessera_autograd::Function for CrossEntropyBackward {
    fn name(&self) -> &'static str {
        "cross_entropy"
    }

    fn backward(&self, g: &Tensor, _y: &Tensor) -> tessera_autograd::Result<Vec<Option<Tensor>>> {
        let [n, c] = self.shape;
        let scale = g.to_scalar()? / self.valid as f32;
        let (eps, uniform) = (self.label_smoothing, self.label_smoothing / c as f32);
        let mut dx = vec![0.0f32; n * c];
        for (i, (d, p)) in dx
            .chunks_exact_mut(c)
            .zip(self.probs.chunks_exact(c))
            .enumerate()
        {
            let t = self.targets[i];
            if Some(t) == self.ignore_index {
                continue;
            }
            d.iter_mut()
                .zip(p)
                .for_each(|(d, &p)| *d = (p - uniform) * scale);
            d[t] -= (1.0 - eps) * scale;
        }
        Ok(vec![Some(Tensor::from_vec(dx, &[n, c])?)])
    }
}

/// `log p[target]` per row (`[N, 1]`) and the 0/1 weights of the rows that count.
fn picked_log_probs(
    logp: &Var,
    targets: &IndexTensor,
    n: usize,
    c: usize,
    ignore_index: Option<usize>,
    layer: &'static str,
) -> Result<(Var, Tensor)> {
    if targets.shape() != [n] {
        return Err(Error::shape(layer, format!("{n} targets"), targets.shape()));
    }
    let mut idx = Vec::with_capacity(n);
    let mut weights = Vec::with_capacity(n);
    for (row, &t) in targets.data().iter().enumerate() {
        if Some(t) == ignore_index {
            idx.push(0);
            weights.push(0.0);
        } else if t >= c {
            return Err(Error::Target {
                op: layer,
                target: t,
                row,
                classes: c,
            });
        } else {
            idx.push(t);
            weights.push(1.0);
        }
    }
    if weights.iter().all(|&w| w == 0.0) {
        return Err(every_target_ignored(layer, ignore_index));
    }
    let picked = logp.gather(1, &IndexTensor::new(idx, &[n, 1])?)?;
    Ok((picked, Tensor::from_vec(weights, &[n, 1])?))
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
    let (n, c) = log_probs
        .value()
        .dims2()
        .map_err(|_| Error::shape("nll_loss", "log-probabilities [N, C]", log_probs.shape()))?;
    let (picked, weights) = picked_log_probs(log_probs, targets, n, c, ignore_index, "nll_loss")?;
    let valid: f32 = weights.sum_all().to_scalar()?;
    Ok(picked
        .mul(&Var::constant(weights))?
        .sum_all()
        .mul_scalar(-1.0 / valid))
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
    if prediction.shape() != target.shape() {
        return Err(Error::shape(
            "mse_loss",
            format!(
                "a target of the prediction's shape {:?}",
                prediction.shape()
            ),
            target.shape(),
        ));
    }
    Ok(prediction.sub(target)?.square().mean_all())
}

/// The error of a batch whose every target is `ignore_index`: its mean is undefined.
fn every_target_ignored(op: &'static str, ignore_index: Option<usize>) -> Error {
    let index = ignore_index.map_or("none".to_string(), |i| i.to_string());
    Error::setting(
        op,
        "ignore_index",
        index,
        "must leave at least one target (every target is ignored: the mean is undefined)",
    )
}
