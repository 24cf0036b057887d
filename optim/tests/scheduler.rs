//! The schedulers against PyTorch 2.15 and timm: the rate after construction and after
//! each of 60 steps equals theirs within 1e-12 (relative), f64 throughout.
//!
//! The numbers come from `tests/fixtures/make_schedulers.py`.

use serde_json::Value;
use tessera_optim::scheduler::{
    Anneal, LrScheduler, Scheduler, SchedulerState, SequentialLr, TimmCosine,
};
use tessera_optim::Error;
use tessera_testutil::f64s;

fn fixture() -> Value {
    tessera_testutil::json_fixture!("schedulers.json")
}

fn close(case: &str, got: &[f64], want: &[f64]) {
    assert_eq!(got.len(), want.len(), "{case}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let tol = 1e-12 * w.abs().max(1e-3);
        assert!(
            (g - w).abs() <= tol,
            "{case}: step {i}: {g} against PyTorch's {w}"
        );
    }
}

/// The rate after construction and after each step, as the fixture records it.
fn follow(s: &mut dyn LrScheduler, steps: usize) -> Vec<f64> {
    let mut out = vec![s.get_last_lr()];
    for _ in 0..steps {
        out.push(s.step().unwrap());
        assert_eq!(s.get_last_lr(), *out.last().unwrap());
    }
    out
}

fn warmup_cosine(steps: i64) -> SequentialLr {
    let warm = Scheduler::linear(0.2, 0.01, 1.0, 9).unwrap();
    let cos = Scheduler::cosine_annealing(0.2, steps - 9, 1e-4).unwrap();
    SequentialLr::new(vec![warm, cos], vec![9]).unwrap()
}

fn cosine() -> Scheduler {
    Scheduler::cosine_annealing(0.1, 17, 0.001).unwrap()
}

#[test]
fn every_trajectory_equals_pytorch_and_timm() {
    let f = fixture();
    let n = f["steps"].as_u64().unwrap() as usize;
    let total = n as i64 + 1;
    let cases: Vec<(&str, Box<dyn LrScheduler>)> = vec![
        (
            "lambda",
            Box::new(Scheduler::lambda(0.3, |e| 0.95f64.powi(e as i32)).unwrap()),
        ),
        ("noam", Box::new(Scheduler::noam(64, 10, 2.0).unwrap())),
        ("step", Box::new(Scheduler::step_lr(0.1, 7, 0.3).unwrap())),
        (
            "linear",
            Box::new(Scheduler::linear(0.05, 0.1, 0.9, 13).unwrap()),
        ),
        ("cosine", Box::new(cosine())),
        (
            "one_cycle_cos",
            Box::new(Scheduler::one_cycle(0.4, total, 0.3, Anneal::Cos, 25.0, 1e4, false).unwrap()),
        ),
        (
            "one_cycle_linear_three",
            Box::new(
                Scheduler::one_cycle(0.4, total, 0.25, Anneal::Linear, 10.0, 100.0, true).unwrap(),
            ),
        ),
        ("warmup_cosine", Box::new(warmup_cosine(n as i64))),
        ("sequential_three", {
            let a = Scheduler::linear(0.2, 0.5, 1.0, 4).unwrap();
            let b = Scheduler::step_lr(0.2, 5, 0.5).unwrap();
            let c = Scheduler::cosine_annealing(0.2, 10, 0.0).unwrap();
            Box::new(SequentialLr::new(vec![a, b, c], vec![6, 20]).unwrap())
        }),
        ("timm_cosine_warmup", {
            let t = TimmCosine {
                lr_min: 1e-5,
                warmup_t: 6,
                warmup_lr_init: 1e-4,
                ..TimmCosine::new(n as i64)
            };
            Box::new(Scheduler::timm_cosine(0.1, t).unwrap())
        }),
        ("timm_cosine_cycles", {
            let t = TimmCosine {
                lr_min: 1e-3,
                cycle_mul: 1.5,
                cycle_decay: 0.7,
                cycle_limit: 3,
                warmup_t: 3,
                warmup_lr_init: 0.0,
                warmup_prefix: true,
                ..TimmCosine::new(12)
            };
            Box::new(Scheduler::timm_cosine(0.1, t).unwrap())
        }),
        ("timm_cosine_restarts", {
            let t = TimmCosine {
                cycle_limit: 4,
                cycle_decay: 0.5,
                k_decay: 1.5,
                ..TimmCosine::new(10)
            };
            Box::new(Scheduler::timm_cosine(0.1, t).unwrap())
        }),
    ];
    let recorded = f["cases"].as_object().unwrap();
    assert_eq!(
        recorded.len(),
        cases.len(),
        "a case of the fixture is not run"
    );
    for (name, mut s) in cases {
        let got = follow(s.as_mut(), n);
        close(name, &got, &f64s(&f["cases"][name]));
    }
}

