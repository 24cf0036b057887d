//! Element-wise operations against a naive reference, on every layout.

mod common;

use common::*;
use proptest::prelude::*;
use tessera_tensor::Tensor;

type Unary = (&'static str, fn(&Tensor) -> Tensor, fn(f32) -> f32);

fn unary_table() -> Vec<Unary> {
    vec![
        ("neg", Tensor::neg, |x| -x),
        ("exp", Tensor::exp, f32::exp),
        ("log", Tensor::log, f32::ln),
        ("sqrt", Tensor::sqrt, f32::sqrt),
        ("rsqrt", Tensor::rsqrt, |x| 1.0 / x.sqrt()),
        ("tanh", Tensor::tanh, f32::tanh),
        ("sigmoid", Tensor::sigmoid, |x| {
            (1.0 / (1.0 + (-(x as f64)).exp())) as f32
        }),
        ("relu", Tensor::relu, |x| x.max(0.0)),
        ("abs", Tensor::abs, f32::abs),
        ("gelu", Tensor::gelu, |x| {
            let x = x as f64;
            (0.5 * x * (1.0 + libm_erf(x / 2f64.sqrt()))) as f32
        }),
        ("gelu_tanh", Tensor::gelu_tanh, |x| {
            let x = x as f64;
            let inner = (2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x.powi(3));
            (0.5 * x * (1.0 + inner.tanh())) as f32
        }),
    ]
}

/// erf by its Maclaurin series / continued fraction: an independent check of the crate's.
fn libm_erf(x: f64) -> f64 {
    // Abramowitz–Stegun 7.1.26 is too coarse; sum the series, which converges for |x| < 3.
    let mut term = x;
    let mut sum = x;
    for n in 1..200 {
        term *= -x * x / n as f64;
        sum += term / (2 * n + 1) as f64;
    }
    sum * 2.0 / std::f64::consts::PI.sqrt()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn unary_ops_match_reference(n in naive_strategy(4)) {
        for (name, op, f) in unary_table() {
            let want: Vec<f32> = n.data.iter().map(|&x| f(x)).collect();
            for (layout, t) in layouts(&n) {
                assert_close(&op(&t), &n.shape, &want, 2e-6, &format!("{name} on {layout}"));
            }
        }
    }

    #[test]
    fn binary_ops_broadcast_like_numpy((a, b) in broadcast_pair()) {
        let shape = naive_broadcast(&a.shape, &b.shape).expect("strategy makes compatible shapes");
        type Binary = (&'static str, fn(&Tensor, &Tensor) -> tessera_tensor::Result<Tensor>, fn(f32, f32) -> f32);
        let table: Vec<Binary> = vec![
            ("add", Tensor::add, |x, y| x + y),
            ("sub", Tensor::sub, |x, y| x - y),
            ("mul", Tensor::mul, |x, y| x * y),
            ("div", Tensor::div, |x, y| x / y),
            ("maximum", Tensor::maximum, f32::max),
            ("minimum", Tensor::minimum, f32::min),
            ("lt", Tensor::lt, |x, y| if x < y { 1.0 } else { 0.0 }),
            ("ge", Tensor::ge, |x, y| if x >= y { 1.0 } else { 0.0 }),
            ("eq", Tensor::eq, |x, y| if x == y { 1.0 } else { 0.0 }),
        ];
        let positions: Vec<Vec<usize>> = (0..numel(&shape)).map(|p| unravel(p, &shape)).collect();
        for (name, op, f) in table {
            let want: Vec<f32> = positions
                .iter()
                .map(|idx| f(a.at_broadcast(idx, &shape), b.at_broadcast(idx, &shape)))
                .collect();
            for (la, ta) in layouts(&a) {
                for (lb, tb) in layouts(&b) {
                    let got = op(&ta, &tb).unwrap();
                    assert_close(&got, &shape, &want, 0.0, &format!("{name} {la} x {lb}"));
                }
            }
        }
    }

    #[test]
    fn where_and_masked_fill_select((a, b) in broadcast_pair()) {
        let shape = naive_broadcast(&a.shape, &b.shape).unwrap();
        let mask = a.tensor().gt_scalar(0.0);
        let got = Tensor::where_(&mask, &a.tensor(), &b.tensor()).unwrap();
        let want: Vec<f32> = (0..numel(&shape))
            .map(|p| {
                let idx = unravel(p, &shape);
                let x = a.at_broadcast(&idx, &shape);
                if x > 0.0 { x } else { b.at_broadcast(&idx, &shape) }
            })
            .collect();
        assert_close(&got, &shape, &want, 0.0, "where");
        let filled = a.tensor().masked_fill(&mask, -1e9).unwrap();
        let want: Vec<f32> = a.data.iter().map(|&x| if x > 0.0 { -1e9 } else { x }).collect();
        assert_close(&filled, &a.shape, &want, 0.0, "masked_fill");
    }

    #[test]
    fn scalar_ops_match_reference(n in naive_strategy(3), s in -2.0f32..2.0) {
        for (layout, t) in layouts(&n) {
            let cases: Vec<(&str, Tensor, Vec<f32>)> = vec![
                ("add_scalar", t.add_scalar(s), n.data.iter().map(|x| x + s).collect()),
                ("mul_scalar", &t * s, n.data.iter().map(|x| x * s).collect()),
                ("pow", t.abs().pow(s), n.data.iter().map(|x| x.abs().powf(s)).collect()),
                ("clamp", t.clamp(-1.0, 0.5), n.data.iter().map(|x| x.clamp(-1.0, 0.5)).collect()),
                ("le_scalar", t.le_scalar(s), n.data.iter().map(|&x| (x <= s) as u8 as f32).collect()),
            ];
            for (name, got, want) in cases {
                assert_close(&got, &n.shape, &want, 1e-6, &format!("{name} on {layout}"));
            }
        }
    }
}

#[test]
fn incompatible_shapes_name_op_and_shapes() {
    let a = Tensor::zeros(&[2, 3]);
    let b = Tensor::zeros(&[4, 3]);
    let msg = a.add(&b).unwrap_err().to_string();
    assert_eq!(
        msg,
        "add: shapes [2, 3] and [4, 3] cannot be broadcast together"
    );
}

#[test]
fn nan_propagates_through_maximum() {
    let a = Tensor::from_vec(vec![f32::NAN, 1.0], &[2]).unwrap();
    let b = Tensor::from_vec(vec![0.0, f32::NAN], &[2]).unwrap();
    assert!(a.maximum(&b).unwrap().to_vec().iter().all(|x| x.is_nan()));
}

#[test]
fn sigmoid_is_finite_at_extremes() {
    let x = Tensor::from_vec(vec![-1e4, -50.0, 0.0, 100.0, 1e4], &[5]).unwrap();
    let y = x.sigmoid().to_vec();
    assert_eq!([y[0], y[2], y[3], y[4]], [0.0, 0.5, 1.0, 1.0]);
    // σ(-50) = e^-50 / (1 + e^-50) ≈ 1.9287498e-22
    assert!((y[1] / 1.928_749_8e-22 - 1.0).abs() < 1e-6);
}

#[test]
fn large_tensors_split_across_threads_give_the_same_values() {
    tessera_tensor::set_num_threads(2);
    let n = 200_003; // above the parallel threshold, not a multiple of anything
    let mut rng = tessera_tensor::Rng::seed(17);
    let a = Tensor::rand(&[n], -5.0, 5.0, &mut rng);
    let b = Tensor::rand(&[n], -5.0, 5.0, &mut rng);
    let (va, vb) = (a.to_vec(), b.to_vec());
    let sum: Vec<f32> = va.iter().zip(&vb).map(|(x, y)| x + y).collect();
    assert_close(&a.add(&b).unwrap(), &[n], &sum, 0.0, "add");
    let relu: Vec<f32> = va.iter().map(|x| x.max(0.0)).collect();
    assert_close(&a.relu(), &[n], &relu, 0.0, "relu");
    let tanh: Vec<f32> = va.iter().map(|x| x.tanh()).collect();
    assert_close(&a.tanh(), &[n], &tanh, 2e-6, "tanh");
    // The element at each chunk boundary is computed once and in place.
    let idx: Vec<f32> = (0..n).map(|i| i as f32).collect();
    let t = Tensor::from_vec(idx.clone(), &[n]).unwrap();
    assert_close(
        &t.add_scalar(1.0),
        &[n],
        &idx.iter().map(|x| x + 1.0).collect::<Vec<_>>(),
        0.0,
        "offsets",
    );
}

/// GELU's fused backward `g · gelu'(x)` (from its input and output) against the
/// derivative in f64 (`Φ(x) + x φ(x)`), for short and long inputs (threaded), contiguous
/// and strided, with 0 among the inputs.
#[test]
fn gelu_backward_matches_the_f64_derivative() {
    let mut rng = tessera_tensor::Rng::seed(4);
    for n in [1usize, 31, 32, 33, 100, 70_000] {
        let mut xv = Tensor::randn(&[n], 0.0, 3.0, &mut rng).to_vec();
        xv[0] = 0.0;
        let x = Tensor::from_vec(xv, &[n]).unwrap();
        let g = Tensor::randn(&[n], 0.0, 1.0, &mut rng);
        let want: Vec<f32> = x
            .to_vec()
            .iter()
            .zip(g.to_vec())
            .map(|(&x, g)| {
                let x = x as f64;
                let cdf = 0.5 * (1.0 + libm_erf_wide(x / 2f64.sqrt()));
                let pdf = (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt();
                (g as f64 * (cdf + x * pdf)) as f32
            })
            .collect();
        let y = x.gelu();
        let got = x.gelu_backward(&y, &g).unwrap();
        assert_close(&got, &[n], &want, 2e-6, "contiguous");
        // The same values read through a stride.
        let (xs, ys, gs) = (every_second(&x), every_second(&y), every_second(&g));
        let got = xs.gelu_backward(&ys, &gs).unwrap();
        assert_close(&got, &[n], &want, 2e-6, "strided");
    }
    let (two, three) = (Tensor::zeros(&[2]), Tensor::zeros(&[3]));
    assert!(two.gelu_backward(&two, &three).is_err());
    assert!(two.gelu_backward(&three, &two).is_err());
}

/// erf over the whole line: the series below 3, 1 (to f64 precision near 1) beyond.
fn libm_erf_wide(x: f64) -> f64 {
    if x.abs() < 3.0 {
        libm_erf(x)
    } else {
        let t = 1.0 / (1.0 + 0.5 * x.abs());
        // Numerical Recipes' erfc (relative error below 1.2e-7), ample where erf ≈ ±1.
        let erfc = t
            * (-x * x - 1.265_512_23
                + t * (1.000_023_68
                    + t * (0.374_091_96
                        + t * (0.096_784_18
                            + t * (-0.186_288_06
                                + t * (0.278_868_07
                                    + t * (-1.135_203_98
                                        + t * (1.488_515_87
                                            + t * (-0.822_152_23 + t * 0.170_872_77)))))))))
                .exp();
        (1.0 - erfc).copysign(x)
    }
}

/// The same values as `x`, read through a stride of 2 (zeros in between).
fn every_second(x: &Tensor) -> Tensor {
    let n = x.numel();
    let mut v = vec![0.0f32; 2 * n];
    for (i, &e) in x.to_vec().iter().enumerate() {
        v[2 * i] = e;
    }
    Tensor::from_vec(v, &[2 * n])
        .unwrap()
        .slice(0, 0, 2 * n, 2)
        .unwrap()
}

/// PyTorch's names `square`, `pow` (number and tensor exponents) and `where_`, against
/// values worked out by hand and in f64.
#[test]
fn pytorch_named_ops() {
    let x = Tensor::from_vec(vec![-1.5, 0.0, 2.0, 3.0], &[2, 2]).unwrap();
    // (-1.5)² = 2.25, 0² = 0, 2² = 4, 3² = 9
    assert_eq!(x.square().to_vec(), vec![2.25, 0.0, 4.0, 9.0]);
    assert_eq!(x.square().shape(), &[2, 2]);
    // x³: (-1.5)³ = -3.375, 0, 8, 27
    assert_eq!(x.pow(3.0).to_vec(), vec![-3.375, 0.0, 8.0, 27.0]);
    // A fractional exponent against f64.
    let p = [0.5f64, 1.7, 4.0];
    let got = Tensor::from_vec(p.iter().map(|&v| v as f32).collect(), &[3])
        .unwrap()
        .pow(-0.75)
        .to_vec();
    for (g, v) in got.iter().zip(p) {
        let want = v.powf(-0.75);
        assert!((*g as f64 - want).abs() <= 1e-6 * want, "{g} vs {want}");
    }
    // A tensor exponent, broadcast: [[2], [3]] ^ [0, 1, 2] = [[1, 2, 4], [1, 3, 9]].
    let base = Tensor::from_vec(vec![2.0, 3.0], &[2, 1]).unwrap();
    let e = Tensor::from_vec(vec![0.0, 1.0, 2.0], &[3]).unwrap();
    let y = base.pow_tensor(&e).unwrap();
    assert_eq!(y.shape(), &[2, 3]);
    assert_eq!(y.to_vec(), vec![1.0, 2.0, 4.0, 1.0, 3.0, 9.0]);
    // where_: the mask [[1], [0]] picks the first row from [7, 8, 9], the second from -1.
    let m = Tensor::from_vec(vec![1.0, 0.0], &[2, 1]).unwrap();
    let on = Tensor::from_vec(vec![7.0, 8.0, 9.0], &[3]).unwrap();
    let w = Tensor::where_(&m, &on, &Tensor::scalar(-1.0)).unwrap();
    assert_eq!(w.shape(), &[2, 3]);
    assert_eq!(w.to_vec(), vec![7.0, 8.0, 9.0, -1.0, -1.0, -1.0]);
}
