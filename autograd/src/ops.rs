//! The differentiable operations: each computes its value with tessera-tensor and records
//! an [`Op`] that `backward.rs` knows how to differentiate.

use smallvec::{smallvec, SmallVec};
use tessera_tensor::{Dim, IndexTensor, Rng, Tensor, Window2d};

use crate::var::Var;
use crate::Result;

/// How a value was computed: the operation and what its backward rule needs.
pub(crate) enum Op {
    Add(Var, Var),
    Sub(Var, Var),
    Mul(Var, Var),
    Div(Var, Var),
    Neg(Var),
    AddScalar(Var),
    MulScalar(Var, f32),
    PowScalar(Var, f32),
    Exp(Var),
    Log(Var),
    Sqrt(Var),
    Tanh(Var),
    Sigmoid(Var),
    Relu(Var),
    Matmul(Var, Var),
    /// `bias + a·b` (bias broadcast over the rows).
    Addmm(Var, Var, Var),
    Sum(Var, Vec<usize>, bool),
    Reshape(Var),
    Permute(Var, Vec<usize>),
    Softmax(Var, usize),
    LogSoftmax(Var, usize),
    IndexSelect(Var, usize, Vec<usize>),
    Gather(Var, usize, IndexTensor),
    Concat(Vec<Var>, usize),
    Narrow(Var, usize, usize),
    BroadcastTo(Var),
    Where(Tensor, Var, Var),
    Gelu(Var),
    GeluTanh(Var),
    /// The 0/1 keep-mask already divided by `1 - p`.
    Dropout(Var, Tensor),
    /// im2col of an `[N, C, H, W]` input: the window and the input's `(H, W)`.
    Unfold(Var, Window2d, (usize, usize)),
    /// Max-pooling: the flat input position that won each output.
    MaxPool(Var, Vec<usize>),
    /// An operation defined outside the crate, with its own backward rule.
    Custom(Vec<Var>, std::sync::Arc<dyn Function>),
}

/// The backward rule of an operation computed outside this crate (PyTorch's
/// `autograd.Function`): a fused kernel whose gradients are derived by hand, such as a
/// whole recurrent layer. Record it with [`Var::custom`].
///
/// ```
/// use std::sync::Arc;
/// use tessera_autograd::{Function, Result, Var};
/// use tessera_tensor::Tensor;
///
/// /// y = x³, with ∂x = 3 x² g.
/// #[derive(Debug)]
/// struct Cube(Tensor);
/// impl Function for Cube {
///     fn name(&self) -> &'static str { "cube" }
///     fn backward(&self, g: &Tensor, _y: &Tensor) -> Result<Vec<Option<Tensor>>> {
///         Ok(vec![Some(g.mul(&self.0.square().mul_scalar(3.0))?)])
///     }
/// }
/// let x = Var::parameter(Tensor::from_vec(vec![1.0, 2.0], &[2])?);
/// let y = Var::custom(x.value().pow(3.0), &[x.clone()], Arc::new(Cube(x.value().clone())));
/// y.sum_all().backward()?;
/// assert_eq!(x.grad().unwrap().to_vec(), vec![3.0, 12.0]);
/// # Ok::<(), tessera_autograd::Error>(())
/// ```
pub trait Function: Send + Sync + std::fmt::Debug {
    /// The operation's name, for error messages.
    fn name(&self) -> &'static str;
    /// The gradients of the inputs (in the order given to [`Var::custom`]; `None` for an
    /// input that gets none), given the gradient `g` of the output `y`.
    fn backward(&self, g: &Tensor, y: &Tensor) -> Result<Vec<Option<Tensor>>>;
}

impl Op {
    /// The values this operation read.
    /// (Inline for up to two inputs: recording an op allocates nothing for this.)
    pub(crate) fn inputs(&self) -> SmallVec<[&Var; 2]> {
        use Op::*;
        match self {
            Add(a, b) | Sub(a, b) | Mul(a, b) | Div(a, b) | Matmul(a, b) => smallvec![a, b],
            Neg(a)
            | AddScalar(a)
            | MulScalar(a, _)
            | PowScalar(a, _)
            | Exp(a)
            | Log(a)
            | Sqrt(a)
            | Tanh(a)
            | Sigmoid(a)
            | Relu(a)
            | Sum(a, _, _)
            | Reshape(a)
            | Permute(a, _)
            | Softmax(a, _)
            | LogSoftmax(a, _)
            | IndexSelect(a, _, _)
            | Gather(a, _, _)
            | Narrow(a, _, _)
            | BroadcastTo(a)
            | Gelu(a)
            | GeluTanh(a)
            | Dropout(a, _)
            | Unfold(a, _, _)
            | MaxPool(a, _) => smallvec![a],
            Where(_, a, b) => smallvec![a, b],
            Addmm(bias, a, b) => smallvec![bias, a, b],
            Concat(parts, _) | Custom(parts, _) => parts.iter().collect(),
        }
    }
}

