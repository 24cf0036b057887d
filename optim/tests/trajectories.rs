//! 25 steps of each optimizer and schedule against PyTorch.
//!
//! The numbers come from `tests/fixtures/make_fixtures.py` (torch 2.15, CPU, f32,
//! single-tensor optimizers): a [3, 4] parameter driven by the gradient `g = A ⊙ p + B`,
//! its value after every step.

use serde_json::Value;
use tessera_optim::{
    clip_grad_norm, schedule, Adam, AdamConfig, Optimizer, Parameter, Sgd, SgdConfig,
};
use tessera_tensor::Tensor;
use tessera_testutil::{assert_close_slice, floats};

fn fixture() -> Value {
    tessera_testutil::json_fixture!("trajectories.json")
}

/// Runs 25 steps and compares every step with PyTorch within 1e-5.
fn follow(
    run: &str,
    mut opt: impl Optimizer,
    lr_at: Option<&dyn Fn(u64) -> f64>,
    clip: Option<f32>,
) {
    let f = fixture();
    let shape = [3, 4];
    let a = Tensor::from_vec(floats(&f["A"]), &shape).unwrap();
    let b = Tensor::from_vec(floats(&f["B"]), &shape).unwrap();
    let p = Parameter::new(Tensor::from_vec(floats(&f["p0"]), &shape).unwrap());
    let params = vec![("w".to_string(), p.clone())];
    let want = f["runs"][run].as_array().unwrap();
    for (step, expected) in want.iter().enumerate() {
        let step = step as u64 + 1;
        if let Some(lr) = lr_at {
            opt.set_lr(lr(step));
        }
        p.set_grad(a.mul(&p.value()).unwrap().add(&b).unwrap())
            .unwrap();
        if let Some(max) = clip {
            clip_grad_norm(&params, max).unwrap();
        }
        opt.step(&params).unwrap();
        let what = format!("{run}, step {step}");
        assert_close_slice(&what, &p.value(), &floats(expected), 1e-5, 0.0);
    }
}

#[test]
fn sgd_variants_follow_torch() {
    follow("sgd_plain", Sgd::new(0.05), None, None);
    follow(
        "sgd_momentum_dampening",
        Sgd::with(SgdConfig {
            momentum: 0.9,
            dampening: 0.1,
            ..SgdConfig::new(0.05)
        }),
        None,
        None,
    );
    follow(
        "sgd_nesterov_wd",
        Sgd::with(SgdConfig {
            momentum: 0.9,
            nesterov: true,
            weight_decay: 1e-2,
            ..SgdConfig::new(0.05)
        }),
        None,
        None,
    );
}

#[test]
fn adam_under_the_transformer_warmup_follows_torch() {
    let lr = |s: u64| schedule::transformer(s, 64, 10);
    follow("adam_warmup", Adam::transformer(1.0), Some(&lr), None);
}

#[test]
fn adam_adamw_and_clipping_follow_torch() {
    follow(
        "adam_wd",
        Adam::with(AdamConfig {
            weight_decay: 1e-2,
            ..AdamConfig::adam(1e-2)
        }),
        None,
        None,
    );
    follow(
        "adamw",
        Adam::with(AdamConfig {
            weight_decay: 0.05,
            ..AdamConfig::adamw(1e-2)
        }),
        None,
        None,
    );
    follow("adam_clipped", Adam::new(1e-2), None, Some(0.5));
}

#[test]
fn schedules_equal_torch_schedulers() {
    let f = fixture();
    let check = |name: &str, lr: &dyn Fn(u64) -> f64| {
        for (k, want) in f["lrs"][name].as_array().unwrap().iter().enumerate() {
            let want = want.as_f64().unwrap();
            let got = lr(k as u64 + 1);
            assert!(
                (got - want).abs() <= 1e-9 * want.abs().max(1.0),
                "{name} step {}: {got} vs {want}",
                k + 1
            );
        }
    };
    check("step_decay", &|s| schedule::step_decay(s, 0.1, 5, 0.5));
    check("warmup_cosine", &|s| {
        schedule::warmup_cosine(s, 0.1, 0.2, 5, 20, 0.001)
    });
    check("transformer_warmup", &|s| schedule::transformer(s, 64, 10));
}

#[test]
fn state_round_trips_and_resume_is_exact() {
    // 10 steps, save the state, restore into a fresh optimizer, 10 more: equal to 20 straight.
    let grad = |p: &Parameter| p.value().mul_scalar(0.3).add_scalar(0.1);
    let run = |split: bool| {
        let p = Parameter::new(Tensor::from_vec(vec![1.0, -2.0, 0.5], &[3]).unwrap());
        let params = vec![("w".to_string(), p.clone())];
        let mut opt = Adam::adamw(1e-2);
        for i in 0..20 {
            if split && i == 10 {
                let saved = opt.state();
                opt = Adam::adamw(1e-2);
                opt.load_state(&saved).unwrap();
            }
            p.set_grad(grad(&p)).unwrap();
            opt.step(&params).unwrap();
        }
        p.value().to_vec()
    };
    assert_eq!(run(true), run(false));
}

#[test]
fn a_non_finite_gradient_changes_nothing() {
    let p = Parameter::new(Tensor::ones(&[2]));
    let q = Parameter::new(Tensor::ones(&[2]));
    let params = vec![("p".to_string(), p.clone()), ("q".to_string(), q.clone())];
    p.set_grad(Tensor::ones(&[2])).unwrap();
    q.set_grad(Tensor::from_vec(vec![1.0, f32::NAN], &[2]).unwrap())
        .unwrap();
    let err = Sgd::new(0.1).step(&params).unwrap_err().to_string();
    assert!(err.contains("\"q\"") && err.contains("non-finite"), "{err}");
    assert_eq!(p.value().to_vec(), vec![1.0, 1.0]);
}

#[test]
fn parameters_exempt_from_decay_follow_adamw_without_decay() {
    // One optimizer with decay and an exemption, two references: with and without decay.
    let run = |opt: &mut Adam, names: &[&str]| -> Vec<Vec<f32>> {
        let params: Vec<(String, Parameter)> = names
            .iter()
            .map(|n| {
                (
                    n.to_string(),
                    Parameter::new(Tensor::from_vec(vec![1.0, -2.0, 0.5], &[3]).unwrap()),
                )
            })
            .collect();
        for step in 0..5 {
            for (_, p) in &params {
                let g = p.value().mul_scalar(0.3).add_scalar(step as f32 * 0.1);
                p.set_grad(g).unwrap();
            }
            opt.step(&params).unwrap();
        }
        params.iter().map(|(_, p)| p.value().to_vec()).collect()
    };
    let both = run(
        &mut Adam::with(AdamConfig {
            weight_decay: 0.5,
            ..AdamConfig::adamw(0.1)
        })
        .without_decay(["b"]),
        &["a", "b"],
    );
    let decayed = run(
        &mut Adam::with(AdamConfig {
            weight_decay: 0.5,
            ..AdamConfig::adamw(0.1)
        }),
        &["a"],
    );
    let plain = run(
        &mut Adam::with(AdamConfig {
            weight_decay: 0.0,
            ..AdamConfig::adamw(0.1)
        }),
        &["b"],
    );
    assert_eq!(both[0], decayed[0]);
    assert_eq!(both[1], plain[0]);
    assert_ne!(decayed[0], plain[0], "the decay must matter in this test");
}