#[test]
fn a_saved_state_resumes_the_same_trajectory() {
    let f = fixture();
    let n = f["steps"].as_u64().unwrap() as i64;
    let make = |name: &str| -> Box<dyn LrScheduler> {
        match name {
            "cosine" => Box::new(cosine()),
            _ => Box::new(warmup_cosine(n)),
        }
    };
    for name in ["cosine", "warmup_cosine"] {
        let make = || make(name);
        let mut s = make();
        for _ in 0..23 {
            s.step().unwrap();
        }
        // Through JSON, as a checkpoint's metadata holds it.
        let text = serde_json::to_string(&s.state()).unwrap();
        let state: SchedulerState = serde_json::from_str(&text).unwrap();
        let mut fresh = make();
        fresh.load_state(&state).unwrap();
        assert_eq!(fresh.last_epoch(), 23);
        let got: Vec<f64> = (0..20).map(|_| fresh.step().unwrap()).collect();
        close(name, &got, &f64s(&f["resume"][name]));
    }
}

#[test]
fn bad_settings_and_a_step_past_the_end_are_errors_naming_the_values() {
    let msg = |e: Error| e.to_string();
    let e = Scheduler::step_lr(0.1, 0, 0.5).unwrap_err();
    assert_eq!(msg(e), "StepLR: step_size must be at least 1, got 0");
    let e = Scheduler::linear(0.1, 0.0, 1.0, 5).unwrap_err();
    assert!(msg(e).contains("start_factor must be in (0, 1], got 0"));
    let e = Scheduler::cosine_annealing(f64::NAN, 5, 0.0).unwrap_err();
    assert!(msg(e).contains("got NaN"));
    let e = SequentialLr::new(vec![cosine(), cosine()], vec![]).unwrap_err();
    assert!(msg(e).contains("got 2 schedulers and 0 milestones"));

    let mut s = Scheduler::one_cycle(0.4, 3, 0.3, Anneal::Cos, 25.0, 1e4, false).unwrap();
    for _ in 0..3 {
        s.step().unwrap();
    }
    let e = s.step().unwrap_err();
    assert_eq!(
        msg(e),
        "OneCycleLR: tried to step 4 times; the specified number of total steps is 3"
    );

    let mut seq = warmup_cosine(60);
    let e = seq.load_state(&cosine().state()).unwrap_err();
    assert!(msg(e).contains("holds 0 schedulers, this sequence 2"));
}

#[test]
fn one_cycle_momentum_equals_pytorch() {
    let f = fixture();
    let n = f["steps"].as_u64().unwrap() as usize;
    let total = n as i64 + 1;
    let cases = [
        (
            "one_cycle_cos",
            Scheduler::one_cycle(0.4, total, 0.3, Anneal::Cos, 25.0, 1e4, false).unwrap(),
        ),
        (
            "one_cycle_linear_three",
            Scheduler::one_cycle(0.4, total, 0.25, Anneal::Linear, 10.0, 100.0, true)
                .unwrap()
                .cycle_momentum(Some((0.8, 0.9)))
                .unwrap(),
        ),
    ];
    for (case, mut s) in cases {
        let mut got = vec![s.get_last_momentum().unwrap()];
        for _ in 0..n {
            s.step().unwrap();
            got.push(s.get_last_momentum().unwrap());
        }
        close(case, &got, &f64s(&f["momentum"][case]));
    }
    // Off, and refused where it has no meaning.
    let off = Scheduler::one_cycle(0.4, 10, 0.3, Anneal::Cos, 25.0, 1e4, false)
        .unwrap()
        .cycle_momentum(None)
        .unwrap();
    assert_eq!(off.get_last_momentum(), None);
    assert_eq!(cosine().get_last_momentum(), None);
    let err = cosine().cycle_momentum(Some((0.85, 0.95))).unwrap_err();
    assert!(err.to_string().contains("only OneCycleLR"), "{err}");
    let err = Scheduler::one_cycle(0.4, 10, 0.3, Anneal::Cos, 25.0, 1e4, false)
        .unwrap()
        .cycle_momentum(Some((0.95, 0.85)))
        .unwrap_err();
    assert!(err.to_string().contains("base_momentum 0.95"), "{err}");
}
