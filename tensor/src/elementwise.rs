//! Element-wise operations with NumPy broadcasting, their scalar variants, comparisons
//! (which return 0/1 masks) and selection by mask.

use std::mem::MaybeUninit;
use std::ops::{Add, Div, Mul, Neg, Sub};

use crate::error::{Error, Result};
use crate::iter::{extend_map2, for_each_run};
use crate::shape::{broadcast_shape, broadcast_strides, numel};
use crate::tensor::Tensor;
use crate::vmath;

const SQRT_2_OVER_PI: f64 = 0.797_884_560_802_865_4;

/// The exact GELU, `x Φ(x) = x/2 (1 + erf(x/√2))`, computed in f64.
pub fn gelu_erf_scalar(x: f32) -> f32 {
    crate::vmath::gelu(x)
}

/// GELU's derivative `Φ(x) + x φ(x)`, with the same vectorisable `erf` as the tensor op.
pub fn gelu_grad_scalar(x: f32) -> f32 {
    crate::vmath::gelu_grad(x)
}

/// The tanh approximation of GELU, `x/2 (1 + tanh(√(2/π)(x + 0.044715 x³)))`, in f64.
pub fn gelu_tanh_scalar(x: f32) -> f32 {
    let x = x as f64;
    (0.5 * x * (1.0 + (SQRT_2_OVER_PI * (x + 0.044715 * x * x * x)).tanh())) as f32
}

/// `e^x` within 2 ulp, from arithmetic alone, as [`exp_slice`](crate::exp_slice) and
/// [`Tensor::exp`] compute it. Inlined into a caller's loop it vectorises: the row
/// kernels of `tessera-nn` call it inside [`widest!`](crate::widest).
///
/// ```
/// let e = tessera_tensor::exp_scalar(1.0);
/// assert!((e - std::f32::consts::E).abs() <= 2.0 * f32::EPSILON * e);
/// ```
#[inline(always)]
pub fn exp_scalar(x: f32) -> f32 {
    crate::vmath::exp(x)
}

/// The logistic sigmoid `1 / (1 + e^{-x})`, finite for every input (the same function
/// [`Tensor::sigmoid`] applies).
pub fn sigmoid_scalar(x: f32) -> f32 {
    crate::vmath::sigmoid(x)
}

impl Tensor {
    /// Applies `f` to every element.
    ///
    /// ```
    /// use tessera_tensor::Tensor;
    /// let x = Tensor::from_vec(vec![1., 4., 9.], &[3])?;
    /// assert_eq!(x.map(f32::sqrt).to_vec(), vec![1., 2., 3.]);
    /// # Ok::<(), tessera_tensor::Error>(())
    /// ```
    pub fn map(&self, f: impl Fn(f32) -> f32 + Sync) -> Tensor {
        Tensor::from_contiguous(self.map_collect(f), self.shape())
    }

    /// Combines two tensors element by element under broadcasting; `op` names the
    /// operation in errors.
    ///
    /// ```
    /// use tessera_tensor::Tensor;
    /// let a = Tensor::from_vec(vec![1., 2.], &[2, 1])?;
    /// let b = Tensor::from_vec(vec![10., 20., 30.], &[3])?;
    /// let c = a.zip_map(&b, "hypot", f32::hypot)?;
    /// assert_eq!(c.shape(), &[2, 3]);
    /// # Ok::<(), tessera_tensor::Error>(())
    /// ```
    pub fn zip_map(
        &self,
        rhs: &Tensor,
        op: &'static str,
        f: impl Fn(f32, f32) -> f32 + Sync,
    ) -> Result<Tensor> {
        let (sa, sb) = (self.shape(), rhs.shape());
        if sa == sb {
            if let (Some(a), Some(b)) = (self.as_slice(), rhs.as_slice()) {
                // SAFETY: `a` and `b` reach past every chunk (they have `a.len()`
                // elements), so the loop writes each chunk whole.
                let out = unsafe {
                    crate::parallel::fill(a.len(), |lo, chunk| {
                        for ((d, &x), &y) in chunk.iter_mut().zip(&a[lo..]).zip(&b[lo..]) {
                            d.write(f(x, y));
                        }
                    })
                };
                return Ok(Tensor::from_contiguous(out, sa));
            }
        }
        let shape = broadcast_shape(sa, sb, op)?;
        let st_a = broadcast_strides(sa, self.strides(), &shape, op)?;
        let st_b = broadcast_strides(sb, rhs.strides(), &shape, op)?;
        let mut out = Vec::with_capacity(numel(&shape));
        let (da, db) = (self.storage(), rhs.storage());
        for_each_run(&shape, [&st_a, &st_b], [self.offset(), rhs.offset()], |r| {
            extend_map2(&mut out, da, db, r, &f)
        });
        Ok(Tensor::from_contiguous(out, &shape))
    }

