//! Vectorisable `exp`, `tanh` and `sigmoid` for contiguous slices.
//!
//! The platform's libm computes these one element at a time (about 17 ns per `tanhf`
//! here), which dominates recurrent networks and softmax. These versions use only
//! arithmetic and bit operations, so the compiler turns each loop into SIMD code; on
//! x86-64 CPUs with AVX2 a second copy of each loop is compiled for 8 lanes and chosen at
//! run time. No fused multiply-adds are used, so every CPU gives the same bits.
//!
//! Accuracy (checked in the tests against f64 over the whole useful range, and against
//! PyTorch's outputs): `exp` within 2 ulp, `tanh` and `sigmoid` within 2e-7 relative
//! (PyTorch's own vectorised kernels promise 1-3.5 ulp).
//!
//! The algorithms are the classic ones of Cephes (S. L. Moshier): `exp` reduces
//! `x = n ln 2 + r` with `|r| <= ln 2 / 2` (ln 2 split in two constants, Cody and Waite)
//! and evaluates a degree-6 polynomial; `tanh` uses an odd polynomial below 0.625 and
//! `1 - 2 / (e^{2|x|} + 1)` above.

use std::mem::MaybeUninit;

/// `1.5 · 2²³`: adding it rounds an f32 of magnitude below 2²² to an integer.
const ROUND: f32 = 12_582_912.0;
const LOG2E: f32 = std::f32::consts::LOG2_E;
/// ln 2 split so that `n · LN2_HI` is exact for the `n` that occur.
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
/// Above this, `e^x` overflows f32.
const EXP_MAX: f32 = 88.722_84;
/// Below this, `e^x` rounds to 0.
const EXP_MIN: f32 = -103.972_08;

/// `e^x`.
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    let xc = x.clamp(EXP_MIN, EXP_MAX);
    // n = round(x / ln 2), via the magic constant (its bits hold n).
    let t = xc * LOG2E + ROUND;
    let n = t - ROUND;
    let ni = (t.to_bits() as i32).wrapping_sub(ROUND.to_bits() as i32);
    let r = (xc - n * LN2_HI) - n * LN2_LO;
    let r2 = r * r;
    let mut p = 1.987_569_1e-4f32;
    p = p * r + 1.398_2e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 5e-1;
    let er = p * r2 + r + 1.0;
    // 2^n in two factors, so that n down to -150 (subnormal results) stays exact.
    let n1 = ni >> 1;
    let n2 = ni - n1;
    let s1 = f32::from_bits(((n1 + 127) as u32) << 23);
    let s2 = f32::from_bits(((n2 + 127) as u32) << 23);
    let y = er * s1 * s2;
    let y = if x > EXP_MAX { f32::INFINITY } else { y };
    let y = if x < EXP_MIN { 0.0 } else { y };
    if x.is_nan() {
        x
    } else {
        y
    }
}

/// Hyperbolic tangent.
#[inline(always)]
pub(crate) fn tanh(x: f32) -> f32 {
    let a = x.abs();
    // Small |x|: x + x³ P(x²).
    let z = x * x;
    let mut p = -5.704_988_7e-3f32;
    p = p * z + 2.063_909e-2;
    p = p * z - 5.373_971_6e-2;
    p = p * z + 1.333_144_2e-1;
    p = p * z - 3.333_328e-1;
    let small = x + x * z * p;
    // Large |x|: 1 - 2 / (e^{2|x|} + 1), with the sign of x; e^{2|x|} saturates to inf → 1.
    let e = exp(2.0 * a.min(44.0));
    let big = 1.0 - 2.0 / (e + 1.0);
    let big = f32::from_bits(big.to_bits() | (x.to_bits() & 0x8000_0000));
    // (NaN fails the comparison and takes the polynomial branch, which keeps it NaN.)
    if a >= 0.625 {
        big
    } else {
        small
    }
}

