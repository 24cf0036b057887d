//! Every backward rule, in one place.
//!
//! `backward_rule(op, g, y)` receives the gradient `g = ∂L/∂y` of an operation's output
//! `y` and returns `∂L/∂x` for each input `x`. Where an input was broadcast, its gradient
//! is summed back to the input's shape ([`sum_to`]).

use tessera_tensor::Tensor;

use crate::ops::Op;
use crate::var::Var;
use crate::Result;

/// Whether the last two axes of `x` are laid out column by column (a transposed view,
/// such as the `Wᵀ` of `x · Wᵀ`).
fn column_major(x: &Tensor) -> bool {
    let (shape, strides) = (x.shape(), x.strides());
    let r = shape.len();
    r >= 2 && shape[r - 2] > 1 && shape[r - 1] > 1 && strides[r - 2] == 1 && strides[r - 1] != 1
}

/// `g bᵀ`, the gradient of a product `a b` with respect to `a`, laid out as `a` is: for a
/// column-major `a` it is computed as `(b gᵀ)ᵀ`, so that the backward step of the
/// transpose that made `a` is a view and copies nothing (the same sums either way).
fn left_grad(g: &Tensor, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    Ok(if column_major(a) {
        b.matmul(&g.t()?)?.t()?
    } else {
        g.matmul(&b.t()?)?
    })
}

/// `aᵀ g`, the gradient of a product `a b` with respect to `b`, laid out as `b` is: for a
/// column-major `b` (the `Wᵀ` of a linear layer) it is computed as `(gᵀ a)ᵀ`, which lands
/// in `W`'s own layout, so that the transpose's backward step copies nothing.
fn right_grad(g: &Tensor, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    Ok(if column_major(b) {
        g.t()?.matmul(a)?.t()?
    } else {
        a.t()?.matmul(g)?
    })
}

/// Sums `grad` over the axes that broadcasting added or stretched, giving `shape`.
pub(crate) fn sum_to(grad: Tensor, shape: &[usize]) -> Result<Tensor> {
    if grad.shape() == shape {
        return Ok(grad);
    }
    let lead = grad.rank() - shape.len();
    let mut axes: Vec<usize> = (0..lead).collect();
    for (i, &d) in shape.iter().enumerate() {
        if d == 1 && grad.shape()[lead + i] != 1 {
            axes.push(lead + i);
        }
    }
    Ok(grad.sum(&axes, true)?.reshape(shape)?)
}

