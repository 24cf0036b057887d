//! Weight initialisers, as `torch.nn.init` defines them, from a seedable [`Rng`].
//!
//! Fans follow PyTorch: for a weight `[out, in, k...]`, `fan_in = in · Πk` and
//! `fan_out = out · Πk`.

use tessera_tensor::{Rng, Tensor};

use crate::{Error, Result};

/// `(fan_in, fan_out)` of a weight shape (at least 2 axes).
pub fn fans(shape: &[usize]) -> Result<(usize, usize)> {
    if shape.len() < 2 {
        return Err(Error::shape(
            "init (fan in/out)",
            "a weight of rank >= 2",
            shape,
        ));
    }
    let receptive: usize = shape[2..].iter().product();
    Ok((shape[1] * receptive, shape[0] * receptive))
}

/// Xavier/Glorot uniform: `U(-a, a)`, `a = gain · √(6 / (fan_in + fan_out))`.
pub fn xavier_uniform(shape: &[usize], gain: f32, rng: &mut Rng) -> Result<Tensor> {
    let (fi, fo) = fans(shape)?;
    let a = gain * (6.0 / (fi + fo) as f32).sqrt();
    Ok(Tensor::rand(shape, -a, a, rng))
}

/// Xavier/Glorot normal: `N(0, σ²)`, `σ = gain · √(2 / (fan_in + fan_out))`.
pub fn xavier_normal(shape: &[usize], gain: f32, rng: &mut Rng) -> Result<Tensor> {
    let (fi, fo) = fans(shape)?;
    Ok(Tensor::randn(
        shape,
        0.0,
        gain * (2.0 / (fi + fo) as f32).sqrt(),
        rng,
    ))
}

/// Kaiming/He uniform over `fan_in` with negative slope `a` (leaky ReLU):
/// `U(-b, b)`, `b = √(6 / ((1 + a²) fan_in))`. PyTorch's default `Linear` weight is this
/// with `a = √5`, i.e. `U(-1/√fan_in, 1/√fan_in)`.
pub fn kaiming_uniform(shape: &[usize], a: f32, rng: &mut Rng) -> Result<Tensor> {
    let (fi, _) = fans(shape)?;
    let b = (6.0 / ((1.0 + a * a) * fi as f32)).sqrt();
    Ok(Tensor::rand(shape, -b, b, rng))
}

/// Kaiming/He normal over `fan_in` for ReLU: `N(0, 2 / fan_in)`.
pub fn kaiming_normal(shape: &[usize], rng: &mut Rng) -> Result<Tensor> {
    let (fi, _) = fans(shape)?;
    Ok(Tensor::randn(shape, 0.0, (2.0 / fi as f32).sqrt(), rng))
}

/// timm's `trunc_normal_(std)`: `N(0, std²)` truncated to `[-2, 2]` (absolute bounds).
pub fn trunc_normal(shape: &[usize], std: f32, rng: &mut Rng) -> Result<Tensor> {
    Ok(Tensor::trunc_normal(shape, 0.0, std, -2.0, 2.0, rng)?)
}