/// The logistic sigmoid `1 / (1 + e^{-x})`, as `e^x / (1 + e^x)` for negative `x` so
/// that tiny results keep their precision instead of becoming `1 / inf`.
#[inline(always)]
pub(crate) fn sigmoid(x: f32) -> f32 {
    let e = exp(-x.abs());
    let d = 1.0 / (1.0 + e);
    if x < 0.0 {
        e * d
    } else {
        d
    }
}

/// The error function, as a rational function of degree 13/8 on `[-3.9, 3.9]` (±1
/// outside): the approximation of Eigen's `generic_fast_erf_float`, within 3.5e-7 of the
/// exact value (checked against f64 in the tests).
#[inline(always)]
pub(crate) fn erf(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    // Both polynomials in x² by Estrin's scheme (pairs of terms, combined by powers of
    // x⁴): a shorter chain of dependent operations than Horner's rule, the same terms.
    let x4 = x2 * x2;
    let p01 = -1.609_603_3e-2 + x2 * -2.954_600_2e-3;
    let p23 = -7.349_906e-4 + x2 * -5.692_506_4e-5;
    let p45 = -2.101_024e-6 + x2 * 2.770_681_4e-8;
    let p = p01 + x4 * (p23 + x4 * (p45 + x4 * -2.726_142_3e-10));
    let q01 = -1.426_474e-2 + x2 * -7.373_329e-3;
    let q23 = -1.682_827e-3 + x2 * -2.133_740_6e-4;
    let q = q01 + x4 * (q23 + x4 * -1.456_607_2e-5);
    let r = x * p / q;
    // From |x| = 3.9 on, erf rounds to ±1 in f32; the rational form stops a few ulp short.
    if x.abs() >= 3.9 {
        1f32.copysign(x)
    } else {
        r
    }
}

/// Exact GELU `x Φ(x) = x/2 (1 + erf(x/√2))` with the vectorisable [`erf`].
#[inline(always)]
pub(crate) fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// GELU's derivative `Φ(x) + x φ(x)`.
#[inline(always)]
pub(crate) fn gelu_grad(x: f32) -> f32 {
    let cdf = 0.5 * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2));
    let pdf = exp(-0.5 * x * x) * 0.398_942_3; // 1/√(2π)
    cdf + x * pdf
}

/// `dst` seen as possibly uninitialised memory, for the kernels below (which only write).
fn as_uninit(dst: &mut [f32]) -> &mut [MaybeUninit<f32>] {
    // SAFETY: `MaybeUninit<f32>` has the layout of `f32`, and the kernels only store
    // initialised values through the result, so `dst` stays initialised.
    unsafe { &mut *(dst as *mut [f32] as *mut [MaybeUninit<f32>]) }
}

/// Calls the closure `$run` with `$args`, compiled for the instruction set that
/// [`isa()`](crate::isa) names: AVX-512F with AVX-512DQ (16 lanes of f32, 8 of 64-bit
/// integer multiplies), AVX2 (8), or the baseline; on other architectures, the
/// baseline. `$run` must be inlined into each copy for its loops to be vectorised for
/// that instruction set: a small closure is, a larger body belongs in a function marked
/// `#[inline(always)]` (the compiler may leave a large closure out of line, compiled
/// for the baseline). Each copy runs the same operations in the same order, so every
/// width gives the same results (the compiler fuses no multiply-adds that the source
/// does not ask for), and a cap (`TESSERA_MAX_ISA`, [`set_max_isa`](crate::set_max_isa))
/// changes the speed, not the values. The macro is an expression of the closure's value.
///
/// The element-wise functions of this crate run through it, and so do the row kernels
/// of `tessera-nn` (LayerNorm, cross-entropy) and `tessera-optim` (Adam).
///
/// ```
/// fn scale(xs: &mut [f32], by: f32) -> usize {
///     let run = |xs: &mut [f32], by: f32| {
///         for x in xs.iter_mut() {
///             *x *= by;
///         }
///         xs.len()
///     };
///     let n = tessera_tensor::widest!(run(xs, by));
///     n * 2
/// }
/// let mut v = vec![1.0f32; 37];
/// assert_eq!(scale(&mut v, 3.0), 74);
/// assert!(v.iter().all(|&x| x == 3.0));
/// ```
#[macro_export]
macro_rules! widest {
    ($run:ident($($arg:ident),*)) => {{
        #[cfg(target_arch = "x86_64")]
        let value = {
            #[target_feature(enable = "avx512f,avx512dq,avx2,fma")]
            unsafe fn wide<R, F: FnOnce() -> R>(f: F) -> R {
                f()
            }
            #[target_feature(enable = "avx2,fma")]
            unsafe fn narrow<R, F: FnOnce() -> R>(f: F) -> R {
                f()
            }
            match $crate::isa() {
                // SAFETY: `isa()` names only instruction sets this CPU has.
                $crate::Isa::Avx512 => unsafe { wide(|| $run($($arg),*)) },
                // SAFETY: as above.
                $crate::Isa::Avx2 => unsafe { narrow(|| $run($($arg),*)) },
                $crate::Isa::Scalar => $run($($arg),*),
            }
        };
        #[cfg(not(target_arch = "x86_64"))]
        let value = $run($($arg),*);
        value
    }};
}

