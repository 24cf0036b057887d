//! Losses with PyTorch's semantics.

use tessera_tensor::{IndexTensor, Tensor};

use crate::{Error, Result, Var};

/// Cross-entropy on logits `[N, C]` with class targets `[N]`, as
/// `F.cross_entropy(logits, targets, label_smoothing=ε, ignore_index=i)` with mean
/// reduction: for each non-ignored row,
/// `(1 - ε) · (-log p[target]) + ε · (-(1/C) Σ_c log p[c])`, averaged over the
/// non-ignored rows (the smoothing mass is spread over all C classes, the target's
/// included).
pub fn cross_entropy(
    logits: &Var,
    targets: &IndexTensor,
    label_smoothing: f32,
    ignore_index: Option<usize>,
) -> Result<Var> {
    let (n, c) = logits.value().dims2().map_err(|_| Error::Input {
        layer: "cross_entropy",
        msg: format!("expected logits [N, C], got {:?}", logits.shape()),
    })?;
    if !(0.0..=1.0).contains(&label_smoothing) {
        return Err(Error::Input {
            layer: "cross_entropy",
            msg: format!("label smoothing {label_smoothing} is outside [0, 1]"),
        });
    }
    let logp = logits.log_softmax(-1)?;
    let (picked, weights) = picked_log_probs(&logp, targets, n, c, ignore_index, "cross_entropy")?;
    let valid: f32 = weights.sum_all().to_scalar()?;
    let w = Var::constant(weights);
    // Σ_i w_i · (-log p_i[t_i]) and Σ_i w_i · (-(1/C) Σ_c log p_ic), each / n_valid.
    let nll = picked.mul(&w)?.sum_all().mul_scalar(-1.0 / valid);
    if label_smoothing == 0.0 {
        return Ok(nll);
    }
    let smooth = logp
        .sum(&[-1], true)?
        .mul(&w)?
        .sum_all()
        .mul_scalar(-1.0 / (c as f32 * valid));
    Ok(nll
        .mul_scalar(1.0 - label_smoothing)
        .add(&smooth.mul_scalar(label_smoothing))?)
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
        return Err(Error::Input {
            layer,
            msg: format!("expected {n} targets, got shape {:?}", targets.shape()),
        });
    }
    let mut idx = Vec::with_capacity(n);
    let mut weights = Vec::with_capacity(n);
    for (row, &t) in targets.data().iter().enumerate() {
        if Some(t) == ignore_index {
            idx.push(0);
            weights.push(0.0);
        } else if t >= c {
            return Err(Error::Input {
                layer,
                msg: format!("target {t} of row {row} is outside {c} classes"),
            });
        } else {
            idx.push(t);
            weights.push(1.0);
        }
    }
    if weights.iter().all(|&w| w == 0.0) {
        return Err(Error::Input {
            layer,
            msg: "every target is ignored: the mean is undefined".into(),
        });
    }
    let picked = logp.gather(1, &IndexTensor::new(idx, &[n, 1])?)?;
    Ok((picked, Tensor::from_vec(weights, &[n, 1])?))
}

/// Negative log-likelihood on log-probabilities `[N, C]`, mean over non-ignored rows
/// (`F.nll_loss`).
pub fn nll_loss(
    log_probs: &Var,
    targets: &IndexTensor,
    ignore_index: Option<usize>,
) -> Result<Var> {
    let (n, c) = log_probs.value().dims2().map_err(|_| Error::Input {
        layer: "nll_loss",
        msg: format!(
            "expected log-probabilities [N, C], got {:?}",
            log_probs.shape()
        ),
    })?;
    let (picked, weights) = picked_log_probs(log_probs, targets, n, c, ignore_index, "nll_loss")?;
    let valid: f32 = weights.sum_all().to_scalar()?;
    Ok(picked
        .mul(&Var::constant(weights))?
        .sum_all()
        .mul_scalar(-1.0 / valid))
}

/// Mean squared error (`F.mse_loss`, mean reduction); shapes must match.
pub fn mse_loss(prediction: &Var, target: &Var) -> Result<Var> {
    if prediction.shape() != target.shape() {
        return Err(Error::Input {
            layer: "mse_loss",
            msg: format!(
                "prediction {:?} and target {:?} differ",
                prediction.shape(),
                target.shape()
            ),
        });
    }
    Ok(prediction.sub(target)?.sqr().mean_all())
}
