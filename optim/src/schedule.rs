//! Learning-rate schedules: pure functions of the (1-based) optimizer step.
//!
//! Each returns the learning rate that step `step` uses; a training loop calls
//! `opt.set_lr(schedule(step))` before `opt.step(...)`, and a resumed run computes the
//! same rate from the saved step.

use std::f64::consts::PI;

/// The Transformer's schedule ("Attention Is All You Need", eq. 3):
/// `d_model^-0.5 · min(step^-0.5, step · warmup^-1.5)`: linear growth for `warmup` steps,
/// then decay with the inverse square root of the step.
///
/// ```
/// use tessera_optim::schedule::transformer;
/// // The peak is at step = warmup: 512^-0.5 · 4000^-0.5 ≈ 7.0e-4.
/// assert!((transformer(4000, 512, 4000) - 6.9877e-4).abs() < 1e-7);
/// ```
pub fn transformer(step: u64, d_model: usize, warmup: u64) -> f64 {
    let s = step.max(1) as f64;
    (d_model as f64).powf(-0.5) * s.powf(-0.5).min(s * (warmup as f64).powf(-1.5))
}

/// Constant rate.
pub fn constant(_step: u64, lr: f64) -> f64 {
    lr
}

/// `lr · gamma^floor((step - 1) / every)`: multiplied by `gamma` every `every` steps
/// (PyTorch's `StepLR`).
pub fn step_decay(step: u64, lr: f64, every: u64, gamma: f64) -> f64 {
    lr * gamma.powi((step.saturating_sub(1) / every.max(1)) as i32)
}

/// Linear warmup from `lr · start_factor` to `lr` over `warmup` steps, then cosine
/// decay to `min_lr` over the following `decay` steps (PyTorch's `LinearLR` followed by
/// `CosineAnnealingLR`).
pub fn warmup_cosine(
    step: u64,
    lr: f64,
    start_factor: f64,
    warmup: u64,
    decay: u64,
    min_lr: f64,
) -> f64 {
    let k = step.saturating_sub(1);
    if k < warmup {
        return lr * (start_factor + (1.0 - start_factor) * k as f64 / warmup as f64);
    }
    let t = ((k - warmup) as f64).min(decay as f64);
    min_lr + (lr - min_lr) * (1.0 + (PI * t / decay.max(1) as f64).cos()) / 2.0
}
