//! Global-norm gradient clipping.

use crate::{gradients, Parameter, Result};

/// The `max_norm` of [`clip_grad_norm`] that a trainer's clip setting stands for: the
/// setting itself, or no limit when it is 0 (the trainers' "no clipping").
///
/// ```
/// assert_eq!(tessera_optim::clip_limit(1.0), 1.0);
/// assert_eq!(tessera_optim::clip_limit(0.0), f32::INFINITY);
/// ```
pub fn clip_limit(setting: f32) -> f32 {
    if setting > 0.0 {
        setting
    } else {
        f32::INFINITY
    }
}

/// Scales all gradients by `max_norm / (‖g‖ + 1e-6)` when the global L2 norm `‖g‖` of
/// all gradients together exceeds `max_norm`, as `torch.nn.utils.clip_grad_norm_`;
/// returns the norm before clipping. A non-finite gradient is an error and changes
/// nothing.
pub fn clip_grad_norm(params: &[(String, Parameter)], max_norm: f32) -> Result<f32> {
    let grads = gradients(params, "clip_grad_norm")?;
    let total: f64 = grads
        .iter()
        .map(|(_, _, g)| {
            // Each tensor's norm rounded to f32, as PyTorch's per-tensor norms are.
            let sq = |s: &[f32]| s.iter().map(|&x| x as f64 * x as f64).sum::<f64>();
            let n = match g.as_slice() {
                Some(s) => sq(s),
                None => sq(&g.to_vec()),
            }
            .sqrt() as f32;
            (n as f64) * (n as f64)
        })
        .sum::<f64>()
        .sqrt();
    let total = total as f32;
    let coef = (max_norm / (total + 1e-6)).min(1.0);
    if coef < 1.0 {
        for (_, p, g) in grads {
            p.set_grad(g.mul_scalar(coef))?;
        }
    }
    Ok(total)
}