macro_rules! slice_kernel {
    ($name:ident, $into:ident, $f:path) => {
        /// `f(x)` for every `x` of `src` into `dst` (the shorter length of the two), which
        /// need not be initialised, with the widest SIMD this CPU has.
        pub(crate) fn $into(src: &[f32], dst: &mut [MaybeUninit<f32>]) {
            let run = |src: &[f32], dst: &mut [MaybeUninit<f32>]| {
                for (d, &x) in dst.iter_mut().zip(src) {
                    d.write($f(x));
                }
            };
            widest!(run(src, dst))
        }

        /// Writes `f(x)` for every `x` of `src` into `dst` (the shorter length of the
        /// two), with the widest SIMD this CPU has; the same function as the tensor
        /// operation of that name.
        ///
        /// ```
        #[doc = concat!("let mut out = [0.0f32; 2];")]
        #[doc = concat!("tessera_tensor::", stringify!($name), "(&[0.0, 1.0], &mut out);")]
        #[doc = concat!("assert!((out[1] - ", stringify!($f), "_ref(1.0)).abs() < 1e-6);")]
        #[doc = concat!("# fn exp_ref(x: f32) -> f32 { x.exp() }")]
        #[doc = concat!("# fn tanh_ref(x: f32) -> f32 { x.tanh() }")]
        #[doc = concat!("# fn sigmoid_ref(x: f32) -> f32 { 1.0 / (1.0 + (-x).exp()) }")]
        #[doc = concat!("# fn gelu_ref(x: f32) -> f32 { (0.5 * x as f64 * (1.0 + libm::erf(x as f64 / 2f64.sqrt()))) as f32 }")]
        #[doc = concat!("# fn gelu_grad_ref(x: f32) -> f32 { let x = x as f64; (0.5 * (1.0 + libm::erf(x / 2f64.sqrt())) + x * (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt()) as f32 }")]
        /// ```
        pub fn $name(src: &[f32], dst: &mut [f32]) {
            $into(src, as_uninit(dst))
        }
    };
}

slice_kernel!(exp_slice, exp_into, exp);
slice_kernel!(tanh_slice, tanh_into, tanh);
slice_kernel!(sigmoid_slice, sigmoid_into, sigmoid);
slice_kernel!(gelu_slice, gelu_into, gelu);
slice_kernel!(gelu_grad_slice, gelu_grad_into, gelu_grad);

/// GELU's derivative from its input `x` and output `y = x Φ(x)`: `Φ(x) = y / x` (½ where
/// `x` is 0 to f32 precision), plus `x φ(x)`. The output saves the error function: one
/// division and one `exp` per element instead of a rational function and an `exp`.
#[inline(always)]
pub(crate) fn gelu_grad_from_output(x: f32, y: f32) -> f32 {
    let cdf = if x.abs() >= 1e-30 { y / x } else { 0.5 };
    cdf + x * (exp(-0.5 * x * x) * 0.398_942_3)
}