    /// `mask ? on_true : on_false` element by element, all three broadcast together
    /// (`torch.where`; the underscore only because `where` is a Rust keyword, the result
    /// is a new tensor); a mask element is true when non-zero.
    ///
    /// ```
    /// use tessera_tensor::Tensor;
    /// let m = Tensor::from_vec(vec![1., 0., 1.], &[3])?;
    /// let y = Tensor::where_(&m, &Tensor::ones(&[3]), &Tensor::scalar(-5.0))?;
    /// assert_eq!(y.to_vec(), vec![1., -5., 1.]);
    /// # Ok::<(), tessera_tensor::Error>(())
    /// ```
    #[doc(alias = "where")]
    pub fn where_(mask: &Tensor, on_true: &Tensor, on_false: &Tensor) -> Result<Tensor> {
        let op = "where";
        let shape = broadcast_shape(mask.shape(), on_true.shape(), op)?;
        let shape = broadcast_shape(&shape, on_false.shape(), op)?;
        let sm = broadcast_strides(mask.shape(), mask.strides(), &shape, op)?;
        let st = broadcast_strides(on_true.shape(), on_true.strides(), &shape, op)?;
        let sf = broadcast_strides(on_false.shape(), on_false.strides(), &shape, op)?;
        let (dm, dt, df) = (mask.storage(), on_true.storage(), on_false.storage());
        let mut out = Vec::with_capacity(numel(&shape));
        for_each_run(
            &shape,
            [&sm, &st, &sf],
            [mask.offset(), on_true.offset(), on_false.offset()],
            |r| {
                let [om, ot, of] = r.offsets;
                let [km, kt, kf] = r.strides;
                out.extend((0..r.len).map(|i| {
                    if dm[om + i * km] != 0.0 {
                        dt[ot + i * kt]
                    } else {
                        df[of + i * kf]
                    }
                }));
            },
        );
        Ok(Tensor::from_contiguous(out, &shape))
    }

    /// `self` with `value` where `mask` is non-zero (`torch.Tensor.masked_fill`); the
    /// mask broadcasts to `self`'s shape.
    pub fn masked_fill(&self, mask: &Tensor, value: f32) -> Result<Tensor> {
        let out = Tensor::where_(mask, &Tensor::scalar(value), self)?;
        if out.shape() != self.shape() {
            return Err(crate::Error::Broadcast {
                op: "masked_fill",
                lhs: mask.shape().into(),
                rhs: self.shape().into(),
            });
        }
        Ok(out)
    }

    /// `f` on every element, through `slice_kernel` when the tensor is contiguous.
    fn map_kernel(
        &self,
        f: impl Fn(f32) -> f32 + Sync,
        slice_kernel: fn(&[f32], &mut [MaybeUninit<f32>]),
    ) -> Tensor {
        match self.as_slice() {
            Some(src) => {
                // SAFETY: the kernel writes as many elements as the shorter of its two
                // slices, here both the chunk's length.
                let out = unsafe {
                    crate::parallel::fill(src.len(), |lo, chunk| {
                        slice_kernel(&src[lo..lo + chunk.len()], chunk)
                    })
                };
                Tensor::from_contiguous(out, self.shape())
            }
            None => self.map(f),
        }
    }

    /// `e^x`, vectorised (within 2 ulp of the exact value).
    pub fn exp(&self) -> Tensor {
        self.map_kernel(vmath::exp, vmath::exp_into)
    }

    /// Hyperbolic tangent, vectorised (within 2e-7 relative).
    pub fn tanh(&self) -> Tensor {
        self.map_kernel(vmath::tanh, vmath::tanh_into)
    }

    /// Logistic sigmoid `1 / (1 + e^{-x})`, vectorised (within 2e-7 relative).
    pub fn sigmoid(&self) -> Tensor {
        self.map_kernel(vmath::sigmoid, vmath::sigmoid_into)
    }

    /// Exact GELU `x Φ(x)` (PyTorch `gelu(approximate="none")`), vectorised with a
    /// rational `erf` (within 5e-7 of the exact `erf`, so GELU within `5e-7 (1 + |x|)`).
    pub fn gelu(&self) -> Tensor {
        self.map_kernel(vmath::gelu, vmath::gelu_into)
    }

