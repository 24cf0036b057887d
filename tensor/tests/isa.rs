//! The kernels at every instruction set this CPU has (`set_max_isa`): the element-wise
//! functions, GELU's backward and the dropout mask give the same bits on every path;
//! the products agree with a float64 reference on each, and the GEMM kernels that a
//! cap forbids are refused, not run. Every test here changes the process-wide cap, so
//! this file holds nothing else.

mod common;

use common::naive_matmul;
use tessera_tensor::{gemm_with, GemmKernel, Isa, MatRef, Rng, Tensor};
use tessera_testutil::{at_each_isa, same_at_each_isa};

/// Inputs that reach every branch of the vector functions: both signs, zeros, tiny
/// and huge values, infinities and NaN, in a length that leaves a remainder after
/// 16- and 8-lane blocks.
fn inputs() -> Vec<f32> {
    let mut rng = Rng::seed(7);
    let mut x = Tensor::randn(&[997], 0.0, 4.0, &mut rng).to_vec();
    x.extend([
        0.0,
        -0.0,
        1e-30,
        -1e-30,
        1e-8,
        88.7,
        -88.7,
        89.0,
        -104.0,
        1e30,
        -1e30,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        f32::MIN_POSITIVE,
    ]);
    x
}

#[test]
fn element_wise_functions_give_the_same_bits_on_every_path() {
    let x = inputs();
    type Kernel = fn(&[f32], &mut [f32]);
    let kernels: [(&str, Kernel); 5] = [
        ("exp", tessera_tensor::exp_slice),
        ("tanh", tessera_tensor::tanh_slice),
        ("sigmoid", tessera_tensor::sigmoid_slice),
        ("gelu", tessera_tensor::gelu_slice),
        ("gelu_grad", tessera_tensor::gelu_grad_slice),
    ];
    for (name, f) in kernels {
        let ran = same_at_each_isa(name, || {
            let mut out = vec![0.0f32; x.len()];
            f(&x, &mut out);
            out
        });
        assert_eq!(ran.last(), Some(&Isa::detected()));
    }
    // The same functions as tensor operations (the threaded path) and GELU's backward.
    let t = Tensor::from_vec(x.clone(), &[x.len()]).unwrap();
    let g = Tensor::randn(&[x.len()], 0.0, 1.0, &mut Rng::seed(8));
    same_at_each_isa("Tensor::exp", || t.exp().to_vec());
    same_at_each_isa("Tensor::gelu_backward", || {
        t.gelu_backward(&t.gelu(), &g).unwrap().to_vec()
    });
}

#[test]
fn the_dropout_mask_is_the_same_on_every_path() {
    same_at_each_isa("dropout_mask", || {
        Tensor::dropout_mask(&[3, 1001], 0.1, &mut Rng::seed(5))
            .unwrap()
            .to_vec()
    });
}

#[test]
fn products_agree_with_float64_on_every_path() {
    let mut rng = Rng::seed(3);
    // Small (the gemm crate's), large and transposed-B (the crate's own kernel).
    for &(m, k, n, transposed) in &[
        (1, 256, 300, true),
        (37, 53, 29, false),
        (200, 300, 150, true),
        (600, 520, 530, false),
    ] {
        let a = Tensor::randn(&[m, k], 0.0, 1.0, &mut rng);
        let b = if transposed {
            Tensor::randn(&[n, k], 0.0, 1.0, &mut rng).t().unwrap()
        } else {
            Tensor::randn(&[k, n], 0.0, 1.0, &mut rng)
        };
        let want = naive_matmul(&a.to_vec(), &b.contiguous().to_vec(), m, k, n);
        let per_isa = at_each_isa(|_| a.matmul(&b).unwrap().to_vec());
        for (at, got) in per_isa {
            for (e, (&g, &w)) in got.iter().zip(&want).enumerate() {
                let w = f64::from(w);
                let tol = 1e-5 * (k as f64).sqrt() * 4.0 + 1e-5 * w.abs();
                assert!(
                    (f64::from(g) - w).abs() <= tol,
                    "{m}x{k}x{n} at {at}: element {e} is {g}, float64 gives {w}"
                );
            }
        }
    }
}

#[test]
fn a_kernel_beyond_the_cap_is_refused() {
    at_each_isa(|at| {
        assert_eq!(GemmKernel::Avx512.is_available(), at >= Isa::Avx512);
        assert_eq!(GemmKernel::Avx2Fma.is_available(), at >= Isa::Avx2);
        let (a, b) = ([1.0f32; 4], [2.0f32; 4]);
        let mut c = [0.0f32; 4];
        let (ma, mb) = (
            MatRef::row_major(&a, 2, 2).unwrap(),
            MatRef::row_major(&b, 2, 2).unwrap(),
        );
        for kernel in [GemmKernel::Avx2Fma, GemmKernel::Avx512] {
            let result = gemm_with(kernel, 1.0, ma, mb, 0.0, &mut c, 1);
            if kernel.is_available() {
                assert_eq!(c, [4.0; 4]);
            } else {
                let msg = result.unwrap_err().to_string();
                assert!(msg.contains(&format!("{at} is the widest")), "{msg}");
            }
        }
        // Auto runs at every cap.
        gemm_with(GemmKernel::Auto, 1.0, ma, mb, 0.0, &mut c, 1).unwrap();
        assert_eq!(c, [4.0; 4]);
    });
}