/// `g · gelu'(x)` element by element into `dst` (the shortest length of the four, not
/// necessarily initialised), given GELU's input `x` and output `y`: its backward pass in
/// one sweep, with the widest SIMD this CPU has.
pub(crate) fn gelu_backward_into(x: &[f32], y: &[f32], g: &[f32], dst: &mut [MaybeUninit<f32>]) {
    let run = |x: &[f32], y: &[f32], g: &[f32], dst: &mut [MaybeUninit<f32>]| {
        for (((d, &x), &y), &g) in dst.iter_mut().zip(x).zip(y).zip(g) {
            d.write(g * gelu_grad_from_output(x, y));
        }
    };
    widest!(run(x, y, g, dst))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Distance in units in the last place between two finite f32 of the same sign.
    fn ulps(a: f32, b: f32) -> i64 {
        (a.to_bits() as i64 - b.to_bits() as i64).abs()
    }

    fn sweep() -> impl Iterator<Item = f32> {
        (-2_000_000..=2_000_000).map(|i| i as f32 * 5.5e-5)
    }

    #[test]
    fn exp_within_two_ulp_of_f64() {
        for x in sweep().map(|x| x * 1000.0) {
            let want = (x as f64).exp() as f32;
            let got = exp(x);
            if want == 0.0 || want.is_infinite() {
                assert_eq!(got, want, "exp({x})");
            } else if want < f32::MIN_POSITIVE {
                assert!(
                    (got - want).abs() <= 2.0 * f32::from_bits(1),
                    "exp({x}) subnormal"
                );
            } else {
                assert!(ulps(got, want) <= 2, "exp({x}) = {got}, want {want}");
            }
        }
        assert!(exp(f32::NAN).is_nan());
        assert_eq!(exp(f32::INFINITY), f32::INFINITY);
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp(0.0), 1.0);
    }

    #[test]
    fn tanh_and_sigmoid_within_2e7_relative() {
        for x in sweep() {
            let want = (x as f64).tanh();
            let got = tanh(x) as f64;
            assert!(
                (got - want).abs() <= 2e-7 * want.abs().max(1e-30),
                "tanh({x}) = {got}, want {want}"
            );
            let want = 1.0 / (1.0 + (-(x as f64)).exp());
            let got = sigmoid(x) as f64;
            // Below about -87 the result is subnormal (or 0): absolute precision there.
            let tol = 2e-7 * want + 2.0 * f32::from_bits(1) as f64;
            assert!(
                (got - want).abs() <= tol,
                "sigmoid({x}) = {got}, want {want}"
            );
        }
        assert_eq!(tanh(0.0), 0.0);
        assert_eq!(tanh(1e4), 1.0);
        assert_eq!(tanh(-1e4), -1.0);
        assert!(tanh(f32::NAN).is_nan());
        assert_eq!(sigmoid(-1e4), 0.0);
        assert_eq!(sigmoid(1e4), 1.0);
    }

    #[test]
    fn erf_within_5e7_and_gelu_within_5e7_times_x_of_f64() {
        let mut worst = 0.0f64;
        for x in sweep() {
            let want = libm::erf(f64::from(x));
            worst = worst.max((f64::from(erf(x)) - want).abs());
            let g = 0.5 * f64::from(x) * (1.0 + libm::erf(f64::from(x) / std::f64::consts::SQRT_2));
            // GELU carries erf's error times x/2.
            let tol = 5e-7 * (1.0 + f64::from(x.abs()));
            assert!((f64::from(gelu(x)) - g).abs() < tol, "gelu({x})");
        }
        assert!(worst < 5e-7, "erf is {worst:e} from the exact value");
    }

    #[test]
    fn slice_kernels_equal_the_scalar_functions() {
        let xs: Vec<f32> = sweep().step_by(997).collect();
        let mut out = vec![0.0; xs.len()];
        tanh_slice(&xs, &mut out);
        let scalar: Vec<f32> = xs.iter().map(|&x| tanh(x)).collect();
        assert_eq!(out, scalar);
    }
}