fn axes_of<D: Dim>(x: &Tensor, axes: &[D], op: &'static str) -> Result<Vec<usize>> {
    let mut out = Vec::with_capacity(axes.len());
    for &a in axes {
        out.push(a.to_axis(x.rank(), op)?);
    }
    out.sort_unstable();
    Ok(out)
}

macro_rules! binary {
    ($($(#[$doc:meta])* $name:ident => $variant:ident;)*) => {
        impl Var {$(
            $(#[$doc])*
            pub fn $name(&self, rhs: &Var) -> Result<Var> {
                let value = self.value().$name(rhs.value())?;
                Ok(Var::from_op(value, Op::$variant(self.clone(), rhs.clone())))
            }
        )*}
    };
}

binary! {
    /// `a + b` with broadcasting.
    add => Add;
    /// `a - b` with broadcasting.
    sub => Sub;
    /// `a * b` with broadcasting.
    mul => Mul;
    /// `a / b` with broadcasting.
    div => Div;
    /// Matrix product (rank ≥ 2 operands, broadcast batch axes), as `Tensor::matmul`.
    matmul => Matmul;
}

macro_rules! unary {
    ($($(#[$doc:meta])* $name:ident => $variant:ident;)*) => {
        impl Var {$(
            $(#[$doc])*
            pub fn $name(&self) -> Var {
                Var::from_op(self.value().$name(), Op::$variant(self.clone()))
            }
        )*}
    };
}

unary! {
    /// `-x`.
    neg => Neg;
    /// `e^x`.
    exp => Exp;
    /// Natural logarithm.
    log => Log;
    /// Exact GELU `x Φ(x)`.
    gelu => Gelu;
    /// GELU's tanh approximation.
    gelu_tanh => GeluTanh;
    /// Square root.
    sqrt => Sqrt;
    /// Hyperbolic tangent.
    tanh => Tanh;
    /// Logistic sigmoid.
    sigmoid => Sigmoid;
    /// `max(x, 0)`.
    relu => Relu;
}

impl Var {
    /// `self + a·b` for matrices `a [m, k]`, `b [k, n]`, with `self` (a bias, typically
    /// `[n]`) broadcast to `[m, n]`: PyTorch's `addmm`, as `Tensor::addmm`. Its gradient
    /// is that of `a.matmul(b)?.add(self)`.
    ///
    /// ```
    /// use tessera_autograd::Var;
    /// use tessera_tensor::Tensor;
    /// let bias = Var::parameter(Tensor::from_vec(vec![1.0, 2.0], &[2])?);
    /// let x = Var::constant(Tensor::ones(&[3, 2]));
    /// let w = Var::parameter(Tensor::eye(2));
    /// bias.addmm(&x, &w)?.sum_all().backward()?;
    /// assert_eq!(bias.grad().unwrap().to_vec(), vec![3.0, 3.0]);
    /// # Ok::<(), tessera_autograd::Error>(())
    /// ```
    pub fn addmm(&self, a: &Var, b: &Var) -> Result<Var> {
        let value = self.value().addmm(a.value(), b.value())?;
        Ok(Var::from_op(
            value,
            Op::Addmm(self.clone(), a.clone(), b.clone()),
        ))
    }

    /// `x + s`.
    pub fn add_scalar(&self, s: f32) -> Var {
        Var::from_op(self.value().add_scalar(s), Op::AddScalar(self.clone()))
    }

    /// `x · s`.
    pub fn mul_scalar(&self, s: f32) -> Var {
        Var::from_op(self.value().mul_scalar(s), Op::MulScalar(self.clone(), s))
    }

    /// `x^p` (`torch.pow` with a number as the exponent).
    #[doc(alias = "powf")]
    pub fn pow(&self, p: f32) -> Var {
        Var::from_op(self.value().pow(p), Op::PowScalar(self.clone(), p))
    }

    /// `x²` (`torch.square`).
    #[doc(alias = "sqr")]
    pub fn square(&self) -> Var {
        self.pow(2.0)
    }

    /// Sum over `axes`.
    pub fn sum<D: Dim>(&self, axes: &[D], keepdim: bool) -> Result<Var> {
        let value = self.value().sum(axes, keepdim)?;
        let axes = axes_of(self.value(), axes, "sum")?;
        Ok(Var::from_op(value, Op::Sum(self.clone(), axes, keepdim)))
    }

    /// Sum of all elements (a rank-0 value).
    pub fn sum_all(&self) -> Var {
        let axes: Vec<usize> = (0..self.value().rank()).collect();
        Var::from_op(self.value().sum_all(), Op::Sum(self.clone(), axes, false))
    }

    /// Mean over `axes`.
    pub fn mean<D: Dim>(&self, axes: &[D], keepdim: bool) -> Result<Var> {
        let axes_r = axes_of(self.value(), axes, "mean")?;
        let n: usize = axes_r.iter().map(|&a| self.shape()[a]).product();
        Ok(self.sum(axes, keepdim)?.mul_scalar(1.0 / n as f32))
    }

    /// Mean of all elements (a rank-0 value).
    pub fn mean_all(&self) -> Var {
        let n = self.value().numel() as f32;
        self.sum_all().mul_scalar(1.0 / n)
    }

    /// The same elements with another shape.
    pub fn reshape(&self, shape: &[usize]) -> Result<Var> {
        let value = self.value().reshape(shape)?;
        Ok(Var::from_op(value, Op::Reshape(self.clone())))
    }

    /// Reorders the axes.
    pub fn permute<D: Dim>(&self, order: &[D]) -> Result<Var> {
        let value = self.value().permute(order)?;
        let order = order
            .iter()
            .map(|&d| d.to_axis(self.value().rank(), "permute"))
            .collect::<tessera_tensor::Result<Vec<_>>>()?;
        Ok(Var::from_op(value, Op::Permute(self.clone(), order)))
    }

    /// Swaps two axes.
    pub fn transpose<D: Dim>(&self, a: D, b: D) -> Result<Var> {
        let rank = self.value().rank();
        let (a, b) = (a.to_axis(rank, "transpose")?, b.to_axis(rank, "transpose")?);
        let mut order: Vec<usize> = (0..rank).collect();
        order.swap(a, b);
        self.permute(&order)
    }

    /// Softmax along `axis`.
    pub fn softmax<D: Dim>(&self, axis: D) -> Result<Var> {
        let ax = axis.to_axis(self.value().rank(), "softmax")?;
        let value = self.value().softmax(ax)?;
        Ok(Var::from_op(value, Op::Softmax(self.clone(), ax)))
    }

    /// Log-softmax along `axis`.
    pub fn log_softmax<D: Dim>(&self, axis: D) -> Result<Var> {
        let ax = axis.to_axis(self.value().rank(), "log_softmax")?;
        let value = self.value().log_softmax(ax)?;
        Ok(Var::from_op(value, Op::LogSoftmax(self.clone(), ax)))
    }

    /// The entries `indices` along `axis` (an embedding lookup along axis 0).
    pub fn index_select<D: Dim>(&self, axis: D, indices: &[usize]) -> Result<Var> {
        let ax = axis.to_axis(self.value().rank(), "index_select")?;
        let value = self.value().index_select(ax, indices)?;
        Ok(Var::from_op(
            value,
            Op::IndexSelect(self.clone(), ax, indices.to_vec()),
        ))
    }
}

impl Var {
    /// `out[..][j][..] = x[..][index[..][j][..]][..]` along `axis` (`torch.gather`); the
    /// gradient is a `scatter_add`.
    pub fn gather<D: Dim>(&self, axis: D, index: &IndexTensor) -> Result<Var> {
        let ax = axis.to_axis(self.value().rank(), "gather")?;
        let value = self.value().gather(ax, index)?;
        Ok(Var::from_op(
            value,
            Op::Gather(self.clone(), ax, index.clone()),
        ))
    }

    /// Joins values along an existing axis.
    pub fn concat<D: Dim>(parts: &[&Var], axis: D) -> Result<Var> {
        let tensors: Vec<&Tensor> = parts.iter().map(|v| v.value()).collect();
        let first = tensors.first().map_or(0, |t| t.rank());
        let ax = axis.to_axis(first, "concat")?;
        let value = Tensor::concat(&tensors, ax)?;
        let owned = parts.iter().map(|&v| v.clone()).collect();
        Ok(Var::from_op(value, Op::Concat(owned, ax)))
    }

    /// Records `value`, computed outside the crate from `inputs`, with `function`'s
    /// backward rule (see [`Function`]).
    pub fn custom(value: Tensor, inputs: &[Var], function: std::sync::Arc<dyn Function>) -> Var {
        Var::from_op(value, Op::Custom(inputs.to_vec(), function))
    }

    /// `len` entries of `axis` from `start`.
    pub fn narrow<D: Dim>(&self, axis: D, start: usize, len: usize) -> Result<Var> {
        let ax = axis.to_axis(self.value().rank(), "narrow")?;
        let value = self.value().narrow(ax, start, len)?;
        Ok(Var::from_op(value, Op::Narrow(self.clone(), ax, start)))
    }

    /// Inserts an axis of size 1.
    pub fn unsqueeze<D: Dim>(&self, axis: D) -> Result<Var> {
        let shape = self.value().unsqueeze(axis)?.shape().to_vec();
        self.reshape(&shape)
    }

    /// Removes an axis of size 1.
    pub fn squeeze<D: Dim>(&self, axis: D) -> Result<Var> {
        let shape = self.value().squeeze(axis)?.shape().to_vec();
        self.reshape(&shape)
    }

    /// Broadcasts to `shape` (NumPy rules); the gradient is summed back.
    pub fn broadcast_to(&self, shape: &[usize]) -> Result<Var> {
        let value = self.value().broadcast_to(shape)?.contiguous();
        Ok(Var::from_op(value, Op::BroadcastTo(self.clone())))
    }

    /// `mask ? a : b` element by element, all three broadcast (`torch.where`); the mask
    /// is a constant 0/1 tensor. As [`Tensor::where_`].
    #[doc(alias = "where")]
    pub fn where_(mask: &Tensor, a: &Var, b: &Var) -> Result<Var> {
        let value = Tensor::where_(mask, a.value(), b.value())?;
        Ok(Var::from_op(
            value,
            Op::Where(mask.clone(), a.clone(), b.clone()),
        ))
    }

    /// `value` where `mask` is non-zero, `self` elsewhere (attention masks).
    pub fn masked_fill(&self, mask: &Tensor, value: f32) -> Result<Var> {
        let fill = Var::constant(Tensor::scalar(value));
        let out = Var::where_(mask, &fill, self)?;
        if out.shape() != self.shape() {
            return Err(tessera_tensor::Error::Broadcast {
                op: "masked_fill",
                lhs: mask.shape().into(),
                rhs: self.shape().into(),
            }
            .into());
        }
        Ok(out)
    }

    /// Inverted dropout: in training, zeroes each element with probability `p` and scales
    /// the others by `1 / (1 - p)`; the identity when `train` is false or `p` is 0.
    pub fn dropout(&self, p: f32, train: bool, rng: &mut Rng) -> Result<Var> {
        if !(0.0..1.0).contains(&p) {
            return Err(tessera_tensor::Error::Invalid {
                op: "dropout",
                msg: format!("probability {p} is outside [0, 1)"),
            }
            .into());
        }
        if !train || p == 0.0 {
            return Ok(self.clone());
        }
        let keep = Tensor::dropout_mask(self.shape(), p, rng)?;
        let value = self.value().mul(&keep)?;
        Ok(Var::from_op(value, Op::Dropout(self.clone(), keep)))
    }
}

impl Var {
    /// im2col: `[N, C, H, W] -> [N, C·kh·kw, L]` (`F.unfold`); the gradient is col2im.
    pub fn unfold2d(&self, window: &Window2d) -> Result<Var> {
        let value = self.value().unfold2d(window)?;
        let (h, w) = (self.shape()[2], self.shape()[3]);
        Ok(Var::from_op(
            value,
            Op::Unfold(self.clone(), *window, (h, w)),
        ))
    }

    /// 2-D max-pooling of `[N, C, H, W]` over `window` (padding never wins, as PyTorch);
    /// the gradient goes to the first maximal element of each window.
    pub fn max_pool2d(&self, window: &Window2d) -> Result<Var> {
        let (value, winners) = self.value().max_pool2d(window)?;
        Ok(Var::from_op(value, Op::MaxPool(self.clone(), winners)))
    }
}
