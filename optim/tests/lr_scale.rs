//! Per-parameter learning-rate factors behave as PyTorch parameter groups with their own
//! `lr`: a parameter trained with factor `s` follows the trajectory it follows alone
//! under an optimizer whose learning rate is `s` times larger, decoupled weight decay
//! included, while a parameter without a factor is unaffected.

use tessera_autograd::Parameter;
use tessera_nn::Var;
use tessera_optim::{Adam, AdamConfig, Optimizer};
use tessera_tensor::{Rng, Tensor};

/// `steps` AdamW steps on `sum((p ⊙ w)²)` for each parameter, every gradient from the
/// same weights `w`.
fn run(opt: &mut Adam, params: &[(String, Parameter)], steps: usize) {
    let w = Tensor::rand(&[3, 4], -1.0, 1.0, &mut Rng::seed(9));
    for _ in 0..steps {
        for (_, p) in params {
            p.zero_grad();
            let y = p.var().mul(&Var::constant(w.clone())).unwrap();
            y.mul(&y).unwrap().sum_all().backward().unwrap();
        }
        opt.step(params).unwrap();
    }
}

fn param(seed: u64) -> Parameter {
    Parameter::new(Tensor::rand(&[3, 4], -1.0, 1.0, &mut Rng::seed(seed)))
}

#[test]
fn a_scaled_parameter_moves_as_with_a_scaled_learning_rate() {
    let (a, b) = (param(1), param(2));
    let both = [("a".to_string(), a.clone()), ("b".to_string(), b.clone())];
    let mut grouped = Adam::with(AdamConfig {
        weight_decay: 0.1,
        ..AdamConfig::adamw(1e-2)
    })
    .with_lr_scale([("a", 0.25)]);
    run(&mut grouped, &both, 5);

    let (a1, b1) = (param(1), param(2));
    let mut slow = Adam::with(AdamConfig {
        weight_decay: 0.1,
        ..AdamConfig::adamw(0.25e-2)
    });
    run(&mut slow, &[("a".to_string(), a1.clone())], 5);
    let mut plain = Adam::with(AdamConfig {
        weight_decay: 0.1,
        ..AdamConfig::adamw(1e-2)
    });
    run(&mut plain, &[("b".to_string(), b1.clone())], 5);

    assert_eq!(a.value().to_vec(), a1.value().to_vec());
    assert_eq!(b.value().to_vec(), b1.value().to_vec());
    assert_ne!(a.value().to_vec(), param(1).value().to_vec(), "a moved");
}