    /// GELU's derivative `Φ(x) + x φ(x)`, element-wise and vectorised.
    pub fn gelu_grad(&self) -> Tensor {
        self.map_kernel(vmath::gelu_grad, vmath::gelu_grad_into)
    }

    /// GELU's backward pass: `grad · gelu'(self)` element by element, in one sweep.
    /// `self` is GELU's input and `output` its result `self.gelu()`, from which the
    /// normal CDF is recovered (`Φ(x) = gelu(x) / x`) instead of evaluated again; all
    /// three tensors have the same shape.
    ///
    /// ```
    /// use tessera_tensor::Tensor;
    /// let x = Tensor::from_vec(vec![0.0, 1.0], &[2])?;
    /// let g = Tensor::from_vec(vec![2.0, 2.0], &[2])?;
    /// let dx = x.gelu_backward(&x.gelu(), &g)?.to_vec();
    /// assert!((dx[0] - 1.0).abs() < 1e-6 && (dx[1] - 2.0 * 1.0833155).abs() < 1e-5);
    /// # Ok::<(), tessera_tensor::Error>(())
    /// ```
    pub fn gelu_backward(&self, output: &Tensor, grad: &Tensor) -> Result<Tensor> {
        let op = "gelu_backward";
        for other in [output, grad] {
            if self.shape() != other.shape() {
                return Err(Error::shape_mismatch(op, self.shape(), other.shape()));
            }
        }
        if let (Some(x), Some(y), Some(g)) = (self.as_slice(), output.as_slice(), grad.as_slice()) {
            // SAFETY: the kernel writes the shortest of its four slices, here all four
            // the chunk's length.
            let out = unsafe {
                crate::parallel::fill(x.len(), |lo, chunk| {
                    let hi = lo + chunk.len();
                    vmath::gelu_backward_into(&x[lo..hi], &y[lo..hi], &g[lo..hi], chunk)
                })
            };
            return Ok(Tensor::from_contiguous(out, self.shape()));
        }
        self.zip_map(grad, op, |x, g| g * vmath::gelu_grad(x))
    }

    /// Clamps every element into `[min, max]`.
    pub fn clamp(&self, min: f32, max: f32) -> Tensor {
        self.map(|x| x.clamp(min, max))
    }
}

