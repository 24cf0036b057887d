//! The row kernels of LayerNorm and cross-entropy at every instruction set this CPU
//! has (`tessera_tensor::set_max_isa`): values and gradients give the same bits on the
//! AVX-512, AVX2 and baseline paths. Every test here changes the process-wide cap, so
//! this file holds nothing else.

use tessera_nn::{CrossEntropyLoss, LayerNorm, Module, Parameter, Reduction, Var};
use tessera_tensor::{Rng, Tensor};
use tessera_testutil::same_at_each_isa;

/// Values, then the input's gradient, then the parameters' gradients, in one vector.
fn joined(parts: &[Tensor]) -> Vec<f32> {
    parts.iter().flat_map(|t| t.to_vec()).collect()
}

#[test]
fn layer_norm_gives_the_same_bits_on_every_path() {
    let mut rng = Rng::seed(11);
    // Rows over several parts of the threaded kernel, a width that leaves a remainder
    // after 16- and 8-lane blocks, and an upstream gradient that is not all ones.
    let x = Tensor::randn(&[150, 203], 0.5, 2.0, &mut rng);
    let gamma = Tensor::randn(&[203], 1.0, 0.5, &mut rng);
    let beta = Tensor::randn(&[203], 0.0, 0.5, &mut rng);
    let upstream = Tensor::randn(&[150, 203], 0.0, 1.0, &mut rng);
    same_at_each_isa("LayerNorm", || {
        let ln = LayerNorm {
            weight: Parameter::new(gamma.clone()),
            bias: Parameter::new(beta.clone()),
            eps: 1e-5,
        };
        let xv = Var::parameter(x.clone());
        let y = ln.forward(&xv).unwrap();
        y.backward_with(upstream.clone()).unwrap();
        joined(&[
            y.value().clone(),
            xv.grad().unwrap(),
            ln.weight.grad().unwrap(),
            ln.bias.grad().unwrap(),
        ])
    });
}

#[test]
fn cross_entropy_gives_the_same_bits_on_every_path() {
    let mut rng = Rng::seed(12);
    let (rows, classes) = (300, 1003);
    let logits = Tensor::randn(&[rows, classes], 0.0, 3.0, &mut rng);
    let targets: Vec<i64> = (0..rows)
        .map(|i| {
            if i % 17 == 0 {
                -100
            } else {
                (i * 37 % classes) as i64
            }
        })
        .collect();
    let weight = Tensor::rand(&[classes], 0.5, 1.5, &mut rng);
    for (name, loss) in [
        (
            "cross-entropy with label smoothing",
            CrossEntropyLoss {
                label_smoothing: 0.1,
                ..CrossEntropyLoss::default()
            },
        ),
        (
            "cross-entropy with class weights, per row",
            CrossEntropyLoss {
                weight: Some(weight.clone()),
                reduction: Reduction::None,
                ..CrossEntropyLoss::default()
            },
        ),
    ] {
        same_at_each_isa(name, || {
            let x = Var::parameter(logits.clone());
            let out = loss.forward(&x, &targets).unwrap();
            let g = Tensor::full(out.shape(), 0.75);
            out.backward_with(g).unwrap();
            joined(&[out.value().clone(), x.grad().unwrap()])
        });
    }
}