/// The gradients of `op`'s inputs, given the gradient `g` of its output `y`.
pub(crate) fn backward_rule(op: &Op, g: &Tensor, y: &Tensor) -> Result<Vec<(Var, Tensor)>> {
    use Op::*;
    let one = |x: &Var, gx: Tensor| -> Result<Vec<(Var, Tensor)>> { Ok(vec![(x.clone(), gx)]) };
    match op {
        // y = a + b: ∂a = g, ∂b = g (each summed to its shape).
        Add(a, b) => Ok(vec![
            (a.clone(), sum_to(g.clone(), a.shape())?),
            (b.clone(), sum_to(g.clone(), b.shape())?),
        ]),
        // y = a - b: ∂a = g, ∂b = -g.
        Sub(a, b) => Ok(vec![
            (a.clone(), sum_to(g.clone(), a.shape())?),
            (b.clone(), sum_to(g.neg(), b.shape())?),
        ]),
        // y = a b: ∂a = g b, ∂b = g a.
        Mul(a, b) => Ok(vec![
            (a.clone(), sum_to(g.mul(b.value())?, a.shape())?),
            (b.clone(), sum_to(g.mul(a.value())?, b.shape())?),
        ]),
        // y = a / b: ∂a = g / b, ∂b = -g a / b² = -g y / b.
        Div(a, b) => Ok(vec![
            (a.clone(), sum_to(g.div(b.value())?, a.shape())?),
            (
                b.clone(),
                sum_to(g.mul(y)?.div(b.value())?.neg(), b.shape())?,
            ),
        ]),
        Neg(a) => one(a, g.neg()),
        AddScalar(a) => one(a, g.clone()),
        MulScalar(a, s) => one(a, g.mul_scalar(*s)),
        // y = x^p: ∂x = g p x^(p-1).
        PowScalar(a, p) => one(a, g.mul(&a.value().pow(p - 1.0))?.mul_scalar(*p)),
        // y = e^x: ∂x = g y.
        Exp(a) => one(a, g.mul(y)?),
        // y = ln x: ∂x = g / x.
        Log(a) => one(a, g.div(a.value())?),
        // y = √x: ∂x = g / (2 y).
        Sqrt(a) => one(a, g.div(&y.mul_scalar(2.0))?),
        // y = tanh x: ∂x = g (1 - y²).
        Tanh(a) => one(a, g.mul(&y.square().neg().add_scalar(1.0))?),
        // y = σ(x): ∂x = g y (1 - y).
        Sigmoid(a) => one(a, g.mul(&y.mul(&y.neg().add_scalar(1.0))?)?),
        // y = max(x, 0): ∂x = g where x > 0, else 0 (0 at the kink), in one pass: as
        // PyTorch's `threshold_backward`, which selects rather than multiplies.
        Relu(a) => one(
            a,
            g.zip_map(
                a.value(),
                "relu_backward",
                |g, x| if x > 0.0 { g } else { 0.0 },
            )?,
        ),
        // y = a b: ∂a = g bᵀ, ∂b = aᵀ g (batch axes summed back where broadcast).
        Matmul(a, b) => {
            let (av, bv) = (a.value(), b.value());
            Ok(vec![
                (a.clone(), sum_to(left_grad(g, av, bv)?, a.shape())?),
                (b.clone(), sum_to(right_grad(g, av, bv)?, b.shape())?),
            ])
        }
        // y = bias + a b: as Matmul, and ∂bias = g summed over the rows.
        Addmm(bias, a, b) => {
            let (av, bv) = (a.value(), b.value());
            Ok(vec![
                (bias.clone(), sum_to(g.clone(), bias.shape())?),
                (a.clone(), left_grad(g, av, bv)?),
                (b.clone(), right_grad(g, av, bv)?),
            ])
        }
        // y = Σ_axes x: ∂x = g broadcast back over the summed axes.
        Sum(a, axes, keepdim) => {
            let mut g = g.clone();
            if !keepdim {
                for &ax in axes {
                    g = g.unsqueeze(ax)?;
                }
            }
            one(a, g.broadcast_to(a.shape())?.contiguous())
        }
        Reshape(a) => one(a, g.reshape(a.shape())?),
        // y = permute(x, order): ∂x = permute(g, order⁻¹).
        Permute(a, order) => {
            let mut inverse = vec![0usize; order.len()];
            for (i, &o) in order.iter().enumerate() {
                inverse[o] = i;
            }
            one(a, g.permute(&inverse)?.contiguous())
        }
        // y = softmax(x): ∂x = y (g - Σ g y).
        Softmax(a, ax) => {
            let dot = g.mul(y)?.sum(&[*ax], true)?;
            one(a, y.mul(&g.sub(&dot)?)?)
        }
        // y = log_softmax(x): ∂x = g - e^y Σ g.
        LogSoftmax(a, ax) => {
            let total = g.sum(&[*ax], true)?;
            one(a, g.sub(&y.exp().mul(&total)?)?)
        }
        // y = x[indices] along an axis: ∂x = zeros with g added at the indices.
        IndexSelect(a, ax, indices) => one(a, Tensor::zeros(a.shape()).index_add(*ax, indices, g)?),
        // y = gather(x, index): ∂x = zeros with g added at the gathered positions.
        Gather(a, ax, index) => one(a, Tensor::zeros(a.shape()).scatter_add(*ax, index, g)?),
        // y = concat(parts): each part gets its slice of g.
        Concat(parts, ax) => {
            let mut start = 0;
            let mut out = Vec::with_capacity(parts.len());
            for p in parts {
                let len = p.shape()[*ax];
                out.push((p.clone(), g.narrow(*ax, start, len)?.contiguous()));
                start += len;
            }
            Ok(out)
        }
        // y = x[start..start+len] along an axis: ∂x = g padded with zeros.
        Narrow(a, ax, start) => {
            let (len, size) = (g.shape()[*ax], a.shape()[*ax]);
            let mut before = a.shape().to_vec();
            before[*ax] = *start;
            let mut after = a.shape().to_vec();
            after[*ax] = size - start - len;
            let (zb, za) = (Tensor::zeros(&before), Tensor::zeros(&after));
            one(a, Tensor::concat(&[&zb, g, &za], *ax)?)
        }
        BroadcastTo(a) => one(a, sum_to(g.clone(), a.shape())?),
        // y = m ? a : b: ∂a = g m, ∂b = g (1 - m) (each summed to its shape).
        Where(mask, a, b) => {
            let m = mask.ne_scalar(0.0);
            Ok(vec![
                (a.clone(), sum_to(g.mul(&m)?, a.shape())?),
                (
                    b.clone(),
                    sum_to(g.mul(&m.neg().add_scalar(1.0))?, b.shape())?,
                ),
            ])
        }
        // y = x Φ(x): ∂x = g (Φ(x) + x φ(x)).
        Gelu(a) => one(a, a.value().gelu_backward(y, g)?),
        // y = x/2 (1 + tanh u), u = √(2/π)(x + 0.044715 x³):
        // ∂x = g (½(1 + tanh u) + ½ x (1 - tanh² u) √(2/π)(1 + 3·0.044715 x²)).
        GeluTanh(a) => one(a, g.mul(&a.value().map(gelu_tanh_grad))?),
        // y = x · keep: ∂x = g · keep.
        Dropout(a, keep) => one(a, g.mul(keep)?),
        // y = unfold(x): ∂x = fold(g), the sum of each window's gradient back in place.
        Unfold(a, window, size) => one(a, g.fold2d(*size, window)?),
        // y = max over each window: ∂x = g at the winning position, 0 elsewhere.
        MaxPool(a, winners) => {
            let mut dx = vec![0.0f32; a.value().numel()];
            for (&at, &gv) in winners.iter().zip(g.contiguous().to_vec().iter()) {
                if at != usize::MAX {
                    dx[at] += gv;
                }
            }
            one(a, Tensor::from_vec(dx, a.shape())?)
        }
        Custom(inputs, f) => {
            let grads = f.backward(g, y)?;
            if grads.len() != inputs.len() {
                return Err(crate::Error::CustomGrad {
                    op: f.name(),
                    msg: format!("{} gradients for {} inputs", grads.len(), inputs.len()),
                });
            }
            let mut out = Vec::with_capacity(inputs.len());
            for (i, (x, gx)) in inputs.iter().zip(grads).enumerate() {
                let Some(gx) = gx else { continue };
                if gx.shape() != x.shape() {
                    return Err(crate::Error::CustomGrad {
                        op: f.name(),
                        msg: format!(
                            "a gradient of shape {:?} for input {i} of shape {:?}",
                            gx.shape(),
                            x.shape()
                        ),
                    });
                }
                out.push((x.clone(), gx));
            }
            Ok(out)
        }
    }
}