/// Unary operations: `fn name(&self) -> Tensor`.
macro_rules! unary_ops {
    ($($(#[$doc:meta])* $name:ident => $f:expr;)*) => {
        impl Tensor {$(
            $(#[$doc])*
            pub fn $name(&self) -> Tensor {
                self.map($f)
            }
        )*}
    };
}

unary_ops! {
    /// `-x`.
    neg => |x: f32| -x;
    /// Natural logarithm.
    log => f32::ln;
    /// Square root.
    sqrt => f32::sqrt;
    /// `1 / √x`.
    rsqrt => |x: f32| 1.0 / x.sqrt();
    /// `x²` (`torch.square`).
    #[doc(alias = "sqr")]
    square => |x: f32| x * x;
    /// `1 / x`.
    recip => |x: f32| 1.0 / x;
    /// Sine.
    sin => f32::sin;
    /// Cosine.
    cos => f32::cos;
    /// `max(x, 0)`.
    relu => |x: f32| if x > 0.0 { x } else { 0.0 };
    /// GELU's tanh approximation (PyTorch `gelu(approximate="tanh")`).
    gelu_tanh => gelu_tanh_scalar;
    /// Absolute value.
    abs => f32::abs;
    /// Sign: -1, 0 or 1.
    signum => |x: f32| if x > 0.0 { 1.0 } else if x < 0.0 { -1.0 } else { 0.0 };
}

/// Scalar operations: `fn name(&self, s: f32) -> Tensor`.
macro_rules! scalar_ops {
    ($($(#[$doc:meta])* $name:ident => |$x:ident, $s:ident| $body:expr;)*) => {
        impl Tensor {$(
            $(#[$doc])*
            pub fn $name(&self, $s: f32) -> Tensor {
                self.map(move |$x: f32| $body)
            }
        )*}
    };
}

scalar_ops! {
    /// `x + s`.
    add_scalar => |x, s| x + s;
    /// `x - s`.
    sub_scalar => |x, s| x - s;
    /// `x * s`.
    mul_scalar => |x, s| x * s;
    /// `x / s`.
    div_scalar => |x, s| x / s;
    /// `x^s` (`torch.pow` with a number as the exponent; `x.pow(2.0)`).
    #[doc(alias = "powf")]
    pow => |x, s| x.powf(s);
    /// `max(x, s)`.
    maximum_scalar => |x, s| x.max(s);
    /// `min(x, s)`.
    minimum_scalar => |x, s| x.min(s);
}

/// Binary broadcasting operations: `fn name(&self, rhs: &Tensor) -> Result<Tensor>`.
macro_rules! binary_ops {
    ($($(#[$doc:meta])* $name:ident => |$a:ident, $b:ident| $body:expr;)*) => {
        impl Tensor {$(
            $(#[$doc])*
            pub fn $name(&self, rhs: &Tensor) -> Result<Tensor> {
                self.zip_map(rhs, stringify!($name), |$a: f32, $b: f32| $body)
            }
        )*}
    };
}

binary_ops! {
    /// `a + b` with broadcasting.
    add => |a, b| a + b;
    /// `a - b` with broadcasting.
    sub => |a, b| a - b;
    /// `a * b` with broadcasting.
    mul => |a, b| a * b;
    /// `a / b` with broadcasting.
    div => |a, b| a / b;
    /// `a^b` with broadcasting (`torch.pow` with a tensor as the exponent).
    pow_tensor => |a, b| a.powf(b);
    /// Element-wise maximum (NaN propagates, as `torch.maximum`).
    maximum => |a, b| if a.is_nan() || b.is_nan() { f32::NAN } else { a.max(b) };
    /// Element-wise minimum (NaN propagates, as `torch.minimum`).
    minimum => |a, b| if a.is_nan() || b.is_nan() { f32::NAN } else { a.min(b) };
}

/// Comparisons, each against a tensor (with broadcasting) and against a number: `fn
/// name(&self, rhs: &Tensor) -> Result<Tensor>` and `fn name_scalar(&self, s: f32) ->
/// Tensor`, both 1 where the comparison holds and 0 elsewhere (`torch.eq`, ...).
macro_rules! comparisons {
    ($($name:ident, $scalar:ident => $op:tt;)*) => {
        impl Tensor {$(
            #[doc = concat!("1 where `a ", stringify!($op), " b`, else 0, with broadcasting.")]
            pub fn $name(&self, rhs: &Tensor) -> Result<Tensor> {
                self.zip_map(rhs, stringify!($name), |a: f32, b: f32| (a $op b) as u8 as f32)
            }

            #[doc = concat!("1 where `x ", stringify!($op), " s`, else 0.")]
            pub fn $scalar(&self, s: f32) -> Tensor {
                self.map(move |x: f32| (x $op s) as u8 as f32)
            }
        )*}
    };
}

comparisons! {
    eq, eq_scalar => ==;
    ne, ne_scalar => !=;
    lt, lt_scalar => <;
    le, le_scalar => <=;
    gt, gt_scalar => >;
    ge, ge_scalar => >=;
}

macro_rules! operator {
    ($trait:ident, $method:ident, $op:ident, $scalar:ident) => {
        impl $trait<&Tensor> for &Tensor {
            type Output = Result<Tensor>;
            fn $method(self, rhs: &Tensor) -> Result<Tensor> {
                Tensor::$op(self, rhs)
            }
        }
        impl $trait<Tensor> for Tensor {
            type Output = Result<Tensor>;
            fn $method(self, rhs: Tensor) -> Result<Tensor> {
                Tensor::$op(&self, &rhs)
            }
        }
        impl $trait<f32> for &Tensor {
            type Output = Tensor;
            fn $method(self, rhs: f32) -> Tensor {
                Tensor::$scalar(&self, rhs)
            }
        }
        impl $trait<f32> for Tensor {
            type Output = Tensor;
            fn $method(self, rhs: f32) -> Tensor {
                Tensor::$scalar(&self, rhs)
            }
        }
    };
}

operator!(Add, add, add, add_scalar);
operator!(Sub, sub, sub, sub_scalar);
operator!(Mul, mul, mul, mul_scalar);
operator!(Div, div, div, div_scalar);

impl Neg for &Tensor {
    type Output = Tensor;
    fn neg(self) -> Tensor {
        Tensor::neg(self)
    }
}

impl Neg for Tensor {
    type Output = Tensor;
    fn neg(self) -> Tensor {
        Tensor::neg(&self)
    }
}
