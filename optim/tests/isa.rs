//! Adam's element update and the optimizers' finiteness check at every instruction set
//! this CPU has (`tessera_tensor::set_max_isa`): the same parameters, bit for bit, after
//! steps on the AVX-512, AVX2 and baseline paths, and a gradient with one NaN refused
//! on each. Every test here changes the process-wide cap, so this file holds nothing
//! else.

use tessera_optim::{Adam, AdamConfig, Optimizer, Parameter};
use tessera_tensor::{Rng, Tensor};
use tessera_testutil::{at_each_isa, same_at_each_isa};

#[test]
fn adam_steps_give_the_same_bits_on_every_path() {
    let mut rng = Rng::seed(21);
    // A length that leaves a remainder after 16- and 8-lane blocks.
    let p0 = Tensor::randn(&[1001], 0.0, 1.0, &mut rng);
    let grads: Vec<Tensor> = (0..5)
        .map(|_| Tensor::randn(&[1001], 0.0, 0.1, &mut rng))
        .collect();
    for config in [
        AdamConfig::adamw(1e-3),
        AdamConfig {
            weight_decay: 0.01,
            ..AdamConfig::transformer(1e-3)
        },
    ] {
        same_at_each_isa(&format!("{config:?}"), || {
            let p = Parameter::new(p0.clone());
            let params = vec![("w".to_string(), p.clone())];
            let mut opt = Adam::with(config);
            for g in &grads {
                p.set_grad(g.clone()).unwrap();
                opt.step(&params).unwrap();
            }
            p.value().to_vec()
        });
    }
}

#[test]
fn a_nan_gradient_is_refused_on_every_path() {
    at_each_isa(|at| {
        // The NaN in the last, partial block of 8 and of 16 lanes.
        let mut g = vec![0.5f32; 1001];
        g[998] = f32::NAN;
        let p = Parameter::new(Tensor::zeros(&[1001]));
        p.set_grad(Tensor::from_vec(g, &[1001]).unwrap()).unwrap();
        let params = vec![("w".to_string(), p.clone())];
        let err = Adam::new(1e-3).step(&params).unwrap_err().to_string();
        assert!(err.contains("w"), "at {at}: {err}");
        assert!(p.value().to_vec().iter().all(|&v| v == 0.0));
    });
}
