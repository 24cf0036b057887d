//! Central finite differences against the gradients of the backward pass.

use tessera_tensor::{Rng, Tensor};

use crate::var::{no_grad, Var};
use crate::{Error, Result};

/// Settings of [`check_gradients`].
#[derive(Clone, Copy, Debug)]
pub struct GradCheck {
    /// Step of the central difference `(L(x + eps) - L(x - eps)) / 2 eps`.
    pub eps: f32,
    /// Allowed absolute difference.
    pub atol: f64,
    /// Allowed difference relative to the larger of the two gradients.
    pub rtol: f64,
}

impl Default for GradCheck {
    /// `eps = 1e-2`, `atol = 1e-3`, `rtol = 1e-2`: suited to f32 values of order one,
    /// whose forward passes round at about 1e-7 relative (the difference quotient then
    /// carries about 1e-5 of rounding error and `eps²` of truncation error).
    fn default() -> Self {
        GradCheck {
            eps: 1e-2,
            atol: 1e-3,
            rtol: 1e-2,
        }
    }
}

/// Checks the backward pass of `f` at `inputs` against central finite differences.
///
/// The output of `f` is reduced to the scalar `L = Σ w ⊙ f(x)` with fixed random weights
/// `w` (so every output element matters), differentiated by `backward`, and each input
/// element's gradient is compared with `(L(x + eps) - L(x - eps)) / 2 eps`, the sums
/// taken in f64. Errors name the input, the element and both values.
///
/// ```
/// use tessera_autograd::{check_gradients, GradCheck, Var};
/// use tessera_tensor::Tensor;
/// let x = Tensor::from_vec(vec![0.3, -1.2, 2.0], &[3])?;
/// check_gradients(|v| Ok(v[0].tanh().mul(&v[0])?), &[x], GradCheck::default())?;
/// # Ok::<(), tessera_autograd::Error>(())
/// ```
pub fn check_gradients(
    f: impl Fn(&[Var]) -> Result<Var>,
    inputs: &[Tensor],
    opts: GradCheck,
) -> Result<()> {
    let vars: Vec<Var> = inputs.iter().cloned().map(Var::parameter).collect();
    let out = f(&vars)?;
    let w = Tensor::randn(out.shape(), 0.0, 1.0, &mut Rng::seed(0x9e37_79b9));
    let loss = out.mul(&Var::constant(w.clone()))?.sum_all();
    loss.backward()?;
    let weights = w.to_vec();
    let eval = |xs: &[Tensor]| -> Result<f64> {
        no_grad(|| {
            let vs: Vec<Var> = xs.iter().cloned().map(Var::constant).collect();
            let y = f(&vs)?.value().to_vec();
            Ok(y.iter()
                .zip(&weights)
                .map(|(&a, &b)| a as f64 * b as f64)
                .sum())
        })
    };
    for (i, var) in vars.iter().enumerate() {
        let analytic = var
            .grad()
            .unwrap_or_else(|| Tensor::zeros(inputs[i].shape()))
            .to_vec();
        let base = inputs[i].to_vec();
        for j in 0..base.len() {
            let mut shifted: Vec<Tensor> = inputs.to_vec();
            let mut plus = base.clone();
            plus[j] += opts.eps;
            shifted[i] = Tensor::from_vec(plus, inputs[i].shape())?;
            let lp = eval(&shifted)?;
            let mut minus = base.clone();
            minus[j] -= opts.eps;
            shifted[i] = Tensor::from_vec(minus, inputs[i].shape())?;
            let lm = eval(&shifted)?;
            let numeric = (lp - lm) / (2.0 * opts.eps as f64);
            let a = analytic[j] as f64;
            if (a - numeric).abs() > opts.atol + opts.rtol * a.abs().max(numeric.abs()) {
                return Err(Error::GradientMismatch {
                    input: i,
                    element: j,
                    analytic: a,
                    numeric,
                });
            }
        }
    }
    Ok(())
}