fn gelu_tanh_grad(x: f32) -> f32 {
    let x = x as f64;
    let k = (2.0 / std::f64::consts::PI).sqrt();
    let t = (k * (x + 0.044715 * x * x * x)).tanh();
    (0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * k * (1.0 + 3.0 * 0.044715 * x * x)) as f32
}

#[cfg(test)]
mod tests {
    use tessera_tensor::{Rng, Tensor};

    use super::{left_grad, right_grad};

    fn assert_close(x: &Tensor, y: &Tensor) {
        assert_eq!(x.shape(), y.shape());
        for (p, q) in x.to_vec().iter().zip(y.to_vec()) {
            assert!((p - q).abs() < 1e-5, "{p} against {q}");
        }
    }

    /// A product's gradients equal `g bᵀ` and `aᵀ g` whatever the operands' layout, and
    /// an operand that is a transposed view gets its gradient in the view's layout: the
    /// transpose of the gradient is contiguous, so the transpose's backward copies nothing.
    #[test]
    fn gradients_of_transposed_views_come_in_their_layout() {
        let mut rng = Rng::seed(3);
        let x = Tensor::randn(&[5, 3], 0.0, 1.0, &mut rng);
        let w = Tensor::randn(&[4, 3], 0.0, 1.0, &mut rng);
        let g = Tensor::randn(&[5, 4], 0.0, 1.0, &mut rng);
        // y = x · wᵀ: the right operand is a transposed view.
        let wt = w.t().unwrap();
        let gw = right_grad(&g, &x, &wt).unwrap();
        assert_close(&gw, &x.t().unwrap().matmul(&g).unwrap());
        assert!(!gw.is_contiguous() && gw.t().unwrap().is_contiguous());
        // y = wᵀ · z: the left operand is a transposed view.
        let (a, z) = (w.t().unwrap(), Tensor::randn(&[4, 2], 0.0, 1.0, &mut rng));
        let g2 = Tensor::randn(&[3, 2], 0.0, 1.0, &mut rng);
        let ga = left_grad(&g2, &a, &z).unwrap();
        assert_close(&ga, &g2.matmul(&z.t().unwrap()).unwrap());
        assert!(ga.t().unwrap().is_contiguous());
        // Row-major operands keep row-major gradients.
        let gx = left_grad(&g, &x, &wt).unwrap();
        assert!(gx.is_contiguous());
        assert_close(&gx, &g.matmul(&w).unwrap());
    }

    /// ReLU's gradient selects, as PyTorch's `threshold_backward`: `g` where `x > 0`, and
    /// 0 elsewhere, even where `g` is infinite or NaN (a product by the mask gives NaN).
    #[test]
    fn relu_gradient_is_zero_below_the_kink_whatever_comes() {
        let x = crate::Var::parameter(Tensor::from_vec(vec![-1.0, 0.0, 2.0, 3.0], &[4]).unwrap());
        let g = Tensor::from_vec(vec![f32::INFINITY, f32::NAN, -4.0, 5.0], &[4]).unwrap();
        x.relu().backward_with(g).unwrap();
        assert_eq!(x.grad().unwrap().to_vec(), [0.0, 0.0, -4.0, 5.0]);
    }
}
